"""performance_analytics: returns ratios per book and strategy, trades and stops, effectiveness of the controls.

Thin: reads the published tables, calls ``quant/performance.py`` and writes one table. The counterfactual of a
control is a static book: the positions held at the event's valuation, held unchanged, and the same book with
the control's trades (reductions, hedge lines, gap-risk trades) applied, both revalued by ``value_positions``
at each of the next ``horizon_sessions`` valuations. Events older than ``horizon_sessions`` + 1 sessions (their
horizon is over) are carried over from the previous partition's rows (``events``), so a run revalues only the
recent events (``judge_from``: those not complete in the previous partition; all of the cache window without one).
"""

import datetime as dt
import json
import math
from collections.abc import Iterator
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.calendar import sessions as xnys_sessions
from risk_pipeline.contracts import table
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    PREVIOUS_SESSION,
    TableWrite,
    fail_closed,
    markdown_table,
    partition_sessions,
    publish,
    session_check_spec,
    table_definition_metadata,
)
from risk_pipeline.errors import RiskDataError
from risk_pipeline.quant import performance as perf
from risk_pipeline.queries import latest_as_of
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.valuation import VALUATION_INPUTS, value_positions
from risk_pipeline.warehouse import Between, Warehouse

GROUP = "analytics"
#: (label, sessions); None = since inception
WINDOWS: tuple[tuple[str, int | None], ...] = (("1d", 1), ("21d", 21), ("63d", 63), ("252d", 252), ("inception", None))
CONTROL_WINDOWS: tuple[tuple[str, int], ...] = (("21d", 21), ("63d", 63), ("252d", 252))
#: the window whose ``events`` carry completed control events over to the next partition
CACHE_WINDOW = "252d"
POSITION_COLUMNS = [
    "book", "position_id", "instrument_type", "symbol", "expiry", "strike", "option_type", "exercise_style",
    "quantity", "multiplier", "strategy", "sector",
]  # fmt: skip
CONTROL_TYPES = ("capital_preservation", "hedge", "gap_risk")
UPSTREAM = [
    "position_greeks",
    "book_nav",
    "trading_state",
    "required_reductions",
    "hedge_recommendations",
    "hedge_performance",
    "gap_risk_actions",
    "position_stops",
]


class AnalyticsSettings(dg.Config):
    """How long a control is judged after it and how returns are annualized."""

    horizon_sessions: int = 5
    periods_per_year: int = perf.SESSIONS_PER_YEAR


def _read(wh: Warehouse, name: str, where: dict[str, Any] | None = None) -> pd.DataFrame:
    """Rows of an upstream table, empty (with its columns) when the deployment has not written it yet."""
    if not wh.table_exists(name):
        return pd.DataFrame(columns=table(name).column_names)
    return wh.read(name, where)


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# ----------------------------------------------------------------------------------------------- returns
def book_returns(wh: Warehouse, session: dt.date) -> pd.DataFrame:
    """book_nav per book and session up to ``session`` (last valuation of each session), with the daily return
    ``daily_pnl / (nav - daily_pnl)`` (NaN on the inception row)."""
    nav = wh.query(
        "SELECT as_of_date, as_of, book, nav, daily_pnl, previous_as_of FROM risk.book_nav WHERE as_of_date <= ? "
        "ORDER BY book, as_of_date, as_of",
        [session],
    ).drop_duplicates(["book", "as_of_date"], keep="last")
    start = nav["nav"].astype(float) - nav["daily_pnl"].astype(float)
    nav["start_nav"] = start
    nav["ret"] = np.where(nav["previous_as_of"].notna(), nav["daily_pnl"].astype(float) / start, np.nan)
    return nav.reset_index(drop=True)


def strategy_pnl(wh: Warehouse, session: dt.date, as_of: pd.Timestamp, nav: pd.DataFrame) -> pd.DataFrame:
    """Today's P&L per book and strategy: the previous valuation's positions revalued at ``as_of`` (as book_nav
    does), and 'unattributed' = the book's daily P&L minus their sum (fills, positions without a label)."""
    prev_as_of = latest_as_of(wh, "position_greeks", session, before=True)
    today = nav[nav["as_of_date"] == session].set_index("book")
    if prev_as_of is None or today["previous_as_of"].isna().all():
        return pd.DataFrame(columns=["book", "strategy", "pnl"])
    prev = wh.read("position_greeks", {"as_of": prev_as_of}).reset_index(drop=True)
    now = value_positions(wh, session, as_of, positions=prev[POSITION_COLUMNS], allow_expired=True, price_only=True)
    moved = pd.DataFrame(
        {
            "book": prev["book"],
            "strategy": prev["strategy"],
            "pnl": now["market_value"].to_numpy(float) - prev["market_value"].to_numpy(float),
        }
    )
    out = moved.groupby(["book", "strategy"], as_index=False)["pnl"].sum()
    rest = today["daily_pnl"].astype(float).sub(out.groupby("book")["pnl"].sum(), fill_value=0.0)
    rest = rest[today["previous_as_of"].notna().reindex(rest.index, fill_value=False)]
    extra = pd.DataFrame({"book": rest.index, "strategy": "unattributed", "pnl": rest.to_numpy(float)})
    return pd.concat([out, extra], ignore_index=True)


