"""Array type aliases and numba settings shared by the pricing core.

Every kernel is compiled with ``JIT``: on-disk caching (``cache=True``; a cold process loads the
machine code instead of compiling it), IEEE semantics (no ``fastmath``), numpy's error model (a
division by zero gives inf/NaN instead of raising inside a kernel) and no C-callback wrapper
(``no_cfunc_wrapper``: numba would build and compile one per function; none is used as a ``cfunc``).

The cache lives in a directory named by a hash of this package's sources
(``~/.cache/risk_pipeline/numba/<hash>``, or under ``XDG_CACHE_HOME``): numba checks a cached kernel only
against its own file's timestamp, so after a change to a function it inlines from another module (the
American engine into the scenario engine, say) it would load the old machine code and run the old numbers
without a word. Any change to a file of ``risk_pipeline/quant`` starts a fresh directory; the three most
recent are kept, so switching back to a version is free. ``NUMBA_CACHE_DIR`` set by the user wins.

Cold compilation (a first run, or any change to this package) is kept short by seven rules:

* one compiled caller per call tree: numba links a callee's whole call tree into every function that calls
  it and optimizes and emits it again there (the exact American engine's tree: 5-9 s a caller under load).
  The exact engine's pieces are each linked into one array kernel (``american_alo``'s ``boundary_kernel``,
  ``premium_kernel``, ``deterministic_kernel``, ``fd_kernel``), and its users (prices, Greeks, the American
  implied-vol search, the scenario engine) combine them in numpy from Python, batch by batch, with the same
  IEEE operations (the same bits); likewise one kernel for BS2002's lanes and one for Jäckel's European inversion;
* one signature per kernel: numba compiles a callee once per distinct argument types, and a constant
  argument (``True``, ``0``) is a literal type of its own, as is an omitted default; kernels pass flags as
  ``np.bool_(...)``/``np.int64(...)`` (inside a kernel too) and every optional argument explicitly, and a
  real argument where a complex one is expected as ``complex(x)``; arrays too are types of their own by
  layout and writability (``np.nonzero``'s strided indices, an ``einsum`` view, a read-only ``broadcast_to``
  view): kernels get C-contiguous writable arrays;
* no array operation whose error path formats a message: a slice assignment ``a[i:j] = b`` or a
  ``reshape`` checks shapes and compiles numba's string formatting for the message (37 functions, 1.8 s
  of CPU in the demo at load 7); kernels copy element by element and allocate the shape they need;
* small helpers are inlined by LLVM (``forceinline=True``, the ``alwaysinline`` attribute), not by numba
  (``inline="always"`` re-types the helper's IR at every call site);
* no ``parallel=True``: every kernel with independent iterations is a sequential ``nogil`` kernel over
  ``[start, stop)`` run on threads by ``run_chunked``. ``parallel=True`` compiles the loop body, and the
  whole call tree it links, a second time (for the BSM Greeks kernel: 3.9 s against 0.6 s, measured at
  load 12); the arithmetic per iteration is the same either way;
* helpers that only compiled functions call are ``inner_njit``: numba gives every compiled function a
  CPython wrapper, machine code of its own and a cache entry, but a helper's code only ever runs as the copy
  linked into each caller. ``inner_njit`` compiles it to LLVM IR only, without the wrapper; calling it from
  Python raises ``TypeError`` (its ``.py_func`` runs the Python source). Its IR gets numba's per-function passes
  but not numba's module passes of its own (``HELPER_MODULE_PASSES``): every caller runs the full module passes
  on the linked copy anyway, so each helper was optimized twice. Without ``fastmath`` LLVM keeps every IEEE
  operation, so the callers' results are the same bits (their machine code differs); the demo's compilations,
  replayed cold, took 6-10 % less CPU (median 7.7 % at load 3-6);
* every function is ``nogil``: numba compiles a library function (``np.empty``, ``min``) once per set of its
  caller's flags, so kernels and helpers with different flags compiled some of them twice.

Importing this module also turns Python's garbage collector off for the length of every numba compilation
(``NO_COLLECTION_WHILE_COMPILING``): numba's compiler allocates enough objects to start many collections, some of
them full passes over the process's whole heap (9 % of the demo's compile CPU, measured side by side).

On numba 0.68.1 (``COMPILER_SHORTCUTS``), importing it also replaces five Python steps of numba's compiler with
versions that skip work whose result is never used, so every kernel gets the same types, IR and machine code: the
numpy-ufunc search numba runs for every scalar operator (``a + b`` of two floats) only to reject it, the messages of
the overload templates a call tried before the one that matched (formatted only if no template matches), the
compile flags' values, hash and equality (compared on every typing-cache lookup), the templates' order per target
(computed once), and the recursive walk that lists an IR statement's variables. numba's versions are kept in
``NUMBA_ORIGINALS``. The demo's compilations, replayed cold, took 1.4-3.3 s (median 1.8 s) less CPU.

On the same version (``WRAPPERS_UNOPTIMIZED``), three more steps: every kernel's CPython wrapper (it unboxes the
arguments of a call from Python and calls the kernel, never inlined into it) is marked ``optnone noinline``, so LLVM's
passes skip it and its instructions are selected the fast way, while the kernel's own function is optimized as
before (the same machine code); the walk that finds the NRT meminfos of a value to incref or decref skips members
that hold none (numba emitted an unused ``extractvalue`` for each: a sixth of the instructions numba built); and IR
statements and expressions list their variables into one list; SSA reconstruction (once per variable assigned more
than once) copies the blocks that neither assign nor use that variable instead of visiting their statements. A
kernel called only from other kernels is an ``inner_njit`` helper (``special.calerf``, ``scenario_engine._bsm``).

On the same version, a function's call type (``a * b`` of two floats, ``a[i]``, ``math.exp(x)``) is resolved once per
(function, argument types, compile flags) when a plain typing template matches (``_get_call_type``, ``_CALL_TYPES``):
numba resolved every operator anew at every use, in typing and again in lowering (17,000 resolutions in the demo's
compilations, 97 % repeats). The answer is the same signature and implementation key, so the same IR and machine code.

On the same version, numba's IR post-processor (``PostProcessor.run``, 9 times per function) no longer computes at once
the whole function's use-def maps, liveness, dead-variable maps and blocks' entry variables: the lifetimes are computed
when read (only to place ``del`` statements, in the same call) and the entry variables, which only generators and
object mode read, not at all (``_postproc_run``; those, ``literal_unroll`` and with-lifting get numba's version). The
demo's compilations, replayed cold, took about 1.2 s (9 %) less CPU, with the same machine code.

numba builds every kernel with LLVM's SLP vectorizer off (``NUMBA_SLP_VECTORIZE``, default 0), so independent scalar
lanes of straight-line code stay scalar. A kernel made of such lanes is ``slp_njit`` (``JIT`` plus the vectorizer for
that kernel's own optimization only, however it is compiled, its cache entries keyed apart): the grid read
(``scenario_engine._american_grid_values``), whose shifted fold of a cell's 16 coefficients then runs packed, the
grid build's spline fit (``scenario_engine._spline_kernel``, four coefficient chains side by side) and optimal f's
bootstrap paths (``sizing._bootstrap_path_outcomes``, two paths side by side), each with the same bits (the same
IEEE operations in the same order).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import (
    caching,
    cgutils,
    compiler,
    config,
    cpu,
    event,
    lowering,
    postproc,
    ssa,
    targetconfig,
    transforms,
    typed_passes,
    types,
)
from numba.core import errors as numba_errors
from numba.core import ir as numba_ir
from numba.core import utils as numba_utils
from numba.core.callwrapper import PyCallWrapper
from numba.core.codegen import JITCodeLibrary
from numba.core.compiler_lock import global_compiler_lock, require_global_compiler_lock
from numba.core.compiler_machinery import register_pass
from numba.core.registry import CPUDispatcher
from numba.core.runtime import context as nrt_context
from numba.core.types import functions as numba_functions
from numba.core.typing import npydecl
from numba.core.typing import templates as numba_templates
from numba.extending import intrinsic
from numba.np.ufunc import parallel as numba_parallel
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]

#: Keyword arguments of every ``numba.njit`` in ``risk_pipeline.quant`` (``nogil`` on every function, kernels and
#: helpers alike: numba compiles a library function such as ``np.empty`` or ``min`` once per set of its
#: caller's flags, so mixed flags compiled some twice).
JIT: dict[str, Any] = {
    "cache": True,
    "fastmath": False,
    "error_model": "numpy",
    "no_cfunc_wrapper": True,
    "nogil": True,
}


#: Whether an ``inner_njit`` helper's own module gets numba's module passes (``_LinkOnlyLibrary.finalize``). Off:
#: only the copies linked into its callers run, and each caller's module passes optimize them there (numba's
#: per-function passes still run on the helper's functions when its IR is added).
HELPER_MODULE_PASSES = False


class _EnvlessCodegen:
    """The codegen of a ``_LinkOnlyLibrary`` as ``get_executable`` sees it: no environment to set (the function has no
    machine code of its own, and its copies in its callers use none: no object mode, no CPython wrapper)."""

    def __init__(self, codegen: Any) -> None:
        self._codegen = codegen

    def set_env(self, env_name: str, env: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._codegen, name)


class _LinkOnlyLibrary(JITCodeLibrary):  # type: ignore[misc]
    """The code of an inner helper: linked as numba does, with numba's per-function passes, but without module
    passes of its own (unless ``HELPER_MODULE_PASSES``) and never emitted as machine code of its own: only the
    copies linked into its callers run, optimized by the callers' module passes."""

    @property
    def codegen(self) -> Any:
        return _EnvlessCodegen(self._codegen)

    def finalize(self) -> None:
        require_global_compiler_lock()
        self._raise_if_finalized()
        seen = set()
        for library in self._linking_libraries:
            if library not in seen:
                self._reload_init.update(library._reload_init)
                seen.add(library)
                self._final_module.link_in(library._get_module_for_linking(), preserve=True)
        if HELPER_MODULE_PASSES:
            self._optimize_final_module()
        self._final_module.verify()
        self._finalize_dynamic_globals()
        self._verify_declare_only_symbols()
        self._finalized = True

    def get_pointer_to_function(self, name: str) -> int:
        self._ensure_finalized()
        return 0


