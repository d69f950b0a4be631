"""Gap-risk decisions against closed forms, the exchange calendar and the event-window rules."""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.quant.gap_risk import (
    ALERT,
    BLOCK_NEW,
    BOOK_WIDE,
    FLATTEN_SHORT_GAMMA,
    REDUCE,
    TIGHTEN_CAPS,
    GapRiskConfigError,
    GapRiskPolicy,
    LeadWindows,
    LimitOverride,
    WindowEvent,
    apply_limit_overrides,
    blackout_for_order,
    blackouts_from_rows,
    combined_gap_scenarios,
    decide,
    gap_document,
    gap_var,
    loss_measures,
    monthly_expirations,
    overrides_from_rows,
    parse_gap_risk_config,
    risk_level,
    trading_days_until,
    window_start,
)
from risk_pipeline.quant.limits import LimitsConfig, make_result
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet


def _xnys() -> object:
    import exchange_calendars as xcals

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xcals.get_calendar("XNYS", start="2023-01-01", end="2027-12-31")


def _sessions() -> tuple[dt.date, ...]:
    cal = _xnys()
    return tuple(d.date() for d in cal.sessions)  # type: ignore[attr-defined]


# ---- exchange calendar -----------------------------------------------------------------------------


def test_third_friday_expirations_follow_the_exchange_calendar() -> None:
    cal = _xnys()
    got = monthly_expirations(_sessions(), dt.date(2024, 1, 1), dt.date(2027, 12, 1))
    expected = []
    for month in pd.date_range("2024-01-01", "2027-12-01", freq="MS"):
        fridays = pd.date_range(month, month + pd.offsets.MonthEnd(0), freq="W-FRI")
        third = fridays[2]
        expected.append(third.date() if cal.is_session(third) else cal.date_to_session(third, "previous").date())  # type: ignore[attr-defined]
    assert got == expected
    # Good Friday 2025 is the third Friday of April: expiration moves to Thursday
    assert dt.date(2025, 4, 17) in got and dt.date(2025, 4, 18) not in got
    assert not cal.is_session(pd.Timestamp("2025-04-18"))  # type: ignore[attr-defined]
    # Juneteenth 2026 falls on the third Friday of June
    assert dt.date(2026, 6, 18) in got


def test_lead_window_across_good_friday_starts_on_the_right_session() -> None:
    """Earnings before the open on Monday 2026-04-06 (Good Friday 04-03 closed): two sessions ahead is 04-01."""
    cal = _xnys()
    days = _sessions()
    reaction = dt.date(2026, 4, 6)
    assert window_start(reaction, 2, days) == cal.session_offset(pd.Timestamp(reaction), -2).date()  # type: ignore[attr-defined]
    assert window_start(reaction, 2, days) == dt.date(2026, 4, 1)  # counting weekdays would give 04-02
    assert trading_days_until(dt.date(2026, 4, 1), reaction, days) == 2
    assert trading_days_until(dt.date(2026, 4, 2), reaction, days) == 1
    assert trading_days_until(dt.date(2026, 3, 31), reaction, days) == 3
    assert trading_days_until(reaction, reaction, days) == 0


