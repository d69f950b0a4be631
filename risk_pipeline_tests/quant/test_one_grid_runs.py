"""Scenario sets revalued on one early-exercise grid spanning all their ranges (``evaluate_on_one_grid``, the smile
report's extra historical runs): a set repeated gives its own grid's bits, and per option the shared grid agrees
with the exact engine as closely as each set's own grid; ``smile_sensitivity`` keeps the bits of the production
run and of the sticky-strike, flat-term run the stressed VaR reuses."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import numpy as np
import pytest

from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate, evaluate_on_one_grid, prepare
from risk_pipeline.quant.smile_dynamics import ExpiryScaledVolMoves, StickyMoneyness, SviSlices
from risk_pipeline.quant.var import (
    HISTORICAL,
    MarketHistory,
    VarConfig,
    compute_var,
    empirical_var_es,
    historical_scenarios,
    historical_var,
    historical_var_runs,
)
from risk_pipeline.quant.vol_shocks import VolShockRule

N_SYM = 4


def _book(rng: np.random.Generator, n_options: int = 40, own_symbols: bool = False) -> Portfolio:
    """Options (most American) on ``N_SYM`` names and a stock on each; ``own_symbols``: each option its own
    symbol, quantity 1 and no stocks (the per-underlying P&L is then each option's)."""
    spot = rng.uniform(40.0, 200.0, N_SYM)
    sym = rng.integers(0, N_SYM, n_options)
    strike = spot[sym] * np.exp(rng.normal(0.0, 0.15, n_options))
    common = {
        "is_call": rng.random(n_options) < 0.4,
        "strike": strike,
        "time_years": rng.uniform(0.05, 1.5, n_options),
        "implied_vol": rng.uniform(0.15, 0.6, n_options),
        "rate": 0.04,
        "dividend_yield": rng.uniform(0.0, 0.04, n_options),
        "is_american": rng.random(n_options) < 0.8,
    }
    if own_symbols:
        return Portfolio(
            symbols=tuple(f"O{i}" for i in range(n_options)),
            spot=spot[sym],
            symbol_index=np.arange(n_options),
            quantity=np.ones(n_options),
            is_option=True,
            **common,
        )
    m = n_options + N_SYM
    opt = np.arange(m) < n_options
    return Portfolio(
        symbols=tuple(f"S{i}" for i in range(N_SYM)),
        spot=spot,
        symbol_index=np.concatenate([sym, np.arange(N_SYM)]),
        quantity=rng.integers(-20, 21, m).astype(float),
        multiplier=np.where(opt, 100.0, 1.0),
        is_option=opt,
        **{
            k: np.concatenate([v, np.full(N_SYM, 1.0 if k == "strike" else 0.0)]) if isinstance(v, np.ndarray) else v
            for k, v in common.items()
        },
    )


def _smile(book: Portfolio, rho: float, slices_of: np.ndarray) -> StickyMoneyness:
    """Sticky moneyness on one SVI slice per underlying (``slices_of``: each position's underlying or -1)."""
    n = int(slices_of.max()) + 1
    return StickyMoneyness(
        SviSlices(
            a=np.full(n, 0.02),
            b=np.full(n, 0.12),
            rho=np.full(n, rho),
            m=np.zeros(n),
            sigma=np.full(n, 0.2),
            forward=np.asarray([book.spot[book.symbol_index[np.flatnonzero(slices_of == j)[0]]] for j in range(n)]),
            time_years=np.full(n, 0.5),
            slice_of_position=slices_of,
        )
    )


def _history(rng: np.random.Generator, n_days: int, n_sym: int, carry: bool = True) -> MarketHistory:
    return MarketHistory(
        rng.standard_t(4, (n_days, n_sym)) * 0.015,
        iv_rel_changes=np.expm1(rng.normal(0.0, 0.04, (n_days, n_sym))),
        rate_changes=rng.normal(0.0, 3e-4, n_days) if carry else None,
        dividend_changes=rng.normal(0.0, 1e-4, (n_days, n_sym)) if carry else None,
    )


def _sets(book: Portfolio, base: ScenarioSet, dynamics: list) -> list[ScenarioSet]:
    """``base`` with each dynamic's per-position vol shifts (historical_var's sets of each run)."""
    out = []
    for d in dynamics:
        shifts = [x.shifts(book, base) for x in d if x is not None]
        out.append(replace(base, vol_shift_abs=sum(shifts[1:], shifts[0]), vol_shift_per_position=True))
    return out


def _assert_same(a: object, b: object) -> None:
    assert np.array_equal(a.pnl, b.pnl)  # type: ignore[attr-defined]
    assert np.array_equal(a.by_symbol, b.by_symbol)  # type: ignore[attr-defined]


def _same_result(a: object, b: object) -> bool:
    """Every field the same (NaN equal to NaN)."""
    for f in fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray | float):
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif x != y:
            return False
    return True


