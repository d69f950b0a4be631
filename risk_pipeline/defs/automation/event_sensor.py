"""The event-calendar sensor: launches gap_risk_job when an event enters its lead window on the exchange calendar."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from risk_pipeline.calendar import latest_session
from risk_pipeline.defs.automation.jobs import gap_risk_job
from risk_pipeline.event_windows import load_gap_risk_config, upcoming
from risk_pipeline.queries import latest_as_of
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Warehouse

NEW_YORK = "America/New_York"


def utc_now() -> pd.Timestamp:
    """The sensor's clock (tests replace it)."""
    return pd.Timestamp.now(tz="UTC")


@dataclass(frozen=True)
class Launch:
    """One (event, book) to evaluate in ``session``; ``key`` identifies the event at its current time."""

    session: dt.date
    event_id: str
    event_time: pd.Timestamp
    event_type: str
    book: str
    trading_days_until: int

    @property
    def key(self) -> str:
        return f"{self.event_id}@{self.event_time.isoformat()}|{self.book}"

    @property
    def run_key(self) -> str:
        return f"gap:{self.session.isoformat()}:{self.event_id}@{self.event_time.isoformat()}:{self.book}"


def parse_cursor(cursor: str | None) -> tuple[dt.date | None, set[str]]:
    """(session, launched keys of that session) from the cursor (JSON)."""
    if not cursor:
        return None, set()
    state = json.loads(cursor)
    return dt.date.fromisoformat(state["session"]), set(state.get("launched", []))


def due_launches(wh: Warehouse, now: pd.Timestamp, gap_risk_file: str | None = None) -> tuple[list[Launch], str]:
    """Every (event, book) inside its lead window at ``now`` with the book exposed, and a note when none.

    The session is the latest XNYS session on or before today in New York; an earnings event concerns the
    books holding the name at the session's latest valuation, a market-wide event every book. Nothing is
    due before the session has a valuation (the run needs one): the note says so.
    """
    session = latest_session(now.tz_convert(NEW_YORK).date())
    if not wh.table_exists("event_calendar") or wh.row_count("event_calendar") == 0:
        return [], "no event_calendar in the warehouse"
    config = load_gap_risk_config(gap_risk_file)
    events = upcoming(wh.read("event_calendar"), session, now, config.leads)
    events = events[events["in_window"]]
    if events.empty:
        return [], f"no event inside its lead window at {now.isoformat()} (session {session})"
    as_of = latest_as_of(wh, "position_greeks", session)
    if as_of is None:
        ids = ", ".join(events["event_id"].head(5))
        return [], f"events {ids} are inside their window but {session} has no valuation yet (position_greeks)"
    held = wh.read("position_greeks", {"as_of": as_of}, columns=["book", "symbol", "quantity"])
    books = sorted(held["book"].unique())
    holders = held[held["quantity"] != 0].groupby("symbol")["book"].agg(lambda b: sorted(set(b))).to_dict()
    out = []
    for e in events.itertuples():
        market = e.symbol is None or pd.isna(e.symbol)
        for book in books if market else holders.get(e.symbol, []):
            out.append(Launch(session, e.event_id, e.event_time, e.event_type, book, int(e.trading_days_until)))
    return out, "" if out else f"events inside their window concern no book held at {as_of.isoformat()}"


@dg.sensor(
    job=gap_risk_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Evaluates event_calendar against the XNYS calendar; when an event enters its lead window (data/gap_risk.yaml: "
        "earnings 2 sessions, FOMC / CPI / others 1) it launches gap_risk_job for each exposed book (the name's "
        "holders for earnings, every book for market-wide events). Run key per (session, event at its time, "
        "book); the cursor keeps the session's launches, so a daemon restart neither repeats nor misses one, and a "
        "new or moved event (re-materialized calendar) is launched on the next tick."
    ),
)
def event_calendar_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    now = utc_now()
    due, note = due_launches(warehouse.get(), now)
    session, launched = parse_cursor(context.cursor)
    if due and due[0].session != session:
        session, launched = due[0].session, set()
    new = [d for d in due if d.key not in launched]
    if not new:
        reason = note or f"{len(due)} event/book pair(s) inside their window already launched for {session}"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason))
    requests = [
        dg.RunRequest(
            run_key=d.run_key,
            partition_key=d.session.isoformat(),
            run_config={"ops": {"gap_risk_actions": {"config": {"books": [d.book]}}}},
            tags={
                "risk_pipeline/event": d.event_id,
                "risk_pipeline/event_type": d.event_type,
                "risk_pipeline/book": d.book,
                "risk_pipeline/trading_days_until": str(d.trading_days_until),
            },
        )
        for d in new
    ]
    cursor = json.dumps({"session": new[0].session.isoformat(), "launched": sorted(launched | {d.key for d in new})})
    return dg.SensorResult(run_requests=requests, cursor=cursor)
