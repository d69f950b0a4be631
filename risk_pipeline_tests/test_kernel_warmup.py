"""The history's kernel warm-up: it compiles the argument types the history's steps use, its processes are
started once (for history runs only), waited for and a failure reported."""

from __future__ import annotations

import datetime as dt
import functools
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pandas as pd
import pytest

from risk_pipeline import kernel_warmup
from risk_pipeline.defs.volatility.atm_history import AtmVolSettings, history_implied_vols, sessions_bracketing_mask
from risk_pipeline.kernel_warmup import (
    END_OF_DAY_SIGNATURES,
    GROUPS,
    HistoryKernelWarmup,
    compile_history_kernels,
    history_kernels,
    warmup_commands,
)
from risk_pipeline.resources import MarketDataResource
from risk_pipeline.sources.synthetic import SyntheticSource


def test_groups_compile_every_history_kernel() -> None:
    """The groups the processes compile cover ``history_kernels``."""
    for group in range(len(GROUPS)):
        compile_history_kernels(group)
    assert all(k.signatures for k in history_kernels())
    commands = warmup_commands()
    assert len(commands) in (1, len(GROUPS))


def test_warmup_compiles_every_signature_of_the_history_path() -> None:
    """After ``compile_history_kernels``, building, pricing and inverting two sessions' quotes as
    ``atm_vol_history`` does compiles nothing new (each kernel already has the argument types it is given)."""
    compile_history_kernels()
    kernels = history_kernels()
    before = {k: set(k.signatures) for k in kernels}
    assert all(before.values())
    source = SyntheticSource(seed=11, n_underlyings=6)
    sessions = [dt.date(2024, 12, 23), dt.date(2024, 12, 24)]
    curve = dict(tuple(source.rates_curve(sessions[0], sessions[-1]).groupby("as_of_date")))
    dividends = dict(tuple(source.dividend_yields(sessions[0], sessions[-1]).groupby("as_of_date")))
    select = functools.partial(
        sessions_bracketing_mask, curve_by_day=curve, div_by_day=dividends, settings=AtmVolSettings()
    )
    quotes = source.option_quotes_where_many(sessions, select)
    assert (quotes["exercise_style"] == "american").any() and (quotes["exercise_style"] == "european").any()
    iv = history_implied_vols(quotes, curve, dividends, atm_only=True)
    assert iv["implied_vol"].notna().any()
    assert {k: set(k.signatures) for k in kernels} == before


def test_process_started_once_and_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_warmup, "cached_on_disk", lambda kernels: False)
    warmup = HistoryKernelWarmup([[sys.executable, "-c", "pass"], [sys.executable, "-c", "pass"]])
    assert warmup.start()
    assert not warmup.start()
    assert warmup.wait().startswith("kernels compiled in 2 separate processes")
    assert warmup.wait() == ""


def test_failed_process_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_warmup, "cached_on_disk", lambda kernels: False)
    fail = [sys.executable, "-c", "raise SystemExit('no compiler here')"]
    warmup = HistoryKernelWarmup([[sys.executable, "-c", "pass"], fail])
    assert warmup.start()
    message = warmup.wait()
    assert message.startswith("kernel warm-up failed (exit 1: no compiler here")
    assert message.endswith("compiling here")


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_warmup, "cached_on_disk", lambda kernels: False)
    monkeypatch.setenv("RISK_PIPELINE_KERNEL_WARMUP", "0")
    warmup = HistoryKernelWarmup([[sys.executable, "-c", "raise SystemExit(1)"]])
    assert not warmup.start()
    assert warmup.wait() == ""


