"""Rules not exercised by the folder-source pipeline tests, run directly on frames."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from risk_pipeline.quality import ValidationContext, validate

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
