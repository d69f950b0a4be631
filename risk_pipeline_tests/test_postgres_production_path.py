"""Production path: Dagster instance storage on PostgreSQL (the project's dagster.yaml) and the
warehouse on PostgreSQL schema risk, in one real run."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from risk_pipeline.definitions import build_definitions
from risk_pipeline.resources import PROJECT_ROOT, ExportsResource, MarketDataResource, WarehouseResource
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.conftest import PG_ADMIN_URL
from risk_pipeline_tests.folder_fixture import write_good_folder

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_instance(
    pg_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dg.DagsterInstance, str]]:
    """A DagsterInstance loaded from the shipped dagster.yaml, on a fresh database."""
    db = f"dagster_instance_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{db}"')
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_URL)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", str(info.get("user", "postgres")))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", str(info.get("password", "")))
    monkeypatch.setenv("DAGSTER_PG_HOST", str(info.get("host", "127.0.0.1")))
    monkeypatch.setenv("DAGSTER_PG_PORT", str(info.get("port", "5432")))
    monkeypatch.setenv("DAGSTER_PG_DB", db)
    instance = dg.DagsterInstance.get()
    try:
        yield instance, db
    finally:
        instance.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_run_on_postgres_instance_and_postgres_warehouse(
    postgres_instance: tuple[dg.DagsterInstance, str], pg_server_url: str, tmp_path: Path
) -> None:
    instance, db = postgres_instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    Warehouse(pg_server_url).execute("DROP SCHEMA IF EXISTS risk CASCADE")
    defs = build_definitions(
        {
            "warehouse": WarehouseResource(url=pg_server_url),
            "market_data": MarketDataResource(kind="folder", folder=str(write_good_folder(tmp_path / "f"))),
            "exports": ExportsResource(root=str(tmp_path / "exports")),
        },
        executor=dg.in_process_executor,
    )
    result = defs.resolve_job_def("market_data_job").execute_in_process(instance=instance, partition_key="2026-11-20")
    assert result.success
    # the run and its check results are stored in PostgreSQL
    base = PG_ADMIN_URL.rpartition("/")[0]
    with psycopg.connect(f"{base}/{db}") as con:
        runs = con.execute("SELECT run_id, status FROM runs").fetchall()
        checks = con.execute(
            "SELECT COUNT(*) FROM asset_check_executions WHERE execution_status = 'SUCCEEDED'"
        ).fetchone()[0]
    assert (result.run_id, "SUCCESS") in runs
    assert checks >= 50
    wh = Warehouse(pg_server_url)
    assert wh.row_count("market_prices") == 2 and wh.row_count("option_quotes") == 12
    assert wh.query("SELECT COUNT(*) AS n FROM risk.latest_market_snapshot")["n"][0] == 2
