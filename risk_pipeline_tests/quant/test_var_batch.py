"""Batched VaR (compute_var_batch, evaluate_many, the batched static-book backtest) against the per-call path."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from risk_pipeline.quant.book_backtest import rescaled_book, rolling_garch_fits, static_book_backtest
from risk_pipeline.quant.portfolio import Portfolio, stack_portfolios
from risk_pipeline.quant.scenario_engine import (
    EEP_MIN_SCENARIOS,
    ScenarioSet,
    evaluate,
    evaluate_many,
    market_values,
    revalue,
)
from risk_pipeline.quant.var import (
    ALL_METHODS,
    HISTORICAL,
    MONTE_CARLO_FHS,
    MarketHistory,
    VarConfig,
    compute_var,
    compute_var_batch,
    fit_garch_or_constant,
)

RTOL = 1e-10


def _book(spot: np.ndarray) -> Portfolio:
    """Stocks, European and American options (puts and calls, early exercise optimal somewhere) on two names."""
    return Portfolio(
        symbols=("A", "B"),
        spot=spot,
        symbol_index=[0, 1, 0, 1, 0, 1, 0],
        quantity=[10.0, -20.0, 5.0, -8.0, 6.0, 4.0, -3.0],
        multiplier=[1.0, 1.0, 100.0, 100.0, 100.0, 100.0, 100.0],
        is_option=[False, False, True, True, True, True, True],
        is_call=[True, True, False, True, False, True, False],
        strike=[1.0, 1.0, 0.95 * spot[0], 1.1 * spot[1], 1.05 * spot[0], 0.9 * spot[1], 0.8 * spot[0]],
        time_years=[0.0, 0.0, 0.25, 0.5, 0.4, 0.75, 1.0],
        implied_vol=[0.0, 0.0, 0.30, 0.40, 0.35, 0.45, 0.28],
        rate=0.04,
        dividend_yield=[0.0, 0.0, 0.01, 0.01, 0.0, 0.06, 0.02],
        is_american=[False, False, False, False, True, True, True],
    )


def _market(n: int = 330, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, size=(n - 1, 2)) * np.array([0.012, 0.02]) / math.sqrt(2.0)
    closes = np.vstack([[100.0, 50.0], 100.0 * np.exp(np.cumsum(r, axis=0)) * [1.0, 0.5]])
    vols = np.column_stack(
        [0.3 * np.exp(np.cumsum(rng.normal(0, 0.03, n))), 0.4 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))]
    )
    vols[rng.random(n) < 0.05, 1] = np.nan  # some days without an ATM vol
    gaps = np.r_[0.0, rng.choice([1.0, 1.0, 1.0, 1.0, 3.0], n - 1)]
    return closes, vols, gaps


def _assert_reports_equal(batched, single) -> None:  # type: ignore[no-untyped-def]
    assert [(r.method, r.horizon_days, r.confidence) for r in batched.results] == [
        (r.method, r.horizon_days, r.confidence) for r in single.results
    ]
    for b, s in zip(batched.results, single.results, strict=True):
        for name in ("var", "expected_shortfall", "standard_error", "var_non_overlapping", "independent_tail_obs"):
            np.testing.assert_allclose(getattr(b, name), getattr(s, name), rtol=RTOL, atol=0.0, err_msg=name)
        np.testing.assert_allclose(b.component_var, s.component_var, rtol=RTOL, atol=RTOL * abs(s.var))
        if s.component_es is not None:
            np.testing.assert_allclose(b.component_es, s.component_es, rtol=RTOL, atol=RTOL * abs(s.expected_shortfall))
        assert (b.n_scenarios, b.lookback_days, b.symbols, b.note) == (
            s.n_scenarios,
            s.lookback_days,
            s.symbols,
            s.note,
        )
    assert batched.scenario_pnl.keys() == single.scenario_pnl.keys()
    for key, pnl in single.scenario_pnl.items():
        np.testing.assert_allclose(batched.scenario_pnl[key], pnl, rtol=RTOL, atol=RTOL * np.abs(pnl).max())


def test_compute_var_batch_equals_compute_var_day_by_day() -> None:
    closes, vols, _ = _market()
    returns = np.diff(np.log(closes), axis=0)
    iv = vols[1:] / vols[:-1] - 1.0
    cfg = VarConfig(confidences=(0.99, 0.975), horizons=(1, 3), lookback_days=280, n_scenarios=500)
    ends = [262, 280, 300, 320]  # the first window is shorter than the look-back: sets of different sizes
    books = [rescaled_book(_book(closes[-1]), closes[t], [1.0 + 0.01 * k, 1.0]) for k, t in enumerate(ends)]
    histories = [MarketHistory(returns[max(0, t - 300) : t], iv[max(0, t - 300) : t]) for t in ends]
    histories[1] = MarketHistory(histories[1].log_returns)  # one without vol changes
    params = [
        fit_garch_or_constant(h.window(cfg.lookback_days).log_returns[:, s]) for s in range(2) for h in histories[:1]
    ]
    garch = [params, None, params, None]
    batched = compute_var_batch(books, histories, cfg, garch_params=garch)
    for k, (book, history) in enumerate(zip(books, histories, strict=True)):
        _assert_reports_equal(batched[k], compute_var(book, history, cfg, garch_params=garch[k]))
    only = compute_var_batch(books[:2], histories[:2], cfg, methods=(MONTE_CARLO_FHS,))
    _assert_reports_equal(only[1], compute_var(books[1], histories[1], cfg, methods=(MONTE_CARLO_FHS,)))


def test_evaluate_many_prices_every_book_as_a_separate_call() -> None:
    rng = np.random.default_rng(1)
    books = [_book(np.array([100.0, 50.0]) * (1.0 + 0.1 * k)) for k in range(3)]
    sizes = [300, 40, EEP_MIN_SCENARIOS - 3]  # padded to the longest; the smallest gets no grid
    sets = [ScenarioSet(rng.normal(0.0, 0.03, (n, 2)), vol_scale=np.exp(rng.normal(0.0, 0.1, (n, 2)))) for n in sizes]
    sets[1] = ScenarioSet(sets[1].spot_shock_rel)  # no vol moves
    for american in ("eep_grid", "exact"):
        got = evaluate_many(books, sets, 2.0, american=american)
        for book, sc, res in zip(books, sets, got, strict=True):
            want = evaluate(book, sc, 2.0, american=american, per_symbol=True)
            assert res.by_symbol is not None and want.by_symbol is not None
            if american == "exact":
                np.testing.assert_array_equal(res.by_symbol, want.by_symbol)  # same prices, same order of terms
            else:  # a book's grid alone and in the stacked book may round apart: 1 ulp in 1 of 600 cells for some
                # seeds (2 and 10 with the tables before, 1, 3, 8, 11, 12 with the grid's coarser tables)
                np.testing.assert_allclose(res.by_symbol, want.by_symbol, rtol=1e-13, atol=1e-12)
            np.testing.assert_allclose(res.pnl, want.pnl, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(
        market_values(stack_portfolios(books)), np.concatenate([market_values(b) for b in books])
    )


def _per_day_reference(book, closes, vols, gaps, days, cfg, confidence, es_confidence, refit_every=21):  # type: ignore[no-untyped-def]
    """The static-book backtest day by day: one compute_var and one revalue per day (the unbatched path)."""
    returns = np.diff(np.log(closes), axis=0)
    iv = vols[1:] / vols[:-1] - 1.0
    cfg = replace(cfg, confidences=(confidence, es_confidence), horizons=(1,))
    out: dict[str, list[float]] = {"pnl": [], "value": []}
    params = None
    for i, t in enumerate(days):
        ratio = np.where(np.isfinite(vols[t]) & np.isfinite(vols[-1]), vols[t] / vols[-1], 1.0)
        day_book = rescaled_book(book, closes[t], ratio)
        first = max(0, t - cfg.lookback_days)
        if params is None or i % refit_every == 0:
            params = [
                fit_garch_or_constant(returns[first:t, s], None if params is None else params[s]) for s in range(2)
            ]
        report = compute_var(day_book, MarketHistory(returns[first:t], iv[first:t]), cfg, garch_params=params)
        move = np.where(np.isfinite(iv[t]), 1.0 + iv[t], 1.0)
        moved = revalue(
            day_book,
            (closes[t + 1] / closes[t] - 1.0)[None, :],
            horizon_days=float(gaps[t + 1]),
            vol_scale=move[None, :],
            american="exact",
        )
        out["pnl"].append(float(moved.pnl[0]))
        out["value"].append(float(market_values(day_book).sum()))
        for m in ALL_METHODS:
            out.setdefault(m, []).append(report.get(m, 1, confidence).var)
            out.setdefault(f"es:{m}", []).append(report.get(m, 1, es_confidence).expected_shortfall)
    return out


def test_static_book_backtest_equals_the_per_day_compute_var_path() -> None:
    closes, vols, gaps = _market()
    book = _book(closes[-1])
    cfg = VarConfig(lookback_days=270, n_scenarios=500)
    days = np.arange(255, 300, 2)  # the first windows shorter than the look-back; GARCH refits every 4 days
    res = static_book_backtest(book, closes, vols, gaps, days, cfg, es_confidence=0.975, refit_every=4)
    ref = _per_day_reference(book, closes, vols, gaps, days, cfg, 0.99, 0.975, refit_every=4)
    np.testing.assert_allclose(res.pnl, ref["pnl"], rtol=RTOL, atol=RTOL * np.abs(ref["pnl"]).max())
    np.testing.assert_allclose(res.book_value, ref["value"], rtol=RTOL)
    for m in ALL_METHODS:
        np.testing.assert_allclose(res.var[m], ref[m], rtol=RTOL, err_msg=m)
        np.testing.assert_allclose(res.expected_shortfall[m], ref[f"es:{m}"], rtol=RTOL, err_msg=m)


def test_books_sharing_an_underlying_share_its_garch_fits() -> None:
    closes, vols, gaps = _market()
    book = _book(closes[-1])
    other = Portfolio(symbols=("A", "B"), spot=closes[-1], symbol_index=[0, 1], quantity=[3.0, 7.0])
    cfg = VarConfig(lookback_days=260, n_scenarios=500)
    days = np.arange(300, 320)
    cache: dict = {}
    first = static_book_backtest(book, closes, vols, gaps, days, cfg, methods=(MONTE_CARLO_FHS,), garch_cache=cache)
    fits = len(cache)
    assert fits == 2 * 1  # two names, one fit each (refits every 21 days)
    second = static_book_backtest(other, closes, vols, gaps, days, cfg, methods=(MONTE_CARLO_FHS,), garch_cache=cache)
    assert len(cache) == fits
    alone = static_book_backtest(other, closes, vols, gaps, days, cfg, methods=(MONTE_CARLO_FHS,))
    np.testing.assert_array_equal(second.var[MONTE_CARLO_FHS], alone.var[MONTE_CARLO_FHS])
    assert np.all(first.var[MONTE_CARLO_FHS] > 0)


def test_garch_fits_made_beforehand_give_the_same_backtest() -> None:
    closes, vols, gaps = _market()
    book = _book(closes[-1])
    cfg = VarConfig(lookback_days=260, n_scenarios=500)
    days = np.arange(298, 328)
    fits = rolling_garch_fits(closes, days, cfg.lookback_days, refit_every=4)
    # a refit on days 0, 4, 8, ... of the backtest, each day keeping the last fit
    assert [fits[i] is fits[i - i % 4] for i in range(days.size)] == [True] * days.size
    assert len({id(f) for f in fits}) == 8
    inline = static_book_backtest(book, closes, vols, gaps, days, cfg, methods=(MONTE_CARLO_FHS,), refit_every=4)
    given = static_book_backtest(
        book, closes, vols, gaps, days, cfg, methods=(MONTE_CARLO_FHS,), refit_every=4, garch_fits=fits
    )
    np.testing.assert_array_equal(given.var[MONTE_CARLO_FHS], inline.var[MONTE_CARLO_FHS])
    with pytest.raises(ValueError, match="one set of per-symbol parameters per backtest day"):
        static_book_backtest(book, closes, vols, gaps, days, cfg, methods=(MONTE_CARLO_FHS,), garch_fits=fits[:-1])


def test_evaluate_many_refuses_what_it_cannot_stack() -> None:
    book = _book(np.array([100.0, 50.0]))
    with pytest.raises(ValueError, match="one scenario set per portfolio"):
        evaluate_many([book], [])
    with pytest.raises(ValueError, match="per position with vol_shift_per_position"):  # 2 columns, 7 positions
        evaluate_many(
            [book], [ScenarioSet(np.zeros((3, 2)), vol_shift_abs=np.zeros((3, 2)), vol_shift_per_position=True)]
        )
    with pytest.raises(ValueError, match="no vol shift functions"):
        evaluate_many([book], [ScenarioSet(np.zeros((3, 2)), vol_shift_abs=lambda *_: np.zeros((3, 7)))])


def test_expiry_scaled_term_structure_in_the_batch_and_the_static_book_backtest() -> None:
    """With the expiry-scaled ATM move, evaluate_many with per-position vol shifts equals separate evaluate calls,
    compute_var_batch's historical VaR equals compute_var's, and the static-book backtest's P&L equals an exact
    revaluation at vols ``sigma c^g``, ``g = (30 / max(365 tau, 7))^alpha`` written out by hand."""
    from risk_pipeline.quant.smile_dynamics import ExpiryScaledVolMoves
    from risk_pipeline.quant.vol_shocks import VolShockRule

    alpha = 0.5
    term = ExpiryScaledVolMoves(VolShockRule(term_exponent=alpha))
    closes, vols, gaps = _market()
    book = _book(closes[-1])
    other = replace(_book(closes[-1] * 1.1), quantity=np.array([1.0, 2.0, -4.0, 3.0, 2.0, -5.0, 6.0]))
    rng = np.random.default_rng(11)
    sets = []
    for p in (book, other):
        sc = ScenarioSet(
            rng.normal(0, 0.03, (EEP_MIN_SCENARIOS + 40, 2)),
            vol_scale=np.exp(rng.normal(0, 0.1, (EEP_MIN_SCENARIOS + 40, 2))),
        )
        sets.append(replace(sc, vol_shift_abs=term.shifts(p, sc), vol_shift_per_position=True))
    sets.append(ScenarioSet(rng.normal(0, 0.03, (EEP_MIN_SCENARIOS + 10, 2))))  # no vol shift: zeros per position
    portfolios = [book, other, book]
    together = evaluate_many(portfolios, sets, 1.0, american="eep_grid")
    for p, sc, got in zip(portfolios, sets, together, strict=True):
        alone = evaluate(p, sc, 1.0, american="eep_grid", per_symbol=True)
        np.testing.assert_allclose(got.pnl, alone.pnl, rtol=RTOL, atol=1e-9 * np.abs(alone.pnl).max())

    cfg = VarConfig(lookback_days=260, n_scenarios=500, horizons=(1,))
    returns = np.diff(np.log(closes), axis=0)
    iv = vols[1:] / vols[:-1] - 1.0
    histories = [MarketHistory(returns[40:300], iv[40:300]), MarketHistory(returns[20:280], iv[20:280])]
    batch = compute_var_batch([book, other], histories, cfg, methods=(HISTORICAL,), term=term)
    for p, x, got in zip([book, other], histories, batch, strict=True):
        want = compute_var(p, x, cfg, methods=(HISTORICAL,), term=term)
        for c in cfg.confidences:
            assert got.get(HISTORICAL, 1, c).var == pytest.approx(want.get(HISTORICAL, 1, c).var, rel=RTOL)
            assert got.get(HISTORICAL, 1, c).note == want.get(HISTORICAL, 1, c).note
        assert "term: ATM vol move x (30/tau)^0.500" in got.get(HISTORICAL, 1, 0.99).note

    days = np.arange(280, 300, 3)
    res = static_book_backtest(book, closes, vols, gaps, days, cfg, methods=(HISTORICAL,), term=term)
    flat = static_book_backtest(book, closes, vols, gaps, days, cfg, methods=(HISTORICAL,))
    tau_days = np.asarray(book.time_years) * 365.0
    g = (30.0 / np.maximum(tau_days, 7.0)) ** alpha
    option = np.asarray(book.is_option)
    for k, t in enumerate(days):
        ratio = np.where(np.isfinite(vols[t]) & np.isfinite(vols[-1]), vols[t] / vols[-1], 1.0)
        day_book = rescaled_book(book, closes[t], ratio)
        c = np.where(np.isfinite(iv[t]), 1.0 + iv[t], 1.0)[np.asarray(book.symbol_index)]
        moved_vol = np.where(option, np.asarray(day_book.implied_vol) * c**g, 0.0)
        moved = replace(
            day_book,
            spot=closes[t + 1],
            implied_vol=moved_vol,
            time_years=np.maximum(np.asarray(day_book.time_years) - gaps[t + 1] / 365.0, 0.0),
        )
        want = float(market_values(moved).sum() - market_values(day_book).sum())
        assert res.pnl[k] == pytest.approx(want, rel=1e-9, abs=1e-6 * abs(want) + 1e-8)
        day_var = compute_var(day_book, MarketHistory(returns[max(0, t - 260) : t], iv[max(0, t - 260) : t]), cfg,
                              methods=(HISTORICAL,), term=term)  # fmt: skip
        assert res.var[HISTORICAL][k] == pytest.approx(day_var.get(HISTORICAL, 1, 0.99).var, rel=RTOL)
    assert not np.allclose(res.pnl, flat.pnl)  # the scaling moves the P&L


def test_rolling_garch_fits_use_gjr_for_the_asymmetric_symbols() -> None:
    """The flagged symbol is refitted by GJR-GARCH (warm-started chain equal to vol_forecast.fit_garch's), the other
    by GARCH; a cache shared with a symmetric run keeps the two models apart."""
    from risk_pipeline.quant.vol_forecast import fit_garch

    closes, _, _ = _market()
    days = np.arange(290, 300)
    cache: dict = {}
    fits = rolling_garch_fits(closes, days, 260, refit_every=4, garch_cache=cache, asymmetric=[True, False])
    plain = rolling_garch_fits(closes, days, 260, refit_every=4, garch_cache=cache)
    returns = np.diff(np.log(closes), axis=0)
    previous = None
    for i, t in enumerate(days):
        if i % 4 == 0:
            previous = fit_garch(returns[t - 260 : t, 0], asymmetric=True, previous=previous)
        assert fits[i][0] == previous and fits[i][0].gamma != 0.0
        assert fits[i][1] == plain[i][1] and plain[i][0].gamma == 0.0
    with pytest.raises(ValueError, match="one entry per symbol"):
        rolling_garch_fits(closes, days, 260, asymmetric=[True])


def test_static_book_backtest_in_blocks_of_days_equals_one_call() -> None:
    """Days split over several compute_var_batch calls (the memory bound for large books) give the same figures."""
    closes, vols, gaps = _market()
    book = _book(closes[-1])
    cfg = VarConfig(lookback_days=260, n_scenarios=500)
    days = np.arange(280, 300)
    whole = static_book_backtest(book, closes, vols, gaps, days, cfg, es_confidence=0.975, refit_every=4)
    blocks = static_book_backtest(
        book, closes, vols, gaps, days, cfg, es_confidence=0.975, refit_every=4, days_per_call=3
    )
    np.testing.assert_array_equal(blocks.pnl, whole.pnl)
    for m in ALL_METHODS:
        np.testing.assert_allclose(blocks.var[m], whole.var[m], rtol=1e-12, err_msg=m)
        np.testing.assert_allclose(blocks.expected_shortfall[m], whole.expected_shortfall[m], rtol=1e-12, err_msg=m)


def test_compute_var_batch_without_components_gives_the_same_var_and_es() -> None:
    """``components=False`` (the backtest reads only the VaR and ES) skips the component VaR and ES: every other
    figure is the same, bit for bit."""
    closes, vols, _ = _market()
    returns = np.diff(np.log(closes), axis=0)
    iv = vols[1:] / vols[:-1] - 1.0
    cfg = VarConfig(confidences=(0.99, 0.975), horizons=(1, 3), lookback_days=280, n_scenarios=500)
    ends = [262, 300]
    books = [rescaled_book(_book(closes[-1]), closes[t], [1.0, 1.0]) for t in ends]
    histories = [MarketHistory(returns[max(0, t - 300) : t], iv[max(0, t - 300) : t]) for t in ends]
    full = compute_var_batch(books, histories, cfg)
    lean = compute_var_batch(books, histories, cfg, components=False)
    for f, g in zip(full, lean, strict=True):
        assert len(f.results) == len(g.results)
        for a, b in zip(f.results, g.results, strict=True):
            assert (a.method, a.horizon_days, a.confidence, a.note) == (b.method, b.horizon_days, b.confidence, b.note)
            for name in ("var", "expected_shortfall", "standard_error", "var_non_overlapping", "independent_tail_obs"):
                np.testing.assert_array_equal(getattr(b, name), getattr(a, name), err_msg=name)
            assert np.isnan(b.component_var).all() and b.component_var.shape == a.component_var.shape
            assert b.component_es is None


def _same_bits(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a).view(np.int64), np.ascontiguousarray(b).view(np.int64)
    )


@pytest.mark.parametrize("with_term", [False, True])
def test_stacked_sets_are_the_per_book_sets_stacked_bit_for_bit(with_term: bool) -> None:
    """compute_var_batch's stacked historical and one-day FHS sets (made for every book at once, histories of
    different lengths padded) are evaluate_many's stacking of the per-book sets, bit for bit."""
    from risk_pipeline.quant.scenario_engine import _stack_sets
    from risk_pipeline.quant.smile_dynamics import ExpiryScaledVolMoves
    from risk_pipeline.quant.var import (
        _stacked_historical_set,
        _stacked_one_day_fhs_set,
        fhs_scenario_sets,
        fit_fhs,
        historical_scenarios,
    )
    from risk_pipeline.quant.vol_shocks import VolShockRule

    term = ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4)) if with_term else None
    closes, vols, _ = _market()
    returns = np.diff(np.log(closes), axis=0)
    iv = vols[1:] / vols[:-1] - 1.0
    ends = [262, 280, 300, 301, 320]
    books = [rescaled_book(_book(closes[-1]), closes[t], [1.0 + 0.01 * k, 1.0]) for k, t in enumerate(ends)]
    hists = [MarketHistory(returns[max(0, t - 270) : t], iv[max(0, t - 270) : t]) for t in ends]
    stacked = stack_portfolios(books)
    for h in (1, 3):
        sets = [historical_scenarios(x, h) for x in hists]
        if term is not None:
            sets = [
                replace(sc, vol_shift_abs=term.shifts(p, sc), vol_shift_per_position=True)
                for p, sc in zip(books, sets, strict=True)
            ]
        want = _stack_sets(sets, max(sc.n_scenarios for sc in sets), books)
        got = _stacked_historical_set(books, hists, stacked, h, term)
        assert got is not None
        for name in ("spot_shock_rel", "vol_scale", "vol_shift_abs", "rate_shift_abs", "dividend_shift_abs"):
            assert _same_bits(getattr(got, name), getattr(want, name)), name
        assert got.vol_shift_per_position == want.vol_shift_per_position
    cfg = VarConfig(horizons=(1,), lookback_days=270)
    models = [fit_fhs(x) for x in hists]
    sets = [fhs_scenario_sets(f, cfg)[1] for f in models]
    want = _stack_sets(sets, max(sc.n_scenarios for sc in sets), books)
    got = _stacked_one_day_fhs_set(models, hists)
    assert got is not None
    for name in ("spot_shock_rel", "vol_scale", "vol_shift_abs"):
        assert _same_bits(getattr(got, name), getattr(want, name)), name
    # what it cannot stack as evaluate_many does: made one by one
    mixed = [hists[0], MarketHistory(hists[1].log_returns)]
    assert _stacked_historical_set(books[:2], mixed, stack_portfolios(books[:2]), 1, term) is None
    short = [hists[0], MarketHistory(returns[: EEP_MIN_SCENARIOS - 1], iv[: EEP_MIN_SCENARIOS - 1])]
    assert _stacked_historical_set(books[:2], short, stack_portfolios(books[:2]), 1, term) is None


