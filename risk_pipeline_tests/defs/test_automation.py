"""Intraday snapshot sensor (cursor, run keys) and the exchange-calendar end-of-day schedule."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from risk_pipeline.defs.automation import sensors
from risk_pipeline.resources import MarketDataResource, WarehouseResource
from risk_pipeline_tests.defs.test_market_data_blocking import Pipeline
from risk_pipeline_tests.folder_fixture import write_good_folder


def _tick(instance: dg.DagsterInstance, cursor: str | None, folder: Path, warehouse_url: str) -> dg.SensorResult:
    """One evaluation of the snapshot sensor, as the daemon does it (resources set up and torn down)."""
    resources = {
        "market_data": MarketDataResource(kind="folder", folder=str(folder)),
        "warehouse": WarehouseResource(url=warehouse_url),
    }
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return sensors.option_snapshot_sensor(context)


def _ready_for_intraday(tmp_path: Path) -> Pipeline:
    """The folder pipeline with 2026-11-19's market data and 2026-11-20's start of day loaded."""
    p = Pipeline(tmp_path)
    assert p.run("2026-11-19").success
    sod = p.defs.resolve_job_def("start_of_day_job")
    assert sod.execute_in_process(instance=p.instance, partition_key="2026-11-20").success
    return p


def test_sensor_launches_each_snapshot_once_and_keeps_a_cursor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _ready_for_intraday(tmp_path)
    folder = p.folder
    # a second, earlier snapshot of the same session
    quotes = pd.read_csv(folder / "option_quotes" / "2026-11-20" / "204500Z.csv")
    quotes.assign(as_of="2026-11-20T17:00:00Z").to_csv(
        folder / "option_quotes" / "2026-11-20" / "170000Z.csv", index=False
    )
    with dg.instance_for_test() as instance:
        monkeypatch.setattr(sensors, "utc_now", lambda: pd.Timestamp("2026-11-20T17:10:00Z"))
        first = _tick(instance, None, folder, p.url)
        assert [r.run_key for r in first.run_requests] == ["snapshot:2026-11-20T17:00:00+00:00"]
        assert first.run_requests[0].partition_key == "2026-11-20"
        config = first.run_requests[0].run_config["ops"]
        assert config["implied_vols"]["config"]["snapshot_time"] == "2026-11-20T17:00:00+00:00"
        assert first.cursor == "2026-11-20T17:00:00+00:00"
        # same clock, with the cursor: nothing new
        again = _tick(instance, first.cursor, folder, p.url)
        assert not again.run_requests
        # later: only the 20:45 snapshot
        monkeypatch.setattr(sensors, "utc_now", lambda: pd.Timestamp("2026-11-20T20:50:00Z"))
        later = _tick(instance, first.cursor, folder, p.url)
        assert [r.run_key for r in later.run_requests] == ["snapshot:2026-11-20T20:45:00+00:00"]
        # a restart that lost nothing but the in-memory state resumes from the cursor, missing nothing
        restart = _tick(instance, first.cursor, folder, p.url)
        assert [r.run_key for r in restart.run_requests] == [r.run_key for r in later.run_requests]


def test_sensor_does_nothing_on_a_holiday(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_good_folder(tmp_path / "f")
    monkeypatch.setattr(sensors, "utc_now", lambda: pd.Timestamp("2026-11-26T18:00:00Z"))  # Thanksgiving
    with dg.instance_for_test() as instance:
        assert not _tick(instance, None, folder, str(tmp_path / "wh" / "risk_warehouse.duckdb")).run_requests


@pytest.mark.parametrize(
    ("day", "expected"),
    [(dt.date(2026, 11, 20), "2026-11-20"), (dt.date(2026, 11, 26), None), (dt.date(2026, 11, 27), "2026-11-27")],
)
@pytest.mark.parametrize(
    ("schedule", "at", "prefix"), [("end_of_day_schedule", (17, 15), "eod"), ("start_of_day_schedule", (8, 0), "sod")]
)
def test_session_schedules_follow_the_exchange_calendar(
    day: dt.date, expected: str | None, schedule: str, at: tuple[int, int], prefix: str
) -> None:
    when = dt.datetime.combine(day, dt.time(*at), tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    result = getattr(sensors, schedule)(dg.build_schedule_context(scheduled_execution_time=when))
    if expected is None:
        assert isinstance(result, dg.SkipReason)
    else:
        assert result.partition_key == expected and result.run_key == f"{prefix}:{expected}"


def test_intraday_refresh_recomputes_greeks_per_snapshot(tmp_path: Path) -> None:
    p = Pipeline(tmp_path)
    quotes = pd.read_csv(p.folder / "option_quotes" / "2026-11-20" / "204500Z.csv")
    moved = quotes.assign(as_of="2026-11-20T17:00:00Z", underlying_price=quotes["underlying_price"] * 1.01)
    moved.to_csv(p.folder / "option_quotes" / "2026-11-20" / "170000Z.csv", index=False)
    assert p.run("2026-11-20").success  # end of day market data (last snapshot)
    job = p.defs.resolve_job_def("intraday_refresh_job")
    for snap in ("2026-11-20T17:00:00+00:00", "2026-11-20T20:45:00+00:00"):
        config = sensors.snapshot_run_config(pd.Timestamp(snap), pd.Timestamp(snap) + pd.Timedelta(minutes=2))
        result = job.execute_in_process(instance=p.instance, partition_key="2026-11-20", run_config=config)
        assert result.success
    greeks = p.warehouse.read("position_greeks")
    assert sorted(greeks["as_of"].astype(str).unique()) == ["2026-11-20 17:00:00+00:00", "2026-11-20 20:45:00+00:00"]
    spots = greeks[greeks["instrument_type"] == "option"].set_index("as_of")["spot"]
    assert spots.iloc[0] == pytest.approx(spots.iloc[1] * 1.01)
    totals = p.warehouse.read("portfolio_greeks", {"scope": "total"})
    assert len(totals) == 2


def test_fresh_session_sensor_skips_until_start_of_day_then_the_refresh_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = Pipeline(tmp_path)
    assert p.run("2026-11-19").success  # yesterday's end of day: nothing of 2026-11-20 is loaded
    monkeypatch.setattr(sensors, "utc_now", lambda: pd.Timestamp("2026-11-20T21:00:00Z"))
    with dg.instance_for_test() as instance:
        skipped = _tick(instance, None, p.folder, p.url)
        assert not skipped.run_requests
        reason = skipped.skip_reason.skip_message
        for missing in ("positions for 2026-11-20", "rates_curve for 2026-11-20", "dividend_yields for 2026-11-20"):
            assert missing in reason
        assert "start_of_day_job" in reason
        assert skipped.cursor is None  # the snapshot is not lost: it launches once the inputs are there

        sod = p.defs.resolve_job_def("start_of_day_job")
        assert sod.execute_in_process(instance=p.instance, partition_key="2026-11-20").success
        launched = _tick(instance, None, p.folder, p.url)
        assert [r.run_key for r in launched.run_requests] == ["snapshot:2026-11-20T20:45:00+00:00"]

    request = launched.run_requests[0]
    job = p.defs.resolve_job_def("intraday_refresh_job")
    result = job.execute_in_process(
        instance=p.instance, partition_key=request.partition_key, run_config=request.run_config
    )
    assert result.success
    greeks = p.warehouse.read("position_greeks")
    assert set(greeks["as_of"].astype(str)) == {"2026-11-20 20:45:00+00:00"}
    assert p.warehouse.row_count("market_prices", {"as_of_date": dt.date(2026, 11, 20)}) == 0  # no close yet
    stocks = greeks[greeks["instrument_type"] == "stock"]
    previous = p.warehouse.read("market_prices", {"as_of_date": dt.date(2026, 11, 19)}).set_index("symbol")["close"]
    quoted = set(p.warehouse.read("option_quotes")["underlying"])
    unquoted = stocks[~stocks["symbol"].isin(quoted)]
    assert (unquoted["spot"].to_numpy() == unquoted["symbol"].map(previous).to_numpy()).all()
    assert len(p.warehouse.read("trading_state")) > 0


def test_sensor_switched_on_late_or_after_an_outage_launches_only_fresh_snapshots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _ready_for_intraday(tmp_path)
    quotes = pd.read_csv(p.folder / "option_quotes" / "2026-11-20" / "204500Z.csv")
    for hhmm in ("170000", "190000"):
        stamp = f"2026-11-20T{hhmm[:2]}:{hhmm[2:4]}:00Z"
        quotes.assign(as_of=stamp).to_csv(p.folder / "option_quotes" / "2026-11-20" / f"{hhmm}Z.csv", index=False)
    with dg.instance_for_test() as instance:
        # switched on at 21:00: 17:00 and 19:00 are stale (snapshot_fresh allows 30 min), 20:45 is fresh
        monkeypatch.setattr(sensors, "utc_now", lambda: pd.Timestamp("2026-11-20T21:00:00Z"))
        late = _tick(instance, None, p.folder, p.url)
        assert [r.run_key for r in late.run_requests] == ["snapshot:2026-11-20T20:45:00+00:00"]
        assert late.run_requests[0].tags[sensors.INTRADAY_TAG] == "refresh"
        assert late.cursor == "2026-11-20T20:45:00+00:00"
        # an outage from 17:05 to 22:00: nothing fresh is left, nothing is launched, the reason names them all
        monkeypatch.setattr(sensors, "utc_now", lambda: pd.Timestamp("2026-11-20T22:00:00Z"))
        after = _tick(instance, "2026-11-20T16:00:00+00:00", p.folder, p.url)
        assert not after.run_requests
        reason = after.skip_reason.skip_message
        assert "3 snapshot(s) older than 30 min not launched" in reason
        for t in ("17:00:00", "19:00:00", "20:45:00"):
            assert f"2026-11-20T{t}+00:00" in reason
        assert after.cursor == "2026-11-20T20:45:00+00:00"  # they are not reconsidered on the next tick
