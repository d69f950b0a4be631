"""Required position reductions: the cheapest cuts that bring breached limits back under warning.

Decision variables are the units ``r_i`` cut from each held position ``i`` (contracts or shares),
``0 <= r_i <= |q_i|``: a cut only moves a position toward zero and never flips its sign. With
``s_i = sign(q_i)`` every limit in ``limits.LINEAR_LIMITS`` is linear in ``r``:

* net exposures (per underlying for delta and gamma shares, per book for dollar delta and vega):
  ``|N - sum_i k_i s_i r_i| <= B`` as two rows, ``k_i`` the exposure of one unit;
* theta loss: ``L + sum_i m_i theta_i s_i r_i <= B``;
* concentration: with ``g_i = |m_i delta_i spot_i|`` (gross of one unit) and an auxiliary variable
  ``G = G_0 - sum_i g_i r_i`` (post-trade gross), a position, underlying or sector ``c`` must have
  ``sum_{i in c} g_i (|q_i| - r_i) <= B G``, linear in ``(r, G)``. When the concentration floor
  ``F = concentration_min_gross_pct_nav * nav`` exceeds ``G_0`` the denominator is the constant
  ``F``; otherwise ``B G`` is used, which is conservative if the cut takes gross below ``F``.

``B`` is the warning level for every limit reported as BREACH in ``limit_results`` and
``max(warning level, current value)`` for every other linear limit, so no limit is made worse than
it is (or than its warning level). The LP minimizes turnover ``sum_i r_i |unit_price_i| m_i`` or cost
``sum_i r_i half_spread_i m_i`` (``costs_per_unit`` is the half-spread per unit of underlying, in
price units) with HiGHS (``scipy.optimize.linprog``). Cuts are rounded UP to whole units (capped at
``|q_i|``) and the plan is verified by recomputing every limit. Rounding up is not always safe (a
larger cut of one position raises the others' shares, or moves a net exposure past zero), so when
verification fails the same problem is solved with whole cuts by HiGHS branch and bound: first
with only the LP's fractional cuts free (each within one unit of its LP value), then over every
cut (time-limited); then whole positions are closed (those the LP cuts, then all: a flat book
meets every linear limit). ``method`` says which step produced the verified plan.

Limits without a linear proxy:

* ``max_positions``: close the cheapest whole underlyings until the count is at its warning level;
* ``max_pairwise_correlation``: close underlyings (most offending pairs first, then cheapest) until
  no held pair is above the warning level;
* ``max_var_99_1d`` / ``max_es_975_1d``: a pro-rata cut of every position by ``f = 1 - warn /
  value`` (exact for a VaR that scales with the book, as delta-normal VaR does; otherwise an
  estimate), as lower bounds of the LP. The after value is reported as an estimate and the
  post-plan evaluation leaves VaR/ES NOT_AVAILABLE until the risk layer recomputes them;
* ``max_daily_loss_pct_nav``, ``max_drawdown_pct`` (realized losses) and ``min_positions`` (needs
  more names) cannot be cured by cutting positions and are listed in ``notes``.

A ``TradingStateRecord`` adds its capital-preservation actions: a gross cut ``G <= (1 - cut) *
reference_gross`` and, at the maximum level, closing every position whose strategy is not in
``config.hedge_strategies``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse
from scipy.optimize import OptimizeWarning, linprog

from risk_pipeline.quant._numba import BoolArray, FloatArray
from risk_pipeline.quant.gap_risk import PER_UNDERLYING_LIMITS, LimitOverride, apply_limit_overrides
from risk_pipeline.quant.limits import (
    BREACH,
    LIMIT_NAMES,
    LINEAR_LIMITS,
    BookExposure,
    BookMetrics,
    LimitResult,
    LimitsConfig,
    book_metrics,
    evaluate_limits,
    results_by_name,
)
from risk_pipeline.quant.trading_state import TradingStateRecord

#: LP cuts within this many units of an integer count as that integer when rounding up.
ROUND_TOLERANCE = 1e-6
#: Relative margin taken off the breached bounds in the MILP fallback (strictly inside the level).
MILP_MARGIN = 1e-7
#: HiGHS primal and MIP feasibility tolerance of the MILP fallback (its defaults are 1e-7 and 1e-6).
MILP_FEASIBILITY_TOLERANCE = 1e-9
#: Time limits of the MILP fallbacks: near the LP solution, then over every cut.
MILP_NEAR_TIME_LIMIT_SECONDS = 5.0
MILP_TIME_LIMIT_SECONDS = 10.0

METHOD_NONE = "none"
METHOD_LP = "lp"
METHOD_MILP = "milp"
METHOD_CLOSE = "close"
METHOD_FAILED = "failed"


@dataclass(frozen=True)
class LimitChange:
    """A targeted limit before and after the plan (``estimated`` for the pro-rata VaR/ES value)."""

    limit_name: str
    before: float
    after: float
    threshold: float
    warn_threshold: float
    status_before: str
    status_after: str
    estimated: bool = False


@dataclass(frozen=True)
class ReductionLine:
    """One ``required_reductions`` row: cut ``|reduce_quantity|`` units toward zero.

    ``reduce_quantity`` has the sign of the position: positive sells from a long, negative buys back
    a short. ``limits_cleared`` are the targeted limits (or ``preservation:<level>`` actions) this
    cut works toward.
    """

    position_id: str
    quantity: float
    reduce_quantity: float
    reason: str
    limits_cleared: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class ReductionPlan:
    """The plan: rows for the positions to cut, per-position arrays, before/after limit values.

    ``reduce_quantity`` and ``new_quantity`` have one entry per book position. ``objective_value``
    is the turnover or cost of the rounded plan, ``lp_objective_value`` the continuous LP optimum
    (a lower bound). ``method`` is ``none`` (nothing to cut), ``lp`` (rounded LP), ``milp``
    (whole-unit branch and bound), ``close`` (closing whole positions) or ``failed`` (no plan: NaN
    inputs or a solver failure). ``feasible`` is True when the verified plan brings every targeted
    limit to or under its warning level without worsening any other. ``after`` is the full
    evaluation of the book after the plan.
    """

    lines: tuple[ReductionLine, ...]
    reduce_quantity: FloatArray
    new_quantity: FloatArray
    method: str
    objective: str
    objective_value: float
    lp_objective_value: float
    feasible: bool
    changes: tuple[LimitChange, ...]
    after: tuple[LimitResult, ...]
    notes: tuple[str, ...]


@dataclass
class _Problem:
    """Sparse LP over ``x = (r_0 .. r_{h-1}, G / G_0)``: ``A_ub x <= b_ub``."""

    rows: list[sparse.csr_array]
    rhs: list[FloatArray]

    def add(self, block: sparse.csr_array, rhs: FloatArray) -> None:
        self.rows.append(block)
        self.rhs.append(np.asarray(rhs, dtype=np.float64))


def speculative_mask(exposure: BookExposure, config: LimitsConfig) -> BoolArray:
    """Positions whose strategy is not one of ``config.hedge_strategies``."""
    return ~np.isin(exposure.strategy, np.asarray(config.hedge_strategies, dtype=str))


def _group_rows(inv: NDArray[np.intp], n_groups: int, coef: FloatArray, h: int) -> sparse.csr_array:
    """Rows ``sum_{i in group} coef_i r_i`` over ``(r, G / G_0)``."""
    cols = np.arange(h)
    return sparse.csr_array((coef, (inv, cols)), shape=(n_groups, h + 1))


def _add_abs(p: _Problem, rows: sparse.csr_array, current: FloatArray, bound: FloatArray) -> None:
    """``|current - rows @ x| <= bound`` as two row blocks."""
    p.add(-rows, bound - current)
    p.add(rows, bound + current)


def _scaled(a: sparse.csr_array, b: FloatArray) -> tuple[sparse.csr_array, FloatArray]:
    """Each row divided by its largest absolute coefficient (1 for empty rows)."""
    scale = np.asarray(abs(a).max(axis=1).todense()).ravel()
    scale[scale == 0.0] = 1.0
    inv = sparse.diags_array(1.0 / scale)
    return sparse.csr_array(inv @ a), b / scale


def _evaluate(e: BookExposure, config: LimitsConfig, overrides: Sequence[LimitOverride]) -> list[LimitResult]:
    """The limits of a book, with the tightened caps of ``overrides`` in force (as ``limit_status`` applies them)."""
    results = evaluate_limits(e, config)
    if not overrides:
        return results
    m = book_metrics(e, config)
    out, _ = apply_limit_overrides(results, overrides, m.symbols.tolist(), m.net_delta_by_symbol, m.gamma_by_symbol)
    return out


def _warn_levels(
    name: str, config: LimitsConfig, overrides: Sequence[LimitOverride], symbols: FloatArray | NDArray[np.object_]
) -> FloatArray | float:
    """The warning level of a limit: per underlying (one entry per ``symbols``) for a per-underlying limit with an
    override for it, the lowest cap in force for a book-level one; the file's level when no override applies.
    The warning fraction of the file is kept, as ``apply_limit_overrides`` does."""
    warn = config.warn_threshold(name)
    cap = config.threshold(name)
    assert warn is not None and cap is not None
    found = [o for o in overrides if o.limit_name == name]
    if not found or not cap:
        return warn
    fraction = warn / cap
    if name in PER_UNDERLYING_LIMITS:
        names = np.asarray(symbols, dtype=object)
        caps = np.full(names.size, float(cap))
        for o in found:
            mask = np.ones(names.size, dtype=bool) if o.symbol is None else names == o.symbol
            caps = np.where(mask, np.minimum(caps, o.cap), caps)
        return fraction * caps
    return fraction * min([float(cap), *(o.cap for o in found)])


def _bounds(
    name: str,
    config: LimitsConfig,
    breached: set[str],
    current: FloatArray,
    margin: float,
    warn: FloatArray | float | None = None,
) -> FloatArray:
    """Per-group bound: the warning level (less ``margin``, relative) if ``name`` is breached, else
    ``max(warning, current)`` so that no group gets worse than it is or than its warning level. ``warn``
    (scalar or one per group) replaces the file's warning level, e.g. with event caps in force."""
    if warn is None:
        warn = config.warn_threshold(name)
    assert warn is not None
    level = np.broadcast_to(np.asarray(warn, dtype=np.float64), current.shape)
    if name in breached:
        return level * (1.0 - margin)
    return np.maximum(level, current)


