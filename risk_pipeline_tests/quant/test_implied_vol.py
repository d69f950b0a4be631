"""Implied volatility: round trips through the BSM and Bjerksund-Stensland prices, QuantLib's solver,
status codes, and a hypothesis round-trip property."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import QuantLib as ql
from hypothesis import given, settings
from hypothesis import strategies as st

from risk_pipeline.quant.american import american_greeks, american_price
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.implied_vol import (
    ImpliedVolResult,
    IvStatus,
    american_quote_status,
    implied_vol,
    implied_vol_american,
    implied_vol_black76,
    implied_vol_from_quotes,
)

EPS = float(np.finfo(np.float64).eps)


def _normalised_vega(spot, strike, t, vol, r, q):  # type: ignore[no-untyped-def]
    """Jäckel's normalised vega db/ds = exp(-x^2/(2 s^2) - s^2/8)/sqrt(2 pi), x = ln(F/K), s = sigma sqrt(T)."""
    x = np.log(spot / strike) + (r - q) * t
    s = vol * np.sqrt(t)
    return np.exp(-0.5 * (x / s) ** 2 - 0.125 * s * s) / math.sqrt(2 * math.pi)


def _conditioning_bound(price, spot, strike, t, vol, r, q):  # type: ignore[no-untyped-def]
    """Vol error a price rounding of a few ulps of the largest term implies: ulps * size / vega."""
    d1 = (np.log(spot / strike) + (r - q) * t) / (vol * np.sqrt(t)) + 0.5 * vol * np.sqrt(t)
    vega = spot * np.exp(-q * t) * np.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi) * np.sqrt(t)
    size = np.maximum(np.maximum(price, spot * np.exp(-q * t)), strike * np.exp(-r * t))
    return 16 * EPS * size / vega


@pytest.fixture(scope="module")
def quotes() -> dict[str, np.ndarray]:
    """100k quotes: expiries 1 day to 5 years (10% exactly one day), vols 1%-300%, strikes out to +-8 sd."""
    rng = np.random.default_rng(42)
    n = 100_000
    t = np.exp(rng.uniform(np.log(1 / 365), np.log(5.0), n))
    t[: n // 10] = 1 / 365
    vol = np.exp(rng.uniform(np.log(0.01), np.log(3.0), n))
    strike = 100.0 * np.exp(rng.uniform(-8.0, 8.0, n) * vol * np.sqrt(t))
    r = rng.uniform(-0.01, 0.08, n)
    q = rng.uniform(0.0, 0.06, n)
    call = rng.random(n) < 0.5
    spot = np.full(n, 100.0)
    price = bsm_price(spot, strike, t, vol, r, q, call)
    return {"price": price, "spot": spot, "strike": strike, "t": t, "vol": vol, "r": r, "q": q, "call": call}


def test_round_trip_out_of_the_money(quotes: dict[str, np.ndarray]) -> None:
    """Out-of-the-money quotes (all information kept in the price): |error| <= 1e-10 where the normalised
    vega exceeds 1e-8, for sigma sqrt(T) up to 3.9."""
    d = quotes
    forward = d["spot"] * np.exp((d["r"] - d["q"]) * d["t"])
    call = d["strike"] >= forward
    price = bsm_price(d["spot"], d["strike"], d["t"], d["vol"], d["r"], d["q"], call)
    res = implied_vol(price, d["spot"], d["strike"], d["t"], d["r"], d["q"], call)
    nv = _normalised_vega(d["spot"], d["strike"], d["t"], d["vol"], d["r"], d["q"])
    live = (nv > 1e-8) & (d["vol"] * np.sqrt(d["t"]) < 4.0)
    assert live.sum() > 60_000
    assert np.all(res.status[live] == IvStatus.OK)
    err = np.abs(res.vol - d["vol"])[live]
    assert err.max() <= 1e-10, err.max()
    one_day = live & (d["t"] == 1 / 365)
    assert one_day.sum() > 5_000 and np.abs(res.vol - d["vol"])[one_day].max() <= 1e-10
    assert res.iterations <= 3


def test_round_trip_all_quotes(quotes: dict[str, np.ndarray]) -> None:
    """Calls and puts on both sides of the forward: within 1e-10 plus the conditioning bound (in the money
    the time value is a small difference of large numbers, its rounding is amplified by 1/vega)."""
    d = quotes
    res = implied_vol(d["price"], d["spot"], d["strike"], d["t"], d["r"], d["q"], d["call"])
    nv = _normalised_vega(d["spot"], d["strike"], d["t"], d["vol"], d["r"], d["q"])
    live = nv > 1e-8
    assert np.all(res.status[live] == IvStatus.OK)
    bound = 1e-10 + _conditioning_bound(d["price"], d["spot"], d["strike"], d["t"], d["vol"], d["r"], d["q"])
    err = np.abs(res.vol - d["vol"])
    assert np.all(err[live] <= bound[live])
    # statuses off the live set are valid codes and every non-OK quote carries NaN
    assert set(np.unique(res.status)) <= {int(s) for s in IvStatus}
    assert np.all(np.isnan(res.vol[res.status != IvStatus.OK]))
    assert np.all(np.isfinite(res.vol[res.status == IvStatus.OK]))


def test_textbook_round_trip() -> None:
    # Hull Example 15.6: c = 4.7594 at sigma = 20%
    c = float(bsm_price(42.0, 40.0, 0.5, 0.2, 0.1, 0.0, True))
    res = implied_vol(c, 42.0, 40.0, 0.5, 0.1, 0.0, True)
    assert float(res.vol) == pytest.approx(0.2, abs=1e-14)
    assert res.status.shape == () and int(res.status) == IvStatus.OK


def test_matches_quantlib_solver() -> None:
    rng = np.random.default_rng(7)
    n = 300
    days = rng.integers(1, 3 * 365, n)
    t = days / 365.0
    vol = rng.uniform(0.05, 1.0, n)
    strike = 100.0 * np.exp(rng.uniform(-2.0, 2.0, n) * vol * np.sqrt(t))
    r = rng.uniform(0.0, 0.06, n)
    q = rng.uniform(0.0, 0.04, n)
    call = rng.random(n) < 0.5
    price = bsm_price(100.0, strike, t, vol, r, q, call)
    ours = implied_vol(price, 100.0, strike, t, r, q, call).vol
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    theirs = []
    for i in range(n):
        process = ql.BlackScholesMertonProcess(
            ql.QuoteHandle(ql.SimpleQuote(100.0)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, float(q[i]), dc)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, float(r[i]), dc)),
            ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), 0.3, dc)),
        )
        kind = ql.Option.Call if call[i] else ql.Option.Put
        opt = ql.VanillaOption(ql.PlainVanillaPayoff(kind, float(strike[i])), ql.EuropeanExercise(today + int(days[i])))
        opt.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        theirs.append(opt.impliedVolatility(float(price[i]), process, 1e-12, 1000, 1e-4, 5.0))
    np.testing.assert_allclose(ours, theirs, atol=1e-9)
    np.testing.assert_allclose(ours, vol, atol=1e-10)


