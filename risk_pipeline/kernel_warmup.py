"""Cold numba compilation of the price history's kernels in separate processes, beside the run's first steps.

A first run (empty numba cache) compiles the kernels ``atm_vol_history`` uses on first call, inside that step:
about 11 s of CPU on this 2-core machine, most of it numba's own passes in Python, which hold the GIL, so a
thread would not overlap them with the run's other Python. ``HistoryKernelWarmup.start`` instead starts
``python -m risk_pipeline.kernel_warmup GROUP`` for each of the two ``GROUPS`` (one process without a group on
a single core), which calls those kernels on a few made-up quotes (``compile_history_kernels``: the same
argument types as the pipeline's calls) and so writes their machine code to the on-disk cache
(``quant._numba``: every kernel is ``cache=True``); ``wait`` blocks until they have ended, so the step then
loads the cached code instead of compiling it a second time. ``risk-pipeline`` starts them with the
``price_history_job`` run (``cli._run_job``), any other launch when the run's resources are set up
(``MarketDataResource``); they run while the steps before ``atm_vol_history`` do.

``risk-pipeline demo`` also starts ``python -m risk_pipeline.kernel_warmup end-of-day`` at its start
(``END_OF_DAY_WARMUP``): one process that compiles the end of day's other kernels (``END_OF_DAY_SIGNATURES``: the
Heston and scenario-engine kernels, for the argument types the demo gives them) beside the demo's setup and
history run, and that the demo waits for before launching the end of day. That process runs at the lowest CPU
priority (``END_OF_DAY_NICENESS``): nothing of the history needs it, so it takes the cores the history leaves idle
(a single-threaded step, the gaps between the kernels of ``atm_vol_history``) instead of a share of the cores the
history's steps and its own warm-up processes, on the history's critical path, would use.

Each process ends with ``os._exit`` once its kernels are compiled (``end_process``): the interpreter's teardown,
about 0.8 CPU s of freeing the compiler's objects, would come before the exit that ``wait`` waits for. The
history's groups run with the cyclic garbage collector off between compilations too (about 25 MB more memory,
0.2-0.35 CPU s less).

Nothing changes numerically: the step runs the machine code numba compiled for the same function and argument
types, loaded from the cache as in every warm run. Nothing is started when every kernel is already on disk;
if a process fails, the step compiles what is missing itself, as before.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np


def history_kernels() -> list[Any]:
    """The numba dispatchers the price history's steps call (``compile_history_kernels`` compiles each)."""
    from risk_pipeline.quant import american, american_alo, bsm, implied_vol

    return [
        bsm._greeks_kernel,
        bsm._price_kernel,
        american_alo.boundary_kernel,
        american_alo.premium_kernel,
        american_alo.deterministic_kernel,
        american.american_bs2002_prices,
        implied_vol._norm_kernel,
        implied_vol._european_kernel,
        implied_vol._vega_kernel,
    ]


#: ``compile_history_kernels``'s groups: kernels of each group are compiled by one process, the groups in parallel
#: (no kernel or inner helper is compiled by both).
GROUPS = ("exact American prices", "implied vols")


def _quotes() -> tuple[np.ndarray, ...]:
    """Spot, strike, time, vol, rate, dividend yield and call flag of a few made-up options: calls without
    dividends (early exercise never optimal), zero volatility and ordinary ones."""
    strike = np.array([80.0, 90.0, 95.0, 100.0, 105.0, 110.0, 120.0, 100.0, 100.0, 100.0])
    n = strike.size
    t = np.array([0.02, 0.05, 0.08, 0.1, 0.1, 0.15, 0.25, 0.1, 0.1, 0.1])
    vol = np.array([0.3, 0.25, 0.22, 0.2, 0.2, 0.21, 0.24, 0.0, 0.2, 2.5])
    div = np.array([0.02, 0.0, 0.01, 0.02, 0.0, 0.02, 0.03, 0.02, 0.0, 0.02])
    call = np.array([True, False, True, False, True, False, True, False, True, False])
    return np.full(n, 100.0), strike, t, vol, np.full(n, 0.04), div, call


