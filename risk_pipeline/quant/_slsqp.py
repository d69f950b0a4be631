"""SciPy's reverse-communication SLSQP core and the workspace scipy 1.17's ``_minimize_slsqp`` sets up for it.

Two fits drive the core by hand, step for step as ``scipy.optimize.minimize(method="SLSQP")`` does, without SciPy's
per-evaluation wrappers (``svi.slsqp_minimize``, ``vol_forecast._arch_fit``); both take their state and arrays from
``slsqp_workspace``. With another SciPy version (``LEAN_SLSQP`` False) they call SciPy's own driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy

try:  # the core ``minimize(method="SLSQP")`` steps since SciPy 1.16
    from scipy.optimize._slsqplib import slsqp as slsqp_core
except ImportError:  # pragma: no cover - other SciPy versions: SciPy's own driver is used
    slsqp_core = None

#: the hand-driven loops repeat SciPy 1.17's driver exactly; any other version goes through ``minimize``
LEAN_SLSQP: bool = slsqp_core is not None and scipy.__version__.split(".")[:2] == ["1", "17"]


@dataclass
class SlsqpWorkspace:
    """The core's state and arrays: ``c`` holds the constraint normals (``m x n``, Fortran order), ``d`` the
    constraint values, ``mult`` the multipliers."""

    state: dict[str, Any]
    indices: np.ndarray
    buffer: np.ndarray
    mult: np.ndarray
    c: np.ndarray
    d: np.ndarray


def slsqp_workspace(n: int, m: int, ftol: float, maxiter: int) -> SlsqpWorkspace:
    """State and zeroed arrays for ``n`` variables and ``m`` inequality constraints, sized as SciPy 1.17 sizes them."""
    state: dict[str, Any] = {
        "acc": ftol,
        "alpha": 0.0,
        "f0": 0.0,
        "gs": 0.0,
        "h1": 0.0,
        "h2": 0.0,
        "h3": 0.0,
        "h4": 0.0,
        "t": 0.0,
        "t0": 0.0,
        "tol": 10.0 * ftol,
        "exact": 0,
        "inconsistent": 0,
        "reset": 0,
        "iter": 0,
        "itermax": int(maxiter),
        "line": 0,
        "m": m,
        "meq": 0,
        "mode": 0,
        "n": n,
    }
    size = n * (n + 1) // 2 + 3 * m * n + 9 * m + 8 * n * n + 35 * n + 28 + (2 * n * (n + 1) if m == 0 else 0)
    return SlsqpWorkspace(
        state=state,
        indices=np.zeros([max(m + 2 * n + 2, 1)], dtype=np.int32),
        buffer=np.zeros(max(size, 1), dtype=np.float64),
        mult=np.zeros([max(1, m + 2 * n + 2)], dtype=np.float64),
        c=np.zeros([max(1, m), n], dtype=np.float64, order="F"),
        d=np.zeros([max(1, m)], dtype=np.float64),
    )
