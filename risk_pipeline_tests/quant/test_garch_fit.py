"""vol_forecast.fit_garch's lean SLSQP driver against arch's own fit: the same parameters, bit for bit, in the
backtest's warm-started rolling refits and at the edges."""

from __future__ import annotations

import math

import numpy as np
import pytest

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
