"""The hedge pre-screen's tail P&L (``TailPnl``): exact means bit for bit against ``build_candidates``, bounds that
hold the exact means, and the screen keeping the same lines with only the lines that can rank revalued."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from risk_pipeline.quant.hedging import (
    GreekRows,
    TailPnl,
    _subset,
    build_candidates,
    position_greek_arrays,
    scenario_rows,
    screen_candidates,
)
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet
from risk_pipeline.quant.stress import stress_scenarios
from risk_pipeline_tests.quant.test_stress_rule_scenarios import _setup


def chain(seed: int, n_c: int = 160) -> tuple[Portfolio, list[tuple[Any, float]], tuple[str, ...]]:
    """Lines on the stress test book's symbols: American and European puts and calls (deep in the money at high
    rates and yields too: large early-exercise premiums), shares, half the contracts on both sides; blocks: the
    library's stress scenarios under the stress rule (exact engine), then 1- and 5-day sets with vol moves and a
    rate shift (early-exercise grid)."""
    lib, p, beta, _, kw = _setup()
    rng = np.random.default_rng(seed)
    n_sym = p.n_symbols
    sym = rng.integers(0, n_sym, n_c)
    opt = rng.random(n_c) < 0.85
    spot = np.asarray(p.spot)[sym]
    deep = rng.random(n_c) < 0.2
    call = rng.random(n_c) < 0.5
    k = spot * np.exp(rng.normal(0.0, 0.12, n_c) + np.where(deep, np.where(call, -0.4, 0.4), 0.0))
    side = np.where(rng.random(n_c) < 0.5, 1.0, -1.0)
    idx = np.concatenate([np.arange(n_c), np.arange(0, n_c, 2)])
    lines = Portfolio(
        symbols=p.symbols,
        spot=np.asarray(p.spot),
        symbol_index=sym[idx],
        quantity=np.concatenate([side, -side[::2]]),
        multiplier=np.where(opt, 100.0, 1.0)[idx],
        is_option=opt[idx],
        is_call=call[idx],
        strike=np.where(opt, k, 1.0)[idx],
        time_years=np.where(opt, rng.uniform(0.05, 1.5, n_c), 0.0)[idx],
        implied_vol=np.where(opt, rng.uniform(0.15, 0.7, n_c), 0.0)[idx],
        rate=np.where(deep, 0.09, rng.uniform(0.01, 0.06, n_c))[idx],  # above the -0.005 shift
        dividend_yield=np.where(deep, 0.07, rng.uniform(0.0, 0.04, n_c))[idx],
        is_american=((rng.random(n_c) < 0.75) & opt)[idx],
    )
    stress = stress_scenarios(p, lib.scenarios, beta, None, **kw)
    tail = scenario_rows(stress, np.array([0, 2, 3, 5, 7]))
    one = ScenarioSet(
        rng.normal(-0.03, 0.04, (4, n_sym)), vol_scale=np.exp(rng.normal(0.1, 0.1, (4, n_sym))),
        rate_shift_abs=np.array([0.0, 0.01, -0.005, 0.02]),
    )  # fmt: skip
    five = ScenarioSet(rng.normal(-0.06, 0.08, (6, n_sym)), vol_scale=np.exp(rng.normal(0.2, 0.1, (6, n_sym))))
    return lines, [(tail, 0.0), (one, 365 / 252), (five, 5 * 365 / 252)], p.symbols


def candidates(lines: Portfolio, blocks: list, symbols: tuple[str, ...]) -> Any:
    mid = np.abs(position_greek_arrays(lines)["price"])
    trade = mid * np.where(np.asarray(lines.quantity) > 0, 1.03, 0.97)
    rows = GreekRows(symbols, symbols, dollar_delta=True, vega=True)
    return build_candidates(
        lines, trade, mid, rows, blocks, symbol_columns=symbols, horizon_calendar_days=7.0, financing_rate=0.05,
        budget=1e7, american="eep_grid",
    )  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2])
def test_tail_means_of_any_lines_are_build_candidates_means_bit_for_bit(seed: int) -> None:
    """``TailPnl.mean`` of subsets (single lines, a buy and a sell of one contract, every other line, all) equals
    the column means of ``build_candidates``' scenario P&L of every line, bit for bit; lines all distinct too."""
    lines, blocks, symbols = chain(seed)
    want = candidates(lines, blocks, symbols).scenario_pnl.mean(axis=0)
    tail = TailPnl(lines, blocks, symbols, "eep_grid")
    n = lines.n_positions
    for idx in (np.array([3]), np.array([0, 160]), np.arange(0, n, 2), np.arange(1, n, 3), np.arange(n)):
        got = tail.mean(idx)
        assert np.array_equal(got.view(np.int64), want[idx].view(np.int64))
    distinct = _subset(lines, np.arange(160))
    want = candidates(distinct, blocks, symbols).scenario_pnl.mean(axis=0)
    idx = np.arange(5, 160, 4)
    got = TailPnl(distinct, blocks, symbols, "eep_grid").mean(idx)
    assert np.array_equal(got.view(np.int64), want[idx].view(np.int64))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tail_bounds_hold_the_exact_means_and_are_tight_for_european_lines(seed: int) -> None:
    lines, blocks, symbols = chain(seed)
    exact = candidates(lines, blocks, symbols).scenario_pnl.mean(axis=0)
    lo, hi = TailPnl(lines, blocks, symbols, "eep_grid").bounds()
    assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
    assert np.all((lo <= exact) & (exact <= hi))
    american = np.asarray(lines.is_american) & np.asarray(lines.is_option)
    # the American options' premium moves the mean: the bounds are not met by the European values alone
    eu = (lo + hi) / 2
    assert np.abs(exact - eu)[american].max() > 1e3 * np.abs(exact - eu)[~american].max()
    # European options and shares: the European revaluation itself, within the slack
    scale = np.asarray(lines.multiplier) * (np.asarray(lines.strike) + 3 * np.asarray(lines.spot)[lines.symbol_index])
    assert np.all((hi - lo)[~american] <= 2.1e-6 * scale[~american])


