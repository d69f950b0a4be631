"""Scheduled events against the XNYS calendar, event-day move histories and gap-risk actions in force (no Dagster).

Shared by the event-risk and gap-risk assets, the event-calendar sensor, VaR, the limits step and the
pre-trade service. The decisions themselves are pure functions of ``quant/gap_risk.py``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from risk_pipeline.calendar import CALENDAR_END, session_close_utc, session_closes_utc, sessions
from risk_pipeline.errors import RiskDataError
from risk_pipeline.paths import DATA_DIR
from risk_pipeline.quant.gap_risk import (
    Blackout,
    GapRiskConfig,
    LeadWindows,
    LimitOverride,
    WindowEvent,
    apply_limit_overrides,
    blackouts_from_rows,
    monthly_expirations,
    overrides_from_rows,
    parse_gap_risk_config,
)
from risk_pipeline.quant.limits import BookExposure, LimitResult, LimitsConfig, book_metrics
from risk_pipeline.warehouse import Between, Warehouse

#: The shipped gap-risk policy (lead windows, budgets, actions per book).
GAP_RISK_FILE = DATA_DIR / "gap_risk.yaml"
NEW_YORK = "America/New_York"
#: First session of the cached close table (the packaged S&P 500 history starts in 1999).
_FIRST = dt.date(1999, 1, 4)


def gap_risk_file() -> Path:
    """``RISK_PIPELINE_GAP_RISK_FILE`` or the shipped ``data/gap_risk.yaml``."""
    value = os.environ.get("RISK_PIPELINE_GAP_RISK_FILE")
    return Path(value) if value else GAP_RISK_FILE


def load_gap_risk_config(path: str | os.PathLike[str] | None = None) -> GapRiskConfig:
    """Read and validate a gap-risk YAML file (``GapRiskConfigError`` names every problem)."""
    file = Path(path) if path is not None else gap_risk_file()
    return parse_gap_risk_config(yaml.safe_load(file.read_text(encoding="utf-8")) or {}, str(file))


@functools.cache
def _session_closes() -> tuple[np.ndarray, np.ndarray]:
    """Every XNYS session from 1999 to the calendar's end and its close (UTC, ns), early closes included."""
    days = sessions(_FIRST, CALENDAR_END)
    closes = session_closes_utc(days).as_unit("ns").asi8.astype(np.int64)
    return np.asarray(days, dtype="datetime64[D]"), closes


def reaction_sessions(event_times: pd.Series) -> pd.Series:
    """Per event, the first session whose close is after its time: the session whose close-to-close return
    carries the news (next session for after-close releases; an early close is that session's close). None
    for an event after the calendar's last session (``CALENDAR_END``)."""
    days, closes = _session_closes()
    t = pd.to_datetime(event_times, utc=True)
    i = np.searchsorted(closes, t.dt.as_unit("ns").astype("int64").to_numpy(), side="right")
    return pd.Series(
        [days[k].astype(dt.date) if k < days.size else None for k in i], index=event_times.index, dtype=object
    )


def trading_days_until(session: dt.date, reactions: pd.Series) -> pd.Series:
    """Sessions after ``session`` up to and including each reaction session (0 for today or earlier)."""
    days, _ = _session_closes()
    lo = np.searchsorted(days, np.datetime64(session, "D"), side="right")
    beyond = CALENDAR_END + dt.timedelta(days=1)  # an event after the calendar counts every session to its end
    hi = np.searchsorted(days, np.asarray([d or beyond for d in reactions], dtype="datetime64[D]"), side="right")
    return pd.Series(np.maximum(hi - lo, 0).astype(np.int64), index=reactions.index)


def exchange_sessions(start: dt.date, end: dt.date) -> tuple[dt.date, ...]:
    """XNYS sessions in [start, end]."""
    return sessions(start, end)


