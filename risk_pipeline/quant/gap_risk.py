"""Gap-risk decisions ahead of scheduled events: reduce, tighten caps, block new entries, flatten short gamma.

Pure numerics (numpy and dataclasses in and out, no Dagster, no I/O). The exchange calendar is an input
(a tuple of sessions), so every rule here is testable against ``exchange_calendars`` by the caller.

Events and windows. An event's *reaction session* is the first session whose close is after the event
time (an earnings release after the close moves the next session; CPI at 08:30 New York moves the same
session; an early close counts as that session's close). ``trading_days_until`` counts the sessions
after the evaluation session up to and including the reaction session (0: the gap hits this session).
An event is *in its window* while it has not happened and ``trading_days_until <= lead`` for its type
(``LeadWindows``: earnings 2, FOMC 1, CPI 1, any other type 1 by default).

Actions per book and event (one row per event: the name for earnings, ``*`` = the whole book for
market-wide events):

* ``flatten_short_gamma`` (earnings, when the book's policy says so): every short option on the name is
  bought back (trade ``+|q|``);
* ``reduce``: the remaining positions in scope (the name's, or the whole book's for a market-wide event)
  are scaled by the largest ``k`` in [0, 1] (a grid of ``1 / REDUCE_GRID``, refined to ``1 / REDUCE_GRID**2``
  above its largest passing point) whose estimated event
  loss is within the budget ``max_event_loss_pct_nav * NAV``, then truncated to whole units toward zero;
  the loss after is recomputed by full revaluation of the resulting book. The event-day P&L of the
  scaled book is ``k A + B`` (``A`` the P&L of the positions in scope, ``B`` of everything else,
  including time decay), so the loss measure is evaluated for every ``k`` of the grid at once;
* ``tighten_caps``: limit overrides in force until the event has happened: the name's caps
  (``max_abs_net_delta_shares``, ``max_abs_gamma_shares``) or the book's (``max_abs_net_dollar_delta``,
  ``max_abs_gamma_shares`` for every underlying) times ``cap_factor`` (0.5);
* ``block_new``: the pre-trade check rejects orders that add risk in the name (or book-wide for
  market-wide events) until the event time;
* ``alert``: every row (recorded in the audit trail).

The row's ``action`` is the most severe one taken (``ACTION_SEVERITY``); ``actions`` lists them all.
The loss measure is the event-risk loss at its confidence (``loss_quantile``, empirical VaR of the event
day), or its expected shortfall or worst case (``empirical_var_es`` conventions of ``quant.var``).

UVaR with gap scenarios (``gap_var``): when an event's reaction session falls inside a VaR horizon of
``h`` sessions, each historical ``h``-day scenario is combined with each past event-day move
(``(1 + r)(1 + g) - 1`` per underlying; several events multiply their gaps), the book is revalued in
full under the combined set (sampled without replacement down to ``max_scenarios`` when larger), and
the gap component is that VaR minus the VaR without the gaps.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import FloatArray, IntArray
from risk_pipeline.quant.limits import BREACH, OK, WARN, LimitResult, limit_status, utilization

if TYPE_CHECKING:  # the revaluation engine is imported where it is used: the pre-trade path needs none of it
    from risk_pipeline.quant.portfolio import Portfolio
    from risk_pipeline.quant.scenario_engine import AmericanMethod, ScenarioSet

LossMeasure = Literal["loss_quantile", "expected_shortfall", "worst_loss"]

REDUCE = "reduce"
TIGHTEN_CAPS = "tighten_caps"
BLOCK_NEW = "block_new"
FLATTEN_SHORT_GAMMA = "flatten_short_gamma"
ALERT = "alert"
NO_ACTION = "none"
#: Least to most severe; a row's ``action`` is the most severe action taken.
ACTION_SEVERITY: tuple[str, ...] = (NO_ACTION, ALERT, TIGHTEN_CAPS, BLOCK_NEW, REDUCE, FLATTEN_SHORT_GAMMA)
#: ``symbol`` of a row that applies to the whole book (market-wide events and the no-event marker).
BOOK_WIDE = "*"
#: Grid steps of the reduction factor ``k`` in [0, 1].
REDUCE_GRID = 1000
#: Single-name limits tightened for earnings, and book limits tightened for market-wide events.
SINGLE_NAME_LIMITS: tuple[str, ...] = ("max_abs_net_delta_shares", "max_abs_gamma_shares")
MARKET_LIMITS: tuple[str, ...] = ("max_abs_net_dollar_delta", "max_abs_gamma_shares")
#: Per-underlying limits (their value is the largest over underlyings).
PER_UNDERLYING_LIMITS: frozenset[str] = frozenset({"max_abs_net_delta_shares", "max_abs_gamma_shares"})
DEFAULT_LEAD_SESSIONS: dict[str, int] = {"earnings": 2, "fomc": 1, "cpi": 1}
#: Risk level of the estimated loss against the budget: LOW below half, MEDIUM up to the budget,
#: HIGH up to twice, CRITICAL beyond.
RISK_LEVEL_RATIOS: tuple[tuple[float, str], ...] = ((0.5, "LOW"), (1.0, "MEDIUM"), (2.0, "HIGH"))


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


class GapRiskConfigError(ValueError):
    """Every problem of a gap-risk policy mapping at once."""


@dataclass(frozen=True)
class LeadWindows:
    """Lead window per event type in exchange sessions (``default`` for types not listed)."""

    sessions: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LEAD_SESSIONS))
    default: int = 1

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.sessions.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0}
        if bad or not isinstance(self.default, int) or self.default < 0:
            raise GapRiskConfigError(f"lead windows must be whole sessions >= 0: {bad or self.default!r}")
        object.__setattr__(self, "sessions", dict(self.sessions))

    def lead(self, event_type: str) -> int:
        return int(self.sessions.get(event_type, self.default))


@dataclass(frozen=True)
class GapRiskPolicy:
    """What a book does ahead of events (module docstring)."""

    book: str = "default"
    max_event_loss_pct_nav: float = 0.01
    loss_measure: LossMeasure = "loss_quantile"
    reduce: bool = True
    tighten_caps: bool = True
    cap_factor: float = 0.5
    block_new: bool = True
    block_new_market_wide: bool = True
    flatten_short_gamma_before_earnings: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.max_event_loss_pct_nav, int | float) and 0.0 < self.max_event_loss_pct_nav < 1.0):
            problems.append(f"max_event_loss_pct_nav {self.max_event_loss_pct_nav!r} must be in (0, 1)")
        if self.loss_measure not in ("loss_quantile", "expected_shortfall", "worst_loss"):
            problems.append(
                f"loss_measure {self.loss_measure!r} must be loss_quantile, expected_shortfall or worst_loss"
            )
        if not (isinstance(self.cap_factor, int | float) and 0.0 < self.cap_factor <= 1.0):
            problems.append(f"cap_factor {self.cap_factor!r} must be in (0, 1]")
        for name in (
            "reduce",
            "tighten_caps",
            "block_new",
            "block_new_market_wide",
            "flatten_short_gamma_before_earnings",
        ):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} {getattr(self, name)!r} must be true or false")
        if problems:
            raise GapRiskConfigError(f"gap-risk policy of book {self.book!r}: " + "; ".join(problems))


POLICY_FIELDS: tuple[str, ...] = (
    "max_event_loss_pct_nav",
    "loss_measure",
    "reduce",
    "tighten_caps",
    "cap_factor",
    "block_new",
    "block_new_market_wide",
    "flatten_short_gamma_before_earnings",
)


@dataclass(frozen=True)
class GapRiskConfig:
    """A parsed gap-risk file: version, lead windows, default policy and per-book overrides."""

    version: str
    leads: LeadWindows
    defaults: GapRiskPolicy
    books: Mapping[str, GapRiskPolicy]

    def for_book(self, book: str) -> GapRiskPolicy:
        return self.books.get(book, replace(self.defaults, book=book))


def parse_gap_risk_config(raw: Mapping[str, Any], source: str = "<dict>") -> GapRiskConfig:
    """Validate a gap-risk mapping: ``version``, ``lead_sessions``, ``default_lead_sessions``, ``defaults``,
    ``books`` (book -> overrides of ``defaults``). Raises ``GapRiskConfigError`` naming every problem."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise GapRiskConfigError(f"{source}: must hold a mapping")
    known = {"version", "lead_sessions", "default_lead_sessions", "defaults", "books"}
    problems += [f"{source}: unknown top-level key {k!r}" for k in raw if k not in known]
    version = raw.get("version")
    if not version:
        problems.append(f"{source}: version is required")
    leads_raw = raw.get("lead_sessions") or {}
    try:
        leads = LeadWindows({**DEFAULT_LEAD_SESSIONS, **dict(leads_raw)}, raw.get("default_lead_sessions", 1))
    except (GapRiskConfigError, TypeError, ValueError) as exc:
        problems.append(f"{source}: {exc}")
        leads = LeadWindows()

    def policy(book: str, values: Mapping[str, Any]) -> GapRiskPolicy | None:
        unknown = [k for k in values if k not in POLICY_FIELDS]
        if unknown:
            problems.append(f"{source}: book {book!r}: unknown field(s) {unknown}; known: {list(POLICY_FIELDS)}")
            return None
        try:
            return GapRiskPolicy(book=book, **dict(values))
        except GapRiskConfigError as exc:
            problems.append(f"{source}: {exc}")
            return None

    defaults_raw = raw.get("defaults") or {}
    defaults = policy("defaults", defaults_raw) or GapRiskPolicy()
    books = {}
    for book, overrides in (raw.get("books") or {}).items():
        got = policy(str(book), {**defaults_raw, **(overrides or {})})
        if got is not None:
            books[str(book)] = got
    if problems:
        raise GapRiskConfigError("\n".join(problems))
    return GapRiskConfig(str(version), leads, defaults, books)