def _close_for_count(m: BookMetrics, lb: FloatArray, aq: FloatArray, unit_cost: FloatArray, keep: int) -> BoolArray:
    """Close the cheapest whole underlyings until at most ``keep`` stay open; mask of closed ones."""
    open_pos = lb < aq
    alive = np.bincount(m.sym_inv, weights=open_pos, minlength=m.symbols.size) > 0
    cost = np.bincount(m.sym_inv, weights=(aq - lb) * unit_cost, minlength=m.symbols.size)
    excess = int(alive.sum()) - keep
    closed = np.zeros(m.symbols.size, dtype=bool)
    if excess > 0:
        candidates = np.flatnonzero(alive)
        closed[candidates[np.argsort(cost[candidates], kind="stable")[:excess]]] = True
    return closed


def _close_for_correlation(
    e: BookExposure, m: BookMetrics, lb: FloatArray, aq: FloatArray, unit_cost: FloatArray, warn: float
) -> tuple[BoolArray, str]:
    """Greedy cover of the held pairs above ``warn``: close underlyings until none is left."""
    closed = np.zeros(m.symbols.size, dtype=bool)
    if e.correlation is None or e.correlation_symbols is None:
        return closed, "max_pairwise_correlation: no correlation matrix, nothing closed"
    index = {s: i for i, s in enumerate(e.correlation_symbols)}
    if any(s not in index for s in m.symbols.tolist()):
        return closed, "max_pairwise_correlation: matrix lacks held underlyings, nothing closed"
    idx = np.array([index[s] for s in m.symbols.tolist()], dtype=np.intp)
    over = e.correlation[np.ix_(idx, idx)] > warn
    np.fill_diagonal(over, False)
    alive = np.bincount(m.sym_inv, weights=lb < aq, minlength=m.symbols.size) > 0
    cost = np.bincount(m.sym_inv, weights=(aq - lb) * unit_cost, minlength=m.symbols.size)
    while True:  # one pass per closed underlying (a handful)
        live = over & alive[:, None] & alive[None, :]
        degree = live.sum(axis=1)
        if degree.max(initial=0) == 0:
            return closed, ""
        worst = np.flatnonzero(degree == degree.max())
        pick = worst[np.argmin(cost[worst])]
        closed[pick] = True
        alive[pick] = False


