"""The model-consistent stress variant on the shared synthetic end-of-day run: one row per book and scenario,
the rule-based P&L beside it, and the P&L recomputed position by position from the stored inputs."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.defs.risk.var import book_portfolio
from risk_pipeline.paths import SCENARIOS_FILE
from risk_pipeline.quant.heston import HestonParams
from risk_pipeline.quant.heston_stress import model_consistent_vols
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate
from risk_pipeline.quant.stress import load_scenarios, scenario_set
from risk_pipeline.warehouse import Warehouse

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


def test_one_row_per_book_and_scenario_beside_the_rule_based_pnl(run: Run) -> None:
    wh, result = run
    assert result.success
    out, rules = wh.read("stress_model_consistent"), wh.read("stress_results")
    library = load_scenarios(str(SCENARIOS_FILE))
    assert len(out) == out["book"].nunique() * len(library.scenarios) and len(out) > 0
    both = out.merge(rules[["as_of", "book", "scenario_id", "market_pnl"]], on=["as_of", "book", "scenario_id"])
    assert len(both) == len(out)
    np.testing.assert_array_equal(both["rule_based_market_pnl"], both["market_pnl_y"])
    np.testing.assert_allclose(out["pnl_pct_nav"], out["market_pnl"] / out["nav"], rtol=1e-14)
    assert (out["options_without_model"] == 0).all()  # every underlying has a Heston fit
    assert (out["options_model_fallback"] == 0).all()  # no sample strike is out of the model's reach


def _first_book(run: Run) -> tuple[Warehouse, pd.DataFrame, str, pd.Timestamp, pd.DataFrame, pd.DataFrame, Portfolio]:
    """The stored rows, the first book's name, valuation, positions, Heston fits and portfolio."""
    wh, _ = run
    out = wh.read("stress_model_consistent")
    book = sorted(out["book"].unique())[0]
    as_of = out["as_of"].max()
    rows = wh.read("position_greeks", {"as_of": as_of})
    rows = rows[rows["book"] == book].reset_index(drop=True)
    heston = wh.read("heston_parameters", {"as_of": as_of}).set_index("underlying")
    return wh, out, book, as_of, rows, heston, book_portfolio(rows)


def test_pnl_is_the_revaluation_with_each_options_heston_vol_change(run: Run) -> None:
    """For one book: each option's vol shift recomputed name by name with ``model_consistent_vols`` (one
    underlying and one spot move at a time) from the stored heston_parameters, then revalued."""
    _wh, out, book, as_of, rows, heston, portfolio = _first_book(run)
    symbols = list(portfolio.symbols)
    betas = rows.groupby("symbol")["beta"].first().reindex(symbols).fillna(1.0).to_numpy()
    sectors = rows.groupby("symbol")["sector"].first().reindex(symbols).tolist()
    library = load_scenarios(str(SCENARIOS_FILE))
    sc = scenario_set(portfolio, list(library.scenarios), betas, sectors)
    shifts = np.zeros((sc.n_scenarios, portfolio.quantity.size))
    for i in range(sc.n_scenarios):
        for k, name in enumerate(symbols):
            pos = np.flatnonzero(portfolio.is_option & (portfolio.symbol_index == k))
            if pos.size == 0:
                continue
            p = HestonParams(*(float(heston.loc[name, c]) for c in ("v0", "kappa", "theta", "xi", "rho")))
            shock = model_consistent_vols(
                p,
                float(portfolio.spot[k]),
                float(sc.spot_shock_rel[i, k]),
                portfolio.strike[pos],
                portfolio.time_years[pos],
                portfolio.rate[pos],
                portfolio.dividend_yield[pos],
            )
            shifts[i, pos] = shock.vol_change
    full = ScenarioSet(
        sc.spot_shock_rel, vol_shift_abs=shifts, rate_shift_abs=sc.rate_shift_abs, vol_shift_per_position=True
    )
    want = pd.Series(evaluate(portfolio, full, 0.0).pnl, index=[s.scenario_id for s in library.scenarios])
    got = out[(out["book"] == book) & (out["as_of"] == as_of)].set_index("scenario_id")["market_pnl"]
    np.testing.assert_allclose(got.reindex(want.index), want, rtol=1e-9, atol=1e-6)


