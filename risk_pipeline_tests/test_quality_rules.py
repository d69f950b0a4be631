"""Rules not exercised by the folder-source pipeline tests, run directly on frames."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd

from risk_pipeline.quality import CloseReference, PriceReference, QualitySettings, ValidationContext, validate

DAY = dt.date(2026, 11, 20)
CTX = ValidationContext("2026-11-20", (DAY,))


def _failed(report: object) -> dict[str, tuple[int, ...]]:
    return {r.rule: r.failing_positions for r in report.failed}  # type: ignore[attr-defined]


def positions(**overrides: list) -> pd.DataFrame:
    base = {
        "as_of_date": [DAY, DAY],
        "book": ["b", "b"],
        "position_id": ["p1", "p2"],
        "instrument_type": ["stock", "option"],
        "symbol": ["AAA", "AAA"],
        "expiry": [None, dt.date(2026, 12, 18)],
        "strike": [None, 100.0],
        "option_type": [None, "C"],
        "exercise_style": [None, "american"],
        "quantity": [100.0, -5.0],
        "multiplier": [1.0, 100.0],
        "cost_basis": [90.0, 2.0],
        "strategy": ["s", "s"],
        "sector": ["x", "x"],
        "source": ["t", "t"],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_clean_positions_pass() -> None:
    assert validate("positions", positions(), CTX).passed


def test_position_quantity_must_be_finite_and_keys_unique() -> None:
    report = validate("positions", positions(quantity=[np.inf, -5.0], position_id=["p1", "p1"]), CTX)
    failed = _failed(report)
    assert failed["quantity_finite"] == (0,)
    assert failed["unique_keys"] == (0, 1)


def test_option_position_needs_its_terms() -> None:
    report = validate("positions", positions(option_type=[None, "X"]), CTX)
    assert _failed(report) == {"option_terms_present": (1,)}


def test_rows_of_another_session_fail_date_in_partition() -> None:
    report = validate("positions", positions(as_of_date=[DAY, dt.date(2026, 11, 19)]), CTX)
    assert _failed(report) == {"date_in_partition": (1,)}


def test_event_times_must_be_given_in_utc() -> None:
    events = pd.DataFrame(
        {
            "event_id": ["a", "b", "c"],
            "event_type": ["fomc", "cpi", "earnings"],
            "symbol": [None, None, "AAA"],
            "event_time": ["2026-12-09T19:00:00Z", "2026-12-10T08:30:00-05:00", "2026-13-45T00:00:00Z"],
            "source": ["t"] * 3,
            "notes": [None] * 3,
        }
    )
    report = validate("event_calendar", events, ValidationContext("2026-11-20"))
    failed = _failed(report)
    assert failed["event_time_utc"] == (1, 2)
    assert failed["types"] == (2,)


def test_rate_outside_plausible_range_fails() -> None:
    curve = pd.DataFrame(
        {"as_of_date": [DAY, DAY], "tenor_days": [30, 365], "zero_rate": [0.04, 4.0], "source": ["t", "t"]}
    )
    assert _failed(validate("rates_curve", curve, CTX)) == {"rate_plausible": (1,)}


def test_flagged_event_day_allows_a_large_move() -> None:
    prices = pd.DataFrame(
        {
            "as_of_date": [DAY, DAY],
            "symbol": ["AAA", "BBB"],
            "open": [150.0, 150.0],
            "high": [151.0, 151.0],
            "low": [149.0, 149.0],
            "close": [150.0, 150.0],
            "volume": [1.0, 1.0],
            "event_flag": ["earnings", None],
            "source": ["t", "t"],
        }
    )
    ctx = ValidationContext("2026-11-20", (DAY,), previous_close={"AAA": 100.0, "BBB": 100.0})
    # ln(1.5) = 0.405 > 0.40: only the unflagged name fails
    assert _failed(validate("market_prices", prices, ctx)) == {"daily_return_plausible": (1,)}


# ---------------------------------------------------------------------- issue 17: classes of defects
def _prices(days: list[dt.date], closes: list[float], symbol: str = "AAA") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "as_of_date": days,
            "symbol": [symbol] * len(days),
            "open": closes,
            "high": [c + 1 for c in closes],
            "low": [c - 1 for c in closes],
            "close": closes,
            "volume": [1000.0] * len(days),
            "event_flag": [None] * len(days),
            "source": ["t"] * len(days),
        }
    )


def test_integers_must_be_whole_and_within_64_bits() -> None:
    curve = pd.DataFrame(
        {
            "as_of_date": [DAY] * 4,
            "tenor_days": ["30", "91.5", "99999999999999999999", "1e3"],
            "zero_rate": [0.04] * 4,
            "source": ["t"] * 4,
        }
    )
    report = validate("rates_curve", curve, CTX)
    assert _failed(report) == {"types": (1, 2)}
    types = next(r for r in report.results if r.rule == "types")
    assert types.row_reasons[1] == "tenor_days '91.5' is not a whole number"
    assert types.row_reasons[2] == "tenor_days '99999999999999999999' is outside the 64-bit integer range"
    assert report.typed["tenor_days"].tolist()[::3] == [30, 1000]


def test_non_finite_numbers_fail_even_in_nullable_columns() -> None:
    report = validate("positions", positions(cost_basis=[np.inf, "-inf"]), CTX)
    assert _failed(report) == {"types": (0, 1)}


def test_identifier_rule() -> None:
    good = ["BRK.B", "^SPX", "ESZ6", "BF-B"]
    bad = ["aaa", "AA\u202eA", "A B", "X" * 25, ".AAA"]
    prices = pd.concat([_prices([DAY], [100.0], s) for s in good + bad], ignore_index=True)
    report = validate("market_prices", prices, CTX)
    assert _failed(report) == {"identifiers_valid": tuple(range(len(good), len(good) + len(bad)))}
    ok = positions(book=["core_equity", "core_equity"], position_id=["core_equity:AAA:stock", "x:AAA:2026-12-18:310:C"])
    assert validate("positions", ok, CTX).passed
    notes = positions(sector=["Health Care", "tech\u200b"])  # free text: spaces are fine, format characters not
    assert _failed(validate("positions", notes, CTX)) == {"identifiers_valid": (1,)}


def test_a_column_outside_the_contract_fails_schema() -> None:
    report = validate("positions", positions().assign(sectr=["x", "x"]), CTX)
    assert _failed(report) == {"schema": (0, 1)}
    assert "unknown columns ['sectr']" in report.message()


def test_row_count_is_per_session_and_the_policy_decides_on_missing_sessions() -> None:
    days = (dt.date(2026, 11, 18), dt.date(2026, 11, 19), DAY)
    prices = _prices([days[0], DAY], [100.0, 101.0])
    ctx = ValidationContext("2026-11-18..2026-11-20", days)
    failing = validate("market_prices", prices, ctx)
    assert _failed(failing) == {"row_count_in_range": ()}
    assert [e.reason for e in failing.failed[0].entries] == ["session 2026-11-19: 0 rows"]
    kept = validate("market_prices", prices, ctx, QualitySettings(missing_session_policy="keep"))
    assert kept.passed and kept.missing_sessions == (dt.date(2026, 11, 19),)
    nothing = validate("market_prices", prices.iloc[:0], ctx, QualitySettings(missing_session_policy="keep"))
    assert _failed(nothing) == {"row_count_in_range": ()}  # a run with no input at all always fails


def test_repeated_bars_within_the_range_and_against_the_stored_session() -> None:
    before = dt.date(2026, 11, 18)
    prices = _prices([dt.date(2026, 11, 19), DAY], [100.0, 100.0])
    ctx = ValidationContext("2026-11-19..2026-11-20", (dt.date(2026, 11, 19), DAY))
    assert _failed(validate("market_prices", prices, ctx)) == {"bars_not_repeated": (1,)}
    stored = _prices([before], [100.0])
    ctx = ValidationContext("2026-11-19..2026-11-20", ctx.sessions, previous_bars=stored)
    assert _failed(validate("market_prices", prices, ctx)) == {"bars_not_repeated": (0, 1)}
    moved = prices.assign(volume=[1000.0, 1001.0])  # same prices, another volume: a real (quiet) day
    assert _failed(validate("market_prices", moved, ctx)) == {"bars_not_repeated": (0,)}


def _chain(as_of: str, underlying_prices: list[float]) -> pd.DataFrame:
    n = len(underlying_prices)
    return pd.DataFrame(
        {
            "as_of": [as_of] * n,
            "as_of_date": [DAY] * n,
            "underlying": ["AAA"] * n,
            "expiry": [dt.date(2026, 12, 18)] * n,
            "strike": [90.0 + 5 * i for i in range(n)],
            "option_type": ["C"] * n,
            "bid": [1.0] * n,
            "ask": [1.1] * n,
            "last": [None] * n,
            "volume": [1.0] * n,
            "open_interest": [1.0] * n,
            "underlying_price": underlying_prices,
            "exercise_style": ["american"] * n,
            "multiplier": [100.0] * n,
            "source": ["t"] * n,
        }
    )


def test_chain_underlying_against_the_close_tight_at_end_of_day_wide_intraday() -> None:
    close_time = pd.Timestamp("2026-11-20T21:00:00Z")
    same = {DAY: CloseReference(DAY, {"AAA": 100.0}, True, close_time)}
    previous = {DAY: CloseReference(dt.date(2026, 11, 19), {"AAA": 100.0}, False)}
    prices = [100.0 * math.exp(0.049), 100.0 * math.exp(-0.051), 100.0 * math.exp(0.39), 100.0 * math.exp(0.41)]

    def failing(as_of: str, refs: dict) -> tuple[int, ...]:
        ctx = ValidationContext("2026-11-20", (DAY,), reference_time=pd.Timestamp(as_of), reference_closes=refs)
        return _failed(validate("option_quotes", _chain(as_of, prices), ctx)).get("underlying_matches_close", ())

    assert failing("2026-11-20T20:45:00Z", same) == (1, 2, 3)  # last hour: 0.05 against the day's close
    assert failing("2026-11-20T17:00:00Z", same) == (3,)  # earlier: a day's move (0.40)
    assert failing("2026-11-20T20:45:00Z", previous) == (3,)  # the previous close: a day's move
    assert failing("2026-11-20T20:45:00Z", {DAY: None}) == ()  # nothing stored to compare with


def test_held_symbols_need_a_bar_and_positions_fail_closed_without_prices() -> None:
    ref = {DAY: PriceReference(DAY, frozenset({"BBB"}))}
    report = validate("positions", positions(), ValidationContext("2026-11-20", (DAY,), priced_symbols=ref))
    assert _failed(report) == {"symbols_priced": (0, 1)}
    assert "AAA has no bar in market_prices of 2026-11-20" in report.message()
    blind = validate("positions", positions(), ValidationContext("2026-11-20", (DAY,), priced_symbols={DAY: None}))
    result = blind.failed[0]
    assert result.rule == "symbols_priced" and not result.failing_positions and len(result.entries) == 1


def _events(ids: list[str], times: list[str], notes: list[str | None] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": ids,
            "event_type": ["earnings"] * len(ids),
            "symbol": ["AAA"] * len(ids),
            "event_time": times,
            "source": ["t"] * len(ids),
            "notes": notes or [None] * len(ids),
        }
    )


def test_live_events_leave_the_calendar_only_when_cancelled() -> None:
    stored = _events(["past", "live", "gone"], ["2026-10-01T20:00:00Z", "2027-01-28T21:00:00Z", "2027-02-01T21:00:00Z"])
    stored["event_time"] = pd.to_datetime(stored["event_time"], utc=True)
    ctx = ValidationContext("2026-11-20", (DAY,), stored_events=stored, now=pd.Timestamp("2026-12-04T12:00:00Z"))
    report = validate("event_calendar", _events(["live"], ["2027-01-28T21:00:00Z"]), ctx)
    assert _failed(report) == {"future_events_kept": ()}
    entry = report.failed[0].entries[0]
    assert entry.record["missing_events"] == ["gone"]  # "past" is before the session: it may go
    cancelled = _events(["live", "gone"], ["2027-01-28T21:00:00Z", "2027-02-01T21:00:00Z"], [None, "cancelled: moved"])
    assert validate("event_calendar", cancelled, ctx).passed
    stored.loc[2, "notes"] = "cancelled: moved"
    after = ValidationContext("2026-11-20", (DAY,), stored_events=stored, now=ctx.now)
    assert validate("event_calendar", _events(["live"], ["2027-01-28T21:00:00Z"]), after).passed


def test_quarantine_keeps_the_same_row_and_rule_of_two_files() -> None:
    prices = _prices([dt.date(2026, 11, 19), DAY], [-1.0, -2.0])
    prices["source_file"] = ["market_prices/2026-11-19.csv", "market_prices/2026-11-20.csv"]
    prices["source_row"] = [1, 1]
    report = validate("market_prices", prices, ValidationContext("r", (dt.date(2026, 11, 19), DAY)))
    q = report.quarantine_frame("market_prices")
    row = q[q["check_name"] == "prices_positive"]
    assert len(row) == 1
    assert row["source_file"].iloc[0] == "market_prices/2026-11-19.csv, market_prices/2026-11-20.csv"
    assert [r["source_file"] for r in json.loads(row["row"].iloc[0])] == list(prices["source_file"])


_MIXED = [
    dt.date(2026, 11, 20),
    "2026-11-23",
    None,
    dt.date(2026, 11, 20),
    "not a date",
    pd.Timestamp("2026-11-24 15:45", tz="America/New_York"),
    float("nan"),
    dt.datetime(2026, 11, 25, 9, 30),
    "2026-11-23",
    "  ",
]


def test_dates_and_timestamps_converted_once_per_distinct_value_equal_the_row_by_row_conversion() -> None:
    from risk_pipeline.quality import _parse_one, _per_distinct, _to_date, _to_datetime

    s = pd.Series(_MIXED * 3, dtype=object, index=np.arange(30) * 2)  # a non-default index is kept
    for utc in (False, True):
        # reference: every row parsed on its own, then one pandas conversion of the column
        expected = pd.to_datetime(s.map(lambda v, u=utc: _parse_one(v, u)).astype(object), utc=utc)
        pd.testing.assert_series_equal(_to_datetime(s, utc=utc), expected, check_exact=True)
    naive = pd.to_datetime(s.map(lambda v: _parse_one(v, False)).astype(object))
    dates = pd.Series(naive.dt.date.astype(object).where(naive.notna(), None), index=s.index)
    got = _to_date(s)
    pd.testing.assert_series_equal(got, dates, check_exact=True)
    assert got.iloc[0] == dt.date(2026, 11, 20) and got.iloc[2] is None and got.iloc[4] is None
    days = pd.Series([dt.date(2026, 11, 20), None, dt.date(2026, 11, 23), dt.date(2026, 11, 20)], dtype=object)
    pd.testing.assert_series_equal(_per_distinct(days, pd.to_datetime), pd.to_datetime(days), check_exact=True)


def test_suite_on_a_frame_with_columns_no_rule_reads_gives_the_same_failures() -> None:
    from risk_pipeline.quality import _run_gx, table_rules

    rules = table_rules("dividend_yields", QualitySettings())
    frame = pd.DataFrame(
        {
            "dividend_yield": [0.01, -0.02, 0.30, 0.0],
            "_in_partition": [True, True, False, True],
            "unrelated": ["x", None, "y", "z"],
            "other": [1.0, np.nan, np.inf, 2.0],
        }
    )
    failures = _run_gx("dividend_yields", frame, rules)
    # yield_plausible is 0 <= dividend_yield <= 0.25; date_in_partition needs _in_partition True
    assert failures["yield_plausible"][0] == {1, 2}
    assert failures["date_in_partition"][0] == {2}
    assert _run_gx("dividend_yields", frame[["dividend_yield", "_in_partition"]], rules) == failures


def test_the_check_that_skips_gx_gives_the_failures_gx_gives() -> None:
    """``_run_gx`` hands a frame to GX only when an expectation may fail (``Expectation.certainly_passes``); on
    frames in and out of every bound, with missing values and with each dtype the rules meet, its outcome is that
    of GX run on the whole suite (the oracle), and a clean frame is passed without GX."""
    from risk_pipeline.quality import Rule, _a_ge_b, _between, _gx_failures, _in_set, _non_negative, _positive, _run_gx

    rules = [
        Rule("positive", "x > 0", _positive("x")),
        Rule("non_negative", "n >= 0", _non_negative("n")),
        Rule("in_range", "-0.05 <= y <= 0.3", _between("y", -0.05, 0.30)),
        Rule("below", "z <= 1", _between("z", None, 1.0)),
        Rule("flag", "flag is True", _in_set("flag", (True,))),
        Rule("kind", "kind in {C, P}", _in_set("kind", ("C", "P"))),
        Rule("ordered", "a >= b", _a_ge_b(("a", "b"))),
    ]
    base = pd.DataFrame(
        {
            "x": [0.5, 1e-300, 3.0, 7.0],
            "n": pd.array([0, 5, 2**40, 1], dtype="Int64"),
            "y": [-0.05, 0.0, 0.3, 0.1],
            "z": [1.0, -np.inf, 0.2, -3.0],
            "flag": [True, True, True, True],
            "kind": ["C", "P", "P", "C"],
            "a": [2.0, 1.0, 5.0, 3.0],
            "b": [1.0, 1.0, 4.0, -2.0],
            "unread": ["u", None, "w", "v"],
        }
    )
    variants: dict[str, pd.DataFrame] = {"clean": base}

    def variant(label: str, column: str, values: object) -> None:
        frame = base.copy()
        frame[column] = values
        variants[label] = frame

    variant("x at the strict bound", "x", [0.5, 0.0, 3.0, 7.0])
    variant("x missing", "x", [0.5, np.nan, 3.0, 7.0])
    variant("x as text", "x", ["0.5", "1", "3", "7"])
    variant("n negative", "n", pd.array([0, -1, 2, 1], dtype="Int64"))
    variant("n missing", "n", pd.array([0, None, 2, 1], dtype="Int64"))
    variant("n int64", "n", np.array([0, 5, 2, 1], dtype=np.int64))
    variant("n float", "n", [0.0, 5.0, 2.0, -0.5])
    variant("n beyond 2**53", "n", pd.array([0, 2**60, 2, 1], dtype="Int64"))
    variant("y above", "y", [-0.05, 0.0, 0.3000001, 0.1])
    variant("y below", "y", [-0.06, 0.0, 0.3, 0.1])
    variant("y infinite", "y", [np.inf, 0.0, 0.3, 0.1])
    variant("z above", "z", [1.0, 1.5, 0.2, -3.0])
    variant("z object", "z", pd.Series([1.0, 0.5, 0.2, -3.0], dtype=object))
    variant("flag false", "flag", [True, False, True, True])
    variant("flag missing", "flag", [True, None, True, True])
    variant("flag as 1", "flag", [1, 1, 1, 1])
    variant("kind stray", "kind", ["C", "X", "P", "C"])
    variant("kind missing", "kind", ["C", None, "P", "C"])
    variant("b above a", "b", [1.0, 1.5, 4.0, -2.0])
    variant("b missing", "b", [1.0, np.nan, 4.0, -2.0])
    variants["a missing column"] = base.drop(columns=["a"])
    for label, frame in variants.items():
        expectations = [(r.name, e) for r in rules for e in r.expectations()]
        oracle = _gx_failures("unit_rules", frame, expectations, {r.name: (set(), []) for r in rules})
        assert _run_gx("unit_rules", frame, rules) == oracle, label
    clean = [e.certainly_passes(base) for r in rules for e in r.expectations()]
    assert all(clean)
    assert not any(e.certainly_passes(variants["x at the strict bound"]) for e in rules[0].expectations())


def test_value_counts_counts_each_present_value_as_a_counter_over_the_rows() -> None:
    """The per-session row counts: a Counter over every row (missing values left out) is the oracle."""
    from collections import Counter

    from risk_pipeline.quality import _value_counts

    d1, d2 = dt.date(2026, 12, 3), dt.date(2026, 12, 2)
    columns = [
        pd.Series([d1, d2, None, d1, np.nan, d1], dtype=object),
        pd.Series([], dtype=object),
        pd.Series([None, None], dtype=object),
        pd.Series([d2, d1, d2], dtype="category"),
        pd.Series(pd.to_datetime(["2026-12-03", None, "2026-12-03"])),
    ]
    for column in columns:
        oracle = Counter(v for v in column if not pd.isna(v))
        got = _value_counts(column)
        assert got == dict(oracle) and all(type(k) is type(o) for k, o in zip(got, oracle, strict=True))
