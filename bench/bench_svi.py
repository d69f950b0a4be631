"""SVI surface calibration of the sample universe: the batched method against the legacy one.

Usage: ``python bench/bench_svi.py [--underlyings 50] [--seed 7] [--workers 2]``

Builds the option slices the ``vol_surface`` asset fits (synthetic source, session 2026-11-20,
implied vols by ``implied_vol_frame``, valid out-of-the-money quotes) and fits every underlying with
``fit_underlying(method="legacy")`` per underlying (per-slice Nelder-Mead + SLSQP polish, SLSQP
constrained second pass) and ``fit_underlyings`` on all of them (the batched method: one batched
quasi-explicit search, cutting-plane constrained second pass), both in this process on one core;
then the batched method through the asset's own ``fit_surfaces`` with ``--workers`` processes.
Prints a Markdown table: slices per second, RMSE in vol points (median / 95th percentile / max),
butterfly and calendar violations before (first pass) and after the constrained second pass, and
the speed ratio. The ratios, measured in one process, are the figures to compare across machines.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from risk_pipeline.defs.volatility.surfaces import fit_surfaces, implied_vol_frame  # noqa: E402
from risk_pipeline.quant.surfaces import (  # noqa: E402
    DEFAULT_GRID,
    FIT_BATCHED,
    FIT_LEGACY,
    UnderlyingSurface,
    black_vega_weight,
    fit_underlying,
    fit_underlyings,
    otm_mask,
)
from risk_pipeline.quant.svi import SviFit, SviSurface, fit_svi_slice, fit_svi_slices  # noqa: E402
from risk_pipeline.sources.synthetic import SyntheticSource  # noqa: E402

SESSION = dt.date(2026, 11, 20)


def sample_implied_vols(seed: int, n_underlyings: int) -> pd.DataFrame:
    """implied_vols rows of the session's latest snapshot, as the implied_vols asset computes them."""
    source = SyntheticSource(seed=seed, n_underlyings=n_underlyings)
    quotes = source.option_quotes(SESSION)
    return implied_vol_frame(quotes, source.rates_curve(SESSION, SESSION), source.dividend_yields(SESSION, SESSION))


def usable_quotes(iv: pd.DataFrame) -> pd.DataFrame:
    """The quotes ``fit_surfaces`` fits: status OK and out of the money."""
    return iv[(iv["status"] == "OK") & otm_mask(iv["strike"], iv["forward"], iv["option_type"] == "C")]


def underlying_inputs(usable: pd.DataFrame) -> list[tuple[str, tuple[np.ndarray, ...]]]:
    """``fit_underlying`` arguments per underlying, as the vol_surfaces asset builds them."""
    out = []
    for name, g in usable.groupby("underlying", sort=True):
        out.append(
            (
                str(name),
                (
                    g["expiry"].to_numpy(),
                    g["time_to_expiry_years"].to_numpy(float),
                    np.log(g["strike"].to_numpy(float) / g["forward"].to_numpy(float)),
                    g["implied_vol"].to_numpy(float),
                ),
            )
        )
    return out


def first_pass(inputs: list[tuple[str, tuple[np.ndarray, ...]]], method: str) -> list[list[SviFit]]:
    """The free (first-pass) fits of every underlying's slices, sorted by expiry; batched: one batch."""
    per_underlying = []
    for _, (labels, t, k, iv) in inputs:
        slices = []
        for label in sorted(set(labels.tolist()), key=str):
            sel = labels == label
            tt = float(t[sel][0])
            w = iv[sel] ** 2 * tt
            slices.append((k[sel], w, black_vega_weight(k[sel], w), tt))
        per_underlying.append(slices)
    flat = [s for slices in per_underlying for s in slices]
    if method == FIT_BATCHED:
        fits = iter(fit_svi_slices(*(list(col) for col in zip(*flat, strict=True))))
    else:
        fits = iter([fit_svi_slice(*s) for s in flat])
    return [sorted((next(fits) for _ in slices), key=lambda f: f.time_years) for slices in per_underlying]