def test_reaction_session_uses_closes_and_early_closes() -> None:
    from risk_pipeline.event_windows import reaction_sessions

    times = pd.Series(
        pd.to_datetime(
            [
                "2026-11-20T21:30:00Z",  # after the Friday close: the next session (Monday)
                "2026-11-24T13:00:00Z",  # 08:00 New York, before the open: the same session
                "2026-11-27T18:30:00Z",  # 13:30 New York on the early-close day after Thanksgiving: Monday
                "2026-11-27T17:30:00Z",  # 12:30 New York, before that early close: the same session
                "2026-12-09T19:00:00Z",  # FOMC 14:00 New York: the same session
                "2026-04-02T21:00:00Z",  # after the close before Good Friday: Monday 04-06
            ],
            utc=True,
        )
    )
    cal = _xnys()
    expected = []
    for t in times:
        day = t.tz_convert("America/New_York").normalize().tz_localize(None)
        s = cal.date_to_session(day, "next")  # type: ignore[attr-defined]
        if cal.session_close(s) <= t:  # type: ignore[attr-defined]
            s = cal.next_session(s)  # type: ignore[attr-defined]
        expected.append(s.date())
    got = list(reaction_sessions(times))
    assert got == expected
    assert got == [
        dt.date(2026, 11, 23),
        dt.date(2026, 11, 24),
        dt.date(2026, 11, 30),
        dt.date(2026, 11, 27),
        dt.date(2026, 12, 9),
        dt.date(2026, 4, 6),
    ]


# ---- loss measures -----------------------------------------------------------------------------------


def test_loss_measures_match_the_order_statistics() -> None:
    rng = np.random.default_rng(3)
    p = rng.normal(0, 1000, size=(30, 4))
    got = loss_measures(p, 0.95)  # m = 1.5
    s = np.sort(p, axis=0)
    np.testing.assert_allclose(got["loss_quantile"], -s[1])
    np.testing.assert_allclose(got["expected_shortfall"], -(s[0] + 0.5 * s[1]) / 1.5)
    np.testing.assert_allclose(got["worst_loss"], -s[0])
    got40 = loss_measures(p[:20].repeat(2, axis=0), 0.95)  # 40 rows, m = 2
    s40 = np.sort(p[:20].repeat(2, axis=0), axis=0)
    np.testing.assert_allclose(got40["expected_shortfall"], -(s40[0] + s40[1]) / 2)


# ---- decisions ------------------------------------------------------------------------------------------


MOVES = np.array([-0.15, -0.12, -0.08, -0.05, -0.03, -0.01, 0.0, 0.01, 0.02, 0.03] * 2)  # 20 moves: m = 1 at 95 %


def _bs_call(spot: float, strike: float, t: float, r: float, vol: float) -> float:
    """Black-Scholes call (Hull ch. 15), no dividends: the independent oracle."""
    from scipy.stats import norm

    d1 = (math.log(spot / strike) + (r + 0.5 * vol**2) * t) / (vol * math.sqrt(t))
    return float(spot * norm.cdf(d1) - strike * math.exp(-r * t) * norm.cdf(d1 - vol * math.sqrt(t)))


def _earnings(symbol: str = "A") -> WindowEvent:
    return WindowEvent(
        f"earn-{symbol}", "earnings", symbol, pd.Timestamp("2026-11-23T21:30:00Z"), dt.date(2026, 11, 24), 2
    )


def _market() -> WindowEvent:
    return WindowEvent("fomc-x", "fomc", None, pd.Timestamp("2026-12-09T19:00:00Z"), dt.date(2026, 12, 9), 1)


CAPS = {"max_abs_net_delta_shares": 250_000.0, "max_abs_gamma_shares": 25_000.0, "max_abs_net_dollar_delta": 2.5e7}


def test_reduce_brings_the_stock_loss_under_the_budget_closed_form() -> None:
    book = Portfolio(
        symbols=("A", "B"),
        spot=[100.0, 50.0],
        symbol_index=[0, 1],
        quantity=[1000.0, 400.0],
        position_id=("A:stock", "B:stock"),
    )
    policy = GapRiskPolicy(book="x", max_event_loss_pct_nav=0.01)
    d = decide(book, _earnings("A"), MOVES, None, nav=1_000_000.0, policy=policy, caps=CAPS)
    # worst of 20 moves is the 95 % loss: 1000 x 100 x 0.15; B does not move on A's earnings
    assert d.loss_before == pytest.approx(15_000.0)
    assert d.budget == pytest.approx(10_000.0)
    kept = math.floor(10_000.0 / (100.0 * 0.15))  # 666 shares
    assert [(t.position_id, t.trade_quantity, t.quantity_after) for t in d.trades] == [("A:stock", kept - 1000, kept)]
    assert d.loss_after == pytest.approx(kept * 100.0 * 0.15) and d.loss_after <= d.budget
    assert (kept + 1) * 100.0 * 0.15 > d.budget  # one more share would breach: the least reduction
    assert d.action == REDUCE and set(d.actions) == {REDUCE, TIGHTEN_CAPS, BLOCK_NEW, ALERT}
    assert d.limit_overrides == {"max_abs_net_delta_shares": 125_000.0, "max_abs_gamma_shares": 12_500.0}
    assert d.symbol == "A" and d.quantity == pytest.approx(1000 - kept)


