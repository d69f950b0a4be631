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


def test_a_run_killed_with_kill_9_is_marked_failed_by_run_monitoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded instance's own dagster.yaml (poll interval shortened) and a real dagster-daemon; a run
    executing in its launching process (as `risk-pipeline demo` and `dg launch` run) is killed with kill -9:
    run monitoring marks it FAILURE with the launcher's reason instead of leaving it STARTED."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert cli.main(["init-home"]) == 0
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert config["run_launcher"]["class"] == "MonitoredRunLauncher"
    config["run_monitoring"]["poll_interval_seconds"] = 1
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    root = Path(__file__).resolve().parents[1]
    location = "risk_pipeline_tests.locations.sleeping_location"
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump({"load_from": [{"python_module": {"module_name": location, "working_directory": str(root)}}]})
    )
    pid_file = tmp_path / "worker.pid"
    env = {**os.environ, "DAGSTER_HOME": str(home), "RISK_PIPELINE_TEST_PID_FILE": str(pid_file)}
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    code = f"import dagster as dg; from {location} import sleeping_job; "
    code += "sleeping_job.execute_in_process(instance=dg.DagsterInstance.get())"
    worker = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pid_file.exists(), "the run never started"
        assert int(pid_file.read_text() or 0) in (0, worker.pid)
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            (run,) = instance.get_runs()
            assert run.status == dg.DagsterRunStatus.STARTED
            worker.kill()  # SIGKILL
            worker.wait()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                run = instance.get_run_by_id(run.run_id)
                if run is not None and run.is_finished:
                    break
                time.sleep(0.5)
            assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
            messages = [e.message or "" for e in instance.all_logs(run.run_id)]
            reason = f"run worker process {worker.pid} is gone (killed or crashed)"
            assert any(reason in m and "Marking run" in m for m in messages), messages[-3:]
        finally:
            instance.dispose()
    finally:
        worker.kill()
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        log.close()


def test_the_project_dagster_yaml_is_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The top-level dagster.yaml (DAGSTER_HOME = the project folder, as make dev and make demo set it) has the
    settings init-home writes elsewhere, with every storage folder inside the git-ignored .dagster_home/."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    project = yaml.safe_load((root / "dagster.yaml").read_text())
    written = yaml.safe_load(cli.EMBEDDED_INSTANCE_YAML)
    storage_keys = {"storage", "local_artifact_storage", "compute_logs"}
    assert {k: v for k, v in project.items() if k not in storage_keys} == {
        k: v for k, v in written.items() if k not in storage_keys
    }
    assert project["storage"]["custom"]["class"] == written["storage"]["custom"]["class"] == "TunedSqliteStorage"
    assert project["storage"]["custom"]["config"]["base_dir"] == ".dagster_home"
    assert written["storage"]["custom"]["config"]["base_dir"] == {"env": "DAGSTER_HOME"}
    assert project["local_artifact_storage"]["config"]["base_dir"] == ".dagster_home"
    assert project["compute_logs"]["config"]["base_dir"].startswith(".dagster_home/")
    assert ".dagster_home/" in (root / ".gitignore").read_text().split()
    monkeypatch.chdir(root)
    instance = dg.DagsterInstance.from_config(str(root))
    try:
        assert type(instance.run_launcher).__name__ == "MonitoredRunLauncher"
        assert Path(instance.run_storage._conn_string.removeprefix("sqlite:///")).parent.parent == (  # type: ignore[attr-defined]
            root / ".dagster_home"
        )
    finally:
        instance.dispose()
