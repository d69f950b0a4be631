"""The trading state of a book: an explicit state machine over limit results and losses.

States (after NautilusTrader's risk engine): ``ACTIVE`` (any order that passes the pre-trade
checks), ``REDUCING`` (only risk-reducing orders), ``HALTED`` (nothing). Capital-preservation
levels follow the drawdown from peak NAV and the day's loss (``LimitsConfig``):

=========  =====================================================  ========  ========================
level      condition (strictly past)                              state     action
=========  =====================================================  ========  ========================
none       drawdown <= light_drawdown_pct                         any       -
light      drawdown > light_drawdown_pct                          REDUCING  cut gross by light_gross_cut
moderate   drawdown > moderate_drawdown_pct                       REDUCING  cut gross by moderate_gross_cut,
                                                                            hedges required
maximum    drawdown > max_drawdown_pct or daily loss               HALTED    flatten speculative
           > max_daily_loss_pct_nav                                         positions, hedges required
=========  =====================================================  ========  ========================

Other inputs: a BREACH of any other limit (except the advisory ``min_positions``) calls for
REDUCING; a NOT_AVAILABLE limit calls for ``config.not_available_state`` (HALTED by default); a
missing drawdown or daily loss (NaN NAV, peak NAV or P&L) or no limit results at all call for
HALTED. The state the inputs call for is the *target*.

Transitions. Escalation is immediate: when the target state or level is above the current one,
the record moves up at once (to the target, never down in the other dimension) and ``clear_count``
restarts at 0. When the target is below the current state or level (and above in neither), the
evaluation counts as clear: ``clear_count`` grows by one, and once it reaches ``recovery_sessions``
the record steps down ONE level in each dimension that is above its target (HALTED -> REDUCING ->
ACTIVE; maximum -> moderate -> light -> none), never below the target nor below the state its level
implies, and ``clear_count`` restarts at 0, so every further step needs another
``recovery_sessions`` clear evaluations. Evaluations are sessions: ``at`` must increase from one
call to the next (a session index or a timestamp); re-evaluating a session means starting again
from the record of the session before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from risk_pipeline.quant.limits import (
    ADVISORY_LIMITS,
    BREACH,
    LOSS_LIMITS,
    NOT_AVAILABLE,
    WARN,
    LimitResult,
    LimitsConfig,
)

ACTIVE = "ACTIVE"
REDUCING = "REDUCING"
HALTED = "HALTED"
STATES: tuple[str, ...] = (ACTIVE, REDUCING, HALTED)

LEVEL_NONE = "none"
LEVEL_LIGHT = "light"
LEVEL_MODERATE = "moderate"
LEVEL_MAXIMUM = "maximum"
LEVELS: tuple[str, ...] = (LEVEL_NONE, LEVEL_LIGHT, LEVEL_MODERATE, LEVEL_MAXIMUM)

#: The least severe state each preservation level allows.
LEVEL_STATE: dict[str, str] = {
    LEVEL_NONE: ACTIVE,
    LEVEL_LIGHT: REDUCING,
    LEVEL_MODERATE: REDUCING,
    LEVEL_MAXIMUM: HALTED,
}


@dataclass(frozen=True)
class Transition:
    """One change of state and/or preservation level, for the audit trail.

    ``from_state``/``from_level`` are ``None`` on the first evaluation of a book; ``limit`` is the
    first limit behind an escalation (``None`` for a recovery step or a missing input).
    """

    from_state: str | None
    to_state: str
    from_level: str | None
    to_level: str
    reason: str
    limit: str | None
    at: Any


@dataclass(frozen=True)
class Assessment:
    """What the current inputs alone call for: target state and level, reasons, limits."""

    state: str
    level: str
    reasons: tuple[str, ...]
    triggering_limits: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class TradingStateRecord:
    """The ``trading_state`` row of a book after one evaluation.

    ``triggering_limits`` names what the inputs call the target for: limit names, or the level
    settings ``light_drawdown_pct`` / ``moderate_drawdown_pct``. ``since``/``level_since`` are the
    ``at`` of the evaluation that entered the current state / level; ``clear_count`` counts
    consecutive clear evaluations toward the next step down. ``target_state``/``target_level`` are
    what the inputs alone call for. ``target_gross_cut`` is the fraction of ``reference_gross``
    (gross when the preservation level was entered, NaN if unknown) to cut; ``flatten_speculative``
    asks to close every position whose strategy is not a hedge. ``transitions`` are the changes made
    by this evaluation.
    """

    state: str
    preservation_level: str
    reason: str
    triggering_limits: tuple[str, ...]
    since: Any
    level_since: Any
    clear_count: int
    evaluated_at: Any
    target_state: str
    target_level: str
    target_gross_cut: float
    hedges_required: bool
    flatten_speculative: bool
    reference_gross: float
    transitions: tuple[Transition, ...] = ()

    @property
    def allows_new_risk(self) -> bool:
        """Only ACTIVE allows orders that add risk."""
        return self.state == ACTIVE


def _rank_state(state: str) -> int:
    return STATES.index(state)


def _rank_level(level: str) -> int:
    return LEVELS.index(level)


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}%"


def preservation_level(
    drawdown_pct: float, daily_loss_pct: float, config: LimitsConfig
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The capital-preservation level of the inputs, with reasons and the limits behind it.

    Inputs must be finite (``assess`` handles missing ones).
    """
    reasons: list[str] = []
    limits: list[str] = []
    cap = config.max_daily_loss_pct_nav
    daily = cap is not None and daily_loss_pct > cap
    if drawdown_pct > config.max_drawdown_pct:
        reasons.append(f"drawdown {_pct(drawdown_pct)} past the {_pct(config.max_drawdown_pct)} cap")
        limits.append("max_drawdown_pct")
    if daily:
        reasons.append(f"daily loss {_pct(daily_loss_pct)} of NAV past the {_pct(cap)} cap")
        limits.append("max_daily_loss_pct_nav")
    if limits:
        return LEVEL_MAXIMUM, tuple(reasons), tuple(limits)
    for level, threshold, name in (
        (LEVEL_MODERATE, config.moderate_drawdown_pct, "moderate_drawdown_pct"),
        (LEVEL_LIGHT, config.light_drawdown_pct, "light_drawdown_pct"),
    ):
        if drawdown_pct > threshold:
            text = f"drawdown {_pct(drawdown_pct)} past the {level} level {_pct(threshold)}"
            return level, (text,), (name,)
    return LEVEL_NONE, (), ()


