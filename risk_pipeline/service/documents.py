"""The published documents the risk service serves, read from the warehouse (no Dagster).

Every reader follows the published-valuation pointer: a book's documents are taken at its latest
published valuation (``published_valuations``), or at the latest rows at or before it for tables
written on their own schedule (sizing, hedges, gap risk). A table that does not exist (its layer is
not deployed) raises ``NotPublished``; so does a book with no rows in it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from risk_pipeline.contracts import TABLES
from risk_pipeline.quant.gap_risk import gap_document
from risk_pipeline.queries import state_at
from risk_pipeline.warehouse import Warehouse


class NotPublished(LookupError):
    """The document's table does not exist or holds nothing for the request (HTTP 404)."""


def plain(value: Any) -> Any:
    """A JSON-safe value: NaN/NaT -> None, timestamps and dates -> ISO 8601 (UTC), numpy -> Python."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp | dt.datetime):
        t = pd.Timestamp(value)
        return (t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records(frame: pd.DataFrame, table_name: str | None = None) -> list[dict[str, Any]]:
    """Rows as JSON-safe dicts; JSON columns of a contract table parsed; lineage columns kept."""
    json_columns = set()
    if table_name in TABLES:
        json_columns = {c.name for c in TABLES[table_name].columns if c.type == "json"}
    out = []
    for row in frame.to_dict("records"):
        item = {}
        for k, v in row.items():
            if k in json_columns and isinstance(v, str):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            item[k] = plain(v)
        out.append(item)
    return out


def _require_table(wh: Warehouse, name: str, what: str) -> None:
    if not wh.table_exists(name):
        raise NotPublished(f"{what} is not published: table risk.{name} does not exist in {wh.describe()}")


def latest_rows(wh: Warehouse, name: str, book: str, as_of: pd.Timestamp | None, extra: dict[str, Any]) -> pd.DataFrame:
    """Rows of ``name`` for the book (and ``extra`` equalities) at its latest ``as_of`` at or before ``as_of``."""
    where = " AND ".join(["book = ?", *(f'"{k}" = ?' for k in extra)])
    params: list[Any] = [book, *extra.values()]
    bound = ""
    if as_of is not None:
        bound = " AND as_of <= ?"
        params.append(as_of)
    sql = (
        f"SELECT * FROM risk.{name} WHERE {where} AND as_of = (SELECT MAX(as_of) FROM risk.{name} WHERE {where}{bound})"
    )
    return wh.query(sql, [*params[: len(extra) + 1], *params])


def book_risk(wh: Warehouse, book: str, as_of: pd.Timestamp, halt: dict | None) -> dict[str, Any]:
    """State, NAV, drawdown, Greeks, VaR/ES, worst stress, open breaches and compliance of a book at ``as_of``."""
    state = state_at(wh, book, as_of)
    nav = wh.query(
        "SELECT nav, peak_nav, daily_pnl, drawdown_pct FROM risk.book_nav WHERE as_of = ? AND book = ?", [as_of, book]
    )
    greeks = (
        wh.query(
            "SELECT delta, dollar_delta, gamma, vega_per_vol_point, theta_per_day, positions_count "
            "FROM risk.portfolio_greeks WHERE as_of = ? AND book = ? AND scope = 'total'",
            [as_of, book],
        )
        if wh.table_exists("portfolio_greeks")
        else pd.DataFrame()
    )
    doc: dict[str, Any] = {
        "book": book,
        "as_of": plain(as_of),
        "trading_state": {
            "state": "HALTED" if halt else (state.state if state else None),
            "published_state": state.state if state else None,
            "preservation_level": state.preservation_level if state else None,
            "reason": state.reason if state else "no trading state stored (orders are rejected)",
            "manual_halt": halt,
        },
        "nav": records(nav)[0] if len(nav) else None,
        "greeks": records(greeks)[0] if len(greeks) else None,
    }
    doc["var"] = _var(wh, book, as_of)
    doc["worst_stress"] = _worst_stress(wh, book, as_of)
    doc["open_breaches"] = _breaches(wh, book, as_of)
    doc["compliance"] = _compliance(wh, book, as_of)
    return doc


def _var(wh: Warehouse, book: str, as_of: pd.Timestamp) -> dict[str, Any] | None:
    if not wh.table_exists("var_results"):
        return None
    got = wh.query(
        "SELECT horizon_days, confidence, var, expected_shortfall FROM risk.var_results "
        "WHERE book = ? AND method = 'historical' AND as_of = "
        "(SELECT MAX(as_of) FROM risk.var_results WHERE book = ? AND as_of <= ?)",
        [book, book, as_of],
    )
    if got.empty:
        return None
    out: dict[str, Any] = {"method": "historical", "confidence": 0.99}
    for r in got.itertuples(index=False):
        if math.isclose(r.confidence, 0.99):
            out[f"var_{int(r.horizon_days)}d"] = plain(float(r.var))
        if math.isclose(r.confidence, 0.975):
            out[f"es_975_{int(r.horizon_days)}d"] = plain(float(r.expected_shortfall))
    return out


def _worst_stress(wh: Warehouse, book: str, as_of: pd.Timestamp) -> dict[str, Any] | None:
    if not wh.table_exists("stress_results"):
        return None
    got = wh.query(
        "SELECT scenario_id, description, pnl, pnl_pct_nav, risk_level FROM risk.stress_results "
        "WHERE book = ? AND as_of = ? ORDER BY pnl ASC LIMIT 1",
        [book, as_of],
    )
    return records(got)[0] if len(got) else None


def _breaches(wh: Warehouse, book: str, as_of: pd.Timestamp) -> list[dict[str, Any]]:
    got = wh.query(
        "SELECT limit_name, value, threshold, warn_threshold, utilization, status FROM risk.limit_status "
        "WHERE book = ? AND as_of = ? AND status = 'BREACH' ORDER BY limit_name",
        [book, as_of],
    )
    return records(got)


def _compliance(wh: Warehouse, book: str, as_of: pd.Timestamp) -> dict[str, Any]:
    if not wh.table_exists("compliance_reports"):
        return {"status": "not published", "detail": "table risk.compliance_reports does not exist"}
    got = wh.query(
        "SELECT report_date, status, n_minor, n_major, as_of FROM risk.compliance_reports "
        "WHERE book = ? AND as_of <= ? ORDER BY report_date DESC LIMIT 1",
        [book, as_of],
    )
    if got.empty:
        return {"status": "not published", "detail": f"no compliance report of {book} at or before {plain(as_of)}"}
    return records(got, "compliance_reports")[0]


def gap_risk(wh: Warehouse, book: str, as_of: pd.Timestamp | None) -> dict[str, Any]:
    """The gap-risk document (as exports/gap_risk/<book>.json shapes it) plus the actions behind it."""
    _require_table(wh, "gap_risk_actions", "gap risk")
    rows = latest_rows(wh, "gap_risk_actions", book, as_of, {})
    if rows.empty:
        raise NotPublished(f"no gap_risk_actions rows of book {book!r} at or before the published valuation")
    items = records(rows, "gap_risk_actions")
    budget = next((float(r["budget"]) for r in items if r.get("budget") is not None), 0.0)
    return {"book": book, "as_of": items[0]["as_of"], **gap_document(items, budget), "actions": items}


def table_document(
    wh: Warehouse, name: str, what: str, book: str, as_of: pd.Timestamp | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The latest rows of a per-book table (sizing, hedges) at or before the published valuation."""
    _require_table(wh, name, what)
    rows = latest_rows(wh, name, book, as_of, extra or {})
    if rows.empty:
        subject = ", ".join(f"{k} {v!r}" for k, v in {"book": book, **(extra or {})}.items())
        raise NotPublished(f"no {what} published for {subject} (table risk.{name})")
    return {
        "book": book,
        **{k: v for k, v in (extra or {}).items()},
        "as_of": plain(rows["as_of"].iloc[0]),
        "rows": records(rows, name),
    }


def alerts(wh: Warehouse, book: str | None, since: dt.datetime | None, limit: int) -> dict[str, Any]:
    """The newest alerts (all books or one), newest first."""
    _require_table(wh, "alerts", "alerts")
    clauses, params = [], []
    if book is not None:
        clauses.append("book = ?")
        params.append(book)
    if since is not None:
        clauses.append('"at" > ?')
        params.append(since)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    got = wh.query(f'SELECT * FROM risk.alerts{where} ORDER BY "at" DESC LIMIT {int(limit)}', params)
    return {"alerts": records(got, "alerts"), "count": len(got)}
