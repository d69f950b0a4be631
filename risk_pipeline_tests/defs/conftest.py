"""A synthetic end-of-day run shared by the layer tests: built once per test session, also under pytest-xdist.

The first process that needs the run builds it under a file lock in a directory every xdist worker of the session
shares, and stores its result (the events, the Dagster run, the reads the recording warehouse saw); every process
then copies the warehouse and the exports into its own temporary directory, so a test that writes to them changes
only its own process's copies, as when each worker built its own run.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from risk_pipeline.calendar import sessions
from risk_pipeline.definitions import build_definitions
from risk_pipeline.resources import ExportsResource, MarketDataResource
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.recording import RecordingWarehouse, RecordingWarehouseResource

SESSION = dt.date(2026, 11, 20)
HISTORY = 300
#: the stored result; written last, so its presence means the run was built
RESULT_FILE = "result.json"

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


def _definitions(warehouse: str, exports: str) -> dg.Definitions:
    """The definitions of the shared run on the warehouse file ``warehouse`` and the exports folder ``exports``."""
    return build_definitions(
        {
            "warehouse": RecordingWarehouseResource(url=warehouse),
            "market_data": MarketDataResource(kind="synthetic", n_underlyings=4),
            "exports": ExportsResource(root=exports),
        },
        executor=dg.in_process_executor,
    )


def _build(root: Path) -> None:
    """Run the ``HISTORY``-session price history and the end of day of ``SESSION`` into ``root`` (``vol/``,
    ``exports/``), then write the result's events, Dagster run and recorded reads to ``root / RESULT_FILE``."""
    for folder in ("vol", "exports"):  # a build stopped halfway leaves its files: start from empty folders
        shutil.rmtree(root / folder, ignore_errors=True)
        (root / folder).mkdir(parents=True)
    defs = _definitions(str(root / "vol" / "risk_warehouse.duckdb"), str(root / "exports"))
    instance = dg.DagsterInstance.ephemeral()
    history = [d for d in sessions(SESSION - dt.timedelta(days=600), SESSION) if d < SESSION][-HISTORY:]
    tags = {
        "dagster/asset_partition_range_start": history[0].isoformat(),
        "dagster/asset_partition_range_end": history[-1].isoformat(),
    }
    assert defs.resolve_job_def("price_history_job").execute_in_process(instance=instance, tags=tags).success
    config = {"ops": {"vol_forecasts": {"config": {"workers": 1}}, "vol_surfaces": {"config": {"workers": 1}}}}
    result = defs.resolve_job_def("end_of_day_job").execute_in_process(
        instance=instance, partition_key=SESSION.isoformat(), run_config=config, raise_on_error=False
    )
    stored = {
        "events": dg.serialize_value(list(result.all_events)),
        "dagster_run": dg.serialize_value(result.dagster_run),
        "reads": [[sorted(keys), sorted(tables)] for keys, tables in RecordingWarehouse.reads.items()],
    }
    partial = root / (RESULT_FILE + ".partial")
    partial.write_text(json.dumps(stored))
    partial.rename(root / RESULT_FILE)


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's directory of the shared run: in the folder of every xdist worker's base temporary folder."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared_end_of_day_run"


@pytest.fixture(scope="session")
def _shared_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, dg.ExecuteInProcessResult, str]:
    """The shared run's warehouse and exports folder (this process's copies) and its result (the events and Dagster
    run as stored, the job definition rebuilt); the reads it recorded added to ``RecordingWarehouse.reads``."""
    root = _shared_root(tmp_path_factory)
    root.mkdir(exist_ok=True)
    with open(root.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / RESULT_FILE).exists():
            _build(root)
    stored = json.loads((root / RESULT_FILE).read_text())
    for keys, tables in stored["reads"]:
        RecordingWarehouse.reads[frozenset(keys)].update(tables)
    vol, exports = tmp_path_factory.mktemp("vol"), tmp_path_factory.mktemp("exports")
    shutil.copytree(root / "vol", vol, dirs_exist_ok=True)
    shutil.copytree(root / "exports", exports, dirs_exist_ok=True)
    url = str(vol / "risk_warehouse.duckdb")
    result = dg.ExecuteInProcessResult(
        dg.deserialize_value(stored["events"], list),
        dg.deserialize_value(stored["dagster_run"], dg.DagsterRun),
        None,
        _definitions(url, str(exports)).resolve_job_def("end_of_day_job"),
    )
    return Warehouse(url), result, str(exports)


@pytest.fixture(scope="session")
def run(_shared_run: tuple[Warehouse, dg.ExecuteInProcessResult, str]) -> Run:
    return _shared_run[0], _shared_run[1]


@pytest.fixture(scope="session")
def exports_root(_shared_run: tuple[Warehouse, dg.ExecuteInProcessResult, str]) -> str:
    return _shared_run[2]
