"""One book's compliance report from the warehouse: inputs, violations, actions, recommendations, HTML.

No Dagster here: the asset (``assets.py``) and the benchmark (``bench/bench_compliance_report.py``) call
``build_report``; ``render_html`` draws the plots (matplotlib, embedded as PNG) into a standalone file.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from risk_pipeline.contracts import TABLES
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
    navs = wh.query(
        "SELECT as_of_date, as_of, nav FROM risk.book_nav WHERE book = ? AND as_of_date <= ? "
        "ORDER BY as_of_date DESC, as_of DESC LIMIT ?",
        [book, session, 3 * rules.lookback_sessions],
    )
    navs["as_of"] = pd.to_datetime(navs["as_of"], utc=True)
    navs = navs.drop_duplicates("as_of_date").head(rules.lookback_sessions).iloc[::-1].reset_index(drop=True)
    if navs.empty or pd.Timestamp(navs["as_of_date"].iloc[-1]).date() != session:
        from risk_pipeline.errors import RiskDataError

        raise RiskDataError(f"compliance report {book} {session}: no book_nav for the session (value the book first)")
    as_ofs = list(navs["as_of"])
    as_of = as_ofs[-1]
    first = as_ofs[0]
    index = {t.value: i for i, t in enumerate(as_ofs)}
    n = len(as_ofs)

    def rows_of(sql: str, extra: list[Any] | None = None) -> pd.DataFrame:
        """Rows of the book between the first and last valuation, with ``pos`` = their session index."""
        got = wh.query(sql + " WHERE book = ? AND as_of BETWEEN ? AND ?", [*(extra or []), book, first, as_of])
        got["pos"] = [index.get(pd.Timestamp(t).value, -1) for t in got["as_of"]]
        return got[got["pos"] >= 0]

    def per_session(frame: pd.DataFrame, column: str) -> np.ndarray:
        out = np.full(n, np.nan)
        out[frame["pos"].to_numpy(int)] = frame[column].to_numpy(float)
        return out

    var = rows_of(
        "SELECT as_of, var FROM (SELECT as_of, book, var FROM risk.var_results WHERE method = 'historical' "
        "AND horizon_days = 1 AND confidence = 0.99) v"
    )
    # the largest delta-adjusted exposure per valuation is aggregated in the database (one row per session)
    largest = wh.query(
        "SELECT as_of, MAX(ABS(dollar_delta)) AS exposure FROM risk.position_greeks "
        "WHERE book = ? AND as_of BETWEEN ? AND ? GROUP BY as_of",
        [book, first, as_of],
    )
    largest["pos"] = [index.get(pd.Timestamp(t).value, -1) for t in largest["as_of"]]
    largest = largest[largest["pos"] >= 0]
    today = wh.query(
        "SELECT position_id, symbol, quantity, dollar_delta FROM risk.position_greeks WHERE book = ? AND as_of = ?",
        [book, as_of],
    )
    today["exposure"] = today["dollar_delta"].abs()
    largest_today = today.loc[today["exposure"].idxmax()] if len(today) else None
    limits = rows_of("SELECT as_of, limit_name, value, threshold, utilization, status FROM risk.limit_status")
    history: dict[str, list[str | None]] = {}
    for name, pos, status in zip(limits["limit_name"], limits["pos"], limits["status"], strict=True):
        history.setdefault(name, [None] * n)[pos] = status
    current = limits[limits["pos"] == n - 1]
    limit_histories = [
        LimitHistory(str(r.limit_name), history[r.limit_name], float(r.value), float(r.threshold))
        for r in current.sort_values("limit_name").itertuples(index=False)
    ]
    states = rows_of("SELECT as_of, state, reason FROM risk.trading_state")
    state_list: list[str | None] = [None] * n
    for pos, state in zip(states["pos"], states["state"], strict=True):
        state_list[pos] = state
    today_state = states[states["pos"] == n - 1]
    reductions = rows_of(
        "SELECT as_of, position_id, symbol, quantity_before, reduce_quantity, quantity_after, reason "
        "FROM risk.required_reductions"
    )
    unexecuted = []
    if n >= 2:
        before = reductions[reductions["pos"] == n - 2]
        qty_now = dict(zip(today["position_id"], today["quantity"], strict=True))
        for r in before.itertuples(index=False):
            now_q = float(qty_now.get(r.position_id, 0.0))
            if r.quantity_after is not None and abs(now_q) > abs(float(r.quantity_after)) + 1e-9:
                asked = reductions.loc[reductions["position_id"] == r.position_id, "pos"].to_numpy(int)
                flags = np.zeros(n - 1, dtype=bool)
                flags[asked[asked < n - 1]] = True
                unexecuted.append((str(r.position_id), now_q, float(r.quantity_after), n - 1 - trailing_run(flags)))
    gap_expired = []
    gap_today = pd.DataFrame()
    if _exists(wh, "gap_risk_actions", exists):
        previous_as_of = as_ofs[-2] if n >= 2 else as_of - pd.Timedelta(days=1)
        gap = wh.query(
            "SELECT event_id, symbol, loss_after, budget, expires_at FROM risk.gap_risk_actions "
            "WHERE book = ? AND expires_at > ? AND expires_at <= ? AND loss_after > budget",
            [book, previous_as_of, as_of],
        ).drop_duplicates(["event_id", "symbol"])
        gap_expired = [
            (str(r.event_id), str(r.symbol), float(r.loss_after), float(r.budget), str(r.expires_at))
            for r in gap.itertuples(index=False)
        ]
        gap_today = wh.query(
            "SELECT event_id, symbol, action, quantity, loss_before, loss_after, expires_at "
            "FROM risk.gap_risk_actions WHERE book = ? AND as_of = ?",
            [book, as_of],
        )
    failed = wh.query(
        "SELECT asset, check_name, COUNT(*) AS n FROM risk.quarantine WHERE partition_key = ? "
        "GROUP BY asset, check_name ORDER BY asset, check_name",
        [session.isoformat()],
    )
    inputs = ComplianceInputs(
        book=book,
        sessions=[pd.Timestamp(d).date() for d in navs["as_of_date"]],
        nav=navs["nav"].to_numpy(float),
        var_99=per_session(var, "var"),
        max_position_exposure=per_session(largest, "exposure"),
        largest_position=None if largest_today is None else str(largest_today["position_id"]),
        limits=limit_histories,
        states=state_list,
        state_reason=None if today_state.empty else str(today_state["reason"].iloc[0]),
        unexecuted=unexecuted,
        expired_gap_actions=gap_expired,
        failed_checks=[(str(r.asset), str(r.check_name), int(r.n)) for r in failed.itertuples(index=False)],
    )
    violations = evaluate(inputs, rules)
    nav = float(navs["nav"].iloc[-1])
    hedges = pd.DataFrame()
    if "hedge_recommendations" in OPTIONAL_TABLES and _exists(wh, "hedge_recommendations", exists):
        hedges = wh.query("SELECT * FROM risk.hedge_recommendations WHERE book = ? AND as_of = ?", [book, as_of])
    stressed = wh.query(
        "SELECT scenario_id, risk_level, pnl, pnl_pct_nav, worst_symbol, worst_symbol_pnl FROM risk.stress_results "
        "WHERE book = ? AND as_of = ? AND risk_level IN ('HIGH', 'CRITICAL') ORDER BY pnl",
        [book, as_of],
    )
    stress_recs = stress_recommendations(
        [tuple(r) for r in stressed.itertuples(index=False)], _stress_thresholds(str(SCENARIOS_FILE)).high, nav
    )
    reductions_today = reductions[reductions["pos"] == n - 1]
    actions = _actions(wh, book, first, as_of, reductions_today, gap_today, hedges)
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
        frames={"var": var, "limits": current, "navs": navs},
    )


def _actions(
    wh: Warehouse,
    book: str,
    first: pd.Timestamp,
    as_of: pd.Timestamp,
    reductions: pd.DataFrame,
    gap_today: pd.DataFrame,
    hedges: pd.DataFrame,
) -> list[dict[str, Any]]:
    """State changes, manual controls and breaches from the audit trail; today's reductions, gap-risk trades and
    hedges from their tables."""
    audit = wh.query(
        'SELECT "at", actor, decision_type, book, subject, decision, inputs FROM risk.audit_trail '
        "WHERE (book = ? OR book = '*') AND decision_type IN ('state_change', 'manual_control') "
        'AND "at" >= ? ORDER BY "at"',
        [book, first - pd.Timedelta(days=1)],
    )
    out: list[dict[str, Any]] = [
        {
            "type": r.decision_type,
            "at": pd.Timestamp(r.at).isoformat(),
            "actor": r.actor,
            "subject": r.subject,
            "decision": r.decision,
            "detail": json.loads(r.inputs).get("reason"),
        }
        for r in audit.itertuples(index=False)
        if pd.Timestamp(r.at) <= as_of or r.decision_type == "manual_control"
    ]
    out += [
        {
            "type": "required_reduction",
            "at": as_of.isoformat(),
            "position_id": r.position_id,
            "symbol": r.symbol,
            "reduce_quantity": float(r.reduce_quantity),
            "detail": r.reason,
        }
        for r in reductions.itertuples(index=False)
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
        for r in gap_today.itertuples(index=False)
        if r.action not in ("none",)
    ]
    for r in hedges.to_dict("records"):
        out.append({"type": "hedge", "at": as_of.isoformat(), **{k: r[k] for k in r if k in _HEDGE_FIELDS}})
    return out


_HEDGE_FIELDS = ("hedge_id", "symbol", "side", "quantity", "trigger", "urgency", "rationale")


def _recommend(
    violations: list[Violation],
    rules: ComplianceRules,
    nav: float,
    largest: pd.Series | None,
    reductions: pd.DataFrame,
    hedges: pd.DataFrame,
) -> list[str]:
    """What would clear each violation, attached to it and listed once for the book."""
    book_level: list[str] = []
    hedge_text = [
        f"hedge {r.get('side')} {r.get('quantity')} {r.get('symbol', '')} ({r.get('rationale', '')})".strip()
        for r in hedges.to_dict("records")
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
            lines = reductions[reductions["reason"].astype(str).str.contains(v.subject, regex=False)]
            if lines.empty:
                lines = reductions
            recs += [
                f"execute required reduction: {r.position_id} by {float(r.reduce_quantity):,.6g}"
                for r in lines.itertuples(index=False)
            ]
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
def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def report_plots(wh: Warehouse, report: BookReport, exists: dict[str, bool] | None = None) -> dict[str, str]:
    """Plot title -> ``<img>`` tag: Greeks by underlying, VaR history with exceptions, stress heat map,
    limit utilization, hedge effectiveness (where the table exists)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exists = {} if exists is None else exists
    out: dict[str, str] = {}
    book, as_of = report.book, report.as_of
    greeks = wh.read("portfolio_greeks", {"book": book, "as_of": as_of, "scope": "underlying"})
    if len(greeks):
        fig, axes = plt.subplots(1, 3, figsize=(11, 3))
        for ax, col in zip(axes, ("dollar_delta", "vega_per_vol_point", "theta_per_day"), strict=True):
            ax.bar(greeks["scope_value"], greeks[col], color="#4472c4")
            ax.set_title(col)
            ax.tick_params(axis="x", rotation=45)
        out["Greeks by underlying"] = _png(fig)
    obs = wh.query(
        "SELECT var_date, var, pnl, exception FROM risk.var_backtest_observations WHERE book IN (?, ?) "
        "AND method = 'historical' AND confidence = 0.99 ORDER BY var_date",
        [book, f"hypothetical:{book}"],
    )
    if len(obs):
        obs = obs.drop_duplicates("var_date", keep="first")
        fig, ax = plt.subplots(figsize=(11, 3))
        dates = pd.to_datetime(obs["var_date"])
        ax.plot(dates, -obs["var"].astype(float), color="#c00000", label="-VaR 99% 1d")
        ax.plot(dates, obs["pnl"].astype(float), color="#808080", lw=0.7, label="P&L")
        hit = obs["exception"].astype(bool).to_numpy()
        ax.scatter(dates[hit], obs["pnl"].astype(float)[hit], color="red", zorder=3, label=f"exceptions ({hit.sum()})")
        ax.legend(loc="lower left")
        ax.set_title("VaR history and backtest exceptions")
        out["VaR history"] = _png(fig)
    grid = wh.read("stress_grid", {"book": book, "as_of": as_of})
    if len(grid):
        pivot = grid.pivot(index="vol_shock", columns="spot_shock", values="pnl_pct_nav").sort_index(ascending=False)
        fig, ax = plt.subplots(figsize=(8, 4))
        limit = float(np.nanmax(np.abs(pivot.to_numpy()))) or 1.0
        im = ax.imshow(pivot.to_numpy(), cmap="RdYlGn", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(pivot.columns)), [f"{x:+.0%}" for x in pivot.columns], rotation=45)
        ax.set_yticks(range(len(pivot.index)), [f"{y:+.0%}" for y in pivot.index])
        ax.set_xlabel("spot shock")
        ax.set_ylabel("vol shock")
        fig.colorbar(im, ax=ax, label="P&L % NAV")
        out["Stress heat map"] = _png(fig)
    limits = report.frames["limits"].dropna(subset=["utilization"])
    if len(limits):
        fig, ax = plt.subplots(figsize=(9, 3))
        colors = {"OK": "#70ad47", "WARN": "#ffc000", "BREACH": "#c00000"}
        ax.barh(limits["limit_name"], limits["utilization"], color=[colors.get(s, "#999") for s in limits["status"]])
        ax.axvline(1.0, color="black", lw=1)
        ax.set_title("Limit utilization")
        out["Limit utilization"] = _png(fig)
    if "hedge_performance" in OPTIONAL_TABLES and _exists(wh, "hedge_performance", exists):
        perf = wh.read("hedge_performance", {"book": book, "as_of": as_of})
        if len(perf) and "effectiveness" in perf:
            fig, ax = plt.subplots(figsize=(8, 3))
            ax.bar(perf["position_id"].astype(str), perf["effectiveness"].astype(float), color="#4472c4")
            ax.set_title("Hedge effectiveness")
            out["Hedge effectiveness"] = _png(fig)
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
