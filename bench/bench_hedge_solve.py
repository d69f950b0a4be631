"""CPU seconds of one recorded ``solve_hedge`` call, and whether it returns the recorded hedge.

``python bench/bench_hedge_solve.py OUT/input_<k>.pkl [--time-limit S] [--reference OUT/sol_<k>.pkl] [--repeat N]
[--save SOL.pkl]``:
the candidates and targets ``bench_hedge_phases.py --inputs`` pickled, solved again by the ``solve_hedge`` of the
code on ``PYTHONPATH`` (its first entry; old code: a worktree of it) with the recorded time limit (or ``S``).
Printed per run: process CPU and wall seconds, the load average before and after, the status, the cost, the lines,
the message, and whether the quantities and cost are bit for bit those of ``--reference`` (a recorded solution);
``--save`` writes the last run's solution (a ``--reference`` for another run).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs")
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--reference", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--save", default=None)
    a = ap.parse_args(argv)
    root = Path(os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parents[1])).split(os.pathsep)[0])
    sys.path.insert(0, str(root))
    import numpy as np

    from risk_pipeline.quant.hedging import solve_hedge

    d = pickle.loads(Path(a.inputs).read_bytes())
    ref = pickle.loads(Path(a.reference).read_bytes()) if a.reference else None
    limit = a.time_limit if a.time_limit is not None else d["time_limit"]
    print(f"code: {root}; {d['hc'].n} candidates, time limit {limit:g} s")
    for _ in range(a.repeat):
        load0, c0, w0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            sol = solve_hedge(d["hc"], d["t"], time_limit=limit)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        same = (
            ""
            if ref is None
            else (
                f"; same quantities and cost as the reference: "
                f"{bool(np.array_equal(sol.quantity, ref.quantity) and sol.cost == ref.cost)}"
            )
        )
        print(
            f"CPU {cpu:.2f} s, wall {wall:.2f} s, load {load0:.2f} -> {os.getloadavg()[0]:.2f}: {sol.status}, cost "
            f"{sol.cost!r}, {int((sol.quantity > 0).sum())} lines{same}\n  {sol.message}"
        )
    if a.save:
        Path(a.save).write_bytes(pickle.dumps(sol))
    return 0


if __name__ == "__main__":
    sys.exit(main())
