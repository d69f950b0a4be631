"""Dagster instance storage for the embedded default: SQLite with connections kept open per database.

Dagster's ``SqliteEventLogStorage`` opens a new engine and connection for every statement and closes it
afterwards. In WAL mode the close of the last connection to a database checkpoints the WAL into the
database and deletes it, with an fsync each time; with the default ``synchronous=FULL`` every commit
fsyncs as well. A run over a range of sessions stores one materialization event per session and
asset, so a price-history load writes thousands of events and spent most of its time in those fsyncs
(measured on this machine: about 40 ms per open-write-close of a WAL database against 1.2 ms with a
connection held open and ``synchronous=NORMAL``; see ``bench/bench_instance_storage.py``).

``TunedSqliteStorage`` is Dagster's SQLite storage with these changes in the event log: each database
(the index and the most recently used run shards) keeps a small pool of open connections, and every
connection runs with ``synchronous=NORMAL``. In WAL mode that setting cannot corrupt the database; a
power cut (not a process crash) can lose the last events written before it. Production uses
PostgreSQL (``deploy/dagster.yaml``) and is not affected.

Batches: Dagster hands a run's planned events (one per asset and partition, one per check) and a
range step's per-partition materializations to ``store_event_batch`` when ``DAGSTER_EVENT_BATCH_SIZE``
is positive (opt-in; the storage sets it to ``EVENT_BATCH_SIZE`` in its process unless set). The stock
SQL storage stores a batch event by event; here a batch is one transaction per database with the same
rows, so a 760-session history load stores its 6,000 planned and materialization events in a few
commits. A planned check over a session range inserts one row per session with the same serialized
event; it is serialized once instead of once per session (46 checks x 760 sessions in that load), and without
the range's partitions subset (``_planned_row_event``).

This builds on Dagster's private storage classes (``dagster._core.storage``): the dependency is pinned
below the next minor release and ``risk_pipeline_tests/test_instance_storage.py`` exercises it.
"""

from __future__ import annotations

import os
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import yaml
from dagster._core.events import ASSET_CHECK_EVENTS, ASSET_EVENTS, EVENT_TYPE_TO_PIPELINE_RUN_STATUS, DagsterEventType
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData, serialize_value
from sqlalchemy.engine import Connection, Engine

if TYPE_CHECKING:
    from dagster import AssetCheckKey, DagsterInstance
    from dagster._core.event_api import EventLogEntry

#: Events Dagster buffers per batch before ``store_event_batch`` (``DAGSTER_EVENT_BATCH_SIZE``)
EVENT_BATCH_SIZE = 10_000


