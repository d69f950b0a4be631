"""How the daily run grows with the universe: price_history_job and end_of_day_job at 50, 500 and 3,000 names.

Run ``python bench/bench_scale.py`` (``--help`` for options). For every ``--universes`` size of the synthetic
source (``RISK_PIPELINE_UNIVERSE``: sample = 50 stocks and the sample book, medium = 500 stocks and about
5,000 positions, large = 3,000 stocks and about 50,000 positions) it starts a fresh Python process with its own
DuckDB warehouse and DAGSTER_HOME (``bench_pipeline.py``'s setup) that runs

1. ``price_history_job`` for the ``--history-sessions`` sessions before ``--date`` (one run),
2. ``end_of_day_job`` for ``--date``,

and records every step's wall time (from the run's event log), each run's wall time and the process's peak
resident memory after it (this process or a finished child, whichever is larger). It then prints one table:
seconds per step at each size, the growth factor from one size to the next and the exponent ``b`` of
``time ~ names^b`` between them (1: linear; 2: quadratic), and the targets for the large universe
(end_of_day_job <= 10 minutes, peak memory <= 8 GiB). ``--max-rss-gib`` stops a size's process when its
resident memory passes that limit, so a blow-up cannot take a shared machine down.

The machine may be shared: the load average is printed with each size, and a calibration workload's time
(bench_pipeline's numpy sort) before each size, so two reports can be compared. Numba compilation on a cache
miss lands in the steps that first call a kernel (its total is printed per run): on a machine where other
versions of the code run too, give the benchmark its own warm cache (``XDG_CACHE_HOME`` or
``NUMBA_CACHE_DIR``), since the shared one keeps only the three most recent versions of the sources.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

#: Stocks per universe (the index comes on top), as in ``sources.synthetic.UNIVERSES``.
NAMES = {"sample": 50, "medium": 500, "large": 3000}
EOD_TARGET_S = 600.0
PEAK_TARGET_GIB = 8.0


def run_one(universe: str, date: str, history_sessions: int, out: Path) -> int:
    """Both jobs for one universe in this process; their timings to ``out`` (JSON)."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench_scale_{universe}_"))
    url = str(folder / "risk_warehouse.duckdb")
    os.environ["DAGSTER_HOME"] = str(folder / "dagster_home")
    os.environ["RISK_PIPELINE_WAREHOUSE_URL"] = url
    os.environ["RISK_PIPELINE_UNIVERSE"] = universe
    import dagster as dg
    from bench_pipeline import calibration_s, print_run, run_job

    from risk_pipeline.calendar import partition_start, sessions
    from risk_pipeline.cli import _prepare_dagster_home
    from risk_pipeline.definitions import defs
    from risk_pipeline.warehouse import Warehouse

    _prepare_dagster_home()
    Warehouse(url).ensure_tables()
    instance = dg.DagsterInstance.get()
    session = dt.date.fromisoformat(date)
    window = [d for d in sessions(partition_start(), session) if d < session][-history_sessions:]
    calibration = calibration_s()
    load = os.getloadavg()[0]
    print(f"bench_scale {universe}: session {session}, {len(window)} history sessions, load {load:.1f}", flush=True)
    tags = {
        "dagster/asset_partition_range_start": window[0].isoformat(),
        "dagster/asset_partition_range_end": window[-1].isoformat(),
    }
    result: dict = {"universe": universe, "calibration_s": calibration, "load_before": load, "runs": {}}
    history = run_job(defs, instance, "price_history_job", tags=tags)
    print_run(f"{universe}: price_history_job ({len(window)} sessions)", history, calibration)
    result["runs"]["price_history_job"] = history
    if history.success:
        eod = run_job(defs, instance, "end_of_day_job", partition_key=session.isoformat())
        print_run(f"{universe}: end_of_day_job {session}", eod, calibration)
        result["runs"]["end_of_day_job"] = eod
    result["load_after"] = os.getloadavg()[0]
    result["runs"] = {
        name: {
            "success": r.success,
            "wall_s": r.wall_s,
            "steps": r.steps,
            "outside_s": r.outside_s,
            "peak_rss_gib": r.peak_rss_gib,
            "compile_s": r.compile_s,
            "notes": r.notes,
        }
        for name, r in result["runs"].items()
    }
    out.write_text(json.dumps(result, indent=1))
    return 0 if all(r["success"] for r in result["runs"].values()) else 1


