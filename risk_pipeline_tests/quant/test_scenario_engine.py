"""Full revaluation under scenarios: independent repricing, vol-shock forms, chunking, EEP grid, Dask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from risk_pipeline.quant.american import american_price
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import (
    CHUNK_MEMORY_BYTES,
    ScenarioSet,
    SkewVolShift,
    _spline_map,
    default_chunk_size,
    evaluate,
    evaluate_many,
    evaluate_prepared,
    market_values,
    prepare,
    revalue,
)


def _book(n: int = 60, n_sym: int = 4, seed: int = 0, american: float = 0.3) -> Portfolio:
    rng = np.random.default_rng(seed)
    spot = rng.uniform(30.0, 300.0, n_sym)
    sym = np.concatenate([rng.integers(0, n_sym, n), np.arange(n_sym)])
    m = sym.size
    opt = np.arange(m) < n
    return Portfolio(
        symbols=tuple(f"S{i}" for i in range(n_sym)),
        spot=spot,
        symbol_index=sym,
        quantity=rng.integers(-20, 21, m).astype(float),
        multiplier=np.where(opt, 100.0, 1.0),
        is_option=opt,
        is_call=rng.random(m) < 0.5,
        strike=spot[sym] * np.exp(rng.normal(0.0, 0.15, m)),
        time_years=rng.uniform(0.01, 1.5, m),
        implied_vol=rng.uniform(0.1, 0.7, m),
        rate=rng.uniform(0.0, 0.06, m),
        dividend_yield=rng.uniform(0.0, 0.04, m),
        is_american=opt & (rng.random(m) < american),
    )


def _reference_pnl(
    p: Portfolio, shock: np.ndarray, vol_new: np.ndarray, dr: np.ndarray, horizon_days: float
) -> np.ndarray:
    """Brute force with the public pricers: ``units (V(shocked, T - h/365) - V(today))`` per position."""
    s0 = p.position_spot
    s1 = s0[None, :] * (1.0 + shock[:, p.symbol_index])
    t1 = np.maximum(p.time_years - horizon_days / 365.0, 0.0)
    args0 = (s0, p.strike, p.time_years, p.implied_vol, p.rate, p.dividend_yield, p.is_call)
    args1 = (s1, p.strike, t1, vol_new, p.rate + dr[:, None], p.dividend_yield, p.is_call)
    v0 = np.where(p.is_american, american_price(*args0), bsm_price(*args0, backend="numpy"))
    v1 = np.where(p.is_american, american_price(*args1), bsm_price(*args1, backend="numpy"))
    v0 = np.where(p.is_option, v0, s0)
    v1 = np.where(p.is_option, v1, s1)
    return (p.units * (v1 - v0)).sum(axis=1)


def _scale(p: Portfolio) -> float:
    return float(np.sum(np.abs(market_values(p)))) + float(np.sum(np.abs(p.units * p.position_spot)))


def test_zero_scenario_at_zero_horizon_is_exactly_zero() -> None:
    p = _book()
    res = revalue(p, np.zeros((3, p.n_symbols)), per_symbol=True)
    assert np.all(res.pnl == 0.0)
    assert res.by_symbol is not None and np.all(res.by_symbol == 0.0)


def test_full_revaluation_matches_independent_pricers() -> None:
    p = _book()
    rng = np.random.default_rng(1)
    n = 25
    shock = np.expm1(rng.normal(0.0, 0.08, (n, p.n_symbols)))
    scale = np.exp(rng.normal(0.0, 0.2, (n, p.n_symbols)))
    shift = rng.normal(0.0, 0.03, (n, p.n_symbols))
    dr = rng.normal(0.0, 0.01, n)
    res = revalue(p, shock, shift, dr, 3.0, vol_scale=scale, per_symbol=True)
    vol_new = np.maximum(p.implied_vol * scale[:, p.symbol_index] + shift[:, p.symbol_index], 0.0)
    ref = _reference_pnl(p, shock, vol_new, dr, 3.0)
    np.testing.assert_allclose(res.pnl, ref, rtol=0, atol=1e-10 * _scale(p))
    assert res.by_symbol is not None
    np.testing.assert_allclose(res.by_symbol.sum(axis=1), res.pnl, rtol=0, atol=1e-9 * _scale(p))


def test_time_decay_floors_at_expiry() -> None:
    p = Portfolio(
        symbols=("A",),
        spot=[100.0],
        symbol_index=[0, 0],
        quantity=[1.0, 1.0],
        is_option=True,
        is_call=[True, False],
        strike=[95.0, 90.0],
        time_years=[2.0 / 365.0, 1.0],
        implied_vol=0.3,
        rate=0.03,
        dividend_yield=0.0,
    )
    shock = np.array([[0.02]])
    pnl = revalue(p, shock, horizon_days=5.0).pnl[0]
    v0 = bsm_price(100.0, [95.0, 90.0], [2.0 / 365.0, 1.0], 0.3, 0.03, 0.0, [True, False])
    call_at_expiry = 102.0 - 95.0  # T' = max(2/365 - 5/365, 0): intrinsic
    put_later = bsm_price(102.0, 90.0, 1.0 - 5.0 / 365.0, 0.3, 0.03, 0.0, False)
    assert pnl == pytest.approx(call_at_expiry + put_later - v0.sum(), rel=1e-13)


def test_vol_shift_forms_agree() -> None:
    p = _book(american=0.0)
    rng = np.random.default_rng(2)
    n = 12
    shock = np.expm1(rng.normal(0.0, 0.05, (n, p.n_symbols)))
    level = rng.normal(0.0, 0.05, (n, p.n_symbols))
    skew = rng.normal(0.0, 0.2, (n, p.n_symbols))
    per_sym = revalue(p, shock, level).pnl
    per_pos = revalue(p, shock, level[:, p.symbol_index]).pnl
    as_callable = revalue(p, shock, SkewVolShift(level=level)).pnl
    np.testing.assert_array_equal(per_sym, per_pos)
    np.testing.assert_allclose(as_callable, per_sym, rtol=0, atol=1e-9 * _scale(p))
    native = revalue(p, shock, level, vol_skew=skew).pnl
    fn = revalue(p, shock, SkewVolShift(level=level, skew=skew)).pnl
    np.testing.assert_allclose(native, fn, rtol=0, atol=1e-9 * _scale(p))
    # the skew term against independent pricing: sigma' = sigma + level + skew ln(K / S')
    s1 = p.spot[None, :] * (1.0 + shock)
    vol_new = np.maximum(
        p.implied_vol + level[:, p.symbol_index] + skew[:, p.symbol_index] * np.log(p.strike / s1[:, p.symbol_index]),
        0.0,
    )
    ref = _reference_pnl(p, shock, vol_new, np.zeros(n), 0.0)
    np.testing.assert_allclose(native, ref, rtol=0, atol=1e-10 * _scale(p))


def test_chunking_does_not_change_a_bit() -> None:
    p = _book()
    rng = np.random.default_rng(3)
    sc = ScenarioSet(
        np.expm1(rng.normal(0.0, 0.03, (101, p.n_symbols))), vol_scale=np.exp(rng.normal(0.0, 0.1, (101, p.n_symbols)))
    )
    a = evaluate(p, sc, 1.0, per_symbol=True)
    b = evaluate(p, sc, 1.0, per_symbol=True, chunk_size=7)
    np.testing.assert_array_equal(a.pnl, b.pnl)
    assert a.by_symbol is not None and b.by_symbol is not None
    np.testing.assert_array_equal(a.by_symbol, b.by_symbol)


def test_default_chunks_stay_under_the_memory_budget() -> None:
    p = _book(n=5000, n_sym=50)
    sc = ScenarioSet(np.zeros((1, 50)))
    book = prepare(p, 0.0)
    size = default_chunk_size(book, sc)
    assert size * 8 * (6 * 50 + 2) <= CHUNK_MEMORY_BYTES
    callable_sc = ScenarioSet(np.zeros((1, 50)), vol_shift_abs=SkewVolShift(0.01))
    assert default_chunk_size(book, callable_sc) * 8 * 5 * p.n_positions <= CHUNK_MEMORY_BYTES


def _random_american_book(rng: np.random.Generator, n_opt: int) -> Portfolio:
    """``n_opt`` American options of unit quantity on two underlyings (80 and 150), random terms."""
    spot = np.array([80.0, 150.0])
    sym = rng.integers(0, 2, n_opt)
    return Portfolio(
        symbols=("A", "B"),
        spot=spot,
        symbol_index=sym,
        quantity=np.ones(n_opt),
        is_option=True,
        is_call=rng.random(n_opt) < 0.4,
        strike=spot[sym] * np.exp(rng.normal(0.0, 0.2, n_opt)),
        time_years=rng.uniform(0.05, 2.0, n_opt),
        implied_vol=rng.uniform(0.15, 0.6, n_opt),
        rate=0.05,
        dividend_yield=rng.uniform(0.0, 0.04, n_opt),
        is_american=True,
    )


def test_eep_grid_is_close_to_the_exact_engine() -> None:
    """The documented fast American method against the exact engine in every scenario, per option."""
    rng = np.random.default_rng(4)
    n_opt = 40
    p = _random_american_book(rng, n_opt)
    spot, sym = p.spot, p.symbol_index
    n = 1500
    sc = ScenarioSet(np.expm1(rng.standard_t(4, (n, 2)) * 0.025), vol_scale=np.exp(rng.normal(0.0, 0.08, (n, 2))))
    for i in range(n_opt):  # per option, so errors cannot cancel
        one = Portfolio(
            symbols=p.symbols,
            spot=spot,
            symbol_index=sym[i : i + 1],
            quantity=[1.0],
            is_option=True,
            is_call=p.is_call[i],
            strike=p.strike[i],
            time_years=p.time_years[i],
            implied_vol=p.implied_vol[i],
            rate=0.05,
            dividend_yield=p.dividend_yield[i],
            is_american=True,
        )
        exact = evaluate(one, sc, 1.45, american="exact").pnl
        grid = evaluate(one, sc, 1.45, american="eep_grid").pnl
        assert np.max(np.abs(grid - exact)) < 2e-3 * p.strike[i] / 100.0  # measured 4.4e-4
    exact = np.sort(evaluate(p, sc, 1.45, american="exact").pnl)
    grid = np.sort(evaluate(p, sc, 1.45, american="eep_grid").pnl)
    np.testing.assert_allclose(grid[[15, 37, 75]], exact[[15, 37, 75]], rtol=1e-3)


def test_eep_grid_covers_per_position_vol_shifts() -> None:
    """Per-position vol shifts (SABR, Heston, event variants) stay on the grid, which spans the vols they reach:
    the same shifts given per position or per symbol give identical P&L, and per option the grid agrees with the
    exact engine (measured 3.0e-5 of the strike at most on this wider vol range)."""
    rng = np.random.default_rng(14)
    n_opt = 24
    p = _random_american_book(rng, n_opt)
    sym = p.symbol_index
    n = 600
    moves = np.expm1(rng.standard_t(4, (n, 2)) * 0.025)
    scale = np.exp(rng.normal(0.0, 0.05, (n, 2)))
    by_symbol = -0.5 * np.log1p(moves)  # vols up as spot falls
    per_sym = ScenarioSet(moves, vol_scale=scale, vol_shift_abs=by_symbol)
    per_pos = ScenarioSet(moves, vol_scale=scale, vol_shift_abs=by_symbol[:, sym], vol_shift_per_position=True)
    assert prepare(p, 1.45, per_pos, "eep_grid").american == "eep_grid"
    a = evaluate(p, per_pos, 1.45, american="eep_grid", per_symbol=True)
    b = evaluate(p, per_sym, 1.45, american="eep_grid", per_symbol=True)
    np.testing.assert_array_equal(a.pnl, b.pnl)
    worst = 0.0
    for i in range(n_opt):  # per option, so errors cannot cancel
        keep = np.zeros(n_opt)
        keep[i] = 1.0
        one = Portfolio(**{**p.__dict__, "quantity": keep})
        e = evaluate(one, per_pos, 1.45, american="exact").pnl
        g = evaluate(one, per_pos, 1.45, american="eep_grid").pnl
        worst = max(worst, float(np.max(np.abs(g - e)) / p.strike[i]))
    assert worst < 5e-5


def test_eep_grid_spans_rate_shifts_and_small_sets_stay_exact() -> None:
    p = _book()
    sc = ScenarioSet(np.full((2, p.n_symbols), -0.05), rate_shift_abs=np.array([0.0, 0.01]))
    book = prepare(p, 0.0, sc, "eep_grid")
    assert book.american == "eep_grid" and np.all(book.grid_mode != 1)  # two scenarios: no grid, exact prices
    np.testing.assert_array_equal(evaluate(p, sc, american="eep_grid").pnl, evaluate(p, sc).pnl)
    callable_shift = ScenarioSet(sc.spot_shock_rel, vol_shift_abs=SkewVolShift(0.01, -0.1))
    assert prepare(p, 0.0, callable_shift, "eep_grid").american == "exact"


def test_portfolio_validation() -> None:
    with pytest.raises(ValueError, match="strike"):
        Portfolio(
            symbols=("A",),
            spot=[100.0],
            symbol_index=[0],
            quantity=[1.0],
            is_option=True,
            strike=-1.0,
            time_years=1.0,
            implied_vol=0.2,
        )
    with pytest.raises(ValueError, match="symbol_index"):
        Portfolio(symbols=("A",), spot=[100.0], symbol_index=[1], quantity=[1.0])
    with pytest.raises(ValueError, match="spot_shock_rel"):
        ScenarioSet(np.array([[-1.0]]))
    p = Portfolio(symbols=("A", "B"), spot=[1.0, 2.0], symbol_index=[1, 0], quantity=[1.0, 1.0])
    with pytest.raises(ValueError, match="ambiguous"):
        revalue(p, np.zeros((1, 2)), np.zeros((1, 2)))
    assert revalue(p, np.zeros((1, 2)), np.zeros((1, 2)), vol_shift_per_position=True).pnl[0] == 0.0


@pytest.mark.parametrize("processes", [False, True])
def test_dask_cluster_gives_identical_numbers(processes: bool) -> None:
    distributed = pytest.importorskip("distributed")
    p = _book()
    rng = np.random.default_rng(5)
    n = 300
    sc = ScenarioSet(
        np.expm1(rng.normal(0.0, 0.03, (n, p.n_symbols))),
        vol_shift_abs=SkewVolShift(level=rng.normal(0.0, 0.02, n), skew=-0.1),
        rate_shift_abs=rng.normal(0.0, 0.002, n),
    )
    local = evaluate(p, sc, 2.0, per_symbol=True, chunk_size=64)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=processes, dashboard_address=None, silence_logs=40
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = evaluate(p, sc, 2.0, per_symbol=True, chunk_size=64, client=client)
        grid_sc = ScenarioSet(sc.spot_shock_rel, vol_scale=np.exp(rng.normal(0.0, 0.1, (n, p.n_symbols))))
        grid_local = evaluate(p, grid_sc, 1.0, american="eep_grid", chunk_size=50)
        grid_remote = evaluate(p, grid_sc, 1.0, american="eep_grid", chunk_size=50, client=client)
    np.testing.assert_array_equal(local.pnl, remote.pnl)
    assert local.by_symbol is not None and remote.by_symbol is not None
    np.testing.assert_array_equal(local.by_symbol, remote.by_symbol)
    np.testing.assert_array_equal(grid_local.pnl, grid_remote.pnl)


def test_exact_american_path_matches_the_scalar_reference() -> None:
    """``american="bs2002"`` (lane kernel, batched across scenarios and options) against brute-force repricing with
    the scalar reference transcription of BS2002 (20-point Genz rule, libm exp/log)."""
    p = _book(n=80, american=0.6, seed=21)
    rng = np.random.default_rng(22)
    n = 40
    shock = np.expm1(rng.normal(0.0, 0.06, (n, p.n_symbols)))
    scale = np.exp(rng.normal(0.0, 0.15, (n, p.n_symbols)))
    res = evaluate(p, ScenarioSet(shock, vol_scale=scale), 2.0, american="bs2002")
    s0 = p.position_spot
    s1 = s0[None, :] * (1.0 + shock[:, p.symbol_index])
    t1 = np.maximum(p.time_years - 2.0 / 365.0, 0.0)
    vol1 = p.implied_vol * scale[:, p.symbol_index]
    ref = {}
    for key, (s, t, v) in {"0": (s0, p.time_years, p.implied_vol), "1": (s1, t1, vol1)}.items():
        am = american_price(s, p.strike, t, v, p.rate, p.dividend_yield, p.is_call, method="bs2002_reference")
        eu = bsm_price(s, p.strike, t, v, p.rate, p.dividend_yield, p.is_call, backend="numpy")
        ref[key] = np.where(p.is_option, np.where(p.is_american, am, eu), s)
    expected = (p.units * (ref["1"] - ref["0"])).sum(axis=1)
    np.testing.assert_allclose(res.pnl, expected, rtol=0, atol=1e-12 * _scale(p))


def test_eep_grid_range_shortcut_matches_the_scenario_scan() -> None:
    """Without vol shifts or skews the grid's vol and spot ranges come from per-symbol extremes; a zero shift
    array forces the scenario-by-scenario scan, which must give the same grid bit for bit."""
    p = _book(n=60, american=0.5, seed=23)
    rng = np.random.default_rng(24)
    shock = np.expm1(rng.normal(0.0, 0.03, (500, p.n_symbols)))
    scale = np.exp(rng.normal(0.0, 0.1, (500, p.n_symbols)))
    fast = prepare(p, 1.0, ScenarioSet(shock, vol_scale=scale), "eep_grid")
    scan = prepare(p, 1.0, ScenarioSet(shock, vol_scale=scale, vol_shift_abs=np.zeros_like(shock)), "eep_grid")
    assert fast.american == scan.american == "eep_grid"
    for name in ("grid_mode", "grid_y0", "grid_dy", "grid_v0", "grid_dv", "grid_coef", "grid_bcoef"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(scan, name), err_msg=name)


@pytest.mark.parametrize("n", [5, 13, 17])
def test_spline_map_is_scipys_not_a_knot_spline(n: int) -> None:
    y = np.random.default_rng(n).normal(size=(n, 3))
    ref = CubicSpline(np.arange(n, dtype=np.float64), y, axis=0).c
    np.testing.assert_allclose(np.einsum("kin,nj->kij", _spline_map(n), y), ref, rtol=0, atol=1e-13)


def test_eep_grid_prices_scenarios_off_its_range_exactly() -> None:
    """A book prepared for small moves and evaluated under far larger ones: the scenarios off the grid are
    repriced by exact BS2002, bit for bit as the exact path prices them."""
    p = _book(n=40, american=1.0, seed=25)
    rng = np.random.default_rng(26)
    small = ScenarioSet(np.expm1(rng.normal(0.0, 0.005, (200, p.n_symbols))))
    book = prepare(p, 0.0, small, "eep_grid")
    assert book.american == "eep_grid" and np.any(book.grid_mode == 1)
    # far beyond every grid's spot range: puts leave the grid (exact BS2002), calls reach the exercise region
    # (the intrinsic value either way)
    big = ScenarioSet(np.full((3, p.n_symbols), 0.4))
    grid = evaluate_prepared(book, big, per_symbol=True)
    exact = evaluate(p, big, 0.0, per_symbol=True)
    np.testing.assert_array_equal(grid.pnl, exact.pnl)
    assert grid.by_symbol is not None and exact.by_symbol is not None
    np.testing.assert_array_equal(grid.by_symbol, exact.by_symbol)


def test_eep_grid_ranges_taken_chunk_by_chunk_give_the_same_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The grid's vol, spot, rate and yield ranges are extremes over the whole set; taken a chunk of scenarios at a
    time (here chunks of the smallest size, 256 of 1,100 scenarios) they give the grid of one pass bit for bit, for
    the per-symbol shortcut, the scenario scan of per-position vol shifts and the rate and yield shifted grids."""
    import risk_pipeline.quant.scenario_engine as se

    p = _book(n=60, american=0.5, seed=31)
    rng = np.random.default_rng(32)
    n = 1100
    shock = np.expm1(rng.normal(0.0, 0.03, (n, p.n_symbols)))
    scale = np.exp(rng.normal(0.0, 0.1, (n, p.n_symbols)))
    per_pos = rng.normal(0.0, 0.01, (n, p.n_positions))
    sets = {
        "shortcut": ScenarioSet(shock, vol_scale=scale),
        "scan": ScenarioSet(shock, vol_scale=scale, vol_shift_abs=per_pos, vol_shift_per_position=True),
        "carry": ScenarioSet(
            shock,
            vol_scale=scale,
            rate_shift_abs=rng.normal(0.0, 0.002, n),
            dividend_shift_abs=rng.normal(0.0, 0.001, (n, p.n_symbols)),
        ),
    }
    fields = ("grid_mode", "grid_y0", "grid_dy", "grid_v0", "grid_dv", "grid_coef", "grid_bcoef", "grid_step")
    fields += ("grid_dcoef", "grid_dbcoef")
    whole = {k: prepare(p, 1.0, sc, "eep_grid") for k, sc in sets.items()}
    assert all(se.default_chunk_size(prepare(p, 1.0), sc) >= n for sc in sets.values())  # one chunk above
    monkeypatch.setattr(se, "CHUNK_MEMORY_BYTES", 1)  # every chunk MIN_CHUNK scenarios
    assert se.default_chunk_size(prepare(p, 1.0), sets["scan"]) == se.MIN_CHUNK < n
    for k, sc in sets.items():
        chunked = prepare(p, 1.0, sc, "eep_grid")
        assert chunked.american == whole[k].american == "eep_grid"
        assert np.any(chunked.grid_mode == 1)
        for name in fields:
            np.testing.assert_array_equal(getattr(chunked, name), getattr(whole[k], name), err_msg=f"{k} {name}")
    assert np.any(whole["carry"].grid_step != 0.0)


