"""numpy's OpenBLAS on one thread for one call.

A LAPACK call on a large matrix (``np.linalg.eigvalsh`` of the 3,000 x 3,000 correlation matrix) runs on
OpenBLAS's threads, which wait for work by spinning: on this 2-core machine, shared by the run's other step
process, the second thread mostly spins (eigvalsh at 3,000 names, load 7: 10-15 CPU s on two threads, 2.9 on one;
the same routine on the same matrix). ``one_blas_thread()`` sets the calling thread's OpenBLAS thread count to 1
(OpenBLAS's thread-local ``openblas_set_num_threads_local``, so other threads keep theirs) and restores it; where
numpy's OpenBLAS or that function is not found, it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@functools.cache
def openblas() -> Any:
    """numpy's OpenBLAS (the library of numpy.libs numpy loaded) if it has ``openblas_set_num_threads_local``, else
    None."""
    import numpy as np

    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("lib*openblas*.so*")) if libs.is_dir() else []:
        try:
            lib = ctypes.CDLL(str(path), mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # only a library numpy loaded
            fn = lib.openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int]
        return lib
    return None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy's OpenBLAS calls of this thread on one thread inside the block."""
    lib = openblas()
    if lib is None:
        yield
        return
    previous = lib.openblas_set_num_threads_local(1)
    try:
        yield
    finally:
        lib.openblas_set_num_threads_local(previous)