# --------------------------------------------------------------------------------------------------
# exchange-calendar rules (sessions are an input)
# --------------------------------------------------------------------------------------------------


def trading_days_until(session: dt.date, reaction_session: dt.date, sessions: Sequence[dt.date]) -> int:
    """Sessions after ``session`` up to and including ``reaction_session`` (0 when it is ``session`` or earlier)."""
    days = np.asarray(sessions, dtype="datetime64[D]")
    lo = np.searchsorted(days, np.datetime64(session, "D"), side="right")
    hi = np.searchsorted(days, np.datetime64(reaction_session, "D"), side="right")
    return int(max(hi - lo, 0))


def window_start(reaction_session: dt.date, lead: int, sessions: Sequence[dt.date]) -> dt.date:
    """First session of an event's window: ``lead`` sessions before its reaction session."""
    days = list(sessions)
    i = days.index(reaction_session)
    if i - lead < 0:
        raise ValueError(f"the sessions given do not reach {lead} sessions before {reaction_session}")
    return days[i - lead]


def monthly_expirations(sessions: Sequence[dt.date], first_month: dt.date, last_month: dt.date) -> list[dt.date]:
    """Standard monthly option expirations: the third Friday of each month, or the session before it when
    the exchange is closed that Friday (e.g. Good Friday 2025-04-18 -> 2025-04-17)."""
    days = np.asarray(sessions, dtype="datetime64[D]")
    out = []
    y, m = first_month.year, first_month.month
    while (y, m) <= (last_month.year, last_month.month):
        first = dt.date(y, m, 1)
        friday = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)
        i = int(np.searchsorted(days, np.datetime64(friday, "D"), side="right")) - 1
        if i < 0:
            raise ValueError(f"no session on or before {friday} in the sessions given")
        out.append(days[i].astype(dt.date))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


# --------------------------------------------------------------------------------------------------
# loss measures
# --------------------------------------------------------------------------------------------------


def loss_measures(pnl: ArrayLike, confidence: float) -> dict[str, FloatArray]:
    """Loss quantile (empirical VaR), expected shortfall and worst loss of every column of ``pnl``
    (scenarios x columns), with the conventions of ``quant.var.empirical_var_es``; positive = loss."""
    p = np.sort(np.asarray(pnl, dtype=np.float64), axis=0)
    if p.ndim == 1:
        p = p[:, None]
    n = p.shape[0]
    if n == 0 or not np.all(np.isfinite(p)):
        raise ValueError("pnl must be a non-empty finite sample")
    m = n * (1.0 - confidence)
    if abs(m - round(m)) < 1e-9:
        m = float(round(m))
    var = -p[max(1, math.ceil(m)) - 1]
    if m <= 1.0:
        es = -p[0]
    else:
        whole = math.floor(m)
        tail = p[:whole].sum(axis=0) + (m - whole) * (p[whole] if whole < n else 0.0)
        es = -tail / m
    return {"loss_quantile": var, "expected_shortfall": es, "worst_loss": -p[0]}


def loss_of(pnl: ArrayLike, measure: LossMeasure, confidence: float) -> float:
    """One loss measure of one P&L sample."""
    return float(loss_measures(np.asarray(pnl, dtype=np.float64).reshape(-1), confidence)[measure][0])


# --------------------------------------------------------------------------------------------------
# actions
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowEvent:
    """An event inside its lead window (``symbol`` None: market-wide)."""

    event_id: str
    event_type: str
    symbol: str | None
    event_time: Any
    reaction_session: dt.date
    trading_days_until: int

    @property
    def market_wide(self) -> bool:
        return self.symbol is None


@dataclass(frozen=True)
class Trade:
    """One position's trade: ``trade_quantity`` signed (``> 0`` buys), in the position's units."""

    position_id: str
    action: str
    quantity_before: float
    trade_quantity: float
    quantity_after: float


