"""The replacements of numba compiler steps in ``_numba`` give what numba's own versions give: the same flags
hashes, equality and values, the same variables of an IR statement, the same types and results of a kernel with
scalar and array operators, the same failure report for a call with no matching implementation, the same meminfos
of a value (with fewer instructions), the same machine code for a kernel whose CPython wrapper is unoptimized, and the
same IR after SSA reconstruction, and the same types and machine code with call types answered from a memo."""

from __future__ import annotations

import io
import itertools
import math
from typing import Any

import numba
import numpy as np
import pytest
from llvmlite import ir as llvm_ir
from numba import literal_unroll
from numba.core import compiler, cpu, postproc, ssa, types
from numba.core import ir as numba_ir
from numba.core.errors import TypingError
from numba.core.types import functions as numba_functions

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
    for values in ({"forceinline": False}, {"forceinline": True, "dbg_optnone": False}, {"dbg_optnone": False}):
        f = compiler.Flags()  # defaults stored explicitly, or not, as numba's callers do
        for name, value in values.items():
            setattr(f, name, value)
        out.append(f)
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


def test_statement_variables_match_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    def source(x: np.ndarray, y: float) -> float:
        total = 0.0
        for i in range(x.size):
            total += x[i] * y if x[i] > 0.0 else -x[i]
        z = (x[0], y, (total, x))
        x[1] = z[2][0]
        return min(total, y) + np.sum(x) + max(x[0], y, key=None)

    ir = numba.core.compiler.run_frontend(source)
    statements = [stmt for block in ir.blocks.values() for stmt in block.body]
    exprs = [stmt.value for stmt in statements if isinstance(stmt, numba_ir.Assign)]
    exprs = [e for e in exprs if isinstance(e, numba_ir.Expr)]
    assert len(statements) > 40 and len(exprs) > 20
    ours = [stmt.list_vars() for stmt in statements], [e.list_vars() for e in exprs]
    monkeypatch.setattr(numba_ir.Inst, "_rec_list_vars", NUMBA_ORIGINALS["rec_list_vars"])
    monkeypatch.setattr(numba_ir.Stmt, "list_vars", NUMBA_ORIGINALS["stmt_list_vars"])
    monkeypatch.setattr(numba_ir.Expr, "list_vars", NUMBA_ORIGINALS["expr_list_vars"])
    numbas = [stmt.list_vars() for stmt in statements], [e.list_vars() for e in exprs]
    assert ours == numbas
    assert sum(len(v) for v in ours[0]) > 60


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


def test_flags_with_a_default_set_explicitly_equal_unset_flags() -> None:
    explicit = compiler.Flags()
    explicit.nrt = False  # numba's default, stored
    assert explicit == compiler.Flags() and NUMBA_ORIGINALS["eq"](explicit, compiler.Flags())
    assert hash(explicit) == hash(compiler.Flags())


def _meminfo_walks(ty: types.Type) -> tuple[list[types.Type], list[types.Type], int, int]:
    """The meminfo types ``NRTContext.get_meminfos`` finds in an argument of type ``ty``, numba's walk and the
    replacement, each in a fresh function, and the instructions each emitted."""
    from numba.core.registry import cpu_target

    # a copy with NRT on, as numba compiles with (the shared context caches its NRT context, off)
    context = cpu_target.target_context.subtarget(enable_nrt=True)
    found = []
    emitted = []
    for walk in (NUMBA_ORIGINALS["get_meminfos"], _numba._get_meminfos):
        module = llvm_ir.Module()
        fn = llvm_ir.Function(module, llvm_ir.FunctionType(llvm_ir.VoidType(), [context.get_value_type(ty)]), "f")
        builder = llvm_ir.IRBuilder(fn.append_basic_block())
        found.append([t for t, _ in walk(context.nrt, builder, ty, fn.args[0])])
        emitted.append(len(fn.blocks[0].instructions))
    return found[0], found[1], emitted[0], emitted[1]


