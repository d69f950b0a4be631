"""Exchange sessions (XNYS via exchange_calendars) and the one daily partitions definition."""

from __future__ import annotations

import datetime as dt
import functools
import os
import warnings
from zoneinfo import ZoneInfo

import pandas as pd

CALENDAR = "XNYS"
#: Last session the partitions and the synthetic history cover.
CALENDAR_END = dt.date(2027, 12, 31)
DEFAULT_PARTITION_START = dt.date(2023, 1, 3)


@functools.cache
def _calendar(start: dt.date, end: dt.date) -> object:
    import exchange_calendars as xcals

    with warnings.catch_warnings():  # exchange_calendars' own use of Series.values, deprecated by pandas
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        return xcals.get_calendar(CALENDAR, start=start.isoformat(), end=end.isoformat())


@functools.cache
def sessions(start: dt.date, end: dt.date) -> tuple[dt.date, ...]:
    """XNYS sessions in [start, end]."""
    cal = _calendar(dt.date(1990, 1, 2), CALENDAR_END)
    idx = cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))  # type: ignore[attr-defined]
    return tuple(d.date() for d in idx)


def session_close_utc(session: dt.date) -> pd.Timestamp:
    """The session's close (early closes included), UTC."""
    cal = _calendar(dt.date(1990, 1, 2), CALENDAR_END)
    return cal.session_close(pd.Timestamp(session)).tz_convert("UTC")  # type: ignore[attr-defined]


def session_closes_utc(days: tuple[dt.date, ...]) -> pd.DatetimeIndex:
    """``session_close_utc`` of many sessions at once (the calendar's column of closes: the same values, without
    a calendar lookup per session); a day that is not a session raises KeyError."""
    cal = _calendar(dt.date(1990, 1, 2), CALENDAR_END)
    closes = pd.DatetimeIndex(cal.closes.loc[pd.DatetimeIndex([pd.Timestamp(d) for d in days])])  # type: ignore[attr-defined]
    return closes.tz_localize("UTC") if closes.tz is None else closes.tz_convert("UTC")


def session_open_utc(session: dt.date) -> pd.Timestamp:
    """The session's open, UTC."""
    cal = _calendar(dt.date(1990, 1, 2), CALENDAR_END)
    return cal.session_open(pd.Timestamp(session)).tz_convert("UTC")  # type: ignore[attr-defined]


def expiry_close_utc(expiries: pd.Series) -> pd.Series:
    """Each expiry's session close (early closes included); 16:00 New York when not a session."""
    closes = {}
    for d in expiries.unique():
        try:
            closes[d] = session_close_utc(d)
        except Exception:  # not a session of the calendar's range
            closes[d] = pd.Timestamp(dt.datetime.combine(d, dt.time(16)), tz="America/New_York").tz_convert("UTC")
    return expiries.map(closes)


def previous_session(session: dt.date, n: int = 1) -> dt.date:
    """The session ``n`` sessions before ``session``."""
    days = sessions(session - dt.timedelta(days=7 * n + 10), session - dt.timedelta(days=1))
    return days[-n]


def latest_session(on_or_before: dt.date) -> dt.date:
    """The last session on or before a date."""
    return sessions(on_or_before - dt.timedelta(days=10), on_or_before)[-1]


def latest_closed_session(now: pd.Timestamp) -> dt.date:
    """The last session whose close (early closes included) is at or before ``now``."""
    today = now.tz_convert("America/New_York").date()
    day = latest_session(today)
    return day if session_close_utc(day) <= now else previous_session(day)


def partition_start() -> dt.date:
    """First partition: ``RISK_PIPELINE_PARTITION_START`` (ISO date) or 2023-01-03."""
    value = os.environ.get("RISK_PIPELINE_PARTITION_START")
    return dt.date.fromisoformat(value) if value else DEFAULT_PARTITION_START


@functools.cache
def trading_day_partitions(start: dt.date | None = None) -> object:
    """Daily partitions on XNYS sessions: weekdays minus exchange holidays, keys ``YYYY-MM-DD``."""
    import dagster as dg

    first = start or partition_start()
    weekdays = pd.bdate_range(first, CALENDAR_END)
    open_days = set(sessions(first, CALENDAR_END))
    holidays = [
        dt.datetime(d.year, d.month, d.day, tzinfo=ZoneInfo("America/New_York"))
        for d in weekdays
        if d.date() not in open_days
    ]
    return dg.TimeWindowPartitionsDefinition(
        start=first.strftime("%Y-%m-%d"),
        end=(CALENDAR_END + dt.timedelta(days=1)).strftime("%Y-%m-%d"),
        fmt="%Y-%m-%d",
        cron_schedule="0 0 * * 1-5",
        timezone="America/New_York",
        end_offset=1,
        exclusions=holidays,
    )
