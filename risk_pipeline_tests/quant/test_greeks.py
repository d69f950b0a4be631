"""Position Greeks against QuantLib and closed forms; buckets; rolling beta against numpy.polyfit."""

from __future__ import annotations

import numpy as np
import pytest
import QuantLib as ql

from risk_pipeline.quant.greeks import expiry_bucket, position_greeks, rolling_beta


def _ql_european(s: float, k: float, t_days: int, vol: float, r: float, q: float, call: bool) -> ql.VanillaOption:
    today = ql.Date(20, 11, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(s)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), vol, dc)),
    )
    option = ql.VanillaOption(
        ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, k),
        ql.EuropeanExercise(today + t_days),
    )
    option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
    return option


def test_option_and_stock_positions_scale_per_design_conventions() -> None:
    s, k, days, vol, r, q = 100.0, 105.0, 73, 0.3, 0.04, 0.01
    t = days / 365.0
    g = position_greeks(
        quantity=[-10.0, 500.0],
        multiplier=[100.0, 1.0],
        is_option=[True, False],
        is_call=[True, False],
        is_american=[False, False],
        spot=s,
        strike=[k, np.nan],
        time_years=[t, np.nan],
        vol=[vol, np.nan],
        rate=r,
        dividend_yield=q,
    )
    o = _ql_european(s, k, days, vol, r, q, True)
    units = -10.0 * 100.0
    assert g.price[0] == pytest.approx(o.NPV(), rel=1e-10)
    assert g.delta[0] == pytest.approx(units * o.delta(), rel=1e-10)
    assert g.dollar_delta[0] == pytest.approx(units * o.delta() * s, rel=1e-10)
    assert g.gamma[0] == pytest.approx(units * o.gamma(), rel=1e-10)
    assert g.dollar_gamma_1pct[0] == pytest.approx(units * o.gamma() * s * s / 100, rel=1e-10)
    assert g.vega_per_vol_point[0] == pytest.approx(units * o.vega() / 100, rel=1e-10)
    assert g.theta_per_day[0] == pytest.approx(units * o.thetaPerDay(), rel=1e-9)
    assert g.rho_per_pct[0] == pytest.approx(units * o.rho() / 100, rel=1e-10)
    assert g.market_value[0] == pytest.approx(units * o.NPV(), rel=1e-10)
    # the stock row
    assert (g.delta[1], g.dollar_delta[1], g.market_value[1]) == (500.0, 50_000.0, 50_000.0)
    for name in ("gamma", "vega_per_vol_point", "theta_per_day", "rho_per_pct", "vanna", "volga", "charm"):
        assert getattr(g, name)[1] == 0.0


def test_sticky_delta_adds_the_smile_slope() -> None:
    kwargs = dict(
        quantity=[1.0],
        multiplier=[100.0],
        is_option=[True],
        is_call=[False],
        is_american=[False],
        spot=100.0,
        strike=[95.0],
        time_years=[0.25],
        vol=[0.25],
        rate=0.03,
        dividend_yield=0.0,
    )
    sticky_strike = position_greeks(**kwargs)
    slope = -0.2  # vol falls as strike rises: d sigma / d ln K
    sticky_delta = position_greeks(**kwargs, smile_slope=[slope])
    vega_units = sticky_strike.vega_per_vol_point[0] * 100  # quantity x multiplier x vega
    assert sticky_delta.delta[0] - sticky_strike.delta[0] == pytest.approx(-vega_units * slope / 100.0, rel=1e-12)


def test_expiry_buckets_edges() -> None:
    labels = expiry_bucket([0, 7, 8, 30, 31, 90, 91, 400, 5], [True] * 8 + [False])
    assert labels.tolist() == ["0-7d", "0-7d", "8-30d", "8-30d", "31-90d", "31-90d", "91d+", "91d+", "none"]


def test_rolling_beta_matches_least_squares() -> None:
    rng = np.random.default_rng(3)
    m = rng.normal(0, 0.01, 400)
    r = np.column_stack([1.3 * m + rng.normal(0, 0.01, 400), -0.2 * m + rng.normal(0, 0.005, 400)])
    beta = rolling_beta(r, m, window=252)
    for j in range(2):
        slope = np.polyfit(m[-252:], r[-252:, j], 1)[0]
        assert beta[j] == pytest.approx(slope, rel=1e-10)
