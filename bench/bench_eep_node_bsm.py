"""The premium grid's BSM at the nodes alone: the per-option inputs broadcast to the nodes and copied, then
``_bsm_kernel`` (the code before), against ``_bsm_node_kernel`` reading them per option; CPU ms a fit (one grid of a
build), best and median of ``--repeat``, at 500 and 3,000 names' American counts (4,673 and 45,000).

``python bench/bench_eep_node_bsm.py [--repeat 7]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "risk_pipeline_tests" / "quant"))

from test_eep_node_bsm import _broadcast_reference, _inputs

from risk_pipeline.quant import scenario_engine as se


def old(x: dict[str, np.ndarray], am: np.ndarray, work: np.ndarray) -> np.ndarray:
    """The code before: the per-option inputs broadcast to the nodes and copied, ``_bsm_kernel``, a new difference."""
    return am - _broadcast_reference(x)


def new(x: dict[str, np.ndarray], am: np.ndarray, work: np.ndarray) -> np.ndarray:
    """``_bsm_node_kernel`` reading them per option, the difference made in place (``_grid_prices``' own array)."""
    euro = np.empty(x["s"].shape)
    se._bsm_node_kernel(x["s"], x["ls"], x["lk"], x["carry"], x["sqt"], x["v"], x["w"], x["dq"], x["kdr"], euro)
    return np.subtract(am, euro, out=work)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    for na in (4_673, 45_000):
        x = _inputs(na, se.EEP_VOL_NODES, se.EEP_SPOT_NODES, 0)
        am = np.random.default_rng(1).random(x["s"].shape)
        work = np.empty_like(am)
        assert old(x, am, work).tobytes() == new(x, am, work).tobytes()
        for name, f in (("old", old), ("new", new), ("old", old), ("new", new)):
            ts = []
            for _ in range(a.repeat):
                c = time.process_time()
                f(x, am, work)
                ts.append(1e3 * (time.process_time() - c))
            print(f"{na:6d} Americans {name}: best {min(ts):7.2f} median {statistics.median(ts):7.2f} CPU ms a fit")


if __name__ == "__main__":
    main()
