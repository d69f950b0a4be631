"""Required reductions: the plan clears breaches (recomputed), is optimal (brute force), keeps signs.

Optimal cuts are worked out by hand in the comments or found by exhaustive enumeration of whole
cuts; the post-plan book is re-evaluated from scratch.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from risk_pipeline.quant.limits import (
    BREACH,
    LIMIT_NAMES,
    LINEAR_LIMITS,
    NOT_AVAILABLE,
    OK,
    BookExposure,
    LimitsConfig,
    evaluate_limits,
    results_by_name,
)
from risk_pipeline.quant.reductions import ReductionPlan, required_reductions
from risk_pipeline.quant.trading_state import next_state

NONE = {name: None for name in LIMIT_NAMES if name != "max_drawdown_pct"}


def cfg(**kwargs: object) -> LimitsConfig:
    return LimitsConfig(**{**NONE, **kwargs})  # type: ignore[arg-type]


def book(rows: list[tuple], **extra: object) -> BookExposure:
    """rows: (id, symbol, sector, quantity, multiplier, spot, price, delta[, strategy])."""
    cols = list(zip(*rows, strict=True))
    n = len(rows)
    kwargs: dict[str, object] = {"nav": 50e6, "peak_nav": 50e6, "daily_pnl": 0.0}
    kwargs.update(extra)
    return BookExposure(
        position_id=cols[0],
        symbol=cols[1],
        sector=cols[2],
        quantity=cols[3],
        multiplier=cols[4],
        spot=cols[5],
        unit_price=cols[6],
        delta=cols[7],
        gamma=np.where(np.array(cols[4]) > 1, 0.01, 0.0),
        vega=np.where(np.array(cols[4]) > 1, 0.2, 0.0),
        theta_per_day=np.where(np.array(cols[4]) > 1, -0.03, 0.0),
        is_option=np.array(cols[4]) > 1,
        strategy=cols[8] if len(cols) > 8 else [""] * n,
        **kwargs,  # type: ignore[arg-type]
    )


def assert_plan_is_well_formed(e: BookExposure, plan: ReductionPlan) -> None:
    q, new = e.quantity, plan.new_quantity
    np.testing.assert_array_equal(plan.reduce_quantity, np.round(plan.reduce_quantity))  # whole units
    assert np.all(np.sign(new) * np.sign(q) >= 0)  # no sign flip
    assert np.all(np.abs(new) <= np.abs(q))  # only toward zero
    np.testing.assert_array_equal(new, q - plan.reduce_quantity)
    for line in plan.lines:
        i = list(e.position_id).index(line.position_id)
        assert line.reduce_quantity == plan.reduce_quantity[i] != 0
        assert np.sign(line.reduce_quantity) == np.sign(q[i])  # positive sells a long


def test_plan_clears_delta_and_concentration_breaches() -> None:
    e = book(
        [
            ("aapl", "AAPL", "tech", 60_000, 1, 150.0, 150.0, 1.0),  # 9.0M
            ("msft", "MSFT", "tech", 20_000, 1, 300.0, 300.0, 1.0),  # 6.0M
            ("xom", "XOM", "energy", -30_000, 1, 100.0, 100.0, 1.0),  # -3.0M
            ("jpm", "JPM", "fin", 25_000, 1, 120.0, 120.0, 1.0),  # 3.0M
            ("aapl_c", "AAPL", "tech", 300, 100, 150.0, 8.0, 0.6),  # 2.7M
            ("spy_p", "SPY", "index", 200, 100, 500.0, 10.0, -0.4),  # -4.0M
            ("nvda", "NVDA", "tech", 10_000, 1, 400.0, 400.0, 1.0),  # 4.0M
            ("unh", "UNH", "health", 6_000, 1, 500.0, 500.0, 1.0),  # 3.0M
        ]
    )
    c = cfg(
        max_abs_net_dollar_delta=15e6,
        max_position_pct_gross=0.20,
        max_underlying_pct_gross=0.20,
        max_sector_pct_gross=0.60,
        max_abs_vega_per_vol_point=1e6,
        max_abs_gamma_shares=1e6,
        max_theta_per_day_loss=1e6,
    )
    before = results_by_name(evaluate_limits(e, c))
    # net dollar delta 9 + 6 - 3 + 3 + 2.7 - 4 + 4 + 3 = 20.7M > 15M; AAPL 11.7M of 34.7M gross = 33.7 %
    assert before["max_abs_net_dollar_delta"].value == pytest.approx(20.7e6)
    assert before["max_abs_net_dollar_delta"].status == BREACH
    assert before["max_underlying_pct_gross"].status == BREACH
    assert before["max_position_pct_gross"].status == BREACH
    plan = required_reductions(e, c, list(before.values()))
    assert plan.feasible and plan.method in ("lp", "milp")
    assert_plan_is_well_formed(e, plan)
    after_book = e.with_quantity(plan.new_quantity)
    after = results_by_name(evaluate_limits(after_book, c))
    for name in LINEAR_LIMITS & after.keys():
        assert after[name].value <= after[name].warn_threshold, name
        assert after[name].status == OK
    # independent recomputation of the two targeted values
    dd = float(np.sum(plan.new_quantity * e.multiplier * e.delta * e.spot))
    assert abs(dd) <= 0.8 * 15e6
    gross = np.abs(plan.new_quantity * e.multiplier * e.delta * e.spot)
    aapl = gross[:5][[0, 4]].sum()
    assert aapl <= 0.16 * gross.sum()
    changes = {ch.limit_name: ch for ch in plan.changes}
    assert changes["max_abs_net_dollar_delta"].status_before == BREACH
    assert changes["max_abs_net_dollar_delta"].after == pytest.approx(abs(dd))
    assert all(ch.status_after == OK for ch in plan.changes)
    cleared = {name for line in plan.lines for name in line.limits_cleared}
    assert {"max_abs_net_dollar_delta", "max_underlying_pct_gross"} <= cleared
    aapl_line = next(line for line in plan.lines if line.position_id in ("aapl", "aapl_c"))
    assert "max_underlying_pct_gross" in aapl_line.limits_cleared and "sell" in aapl_line.reason
    # the short XOM hedges the net delta and is far from its concentration level: left alone
    assert plan.reduce_quantity[2] == 0


def _brute_force_dd(e: BookExposure, warn: float, unit_cost: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Cheapest whole cuts with |net dollar delta| <= warn, by enumeration (all positions long)."""
    grids = [np.arange(int(q) + 1) for q in e.quantity]
    r = np.array(list(itertools.product(*grids)), dtype=float)
    dd = ((e.quantity - r) * e.multiplier * e.delta * e.spot).sum(axis=1)
    cost = r @ unit_cost
    cost[np.abs(dd) > warn] = np.inf
    k = int(np.argmin(cost))
    return float(cost[k]), tuple(int(v) for v in r[k])


