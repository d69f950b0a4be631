"""Bad input through the folder source: the run is blocked, nothing is lost, good tables stay."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from risk_pipeline.cli import step_failure_messages
from risk_pipeline.definitions import build_definitions
from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.folder_fixture import SNAPSHOT, edit_csv, write_good_folder

DAY = "2026-11-20"
PRICES = f"market_prices/{DAY}.csv"
QUOTES = f"option_quotes/{DAY}/{SNAPSHOT}.csv"


class Pipeline:
    """The real definitions on a temp DuckDB warehouse and a temp folder source."""

    def __init__(self, tmp: Path, published: Path | None = None) -> None:
        """A fresh folder, warehouse and instance; with ``published``, its folder and warehouse copied instead."""
        if published is None:
            self.folder = write_good_folder(tmp / "folder")
        else:
            self.folder = Path(shutil.copytree(published / "folder", tmp / "folder"))
            shutil.copytree(published / "wh", tmp / "wh", ignore=shutil.ignore_patterns("*.writer.lock"))
        self.url = str(tmp / "wh" / "risk_warehouse.duckdb")
        self.instance = dg.DagsterInstance.ephemeral()
        self.defs = build_definitions(
            {
                "warehouse": WarehouseResource(url=self.url),
                "market_data": MarketDataResource(kind="folder", folder=str(self.folder)),
                "exports": ExportsResource(root=str(tmp / "exports")),
            },
            executor=dg.in_process_executor,
        )

    def run(self, partition: str = DAY) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def("market_data_job")
        return job.execute_in_process(instance=self.instance, partition_key=partition, raise_on_error=False)

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.url)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The good folder with its two sessions published by two runs, once for the module."""
    root = tmp_path_factory.mktemp("published")
    p = Pipeline(root)
    assert p.run("2026-11-19").success
    assert p.run(DAY).success
    return root


@pytest.fixture
def pipeline(published: Path, tmp_path: Path) -> Pipeline:
    """The two good sessions published (2026-11-19 and DAY): the module's folder and warehouse file copied (what
    the runs wrote, byte for byte, not two runs per test), with a fresh instance as before; the pipeline reads no
    earlier run from the instance (only the current run's planned checks)."""
    return Pipeline(tmp_path, published)


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(step_failure_messages(result))


def _check(result: dg.ExecuteInProcessResult, asset: str, rule: str) -> dg.AssetCheckEvaluation:
    found = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.event_specific_data.asset_key == dg.AssetKey(asset)
        and e.event_specific_data.check_name == rule
    ]
    assert found, f"no check result for {asset}.{rule}"
    return found[-1]


def test_good_folder_publishes_every_table_and_the_views(pipeline: Pipeline) -> None:
    wh = pipeline.warehouse
    assert wh.row_count("market_prices") == 4
    assert wh.row_count("option_quotes") == 24
    assert wh.row_count("quarantine") == 0
    snap = wh.query(
        "SELECT symbol, last_close, option_quotes_in_last_snapshot FROM risk.latest_market_snapshot ORDER BY symbol"
    )
    assert snap.to_records(index=False).tolist() == [("AAA", 99.5, 12), ("BBB", 51.0, 0)]


Corruption = Callable[[Path], None]

CASES: list[tuple[str, Corruption, str, str, str, int]] = [
    # id, corruption, table, rule, file, row
    (
        "nan_price",
        lambda f: edit_csv(f / PRICES, 2, close="NaN"),
        "market_prices",
        "not_null_keys",
        PRICES,
        2,
    ),
    (
        "negative_price",
        lambda f: edit_csv(f / PRICES, 1, close="-99.5", low="-100"),
        "market_prices",
        "prices_positive",
        PRICES,
        1,
    ),
    (
        "zero_price",
        lambda f: edit_csv(f / PRICES, 2, open="0", low="0"),
        "market_prices",
        "prices_positive",
        PRICES,
        2,
    ),
    (
        "crossed_quote",
        lambda f: edit_csv(f / QUOTES, 5, bid="9.9", ask="9.1"),
        "option_quotes",
        "bid_le_ask",
        QUOTES,
        5,
    ),
    (
        "duplicate_key",
        lambda f: edit_csv(f / PRICES, 2, symbol="AAA"),
        "market_prices",
        "unique_keys",
        PRICES,
        2,
    ),
    ("wrong_type", lambda f: edit_csv(f / PRICES, 1, volume="lots"), "market_prices", "types", PRICES, 1),
    ("stale_snapshot", lambda f: _stale(f / QUOTES), "option_quotes", "snapshot_fresh", QUOTES, 1),
    (
        "price_spike_10x",
        lambda f: edit_csv(f / PRICES, 2, open="510", high="515", low="505", close="510"),
        "market_prices",
        "daily_return_plausible",
        PRICES,
        2,
    ),
]


def _stale(path: Path) -> None:
    frame = pd.read_csv(path, dtype=str)
    frame["as_of"] = "2026-11-20T14:30:00Z"  # 09:30 New York: six and a half hours before the close
    frame.to_csv(path, index=False)


