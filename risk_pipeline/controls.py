"""Manual trading controls: halt, resume and emergency stop, without Dagster.

Every control is one row of the append-only table ``manual_controls`` (event_id, book, action, reason,
actor, created_at_utc, expires_at_utc) plus one ``audit_trail`` row (decision_type ``manual_control``)
saying who ordered what and why. Nothing is ever updated or deleted: the controls in force at a time are
replayed from the events up to that time (``active_halts``):

- ``halt`` of book B: B is halted from ``created_at_utc`` until a later ``resume`` of B or of ``'*'``,
  or until ``expires_at_utc`` when the halt was given a duration (``hours``);
- ``emergency_stop``: a halt of ``'*'`` (every book) until ``resume`` of ``'*'``;
- ``resume`` of B lifts B's own halt; ``resume`` of ``'*'`` lifts every halt. A resume of one book does
  not lift an emergency stop.

The pre-trade check (``pretrade_service``) rejects orders of a halted book at once with the halt's reason;
the trading-state run of a valuation honors the halts in force at the valuation's time (so a re-run of a
valuation gives the same state, and a halt ordered after it applies from the next valuation on).
Timestamps in the returned dictionaries are ISO 8601 strings in UTC.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd

from risk_pipeline.errors import RiskDataError
from risk_pipeline.queries import audit_id
from risk_pipeline.warehouse import Warehouse

TABLE = "manual_controls"
HALT = "halt"
RESUME = "resume"
EMERGENCY_STOP = "emergency_stop"
ACTIONS: tuple[str, ...] = (HALT, RESUME, EMERGENCY_STOP)
#: The book name that stands for every book.
ALL_BOOKS = "*"


class ControlError(RiskDataError):
    """A control that cannot be recorded (empty book, reason or actor; a non-positive duration)."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(at: dt.datetime | pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(at)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _iso(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NaT:
        return None
    return _utc(value).isoformat()


def _record(
    warehouse: Warehouse,
    book: str,
    action: str,
    reason: str,
    actor: str,
    hours: float | None,
    at: dt.datetime | None,
) -> dict[str, Any]:
    """Validate, then append the ``manual_controls`` row and its ``audit_trail`` row; the event as a dict."""
    for name, value in (("book", book), ("reason", reason), ("actor", actor)):
        if not isinstance(value, str) or not value.strip():
            raise ControlError(f"manual control {action}: {name} must be a non-empty text (got {value!r})")
    if hours is not None and not (float(hours) > 0):
        raise ControlError(f"manual control {action} of {book}: hours must be > 0 (got {hours!r})")
    created = _utc(at or _now())
    expires = created + pd.Timedelta(hours=float(hours)) if hours is not None else None
    event_id = audit_id(TABLE, book, action, reason, actor, created.isoformat())
    row = {
        "event_id": event_id,
        "book": book.strip(),
        "action": action,
        "reason": reason.strip(),
        "actor": actor.strip(),
        "created_at_utc": created,
        "expires_at_utc": expires,
    }
    warehouse.ensure_tables([TABLE, "audit_trail"])
    run_id = f"controls:{actor.strip()}"
    warehouse.append_record(TABLE, row, run_id=run_id)
    inputs = {"event_id": event_id, "reason": row["reason"], "expires_at_utc": _iso(expires)}
    warehouse.append_record(
        "audit_trail",
        {
            "audit_id": audit_id("manual_control", event_id),
            "at": created,
            "actor": row["actor"],
            "decision_type": "manual_control",
            "book": row["book"],
            "subject": f"{action} {row['book']}",
            "decision": action,
            "inputs": json.dumps(inputs, sort_keys=True),
        },
        run_id=run_id,
    )
    return _event_dict(row)


def _event_dict(row: Any) -> dict[str, Any]:
    get = row.get if isinstance(row, dict) else row.__getitem__
    return {
        "event_id": str(get("event_id")),
        "book": str(get("book")),
        "action": str(get("action")),
        "reason": str(get("reason")),
        "actor": str(get("actor")),
        "created_at_utc": _iso(get("created_at_utc")),
        "expires_at_utc": _iso(get("expires_at_utc")),
    }


def halt(
    warehouse: Warehouse,
    book: str,
    reason: str,
    actor: str,
    hours: float | None = None,
    *,
    at: dt.datetime | None = None,
) -> dict:
    """Halt ``book`` (``'*'``: every book) until resumed, or for ``hours``; the recorded event.

    ``at`` (default now, UTC) is when the halt starts; tests and replays set it.
    """
    return _record(warehouse, book, HALT, reason, actor, hours, at)