THREE = [
    ("p1", "A", "a", 30, 100, 100.0, 5.0, 0.5),  # 5,000 $dd per contract for 500 of turnover
    ("p2", "B", "b", 300, 1, 100.0, 100.0, 1.0),  # 100 $dd per share for 100
    ("p3", "C", "c", 20, 100, 100.0, 4.0, 0.25),  # 2,500 $dd per contract for 400
]


def test_lp_optimum_matches_brute_force_on_three_positions() -> None:
    # net dollar delta 150,000 + 30,000 + 50,000 = 230,000; cap 200,000, warning 160,000:
    # 70,000 to cut, cheapest per $dd is p1 (0.10 vs 0.16 and 1.0): 14 contracts, turnover 7,000
    e = book(THREE)
    c = cfg(max_abs_net_dollar_delta=200_000.0)
    plan = required_reductions(e, c, evaluate_limits(e, c))
    unit_cost = e.unit_price * e.multiplier
    best, cuts = _brute_force_dd(e, 160_000.0, unit_cost)
    assert (best, cuts) == (7000.0, (14, 0, 0))
    assert plan.lp_objective_value == pytest.approx(7000.0)
    assert plan.objective_value == pytest.approx(best)
    np.testing.assert_array_equal(plan.reduce_quantity, [14, 0, 0])
    assert_plan_is_well_formed(e, plan)