def returns_row(label: str, r: np.ndarray, pnl: np.ndarray, dates: list[dt.date], ann: int) -> dict[str, Any]:
    """One 'returns' row: the window's returns ratios (NaN -> NULL)."""
    m = perf.returns_metrics(r, ann)
    row: dict[str, Any] = {k: _num(v) for k, v in m.as_dict().items() if k != "n_obs"}
    row["max_drawdown_duration_sessions"] = m.max_drawdown_duration_sessions if m.n_obs else None
    row.update(window=label, kind="returns", n_obs=m.n_obs, pnl=_num(np.nansum(pnl)) if pnl.size else None)
    row["window_start"] = dates[0] if dates else None
    return row


def window_slices(n: int) -> Iterator[tuple[str, slice]]:
    """Each window's slice of a series of ``n`` sessions ending today."""
    for label, size in WINDOWS:
        yield label, slice(max(0, n - size) if size else 0, n)


# ----------------------------------------------------------------------------------------------- controls
def control_events(wh: Warehouse, since: dt.date, session: dt.date) -> list[dict[str, Any]]:
    """Control events of sessions in [since, session]: each with the book, valuation, type, id, the static
    book's positions (position_greeks rows) and the control's trades (position_id -> signed quantity change)."""
    events: list[dict[str, Any]] = []
    states = _read(wh, "trading_state")
    if len(states):
        states = states[pd.to_datetime(states["as_of"], utc=True).dt.tz_convert("America/New_York").dt.date <= session]
    states = states.sort_values(["book", "as_of"])
    for book, g in states.groupby("book"):
        level = g["preservation_level"].to_numpy(str)
        entered = (level != "none") & np.concatenate(([True], level[1:] != level[:-1]))
        for r in g[entered].itertuples():
            day = pd.Timestamp(r.as_of).tz_convert("America/New_York").date()
            if day >= since:
                events.append({"type": "capital_preservation", "book": book, "as_of": r.as_of,
                               "id": f"{r.preservation_level}:{r.state}", "reason": r.reason})  # fmt: skip
    recs = _read(wh, "hedge_recommendations", {"as_of_date": Between(since, session)})
    recs = recs[(recs["kind"] != "none") & (recs["quantity"].astype(float) > 0)]
    for (book, as_of), g in recs.groupby(["book", "as_of"]):
        events.append({"type": "hedge", "book": book, "as_of": as_of, "id": ",".join(g["hedge_id"]),
                       "lines": g, "explicit_cost": float(g["total_cost"].iloc[0])})  # fmt: skip
    gaps = _read(wh, "gap_risk_actions")
    gaps = gaps[gaps["trades"].notna()]
    for r in gaps.itertuples():
        day = pd.Timestamp(r.as_of).tz_convert("America/New_York").date()
        if since <= day <= session:
            trades = {t["position_id"]: float(t["trade_quantity"]) for t in json.loads(r.trades)}
            if trades:
                events.append({"type": "gap_risk", "book": r.book, "as_of": r.as_of,
                               "id": f"{r.event_id}:{r.symbol}:{r.action}", "trades": trades})  # fmt: skip
    for e in events:
        if e["type"] == "capital_preservation":
            red = _read(wh, "required_reductions", {"as_of": e["as_of"], "book": e["book"]})
            # reduce_quantity is signed toward zero (positive sells a long): the change is its negative
            e["trades"] = dict(zip(red["position_id"], -red["reduce_quantity"].astype(float), strict=True))
    return events


