"""Wall time of the daily run (issue #10): price_history_job, end_of_day_job and intraday_refresh_job.

Run ``python bench/bench_pipeline.py`` (``--help`` for options). On a fresh DuckDB warehouse and a fresh
DAGSTER_HOME (both in a temporary folder, the embedded SQLite instance ``risk-pipeline demo`` uses), in one
process, it runs

1. ``price_history_job`` for the ``--history-sessions`` sessions before ``--date`` as one run (as the demo
   loads its history),
2. ``end_of_day_job`` for ``--date`` (``--warm-repeat``: a second time, warm, on the same warehouse),
3. ``intraday_refresh_job`` for the session's second-to-last snapshot.

Per run it prints every step's wall time from the run's event log (STEP_START to STEP_SUCCESS/FAILURE), the
time outside the steps (the run's wall time, measured around ``execute_in_process``, minus the union of the
step intervals: launch, Dagster events and their SQLite commits, checks recorded outside a step), the
number of events the run recorded, the numba compile time (``numba:compile`` events: cache misses only;
``numba:compiler_lock`` also counts loading cached machine code) and the process's peak resident memory,
then the targets of issue #10 with MET / MISSED and, under them, where the time of each missed target went
(its slowest steps, compilation, time outside the steps).

The machine may be shared: every run also prints a calibration workload's time (a fixed single-threaded
numpy sort) before and after, so two reports can be compared by the ratio of a step to it.
``--reference-warehouse PATH`` compares the tables of this run with a warehouse written by another version
of the code for the same date and window (floats to 1e-10 relative, everything else exactly, run-specific
columns such as run ids and publication times ignored). ``--memory-period S`` samples this process's resident
memory every S seconds and prints, per run, the largest sample in each step and the stacks of the threads in this
project's code when the memory last grew by 16 MiB on its way to the run's largest sample, beside ``ru_maxrss`` of
this process and of its child processes (the kernel warm-ups).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import os
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# before numpy: the package's OpenBLAS setting (risk_pipeline/__init__.py), as in a pipeline process
import risk_pipeline  # noqa: E402, F401

# isort: split
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

#: Targets of issue #10 (seconds unless stated).
HISTORY_TARGET_S = 30.0
EOD_TARGET_S = 30.0
STEP_TARGET_S = 5.0
OVERHEAD_TARGET_SHARE = 0.20
INTRADAY_TARGET_S = 10.0
VAR_TARGET_S = 5.0
COLD_COMPILE_TARGET_S = 15.0
#: Columns that differ between two runs of identical code (ids and times of the run itself; the hedge solver's
#: wall time ``solve_seconds``).
RUN_SPECIFIC = ("run_id", "audit_id", "hedge_id", "alert_id", "execution_id", "client_order_id", "solve_seconds")


@dataclass
class RunTiming:
    """One job run: wall time around ``execute_in_process`` and what its event log says."""

    job: str
    success: bool
    wall_s: float
    steps: dict[str, float]
    in_steps_s: float
    events: Counter[str]
    compile_s: float
    compiler_lock_s: float
    peak_rss_gib: float
    notes: list[str] = field(default_factory=list)
    #: CPU seconds of this process (every thread, user + system) around ``execute_in_process``
    cpu_s: float = 0.0
    #: CPU seconds of the child processes the run started and waited for (the kernel warm-up)
    children_cpu_s: float = 0.0
    #: CPU seconds of the threads that compiled, over the ``compile_s`` they took (``CompileCpuListener``)
    compile_cpu_s: float = 0.0

    @property
    def outside_s(self) -> float:
        return max(self.wall_s - self.in_steps_s, 0.0)


def calibration_s() -> float:
    """Best of three: sort 4 million seeded uniforms (one core, no BLAS), a fixed unit of machine speed."""
    x = np.random.default_rng(0).random(4_000_000)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        np.sort(x, kind="quicksort")
        best = min(best, time.perf_counter() - t0)
    return best


def peak_rss_gib() -> float:
    """Peak resident memory of this process and of finished children, GiB (``ru_maxrss`` is KiB on Linux)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 2**20