def test_sabr_pnl_is_the_revaluation_with_each_options_slice_moved_by_quantlibs_formula(run: Run) -> None:
    """For each book: each option's SABR vol shift recomputed position by position with QuantLib's Hagan
    formula (beta = 1 slices fitted with Obloj's formula equal Hagan's) from the stored sabr_slices, then
    revalued; options without a slice keep their vol and are counted."""
    import QuantLib as ql

    wh, _ = run
    out = wh.read("stress_model_consistent")
    as_of = out["as_of"].max()
    sabr = wh.read("sabr_slices", {"as_of": as_of})
    assert (sabr["sabr_beta"] == 1.0).all()  # the equity default; Obloj's leading term equals Hagan's there
    slices = {(r.underlying, pd.Timestamp(r.expiry).date()): r for r in sabr.itertuples()}
    library = load_scenarios(str(SCENARIOS_FILE))
    for book in sorted(out["book"].unique()):
        rows = wh.read("position_greeks", {"as_of": as_of})
        rows = rows[rows["book"] == book].reset_index(drop=True)
        portfolio = book_portfolio(rows)
        symbols = list(portfolio.symbols)
        betas = rows.groupby("symbol")["beta"].first().reindex(symbols).fillna(1.0).to_numpy()
        sectors = rows.groupby("symbol")["sector"].first().reindex(symbols).tolist()
        sc = scenario_set(portfolio, list(library.scenarios), betas, sectors)
        shifts = np.zeros((sc.n_scenarios, portfolio.quantity.size))
        missing = 0
        for p in np.flatnonzero(portfolio.is_option):
            r = slices.get((rows["symbol"][p], pd.Timestamp(rows["expiry"][p]).date()))
            if r is None:
                missing += 1
                continue
            k, f, t = float(portfolio.strike[p]), float(r.forward), float(r.time_to_expiry_years)
            before = ql.sabrVolatility(k, f, t, r.sabr_alpha, 1.0, r.sabr_nu, r.sabr_rho)
            for i in range(sc.n_scenarios):
                s = float(sc.spot_shock_rel[i, portfolio.symbol_index[p]])
                alpha = max(r.sabr_alpha + r.sabr_rho * r.sabr_nu * np.log1p(s), 0.01)
                shifts[i, p] = ql.sabrVolatility(k, f * (1 + s), t, alpha, 1.0, r.sabr_nu, r.sabr_rho) - before
        full = ScenarioSet(
            sc.spot_shock_rel, vol_shift_abs=shifts, rate_shift_abs=sc.rate_shift_abs, vol_shift_per_position=True
        )
        want = pd.Series(evaluate(portfolio, full, 0.0).pnl, index=[s.scenario_id for s in library.scenarios])
        got = out[(out["book"] == book) & (out["as_of"] == as_of)].set_index("scenario_id")
        np.testing.assert_allclose(got["sabr_market_pnl"].reindex(want.index), want, rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(got["sabr_pnl_pct_nav"], got["sabr_market_pnl"] / got["nav"], rtol=1e-14)
        assert (got["options_without_sabr"] == missing).all()


def test_a_pair_whose_heston_vol_cannot_be_implied_keeps_its_vol_in_that_scenario_only(run: Run, monkeypatch) -> None:
    """A (scenario, option) pair that falls back (a Heston price under heston_stress.PRICE_FLOOR: a short-dated far
    out-of-the-money strike after the move) keeps its market vol in that scenario only: counted there in
    options_model_fallback and left out of that scenario's mean shift; the option keeps its model shift in the
    other scenarios and options_without_model stays 0 (every underlying has a fit)."""
    import importlib

    from risk_pipeline.quant.heston_stress import HestonShifts, heston_vol_shifts_with_fallback

    smc = importlib.import_module("risk_pipeline.defs.risk.stress_model_consistent")  # the package exports the asset

    wh, _out, book, as_of, rows, heston, portfolio = _first_book(run)
    broken = int(np.flatnonzero(portfolio.is_option)[0])

    def with_one_fallback(*args):
        got = heston_vol_shifts_with_fallback(*args)
        shift, fallback = got.shift.copy(), got.fallback.copy()
        shift[0, broken], fallback[0, broken] = 0.0, True
        return HestonShifts(shift, fallback)

    monkeypatch.setattr(smc, "heston_vol_shifts_with_fallback", with_one_fallback)
    library = load_scenarios(str(SCENARIOS_FILE))
    rules = wh.read("stress_results", {"as_of": as_of})
    rule_based = rules[rules["book"] == book].set_index("scenario_id")["market_pnl"]
    frame = smc.book_rows(rows, heston, library, 1.0, rule_based)
    assert (frame["options_without_model"] == 0).all()
    assert frame["options_model_fallback"].tolist() == [1] + [0] * (len(frame) - 1)

    symbols = list(portfolio.symbols)
    betas = rows.groupby("symbol")["beta"].first().reindex(symbols).fillna(1.0).to_numpy()
    sectors = rows.groupby("symbol")["sector"].first().reindex(symbols).tolist()
    sc = scenario_set(portfolio, list(library.scenarios), betas, sectors)
    params = heston.reindex(symbols)[smc.PARAMS].to_numpy(float)
    shifts = heston_vol_shifts_with_fallback(portfolio, params, sc.spot_shock_rel).shift
    assert np.any(shifts[1:, broken] != 0.0)  # the option's other scenarios keep their model shifts
    shifts[0, broken] = 0.0
    full = ScenarioSet(
        sc.spot_shock_rel, vol_shift_abs=shifts, rate_shift_abs=sc.rate_shift_abs, vol_shift_per_position=True
    )
    np.testing.assert_allclose(frame["market_pnl"], evaluate(portfolio, full, 0.0).pnl, rtol=1e-12, atol=1e-9)
    opts = np.flatnonzero(portfolio.is_option)
    others = opts[opts != broken]
    want = np.abs(shifts[0, others]).mean() * 100.0 if others.size else 0.0  # 0 when no option is left
    assert frame["mean_abs_vol_shift_vol_points"][0] == pytest.approx(want)
    assert frame["mean_abs_vol_shift_vol_points"][1] == pytest.approx(np.abs(shifts[1, opts]).mean() * 100.0)


def test_shift_sets_revalued_at_once_are_each_set_revalued_alone_bit_for_bit(run: Run) -> None:
    """``revalue_shift_sets`` (one revaluation, a later set's row with the first set's bits priced once) against
    one ``evaluate`` per set: still rows (zero shifts in both), a row shared with other bits (-0.0), rows of their
    own, and a set equal to the first."""
    from importlib import import_module

    smc = import_module("risk_pipeline.defs.risk.stress_model_consistent")
    _wh, _out, _book, _as_of, rows, _heston, portfolio = _first_book(run)
    symbols = list(portfolio.symbols)
    betas = rows.groupby("symbol")["beta"].first().reindex(symbols).fillna(1.0).to_numpy()
    sectors = rows.groupby("symbol")["sector"].first().reindex(symbols).tolist()
    sc = scenario_set(portfolio, list(load_scenarios(str(SCENARIOS_FILE)).scenarios), betas, sectors)
    rng = np.random.default_rng(7)
    shape = (sc.n_scenarios, portfolio.quantity.size)
    first = np.where(portfolio.is_option[None, :], rng.normal(0.0, 0.03, shape), 0.0)
    first[0] = 0.0
    second = np.where(portfolio.is_option[None, :], rng.normal(0.0, 0.03, shape), 0.0)
    second[0] = 0.0  # the same bits as the first set's row
    second[1] = first[1]
    second[2] = np.where(first[2] == 0.0, -0.0, first[2])  # equal values, other bits: priced on its own
    third = first.copy()

    def alone(shifts: np.ndarray) -> np.ndarray:
        moved = ScenarioSet(
            sc.spot_shock_rel, vol_shift_abs=shifts, rate_shift_abs=sc.rate_shift_abs, vol_shift_per_position=True
        )
        return evaluate(portfolio, moved, 0.0).pnl

    got = smc.revalue_shift_sets(portfolio, sc, [first, second, third])
    for g, shifts in zip(got, [first, second, third], strict=True):
        want = alone(shifts)
        assert g.shape == want.shape
        assert g.tobytes() == want.tobytes()
