"""Warehouse reads shared by the assets and the pre-trade service (no Dagster).

Everything here takes a ``Warehouse`` and returns frames or dataclasses; missing inputs raise
``RiskDataError`` so each caller decides how to fail closed (an asset fails its step, the service
rejects the order).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from risk_pipeline.errors import RiskDataError
from risk_pipeline.quant.trading_state import TradingStateRecord
from risk_pipeline.risk_levels import capital_with_overrides
from risk_pipeline.warehouse import Between, Warehouse

#: Columns of an ``audit_trail`` row a writer supplies.
AUDIT_COLUMNS = ["audit_id", "at", "actor", "decision_type", "book", "subject", "decision", "inputs"]


def latest_as_of(wh: Warehouse, table: str, session: dt.date, before: bool = False) -> pd.Timestamp | None:
    """Latest ``as_of`` of a table for the session (or, with ``before``, for any earlier session)."""
    op = "<" if before else "="
    got = wh.query(f"SELECT MAX(as_of) AS t FROM risk.{table} WHERE as_of_date {op} ?", [session])
    value = got["t"].iloc[0] if len(got) else None
    return None if value is None or pd.isna(value) else pd.Timestamp(value).tz_convert("UTC")


@dataclass(frozen=True)
class BookValuation:
    """One book's ``position_greeks`` rows at the latest valuation of a session."""

    session: dt.date
    as_of: pd.Timestamp
    book: str
    rows: pd.DataFrame


def latest_valuation(wh: Warehouse, session: dt.date) -> tuple[pd.Timestamp, pd.DataFrame]:
    """The session's latest valuation: its ``as_of`` and every book's ``position_greeks`` rows."""
    as_of = latest_as_of(wh, "position_greeks", session)
    if as_of is None:
        raise RiskDataError(f"no position_greeks for session {session}: value the books first")
    return as_of, wh.read("position_greeks", {"as_of": as_of})


def book_valuations(wh: Warehouse, sessions: Sequence[dt.date]) -> Iterator[BookValuation]:
    """Each session's latest valuation, one book at a time (sessions in order, books sorted)."""
    for session in sessions:
        as_of, positions = latest_valuation(wh, session)
        for book, rows in positions.groupby("book", sort=True):
            yield BookValuation(session, as_of, str(book), rows.reset_index(drop=True))


def missing_intraday_inputs(wh: Warehouse, session: dt.date, previous: dt.date) -> list[str]:
    """What an intraday valuation of ``session`` needs and the warehouse lacks (empty: ready).

    Start of day loads the session's positions, curve and dividend yields; the previous session's
    closes come from its end of day. Each missing input is named with its table and session.
    """
    needed = [
        ("positions", session),
        ("rates_curve", session),
        ("dividend_yields", session),
        ("market_prices", previous),
    ]
    return [f"{name} for {day}" for name, day in needed if wh.row_count(name, {"as_of_date": day}) == 0]


def latest_published_as_of(wh: Warehouse, book: str, lookback: int = 50) -> pd.Timestamp | None:
    """``as_of`` of the latest published valuation (``published_valuations``) that covers ``book``."""
    got = wh.query(f"SELECT as_of, books FROM risk.published_valuations ORDER BY as_of DESC LIMIT {int(lookback)}")
    for row in got.itertuples():
        if book in json.loads(row.books):
            return pd.Timestamp(row.as_of).tz_convert("UTC")
    return None


def close_matrix(
    wh: Warehouse, session: dt.date, sessions_back: int, symbols: Sequence[str] | None = None
) -> pd.DataFrame:
    """Closes (sessions x symbols) covering at least ``sessions_back`` sessions ending at ``session``."""
    start = session - dt.timedelta(days=int((sessions_back + 1) * 7 / 5) + 30)
    where: dict[str, Any] = {"as_of_date": Between(start, session)}
    if symbols is not None:
        where["symbol"] = list(symbols)
    closes = wh.read("market_prices", where, columns=["as_of_date", "symbol", "close"])
    return closes.pivot(index="as_of_date", columns="symbol", values="close").sort_index()


def atm_vol_matrix(wh: Warehouse, first: dt.date, last: dt.date, symbols: Sequence[str]) -> pd.DataFrame:
    """Closing constant-maturity ATM vols (sessions x symbols) from ``atm_vol_history``; NaN where not measured."""
    where: dict[str, Any] = {"as_of_date": Between(first, last), "symbol": list(symbols)}
    vols = wh.read("atm_vol_history", where, columns=["as_of_date", "symbol", "atm_vol"])
    wide = vols.pivot(index="as_of_date", columns="symbol", values="atm_vol").sort_index()
    return wide.reindex(columns=list(symbols))