def process_cpu_s() -> float:
    """User and system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_s() -> float:
    """User and system CPU seconds of this process's finished and waited-for child processes so far (the
    history's kernel warm-up, ``risk_pipeline.kernel_warmup``)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class MemoryWatch:
    """This process's resident memory every ``period_s`` seconds on a daemon thread, and the stacks of the other
    threads whenever it passes its largest sample so far (again at most every ``stack_every_bytes`` of growth)."""

    def __init__(self, period_s: float, stack_every_bytes: int = 16 * 2**20) -> None:
        self.period_s = period_s
        self.stack_every_bytes = stack_every_bytes
        self.samples: list[tuple[float, int]] = []  # (time.time(), resident bytes)
        self.peak: tuple[float, int, list[list[str]]] = (0.0, 0, [])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemoryWatch:
        self.samples.clear()
        self.peak = (0.0, 0, [])
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        from bench_warm_steps import rss_bytes  # bench/ (this script's folder) is on sys.path

        me = threading.get_ident()
        stacked = 0
        while True:
            now, rss = time.time(), rss_bytes()
            self.samples.append((now, rss))
            if rss > self.peak[1]:
                stacks = self.peak[2]
                if rss >= stacked + self.stack_every_bytes or not stacks:
                    stacks = [_stack_lines(f) for tid, f in sys._current_frames().items() if tid != me]
                    stacked = rss
                self.peak = (now, rss, stacks)
            if self._stop.wait(self.period_s):
                return

    def report(self, intervals: dict[str, tuple[float, float]], t0: float) -> list[str]:
        """Lines: the largest sample in each step, then the run's largest sample, its step and the stacks there."""
        if not self.samples:
            return []
        times = np.array([t for t, _ in self.samples])
        rss = np.array([r for _, r in self.samples], dtype=np.float64) / 2**30
        lines = [f"memory every {self.period_s:g} s ({len(times)} samples): largest sample in each step, GiB"]
        for step, (a, b) in sorted(intervals.items(), key=lambda kv: kv[1][0]):
            inside = (times >= a) & (times <= b)
            if inside.any():
                lines.append(f"   {step:<34}{rss[inside].max():>7.2f}  (from +{a - t0:.0f} s to +{b - t0:.0f} s)")
        at, peak, stacks = self.peak
        where = [k for k, (a, b) in intervals.items() if a <= at <= b] or ["outside the steps"]
        lines.append(f"   largest sample {peak / 2**30:.2f} GiB at +{at - t0:.1f} s, in {', '.join(where)}; stacks:")
        for stack in stacks:
            if stack:
                lines.extend(["     thread:", *(f"       {line}" for line in stack)])
        return lines


