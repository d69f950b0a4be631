"""Heston: COS prices against QuantLib's AnalyticHestonEngine (adaptive Gauss-Lobatto), put-call parity of the two
COS series, calibration round trip on a Heston-generated surface, the Feller flag."""

from __future__ import annotations

import numpy as np
import pytest
import QuantLib as ql

from risk_pipeline.quant.heston import HestonParams, calibrate_heston, heston_implied_vol, heston_price

SPOT = 100.0


def _grid(seed: int, n: int) -> np.ndarray:
    """Seeded options: expiries from 1 day to 5 years in whole days, vol of vol up to 2.5, strikes +-3 sd."""
    rng = np.random.default_rng(seed)
    days = rng.choice([1, 2, 5, 7, 14, 30, 91, 182, 365, 730, 1825], n)
    v0, theta = rng.uniform(0.01, 0.3, n), rng.uniform(0.01, 0.3, n)
    kappa, xi, rho = rng.uniform(0.2, 8.0, n), rng.uniform(0.1, 2.5, n), rng.uniform(-0.95, 0.5, n)
    sd = np.sqrt(np.maximum(v0, theta) * days / 365.0)
    strike = SPOT * np.exp(rng.uniform(-3.0, 3.0, n) * sd)
    rate, div = rng.uniform(0.0, 0.06, n), rng.uniform(0.0, 0.03, n)
    is_call = rng.integers(0, 2, n).astype(float)
    return np.column_stack([strike, days, rate, div, is_call, v0, kappa, theta, xi, rho])


def _quantlib(row: np.ndarray) -> float:
    strike, days, rate, div, is_call, v0, kappa, theta, xi, rho = row
    today = ql.Date(20, 11, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    process = ql.HestonProcess(
        ql.YieldTermStructureHandle(ql.FlatForward(today, float(rate), dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, float(div), dc)),
        ql.QuoteHandle(ql.SimpleQuote(SPOT)),
        float(v0),
        float(kappa),
        float(theta),
        float(xi),
        float(rho),
    )
    engine = ql.AnalyticHestonEngine(ql.HestonModel(process), 1e-13, 1_000_000)
    payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, float(strike))
    option = ql.VanillaOption(payoff, ql.EuropeanExercise(today + int(days)))
    option.setPricingEngine(engine)
    return option.NPV()


def test_prices_match_quantlib_analytic_heston_engine_to_1e_8() -> None:
    grid = _grid(7, 160)
    strike, days, rate, div, is_call, *params = grid.T
    got = heston_price(SPOT, strike, days / 365.0, rate, div, is_call, *params)
    want = np.array([_quantlib(row) for row in grid])
    # relative 1e-8; prices under 1e-11 (1e-13 of spot) are below what the oracle itself resolves
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-11)
    assert (want > 1e-3).sum() > 100
    assert (days <= 2).sum() > 20 and (params[3] > 2.0).sum() > 20  # short expiries, high vol of vol in the grid


def test_each_price_is_one_surface_or_one_option_alike() -> None:
    """Broadcasting: one parameter set over a surface gives the same numbers as per-option parameter arrays."""
    p = HestonParams(0.04, 1.5, 0.05, 0.9, -0.7)
    strike = np.linspace(60.0, 140.0, 9)
    t = np.array([2.0, 30.0, 365.0])[:, None] / 365.0
    surface = heston_price(SPOT, strike[None, :], t, 0.03, 0.01, True, *p.as_array())
    per_option = heston_price(
        SPOT, *np.broadcast_arrays(strike[None, :], t), 0.03, 0.01, True, *(np.full((3, 9), v) for v in p.as_array())
    )
    np.testing.assert_array_equal(surface, per_option)
    assert surface.shape == (3, 9)


def test_put_call_parity_between_the_two_cos_series() -> None:
    """Calls from the share-measure series and puts from the pricing-measure series, each on its own payoff (no
    parity used), satisfy C - P = e^{-rT} (F - K)."""
    rng = np.random.default_rng(3)
    n = 400
    t = rng.choice([2.0, 7.0, 30.0, 365.0, 1825.0], n) / 365.0
    strike = SPOT * np.exp(rng.uniform(-0.8, 0.8, n))
    v0, kappa, theta = rng.uniform(0.01, 0.2, n), rng.uniform(0.3, 5.0, n), rng.uniform(0.01, 0.2, n)
    xi, rho = rng.uniform(0.1, 2.0, n), rng.uniform(-0.95, 0.0, n)
    r, q = 0.04, 0.015
    call = heston_price(SPOT, strike, t, r, q, True, v0, kappa, theta, xi, rho, parity=False)
    put = heston_price(SPOT, strike, t, r, q, False, v0, kappa, theta, xi, rho, parity=False)
    forward = SPOT * np.exp((r - q) * t)
    np.testing.assert_allclose(call - put, np.exp(-r * t) * (forward - strike), rtol=0, atol=1e-9)


def test_out_of_domain_inputs_name_the_index_and_rule() -> None:
    with pytest.raises(ValueError, match=r"index 1.*xi > 0"):
        heston_price(SPOT, 100.0, 0.5, 0.0, 0.0, True, 0.04, 1.0, 0.04, np.array([0.5, -0.1]), -0.5)


def test_feller_flag() -> None:
    assert HestonParams(0.04, 2.0, 0.04, 0.3, -0.7).feller_ok  # 2 * 2 * 0.04 = 0.16 >= 0.09
    assert not HestonParams(0.04, 2.0, 0.04, 0.5, -0.7).feller_ok  # 0.16 < 0.25
    assert HestonParams(0.04, 2.0, 0.04, 0.4, -0.7).feller_ratio == pytest.approx(1.0)


def test_calibration_round_trip_recovers_the_parameters() -> None:
    true = HestonParams(0.035, 1.8, 0.06, 0.8, -0.65)
    expiries = np.array([7, 14, 30, 61, 91, 182, 273, 365, 547, 730]) / 365.0
    t, x = np.meshgrid(expiries, np.linspace(-1.6, 1.0, 17), indexing="ij")
    k = x * 0.25 * np.sqrt(t)  # +-1.6 / 1.0 standard deviations at 25 % vol
    vol = heston_implied_vol(true, t.ravel(), k.ravel())
    assert np.isfinite(vol).all()
    fit = calibrate_heston(t.ravel(), k.ravel(), vol, initial=HestonParams(0.06, 3.0, 0.03, 0.4, -0.2))
    assert fit.converged
    np.testing.assert_allclose(fit.params.as_array(), true.as_array(), rtol=1e-4)
    assert fit.rmse_vol_points < 0.01
    assert fit.n_quotes == vol.size and fit.n_expiries == expiries.size
    assert fit.feller_ok is False  # 2 * 1.8 * 0.06 = 0.216 < 0.64
