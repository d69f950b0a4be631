"""CPU seconds of end-of-day steps materialized one after the other on a copy of a kept warehouse, their tables kept.

``python bench/bench_event_steps.py KEPT COPY OUT [--steps event_risk,gap_risk_actions] [--date D]``: copies ``KEPT``
(``bench_pipeline.py --keep``) to ``COPY`` and materializes each step of ``--steps`` in turn (``end_of_day_job``, in
this process, each reading what the ones before wrote); prints each step's CPU and wall seconds and the load average
before it, and pickles each step's table to ``OUT/<table>.pkl``. ``python bench/bench_event_steps.py --compare OUT1
OUT2 [--steps ...]``: the tables but for ``run_id`` and ``materialized_at``. Set ``RISK_PIPELINE_UNIVERSE`` as for
the run that wrote ``KEPT``. Run the same script on old code from a worktree of it (the script copied there).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_step_profile import compare_table_pickles, materialize_tables, use_copy  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="KEPT COPY OUT, or with --compare OUT1 OUT2")
    ap.add_argument("--steps", default="event_risk,gap_risk_actions")
    ap.add_argument("--date", default="2026-12-03")
    ap.add_argument("--compare", action="store_true")
    a = ap.parse_args(argv)
    steps = a.steps.split(",")
    if a.compare:
        return 1 if compare_table_pickles(Path(a.paths[0]), Path(a.paths[1]), steps) else 0
    kept, copy, out = (Path(p) for p in a.paths)
    use_copy(kept, copy)
    out.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for step in steps:
        res, wall, cpu, load = materialize_tables(copy, a.date, [step], out)
        total += cpu
        print(f"{step}: success {res.success}; CPU {cpu:.2f} s; wall {wall:.1f} s; load before {load:.2f}", flush=True)
    print(f"all steps: CPU {total:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
