"""Position and portfolio Greeks valued off the volatility surface."""

import datetime as dt
from collections.abc import Iterator
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    TableWrite,
    fail_closed,
    markdown_svg,
    markdown_table,
    publish,
    session_check_spec,
    table_definition_metadata,
)
from risk_pipeline.defs.svg import bar_chart_svg
from risk_pipeline.defs.volatility.surfaces import SnapshotSelection, snapshot_time
from risk_pipeline.queries import latest_valuation
from risk_pipeline.resources import ExportsResource, WarehouseResource
from risk_pipeline.valuation import VALUATION_INPUTS, ValuationSettings, value_positions

GROUP = "exposures"
GREEK_COLUMNS = [
    "delta",
    "dollar_delta",
    "gamma",
    "dollar_gamma_1pct",
    "vega_per_vol_point",
    "theta_per_day",
    "rho_per_pct",
    "beta_weighted_delta",
    "market_value",
]


class PositionGreeksConfig(dg.Config):
    """Valuation settings: snapshot (default the session's latest), sticky mode, beta window, index."""

    snapshot_time: str | None = None
    sticky: Literal["strike", "delta"] = "strike"
    beta_window: int = 252
    index_symbol: str = "SYNX"

    def settings(self) -> ValuationSettings:
        return ValuationSettings(sticky=self.sticky, beta_window=self.beta_window, index_symbol=self.index_symbol)


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=list(VALUATION_INPUTS),
    kinds={"pandas", "numba"},
    owners=OWNERS,
    description=(
        "Every position of every book valued off the SVI surface at the option snapshot (sticky-strike "
        "by default): price and Greeks with spot, strike, time, vol, rate and dividend yield on the row; "
        "American single-stock options by Bjerksund-Stensland 2002, index options European."
    ),
    metadata=table_definition_metadata("position_greeks"),
)
def position_greeks(
    context: dg.AssetExecutionContext, config: PositionGreeksConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    wh = warehouse.get()
    frames = []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of = snapshot_time(wh, session, SnapshotSelection(snapshot_time=config.snapshot_time))
        frames.append(value_positions(wh, session, as_of, config.settings()))
    out = pd.concat(frames, ignore_index=True)
    snapshots = [{"as_of": t} for t in sorted(out["as_of"].unique())]
    written = wh.write("position_greeks", out, run_id=context.run.run_id, partitions=snapshots)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "books": ", ".join(sorted(out["book"].unique())),
            "as_of": ", ".join(pd.Timestamp(t["as_of"]).isoformat() for t in snapshots),
            "sticky": config.sticky,
            "run_id": context.run.run_id,
        }
    )


def aggregate(position_rows: pd.DataFrame) -> pd.DataFrame:
    """portfolio_greeks rows: total per book plus splits by underlying, expiry bucket and strategy."""
    frames = []
    keys = ["as_of", "as_of_date", "book"]
    for scope, column in (
        ("total", None),
        ("underlying", "symbol"),
        ("expiry_bucket", "expiry_bucket"),
        ("strategy", "strategy"),
    ):
        by = keys + ([column] if column else [])
        g = position_rows.groupby(by, sort=True, dropna=False)
        agg = g[GREEK_COLUMNS].sum(min_count=1).fillna(0.0)
        agg["positions_count"] = g.size()
        agg = agg.reset_index()
        agg.insert(3, "scope", scope)
        agg.insert(4, "scope_value", agg.pop(column).astype(str) if column else "all")
        frames.append(agg)
    return pd.concat(frames, ignore_index=True)


def book_document(total_row: pd.Series) -> dict[str, object]:
    """The JSON document downstream tools read per book."""
    return {
        "delta": float(total_row["delta"]),
        "gamma": float(total_row["gamma"]),
        "theta": float(total_row["theta_per_day"]),
        "vega": float(total_row["vega_per_vol_point"]),
        "timestamp": pd.Timestamp(total_row["as_of"]).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "positions_count": int(total_row["positions_count"]),
    }