def _contributors(
    e: BookExposure,
    m: BookMetrics,
    config: LimitsConfig,
    targets: Sequence[str],
    before: dict[str, LimitResult],
    overrides: Sequence[LimitOverride] = (),
) -> dict[str, BoolArray]:
    """Per targeted linear limit: which held positions' cuts lower its value."""
    held = m.held
    out: dict[str, BoolArray] = {}
    for name in targets:
        if config.warn_threshold(name) is None or name not in before:
            continue
        warn = _warn_levels(name, config, overrides, m.symbols)
        if name in ("max_abs_net_delta_shares", "max_abs_gamma_shares"):
            net = m.net_delta_by_symbol if name == "max_abs_net_delta_shares" else m.gamma_by_symbol
            per = e.delta_shares[held] if name == "max_abs_net_delta_shares" else e.gamma_shares[held]
            bad = np.abs(net) > warn
            out[name] = bad[m.sym_inv] & (np.sign(per) == np.sign(net)[m.sym_inv]) & (per != 0.0)
        elif name in ("max_abs_net_dollar_delta", "max_abs_vega_per_vol_point"):
            per = e.dollar_delta[held] if name == "max_abs_net_dollar_delta" else e.vega_per_vol_point[held]
            out[name] = (np.sign(per) == np.sign(per.sum())) & (per != 0.0)
        elif name == "max_theta_per_day_loss":
            out[name] = e.position_theta_per_day[held] < 0.0
        elif name in ("max_position_pct_gross", "max_underlying_pct_gross", "max_sector_pct_gross"):
            d = m.denominator
            if name == "max_position_pct_gross":
                out[name] = e.gross[held] > warn * d
            elif name == "max_underlying_pct_gross":
                out[name] = (m.gross_by_symbol > warn * d)[m.sym_inv]
            else:
                out[name] = (m.gross_by_sector > warn * d)[m.sec_inv]
    return out


