"""A run launcher whose run workers the run-monitoring daemon can probe: a run killed with kill -9 is failed.

Dagster's ``DefaultRunLauncher`` cannot say whether a run's process is still alive. A worker started by a
code server that stays up is reported by that server when it dies, but a run executed in the launching
process (``risk-pipeline demo``, ``dg launch``, any ``execute_in_process``) or a worker whose code server
died with it stays STARTED until ``max_runtime_seconds``. ``MonitoredRunLauncher`` launches exactly as the
default does and adds the health check: the worker's pid comes from the run's own event log (the engine
event "Started process for run (pid: N)" or "Executing steps in process (pid: N)"), and the worker is alive
while ``/proc/N`` exists, is not a zombie and started before that event (a recycled pid is a new process).
The check is made only where the worker runs on this host (no code server, or one on ``localhost``,
``127.0.0.1`` or a Unix socket: the embedded instance and a single-host deployment); otherwise it reports
RUNNING and ``max_runtime_seconds`` stays the backstop.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from dagster import DagsterEventType
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG

#: Engine-event messages that name the run worker's pid: launched by a code server, resumed, or executing in
#: its own process (in-process or multiprocess executor; step subprocesses are not run workers).
_WORKER_EVENTS = (
    "Started process for run",
    "Started process for resuming job",
    "Executing steps in process",
    "Executing steps using multiprocess executor: parent process",
)
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", socket.gethostname()}
#: Clock skew allowed between the event's timestamp and the process start time read from /proc.
_START_SLACK_SECONDS = 5.0


def process_start(pid: int) -> tuple[str, float] | None:
    """The state letter (``R``, ``S``, ``Z``...) and start time (Unix seconds) of a Linux process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, StopIteration):
        return None
    # fields[0] is field 3 (state); field 22 is the start time in clock ticks after boot
    return fields[0], int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


class MonitoredRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` plus a liveness probe of the run worker for the run-monitoring daemon."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def _worker_pid(self, run: DagsterRun) -> tuple[int, float] | None:
        """The run worker's pid and the time it reported it (the latest such engine event)."""
        records = self._instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ENGINE_EVENT).records
        for record in reversed(records):
            entry = record.event_log_entry
            event = entry.dagster_event
            message = (event.message if event is not None else None) or entry.user_message
            if event is None or not message.startswith(_WORKER_EVENTS):
                continue
            pid = event.engine_event_data.metadata.get("pid")
            if pid is not None:
                return int(str(pid.value)), entry.timestamp
        return None

    def _worker_is_local(self, run: DagsterRun) -> bool:
        info = run.tags.get(GRPC_INFO_TAG)
        if info is None:
            return True  # launched without a code server (run in this host's process tree)
        where = json.loads(info)
        return "socket" in where or where.get("host") in _LOCAL_HOSTS

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if not os.path.isdir("/proc") or not self._worker_is_local(run):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker not probed (no /proc or a remote host)")
        found = self._worker_pid(run)
        if found is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker has not reported its pid yet")
        pid, reported_at = found
        process = process_start(pid)
        if process is None or process[0] in ("Z", "X"):
            gone = "a zombie" if process is not None else "gone"
            return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is {gone} (killed or crashed)")
        if process[1] > reported_at + _START_SLACK_SECONDS:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"run worker process {pid} is gone (the pid now belongs to a newer process)"
            )
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid} is alive ({process[0]})")