class _NoWrapperLower(lowering.Lower):  # type: ignore[misc]
    def create_cpython_wrapper(self, release_gil: bool = False) -> None:
        pass


@register_pass(mutates_CFG=True, analysis_only=False)
class _InnerLowering(typed_passes.NativeLowering):  # type: ignore[misc]
    """numba's lowering without the CPython wrapper. Not the ``no_cpython_wrapper`` flag: numba compiles a library
    function once per set of its caller's flags, so helpers with flags of their own compiled ``np.empty``,
    ``min`` and ``max`` again."""

    _name = "inner_native_lowering"

    @property
    def lowering_class(self) -> type:
        return _NoWrapperLower


class _InnerCompiler(compiler.Compiler):  # type: ignore[misc]
    """numba's pipeline, lowering into a ``_LinkOnlyLibrary`` without the CPython wrapper."""

    def compile_extra(self, func: Callable[..., Any]) -> Any:
        if self.state.library is None:
            self.state.library = _LinkOnlyLibrary(self.state.targetctx.codegen(), func.__qualname__)
        return super().compile_extra(func)

    def define_pipelines(self) -> list[Any]:
        pipelines = super().define_pipelines()
        for pm in pipelines:
            pm.passes = [
                (_InnerLowering if pss is typed_passes.NativeLowering else pss, desc) for pss, desc in pm.passes
            ]
            pm.finalize()
        return pipelines


