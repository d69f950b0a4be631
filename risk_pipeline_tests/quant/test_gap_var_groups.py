"""The gap VaR revalues each group of underlyings only under its distinct combined scenarios
(``gap_risk.gap_pnl_by_underlying``): the same P&L by underlying as the whole combined set, bit for bit, and the
closed forms for stocks and European options."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest

import risk_pipeline.quant.gap_risk as gr
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate, prepare, prepare_parts
from risk_pipeline.quant.smile_dynamics import (
    EarningsVolCrush,
    ExpiryScaledVolMoves,
    StickyMoneyness,
    SviSlices,
    summed_shift_rows,
)
from risk_pipeline.quant.stress import beta_shocks
from risk_pipeline.quant.vol_shocks import VolShockRule

N_SYM = 7


def _book(rng: np.random.Generator, american: float = 0.7, n_options: int = 60) -> Portfolio:
    spot = rng.uniform(40.0, 200.0, N_SYM)
    sym = np.concatenate([rng.integers(0, N_SYM, n_options), np.arange(N_SYM - 1)])  # the last name: options only
    m = sym.size
    opt = np.arange(m) < n_options
    return Portfolio(
        symbols=tuple(f"S{i}" for i in range(N_SYM)),
        spot=spot,
        symbol_index=sym,
        quantity=rng.integers(-20, 21, m).astype(float),
        multiplier=np.where(opt, 100.0, 1.0),
        is_option=opt,
        is_call=rng.random(m) < 0.5,
        strike=spot[sym] * np.exp(rng.normal(0.0, 0.1, m)),
        time_years=rng.uniform(0.02, 1.0, m),
        implied_vol=rng.uniform(0.15, 0.6, m),
        rate=0.04,
        dividend_yield=rng.uniform(0.0, 0.03, m),
        is_american=opt & (rng.random(m) < american),
    )


def _base(rng: np.random.Generator, days: int = 120, carry: bool = True) -> ScenarioSet:
    return ScenarioSet(
        np.expm1(rng.normal(0.0, 0.02, (days, N_SYM))),
        vol_scale=np.exp(rng.normal(0.0, 0.04, (days, N_SYM))),
        rate_shift_abs=rng.normal(0.0, 0.0005, days) if carry else None,
        dividend_shift_abs=rng.normal(0.0, 0.0002, (days, N_SYM)) if carry else None,
    )


def _earnings(rng: np.random.Generator, symbol: int, n_past: int) -> tuple[np.ndarray, EarningsVolCrush]:
    past = rng.normal(0.0, 0.07, n_past)
    gap = np.zeros((2 * n_past, N_SYM))
    gap[:, symbol] = np.concatenate([past, -past])
    crush = EarningsVolCrush(symbol, float(np.mean(np.log1p(past) ** 2)), 2 / 365, f"E{symbol}")
    return gap, crush


def _sticky(rng: np.random.Generator, book: Portfolio) -> StickyMoneyness:
    """An SVI slice per underlying (a few options without one)."""
    of = np.where(book.is_option & (rng.random(book.n_positions) < 0.8), book.symbol_index, -1)
    return StickyMoneyness(
        SviSlices(
            a=np.full(N_SYM, 0.02),
            b=np.full(N_SYM, 0.1),
            rho=np.full(N_SYM, -0.4),
            m=np.zeros(N_SYM),
            sigma=np.full(N_SYM, 0.2),
            forward=np.asarray(book.spot),
            time_years=np.full(N_SYM, 0.5),
            slice_of_position=of,
        )
    )


def _whole_set(
    book: Portfolio, base: ScenarioSet, gaps: list[np.ndarray], dyn: list, max_scenarios: int, days: float
) -> tuple[np.ndarray, np.ndarray]:
    sc = gr.combined_gap_scenarios(base, gaps, max_scenarios, 0)
    if dyn:
        sc = replace(sc, vol_shift_abs=summed_shift_rows(dyn, book, sc), vol_shift_per_position=True)
    res = evaluate(book, sc, days, american="eep_grid", per_symbol=True)
    assert res.by_symbol is not None
    return res.pnl, res.by_symbol


@pytest.mark.parametrize(
    ("market", "max_scenarios", "carry"),
    [(True, 3_000, True), (False, 50_000, True), (False, 2_500, False)],
)
def test_grouped_gap_pnl_equals_the_whole_combined_set(market: bool, max_scenarios: int, carry: bool) -> None:
    """Two earnings events (with their crushes), optionally a market-wide event by beta, the expiry-scaled move
    and sticky moneyness, Americans on the grid with rate and yield shifts: the P&L by underlying equals the whole
    combined set's revaluation bit for bit, sampled or every pair; the book P&L to rounding."""
    rng = np.random.default_rng(11)
    book = _book(rng)
    base = _base(rng, carry=carry)
    (g1, c1), (g2, c2) = _earnings(rng, 1, 4), _earnings(rng, 4, 3)
    gaps = [g1, g2]
    if market:
        moves = rng.normal(0.0, 0.015, 3)
        shocks = beta_shocks(moves, np.linspace(0.6, 1.4, N_SYM))
        gaps.append(np.vstack([shocks, -shocks]))
    dyn = [_sticky(rng, book), ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4)), c1, c2]
    got = gr.gap_pnl_by_underlying(
        book, base, gaps, calendar_days=7.0, american="eep_grid", max_scenarios=max_scenarios, dynamics=dyn
    )
    assert got is not None
    pnl, by_symbol = got
    ref_pnl, ref_by = _whole_set(book, base, gaps, dyn, max_scenarios, 7.0)
    assert pnl.shape == ref_pnl.shape and by_symbol.shape == ref_by.shape
    assert np.array_equal(by_symbol, ref_by)
    np.testing.assert_allclose(pnl, ref_pnl, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(pnl, by_symbol.sum(axis=1), rtol=1e-12, atol=1e-9)


def test_gap_var_by_underlying_equals_the_whole_set_path() -> None:
    rng = np.random.default_rng(5)
    book = _book(rng)
    base = _base(rng)
    (g1, c1), (g2, c2) = _earnings(rng, 0, 5), _earnings(rng, 6, 4)
    dyn = [ExpiryScaledVolMoves(VolShockRule(term_exponent=0.3)), c1, c2]
    events = [("E0", g1), ("E6", g2)]
    base_pnl = evaluate(book, base, 5.0, american="eep_grid").pnl
    common = dict(horizon_days=3, confidences=(0.95, 0.99), calendar_days=5.0, max_scenarios=4_000, dynamics=dyn)
    fast = gr.gap_var(book, base, base_pnl, events, **common)
    whole = gr.gap_var(book, base, base_pnl, events, by_underlying=False, **common)
    for a, b in zip(fast, whole, strict=True):
        assert a.n_scenarios == b.n_scenarios == 4_000
        assert a.var == pytest.approx(b.var, rel=1e-12)
        assert a.expected_shortfall == pytest.approx(b.expected_shortfall, rel=1e-12)
        np.testing.assert_allclose(a.component_var, b.component_var, rtol=1e-9, atol=1e-6)
        np.testing.assert_array_equal(a.component_es, b.component_es)  # ordered by the rows of by_symbol


def test_grouped_gap_pnl_of_stocks_and_european_options_is_the_closed_form() -> None:
    """Oracle: every pair's P&L by underlying is the stocks' units x the compounded move plus each European option
    revalued by Black-Scholes at the combined spot, the scaled and crushed vol, the shifted rate and yield and the
    shortened expiry, minus today's Black-Scholes value."""
    rng = np.random.default_rng(3)
    book = _book(rng, american=0.0, n_options=25)
    base = _base(rng, days=40)
    (g1, c1), (g2, _) = _earnings(rng, 2, 3), _earnings(rng, 5, 2)
    gaps = [g1, g2]
    got = gr.gap_pnl_by_underlying(book, base, gaps, calendar_days=3.0, max_scenarios=500, dynamics=[c1])
    assert got is not None
    pnl, by_symbol = got
    i, rows = gr.gap_picks(base.n_scenarios, [6, 4], 500, 0)
    assert i.size == 500
    gap = (1.0 + g1[rows[:, 0]]) * (1.0 + g2[rows[:, 1]]) - 1.0
    spot = np.asarray(book.spot)[None, :] * (1.0 + base.spot_shock_rel[i]) * (1.0 + gap)
    expected = np.zeros((500, N_SYM))
    units = book.units
    s0 = np.asarray(book.spot)[book.symbol_index]
    for p in range(book.n_positions):
        s = book.symbol_index[p]
        if not book.is_option[p]:
            expected[:, s] += units[p] * (spot[:, s] - s0[p])
            continue
        vol, t = book.implied_vol[p], book.time_years[p]
        crushed = vol
        if s == 2 and t > 2 / 365:
            crushed = np.sqrt(max(vol * vol * t - c1.event_variance, 0.25 * vol * vol * t) / t)
        sig = vol * base.vol_scale[i, s] + (crushed - vol)
        args = (book.strike[p], max(t - 3.0 / 365, 0.0))
        now = bsm_price(s0[p], book.strike[p], t, vol, book.rate[p], book.dividend_yield[p], book.is_call[p])
        r = book.rate[p] + base.rate_shift_abs[i]
        q = book.dividend_yield[p] + base.dividend_shift_abs[i, s]
        later = bsm_price(spot[:, s], *args, sig, r, q, np.full(500, book.is_call[p]))
        expected[:, s] += units[p] * (later - now)
    np.testing.assert_allclose(by_symbol, expected, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(pnl, expected.sum(axis=1), rtol=1e-9, atol=1e-6)


def test_picks_and_rows_reproduce_the_combined_set() -> None:
    rng = np.random.default_rng(1)
    base = _base(rng, days=30)
    gaps = [_earnings(rng, 1, 3)[0], _earnings(rng, 3, 2)[0], beta_shocks(rng.normal(0, 0.01, 2), np.ones(N_SYM))]
    for cap in (100, 10_000):
        whole = gr.combined_gap_scenarios(base, gaps, cap, 4)
        i, rows = gr.gap_picks(30, [6, 4, 2], cap, 4)
        assert i.size == whole.n_scenarios == min(cap, 30 * 6 * 4 * 2)
        cols = np.arange(N_SYM)
        spot = (1.0 + base.spot_shock_rel[i]) * (1.0 + gr._gap_rows(gaps, rows, cols)) - 1.0
        assert np.array_equal(spot, whole.spot_shock_rel)
        assert np.array_equal(base.vol_scale[i], whole.vol_scale)


def test_prepare_parts_builds_the_grids_of_the_whole_set() -> None:
    """Each part's book (its symbols' columns only) has the grid ``prepare`` builds on the whole set, bit for bit."""
    rng = np.random.default_rng(8)
    book = _book(rng, american=0.9, n_options=80)
    sc = _base(rng, days=90)
    whole = prepare(book, 7.0, sc, "eep_grid")
    parts = []
    for names in ([0, 3], [1, 2, 4, 5], [6]):
        cols = np.asarray(names)
        rows = np.flatnonzero(np.isin(book.symbol_index, cols))
        sub = gr.sub_portfolio(book, rows, cols)
        sub_sc = ScenarioSet(
            sc.spot_shock_rel[:, cols],
            vol_scale=sc.vol_scale[:, cols],
            rate_shift_abs=sc.rate_shift_abs,
            dividend_shift_abs=sc.dividend_shift_abs[:, cols],
        )
        parts.append((rows, sub, sub_sc))
    books = prepare_parts(book, 7.0, parts, sc.n_scenarios, True)
    am = whole.option_positions[whole.n_euro :]
    for (rows, _, sub_sc), part in zip(parts, books, strict=True):
        at = np.searchsorted(am, rows[part.option_positions[part.n_euro :]])
        for f in ("grid_mode", "grid_y0", "grid_dy", "grid_v0", "grid_dv", "grid_coef", "grid_bcoef", "grid_dcoef"):
            assert np.array_equal(getattr(part, f), getattr(whole, f)[at]), f
        res = evaluate(book, sc, 7.0, american="eep_grid", per_symbol=True)
        from risk_pipeline.quant.scenario_engine import evaluate_prepared

        mine = evaluate_prepared(part, sub_sc, per_symbol=True)
        assert mine.by_symbol is not None and res.by_symbol is not None
        assert np.array_equal(mine.by_symbol, res.by_symbol[:, sorted({int(book.symbol_index[r]) for r in rows})])


@dataclass(frozen=True)
class _CrossName:
    """A dynamic that reads another underlying's column (not per position): the whole set is revalued."""

    label: str = "cross"

    def shifts(self, portfolio: Portfolio, scenarios: ScenarioSet) -> np.ndarray:
        return np.broadcast_to(0.1 * scenarios.spot_shock_rel[:, :1], (scenarios.n_scenarios, portfolio.n_positions))


def test_an_unknown_dynamic_revalues_the_whole_set() -> None:
    rng = np.random.default_rng(4)
    book = _book(rng, n_options=20)
    base = _base(rng, days=30)
    g, crush = _earnings(rng, 3, 2)
    dyn = [crush, _CrossName()]
    assert gr.gap_pnl_by_underlying(book, base, [g], calendar_days=1.0, dynamics=dyn) is None
    base_pnl = np.zeros(30)
    common = dict(horizon_days=1, confidences=(0.99,), calendar_days=1.0, dynamics=dyn)
    a = gr.gap_var(book, base, base_pnl, [("E", g)], **common)[0]
    b = gr.gap_var(book, base, base_pnl, [("E", g)], by_underlying=False, **common)[0]
    assert (a.var, a.expected_shortfall) == (b.var, b.expected_shortfall)


def test_market_wide_events_alone_revalue_the_whole_set_as_before() -> None:
    """Every name moved by the same market-wide events: one group, a scenario per pair, so the book P&L is the whole
    set's too, bit for bit (sampled)."""
    rng = np.random.default_rng(17)
    book = _book(rng)
    base = _base(rng)
    shocks = [beta_shocks(rng.normal(0.0, 0.01, m), np.linspace(0.7, 1.3, N_SYM)) for m in (5, 2)]
    gaps = [np.vstack([g, -g]) for g in shocks]
    dyn = [ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4))]
    got = gr.gap_pnl_by_underlying(book, base, gaps, calendar_days=5.0, max_scenarios=1_500, dynamics=dyn)
    assert got is not None
    ref = _whole_set(book, base, gaps, dyn, 1_500, 5.0)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


