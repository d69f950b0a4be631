"""Trading-state machine: escalation, recovery timing, one-level step-down, fail-closed inputs.

Limit results are built by hand; the config has recovery_sessions = 3 and the default levels
(light 5 %, moderate 7.5 %, maximum 10 % drawdown, 2 % daily loss).
"""

from __future__ import annotations

import math

import pytest

from risk_pipeline.quant.limits import BREACH, NOT_AVAILABLE, OK, WARN, LimitResult, LimitsConfig
from risk_pipeline.quant.trading_state import (
    ACTIVE,
    HALTED,
    LEVEL_LIGHT,
    LEVEL_MAXIMUM,
    LEVEL_MODERATE,
    LEVEL_NONE,
    REDUCING,
    TradingStateRecord,
    Transition,
    next_state,
)

CFG = LimitsConfig(recovery_sessions=3)
NAMES = (
    "max_abs_net_dollar_delta",
    "max_position_pct_gross",
    "max_var_99_1d",
    "min_positions",
    "max_drawdown_pct",
)


def rows(**statuses: str) -> list[LimitResult]:
    out = []
    for name in NAMES:
        status = statuses.get(name, OK)
        value = {OK: 1.0, WARN: 9.0, BREACH: 12.0, NOT_AVAILABLE: math.nan}[status]
        out.append(
            LimitResult(name, value, 10.0, 8.0, value / 10.0, status, note="missing" if math.isnan(value) else "")
        )
    return out


def step(
    prev: TradingStateRecord | None,
    at: int,
    dd: float = 0.0,
    loss: float = 0.0,
    config: LimitsConfig = CFG,
    gross: float | None = None,
    **statuses: str,
) -> TradingStateRecord:
    return next_state(prev, rows(**statuses), dd, loss, at, config, gross_exposure=gross)


def test_first_evaluation_of_a_clean_book_is_active() -> None:
    s = step(None, 1)
    assert (s.state, s.preservation_level, s.clear_count, s.since) == (ACTIVE, LEVEL_NONE, 0, 1)
    assert "all limits within caps" in s.reason and s.triggering_limits == ()
    assert s.transitions == (Transition(None, ACTIVE, None, LEVEL_NONE, s.reason, None, 1),)
    assert s.allows_new_risk


def test_breach_escalates_immediately_and_names_the_limit() -> None:
    a = step(None, 1)
    r = step(a, 2, max_abs_net_dollar_delta=BREACH)
    assert r.state == REDUCING and r.since == 2 and r.clear_count == 0
    assert r.triggering_limits == ("max_abs_net_dollar_delta",)
    assert "max_abs_net_dollar_delta BREACH" in r.reason
    (t,) = r.transitions
    assert (t.from_state, t.to_state, t.limit, t.at) == (ACTIVE, REDUCING, "max_abs_net_dollar_delta", 2)
    # a WARN does not change the state but is reported
    w = step(a, 2, max_position_pct_gross=WARN)
    assert w.state == ACTIVE and "warnings: max_position_pct_gross" in w.reason and w.transitions == ()


def test_recovery_needs_three_consecutive_clear_sessions() -> None:
    r = step(step(None, 1), 2, max_abs_net_dollar_delta=BREACH)
    s3 = step(r, 3)
    s4 = step(s3, 4)
    assert (s3.state, s3.clear_count) == (REDUCING, 1)
    assert (s4.state, s4.clear_count) == (REDUCING, 2)
    assert "recovering: clear for 2 of 3" in s4.reason and s4.since == 2
    s5 = step(s4, 5)
    assert (s5.state, s5.clear_count, s5.since) == (ACTIVE, 0, 5)
    assert s5.transitions[0].from_state == REDUCING and s5.transitions[0].limit is None


def test_a_new_breach_during_recovery_restarts_the_count() -> None:
    r = step(step(None, 1), 2, max_abs_net_dollar_delta=BREACH)
    s = step(step(r, 3), 4)
    assert s.clear_count == 2
    again = step(s, 5, max_position_pct_gross=BREACH)
    assert (again.state, again.clear_count, again.since) == (REDUCING, 0, 2)  # still in REDUCING since 2
    assert again.triggering_limits == ("max_position_pct_gross",)
    s7 = step(step(again, 6), 7)
    assert s7.state == REDUCING and step(s7, 8).state == ACTIVE


