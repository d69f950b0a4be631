"""The same write / read / re-write / crash cases on DuckDB and on the real PostgreSQL."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.contracts import TABLES
from risk_pipeline.warehouse import Between, Warehouse, WarehouseError

D1, D2 = dt.date(2026, 11, 19), dt.date(2026, 11, 20)


def prices(day: dt.date, closes: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "as_of_date": [day] * len(closes),
            "symbol": list(closes),
            "open": list(closes.values()),
            "high": [c * 1.01 for c in closes.values()],
            "low": [c * 0.99 for c in closes.values()],
            "close": list(closes.values()),
            "volume": [1000.0] * len(closes),
            "event_flag": [None] * len(closes),
            "source": ["test"] * len(closes),
        }
    )


@contextlib.contextmanager
def one_connection(warehouse: Warehouse) -> Iterator[Warehouse]:
    """``warehouse`` on one held connection (``keep_open``) for the block, closed after it."""
    warehouse.keep_open = True
    try:
        yield warehouse
    finally:
        warehouse.close()


def test_every_contract_table_is_created(warehouse: Warehouse) -> None:
    # one connection for the loop (the file opened once, not twice per table: about 10 s of DuckDB catalog reads);
    # it is opened after ensure_tables closed its own, so it still sees only what was stored
    with one_connection(warehouse):
        for name in TABLES:
            assert warehouse.table_exists(name), name
            assert warehouse.row_count(name) == 0


def test_write_read_round_trip_keeps_values_and_types(warehouse: Warehouse) -> None:
    frame = prices(D1, {"AAA": 101.25, "BBB": 55.5})
    frame.loc[1, "event_flag"] = "earnings"
    assert warehouse.write("market_prices", frame, run_id="run-1") == 2
    got = warehouse.read("market_prices")
    assert list(got["symbol"]) == ["AAA", "BBB"]
    assert got["as_of_date"].tolist() == [D1, D1]
    assert got["close"].tolist() == [101.25, 55.5]
    assert got["event_flag"].tolist() == [None, "earnings"]
    assert set(got["run_id"]) == {"run-1"}
    assert str(got["materialized_at"].dtype) == "datetime64[us, UTC]"


def test_rewrite_replaces_only_its_partition_and_is_idempotent(warehouse: Warehouse) -> None:
    warehouse.write("market_prices", prices(D1, {"AAA": 100.0, "BBB": 50.0}), run_id="r1")
    warehouse.write("market_prices", prices(D2, {"AAA": 101.0, "BBB": 51.0}), run_id="r1")
    new_d2 = prices(D2, {"AAA": 102.0})
    warehouse.write("market_prices", new_d2, run_id="r2")
    first = warehouse.read("market_prices", columns=["as_of_date", "symbol", "close"])
    warehouse.write("market_prices", new_d2, run_id="r2")
    second = warehouse.read("market_prices", columns=["as_of_date", "symbol", "close"])
    pd.testing.assert_frame_equal(first, second)
    assert first.to_records(index=False).tolist() == [
        (D1, "AAA", 100.0),
        (D1, "BBB", 50.0),
        (D2, "AAA", 102.0),
    ]


def test_empty_write_with_explicit_partition_clears_it(warehouse: Warehouse) -> None:
    warehouse.write("market_prices", prices(D2, {"AAA": 101.0}), run_id="r1")
    warehouse.write("market_prices", prices(D2, {}), run_id="r2", partitions=[{"as_of_date": D2}])
    assert warehouse.row_count("market_prices") == 0


def test_crash_in_the_middle_leaves_previous_version(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    warehouse.write("market_prices", prices(D2, {"AAA": 101.0, "BBB": 51.0}), run_id="good")
    original = Warehouse._insert_rows

    def insert_half_then_die(self: Warehouse, con: object, t: object, rows: pd.DataFrame) -> None:
        original(self, con, t, rows.iloc[:1])
        raise RuntimeError("process killed mid-write")

    monkeypatch.setattr(Warehouse, "_insert_rows", insert_half_then_die)
    with pytest.raises(RuntimeError, match="mid-write"):
        warehouse.write("market_prices", prices(D2, {"AAA": 999.0, "BBB": 999.0}), run_id="bad")
    monkeypatch.undo()
    got = warehouse.read("market_prices")
    assert got["close"].tolist() == [101.0, 51.0]
    assert set(got["run_id"]) == {"good"}
    # and a retry afterwards gives the new version
    warehouse.write("market_prices", prices(D2, {"AAA": 999.0, "BBB": 999.0}), run_id="retry")
    assert warehouse.read("market_prices")["close"].tolist() == [999.0, 999.0]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["close"]), "missing contract columns"),
        (lambda f: f.assign(extra=1), "not in the contract"),
        (lambda f: pd.concat([f, f]), "duplicate key"),
        (lambda f: f.assign(close=[np.nan, 1.0]), "NULL in NOT NULL column 'close' at row 1"),
        (lambda f: f.assign(close=["abc", "1"]), "column 'close' is not double"),
    ],
)
def test_contract_breaches_are_refused_and_nothing_written(warehouse: Warehouse, mutate: object, message: str) -> None:
    warehouse.write("market_prices", prices(D1, {"AAA": 1.0}), run_id="r0")
    bad = mutate(prices(D2, {"AAA": 100.0, "BBB": 50.0}))  # type: ignore[operator]
    with pytest.raises(WarehouseError, match=message):
        warehouse.write("market_prices", bad, run_id="r1")
    assert warehouse.row_count("market_prices") == 1


def test_rows_outside_declared_partitions_are_refused(warehouse: Warehouse) -> None:
    with pytest.raises(WarehouseError, match="outside the partitions"):
        warehouse.write("market_prices", prices(D1, {"AAA": 1.0}), run_id="r", partitions=[{"as_of_date": D2}])


def test_reads_are_parameterized(warehouse: Warehouse) -> None:
    warehouse.write("market_prices", prices(D1, {"AAA": 1.0, "O'HARE; DROP TABLE x": 2.0}), run_id="r")
    got = warehouse.read("market_prices", {"symbol": "O'HARE; DROP TABLE x"})
    assert got["close"].tolist() == [2.0]
    assert warehouse.read("market_prices", {"symbol": ["AAA", "nope"]})["close"].tolist() == [1.0]
    assert len(warehouse.read("market_prices", {"as_of_date": Between(D1, D2)})) == 2
    assert warehouse.query("SELECT COUNT(*) AS n FROM risk.market_prices WHERE close > ?", [1.5])["n"][0] == 1
    with pytest.raises(KeyError):
        warehouse.read("market_prices", {"symbol; drop": "x"})


def test_timestamps_round_trip_in_utc(warehouse: Warehouse) -> None:
    frame = pd.DataFrame(
        {
            "event_id": ["fomc-2026-12-09", "cpi-2026-12-10"],
            "event_type": ["fomc", "cpi"],
            "symbol": [None, None],
            "event_time": [pd.Timestamp("2026-12-09T19:00:00Z"), pd.Timestamp("2026-12-10T08:30:00-05:00")],
            "source": ["test", "test"],
            "notes": [None, "Nov 2026 CPI"],
        }
    )
    warehouse.write("event_calendar", frame, run_id="r")
    got = warehouse.read("event_calendar", order_by=["event_time"])
    assert got["event_time"].tolist() == [
        pd.Timestamp("2026-12-09T19:00:00Z"),
        pd.Timestamp("2026-12-10T13:30:00Z"),
    ]
    # whole-table replace: a second write leaves only its rows
    warehouse.write("event_calendar", frame.iloc[:1], run_id="r2")
    assert warehouse.row_count("event_calendar") == 1


def test_append_adds_only_new_keys(warehouse: Warehouse) -> None:
    row = pd.DataFrame(
        {
            "asset": ["market_prices"],
            "partition_key": ["2026-11-20"],
            "row_number": [3],
            "check_name": ["prices_positive"],
            "reason": ["close > 0"],
            "source_file": ["market_prices/2026-11-20.csv"],
            "row": ['{"close": -1}'],
            "quarantined_at": [pd.Timestamp("2026-11-20T21:00:00Z")],
        }
    )
    # quarantine's key includes run_id, which append() sets: same run, same row -> no duplicate
    assert warehouse.append("quarantine", row, run_id="r1") == 1
    assert warehouse.append("quarantine", row, run_id="r1") == 0
    assert warehouse.row_count("quarantine") == 1


def test_append_record_is_append_for_one_row(warehouse: Warehouse) -> None:
    record = {
        "audit_id": "a1",
        "at": pd.Timestamp("2026-11-20T21:00:00Z"),
        "actor": "test",
        "decision_type": "pre_trade",
        "book": "core",
        "subject": "buy 10 AAA",
        "decision": "approve",
        "inputs": '{"order": 1}',
    }
    assert warehouse.append_record("audit_trail", record, run_id="r1") == 1
    assert warehouse.append_record("audit_trail", record, run_id="r2") == 0  # the key is stored already
    stored = warehouse.read("audit_trail")
    assert len(stored) == 1 and stored["run_id"].iloc[0] == "r1" and stored["at"].iloc[0] == record["at"]
    with pytest.raises(WarehouseError, match="missing \\['inputs'\\]"):
        warehouse.append_record("audit_trail", {k: v for k, v in record.items() if k != "inputs"}, run_id="r1")
    with pytest.raises(WarehouseError, match="NOT NULL"):
        warehouse.append_record("audit_trail", {**record, "audit_id": "a2", "decision": None}, run_id="r1")


def test_same_rows_read_back_identically_on_both_engines(tmp_path: object, pg_server_url: str) -> None:
    frame = prices(D1, {"AAA": 101.25, "BBB": 55.5})
    frames = []
    stamp = dt.datetime(2026, 11, 20, 21, 0, tzinfo=dt.UTC)
    for url in (str(tmp_path) + "/w.duckdb", pg_server_url):  # type: ignore[operator]
        wh = Warehouse(url)
        if wh.engine == "postgres":
            wh.execute("DROP SCHEMA IF EXISTS risk CASCADE")
        wh.ensure_tables(["market_prices"])
        wh.write("market_prices", frame, run_id="r", materialized_at=stamp)
        frames.append(wh.read("market_prices"))
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_a_column_of_another_type_needs_a_migration(warehouse: Warehouse) -> None:
    warehouse.execute("ALTER TABLE risk.rates_curve DROP COLUMN zero_rate")
    warehouse.execute("ALTER TABLE risk.rates_curve ADD COLUMN zero_rate TEXT")
    with pytest.raises(WarehouseError, match=r"column 'zero_rate' is .*the contract says DOUBLE"):
        warehouse.ensure_tables()


@pytest.mark.postgres
def test_processes_starting_on_an_empty_postgres_database_create_the_schema_once(pg_server_url: str) -> None:
    """The first production run starts several step processes at once: none may fail creating tables."""
    import subprocess
    import sys

    Warehouse(pg_server_url).execute("DROP SCHEMA IF EXISTS risk CASCADE")
    code = "import sys; from risk_pipeline.warehouse import Warehouse; Warehouse(sys.argv[1]).ensure_tables()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, pg_server_url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    wh = Warehouse(pg_server_url)
    assert all(wh.table_exists(name) for name in TABLES)


def test_missing_json_value_is_null_not_the_text_nan(warehouse: Warehouse) -> None:
    stamp = pd.Timestamp("2026-11-20T21:00:00Z")
    rows = pd.DataFrame(
        {
            "as_of": [stamp, stamp],
            "book": ["a", "b"],
            "state": ["ACTIVE", "REDUCING"],
            "preservation_level": ["none", "light"],
            "reason": ["ok", "drawdown"],
            "previous_state": [None, None],
            "since": [stamp, stamp],
            "triggering_limits": [np.nan, ["max_drawdown_pct"]],
            "clear_count": [0, 0],
            "level_since": [stamp, stamp],
            "target_state": ["ACTIVE", "REDUCING"],
            "target_level": ["none", "light"],
            "target_gross_cut": [0.0, 0.25],
            "reference_gross": [np.nan, 1e6],
            "hedges_required": [False, False],
            "flatten_speculative": [False, False],
        }
    )
    warehouse.write("trading_state", rows, run_id="r")
    got = warehouse.read("trading_state").sort_values("book")["triggering_limits"].tolist()
    assert got == [None, '["max_drawdown_pct"]']


def _typed_rows(t: object, n: int) -> pd.DataFrame:
    """``n`` rows of a contract table: every column filled, and every nullable non-key column NULL in the odd
    rows (keys differ between rows)."""
    import json

    stamp = pd.Timestamp("2026-11-20T21:00:00Z")
    rows = []
    for i in range(n):
        values = {
            "date": D1 + dt.timedelta(days=i),
            "timestamp": stamp + pd.Timedelta(minutes=37 * i, microseconds=i),
            "double": 1.5 + i / 3,
            "bigint": 2**53 + 1 + i,
            "text": f"x{i}",
            "boolean": i % 4 == 0,
            "json": json.dumps({"i": i}),
        }
        rows.append(
            {
                c.name: None if i % 2 and c.nullable and c.name not in t.key else values[c.type]  # type: ignore[attr-defined]
                for c in t.columns  # type: ignore[attr-defined]
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("warehouse", ["duckdb"], indirect=True)
def test_duckdb_reads_equal_row_by_row_fetching(warehouse: Warehouse) -> None:
    """``read`` fetches DuckDB results as Arrow: every table's rows (NULLs in every nullable column, 64-bit
    integers above 2**53, microsecond timestamps), an empty result and a column subset come back with the same
    dtypes, values and value types as fetching the rows one by one and normalizing them (the previous path)."""
    # one connection for every write and read (``keep_open``, as the service's warehouses): what is compared is
    # the rows each read returns, not the opening of the file, which cost about 600 catalog reads and checkpoints
    with one_connection(warehouse):
        _compare_reads_with_row_by_row_fetching(warehouse)


def _compare_reads_with_row_by_row_fetching(warehouse: Warehouse) -> None:
    from risk_pipeline.warehouse import _ident, _normalize

    for name, t in TABLES.items():
        rows = _typed_rows(t, 4)
        if t.append_only:
            warehouse.append(name, rows, run_id="r")
        else:
            warehouse.write(name, rows, run_id="r")
        for columns, where in ((None, None), (None, {t.key[0]: "no such value"}), (list(t.key), None)):
            cols = columns or t.column_names
            if where is not None and t.column(t.key[0]).type != "text":
                continue
            got = warehouse.read(name, where, columns=columns)
            sql = f"SELECT {', '.join(_ident(c) for c in cols)} FROM risk.{name}"
            params = []
            if where:
                sql += f" WHERE {_ident(t.key[0])} = ?"
                params = [where[t.key[0]]]
            sql += " ORDER BY " + ", ".join(_ident(k) for k in t.key if k in cols)
            with warehouse.connect() as con:
                expected = _normalize(pd.DataFrame(con.execute(sql, params).fetchall(), columns=cols), t)
            pd.testing.assert_frame_equal(got, expected, check_exact=True)
            for c in cols:
                assert got[c].map(type).tolist() == expected[c].map(type).tolist(), (name, c)
        assert len(warehouse.read(name)) == 4, name


def test_object_columns_from_arrow_equal_pyarrows_own_conversion() -> None:
    """Date and text columns read through Arrow: each distinct value converted once and taken by index gives the
    values, value types and NULLs (None) of pyarrow's row-by-row ``to_pylist``, for repeated values over several
    chunks, NULLs, all-NULL, mostly distinct and empty columns."""
    import pyarrow as pa

    from risk_pipeline.warehouse import _object_values

    rng = np.random.default_rng(7)
    days = [dt.date(2026, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 30, 500)]
    names = [f"S{int(i)}" for i in rng.integers(0, 40, 500)]
    cases = []
    for values, kind in ((days, pa.date32()), (names, pa.string()), (names, pa.large_string())):
        with_nulls = [None if i % 7 == 3 else v for i, v in enumerate(values)]
        cases.append(pa.chunked_array([pa.array(values[:200], kind), pa.array(values[200:], kind)]))
        cases.append(pa.chunked_array([pa.array(with_nulls[:123], kind), pa.array(with_nulls[123:], kind)]))
        cases.append(pa.chunked_array([pa.array([None] * 50, kind)]))
        cases.append(pa.chunked_array([pa.array(values[:3], kind)]))
        cases.append(pa.chunked_array([], kind))
    cases.append(pa.chunked_array([pa.array([f"n{i}" for i in range(100)])]))  # every value distinct
    for col in cases:
        got = _object_values(col)
        want = col.to_pylist()
        assert got.dtype == object and got.shape == (len(want),)
        assert got.tolist() == want
        assert [type(v) for v in got] == [type(v) for v in want]


def test_ensure_tables_reads_the_catalog_once_with_what_each_table_query_gives(warehouse: Warehouse) -> None:
    """One catalog query for the schema gives each table's columns as the query per table does; a dropped table is
    created again and a missing nullable column added."""
    warehouse.execute("DROP TABLE risk.rates_curve")
    nullable = next(c for c in TABLES["option_quotes"].columns if c.nullable)
    warehouse.execute(f"ALTER TABLE risk.option_quotes DROP COLUMN {nullable.name}")
    warehouse.ensure_tables()
    with warehouse.connect() as con:
        every = warehouse._schema_columns(con)
        per_table = {name: warehouse._existing_columns(con, name) for name in TABLES}
    assert every == per_table
    assert nullable.name in every["option_quotes"] and "zero_rate" in every["rates_curve"]


def test_duplicated_keys_is_pandas_duplicated_keep_false() -> None:
    """Against ``DataFrame.duplicated(subset=key, keep=False)`` on keys of every kind the warehouse writes:
    categoricals (unused categories, missing codes), object text and dates with None and NaN, tz-aware
    timestamps with NaT, floats with -0.0 and NaN, nullable integers, booleans; small and large code spaces
    (renumbered), no rows, one row."""
    from risk_pipeline.warehouse import duplicated_keys

    rng = np.random.default_rng(11)
    for trial in range(60):
        n = int(rng.choice([0, 1, 2, 7, 300, 5000]))
        k = int(rng.integers(1, 4 if trial % 2 else 400))

        def pick(values: list[object], n: int = n) -> list[object]:
            return [values[i] for i in rng.integers(0, len(values), n)]

        cats = [f"s{i}" for i in range(k)] + ["unused"]
        codes = rng.integers(-1 if trial % 3 == 0 else 0, k, n)
        frame = pd.DataFrame(
            {
                "cat": pd.Categorical.from_codes(codes, categories=cats),
                "text": pick([f"t{i}" for i in range(k)] + [None, np.nan]),
                "date": pick([dt.date(2026, 1, 1) + dt.timedelta(days=i) for i in range(k)] + [None]),
                "ts": pd.Series(
                    pd.to_datetime(pick([f"2026-01-0{1 + i % 9} 10:00" for i in range(k)] + [None]), utc=True)
                ),
                "x": pick([0.0, -0.0, 1.5, np.nan, 2.25][: 2 + k % 4]),
                "i": pd.array(pick([1, 2, None, 3]), dtype="Int64"),
                "b": pick([True, False]),
                "big": rng.integers(0, max(1, n * 3), n),
            }
        )
        columns = list(frame.columns)
        for _ in range(4):
            key = [columns[j] for j in rng.choice(len(columns), int(rng.integers(1, 5)), replace=False)]
            expected = frame.duplicated(subset=key, keep=False).to_numpy(bool)
            got = duplicated_keys(frame, key)
            assert got.dtype == bool and got.shape == (n,)
            np.testing.assert_array_equal(got, expected, err_msg=f"trial {trial}, key {key}")
