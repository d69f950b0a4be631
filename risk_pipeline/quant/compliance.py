"""Compliance rules of the daily report: which rules a book violates, since when, and the resulting status.

Pure: the inputs are per-session arrays and small records already read from the warehouse (the
compliance asset does the reading). A violation carries the rule, its severity, the measured value and
threshold, the session it started (``since``) and its duration in sessions: the number of consecutive
sessions, ending at the report date, in which the rule was violated (1 = only today). Status: any major
violation -> ``major_violations``, else any minor -> ``minor_violations``, else ``compliant``.

``load_rules`` reads and validates ``data/compliance/rules.yaml`` (like ``quant.limits.load_limits``):
unknown keys, wrong types and missing settings are refused with the file and key named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from risk_pipeline.quant.trading_state import EmergencyConfig

MINOR = "minor"
MAJOR = "major"
COMPLIANT = "compliant"
MINOR_VIOLATIONS = "minor_violations"
MAJOR_VIOLATIONS = "major_violations"

#: Rule name -> settings it takes besides ``severity`` (name -> (kind, default or None if required)).
RULE_SETTINGS: dict[str, dict[str, tuple[str, Any]]] = {
    "position_pct_nav": {"threshold": ("fraction", 0.10)},
    "var_pct_nav": {"threshold": ("fraction", 0.02)},
    "limit_breach": {},
    "warn_persistent": {"sessions": ("count_pos", 3)},
    "trading_halted": {},
    "unexecuted_reductions": {},
    "expired_gap_action_in_breach": {},
    "blocking_check_failed": {},
}
_EMERGENCY_KINDS = {
    "vol_spike_multiple": "multiple",
    "vol_median_sessions": "count_pos",
    "realized_vol_sessions": "count_pos",
    "max_average_correlation": "fraction",
    "loss_streak_sessions": "count_pos",
    "loss_streak_budget_factor": "fraction",
}


@dataclass(frozen=True)
class Rule:
    """One configured rule: name, severity and its settings."""

    name: str
    severity: str
    settings: Mapping[str, float]


@dataclass(frozen=True)
class ComplianceRules:
    """The validated rules file."""

    rules: Mapping[str, Rule]
    retention_days: int
    lookback_sessions: int
    emergency: EmergencyConfig
    version: str


class RulesError(ValueError):
    """The rules file is invalid; the message names the file and every bad key."""


def _check(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if kind == "fraction":
        return isinstance(value, int | float) and 0 < value <= 1
    if kind == "multiple":
        return isinstance(value, int | float) and value > 1
    if kind == "count_pos":
        return isinstance(value, int) and value >= 1
    if kind == "days":
        return isinstance(value, int) and value >= 1
    raise ValueError(kind)


_KIND_TEXT = {
    "fraction": "a number in (0, 1]",
    "multiple": "a number > 1",
    "count_pos": "an integer >= 1",
    "days": "an integer >= 1",
}


def parse_rules(document: Mapping[str, Any], source: str = "rules") -> ComplianceRules:
    """Validate a rules document (the parsed YAML); every problem is listed in one ``RulesError``."""
    problems: list[str] = []
    if not isinstance(document, Mapping):
        raise RulesError(f"{source}: the document must be a mapping")
    known_top = {"version", "retention_days", "lookback_sessions", "rules", "emergency"}
    problems += [f"unknown key {k!r}" for k in document if k not in known_top]
    retention = document.get("retention_days", 365)
    if not _check("days", retention):
        problems.append(f"retention_days must be {_KIND_TEXT['days']} (got {retention!r})")
    lookback = document.get("lookback_sessions", 60)
    if not _check("count_pos", lookback):
        problems.append(f"lookback_sessions must be {_KIND_TEXT['count_pos']} (got {lookback!r})")
    rules: dict[str, Rule] = {}
    raw_rules = document.get("rules")
    if not isinstance(raw_rules, Mapping):
        problems.append("rules must be a mapping of rule name -> settings")
        raw_rules = {}
    for name, spec in raw_rules.items():
        if name not in RULE_SETTINGS:
            problems.append(f"rules.{name}: unknown rule (known: {sorted(RULE_SETTINGS)})")
            continue
        if not isinstance(spec, Mapping):
            problems.append(f"rules.{name}: must be a mapping with severity")
            continue
        severity = spec.get("severity")
        if severity not in (MINOR, MAJOR):
            problems.append(f"rules.{name}.severity must be minor or major (got {severity!r})")
        settings: dict[str, float] = {}
        for key, value in spec.items():
            if key == "severity":
                continue
            if key not in RULE_SETTINGS[name]:
                problems.append(f"rules.{name}: unknown setting {key!r}")
                continue
            kind = RULE_SETTINGS[name][key][0]
            if not _check(kind, value):
                problems.append(f"rules.{name}.{key} must be {_KIND_TEXT[kind]} (got {value!r})")
            settings[key] = value
        for key, (_kind, default) in RULE_SETTINGS[name].items():
            settings.setdefault(key, default)
        rules[name] = Rule(name, str(severity), settings)
    emergency_doc = document.get("emergency", {}) or {}
    emergency_values: dict[str, Any] = {}
    if not isinstance(emergency_doc, Mapping):
        problems.append("emergency must be a mapping")
        emergency_doc = {}
    for key, value in emergency_doc.items():
        kind = _EMERGENCY_KINDS.get(key)
        if kind is None:
            problems.append(f"emergency: unknown setting {key!r} (known: {sorted(_EMERGENCY_KINDS)})")
        elif not _check(kind, value):
            problems.append(f"emergency.{key} must be {_KIND_TEXT[kind]} (got {value!r})")
        else:
            emergency_values[key] = value
    if problems:
        raise RulesError(f"{source}: " + "; ".join(problems))
    canonical = yaml.safe_dump(dict(document), sort_keys=True)
    return ComplianceRules(
        rules=rules,
        retention_days=int(retention),
        lookback_sessions=int(lookback),
        emergency=EmergencyConfig(**emergency_values),
        version=f"{document.get('version', 0)}:{hashlib.sha256(canonical.encode()).hexdigest()[:12]}",
    )


def load_rules(path: str | Path) -> ComplianceRules:
    """Read and validate the rules file (``data/compliance/rules.yaml``)."""
    try:
        with open(path) as handle:
            document = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"{path}: cannot read the compliance rules: {exc}") from exc
    return parse_rules(document, str(path))


# ---------------------------------------------------------------------- inputs and evaluation
@dataclass(frozen=True)
class LimitHistory:
    """One limit of a book: its status per session (oldest first, last = report date) and today's numbers."""

    limit_name: str
    statuses: Sequence[str | None]
    value: float
    threshold: float


