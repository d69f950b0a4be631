"""SABR: Hagan's expansion against QuantLib, Obloj's leading term against the exact short-expiry limit of
Berestycki, Busca & Florent (2004) and QuantLib's SABR PDE engine, calibration, density check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import QuantLib as ql
from scipy.optimize import brentq
from scipy.stats import norm

from risk_pipeline.quant.sabr import (
    SabrFit,
    black_call,
    calibrate_sabr,
    density_check,
    density_checks,
    nu_upper_bound,
    sabr_hagan_vol,
    sabr_obloj_vol,
    sabr_vol,
)


def test_hagan_matches_quantlib_sabr_volatility() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        f = rng.uniform(20.0, 200.0)
        t = rng.uniform(0.02, 3.0)
        beta = rng.choice([0.0, 0.3, 0.5, 0.7, 1.0])
        alpha = rng.uniform(0.1, 0.6) * f ** (1.0 - beta)
        rho, nu = rng.uniform(-0.9, 0.9), rng.uniform(0.05, 1.5)
        k = f * np.exp(rng.uniform(-0.5, 0.5, 7))
        got = sabr_hagan_vol(k, f, t, alpha, beta, rho, nu)
        want = [ql.sabrVolatility(float(x), f, t, alpha, beta, nu, rho) for x in k]
        np.testing.assert_allclose(got, want, rtol=1e-10)
    # at the money both formulas agree
    atm = sabr_hagan_vol([100.0], 100.0, 1.0, 2.0, 0.5, -0.3, 0.6)[0]
    assert atm == pytest.approx(ql.sabrVolatility(100.0, 100.0, 1.0, 2.0, 0.5, 0.6, -0.3), rel=1e-12)
    assert sabr_obloj_vol([100.0], 100.0, 1.0, 2.0, 0.5, -0.3, 0.6)[0] == pytest.approx(atm, rel=1e-12)


def _bbf_limit(k: float, f: float, alpha: float, beta: float, rho: float, nu: float) -> float:
    """Berestycki, Busca & Florent (2004): the implied vol as T -> 0, nu ln(F/K) / x(z) with
    z = nu / alpha * int_K^F dx / x^beta."""
    integral = math.log(f / k) if beta == 1.0 else (f ** (1 - beta) - k ** (1 - beta)) / (1 - beta)
    z = nu * integral / alpha
    x = math.log((math.sqrt(1 - 2 * rho * z + z * z) + z - rho) / (1 - rho))
    return nu * math.log(f / k) / x


def test_obloj_has_the_exact_short_expiry_limit_and_hagan_does_not() -> None:
    f, alpha, beta, rho, nu = 100.0, 3.0, 0.5, -0.4, 0.8  # about 30 % lognormal vol at the money
    t = 1e-12
    for k in (40.0, 60.0, 80.0, 95.0, 105.0, 130.0, 180.0):
        exact = _bbf_limit(k, f, alpha, beta, rho, nu)
        assert sabr_obloj_vol([k], f, t, alpha, beta, rho, nu)[0] == pytest.approx(exact, rel=1e-9)
    wing = _bbf_limit(40.0, f, alpha, beta, rho, nu)
    assert abs(sabr_hagan_vol([40.0], f, t, alpha, beta, rho, nu)[0] / wing - 1.0) > 1e-3
    # beta = 1: the two leading terms coincide
    for k in (60.0, 140.0):
        assert sabr_obloj_vol([k], f, t, 0.3, 1.0, rho, nu)[0] == pytest.approx(
            sabr_hagan_vol([k], f, t, 0.3, 1.0, rho, nu)[0], rel=1e-12
        )


def _pde_vol(k: float, f: float, t: float, alpha: float, beta: float, rho: float, nu: float) -> tuple[float, float]:
    """Implied vol of QuantLib's finite-difference SABR price (FdSabrVanillaEngine, zero rates). The engine is
    built for rate-like forwards, so the problem is scaled to F = 0.05: SABR implied vols are unchanged when F
    and K are multiplied by c and alpha by c^(1 - beta)."""
    c = 0.05 / f
    k, f, alpha = k * c, f * c, alpha * c ** (1.0 - beta)
    today = ql.Date(4, 12, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    expiry = today + round(t * 365)
    curve = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc))
    option = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Call, k), ql.EuropeanExercise(expiry))
    option.setPricingEngine(ql.FdSabrVanillaEngine(f, alpha, beta, nu, rho, curve, 100, 400, 100))
    price = option.NPV()
    tt = dc.yearFraction(today, expiry)
    return brentq(lambda s: float(black_call(f, np.array([k]), tt, np.array([s]))[0]) - price, 1e-4, 3.0), tt


def test_obloj_against_the_sabr_pde_at_one_year() -> None:
    """Against QuantLib's finite-difference SABR engine (beta 0.5, 22 % at the money, one year): within 0.05 vol
    points at the money and 0.6 vol points from 60 % to 170 % of the forward (measured: +0.51 at 60 %, +0.05 at
    the money, -0.02 at 120 %, +0.18 at 170 %; Hagan's expansion is within 0.03 vol points of Obloj's here)."""
    f, alpha, beta, rho, nu = 100.0, 2.2, 0.5, -0.3, 0.6
    for k, bound in ((60.0, 0.006), (100.0, 0.0005), (120.0, 0.006), (170.0, 0.006)):
        pde, tt = _pde_vol(k, f, 1.0, alpha, beta, rho, nu)
        assert abs(sabr_obloj_vol([k], f, tt, alpha, beta, rho, nu)[0] - pde) < bound, k


def test_calibration_recovers_the_parameters_and_reports_the_fit() -> None:
    f, t, beta = 100.0, 0.5, 1.0
    truth = (0.25, -0.55, 0.9)
    k = f * np.exp(np.linspace(-0.35, 0.25, 15))
    vols = sabr_obloj_vol(k, f, t, truth[0], beta, truth[1], truth[2])
    fit = calibrate_sabr(k, vols, f, t, beta=beta)
    assert (fit.alpha, fit.rho, fit.nu) == pytest.approx(truth, abs=1e-5)
    assert fit.rmse_vol_points < 1e-6 and fit.converged and fit.n_quotes == 15
    noisy = vols + np.random.default_rng(2).normal(0.0, 0.002, vols.size)  # 0.2 vol point quote noise
    rough = calibrate_sabr(k, noisy, f, t, beta=beta)
    assert rough.rmse_vol_points < 0.3 and abs(rough.rho - truth[1]) < 0.15
    # the backbone: a 5 % spot move shifts the smile with the same parameters
    moved = sabr_vol(fit, k, forward=105.0)
    np.testing.assert_allclose(moved, sabr_obloj_vol(k, 105.0, t, *truth[:1], beta, truth[1], truth[2]), rtol=1e-6)
    with pytest.raises(ValueError, match="at least 3"):
        calibrate_sabr(k[:2], vols[:2], f, t)


def test_density_check_against_black_prices_computed_here() -> None:
    calm = SabrFit(0.2, 1.0, -0.3, 0.5, 100.0, 0.5, 0.0, 0, True, "obloj")
    check = density_check(calm)
    assert check.arbitrage_free and check.min_density >= 0.0
    # a very long, very wild smile with beta = 0: Hagan's expansion gives a negative density at low strikes
    wild = SabrFit(20.0, 0.0, -0.2, 1.2, 100.0, 15.0, 0.0, 0, True, "hagan")
    bad = density_check(wild)
    assert not bad.arbitrage_free and bad.min_density < 0.0
    # the same density recomputed here from Black prices (scipy's normal cdf) on the check's strike grid
    k = np.concatenate([[bad.strikes[0] ** 2 / bad.strikes[1]], bad.strikes, [bad.strikes[-1] ** 2 / bad.strikes[-2]]])
    vol = sabr_hagan_vol(k, 100.0, 15.0, 20.0, 0.0, -0.2, 1.2)
    sd = vol * math.sqrt(15.0)
    d1 = np.log(100.0 / k) / sd + 0.5 * sd
    c = 100.0 * norm.cdf(d1) - k * norm.cdf(d1 - sd)
    h = np.diff(k)
    density = 2.0 * np.diff(np.diff(c) / h) / (h[1:] + h[:-1])
    assert density.min() == pytest.approx(bad.min_density, rel=1e-6)


def test_density_checks_are_each_fits_density_check_bit_for_bit() -> None:
    # fits of both formulas and several betas (-0.0 and 0.0 in one group) interleaved, an ATM-flat smile (nu = 0), a
    # zero-width grid (alpha tiny) and extreme parameters; each batched check has density_check's bits, in order
    rng = np.random.default_rng(7)
    fits = []
    for i in range(120):
        beta = [1.0, 0.5, 0.0, -0.0, 0.3, 0.7][i % 6]
        formula = "hagan" if i % 4 == 1 else "obloj"
        f = float(rng.uniform(5.0, 500.0))
        t = float(rng.choice([1.0 / 365.0, 0.02, 0.25, 1.0, 3.0, 15.0]))
        alpha = float(rng.uniform(0.05, 1.5) * f ** (1.0 - beta))
        rho, nu = float(rng.uniform(-0.99, 0.99)), float(rng.choice([0.0, rng.uniform(0.01, 25.0)]))
        fits.append(SabrFit(alpha, beta, rho, nu, f, t, 0.0, 0, True, formula))
    fits.append(SabrFit(1e-300, 1.0, 0.0, 0.5, 100.0, 0.5, 0.0, 0, True, "obloj"))  # a grid of subnormal width
    fits.append(SabrFit(20.0, 0.0, -0.2, 1.2, 100.0, 15.0, 0.0, 0, True, "hagan"))  # negative density
    with np.errstate(all="ignore"):
        want = [density_check(fit) for fit in fits]
        got = density_checks(fits)
        assert density_checks(fits[:1])[0].strikes.tobytes() == want[0].strikes.tobytes()
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.arbitrage_free == w.arbitrage_free
        assert np.float64(g.min_density).tobytes() == np.float64(w.min_density).tobytes()
        assert g.strikes.tobytes() == w.strikes.tobytes()
    assert not got[-1].arbitrage_free
    assert density_checks([]) == []


def test_a_one_day_slice_is_not_held_at_a_flat_vol_of_vol_cap() -> None:
    # weekly options one day from expiry: their curvature needs a vol of vol above 10 (nu^2 T = 0.6 here)
    f, t, beta = 35.0, 1.0 / 365.0, 1.0
    truth = (0.72, -0.3, 15.0)
    k = f * np.exp(np.linspace(-0.09, 0.08, 17))
    vols = sabr_obloj_vol(k, f, t, truth[0], beta, truth[1], truth[2])
    fit = calibrate_sabr(k, vols, f, t, beta=beta)
    assert (fit.alpha, fit.rho, fit.nu) == pytest.approx(truth, abs=1e-4)
    assert fit.rmse_vol_points < 1e-6
    assert nu_upper_bound(t) == pytest.approx(math.sqrt(2.0 * 365.0)) and nu_upper_bound(1.0) == 10.0
