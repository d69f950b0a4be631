"""The embedded instance's tuned SQLite storage, and check verdicts of long session ranges on every session."""

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.loader import LoadingContextForTest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionResolvedStatus
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from risk_pipeline import cli
from risk_pipeline.dagster_storage import TunedSqliteEventLogStorage, TunedSqliteStorage, _planned_row_event
from risk_pipeline.defs.common import MAX_SESSIONS_PER_CHECK_FANOUT, PARTITIONS, check_events, session_check_spec

SESSIONS = PARTITIONS.get_partition_keys()[:45]
assert len(SESSIONS) > MAX_SESSIONS_PER_CHECK_FANOUT


@dg.asset(
    partitions_def=PARTITIONS,
    check_specs=[
        session_check_spec("prices_positive", asset="toy_prices", blocking=True),
        session_check_spec("few_gaps", asset="toy_prices"),
    ],
)
def toy_prices(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    yield dg.MaterializeResult(metadata={"sessions": len(context.partition_keys)})
    yield from check_events(
        context,
        [
            dg.AssetCheckResult(check_name="prices_positive", passed=True, metadata={"failing_rows": 0}),
            dg.AssetCheckResult(
                check_name="few_gaps", passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"gaps": 3}
            ),
        ],
    )


def _run_range(instance: dg.DagsterInstance, keys: list[str]) -> dg.ExecuteInProcessResult:
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    return dg.materialize([toy_prices], instance=instance, tags=tags)


def _check_rows(instance: dg.DagsterInstance, run_id: str, check: str) -> list[tuple[str | None, str]]:
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable as T

    with instance.event_log_storage.index_connection() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            sa.select(T.c.partition, T.c.execution_status).where(T.c.run_id == run_id, T.c.check_name == check)
        ).all()
    return [(r.partition, r.execution_status) for r in rows]


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """An instance from the dagster.yaml that ``risk-pipeline init-home`` writes."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text(cli.EMBEDDED_INSTANCE_YAML)
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    yield instance
    instance.dispose()


def _assert_every_session_has_the_verdict(instance: dg.DagsterInstance, run_id: str) -> None:
    for check, status in (("prices_positive", "SUCCEEDED"), ("few_gaps", "FAILED")):
        rows = _check_rows(instance, run_id, check)
        assert sorted(p for p, _ in rows) == SESSIONS, "one row per session, no unpartitioned row"
        assert Counter(s for _, s in rows) == {status: len(SESSIONS)}, "no planned (phantom) row is left"
        # what the UI's partition view of the check reads
        infos = instance.event_log_storage.get_asset_check_partition_info(
            [dg.AssetCheckKey(dg.AssetKey("toy_prices"), check)]
        )
        assert sorted(i.partition_key for i in infos) == SESSIONS
        assert {(i.latest_execution_status.value, i.latest_planned_run_id) for i in infos} == {(status, run_id)}


def test_embedded_instance_stores_a_long_range_run_with_every_verdict(embedded_home: dg.DagsterInstance) -> None:
    instance = embedded_home
    storage = instance.get_ref().storage_data
    assert storage is not None and storage.class_name == "TunedSqliteStorage"
    assert isinstance(instance.event_log_storage, TunedSqliteEventLogStorage)
    result = _run_range(instance, SESSIONS)
    assert result.success
    run_id = result.run_id
    materialized = instance.fetch_materializations(dg.AssetKey("toy_prices"), limit=1000).records
    assert sorted(r.partition_key for r in materialized) == SESSIONS
    _assert_every_session_has_the_verdict(instance, run_id)

    # the event log connections commit with synchronous=NORMAL (1) and stay open between statements
    with instance.event_log_storage.index_connection() as conn:  # type: ignore[attr-defined]
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"

    # Dagster's own SQLite storage reads the same files (nothing is stored differently)
    base = Path(instance.event_log_storage._base_dir)  # type: ignore[attr-defined]
    stock = SqliteEventLogStorage(str(base))
    records = stock.get_event_records(dg.EventRecordsFilter(dg.DagsterEventType.ASSET_MATERIALIZATION))
    assert len(records) == len(SESSIONS)
    with sqlite3.connect(base / "index.db") as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_serialized_instance_rebuilds_the_tuned_storage(embedded_home: dg.DagsterInstance) -> None:
    """A run worker or code server rebuilds the instance from its ref: it must get the tuned classes too."""
    ref = embedded_home.get_ref()
    rebuilt = dg.DagsterInstance.from_ref(ref)
    try:
        assert isinstance(rebuilt.event_log_storage, TunedSqliteEventLogStorage)
        storage = ref.storage_data.rehydrate(TunedSqliteStorage)  # type: ignore[union-attr]
        assert isinstance(storage, TunedSqliteStorage)
        event_data = storage.event_storage_data
        assert event_data is not None
        assert isinstance(event_data.rehydrate(TunedSqliteEventLogStorage), TunedSqliteEventLogStorage)
        storage.dispose()
    finally:
        rebuilt.dispose()


def test_a_short_range_records_each_session_itself(embedded_home: dg.DagsterInstance) -> None:
    keys = SESSIONS[:5]
    result = _run_range(embedded_home, keys)
    assert result.success
    rows = _check_rows(embedded_home, result.run_id, "prices_positive")
    assert sorted(p for p, _ in rows) == keys
    assert {s for _, s in rows} == {"SUCCEEDED"}


@pytest.mark.postgres
def test_long_range_verdicts_on_postgresql_instance_storage(pg_server_url: str, tmp_path: Path) -> None:
    # psycopg2, as deploy/dagster.yaml sets it: a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1
    url = pg_server_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    (tmp_path / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {url}\n")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        result = _run_range(instance, SESSIONS)
        assert result.success
        _assert_every_session_has_the_verdict(instance, result.run_id)
    finally:
        instance.dispose()


def _stored_state(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[tuple]]:
    """What a run left in the index and its run shard, without ids and times."""
    from dagster._core.storage.event_log.schema import (
        AssetCheckExecutionsTable,
        AssetEventTagsTable,
        AssetKeyTable,
        SqlEventLogStorageTable,
    )

    storage = instance.event_log_storage
    events = SqlEventLogStorageTable
    cols = (events.c.dagster_event_type, events.c.asset_key, events.c.partition, events.c.step_key)
    state: dict[str, list[tuple]] = {}
    with storage.index_connection() as conn:  # type: ignore[attr-defined]
        state["index events"] = sorted(tuple(r) for r in conn.execute(sa.select(*cols)).all())
        checks = AssetCheckExecutionsTable
        state["check rows"] = sorted(
            (r.asset_key, r.check_name, r.partition, r.execution_status, r.evaluation_event_storage_id is not None)
            for r in conn.execute(sa.select(checks)).all()
        )
        # values differ per run (the data version hashes the run's output)
        tags = conn.execute(sa.select(AssetEventTagsTable.c.asset_key, AssetEventTagsTable.c.key)).all()
        state["asset tags"] = sorted(tuple(r) for r in tags)
        keys = conn.execute(sa.select(AssetKeyTable.c.asset_key, AssetKeyTable.c.last_run_id)).all()
        state["asset keys"] = sorted((k, r == run_id) for k, r in keys)
    with storage.run_connection(run_id) as conn:  # type: ignore[attr-defined]
        state["run events"] = sorted(
            (tuple(r) for r in conn.execute(sa.select(*cols))), key=lambda r: tuple(str(x) for x in r)
        )
    latest = instance.get_latest_materialization_event(dg.AssetKey("toy_prices"))
    state["latest materialization"] = [(latest.run_id == run_id, latest.dagster_event.partition)]  # type: ignore[union-attr]
    return state


def test_batched_events_store_what_event_by_event_storage_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planned events and a range step's materializations go through ``store_event_batch`` (one transaction
    per database); the rows are those of storing each event on its own (``DAGSTER_EVENT_BATCH_SIZE=0``)."""
    states = {}
    batches: list[int] = []
    original = TunedSqliteEventLogStorage.store_event_batch

    def spy(self: TunedSqliteEventLogStorage, events: list) -> None:
        batches.append(len(events))
        original(self, events)

    monkeypatch.setattr(TunedSqliteEventLogStorage, "store_event_batch", spy)
    for size in ("0", "10000"):
        home = tmp_path / size
        home.mkdir()
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", size)
        (home / "dagster.yaml").write_text(cli.EMBEDDED_INSTANCE_YAML)
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            result = _run_range(instance, SESSIONS)
            assert result.success
            _assert_every_session_has_the_verdict(instance, result.run_id)
            states[size] = _stored_state(instance, result.run_id)
        finally:
            instance.dispose()
        if size == "0":
            assert batches == []
    # the run's planned events (45 materializations, 2 checks) and its 45 materializations: two batches
    assert sorted(batches) == [len(SESSIONS), len(SESSIONS) + 2]
    assert states["0"] == states["10000"]
    assert len(states["0"]["check rows"]) == 2 * len(SESSIONS)


