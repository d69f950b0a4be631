"""CPU of the stress library's idiosyncratic search in the hedge step, with the hedge's solver replayed.

``python bench/bench_stress_search.py KEPT COPY OUT [--date D] [--replay DIR]``: copies the kept warehouse ``KEPT``
(``bench_pipeline.py --keep``) to ``COPY`` and materializes ``hedge_recommendations`` and ``hedge_stress_effects``
(``end_of_day_job``, in this process). Every stress search of the step (``stress_scenarios``, called by
``inputs.stress_block`` for each book and each hedged book) is timed on the CPU clock and its shocks are written to
``OUT/search_<k>_<positions>p.npz`` (k counts the searches of that many positions); ``solve_hedge``'s results are
written to ``OUT/sol_<k>.pkl``, or read from ``--replay DIR`` (a MILP stopped at its time limit depends on timing:
replayed, the hedge is the recorded one); both tables are written to ``OUT/<table>.pkl``. ``--no-copy`` uses ``COPY`` as
it is (e.g. after the stress step ran on it). ``python bench/bench_stress_search.py --compare OUT1 OUT2``: the searches
of both runs' arrays byte for byte (a search made by one run only, e.g. a book searched again by older code, is named),
the tables but for ``solve_seconds``, ``run_id`` and ``materialized_at``. Set ``RISK_PIPELINE_UNIVERSE`` as for the run
that wrote ``KEPT``. Run the same script on old code from a worktree of it (``PYTHONPATH`` and the script's own folder).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_step_profile import compare_table_pickles, materialize_tables, use_copy  # noqa: E402

TABLES = ("hedge_recommendations", "hedge_stress_effects")


def compare(a: Path, b: Path) -> int:

    bad = 0
    na, nb = sorted(a.glob("search_*.npz")), sorted(b.glob("search_*.npz"))
    only = sorted({p.name for p in na} ^ {p.name for p in nb})
    if only:
        print(f"searches in one run only (not compared): {only}")
    for pa in na:
        pb = b / pa.name
        if not pb.exists():
            continue
        x, y = np.load(pa), np.load(pb)
        for k in x.files:
            same = x[k].dtype == y[k].dtype and x[k].shape == y[k].shape and x[k].tobytes() == y[k].tobytes()
            print(f"{pa.name} {k} {x[k].shape}: {'identical' if same else 'DIFFERENT'}")
            bad += not same
    bad += compare_table_pickles(a, b, TABLES)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="KEPT COPY OUT, or with --compare OUT1 OUT2")
    ap.add_argument("--date", default="2026-12-03")
    ap.add_argument("--replay", default=None)
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--no-copy", action="store_true")
    a = ap.parse_args(argv)
    if a.compare:
        return compare(Path(a.paths[0]), Path(a.paths[1]))
    kept, copy, out = (Path(p) for p in a.paths)
    use_copy(kept, copy, fresh=not a.no_copy)
    out.mkdir(parents=True, exist_ok=True)

    import risk_pipeline.defs.hedging.assets as assets
    import risk_pipeline.defs.hedging.inputs as inputs

    searches: list[tuple[int, int, float]] = []
    real_search, real_solve = inputs.stress_scenarios, assets.solve_hedge

    def search(p: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.process_time()
        rs = real_search(p, *args, **kwargs)
        cpu = time.process_time() - t
        k = sum(n == p.n_positions for n, _, _ in searches)
        searches.append((p.n_positions, rs.n_scenarios, cpu))
        name = f"search_{k}_{p.n_positions}p.npz"
        np.savez(out / name, spot_log_shock=rs.spot_log_shock, name_log_vol_move=rs.name_log_vol_move)
        return rs

    solves = {"n": 0}

    def solve(hc: Any, targets: Any, time_limit: float) -> Any:
        k = solves["n"]
        solves["n"] += 1
        if a.replay:
            with open(Path(a.replay) / f"sol_{k}.pkl", "rb") as f:
                return pickle.load(f)
        sol = real_solve(hc, targets, time_limit=time_limit)
        with open(out / f"sol_{k}.pkl", "wb") as f:
            pickle.dump(sol, f)
        return sol

    inputs.stress_scenarios = search
    assets.solve_hedge = solve
    res, wall, cpu, load0 = materialize_tables(copy, a.date, TABLES, out)
    total = sum(c for _, _, c in searches)
    print(
        f"success {res.success}; step wall {wall:.1f} s, CPU {cpu:.1f} s; load {load0:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    for k, (n_pos, n_sc, c) in enumerate(searches):
        print(f"  search {k}: {n_pos} positions, {n_sc} scenarios: {c:.2f} CPU s")
    print(f"  searches: {total:.2f} CPU s; solver {'replayed' if a.replay else 'run'}")
    return 0 if res.success else 1


if __name__ == "__main__":
    sys.exit(main())