@dataclass(frozen=True)
class GapDecision:
    """Everything decided for one book and one event."""

    event: WindowEvent
    symbol: str
    actions: tuple[str, ...]
    trades: tuple[Trade, ...]
    limit_overrides: dict[str, float]
    loss_before: float
    loss_after: float
    budget: float
    n_scenarios: int
    reduce_factor: float
    reason: str

    @property
    def action(self) -> str:
        return max(self.actions, key=ACTION_SEVERITY.index) if self.actions else NO_ACTION

    @property
    def quantity(self) -> float:
        """Units traded, summed over positions (shares and contracts as each position counts them)."""
        return float(sum(abs(t.trade_quantity) for t in self.trades))

    def trades_json(self) -> str:
        return json.dumps([t.__dict__ for t in self.trades], sort_keys=True)

    def overrides_json(self) -> str | None:
        return json.dumps(self.limit_overrides, sort_keys=True) if self.limit_overrides else None


def event_pnl(
    portfolio: Portfolio,
    event: WindowEvent,
    moves: ArrayLike,
    betas: ArrayLike | None,
    *,
    horizon_days: float = 1.0,
    american: AmericanMethod = "eep_grid",
    vol_dynamics: Any | None = None,
) -> FloatArray:
    """Event-day P&L of ``portfolio`` under each past move (the event-risk scenario set); ``vol_dynamics``
    (``smile_dynamics.EarningsVolCrush``) adds its per-position vol shifts to every scenario."""
    from risk_pipeline.quant.scenario_engine import evaluate

    sc = _event_set(portfolio, event, moves, betas, vol_dynamics)
    return evaluate(portfolio, sc, horizon_days, american=american).pnl


def _event_set(
    portfolio: Portfolio, event: WindowEvent, moves: ArrayLike, betas: ArrayLike | None, vol_dynamics: Any | None
) -> ScenarioSet:
    """``event_pnl``'s scenario set (it reads the positions' contracts, not their quantities)."""
    from risk_pipeline.quant.stress import GapEvent, event_scenarios

    sc = event_scenarios(portfolio, GapEvent(event.event_id, event.event_type, event.symbol), moves, betas)
    if vol_dynamics is not None:
        sc = replace(sc, vol_shift_abs=vol_dynamics.shifts(portfolio, sc), vol_shift_per_position=True)
    return sc


def _book_pnl_of(
    portfolio: Portfolio,
    event: WindowEvent,
    moves: ArrayLike,
    betas: ArrayLike | None,
    horizon_days: float,
    american: AmericanMethod,
    vol_dynamics: Any | None,
) -> Callable[[FloatArray], FloatArray]:
    """``quantity -> event_pnl(replace(portfolio, quantity=quantity), event, moves, betas, ...)``, the same bits, with
    the scenario set made and the book prepared once for every quantity (the option prices and the early-exercise
    grids depend on the contracts, not the quantities: ``scenario_engine.with_quantity``) and each distinct quantity
    vector revalued once."""
    from risk_pipeline.quant.scenario_engine import evaluate_prepared, prepare, with_quantity

    sc = _event_set(portfolio, event, moves, betas, vol_dynamics)
    book = None
    done: dict[bytes, FloatArray] = {}

    def book_pnl(quantity: FloatArray) -> FloatArray:
        nonlocal book
        q = np.ascontiguousarray(quantity, dtype=np.float64)
        key = q.tobytes()
        if key not in done:
            if book is None:
                book = prepare(portfolio, horizon_days, sc, american)
            done[key] = evaluate_prepared(with_quantity(book, replace(portfolio, quantity=q)), sc).pnl
        return done[key].copy()

    return book_pnl


def decide(
    portfolio: Portfolio,
    event: WindowEvent,
    moves: ArrayLike,
    betas: ArrayLike | None,
    *,
    nav: float,
    policy: GapRiskPolicy,
    caps: Mapping[str, float | None],
    confidence: float = 0.95,
    horizon_days: float = 1.0,
    american: AmericanMethod = "eep_grid",
    vol_dynamics: Any | None = None,
) -> GapDecision:
    """The actions of one book for one event in its window (module docstring).

    ``portfolio`` is the book (``position_id`` set), ``moves`` the event's past event-day moves (of the
    name for earnings, of the index for market-wide events, mapped by ``betas``), ``caps`` the book's
    current limits (``None`` = disabled); ``vol_dynamics``: the earnings vol crush (as ``event_risk``).
    """
    if not (math.isfinite(nav) and nav > 0.0):
        raise ValueError(f"NAV {nav!r} must be positive to size the event-loss budget")
    measure = policy.loss_measure
    budget = policy.max_event_loss_pct_nav * nav
    q0 = np.asarray(portfolio.quantity, dtype=np.float64)
    sym = np.asarray(portfolio.symbols)[portfolio.symbol_index]
    in_scope = np.ones(q0.size, dtype=bool) if event.market_wide else (sym == event.symbol)
    in_scope &= q0 != 0.0

    m = np.asarray(moves if moves is not None else [], dtype=np.float64).reshape(-1)
    known = m.size > 0
    if known:
        book_pnl = _book_pnl_of(portfolio, event, moves, betas, horizon_days, american, vol_dynamics)
    pnl_before = book_pnl(q0) if known else np.zeros(0)
    loss_before = loss_of(pnl_before, measure, confidence) if known else math.nan
    actions: list[str] = [ALERT]
    q1 = q0.copy()
    flattened = np.zeros(q0.size, dtype=bool)
    if not event.market_wide and policy.flatten_short_gamma_before_earnings:
        flattened = in_scope & np.asarray(portfolio.is_option) & (q0 < 0.0)
        q1[flattened] = 0.0
        if flattened.any():
            actions.append(FLATTEN_SHORT_GAMMA)
    scaled = in_scope & ~flattened
    k = 1.0
    if policy.reduce and scaled.any() and known:
        a = book_pnl(np.where(scaled, q1, 0.0))
        b = book_pnl(np.where(scaled, 0.0, q1))

        def losses_at(ks: FloatArray) -> FloatArray:
            return loss_measures(a[:, None] * ks[None, :] + b[:, None], confidence)[measure]

        grid = np.linspace(0.0, 1.0, REDUCE_GRID + 1)
        losses = losses_at(grid)
        if losses[-1] > budget:
            ok = np.flatnonzero(losses <= budget)
            candidates = np.array([0.0])
            if ok.size:  # refine above the largest passing grid point (steps of 1e-6 of the position)
                lo = grid[ok[-1]]
                fine = np.linspace(lo, min(lo + 1.0 / REDUCE_GRID, 1.0), REDUCE_GRID + 1)
                best = fine[losses_at(fine) <= budget][-1:]
                candidates = np.unique(np.concatenate([best, grid[ok], candidates]))[::-1]
            for k in candidates:  # the largest k whose whole-unit book is within budget (few iterations)
                trial = np.where(scaled, np.trunc(q1 * k), q1)
                if loss_of(book_pnl(trial), measure, confidence) <= budget or k == 0.0:
                    break
            k = float(k)
            q1 = np.where(scaled, np.trunc(q1 * k), q1)
            if np.any(q1 != np.where(flattened, 0.0, q0)):
                actions.append(REDUCE)
    trades = tuple(
        Trade(
            str(portfolio.position_id[i]),
            FLATTEN_SHORT_GAMMA if flattened[i] else REDUCE,
            float(q0[i]),
            float(q1[i] - q0[i]),
            float(q1[i]),
        )
        for i in np.flatnonzero(q1 != q0)
    )
    loss_after = loss_of(book_pnl(q1), measure, confidence) if trades and known else loss_before
    overrides: dict[str, float] = {}
    if policy.tighten_caps:
        names = MARKET_LIMITS if event.market_wide else SINGLE_NAME_LIMITS
        overrides = {n: float(caps[n]) * policy.cap_factor for n in names if caps.get(n) is not None}
        if overrides:
            actions.append(TIGHTEN_CAPS)
    if policy.block_new and (not event.market_wide or policy.block_new_market_wide):
        actions.append(BLOCK_NEW)
    where = "the book" if event.market_wide else event.symbol
    reason = (
        f"{event.event_type} {event.event_id} in {event.trading_days_until} session(s) "
        f"(reaction {event.reaction_session}): "
    )
    if known:
        reason += (
            f"estimated {measure.replace('_', ' ')} {loss_before:,.0f} vs budget {budget:,.0f} "
            f"({policy.max_event_loss_pct_nav:.2%} of NAV {nav:,.0f}) over {len(pnl_before)} past moves"
        )
    else:
        reason += "no past event-day moves of this event in the price history: loss not estimated, no reduction"
    if FLATTEN_SHORT_GAMMA in actions:
        reason += f"; short options on {event.symbol} bought back"
    if REDUCE in actions:
        reason += f"; positions of {where} scaled by {k:.3f}"
    if known and loss_after > budget:
        reason += f"; loss after {loss_after:,.0f} still above budget (only {where} is in scope)"
    if overrides:
        reason += f"; caps x{policy.cap_factor:g} until the event: " + ", ".join(
            f"{n} {v:,.0f}" for n, v in overrides.items()
        )
    if BLOCK_NEW in actions:
        reason += f"; no new risk in {where} until the event"
    return GapDecision(
        event=event,
        symbol=BOOK_WIDE if event.market_wide else str(event.symbol),
        actions=tuple(sorted(set(actions), key=ACTION_SEVERITY.index, reverse=True)),
        trades=trades,
        limit_overrides=overrides,
        loss_before=loss_before,
        loss_after=loss_after,
        budget=budget,
        n_scenarios=len(pnl_before),
        reduce_factor=k,
        reason=reason,
    )


