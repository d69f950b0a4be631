"""Array type aliases and numba settings shared by the pricing core.

Every kernel is compiled with ``JIT``: on-disk caching (``cache=True``; a cold process loads the
machine code instead of compiling it), IEEE semantics (no ``fastmath``) and numpy's error model (a
division by zero gives inf/NaN instead of raising inside a kernel).

The cache lives in a directory named by a hash of this package's sources
(``~/.cache/risk_pipeline/numba/<hash>``, or under ``XDG_CACHE_HOME``): numba checks a cached kernel only
against its own file's timestamp, so after a change to a function it inlines from another module (the
American engine into the scenario engine, say) it would load the old machine code and run the old numbers
without a word. Any change to a file of ``risk_pipeline/quant`` starts a fresh directory; the three most
recent are kept, so switching back to a version is free. ``NUMBA_CACHE_DIR`` set by the user wins.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]

#: Keyword arguments of every ``numba.njit`` in ``risk_pipeline.quant``.
JIT: dict[str, Any] = {"cache": True, "fastmath": False, "error_model": "numpy"}


#: Cache directories of earlier source versions kept beside the current one.
KEEP_CACHE_VERSIONS = 3


def source_hash() -> str:
    """SHA-256 (16 hex digits) of the names and contents of every module of ``risk_pipeline/quant``."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _use_versioned_cache() -> Path | None:
    """Point numba's cache at this source version's directory (module docstring); None if the user set one."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "risk_pipeline" / "numba"
    here = root / source_hash()
    try:
        here.mkdir(parents=True, exist_ok=True)
        os.utime(here)  # the most recently used version
        others = sorted((p for p in root.iterdir() if p.is_dir() and p != here), key=lambda p: p.stat().st_mtime)
        for old in others[: max(len(others) - (KEEP_CACHE_VERSIONS - 1), 0)]:
            shutil.rmtree(old, ignore_errors=True)
    except OSError:  # not writable: numba falls back to its default locations
        return None
    numba.config.CACHE_DIR = str(here)
    return here


CACHE_DIR = _use_versioned_cache()
