"""Manual controls (halt, resume, emergency stop), the emergency rules of the trading state, and the
append-only audit trail on the real PostgreSQL server. (The round trip through check-trade and the
trading-state run are in defs/test_compliance_layer.py, on the shared end-of-day run.)"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import psycopg
import pytest

from risk_pipeline import controls
from risk_pipeline.quant.limits import LimitResult, LimitsConfig
from risk_pipeline.quant.trading_state import (
    HALTED,
    MANUAL_HALT,
    REDUCING,
    EmergencyConfig,
    average_pairwise_correlation,
    correlation_condition,
    loss_streak,
    next_state,
    realized_vol_series,
    risk_budget_factor,
    volatility_spikes,
)
from risk_pipeline.queries import AUDIT_COLUMNS, audit_row
from risk_pipeline.warehouse import Warehouse

T0 = dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.UTC)


def _at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def test_halt_resume_and_emergency_stop_replay_on_both_engines(warehouse: Warehouse) -> None:
    event = controls.halt(warehouse, "core", "limit review", "alice", at=_at(0))
    assert (event["book"], event["action"], event["actor"], event["expires_at_utc"]) == ("core", "halt", "alice", None)
    assert controls.active_halts(warehouse, _at(-1)) == {}
    assert controls.active_halts(warehouse, _at(1))["core"]["reason"] == "limit review"
    controls.halt(warehouse, "vol", "daily-loss stop", "risk_pipeline", hours=24, at=_at(0.5))
    assert set(controls.active_halts(warehouse, _at(24))) == {"core", "vol"}
    assert set(controls.active_halts(warehouse, _at(24.5))) == {"core"}  # a 24-hour halt lapses by itself
    controls.emergency_stop(warehouse, "exchange outage", "bob", at=_at(25))
    resumed = controls.resume(warehouse, "core", "review done", "alice", at=_at(26))
    assert resumed["was_halted"] is True
    in_force = controls.active_halts(warehouse, _at(27))
    assert set(in_force) == {"*"}  # a book's resume does not lift the emergency stop
    assert controls.halt_for_book(in_force, "core")["action"] == "emergency_stop"
    assert controls.book_halt(warehouse, "core", _at(27))["reason"] == "exchange outage"
    controls.resume(warehouse, "*", "outage over", "bob", at=_at(28))
    assert controls.active_halts(warehouse, _at(29)) == {}
    assert controls.book_halt(warehouse, "core", _at(29)) is None
    # every event is in the audit trail with who and why; manual_controls keeps all five
    audit = warehouse.read("audit_trail", {"decision_type": "manual_control"}, order_by=["at"])
    assert list(audit["decision"]) == ["halt", "halt", "emergency_stop", "resume", "resume"]
    assert list(audit["actor"]) == ["alice", "risk_pipeline", "bob", "alice", "bob"]
    assert json.loads(audit["inputs"].iloc[0])["reason"] == "limit review"
    assert warehouse.row_count("manual_controls") == 5


def test_controls_refuse_empty_reason_and_bad_duration(warehouse: Warehouse) -> None:
    with pytest.raises(controls.ControlError, match="reason"):
        controls.halt(warehouse, "core", " ", "alice")
    with pytest.raises(controls.ControlError, match="hours"):
        controls.halt(warehouse, "core", "x", "alice", hours=0)


@pytest.mark.postgres
def test_append_only_tables_refuse_update_delete_truncate_on_postgres(pg_server_url: str) -> None:
    wh = Warehouse(pg_server_url)
    wh.execute("DROP SCHEMA IF EXISTS risk CASCADE")
    wh.ensure_tables()
    wh.ensure_tables()  # re-creating the triggers is idempotent
    row = audit_row(pd.Timestamp(T0), "core", "state_change", "ACTIVE->HALTED", "HALTED", {"why": "test"}, "t")
    assert wh.append("audit_trail", pd.DataFrame([row], columns=AUDIT_COLUMNS), run_id="r") == 1
    controls.halt(wh, "core", "test", "alice", at=T0)
    for table in ("audit_trail", "manual_controls", "alerts"):
        for statement in (
            f"UPDATE risk.{table} SET run_id = 'x'",
            f"DELETE FROM risk.{table}",
            f"TRUNCATE risk.{table}",
        ):
            with psycopg.connect(pg_server_url, autocommit=True) as con:
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                    con.execute(statement)
    assert wh.row_count("audit_trail") == 2  # the row above and the halt's; nothing changed
    assert wh.query("SELECT run_id FROM risk.audit_trail WHERE audit_id = ?", [row["audit_id"]])["run_id"][0] == "r"


# ---------------------------------------------------------------------- emergency rules (pure)
def _limit(name: str, status: str = "OK") -> LimitResult:
    return LimitResult(name, 1.0, 2.0, 1.6, 0.5, status)


def test_manual_halt_then_resume_takes_effect_at_once() -> None:
    cfg = LimitsConfig()
    ok = [_limit("max_abs_net_delta_shares")]
    halted = next_state(None, ok, 0.0, 0.0, 1, cfg, manual_halt="manual halt of book b by x: why")
    assert halted.state == HALTED and halted.triggering_limits[0] == MANUAL_HALT
    assert halted.reason.startswith("HALTED (initial evaluation): manual halt of book b by x: why")
    still = next_state(halted, ok, 0.0, 0.0, 2, cfg, manual_halt="manual halt of book b by x: why")
    assert still.state == HALTED
    resumed = next_state(still, ok, 0.0, 0.0, 3, cfg)
    assert resumed.state == "ACTIVE"  # no recovery sessions for a halt the officer lifted
    breached = next_state(still, [_limit("max_abs_net_delta_shares", "BREACH")], 0.0, 0.0, 3, cfg)
    assert breached.state == REDUCING  # the other inputs still apply at once


def test_volatility_spike_against_the_trailing_median() -> None:
    cfg = EmergencyConfig(vol_spike_multiple=3.0, vol_median_sessions=60)
    rng = np.random.default_rng(3)
    calm = 0.2 + 0.01 * rng.standard_normal((60, 2))
    median = np.median(calm, axis=0)
    today = np.array([3.0 * median[0] + 1e-9, 2.9 * median[1]])
    spikes = volatility_spikes(np.vstack([calm, today]), ["AAA", "BBB"], cfg, "realized vol")
    assert [c.subject for c in spikes] == ["AAA"]
    assert spikes[0].state == REDUCING and spikes[0].value == pytest.approx(today[0] / median[0])


def test_realized_vol_matches_pandas_rolling_std() -> None:
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, (80, 3)), axis=0))
    got = realized_vol_series(closes, 20)
    expected = pd.DataFrame(np.log(closes)).diff().rolling(20).std().to_numpy() * np.sqrt(252)
    np.testing.assert_allclose(got[20:], expected[20:], rtol=1e-12)
    assert np.isnan(got[:20]).all()


def test_average_correlation_and_loss_streak() -> None:
    c = np.array([[1.0, 0.95, 0.92], [0.95, 1.0, 0.91], [0.92, 0.91, 1.0]])
    assert average_pairwise_correlation(c) == pytest.approx((0.95 + 0.92 + 0.91) / 3)
    assert correlation_condition(c, EmergencyConfig())[0].state == REDUCING
    assert correlation_condition(c * 0.5 + np.eye(3) * 0.5, EmergencyConfig()) == []
    assert loss_streak(np.array([-1.0, 2.0, -1.0, -3.0, -0.5])) == 3
    assert loss_streak(np.array([-1.0, 1.0])) == 0
    cfg = EmergencyConfig(loss_streak_sessions=3, loss_streak_budget_factor=0.5)
    assert risk_budget_factor(3, cfg) == 0.5 and risk_budget_factor(2, cfg) == 1.0


def test_daily_loss_stop_halts_the_book_for_24_hours(warehouse: Warehouse) -> None:
    from risk_pipeline.defs.exposures.limits import daily_loss_stop

    cfg = LimitsConfig()
    as_of = pd.Timestamp("2026-11-20T20:45:00Z")
    loss = cfg.max_daily_loss_pct_nav or 0.05
    state = next_state(None, [_limit("max_abs_net_delta_shares")], 0.0, loss * 1.5, as_of, cfg)
    assert state.state == HALTED and "max_daily_loss_pct_nav" in state.triggering_limits
    event = daily_loss_stop(warehouse, "core", state, as_of, None)
    assert event is not None and event["actor"] == "risk_pipeline.risk_limits"
    assert event["reason"].startswith("daily-loss stop: HALTED [maximum]")
    assert controls.book_halt(warehouse, "core", as_of + pd.Timedelta(hours=23.9)) is not None
    assert controls.book_halt(warehouse, "core", as_of + pd.Timedelta(hours=24)) is None  # lapsed
    daily_loss_stop(warehouse, "core", state, as_of, None)  # a re-run of the valuation records nothing new
    assert warehouse.row_count("manual_controls") == 1
    calm = next_state(None, [_limit("max_abs_net_delta_shares")], 0.0, 0.0, as_of, cfg)
    assert daily_loss_stop(warehouse, "other", calm, as_of, None) is None
