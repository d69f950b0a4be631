"""Alert delivery to real loopback servers (http.server, aiosmtpd), retries of a refusing channel, the
de-duplication (once per cooldown, escalation, clearing) and the run-failure sensor."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import yaml
from aiosmtpd.controller import Controller

from risk_pipeline import alerts
from risk_pipeline.defs.compliance.sensors import run_failure_alert_sensor
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Warehouse

NOW = pd.Timestamp("2026-11-20T21:00:00Z")


class _Hook(BaseHTTPRequestHandler):
    bodies: list[tuple[str, dict]]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.bodies.append((self.path, json.loads(self.rfile.read(length))))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, _Inbox]]:
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_refused_port())  # a free port
    controller.start()
    yield controller, inbox
    controller.stop()


def _refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connections are refused; also a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


RULE = {
    "name": "position_limit",
    "alert_type": "POSITION_LIMIT",
    "table": "limit_status",
    "where": {"limit_name": "max_position_pct_gross"},
    "levels": [{"level": "WARNING", "where": {"status": "WARN"}}, {"level": "CRITICAL", "where": {"status": "BREACH"}}],
    "subject": "{book}: {limit_name} {status} ({value} against {threshold})",
    "subject_columns": ["limit_name"],
    "cooldown_minutes": 60,
}


def _config(channels: dict, rule_channels: list[str], attempts: int = 3) -> alerts.AlertsConfig:
    document = {
        "channels": channels,
        "defaults": {"channels": rule_channels},
        "delivery": {"attempts": attempts, "backoff_seconds": 0.5, "timeout_seconds": 2},
        "rules": [{**RULE, "channels": rule_channels}],
    }
    return alerts.parse_config(document)


def _limits(status: str | None) -> pd.DataFrame:
    rows = [] if status is None else [("core", "max_position_pct_gross", 0.25, 0.20, status)]
    return pd.DataFrame(rows, columns=["book", "limit_name", "value", "threshold", "status"])


@pytest.fixture
def duck(tmp_path: Path) -> Warehouse:
    wh = Warehouse(str(tmp_path / "w" / "risk_warehouse.duckdb"))
    wh.ensure_tables(["alerts"])
    return wh


def test_webhooks_and_email_reach_loopback_servers(
    duck: Warehouse,
    webhook_server: ThreadingHTTPServer,
    smtp_server: tuple[Controller, _Inbox],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = f"http://127.0.0.1:{webhook_server.server_address[1]}"
    monkeypatch.setenv("TEST_SLACK_URL", f"{base}/slack")
    monkeypatch.setenv("TEST_DISCORD_URL", f"{base}/discord")
    monkeypatch.setenv("TEST_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TEST_SMTP_PORT", str(smtp_server[0].port))
    channels = {
        "log": {"type": "log"},
        "slack": {"type": "webhook", "url_env": "TEST_SLACK_URL", "format": "slack"},
        "discord": {"type": "webhook", "url_env": "TEST_DISCORD_URL", "format": "discord"},
        "mail": {
            "type": "email",
            "host_env": "TEST_SMTP_HOST",
            "port_env": "TEST_SMTP_PORT",
            "from": "risk@test",
            "to": ["officer@test", "desk@test"],
        },
    }
    config = _config(channels, ["log", "slack", "discord", "mail"])
    report = alerts.evaluate_and_deliver(duck, config, {"limit_status": _limits("BREACH")}, run_id="t", now=NOW)
    subject = "[CRITICAL] POSITION_LIMIT: core: max_position_pct_gross BREACH (0.25 against 0.2)"
    bodies = dict(webhook_server.bodies)  # type: ignore[attr-defined]
    assert bodies["/slack"]["text"].split("\n")[0] == subject
    assert bodies["/discord"]["content"].split("\n")[0] == subject
    assert bodies["/discord"]["username"] == "risk_pipeline" and "text" not in bodies["/discord"]
    ((sender, recipients, raw),) = smtp_server[1].messages
    mail = message_from_bytes(raw, policy=policy.default)
    assert (sender, recipients) == ("risk@test", ["officer@test", "desk@test"])
    assert mail["Subject"] == subject and "limit_name=max_position_pct_gross" in mail.get_content()
    stored = duck.read("alerts").set_index("channel")
    assert sorted(stored.index) == ["email:mail", "log", "webhook:discord", "webhook:slack"]
    assert set(stored["delivery_status"]) == {"delivered"} and set(stored["attempts"]) == {1}
    assert set(stored["event"]) == {"open"} and set(stored["level"]) == {"CRITICAL"}
    assert report.skipped_channels == []


def test_refusing_channel_is_retried_with_backoff_and_recorded_failed(
    duck: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_DEAD_URL", f"http://127.0.0.1:{_refused_port()}/hook")
    channels = {"log": {"type": "log"}, "dead": {"type": "webhook", "url_env": "TEST_DEAD_URL"}}
    waits: list[float] = []
    report = alerts.evaluate_and_deliver(
        duck,
        _config(channels, ["log", "dead"]),
        {"limit_status": _limits("BREACH")},
        run_id="t",
        now=NOW,
        sleep=waits.append,
    )
    assert waits == [0.5, 1.0]  # exponential backoff between the three attempts
    stored = duck.read("alerts")
    dead = stored[stored["channel"] == "webhook:dead"].sort_values("attempts")
    assert list(dead["attempts"]) == [1, 2, 3] and set(dead["delivery_status"]) == {"failed"}
    assert dead["error"].str.contains("Connection refused").all()
    assert stored.loc[stored["channel"] == "log", "delivery_status"].tolist() == ["delivered"]
    assert list(report.failed["channel"]) == ["webhook:dead"]


def test_unset_secret_skips_the_channel(duck: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_UNSET_URL", raising=False)
    channels = {"log": {"type": "log"}, "hook": {"type": "webhook", "url_env": "TEST_UNSET_URL"}}
    report = alerts.evaluate_and_deliver(
        duck, _config(channels, ["log", "hook"]), {"limit_status": _limits("WARN")}, run_id="t", now=NOW
    )
    assert report.skipped_channels == ["webhook:hook (unset: TEST_UNSET_URL)"]
    assert list(duck.read("alerts")["channel"]) == ["log"]
    with pytest.raises(alerts.AlertConfigError, match="secrets come from the environment"):
        alerts.parse_config({"channels": {"h": {"type": "webhook", "url": "http://x"}}, "rules": []})


def test_once_per_cooldown_again_on_escalation_and_when_cleared(duck: Warehouse) -> None:
    config = _config({"log": {"type": "log"}}, ["log"])

    def step(status: str | None, minutes: float) -> list[tuple[str, str]]:
        report = alerts.evaluate_and_deliver(
            duck, config, {"limit_status": _limits(status)}, run_id="t", now=NOW + pd.Timedelta(minutes=minutes)
        )
        return list(zip(report.rows["event"], report.rows["level"], strict=True))

    assert step("WARN", 0) == [("open", "WARNING")]
    assert step("WARN", 30) == []  # inside the 60-minute cooldown
    assert step("BREACH", 40) == [("escalated", "CRITICAL")]
    assert step("BREACH", 90) == []
    assert step("BREACH", 100) == [("repeat", "CRITICAL")]  # 60 minutes after the escalation
    assert step(None, 110) == [("cleared", "INFO")]
    assert step(None, 300) == []
    assert step("WARN", 310) == [("open", "WARNING")]
    assert duck.row_count("alerts") == 5


def test_alerts_asset_succeeds_with_a_refusing_channel(duck: Warehouse, tmp_path: Path) -> None:
    """The asset on a warehouse with one BREACH: the dead webhook fails three times, the run succeeds."""
    duck.ensure_tables()
    as_of = pd.Timestamp("2026-11-20T20:45:00Z")
    duck.write(
        "book_nav",
        pd.DataFrame(
            [
                {
                    "as_of": as_of,
                    "as_of_date": "2026-11-20",
                    "book": "core",
                    "nav": 1e6,
                    "peak_nav": 1e6,
                    "daily_pnl": 0.0,
                    "drawdown_pct": 0.0,
                    "pnl_basis": "inception",
                    "previous_as_of": None,
                    "capital": 1e6,
                }
            ]
        ),
        run_id="t",
    )
    status = _limits("BREACH").assign(
        as_of=as_of, warn_threshold=0.16, utilization=1.25, detail=None, limits_version="v"
    )
    from risk_pipeline.contracts import table

    for column in set(table("limit_status").data_column_names) - set(status.columns):  # nullable columns added later
        status[column] = None
    duck.write("limit_status", status, run_id="t")
    path = tmp_path / "alerts.yaml"
    dead = f"http://127.0.0.1:{_refused_port()}/hook"
    path.write_text(
        yaml.safe_dump(
            {
                "channels": {"log": {"type": "log"}, "dead": {"type": "webhook", "url_env": "TEST_ASSET_DEAD_URL"}},
                "delivery": {"attempts": 2, "backoff_seconds": 0.01},
                "rules": [{**RULE, "channels": ["log", "dead"]}],
            }
        )
    )
    from risk_pipeline.defs.compliance.assets import alerts as alerts_asset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEST_ASSET_DEAD_URL", dead)
        result = dg.materialize(
            [alerts_asset],
            partition_key="2026-11-20",
            resources={"warehouse": WarehouseResource(url=duck.url)},
            run_config={"ops": {"alerts": {"config": {"alerts_file": str(path)}}}},
        )
    assert result.success
    meta = result.asset_materializations_for_node("alerts")[0].metadata
    assert meta["failed_channels"].value == "webhook:dead"
    stored = duck.read("alerts")
    assert sorted(zip(stored["channel"], stored["delivery_status"], stored["attempts"], strict=True)) == [
        ("log", "delivered", 1),
        ("webhook:dead", "failed", 1),
        ("webhook:dead", "failed", 2),
    ]


def _failed_run(instance: dg.DagsterInstance, blocking: bool) -> tuple[Any, Any]:
    @dg.asset(name="broken")
    def broken() -> None:
        if blocking:
            raise dg.Failure(description="rule close_positive failed on 2 rows", metadata={"failed_rules": "x"})
        raise RuntimeError("disk full")

    result = dg.materialize([broken], instance=instance, raise_on_error=False)
    assert not result.success
    return result.dagster_run, result.get_run_failure_event()


@pytest.mark.parametrize(("blocking", "alert_type"), [(False, "SYSTEM_ERROR"), (True, "DATA_QUALITY")])
def test_run_failure_sensor_raises_system_error_or_data_quality(
    duck: Warehouse, blocking: bool, alert_type: str
) -> None:
    instance = dg.DagsterInstance.ephemeral()
    run, event = _failed_run(instance, blocking)
    with dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor",
        dagster_event=event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"warehouse": WarehouseResource(url=duck.url)},
    ) as context:
        run_failure_alert_sensor(context.for_run_failure())
    stored = duck.read("alerts")
    assert list(stored["alert_type"]) == [alert_type] and list(stored["level"]) == ["CRITICAL"]
    assert stored["subject"].iloc[0].startswith(f"[CRITICAL] {alert_type}: run {run.run_id[:8]}")
    assert ("rule close_positive" if blocking else "disk full") in stored["message"].iloc[0]


def test_email_over_starttls_with_login(duck: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A loopback SMTP server that requires STARTTLS before AUTH: the certificate is verified against ca_file and
    the password comes from the environment."""
    import ssl
    import subprocess

    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.password == b"s3cret")

    inbox = _Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=_refused_port(),
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        monkeypatch.setenv("TEST_TLS_HOST", "127.0.0.1")
        monkeypatch.setenv("TEST_TLS_PORT", str(controller.port))
        monkeypatch.setenv("TEST_TLS_USER", "risk")
        monkeypatch.setenv("TEST_TLS_PASSWORD", "s3cret")
        channels = {
            "mail": {
                "type": "email",
                "host_env": "TEST_TLS_HOST",
                "port_env": "TEST_TLS_PORT",
                "starttls": True,
                "ca_file": str(cert),
                "username_env": "TEST_TLS_USER",
                "password_env": "TEST_TLS_PASSWORD",
                "to": ["officer@test"],
            }
        }
        alerts.evaluate_and_deliver(
            duck, _config(channels, ["mail"], attempts=1), {"limit_status": _limits("BREACH")}, run_id="t", now=NOW
        )
    finally:
        controller.stop()
    assert logins == [(b"risk", b"s3cret")]
    ((_, recipients, raw),) = inbox.messages
    assert recipients == ["officer@test"]
    assert message_from_bytes(raw, policy=policy.default)["Subject"].startswith("[CRITICAL] POSITION_LIMIT: core")
    assert duck.read("alerts")["delivery_status"].tolist() == ["delivered"]
