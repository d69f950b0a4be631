"""The exact American engine's array kernels (``american_alo.py``), old and new code side by side.

Run ``python bench/bench_alo_kernels.py [--ref REV] [--rows N] [--repeat R]``: the current module and the one at
git revision ``REF`` (``bench/old_code.py``) in one process, on the same fixed random put-space rows (rates 0 to
10 %, yields -2 to 12 %, so both ``q > r`` and ``r > q``, vols 5 to 80 %, 3 days to 3 years):

* ``exact solve`` / ``grid solve``: ``boundary_kernel`` on ``EXACT_TABLES`` / ``GRID_TABLES`` (``NEWTON_STEP_TOL``);
* ``exact price`` / ``exact greeks``: ``premium_kernel`` at one spot a row (deep in the money to far out of it),
  without and with the delta and gamma integrals;
* ``grid rows``: ``premium_kernel`` (``rows``; after 330763d ``grouped``) at 16 spots a row on ``GRID_TABLES``.

Each kernel runs single-threaded (``start = 0, stop = n``), old and new alternated ``R`` times; prints the CPU
seconds of the thread (``time.thread_time``) of each run, the best and the median of each, the ratios new / old and
the load average.

``--check`` instead compares the two versions bit for bit (no timing): the kernels' outputs above and
``american_points`` (price, delta, gamma, theta) on ``N`` random options in every regime (calls and puts, ``q > r``
and ``r > q``, negative rates, short and long maturities, deep in and out of the money, with and without Greeks).

``--compile`` times the cold compilation of ``boundary_kernel`` and ``premium_kernel`` (their one signature
each, as ``american_points`` calls them) of each version, each in a fresh process with an empty
``NUMBA_CACHE_DIR``: the process CPU seconds of the first calls (compilation; the run itself is one row).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

BASE = "12871c8"


def modules(ref: str) -> tuple[ModuleType, ModuleType]:
    from old_code import module_at

    from risk_pipeline.quant import american_alo

    return module_at(ref, "risk_pipeline.quant.american_alo"), american_alo


def put_rows(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Put-space rows of the single-boundary regime and a spot of each (unit strike)."""
    rng = np.random.default_rng(seed)
    pr = rng.uniform(0.0, 0.10, n)
    pq = rng.uniform(-0.02, 0.12, n)
    pr[rng.random(n) < 0.05] = 0.0
    sig = rng.uniform(0.05, 0.80, n)
    t = np.exp(rng.uniform(np.log(3 / 365), np.log(3.0), n))
    x = np.exp(rng.normal(0.0, 1.5, n) * sig * np.sqrt(t))
    x_rows = np.exp(np.linspace(-2.0, 2.0, 16)[None, :] * (sig * np.sqrt(t))[:, None])
    return {"pr": pr, "pq": pq, "sig": sig, "t": t, "x": x, "x_rows": x_rows}


