"""A synthetic end-of-day run shared by the layer tests (one run per test session)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from risk_pipeline.calendar import sessions
from risk_pipeline.definitions import build_definitions
from risk_pipeline.resources import ExportsResource, MarketDataResource
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.recording import RecordingWarehouseResource

SESSION = dt.date(2026, 11, 20)
HISTORY = 300


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, dg.ExecuteInProcessResult]:
    url = str(tmp_path_factory.mktemp("vol") / "risk_warehouse.duckdb")
    defs = build_definitions(
        {
            "warehouse": RecordingWarehouseResource(url=url),
            "market_data": MarketDataResource(kind="synthetic", n_underlyings=4),
            "exports": ExportsResource(root=str(tmp_path_factory.mktemp("exports"))),
        },
        executor=dg.in_process_executor,
    )
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
    return Warehouse(url), result


@pytest.fixture(scope="session")
def exports_root(run: tuple[Warehouse, dg.ExecuteInProcessResult], tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.getbasetemp() / "exports0")
