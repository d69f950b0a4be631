"""Materialize some end-of-day assets on a copy of a kept warehouse, sampling every thread's stack and the memory.

``python bench/bench_step_profile.py KEPT COPY ASSET[,ASSET...] [--date D] [--period 0.05] [--top 45]``: ``KEPT`` is a
folder with ``risk_warehouse.duckdb`` and ``dagster_home`` (``bench_pipeline.py --keep``, or a copy taken while a run
was at the step); it is copied to ``COPY`` (replaced; ``--no-copy`` uses ``COPY`` as it is) and the assets (all the
keys of a multi-asset: ``var_results,var_contributions``) are materialized for ``--date`` from ``end_of_day_job``.
A daemon thread samples every ``--period`` seconds the stacks of the other threads, the process's CPU seconds and
its resident memory. Printed: CPU and wall seconds, numba compilation, the peak resident memory and the stack at
it, the CPU seconds by function of this project (inclusive: a sample's CPU counts for every function on its stack,
so the lines overlap) and by innermost project line, and the resident memory's rises by innermost project line.
Set ``RISK_PIPELINE_UNIVERSE`` as for the run that wrote ``KEPT``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import resource
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_warm_steps import rss_bytes as rss  # noqa: E402


def use_copy(kept: str | Path, copy: Path, fresh: bool = True) -> None:
    """Point this process's DAGSTER_HOME and warehouse at ``copy``; ``fresh``: replace it by a copy of ``kept`` first
    (a kept writer lock dropped)."""
    if fresh:
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(kept, copy)
        lock = copy / "risk_warehouse.duckdb.writer.lock"
        if lock.exists():
            lock.unlink()
    os.environ["DAGSTER_HOME"] = str(copy / "dagster_home")
    os.environ["RISK_PIPELINE_WAREHOUSE_URL"] = str(copy / "risk_warehouse.duckdb")


def materialize_tables(copy: Path, date: str, tables: Sequence[str], out: Path) -> tuple[Any, float, float, float]:
    """Materialize ``tables`` of ``end_of_day_job`` for ``date`` in this process (on the instance and warehouse
    ``use_copy`` set), print any step failure, and pickle each table of ``copy``'s warehouse to ``out/TABLE.pkl``:
    the run's result, its wall and CPU seconds (this process) and the load average before it."""
    import dagster as dg
    import duckdb

    from risk_pipeline.definitions import defs

    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("end_of_day_job")
    load0 = os.getloadavg()[0]
    t0, c0 = time.time(), time.process_time()
    res = job.execute_in_process(
        instance=instance,
        partition_key=date,
        asset_selection=[dg.AssetKey(t) for t in tables],
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        raise_on_error=False,
    )
    wall, cpu = time.time() - t0, time.process_time() - c0
    for ev in res.all_events:
        if ev.is_step_failure:
            print(ev.event_specific_data.error.to_string()[:3000])  # type: ignore[union-attr]
    con = duckdb.connect(str(copy / "risk_warehouse.duckdb"), read_only=True)
    for t in tables:
        con.execute(f"SELECT * FROM risk.{t}").df().to_pickle(out / f"{t}.pkl")
    con.close()
    return res, wall, cpu, load0


def compare_table_pickles(a: Path, b: Path, tables: Sequence[str]) -> int:
    """Compare ``materialize_tables``' pickles of ``tables`` in ``a`` and ``b`` but for ``solve_seconds``, ``run_id``
    and ``materialized_at`` (print a line per table); the number of tables that differ."""
    import pandas as pd

    bad = 0
    for t in tables:
        x, y = pd.read_pickle(a / f"{t}.pkl"), pd.read_pickle(b / f"{t}.pkl")
        cols = [c for c in x.columns if c not in ("solve_seconds", "run_id", "materialized_at")]
        same = list(x.columns) == list(y.columns) and x[cols].equals(y[cols])
        print(f"{t} {x.shape}: {'identical (but solve_seconds, run_id, materialized_at)' if same else 'DIFFERENT'}")
        bad += not same
    return bad


