"""The compliance group: manual controls (external), the daily compliance report per book, and alerts."""

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from risk_pipeline import alerts as alerting
from risk_pipeline.contracts import TABLES, table
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    TableWrite,
    compliance_rules,
    fail_closed,
    markdown_table,
    publish,
    table_definition_metadata,
)
from risk_pipeline.defs.compliance.report import OPTIONAL_TABLES, build_report, render_html, report_plots
from risk_pipeline.paths import COMPLIANCE_RULES_FILE
from risk_pipeline.queries import audit_row
from risk_pipeline.resources import AlertsResource, ExportsResource, WarehouseResource, alerts_resource_from_env

GROUP = "compliance"
ACTOR = "risk_pipeline.compliance"

manual_controls = dg.AssetSpec(
    "manual_controls",
    group_name=GROUP,
    owners=OWNERS,
    kinds={"sql"},
    description=(
        "Append-only manual controls (halt, resume, emergency stop) written by `risk-pipeline halt/resume/"
        "emergency-stop` and the service API, outside Dagster runs; the trading state reads the halts in force."
    ),
    metadata=table_definition_metadata("manual_controls"),
)


#: Tables the alert rules may read at the session's valuation (the sizing and hedging ones where they exist).
ALERT_TABLES: tuple[str, ...] = (
    "limit_status",
    "trading_state",
    "gap_risk_actions",
    "compliance_reports",
    *(t for t in ("portfolio_heat", "hedge_recommendations") if t in TABLES),
)


class AlertSettings(dg.Config):
    """Alerts file of the run ("": RISK_PIPELINE_ALERTS_FILE, default data/alerts.yaml). Channel secrets come
    from the environment variables the file names, never from run config. Not a required resource, so code
    that builds its own resources needs no alert configuration."""

    alerts_file: str = ""


class ComplianceSettings(dg.Config):
    """Rules file and whether to render the HTML report with plots."""

    rules_file: str = str(COMPLIANCE_RULES_FILE)
    render_plots: bool = True


