"""MAR33 liquidity-horizon ES and the stressed window: hand computations, direct repricing, the S&P 500 in 2008."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.regulatory_es import (
    cascade_es,
    equity_liquidity_horizons,
    index_betas,
    index_mapped_history,
    liquidity_adjusted_es,
    reduced_set_scaling,
    window_es,
    worst_es_window,
)
from risk_pipeline.quant.var import MarketHistory, worst_window


def test_cascade_hand_computed() -> None:
    # ES_T(P, j) = 100, 60, 30, 20, 10 at LH 10, 20, 40, 60, 120 (T = 10):
    # 100^2 + (60 sqrt(10/10))^2 + (30 sqrt(20/10))^2 + (20 sqrt(20/10))^2 + (10 sqrt(60/10))^2
    # = 10000 + 3600 + 1800 + 800 + 600 = 16800
    assert cascade_es([100.0, 60.0, 30.0, 20.0, 10.0]) == pytest.approx(math.sqrt(16800.0), rel=1e-15)
    # only the 10-day factors: the 10-day ES itself; a negative (gaining) bucket counts as 0
    assert cascade_es([250.0, 0.0, 0.0, 0.0, 0.0]) == 250.0
    assert cascade_es([30.0, -40.0, 0.0, 0.0, 0.0]) == 30.0
    # all risk in one 120-day bucket: ES_T sqrt(1 + 1 + 2 + 2 + 6) = ES_T sqrt(12)
    assert cascade_es([5.0] * 5) == pytest.approx(5.0 * math.sqrt(12.0), rel=1e-15)
    with pytest.raises(ValueError):
        cascade_es([1.0, 2.0], horizons_days=(20, 40))


def test_equity_mapping_mar33_12() -> None:
    spot, vol = equity_liquidity_horizons([True, False])
    assert spot.tolist() == [10, 20] and vol.tolist() == [20, 60]


def test_liquidity_adjusted_es_against_direct_repricing() -> None:
    """A European put on a large-cap name A (spot 10 d, vol 20 d) and stock of a small-cap name B (spot 20 d,
    vol 60 d): each bucket's 10-day P&L repriced with bsm_price, the ES the mean of the 6 worst of 240."""
    rng = np.random.default_rng(7)
    n_days = 249  # 240 overlapping 10-day moves: 240 x 2.5 % = 6 tail scenarios exactly
    r = rng.standard_t(4, (n_days, 2)) * np.array([0.015, 0.025])
    iv = np.expm1(-3.0 * r + rng.normal(0.0, 0.03, r.shape))
    hist = MarketHistory(r, iv)
    s0, k, t, sig, rate, q = 120.0, 115.0, 0.4, 0.3, 0.03, 0.01
    book = Portfolio(
        symbols=("A", "B"),
        spot=[s0, 40.0],
        symbol_index=[0, 1],
        quantity=[-50.0, 2000.0],
        multiplier=[100.0, 1.0],
        is_option=[True, False],
        is_call=[False, False],
        strike=[k, 1.0],
        time_years=[t, 0.0],
        implied_vol=[sig, 0.0],
        rate=[rate, 0.0],
        dividend_yield=[q, 0.0],
    )
    cum_r = np.array([r[i : i + 10].sum(axis=0) for i in range(240)])
    cum_v = np.array([np.prod(1.0 + iv[i : i + 10], axis=0) for i in range(240)])
    base = float(bsm_price(s0, k, t, sig, rate, q, False))

    def es_of(spot_a: bool, vol_a: bool, spot_b: bool) -> float:
        sa = s0 * np.exp(cum_r[:, 0]) if spot_a else np.full(240, s0)
        va = sig * cum_v[:, 0] if vol_a else np.full(240, sig)
        pnl = -5000.0 * (bsm_price(sa, k, t, va, rate, q, False) - base)
        if spot_b:
            pnl = pnl + 2000.0 * 40.0 * np.expm1(cum_r[:, 1])
        return float(-np.sort(pnl)[:6].mean())

    got = liquidity_adjusted_es(book, hist, [10, 20], [20, 60], american="exact")
    expected = [es_of(True, True, True), es_of(False, True, True), 0.0, 0.0, 0.0]
    np.testing.assert_allclose(got.es_by_horizon, expected, rtol=1e-9)
    assert got.es == pytest.approx(math.sqrt(expected[0] ** 2 + expected[1] ** 2), rel=1e-9)
    assert got.n_scenarios == 240
    # all small cap: A's spot moves to the 20-day bucket and its vol to the 60-day one
    small = liquidity_adjusted_es(book, hist, [20, 20], [60, 60], american="exact")
    e60 = es_of(False, True, False)
    np.testing.assert_allclose(small.es_by_horizon, [expected[0], expected[0], e60, e60, 0.0], rtol=1e-9)
    assert small.es == pytest.approx(math.sqrt(expected[0] ** 2 + expected[0] ** 2 + 2 * e60**2 + 2 * e60**2), rel=1e-9)