def test_rounding_up_costs_at_most_one_unit_per_cut_position() -> None:
    # cap 198,750 -> warning 159,000: cut 71,000. LP: 14.2 contracts of p1 = 7,100.
    # whole units: 14 of p1 + 1 of p3 = 7,400 (brute force); rounding the LP up gives 15 = 7,500.
    e = book(THREE)
    c = cfg(max_abs_net_dollar_delta=198_750.0)
    plan = required_reductions(e, c, evaluate_limits(e, c))
    best, _ = _brute_force_dd(e, 159_000.0, e.unit_price * e.multiplier)
    assert best == 7400.0
    assert plan.lp_objective_value == pytest.approx(7100.0)
    assert plan.lp_objective_value <= best <= plan.objective_value <= best + 500.0
    assert plan.feasible


def test_concentration_cut_matches_brute_force() -> None:
    # A 6,000 of 10,000 gross; cap 0.5, warning 0.4: (6000 - 10 r) / (10000 - 10 r) <= 0.4
    # <=> r >= 333.3: 334 shares. Cutting B or C only raises A's share.
    e = book(
        [
            ("a", "A", "x", 600, 1, 10.0, 10.0, 1.0),
            ("b", "B", "y", 200, 1, 10.0, 10.0, 1.0),
            ("c", "C", "z", 200, 1, 10.0, 10.0, 1.0),
        ]
    )
    c = cfg(max_position_pct_gross=0.5)
    plan = required_reductions(e, c, evaluate_limits(e, c))
    r = np.array(list(itertools.product(range(601), range(0, 201, 5), range(0, 201, 5))), dtype=float)
    g = (e.quantity - r) * 10.0
    share = g / np.maximum(g.sum(axis=1, keepdims=True), 1e-300)
    ok = np.all(share <= np.maximum(0.4, 2000.0 / 10000.0) + 1e-12, axis=1)  # B, C may not pass 0.4
    cost = np.where(ok, r @ np.full(3, 10.0), np.inf)
    assert cost.min() == 3340.0
    assert plan.objective_value == 3340.0 and plan.reduce_quantity.tolist() == [334, 0, 0]
    assert plan.lp_objective_value == pytest.approx(10_000.0 / 3.0)


def test_cost_objective_uses_half_spreads() -> None:
    # net dd = 1,000,000 (stock) + 500,000 (option) = 1.5M; cap 1.45M, warning 1.16M: cut 340,000 $dd.
    # turnover per $dd: stock 1.0, option 200 / 5000 = 0.04 -> 68 contracts.
    # half-spread per $dd: stock 0.01 / 100 = 1e-4, option 0.10 * 100 / 5000 = 2e-3 -> 3,400 shares.
    e = book([("stk", "A", "x", 10_000, 1, 100.0, 100.0, 1.0), ("opt", "B", "y", 100, 100, 100.0, 2.0, 0.5)])
    c = cfg(max_abs_net_dollar_delta=1.45e6)
    results = evaluate_limits(e, c)
    turnover = required_reductions(e, c, results)
    assert turnover.reduce_quantity.tolist() == [0, 68]
    assert turnover.objective_value == pytest.approx(68 * 200.0)
    cost = required_reductions(e, c, results, costs_per_unit=[0.01, 0.10], objective="cost")
    assert cost.reduce_quantity.tolist() == [3400, 0]
    assert cost.objective_value == pytest.approx(3400 * 0.01)
    with pytest.raises(ValueError, match="costs_per_unit"):
        required_reductions(e, c, results, objective="cost")


def test_short_positions_are_bought_back_without_flipping() -> None:
    # net dollar delta -100,000 (short 1,000 at 100); cap 50,000, warning 40,000: buy back 600
    e = book([("s", "A", "x", -1000, 1, 100.0, 100.0, 1.0), ("l", "B", "y", 10, 1, 100.0, 100.0, 1.0)])
    c = cfg(max_abs_net_dollar_delta=50_000.0)
    plan = required_reductions(e, c, evaluate_limits(e, c))
    # -100,000 + 1,000 = -99,000 -> need |.| <= 40,000: buy back 590 of the short
    assert plan.reduce_quantity.tolist() == [-590, 0]
    assert plan.lines[0].reason.startswith("buy back 590")
    assert_plan_is_well_formed(e, plan)


