"""Helpers every layer's assets share: table metadata, partition handling, publishing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from risk_pipeline.calendar import trading_day_partitions
from risk_pipeline.contracts import table
from risk_pipeline.quality import (
    SUITE_VERSION,
    QualitySettings,
    ValidationContext,
    rule_descriptions,
    validate,
)
from risk_pipeline.warehouse import Between, Warehouse

OWNERS = ["team:risk-engineering"]
PARTITIONS = trading_day_partitions()

_DAGSTER_TYPES = {
    "date": "date",
    "timestamp": "timestamp with time zone",
    "double": "float",
    "bigint": "int",
    "text": "string",
    "boolean": "bool",
    "json": "json",
}


def table_schema(name: str) -> dg.TableSchema:
    """The contract of a table as Dagster column metadata (shown in the UI's catalog)."""
    t = table(name)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                _DAGSTER_TYPES[c.type],
                description=c.description or None,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in t.all_columns
        ],
        constraints=dg.TableConstraints(other=[f"primary key ({', '.join(t.key)})"]),
    )


def table_definition_metadata(name: str) -> dict[str, Any]:
    t = table(name)
    return {
        "dagster/column_schema": table_schema(name),
        "dagster/table_name": f"risk.{t.name}",
        "contract_key": ", ".join(t.key),
        "write_replaces_by": ", ".join(t.partition_by) or "whole table",
    }


def partition_sessions(context: dg.AssetExecutionContext) -> list[dt.date]:
    """Sessions of the run's partition or partition range (every key is an XNYS session)."""
    return [dt.date.fromisoformat(k) for k in context.partition_keys]


def partition_label(sessions: Sequence[dt.date]) -> str:
    if not sessions:
        return "unpartitioned"
    if len(sessions) == 1:
        return sessions[0].isoformat()
    return f"{sessions[0].isoformat()}..{sessions[-1].isoformat()}"


def check_specs(name: str) -> list[dg.AssetCheckSpec]:
    """One blocking check per data-quality rule of the table."""
    return [
        dg.AssetCheckSpec(rule, asset=name, blocking=True, description=f"Great Expectations rule: {desc}")
        for rule, desc in rule_descriptions(name).items()
    ]


def markdown_table(frame: pd.DataFrame, limit: int = 10) -> str:
    if frame.empty:
        return "(no rows)"
    shown = frame.head(limit).astype(object).map(lambda v: "" if v is None or v != v else str(v))
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(v.replace("|", "/") for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def publish_raw(
    context: dg.AssetExecutionContext,
    *,
    name: str,
    raw: pd.DataFrame,
    warehouse: Warehouse,
    settings: QualitySettings,
    validation: ValidationContext,
    partitions: Sequence[Mapping[str, Any]] | None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """Validate a source frame; publish all rows if every rule passed, else quarantine and block.

    On failure the table is left as it was, the failing rows go to ``quarantine`` (keyed by run,
    asset and partition, so a retry replaces its own quarantine rows), every rule reports as a
    check result, and the step fails with a message naming file, row and rule, so every
    downstream asset of the run is skipped.
    """
    report = validate(name, raw, validation, settings)
    run_id = context.run.run_id
    check_results = []
    for r in report.results:
        meta: dict[str, Any] = {
            "rule": r.rule,
            "description": r.description,
            "failing_rows": r.n_failing,
            "suite": f"{name} v{SUITE_VERSION}",
        }
        if r.observed:
            meta["observed"] = r.observed
        if not r.passed:
            meta["sample_rows"] = dg.MetadataValue.md(markdown_table(report.sample(r)))
            meta["where"] = "; ".join(report.location(p) for p in r.failing_positions[:5]) or (
                ", ".join(report.raw.attrs.get("source_files", [])) or "table"
            )
        check_results.append(
            dg.AssetCheckResult(
                check_name=r.rule,
                asset_key=name,
                passed=r.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata=meta,
            )
        )
    if not report.passed:
        quarantine = report.quarantine_frame(name)
        warehouse.write(
            "quarantine",
            quarantine,
            run_id=run_id,
            partitions=[{"run_id": run_id, "asset": name, "partition_key": validation.partition_key}],
        )
        yield from check_results
        raise dg.Failure(
            description=report.message(),
            metadata={
                "quarantined_rows": len(quarantine),
                "failed_rules": ", ".join(r.rule for r in report.failed),
                "table_unchanged": f"risk.{name}",
            },
        )
    written = warehouse.write(name, report.typed, run_id=run_id, partitions=partitions)
    yield dg.MaterializeResult(
        asset_key=name,
        metadata={
            "dagster/row_count": written,
            "dagster/column_schema": table_schema(name),
            "dagster/table_name": f"risk.{name}",
            "warehouse": warehouse.describe(),
            "partition": validation.partition_key,
            "run_id": run_id,
            "preview": dg.MetadataValue.md(
                markdown_table(report.typed.drop(columns=["source_file", "source_row"], errors="ignore"), 5)
            ),
            **(extra_metadata or {}),
        },
        check_results=check_results,
    )


def atm_vol_matrix(wh: Warehouse, first: dt.date, last: dt.date, symbols: Sequence[str]) -> pd.DataFrame:
    """Closing constant-maturity ATM vols (sessions x symbols) from ``atm_vol_history``; NaN where not measured."""
    where: dict[str, Any] = {"as_of_date": Between(first, last), "symbol": list(symbols)}
    vols = wh.read("atm_vol_history", where, columns=["as_of_date", "symbol", "atm_vol"])
    wide = vols.pivot(index="as_of_date", columns="symbol", values="atm_vol").sort_index()
    return wide.reindex(columns=list(symbols))


def latest_as_of(wh: Warehouse, table: str, session: dt.date, before: bool = False) -> pd.Timestamp | None:
    """Latest ``as_of`` of a table for the session (or, with ``before``, for any earlier session)."""
    op = "<" if before else "="
    got = wh.query(f"SELECT MAX(as_of) AS t FROM risk.{table} WHERE as_of_date {op} ?", [session])
    value = got["t"].iloc[0] if len(got) else None
    return None if value is None or pd.isna(value) else pd.Timestamp(value).tz_convert("UTC")


def close_matrix(
    wh: Warehouse, session: dt.date, sessions_back: int, symbols: Sequence[str] | None = None
) -> pd.DataFrame:
    """Closes (sessions x symbols) covering at least ``sessions_back`` sessions ending at ``session``."""
    start = session - dt.timedelta(days=int((sessions_back + 1) * 7 / 5) + 30)
    where: dict[str, Any] = {"as_of_date": Between(start, session)}
    if symbols is not None:
        where["symbol"] = list(symbols)
    closes = wh.read("market_prices", where, columns=["as_of_date", "symbol", "close"])
    return closes.pivot(index="as_of_date", columns="symbol", values="close").sort_index()
