"""The post-earnings vol crush: the event variance leaves the total variance of options expiring after it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from risk_pipeline.quant.gap_risk import gap_var
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate
from risk_pipeline.quant.smile_dynamics import CRUSH_FLOOR_FRACTION, EarningsVolCrush
from risk_pipeline.quant.var import empirical_var_es


def _book() -> Portfolio:
    return Portfolio(
        symbols=("IDX", "XYZ"),
        spot=[100.0, 50.0],
        symbol_index=[1, 1, 1, 1, 0],
        quantity=[10.0, 10.0, -5.0, 3.0, 2.0],
        multiplier=[100.0, 100.0, 100.0, 100.0, 100.0],
        is_option=True,
        is_call=[True, False, True, False, False],
        strike=[50.0, 50.0, 55.0, 45.0, 95.0],
        time_years=[20 / 365, 20 / 365, 0.5, 2 / 365, 20 / 365],
        implied_vol=[0.55, 0.55, 0.40, 0.70, 0.2],
        rate=0.03,
        dividend_yield=0.0,
    )


def test_crush_removes_the_event_variance_from_options_expiring_after_it() -> None:
    book = _book()
    e = 0.06**2
    crush = EarningsVolCrush(symbol=1, event_variance=e, years_to_reaction=3 / 365, event_id="XYZ-earnings")
    got = crush.shifts(book, ScenarioSet(np.zeros((3, 2))))
    assert got.shape == (3, 5) and np.all(got == got[0])
    for p in (0, 1, 2):  # XYZ options expiring after the reaction
        s, t = book.implied_vol[p], book.time_years[p]
        assert got[0, p] == pytest.approx(math.sqrt(s * s - e / t) - s, abs=1e-15)
    assert got[0, 3] == 0.0  # expires before the reaction: no event in it
    assert got[0, 4] == 0.0  # another underlying
    # a short-dated option whose variance is mostly the event keeps half its vol at least
    big = EarningsVolCrush(symbol=1, event_variance=0.2**2, years_to_reaction=1 / 365)
    floor = big.shifts(book, ScenarioSet(np.zeros((1, 2))))[0, 0]
    assert floor == pytest.approx((CRUSH_FLOOR_FRACTION - 1.0) * 0.55, abs=1e-15)
    with pytest.raises(ValueError, match="event variance"):
        EarningsVolCrush(symbol=1, event_variance=-1.0, years_to_reaction=0.0).shifts(
            book, ScenarioSet(np.zeros((1, 2)))
        )


def test_gap_var_with_the_crush_revalues_each_combined_scenario_at_the_crushed_vols() -> None:
    """A long straddle loses its event premium: the gap VaR with the crush equals the empirical quantile of the
    combined scenarios revalued here at the crushed vols, and exceeds the VaR without it."""
    book = _book()
    rng = np.random.default_rng(2)
    base = ScenarioSet(np.expm1(rng.normal(0, 0.01, (250, 2))), vol_scale=np.exp(rng.normal(0, 0.03, (250, 2))))
    base_pnl = evaluate(book, base, 1.4, american="exact").pnl
    past = np.array([0.08, -0.05, 0.11, -0.07])
    gaps = np.column_stack([np.zeros(8), np.concatenate([past, -past])])
    e = float(np.mean(np.log1p(past) ** 2))
    crush = EarningsVolCrush(symbol=1, event_variance=e, years_to_reaction=1 / 365, event_id="XYZ")
    common = dict(horizon_days=1, confidences=(0.99,), calendar_days=1.4, american="exact")
    with_crush = gap_var(book, base, base_pnl, [("XYZ", gaps)], dynamics=[crush], **common)[0]
    without = gap_var(book, base, base_pnl, [("XYZ", gaps)], **common)[0]
    # independent: every (base, gap) pair, spot compounded, XYZ vols after the event written out
    i, j = np.divmod(np.arange(250 * 8), 8)
    spot = (1.0 + base.spot_shock_rel[i]) * (1.0 + gaps[j]) - 1.0
    crushed = book.implied_vol.copy()
    after = book.is_option & (book.symbol_index == 1) & (book.time_years > 1 / 365)
    crushed[after] = np.sqrt(np.maximum(crushed[after] ** 2 - e / book.time_years[after], 0.25 * crushed[after] ** 2))
    shift = np.broadcast_to(crushed - book.implied_vol, (spot.shape[0], 5))
    sc = ScenarioSet(spot, vol_scale=base.vol_scale[i], vol_shift_abs=shift, vol_shift_per_position=True)
    var, _ = empirical_var_es(evaluate(book, sc, 1.4, american="exact").pnl, 0.99)
    assert with_crush.var == pytest.approx(var, rel=1e-12)
    assert with_crush.var > without.var  # the straddle's event premium is gone in every gap scenario


def test_event_risk_scenarios_carry_the_crush() -> None:
    """event_gap_risk with the crush: each past reaction revalued at the crushed vols by hand (Black-Scholes
    through the engine's exact path, vols written out), and a long straddle loses more than without it."""
    from risk_pipeline.quant.stress import GapEvent, event_gap_risk

    book = _book()
    past = np.array([0.08, -0.05, 0.11, -0.07, 0.02])
    e = float(np.mean(np.log1p(past) ** 2))
    crush = EarningsVolCrush(symbol=1, event_variance=e, years_to_reaction=1 / 365, event_id="XYZ-q4")
    event = [GapEvent("XYZ-q4", "earnings", "XYZ")]
    common = dict(confidence=0.8, horizon_days=1.0, american="exact")
    with_crush = event_gap_risk(book, event, {"XYZ": past}, {}, vol_dynamics={"XYZ-q4": crush}, **common)[0]
    without = event_gap_risk(book, event, {"XYZ": past}, {}, **common)[0]
    crushed = book.implied_vol.copy()
    after = book.is_option & (book.symbol_index == 1) & (book.time_years > 1 / 365)
    crushed[after] = np.sqrt(np.maximum(crushed[after] ** 2 - e / book.time_years[after], 0.25 * crushed[after] ** 2))
    spot = np.column_stack([np.zeros(5), past])
    sc = ScenarioSet(
        spot, vol_shift_abs=np.broadcast_to(crushed - book.implied_vol, (5, 5)), vol_shift_per_position=True
    )
    pnl = evaluate(book, sc, 1.0, american="exact").pnl
    assert with_crush.expected_pnl == pytest.approx(pnl.mean(), rel=1e-12)
    assert with_crush.worst_loss == pytest.approx(-pnl.min(), rel=1e-12)
    assert with_crush.expected_pnl < without.expected_pnl


def test_summed_shifts_in_blocks_of_scenarios_equal_the_formulas_written_out() -> None:
    """``summed_shifts`` (the gap VaR's vol shifts, taken a few scenarios at a time) equals the crush plus the
    expiry-scaled ATM move written out for every scenario, in blocks of one row, of a few rows and in one block."""
    from risk_pipeline.quant.smile_dynamics import ExpiryScaledVolMoves, summed_shifts
    from risk_pipeline.quant.vol_shocks import VolShockRule

    book = _book()
    rng = np.random.default_rng(7)
    n = 37
    sc = ScenarioSet(np.expm1(rng.normal(0, 0.02, (n, 2))), vol_scale=np.exp(rng.normal(0, 0.05, (n, 2))))
    e = 0.05**2
    crush = EarningsVolCrush(symbol=1, event_variance=e, years_to_reaction=3 / 365)
    term = ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4))
    # written out: crush sqrt(max(s^2 - e / t, s^2 / 4)) - s after the reaction on XYZ; term s (c^g - c),
    # g = (30 / max(tau days, 7))^0.4, c the scenario's ATM vol scale of the option's underlying
    s, t = book.implied_vol, book.time_years
    after = book.symbol_index == 1
    after &= t > 3 / 365
    crushed = np.where(after, np.sqrt(np.maximum(s * s - e / t, 0.25 * s * s)) - s, 0.0)
    c = sc.vol_scale[:, book.symbol_index]
    g = (30.0 / np.maximum(t * 365.0, 7.0)) ** 0.4
    expected = crushed[None, :] + s[None, :] * (c**g - c)
    for cells in (1, 3 * 5, 10**6):  # one scenario a block, three, all at once
        got = summed_shifts([crush, term], book, sc, block_cells=cells)
        assert got.shape == (n, 5)
        np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)
    whole = crush.shifts(book, sc) + term.shifts(book, sc)
    assert np.array_equal(summed_shifts([crush, term], book, sc, block_cells=5), whole)  # same order, same bits
    with pytest.raises(ValueError, match="at least one"):
        summed_shifts([], book, sc)