def test_var_breach_alone_falls_back_to_a_pro_rata_cut() -> None:
    e = book(
        [("a", "A", "x", 1000, 1, 50.0, 50.0, 1.0), ("b", "B", "y", 300, 1, 20.0, 20.0, 1.0)],
        var_99_1d=1.5e6,
    )
    c = cfg(max_var_99_1d=1e6)  # warning 0.8M: cut f = 1 - 0.8 / 1.5 = 7 / 15
    plan = required_reductions(e, c, evaluate_limits(e, c))
    assert plan.reduce_quantity.tolist() == [math.ceil(1000 * 7 / 15), math.ceil(300 * 7 / 15)]
    assert any("pro rata" in note for note in plan.notes)
    (change,) = plan.changes
    assert change.estimated and change.after == pytest.approx(0.8e6) and change.status_after == OK
    assert results_by_name(list(plan.after))["max_var_99_1d"].status == NOT_AVAILABLE  # must be recomputed
    assert all(line.limits_cleared == ("max_var_99_1d",) for line in plan.lines)


def test_max_positions_breach_closes_the_cheapest_underlyings() -> None:
    rows = [(f"p{i}", f"S{i}", "x", 10 * (i + 1), 1, 10.0, 10.0, 1.0) for i in range(6)]
    e = book(rows)
    c = cfg(max_positions=5)  # 6 > 5; warning level 4: close the two cheapest, S0 and S1
    plan = required_reductions(e, c, evaluate_limits(e, c))
    assert plan.reduce_quantity.tolist() == [10, 20, 0, 0, 0, 0]
    assert results_by_name(list(plan.after))["max_positions"].value == 4


def test_correlation_breach_closes_one_name_of_the_pair() -> None:
    symbols = ("A", "B", "C")
    corr = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.2, 1.0]])
    e = book(
        [
            ("a", "A", "x", 100, 1, 10.0, 10.0, 1.0),
            ("b", "B", "y", 50, 1, 10.0, 10.0, 1.0),
            ("c", "C", "z", 80, 1, 10.0, 10.0, 1.0),
        ],
        correlation=corr,
        correlation_symbols=symbols,
    )
    c = cfg(max_pairwise_correlation=0.7)
    plan = required_reductions(e, c, evaluate_limits(e, c))
    assert plan.reduce_quantity.tolist() == [0, 50, 0]  # B is cheaper to close than A
    assert results_by_name(list(plan.after))["max_pairwise_correlation"].value == pytest.approx(0.1)


def test_preservation_cut_and_flatten_from_the_trading_state() -> None:
    rows = [
        ("a", "A", "x", 1000, 1, 10.0, 10.0, 1.0, "momentum"),
        ("b", "B", "y", 1000, 1, 10.0, 10.0, 1.0, "momentum"),
        ("h", "C", "z", -500, 1, 10.0, 10.0, 1.0, "index_hedge"),
    ]
    e = book(rows)
    c = cfg()
    results = evaluate_limits(e, c)
    light = next_state(None, results, 0.06, 0.0, 1, c, gross_exposure=e.gross_exposure)
    plan = required_reductions(e, c, results, state=light)
    assert e.gross_exposure == 25_000.0
    assert e.with_quantity(plan.new_quantity).gross_exposure <= 0.75 * 25_000.0
    assert plan.objective_value == pytest.approx(0.25 * 25_000.0)  # exactly the 25 % cut, no more
    halted = next_state(None, results, 0.12, 0.0, 1, c, gross_exposure=e.gross_exposure)
    flat = required_reductions(e, c, results, state=halted)
    assert flat.new_quantity[:2].tolist() == [0, 0]  # speculative positions closed
    assert flat.new_quantity[2] != 0  # the hedge is kept


