"""The calibration's Jacobian from the characteristic function's analytic parameter derivatives, in one pass with
the prices (``_SurfaceCos.prices_and_jacobian``): against central differences of QuantLib's
``AnalyticHestonEngine`` prices (the oracle), against central differences of the surface's own COS prices, and the
fits against MINPACK's own forward-difference ``lmdif`` (``least_squares(method="lm")`` without a Jacobian) on the
same residuals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import QuantLib as ql
from scipy.optimize import least_squares

from risk_pipeline.quant import heston
from risk_pipeline.quant.heston import calibrate_heston, heston_implied_vol
from risk_pipeline_tests.quant.test_heston_lm import random_heston_params

CASES = [
    (0.04, 1.5, 0.05, 0.8, -0.7),
    (0.09, 0.3, 0.02, 2.0, -0.95),
    (0.02, 6.0, 0.06, 0.3, 0.2),
    (0.25, 3.0, 0.1, 1.4, -0.4),
]


def _surface() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    t_slice = np.array([3.0, 14.0, 60.0, 182.0, 365.0, 730.0]) / 365.0
    slice_of = np.repeat(np.arange(t_slice.size), 9)
    lk = np.tile(np.linspace(-0.45, 0.3, 9), t_slice.size) * np.sqrt(np.maximum(t_slice[slice_of], 0.02) / 0.25)
    return t_slice, slice_of, lk, (lk > 0.0).astype(np.float64)


def _quantlib_otm(p: np.ndarray, t_years: np.ndarray, lk: np.ndarray) -> np.ndarray:
    """Undiscounted OTM prices per unit forward by QuantLib (spot 1, no rates, expiry ``t`` in days x 365)."""
    today = ql.Date(20, 11, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    flat = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc))
    process = ql.HestonProcess(flat, flat, ql.QuoteHandle(ql.SimpleQuote(1.0)), *(float(v) for v in p))
    engine = ql.AnalyticHestonEngine(ql.HestonModel(process), 1e-13, 1_000_000)
    out = np.empty(lk.size)
    for i, (t, k) in enumerate(zip(t_years, lk, strict=True)):
        kind = ql.Option.Call if k > 0.0 else ql.Option.Put
        option = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, math.exp(k)), ql.EuropeanExercise(today + round(t * 365.0))
        )
        option.setPricingEngine(engine)
        out[i] = option.NPV()
    return out


@pytest.mark.parametrize("params", CASES)
def test_jacobian_matches_central_differences_of_quantlib_prices(params: tuple[float, ...]) -> None:
    t_slice, slice_of, lk, call = _surface()
    p = np.array(params)
    surf = heston._SurfaceCos(t_slice, slice_of, lk, call, p[None, :], 12.0, 1e-12)
    jac = surf.prices_and_jacobian(heston._to_x(p))[1:]
    t = t_slice[slice_of]
    h = 1e-4
    for j in range(5):  # d price / d x_j = d price / d p_j * d p_j / d x_j
        up, down = p.copy(), p.copy()
        step = h if j == 4 else h * p[j]
        up[j] += step
        down[j] -= step
        dp = (_quantlib_otm(up, t, lk) - _quantlib_otm(down, t, lk)) / (2.0 * step)
        dx = dp * (p[j] if j < 4 else heston.RHO_BOUND * (1.0 - (p[4] / heston.RHO_BOUND) ** 2))
        np.testing.assert_allclose(jac[j], dx, rtol=1e-5, atol=2e-8 * np.abs(dx).max())


@pytest.mark.parametrize("params", CASES)
def test_jacobian_matches_central_differences_of_the_surface_prices(params: tuple[float, ...]) -> None:
    t_slice, slice_of, lk, call = _surface()
    p = np.array(params)
    surf = heston._SurfaceCos(t_slice, slice_of, lk, call, p[None, :], 12.0, 1e-10)
    x = heston._to_x(p)
    both = surf.prices_and_jacobian(x)
    jac = both[1:]
    # row 0: the prices, as ``prices`` gives them (the same formula, other operations)
    np.testing.assert_allclose(both[0], surf.prices(p[None, :])[0], rtol=1e-10, atol=1e-15)
    step = 1e-5
    pts = np.repeat(x[None, :], 10, axis=0)
    pts[np.arange(5) * 2, np.arange(5)] += step
    pts[np.arange(5) * 2 + 1, np.arange(5)] -= step
    pr = surf.prices(heston._to_p(pts))
    diff = (pr[0::2] - pr[1::2]) / (2.0 * step)
    assert np.abs(jac - diff).max() <= 1e-8 * np.abs(diff).max()
    assert np.all(np.abs(diff).max(axis=1) > 1e-4)  # every parameter moves the prices


def test_jacobian_is_zero_in_a_clipped_coordinate() -> None:
    t_slice, slice_of, lk, call = _surface()
    p = np.array(CASES[0])
    surf = heston._SurfaceCos(t_slice, slice_of, lk, call, p[None, :], 12.0, 1e-10)
    x = heston._to_x(p)
    x[1] = -31.0  # kappa = e^-30 (clipped), as _to_p reads it
    jac = surf.prices_and_jacobian(x)[1:]
    assert np.all(jac[1] == 0.0) and np.all(np.abs(jac[0]) > 0.0)


def _lmdif(residuals, jacobian, x0, tol=1e-10):
    """MINPACK's ``lmdif`` (forward differences of the residuals), not the analytic Jacobian."""
    res = least_squares(residuals, x0, method="lm", xtol=tol, ftol=tol, gtol=tol)
    return res.x, int(res.nfev), bool(res.success)


@pytest.mark.parametrize("noise", [0.0, 0.004])
def test_fits_match_minpack_forward_differences(noise: float, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(23)
    cases = []
    for _ in range(4):
        p = random_heston_params(rng)
        days = np.array([7, 30, 91, 182, 365])
        t = np.repeat(days / 365.0, 11)
        k = np.tile(np.linspace(-0.3, 0.2, 11), days.size) * np.sqrt(t / 0.25)
        cases.append((p, t, k, heston_implied_vol(p, t, k) + noise * np.sin(9.0 * k + t)))
    fits = [calibrate_heston(t, k, vol) for _, t, k, vol in cases]
    monkeypatch.setattr(heston, "_levenberg_marquardt", _lmdif)
    for (p, t, k, vol), fit in zip(cases, fits, strict=True):
        ref = calibrate_heston(t, k, vol)
        assert fit.converged and ref.converged
        assert abs(fit.rmse_vol_points - ref.rmse_vol_points) <= 1e-6 + 1e-4 * ref.rmse_vol_points
        np.testing.assert_allclose(fit.params.as_array(), ref.params.as_array(), rtol=1e-4, atol=1e-6)
        if noise == 0.0:
            np.testing.assert_allclose(fit.params.as_array(), p.as_array(), rtol=1e-4, atol=1e-6)