class Sampler:
    """(wall time, CPU seconds, resident bytes, stacks of the other threads) every ``period`` seconds."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.samples: list[tuple[float, float, int, list[tuple[tuple[str, str, int], ...]]]] = []
        self.me: int | None = None
        self.stop = False
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self) -> None:
        self.me = threading.get_ident()
        while not self.stop:
            frames = sys._current_frames()
            stacks = []
            for tid, fr in frames.items():
                if tid == self.me:
                    continue
                st = []
                f = fr
                while f is not None:
                    co = f.f_code
                    st.append((co.co_filename, co.co_name, f.f_lineno))
                    f = f.f_back
                stacks.append(tuple(reversed(st)))
            t = os.times()
            self.samples.append((time.time(), t.user + t.system, rss(), stacks))
            time.sleep(self.period)


def short(fr: tuple[str, str, int]) -> str:
    fn, name, line = fr
    fn = fn.replace(str(ROOT) + "/", "")
    return f"{fn}:{name}:{line}"


def ours(stack: tuple[tuple[str, str, int], ...]) -> list[tuple[str, str, int]]:
    return [f for f in stack if "risk_pipeline" in f[0] and "site-packages" not in f[0]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kept")
    ap.add_argument("copy")
    ap.add_argument("assets", help="comma-separated asset keys")
    ap.add_argument("--date", default="2026-12-03")
    ap.add_argument("--period", type=float, default=0.05)
    ap.add_argument("--top", type=int, default=45)
    ap.add_argument("--no-copy", action="store_true")
    a = ap.parse_args(argv)
    copy = Path(a.copy)
    use_copy(a.kept, copy, fresh=not a.no_copy)
    import dagster as dg
    from numba.core import event

    from risk_pipeline.definitions import defs

    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("end_of_day_job")
    keys = [dg.AssetKey(x) for x in a.assets.split(",")]
    print(f"load {os.getloadavg()[0]:.1f}; rss before {rss() / 2**30:.2f} GiB", flush=True)
    s = Sampler(a.period)
    timer = event.TimingListener()
    t0, c0 = time.time(), time.process_time()
    with event.install_listener("numba:compile", timer):
        res = job.execute_in_process(
            instance=instance,
            partition_key=a.date,
            asset_selection=keys,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            raise_on_error=False,
        )
    s.stop = True
    wall, cpu = time.time() - t0, time.process_time() - c0
    compiled = timer.duration if timer.done else 0.0
    print(
        f"success {res.success}; wall {wall:.1f} s; CPU {cpu:.1f} s; load {os.getloadavg()[0]:.1f}; "
        f"numba compile {compiled:.1f} s"
    )
    for ev in res.all_events:
        if ev.is_step_failure:
            data: Any = ev.event_specific_data
            print(data.error.to_string()[:3000])
    samp = s.samples
    peak = max(samp, key=lambda x: x[2])
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak rss sampled {peak[2] / 2**30:.2f} GiB; ru_maxrss {maxrss:.2f} GiB")
    print("stack at peak rss:")
    for st in peak[3]:
        for f in ours(st):
            print("   ", short(f))
    # inclusive CPU attribution: cpu delta between samples to the stack of the sample
    incl: collections.Counter[tuple[str, str]] = collections.Counter()
    selfc: collections.Counter[str] = collections.Counter()
    for (_, c1, _, st1), (_, c2, _, _) in itertools.pairwise(samp):
        d = c2 - c1
        for st in st1:
            mine = ours(st)
            if not mine:
                continue
            for k in {(f[0], f[1]) for f in mine}:
                incl[k] += d
            selfc[short(mine[-1])] += d
    print("inclusive CPU s by function (ours):")
    for (fn, name), v in incl.most_common(a.top):
        print(f"   {v:8.1f}  {fn.replace(str(ROOT) + '/', '')}:{name}")
    print("deepest own frame (file:func:line):")
    for k, v in selfc.most_common(a.top):
        print(f"   {v:8.1f}  {k}")
    # rss rise attribution
    rise: collections.Counter[str] = collections.Counter()
    for (_, _, r1, _), (_, _, r2, st2) in itertools.pairwise(samp):
        if r2 > r1:
            for st in st2:
                mine = ours(st)
                if mine:
                    rise[short(mine[-1])] += r2 - r1
    print("RSS rises by deepest own frame, GiB:")
    for k, v in rise.most_common(20):
        print(f"   {v / 2**30:8.2f}  {k}")
    return 0 if res.success else 1


if __name__ == "__main__":
    sys.exit(main())
