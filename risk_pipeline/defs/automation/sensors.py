"""Intraday refresh on new option snapshots, and the end-of-day schedule on the exchange calendar."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd

from risk_pipeline.calendar import previous_session, sessions
from risk_pipeline.queries import missing_intraday_inputs
from risk_pipeline.resources import MarketDataResource, WarehouseResource
from risk_pipeline.sources.base import MarketDataSource

NEW_YORK = "America/New_York"
#: Tag of intraday refresh runs (the production run queue allows one at a time: deploy/dagster.yaml).
INTRADAY_TAG = "risk_pipeline/intraday"
INTRADAY_ASSETS = [
    "option_quotes",
    "implied_vols",
    "vol_surface",
    "vol_surface_grid",
    "position_greeks",
    "portfolio_greeks",
    "book_nav",
    "limit_status",
    "trading_state",
    "required_reductions",
    "audit_trail",
    "published_valuations",
    # a breach found intraday gets its hedge recommendation in the same run
    "volatility_index",
    "instrument_quotes",
    "hedge_recommendations",
    "hedge_stress_effects",  # written by the same step
]

intraday_refresh_job = dg.define_asset_job(
    "intraday_refresh_job",
    selection=dg.AssetSelection.assets(*INTRADAY_ASSETS),
    description="One option snapshot through implied vols, surfaces, Greeks, NAV, limits and trading state.",
)


def utc_now() -> pd.Timestamp:
    """The sensor's clock (tests replace it)."""
    return pd.Timestamp.now(tz="UTC")


@dataclass(frozen=True)
class SnapshotRequest:
    session: dt.date
    snapshot: pd.Timestamp


def new_snapshots(source: MarketDataSource, now: pd.Timestamp, cursor: str | None) -> list[SnapshotRequest]:
    """Snapshots of today's session taken by ``now`` and later than the cursor (ISO time), oldest first."""
    today = now.tz_convert(NEW_YORK).date()
    if not sessions(today, today):
        return []
    last = pd.Timestamp(cursor) if cursor else None
    out = []
    for t in source.snapshot_times(today):
        ts = pd.Timestamp(t).tz_convert("UTC")
        if ts <= now and (last is None or ts > last):
            out.append(SnapshotRequest(today, ts))
    return out


def snapshot_run_config(snapshot: pd.Timestamp, reference: pd.Timestamp) -> dict:
    iso = snapshot.isoformat()
    return {
        "ops": {
            "option_quotes": {"config": {"snapshot_time": iso, "reference_time": reference.isoformat()}},
            "implied_vols": {"config": {"snapshot_time": iso}},
            "vol_surfaces": {"config": {"snapshot_time": iso}},
            "position_greeks": {"config": {"snapshot_time": iso}},
            "instrument_quotes": {"config": {"snapshot_time": iso}},
        }
    }


@dg.sensor(
    job=intraday_refresh_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Launches intraday_refresh_job once per new option snapshot of today's session. The cursor holds "
        "the last snapshot launched, so a daemon restart neither repeats nor misses one; the run key "
        "(session and snapshot time) makes each launch idempotent. Skips, without moving the cursor, while "
        "the session's start-of-day inputs (positions, curve, dividends, previous close) are missing. Launches "
        "only snapshots still fresh (snapshot_max_age_minutes): switched on late or after an outage, it skips "
        "the older ones, naming them, instead of launching runs that would fail."
    ),
)
def option_snapshot_sensor(
    context: dg.SensorEvaluationContext, market_data: MarketDataResource, warehouse: WarehouseResource
) -> dg.SensorResult:
    now = utc_now()
    found = new_snapshots(market_data.get_source(), now, context.cursor)
    if not found:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new option snapshot since {context.cursor or 'start'}"))
    session = found[0].session
    missing = missing_intraday_inputs(warehouse.get(), session, previous_session(session))
    if missing:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                f"{len(found)} new snapshot(s) of {session} not launched: missing {', '.join(missing)}; "
                "run start_of_day_job for the session (the previous close comes from its end_of_day_job)"
            )
        )
    max_age = pd.Timedelta(minutes=market_data.snapshot_max_age_minutes)
    stale = [r for r in found if now - r.snapshot > max_age]
    fresh = [r for r in found if now - r.snapshot <= max_age]
    stale_note = (
        f"{len(stale)} snapshot(s) older than {market_data.snapshot_max_age_minutes:g} min not launched "
        f"(they would fail snapshot_fresh): {', '.join(r.snapshot.isoformat() for r in stale)}"
    )
    if not fresh:
        return dg.SensorResult(skip_reason=dg.SkipReason(stale_note), cursor=found[-1].snapshot.isoformat())
    if stale:
        context.log.info(stale_note)
    requests = [
        dg.RunRequest(
            run_key=f"snapshot:{r.snapshot.isoformat()}",
            partition_key=r.session.isoformat(),
            run_config=snapshot_run_config(r.snapshot, now),
            tags={"risk_pipeline/snapshot": r.snapshot.isoformat(), INTRADAY_TAG: "refresh"},
        )
        for r in fresh
    ]
    return dg.SensorResult(run_requests=requests, cursor=found[-1].snapshot.isoformat())


def session_schedule(name: str, job_name: str, cron: str, run_key_prefix: str, description: str) -> Any:
    """A schedule in New York time that launches ``job_name`` for the day's partition on XNYS sessions only."""

    @dg.schedule(
        name=name,
        job_name=job_name,
        cron_schedule=cron,
        execution_timezone=NEW_YORK,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=description,
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        day = context.scheduled_execution_time.astimezone(ZoneInfo(NEW_YORK)).date()
        if not sessions(day, day):
            return dg.SkipReason(f"{day} is not an XNYS session")
        return dg.RunRequest(run_key=f"{run_key_prefix}:{day.isoformat()}", partition_key=day.isoformat())

    return _schedule


start_of_day_schedule = session_schedule(
    "start_of_day_schedule",
    "start_of_day_job",
    "0 8 * * 1-5",
    "sod",
    "Start of day at 08:00 New York on every XNYS session (holidays skipped), before the open.",
)
end_of_day_schedule = session_schedule(
    "end_of_day_schedule",
    "end_of_day_job",
    "15 17 * * 1-5",
    "eod",
    "End of day at 17:15 New York on every XNYS session (holidays skipped).",
)