def test_halted_steps_down_one_level_at_a_time() -> None:
    h = step(step(None, 1), 2, dd=0.12)
    assert (h.state, h.preservation_level) == (HALTED, LEVEL_MAXIMUM)
    assert h.flatten_speculative and h.hedges_required
    assert h.triggering_limits == ("max_drawdown_pct",)
    seen = []
    s = h
    for at in range(3, 12):  # drawdown fully recovered from session 3 on
        s = step(s, at)
        seen.append((s.state, s.preservation_level))
    # maximum -> moderate (and HALTED -> REDUCING) after 3, -> light after 6, -> none/ACTIVE after 9
    assert seen[1] == (HALTED, LEVEL_MAXIMUM)
    assert seen[2] == (REDUCING, LEVEL_MODERATE)
    assert seen[4] == (REDUCING, LEVEL_MODERATE)
    assert seen[5] == (REDUCING, LEVEL_LIGHT)
    assert seen[7] == (REDUCING, LEVEL_LIGHT)
    assert seen[8] == (ACTIVE, LEVEL_NONE)


def test_recovery_stops_at_the_level_the_inputs_still_call_for() -> None:
    h = step(step(None, 1), 2, dd=0.12)
    s = h
    for at in range(3, 12):  # drawdown back to 6 %: light level
        s = step(s, at, dd=0.06)
    assert (s.state, s.preservation_level, s.target_level) == (REDUCING, LEVEL_LIGHT, LEVEL_LIGHT)


@pytest.mark.parametrize(
    ("dd", "loss", "state", "level", "cut", "hedges"),
    [
        (0.05, 0.0, ACTIVE, LEVEL_NONE, 0.0, False),  # exactly at the light level: not past it
        (0.0501, 0.0, REDUCING, LEVEL_LIGHT, 0.25, False),
        (0.08, 0.0, REDUCING, LEVEL_MODERATE, 0.50, True),
        (0.10, 0.0, REDUCING, LEVEL_MODERATE, 0.50, True),  # exactly at the cap
        (0.1001, 0.0, HALTED, LEVEL_MAXIMUM, 0.50, True),
        (0.0, 0.0201, HALTED, LEVEL_MAXIMUM, 0.50, True),  # daily loss limit hit
    ],
)
def test_preservation_levels(dd: float, loss: float, state: str, level: str, cut: float, hedges: bool) -> None:
    s = step(None, 1, dd=dd, loss=loss, gross=1000.0)
    assert (s.state, s.preservation_level, s.target_gross_cut, s.hedges_required) == (
        state,
        level,
        cut,
        hedges,
    )
    assert s.flatten_speculative == (level == LEVEL_MAXIMUM)
    assert (s.reference_gross == 1000.0) if level != LEVEL_NONE else math.isnan(s.reference_gross)


def test_daily_loss_escalates_active_straight_to_halted() -> None:
    s = step(step(None, 1), 2, loss=0.03)
    assert s.state == HALTED and s.triggering_limits == ("max_daily_loss_pct_nav",)
    assert "daily loss 3.00%" in s.reason


def test_reference_gross_is_kept_from_the_first_level() -> None:
    light = step(step(None, 1, gross=100.0), 2, dd=0.06, gross=90.0)
    moderate = step(light, 3, dd=0.08, gross=70.0)
    assert light.reference_gross == 90.0 and moderate.reference_gross == 90.0
    assert moderate.level_since == 3 and moderate.since == 2


@pytest.mark.parametrize(
    ("dd", "loss", "results"),
    [(math.nan, 0.0, None), (0.0, math.nan, None), (0.0, 0.0, [])],
)
def test_missing_inputs_fail_closed(dd: float, loss: float, results: list[LimitResult] | None) -> None:
    s = next_state(step(None, 1), rows() if results is None else results, dd, loss, 2, CFG)
    assert s.state == HALTED and "missing inputs" in s.reason


def test_not_available_limit_uses_the_configured_state() -> None:
    s = step(None, 1, max_var_99_1d=NOT_AVAILABLE)
    assert s.state == HALTED and "max_var_99_1d NOT_AVAILABLE" in s.reason
    soft = LimitsConfig(recovery_sessions=3, not_available_state="REDUCING")
    assert step(None, 1, config=soft, max_var_99_1d=NOT_AVAILABLE).state == REDUCING


def test_min_positions_is_advisory_and_loss_rows_come_from_the_inputs() -> None:
    s = step(None, 1, min_positions=BREACH, max_drawdown_pct=WARN)
    assert s.state == ACTIVE and "min_positions" in s.reason
    # the drawdown row alone does not escalate: the explicit drawdown input does
    assert step(None, 1, dd=0.0, max_drawdown_pct=BREACH).state == ACTIVE


def test_escalation_in_one_dimension_does_not_recover_the_other() -> None:
    halted = step(None, 1, dd=math.nan)
    assert halted.state == HALTED and halted.preservation_level == LEVEL_NONE
    s = step(halted, 2, dd=0.06)  # NAV back, drawdown 6 %: level light at once, state stays HALTED
    assert (s.state, s.preservation_level, s.clear_count) == (HALTED, LEVEL_LIGHT, 0)


def test_sessions_must_move_forward() -> None:
    s = step(None, 5)
    with pytest.raises(ValueError, match="move forward"):
        step(s, 5)