@dg.asset(
    partitions_def=PARTITIONS,
    check_specs=[session_check_spec("prices_positive", asset="toy_broken", blocking=True)],
)
def toy_broken(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    raise RuntimeError("the source is down")


@pytest.mark.parametrize("keys", [SESSIONS, SESSIONS[:1]], ids=["range", "one session"])
def test_planned_check_rows_hold_the_planned_event_without_the_ranges_subset(
    embedded_home: dg.DagsterInstance, keys: list[str]
) -> None:
    """A run that fails before its check reports leaves every partition's row planned: over a range each row
    holds the planned event without its partitions subset (the whole event stays in the event log, where the
    row points), for one partition Dagster's own row (the whole event); Dagster reads them as before."""
    instance = embedded_home
    tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    result = dg.materialize([toy_broken], instance=instance, tags=tags, raise_on_error=False)
    assert not result.success
    key = dg.AssetCheckKey(dg.AssetKey("toy_broken"), "prices_positive")
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=1000)
    assert sorted(r.partition for r in records) == keys
    logged = instance.get_records_for_run(
        result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
    ).records
    assert len(logged) == 1
    whole = logged[0].event_log_entry
    assert whole.get_dagster_event().asset_check_planned_data.partitions_subset.get_partition_keys() == keys
    expected = _planned_row_event(whole) if len(keys) > 1 else whole
    for record in records:
        assert record.status.value == "PLANNED"
        assert record.event == expected
        assert record.event.dagster_event.step_key == "toy_broken"
        assert record.event.get_dagster_event().asset_check_planned_data.asset_check_key == key
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
    status = asyncio.run(records[0].resolve_status(LoadingContextForTest(instance)))
    assert status == AssetCheckExecutionResolvedStatus.EXECUTION_FAILED