def test_within_budget_only_tightens_blocks_and_alerts() -> None:
    book = Portfolio(symbols=("A",), spot=[100.0], symbol_index=[0], quantity=[500.0], position_id=("A:stock",))
    d = decide(book, _earnings("A"), MOVES, None, nav=1_000_000.0, policy=GapRiskPolicy(), caps=CAPS)
    assert d.loss_before == pytest.approx(500 * 100 * 0.15) and not d.trades
    assert d.action == BLOCK_NEW and d.loss_after == d.loss_before


def test_short_options_are_bought_back_before_earnings() -> None:
    t, vol, r = 0.1, 0.4, 0.03
    book = Portfolio(
        symbols=("A",),
        spot=[100.0],
        symbol_index=[0, 0],
        quantity=[300.0, -5.0],
        multiplier=[1.0, 100.0],
        is_option=[False, True],
        is_call=[True, True],
        strike=[1.0, 105.0],
        time_years=[0.0, t],
        implied_vol=[0.0, vol],
        rate=[0.0, r],
        dividend_yield=[0.0, 0.0],
        position_id=("A:stock", "A:call"),
    )
    d = decide(book, _earnings("A"), MOVES, None, nav=1_000_000.0, policy=GapRiskPolicy(), caps=CAPS)
    assert d.action == FLATTEN_SHORT_GAMMA
    assert [(x.position_id, x.action, x.trade_quantity) for x in d.trades] == [("A:call", FLATTEN_SHORT_GAMMA, 5.0)]
    # after the buy-back only 300 shares remain: their 95 % loss is the worst move, no reduction needed
    assert d.loss_after == pytest.approx(300 * 100 * 0.15)
    # before: the short call adds to the loss on up-moves; check the book's loss against BSM by hand
    days = 1.0 / 365.0
    call0 = _bs_call(100.0, 105.0, t, r, vol)
    pnl = [300 * 100 * m - 500 * (_bs_call(100 * (1 + m), 105.0, t - days, r, vol) - call0) for m in MOVES]
    assert d.loss_before == pytest.approx(-np.sort(pnl)[0], rel=1e-6)
    off = decide(
        book,
        _earnings("A"),
        MOVES,
        None,
        nav=1_000_000.0,
        policy=GapRiskPolicy(flatten_short_gamma_before_earnings=False),
        caps=CAPS,
    )
    assert FLATTEN_SHORT_GAMMA not in off.actions


