"""Stress tests with full revaluation: the scenario library per book, and the spot x vol grid."""

import base64
import datetime as dt
import io
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.defs.common import OWNERS, PARTITIONS, latest_as_of, markdown_table, table_definition_metadata
from risk_pipeline.defs.risk.var import book_portfolio
from risk_pipeline.quant.stress import load_scenarios, run_stress, stress_grid
from risk_pipeline.resources import PROJECT_ROOT, WarehouseResource
from risk_pipeline.warehouse import Warehouse

SCENARIOS_FILE = PROJECT_ROOT / "data" / "stress" / "scenarios.yaml"


class StressSettings(dg.Config):
    """Scenario library and the stock spread assumption (no stock quotes in the data)."""

    scenarios_file: str = str(SCENARIOS_FILE)
    stock_half_spread_bps: float = 5.0


def liquidity_inputs(
    wh: Warehouse, rows: pd.DataFrame, as_of: pd.Timestamp, stock_half_spread_bps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per position: quoted spread (options: ask - bid at the snapshot; stocks: 2 x the configured half
    spread of the price) and daily volume (options: the contract's volume; stocks: the session's)."""
    quotes = wh.read(
        "option_quotes",
        {"as_of": as_of},
        columns=["underlying", "expiry", "strike", "option_type", "bid", "ask", "volume"],
    )
    key = ["symbol", "expiry", "strike", "option_type"]
    merged = rows[key].merge(quotes.rename(columns={"underlying": "symbol"}), on=key, how="left")
    closes = wh.read("market_prices", {"as_of_date": rows["as_of_date"].iloc[0]}, columns=["symbol", "volume"])
    stock_volume = rows["symbol"].map(dict(zip(closes["symbol"], closes["volume"], strict=True)))
    is_option = (rows["instrument_type"] == "option").to_numpy(bool)
    spread = np.where(
        is_option,
        (merged["ask"] - merged["bid"]).to_numpy(float),
        2 * stock_half_spread_bps / 1e4 * rows["spot"].to_numpy(float),
    )
    volume = np.where(is_option, merged["volume"].to_numpy(float), stock_volume.to_numpy(float))
    return np.nan_to_num(spread), np.nan_to_num(volume)


def heat_map(grid: pd.DataFrame, book: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = grid.pivot(index="vol_shock", columns="spot_shock", values="pnl_pct_nav") * 100
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=72)
    image = ax.imshow(table.to_numpy(), cmap="RdYlGn", aspect="auto", origin="lower")
    ax.set_xticks(range(len(table.columns)), [f"{c:+.0%}" for c in table.columns], fontsize=6)
    ax.set_yticks(range(len(table.index)), [f"{v:+.0%}" for v in table.index], fontsize=6)
    ax.set_xlabel("spot move")
    ax.set_ylabel("vol move (relative)")
    ax.set_title(f"{book}: P&L % NAV", fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "stress_results",
            group_name="risk",
            deps=["position_greeks", "book_nav", "option_quotes"],
            kinds={"pandas", "numba"},
            owners=OWNERS,
            metadata=table_definition_metadata("stress_results"),
            description="Historical replays, named hypotheticals and liquidity scenarios, every position "
            "fully revalued; P&L, % of NAV, worst underlying and risk level.",
        ),
        dg.AssetSpec(
            "stress_grid",
            group_name="risk",
            deps=["position_greeks", "book_nav"],
            kinds={"pandas"},
            owners=OWNERS,
            metadata=table_definition_metadata("stress_grid"),
            description="Spot -30 %..+30 % against vol -50 %..+200 %, full revaluation; heat map in the UI.",
        ),
    ],
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def stress_tests(context: dg.AssetExecutionContext, config: StressSettings, warehouse: WarehouseResource) -> Any:
    wh = warehouse.get()
    library = load_scenarios(config.scenarios_file)
    results, grids = [], []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of = latest_as_of(wh, "position_greeks", session)
        if as_of is None:
            raise dg.Failure(f"no position_greeks for {key}")
        positions = wh.read("position_greeks", {"as_of": as_of})
        navs = wh.read("book_nav", {"as_of": as_of}).set_index("book")["nav"]
        for book, rows in positions.groupby("book", sort=True):
            rows = rows.reset_index(drop=True)
            portfolio = book_portfolio(rows)
            betas = rows.groupby("symbol")["beta"].first().reindex(list(portfolio.symbols)).fillna(1.0).to_numpy()
            sectors = rows.groupby("symbol")["sector"].first().reindex(list(portfolio.symbols)).tolist()
            spreads, volumes = liquidity_inputs(wh, rows, as_of, config.stock_half_spread_bps)
            nav = float(navs[book])
            out = run_stress(portfolio, library, betas, sectors, spreads, volumes, nav)
            frame = pd.DataFrame([r.to_row() for r in out])
            frame.insert(0, "book", book)
            frame.insert(0, "as_of", as_of)
            frame["nav"] = nav
            results.append(frame)
            grid = pd.DataFrame([g.to_row() for g in stress_grid(portfolio, library.grid, nav, betas)])
            grid.insert(0, "book", book)
            grid.insert(0, "as_of", as_of)
            grids.append(grid)
    stress = pd.concat(results, ignore_index=True)
    grid = pd.concat(grids, ignore_index=True)
    run_id = context.run.run_id
    parts = [{"as_of": t} for t in sorted(stress["as_of"].unique())]
    n_stress = wh.write("stress_results", stress, run_id=run_id, partitions=parts)
    n_grid = wh.write("stress_grid", grid, run_id=run_id, partitions=parts)
    last = stress[stress["as_of"] == stress["as_of"].max()]
    worst = last.sort_values("pnl_pct_nav").groupby("book").head(5)
    maps = "\n\n".join(
        f"![{b}](data:image/png;base64,{heat_map(g, b)})"
        for b, g in grid[grid["as_of"] == grid["as_of"].max()].groupby("book")
    )
    yield dg.MaterializeResult(
        asset_key="stress_results",
        metadata={
            "dagster/row_count": n_stress,
            "library_version": library.version,
            "worst_scenarios": dg.MetadataValue.md(
                markdown_table(
                    worst[["book", "scenario_id", "pnl", "pnl_pct_nav", "risk_level", "worst_symbol"]].round(4), 20
                )
            ),
            "run_id": run_id,
        },
    )
    yield dg.MaterializeResult(
        asset_key="stress_grid",
        metadata={"dagster/row_count": n_grid, "heat_map": dg.MetadataValue.md(maps), "run_id": run_id},
    )