def option_expirations(first_month: dt.date, last_month: dt.date) -> list[dt.date]:
    """Monthly option expirations from the exchange calendar (third Friday, the session before on a holiday)."""
    return monthly_expirations(sessions(first_month - dt.timedelta(days=10), CALENDAR_END), first_month, last_month)


OPEX_SOURCE = "third Friday rule (OCC/Cboe) on the XNYS calendar (exchange_calendars)"


def option_expiration_events(first_month: dt.date, last_month: dt.date) -> pd.DataFrame:
    """``data/event_calendar/opex.csv``: one ``opex`` event per month at 9:30 New York on the expiration session."""
    rows = []
    for d in option_expirations(first_month, last_month):
        first = dt.date(d.year, d.month, 1)
        third = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)
        at = pd.Timestamp(dt.datetime.combine(d, dt.time(9, 30)), tz=NEW_YORK).tz_convert("UTC")
        note = f"{d:%b %Y} monthly expiration; third Friday"
        if d != third:
            note += f" {third} is an exchange holiday: moved to the session before"
        rows.append(
            {
                "event_id": f"opex-{d}",
                "event_type": "opex",
                "symbol": None,
                "event_time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "source": OPEX_SOURCE,
                "notes": note,
            }
        )
    return pd.DataFrame(rows)


def live_events(calendar: pd.DataFrame) -> pd.DataFrame:
    """Calendar rows that happened or will happen (cancelled releases dropped), with their reaction session."""
    events = calendar[~calendar["notes"].fillna("").str.contains("cancelled")].copy()
    events["event_time"] = pd.to_datetime(events["event_time"], utc=True)
    events["reaction_session"] = reaction_sessions(events["event_time"]) if len(events) else pd.Series(dtype=object)
    return events


def upcoming(calendar: pd.DataFrame, session: dt.date, now: pd.Timestamp, leads: LeadWindows) -> pd.DataFrame:
    """Events not yet happened at ``now`` (UTC) with ``trading_days_until`` from ``session`` and an ``in_window``
    flag (``trading_days_until <= lead`` of the type); sorted by time."""
    events = live_events(calendar)
    events = events[events["event_time"] > now].copy()
    events["trading_days_until"] = trading_days_until(session, events["reaction_session"])
    events["lead_sessions"] = events["event_type"].map(leads.lead).astype(np.int64)
    events["in_window"] = events["trading_days_until"] <= events["lead_sessions"]
    return events.sort_values(["event_time", "event_id"]).reset_index(drop=True)


def events_in_window(
    calendar: pd.DataFrame, session: dt.date, leads: LeadWindows, held_symbols: set[str]
) -> pd.DataFrame:
    """Events inside their lead window at ``session``'s close that concern a held name (earnings) or every book
    (market-wide types): what the gap-risk layer acts on that session."""
    events = upcoming(calendar, session, session_close_utc(session), leads)
    concerns = events["symbol"].isna() | events["symbol"].isin(sorted(held_symbols))
    return events[events["in_window"] & concerns].reset_index(drop=True)


def window_events(frame: pd.DataFrame) -> list[WindowEvent]:
    """``WindowEvent``s of ``upcoming`` rows."""
    return [
        WindowEvent(
            str(r.event_id),
            str(r.event_type),
            None if r.symbol is None or pd.isna(r.symbol) else str(r.symbol),
            r.event_time,
            r.reaction_session,
            int(r.trading_days_until),
        )
        for r in frame.itertuples()
    ]


@dataclass(frozen=True)
class MoveHistory:
    """Past event-day close-to-close moves: per symbol (earnings) and of the index per market-wide type."""

    symbol_moves: dict[str, np.ndarray]
    market_moves: dict[str, np.ndarray]