def hedge_lines_as_positions(lines: pd.DataFrame) -> pd.DataFrame:
    """Recommended hedge lines as positions (buy > 0); the index line of a beta hedge is a stock-like line."""
    sign = np.where(lines["side"].eq("sell"), -1.0, 1.0)
    return pd.DataFrame(
        {
            "book": lines["book"].to_numpy(),
            "position_id": ("hedge:" + lines["hedge_id"]).to_numpy(),
            # the index line of a beta hedge is valued like a stock at the index level; futures and ETFs at their quotes
            "instrument_type": lines["instrument_type"].replace({"index": "stock"}).to_numpy(),
            "symbol": lines["symbol"].to_numpy(),
            "expiry": lines["expiry"].to_numpy(),
            "strike": lines["strike"].to_numpy(),
            "option_type": lines["option_type"].to_numpy(),
            "exercise_style": lines["exercise_style"].to_numpy(),
            "quantity": sign * lines["quantity"].to_numpy(float),
            "multiplier": lines["multiplier"].fillna(1.0).to_numpy(float),
            "strategy": "hedge_recommendation",
            "sector": None,
        }
    )


def judge_events(wh: Warehouse, events: list[dict[str, Any]], session: dt.date, horizon: int) -> list[dict[str, Any]]:
    """Each event's ControlEffect over the valuations after it up to ``session`` (at most ``horizon``).

    One ``value_positions`` call per valuation session for all events at once: every event contributes its
    trade delta (``d<k>:``) and, once per (book, valuation) of its events, the static book (``s<j>:``, ``j`` the
    first such event) with prefixed position ids.
    """
    if not events:
        return []
    books, deltas = [], []
    static_of: dict[tuple[str, pd.Timestamp], int] = {}  # (book, as_of) -> the first event's k
    for k, e in enumerate(events):
        j = static_of.setdefault((e["book"], pd.Timestamp(e["as_of"])), k)
        static = wh.read("position_greeks", {"as_of": e["as_of"], "book": e["book"]})[POSITION_COLUMNS]
        static = static.assign(position_id=f"s{j}:" + static["position_id"])
        if e["type"] == "hedge":
            delta = hedge_lines_as_positions(e["lines"])
        else:
            held = static.assign(position_id=static["position_id"].str.split(":", n=1).str[1])
            change = held["position_id"].map(e.get("trades", {})).fillna(0.0).to_numpy(float)
            delta = held.assign(quantity=change)[change != 0]
        if j == k:  # another event of the same book and valuation shares this static book
            books.append(static)
        deltas.append(delta.assign(position_id=f"d{k}:" + delta["position_id"].astype(str)))
    first = min(pd.Timestamp(e["as_of"]).tz_convert("America/New_York").date() for e in events)
    days = [d for d in xnys_sessions(first, session)]
    frame = pd.concat([*books, *deltas], ignore_index=True)
    frame = frame[frame["quantity"].astype(float) != 0].reset_index(drop=True)
    prefix = frame["position_id"].str.split(":", n=1).str[0]
    values: dict[dt.date, tuple[pd.Timestamp, pd.Series]] = {}
    notes: dict[dt.date, str] = {}
    for day in days:
        as_of = latest_as_of(wh, "position_greeks", day)
        if as_of is None:
            continue
        try:
            revalued = value_positions(wh, day, as_of, positions=frame, allow_expired=True, price_only=True)
            mv = revalued["market_value"].to_numpy(float)
        except RiskDataError as exc:  # an input of that valuation is missing: the events' paths stop before it
            notes[day] = str(exc)
            continue
        values[day] = (as_of, pd.Series(mv).groupby(prefix.to_numpy()).sum())
    out = []
    for k, e in enumerate(events):
        day0 = pd.Timestamp(e["as_of"]).tz_convert("America/New_York").date()
        valued = [d for d in days if d >= day0 and as_of_known(d, values, notes)][: horizon + 1]
        path = valued[: next((i for i, d in enumerate(valued) if d in notes), len(valued))]
        j = static_of[(e["book"], pd.Timestamp(e["as_of"]))]
        s = np.array([values[d][1].get(f"s{j}", 0.0) for d in path])
        d = np.array([values[d][1].get(f"d{k}", 0.0) for d in path])
        without = np.diff(s)
        with_ = without + np.diff(d)
        effect = perf.control_effect(with_, without, e.get("explicit_cost", 0.0))
        out.append(
            {
                "type": e["type"],
                "book": e["book"],
                "as_of": pd.Timestamp(e["as_of"]).isoformat(),
                "session": day0.isoformat(),
                "id": e["id"],
                "trades": {str(p): q for p, q in e.get("trades", {}).items()} if e["type"] != "hedge" else None,
                "valuations": [values[x][0].isoformat() for x in path],
                "note": next((f"{x}: {notes[x]}" for x in valued if x in notes), None),
                **effect.as_dict(),
            }
        )
    return out