def risk_level(loss: float, budget: float) -> str:
    """LOW / MEDIUM / HIGH / CRITICAL of an estimated loss against the budget (``RISK_LEVEL_RATIOS``)."""
    ratio = loss / budget if budget > 0.0 else math.inf
    for bound, level in RISK_LEVEL_RATIOS:
        if ratio < bound:
            return level
    return "CRITICAL"


def gap_document(rows: Sequence[Mapping[str, Any]], budget: float) -> dict[str, Any]:
    """The per-book JSON document: upcoming events with their action, the risk level and the recommendation.

    ``rows`` are the book's ``gap_risk_actions`` rows (the no-event marker is skipped); ``date`` is the event's
    New York date (ISO), ``days_until`` the sessions to its reaction session; the risk level is that of the
    largest estimated loss before action against the budget (events with no move history have no estimate).
    """
    real = [r for r in rows if r["action"] != NO_ACTION]
    upcoming = [
        {
            "symbol": None if r["symbol"] == BOOK_WIDE else r["symbol"],
            "event_type": r["event_type"],
            "date": r["event_date"].isoformat() if hasattr(r["event_date"], "isoformat") else r["event_date"],
            "days_until": int(r["trading_days_until"]),
            "action": r["action"],
        }
        for r in sorted(real, key=lambda r: (int(r["trading_days_until"]), str(r["event_id"]), str(r["symbol"])))
    ]
    known = [float(r["loss_before"]) for r in real if r.get("loss_before") is not None]
    worst = max((x for x in known if math.isfinite(x)), default=0.0)  # events without move history: not estimated
    recommended = max((r["action"] for r in real), key=ACTION_SEVERITY.index, default=NO_ACTION)
    return {"upcoming_events": upcoming, "risk_level": risk_level(worst, budget), "recommended_action": recommended}


# --------------------------------------------------------------------------------------------------
# limits, pre-trade
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitOverride:
    """A tightened cap in force until ``expires_at``: ``symbol`` None applies to the book (or every underlying)."""

    limit_name: str
    cap: float
    symbol: str | None
    event_id: str
    expires_at: Any


def overrides_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[LimitOverride]:
    """``LimitOverride``s of ``gap_risk_actions`` rows (their ``limit_overrides`` JSON)."""
    out = []
    for r in rows:
        if not r.get("limit_overrides"):
            continue
        symbol = None if r["symbol"] == BOOK_WIDE else str(r["symbol"])
        for name, cap in json.loads(r["limit_overrides"]).items():
            out.append(LimitOverride(str(name), float(cap), symbol, str(r["event_id"]), r["expires_at"]))
    return out


def apply_limit_overrides(
    results: Sequence[LimitResult],
    overrides: Sequence[LimitOverride],
    symbols: Sequence[str],
    net_delta_by_symbol: ArrayLike,
    gamma_by_symbol: ArrayLike,
) -> tuple[list[LimitResult], dict[str, str]]:
    """Limit rows with the tightened caps in force, and a note per limit changed (also appended to ``note``).

    A book-level limit gets the lowest cap in force. A per-underlying limit is evaluated per underlying
    against its own cap (the override's for its name, the file's otherwise); the row reports the
    underlying with the highest utilization, and drivers are the underlyings above their warning level.
    The warning level keeps the limit's warning fraction. NOT_AVAILABLE rows are left as they are.
    """
    by_limit: dict[str, list[LimitOverride]] = {}
    for o in overrides:
        by_limit.setdefault(o.limit_name, []).append(o)
    values = {
        "max_abs_net_delta_shares": np.abs(np.asarray(net_delta_by_symbol, dtype=np.float64)),
        "max_abs_gamma_shares": np.abs(np.asarray(gamma_by_symbol, dtype=np.float64)),
    }
    names = np.asarray(list(symbols), dtype=object)
    out: list[LimitResult] = []
    notes: dict[str, str] = {}
    for r in results:
        found = by_limit.get(r.limit_name)
        if not found or not math.isfinite(r.value) or not r.threshold:
            out.append(r)
            continue
        fraction = r.warn_threshold / r.threshold
        text = ", ".join(f"{o.symbol or 'book'} cap {o.cap:,.6g} until {o.expires_at} ({o.event_id})" for o in found)
        notes[r.limit_name] = f"event caps in force: {text}"
        r = replace(r, note="; ".join(x for x in (r.note, notes[r.limit_name]) if x))
        if r.limit_name in PER_UNDERLYING_LIMITS and names.size:
            cap = np.full(names.size, r.threshold)
            for o in found:
                mask = np.ones(names.size, dtype=bool) if o.symbol is None else names == o.symbol
                cap = np.where(mask, np.minimum(cap, o.cap), cap)
            v = values[r.limit_name]
            util = v / cap
            i = int(np.argmax(util))
            above = np.argsort(-util, kind="stable")
            above = above[v[above] > fraction * cap[above]][:10]
            status = BREACH if np.any(v > cap) else WARN if np.any(v > fraction * cap) else OK
            out.append(
                replace(
                    r,
                    value=float(v[i]),
                    threshold=float(cap[i]),
                    warn_threshold=float(fraction * cap[i]),
                    utilization=float(util[i]),
                    status=status,
                    drivers=tuple(str(s) for s in names[above]) or (str(names[i]),),
                )
            )
        else:
            cap_b = min([r.threshold, *(o.cap for o in found)])
            warn = fraction * cap_b
            out.append(
                replace(
                    r,
                    threshold=cap_b,
                    warn_threshold=warn,
                    utilization=utilization(r.value, cap_b, r.kind),
                    status=limit_status(r.value, cap_b, warn, r.kind),
                )
            )
    return out, notes