def test_a_set_on_one_grid_with_itself_gets_its_own_grid_bit_for_bit() -> None:
    """The union of a set's ranges with themselves is its ranges: the same grid, so each copy's P&L is
    ``evaluate``'s bits (rate and yield shifts, per-position vol shifts); one set, and any other method, is
    ``evaluate`` itself."""
    rng = np.random.default_rng(3)
    book = _book(rng)
    hist = _history(rng, 120, N_SYM)
    term = ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4))
    smile = _smile(book, -0.4, np.where(book.is_option, book.symbol_index, -1))
    [sc] = _sets(book, historical_scenarios(hist, 3), [(smile, term)])
    days = 3 * 365 / 252
    own = evaluate(book, sc, days, american="eep_grid", per_symbol=True)
    assert prepare(book, days, sc, "eep_grid").grid_mode.tolist().count(1) > 10  # on the grid
    for got in evaluate_on_one_grid(book, [sc, sc, sc], days, american="eep_grid", per_symbol=True):
        _assert_same(got, own)
    [alone] = evaluate_on_one_grid(book, [sc], days, american="eep_grid", per_symbol=True)
    _assert_same(alone, own)
    for method in ("exact", "bs2002"):
        got = evaluate_on_one_grid(book, [sc, sc], days, american=method, per_symbol=True)  # type: ignore[arg-type]
        for g in got:
            _assert_same(g, evaluate(book, sc, days, american=method, per_symbol=True))  # type: ignore[arg-type]


@pytest.mark.parametrize("carry", [True, False])
def test_sets_on_one_grid_agree_with_the_exact_engine_as_their_own_grids_do(carry: bool) -> None:
    """Sticky strike, two sticky-moneyness smiles and the expiry-scaled term (the smile report's runs: the same
    returns, other vol shifts), each option on its own underlying so the per-underlying P&L is its own: per option
    and scenario the shared grid is within 5e-5 of the strike of the exact engine (the per-position shifts' test
    tolerance, ``test_eep_grid_covers_per_position_vol_shifts``), and its largest error over the options is within
    1.5 times the own grids' (measured: equal, 7.9e-7 and 1.7e-7 of the strike)."""
    rng = np.random.default_rng(8)
    book = _book(rng, n_options=30, own_symbols=True)
    hist = _history(rng, 200, book.n_symbols, carry)
    term = ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4))
    under = rng.integers(0, 3, book.n_positions)  # the options' slices: three underlyings' smiles
    runs = [(None, None), (_smile(book, -0.4, under), term), (_smile(book, -0.7, under), term)]
    days = 1 * 365 / 252
    sets = _sets(book, historical_scenarios(hist, 1), [r for r in runs if r != (None, None)])
    sets = [historical_scenarios(hist, 1), *sets]
    shared = evaluate_on_one_grid(book, sets, days, american="eep_grid", per_symbol=True)
    worst_own, worst_shared = 0.0, 0.0
    on_grid = 0
    for sc, got in zip(sets, shared, strict=True):
        own_book = prepare(book, days, sc, "eep_grid")
        on_grid = max(on_grid, int(np.count_nonzero(own_book.grid_mode == 1)))
        own = evaluate(book, sc, days, american="eep_grid", per_symbol=True).by_symbol
        exact = evaluate(book, sc, days, american="exact", per_symbol=True).by_symbol
        assert got.by_symbol is not None and own is not None and exact is not None
        e_shared = np.max(np.abs(got.by_symbol - exact), axis=0) / book.strike
        e_own = np.max(np.abs(own - exact), axis=0) / book.strike
        assert np.all(e_shared < 5e-5)
        worst_own, worst_shared = max(worst_own, e_own.max()), max(worst_shared, e_shared.max())
        # not the own grid's bits where the union is wider than the set's own range
        assert not np.array_equal(got.by_symbol, own)
    assert on_grid > 10 and worst_shared <= 1.5 * worst_own


