"""Hedge selection against independent oracles: BSM closed forms (scipy), brute-force enumeration, CPPI and
beta-hedge formulas, and the Cboe variance-strip formula computed by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.sparse import csr_array
from scipy.stats import norm

from risk_pipeline.quant.hedging import (
    GreekRows,
    HedgeTargets,
    beta_hedge_quantity,
    bracketing_expiries,
    build_candidates,
    combine,
    cppi_target,
    expiry_variance,
    limit_trigger,
    position_greek_arrays,
    solve_hedge,
    tail_es,
    threshold_trigger,
    vix_from_variances,
)
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate

S, R, Q = 100.0, 0.03, 0.0


def bsm(s: float, k: float, t: float, vol: float, call: bool) -> tuple[float, float, float]:
    """Price, delta and vega per 0.01 vol of one European option (textbook Black-Scholes-Merton)."""
    d1 = (math.log(s / k) + (R - Q + vol * vol / 2) * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    if call:
        price = s * math.exp(-Q * t) * norm.cdf(d1) - k * math.exp(-R * t) * norm.cdf(d2)
        delta = math.exp(-Q * t) * norm.cdf(d1)
    else:
        price = k * math.exp(-R * t) * norm.cdf(-d2) - s * math.exp(-Q * t) * norm.cdf(-d1)
        delta = -math.exp(-Q * t) * norm.cdf(-d1)
    vega = s * math.exp(-Q * t) * norm.pdf(d1) * math.sqrt(t) / 100.0
    return price, delta, vega


def options(
    quantity: list[float], strike: list[float], t: list[float], vol: list[float], call: list[bool]
) -> Portfolio:
    n = len(quantity)
    return Portfolio(
        symbols=("XYZ",),
        spot=np.array([S]),
        symbol_index=np.zeros(n, dtype=np.intp),
        quantity=np.array(quantity, dtype=float),
        multiplier=100.0,
        is_option=True,
        is_call=np.array(call),
        strike=np.array(strike, dtype=float),
        time_years=np.array(t, dtype=float),
        implied_vol=np.array(vol, dtype=float),
        rate=R,
        dividend_yield=Q,
    )


def stock_lines(sides: list[int]) -> Portfolio:
    return Portfolio(("XYZ",), np.array([S]), np.zeros(len(sides), dtype=np.intp), np.array(sides, dtype=float))


def spot_scenarios(moves: np.ndarray, vol_scale: np.ndarray | None = None) -> ScenarioSet:
    return ScenarioSet(moves.reshape(-1, 1), vol_scale=None if vol_scale is None else vol_scale.reshape(-1, 1))


def targets(
    rows: GreekRows, book: Portfolio, warn: list[float], sc: ScenarioSet, *, cap: float = 1e12, es: float = 1e12
) -> HedgeTargets:
    g = position_greek_arrays(book)
    syms = [book.symbols[i] for i in book.symbol_index]
    exposure = rows.matrix(syms, g["delta"], g["gamma"], g["dollar_delta"], g["vega_per_vol_point"]).sum(axis=1)
    return HedgeTargets(
        greek_names=rows.names,
        exposure=exposure,
        warn_level=np.array(warn, dtype=float),
        book_pnl=evaluate(book, sc).pnl,
        loss_cap=cap,
        es_rows=np.arange(sc.n_scenarios),
        es_confidence=0.975,
        es_target=es,
        budget=1e9,
        min_notional=0.0,
    )


def test_delta_hedge_with_the_underlying_zeroes_delta_by_the_bsm_closed_form() -> None:
    book = options([1000.0], [105.0], [0.5], [0.25], [True])
    sc = spot_scenarios(np.array([-0.1, 0.0, 0.1]))
    rows = GreekRows(("XYZ",), (), dollar_delta=False, vega=False)
    lines = stock_lines([1, -1])
    cands = build_candidates(
        lines, [S + 0.01, S - 0.01], [S, S], rows, [(sc, 0.0)], symbol_columns=("XYZ",), horizon_calendar_days=7,
        financing_rate=0.0, budget=1e9,
    )  # fmt: skip
    sol = solve_hedge(cands, targets(rows, book, [0.5], sc))
    _, delta, _ = bsm(S, 105.0, 0.5, 0.25, True)
    expected_shares = 1000 * 100 * delta
    assert sol.status == "optimal"
    assert sol.quantity[0] == 0 and sol.quantity[1] == round(expected_shares)
    # fully revalued with the position_greeks code: the hedged delta is the rounding residual
    hedged = combine(book, Portfolio(("XYZ",), np.array([S]), np.zeros(1, dtype=np.intp), -sol.quantity[1:2]))
    residual = position_greek_arrays(hedged)["delta"].sum()
    assert abs(residual) <= 0.5
    assert residual == pytest.approx(expected_shares - round(expected_shares), abs=1e-6)


def vega_case() -> tuple[Portfolio, Portfolio, list[float], list[float], GreekRows, ScenarioSet]:
    """A book short 300 ATM straddles' worth of calls (vega far above its warning level) and three calls to buy."""
    book = options([-300.0], [100.0], [0.25], [0.2], [True])
    strikes, expiries, vols = [95.0, 100.0, 110.0], [0.5, 0.25, 0.75], [0.22, 0.2, 0.19]
    lines = options([1.0, 1.0, 1.0], strikes, expiries, vols, [True, True, True])
    mids = [bsm(S, k, t, v, True)[0] for k, t, v in zip(strikes, expiries, vols, strict=True)]
    asks = [m * 1.02 + 0.05 for m in mids]
    rows = GreekRows((), (), dollar_delta=False, vega=True)
    sc = spot_scenarios(np.array([-0.05, 0.05]), np.array([1.0, 1.0]))
    return book, lines, asks, mids, rows, sc


