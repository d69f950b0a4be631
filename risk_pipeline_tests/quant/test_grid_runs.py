"""The early-exercise grid read for scenario sets in runs (``scenario_engine._american_grid_values`` with ``runs``):
what does not depend on the spot is reused while an option's vol, rate and yield repeat, and every price is the one
the scenario-by-scenario read gives, bit for bit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import risk_pipeline.quant.scenario_engine as se
from risk_pipeline.quant.american import american_price
from risk_pipeline.quant.gap_risk import combined_gap_scenarios
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate, prepare


def _book(rng: np.random.Generator, n_opt: int = 48) -> Portfolio:
    """American puts and calls on three names, rates above and below the yields (both exercise regimes), Europeans
    and a stock on each name."""
    spot = np.array([80.0, 150.0, 40.0])
    sym = np.concatenate([rng.integers(0, 3, n_opt), np.arange(3)])
    m = sym.size
    opt = np.arange(m) < n_opt
    return Portfolio(
        symbols=("A", "B", "C"),
        spot=spot,
        symbol_index=sym,
        quantity=rng.integers(-5, 6, m).astype(float),
        multiplier=np.where(opt, 100.0, 1.0),
        is_option=opt,
        is_call=rng.random(m) < 0.5,
        strike=spot[sym] * np.exp(rng.normal(0.0, 0.15, m)),
        time_years=rng.uniform(0.05, 1.5, m),
        implied_vol=rng.uniform(0.15, 0.6, m),
        rate=rng.choice([0.01, 0.045], m),
        dividend_yield=rng.uniform(0.0, 0.04, m),
        is_american=opt & (rng.random(m) < 0.85),
    )


def _gap_set(rng: np.random.Generator, p: Portfolio, n_base: int = 40, n_gap: int = 24) -> ScenarioSet:
    """A historical-like base set with vol, rate and yield moves, combined with market-wide gaps (every name moved):
    runs of rows that move only the spots. Some rate shifts are -0.0 and some +0.0, which must not share a run."""
    base = ScenarioSet(
        np.expm1(rng.normal(0.0, 0.02, (n_base, p.n_symbols))),
        vol_scale=np.exp(rng.normal(0.0, 0.05, (n_base, p.n_symbols))),
        rate_shift_abs=np.where(np.arange(n_base) % 7 == 0, np.where(np.arange(n_base) % 2, -0.0, 0.0),
                                rng.normal(0.0, 0.0008, n_base)),
        dividend_shift_abs=rng.normal(0.0, 0.0003, (n_base, p.n_symbols)),
    )  # fmt: skip
    betas = rng.uniform(0.5, 1.5, p.n_symbols)
    moves = rng.normal(0.0, 0.015, n_gap // 2)[:, None]
    gap = np.expm1(betas[None, :] * np.log1p(moves))
    return combined_gap_scenarios(base, [np.vstack([gap, -gap])], 10_000, 0)


def _with_position_shifts(rng: np.random.Generator, p: Portfolio, sc: ScenarioSet, n_gap: int) -> ScenarioSet:
    """Per-position vol shifts that depend on the base row only (as the expiry-scaled move of a gap set)."""
    per_base = rng.normal(0.0, 0.01, (sc.n_scenarios // n_gap, p.n_positions))
    return ScenarioSet(
        sc.spot_shock_rel,
        vol_scale=sc.vol_scale,
        vol_shift_abs=np.repeat(per_base, n_gap, axis=0),
        vol_shift_per_position=True,
        rate_shift_abs=sc.rate_shift_abs,
        dividend_shift_abs=sc.dividend_shift_abs,
    )


@pytest.mark.parametrize("position_shifts", [False, True])
def test_runs_read_gives_the_scenario_by_scenario_prices_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, position_shifts: bool
) -> None:
    rng = np.random.default_rng(3)
    p = _book(rng)
    sc = _gap_set(rng, p)
    if position_shifts:
        sc = _with_position_shifts(rng, p, sc, 24)
    book = prepare(p, 7.0, sc, "eep_grid")
    assert book.american == "eep_grid" and np.count_nonzero(book.grid_mode == 1) > 10
    used: list[str] = []
    real = se.run_chunked

    def spy(kernel, *args):  # type: ignore[no-untyped-def]
        # the grid read's ``runs`` flag (after n, the 5 symbol-major inputs, shift_opt, opt_stride, rate, div, shifted)
        used.append(kernel.__name__ + ("(runs)" if kernel is se._american_grid_values and args[11] else ""))
        return real(kernel, *args)

    monkeypatch.setattr(se, "run_chunked", spy)
    got = se.evaluate_prepared(book, sc, per_symbol=True)
    assert "_american_grid_values(runs)" in used and "_american_grid_values" not in used
    used.clear()
    monkeypatch.setattr(se, "RUNS_SHARE", 2.0)  # never in runs: the scenario-by-scenario read
    ref = se.evaluate_prepared(book, sc, per_symbol=True)
    assert "_american_grid_values" in used and "_american_grid_values(runs)" not in used
    np.testing.assert_array_equal(got.pnl, ref.pnl)
    assert got.by_symbol is not None and ref.by_symbol is not None
    np.testing.assert_array_equal(got.by_symbol, ref.by_symbol)


def test_runs_read_is_close_to_the_exact_engine() -> None:
    """The prices of the runs read against the exact engine, per American option (the grid's own error)."""
    rng = np.random.default_rng(5)
    p = _book(rng, n_opt=16)
    sc = _gap_set(rng, p, n_base=30, n_gap=12)
    book = prepare(p, 7.0, sc, "eep_grid")
    inp = se._chunk_inputs(book, sc)
    assert se._rows_repeat(inp)
    n_am = book.units.size - book.n_euro
    values = np.empty((n_am, sc.n_scenarios))
    n_nan = np.empty(n_am, dtype=np.intp)
    major = inp.symbol_major("spot_new", "log_spot_new", "scale", "shift", "skew")
    se._american_grid_values(
        *major, np.ascontiguousarray(inp.shift_opt.T), inp.opt_stride, np.ascontiguousarray(inp.rate.T),
        np.ascontiguousarray(inp.div.T), np.bool_(True), np.bool_(True), book.n_euro, book.opt_sym, book.log_strike,
        book.strike, book.t, book.sqrt_t, book.carry, book.vol, book.w, book.dq, book.kdr, book.grid_mode, book.grid_y0,
        book.grid_dy,
        book.grid_v0, book.grid_dv, book.grid_coef, book.grid_bcoef, book.grid_step, book.grid_dcoef,
        book.grid_dbcoef, values, n_nan, 0, n_am,
    )  # fmt: skip
    for m in np.flatnonzero(book.grid_mode == 1):
        i = book.n_euro + m
        s = book.opt_sym[i]
        ok = ~np.isnan(values[m])
        exact = american_price(
            inp.spot_new[ok, s],
            book.strike[i],
            book.t[i],
            book.vol[i] * inp.scale[ok, s],
            book.rate[i] + inp.rate[ok, s],
            book.div[i] + inp.div[ok, s],
            bool(book.call[i]),
        )
        assert np.max(np.abs(values[m, ok] - exact)) < 1e-3 * book.strike[i]


def test_sets_without_runs_keep_the_scenario_by_scenario_read() -> None:
    rng = np.random.default_rng(9)
    p = _book(rng)
    n = 200
    sc = ScenarioSet(
        np.expm1(rng.normal(0.0, 0.02, (n, p.n_symbols))),
        vol_scale=np.exp(rng.normal(0.0, 0.05, (n, p.n_symbols))),
        rate_shift_abs=rng.normal(0.0, 0.0008, n),
    )
    book = prepare(p, 1.0, sc, "eep_grid")
    assert not se._rows_repeat(se._chunk_inputs(book, sc))
    np.testing.assert_array_equal(evaluate(p, sc, 1.0, american="eep_grid").pnl, se.evaluate_prepared(book, sc).pnl)


def test_shifts_made_per_base_row_are_the_summed_shifts_of_every_row() -> None:
    """``gap_risk.base_row_shifts``: the expiry-scaled move and an earnings crush made once per base row and gathered
    give every row of the combined set the shifts ``summed_shifts`` makes for it, bit for bit; a dynamic that reads
    the spot (sticky moneyness) keeps the row-by-row shifts."""
    from risk_pipeline.quant.gap_risk import base_row_shifts, gap_picks
    from risk_pipeline.quant.smile_dynamics import (
        EarningsVolCrush,
        ExpiryScaledVolMoves,
        StickyMoneyness,
        SummedShiftRows,
        SviSlices,
        summed_shifts,
    )
    from risk_pipeline.quant.vol_shocks import VolShockRule

    rng = np.random.default_rng(11)
    p = _book(rng)
    sc = _gap_set(rng, p, n_base=40, n_gap=24)
    base_rows, _ = gap_picks(40, [24], 10_000, 0)
    dynamics = [EarningsVolCrush(1, 0.002, 3 / 365), ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4))]
    rows = base_row_shifts(dynamics, p, sc, base_rows)
    assert not isinstance(rows.make, SummedShiftRows)  # gathered from the per-base-row table
    whole = summed_shifts(dynamics, p, sc)
    for a, b in ((0, sc.n_scenarios), (5, 300), (700, 701)):
        np.testing.assert_array_equal(rows.make(a, b), whole[a:b])
    opt = np.flatnonzero(p.is_option)
    k = opt.size
    slices = SviSlices(
        *(np.full(k, v) for v in (0.04, 0.1, -0.3, 0.0, 0.2)),
        forward=p.spot[p.symbol_index[opt]],
        time_years=p.time_years[opt],
        slice_of_position=np.where(p.is_option, np.cumsum(p.is_option) - 1, -1),
    )
    spot_dependent = base_row_shifts([StickyMoneyness(slices), *dynamics], p, sc, base_rows)
    assert isinstance(spot_dependent.make, SummedShiftRows)