def test_meminfo_walk_matches_numba() -> None:
    arr = types.float64[:]
    arr2 = types.float64[:, ::1]
    for ty in (
        types.float64,
        types.UniTuple(types.float64, 3),
        types.Tuple((types.int64, types.boolean, types.complex128)),
        arr,
        arr2,
        types.UniTuple(arr, 2),
        types.Tuple((arr, types.float64, types.int64, arr2)),
        types.Tuple((types.Tuple((types.float64, arr)), types.boolean, types.UniTuple(types.float64, 2))),
    ):
        numba_types, our_types, numba_count, our_count = _meminfo_walks(ty)
        assert our_types == numba_types, ty
        if not numba_types:
            assert our_count == 0 < numba_count or our_count == numba_count == 0, ty
        else:
            assert 0 < our_count <= numba_count, ty
    assert _meminfo_walks(types.Tuple((arr, types.float64)))[0] == [types.MemInfoPointer(types.float64)]


def _defines(llvm_text: str) -> dict[str, str]:
    """Each defined function's name and the attribute comment LLVM prints above its definition."""
    out = {}
    lines = llvm_text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("define "):
            name = line.split("@", 1)[1].split("(", 1)[0].strip('"')
            out[name] = lines[i - 1] if lines[i - 1].startswith("; Function Attrs") else ""
    return out


def _body(asm: str, name: str) -> str:
    """A function's machine code in LLVM's assembly listing, from its label to its end label, its name replaced
    (numba names each dispatcher's functions apart)."""
    start = asm.index(f"\n{name}:")
    return asm[start : asm.index(".Lfunc_end", start)].replace(name, "KERNEL")


def _kernel_name(attrs: dict[str, str]) -> str:
    (name,) = [name for name in attrs if "weighted_sums" in name and not name.startswith("_ZN7cpython")]
    return name


