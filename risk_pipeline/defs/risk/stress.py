"""Stress tests with full revaluation: the scenario library per book, and the spot x vol grid."""

import base64
import json
from collections.abc import Sequence
from typing import Any

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
    partition_sessions,
    publish,
    table_definition_metadata,
)
from risk_pipeline.defs.risk.stress_recs import index_close, row_recommendations
from risk_pipeline.defs.risk.stress_vol import (
    CALIBRATION_MIN_OBS,
    CALIBRATION_SESSIONS,
    DEFAULT_INDEX_SYMBOL,
    StressVolInputs,
    searched_shocks_json,
    stress_vol_inputs,
    vol_parameters_json,
)
from risk_pipeline.defs.risk.var import book_portfolio
from risk_pipeline.defs.svg import stress_grid_heat_map_svg
from risk_pipeline.errors import RiskDataError
from risk_pipeline.paths import SCENARIOS_FILE
from risk_pipeline.quant.stress import FirstPass, load_scenarios, run_stress, stress_grid
from risk_pipeline.queries import book_valuations
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Warehouse


class StressSettings(dg.Config):
    """Scenario library and the stock spread assumption (no stock quotes in the data)."""

    scenarios_file: str = str(SCENARIOS_FILE)
    stock_half_spread_bps: float = 5.0
    #: reference index of the vol rule (vol betas, residuals); the synthetic market's index
    index_symbol: str = DEFAULT_INDEX_SYMBOL
    #: sessions of atm_vol_history / market_prices the vol rule is calibrated on, and the fewest observations
    vol_calibration_sessions: int = CALIBRATION_SESSIONS
    vol_calibration_min_obs: int = CALIBRATION_MIN_OBS


