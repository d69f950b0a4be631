"""``calibrate_heston`` on every underlying of a snapshot, one after another on one thread: CPU seconds, fit quality,
and the parameters saved to compare two codes.

``python bench/bench_heston_fits.py run (INPUTS.pkl | --synthetic N) [--code DIR] [--save OUT.pkl]``: the quotes
``stochastic_vol_models`` fits (``usable_quotes``, as ``heston_fit`` passes them) of every underlying of
``INPUTS.pkl`` (``bench_stochastic_vol.py dump``) or of ``bench_svi.sample_implied_vols(7, N)``; numba on one thread
(as the step's fitting threads); prints CPU seconds (``time.process_time``), the load and RMSE median / p95 / max
and the converged count; ``--code DIR`` imports the package from another checkout (old code).

``python bench/bench_heston_fits.py compare OLD.pkl NEW.pkl``: RMSE and converged old against new, per-name RMSE
differences, and the parameters' relative moves (absolute for ``rho``).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ("v0", "kappa", "theta", "xi", "rho")


def quality(rows: dict) -> str:
    r = np.array([v["rmse"] for v in rows.values()])
    conv = sum(v["converged"] for v in rows.values())
    return (
        f"RMSE median {np.median(r):.4f} p95 {np.percentile(r, 95):.4f} max {r.max():.4f} vol points; "
        f"converged {conv}/{len(rows)}; LM evaluations {sum(v['nfev'] for v in rows.values())}"
    )


def run(a: argparse.Namespace) -> None:
    sys.path.insert(0, a.code or str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import numba
    import pandas as pd

    from risk_pipeline.defs.volatility.stochastic_vol import usable_quotes
    from risk_pipeline.quant import heston

    print(f"code {Path(heston.__file__).resolve()}")
    numba.set_num_threads(1)
    if a.synthetic:
        from bench_svi import sample_implied_vols

        iv = sample_implied_vols(7, a.synthetic)
    else:
        with open(a.inputs, "rb") as f:
            iv = pickle.load(f)["iv"]
    usable = usable_quotes(iv)
    jobs = []
    for u, g in usable.groupby("underlying", sort=True):
        t = g["time_to_expiry_years"].to_numpy(float)
        k = np.log(g["strike"].to_numpy(float) / g["forward"].to_numpy(float))
        jobs.append((str(u), t, k, g["implied_vol"].to_numpy(float)))
    heston.calibrate_heston(*jobs[0][1:])  # compile / load the cache
    load0 = os.getloadavg()[0]
    rows, c0 = {}, time.process_time()
    for name, t, k, v in jobs:
        try:
            fit = heston.calibrate_heston(t, k, v)
        except ValueError:
            continue
        rows[name] = {
            **{p: getattr(fit.params, p) for p in PARAMS},
            "rmse": fit.rmse_vol_points,
            "max": fit.max_abs_error_vol_points,
            "converged": fit.converged,
            "nfev": fit.iterations,
        }
    cpu = time.process_time() - c0
    print(f"{len(rows)} fits: CPU {cpu:.2f} s; load {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print(quality(rows))
    if a.save:
        with open(a.save, "wb") as f:
            pickle.dump(rows, f)
    del pd


def compare(a: argparse.Namespace) -> None:
    with open(a.old, "rb") as f:
        old = pickle.load(f)
    with open(a.new, "rb") as f:
        new = pickle.load(f)
    names = sorted(set(old) & set(new))
    print(f"old: {quality(old)}\nnew: {quality(new)}")
    d = np.array([new[n]["rmse"] - old[n]["rmse"] for n in names])
    print(f"RMSE new - old: min {d.min():.3g} max {d.max():.3g}; |d| <= 1e-5: {np.sum(np.abs(d) <= 1e-5)}/{d.size}")
    same = [n for n in names if abs(new[n]["rmse"] - old[n]["rmse"]) <= 1e-4]
    for p in PARAMS:
        if p == "rho":
            m = np.array([abs(new[n][p] - old[n][p]) for n in same])
        else:
            m = np.array([abs(new[n][p] / old[n][p] - 1.0) for n in same])
        worst = same[int(np.argmax(m))]
        print(f"{p}: {'abs' if p == 'rho' else 'rel'} move median {np.median(m):.2g} max {m.max():.2g} ({worst})")
    far = [n for n in names if n not in same]
    for n in far:
        print(n, {k: (old[n][k], new[n][k]) for k in (*PARAMS, "rmse")})


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("inputs", nargs="?")
    r.add_argument("--synthetic", type=int, default=0)
    r.add_argument("--code")
    r.add_argument("--save")
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    a = ap.parse_args()
    run(a) if a.cmd == "run" else compare(a)


if __name__ == "__main__":
    main()