def test_market_wide_event_scales_the_whole_book_by_beta() -> None:
    book = Portfolio(
        symbols=("A", "B"),
        spot=[100.0, 50.0],
        symbol_index=[0, 1],
        quantity=[2000.0, 4000.0],
        position_id=("A:stock", "B:stock"),
    )
    betas = np.array([1.5, 0.5])
    moves = np.array([-0.04, -0.02, 0.0, 0.01, 0.02] * 4)
    d = decide(book, _market(), moves, betas, nav=1_000_000.0, policy=GapRiskPolicy(), caps=CAPS)
    # a stock moves (1 + m)^beta - 1 when the index moves m (quant.stress.beta_shocks)
    worst = 2000 * 100 * (0.96**1.5 - 1) + 4000 * 50 * (0.96**0.5 - 1)
    assert d.loss_before == pytest.approx(-worst)  # about 15,920 > 10,000
    assert d.symbol == BOOK_WIDE and d.action == REDUCE
    after = {x.position_id: x.quantity_after for x in d.trades}
    k = d.reduce_factor
    assert after == {"A:stock": math.trunc(2000 * k), "B:stock": math.trunc(4000 * k)}
    assert 10_000 / -worst - 1.01e-6 <= k <= 10_000 / -worst  # the largest factor within budget, to 1e-6
    assert d.loss_after == pytest.approx(
        -(after["A:stock"] * 100 * (0.96**1.5 - 1) + after["B:stock"] * 50 * (0.96**0.5 - 1))
    )
    assert d.loss_after <= d.budget
    assert d.limit_overrides == {"max_abs_net_dollar_delta": 1.25e7, "max_abs_gamma_shares": 12_500.0}
    no_block = decide(
        book, _market(), moves, betas, nav=1_000_000.0, policy=GapRiskPolicy(block_new_market_wide=False), caps=CAPS
    )
    assert BLOCK_NEW not in no_block.actions


def test_event_without_history_still_tightens_blocks_and_alerts() -> None:
    book = Portfolio(symbols=("A",), spot=[100.0], symbol_index=[0], quantity=[500.0], position_id=("A:stock",))
    d = decide(book, _earnings("A"), [], None, nav=1_000_000.0, policy=GapRiskPolicy(), caps=CAPS)
    assert math.isnan(d.loss_before) and not d.trades and d.action == BLOCK_NEW and d.n_scenarios == 0


# ---- configuration, document -----------------------------------------------------------------------------


def test_policy_file_defaults_overrides_and_errors() -> None:
    cfg = parse_gap_risk_config(
        {
            "version": "t1",
            "lead_sessions": {"nfp": 3},
            "defaults": {"max_event_loss_pct_nav": 0.02},
            "books": {"b": {"cap_factor": 0.25}},
        }
    )
    assert cfg.leads.lead("earnings") == 2 and cfg.leads.lead("nfp") == 3 and cfg.leads.lead("gdp") == 1
    assert cfg.for_book("b").cap_factor == 0.25 and cfg.for_book("b").max_event_loss_pct_nav == 0.02
    assert cfg.for_book("other").max_event_loss_pct_nav == 0.02
    with pytest.raises(GapRiskConfigError) as err:
        parse_gap_risk_config(
            {"defaults": {"max_event_los_pct_nav": 0.02, "cap_factor": 2}, "books": {"b": {"reduce": 1}}}
        )
    text = str(err.value)
    assert "version is required" in text and "max_event_los_pct_nav" in text and "reduce" in text
    with pytest.raises(GapRiskConfigError):
        LeadWindows({"earnings": -1})


def test_shipped_policy_file_is_valid() -> None:
    from risk_pipeline.event_windows import load_gap_risk_config

    cfg = load_gap_risk_config()
    assert (cfg.leads.lead("earnings"), cfg.leads.lead("fomc"), cfg.leads.lead("cpi"), cfg.leads.lead("x")) == (
        2,
        1,
        1,
        1,
    )
    assert cfg.for_book("core_equity").max_event_loss_pct_nav == 0.01


@pytest.mark.parametrize(
    ("loss", "level"),
    [(4_999.0, "LOW"), (5_000.0, "MEDIUM"), (10_000.0, "HIGH"), (19_999.0, "HIGH"), (20_000.0, "CRITICAL")],
)
def test_risk_level_against_the_budget(loss: float, level: str) -> None:
    assert risk_level(loss, 10_000.0) == level