def _describe(r: LimitResult) -> str:
    if r.status == NOT_AVAILABLE:
        return f"{r.limit_name} NOT_AVAILABLE ({r.note or 'input missing'})"
    relation = "<" if r.kind == "floor" else ">"
    who = f" [{', '.join(r.drivers)}]" if r.drivers else ""
    return f"{r.limit_name} {r.status} ({r.value:,.6g} {relation} {r.threshold:,.6g}){who}"


def assess(
    limit_results: Sequence[LimitResult], drawdown_pct: float, daily_loss_pct: float, config: LimitsConfig
) -> Assessment:
    """The target state and level the inputs call for (see the module docstring)."""
    state_rank = 0
    reasons: list[str] = []
    limits: list[str] = []
    missing: list[str] = []
    if not math.isfinite(drawdown_pct):
        missing.append("drawdown (NAV or peak NAV missing)")
    if config.max_daily_loss_pct_nav is not None and not math.isfinite(daily_loss_pct):
        missing.append("daily loss (NAV or P&L missing)")
    if not limit_results:
        missing.append("limit results (none given)")
    level = LEVEL_NONE
    if not missing:
        level, level_reasons, level_limits = preservation_level(drawdown_pct, daily_loss_pct, config)
        reasons += level_reasons
        limits += level_limits
        state_rank = _rank_state(LEVEL_STATE[level])
    else:
        reasons.append("missing inputs: " + "; ".join(missing))
        state_rank = _rank_state(HALTED)
    warnings: list[str] = []
    for r in limit_results:
        if r.status == NOT_AVAILABLE:
            target = HALTED if r.limit_name in LOSS_LIMITS else config.not_available_state
        elif r.status == BREACH and r.limit_name not in LOSS_LIMITS and r.limit_name not in ADVISORY_LIMITS:
            target = REDUCING
        else:
            if r.status in (WARN, BREACH):
                warnings.append(r.limit_name)
            continue
        reasons.append(_describe(r))
        limits.append(r.limit_name)
        state_rank = max(state_rank, _rank_state(target))
    return Assessment(
        state=STATES[state_rank],
        level=level,
        reasons=tuple(reasons),
        triggering_limits=tuple(dict.fromkeys(limits)),
        warnings=tuple(warnings),
    )


