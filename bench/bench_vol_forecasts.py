"""vol_forecasts' core, old path against new, in one process: wall time ratio and the largest difference.

Run ``python bench/bench_vol_forecasts.py`` (``--help`` for options). It builds the step's per-symbol jobs as the
``vol_forecasts`` asset does (the ``lookback_sessions + 1`` latest daily bars per symbol ending ``--date``, the
asset's walk-forward settings) from the synthetic market (seed 7, 50 names) or, with ``--warehouse PATH``, from
the ``market_prices`` of a stored warehouse, and runs ``forecast_volatility`` on every symbol in this process:

* old path: ``ARCHModel.fit`` (``scipy.optimize.minimize`` SLSQP) for every GARCH/GJR fit and ``xgb.train`` and
  ``Booster.predict`` for every booster;
* new path: ``_arch_fit`` (the same SLSQP core and floating-point steps without SciPy's wrappers) and
  ``_xgb_train_predict`` (the same XGBoost C calls for the matrices, the booster, each round and the prediction,
  without the Python layers of ``DMatrix``, ``Booster`` and ``xgb.train``).

The two paths run alternately ``--repeat`` times (best time of each kept). It prints both times, their ratio,
the load average, and compares every walk-forward forecast (all models, horizons and origins), every GARCH
parameter and every output row: the largest relative difference and whether they are bit-equal.
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

from risk_pipeline.defs.volatility.forecasts import VolForecastSettings  # noqa: E402
from risk_pipeline.quant import vol_forecast as vf  # noqa: E402


def load_bars(date: dt.date, settings: VolForecastSettings, warehouse: str | None) -> pd.DataFrame:
    """Daily bars of every symbol over the asset's read window ending ``date``."""
    start = date - dt.timedelta(days=int(settings.lookback_sessions * 7 / 5) + 15)
    if warehouse:
        from risk_pipeline.warehouse import Between, Warehouse

        wh = Warehouse(warehouse, create=False)
        return wh.read("market_prices", {"as_of_date": Between(start, date)}, order_by=["symbol", "as_of_date"])
    from risk_pipeline.sources.synthetic import SyntheticSource

    bars = SyntheticSource().market_prices(start, date)
    return bars.sort_values(["symbol", "as_of_date"]).reset_index(drop=True)


def histories(bars: pd.DataFrame, date: dt.date, settings: VolForecastSettings) -> dict[str, vf.PriceHistory]:
    """One PriceHistory per symbol with enough history ending ``date`` (the asset's selection)."""
    out = {}
    for symbol, group in bars.groupby("symbol", sort=True):
        group = group.tail(settings.lookback_sessions + 1)
        if len(group) < settings.min_train + 2 or pd.Timestamp(group["as_of_date"].iloc[-1]) != pd.Timestamp(date):
            continue
        out[str(symbol)] = vf.PriceHistory(
            close=group["close"].to_numpy(float),
            open=group["open"].to_numpy(float),
            high=group["high"].to_numpy(float),
            low=group["low"].to_numpy(float),
        )
    return out


def run(hist: dict[str, vf.PriceHistory], cfg: vf.VolForecastConfig, lean: bool) -> tuple[float, dict[str, Any]]:
    """Seconds for ``forecast_volatility`` on every symbol on the given path, and the results."""
    saved = vf._LEAN_SLSQP, vf._LEAN_XGB
    vf._LEAN_SLSQP, vf._LEAN_XGB = (saved[0], saved[1]) if lean else (False, False)
    try:
        started = time.perf_counter()
        results = {s: vf.forecast_volatility(h, cfg) for s, h in hist.items()}
        return time.perf_counter() - started, results
    finally:
        vf._LEAN_SLSQP, vf._LEAN_XGB = saved


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest ``|a - b| / max(|a|, |b|)`` over entries finite in both (NaN where one side only is NaN)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("nan")
    ok = np.isfinite(a) & np.isfinite(b)
    scale = np.maximum(np.abs(a[ok]), np.abs(b[ok]))
    diff = np.abs(a[ok] - b[ok])
    return float(np.max(np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0), initial=0.0))


def compare(old: dict[str, Any], new: dict[str, Any]) -> tuple[float, bool, int]:
    """Largest relative difference over forecasts, GARCH parameters and rows; bit-equal; values compared."""
    worst, equal, count = 0.0, True, 0
    for symbol, a in old.items():
        b = new[symbol]
        pairs = [
            (a.walk_forward.forecast_variance[k], b.walk_forward.forecast_variance[k])
            for k in a.walk_forward.forecast_variance
        ]
        for model, fits in a.walk_forward.garch_params.items():
            for fa, fb in zip(fits, b.walk_forward.garch_params[model], strict=True):
                fields = ("omega", "alpha", "gamma", "beta", "nu", "backcast")
                pairs.append((np.array([getattr(fa, f) for f in fields]), np.array([getattr(fb, f) for f in fields])))
                equal &= fa.converged == fb.converged
        rows_a = [(f.annualized_vol, f.oos_qlike or np.nan, f.oos_mse or np.nan) for f in a.forecasts]
        rows_b = [(f.annualized_vol, f.oos_qlike or np.nan, f.oos_mse or np.nan) for f in b.forecasts]
        pairs.append((np.array(rows_a), np.array(rows_b)))
        equal &= [(f.model, f.horizon_days, f.n_oos, f.selected, f.selection_reason) for f in a.forecasts] == [
            (f.model, f.horizon_days, f.n_oos, f.selected, f.selection_reason) for f in b.forecasts
        ]
        for x, y in pairs:
            worst = max(worst, max_rel_diff(x, y))
            equal &= bool(np.array_equal(x, y, equal_nan=True))
            count += int(np.size(x))
    return worst, equal, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", default="2026-12-03", help="session (default 2026-12-03)")
    parser.add_argument("--warehouse", help="DuckDB warehouse whose market_prices to read (default: synthetic)")
    parser.add_argument("--symbols", type=int, default=0, help="first N symbols only (0: all)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of each path (best kept)")
    args = parser.parse_args()
    date = dt.date.fromisoformat(args.date)
    settings = VolForecastSettings()
    cfg = vf.VolForecastConfig(min_train=settings.min_train, refit_every=settings.refit_every)
    hist = histories(load_bars(date, settings, args.warehouse), date, settings)
    if args.symbols:
        hist = dict(list(hist.items())[: args.symbols])
    print(f"vol_forecasts core: {len(hist)} symbols, {settings.lookback_sessions + 1} sessions each, session {date}")
    print(f"   lean paths available: SLSQP {vf._LEAN_SLSQP}, XGBoost {vf._LEAN_XGB}")
    run(dict(list(hist.items())[:1]), cfg, lean=True)  # imports and first calls outside the timing
    best = {"old": float("inf"), "new": float("inf")}
    results: dict[str, Any] = {}
    for _ in range(args.repeat):
        for name in ("old", "new"):
            seconds, results[name] = run(hist, cfg, lean=name == "new")
            best[name] = min(best[name], seconds)
    worst, equal, count = compare(results["old"], results["new"])
    load = os.getloadavg()[0]
    print(f"   old path {best['old']:.2f} s, new path {best['new']:.2f} s, ratio {best['old'] / best['new']:.2f}x")
    print(f"   (one process, serial; load average {load:.1f}; the asset spreads symbols over 2 worker processes)")
    print(f"   {count} values compared: max relative difference {worst:.3g}, bit-equal: {equal}")
    return 0 if equal or worst <= 1e-10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