@dataclass(frozen=True)
class ComplianceInputs:
    """A book's inputs over the look-back sessions (arrays oldest first, last entry = the report date).

    ``nav``, ``var_99`` and ``max_position_exposure`` are per session (NaN where not measured);
    ``largest_position`` names today's largest position. ``states`` are the trading states per session.
    ``unexecuted`` lists (position_id, quantity_now, quantity_required, requested_at_session_index);
    ``expired_gap_actions`` (event_id, symbol, loss_after, budget, expires_at text); ``failed_checks``
    (asset, check_name, rows) quarantined for the session.
    """

    book: str
    sessions: Sequence[Any]
    nav: np.ndarray
    var_99: np.ndarray
    max_position_exposure: np.ndarray
    largest_position: str | None
    limits: Sequence[LimitHistory]
    states: Sequence[str | None]
    state_reason: str | None
    unexecuted: Sequence[tuple[str, float, float, int]] = ()
    expired_gap_actions: Sequence[tuple[str, str, float, float, str]] = ()
    failed_checks: Sequence[tuple[str, str, int]] = ()


@dataclass(frozen=True)
class Violation:
    """One rule violated on the report date."""

    rule: str
    severity: str
    subject: str
    value: float | None
    threshold: float | None
    since: Any
    duration_sessions: int
    detail: str
    actions: list[dict[str, Any]] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "subject": self.subject,
            "value": self.value,
            "threshold": self.threshold,
            "since": str(self.since),
            "duration_sessions": self.duration_sessions,
            "detail": self.detail,
            "actions": self.actions,
            "recommendations": self.recommendations,
        }


def trailing_run(flags: np.ndarray) -> int:
    """Consecutive True entries ending at the last one (0 when the last is False)."""
    flags = np.asarray(flags, dtype=bool)
    if not flags.size or not flags[-1]:
        return 0
    breaks = np.flatnonzero(~flags)
    return int(flags.size - (breaks[-1] + 1 if breaks.size else 0))


def status_of(violations: Sequence[Violation]) -> str:
    """major_violations if any major, minor_violations if any minor, else compliant."""
    if any(v.severity == MAJOR for v in violations):
        return MAJOR_VIOLATIONS
    if violations:
        return MINOR_VIOLATIONS
    return COMPLIANT


