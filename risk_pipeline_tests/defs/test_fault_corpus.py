"""A corpus of defective folder sources: every defect blocks the run through the checks, reaches
quarantine with file, row and rule, and leaves the published tables as they were.

One good warehouse (sessions 2026-11-18..2026-11-20 loaded as one range run) is built per test
session and copied for each case, so a case costs one run.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from risk_pipeline.cli import step_failure_messages
from risk_pipeline.definitions import build_definitions
from risk_pipeline.defs.market_data.assets import option_quotes
from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.folder_fixture import SNAPSHOT, edit_csv, write_good_folder

DAY = "2026-11-20"
FIRST, MIDDLE = "2026-11-18", "2026-11-19"
PRICES = f"market_prices/{DAY}.csv"
QUOTES = f"option_quotes/{DAY}/{SNAPSHOT}.csv"
POSITIONS = f"positions/{DAY}.csv"
CURVE = f"rates_curve/{DAY}.csv"
EARNINGS = "event_calendar/earnings.csv"


class Pipeline:
    """The real definitions on a DuckDB (or PostgreSQL) warehouse and a folder source."""

    def __init__(self, folder: Path, url: str, exports: Path, **market: object) -> None:
        self.folder = folder
        self.url = url
        self.instance = dg.DagsterInstance.ephemeral()
        self.resources = {
            "warehouse": WarehouseResource(url=url),
            "market_data": MarketDataResource(kind="folder", folder=str(folder), **market),  # type: ignore[arg-type]
            "exports": ExportsResource(root=str(exports)),
        }
        self.defs = build_definitions(self.resources, executor=dg.in_process_executor)

    def run(
        self, partition: str | None = DAY, *, first: str | None = None, job: str = "market_data_job"
    ) -> dg.ExecuteInProcessResult:
        job_def = self.defs.resolve_job_def(job)
        if first is not None:
            tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": DAY}
            return job_def.execute_in_process(instance=self.instance, tags=tags, raise_on_error=False)
        return job_def.execute_in_process(instance=self.instance, partition_key=partition, raise_on_error=False)

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.url)


@pytest.fixture(scope="session")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder source and a warehouse holding all three sessions, loaded as one range run."""
    root = tmp_path_factory.mktemp("golden")
    p = Pipeline(write_good_folder(root / "folder"), str(root / "wh" / "risk_warehouse.duckdb"), root / "exports")
    assert p.run(first=FIRST).success
    assert p.warehouse.row_count("quarantine") == 0
    return root


def _copy(golden: Path, tmp_path: Path, **market: object) -> Pipeline:
    shutil.copytree(golden / "folder", tmp_path / "folder")
    (tmp_path / "wh").mkdir()
    shutil.copy(golden / "wh" / "risk_warehouse.duckdb", tmp_path / "wh" / "risk_warehouse.duckdb")
    return Pipeline(tmp_path / "folder", str(tmp_path / "wh" / "risk_warehouse.duckdb"), tmp_path / "exports", **market)


def _published(wh: Warehouse, *tables: str) -> dict[str, pd.DataFrame]:
    """The stored rows of ``tables`` (run_id and materialized_at included: "unchanged" means not rewritten)."""
    return {t: wh.read(t) for t in tables}


def _assert_unchanged(before: dict[str, pd.DataFrame], wh: Warehouse) -> None:
    for t, frame in before.items():
        pd.testing.assert_frame_equal(wh.read(t), frame, obj=t)