def _failed_plan(e: BookExposure, objective: str, notes: list[str]) -> ReductionPlan:
    zeros = np.zeros(e.n)
    return ReductionPlan(
        lines=(),
        reduce_quantity=zeros,
        new_quantity=e.quantity.copy(),
        method=METHOD_FAILED,
        objective=objective,
        objective_value=0.0,
        lp_objective_value=math.nan,
        feasible=False,
        changes=(),
        after=(),
        notes=tuple(notes),
    )


def required_reductions(
    exposure: BookExposure,
    config: LimitsConfig,
    limit_results: Sequence[LimitResult],
    costs_per_unit: ArrayLike | None = None,
    objective: Literal["turnover", "cost"] = "turnover",
    state: TradingStateRecord | None = None,
    overrides: Sequence[LimitOverride] = (),
) -> ReductionPlan:
    """The cheapest whole-unit cuts that bring every BREACH in ``limit_results`` to its warning level.

    See the module docstring for the formulation. ``costs_per_unit`` (half-spread per unit of
    underlying, one entry per position) is required for ``objective='cost'``. ``state`` adds the
    capital-preservation actions of the trading state. ``overrides`` are the tightened caps in force
    (gap-risk actions): the plan targets, and is verified against, the tightened warning levels.
    """
    if objective not in ("turnover", "cost"):
        raise ValueError("objective must be 'turnover' or 'cost'")
    e = exposure
    status_in = {r.limit_name: r.status for r in limit_results}
    breached = {name for name, st in status_in.items() if st == BREACH}
    before_list = _evaluate(e, config, overrides)
    before = results_by_name(before_list)
    m = book_metrics(e, config)
    held = m.held
    h = held.size
    q = e.quantity[held]
    sign = np.sign(q)
    aq = np.abs(q)
    mult = e.multiplier[held]
    if objective == "cost":
        if costs_per_unit is None:
            raise ValueError("objective='cost' needs costs_per_unit")
        costs = np.asarray(costs_per_unit, dtype=np.float64).ravel()
        if costs.shape != (e.n,):
            raise ValueError(f"costs_per_unit must have {e.n} entries")
        unit_cost = np.abs(costs[held]) * mult
    else:
        unit_cost = np.abs(e.unit_price[held]) * mult
    needed = (e.multiplier, e.delta, e.spot, e.gamma, e.vega, e.theta_per_day)
    finite = np.isfinite(q) & np.isfinite(unit_cost)
    for arr in needed:
        finite &= np.isfinite(arr[held])
    if not finite.all():
        bad = e.position_id[held[~finite]][:5].tolist()
        return _failed_plan(e, objective, [f"missing (NaN) inputs at positions {', '.join(bad)}: no plan"])

    notes: list[str] = []
    lb = np.zeros(h)
    ub = aq.copy()
    cleared: dict[str, BoolArray] = {}
    targets_linear = [n for n in LIMIT_NAMES if n in breached and n in LINEAR_LIMITS and n in before]
    for name in sorted(breached - LINEAR_LIMITS):
        if name in ("min_positions", "max_daily_loss_pct_nav", "max_drawdown_pct"):
            notes.append(f"{name} is breached but cannot be cured by cutting positions")
    if state is not None and state.flatten_speculative:
        spec = speculative_mask(e, config)[held]
        lb[spec] = aq[spec]
        cleared[f"preservation:{state.preservation_level}"] = spec.copy()
        notes.append(f"preservation {state.preservation_level}: flatten positions not in {config.hedge_strategies}")
    count_warn = config.warn_threshold("max_positions")
    if "max_positions" in breached and count_warn is not None:
        closed = _close_for_count(m, lb, aq, unit_cost, math.floor(count_warn))
        mask = closed[m.sym_inv]
        lb[mask] = aq[mask]
        cleared["max_positions"] = mask
        notes.append(f"max_positions: closing {', '.join(m.symbols[closed].tolist())}")
    corr_warn = config.warn_threshold("max_pairwise_correlation")
    if "max_pairwise_correlation" in breached and corr_warn is not None:
        closed, note = _close_for_correlation(e, m, lb, aq, unit_cost, corr_warn)
        mask = closed[m.sym_inv]
        lb[mask] = aq[mask]
        cleared["max_pairwise_correlation"] = mask
        notes.append(note or f"max_pairwise_correlation: closing {', '.join(m.symbols[closed].tolist())}")
    pro_rata = 0.0
    estimated: dict[str, float] = {}
    for name, value in (("max_var_99_1d", e.var_99_1d), ("max_es_975_1d", e.es_975_1d)):
        warn = config.warn_threshold(name)
        if name in breached and value is not None and math.isfinite(value) and warn is not None:
            pro_rata = max(pro_rata, 1.0 - warn / value)
    if pro_rata > 0.0:
        lb = np.maximum(lb, pro_rata * aq)
        for name, value in (("max_var_99_1d", e.var_99_1d), ("max_es_975_1d", e.es_975_1d)):
            if name in breached and value is not None:
                estimated[name] = value * (1.0 - pro_rata)
                cleared[name] = aq > 0.0
        notes.append(
            f"VaR/ES have no linear proxy: every position cut pro rata by {100 * pro_rata:.2f}% "
            "(after values are estimates; the risk layer must recompute them)"
        )
    gross_cap = math.inf
    if state is not None and state.target_gross_cut > 0.0:
        reference = state.reference_gross if math.isfinite(state.reference_gross) else m.gross
        gross_cap = (1.0 - state.target_gross_cut) * reference
        if m.gross > gross_cap:
            cleared[f"preservation:{state.preservation_level}"] = aq > 0.0
            notes.append(
                f"preservation {state.preservation_level}: gross to at most {gross_cap:,.0f} "
                f"({100 * state.target_gross_cut:.0f}% below {reference:,.0f})"
            )
        else:
            gross_cap = math.inf
    if not targets_linear and not cleared:
        after = before_list
        changes = tuple(_change(before[n], before[n], None) for n in sorted(breached, key=_order_key) if n in before)
        return ReductionPlan(
            lines=(),
            reduce_quantity=np.zeros(e.n),
            new_quantity=e.quantity.copy(),
            method=METHOD_NONE,
            objective=objective,
            objective_value=0.0,
            lp_objective_value=0.0,
            feasible=not (breached & (LINEAR_LIMITS | {"max_positions", "max_pairwise_correlation"})),
            changes=changes,
            after=tuple(after),
            notes=tuple(notes or ["nothing to cut"]),
        )

    # ---- LP ----
    d_sh = mult * e.delta[held] * sign
    g = np.abs(mult * e.delta[held] * e.spot[held])
    zeros_inv = np.zeros(h, dtype=np.intp)
    lin_enabled = [n for n in LIMIT_NAMES if n in LINEAR_LIMITS and config.threshold(n) is not None]
    nets = {
        "max_abs_net_delta_shares": (m.sym_inv, m.symbols.size, d_sh, m.net_delta_by_symbol),
        "max_abs_gamma_shares": (m.sym_inv, m.symbols.size, mult * e.gamma[held] * sign, m.gamma_by_symbol),
        "max_abs_net_dollar_delta": (zeros_inv, 1, d_sh * e.spot[held], np.array([m.net_dollar_delta])),
        "max_abs_vega_per_vol_point": (zeros_inv, 1, mult * e.vega[held] / 100.0 * sign, np.array([m.vega])),
    }
    shares = {
        "max_position_pct_gross": (np.arange(h), h),
        "max_underlying_pct_gross": (m.sym_inv, m.symbols.size),
        "max_sector_pct_gross": (m.sec_inv, m.sectors.size),
    }
    d0 = m.denominator
    c = np.concatenate([unit_cost, [0.0]])
    # the last variable is y = G / G_0 (scaled gross) and the equality row is scaled to max |coef| 1
    g_scale = m.gross if m.gross > 0.0 else 1.0
    eq_row = np.concatenate([g / g_scale, [1.0]])
    eq_norm = float(np.abs(eq_row).max())
    a_eq = sparse.csr_array((eq_row / eq_norm)[None, :])
    b_eq = np.array([m.gross / g_scale / eq_norm])
    lower = np.concatenate([lb, [0.0]])

    def build(margin: float) -> tuple[sparse.csr_array, FloatArray, FloatArray]:
        """``A_ub``, ``b_ub`` and the upper bounds, with breached bounds tightened by ``margin``."""
        p = _Problem([], [])
        for name in lin_enabled:
            if name in nets:
                inv, n_groups, coef, current = nets[name]
                warn = _warn_levels(name, config, overrides, m.symbols)
                bound = _bounds(name, config, breached, np.abs(current), margin, warn)
                _add_abs(p, _group_rows(inv, n_groups, coef, h), current, bound)
            elif name == "max_theta_per_day_loss":
                warn = _warn_levels(name, config, overrides, m.symbols)
                bound = _bounds(name, config, breached, np.array([m.theta_loss]), margin, warn)
                theta = mult * e.theta_per_day[held] * sign
                p.add(_group_rows(zeros_inv, 1, theta, h), bound - m.theta_loss)
            else:
                inv, n_groups = shares[name]
                start = np.bincount(inv, weights=g * aq, minlength=n_groups)
                share0 = start / d0 if d0 > 0.0 else np.zeros(n_groups)
                bound = _bounds(
                    name, config, breached, share0, margin, _warn_levels(name, config, overrides, m.symbols)
                )
                rows = -_group_rows(inv, n_groups, g, h)  # group gross = start + rows @ x
                if m.gross_floor > m.gross:  # constant denominator F
                    p.add(rows, bound * m.gross_floor - start)
                else:  # start - g r - bound G <= 0
                    gcol = sparse.csr_array(
                        (-bound * g_scale, (np.arange(n_groups), np.full(n_groups, h))),
                        shape=(n_groups, h + 1),
                    )
                    p.add(rows + gcol, -start)
        if p.rows:
            a_ub, b_ub = _scaled(sparse.vstack(p.rows, format="csr"), np.concatenate(p.rhs))
        else:
            a_ub, b_ub = sparse.csr_array((0, h + 1)), np.zeros(0)
        g_hi = min(m.gross, gross_cap * (1.0 - margin)) if math.isfinite(gross_cap) else m.gross
        return a_ub, b_ub, np.concatenate([ub, [max(g_hi, 0.0) / g_scale]])

    a_ub, b_ub, upper = build(0.0)
    res = linprog(
        c,
        A_ub=a_ub if a_ub.shape[0] else None,
        b_ub=b_ub if a_ub.shape[0] else None,
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=np.column_stack([lower, upper]),
        method="highs",
    )
    if res.status != 0 or res.x is None:
        return _failed_plan(e, objective, [*notes, f"LP failed: {res.message}"])
    lp_value = float(res.fun)
    x_lp = res.x[:h]
    r = np.clip(np.ceil(x_lp - ROUND_TOLERANCE), 0.0, ub)
    targets = targets_linear + sorted(n for n in cleared if n not in targets_linear)
    method = METHOD_LP
    after, failures = _verify(e, config, m, r, sign, breached, before, gross_cap, overrides)
    if failures:
        notes.append("rounded LP plan failed verification (" + "; ".join(failures) + ")")
        a_ub, b_ub, upper = build(MILP_MARGIN)
        lb_int = np.minimum(np.ceil(lb - ROUND_TOLERANCE), ub)
        whole = np.clip(np.round(x_lp), lb_int, ub)
        frac = np.abs(x_lp - whole) > ROUND_TOLERANCE
        near = (
            np.where(frac, np.maximum(np.floor(x_lp) - 1.0, lb_int), whole),
            np.where(frac, np.minimum(np.ceil(x_lp) + 1.0, ub), whole),
        )
        attempts = (
            (f"MILP over the {int(frac.sum())} fractional cut(s)", near, MILP_NEAR_TIME_LIMIT_SECONDS),
            ("MILP over every cut", (lb_int, ub), MILP_TIME_LIMIT_SECONDS),
        )
        for label, (lo_i, hi_i), limit in attempts:
            solution, message = _solve_milp(c, a_ub, b_ub, a_eq, b_eq, lo_i, hi_i, upper[-1], limit)
            if solution is None:
                notes.append(f"{label}: {message}")
                continue
            r_try = np.clip(np.round(solution[:h]), 0.0, ub)
            after_try, failures_try = _verify(e, config, m, r_try, sign, breached, before, gross_cap, overrides)
            if not failures_try:
                r, after, failures, method = r_try, after_try, [], METHOD_MILP
                notes.append(f"{label}: verified")
                break
            notes.append(f"{label} failed verification: " + "; ".join(failures_try))
        if failures:  # close whole positions: those the LP cuts, then every one (always verifies)
            for label, r_try in (
                ("closing every position the LP cuts", np.where(x_lp > ROUND_TOLERANCE, ub, lb_int)),
                ("closing every position", ub.copy()),
            ):
                after_try, failures_try = _verify(e, config, m, r_try, sign, breached, before, gross_cap, overrides)
                if not failures_try:
                    r, after, failures, method = r_try, after_try, [], METHOD_CLOSE
                    notes.append(f"{label}: verified")
                    break
        if failures:
            notes.append("no verified plan: returning the rounded LP plan (feasible=False)")
    cleared.update(_contributors(e, m, config, targets_linear, before, overrides))
    after_by = results_by_name(after)
    changes = []
    for name in sorted(breached | set(targets_linear), key=_order_key):
        if name in before:
            changes.append(_change(before[name], after_by.get(name), estimated.get(name)))
    reduce_held = sign * r + 0.0  # no negative zeros
    reduce_quantity = np.zeros(e.n)
    reduce_quantity[held] = reduce_held
    new_quantity = e.quantity - reduce_quantity
    lines = _lines(e, held, q, reduce_held, targets, cleared)
    return ReductionPlan(
        lines=lines,
        reduce_quantity=reduce_quantity,
        new_quantity=new_quantity,
        method=method,
        objective=objective,
        objective_value=float(r @ unit_cost),
        lp_objective_value=lp_value,
        feasible=not failures,
        changes=tuple(changes),
        after=tuple(after),
        notes=tuple(notes),
    )


