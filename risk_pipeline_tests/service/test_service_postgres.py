"""`risk-pipeline serve` with two worker processes on PostgreSQL: one audit row per client order id across
workers, and a halt recorded through one worker stops orders on every worker at once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from risk_pipeline.queries import audit_id
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.conftest import PG_ADMIN_URL
from risk_pipeline_tests.service.conftest import TOKENS, build_warehouse, free_port, write_limits

pytestmark = pytest.mark.postgres


@pytest.fixture
def served(pg_server_url: str, tmp_path: Path) -> Iterator[tuple[str, Warehouse]]:
    """A fresh database with the test books, served by `risk-pipeline serve --workers 2`."""
    db = f"risk_service_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{db}"')
    url = f"{PG_ADMIN_URL.rpartition('/')[0]}/{db}"
    wh = build_warehouse(url)
    port = free_port()
    env = {
        **os.environ,
        "RISK_PIPELINE_WAREHOUSE_URL": url,
        "RISK_SERVICE_TOKEN_TRADER": TOKENS["trader"],
        "RISK_SERVICE_TOKEN_OPERATOR": TOKENS["operator"],
    }
    command = [sys.executable, "-m", "risk_pipeline.cli", "serve", "--port", str(port), "--workers", "2"]
    command += ["--limits-file", str(write_limits(tmp_path / "limits.yaml")), "--max-age-sessions", "100000"]
    command += ["--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            time.sleep(0.3)
        else:
            pytest.fail("risk-pipeline serve did not become ready")
        yield base, wh
    finally:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        for token in TOKENS.values():
            assert token not in (output or "")


def test_two_workers_one_audit_row_per_order_and_halts_everywhere(served: tuple[str, Warehouse]) -> None:
    base, wh = served
    trader = {"Authorization": f"Bearer {TOKENS['trader']}"}
    operator = {"Authorization": f"Bearer {TOKENS['operator']}"}
    same = {"book": "alpha", "side": "buy", "quantity": 3, "symbol": "AAA", "client_order_id": "shared-1"}

    def post(body: dict) -> httpx.Response:
        with httpx.Client(base_url=base, headers=trader, timeout=30) as client:
            return client.post("/v1/orders/check", json=body)

    with ThreadPoolExecutor(16) as pool:
        repeated = list(pool.map(post, [same] * 24))
        distinct = list(pool.map(post, [{**same, "client_order_id": f"d-{i}"} for i in range(24)]))
    assert all(r.status_code == 200 for r in repeated + distinct)
    assert {r.json()["decision"] for r in repeated} == {"approve"}
    assert {r.json()["audit_id"] for r in repeated} == {audit_id("pre_trade_api", "alpha", "shared-1")}
    assert sum(not r.json()["replayed"] for r in repeated) >= 1
    keys = [audit_id("pre_trade_api", "alpha", c) for c in ["shared-1", *(f"d-{i}" for i in range(24))]]
    stored = wh.query(f"SELECT audit_id FROM risk.audit_trail WHERE audit_id IN ({', '.join('?' for _ in keys)})", keys)
    assert sorted(stored["audit_id"]) == sorted(keys)  # one row each: none lost, none duplicated

    with httpx.Client(base_url=base, headers=operator, timeout=30) as client:
        assert client.post("/v1/books/alpha/halt", json={"reason": "two-worker halt"}).status_code == 201
    with ThreadPoolExecutor(8) as pool:
        after = list(pool.map(post, [{**same, "client_order_id": f"h-{i}"} for i in range(16)]))
    assert all(r.json()["decision"] == "reject" and "two-worker halt" in r.json()["reasons"][0] for r in after)