def _step_failures(result: dg.ExecuteInProcessResult) -> list[object]:
    return [e.event_specific_data for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


def _assert_blocked_cleanly(result: dg.ExecuteInProcessResult, asset: str) -> str:
    """The step of ``asset`` failed by a data-quality Failure (a message, not an uncaught error)."""
    assert not result.success
    failures = _step_failures(result)
    assert failures, "the run failed without a step failure"
    for data in failures:
        assert data.user_failure_data is not None, f"uncaught error, not a check failure: {data.error.message}"
    message = "\n".join(step_failure_messages(result))
    assert f"step {asset} failed" in message, message
    return message


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


# ---------------------------------------------------------------------- defects
Corruption = Callable[[Path], None]


def _rewrite(path: Path, fn: Callable[[list[str]], list[str]]) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


def _not_utf8(f: Path) -> None:
    text = (f / PRICES).read_text().splitlines()
    head, first = text[0], text[1]
    body = "\n".join([head, first[:-1] + "caf\xe9", *text[2:]]) + "\n"  # event_flag 'café' in Latin-1
    (f / PRICES).write_bytes(body.encode("latin-1"))


def _extra_field(f: Path) -> None:
    _rewrite(f / PRICES, lambda lines: [*lines[:2], lines[2] + ",surplus", *lines[3:]])


def _missing_field(f: Path) -> None:
    _rewrite(f / PRICES, lambda lines: [lines[0], lines[1].rsplit(",", 1)[0], *lines[2:]])


def _unbalanced_quote(f: Path) -> None:
    _rewrite(f / PRICES, lambda lines: [lines[0], lines[1].replace("AAA", '"AAA', 1), *lines[2:]])


def _corrupt_parquet(f: Path) -> None:
    (f / POSITIONS).unlink()
    (f / "positions" / f"{DAY}.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")


def _snapshot_not_a_time(f: Path) -> None:
    shutil.copy(f / QUOTES, f / "option_quotes" / DAY / "2045Z.csv")


def _snapshot_name_without_z(f: Path) -> None:
    shutil.copy(f / QUOTES, f / "option_quotes" / DAY / "latest.csv")


def _session_file_misnamed(f: Path) -> None:
    shutil.copy(f / PRICES, f / "market_prices" / f"{DAY}-corrected.csv")


def _rename_column(path: Path, old: str, new: str) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.rename(columns={old: new}).to_csv(path, index=False)


def _add_column(path: Path, name: str, value: str) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.assign(**{name: value}).to_csv(path, index=False)


def _drop_column(path: Path, name: str) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.drop(columns=[name]).to_csv(path, index=False)


def _frozen_feed(f: Path) -> None:
    frame = pd.read_csv(f / f"market_prices/{MIDDLE}.csv", dtype=str, keep_default_na=False)
    frame.assign(as_of_date=DAY).to_csv(f / PRICES, index=False)


def _drop_symbol(f: Path) -> None:
    frame = pd.read_csv(f / PRICES, dtype=str, keep_default_na=False)
    frame[frame["symbol"] != "AAA"].to_csv(f / PRICES, index=False)


def _chain_off_close(f: Path) -> None:
    frame = pd.read_csv(f / QUOTES, dtype=str, keep_default_na=False)
    frame["underlying_price"] = str(99.5 * 1.2)
    frame.to_csv(f / QUOTES, index=False)


@dataclass(frozen=True)
class Case:
    id: str
    corrupt: Corruption
    asset: str
    rule: str
    file: str
    row: int
    says: tuple[str, ...] = ()


CASES = [
    # file-level failures: read errors become rule `readable`, row 0 when the file cannot be parsed at all
    Case("not_utf8", _not_utf8, "market_prices", "readable", PRICES, 0, ("not UTF-8",)),
    Case("extra_field", _extra_field, "market_prices", "readable", PRICES, 2, ("9 fields", "header has 8")),
    Case("missing_field", _missing_field, "market_prices", "readable", PRICES, 1, ("7 fields", "header has 8")),
    Case("unbalanced_quote", _unbalanced_quote, "market_prices", "readable", PRICES, 0, ("line 2",)),
    Case("corrupt_parquet", _corrupt_parquet, "positions", "readable", f"positions/{DAY}.parquet", 0, ("Parquet",)),
    Case(
        "snapshot_name_not_a_time",
        _snapshot_not_a_time,
        "option_quotes",
        "readable",
        f"option_quotes/{DAY}/2045Z.csv",
        0,
        ("HHMMSSZ",),
    ),
    Case(
        "snapshot_name_without_z",
        _snapshot_name_without_z,
        "option_quotes",
        "readable",
        f"option_quotes/{DAY}/latest.csv",
        0,
        ("HHMMSSZ",),
    ),
    Case(
        "session_file_misnamed",
        _session_file_misnamed,
        "market_prices",
        "readable",
        f"market_prices/{DAY}-corrected.csv",
        0,
        ("YYYY-MM-DD",),
    ),
    # values that used to pass the rules and then break (or wrap in) the warehouse cast
    Case("fractional_tenor", lambda f: edit_csv(f / CURVE, 2, tenor_days="91.5"), "rates_curve", "types", CURVE, 2),
    Case(
        "tenor_beyond_int64",
        lambda f: edit_csv(f / CURVE, 1, tenor_days="99999999999999999999"),
        "rates_curve",
        "types",
        CURVE,
        1,
    ),
    # non-finite numbers
    Case("inf_volume", lambda f: edit_csv(f / PRICES, 1, volume="inf"), "market_prices", "types", PRICES, 1),
    Case("inf_last", lambda f: edit_csv(f / QUOTES, 3, last="-inf"), "option_quotes", "types", QUOTES, 3),
    Case(
        "inf_cost_basis", lambda f: edit_csv(f / POSITIONS, 2, cost_basis="1e999"), "positions", "types", POSITIONS, 2
    ),
    # identifiers
    Case(
        "bidi_override_symbol",
        lambda f: edit_csv(f / PRICES, 2, symbol="BB\u202eB"),
        "market_prices",
        "identifiers_valid",
        PRICES,
        2,
        ("U+202E",),
    ),
    Case(
        "control_char_book",
        lambda f: edit_csv(f / POSITIONS, 1, book="core\x07"),
        "positions",
        "identifiers_valid",
        POSITIONS,
        1,
    ),
    Case(
        "space_in_position_id",
        lambda f: edit_csv(f / POSITIONS, 2, position_id="core AAA call"),
        "positions",
        "identifiers_valid",
        POSITIONS,
        2,
    ),
    Case(
        "lower_case_underlying",
        lambda f: edit_csv(f / QUOTES, 4, underlying="aaa"),
        "option_quotes",
        "identifiers_valid",
        QUOTES,
        4,
    ),
    Case(
        "zero_width_in_strategy",
        lambda f: edit_csv(f / POSITIONS, 1, strategy="covered\u200bcall"),
        "positions",
        "identifiers_valid",
        POSITIONS,
        1,
    ),
    # headers that do not match the contract
    Case(
        "misspelled_optional_column",
        lambda f: _rename_column(f / POSITIONS, "sector", "sectr"),
        "positions",
        "schema",
        POSITIONS,
        1,
        ("unknown columns ['sectr']", "missing columns ['sector']"),
    ),
    Case(
        "unknown_column",
        lambda f: _add_column(f / PRICES, "comment", "checked"),
        "market_prices",
        "schema",
        PRICES,
        2,
        ("unknown columns ['comment']",),
    ),
    Case(
        "optional_column_left_out",
        lambda f: _drop_column(f / PRICES, "event_flag"),
        "market_prices",
        "schema",
        PRICES,
        1,
        ("missing columns ['event_flag']",),
    ),
    # valid row by row, wrong as a whole
    Case("frozen_feed", _frozen_feed, "market_prices", "bars_not_repeated", PRICES, 2),
    Case("held_symbol_unpriced", _drop_symbol, "positions", "symbols_priced", POSITIONS, 2, ("AAA",)),
    Case("chain_off_the_close", _chain_off_close, "option_quotes", "underlying_matches_close", QUOTES, 2),
    Case(
        "earnings_file_missing",
        lambda f: (f / EARNINGS).unlink(),
        "event_calendar",
        "future_events_kept",
        "data/event_calendar/macro_events.csv",
        0,
        ("earn-AAA-2027-01-28",),
    ),
    Case(
        "earnings_file_empty",
        lambda f: (f / EARNINGS).write_text("event_id,event_type,symbol,event_time,source,notes\n"),
        "event_calendar",
        "future_events_kept",
        EARNINGS,
        0,
        ("earn-AAA-2027-01-28",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_defect_blocks_quarantines_and_keeps_published_tables(golden: Path, tmp_path: Path, case: Case) -> None:
    p = _copy(golden, tmp_path)
    before = _published(p.warehouse, case.asset)
    case.corrupt(p.folder)
    result = p.run()
    message = _assert_blocked_cleanly(result, case.asset)
    assert f"rule {case.rule} " in message, message
    if case.row:
        assert f"file {case.file} row {case.row}" in message, message
    else:  # a table-level entry may name several files
        assert case.file in message and " row 0" in message, message
    for fragment in case.says:
        assert fragment in message, message
    quarantined = p.warehouse.read("quarantine", {"asset": case.asset, "check_name": case.rule})
    hits = quarantined[
        (quarantined["row_number"] == case.row)
        & quarantined["source_file"].fillna("").str.contains(case.file, regex=False)
    ]
    assert len(hits) == 1, quarantined[["row_number", "source_file", "reason"]].to_string()
    _assert_unchanged(before, p.warehouse)


# ---------------------------------------------------------------------- a backfill deletes only what it replaces
@pytest.mark.parametrize("table", ["market_prices", "positions", "rates_curve"])
def test_range_with_a_missing_session_fails_by_default_and_deletes_nothing(
    golden: Path, tmp_path: Path, table: str
) -> None:
    p = _copy(golden, tmp_path)
    before = _published(p.warehouse, table)
    (p.folder / table / f"{MIDDLE}.csv").unlink()
    result = p.run(first=FIRST)
    message = _assert_blocked_cleanly(result, table)
    assert "rule row_count_in_range " in message and f"session {MIDDLE}: 0 rows" in message, message
    q = p.warehouse.read("quarantine", {"asset": table, "check_name": "row_count_in_range"})
    assert q["row_number"].tolist() == [0] and MIDDLE in q["reason"].iloc[0]
    _assert_unchanged(before, p.warehouse)


@pytest.mark.parametrize("table", ["market_prices", "positions", "rates_curve"])
def test_range_with_a_missing_session_keeps_it_when_configured(golden: Path, tmp_path: Path, table: str) -> None:
    p = _copy(golden, tmp_path, missing_session_policy="keep")
    before = p.warehouse.read(table)
    (p.folder / table / f"{MIDDLE}.csv").unlink()
    _add_column(p.folder / table / f"{DAY}.csv", "source", "rewritten")  # proves the other sessions are written
    result = p.run(first=FIRST)
    assert result.success, step_failure_messages(result)
    after = p.warehouse.read(table)
    middle = dt.date.fromisoformat(MIDDLE)
    cols = [c for c in after.columns if c not in ("run_id", "materialized_at")]
    pd.testing.assert_frame_equal(
        after[after["as_of_date"] == middle].reset_index(drop=True),
        before[before["as_of_date"] == middle].reset_index(drop=True),
    )
    assert "rewritten" in set(after.loc[after["as_of_date"] == dt.date.fromisoformat(DAY), "source"])
    assert len(after[cols]) == len(before[cols])
    meta = _metadata(result, table)
    assert meta["missing_sessions"] == MIDDLE
    assert meta["sessions_written"] == 2


def test_price_history_job_with_a_missing_session_deletes_nothing(golden: Path, tmp_path: Path) -> None:
    p = _copy(golden, tmp_path)
    before = _published(p.warehouse, "rates_curve", "atm_vol_history")
    (p.folder / "rates_curve" / f"{MIDDLE}.csv").unlink()
    result = p.run(first=FIRST, job="price_history_job")
    message = _assert_blocked_cleanly(result, "rates_curve")
    assert f"session {MIDDLE}: 0 rows (no such file)" in message, message
    assert f"file rates_curve/{MIDDLE}.csv row 0" in message, message
    _assert_unchanged(before, p.warehouse)


def test_row_count_applies_per_session(golden: Path, tmp_path: Path) -> None:
    p = _copy(golden, tmp_path)
    before = _published(p.warehouse, "market_prices")
    (p.folder / f"market_prices/{MIDDLE}.csv").write_text("as_of_date,symbol,open,high,low,close,volume,event_flag\n")
    result = p.run(first=FIRST)
    message = _assert_blocked_cleanly(result, "market_prices")
    assert f"session {MIDDLE}: 0 rows" in message and f"market_prices/{MIDDLE}.csv" in message, message
    _assert_unchanged(before, p.warehouse)


def test_a_single_session_without_input_always_fails(golden: Path, tmp_path: Path) -> None:
    p = _copy(golden, tmp_path, missing_session_policy="keep")
    before = _published(p.warehouse, "market_prices")
    (p.folder / PRICES).unlink()
    message = _assert_blocked_cleanly(p.run(), "market_prices")
    assert f"session {DAY}: 0 rows" in message, message
    _assert_unchanged(before, p.warehouse)


@pytest.mark.postgres
def test_range_with_a_missing_session_deletes_nothing_on_postgres(pg_server_url: str, tmp_path: Path) -> None:
    from risk_pipeline_tests.conftest import _fresh_pg

    _fresh_pg(pg_server_url)
    p = Pipeline(write_good_folder(tmp_path / "folder"), pg_server_url, tmp_path / "exports")
    assert p.run(first=FIRST).success
    before = _published(p.warehouse, "market_prices", "positions", "rates_curve")
    for table in ("market_prices", "positions", "rates_curve"):
        (p.folder / table / f"{MIDDLE}.csv").unlink()
    result = p.run(first=FIRST)
    _assert_blocked_cleanly(result, "market_prices")
    _assert_unchanged(before, p.warehouse)


# ---------------------------------------------------------------------- the calendar does not shrink silently
def test_a_cancelled_event_may_leave_the_calendar(golden: Path, tmp_path: Path) -> None:
    p = _copy(golden, tmp_path)
    edit_csv(p.folder / EARNINGS, 1, notes="cancelled: company withdrew guidance date")
    assert p.run().success
    stored = p.warehouse.read("event_calendar", {"event_id": "earn-AAA-2027-01-28"})
    assert stored["notes"].tolist() == ["cancelled: company withdrew guidance date"]
    (p.folder / EARNINGS).write_text("event_id,event_type,symbol,event_time,source,notes\n")
    assert p.run().success  # the event was cancelled: dropping it now removes nothing live
    assert p.warehouse.row_count("event_calendar", {"event_id": "earn-AAA-2027-01-28"}) == 0


def test_a_past_event_may_leave_the_calendar(golden: Path, tmp_path: Path) -> None:
    p = _copy(golden, tmp_path)
    frame = pd.read_csv(p.folder / EARNINGS, dtype=str, keep_default_na=False)
    past = frame.assign(event_id="earn-AAA-2026-10-28", event_time="2026-10-28T21:00:00Z")
    pd.concat([frame, past]).to_csv(p.folder / EARNINGS, index=False)
    assert p.run().success
    frame.to_csv(p.folder / EARNINGS, index=False)
    assert p.run().success
    assert p.warehouse.row_count("event_calendar", {"event_id": "earn-AAA-2026-10-28"}) == 0


# ---------------------------------------------------------------------- the chain against the close, intraday
def test_intraday_chain_is_compared_with_the_previous_close_and_a_wider_tolerance(golden: Path, tmp_path: Path) -> None:
    p = _copy(golden, tmp_path)
    wh = p.warehouse
    wh.execute("DELETE FROM risk.market_prices WHERE as_of_date = ?", [dt.date.fromisoformat(DAY)])  # before the close
    quotes = pd.read_csv(p.folder / QUOTES, dtype=str, keep_default_na=False)
    # 17:00 UTC, 4 hours before the close; previous close 101.0
    early = quotes.assign(as_of=f"{DAY}T17:00:00Z", underlying_price=str(101.0 * 1.25))
    early.to_csv(p.folder / "option_quotes" / DAY / "170000Z.csv", index=False)
    config = {"ops": {"option_quotes": {"config": {"snapshot_time": f"{DAY}T17:00:00Z"}}}}

    def load_snapshot() -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [option_quotes],
            partition_key=DAY,
            resources=p.resources,
            instance=p.instance,
            run_config=config,
            raise_on_error=False,
        )

    ok = load_snapshot()
    assert ok.success, step_failure_messages(ok)  # ln(1.25) = 0.22: inside a day's move (0.40)
    early.assign(underlying_price=str(101.0 * 1.6)).to_csv(
        p.folder / "option_quotes" / DAY / "170000Z.csv", index=False
    )
    message = _assert_blocked_cleanly(load_snapshot(), "option_quotes")
    assert "rule underlying_matches_close " in message and "previous close" in message, message
