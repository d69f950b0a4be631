"""Static-book backtest: rescaling identities, P&L against direct repricing, VaR against a direct quantile."""

from __future__ import annotations

import math

import numpy as np
import pytest

import risk_pipeline.quant.book_backtest as book_backtest
from risk_pipeline.quant.book_backtest import rescaled_book, static_book_backtest
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import market_values
from risk_pipeline.quant.var import ALL_METHODS, HISTORICAL, VarConfig


def _book() -> Portfolio:
    return Portfolio(
        symbols=("A", "B"),
        spot=[100.0, 50.0],
        symbol_index=[0, 1, 0, 1],
        quantity=[10.0, -20.0, 5.0, -8.0],
        multiplier=[1.0, 1.0, 100.0, 100.0],
        is_option=[False, False, True, True],
        is_call=[True, True, False, True],
        strike=[1.0, 1.0, 95.0, 55.0],
        time_years=[0.0, 0.0, 0.25, 0.5],
        implied_vol=[0.0, 0.0, 0.30, 0.40],
        rate=0.03,
        dividend_yield=0.01,
    )


def test_rescaled_book_keeps_every_positions_value_at_the_same_vol() -> None:
    book = _book()
    moved = rescaled_book(book, [80.0, 65.0], [1.0, 1.0])
    # BSM is homogeneous of degree one in (S, K): same notional and moneyness, same value
    np.testing.assert_allclose(market_values(moved), market_values(book), rtol=1e-12)
    np.testing.assert_allclose(moved.strike[2:], [95.0 * 0.8, 55.0 * 1.3])
    vol_up = rescaled_book(book, [100.0, 50.0], [1.5, 0.5])
    np.testing.assert_allclose(vol_up.implied_vol[2:], [0.45, 0.20])


def _market(n: int = 320, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = rng.standard_t(4, size=(n - 1, 2)) * np.array([0.012, 0.02]) / math.sqrt(2.0)
    closes = np.vstack([[100.0, 50.0], 100.0 * np.exp(np.cumsum(r, axis=0)) * [1.0, 0.5]])
    vols = np.column_stack([0.3 * np.exp(np.cumsum(rng.normal(0, 0.03, n))), np.full(n, np.nan)])
    gaps = np.r_[0.0, rng.choice([1.0, 1.0, 1.0, 1.0, 3.0], n - 1)]
    return closes, vols, gaps


def test_stock_book_pnl_and_historical_var_against_direct_formulas() -> None:
    closes, vols, gaps = _market()
    book = Portfolio(symbols=("A", "B"), spot=closes[-1], symbol_index=[0, 1], quantity=[10.0, -20.0])
    cfg = VarConfig(lookback_days=250, n_scenarios=2_000)
    days = np.arange(260, closes.shape[0] - 1)
    res = static_book_backtest(book, closes, vols, gaps, days, cfg, methods=(HISTORICAL,))
    notional = np.array([10.0, -20.0]) * closes[-1]  # constant per underlying
    returns = np.diff(np.log(closes), axis=0)
    for i, t in enumerate(days):
        expected_pnl = float(notional @ (closes[t + 1] / closes[t] - 1.0))
        assert res.pnl[i] == pytest.approx(expected_pnl, rel=1e-12)
        sample = np.expm1(returns[t - 250 : t]) @ notional
        loss = np.sort(-sample)[::-1]
        assert res.var[HISTORICAL][i] == pytest.approx(loss[math.ceil(250 * 0.01 - 1e-9) - 1], rel=1e-12)
        assert res.book_value[i] == pytest.approx(notional.sum())


def _repriced_next_day_pnl(book: Portfolio, closes: np.ndarray, vols: np.ndarray, gaps: np.ndarray, t: int) -> float:
    """The static book's P&L from day ``t`` to ``t + 1`` written out: each position rescaled to day ``t``'s spot and
    ATM vol (B has none: unchanged), options repriced with Black-Scholes (r 3 %, q 1 %) before and after the calendar
    gap, with the next day's vol move."""
    move = closes[t] / closes[-1]
    ratio = np.array([vols[t, 0] / vols[-1, 0], 1.0])
    vol_next = np.array([vols[t + 1, 0] / vols[t, 0], 1.0])
    total = 0.0
    for p in range(book.n_positions):
        s = book.symbol_index[p]
        units = book.quantity[p] / move[s] * book.multiplier[p]
        if not book.is_option[p]:
            total += units * (closes[t + 1, s] - closes[t, s])
            continue
        k, tau, sigma = book.strike[p] * move[s], book.time_years[p], book.implied_vol[p] * ratio[s]
        before = bsm_price(closes[t, s], k, tau, sigma, 0.03, 0.01, bool(book.is_call[p]))
        after = bsm_price(
            closes[t + 1, s], k, tau - gaps[t + 1] / 365.0, sigma * vol_next[s], 0.03, 0.01, bool(book.is_call[p])
        )
        total += units * (float(after) - float(before))
    return total


def test_option_pnl_is_the_repriced_difference_with_the_vol_move_and_calendar_days() -> None:
    closes, vols, gaps = _market()
    book = _book()
    book = Portfolio(**{**book.__dict__, "spot": closes[-1]})
    cfg = VarConfig(lookback_days=250, n_scenarios=1_000)
    days = np.array([270, 300])
    res = static_book_backtest(book, closes, vols, gaps, days, cfg)
    for i, t in enumerate(days):
        assert res.pnl[i] == pytest.approx(_repriced_next_day_pnl(book, closes, vols, gaps, int(t)), rel=1e-9)
    assert set(res.var) == {"historical", "delta_normal", "delta_gamma_cornish_fisher", "monte_carlo_fhs"}
    assert all(np.all(v > 0) for v in res.var.values())
    np.testing.assert_array_equal(res.lookback_days, [250, 250])


def test_days_without_enough_history_are_refused() -> None:
    closes, vols, gaps = _market()
    book = Portfolio(symbols=("A", "B"), spot=closes[-1], symbol_index=[0, 1], quantity=[1.0, 1.0])
    with pytest.raises(ValueError, match="250 returns"):
        static_book_backtest(book, closes, vols, gaps, np.array([100]), VarConfig())
    with pytest.raises(ValueError, match="next day"):
        static_book_backtest(book, closes, vols, gaps, np.array([closes.shape[0] - 1]), VarConfig())


def test_next_day_pnl_in_blocks_of_days_takes_todays_values_from_its_var_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the days split over several VaR calls (``days_per_call``), each day's options are priced today once (by
    its VaR call) also where the days of one calendar gap fall in different calls, and every figure is the one-call
    run's; the P&L is the repriced difference (BSM written out)."""
    import risk_pipeline.quant.scenario_engine as engine

    closes, vols, gaps = _market()
    days = np.arange(270, 278)
    gaps[days + 1] = [1.0, 3.0, 1.0, 1.0, 1.0, 3.0, 1.0, 3.0]  # days of one gap in calls 0-3 of two days each
    book = Portfolio(**{**_book().__dict__, "spot": closes[-1]})
    cfg = VarConfig(lookback_days=250, n_scenarios=500)
    priced: list[int] = []
    base_values = engine._base_values

    def counted(p, opt, *args, **kwargs):  # type: ignore[no-untyped-def]
        priced.append(int(np.asarray(opt).size))
        return base_values(p, opt, *args, **kwargs)

    monkeypatch.setattr(engine, "_base_values", counted)
    whole = static_book_backtest(book, closes, vols, gaps, days, cfg, methods=(HISTORICAL,))
    in_one = sum(priced)
    priced.clear()
    blocks = static_book_backtest(book, closes, vols, gaps, days, cfg, methods=(HISTORICAL,), days_per_call=2)
    n_options = int(book.is_option.sum())
    assert in_one == sum(priced) == days.size * n_options  # each day's options once, today
    np.testing.assert_array_equal(blocks.pnl, whole.pnl)
    np.testing.assert_array_equal(blocks.book_value, whole.book_value)
    np.testing.assert_array_equal(blocks.var[HISTORICAL], whole.var[HISTORICAL])
    for i, t in enumerate(days):
        assert blocks.pnl[i] == pytest.approx(_repriced_next_day_pnl(book, closes, vols, gaps, int(t)), rel=1e-9)