def _solve_milp(
    c: FloatArray,
    a_ub: sparse.csr_array,
    b_ub: FloatArray,
    a_eq: sparse.csr_array,
    b_eq: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    y_upper: float,
    time_limit: float,
) -> tuple[FloatArray | None, str]:
    """HiGHS branch and bound with whole cuts in ``[lower, upper]``; the solution or why none."""
    bounds = np.column_stack([np.concatenate([lower, [0.0]]), np.concatenate([upper, [y_upper]])])
    with warnings.catch_warnings():  # HiGHS options scipy does not list are passed on verbatim
        warnings.filterwarnings("ignore", "Unrecognized options", OptimizeWarning)
        res = linprog(
            c,
            A_ub=a_ub if a_ub.shape[0] else None,
            b_ub=b_ub if a_ub.shape[0] else None,
            A_eq=a_eq,
            b_eq=b_eq,
            bounds=bounds,
            method="highs",
            integrality=np.concatenate([np.ones(lower.size), [0.0]]),
            options={
                "time_limit": time_limit,
                "primal_feasibility_tolerance": MILP_FEASIBILITY_TOLERANCE,
                "mip_feasibility_tolerance": MILP_FEASIBILITY_TOLERANCE,
            },
        )
    if res.x is None:
        return None, str(res.message)
    return np.asarray(res.x, dtype=np.float64), ""