def compile_history_kernels(group: int | None = None) -> None:
    """Call every kernel of ``history_kernels`` with the argument types ``atm_vol_history`` gives them, or
    those of one of ``GROUPS``: 0, the synthetic source's exact American prices (``american_price``); 1, the
    implied vols' own kernels (the European inversion, BS2002 prices, the American search's vega), which
    ``american_quote_status`` and ``chain_implied_vols`` of American and European quotes then use with
    group 0's."""
    from risk_pipeline.quant import implied_vol
    from risk_pipeline.quant.american import american_price
    from risk_pipeline.quant.chain import chain_implied_vols
    from risk_pipeline.quant.implied_vol import american_quote_status

    spot, strike, t, vol, rate, div, call = _quotes()
    n = strike.size
    if group in (None, 0):
        american = american_price(spot, strike, t, vol, rate, div, call)
    if group == 1:
        price = american_price(spot, strike, t, vol, rate, div, call, method="bs2002")
        bid, ask = price * 0.99 - 0.01, price * 1.01 + 0.01
        chain_implied_vols(bid, ask, spot, strike, t, rate, div, call, np.zeros(n, dtype=bool))
        arrays = [np.array(v, dtype=float) for v in (price, spot, t, div, strike, vol)]
        implied_vol._vega_kernel(*arrays, 0, n)
    if group is None:
        bid, ask = american * 0.99 - 0.01, american * 1.01 + 0.01
        american_quote_status(bid, ask, spot, strike, t, rate, div, call)
        for is_american in (True, False):
            chain_implied_vols(bid, ask, spot, strike, t, rate, div, call, np.full(n, is_american))


def cached_on_disk(kernels: list[Any]) -> bool:
    """Every kernel has an index in numba's on-disk cache (compiled before for some argument types)."""
    try:
        return all(os.path.exists(k._cache._cache_file._index_path) for k in kernels)
    except AttributeError:
        return False


def warmup_commands() -> list[list[str]]:
    """One ``python -m risk_pipeline.kernel_warmup GROUP`` per group of ``GROUPS`` (one process for all of them
    on a single core)."""
    base = [sys.executable, "-m", "risk_pipeline.kernel_warmup"]
    if (os.cpu_count() or 1) < 2:
        return [base]
    return [[*base, str(group)] for group in range(len(GROUPS))]


def end_of_day_commands() -> list[list[str]]:
    """``python -m risk_pipeline.kernel_warmup end-of-day``: one process for ``END_OF_DAY_SIGNATURES``."""
    return [[sys.executable, "-m", "risk_pipeline.kernel_warmup", END_OF_DAY]]


def _reap(processes: list[subprocess.Popen[bytes]]) -> None:
    """Wait for ``processes`` (their exit status is kept for ``HistoryKernelWarmup.wait``)."""
    for process in processes:
        process.wait()