def test_default_calls_hold_the_windows_rows_within_the_cell_bound_with_the_one_call_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default days per VaR call are sized from the scenario rows the calls really hold (here 270-277 returns
    under a 500-day look-back): every call's days x its longest set's rows x positions within ``BATCH_CELLS``, no
    call smaller than the bound allows but the last, and every figure of every method the one-call run's."""
    closes, vols, gaps = _market()
    days = np.arange(270, 278)
    book = Portfolio(**{**_book().__dict__, "spot": closes[-1]})
    cfg = VarConfig(lookback_days=500, n_scenarios=500)
    n_pos = book.n_positions
    cells = 3 * 278 * n_pos  # three days of the longest window fit (3 x 277 rows), four do not
    monkeypatch.setattr(book_backtest, "BATCH_CELLS", cells)
    calls: list[tuple[int, int]] = []  # (days, most scenario rows of any method and day) per call
    batch = book_backtest.compute_var_batch

    def spy(books, histories, *args, **kwargs):  # type: ignore[no-untyped-def]
        reports = batch(books, histories, *args, **kwargs)
        rows = max(p.size for r in reports for p in r.scenario_pnl.values())
        calls.append((len(books), rows))
        return reports

    monkeypatch.setattr(book_backtest, "compute_var_batch", spy)
    grouped = static_book_backtest(book, closes, vols, gaps, days, cfg, methods=ALL_METHODS)
    assert [k for k, _ in calls] == [3, 3, 2]  # the configured 500 rows would have made one day per call
    for k, rows in calls:
        assert rows <= 277 and k * rows * n_pos <= cells
    assert all((k + 1) * rows * n_pos > cells for k, rows in calls[:-1])
    calls.clear()
    whole = static_book_backtest(book, closes, vols, gaps, days, cfg, methods=ALL_METHODS, days_per_call=days.size)
    assert [k for k, _ in calls] == [days.size]
    np.testing.assert_array_equal(grouped.pnl, whole.pnl)
    np.testing.assert_array_equal(grouped.book_value, whole.book_value)
    np.testing.assert_array_equal(grouped.lookback_days, whole.lookback_days)
    assert grouped.var.keys() == whole.var.keys() == set(ALL_METHODS)
    for name in ALL_METHODS:
        np.testing.assert_array_equal(grouped.var[name], whole.var[name])