def test_a_process_writing_much_to_stderr_ends_and_is_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stderr goes to a file (more than a pipe's 64 KiB does not block the process) and the ended processes are
    reaped before ``wait`` is called (no zombie when the run fails before ``atm_vol_history``)."""
    monkeypatch.setattr(kernel_warmup, "cached_on_disk", lambda kernels: False)
    noisy = [
        sys.executable,
        "-c",
        "import sys; sys.stderr.write('x' * 1_000_000 + '\\n'); raise SystemExit('last line')",
    ]
    warmup = HistoryKernelWarmup([noisy])
    assert warmup.start()
    ((process, _),) = warmup._processes
    deadline = time.monotonic() + 60
    while process.returncode is None and time.monotonic() < deadline:  # set by the reaping thread
        time.sleep(0.05)
    assert process.returncode == 1
    assert warmup.wait().startswith("kernel warm-up failed (exit 1: last line")


def test_nothing_started_when_the_kernels_are_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_warmup, "cached_on_disk", lambda kernels: True)
    warmup = HistoryKernelWarmup([[sys.executable, "-c", "raise SystemExit(1)"]])
    assert not warmup.start()
    assert warmup.wait() == ""


def test_cached_on_disk_reads_numba_index() -> None:
    compile_history_kernels()
    assert kernel_warmup.cached_on_disk(history_kernels())
    assert not kernel_warmup.cached_on_disk([pd.DataFrame])


class _Recorder:
    def __init__(self) -> None:
        self.started = 0

    def start(self) -> bool:
        self.started += 1
        return True


@pytest.mark.parametrize(
    ("job_name", "selection", "executor", "started"),
    [
        ("price_history_job", None, "in_process", 1),
        ("price_history_job", None, "multiprocess", 0),
        ("end_of_day_job", None, "in_process", 0),
        ("__ASSET_JOB", ["atm_vol_history", "rates_curve"], "in_process", 1),
        ("__ASSET_JOB", ["atm_vol_history", "implied_vols"], "in_process", 0),
        ("__ASSET_JOB", ["smile_history"], "in_process", 0),
    ],
)
def test_market_data_resource_starts_the_warmup_for_history_runs(
    monkeypatch: pytest.MonkeyPatch, job_name: str, selection: list[str] | None, executor: str, started: int
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(kernel_warmup, "HISTORY_WARMUP", recorder)
    monkeypatch.setenv("RISK_PIPELINE_EXECUTOR", executor)
    keys = frozenset(dg.AssetKey(k) for k in selection) if selection is not None else None
    context = SimpleNamespace(run=SimpleNamespace(job_name=job_name, asset_selection=keys))
    MarketDataResource().setup_for_execution(context)  # type: ignore[arg-type]
    assert recorder.started == started


def test_processes_import_this_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The processes are started with this package's folder first on their path, from any working folder."""
    monkeypatch.setattr(kernel_warmup, "cached_on_disk", lambda kernels: False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    expected = str(Path(kernel_warmup.__file__).resolve())
    check = (
        "import pathlib, sys; import risk_pipeline.kernel_warmup as k; "
        f"sys.exit(str(pathlib.Path(k.__file__).resolve()) != {expected!r})"
    )
    warmup = HistoryKernelWarmup([[sys.executable, "-c", check]])
    assert warmup.start()
    assert warmup.wait().startswith("kernels compiled in 1 separate processes")


def test_end_of_day_signatures_name_kernels_and_types() -> None:
    """Every entry of ``END_OF_DAY_SIGNATURES`` names a numba dispatcher of this package and argument types that
    evaluate to numba types (what ``compile_end_of_day_kernels`` compiles)."""
    from numba.core import types
    from numba.core.dispatcher import Dispatcher

    namespace = kernel_warmup._types_namespace()
    assert len(kernel_warmup.end_of_day_kernels()) == len({(m, n) for m, n, _ in END_OF_DAY_SIGNATURES})
    for module, name, args in END_OF_DAY_SIGNATURES:
        assert module.startswith("risk_pipeline.quant.")
        signature = eval(f"({args},)", {"__builtins__": {}}, namespace) if args else ()
        assert all(isinstance(t, types.Type) for t in signature), (module, name, args)
    assert all(isinstance(k, Dispatcher) for k in kernel_warmup.end_of_day_kernels())


def test_end_of_day_warmup_compiles_its_signatures_and_reports_what_it_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listed signature is compiled (the dispatcher then has it); a renamed kernel or arguments it cannot take
    are reported, not raised."""
    from risk_pipeline.quant import bsm

    signatures = (
        (
            "risk_pipeline.quant.bsm",
            "_price_kernel",
            "A(float64, 1), " * 6 + "A(boolean, 1), A(float64, 1), int64, int64",
        ),
        ("risk_pipeline.quant.bsm", "no_such_kernel", "float64"),
        ("risk_pipeline.quant.bsm", "_price_kernel", "float64"),
    )
    monkeypatch.setattr(kernel_warmup, "END_OF_DAY_SIGNATURES", signatures)
    failed = kernel_warmup.compile_end_of_day_kernels()
    assert len(failed) == 2
    assert failed[0].startswith("risk_pipeline.quant.bsm.no_such_kernel(float64): AttributeError")
    assert failed[1].startswith("risk_pipeline.quant.bsm._price_kernel(float64): ")
    assert kernel_warmup.end_of_day_kernels() == [bsm._price_kernel]


def test_end_of_day_warmup_runs_as_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel_warmup, "cached_on_disk", lambda kernels: False)
    warmup = HistoryKernelWarmup(kernel_warmup.end_of_day_commands(), kernel_warmup.history_kernels)
    assert warmup.start()
    assert warmup.wait().startswith("kernels compiled in 1 separate processes")


def test_history_only_switch_leaves_out_the_end_of_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """``RISK_PIPELINE_KERNEL_WARMUP=history`` (recording the end of day's signatures) starts the history's
    processes, not the end of day's."""
    monkeypatch.setattr(kernel_warmup, "cached_on_disk", lambda kernels: False)
    monkeypatch.setenv("RISK_PIPELINE_KERNEL_WARMUP", "history")
    end_of_day = [sys.executable, "-c", "pass", kernel_warmup.END_OF_DAY]
    assert not HistoryKernelWarmup([end_of_day]).start()
    history = HistoryKernelWarmup([[sys.executable, "-c", "pass"]])
    assert history.start()
    assert history.wait().startswith("kernels compiled in 1 separate processes")


def test_the_end_of_days_warmup_runs_at_the_least_cpu_priority() -> None:
    """``lower_priority`` (what ``python -m risk_pipeline.kernel_warmup end-of-day`` does first) leaves a process at
    the least priority, so the history's steps and warm-ups get the cores first; the history's groups do not call it."""
    import subprocess

    code = "from risk_pipeline import kernel_warmup as k; import os; print(os.nice(0), k.lower_priority())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[1]) == 19 and int(out[0]) <= 19
    source = Path(kernel_warmup.__file__).read_text()
    main = source[source.index('if __name__ == "__main__":') :]
    assert main.index("lower_priority()") < main.index("compile_end_of_day_kernels()")
    assert (
        main.index("lower_priority()")
        < main.index("end_process(1 if errors else 0)")
        < main.index("compile_history_kernels(")
    )


def test_end_process_flushes_and_exits_with_its_status() -> None:
    """``end_process`` ends the process at once with the given status, after what it wrote to stdout and stderr."""
    import subprocess

    code = (
        "import sys; from risk_pipeline import kernel_warmup as k; "
        "print('out'); print('err', file=sys.stderr); k.end_process(3); print('never')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


def test_a_group_process_leaves_its_kernels_loadable_from_the_cache(tmp_path: Path) -> None:
    """``python -m risk_pipeline.kernel_warmup 0`` (ended by ``end_process``, without the interpreter's teardown)
    exits with 0, and a new process with the same cache folder then loads every kernel of that group from it:
    numba records cache hits and no cache miss (no compilation) for each."""
    import ast
    import os
    import subprocess

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    root = str(Path(kernel_warmup.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    subprocess.run([sys.executable, "-m", "risk_pipeline.kernel_warmup", "0"], env=env, check=True)
    check = (
        "from risk_pipeline.quant import american_alo, bsm; from risk_pipeline import kernel_warmup as k; "
        "k.compile_history_kernels(0); "
        "kernels = [bsm._greeks_kernel, bsm._price_kernel, american_alo.boundary_kernel, "
        "american_alo.premium_kernel, american_alo.deterministic_kernel]; "
        "print([(sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())) for f in kernels])"
    )
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True).stdout
    stats = ast.literal_eval(out)
    assert len(stats) == 5 and all(hits >= 1 and misses == 0 for hits, misses in stats), stats
