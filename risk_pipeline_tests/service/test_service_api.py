"""The risk service over HTTP: the real uvicorn server on 127.0.0.1, called with httpx (see conftest)."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from risk_pipeline.contracts import TABLES
from risk_pipeline.queries import audit_id
from risk_pipeline.service.core import ServiceSettings
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.service.conftest import (
    AS_OF,
    CAP,
    METACHAR_BOOK,
    NAV,
    PRICE,
    QUANTITY,
    SESSION,
    TOKENS,
    Server,
    build_book,
    publish,
    start_server,
    write_limits,
)

CHECK = "/v1/orders/check"


def order(**fields: Any) -> dict[str, Any]:
    return {"book": "alpha", "side": "buy", "quantity": 10, "symbol": "AAA", **fields}


def audit_rows(wh: Warehouse, key: str) -> pd.DataFrame:
    return wh.query("SELECT * FROM risk.audit_trail WHERE audit_id = ?", [key])


def contract_row(name: str, **given: Any) -> dict[str, Any]:
    """A row of a contract table: the given values, every other NOT NULL column a plain value of its type."""
    plain = {
        "text": "x",
        "double": 1.0,
        "bigint": 1,
        "date": SESSION,
        "timestamp": AS_OF,
        "boolean": False,
        "json": "[]",
    }
    return {c.name: given.get(c.name, None if c.nullable else plain[c.type]) for c in TABLES[name].columns}


# ------------------------------------------------------------------------------------------ health, docs
def test_health_ready_and_openapi(service: Server) -> None:
    with service.client() as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["valuation_as_of"] == AS_OF.isoformat() and ready.json()["age_sessions"] == 0
        paths = set(anonymous.get("/openapi.json").json()["paths"])
    assert {
        "/v1/orders/check",
        "/v1/orders/executions",
        "/v1/sizing/{book}/{symbol}",
        "/v1/books/{book}/risk",
        "/v1/books/{book}/hedges",
        "/v1/books/{book}/gap-risk",
        "/v1/alerts",
        "/v1/books/{book}/halt",
        "/v1/books/{book}/resume",
        "/v1/stream",
        "/metrics",
        "/healthz",
        "/readyz",
    } <= paths


# ------------------------------------------------------------------------------------------ authentication
ROUTES = [
    ("POST", CHECK, order(), ("trader",)),
    (
        "POST",
        "/v1/orders/executions",
        {
            "client_order_id": "auth-fill",
            "book": "alpha",
            "symbol": "AAA",
            "side": "buy",
            "quantity": 1,
            "price": 100.0,
        },
        ("trader",),
    ),
    ("GET", "/v1/books/alpha/risk", None, ("reader", "trader", "operator")),
    ("GET", "/v1/books/alpha/gap-risk", None, ("reader", "trader", "operator")),
    ("GET", "/v1/books/alpha/hedges", None, ("reader", "trader", "operator")),
    ("GET", "/v1/sizing/alpha/AAA", None, ("reader", "trader", "operator")),
    ("GET", "/v1/alerts", None, ("reader", "trader", "operator")),
    ("GET", "/metrics", None, ("reader", "trader", "operator")),
    ("POST", "/v1/books/gamma/halt", {"reason": "auth test"}, ("operator",)),
    ("POST", "/v1/books/gamma/resume", {"reason": "auth test"}, ("operator",)),
]


@pytest.mark.parametrize(("method", "path", "body", "allowed"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_every_route_needs_a_token_of_an_allowed_role(
    service: Server, caplog: pytest.LogCaptureFixture, method: str, path: str, body: Any, allowed: tuple[str, ...]
) -> None:
    caplog.set_level(logging.DEBUG)
    with service.client() as anonymous:
        missing = anonymous.request(method, path, json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    with service.client(token="not-a-known-token-0123456789") as wrong:
        assert wrong.request(method, path, json=body).status_code == 401
    for role in ("reader", "trader", "operator"):
        with service.client(role) as client:
            got = client.request(method, path, json=body)
        if role in allowed:
            assert got.status_code not in (401, 403), (role, got.text)
        else:
            assert got.status_code == 403 and role in got.json()["detail"]
        assert TOKENS[role] not in got.text
    assert "401" in caplog.text and path in caplog.text  # refusals are logged ...
    for token in (*TOKENS.values(), "not-a-known-token-0123456789"):
        assert token not in caplog.text  # ... without the token


# ------------------------------------------------------------------------------------------ pre-trade
def test_check_resizes_to_the_concentration_cap(service: Server) -> None:
    """Five equal positions of QUANTITY at PRICE; buying x more of one keeps its share of gross within CAP:
    (QUANTITY + x) / (5 QUANTITY + x) <= CAP  <=>  x <= (5 CAP - 1) QUANTITY / (1 - CAP)."""
    largest = math.floor((5 * CAP - 1) * QUANTITY / (1 - CAP))
    with service.client("trader") as trader:
        resized = trader.post(CHECK, json=order(quantity=1000)).json()
        approved = trader.post(CHECK, json=order(quantity=largest, position_id="alpha-AAA", symbol=None)).json()
        over = trader.post(CHECK, json=order(quantity=largest + 1)).json()
    assert resized["decision"] == "resize" and resized["approved_quantity"] == largest == 333
    assert resized["trading_state"] == "ACTIVE" and resized["valuation_as_of"] == AS_OF.isoformat()
    assert {"max_position_pct_gross", "max_underlying_pct_gross"} <= set(resized["limits_touched"])
    assert any("max_position_pct_gross" in r for r in resized["reasons"])
    limits = {x["limit_name"]: x for x in approved["post_trade_limits"]}
    share = (QUANTITY + largest) / (5 * QUANTITY + largest)
    assert limits["max_position_pct_gross"]["value"] == pytest.approx(share, rel=1e-12)
    assert approved["decision"] == "approve" and approved["approved_quantity"] == largest
    assert over["decision"] == "resize" and over["approved_quantity"] == largest
    stored = audit_rows(service.wh, resized["audit_id"])
    assert len(stored) == 1 and stored["decision"].iloc[0] == "resize" and stored["book"].iloc[0] == "alpha"
    assert "trader-test" in stored["actor"].iloc[0]


@pytest.mark.parametrize(
    ("book", "side", "reason"),
    [
        ("gamma", "buy", "no 99 % VaR"),  # risk numbers missing
        ("stale", "buy", "2 sessions old"),  # the published valuation is too old
        ("delta", "sell", "HALTED"),  # the book's trading state
    ],
)
def test_fails_closed(service: Server, book: str, side: str, reason: str) -> None:
    with service.client("trader") as trader:
        got = trader.post(CHECK, json=order(book=book, side=side)).json()
    assert got["decision"] == "reject" and got["approved_quantity"] == 0
    assert any(reason in r for r in got["reasons"]), got["reasons"]


def test_unreachable_warehouse_rejects_and_is_not_ready(tmp_path: Path) -> None:
    settings = ServiceSettings(
        warehouse_url="postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2",
        limits_file=write_limits(tmp_path / "limits.yaml"),
        poll_seconds=5.0,
    )
    down = start_server(settings, Warehouse(":memory:"))
    try:
        with down.client("trader") as trader:
            got = trader.post(CHECK, json=order(book="core_equity")).json()  # a configured book (data/books.yaml)
            ready = trader.get("/readyz")
    finally:
        down.stop()
    assert got["decision"] == "reject" and got["reasons"][0].startswith("check not possible")
    assert ready.status_code == 503 and "warehouse not usable" in ready.json()["reason"]


def test_client_order_id_is_idempotent(service: Server) -> None:
    body = order(quantity=7, client_order_id="ord-0001", strategy="momentum", confidence=0.6)
    with service.client("trader") as trader:
        first = trader.post(CHECK, json=body).json()
        second = trader.post(CHECK, json=body).json()
        conflict = trader.post(CHECK, json={**body, "quantity": 8})
    assert first["replayed"] is False and second["replayed"] is True
    assert {k: v for k, v in first.items() if k != "replayed"} == {k: v for k, v in second.items() if k != "replayed"}
    assert first["audit_id"] == audit_id("pre_trade_api", "alpha", "ord-0001")
    stored = audit_rows(service.wh, first["audit_id"])
    assert len(stored) == 1
    inputs = json.loads(stored["inputs"].iloc[0])
    assert inputs["order"]["strategy"] == "momentum" and inputs["order"]["confidence"] == 0.6
    assert conflict.status_code == 409 and "ord-0001" in conflict.json()["detail"]
    assert len(audit_rows(service.wh, first["audit_id"])) == 1


# ------------------------------------------------------------------------------------------ bad input
BAD_BODIES = [
    ("unknown book", json.dumps(order(book="nope")), 404, "unknown book"),
    ("unknown symbol", json.dumps(order(symbol="ZZZZ")), 404, "unknown symbol"),
    ("zero quantity", json.dumps(order(quantity=0)), 422, "greater than 0"),
    ("negative quantity", json.dumps(order(quantity=-5)), 422, "greater than 0"),
    ("fractional quantity", json.dumps(order(quantity=1.5)), 422, "whole number"),
    ("absurd size", json.dumps(order(quantity=1e12)), 422, "less than or equal"),
    ("NaN quantity", '{"book": "alpha", "side": "buy", "quantity": NaN, "symbol": "AAA"}', 422, "quantity"),
    ("infinite quantity", '{"book": "alpha", "side": "buy", "quantity": Infinity, "symbol": "AAA"}', 422, "quantity"),
    ("bad side", json.dumps(order(side="short")), 422, "'buy' or 'sell'"),
    ("no target", json.dumps(order(symbol=None)), 422, "exactly one of position_id or symbol"),
    ("two targets", json.dumps(order(position_id="alpha-AAA")), 422, "exactly one of position_id or symbol"),
    ("half an option", json.dumps(order(expiry="2027-01-15")), 422, "expiry, strike and option_type together"),
    ("unknown field", json.dumps(order(price_limit=5)), 422, "Extra inputs are not permitted"),
    ("malformed JSON", '{"book": "alpha", "side": ', 422, "JSON decode error"),
    ("long id", json.dumps(order(client_order_id="x" * 65)), 422, "at most 64 characters"),
    ("oversized body", json.dumps(order(strategy="x" * 5000)), 413, "larger than 4096 bytes"),
]


@pytest.mark.parametrize(("case", "content", "status", "message"), BAD_BODIES, ids=[c for c, *_ in BAD_BODIES])
def test_bad_input_gets_a_clear_4xx(service: Server, case: str, content: str, status: int, message: str) -> None:
    before = service.wh.row_count("audit_trail")
    with service.client("trader") as trader:
        got = trader.post(CHECK, content=content, headers={"Content-Type": "application/json"})
    assert got.status_code == status, got.text
    assert message in got.text
    assert service.wh.row_count("audit_trail") == before  # nothing recorded for a refused request


def test_sql_metacharacters_are_plain_data(service: Server) -> None:
    """A book literally named with quotes, a semicolon and a comment is checked and recorded as that name."""
    tables_before = service.wh.query("SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema='risk'")
    with service.client("trader") as trader:
        got = trader.post(CHECK, json=order(book=METACHAR_BOOK, client_order_id="'; DELETE FROM risk.audit_trail; --"))
        symbol = trader.post(CHECK, json=order(symbol="AAA' OR '1'='1"))
    with service.client("reader") as reader:
        risk = reader.get(f"/v1/books/{urllib.parse.quote(METACHAR_BOOK, safe='')}/risk")
        injected = reader.get("/v1/alerts", params={"book": "x' OR '1'='1"})
    assert got.status_code == 200 and got.json()["decision"] == "approve", got.text
    stored = audit_rows(service.wh, got.json()["audit_id"])
    assert stored["book"].tolist() == [METACHAR_BOOK]
    assert symbol.status_code == 404 and "AAA' OR '1'='1" in symbol.json()["detail"]
    assert risk.status_code == 200 and risk.json()["book"] == METACHAR_BOOK
    assert risk.json()["nav"]["nav"] == NAV
    assert injected.status_code in (200, 404) and (injected.status_code == 404 or injected.json()["count"] == 0)
    after = service.wh.query("SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema='risk'")
    assert after["n"].iloc[0] == tables_before["n"].iloc[0] and service.wh.row_count("audit_trail") > 0


# ------------------------------------------------------------------------------------------ documents
def test_book_risk_document(service: Server) -> None:
    with service.client("reader") as reader:
        doc = reader.get("/v1/books/alpha/risk").json()
    assert doc["as_of"] == AS_OF.isoformat()
    assert doc["trading_state"]["state"] == "ACTIVE" and doc["trading_state"]["manual_halt"] is None
    assert doc["nav"] == {"nav": NAV, "peak_nav": NAV, "daily_pnl": 0.0, "drawdown_pct": 0.0}
    assert doc["greeks"]["dollar_delta"] == 5 * QUANTITY * PRICE and doc["greeks"]["positions_count"] == 5
    assert doc["var"]["var_1d"] == 1e5 and doc["var"]["var_5d"] == pytest.approx(1e5 * math.sqrt(5))
    assert doc["var"]["es_975_1d"] == 1.2e5
    assert doc["worst_stress"]["scenario_id"] == "down_20" and doc["worst_stress"]["pnl"] == -0.2 * 5 * QUANTITY * PRICE
    assert [b["limit_name"] for b in doc["open_breaches"]] == ["max_positions"]
    assert doc["compliance"]["status"] == "not published"


def test_gap_risk_document(service: Server) -> None:
    with service.client("reader") as reader:
        doc = reader.get("/v1/books/alpha/gap-risk").json()
    assert doc["upcoming_events"] == [
        {"symbol": None, "event_type": "fomc", "date": "2026-11-25", "days_until": 3, "action": "alert"}
    ]
    assert doc["recommended_action"] == "alert"
    assert doc["actions"][0]["actions"] == ["alert"] and doc["actions"][0]["budget"] == 200_000.0


def write_contract_row(wh: Warehouse, name: str, **given: Any) -> None:
    """One row of a table another layer publishes, replacing its partition (the values it keys on given)."""
    row = contract_row(name, **given)
    partitions = [{c: row[c] for c in TABLES[name].partition_by}] if TABLES[name].partition_by else None
    wh.write(name, pd.DataFrame([row]), run_id="test", partitions=partitions)


def test_sizing_hedges_and_alerts_serve_their_tables_or_say_not_published(service: Server) -> None:
    with service.client("reader") as reader:
        missing = reader.get("/v1/sizing/alpha/BBB")
        hedges = reader.get("/v1/books/alpha/hedges")
        bad_limit = reader.get("/v1/alerts", params={"limit": 0})
    assert missing.status_code == 404 and ("not published" in missing.text or "no position sizing" in missing.text)
    assert hedges.status_code == 404 and ("not published" in hedges.text or "no hedge" in hedges.text)
    assert bad_limit.status_code == 422
    if "position_sizing" in TABLES:  # published sizes are served as stored
        write_contract_row(
            service.wh, "position_sizing", as_of=AS_OF, book="alpha", symbol="BBB", method="kelly", size_quantity=123.0
        )
        with service.client("reader") as reader:
            sized = reader.get("/v1/sizing/alpha/BBB").json()
        assert sized["as_of"] == AS_OF.isoformat() and sized["rows"][0]["size_quantity"] == 123.0
    if "hedge_recommendations" in TABLES:
        write_contract_row(
            service.wh, "hedge_recommendations", as_of=AS_OF, book="alpha", hedge_id="h-1", quantity=-7.0
        )
        with service.client("reader") as reader:
            hedged = reader.get("/v1/books/alpha/hedges").json()
        assert hedged["rows"][0]["hedge_id"] == "h-1" and hedged["rows"][0]["quantity"] == -7.0
    if "alerts" in TABLES:
        service.wh.append(
            "alerts",
            pd.DataFrame([contract_row("alerts", alert_id="a-0", book="alpha", message="heat", at=AS_OF)]),
            run_id="test",
        )
        with service.client("reader") as reader:
            listed = reader.get("/v1/alerts", params={"book": "alpha", "limit": 5}).json()
        assert [a["alert_id"] for a in listed["alerts"]] == ["a-0"] and listed["alerts"][0]["message"] == "heat"


# ------------------------------------------------------------------------------------------ executions
def test_executions_are_appended_once(service: Server) -> None:
    with service.client("trader") as trader:
        checked = trader.post(CHECK, json=order(quantity=5, client_order_id="fill-ord-1")).json()
        fill = {
            "client_order_id": "fill-ord-1",
            "book": "alpha",
            "symbol": "AAA",
            "side": "buy",
            "quantity": 5,
            "price": 101.25,
            "executed_at": "2026-11-20T19:30:00Z",
        }
        first = trader.post("/v1/orders/executions", json=fill)
        again = trader.post("/v1/orders/executions", json=fill)
        changed = trader.post("/v1/orders/executions", json={**fill, "price": 99.0})
        partial = trader.post("/v1/orders/executions", json={**fill, "execution_id": "fill-2", "quantity": 2})
        option = trader.post(
            "/v1/orders/executions",
            json={
                **fill,
                "client_order_id": "opt-1",
                "expiry": "2027-01-15",
                "strike": 100.0,
                "option_type": "C",
                "price": 4.5,
            },
        )
        naive = trader.post("/v1/orders/executions", json={**fill, "executed_at": "2026-11-20T19:30:00"})
    assert checked["decision"] == "approve"
    assert first.status_code == 201 and first.json()["recorded"] is True
    assert again.status_code == 201 and again.json()["recorded"] is False
    assert changed.status_code == 409
    assert partial.json()["recorded"] is True and option.json()["recorded"] is True
    assert naive.status_code == 422 and "time zone" in naive.text
    stored = service.wh.read("executions", {"book": "alpha"})
    mine = stored[stored["client_order_id"] == "fill-ord-1"].set_index("execution_id")
    assert mine.loc["fill-ord-1", "price"] == 101.25 and mine.loc["fill-ord-1", "pre_trade_decision"] == "approve"
    assert mine.loc["fill-ord-1", "as_of_date"] == SESSION and mine.loc["fill-2", "quantity"] == 2.0
    opt = stored[stored["client_order_id"] == "opt-1"].iloc[0]
    assert opt["instrument_type"] == "option" and opt["multiplier"] == 100.0 and opt["exercise_style"] == "american"


# ------------------------------------------------------------------------------------------ controls, stream
#: How long a stream test waits for the connection or an event before it fails: a bound on a hang, not a latency
#: assertion (10 s was too short for the service's poll on a machine at load 15)
STREAM_WAIT_SECONDS = 60.0


class StreamReader:
    """Collects the events of /v1/stream in a thread."""

    def __init__(self, service: Server) -> None:
        self.events: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._client = service.client("reader")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.connected.wait(STREAM_WAIT_SECONDS)

    def _read(self) -> None:
        try:
            with self._client.stream("GET", "/v1/stream", timeout=None) as response:
                event: dict[str, Any] = {}
                for line in response.iter_lines():
                    if line.startswith(": connected"):
                        self.connected.set()
                    elif line.startswith("event: "):
                        event["type"] = line[7:]
                    elif line.startswith("data: "):
                        event["data"] = json.loads(line[6:])
                    elif line == "" and event:
                        self.events.append(event)
                        event = {}
        except Exception:
            pass

    def wait_for(self, predicate: Any, timeout: float = STREAM_WAIT_SECONDS) -> dict[str, Any]:
        """The first collected event matching ``predicate``; ``timeout`` only bounds a hang (it returns as soon as the
        event is there), not a latency the test asserts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in list(self.events):
                if predicate(e):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no matching event in {self.events}")

    def close(self) -> None:
        self._client.close()