def test_unmoved_values_are_priced_on_first_use_and_equal_the_pricers_at_the_horizon() -> None:
    """``PreparedBook.unmoved`` (read only where a scenario leaves an American off its grid and unmoved) is not
    priced by ``prepare``; when read it is each option's price at ``T - h/365`` with today's inputs (the public
    pricers), bit for bit."""
    from risk_pipeline.quant import scenario_engine as se

    p = _book(seed=4, american=0.6)
    sc = ScenarioSet(np.random.default_rng(0).normal(0.0, 0.02, (50, p.n_symbols)))
    book = prepare(p, 3.0, sc, "eep_grid")
    assert (3.0, "alo") not in se._UNMOVED.get(p, {})
    opt = book.option_positions
    t1 = np.maximum(p.time_years[opt] - 3.0 / 365.0, 0.0)
    args = (p.position_spot[opt], p.strike[opt], t1, p.implied_vol[opt], p.rate[opt], p.dividend_yield[opt])
    am = p.is_american[opt]
    want = np.where(am, american_price(*args, p.is_call[opt]), np.nan)
    np.testing.assert_array_equal(book.unmoved[am], want[am])
    assert (3.0, "alo") in se._UNMOVED[p]


def test_shared_option_values_are_those_the_target_would_price() -> None:
    """``share_values``: a book made of some of a priced book's positions gets their values, equal bit for bit to
    pricing it afresh, and the revaluation is unchanged; positions that are not those rows are refused."""
    from risk_pipeline.quant import scenario_engine as se
    from risk_pipeline.quant.portfolio import stack_portfolios

    books = [_book(n=12, seed=s, american=0.6) for s in (1, 2, 3)]
    whole = stack_portfolios(books)
    values = market_values(whole)
    part = stack_portfolios([books[2], books[0]])
    n = [b.n_positions for b in books]
    rows = np.r_[np.arange(n[0] + n[1], sum(n)), np.arange(n[0])]
    se.share_values(whole, rows, part)
    np.testing.assert_array_equal(se._UNMOVED[part][(0.0, "alo")], se._UNMOVED[whole][(0.0, "alo")][rows])
    fresh = stack_portfolios([books[2], books[0]])
    np.testing.assert_array_equal(market_values(part), market_values(fresh))
    np.testing.assert_array_equal(market_values(part), values[rows])
    sc = ScenarioSet(np.random.default_rng(1).normal(0.0, 0.03, (3, part.n_symbols)))
    np.testing.assert_array_equal(evaluate(part, sc, 1.0).pnl, evaluate(fresh, sc, 1.0).pnl)
    with pytest.raises(ValueError, match="rows"):
        se.share_values(whole, rows[::-1], stack_portfolios([books[2], books[0]]))