def test_gap_var_makes_the_dynamics_shifts_chunk_by_chunk_with_the_whole_set_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gap_var hands the engine the crush plus the expiry-scaled move as ``RowVolShifts`` (made per chunk, here
    chunks of 256 of 2,000 combined scenarios): VaR, ES and the components equal, bit for bit, the combined set
    revalued on the grid with the whole-set ``summed_shifts`` array (checked against the formulas above)."""
    import risk_pipeline.quant.scenario_engine as se
    from risk_pipeline.quant.gap_risk import combined_gap_scenarios
    from risk_pipeline.quant.smile_dynamics import ExpiryScaledVolMoves, RowVolShifts, summed_shift_rows, summed_shifts
    from risk_pipeline.quant.var import kernel_component_var, tail_component_es
    from risk_pipeline.quant.vol_shocks import VolShockRule

    book = _book()
    rng = np.random.default_rng(9)
    base = ScenarioSet(np.expm1(rng.normal(0, 0.01, (250, 2))), vol_scale=np.exp(rng.normal(0, 0.03, (250, 2))))
    base_pnl = evaluate(book, base, 1.4, american="eep_grid").pnl
    past = np.array([0.08, -0.05, 0.11, -0.07])
    gaps = np.column_stack([np.zeros(8), np.concatenate([past, -past])])
    dyn = [
        EarningsVolCrush(symbol=1, event_variance=float(np.mean(np.log1p(past) ** 2)), years_to_reaction=1 / 365),
        ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4)),
    ]
    monkeypatch.setattr(se, "CHUNK_MEMORY_BYTES", 1)  # every chunk MIN_CHUNK scenarios
    common = dict(horizon_days=1, confidences=(0.99, 0.975), calendar_days=1.4, american="eep_grid")
    got = gap_var(book, base, base_pnl, [("XYZ", gaps)], dynamics=dyn, **common)
    sc = combined_gap_scenarios(base, [gaps], 50_000, 0)
    assert isinstance(summed_shift_rows(dyn, book, sc), RowVolShifts)
    whole = ScenarioSet(
        sc.spot_shock_rel,
        vol_scale=sc.vol_scale,
        vol_shift_abs=summed_shifts(dyn, book, sc),
        vol_shift_per_position=True,
    )
    ref = evaluate(book, whole, 1.4, american="eep_grid", per_symbol=True)
    assert se.prepare(book, 1.4, whole, "eep_grid").american == "eep_grid"
    for g, c in zip(got, (0.99, 0.975), strict=True):
        var, es = empirical_var_es(ref.pnl, c)
        assert (g.var, g.expected_shortfall, g.n_scenarios) == (var, es, 2000)
        np.testing.assert_array_equal(g.component_var, kernel_component_var(ref.by_symbol, var))
        np.testing.assert_array_equal(g.component_es, tail_component_es(ref.by_symbol, c))