def test_buckets_shocking_the_same_factors_are_revalued_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large-cap (10 / 20 days) and a small-cap name (20 / 60 days): the 40- and 60-day buckets both shock the
    small cap's vol alone, so one revaluation serves both (3 sets, not 4) and their ES are the same bits as a
    revaluation of each."""
    import risk_pipeline.quant.regulatory_es as reg

    rng = np.random.default_rng(3)
    r = rng.normal(0.0, 0.02, (120, 2))
    hist = MarketHistory(r, np.expm1(-2.0 * r))
    book = Portfolio(
        symbols=("A", "B"), spot=[100.0, 50.0], symbol_index=[0, 1, 1], quantity=[-10.0, 20.0, 300.0],
        multiplier=[100.0, 100.0, 1.0], is_option=[True, True, False], is_call=[False, True, False],
        strike=[95.0, 55.0, 1.0], time_years=[0.3, 0.5, 0.0], implied_vol=[0.25, 0.4, 0.0],
        rate=0.03, dividend_yield=0.01,
    )  # fmt: skip
    sets = []
    real = reg.evaluate

    def counted(portfolio: Portfolio, sc: object, *args: object, **kw: object) -> object:
        sets.append(sc)
        return real(portfolio, sc, *args, **kw)

    monkeypatch.setattr(reg, "evaluate", counted)
    got = liquidity_adjusted_es(book, hist, [10, 20], [20, 60], american="exact")
    assert len(sets) == 3
    assert got.es_by_horizon[2] == got.es_by_horizon[3] > 0.0 and got.es_by_horizon[4] == 0.0
    # the 60-day bucket revalued on its own: B's vol moved alone
    sc = reg.historical_scenarios(hist, 10)
    alone = reg.ScenarioSet(np.zeros_like(sc.spot_shock_rel), vol_scale=np.where([False, True], sc.vol_scale, 1.0))
    pnl = real(book, alone, 0.0, american="exact").pnl
    assert got.es_by_horizon[3] == reg.empirical_var_es(pnl, reg.FRTB_CONFIDENCE)[1]


def test_worst_window_of_a_constructed_series() -> None:
    """Gains of 1 everywhere, six losses of 10 on days 300-305 and three of 20 on days 700-702: at 97.5 % over
    250 days (6.25 tail days) the first cluster is worse, (60 - 0.25) / 6.25 against (60 - 3.25) / 6.25, and the
    latest of the tied windows that hold it starts on day 300; the 99 % VaR (third worst day) prefers the other."""
    p = np.ones(1000)
    p[300:306] = -10.0
    p[700:703] = -20.0
    es = window_es(p, 250)
    assert worst_es_window(p, 250) == 300
    assert es[300] == pytest.approx((60.0 - 0.25) / 6.25, rel=1e-15)
    assert es[700] == pytest.approx((60.0 - 3.25) / 6.25, rel=1e-15)
    assert 700 - 249 <= worst_window(p, 250, 0.99) <= 700
    # every window against a plain loop over the definition
    for i in (0, 56, 299, 300, 301, 500, 750):
        w = np.sort(p[i : i + 250])
        assert es[i] == pytest.approx(-(w[:6].sum() + 0.25 * w[6]) / 6.25, rel=1e-15)


def test_sp500_2008_is_the_worst_window() -> None:
    """The worst 250-session window of arch's S&P 500 (1999-2018) for a long index position holds Sep-Dec 2008."""
    sp500 = pytest.importorskip("arch.data.sp500")
    close = sp500.load()["Adj Close"]
    r = np.log(close).diff().dropna()
    start = worst_es_window(np.expm1(r.to_numpy()), 250)
    first, last = r.index[start], r.index[start + 249]
    assert first <= pd.Timestamp("2008-09-29") and last >= pd.Timestamp("2008-12-31")


def test_index_betas_and_mapped_history() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 0.01, 300)
    y = np.column_stack([2.0 * x, -7.0 * x + rng.normal(0.0, 0.02, 300), x])
    y[:250, 2] = np.nan  # 50 days only: below min_obs
    b = index_betas(y, x, min_obs=60)
    assert b[0] == pytest.approx(2.0, rel=1e-12)
    ols = np.linalg.lstsq(x[:, None], y[:, 1], rcond=None)[0][0]
    assert b[1] == pytest.approx(ols, rel=1e-12) and math.isnan(b[2])
    h = index_mapped_history([0.01, -0.02], [1.5, 1.0], [-4.0, np.nan])
    np.testing.assert_allclose(h.log_returns, [[0.015, 0.01], [-0.03, -0.02]], rtol=1e-15)
    assert h.iv_rel_changes is not None
    np.testing.assert_allclose(h.iv_rel_changes, [[math.exp(-0.04) - 1.0, 0.0], [math.exp(0.08) - 1.0, 0.0]])