def test_tail_bounds_are_infinite_where_the_premium_bound_does_not_hold() -> None:
    """A call with a negative rate, a put with a negative yield: no bound (every line on its own)."""
    lines, blocks, symbols = chain(4)
    am = np.flatnonzero(np.asarray(lines.is_american) & np.asarray(lines.is_option))
    calls, puts = am[np.asarray(lines.is_call)[am]], am[~np.asarray(lines.is_call)[am]]
    rate, yld = np.array(lines.rate, dtype=float), np.array(lines.dividend_yield, dtype=float)
    rate[calls[0]] = -0.01
    yld[puts[0]] = -0.01
    lo, hi = TailPnl(replace(lines, rate=rate, dividend_yield=yld), blocks, symbols, "eep_grid").bounds()
    same = np.asarray(lines.strike) == np.asarray(lines.strike)[calls[0]]
    assert np.isinf(lo[calls[0]]) and np.isinf(hi[calls[0]]) and np.isinf(hi[puts[0]])
    assert np.isfinite(hi[~same & (np.arange(lines.n_positions) != puts[0])]).any()


@pytest.mark.parametrize(("seed", "keep"), [(1, 1), (1, 6), (2, 20), (3, 90), (2, 10_000)])
def test_screen_with_the_bounded_tail_keeps_what_the_full_revaluation_keeps(
    seed: int, keep: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The screen given ``TailPnl`` (no scenario P&L on the candidates) keeps the lines the screen on every line's
    full revaluation keeps (the old path, the oracle), with Greek criteria or the tail alone, and revalues fewer
    lines when few are kept."""
    lines, blocks, symbols = chain(seed, n_c=400)
    c = candidates(lines, blocks, symbols)
    opt = np.asarray(lines.is_option)
    rng = np.random.default_rng(seed)
    n_rows = c.greeks.shape[0]
    exposure = rng.normal(0.0, 5e3, n_rows)
    warn = np.abs(exposure) * rng.choice([1.5, 3.0, 3.0], n_rows)
    book_tail = rng.normal(-5e5, 1e5, 15)
    asked: list[int] = []
    real = TailPnl.mean

    def counting(self: TailPnl, idx: np.ndarray) -> np.ndarray:
        asked.append(len(idx))
        return real(self, idx)

    monkeypatch.setattr(TailPnl, "mean", counting)
    bare = replace(c, scenario_pnl=np.zeros((0, c.n)))
    for exp, w in ((exposure, warn), (np.zeros(n_rows), np.ones(n_rows))):
        want = screen_candidates(c, opt, exp, w, book_tail, keep)
        asked.clear()
        got = screen_candidates(bare, opt, exp, w, book_tail, keep, TailPnl(lines, blocks, symbols, "eep_grid"))
        np.testing.assert_array_equal(got, want)
        assert len(asked) == 1
        if keep <= 6:
            assert asked[0] < opt.sum() / 4
    # no tail loss: no tail criterion, nothing revalued
    asked.clear()
    got = screen_candidates(bare, opt, exposure, warn, -book_tail, 6, TailPnl(lines, blocks, symbols, "eep_grid"))
    np.testing.assert_array_equal(got, screen_candidates(c, opt, exposure, warn, -book_tail, 6))
    assert not asked
    assert math.isfinite(float(np.sum(c.cost)))