@pytest.fixture
def stream(service: Server) -> Iterator[StreamReader]:
    reader = StreamReader(service)
    yield reader
    reader.close()


def test_halt_and_resume_reach_orders_documents_and_the_stream(service: Server, stream: StreamReader) -> None:
    with service.client("operator") as operator, service.client("trader") as trader:
        assert trader.post(CHECK, json=order(book="beta")).json()["decision"] == "approve"
        assert trader.post("/v1/books/beta/halt", json={"reason": "x"}).status_code == 403
        assert operator.post("/v1/books/beta/halt", json={"reason": ""}).status_code == 422
        halted = operator.post("/v1/books/beta/halt", json={"reason": "desk review"})
        assert halted.status_code == 201 and halted.json()["action"] == "halt"
        assert "operator-test" in halted.json()["actor"]
        rejected = trader.post(CHECK, json=order(book="beta")).json()
        event = stream.wait_for(lambda e: e["type"] == "trading_state" and e["data"]["book"] == "beta")
        with service.client("reader") as reader:
            doc = reader.get("/v1/books/beta/risk").json()
        resumed = operator.post("/v1/books/beta/resume", json={"reason": "review done"})
        after = trader.post(CHECK, json=order(book="beta", quantity=11)).json()
        resume_event = stream.wait_for(
            lambda e: e["type"] == "trading_state" and e["data"]["source"] == "manual_controls:resume"
        )
    assert rejected["decision"] == "reject" and rejected["trading_state"] == "HALTED"
    assert "desk review" in rejected["reasons"][0]
    assert event["data"]["state"] == "HALTED" and event["data"]["reason"] == "desk review"
    assert doc["trading_state"]["state"] == "HALTED" and doc["trading_state"]["manual_halt"]["reason"] == "desk review"
    assert resumed.status_code == 201 and resumed.json()["was_halted"] is True
    assert after["decision"] == "approve"
    assert resume_event["data"]["state"] == "ACTIVE" and resume_event["data"]["book"] == "beta"