def test_vega_breach_is_hedged_under_the_warning_level_on_revaluation_and_is_cheapest_by_enumeration() -> None:
    book, lines, asks, mids, rows, sc = vega_case()
    book_vega = -300 * 100 * bsm(S, 100.0, 0.25, 0.2, True)[2]
    warn = 1500.0
    assert abs(book_vega) > warn
    cands = build_candidates(
        lines, asks, mids, rows, [(sc, 0.0)], symbol_columns=("XYZ",), horizon_calendar_days=7, financing_rate=0.0,
        budget=1e9, max_contracts=400,
    )  # fmt: skip
    t = targets(rows, book, [warn], sc)
    sol = solve_hedge(cands, t)
    assert sol.status == "optimal"
    assert np.all(sol.quantity == np.round(sol.quantity))
    # after-vega by an independent BSM vega (scipy) of each bought call
    after = book_vega + sum(
        q * 100 * bsm(S, k, tt, v, True)[2]
        for q, k, tt, v in zip(sol.quantity, [95.0, 100.0, 110.0], [0.5, 0.25, 0.75], [0.22, 0.2, 0.19], strict=True)
    )
    assert abs(after) <= warn + 1e-6
    # ... and through the position_greeks code on the hedged book
    hedged = combine(book, options(list(sol.quantity), [95.0, 100.0, 110.0], [0.5, 0.25, 0.75], [0.22, 0.2, 0.19],
                                   [True] * 3))  # fmt: skip
    assert abs(position_greek_arrays(hedged)["vega_per_vol_point"].sum()) <= warn + 1e-6
    # brute force over every combination: none feasible is cheaper
    unit_vega = np.array([100 * bsm(S, k, tt, v, True)[2] for k, tt, v in
                          zip([95.0, 100.0, 110.0], [0.5, 0.25, 0.75], [0.22, 0.2, 0.19], strict=True)])  # fmt: skip
    # (each quantity is bounded by (|book vega| + warn) / unit vega, else the hedged vega exceeds +warn)
    top = [int((abs(book_vega) + warn) // u) + 1 for u in unit_vega]
    x0, x1 = np.meshgrid(np.arange(top[0] + 1.0), np.arange(top[1] + 1.0), indexing="ij")
    best = math.inf
    for x2 in range(top[2] + 1):
        vega = book_vega + unit_vega[0] * x0 + unit_vega[1] * x1 + unit_vega[2] * x2
        cost = cands.cost[0] * x0 + cands.cost[1] * x1 + cands.cost[2] * x2
        feasible = np.abs(vega) <= warn
        if feasible.any():
            best = min(best, float(cost[feasible].min()))
    assert sol.cost == pytest.approx(best, rel=1e-9)


def test_es_and_scenario_loss_constraints_hold_on_full_revaluation() -> None:
    rng = np.random.default_rng(7)
    moves = np.clip(rng.standard_t(4, 400) * 0.02, -0.5, 0.5)
    vol_scale = np.exp(-3.0 * moves)  # vol up when spot falls
    sc = spot_scenarios(moves, vol_scale)
    book = Portfolio(("XYZ",), np.array([S]), np.zeros(1, dtype=np.intp), np.array([50_000.0]))
    lines = combine(options([1.0, 1.0], [95.0, 90.0], [0.25, 0.25], [0.24, 0.27], [False, False]), stock_lines([-1]))
    mids = [bsm(S, 95.0, 0.25, 0.24, False)[0], bsm(S, 90.0, 0.25, 0.27, False)[0], S]
    trade = [mids[0] + 0.05, mids[1] + 0.05, S - 0.01]
    rows = GreekRows((), (), dollar_delta=False, vega=False)
    cands = build_candidates(
        lines, trade, mids, rows, [(sc, 0.0)], symbol_columns=("XYZ",), horizon_calendar_days=7, financing_rate=0.02,
        budget=1e9,
    )  # fmt: skip
    before = evaluate(book, sc).pnl
    es_before = tail_es(before, 0.975)
    cap, es_target = 0.5 * -before.min(), 0.5 * es_before
    t = targets(rows, book, [], sc, cap=cap, es=es_target)
    sol = solve_hedge(cands, t)
    assert sol.status == "optimal" and sol.quantity.sum() > 0
    hedge = Portfolio(
        lines.symbols, lines.spot, lines.symbol_index, lines.quantity * sol.quantity, lines.multiplier,
        lines.is_option, lines.is_call, lines.strike, lines.time_years, lines.implied_vol, lines.rate,
        lines.dividend_yield,
    )  # fmt: skip
    after = evaluate(combine(book, hedge), sc).pnl
    assert -after.min() <= cap * (1 + 1e-9)
    assert tail_es(after, 0.975) <= es_target * (1 + 1e-9)
    # the RU value the optimizer saw is the empirical ES of the revalued book
    assert sol.model_es == pytest.approx(tail_es(after, 0.975), rel=1e-9)


def test_illiquid_chain_gives_no_hedge_with_the_reason_and_a_tight_budget_a_flagged_partial() -> None:
    book, lines, asks, mids, rows, sc = vega_case()
    t = targets(rows, book, [1500.0], sc)
    empty = build_candidates(
        Portfolio(("XYZ",), np.array([S]), np.zeros(0, dtype=np.intp), np.zeros(0)), [], [], rows, [(sc, 0.0)],
        symbol_columns=("XYZ",), horizon_calendar_days=7, financing_rate=0.0, budget=1e9,
    )  # fmt: skip
    none = solve_hedge(empty, t)
    assert none.status == "no_candidates" and none.partial and none.binding == ("no_liquid_candidate",)
    budget = 5_000.0
    cands = build_candidates(
        lines, asks, mids, rows, [(sc, 0.0)], symbol_columns=("XYZ",), horizon_calendar_days=7, financing_rate=0.0,
        budget=budget,
    )  # fmt: skip
    tight = HedgeTargets(**{**t.__dict__, "budget": budget})
    sol = solve_hedge(cands, tight)
    assert sol.status == "partial" and sol.partial
    assert sol.binding == ("vega_per_vol_point",)
    assert sol.outlay <= budget + 1e-6 and sol.quantity.sum() > 0
    assert "vega_per_vol_point" in sol.violations


def test_cppi_and_beta_hedge_match_their_closed_forms() -> None:
    c = cppi_target(nav=95e6, peak_nav=100e6, floor_fraction=0.85, multiplier=4.0, risky_exposure=80e6)
    assert c.floor == 85e6 and c.cushion == 10e6 and c.target_exposure == 40e6 and c.scale == 0.5
    assert cppi_target(80e6, 100e6, 0.85, 4.0, 50e6).target_exposure == 0.0  # below the floor: no risky exposure
    # sell index units: (target - current) / (index spot x multiplier)
    assert beta_hedge_quantity(30e6, 10e6, 5000.0 * 50) == -80
    assert beta_hedge_quantity(-2e6, 0.0, -40.0) == -50_000  # a -1x ETF at 40: sell to remove short beta
    assert beta_hedge_quantity(30e6, 0.0, -40.0) == 750_000


def test_triggers_record_value_threshold_and_urgency() -> None:
    assert threshold_trigger("tail_es", 0.04, 0.05, "ES") is None
    t = threshold_trigger("tail_es", 0.08, 0.05, "ES")
    assert t is not None and t.urgency == "IMMEDIATE" and t.value == 0.08
    assert limit_trigger("max_abs_vega_per_vol_point", "WARN", 85.0, 100.0, 0.85).urgency == "MEDIUM"
    assert limit_trigger("max_abs_vega_per_vol_point", "BREACH", 110.0, 100.0, 1.1).urgency == "HIGH"
    assert limit_trigger("max_abs_vega_per_vol_point", "BREACH", 160.0, 100.0, 1.6).urgency == "IMMEDIATE"


def test_volatility_index_of_a_small_chain_matches_the_hand_computed_strip() -> None:
    k = np.array([90.0, 95.0, 100.0, 105.0, 110.0, 115.0])
    call_bid = np.array([10.5, 6.2, 2.9, 1.0, 0.0, 0.0])
    call_ask = np.array([11.5, 6.8, 3.1, 1.2, 0.1, 0.1])
    put_bid = np.array([0.0, 0.9, 2.6, 5.8, 10.0, 15.0])
    put_ask = np.array([0.1, 1.1, 2.8, 6.2, 11.0, 16.0])
    minutes, rate = 30 * 1440.0, 0.02
    ev = expiry_variance(k, call_bid, call_ask, put_bid, put_ask, minutes, rate)
    # by hand: |C - P| is smallest at 100 (3.0 - 2.7): F = 100 + e^{RT} 0.3, K0 = 100
    t = minutes / 525_600
    g = math.exp(rate * t)
    f = 100 + g * (3.0 - 2.7)
    assert ev.forward == pytest.approx(f) and ev.k0 == 100.0
    # puts below K0: 95 (mid 1.0); 90 has a zero bid (skipped). Calls above: 105 (1.1); 110 and 115 zero bids.
    # strikes used 95, 100, 105: dK 5 each; Q(100) = (3.0 + 2.7) / 2
    contrib = 5 / 95**2 * 1.0 + 5 / 100**2 * 2.85 + 5 / 105**2 * 1.1
    expected = 2 / t * g * contrib - (f / 100 - 1) ** 2 / t
    assert ev.n_strikes == 3
    assert ev.variance == pytest.approx(expected, rel=1e-12)


def test_volatility_index_of_a_dense_flat_vol_chain_is_that_vol() -> None:
    """Under BSM with one vol, the 30-day variance strip prices that vol (Demeterfi et al. 1999)."""
    vol, f0 = 0.2, 100.0
    out = []
    for days in (23.0, 37.0):
        t = days / 365.0
        k = np.arange(30.0, 300.0, 0.25)
        d1 = (np.log(f0 / k) + vol**2 * t / 2) / (vol * math.sqrt(t))
        d2 = d1 - vol * math.sqrt(t)
        disc = math.exp(-R * t)
        call = disc * (f0 * norm.cdf(d1) - k * norm.cdf(d2))
        put = disc * (k * norm.cdf(-d2) - f0 * norm.cdf(-d1))
        tick = 1e-4
        out.append(expiry_variance(k, call, call + tick, put, put + tick, days * 1440.0, R))
    assert bracketing_expiries([out[0].minutes, out[1].minutes]) == (0, 1)
    assert vix_from_variances(out[0], out[1]) == pytest.approx(vol, rel=2e-3)


def test_boxed_milp_matches_the_unrestricted_milp_to_its_gap_and_meets_every_row() -> None:
    # a large short-vega book on one name (hedges of hundreds of contracts, so whole contracts cost little over
    # the LP bound and the boxed MILP is certified), 20 option quotes a side plus the stock
    rng = np.random.default_rng(3)
    n_book, n_quotes, n_sc = 40, 20, 300
    book = options(
        list(rng.integers(-600, 100, n_book).astype(float)), list(S * np.exp(rng.normal(0, 0.1, n_book))),
        list(rng.uniform(0.1, 0.8, n_book)), list(rng.uniform(0.18, 0.4, n_book)), list(rng.random(n_book) < 0.5),
    )  # fmt: skip
    k, t = S * np.exp(rng.normal(-0.05, 0.1, n_quotes)), rng.uniform(0.1, 0.5, n_quotes)
    v, c = rng.uniform(0.2, 0.35, n_quotes), rng.random(n_quotes) < 0.4
    lines = combine(
        options([1.0] * n_quotes + [-1.0] * n_quotes, [*k, *k], [*t, *t], [*v, *v], [*c, *c]), stock_lines([1, -1])
    )
    mid = position_greek_arrays(lines)["price"]
    trade = np.where(lines.quantity > 0, mid * 1.04 + 0.02, np.maximum(mid * 0.96 - 0.02, 0.0))
    moves = np.clip(rng.standard_t(4, n_sc) * 0.015, -0.5, 0.5)
    sc = spot_scenarios(moves, np.exp(-2.5 * moves))
    rows = GreekRows(("XYZ",), (), dollar_delta=False, vega=True)
    t0 = targets(rows, book, [1.0], sc)
    vega, es = float(t0.exposure[1]), tail_es(t0.book_pnl, 0.975)
    t1 = HedgeTargets(
        t0.greek_names, t0.exposure, np.array([abs(t0.exposure[0]) + 500.0, 0.5 * abs(vega)]), t0.book_pnl,
        0.9 * float(-t0.book_pnl.min()), t0.es_rows, 0.975, 0.8 * es, 1e9, 0.0,
    )  # fmt: skip
    cands = build_candidates(
        lines, trade, mid, rows, [(sc, 0.0)], symbol_columns=("XYZ",), horizon_calendar_days=7.0,
        financing_rate=0.05, budget=1e9,
    )  # fmt: skip
    boxed = solve_hedge(cands, t1)
    full = solve_hedge(cands, t1, window=math.inf, screen=())
    assert boxed.status == full.status == "optimal"
    assert "certified by the LP bound" in boxed.message and "unrestricted" in full.message
    assert boxed.cost <= full.cost * (1 + 1e-4) + 1e-6 and full.cost <= boxed.cost * (1 + 1e-4) + 1e-6
    x = boxed.quantity
    assert np.all(x == np.round(x))
    # every row on full revaluation of the hedged book (lines' P&L from the engine, not the candidates' matrix)
    hedged = combine(book, Portfolio(lines.symbols, lines.spot, lines.symbol_index, lines.quantity * x,
                                     lines.multiplier, lines.is_option, lines.is_call, lines.strike, lines.time_years,
                                     lines.implied_vol, lines.rate, lines.dividend_yield))  # fmt: skip
    pnl = evaluate(hedged, sc).pnl
    assert tail_es(pnl, 0.975) <= 0.8 * es * (1 + 1e-9)
    assert float(-pnl.min()) <= t1.loss_cap * (1 + 1e-9)
    after_vega = vega + float(cands.greeks[1] @ x)
    assert abs(after_vega) <= 0.5 * abs(vega) * (1 + 1e-9)


def test_screen_keeps_delta_one_lines_and_the_most_efficient_option_per_criterion() -> None:
    from risk_pipeline.quant.hedging import HedgeCandidates, screen_candidates

    # rows: vega (book short 1,000, level 500: over half its level), delta (book 10, level 1,000: not screened on)
    greeks = np.array([[+50.0, +80.0, -60.0, +10.0, 0.0], [0.3, -0.4, 0.5, 0.1, 1.0]])
    tail = np.array([[+200.0, -50.0, +900.0, +100.0, 0.0], [+100.0, -30.0, +300.0, +60.0, 0.0]])
    cost = np.array([10.0, 40.0, 30.0, 1.0, 0.01])
    c = HedgeCandidates(
        labels=tuple("abcde"), side=np.ones(5, dtype=np.intp), greeks=greeks, scenario_pnl=tail, cost=cost,
        premium=np.zeros(5), notional=np.full(5, 1e5), max_contracts=np.full(5, 1e6),
    )  # fmt: skip
    opt = np.array([True, True, True, True, False])
    book_tail = np.array([-5_000.0, -3_000.0])
    kept = screen_candidates(c, opt, np.array([-1_000.0, 10.0]), np.array([500.0, 1_000.0]), book_tail, keep=2)
    # vega per dollar: a 5.0, b 2.0, d 10.0 (c lowers vega): d; tail per dollar: a 15, c 20, d 80: d again;
    # with one pick per criterion both pick d, plus the delta-one line e
    assert kept.tolist() == [3, 4]
    kept = screen_candidates(c, opt, np.array([-1_000.0, 10.0]), np.array([500.0, 1_000.0]), book_tail, keep=4)
    # two per criterion: vega d, a; tail d, c
    assert kept.tolist() == [0, 2, 3, 4]


def _dense_greek_rows(rows: GreekRows, symbols: list[str], d: np.ndarray, g: np.ndarray, dd: np.ndarray,
                      v: np.ndarray) -> np.ndarray:  # fmt: skip
    """The exposure matrix as it was built before it was sparse: one dense row per symbol and Greek."""
    sym = np.asarray(symbols, dtype=object)
    parts = [np.where(sym == s, d, 0.0) for s in rows.delta_symbols]
    parts += [np.where(sym == s, g, 0.0) for s in rows.gamma_symbols]
    parts += [dd] if rows.dollar_delta else []
    parts += [v] if rows.vega else []
    return np.vstack(parts) if parts else np.zeros((0, len(symbols)))


def _random_greeks(rng: np.random.Generator, n_sym: int, n: int) -> tuple[tuple[str, ...], list[str], list[np.ndarray]]:
    names = tuple(f"N{i:03d}" for i in range(n_sym))
    # some positions on symbols that have no row, some exact zeros (dropped from the sparse matrix)
    picked = [names[i] if i < n_sym else f"OTHER{i}" for i in rng.integers(0, n_sym + 3, n)]
    arrays = [rng.normal(0.0, 1e3, n) * (rng.random(n) < 0.9) for _ in range(4)]
    return names, picked, arrays


@pytest.mark.parametrize(("delta", "gamma", "book"), [(True, True, True), (True, False, False), (False, True, True)])
def test_sparse_exposure_matrix_equals_the_dense_one_on_a_book_of_many_symbols(delta: bool, gamma: bool,
                                                                               book: bool) -> None:  # fmt: skip
    rng = np.random.default_rng(11)
    names, picked, (d, g, dd, v) = _random_greeks(rng, 250, 4_000)
    rows = GreekRows(names if delta else (), names[::-1] if gamma else (), dollar_delta=book, vega=book)
    dense = _dense_greek_rows(rows, picked, d, g, dd, v)
    sparse = rows.matrix(picked, d, g, dd, v)
    assert sparse.shape == dense.shape
    np.testing.assert_array_equal(sparse.toarray(), dense)
    # the same compressed arrays as the dense matrix converted (what HiGHS is given)
    ref = csr_array(dense)
    np.testing.assert_array_equal(sparse.indptr, ref.indptr)
    np.testing.assert_array_equal(sparse.indices, ref.indices)
    np.testing.assert_array_equal(sparse.data, ref.data)
    # about four entries per position, not (2 x symbols + 2) per position
    assert sparse.nnz <= (int(delta) + int(gamma) + 2 * int(book)) * len(picked)
    # the book's exposure: the dense row sums (per-symbol rows to rounding, the book rows bit for bit)
    totals = rows.totals(picked, d, g, dd, v)
    np.testing.assert_allclose(totals, dense.sum(axis=1), rtol=1e-12, atol=1e-9)
    if book:
        np.testing.assert_array_equal(totals[-2:], dense.sum(axis=1)[-2:])


def test_sparse_exposure_matrix_repeats_a_symbol_listed_twice_and_handles_no_rows() -> None:
    d, g = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    rows = GreekRows(("A", "B", "A"), (), dollar_delta=False, vega=False)
    dense = _dense_greek_rows(rows, ["A", "B", "A"], d, g, d, d)
    np.testing.assert_array_equal(rows.matrix(["A", "B", "A"], d, g, d, d).toarray(), dense)
    np.testing.assert_array_equal(rows.totals(["A", "B", "A"], d, g, d, d), [4.0, 2.0, 4.0])
    none = GreekRows((), (), dollar_delta=False, vega=False)
    assert none.matrix(["A"], d[:1], g[:1], d[:1], d[:1]).shape == (0, 1)
    assert none.totals(["A"], d[:1], g[:1], d[:1], d[:1]).shape == (0,)


def _screen_dense_reference(
    greeks: np.ndarray, scen: np.ndarray, cost: np.ndarray, opt: np.ndarray, exposure: np.ndarray, warn: np.ndarray,
    tail: np.ndarray, keep: int,
) -> np.ndarray:  # fmt: skip
    """The screen as it ran on the dense matrix: every criterion scored over every line."""
    per_dollar = 1.0 / np.maximum(cost, 1e-9)
    effects = [
        -np.sign(e) * r / abs(e) for e, w, r in zip(exposure, warn, greeks, strict=True) if abs(e) > 0.5 * w and e
    ]
    if -np.mean(tail) > 0:
        effects.append(scen.mean(axis=0) / -np.mean(tail))
    chosen = ~opt
    per = max(keep // len(effects), 1)
    for effect in effects:
        score = np.where(opt & (effect > 0.0), effect * per_dollar, -np.inf)
        best = np.argsort(-score, kind="stable")[:per]
        chosen[best[np.isfinite(score[best])]] = True
    return np.flatnonzero(chosen)


@pytest.mark.parametrize("keep", [10, 160, 2_000])
def test_screen_on_the_sparse_matrix_keeps_what_the_dense_screen_keeps(keep: int) -> None:
    from risk_pipeline.quant.hedging import HedgeCandidates, screen_candidates

    rng = np.random.default_rng(5)
    names, picked, (d, g, dd, v) = _random_greeks(rng, 200, 6_000)
    d[rng.random(d.size) < 0.05] = 50.0  # ties in score between lines of one symbol (same cost below)
    rows = GreekRows(names, names, dollar_delta=True, vega=True)
    sparse = rows.matrix(picked, d, g, dd, v)
    dense = sparse.toarray()
    n = len(picked)
    cost = np.where(rng.random(n) < 0.1, 7.0, rng.uniform(1.0, 50.0, n))
    scen = rng.normal(0.0, 100.0, (25, n))
    opt = rng.random(n) < 0.8
    # about a third of the rows over half their level
    exposure = rng.normal(0.0, 1e3, dense.shape[0])
    warn = np.abs(exposure) * rng.choice([1.5, 3.0, 3.0], exposure.size)
    tail = rng.normal(-500.0, 100.0, 25)
    ref = _screen_dense_reference(dense, scen, cost, opt, exposure, warn, tail, keep)

    def cands(greeks: object) -> HedgeCandidates:
        return HedgeCandidates(
            labels=tuple(map(str, range(n))), side=np.ones(n, dtype=np.intp), greeks=greeks, scenario_pnl=scen,
            cost=cost, premium=np.zeros(n), notional=np.full(n, 1e5), max_contracts=np.full(n, 1e6),
        )  # fmt: skip

    np.testing.assert_array_equal(screen_candidates(cands(sparse), opt, exposure, warn, tail, keep), ref)
    np.testing.assert_array_equal(screen_candidates(cands(dense), opt, exposure, warn, tail, keep), ref)


@pytest.mark.parametrize("elastic", [False, True])
def test_program_matrix_is_the_same_from_sparse_or_dense_greeks(elastic: bool) -> None:
    from dataclasses import replace

    from risk_pipeline.quant.hedging import _program

    rng = np.random.default_rng(3)
    n_sym, n, n_sc = 30, 400, 60
    names = tuple(f"N{i}" for i in range(n_sym))
    sym = rng.integers(0, n_sym, n)
    lines = Portfolio(names, rng.uniform(20, 200, n_sym), sym, rng.choice([-1.0, 1.0], n), 100.0, True,
                      rng.random(n) < 0.5, rng.uniform(20, 200, n_sym)[sym], rng.uniform(0.05, 0.5, n),
                      rng.uniform(0.15, 0.5, n), R, Q)  # fmt: skip
    lines = replace(lines, strike=lines.spot[sym] * np.exp(rng.normal(0, 0.1, n)))
    mid = position_greek_arrays(lines)["price"]
    sc = ScenarioSet(rng.normal(0.0, 0.05, (n_sc, n_sym)))
    rows = GreekRows(names, names, dollar_delta=True, vega=True)
    c = build_candidates(lines, mid * 1.02, mid, rows, [(sc, 0.0)], symbol_columns=names, horizon_calendar_days=7.0,
                         financing_rate=0.05, budget=1e6, labels=[str(i) for i in range(n)])  # fmt: skip
    dense = replace(c, greeks=c.greeks.toarray())
    m = len(rows.names)
    warn = np.concatenate([rng.uniform(0.0, 1e3, m - 1), [0.0]])  # one zero level: its slack entry is dropped
    t = HedgeTargets(rows.names, rng.normal(0, 1e3, m), warn, rng.normal(0, 1e4, n_sc), 2e4, np.arange(n_sc),
                     0.975, 1e4, 1e6, 1e4)  # fmt: skip
    es_h = c.scenario_pnl[t.es_rows]
    cuts = [rng.random(n_sc) / n_sc for _ in range(3)]
    loss_rows = np.array([3, 7, 11])
    a = _program(c, t, loss_rows, cuts, es_h, t.book_pnl, elastic, 1e4)
    b = _program(dense, t, loss_rows, cuts, es_h, t.book_pnl, elastic, 1e4)
    ca, cb = a["constraints"][0], b["constraints"][0]
    for attr in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(ca.A, attr), getattr(cb.A, attr))
    np.testing.assert_array_equal(ca.lb, cb.lb)
    np.testing.assert_array_equal(ca.ub, cb.ub)
    # the rows as the dense construction built them (Greeks, scenario losses, ES cuts; each slack in its column:
    # the warning level on each Greek row's own slack, none where the level is 0), scaled by their largest entry
    G = c.greeks.toarray()
    n_slack = m + 2 if elastic else 0
    greek_slack = np.hstack([np.diag(warn), np.zeros((m, 2))]) if elastic else np.zeros((m, 0))
    loss_slack, es_slack = np.zeros((3, n_slack)), np.zeros((3, n_slack))
    if elastic:
        loss_slack[:, m], es_slack[:, m + 1] = 2e4, -1e4
    raw = np.vstack([
        np.hstack([G, np.zeros((m, n)), -greek_slack]),
        np.hstack([G, np.zeros((m, n)), greek_slack]),
        np.hstack([c.scenario_pnl[loss_rows], np.zeros((3, n)), loss_slack]),
        np.hstack([-(np.vstack(cuts) @ es_h), np.zeros((3, n)), es_slack]),
    ])  # fmt: skip
    expected = raw * (1.0 / np.maximum(np.abs(raw).max(axis=1), 1e-12))[:, None]
    np.testing.assert_array_equal(ca.A.toarray()[: raw.shape[0]], expected)


# ----------------------------------------------------------------------------------------------
# lazy rows, the incumbent and the time limit against the whole program solved at once
# ----------------------------------------------------------------------------------------------


def random_program(seed: int, n: int = 30, n_sc: int = 120) -> tuple:
    """A random hedge program: a book losing in the market factor's down moves, lines that hedge it in various
    amounts, the ES target at 75 % of the book's ES and the loss cap at 85 % of its worst loss, Greek rows under
    the book's, half the lines below the minimum notional."""
    from risk_pipeline.quant.hedging import HedgeCandidates

    rng = np.random.default_rng(seed)
    m = 4
    f = rng.standard_t(4, n_sc)
    G = rng.normal(0.0, 1.0, (m, n)) * (rng.random((m, n)) < 0.5)
    H = -np.outer(f, rng.uniform(-0.5, 2.0, n)) * 30.0 + rng.normal(0.0, 15.0, (n_sc, n))
    book = f * 400.0 + rng.normal(0.0, 100.0, n_sc)
    g = rng.normal(0.0, 20.0, m)
    cost = rng.uniform(0.5, 5.0, n)
    premium = np.where(rng.random(n) < 0.5, rng.uniform(1.0, 20.0, n), 0.0)
    notional = np.where(rng.random(n) < 0.5, rng.uniform(100.0, 900.0, n), rng.uniform(1e3, 5e3, n))
    es_rows = np.arange(40, n_sc)
    c = HedgeCandidates(
        labels=tuple(str(i) for i in range(n)), side=np.ones(n, dtype=np.intp), greeks=G, scenario_pnl=H, cost=cost,
        premium=premium, notional=notional, max_contracts=np.full(n, 50.0),
    )  # fmt: skip
    t = HedgeTargets(
        greek_names=tuple(f"g{k}" for k in range(m)), exposure=g, warn_level=np.maximum(np.abs(g) * 0.8, 5.0),
        book_pnl=book, loss_cap=float(-book.min()) * 0.85, es_rows=es_rows, es_confidence=0.9,
        es_target=tail_es(book[es_rows], 0.9) * 0.75, budget=float(cost.sum() + premium.sum()) * 3, min_notional=1e3,
    )  # fmt: skip
    return c, t


def whole_program_milp(
    c: object, t: HedgeTargets, lines: np.ndarray | None = None, relaxed: bool = False
) -> tuple[float, np.ndarray]:
    """The whole program in one ``scipy.optimize.milp``: every scenario row, the ES in Rockafellar-Uryasev form
    with its auxiliary variables, the minimum notional with binaries (only ``lines`` may trade); ``relaxed``: its LP
    relaxation (quantities and binaries continuous)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    G, H = np.asarray(c.greeks), c.scenario_pnl
    n, n_es = c.n, t.es_rows.size
    m = (1 - t.es_confidence) * n_es
    # variables x (n), z (n), a, u (n_es)
    nv = 2 * n + 1 + n_es
    rows, lo, hi = [], [], []

    def add(a: np.ndarray, low: float, high: float) -> None:
        rows.append(a), lo.append(low), hi.append(high)

    for k in range(G.shape[0]):
        add(np.concatenate([G[k], np.zeros(nv - n)]), -t.warn_level[k] - t.exposure[k], t.warn_level[k] - t.exposure[k])
    for s in range(H.shape[0]):
        add(np.concatenate([H[s], np.zeros(nv - n)]), -t.loss_cap - t.book_pnl[s], np.inf)
    for i, s in enumerate(t.es_rows):  # u_s >= -(P_s + H_s x) - a
        e = np.zeros(n_es)
        e[i] = 1.0
        add(np.concatenate([H[s], np.zeros(n), [1.0], e]), -t.book_pnl[s], np.inf)
    add(np.concatenate([np.zeros(2 * n), [1.0], np.full(n_es, 1.0 / m)]), -np.inf, t.es_target)
    add(np.concatenate([c.premium + c.cost, np.zeros(nv - n)]), -np.inf, t.budget)
    for j in range(n):  # notional x_j >= min z_j, x_j <= U z_j
        a, b = np.zeros(nv), np.zeros(nv)
        a[j], a[n + j] = c.notional[j], -t.min_notional
        b[j], b[n + j] = 1.0, -c.max_contracts[j]
        add(a, 0.0, np.inf)
        add(b, -np.inf, 0.0)
    upper = np.concatenate([c.max_contracts, np.ones(n), [np.inf], np.full(n_es, np.inf)])
    if lines is not None:
        off = np.setdiff1d(np.arange(n), lines)
        upper[off] = 0.0
    res = milp(
        np.concatenate([c.cost, np.zeros(nv - n)]),
        integrality=np.concatenate([np.full(2 * n, 0.0 if relaxed else 1.0), np.zeros(1 + n_es)]),
        bounds=Bounds(np.concatenate([np.zeros(2 * n), [-np.inf], np.zeros(n_es)]), upper),
        constraints=[LinearConstraint(np.array(rows), np.array(lo), np.array(hi))], options={"mip_rel_gap": 1e-9},
    )  # fmt: skip
    assert res.status == 0
    return float(res.fun), res.x[:n] if relaxed else np.round(res.x[:n])


def meets_every_row(c: object, t: HedgeTargets, x: np.ndarray) -> bool:
    """Every row of the program at ``x``, computed directly (not through the module's checks)."""
    G = np.asarray(c.greeks)
    pnl = t.book_pnl + c.scenario_pnl @ x
    losses = np.sort(-pnl[t.es_rows])[::-1]
    m = (1 - t.es_confidence) * t.es_rows.size  # ES: 1/m on the floor(m) worst, the rest on the next one
    es = (losses[: int(m)].sum() + (m - int(m)) * losses[int(m)]) / m
    return bool(
        np.all(np.abs(t.exposure + G @ x) <= t.warn_level * (1 + 1e-9))
        and -pnl.min() <= t.loss_cap * (1 + 1e-9)
        and es <= t.es_target * (1 + 1e-9)
        and (c.premium + c.cost) @ x <= t.budget * (1 + 1e-9)
        and np.all((x == 0) | (c.notional * x >= t.min_notional * (1 - 1e-9)))
        and np.all((x == np.round(x)) & (x >= 0) & (x <= c.max_contracts))
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lazy_rows_reach_the_whole_programs_optimum(seed: int) -> None:
    c, t = random_program(seed)
    assert not meets_every_row(c, t, np.zeros(c.n))
    best, x_best = whole_program_milp(c, t)
    assert best > 0 and meets_every_row(c, t, x_best)
    sol = solve_hedge(c, t, time_limit=60.0, rows_per_round=3)
    assert sol.status == "optimal" and not sol.partial
    assert meets_every_row(c, t, sol.quantity)
    assert best * (1 - 1e-4) - 1e-9 <= sol.cost <= best * (1 + 1e-4) + 1e-9
    assert sol.lower_bound <= sol.cost + 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_restricted_box_meets_every_row_and_is_the_whole_programs_optimum_on_its_lines(seed: int) -> None:
    from risk_pipeline.quant.hedging import _restricted_milp, _tail_weights

    c, t = random_program(seed)
    _, x_best = whole_program_milp(c, t)
    lines = np.union1d(np.flatnonzero(x_best > 0), np.arange(5))  # the optimum's lines and a few more
    es_book = t.book_pnl[t.es_rows]
    x = _restricted_milp(
        c, t, lines, np.zeros(c.n), c.max_contracts, 60.0, 1e-9, [int(np.argmin(t.book_pnl))],
        [_tail_weights(-es_book, t.es_confidence)], 2,
    )  # fmt: skip
    assert x is not None and meets_every_row(c, t, x)
    assert np.all(x[np.setdiff1d(np.arange(c.n), lines)] == 0)
    best, _ = whole_program_milp(c, t, lines)
    assert float(c.cost @ x) == pytest.approx(best, rel=1e-6)


def test_a_solve_stopped_early_returns_a_hedge_meeting_every_row_with_an_honest_gap() -> None:
    stopped = 0
    for seed in (0, 2, 5):
        c, t = random_program(seed, n=60)
        best, _ = whole_program_milp(c, t)
        # no box certified (gap 0), the unrestricted MILP stopped at its first node: the kept hedge comes back
        sol = solve_hedge(c, t, time_limit=60.0, mip_rel_gap=0.0, node_limit=1, rows_per_round=3)
        assert sol.status in ("optimal", "time_limit") and not sol.partial
        assert meets_every_row(c, t, sol.quantity)
        assert sol.cost >= best * (1 - 1e-9) - 1e-9
        if sol.status == "time_limit":
            stopped += 1
            assert "not proven optimal" in sol.message
            assert sol.lower_bound <= best * (1 + 1e-9) + 1e-9
            assert sol.gap == pytest.approx((sol.cost - sol.lower_bound) / sol.cost)
            assert sol.first_feasible_seconds <= sol.solve_seconds
    assert stopped  # the path is exercised


def test_check_hedge_agrees_with_a_direct_check_of_every_row() -> None:
    from risk_pipeline.quant.hedging import check_hedge

    c, t = random_program(1)
    _, x_best = whole_program_milp(c, t)
    rng = np.random.default_rng(0)
    trials = [x_best, np.zeros(c.n), x_best + 1.0, np.maximum(x_best - 1.0, 0.0)]
    trials += [np.where(rng.random(c.n) < 0.3, rng.integers(0, 20, c.n), 0).astype(float) for _ in range(30)]
    verdicts = [check_hedge(c, t, x).feasible for x in trials]
    assert verdicts == [meets_every_row(c, t, x) for x in trials]
    assert verdicts[0] and not verdicts[1]


@pytest.mark.parametrize("elastic", [False, True])
def test_program_built_from_its_cache_equals_the_program_built_afresh(elastic: bool) -> None:
    from risk_pipeline.quant.hedging import _program, _tail_weights

    c, t = random_program(3)
    es_h, es_book = c.scenario_pnl[t.es_rows], t.book_pnl[t.es_rows]
    cache: dict = {}
    rows: list[int] = []
    cuts: list[np.ndarray] = []
    for k in range(4):  # rounds adding rows and cuts, as solve_hedge does
        a = _program(c, t, np.array(rows, dtype=np.intp), cuts, es_h, es_book, elastic, 1e4, cache)
        b = _program(c, t, np.array(rows, dtype=np.intp), cuts, es_h, es_book, elastic, 1e4)
        ca, cb = a["constraints"][0], b["constraints"][0]
        for attr in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(ca.A, attr), getattr(cb.A, attr))
        pairs = ((ca.lb, cb.lb), (ca.ub, cb.ub), (a["objective"], b["objective"]), (a["bounds"].ub, b["bounds"].ub))
        for x, y in pairs:
            np.testing.assert_array_equal(x, y)
        rows += [3 * k, 3 * k + 1]
        cuts.append(_tail_weights(-(es_book + es_h @ np.full(c.n, float(k))), t.es_confidence))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reduced_cost_bounds_hold_every_point_no_dearer_than_the_kept_hedge_by_enumeration(seed: int) -> None:
    """Every integer point of a small program (4 lines, 0-8 contracts each, enumerated) that meets its rows and
    costs at most the kept hedge lies within ``_reduced_cost_bounds``, which are tighter than the program's."""
    import itertools
    from dataclasses import replace

    from risk_pipeline.quant.hedging import _lp_relaxation, _program, _reduced_cost_bounds, _tail_weights

    c, t = random_program(seed, n=4, n_sc=80)
    c = replace(c, max_contracts=np.full(4, 8.0), notional=np.array([300.0, 600.0, 2e3, 150.0]))
    grid = np.array(list(itertools.product(range(9), repeat=4)), dtype=float)
    rows = np.argsort(t.book_pnl)[:5]  # the book's 5 worst scenarios, the cap met by 40 % of the points
    cap = float(np.quantile((-(t.book_pnl[rows][:, None] + c.scenario_pnl[rows] @ grid.T)).max(axis=0), 0.4))
    t = replace(t, exposure=np.zeros(4), warn_level=np.full(4, 30.0), min_notional=1e3, budget=1e6, loss_cap=cap,
                es_target=1e9)  # fmt: skip
    es_h, es_book = c.scenario_pnl[t.es_rows], t.book_pnl[t.es_rows]
    prog = _program(c, t, rows, [_tail_weights(-es_book, t.es_confidence)], es_h, es_book, False, 1.0)
    con = prog["constraints"][0]
    A, lo_row, hi_row = con.A.toarray(), np.asarray(con.lb), np.asarray(con.ub)
    points = []
    for x in grid:
        v = np.concatenate([x, (x > 0) & (c.notional < t.min_notional)])  # z: 1 exactly where a small line trades
        ax = A @ v
        if np.all(ax >= lo_row - 1e-9) and np.all(ax <= hi_row + 1e-9):
            points.append((float(c.cost @ x), v))
    assert len(points) > 50
    costs = np.array([p[0] for p in points])
    lp = _lp_relaxation(prog)
    assert lp.status == 0
    tighter = 0
    for kept in np.sort(costs)[[0, 5, len(costs) // 5]]:  # kept hedges: the cheapest, the 6th, at 20 %
        b = _reduced_cost_bounds(prog, lp, kept)
        inside = [bool(np.all((v >= b.lb) & (v <= b.ub))) for _, v in points]
        assert all(ok for (cost, _), ok in zip(points, inside, strict=True) if cost <= kept)
        assert np.all(b.lb >= prog["bounds"].lb) and np.all(b.ub <= prog["bounds"].ub)
        tighter += int(np.sum(b.ub < prog["bounds"].ub) + np.sum(b.lb > prog["bounds"].lb))
    assert tighter  # the bounds are tighter than the program's


def test_unrestricted_milp_within_the_kept_hedges_bounds_reaches_the_whole_programs_optimum() -> None:
    """No box certified (gap 1e-9): the unrestricted MILP runs with a kept hedge, within its reduced-cost bounds;
    the hedge returned is the optimum of the whole program solved at once (every scenario row, the ES in
    Rockafellar-Uryasev form) and, when it costs the kept hedge's cost, the kept hedge itself."""
    through = 0
    for seed in (0, 1, 2, 5):
        c, t = random_program(seed, n=60)
        best, _ = whole_program_milp(c, t)
        sol = solve_hedge(c, t, time_limit=120.0, mip_rel_gap=1e-9, rows_per_round=3)
        assert sol.status == "optimal" and not sol.partial
        assert meets_every_row(c, t, sol.quantity)
        assert sol.cost == pytest.approx(best, rel=1e-7, abs=1e-7)
        through += "reduced-cost bounds" in sol.message
    assert through  # the path is exercised


def symbol_program(seed: int, n_sym: int = 8, per: int = 3, n_sc: int = 100) -> tuple:
    """A random program with a per-symbol structure: ``per`` lines on each of ``n_sym`` symbols, one Greek row per
    symbol (its lines only; a third of the symbols over their level) and one book row on every line, scenario
    P&L as ``random_program``'s, half the lines below the minimum notional (1 to 9 contracts needed)."""
    from risk_pipeline.quant.hedging import HedgeCandidates

    rng = np.random.default_rng(seed)
    n = n_sym * per
    sym = np.repeat(np.arange(n_sym), per)
    G = np.zeros((n_sym + 1, n))
    G[sym, np.arange(n)] = np.resize([1.0, -1.0], n) * rng.uniform(0.5, 1.5, n)
    G[n_sym] = rng.normal(0.0, 1.0, n)
    f = rng.standard_t(4, n_sc)
    H = -np.outer(f, rng.uniform(-0.5, 2.0, n)) * 30.0 + rng.normal(0.0, 15.0, (n_sc, n))
    book = f * 400.0 + rng.normal(0.0, 100.0, n_sc)
    level = np.full(n_sym + 1, 4.0)
    g = rng.uniform(-3.0, 3.0, n_sym + 1)
    over = rng.random(n_sym) < 1 / 3
    g[:n_sym] = np.where(over, np.sign(g[:n_sym]) * rng.uniform(5.0, 9.0, n_sym), g[:n_sym])
    cost = rng.uniform(0.5, 5.0, n)
    notional = np.where(rng.random(n) < 0.5, 1e3 / rng.integers(1, 10, n) - 1.0, rng.uniform(1e3, 5e3, n))
    es_rows = np.arange(30, n_sc)
    c = HedgeCandidates(
        labels=tuple(str(i) for i in range(n)), side=np.ones(n, dtype=np.intp), greeks=G, scenario_pnl=H, cost=cost,
        premium=np.zeros(n), notional=notional, max_contracts=np.full(n, 40.0),
    )  # fmt: skip
    t = HedgeTargets(
        greek_names=tuple(f"g{k}" for k in range(n_sym + 1)), exposure=g, warn_level=level, book_pnl=book,
        loss_cap=float(-book.min()) * 0.9, es_rows=es_rows, es_confidence=0.9,
        es_target=tail_es(book[es_rows], 0.9) * 0.85, budget=1e6, min_notional=1e3,
    )  # fmt: skip
    return c, t


def solved_at_the_whole_programs_optimum(c: Any, t: Any, **solve_args: Any) -> Any:
    """``solve_hedge(c, t, **solve_args)``, asserted optimal, meeting every row, at the cost of the whole program
    solved at once by HiGHS (``whole_program_milp``) and with a lower bound not above it; the solution."""
    best, _ = whole_program_milp(c, t)
    sol = solve_hedge(c, t, **solve_args)
    assert sol.status == "optimal" and not sol.partial
    assert meets_every_row(c, t, sol.quantity)
    assert sol.cost == pytest.approx(best, rel=1e-7, abs=1e-7)
    assert sol.lower_bound <= best * (1 + 1e-9) + 1e-9
    return sol


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_lagrangian_core_keeps_every_point_no_dearer_than_the_kept_hedge_by_enumeration(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every integer point of a small per-symbol program (3 symbols of 2 lines, 0-7 contracts each, enumerated)
    that meets its rows and costs at most the kept hedge lies within ``_lagrangian_core``'s bounds, whose lower
    bound is at most the program's optimum and at least its LP relaxation's; some lines are fixed at zero."""
    import itertools
    from dataclasses import replace

    import risk_pipeline.quant.hedging as hedging
    from risk_pipeline.quant.hedging import _lagrangian_core, _lp_relaxation, _program, _reduced_cost_bounds

    monkeypatch.setattr(hedging, "LOCAL_ROW_NONZEROS", 2)  # the symbols' rows (2 lines) local, the book row not
    c, t = symbol_program(seed, n_sym=3, per=2, n_sc=60)
    G = np.asarray(c.greeks).copy()
    G[np.arange(3).repeat(2), np.arange(6)] = np.tile([1.0, -1.0], 3) * np.random.default_rng(seed).uniform(0.5, 1.5, 6)
    c = replace(c, greeks=G, max_contracts=np.full(6, 7.0))
    grid = np.array(list(itertools.product(range(8), repeat=6)), dtype=float)
    rows = np.argsort(t.book_pnl)[:4]  # the book's 4 worst scenarios, the cap met by 80 % of the points
    cap = float(np.quantile((-(t.book_pnl[rows][:, None] + c.scenario_pnl[rows] @ grid.T)).max(axis=0), 0.8))
    t = replace(
        t,
        loss_cap=cap,
        es_target=1e9,
        exposure=np.array([3.5, 0.5, -1.0, 0.0]),
        warn_level=np.array([2.5, 2.5, 2.5, 8.0]),
    )
    es_h, es_book = c.scenario_pnl[t.es_rows], t.book_pnl[t.es_rows]
    prog = _program(c, t, rows, [], es_h, es_book, False, 1.0)
    con = prog["constraints"][0]
    A, lo_row, hi_row = con.A.toarray(), np.asarray(con.lb), np.asarray(con.ub)
    small = c.notional < t.min_notional
    z = (grid > 0) & small[None, :]  # z: 1 exactly where a small line trades
    v_all = np.hstack([grid, z])
    ax = v_all @ A.T
    ok = np.all(ax >= lo_row - 1e-9, axis=1) & np.all(ax <= hi_row + 1e-9, axis=1)
    points, costs = v_all[ok], grid[ok] @ c.cost
    assert points.shape[0] > 20
    lp = _lp_relaxation(prog)
    assert lp.status == 0
    fixed = 0
    for kept in np.sort(costs)[[0, 3, len(costs) // 10]]:  # kept hedges: the cheapest, the 4th, at 10 %
        rc = _reduced_cost_bounds(prog, lp, kept)
        got = _lagrangian_core(prog, lp, kept, rc, 60.0)
        assert got is not None
        b, bound = got
        assert lp.fun - 1e-7 * abs(lp.fun) <= bound <= costs.min() + 1e-7
        inside = np.all((points >= b.lb) & (points <= b.ub), axis=1)
        assert np.all(inside[costs <= kept])
        assert np.all(b.lb >= rc.lb) and np.all(b.ub <= rc.ub)
        fixed += int(np.sum((b.ub[:6] == 0) & (rc.ub[:6] > 0)))
    assert fixed  # lines fixed beyond the reduced-cost bounds


def test_unrestricted_milp_within_the_lagrangian_core_reaches_the_whole_programs_optimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No box certified (gap 1e-9): the unrestricted MILP runs within the kept hedge's reduced-cost bounds and the
    per-symbol Lagrangian core; the hedge returned is the optimum of the whole program solved at once."""
    import risk_pipeline.quant.hedging as hedging

    monkeypatch.setattr(hedging, "LOCAL_ROW_NONZEROS", 3)  # the symbols' rows local, the book row relaxed
    through = 0
    for seed in (0, 1, 2, 3, 4, 5):
        c, t = symbol_program(seed, n_sym=10, per=3)
        sol = solved_at_the_whole_programs_optimum(c, t, time_limit=120.0, mip_rel_gap=1e-9, rows_per_round=3)
        through += "per-symbol Lagrangian bound" in sol.message
    assert through  # the path is exercised


@pytest.mark.parametrize("seed", [1, 3, 4, 8])  # seeds where the ES row binds (the Greek rows hold it elsewhere)
def test_exact_es_row_gives_the_whole_programs_optimum(seed: int) -> None:
    """The program with every scenario row, no ES cut and ``_with_exact_es``'s Rockafellar-Uryasev row, solved by one
    MILP, has the optimum of the whole program (its ES row written out independently) and meets every row."""
    from dataclasses import replace

    from scipy.optimize import milp

    from risk_pipeline.quant.hedging import _program, _with_exact_es

    c, t = random_program(seed)
    t = replace(t, loss_cap=1e9, es_target=0.6 * tail_es(t.book_pnl[t.es_rows], t.es_confidence))  # the ES binds
    best, _ = whole_program_milp(c, t)
    es_h, es_book = c.scenario_pnl[t.es_rows], t.book_pnl[t.es_rows]
    prog = _program(c, t, np.arange(t.book_pnl.size), [], es_h, es_book, False, 1.0)
    exact = _with_exact_es(prog, es_h, es_book, t.es_target, t.es_confidence)
    res = milp(
        exact["objective"], integrality=exact["integrality"], bounds=exact["bounds"],
        constraints=exact["constraints"], options={"mip_rel_gap": 1e-9},
    )  # fmt: skip
    assert res.status == 0
    x = np.round(res.x[: c.n])
    assert meets_every_row(c, t, x)
    assert float(c.cost @ x) == pytest.approx(best, rel=1e-7, abs=1e-7)
    # without it (no cut, no ES row) the program's optimum is below: the row is what holds the ES
    plain = milp(prog["objective"], integrality=prog["integrality"], bounds=prog["bounds"],
                 constraints=prog["constraints"], options={"mip_rel_gap": 1e-9})  # fmt: skip
    assert plain.status == 0 and plain.fun < best - 1e-6


@pytest.mark.parametrize("seed", [1, 3, 4, 8])
def test_restricted_milp_with_the_exact_es_row_reaches_the_whole_programs_optimum(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_restricted_milp`` on every line with the exact ES row from its first round on (no cut, no scenario row to
    start from) returns a hedge meeting every row at the whole program's optimum."""
    from dataclasses import replace

    import risk_pipeline.quant.hedging as hedging

    monkeypatch.setattr(hedging, "ES_EXACT_AFTER", 0)
    c, t = random_program(seed)
    t = replace(t, loss_cap=1e9, es_target=0.6 * tail_es(t.book_pnl[t.es_rows], t.es_confidence))  # the ES binds
    best, _ = whole_program_milp(c, t)
    lines = np.arange(c.n)
    x = hedging._restricted_milp(c, t, lines, np.zeros(c.n), c.max_contracts, 60.0, 1e-9, [], [], 3)
    assert x is not None and meets_every_row(c, t, x)
    assert float(c.cost @ x) == pytest.approx(best, rel=1e-7, abs=1e-7)


@pytest.mark.parametrize("seed", [1, 3, 4, 8])
def test_exact_es_rows_duals_as_a_cut_give_the_whole_programs_lp_optimum(seed: int) -> None:
    """The LP with every scenario row and ``_with_exact_es``'s row, and the LP with one cut of its duals' tail weights
    (``_exact_es_weights``) instead, both have the whole program's LP optimum (its ES row written out independently)."""
    from dataclasses import replace

    from risk_pipeline.quant.hedging import _exact_es_weights, _milp, _program, _with_exact_es

    c, t = random_program(seed)
    t = replace(t, loss_cap=1e9, es_target=0.6 * tail_es(t.book_pnl[t.es_rows], t.es_confidence))  # the ES binds
    oracle, _ = whole_program_milp(c, t, relaxed=True)
    es_h, es_book = c.scenario_pnl[t.es_rows], t.book_pnl[t.es_rows]
    rows = np.arange(t.book_pnl.size)
    exact = _with_exact_es(_program(c, t, rows, [], es_h, es_book, False, 1.0), es_h, es_book, t.es_target,
                           t.es_confidence)  # fmt: skip
    lp = _milp(exact, np.zeros_like(exact["integrality"]), exact["bounds"], 60.0, 1e-9, presolve=False)
    assert lp.status == 0 and lp.fun == pytest.approx(oracle, rel=1e-9, abs=1e-9)
    w = _exact_es_weights(exact, t.es_rows.size)
    assert w is not None and w.sum() == pytest.approx(1.0) and np.all(w >= 0)
    assert np.all(w <= 1.0 / ((1 - t.es_confidence) * t.es_rows.size) * (1 + 1e-9))
    cut = _program(c, t, rows, [w], es_h, es_book, False, 1.0)
    lp_cut = _milp(cut, np.zeros_like(cut["integrality"]), cut["bounds"], 60.0, 1e-9, presolve=False)
    assert lp_cut.status == 0 and lp_cut.fun == pytest.approx(oracle, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("exact_after", [0, 1])
@pytest.mark.parametrize("seed", [1, 3, 4, 8])
def test_lp_rounds_with_the_exact_es_row_reach_the_whole_programs_optimum(
    seed: int, exact_after: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LP rounds with the exact ES row (from their first round, or after one cut round) and the MILP rounds
    with the cuts: the hedge returned meets every row at the whole program's optimum (gap 1e-9)."""
    from dataclasses import replace

    import risk_pipeline.quant.hedging as hedging

    monkeypatch.setattr(hedging, "ES_EXACT_LP_AFTER", exact_after)
    c, t = random_program(seed)
    t = replace(t, loss_cap=1e9, es_target=0.6 * tail_es(t.book_pnl[t.es_rows], t.es_confidence))  # the ES binds
    solved_at_the_whole_programs_optimum(c, t, time_limit=120.0, mip_rel_gap=1e-9, rows_per_round=3)


def test_a_hedge_missing_rows_within_the_lagrangian_core_is_finished_on_the_cores_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows generated by the MILP rounds only (one a round, no LP rounds): when the MILP within the per-symbol
    Lagrangian core returns a hedge missing a row, the core's lines are solved against every row
    (``_restricted_milp``); the hedge returned is the optimum of the whole program solved at once (gap 1e-9)."""
    import risk_pipeline.quant.hedging as hedging

    monkeypatch.setattr(hedging, "LOCAL_ROW_NONZEROS", 3)  # the symbols' rows local, the book row relaxed
    through = 0
    for seed in range(8):
        c, t = symbol_program(seed, n_sym=10, per=3)
        sol = solved_at_the_whole_programs_optimum(
            c, t, time_limit=120.0, mip_rel_gap=1e-9, rows_per_round=1, relaxed_share=0.0
        )
        through += "Lagrangian core's" in sol.message
    assert through  # the path is exercised


# ----------------------------------------------------------------------------------------------
# the partial hedge: the elastic program against the whole elastic program solved at once
# ----------------------------------------------------------------------------------------------

ELASTIC_WEIGHT = 1e4


def infeasible_program(seed: int, n: int = 30) -> tuple:
    """``random_program`` with the ES target at 5 % of the book's ES and the budget a tenth of one contract of
    each line: no hedge meets it, the partial hedge spends the budget."""
    from dataclasses import replace

    c, t = random_program(seed, n=n)
    es = tail_es(t.book_pnl[t.es_rows], t.es_confidence)
    return c, replace(t, es_target=0.05 * es, budget=0.1 * float((c.cost + c.premium).sum()))


def whole_elastic_milp(c: object, t: HedgeTargets) -> tuple[float, float]:
    """The whole elastic program in one ``scipy.optimize.milp``: minimize cost / budget + weight x (the Greek
    rows' excess over their levels / level + the worst scenario loss over the cap / cap + the ES over its target /
    target) within the budget, the minimum notional (binaries) and whole contracts; every scenario row, the ES in
    Rockafellar-Uryasev form. Returns the optimum and its excess (the optimum's violation)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    G, H = np.asarray(c.greeks), c.scenario_pnl
    n, m_g, n_es = c.n, G.shape[0], t.es_rows.size
    m = (1 - t.es_confidence) * n_es
    # variables x (n), z (n), s_g (m_g), s_loss, s_es, a, u (n_es)
    ix_s, ix_loss, ix_es, ix_a, ix_u = 2 * n, 2 * n + m_g, 2 * n + m_g + 1, 2 * n + m_g + 2, 2 * n + m_g + 3
    nv = ix_u + n_es
    rows, lo, hi = [], [], []

    def add(entries: dict[int, float] | np.ndarray, low: float, high: float) -> None:
        a = np.zeros(nv)
        if isinstance(entries, dict):
            for k, v in entries.items():
                a[k] = v
        else:
            a[: entries.size] = entries
        rows.append(a), lo.append(low), hi.append(high)

    for k in range(m_g):  # -w (1 + s) <= g + G x <= w (1 + s)
        w = t.warn_level[k]
        up, down = np.concatenate([G[k], np.zeros(nv - n)]), np.concatenate([G[k], np.zeros(nv - n)])
        up[ix_s + k], down[ix_s + k] = -w, w
        add(up, -np.inf, w - t.exposure[k])
        add(down, -w - t.exposure[k], np.inf)
    for s in range(H.shape[0]):  # P_s + H_s x >= -cap (1 + s_loss)
        a = np.concatenate([H[s], np.zeros(nv - n)])
        a[ix_loss] = t.loss_cap
        add(a, -t.loss_cap - t.book_pnl[s], np.inf)
    for i, s in enumerate(t.es_rows):  # u_s >= -(P_s + H_s x) - a
        a = np.concatenate([H[s], np.zeros(nv - n)])
        a[ix_a], a[ix_u + i] = 1.0, 1.0
        add(a, -t.book_pnl[s], np.inf)
    es_row = np.zeros(nv)
    es_row[ix_a], es_row[ix_u:], es_row[ix_es] = 1.0, 1.0 / m, -t.es_target
    add(es_row, -np.inf, t.es_target)  # a + sum u / m <= target (1 + s_es)
    add(c.premium + c.cost, -np.inf, t.budget)
    for j in range(n):  # notional x_j >= min z_j, x_j <= U z_j
        add({j: c.notional[j], n + j: -t.min_notional}, 0.0, np.inf)
        add({j: 1.0, n + j: -c.max_contracts[j]}, -np.inf, 0.0)
    objective = np.zeros(nv)
    objective[:n] = c.cost / max(t.budget, 1.0)
    objective[ix_s : ix_es + 1] = ELASTIC_WEIGHT
    lower = np.concatenate([np.zeros(ix_a), [-np.inf], np.zeros(n_es)])
    upper = np.concatenate([c.max_contracts, np.ones(n), np.full(nv - 2 * n, np.inf)])
    res = milp(
        objective, integrality=np.concatenate([np.ones(2 * n), np.zeros(nv - 2 * n)]), bounds=Bounds(lower, upper),
        constraints=[LinearConstraint(np.array(rows), np.array(lo), np.array(hi))], options={"mip_rel_gap": 1e-9},
    )  # fmt: skip
    assert res.status == 0
    return float(res.fun), float(res.x[ix_s : ix_es + 1].sum())


def partial_by_hand(c: object, t: HedgeTargets, x: np.ndarray) -> tuple[bool, float, float]:
    """Whether ``x`` meets the hard rows (budget, whole contracts within their bounds, minimum notional), its
    elastic objective and its violation, computed directly (not through the module's checks)."""
    G = np.asarray(c.greeks)
    pnl = t.book_pnl + c.scenario_pnl @ x
    losses = np.sort(-pnl[t.es_rows])[::-1]
    m = (1 - t.es_confidence) * t.es_rows.size
    es = (losses[: int(m)].sum() + (m - int(m)) * losses[int(m)]) / m
    violation = (
        float(np.sum(np.maximum(np.abs(t.exposure + G @ x) - t.warn_level, 0.0) / t.warn_level))
        + max(-pnl.min() - t.loss_cap, 0.0) / t.loss_cap
        + max(es - t.es_target, 0.0) / t.es_target
    )
    hard = bool(
        (c.premium + c.cost) @ x <= t.budget * (1 + 1e-9)
        and np.all((x == 0) | (c.notional * x >= t.min_notional * (1 - 1e-9)))
        and np.all((x == np.round(x)) & (x >= 0) & (x <= c.max_contracts))
    )
    return hard, float(c.cost @ x) / max(t.budget, 1.0) + ELASTIC_WEIGHT * violation, violation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partial_hedge_is_the_whole_elastic_programs_optimum(seed: int) -> None:
    c, t = infeasible_program(seed)
    best, best_violation = whole_elastic_milp(c, t)
    assert best_violation > 0.1  # no hedge meets the targets
    sol = solve_hedge(c, t, time_limit=120.0, rows_per_round=3, partial_time_limit=120.0)
    assert sol.status == "partial" and sol.partial
    hard, objective, violation = partial_by_hand(c, t, sol.quantity)
    assert hard and np.any(sol.quantity > 0)
    assert best * (1 - 1e-9) <= objective <= best * (1 + 1e-4) + 1e-9  # optimal to mip_rel_gap
    assert sol.violation == pytest.approx(violation, rel=1e-9)


#: ``solve_hedge`` stopped early by deterministic limits only: no gap certified (0), the MILP stopped at its first node,
#: 60 rounds (about 50 LP rounds, then MILP rounds stopped at their first node), no clock (``partial_time_limit`` as
#: long as the time limit). With the default 2-s ``partial_time_limit`` the first MILP round was stopped by the clock
#: on a loaded machine and the solve ran its 100 rounds on an idle one (1 to 70 s).
STOPPED_EARLY: dict[str, Any] = {
    "time_limit": 120.0,
    "mip_rel_gap": 0.0,
    "node_limit": 1,
    "rows_per_round": 3,
    "max_rounds": 60,
    "partial_time_limit": 120.0,
}


def test_partial_hedge_stopped_early_meets_the_hard_rows_with_an_honest_bound() -> None:
    stopped = 0
    for seed in (0, 1):
        c, t = infeasible_program(seed, n=60)
        best, best_violation = whole_elastic_milp(c, t)
        # no box certified (gap 0), the unrestricted MILP stopped at its first node: the best partial hedge comes back
        sol = solve_hedge(c, t, **STOPPED_EARLY)
        assert sol.partial and sol.status in ("partial", "time_limit")
        hard, objective, violation = partial_by_hand(c, t, sol.quantity)
        assert hard and objective >= best * (1 - 1e-9)
        assert sol.violation == pytest.approx(violation, rel=1e-9)
        if sol.status == "time_limit":
            stopped += 1
            # the bound: at most the optimum's violation; the gap: the elastic objective's to the bound
            assert sol.violation_bound <= best_violation * (1 + 1e-9) + 1e-9
            assert sol.violation >= best_violation - 1.0 / ELASTIC_WEIGHT - 1e-9
            lower = objective * (1 - sol.gap)
            assert lower <= best * (1 + 1e-9) + 1e-9
            assert "best partial hedge found" in sol.message and "in units of their levels" in sol.message
    assert stopped  # the path is exercised


def test_search_for_a_full_hedge_stopped_returns_the_best_partial_hedge_within_the_hard_rows() -> None:
    # one round: the LP relaxation's hedge rounded down is the only hedge found; the program is feasible, so no
    # bound on the violation is claimed
    c, t = random_program(0)
    sol = solve_hedge(c, t, time_limit=60.0, rows_per_round=3, max_rounds=1)
    assert sol.status == "time_limit" and sol.partial
    hard, _, violation = partial_by_hand(c, t, sol.quantity)
    assert hard and np.any(sol.quantity > 0)
    assert sol.violation == pytest.approx(violation, rel=1e-9) and math.isnan(sol.violation_bound)
    assert "no hedge meeting every row found before the time limit" in sol.message


def test_relaxed_quantities_rounded_down_stay_within_the_budget_and_the_minimum_notional() -> None:
    from risk_pipeline.quant.hedging import _whole_within_hard_rows

    c, t = random_program(2)
    rng = np.random.default_rng(1)
    per = c.premium + c.cost
    for _ in range(50):
        x = rng.uniform(0.0, 60.0, c.n) * (rng.random(c.n) < 0.3)
        x *= min(1.0, t.budget / float(per @ x))  # a relaxed hedge within the budget
        whole = _whole_within_hard_rows(c, t, x)
        assert partial_by_hand(c, t, whole)[0]
        assert np.all(whole <= x + 1e-9)


def test_no_solver_call_is_given_more_time_than_remains_of_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock that moves only while programs are built (1 s each, 2.5 s limit): every HiGHS call's ``time_limit``
    ends within the solve's limit (deterministic: the solvers' own time does not move this clock)."""
    import types

    import risk_pipeline.quant.hedging as hedging

    clock = [0.0]
    calls: list[tuple[float, float]] = []  # (clock at the call, time_limit given)
    real_program, real_milp = hedging._program, hedging.milp

    def slow_program(*args: object, **kwargs: object) -> object:
        clock[0] += 1.0
        return real_program(*args, **kwargs)

    def recorded_milp(*args: object, options: dict, **kwargs: object) -> object:
        calls.append((clock[0], float(options["time_limit"])))
        return real_milp(*args, options=options, **kwargs)

    fake_time = types.SimpleNamespace(perf_counter=lambda: clock[0], process_time=hedging.time.process_time)
    monkeypatch.setattr(hedging, "time", fake_time)
    monkeypatch.setattr(hedging, "_program", slow_program)
    monkeypatch.setattr(hedging, "milp", recorded_milp)
    c, t = random_program(0)
    sol = solve_hedge(c, t, time_limit=2.5, rows_per_round=3)
    assert len(calls) >= 2
    assert all(at + given <= 2.5 + 1e-9 for at, given in calls), calls
    assert sol.status == "time_limit"  # the third round's program is built past the limit: no third solve


def test_candidate_greeks_are_position_greeks_bit_for_bit() -> None:
    """Buy and sell lines of one contract priced once, the exact engine without its rate bumps: every Greek the
    candidates read has the bits of ``quant.greeks.position_greeks`` on every line (European, American, tiny
    sigma sqrt(T), stock), and ``build_candidates`` given them builds the same candidates."""
    from risk_pipeline.quant.hedging import CANDIDATE_GREEKS, candidate_greeks

    rng = np.random.default_rng(7)
    n_sym, n_c = 12, 300
    spot = rng.uniform(20.0, 300.0, n_sym)
    sym = rng.integers(0, n_sym, n_c)
    opt = rng.random(n_c) < 0.85
    t = np.where(opt, rng.uniform(0.02, 0.4, n_c), 0.0)
    t[:3] = 1e-9  # the BSM limits
    side = np.where(rng.random(n_c) < 0.5, 1.0, -1.0)
    idx = np.concatenate([np.arange(n_c), np.arange(0, n_c, 2)])  # every other contract on both sides
    q = np.concatenate([side, -side[::2]])
    lines = Portfolio(
        symbols=tuple(f"S{i}" for i in range(n_sym)),
        spot=spot,
        symbol_index=sym[idx],
        quantity=q,
        multiplier=np.where(opt, 100.0, 1.0)[idx],
        is_option=opt[idx],
        is_call=(rng.random(n_c) < 0.5)[idx],
        strike=np.where(opt, spot[sym] * np.exp(rng.normal(0.0, 0.15, n_c)), 1.0)[idx],
        time_years=t[idx],
        implied_vol=np.where(opt, rng.uniform(0.1, 0.8, n_c), 0.0)[idx],
        rate=rng.uniform(0.0, 0.06, n_c)[idx],
        dividend_yield=rng.uniform(0.0, 0.04, n_c)[idx],
        is_american=((rng.random(n_c) < 0.7) & opt)[idx],
    )
    want = position_greek_arrays(lines)
    got = candidate_greeks(lines)
    assert set(got) == set(CANDIDATE_GREEKS)
    for k in CANDIDATE_GREEKS:
        assert np.array_equal(want[k].view(np.int64), got[k].view(np.int64)), k
    names = tuple(f"S{i}" for i in range(n_sym))
    rows = GreekRows(names, names)
    sc = ScenarioSet(rng.normal(0.0, 0.05, (4, n_sym)))
    mid = want["price"]
    kw = dict(symbol_columns=names, horizon_calendar_days=7.0, financing_rate=0.05, budget=1e6)
    a = build_candidates(lines, mid * 1.02, mid, rows, [(sc, 0.0)], **kw)  # type: ignore[arg-type]
    b = build_candidates(lines, mid * 1.02, mid, rows, [(sc, 0.0)], greeks=got, **kw)  # type: ignore[arg-type]
    assert (a.greeks != b.greeks).nnz == 0 and np.array_equal(a.cost, b.cost)
    assert np.array_equal(a.scenario_pnl, b.scenario_pnl)


def test_candidate_greeks_read_from_the_cache_are_position_greeks_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second book's lines on the same chain read the unit Greeks the first book's lines priced: every Greek has
    the bits of ``quant.greeks.position_greeks`` on every line (cached, new, a contract that differs from a cached
    one only in the sign of a zero rate), only the options not cached are priced, and ``build_candidates`` given
    the cache builds the candidates it builds without it."""
    import risk_pipeline.quant.american as american
    import risk_pipeline.quant.bsm as bsm
    from risk_pipeline.quant.hedging import CANDIDATE_GREEKS, UnitGreekCache, candidate_greeks

    rng = np.random.default_rng(11)
    n_sym, n_c = 10, 240
    spot = rng.uniform(20.0, 300.0, n_sym)
    sym = rng.integers(0, n_sym, n_c)
    opt = rng.random(n_c) < 0.85
    opt[:2] = True
    rate = rng.uniform(0.0, 0.06, n_c)
    rate[:2] = 0.0

    def book(idx: np.ndarray, side: np.ndarray, rate_of: np.ndarray = rate) -> Portfolio:
        return Portfolio(
            symbols=tuple(f"S{i}" for i in range(n_sym)),
            spot=spot,
            symbol_index=sym[idx],
            quantity=side,
            multiplier=np.where(opt, 100.0, 1.0)[idx],
            is_option=opt[idx],
            is_call=(np.arange(n_c) % 3 == 0)[idx],
            strike=np.where(opt, spot[sym] * np.exp(np.linspace(-0.25, 0.25, n_c)), 1.0)[idx],
            time_years=np.where(opt, np.linspace(0.02, 0.4, n_c), 0.0)[idx],
            implied_vol=np.where(opt, np.linspace(0.1, 0.8, n_c), 0.0)[idx],
            rate=rate_of[idx],
            dividend_yield=np.linspace(0.0, 0.04, n_c)[idx],
            is_american=((np.arange(n_c) % 4 != 1) & opt)[idx],
        )

    first = np.arange(0, 160)  # the first book's contracts, each on both sides
    a = book(np.concatenate([first, first]), np.concatenate([np.ones(160), -np.ones(160)]))
    second = np.arange(100, n_c)  # 60 contracts cached, 80 new
    minus_zero = rate.copy()
    minus_zero[:2] = -0.0  # two cached contracts but for the sign of a zero rate: priced, not read
    b_idx = np.concatenate([second, [0, 1]])
    b = book(b_idx, np.where(np.arange(b_idx.size) % 2 == 0, 1.0, -1.0), minus_zero)
    priced: list[int] = []
    real_am, real_bsm = american.american_greeks, bsm.bsm_greeks

    def count_am(*args: object, **kw: object) -> object:
        priced.append(len(np.atleast_1d(args[0])))
        return real_am(*args, **kw)  # type: ignore[arg-type]

    def count_bsm(*args: object, **kw: object) -> object:
        priced.append(len(np.atleast_1d(args[0])))
        return real_bsm(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(american, "american_greeks", count_am)
    monkeypatch.setattr(bsm, "bsm_greeks", count_bsm)
    cache = UnitGreekCache()
    got_a = candidate_greeks(a, cache=cache)
    assert sum(priced) == int(opt[first].sum()) and cache.n == int(opt[first].sum())
    priced.clear()
    got_b = candidate_greeks(b, cache=cache)
    new = np.concatenate([np.arange(160, n_c), [0, 1]])
    assert sum(priced) == int(opt[new].sum())  # the cached contracts are not priced again
    for lines, got in ((a, got_a), (b, got_b)):
        want = position_greek_arrays(lines)
        for k in CANDIDATE_GREEKS:
            assert np.array_equal(want[k].view(np.int64), got[k].view(np.int64)), k
    names = tuple(f"S{i}" for i in range(n_sym))
    rows = GreekRows(names, names)
    sc = ScenarioSet(rng.normal(0.0, 0.05, (3, n_sym)))
    mid = position_greek_arrays(b)["price"]
    kw = dict(symbol_columns=names, horizon_calendar_days=7.0, financing_rate=0.05, budget=1e6)
    plain = build_candidates(b, mid * 1.02, mid, rows, [(sc, 0.0)], **kw)  # type: ignore[arg-type]
    cached = build_candidates(b, mid * 1.02, mid, rows, [(sc, 0.0)], greek_cache=cache, **kw)  # type: ignore[arg-type]
    assert (plain.greeks != cached.greeks).nnz == 0 and np.array_equal(plain.cost, cached.cost)
    assert np.array_equal(plain.scenario_pnl, cached.scenario_pnl)


def test_hedged_pnl_is_the_hedged_book_revalued_with_only_the_lines_priced(monkeypatch: pytest.MonkeyPatch) -> None:
    """``hedged_pnl`` against the hedged book revalued in full (``scenario_pnl`` of ``combine(book, lines)``): stress
    scenarios under the stress rule with idiosyncratic moves (the exact American engine) and historical-like sets
    under ``eep_grid`` (American grids), 1 and 5 days; equal to rounding, and only the lines revalued."""
    from dataclasses import replace

    import risk_pipeline.quant.hedging as hedging
    from risk_pipeline.quant.hedging import hedged_pnl, scenario_pnl
    from risk_pipeline.quant.stress import stress_scenarios
    from risk_pipeline_tests.quant.test_stress_rule_scenarios import _hedge_lines, _setup

    lib, p, beta, _, kw = _setup()
    p = replace(p, is_american=[False] * 4 + [True, True, False])  # two American options, one European
    rng = np.random.default_rng(11)
    hist = [
        ScenarioSet(rng.normal(0.0, 0.02 * math.sqrt(d), (60, p.n_symbols)),
                    vol_scale=np.exp(rng.normal(0.0, 0.05, (60, p.n_symbols))))
        for d in (1, 5)
    ]  # fmt: skip
    blocks = [
        (stress_scenarios(p, lib.scenarios, beta, None, **kw), 0.0),
        (hist[0], 365 / 252),
        (hist[1], 5 * 365 / 252),
    ]
    hedged = combine(p, _hedge_lines(p.symbols, p.spot))
    book = np.concatenate([scenario_pnl(p, sc, h, "eep_grid") for sc, h in blocks])
    full = np.concatenate([scenario_pnl(hedged, sc, h, "eep_grid") for sc, h in blocks])
    real, sizes = hedging.evaluate, []

    def counting(portfolio: Portfolio, *args: Any, **kwargs: Any) -> Any:
        sizes.append(portfolio.n_positions)
        return real(portfolio, *args, **kwargs)

    monkeypatch.setattr(hedging, "evaluate", counting)
    got = hedged_pnl(book, hedged, p.n_positions, blocks, "eep_grid")
    assert sizes == [3, 3, 3]  # the three lines, once per block; the book's positions not again
    scale = np.abs(book).max() + np.abs(full - book).max()
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-13 * scale)
    assert np.any(np.abs(full - book) > 1e-3 * scale)  # the lines move the P&L


def test_hedged_rule_pnl_revalues_the_book_only_where_the_hedged_books_shocks_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``hedged_rule_pnl`` against ``scenario_pnl`` of the hedged book in its own stress block (idiosyncratic moves
    searched again): the scenarios whose shocks are the book's (no idiosyncratic move) are the book's P&L plus the
    lines' to rounding, the others the full revaluation's bits; the book's positions revalued in the others only."""
    from dataclasses import replace

    import risk_pipeline.quant.hedging as hedging
    from risk_pipeline.quant.hedging import hedged_rule_pnl, scenario_pnl
    from risk_pipeline.quant.stress import stress_scenarios
    from risk_pipeline_tests.quant.test_stress_rule_scenarios import _hedge_lines, _setup

    lib, p, beta, _, kw = _setup()
    p = replace(p, is_american=[False] * 4 + [True, True, False])
    book_block = stress_scenarios(p, lib.scenarios, beta, None, **kw)
    hedged = combine(p, _hedge_lines(p.symbols, p.spot))
    block = stress_scenarios(hedged, lib.scenarios, beta, None, **kw, reuse=book_block)
    book = scenario_pnl(p, book_block, 0.0)
    full = scenario_pnl(hedged, block, 0.0)
    still = np.array([not (s.idiosyncratic_sigmas or lib.vol_rule.idiosyncratic_sigmas) for s in lib.scenarios])
    assert 0 < still.sum() < still.size
    real, calls = hedging.evaluate, []

    def counting(portfolio: Portfolio, scenarios: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append((portfolio.n_positions, scenarios.n_scenarios))
        return real(portfolio, scenarios, *args, **kwargs)

    monkeypatch.setattr(hedging, "evaluate", counting)
    got = hedged_rule_pnl(book, book_block, hedged, p.n_positions, block)
    assert calls == [(hedged.n_positions, int((~still).sum())), (3, int(still.sum()))]
    np.testing.assert_array_equal(got[~still], full[~still])
    np.testing.assert_allclose(got[still], full[still], rtol=0, atol=1e-13 * (np.abs(book).max() + np.abs(full).max()))
    # a block whose shocks all differ (another rule's) is revalued in full
    calls.clear()
    other = replace(block, spot_log_shock=block.spot_log_shock + 0.001)
    np.testing.assert_array_equal(
        hedged_rule_pnl(book, book_block, hedged, p.n_positions, other), real(hedged, other.scenario_set(hedged)).pnl
    )
    assert calls == [(hedged.n_positions, other.n_scenarios)]
    # under the early-exercise grid a subset of the rows would build other grids: the whole block, its bits
    calls.clear()
    book_grid = stress_scenarios(p, lib.scenarios, beta, None, **kw, american="eep_grid")
    grid = stress_scenarios(hedged, lib.scenarios, beta, None, **kw, reuse=book_grid, american="eep_grid")
    got = hedged_rule_pnl(scenario_pnl(p, book_grid, 0.0), book_grid, hedged, p.n_positions, grid)
    assert calls[-1] == (hedged.n_positions, grid.n_scenarios)
    np.testing.assert_array_equal(got, real(hedged, grid.scenario_set(hedged), american="eep_grid").pnl)
