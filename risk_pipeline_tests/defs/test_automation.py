"""Intraday snapshot sensor (cursor, run keys) and the exchange-calendar end-of-day schedule."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from risk_pipeline.defs.automation import sensors
from risk_pipeline.resources import MarketDataResource
from risk_pipeline_tests.folder_fixture import write_good_folder


def _context(instance: dg.DagsterInstance, cursor: str | None, folder: Path) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"market_data": MarketDataResource(kind="folder", folder=str(folder))},
    )


def test_sensor_launches_each_snapshot_once_and_keeps_a_cursor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_good_folder(tmp_path / "f")
    # a second, earlier snapshot of the same session
    quotes = pd.read_csv(folder / "option_quotes" / "2026-11-20" / "204500Z.csv")
    quotes.assign(as_of="2026-11-20T17:00:00Z").to_csv(
        folder / "option_quotes" / "2026-11-20" / "170000Z.csv", index=False
    )
    with dg.instance_for_test() as instance:
        monkeypatch.setattr(sensors, "utc_now", lambda: pd.Timestamp("2026-11-20T18:00:00Z"))
        first = sensors.option_snapshot_sensor(_context(instance, None, folder))
        assert [r.run_key for r in first.run_requests] == ["snapshot:2026-11-20T17:00:00+00:00"]
        assert first.run_requests[0].partition_key == "2026-11-20"
        config = first.run_requests[0].run_config["ops"]
        assert config["implied_vols"]["config"]["snapshot_time"] == "2026-11-20T17:00:00+00:00"
        assert first.cursor == "2026-11-20T17:00:00+00:00"
        # same clock, with the cursor: nothing new
        again = sensors.option_snapshot_sensor(_context(instance, first.cursor, folder))
        assert not again.run_requests
        # later: only the 20:45 snapshot
        monkeypatch.setattr(sensors, "utc_now", lambda: pd.Timestamp("2026-11-20T21:00:00Z"))
        later = sensors.option_snapshot_sensor(_context(instance, first.cursor, folder))
        assert [r.run_key for r in later.run_requests] == ["snapshot:2026-11-20T20:45:00+00:00"]
        # a restart that lost nothing but the in-memory state resumes from the cursor, missing nothing
        restart = sensors.option_snapshot_sensor(_context(instance, first.cursor, folder))
        assert [r.run_key for r in restart.run_requests] == [r.run_key for r in later.run_requests]


def test_sensor_does_nothing_on_a_holiday(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_good_folder(tmp_path / "f")
    monkeypatch.setattr(sensors, "utc_now", lambda: pd.Timestamp("2026-11-26T18:00:00Z"))  # Thanksgiving
    with dg.instance_for_test() as instance:
        assert not sensors.option_snapshot_sensor(_context(instance, None, folder)).run_requests


@pytest.mark.parametrize(
    ("day", "expected"),
    [(dt.date(2026, 11, 20), "2026-11-20"), (dt.date(2026, 11, 26), None), (dt.date(2026, 11, 27), "2026-11-27")],
)
def test_end_of_day_schedule_follows_the_exchange_calendar(day: dt.date, expected: str | None) -> None:
    when = dt.datetime.combine(day, dt.time(17, 15), tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    result = sensors.end_of_day_schedule(dg.build_schedule_context(scheduled_execution_time=when))
    if expected is None:
        assert isinstance(result, dg.SkipReason)
    else:
        assert result.partition_key == expected and result.run_key == f"eod:{expected}"


def test_intraday_refresh_recomputes_greeks_per_snapshot(tmp_path: Path) -> None:
    from risk_pipeline_tests.defs.test_market_data_blocking import Pipeline

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
