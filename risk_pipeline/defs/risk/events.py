"""Event gap risk: per upcoming event, the book's loss over the empirical past event-day moves."""

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.calendar import sessions
from risk_pipeline.contracts import table
from risk_pipeline.defs.common import OWNERS, PARTITIONS, markdown_table, table_definition_metadata
from risk_pipeline.defs.risk.var import book_portfolio
from risk_pipeline.quant.stress import GapEvent, event_gap_risk
from risk_pipeline.queries import latest_as_of
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Between, Warehouse


class EventRiskSettings(dg.Config):
    """How far ahead events count, the index that macro events move, and the loss quantile."""

    horizon_sessions: int = 10
    index_symbol: str = "SYNX"
    confidence: float = 0.95


def event_day_moves(
    wh: Warehouse, until: dt.date, symbols: list[str], index_symbol: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Past close-to-close moves on flagged event days: per symbol on earnings, of the index on FOMC/CPI."""
    bars = wh.read(
        "market_prices",
        {"as_of_date": Between(dt.date(1900, 1, 1), until), "symbol": sorted({*symbols, index_symbol})},
        columns=["as_of_date", "symbol", "close", "event_flag"],
    )
    bars["move"] = bars.groupby("symbol")["close"].pct_change()
    flags = bars["event_flag"].fillna("")
    symbol_moves = {s: g["move"].dropna().to_numpy() for s, g in bars[flags.str.contains("earnings")].groupby("symbol")}
    index = bars[bars["symbol"] == index_symbol]
    market_moves = {
        kind: index.loc[flags[index.index].str.contains(kind), "move"].dropna().to_numpy() for kind in ("fomc", "cpi")
    }
    return {k: v for k, v in symbol_moves.items() if v.size}, {k: v for k, v in market_moves.items() if v.size}


@dg.asset(
    group_name="risk",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["position_greeks", "event_calendar", "market_prices"],
    kinds={"pandas", "numba"},
    owners=OWNERS,
    description=(
        "For every book and every event in the next sessions (earnings of a held underlying; FOMC and CPI), the "
        "book fully revalued under each past event-day move of that underlying (or of the index, mapped by beta): "
        "expected loss, 95 % loss, expected shortfall and worst case."
    ),
    metadata=table_definition_metadata("event_risk"),
)
def event_risk(
    context: dg.AssetExecutionContext, config: EventRiskSettings, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    wh = warehouse.get()
    frames = []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of = latest_as_of(wh, "position_greeks", session)
        if as_of is None:
            raise dg.Failure(f"no position_greeks for {key}")
        ahead = sessions(session, session + dt.timedelta(days=3 * config.horizon_sessions))[
            : config.horizon_sessions + 1
        ]
        horizon_end = pd.Timestamp(ahead[-1] + dt.timedelta(days=1), tz="America/New_York").tz_convert("UTC")
        events = wh.read("event_calendar")
        events = events[(events["event_time"] > as_of) & (events["event_time"] < horizon_end)]
        events = events[~events["notes"].fillna("").str.contains("cancelled")]
        positions = wh.read("position_greeks", {"as_of": as_of})
        symbol_moves, market_moves = event_day_moves(
            wh, session, sorted(positions["symbol"].unique()), config.index_symbol
        )
        for book, rows in positions.groupby("book", sort=True):
            rows = rows.reset_index(drop=True)
            portfolio = book_portfolio(rows)
            held = set(portfolio.symbols)
            todo = [
                GapEvent(e.event_id, e.event_type, e.symbol)
                for e in events.itertuples()
                if (e.symbol is None and e.event_type in market_moves) or (e.symbol in held)
            ]
            betas = rows.groupby("symbol")["beta"].first().reindex(list(portfolio.symbols)).fillna(1.0).to_numpy()
            results = event_gap_risk(portfolio, todo, symbol_moves, market_moves, betas, confidence=config.confidence)
            if not results:
                continue
            frame = pd.DataFrame([r.to_row() for r in results])
            info = events.set_index("event_id")
            frame["event_time"] = frame["event_id"].map(info["event_time"])
            frame["trading_days_until"] = [
                len(sessions(session, t.tz_convert("America/New_York").date())) - 1 for t in frame["event_time"]
            ]
            frame["moves_source"] = np.where(
                frame["symbol"].isna(),
                "index " + config.index_symbol + " on past " + frame["event_type"] + " days (market_prices.event_flag)",
                "the symbol on past earnings days (market_prices.event_flag)",
            )
            frame.insert(0, "book", book)
            frame.insert(0, "as_of", as_of)
            frames.append(frame)
    out = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=table("event_risk").data_column_names)
    )
    snapshots = [latest_as_of(wh, "position_greeks", dt.date.fromisoformat(k)) for k in context.partition_keys]
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
            "run_id": context.run.run_id,
        }
    )