def judge_from(session: dt.date, previous: dt.date | None, horizon: int, window_start: dt.date) -> dt.date:
    """First session whose control events ``session``'s partition judges; earlier ones are carried over from the
    previous partition (of session ``previous``), where their horizon was already over.

    At ``previous`` an event was complete when ``horizon`` sessions followed it, i.e. it was at or before the
    (horizon+1)-th last session up to ``previous``; judging starts at the session after that one (with
    consecutive partitions: the (horizon+1)-th last session up to ``session``). Without a previous partition
    every event from ``window_start`` (the cache window's first session) on is judged.
    """
    if previous is None:
        return window_start
    days = xnys_sessions(previous - dt.timedelta(days=3 * horizon + 10), session)
    complete = [d for d in days if d <= previous][-(horizon + 1)]
    return max(next(d for d in days if d > complete), window_start)


def as_of_known(day: dt.date, values: dict[dt.date, Any], notes: dict[dt.date, str]) -> bool:
    """The session has a valuation (valued, or failed with a note)."""
    return day in values or day in notes


def held_hedge_effect(hp: pd.DataFrame, book: str, dates: list[dt.date], book_pnl: np.ndarray) -> dict[str, Any] | None:
    """The book's held hedges over a window (``hp``: the book's hedge_performance '*' rows): P&L with them = the
    book's, without = the book's minus the hedges' daily P&L; their decay is in that P&L, so no explicit cost is
    added."""
    if hp.empty or not dates:
        return None
    hp = hp.sort_values("as_of").drop_duplicates("as_of_date", keep="last").set_index("as_of_date")
    hedge = np.array([_num(hp["hedge_pnl_day"].get(d)) or 0.0 for d in dates])
    effect = perf.control_effect(book_pnl, book_pnl - hedge, 0.0)
    return {"type": "held_hedges", "book": book, **effect.as_dict()}


def control_row(label: str, effects: list[dict[str, Any]], horizon: int) -> dict[str, Any]:
    """One 'control' row summarizing events (each a ControlEffect dict)."""
    fx = [perf.ControlEffect(**{k: e[k] for k in perf.ControlEffect.__dataclass_fields__}) for e in effects]
    s = perf.summarize_controls(fx)
    judged = [e for e in fx if e.n_sessions > 0]
    return {
        "window": label,
        "kind": "control",
        "n_obs": len(effects),
        "horizon_sessions": horizon,
        "pnl_with": _num(sum(e.pnl_with for e in judged)) if judged else None,
        "pnl_without": _num(sum(e.pnl_without for e in judged)) if judged else None,
        "control_difference": _num(s.difference),
        "drawdown_reduction": _num(s.drawdown_reduction),
        "pnl_given_up": _num(s.pnl_given_up),
        "explicit_cost": _num(s.explicit_cost),
        "net_benefit": _num(s.net_benefit),
        "share_paid": _num(s.share_paid),
        "events": json.dumps(effects, default=str),
        "window_start": min((dt.date.fromisoformat(e["session"]) for e in effects), default=None),
    }


# -------------------------------------------------------------------------------------------- trades, stops
#: strikes of an execution and a quote within this (USD per share) are the same contract
STRIKE_TOLERANCE = 1e-6