def resident_gib(pid: int) -> float:
    """Resident memory of a running process (``VmRSS``), GiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def run_watched(cmd: list[str], max_rss_gib: float) -> int:
    """Run ``cmd``; stop it if its resident memory passes ``max_rss_gib``. Its exit code (-9 when stopped)."""
    child = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})
    while child.poll() is None:
        if resident_gib(child.pid) > max_rss_gib:
            print(f"-- stopped: resident memory above {max_rss_gib} GiB", flush=True)
            child.kill()
        time.sleep(1.0)
    return child.wait()


def exponent(t_small: float, t_large: float, n_small: int, n_large: int) -> float:
    """``b`` of ``t ~ n^b`` through two points."""
    return math.log(t_large / t_small) / math.log(n_large / n_small) if t_small > 0 and t_large > 0 else math.nan


def print_table(results: dict[str, dict]) -> None:
    sizes = [u for u in NAMES if u in results]
    for job in ("price_history_job", "end_of_day_job"):
        rows: dict[str, dict[str, float]] = {}
        for u in sizes:
            run = results[u]["runs"].get(job)
            if run is None:
                continue
            for step, secs in run["steps"].items():
                rows.setdefault(step, {})[u] = secs
            rows.setdefault("(outside steps)", {})[u] = run["outside_s"]
            rows.setdefault("(run wall)", {})[u] = run["wall_s"]
            rows.setdefault("(peak RSS GiB)", {})[u] = run["peak_rss_gib"]
            if "compile_s" in run:
                rows.setdefault("(numba compile, in the steps)", {})[u] = run["compile_s"]
        if not rows:
            continue
        pairs = list(itertools.pairwise(sizes))
        head = "".join(f"{NAMES[u]:>10}" for u in sizes) + "".join(
            f"{f'x {NAMES[a]}->{NAMES[b]}':>14}{'b':>6}" for a, b in pairs
        )
        print(f"\n== {job}: seconds per step at {', '.join(str(NAMES[u]) for u in sizes)} names; growth, exponent b")
        print(f"   {'step':<34}{head}")
        last = sizes[-1]
        order = sorted(rows, key=lambda k: (k.startswith("("), -rows[k].get(last, rows[k].get(sizes[0], 0.0))))
        for step in order:
            vals = rows[step]
            line = "".join(f"{vals[u]:>10.2f}" if u in vals else f"{'-':>10}" for u in sizes)
            for a, b in pairs:
                if a in vals and b in vals and vals[a] > 0:
                    line += f"{vals[b] / vals[a]:>14.1f}{exponent(vals[a], vals[b], NAMES[a], NAMES[b]):>6.2f}"
                else:
                    line += f"{'-':>14}{'-':>6}"
            print(f"   {step:<34}{line}")
    for u in sizes:
        r = results[u]
        failed = [f"{job}: {'; '.join(run['notes'])}" for job, run in r["runs"].items() if not run["success"]]
        load = f"load {r['load_before']:.1f} -> {r['load_after']:.1f}"
        print(
            f"   {u}: {load}, calibration {r['calibration_s'] * 1e3:.0f} ms" + (f"; FAILED {failed}" if failed else "")
        )
    eod = {u: results[u]["runs"]["end_of_day_job"] for u in sizes if "end_of_day_job" in results[u]["runs"]}
    if len(eod) >= 2:
        print_projection(eod)
    if "large" in results and "end_of_day_job" in results["large"]["runs"]:
        eod = results["large"]["runs"]["end_of_day_job"]
        peak = max(run["peak_rss_gib"] for run in results["large"]["runs"].values())
        print("\n== targets for 3,000 names (this machine, this load)")
        print(
            f"   end_of_day_job <= 10 min: {eod['wall_s']:.0f} s {'MET' if eod['wall_s'] <= EOD_TARGET_S else 'MISSED'}"
        )
        print(f"   peak memory <= 8 GiB: {peak:.2f} GiB {'MET' if peak <= PEAK_TARGET_GIB else 'MISSED'}")


def projected_eod_s(
    steps_small: dict[str, float], steps_large: dict[str, float], n_small: int, n_large: int, n: int
) -> float:
    """end_of_day_job's step time at ``n`` names, every step extrapolated from the two largest measured sizes by
    its own power law ``t ~ names^b`` (b at least 0; steps measured at one size only are kept as measured)."""
    total = 0.0
    for step, t_large in steps_large.items():
        t_small = steps_small.get(step, 0.0)
        b = max(exponent(t_small, t_large, n_small, n_large), 0.0) if t_small > 0 else 0.0
        total += t_large * (n / n_large) ** (0.0 if math.isnan(b) else b)
    return total


def print_projection(eod: dict[str, dict]) -> None:
    """end_of_day_job at other sizes from the per-step power laws of the two largest measured sizes, and the
    size at which the step time reaches the 10-minute target on this machine under this load."""
    (small, run_small), (large, run_large) = list(eod.items())[-2:]
    n_small, n_large = NAMES[small], NAMES[large]

    def at(n: int) -> float:
        return projected_eod_s(run_small["steps"], run_large["steps"], n_small, n_large, n)

    print(
        f"\n== end_of_day_job projected from the steps' growth {n_small} -> {n_large} names (this machine, this load)"
    )
    for n in (1000, 2000, 3000, 5000, 10000):
        if n > n_large:
            print(f"   {n:>6} names: {at(n):8.0f} s in steps")
    if at(n_large) < EOD_TARGET_S:
        lo, hi = n_large, n_large
        while at(hi) < EOD_TARGET_S and hi < 10**6:
            lo, hi = hi, hi * 2
        while hi - lo > 10:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if at(mid) < EOD_TARGET_S else (lo, mid)
        print(f"   the steps reach {EOD_TARGET_S:.0f} s at about {hi} names")
    else:
        print(f"   the steps already take {at(n_large):.0f} s at {n_large} names: over {EOD_TARGET_S:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--universes", default="sample,medium,large", help="comma-separated (default all three)")
    parser.add_argument("--date", default="2026-12-03", help="end-of-day session (default 2026-12-03)")
    parser.add_argument(
        "--history-sessions", type=int, default=300, help="sessions of price history before --date (default 300)"
    )
    parser.add_argument(
        "--max-rss-gib",
        type=float,
        default=12.0,
        help="resident memory at which a size's process is stopped (default 12)",
    )
    parser.add_argument("--results", help="JSON file to keep every size's timings in (read back with --table-only)")
    parser.add_argument("--table-only", action="store_true", help="print the table of --results, run nothing")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return run_one(args.one, args.date, args.history_sessions, Path(args.out))

    store = Path(args.results) if args.results else None
    results: dict[str, dict] = json.loads(store.read_text()) if store and store.exists() else {}
    if not args.table_only:
        for universe in args.universes.split(","):
            if universe not in NAMES:
                parser.error(f"unknown universe {universe!r} (sample, medium, large)")
            out = Path(tempfile.mkstemp(prefix=f"bench_scale_{universe}_", suffix=".json")[1])
            cmd = [sys.executable, __file__, "--one", universe, "--out", str(out), "--date", args.date]
            cmd += ["--history-sessions", str(args.history_sessions)]
            t0 = time.perf_counter()
            code = run_watched(cmd, args.max_rss_gib)
            print(f"-- {universe}: exit {code}, {time.perf_counter() - t0:.0f} s in all", flush=True)
            if out.stat().st_size:
                results[universe] = json.loads(out.read_text())
                if store:
                    store.write_text(json.dumps(results, indent=1))
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