def _stack_lines(frame: Any, library_frames: int = 4) -> list[str]:
    """A thread's stack, outermost first: this project's frames and the innermost ``library_frames`` others."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    root = str(ROOT) + "/"
    keep = [
        f"{f.f_code.co_filename.replace(root, '')}:{f.f_code.co_name}:{f.f_lineno}"
        for i, f in enumerate(frames)
        if ("risk_pipeline" in f.f_code.co_filename and "site-packages" not in f.f_code.co_filename)
        or i >= len(frames) - library_frames
    ]
    return keep if any("risk_pipeline" in line for line in keep) else []


def step_intervals(instance: Any, run_id: str) -> tuple[dict[str, tuple[float, float]], Counter[str]]:
    """(start, end) timestamps of every step of a run and the count of each event type it recorded."""
    import dagster as dg

    start: dict[str, float] = {}
    end: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for entry in instance.all_logs(run_id):
        if not entry.is_dagster_event:
            counts["log message"] += 1
            continue
        kind = entry.dagster_event_type
        counts[kind.value] += 1
        if entry.step_key is None:
            continue
        if kind == dg.DagsterEventType.STEP_START:
            start[entry.step_key] = entry.timestamp
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            end[entry.step_key] = entry.timestamp
    return {k: (start[k], end[k]) for k in start if k in end}, counts


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by possibly overlapping intervals (steps of a multiprocess run overlap)."""
    total, reach = 0.0, -np.inf
    for a, b in sorted(intervals):
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def run_job(
    defs: Any,
    instance: Any,
    job_name: str,
    *,
    partition_key: str | None = None,
    tags: dict | None = None,
    run_config: dict | None = None,
    asset_selection: list[Any] | None = None,
    memory_period_s: float = 0.0,
) -> RunTiming:
    from numba.core import event

    job = defs.resolve_job_def(job_name)
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    compile_timer = event.TimingListener()
    compile_cpu = compile_cpu_listener()
    lock_timer = event.TimingListener()
    with (
        event.install_listener("numba:compile", compile_timer),
        event.install_listener("numba:compile", compile_cpu),
        event.install_listener("numba:compiler_lock", lock_timer),
        MemoryWatch(memory_period_s) if memory_period_s > 0 else contextlib.nullcontext() as watch,
    ):
        t0_epoch = time.time()
        t0, c0, k0 = time.perf_counter(), process_cpu_s(), children_cpu_s()
        if job_name == "price_history_job":
            # as ``risk-pipeline demo`` runs it (cli.demo, cli._run_job): a first run's history kernels compile in
            # separate processes from the start, while the run is created (else from the resource's setup, once it
            # exists), and the end of day's in one more (the demo starts it at its start)
            from risk_pipeline.kernel_warmup import END_OF_DAY_WARMUP, HISTORY_WARMUP, cached_on_disk, history_kernels

            cached = cached_on_disk(history_kernels())
            END_OF_DAY_WARMUP.start(cached)
            HISTORY_WARMUP.start(cached)
        elif job_name == "end_of_day_job":
            # as the demo launches it: once the end of day's kernel warm-up has ended (nothing if none was started)
            from risk_pipeline.kernel_warmup import END_OF_DAY_WARMUP

            END_OF_DAY_WARMUP.wait()
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition_key,
            tags=tags or {},
            run_config={**quiet, **(run_config or {})},
            raise_on_error=False,
            asset_selection=asset_selection,
        )
        wall, cpu, child_cpu = time.perf_counter() - t0, process_cpu_s() - c0, children_cpu_s() - k0
    intervals, counts = step_intervals(instance, result.run_id)
    steps = {k: b - a for k, (a, b) in sorted(intervals.items(), key=lambda kv: kv[1][0])}
    notes = []
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        notes.append(f"FAILED steps: {', '.join(str(f) for f in failed) or 'run failure'}")
    if watch is not None:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        notes.extend(watch.report(intervals, t0_epoch))
        notes.append(f"ru_maxrss so far: this process {own:.2f} GiB, child processes {children:.2f} GiB")
    return RunTiming(
        job=job_name,
        success=result.success,
        wall_s=wall,
        steps=steps,
        in_steps_s=union_length(list(intervals.values())),
        events=counts,
        compile_s=compile_timer.duration if compile_timer.done else 0.0,
        compiler_lock_s=lock_timer.duration if lock_timer.done else 0.0,
        peak_rss_gib=peak_rss_gib(),
        notes=notes,
        cpu_s=cpu,
        children_cpu_s=child_cpu,
        compile_cpu_s=compile_cpu.cpu_s,
    )