def _order_key(name: str) -> int:
    return LIMIT_NAMES.index(name) if name in LIMIT_NAMES else len(LIMIT_NAMES)


def _change(before: LimitResult, after: LimitResult | None, estimate: float | None) -> LimitChange:
    if estimate is not None:
        status = "OK" if estimate <= before.warn_threshold else "WARN" if estimate <= before.threshold else BREACH
        return LimitChange(
            before.limit_name,
            before.value,
            estimate,
            before.threshold,
            before.warn_threshold,
            before.status,
            status,
            True,
        )
    a_value = after.value if after is not None else math.nan
    a_status = after.status if after is not None else before.status
    return LimitChange(
        before.limit_name,
        before.value,
        a_value,
        before.threshold,
        before.warn_threshold,
        before.status,
        a_status,
    )


def _verify(
    e: BookExposure,
    config: LimitsConfig,
    m: BookMetrics,
    r: FloatArray,
    sign: FloatArray,
    breached: set[str],
    before: dict[str, LimitResult],
    gross_cap: float,
    overrides: Sequence[LimitOverride] = (),
) -> tuple[list[LimitResult], list[str]]:
    """Evaluate the book after the cuts (tightened caps in force); list every targeted limit still above its
    level."""
    new_q = e.quantity.copy()
    new_q[m.held] = e.quantity[m.held] - sign * r
    changed = bool(np.any(r > 0.0))
    after_book = replace(
        e,
        quantity=new_q,
        var_99_1d=None if changed else e.var_99_1d,
        es_975_1d=None if changed else e.es_975_1d,
    )
    after = _evaluate(after_book, config, overrides)
    failures: list[str] = []
    for res in after:
        name = res.limit_name
        if name not in LINEAR_LIMITS and name not in ("max_positions", "max_pairwise_correlation"):
            continue
        if name in breached:
            if not res.value <= res.warn_threshold:
                failures.append(f"{name} {res.value:.6g} above warning {res.warn_threshold:.6g}")
        elif name in LINEAR_LIMITS:
            allowed = max(res.warn_threshold, before[name].value)
            if not res.value <= allowed + 1e-9 * max(1.0, abs(allowed)):
                failures.append(f"{name} worsened to {res.value:.6g} (allowed {allowed:.6g})")
    if math.isfinite(gross_cap) and not after_book.gross_exposure <= gross_cap:
        failures.append(f"gross {after_book.gross_exposure:,.0f} above the preservation target {gross_cap:,.0f}")
    return after, failures


def _lines(
    e: BookExposure,
    held: NDArray[np.intp],
    q: FloatArray,
    reduce_held: FloatArray,
    targets: Sequence[str],
    cleared: dict[str, BoolArray],
) -> tuple[ReductionLine, ...]:
    """Rows for the positions with a non-zero cut (loop over the cut positions only)."""
    cut = np.flatnonzero(reduce_held != 0.0)
    lines = []
    for k in cut.tolist():
        names = tuple(t for t in targets if t in cleared and bool(cleared[t][k]))
        verb = "sell" if q[k] > 0 else "buy back"
        amount = abs(reduce_held[k])
        pct = 100.0 * amount / abs(q[k])
        why = ", ".join(names) if names else "keeps the other limits from getting worse"
        lines.append(
            ReductionLine(
                position_id=str(e.position_id[held[k]]),
                quantity=float(q[k]),
                reduce_quantity=float(reduce_held[k]),
                reason=f"{verb} {amount:,.0f} of {abs(q[k]):,.0f} ({pct:.1f}%): {why}",
                limits_cleared=names,
            )
        )
    return tuple(lines)