def test_stream_delivers_a_published_state_change_and_new_alerts(service: Server, stream: StreamReader) -> None:
    """A new published valuation where beta is REDUCING reaches the stream, as do new alert and hedge rows."""
    later = AS_OF + pd.Timedelta(minutes=5)
    wh = Warehouse(service.wh.url, keep_open=True)
    build_book(wh, "beta", later, state="REDUCING")
    publish(wh, later, ["beta"])
    if "alerts" in TABLES:
        wh.append(
            "alerts",
            pd.DataFrame(
                [
                    contract_row(
                        "alerts", alert_id="a-1", book="beta", level="WARNING", message="drawdown warning", at=later
                    )
                ]
            ),
            run_id="test",
        )
    if "hedge_recommendations" in TABLES:
        write_contract_row(wh, "hedge_recommendations", as_of=later, book="beta", hedge_id="h-beta", quantity=3.0)
    wh.close()
    event = stream.wait_for(
        lambda e: (
            e["type"] == "trading_state" and e["data"]["book"] == "beta" and e["data"]["source"] == "trading_state"
        )
    )
    assert event["data"]["state"] == "REDUCING" and event["data"]["previous_state"] == "ACTIVE"
    assert stream.wait_for(lambda e: e["type"] == "valuation_published")["data"]["books"] == ["beta"]
    if "alerts" in TABLES:
        alert = stream.wait_for(lambda e: e["type"] == "alert")
        assert alert["data"]["alert_id"] == "a-1" and alert["data"]["message"] == "drawdown warning"
    if "hedge_recommendations" in TABLES:
        hedge = stream.wait_for(lambda e: e["type"] == "hedge_recommendation")
        assert hedge["data"]["hedge_id"] == "h-beta" and hedge["data"]["book"] == "beta"
    with service.client("trader") as trader:
        got = trader.post(CHECK, json=order(book="beta")).json()
    assert got["valuation_as_of"] == later.isoformat() and got["trading_state"] == "REDUCING"


