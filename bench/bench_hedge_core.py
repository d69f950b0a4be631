"""One recorded ``solve_hedge`` call replayed with its solver calls traced: where the time goes and why the per-symbol
Lagrangian core is or is not applied.

``python bench/bench_hedge_core.py OUT/input_<k>.pkl [--time-limit S]``: the candidates and targets that
``bench_hedge_phases.py --inputs`` (or ``bench_hedge_scale.py --save-inputs``) pickled, solved by the ``solve_hedge``
of the code on ``PYTHONPATH`` (its first entry) with every ``_lagrangian_core`` call (the groups solved, the
sub-MILP's status and time, the bound against the kept cost and the LP's, the lines in the reduced-cost bounds and
left after it, why it returned none), every ``_milp`` call (variables free, status, objective, dual bound) and every
``_restricted_milp`` call printed with its CPU and wall seconds. The code's functions are wrapped, not changed;
``_lagrangian_core`` must take ``info`` (this branch's code).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
import warnings
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs")
    ap.add_argument("--time-limit", type=float, default=None)
    a = ap.parse_args(argv)
    root = Path(os.environ.get("PYTHONPATH", str(Path(__file__).resolve().parents[1])).split(os.pathsep)[0])
    sys.path.insert(0, str(root))
    import numpy as np

    import risk_pipeline.quant.hedging as h

    d = pickle.loads(Path(a.inputs).read_bytes())
    limit = a.time_limit if a.time_limit is not None else d["time_limit"]
    hc, t = d["hc"], d["t"]
    print(
        f"code: {root}; {hc.n} candidates, {len(t.greek_names)} Greek rows, {t.book_pnl.size} scenarios, time limit "
        f"{limit:g} s; Greek rows over their level: {int(np.sum(np.abs(t.exposure) > t.warn_level))}"
    )
    t0c, t0w = time.process_time(), time.perf_counter()

    def stamp() -> str:
        return f"[{time.process_time() - t0c:7.2f} CPU s, {time.perf_counter() - t0w:7.2f} s]"

    orig_core, orig_milp, orig_restricted = h._lagrangian_core, h._milp, h._restricted_milp

    def core(prog: Any, lp: Any, kept: float, bounds: Any, limit: float, info: Any = None) -> Any:
        rec: dict[str, Any] = {}
        c0, w0 = time.process_time(), time.perf_counter()
        got = orig_core(prog, lp, kept, bounds, limit, rec)
        n = len(prog["min_contracts"])
        print(
            f"{stamp()} _lagrangian_core: {time.process_time() - c0:.2f} CPU s ({time.perf_counter() - w0:.2f} s), "
            f"limit {limit:.2f}; kept {kept:,.4f}, LP {float(lp.fun):,.4f}; reduced-cost bounds leave "
            f"{int(np.sum(np.asarray(bounds.ub)[:n] > 0))} of {n} lines; "
            f"{ {k: v for k, v in rec.items() if not isinstance(v, np.ndarray)} }"
        )
        return got

    def milp(prog: Any, integrality: Any, bounds: Any, limit: float, gap: float, *args: Any, **kw: Any) -> Any:
        c0, w0 = time.process_time(), time.perf_counter()
        res = orig_milp(prog, integrality, bounds, limit, gap, *args, **kw)
        n = len(prog["min_contracts"])
        free = int(np.sum(np.asarray(bounds.ub)[:n] > 0))
        kind = "MILP" if np.any(np.asarray(integrality) > 0) else "LP"
        print(
            f"{stamp()} _milp {kind}: {time.process_time() - c0:.2f} CPU s ({time.perf_counter() - w0:.2f} s), limit "
            f"{limit:.2f}, {free} lines free, rows {prog['constraints'][0].A.shape[0]}, status {res.status}, fun "
            f"{getattr(res, 'fun', None)}, dual {getattr(res, 'mip_dual_bound', None)}, "
            f"objective_bound {kw.get('objective_bound')}"
        )
        return res

    def restricted(*args: Any, **kw: Any) -> Any:
        c0, w0 = time.process_time(), time.perf_counter()
        x = orig_restricted(*args, **kw)
        print(
            f"{stamp()} _restricted_milp on {len(args[2])} lines: {time.process_time() - c0:.2f} CPU s "
            f"({time.perf_counter() - w0:.2f} s): {'none' if x is None else f'cost {float(hc.cost @ x):,.4f}'}"
        )
        return x

    h._lagrangian_core, h._milp, h._restricted_milp = core, milp, restricted
    load0 = os.getloadavg()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sol = h.solve_hedge(hc, t, time_limit=limit)
    print(
        f"CPU {time.process_time() - t0c:.2f} s, wall {time.perf_counter() - t0w:.2f} s, load {load0:.2f} -> "
        f"{os.getloadavg()[0]:.2f}: {sol.status}, cost {sol.cost!r}, lower bound {sol.lower_bound!r}, "
        f"{int((sol.quantity > 0).sum())} lines\n  {sol.message}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
