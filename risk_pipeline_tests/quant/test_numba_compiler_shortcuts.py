"""The replacements of numba compiler steps in ``_numba`` give what numba's own versions give: the same flags
hashes, equality and values, the same variables of an IR statement, the same types and results of a kernel with
scalar and array operators, and the same failure report for a call with no matching implementation."""

from __future__ import annotations

import itertools

import numba
import numpy as np
import pytest
from numba.core import compiler
from numba.core.errors import TypingError

from risk_pipeline.quant import _numba
from risk_pipeline.quant._numba import JIT, NUMBA_ORIGINALS

pytestmark = pytest.mark.skipif(not _numba.COMPILER_SHORTCUTS, reason="only installed on numba 0.68.1")


def _flag_sets() -> list[compiler.Flags]:
    """Flags with none, one or two options set away from their defaults."""
    out = [compiler.Flags()]
    for name, value in (("nrt", True), ("release_gil", True), ("fastmath", True), ("boundscheck", True)):
        f = compiler.Flags()
        setattr(f, name, value)
        out.append(f)
    both = compiler.Flags()
    both.nrt = True
    both.release_gil = True
    out.append(both)
    return out


def test_flags_values_hash_and_equality_match_numba() -> None:
    flags = _flag_sets()
    for f in flags:
        assert f.values() == NUMBA_ORIGINALS["values"](f)
        assert hash(f) == NUMBA_ORIGINALS["hash"](f)
    for a, b in itertools.product(flags, _flag_sets()):
        assert (a == b) == NUMBA_ORIGINALS["eq"](a, b)
    assert compiler.Flags() == compiler.Flags()
    assert flags[0] != flags[1]


def test_statement_variables_match_numba() -> None:
    def source(x: np.ndarray, y: float) -> float:
        total = 0.0
        for i in range(x.size):
            total += x[i] * y if x[i] > 0.0 else -x[i]
        return min(total, y) + np.sum(x)

    ir = numba.core.compiler.run_frontend(source)
    statements = [stmt for block in ir.blocks.values() for stmt in block.body]
    assert len(statements) > 20
    for stmt in statements:
        assert stmt.list_vars() == NUMBA_ORIGINALS["rec_list_vars"](stmt, stmt.__dict__)


def test_kernel_with_scalar_and_array_operators() -> None:
    @numba.njit(**{**JIT, "cache": False})
    def kernel(a: np.ndarray, b: float, n: int) -> tuple[np.ndarray, float, int, bool]:
        c = a * b + 1.0  # array operators
        s = 0.0
        for i in range(a.size):
            s += a[i] / b - (a[i] ** 2) % 3.0  # float operators
        k = (n * 3 + 1) // 2 - n % 4  # integer operators
        flag = (b > 0.5) & (n != 2)  # comparisons and booleans
        return c, s, k, flag

    a = np.linspace(-2.0, 3.0, 7)
    c, s, k, flag = kernel(a, 0.75, 5)
    ref = kernel.py_func(a, 0.75, 5)
    np.testing.assert_array_equal(c, ref[0])
    assert s == ref[1] and k == ref[2] and flag == ref[3]
    sig = kernel.signatures[0]
    cres = kernel.overloads[sig]
    assert str(cres.signature.return_type) == "Tuple(array(float64, 1d, C), float64, int64, bool)"


def test_failed_call_still_reports_every_candidate() -> None:
    @numba.njit(**{**JIT, "cache": False})
    def bad(x: float) -> float:
        return x + "a"  # type: ignore[operator]

    with pytest.raises(TypingError) as err:
        bad(1.0)
    text = str(err.value)
    assert "No implementation of function Function(<built-in function add>)" in text
    assert "No match for registered cases:" in text
    assert " * (int64, int64) -> int64" in text
