"""CPU seconds of vol_forecasts' GARCH/GJR fits and of the per-symbol forecasts, with a dump for bit-for-bit checks.

``python bench/bench_garch_fits.py [--warehouse PATH] [--symbols N] [--repeat 2] [--dump FILE]`` builds the
``vol_forecasts`` asset's per-symbol histories (``bench_vol_forecasts.histories``: the asset's look-back and
walk-forward settings, session ``--date``) from the ``market_prices`` of a stored warehouse (read only; pass a
copy) or, without ``--warehouse``, from the synthetic market (seed 7, 50 names), and times in this process
(``time.process_time``, best of ``--repeat``):

* ``walk-forward fits``: every ``fit_garch`` call ``walk_forward`` makes (GARCH and GJR at each refit origin,
  each warm-started from the model's previous fit);
* ``cold fits``: ``fit_garch`` without a previous fit on each symbol's last 500 returns, GARCH and GJR (the
  first fit of each name in ``var_backtest``'s rolling refits);
* ``forecast_volatility``: the whole per-symbol computation of the asset (fits, filters, XGBoost, scoring).

Only public functions are called, so the script runs unchanged against an older checkout (copy it there) to
compare old and new code; ``--dump`` pickles every fit and every forecast, row and score for ``--compare``:
``python bench/bench_garch_fits.py --compare OLD NEW`` reports how many values differ in their bits.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

COLD_WINDOW = 500


def _walk_forward_fits(vf: Any, hist: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """Every fit ``walk_forward`` makes, in its order (the same refit origins and warm starts)."""
    out: dict[str, Any] = {}
    for symbol, h in hist.items():
        r = h.returns
        n = r.size
        start = min(cfg.min_train - 1, n - 1)
        refits = sorted({*range(start, n, cfg.refit_every), n - 1})
        for asymmetric in (False, True):
            previous = None
            fits = []
            for s in refits:
                previous = vf.fit_garch(r[: s + 1], asymmetric=asymmetric, previous=previous)
                fits.append(previous)
            out[f"{symbol}/{int(asymmetric)}"] = fits
    return out


def _cold_fits(vf: Any, hist: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for symbol, h in hist.items():
        for asymmetric in (False, True):
            try:
                out[f"{symbol}/{int(asymmetric)}"] = vf.fit_garch(h.returns[-COLD_WINDOW:], asymmetric=asymmetric)
            except RuntimeError as exc:
                out[f"{symbol}/{int(asymmetric)}"] = str(exc)
    return out


def _forecasts(vf: Any, hist: dict[str, Any], cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for symbol, h in hist.items():
        res = vf.forecast_volatility(h, cfg)
        out[symbol] = (res.walk_forward.forecast_variance, res.walk_forward.garch_params, res.forecasts)
    return out


def _bits(value: Any) -> list[bytes]:
    """The bytes of every float in a fit, forecast array, row or nested container (strings as they are)."""
    if isinstance(value, np.ndarray):
        return [np.ascontiguousarray(value, dtype=float).tobytes()]
    if dataclasses.is_dataclass(value):
        return [
            np.array([getattr(value, f.name)], dtype=float).tobytes()
            if isinstance(getattr(value, f.name), float | int | None)
            else str(getattr(value, f.name)).encode()
            for f in dataclasses.fields(value)
        ]
    if isinstance(value, dict):
        return [b for k in sorted(value, key=str) for b in [str(k).encode(), *_bits(value[k])]]
    if isinstance(value, list | tuple):
        return [b for v in value for b in _bits(v)]
    return [str(value).encode()]


def compare(old_path: str, new_path: str) -> int:
    old, new = (pickle.loads(Path(p).read_bytes()) for p in (old_path, new_path))
    status = 0
    for part in old:
        a, b = _bits(old[part]), _bits(new[part])
        differing = sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))
        print(f"{part}: {len(old[part])} entries, {len(a)} items compared, {differing} differ in their bits")
        status |= differing > 0
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", default="2026-12-03", help="session (default 2026-12-03)")
    parser.add_argument("--warehouse", help="DuckDB warehouse whose market_prices to read (default: synthetic)")
    parser.add_argument("--symbols", type=int, default=0, help="first N symbols only (0: all)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each part (best CPU time kept)")
    parser.add_argument("--dump", help="pickle the fits and forecasts here")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two dumps bit for bit")
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    from bench_vol_forecasts import histories, load_bars

    from risk_pipeline.defs.volatility.forecasts import VolForecastSettings
    from risk_pipeline.quant import vol_forecast as vf

    date = dt.date.fromisoformat(args.date)
    settings = VolForecastSettings()
    cfg = vf.VolForecastConfig(min_train=settings.min_train, refit_every=settings.refit_every)
    hist = histories(load_bars(date, settings, args.warehouse), date, settings)
    if args.symbols:
        hist = dict(list(hist.items())[: args.symbols])
    _forecasts(vf, dict(list(hist.items())[:1]), cfg)  # imports, kernels and first calls outside the timing
    _cold_fits(vf, dict(list(hist.items())[:1]))
    parts = {
        "walk-forward fits": lambda: _walk_forward_fits(vf, hist, cfg),
        "cold fits": lambda: _cold_fits(vf, hist),
        "forecast_volatility": lambda: _forecasts(vf, hist, cfg),
    }
    print(f"{ROOT}: {len(hist)} symbols, session {date}, load {os.getloadavg()[0]:.1f}")
    results: dict[str, Any] = {}
    for name, fn in parts.items():
        best = float("inf")
        for _ in range(args.repeat):
            started = time.process_time()
            results[name] = fn()
            best = min(best, time.process_time() - started)
        count = sum(len(v) if isinstance(v, list) else 1 for v in results[name].values())
        print(f"   {name:20s} {best:7.2f} CPU s ({count} {'fits' if 'fits' in name else 'symbols'})")
    print(f"   load after {os.getloadavg()[0]:.1f}")
    if args.dump:
        Path(args.dump).write_bytes(pickle.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
