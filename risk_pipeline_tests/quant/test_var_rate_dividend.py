"""Rate and dividend-yield risk factors of VaR: scenario P&L against hand / QuantLib repricing, the early-exercise
grid against the exact engine under rate and yield shifts, the factor histories, and factors off = no factors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import QuantLib as ql
from scipy.stats import norm

from risk_pipeline.quant import scenario_engine
from risk_pipeline.quant.american import american_price
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate, evaluate_many, prepare
from risk_pipeline.quant.var import (
    ALL_METHODS,
    HISTORICAL,
    MONTE_CARLO_FHS,
    MarketHistory,
    VarConfig,
    compute_var,
    compute_var_batch,
    fhs_draws,
    fhs_scenarios,
    fit_fhs,
    historical_scenarios,
)

TODAY = ql.Date(15, 1, 2025)
#: Largest American price error allowed, per unit of strike: the grid's bound without shifts
#: (``test_scenario_engine.py``); measured under these shifts: about 2e-5 at worst, 4e-7 in the median.
GRID_TOL_PER_STRIKE = 5e-5


def _bsm(s: np.ndarray, k: float, t: float, r: np.ndarray, q: np.ndarray, vol: np.ndarray, call: bool) -> np.ndarray:
    """Black-Scholes-Merton from scipy's normal CDF (Hull ch. 15)."""
    d1 = (np.log(s / k) + (r - q + 0.5 * vol * vol) * t) / (vol * np.sqrt(t))
    d2 = d1 - vol * np.sqrt(t)
    w = 1.0 if call else -1.0
    return w * (s * np.exp(-q * t) * norm.cdf(w * d1) - k * np.exp(-r * t) * norm.cdf(w * d2))


def _american_book(n: int = 24, seed: int = 3) -> Portfolio:
    """American puts and calls on two dividend-paying names, 30 days to 2 years (whole days), r 1-6 %, q 0.5-5 %."""
    rng = np.random.default_rng(seed)
    spot = np.array([100.0, 40.0])
    sym = np.arange(n) % 2
    return Portfolio(
        symbols=("A", "B"),
        spot=spot,
        symbol_index=sym,
        quantity=np.ones(n),
        multiplier=1.0,
        is_option=True,
        is_call=np.arange(n) % 4 < 2,
        strike=spot[sym] * np.exp(rng.uniform(-0.2, 0.2, n)),
        time_years=rng.integers(30, 730, n) / 365.0,
        implied_vol=rng.uniform(0.15, 0.6, n),
        rate=rng.uniform(0.01, 0.06, n),
        dividend_yield=rng.uniform(0.005, 0.05, n),
        is_american=True,
    )


def _shifted_set(n: int, seed: int, rate_sd: float, div_sd: float) -> ScenarioSet:
    rng = np.random.default_rng(seed)
    return ScenarioSet(
        np.expm1(rng.normal(0.0, 0.03, (n, 2))),
        vol_scale=np.exp(rng.normal(0.0, 0.06, (n, 2))),
        rate_shift_abs=rng.normal(0.0, rate_sd, n),
        dividend_shift_abs=rng.normal(0.0, div_sd, (n, 2)),
    )


