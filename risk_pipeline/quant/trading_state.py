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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

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

#: Name of the manual halt among the triggering limits (risk_pipeline.controls).
MANUAL_HALT = "manual_halt"

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
    limit_results: Sequence[LimitResult],
    drawdown_pct: float,
    daily_loss_pct: float,
    config: LimitsConfig,
    *,
    manual_halt: str | None = None,
    emergency: Sequence[EmergencyCondition] = (),
) -> Assessment:
    """The target state and level the inputs call for (see the module docstring).

    ``manual_halt`` (the description of a manual halt in force) calls for HALTED; each ``emergency``
    condition (volatility spike, correlation) calls for its ``state``.
    """
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
    for e in emergency:
        reasons.append(e.reason)
        limits.append(e.name)
        state_rank = max(state_rank, _rank_state(e.state))
    if manual_halt:
        reasons.insert(0, manual_halt)
        limits.insert(0, MANUAL_HALT)
        state_rank = _rank_state(HALTED)
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
    manual_halt: str | None = None,
    emergency: Sequence[EmergencyCondition] = (),
) -> TradingStateRecord:
    """The book's trading state after one evaluation at session ``at`` (see the module docstring).

    ``previous`` is the record of the previous session (``None`` for a book's first evaluation);
    ``gross_exposure`` (optional) is recorded as ``reference_gross`` when a preservation level is
    first entered. ``manual_halt`` describes a manual halt in force (HALTED at once); once it is lifted
    the previous record counts as being in the state its preservation level implies, so a resume takes
    effect at once (the other inputs still escalate immediately). ``emergency`` lists the emergency
    conditions in force (``emergency_conditions``).
    """
    a = assess(limit_results, drawdown_pct, daily_loss_pct, config, manual_halt=manual_halt, emergency=emergency)
    if previous is not None and not manual_halt and MANUAL_HALT in previous.triggering_limits:
        # resumed: the halt was the officer's, not the inputs'; do not make the book recover from it
        previous = replace(previous, state=LEVEL_STATE[previous.preservation_level])
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


# ---------------------------------------------------------------------- emergency rules
@dataclass(frozen=True)
class EmergencyConfig:
    """Emergency rules beyond the drawdown and daily-loss levels (``data/compliance/rules.yaml``, ``emergency``).

    A volatility (realized or implied, per held underlying, or the volatility index) at least
    ``vol_spike_multiple`` times its median over the previous ``vol_median_sessions`` sessions, or an average
    pairwise correlation of the held underlyings above ``max_average_correlation``, moves the book to
    REDUCING. ``loss_streak_sessions`` losing sessions in a row multiply the VaR/ES caps (the risk budget)
    by ``loss_streak_budget_factor``.
    """

    vol_spike_multiple: float = 3.0
    vol_median_sessions: int = 60
    realized_vol_sessions: int = 20
    max_average_correlation: float = 0.9
    loss_streak_sessions: int = 5
    loss_streak_budget_factor: float = 0.5


@dataclass(frozen=True)
class EmergencyCondition:
    """One emergency rule in force: its name, the state it calls for, the reason, the measured value."""

    name: str
    state: str
    reason: str
    value: float
    threshold: float
    subject: str = ""


def volatility_spikes(
    vols: np.ndarray, names: Sequence[str], config: EmergencyConfig, label: str
) -> list[EmergencyCondition]:
    """Series (columns of ``vols``, sessions in rows, last row = today) at >= multiple x their trailing median.

    The median is over the ``vol_median_sessions`` rows before the last (NaN ignored; at least half of
    them must be measured, else the series is not judged).
    """
    vols = np.asarray(vols, dtype=float)
    if vols.ndim != 2 or vols.shape[0] < 2:
        return []
    window = vols[-config.vol_median_sessions - 1 : -1]
    enough = np.sum(np.isfinite(window), axis=0) >= max(1, config.vol_median_sessions // 2)
    with np.errstate(all="ignore"):
        median = np.nanmedian(np.where(np.isfinite(window), window, np.nan), axis=0) if window.size else None
    if median is None:
        return []
    today = vols[-1]
    ratio = today / median
    hit = enough & np.isfinite(ratio) & (median > 0) & (ratio >= config.vol_spike_multiple)
    return [
        EmergencyCondition(
            name="volatility_spike",
            state=REDUCING,
            reason=(
                f"volatility spike: {label} of {names[i]} {today[i]:.1%} is {ratio[i]:.2f}x its "
                f"{config.vol_median_sessions}-session median {median[i]:.1%} (>= {config.vol_spike_multiple:g}x)"
            ),
            value=float(ratio[i]),
            threshold=config.vol_spike_multiple,
            subject=str(names[i]),
        )
        for i in np.flatnonzero(hit)
    ]


def realized_vol_series(closes: np.ndarray, sessions: int) -> np.ndarray:
    """Annualized realized vol (sample std of daily log returns x sqrt(252)) over a trailing window.

    ``closes`` is sessions x series; row t of the result uses the returns ending at row t (NaN before
    ``sessions`` returns exist).
    """
    closes = np.asarray(closes, dtype=float)
    returns = np.diff(np.log(closes), axis=0)
    out = np.full(closes.shape, np.nan)
    if returns.shape[0] < sessions:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(returns, sessions, axis=0)  # (n-s+1, k, s)
    out[sessions:] = np.std(windows, axis=-1, ddof=1) * np.sqrt(252.0)
    return out


def average_pairwise_correlation(correlation: np.ndarray) -> float:
    """Mean of the off-diagonal entries of a correlation matrix (NaN pairs ignored; NaN below 2 names)."""
    c = np.asarray(correlation, dtype=float)
    n = c.shape[0]
    if n < 2:
        return float("nan")
    off = c[~np.eye(n, dtype=bool)]
    off = off[np.isfinite(off)]
    return float(off.mean()) if off.size else float("nan")


def correlation_condition(correlation: np.ndarray, config: EmergencyConfig) -> list[EmergencyCondition]:
    """REDUCING when the average pairwise correlation of the held underlyings is above the cap."""
    avg = average_pairwise_correlation(correlation)
    if not (avg > config.max_average_correlation):
        return []
    return [
        EmergencyCondition(
            name="average_correlation",
            state=REDUCING,
            reason=f"average pairwise correlation {avg:.3f} above {config.max_average_correlation:g}",
            value=avg,
            threshold=config.max_average_correlation,
        )
    ]


def loss_streak(daily_pnl: np.ndarray) -> int:
    """Losing sessions in a row ending at the last entry (P&L < 0)."""
    losing = np.asarray(daily_pnl, dtype=float) < 0
    if not losing.size or not losing[-1]:
        return 0
    breaks = np.flatnonzero(~losing)
    return int(losing.size - (breaks[-1] + 1 if breaks.size else 0))


def risk_budget_factor(streak: int, config: EmergencyConfig) -> float:
    """Multiplier of the VaR/ES caps: ``loss_streak_budget_factor`` once the streak reaches its count."""
    return config.loss_streak_budget_factor if streak >= config.loss_streak_sessions > 0 else 1.0