@pytest.mark.parametrize(("case", "corrupt", "asset", "rule", "file", "row"), CASES, ids=[c[0] for c in CASES])
def test_bad_row_blocks_run_names_file_row_rule_and_is_quarantined(
    pipeline: Pipeline, case: str, corrupt: Corruption, asset: str, rule: str, file: str, row: int
) -> None:
    wh = pipeline.warehouse
    before = wh.read(asset)
    corrupt(pipeline.folder)
    result = pipeline.run()
    assert not result.success
    message = _failure_message(result)
    assert f"rule {rule}" in message and f"file {file} row {row}" in message, message
    check = _check(result, asset, rule)
    assert not check.passed
    assert check.metadata["failing_rows"].value >= 1
    assert file in check.metadata["where"].value
    quarantined = wh.read("quarantine", {"asset": asset, "check_name": rule})
    assert row in quarantined["row_number"].tolist()
    assert set(quarantined["source_file"]) == {file}
    pd.testing.assert_frame_equal(wh.read(asset), before)  # the published table is untouched
    materialized = (
        {k.to_user_string() for k in result.get_asset_materialization_events_keys()}
        if hasattr(result, "get_asset_materialization_events_keys")
        else {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    )
    assert asset not in materialized
    assert not {"latest_market_snapshot", "data_quality_summary"} & materialized  # downstream never runs
    assert "quarantine" in materialized  # the step that quarantined rows reports quarantine's materialization
    quarantine_event = next(
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "quarantine"
    )
    meta = quarantine_event.materialization.metadata
    assert meta["from_asset"].value == asset and rule in meta["rules"].value


def test_missing_column_blocks_with_schema_rule(pipeline: Pipeline) -> None:
    path = pipeline.folder / PRICES
    pd.read_csv(path).drop(columns=["close"]).to_csv(path, index=False)
    result = pipeline.run()
    assert not result.success
    message = _failure_message(result)
    assert "rule schema" in message and "missing columns ['close']" in message and PRICES in message
    quarantined = pipeline.warehouse.read("quarantine", {"check_name": "schema"})
    assert sorted(quarantined["row_number"]) == [1, 2]  # every row of the file, nothing dropped


def test_empty_file_blocks_with_row_count_rule(pipeline: Pipeline) -> None:
    (pipeline.folder / PRICES).write_text("")
    result = pipeline.run()
    assert not result.success
    message = _failure_message(result)
    assert "rule row_count_in_range" in message and PRICES in message and "0 rows" in message
    q = pipeline.warehouse.read("quarantine", {"check_name": "row_count_in_range"})
    assert q["row_number"].tolist() == [0] and q["source_file"].tolist() == [PRICES]
    assert pipeline.warehouse.row_count("market_prices", {"as_of_date": pd.Timestamp(DAY).date()}) == 2


def test_rerun_of_blocked_partition_is_idempotent_and_fixing_the_file_publishes(pipeline: Pipeline) -> None:
    original = (pipeline.folder / PRICES).read_text()
    edit_csv(pipeline.folder / PRICES, 2, close="-1")
    assert not pipeline.run().success
    assert not pipeline.run().success
    summary = pipeline.warehouse.query(
        "SELECT check_name, SUM(quarantined_rows) AS n FROM risk.data_quality_summary GROUP BY check_name "
        "ORDER BY check_name"
    )
    # two blocked runs, but the summary counts the partition's latest run only
    assert dict(zip(summary["check_name"], summary["n"], strict=True))["prices_positive"] == 1
    (pipeline.folder / PRICES).write_text(original)
    assert pipeline.run().success


def test_range_backfill_as_one_run_and_rerun_gives_identical_tables(tmp_path: Path) -> None:
    p = Pipeline(tmp_path)
    job = p.defs.resolve_job_def("market_data_job")
    tags = {"dagster/asset_partition_range_start": "2026-11-18", "dagster/asset_partition_range_end": DAY}
    tables = [
        "market_prices",
        "option_quotes",
        "rates_curve",
        "dividend_yields",
        "event_calendar",
        "positions",
    ]
    snapshots = []
    for _ in range(2):
        result = job.execute_in_process(instance=p.instance, tags=tags, raise_on_error=False)
        assert result.success
        snapshots.append({t: p.warehouse.read(t).drop(columns=["run_id", "materialized_at"]) for t in tables})
    assert len(snapshots[0]["market_prices"]) == 6 and len(snapshots[0]["option_quotes"]) == 36
    for t in tables:
        pd.testing.assert_frame_equal(snapshots[0][t], snapshots[1][t])


def test_shipped_sample_folder_passes_every_rule(tmp_path: Path) -> None:
    from risk_pipeline.resources import PROJECT_ROOT

    p = Pipeline(tmp_path)
    p.defs = build_definitions(
        {
            "warehouse": WarehouseResource(url=p.url),
            "exports": ExportsResource(root=str(tmp_path / "exports")),
            "market_data": MarketDataResource(kind="folder", folder=str(PROJECT_ROOT / "data" / "sample_folder")),
        },
        executor=dg.in_process_executor,
    )
    assert p.run("2026-11-19").success
    assert p.run(DAY).success
    assert p.warehouse.row_count("market_prices") == 6
    assert p.warehouse.row_count("quarantine") == 0