def event_days(
    wh: Warehouse, until: dt.date, symbols: list[str], index_symbol: str, calendar: pd.DataFrame | None = None
) -> tuple[pd.Series, dict[tuple[str, str], set[dt.date]]]:
    """``event_move_history``'s inputs: the stored close-to-close moves by (symbol, session), and the event sessions
    per (``earnings``, symbol) and per (market-wide type, ``index_symbol``)."""
    bars = wh.read(
        "market_prices",
        {"as_of_date": Between(dt.date(1900, 1, 1), until), "symbol": sorted({*symbols, index_symbol})},
        columns=["as_of_date", "symbol", "close", "event_flag"],
    )
    bars["move"] = bars.groupby("symbol")["close"].pct_change()
    flagged = bars[bars["event_flag"].fillna("") != ""]
    days: dict[tuple[str, str], set[dt.date]] = {}
    kinds_of = flagged["event_flag"].str.split(";")
    for row, kinds in zip(flagged[["symbol", "as_of_date"]].itertuples(index=False), kinds_of, strict=True):
        for kind in kinds:
            if kind == "earnings":
                days.setdefault(("earnings", row.symbol), set()).add(row.as_of_date)
            elif kind and kind != "macro" and row.symbol == index_symbol:
                days.setdefault((kind, index_symbol), set()).add(row.as_of_date)
    if calendar is not None and len(calendar):
        past = live_events(calendar)
        past = past[past["reaction_session"].map(lambda d: d is not None and d <= until)]
        for r in past.itertuples():
            if r.symbol is not None and not pd.isna(r.symbol):
                if r.event_type == "earnings" and r.symbol in symbols:
                    days.setdefault(("earnings", r.symbol), set()).add(r.reaction_session)
            else:
                days.setdefault((r.event_type, index_symbol), set()).add(r.reaction_session)
    return bars.dropna(subset=["move"]).set_index(["symbol", "as_of_date"])["move"], days


def event_move_history(
    wh: Warehouse, until: dt.date, symbols: list[str], index_symbol: str, calendar: pd.DataFrame | None = None
) -> MoveHistory:
    """Close-to-close moves of the sessions carrying past events, measured from ``market_prices``.

    Event days are the sessions ``market_prices.event_flag`` marks (``earnings`` per symbol, the macro type
    for the index) and, when ``calendar`` is given, the reaction sessions of its past events (earnings of
    ``symbols``; every market-wide type for the index), so a type the price history does not flag (payrolls,
    PPI, GDP, option expiration, Fed speeches) still has its history. Cancelled events are ignored.
    """
    moves, days = event_days(wh, until, symbols, index_symbol, calendar)
    symbol_moves: dict[str, np.ndarray] = {}
    market_moves: dict[str, np.ndarray] = {}
    # every (symbol, day) looked up at once, the rows a reindex per symbol finds (absent days dropped, as dropna did:
    # the stored moves have no NaN)
    whens = [sorted(when) for when in days.values()]
    keys = [(symbol, d) for (_, symbol), when in zip(days, whens, strict=True) for d in when]
    found = moves.index.get_indexer(pd.MultiIndex.from_tuples(keys)) if keys else np.zeros(0, dtype=np.intp)
    values = moves.to_numpy(float)
    start = 0
    for (kind, symbol), when in zip(days, whens, strict=True):
        at = found[start : start + len(when)]
        start += len(when)
        got = values[at[at >= 0]]
        if not got.size:
            continue
        if kind == "earnings":
            symbol_moves[symbol] = got
        else:
            market_moves[kind] = got
    return MoveHistory(symbol_moves, market_moves)


def latest_actions(wh: Warehouse, book: str, at: pd.Timestamp) -> pd.DataFrame:
    """The book's ``gap_risk_actions`` rows of its latest evaluation at or before ``at`` (empty if none)."""
    if not wh.table_exists("gap_risk_actions"):
        raise RiskDataError("table gap_risk_actions does not exist: gap-risk actions cannot be read")
    return wh.query(
        "SELECT * FROM risk.gap_risk_actions WHERE book = ? AND as_of = "
        "(SELECT MAX(as_of) FROM risk.gap_risk_actions WHERE book = ? AND as_of <= ?) ORDER BY event_id, symbol",
        [book, book, at],
    )