def _set_synchronous_normal(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


class TunedSqliteEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` whose databases keep open connections (``synchronous=NORMAL``)."""

    #: run shards whose engines stay open; older ones are disposed (their WAL is checkpointed then)
    max_open_shards = 8

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        # batch writes are opt-in through the environment, read by the instance at each event
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> TunedSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = sa.create_engine(
            self.conn_string_for_shard(shard),
            pool_size=1,
            max_overflow=4,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        sa.event.listen(engine, "connect", _set_synchronous_normal)
        self._engines[shard] = engine
        while len(self._engines) > self.max_open_shards:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # the same critical section as Dagster's implementation, on a cached engine
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn:
                with conn.begin():
                    yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """The rows ``store_event`` writes for each event, in one transaction per database.

        Run shards get every event; the index mirrors the asset, check and run-status events, their asset
        tags and each asset's latest entry (the last event of each type per asset, applied in batch order:
        what storing the events one by one leaves); check events then update the check table.
        """
        if not events:
            return
        rows = [self._event_to_row(e) for e in events]
        by_run: dict[str, list[dict[str, Any]]] = {}
        for event, row in zip(events, rows, strict=True):
            by_run.setdefault(event.run_id, []).append(row)
        for run_id, run_rows in by_run.items():
            with self.run_connection(run_id) as conn:
                conn.execute(SqlEventLogStorageTable.insert(), run_rows)
        mirrored = ASSET_EVENTS | ASSET_CHECK_EVENTS | set(EVENT_TYPE_TO_PIPELINE_RUN_STATUS)
        index = [n for n, e in enumerate(events) if e.is_dagster_event and e.dagster_event_type in mirrored]
        if not index:
            return
        with self.index_transaction() as conn:
            ids = (
                conn.execute(
                    SqlEventLogStorageTable.insert().returning(
                        SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
                    ),
                    [rows[n] for n in index],
                )
                .scalars()
                .all()
            )
            event_id = dict(zip(index, ids, strict=True))
            assets = [n for n in index if events[n].dagster_event_type in ASSET_EVENTS]
            if assets:
                self._store_asset_event_tags(conn, [events[n] for n in assets], [event_id[n] for n in assets])
                last: dict[tuple[str, DagsterEventType | None], int] = {}
                for n in assets:
                    key = _asset_key_string(events[n])
                    last.pop((key, events[n].dagster_event_type), None)  # re-insert: order of last occurrence
                    last[(key, events[n].dagster_event_type)] = n
                for n in last.values():
                    self._store_asset_event(conn, events[n], event_id[n])
        for n in index:
            if events[n].dagster_event_type in ASSET_CHECK_EVENTS:
                self.store_asset_check_event(events[n], event_id[n])

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        """Dagster's rows (one per planned partition), with the event serialized once for all of them; over
        more than one partition, without its partitions subset (``_planned_row_event``)."""
        planned = event.get_dagster_event().asset_check_planned_data
        subset = planned.partitions_subset
        partition_keys = subset.get_partition_keys() if subset else [None]
        common = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(_planned_row_event(event) if len(partition_keys) > 1 else event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [{**common, "partition": k} for k in partition_keys])

    def dispose(self) -> None:
        with self._db_lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()
        super().dispose()


def _planned_row_event(event: EventLogEntry) -> EventLogEntry:
    """A planned check event over several partitions as each partition's planned row holds it: the same event
    without its partitions subset.

    Dagster copies the whole event onto every partition's row; over a session range the subset (the range and
    the calendar's holiday exclusions: 5.7 KB of the 6.5 KB event) was written once per session, 227 MB for a
    760-session history load (46 checks), then overwritten by the verdict (``resolve_planned_check_partitions``).
    The rows' ``partition`` column names each row's partition, and ``evaluation_event_storage_id`` points to
    the whole event in the event log. Dagster reads a planned row's event for its step key only (an execution's
    status comes from the row's status and the run's)."""
    from dagster._record import copy

    dagster_event = event.get_dagster_event()
    planned = copy(dagster_event.asset_check_planned_data, partitions_subset=None)
    return event._replace(dagster_event=dagster_event._replace(event_specific_data=planned))


def _asset_key_string(event: EventLogEntry) -> str:
    """The asset key (string form) of an asset event."""
    key = event.get_dagster_event().asset_key
    if key is None:
        raise ValueError(f"asset event without an asset key: {event.dagster_event_type}")
    return key.to_string()


class TunedSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite instance storage with ``TunedSqliteEventLogStorage`` as its event log.

    Configured in ``dagster.yaml`` as ``storage: custom: {module: risk_pipeline.dagster_storage,
    class: TunedSqliteStorage, config: {base_dir: ...}}``.
    """

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = TunedSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> TunedSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return ConfigurableClassData(
            __name__,
            TunedSqliteEventLogStorage.__name__,
            yaml.dump({"base_dir": _event_logs_directory(self.base_dir)}, default_flow_style=False),
        )


def resolve_planned_check_partitions(
    instance: DagsterInstance, run_id: str, check_keys: Sequence[AssetCheckKey]
) -> int:
    """Give each check's planned per-partition rows of ``run_id`` the run's one unpartitioned verdict.

    A run over a session range plans one evaluation per session of a partitioned check. Recording a result
    per session costs one stored event each (34 checks x 760 sessions in a history load); instead the run
    reports one unpartitioned result per check and this copies its status and event onto the planned rows
    in one UPDATE per check, then drops the unpartitioned row, so the UI shows the verdict on every session
    and no planned row is left behind. Works on any SQL event log (SQLite and PostgreSQL); returns the
    number of rows resolved.
    """
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        return 0
    table = AssetCheckExecutionsTable
    planned = AssetCheckExecutionRecordStatus.PLANNED.value
    resolved = 0
    with storage.index_connection() as conn:
        for key in check_keys:
            this_run = sa.and_(
                table.c.asset_key == key.asset_key.to_string(),
                table.c.check_name == key.name,
                table.c.run_id == run_id,
            )
            verdict = conn.execute(
                sa.select(
                    table.c.id,
                    table.c.execution_status,
                    table.c.evaluation_event,
                    table.c.evaluation_event_timestamp,
                    table.c.evaluation_event_storage_id,
                    table.c.materialization_event_storage_id,
                )
                .where(this_run, table.c.partition.is_(None), table.c.execution_status != planned)
                .order_by(table.c.id.desc())
            ).first()
            if verdict is None:
                continue
            updated = conn.execute(
                sa.update(table)
                .where(this_run, table.c.partition.isnot(None), table.c.execution_status == planned)
                .values(
                    execution_status=verdict.execution_status,
                    evaluation_event=verdict.evaluation_event,
                    evaluation_event_timestamp=verdict.evaluation_event_timestamp,
                    evaluation_event_storage_id=verdict.evaluation_event_storage_id,
                    materialization_event_storage_id=verdict.materialization_event_storage_id,
                )
            ).rowcount
            if updated:
                conn.execute(sa.delete(table).where(table.c.id == verdict.id))
            resolved += updated
    return resolved
