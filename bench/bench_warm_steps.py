"""Warm end-of-day (or intraday) runs in one process on a copy of a kept warehouse, with each step's CPU seconds.

``python bench/bench_warm_steps.py KEPT COPY [--runs N] [--job end_of_day_job] [--profile] [--samples FILE]``:
``KEPT`` is a folder written by ``bench_pipeline.py --keep`` (its ``risk_warehouse.duckdb`` and ``dagster_home``);
it is copied to ``COPY`` (replaced) so every run starts from the same tables. The job runs ``--runs`` times in this
process; each run prints bench_pipeline's step table and, per step, the CPU seconds of this process and its finished
children (sampled every 20 ms), which load on a shared machine inflates far less than wall time. ``--profile`` writes a
cProfile of the last run (this thread only) to ``COPY/prof.out``. Run it once with the code before a change and once
with the code after (alternated, same period) to compare.

``--samples FILE`` also appends every sample (wall time, CPU seconds, resident bytes) to ``FILE`` as it is taken, so
a run that is stopped before it ends can still be read: ``python bench/bench_warm_steps.py --partial COPY FILE``
prints, for the last run of ``COPY``'s instance, each finished step's wall and CPU seconds and peak resident memory
and the step still running (from its start to the last sample).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# before numpy: the package's OpenBLAS setting (risk_pipeline/__init__.py), as in a pipeline process
import risk_pipeline  # noqa: E402, F401

# isort: split
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident memory of this process now (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_BYTES


class CpuSampler:
    """(wall time, CPU seconds of this process and its finished children, resident bytes) every ``period_s``
    on a daemon thread."""

    def __init__(self, period_s: float = 0.02, path: str | None = None) -> None:
        self.samples: list[tuple[float, float]] = []
        self.rss: list[int] = []
        self.period_s = period_s
        self.file = open(path, "a") if path else None  # open for the life of the process
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            t = os.times()
            rss = rss_bytes()
            self.samples.append((time.time(), t.user + t.system + t.children_user + t.children_system))
            self.rss.append(rss)
            if self.file is not None:
                self.file.write(f"{self.samples[-1][0]:.3f} {self.samples[-1][1]:.3f} {rss}\n")
                if len(self.rss) % 50 == 0:
                    self.file.flush()
            time.sleep(self.period_s)

    def peak_rss(self, start: float, end: float) -> tuple[int, int]:
        """(resident bytes at ``start``, the largest sample between ``start`` and ``end``)."""
        n = min(len(self.samples), len(self.rss))
        wall = np.array([s[0] for s in self.samples[:n]])
        rss = np.array(self.rss[:n])
        inside = (wall >= start) & (wall <= end)
        first = int(rss[max(int(np.searchsorted(wall, start)) - 1, 0)])
        return first, int(rss[inside].max()) if inside.any() else first

    def between(self, start: float, end: float) -> float:
        samples = list(self.samples)  # the sampler thread keeps appending
        wall = np.array([s[0] for s in samples])
        cpu = np.array([s[1] for s in samples])
        return float(np.interp(end, wall, cpu) - np.interp(start, wall, cpu))


def partial(copy: Path, samples_file: str) -> int:
    """Per-step wall, CPU seconds and peak RSS of the last run of ``copy`` from a ``--samples`` file, finished or
    not (module docstring)."""
    os.environ["DAGSTER_HOME"] = str(copy / "dagster_home")
    import dagster as dg

    instance = dg.DagsterInstance.get()
    run = instance.get_runs(limit=1)[0]
    data = np.loadtxt(samples_file, ndmin=2)
    wall, cpu, rss = data[:, 0], data[:, 1], data[:, 2]
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    for entry in instance.all_logs(run.run_id):
        if entry.is_dagster_event and entry.step_key is not None:
            if entry.dagster_event_type == dg.DagsterEventType.STEP_START:
                start[entry.step_key] = entry.timestamp
            elif entry.dagster_event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
                end[entry.step_key] = entry.timestamp
    gib = 2.0**30
    last = dt.datetime.fromtimestamp(wall[-1], dt.UTC)
    print(f"run {run.run_id} ({run.status.value}); samples up to {last:%H:%M:%S} UTC")
    print(f"   {'step':<28}{'wall, s':>10}{'CPU, s':>10}{'peak RSS, GiB':>15}{'rise, GiB':>11}")
    total = 0.0
    for k in sorted(start, key=start.get):
        a = start[k]
        b = end.get(k, wall[-1])
        inside = (wall >= a) & (wall <= b)
        c = float(np.interp(b, wall, cpu) - np.interp(a, wall, cpu))
        total += c
        first = rss[max(int(np.searchsorted(wall, a)) - 1, 0)]
        peak = rss[inside].max() if inside.any() else first
        state = "" if k in end else "  (still running)"
        print(f"   {k:<28}{b - a:>10.1f}{c:>10.1f}{peak / gib:>15.2f}{(peak - first) / gib:>11.2f}{state}")
    print(f"   CPU seconds in steps {total:.1f}; peak RSS of the process {rss.max() / gib:.2f} GiB")
    return 0


def remaining_assets(instance: Any, defs: Any, job_name: str) -> list[Any]:
    """The asset keys of ``job_name`` that the instance's last run did not materialize."""
    import dagster as dg

    run = instance.get_runs(limit=1)[0]
    done = {
        entry.dagster_event.asset_key
        for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    }
    keys = defs.resolve_job_def(job_name).asset_layer.executable_asset_keys
    return sorted((k for k in keys if k not in done), key=lambda k: k.to_user_string())


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 4 and sys.argv[1] == "--partial":
        return partial(Path(sys.argv[2]), sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kept", help="folder kept by bench_pipeline.py --keep")
    parser.add_argument("copy", help="folder to copy it to (replaced)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--job", default="end_of_day_job", choices=["end_of_day_job", "intraday_refresh_job"])
    parser.add_argument("--date", default="2026-12-03")
    parser.add_argument("--profile", action="store_true", help="cProfile the last run into COPY/prof.out")
    parser.add_argument("--samples", help="append every (wall, CPU, RSS) sample to this file (see --partial)")
    parser.add_argument(
        "--remaining",
        action="store_true",
        help="run only the job's assets that the last run in KEPT did not materialize (a run stopped part way)",
    )
    args = parser.parse_args(argv)
    copy = Path(args.copy)
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(args.kept, copy)
    os.environ["DAGSTER_HOME"] = str(copy / "dagster_home")
    os.environ["RISK_PIPELINE_WAREHOUSE_URL"] = str(copy / "risk_warehouse.duckdb")
    import bench_pipeline as bp
    import dagster as dg

    from risk_pipeline.definitions import defs

    instance = dg.DagsterInstance.get()
    calibration = bp.calibration_s()
    print(f"load average {os.getloadavg()[0]:.1f}; calibration {calibration * 1e3:.0f} ms")
    session = dt.date.fromisoformat(args.date)
    config = None
    if args.job == "intraday_refresh_job":
        from risk_pipeline.defs.automation.sensors import snapshot_run_config
        from risk_pipeline.resources import resources_from_env

        snaps = resources_from_env()["market_data"].get_source().snapshot_times(session)
        snap = pd.Timestamp(snaps[-2] if len(snaps) > 1 else snaps[-1])
        config = snapshot_run_config(snap, snap + pd.Timedelta(minutes=2))
    selection = remaining_assets(instance, defs, args.job) if args.remaining else None
    if selection is not None:
        names = ", ".join(k.to_user_string() for k in selection)
        print(f"{len(selection)} assets not materialized by the last run: {names}")
    sampler = CpuSampler(path=args.samples)
    for i in range(args.runs):
        profiler = cProfile.Profile() if args.profile and i == args.runs - 1 else None
        if profiler:
            profiler.enable()
        run = bp.run_job(
            defs, instance, args.job, partition_key=session.isoformat(), run_config=config, asset_selection=selection
        )
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(copy / "prof.out"))
        bp.print_run(f"{args.job} run {i + 1} of {args.runs}", run, calibration)
        intervals, _ = bp.step_intervals(instance, instance.get_runs(limit=1)[0].run_id)
        cpu = {k: sampler.between(a, b) for k, (a, b) in intervals.items()}
        by_step = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
        print(f"   CPU seconds in steps {sum(cpu.values()):.1f}; by step: {by_step}")
        gib = 2.0**30
        rss = {k: sampler.peak_rss(a, b) for k, (a, b) in intervals.items()}
        by_peak = ", ".join(
            f"{k} {peak / gib:.2f} (+{(peak - first) / gib:.2f})"
            for k, (first, peak) in sorted(rss.items(), key=lambda kv: -(kv[1][1] - kv[1][0]))
            if peak - first > 0.05 * gib
        )
        print(f"   peak RSS GiB in steps (rise from the step's start) where it rose over 0.05 GiB: {by_peak}")
        print(f"   peak RSS of the process so far {max(sampler.rss) / gib:.2f} GiB")
    print(f"load average {os.getloadavg()[0]:.1f}; calibration {bp.calibration_s() * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
