"""Runs the CLI executes (the demo's history and end-of-day runs) belong to code location risk_pipeline, so the
UI lists them under the job and its repository, and can re-execute them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import RunsFilter

from risk_pipeline_tests.folder_fixture import write_good_folder

ROOT = Path(__file__).resolve().parents[1]


def test_cli_runs_carry_the_code_location_the_ui_filters_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RISK_PIPELINE_SOURCE": "folder",
        "RISK_PIPELINE_FOLDER": str(write_good_folder(tmp_path / "folder")),
        "RISK_PIPELINE_WAREHOUSE_URL": str(tmp_path / "wh" / "risk_warehouse.duckdb"),
        "RISK_PIPELINE_EXPORTS": str(tmp_path / "exports"),
    }
    code = (
        "from risk_pipeline import cli; cli._prepare_dagster_home(); "
        "ok, checks, _ = cli._run_job('market_data_job', '2026-11-20'); assert ok and checks, checks"
    )
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=600)
    location = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["dg"]["project"]["code_location_name"]
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the instance's storage is found through DAGSTER_HOME
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.remote_job_origin is not None and run.remote_job_origin.location_name == location
        assert run.tags["dagster/partition"] == "2026-11-20"
        # the filter of the job's Runs tab in the UI: job name and repository@location
        repository = {".dagster/repository": f"__repository__@{location}"}
        assert instance.get_runs(filters=RunsFilter(job_name="market_data_job", tags=repository)) == [run]
        # re-execution reconstructs the job from the stored code origin
        assert run.job_code_origin is not None
        assert run.job_code_origin.repository_origin.code_pointer.module == "risk_pipeline.definitions"
    finally:
        instance.dispose()