def actions_in_force(wh: Warehouse, book: str, at: pd.Timestamp) -> list[dict[str, Any]]:
    """Rows of the book's latest evaluation at or before ``at`` whose event has not happened at ``at``."""
    rows = latest_actions(wh, book, at)
    if rows.empty:
        return []
    live = rows[pd.to_datetime(rows["expires_at"], utc=True) > at]
    return live.to_dict("records")


def event_overrides(wh: Warehouse, book: str, as_of: pd.Timestamp) -> list[LimitOverride]:
    """The caps tightened by the book's gap-risk actions in force at ``as_of``."""
    return overrides_from_rows(actions_in_force(wh, book, as_of))


def apply_event_caps(
    exposure: BookExposure,
    config: LimitsConfig,
    results: list[LimitResult],
    overrides: list[LimitOverride],
) -> list[LimitResult]:
    """``results`` with the tightened caps ``overrides`` (each changed row says so in its note); unchanged when
    none is in force."""
    if not overrides:
        return list(results)
    m = book_metrics(exposure, config)
    out, _ = apply_limit_overrides(results, overrides, m.symbols.tolist(), m.net_delta_by_symbol, m.gamma_by_symbol)
    return out


def event_blackouts(wh: Warehouse, book: str, as_of: pd.Timestamp) -> list[Blackout]:
    """New-entry blocks of the book's latest gap-risk evaluation at or before ``as_of`` (each until its event;
    ``quant.gap_risk.blackout_for_order`` says which apply at a given time)."""
    return blackouts_from_rows(latest_actions(wh, book, as_of).to_dict("records"))


@dataclass(frozen=True)
class GapVarResult:
    """``VarReport`` whose historical results include the gap scenarios of the events in their horizon, and the
    gap component per (method, horizon, confidence) as ``var_results`` columns."""

    report: Any
    gap_columns: pd.DataFrame


