"""One early-exercise grid build (``scenario_engine._grid_from_ranges``) alone: CPU seconds and the grid's bits.

``PYTHONPATH=TREE python bench/bench_grid_build.py [--capture FILE] [--repeat R] [--threads N]``: the build's inputs
(the prepared book, its ranges, the scenario count and ``moves_carry``) are either a synthetic book (4,700 options on
500 names, ``bench_grid_read.book``, under 1,000 scenarios with vol, rate and yield moves) or a pickle written by
``--save FILE`` from a synthetic run or by ``capture_builds`` (called from a run of a step: every build with at least
``min_americans`` Americans is pickled). The build is timed ``--repeat`` times (process CPU and wall seconds, median
and the list), with the CPU seconds of its parts (boundary solves, node prices, spline fits) from wrappers, and a
SHA-256 of every grid array's bits. Run it with ``PYTHONPATH`` at two trees (the code before and after), alternated.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import risk_pipeline.quant.scenario_engine as se

FIELDS = ("grid_mode", "grid_y0", "grid_dy", "grid_v0", "grid_dv", "grid_coef", "grid_bcoef", "grid_step")
FIELDS += ("grid_dcoef", "grid_dbcoef")


def synthetic(n_scenarios: int = 1000) -> tuple[Any, ...]:
    """A synthetic build's inputs: ``bench_grid_read``'s book under a set with vol, rate and yield moves."""
    from bench_grid_read import book, scenarios

    rng = np.random.default_rng(1)
    p = book(rng)
    sc = scenarios("fhs", rng, p, n_scenarios)
    prepared = se.prepare(p, 1.0, sc, "exact")
    return prepared, se._eep_ranges(prepared, sc), sc.n_scenarios, sc.moves_carry


def capture_builds(path: str, min_americans: int = 4000, limit: int = 0) -> None:
    """From here on, pickle the inputs of every ``_grid_from_ranges`` call with at least ``min_americans`` Americans
    to ``path.N`` (N from 0), for ``--capture``; with ``limit``, end the process after that many."""
    run = se._grid_from_ranges
    count = [0]

    def hook(book: Any, ranges: Any, n: int, moves: bool, **kw: Any) -> Any:
        if not kw and book.units.size - book.n_euro >= min_americans:
            Path(f"{path}.{count[0]}").write_bytes(pickle.dumps((book, ranges, n, moves)))
            count[0] += 1
            if count[0] == limit:
                os._exit(0)
        return run(book, ranges, n, moves, **kw)

    se._grid_from_ranges = hook


def digest(out: Any) -> str:
    h = hashlib.sha256()
    for f in FIELDS:
        h.update(np.ascontiguousarray(getattr(out, f)).tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", default=None)
    ap.add_argument("--save", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--parts", action="store_true", help="time the parts (wrappers) in one more build")
    a = ap.parse_args()
    args = pickle.loads(Path(a.capture).read_bytes()) if a.capture else synthetic()
    if a.save:
        Path(a.save).write_bytes(pickle.dumps(args))
    book = args[0]
    n_am = book.units.size - book.n_euro
    print(f"{se.__file__}; {n_am} Americans, {args[2]} scenarios, moves_carry {args[3]}; load {os.getloadavg()[0]:.1f}")
    out = se._grid_from_ranges(*args)  # compiled or loaded
    first = digest(out)
    del out
    cpu, wall = [], []
    for _ in range(a.repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        out = se._grid_from_ranges(*args)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        assert digest(out) == first
        del out
    ru = os.times()
    med = statistics.median
    print(f"build: CPU s median {med(cpu):.3f} {[round(x, 3) for x in cpu]}; wall median {med(wall):.3f}; ", end="")
    print(f"process user {ru.user:.1f} system {ru.system:.1f}; bits {first}")
    if a.parts:
        import risk_pipeline.quant.american_alo as alo

        spent: dict[str, float] = {}

        def timed(mod: Any, name: str) -> None:
            f = getattr(mod, name)

            def w(*x: Any, **k: Any) -> Any:
                c = time.process_time()
                try:
                    return f(*x, **k)
                finally:
                    spent[name] = spent.get(name, 0.0) + time.process_time() - c

            setattr(mod, name, w)

        for name in ("_grid_solve", "_eep_nodes", "_grid_prices", "_spline_coefficients", "_kink_check"):
            timed(se, name)
        timed(alo, "row_premiums")
        se.row_premiums = alo.row_premiums
        c0 = time.process_time()
        se._grid_from_ranges(*args)
        total = time.process_time() - c0
        print(f"parts (CPU s of {total:.3f}): " + ", ".join(f"{k} {v:.3f}" for k, v in spent.items()))


if __name__ == "__main__":
    main()