def test_historical_runs_on_one_grid() -> None:
    """One run: ``historical_var``'s bits; several: each run's VaR within 1e-5 of its own run's and within 2e-5 of
    the exact engine's, as its own run's is (measured: own runs 0.5-9.3e-6 off the exact engine, on one grid 0.1-16e-6,
    the largest for the sticky-strike run, whose vol range is the narrowest), its notes its own."""
    rng = np.random.default_rng(5)
    book = _book(rng)
    hist = _history(rng, 260, N_SYM)
    cfg = VarConfig(horizons=(1, 5))
    exact_cfg = replace(cfg, american="exact")
    term = ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4))
    of = np.where(book.is_option, book.symbol_index, -1)
    runs = [(_smile(book, -0.4, of), term), (_smile(book, -0.7, of), term), (None, None)]
    [(res1, pnl1)] = historical_var_runs(book, hist, cfg, [runs[0]])
    res0, pnl0 = historical_var(book, hist, cfg, smile=runs[0][0], term=term)
    assert len(res1) == len(res0) and all(_same_result(a, b) for a, b in zip(res1, res0, strict=True))
    assert all(np.array_equal(pnl1[h], pnl0[h]) for h in cfg.horizons)
    together = historical_var_runs(book, hist, cfg, runs, components=False)
    for (smile, t), (res, pnl) in zip(runs, together, strict=True):
        alone, alone_pnl = historical_var(book, hist, cfg, smile=smile, term=t, components=False)
        exact, _ = historical_var(book, hist, exact_cfg, smile=smile, term=t, components=False)
        assert [r.note for r in res] == [r.note for r in alone]
        assert not all(np.array_equal(pnl[h], alone_pnl[h]) for h in cfg.horizons)
        for a, b, e in zip(res, alone, exact, strict=True):
            assert (a.horizon_days, a.confidence) == (b.horizon_days, b.confidence)
            assert a.var == pytest.approx(b.var, rel=1e-5)
            assert a.var == pytest.approx(e.var, rel=2e-5) and b.var == pytest.approx(e.var, rel=2e-5)
            assert a.var == pytest.approx(empirical_var_es(pnl[a.horizon_days], a.confidence)[0], rel=1e-12)


def test_smile_sensitivity_keeps_the_production_and_sticky_strike_flat_runs() -> None:
    """The report's production figures are the report's and the sticky-strike, flat-term run (whose 1-day P&L the
    stressed VaR reuses) is ``historical_var``'s own, bit for bit; the other runs (one shared grid a horizon) within
    1e-5 of their own runs'."""
    from risk_pipeline.defs.risk.var import smile_sensitivity

    rng = np.random.default_rng(12)
    book = _book(rng)
    hist = _history(rng, 260, N_SYM)
    cfg = VarConfig(horizons=(1, 3))
    of = np.where(book.is_option, book.symbol_index, -1)
    dynamics = {"sticky_strike": None, "sticky_moneyness": _smile(book, -0.4, of), "sabr": _smile(book, -0.7, of)}
    terms = {"flat": None, "expiry_scaled": ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4))}
    for production in (("sticky_strike", "expiry_scaled"), ("sabr", "flat")):
        smile, term = production
        report = compute_var(book, hist, cfg, methods=(HISTORICAL,), smile=dynamics[smile], term=terms[term])
        pnls: dict = {}
        got = smile_sensitivity(book, hist, cfg, dynamics, terms, production, report, pnls)
        for h in cfg.horizons:
            assert pnls[production][h] is report.scenario_pnl[(HISTORICAL, h)]
        _, flat = historical_var(book, hist, cfg)
        assert all(np.array_equal(pnls[("sticky_strike", "flat")][h], flat[h]) for h in cfg.horizons)
        for (method, h, c), text in got.items():
            doc = json.loads(text)
            assert method == HISTORICAL and doc["smile"]["production"] == smile and doc["term"]["production"] == term
            prod = next(r.var for r in report.results if (r.horizon_days, r.confidence) == (h, c))
            assert doc["smile"]["var"][smile] == doc["term"]["var"][term] == round(prod, 2)
            for part, names in (("smile", dynamics), ("term", terms)):
                for name in names:
                    s, t = (name, term) if part == "smile" else (smile, name)
                    res, _ = historical_var(book, hist, cfg, smile=dynamics[s], term=terms[t], components=False)
                    own = next(r.var for r in res if (r.horizon_days, r.confidence) == (h, c))
                    if (s, t) in (production, ("sticky_strike", "flat")):
                        assert doc[part]["var"][name] == round(own, 2)
                    else:
                        assert doc[part]["var"][name] == pytest.approx(own, rel=1e-5)