def test_only_the_cpython_wrapper_is_unoptimized(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapper gets ``optnone noinline``; the kernel's own function gets the same machine code as with numba's
    wrapper, and both give the closed-form sums."""

    def weighted_sums(x: np.ndarray, w: float, out: np.ndarray, start: int, stop: int) -> None:
        for i in range(start, stop):
            out[i] = w * (x[i] * (x[i] + 1.0) / 2.0)

    ours = numba.njit(**{**JIT, "cache": False})(weighted_sums)
    x = np.arange(1000, dtype=np.float64)
    out = np.empty_like(x)
    ours(x, 2.0, out, 0, x.size)
    np.testing.assert_array_equal(out, x * (x + 1.0))  # 2 * (1 + 2 + ... + x): exact in binary floating point
    assert _numba.WRAPPERS_UNOPTIMIZED
    sig = ours.signatures[0]
    attrs = _defines(ours.inspect_llvm(sig))
    wrappers = [name for name in attrs if name.startswith("_ZN7cpython")]
    assert len(wrappers) == 1
    assert "optnone" in attrs[wrappers[0]] and "noinline" in attrs[wrappers[0]]
    kernel = _kernel_name(attrs)
    assert "optnone" not in attrs[kernel]

    monkeypatch.setattr(cpu.CPUContext, "create_cpython_wrapper", NUMBA_ORIGINALS["create_cpython_wrapper"])
    numbas = numba.njit(**{**JIT, "cache": False})(weighted_sums)
    out2 = np.empty_like(x)
    numbas(x, 2.0, out2, 0, x.size)
    np.testing.assert_array_equal(out2, out)
    theirs = _defines(numbas.inspect_llvm(sig))
    assert not any("optnone" in a for a in theirs.values())
    ours_code = _body(ours.inspect_asm(sig), kernel)
    assert ours_code == _body(numbas.inspect_asm(sig), _kernel_name(theirs))
    assert "vmulpd" in ours_code or "mulpd" in ours_code  # vectorized: LLVM optimized the kernel


def _ssa_text(source: Any) -> str:
    """The numba IR of ``source`` after SSA reconstruction, as text."""
    func_ir = compiler.run_frontend(source)
    func_ir.blocks = ssa._run_ssa(func_ir.blocks)
    buf = io.StringIO()
    func_ir.dump(file=buf)
    return buf.getvalue()


def _reassigned(x: np.ndarray, n: int) -> tuple[float, int]:
    """Variables reassigned in branches, a ``continue`` and a conditional expression: SSA's and ``del``'s cases."""
    total = 0.0
    k = 0
    for i in range(n):
        if x[i] > 0.0:
            total = total + x[i]
            k = k + 1
        elif x[i] < -1.0:
            total = total - 1.0
            continue
        else:
            k = k - 1
        total = total * 0.5
    y = total if k else -total
    return y, k


def test_ssa_reconstruction_matches_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = _ssa_text(_reassigned)
    monkeypatch.setattr(ssa, "_run_block_rewrite", NUMBA_ORIGINALS["run_block_rewrite"])
    numbas = _ssa_text(_reassigned)
    assert ours == numbas
    assert "phi" in ours and "total.1" in ours


def test_kernel_with_reassigned_variables_gives_its_python_results() -> None:
    @numba.njit(**{**JIT, "cache": False})
    def kernel(x: np.ndarray) -> tuple[float, int]:
        total = 0.0
        k = 0
        for i in range(x.size):
            if x[i] > 0.0:
                total = total + x[i]
                k = k + 1
            else:
                total = total - 1.0
        return total, k

    x = np.array([0.5, -2.0, 1.25, 3.0, -0.5])
    assert kernel(x) == (0.5 - 1.0 + 1.25 + 3.0 - 1.0, 3)


def _mixed_operators(a: np.ndarray, n: int, out: np.ndarray) -> float:
    """Operators on literal and variable integers, floats and arrays, math functions and ``@overload`` calls."""
    buf = np.empty(a.size)  # an @overload template (not answered from the memo)
    total = 0.0
    for i in range(a.size):
        x = a[i]
        y = x**2 + x**n - abs(x) * 3 + math.exp(-x * x) / (1.0 + i)
        buf[i] = min(y, 10.0) if i % 2 == 0 else max(y, -10.0)
        out[i] = buf[i] * 0.5 - (i + 1) // 2
        total += out[i] if out[i] > 0.0 else -out[i]
    return total


def test_call_types_from_the_memo_give_numbas_types_and_machine_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel typed with ``_get_call_type``'s memo (its resolutions answered the first time they repeat, and
    again in a second dispatcher) gets the same types and machine code as with numba's own resolution, and its
    Python source's results."""
    a = np.linspace(-2.0, 3.0, 11)
    ours = numba.njit(**{**JIT, "cache": False})(_mixed_operators)
    out = np.empty_like(a)
    total = ours(a, np.int64(3), out)
    again = numba.njit(**{**JIT, "cache": False})(_mixed_operators)  # every plain resolution from the memo
    calls = []
    resolve = _numba._resolve_call_type

    def spy(*args: Any) -> Any:
        calls.append(args[0])
        return resolve(*args)

    monkeypatch.setattr(_numba, "_resolve_call_type", spy)
    out_again = np.empty_like(a)
    assert again(a, np.int64(3), out_again) == total
    assert not [f for f in calls if "mul" in str(f) or "getitem" in str(f)], calls  # answered from the memo
    assert _numba._CALL_TYPES
    monkeypatch.setattr(numba_functions.BaseFunction, "get_call_type", NUMBA_ORIGINALS["get_call_type"])
    numbas = numba.njit(**{**JIT, "cache": False})(_mixed_operators)
    out_numba = np.empty_like(a)
    assert numbas(a, np.int64(3), out_numba) == total
    ref_out = np.empty_like(a)
    assert _mixed_operators(a, 3, ref_out) == total  # the Python source: the same IEEE operations
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(out_again, ref_out)
    np.testing.assert_array_equal(out_numba, ref_out)
    sig = ours.signatures[0]
    assert _typemap(again, sig) == _typemap(ours, sig) == _typemap(numbas, sig)
    assert len(_typemap(ours, sig)["__calls__"].splitlines()) > 20
    bodies = [_body(d.inspect_asm(sig), _named(d, sig)) for d in (ours, again, numbas)]
    assert bodies[0] == bodies[1] == bodies[2]


def _typemap(dispatcher: Any, sig: Any) -> dict[str, str]:
    """Each variable's type and each call's signature of a compiled version, as text."""
    cres = dispatcher.overloads[sig]
    types_ = {name: str(ty) for name, ty in cres.type_annotation.typemap.items()}
    calls = sorted(str(s) for s in cres.type_annotation.calltypes.values())
    return {**types_, "__calls__": "\n".join(calls)}


def _named(dispatcher: Any, sig: Any) -> str:
    """The name of a dispatcher's own compiled function (not its CPython wrapper)."""
    (name,) = [
        n for n in _defines(dispatcher.inspect_llvm(sig)) if "_mixed_operators" in n and not n.startswith("_ZN7cpython")
    ]
    return name


def _ir_with_dels(source: Any) -> str:
    """The numba IR of ``source`` after ``PostProcessor.run`` without and then with ``del`` statements, as text."""
    func_ir = compiler.run_frontend(source)
    postproc.PostProcessor(func_ir).run()
    postproc.PostProcessor(func_ir).run(emit_dels=True)
    buf = io.StringIO()
    func_ir.dump(file=buf)
    return buf.getvalue()


def test_postprocessor_gives_numbas_dels_and_machine_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_postproc_run`` (lifetimes computed when read, no block entry variables) gives numba's IR with its ``del``
    statements, the same types and machine code, and the Python source's results."""
    x = np.array([0.5, -2.0, 1.25, 0.0, 3.0, -0.5, 2.0])
    assert postproc.PostProcessor.run is _numba._postproc_run
    ours_ir = _ir_with_dels(_reassigned)
    ours = numba.njit(**{**JIT, "cache": False})(_reassigned)
    result = ours(x, np.int64(x.size))
    monkeypatch.setattr(postproc.PostProcessor, "run", NUMBA_ORIGINALS["postproc_run"])
    assert _ir_with_dels(_reassigned) == ours_ir
    assert "del " in ours_ir
    numbas = numba.njit(**{**JIT, "cache": False})(_reassigned)
    assert numbas(x, np.int64(x.size)) == result == _reassigned(x, x.size)
    sig = ours.signatures[0]
    assert _typemap(ours, sig) == _typemap(numbas, sig)

    def own(dispatcher: Any) -> str:
        (name,) = [n for n in _defines(dispatcher.inspect_llvm(sig)) if "_reassigned" in n and "cpython" not in n]
        return _body(dispatcher.inspect_asm(sig), name)

    assert own(ours) == own(numbas)


def test_generators_literal_unroll_and_with_lifting_use_numbas_postprocessor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The functions whose later passes read the analyses of an earlier ``PostProcessor.run`` (generators, loops
    over ``literal_unroll``, ``with`` blocks) get numba's version, and their results."""
    calls = []
    original = _numba._numba_postproc_run

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(self.func_ir.func_id.func_name)
        original(self, *args, **kwargs)

    monkeypatch.setattr(_numba, "_numba_postproc_run", spy)

    @numba.njit(cache=False)
    def squares(n: int) -> Any:
        for i in range(n):
            yield i * i

    @numba.njit(cache=False)
    def total_of(n: int) -> int:
        acc = 0
        for v in squares(n):
            acc += v
        return acc

    assert total_of(5) == 0 + 1 + 4 + 9 + 16
    assert "squares" in calls

    @numba.njit(cache=False)
    def mixed_sum() -> float:
        acc = 0.0
        for v in literal_unroll((1, 2.5, np.int64(3))):
            acc += v
        return acc

    assert mixed_sum() == 6.5
    assert "mixed_sum" in calls

    @numba.njit(cache=False)
    def with_object_mode(n: int) -> int:
        y = 0
        with numba.objmode(y="int64"):
            y = n * 3
        return y + 1

    assert with_object_mode(4) == 13
    assert "with_object_mode" in calls
    assert _numba._EAGER_LIFETIMES == [0]