@pytest.mark.parametrize(
    ("market", "earnings", "sticky"),
    [(True, False, False), (True, True, False), (False, True, False), (True, True, True)],
)
def test_group_sets_made_in_blocks_give_the_whole_sets_numbers(
    monkeypatch: pytest.MonkeyPatch, market: bool, earnings: bool, sticky: bool
) -> None:
    """Each group's combined set made and revalued a block of rows at a time (``_GroupBlocks``, blocks of 256 rows
    here) gives the P&L by underlying of the whole combined set bit for bit, and the same P&L and P&L by underlying as
    the group sets made whole (one block), bit for bit: market-wide only (one group of every name), with earnings
    (their crushes: vol shifts gathered per base row), and with sticky moneyness (shifts that read the spot: the
    group's set made whole)."""
    rng = np.random.default_rng(23)
    book = _book(rng)
    base = _base(rng)
    gaps, dyn = [], [ExpiryScaledVolMoves(VolShockRule(term_exponent=0.35))]
    if earnings:
        (g1, c1), (g2, c2) = _earnings(rng, 2, 4), _earnings(rng, 5, 3)
        gaps += [g1, g2]
        dyn += [c1, c2]
    if market:
        moves = rng.normal(0.0, 0.015, 6)
        shocks = beta_shocks(moves, np.linspace(0.6, 1.4, N_SYM))
        gaps.append(np.vstack([shocks, -shocks]))
    if sticky:
        dyn.insert(0, _sticky(rng, book))
    kw = dict(calendar_days=7.0, american="eep_grid", max_scenarios=3_000, dynamics=dyn)
    one = gr.gap_pnl_by_underlying(book, base, gaps, **kw)
    monkeypatch.setattr(gr, "SCENARIO_BLOCK_CELLS", 1)
    blocked = gr.gap_pnl_by_underlying(book, base, gaps, **kw)
    assert one is not None and blocked is not None
    assert np.array_equal(blocked[0], one[0]) and np.array_equal(blocked[1], one[1])
    ref_pnl, ref_by = _whole_set(book, base, gaps, dyn, 3_000, 7.0)
    assert np.array_equal(blocked[1], ref_by)
    np.testing.assert_allclose(blocked[0], ref_pnl, rtol=1e-12, atol=1e-9)