def option_marks(wh: Warehouse, trips: pd.DataFrame) -> pd.DataFrame:
    """Quote mids ``(bid + ask) / 2`` of each option trip's contract at the ``option_quotes`` snapshots strictly
    between its opening and its closing fill (columns ``row``: the trip's position in ``trips``, ``mid``).

    ``trips`` has symbol, expiry, strike, option_type, entry_at, exit_at. One query for all trips: a clause per
    contract over [its first entry, its last exit]; each trip then keeps the snapshots inside its own holding.
    No high/low is stored for an option, so the mids are its price path (the fills are added by the caller).
    """
    t = trips.assign(
        row=np.arange(len(trips)),
        entry_at=pd.to_datetime(trips["entry_at"], utc=True),
        exit_at=pd.to_datetime(trips["exit_at"], utc=True),
        expiry=pd.to_datetime(trips["expiry"]).dt.date,
    )
    contracts = t.groupby(["symbol", "expiry", "strike", "option_type"], as_index=False).agg(
        t0=("entry_at", "min"), t1=("exit_at", "max")
    )
    clause = (
        "(underlying = ? AND expiry = ? AND option_type = ? AND strike BETWEEN ? AND ? AND as_of > ? AND as_of < ?)"
    )
    params: list[Any] = []
    for c in contracts.itertuples():
        params += [c.symbol, c.expiry, c.option_type, c.strike - STRIKE_TOLERANCE, c.strike + STRIKE_TOLERANCE,
                   c.t0, c.t1]  # fmt: skip
    quotes = wh.query(
        "SELECT as_of, underlying AS symbol, expiry, strike, option_type, (bid + ask) / 2 AS mid "
        f"FROM risk.option_quotes WHERE {' OR '.join([clause] * len(contracts))}",
        params,
    )
    if quotes.empty:
        return pd.DataFrame({"row": np.array([], dtype=np.int64), "mid": np.array([], dtype=float)})
    quotes = quotes.assign(
        as_of=pd.to_datetime(quotes["as_of"], utc=True),
        expiry=pd.to_datetime(quotes["expiry"]).dt.date,
        strike=quotes["strike"].astype(float).round(6),
    )
    both = t.assign(strike=t["strike"].round(6)).merge(quotes, on=["symbol", "expiry", "strike", "option_type"])
    inside = both[(both["as_of"] > both["entry_at"]) & (both["as_of"] < both["exit_at"])]
    return inside[["row", "mid"]].reset_index(drop=True)


