"""Readers follow the published-valuation pointer: rows of a run that did not finish are never read."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from risk_pipeline.pretrade_service import PreTradeService
from risk_pipeline.queries import latest_published_as_of
from risk_pipeline.warehouse import Warehouse

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


@pytest.fixture
def copied(run: Run, tmp_path: Path) -> Warehouse:
    target = tmp_path / "copy" / "risk_warehouse.duckdb"
    target.parent.mkdir()
    shutil.copy(run[0].url, target)
    return Warehouse(str(target))


def test_end_of_day_run_publishes_its_valuation_last(run: Run) -> None:
    wh, result = run
    pointer = wh.read("published_valuations")
    assert len(pointer) == 1
    row = pointer.iloc[0]
    assert row["published_run_id"] == result.run_id and row["kind"] == "end_of_day"
    assert row["as_of"] == wh.read("position_greeks")["as_of"].max()
    publish_step = [e for e in result.all_events if e.step_key == "published_valuations"]
    assert publish_step and publish_step[-1].event_type_value == "STEP_SUCCESS"
    ends = {e.step_key: i for i, e in enumerate(result.all_events) if e.event_type_value == "STEP_SUCCESS"}
    valuation_steps = ["position_greeks", "risk_limits", "var_results", "stress_tests", "var_backtest"]
    assert all(ends[s] < ends["published_valuations"] for s in valuation_steps)
    status = wh.query("SELECT * FROM risk.published_book_status ORDER BY book")
    assert list(status["as_of"].unique()) == [row["as_of"]]
    assert status["var_99_1d_historical"].notna().all()


def test_a_run_that_failed_late_is_not_read(copied: Warehouse) -> None:
    """A later valuation whose run wrote Greeks, NAV, limits and state, then failed before publishing."""
    wh = copied
    published = wh.read("published_valuations")["as_of"].max()
    newer = published + pd.Timedelta(hours=20)
    for name in ("position_greeks", "portfolio_greeks", "book_nav", "limit_status", "trading_state"):
        rows = wh.read(name, {"as_of": published})
        rows = rows.drop(columns=["run_id", "materialized_at"]).assign(as_of=newer)
        if name == "trading_state":
            rows = rows.assign(state="HALTED", reason="rows of a failed run")
        if "as_of_date" in rows:
            rows = rows.assign(as_of_date=newer.date())
        wh.write(name, rows, run_id="failed-run", partitions=[{"as_of": newer}])
    books = sorted(wh.read("position_greeks", {"as_of": published})["book"].unique())
    assert all(latest_published_as_of(wh, b) == published for b in books)
    clock = lambda: published + pd.Timedelta(hours=1)  # noqa: E731
    service = PreTradeService(wh, actor="test", clock=clock)
    snap = service.snapshot(books[0])
    assert snap.as_of == published
    assert snap.state is None or snap.state.state != "HALTED"  # the failed run's HALTED state is not read
    status = wh.query("SELECT book, as_of, state FROM risk.published_book_status")
    assert set(status["as_of"]) == {published} and "HALTED" not in set(status["state"])