def test_group_blocks_cover_the_set_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_GroupBlocks``: blocks of whole multiples of the engine's smallest chunk, in order, with their first row as
    ``row_offset``, whose rows are those of the whole set made at once."""
    monkeypatch.setattr(gr, "SCENARIO_BLOCK_CELLS", 300 * N_SYM)  # 300 rows, rounded up to 512
    rng = np.random.default_rng(3)
    base = _base(rng, days=40)
    g = np.expm1(rng.normal(0.0, 0.05, (30, N_SYM)))
    i, rows = gr.gap_picks(base.n_scenarios, [g.shape[0]], 1_000, 0)
    cols = np.arange(N_SYM, dtype=np.intp)
    blocks = gr._GroupBlocks(base, [g], i, rows, cols)
    whole = blocks.rows(np.arange(blocks.n))
    ref = gr.combined_gap_scenarios(base, [g], 1_000, 0)
    assert np.array_equal(whole.spot_shock_rel, ref.spot_shock_rel)
    assert np.array_equal(whole.dividend_shift_abs, ref.dividend_shift_abs)
    size = blocks.size
    assert size == 512 and len(blocks) == 2
    starts = [blocks[k].row_offset for k in range(len(blocks))]
    assert starts == list(range(0, blocks.n, size))
    got = np.vstack([blocks[k].spot_shock_rel for k in range(len(blocks))])
    assert np.array_equal(got, ref.spot_shock_rel)


def test_gap_rows_are_the_default_take_formula_bit_for_bit() -> None:
    """``_gap_rows`` (its gathers with ``mode="wrap"``) gives the bits of the product with NumPy's default ``take``
    written out here, for every column and for a subset in any order, one to three events."""
    rng = np.random.default_rng(11)
    tables = [np.expm1(rng.normal(0.0, 0.05, (m, N_SYM))) for m in (5, 3, 4)]
    tables[1][:, 2] = 0.0  # a name the second event does not move
    for n_events in (1, 2, 3):
        gaps = tables[:n_events]
        _, rows = gr.gap_picks(17, [g.shape[0] for g in gaps], 200, 5)
        for cols in (np.arange(N_SYM, dtype=np.intp), np.array([4, 0, 2], dtype=np.intp)):
            expected = np.zeros((rows.shape[0], cols.size))
            for e, g in enumerate(gaps):
                mine = np.empty_like(expected)
                np.take(1.0 + g[:, cols], rows[:, e], axis=0, out=mine)
                expected = (expected + 1.0) * mine - 1.0
            got = gr._gap_rows(gaps, rows, cols)
            assert got.shape == expected.shape
            assert np.array_equal(got.view(np.int64), expected.view(np.int64))


def test_group_blocks_are_the_checked_sets_of_their_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each block of ``_GroupBlocks`` (made without ``ScenarioSet``'s checks again) holds what the checked
    constructor and ``replace`` give for its rows, bit for bit, with the group's vol shifts; a combined move of -100 %
    is still refused."""
    monkeypatch.setattr(gr, "SCENARIO_BLOCK_CELLS", 300 * N_SYM)  # blocks of 512 rows
    rng = np.random.default_rng(12)
    base = _base(rng, days=40)
    g = np.expm1(rng.normal(0.0, 0.05, (30, N_SYM)))
    i, rows = gr.gap_picks(base.n_scenarios, [g.shape[0]], 1_000, 0)
    cols = np.array([0, 2, 3, 6], dtype=np.intp)
    book = _book(rng)
    shifts = summed_shift_rows([_sticky(rng, book)], book, base)
    for vol in (None, shifts):
        blocks = replace(gr._GroupBlocks(base, [g], i, rows, cols), vol_shift_abs=vol)
        assert len(blocks) == 2
        for k in range(len(blocks)):
            got = blocks[k]
            idx = np.arange(k * blocks.size, min((k + 1) * blocks.size, blocks.n))
            b = i[idx]
            spot = (1.0 + base.spot_shock_rel[b][:, cols]) * (1.0 + (1.0 + g[rows[idx, 0]][:, cols] - 1.0)) - 1.0
            ref = ScenarioSet(
                spot,
                vol_scale=base.vol_scale[b][:, cols],
                rate_shift_abs=base.rate_shift_abs[b],
                dividend_shift_abs=base.dividend_shift_abs[b][:, cols],
            )
            if vol is None:
                ref = replace(ref, row_offset=int(idx[0])) if idx[0] else ref
            else:
                ref = replace(ref, vol_shift_abs=vol, vol_shift_per_position=True, row_offset=int(idx[0]))
            assert type(got) is ScenarioSet
            for f in ("spot_shock_rel", "vol_scale", "rate_shift_abs", "dividend_shift_abs"):
                x, y = getattr(got, f), getattr(ref, f)
                assert x.dtype == y.dtype and x.flags.c_contiguous
                assert np.array_equal(x.view(np.int64), y.view(np.int64))
            assert got.vol_shift_abs is ref.vol_shift_abs
            assert (got.vol_shift_per_position, got.row_offset, got.vol_skew) == (
                ref.vol_shift_per_position,
                ref.row_offset,
                ref.vol_skew,
            )
    crash = g.copy()
    crash[rows[3, 0]] = -1.0  # a past gap of -100 %: the combined move of its rows is -1
    with pytest.raises(ValueError, match="above -1"):
        gr._GroupBlocks(base, [crash], i, rows, cols)[0]
