"""Event gap risk: per upcoming event, the book's loss over the empirical past event-day moves."""

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.contracts import table
from risk_pipeline.defs.common import OWNERS, PARTITIONS, fail_closed, markdown_table, table_definition_metadata
from risk_pipeline.defs.risk.var import book_portfolio
from risk_pipeline.errors import RiskDataError
from risk_pipeline.event_windows import event_move_history, live_events, trading_days_until
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.smile_dynamics import EarningsVolCrush, earnings_vol_crush
from risk_pipeline.quant.stress import GapEvent, event_gap_risk
from risk_pipeline.queries import latest_as_of
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Warehouse

#: American options in the event scenarios: the same method as the gap-risk actions (quant/gap_risk.py).
AMERICAN = "eep_grid"


class EventRiskSettings(dg.Config):
    """How far ahead events count, the index that market-wide events move, and the loss quantile."""

    horizon_sessions: int = 10
    index_symbol: str = "SYNX"
    confidence: float = 0.95


def event_day_moves(
    wh: Warehouse, until: dt.date, symbols: list[str], index_symbol: str, calendar: pd.DataFrame | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Past close-to-close moves on event days: per symbol on earnings, of the index per market-wide type.

    Without ``calendar`` only the days ``market_prices.event_flag`` marks; with it also the reaction sessions
    of the calendar's past events (``event_windows.event_move_history``).
    """
    history = event_move_history(wh, until, symbols, index_symbol, calendar)
    return history.symbol_moves, history.market_moves


def upcoming_events(calendar: pd.DataFrame, session: dt.date, as_of: pd.Timestamp, horizon: int) -> pd.DataFrame:
    """Events after ``as_of`` whose reaction session is within ``horizon`` sessions of ``session`` (cancelled
    releases excluded), with ``trading_days_until``."""
    events = live_events(calendar)
    events = events[events["event_time"] > as_of].copy()
    events["trading_days_until"] = trading_days_until(session, events["reaction_session"])
    return events[events["trading_days_until"] <= horizon]


def earnings_crush(
    portfolio: Portfolio,
    events: pd.DataFrame,
    todo: list[GapEvent],
    symbol_moves: dict[str, np.ndarray],
    session: dt.date,
) -> dict[str, EarningsVolCrush]:
    """Per earnings event of a held name: the post-earnings crush of its options' vols in the event's scenarios
    (``smile_dynamics.earnings_vol_crush``, as gap VaR and the gap-risk actions use it)."""
    reaction = events.set_index("event_id")["reaction_session"]
    out = {}
    for ev in todo:
        if ev.symbol is None or ev.event_type != "earnings" or ev.symbol not in symbol_moves:
            continue
        years = (reaction[ev.event_id] - session).days / 365.0
        crush = earnings_vol_crush(portfolio, ev.symbol, symbol_moves[ev.symbol], years, ev.event_id)
        if crush is not None:
            out[ev.event_id] = crush
    return out


@dg.asset(
    group_name="risk",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["position_greeks", "event_calendar", "market_prices"],
    kinds={"pandas", "numba"},
    owners=OWNERS,
    description=(
        "For every book and every event whose reaction session is in the next sessions (earnings of a held "
        "underlying; FOMC, CPI, payrolls, PPI, GDP, option expiration and other market-wide events), the book "
        "fully revalued under each past event-day move of that underlying (or of the index on that type of day, "
        "mapped by beta): expected loss, 95 % loss, expected shortfall and worst case. Earnings scenarios also "
        "crush the reporting name's implied vols: the event variance leaves every option expiring after the "
        "reaction (moves_source says so)."
    ),
    metadata=table_definition_metadata("event_risk"),
)
@fail_closed
def event_risk(
    context: dg.AssetExecutionContext, config: EventRiskSettings, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    wh = warehouse.get()
    frames = []
    snapshots = []
    calendar = wh.read("event_calendar")
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of = latest_as_of(wh, "position_greeks", session)
        if as_of is None:
            raise RiskDataError(f"no position_greeks for {key}: value the books first")
        snapshots.append(as_of)
        events = upcoming_events(calendar, session, as_of, config.horizon_sessions)
        positions = wh.read("position_greeks", {"as_of": as_of})
        symbol_moves, market_moves = event_day_moves(
            wh, session, sorted(positions["symbol"].unique()), config.index_symbol, calendar
        )
        for book, rows in positions.groupby("book", sort=True):
            rows = rows.reset_index(drop=True)
            portfolio = book_portfolio(rows)
            held = set(portfolio.symbols)
            todo = [
                GapEvent(e.event_id, e.event_type, None if pd.isna(e.symbol) else e.symbol)
                for e in events.itertuples()
                if (pd.isna(e.symbol) and e.event_type in market_moves) or (e.symbol in held)
            ]
            betas = rows.groupby("symbol")["beta"].first().reindex(list(portfolio.symbols)).fillna(1.0).to_numpy()
            crush = earnings_crush(portfolio, events, todo, symbol_moves, session)
            results = event_gap_risk(
                portfolio,
                todo,
                symbol_moves,
                market_moves,
                betas,
                confidence=config.confidence,
                vol_dynamics=crush,
                american=AMERICAN,
            )
            if not results:
                continue
            frame = pd.DataFrame([r.to_row() for r in results])
            info = events.set_index("event_id")
            frame["event_time"] = frame["event_id"].map(info["event_time"])
            frame["trading_days_until"] = frame["event_id"].map(info["trading_days_until"]).astype(np.int64)
            frame["moves_source"] = np.where(
                frame["symbol"].isna(),
                "index " + config.index_symbol + " on past " + frame["event_type"] + " reaction sessions "
                "(market_prices.event_flag and event_calendar)",
                "the symbol on past earnings reaction sessions (market_prices.event_flag and event_calendar)",
            )
            labels = frame["event_id"].map({k: v.label for k, v in crush.items()})
            frame["moves_source"] = np.where(
                labels.notna(), frame["moves_source"] + "; " + labels.fillna(""), frame["moves_source"]
            )
            frame.insert(0, "book", book)
            frame.insert(0, "as_of", as_of)
            frames.append(frame)
    out = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=table("event_risk").data_column_names)
    )
    written = wh.write("event_risk", out, run_id=context.run.run_id, partitions=[{"as_of": t} for t in snapshots])
    top = out.sort_values("loss_quantile", ascending=False).head(10) if len(out) else out
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "largest_event_losses": dg.MetadataValue.md(
                markdown_table(
                    top[["book", "event_id", "trading_days_until", "n_scenarios", "loss_quantile", "worst_loss"]].round(
                        0
                    ),
                    10,
                )
                if len(top)
                else "(no event within the horizon)"
            ),
            "event_types": ", ".join(sorted(set(out["event_type"]))) if len(out) else "none",
            "run_id": context.run.run_id,
        }
    )
