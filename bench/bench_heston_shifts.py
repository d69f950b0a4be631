"""Memory and CPU of ``heston_stress.heston_vol_shifts`` (``stress_model_consistent``'s Heston vol shifts) at the
size of one book of the 500- and 3,000-name universes, old code against new.

``python bench/bench_heston_shifts.py [--sizes 500 3000] [--ref main] [--old-max-names 1000]``: each (size, code)
runs in its own subprocess, the old ``quant/heston_stress.py`` of ``--ref`` (from ``git show``) and the new one
alternating per size. The book is built from the quant core (no warehouse): ``names`` underlyings, ``25,000 x
names / 3,000`` positions (one of the large universe's two books), 85 % of them American-style options at the
chain's expiries (7 to 365 days, strikes about the spot), one calibrated-looking Heston model per name, and 15
scenarios (the stress library's count) of beta-scaled index moves plus a name move. Printed per run: CPU seconds of
the call (``time.process_time``; a 12-name call first loads the numba kernels), the process's peak RSS
(``ru_maxrss``) and its rise over the RSS before the call;
for each size where both ran, whether the shift arrays are bit-identical (NaN where no vol could be implied, in
both). The old code is not run above ``--old-max-names`` (it holds every scenario's COS grids at once).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_warm_steps import rss_bytes  # noqa: E402
from old_code import module_at  # noqa: E402


def load(code: str, ref: str) -> Any:
    if code == "new":
        import risk_pipeline.quant.heston_stress as mod

        return mod
    return module_at(ref, "risk_pipeline.quant.heston_stress")


def book(n_names: int, seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    from risk_pipeline.quant.portfolio import Portfolio

    rng = np.random.default_rng(seed)
    n = 25_000 * n_names // 3_000
    spot = rng.uniform(20.0, 400.0, n_names)
    sym = rng.integers(0, n_names, n)
    opt = rng.random(n) < 0.85
    days = np.array([7, 14, 21, 35, 49, 77, 112, 168, 259, 365])[rng.integers(0, 10, n)]
    strike = spot[sym] * np.exp(rng.normal(0.0, 0.12, n))
    portfolio = Portfolio(
        symbols=tuple(f"N{i:04d}" for i in range(n_names)),
        spot=spot,
        symbol_index=sym,
        quantity=rng.normal(0.0, 10.0, n),
        multiplier=100.0,
        is_option=opt,
        is_call=rng.random(n) < 0.5,
        strike=np.where(opt, strike, 1.0),
        time_years=np.where(opt, days / 365.0, 0.0),
        implied_vol=np.where(opt, rng.uniform(0.2, 0.5, n), 0.0),
        rate=0.04,
        dividend_yield=np.where(opt, rng.uniform(0.0, 0.03, n), 0.0),
        is_american=opt,
    )
    params = np.column_stack(
        [
            rng.uniform(0.03, 0.2, n_names),  # v0
            rng.uniform(0.5, 5.0, n_names),  # kappa
            rng.uniform(0.03, 0.2, n_names),  # theta
            rng.uniform(0.3, 1.5, n_names),  # xi
            rng.uniform(-0.9, -0.3, n_names),  # rho
        ]
    )
    index = np.array([-0.5, -0.34, -0.3, -0.2, -0.19, -0.15, -0.12, -0.1, -0.05, 0.0, 0.05, 0.1, -0.08, -0.25, 0.15])
    beta = rng.uniform(0.6, 1.6, n_names)
    moves = np.clip(index[:, None] * beta[None, :] + rng.normal(0.0, 0.03, (15, n_names)), -0.9, 1.0)
    return portfolio, params, moves


def child(code: str, n_names: int, ref: str, out: str) -> dict[str, Any]:
    mod = load(code, ref)
    mod.heston_vol_shifts(*book(12, seed=1))  # the kernels loaded (or compiled) before the measured call
    portfolio, params, moves = book(n_names)
    before = rss_bytes()
    c0 = time.process_time()
    shifts = mod.heston_vol_shifts(portfolio, params, moves)
    cpu = time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    np.save(out, shifts)
    return {
        "code": code,
        "names": n_names,
        "positions": int(portfolio.n_positions),
        "options": int(np.count_nonzero(portfolio.is_option)),
        "cpu_s": cpu,
        "rss_before_gib": before / 2**30,
        "peak_rss_gib": peak / 2**30,
        "rss_rise_gib": (peak - before) / 2**30,
        "nan": int(np.isnan(shifts).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 3000])
    parser.add_argument("--ref", default="main", help="git revision of the old quant/heston_stress.py")
    parser.add_argument("--old-max-names", type=int, default=1000)
    parser.add_argument("--child", choices=["old", "new"])
    parser.add_argument("--out")
    a = parser.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.sizes[0], a.ref, a.out)))
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            got = {}
            for code in ("old", "new"):
                if code == "old" and n > a.old_max_names:
                    print(f"{n} names, old: not run (over --old-max-names)")
                    continue
                out = str(Path(tmp) / f"{code}_{n}.npy")
                cmd = [sys.executable, __file__, "--child", code, "--sizes", str(n), "--ref", a.ref, "--out", out]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                if proc.returncode:
                    print(f"{n} names, {code}: failed ({proc.returncode})\n{proc.stderr[-3000:]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                got[code] = np.load(out)
                print(
                    f"{n} names, {code} code: {r['positions']:,} positions ({r['options']:,} options), 15 scenarios: "
                    f"{r['cpu_s']:.1f} CPU s, peak RSS {r['peak_rss_gib']:.2f} GiB (+{r['rss_rise_gib']:.2f} over "
                    f"{r['rss_before_gib']:.2f}); {r['nan']} NaN shifts; load {os.getloadavg()[0]:.1f}"
                )
            if len(got) == 2:
                same = got["old"].tobytes() == got["new"].tobytes()
                print(f"  old vs new shifts: {'bit-identical' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
