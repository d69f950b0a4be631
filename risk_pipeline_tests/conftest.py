"""Shared fixtures: warehouses on both engines, a PostgreSQL database per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from risk_pipeline.warehouse import Warehouse

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
