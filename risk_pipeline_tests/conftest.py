"""Shared fixtures: warehouses on both engines, a PostgreSQL database per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from risk_pipeline.warehouse import Warehouse


def _temporary_files_in_memory(shm: str = "/dev/shm", min_free: int = 4 << 30) -> None:
    """The tests' temporary files (``tmp_path``, ``dg.instance_for_test``, every ``tempfile`` directory) in RAM
    when ``TMPDIR`` is not set and ``/dev/shm`` is a writable directory with ``min_free`` bytes free.

    Why: the SQLite instance storage commits every Dagster event and DuckDB checkpoints on close, each with an
    fsync; on a VM's disk those waits were most of some tests' wall time (test_writer_lock's first test: 38 s
    wall, 13 CPU s on disk; 14 s wall in RAM). The files and their contents are the same (no test relies on
    surviving a machine crash). Set ``TMPDIR`` to keep them on disk. Runs in the xdist controller before the
    workers start (they inherit ``TMPDIR``) and in each worker."""
    import shutil
    import tempfile

    if os.environ.get("TMPDIR") or not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
        return
    if shutil.disk_usage(shm).free < min_free:
        return
    os.environ["TMPDIR"] = shm
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


_temporary_files_in_memory()

PG_ADMIN_URL = os.environ.get("RISK_PIPELINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_reachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any connection failure means "not reachable"
        return f"{type(exc).__name__}: {exc}".strip()


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server for this test session (dropped at the end).

    Skips with the reason when no server answers, except in CI (CI=true) where it fails.
    """
    problem = _pg_reachable()
    if problem:
        message = (
            f"PostgreSQL not reachable at {PG_ADMIN_URL} ({problem}). Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or set RISK_PIPELINE_TEST_PG_URL."
        )
        if IN_CI:
            pytest.fail("CI=true requires PostgreSQL: " + message)
        pytest.skip(message)
    import psycopg

    name = f"risk_pipeline_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
        con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fresh_pg(url: str) -> Warehouse:
    wh = Warehouse(url)
    wh.execute("DROP SCHEMA IF EXISTS risk CASCADE")
    return wh


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    """An empty warehouse with every contract table, on each engine."""
    if request.param == "duckdb":
        wh = Warehouse(str(tmp_path / "warehouse" / "risk_warehouse.duckdb"))
    else:
        wh = _fresh_pg(request.getfixturevalue("pg_server_url"))
    wh.ensure_tables()
    return wh