def test_status_codes() -> None:
    s, k, t, r, q = 100.0, 100.0, 0.5, 0.03, 0.01
    intrinsic_call = s * math.exp(-q * t) - k * math.exp(-r * t)  # in the money forward: F > K
    assert intrinsic_call > 0
    cases = [
        (intrinsic_call * 0.99, t, True, IvStatus.BELOW_INTRINSIC),
        (-1.0, t, False, IvStatus.BELOW_INTRINSIC),
        (s * math.exp(-q * t), t, True, IvStatus.ABOVE_UPPER_BOUND),
        (k * math.exp(-r * t) * 1.01, t, False, IvStatus.ABOVE_UPPER_BOUND),
        (0.0, t, False, IvStatus.ZERO_PRICE),
        (5.0, 0.0, True, IvStatus.EXPIRED),
        (5.0, -0.1, True, IvStatus.EXPIRED),
        (np.nan, t, True, IvStatus.INVALID_INPUT),
        (5.0, np.nan, True, IvStatus.INVALID_INPUT),
        (5.0, t, True, IvStatus.OK),
    ]
    price = np.array([c[0] for c in cases])
    tt = np.array([c[1] for c in cases])
    call = np.array([c[2] for c in cases])
    res = implied_vol(price, s, k, tt, r, q, call)
    np.testing.assert_array_equal(res.status, [int(c[3]) for c in cases])
    assert np.all(np.isnan(res.vol[:-1])) and np.isfinite(res.vol[-1])
    bad_spot = implied_vol(5.0, [0.0, -1.0], 100.0, 0.5, 0.0, 0.0, True)
    np.testing.assert_array_equal(bad_spot.status, [IvStatus.INVALID_INPUT] * 2)
    not_converged = implied_vol(5.0, s, k, t, r, q, True, max_iterations=0)
    assert int(not_converged.status) == IvStatus.NOT_CONVERGED and np.isnan(not_converged.vol)


