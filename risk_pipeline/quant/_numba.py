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
  linked into each caller. ``inner_njit`` compiles it to optimized LLVM IR only (the same module its callers
  linked before, so the same machine code in them), without the wrapper; calling it from Python raises
  ``TypeError`` (its ``.py_func`` runs the Python source);
* every function is ``nogil``: numba compiles a library function (``np.empty``, ``min``) once per set of its
  caller's flags, so kernels and helpers with different flags compiled some of them twice.

Importing this module also turns Python's garbage collector off for the length of every numba compilation
(``NO_COLLECTION_WHILE_COMPILING``): numba's compiler allocates enough objects to start many collections, some of
them full passes over the process's whole heap (9 % of the demo's compile CPU, measured side by side).
"""

from __future__ import annotations

import gc
import hashlib
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba.core import compiler, event, lowering, typed_passes
from numba.core.codegen import JITCodeLibrary
from numba.core.compiler_lock import require_global_compiler_lock
from numba.core.compiler_machinery import register_pass
from numba.core.registry import CPUDispatcher
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
    """The code of an inner helper: linked and optimized exactly as numba does (so every caller links the same
    module as before, and runs the same machine code), but never emitted as machine code of its own: only the
    copies linked into its callers run."""

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
