"""One book's compliance report from the warehouse: inputs, violations, actions, recommendations, HTML.

No Dagster here: the asset (``assets.py``) and the benchmark (``bench/bench_compliance_report.py``) call
``build_report``; ``report_plots`` draws the plots as SVG text (no matplotlib figures), ``render_html`` embeds
them in a standalone file.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from risk_pipeline.contracts import TABLES
from risk_pipeline.defs.svg import Series, bar_chart_svg, line_chart_svg, stress_grid_heat_map_svg
from risk_pipeline.paths import SCENARIOS_FILE
from risk_pipeline.quant.compliance import (
    ComplianceInputs,
    ComplianceRules,
    LimitHistory,
    Violation,
    evaluate,
    status_of,
    stress_recommendations,
    trailing_run,
)
from risk_pipeline.quant.stress import load_scenarios
from risk_pipeline.warehouse import Warehouse

#: Tables of other layers read where they exist in this deployment (hedging, sizing).
OPTIONAL_TABLES: tuple[str, ...] = tuple(t for t in ("hedge_recommendations", "hedge_performance") if t in TABLES)


@dataclass
class BookReport:
    """The compliance_reports row of one book and what the HTML needs."""

    report_date: dt.date
    book: str
    as_of: pd.Timestamp
    status: str
    violations: list[Violation]
    actions: list[dict[str, Any]]
    recommendations: list[str]
    nav: float
    frames: dict[str, pd.DataFrame]

    def row(self, rules_version: str, report_path: str | None) -> dict[str, Any]:
        return {
            "report_date": self.report_date,
            "book": self.book,
            "as_of": self.as_of,
            "status": self.status,
            "n_minor": sum(v.severity == "minor" for v in self.violations),
            "n_major": sum(v.severity == "major" for v in self.violations),
            "violations": json.dumps([v.to_json() for v in self.violations], default=str),
            "actions": json.dumps(self.actions, default=str),
            "recommendations": json.dumps(self.recommendations),
            "rules_version": rules_version,
            "report_path": report_path,
        }


@functools.lru_cache(maxsize=4)
def _stress_thresholds(path: str) -> Any:
    """Risk-level thresholds of the stress scenario library (read once per process)."""
    return load_scenarios(path).thresholds


def _exists(wh: Warehouse, name: str, cache: dict[str, bool]) -> bool:
    if name not in cache:
        cache[name] = wh.table_exists(name)
    return cache[name]


def build_report(
    wh: Warehouse, session: dt.date, book: str, rules: ComplianceRules, exists: dict[str, bool] | None = None
) -> BookReport:
    """Read the book's tables over the look-back, evaluate the rules, list actions and recommendations."""
    exists = {} if exists is None else exists
    # plain tuples rather than DataFrames: building frames (arrow strings, tz-aware timestamps) was most of the time
    picked: list[tuple[Any, Any, Any]] = []
    seen: set[Any] = set()
    for d, t, v in wh.query_rows(
        "SELECT as_of_date, as_of, nav FROM risk.book_nav WHERE book = ? AND as_of_date <= ? "
        "ORDER BY as_of_date DESC, as_of DESC LIMIT ?",
        [book, session, 3 * rules.lookback_sessions],
    ):
        if d not in seen and len(picked) < rules.lookback_sessions:
            seen.add(d)
            picked.append((d, t, v))
    picked.reverse()
    if not picked or pd.Timestamp(picked[-1][0]).date() != session:
        from risk_pipeline.errors import RiskDataError

        raise RiskDataError(f"compliance report {book} {session}: no book_nav for the session (value the book first)")
    as_ofs = [_utc(t) for _, t, _ in picked]
    as_of = as_ofs[-1]
    first = as_ofs[0]
    n = len(as_ofs)
    nav_values = np.array([float(v) for _, _, v in picked])
    # everything else in one round trip (the per-query overhead dominated the report's time): a UNION ALL of one
    # branch per input with the columns (kind, t_us, ts_us, a..f text, u..x double); valuation times come back as
    # integer microseconds since the epoch (the same on DuckDB and PostgreSQL), matched to the look-back's
    # valuations without converting timestamps
    keys_us = np.array([t.value // 1000 for t in as_ofs], dtype=np.int64)
    previous_as_of = as_ofs[-2] if n >= 2 else as_of - pd.Timedelta(days=1)
    branches: list[tuple[str, list[Any]]] = []

    def branch(kind: str, columns: dict[str, str], sql_from: str, params: list[Any], t: str | None = "x.as_of") -> None:
        cols = [f"CAST({columns[c]} AS TEXT)" if c in columns else "CAST(NULL AS TEXT)" for c in "abcdef"]
        cols += [columns.get(c, "CAST(NULL AS DOUBLE PRECISION)") for c in "uvwx"]
        epoch = "CAST(EXTRACT(EPOCH FROM {}) * 1000000 AS BIGINT)"
        times = [
            epoch.format(t) if t else "CAST(NULL AS BIGINT)",
            epoch.format(columns["ts"]) if "ts" in columns else "CAST(NULL AS BIGINT)",
        ]
        branches.append((f"SELECT '{kind}', {', '.join(times + cols)} {sql_from}", params))

    window = [book, first, as_of]
    in_window = "WHERE x.book = ? AND x.as_of BETWEEN ? AND ?"
    branch(
        "var",
        {"u": "x.var"},
        f"FROM risk.var_results x {in_window} AND x.method = 'historical' AND x.horizon_days = 1 "
        "AND x.confidence = 0.99",
        window,
    )
    # the largest delta-adjusted exposure per valuation, aggregated in the database
    branch(
        "largest",
        {"u": "MAX(ABS(x.dollar_delta))"},
        f"FROM risk.position_greeks x {in_window} GROUP BY x.as_of",
        window,
    )
    limit_cols = {"a": "x.limit_name", "b": "x.status", "u": "x.value", "v": "x.threshold", "w": "x.utilization"}
    branch("limit", limit_cols, f"FROM risk.limit_status x {in_window}", window)
    branch("state", {"a": "x.state", "b": "x.reason"}, f"FROM risk.trading_state x {in_window}", window)
    reduction_cols = {"a": "x.position_id", "b": "x.symbol", "c": "x.reason", "u": "x.quantity_before"}
    reduction_cols |= {"v": "x.reduce_quantity", "w": "x.quantity_after"}
    branch("reduction", reduction_cols, f"FROM risk.required_reductions x {in_window}", window)
    # today's largest position, and today's quantity of each position asked to reduce at the previous valuation
    branch(
        "top",
        {"a": "x.position_id", "b": "x.symbol", "u": "x.quantity", "v": "ABS(x.dollar_delta)"},
        "FROM (SELECT position_id, symbol, quantity, dollar_delta FROM risk.position_greeks WHERE book = ? "
        "AND as_of = ? ORDER BY ABS(dollar_delta) DESC, position_id LIMIT 1) x",
        [book, as_of],
        t=None,
    )
    branch(
        "now",
        {"a": "x.position_id", "u": "x.quantity"},
        "FROM risk.position_greeks x WHERE x.book = ? AND x.as_of = ? AND x.position_id IN (SELECT r.position_id "
        "FROM risk.required_reductions r WHERE r.book = ? AND r.as_of = ?)",
        [book, as_of, book, previous_as_of],
        t=None,
    )
    if _exists(wh, "gap_risk_actions", exists):
        # today's actions, and those expiring since the previous valuation still above budget
        gap_cols = {"a": "x.event_id", "b": "x.symbol", "c": "x.action", "u": "x.quantity", "v": "x.loss_before"}
        gap_cols |= {"w": "x.loss_after", "x": "x.budget", "ts": "x.expires_at"}
        branch(
            "gap",
            gap_cols,
            "FROM risk.gap_risk_actions x WHERE x.book = ? AND (x.as_of = ? OR (x.expires_at > ? "
            "AND x.expires_at <= ? AND x.loss_after > x.budget))",
            [book, as_of, previous_as_of, as_of],
        )
    branch(
        "failed",
        {"a": "x.asset", "b": "x.check_name", "u": "COUNT(*)"},
        "FROM risk.quarantine x WHERE x.partition_key = ? GROUP BY x.asset, x.check_name",
        [session.isoformat()],
        t=None,
    )
    stress_cols = {"a": "x.scenario_id", "b": "x.risk_level", "c": "x.worst_symbol", "u": "x.pnl"}
    stress_cols |= {"v": "x.pnl_pct_nav", "w": "x.worst_symbol_pnl"}
    if "recommendations" in TABLES["stress_results"].column_names:
        stress_cols["d"] = "x.recommendations"
    branch(
        "stress",
        stress_cols,
        "FROM risk.stress_results x WHERE x.book = ? AND x.as_of = ? AND x.risk_level IN ('HIGH', 'CRITICAL')",
        [book, as_of],
        t=None,
    )
    if "hedge_recommendations" in OPTIONAL_TABLES and _exists(wh, "hedge_recommendations", exists):
        hedge_cols = {"a": "x.hedge_id", "b": "x.symbol", "c": "x.side", "d": "x.trigger", "e": "x.urgency"}
        hedge_cols |= {"f": "x.rationale", "u": "x.quantity"}
        branch("hedge", hedge_cols, "FROM risk.hedge_recommendations x WHERE x.book = ? AND x.as_of = ?", [book, as_of])
    audit_cols = {"a": "x.decision_type", "b": "x.actor", "c": "x.subject", "d": "x.decision", "e": "x.inputs"}
    branch(
        "audit",
        {**audit_cols, "ts": 'x."at"'},
        "FROM risk.audit_trail x WHERE (x.book = ? OR x.book = '*') AND x.decision_type IN ('state_change', "
        """'manual_control') AND x."at" >= ?""",
        [book, first - pd.Timedelta(days=1)],
        t=None,
    )
    got = wh.query_rows(" UNION ALL ".join(sql for sql, _ in branches), [x for _, ps in branches for x in ps])
    rows: dict[str, list[tuple[Any, ...]]] = {k: [] for k in _KINDS}
    t_us = np.array([-1 if r[1] is None else r[1] for r in got], dtype=np.int64)
    at = np.minimum(np.searchsorted(keys_us, t_us), n - 1)
    for p, r, hit in zip(at, got, keys_us[at] == t_us, strict=True):
        # (pos or -1, ts_us, a, b, c, d, e, f, u, v, w, x); gap-risk actions decided at any earlier valuation count
        if r[1] is None or hit or r[0] == "gap":
            rows[r[0]].append((int(p) if hit else -1, *r[2:]))

    def per_session(kind: str) -> np.ndarray:
        out = np.full(n, np.nan)
        for r in rows[kind]:
            out[r[0]] = np.nan if r[8] is None else float(r[8])
        return out

    largest_today: dict[str, Any] | None = None
    for r in rows["top"]:
        largest_today = {"position_id": r[2], "symbol": r[3], "quantity": float(r[8]), "exposure": float(r[9])}
    history: dict[str, list[str | None]] = {}
    for r in rows["limit"]:
        history.setdefault(r[2], [None] * n)[r[0]] = r[3]
    # today's limits: (limit_name, value, threshold, utilization, status)
    current = sorted(((r[2], r[8], r[9], r[10], r[3]) for r in rows["limit"] if r[0] == n - 1), key=lambda r: r[0])
    limit_histories = [
        LimitHistory(str(name), history[name], float(value), float(threshold))
        for name, value, threshold, _, _ in current
    ]
    current_frame = pd.DataFrame(current, columns=["limit_name", "value", "threshold", "utilization", "status"])
    state_list: list[str | None] = [None] * n
    state_reason = None
    for r in rows["state"]:
        state_list[r[0]] = r[2]
        if r[0] == n - 1:
            state_reason = str(r[3])
    # _Reduction fields: (pos, position_id, symbol, quantity_before, reduce_quantity, quantity_after, reason)
    reduction_rows = [(r[0], r[2], r[3], r[8], r[9], r[10], r[4]) for r in rows["reduction"]]
    asked: dict[str, list[int]] = {}  # sessions in which each position was asked to reduce
    for r in reduction_rows:
        asked.setdefault(r[1], []).append(r[0])
    unexecuted = []
    if n >= 2:
        qty_now = {r[2]: r[8] for r in rows["now"]}
        for r in (_Reduction(*r) for r in reduction_rows if r[0] == n - 2):
            now_q = float(qty_now.get(r.position_id, 0.0))
            if r.quantity_after is not None and abs(now_q) > abs(float(r.quantity_after)) + 1e-9:
                flags = np.zeros(n - 1, dtype=bool)
                flags[[p for p in asked[r.position_id] if p < n - 1]] = True
                unexecuted.append((str(r.position_id), now_q, float(r.quantity_after), n - 1 - trailing_run(flags)))
    gap_expired = []
    gap_today: list[_GapAction] = []
    expired: dict[tuple[Any, Any], tuple[Any, ...]] = {}
    for r in rows["gap"]:
        expires = None if r[1] is None else pd.Timestamp(r[1], unit="us", tz="UTC")
        if r[0] == n - 1:
            gap_today.append(_GapAction(r[2], r[3], r[4], r[8], r[9], r[10], expires))
        loss_after, budget = r[10], r[11]
        if None not in (loss_after, budget, expires) and loss_after > budget and previous_as_of < expires <= as_of:
            expired.setdefault((r[2], r[3]), (float(loss_after), float(budget), str(expires)))
    gap_expired = [(str(e), str(s), *x) for (e, s), x in expired.items()]
    failed = sorted((str(r[2]), str(r[3]), int(r[8])) for r in rows["failed"])
    inputs = ComplianceInputs(
        book=book,
        sessions=[pd.Timestamp(d).date() for d, _, _ in picked],
        nav=nav_values,
        var_99=per_session("var"),
        max_position_exposure=per_session("largest"),
        largest_position=None if largest_today is None else str(largest_today["position_id"]),
        limits=limit_histories,
        states=state_list,
        state_reason=state_reason,
        unexecuted=unexecuted,
        expired_gap_actions=gap_expired,
        failed_checks=failed,
    )
    violations = evaluate(inputs, rules)
    nav = float(nav_values[-1])
    hedges = [dict(zip(_HEDGE_FIELDS, (r[2], r[3], r[4], r[8], r[5], r[6], r[7]), strict=True)) for r in rows["hedge"]]
    stress_recs = _stress_recommendations(rows["stress"], nav)
    reductions_today = [_Reduction(*r) for r in reduction_rows if r[0] == n - 1]
    actions = _actions(rows["audit"], as_of, reductions_today, gap_today, hedges)
    recommendations = _recommend(violations, rules, nav, largest_today, reductions_today, hedges)
    hedge_lines = [r for r in recommendations if r.startswith("hedge ")] if stress_recs else []
    recommendations = list(dict.fromkeys([*recommendations, *stress_recs, *hedge_lines]))
    return BookReport(
        report_date=session,
        book=book,
        as_of=as_of,
        status=status_of(violations),
        violations=violations,
        actions=actions,
        recommendations=recommendations,
        nav=nav,
        frames={"limits": current_frame},
    )


def _utc(value: Any) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


class _Reduction(NamedTuple):
    """A required_reductions row with its session index in the look-back."""

    pos: int
    position_id: str
    symbol: str
    quantity_before: float | None
    reduce_quantity: float
    quantity_after: float | None
    reason: str


class _GapAction(NamedTuple):
    """A gap_risk_actions row of the valuation."""

    event_id: str
    symbol: str
    action: str
    quantity: float | None
    loss_before: float | None
    loss_after: float | None
    expires_at: Any


def _stress_recommendations(stressed: list[tuple[Any, ...]], nav: float) -> list[str]:
    """The recommendations stored on the book's HIGH and CRITICAL stress_results rows (worst loss first, texts of
    ``quant.stress_actions``); for rows stored without them, the cut of ``quant.compliance.stress_recommendations``.
    ``stressed``: union rows (pos, ts_us, scenario_id, risk_level, worst_symbol, recommendations, e, f, pnl,
    pnl_pct_nav, worst_symbol_pnl, x)."""
    out: list[str] = []
    for r in sorted(stressed, key=lambda r: float(r[8])):
        texts = json.loads(r[5]) if r[5] else None
        if texts:
            out += [f"stress {r[2]} ({r[3]}): {t['text']}" for t in texts]
        else:
            row = (r[2], r[3], float(r[8]), float(r[9]), r[4], None if r[10] is None else float(r[10]))
            out += stress_recommendations([row], _stress_thresholds(str(SCENARIOS_FILE)).high, nav)
    return out


def _actions(
    audit: list[tuple[Any, ...]],
    as_of: pd.Timestamp,
    reductions: list[_Reduction],
    gap_today: list[_GapAction],
    hedges: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """State changes and manual controls from the audit trail (``audit``: union rows, pos, at as epoch microseconds,
    decision_type, actor, subject, decision, inputs); today's reductions, gap-risk trades and hedges."""
    out: list[dict[str, Any]] = []
    for _, at_us, kind, actor, subject, decision, raw, *_ in sorted(audit, key=lambda r: r[1]):
        t = pd.Timestamp(at_us, unit="us", tz="UTC")
        if t <= as_of or kind == "manual_control":
            detail = json.loads(raw).get("reason")
            out.append(
                {
                    "type": kind,
                    "at": t.isoformat(),
                    "actor": actor,
                    "subject": subject,
                    "decision": decision,
                    "detail": detail,
                }
            )
    out += [
        {
            "type": "required_reduction",
            "at": as_of.isoformat(),
            "position_id": r.position_id,
            "symbol": r.symbol,
            "reduce_quantity": float(r.reduce_quantity),
            "detail": r.reason,
        }
        for r in reductions
    ]
    out += [
        {
            "type": "gap_risk",
            "at": as_of.isoformat(),
            "event_id": r.event_id,
            "symbol": r.symbol,
            "action": r.action,
            "quantity": None if r.quantity is None or r.quantity != r.quantity else float(r.quantity),
            "detail": f"event-day loss {r.loss_before} -> {r.loss_after} until {r.expires_at}",
        }
        for r in gap_today
        if r.action not in ("none",)
    ]
    for r in hedges:
        out.append({"type": "hedge", "at": as_of.isoformat(), **{k: r[k] for k in r if k in _HEDGE_FIELDS}})
    return out


_HEDGE_FIELDS = ("hedge_id", "symbol", "side", "quantity", "trigger", "urgency", "rationale")
#: Branches of the report's one query (see build_report).
_KINDS = ("var", "largest", "limit", "state", "reduction", "top", "now", "gap", "failed", "stress", "hedge", "audit")


def _recommend(
    violations: list[Violation],
    rules: ComplianceRules,
    nav: float,
    largest: dict[str, Any] | None,
    reductions: list[_Reduction],
    hedges: list[dict[str, Any]],
) -> list[str]:
    """What would clear each violation, attached to it and listed once for the book."""
    book_level: list[str] = []
    hedge_text = [
        f"hedge {r.get('side')} {r.get('quantity')} {r.get('symbol', '')} ({r.get('rationale', '')})".strip()
        for r in hedges
    ]
    for v in violations:
        recs = list(v.recommendations)
        if v.rule == "position_pct_nav" and largest is not None and v.threshold:
            keep = v.threshold * nav / float(largest["exposure"])
            cut = float(largest["quantity"]) * (1.0 - keep)
            recs.append(
                f"reduce {largest['position_id']} by {abs(cut):,.0f} (of {abs(float(largest['quantity'])):,.0f}) to "
                f"bring it to {v.threshold:.0%} of NAV"
            )
        elif v.rule == "var_pct_nav" and v.value is not None and v.threshold:
            recs.append(f"cut 99% 1-day VaR by {(v.value - v.threshold) * nav:,.0f} to {v.threshold:.1%} of NAV")
            recs += hedge_text
        elif v.rule == "limit_breach":
            lines = [r for r in reductions if v.subject in str(r.reason)] or reductions
            recs += [f"execute required reduction: {r.position_id} by {float(r.reduce_quantity):,.6g}" for r in lines]
            recs += hedge_text
            if not recs:
                recs.append(f"bring {v.subject} under its threshold {v.threshold:,.6g}")
        elif v.rule == "warn_persistent":
            recs.append(f"review {v.subject}: at its warning level for {v.duration_sessions} sessions")
        elif v.rule == "trading_halted":
            recs.append("resolve the halt's cause, then resume (risk-pipeline resume) or let the state recover")
        elif v.rule == "blocking_check_failed":
            recs.append(f"fix the quarantined rows of {v.subject} and re-run the session")
        elif v.rule == "expired_gap_action_in_breach":
            recs.append(f"review the event exposure of {v.subject}: loss after actions above budget at expiry")
        v.recommendations[:] = list(dict.fromkeys(recs))
        book_level += v.recommendations
    return list(dict.fromkeys(book_level))


# ---------------------------------------------------------------------- HTML
def _img(svg: str) -> str:
    """An SVG document as an ``<img>`` tag with the image inline (base64 data URL)."""
    return f'<img alt="plot" src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}">'


def _date_label(days: float) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=round(days))).isoformat()


def report_plots(wh: Warehouse, report: BookReport, exists: dict[str, bool] | None = None) -> dict[str, str]:
    """Plot title -> ``<img>`` tag (SVG, drawn as text without matplotlib): Greeks by underlying, VaR history
    with exceptions, stress heat map, limit utilization, hedge effectiveness (where the table exists)."""
    exists = {} if exists is None else exists
    out: dict[str, str] = {}
    book, as_of = report.book, report.as_of
    greeks = wh.read("portfolio_greeks", {"book": book, "as_of": as_of, "scope": "underlying"})
    if len(greeks):
        names = [str(x) for x in greeks["scope_value"]]
        out["Greeks by underlying"] = _img(
            bar_chart_svg(
                [
                    (col, names, greeks[col].to_numpy(float), ["#4472c4"] * len(names))
                    for col in ("dollar_delta", "vega_per_vol_point", "theta_per_day")
                ]
            )
        )
    obs = wh.query(
        "SELECT var_date, var, pnl, exception FROM risk.var_backtest_observations WHERE book IN (?, ?) "
        "AND method = 'historical' AND confidence = 0.99 ORDER BY var_date",
        [book, f"hypothetical:{book}"],
    )
    if len(obs):
        obs = obs.drop_duplicates("var_date", keep="first")
        days = ((pd.to_datetime(obs["var_date"]) - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)).to_numpy(float)
        pnl = obs["pnl"].astype(float).to_numpy()
        hit = obs["exception"].astype(bool).to_numpy()
        empty = np.empty(0)
        series = [
            Series("-VaR 99% 1d", days, -obs["var"].astype(float).to_numpy(), empty, empty),
            Series("P&L", days, pnl, empty, empty),
            Series(f"exceptions ({hit.sum()})", empty, empty, days[hit], pnl[hit]),
        ]
        out["VaR history"] = _img(
            line_chart_svg(
                series,
                title="VaR history and backtest exceptions",
                x_label="date",
                y_label="USD",
                width=880,
                height=260,
                x_format=_date_label,
            )
        )
    grid = wh.read("stress_grid", {"book": book, "as_of": as_of})
    if len(grid):
        pivot = grid.pivot(index="vol_shock", columns="spot_shock", values="pnl_pct_nav").sort_index(ascending=False)
        out["Stress heat map"] = _img(stress_grid_heat_map_svg(pivot, x_label="spot shock", y_label="vol shock"))
    limits = report.frames["limits"].dropna(subset=["utilization"])
    if len(limits):
        colours = {"OK": "#70ad47", "WARN": "#ffc000", "BREACH": "#c00000"}
        out["Limit utilization"] = _img(
            bar_chart_svg(
                [
                    (
                        "Limit utilization",
                        [str(x) for x in limits["limit_name"]],
                        limits["utilization"].to_numpy(float),
                        [colours.get(s, "#999") for s in limits["status"]],
                    )
                ],
                horizontal=True,
                reference=1.0,
                panel_width=720,
                height=int(60 + 18 * len(limits)),
            )
        )
    if "hedge_performance" in OPTIONAL_TABLES and _exists(wh, "hedge_performance", exists):
        perf = wh.read("hedge_performance", {"book": book, "as_of": as_of})
        if len(perf) and "effectiveness" in perf:
            names = [str(x) for x in perf["position_id"]]
            out["Hedge effectiveness"] = _img(
                bar_chart_svg(
                    [("Hedge effectiveness", names, perf["effectiveness"].to_numpy(float), ["#4472c4"] * len(names))],
                    panel_width=640,
                )
            )
    return out


def render_html(report: BookReport, plots: dict[str, str]) -> str:
    """A standalone HTML page: status, violations, actions, recommendations and the plots."""
    e = html.escape
    color = {"compliant": "#70ad47", "minor_violations": "#ffc000", "major_violations": "#c00000"}[report.status]
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{e(str(x))}</td>"
            for x in (
                v.rule,
                v.severity,
                v.subject,
                "" if v.value is None else f"{v.value:,.6g}",
                "" if v.threshold is None else f"{v.threshold:,.6g}",
                v.since,
                v.duration_sessions,
                "; ".join(v.recommendations),
            )
        )
        + "</tr>"
        for v in report.violations
    )
    actions = "".join(
        f"<li>{e(str(a.get('at', '')))} <b>{e(str(a['type']))}</b> "
        f"{e(', '.join(f'{k}={v}' for k, v in a.items() if k not in ('type', 'at')))}</li>"
        for a in report.actions
    )
    recs = "".join(f"<li>{e(r)}</li>" for r in report.recommendations)
    figures = "".join(f"<h2>{e(t)}</h2>{img}" for t, img in plots.items())
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>Compliance report {e(report.book)} {report.report_date}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}</style></head><body>"
        f"<h1>Compliance report: {e(report.book)}, {report.report_date}</h1>"
        f"<p>Valuation {e(report.as_of.isoformat())}; NAV {report.nav:,.2f}</p>"
        f"<p style='font-size:20px'>Status: <b style='color:{color}'>{e(report.status)}</b></p>"
        "<h2>Violations</h2><table><tr><th>rule</th><th>severity</th><th>subject</th><th>value</th>"
        "<th>threshold</th><th>since</th><th>sessions</th><th>recommendations</th></tr>"
        f"{rows or '<tr><td colspan=8>none</td></tr>'}</table>"
        f"<h2>Actions taken</h2><ul>{actions or '<li>none</li>'}</ul>"
        f"<h2>Recommendations</h2><ul>{recs or '<li>none</li>'}</ul>"
        f"{figures}<p>Signed: ____________________ (risk officer)</p></body></html>"
    )