def test_european_pnl_under_rate_and_dividend_shifts_equals_hand_repricing() -> None:
    k, t, days = 105.0, 1.5, 3.0
    book = Portfolio(
        symbols=("A", "B"), spot=[100.0, 100.0], symbol_index=[0, 1], quantity=[10.0, -7.0], multiplier=100.0,
        is_option=True, is_call=[True, False], strike=k, time_years=t, implied_vol=[0.25, 0.4], rate=0.04,
        dividend_yield=[0.02, 0.03],
    )  # fmt: skip
    sc = _shifted_set(200, 1, 0.002, 0.001)
    pnl = evaluate(book, sc, days, per_symbol=True)
    t1 = t - days / 365.0
    s1 = 100.0 * (1.0 + sc.spot_shock_rel)
    assert sc.rate_shift_abs is not None and sc.dividend_shift_abs is not None and sc.vol_scale is not None
    r1 = 0.04 + sc.rate_shift_abs
    call = _bsm(s1[:, 0], k, t1, r1, 0.02 + sc.dividend_shift_abs[:, 0], 0.25 * sc.vol_scale[:, 0], True)
    put = _bsm(s1[:, 1], k, t1, r1, 0.03 + sc.dividend_shift_abs[:, 1], 0.4 * sc.vol_scale[:, 1], False)
    base_call = _bsm(np.array([100.0]), k, t, np.array([0.04]), np.array([0.02]), np.array([0.25]), True)
    base_put = _bsm(np.array([100.0]), k, t, np.array([0.04]), np.array([0.03]), np.array([0.4]), False)
    assert pnl.by_symbol is not None
    np.testing.assert_allclose(pnl.by_symbol[:, 0], 1000.0 * (call - base_call), rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(pnl.by_symbol[:, 1], -700.0 * (put - base_put), rtol=1e-9, atol=1e-7)
    # the shifts matter far beyond that tolerance
    still = evaluate(book, ScenarioSet(sc.spot_shock_rel, vol_scale=sc.vol_scale), days).pnl
    assert np.max(np.abs(still - pnl.pnl)) > 100.0


def _quantlib_prices(book: Portfolio, sc: ScenarioSet, horizon_days: int) -> np.ndarray:
    """American prices ``(n_scenarios, n_options)`` by QuantLib's QD+ fixed-point engine (high precision) with
    flat continuous curves on Actual365Fixed, ``horizon_days`` calendar days on."""
    ql.Settings.instance().evaluationDate = TODAY
    dc = ql.Actual365Fixed()
    spot, r, q, v = (ql.SimpleQuote(x) for x in (100.0, 0.0, 0.0, 0.2))
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(spot),
        ql.YieldTermStructureHandle(ql.FlatForward(TODAY, ql.QuoteHandle(q), dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(TODAY, ql.QuoteHandle(r), dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(TODAY, ql.NullCalendar(), ql.QuoteHandle(v), dc)),
    )
    engine = ql.QdFpAmericanEngine(process, ql.QdFpAmericanEngine.highPrecisionScheme())
    assert sc.rate_shift_abs is not None and sc.dividend_shift_abs is not None and sc.vol_scale is not None
    out = np.empty((sc.n_scenarios, book.n_positions))
    for i in range(book.n_positions):
        s = int(book.symbol_index[i])
        days = round(book.time_years[i] * 365.0) - horizon_days
        kind = ql.Option.Call if book.is_call[i] else ql.Option.Put
        opt = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, float(book.strike[i])), ql.AmericanExercise(TODAY, TODAY + days)
        )
        opt.setPricingEngine(engine)
        for j in range(sc.n_scenarios):
            spot.setValue(float(book.spot[s] * (1.0 + sc.spot_shock_rel[j, s])))
            v.setValue(float(book.implied_vol[i] * sc.vol_scale[j, s]))
            r.setValue(float(book.rate[i] + sc.rate_shift_abs[j]))
            q.setValue(float(book.dividend_yield[i] + sc.dividend_shift_abs[j, s]))
            out[j, i] = opt.NPV()
    return out


def _per_option_pnl(book: Portfolio, sc: ScenarioSet, horizon_days: float, american: str) -> np.ndarray:
    """``(n_scenarios, n_options)`` P&L of one unit of each option (one engine call per option)."""
    cols = []
    for i in range(book.n_positions):
        one = Portfolio(**{**book.__dict__, "quantity": np.where(np.arange(book.n_positions) == i, 1.0, 0.0)})
        cols.append(evaluate(one, sc, horizon_days, american=american).pnl)  # type: ignore[arg-type]
    return np.stack(cols, axis=1)


def test_american_pnl_with_rate_and_dividend_shifts_matches_quantlib_and_the_exact_engine() -> None:
    book = _american_book()
    horizon = 7
    sc = _shifted_set(40, 2, 0.0015, 0.0008)  # 15 bp and 8 bp: several days of rate and yield moves
    grid = _per_option_pnl(book, sc, horizon, "eep_grid")
    exact = _per_option_pnl(book, sc, horizon, "exact")
    assert prepare(book, horizon, sc, "eep_grid").american == "eep_grid"  # the grid is used, not the exact engine
    today = american_price(
        book.position_spot, book.strike, book.time_years, book.implied_vol, book.rate, book.dividend_yield, book.is_call
    )
    oracle = _quantlib_prices(book, sc, horizon) - today[None, :]
    assert np.max(np.abs(exact - oracle) / book.strike) < 1e-6  # the exact engine under the shifts
    assert np.max(np.abs(grid - exact) / book.strike) < GRID_TOL_PER_STRIKE
    assert np.max(np.abs(grid - oracle) / book.strike) < GRID_TOL_PER_STRIKE
    # without the shifts the P&L is off by far more than the tolerance: the test sees the factors
    still = _per_option_pnl(book, ScenarioSet(sc.spot_shock_rel, vol_scale=sc.vol_scale), horizon, "eep_grid")
    assert np.max(np.abs(still - oracle) / book.strike) > 20 * GRID_TOL_PER_STRIKE