# ------------------------------------------------------------------------------------------ metrics
def test_metrics_expose_requests_latency_decisions_and_data_age(service: Server) -> None:
    with service.client("trader") as trader:
        trader.post(CHECK, json=order(quantity=3))
        trader.post(CHECK, json=order(book="gamma"))
    with service.client("reader") as reader:
        text = reader.get("/metrics").text
    lines = text.splitlines()

    def value(prefix: str) -> float:
        found = [line for line in lines if line.startswith(prefix)]
        assert found, prefix
        return float(found[0].rsplit(" ", 1)[1])

    assert value('risk_service_requests_total{method="POST",route="/v1/orders/check",status="200"}') >= 2
    assert value('risk_service_decisions_total{outcome="approve"}') >= 1
    assert value('risk_service_decisions_total{outcome="reject"}') >= 1
    count = value('risk_service_request_duration_seconds_count{method="POST",route="/v1/orders/check"}')
    inf = value('risk_service_request_duration_seconds_bucket{method="POST",route="/v1/orders/check",le="+Inf"}')
    assert count == inf >= 2
    assert value('risk_service_data_age_seconds{table="published_valuations"}') >= 0
    assert value('risk_service_auth_failures_total{reason="missing"}') >= 1
    assert "# TYPE risk_service_request_duration_seconds histogram" in text


def test_the_service_runs_without_dagster() -> None:
    import subprocess
    import sys

    code = "import sys, risk_pipeline.service.app; assert 'dagster' not in sys.modules, 'dagster imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_stream_and_control_inputs_are_validated(service: Server) -> None:
    with service.client("reader") as reader:
        unknown = reader.get("/v1/stream", params={"types": "trading_state,gossip"})
    with service.client("operator") as operator:
        resume_hours = operator.post("/v1/books/gamma/resume", json={"reason": "x", "hours": 1})
        negative = operator.post("/v1/books/gamma/halt", json={"reason": "x", "hours": -1})
        unknown_book = operator.post("/v1/books/nope/halt", json={"reason": "x"})
    assert unknown.status_code == 422 and "gossip" in unknown.json()["detail"]
    assert resume_hours.status_code == 422 and "halt only" in resume_hours.json()["detail"]
    assert negative.status_code == 422
    assert unknown_book.status_code == 404 and "unknown book" in unknown_book.json()["detail"]
