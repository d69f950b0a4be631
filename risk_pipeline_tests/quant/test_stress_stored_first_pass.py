"""The stress step's pass 1 kept (``run_stress(first_pass_out=)``, ``stress_results.searched_first_pass``) and read
back by the hedging layer (``stored_first_pass``): the hedged book's search from it finds the shocks of a search from
scratch, bit for bit; anything else than the same portfolio, scenarios, rule, engine and inputs is searched again."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from risk_pipeline.defs.risk.stress import first_pass_json, parse_first_pass
from risk_pipeline.quant.hedging import combine
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.stress import (
    FirstPass,
    RuleScenarios,
    load_scenarios,
    run_stress,
    stored_first_pass,
    stress_scenarios,
)
from risk_pipeline_tests.quant.test_stress_rule_scenarios import LIBRARY, NAV, _hedge_lines, _setup


def _stress_step_pass(p: Portfolio, beta: np.ndarray, kw: dict) -> FirstPass:
    """Pass 1 as the stress step keeps it: ``run_stress``'s search of the book (its own library object)."""
    out: list[FirstPass] = []
    spreads, volumes = np.full(p.n_positions, 0.05), np.full(p.n_positions, 1e4)
    run_stress(p, load_scenarios(LIBRARY), beta, None, spreads, volumes, NAV, **kw, first_pass_out=out)
    assert len(out) == 1
    return out[0]


def _read_back(first: FirstPass) -> tuple[str, np.ndarray, np.ndarray]:
    """The stored column's rows (JSON text, as the warehouse returns them) parsed back."""
    texts = [str(json.loads(json.dumps(t))) for t in first_pass_json(first)]
    parsed = parse_first_pass(texts)
    assert parsed is not None
    return parsed


def _american_book() -> tuple:
    lib, p, beta, vol_beta, kw = _setup()
    p = replace(p, is_american=[False] * 4 + [True, True, False])  # the exact American engine on two names
    return lib, p, beta, vol_beta, kw


def _count_revaluations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The position count of every revaluation the stress search makes from now on (``stress.evaluate`` wrapped)."""
    import risk_pipeline.quant.stress as stress

    real, revalued = stress.evaluate, []

    def counting(portfolio: Portfolio, scenarios: object, *args: object, **kwargs: object) -> object:
        revalued.append(portfolio.n_positions)
        return real(portfolio, scenarios, *args, **kwargs)

    monkeypatch.setattr(stress, "evaluate", counting)
    return revalued


def test_the_hedged_search_from_the_stored_pass_equals_a_search_from_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stress step's pass 1, written and read back, stands for the hedging step's own search of the book: the
    hedged book's search reusing it revalues only the positions on the lines' symbols and finds the shocks (and the
    extra losses and picks) of a search of the hedged book from scratch, bit for bit."""
    lib, p, beta, _, kw = _american_book()
    kept = _stress_step_pass(p, beta, kw)
    book = stress_scenarios(p, lib.scenarios, beta, None, **kw)  # the hedging step's search of the book
    assert book.first_pass is not None and kept.pnl is not None
    assert kept.digest() == book.first_pass.digest()
    np.testing.assert_array_equal(kept.loss, book.first_pass.loss)
    np.testing.assert_array_equal(kept.pick, book.first_pass.pick)
    digest, loss, pick = _read_back(kept)
    assert loss.tobytes() == kept.loss.tobytes() and np.array_equal(pick, kept.pick) and digest == kept.digest()
    read = stored_first_pass(p, lib.scenarios, beta, None, digest, loss, pick, **kw)
    assert read is not None and read.pnl is None

    hedged = combine(p, _hedge_lines(p.symbols, p.spot))
    scratch = stress_scenarios(hedged, lib.scenarios, beta, None, **kw)
    revalued = _count_revaluations(monkeypatch)
    block = replace(book, first_pass=None)  # the stored shocks: no pass 1 of their own
    reused = stress_scenarios(hedged, lib.scenarios, beta, None, **kw, reuse=replace(block, first_pass=read))
    assert revalued == [int(np.isin(hedged.symbol_index, [2, 4]).sum())]  # the positions on BBB and DDD only
    for name in ("spot_log_shock", "name_log_vol_move", "vol_multiplier", "vol_shift", "vol_skew", "rate_shift"):
        assert getattr(reused, name).tobytes() == getattr(scratch, name).tobytes(), name
    assert reused.first_pass is not None and scratch.first_pass is not None
    assert reused.first_pass.loss.tobytes() == scratch.first_pass.loss.tobytes()
    np.testing.assert_array_equal(reused.first_pass.pick, scratch.first_pass.pick)
    # the in-memory pass (with its P&L) gives the same again
    revalued.clear()
    again = stress_scenarios(hedged, lib.scenarios, beta, None, **kw, reuse=book)
    assert again.spot_log_shock.tobytes() == scratch.spot_log_shock.tobytes()
    assert again.name_log_vol_move.tobytes() == scratch.name_log_vol_move.tobytes()
    # the book itself: nothing revalued
    revalued.clear()
    same = stress_scenarios(p, lib.scenarios, beta, None, **kw, reuse=replace(block, first_pass=read))
    assert revalued == []
    assert same.spot_log_shock.tobytes() == book.spot_log_shock.tobytes()
    assert same.name_log_vol_move.tobytes() == book.name_log_vol_move.tobytes()


