"""Heston pricing and calibration, SABR calibration, and the SVI / SABR / Heston fit comparison on the sample.

Usage: ``python bench/bench_heston.py [--underlyings 10] [--seed 7] [--skip-pipeline]``

1. Pricing throughput of ``heston_price`` (COS) on a surface workload: 20 underlyings x 20 expiries (2 days to 5
   years) x 250 strikes (+-3 sd) = 100,000 European options with equity-like parameters, against QuantLib's
   ``AnalyticHestonEngine`` (Gauss-Laguerre, its default, and adaptive Gauss-Lobatto at 1e-12) on 200 of them
   in the same process: options per second, the speed ratio and the largest relative difference.
2. Calibration of the five Heston parameters to a Heston-generated surface (10 expiries x 17 strikes): seconds
   and recovered parameters; then to every sample underlying's surface (synthetic source, the quotes the
   ``vol_surface`` asset fits): seconds per underlying.
3. SABR calibration seconds per slice on the same quotes, and the SVI / SABR / Heston RMSE per underlying
   (mean over slices, vol points).
4. Unless ``--skip-pipeline``: ``dg.materialize`` of option_quotes .. vol_surfaces + stochastic_vol_models for
   3 synthetic single names and the index, printing each step's seconds (the added end-of-day cost is the last
   step).
Timings depend on the machine and its load; the ratios measured in one process are what compares.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_svi import SESSION, sample_implied_vols  # noqa: E402

from risk_pipeline.defs.volatility.stochastic_vol import fit_models, summary_by_underlying, usable_quotes  # noqa: E402
from risk_pipeline.defs.volatility.surfaces import fit_surfaces  # noqa: E402
from risk_pipeline.quant.heston import HestonParams, calibrate_heston, heston_implied_vol, heston_price  # noqa: E402
from risk_pipeline.quant.sabr import calibrate_sabr  # noqa: E402


def surface_workload(seed: int) -> tuple[tuple, np.ndarray]:
    """``heston_price`` arguments of 100,000 options and their parameter rows."""
    rng = np.random.default_rng(seed)
    nu, nk = 20, 250
    p = np.column_stack(
        [
            rng.uniform(0.02, 0.09, nu),
            rng.uniform(1.0, 4.0, nu),
            rng.uniform(0.02, 0.09, nu),
            rng.uniform(0.3, 1.0, nu),
            rng.uniform(-0.9, -0.4, nu),
        ]
    )
    days = np.array([2, 7, 14, 21, 30, 45, 60, 91, 120, 150, 182, 240, 273, 365, 455, 547, 730, 1095, 1460, 1825])
    u, e, k = (x.ravel() for x in np.meshgrid(np.arange(nu), np.arange(days.size), np.arange(nk), indexing="ij"))
    t = days[e] / 365.0
    strike = 100.0 * np.exp(np.linspace(-3.0, 3.0, nk)[k] * np.sqrt(p[u, 0] * t))
    rows = np.column_stack([strike, days[e], k % 2 == 0, p[u]])
    return (100.0, strike, t, 0.03, 0.01, k % 2 == 0, *p[u].T), rows


def quantlib_prices(rows: np.ndarray, lobatto: bool) -> tuple[np.ndarray, float]:
    import QuantLib as ql

    today = ql.Date(20, 11, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    out = np.empty(len(rows))
    started = time.perf_counter()
    for i, (strike, days, call, v0, kappa, theta, xi, rho) in enumerate(rows):
        process = ql.HestonProcess(
            ql.YieldTermStructureHandle(ql.FlatForward(today, 0.03, dc)),
            ql.YieldTermStructureHandle(ql.FlatForward(today, 0.01, dc)),
            ql.QuoteHandle(ql.SimpleQuote(100.0)),
            v0,
            kappa,
            theta,
            xi,
            rho,
        )
        model = ql.HestonModel(process)
        engine = ql.AnalyticHestonEngine(model, 1e-12, 1_000_000) if lobatto else ql.AnalyticHestonEngine(model)
        option = ql.VanillaOption(
            ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, float(strike)),
            ql.EuropeanExercise(today + int(days)),
        )
        option.setPricingEngine(engine)
        out[i] = option.NPV()
    return out, time.perf_counter() - started


def bench_pricing(seed: int) -> None:
    args, rows = surface_workload(seed)
    heston_price(*(a[:50] if np.ndim(a) else a for a in args))  # compile / load the kernels
    best, cpu = np.inf, np.inf
    for _ in range(3):
        started, cpu_started = time.perf_counter(), time.process_time()
        prices = heston_price(*args)
        best, cpu = min(best, time.perf_counter() - started), min(cpu, time.process_time() - cpu_started)
    n = prices.size
    sample = np.random.default_rng(seed).choice(n, 200, replace=False)
    print("## Heston pricing (COS), 100,000 options: 20 underlyings x 20 expiries (2 d - 5 y) x 250 strikes\n")
    print("| engine | options/s | ratio to COS | max rel. diff. vs Lobatto (price > 1e-3) |")
    print("|---|---|---|---|")
    ref, secs_lob = quantlib_prices(rows[sample], lobatto=True)
    lag, secs_lag = quantlib_prices(rows[sample], lobatto=False)
    big = ref > 1e-3
    rel = np.abs(prices[sample] - ref)[big] / ref[big]
    rel_lag = np.abs(lag - ref)[big] / ref[big]
    cos_rate = n / best
    print(f"| COS (heston_price, best of 3) | {cos_rate:,.0f} | 1 | {rel.max():.1e} |")
    print(f"| COS per CPU-second (all threads) | {n / cpu:,.0f} | | |")
    for label, secs, diff in (
        ("Gauss-Laguerre 144", secs_lag, f"{rel_lag.max():.1e}"),
        ("Gauss-Lobatto 1e-12", secs_lob, "0"),
    ):
        rate = 200 / secs
        print(f"| QuantLib AnalyticHestonEngine, {label} | {rate:,.0f} | {cos_rate / rate:,.0f} | {diff} |")
    print()


def bench_calibration(seed: int, n_underlyings: int) -> None:
    true = HestonParams(0.035, 1.8, 0.06, 0.8, -0.65)
    expiries = np.array([7, 14, 30, 61, 91, 182, 273, 365, 547, 730]) / 365.0
    t, x = np.meshgrid(expiries, np.linspace(-1.6, 1.0, 17), indexing="ij")
    k = x * 0.25 * np.sqrt(t)
    vol = heston_implied_vol(true, t.ravel(), k.ravel())
    calibrate_heston(t.ravel(), k.ravel(), vol)  # compile
    started = time.perf_counter()
    fit = calibrate_heston(t.ravel(), k.ravel(), vol, initial=HestonParams(0.06, 3.0, 0.03, 0.4, -0.2))
    secs = time.perf_counter() - started
    print("## Heston calibration\n")
    print(
        f"Heston-generated surface, {vol.size} quotes, 10 expiries: {secs:.3f} s, RMSE {fit.rmse_vol_points:.2e} vol "
        f"points, max parameter error {np.max(np.abs(fit.params.as_array() / true.as_array() - 1)):.1e} (relative)\n"
    )
    iv = sample_implied_vols(seed, n_underlyings)
    usable = usable_quotes(iv)
    times, sabr_times = [], []
    for _, q in usable.groupby("underlying"):
        tt = q["time_to_expiry_years"].to_numpy(float)
        kk = np.log(q["strike"].to_numpy(float) / q["forward"].to_numpy(float))
        started = time.perf_counter()
        calibrate_heston(tt, kk, q["implied_vol"].to_numpy(float))
        times.append(time.perf_counter() - started)
        for _, g in q.groupby("expiry"):
            if len(g) >= 3:
                started = time.perf_counter()
                calibrate_sabr(
                    g["strike"], g["implied_vol"], float(g["forward"].iloc[0]), float(g["time_to_expiry_years"].iloc[0])
                )
                sabr_times.append(time.perf_counter() - started)
    print(
        f"Sample surfaces ({len(times)} underlyings, {SESSION}, seed {seed}): Heston calibration median "
        f"{np.median(times):.3f} s, max {np.max(times):.3f} s per underlying; SABR calibration median "
        f"{np.median(sabr_times) * 1e3:.1f} ms, max {np.max(sabr_times) * 1e3:.1f} ms per slice "
        f"({len(sabr_times)} slices)\n"
    )
    svi, _, _ = fit_surfaces(iv, 1)
    _, heston, cmp = fit_models(iv, svi, {}, 1.0, 1)
    summary = summary_by_underlying(cmp, heston).drop(columns="calibration_seconds")
    print("## Fit quality per underlying (mean RMSE per slice, vol points; Heston also over its whole surface)\n")
    print(summary.to_markdown(index=False))
    means = cmp[["svi_rmse_vol_points", "sabr_rmse_vol_points", "heston_rmse_vol_points"]].mean()
    print(
        f"\nall slices: SVI {means.iloc[0]:.3f}, SABR {means.iloc[1]:.3f}, Heston {means.iloc[2]:.3f}; best per slice: "
        + ", ".join(f"{k} {v}" for k, v in cmp["best_model"].value_counts().items())
        + "\n"
    )


def bench_pipeline() -> None:
    import dagster as dg

    from risk_pipeline.definitions import ALL_ASSETS
    from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource

    steps = {"option_quotes", "rates_curve", "dividend_yields", "implied_vols", "vol_surfaces", "stochastic_vol_models"}
    assets = [a for a in ALL_ASSETS if isinstance(a, dg.AssetsDefinition) and a.node_def.name in steps]
    with tempfile.TemporaryDirectory() as root:
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            assets,
            partition_key=SESSION.isoformat(),
            resources={
                "warehouse": WarehouseResource(url=str(Path(root) / "w.duckdb")),
                "market_data": MarketDataResource(kind="synthetic", n_underlyings=3),
                "exports": ExportsResource(root=str(Path(root) / "exports")),
            },
            instance=instance,
            run_config={
                "ops": {
                    "vol_surfaces": {"config": {"workers": 1, "smile_plots": False}},
                    "stochastic_vol_models": {"config": {"workers": 1}},
                }
            },
        )
        start: dict[str, float] = {}
        rows = []
        for record in instance.all_logs(result.run_id):
            event = record.dagster_event
            if event is None or event.step_key is None:
                continue
            if event.event_type_value == "STEP_START":
                start[event.step_key] = record.timestamp
            elif event.event_type_value == "STEP_SUCCESS":
                rows.append((event.step_key, record.timestamp - start[event.step_key]))
    print("## Step times, 3 synthetic single names and the index, one worker each (dg.materialize)\n")
    print(pd.DataFrame(rows, columns=["step", "seconds"]).round(2).to_markdown(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--underlyings", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    print(f"load average (1, 5, 15 min) at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    bench_pricing(args.seed)
    bench_calibration(args.seed, args.underlyings)
    if not args.skip_pipeline:
        bench_pipeline()


if __name__ == "__main__":
    main()