@pytest.mark.parametrize("with_term", [False, True])
@pytest.mark.parametrize("horizon", [1, 3])
def test_stacked_historical_set_of_prefix_histories_is_the_per_book_sets_stacked_bit_for_bit(
    with_term: bool, horizon: int
) -> None:
    """Backtest days whose look-back reaches back to the first return (every history the first rows of the longest):
    the stacked historical set, made once for the longest and gathered, with the expiry-scaled shifts' ``c^g - c``
    taken once per row and option, is evaluate_many's stacking of the per-book sets (``historical_scenarios`` and
    ``ExpiryScaledVolMoves.shifts`` of each book), bit for bit; a history that is not such a prefix (or another
    book) keeps the per-length path, also bit for bit."""
    from risk_pipeline.quant.scenario_engine import _stack_sets
    from risk_pipeline.quant.smile_dynamics import ExpiryScaledVolMoves
    from risk_pipeline.quant.var import _common_prefix, _stacked_historical_set, historical_scenarios
    from risk_pipeline.quant.vol_shocks import VolShockRule

    term = ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4)) if with_term else None
    closes, vols, _ = _market()
    returns = np.diff(np.log(closes), axis=0)
    iv = vols[1:] / vols[:-1] - 1.0
    iv[[3, 40], 1] = np.nan  # a missing ATM vol change (scale NaN) on some rows
    ends = [262, 280, 263, 300, 300, 301]
    base = _book(closes[-1])
    books = [rescaled_book(base, closes[t], [1.0 + 0.01 * k, 0.97]) for k, t in enumerate(ends)]

    def want(bks: list[Portfolio], hs: list[MarketHistory]) -> object:
        sets = [historical_scenarios(x, horizon) for x in hs]
        if term is not None:
            sets = [
                replace(sc, vol_shift_abs=term.shifts(p, sc), vol_shift_per_position=True)
                for p, sc in zip(bks, sets, strict=True)
            ]
        return _stack_sets(sets, max(sc.n_scenarios for sc in sets), bks)

    prefix = [MarketHistory(returns[:t], iv[:t]) for t in ends]
    assert _common_prefix(prefix, np.array([x.n_days for x in prefix])) == 5
    sliding = [*prefix[:-1], MarketHistory(returns[1:301], iv[1:301])]  # not a prefix: the per-length path
    assert _common_prefix(sliding, np.array([x.n_days for x in sliding])) is None
    other = _book(closes[-1] * 1.01)  # another book's expiries: the prefix path, shifts made on the stacked book
    other = replace(other, time_years=np.asarray(other.time_years) * 1.5)
    for bks, hs in ((books, prefix), (books, sliding), ([*books[:-1], other], prefix)):
        got = _stacked_historical_set(bks, hs, stack_portfolios(bks), horizon, term)
        assert got is not None
        w = want(bks, hs)
        for name in ("spot_shock_rel", "vol_scale", "vol_shift_abs", "rate_shift_abs", "dividend_shift_abs"):
            assert _same_bits(getattr(got, name), getattr(w, name)), name
        assert got.vol_shift_per_position == w.vol_shift_per_position
    # the same VaR through compute_var_batch as through compute_var one book at a time (the unoptimized path)
    cfg = VarConfig(horizons=(horizon,), lookback_days=500)
    batch = compute_var_batch(books, prefix, cfg, methods=(HISTORICAL,), term=term)
    for p, x, r in zip(books, prefix, batch, strict=True):
        one = compute_var(p, x, cfg, methods=(HISTORICAL,), term=term)
        for a, b in zip(one.results, r.results, strict=True):
            np.testing.assert_allclose(b.var, a.var, rtol=RTOL)
            np.testing.assert_allclose(b.expected_shortfall, a.expected_shortfall, rtol=RTOL)