def liquidity_inputs(
    wh: Warehouse, rows: pd.DataFrame, as_of: pd.Timestamp, stock_half_spread_bps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per position: quoted spread (options: ask - bid at the snapshot; stocks: 2 x the configured half
    spread of the price) and daily volume (options: the contract's volume; stocks: the session's), at
    least 1 (a contract with no volume today liquidates one unit a day)."""
    is_option = (rows["instrument_type"] == "option").to_numpy(bool)
    held = rows.loc[is_option]
    # only the quotes on the book's underlyings, expiries and strikes can match its contracts in the merge below:
    # the same rows merged, without reading the rest of the snapshot (1.1 million quotes at 3,000 names)
    quotes = wh.read(
        "option_quotes",
        {
            "as_of": as_of,
            "underlying": sorted(set(held["symbol"])),
            "expiry": sorted(set(held["expiry"])),
            "strike": sorted(set(held["strike"].tolist())),
        },
        columns=["underlying", "expiry", "strike", "option_type", "bid", "ask", "volume"],
    )
    key = ["symbol", "expiry", "strike", "option_type"]
    merged = rows[key].merge(quotes.rename(columns={"underlying": "symbol"}), on=key, how="left")
    closes = wh.read("market_prices", {"as_of_date": rows["as_of_date"].iloc[0]}, columns=["symbol", "volume"])
    stock_volume = rows["symbol"].map(dict(zip(closes["symbol"], closes["volume"], strict=True)))
    spread = np.where(
        is_option,
        (merged["ask"] - merged["bid"]).to_numpy(float),
        2 * stock_half_spread_bps / 1e4 * rows["spot"].to_numpy(float),
    )
    volume = np.where(is_option, merged["volume"].to_numpy(float), stock_volume.to_numpy(float))
    # a contract that did not trade today (volume 0 or no quote) is liquidated at the minimum, one unit a
    # day: the most conservative days-to-liquidate, instead of failing the whole stress step
    volume = np.maximum(np.nan_to_num(volume), 1.0)
    return np.nan_to_num(spread), volume


def first_pass_json(first: FirstPass) -> list[str]:
    """``stress_results.searched_first_pass``, one per scenario row: ``FirstPass.digest`` (the portfolio, scenarios,
    rule, engine and per-symbol inputs the search's pass 1 was revalued with), each symbol's extra loss in its worst
    sign combination (``FirstPass.loss``: the float64 bytes, little-endian, base64: exact) and that combination
    (``FirstPass.pick``, one digit 0-3 per symbol)."""
    digest = first.digest()
    loss = np.ascontiguousarray(first.loss, dtype="<f8")
    return [
        json.dumps(
            {
                "digest": digest,
                "loss": base64.b64encode(row.tobytes()).decode("ascii"),
                "pick": "".join("0123"[int(c)] for c in picks),
            }
        )
        for row, picks in zip(loss, first.pick, strict=True)
    ]


def parse_first_pass(texts: Sequence[str | None]) -> tuple[str, np.ndarray, np.ndarray] | None:
    """``searched_first_pass`` of a book's rows (in scenario order) read back: the digest and the ``(n, n_symbols)``
    extra losses and picks (None: a row without them, or rows of different digests or lengths)."""
    if not texts or any(not isinstance(t, str) for t in texts):
        return None
    docs = [json.loads(str(t)) for t in texts]
    if len({d.get("digest") for d in docs}) != 1 or not isinstance(docs[0].get("digest"), str):
        return None
    loss = [np.frombuffer(base64.b64decode(d["loss"]), dtype="<f8") for d in docs]
    picks = [np.frombuffer(str(d["pick"]).encode("ascii"), dtype=np.uint8) for d in docs]
    width = loss[0].size
    if any(a.size != width for a in loss) or any(c.size != width for c in picks):
        return None
    pick = np.array(picks, dtype=np.intp) - ord("0")
    return str(docs[0]["digest"]), np.array(loss, dtype=np.float64), pick


def heat_map(grid: pd.DataFrame, book: str) -> str:
    """P&L in % of NAV over the spot x vol grid of one book, as a markdown heading and SVG image (``defs.svg``:
    drawn as text, where a matplotlib PNG took about 0.2 s); colours on matplotlib's RdYlGn, symmetric about 0."""
    table = grid.pivot(index="vol_shock", columns="spot_shock", values="pnl_pct_nav").sort_index(ascending=False) * 100
    svg = stress_grid_heat_map_svg(table, x_label="spot move", y_label="vol move (relative)")
    return f"**{book}: P&L % NAV**\n\n{markdown_svg(svg, book)}"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "stress_results",
            group_name="risk",
            deps=["position_greeks", "book_nav", "option_quotes", "market_prices", "atm_vol_history"],
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
@fail_closed
def stress_tests(context: dg.AssetExecutionContext, config: StressSettings, warehouse: WarehouseResource) -> Any:
    wh = warehouse.get()
    library = load_scenarios(config.scenarios_file)
    results, grids = [], []
    navs: dict[pd.Timestamp, pd.Series] = {}
    index_spots: dict[pd.Timestamp, float | None] = {}
    valuations = list(book_valuations(wh, partition_sessions(context)))
    vol_inputs: dict[pd.Timestamp, StressVolInputs] = {}
    for v in valuations:
        if library.vol_rule.kind == "expiry_name_skew" and v.as_of not in vol_inputs:
            symbols = sorted({s for w in valuations if w.as_of == v.as_of for s in w.rows["symbol"]})
            session = pd.Timestamp(v.rows["as_of_date"].iloc[0]).date()
            vol_inputs[v.as_of] = stress_vol_inputs(
                wh,
                session,
                symbols,
                config.index_symbol,
                library.vol_rule,
                config.vol_calibration_sessions,
                config.vol_calibration_min_obs,
            )
    for v in valuations:
        if v.as_of not in navs:
            navs[v.as_of] = wh.read("book_nav", {"as_of": v.as_of}).set_index("book")["nav"]
        if v.book not in navs[v.as_of]:
            raise RiskDataError(f"no book_nav for {v.book} at {v.as_of.isoformat()}: stress P&L needs the NAV")
        rows = v.rows
        portfolio = book_portfolio(rows)
        betas = rows.groupby("symbol")["beta"].first().reindex(list(portfolio.symbols)).fillna(1.0).to_numpy()
        sectors = rows.groupby("symbol")["sector"].first().reindex(list(portfolio.symbols)).tolist()
        spreads, volumes = liquidity_inputs(wh, rows, v.as_of, config.stock_half_spread_bps)
        nav = float(navs[v.as_of][v.book])
        vol_kw: dict[str, Any] = {}
        if v.as_of in vol_inputs:
            vi = vol_inputs[v.as_of]
            vol_beta, vol_sd = vi.per_symbol(portfolio.symbols)
            vol_kw = {
                "vol_rule": vi.rule,
                "vol_betas": vol_beta,
                "idio_vol_sd": vol_sd,
                "idio_spot_sd": vi.spot_resid_sd(portfolio.symbols, betas, config.vol_calibration_min_obs),
            }
        shocks: list[tuple[np.ndarray, np.ndarray]] = []
        first: list[FirstPass] = []
        out = run_stress(
            portfolio, library, betas, sectors, spreads, volumes, nav, **vol_kw, shocks_out=shocks, first_pass_out=first
        )
        frame = pd.DataFrame([r.to_row() for r in out])
        frame.insert(0, "book", v.book)
        frame.insert(0, "as_of", v.as_of)
        frame["nav"] = nav
        # the calibrated rule and per-symbol inputs (the book's names and the index), for the hedging layer
        names = [*portfolio.symbols, *([] if config.index_symbol in portfolio.symbols else [config.index_symbol])]
        frame["vol_parameters"] = vol_parameters_json(
            vol_kw.get("vol_rule", library.vol_rule),
            vol_inputs.get(v.as_of),
            names,
            np.concatenate([betas, np.ones(len(names) - len(betas))]),
            config.vol_calibration_min_obs,
        )
        # the shocks the search found (the hedging layer reads them instead of searching the same book again)
        frame["searched_shocks"] = searched_shocks_json(portfolio, betas, *shocks[0]) if shocks else None
        # and what the search of the book plus hedge lines reuses of it (the hedging layer's hedged book)
        frame["searched_first_pass"] = first_pass_json(first[0]) if first else None
        # HIGH / CRITICAL rows: the book cut, the name or the index hedge that brings the loss within HIGH
        if v.as_of not in index_spots:
            day = pd.Timestamp(rows["as_of_date"].iloc[0]).date()
            index_spots[v.as_of] = index_close(wh, day, config.index_symbol)
        spot = index_spots[v.as_of]
        frame["recommendations"] = row_recommendations(frame, library.thresholds.high, config.index_symbol, spot)
        results.append(frame)
        grid = pd.DataFrame([g.to_row() for g in stress_grid(portfolio, library.grid, nav, betas)])
        grid.insert(0, "book", v.book)
        grid.insert(0, "as_of", v.as_of)
        grids.append(grid)
    stress = pd.concat(results, ignore_index=True)
    grid = pd.concat(grids, ignore_index=True)
    parts = [{"as_of": t} for t in sorted(stress["as_of"].unique())]
    last = stress[stress["as_of"] == stress["as_of"].max()]
    worst = last.sort_values("pnl_pct_nav").groupby("book").head(5)
    worst = worst[["book", "scenario_id", "pnl", "pnl_pct_nav", "risk_level", "worst_symbol"]].round(4)
    maps = "\n\n".join(heat_map(g, b) for b, g in grid[grid["as_of"] == grid["as_of"].max()].groupby("book"))
    yield from publish(
        context,
        wh,
        [TableWrite("stress_results", stress, parts), TableWrite("stress_grid", grid, parts)],
        metadata={
            "stress_results": {
                "library_version": library.version,
                "vol_rule": dg.MetadataValue.text(str(stress["vol_rule"].iloc[-1]) if len(stress) else ""),
                "worst_scenarios": dg.MetadataValue.md(markdown_table(worst, 20)),
            },
            "stress_grid": {"heat_map": dg.MetadataValue.md(maps)},
        },
    )