def test_reduced_set_scaling_is_floored_at_one() -> None:
    assert reduced_set_scaling(150.0, 100.0) == 1.5
    assert reduced_set_scaling(80.0, 100.0) == 1.0
    assert reduced_set_scaling(80.0, 0.0) == 1.0


def test_historical_scenarios_are_the_padded_running_sums_bit_for_bit() -> None:
    """``historical_scenarios`` (running sums without the zero-padded copy): ``expm1`` / ``exp`` of ``c[h:] - c[:n]``
    with ``c = [0, cumsum]`` as the formula writes it, bit for bit, and the h-day windows' own sums to 1e-13."""
    from risk_pipeline.quant.var import historical_scenarios

    rng = np.random.default_rng(19)
    r = rng.standard_t(3, (260, 7)) * 0.02
    r[0, 0] = -0.0
    iv = np.expm1(rng.normal(0.0, 0.05, r.shape))
    iv[3, 2] = np.nan  # unknown: vol unchanged that day
    hist = MarketHistory(r, iv)
    lv_days = np.log1p(np.where(np.isfinite(iv), iv, 0.0))
    for h in (1, 2, 10, 260):
        sc = historical_scenarios(hist, h)
        n = r.shape[0] - h + 1
        c = np.vstack([np.zeros((1, 7)), np.cumsum(r, axis=0)])
        lv = np.vstack([np.zeros((1, 7)), np.cumsum(lv_days, axis=0)])
        assert np.expm1(c[h:] - c[:n]).tobytes() == sc.spot_shock_rel.tobytes()
        assert sc.vol_scale is not None and np.exp(lv[h:] - lv[:n]).tobytes() == sc.vol_scale.tobytes()
        windows = np.array([r[i : i + h].sum(axis=0) for i in range(n)])
        np.testing.assert_allclose(np.log1p(sc.spot_shock_rel), windows, rtol=0.0, atol=1e-13)


def test_a_bucket_revalues_the_options_on_the_names_it_shocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without carry, a bucket revalues only the options on the names it shocks (the small cap's alone in its vol
    buckets): their P&L is their own and an option on a name held at today's value has none, so each ES is the full
    book's revaluation (to the rounding of the held Americans' exact prices against their base prices, 1e-12 of
    the ES here). With carry every option moves, and the whole book is revalued in every bucket."""
    import risk_pipeline.quant.regulatory_es as reg

    rng = np.random.default_rng(5)
    r = rng.normal(0.0, 0.02, (120, 3))
    hist = MarketHistory(r, np.expm1(-2.0 * r))
    book = Portfolio(
        symbols=("A", "B", "C"), spot=[100.0, 50.0, 30.0], symbol_index=[0, 0, 1, 1, 2, 2],
        quantity=[-10.0, 8.0, 20.0, -6.0, 300.0, 15.0], multiplier=[100.0, 100.0, 100.0, 100.0, 1.0, 100.0],
        is_option=[True, True, True, True, False, True], is_call=[False, True, True, False, False, False],
        strike=[95.0, 110.0, 55.0, 45.0, 1.0, 28.0], time_years=[0.3, 0.6, 0.5, 0.2, 0.0, 0.4],
        implied_vol=[0.25, 0.22, 0.4, 0.45, 0.0, 0.5], rate=0.03, dividend_yield=0.01,
        is_american=[True, True, True, False, False, True],
    )  # fmt: skip
    spot_lh, vol_lh = [10, 20, 10], [20, 60, 20]  # B small cap
    books: list[Portfolio] = []
    real = reg.evaluate

    def seen(portfolio: Portfolio, sc: object, *args: object, **kw: object) -> object:
        books.append(portfolio)
        return real(portfolio, sc, *args, **kw)

    monkeypatch.setattr(reg, "evaluate", seen)
    got = liquidity_adjusted_es(book, hist, spot_lh, vol_lh, american="eep_grid")
    assert [b.n_positions for b in books] == [6, 6, 3]  # every factor; B's spot and every vol; B's vols
    assert books[2].symbol_index.tolist() == [1, 1, 2] and books[2].is_option.tolist() == [True, True, False]
    sc = reg.historical_scenarios(hist, 10)
    for j, lh in ((0, 10), (1, 20), (3, 60)):
        spot_on, vol_on = np.array(spot_lh) >= lh, np.array(vol_lh) >= lh
        moved = reg.ScenarioSet(
            np.where(spot_on, sc.spot_shock_rel, 0.0), vol_scale=np.where(vol_on, sc.vol_scale, 1.0)
        )
        full = reg.empirical_var_es(real(book, moved, 0.0, american="eep_grid").pnl, reg.FRTB_CONFIDENCE)[1]
        assert got.es_by_horizon[j] == pytest.approx(full, rel=1e-12, abs=0.0) and full > 0.0
    books.clear()
    liquidity_adjusted_es(book, hist, spot_lh, vol_lh, american="eep_grid", carry_calendar_days=1.0)
    assert [b.n_positions for b in books] == [6, 6, 6]