def test_fhs_models_of_days_sharing_fits_are_fit_fhs_of_each_day_bit_for_bit() -> None:
    """compute_var_batch's FHS filters: days given one list of GARCH parameters whose histories are the first rows of
    the longest are filtered once on the longest; every model (parameters, standardized returns, next variance,
    vol changes) is ``fit_fhs`` of its own day, bit for bit, also for a day that is not such a prefix, a day with its
    own list and a day without fits (fitted anew)."""
    from risk_pipeline.quant.var import _fhs_models, fit_fhs

    closes, vols, _ = _market()
    returns = np.diff(np.log(closes), axis=0)
    iv = vols[1:] / vols[:-1] - 1.0
    shared = [fit_garch_or_constant(returns[:260, s]) for s in range(2)]
    other = [fit_garch_or_constant(returns[:300, s]) for s in range(2)]
    hists = [MarketHistory(returns[:t], iv[:t]) for t in (262, 280, 263, 300, 300)]
    hists += [MarketHistory(returns[5:290], iv[5:290]), MarketHistory(returns[:270], iv[:270])]
    hists += [MarketHistory(returns[:250], iv[:250])]
    params = [shared] * 6 + [other, None]  # the sixth shares the list but is not a prefix of the longest
    got = _fhs_models(hists, params)
    for x, p, g in zip(hists, params, got, strict=True):
        want = fit_fhs(x, p)
        assert g.params == want.params
        assert _same_bits(g.standardized, want.standardized)
        assert _same_bits(g.next_variance, want.next_variance)
        assert _same_bits(g.iv_rel_changes, want.iv_rel_changes)
    prefix_only = _fhs_models(hists[:5], [shared] * 5)  # the shared path alone (no fallback in the group)
    for x, g in zip(hists[:5], prefix_only, strict=True):
        want = fit_fhs(x, shared)
        assert _same_bits(g.standardized, want.standardized) and _same_bits(g.next_variance, want.next_variance)
    # an independent check of the filter: z_t = r_t / sigma_t with sigma_t^2 the GARCH recursion from its start
    p0 = shared[0]
    r = returns[:262, 0]
    var = np.empty(263)
    var[0] = p0.omega + (p0.alpha + 0.5 * p0.gamma + p0.beta) * p0.backcast
    for t in range(262):
        var[t + 1] = p0.omega + (p0.alpha + p0.gamma * (r[t] < 0.0)) * r[t] ** 2 + p0.beta * var[t]
    np.testing.assert_allclose(got[0].standardized[:, 0], r / np.sqrt(var[:-1]), rtol=1e-12)
    np.testing.assert_allclose(got[0].next_variance[0], var[-1], rtol=1e-12)


