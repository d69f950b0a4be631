"""numpy's pairwise summation of a contiguous float64 row, for compiled kernels that must give ``np.sum``'s bits
(the SVI inner fit's sums over quotes, the GARCH-t log-likelihood's sum)."""

from __future__ import annotations

import numpy as np

from risk_pipeline.quant._numba import FloatArray, inner_njit


@inner_njit()
def block_sum(a: FloatArray, lo: int, n: int) -> float:
    """``np.sum`` of ``a[lo:lo + n]``, ``n <= 128``, in numpy's order: plain below 8 terms, else eight
    interleaved accumulators combined pairwise, then the remainder."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@inner_njit()
def pairwise_sum(a: FloatArray, lo: int, n: int) -> float:
    """``np.sum`` of ``a[lo:lo + n]`` (contiguous float64) in numpy's order: ``block_sum`` up to 128 terms, else
    the sum of the two halves (the first a multiple of 8 long), as numpy's recursion, with a stack of its own (a
    recursive helper has no code of its own to call, see ``inner_njit``). ``lo`` reaches ``block_sum`` as an
    ``np.intp``: callers pass a constant ``0`` (a literal type of its own), and ``block_sum`` compiled for it and
    again for the stack's ``intp`` (0.4 s of CPU in a cold compilation); the same integer either way."""
    if n <= 128:
        return block_sum(a, np.intp(lo), n)
    f_lo = np.empty(64, dtype=np.intp)
    f_n = np.empty(64, dtype=np.intp)
    f_stage = np.empty(64, dtype=np.intp)  # not np.zeros: two more numba library functions to compile
    f_left = np.empty(64)
    top = 0
    f_lo[0], f_n[0], f_stage[0] = lo, n, 0  # a frame's stage is set when it is pushed
    r = 0.0
    while top >= 0:
        cl, cn = f_lo[top], f_n[top]
        if cn <= 128:
            r = block_sum(a, cl, cn)
            top -= 1
            continue
        n2 = cn // 2
        n2 -= n2 % 8
        if f_stage[top] == 0:  # the first half next
            f_stage[top] = 1
            top += 1
            f_lo[top], f_n[top], f_stage[top] = cl, n2, 0
        elif f_stage[top] == 1:  # the first half's sum is in r: the second half next
            f_left[top] = r
            f_stage[top] = 2
            top += 1
            f_lo[top], f_n[top], f_stage[top] = cl + n2, cn - n2, 0
        else:  # both halves done
            r = f_left[top] + r
            top -= 1
    return r