def compile_cpu_listener() -> Any:
    """A ``numba:compile`` listener whose ``cpu_s`` sums the CPU seconds of the threads that compiled (outermost
    events; compilations hold numba's compiler lock, so one runs at a time, started and ended in one thread). The
    compile wall time also counts what other processes and this process's other threads (their Python shares the GIL
    with numba's compiler) took from the compiling thread. No allocation in ``on_end``: it runs after the collector is
    back on. numba is imported here, not with this module."""
    from numba.core import event

    class CompileCpuListener(event.Listener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.depth = 0
            self.began = 0.0
            self.cpu_s = 0.0

        def on_start(self, ev: Any) -> None:
            if self.depth == 0:
                self.began = time.thread_time()
            self.depth += 1

        def on_end(self, ev: Any) -> None:
            self.depth -= 1
            if self.depth == 0:
                self.cpu_s += time.thread_time() - self.began

    return CompileCpuListener()


def print_run(label: str, run: RunTiming, calibration: float) -> None:
    status = "ok" if run.success else "FAILED"
    print(
        f"\n== {label}: {status}, wall {run.wall_s:.1f} s ({run.wall_s / calibration:.0f} calibration units), "
        f"CPU {run.cpu_s:.1f} s (every thread) + {run.children_cpu_s:.1f} s in child processes, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for note in run.notes:
        print(f"   {note}")
    print(f"   {'step':<34}{'seconds':>9}{'share':>8}")
    for step, secs in sorted(run.steps.items(), key=lambda kv: -kv[1]):
        print(f"   {step:<34}{secs:>9.2f}{secs / run.wall_s:>8.1%}")
    print(f"   {'(in steps, union)':<34}{run.in_steps_s:>9.2f}{run.in_steps_s / run.wall_s:>8.1%}")
    print(f"   {'(outside steps)':<34}{run.outside_s:>9.2f}{run.outside_s / run.wall_s:>8.1%}")
    n_events = sum(v for k, v in run.events.items() if k != "log message")
    top = ", ".join(f"{k} {v}" for k, v in run.events.most_common(6))
    print(f"   events recorded: {n_events} ({top})")
    print(
        f"   numba (this process, not a kernel warm-up process): compile {run.compile_s:.1f} s, "
        f"compile + cache loading {run.compiler_lock_s:.1f} s; "
        f"peak RSS so far {run.peak_rss_gib:.2f} GiB; the compiling threads' CPU {run.compile_cpu_s:.1f} s"
    )


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def numba_cache_is_empty() -> bool:
    """No compiled kernel of this source version on disk yet (a run now compiles from cold)."""
    from risk_pipeline.quant._numba import CACHE_DIR

    folder = CACHE_DIR or Path(os.environ.get("NUMBA_CACHE_DIR", ""))
    return not str(folder) or not any(Path(folder).rglob("*.nbi"))


def print_targets(runs: dict[str, RunTiming], cold_cache: bool = False, compiled_before_s: float = 0.0) -> None:
    """``compiled_before_s``: numba compilation in this process before the first job (the atm comparison)."""
    print("\n== targets of issue #10 (this machine, this load)")
    rows: list[tuple[str, str, str]] = []
    hist = runs.get("history")
    if hist:
        rows.append(("price_history_job <= 30 s", f"{hist.wall_s:.1f} s", verdict(hist.wall_s <= HISTORY_TARGET_S)))
    eod = runs.get("eod_warm") or runs.get("eod")
    if eod:
        which = "warm repeat" if "eod_warm" in runs else "first run"
        rows.append((f"end_of_day_job <= 30 s ({which})", f"{eod.wall_s:.1f} s", verdict(eod.wall_s <= EOD_TARGET_S)))
        slow = {k: v for k, v in eod.steps.items() if v > STEP_TARGET_S}
        worst = max(eod.steps.items(), key=lambda kv: kv[1], default=("-", 0.0))
        rows.append(
            (
                "no end-of-day step over 5 s",
                f"{len(slow)} over; slowest {worst[0]} {worst[1]:.1f} s",
                verdict(not slow),
            )
        )
        share = eod.outside_s / eod.wall_s
        rows.append(("Dagster overhead <= 20 % of wall", f"{share:.1%}", verdict(share <= OVERHEAD_TARGET_SHARE)))
        for step in ("var_results", "var_backtest"):
            if step in eod.steps:
                secs = eod.steps[step]
                rows.append((f"{step} <= 5 s", f"{secs:.1f} s", verdict(secs <= VAR_TARGET_S)))
            else:
                rows.append((f"{step} <= 5 s", "did not run (an upstream step failed)", "MISSED"))
    intraday = runs.get("intraday")
    if intraday:
        rows.append(
            ("intraday_refresh_job <= 10 s", f"{intraday.wall_s:.1f} s", verdict(intraday.wall_s <= INTRADAY_TARGET_S))
        )
    compiled = compiled_before_s + sum(r.compile_s for r in runs.values())
    # the history run's child processes are the kernel warm-up (the end of day's also hold its worker pools)
    warmup_cpu = runs["history"].children_cpu_s if "history" in runs else 0.0
    if cold_cache and warmup_cpu > 0.5:
        note = (
            f"{compiled:.1f} s in this process, the history's kernels in warm-up processes ({warmup_cpu:.1f} CPU s "
            "with their imports)"
        )
        rows.append(("cold numba compilation <= 15 s", f"not measured ({note}; bench_compile.py)", "-"))
    elif cold_cache:
        where = f" ({compiled_before_s:.1f} s before the jobs)" if compiled_before_s > 0 else ""
        rows.append(
            ("cold numba compilation <= 15 s", f"{compiled:.1f} s{where}", verdict(compiled <= COLD_COMPILE_TARGET_S))
        )
    else:
        note = "cache warm" if compiled <= 0.5 else f"cache partly warm, {compiled:.1f} s compiled"
        rows.append(("cold numba compilation <= 15 s", f"not measured ({note}; bench_compile.py)", "-"))
    rows.append(("make demo <= 90 s, SVI >= 200 slices/s, 3,000 underlyings", "not measured here", "-"))
    width = max(len(r[0]) for r in rows) + 2
    for name, value, mark in rows:
        print(f"   {name:<{width}}{value:<44}{mark}")
    for line in missed_reasons(rows, runs, compiled):
        print(f"   why: {line}")


def missed_reasons(rows: list[tuple[str, str, str]], runs: dict[str, RunTiming], compiled_s: float) -> list[str]:
    """Where the time of each missed target went, from the runs' own step timings and compile events."""

    def top(run: RunTiming, n: int = 3) -> str:
        slowest = sorted(run.steps.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{k} {v:.1f} s" for k, v in slowest)

    missed = {name for name, _, mark in rows if mark == "MISSED"}
    out: list[str] = []
    hist = runs.get("history")
    if hist and "price_history_job <= 30 s" in missed:
        out.append(
            f"price_history_job: {top(hist)}; numba compilation {hist.compile_s:.1f} s inside the steps; "
            f"{hist.outside_s:.1f} s outside the steps"
        )
    eod = runs.get("eod_warm") or runs.get("eod")
    if eod and any(name.startswith(("end_of_day_job", "no end-of-day step", "var_")) for name in missed):
        out.append(f"end_of_day_job: {top(eod, 5)}; numba compilation {eod.compile_s:.1f} s")
    if "cold numba compilation <= 15 s" in missed:
        per_run = ", ".join(f"{r.job} {r.compile_s:.1f} s" for r in runs.values() if r.compile_s > 0)
        out.append(
            f"cold numba compilation {compiled_s:.1f} s ({per_run}): the kernels compile on first use; "
            "bench_compile.py lists the longest ones"
        )
    return out


def compare_warehouses(url: str, reference_url: str) -> bool:
    """Every table present in both: same rows (sorted on the non-float columns), floats to 1e-10 relative."""
    from risk_pipeline.contracts import TABLES
    from risk_pipeline.warehouse import SCHEMA, Warehouse

    ours, ref = Warehouse(url), Warehouse(reference_url)
    print(f"\n== tables against the reference warehouse {reference_url}")
    sql = "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ?"
    held = [w.query(sql, [SCHEMA]).groupby("table_name")["column_name"].apply(set).to_dict() for w in (ours, ref)]
    all_equal = True
    for name in TABLES:
        if not (ours.table_exists(name) and ref.table_exists(name)):
            continue
        # the columns both versions hold (a column added since the reference's version is left out, and named)
        shared = [c for c in TABLES[name].column_names if c in held[0].get(name, set()) & held[1].get(name, set())]
        only = sorted((held[0].get(name, set()) ^ held[1].get(name, set())) & set(TABLES[name].column_names))
        if only:
            print(f"   {name:<28} (columns in one version only, not compared: {', '.join(only)})")
        a, b = ours.read(name, columns=shared), ref.read(name, columns=shared)
        if a.empty and b.empty:
            continue
        cols = [c for c in a.columns if c in b.columns and not c.endswith(("_at", "_at_utc")) and c not in RUN_SPECIFIC]
        floats = [c for c in cols if pd.api.types.is_float_dtype(a[c])]
        keys = [c for c in cols if c not in floats]
        if len(a) != len(b):
            print(f"   {name:<28} DIFFERENT row counts {len(a)} vs {len(b)}")
            all_equal = False
            continue
        a = a.assign(**{c: a[c].astype(str) for c in keys}).sort_values(keys, kind="stable").reset_index(drop=True)
        b = b.assign(**{c: b[c].astype(str) for c in keys}).sort_values(keys, kind="stable").reset_index(drop=True)
        key_diff = [c for c in keys if not a[c].equals(b[c])]
        worst = 0.0
        for c in floats:
            x, y = a[c].to_numpy(float), b[c].to_numpy(float)
            both_nan = np.isnan(x) & np.isnan(y)
            scale = np.maximum(np.abs(y), 1e-300)
            rel = np.where(both_nan, 0.0, np.abs(x - y) / scale)
            worst = max(worst, float(np.nanmax(np.where(np.isnan(rel), np.inf, rel))) if rel.size else 0.0)
        same = not key_diff and worst <= 1e-10
        all_equal &= same
        detail = f"max relative difference {worst:.1e}" + (
            f"; columns differ: {', '.join(key_diff)}" if key_diff else ""
        )
        print(f"   {name:<28} {'equal' if same else 'DIFFERENT':<10} {len(a):>8} rows, {detail}")
    return all_equal


def atm_history_paths(session: dt.date, n_sessions: int) -> bool:
    """atm_vol_history's work on ``n_sessions`` sessions, four ways in this process, blocks interleaved:
    the whole chain priced and filtered, then one inversion per session (the path before the fast path);
    only the quotes used priced, session by session, and one inversion for all sessions; the quotes used of
    many sessions selected and priced together (``option_quotes_where_many``), one inversion of all; and the
    asset's path: the same quotes, only those the ATM interpolation needs inverted
    (``history_implied_vols(atm_only=True)``). Then the inversion alone both ways on the same quotes. Returns
    whether the rows, the vols of the quotes inverted both ways and every quote's status agree."""
    from risk_pipeline.defs.volatility.atm_history import (
        AtmVolSettings,
        atm_vol_rows,
        bracketing_mask,
        history_implied_vols,
        sessions_bracketing_mask,
    )
    from risk_pipeline.defs.volatility.surfaces import implied_vol_frame
    from risk_pipeline.sources.base import MarketDataSource
    from risk_pipeline.sources.synthetic import SyntheticSource

    source = SyntheticSource()
    days = [d for d in source.sessions(session - dt.timedelta(days=3 * n_sessions), session) if d < session]
    days = days[-n_sessions:]
    curves = dict(tuple(source.rates_curve(days[0], days[-1]).groupby("as_of_date")))
    dividends = dict(tuple(source.dividend_yields(days[0], days[-1]).groupby("as_of_date")))
    settings = AtmVolSettings()

    def select(day: dt.date) -> Any:
        return lambda q: bracketing_mask(q, curves[day], dividends[day], settings)

    def full_path(block: list[dt.date]) -> pd.DataFrame:
        frames = []
        for day in block:
            quotes = MarketDataSource.option_quotes_where(source, day, select(day))  # whole chain, filtered
            iv = implied_vol_frame(quotes, curves[day], dividends[day])
            iv["as_of_date"] = day
            frames.append(iv)
        return pd.concat(frames, ignore_index=True)

    def fast_path(block: list[dt.date]) -> pd.DataFrame:
        quotes = pd.concat([source.option_quotes_where(day, select(day)) for day in block], ignore_index=True)
        return history_implied_vols(quotes, curves, dividends)

    select_many = functools.partial(
        sessions_bracketing_mask, curve_by_day=curves, div_by_day=dividends, settings=settings
    )

    def many_path(block: list[dt.date]) -> pd.DataFrame:
        return history_implied_vols(source.option_quotes_where_many(block, select_many), curves, dividends)

    def atm_path(block: list[dt.date]) -> pd.DataFrame:
        quotes = source.option_quotes_where_many(block, select_many)
        return history_implied_vols(quotes, curves, dividends, atm_only=True)

    paths = (("full", full_path), ("fast", fast_path), ("many", many_path), ("atm", atm_path))
    for _, path in paths:  # warm-up: the source's simulated history, numba caches
        path(days[:1])
    timing = dict.fromkeys(("full", "fast", "many", "atm"), 0.0)
    inversion = dict.fromkeys(("many", "atm"), 0.0)
    results: dict[str, list[pd.DataFrame]] = {"full": [], "fast": [], "many": [], "atm": []}
    frames: dict[str, list[pd.DataFrame]] = {"many": [], "atm": []}
    for i in range(0, len(days), 20):
        block = days[i : i + 20]
        for name, path in paths:
            t0 = time.perf_counter()
            results[name].append(path(block))
            timing[name] += time.perf_counter() - t0
        # the inversion alone, on the same quotes: every quote (before) against the quotes used (atm_only)
        quotes = source.option_quotes_where_many(block, select_many)
        for name, atm_only in (("many", False), ("atm", True)):
            t0 = time.perf_counter()
            frames[name].append(history_implied_vols(quotes, curves, dividends, atm_only=atm_only))
            inversion[name] += time.perf_counter() - t0
    rows = {
        k: atm_vol_rows(pd.concat(v, ignore_index=True), settings.tenor_days, "synthetic") for k, v in results.items()
    }
    same = all(rows["full"].equals(rows[k]) for k in ("fast", "many", "atm"))
    before, after = (pd.concat(frames[k], ignore_index=True) for k in ("many", "atm"))
    inverted = np.isfinite(after["implied_vol"].to_numpy(float))
    same_vols = np.array_equal(
        before["implied_vol"].to_numpy(float)[inverted], after["implied_vol"].to_numpy(float)[inverted]
    )
    same_status = bool((before["status"] == after["status"]).all())
    n = len(days)
    print(f"\n== atm_vol_history work on {n} sessions in this process (blocks of 20 interleaved)")
    for name, label in (
        ("full", "whole chain priced, one inversion a session"),
        ("fast", "quotes used only, session by session"),
        ("many", "quotes used only, many sessions at once"),
        ("atm", "same, only the ATM interpolation's quotes inverted"),
    ):
        print(f"   {label:<52} {timing[name]:7.1f} s ({timing[name] / n:.3f} s a session)")
    print(
        f"   ratios full/atm {timing['full'] / timing['atm']:.1f}x, fast/atm {timing['fast'] / timing['atm']:.1f}x, "
        f"many/atm {timing['many'] / timing['atm']:.1f}x; rows identical: {same}"
    )
    print(
        f"   history_implied_vols on the same quotes: every quote {inversion['many']:.1f} s, atm_only "
        f"{inversion['atm']:.1f} s ({inversion['many'] / inversion['atm']:.1f}x); {int(inverted.sum())} of "
        f"{len(after)} quotes inverted, their vols identical: {same_vols}, every status identical: {same_status}"
    )
    return same and same_vols and same_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", default="2026-12-03", help="end-of-day session (default 2026-12-03)")
    parser.add_argument("--history-sessions", type=int, default=760, help="sessions before --date (default 760)")
    parser.add_argument("--warm-repeat", action="store_true", help="run end_of_day_job a second time, warm")
    parser.add_argument("--skip-intraday", action="store_true")
    parser.add_argument("--history-only", action="store_true", help="only price_history_job (and --atm-sample)")
    parser.add_argument("--reference-warehouse", help="DuckDB path of a warehouse to compare the tables with")
    parser.add_argument("--keep", help="folder for the warehouse and DAGSTER_HOME (default a temporary one)")
    parser.add_argument(
        "--atm-sample", type=int, default=20, help="sessions of the in-process atm_vol_history comparison (0: skip)"
    )
    parser.add_argument("--atm-only", action="store_true", help="only the atm_vol_history comparison, no jobs")
    parser.add_argument(
        "--memory-period", type=float, default=0.0, help="sample resident memory every this many seconds (0: off)"
    )
    args = parser.parse_args(argv)
    cold_cache = numba_cache_is_empty()  # before anything compiles

    folder = Path(args.keep or tempfile.mkdtemp(prefix="bench_pipeline_"))
    folder.mkdir(parents=True, exist_ok=True)
    url = str(folder / "risk_warehouse.duckdb")
    os.environ["DAGSTER_HOME"] = str(folder / "dagster_home")
    os.environ["RISK_PIPELINE_WAREHOUSE_URL"] = url
    t_import = time.perf_counter()
    import dagster as dg
    from numba.core import event

    from risk_pipeline.calendar import partition_start, sessions
    from risk_pipeline.cli import _prepare_dagster_home
    from risk_pipeline.definitions import defs
    from risk_pipeline.defs.automation.sensors import snapshot_run_config
    from risk_pipeline.resources import resources_from_env
    from risk_pipeline.warehouse import Warehouse

    import_s = time.perf_counter() - t_import
    _prepare_dagster_home()
    Warehouse(url).ensure_tables()
    instance = dg.DagsterInstance.get()
    session = dt.date.fromisoformat(args.date)
    window = [d for d in sessions(partition_start(), session) if d < session][-args.history_sessions :]
    calibration_before = calibration_s()
    print(f"bench_pipeline: session {session}, {len(window)} history sessions, warehouse {url}")
    print(f"   DAGSTER_HOME {os.environ['DAGSTER_HOME']}; imports {import_s:.1f} s; cores {os.cpu_count()}")
    print(f"   load average {os.getloadavg()[0]:.1f}; calibration {calibration_before * 1e3:.0f} ms")

    ok = True
    compiled_before = event.TimingListener()  # the atm comparison compiles kernels the jobs then find cached
    if args.atm_sample > 0:
        with event.install_listener("numba:compile", compiled_before):
            ok &= atm_history_paths(session, args.atm_sample)
    compiled_before_s = compiled_before.duration if compiled_before.done else 0.0
    if args.atm_only:
        return 0 if ok else 1
    runs: dict[str, RunTiming] = {}
    tags = {
        "dagster/asset_partition_range_start": window[0].isoformat(),
        "dagster/asset_partition_range_end": window[-1].isoformat(),
    }
    memory = {"memory_period_s": args.memory_period}
    runs["history"] = run_job(defs, instance, "price_history_job", tags=tags, **memory)
    print_run(f"price_history_job ({len(window)} sessions, one run)", runs["history"], calibration_before)
    if runs["history"].success and not args.history_only:
        runs["eod"] = run_job(defs, instance, "end_of_day_job", partition_key=session.isoformat(), **memory)
        print_run(f"end_of_day_job {session}", runs["eod"], calibration_before)
        if args.warm_repeat:
            runs["eod_warm"] = run_job(defs, instance, "end_of_day_job", partition_key=session.isoformat(), **memory)
            print_run(f"end_of_day_job {session} (warm repeat)", runs["eod_warm"], calibration_before)
        if not args.skip_intraday and runs["eod"].success:
            source = resources_from_env()["market_data"].get_source()
            snaps = source.snapshot_times(session)
            snap = pd.Timestamp(snaps[-2] if len(snaps) > 1 else snaps[-1])
            config = snapshot_run_config(snap, snap + pd.Timedelta(minutes=2))
            runs["intraday"] = run_job(
                defs, instance, "intraday_refresh_job", partition_key=session.isoformat(), run_config=config
            )
            print_run(f"intraday_refresh_job {snap.isoformat()}", runs["intraday"], calibration_before)
    calibration_after = calibration_s()
    print(
        f"\ncalibration before {calibration_before * 1e3:.0f} ms, after {calibration_after * 1e3:.0f} ms "
        f"(load average {os.getloadavg()[0]:.1f}): timings are for this machine under this load"
    )
    print_targets(runs, cold_cache, compiled_before_s)
    ok &= all(r.success for r in runs.values())
    if args.reference_warehouse:
        ok &= compare_warehouses(url, args.reference_warehouse)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
