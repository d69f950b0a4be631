"""Backtest of each book's realized daily P&L against the previous valuation's VaR."""

import datetime as dt

import dagster as dg
import pandas as pd

from risk_pipeline.contracts import table
from risk_pipeline.defs.common import OWNERS, PARTITIONS, markdown_table, table_definition_metadata
from risk_pipeline.quant.backtest import backtest_exceptions
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Warehouse

WINDOW = 250
CONFIDENCE = 0.99


def book_series(wh: Warehouse, book: str, until: dt.date) -> pd.DataFrame:
    """Per end-of-day valuation: the day's realized P&L and every method's 1-day 99 % VaR of the day before."""
    nav = wh.query(
        "SELECT n.as_of, n.as_of_date, n.daily_pnl, n.pnl_basis FROM risk.book_nav n WHERE n.book = ? "
        "AND n.as_of_date <= ? AND n.as_of = (SELECT MAX(m.as_of) FROM risk.book_nav m "
        "WHERE m.book = n.book AND m.as_of_date = n.as_of_date) ORDER BY n.as_of",
        [book, until],
    )
    var = wh.query(
        "SELECT as_of, method, var FROM risk.var_results WHERE book = ? AND horizon_days = 1 AND confidence = ?",
        [book, CONFIDENCE],
    )
    if nav.empty or var.empty:
        return pd.DataFrame()
    wide = var.pivot(index="as_of", columns="method", values="var")
    nav["previous_as_of"] = nav["as_of"].shift(1)
    nav = nav[~nav["pnl_basis"].str.startswith("inception")].dropna(subset=["previous_as_of"])
    return nav.join(wide, on="previous_as_of").dropna(subset=list(wide.columns), how="all")


@dg.asset(
    group_name="risk",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["book_nav", "var_results"],
    kinds={"pandas", "scipy"},
    owners=OWNERS,
    description=(
        "Each book's realized daily P&L (book_nav) against the previous end-of-day 1-day 99 % VaR of every "
        "method, over the last 250 observations (fewer while the history is short): exceptions, Kupiec, "
        "Christoffersen, conditional coverage and the Basel traffic light. Reference backtests on the S&P 500 "
        "come from `risk-pipeline var-backtest`."
    ),
    metadata=table_definition_metadata("var_backtest"),
)
def var_backtest(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.get()
    until = dt.date.fromisoformat(context.partition_keys[-1])
    books = wh.query("SELECT DISTINCT book FROM risk.book_nav WHERE as_of_date <= ?", [until])["book"].tolist()
    written, summary = 0, []
    for book in sorted(books):
        series = book_series(wh, book, until)
        methods = [
            c
            for c in series.columns
            if c in ("historical", "delta_normal", "delta_gamma_cornish_fisher", "monte_carlo_fhs")
        ]
        rows = []
        for end in range(len(series)):
            window = series.iloc[max(0, end - WINDOW + 1) : end + 1]
            for method in methods:
                ok = window[method].notna()
                if not ok.any():
                    continue
                exc = (window.loc[ok, "daily_pnl"] < -window.loc[ok, method]).to_numpy()
                r = backtest_exceptions(exc, CONFIDENCE)
                rows.append(
                    {
                        **r.to_row(),
                        "window_end": window["as_of_date"].iloc[-1],
                        "window_start": window["as_of_date"].iloc[0],
                        "book": book,
                        "method": method,
                        "expected_exceptions": r.expected_exceptions,
                        "source": "book_nav.daily_pnl against the previous valuation's var_results",
                    }
                )
        frame = pd.DataFrame(rows, columns=table("var_backtest").data_column_names)
        written += wh.write("var_backtest", frame, run_id=context.run.run_id, partitions=[{"book": book}])
        if len(frame):
            last = frame[frame["window_end"] == frame["window_end"].max()]
            summary.append(last[["book", "method", "n_obs", "exceptions", "kupiec_p_value", "traffic_light"]])
    latest = pd.concat(summary) if summary else pd.DataFrame()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "latest_windows": dg.MetadataValue.md(
                markdown_table(latest.round(3), 20)
                if len(latest)
                else "(no book has two end-of-day valuations with VaR yet)"
            ),
            "observations": int(latest["n_obs"].max()) if len(latest) else 0,
            "run_id": context.run.run_id,
        }
    )