def trade_rows(wh: Warehouse, book: str, session: dt.date, as_of: pd.Timestamp, horizon: int) -> list[dict]:
    """'trades' (closed round trips of executions) and 'stops' (position_stops hits) rows, one per window.

    MFE/MAE of a trip: stock-like instruments over the symbol's daily highs and lows (``perf.excursions``);
    options over entry fill, quote mids while held and exit fill (``option_marks``, ``perf.path_excursions``).
    """
    days = list(xnys_sessions(session - dt.timedelta(days=400), session))
    rows: list[dict[str, Any]] = []
    fills = _read(wh, "executions", {"book": book})
    fills = fills[fills["at"] <= as_of].sort_values(["at", "execution_id"])
    trips: list[dict[str, Any]] = []
    if len(fills):
        # the instrument as text; a missing part (a stock's expiry) is "" (pandas 3 keeps None as NaN through
        # astype(str), which made a stock's key NaN and dropped its trips from the groupby)
        parts = ["symbol", "instrument_type", "expiry", "strike", "option_type"]
        text = [fills[c].astype(object).where(fills[c].notna(), "").astype(str) for c in parts]
        fills = fills.assign(key=text[0].str.cat(text[1:], sep="|"))
        bars = wh.read(
            "market_prices", {"symbol": sorted(set(fills["symbol"])), "as_of_date": Between(days[0], session)}
        )
        options: list[dict[str, Any]] = []  # option trips: MFE/MAE from their quotes, one query below
        for key, g in fills.groupby("key"):
            signed = np.where(g["side"].eq("buy"), 1.0, -1.0) * g["quantity"].to_numpy(float)
            rt = perf.round_trips(signed, g["price"].to_numpy(float), float(g["multiplier"].iloc[0]))
            dates, at = g["as_of_date"].to_numpy(), list(g["at"])
            sym_bars = bars[bars["symbol"] == g["symbol"].iloc[0]].set_index("as_of_date").sort_index()
            stock = g["instrument_type"].iloc[0] != "option"
            for i in range(rt.n):
                i0, i1 = int(rt.entry_index[i]), int(rt.exit_index[i])
                d0, d1 = dates[i0], dates[i1]
                mfe, mae = math.nan, math.nan
                if stock:
                    held = sym_bars.loc[d0:d1]
                    mfe, mae = perf.excursions(rt.side[i], rt.entry_price[i], held["high"], held["low"])
                else:  # filled in below from the option's quote mids
                    first = g.iloc[0]
                    options.append({"trip": len(trips), "symbol": first["symbol"], "expiry": first["expiry"],
                                    "strike": float(first["strike"]), "option_type": first["option_type"],
                                    "entry_at": at[i0], "exit_at": at[i1], "side": rt.side[i],
                                    "entry_price": rt.entry_price[i], "exit_price": rt.exit_price[i]})  # fmt: skip
                trips.append({"instrument": key, "entry_date": d0, "exit_date": d1, "side": rt.side[i],
                              "quantity": rt.quantity[i], "entry_price": rt.entry_price[i],
                              "exit_price": rt.exit_price[i], "pnl": rt.pnl[i], "mfe": _num(mfe), "mae": _num(mae),
                              "holding_sessions": len(xnys_sessions(d0, d1)) - 1})  # fmt: skip
        if options:
            held_options = pd.DataFrame(options)
            marks = option_marks(wh, held_options)
            mfe_o, mae_o = perf.path_excursions(
                held_options["side"], held_options["entry_price"], held_options["exit_price"],
                marks["row"], marks["mid"],
            )  # fmt: skip
            for j, t in enumerate(held_options["trip"]):
                trips[t]["mfe"], trips[t]["mae"] = _num(mfe_o[j]), _num(mae_o[j])
    stops = _read(wh, "position_stops", {"book": book, "as_of_date": Between(days[0], session)})
    hits = stops[stops["hit"].astype(bool)].sort_values("as_of")
    outcomes: list[dict[str, Any]] = []
    if len(hits):
        window = {"symbol": sorted(set(hits["symbol"])), "as_of_date": Between(days[0], session)}
        closes = wh.read("market_prices", window)
        wide = closes.pivot(index="as_of_date", columns="symbol", values="close").sort_index()
        for r in hits.itertuples():
            after = wide.loc[wide.index > r.as_of_date, r.symbol].iloc[:horizon] if r.symbol in wide else []
            later = float(after.iloc[-1]) if len(after) == horizon else math.nan
            stop = float(r.effective_stop_price)
            avoided = perf.stop_loss_avoided_pct([r.side], [stop], [later])[0]
            capture = (
                perf.trailing_capture([r.side], [r.entry_price], [r.best_price], [stop])[0]
                if r.trailing_active
                else math.nan
            )
            outcomes.append({"position_id": r.position_id, "symbol": r.symbol, "session": r.as_of_date,
                             "side": int(r.side), "stop_price": stop, "close_after": _num(later),
                             "loss_avoided_pct": _num(avoided), "trailing_capture": _num(capture)})  # fmt: skip
    first_exit = min((x["exit_date"] for x in trips), default=days[0])
    for label, size in WINDOWS[1:]:
        start = days[-size] if size and size <= len(days) else min(days[0], first_exit)
        t = [x for x in trips if x["exit_date"] >= start]
        m = perf.trade_metrics([x["pnl"] for x in t], [x["holding_sessions"] for x in t],
                               [x["mfe"] if x["mfe"] is not None else math.nan for x in t],
                               [x["mae"] if x["mae"] is not None else math.nan for x in t])  # fmt: skip
        rows.append({"strategy": "trades", "window": label, "kind": "trades", "n_obs": m.n_trades,
                     "pnl": _num(sum(x["pnl"] for x in t)) if t else None, "win_rate": _num(m.win_rate),
                     "average_holding_sessions": _num(m.average_holding_sessions),
                     "average_mfe": _num(m.average_mfe), "average_mae": _num(m.average_mae),
                     "window_start": start, "events": json.dumps(t, default=str)})  # fmt: skip
        o = [x for x in outcomes if x["session"] >= start]
        avoided = [x["loss_avoided_pct"] for x in o if x["loss_avoided_pct"] is not None]
        captured = [x["trailing_capture"] for x in o if x["trailing_capture"] is not None]
        rows.append({"strategy": "stops", "window": label, "kind": "trades", "n_obs": len(o),
                     "stop_loss_avoided_pct": _num(np.mean(avoided)) if avoided else None,
                     "trailing_capture": _num(np.mean(captured)) if captured else None,
                     "horizon_sessions": horizon, "window_start": start,
                     "events": json.dumps(o, default=str)})  # fmt: skip
    return rows


