"""Static-book VaR backtest (var_backtest): the asset's tables and GARCH refits before and after, and the batched
path against the day-by-day path.

Runs on the books of a warehouse's latest valuation (``--warehouse``, e.g. a copy of a benchmark run's
warehouse) with var_backtest's settings, in one process, warm (each path is run once before it is timed), and
prints both times, their ratio, the load average and the largest relative difference of the results.

``--compare tables`` (default): var_backtest's rows for the session (``defs.risk.backtest.backtest_tables``, no
publication) against the run before this version: GARCH(1,1)-t refits by arch's own ``fit`` (``vol_forecast.
fit_garch``) on the asset's thread, one after the other, and every Z2 p-value simulated anew; then the
refits alone (``book_garch_fits``, every book, fresh cache), arch's fit against ``fit_garch``'s lean SLSQP driver.
Float columns are compared relative to the earlier value, every other column exactly.

``--compare paths``: per book, ``quant.book_backtest.static_book_backtest`` (every day's VaR by
``var.compute_var_batch``, one scenario-engine call per method for all days) and the day-by-day path it
replaced (one ``var.compute_var`` and one ``revalue`` per day).

    .venv/bin/python bench/bench_backtest.py --warehouse /tmp/copy.duckdb [--session 2026-12-03] [--days 250]
        [--compare tables|paths|both] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

import risk_pipeline.quant.vol_forecast as vol_forecast_module
from risk_pipeline.defs.risk.backtest import (
    CONFIDENCE,
    ES_CONFIDENCE,
    MIN_HISTORY,
    BacktestSettings,
    _concat,
    backtest_tables,
    book_garch_fits,
    book_history,
    hypothetical,
    realized,
    surface_repriced,
)
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


@contextlib.contextmanager
def garch_fitter(lean: bool) -> Iterator[None]:
    """``vol_forecast.fit_garch`` (behind every GARCH refit) by its lean SLSQP driver (``lean``) or by arch's own
    ``fit`` inside the block."""
    kept = vol_forecast_module._LEAN_SLSQP
    vol_forecast_module._LEAN_SLSQP = lean and kept
    try:
        yield
    finally:
        vol_forecast_module._LEAN_SLSQP = kept


def tables_before(wh: Warehouse, session: dt.date, settings: BacktestSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """var_backtest's two tables as the asset made them before: one book after the other, each book's GARCH
    refits inline (arch's fit, see ``garch_fitter``), a fresh Z2 simulation for every window."""
    realized_books = wh.query("SELECT DISTINCT book FROM risk.book_nav WHERE as_of_date <= ?", [session])["book"]
    as_of, positions = latest_valuation(wh, session)
    jobs: list[tuple[str, Any]] = [(str(b), None) for b in sorted(realized_books)]
    jobs += [(f"hypothetical:{b}", rows) for b, rows in positions.groupby("book", sort=True)]
    window_frames, observation_frames = [], []
    garch_cache: dict[Any, Any] = {}
    for label, rows in jobs:
        if rows is None:
            windows, obs = realized(wh, label, session)
        else:
            book = label.split(":", 1)[1]
            windows, obs = hypothetical(wh, book, rows, as_of, session, settings, garch_cache)
            surface_windows, surface_obs = surface_repriced(wh, book, rows, as_of, session, obs)
            window_frames.append(surface_windows)
            observation_frames.append(surface_obs)
        window_frames.append(windows)
        observation_frames.append(obs)
    return _concat(window_frames, "var_backtest"), _concat(observation_frames, "var_backtest_observations")


def frame_difference(got: pd.DataFrame, want: pd.DataFrame) -> tuple[float, int]:
    """Largest relative difference of the float columns (NaN must match NaN) and the number of differing cells
    in the other columns (shape or column mismatch: every cell)."""
    if got.shape != want.shape or list(got.columns) != list(want.columns):
        return float("inf"), max(got.size, want.size)
    worst, cells = 0.0, 0
    for column in want.columns:
        a, b = got[column], want[column]
        if pd.api.types.is_float_dtype(b.dtype) and pd.api.types.is_float_dtype(a.dtype):
            x, y = a.to_numpy(float), b.to_numpy(float)
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                cells += int(np.sum(np.isnan(x) != np.isnan(y)))
            ok = ~np.isnan(x) & ~np.isnan(y)
            scale = np.maximum(np.abs(y[ok]), 1e-300)
            worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]) / scale, initial=0.0)))
        else:
            same = (a == b) | (a.isna() & b.isna())
            cells += int((~same.fillna(False).astype(bool)).sum())
    return worst, cells


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """``fn()``'s result, wall seconds and the 1-minute load average before and after."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, load, os.getloadavg()[0]


def compare_tables(wh: Warehouse, session: dt.date, settings: BacktestSettings, repeat: int = 1) -> None:
    """Print the before/after comparison of var_backtest's tables (``repeat`` alternated timings) and of the
    GARCH refits alone."""

    def before() -> tuple[pd.DataFrame, pd.DataFrame]:
        with garch_fitter(lean=False):
            return tables_before(wh, session, settings)

    def after() -> tuple[pd.DataFrame, pd.DataFrame]:
        tables = backtest_tables(wh, session, settings)
        return tables.windows, tables.observations

    runs: dict[str, Any] = {}
    before(), after()  # warm
    ratios = []
    print(f"var_backtest tables, session {session}")
    for _ in range(repeat):  # alternated, so that a change of the machine's load hits both
        for name, fn in (("before", before), ("after", after)):
            runs[name] = timed(fn)
            sec, l0, l1 = runs[name][1:]
            print(f"  {name:8s} {sec:7.2f} s warm   (1-min load average {l0:.2f} before, {l1:.2f} after)")
        ratios.append(runs["before"][1] / runs["after"][1])
    w_rel, w_cells = frame_difference(runs["after"][0][0], runs["before"][0][0])
    o_rel, o_cells = frame_difference(runs["after"][0][1], runs["before"][0][1])
    print(
        f"  speed-up {', '.join(f'{r:.2f}x' for r in ratios)} (median {float(np.median(ratios)):.2f}x); "
        f"{len(runs['after'][0][0])} var_backtest rows: largest relative difference {w_rel:.2e}, {w_cells} other "
        f"cells differ; {len(runs['after'][0][1])} var_backtest_observations rows: {o_rel:.2e}, {o_cells}"
    )
    _, positions = latest_valuation(wh, session)
    histories = [book_history(wh, str(b), rows, session, settings) for b, rows in positions.groupby("book")]

    def refits(lean: bool) -> Callable[[], tuple[list[Any], int]]:
        def run() -> tuple[list[Any], int]:
            cache: dict[Any, Any] = {}
            with garch_fitter(lean):
                out = [book_garch_fits(h, cache) for h in histories if h.days.size]
            return out, len(cache)

        return run

    (arch_fits, n_fits), arch_s, l0, _ = timed(refits(False))
    (fast_fits, _), fast_s, _, l1 = timed(refits(True))
    same = arch_fits == fast_fits  # GarchParams equality: every parameter bit-equal, and the convergence flag
    print(
        f"  GARCH refits alone ({n_fits} fits): arch fit {arch_s:.2f} s, lean fit_garch {fast_s:.2f} s, "
        f"speed-up {arch_s / fast_s:.2f}x, parameters identical: {same} (load {l0:.2f} -> {l1:.2f})"
    )


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


def compare_paths(wh: Warehouse, session: dt.date, settings: BacktestSettings) -> None:
    """Print the batched static-book backtest against the day-by-day path it replaced."""
    jobs = inputs(wh, session, settings)

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
        results[name], sec, before, after = timed(fn)
        times[name] = (sec, before, after)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warehouse", required=True, help="DuckDB file (a copy: it is opened read-only)")
    ap.add_argument("--session", default=None, help="session date (default: the latest valuation's)")
    ap.add_argument("--days", type=int, default=250, help="backtest days")
    ap.add_argument("--compare", choices=("tables", "paths", "both"), default="tables")
    ap.add_argument("--repeat", type=int, default=1, help="alternated before/after timings of the tables")
    args = ap.parse_args()
    wh = Warehouse(args.warehouse, create=False)
    if args.session:
        session = dt.date.fromisoformat(args.session)
    else:
        session = wh.query("SELECT MAX(as_of_date) AS d FROM risk.position_greeks")["d"].iloc[0]
    settings = BacktestSettings(backtest_days=args.days)
    if args.compare in ("tables", "both"):
        compare_tables(wh, session, settings, args.repeat)
    if args.compare in ("paths", "both"):
        compare_paths(wh, session, settings)


if __name__ == "__main__":
    main()
