"""Dagster's stock SQLite storage against ``TunedSqliteStorage`` (risk_pipeline/dagster_storage.py).

Run ``python bench/bench_instance_storage.py [--sessions N]``. In one process, on two fresh instances in
temporary folders, it materializes a session-partitioned asset with five blocking checks over N sessions as
one run (the shape of the price-history load: one materialization event per session, one verdict per check
copied onto every session) and prints the wall time of each and their ratio. It also prints the cost of the
SQLite pattern underneath: open, insert, commit, close of a WAL database with ``synchronous=FULL`` (Dagster's
stock event log) against an insert and commit on a held connection with ``synchronous=NORMAL``.
"""

import argparse
import os
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from risk_pipeline.defs.common import PARTITIONS, check_events, session_check_spec

CHECKS = [f"rule_{i}" for i in range(5)]


@dg.asset(
    partitions_def=PARTITIONS, check_specs=[session_check_spec(c, asset="bench_prices", blocking=True) for c in CHECKS]
)
def bench_prices(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    yield dg.MaterializeResult(metadata={"sessions": len(context.partition_keys)})
    yield from check_events(context, [dg.AssetCheckResult(check_name=c, passed=True) for c in CHECKS])


def run_once(storage_yaml: str, sessions: list[str]) -> float:
    with tempfile.TemporaryDirectory() as home:
        os.environ["DAGSTER_HOME"] = home
        Path(home, "dagster.yaml").write_text(storage_yaml)
        instance = dg.DagsterInstance.from_config(home)
        tags = {"dagster/asset_partition_range_start": sessions[0], "dagster/asset_partition_range_end": sessions[-1]}
        start = time.perf_counter()
        result = dg.materialize([bench_prices], instance=instance, tags=tags)
        seconds = time.perf_counter() - start
        assert result.success
        instance.dispose()
        return seconds


def sqlite_pattern_ms(held: bool, n: int = 200) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "events.db")
        setup = sqlite3.connect(path)
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE events (body TEXT)")
        setup.commit()
        if not held:
            setup.close()
        start = time.perf_counter()
        if held:
            setup.execute("PRAGMA synchronous=NORMAL")
            for i in range(n):
                setup.execute("INSERT INTO events VALUES (?)", (str(i),))
                setup.commit()
            setup.close()
        else:
            for i in range(n):
                con = sqlite3.connect(path)
                con.execute("INSERT INTO events VALUES (?)", (str(i),))
                con.commit()
                con.close()
        return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    sessions = PARTITIONS.get_partition_keys()[: args.sessions]
    stock = "telemetry:\n  enabled: false\n"  # Dagster's default: SQLite storage in DAGSTER_HOME
    tuned = (
        "telemetry:\n  enabled: false\nstorage:\n  custom:\n    module: risk_pipeline.dagster_storage\n"
        "    class: TunedSqliteStorage\n    config:\n      base_dir:\n        env: DAGSTER_HOME\n"
    )
    stock_s = run_once(stock, sessions)
    tuned_s = run_once(tuned, sessions)
    print(f"run over {len(sessions)} sessions, {len(CHECKS)} checks:")
    print(f"  stock SQLite storage  {stock_s:8.2f} s")
    print(f"  TunedSqliteStorage    {tuned_s:8.2f} s   ratio stock/tuned {stock_s / tuned_s:5.2f}x")
    full, normal = sqlite_pattern_ms(held=False), sqlite_pattern_ms(held=True)
    print("SQLite write pattern per event:")
    print(f"  open-insert-commit-close, synchronous=FULL   {full:7.2f} ms")
    print(f"  insert-commit on a held connection, NORMAL    {normal:7.2f} ms   ratio {full / normal:5.1f}x")


if __name__ == "__main__":
    main()