def test_gap_document_shape() -> None:
    rows = [
        {
            "action": "none",
            "symbol": "*",
            "event_id": "none",
            "event_type": "none",
            "event_date": None,
            "trading_days_until": None,
            "loss_before": None,
        },
        {
            "action": REDUCE,
            "symbol": "A",
            "event_id": "e1",
            "event_type": "earnings",
            "event_date": dt.date(2026, 11, 23),
            "trading_days_until": 2,
            "loss_before": 15_000.0,
        },
        {
            "action": BLOCK_NEW,
            "symbol": "*",
            "event_id": "e2",
            "event_type": "cpi",
            "event_date": dt.date(2026, 11, 20),
            "trading_days_until": 1,
            "loss_before": 3_000.0,
        },
    ]
    doc = gap_document(rows, 10_000.0)
    assert doc == {
        "upcoming_events": [
            {"symbol": None, "event_type": "cpi", "date": "2026-11-20", "days_until": 1, "action": BLOCK_NEW},
            {"symbol": "A", "event_type": "earnings", "date": "2026-11-23", "days_until": 2, "action": REDUCE},
        ],
        "risk_level": "HIGH",
        "recommended_action": REDUCE,
    }
    assert gap_document(rows[:1], 10_000.0) == {
        "upcoming_events": [],
        "risk_level": "LOW",
        "recommended_action": "none",
    }
    unknown = {**rows[1], "loss_before": None, "event_id": "e3"}  # no move history: listed, not estimated
    assert gap_document([*rows, unknown], 10_000.0)["risk_level"] == "HIGH"
    alone = gap_document([unknown], 10_000.0)
    assert alone["risk_level"] == "LOW" and alone["recommended_action"] == REDUCE and len(alone["upcoming_events"]) == 1


# ---- limits, pre-trade -----------------------------------------------------------------------------------


def _rows(expires: str) -> list[dict]:
    return [
        {
            "event_id": "earn-A",
            "symbol": "A",
            "event_type": "earnings",
            "event_time": expires,
            "expires_at": pd.Timestamp(expires),
            "actions": json.dumps([REDUCE, BLOCK_NEW, ALERT]),
            "limit_overrides": json.dumps({"max_abs_net_delta_shares": 125_000.0}),
        },
        {
            "event_id": "cpi-x",
            "symbol": "*",
            "event_type": "cpi",
            "event_time": expires,
            "expires_at": pd.Timestamp(expires),
            "actions": json.dumps([TIGHTEN_CAPS, ALERT]),
            "limit_overrides": json.dumps({"max_abs_net_dollar_delta": 1.25e7}),
        },
    ]


def test_tightened_caps_change_status_and_say_so() -> None:
    cfg = LimitsConfig(max_abs_net_delta_shares=250_000, max_abs_net_dollar_delta=2.5e7, warning_fraction=0.8)
    base = [
        make_result(cfg, "max_abs_net_delta_shares", 150_000.0, ("A",)),
        make_result(cfg, "max_abs_net_dollar_delta", 1.1e7),
        make_result(cfg, "max_positions", 2.0),
    ]
    assert [r.status for r in base if r is not None] == ["OK", "OK", "OK"]
    overrides = overrides_from_rows(_rows("2026-11-23T21:30:00Z"))
    assert {(o.limit_name, o.symbol, o.cap) for o in overrides} == {
        ("max_abs_net_delta_shares", "A", 125_000.0),
        ("max_abs_net_dollar_delta", None, 1.25e7),
    }
    out, notes = apply_limit_overrides(
        [r for r in base if r is not None], overrides, ["A", "B"], [150_000.0, -210_000.0], [0.0, 0.0]
    )
    delta, dollars, count = out
    # A: 150k against its halved cap 125k breaches; B: 210k against the file's 250k is only a warning
    assert (delta.status, delta.value, delta.threshold, delta.warn_threshold) == (
        "BREACH",
        150_000.0,
        125_000.0,
        100_000.0,
    )
    assert delta.utilization == pytest.approx(1.2) and delta.drivers == ("A", "B")
    assert (dollars.status, dollars.threshold, dollars.warn_threshold) == ("WARN", 1.25e7, 1.0e7)
    assert count == base[2]
    assert "earn-A" in notes["max_abs_net_delta_shares"] and "cpi-x" in notes["max_abs_net_dollar_delta"]
    book_wide = [LimitOverride("max_abs_net_delta_shares", 180_000.0, None, "fomc", "t")]
    out2, _ = apply_limit_overrides([base[0]], book_wide, ["A", "B"], [150_000.0, -210_000.0], [0.0, 0.0])
    assert (out2[0].status, out2[0].value, out2[0].threshold) == ("BREACH", 210_000.0, 180_000.0)