def test_options_whose_shifts_reach_r_equal_q_are_checked_against_the_exact_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the shifted rates and yields reach ``r = q`` the exercise boundary at maturity has a kink in them: the
    grid is kept only where it matches the exact engine at check points, else those options are priced exactly."""
    book = Portfolio(
        symbols=("A",), spot=[100.0], symbol_index=[0] * 4, quantity=np.ones(4), multiplier=1.0, is_option=True,
        is_call=[True, False, True, False], strike=[95.0, 104.0, 91.0, 131.0], time_years=[1.2, 1.2, 0.02, 0.54],
        implied_vol=[0.1, 0.2, 0.3, 0.18], rate=0.03, dividend_yield=0.0302, is_american=True,
    )  # fmt: skip
    rng = np.random.default_rng(4)
    sc = ScenarioSet(
        np.expm1(rng.normal(0.0, 0.02, (60, 1))), rate_shift_abs=rng.normal(0.0, 0.002, 60),
        dividend_shift_abs=rng.normal(0.0, 0.001, (60, 1)),
    )  # fmt: skip
    grid = _per_option_pnl(book, sc, 1.0, "eep_grid")
    exact = _per_option_pnl(book, sc, 1.0, "exact")
    assert np.max(np.abs(grid - exact) / book.strike) < GRID_TOL_PER_STRIKE
    monkeypatch.setattr(scenario_engine, "KINK_CHECK_TOL", 0.0)  # no grid passes: every such option is exact
    assert list(prepare(book, 1.0, sc, "eep_grid").grid_mode) == [2, 2, 2, 2]
    np.testing.assert_array_equal(evaluate(book, sc, 1.0, american="eep_grid").pnl, evaluate(book, sc, 1.0).pnl)


def test_options_failing_the_kink_check_are_read_from_a_grid_on_one_side_of_r_equal_q(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An option whose rate and yield box reaches ``r = q`` and fails the kink check is built again on a box on one
    side of ``r = q``: inside it the grid is within the grid's tolerance of the exact engine and QuantLib, outside it
    the exact engine prices it; every other option's grid and P&L are the same bits as without the rebuild."""
    rng = np.random.default_rng(5)
    n = 12
    spot = np.array([100.0, 50.0])
    sym = np.arange(n) % 2
    book = Portfolio(
        symbols=("A", "B"), spot=spot, symbol_index=sym, quantity=np.ones(n), multiplier=1.0, is_option=True,
        is_call=np.arange(n) % 3 != 0, strike=spot[sym] * np.exp(rng.uniform(-0.25, 0.1, n)),
        time_years=rng.choice([11, 37, 37, 183, 365], n) / 365.0, implied_vol=rng.uniform(0.15, 0.5, n), rate=0.04297,
        dividend_yield=np.where(np.arange(n) % 2 == 0, 0.04, 0.0383), is_american=True,
    )  # fmt: skip
    m = 2000
    sc = ScenarioSet(
        np.expm1(rng.normal(0.0, 0.04, (m, 2))), vol_scale=np.exp(rng.normal(0.0, 0.08, (m, 2))),
        rate_shift_abs=rng.normal(0.0, 0.0012, m), dividend_shift_abs=rng.normal(0.0, 0.0009, (m, 2)),
    )  # fmt: skip
    horizon = 5
    new = prepare(book, horizon, sc, "eep_grid")
    grid = _per_option_pnl(book, sc, horizon, "eep_grid")
    with monkeypatch.context() as mp:
        mp.setattr(scenario_engine, "KINK_BOX_SHARES", ())  # the code before: such options exact everywhere
        old = prepare(book, horizon, sc, "eep_grid")
        before = _per_option_pnl(book, sc, horizon, "eep_grid")
    rebuilt = (old.grid_mode == 2) & (new.grid_mode == 1)
    assert np.flatnonzero(rebuilt).tolist() == [1, 5, 7] and np.all(new.grid_mode == 1)
    gap = np.abs(book.rate - book.dividend_yield)
    assert np.all(new.grid_step[rebuilt].sum(axis=1) < gap[rebuilt])  # the smaller box stays on one side
    assert np.all(np.abs(old.grid_step[rebuilt].sum(axis=1)) >= gap[rebuilt])  # the whole box reached r = q
    for f in ("grid_mode", "grid_y0", "grid_dy", "grid_v0", "grid_dv", "grid_coef", "grid_bcoef", "grid_step"):
        np.testing.assert_array_equal(getattr(new, f)[~rebuilt], getattr(old, f)[~rebuilt])
    np.testing.assert_array_equal(grid[:, ~rebuilt], before[:, ~rebuilt])
    exact = _per_option_pnl(book, sc, horizon, "exact")
    np.testing.assert_array_equal(before[:, rebuilt], exact[:, rebuilt])  # before: the exact engine in every scenario
    assert sc.rate_shift_abs is not None and sc.dividend_shift_abs is not None
    lim = new.grid_step * (1.0 + 1e-9)
    inside = (np.abs(sc.rate_shift_abs)[:, None] <= lim[None, :, 0]) & (
        np.abs(sc.dividend_shift_abs[:, sym]) <= lim[None, :, 1]
    )
    cells = inside & rebuilt[None, :]
    outside = ~inside & rebuilt[None, :]
    assert 0.4 < cells.sum() / (m * 3) < 0.95  # most scenarios read from the grid, some still exact
    err = np.abs(grid - exact) / book.strike
    assert np.max(err[cells]) < GRID_TOL_PER_STRIKE  # measured 2.4e-5
    np.testing.assert_allclose(grid[outside], exact[outside], rtol=0.0, atol=1e-10 * book.strike.max())
    # QuantLib on the rebuilt options' first 150 scenarios (about 1 ms a price)
    cut = {k: v[rebuilt] for k, v in book.__dict__.items() if isinstance(v, np.ndarray) and v.shape == (n,)}
    part = Portfolio(**{**book.__dict__, **cut, "position_id": None})
    few = sc.take(0, 150)
    today = american_price(
        part.position_spot, part.strike, part.time_years, part.implied_vol, part.rate, part.dividend_yield, part.is_call
    )
    oracle = _quantlib_prices(part, few, horizon) - today[None, :]
    assert np.max((np.abs(grid[:150, rebuilt] - oracle) / part.strike)[cells[:150, rebuilt]]) < GRID_TOL_PER_STRIKE