@dataclass(frozen=True)
class Blackout:
    """New risk blocked in ``symbol`` (``*`` = the whole book) until ``expires_at``."""

    symbol: str
    reason: str
    expires_at: Any


def blackouts_from_rows(rows: Sequence[Mapping[str, Any]]) -> list[Blackout]:
    """Blackouts of ``gap_risk_actions`` rows whose actions include ``block_new``."""
    out = []
    for r in rows:
        if BLOCK_NEW not in json.loads(r.get("actions") or "[]"):
            continue
        where = "the whole book" if r["symbol"] == BOOK_WIDE else str(r["symbol"])
        reason = (
            f"{r['event_type']} {r['event_id']} at {r['event_time']} (new risk in {where} blocked until "
            f"{r['expires_at']})"
        )
        out.append(Blackout(str(r["symbol"]), reason, r["expires_at"]))
    return out


def blackout_for_order(blackouts: Sequence[Blackout], symbol: str, now: Any) -> str | None:
    """Why an order adding risk in ``symbol`` is blocked at ``now`` (None when no blackout is in force)."""
    reasons = [b.reason for b in blackouts if (b.symbol in (symbol, BOOK_WIDE)) and now < b.expires_at]
    return "; ".join(reasons) if reasons else None


# --------------------------------------------------------------------------------------------------
# UVaR with gap scenarios
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapVar:
    """VaR/ES with the gap scenarios of ``event_ids`` and the gap component (with minus without)."""

    horizon_days: int
    confidence: float
    var: float
    expected_shortfall: float
    gap_var: float
    gap_expected_shortfall: float
    n_scenarios: int
    event_ids: tuple[str, ...]
    component_var: FloatArray = field(repr=False)
    #: ES contributions per underlying (``var.tail_component_es``), summing to ``expected_shortfall``
    component_es: FloatArray | None = field(default=None, repr=False)


def gap_picks(n_base: int, gap_rows: Sequence[int], max_scenarios: int, seed: int) -> tuple[IntArray, IntArray]:
    """The pairs of ``combined_gap_scenarios``: each combined scenario's base row ``i`` and its row of every event's
    gap matrix (``(n, n_events)``; the combined gap row is their C-order index), all ``n_base * prod(gap_rows)``
    pairs or the same seeded sample of ``max_scenarios`` of them."""
    n_gap = math.prod(int(m) for m in gap_rows)
    total = n_base * n_gap
    pick = (
        np.arange(total)
        if total <= max_scenarios
        else np.sort(np.random.default_rng(seed).choice(total, size=max_scenarios, replace=False))
    )
    i, j = np.divmod(pick, n_gap)
    per_event = np.unravel_index(j, tuple(int(m) for m in gap_rows)) if gap_rows else ()
    return i, np.stack(per_event, axis=1) if gap_rows else np.zeros((i.size, 0), dtype=np.intp)


def _gap_rows(gap_spot: Sequence[FloatArray], rows: IntArray, columns: IntArray) -> FloatArray:
    """The combined gap of the event rows ``rows`` (``(n, n_events)``) in the symbol columns ``columns``:
    ``combined_gap_scenarios``' product of the events' gaps in their order, the same operations element by element
    (so the same numbers), without the whole product. Each event's ``1 + gap`` is taken once on its own small table
    (its rows, the group's columns) and its rows gathered from it; the product is made in place. The rows are
    gathered with ``mode="wrap"``: the event rows are valid rows of their tables (``gap_picks``), so the same rows as
    the default mode, whose ``out`` NumPy fills through a buffer of its own (a second pass, three times the gather);
    the first event's product with the zeros before it (``1 * x``, exact) is not made."""
    every = columns.size == (gap_spot[0].shape[1] if gap_spot else 0) and np.array_equal(
        columns, np.arange(columns.size)
    )
    gaps = np.zeros((rows.shape[0], columns.size))
    mine = np.empty_like(gaps)
    for e, g in enumerate(gap_spot):
        one_plus = 1.0 + (g if every else g[:, columns])
        np.take(one_plus, rows[:, e], axis=0, out=mine, mode="wrap")
        if e:
            np.add(gaps, 1.0, out=gaps)  # (1 + gaps) * (1 + mine) - 1
            np.multiply(gaps, mine, out=gaps)
        else:  # the first event: (1 + 0) * (1 + mine) is (1 + mine) exactly
            gaps, mine = mine, gaps
        np.subtract(gaps, 1.0, out=gaps)
    return gaps


def combined_gap_scenarios(
    base: ScenarioSet, gap_spot: Sequence[FloatArray], max_scenarios: int, seed: int
) -> ScenarioSet:
    """Every base scenario with every combination of past gaps (one gap matrix per event, ``(m_e, n_symbols)``),
    or a seeded sample without replacement of ``max_scenarios`` of those pairs."""
    from risk_pipeline.quant.scenario_engine import ScenarioSet

    gaps = np.zeros((1, base.n_symbols))
    for g in gap_spot:
        g = np.asarray(g, dtype=np.float64)
        gaps = ((1.0 + gaps[:, None, :]) * (1.0 + g[None, :, :]) - 1.0).reshape(-1, base.n_symbols)
    n_base, n_gap = base.n_scenarios, gaps.shape[0]
    total = n_base * n_gap
    pick = (
        np.arange(total)
        if total <= max_scenarios
        else np.sort(np.random.default_rng(seed).choice(total, size=max_scenarios, replace=False))
    )
    i, j = np.divmod(pick, n_gap)
    spot = (1.0 + base.spot_shock_rel[i]) * (1.0 + gaps[j]) - 1.0
    scale = None if base.vol_scale is None else base.vol_scale[i]
    rate = None if base.rate_shift_abs is None else base.rate_shift_abs[i]
    div = None if base.dividend_shift_abs is None else base.dividend_shift_abs[i]
    return ScenarioSet(spot, vol_scale=scale, rate_shift_abs=rate, dividend_shift_abs=div)