def var_with_gap_scenarios(
    wh: Warehouse,
    session: dt.date,
    as_of: pd.Timestamp,
    rows: pd.DataFrame,
    portfolio: Any,
    history: Any,
    config: Any,
    report: Any,
    index_symbol: str = "SYNX",
    dynamics: Sequence[Any] = (),
) -> GapVarResult:
    """Historical VaR/ES with the gap scenarios of every event whose reaction session is within the horizon.

    For horizon ``h`` the events of the book (earnings of a held name, every market-wide event) with
    ``1 <= trading_days_until <= h`` add their past event-day moves, each with both signs, to each historical
    ``h``-day scenario (``quant.gap_risk.gap_var``); the historical rows of that horizon are replaced by the
    VaR/ES with gaps when that is not lower (else kept, gap component 0), and ``gap_var`` /
    ``gap_expected_shortfall`` / ``gap_events`` say how much the gaps added. Other rows are left as they are
    (gap columns NULL). ``dynamics``: the smile / term dynamics the historical VaR used, applied to the gap
    scenarios too; an earnings event also crushes the reporting name's implied vols in its gap scenarios
    (``smile_dynamics.EarningsVolCrush``, event variance = mean squared log move of its past reactions).
    """
    from risk_pipeline.quant.gap_risk import gap_var
    from risk_pipeline.quant.smile_dynamics import EarningsVolCrush
    from risk_pipeline.quant.stress import GapEvent, event_scenarios
    from risk_pipeline.quant.var import HISTORICAL, VarReport, historical_scenarios

    columns = ["method", "horizon_days", "confidence", "gap_var", "gap_expected_shortfall", "gap_events"]
    types = {"horizon_days": "int64", "confidence": "float64"} | {"gap_var": float, "gap_expected_shortfall": float}

    def frame(data: list[list[Any]]) -> pd.DataFrame:
        return pd.DataFrame(data, columns=columns).astype(types)

    calendar = wh.read("event_calendar")
    events = live_events(calendar) if len(calendar) else calendar.assign(reaction_session=None)
    events = events[pd.to_datetime(events["event_time"], utc=True) > as_of].copy()
    if events.empty:
        return GapVarResult(report, frame([]))
    events["trading_days_until"] = trading_days_until(session, events["reaction_session"])
    held = set(portfolio.symbols)
    market = events["symbol"].isna()
    events = events[(events["trading_days_until"] >= 1) & (events["trading_days_until"] <= max(config.horizons))]
    events = events[market.reindex(events.index) | events["symbol"].isin(held)]
    if events.empty:
        return GapVarResult(report, frame([]))
    moves = event_move_history(wh, session, list(portfolio.symbols), index_symbol, calendar)
    betas = rows.groupby("symbol")["beta"].first().reindex(list(portfolio.symbols)).fillna(1.0).to_numpy()
    hist = history.window(config.lookback_days)
    results = list(report.results)
    gap_rows = []
    for h in config.horizons:
        todo = []
        crush: list[Any] = []
        for e in events[events["trading_days_until"] <= h].sort_values(["event_time", "event_id"]).itertuples():
            symbol = None if pd.isna(e.symbol) else str(e.symbol)
            m = moves.market_moves.get(e.event_type) if symbol is None else moves.symbol_moves.get(symbol)
            if m is None or not len(m):
                continue
            spot = event_scenarios(portfolio, GapEvent(e.event_id, e.event_type, symbol), m, betas).spot_shock_rel
            # each past reaction with both signs: the next reaction's direction is unknown, and the positive
            # mean of a handful of past reactions must not make the event lower the VaR
            todo.append((str(e.event_id), np.vstack([spot, -spot])))
            if symbol is not None and e.event_type == "earnings":  # the reporting name's options lose the event
                crush.append(
                    EarningsVolCrush(
                        symbol=int(portfolio.symbol_position([symbol])[0]),
                        event_variance=float(np.mean(np.log1p(np.asarray(m, dtype=float)) ** 2)),
                        years_to_reaction=(e.reaction_session - session).days / 365.0,
                        event_id=str(e.event_id),
                    )
                )
        if not todo:
            continue
        gaps = gap_var(
            portfolio,
            historical_scenarios(hist, h),
            report.scenario_pnl[(HISTORICAL, h)],
            todo,
            horizon_days=h,
            confidences=config.confidences,
            calendar_days=h * config.calendar_days_per_trading_day,
            american=config.american,
            seed=config.seed,
            dynamics=[*dynamics, *crush],
        )
        for g in gaps:
            i = next(
                k
                for k, r in enumerate(results)
                if r.method == HISTORICAL and r.horizon_days == h and np.isclose(r.confidence, g.confidence)
            )
            if g.gap_var < 0.0:
                # the combined set's empirical quantile fell (the base tail spread over many more points, or
                # small past reactions): an event never lowers the VaR, so the row without gaps is kept
                gap_rows.append([HISTORICAL, h, g.confidence, 0.0, 0.0, json.dumps(list(g.event_ids))])
                continue
            results[i] = replace(
                results[i],
                var=g.var,
                expected_shortfall=g.expected_shortfall,
                n_scenarios=g.n_scenarios,
                component_var=g.component_var,
                component_es=g.component_es,
                var_non_overlapping=float("nan"),
                independent_tail_obs=float("nan"),
                note="; ".join(
                    [*hist.factor_tags(), "gap scenarios combined with every window: tail diagnostics not computed"]
                )
                + "".join(f"; {c.label}" for c in crush),
            )
            gap_rows.append(
                [HISTORICAL, h, g.confidence, g.gap_var, g.gap_expected_shortfall, json.dumps(list(g.event_ids))]
            )
    return GapVarResult(VarReport(tuple(results), report.scenario_pnl), frame(gap_rows))
