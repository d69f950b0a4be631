"""The embedded instance queues runs one at a time and monitors them (the DuckDB warehouse takes one writer)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from risk_pipeline import cli


def test_init_home_writes_a_queued_monitored_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert cli.main(["init-home"]) == 0
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 1
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 7200
    finally:
        instance.dispose()


def test_init_home_keeps_a_users_own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert cli.main(["init-home"]) == 0
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"