# -------------------------------------------------------------------------------------------------- asset
def analytics_rows(wh: Warehouse, session: dt.date, settings: AnalyticsSettings) -> pd.DataFrame:
    """Every performance_analytics row of one session's latest valuation."""
    as_of = latest_as_of(wh, "position_greeks", session)
    if as_of is None:
        raise RiskDataError(f"no position_greeks for {session}: value the books first")
    nav = book_returns(wh, session)
    today = nav[(nav["as_of_date"] == session) & (nav["as_of"] == as_of)]
    if today.empty:
        raise RiskDataError(f"no book_nav at {as_of.isoformat()} ({session}): run book_nav for the session first")
    horizon, ann = settings.horizon_sessions, settings.periods_per_year
    pnl_today = strategy_pnl(wh, session, as_of, nav)
    prev = wh.query(
        "SELECT MAX(as_of) AS t, MAX(as_of_date) AS d FROM risk.performance_analytics WHERE as_of_date < ?", [session]
    ) if wh.table_exists("performance_analytics") else None  # fmt: skip
    prev_as_of = prev["t"].iloc[0] if prev is not None else None
    prev_session = pd.Timestamp(prev["d"].iloc[0]).date() if prev is not None and pd.notna(prev_as_of) else None
    history = (
        wh.query(
            "SELECT as_of_date, book, strategy, pnl, as_of FROM risk.performance_analytics WHERE \"window\" = '1d' "
            "AND kind = 'returns' AND strategy <> '*' AND as_of_date < ? AND as_of_date >= ? ORDER BY as_of",
            [session, session - dt.timedelta(days=400)],
        ).drop_duplicates(["as_of_date", "book", "strategy"], keep="last")
        if prev_as_of is not None and pd.notna(prev_as_of)
        else pd.DataFrame(columns=["as_of_date", "book", "strategy", "pnl"])
    )
    # controls: completed events carried over from the previous partition, recent ones revalued
    all_days = xnys_sessions(session - dt.timedelta(days=400), session)
    cache_size = dict(CONTROL_WINDOWS)[CACHE_WINDOW]
    rejudge_from = judge_from(session, prev_session, horizon, all_days[-min(cache_size, len(all_days))])
    carried: list[dict[str, Any]] = []
    if prev_session is not None:
        prev_rows = wh.read("performance_analytics", {"as_of": prev_as_of, "window": CACHE_WINDOW, "kind": "control"})
        for ev in prev_rows["events"].dropna():
            carried += [e for e in json.loads(ev) if e.get("type") in CONTROL_TYPES and "session" in e]
    carried = [e for e in carried if dt.date.fromisoformat(e["session"]) < rejudge_from]
    judged = carried + judge_events(wh, control_events(wh, rejudge_from, session), session, horizon)
    rows: list[dict[str, Any]] = []
    for b in today.itertuples():
        book, book_nav_now = str(b.book), float(b.nav)
        hist = nav[nav["book"] == book]
        hist = hist[hist["ret"].notna()]
        r, p, dates = hist["ret"].to_numpy(float), hist["daily_pnl"].to_numpy(float), list(hist["as_of_date"])
        for label, sl in window_slices(len(r)):
            if label == "1d" and (not dates or dates[-1] != session):
                sl = slice(0, 0)
            rows.append({"strategy": "*", "book": book, **returns_row(label, r[sl], p[sl], dates[sl], ann)})
        # strategies: stored daily P&L plus today's, as contributions to the book's return
        start_nav = hist.set_index("as_of_date")["start_nav"]
        mine = pnl_today[pnl_today["book"] == book].assign(as_of_date=session)
        past = history[history["book"] == book][["as_of_date", "strategy", "pnl"]]
        both = pd.concat([past, mine[["as_of_date", "strategy", "pnl"]]], ignore_index=True)
        for strategy, g in both.groupby("strategy"):
            g = g.sort_values("as_of_date")
            g = g[g["as_of_date"].isin(start_nav.index)]
            sp = g["pnl"].to_numpy(float)
            sr = sp / start_nav.loc[g["as_of_date"]].to_numpy(float)
            sd = list(g["as_of_date"])
            for label, sl in window_slices(len(sr)):
                if label == "1d" and (not sd or sd[-1] != session):
                    sl = slice(0, 0)
                row = returns_row(label, sr[sl], sp[sl], sd[sl], ann)
                rows.append({"strategy": str(strategy), "book": book, **row})
        for t in trade_rows(wh, book, session, as_of, horizon):
            rows.append({"book": book, **t})
        for ctype in CONTROL_TYPES:
            mine_e = [e for e in judged if e["book"] == book and e["type"] == ctype]
            for label, size in CONTROL_WINDOWS:
                start = all_days[-size] if size <= len(all_days) else all_days[0]
                in_window = [e for e in mine_e if dt.date.fromisoformat(e["session"]) >= start]
                row = control_row(label, in_window, horizon)
                row["window_start"] = start
                rows.append({"strategy": f"control:{ctype}", "book": book, **row})
        held_rows = _read(wh, "hedge_performance", {"book": book, "position_id": "*"})  # read once for the windows
        for label, sl in window_slices(len(r)):
            if label == "1d":
                continue
            held = held_hedge_effect(held_rows, book, dates[sl], p[sl])
            if held is not None:
                row = control_row(label, [{**held, "session": dates[sl][0].isoformat()}], 0)
                row.update(n_obs=1, horizon_sessions=None, window_start=dates[sl][0])
                rows.append({"strategy": "control:held_hedges", "book": book, **row})
        for row in rows:
            if row["book"] == book:
                row.setdefault("nav", book_nav_now)
    inputs = json.dumps(
        {
            "valuation": as_of.isoformat(),
            "book_nav": "daily_pnl / (nav - daily_pnl) per session",
            "horizon_sessions": horizon,
            "periods_per_year": ann,
            "tables": [*UPSTREAM, "executions", "market_prices", "option_quotes"],
            "ratios": "empyrical-reloaded",
        }
    )
    frame = pd.DataFrame(rows).reindex(columns=table("performance_analytics").data_column_names)
    frame["as_of"], frame["as_of_date"], frame["inputs"] = as_of, session, inputs
    for c in frame.columns:
        if frame[c].dtype == object or frame[c].isna().any():
            frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    return frame


