"""Helpers every layer's assets share: table metadata, partition handling, publishing."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import graphlib
import inspect
import multiprocessing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd

from risk_pipeline.calendar import trading_day_partitions
from risk_pipeline.contracts import table
from risk_pipeline.dagster_storage import resolve_planned_check_partitions
from risk_pipeline.errors import RiskDataError
from risk_pipeline.quality import (
    SUITE_VERSION,
    QualitySettings,
    ValidationContext,
    rule_descriptions,
    validate,
)
from risk_pipeline.warehouse import Warehouse

OWNERS = ["team:risk-engineering"]
PARTITIONS = trading_day_partitions()
#: The previous session's partition of an asset (a step that builds on yesterday's rows declares it).
PREVIOUS_SESSION = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)
#: The previous and the current session's partitions.
PREVIOUS_AND_CURRENT_SESSION = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=0)

_DAGSTER_TYPES = {
    "date": "date",
    "timestamp": "timestamp with time zone",
    "double": "float",
    "bigint": "int",
    "text": "string",
    "boolean": "bool",
    "json": "json",
}


def map_in_processes(
    fn: Callable[[list[Any]], list[Any]], jobs: list[Any], workers: int, *, min_jobs: int = 2, start: str | None = None
) -> list[Any]:
    """``fn`` (one result per job of a chunk) over ``jobs`` split into ``workers`` interleaved chunks, each in a
    worker process; in this process when ``workers <= 1`` or there are fewer than ``min_jobs`` jobs. Results come
    back in job order. ``start`` is the multiprocessing start method (``"spawn"`` where numba's OpenMP threads
    may already run in this process, since forking such a process aborts the child); None: the default."""
    if workers <= 1 or len(jobs) < min_jobs:
        return fn(jobs)
    context = multiprocessing.get_context(start) if start else None
    out: list[Any] = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for i, part in enumerate(pool.map(fn, [jobs[i::workers] for i in range(workers)])):
            out[i::workers] = part
    return out


def compliance_rules(path: str) -> Any:
    """The validated compliance rules file; an invalid file fails the step closed (RiskDataError) naming it."""
    from risk_pipeline.quant.compliance import RulesError, load_rules

    try:
        return load_rules(path)
    except RulesError as exc:
        raise RiskDataError(str(exc)) from exc


def fail_closed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate an asset body: a ``RiskDataError`` from the Dagster-free layers becomes a ``dagster.Failure``.

    Works for plain and generator bodies and keeps the signature Dagster reads (context, config, resources).
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except RiskDataError as exc:
                raise dg.Failure(description=str(exc)) from exc

        return generator

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RiskDataError as exc:
            raise dg.Failure(description=str(exc)) from exc

    return plain


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


def session_check_spec(name: str, **kwargs: Any) -> dg.AssetCheckSpec:
    """``dg.AssetCheckSpec`` partitioned by session like the assets, so each result names its partition.

    With an unpartitioned spec on a partitioned asset the UI shows "Partition —" and Dagster records a
    planned evaluation per partition that the (unpartitioned) result never resolves: a phantom row.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # partitioned checks are a preview in Dagster 1.13
        return dg.AssetCheckSpec(name, partitions_def=PARTITIONS, **kwargs)


def check_specs(name: str) -> list[dg.AssetCheckSpec]:
    """One blocking check per data-quality rule of the table."""
    return [
        session_check_spec(rule, asset=name, blocking=True, description=f"Great Expectations rule: {desc}")
        for rule, desc in rule_descriptions(name).items()
    ]


#: Longest session range whose check results are recorded once per session (see ``check_events``).
MAX_SESSIONS_PER_CHECK_FANOUT = 31