def test_blackouts_block_new_risk_until_the_event() -> None:
    rows = _rows("2026-11-23T21:30:00Z")
    rows[1]["actions"] = json.dumps([BLOCK_NEW, TIGHTEN_CAPS, ALERT])
    blackouts = blackouts_from_rows(rows)
    before, after = pd.Timestamp("2026-11-23T20:00:00Z"), pd.Timestamp("2026-11-23T21:30:00Z")
    reason = blackout_for_order(blackouts, "A", before)
    assert reason is not None and "earn-A" in reason and "cpi-x" in reason
    assert "cpi-x" in (blackout_for_order(blackouts, "ZZZ", before) or "")  # book-wide
    assert blackout_for_order(blackouts, "A", after) is None
    assert blackout_for_order(blackouts_from_rows(_rows("2026-11-23T21:30:00Z")), "ZZZ", before) is None


# ---- UVaR with gap scenarios -----------------------------------------------------------------------------


def test_gap_var_is_the_var_of_every_combined_scenario() -> None:
    book = Portfolio(symbols=("A",), spot=[100.0], symbol_index=[0], quantity=[1000.0], position_id=("A:stock",))
    r = np.linspace(-0.05, 0.05, 101)
    base = ScenarioSet(r[:, None])
    base_pnl = 1000 * 100 * r
    gaps = np.array([[-0.2], [-0.1], [0.0], [0.1]])
    res = gap_var(book, base, base_pnl, [("earn-A", gaps)], horizon_days=1, confidences=(0.95, 0.99), calendar_days=0.0)
    combined = np.sort((1000 * 100 * ((1 + r[:, None]) * (1 + gaps[:, 0][None, :]) - 1)).ravel())  # 404 scenarios
    for g, c in zip(res, (0.95, 0.99), strict=True):
        m = combined.size * (1 - c)
        expected = -combined[math.ceil(m) - 1]
        assert g.var == pytest.approx(expected)
        assert g.gap_var == pytest.approx(expected - (-np.sort(base_pnl)[math.ceil(base_pnl.size * (1 - c)) - 1]))
        assert g.n_scenarios == 404 and g.component_var.sum() == pytest.approx(g.var)
        assert g.component_es is not None and g.component_es.sum() == pytest.approx(g.expected_shortfall)
        assert g.gap_var > 0
    sampled = combined_gap_scenarios(base, [gaps, gaps], max_scenarios=500, seed=1)
    assert sampled.n_scenarios == 500
    assert len({tuple(row) for row in np.round(sampled.spot_shock_rel, 12)}) <= 101 * 16


def _american_book() -> Portfolio:
    """Two names, stocks and American and European calls and puts, short and long (a reduction and a buy-back)."""
    rng = np.random.default_rng(3)
    n = 24
    sym = np.arange(n) % 2
    opt = np.arange(n) >= 2
    spot = np.array([100.0, 60.0])
    return Portfolio(
        symbols=("A", "B"), spot=spot, symbol_index=sym, quantity=rng.choice([-40.0, -7.0, 5.0, 30.0], n),
        multiplier=np.where(opt, 100.0, 1.0), is_option=opt, is_call=rng.random(n) < 0.5,
        strike=np.where(opt, spot[sym] * np.exp(rng.normal(0.0, 0.1, n)), 1.0),
        time_years=np.where(opt, rng.choice([0.05, 0.2, 0.6], n), 0.0), implied_vol=np.where(opt, 0.35, 0.0),
        rate=0.04, dividend_yield=np.where(sym == 0, 0.03, 0.0), is_american=opt & (np.arange(n) % 3 != 0),
        position_id=tuple(f"p{i}" for i in range(n)),
    )  # fmt: skip


