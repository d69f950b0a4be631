"""The hedging layer's stress block (``RuleScenarios``): the stress engine's shocks and vol rule on any lines."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from risk_pipeline.quant.hedging import columns_of, combine, per_position_pnl, scenario_pnl, scenario_rows
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.stress import load_scenarios, run_stress, stress_scenarios
from risk_pipeline_tests.quant.test_vol_shocks import _long_equity_book

LIBRARY = Path(__file__).resolve().parents[2] / "data" / "stress" / "scenarios.yaml"
SPOT_SD = np.array([0.0, 0.018, 0.015, 0.022, 0.012])
VOL_SD = np.array([0.0, 0.05, 0.04, 0.06, 0.05])
NAV = 2e6


def _bsm(s: float, k: float, t: float, vol: float, r: float, q: float, call: bool) -> float:
    d1 = (math.log(s / k) + (r - q + 0.5 * vol * vol) * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    if call:
        return s * math.exp(-q * t) * stats.norm.cdf(d1) - k * math.exp(-r * t) * stats.norm.cdf(d2)
    return k * math.exp(-r * t) * stats.norm.cdf(-d2) - s * math.exp(-q * t) * stats.norm.cdf(-d1)


def _setup() -> tuple:
    lib = load_scenarios(LIBRARY)
    p, beta, vol_beta = _long_equity_book()
    kw = {"vol_rule": lib.vol_rule, "vol_betas": vol_beta, "idio_spot_sd": SPOT_SD, "idio_vol_sd": VOL_SD}
    return lib, p, beta, vol_beta, kw


def test_book_revalued_in_rule_scenarios_equals_run_stress() -> None:
    lib, p, beta, _, kw = _setup()
    assert any((s.idiosyncratic_sigmas or 0) > 0 for s in lib.scenarios)
    spreads, volumes = np.full(p.n_positions, 0.05), np.full(p.n_positions, 1e4)
    out = run_stress(p, lib, betas=beta, nav=NAV, spreads=spreads, volumes=volumes, **kw)
    expected = np.array([r.market_pnl for r in out])
    rs = stress_scenarios(p, lib.scenarios, beta, None, **kw)
    # the hedging layer revalues with its own method argument; the block uses the stress engine's ("exact")
    got = scenario_pnl(p, rs, 0.0, "eep_grid")
    # same engine, same shocks and vols: only the order of the sum over positions differs (per symbol first)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * NAV)
    # rows and columns select like a ScenarioSet
    np.testing.assert_allclose(scenario_pnl(p, scenario_rows(rs, np.array([0, 3])), 0.0), got[[0, 3]], atol=1e-6)
    # per position sums to the book
    np.testing.assert_allclose(per_position_pnl(p, rs, 0.0).sum(axis=1), got, rtol=0, atol=1e-6)


def test_a_hedge_line_moves_by_the_same_rule() -> None:
    lib, p, beta, vol_beta, kw = _setup()
    rs = stress_scenarios(p, lib.scenarios, beta, None, **kw)
    rule = lib.vol_rule
    # a European put on AAA (column 1) with its own expiry and strike, one contract
    k, days, vol, r, q = 95.0, 200.0, 0.31, 0.04, 0.01
    line = Portfolio(
        symbols=("AAA",), spot=np.array([100.0]), symbol_index=[0], quantity=[1.0], multiplier=[100.0],
        is_option=[True], is_call=[False], strike=[k], time_years=[days / 365.0], implied_vol=[vol], rate=r,
        dividend_yield=q,
    )  # fmt: skip
    got = per_position_pnl(line, columns_of(rs, np.array([1])), 0.0)[:, 0]
    base = 100.0 * _bsm(100.0, k, days / 365.0, vol, r, q, False)
    f = (30.0 / days) ** rule.term_exponent
    g = (30.0 / days) ** 0.5
    no_idio = [j for j, s in enumerate(lib.scenarios) if not (s.idiosyncratic_sigmas or rule.idiosyncratic_sigmas)]
    assert no_idio
    for j in no_idio:  # hand: spot by beta 1.1, the name's log-vol move clip(0.5) x ln(multiplier)
        s = lib.scenarios[j]
        spot = 100.0 * (1.0 + s.symbol_moves.get("AAA", (1.0 + s.index_move) ** 1.1 - 1.0))
        d = float(np.clip(np.clip(vol_beta[1], 0.25, 2.0) * math.log(s.vol.multiplier) * f, -1.6094, 1.6094))
        v = max(vol * math.exp(d) + s.vol.shift * f + s.vol.skew * g * math.log(k / spot), 0.0)
        hand = 100.0 * _bsm(spot, k, days / 365.0, v, r + s.rate_shift, q, False) - base
        assert got[j] == pytest.approx(hand, rel=1e-9, abs=1e-6), s.scenario_id
    # in every scenario (idiosyncratic ones too) a line that is a book position moves exactly as that position
    copy = replace(line, strike=[92.0], time_years=[50.0 / 365.0], implied_vol=[0.29], is_american=[False])
    book_put = per_position_pnl(p, rs, 0.0)[:, 4] / 30.0
    np.testing.assert_allclose(per_position_pnl(copy, columns_of(rs, np.array([1])), 0.0)[:, 0], book_put, rtol=1e-12)
    # and the hedged book is the book plus the line
    both = scenario_pnl(combine(p, replace(line, symbols=("AAA",))), rs, 0.0)
    np.testing.assert_allclose(both - scenario_pnl(p, rs, 0.0), got, rtol=1e-9, atol=1e-6)


def test_sets_revalued_in_chunks_are_the_one_chunk_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_stress`` under ``expiry_name_skew`` revalues its sign-combination sets a few per chunk: every row is
    the bits of the whole set revalued in one chunk (the engine's reference path, the chunk size taken away)."""
    import risk_pipeline.quant.stress as stress

    lib, p, beta, _, kw = _setup()
    spreads, volumes = np.full(p.n_positions, 0.05), np.full(p.n_positions, 1e4)
    chunked = run_stress(p, lib, betas=beta, nav=NAV, spreads=spreads, volumes=volumes, **kw)
    real = stress.evaluate
    sizes = []

    def one_chunk(*args: object, chunk_size: int | None = None, **kwargs: object) -> object:
        sizes.append(chunk_size)
        return real(*args, **kwargs)

    monkeypatch.setattr(stress, "evaluate", one_chunk)
    whole = run_stress(p, lib, betas=beta, nav=NAV, spreads=spreads, volumes=volumes, **kw)
    n, moved = len(lib.scenarios), sum(1 for s in lib.scenarios if s.idiosyncratic_sigmas)
    # pass 1 (n + 4 moved rows) cut once, after whole scenarios; the final pass: the moved scenarios, one chunk
    assert len(sizes) == 2 and 3 * n <= sizes[0] < n + 4 * moved and sizes[1] == moved
    assert [r.to_row() for r in chunked] == [r.to_row() for r in whole]


