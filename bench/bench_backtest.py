"""Static-book VaR backtest (var_backtest's hypothetical series): the batched path against the day-by-day path.

Runs on the books of a warehouse's latest valuation (``--warehouse``, e.g. a copy of a benchmark run's
warehouse) with var_backtest's settings: per book, ``quant.book_backtest.static_book_backtest`` (every day's
VaR by ``var.compute_var_batch``, one scenario-engine call per method for all days) and the day-by-day path it
replaced (one ``var.compute_var`` and one ``revalue`` per day), in the same process, warm (each path is run
once before it is timed), and prints both times, their ratio, the load average and the largest relative
difference of the results.

    .venv/bin/python bench/bench_backtest.py --warehouse /tmp/copy.duckdb [--session 2026-12-03] [--days 250]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np

from risk_pipeline.defs.risk.backtest import CONFIDENCE, ES_CONFIDENCE, MIN_HISTORY, BacktestSettings
from risk_pipeline.defs.risk.var import book_portfolio, factor_levels
from risk_pipeline.quant.book_backtest import rescaled_book, static_book_backtest
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import market_values, revalue
from risk_pipeline.quant.var import (
    ALL_METHODS,
    MONTE_CARLO_FHS,
    MarketHistory,
    VarConfig,
    compute_var,
    fit_garch_or_constant,
)
from risk_pipeline.queries import latest_valuation
from risk_pipeline.warehouse import Warehouse


def per_day_backtest(
    portfolio: Portfolio,
    closes: np.ndarray,
    vols: np.ndarray,
    gaps: np.ndarray,
    days: np.ndarray,
    cfg: VarConfig,
    garch_cache: dict[Any, Any],
    refit_every: int = 21,
) -> dict[str, np.ndarray]:
    """The backtest as it was before batching: per day a rescaled book, ``compute_var`` and an exact revaluation."""
    returns = np.diff(np.log(closes), axis=0)
    iv = vols[1:] / vols[:-1] - 1.0
    cfg = replace(cfg, confidences=(CONFIDENCE, ES_CONFIDENCE), horizons=(1,))
    out: dict[str, list[float]] = {"pnl": [], "book_value": []}
    params = None
    m = portfolio.n_symbols
    for i, t in enumerate(days):
        ratio = np.where(np.isfinite(vols[t]) & np.isfinite(vols[-1]), vols[t] / vols[-1], 1.0)
        book = rescaled_book(portfolio, closes[t], ratio)
        first = max(0, t - cfg.lookback_days)
        if params is None or i % refit_every == 0:
            previous = [None] * m if params is None else params
            params = []
            for s in range(m):  # the same sharing of fits across books as the batched run
                key = (returns[first:t, s].tobytes(), previous[s])
                if key not in garch_cache:
                    garch_cache[key] = fit_garch_or_constant(returns[first:t, s], previous[s])
                params.append(garch_cache[key])
        report = compute_var(book, MarketHistory(returns[first:t], iv[first:t]), cfg, garch_params=params)
        move = np.where(np.isfinite(iv[t]), 1.0 + iv[t], 1.0)
        moved = revalue(
            book,
            (closes[t + 1] / closes[t] - 1.0)[None, :],
            horizon_days=float(gaps[t + 1]),
            vol_scale=move[None, :],
            american="exact",
        )
        out["pnl"].append(float(moved.pnl[0]))
        out["book_value"].append(float(market_values(book).sum()))
        for name in ALL_METHODS:
            out.setdefault(name, []).append(report.get(name, 1, CONFIDENCE).var)
            out.setdefault(f"es:{name}", []).append(report.get(name, 1, ES_CONFIDENCE).expected_shortfall)
    return {k: np.asarray(v) for k, v in out.items()}


def inputs(wh: Warehouse, session: dt.date, settings: BacktestSettings) -> list[tuple[str, tuple[Any, ...]]]:
    """Per book: the arguments of ``static_book_backtest`` as ``defs.risk.backtest.hypothetical`` builds them."""
    _, positions = latest_valuation(wh, session)
    jobs = []
    for book, rows in positions.groupby("book", sort=True):
        portfolio = book_portfolio(rows)
        need = settings.backtest_days + settings.lookback_days + 1
        wide, vols = factor_levels(wh, session, need, portfolio.symbols, "bench")
        wide = wide.dropna().tail(need)
        vols = vols.reindex(wide.index)
        first_day = max(MIN_HISTORY, len(wide) - 1 - settings.backtest_days)
        days = np.arange(first_day, len(wide) - 1)
        ordinals = np.array([d.toordinal() for d in wide.index], dtype=float)
        gaps = np.concatenate([[0.0], np.diff(ordinals)])
        cfg = VarConfig(lookback_days=settings.lookback_days, n_scenarios=settings.n_scenarios, seed=settings.seed)
        jobs.append((str(book), (portfolio, wide.to_numpy(float), vols.to_numpy(float), gaps, days, cfg)))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warehouse", required=True, help="DuckDB file (a copy: it is opened read-only)")
    ap.add_argument("--session", default=None, help="session date (default: the latest valuation's)")
    ap.add_argument("--days", type=int, default=250, help="backtest days")
    args = ap.parse_args()
    wh = Warehouse(args.warehouse, create=False)
    if args.session:
        session = dt.date.fromisoformat(args.session)
    else:
        session = wh.query("SELECT MAX(as_of_date) AS d FROM risk.position_greeks")["d"].iloc[0]
    jobs = inputs(wh, session, BacktestSettings(backtest_days=args.days))

    def batched() -> dict[str, Any]:
        cache: dict[Any, Any] = {}
        out = {}
        for book, a in jobs:
            r = static_book_backtest(*a, confidence=CONFIDENCE, es_confidence=ES_CONFIDENCE, garch_cache=cache)
            out[book] = {"pnl": r.pnl, "book_value": r.book_value, **r.var}
            out[book].update({f"es:{m}": r.expected_shortfall[m] for m in r.expected_shortfall})
        return out

    def per_day() -> dict[str, Any]:
        cache: dict[Any, Any] = {}
        return {book: per_day_backtest(*a, garch_cache=cache) for book, a in jobs}

    times = {}
    results = {}
    for name, fn in (("per_day", per_day), ("batched", batched)):
        fn()  # warm: numba kernels loaded, caches of the pricing core filled
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        results[name] = fn()
        times[name] = (time.perf_counter() - t0, load, os.getloadavg()[0])
    worst = 0.0
    for book in results["batched"]:
        for key, want in results["per_day"][book].items():
            got = results["batched"][book][key]
            scale = np.maximum(np.abs(want), 1e-300)
            worst = max(worst, float(np.max(np.abs(got - want) / scale, initial=0.0)))
    books = ", ".join(f"{b} ({a[0].n_positions} positions, {a[4].size} days)" for b, a in jobs)
    print(f"static-book backtest, session {session}: {books}; {MONTE_CARLO_FHS} refits every 21 days")
    for name, (sec, before, after) in times.items():
        print(f"  {name:8s} {sec:7.2f} s warm   (1-min load average {before:.2f} before, {after:.2f} after)")
    print(f"  speed-up {times['per_day'][0] / times['batched'][0]:.1f}x; largest relative difference {worst:.2e}")


if __name__ == "__main__":
    main()
