"""The early-exercise grid read (``scenario_engine._american_grid_values``) alone, one thread, on a synthetic book.

``PYTHONPATH=TREE python bench/bench_grid_read.py [--options N] [--repeat R]``: a book of 4,700 options on 500 names
(99.5 % American) under 10,000 scenarios of three kinds (``fhs``: vol scales, rate and yield shifts per row; ``plain``:
vol scales only; ``gap``: 250 base rows x 40 market-wide gaps, read in runs); the kernel's inputs are captured from
``evaluate`` and the kernel called on the first N options (best of R; CPU seconds, ns a read), with a hash of the
prices' bits. Run it with ``PYTHONPATH`` at two trees (the code before and after) to compare both, side by side.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from typing import Any

import numpy as np

import risk_pipeline.quant.scenario_engine as se
from risk_pipeline.quant.gap_risk import combined_gap_scenarios
from risk_pipeline.quant.portfolio import Portfolio


def book(rng: np.random.Generator, n_names: int = 500, n_opt: int = 4700) -> Portfolio:
    spot = rng.uniform(20, 300, n_names)
    sym = np.concatenate([rng.integers(0, n_names, n_opt), np.arange(n_names)])
    m = sym.size
    opt = np.arange(m) < n_opt
    return Portfolio(
        symbols=tuple(f"S{i}" for i in range(n_names)),
        spot=spot,
        symbol_index=sym,
        quantity=rng.integers(-5, 6, m).astype(float),
        multiplier=np.where(opt, 100.0, 1.0),
        is_option=opt,
        is_call=rng.random(m) < 0.5,
        strike=spot[sym] * np.exp(rng.normal(0.0, 0.15, m)),
        time_years=rng.uniform(0.05, 1.5, m),
        implied_vol=rng.uniform(0.15, 0.6, m),
        rate=np.full(m, 0.045),
        dividend_yield=rng.uniform(0.0, 0.02, m),
        is_american=opt & (rng.random(m) < 0.995),
    )


def scenarios(kind: str, rng: np.random.Generator, p: Portfolio, n: int = 10_000) -> se.ScenarioSet:
    def moves(rows: int) -> dict[str, Any]:
        return {
            "spot_shock_rel": np.expm1(rng.normal(0, 0.02, (rows, p.n_symbols))),
            "vol_scale": np.exp(rng.normal(0, 0.05, (rows, p.n_symbols))),
        }

    if kind == "plain":
        return se.ScenarioSet(**moves(n))
    shifts = lambda rows: {  # noqa: E731
        "rate_shift_abs": rng.normal(0, 0.0008, rows),
        "dividend_shift_abs": rng.normal(0, 0.0003, (rows, p.n_symbols)),
    }
    if kind == "fhs":
        return se.ScenarioSet(**moves(n), **shifts(n))
    base = se.ScenarioSet(**moves(250), **shifts(250))
    gap = np.expm1(rng.uniform(0.5, 1.5, p.n_symbols)[None, :] * np.log1p(rng.normal(0.0, 0.03, 20))[:, None])
    return combined_gap_scenarios(base, [np.vstack([gap, -gap])], n, 0)


def captured(kind: str) -> tuple[Any, ...]:
    """The grid read's arguments (without ``start, stop``) in ``evaluate`` of the kind's set (one chunk)."""
    rng = np.random.default_rng(1)
    p = book(rng)
    sc = scenarios(kind, rng, p)
    got: list[tuple[Any, ...]] = []
    run = se.run_chunked

    def hook(kernel: Any, n: int, *args: Any) -> None:
        if kernel is se._american_grid_values and not got:
            got.append(tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args))
        run(kernel, n, *args)

    se.run_chunked = hook
    try:
        se.evaluate(p, sc, 7.0, american="eep_grid", per_symbol=True, chunk_size=sc.n_scenarios)
    finally:
        se.run_chunked = run
    return got[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--options", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    print(f"{se.__file__}; load {os.getloadavg()[0]:.1f}")
    for kind in ("fhs", "plain", "gap"):
        args = captured(kind)
        values, n_nan = args[-2], args[-1]
        m = min(a.options, values.shape[0])
        se._american_grid_values(*args, 0, 1)  # compiled or loaded
        best = min(
            (lambda c: (se._american_grid_values(*args, 0, m), time.process_time() - c)[1])(time.process_time())
            for _ in range(a.repeat)
        )
        digest = hashlib.sha256(values[:m].tobytes() + n_nan[:m].tobytes()).hexdigest()[:16]
        print(
            f"{kind:5s}: {m} options x {values.shape[1]}: {best:.3f} CPU s, {best / m / values.shape[1] * 1e9:.1f} ns "
            f"a read; prices' bits {digest}"
        )


if __name__ == "__main__":
    main()