@pytest.mark.parametrize("american", ["eep_grid", "exact"])
def test_a_prepared_book_with_other_quantities_is_that_books_revaluation_bit_for_bit(american: str) -> None:
    """``scenario_engine.with_quantity``: one book prepared for a scenario set, revalued with other quantities (zeros,
    scaled, truncated), gives the bits of ``evaluate`` of the book with those quantities."""
    from dataclasses import replace

    from risk_pipeline.quant.scenario_engine import evaluate, evaluate_prepared, prepare, with_quantity

    book = _american_book()
    moves = np.column_stack([MOVES, 0.5 * MOVES[::-1]])
    sc = ScenarioSet(moves, vol_scale=np.where(moves < 0.0, 1.3, 0.9))
    prepared = prepare(book, 1.0, sc, american)  # type: ignore[arg-type]
    q0 = np.asarray(book.quantity)
    for q in (q0, np.where(q0 < 0.0, 0.0, q0), np.trunc(q0 * 0.37), np.zeros_like(q0)):
        other = replace(book, quantity=q)
        want = evaluate(other, sc, 1.0, american=american).pnl  # type: ignore[arg-type]
        assert evaluate_prepared(with_quantity(prepared, other), sc).pnl.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="positions"):
        with_quantity(prepared, Portfolio(symbols=("A",), spot=[100.0], symbol_index=[0], quantity=[1.0]))


@pytest.mark.parametrize("event", [_earnings("A"), _market()])
def test_decide_with_one_prepared_book_equals_a_revaluation_per_quantity(
    event: WindowEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``decide`` (the scenario set made and the book prepared once per event, each quantity revalued once) gives the
    decision of the code before, which revalued a new portfolio (``event_pnl``) for each quantity it tried: the
    flattening, the reduction, the losses before and after, bit for bit."""
    from dataclasses import replace

    import risk_pipeline.quant.gap_risk as gr
    from risk_pipeline.quant.smile_dynamics import earnings_vol_crush

    book = _american_book()
    crush = earnings_vol_crush(book, "A", MOVES, 1.0 / 365.0, event.event_id) if event.symbol else None
    betas = np.array([1.0, 1.4])
    policy = GapRiskPolicy(book="x", max_event_loss_pct_nav=0.002)
    args = (book, event, MOVES, betas)
    kwargs = {"nav": 1_000_000.0, "policy": policy, "caps": CAPS, "vol_dynamics": crush}
    new = decide(*args, **kwargs)  # type: ignore[arg-type]

    def per_quantity(portfolio, event, moves, betas, horizon_days, american, vol_dynamics):  # type: ignore[no-untyped-def]
        return lambda q: gr.event_pnl(
            replace(portfolio, quantity=q), event, moves, betas, horizon_days=horizon_days, american=american,
            vol_dynamics=vol_dynamics,
        )  # fmt: skip

    monkeypatch.setattr(gr, "_book_pnl_of", per_quantity)
    old = decide(*args, **kwargs)  # type: ignore[arg-type]
    assert REDUCE in new.actions and new.trades
    assert new.trades == old.trades and new.actions == old.actions and new.reason == old.reason
    for f in ("loss_before", "loss_after", "reduce_factor", "n_scenarios", "budget"):
        assert np.float64(getattr(new, f)).tobytes() == np.float64(getattr(old, f)).tobytes(), f
