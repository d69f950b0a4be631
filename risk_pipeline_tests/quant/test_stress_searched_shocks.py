"""``run_stress``'s ``shocks_out``: the shocks its search found, which re-create its P&L and are the hedging layer's."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from risk_pipeline.quant.stress import FLAT_MULTIPLIER, run_stress, stress_scenarios
from risk_pipeline.quant.vol_shocks import expiry_factor
from risk_pipeline_tests.quant.test_stress_rule_scenarios import NAV, _bsm, _setup


def test_shocks_out_recreate_the_stress_pnl_position_by_position() -> None:
    """Every position priced by hand (shares: the spot move; options: Black-Scholes at the moved spot and the vol the
    rule gives from the stored log-vol move) sums to ``run_stress``'s market P&L in every scenario."""
    lib, p, beta, _, kw = _setup()
    shocks: list[tuple[np.ndarray, np.ndarray]] = []
    spreads, volumes = np.full(p.n_positions, 0.05), np.full(p.n_positions, 1e4)
    out = run_stress(p, lib, betas=beta, nav=NAV, spreads=spreads, volumes=volumes, **kw, shocks_out=shocks)
    assert len(shocks) == 1
    spot_log, vol_move = shocks[0]
    n = len(lib.scenarios)
    assert spot_log.shape == vol_move.shape == (n, p.n_symbols)
    rule = lib.vol_rule
    # the search moved names on their own in some scenarios (not only the rule's closed form)
    mult = np.log([s.vol.multiplier for s in lib.scenarios])
    vb = np.clip(kw["vol_betas"], rule.vol_beta_floor, rule.vol_beta_cap)
    assert np.any(vol_move != vb[None, :] * mult[:, None])
    for j, s in enumerate(lib.scenarios):
        total = 0.0
        for i in range(p.n_positions):
            k = int(p.symbol_index[i])
            s0 = float(p.spot[k])
            s1 = s0 * math.exp(spot_log[j, k])
            qm = float(p.quantity[i] * p.multiplier[i])
            if not p.is_option[i]:
                total += qm * (s1 - s0)
                continue
            t, iv, kk = float(p.time_years[i]), float(p.implied_vol[i]), float(p.strike[i])
            r, q, call = float(p.rate[i]), float(p.dividend_yield[i]), bool(p.is_call[i])
            f = float(expiry_factor(t, rule))
            g = float(expiry_factor(t, rule, rule.skew_term_exponent))
            d = min(max(vol_move[j, k] * f, -rule.log_move_cap), rule.log_move_cap)
            v = max(iv * math.exp(d) + s.vol.shift * f + s.vol.skew * g * math.log(kk / s1), 0.0)
            total += qm * (_bsm(s1, kk, t, v, r + s.rate_shift, q, call) - _bsm(s0, kk, t, iv, r, q, call))
        assert out[j].market_pnl == pytest.approx(total, rel=1e-9, abs=1e-9 * NAV), s.scenario_id


def test_shocks_out_are_stress_scenarios_bits() -> None:
    """The stored shocks are the hedging layer's search of the same book, bit for bit; none under the flat rule."""
    lib, p, beta, _, kw = _setup()
    shocks: list[tuple[np.ndarray, np.ndarray]] = []
    liquidity = {"spreads": np.full(p.n_positions, 0.05), "volumes": np.full(p.n_positions, 1e4)}
    run_stress(p, lib, betas=beta, nav=NAV, **liquidity, **kw, shocks_out=shocks)
    searched = stress_scenarios(p, lib.scenarios, beta, None, **kw)
    np.testing.assert_array_equal(shocks[0][0], searched.spot_log_shock)
    np.testing.assert_array_equal(shocks[0][1], searched.name_log_vol_move)
    flat: list[tuple[np.ndarray, np.ndarray]] = []
    run_stress(p, replace(lib, vol_rule=FLAT_MULTIPLIER), betas=beta, nav=NAV, **liquidity, shocks_out=flat)
    assert flat == []