def violations(fits: list[SviFit]) -> tuple[int, int]:
    """(slices with butterfly arbitrage, slices flagged for calendar arbitrage on the stored grid)."""
    calendar = SviSurface(tuple(fits)).calendar_check(DEFAULT_GRID)
    return sum(not f.butterfly_arbitrage_free for f in fits), sum(not ok for ok in calendar.per_slice_arbitrage_free)


def run(inputs: list[tuple[str, tuple[np.ndarray, ...]]], method: str) -> dict[str, float]:
    """Fit every underlying with ``method``; timings and the table's statistics."""
    start = time.perf_counter()
    first = first_pass(inputs, method)
    first_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if method == FIT_BATCHED:
        fitted = fit_underlyings([args for _, args in inputs])
        surfaces = [s for s in fitted if isinstance(s, UnderlyingSurface)]
    else:
        surfaces = [fit_underlying(*args, method=method) for _, args in inputs]
    seconds = time.perf_counter() - start
    rmse = np.array([f.rmse_vol_points for s in surfaces for f in s.fits])
    before = [violations(f) for f in first]
    return {
        "slices": float(rmse.size),
        "seconds": seconds,
        "first_pass_seconds": first_seconds,
        "rmse_median": float(np.median(rmse)),
        "rmse_p95": float(np.percentile(rmse, 95)),
        "rmse_max": float(np.max(rmse)),
        "butterfly_before": float(sum(b for b, _ in before)),
        "calendar_before": float(sum(c for _, c in before)),
        "butterfly_after": float(sum(not f.butterfly_arbitrage_free for s in surfaces for f in s.fits)),
        "calendar_after": float(sum(not ok for s in surfaces for ok in s.calendar.per_slice_arbitrage_free)),
        "calendar_quoted_after": float(sum(not ok for s in surfaces for ok in s.calendar_quoted)),
        "refits": float(sum("arbitrage_constrained" in f.method for s in surfaces for f in s.fits)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--underlyings", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    iv = sample_implied_vols(args.seed, args.underlyings)
    inputs = underlying_inputs(usable_quotes(iv))
    results = {FIT_LEGACY: run(inputs, FIT_LEGACY), FIT_BATCHED: run(inputs, FIT_BATCHED)}
    legacy_rate = results[FIT_LEGACY]["slices"] / results[FIT_LEGACY]["seconds"]
    print(f"{len(inputs)} underlyings, {int(results[FIT_LEGACY]['slices'])} slices (seed {args.seed}, {SESSION})\n")
    print(
        "| method | slices/s (1 core) | speed vs legacy | first pass s | RMSE vol pts median / p95 / max "
        "| butterfly before -> after | calendar before -> after | calendar where quoted | refits |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        rate = r["slices"] / r["seconds"]
        print(
            f"| {name} | {rate:.1f} | {rate / legacy_rate:.1f}x | {r['first_pass_seconds']:.2f} "
            f"| {r['rmse_median']:.4f} / {r['rmse_p95']:.4f} / {r['rmse_max']:.4f} "
            f"| {int(r['butterfly_before'])} -> {int(r['butterfly_after'])} "
            f"| {int(r['calendar_before'])} -> {int(r['calendar_after'])} | {int(r['calendar_quoted_after'])} "
            f"| {int(r['refits'])} |"
        )
    print()
    for workers in sorted({1, args.workers}):
        start = time.perf_counter()
        surface_rows, _, _ = fit_surfaces(iv, workers=workers)
        seconds = time.perf_counter() - start
        rate = len(surface_rows) / seconds
        print(
            f"fit_surfaces (the asset's path, batched, workers={workers}, vol_surface rows included): "
            f"{len(surface_rows)} slices in {seconds:.2f} s = {rate:.1f} slices/s "
            f"({rate / legacy_rate:.1f}x the legacy 1-core rate)"
        )


if __name__ == "__main__":
    main()