def check_events(
    context: dg.AssetExecutionContext, results: Sequence[dg.AssetCheckResult]
) -> Iterator[dg.AssetCheckResult | dg.Output | dg.AssetCheckEvaluation]:
    """The events that report ``results``, one evaluation per partition of the run.

    A single-session run reports each result as is (Dagster stamps the session on it). A run over a
    session range (backfills, single-run policy) would otherwise report one result without a partition
    beside a planned evaluation per session that never resolves; here the check's output is emitted once
    and the same verdict is recorded for every session of the range. Ranges longer than
    ``MAX_SESSIONS_PER_CHECK_FANOUT`` (a price-history load of hundreds of sessions) report one result per
    check, and its verdict is then copied onto the planned row of every session in one statement per check
    (``resolve_planned_check_partitions``): one stored evaluation per session and check would slow such a
    run by minutes.
    """
    if not context.has_partition_key_range or context.has_partition_key:
        yield from results
        return
    if len(context.partition_keys) > MAX_SESSIONS_PER_CHECK_FANOUT:
        yield from results  # each is stored before the generator resumes
        default_asset = next(iter(context.assets_def.keys))
        keys = [dg.AssetCheckKey(r.asset_key or default_asset, r.check_name or "") for r in results]
        resolve_planned_check_partitions(context.instance, context.run.run_id, keys)
        return
    keys = context.partition_keys
    outputs = {spec.key: name for name, spec in context.assets_def.check_specs_by_output_name.items()}
    for result in results:
        asset_key = result.asset_key or next(iter(context.assets_def.keys))
        check_key = dg.AssetCheckKey(asset_key, result.check_name or "")
        spec = context.assets_def.get_spec_for_check_key(check_key)
        if spec.partitions_def is None or check_key not in outputs or check_key not in context.assets_def.check_keys:
            yield result
            continue
        yield dg.Output(None, output_name=outputs[check_key])
        for key in keys:
            yield dg.AssetCheckEvaluation(
                asset_key=asset_key,
                check_name=check_key.name,
                passed=result.passed,
                metadata={**result.metadata, "evaluated_over": f"{keys[0]}..{keys[-1]}"},
                severity=result.severity,
                description=result.description,
                blocking=spec.blocking,
                partition=key,
            )