def evaluate(inputs: ComplianceInputs, rules: ComplianceRules) -> list[Violation]:
    """Every configured rule the book violates on the report date, with value, threshold and duration."""
    out: list[Violation] = []
    sessions = list(inputs.sessions)
    n = len(sessions)

    def since(duration: int) -> Any:
        return sessions[n - duration] if duration >= 1 else sessions[-1]

    with np.errstate(all="ignore"):
        position_pct = np.asarray(inputs.max_position_exposure, dtype=float) / np.asarray(inputs.nav, dtype=float)
        var_pct = np.asarray(inputs.var_99, dtype=float) / np.asarray(inputs.nav, dtype=float)
    for name, series, subject in (
        ("position_pct_nav", position_pct, inputs.largest_position or "largest position"),
        ("var_pct_nav", var_pct, "VaR 99% 1-day (historical)"),
    ):
        rule = rules.rules.get(name)
        if rule is None or not n:
            continue
        threshold = float(rule.settings["threshold"])
        run = trailing_run(np.nan_to_num(series, nan=-np.inf) > threshold)
        if run:
            value = float(series[-1])
            out.append(
                Violation(
                    name,
                    rule.severity,
                    subject,
                    value,
                    threshold,
                    since(run),
                    run,
                    f"{subject}: {value:.2%} of NAV above {threshold:.2%}",
                )
            )
    breach = rules.rules.get("limit_breach")
    warn = rules.rules.get("warn_persistent")
    for limit in inputs.limits:
        statuses = np.asarray([s or "" for s in limit.statuses], dtype=object)
        if breach is not None:
            run = trailing_run(statuses == "BREACH")
            if run:
                out.append(
                    Violation(
                        "limit_breach",
                        breach.severity,
                        limit.limit_name,
                        limit.value,
                        limit.threshold,
                        since(run),
                        run,
                        f"{limit.limit_name} in BREACH: {limit.value:,.6g} against {limit.threshold:,.6g}",
                    )
                )
        if warn is not None:
            run = trailing_run((statuses == "WARN") | (statuses == "BREACH"))
            need = int(warn.settings["sessions"])
            if run > need and statuses[-1] == "WARN":
                out.append(
                    Violation(
                        "warn_persistent",
                        warn.severity,
                        limit.limit_name,
                        limit.value,
                        limit.threshold,
                        since(run),
                        run,
                        f"{limit.limit_name} at WARN or worse for {run} sessions (more than {need})",
                    )
                )
    halted = rules.rules.get("trading_halted")
    if halted is not None and n:
        states = np.asarray([s or "" for s in inputs.states], dtype=object)
        run = trailing_run(states == "HALTED")
        if run:
            out.append(
                Violation(
                    "trading_halted",
                    halted.severity,
                    "trading_state",
                    None,
                    None,
                    since(run),
                    run,
                    f"trading state HALTED: {inputs.state_reason or ''}".strip(),
                )
            )
    red = rules.rules.get("unexecuted_reductions")
    if red is not None:
        for position_id, now, required, requested in inputs.unexecuted:
            run = max(1, n - int(requested) - 1)
            out.append(
                Violation(
                    "unexecuted_reductions",
                    red.severity,
                    position_id,
                    float(now),
                    float(required),
                    sessions[min(int(requested) + 1, n - 1)] if n else None,
                    run,
                    f"{position_id}: quantity {now:,.6g}, reduction to {required:,.6g} required since "
                    f"{sessions[int(requested)] if n else '?'} not executed",
                    recommendations=[f"execute the required reduction of {position_id} to {required:,.6g}"],
                )
            )
    gap = rules.rules.get("expired_gap_action_in_breach")
    if gap is not None:
        for event_id, symbol, loss_after, budget, expires in inputs.expired_gap_actions:
            out.append(
                Violation(
                    "expired_gap_action_in_breach",
                    gap.severity,
                    f"{event_id} ({symbol})",
                    float(loss_after),
                    float(budget),
                    expires,
                    1,
                    f"gap-risk action for {event_id} expired at {expires} with estimated loss {loss_after:,.0f} "
                    f"above the budget {budget:,.0f}",
                )
            )
    dq = rules.rules.get("blocking_check_failed")
    if dq is not None:
        for asset, check, rows in inputs.failed_checks:
            out.append(
                Violation(
                    "blocking_check_failed",
                    dq.severity,
                    f"{asset}.{check}",
                    float(rows),
                    0.0,
                    sessions[-1] if n else None,
                    1,
                    f"blocking check {asset}.{check} failed ({rows} rows quarantined)",
                )
            )
    return out


def stress_recommendations(
    scenarios: Sequence[tuple[str, str, float, float, str | None, float | None]], high_threshold: float, nav: float
) -> list[str]:
    """What brings each HIGH or CRITICAL stress loss back above the HIGH threshold (``pnl_pct_nav > high``).

    ``scenarios``: (scenario_id, risk_level, pnl, pnl_pct_nav, worst_symbol, worst_symbol_pnl). The book-wide cut
    is first order (P&L scaled with the book): ``1 - high / pnl_pct_nav``; the worst name alone suffices when its
    loss covers the excess ``high x nav - pnl``.
    """
    out = []
    for scenario_id, level, pnl, pct, worst, worst_pnl in scenarios:
        if level not in ("HIGH", "CRITICAL") or not pct < 0 or not pct <= high_threshold:
            continue
        cut = 1.0 - high_threshold / pct
        text = (
            f"stress {scenario_id} ({level}): loss {-pnl:,.0f} = {-pct:.1%} of NAV; cut the book by at least "
            f"{cut:.1%} to bring it above the HIGH level ({-high_threshold:.0%} of NAV, first order)"
        )
        excess = high_threshold * nav - pnl
        if worst and worst_pnl is not None and worst_pnl < 0 and -worst_pnl >= excess:
            text += f", or reduce {worst} (loses {-worst_pnl:,.0f} of it; {excess:,.0f} must go)"
        out.append(text)
    return out