def test_the_final_pass_revalues_the_moved_scenarios_each_scenario_its_own_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The search's final pass revalues only the scenarios with idiosyncratic moves; one without them takes pass 1's
    base row. Every scenario's P&L per symbol is the bits of its final shocks revalued alone (``RuleScenarios``)."""
    import risk_pipeline.quant.stress as stress
    from risk_pipeline.quant.scenario_engine import evaluate

    lib, p, beta, vol_beta, kw = _setup()
    p = combine(p, _hedge_lines(p.symbols, p.spot))
    items = lib.scenarios
    sc = stress.scenario_set(p, items, beta, None)
    real, rows = stress.evaluate, []

    def spy(book: Portfolio, scenarios: object, *a: object, **k: object) -> object:
        rows.append(scenarios.n_scenarios)  # type: ignore[attr-defined]
        return real(book, scenarios, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(stress, "evaluate", spy)
    by_sym, spot_log, idio, _ = stress._expiry_name_skew_pnl(
        p, items, sc, lib.vol_rule, vol_beta, SPOT_SD, VOL_SD, "exact", None
    )
    moved = [j for j, s in enumerate(items) if s.idiosyncratic_sigmas]
    assert rows[-1] == len(moved) < len(items)
    assert by_sym is not None and not np.any(idio[[j for j in range(len(items)) if j not in moved]])
    rs = stress_scenarios(p, items, beta, None, **kw)
    np.testing.assert_array_equal(rs.spot_log_shock, spot_log)
    for j in range(len(items)):
        alone = evaluate(p, rs.rows([j]).scenario_set(p), 0.0, american="exact", per_symbol=True).by_symbol
        assert alone is not None
        np.testing.assert_array_equal(by_sym[j], alone[0])


def test_the_first_pass_solves_each_boundary_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pass 1 (the scenarios and their sign combinations, cut into chunks after whole scenarios, the scenarios
    ordered by their rate and vol inputs) solves each distinct exercise boundary (rate, yield, vol, time) once."""
    import risk_pipeline.quant.scenario_engine as engine

    lib, p, beta, _, kw = _setup()
    p = combine(replace(p, is_american=[True] * 4 + [True, True, False]), _hedge_lines(p.symbols, p.spot))
    real, solved = engine.solve_boundaries, []

    def recording(pr: np.ndarray, pq: np.ndarray, sig: np.ndarray, t: np.ndarray, *a: object) -> object:
        solved.append(np.stack([pr, pq, sig, t], axis=1))
        return real(pr, pq, sig, t, *a)

    monkeypatch.setattr(engine, "solve_boundaries", recording)
    stress_scenarios(p, lib.scenarios, beta, None, **kw)  # pass 1 only (no final pass)
    assert len(solved) == 2  # two chunks
    keys = np.concatenate(solved)
    assert keys.shape[0] == np.unique(keys, axis=0).shape[0] > 0


def _hedge_lines(symbols: tuple[str, ...], spot: np.ndarray) -> Portfolio:
    """An American put and a short call on BBB (column 2), shares of DDD (column 4), on the book's symbols."""
    return Portfolio(
        symbols=symbols, spot=spot, symbol_index=[2, 2, 4], quantity=[40.0, -15.0, -900.0],
        multiplier=[100.0, 100.0, 1.0], is_option=[True, True, False], is_call=[False, True, True],
        strike=[55.0, 66.0, 1.0], time_years=np.array([80.0, 45.0, 0.0]) / 365.0, implied_vol=[0.33, 0.3, 0.0],
        rate=0.04, dividend_yield=0.01, is_american=[True, True, False],
    )  # fmt: skip


def test_a_hedged_book_reusing_the_books_first_pass_finds_the_same_shocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hedged book's search given the book's first pass: the shocks of a search from scratch, bit for bit, with
    only the positions on the hedge lines' symbols revalued again in pass 1 and no final revaluation; the sign
    combinations revalued only in the scenarios with idiosyncratic moves."""
    import risk_pipeline.quant.stress as stress

    lib, p, beta, _, kw = _setup()
    p = replace(p, is_american=[False] * 4 + [True, True, False])  # the exact American engine on two names
    book = stress_scenarios(p, lib.scenarios, beta, None, **kw)
    assert book.first_pass is not None
    hedged = combine(p, _hedge_lines(p.symbols, p.spot))
    real, revalued = stress.evaluate, []

    def counting(portfolio: Portfolio, scenarios: object, *args: object, **kwargs: object) -> object:
        revalued.append((portfolio.n_positions, scenarios.n_scenarios))  # type: ignore[attr-defined]
        return real(portfolio, scenarios, *args, **kwargs)

    monkeypatch.setattr(stress, "evaluate", counting)
    scratch = stress_scenarios(hedged, lib.scenarios, beta, None, **kw)
    n = len(lib.scenarios)
    k = [
        lib.vol_rule.idiosyncratic_sigmas if s.idiosyncratic_sigmas is None else s.idiosyncratic_sigmas
        for s in lib.scenarios
    ]
    rows = n + 4 * sum(x > 0 for x in k)
    assert 0 < rows - n < 4 * n  # the library has scenarios with and without idiosyncratic moves
    assert revalued == [(hedged.n_positions, rows)]  # pass 1 only: the final P&L is not returned
    revalued.clear()
    reused = stress_scenarios(hedged, lib.scenarios, beta, None, **kw, reuse=book)
    # the book's positions on BBB and DDD (columns 2 and 4) and the three lines
    on_lines = int(np.isin(hedged.symbol_index, [2, 4]).sum())
    assert revalued == [(on_lines, rows)]
    for name in ("spot_log_shock", "name_log_vol_move"):
        np.testing.assert_array_equal(getattr(reused, name), getattr(scratch, name))
    assert reused.first_pass is not None
    for a, b in zip(reused.first_pass.pnl, scratch.first_pass.pnl, strict=True):  # type: ignore[union-attr]
        np.testing.assert_array_equal(a, b)
    # the same portfolio: nothing revalued; other inputs or a portfolio that is not the book plus lines: from scratch
    revalued.clear()
    same = stress_scenarios(p, lib.scenarios, beta, None, **kw, reuse=book)
    assert revalued == []
    np.testing.assert_array_equal(same.spot_log_shock, book.spot_log_shock)
    np.testing.assert_array_equal(same.name_log_vol_move, book.name_log_vol_move)
    other_sd = {**kw, "idio_spot_sd": SPOT_SD * 1.5}
    stress_scenarios(hedged, lib.scenarios, beta, None, **other_sd, reuse=book)
    smaller = replace(p, quantity=p.quantity * np.array([1, 1, 1, 1, 1, 1, 0.5]))
    stress_scenarios(combine(smaller, _hedge_lines(p.symbols, p.spot)), lib.scenarios, beta, None, **kw, reuse=book)
    assert revalued == [(hedged.n_positions, rows)] * 2


def test_a_scenario_without_idiosyncratic_moves_keeps_its_rule_shocks() -> None:
    """Scenarios whose ``idiosyncratic_sigmas`` is 0 (the library rule's default) move no name alone: their shocks
    are the rule's (beta on the index move, vol beta x ln(multiplier)), exactly, next to scenarios that do."""
    lib, p, beta, vol_beta, kw = _setup()
    rs = stress_scenarios(p, lib.scenarios, beta, None, **kw)
    assert lib.vol_rule.idiosyncratic_sigmas == 0.0
    zero = [j for j, s in enumerate(lib.scenarios) if not s.idiosyncratic_sigmas]
    assert zero and len(zero) < len(lib.scenarios)
    rule = lib.vol_rule
    vb = np.clip(vol_beta, rule.vol_beta_floor, rule.vol_beta_cap)
    for j in zero:
        s = lib.scenarios[j]
        move = np.array(
            [s.symbol_moves.get(x, (1.0 + s.index_move) ** b - 1.0) for x, b in zip(p.symbols, beta, strict=True)]
        )
        np.testing.assert_allclose(rs.spot_log_shock[j], np.log1p(move), rtol=1e-14, atol=1e-16)
        np.testing.assert_array_equal(rs.name_log_vol_move[j], vb * math.log(s.vol.multiplier))
    others = [j for j in range(len(lib.scenarios)) if j not in zero]
    assert np.any(
        rs.name_log_vol_move[others] != vb[None, :] * np.log([lib.scenarios[j].vol.multiplier for j in others])[:, None]
    )


def test_sets_revalued_grouped_by_scenario_are_each_sets_own_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_revalue_sets`` revalues the sign-combination sets with their rows grouped by scenario: every set's P&L is
    the bits of that set revalued alone, and the combinations that move a name's spot but not its vols (the
    library's scenarios without a skew) share the exact engine's exercise boundaries, so fewer are solved."""
    import risk_pipeline.quant.scenario_engine as engine
    import risk_pipeline.quant.stress as stress
    from risk_pipeline.quant.vol_shocks import idiosyncratic_sign_sets

    lib, p, beta, vol_beta, _ = _setup()
    p = combine(replace(p, is_american=[False] * 4 + [True, True, False]), _hedge_lines(p.symbols, p.spot))
    items = lib.scenarios
    sc = stress.scenario_set(p, items, beta, None)
    n = sc.n_scenarios
    spot_log = np.log1p(sc.spot_shock_rel)
    none = np.zeros_like(spot_log)
    rows = np.arange(1, n, 2)  # a set on some scenarios only, as the combinations of scenarios that move names
    combos = [
        (*c, rows) for c in idiosyncratic_sign_sets(spot_log[rows], none[rows], SPOT_SD, VOL_SD, np.ones(n)[rows])
    ]
    sets = [(spot_log, none), *combos]
    args = (p, items, sc, lib.vol_rule, vol_beta, "exact", None)
    real, solved = engine.solve_boundaries, []

    def counting(pr: np.ndarray, *a: object, **k: object) -> object:
        solved.append(pr.size)
        return real(pr, *a, **k)

    monkeypatch.setattr(engine, "solve_boundaries", counting)
    alone = [stress._revalue_sets([s], *args)[0] for s in sets]
    n_alone = sum(solved)
    solved.clear()
    grouped = stress._revalue_sets(sets, *args)
    assert len(grouped) == len(sets)
    for a, b in zip(grouped, alone, strict=True):
        np.testing.assert_array_equal(a, b)
    skewed = [j for j in rows if items[j].vol.skew != 0.0]
    assert len(skewed) < rows.size  # most scenarios have no skew: their (+,+) and (-,+) rows share vols
    assert 0 < sum(solved) < n_alone
