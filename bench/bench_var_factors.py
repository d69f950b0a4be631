"""Cost and effect of the rate and dividend-yield risk factors of VaR on the sample books.

Run ``python bench/bench_var_factors.py WAREHOUSE [--date 2026-12-03] [--repeat 2]`` on a warehouse that holds the
session's end-of-day inputs (e.g. the one ``bench/bench_pipeline.py --keep FOLDER`` leaves in FOLDER). In one
process it materializes ``var_results`` (with ``var_contributions``) for the session with the factors off (the old
path), rates only, dividends only and both on (the default), alternating, ``--repeat`` times each after a warm-up
run, and prints per configuration the best wall time of the materialization and the 1-day 99 % VaR of every book and
method with its change against the factors off. The rows already stored for the session (written by the code before
this change, whose default had both factors off) are compared with the factors-off run. Then, per book, the
historical and FHS scenario sets with both factors are revalued with the early-exercise grid and with the exact
engine for every American option, and the largest P&L difference is printed (absolute, against the P&L's standard
deviation, and the VaR difference).

The machine may be shared: the load average is printed with every timing; compare configurations by their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "off": {"rate_factor": False, "dividend_factor": False},
    "rates": {"rate_factor": True, "dividend_factor": False},
    "dividends": {"rate_factor": False, "dividend_factor": True},
    "both": {"rate_factor": True, "dividend_factor": True},
}


def materialize(warehouse_url: str, session: dt.date, settings: dict[str, Any]) -> tuple[float, pd.DataFrame]:
    """Wall time of one ``var_results`` materialization and the rows it wrote."""
    import dagster as dg

    from risk_pipeline.defs.risk.var import var_results
    from risk_pipeline.resources import resources_from_env
    from risk_pipeline.warehouse import Warehouse

    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    t0 = time.perf_counter()
    result = dg.materialize(
        [var_results],
        resources=resources_from_env(),
        partition_key=session.isoformat(),
        run_config={**quiet, "ops": {"var_results": {"config": settings}}},
    )
    wall = time.perf_counter() - t0
    if not result.success:
        raise RuntimeError(f"var_results failed with {settings}")
    rows = Warehouse(warehouse_url).read("var_results", {"as_of_date": session})
    return wall, rows


def engine_accuracy(warehouse_url: str, session: dt.date) -> None:
    """Grid against exact American prices on the historical and FHS scenarios with both factors, per book."""
    from risk_pipeline.defs.risk.var import book_portfolio, return_history
    from risk_pipeline.quant.scenario_engine import evaluate
    from risk_pipeline.quant.var import VarConfig, empirical_var_es, fhs_scenario_sets, fit_fhs, historical_scenarios
    from risk_pipeline.queries import book_valuations
    from risk_pipeline.warehouse import Warehouse

    wh = Warehouse(warehouse_url)
    cfg = VarConfig()
    for v in book_valuations(wh, [session]):
        p = book_portfolio(v.rows)
        options = sorted(v.rows.loc[v.rows["instrument_type"] == "option", "symbol"].unique())
        hist = return_history(wh, v.session, p.symbols, cfg.lookback_days, options, True, True).history
        sets = {f"historical {h}d": historical_scenarios(hist.window(cfg.lookback_days), h) for h in cfg.horizons}
        fhs = fhs_scenario_sets(fit_fhs(hist.window(cfg.lookback_days)), cfg)
        sets |= {f"fhs {h}d": sc for h, sc in fhs.items()}
        print(f"   {v.book}: {int(p.is_american.sum())} American of {int(p.is_option.sum())} options")
        for name, sc in sets.items():
            days = int(name.split()[-1][:-1]) * cfg.calendar_days_per_trading_day
            t0 = time.perf_counter()
            grid = evaluate(p, sc, days, american="eep_grid").pnl
            t1 = time.perf_counter()
            exact = evaluate(p, sc, days, american="exact").pnl
            t2 = time.perf_counter()
            diff = np.abs(grid - exact)
            var_g, var_e = empirical_var_es(grid, 0.99)[0], empirical_var_es(exact, 0.99)[0]
            print(
                f"      {name:15s} {sc.n_scenarios:6d} scenarios: max |grid - exact| {diff.max():10.2f} USD "
                f"({diff.max() / exact.std():.1e} of the P&L sd), 99 % VaR {var_g:12.2f} vs {var_e:12.2f} "
                f"({abs(var_g - var_e) / var_e:.1e}); grid {t1 - t0:.2f} s, exact {t2 - t1:.2f} s"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("warehouse", help="DuckDB path of a warehouse with the session's end-of-day inputs")
    parser.add_argument("--date", default="2026-12-03")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument(
        "--reference-rows", help="pickled var_results rows of the session to compare instead of the stored ones"
    )
    args = parser.parse_args(argv)
    os.environ["RISK_PIPELINE_WAREHOUSE_URL"] = args.warehouse
    session = dt.date.fromisoformat(args.date)
    from risk_pipeline.warehouse import Warehouse

    Warehouse(args.warehouse).ensure_tables()  # the new nullable columns
    stored = (
        pd.read_pickle(args.reference_rows)
        if args.reference_rows
        else Warehouse(args.warehouse).read("var_results", {"as_of_date": session})
    )
    materialize(args.warehouse, session, CONFIGS["both"])  # warm-up: numba cache, imports
    best: dict[str, float] = {}
    rows: dict[str, pd.DataFrame] = {}
    for _ in range(args.repeat):
        for name, settings in CONFIGS.items():
            wall, rows[name] = materialize(args.warehouse, session, settings)
            best[name] = min(best.get(name, np.inf), wall)
            print(f"   var_results {name:9s} {wall:6.2f} s (load average {os.getloadavg()[0]:.1f})")
    print("best of each: " + ", ".join(f"{k} {v:.2f} s ({v / best['off']:.2f}x off)" for k, v in best.items()))
    if len(stored):
        key3 = ["book", "method", "horizon_days", "confidence"]
        both = stored.set_index(key3)[["var", "expected_shortfall"]].join(
            rows["off"].set_index(key3)[["var", "expected_shortfall"]].add_suffix("_off"), how="inner"
        )
        gap = max(float((both[c] - both[f"{c}_off"]).abs().max()) for c in ("var", "expected_shortfall"))
        print(f"stored rows against the factors-off run: {len(both)} rows, largest |difference| {gap:.3g} USD")
    key = ["book", "method"]
    pick = {
        k: r[(r["horizon_days"] == 1) & np.isclose(r["confidence"], 0.99)].set_index(key)["var"]
        for k, r in rows.items()
    }
    table = pd.DataFrame(pick)
    for k in ("rates", "dividends", "both"):
        table[f"{k} %"] = 100.0 * (table[k] / table["off"] - 1.0)
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.float_format", "{:,.2f}".format):
        print("1-day 99 % VaR, USD, and change against the factors off:")
        print(table)
    if not args.skip_accuracy:
        print("early-exercise grid against the exact engine, both factors on:")
        engine_accuracy(args.warehouse, session)


if __name__ == "__main__":
    main()