def cleanup_reports(wh: Any, session: dt.date, retention_days: int, root: Path, run_id: str) -> list[str]:
    """Remove report partitions (rows and HTML files) older than the retention; each removal audited."""
    cutoff = session - dt.timedelta(days=retention_days)
    old = wh.query(
        "SELECT DISTINCT report_date FROM risk.compliance_reports WHERE report_date < ? ORDER BY report_date", [cutoff]
    )
    removed: list[str] = []
    for day in old["report_date"]:
        day = pd.Timestamp(day).date()
        paths = wh.read("compliance_reports", {"report_date": day}, columns=["book", "report_path"])
        empty = pd.DataFrame(columns=table("compliance_reports").data_column_names)
        wh.write("compliance_reports", empty, run_id=run_id, partitions=[{"report_date": day}])
        files = []
        for p in paths["report_path"].dropna():
            path = Path(p)
            if path.is_file():
                path.unlink()
                files.append(str(path))
        folder = root / "reports" / day.isoformat()
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        at = pd.Timestamp.now(tz="UTC")
        row = audit_row(
            at,
            "*",
            "retention_cleanup",
            f"compliance_reports {day}",
            "removed",
            {"report_date": day.isoformat(), "rows": len(paths), "files": files, "retention_days": retention_days},
            ACTOR,
        )
        wh.append("audit_trail", pd.DataFrame([row]), run_id=run_id)
        removed.append(day.isoformat())
    return removed


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        "book_nav",
        "position_greeks",
        "portfolio_greeks",
        "var_results",
        "var_backtest_observations",
        "stress_grid",
        "stress_results",
        "limit_status",
        "trading_state",
        "required_reductions",
        "gap_risk_actions",
        "quarantine",
        "audit_trail",
        "manual_controls",
        *OPTIONAL_TABLES,
    ],
    kinds={"pandas", "html"},
    owners=OWNERS,
    metadata=table_definition_metadata("compliance_reports"),
    description=(
        "Daily compliance report per book: compliant / minor_violations / major_violations from "
        "data/compliance/rules.yaml, violations with value, threshold, duration and actions, and a standalone "
        "HTML report under exports/reports/. Removes report partitions past the retention (audited)."
    ),
)
@fail_closed
def compliance_reports(
    context: dg.AssetExecutionContext,
    config: ComplianceSettings,
    warehouse: WarehouseResource,
    exports: ExportsResource,
) -> Iterator[Any]:
    wh = warehouse.get()
    rules = compliance_rules(config.rules_file)
    sessions = [dt.date.fromisoformat(k) for k in context.partition_keys]
    rows, exists, timings = [], {}, []
    root = Path(exports.root)
    links: dict[str, str] = {}
    for session in sessions:
        books = wh.query("SELECT DISTINCT book FROM risk.book_nav WHERE as_of_date = ? ORDER BY book", [session])
        for book in books["book"]:
            began = time.perf_counter()
            report = build_report(wh, session, str(book), rules, exists)
            timings.append(time.perf_counter() - began)
            plots = report_plots(wh, report, exists) if config.render_plots else {}
            path = root / "reports" / session.isoformat() / f"{book}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".html.tmp")
            tmp.write_text(render_html(report, plots))
            tmp.replace(path)
            links[str(book)] = str(path.resolve())
            rows.append(report.row(rules.version, str(path.resolve())))
    frame = pd.DataFrame(rows, columns=table("compliance_reports").data_column_names)
    removed = cleanup_reports(wh, sessions[-1], rules.retention_days, root, context.run.run_id)
    summary = frame[["book", "status", "n_major", "n_minor"]] if len(frame) else frame
    metadata: dict[str, Any] = {
        "rules_version": rules.version,
        "statuses": dg.MetadataValue.md(markdown_table(summary, 50)),
        "report_build_ms_max": round(1000 * max(timings), 1) if timings else 0.0,
        "retention_removed": ", ".join(removed) or "none",
        **{f"report_{b}": dg.MetadataValue.path(p) for b, p in links.items()},
    }
    yield from publish(
        context,
        wh,
        [TableWrite("compliance_reports", frame, [{"report_date": s} for s in sessions])],
        metadata={"compliance_reports": metadata},
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["book_nav", *ALERT_TABLES],
    kinds={"pandas"},
    owners=OWNERS,
    metadata=table_definition_metadata("alerts"),
    description=(
        "Alert rules of data/alerts.yaml over the session's latest valuation, de-duplicated against earlier "
        "alerts (once per cooldown, again on escalation and when cleared), delivered to the log, webhooks and "
        "email with retries; every attempt appended to the alerts table. A failed channel never fails the run."
    ),
)
@fail_closed
def alerts(context: dg.AssetExecutionContext, config: AlertSettings, warehouse: WarehouseResource) -> Any:
    wh = warehouse.get()
    channels = AlertsResource(config_file=config.alerts_file) if config.alerts_file else alerts_resource_from_env()
    alert_config = channels.config()
    session = dt.date.fromisoformat(context.partition_keys[-1])  # a range run alerts on its last session
    got = wh.query("SELECT MAX(as_of) AS t FROM risk.book_nav WHERE as_of_date = ?", [session])
    as_of = pd.Timestamp(got["t"].iloc[0]).tz_convert("UTC") if len(got) and got["t"].iloc[0] is not None else None
    tables: dict[str, pd.DataFrame] = {}
    if as_of is not None:
        for name in ALERT_TABLES:
            if name == "compliance_reports":
                tables[name] = wh.read(name, {"report_date": session})
            elif wh.table_exists(name):
                tables[name] = wh.read(name, {"as_of": as_of})
    report = alerting.evaluate_and_deliver(wh, alert_config, tables, run_id=context.run.run_id, as_of=as_of)
    rows = report.rows
    failed = report.failed
    for r in rows[(rows["channel"] == "log") & (rows["delivery_status"] == "delivered")].itertuples(index=False):
        context.log.warning(f"alert {r.subject} | {r.message}")
    for r in failed.itertuples(index=False):
        context.log.warning(f"alert channel {r.channel} failed after {r.attempts} attempts: {r.error}")
    shown = rows.drop_duplicates(["condition_key", "channel"], keep="last")
    return dg.MaterializeResult(
        metadata={
            "rows_appended": len(rows),
            "notifications": int(rows[["condition_key", "event"]].drop_duplicates().shape[0]) if len(rows) else 0,
            "failed_channels": ", ".join(sorted(set(failed["channel"]))) or "none",
            "skipped_channels": "; ".join(report.skipped_channels) or "none",
            "alerts": dg.MetadataValue.md(
                markdown_table(shown[["level", "alert_type", "subject", "channel", "delivery_status", "attempts"]], 30)
                if len(shown)
                else "(none)"
            ),
            "run_id": context.run.run_id,
        }
    )


ASSETS = [manual_controls, compliance_reports, alerts]
