"""performance_analytics in the shared end-of-day run, re-materialized on a scripted NAV history, and the
counterfactual of a scripted preservation episode through the asset's own event code."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.calendar import sessions
from risk_pipeline.defs.analytics import assets as analytics
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.defs.conftest import SESSION

Run = tuple[Warehouse, dg.ExecuteInProcessResult]
BOOKS = {"core_equity", "vol_overlay"}


def test_end_of_day_writes_performance_analytics_for_both_books(run: Run) -> None:
    wh, result = run
    mats = [
        m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == "performance_analytics"
    ]
    assert mats, "performance_analytics not materialized"
    checks = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "performance_analytics"
    }
    assert checks == {"metrics_finite": True, "strategies_sum_to_book": True}
    rows = wh.read("performance_analytics")
    assert set(rows["book"]) == BOOKS
    for book in BOOKS:
        mine = rows[rows["book"] == book]
        assert set(mine.loc[mine["strategy"] == "*", "window"]) == {"1d", "21d", "63d", "252d", "inception"}
        assert {"trades", "stops", "control:capital_preservation", "control:hedge", "control:gap_risk"} <= set(
            mine["strategy"]
        )
        # the first valuation of a book is its inception: no daily return yet
        assert (mine.loc[mine["strategy"] == "*", "n_obs"] == 0).all()
        assert json.loads(mine["inputs"].iloc[0])["ratios"] == "empyrical-reloaded"


@pytest.fixture(scope="module")
def scripted(run: Run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, np.ndarray]:
    """A copy of the run with 30 earlier sessions of core_equity NAV (scripted daily P&L), re-materialized."""
    wh, _ = run
    tmp = tmp_path_factory.mktemp("analytics")
    url = str(tmp / "risk_warehouse.duckdb")
    shutil.copy(wh.url, url)
    copy = Warehouse(url)
    days = [d for d in sessions(SESSION - dt.timedelta(days=60), SESSION) if d < SESSION][-30:]
    pnl = np.array([(-1) ** i * 1000.0 * (i % 7) - 300.0 * (i % 3) for i in range(30)])
    nav = 75e6 + np.cumsum(pnl)
    rows = pd.DataFrame(
        {
            "as_of": [pd.Timestamp(f"{d}T21:00:00Z") for d in days],
            "as_of_date": days,
            "book": "core_equity",
            "nav": nav,
            "peak_nav": np.maximum.accumulate(nav),
            "daily_pnl": pnl,
            "drawdown_pct": 1 - nav / np.maximum.accumulate(nav),
            "pnl_basis": "scripted",
            "previous_as_of": [pd.Timestamp(f"{d}T20:00:00Z") for d in days],
            "capital": 75e6,
        }
    )
    for r in rows.to_dict("records"):
        copy.write("book_nav", pd.DataFrame([r]), run_id="scripted", partitions=[{"as_of": r["as_of"]}])
    result = dg.materialize(
        [analytics.performance_analytics],
        partition_key=SESSION.isoformat(),
        resources={"warehouse": WarehouseResource(url=url)},
    )
    assert result.success
    returns = pnl / (nav - pnl)
    return copy, returns


def test_book_ratios_from_a_scripted_nav_history(scripted: tuple[Warehouse, np.ndarray]) -> None:
    wh, r = scripted
    rows = wh.read("performance_analytics", {"book": "core_equity", "strategy": "*"}).set_index("window")
    last21 = r[-21:]
    row = rows.loc["21d"]
    assert row["n_obs"] == 21
    sd = float(np.std(last21, ddof=1))
    assert row["sharpe_ratio"] == pytest.approx(last21.mean() / sd * np.sqrt(252), rel=1e-9)
    assert row["annual_volatility"] == pytest.approx(sd * np.sqrt(252), rel=1e-9)
    assert row["cumulative_return"] == pytest.approx(np.prod(1 + last21) - 1, rel=1e-9)
    w = np.cumprod(1 + r)
    assert rows.loc["inception", "max_drawdown"] == pytest.approx(
        max(1 - w / np.maximum.accumulate(np.r_[1.0, w])[1:]), rel=1e-9
    )
    assert rows.loc["inception", "n_obs"] == 30 and rows.loc["63d", "n_obs"] == 30
    assert rows.loc["1d", "n_obs"] == 0  # today's row is the run's inception valuation


def test_counterfactual_of_a_scripted_preservation_episode(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """core_equity enters light preservation at the run's valuation and halves its first position; the next
    three sessions are priced from a script. The static book without the cut and with it are revalued."""
    wh, _ = run
    as_of = analytics.latest_as_of(wh, "position_greeks", SESSION)
    book = wh.read("position_greeks", {"as_of": as_of, "book": "core_equity"})
    first = book.iloc[0]
    cut = -float(first["quantity"]) / 2
    later = list(sessions(SESSION + dt.timedelta(days=1), SESSION + dt.timedelta(days=10)))[:3]
    # scripted unit prices: every position's price moves by the same factors
    factors = {SESSION: 1.0, later[0]: 0.97, later[1]: 0.95, later[2]: 0.99}
    unit = dict(zip(book["position_id"], book["market_value"] / (book["quantity"] * book["multiplier"]), strict=True))

    def fake_value(wh_: Warehouse, day: dt.date, t: pd.Timestamp, positions: pd.DataFrame, **_: object) -> pd.DataFrame:
        base = positions["position_id"].str.split(":", n=1).str[1].map(unit).to_numpy(float)
        mv = positions["quantity"].to_numpy(float) * positions["multiplier"].to_numpy(float) * base * factors[day]
        return pd.DataFrame({"market_value": mv})

    def fake_latest(wh_: Warehouse, table: str, day: dt.date, before: bool = False) -> pd.Timestamp | None:
        return pd.Timestamp(f"{day}T21:00:00Z") if day in factors else None

    monkeypatch.setattr(analytics, "value_positions", fake_value)
    monkeypatch.setattr(analytics, "latest_as_of", fake_latest)
    event = {"type": "capital_preservation", "book": "core_equity", "as_of": as_of, "id": "light:REDUCING",
             "trades": {first["position_id"]: cut}}  # fmt: skip
    (got,) = analytics.judge_events(wh, [event], later[-1], horizon=5)
    mv0 = float(book["market_value"].sum())
    path = np.array([factors[d] for d in [SESSION, *later]])
    without = np.diff(mv0 * path)
    first_mv = float(first["market_value"])
    with_ = np.diff((mv0 + first_mv * cut / float(first["quantity"])) * path)
    assert got["n_sessions"] == 3
    assert got["pnl_without"] == pytest.approx(without.sum(), rel=1e-12)
    assert got["pnl_with"] == pytest.approx(with_.sum(), rel=1e-12)
    assert got["difference"] == pytest.approx(with_.sum() - without.sum(), rel=1e-12)
    cum = np.r_[0.0, np.cumsum(without)]
    assert got["max_drawdown_without"] == pytest.approx((np.maximum.accumulate(cum) - cum).max(), rel=1e-12)
    assert len(got["valuations"]) == 4 and got["session"] == SESSION.isoformat()


def test_limit_status_records_the_effective_configuration(run: Run, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The shipped run has no preset; re-run on a copy with core_equity at conservative and an environment
    drawdown override: its rows say so and its drawdown cap is the environment's."""
    import yaml

    from risk_pipeline.defs.exposures.limits import risk_limits
    from risk_pipeline.paths import LIMITS_FILE

    wh, _ = run
    shipped = wh.read("limit_status")
    version = yaml.safe_load(LIMITS_FILE.read_text())["version"]
    assert set(shipped["effective_config"]) == {f"limits {version}; risk_level none; environment none"}
    assert shipped["risk_level"].isna().all()
    tmp = tmp_path_factory.mktemp("presets")
    url = str(tmp / "risk_warehouse.duckdb")
    shutil.copy(wh.url, url)
    raw = yaml.safe_load(LIMITS_FILE.read_text())
    raw["books"]["core_equity"]["risk_level"] = "conservative"
    (tmp / "limits.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RISK_PIPELINE_MAX_DRAWDOWN_PCT_CORE_EQUITY", "0.07")
        result = dg.materialize(
            [risk_limits],
            partition_key=SESSION.isoformat(),
            resources={"warehouse": WarehouseResource(url=url)},
            run_config={"ops": {"risk_limits": {"config": {"limits_file": str(tmp / "limits.yaml")}}}},
        )
    assert result.success
    rows = Warehouse(url).read("limit_status", {"book": "core_equity"}).set_index("limit_name")
    assert set(rows["risk_level"]) == {"conservative"}
    assert set(rows["effective_config"]) == {
        f"limits {version}; risk_level conservative; environment RISK_PIPELINE_MAX_DRAWDOWN_PCT_CORE_EQUITY=0.07"
    }
    assert rows.loc["max_drawdown_pct", "threshold"] == 0.07
    assert rows.loc["max_daily_loss_pct_nav", "threshold"] == 0.01  # the conservative preset's
    assert rows.loc["max_pairwise_correlation", "threshold"] == 0.92  # the book's own value wins
