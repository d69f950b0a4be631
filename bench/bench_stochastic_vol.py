"""``stochastic_vol_models``' core (``fit_models``) on one stored snapshot: CPU seconds, a profile, tables compared.

``python bench/bench_stochastic_vol.py dump KEPT INPUTS.pkl [--date D]``: the session's latest ``implied_vols`` and
``vol_surface`` rows of the warehouse in folder ``KEPT`` (``bench_pipeline.py --keep``; the DuckDB file is copied
first, so a kept warehouse is only read) pickled to ``INPUTS.pkl``.

``python bench/bench_stochastic_vol.py run INPUTS.pkl [--code DIR] [--workers 1] [--threads 2] [--save OUT.pkl]
[--profile N]``: ``fit_models`` as the step calls it (default sabr beta 1), printing CPU seconds of this process and
of its child processes (``resource.getrusage``), wall seconds and the load average; ``--code DIR`` imports the
package from another checkout (a ``git worktree`` of an older commit) to run the old code the same way;
``--profile N`` runs it under cProfile and prints the top ``N`` functions by internal time; ``--save`` pickles the
three tables (``heston_parameters`` without ``calibration_seconds``). A first, untimed call on one underlying fills
numba's cache / compiles, so the figures are warm.

``python bench/bench_stochastic_vol.py compare A.pkl B.pkl``: the tables of two ``--save`` runs, exactly
(``assert_frame_equal(check_exact=True)``), and the largest relative difference of every float column.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dump(kept: str, out: str, date: str) -> None:
    sys.path.insert(0, str(ROOT))
    import datetime as dt

    from risk_pipeline.defs.volatility.surfaces import SnapshotSelection, snapshot_time
    from risk_pipeline.warehouse import Warehouse

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "risk_warehouse.duckdb"
        shutil.copyfile(Path(kept) / "risk_warehouse.duckdb", db)
        wh = Warehouse(str(db), create=False)
        as_of = snapshot_time(wh, dt.date.fromisoformat(date), SnapshotSelection(), "implied_vols")
        iv = wh.read("implied_vols", {"as_of": as_of})
        svi = wh.read("vol_surface", {"as_of": as_of})
    with open(out, "wb") as f:
        pickle.dump({"as_of": as_of, "iv": iv, "svi": svi}, f)
    print(f"{as_of}: {len(iv)} implied_vols rows, {iv['underlying'].nunique()} underlyings, {len(svi)} slices")


def run(a: argparse.Namespace) -> None:
    sys.path.insert(0, a.code or str(ROOT))
    import cProfile
    import pstats

    from risk_pipeline.defs.volatility import stochastic_vol as sv

    print(f"code {Path(sv.__file__).resolve()}")
    with open(a.inputs, "rb") as f:
        d = pickle.load(f)
    iv, svi = d["iv"], d["svi"]
    first = sorted(iv["underlying"].unique())[0]
    sv.fit_models(iv[iv["underlying"] == first], svi, {}, 1.0, 1, a.threads)  # compile / load the numba cache
    load0 = os.getloadavg()[0]
    c0, ch0, w0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
    sabr, heston, cmp = sv.fit_models(iv, svi, {}, 1.0, a.workers, a.threads)
    if a.profile:
        prof.disable()
    cpu = time.process_time() - c0
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
    wall = time.perf_counter() - w0
    print(
        f"fit_models: {iv['underlying'].nunique()} underlyings, {len(sabr)} SABR slices; workers {a.workers}, "
        f"threads {a.threads}: CPU {cpu:.2f} s + children {child:.2f} s = {cpu + child:.2f} s; wall {wall:.2f} s; "
        f"load {load0:.1f} -> {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if a.profile:
        pstats.Stats(prof).sort_stats("tottime").print_stats(a.profile)
    if a.save:
        with open(a.save, "wb") as f:
            pickle.dump({"sabr": sabr, "heston": heston.drop(columns="calibration_seconds"), "cmp": cmp}, f)


def compare(a_path: str, b_path: str) -> int:
    import numpy as np
    import pandas as pd

    with open(a_path, "rb") as f:
        a = pickle.load(f)
    with open(b_path, "rb") as f:
        b = pickle.load(f)
    bad = 0
    for name in ("sabr", "heston", "cmp"):
        x, y = a[name], b[name]
        worst = 0.0
        if list(x.columns) == list(y.columns) and len(x) == len(y):
            for c in x.columns:
                if x[c].dtype.kind == "f":
                    u, v = x[c].to_numpy(), y[c].to_numpy()
                    with np.errstate(divide="ignore", invalid="ignore"):
                        rel = np.abs(u - v) / np.maximum(np.abs(u), np.abs(v))
                    rel = rel[~((u == v) | (np.isnan(u) & np.isnan(v)))]
                    worst = max(worst, float(np.nanmax(rel)) if rel.size else 0.0)
        try:
            pd.testing.assert_frame_equal(x, y, check_exact=True)
            print(f"{name}: {x.shape} identical")
        except AssertionError as exc:
            bad += 1
            print(f"{name}: {x.shape} vs {y.shape} DIFFER, largest relative difference {worst:.3g}: {str(exc)[:300]}")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("kept")
    d.add_argument("out")
    d.add_argument("--date", default="2026-12-03")
    r = sub.add_parser("run")
    r.add_argument("inputs")
    r.add_argument("--code")
    r.add_argument("--workers", type=int, default=1)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--save")
    r.add_argument("--profile", type=int, default=0)
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    a = ap.parse_args()
    if a.cmd == "dump":
        dump(a.kept, a.out, a.date)
        return 0
    if a.cmd == "run":
        run(a)
        return 0
    return compare(a.a, a.b)


if __name__ == "__main__":
    sys.exit(main())
