"""CPU seconds of the volatility steps ``implied_vols``, ``vol_surfaces`` and ``vol_forecasts`` on a copy of a kept
warehouse (issue #10).

``python bench/bench_vol_steps.py KEPT COPY ASSET [--date D] [--dump FILE]``: ``KEPT`` is a folder with
``risk_warehouse.duckdb`` and ``dagster_home`` (``bench_pipeline.py --keep``); it is copied to ``COPY`` (replaced)
and ``ASSET`` (``implied_vols``, ``vol_surface``: the multi-asset with ``vol_surface_grid``, or ``vol_forecasts``) is
materialized for ``--date`` from ``end_of_day_job``. Printed: wall seconds, CPU seconds of this process and of its
finished worker processes (the surface fit and the forecasts run in two), the numba compile seconds and the load
average before and after.
``--dump FILE`` pickles the tables the step wrote (its snapshot's rows, sorted, run-specific columns dropped) and the
metadata and check results it recorded, to compare two versions of the code bit for bit (``--compare A B``).
Run the old code from a ``git worktree add`` of the base commit with the same arguments, alternating with the new.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_step_profile import use_copy  # noqa: E402

#: The tables each step writes.
TABLES = {
    "implied_vols": ("implied_vols",),
    "vol_surface": ("vol_surface", "vol_surface_grid"),
    "vol_forecasts": ("vol_forecasts",),
}
RUN_SPECIFIC = ("run_id", "materialized_at")


def cpu_seconds() -> tuple[float, float]:
    """(this process, its waited-for children) user + system CPU seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, ch.ru_utime + ch.ru_stime


def compare(a: str, b: str) -> int:
    """Tables, metadata and checks of two ``--dump`` files: equal bit for bit?"""
    import pandas as pd

    with open(a, "rb") as fa, open(b, "rb") as fb:
        x, y = pickle.load(fa), pickle.load(fb)
    bad = 0
    for name in x["tables"]:
        try:
            pd.testing.assert_frame_equal(x["tables"][name], y["tables"][name], check_exact=True)
            print(f"{name}: {len(x['tables'][name])} rows identical")
        except AssertionError as exc:
            bad += 1
            print(f"{name}: DIFFERENT {str(exc)[:500]}")
    for part in ("metadata", "checks"):
        same = x[part] == y[part]
        bad += not same
        print(f"{part}: {'identical' if same else 'DIFFERENT'}")
        if not same:
            for k in sorted(set(x[part]) | set(y[part])):
                if x[part].get(k) != y[part].get(k):
                    print(f"   {k}: {str(x[part].get(k))[:200]} != {str(y[part].get(k))[:200]}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kept", nargs="?")
    ap.add_argument("copy", nargs="?")
    ap.add_argument("asset", nargs="?", choices=sorted(TABLES))
    ap.add_argument("--date", default="2026-12-03")
    ap.add_argument("--dump")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"))
    a = ap.parse_args(argv)
    if a.compare:
        return compare(*a.compare)
    copy = Path(a.copy)
    use_copy(a.kept, copy)
    import dagster as dg
    from numba.core import event

    from risk_pipeline.contracts import table
    from risk_pipeline.definitions import defs
    from risk_pipeline.warehouse import Warehouse

    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("end_of_day_job")
    load0 = os.getloadavg()[0]
    timer = event.TimingListener()
    t0, (c0, k0) = time.time(), cpu_seconds()
    with event.install_listener("numba:compile", timer):
        res = job.execute_in_process(
            instance=instance,
            partition_key=a.date,
            asset_selection=[dg.AssetKey(k) for k in TABLES[a.asset]],
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            raise_on_error=False,
        )
    wall, (c1, k1) = time.time() - t0, cpu_seconds()
    compiled = timer.duration if timer.done else 0.0
    print(
        f"{a.asset}: success {res.success}; wall {wall:.1f} s; CPU {c1 - c0:.1f} s + workers {k1 - k0:.1f} s = "
        f"{c1 - c0 + k1 - k0:.1f} s; numba compile {compiled:.1f} s; load {load0:.1f} -> {os.getloadavg()[0]:.1f}; "
        f"code {ROOT}"
    )
    if a.dump:
        wh = Warehouse(str(copy / "risk_warehouse.duckdb"))
        tables: dict[str, Any] = {}
        for name in TABLES[a.asset]:
            key = "as_of" if "as_of" in table(name).column_names else "as_of_date"  # a snapshot's or a session's
            t = wh.query(f"SELECT * FROM risk.{name} WHERE {key} = (SELECT MAX({key}) FROM risk.{name})")
            t = t.drop(columns=[c for c in RUN_SPECIFIC if c in t.columns])
            tables[name] = t.sort_values(list(t.columns[:5])).reset_index(drop=True)
        metadata: dict[str, Any] = {}
        checks: dict[str, Any] = {}
        for ev in res.all_events:
            if ev.is_step_materialization:
                mat = ev.event_specific_data.materialization  # type: ignore[union-attr]
                for k, v in mat.metadata.items():
                    if k not in ("run_id",):
                        # the exports folder is under the working directory: the paths without it
                        metadata[f"{mat.asset_key.to_user_string()}/{k}"] = str(v).replace(os.getcwd(), "<cwd>")
            elif ev.event_type_value == "ASSET_CHECK_EVALUATION":
                chk = ev.event_specific_data  # type: ignore[assignment]
                checks[chk.check_name] = (chk.passed, {k: str(v) for k, v in chk.metadata.items()})  # type: ignore[union-attr]
        with open(a.dump, "wb") as f:
            pickle.dump({"tables": tables, "metadata": metadata, "checks": checks}, f)
    return 0 if res.success else 1


if __name__ == "__main__":
    sys.exit(main())