def test_from_quotes_uses_mid_and_flags_bad_quotes() -> None:
    s, k, t, r, q = 100.0, 105.0, 0.25, 0.02, 0.0
    true_vol = 0.35
    mid = float(bsm_price(s, k, t, true_vol, r, q, True))
    bid = np.array([mid - 0.05, 0.0, mid + 0.1, np.nan, mid - 0.05])
    ask = np.array([mid + 0.05, 0.5, mid - 0.1, 1.0, -1.0])
    res = implied_vol_from_quotes(bid, ask, s, k, t, r, q, True)
    assert isinstance(res, ImpliedVolResult)
    np.testing.assert_array_equal(
        res.status, [IvStatus.OK, IvStatus.ZERO_PRICE, IvStatus.CROSSED, IvStatus.INVALID_INPUT, IvStatus.INVALID_INPUT]
    )
    assert res.vol[0] == pytest.approx(true_vol, abs=1e-12)
    assert np.all(np.isnan(res.vol[1:]))
    am = implied_vol_from_quotes([mid - 0.05, 0.0], [mid + 0.05, 1.0], s, k, t, r, q, True, style="american")
    np.testing.assert_array_equal(am.status, [IvStatus.OK, IvStatus.ZERO_PRICE])


@pytest.mark.parametrize("style", ["european", "american"])
def test_from_quotes_inverts_only_unflagged_quotes(style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero-bid, crossed and invalid quotes never reach the solver; each other quote gets the volatility and status
    the solver gives its mid alone (one call per quote)."""
    from risk_pipeline.quant import implied_vol as module

    rng = np.random.default_rng(11)
    n = 24
    s, t, r, q = 100.0, rng.uniform(0.05, 1.5, n), 0.03, 0.01
    k = rng.uniform(70.0, 130.0, n)
    call = rng.random(n) < 0.5
    price = american_price(s, k, t, rng.uniform(0.15, 0.6, n), r, q, call)
    bid, ask = price - 0.02, price + 0.02
    bid[[1, 5, 9]] = 0.0  # zero bid
    bid[[2, 6]], ask[[2, 6]] = ask[[2, 6]], bid[[2, 6]]  # crossed
    ask[7] = np.nan  # invalid
    flagged = np.zeros(n, dtype=bool)
    flagged[[1, 2, 5, 6, 7, 9]] = True
    name = "implied_vol" if style == "european" else "implied_vol_american"
    solver = getattr(module, name)
    seen: list[np.ndarray] = []

    iterations: list[int] = []

    def spy(price: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        seen.append(np.asarray(price).copy())
        out = solver(price, *args, **kwargs)
        iterations.append(out.iterations)
        return out

    monkeypatch.setattr(module, name, spy)
    res = implied_vol_from_quotes(bid, ask, s, k, t, r, q, call, style=style)  # type: ignore[arg-type]
    monkeypatch.undo()
    assert len(seen) == 1 and seen[0].size == n - flagged.sum()
    assert res.iterations == iterations[0]  # the inverted quotes' count; flagged quotes take none
    np.testing.assert_array_equal(res.status[[1, 5, 9]], IvStatus.ZERO_PRICE)
    np.testing.assert_array_equal(res.status[[2, 6]], IvStatus.CROSSED)
    assert res.status[7] == IvStatus.INVALID_INPUT and np.all(np.isnan(res.vol[flagged]))
    for i in np.flatnonzero(~flagged):
        alone = solver(0.5 * (bid[i] + ask[i]), s, k[i], t[i], r, q, call[i])
        assert res.status[i] == alone.status and np.array_equal(res.vol[i], alone.vol, equal_nan=True)


def test_black76_round_trip() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    fwd = rng.uniform(50, 150, n)
    t = rng.uniform(1 / 365, 3, n)
    vol = rng.uniform(0.05, 1.0, n)
    strike = fwd * np.exp(rng.uniform(-2, 2, n) * vol * np.sqrt(t))
    r = rng.uniform(0.0, 0.05, n)
    otm_call = strike >= fwd
    price = bsm_price(fwd, strike, t, vol, r, r, otm_call)  # Black-76 = BSM with q = r on the forward
    res = implied_vol_black76(price, fwd, strike, t, r, otm_call)
    assert np.all(res.status == IvStatus.OK)
    np.testing.assert_allclose(res.vol, vol, atol=1e-12)


def test_american_round_trip() -> None:
    rng = np.random.default_rng(5)
    n = 400
    s = rng.uniform(70.0, 130.0, n)
    t = rng.uniform(1 / 365, 2.0, n)
    vol = rng.uniform(0.05, 0.8, n)
    r = rng.uniform(0.0, 0.08, n)
    q = rng.uniform(0.0, 0.06, n)
    call = rng.random(n) < 0.5
    for method in ("bs2002", "bs1993"):
        price = american_price(s, 100.0, t, vol, r, q, call, method=method)
        res = implied_vol_american(price, s, 100.0, t, r, q, call, method=method)
        vega = american_greeks(s, 100.0, t, vol, r, q, call, method=method).vega
        live = vega > 1e-3  # an exercised-now quote (price == intrinsic) has no volatility information
        assert live.sum() > 300
        assert np.all(res.status[live] == IvStatus.OK)
        assert np.abs(res.vol - vol)[live].max() <= 1e-9
    # statuses: below the zero-volatility American value, above the upper bound, expired
    # (a q = 0 call is worth at least S - K e^{-rT} = 4.88 at zero volatility)
    low = implied_vol_american(
        [5.0, 150.0, 5.0, 4.0, 10.0],
        [110.0, 100.0, 100.0, 100.0, 100.0],
        100.0,
        [1.0, 1.0, 0.0, 1.0, 1.0],
        0.05,
        0.0,
        True,
    )
    np.testing.assert_array_equal(
        low.status,
        [IvStatus.BELOW_INTRINSIC, IvStatus.ABOVE_UPPER_BOUND, IvStatus.EXPIRED, IvStatus.BELOW_INTRINSIC, IvStatus.OK],
    )


@settings(max_examples=300, deadline=None)
@given(
    log_moneyness=st.floats(-4.0, 4.0),
    t=st.floats(1 / 365, 5.0),
    vol=st.floats(0.01, 2.0),
    r=st.floats(-0.02, 0.10),
    q=st.floats(0.0, 0.08),
    call=st.booleans(),
)
def test_round_trip_property(log_moneyness: float, t: float, vol: float, r: float, q: float, call: bool) -> None:
    strike = 100.0 * math.exp(log_moneyness * vol * math.sqrt(t))
    price = float(bsm_price(100.0, strike, t, vol, r, q, call))
    res = implied_vol(price, 100.0, strike, t, r, q, call)
    nv = float(_normalised_vega(100.0, strike, t, vol, r, q))
    if nv > 1e-8:
        assert int(res.status) == IvStatus.OK
        bound = 1e-10 + float(_conditioning_bound(price, 100.0, strike, t, vol, r, q))
        assert abs(float(res.vol) - vol) <= bound
    else:
        assert int(res.status) in {int(s) for s in IvStatus}


def test_american_quote_status_is_the_solvers_status_without_its_iteration() -> None:
    """``american_quote_status`` gives ``implied_vol_from_quotes(style="american")``'s status on live, zero-bid,
    crossed, NaN, below the zero-volatility value, above the upper bound and expired quotes, and says where the
    European implied vol of the mid does not bound the search (a deep put priced above K e^{-rT})."""
    s, k, t, r, q = 100.0, 100.0, 0.5, 0.05, 0.01
    live = float(american_price(s, k, t, 0.3, r, q, False))
    spot = np.array([s, s, s, s, 110.0, s, s, 3.0])
    strike = np.array([k, k, k, k, 100.0, k, k, 100.0])
    time_years = np.array([t, t, t, t, t, t, 0.0, 1.0])
    call = np.array([False, False, False, False, True, True, False, False])
    bid = np.array([live - 0.05, 0.0, live + 0.1, np.nan, 5.0, 150.0, live - 0.05, 97.4])
    ask = np.array([live + 0.05, 0.5, live - 0.1, 1.0, 5.2, 150.2, live + 0.05, 97.6])
    status, bounded = american_quote_status(bid, ask, spot, strike, time_years, r, q, call)
    solver = implied_vol_from_quotes(bid, ask, spot, strike, time_years, r, q, call, style="american")
    expected = [
        IvStatus.OK,
        IvStatus.ZERO_PRICE,
        IvStatus.CROSSED,
        IvStatus.INVALID_INPUT,
        IvStatus.BELOW_INTRINSIC,
        IvStatus.ABOVE_UPPER_BOUND,
        IvStatus.EXPIRED,
        IvStatus.OK,
    ]
    np.testing.assert_array_equal(status, expected)
    np.testing.assert_array_equal(solver.status, expected)
    # the European vol of the last mid does not exist: 97.5 > 100 e^{-0.05}
    np.testing.assert_array_equal(bounded, [True, False, False, False, False, False, False, False])