def test_nothing_to_do_and_missing_inputs() -> None:
    e = book(THREE)
    c = cfg(max_abs_net_dollar_delta=1e9)
    plan = required_reductions(e, c, evaluate_limits(e, c))
    assert plan.method == "none" and plan.lines == () and not plan.reduce_quantity.any()
    bad = book([("a", "A", "x", 10, 1, math.nan, 10.0, 1.0)])
    failed = required_reductions(bad, c, [])
    assert failed.method == "failed" and not failed.feasible and "NaN" in failed.notes[0]


def test_five_thousand_positions_plan_is_feasible_and_clears_the_limit() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    sym = rng.integers(0, 300, n)
    is_opt = rng.random(n) < 0.5
    spot = rng.uniform(20.0, 400.0, 300)[sym]
    e = BookExposure(
        position_id=[f"p{i}" for i in range(n)],
        symbol=[f"S{s}" for s in sym],
        sector=[f"sec{s % 11}" for s in sym],
        quantity=rng.integers(1, 200, n) * np.where(rng.random(n) < 0.8, 1, -1),
        multiplier=np.where(is_opt, 100.0, 1.0),
        spot=spot,
        unit_price=np.where(is_opt, 3.0, spot),
        delta=np.where(is_opt, rng.uniform(-0.9, 0.9, n), 1.0),
        gamma=np.where(is_opt, 0.02, 0.0),
        vega=np.where(is_opt, 0.2, 0.0),
        theta_per_day=np.where(is_opt, -0.03, 0.0),
        nav=80e6,
        peak_nav=80e6,
        daily_pnl=0.0,
    )
    net = abs(float(e.dollar_delta.sum()))
    c = cfg(max_abs_net_dollar_delta=0.5 * net, max_underlying_pct_gross=0.2, max_sector_pct_gross=0.4)
    plan = required_reductions(e, c, evaluate_limits(e, c))
    assert plan.feasible
    assert len(plan.lines) > 0 and plan.method == "lp"
    after = results_by_name(evaluate_limits(e.with_quantity(plan.new_quantity), c))
    assert after["max_abs_net_dollar_delta"].status == OK
    assert_plan_is_well_formed(e, plan)


def test_event_caps_in_force_are_the_targets_of_the_plan() -> None:
    """A gap-risk action halves A's delta cap (250k -> 125k, warning 100k at 80 %), so the per-underlying limit is
    breached. As for any breached per-underlying limit, every underlying is brought to its own warning level: A
    to the tightened 100k (cut 50,000), B to the file's 200k (cut 10,000). Without the override the plan would
    aim at the file's levels and cut A by nothing."""
    from risk_pipeline.quant.gap_risk import LimitOverride, apply_limit_overrides

    c = cfg(max_abs_net_delta_shares=250_000, warning_fraction=0.8)
    e = book([("a", "A", "Tech", 150_000.0, 1.0, 50.0, 50.0, 1.0), ("b", "B", "Tech", 210_000.0, 1.0, 40.0, 40.0, 1.0)])
    plain = evaluate_limits(e, c)
    assert results_by_name(plain)["max_abs_net_delta_shares"].status != BREACH
    overrides = [LimitOverride("max_abs_net_delta_shares", 125_000.0, "A", "earn-A", "2026-12-09T21:00:00Z")]
    tightened, _ = apply_limit_overrides(plain, overrides, ["A", "B"], [150_000.0, 210_000.0], [0.0, 0.0])
    assert results_by_name(tightened)["max_abs_net_delta_shares"].status == BREACH
    plan = required_reductions(e, c, tightened, overrides=overrides)
    assert plan.feasible
    np.testing.assert_allclose(plan.reduce_quantity, [50_000.0, 10_000.0])
    after = results_by_name(list(plan.after))["max_abs_net_delta_shares"]
    assert after.value <= after.warn_threshold  # re-evaluated with the tightened caps in force
    # the same breach list without the overrides aims at the file's 200k for A: no cut of A
    assert required_reductions(e, c, tightened).reduce_quantity[0] == 0.0
