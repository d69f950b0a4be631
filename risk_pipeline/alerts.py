"""Alerts that reach people: rules over published tables, de-duplication, and delivery with retries.

Without Dagster (the compliance asset and the run-failure sensor both use it). ``data/alerts.yaml``
declares the channels and the rules:

- a **rule** is a condition on a published table at one valuation: the rows of ``table`` matching
  ``where`` (``{column: value}``, or ``{column: {op: value}}`` with op one of eq, ne, in, gt, gte, lt,
  lte), each row one open condition identified by the rule, the book and ``subject_columns``. The
  level is the rule's ``level`` or, with ``levels``, the most severe level whose own ``where`` matches.
- **de-duplication** replays the append-only ``alerts`` table: a condition alerts when it opens, when it
  escalates to a more severe level, again after ``cooldown_minutes`` while it stays open, and once when
  it clears (it is no longer matched).
- **channels**: ``log`` (Python logging), ``webhook`` (JSON POST, Slack ``{"text"}`` or Discord
  ``{"content"}`` bodies), ``email`` (SMTP, STARTTLS when ``starttls``). Secrets (webhook URL, SMTP
  password) come from environment variables only: the file names the variable (``url_env``,
  ``password_env``). A channel whose variables are unset is not configured and is skipped.
- **delivery** tries each channel up to ``attempts`` times with exponential backoff; every attempt is
  one ``alerts`` row with its status; a failed channel never raises.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import smtplib
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from risk_pipeline.errors import RiskDataError
from risk_pipeline.warehouse import Warehouse

LEVELS: tuple[str, ...] = ("INFO", "WARNING", "CRITICAL", "EMERGENCY")
ALERT_TYPES: tuple[str, ...] = (
    "PORTFOLIO_HEAT",
    "DRAWDOWN",
    "DAILY_LOSS",
    "CORRELATION",
    "VAR_BREACH",
    "POSITION_LIMIT",
    "VOLATILITY_SPIKE",
    "GAP_RISK",
    "HEDGE_REQUIRED",
    "COMPLIANCE",
    "DATA_QUALITY",
    "SYSTEM_ERROR",
    "MANUAL_CONTROL",
)
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "in": lambda a, b: a in b,
    "gt": lambda a, b: a is not None and a == a and a > b,
    "gte": lambda a, b: a is not None and a == a and a >= b,
    "lt": lambda a, b: a is not None and a == a and a < b,
    "lte": lambda a, b: a is not None and a == a and a <= b,
    "contains": lambda a, b: isinstance(a, str) and str(b) in a,
}
_LOG = logging.getLogger("risk_pipeline.alerts")
_LOG_LEVELS = {"INFO": logging.INFO, "WARNING": logging.WARNING, "CRITICAL": logging.CRITICAL}


class AlertConfigError(RiskDataError):
    """The alerts file is invalid; the message names the file and key."""


@dataclass(frozen=True)
class Channel:
    """A delivery channel: ``log``, ``webhook`` or ``email`` with its non-secret settings."""

    name: str
    kind: str
    settings: Mapping[str, Any]

    @property
    def label(self) -> str:
        return "log" if self.kind == "log" else f"{self.kind}:{self.name}"

    def missing_environment(self) -> list[str]:
        """Environment variables the channel needs and that are unset (empty: configured)."""
        names = [self.settings[k] for k in ("url_env", "host_env", "password_env") if self.settings.get(k)]
        return [n for n in names if not os.environ.get(n)]


@dataclass(frozen=True)
class AlertRule:
    """A condition on a published table (see the module docstring)."""

    name: str
    alert_type: str
    table: str
    where: Mapping[str, Any]
    levels: Sequence[tuple[str, Mapping[str, Any]]]
    subject: str
    subject_columns: Sequence[str]
    channels: Sequence[str]
    cooldown_minutes: float


@dataclass(frozen=True)
class AlertsConfig:
    channels: Mapping[str, Channel]
    rules: Sequence[AlertRule]
    attempts: int
    backoff_seconds: float
    timeout_seconds: float
    default_channels: Sequence[str]


@dataclass(frozen=True)
class Notification:
    """One alert to deliver: the condition, the event (open, escalated, repeat, cleared) and the text."""

    rule: str
    condition_key: str
    event: str
    level: str
    alert_type: str
    book: str | None
    subject: str
    message: str
    channels: Sequence[str]
    as_of: pd.Timestamp | None = None
    at: pd.Timestamp = field(default_factory=lambda: pd.Timestamp.now(tz="UTC"))


# ---------------------------------------------------------------------- configuration
def parse_config(document: Mapping[str, Any], source: str = "alerts") -> AlertsConfig:
    """Validate the alerts document; every problem in one ``AlertConfigError``."""
    problems: list[str] = []
    channels: dict[str, Channel] = {}
    for name, spec in (document.get("channels") or {}).items():
        kind = (spec or {}).get("type")
        if kind not in ("log", "webhook", "email"):
            problems.append(f"channels.{name}.type must be log, webhook or email (got {kind!r})")
            continue
        settings = {k: v for k, v in spec.items() if k != "type"}
        for secret in ("url", "password"):
            if secret in settings:
                problems.append(f"channels.{name}.{secret}: secrets come from the environment; use {secret}_env")
        if kind == "webhook" and not settings.get("url_env"):
            problems.append(f"channels.{name}: a webhook needs url_env (the variable holding its URL)")
        if kind == "webhook" and settings.get("format", "slack") not in ("slack", "discord"):
            problems.append(f"channels.{name}.format must be slack or discord")
        if kind == "email" and not (settings.get("host_env") or settings.get("host")):
            problems.append(f"channels.{name}: an email channel needs host or host_env")
        if kind == "email" and not settings.get("to"):
            problems.append(f"channels.{name}: an email channel needs to (a list of addresses)")
        channels[name] = Channel(str(name), str(kind), settings)
    delivery = document.get("delivery") or {}
    defaults = document.get("defaults") or {}
    default_channels = list(defaults.get("channels", ["log"]))
    default_cooldown = float(defaults.get("cooldown_minutes", 240))
    rules: list[AlertRule] = []
    for i, spec in enumerate(document.get("rules") or []):
        where = f"rules[{i}] ({spec.get('name', '?')})"
        alert_type = spec.get("alert_type")
        if alert_type not in ALERT_TYPES:
            problems.append(f"{where}.alert_type must be one of {ALERT_TYPES} (got {alert_type!r})")
        levels: list[tuple[str, Mapping[str, Any]]] = []
        if "levels" in spec:
            for entry in spec["levels"]:
                levels.append((entry.get("level"), entry.get("where") or {}))
        else:
            levels.append((spec.get("level"), {}))
        for level, _ in levels:
            if level not in LEVELS:
                problems.append(f"{where}: level must be one of {LEVELS} (got {level!r})")
        for cond in [spec.get("where") or {}, *(w for _, w in levels)]:
            for column, test in cond.items():
                if isinstance(test, Mapping):
                    bad = [op for op in test if op not in OPS]
                    if bad:
                        problems.append(f"{where}.where.{column}: unknown operators {bad} (known: {sorted(OPS)})")
        chans = list(spec.get("channels", default_channels))
        unknown = [c for c in chans if c not in channels]
        if unknown:
            problems.append(f"{where}: unknown channels {unknown}")
        for key in ("name", "table", "subject"):
            if not spec.get(key):
                problems.append(f"{where}: {key} is required")
        rules.append(
            AlertRule(
                name=str(spec.get("name")),
                alert_type=str(alert_type),
                table=str(spec.get("table")),
                where=spec.get("where") or {},
                levels=levels,
                subject=str(spec.get("subject")),
                subject_columns=list(spec.get("subject_columns", [])),
                channels=chans,
                cooldown_minutes=float(spec.get("cooldown_minutes", default_cooldown)),
            )
        )
    unknown_defaults = [c for c in default_channels if c not in channels]
    if unknown_defaults:
        problems.append(f"defaults.channels: unknown channels {unknown_defaults}")
    if problems:
        raise AlertConfigError(f"{source}: " + "; ".join(problems))
    return AlertsConfig(
        channels=channels,
        rules=rules,
        attempts=int(delivery.get("attempts", 3)),
        backoff_seconds=float(delivery.get("backoff_seconds", 1.0)),
        timeout_seconds=float(delivery.get("timeout_seconds", 5.0)),
        default_channels=default_channels,
    )


def load_config(path: str | Path) -> AlertsConfig:
    try:
        with open(path) as handle:
            document = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise AlertConfigError(f"{path}: cannot read the alerts configuration: {exc}") from exc
    return parse_config(document, str(path))


# ---------------------------------------------------------------------- conditions
def _matches(row: Mapping[str, Any], cond: Mapping[str, Any]) -> bool:
    for column, test in cond.items():
        value = row.get(column)
        if isinstance(test, Mapping):
            if not all(OPS[op](value, arg) for op, arg in test.items()):
                return False
        elif value != test:
            return False
    return True


def _format(template: str, row: Mapping[str, Any]) -> str:
    class _Row(dict):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    values = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()}
    return template.format_map(_Row(values))


@dataclass(frozen=True)
class OpenCondition:
    rule: AlertRule
    key: str
    level: str
    book: str | None
    subject: str
    message: str


def open_conditions(rule: AlertRule, rows: pd.DataFrame) -> list[OpenCondition]:
    """The rows of ``rule.table`` (already read for one valuation) matching the rule, with their levels."""
    out = []
    for row in rows.to_dict("records"):
        if not _matches(row, rule.where):
            continue
        level = None
        for candidate, cond in rule.levels:
            if _matches(row, cond) and (level is None or LEVELS.index(candidate) > LEVELS.index(level)):
                level = candidate
        if level is None:
            continue
        book = row.get("book")
        parts = [rule.name, str(book)] + [str(row.get(c)) for c in rule.subject_columns]
        subject = _format(rule.subject, row)
        detail = ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if k not in ("run_id", "materialized_at") and v is not None and v == v
        )
        out.append(OpenCondition(rule, "|".join(parts), level, book, subject, detail))
    return out


def last_events(warehouse: Warehouse, keys: Sequence[str]) -> dict[str, tuple[str, str, pd.Timestamp]]:
    """condition_key -> (event, level, at) of its latest alert in ``alerts`` (any channel, any status)."""
    if not keys or not warehouse.table_exists("alerts"):
        return {}
    got = warehouse.query(
        'SELECT condition_key, event, level, "at" FROM risk.alerts WHERE condition_key IN ('
        + ", ".join("?" for _ in keys)
        + ') ORDER BY "at"',
        list(keys),
    )
    out: dict[str, tuple[str, str, pd.Timestamp]] = {}
    for r in got.itertuples(index=False):
        out[r.condition_key] = (r.event, r.level, pd.Timestamp(r.at).tz_convert("UTC"))
    return out


def open_keys(warehouse: Warehouse, rule: str) -> dict[str, tuple[str, str | None, str]]:
    """Conditions of ``rule`` whose latest alert is not 'cleared': key -> (level, book, subject)."""
    if not warehouse.table_exists("alerts"):
        return {}
    got = warehouse.query(
        'SELECT condition_key, event, level, book, subject, "at" FROM risk.alerts WHERE rule = ? ORDER BY "at"', [rule]
    )
    latest = got.drop_duplicates("condition_key", keep="last")
    return {
        r.condition_key: (r.level, r.book, r.subject) for r in latest.itertuples(index=False) if r.event != "cleared"
    }


def decide(
    conditions: Sequence[OpenCondition],
    previous: Mapping[str, tuple[str, str, pd.Timestamp]],
    still_open: Mapping[str, tuple[str, str | None, str]],
    rule: AlertRule,
    now: pd.Timestamp,
    as_of: pd.Timestamp | None = None,
) -> list[Notification]:
    """Notifications for one rule: open, escalated, repeat (after the cooldown) and cleared conditions."""
    out: list[Notification] = []
    seen = set()
    for c in conditions:
        seen.add(c.key)
        last = previous.get(c.key)
        if last is None or last[0] == "cleared":
            event = "open"
        elif LEVELS.index(c.level) > LEVELS.index(last[1]):
            event = "escalated"
        elif now - last[2] >= pd.Timedelta(minutes=rule.cooldown_minutes):
            event = "repeat"
        else:
            continue
        out.append(
            Notification(
                rule.name,
                c.key,
                event,
                c.level,
                rule.alert_type,
                c.book,
                f"[{c.level}] {rule.alert_type}: {c.subject}" + ("" if event == "open" else f" ({event})"),
                c.message,
                rule.channels,
                as_of,
                now,
            )
        )
    for key, (level, book, subject) in still_open.items():
        if key in seen:
            continue
        out.append(
            Notification(
                rule.name,
                key,
                "cleared",
                "INFO",
                rule.alert_type,
                book,
                f"[INFO] {rule.alert_type} cleared: {subject.split(': ', 1)[-1]}",
                f"condition no longer met (was {level})",
                rule.channels,
                as_of,
                now,
            )
        )
    return out


# ---------------------------------------------------------------------- delivery
def webhook_body(n: Notification, fmt: str) -> dict[str, Any]:
    """Slack (``text``) or Discord (``content``) incoming-webhook JSON."""
    text = f"{n.subject}\n{n.message}"
    if fmt == "discord":
        return {"content": text[:2000], "username": "risk_pipeline"}
    return {"text": text}


def _send(channel: Channel, n: Notification, timeout: float) -> None:
    s = channel.settings
    if channel.kind == "log":
        _LOG.log(_LOG_LEVELS.get(n.level, logging.CRITICAL), "%s | %s", n.subject, n.message)
        return
    if channel.kind == "webhook":
        url = os.environ[s["url_env"]]
        body = json.dumps(webhook_body(n, s.get("format", "slack"))).encode()
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if not 200 <= response.status < 300:
                raise OSError(f"webhook answered HTTP {response.status}")
        return
    host = os.environ[s["host_env"]] if s.get("host_env") else s["host"]
    port = int(os.environ[s["port_env"]]) if s.get("port_env") else int(s.get("port", 587))
    message = EmailMessage()
    message["Subject"] = n.subject
    message["From"] = s.get("from", "risk-pipeline@localhost")
    message["To"] = ", ".join(s["to"])
    message.set_content(f"{n.subject}\n\n{n.message}\n\nbook: {n.book}\nrule: {n.rule}\nas of: {n.as_of}\n")
    with smtplib.SMTP(host, port, timeout=timeout) as smtp:
        if s.get("starttls"):  # the server certificate is verified (against ca_file when given)
            smtp.starttls(context=ssl.create_default_context(cafile=s.get("ca_file")))
        if s.get("username_env") and s.get("password_env"):
            smtp.login(os.environ[s["username_env"]], os.environ[s["password_env"]])
        smtp.send_message(message)


@dataclass(frozen=True)
class DeliveryReport:
    rows: pd.DataFrame
    skipped_channels: Sequence[str]

    @property
    def failed(self) -> pd.DataFrame:
        last = self.rows.drop_duplicates(["condition_key", "channel"], keep="last")
        return last[last["delivery_status"] == "failed"]


def deliver(
    notifications: Sequence[Notification],
    config: AlertsConfig,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryReport:
    """Send every notification on its channels with retries; one row per attempt (never raises)."""
    rows: list[dict[str, Any]] = []
    skipped: set[str] = set()
    for n in notifications:
        for name in n.channels:
            channel = config.channels[name]
            missing = channel.missing_environment()
            if missing:
                skipped.add(f"{channel.label} (unset: {', '.join(missing)})")
                continue
            for attempt in range(1, config.attempts + 1):
                error = None
                try:
                    _send(channel, n, config.timeout_seconds)
                    status = "delivered"
                except Exception as exc:  # any failure of a channel is recorded, never raised
                    status, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
                rows.append(
                    {
                        "alert_id": hashlib.sha256(
                            f"{n.condition_key}|{n.event}|{n.level}|{channel.label}|{n.at.isoformat()}|{attempt}".encode()
                        ).hexdigest()[:32],
                        "at": n.at,  # the evaluation time: de-duplication and cooldowns count from it
                        "level": n.level,
                        "alert_type": n.alert_type,
                        "book": n.book,
                        "rule": n.rule,
                        "condition_key": n.condition_key,
                        "event": n.event,
                        "subject": n.subject,
                        "message": n.message,
                        "channel": channel.label,
                        "delivery_status": status,
                        "attempts": attempt,
                        "error": error,
                        "as_of": n.as_of,
                    }
                )
                if status == "delivered":
                    break
                if attempt < config.attempts:
                    sleep(config.backoff_seconds * 2 ** (attempt - 1))
    columns = [
        "alert_id",
        "at",
        "level",
        "alert_type",
        "book",
        "rule",
        "condition_key",
        "event",
        "subject",
        "message",
        "channel",
        "delivery_status",
        "attempts",
        "error",
        "as_of",
    ]
    return DeliveryReport(pd.DataFrame(rows, columns=columns), sorted(skipped))


def evaluate_and_deliver(
    warehouse: Warehouse,
    config: AlertsConfig,
    tables: Mapping[str, pd.DataFrame],
    *,
    run_id: str,
    now: pd.Timestamp | None = None,
    as_of: pd.Timestamp | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryReport:
    """Every rule over ``tables`` (table name -> rows at one valuation): decide, deliver, append to ``alerts``.

    A rule whose table is not given (not materialized in this deployment) is skipped.
    """
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    notifications: list[Notification] = []
    for rule in config.rules:
        if rule.table not in tables:
            continue
        conditions = open_conditions(rule, tables[rule.table])
        previous = last_events(warehouse, [c.key for c in conditions])
        notifications += decide(conditions, previous, open_keys(warehouse, rule.name), rule, now, as_of)
    report = deliver(notifications, config, sleep=sleep)
    record(warehouse, report.rows, run_id=run_id)
    return report


def record(warehouse: Warehouse, rows: pd.DataFrame, *, run_id: str) -> int:
    """Append delivery rows to the append-only ``alerts`` table."""
    if rows.empty:
        return 0
    return warehouse.append("alerts", rows, run_id=run_id)


def alert_now(
    warehouse: Warehouse,
    config: AlertsConfig,
    *,
    alert_type: str,
    level: str,
    subject: str,
    message: str,
    condition_key: str,
    rule: str,
    run_id: str,
    book: str | None = None,
    channels: Sequence[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryReport:
    """One alert outside the rules (run failures, failed blocking checks): delivered and recorded at once."""
    n = Notification(
        rule,
        condition_key,
        "open",
        level,
        alert_type,
        book,
        f"[{level}] {alert_type}: {subject}",
        message,
        list(channels or config.default_channels),
        None,
        pd.Timestamp(dt.datetime.now(dt.UTC)),
    )
    report = deliver([n], config, sleep=sleep)
    record(warehouse, report.rows, run_id=run_id)
    return report
