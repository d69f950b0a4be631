"""The warehouse: asset tables on DuckDB (embedded default) or PostgreSQL (production), one behaviour.

Both engines keep the tables of ``contracts.py`` in schema ``risk``. A write replaces exactly the
rows of the partitions it names inside one transaction, so a crash half-way leaves the previous
version intact and a retry gives the same table. Reads and queries take parameters, never
string-built values. Rows read back are normalized the same way on both engines: DATE columns as
``datetime.date``, TIMESTAMP columns as UTC pandas timestamps, NULL as ``None``/NaN.

``Warehouse`` has no Dagster dependency so the CLI and the pre-trade check use it directly; the
Dagster resource in ``risk_pipeline.resources`` wraps it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from risk_pipeline.contracts import ENGINE_TYPES, TABLES, Table, table

SCHEMA = "risk"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


#: Advisory-lock key (PostgreSQL) under which ensure_tables creates and checks the schema.
SCHEMA_LOCK_KEY = 7_331_001
#: information_schema type names that stand for the DDL names of ENGINE_TYPES.
_TYPE_ALIASES = {"TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ"}


class WarehouseError(Exception):
    """A write or read the warehouse refused; the message names the table, column and rule."""


class WriterLock:
    """Exclusive right to write one DuckDB warehouse file, held by one run from its first write to its end.

    An ``fcntl.flock`` on ``<file>.writer.lock`` (released by the OS if the holder dies, even by kill -9);
    the file records the holder (run id, pid) so a waiting run can say who it waits for. Another run that
    wants to write waits up to ``timeout_seconds``, then fails with that holder in the message.
    """

    def __init__(self, database: str, owner: str, timeout_seconds: float = 1800.0) -> None:
        self.path = Path(database).with_name(Path(database).name + ".writer.lock")
        self.owner = owner
        self.timeout_seconds = timeout_seconds
        self._handle: Any = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> None:
        """Take the lock (no-op when already held), waiting for another holder to finish."""
        import fcntl
        import os
        import time

        if self._handle is not None:
            return
        handle = open(self.path, "a+")  # kept open while the lock is held
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "another process"
                    handle.close()
                    raise WarehouseError(
                        f"warehouse {Path(self.path).with_suffix('')} is being written by {holder}; waited "
                        f"{self.timeout_seconds:g} s (runs that write one DuckDB file never overlap)"
                    ) from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"run {self.owner} (pid {os.getpid()})")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is None:
            return
        import fcntl

        self._handle.seek(0)
        self._handle.truncate()
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


@dataclass(frozen=True)
class Between:
    """Inclusive range filter for ``Warehouse.read``."""

    low: Any
    high: Any


def _ident(name: str) -> str:
    """A plain identifier, double-quoted (contract names such as ``at`` are SQL keywords)."""
    if not _IDENT.match(name):
        raise WarehouseError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


#: Partition values per DELETE statement of a write over many partitions.
DELETE_CHUNK = 500
#: Rows per INSERT of a DuckDB write (one transaction whatever the count; a slice of the frame is scanned at a time).
INSERT_CHUNK = 1_000_000


#: Opening and closing DuckDB connections of one process (and the database a writer holds open), one at a time:
#: threads that connect to a file while another closes its last connection to it otherwise race in DuckDB's
#: database cache ("Unique file handle conflict: Cannot attach ... already attached"), seen with the static-book
#: backtest's threads.
_DUCKDB_ATTACH = threading.Lock()


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


class Warehouse:
    """DuckDB or PostgreSQL warehouse behind one interface.

    ``url`` selects the engine: ``postgresql://...`` (or ``postgres://``) means PostgreSQL, anything
    else is a DuckDB file path (``:memory:`` for a private in-memory database).
    """

    def __init__(self, url: str, keep_open: bool = False, create: bool = True) -> None:
        """``keep_open`` holds one connection for the object's life (low-latency callers such as the
        pre-trade check); a kept-open DuckDB file is locked against writers in other processes.
        ``create=False`` (readers such as the pre-trade check) never creates a folder or a DuckDB file:
        a missing file raises ``WarehouseError``."""
        self.url = url
        self.keep_open = keep_open
        self._kept: Any = None
        self.engine = "postgres" if url.startswith(("postgresql://", "postgres://")) else "duckdb"
        self._memory_con: Any = None
        #: Set by the Dagster resource for a run: taken before the run's first write (DuckDB only).
        self.writer_lock: WriterLock | None = None
        #: DuckDB file: once the writer lock is taken, keep one connection open until ``release_writer`` (the
        #: Dagster resource sets it for a run), so every later ``connect`` reuses the open database instead of
        #: opening the file, reading its catalog and checkpointing it on close (about 800 times a daily run).
        self.hold_open_while_writing = False
        self._held: Any = None
        if self.engine == "duckdb" and url != ":memory:":
            if Path(url).stem == SCHEMA:
                raise WarehouseError(f"DuckDB file {url}: a file named {SCHEMA}.* clashes with schema {SCHEMA!r}")
            if not create:
                if not Path(url).is_file():
                    raise WarehouseError(f"no DuckDB warehouse at {url} (not created: this caller only reads)")
            else:
                Path(url).parent.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ connections
    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        """A connection; closed on exit (the in-memory DuckDB connection is kept)."""
        if self.keep_open:
            if self._kept is None:
                if self.engine == "postgres":
                    import psycopg

                    self._kept = psycopg.connect(self.url, autocommit=True)
                else:
                    import duckdb

                    self._kept = duckdb.connect(self.url)
            yield self._kept
            return
        if self.engine == "postgres":
            import psycopg

            con = psycopg.connect(self.url, autocommit=True)
            try:
                yield con
            finally:
                con.close()
        else:
            import duckdb

            if self.url == ":memory:":
                if self._memory_con is None:
                    self._memory_con = duckdb.connect(":memory:")
                yield self._memory_con
                return
            with _DUCKDB_ATTACH:  # threads of one step may connect at once
                if self.hold_open_while_writing and self._held is None and self.writer_lock is not None:
                    if self.writer_lock.held:
                        self._held = duckdb.connect(self.url)  # later connects share its database instance
                con = duckdb.connect(self.url)
            try:
                yield con
            finally:
                with _DUCKDB_ATTACH:
                    con.close()

    @contextlib.contextmanager
    def _transaction(self, con: Any) -> Iterator[None]:
        if self.engine == "postgres":
            with con.transaction():
                yield
        else:
            con.execute("BEGIN TRANSACTION")
            try:
                yield
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def _sql(self, sql: str) -> str:
        """Positional ``?`` parameter markers in the engine's own style."""
        return sql.replace("?", "%s") if self.engine == "postgres" else sql

    def _execute(self, con: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.engine == "postgres":
            cur = con.cursor()
            if params:
                cur.execute(self._sql(sql), list(params))
            else:  # no parameters: the SQL is sent as written ('%' and '?' stay literal)
                cur.execute(sql)
            return cur
        return con.execute(sql, list(params))

    # ------------------------------------------------------------------ schema
    def _column_ddl(self, t: Table) -> str:
        types = ENGINE_TYPES[self.engine]
        cols = [f"{_ident(c.name)} {types[c.type]}{'' if c.nullable else ' NOT NULL'}" for c in t.all_columns]
        cols.append(f"PRIMARY KEY ({', '.join(_ident(k) for k in t.key)})")
        return ",\n  ".join(cols)

    def ensure_tables(self, names: Sequence[str] | None = None) -> None:
        """Create schema ``risk`` and the contract tables that are missing; add new nullable columns.

        A table whose stored columns contradict the contract (a column missing that is not
        nullable, or a column of another type) raises WarehouseError: that needs a written migration.
        On PostgreSQL the whole check runs in one transaction under an advisory lock, so processes that
        start on an empty database at the same moment create each table once (the others wait).
        """
        wanted = [table(n) for n in names] if names else list(TABLES.values())
        with self.connect() as con, self._transaction(con):
            if self.engine == "postgres":
                self._execute(con, "SELECT pg_advisory_xact_lock(?)", [SCHEMA_LOCK_KEY])
            self._execute(con, f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            stored_columns = self._schema_columns(con)  # one catalog query, not one per table
            for t in wanted:
                existing = stored_columns.get(t.name, {})
                if not existing:
                    self._execute(con, f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{t.name} (\n  {self._column_ddl(t)}\n)")
                    continue
                for c in t.all_columns:
                    want = ENGINE_TYPES[self.engine][c.type]
                    if c.name in existing:
                        stored = _TYPE_ALIASES.get(existing[c.name].upper(), existing[c.name].upper())
                        if stored != want.upper():
                            raise WarehouseError(
                                f"table {SCHEMA}.{t.name} column {c.name!r} is {existing[c.name]}, the contract "
                                f"says {want}; write a migration (see README, 'Migrations')"
                            )
                        continue
                    if not c.nullable:
                        raise WarehouseError(
                            f"table {SCHEMA}.{t.name} lacks NOT NULL column {c.name!r} of the contract; "
                            "write a migration (see README, 'Migrations')"
                        )
                    self._execute(con, f"ALTER TABLE {SCHEMA}.{t.name} ADD COLUMN {_ident(c.name)} {want}")
            if self.engine == "postgres":
                self._append_only_triggers(con, [t for t in wanted if t.append_only])

    def _append_only_triggers(self, con: Any, tables: Sequence[Table]) -> None:
        """PostgreSQL: append-only tables reject UPDATE, DELETE and TRUNCATE in the database itself."""
        if not tables:
            return
        self._execute(
            con,
            f"CREATE OR REPLACE FUNCTION {SCHEMA}.reject_append_only_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'table %.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP "
            "USING ERRCODE = 'insufficient_privilege'; END $$",
        )
        for t in tables:  # statement-level: refused even when no row would be touched
            self._execute(
                con,
                f"CREATE OR REPLACE TRIGGER {t.name}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
                f"ON {SCHEMA}.{t.name} FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.reject_append_only_change()",
            )

    def _existing_columns(self, con: Any, name: str) -> dict[str, str]:
        """Stored columns of a table and their types as the engine names them (empty: no such table)."""
        cur = self._execute(
            con,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [SCHEMA, name],
        )
        return {r[0]: r[1] for r in cur.fetchall()}

    def _schema_columns(self, con: Any) -> dict[str, dict[str, str]]:
        """``_existing_columns`` of every table of the schema, by table name."""
        cur = self._execute(
            con,
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = ?",
            [SCHEMA],
        )
        out: dict[str, dict[str, str]] = {}
        for name, column, data_type in cur.fetchall():
            out.setdefault(name, {})[column] = data_type
        return out

    def table_exists(self, name: str) -> bool:
        with self.connect() as con:
            return bool(self._existing_columns(con, name))

    # ------------------------------------------------------------------ writes
    def prepare(self, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``frame`` as the contract's data columns, typed; raises on a contract breach.

        Checks: every contract column present (``source_file``/``source_row``, ``run_id`` and
        ``materialized_at`` are dropped, any other extra column is an error), NOT NULL columns without missing values,
        and unique keys. Nothing is repaired.
        """
        t = table(name)
        # lineage columns of rows read back are dropped: a write stamps its own run_id and time
        extra = (
            set(frame.columns) - set(t.data_column_names) - {"source_file", "source_row", "run_id", "materialized_at"}
        )
        if extra:
            raise WarehouseError(f"{t.name}: columns not in the contract: {sorted(extra)}")
        missing = [c for c in t.data_column_names if c not in frame.columns]
        if missing:
            raise WarehouseError(f"{t.name}: missing contract columns {missing}")
        columns = {}
        for c in t.columns:
            values = _coerce(frame[c.name].reset_index(drop=True), c.type, t.name, c.name)
            if not c.nullable and len(values):
                missing = values.isna().to_numpy()
                if missing.any():
                    first = int(np.flatnonzero(missing)[0])
                    raise WarehouseError(f"{t.name}: NULL in NOT NULL column {c.name!r} at row {first + 1}")
            columns[c.name] = values
        out = pd.DataFrame(columns, index=range(len(frame)), copy=False)  # copy-on-write: no second copy
        key = [k for k in t.key if k in t.data_column_names]
        if len(out) > 1:
            dup = duplicated_keys(out, key)
            if dup.any():
                first = int(np.flatnonzero(dup)[0])
                raise WarehouseError(
                    f"{t.name}: duplicate key {key} at row {first + 1}: {out.loc[first, key].to_dict()}"
                )
        return out

    def write(
        self,
        name: str,
        frame: pd.DataFrame,
        *,
        run_id: str,
        partitions: Sequence[Mapping[str, Any]] | None = None,
        materialized_at: dt.datetime | None = None,
    ) -> int:
        """Replace the rows of the given partitions by ``frame`` in one transaction; rows written.

        ``partitions`` lists the partition values the write owns (e.g. ``[{"as_of_date": d}]``);
        by default the distinct partition values present in ``frame``. Every row must fall in one
        of them. A table with no partition columns is replaced whole. Append-only tables refuse.
        """
        return self.write_many([(name, frame, partitions)], run_id=run_id, materialized_at=materialized_at)[name]

    def write_many(
        self,
        writes: Sequence[tuple[str, pd.DataFrame, Sequence[Mapping[str, Any]] | None]],
        *,
        run_id: str,
        materialized_at: dt.datetime | None = None,
    ) -> dict[str, int]:
        """Several partition replacements (``(table, rows, partitions)``, as in ``write``) in ONE transaction.

        Readers see either every table's previous version or every table's new one. Returns rows
        written per table.
        """
        stamp = pd.Timestamp(materialized_at or dt.datetime.now(dt.UTC))
        stamp = stamp.tz_convert("UTC") if stamp.tzinfo else stamp.tz_localize("UTC")
        prepared = []
        for name, frame, partitions in writes:
            t = table(name)
            if t.append_only:
                raise WarehouseError(f"{t.name} is append-only; use append()")
            rows = self.prepare(name, frame)
            # one category, not a string per row (9 million rows of correlation_matrix at 3,000 names); same text
            rows["run_id"] = pd.Categorical.from_codes(np.zeros(len(rows), np.int8), pd.Index([run_id], dtype=object))
            rows["materialized_at"] = stamp
            prepared.append((t, rows, self._partitions(t, rows, partitions)))
        if self.writer_lock is not None:
            self.writer_lock.acquire()
        with self.connect() as con, self._transaction(con):
            for t, rows, parts in prepared:
                if not t.partition_by:
                    self._execute(con, f"DELETE FROM {SCHEMA}.{t.name}")
                if len(t.partition_by) == 1:  # the partitions' rows in a few statements
                    (key,) = t.partition_by
                    for i in range(0, len(parts), DELETE_CHUNK):
                        values = [p[key] for p in parts[i : i + DELETE_CHUNK]]
                        marks = ", ".join("?" for _ in values)
                        self._execute(con, f"DELETE FROM {SCHEMA}.{t.name} WHERE {_ident(key)} IN ({marks})", values)
                    parts = []
                for p in parts:
                    where = " AND ".join(f"{_ident(k)} = ?" for k in t.partition_by)
                    self._execute(con, f"DELETE FROM {SCHEMA}.{t.name} WHERE {where}", [p[k] for k in t.partition_by])
                self._insert_rows(con, t, rows)
        return {t.name: len(rows) for t, rows, _ in prepared}

    def append(self, name: str, frame: pd.DataFrame, *, run_id: str) -> int:
        """Insert rows whose key is not yet stored; rows already present are left as they are.

        Returns the number of rows newly inserted. Used for append-only tables (audit_trail).
        """
        t = table(name)
        rows = self.prepare(name, frame)
        rows["run_id"] = run_id
        rows["materialized_at"] = pd.Timestamp.now(tz="UTC")
        if not len(rows):
            return 0
        cols = t.column_names
        names = ", ".join(_ident(c) for c in cols)
        if self.writer_lock is not None:
            self.writer_lock.acquire()
        conflict = f"ON CONFLICT ({', '.join(_ident(k) for k in t.key)}) DO NOTHING"
        insert = f"INSERT INTO {SCHEMA}.{t.name} ({names}) VALUES ({', '.join('?' for _ in cols)}) {conflict}"
        with self.connect() as con, self._transaction(con):
            inserted = 0
            for record in rows[cols].itertuples(index=False, name=None):
                cur = self._execute(con, insert, [None if _is_missing(v) else _plain(v) for v in record])
                if self.engine == "duckdb":
                    got = cur.fetchall()
                    inserted += int(got[0][0]) if got else 0
                else:
                    inserted += cur.rowcount
            return inserted

    def append_record(self, name: str, record: Mapping[str, Any], *, run_id: str) -> int:
        """One row into an append-only table, without pandas (the pre-trade check's audit row).

        The same contract as ``append``: every data column named, NOT NULL columns filled, an existing
        key left as it is (returns 0, else 1). A single INSERT ... ON CONFLICT DO NOTHING statement is
        one transaction on both engines.
        """
        t = table(name)
        expected = set(t.data_column_names)
        if set(record) != expected:
            raise WarehouseError(
                f"{t.name}: record columns differ from the contract: missing {sorted(expected - set(record))}, "
                f"unknown {sorted(set(record) - expected)}"
            )
        nulls = [c.name for c in t.columns if not c.nullable and _is_missing(record[c.name])]
        if nulls:
            raise WarehouseError(f"{t.name}: NULL in NOT NULL columns {nulls}")
        values = {**record, "run_id": run_id, "materialized_at": dt.datetime.now(dt.UTC)}
        cols = t.column_names
        conflict = f"ON CONFLICT ({', '.join(_ident(k) for k in t.key)}) DO NOTHING"
        insert = (
            f"INSERT INTO {SCHEMA}.{t.name} ({', '.join(_ident(c) for c in cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)}) {conflict}"
        )
        params = [None if _is_missing(values[c]) else _plain(values[c]) for c in cols]
        if self.writer_lock is not None:
            self.writer_lock.acquire()
        with self.connect() as con:
            cur = self._execute(con, insert, params)
            if self.engine == "duckdb":
                got = cur.fetchall()
                return int(got[0][0]) if got else 0
            return int(cur.rowcount)

    def _read_keys(self, con: Any, t: Table, rows: pd.DataFrame) -> pd.DataFrame:
        keys = list(t.key)
        if not len(rows):
            return pd.DataFrame(columns=keys)
        if len(keys) == 1:
            values = list(rows[keys[0]].unique())
            holders = ", ".join("?" for _ in values)
            cur = self._execute(
                con,
                f"SELECT {_ident(keys[0])} FROM {SCHEMA}.{t.name} WHERE {_ident(keys[0])} IN ({holders})",
                values,
            )
        else:
            cur = self._execute(con, f"SELECT {', '.join(_ident(k) for k in keys)} FROM {SCHEMA}.{t.name}")
        got = pd.DataFrame(cur.fetchall(), columns=keys)
        return _normalize(got, t)

    def _partitions(
        self, t: Table, rows: pd.DataFrame, partitions: Sequence[Mapping[str, Any]] | None
    ) -> list[dict[str, Any]]:
        if not t.partition_by:
            return []
        present = rows[list(t.partition_by)].drop_duplicates()
        present_set = {tuple(_plain(v) for v in r) for r in present.itertuples(index=False)}
        if partitions is None:
            return [dict(zip(t.partition_by, p, strict=True)) for p in sorted(present_set, key=str)]
        for p in partitions:
            if set(p) != set(t.partition_by):
                raise WarehouseError(f"{t.name}: partition must name {list(t.partition_by)}, got {sorted(p)}")
        owned: list[dict[str, Any]] = [{} for _ in partitions]
        for k in t.partition_by:
            values = [p[k] for p in partitions]
            if len({type(v) for v in values}) == 1:  # one conversion for the column (the same values)
                coerced = list(_coerce(pd.Series(values), t.column(k).type, t.name, k))
            else:
                coerced = [_coerce(pd.Series([v]), t.column(k).type, t.name, k).iloc[0] for v in values]
            for o, v in zip(owned, coerced, strict=True):
                o[k] = _plain(v)
        owned_set = {tuple(p[k] for k in t.partition_by) for p in owned}
        stray = present_set - owned_set
        if stray:
            raise WarehouseError(f"{t.name}: rows outside the partitions written: {sorted(stray, key=str)[:3]}")
        return owned

    def _insert_rows(self, con: Any, t: Table, rows: pd.DataFrame) -> None:
        if not len(rows):
            return
        cols = t.column_names
        rows = rows[cols]
        if self.engine == "duckdb":
            names = ", ".join(_ident(c) for c in cols)
            for start in range(0, len(rows), INSERT_CHUNK):  # slices of the frame: DuckDB scans less at a time
                con.register("_incoming_rows", rows.iloc[start : start + INSERT_CHUNK])
                try:
                    con.execute(f"INSERT INTO {SCHEMA}.{t.name} ({names}) SELECT {names} FROM _incoming_rows")
                finally:
                    con.unregister("_incoming_rows")
            return
        with con.cursor().copy(f"COPY {SCHEMA}.{t.name} ({', '.join(_ident(c) for c in cols)}) FROM STDIN") as copy:
            for record in rows.itertuples(index=False, name=None):
                copy.write_row([None if _is_missing(v) else _plain(v) for v in record])

    # ------------------------------------------------------------------ reads
    def read(
        self,
        name: str,
        where: Mapping[str, Any] | None = None,
        *,
        columns: Sequence[str] | None = None,
        order_by: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Rows of a contract table filtered by equality, IN (list/tuple) or ``Between``."""
        t = table(name)
        cols = list(columns) if columns else t.column_names
        for c in cols:
            t.column(c)
        clauses: list[str] = []
        params: list[Any] = []
        for col, value in (where or {}).items():
            t.column(col)
            if isinstance(value, Between):
                clauses.append(f"{_ident(col)} BETWEEN ? AND ?")
                params += [_plain(value.low), _plain(value.high)]
            elif isinstance(value, list | tuple | set | frozenset):
                values = list(value)
                if not values:
                    clauses.append("FALSE")
                    continue
                clauses.append(f"{_ident(col)} IN ({', '.join('?' for _ in values)})")
                params += [_plain(v) for v in values]
            elif value is None:
                clauses.append(f"{_ident(col)} IS NULL")
            else:
                clauses.append(f"{_ident(col)} = ?")
                params.append(_plain(value))
        sql = f"SELECT {', '.join(_ident(c) for c in cols)} FROM {SCHEMA}.{t.name}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        order = list(order_by) if order_by is not None else [k for k in t.key if k in cols]
        if order:
            sql += " ORDER BY " + ", ".join(_ident(c) for c in order)
        with self.connect() as con:
            if self.engine == "duckdb":  # columnar: no Python object per value (timestamps, dates)
                arrow = con.sql(sql, params=params).to_arrow_table()
                return _normalize_arrow(arrow, cols, t)
            cur = self._execute(con, sql, params)
            data = cur.fetchall()
        return _normalize(pd.DataFrame(data, columns=cols), t)

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Run a read-only SQL statement with ``?`` parameter markers; tables are ``risk.<name>``."""
        with self.connect() as con:
            cur = self._execute(con, sql, [_plain(p) for p in params])
            names = [d[0] for d in cur.description]
            return pd.DataFrame(cur.fetchall(), columns=names)

    def query_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """``query`` without the DataFrame: the rows as tuples (for latency-bound readers of small results)."""
        with self.connect() as con:
            return list(self._execute(con, sql, [_plain(p) for p in params]).fetchall())

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one DDL or DML statement (used by the SQL-model runner)."""
        with self.connect() as con:
            self._execute(con, sql, [_plain(p) for p in params])

    def row_count(self, name: str, where: Mapping[str, Any] | None = None) -> int:
        t = table(name)
        clauses = [f"{_ident(k)} = ?" for k in (where or {})]
        sql = f"SELECT COUNT(*) FROM {SCHEMA}.{t.name}" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        with self.connect() as con:
            return int(self._execute(con, sql, [_plain(v) for v in (where or {}).values()]).fetchone()[0])

    def close(self) -> None:
        """Close a kept-open connection."""
        if self._kept is not None:
            self._kept.close()
            self._kept = None

    def release_writer(self) -> None:
        """End of a run: close the database held open while writing (DuckDB checkpoints it), then release the
        writer lock, so the next writer finds the file closed."""
        with _DUCKDB_ATTACH:
            if self._held is not None:
                self._held.close()
                self._held = None
        if self.writer_lock is not None:
            self.writer_lock.release()

    def describe(self) -> str:
        """Where the data lives, for logs and summaries (no password)."""
        if self.engine == "duckdb":
            return f"duckdb:{Path(self.url).resolve() if self.url != ':memory:' else ':memory:'}"
        return "postgres:" + re.sub(r"//[^@/]*@", "//", self.url) + f" schema {SCHEMA}"


# ---------------------------------------------------------------------- value handling
def duplicated_keys(frame: pd.DataFrame, key: Sequence[str]) -> np.ndarray:
    """``frame.duplicated(subset=key, keep=False)`` as a boolean array, the rows per key counted by ``np.bincount``
    instead of a hash table over the rows (9 million rows of correlation_matrix at 3,000 names: 1.3-2.7 -> 0.35 CPU s).

    Each key column becomes integer codes as pandas takes them (a categorical's own codes, else ``pd.factorize``;
    missing values one more code, equal to each other) and the row's key their mixed-radix number; when the
    numbers would pass twice the rows (or 2**20), the codes so far are renumbered densely (``pd.factorize``) first.
    """
    n = len(frame)
    if not key:
        return frame.duplicated(subset=list(key), keep=False).to_numpy(bool)
    bound = max(2 * n, 1 << 20)
    codes = np.zeros(n, dtype=np.int64)
    size = 1
    for k in key:
        s = frame[k]
        if isinstance(s.dtype, pd.CategoricalDtype):
            c, m = s.cat.codes.to_numpy().astype(np.int64), len(s.cat.categories)
        else:
            c, uniques = pd.factorize(s, use_na_sentinel=True)
            c, m = c.astype(np.int64, copy=False), len(uniques)
        if n and c.min() < 0:  # missing: one more value
            c = c + 1
            m += 1
        m = max(m, 1)
        if size * m > bound:
            codes, uniques = pd.factorize(codes)
            size = len(uniques)
        codes = codes * m + c
        size *= m
    if size > bound:
        codes, uniques = pd.factorize(codes)
        size = len(uniques)
    return np.bincount(codes, minlength=size)[codes] > 1 if n else np.zeros(0, dtype=bool)


def _plain(value: Any) -> Any:
    """A Python value both drivers accept as a parameter."""
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


#: the dtype ``_coerce`` gives each numeric or timestamp type, which it returns as it is (no copy of a long column)
_EXACT = {"timestamp": pd.DatetimeTZDtype("us", "UTC"), "double": np.dtype(np.float64), "bigint": np.dtype(np.int64)}


def _dates(series: pd.Series) -> pd.Series:
    """``datetime.date`` per value (naive, or the UTC date of an aware timestamp), None where missing."""
    converted = pd.to_datetime(series, errors="raise")
    if getattr(converted.dt, "tz", None) is not None:
        converted = converted.dt.tz_convert("UTC").dt.tz_localize(None)
    out = converted.dt.date.astype(object)
    return out.where(converted.notna(), None)


def _texts(series: pd.Series) -> pd.Series:
    """``str`` per value, missing where missing."""
    return series.map(lambda v: None if _is_missing(v) else str(v)).astype(object)


def _per_distinct(series: pd.Series, kind: type) -> tuple[np.ndarray, np.ndarray] | None:
    """(codes, distinct values) of an object column whose present values are all exactly of type ``kind`` (``str``
    or ``datetime.date``) and whose other values are all missing (code -1); None otherwise (then the column is
    converted value by value). Values of one such type are equal only when they are the same value, so converting
    each distinct value once and taking it back per row gives what converting every row gives."""
    if series.dtype != object or not len(series):
        return None
    try:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
    except TypeError:  # unhashable values
        return None
    uniques = np.asarray(uniques, dtype=object)
    if not all(type(v) is kind for v in uniques):
        return None
    absent = codes < 0
    if absent.any() and not all(_is_missing(v) for v in series.to_numpy(object)[absent]):
        return None
    return codes, uniques


def _coerce(series: pd.Series, type_: str, table_name: str, column: str) -> pd.Series:
    """Convert a column to the contract type; raise naming the first bad row.

    A categorical text or date column (a long table's repeated symbols or session) is converted on its categories:
    text stays categorical (the categories converted; DuckDB stores it as the same text), a date becomes the usual
    object column of dates (one ``datetime.date`` per category, shared by its rows).
    """
    if isinstance(series.dtype, pd.CategoricalDtype) and type_ in ("text", "date"):
        categories = _coerce(pd.Series(series.cat.categories.to_numpy(object), dtype=object), type_, table_name, column)
        codes = series.cat.codes.to_numpy()
        if type_ == "text" and categories.notna().all() and categories.is_unique:
            return pd.Series(pd.Categorical.from_codes(codes, categories=pd.Index(categories, dtype=object)))
        values = np.append(categories.to_numpy(object), None)  # code -1 (missing) takes the last: None
        return pd.Series(values[codes], dtype=object)
    distinct = _per_distinct(series, str if type_ == "text" else dt.date) if type_ in ("text", "date") else None
    if distinct is not None:  # the distinct values and a missing one converted as the column is below, taken per row
        codes, uniques = distinct
        values = pd.Series(np.append(uniques, None), dtype=object)
        try:
            converted = (_dates(values) if type_ == "date" else _texts(values)).to_numpy(object)
        except (ValueError, TypeError, OverflowError):
            converted = None  # the column's own conversion names the bad row
        if converted is not None:
            return pd.Series(converted[codes], index=series.index, dtype=object)  # code -1 (missing): the last
    try:
        if type_ == "date":
            return _dates(series)
        if type_ in _EXACT and series.dtype == _EXACT[type_]:  # the contract's dtype already: as it is, no copy
            return series
        if type_ == "timestamp":
            converted = pd.to_datetime(series, errors="raise", utc=True)
            return converted.astype("datetime64[us, UTC]")
        if type_ == "double":
            return pd.to_numeric(series, errors="raise").astype("float64")
        if type_ == "bigint":
            numeric = pd.to_numeric(series, errors="raise")
            if numeric.dtype == object or (numeric.dtype.kind in "uf" and (numeric.abs() >= 2.0**63).any()):
                raise ValueError("integer outside the 64-bit range")  # casting would wrap it silently
            if isinstance(numeric.dtype, np.dtype) and numeric.dtype.kind == "i":  # whole numbers, none missing
                return numeric.astype("int64")
            if numeric.isna().any():
                return numeric.astype("Int64")
            if not np.all(np.mod(numeric.to_numpy(dtype="float64"), 1) == 0):
                raise ValueError("non-integer value")
            return numeric.astype("int64")
        if type_ == "boolean":
            return series.astype("boolean")
        if type_ == "json":
            return series.map(  # a missing value (None, NaN, NaT) is NULL, never the text 'NaN'
                lambda v: v if isinstance(v, str) else (None if _is_missing(v) else json.dumps(v, default=str))
            )
        return _texts(series)
    except (ValueError, TypeError, OverflowError) as exc:
        raise WarehouseError(f"{table_name}: column {column!r} is not {type_}: {exc}") from exc


def _normalize(frame: pd.DataFrame, t: Table) -> pd.DataFrame:
    """Engine-independent dtypes for rows read back."""
    for name in frame.columns:
        c = t.column(name)
        s = frame[name]
        if c.type == "date":
            conv = pd.to_datetime(s)
            frame[name] = conv.dt.date.astype(object).where(conv.notna(), None)
        elif c.type == "timestamp":
            frame[name] = pd.to_datetime(s, utc=True).astype("datetime64[us, UTC]")
        elif c.type == "double":
            frame[name] = pd.to_numeric(s).astype("float64")
        elif c.type == "bigint":
            frame[name] = pd.to_numeric(s).astype("Int64" if s.isna().any() else "int64")
        elif c.type == "boolean":
            frame[name] = s.astype("boolean")
        else:
            frame[name] = s.astype(object).where(s.notna(), None)
    return frame


def _object_values(col: Any, shared: bool = True) -> np.ndarray:
    """``col.to_pylist()`` as an object array. ``shared``: each distinct value (NULL: None) made into a Python object
    once and taken by index (a column of dates or symbols repeats few values), so rows of equal values hold one
    object (``str`` and ``datetime.date``: immutable); otherwise (JSON documents, mostly distinct) one per row."""
    import pyarrow.compute as pc

    n = len(col)
    values = np.empty(n, dtype=object)
    distinct = pc.unique(col) if shared else None
    few = distinct is not None and n >= 2 * len(distinct)
    at = pc.index_in(col, value_set=distinct, skip_nulls=False) if few else None
    if at is None or at.null_count:  # not shared, mostly distinct (little to share), or a value not found
        values[:] = col.to_pylist()
        return values
    lookup = np.empty(len(distinct), dtype=object)
    lookup[:] = distinct.to_pylist()
    np.take(lookup, at.to_numpy(), out=values)
    return values


def _normalize_arrow(arrow: Any, columns: Sequence[str], t: Table) -> pd.DataFrame:
    """The rows of a DuckDB result fetched as Arrow (``columns`` in order) with the dtypes and values
    ``_normalize(pd.DataFrame(cursor.fetchall(), columns=columns), t)`` gives, built column by column without a
    Python object per number or timestamp and without a pandas conversion per column of the frame."""
    n = arrow.num_rows
    index = pd.RangeIndex(n)
    data: dict[str, pd.Series] = {}
    for i, name in enumerate(columns):
        col = arrow.column(i)
        kind = t.column(name).type
        nulls = col.null_count > 0
        if kind in ("date", "text", "json"):  # datetime.date / str objects, None for NULL
            values = _object_values(col, shared=kind != "json")
            data[name] = pd.Series(values, index=index, dtype=object, copy=False)
        elif kind == "double":
            data[name] = pd.Series(col.to_numpy().astype(np.float64, copy=False), index=index, copy=False)
        elif kind == "bigint" and not nulls:
            data[name] = pd.Series(col.to_numpy().astype(np.int64, copy=False), index=index, copy=False)
        else:  # timestamps, booleans and bigint with NULLs: as _normalize converts them
            data[name] = _normalize(pd.DataFrame({name: col.to_pandas()}, index=index), t)[name]
    return pd.DataFrame(data, index=index, copy=False)