class HistoryKernelWarmup:
    """The processes of ``commands`` (``warmup_commands()`` by default) started at most once per process
    (``start``), unless every kernel of ``kernels()`` (``history_kernels`` by default) is on disk, and waited for
    (``wait``)."""

    def __init__(
        self, commands: Sequence[Sequence[str]] | None = None, kernels: Callable[[], list[Any]] | None = None
    ) -> None:
        self.commands = [list(c) for c in commands] if commands is not None else warmup_commands()
        self.kernels = kernels or history_kernels
        self._lock = threading.Lock()
        self._processes: list[tuple[subprocess.Popen[bytes], Any]] = []
        self._started = False

    def start(self, cached: bool | None = None) -> bool:
        """Start compiling the kernels in separate processes, unless this process started them before or every
        kernel of ``kernels()`` is on disk already (``cached``: that answer, found before); whether they were
        started."""
        with self._lock:
            if self._started:
                return False
            self._started = True
            switch = os.environ.get("RISK_PIPELINE_KERNEL_WARMUP", "1")
            if switch == "0" or os.environ.get("NUMBA_DISABLE_JIT") == "1":
                return False
            if switch == "history" and self.commands and self.commands[0][-1:] == [END_OF_DAY]:
                return False  # the history's warm-up only (``bench_compile.py --signatures``)
            if cached if cached is not None else cached_on_disk(self.kernels()):
                return False
            # the processes import this very package (not another install of it): its folder first on their path
            root = str(Path(__file__).resolve().parent.parent)
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
            env = {**os.environ, "PYTHONPATH": path}
            for command in self.commands:
                # stderr to a file, not a pipe: a process that writes much never blocks on a pipe nobody reads yet
                err = tempfile.TemporaryFile()
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
                )
                self._processes.append((process, err))
            # reaped as they end, so a run that fails before ``wait`` leaves no zombie behind
            threading.Thread(target=_reap, args=([p for p, _ in self._processes],), daemon=True).start()
            return True

    def wait(self) -> str:
        """Block until the processes ``start`` started have ended; what happened, once ("" if none was started
        or it was reported before)."""
        with self._lock:
            processes, self._processes = self._processes, []
            if not processes:
                return ""
            began = time.perf_counter()
            errors = []
            for process, err in processes:
                code = process.wait()
                err.seek(0)
                errors.append((code, err.read()))
                err.close()
            waited = f"waited {time.perf_counter() - began:.1f} s for them"
            failed = [(code, err) for code, err in errors if code != 0]
            if failed:
                code, err = failed[0]
                tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
                return f"kernel warm-up failed (exit {code}: {tail[0]}; {waited}): compiling here"
            return f"kernels compiled in {len(processes)} separate processes ({waited})"


#: The argument ``python -m risk_pipeline.kernel_warmup`` takes for ``compile_end_of_day_kernels``.
END_OF_DAY = "end-of-day"

