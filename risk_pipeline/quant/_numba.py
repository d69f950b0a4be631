"""Array type aliases and numba settings shared by the pricing core.

Every kernel is compiled with ``JIT``: on-disk caching (``cache=True``; a cold process loads the
machine code instead of compiling it), IEEE semantics (no ``fastmath``) and numpy's error model (a
division by zero gives inf/NaN instead of raising inside a kernel).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]

#: Keyword arguments of every ``numba.njit`` in ``risk_pipeline.quant``.
JIT: dict[str, Any] = {"cache": True, "fastmath": False, "error_model": "numpy"}
