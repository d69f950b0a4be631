"""Production path: Dagster instance storage on PostgreSQL (deploy/dagster.yaml) and the
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
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_URL)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", str(info.get("user", "postgres")))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", str(info.get("password", "")))
    monkeypatch.setenv("DAGSTER_PG_HOST", str(info.get("host", "127.0.0.1")))
    monkeypatch.setenv("DAGSTER_PG_PORT", str(info.get("port", "5432")))
    monkeypatch.setenv("DAGSTER_PG_DB", db)
    monkeypatch.setenv("RISK_PIPELINE_DAGSTER_STORAGE", str(tmp_path / "dagster_storage"))
    monkeypatch.setenv("RISK_PIPELINE_COMPUTE_LOGS", str(tmp_path / "compute_logs"))
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unit_command(unit: str, replacements: dict[str, str]) -> list[str]:
    """The ExecStart command line of a shipped systemd unit, with the install paths replaced."""
    import shlex

    text = (PROJECT_ROOT / "deploy" / "systemd" / f"risk-pipeline-{unit}.service").read_text()
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))[len("ExecStart=") :]
    for old, new in replacements.items():
        line = line.replace(old, new)
    return shlex.split(line)


def test_services_on_postgres_run_a_job_launched_through_graphql(
    postgres_instance: tuple[dg.DagsterInstance, str], pg_server_url: str, tmp_path: Path
) -> None:
    """The production deployment as shipped: deploy/dagster.yaml on PostgreSQL, the code server, daemon and
    webserver started with the command lines of deploy/systemd/*.service (paths and ports replaced) and
    deploy/workspace.yaml; a run launched through the webserver's GraphQL API is queued, launched by the
    daemon through the code server and succeeds, writing the PostgreSQL warehouse."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import requests
    from dagster_graphql import DagsterGraphQLClient

    instance, _ = postgres_instance
    grpc_port, web_port = _free_port(), _free_port()
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text((PROJECT_ROOT / "deploy" / "workspace.yaml").read_text().replace("4266", str(grpc_port)))
    Warehouse(pg_server_url).execute("DROP SCHEMA IF EXISTS risk CASCADE")
    env = {
        **os.environ,
        "RISK_PIPELINE_WAREHOUSE_URL": pg_server_url,
        "RISK_PIPELINE_SOURCE": "folder",
        "RISK_PIPELINE_FOLDER": str(write_good_folder(tmp_path / "folder")),
        "RISK_PIPELINE_EXPORTS": str(tmp_path / "exports"),
        "RISK_PIPELINE_EXECUTOR": "in_process",
    }
    bin_dir = str(Path(sys.executable).parent)
    paths = {"/opt/risk_pipeline/.venv/bin": bin_dir, "/opt/risk_pipeline/deploy/workspace.yaml": str(workspace)}
    paths["/opt/risk_pipeline"] = str(PROJECT_ROOT)
    subprocess.run([f"{bin_dir}/risk-pipeline", "init-warehouse"], env=env, check=True, capture_output=True)
    commands = {
        "code-server": _unit_command("code-server", {**paths, "4266": str(grpc_port)}),
        "daemon": _unit_command("daemon", paths),
        "webserver": _unit_command("webserver", {**paths, "3000": str(web_port)}),
    }
    services: list[subprocess.Popen[bytes]] = []
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in commands}
    try:
        for name, command in commands.items():
            services.append(
                subprocess.Popen(
                    command,
                    env=env,
                    cwd=PROJECT_ROOT,
                    stdout=logs[name],
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            if name == "code-server":  # the others connect to it
                time.sleep(2)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{web_port}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        client = DagsterGraphQLClient("127.0.0.1", port_number=web_port)
        deadline = time.monotonic() + 180
        while True:  # the webserver answers before the code server has loaded the definitions
            try:
                run_id = client.submit_job_execution(
                    "market_data_job",
                    repository_location_name="risk_pipeline",
                    tags={"dagster/partition": "2026-11-20"},
                )
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        status = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = client.get_run_status(run_id)
            if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                break
            time.sleep(2)
        assert status == dg.DagsterRunStatus.SUCCESS, (tmp_path / "daemon.log").read_text()[-3000:]
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.remote_job_origin is not None
        assert run.remote_job_origin.location_name == "risk_pipeline"
        wh = Warehouse(pg_server_url)
        assert wh.row_count("market_prices") == 2 and wh.row_count("option_quotes") == 12
    finally:
        for process in services:
            os.killpg(process.pid, signal.SIGTERM)
        for process in services:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for log in logs.values():
            log.close()
