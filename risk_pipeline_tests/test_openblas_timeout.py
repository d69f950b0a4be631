"""The package's OpenBLAS setting (``risk_pipeline/__init__.py``): set before numpy loads, the environment's own
value kept, and a threaded product's bits the same with and without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: A product large enough for OpenBLAS to split it between its threads, and its bytes' digest.
PRODUCT = (
    "import numpy as np, hashlib\n"
    "rng = np.random.default_rng(7)\n"
    "a, b = rng.standard_normal((300, 900)), rng.standard_normal((900, 300))\n"
    "print(hashlib.sha256((a @ b).tobytes() + (a @ b[:, 0]).tobytes()).hexdigest())\n"
)


#: Variables that set BLAS thread counts: dropped from each process's environment, so every one uses OpenBLAS' own
#: count (its bits depend on it). A test that ran a Dask ``LocalCluster`` earlier in this worker leaves them at 1 in
#: ``os.environ`` (its nanny's ``pre-spawn-environ``).
THREAD_COUNT_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOTO_NUM_THREADS")


def _run(code: str, timeout: str | None) -> str:
    drop = ("OPENBLAS_THREAD_TIMEOUT", *THREAD_COUNT_VARIABLES)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(ROOT)
    if timeout is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = timeout
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip()


def test_the_package_sets_the_timeout_before_numpy_loads_and_keeps_the_environments() -> None:
    code = "import sys, os, risk_pipeline\nprint('numpy' in sys.modules, os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    assert _run(code, None) == "False 4"
    assert _run(code, "12") == "False 12"


def test_a_threaded_products_bits_do_not_depend_on_the_timeout() -> None:
    """Same bits with OpenBLAS' default spin (the variable unset, numpy loaded first), the package's setting and
    another value, each in its own process with OpenBLAS' own thread count. (Not compared with this process's
    product: its thread count is whatever the environment gave it when numpy loaded, and a product's bits depend on
    the thread count.)"""
    default = _run(PRODUCT, None)
    with_package = _run("import risk_pipeline\n" + PRODUCT, None)
    other = _run(PRODUCT, "20")
    assert default == with_package == other