def markdown_table(frame: pd.DataFrame, limit: int = 10) -> str:
    if frame.empty:
        return "(no rows)"
    shown = frame.head(limit).astype(object).map(lambda v: "" if v is None or v != v else str(v))
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = ["| " + " | ".join(v.replace("|", "/") for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def publish_source_sessions(
    context: dg.AssetExecutionContext,
    name: str,
    read: Callable[[dt.date, dt.date], pd.DataFrame],
    warehouse: Warehouse,
    settings: QualitySettings,
    source_kind: str,
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """``publish_raw`` of an optional per-session source table: ``read(first, last)`` over the run's sessions (a
    source error becomes an unreadable-input row), one partition per session."""
    from risk_pipeline.quality import error_frame
    from risk_pipeline.sources.base import SourceError

    sessions = partition_sessions(context)
    try:
        raw = read(sessions[0], sessions[-1])
    except SourceError as exc:
        raw = error_frame(exc.file, str(exc))
    yield from publish_raw(
        context,
        name=name,
        raw=raw,
        warehouse=warehouse,
        settings=settings,
        validation=ValidationContext(partition_label(sessions), tuple(sessions)),
        partitions=[{"as_of_date": s} for s in sessions],
        extra_metadata={"source": source_kind},
    )


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

    ``partitions`` are the partitions the write replaces (None: those present in the rows). A session
    without any input is never among them: under ``missing_session_policy="keep"`` it is left as
    stored and listed in the ``missing_sessions`` metadata (otherwise the row-count rule blocks).
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
            meta["where"] = "; ".join(report.locations(r, limit=5)) or (
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
        write_quarantine(context, warehouse, quarantine, asset=name, partition_key=validation.partition_key)
        yield from check_events(context, check_results)
        raise dg.Failure(
            description=report.message(),
            metadata={
                "quarantined_rows": len(quarantine),
                "failed_rules": ", ".join(r.rule for r in report.failed),
                "table_unchanged": f"risk.{name}",
            },
        )
    partitions, session_metadata = _without_missing_sessions(partitions, report.missing_sessions)
    written = warehouse.write(name, report.typed, run_id=run_id, partitions=partitions)
    # Dagster stores the metadata once per session of the range; the column schema (the definition's, which the
    # catalog shows) is more than half of each event's serialization, so a long range leaves it out
    schema = (
        {}
        if len(validation.sessions) > MAX_SESSIONS_PER_CHECK_FANOUT
        else {"dagster/column_schema": table_schema(name)}
    )
    yield dg.MaterializeResult(
        asset_key=name,
        metadata={
            **session_metadata,
            "dagster/row_count": written,
            **schema,
            "dagster/table_name": f"risk.{name}",
            "warehouse": warehouse.describe(),
            "partition": validation.partition_key,
            "run_id": run_id,
            "preview": dg.MetadataValue.md(
                markdown_table(report.typed.drop(columns=["source_file", "source_row"], errors="ignore"), 5)
            ),
            **(extra_metadata or {}),
        },
    )
    yield from check_events(context, check_results)


def _without_missing_sessions(
    partitions: Sequence[Mapping[str, Any]] | None, missing: Sequence[dt.date]
) -> tuple[Sequence[Mapping[str, Any]] | None, dict[str, Any]]:
    """The session partitions to replace, without the sessions that had no input, and metadata saying which.

    (Tables partitioned by snapshot, ``partitions=None``, replace only the snapshots present anyway.)
    """
    gone = set(missing)
    meta: dict[str, Any] = {"missing_sessions": ", ".join(d.isoformat() for d in sorted(gone))} if gone else {}
    if partitions is None or not all(set(p) == {"as_of_date"} for p in partitions):
        return partitions, meta
    kept = [p for p in partitions if p["as_of_date"] not in gone]
    return kept, {"sessions_written": len(kept), "missing_sessions": meta.get("missing_sessions", "")}


def write_quarantine(
    context: dg.AssetExecutionContext, wh: Warehouse, rows: pd.DataFrame, *, asset: str, partition_key: str
) -> int:
    """Replace this run's quarantine rows of ``asset`` and record a materialization of ``quarantine``.

    ``quarantine`` is one table fed by every validating step, so its materializations are reported
    by the step that wrote them (with the asset, rules and row count) rather than by a step of its own.
    """
    run_id = context.run.run_id
    owned = [{"run_id": run_id, "asset": asset, "partition_key": partition_key}]
    written = wh.write("quarantine", rows, run_id=run_id, partitions=owned)
    rules = sorted(set(rows["check_name"])) if "check_name" in rows else []
    context.log_event(
        dg.AssetMaterialization(
            asset_key="quarantine",
            description=f"{written} rows of {asset} ({partition_key}) quarantined",
            metadata={
                "dagster/row_count": written,
                "from_asset": asset,
                "partition": partition_key,
                "rules": ", ".join(rules),
                "run_id": run_id,
            },
        )
    )
    return written


@dataclass(frozen=True)
class TableWrite:
    """Rows to publish to one table, replacing the given partitions (see ``Warehouse.write``)."""

    table: str
    rows: pd.DataFrame
    partitions: Sequence[Mapping[str, Any]] | None = None


def _check_key(context: dg.AssetExecutionContext, result: dg.AssetCheckResult) -> tuple[str, str]:
    key = result.asset_key or next(iter(context.assets_def.keys))
    return key.to_user_string(), result.check_name or ""


def _step_order(context: dg.AssetExecutionContext) -> list[str]:
    """The step's selected assets, each after the ones it depends on (Dagster requires that order)."""
    selected = set(context.selected_asset_keys)
    deps = context.assets_def.asset_deps
    graph = {k: {d for d in deps.get(k, set()) if d in selected and d != k} for k in selected}
    order = graphlib.TopologicalSorter(graph).static_order()
    return [k.to_user_string() for k in order]


def publish(
    context: dg.AssetExecutionContext,
    wh: Warehouse,
    writes: Sequence[TableWrite],
    *,
    checks: Sequence[dg.AssetCheckResult] = (),
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    """Write-audit-publish for derived tables: checks are evaluated on the staged rows BEFORE anything is written.

    If any check declared ``blocking`` on this step fails, nothing is written (readers keep the previous
    version of every table), every check result is reported and the step fails, so downstream steps are
    skipped. Otherwise all ``writes`` go to the warehouse in one transaction, then one materialization per
    asset of the step (``metadata`` per asset name; row counts added for tables written) and the checks.
    """
    blocking = {(s.asset_key.to_user_string(), s.name) for s in context.assets_def.check_specs if s.blocking}
    failed = [c for c in checks if not c.passed and _check_key(context, c) in blocking]
    if failed:
        yield from check_events(context, checks)
        names = ", ".join(f"{a}.{c}" for a, c in (_check_key(context, f) for f in failed))
        raise dg.Failure(
            description=(
                f"blocking check(s) {names} failed on the staged rows; nothing was published "
                f"({', '.join('risk.' + w.table for w in writes)} keep their previous version)"
            ),
            metadata={"failed_checks": names, "tables_unchanged": ", ".join(w.table for w in writes)},
        )
    counts = wh.write_many([(w.table, w.rows, w.partitions) for w in writes], run_id=context.run.run_id)
    metadata = metadata or {}
    for key in _step_order(context):
        meta: dict[str, Any] = {"run_id": context.run.run_id, **metadata.get(key, {})}
        if key in counts:
            meta["dagster/row_count"] = counts[key]
        yield dg.MaterializeResult(asset_key=key, metadata=meta)
    yield from check_events(context, checks)


def markdown_svg(svg: str, title: str) -> str:
    """SVG text (``defs.svg``) as an inline markdown image: drawn without matplotlib, about 1 ms a plot."""
    return f"![{title}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"