def _bar_chart(rows: pd.DataFrame, book: str) -> str:
    """Dollar delta and vega per underlying of one book, as a markdown heading and SVG image (``defs.svg``: drawn
    as text, where a matplotlib PNG took about 0.3 s)."""
    data = rows[(rows["scope"] == "underlying") & (rows["book"] == book)].sort_values("dollar_delta", ascending=False)
    names = [str(x) for x in data["scope_value"]]
    blue = ["#1f77b4"] * len(names)
    svg = bar_chart_svg(
        [
            ("dollar delta ($M)", names, data["dollar_delta"].to_numpy(float) / 1e6, blue),
            ("vega per vol point ($k)", names, data["vega_per_vol_point"].to_numpy(float) / 1e3, blue),
        ],
        horizontal=True,
        panel_width=420,
        height=max(180, 60 + 12 * len(names)),
    )
    return f"**{book}: by underlying**\n\n{markdown_svg(svg, book)}"


#: Book totals reported as typed numbers (USD) so the asset's Plots tab charts them run after run.
HEADLINE_GREEKS = ("dollar_delta", "vega_per_vol_point", "theta_per_day", "market_value")


def headline_metadata(totals: pd.DataFrame) -> dict[str, dg.FloatMetadataValue]:
    """``<book>/<greek>`` floats of each book's total row (USD, as in the portfolio_greeks contract)."""
    return {
        f"{row['book']}/{greek}": dg.MetadataValue.float(round(float(row[greek]), 2))
        for _, row in totals.sort_values("book").iterrows()
        for greek in HEADLINE_GREEKS
    }


def splits_check(rows: pd.DataFrame) -> dg.AssetCheckResult:
    """Every split (underlying, expiry bucket, strategy) of every book sums back to the book's total."""
    totals = rows[rows["scope"] == "total"].set_index(["as_of", "book"])[GREEK_COLUMNS]
    sums = rows[rows["scope"] != "total"].groupby(["as_of", "book", "scope"])[GREEK_COLUMNS].sum()
    expected = totals.reindex(sums.index.droplevel("scope"))
    expected.index = sums.index
    diff = (sums - expected).abs() / (expected.abs() + 1.0)
    worst = float(np.nan_to_num(diff.to_numpy(float), nan=np.inf).max()) if len(diff) else 0.0
    bad = diff[(diff.fillna(np.inf) >= 1e-9).any(axis=1)].reset_index()[["as_of", "book", "scope"]]
    return dg.AssetCheckResult(
        check_name="splits_sum_to_total",
        asset_key="portfolio_greeks",
        passed=worst < 1e-9,
        metadata={"worst_relative_difference": worst, "failing_splits": dg.MetadataValue.md(markdown_table(bad, 20))},
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["position_greeks"],
    kinds={"pandas", "json"},
    owners=OWNERS,
    description=(
        "Book totals of the position Greeks and splits by underlying, expiry bucket (0-7d, 8-30d, 31-90d, "
        "91d+) and strategy, each summing to the total; also one JSON document per book "
        "(exports/portfolio_greeks/<book>.json)."
    ),
    metadata=table_definition_metadata("portfolio_greeks"),
    check_specs=[
        session_check_spec(
            "splits_sum_to_total",
            asset="portfolio_greeks",
            blocking=True,
            description="Every split of every book sums back to the book's total.",
        )
    ],
)
@fail_closed
def portfolio_greeks(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, exports: ExportsResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    wh = warehouse.get()
    frames = []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        frames.append(aggregate(latest_valuation(wh, session)[1]))
    rows = pd.concat(frames, ignore_index=True)
    last = rows[rows["as_of"] == rows["as_of"].max()]
    totals = last[last["scope"] == "total"]
    charts = "\n\n".join(_bar_chart(last, b) for b in sorted(totals["book"].unique()))
    yield from publish(
        context,
        wh,
        [TableWrite("portfolio_greeks", rows, [{"as_of": t} for t in rows["as_of"].unique()])],
        checks=[splits_check(rows)],
        metadata={
            "portfolio_greeks": {
                "totals": dg.MetadataValue.md(
                    markdown_table(totals[["book", *GREEK_COLUMNS, "positions_count"]].round(2), 20)
                ),
                "by_underlying": dg.MetadataValue.md(charts),
                "json_documents": ", ".join(f"portfolio_greeks/{b}.json" for b in totals["book"]),
                **headline_metadata(totals),
            }
        },
    )
    for _, total in totals.iterrows():  # only once the rows they summarize are published
        exports.write_json(f"portfolio_greeks/{total['book']}.json", book_document(total))
