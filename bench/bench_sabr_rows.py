"""``sabr_rows`` (the SABR fits and density checks of ``stochastic_vol_models``) of every underlying of a snapshot, one
after another on one thread: CPU seconds, and the rows saved to compare two codes bit for bit.

``python bench/bench_sabr_rows.py run INPUTS.pkl [--code DIR] [--repeat 3] [--save OUT.pkl]``: the usable quotes of
every underlying of ``INPUTS.pkl`` (``bench_stochastic_vol.py dump``), ``sabr_rows(quotes, 1.0)`` of each (a first
untimed underlying loads the kernels); prints the thread CPU seconds of each repeat, and of ``calibrate_sabr`` and
the density checks inside it; ``--code DIR`` imports the package from another checkout (old code).

``python bench/bench_sabr_rows.py compare A.pkl B.pkl``: every field of every row, floats compared as bytes.
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run(a: argparse.Namespace) -> None:
    sys.path.insert(0, a.code or str(ROOT))
    from risk_pipeline.defs.volatility import stochastic_vol as sv

    print(f"code {Path(sv.__file__).resolve()}")
    with open(a.inputs, "rb") as f:
        iv = pickle.load(f)["iv"]
    usable = sv.usable_quotes(iv)
    jobs = [g for _, g in usable.groupby("underlying", sort=True)]
    spent: collections.Counter[str] = collections.Counter()
    for name in ("calibrate_sabr", "density_check", "density_checks"):
        if hasattr(sv, name):
            inner = getattr(sv, name)

            def timed(*args: Any, _f: Any = inner, _n: str = name, **kw: Any) -> Any:
                c = time.thread_time()
                try:
                    return _f(*args, **kw)
                finally:
                    spent[_n] += time.thread_time() - c

            setattr(sv, name, timed)
    sv.sabr_rows(jobs[0], 1.0, True)
    rows: list[list[dict[str, Any]]] = []
    for r in range(a.repeat):
        spent.clear()
        load = os.getloadavg()[0]
        c0 = time.thread_time()
        rows = [sv.sabr_rows(q, 1.0, True) for q in jobs]
        parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(spent.items()))
        cpu = time.thread_time() - c0
        print(
            f"repeat {r + 1}: {len(jobs)} underlyings, {sum(map(len, rows))} slices, CPU {cpu:.2f} s ({parts}); "
            f"load {load:.1f}"
        )
    if a.save:
        with open(a.save, "wb") as f:
            pickle.dump(rows, f)


def compare(a_path: str, b_path: str) -> int:
    with open(a_path, "rb") as f:
        a = pickle.load(f)
    with open(b_path, "rb") as f:
        b = pickle.load(f)
    fields = different = 0
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            if x.keys() != y.keys():
                print("columns differ:", sorted(x), sorted(y))
                return 1
            for k in x:
                fields += 1
                if isinstance(x[k], float) or isinstance(y[k], float):
                    same = np.float64(x[k]).tobytes() == np.float64(y[k]).tobytes()
                else:
                    same = x[k] == y[k]
                if not same:
                    different += 1
                    print(k, x[k], y[k])
    print(f"{sum(map(len, a))} rows, {fields} fields, {different} different")
    return int(different > 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("inputs")
    r.add_argument("--code")
    r.add_argument("--repeat", type=int, default=3)
    r.add_argument("--save")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    a = ap.parse_args()
    if a.cmd == "run":
        run(a)
        return 0
    return compare(a.a, a.b)


if __name__ == "__main__":
    sys.exit(main())
