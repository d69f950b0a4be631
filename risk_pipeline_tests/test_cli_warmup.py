"""``risk-pipeline demo``'s kernel warm-ups: from a clean state, the end of day's process starts before the history
run (the history's warm-up decided on the same look at the cache) and is waited for before the end of day starts;
with the kernels on disk neither is started."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from risk_pipeline import cli, kernel_warmup


class _Recorder:
    def __init__(self, name: str, log: list[tuple[str, Any]]) -> None:
        self.name, self.log = name, log

    def start(self, cached: bool | None = None) -> bool:
        self.log.append((f"{self.name}.start", cached))
        return not cached

    def wait(self) -> str:
        self.log.append((f"{self.name}.wait", None))
        return ""


@pytest.mark.parametrize("cached", [False, True])
def test_demo_starts_and_waits_for_the_warmups(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cached: bool) -> None:
    log: list[tuple[str, Any]] = []
    monkeypatch.setattr(kernel_warmup, "END_OF_DAY_WARMUP", _Recorder("end_of_day", log))
    monkeypatch.setattr(kernel_warmup, "HISTORY_WARMUP", _Recorder("history", log))
    monkeypatch.setattr(kernel_warmup, "cached_on_disk", lambda kernels: cached)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RISK_PIPELINE_WAREHOUSE_URL", str(tmp_path / "warehouse.duckdb"))

    def launch(instance: Any, job_name: str, tags: dict[str, str], run_config: dict[str, Any]) -> Any:
        log.append(("launch", job_name))
        raise _Stop

    class _Stop(Exception):
        pass

    def run_job(job_name: str, partition_key: str | None, **kwargs: Any) -> tuple[bool, dict, float]:
        try:
            real_run_job(job_name, partition_key, **kwargs)
        except _Stop:
            pass
        return True, {}, 0.0

    real_run_job = cli._run_job
    monkeypatch.setattr(cli, "launch_in_process", launch)
    monkeypatch.setattr(cli, "_run_job", run_job)
    monkeypatch.setattr(cli, "_print_summary", lambda *args: None)
    cli.demo(argparse.Namespace(date="2026-11-20", history_sessions=3))
    assert log == [
        ("end_of_day.start", cached),
        ("history.start", cached),
        ("launch", "price_history_job"),
        ("end_of_day.wait", None),
        ("launch", "end_of_day_job"),
    ]