def test_dividend_history_gives_summed_shifts_per_underlying() -> None:
    rng = np.random.default_rng(7)
    n = 60
    dq = rng.normal(0.0, 2e-4, (n, 2))
    dq[5, 1] = np.nan  # unknown: unchanged that day
    hist = MarketHistory(rng.normal(0.0, 0.01, (n, 2)), None, rng.normal(0.0, 5e-4, n), dq)
    assert hist.dividend_changes is not None and hist.dividend_changes[5, 1] == 0.0
    clean = np.nan_to_num(dq)
    for h in (1, 3, 5):
        sc = historical_scenarios(hist, h)
        assert sc.dividend_shift_abs is not None
        for s in range(2):
            np.testing.assert_allclose(sc.dividend_shift_abs[:, s], np.convolve(clean[:, s], np.ones(h), "valid"))
    np.testing.assert_array_equal(hist.window(10).dividend_changes, hist.dividend_changes[-10:])
    with pytest.raises(ValueError, match="dividend_changes"):
        MarketHistory(np.zeros((4, 2)), None, None, np.zeros((4, 1)))


def test_fhs_scenarios_carry_the_drawn_dates_rate_and_dividend_changes() -> None:
    rng = np.random.default_rng(8)
    n = 300
    hist = MarketHistory(rng.normal(0.0, 0.01, (n, 2)), None, rng.normal(0.0, 5e-4, n), rng.normal(0.0, 2e-4, (n, 2)))
    model = fit_fhs(hist)
    draws = fhs_draws(n, 500, 5, seed=1)
    sc = fhs_scenarios(model, draws, 5)
    assert sc.rate_shift_abs is not None and sc.dividend_shift_abs is not None
    assert hist.rate_changes is not None and hist.dividend_changes is not None
    hand_rate = np.array([sum(hist.rate_changes[d] for d in row) for row in draws])
    hand_div = np.array([[sum(hist.dividend_changes[d, s] for d in row) for s in range(2)] for row in draws])
    np.testing.assert_allclose(sc.rate_shift_abs, hand_rate, rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(sc.dividend_shift_abs, hand_div, rtol=1e-12, atol=1e-18)


def _mixed_book() -> Portfolio:
    rng = np.random.default_rng(11)
    n = 40
    spot = np.array([100.0, 40.0])
    sym = np.concatenate([np.arange(n) % 2, [0, 1]])
    opt = np.arange(n + 2) < n
    return Portfolio(
        symbols=("A", "B"), spot=spot, symbol_index=sym, quantity=rng.integers(-10, 11, n + 2).astype(float),
        multiplier=np.where(opt, 100.0, 1.0), is_option=opt, is_call=rng.random(n + 2) < 0.5,
        strike=spot[sym] * np.exp(rng.normal(0.0, 0.1, n + 2)), time_years=rng.uniform(0.05, 1.5, n + 2),
        implied_vol=rng.uniform(0.15, 0.5, n + 2), rate=0.04, dividend_yield=rng.uniform(0.0, 0.03, n + 2),
        is_american=opt & (np.arange(n + 2) % 3 == 0),
    )  # fmt: skip


def _history(n: int, seed: int, factors: bool) -> MarketHistory:
    rng = np.random.default_rng(seed)
    returns = rng.standard_t(5, (n, 2)) * 0.01
    iv = rng.normal(0.0, 0.03, (n, 2))
    if not factors:
        return MarketHistory(returns, iv)
    return MarketHistory(returns, iv, rng.normal(0.0, 4e-4, n), rng.normal(0.0, 2e-4, (n, 2)))


def test_factors_off_or_zero_give_the_same_var_bit_for_bit() -> None:
    book = _mixed_book()
    cfg = VarConfig(lookback_days=300, n_scenarios=2000)
    plain = _history(300, 1, False)
    zero = MarketHistory(plain.log_returns, plain.iv_rel_changes, np.zeros(300), np.zeros((300, 2)))
    a = compute_var(book, plain, cfg, methods=(HISTORICAL, MONTE_CARLO_FHS))
    b = compute_var(book, zero, cfg, methods=(HISTORICAL, MONTE_CARLO_FHS))
    for x, y in zip(a.results, b.results, strict=True):
        assert (x.var, x.expected_shortfall) == (y.var, y.expected_shortfall)
        np.testing.assert_array_equal(x.component_var, y.component_var)
    for key, pnl in a.scenario_pnl.items():
        np.testing.assert_array_equal(pnl, b.scenario_pnl[key])


def test_var_with_factors_equals_exact_repricing_and_the_batch() -> None:
    book = _mixed_book()
    cfg = VarConfig(lookback_days=300, n_scenarios=2000, confidences=(0.99,))
    hist = _history(300, 2, True)
    grid = compute_var(book, hist, cfg, methods=(HISTORICAL, MONTE_CARLO_FHS))
    exact = compute_var(book, hist, replace(cfg, american="exact"), methods=(HISTORICAL,))
    notional = float(np.sum(np.abs(book.units) * book.strike))
    for h in cfg.horizons:
        diff = np.abs(grid.scenario_pnl[(HISTORICAL, h)] - exact.scenario_pnl[(HISTORICAL, h)])
        assert diff.max() < GRID_TOL_PER_STRIKE * notional
        g, e = grid.get(HISTORICAL, h, 0.99).var, exact.get(HISTORICAL, h, 0.99).var
        assert abs(g - e) < GRID_TOL_PER_STRIKE * notional
        assert (
            "rates:" in grid.get(HISTORICAL, h, 0.99).note and "dividends:" in grid.get(MONTE_CARLO_FHS, h, 0.99).note
        )
    # the factors move the VaR: the same history without them gives another figure
    without = compute_var(book, MarketHistory(hist.log_returns, hist.iv_rel_changes), cfg, methods=(HISTORICAL,))
    assert without.get(HISTORICAL, 5, 0.99).var != grid.get(HISTORICAL, 5, 0.99).var
    # the batch (evaluate_many, as the static-book backtest uses it) gives the same scenario P&L
    other = _history(300, 3, True)
    batch = compute_var_batch([book, book], [hist, other], cfg, methods=ALL_METHODS)
    alone = compute_var(book, other, cfg, methods=ALL_METHODS)
    for key, pnl in alone.scenario_pnl.items():
        np.testing.assert_allclose(batch[1].scenario_pnl[key], pnl, rtol=1e-12, atol=1e-6)
    for key, pnl in grid.scenario_pnl.items():
        np.testing.assert_allclose(batch[0].scenario_pnl[key], pnl, rtol=1e-12, atol=1e-6)


def test_evaluate_many_moves_each_books_own_rates_and_yields() -> None:
    book = _mixed_book()
    one = _shifted_set(50, 5, 0.002, 0.001)
    two = _shifted_set(70, 6, 0.001, 0.0005)
    many = evaluate_many([book, book], [one, two], 2.0, american="eep_grid")
    for sc, res in zip((one, two), many, strict=True):
        alone = evaluate(book, sc, 2.0, american="eep_grid", per_symbol=True)
        assert alone.by_symbol is not None and res.by_symbol is not None
        np.testing.assert_allclose(res.by_symbol, alone.by_symbol, rtol=1e-12, atol=1e-9)