def analytics_checks(frame: pd.DataFrame) -> list[dg.AssetCheckResult]:
    """No infinite metric; each book's strategies' 1-day P&L sums to the book's."""
    numeric = frame.select_dtypes(include="number")
    values = pd.to_numeric(frame.drop(columns=["as_of", "as_of_date"]).stack(), errors="coerce").dropna()
    finite = bool(np.isfinite(values.to_numpy(float)).all()) if len(values) else True
    day = frame[(frame["window"] == "1d") & (frame["kind"] == "returns")]
    book = day[day["strategy"] == "*"].set_index("book")["pnl"].astype(float)
    parts = day[day["strategy"] != "*"].groupby("book")["pnl"].apply(lambda s: s.astype(float).sum())
    both = book.dropna().index.intersection(parts.index)
    gap = (book[both] - parts[both]).abs()
    ok = bool((gap <= 1e-6 * (1.0 + book[both].abs())).all())
    return [
        dg.AssetCheckResult(
            check_name="metrics_finite",
            asset_key="performance_analytics",
            passed=finite,
            metadata={"numeric_columns": len(numeric.columns)},
        ),
        dg.AssetCheckResult(
            check_name="strategies_sum_to_book",
            asset_key="performance_analytics",
            passed=ok,
            metadata={"largest_gap_usd": float(gap.max()) if len(gap) else 0.0},
        ),
    ]


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        *VALUATION_INPUTS,
        *UPSTREAM,
        # stored daily strategy P&L and completed control events carry over from the previous session
        dg.AssetDep("performance_analytics", partition_mapping=PREVIOUS_SESSION),
    ],
    kinds={"pandas"},
    owners=OWNERS,
    check_specs=[
        session_check_spec(
            "metrics_finite", asset="performance_analytics", blocking=True, description="No infinite metric."
        ),
        session_check_spec(
            "strategies_sum_to_book",
            asset="performance_analytics",
            blocking=True,
            description="Each book's strategies' 1-day P&L (with 'unattributed') sums to book_nav's daily P&L.",
        ),
    ],
    description=(
        "Per book and strategy, daily with 1d/21d/63d/252d/inception windows: returns ratios (empyrical), trades "
        "and stops, and the effectiveness of capital-preservation episodes, hedges and gap-risk actions on a "
        "counterfactual static book."
    ),
    metadata=table_definition_metadata("performance_analytics"),
)
@fail_closed
def performance_analytics(
    context: dg.AssetExecutionContext, config: AnalyticsSettings, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    wh = warehouse.get()
    sessions = partition_sessions(context)
    for session in sessions[:-1]:  # a range: each session carries over from the previous one, so it is
        frame = analytics_rows(wh, session, config)  # published (checks first) before the next is computed
        part = [{"as_of": frame["as_of"].iloc[0]}]
        checks = analytics_checks(frame)
        if not all(c.passed for c in checks):  # publish fails the step and writes nothing
            yield from publish(context, wh, [TableWrite("performance_analytics", frame, part)], checks=checks)
        wh.write("performance_analytics", frame, run_id=context.run.run_id, partitions=part)
    last = analytics_rows(wh, sessions[-1], config)
    shown = last[(last["window"] == "63d") & (last["kind"] != "trades")]
    yield from publish(
        context,
        wh,
        [TableWrite("performance_analytics", last, [{"as_of": last["as_of"].iloc[0]}])],
        checks=analytics_checks(last),
        metadata={
            "performance_analytics": {
                "63d": dg.MetadataValue.md(
                    markdown_table(
                        shown[["book", "strategy", "n_obs", "pnl", "sharpe_ratio", "max_drawdown", "net_benefit"]],
                        30,
                    )
                )
            }
        },
    )
