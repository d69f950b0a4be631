"""Every early-exercise grid build of ``var_results`` counted: per build, its caller, its Americans, how many the
memo gave whole or by their boundaries, how many were solved, and how many an unbounded memo of every earlier build
of the step would have given (by the bits of the same keys), with the build's CPU seconds.

``python bench/bench_var_grid_builds.py KEPT COPY [--date D] [--out FILE.csv]``: copies ``KEPT`` to ``COPY``
(``bench_step_profile.use_copy``) and materializes ``var_results,var_contributions`` in this process with
``scenario_engine._grid_from_ranges`` wrapped. Also times every ``evaluate_chunk`` and ``_exact_where_nan`` call by
caller. Set ``RISK_PIPELINE_UNIVERSE`` as for the run that wrote ``KEPT``.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_step_profile import use_copy  # noqa: E402

CALLERS = (
    "stressed_var",
    "smile_sensitivity",
    "var_with_gap_scenarios",
    "monte_carlo_var",
    "historical_var_runs",
    "compute_var",
)


def caller() -> str:
    names = set()
    f: Any = sys._getframe(2)
    while f is not None:
        names.add(f.f_code.co_name)
        f = f.f_back
    for c in CALLERS:
        if c in names:
            return c
    return "other"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kept")
    ap.add_argument("copy")
    ap.add_argument("--date", default="2026-12-03")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    use_copy(a.kept, Path(a.copy))
    import dagster as dg
    import numpy as np

    from risk_pipeline.definitions import defs
    from risk_pipeline.quant import scenario_engine as se

    seen_b: set[bytes] = set()
    seen_w: set[bytes] = set()
    rows: list[dict[str, Any]] = []
    orig = se._grid_from_ranges
    depth = [0]

    def wrapped(book: Any, ranges: Any, n_scenarios: int, moves_carry: bool, **kw: Any) -> Any:
        if depth[0]:
            return orig(book, ranges, n_scenarios, moves_carry, **kw)
        memo = se._GRID_MEMO.get()
        still = (ranges.v_hi == ranges.v_lo) & (ranges.ls_hi == ranges.ls_lo) | (n_scenarios < se.EEP_MIN_SCENARIOS)
        keys = se._memo_keys(book, ranges, still, moves_carry)
        kb = [bytes(k[: se._VOL_KEY_COLUMNS].tobytes()) for k in keys]
        kw_ = [bytes(k.tobytes()) for k in keys]
        any_b = sum(1 for k, s in zip(kb, still, strict=True) if k in seen_b and not s)
        any_w = sum(1 for k, s in zip(kw_, still, strict=True) if k in seen_w and not s)
        f0 = (memo.found, memo.found_boundaries) if memo is not None else (0, 0)
        depth[0] += 1
        c0 = time.process_time()
        try:
            out = orig(book, ranges, n_scenarios, moves_carry, **kw)
        finally:
            depth[0] -= 1
        cpu = time.process_time() - c0
        f1 = (memo.found, memo.found_boundaries) if memo is not None else (0, 0)
        seen_b.update(kb)
        seen_w.update(kw_)
        rows.append(
            dict(
                caller=caller(),
                na=len(kb),
                n=n_scenarios,
                carry=moves_carry,
                still=int(still.sum()),
                memo=""
                if memo is None
                else f"{memo.builds}{'b' if memo.boundaries else ''}{'n' if memo.nodes else ''}",
                whole=f1[0] - f0[0],
                bnd=f1[1] - f0[1],
                any_b=any_b,
                any_w=any_w,
                cpu=round(cpu, 3),
                nbytes=0 if memo is None else memo.nbytes,
            )
        )
        return out

    se._grid_from_ranges = wrapped
    timing: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)

    def timed(name: str, fn: Any) -> Any:
        def inner(*args: Any, **kw: Any) -> Any:
            c0 = time.process_time()
            try:
                return fn(*args, **kw)
            finally:
                timing[name][caller()] += time.process_time() - c0

        return inner

    se.evaluate_chunk = timed("evaluate_chunk", se.evaluate_chunk)
    se._exact_where_nan = timed("_exact_where_nan", se._exact_where_nan)
    se._eep_ranges = timed("_eep_ranges", se._eep_ranges)

    from risk_pipeline.quant import gap_risk as gr

    groups: list[dict[str, Any]] = []
    orig_blocks = gr._evaluate_blocks

    def blocks_logged(book: Any, blocks: Any) -> Any:
        c0 = time.process_time()
        out = orig_blocks(book, blocks)
        groups.append(
            dict(
                names=int(blocks.cols.size),
                positions=int(book.units.size + book.n_symbols),
                americans=int(book.units.size - book.n_euro),
                events=int(blocks.event_rows.shape[1]),
                distinct=blocks.n,
                cpu=round(time.process_time() - c0, 3),
            )
        )
        return out

    gr._evaluate_blocks = blocks_logged
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("end_of_day_job")
    c0, t0 = time.process_time(), time.time()
    res = job.execute_in_process(
        instance=instance,
        partition_key=a.date,
        asset_selection=[dg.AssetKey("var_results"), dg.AssetKey("var_contributions")],
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        raise_on_error=False,
    )
    print(f"success {res.success}; CPU {time.process_time() - c0:.1f} s; wall {time.time() - t0:.1f} s")
    import pandas as pd

    df = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_rows", 500)
    print(df.to_string())
    df["solved"] = df["na"] - df["still"] - df["bnd"] - np.where(df["memo"].str.contains("b"), 0, df["whole"])
    print(df.groupby("caller")[["na", "still", "whole", "bnd", "any_b", "any_w", "solved", "cpu"]].sum())
    for name, c in timing.items():
        print(name, {k: round(v, 1) for k, v in c.items()})
    gdf = pd.DataFrame(groups)
    print(gdf.to_string())
    if a.out:
        df.to_csv(a.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