def _actions(level: str, config: LimitsConfig) -> tuple[float, bool, bool]:
    """(target_gross_cut, hedges_required, flatten_speculative) of a preservation level."""
    if level == LEVEL_LIGHT:
        return config.light_gross_cut, False, False
    if level == LEVEL_MODERATE:
        return config.moderate_gross_cut, True, False
    if level == LEVEL_MAXIMUM:
        return config.moderate_gross_cut, True, True
    return 0.0, False, False


def _check_order(previous: TradingStateRecord, at: Any) -> None:
    try:
        later = at > previous.evaluated_at
    except TypeError:
        return
    if not later:
        raise ValueError(
            f"evaluations must move forward: at={at!r} is not after the previous evaluation "
            f"{previous.evaluated_at!r}; re-evaluate from the record of the session before"
        )


def next_state(
    previous: TradingStateRecord | None,
    limit_results: Sequence[LimitResult],
    drawdown_pct: float,
    daily_loss_pct: float,
    at: Any,
    config: LimitsConfig,
    *,
    gross_exposure: float | None = None,
) -> TradingStateRecord:
    """The book's trading state after one evaluation at session ``at`` (see the module docstring).

    ``previous`` is the record of the previous session (``None`` for a book's first evaluation);
    ``gross_exposure`` (optional) is recorded as ``reference_gross`` when a preservation level is
    first entered.
    """
    a = assess(limit_results, drawdown_pct, daily_loss_pct, config)
    gross = math.nan if gross_exposure is None else float(gross_exposure)
    if previous is None:
        state, level, clear = a.state, a.level, 0
        since = level_since = at
        reference = gross if level != LEVEL_NONE else math.nan
        head = "initial evaluation"
        first = a.triggering_limits[0] if a.triggering_limits else None
        transitions = [Transition(None, state, None, level, "", first, at)]
    else:
        _check_order(previous, at)
        p_state, p_level = previous.state, previous.preservation_level
        up_state = _rank_state(a.state) > _rank_state(p_state)
        up_level = _rank_level(a.level) > _rank_level(p_level)
        reference = previous.reference_gross
        if up_state or up_level:
            state = a.state if up_state else p_state
            level = a.level if up_level else p_level
            clear = 0
            head = "escalated"
            if up_level and p_level == LEVEL_NONE:
                reference = gross
        elif a.state == p_state and a.level == p_level:
            state, level, clear = p_state, p_level, 0
            head = ""
        else:
            clear = previous.clear_count + 1
            state, level = p_state, p_level
            if clear >= config.recovery_sessions:
                if _rank_level(p_level) > _rank_level(a.level):
                    level = LEVELS[_rank_level(p_level) - 1]
                if _rank_state(p_state) > _rank_state(a.state):
                    floor = max(_rank_state(a.state), _rank_state(LEVEL_STATE[level]))
                    state = STATES[max(_rank_state(p_state) - 1, floor)]
                clear = 0
                head = f"stepped down after {config.recovery_sessions} clear session(s)"
            else:
                head = f"recovering: clear for {clear} of {config.recovery_sessions} session(s)"
        if level == LEVEL_NONE:
            reference = math.nan
        since = at if state != p_state else previous.since
        level_since = at if level != p_level else previous.level_since
        transitions = []
        if state != p_state or level != p_level:
            limit = a.triggering_limits[0] if head == "escalated" and a.triggering_limits else None
            transitions.append(Transition(p_state, state, p_level, level, "", limit, at))
    label = state + (f" [{level}]" if level != LEVEL_NONE else "") + (f" ({head})" if head else "")
    reason = f"{label}: " + ("; ".join(a.reasons) or "all limits within caps")
    if a.warnings:
        reason += "; warnings: " + ", ".join(a.warnings)
    transitions = [
        Transition(t.from_state, t.to_state, t.from_level, t.to_level, reason, t.limit, t.at) for t in transitions
    ]
    cut, hedges, flatten = _actions(level, config)
    return TradingStateRecord(
        state=state,
        preservation_level=level,
        reason=reason,
        triggering_limits=a.triggering_limits,
        since=since,
        level_since=level_since,
        clear_count=clear,
        evaluated_at=at,
        target_state=a.state,
        target_level=a.level,
        target_gross_cut=cut,
        hedges_required=hedges,
        flatten_speculative=flatten,
        reference_gross=reference,
        transitions=tuple(transitions),
    )