def _restricted(dynamic: Any, rows: IntArray, symbol_of: IntArray) -> Any:
    """``dynamic`` for the sub-book of positions ``rows`` on some of the symbols (``symbol_of[s]``: symbol ``s``'s
    column in the sub-book, -1 if not in it): the same shift of each of its positions in every scenario. None for a
    dynamic not known to read only each position and its own underlying's column of a scenario."""
    from risk_pipeline.quant.sabr_dynamics import SabrBackboneSlide
    from risk_pipeline.quant.smile_dynamics import EarningsVolCrush, ExpiryScaledVolMoves, StickyMoneyness

    if type(dynamic) is ExpiryScaledVolMoves:
        return dynamic
    if type(dynamic) is EarningsVolCrush:  # its options: those on its symbol (none if the sub-book lacks it)
        return replace(dynamic, symbol=int(symbol_of[dynamic.symbol]))
    if type(dynamic) in (StickyMoneyness, SabrBackboneSlide):  # per position through its slice
        of = np.asarray(dynamic.slices.slice_of_position)[rows]
        return replace(dynamic, slices=replace(dynamic.slices, slice_of_position=of))
    return None


def sub_portfolio(portfolio: Portfolio, rows: IntArray, symbols: IntArray) -> Portfolio:
    """The positions ``rows`` of ``portfolio`` (in order) on its symbols ``symbols`` (increasing, holding every one of
    those positions' underlyings), with the option values cached on ``portfolio``."""
    from risk_pipeline.quant.portfolio import POSITION_FIELDS, Portfolio
    from risk_pipeline.quant.scenario_engine import share_values

    column = np.full(portfolio.n_symbols, -1, dtype=np.intp)
    column[symbols] = np.arange(symbols.size)
    pid = portfolio.position_id or ()
    sub = Portfolio(
        symbols=tuple(portfolio.symbols[s] for s in symbols),
        spot=np.asarray(portfolio.spot)[symbols],
        symbol_index=column[portfolio.symbol_index[rows]],
        quantity=portfolio.quantity[rows],
        position_id=tuple(pid[k] for k in rows),
        **{f: np.asarray(getattr(portfolio, f))[rows] for f in POSITION_FIELDS},
    )
    share_values(portfolio, rows, sub)
    return sub


def _rows_cols(a: Any, rows: IntArray, columns: IntArray) -> Any:
    """Rows ``rows`` of a scenario array, and its symbol columns ``columns`` when it has them (all of them in order:
    the rows alone, without a second copy); None stays None."""
    if a is None or a.ndim == 1:
        return None if a is None else a[rows]
    if columns.size == a.shape[1] and np.array_equal(columns, np.arange(columns.size)):
        return a[rows]
    return a[rows[:, None], columns[None, :]]


def base_row_shifts(dynamics: Sequence[Any], portfolio: Portfolio, sc: ScenarioSet, base_rows: IntArray) -> Any:
    """``smile_dynamics.summed_shift_rows(dynamics, portfolio, sc)``, where row ``k`` of ``sc`` is a combined scenario
    of base row ``base_rows[k]`` (its vol scale that row's). When no dynamic reads the spot (the expiry-scaled ATM
    move reads the vol scale, the earnings crush nothing of the scenario), each row's shifts are those of its base
    row: they are made once per distinct base row and each chunk's rows gathered from them, so the same numbers
    (every dynamic's shift of a row depends on that row only) without computing them again for every gap."""
    from risk_pipeline.quant.smile_dynamics import summed_shift_rows

    rows = np.asarray(base_rows, dtype=np.intp)
    if rows.size != sc.n_scenarios:
        return summed_shift_rows(dynamics, portfolio, sc)
    table = _base_row_table(dynamics, portfolio, lambda idx: _take_rows(sc, idx), rows)
    return summed_shift_rows(dynamics, portfolio, sc) if table is None else table


def _base_row_table(
    dynamics: Sequence[Any], portfolio: Portfolio, rows_of: Callable[[IntArray], ScenarioSet], base_rows: IntArray
) -> Any:
    """``base_row_shifts``' table of shifts per distinct base row, as ``RowVolShifts`` of the set whose row ``k`` is a
    combined scenario of base row ``base_rows[k]`` (``rows_of(idx)``: that set's rows ``idx``, without vol shifts);
    None when a dynamic reads the spot or the base rows repeat too little."""
    from risk_pipeline.quant.scenario_engine import RowVolShifts
    from risk_pipeline.quant.smile_dynamics import EarningsVolCrush, ExpiryScaledVolMoves, summed_shifts

    if not all(type(d) in (ExpiryScaledVolMoves, EarningsVolCrush) for d in dynamics):
        return None
    _, first, row_of = np.unique(base_rows, return_index=True, return_inverse=True)
    if 2 * first.size > base_rows.size:  # few repeats: not worth the table
        return None
    table = summed_shifts(dynamics, portfolio, rows_of(first))
    rows = _GatheredRows(table, row_of.reshape(-1))
    return RowVolShifts(rows, portfolio.quantity.size, make_columns=rows.columns)


@dataclass(frozen=True, eq=False)
class _GatheredRows:
    """Rows ``start:stop`` of a set as rows of ``table`` (``row_of``): ``RowVolShifts.make`` of ``base_row_shifts``;
    ``columns`` its ``make_columns``, gathered from the table's columns taken once (the last columns asked for)."""

    table: FloatArray
    row_of: IntArray
    _taken: dict[str, Any] = field(default_factory=dict, repr=False)

    def __call__(self, start: int, stop: int) -> FloatArray:
        return self.table[self.row_of[start:stop]]

    def columns(self, start: int, stop: int, columns: IntArray) -> FloatArray:
        """Columns ``columns`` of rows ``start:stop`` (the values of ``self(start, stop)[:, columns]``)."""
        key = np.asarray(columns, dtype=np.intp).tobytes()
        if self._taken.get("key") != key:
            if not np.all(np.isfinite(self.table)):  # every row of the table is some row's: what make would give
                raise ValueError("RowVolShifts must make finite (rows, n_positions) shifts")
            self._taken.update(key=key, table=np.ascontiguousarray(self.table[:, columns]))
        return np.take(self._taken["table"], self.row_of[start:stop], axis=0)


def _take_rows(sc: ScenarioSet, idx: IntArray) -> ScenarioSet:
    """The rows ``idx`` of a scenario set of arrays (its vol shifts left out)."""
    from risk_pipeline.quant.scenario_engine import ScenarioSet

    def cut(a: Any) -> Any:
        return a[idx] if isinstance(a, np.ndarray) else a

    return ScenarioSet(
        sc.spot_shock_rel[idx],
        vol_scale=cut(sc.vol_scale),
        vol_skew=cut(sc.vol_skew),
        rate_shift_abs=cut(sc.rate_shift_abs),
        dividend_shift_abs=cut(sc.dividend_shift_abs),
    )


