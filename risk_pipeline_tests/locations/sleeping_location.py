"""A code location whose one job writes its process id and then sleeps: a run worker to kill in tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg


@dg.op
def write_pid_and_sleep() -> None:
    Path(os.environ["RISK_PIPELINE_TEST_PID_FILE"]).write_text(str(os.getpid()))
    time.sleep(600)


@dg.job(executor_def=dg.in_process_executor)
def sleeping_job() -> None:
    write_pid_and_sleep()


defs = dg.Definitions(jobs=[sleeping_job])
