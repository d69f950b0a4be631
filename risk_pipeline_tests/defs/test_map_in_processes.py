"""The shared process-pool map of the volatility steps: results in job order, in or out of process."""

from __future__ import annotations

import os

from risk_pipeline.defs.common import map_in_processes


def _square_with_pid(chunk: list[int]) -> list[tuple[int, int]]:
    return [(x * x, os.getpid()) for x in chunk]


def test_results_come_back_in_job_order_from_worker_processes() -> None:
    jobs = list(range(7))
    out = map_in_processes(_square_with_pid, jobs, workers=2)
    assert [v for v, _ in out] == [x * x for x in jobs]
    # every chunk ran in a worker; the pool may hand both chunks to one worker that is up before the other
    assert os.getpid() not in {pid for _, pid in out} and 1 <= len({pid for _, pid in out}) <= 2
    spawned = map_in_processes(_square_with_pid, jobs, workers=2, start="spawn")
    assert [v for v, _ in spawned] == [x * x for x in jobs]


def test_one_worker_or_few_jobs_run_in_this_process() -> None:
    for workers, min_jobs in ((1, 2), (2, 8)):
        out = map_in_processes(_square_with_pid, [3, 4], workers=workers, min_jobs=min_jobs)
        assert out == [(9, os.getpid()), (16, os.getpid())]
