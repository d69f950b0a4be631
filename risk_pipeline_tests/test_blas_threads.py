"""``one_blas_thread``: numpy's OpenBLAS on one thread inside the block, its count restored after it, and the
correlation matrix's positive semi-definite check deciding as on OpenBLAS' own thread count."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from risk_pipeline.blas import one_blas_thread, openblas


def _threads() -> int:
    lib = openblas()
    get = getattr(lib, "scipy_openblas_get_num_threads64_", None) or getattr(lib, "openblas_get_num_threads", None)
    if get is None:
        pytest.skip("no OpenBLAS thread-count getter in numpy's OpenBLAS")
    get.restype = ctypes.c_int
    return int(get())


def test_one_thread_inside_and_the_count_restored() -> None:
    if openblas() is None:
        pytest.skip("numpy's OpenBLAS without openblas_set_num_threads_local: one_blas_thread does nothing")
    outside = _threads()
    with one_blas_thread():
        assert _threads() == 1
    assert _threads() == outside


def test_the_psd_check_decides_the_same_inside() -> None:
    rng = np.random.default_rng(3)
    returns = rng.standard_normal((63, 400)) + rng.standard_normal((63, 1))
    corr = np.corrcoef(returns, rowvar=False)  # rank 62: 338 eigenvalues 0 up to rounding
    broken = corr.copy()
    broken[0, 1] = broken[1, 0] = -0.9  # no longer positive semi-definite
    for matrix, psd in ((corr, True), (broken, False)):
        outside = np.linalg.eigvalsh(matrix)
        with one_blas_thread():
            inside = np.linalg.eigvalsh(matrix)
        np.testing.assert_allclose(inside, outside, rtol=0, atol=1e-11)
        assert (not inside.min() < -1e-10) is psd
        assert (not outside.min() < -1e-10) is psd
