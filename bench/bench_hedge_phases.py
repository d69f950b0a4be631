"""CPU seconds of the hedge step by book and phase, its candidates and targets hashed, the solver recorded or replayed.

``python bench/bench_hedge_phases.py KEPT COPY OUT [--date D] [--replay DIR] [--no-digest] [--inputs]``: copies the kept
warehouse ``KEPT`` (``bench_pipeline.py --keep``) to ``COPY`` and materializes ``hedge_recommendations`` and
``hedge_stress_effects`` (``end_of_day_job``, in this process, exports under ``COPY/exports``). Timed on the CPU clock
(``time.process_time``), per book: ``recommend_book``, ``scenario_blocks`` (the stress search and the return history),
the book's ``scenario_pnl`` calls, each ``build_candidates`` (0: the pre-screen of every listed line in the book's
worst scenarios, 1: the screened lines in every scenario), ``candidate_greeks``, ``option_candidates`` and
``solve_hedge``. Each ``build_candidates`` result and each ``solve_hedge`` input (candidates, targets) is hashed
(SHA-256 of every array's dtype, shape and bytes) into ``OUT/digests.json`` (``--no-digest``: not hashed, for timing);
``solve_hedge``'s results are written to ``OUT/sol_<k>.pkl``, or read from ``--replay DIR`` (a MILP stopped at its
time limit depends on timing: replayed, the hedge is the recorded one and the step's CPU excludes the solver;
``--inputs``: its inputs to ``OUT/input_<k>.pkl`` for ``bench_hedge_solve.py``); both
tables go to ``OUT/<table>.pkl`` and the exports to ``OUT/exports``. ``--compare OUT1 OUT2``: the digests, the tables
but for ``solve_seconds``, ``run_id`` and ``materialized_at``, the exports but for ``solve_seconds`` and
``first_feasible_seconds``. Set ``RISK_PIPELINE_UNIVERSE`` as for the run that wrote ``KEPT``. The code measured is
the one on ``PYTHONPATH`` (its first entry; old code: a worktree of it).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import pickle
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TABLES = ("hedge_recommendations", "hedge_stress_effects")
TIMED = ("scenario_blocks", "scenario_pnl", "option_candidates", "screen_candidates", "stress_effect_rows")


def digest(obj: Any) -> str:
    """SHA-256 (16 hex digits) of arrays (dtype, shape, bytes), sparse arrays (dense), mappings and sequences."""
    h = hashlib.sha256()

    def add(x: Any) -> None:
        if isinstance(x, np.ndarray):
            h.update(f"{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif hasattr(x, "toarray"):
            add(x.toarray())
        elif isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode())
                add(x[k])
        elif isinstance(x, list | tuple):
            for y in x:
                add(y)
        else:
            h.update(repr(x).encode())

    add(obj)
    return h.hexdigest()[:16]


def compare(a: Path, b: Path) -> int:
    from bench_step_profile import compare_table_pickles

    bad = 0
    da, db = json.loads((a / "digests.json").read_text()), json.loads((b / "digests.json").read_text())
    for k in sorted(set(da) | set(db)):
        same = da.get(k) == db.get(k)
        print(f"{k}: {'identical' if same else 'DIFFERENT'}")
        bad += not same
    bad += compare_table_pickles(a, b, TABLES)
    for f in sorted((a / "exports").glob("*.json")):
        docs = [json.loads(f.read_text()), json.loads((b / "exports" / f.name).read_text())]
        for d in docs:
            for k in ("solve_seconds", "first_feasible_seconds"):
                d.pop(k, None)
        same = docs[0] == docs[1]
        print(f"export {f.name}: {'identical (but solve_seconds, first_feasible_seconds)' if same else 'DIFFERENT'}")
        bad += not same
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="KEPT COPY OUT, or with --compare OUT1 OUT2")
    ap.add_argument("--date", default="2026-12-03")
    ap.add_argument("--replay", default=None)
    ap.add_argument("--no-digest", action="store_true")
    ap.add_argument("--inputs", action="store_true", help="also pickle each solve_hedge's inputs to OUT/input_<k>.pkl")
    ap.add_argument("--compare", action="store_true")
    a = ap.parse_args(argv)
    if a.compare:
        return compare(Path(a.paths[0]), Path(a.paths[1]))
    kept, copy, out = (Path(p) for p in a.paths)
    root = Path(os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parents[1])).split(os.pathsep)[0])
    sys.path[:0] = [str(root), str(root / "bench")]
    from bench_step_profile import materialize_tables, use_copy

    use_copy(kept, copy)
    os.environ["RISK_PIPELINE_EXPORTS"] = str(copy / "exports")
    out.mkdir(parents=True, exist_ok=True)

    import risk_pipeline.defs.hedging.assets as assets
    import risk_pipeline.quant.hedging as qh

    print(f"code: {assets.__file__}")
    cpu: collections.defaultdict[tuple[str, str], float] = collections.defaultdict(float)
    calls: collections.Counter[tuple[str, str]] = collections.Counter()
    digests: dict[str, str] = {}
    ctx: dict[str, Any] = {"book": "step", "built": 0}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            t = time.process_time()
            r = fn(*args, **kw)
            cpu[(ctx["book"], name)] += time.process_time() - t
            calls[(ctx["book"], name)] += 1
            return r

        return wrapper

    real_book, real_build, real_solve = assets.recommend_book, assets.build_candidates, assets.solve_hedge

    def book_step(wh: Any, session: Any, as_of: Any, book: str, *args: Any, **kw: Any) -> Any:
        ctx["book"], ctx["built"] = book, 0
        t = time.process_time()
        r = real_book(wh, session, as_of, book, *args, **kw)
        cpu[(book, "recommend_book")] += time.process_time() - t
        calls[(book, "recommend_book")] += 1
        ctx["book"] = "step"
        return r

    def build(*args: Any, **kw: Any) -> Any:
        k = ctx["built"]
        ctx["built"] += 1
        t = time.process_time()
        r = real_build(*args, **kw)
        cpu[(ctx["book"], f"build_candidates[{k}]")] += time.process_time() - t
        calls[(ctx["book"], f"build_candidates[{k}]")] += 1
        if not a.no_digest:
            digests[f"{ctx['book']} build_candidates[{k}]"] = digest(
                [r.labels, r.side, r.greeks, r.scenario_pnl, r.cost, r.premium, r.notional, r.max_contracts,
                 dict(r.line_greeks)]
            )  # fmt: skip
        return r

    solves = {"n": 0}

    def solve(hc: Any, targets: Any, time_limit: float) -> Any:
        k = solves["n"]
        solves["n"] += 1
        if not a.no_digest:
            digests[f"{ctx['book']} targets"] = digest([getattr(targets, f) for f in targets.__dataclass_fields__])
            digests[f"{ctx['book']} solver's candidates"] = digest(
                [hc.labels, hc.side, hc.greeks, hc.scenario_pnl, hc.cost, hc.premium, hc.notional, hc.max_contracts]
            )
        if a.inputs:  # for bench_hedge_solve.py
            (out / f"input_{k}.pkl").write_bytes(pickle.dumps({"hc": hc, "t": targets, "time_limit": time_limit}))
        t = time.process_time()
        if a.replay:
            sol = pickle.loads((Path(a.replay) / f"sol_{k}.pkl").read_bytes())
        else:
            sol = real_solve(hc, targets, time_limit=time_limit)
            (out / f"sol_{k}.pkl").write_bytes(pickle.dumps(sol))
        cpu[(ctx["book"], "solve_hedge")] += time.process_time() - t
        calls[(ctx["book"], "solve_hedge")] += 1
        return sol

    assets.recommend_book, assets.build_candidates, assets.solve_hedge = book_step, build, solve
    for name in TIMED:
        setattr(assets, name, timed(name, getattr(assets, name)))
    qh.candidate_greeks = timed("candidate_greeks", qh.candidate_greeks)
    res, wall, step_cpu, load0 = materialize_tables(copy, a.date, TABLES, out)
    if (out / "exports").exists():
        shutil.rmtree(out / "exports")
    (out / "exports").mkdir()
    for f in (copy / "exports").rglob("hedges/*.json"):
        shutil.copy(f, out / "exports" / f.name)
    (out / "digests.json").write_text(json.dumps(digests, indent=1))
    print(
        f"success {res.success}; step wall {wall:.1f} s, CPU {step_cpu:.1f} s; load {load0:.1f} -> "
        f"{os.getloadavg()[0]:.1f}; solver {'replayed' if a.replay else 'run'}"
    )
    for (book, name), v in sorted(cpu.items()):
        print(f"  {book:12s} {name:24s} {v:7.2f} CPU s ({calls[(book, name)]} calls)")
    return 0 if res.success else 1


if __name__ == "__main__":
    sys.exit(main())