def test_a_stored_pass_of_other_inputs_is_not_reused() -> None:
    """Other residual sds, vol betas, engine, rule, scenario, position or spot give another digest: no stored pass
    (the hedged book is then searched from scratch); so do arrays of another shape or picks out of range, and no
    idiosyncratic move."""
    lib, p, beta, vol_beta, kw = _american_book()
    digest, loss, pick = _read_back(_stress_step_pass(p, beta, kw))
    items = lib.scenarios
    assert stored_first_pass(p, items, beta, None, digest, loss, pick, **kw) is not None
    other = [
        (p, items, {**kw, "idio_spot_sd": kw["idio_spot_sd"] * 1.5}),
        (p, items, {**kw, "idio_vol_sd": kw["idio_vol_sd"] * (1 + 1e-15)}),
        (p, items, {**kw, "vol_betas": vol_beta + 0.01}),
        (p, items, {**kw, "american": "eep_grid"}),
        (p, items, {**kw, "vol_rule": replace(lib.vol_rule, term_exponent=lib.vol_rule.term_exponent + 1e-12)}),
        (p, (replace(items[0], rate_shift=items[0].rate_shift + 1e-4), *items[1:]), kw),
        (replace(p, quantity=p.quantity * np.array([1, 1, 1, 1, 1, 1, 0.5])), items, kw),
        (replace(p, spot=p.spot * (1 + 1e-15)), items, kw),
        (replace(p, implied_vol=p.implied_vol + np.eye(p.n_positions)[4] * 1e-9), items, kw),
    ]
    for i, (q, scen, k) in enumerate(other):
        assert stored_first_pass(q, scen, beta, None, digest, loss, pick, **k) is None, i
    assert stored_first_pass(p, items, beta * 1.01, None, digest, loss, pick, **kw) is None  # the spot shocks move
    assert stored_first_pass(p, items, beta, None, digest, loss[:, :-1], pick[:, :-1], **kw) is None
    assert stored_first_pass(p, items, beta, None, digest, loss, np.where(pick == 0, 4, pick), **kw) is None
    no_idio = {**kw, "idio_spot_sd": None, "idio_vol_sd": None}
    assert stored_first_pass(p, items, beta, None, digest, loss, pick, **no_idio) is None
    flat = {**kw, "vol_rule": replace(lib.vol_rule, kind="flat_multiplier")}
    assert stored_first_pass(p, items, beta, None, digest, loss, pick, **flat) is None


def test_the_hedged_search_falls_back_to_a_full_search_when_the_stored_pass_does_not_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stored pass of the book whose inputs are not the hedged book's (``FirstPass`` of other residual sds): the
    hedged book is searched in full, with the shocks of a search from scratch."""
    lib, p, beta, _, kw = _american_book()
    digest, loss, pick = _read_back(_stress_step_pass(p, beta, kw))
    read = stored_first_pass(p, lib.scenarios, beta, None, digest, loss, pick, **kw)
    assert read is not None
    block = RuleScenarios(
        np.zeros((len(lib.scenarios), p.n_symbols)),
        np.zeros((len(lib.scenarios), p.n_symbols)),
        *(np.zeros(len(lib.scenarios)) for _ in range(4)),
        rule=lib.vol_rule,
        first_pass=read,
    )
    hedged = combine(p, _hedge_lines(p.symbols, p.spot))
    other = {**kw, "idio_spot_sd": kw["idio_spot_sd"] * 1.5}
    scratch = stress_scenarios(hedged, lib.scenarios, beta, None, **other)
    revalued = _count_revaluations(monkeypatch)
    got = stress_scenarios(hedged, lib.scenarios, beta, None, **other, reuse=block)
    assert revalued == [hedged.n_positions]
    assert got.spot_log_shock.tobytes() == scratch.spot_log_shock.tobytes()
    assert got.name_log_vol_move.tobytes() == scratch.name_log_vol_move.tobytes()


def test_the_stored_column_round_trips_every_bit() -> None:
    """``first_pass_json`` / ``parse_first_pass``: the float64 bytes exactly (signed zeros, NaN, infinities,
    subnormals), the picks, one digest; rows missing or of other digests or widths are not read."""
    _, p, beta, _, kw = _american_book()
    first = _stress_step_pass(p, beta, kw)
    n = first.loss.shape[0]
    odd = np.array([-0.0, np.nan, np.inf, -np.inf, 5e-324, 1.0 / 3.0, -1e308], dtype=np.float64)
    loss = np.resize(odd, first.loss.shape)
    pick = np.resize(np.arange(4), first.pick.shape)
    f = replace(first, loss=loss, pick=pick)
    texts = first_pass_json(f)
    assert len(texts) == n
    digest, got_loss, got_pick = parse_first_pass(texts) or ("", np.zeros(0), np.zeros(0))
    assert digest == first.digest()
    assert got_loss.tobytes() == loss.tobytes() and got_loss.flags.c_contiguous
    np.testing.assert_array_equal(got_pick, pick)
    assert parse_first_pass([*texts[:-1], None]) is None
    assert parse_first_pass([]) is None
    doc = json.loads(texts[0])
    assert parse_first_pass([json.dumps({**doc, "digest": "0" * 64}), *texts[1:]]) is None
    assert parse_first_pass([json.dumps({**doc, "pick": doc["pick"][:-1]}), *texts[1:]]) is None
