"""Recommendations of HIGH and CRITICAL stress results against hand-computed numbers and a full revaluation."""

from __future__ import annotations

import numpy as np
import pytest
import QuantLib as ql

from risk_pipeline.quant.stress_actions import stress_recommendations

NAV = 1_000_000.0
HIGH = -0.05


def _recs(**kw: object) -> list[dict]:
    base = {"scenario_id": "crash", "nav": NAV, "high_threshold": HIGH}
    return stress_recommendations(**{**base, **kw})  # type: ignore[arg-type]


def test_book_cut_and_worst_name_by_hand() -> None:
    # loss 80,000 = 8 % of NAV; HIGH allows 50,000: the book must shrink to 5/8, a cut of 37.5 %
    recs = _recs(risk_level="HIGH", pnl=-80_000.0, pnl_pct_nav=-0.08, worst_symbol="AAA", worst_symbol_pnl=-40_000.0)
    book, name = recs
    assert book["action"] == "reduce_book"
    assert book["cut_fraction"] == pytest.approx(0.375, rel=1e-15)
    assert book["loss_after_at_most"] == pytest.approx(50_000.0, rel=1e-15)
    # 30,000 must go; AAA loses 40,000, so cutting AAA by 75 % removes it
    assert name == {**name, "action": "reduce_name", "symbol": "AAA"}
    assert name["cut_fraction"] == pytest.approx(0.75, rel=1e-15)
    assert "37.5%" in book["text"] and "75.0%" in name["text"]


def test_worst_name_too_small_and_levels_without_actions() -> None:
    recs = _recs(risk_level="CRITICAL", pnl=-150_000.0, pnl_pct_nav=-0.15, worst_symbol="AAA", worst_symbol_pnl=-90_000)
    assert [r["action"] for r in recs] == ["reduce_book"]  # 100,000 must go, AAA loses only 90,000
    assert recs[0]["cut_fraction"] == pytest.approx(1 - 0.05 / 0.15, rel=1e-15)
    assert _recs(risk_level="MEDIUM", pnl=-30_000.0, pnl_pct_nav=-0.03) == []
    assert _recs(risk_level="LOW", pnl=10_000.0, pnl_pct_nav=0.01) == []


def test_index_hedge_offsets_the_excess_by_hand() -> None:
    # 30,000 must go; the index at 5,000 falls 20 %: a short unit gains 1,000, so 30 units offset it exactly
    recs = _recs(
        risk_level="HIGH", pnl=-80_000.0, pnl_pct_nav=-0.08, index_symbol="SYNX", index_spot=5_000.0, index_move=-0.2
    )
    hedge = recs[-1]
    assert (hedge["action"], hedge["side"], hedge["quantity"]) == ("index_hedge", "sell", 30)
    assert hedge["hedge_pnl"] == pytest.approx(30_000.0, rel=1e-15)
    # a rally scenario is hedged long, rounded up to whole units: 30,000 / (5,000 x 0.07) = 85.7 -> 86
    up = _recs(
        risk_level="HIGH", pnl=-80_000.0, pnl_pct_nav=-0.08, index_symbol="SYNX", index_spot=5e3, index_move=0.07
    )
    assert (up[-1]["side"], up[-1]["quantity"]) == ("buy", 86) and up[-1]["hedge_pnl"] >= 30_000.0
    # no index move (a vol or liquidity scenario), or no index price: no index hedge
    flat = _recs(
        risk_level="HIGH", pnl=-80_000.0, pnl_pct_nav=-0.08, index_symbol="SYNX", index_spot=5e3, index_move=0.0
    )
    assert [r["action"] for r in flat] == ["reduce_book"]
    assert [r["action"] for r in _recs(risk_level="HIGH", pnl=-8e4, pnl_pct_nav=-0.08, index_move=-0.2)] == [
        "reduce_book"
    ]


def test_book_cut_brings_a_revalued_option_book_to_the_high_level() -> None:
    """Full revaluation (QuantLib, analytic European) of a put book under a -25 % spot, +50 % vol scenario: scaling
    the positions by 1 - cut lands the scenario loss exactly on the HIGH threshold."""
    today = ql.Date(20, 11, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()

    def put_value(spot: float, vol: float, strike: float) -> float:
        option = ql.EuropeanOption(
            ql.PlainVanillaPayoff(ql.Option.Put, strike), ql.EuropeanExercise(today + ql.Period(90, ql.Days))
        )
        process = ql.BlackScholesMertonProcess(
            ql.QuoteHandle(ql.SimpleQuote(spot)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, 0.03, dc)),
            ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.TARGET(), vol, dc)),
        )
        option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
        return option.NPV()

    strikes, qty = np.array([90.0, 100.0]), np.array([-6_000.0, -4_000.0])  # short puts
    before = np.array([put_value(100.0, 0.25, k) for k in strikes])
    after = np.array([put_value(75.0, 0.375, k) for k in strikes])
    pnl = float(qty @ (after - before))
    recs = _recs(risk_level="CRITICAL", pnl=pnl, pnl_pct_nav=pnl / NAV)
    scaled = float((qty * (1 - recs[0]["cut_fraction"])) @ (after - before))
    assert pnl / NAV < -0.10 and scaled / NAV == pytest.approx(HIGH, rel=1e-12)