def resume(warehouse: Warehouse, book: str, reason: str, actor: str, *, at: dt.datetime | None = None) -> dict:
    """Lift the halt of ``book`` (``'*'``: every halt, the emergency stop included); the recorded event.

    The returned dict also says whether a halt was in force (``was_halted``).
    """
    moment = _utc(at or _now())
    before = active_halts(warehouse, moment.to_pydatetime())
    was_halted = book in before if book != ALL_BOOKS else bool(before)
    event = _record(warehouse, book, RESUME, reason, actor, None, moment.to_pydatetime())
    return {**event, "was_halted": was_halted}


def emergency_stop(warehouse: Warehouse, reason: str, actor: str, *, at: dt.datetime | None = None) -> dict:
    """Halt every book (``'*'``) until ``resume(book='*')``; the recorded event."""
    return _record(warehouse, ALL_BOOKS, EMERGENCY_STOP, reason, actor, None, at)


def events(warehouse: Warehouse, until: dt.datetime | None = None) -> pd.DataFrame:
    """Control events created at or before ``until`` (all when None), oldest first; empty without the table."""
    if not warehouse.table_exists(TABLE):
        return pd.DataFrame(columns=["event_id", "book", "action", "reason", "actor", "created_at_utc"])
    sql = (
        "SELECT event_id, book, action, reason, actor, created_at_utc, expires_at_utc FROM risk.manual_controls"
        + (" WHERE created_at_utc <= ?" if until is not None else "")
        + " ORDER BY created_at_utc, event_id"
    )
    got = warehouse.query(sql, [_utc(until).to_pydatetime()] if until is not None else [])
    for c in ("created_at_utc", "expires_at_utc"):
        got[c] = pd.to_datetime(got[c], utc=True)
    return got


def replay(frame: pd.DataFrame, at: dt.datetime | pd.Timestamp) -> dict[str, dict]:
    """The halts in force at ``at`` from control events (sorted oldest first): book -> halt event."""
    moment = _utc(at)
    halts: dict[str, dict] = {}
    for row in frame.itertuples(index=False):
        created = _utc(row.created_at_utc)
        if created > moment:
            break
        if row.action in (HALT, EMERGENCY_STOP):
            halts[str(row.book)] = row._asdict()
        elif row.action == RESUME:
            if row.book == ALL_BOOKS:
                halts.clear()
            else:
                halts.pop(str(row.book), None)
    return {
        book: _event_dict(event)
        for book, event in halts.items()
        if pd.isna(event["expires_at_utc"]) or _utc(event["expires_at_utc"]) > moment
    }


def active_halts(warehouse: Warehouse, at: dt.datetime) -> dict[str, dict]:
    """Book -> the halt event in force at ``at`` (key ``'*'`` for an emergency stop or a halt of every book)."""
    return replay(events(warehouse, at), at)


def book_halt(warehouse: Warehouse, book: str, at: dt.datetime | pd.Timestamp) -> dict | None:
    """The halt in force for ``book`` at ``at`` (its own or one of every book), reading only its events."""
    got = warehouse.query(
        "SELECT event_id, book, action, reason, actor, created_at_utc, expires_at_utc FROM risk.manual_controls "
        "WHERE book IN (?, ?) AND created_at_utc <= ? ORDER BY created_at_utc, event_id",
        [book, ALL_BOOKS, _utc(at).to_pydatetime()],
    )
    for c in ("created_at_utc", "expires_at_utc"):
        got[c] = pd.to_datetime(got[c], utc=True)
    return halt_for_book(replay(got, at), book)


def halt_for_book(halts: dict[str, dict], book: str) -> dict | None:
    """The halt that stops ``book``: its own, else one of every book (``'*'``); None when it may trade."""
    return halts.get(book) or halts.get(ALL_BOOKS)


def describe(event: dict) -> str:
    """One line for a rejection or a trading-state reason."""
    scope = "every book" if event["book"] == ALL_BOOKS else f"book {event['book']}"
    until = f" until {event['expires_at_utc']}" if event.get("expires_at_utc") else " until resumed"
    return (
        f"manual {event['action'].replace('_', ' ')} of {scope} by {event['actor']} at "
        f"{event['created_at_utc']}{until}: {event['reason']}"
    )