def test_garch_fits_given_as_a_function_are_read_only_by_the_monte_carlo_method() -> None:
    closes, vols, gaps = _market()
    book = _book(closes[-1])
    cfg = VarConfig(lookback_days=260, n_scenarios=500)
    days = np.arange(298, 310)
    fits = rolling_garch_fits(closes, days, cfg.lookback_days, refit_every=4)
    calls: list[int] = []

    def later() -> list:  # type: ignore[type-arg]
        calls.append(1)
        return fits

    given = static_book_backtest(book, closes, vols, gaps, days, cfg, refit_every=4, garch_fits=fits)
    lazy = static_book_backtest(book, closes, vols, gaps, days, cfg, refit_every=4, garch_fits=later, days_per_call=5)
    assert len(calls) == 1  # once, for every block of days
    for m in ALL_METHODS:
        np.testing.assert_array_equal(lazy.var[m], given.var[m])
    static_book_backtest(book, closes, vols, gaps, days, cfg, methods=(HISTORICAL,), garch_fits=later)
    assert len(calls) == 1  # not read without the Monte Carlo method
    with pytest.raises(ValueError, match="one set of per-symbol parameters per backtest day"):
        static_book_backtest(
            book, closes, vols, gaps, days, cfg, methods=(MONTE_CARLO_FHS,), garch_fits=lambda: fits[:-1]
        )