class _InnerDispatcher(CPUDispatcher):  # type: ignore[misc]
    """A dispatcher whose compiled versions only other compiled functions call: no CPython wrapper, no machine
    code of their own (``_InnerCompiler``), no cache entry (a cached caller holds the helper's code).

    Its versions are kept for compiled callers but not entered in the table Python calls go through (there is
    nothing to call); a call from Python raises ``TypeError`` instead.
    """

    def add_overload(self, cres: Any) -> None:
        self.overloads[tuple(cres.signature.args)] = cres

    def _compile_for_args(self, *args: Any, **kws: Any) -> None:
        raise TypeError(
            f"{self.py_func.__module__}.{self.py_func.__qualname__} is compiled for numba kernels only (no "
            "Python wrapper); call it from a compiled function, or its .py_func"
        )


def inner_njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(**JIT, **options)`` for a helper called only from other compiled functions. numba would give
    every compiled function a CPython wrapper and machine code of its own, and save both to the cache; a helper's
    code only runs as the copy linked into each of its callers, so ``_InnerDispatcher`` compiles it without them
    (the wrapper was about 7 % of the cold compile time of ``bench_compile.py``'s workload, the machine code and
    cache entries about 8 %). Not callable from Python (its ``.py_func`` is)."""
    target = {key: val for key, val in JIT.items() if key != "cache"}

    def wrap(func: Callable[..., Any]) -> Any:
        return _InnerDispatcher(
            py_func=func,
            locals={},
            targetoptions={**target, **options, "nopython": True},
            pipeline_class=_InnerCompiler,
        )

    return wrap


@contextlib.contextmanager
def _slp_vectorizer_on() -> Iterator[None]:
    """numba's ``config.SLP_VECTORIZE`` set to 1 for the length of the block, its previous value back afterwards
    (on error too), holding numba's global compiler lock (reentrant: a compilation holds it already). numba reads
    the flag only when it builds an LLVM pass pipeline (``CPUCodegen._pass_builder``), which it does while it
    optimizes a library, inside a compilation: no other thread compiles, so none reads the flag, while it is set."""
    with global_compiler_lock:
        before = config.SLP_VECTORIZE
        config.SLP_VECTORIZE = 1
        try:
            yield
        finally:
            config.SLP_VECTORIZE = before


class _SlpLibrary(JITCodeLibrary):  # type: ignore[misc]
    """A kernel's code library whose LLVM passes (numba's per-function passes on each module added, and the full
    module passes of its final module) run with LLVM's SLP vectorizer on (``slp_njit``). numba's cheap module passes
    before its reference-count pruning keep it off, as numba asks for explicitly."""

    def _optimize_functions(self, ll_module: Any) -> None:
        with _slp_vectorizer_on():
            super()._optimize_functions(ll_module)

    def _optimize_final_module(self) -> None:
        with _slp_vectorizer_on():
            super()._optimize_final_module()


class _SlpCompiler(compiler.Compiler):  # type: ignore[misc]
    """numba's pipeline, lowering into a ``_SlpLibrary`` (object caching on, as numba's lowering sets it)."""

    def compile_extra(self, func: Callable[..., Any]) -> Any:
        if self.state.library is None:
            self.state.library = _SlpLibrary(self.state.targetctx.codegen(), func.__qualname__)
            self.state.library.enable_object_caching()
        return super().compile_extra(func)


#: What ``_SlpFunctionCache`` adds to numba's index key of a cached ``slp_njit`` kernel.
SLP_CACHE_TAG = "slp_vectorize=1"


class _SlpFunctionCache(caching.FunctionCache):  # type: ignore[misc]
    """numba's on-disk cache of a kernel, its index key (signature, CPU, bytecode hashes) tagged ``SLP_CACHE_TAG``:
    numba's key does not hold the LLVM pass options, so a build of the same function without the SLP vectorizer
    (in the same index before the kernel was an ``slp_njit`` one) would otherwise be loaded as it is."""

    def _index_key(self, sig: Any, codegen: Any) -> Any:
        return (*super()._index_key(sig, codegen), SLP_CACHE_TAG)


class _SlpDispatcher(CPUDispatcher):  # type: ignore[misc]
    """A ``CPUDispatcher`` whose on-disk cache is ``_SlpFunctionCache``."""

    def enable_caching(self) -> None:
        self._cache = _SlpFunctionCache(self.py_func)


def slp_njit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(**JIT, **options)`` for a kernel whose machine code is built with LLVM's SLP vectorizer on
    (``NUMBA_SLP_VECTORIZE=1`` for this kernel only: numba's default is off). The vectorizer packs independent
    scalar operations of straight-line code (four Horner chains over contiguous coefficients, say) into vector
    instructions: the same IEEE operations on the same operands, so the same bits without ``fastmath``. It applies
    however the kernel is compiled (first call, ``.compile``, a warm-up process, any thread): the kernel's
    pipeline (``_SlpCompiler``) builds its code library (``_SlpLibrary``), whose optimization sets numba's flag
    under the compiler lock and restores it. Helpers it calls are linked into its module and optimized there too;
    cached builds are keyed apart from builds without it (``_SlpFunctionCache``)."""
    cache = {**JIT, **options}.pop("cache")
    target = {key: val for key, val in {**JIT, **options}.items() if key != "cache"}

    def wrap(func: Callable[..., Any]) -> Any:
        disp = _SlpDispatcher(
            py_func=func,
            locals={},
            targetoptions={**target, "nopython": True, "boundscheck": None},
            pipeline_class=_SlpCompiler,
        )
        if cache:
            disp.enable_caching()
        return disp

    return wrap