#: The end of day's kernels that the history's warm-up does not compile (the exact American prices of the
#: source's quotes it does: group 0), each with the argument types of its first call in the demo
#: (``bench/bench_compile.py --demo --signatures FILE`` records them with this warm-up off, ``--warmup-list FILE``
#: prints this list): module, function and the types as an expression over ``numba.types`` (``A`` a C-contiguous
#: writable array: ``A(float64, 1)``). In the order the demo compiled them; compiled one after another by one
#: process (``compile_end_of_day_kernels``). A kernel whose arguments changed since is compiled for the listed
#: types to no use, and its step compiles it as before.
END_OF_DAY_SIGNATURES: tuple[tuple[str, str, str], ...] = (
    (
        "risk_pipeline.quant.svi",
        "_batched_inner_kernel",
        "A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 1), A(float64, 1), A(float64, 1), "
        "A(float64, 2, readonly=True), A(float64, 2, readonly=True), A(float64, 3), A(float64, 2)",
    ),
    (
        "risk_pipeline.quant.svi",
        "_svi_residual_kernel",
        "float64, float64, float64, float64, float64, A(float64, 1), A(float64, 1), A(float64, 1), "
        "float64, A(float64, 1), A(float64, 2), A(float64, 1)",
    ),
    (
        "risk_pipeline.quant.surfaces",
        "_svi_jacobians_kernel",
        "float64, float64, float64, float64, float64, A(float64, 1), A(float64, 1), A(float64, 1), "
        "A(float64, 1), A(float64, 1), A(float64, 2), A(float64, 2), A(float64, 1)",
    ),
    (
        "risk_pipeline.quant.heston",
        "_slice_setup",
        "A(float64, 1), A(float64, 2), float64, float64, A(float64, 1), A(float64, 1), A(int64, 1), int64, int64",
    ),
    (
        "risk_pipeline.quant.heston",
        "_payoff_kernel",
        "A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(boolean, 1), "
        "float64, float64, float64, float64, float64, A(float64, 2), A(float64, 2)",
    ),
    (
        "risk_pipeline.quant.heston",
        "_cf_jacobian_block",
        "float64, float64, float64, A(float64, 1), A(float64, 1), A(float64, 2), A(float64, 2)",
    ),
    (
        "risk_pipeline.quant.heston",
        "_cf_coefficients",
        "A(float64, 1), A(float64, 2), A(float64, 1), A(float64, 1), A(int64, 1), A(float64, 1), "
        "A(float64, 1), int64, int64",
    ),
    (
        "risk_pipeline.quant.heston",
        "_price_kernel",
        "A(float64, 2), A(float64, 2), A(int64, 1), A(float64, 1), A(float64, 1), A(int64, 1), A(float64, "
        "1), A(boolean, 1), boolean, A(float64, 1), int64, int64",
    ),
    (
        "risk_pipeline.quant.scenario_engine",
        "_bsm_kernel",
        "A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), "
        "A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1)",
    ),
    (
        "risk_pipeline.quant.scenario_engine",
        "_bsm_node_kernel",
        "A(float64, 3), A(float64, 3), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 2), "
        "A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 3)",
    ),
    (
        "risk_pipeline.quant.scenario_engine",
        "_european_kernel",
        "A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), int64, "
        "A(float64, 2), A(float64, 2), A(boolean, 1), boolean, int64, A(float64, 1, readonly=True), "
        "A(float64, 1), A(int64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), "
        "A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), "
        "A(float64, 1), A(float64, 2), int64, int64",
    ),
    (
        "risk_pipeline.quant.scenario_engine",
        "_american_grid_values",
        "A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), int64, "
        "A(float64, 2), A(float64, 2), boolean, boolean, int64, A(int64, 1), A(float64, 1), A(float64, 1), "
        "A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), "
        "A(float64, 1), A(int8, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, "
        "5), A(float64, 3), A(float64, 2), A(float64, 6), A(float64, 4), A(float64, 2), A(int64, 1), "
        "int64, int64",
    ),
    (
        "risk_pipeline.quant.scenario_engine",
        "_spline_kernel",
        "A(float64, 3), A(float64, 3, readonly=True), A(float64, 3, readonly=True), A(float64, 6), int64, int64, int64",
    ),
    (
        "risk_pipeline.quant.scenario_engine",
        "_american_grid_sum",
        "A(float64, 2), boolean, int64, A(int64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 2)",
    ),
    (
        "risk_pipeline.quant.scenario_engine",
        "_vol_range",
        "A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), int64, A(int64, 1), "
        "A(float64, 1), A(float64, 1), int64, A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), "
        "int64, int64",
    ),
    (
        "risk_pipeline.quant.scenario_engine",
        "_alo_plan",
        "A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), A(float64, 2), int64, "
        "A(float64, 2), A(float64, 2), int64, A(int64, 1), A(float64, 1), A(float64, 1), A(float64, 1), "
        "A(float64, 1), A(float64, 1), A(boolean, 1), A(float64, 3), A(int8, 2), A(int64, 2), A(float64, "
        "3), A(int64, 1), int64, int64",
    ),
    (
        "risk_pipeline.quant.var",
        "_fhs_paths_kernel",
        "A(float64, 2), A(int64, 2), int64, boolean, A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), "
        "A(float64, 1), boolean, A(float64, 2), boolean, A(float64, 2), A(float64, 2), A(float64, 2), "
        "A(float64, 2), int64, int64",
    ),
    (
        "risk_pipeline.quant.sabr",
        "_calibrate_kernel",
        "A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), A(float64, 1), "
        "A(float64, 1), float64, float64, float64, A(float64, 1), A(float64, 1), A(float64, 1), float64, float64, "
        "float64, float64, float64",
    ),
    (
        "risk_pipeline.quant.sizing",
        "_bootstrap_path_outcomes",
        "A(float64, 1), A(uint64, 1), float64, int64, A(float64, 1), A(float64, 1)",
    ),
)


