"""Hedge selection: triggers, a cost-minimizing mixed-integer program over listed candidates, CPPI and beta hedges,
and the Cboe volatility index.

Why ``scipy.optimize.milp`` (HiGHS branch and cut): quantities are whole contracts and every line is
semi-continuous (zero or at least ``min_hedge_notional``), which needs integer and binary variables; every
other constraint is linear in the quantities. A candidate's scenario P&L comes from full revaluation
(``scenario_engine``) of one contract, and the P&L of ``q`` contracts is ``q`` times it, so the scenario-loss
and Rockafellar-Uryasev expected-shortfall constraints are exact, not an approximation. ``minimize`` (SLSQP)
would need rounding afterwards and gives no optimality proof; ``linprog`` has no integrality.

Program (per book; ``x_j >= 0`` integer contracts of candidate ``j`` on its side, ``z_j`` binary)::

    minimize    sum_j x_j * cost_j                        (half spread + decay/financing over the horizon)
    subject to  |g_k + sum_j x_j G_kj| <= w_k              (net delta per underlying, book dollar delta,
                                                            gamma per underlying, book vega: warning levels)
                P_s + sum_j x_j H_sj >= -loss_cap          (every stress and VaR scenario s)
                ES_975(P + H x) <= es_target                (97.5 % expected shortfall over the ES scenarios)
                sum_j x_j (premium_j + cost_j) <= budget
                notional_j x_j >= min_notional z_j,  x_j <= U_j z_j

The ES row is the Rockafellar-Uryasev constraint ``a + 1/((1-c)N) sum_s (L_s - a)^+ <= target`` in its dual
form: ES is the maximum of ``w . L`` over the tail weights (``0 <= w_s <= 1/((1-c)N)``, ``sum w = 1``), so
``w . L(x) <= target`` for every such ``w`` (Kuenzi-Bay and Mayer 2006). Those cuts, and the scenario-loss
rows, are added lazily (the ones violated at the current solution), which keeps each MILP small; at the end
every scenario row and the exact ES hold, and the hedge is optimal since each round solves a relaxation.

When it is infeasible, the elastic program adds a non-negative slack to every Greek row and one each to the
scenario losses and the ES (scaled by each row's level), minimizes the slacks first and cost second, and
names the rows still violated: the best partial hedge within the budget.

Volatility index: Cboe, "VIX White Paper" (2019 edition), equations 1-3.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import Bounds, LinearConstraint, linprog, milp
from scipy.sparse import csr_array, csr_matrix, hstack, identity, issparse, vstack
from scipy.sparse.csgraph import connected_components

from risk_pipeline.quant._numba import BoolArray, FloatArray, IntArray
from risk_pipeline.quant.portfolio import Portfolio, concatenated
from risk_pipeline.quant.scenario_engine import AmericanMethod, ScenarioSet, evaluate
from risk_pipeline.quant.stress import RuleScenarios

URGENCIES = ("LOW", "MEDIUM", "HIGH", "IMMEDIATE")
MINUTES_PER_YEAR = 525_600.0
MINUTES_30_DAYS = 43_200.0

# ----------------------------------------------------------------------------------------------
# triggers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """Why a book is hedged: ``kind``, what was measured against what, and the urgency it implies."""

    kind: str
    detail: str
    value: float | None
    threshold: float | None
    urgency: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def urgency_from_excess(ratio: float) -> str:
    """Urgency of a measure at ``ratio`` x its threshold: >= 1.5 IMMEDIATE, >= 1.2 HIGH, >= 1 MEDIUM, else LOW."""
    if ratio >= 1.5:
        return "IMMEDIATE"
    if ratio >= 1.2:
        return "HIGH"
    if ratio >= 1.0:
        return "MEDIUM"
    return "LOW"


def max_urgency(levels: Sequence[str]) -> str:
    """The most urgent of ``levels`` (LOW when empty)."""
    return max(levels, key=URGENCIES.index, default="LOW")


def threshold_trigger(kind: str, value: float, threshold: float, what: str) -> Trigger | None:
    """A trigger when ``value > threshold`` (both positive, e.g. a loss as a fraction of NAV)."""
    if not (math.isfinite(value) and value > threshold):
        return None
    ratio = value / threshold
    return Trigger(
        kind, f"{what} {value:.2%} of NAV above {threshold:.2%}", value, threshold, urgency_from_excess(ratio)
    )


def limit_trigger(limit_name: str, status: str, value: float, threshold: float, utilization: float) -> Trigger:
    """A WARN (MEDIUM) or BREACH (by how far over: HIGH, IMMEDIATE from 1.5 x) limit of ``limit_status``."""
    urgency = "MEDIUM" if status == "WARN" else max_urgency(["HIGH", urgency_from_excess(utilization)])
    return Trigger(
        f"limit_{status.lower()}",
        f"{limit_name} {status}: {value:,.0f} against {threshold:,.0f} ({utilization:.0%})",
        float(value),
        float(threshold),
        urgency,
    )


# ----------------------------------------------------------------------------------------------
# candidates and the program
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HedgeCandidates:
    """Tradable lines, one contract each, signed for their side (``side`` +1 buys, -1 sells).

    ``greeks`` is ``(n_rows, n)``: the change of each constrained exposure per contract (``greek_names`` rows),
    a ``scipy.sparse.csr_array`` from ``build_candidates`` (a line moves its own symbol's delta and gamma rows and
    the book rows only; a dense array is accepted too);
    ``scenario_pnl`` is ``(n_scenarios, n)`` from full revaluation of one contract; ``cost`` per contract is
    half spread x multiplier plus decay/financing over the horizon; ``premium`` the cash paid per contract
    (bought options; 0 otherwise); ``notional`` per contract (underlying notional, for the minimum size).
    """

    labels: tuple[str, ...]
    side: IntArray
    greeks: FloatArray | csr_array
    scenario_pnl: FloatArray
    cost: FloatArray
    premium: FloatArray
    notional: FloatArray
    max_contracts: FloatArray
    #: the lines' ``candidate_greeks`` (``build_candidates``; empty when built otherwise)
    line_greeks: Mapping[str, FloatArray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.labels)


@dataclass(frozen=True, eq=False)
class HedgeTargets:
    """Book exposures and the levels the hedged book must meet.

    ``exposure`` and ``warn_level`` pair with the candidates' ``greeks`` rows (|exposure after| <= warn);
    ``book_pnl`` is the book's scenario P&L (same rows as the candidates'); ``es_rows`` selects the
    scenarios the ES constraint ranges over (one horizon's historical scenarios).
    """

    greek_names: tuple[str, ...]
    exposure: FloatArray
    warn_level: FloatArray
    book_pnl: FloatArray
    loss_cap: float
    es_rows: IntArray
    es_confidence: float
    es_target: float
    budget: float
    min_notional: float


@dataclass(frozen=True)
class HedgeSolution:
    """Contracts per candidate, status, the constraints binding when infeasible, the model's view of the result.

    A partial hedge (``partial``) carries ``violation``, the target rows' excess after it in units of each row's
    level (``HedgeCheck``: Greek rows, the worst scenario loss, the ES), and, when stopped at the time limit,
    ``violation_bound``, a lower bound on that of any hedge within the budget and the hard rows (from the elastic
    program's relaxations), and ``gap``, the elastic objective's relative gap to its bound."""

    quantity: FloatArray
    status: str  # optimal | partial | no_candidates | time_limit | error
    partial: bool
    binding: tuple[str, ...]
    cost: float
    outlay: float
    solve_seconds: float
    message: str
    model_es: float = float("nan")
    model_worst_loss: float = float("nan")
    violations: Mapping[str, float] = field(default_factory=dict)
    lower_bound: float = float("nan")
    gap: float = float("nan")
    first_feasible_seconds: float = float("nan")
    first_feasible_cpu_seconds: float = float("nan")
    violation: float = float("nan")
    violation_bound: float = float("nan")


def _tail_weights(losses: FloatArray, confidence: float) -> FloatArray:
    """Weights ``w`` with ``w . losses`` = the Acerbi-Tasche ES of ``losses`` (as ``var.empirical_var_es``).

    ES is the maximum of ``w . L`` over ``0 <= w_s <= 1/m``, ``sum w = 1`` (``m = (1 - c) N``); the maximizer
    puts ``1/m`` on the ``floor(m)`` largest losses and the rest on the next one. Each such ``w`` gives a
    linear cut valid for every hedge (Kuenzi-Bay and Mayer 2006): the Rockafellar-Uryasev constraint in dual form.
    """
    n = losses.size
    m = (1.0 - confidence) * n
    if abs(m - round(m)) < 1e-9:
        m = float(round(m))
    order = np.argsort(-losses, kind="stable")
    w = np.zeros(n)
    if m <= 1.0:
        w[order[0]] = 1.0
        return w
    whole = math.floor(m)
    w[order[:whole]] = 1.0 / m
    if whole < n:
        w[order[whole]] = (m - whole) / m
    return w


def empirical_es(pnl: FloatArray, confidence: float) -> float:
    """Acerbi-Tasche ES (positive = loss) through the tail weights."""
    losses = -np.asarray(pnl, dtype=float)
    return float(_tail_weights(losses, confidence) @ losses) if losses.size else 0.0


def solve_hedge(
    c: HedgeCandidates,
    t: HedgeTargets,
    *,
    time_limit: float = 10.0,
    elastic_weight: float = 1e4,
    max_rounds: int = 100,
    rows_per_round: int = 25,
    mip_rel_gap: float = 1e-4,
    partial_time_limit: float = 2.0,
    window: float = 200.0,
    screen: Sequence[int] = (12, 48),
    relaxed_share: float = 0.5,
    node_limit: int | None = None,
) -> HedgeSolution:
    """The cheapest whole-contract hedge meeting every target (``scipy.optimize.milp``), else the best partial one.

    Scenario-loss rows and ES cuts are generated lazily: solve with the binding ones found so far, revalue
    every scenario at the solution (exact: linear in the quantities), add the violated scenario rows and the
    ES cut at the solution, repeat until nothing is violated. The final hedge meets every scenario row and
    the ES target exactly, and is optimal (to ``mip_rel_gap``) because each round solves a relaxation of the
    full program. The elastic (partial-hedge) program, a min-max that HiGHS proves slowly, gets at most
    ``partial_time_limit`` seconds per round and keeps the best hedge found.

    Each MILP round first solves the LP relaxation (a lower bound on the round's optimum), then the MILP
    on the relaxation's lines plus the ``screen`` unused lines of smallest reduced cost, each boxed within
    ``window`` contracts of the relaxed quantity (``_windowed_milp``); that hedge is accepted when its
    cost is within ``mip_rel_gap`` of the bound (optimal to the same gap as the unrestricted MILP), else
    more lines, else the unrestricted MILP. ``message`` says how each round was solved.

    Incumbent: every whole-contract hedge a MILP returns (boxed or not, finished or stopped) is checked against
    the full program (``check_hedge``: every Greek row, every scenario, the exact ES, the budget, the minimum
    notional) and the cheapest that meets it all is kept (elastic program: the smallest elastic objective).
    When a box is not certified and its hedge misses a row not generated yet, the box's lines alone are solved
    with lazy rows (``_restricted_milp``, a program of a few dozen lines) until their hedge meets every row,
    before the unrestricted MILP gets the time left (again for a later box whose hedge is cheaper than the kept
    one). With a kept hedge, the unrestricted MILP (hard program) runs within the bounds that every hedge costing no
    more has by the round's LP reduced costs (``_reduced_cost_bounds``), the kept cost as HiGHS' objective bound:
    the same optimum, proven far sooner (500 names: 168 -> 12 CPU s); when its optimum costs no less than the kept
    hedge, the kept hedge is returned (equal-cost lines). Within those bounds, every line that no hedge costing at
    most the kept one can use is fixed at zero by the per-symbol Lagrangian bound (``_lagrangian_core``: the LP's
    multipliers on every row but each symbol's own Greek rows, whole contracts and minimum notional kept per
    symbol), so the MILP is that of a few hundred lines (3,000 names: 6,486 -> 183 lines, proven optimal in 1.5
    CPU s instead of stopping at the 20 s limit; used when it leaves at most ``CORE_SHARE`` of the lines), and then,
    once a hedge is kept, the box of every line (every line within ``window`` contracts of the LP optimum) is not
    solved: the optimum is the same within ``gap``, on ties not always the same lines. When the MILP within the core
    returns a hedge missing a row not generated yet, the core's lines are solved against every row
    (``_restricted_milp``: every hedge costing at most the kept one is among them, so its hedge is optimal); when a
    box certified by the LP bound gives such a hedge, so are the box's lines, and that hedge is optimal when it is
    within ``gap`` of the bound. ``_restricted_milp`` writes the ES row exactly (Rockafellar-Uryasev,
    ``_with_exact_es``) after ``ES_EXACT_AFTER`` rounds of ES cuts: one tail set a cut, a MILP's hedge can stay just
    over the exact ES round after round (3,000-name synthetic problems: 140 rounds in 211 CPU s, no hedge). The LP
    rounds (HiGHS without presolve) stop adding rows after ``relaxed_share`` of the time limit; the MILP rounds add the
    rest; in the hard program they write the ES row exactly after ``ES_EXACT_LP_AFTER`` rounds of ES cuts, and add its
    dual tail weights as one cut when they converge (``_exact_es_weights``: the same LP optimum for the MILP rounds,
    which have cuts only). When the time limit (or ``node_limit``
    nodes of the unrestricted MILP) stops the solve, the kept hedge is returned with status ``time_limit``, ``gap``
    and ``lower_bound`` (the best bound proven: the LP relaxations' optima and the unrestricted MILPs' dual bounds,
    each a relaxation of the full program) and ``first_feasible_seconds`` (wall and CPU); no hedge only when none
    was found.

    Partial hedge at the time limit: every LP relaxation round's quantities, rounded down to whole contracts
    with the lines under the minimum notional dropped (``_whole_within_hard_rows``: the budget, the bounds and
    the minimum notional still hold), and every MILP hedge are scored by the elastic objective
    (``check_hedge``); the best that meets the hard rows (budget, contract bounds, minimum notional, whole
    contracts) is returned with status ``time_limit``, ``partial``, its ``violation`` and, from the elastic
    rounds' LP optima and MILP dual bounds, ``violation_bound`` and ``gap``. This holds from the first LP round
    on, also when the time limit stops the search for a hedge meeting every row before the program is found
    infeasible (``violation_bound`` then unknown). The elastic rounds do at least one LP round.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    if c.n == 0:
        return _no_candidates(start)
    es_H = c.scenario_pnl[t.es_rows]
    es_book = t.book_pnl[t.es_rows]
    methods: list[str] = []
    state: dict[str, Any] = {}
    prog_cache: dict[Any, Any] = {}  # the rows that do not change from round to round
    scale_loss, scale_es = max(t.loss_cap, 1.0), max(t.es_target, 1.0)
    tol_loss, tol_es = 1e-9 * scale_loss + 1e-7, 1e-9 * scale_es + 1e-7
    # the best partial hedge (elastic objective, within the hard rows) of either phase: the elastic phase's best
    partial = _Incumbent()

    def keep(kept: _Incumbent, x: FloatArray, score: float, chk: HedgeCheck, source: str) -> None:
        kept.x, kept.score, kept.check, kept.source = x.copy(), score, chk, source
        kept.seconds = time.perf_counter() - start
        if math.isnan(kept.first):
            kept.first, kept.first_cpu = kept.seconds, time.process_time() - cpu_start

    for elastic in (False, True):
        loss_rows = list(np.argsort(t.book_pnl, kind="stable")[: min(rows_per_round, t.book_pnl.size)])
        cuts = [_tail_weights(-es_book, t.es_confidence)] if t.es_rows.size else []
        relaxed = True  # rows and cuts from the LP relaxation first (milliseconds a round), then the MILP
        lp_rounds = 0
        es_lp_rounds = 0  # LP rounds that added an ES cut: from ES_EXACT_LP_AFTER on (hard program), ES row exact
        # the best hedge and the best lower bound proven on the full program's cost (elastic: on its objective)
        best = partial if elastic else _Incumbent()

        def consider(
            x: FloatArray, source: str, elastic: bool = elastic, best: _Incumbent = best, full: bool = True
        ) -> HedgeCheck:
            """Check a whole-contract hedge against the full program; keep it when it is the best so far (a hedge
            within the hard rows only: the best partial one; ``full`` false: only as that)."""
            chk = check_hedge(c, t, x, elastic_weight)
            if not elastic and full and chk.feasible and chk.cost < best.score:
                keep(best, x, chk.cost, chk, source)
            if chk.within_hard_rows and chk.elastic_objective < partial.score:
                keep(partial, x, chk.elastic_objective, chk, source)
            return chk

        def box_incumbent(
            x_boxed: FloatArray | None, lines: BoolArray, lo: FloatArray, hi: FloatArray, deadline: float,
            kept: bool | None, elastic: bool = elastic, loss_rows: list = loss_rows, cuts: list = cuts,
            best: _Incumbent = best,
        ) -> bool:  # fmt: skip
            """Keep the boxed hedge if it meets the full program (elastic: always) and is the best so far; else,
            when no hedge is ``kept`` yet or the boxed one is cheaper than the kept one, solve the box's lines
            against every row (``_restricted_milp``, from the boxed hedge's violations). Whether a hedge is kept."""
            x = None if x_boxed is None else np.round(x_boxed[: c.n])
            chk = None if x is None else consider(x, "uncertified box")
            if chk is not None and (chk.feasible or elastic):
                return True
            worth = not kept or (chk is not None and chk.cost < best.score)
            if not worth or elastic or deadline <= time.perf_counter():
                return bool(kept)
            x = _restricted_milp(
                c, t, np.flatnonzero(lines), lo, hi, deadline - time.perf_counter(), mip_rel_gap, loss_rows, cuts,
                rows_per_round, x,
            )  # fmt: skip
            found = x is not None and consider(x, f"box of {int(lines.sum())} lines against every row").feasible
            return found or bool(kept)

        def against_every_row(
            lines: IntArray, lo_l: FloatArray, hi_l: FloatArray, how: str, first: FloatArray | None = None,
            loss_rows: list = loss_rows, cuts: list = cuts, best: _Incumbent = best,
        ) -> bool:  # fmt: skip
            """``lines`` alone (within ``lo_l``..``hi_l``) solved against every row (``_restricted_milp``, in the
            time left) and the hedge considered: whether it meets every row and a hedge is kept."""
            left = time_limit - (time.perf_counter() - start)
            if left <= 0 or not lines.size:
                return False
            x_l = _restricted_milp(c, t, lines, lo_l, hi_l, left, mip_rel_gap, loss_rows, cuts, rows_per_round, first)
            return x_l is not None and consider(x_l, how).feasible and best.x is not None

        def optimal_kept(best: _Incumbent = best) -> HedgeSolution:
            """The kept hedge, proven optimal (hard program)."""
            assert best.x is not None
            pnl = t.book_pnl + c.scenario_pnl @ best.x
            es = empirical_es(es_book + es_H @ best.x, t.es_confidence) if t.es_rows.size else 0.0
            message = f"optimal: {best.source} [{len(methods)} MILP round(s): {', '.join(methods)}]"
            sol = _solution(c, t, best.x, "optimal", False, (), start, message, es, pnl)
            return replace(
                sol,
                lower_bound=best.bound,
                first_feasible_seconds=best.first,
                first_feasible_cpu_seconds=best.first_cpu,
            )

        def stopped(why: str, best: _Incumbent = best, elastic: bool = elastic) -> HedgeSolution:
            """The kept hedge with status ``time_limit`` (and its gap), else the best partial hedge, else none."""
            rounds = f"{len(methods)} MILP round(s): {', '.join(methods)}"
            if best.x is not None:
                return _kept(c, t, best, elastic, start, f"{why}; {rounds}", elastic_weight)
            if partial.x is not None:  # the time ran out before a hedge meeting every row (or infeasibility)
                why = f"no hedge meeting every row found before the time limit; {why}"
                return _kept(c, t, partial, True, start, f"{why}; {rounds}", elastic_weight, bounded=False)
            return _failed(c, "time_limit", start, why)

        for _ in range(max_rounds):
            elapsed = time.perf_counter() - start
            remaining = time_limit - elapsed
            if remaining <= 0:
                return stopped("time limit reached while adding scenario rows")
            if relaxed and elapsed > relaxed_share * time_limit and (lp_rounds or not elastic):
                relaxed = False  # the MILP rounds add the rows still missing (and give a hedge in time)
            prog = _program(
                c, t, np.array(loss_rows, dtype=np.intp), cuts, es_H, es_book, elastic, elastic_weight, prog_cache
            )
            # the time left after building the program (no solver call gets more than remains of the limit);
            # elastic MILP rounds (a min-max HiGHS proves slowly) get partial_time_limit after their LP relaxation
            limit = time_limit - (time.perf_counter() - start)
            if limit <= 0:
                return stopped("time limit reached while adding scenario rows")
            exact_lp = relaxed and not elastic and t.es_rows.size and es_lp_rounds >= ES_EXACT_LP_AFTER
            if exact_lp:
                prog = _with_exact_es(prog, es_H, es_book, t.es_target, t.es_confidence)
            if relaxed:
                # HiGHS' presolve costs 3/4 of these LPs at thousands of lines (same optima measured without it)
                res = _milp(
                    prog, np.zeros_like(prog["integrality"]), prog["bounds"], limit, mip_rel_gap, presolve=False
                )
                if res.status == 0:
                    best.bound = max(best.bound, float(res.fun))
            else:
                res, how = _windowed_milp(
                    prog, c.n, limit, mip_rel_gap, window, screen, state, box_incumbent, node_limit=node_limit,
                    box_limit=partial_time_limit if elastic else math.inf,
                    cutoff=None if elastic else (lambda best=best: best.score),
                )  # fmt: skip
                methods.append(how)
                best.bound = max(best.bound, state.pop("bound", -math.inf))
            if res.x is None:
                if not elastic and res.status == 2:  # a relaxation is infeasible: so is the full program
                    break
                if res.status == 1:
                    return stopped(f"{res.message}")
                return _failed(c, "error", start, str(res.message))
            x = res.x[: c.n] if relaxed else np.round(res.x[: c.n])
            if relaxed:
                lp_rounds += 1
                consider(_whole_within_hard_rows(c, t, x), "LP relaxation rounded down", full=False)
            else:
                consider(x, how)
            pnl = t.book_pnl + c.scenario_pnl @ x
            es_pnl = es_book + es_H @ x
            s_loss, s_es = (res.x[prog["loss_slack"]], res.x[prog["es_slack"]]) if elastic else (0.0, 0.0)
            over = -pnl - t.loss_cap - s_loss * scale_loss
            new_rows = [int(i) for i in np.argsort(-over, kind="stable")[:rows_per_round] if over[i] > tol_loss]
            new_rows = [i for i in new_rows if i not in set(loss_rows)]
            es_now = empirical_es(es_pnl, t.es_confidence) if t.es_rows.size else 0.0
            es_violated = t.es_rows.size and es_now > t.es_target + s_es * scale_es + tol_es
            if es_violated:
                cuts.append(_tail_weights(-es_pnl, t.es_confidence))
                es_lp_rounds += bool(relaxed)
            loss_rows += new_rows
            core_used = not relaxed and state.pop("core_used", False)  # the round's MILP within the core
            box = state.pop("certified_box", None) if not relaxed else None  # the round's box certified by the LP
            if (new_rows or es_violated) and box is not None and not elastic:
                # the box's hedge is within the gap of the LP bound but misses a row not generated yet (an ES cut
                # after another, the MILP's hedge just over the exact ES each time): the box's lines against every
                # row (ES row exact after a few cuts); that hedge is optimal when it is within the gap of the bound
                lines, lo_b, hi_b = box
                how_box = f"box of {lines.size} lines against every row"
                if (
                    against_every_row(lines, lo_b, hi_b, how_box, x)
                    and best.score - best.bound <= mip_rel_gap * max(abs(best.bound), 1e-9) + 1e-9
                ):
                    methods.append(f"{how_box}, certified by the LP bound")
                    return optimal_kept()
            if (new_rows or es_violated) and core_used:
                # the round's MILP ran within the per-symbol Lagrangian core (every hedge of the program costing at
                # most the kept one lies within it) and its hedge misses a row not generated yet: the core's lines
                # against every row (a small program; its ES row exact after a few cuts) give the optimum
                core_bounds = state["core"][0]
                lo_c, hi_c = (
                    np.asarray(core_bounds.lb, dtype=float)[: c.n],
                    np.asarray(core_bounds.ub, dtype=float)[: c.n],
                )
                lines = np.flatnonzero(hi_c > 0)
                how_core = f"the per-symbol Lagrangian core's {lines.size} lines against every row"
                if against_every_row(lines, lo_c, hi_c, how_core):
                    methods.append(how_core)  # the core's optimum, or a kept hedge costing no more
                    return optimal_kept()
            if new_rows or es_violated:
                continue
            if relaxed:
                if exact_lp:
                    # the exact ES row's tail weights at the LP optimum (its duals): with them as a cut, the MILP
                    # rounds' relaxation has the exact row's LP optimum (as the cuts' rounds converge to)
                    w = _exact_es_weights(prog, es_H.shape[0])
                    if w is not None:
                        cuts.append(w)
                # cuts at the whole-contract points around the relaxed optimum: the MILP's tail sets are
                # usually among them, which saves MILP rounds (every tail-weight cut is valid everywhere)
                if t.es_rows.size:
                    for near in (np.floor(x), np.ceil(x), np.round(x)):
                        cuts.append(_tail_weights(-(es_book + es_H @ near), t.es_confidence))
                relaxed = False
                continue
            message = f"{res.message} [{len(methods)} MILP round(s): {', '.join(methods)}]"
            if not elastic:
                if res.status != 0:  # stopped by the time (or node) limit: this hedge or a cheaper one kept
                    return stopped(f"{res.message}")
                if state.get("cutoff") and best.x is not None and best.score <= c.cost @ x:
                    # proven optimal within the kept hedge's bounds, which costs no more (ties of equal-cost lines):
                    # the kept hedge
                    x = best.x
                    pnl = t.book_pnl + c.scenario_pnl @ x
                    es_now = empirical_es(es_book + es_H @ x, t.es_confidence) if t.es_rows.size else 0.0
                sol = _solution(c, t, x, "optimal", False, (), start, message, es_now, pnl)
                return replace(
                    sol,
                    lower_bound=best.bound,
                    first_feasible_seconds=best.first,
                    first_feasible_cpu_seconds=best.first_cpu,
                )
            if res.status != 0:  # the elastic MILP stopped by its node limit: its hedge or a better one kept
                return stopped(f"{res.message}")
            binding = [n for n, v in zip(t.greek_names, res.x[prog["greek_slack"]], strict=True) if v > 1e-7]
            binding += ["scenario_loss"] if s_loss > 1e-9 else []
            binding += ["es_975"] if s_es > 1e-9 else []
            sol = _solution(c, t, x, "partial", True, tuple(binding), start, message, es_now, pnl)
            chk = check_hedge(c, t, x, elastic_weight)
            return replace(sol, violation=float(chk.greek_excess.sum()) + chk.loss_excess + chk.es_excess)
        else:
            return stopped(f"no convergence in {max_rounds} rounds")
    raise AssertionError("unreachable: the elastic program is always feasible (no hedge meets its hard rows)")


@dataclass(frozen=True)
class HedgeCheck:
    """A whole-contract hedge against the full program (``check_hedge``).

    Excesses are in units of each row's level, as the elastic program's slacks: ``greek_excess`` per Greek row
    ``max(|g + G x| - w, 0) / w``; ``loss_excess`` the worst scenario loss over the cap over ``max(cap, 1)``;
    ``es_excess`` the exact 97.5 % ES over its target over ``max(target, 1)``. ``within_hard_rows``: the outlay
    within the budget, every line zero or at least the minimum notional, whole contracts within
    ``max_contracts`` (what a partial hedge must meet); ``feasible``: that and no excess beyond the solver's
    tolerances.
    """

    feasible: bool
    cost: float
    outlay: float
    es: float
    worst_loss: float
    greek_excess: FloatArray
    loss_excess: float
    es_excess: float
    elastic_objective: float
    within_hard_rows: bool = False


def check_hedge(c: HedgeCandidates, t: HedgeTargets, x: FloatArray, elastic_weight: float = 1e4) -> HedgeCheck:
    """``x`` (contracts per candidate) against every row of the full program, scenario by scenario."""
    x = np.asarray(x, dtype=float)
    after = t.exposure + c.greeks @ x
    w = np.maximum(t.warn_level, 1e-300)
    greek_excess = np.maximum(np.abs(after) - t.warn_level, 0.0) / w
    pnl = t.book_pnl + c.scenario_pnl @ x
    worst = float(-pnl.min()) if pnl.size else 0.0
    es = empirical_es(pnl[t.es_rows], t.es_confidence) if t.es_rows.size else 0.0
    scale_loss, scale_es = max(t.loss_cap, 1.0), max(t.es_target, 1.0)
    loss_excess = max(worst - t.loss_cap, 0.0) / scale_loss
    es_excess = max(es - t.es_target, 0.0) / scale_es if t.es_rows.size else 0.0
    cost, outlay = float(c.cost @ x), float((c.premium + c.cost) @ x)
    used = x > 0
    hard = bool(
        outlay <= t.budget * (1 + 1e-9) + 1e-7
        and np.all(c.notional[used] * x[used] >= t.min_notional * (1 - 1e-9))
        and np.all(x == np.round(x))
        and np.all((x >= 0) & (x <= c.max_contracts))
    )
    feasible = bool(
        np.all(np.abs(after) <= t.warn_level * (1 + 1e-6) + 1e-6)
        and worst <= t.loss_cap + 1e-9 * scale_loss + 1e-7
        and es <= t.es_target + 1e-9 * scale_es + 1e-7
        and hard
    )
    objective = cost / max(t.budget, 1.0) + elastic_weight * (float(greek_excess.sum()) + loss_excess + es_excess)
    return HedgeCheck(feasible, cost, outlay, es, worst, greek_excess, loss_excess, es_excess, objective, hard)


def _whole_within_hard_rows(c: HedgeCandidates, t: HedgeTargets, x_relaxed: FloatArray) -> FloatArray:
    """Whole contracts from relaxed quantities: each rounded down within ``[0, max_contracts]`` and the lines
    under the minimum notional dropped, so the outlay (per contract >= 0) stays within the relaxed one's budget."""
    x = np.floor(np.clip(x_relaxed, 0.0, c.max_contracts) + 1e-9)
    x[c.notional * x < t.min_notional * (1 - 1e-9)] = 0.0
    return x


@dataclass
class _Incumbent:
    """The best whole-contract hedge checked so far (``solve_hedge``)."""

    x: FloatArray | None = None
    score: float = math.inf
    check: HedgeCheck | None = None
    source: str = ""
    seconds: float = math.nan
    first: float = math.nan
    first_cpu: float = math.nan
    bound: float = -math.inf


def _kept(
    c: HedgeCandidates,
    t: HedgeTargets,
    best: _Incumbent,
    elastic: bool,
    start: float,
    why: str,
    elastic_weight: float = 1e4,
    bounded: bool = True,
) -> HedgeSolution:
    """The kept hedge as a ``time_limit`` solution, with its gap to the lower bound (hard program) or its binding
    rows, its violation and (``bounded``: ``best.bound`` is the elastic program's) the bound on it (elastic)."""
    assert best.x is not None and best.check is not None
    chk, bound = best.check, best.bound
    pnl = t.book_pnl + c.scenario_pnl @ best.x
    if elastic:
        binding = [n for n, v in zip(t.greek_names, chk.greek_excess, strict=True) if v > 1e-7]
        binding += ["scenario_loss"] if chk.loss_excess > 1e-9 else []
        binding += ["es_975"] if chk.es_excess > 1e-9 else []
        violation = float(chk.greek_excess.sum()) + chk.loss_excess + chk.es_excess
        # elastic objective = cost / budget (at most outlay / budget <= 1) + weight x violation
        lower = bound if bounded and math.isfinite(bound) else math.nan
        floor = max(lower - 1.0, 0.0) / elastic_weight if math.isfinite(lower) else math.nan
        gap = (
            (chk.elastic_objective - lower) / max(abs(chk.elastic_objective), 1e-9)
            if math.isfinite(lower)
            else math.nan
        )
        proven = f"at least {floor:.4g} for any hedge within the budget" if math.isfinite(floor) else "no bound proven"
        message = (
            f"time limit: best partial hedge found ({best.source}, after {best.seconds:.1f} s), target rows' "
            f"excess {violation:.4g} in units of their levels (Greek {float(chk.greek_excess.sum()):.4g}, scenario "
            f"loss {chk.loss_excess:.4g}, ES {chk.es_excess:.4g}; {proven}), ES {chk.es:,.0f} against "
            f"{t.es_target:,.0f}, cost {chk.cost:,.2f}, outlay {chk.outlay:,.2f} of {t.budget:,.2f}; {why}"
        )
        sol = _solution(c, t, best.x, "time_limit", True, tuple(binding), start, message, chk.es, pnl)
        return replace(
            sol, gap=gap, violation=violation, violation_bound=floor, first_feasible_seconds=best.first,
            first_feasible_cpu_seconds=best.first_cpu,
        )  # fmt: skip
    gap = (chk.cost - bound) / max(abs(chk.cost), 1e-9) if math.isfinite(bound) else math.nan
    message = (
        f"time limit: best verified hedge ({best.source}, found after {best.seconds:.1f} s), cost {chk.cost:,.2f}, "
        f"lower bound {bound:,.2f} (gap {gap:.2%}), not proven optimal; {why}"
    )
    sol = _solution(c, t, best.x, "time_limit", False, (), start, message, chk.es, pnl)
    return replace(
        sol, lower_bound=bound, gap=gap, first_feasible_seconds=best.first, first_feasible_cpu_seconds=best.first_cpu
    )


def _milp(
    prog: dict[str, Any],
    integrality: FloatArray,
    bounds: Bounds,
    limit: float,
    gap: float,
    node_limit: int | None = None,
    presolve: bool = True,
    objective_bound: float | None = None,
) -> Any:
    """One ``scipy.optimize.milp`` (HiGHS) call on ``prog`` with the given integrality and bounds."""
    options: dict[str, Any] = {"time_limit": max(limit, 1e-3), "presolve": presolve, "mip_rel_gap": gap}
    if objective_bound is not None:
        options["objective_bound"] = objective_bound
    if node_limit is not None:
        options["node_limit"] = node_limit
    return milp(
        prog["objective"],
        integrality=integrality,
        bounds=bounds,
        constraints=prog["constraints"],
        options=options,
    )


def _lp_relaxation(prog: dict[str, Any]) -> Any:
    """The program's LP relaxation by ``scipy.optimize.linprog`` (HiGHS), which also returns the duals."""
    con = prog["constraints"][0]
    lo, hi = np.asarray(con.lb, dtype=float), np.asarray(con.ub, dtype=float)
    up, down = np.isfinite(hi), np.isfinite(lo)
    a_ub = vstack([con.A[up], -con.A[down]], format="csr")
    b_ub = np.concatenate([hi[up], -lo[down]])
    res = linprog(
        prog["objective"],
        A_ub=a_ub,
        b_ub=b_ub,
        bounds=np.column_stack([prog["bounds"].lb, prog["bounds"].ub]),
        method="highs",
    )
    res.reduced_cost = (prog["objective"] - a_ub.T @ res.ineqlin.marginals) if res.status == 0 else None
    res.a_ub, res.b_ub = a_ub, b_ub
    return res


def _windowed_milp(
    prog: dict[str, Any],
    n: int,
    limit: float,
    gap: float,
    window: float,
    screen: Sequence[int],
    state: dict,
    incumbent: Any = None,
    node_limit: int | None = None,
    box_limit: float = math.inf,
    cutoff: Any = None,
) -> tuple[Any, str]:
    """The round's MILP: LP relaxation, then small boxed MILPs around it, certified against the LP bound.

    Why: HiGHS spends seconds in root-node probing when 200 whole-contract variables have domains of up
    to 10^6 contracts, and a tenth of a second on a few dozen boxed ones. The box keeps the lines the
    relaxation uses, within ``[floor(x_lp) - window, ceil(x_lp) + window]``, plus the ``k`` unused lines
    with the smallest reduced costs (the LP's own ranking of which line would enter next) within
    ``[0, window]``; the other lines are fixed at zero. ``k`` runs through ``screen`` and then every line.
    A boxed optimum is feasible for the full MILP; once its cost is within ``gap`` of the LP bound, no
    whole-contract hedge is cheaper by more than that gap (the unrestricted MILP's own stopping rule).
    After each uncertified box, ``incumbent(x_boxed, lines, lo, hi, deadline, kept)`` (``solve_hedge``: keep a
    hedge meeting the full program within that box; returns whether one is kept). If no box is certified (or
    one costs over 50 x ``gap`` above the bound: whole contracts matter, the bound cannot certify), the
    unrestricted MILP runs with the time left (at most ``node_limit`` nodes), and in the solve's later rounds
    directly (``state``). The MILPs get at most ``box_limit`` seconds after the relaxation (the elastic
    rounds'). ``state["bound"]`` gets the round's lower bound (the LP optimum, or the unrestricted MILP's dual
    bound). Returns the result and how it was found.
    """
    start = time.perf_counter()

    def core(kept: float, lp: Any, left: float) -> Any:
        """The kept hedge's reduced-cost bounds, and within them its per-symbol Lagrangian core when that leaves at
        most ``CORE_SHARE`` of the lines (``(bounds, bound or None)``); computed once per kept cost and round."""
        # keyed by the relaxation object itself (held in ``state``), not its id: a later round's relaxation may
        # reuse a freed one's address
        if state.get("core_lp") is not lp or state.get("core_kept") != kept:
            bounds, bound = _reduced_cost_bounds(prog, lp, kept), None
            # at most a share of the time left: the MILP after it keeps the rest when the core does not pay
            got = _lagrangian_core(prog, lp, kept, bounds, max(min(CORE_TIME_SHARE * left, CORE_TIME_CAP), 1e-3))
            if got is not None and np.sum(np.asarray(got[0].ub)[:n] > 0) <= CORE_SHARE * n:
                bounds, bound = got
            state["core_lp"], state["core_kept"], state["core"] = lp, kept, (bounds, bound)
        return state["core"]

    def unrestricted(left: float, how: str, lp: Any = None) -> tuple[Any, str]:
        """The unrestricted MILP for ``left`` seconds from ``start``; with a kept hedge (``cutoff``), within the
        bounds every hedge costing at most as much has (``_reduced_cost_bounds``, and the per-symbol Lagrangian core
        when it is small) and that cost as HiGHS' objective bound: the same optimum, with far smaller domains for
        HiGHS' probing and branching."""
        kept = math.inf if cutoff is None else float(cutoff())
        if math.isfinite(kept):
            lp = _lp_relaxation(prog) if lp is None else lp
            if lp.status == 0:
                bounds, lagrangian = core(kept, lp, start + left - time.perf_counter())
                state["core_used"] = lagrangian is not None
                within = "the kept hedge's reduced-cost bounds"
                if lagrangian is not None:
                    state["bound"] = max(state.get("bound", -math.inf), min(lagrangian, kept))
                    lines = int(np.sum(np.asarray(bounds.ub)[:n] > 0))
                    within += f" and the per-symbol Lagrangian bound {lagrangian:,.2f} ({lines} lines left)"
                res = _milp(prog, prog["integrality"], bounds, max(start + left - time.perf_counter(), 1e-3), gap,
                            node_limit, objective_bound=kept * (1 + 1e-9) + 1e-9)  # fmt: skip
                if res.status in (0, 1):  # else (infeasible: only by round-off, the kept hedge is inside) as before
                    state["cutoff"] = True
                    _dual_bound(res)
                    return res, f"{how}, within {within}"
        res = _milp(prog, prog["integrality"], prog["bounds"], max(start + left - time.perf_counter(), 1e-3), gap,
                    node_limit)  # fmt: skip
        _dual_bound(res)
        return res, how

    def _dual_bound(res: Any) -> None:
        dual = getattr(res, "mip_dual_bound", None)
        if dual is not None and np.isfinite(dual):
            state["bound"] = max(state.get("bound", -math.inf), float(dual))

    if state.get("unrestricted"):
        return unrestricted(min(limit, box_limit), "unrestricted (as the round before)")
    lp = _lp_relaxation(prog)
    if lp.status != 0:  # the time the relaxation took is not given again
        left = max(limit, 1e-3)
        return unrestricted(min(left, box_limit), "unrestricted (relaxation failed)", lp)
    # the boxes and the unrestricted MILP: until the round's limit, and at most box_limit after the relaxation
    deadline = min(start + limit, time.perf_counter() + box_limit)
    bound = float(lp.fun)
    state["bound"] = bound
    x_lp = lp.x[:n]
    used = x_lp > 1e-9
    order = np.argsort(np.where(used, np.inf, lp.reduced_cost[:n]), kind="stable")
    lower, upper = np.array(prog["bounds"].lb, dtype=float), np.array(prog["bounds"].ub, dtype=float)
    lower[:n] = np.where(used, np.maximum(np.floor(x_lp) - window, lower[:n]), lower[:n])
    upper[:n] = np.minimum(upper[:n], np.where(used, np.ceil(x_lp) + window, window))
    n_unused = int((~used).sum())
    skipped_box = False
    for k in [*(k for k in screen if k < n_unused), n_unused]:
        if k == n_unused and k > max(screen, default=0) and cutoff is not None and state.get("incumbent"):
            kept = float(cutoff())
            if math.isfinite(kept) and core(kept, lp, deadline - time.perf_counter())[1] is not None:
                # a hedge is kept and its Lagrangian core is small: the unrestricted MILP within it instead of the
                # box of every line (the lines within ``window`` contracts of the LP optimum; 3,000 names: 1.5 CPU s
                # against 20); its optimum is the same within ``gap``, not always the same lines on ties
                skipped_box = True
                break
        keep = used.copy()
        keep[order[:k]] = True
        lo, hi = lower.copy(), upper.copy()
        hi[:n] = np.where(keep, hi[:n], 0.0)
        hi[n : 2 * n] = np.where(keep, hi[n : 2 * n], 0.0)
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        boxed = _milp(prog, prog["integrality"], Bounds(lo, hi), remaining, gap)
        if boxed.x is not None and boxed.status == 0 and boxed.fun - bound <= gap * max(abs(bound), 1e-9) + 1e-9:
            state["certified_box"] = (np.flatnonzero(keep), lo[:n], hi[:n])
            return boxed, (
                f"{int(keep.sum())} of {n} lines boxed within {window:g} contracts of the LP optimum, "
                f"certified by the LP bound ({(boxed.fun - bound) / max(abs(bound), 1e-9):.1e} relative)"
            )
        if incumbent is not None:
            # an uncertified box: a hedge that meets the full program, within the same box, for the time limit
            state["incumbent"] = incumbent(boxed.x, keep, lo[:n], hi[:n], deadline, state.get("incumbent"))
        if boxed.x is not None and boxed.status == 0 and boxed.fun - bound > 50 * gap * max(abs(bound), 1e-9):
            break  # whole contracts cost far more than the LP bound (small quantities, semi-continuous lines):
            # no box will be certified by it, solve the unrestricted MILP
    state["unrestricted"] = True  # later rounds of this solve go straight to the unrestricted MILP
    remaining = max(deadline - start, 1e-3)
    how = (
        "unrestricted (the box of every line skipped for the Lagrangian core)"
        if skipped_box
        else ("unrestricted (no box certified)")
    )
    return unrestricted(remaining, how, lp)


def _reduced_cost_bounds(prog: dict[str, Any], lp: Any, kept: float) -> Bounds:
    """The program's bounds tightened by reduced-cost fixing: every point of the program costing at most ``kept``.

    For any row multipliers ``m`` of the right sign (``lp``'s, from ``_lp_relaxation``: rows ``A x <= b``,
    ``m <= 0``) and ``d = c - A^T m``, every feasible ``x`` has ``c x >= m b + d x``, so ``c x <= kept`` gives
    ``d_j (x_j - l_j) <= kept - L`` (``d_j > 0``) and ``d_j (x_j - u_j) <= kept - L`` (``d_j < 0``) with
    ``L = m b + sum_k min(d_k l_k, d_k u_k)``, the Lagrangian bound. It holds for any such ``m`` (not only the
    optimal one), so the rounding of the LP's solution only weakens it; a margin of 1e-9 relative covers the
    rounding of the sums. Integer variables' bounds are rounded inwards."""
    lo, hi = np.array(prog["bounds"].lb, dtype=float), np.array(prog["bounds"].ub, dtype=float)
    m = np.minimum(np.asarray(lp.ineqlin.marginals, dtype=float), 0.0)
    d = prog["objective"] - lp.a_ub.T @ m
    terms = np.where(d > 0, d * lo, np.where(d < 0, d * hi, 0.0))
    if not np.all(np.isfinite(terms)):
        return prog["bounds"]
    lagrangian = float(m @ lp.b_ub) + float(terms.sum())
    slack = kept - lagrangian
    slack += 1e-9 * (abs(kept) + abs(float(m @ lp.b_ub)) + float(np.abs(terms).sum())) + 1e-9
    if slack < 0:
        return prog["bounds"]
    integer = np.asarray(prog["integrality"]) > 0
    up, down = d > 0, d < 0
    new_hi, new_lo = hi.copy(), lo.copy()
    new_hi[up] = np.minimum(hi[up], lo[up] + slack / d[up])
    new_lo[down] = np.maximum(lo[down], hi[down] + slack / d[down])
    new_hi = np.where(integer, np.floor(new_hi + 1e-9), new_hi)
    new_lo = np.where(integer, np.ceil(new_lo - 1e-9), new_lo)
    return Bounds(new_lo, np.maximum(new_hi, new_lo))


LOCAL_ROW_NONZEROS = 64  # a Greek row on at most this many lines is kept in ``_lagrangian_core``'s subproblems
CORE_SHARE = 0.25  # the Lagrangian core is used when it leaves at most this share of the lines (``_windowed_milp``)
CORE_TIME_SHARE, CORE_TIME_CAP = 0.25, 2.0  # the core's sub-MILP gets at most this share of the time left, and seconds


def _lagrangian_core(
    prog: dict[str, Any], lp: Any, kept: float, bounds: Bounds, limit: float, info: dict[str, Any] | None = None
) -> Any:
    """Bounds fixing at zero every line that no hedge of the hard program costing at most ``kept`` uses, and the
    lower bound that proves it (``(bounds, bound)``), or None when not applicable.

    Lagrangian relaxation by the LP relaxation's multipliers ``m`` (``lp`` from ``_lp_relaxation``, ``m <= 0`` on
    its rows ``A x <= b``) of every row but the local ones: the Greek rows on at most ``LOCAL_ROW_NONZEROS`` lines
    (one symbol's delta and gamma) and the semi-continuous rows of each line. For ``d = c - A_R^T m_R`` (``R``: the
    relaxed rows) every point of the program has ``c x >= m_R b_R + d x``, and ``d x`` separates into the groups of
    lines joined by local rows: each group's ``min d x`` over its local rows, whole contracts and minimum notional
    (semi-integer quantities: 0 or from the minimum contracts to the bound) is a small MILP, and zero without
    solving when the group has no line of negative ``d`` and its rows hold at zero. ``L = m_R b_R + sum of the
    groups' minima`` is a lower bound, far above the LP's when whole contracts cost the rounding of many lines (at
    3,000 names it equals HiGHS' root bound after its cuts). Every point costing at most ``kept`` has, in each
    group, ``d x_group - min <= kept - L``; a line whose smallest use (its minimum contracts at ``d_j``, the rest
    of its group at their most negative) exceeds the group's minimum by more is zero in all of them. Valid for
    any ``m`` of the right sign (rounding only weakens it); a margin covers the rounding of the sums. ``info`` (when
    given) gets what was found (the groups solved, the sub-MILP's status and time, the bound, the lines left)."""
    rec: dict[str, Any] = info if info is not None else {}
    con = prog["constraints"][0]
    A = csr_matrix(con.A)
    lo, hi = np.asarray(con.lb, dtype=float), np.asarray(con.ub, dtype=float)
    n_rows, nv = A.shape
    n = len(prog.get("min_contracts", ()))
    n_greek, n_semi = prog.get("n_greek_rows"), prog.get("n_semi_rows")
    if n_greek is None or n_semi is None or n == 0 or nv != 2 * n or lp.status != 0:
        rec["none"] = "no row layout or no relaxation"
        return None
    local = np.zeros(n_rows, dtype=bool)
    local[:n_greek] = np.diff(A.indptr[: n_greek + 1]) <= LOCAL_ROW_NONZEROS
    local[n_rows - n_semi :] = True
    up, down = np.isfinite(hi), np.isfinite(lo)
    relaxed = ~local[np.concatenate([np.flatnonzero(up), np.flatnonzero(down)])]
    m = np.where(relaxed, np.minimum(np.asarray(lp.ineqlin.marginals, dtype=float), 0.0), 0.0)
    d_all = prog["objective"] - lp.a_ub.T @ m
    if np.any(np.abs(d_all[n:]) > 1e-12):  # the relaxed rows do not move the binaries: else not applicable
        rec["none"] = "relaxed rows move the binaries"
        return None
    const = float(m @ lp.b_ub)
    d = d_all[:n]
    lb, ub = np.array(bounds.lb, dtype=float)[:n], np.array(bounds.ub, dtype=float)[:n]
    semi = np.asarray(prog["bounds"].ub, dtype=float)[n:] > 0  # lines under the minimum notional (binary z)
    need = np.where(semi, prog["min_contracts"], 1.0)
    dead = (lb <= 0) & (ub < need)  # cannot reach the minimum notional within the bounds: zero
    ub = np.where(dead, 0.0, ub)
    # the local Greek rows on the lines, and the groups of lines they join
    rows = np.flatnonzero(local[:n_greek])
    G = csr_matrix(A[rows][:, :n])
    g_lo, g_hi = lo[rows], hi[rows]
    pair = csr_matrix((np.ones(G.nnz), G.indices, G.indptr), shape=G.shape)
    graph = csr_matrix(
        vstack([hstack([csr_matrix((n, n)), pair.T]), hstack([pair, csr_matrix((rows.size, rows.size))])])
    )
    _, label = connected_components(graph, directed=False)
    group, row_group = label[:n], label[n:]
    # a group needs a solve when a line has negative d, or a line must be used, or a row does not hold at zero
    active = np.zeros(label.max() + 1, dtype=bool)
    active[group[(d < 0) & (ub > 0)]] = True
    active[group[lb > 0]] = True
    active[row_group[(g_lo > 1e-9) | (g_hi < -1e-9)]] = True
    best_of_group = np.zeros(active.size)  # the groups' minima (the solution's values: at least the true minima)
    minimum = 0.0  # a lower bound on their sum
    on = np.flatnonzero(active[group])
    rec.update(groups=int(active.size), active_groups=int(active.sum()), sub_lines=int(on.size),
               lines_in_bounds=int(np.sum(ub > 0)), local_rows=int(rows.size))  # fmt: skip
    if on.size:
        sub_rows = np.flatnonzero(active[row_group])
        integrality = np.where(semi[on] & (lb[on] <= 0) & (ub[on] > 0), 3, 1)
        sub_lo = np.where(integrality == 3, need[on], np.maximum(lb[on], np.where(lb[on] > 0, need[on], 0.0)))
        sub_lo = np.where(ub[on] > 0, sub_lo, 0.0)  # dead lines: zero
        sub_hi = np.maximum(ub[on], sub_lo)
        res = milp(
            d[on], integrality=integrality, bounds=Bounds(sub_lo, sub_hi),
            constraints=[LinearConstraint(G[sub_rows][:, on], g_lo[sub_rows], g_hi[sub_rows])],
            options={"time_limit": max(limit, 1e-3), "mip_rel_gap": 1e-9},
        )  # fmt: skip
        dual = getattr(res, "mip_dual_bound", None)
        rec.update(sub_status=int(res.status), sub_message=str(res.message), sub_dual=dual,
                   sub_fun=getattr(res, "fun", None), sub_limit=limit)  # fmt: skip
        if res.status != 0 or res.x is None or dual is None or not np.isfinite(dual):
            rec["none"] = "sub-MILP not solved"
            return None
        x = np.round(res.x)
        best_of_group = np.bincount(group[on], d[on] * x, active.size)
        minimum = min(float(dual), float(d[on] @ x))
    bound = const + minimum
    tol = 1e-9 * (abs(kept) + abs(const) + float(np.abs(best_of_group).sum())) + 1e-7
    room = kept - bound + tol
    rec.update(bound=bound, kept=kept, room=room, lp=float(lp.fun))
    if room < 0:  # the kept hedge below the bound: only by round-off; not applied
        rec["none"] = "kept hedge below the bound"
        return None
    negative = np.minimum(d * ub, 0.0)
    smallest_use = (
        np.bincount(group, negative, active.size)[group] - negative + np.where(d >= 0, d * np.maximum(need, lb), d * ub)
    )
    fixed = (ub > 0) & (smallest_use - best_of_group[group] > room) & (lb <= 0)
    if info is not None:
        rec["excess"], rec["free"] = smallest_use - best_of_group[group], (ub > 0) & (lb <= 0)
    fixed |= dead & (np.asarray(bounds.ub, dtype=float)[:n] > 0)
    new_lo, new_hi = np.array(bounds.lb, dtype=float), np.array(bounds.ub, dtype=float)
    new_hi[:n] = np.where(fixed, 0.0, new_hi[:n])
    new_hi[n:] = np.where(fixed, 0.0, new_hi[n:])
    new_lo[n:] = np.minimum(new_lo[n:], new_hi[n:])
    rec["lines_left"] = int(np.sum(new_hi[:n] > 0))
    return Bounds(new_lo, new_hi), bound


def _restricted_milp(
    c: HedgeCandidates,
    t: HedgeTargets,
    lines: IntArray,
    lo: FloatArray,
    hi: FloatArray,
    limit: float,
    gap: float,
    loss_rows: Sequence[int],
    cuts: Sequence[FloatArray],
    rows_per_round: int,
    first: FloatArray | None = None,
) -> FloatArray | None:
    """The cheapest hedge on ``lines`` only (quantities within ``[lo, hi]``) meeting every row of the full program.

    The same lazy rows as ``solve_hedge`` (starting from its ``loss_rows`` and ES ``cuts``), on the few lines
    of a box: the program keeps only the Greek rows those lines move (a row they do not move must already be
    within its level, else None), each MILP round is small, every scenario and the exact ES are checked after
    it and the violated ones added, until none is. A hedge it returns meets the full program (the rows of
    ``check_hedge``). None when the box has no such hedge or the time runs out first. Returns contracts per
    candidate (zero off ``lines``)."""
    deadline = time.perf_counter() + limit
    G = csr_matrix(c.greeks)[:, lines] if issparse(c.greeks) else csr_matrix(np.asarray(c.greeks)[:, lines])
    touched = np.diff(G.indptr) > 0
    if np.any(~touched & (np.abs(t.exposure) > t.warn_level)):
        return None  # a Greek row over its level that none of the lines moves
    sub = HedgeCandidates(
        tuple(c.labels[i] for i in lines) if c.labels else (), c.side[lines], G[touched],
        c.scenario_pnl[:, lines], c.cost[lines], c.premium[lines], c.notional[lines], c.max_contracts[lines],
    )  # fmt: skip
    names = tuple(n for n, on in zip(t.greek_names, touched, strict=True) if on)
    ts = replace(t, greek_names=names, exposure=t.exposure[touched], warn_level=t.warn_level[touched])
    es_H, es_book = sub.scenario_pnl[t.es_rows], t.book_pnl[t.es_rows]
    rows, cut_list = [int(i) for i in loss_rows], list(cuts)
    scale_loss, scale_es = max(t.loss_cap, 1.0), max(t.es_target, 1.0)
    tol_loss, tol_es = 1e-9 * scale_loss + 1e-7, 1e-9 * scale_es + 1e-7
    k, cache = lines.size, {}
    xs = None if first is None else first[lines]  # a hedge of the box already solved: its violations first
    es_rounds = 0  # rounds whose hedge missed the exact ES: from ES_EXACT_AFTER on, the ES row is exact
    while deadline > time.perf_counter():
        if xs is None:
            prog = _program(sub, ts, np.array(rows, dtype=np.intp), cut_list, es_H, es_book, False, 1.0, cache)
            if es_rounds >= ES_EXACT_AFTER:
                prog = _with_exact_es(prog, es_H, es_book, t.es_target, t.es_confidence)
            lower, upper = np.array(prog["bounds"].lb, dtype=float), np.array(prog["bounds"].ub, dtype=float)
            lower[:k], upper[:k] = np.maximum(lower[:k], lo[lines]), np.minimum(upper[:k], hi[lines])
            if (left := deadline - time.perf_counter()) <= 0:  # the time left after building the program
                return None
            res = _milp(prog, prog["integrality"], Bounds(lower, upper), left, gap)
            if res.x is None:
                return None
            xs = np.round(res.x[:k])
        over = -(t.book_pnl + sub.scenario_pnl @ xs) - t.loss_cap
        new = [int(i) for i in np.argsort(-over, kind="stable")[:rows_per_round] if over[i] > tol_loss]
        new = [i for i in new if i not in set(rows)]
        es_pnl = es_book + es_H @ xs
        es_bad = bool(t.es_rows.size) and empirical_es(es_pnl, t.es_confidence) > t.es_target + tol_es
        if es_bad:
            cut_list.append(_tail_weights(-es_pnl, t.es_confidence))
            es_rounds += 1
        rows += new
        if not new and not es_bad:
            x = np.zeros(c.n)
            x[lines] = xs
            return x
        xs = None
    return None


ES_EXACT_AFTER = 3  # ``_restricted_milp``: rounds of ES cuts before the exact (Rockafellar-Uryasev) ES row
# ``solve_hedge``'s LP rounds: rounds of ES cuts before the exact ES row (the cuts until then serve the MILP rounds too:
# 500-name ``core_equity`` converges in 15 LP rounds, with the exact row after 3 its MILP rounds tail; the 3,000-name
# one had not after 40)
ES_EXACT_LP_AFTER = 20


def _with_exact_es(
    prog: dict[str, Any], es_H: FloatArray, es_book: FloatArray, target: float, confidence: float
) -> dict[str, Any]:
    """``prog`` (hard program, no slacks) with the exact 97.5 % ES row in Rockafellar-Uryasev form: variables ``a``
    (free) and ``u_s >= 0`` per ES scenario, rows ``u_s >= L_s(x) - a`` (``L_s = -(P_s + H_s x)``, each scaled by
    its largest coefficient) and ``a + sum_s u_s / m <= target`` (``m = (1 - c) N``, as ``_tail_weights``).

    The minimum over ``a`` of ``a + sum_s (L_s - a)^+ / m`` is the largest ``w . L`` over ``0 <= w_s <= 1/m``,
    ``sum w = 1`` (its LP dual), the ES of ``empirical_es``: so the row holds exactly when the ES is within the
    target, where the cuts' rows (one tail set each) can keep a MILP's hedge just over it round after round. For a
    program of a few dozen lines (``_restricted_milp``): ``N`` rows of ``lines + 2`` entries."""
    con = prog["constraints"][0]
    A = csr_matrix(con.A)
    n_rows, nv = A.shape
    N, k = es_H.shape
    m = (1.0 - confidence) * N
    if abs(m - round(m)) < 1e-9:
        m = float(round(m))
    # u_s rows: -H_s x - a - u_s <= P_s
    tail = hstack(
        [csr_matrix(-es_H), csr_matrix((N, nv - k)), csr_matrix(-np.ones((N, 1))), -identity(N, format="csr")],
        format="csr",
    )
    scale = 1.0 / np.maximum(abs(tail).max(axis=1).toarray().ravel(), 1e-12)
    tail = csr_matrix(tail.multiply(scale[:, None]))
    es_row = csr_matrix(np.concatenate([np.zeros(nv), [1.0], np.full(N, 1.0 / max(m, 1.0))])[None, :])
    es_scale = 1.0 / max(1.0, 1.0 / max(m, 1.0))
    A_new = vstack([hstack([A, csr_matrix((n_rows, N + 1))]), tail, es_row * es_scale], format="csr")
    lb = np.concatenate([np.asarray(con.lb, dtype=float), np.full(N + 1, -np.inf)])
    ub = np.concatenate([np.asarray(con.ub, dtype=float), es_book * scale, [target * es_scale]])
    b = prog["bounds"]
    return {
        **prog,
        "objective": np.concatenate([prog["objective"], np.zeros(N + 1)]),
        "integrality": np.concatenate([prog["integrality"], np.zeros(N + 1)]),
        "bounds": Bounds(
            np.concatenate([np.asarray(b.lb, dtype=float), [-np.inf], np.zeros(N)]),
            np.concatenate([np.asarray(b.ub, dtype=float), np.full(N + 1, np.inf)]),
        ),
        "constraints": [LinearConstraint(A_new, lb, ub)],
    }


def _exact_es_weights(prog: dict[str, Any], n_es: int) -> FloatArray | None:
    """The tail weights ``w`` (``0 <= w_s <= 1/m``, ``sum w = 1``) of the exact ES row of ``prog``
    (``_with_exact_es``) at its LP optimum: the duals of the rows ``u_s >= L_s(x) - a`` over their sum (by LP
    duality, the cut ``w . L(x) <= target`` then gives the same LP optimum as the exact row). None when the LP is not
    solved or the ES row is not binding."""
    lp = _lp_relaxation(prog)
    if lp.status != 0:
        return None
    con = prog["constraints"][0]
    n_rows = con.A.shape[0]
    up = np.isfinite(np.asarray(con.ub, dtype=float))
    first = n_rows - n_es - 1  # the u_s rows, then the ES row (all upper rows)
    at = np.cumsum(up)[first : first + n_es] - 1  # their positions among the upper rows (``a_ub``)
    # ``scipy``'s marginals of upper rows are <= 0; the rows are scaled (their ``a`` coefficient -1 before), so
    # the unscaled rows' multipliers are -marginal x that scale
    a_col = con.A.shape[1] - n_es - 1
    row_scale = np.abs(csr_matrix(con.A)[first : first + n_es, [a_col]].toarray().ravel())
    mu = np.maximum(-np.asarray(lp.ineqlin.marginals, dtype=float)[at], 0.0) * row_scale
    total = float(mu.sum())
    return mu / total if total > 0 else None


def _failed(c: HedgeCandidates, status: str, start: float, message: str) -> HedgeSolution:
    return HedgeSolution(np.zeros(c.n), status, True, ("solver",), 0.0, 0.0, time.perf_counter() - start, message)


def _no_candidates(start: float) -> HedgeSolution:
    return HedgeSolution(
        np.zeros(0), "no_candidates", True, ("no_liquid_candidate",), 0.0, 0.0, time.perf_counter() - start,
        "no liquid candidate (empty chain, zero bids or spreads above the configured width)",
    )  # fmt: skip


def _solution(
    c: HedgeCandidates,
    t: HedgeTargets,
    x: FloatArray,
    status: str,
    partial: bool,
    binding: tuple[str, ...],
    start: float,
    message: str,
    es: float,
    pnl: FloatArray,
) -> HedgeSolution:
    after = t.exposure + c.greeks @ x
    viol = {
        name: float(abs(a) - w) for name, a, w in zip(t.greek_names, after, t.warn_level, strict=True) if abs(a) > w
    }
    return HedgeSolution(
        quantity=x,
        status=status,
        partial=partial,
        binding=binding,
        cost=float(c.cost @ x),
        outlay=float((c.premium + c.cost) @ x),
        solve_seconds=time.perf_counter() - start,
        message=message,
        model_es=float(es),
        model_worst_loss=float(-pnl.min()) if pnl.size else 0.0,
        violations=viol,
    )


def _nonzero_csr(rows: IntArray, cols: IntArray, values: FloatArray, shape: tuple[int, int]) -> csr_matrix:
    """``csr_matrix`` with ``values`` at ``(rows, cols)`` (no repeated cell), zeros dropped and indices sorted:
    the same arrays ``csr_matrix`` gives for the dense matrix, without the dense matrix."""
    out = csr_matrix((np.asarray(values, dtype=float), (rows, cols)), shape=shape)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _program(
    c: HedgeCandidates,
    t: HedgeTargets,
    loss_rows: IntArray,
    cuts: list[FloatArray],
    es_H: FloatArray,
    es_book: FloatArray,
    elastic: bool,
    weight: float,
    cache: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """Variables ``[x (n), z (n)]`` plus, when ``elastic``, one slack per Greek row, one for the scenario
    losses and one for ES (each in units of its row's level), and the rows.

    Rows in order: Greek upper and lower, scenario losses, ES cuts, budget, semi-continuous; each scaled by its
    largest coefficient. The rows that do not depend on ``loss_rows`` and ``cuts`` (scaled), the objective and
    the bounds are kept in ``cache`` (per ``elastic`` and ``weight``) for the next call with the same ``c`` and
    ``t``: the same program, built once per solve instead of once per round."""
    n = c.n
    n_g = t.exposure.size
    n_slack = n_g + 2 if elastic else 0
    nv = 2 * n + n_slack

    def row(a_x: Any, lo: FloatArray, hi: FloatArray, slack: csr_matrix | None = None) -> tuple[Any, Any, Any]:
        m = a_x.shape[0]
        parts = [csr_matrix(a_x), csr_matrix((m, n))]
        if elastic:
            parts.append(slack if slack is not None else csr_matrix((m, n_slack)))
        return hstack(parts), lo, hi

    def slack_column(m: int, column: int, value: FloatArray | float) -> csr_matrix:
        """``(m, n_slack)`` with ``value`` in ``column`` of every row (the other slacks 0)."""
        return _nonzero_csr(np.arange(m), np.full(m, column), np.broadcast_to(value, (m,)), (m, n_slack))

    def scaled(blocks: list[tuple[Any, FloatArray, FloatArray]]) -> tuple[csr_matrix, FloatArray, FloatArray]:
        # each row scaled by its largest coefficient (money rows reach 1e6; HiGHS presolves far faster scaled)
        A = vstack([b[0] for b in blocks], format="csr")
        scale = 1.0 / np.maximum(abs(A).max(axis=1).toarray().ravel(), 1e-12)
        A = csr_matrix(A.multiply(scale[:, None]))
        return A, np.concatenate([b[1] for b in blocks]) * scale, np.concatenate([b[2] for b in blocks]) * scale

    key = ("static", elastic, weight)
    static = cache.get(key) if cache is not None else None
    small = np.flatnonzero(c.notional < t.min_notional)
    if static is None:
        # Greeks: |g + G x| <= w (upper rows subtract the slack, lower rows add it); G is sparse (one symbol a line)
        G = csr_matrix(c.greeks)
        gs = _nonzero_csr(np.arange(n_g), np.arange(n_g), t.warn_level, (n_g, n_slack)) if elastic else None
        top = [
            row(G, np.full(n_g, -np.inf), t.warn_level - t.exposure, None if gs is None else -gs),
            row(G, -t.warn_level - t.exposure, np.full(n_g, np.inf), gs),
        ]
        # budget (hard)
        bottom: list[tuple[Any, FloatArray, FloatArray]] = [
            (
                csr_matrix(np.concatenate([c.premium + c.cost, np.zeros(nv - n)])[None, :]),
                np.array([-np.inf]),
                np.array([t.budget]),
            )
        ]
        # semi-continuous, only for lines whose single contract is below the minimum notional (one contract of
        # the others already meets it, so their binary is fixed at 0 and unused): notional x - min z >= 0,
        # x - U z <= 0
        if small.size:
            sel = csr_matrix((np.ones(small.size), (np.arange(small.size), small)), shape=(small.size, n))
            rest = csr_matrix((small.size, n_slack))
            k = small.size
            bottom.append(
                (hstack([sel.multiply(c.notional[None, :]), -t.min_notional * sel, rest]), np.zeros(k),
                 np.full(k, np.inf))
            )  # fmt: skip
            bottom.append(
                (hstack([sel, -sel.multiply(c.max_contracts[None, :]), rest]), np.full(k, -np.inf), np.zeros(k))
            )
        z_upper = np.zeros(n)
        z_upper[small] = 1.0
        cost = c.cost / max(t.budget, 1.0) if elastic else c.cost
        static = {
            "top": scaled(top),
            "bottom": scaled(bottom),
            "objective": np.concatenate([cost, np.zeros(n), np.full(n_slack, weight)]),
            "bounds": Bounds(np.zeros(nv), np.concatenate([c.max_contracts, z_upper, np.full(n_slack, np.inf)])),
            "integrality": np.concatenate([np.ones(2 * n), np.zeros(n_slack)]),
        }
        if cache is not None:
            cache[key] = static
    middle = []
    # scenario losses: H_s x + cap_scale * s_loss >= -cap - P_s
    if loss_rows.size:
        ls = slack_column(loss_rows.size, n_g, max(t.loss_cap, 1.0)) if elastic else None
        middle.append(
            row(c.scenario_pnl[loss_rows], -t.loss_cap - t.book_pnl[loss_rows], np.full(loss_rows.size, np.inf), ls)
        )
    # ES cuts: w . (-(P + H x)) - es_scale * s_es <= target
    if cuts:
        W = np.vstack(cuts)
        es_s = slack_column(W.shape[0], n_g + 1, -max(t.es_target, 1.0)) if elastic else None
        middle.append(row(-(W @ es_H), np.full(W.shape[0], -np.inf), t.es_target + W @ es_book, es_s))
    parts = [static["top"], *([scaled(middle)] if middle else []), static["bottom"]]
    A = csr_matrix(vstack([p[0] for p in parts], format="csr"))
    return {
        "objective": static["objective"],
        "integrality": static["integrality"],
        "bounds": static["bounds"],
        "constraints": [
            LinearConstraint(A, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]))
        ],
        # the rows of one line or one line's Greek rows (``_lagrangian_core``): the Greek rows (first 2 n_g) and the
        # semi-continuous rows (last); the smallest nonzero quantity of each line (the minimum notional)
        "n_greek_rows": 2 * n_g,
        "n_semi_rows": 2 * int(small.size),
        "min_contracts": np.where(
            c.notional < t.min_notional, np.ceil(t.min_notional / np.maximum(c.notional, 1e-300) * (1 - 1e-6)), 1.0
        ),
        "greek_slack": slice(2 * n, 2 * n + n_g),
        "loss_slack": 2 * n + n_g,
        "es_slack": 2 * n + n_g + 1,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# revaluation of candidates and of the hedged book
# ----------------------------------------------------------------------------------------------


def one_symbol_per_position(portfolio: Portfolio) -> tuple[Portfolio, IntArray]:
    """The same positions, each on its own copy of its underlying (so per-symbol P&L is per-position P&L).

    Returns the copy and, per position, the column of its underlying in the original ``symbols``.
    """
    col = np.asarray(portfolio.symbol_index)
    n = portfolio.n_positions
    return (
        Portfolio(
            symbols=tuple(f"{portfolio.symbols[j]}#{i}" for i, j in enumerate(col)),
            spot=np.asarray(portfolio.spot)[col],
            symbol_index=np.arange(n, dtype=np.intp),
            quantity=portfolio.quantity,
            multiplier=portfolio.multiplier,
            is_option=portfolio.is_option,
            is_call=portfolio.is_call,
            strike=portfolio.strike,
            time_years=portfolio.time_years,
            implied_vol=portfolio.implied_vol,
            rate=portfolio.rate,
            dividend_yield=portfolio.dividend_yield,
            is_american=portfolio.is_american,
            position_id=portfolio.position_id,
        ),
        col,
    )


#: A scenario block: a ``ScenarioSet`` or stress scenarios under the stress layer's vol rule (``RuleScenarios``,
#: revalued per portfolio with the stress engine's method).
Scenarios = ScenarioSet | RuleScenarios


def engine_inputs(
    portfolio: Portfolio, scenarios: Scenarios, american: AmericanMethod
) -> tuple[ScenarioSet, AmericanMethod]:
    """The ``ScenarioSet`` and American method to revalue ``portfolio`` in ``scenarios`` with."""
    if isinstance(scenarios, RuleScenarios):
        return scenarios.scenario_set(portfolio), scenarios.american
    return scenarios, american


def columns_of(scenarios: Scenarios, col: IntArray) -> Scenarios:
    """The scenario set with its symbol columns gathered by ``col`` (per-symbol arrays only)."""
    if isinstance(scenarios, RuleScenarios):
        return scenarios.columns(col)

    def pick(a: Any) -> Any:
        return a[:, col] if isinstance(a, np.ndarray) and a.ndim == 2 else a

    if callable(scenarios.vol_shift_abs):
        raise ValueError("per-position revaluation needs array vol shifts, not a callable")
    return ScenarioSet(
        spot_shock_rel=scenarios.spot_shock_rel[:, col],
        vol_scale=pick(scenarios.vol_scale),
        vol_shift_abs=pick(scenarios.vol_shift_abs),
        vol_skew=pick(scenarios.vol_skew),
        rate_shift_abs=scenarios.rate_shift_abs,
    )


def per_position_pnl(
    portfolio: Portfolio, scenarios: Scenarios, horizon_days: float = 0.0, american: AmericanMethod = "exact"
) -> FloatArray:
    """Full-revaluation P&L ``(n_scenarios, n_positions)`` of every position on its own (one engine call)."""
    if portfolio.n_positions == 0 or scenarios.n_scenarios == 0:
        return np.zeros((scenarios.n_scenarios, portfolio.n_positions))
    split, col = one_symbol_per_position(portfolio)
    sc, method = engine_inputs(split, columns_of(scenarios, col), american)
    res = evaluate(split, sc, horizon_days, american=method, per_symbol=True)
    assert res.by_symbol is not None
    return res.by_symbol


def _split_pnl(split: Portfolio, scenarios: Scenarios, horizon_days: float, american: AmericanMethod) -> FloatArray:
    """``per_position_pnl`` of the portfolio whose ``one_symbol_per_position`` is ``split``, in ``scenarios`` already
    on ``split``'s columns."""
    if split.n_positions == 0 or scenarios.n_scenarios == 0:
        return np.zeros((scenarios.n_scenarios, split.n_positions))
    sc, method = engine_inputs(split, scenarios, american)
    res = evaluate(split, sc, horizon_days, american=method, per_symbol=True)
    assert res.by_symbol is not None
    return res.by_symbol


def scenario_pnl(
    portfolio: Portfolio, scenarios: Scenarios, horizon_days: float = 0.0, american: AmericanMethod = "exact"
) -> FloatArray:
    """The book's full-revaluation P&L per scenario (``evaluate``); empty for an empty scenario set."""
    if scenarios.n_scenarios == 0:
        return np.zeros(0)
    sc, method = engine_inputs(portfolio, scenarios, american)
    return evaluate(portfolio, sc, horizon_days, american=method).pnl


def combine(book: Portfolio, lines: Portfolio) -> Portfolio:
    """One portfolio of ``book``'s positions then ``lines``' (symbols: the book's, then new ones in order)."""
    symbols = list(book.symbols)
    spot = list(np.asarray(book.spot))
    known = set(symbols)
    for s, v in zip(lines.symbols, np.asarray(lines.spot), strict=True):
        if s not in known:
            known.add(s)
            symbols.append(s)
            spot.append(v)
    where = {s: i for i, s in enumerate(symbols)}
    line_idx = np.array([where[lines.symbols[j]] for j in lines.symbol_index], dtype=np.intp)

    return concatenated(
        [book, lines],
        symbols,
        spot,
        np.concatenate([book.symbol_index, line_idx]),
        tuple(book.position_id or ()) + tuple(lines.position_id or ()),
    )


def appended_lines(hedged: Portfolio, n_book: int) -> Portfolio:
    """The positions after the first ``n_book`` of ``hedged`` (``combine(book, lines)``: the lines), on ``hedged``'s
    symbols and spots, so that they are revalued in the hedged book's scenario columns as ``hedged`` holds them."""
    return _subset(hedged, np.arange(n_book, hedged.n_positions, dtype=np.intp))


def hedged_pnl(
    book_pnl: FloatArray,
    hedged: Portfolio,
    n_book: int,
    blocks: Sequence[tuple[Scenarios, float]],
    american: AmericanMethod = "exact",
) -> FloatArray:
    """``scenario_pnl`` of ``hedged`` (``combine(book, lines)``) over ``blocks`` (stacked), given the book's
    (``book_pnl``, the same blocks): the book's plus the lines' own full revaluation in the same scenarios.

    The engine revalues every position on its own (an option's exercise boundaries and early-exercise grid are its
    own bits whatever else the portfolio holds; a ``RuleScenarios`` block shocks each option by its own inputs), so
    this is the hedged book's revaluation with its positions summed in another grouping: equal to rounding, without
    revaluing the book's positions again."""
    lines = appended_lines(hedged, n_book)
    parts = [scenario_pnl(lines, sc, h, american) for sc, h in blocks]
    return book_pnl + (np.concatenate(parts) if parts else np.zeros(0))


def _same_rule_rows(a: RuleScenarios, b: RuleScenarios) -> BoolArray:
    """Per scenario, whether ``a``'s and ``b``'s shocks are the same bits (spot, name vol move, vol multiplier, shift
    and skew, rate shift; same rule and method), so that a position moves alike in both."""
    n = a.n_scenarios
    if b.n_scenarios != n or a.n_symbols != b.n_symbols or a.rule != b.rule or a.american != b.american:
        return np.zeros(n, dtype=bool)

    def bits(x: FloatArray) -> NDArray[np.uint64]:
        return np.ascontiguousarray(np.asarray(x, dtype=np.float64)).reshape(n, -1).view(np.uint64)

    fields = ("spot_log_shock", "name_log_vol_move", "vol_multiplier", "vol_shift", "vol_skew", "rate_shift")
    return np.all([np.all(bits(getattr(a, f)) == bits(getattr(b, f)), axis=1) for f in fields], axis=0)


def hedged_rule_pnl(
    book_pnl: FloatArray, book_block: RuleScenarios, hedged: Portfolio, n_book: int, hedged_block: RuleScenarios
) -> FloatArray:
    """``scenario_pnl(hedged, hedged_block, 0.0)`` given the book's P&L ``book_pnl`` in its own block ``book_block``:
    in the scenarios whose shocks are ``book_block``'s bit for bit (e.g. those without idiosyncratic moves) the book's
    P&L plus the lines' own revaluation (as ``hedged_pnl``), the other scenarios revalued in full.

    Only with ``american="exact"``: an early-exercise grid spans its option's scenarios, so under ``"eep_grid"`` a
    subset of the rows would build other grids (and few rows switch to the exact engine); there the whole block is
    revalued."""
    if hedged_block.american != "exact":
        return scenario_pnl(hedged, hedged_block, 0.0)
    same = _same_rule_rows(book_block, hedged_block)
    out = np.empty(hedged_block.n_scenarios)
    moved, kept = np.flatnonzero(~same), np.flatnonzero(same)
    if moved.size:
        out[moved] = scenario_pnl(hedged, hedged_block.rows(moved) if kept.size else hedged_block, 0.0)
    if kept.size:
        lines = appended_lines(hedged, n_book)
        out[kept] = book_pnl[kept] + scenario_pnl(lines, hedged_block.rows(kept) if moved.size else hedged_block, 0.0)
    return out


def with_quantity(p: Portfolio, quantity: ArrayLike) -> Portfolio:
    """``p`` with new quantities (same positions)."""
    from dataclasses import replace

    return replace(p, quantity=np.asarray(quantity, dtype=np.float64))


def tail_es(pnl: ArrayLike, confidence: float) -> float:
    """Acerbi-Tasche expected shortfall (positive = loss) of a P&L sample; equals the RU minimum."""
    from risk_pipeline.quant.var import empirical_var_es

    return empirical_var_es(pnl, confidence)[1]


# ----------------------------------------------------------------------------------------------
# capital preservation: beta hedge and CPPI
# ----------------------------------------------------------------------------------------------


def beta_hedge_quantity(
    beta_weighted_dollar_delta: float, target_dollar_delta: float, hedge_dollar_delta_per_unit: float
) -> int:
    """Whole units of the hedge instrument taking beta-weighted dollar delta to the target (signed; < 0 sells).

    ``hedge_dollar_delta_per_unit`` is the instrument's beta-weighted dollar delta per unit (index: spot x
    multiplier; a -1x ETF: -price). Rounded to the nearest unit.
    """
    if hedge_dollar_delta_per_unit == 0.0:
        raise ValueError("the hedge instrument has no dollar delta")
    return round((target_dollar_delta - beta_weighted_dollar_delta) / hedge_dollar_delta_per_unit)


@dataclass(frozen=True)
class CppiTarget:
    """CPPI (Black & Jones 1987; Perold & Sharpe 1988): floor, cushion, target risky exposure and the scale."""

    nav: float
    peak_nav: float
    floor: float
    cushion: float
    multiplier: float
    target_exposure: float
    risky_exposure: float
    scale: float


def cppi_target(
    nav: float, peak_nav: float, floor_fraction: float, multiplier: float, risky_exposure: float
) -> CppiTarget:
    """Floor = floor_fraction x peak NAV; target = multiplier x max(NAV - floor, 0); scale = target / current."""
    floor = floor_fraction * peak_nav
    cushion = max(nav - floor, 0.0)
    target = multiplier * cushion
    scale = target / risky_exposure if risky_exposure > 0.0 else 1.0
    return CppiTarget(nav, peak_nav, floor, cushion, multiplier, target, risky_exposure, scale)


# ----------------------------------------------------------------------------------------------
# volatility index (Cboe VIX white paper)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryVariance:
    """One expiry's contribution: T (years), minutes to expiry, forward, K0, variance, strikes used."""

    minutes: float
    t_years: float
    rate: float
    forward: float
    k0: float
    variance: float
    n_strikes: int


def expiry_variance(
    strikes: ArrayLike,
    call_bid: ArrayLike,
    call_ask: ArrayLike,
    put_bid: ArrayLike,
    put_ask: ArrayLike,
    minutes_to_expiry: float,
    rate: float,
) -> ExpiryVariance:
    """``sigma^2 = 2/T sum dK_i / K_i^2 e^{RT} Q(K_i) - 1/T (F / K0 - 1)^2`` (white paper, equation 2).

    Strikes ascending with both quotes; ``F = K* + e^{RT}(C - P)`` at the strike of the smallest
    |call mid - put mid|; ``K0`` is the first strike at or below F; OTM puts below K0 and calls above,
    each side stopping after two consecutive zero bids and skipping zero bids; Q(K0) averages the put
    and call mids; dK is half the distance between the neighbours (one-sided at the ends).
    """
    k = np.asarray(strikes, dtype=float)
    cb, ca, pb, pa = (np.asarray(a, dtype=float) for a in (call_bid, call_ask, put_bid, put_ask))
    if k.size < 2 or np.any(np.diff(k) <= 0):
        raise ValueError("need at least two ascending strikes")
    t = minutes_to_expiry / MINUTES_PER_YEAR
    growth = math.exp(rate * t)
    cm, pm = (cb + ca) / 2.0, (pb + pa) / 2.0
    both = (cb > 0) & (pb > 0)
    pool = np.flatnonzero(both) if both.any() else np.arange(k.size)
    star = pool[np.argmin(np.abs(cm[pool] - pm[pool]))]
    forward = k[star] + growth * (cm[star] - pm[star])
    below = np.flatnonzero(k <= forward)
    i0 = int(below[-1]) if below.size else 0
    k0 = k[i0]
    use = np.zeros(k.size, dtype=bool)
    q = np.zeros(k.size)
    use[i0], q[i0] = True, (cm[i0] + pm[i0]) / 2.0
    for step, bid, mid in ((-1, pb, pm), (1, cb, cm)):
        zeros = 0
        i = i0 + step
        while 0 <= i < k.size:
            if bid[i] <= 0.0:
                zeros += 1
                if zeros == 2:
                    break
            else:
                zeros = 0
                use[i], q[i] = True, mid[i]
            i += step
    ks = k[use]
    qs = q[use]
    dk = np.empty(ks.size)
    if ks.size == 1:
        dk[:] = np.diff(k).min()
    else:
        dk[1:-1] = (ks[2:] - ks[:-2]) / 2.0
        dk[0] = ks[1] - ks[0]
        dk[-1] = ks[-1] - ks[-2]
    variance = 2.0 / t * float(np.sum(dk / ks**2 * growth * qs)) - (forward / k0 - 1.0) ** 2 / t
    return ExpiryVariance(minutes_to_expiry, t, rate, float(forward), float(k0), variance, int(ks.size))


def vix_from_variances(near: ExpiryVariance, nxt: ExpiryVariance) -> float:
    """30-day volatility (decimal) from the two expiries' variances (white paper, equation 3)."""
    n1, n2 = near.minutes, nxt.minutes
    if n2 == n1:
        var30 = near.t_years * near.variance * MINUTES_PER_YEAR / n1
    else:
        w1 = (n2 - MINUTES_30_DAYS) / (n2 - n1)
        w2 = (MINUTES_30_DAYS - n1) / (n2 - n1)
        var30 = (near.t_years * near.variance * w1 + nxt.t_years * nxt.variance * w2) * MINUTES_PER_YEAR
        var30 /= MINUTES_30_DAYS
    return math.sqrt(max(var30, 0.0))


def bracketing_expiries(minutes: ArrayLike, min_minutes: float = 7 * 1440.0) -> tuple[int, int] | None:
    """Indices of the near (last at or before 30 days) and next (first after) expiries, both beyond
    ``min_minutes``; the two nearest when none brackets 30 days; None with fewer than two."""
    m = np.asarray(minutes, dtype=float)
    ok = np.flatnonzero(m >= min_minutes)
    if ok.size < 2:
        return None
    order = ok[np.argsort(m[ok])]
    before = [i for i in order if m[i] <= MINUTES_30_DAYS]
    after = [i for i in order if m[i] > MINUTES_30_DAYS]
    if before and after:
        return int(before[-1]), int(after[0])
    return (int(order[0]), int(order[1])) if not before else (int(before[-2]), int(before[-1]))


def finite(values: Mapping[str, float]) -> dict[str, float | None]:
    """``values`` with NaN / inf as None (JSON and NULL-friendly)."""
    return {k: (float(v) if v is not None and math.isfinite(float(v)) else None) for k, v in values.items()}


# ----------------------------------------------------------------------------------------------
# building the program's inputs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GreekRows:
    """The constrained exposures: net delta and gamma (shares) per symbol, book dollar delta, book vega."""

    delta_symbols: tuple[str, ...]
    gamma_symbols: tuple[str, ...]
    dollar_delta: bool = True
    vega: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return (
            tuple(f"net_delta_shares:{s}" for s in self.delta_symbols)
            + tuple(f"gamma_shares:{s}" for s in self.gamma_symbols)
            + (("dollar_delta",) if self.dollar_delta else ())
            + (("vega_per_vol_point",) if self.vega else ())
        )

    def matrix(
        self,
        symbols: Sequence[str],
        delta: FloatArray,
        gamma: FloatArray,
        dollar_delta: FloatArray,
        vega_per_vol_point: FloatArray,
    ) -> csr_array:
        """``(n_rows, n_positions)`` sparse: each position's contribution to every row (sum over positions =
        exposure). A position touches its own symbol's delta and gamma rows and the two book rows only, so
        the matrix holds about 4 entries per position (zeros dropped, indices sorted: the same arrays as
        ``csr_array`` of the dense matrix) instead of ``(2 x symbols + 2) x positions``."""
        n = len(symbols)
        n_d, n_g = len(self.delta_symbols), len(self.gamma_symbols)
        rows, cols, vals = [], [], []
        for offset, row_symbols, values in ((0, self.delta_symbols, delta), (n_d, self.gamma_symbols, gamma)):
            r, pos = _matching(row_symbols, symbols)
            rows.append(offset + r)
            cols.append(pos)
            vals.append(np.broadcast_to(np.asarray(values, dtype=float), (n,))[pos])
        book = [v for v, on in ((dollar_delta, self.dollar_delta), (vega_per_vol_point, self.vega)) if on]
        for k, values in enumerate(book):
            rows.append(np.full(n, n_d + n_g + k, dtype=np.intp))
            cols.append(np.arange(n, dtype=np.intp))
            vals.append(np.broadcast_to(np.asarray(values, dtype=float), (n,)))
        shape = (n_d + n_g + len(book), n)
        out = csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
        out.eliminate_zeros()
        out.sort_indices()
        return out

    def totals(
        self,
        symbols: Sequence[str],
        delta: FloatArray,
        gamma: FloatArray,
        dollar_delta: FloatArray,
        vega_per_vol_point: FloatArray,
    ) -> FloatArray:
        """Every row summed over the positions (the book's exposure), in time and memory linear in the positions.

        Per-symbol rows add their positions in position order (``np.bincount``; the dense matrix's row sums
        differ by rounding only); the book rows are ``np.sum`` of the positions, as the dense rows' sums."""
        n = len(symbols)
        parts = []
        for row_symbols, values in ((self.delta_symbols, delta), (self.gamma_symbols, gamma)):
            r, pos = _matching(row_symbols, symbols)
            v = np.broadcast_to(np.asarray(values, dtype=float), (n,))[pos]
            parts.append(np.bincount(r, weights=v, minlength=len(row_symbols)).astype(float))
        for values, on in ((dollar_delta, self.dollar_delta), (vega_per_vol_point, self.vega)):
            if on:
                parts.append(np.array([np.broadcast_to(np.asarray(values, dtype=float), (n,)).sum()]))
        return np.concatenate(parts) if parts else np.zeros(0)


def _matching(row_symbols: Sequence[str], symbols: Sequence[str]) -> tuple[IntArray, IntArray]:
    """Every pair (row, position) with ``row_symbols[row] == symbols[position]``, positions ascending
    (sorted search: time ``(rows + positions) log rows``)."""
    keys = np.asarray(list(row_symbols), dtype=str)
    names = np.asarray(list(symbols), dtype=str)
    if keys.size == 0 or names.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    lo = np.searchsorted(ordered, names, side="left")
    counts = np.searchsorted(ordered, names, side="right") - lo
    pos = np.repeat(np.arange(names.size, dtype=np.intp), counts)
    within = np.arange(pos.size, dtype=np.intp) - np.repeat(np.cumsum(counts) - counts, counts)
    return order[np.repeat(lo, counts) + within].astype(np.intp), pos


def scenario_rows(scenarios: Scenarios, rows: IntArray) -> Scenarios:
    """The scenarios ``rows`` of a set with array fields (row-wise arrays gathered, the rest kept)."""
    if isinstance(scenarios, RuleScenarios):
        return scenarios.rows(rows)

    def pick(a: Any) -> Any:
        return a[rows] if isinstance(a, np.ndarray) and a.ndim >= 1 and a.shape[0] == scenarios.n_scenarios else a

    if callable(scenarios.vol_shift_abs):
        raise ValueError("selecting scenario rows needs array vol shifts, not a callable")
    return replace(
        scenarios,
        spot_shock_rel=scenarios.spot_shock_rel[rows],
        vol_scale=pick(scenarios.vol_scale),
        vol_shift_abs=pick(scenarios.vol_shift_abs),
        vol_skew=pick(scenarios.vol_skew),
        rate_shift_abs=pick(scenarios.rate_shift_abs),
        row_offset=0,
    )


#: ``TailPnl``'s slack on each line's bounds, per unit of ``multiplier x (strike + highest spot)``: far above the
#: engine's rounding (about 1e-13 of that) and any early-exercise premium's numerical error, far below the premium
#: bound itself (``K (1 - exp(-r T))``: 1e-3 of the strike at r T = 1e-3)
TAIL_BOUND_SLACK = 1e-6


@dataclass(frozen=True, eq=False)
class TailPnl:
    """The lines' mean P&L over tail scenario blocks, exact (``mean``: ``build_candidates(lines, blocks, ...)
    .scenario_pnl.mean(axis=0)`` of the lines asked, bit for bit) or bounded (``bounds``) without revaluing an
    American option's early exercise.

    ``lines`` are one contract per line, ``quantity`` the side (``build_candidates``' lines); ``blocks`` (scenario
    set, horizon) on ``symbol_columns``. ``bounds`` revalues every distinct contract as a European option (the
    engine's Black-Scholes path, the same shocks, vol rule and horizon) and widens by the early-exercise premium's
    bound per unit, today and in every row: a put's ``K (1 - exp(-max(r, 0) T))`` (valid while the yield is not
    negative), a call's ``S (1 - exp(-max(q, 0) T))`` at the highest spot (valid while the rate is not negative),
    the premium being at least 0 (the premium is the discounted rate on the strike, resp. the yield on the spot,
    over the exercise region: Kim 1990, Carr-Jarrow-Myneni 1992), with the rates, yields and spots of every row and
    ``TAIL_BOUND_SLACK``; a contract outside those conditions gets infinite bounds. Each position is revalued on
    its own (its early-exercise boundaries and grid are its own bits), so ``mean`` of a subset of the lines is the
    subset of the whole set's means."""

    lines: Portfolio
    blocks: Sequence[tuple[Scenarios, float]]
    symbol_columns: Sequence[str]
    american: AmericanMethod = "exact"

    def _contracts(self) -> tuple[Portfolio, IntArray, bool]:
        """The distinct contracts, one long contract each (the lines themselves when no two share one), each line's
        contract and whether any two share one (``build_candidates``' split)."""
        n = self.lines.n_positions
        unique, first, inverse = _unique_contracts(self.lines)
        long_one = replace(self.lines, quantity=np.ones(n))
        shared = unique < n
        return (_subset(long_one, first) if shared else long_one), (inverse if shared else np.arange(n)), shared

    def _blocks_on(self, split: Portfolio, split_col: IntArray) -> list[Scenarios]:
        """The blocks on the columns of ``split`` (``one_symbol_per_position`` of contracts on ``lines.symbols``)."""
        where = {s: i for i, s in enumerate(self.symbol_columns)}
        col = np.array([where[s] for s in self.lines.symbols], dtype=np.intp)
        return [columns_of(columns_of(sc, col), split_col) for sc, _ in self.blocks]

    def mean(self, idx: IntArray) -> FloatArray:
        """The exact mean P&L of the lines ``idx``: their contracts revalued in full (only those), then
        ``build_candidates``' arithmetic on an array of every line (the others' P&L 0), whose layout decides the
        order of each column's sum."""
        idx = np.asarray(idx, dtype=np.intp)
        if not idx.size:
            return np.zeros(0)
        distinct, contract, shared = self._contracts()
        needed = np.unique(contract[idx])
        split, split_col = one_symbol_per_position(_subset(distinct, needed))
        blocks = self._blocks_on(split, split_col)
        H = np.zeros((sum(sc.n_scenarios for sc in blocks), distinct.n_positions))
        if H.shape[0]:
            H[:, needed] = np.vstack(
                [_split_pnl(split, sc, h, self.american) for sc, (_, h) in zip(blocks, self.blocks, strict=True)]
            )
        side = np.sign(np.asarray(self.lines.quantity))
        H = H[:, contract] * side[None, :] if shared else H * side[None, :]
        return H.mean(axis=0)[idx]

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        """Per line, a lower and an upper bound of ``mean`` (NaN where the European revaluation is not finite)."""
        distinct, inverse, _ = self._contracts()
        split, split_col = one_symbol_per_position(distinct)
        blocks = self._blocks_on(split, split_col)
        side = np.sign(np.asarray(self.lines.quantity, dtype=float))
        european = replace(split, is_american=np.zeros(split.n_positions, dtype=bool))
        m = split.n_positions
        spot = np.asarray(split.spot, dtype=float)
        r = np.broadcast_to(np.asarray(split.rate, dtype=float), (m,))
        q = np.broadcast_to(np.asarray(split.dividend_yield, dtype=float), (m,))
        s_hi, r_lo, r_hi, q_lo, q_hi = spot.copy(), r.copy(), r.copy(), q.copy(), q.copy()
        parts = []
        for sc, (_, h) in zip(blocks, self.blocks, strict=True):
            sset, method = engine_inputs(european, sc, self.american)
            parts.append(
                evaluate(european, sset, h, american=method, per_symbol=True).by_symbol
                if sset.n_scenarios and m
                else np.zeros((sset.n_scenarios, m))
            )
            if not sset.n_scenarios:
                continue
            s_hi = np.maximum(s_hi, spot * np.max(1.0 + sset.spot_shock_rel, axis=0))
            for shift, lo, hi, base in ((sset.rate_shift_abs, r_lo, r_hi, r), (sset.dividend_shift_abs, q_lo, q_hi, q)):
                if shift is None:
                    continue
                a = np.asarray(shift, dtype=float)
                per_pos = a if a.ndim == 2 else a[:, None]
                np.minimum(lo, base + np.min(per_pos, axis=0), out=lo)
                np.maximum(hi, base + np.max(per_pos, axis=0), out=hi)
        H = np.vstack(parts) if parts else np.zeros((0, m))
        eu = (H[:, inverse] * side[None, :]).mean(axis=0)
        opt = np.asarray(split.is_option, dtype=bool) & np.asarray(split.is_american, dtype=bool)
        t = np.broadcast_to(np.asarray(split.time_years, dtype=float), (m,))
        k = np.broadcast_to(np.asarray(split.strike, dtype=float), (m,))
        call = np.broadcast_to(np.asarray(split.is_call, dtype=bool), (m,))
        with np.errstate(invalid="ignore", over="ignore"):
            put_b = np.where(q_lo >= 0.0, k * -np.expm1(-np.maximum(r_hi, 0.0) * np.maximum(t, 0.0)), np.inf)
            call_b = np.where(r_lo >= 0.0, s_hi * -np.expm1(-np.maximum(q_hi, 0.0) * np.maximum(t, 0.0)), np.inf)
            premium = np.where(opt, np.where(call, call_b, put_b), 0.0)
            mult = np.abs(np.broadcast_to(np.asarray(split.multiplier, dtype=float), (m,)))
            slack = TAIL_BOUND_SLACK * mult * (np.abs(np.where(np.asarray(split.is_option), k, 0.0)) + s_hi)
            width = (premium * mult + slack)[inverse]
        bad = ~np.isfinite(eu)
        lo, hi = eu - width, eu + width
        lo[bad], hi[bad] = np.nan, np.nan
        return lo, hi


def screen_candidates(
    c: HedgeCandidates,
    is_option: BoolArray,
    exposure: FloatArray,
    warn_level: FloatArray,
    tail_book_pnl: FloatArray,
    keep: int,
    tail: TailPnl | None = None,
) -> IntArray:
    """Indices (ascending) of every delta-one line and at most ``keep`` option lines worth revaluing in full.

    ``c`` holds every line with its Greeks and its P&L in the book's worst scenarios only (``tail_book_pnl``,
    same rows). Criteria, each ranking option lines by what one contract fixes per dollar of its cost
    (``c.cost``, the objective, plus the premium): every Greek row over half its warning level (the share of
    the row ``-sign(g) G / |g|`` a contract removes) and the tail (the contract's mean P&L in those
    scenarios over the book's mean loss there). The best ``keep // n_criteria`` option lines with a positive
    effect of each criterion are kept (a line can serve several).

    ``tail``: the lines' tail P&L (``c.scenario_pnl`` is then not read): only the option lines whose score's upper
    bound (``TailPnl.bounds``) reaches the ``keep // n_criteria``-th largest lower bound (0 at least) are revalued
    (``TailPnl.mean``); every other line scores below that many lines, or at most 0, so the same lines are kept.
    """
    opt = np.asarray(is_option, dtype=bool)
    per_dollar = 1.0 / np.maximum(c.cost + c.premium, 1e-9)
    G = csr_array(c.greeks) if issparse(c.greeks) else csr_array(np.asarray(c.greeks, dtype=float))
    if G.shape[0] != len(exposure) or len(warn_level) != len(exposure):
        raise ValueError("exposure, warn_level and the candidates' Greek rows must pair")
    if not G.has_sorted_indices:
        G = G.sorted_indices()
    # each criterion as (lines it touches, ascending; their effect): a per-symbol row only touches that
    # symbol's lines (the other lines' effect is 0, never kept), so nothing is (rows x lines)
    effects: list[tuple[IntArray, FloatArray]] = []
    for k, (g, w) in enumerate(zip(exposure, warn_level, strict=True)):
        if abs(g) > 0.5 * w and abs(g) > 0.0:
            lo, hi = G.indptr[k], G.indptr[k + 1]
            effects.append((G.indices[lo:hi].astype(np.intp), -np.sign(g) * G.data[lo:hi] / abs(g)))
    tail_loss = float(-np.mean(tail_book_pnl)) if tail_book_pnl.size else 0.0
    tail_rows = c.scenario_pnl.shape[0] if tail is None else sum(sc.n_scenarios for sc, _ in tail.blocks)
    if tail_loss > 0.0 and tail_rows and tail is None:
        effects.append((np.arange(c.n, dtype=np.intp), c.scenario_pnl.mean(axis=0) / tail_loss))
    elif tail_loss > 0.0 and tail_rows:
        assert tail is not None
        per = max(keep // (len(effects) + 1), 1)
        lo, hi = tail.bounds()
        with np.errstate(invalid="ignore"):
            lo_score, hi_score = lo / tail_loss * per_dollar, hi / tail_loss * per_dollar
            lows = lo_score[opt & np.isfinite(lo_score)]
            # at least `per` option lines score at least `floor` > 0 (else `floor` is 0): a line whose upper bound is
            # under it is not among the best `per`, nor has a positive effect when `floor` is 0
            floor = max(float(np.partition(lows, lows.size - per)[lows.size - per]) if lows.size >= per else 0.0, 0.0)
            need = np.flatnonzero(opt & ~(hi_score < floor))
        effect = np.zeros(c.n)
        effect[need] = tail.mean(need) / tail_loss
        effects.append((np.arange(c.n, dtype=np.intp), effect))
    chosen = ~opt
    if effects:
        per = max(keep // len(effects), 1)
        for lines, effect in effects:
            ok = opt[lines] & (effect > 0.0)
            lines = lines[ok]
            score = effect[ok] * per_dollar[lines]
            best = np.argsort(-score, kind="stable")[:per]
            chosen[lines[best[np.isfinite(score[best])]]] = True
    return np.flatnonzero(chosen)


def _unique_contracts(p: Portfolio) -> tuple[int, IntArray, IntArray]:
    """Distinct contracts of ``p`` (every field but the quantity): their count, the first position of
    each, and each position's contract."""
    n = p.n_positions
    fields = [p.symbol_index, p.multiplier, p.is_option, p.is_call, p.strike, p.time_years, p.implied_vol, p.rate,
              p.dividend_yield, p.is_american]  # fmt: skip
    key = np.column_stack([np.broadcast_to(np.asarray(f, dtype=np.float64), (n,)) for f in fields])
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return first.size, first.astype(np.intp), inverse.reshape(-1).astype(np.intp)


def _subset(p: Portfolio, idx: IntArray) -> Portfolio:
    """The positions ``idx`` of ``p`` (same symbols)."""
    return Portfolio(
        p.symbols, p.spot, p.symbol_index[idx], p.quantity[idx], p.multiplier[idx], p.is_option[idx],
        p.is_call[idx], p.strike[idx], p.time_years[idx], p.implied_vol[idx], p.rate[idx], p.dividend_yield[idx],
        p.is_american[idx], tuple(p.position_id[i] for i in idx) if p.position_id else None,
    )  # fmt: skip


def position_greek_arrays(p: Portfolio) -> dict[str, FloatArray]:
    """Per-position Greeks of ``p`` through ``quant.greeks.position_greeks`` (the code behind ``position_greeks``)."""
    from risk_pipeline.quant.greeks import position_greeks

    g = position_greeks(
        p.quantity,
        p.multiplier,
        p.is_option,
        p.is_call,
        p.is_american,
        p.position_spot,
        p.strike,
        p.time_years,
        p.implied_vol,
        p.rate,
        p.dividend_yield,
    )
    return {
        "price": g.price,
        "market_value": g.market_value,
        "delta": g.delta,
        "dollar_delta": g.dollar_delta,
        "gamma": g.gamma,
        "vega_per_vol_point": g.vega_per_vol_point,
        "theta_per_day": g.theta_per_day,
    }


#: ``position_greek_arrays``' keys that ``build_candidates`` reads
CANDIDATE_GREEKS = ("delta", "dollar_delta", "gamma", "vega_per_vol_point", "theta_per_day")
#: per-contract (unit) Greeks of an option: ``candidate_greeks`` multiplies them by the line's units
UNIT_GREEKS = ("delta", "gamma", "vega", "theta_per_day")


def _pricing_keys(*fields: ArrayLike) -> NDArray[np.uint64]:
    """Rows ``(m, len(fields))`` of the fields' float64 bit patterns: equal rows are equal pricing inputs, bit for bit
    (``-0.0`` and ``0.0`` apart)."""
    cols = [np.asarray(f, dtype=np.float64) for f in fields]
    return np.ascontiguousarray(np.column_stack(cols)).view(np.uint64)


@dataclass(eq=False)
class UnitGreekCache:
    """Unit Greeks of the options ``candidate_greeks`` has priced, by pricing inputs (spot, strike, time, vol, rate,
    yield, call, American): a second book's candidates on the same chain read them instead of pricing them again.
    A contract's unit Greeks depend on its own inputs only (each point priced on its own), so a cached value has
    the bits of a new pricing."""

    keys: NDArray[np.uint64] = field(default_factory=lambda: np.zeros((0, 8), dtype=np.uint64))
    values: dict[str, FloatArray] = field(default_factory=lambda: {k: np.zeros(0) for k in UNIT_GREEKS})

    @property
    def n(self) -> int:
        return int(self.keys.shape[0])

    def find(self, keys: NDArray[np.uint64]) -> IntArray:
        """Per row of ``keys``, its row in the cache (-1: not cached)."""
        if not self.n or not keys.shape[0]:
            return np.full(keys.shape[0], -1, dtype=np.intp)
        _, inverse = np.unique(np.concatenate([self.keys, keys]), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        at = np.full(int(inverse.max()) + 1, -1, dtype=np.intp)
        at[inverse[: self.n]] = np.arange(self.n, dtype=np.intp)
        return at[inverse[self.n :]]

    def add(self, keys: NDArray[np.uint64], values: Mapping[str, FloatArray]) -> None:
        """Cache the unit Greeks ``values`` of the contracts ``keys`` (rows not cached yet)."""
        self.keys = np.concatenate([self.keys, keys])
        self.values = {
            k: np.concatenate([self.values[k], np.asarray(values[k], dtype=np.float64)]) for k in UNIT_GREEKS
        }


def candidate_greeks(
    lines: Portfolio,
    contracts: tuple[int, IntArray, IntArray] | None = None,
    cache: UnitGreekCache | None = None,
) -> dict[str, FloatArray]:
    """``position_greek_arrays(lines)``' ``CANDIDATE_GREEKS``, bit for bit, each distinct contract priced once.

    A buy and a sell line of one contract share its unit Greeks (every field of ``position_greeks`` but the
    quantity is the contract's), and the exact American engine skips its two rate bumps (rho is not read; each of
    its points is priced on its own, so the other Greeks keep their bits). The arithmetic after the unit Greeks is
    ``quant.greeks.position_greeks``' (``units = quantity x multiplier``, then the same products). ``contracts``:
    ``_unique_contracts(lines)`` when already computed. ``cache``: unit Greeks of options priced before (read for
    the options with the same pricing inputs; the options priced here are added)."""
    from risk_pipeline.quant.american import american_greeks
    from risk_pipeline.quant.bsm import bsm_greeks

    n = lines.n_positions
    unique, first, inverse = _unique_contracts(lines) if contracts is None else contracts
    d = _subset(lines, first) if unique < n else lines
    m = d.n_positions
    opt = np.asarray(d.is_option, dtype=bool).reshape(m)
    s = np.broadcast_to(np.asarray(d.position_spot, dtype=float), (m,))
    unit = {"delta": np.ones(m), "gamma": np.zeros(m), "vega": np.zeros(m), "theta_per_day": np.zeros(m)}
    args = [
        np.broadcast_to(np.asarray(a, dtype=float), (m,))
        for a in (d.strike, d.time_years, d.implied_vol, d.rate, d.dividend_yield)
    ]
    call = np.broadcast_to(np.asarray(d.is_call, dtype=bool), (m,))
    american = np.broadcast_to(np.asarray(d.is_american, dtype=bool), (m,)) & opt
    price = opt
    if cache is not None and opt.any():
        o = np.flatnonzero(opt)
        keys = _pricing_keys(s[o], *(a[o] for a in args), call[o], american[o])
        at = cache.find(keys)
        hit = at >= 0
        for name in UNIT_GREEKS:
            unit[name][o[hit]] = cache.values[name][at[hit]]
        price = opt.copy()
        price[o[hit]] = False
    for mask, fn in (
        (price & ~american, bsm_greeks),
        (american & price, lambda *a: american_greeks(*a, with_rho=False)),
    ):
        if not mask.any():
            continue
        res = fn(s[mask], *(a[mask] for a in args), call[mask])
        for name in unit:
            unit[name][mask] = getattr(res, name)
    if cache is not None and price.any():
        new = np.flatnonzero(price)
        cache.add(_pricing_keys(s[new], *(a[new] for a in args), call[new], american[new]),
                  {k: v[new] for k, v in unit.items()})  # fmt: skip
    if unique < n:
        unit = {k: v[inverse] for k, v in unit.items()}
    spot = np.broadcast_to(np.asarray(lines.position_spot, dtype=float), (n,))
    units = np.asarray(lines.quantity, dtype=float).reshape(n) * np.asarray(lines.multiplier, dtype=float).reshape(n)
    delta = units * unit["delta"]
    return {
        "delta": delta,
        "dollar_delta": delta * spot,
        "gamma": units * unit["gamma"],
        "vega_per_vol_point": units * unit["vega"] / 100.0,
        "theta_per_day": units * unit["theta_per_day"],
    }


def build_candidates(
    lines: Portfolio,
    trade_price: ArrayLike,
    mid_price: ArrayLike,
    rows: GreekRows,
    scenarios: Sequence[tuple[Scenarios, float]],
    *,
    symbol_columns: Sequence[str],
    horizon_calendar_days: float,
    financing_rate: float,
    budget: float,
    max_contracts: float = 1e6,
    american: AmericanMethod = "exact",
    labels: Sequence[str] | None = None,
    price_multiplier: ArrayLike | None = None,
    delta_one_carry: ArrayLike | None = None,
    greeks: Mapping[str, FloatArray] | None = None,
    greek_cache: UnitGreekCache | None = None,
) -> HedgeCandidates:
    """Candidates from one contract per line (``lines.quantity`` is the side, +1 buy / -1 sell).

    ``scenarios`` are blocks (scenario set, horizon in calendar days), each with one column per
    ``symbol_columns`` entry (the hedged book's symbols); a line's scenario P&L (blocks stacked in order)
    is its full revaluation from today's model value. Cost per contract: half spread
    ``|trade - mid| x multiplier``, plus for options the decay over the horizon when it is a cost
    (``max(-theta_per_day x days, 0)``: decay earned by a sold option is not counted as income), plus for
    delta-one lines the financing ``|notional| x financing_rate x days / 365``.

    Index futures and ETFs are delta-one lines on the index whose ``lines.multiplier`` is the index units
    one contract moves like (a future: contract multiplier x F / S; a -1x ETF share: -P / S), so their
    scenario P&L and Greeks are exact for an instantaneous index move; ``price_multiplier`` (default
    ``lines.multiplier``) converts their quoted half spread to USD per contract, and ``delta_one_carry``
    (NaN: the financing above) replaces a line's financing by its own carry over the horizon (a future's
    basis roll-down). ``greeks``: the lines' ``candidate_greeks`` when already computed (default: computed here,
    through ``greek_cache`` when given).
    """
    side = np.sign(np.asarray(lines.quantity))
    if np.any(side == 0):
        raise ValueError("every line needs a side (+1 or -1)")
    mult = np.asarray(lines.multiplier)
    price_mult = np.abs(mult if price_multiplier is None else np.asarray(price_multiplier, dtype=float))
    tp, mp = np.asarray(trade_price, dtype=float), np.asarray(mid_price, dtype=float)
    # a contract listed on both sides is revalued once (one long contract; each line's P&L is side x that)
    unique, first, inverse = _unique_contracts(lines)
    g = candidate_greeks(lines, (unique, first, inverse), greek_cache) if greeks is None else greeks
    line_symbols = [lines.symbols[i] for i in lines.symbol_index]
    G = rows.matrix(line_symbols, g["delta"], g["gamma"], g["dollar_delta"], g["vega_per_vol_point"])
    where = {s: i for i, s in enumerate(symbol_columns)}
    col = np.array([where[s] for s in lines.symbols], dtype=np.intp)
    long_one = replace(lines, quantity=np.ones(lines.n_positions))
    distinct = _subset(long_one, first) if unique < lines.n_positions else long_one
    # one split portfolio for every block: its options' values today are priced once (the engine caches them per
    # portfolio; each option is priced on its own, so the same bits as a split per block)
    split, split_col = one_symbol_per_position(distinct)
    H = np.vstack(
        [_split_pnl(split, columns_of(columns_of(sc, col), split_col), horizon, american) for sc, horizon in scenarios]
        or [np.zeros((0, distinct.n_positions))]
    )
    H = H[:, inverse] * side[None, :] if unique < lines.n_positions else H * side[None, :]
    opt = np.asarray(lines.is_option)
    decay = np.maximum(-g["theta_per_day"] * horizon_calendar_days, 0.0)
    spot = lines.position_spot
    notional = np.abs(spot * mult)
    financing = np.where(opt, 0.0, notional * financing_rate * horizon_calendar_days / 365.0)
    if delta_one_carry is not None:
        own = np.asarray(delta_one_carry, dtype=float)
        financing = np.where(~opt & np.isfinite(own), own, financing)
    cost = np.abs(tp - mp) * price_mult + np.where(opt, decay, 0.0) + financing
    premium = np.where(opt & (side > 0), tp * price_mult, 0.0)
    per = premium + cost
    cap = np.where(per > 0, np.floor(budget / np.maximum(per, 1e-12)), max_contracts)
    return HedgeCandidates(
        labels=tuple(labels) if labels is not None else tuple(lines.position_id or ()),
        side=side.astype(np.intp),
        greeks=G,
        scenario_pnl=H,
        cost=cost,
        premium=premium,
        notional=notional,
        max_contracts=np.minimum(cap, max_contracts),
        line_greeks=g,
    )
