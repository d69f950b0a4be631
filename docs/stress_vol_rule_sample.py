"""Stress P&L of the synthetic sample books under the legacy flat vol multiplier and the expiry/name vol rule.

Usage: ``python docs/stress_vol_rule_sample.py WAREHOUSE [SESSION] [HISTORY_SESSIONS]``. Builds the warehouse if
it has no ``position_greeks`` for SESSION (``price_history_job`` over HISTORY_SESSIONS sessions, then the upstream
of ``stress_results`` in ``end_of_day_job``; synthetic source, 50 underlyings), materializes the stress asset with
the library's rule (``stress_results``, ``vol_rule`` column), recomputes every scenario of every book with
``vol_rule=flat_multiplier`` from the same stored rows, and prints both, with the calibration the asset used.
The README's before/after table comes from this script.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import dagster as dg
import pandas as pd

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from risk_pipeline.calendar import sessions
from risk_pipeline.definitions import build_definitions
from risk_pipeline.defs.risk.stress import StressSettings, liquidity_inputs
from risk_pipeline.defs.risk.stress_vol import stress_vol_inputs
from risk_pipeline.defs.risk.var import book_portfolio
from risk_pipeline.paths import SCENARIOS_FILE
from risk_pipeline.quant.stress import FLAT_MULTIPLIER, load_scenarios, run_stress
from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource
from risk_pipeline.warehouse import Warehouse


def main() -> None:
    url = sys.argv[1]
    session = dt.date.fromisoformat(sys.argv[2]) if len(sys.argv) > 2 else dt.date(2026, 12, 3)
    n_history = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    defs = build_definitions(
        {
            "warehouse": WarehouseResource(url=url),
            "market_data": MarketDataResource(kind="synthetic"),
            "exports": ExportsResource(root=str(Path(url).parent / "exports")),
        },
        executor=dg.in_process_executor,
    )
    instance = dg.DagsterInstance.ephemeral()
    wh = Warehouse(url)
    wh.ensure_tables()
    job = defs.resolve_job_def("end_of_day_job")
    history = [d for d in sessions(session - dt.timedelta(days=2 * n_history), session) if d < session]
    if wh.read("atm_vol_history", {"as_of_date": history[-1]}, columns=["symbol"]).empty:
        tags = {
            "dagster/asset_partition_range_start": history[-n_history].isoformat(),
            "dagster/asset_partition_range_end": history[-1].isoformat(),
        }
        assert defs.resolve_job_def("price_history_job").execute_in_process(instance=instance, tags=tags).success
    if wh.read("position_greeks", {"as_of_date": session}, columns=["book"]).empty:
        stress = dg.AssetSelection.assets("stress_results", "stress_grid")
        upstream = (stress.upstream().required_multi_asset_neighbors() - stress).resolve(defs.resolve_asset_graph())
        run = job.execute_in_process(
            instance=instance, partition_key=session.isoformat(), asset_selection=list(upstream)
        )
        assert run.success
    run = job.execute_in_process(
        instance=instance,
        partition_key=session.isoformat(),
        asset_selection=[dg.AssetKey("stress_results"), dg.AssetKey("stress_grid")],
    )
    assert run.success
    stored = wh.read("stress_results")
    stored = stored[pd.to_datetime(stored["as_of"]).dt.date == session]
    print("vol_rule:", stored["vol_rule"].iloc[0])
    print("vol betas (median, min, max):", end=" ")
    library = load_scenarios(SCENARIOS_FILE)
    positions = wh.read("position_greeks", {"as_of_date": session})
    cfg = StressSettings()
    vi = stress_vol_inputs(
        wh,
        session,
        sorted(positions["symbol"].unique()),
        cfg.index_symbol,
        library.vol_rule,
        cfg.vol_calibration_sessions,
        cfg.vol_calibration_min_obs,
    )
    names = vi.vol_beta.drop(cfg.index_symbol, errors="ignore")
    print(f"{names.median():.3f} {names.min():.3f} {names.max():.3f}")
    rows_out = []
    for (as_of, book), rows in positions.groupby(["as_of", "book"]):
        rows = rows.reset_index(drop=True)
        p = book_portfolio(rows)
        betas = rows.groupby("symbol")["beta"].first().reindex(list(p.symbols)).fillna(1.0).to_numpy()
        sectors = rows.groupby("symbol")["sector"].first().reindex(list(p.symbols)).tolist()
        spreads, volumes = liquidity_inputs(wh, rows, as_of, 5.0)
        new = stored[stored["book"] == book].set_index("scenario_id")
        nav = float(new["nav"].iloc[0])
        flat = run_stress(p, library, betas, sectors, spreads, volumes, nav, vol_rule=FLAT_MULTIPLIER)
        vol_beta, _ = vi.per_symbol(p.symbols)
        no_idio = run_stress(p, library, betas, sectors, spreads, volumes, nav, vol_rule=vi.rule, vol_betas=vol_beta)
        for r, q in zip(flat, no_idio, strict=True):
            rows_out.append(
                {
                    "book": book,
                    "scenario_id": r.scenario_id,
                    "index_move": r.spot_shock,
                    "vol_index_x": r.vol_shock + 1.0,
                    "flat_pnl": r.pnl,
                    "no_idio_pnl": q.pnl,
                    "new_pnl": float(new.loc[r.scenario_id, "pnl"]),
                    "new_pct_nav": float(new.loc[r.scenario_id, "pnl_pct_nav"]),
                }
            )
    table = pd.DataFrame(rows_out)
    with pd.option_context("display.width", 160, "display.max_rows", 200, "display.float_format", "{:,.4f}".format):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