def test_row_vol_shifts_made_chunk_by_chunk_equal_the_whole_set_array(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-position vol shifts made a chunk of rows at a time (``RowVolShifts``) give the whole-set array's EEP grid
    and P&L bit for bit, with and without rate and yield shifts, keep the grid (no fallback to exact pricing), and
    are never asked for more than one chunk of rows (chunks of 256 of 1,100 scenarios here)."""
    import risk_pipeline.quant.scenario_engine as se

    p = _book(n=60, american=0.5, seed=41)
    rng = np.random.default_rng(42)
    n = 1100
    shock = np.expm1(rng.normal(0.0, 0.03, (n, p.n_symbols)))
    scale = np.exp(rng.normal(0.0, 0.1, (n, p.n_symbols)))
    per_pos = rng.normal(0.0, 0.01, (n, p.n_positions))
    asked: list[tuple[int, int]] = []

    def make(start: int, stop: int) -> np.ndarray:
        asked.append((start, stop))
        return per_pos[start:stop].copy()

    carry = dict(rate_shift_abs=rng.normal(0.0, 0.002, n), dividend_shift_abs=rng.normal(0.0, 0.001, (n, p.n_symbols)))
    fields = ("grid_mode", "grid_y0", "grid_dy", "grid_v0", "grid_dv", "grid_coef", "grid_bcoef", "grid_step")
    fields += ("grid_dcoef", "grid_dbcoef")
    monkeypatch.setattr(se, "CHUNK_MEMORY_BYTES", 1)  # every chunk MIN_CHUNK scenarios
    for extra in ({}, carry):
        whole = ScenarioSet(shock, vol_scale=scale, vol_shift_abs=per_pos, vol_shift_per_position=True, **extra)
        rows = ScenarioSet(shock, vol_scale=scale, vol_shift_abs=se.RowVolShifts(make, p.n_positions), **extra)
        asked.clear()
        b_whole, b_rows = prepare(p, 1.0, whole, "eep_grid"), prepare(p, 1.0, rows, "eep_grid")
        assert b_whole.american == b_rows.american == "eep_grid" and np.any(b_rows.grid_mode == 1)
        for name in fields:
            np.testing.assert_array_equal(getattr(b_rows, name), getattr(b_whole, name), err_msg=name)
        got = se.evaluate_prepared(b_rows, rows, per_symbol=True)
        ref = se.evaluate_prepared(b_whole, whole, per_symbol=True)
        np.testing.assert_array_equal(got.pnl, ref.pnl)
        assert got.by_symbol is not None and ref.by_symbol is not None
        np.testing.assert_array_equal(got.by_symbol, ref.by_symbol)
        assert max(b - a for a, b in asked) == se.MIN_CHUNK < n
        # the range scan and the evaluation each cover every row once
        assert sorted(asked) == sorted(2 * [(a, min(a + se.MIN_CHUNK, n)) for a in range(0, n, se.MIN_CHUNK)])
    # and the same P&L as the exact engine on the whole-set array where the grid is not used
    few = ScenarioSet(shock[:5], vol_scale=scale[:5], vol_shift_abs=se.RowVolShifts(make, p.n_positions))
    exact = evaluate(
        p, ScenarioSet(shock[:5], vol_scale=scale[:5], vol_shift_abs=per_pos[:5], vol_shift_per_position=True)
    )
    np.testing.assert_array_equal(evaluate(p, few).pnl, exact.pnl)
    with pytest.raises(ValueError, match="positions"):
        evaluate(p, ScenarioSet(shock, vol_shift_abs=se.RowVolShifts(make, p.n_positions + 1)))
    with pytest.raises(ValueError, match="per position"):
        ScenarioSet(shock, vol_shift_abs=se.RowVolShifts(make, p.n_positions), vol_shift_per_position=False)
    with pytest.raises(ValueError, match="array scenarios only"):
        se.evaluate_many([p], [rows])


def test_rows_and_stacks_of_checked_sets_are_the_sets_the_checks_make() -> None:
    """``ScenarioSet.take`` and ``_stack_sets`` skip the checks of ``__post_init__`` for arrays made of checked sets:
    every field is the one the checked constructor gives (same arrays, bit for bit, C-contiguous float64), and an
    invalid or non-contiguous array still goes through the checks."""
    from dataclasses import fields, replace

    from risk_pipeline.quant.scenario_engine import _checked, _stack_sets

    rng = np.random.default_rng(7)
    n, n_sym = 40, 3
    full = ScenarioSet(
        rng.normal(0.0, 0.02, (n, n_sym)),
        vol_scale=np.exp(rng.normal(0.0, 0.1, (n, n_sym))),
        vol_shift_abs=rng.normal(0.0, 0.01, (n, n_sym)),
        vol_skew=rng.normal(0.0, 0.01, (n, n_sym)),
        rate_shift_abs=rng.normal(0.0, 1e-3, n),
        dividend_shift_abs=rng.normal(0.0, 1e-3, (n, n_sym)),
        row_offset=5,
    )

    def same(a: ScenarioSet, b: ScenarioSet) -> None:
        for f in fields(ScenarioSet):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if isinstance(y, np.ndarray):
                assert isinstance(x, np.ndarray) and x.dtype == np.float64 and x.flags.c_contiguous
                np.testing.assert_array_equal(x, y)
            else:
                assert x == y, f.name

    part = full.take(7, 19)
    cut = {k: getattr(full, k)[7:19] for k in ("spot_shock_rel", "vol_scale", "vol_shift_abs", "vol_skew")}
    rates = {"rate_shift_abs": full.rate_shift_abs[7:19], "dividend_shift_abs": full.dividend_shift_abs[7:19]}
    same(part, replace(full, **cut, **rates, row_offset=12))
    assert part.row_offset == 12
    books = [_book(n=12, n_sym=n_sym, seed=s) for s in (1, 2)]
    sets = [full.take(0, 30), ScenarioSet(rng.normal(0.0, 0.02, (25, n_sym)))]
    stacked = _stack_sets(sets, 30, books)
    pad = np.vstack([sets[1].spot_shock_rel, np.repeat(sets[1].spot_shock_rel[-1:], 5, axis=0)])
    want = ScenarioSet(
        np.hstack([sets[0].spot_shock_rel, pad]),
        vol_scale=np.hstack([sets[0].vol_scale, np.ones((30, n_sym))]),
        vol_shift_abs=np.hstack([sets[0].vol_shift_abs, np.zeros((30, n_sym))]),
        vol_skew=np.hstack([sets[0].vol_skew, np.zeros((30, n_sym))]),
        rate_shift_abs=np.hstack([sets[0].rate_by_symbol(), np.zeros((30, n_sym))]),
        dividend_shift_abs=np.hstack([sets[0].dividend_shift_abs, np.zeros((30, n_sym))]),
    )
    same(stacked, want)
    # anything else is checked as before
    with pytest.raises(ValueError, match="above -1"):
        _checked(full, spot_shock_rel=np.asfortranarray(np.full((4, n_sym), -1.5)))


def test_symbol_major_inputs_are_the_transposed_chunk_inputs() -> None:
    """``_ChunkInputs.symbol_major``: the kernels' ``(symbols, scenarios)`` inputs, made directly for absent shocks
    (zero shifts and skews, unit scales), equal the transposes of the chunk's dense inputs, for sets with and without
    those shocks."""
    from risk_pipeline.quant.scenario_engine import _chunk_inputs

    p = _book(n=30, n_sym=4, american=0.5, seed=3)
    rng = np.random.default_rng(4)
    shock = rng.normal(0.0, 0.02, (50, p.n_symbols))
    sets = [
        ScenarioSet(shock),
        ScenarioSet(
            shock,
            vol_scale=np.exp(rng.normal(0.0, 0.1, shock.shape)),
            vol_shift_abs=rng.normal(0.0, 0.01, shock.shape),
            vol_skew=rng.normal(0.0, 0.01, shock.shape),
        ),
    ]
    names = ("spot_new", "log_spot_new", "scale", "shift", "skew")
    for sc in sets:
        inp = _chunk_inputs(prepare(p, 1.0, sc, "eep_grid"), sc)
        for name, got in zip(names, inp.symbol_major(*names), strict=True):
            assert got.flags.c_contiguous and got.dtype == np.float64
            np.testing.assert_array_equal(got, getattr(inp, name).T)
    assert {name for name, _ in _chunk_inputs(prepare(p, 1.0, sets[0], "eep_grid"), sets[0]).constant} == {
        "scale",
        "shift",
        "skew",
    }


def test_spline_coefficients_are_each_options_own_bits_whatever_the_option_count() -> None:
    """An option's grid coefficients are the same bits whether it is fitted alone or with 4, 16, 17, 40, 257 or
    4,672 others (NumPy's einsum changes its contraction order with the count, which would make a book's grids depend
    on the books stacked with it); their agreement with the einsum to rounding is the next test's."""
    from risk_pipeline.quant.scenario_engine import _spline_coefficients

    rng = np.random.default_rng(41)
    vals = rng.normal(0.0, 1.0, (4673, 5, 13)) * rng.lognormal(0.0, 3.0, (4673, 1, 1))
    alone = np.stack([_spline_coefficients(vals[a : a + 1], np.empty((1, 4, 12, 4, 4)))[0] for a in range(300)])
    for na in (0, 1, 5, 16, 17, 40, 257, 4673):
        out = np.full((na, 4, 12, 4, 4), np.nan)
        got = _spline_coefficients(vals[:na], out)
        assert got is out
        k = min(na, 300)
        np.testing.assert_array_equal(got[:k].view(np.int64), alone[:k].view(np.int64), err_msg=f"{na} options")


def test_boundary_coefficients_are_scipys_spline_and_each_options_own_bits() -> None:
    """The exercise boundary's spline along vol (``ln(S*/K)`` at the vol nodes): scipy's not-a-knot
    ``CubicSpline`` coefficients of each option to rounding, and the same bits for an option alone or with others."""
    from risk_pipeline.quant.scenario_engine import _boundary_coefficients

    rng = np.random.default_rng(7)
    lratio = np.log(rng.uniform(0.3, 0.99, (500, 5)))
    got = _boundary_coefficients(lratio)
    assert got.shape == (500, 4, 4) and got.flags.c_contiguous
    for a in (0, 17, 499):
        want = CubicSpline(np.arange(5.0), lratio[a]).c.T  # (vol cell, power)
        np.testing.assert_allclose(got[a], want, rtol=0.0, atol=1e-14)
    for na in (1, 3, 18, 64):
        np.testing.assert_array_equal(_boundary_coefficients(lratio[:na]).view(np.int64), got[:na].view(np.int64))


def test_stacked_books_grids_are_each_books_own_bits() -> None:
    """``evaluate_many`` of 1 to 12 copies of a book with American options (3 to 36 grids built at once) gives each
    copy the per-underlying P&L of the book evaluated alone, bit for bit, as its docstring states."""
    rng = np.random.default_rng(3)
    p = _book(n=8, n_sym=2, seed=5, american=1.0)
    assert 3 <= int(p.is_american.sum()) < 18 <= 12 * int(p.is_american.sum())
    sc = ScenarioSet(rng.normal(0.0, 0.03, (260, 2)), vol_scale=np.exp(rng.normal(0.0, 0.05, (260, 2))))
    alone = evaluate(p, sc, 1.4, american="eep_grid", per_symbol=True).by_symbol
    assert alone is not None
    for k in (1, 5, 6, 12):
        for res in evaluate_many([p] * k, [sc] * k, 1.4, american="eep_grid"):
            assert res.by_symbol is not None
            np.testing.assert_array_equal(res.by_symbol.view(np.int64), alone.view(np.int64), err_msg=f"{k} books")


@pytest.mark.parametrize("na", [17, 18, 33, 64, 257, 4699, 46730])
def test_spline_kernel_is_the_blas_products_to_rounding(na: int) -> None:
    """``_spline_kernel``, into a coefficient array and into one slot of a several-grid array (``grid_dcoef``'s
    rows), gives the einsum's coefficients to within the rounding of a 65-term sum (node values of exact zeros,
    negative zeros and whole options at zero included), the same bits in both places, and equals the exact spline
    coefficients of each option's nodes (rational arithmetic on a few options) to rounding. Bit for bit equality
    with the BLAS products holds where OpenBLAS' kernel accumulates each entry as one FMA chain in index order
    (checked on this project's machines, with the pipeline's tables, in docs/speed_log.md); it is not asserted
    here, since another CPU's BLAS kernel may sum in another order."""
    from fractions import Fraction

    from risk_pipeline.quant.scenario_engine import _spline_coefficients

    rng = np.random.default_rng(na)
    vals = rng.normal(0.0, 1.0, (na, 5, 13)) * rng.lognormal(0.0, 3.0, (na, 1, 1))
    vals[rng.random(vals.shape) < 0.2] = 0.0
    vals[: na // 10] = 0.0
    vals[na // 10 : na // 5, :, :4] = -0.0
    want = np.einsum("lmv,kin,avn->amilk", _spline_map(5), _spline_map(13), vals, optimize=True)
    got = _spline_coefficients(vals, np.full((na, 4, 12, 4, 4), np.nan))
    # each coefficient sums 5 x 13 products: two orders of that sum differ by at most about 65 ulps of its terms' sum
    scale = np.einsum(
        "lmv,kin,avn->amilk", np.abs(_spline_map(5)), np.abs(_spline_map(13)), np.abs(vals), optimize=True
    )
    assert np.all(np.abs(got - want) <= 128 * np.finfo(float).eps * scale)
    wide = np.full((na, 3, 4, 12, 4, 4), np.nan)
    strided = _spline_coefficients(vals, wide, 1)
    assert strided.base is not None and not strided.flags.c_contiguous
    np.testing.assert_array_equal(strided.view(np.int64), got.view(np.int64))  # the same sums, only placed elsewhere
    assert np.isnan(wide[:, [0, 2]]).all()  # the other grids' rows untouched
    m_v, m_y = _spline_map(5), _spline_map(13)
    for a in (0, na // 7, na - 1):
        for vc, yc, vp, yp in ((0, 0, 0, 0), (3, 11, 3, 3), (2, 5, 1, 2)):
            exact = sum(
                Fraction(float(m_v[vp, vc, v])) * Fraction(float(vals[a, v, y])) * Fraction(float(m_y[yp, yc, y]))
                for v in range(5)
                for y in range(13)
            )
            assert abs(float(exact) - got[a, vc, yc, vp, yp]) <= 1e-13 * (1.0 + np.abs(vals[a]).max())


def test_fused_multiply_add_rounds_once() -> None:
    """``_numba.fused_multiply_add`` in compiled code is ``a * b + c`` rounded once: the correctly rounded exact
    value (rational arithmetic), where the product rounded first differs."""
    from fractions import Fraction

    from numba import njit

    from risk_pipeline.quant._numba import fused_multiply_add

    @njit
    def fma(a: float, b: float, c: float) -> float:
        return fused_multiply_add(a, b, c)

    a = 1.0 + 2.0**-30
    cases = [(a, a, -(1.0 + 2.0**-29)), (0.1, 10.0, -1.0), (-0.0, 5.0, 0.0), (3.0, -0.0, -0.0), (1e308, 10.0, -1e308)]
    rng = np.random.default_rng(3)
    cases += [tuple(float(x) for x in rng.normal(0.0, 1.0, 3)) for _ in range(200)]
    for x, y, z in cases:
        got = fma(x, y, z)
        if not np.isfinite(x * y):
            assert got == 9e308  # 1e309 - 1e308 is finite only without the intermediate rounding
            continue
        exact = Fraction(x) * Fraction(y) + Fraction(z)
        assert got == float(exact), (x, y, z)
        if exact == 0:
            assert np.signbit(got) == (np.signbit(x * y) and np.signbit(z))
    assert fma(a, a, -(1.0 + 2.0**-29)) == 2.0**-60 != a * a - (1.0 + 2.0**-29)


def test_first_chunk_inputs_of_the_grid_scan_are_reused_with_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """``evaluate`` hands the first chunk's inputs made for the grid's ranges to the revaluation: the chunk's inputs
    are those ``_chunk_inputs`` makes again, and the P&L is that of a separate ``prepare`` and ``evaluate_prepared``
    (which make them twice), bit for bit, in one chunk and in chunks of 256 of 700 scenarios."""
    import risk_pipeline.quant.scenario_engine as se

    p = _book(n=50, american=0.6, seed=43)
    rng = np.random.default_rng(44)
    n = 700
    shock = np.expm1(rng.normal(0.0, 0.03, (n, p.n_symbols)))
    sc = ScenarioSet(
        shock,
        vol_scale=np.exp(rng.normal(0.0, 0.1, (n, p.n_symbols))),
        vol_shift_abs=rng.normal(0.0, 0.01, (n, p.n_positions)),
        vol_shift_per_position=True,
    )
    for memory in (se.CHUNK_MEMORY_BYTES, 1):
        monkeypatch.setattr(se, "CHUNK_MEMORY_BYTES", memory)
        kept: dict = {}
        book = prepare(p, 1.0, sc, "eep_grid", kept=kept)
        stop = min(n, se.default_chunk_size(book, sc))
        assert list(kept) == [(0, stop)]
        fresh = se._chunk_inputs(book, sc.take(0, stop))
        for name in ("spot_new", "log_spot_new", "scale", "shift", "skew", "shift_opt", "rate", "div", "moved"):
            np.testing.assert_array_equal(getattr(kept[0, stop], name), getattr(fresh, name), err_msg=name)
        assert kept[0, stop].constant == fresh.constant
        want = evaluate_prepared(prepare(p, 1.0, sc, "eep_grid"), sc, per_symbol=True)
        got = evaluate(p, sc, 1.0, american="eep_grid", per_symbol=True)
        np.testing.assert_array_equal(got.pnl, want.pnl)
        np.testing.assert_array_equal(got.by_symbol, want.by_symbol)


def test_exact_prices_fill_the_nan_entries_of_the_rows_counted() -> None:
    """``_exact_where_nan`` searches only the rows its count names: every NaN entry of those rows becomes the public
    exact pricer's price at the horizon with the scenario's spot, vol and shifted rate and yield (bit for bit), every
    other entry is left as it was."""
    from risk_pipeline.quant import scenario_engine as se

    p = _book(n=30, seed=7, american=1.0)
    rng = np.random.default_rng(8)
    n = 40
    sc = ScenarioSet(
        np.expm1(rng.normal(0.0, 0.03, (n, p.n_symbols))),
        vol_scale=np.exp(rng.normal(0.0, 0.1, (n, p.n_symbols))),
        rate_shift_abs=rng.normal(0.0, 0.002, n),
        dividend_shift_abs=rng.normal(0.0, 0.001, (n, p.n_symbols)),
    )
    book = prepare(p, 2.0, sc, "eep_grid")
    inp = se._chunk_inputs(book, sc)
    n_am = book.units.size - book.n_euro
    values = rng.uniform(1.0, 2.0, (n_am, n))
    hit = np.zeros((n_am, n), dtype=bool)
    for m in (0, 3, n_am - 1):  # rows with NaNs: some entries, all entries
        hit[m, rng.choice(n, 10 if m else n, replace=False)] = True
    values[hit] = np.nan
    before = values.copy()
    se._exact_where_nan(book, inp, values, hit.sum(axis=1))
    np.testing.assert_array_equal(values[~hit], before[~hit])
    m, j = np.nonzero(hit)
    pos = book.option_positions[book.n_euro + m]
    s = p.symbol_index[pos]
    spot = p.spot[s] * (1.0 + sc.spot_shock_rel[j, s])
    vol = p.implied_vol[pos] * sc.vol_scale[j, s]
    t1 = np.maximum(p.time_years[pos] - 2.0 / 365.0, 0.0)
    rate = p.rate[pos] + sc.rate_shift_abs[j]
    div = p.dividend_yield[pos] + sc.dividend_shift_abs[j, s]
    want = american_price(spot, p.strike[pos], t1, vol, rate, div, p.is_call[pos])
    np.testing.assert_array_equal(values[m, j], want)


def _fma(a: float, b: float, c: float) -> float:
    """``a * b + c`` rounded once (exact rational arithmetic; finite operands)."""
    from fractions import Fraction

    return float(Fraction(a) * Fraction(b) + Fraction(c))


def test_spline_kernel_sums_each_entry_as_one_fused_multiply_add_chain_in_index_order() -> None:
    """``_spline_coefficients`` of a few options is, bit for bit, its documented arithmetic: each entry of the first
    product (vol nodes) a chain of single-rounding multiply-adds in index order from 0.0, rounded, then each entry
    of the second (y nodes) the same over the first's entries (exact zeros, negative zeros and magnitudes over 10
    decades included)."""
    from risk_pipeline.quant.scenario_engine import _spline_coefficients

    rng = np.random.default_rng(11)
    vals = rng.normal(0.0, 1.0, (4, 5, 13)) * rng.lognormal(0.0, 5.0, (4, 1, 1))
    vals[rng.random(vals.shape) < 0.2] = 0.0
    vals[1, :, :4] = -0.0
    got = _spline_coefficients(vals, np.empty((4, 4, 12, 4, 4)))
    m_v, m_y = _spline_map(5), _spline_map(13)
    want = np.empty_like(got)

    def chain(xs: np.ndarray, ms: np.ndarray) -> float:
        """``sum x * m`` as one fused multiply-add after another from 0.0, in order."""
        acc = 0.0
        for x, m in zip(xs, ms, strict=True):
            acc = _fma(float(x), float(m), acc)
        return acc

    for a in range(vals.shape[0]):
        tmp = np.empty((4, 4, 13))
        for vp in range(4):
            for vc in range(4):
                for y in range(13):
                    tmp[vp, vc, y] = chain(vals[a, :, y], m_v[vp, vc, :])
        for vc in range(4):
            for yc in range(12):
                for vp in range(4):
                    for yp in range(4):
                        want[a, vc, yc, vp, yp] = chain(tmp[vp, vc, :], m_y[yp, yc, :])
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
