"""Sizing benchmarks: XGBoost forward-vol accuracy against a GARCH baseline, and the warm sizing decision latency.

1. Out of sample (synthetic market, seed 7, ``--names`` stocks, sessions 2021-01-04 .. 2026-11-20): the XGBoost
   median forward 5-session vol (walk-forward, refit every 21 sessions, pooled over names) against GARCH(1,1)-t
   refit on the same schedule per name (``quant.vol_forecast``). Loss on variance: QLIKE and MSE.
2. Latency (``--warehouse PATH`` of a run that materialized position_sizing and published its valuation): the
   pre-trade check of a stock order with the recommendation attached (``PreTradeService.check``, no audit
   append) and ``SizingService.size``, once warm. Target: 5 ms median per decision.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

import numpy as np

from risk_pipeline.quant import sizing as sz
from risk_pipeline.quant import vol_forecast as vf
from risk_pipeline.sources.synthetic import SyntheticSource


def accuracy(names: int, start: int = 504) -> None:
    src = SyntheticSource(seed=7, n_underlyings=names)
    bars = src.market_prices(dt.date(2021, 1, 4), dt.date(2026, 11, 20))
    wide = {c: bars.pivot(index="as_of_date", columns="symbol", values=c) for c in ("close", "high", "low", "volume")}
    t_n, n = wide["close"].shape
    nan = np.full((t_n, n), np.nan)
    feats, targets = sz.ml_dataset(
        wide["close"].to_numpy(float),
        wide["high"].to_numpy(float),
        wide["low"].to_numpy(float),
        wide["volume"].to_numpy(float),
        nan,
        np.full((t_n, n), 63.0),
        np.full(t_n, np.nan),
        np.arange(n),
    )
    settings = sz.MlSettings(min_train_rows=200, retrain_interval_sessions=21)
    t0 = time.perf_counter()
    wf = sz.walk_forward_ml(feats, targets, start, settings)
    t_ml = time.perf_counter() - t0
    garch = np.full((t_n, n), np.nan)
    t0 = time.perf_counter()
    r = np.diff(np.log(wide["close"].to_numpy(float)), axis=0)  # r[k] is the return of session k + 1
    for j in range(n):
        params = None
        for t in range(start, t_n, 21):
            params = vf.fit_garch(r[:t, j], previous=params)  # returns up to session t
            block = np.arange(t, min(t + 21, t_n))
            var_next = vf.garch_variance(params, r[: block[-1], j])[block]  # sigma^2 of session t + 1 given r to t
            garch[block, j] = np.sqrt(vf.garch_variance_sum(params, var_next, 5) / 5 * 252)
    t_garch = time.perf_counter() - t0
    y = targets[:, :, 0]
    ok = np.isfinite(y) & np.isfinite(wf.predicted_vol) & np.isfinite(garch) & (y > 0)
    ok[:start] = False
    rv, p_ml, p_g = y[ok] ** 2, wf.predicted_vol[ok] ** 2, garch[ok] ** 2
    print(f"forward 5-session vol, {names} names, {int(ok.sum())} out-of-sample name-sessions")
    print(f"  xgboost (median): QLIKE {vf.qlike(rv, p_ml):.4f}  MSE {vf.mse(rv, p_ml):.3e}  ({t_ml:.1f} s)")
    print(f"  garch(1,1)-t    : QLIKE {vf.qlike(rv, p_g):.4f}  MSE {vf.mse(rv, p_g):.3e}  ({t_garch:.1f} s)")


def latency(url: str, book: str, n: int = 400) -> None:
    from risk_pipeline.pretrade_service import PreTradeService
    from risk_pipeline.sizing_service import SizingService
    from risk_pipeline.warehouse import Warehouse

    wh = Warehouse(url, keep_open=True, create=False)
    service = PreTradeService(wh, max_valuation_age_sessions=10_000)
    sizing = SizingService(wh)
    recs = sizing.recommendations(book)
    symbol = sorted(recs)[0]
    service.check(book, "buy", 100, symbol=symbol, record=False)  # warm
    times, size_times = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        d = service.check(book, "buy", 100, symbol=symbol, record=False)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sizing.size(book, symbol)
        size_times.append(time.perf_counter() - t0)
    ms = sorted(1e3 * t for t in times)
    print(
        f"pre-trade check with sizing ({book} {symbol}, warm, {n} orders): median {statistics.median(ms):.3f} ms, "
        f"p99 {ms[int(0.99 * len(ms))]:.3f} ms; decision {d.decision}, sizing {d.sizing}"
    )
    print(f"SizingService.size warm: median {1e3 * statistics.median(size_times):.4f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=10)
    parser.add_argument("--warehouse")
    parser.add_argument("--book", default="core_equity")
    args = parser.parse_args()
    if args.warehouse:
        latency(args.warehouse, args.book)
    else:
        accuracy(args.names)
