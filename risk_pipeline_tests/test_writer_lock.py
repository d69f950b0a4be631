"""Runs that write one DuckDB warehouse never overlap: the writer lock, its holder in the message, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from risk_pipeline.definitions import build_definitions
from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource
from risk_pipeline.warehouse import Warehouse, WarehouseError, WriterLock
from risk_pipeline_tests.folder_fixture import write_good_folder

ROWS = pd.DataFrame([{"as_of_date": pd.Timestamp("2026-11-20").date(), "tenor_days": 30, "zero_rate": 0.04}])


def _curve(value: float) -> pd.DataFrame:
    return ROWS.assign(zero_rate=value, source="test")


def test_second_writer_waits_then_fails_naming_the_holder(tmp_path: Path) -> None:
    url = str(tmp_path / "risk_warehouse.duckdb")
    first, second = Warehouse(url), Warehouse(url)
    first.ensure_tables()
    first.writer_lock = WriterLock(url, "run-A", timeout_seconds=5)
    second.writer_lock = WriterLock(url, "run-B", timeout_seconds=0.5)
    first.write("rates_curve", _curve(0.04), run_id="run-A")
    with pytest.raises(WarehouseError, match="being written by run run-A"):
        second.write("rates_curve", _curve(0.05), run_id="run-B")
    assert Warehouse(url).read("rates_curve")["zero_rate"].tolist() == [0.04]  # B wrote nothing
    first.writer_lock.release()
    second.write("rates_curve", _curve(0.05), run_id="run-B")
    assert Warehouse(url).read("rates_curve")["zero_rate"].tolist() == [0.05]


def test_lock_of_a_killed_holder_is_released(tmp_path: Path) -> None:
    url = str(tmp_path / "risk_warehouse.duckdb")
    code = (
        "import time; from risk_pipeline.warehouse import WriterLock; "
        f"lock = WriterLock({url!r}, 'run-killed'); lock.acquire(); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(WarehouseError, match="run-killed"):
            WriterLock(url, "run-waiting", timeout_seconds=0.3).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        lock = WriterLock(url, "run-next", timeout_seconds=5)
        lock.acquire()  # the OS released the dead holder's lock
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_a_run_waits_for_the_warehouse_and_fails_closed_when_it_stays_busy(tmp_path: Path) -> None:
    folder = write_good_folder(tmp_path / "folder")
    url = str(tmp_path / "wh" / "risk_warehouse.duckdb")

    def defs(timeout: float) -> dg.Definitions:
        return build_definitions(
            {
                "warehouse": WarehouseResource(url=url, writer_lock_timeout_seconds=timeout),
                "market_data": MarketDataResource(kind="folder", folder=str(folder)),
                "exports": ExportsResource(root=str(tmp_path / "exports")),
            },
            executor=dg.in_process_executor,
        )

    Warehouse(url).ensure_tables()
    other_run = WriterLock(url, "other-run", timeout_seconds=1)
    other_run.acquire()
    with dg.instance_for_test() as instance:
        job = defs(0.5).resolve_job_def("market_data_job")
        blocked = job.execute_in_process(instance=instance, partition_key="2026-11-20", raise_on_error=False)
        assert not blocked.success
        failures = [e for e in blocked.all_events if e.event_type_value == "STEP_FAILURE"]
        assert failures and all("being written by run other-run" in str(e.event_specific_data.error) for e in failures)
        assert Warehouse(url).row_count("market_prices") == 0
        other_run.release()
        done = (
            defs(5).resolve_job_def("market_data_job").execute_in_process(instance=instance, partition_key="2026-11-20")
        )
        assert done.success and Warehouse(url).row_count("market_prices") > 0
    # the lock is released at the end of the run: another writer gets it at once
    after = WriterLock(url, "after", timeout_seconds=0.1)
    after.acquire()
    after.release()


def _other_process_reads(url: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from risk_pipeline.warehouse import Warehouse; "
        "print(Warehouse(sys.argv[1]).read('rates_curve')['zero_rate'].tolist())"
    )
    return subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, timeout=120)


def test_a_writer_holds_the_database_open_until_it_releases_the_writer_lock(tmp_path: Path) -> None:
    """The resource's warehouse keeps its DuckDB database open from the writer lock to ``release_writer`` (the
    end of the run): its connections reuse it, another process cannot open the file meanwhile, and after the
    release it reads everything written."""
    url = str(tmp_path / "risk_warehouse.duckdb")
    wh = Warehouse(url)
    wh.ensure_tables()
    wh.writer_lock = WriterLock(url, "run-A", timeout_seconds=5)
    wh.hold_open_while_writing = True
    assert _other_process_reads(url).returncode == 0  # nothing held before the first write
    wh.write("rates_curve", _curve(0.04), run_id="run-A")
    assert wh.read("rates_curve")["zero_rate"].tolist() == [0.04]
    held = _other_process_reads(url)
    assert held.returncode != 0 and "lock" in held.stderr.lower()
    wh.release_writer()
    after = _other_process_reads(url)
    assert after.returncode == 0 and after.stdout.strip() == "[0.04]", after.stderr
    assert not wh.writer_lock.held
