"""``_summation.pairwise_sum`` gives ``np.sum``'s bits and compiles ``block_sum`` once, for an ``intp`` start, when
its callers pass a constant ``0`` (a literal type of its own)."""

from __future__ import annotations

import numpy as np
from numba import njit, types

from risk_pipeline.quant._numba import JIT
from risk_pipeline.quant._summation import block_sum, pairwise_sum

#: The test's own kernels compile in every run: loaded from numba's disk cache they would not type ``block_sum``,
#: and the overloads counted below would depend on what an earlier run left in the cache.
FRESH = {**JIT, "cache": False}


@njit(**FRESH)
def _sum_from_zero(a: np.ndarray, n: int) -> float:
    return pairwise_sum(a, 0, n)  # a literal 0, as the SVI and GARCH-t kernels pass it


@njit(**FRESH)
def _sum_from(a: np.ndarray, lo: int, n: int) -> float:
    return pairwise_sum(a, lo, n)


def test_pairwise_sum_gives_numpys_bits() -> None:
    rng = np.random.default_rng(5)
    a = rng.standard_normal(3000) * np.exp(rng.uniform(-20.0, 20.0, 3000))
    for n in [0, 1, 7, 8, 9, 127, 128, 129, 255, 256, 257, 1000, 2049, 3000]:
        assert _sum_from_zero(a, n) == np.sum(a[:n]), n
        assert _sum_from(a, np.intp(500), min(n, 2500)) == np.sum(a[500 : 500 + min(n, 2500)]), n


def test_block_sum_compiles_once_for_a_literal_and_a_variable_start() -> None:
    a = np.arange(300.0)
    _sum_from_zero(a, 300)
    _sum_from_zero(a, 100)  # n <= 128: block_sum directly from pairwise_sum's start
    _sum_from(a, np.intp(3), 200)
    starts = {sig[1] for sig in block_sum.overloads}
    assert starts == {types.intp}, starts