@pytest.mark.parametrize("position_shifts", [False, True])
def test_grid_ranges_scanned_on_new_vol_rows_only_give_the_same_grid(
    monkeypatch: pytest.MonkeyPatch, position_shifts: bool
) -> None:
    """The range scan of a set in runs reads the vols of the scenarios that change them only (``_new_vol_rows``):
    the same grid, every array bit for bit, as scanning every scenario."""
    rng = np.random.default_rng(21)
    p = _book(rng)
    sc = _gap_set(rng, p)
    if position_shifts:
        sc = _with_position_shifts(rng, p, sc, 24)
    else:  # per-symbol shifts: the scan, not the shortcut for scales alone
        sc = replace(sc, vol_shift_abs=np.zeros_like(sc.spot_shock_rel))
    monkeypatch.setattr(se, "CHUNK_MEMORY_BYTES", 1)  # chunks of MIN_CHUNK scenarios: runs cut at the chunks
    inp = se._chunk_inputs(prepare(p, 7.0, None, "exact"), sc.take(0, se.MIN_CHUNK))
    rows = se._new_vol_rows(inp)
    assert rows is not None and rows.size < se.MIN_CHUNK // 4
    got = prepare(p, 7.0, sc, "eep_grid")
    monkeypatch.setattr(se, "_new_vol_rows", lambda inp: None)
    ref = prepare(p, 7.0, sc, "eep_grid")
    fields = ("grid_mode", "grid_y0", "grid_dy", "grid_v0", "grid_dv", "grid_coef", "grid_bcoef", "grid_step")
    for name in (*fields, "grid_dcoef", "grid_dbcoef"):
        a, b = getattr(got, name), getattr(ref, name)
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert a.tobytes() == b.tobytes(), name  # signs of zero too
