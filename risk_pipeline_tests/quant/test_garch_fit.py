"""vol_forecast.fit_garch's lean SLSQP driver against arch's own fit: the same parameters, bit for bit, in the
backtest's warm-started rolling refits and at the edges."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.stats

from risk_pipeline.quant import vol_forecast as vf
from risk_pipeline.quant.vol_forecast import GarchParams, fit_garch

pytestmark = pytest.mark.skipif(
    not vf._LEAN_SLSQP, reason="the lean driver runs only for the SciPy/arch versions it repeats"
)


def arch_fit(returns: np.ndarray, **kwargs) -> GarchParams:  # type: ignore[no-untyped-def]
    """``fit_garch`` by arch's own ``ARCHModel.fit``."""
    vf._LEAN_SLSQP = False
    try:
        return fit_garch(returns, **kwargs)
    finally:
        vf._LEAN_SLSQP = True


def _garch_t_returns(seed: int, n: int, omega: float, alpha: float, beta: float, nu: float = 5.0) -> np.ndarray:
    """A GARCH(1,1) path with unit-variance Student-t shocks (a loop: test data, not a hot path)."""
    rng = np.random.default_rng(seed)
    shocks = rng.standard_t(nu, n) / math.sqrt(nu / (nu - 2.0))
    r = np.empty(n)
    variance = omega / (1.0 - alpha - beta)
    for t in range(n):
        r[t] = math.sqrt(variance) * shocks[t]
        variance = omega + alpha * r[t] ** 2 + beta * variance
    return r


def _same(a: GarchParams | str, b: GarchParams | str) -> bool:
    return a == b  # dataclass equality: every float bit-equal, and the convergence flag


def _fit_or_error(fit, r: np.ndarray, **kwargs) -> GarchParams | str:  # type: ignore[no-untyped-def]
    try:
        return fit(r, **kwargs)
    except RuntimeError as exc:
        return type(exc).__name__


@pytest.mark.parametrize("asymmetric", [False, True])
@pytest.mark.parametrize(
    ("seed", "window", "params"),
    [(1, 500, (2e-6, 0.08, 0.90)), (2, 250, (1e-6, 0.03, 0.96)), (3, 500, (5e-6, 0.15, 0.70))],
)
def test_warm_started_refits_equal_archs_fits(
    asymmetric: bool, seed: int, window: int, params: tuple[float, float, float]
) -> None:
    # a rolling refit every 21 days, each warm-started from the last fit, as the static-book backtest does
    r = _garch_t_returns(seed, window + 6 * 21, *params)
    arch_params = fast_fit = None
    for k in range(7):
        x = r[k * 21 : k * 21 + window]
        arch_params = arch_fit(x, asymmetric=asymmetric, previous=arch_params)
        fast_fit = fit_garch(x, asymmetric=asymmetric, previous=fast_fit)
        assert _same(fast_fit, arch_params), (k, fast_fit, arch_params)


def test_cases_at_the_edges_equal_archs() -> None:
    rng = np.random.default_rng(7)
    given = GarchParams(omega=1e-6, alpha=0.05, gamma=0.0, beta=0.9, nu=8.0, backcast=1e-4, converged=True)
    # starting values outside the bounds (nu < 2.05) and the constraints (alpha + beta > 1): arch uses them anyway
    outside = GarchParams(omega=1e-6, alpha=0.5, gamma=0.0, beta=0.9, nu=1.0, backcast=1e-4, converged=True)
    series = {
        "zero returns": np.zeros(300),
        "constant size": 1e-3 * rng.choice([-1.0, 1.0], 300),
        "12 returns": rng.normal(0.0, 0.01, 12),
        "iid normal": rng.normal(0.0, 0.01, 400),
    }
    for name, r in series.items():
        for previous in (None, given, outside):
            want = _fit_or_error(arch_fit, r, previous=previous)
            got = _fit_or_error(fit_garch, r, previous=previous)
            assert _same(got, want), (name, previous, got, want)


def test_pearson_kurtosis_is_scipys_bits() -> None:
    """``_pearson_kurtosis`` equals ``scipy.stats.kurtosis(a, fisher=False)`` bit for bit: t, normal, rounded and
    uniform samples of 2-600 values at scales 1e-8 to 1e8 and offsets, constant and nearly constant samples (NaN where
    SciPy gives NaN), NaN and inf entries."""
    rng = np.random.default_rng(23)
    samples = [np.full(50, 3.0), np.full(7, 0.0), np.array([1.0, 1.0 + 1e-15, 1.0]), np.array([2.0, -2.0])]
    for k in range(400):
        n = int(rng.integers(2, 600))
        a = [rng.standard_t(4, n), rng.standard_normal(n), np.round(rng.standard_normal(n), 2), rng.random(n)][k % 4]
        a = a * 10.0 ** rng.integers(-8, 9) + float(rng.choice([0.0, 0.0, 1.0, -1e3]))
        samples.append(a)
    with_nan = rng.standard_normal(30)
    with_nan[3] = np.nan
    with_inf = rng.standard_normal(30)
    with_inf[5] = np.inf
    samples += [with_nan, with_inf]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for a in samples:
            expected = np.float64(scipy.stats.kurtosis(a, fisher=False))
            got = np.float64(vf._pearson_kurtosis(a))
            assert got.view(np.int64) == expected.view(np.int64) or (np.isnan(got) and np.isnan(expected)), a[:5]
