"""The hourly hedge review in regular XNYS hours (holidays and early closes from the exchange calendar)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd

from risk_pipeline.calendar import session_close_utc, session_open_utc, sessions
from risk_pipeline.defs.hedging.assets import REVIEW_TAG

NEW_YORK = "America/New_York"
#: Top of every hour from 10:00 to 16:00 New York on weekdays; the calendar decides which are in session.
REVIEW_CRON = "0 10-16 * * 1-5"

hedge_review_job = dg.define_asset_job(
    "hedge_review_job",
    selection=dg.AssetSelection.assets("volatility_index", "hedge_recommendations", "hedge_stress_effects"),
    description=(
        "Hedge review at the session's latest valuation: the volatility index and the hedge recommendations "
        "(the run's review tag adds the scheduled-review trigger)."
    ),
)


def in_regular_hours(tick: pd.Timestamp) -> bool:
    """True when ``tick`` falls after the open and at or before the close of an XNYS session (early closes included)."""
    day = tick.tz_convert(NEW_YORK).date()
    if not sessions(day, day):
        return False
    return session_open_utc(day) < tick.tz_convert("UTC") <= session_close_utc(day)


def review_ticks(day: dt.date) -> list[pd.Timestamp]:
    """The review times of a day (UTC): every top of the hour in regular hours; none on a holiday."""
    hours = [pd.Timestamp(dt.datetime.combine(day, dt.time(h)), tz=NEW_YORK) for h in range(10, 17)]
    return [t.tz_convert("UTC") for t in hours if in_regular_hours(t)]


@dg.schedule(
    name="hedge_review_schedule",
    job=hedge_review_job,
    cron_schedule=REVIEW_CRON,
    execution_timezone=NEW_YORK,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "Hourly hedge review in regular XNYS hours: 10:00 to 16:00 New York (to 13:00 on early-close days), "
        "no run on holidays; each tick's run key makes it idempotent."
    ),
)
def hedge_review_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    tick = pd.Timestamp(context.scheduled_execution_time)
    if tick.tzinfo is None:
        tick = tick.tz_localize(ZoneInfo(NEW_YORK))
    if not in_regular_hours(tick):
        return dg.SkipReason(f"{tick.tz_convert(NEW_YORK).isoformat()} is outside regular XNYS hours")
    day = tick.tz_convert(NEW_YORK).date()
    return dg.RunRequest(
        run_key=f"hedge_review:{tick.tz_convert('UTC').isoformat()}",
        partition_key=day.isoformat(),
        tags={REVIEW_TAG: "scheduled"},
    )