def run_solve(mod: ModuleType, rows: dict[str, np.ndarray], tab: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    n = rows["pr"].shape[0]
    x_max = mod.exercise_limits(rows["pr"], rows["pq"])
    s = np.empty((n, tab[0].shape[0]))
    steps = np.empty(n, dtype=np.intp)
    b_t = np.empty(n)
    # the kernel's ``warm`` flag (QD+ start: false) since backtest13, its ``mode`` (QD+: 0) and ``state`` (none: an
    # empty 2-d array) since bt16; older code has no such arguments
    names = mod.boundary_kernel.py_func.__code__.co_varnames
    warm = (np.bool_(False),) if "warm" in names else (0,) if "mode" in names else ()
    state = (np.empty((0, 0)),) if "state" in names else ()
    mod.boundary_kernel(
        rows["pr"], rows["pq"], rows["sig"], rows["t"], x_max, float(mod.NEWTON_STEP_TOL), tab, *warm, s, steps, b_t,
        *state, 0, n,
    )  # fmt: skip
    return s, steps, b_t


def run_premium(
    mod: ModuleType, rows: dict[str, np.ndarray], s: np.ndarray, tab: tuple[np.ndarray, ...], greeks: bool
) -> tuple[np.ndarray, ...]:
    n = rows["pr"].shape[0]
    x_max = mod.exercise_limits(rows["pr"], rows["pq"])
    out = np.empty(n), np.empty(n), np.empty(n)
    row = np.arange(n, dtype=np.intp)
    b = (rows["pr"], rows["pq"], rows["sig"], rows["t"], x_max)
    # up to 330763d the 2-d ``rows`` arguments (``_NO_ROWS``); after it one 1-d ``moved``
    last = mod._NO_ROWS if hasattr(mod, "_NO_ROWS") else (np.zeros(0, dtype=np.bool_),)
    mod.premium_kernel(rows["x"], row, *b, s, tab, np.bool_(greeks), *out, np.bool_(False), *last, 0, n)
    return out


def run_rows(mod: ModuleType, rows: dict[str, np.ndarray], s: np.ndarray, tab: tuple[np.ndarray, ...]) -> np.ndarray:
    n = rows["pr"].shape[0]
    x_max = mod.exercise_limits(rows["pr"], rows["pq"])
    x = rows["x_rows"]
    out = np.empty(x.shape)
    moved = np.zeros(x.shape, dtype=np.bool_)
    no_x, no_row = np.empty(0), np.empty(0, dtype=np.intp)
    b = (rows["pr"], rows["pq"], rows["sig"], rows["t"], x_max)
    if not hasattr(mod, "_NO_ROWS"):  # the ``grouped`` mode: each row's spots at offsets of the flat spots
        offsets = np.arange(n + 1) * x.shape[1]
        flat = out.reshape(-1)
        yes, no = np.bool_(True), np.bool_(False)
        mod.premium_kernel(x.reshape(-1), offsets, *b, s, tab, no, flat, no_x, no_x, yes, moved.reshape(-1), 0, n)
        return out
    mod.premium_kernel(
        no_x, no_row, *b, s, tab, np.bool_(False), no_x, no_x, no_x, np.bool_(True), x, out, moved, 0, n
    )  # fmt: skip
    return out


def options(n: int, seed: int = 2) -> dict[str, np.ndarray]:
    """Options in every regime of the engine for ``american_points``."""
    rng = np.random.default_rng(seed)
    t = np.exp(rng.uniform(np.log(1 / 365), np.log(5.0), n))
    sig = rng.uniform(0.03, 1.0, n)
    k = rng.uniform(50.0, 150.0, n)
    sp = k * np.exp(rng.normal(0.0, 1.0, n) * sig * np.sqrt(t) * 1.5)
    r = rng.uniform(-0.01, 0.10, n)
    q = rng.uniform(-0.01, 0.12, n)
    sig[rng.random(n) < 0.01] = 0.0
    call = rng.random(n) < 0.5
    return {"sp": sp, "k": k, "t": t, "sig": sig, "r": r, "q": q, "call": call}


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit (NaNs at the same places count as equal)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "f":
        return bool(np.array_equal(a.view(np.int64), b.view(np.int64)) or np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def check(old: ModuleType, new: ModuleType, n: int) -> int:
    rows = put_rows(n)
    bad = 0
    for name in ("EXACT_TABLES", "GRID_TABLES", "GREEKS_TABLES"):
        so = run_solve(old, rows, getattr(old, name))
        sn = run_solve(new, rows, getattr(new, name))
        for label, a, b in zip(("s", "steps", "b_t"), so, sn, strict=True):
            ok = same(a, b)
            bad += not ok
            print(f"{name} solve {label}: {'identical' if ok else 'DIFFERENT'} ({a.size} values)")
        for greeks in (False, True):
            po = run_premium(old, rows, so[0], getattr(old, name), greeks)
            pn = run_premium(new, rows, sn[0], getattr(new, name), greeks)
            for label, a, b in zip(("price", "delta", "gamma"), po, pn, strict=True):
                ok = same(a, b)
                bad += not ok
                print(f"{name} premium greeks={greeks} {label}: {'identical' if ok else 'DIFFERENT'}")
        ro, rn = run_rows(old, rows, so[0], getattr(old, name)), run_rows(new, rows, sn[0], getattr(new, name))
        ok = same(ro, rn)
        bad += not ok
        print(f"{name} row premiums: {'identical' if ok else 'DIFFERENT'} ({ro.size} values)")
    o = options(n)
    args = (o["sp"], o["k"], o["t"], o["sig"], o["r"], o["q"], o["call"])
    for kw in ({}, {"price_only": True}, {"greeks": True}, {"greeks": True, "gamma_bump": False}):
        for tol in (old.NEWTON_STEP_TOL, old.NEWTON_STEP_TOL_GREEKS):
            a = old.american_points(*args, tol, **kw)
            b = new.american_points(*args, tol, **kw)
            ok = all(same(x, y) for x, y in zip(a, b, strict=True))
            bad += not ok
            print(f"american_points {kw} tol={tol:g}: {'identical' if ok else 'DIFFERENT'} (4 x {n} values)")
    print("all identical" if not bad else f"{bad} DIFFERENT")
    return bad


def timed(fn: Any) -> float:
    t0 = time.thread_time()  # the kernels run in this thread (``start = 0, stop = n``)
    fn()
    return time.thread_time() - t0


def bench(old: ModuleType, new: ModuleType, n: int, repeat: int) -> None:
    rows = put_rows(n)
    s_exact = run_solve(new, rows, new.EXACT_TABLES)[0]
    s_grid = run_solve(new, rows, new.GRID_TABLES)[0]
    cases = {
        "exact solve": lambda m: run_solve(m, rows, m.EXACT_TABLES),
        "grid solve": lambda m: run_solve(m, rows, m.GRID_TABLES),
        "exact price": lambda m: run_premium(m, rows, s_exact, m.EXACT_TABLES, False),
        "exact greeks": lambda m: run_premium(m, rows, s_exact, m.EXACT_TABLES, True),
        "grid rows": lambda m: run_rows(m, rows, s_grid, m.GRID_TABLES),
    }
    for fn in cases.values():  # compile both
        fn(old)
        fn(new)
    print(f"{n} rows, load average {os.getloadavg()}")
    for label, fn in cases.items():
        t_old, t_new = [], []
        for _ in range(repeat):
            t_old.append(timed(lambda fn=fn: fn(old)))
            t_new.append(timed(lambda fn=fn: fn(new)))
        print(
            f"{label:13s} old {' '.join(f'{x:.3f}' for x in t_old)}  new {' '.join(f'{x:.3f}' for x in t_new)}"
            f"  best {min(t_old):.3f} -> {min(t_new):.3f} CPU s  ratio {min(t_new) / min(t_old):.3f}"
            f"  median ratio {np.median(t_new) / np.median(t_old):.3f}"
        )
    print(f"load average {os.getloadavg()}")


def compile_child(which: str, ref: str) -> None:
    """In a fresh process (empty cache): CPU seconds of the first calls of the two kernels."""
    if which == "old":
        from old_code import module_at

        mod = module_at(ref, "risk_pipeline.quant.american_alo")
    else:
        from risk_pipeline.quant import american_alo as mod
    rows = put_rows(1)
    out = {}
    t0 = time.process_time()
    s = run_solve(mod, rows, mod.EXACT_TABLES)[0]
    out["boundary_kernel"] = time.process_time() - t0
    t0 = time.process_time()
    run_premium(mod, rows, s, mod.EXACT_TABLES, True)
    out["premium_kernel"] = time.process_time() - t0
    print(json.dumps(out))


def compile_bench(ref: str, repeat: int) -> None:
    got: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for r in range(repeat):
        for which in ("old", "new"):
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, NUMBA_CACHE_DIR=cache, RISK_PIPELINE_KERNEL_WARMUP="0", PYTHONPATH=str(ROOT))
                load = os.getloadavg()[0]
                res = subprocess.run(
                    [sys.executable, __file__, "--compile-child", which, "--ref", ref],
                    env=env, check=True, capture_output=True, text=True,
                )  # fmt: skip
                d = json.loads(res.stdout.strip().splitlines()[-1])
                total = sum(d.values())
                got[which].append(d)
                print(
                    f"run {r + 1} {which}: boundary_kernel {d['boundary_kernel']:.2f}  premium_kernel "
                    f"{d['premium_kernel']:.2f}  total {total:.2f} CPU s (load {load:.1f})"
                )
    for which, runs in got.items():
        med = {key: float(np.median([d[key] for d in runs])) for key in runs[0]}
        print(
            f"median of {len(runs)} {which}: boundary_kernel {med['boundary_kernel']:.2f}  premium_kernel "
            f"{med['premium_kernel']:.2f}  total {float(np.median([sum(d.values()) for d in runs])):.2f} CPU s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default=BASE, help="git revision of the old code")
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="compare old and new bit for bit")
    ap.add_argument("--compile", action="store_true", help="cold compilation of the kernels, old and new")
    ap.add_argument("--compile-child", choices=("old", "new"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.compile_child:
        compile_child(a.compile_child, a.ref)
        return
    if a.compile:
        compile_bench(a.ref, a.repeat)
        return
    old, new = modules(a.ref)
    if a.check:
        sys.exit(1 if check(old, new, a.rows) else 0)
    bench(old, new, a.rows, a.repeat)


if __name__ == "__main__":
    main()