#: Pairs x names of one block copied from a group's P&L by underlying into the combined set's (8 MB).
COPY_BLOCK_CELLS = 1_000_000


def gap_pnl_by_underlying(
    portfolio: Portfolio,
    base: ScenarioSet,
    gap_spot: Sequence[FloatArray],
    *,
    calendar_days: float,
    american: AmericanMethod = "eep_grid",
    max_scenarios: int = 50_000,
    seed: int = 0,
    dynamics: Sequence[Any] = (),
) -> tuple[FloatArray, FloatArray] | None:
    """The P&L and P&L by underlying of ``combined_gap_scenarios(base, gap_spot, max_scenarios, seed)`` (with the
    ``dynamics``' per-position vol shifts), each underlying revalued only under its distinct scenarios.

    An underlying's column of a combined pair ``(i, rows)`` is a function of the base row ``i`` and of the rows of
    the events that move it (an event's gap is 0 in the columns of the names it does not move), and so is every
    shift of its positions (each dynamic reads a position and its own underlying's column). The underlyings moved
    by the same events form a group; its positions are revalued, on its own columns, once per distinct ``(i, rows
    of those events)`` and copied to every pair: the underlyings no event moves once per base row, an earnings name
    once per (base row, past move), instead of once per pair and position. The early-exercise grids are built once
    for the whole book over the ranges the groups reach (``scenario_engine.prepare_parts``: those of the whole set),
    and each underlying's P&L sums the same positions in the same order, so the P&L by underlying is that of the
    whole set's revaluation, bit for bit; the book P&L adds the groups' sums (equal to rounding). None when a
    dynamic is not known to be per position (``_restricted``) or the engine would not use the grid: revalue the
    whole set.
    """
    from risk_pipeline.quant.scenario_engine import prepare_parts

    if american != "eep_grid":
        return None
    gap_spot = [np.asarray(g, dtype=np.float64) for g in gap_spot]
    n_sym = base.n_symbols
    i, rows = gap_picks(base.n_scenarios, [g.shape[0] for g in gap_spot], max_scenarios, seed)
    n = i.size
    moved_by = np.array([np.any(g != 0.0, axis=0) for g in gap_spot], dtype=bool).reshape(len(gap_spot), n_sym)
    groups: dict[bytes, list[int]] = {}
    for s in range(n_sym):
        groups.setdefault(moved_by[:, s].tobytes(), []).append(s)
    used = np.unique(i)  # the combined set shifts a rate or a yield iff one of its base rows does
    carry = any(a is not None and bool(np.any(a[used] != 0.0)) for a in (base.rate_shift_abs, base.dividend_shift_abs))
    parts, copies = [], []
    for key, names in groups.items():
        events = np.flatnonzero(np.frombuffer(key, dtype=bool))
        cols = np.asarray(names, dtype=np.intp)
        positions = np.flatnonzero(np.isin(portfolio.symbol_index, cols))
        if positions.size == 0:
            continue
        column = np.full(n_sym, -1, dtype=np.intp)
        column[cols] = np.arange(cols.size)
        mine = [_restricted(d, positions, column) for d in dynamics]
        if any(d is None for d in mine):
            return None
        # the distinct (base row, rows of this group's events): one scenario each, the first pair that has it
        _, first, inverse = np.unique(
            np.column_stack([i, rows[:, events]]), axis=0, return_index=True, return_inverse=True
        )
        sub = sub_portfolio(portfolio, positions, cols)
        blocks = _GroupBlocks(base, gap_spot, i[first], rows[first], cols)
        if mine:
            shifts = _base_row_table(mine, sub, blocks.rows, blocks.base_rows)
            if shifts is None:  # a dynamic reads the spot: the group's whole set, with its shifts made from it
                whole = blocks.rows(np.arange(blocks.n))
                shifts = base_row_shifts(mine, sub, whole, blocks.base_rows)
                blocks = replace(blocks, whole=whole)
            blocks = replace(blocks, vol_shift_abs=shifts)
        parts.append((positions, sub, blocks))
        copies.append((cols, inverse.reshape(-1)))
    books = prepare_parts(portfolio, calendar_days, parts, n, carry)
    if len(parts) == 1 and copies[0][0].size == n_sym and np.array_equal(copies[0][1], np.arange(n)):
        # one group of every name with a scenario per pair (market-wide events only): the whole set itself
        return _evaluate_blocks(books[0], parts[0][2])
    pnl = np.zeros(n)
    by_symbol = np.zeros((n, n_sym))
    block = max(1, COPY_BLOCK_CELLS // n_sym)
    for k, book in enumerate(books):
        group_pnl, group_by = _evaluate_blocks(book, parts[k][2])
        cols, inverse = copies[k]
        pnl += group_pnl[inverse]
        for a in range(0, n, block):  # copied a block of pairs at a time (no second pairs x names array)
            by_symbol[a : a + block, cols] = group_by[inverse[a : a + block]]
        del group_pnl, group_by
    return pnl, by_symbol


#: Distinct scenarios x names of one block of a group's combined set made at a time (``_GroupBlocks``; 32 MB an array).
SCENARIO_BLOCK_CELLS = 4_000_000


@dataclass(frozen=True, eq=False)
class _GroupBlocks(Sequence["ScenarioSet"]):
    """A group's distinct combined scenarios (``gap_pnl_by_underlying``) as blocks of rows made when read: block ``k``
    is rows ``k * size ..`` of the group's whole set (its spot moves, vol scales, rate and yield shifts on the group's
    columns; the same operations element by element, so the same numbers), with ``row_offset`` its first row, so that
    the group's per-position vol shifts (``RowVolShifts`` of the whole set) give each block's rows. Only one block's
    ``rows x names`` arrays are held at a time instead of the whole set's (a 50,000-scenario gap set of 3,000 names:
    1.2 GB an array). ``whole``: the set made at once (vol shifts that read it), served as one block."""

    base: ScenarioSet
    gap_spot: Sequence[FloatArray]
    #: each distinct scenario's base row and its row of every event (``(n, n_events)``), the group's symbol columns
    base_rows: IntArray
    event_rows: IntArray
    cols: IntArray
    vol_shift_abs: Any = None
    whole: ScenarioSet | None = None

    @property
    def n(self) -> int:
        return int(self.base_rows.size)

    @property
    def size(self) -> int:
        """Rows a block (a multiple of the engine's smallest chunk)."""
        from risk_pipeline.quant.scenario_engine import MIN_CHUNK

        rows = max(1, SCENARIO_BLOCK_CELLS // max(1, self.cols.size))
        return -(-rows // MIN_CHUNK) * MIN_CHUNK

    def rows(self, idx: IntArray) -> ScenarioSet:
        """Rows ``idx`` of the group's whole set (without vol shifts; ``row_offset`` 0). The combined spot moves are
        checked (``ScenarioSet``'s checks); the vol scales, rate and yield shifts, rows of the checked base set, are
        not checked again (``scenario_engine._checked``)."""
        from risk_pipeline.quant.scenario_engine import ScenarioSet, _checked

        b, cols = self.base_rows[idx], self.cols
        # (1 + base move) * (1 + gap) - 1, in place in the gathered rows (the same operations element by element)
        spot = _rows_cols(self.base.spot_shock_rel, b, cols)
        gap = _gap_rows(self.gap_spot, self.event_rows[idx], cols)
        np.add(spot, 1.0, out=spot)
        np.add(gap, 1.0, out=gap)
        np.multiply(spot, gap, out=spot)
        np.subtract(spot, 1.0, out=spot)
        del gap
        return _checked(
            ScenarioSet(spot),
            vol_scale=_rows_cols(self.base.vol_scale, b, cols),
            rate_shift_abs=_rows_cols(self.base.rate_shift_abs, b, cols),
            dividend_shift_abs=_rows_cols(self.base.dividend_shift_abs, b, cols),
        )

    def __len__(self) -> int:
        return 1 if self.whole is not None else -(-self.n // self.size)

    def __getitem__(self, k: Any) -> Any:
        """Block ``k`` (its row offset and the group's vol shifts set without ``ScenarioSet``'s checks again: the
        block's arrays are checked, and ``RowVolShifts`` per position are what the checks would let through)."""
        from risk_pipeline.quant.scenario_engine import RowVolShifts, _checked

        if not isinstance(k, int):
            raise TypeError("_GroupBlocks are read one block at a time")
        if not 0 <= k < len(self):
            raise IndexError(k)
        if self.whole is not None:
            sc = self.whole
            start = 0
        else:
            start = k * self.size
            sc = self.rows(np.arange(start, min(start + self.size, self.n)))
        if self.vol_shift_abs is None:
            return sc if start == 0 else _checked(sc, row_offset=start)
        made = _checked if isinstance(self.vol_shift_abs, RowVolShifts) else replace
        return made(sc, vol_shift_abs=self.vol_shift_abs, vol_shift_per_position=True, row_offset=start)


def _evaluate_blocks(book: Any, blocks: _GroupBlocks) -> tuple[FloatArray, FloatArray]:
    """The P&L and P&L by underlying of every scenario of ``blocks``, block by block (each scenario's P&L does not
    depend on the others: the numbers of one ``evaluate_prepared`` of the whole set)."""
    from risk_pipeline.quant.scenario_engine import evaluate_prepared

    pnl = np.empty(blocks.n)
    by_symbol = np.empty((blocks.n, book.n_symbols))
    start = 0
    for k in range(len(blocks)):
        sc = blocks[k]
        res = evaluate_prepared(book, sc, per_symbol=True)
        assert res.by_symbol is not None
        stop = start + sc.n_scenarios
        pnl[start:stop] = res.pnl
        by_symbol[start:stop] = res.by_symbol
        start = stop
        del sc, res
    return pnl, by_symbol


def gap_var(
    portfolio: Portfolio,
    base: ScenarioSet,
    base_pnl: ArrayLike,
    events: Sequence[tuple[str, FloatArray]],
    *,
    horizon_days: int,
    confidences: Sequence[float],
    calendar_days: float,
    american: AmericanMethod = "eep_grid",
    max_scenarios: int = 50_000,
    seed: int = 0,
    dynamics: Sequence[Any] = (),
    by_underlying: bool = True,
) -> list[GapVar]:
    """VaR/ES of ``portfolio`` over ``horizon_days`` including the gap scenarios of ``events``.

    ``dynamics`` (``smile_dynamics.SmileDynamics``, as historical VaR used them) add their per-position vol
    shifts for each combined scenario's own spot move.

    ``base`` is the horizon's historical scenario set and ``base_pnl`` its P&L (the VaR without gaps);
    each event is ``(event_id, gap_spot)`` with ``gap_spot`` its past moves per underlying
    (``(m, n_symbols)``, e.g. ``quant.stress.event_scenarios(...).spot_shock_rel``). ``calendar_days`` of
    time decay. Components (per underlying) sum to the VaR with gaps.

    ``by_underlying`` (default): each group of underlyings is revalued under its distinct scenarios only
    (``gap_pnl_by_underlying``: the same P&L by underlying, the book P&L equal to rounding); False revalues the
    whole combined set (also the fallback for dynamics not known to be per position).
    """
    from risk_pipeline.quant.scenario_engine import evaluate
    from risk_pipeline.quant.var import (
        _kernel_component,
        _kernel_spread,
        _tail_component_of_ordered,
        _var_es_of_sorted,
    )

    gap_spot = [g for _, g in events]
    grouped = None
    if by_underlying:
        grouped = gap_pnl_by_underlying(
            portfolio,
            base,
            gap_spot,
            calendar_days=calendar_days,
            american=american,
            max_scenarios=max_scenarios,
            seed=seed,
            dynamics=dynamics,
        )
    if grouped is not None:
        pnl, by_symbol = grouped
    else:
        sc = combined_gap_scenarios(base, gap_spot, max_scenarios, seed)
        if dynamics:  # made chunk by chunk inside the engine (the same numbers; no scenarios x positions array)
            from risk_pipeline.quant.smile_dynamics import summed_shift_rows

            sc = replace(sc, vol_shift_abs=summed_shift_rows(dynamics, portfolio, sc), vol_shift_per_position=True)
        res = evaluate(portfolio, sc, calendar_days, american=american, per_symbol=True)
        assert res.by_symbol is not None
        pnl, by_symbol = res.pnl, res.by_symbol
    # the sorts, row sums, spread and tail order made once for every confidence (as var._simulation_results): each
    # figure that of empirical_var_es, kernel_component_var and tail_component_es, bit for bit
    pnl_sorted = np.sort(np.asarray(pnl, dtype=np.float64).reshape(-1))
    base_sorted = np.sort(np.asarray(base_pnl, dtype=np.float64).reshape(-1))
    cols = np.asarray(by_symbol, dtype=np.float64)
    total = cols.sum(axis=1)
    spread = _kernel_spread(total)
    ordered = cols[np.argsort(total, kind="stable")]
    out = []
    for c in confidences:
        var, es = _var_es_of_sorted(pnl_sorted, c)
        var0, es0 = _var_es_of_sorted(base_sorted, c)
        out.append(
            GapVar(
                horizon_days=int(horizon_days),
                confidence=float(c),
                var=var,
                expected_shortfall=es,
                gap_var=var - var0,
                gap_expected_shortfall=es - es0,
                n_scenarios=int(pnl.size),
                event_ids=tuple(e for e, _ in events),
                component_var=_kernel_component(cols, total, spread, var),
                component_es=_tail_component_of_ordered(ordered, c),
            )
        )
    return out