def correlation_matrix(wh: Warehouse, session: dt.date, window: int) -> pd.DataFrame:
    """Correlation of daily log returns over the last ``window`` sessions ending at ``session``."""
    wide = close_matrix(wh, session, window)
    return np.log(wide).diff().iloc[1:].tail(window).corr(min_periods=20)


def book_capital(path: str | Path) -> dict[str, float]:
    """Starting capital per book from data/books.yaml (``RISK_PIPELINE_PORTFOLIO_VALUE_<BOOK>`` replaces it)."""
    with open(path) as handle:
        books = (yaml.safe_load(handle) or {}).get("books", {})
    return capital_with_overrides({name: float(spec["capital"]) for name, spec in books.items()})


def risk_numbers(wh: Warehouse, as_of: pd.Timestamp, book: str) -> tuple[bool, float | None, float | None]:
    """(risk layer deployed?, 99 % 1-day historical VaR, 97.5 % 1-day ES) for the book at ``as_of``.

    VaR is computed at end of day; an intraday valuation uses the latest VaR at or before it if that
    is from the same or the previous session (older is stale: None, so the limit fails closed).
    """
    if not wh.table_exists("var_results") or wh.row_count("var_results") == 0:
        return False, None, None
    latest = wh.query(
        "SELECT MAX(as_of) AS t FROM risk.var_results WHERE book = ? AND as_of <= ? AND as_of >= ?",
        [book, as_of, as_of - pd.Timedelta(days=5)],
    )
    if latest.empty or pd.isna(latest["t"].iloc[0]):
        return True, None, None
    got = wh.query(
        "SELECT confidence, var, expected_shortfall FROM risk.var_results WHERE as_of = ? AND book = ? "
        "AND horizon_days = 1 AND method = 'historical'",
        [pd.Timestamp(latest["t"].iloc[0]), book],
    )
    var = got.loc[np.isclose(got["confidence"], 0.99), "var"]
    es = got.loc[np.isclose(got["confidence"], 0.975), "expected_shortfall"]
    return True, (float(var.iloc[0]) if len(var) else None), (float(es.iloc[0]) if len(es) else None)


def previous_state(wh: Warehouse, book: str, as_of: pd.Timestamp) -> TradingStateRecord | None:
    """The book's last stored trading state before ``as_of`` (None for its first evaluation)."""
    got = wh.query(
        "SELECT * FROM risk.trading_state WHERE book = ? AND as_of < ? ORDER BY as_of DESC LIMIT 1", [book, as_of]
    )
    if got.empty:
        return None
    r = got.iloc[0]
    return TradingStateRecord(
        state=r["state"],
        preservation_level=r["preservation_level"],
        reason=r["reason"],
        triggering_limits=tuple(json.loads(r["triggering_limits"] or "[]")),
        since=pd.Timestamp(r["since"]),
        level_since=pd.Timestamp(r["level_since"]),
        clear_count=int(r["clear_count"]),
        evaluated_at=pd.Timestamp(r["as_of"]),
        target_state=r["target_state"],
        target_level=r["target_level"],
        target_gross_cut=float(r["target_gross_cut"]),
        hedges_required=bool(r["hedges_required"]),
        flatten_speculative=bool(r["flatten_speculative"]),
        reference_gross=float(r["reference_gross"]) if r["reference_gross"] is not None else float("nan"),
    )


def state_at(wh: Warehouse, book: str, as_of: pd.Timestamp) -> TradingStateRecord | None:
    """The trading state stored for the valuation ``as_of`` (or the last one before it)."""
    return previous_state(wh, book, as_of + pd.Timedelta(microseconds=1))


def audit_id(*parts: object) -> str:
    """Deterministic id of a decision: the same decision on the same inputs gets the same id."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


def audit_row(
    at: pd.Timestamp, book: str, decision_type: str, subject: str, decision: str, inputs: dict, actor: str
) -> dict[str, Any]:
    """One ``audit_trail`` row; its id hashes the decision and its inputs (re-recording adds nothing)."""
    payload = json.dumps(inputs, sort_keys=True, default=str)
    return {
        "audit_id": audit_id(decision_type, book, subject, at.isoformat(), decision, payload),
        "at": at,
        "actor": actor,
        "decision_type": decision_type,
        "book": book,
        "subject": subject,
        "decision": decision,
        "inputs": payload,
    }