def _types_namespace() -> dict[str, Any]:
    """Names for ``END_OF_DAY_SIGNATURES``'s expressions: ``numba.types`` and ``A`` (an array type)."""
    from numba.core import types

    def array(dtype: Any, ndim: int, layout: str = "C", readonly: bool = False) -> Any:
        return types.Array(dtype, ndim, layout, readonly=readonly)

    return {**vars(types), "A": array}


def _dispatcher(module: str, name: str) -> Any:
    """The object ``name`` (dotted within ``module``) of the module ``module``, imported."""
    import importlib

    func: Any = importlib.import_module(module)
    for part in name.split("."):
        func = getattr(func, part)
    return func


def end_of_day_kernels() -> list[Any]:
    """The numba dispatchers of ``END_OF_DAY_SIGNATURES`` (those that still exist)."""
    found = []
    for module, name, _ in END_OF_DAY_SIGNATURES:
        try:
            func = _dispatcher(module, name)
        except (ImportError, AttributeError):
            continue
        if func not in found:
            found.append(func)
    return found


def compile_end_of_day_kernels() -> list[str]:
    """Compile every kernel of ``END_OF_DAY_SIGNATURES`` for its listed argument types (into the on-disk cache);
    the ones that could not be compiled (a renamed kernel, changed types), each with its error."""
    namespace = _types_namespace()
    failed = []
    for module, name, args in END_OF_DAY_SIGNATURES:
        try:
            func = _dispatcher(module, name)
            signature = eval(f"({args},)", {"__builtins__": {}}, namespace) if args else ()
            func.compile(tuple(signature))
        except Exception as exc:  # the step compiles it as before
            failed.append(f"{module}.{name}({args}): {type(exc).__name__}: {exc}")
    return failed


#: One warm-up per process: the steps of a run share it.
HISTORY_WARMUP = HistoryKernelWarmup()
#: The end of day's kernels (``END_OF_DAY_SIGNATURES``), compiled in one process that ``risk-pipeline demo``
#: starts at its start, when the history's kernels are not on disk either (a clean state, or a new version of
#: ``risk_pipeline/quant``: a cache directory of its own), so that the end of day loads them from the cache
#: (the demo waits for it before launching the end of day). The history's kernels stand for the end of day's:
#: checking these would import every module that has one (``vol_forecast`` imports ``arch`` and XGBoost) first.
END_OF_DAY_WARMUP = HistoryKernelWarmup(end_of_day_commands(), history_kernels)


#: How much ``python -m risk_pipeline.kernel_warmup end-of-day`` lowers its own CPU priority (``os.nice``): to
#: the least, so the history run and its warm-up processes, which start at about the same time, get the cores first.
END_OF_DAY_NICENESS = 19


def lower_priority(increment: int = END_OF_DAY_NICENESS) -> int:
    """Lower this process's CPU priority by ``increment`` (capped at the least priority); the new niceness (the
    old one if not permitted: then it compiles at the caller's priority, as before)."""
    try:
        return os.nice(increment)
    except OSError:
        return os.nice(0)


def end_process(code: int) -> NoReturn:
    """End this warm-up process with exit status ``code`` at once, without the interpreter's teardown (freeing the
    compiler's objects: about 0.8 CPU s a process, which ``HistoryKernelWarmup.wait`` would wait for). Numba has
    written and closed each kernel's cache files when its compilation returned; the output streams are flushed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:] == [END_OF_DAY]:
        lower_priority()
        errors = compile_end_of_day_kernels()
        for error in errors:
            print(error, file=sys.stderr)
        end_process(1 if errors else 0)
    # a history group's process lives about 4 s and ends with os._exit: the cyclic collector's passes outside the
    # compilations (``_numba`` turns it off within each) take 0.2-0.35 CPU s to free about 25 MB the exit frees
    gc.disable()
    compile_history_kernels(int(sys.argv[1]) if len(sys.argv) > 1 else None)
    end_process(0)