class _NoCollectionWhileCompiling(event.Listener):  # type: ignore[misc]
    """Python's cyclic garbage collector off while numba compiles (from the start to the end of the outermost
    ``numba:compile`` event), back to its previous state afterwards.

    numba's compiler allocates hundreds of thousands of objects per kernel (IR, types, LLVM IR text), so the
    collector runs many times inside a compilation, and each full pass walks every object of the process (the
    demo's Dagster heap as well). Garbage left by a compilation is collected by the first collection after it.
    Compilations hold numba's global compiler lock (one at a time, each started and ended in one thread), so one
    depth counter serves every thread; the collector is process-wide, so other threads run without it for the
    length of a compilation (seconds) too.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.was_enabled = False

    def on_start(self, ev: event.Event) -> None:
        if self.depth == 0:
            self.was_enabled = gc.isenabled()
            gc.disable()
        self.depth += 1

    def on_end(self, ev: event.Event) -> None:
        self.depth -= 1
        if self.depth == 0 and self.was_enabled:
            gc.enable()


#: The listener registered on ``numba:compile`` at import (one per process).
NO_COLLECTION_WHILE_COMPILING = _NoCollectionWhileCompiling()
event.register("numba:compile", NO_COLLECTION_WHILE_COMPILING)


# --- numba's compiler: five Python steps without work whose result is never used ------------------------------


def _scalar_operator_generic(self: Any, args: Any, kws: Any) -> Any:
    """``NumpyRulesArrayOperator.generic`` without the ufunc loop search when every operand is a number or a
    boolean: the original searches numpy's loops for ``a + b`` of two floats too and then returns None (it
    accepts only an operation with an array operand), for every scalar operator of every kernel."""
    if all(isinstance(a, (types.Number, types.Boolean)) for a in args):
        return None
    return _array_operator_generic(self, args, kws)


def _config_values(self: Any) -> dict[str, Any]:
    """``TargetConfig.values`` reading the stored values directly instead of through one property per option
    (the same dict: each property returns ``self._values.get(name, default)``). numba's typing caches hash and
    compare the compile flags on every lookup."""
    get = self._values.get
    return {name: get(name, option.default) for name, option in self.options.items()}


def _rec_list_vars(self: Any, val: Any) -> list[Any]:
    """``ir.Inst._rec_list_vars`` (every ``Var`` in ``val``, depth first, in order) by ``_add_vars``' one-list walk
    (numba's own ``Stmt.list_vars`` and ``Expr.list_vars``, its callers, are replaced by that walk as well)."""
    found: list[Any] = []
    _add_vars((val,), found)
    return found


def _add_vars(items: Any, found: list[Any]) -> None:
    """Append to ``found`` every ``Var`` in ``items`` (depth first, in order), as ``_rec_list_vars`` lists them: one
    list for the whole walk, and an ``ir.Expr`` (not a subclass: a parfor lists its own) walked here."""
    for item in items:
        kind = type(item)
        if kind is numba_ir.Var:
            found.append(item)
        elif kind is numba_ir.Expr:
            _add_vars(item._kws.values(), found)
        elif isinstance(item, numba_ir.Var):
            found.append(item)
        elif isinstance(item, numba_ir.Inst):
            found.extend(item.list_vars())
        elif isinstance(item, (list, tuple)):
            _add_vars(item, found)
        elif isinstance(item, dict):
            _add_vars(item.values(), found)


def _stmt_list_vars(self: Any) -> list[Any]:
    """``ir.Stmt.list_vars``: every ``Var`` in the statement's attributes, in order (``_add_vars``)."""
    found: list[Any] = []
    _add_vars(self.__dict__.values(), found)
    return found


def _expr_list_vars(self: Any) -> list[Any]:
    """``ir.Expr.list_vars``: every ``Var`` in the expression's arguments, in order (``_add_vars``)."""
    found: list[Any] = []
    _add_vars(self._kws.values(), found)
    return found


_CONFIG_HASHES: dict[type, int] = {}


def _config_hash(self: Any) -> int:
    """``TargetConfig.__hash__``: the hash of its sorted option names (``sorted(self.values())`` sorts the dict's
    keys), once per class."""
    cls = type(self)
    if cls not in _CONFIG_HASHES:
        _CONFIG_HASHES[cls] = hash(tuple(sorted(self.options)))
    return _CONFIG_HASHES[cls]


def _config_eq(self: Any, other: Any) -> Any:
    """``TargetConfig.__eq__`` (``self.values() == other.values()``) without building the two dicts when both have
    the same options: equal stored values (one dict comparison), else every option stored in either equal (``is`` or
    ``==``, as a dict comparison does; an option stored in neither has its default on both sides)."""
    if not isinstance(other, targetconfig.TargetConfig):
        return NotImplemented
    if self.options is not other.options:
        return _config_values(self) == _config_values(other)
    mine, theirs = self._values, other._values
    if mine == theirs:  # the same stored values: the same values, defaults included
        return True
    options = self.options
    for name in mine.keys() | theirs.keys():
        option = options.get(name)
        if option is None:  # not an option: values() leaves it out
            continue
        a = mine.get(name, option.default)
        b = theirs.get(name, option.default)
        if not (a is b or a == b):
            return False
    return True


class _CasesMessage:
    """The "No match for registered cases" message of a template, formatted only if the failure is reported."""

    __slots__ = ("cases",)

    def __init__(self, cases: Any) -> None:
        self.cases = cases

    def __str__(self) -> str:
        return "No match for registered cases:\n" + "\n".join(f" * {x}" for x in self.cases)


class _LazyFailures(numba_functions._ResolutionFailures):  # type: ignore[misc]
    """numba's ``_ResolutionFailures`` that keeps each failure as given and files it under its message (``str`` of
    the error, the costly part) only when the failures are counted, formatted or raised: a successful resolution
    usually fails several templates first, and their messages are never read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[tuple[Any, bool, Any, bool]] = []

    def add_error(self, calltemplate: Any, matched: bool, error: Any, literal: bool) -> None:
        self._pending.append((calltemplate, matched, error, literal))

    def _file_pending(self) -> None:
        pending, self._pending = self._pending, []
        for calltemplate, matched, error, literal in pending:
            if isinstance(error, _CasesMessage):
                error = str(error)
            super().add_error(calltemplate, matched, error, literal)

    def __len__(self) -> int:
        self._file_pending()
        return super().__len__()  # type: ignore[no-any-return]

    def format(self) -> str:
        self._file_pending()
        return super().format()  # type: ignore[no-any-return]

    def raise_error(self) -> None:
        self._file_pending()
        super().raise_error()


_TEMPLATE_ORDER: dict[tuple[Any, ...], list[Any]] = {}


#: ``_get_call_type``'s answers: (function type, typing context, argument types, keyword types, compile flags) ->
#: (signature, implementation key), for resolutions whose matching template is a plain (concrete or abstract)
#: typing template: those compute the signature from the argument types alone and record nothing but the
#: implementation key (``_MEMO_TEMPLATES``).
_CALL_TYPES: dict[tuple[Any, ...], tuple[Any, Any]] = {}


def _memo_template(temp: Any) -> bool:
    """Whether a resolution by template ``temp`` may be answered from ``_CALL_TYPES`` next time: a concrete or
    abstract typing template, not an ``@overload`` or ``@intrinsic`` one (those compile an implementation per set
    of compile flags and record it when they match)."""
    return isinstance(temp, _MEMO_TEMPLATES) and not isinstance(temp, _NO_MEMO_TEMPLATES)


def _get_call_type(self: Any, context: Any, args: Any, kws: Any) -> Any:
    """``BaseFunction.get_call_type`` (numba 0.68.1) answered from ``_CALL_TYPES`` when the same function was
    resolved for the same argument types (and flags) before by a plain template: the same signature, and the
    implementation key recorded again for its argument types, as the template's second resolution would (numba's
    lowering resolves every operator a second time, and typing the same operator on the same types repeats
    thousands of times per kernel). Otherwise ``_resolve_call_type``."""
    try:
        key = (self, context, tuple(args), tuple(kws.items()), targetconfig.ConfigStack.top_or_none())
        known = _CALL_TYPES.get(key)
    except TypeError:  # an unhashable argument type: no memo
        key, known = None, None
    if known is not None:
        sig, impl_key = known
        self._impl_keys[sig.args] = impl_key
        return sig
    sig, temp = _resolve_call_type(self, context, args, kws)
    if key is not None and _memo_template(temp):
        _CALL_TYPES[key] = (sig, self._impl_keys[sig.args])
    return sig


def _resolve_call_type(self: Any, context: Any, args: Any, kws: Any) -> tuple[Any, Any]:
    """``BaseFunction.get_call_type`` (numba 0.68.1, the same steps) with two savings: failures are filed lazily
    (``_LazyFailures``, ``_CasesMessage``) and the templates' order for a target is computed once per (target,
    templates). The signature and the template that matched."""
    prefer_lit = [True, False]
    prefer_not = [False, True]
    failures = _LazyFailures(context, self, args, kws, depth=self._depth)
    from numba.core.target_extension import get_local_target

    target_hw = get_local_target(context)
    key = (target_hw, *self.templates)
    order = _TEMPLATE_ORDER.get(key)
    if order is None:
        order = numba_utils.order_by_target_specificity(target_hw, self.templates, fnkey=self.key[0])
        _TEMPLATE_ORDER[key] = order
    self._depth += 1
    for temp_cls in order:
        temp = temp_cls(context)
        choice = prefer_lit if temp.prefer_literal else prefer_not
        for uselit in choice:
            try:
                if uselit:
                    sig = temp.apply(args, kws)
                else:
                    nolitargs = tuple([numba_functions._unlit_non_poison(a) for a in args])
                    nolitkws = {k: numba_functions._unlit_non_poison(v) for k, v in kws.items()}
                    sig = temp.apply(nolitargs, nolitkws)
            except Exception as e:
                if not isinstance(e, numba_errors.NumbaError):
                    raise e
                sig = None
                failures.add_error(temp, False, e, uselit)
            else:
                if sig is not None:
                    self._impl_keys[sig.args] = temp.get_impl_key(sig)
                    self._depth -= 1
                    return sig, temp
                registered_sigs = getattr(temp, "cases", None)
                msg = _CasesMessage(registered_sigs) if registered_sigs is not None else "No match."
                failures.add_error(temp, True, msg, uselit)
    failures.raise_error()
    raise AssertionError("unreachable: raise_error raises")


_MEMO_TEMPLATES = (numba_templates.ConcreteTemplate, numba_templates.AbstractTemplate)
_NO_MEMO_TEMPLATES = (numba_templates._OverloadFunctionTemplate, numba_templates._IntrinsicTemplate)

#: LLVM attributes of every function of a kernel's CPython wrapper module (``WRAPPERS_UNOPTIMIZED``).
WRAPPER_ATTRIBUTES = ("noinline", "optnone")


def _create_cpython_wrapper(
    self: Any, library: Any, fndesc: Any, env: Any, call_helper: Any, release_gil: bool = False
) -> None:
    """``CPUContext.create_cpython_wrapper`` (numba 0.68.1, the same IR) with the wrapper's functions marked
    ``optnone noinline``: LLVM's passes skip them and its code generator selects their instructions the fast
    way. The wrapper unboxes a Python call's arguments and calls the kernel (never inlined into it:
    numba's call is ``noinline``), once per call from Python, so its speed does not matter; the kernel's own
    function is optimized as before."""
    wrapper_module = self.create_module("wrapper")
    fnty = self.call_conv.get_function_type(fndesc.restype, fndesc.argtypes)
    wrapper_callee = llvm_ir.Function(wrapper_module, fnty, fndesc.llvm_func_name)
    builder = PyCallWrapper(
        self, wrapper_module, wrapper_callee, fndesc, env, call_helper=call_helper, release_gil=release_gil
    )
    builder.build()
    for fn in wrapper_module.functions:
        if not fn.is_declaration:
            for attribute in WRAPPER_ATTRIBUTES:
                fn.attributes.add(attribute)
    library.add_ir_module(wrapper_module)


_HOLDS_NO_MEMINFO: dict[tuple[Any, Any], bool] = {}


def _holds_no_meminfo(dmm: Any, ty: Any, builder: Any) -> bool:
    """Whether a value of numba type ``ty`` holds no NRT meminfo, in itself or in any member (once per type and
    data model manager: the walk of ``NRTContext.get_meminfos`` over the types only)."""
    key = (ty, dmm)
    free = _HOLDS_NO_MEMINFO.get(key)
    if free is None:
        model = dmm[ty]
        members = model.traverse(builder)
        free = not model.has_nrt_meminfo() and all(_holds_no_meminfo(dmm, t, builder) for t, _ in members)
        _HOLDS_NO_MEMINFO[key] = free
    return free


def _get_meminfos(self: Any, builder: Any, ty: Any, val: Any) -> list[tuple[Any, Any]]:
    """``NRTContext.get_meminfos`` (numba 0.68.1: every ``(type, meminfo)`` inside ``val``, in the same order) without
    the walk into members that hold none. numba's walk emits an ``extractvalue`` for every member of every value
    it increfs or decrefs (a float in a tuple, an array's shape) and only then finds no meminfo in it: instructions
    without a use, that LLVM deletes, but that numba builds, prints and LLVM parses first."""
    dmm = self._context.data_model_manager
    if _holds_no_meminfo(dmm, ty, builder):
        return []
    datamodel = dmm[ty]
    meminfos = []
    if datamodel.has_nrt_meminfo():
        meminfos.append((ty, datamodel.get_nrt_meminfo(builder, val)))
    for mtyp, getter in datamodel.traverse(builder):
        if not _holds_no_meminfo(dmm, mtyp, builder):
            meminfos.extend(self.get_meminfos(builder, mtyp, getter(val)))
    return meminfos


def _block_uses(body: list[Any], varname: str, cache: Any) -> bool:
    """Whether ``_FixSSAVars`` finds ``varname`` among the variables a statement of ``body`` uses (the same lists
    from the same cache as its ``on_assign``/``on_other``)."""
    for stmt in body:
        if isinstance(stmt, numba_ir.Assign):
            rhs = stmt.value
            if isinstance(rhs, numba_ir.Inst):
                used = cache.get(rhs)
            elif isinstance(rhs, numba_ir.Var):
                used = (rhs,)
            else:
                continue
        else:
            used = cache.get(stmt)
        for var in used:
            if var.name == varname:
                return True
    return False


def _block_assigns(body: list[Any], varname: str) -> bool:
    """Whether ``_FreshVarHandler`` renames an assignment of ``body`` (one to ``varname``)."""
    return any(isinstance(stmt, numba_ir.Assign) and stmt.target.name == varname for stmt in body)


def _run_block_rewrite(blocks: dict[int, Any], states: dict[str, Any], handler: Any) -> dict[int, Any]:
    """``ssa._run_block_rewrite`` that copies a block the handler would leave as it is without calling the handler
    on each of its statements: SSA reconstruction rewrites the whole function once per variable assigned more than
    once, first the assignments to it (``_FreshVarHandler``) and then its uses (``_FixSSAVars``), and most blocks
    hold neither. Other handlers, and blocks with an assignment or a use, go through numba's version."""
    kind = type(handler)
    if kind is ssa._FixSSAVars:
        cache = handler._cache_list_vars

        def untouched(body: list[Any]) -> bool:
            return not _block_uses(body, states["varname"], cache)
    elif kind is ssa._FreshVarHandler:

        def untouched(body: list[Any]) -> bool:
            return not _block_assigns(body, states["varname"])
    else:
        return _numba_run_block_rewrite(blocks, states, handler)  # type: ignore[no-any-return]
    newblocks = {}
    for label, blk in blocks.items():
        if untouched(blk.body):
            states["label"] = label
            states["block"] = blk
            newblk = numba_ir.Block(scope=blk.scope, loc=blk.loc)
            newblk.body = list(blk.body)
            newblocks[label] = newblk
        else:
            newblocks.update(_numba_run_block_rewrite({label: blk}, states, handler))
    return newblocks


#: Depth of ``transforms.with_lifting`` calls and object-mode compilations in progress: inside one,
#: ``PostProcessor.run`` computes every analysis at once as numba does (``_postproc_run``; with-lifting reads the
#: lifetimes after changing blocks, object mode's lowering reads the blocks' entry variables).
_EAGER_LIFETIMES = [0]


def _compile_core(self: Any) -> Any:
    """``CompilerBase._compile_core``, counted in ``_EAGER_LIFETIMES`` when it may compile in object mode."""
    flags = self.state.flags
    eager = bool(flags.force_pyobject or flags.enable_pyobject)
    _EAGER_LIFETIMES[0] += eager
    try:
        return _numba_compile_core(self)
    finally:
        _EAGER_LIFETIMES[0] -= eager


def _with_lifting(*args: Any, **kwargs: Any) -> Any:
    """``transforms.with_lifting`` with ``PostProcessor.run`` computing its analyses at once, as numba's does."""
    _EAGER_LIFETIMES[0] += 1
    try:
        return _numba_with_lifting(*args, **kwargs)
    finally:
        _EAGER_LIFETIMES[0] -= 1


def _uses_literal_unroll(func_ir: Any) -> bool:
    """Whether the IR loads ``numba.literal_unroll`` (its unroller reads the variable lifetimes of an earlier
    ``PostProcessor.run``)."""
    for block in func_ir.blocks.values():
        for stmt in block.body:
            if type(stmt) is numba_ir.Assign:
                value = stmt.value
                kind = type(value)
                if (kind is numba_ir.Global or kind is numba_ir.FreeVar) and value.value is numba.literal_unroll:
                    return True
    return False


def _postproc_run(self: Any, emit_dels: bool = False, extend_lifetimes: bool = False) -> None:
    """``PostProcessor.run`` without the analyses nobody reads. numba's version canonicalizes the CFG and then
    computes, at once, the use-def maps, liveness and dead-variable maps of the whole function (for the variable
    lifetimes) and every block's entry variables (for generators and object mode only); the nopython pipeline runs it
    9 times per function, 6 of them without emitting ``del`` statements, and reads the lifetimes only to emit
    them (in the same call). Here the lifetimes are numba's lazy ``VariableLifetime`` (computed when read, from
    the blocks of this call: the ``del`` statements are the same), and the entry variables are not computed.
    Generators, functions using ``literal_unroll``, with-lifting and object mode (they read these analyses later)
    go through numba's version."""
    func_ir = self.func_ir
    if func_ir.is_generator or _EAGER_LIFETIMES[0] or _uses_literal_unroll(func_ir):
        _numba_postproc_run(self, emit_dels=emit_dels, extend_lifetimes=extend_lifetimes)
        return
    func_ir.blocks = transforms.canonicalize_cfg(func_ir.blocks)
    func_ir.variable_lifetime = postproc.VariableLifetime(func_ir.blocks)
    func_ir.generator_info = None
    if emit_dels:
        self._insert_var_dels(extend_lifetimes=extend_lifetimes)


_numba_postproc_run = postproc.PostProcessor.run
_numba_with_lifting = transforms.with_lifting
_numba_compile_core = compiler.CompilerBase._compile_core
_numba_run_block_rewrite = ssa._run_block_rewrite
_array_operator_generic = npydecl.NumpyRulesArrayOperator.generic
#: numba's own versions of the replaced functions (the tests compare against them).
NUMBA_ORIGINALS: dict[str, Any] = {
    "values": targetconfig.TargetConfig.values,
    "hash": targetconfig.TargetConfig.__hash__,
    "eq": targetconfig.TargetConfig.__eq__,
    "rec_list_vars": numba_ir.Inst._rec_list_vars,
    "stmt_list_vars": numba_ir.Stmt.list_vars,
    "expr_list_vars": numba_ir.Expr.list_vars,
    "get_call_type": numba_functions.BaseFunction.get_call_type,
    "create_cpython_wrapper": cpu.CPUContext.create_cpython_wrapper,
    "get_meminfos": nrt_context.NRTContext.get_meminfos,
    "run_block_rewrite": ssa._run_block_rewrite,
    "postproc_run": postproc.PostProcessor.run,
    "with_lifting": transforms.with_lifting,
    "compile_core": compiler.CompilerBase._compile_core,
}
#: Whether the replacements are installed (only on the numba version they were copied from).
COMPILER_SHORTCUTS = numba.__version__ == "0.68.1"
if COMPILER_SHORTCUTS:  # the replaced functions are copies of this version's
    npydecl.NumpyRulesArrayOperator.generic = _scalar_operator_generic
    targetconfig.TargetConfig.values = _config_values
    targetconfig.TargetConfig.__hash__ = _config_hash
    targetconfig.TargetConfig.__eq__ = _config_eq
    numba_ir.Inst._rec_list_vars = _rec_list_vars
    numba_ir.Stmt.list_vars = _stmt_list_vars
    numba_ir.Expr.list_vars = _expr_list_vars
    numba_functions.BaseFunction.get_call_type = _get_call_type
    nrt_context.NRTContext.get_meminfos = _get_meminfos
    ssa._run_block_rewrite = _run_block_rewrite
    postproc.PostProcessor.run = _postproc_run
    transforms.with_lifting = _with_lifting
    compiler.CompilerBase._compile_core = _compile_core
#: Whether kernels' CPython wrappers are compiled without LLVM optimization (``_create_cpython_wrapper``; only on
#: the numba version it was copied from).
WRAPPERS_UNOPTIMIZED = COMPILER_SHORTCUTS
if WRAPPERS_UNOPTIMIZED:
    cpu.CPUContext.create_cpython_wrapper = _create_cpython_wrapper


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

#: Chunks per thread of ``run_chunked`` (work per option varies; smaller chunks balance the threads).
CHUNKS_PER_THREAD = 4
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, threads, pool)


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """This process's pool of ``threads`` threads (a forked child makes its own: threads do not survive a fork)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] != threads:
        _pool = (os.getpid(), threads, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="quant"))
    return _pool[2]


def _threads() -> int:
    """``NUMBA_NUM_THREADS``, or fewer if ``numba.set_num_threads`` lowered it in this thread (read only once
    numba's threading layer is up: starting it here would start OpenMP threads, and a forked child of a
    process running them aborts)."""
    threads = int(numba.config.NUMBA_NUM_THREADS)
    if getattr(numba_parallel, "_is_initialized", False):
        threads = min(threads, int(numba.get_num_threads()))
    return threads


def run_chunked(kernel: Callable[..., None], n: int, *args: Any) -> None:
    """``kernel(*args, start, stop)`` over chunks of ``range(n)`` on ``_threads()`` threads.

    For a ``nogil`` kernel whose iterations are independent (each writes its own outputs): the same
    arithmetic as a ``prange`` loop, but numba compiles the loop body and its call tree once, not twice.
    """
    threads = max(_threads(), 1)
    chunks = min(n, threads * CHUNKS_PER_THREAD)
    if threads == 1 or chunks <= 1:
        kernel(*args, 0, n)
        return
    bounds = [n * c // chunks for c in range(chunks + 1)]
    pool = _thread_pool(threads)
    for done in [pool.submit(kernel, *args, a, b) for a, b in pairwise(bounds)]:
        done.result()


@intrinsic
def fused_multiply_add(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``a * b + c`` of three float64s rounded once (IEEE 754 ``fusedMultiplyAdd``), in compiled code: LLVM's
    ``llvm.fma.f64``, the FMA instruction where the CPU has one, else libm's correctly rounded ``fma`` (the same
    bits either way). For sums that must repeat a BLAS kernel's FMA chain bit for bit (``fastmath`` off, numba never
    contracts ``a * b + c`` by itself)."""
    if not all(x == types.float64 for x in (a, b, c)):
        return None
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        d = llvm_ir.DoubleType()
        fn = cgutils.get_or_insert_function(builder.module, llvm_ir.FunctionType(d, [d, d, d]), "llvm.fma.f64")
        return builder.call(fn, args)

    return sig, codegen
