"""Paths that skip or share work give the same bits as the full computation they replace."""

import numpy as np

from risk_pipeline.quant.american import american_greeks
from risk_pipeline.quant.var import (
    VarConfig,
    _simulation_results,
    empirical_var_es,
    kernel_component_var,
    tail_component_es,
    tail_episodes,
)


def test_american_greeks_without_rho_leave_every_other_greek_unchanged() -> None:
    rng = np.random.default_rng(1)
    n = 400
    spot, strike = rng.uniform(50, 150, n), rng.uniform(50, 150, n)
    tau, vol = rng.uniform(0.0, 2.0, n), rng.uniform(0.0, 0.8, n)
    rate, div, call = rng.uniform(-0.01, 0.08, n), rng.uniform(0.0, 0.08, n), rng.random(n) < 0.5
    tau[:10], vol[10:20] = 0.0, 0.0  # the BSM limits of the degenerate inputs
    full = american_greeks(spot, strike, tau, vol, rate, div, call)
    lean = american_greeks(spot, strike, tau, vol, rate, div, call, with_rho=False)
    for name in ("price", "delta", "gamma", "vega", "theta", "theta_per_day", "vanna", "volga", "charm"):
        assert np.array_equal(getattr(lean, name), getattr(full, name), equal_nan=True), name
    regular = vol * np.sqrt(tau) > 1e-6
    assert np.all(np.isnan(lean.rho[regular]))


def test_simulation_results_equal_the_public_statistics_at_every_confidence() -> None:
    rng = np.random.default_rng(3)
    config = VarConfig()
    for trial in range(60):
        n, m = int(rng.integers(3, 600)), int(rng.integers(1, 6))
        by_symbol = rng.standard_t(3, size=(n, m)) * rng.uniform(0.1, 10.0, m)
        if trial % 7 == 0:
            by_symbol[:, 0] = 0.0
        if trial % 11 == 0:
            by_symbol[:] = 1.0  # no spread: the kernel components fall back to equal shares
        pnl = by_symbol.sum(axis=1)
        horizon = int(rng.integers(1, 6))
        for overlapping in (False, True):
            symbols = tuple(f"S{i}" for i in range(m))
            results = _simulation_results(
                "historical", horizon, pnl, by_symbol, config, symbols, n, overlapping=overlapping
            )
            for r, c in zip(results, config.confidences, strict=True):
                var, es = empirical_var_es(pnl, c)
                assert (r.var, r.expected_shortfall) == (var, es)
                assert np.array_equal(r.component_var, kernel_component_var(by_symbol, var))
                assert np.array_equal(r.component_es, tail_component_es(by_symbol, c))
                if overlapping:
                    assert r.independent_tail_obs == float(tail_episodes(pnl, c, horizon)[1])
