"""atm_vol_history in blocks of sessions: the rows do not depend on the block size, and a bad quote in any block
fails the step, reaches quarantine and leaves the table as it was."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.calendar import sessions
from risk_pipeline.cli import step_failure_messages
from risk_pipeline.definitions import build_definitions
from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource
from risk_pipeline.sources.synthetic import SyntheticSource
from risk_pipeline.warehouse import Warehouse

SESSIONS = sessions(dt.date(2026, 10, 26), dt.date(2026, 11, 6))
META = ["run_id", "materialized_at"]
NAMES = len(MarketDataResource(kind="synthetic", n_underlyings=4).get_source().symbols())
QUOTES = 12 * NAMES  # per session: 2 expiries x 2 sides x 3 strikes per name


class Pipeline:
    """The real definitions on a DuckDB warehouse and a 4-name synthetic source."""

    def __init__(self, root: Path) -> None:
        self.url = str(root / "risk_warehouse.duckdb")
        self.instance = dg.DagsterInstance.ephemeral()
        resources = {
            "warehouse": WarehouseResource(url=self.url),
            "market_data": MarketDataResource(kind="synthetic", n_underlyings=4),
            "exports": ExportsResource(root=str(root / "exports")),
        }
        self.defs = build_definitions(resources, executor=dg.in_process_executor)

    def run(self, block: int, *, atm_only: bool = False, prefetch: int | None = None) -> dg.ExecuteInProcessResult:
        tags = {
            "dagster/asset_partition_range_start": SESSIONS[0].isoformat(),
            "dagster/asset_partition_range_end": SESSIONS[-1].isoformat(),
        }
        settings: dict[str, int] = {"sessions_per_block": block}
        if prefetch is not None:
            settings["prefetch_max_quotes"] = prefetch
        config = {"ops": {"atm_vol_history": {"config": settings}}}
        return self.defs.resolve_job_def("price_history_job").execute_in_process(
            instance=self.instance,
            tags=tags,
            run_config=config,
            raise_on_error=False,
            asset_selection=[dg.AssetKey("atm_vol_history")] if atm_only else None,
        )

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.url)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pipeline, pd.DataFrame]:
    """The history of SESSIONS loaded with blocks of 3 sessions (4 blocks, the last of one session)."""
    p = Pipeline(tmp_path_factory.mktemp("atm_blocks"))
    result = p.run(3)
    assert result.success, step_failure_messages(result)
    return p, p.warehouse.read("atm_vol_history")


def _materialized(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def test_rows_do_not_depend_on_the_block_size(loaded: tuple[Pipeline, pd.DataFrame]) -> None:
    p, by_three = loaded
    assert len(SESSIONS) == 10 and len(by_three) == NAMES * len(SESSIONS)
    for block in (2, len(SESSIONS)):
        result = p.run(block, atm_only=True)
        assert result.success, step_failure_messages(result)
        again = p.warehouse.read("atm_vol_history")
        assert set(again["run_id"]) == {result.run_id}  # every row rewritten by this run
        # bit-identical, row order included
        pd.testing.assert_frame_equal(again.drop(columns=META), by_three.drop(columns=META), check_exact=True)
        meta = _materialized(result, "atm_vol_history")
        assert meta["sessions_with_quotes"] == len(SESSIONS)
        checks = {
            e.event_specific_data.check_name: e.event_specific_data.metadata
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        }
        # summed over the blocks
        assert checks["source_quotes_valid"]["quotes_validated"].value == QUOTES * len(SESSIONS)


def test_rows_do_not_depend_on_building_the_next_blocks_quotes_in_a_second_thread(
    loaded: tuple[Pipeline, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    p, by_three = loaded
    original = SyntheticSource.option_quotes_where_many
    lock = threading.Lock()
    calls: list[tuple[list[dt.date], str]] = []

    def one_at_a_time(self: SyntheticSource, days: Sequence[dt.date], select: object, **kw: object) -> pd.DataFrame:
        assert lock.acquire(blocking=False), "the source is building two blocks at once"
        try:
            calls.append((list(days), threading.current_thread().name))
            return original(self, days, select, **kw)  # type: ignore[arg-type]
        finally:
            lock.release()

    monkeypatch.setattr(SyntheticSource, "option_quotes_where_many", one_at_a_time)
    for prefetch, threads in ((0, {"MainThread"}), (QUOTES * 3, {"MainThread", "atm_quotes_0"})):
        calls.clear()
        result = p.run(3, atm_only=True, prefetch=prefetch)
        assert result.success, step_failure_messages(result)
        # every block once, in order; with prefetching all but the first built in the second thread
        assert [d for days, _ in calls for d in days] == list(SESSIONS)
        assert {name for _, name in calls} == threads
        again = p.warehouse.read("atm_vol_history")
        pd.testing.assert_frame_equal(again.drop(columns=META), by_three.drop(columns=META), check_exact=True)


def _corrupting(bad_days: Sequence[dt.date]) -> Callable[..., pd.DataFrame]:
    """``option_quotes_where_many`` with a negative bid on every quote of ``bad_days``."""
    original = SyntheticSource.option_quotes_where_many

    def corrupt(self: SyntheticSource, days: Sequence[dt.date], select: object, **kw: object) -> pd.DataFrame:
        out = original(self, days, select, **kw)  # type: ignore[arg-type]
        out.loc[out["as_of_date"].isin(bad_days).to_numpy(), "bid"] = -1.0
        return out

    return corrupt


def test_a_bad_quote_in_later_blocks_fails_the_step_and_quarantines_every_bad_row(
    loaded: tuple[Pipeline, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    p, _ = loaded
    before = p.warehouse.read("atm_vol_history")
    bad_days = [SESSIONS[4], SESSIONS[9]]  # in the third of 5 blocks of 2, and the last
    monkeypatch.setattr(SyntheticSource, "option_quotes_where_many", _corrupting(bad_days))
    result = p.run(2, atm_only=True)
    assert not result.success
    message = "\n".join(step_failure_messages(result))
    assert "step atm_vol_history failed" in message and "rule bid_non_negative" in message, message
    assert f"failed on {2 * QUOTES} rows" in message, message  # both bad sessions, one line
    # every bad row quarantined, of both failed blocks
    q = p.warehouse.read("quarantine", {"asset": "atm_vol_history", "check_name": "bid_non_negative"})
    q = q[q["run_id"] == result.run_id]
    assert len(q) == 2 * QUOTES and q["row_number"].is_unique
    days = {str(d) for d in bad_days}
    assert {f.split("/")[1][:10] for f in q["source_file"]} == days, q["source_file"].head()
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    # one failed evaluation per session of the partition, no other check
    assert len(checks) == len(SESSIONS)
    assert {(c.check_name, c.passed) for c in checks} == {("source_quotes_valid", False)}
    assert {c.metadata["quarantined_rows"].value for c in checks} == {2 * QUOTES}
    # the table is unchanged (not rewritten)
    pd.testing.assert_frame_equal(p.warehouse.read("atm_vol_history"), before)
    assert not [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("atm_vol_history")]
    assert np.isfinite(before["atm_vol"].to_numpy(float)).all()
