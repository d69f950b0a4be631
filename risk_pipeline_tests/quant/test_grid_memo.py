"""The early-exercise grid memo (``scenario_engine.GridMemo``): builds that take an earlier build's boundary ratios and
node values for the Americans whose whole grid input repeats give every grid array of the builds without it, bit for
bit, and those node values are the American engine's early-exercise premiums."""

from __future__ import annotations

import numpy as np
import pytest

import risk_pipeline.quant.regulatory_es as reg
import risk_pipeline.quant.scenario_engine as se
from risk_pipeline.quant.american import american_price
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.scenario_engine import GridMemo, ScenarioSet, grid_memo, prepare
from risk_pipeline.quant.var import MarketHistory
from risk_pipeline_tests.quant.test_grid_runs import _book

GRID_FIELDS = ("grid_mode", "grid_y0", "grid_dy", "grid_v0", "grid_dv", "grid_coef", "grid_bcoef", "grid_step")
GRID_FIELDS += ("grid_dcoef", "grid_dbcoef")


def _sets(rng: np.random.Generator, n_sym: int, n: int = 60) -> list[ScenarioSet]:
    """A set with spot, vol, rate and yield moves; the same set with the first name's spot moves and the second
    name's vol moves changed (their options' grid inputs differ, the first's vol ranges not, the others' repeat);
    the same again without the last name's yield moves (a zero yield step: grids whose node values are not read)."""
    spot = np.expm1(rng.normal(0.0, 0.02, (n, n_sym)))
    scale = np.exp(rng.normal(0.0, 0.05, (n, n_sym)))
    rate = rng.normal(0.0, 0.0008, n)
    div = rng.normal(0.0, 0.0003, (n, n_sym))
    a = ScenarioSet(spot, vol_scale=scale, rate_shift_abs=rate, dividend_shift_abs=div)
    spot_b, scale_b = spot.copy(), scale.copy()
    spot_b[:, 0] *= 1.5
    scale_b[:, 1] = np.exp(rng.normal(0.0, 0.08, n))
    b = ScenarioSet(spot_b, vol_scale=scale_b, rate_shift_abs=rate, dividend_shift_abs=div)
    div_c = div.copy()
    div_c[:, -1] = 0.0
    c = ScenarioSet(spot_b, vol_scale=scale_b, rate_shift_abs=rate, dividend_shift_abs=div_c)
    return [a, b, c, a]


def _assert_same_grids(x: se.PreparedBook, y: se.PreparedBook) -> None:
    for f in GRID_FIELDS:
        gx, gy = np.ascontiguousarray(getattr(x, f)), np.ascontiguousarray(getattr(y, f))
        assert gx.shape == gy.shape and gx.dtype == gy.dtype, f
        assert gx.tobytes() == gy.tobytes(), f  # bits: NaN and -0.0 included


@pytest.mark.parametrize(
    ("builds", "boundaries", "nodes"), [(1, False, True), (2, False, True), (1, True, True), (2, True, False)]
)
def test_memoized_builds_equal_the_builds_on_their_own_bit_for_bit(builds: int, boundaries: bool, nodes: bool) -> None:
    rng = np.random.default_rng(11)
    p = _book(rng, 60)
    sets = _sets(rng, p.n_symbols)
    alone = [prepare(p, 3.0, sc, "eep_grid") for sc in sets]
    memo = GridMemo(builds, boundaries=boundaries, nodes=nodes)
    with grid_memo(memo):
        memoized = [prepare(p, 3.0, sc, "eep_grid") for sc in sets]
    assert se._GRID_MEMO.get() is None  # the memo ends with its block
    for x, y in zip(alone, memoized, strict=True):
        _assert_same_grids(x, y)
    n_am = alone[0].grid_mode.size
    assert memo.looked_up == len(sets) * n_am
    # set b repeats set a for the name it leaves alone, c repeats b but for the last name, the last set (a again)
    # the name b left alone
    if nodes:
        assert 0 < memo.found < (len(sets) - 1) * n_am
    if boundaries:  # also the options of a name whose spot range changed but not its vol range (set b's first name)
        assert memo.found_boundaries > memo.found
    assert 0 < memo.nbytes < 5_000 * builds * n_am


def test_memoized_node_values_are_the_american_engines_premiums() -> None:
    """A node value found in the memo (the base grid of an option of the second build) against the exact engine:
    American minus BSM at that node's spot and vol."""
    rng = np.random.default_rng(5)
    p = _book(rng, 40)
    sets = _sets(rng, p.n_symbols)
    memo = GridMemo(1)
    with grid_memo(memo):
        prepare(p, 1.0, sets[0], "eep_grid")
        book = prepare(p, 1.0, sets[1], "eep_grid")
    kept = memo._kept[-1]
    found = np.flatnonzero((book.grid_mode == 1) & (p.symbol_index[book.option_positions[book.n_euro :]] == 2))
    assert found.size
    for a in found[:3]:
        i = book.n_euro + a
        for l_node, c_node in ((0, 0), (2, 6), (4, 12)):
            vol = book.grid_v0[a] + l_node * book.grid_dv[a]
            y = book.grid_y0[a] + c_node * book.grid_dy[a]
            spot = book.strike[i] * kept.ratio[a, l_node] * np.exp(-book.w[i] * y)
            args = (spot, book.strike[i], book.t[i], vol, book.rate[i], book.div[i], bool(book.call[i]))
            oracle = american_price(*args) - bsm_price(*args, backend="numpy")
            assert kept.vals[0, a, l_node, c_node] == pytest.approx(float(oracle), abs=2e-5 * book.strike[i])


def test_liquidity_adjusted_es_is_the_same_without_the_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    p = _book(rng, 40)
    history = MarketHistory(rng.normal(0.0, 0.015, (120, p.n_symbols)), rng.normal(0.0, 0.03, (120, p.n_symbols)))
    spot_lh, vol_lh = np.array([10, 20, 40]), np.array([20, 40, 60])
    with_memo = reg.liquidity_adjusted_es(p, history, spot_lh, vol_lh)
    made: list[GridMemo] = []
    monkeypatch.setattr(reg, "GridMemo", lambda n, **kw: made.append(GridMemo(n, **kw)) or made[-1])
    again = reg.liquidity_adjusted_es(p, history, spot_lh, vol_lh)
    assert made and made[0].found_boundaries > 0  # later buckets found options of earlier ones
    monkeypatch.setattr(reg, "GridMemo", lambda n, **kw: None)  # grid_memo(None): every build on its own
    alone = reg.liquidity_adjusted_es(p, history, spot_lh, vol_lh)
    for x in (with_memo, again):
        assert x.es_by_horizon.tobytes() == alone.es_by_horizon.tobytes()
        assert (x.es, x.var_base) == (alone.es, alone.var_base)


def test_a_memo_block_is_its_own_threads() -> None:
    """A ``grid_memo`` block in one thread is not seen by another thread's grid builds (a context variable)."""
    import threading

    rng = np.random.default_rng(5)
    p = _book(rng, 20)
    sets = _sets(rng, p.n_symbols)
    memo = GridMemo(2)
    seen: list[object] = []
    with grid_memo(memo):
        prepare(p, 3.0, sets[0], "eep_grid")
        other = threading.Thread(
            target=lambda: seen.append((se._GRID_MEMO.get(), prepare(p, 3.0, sets[0], "eep_grid")))
        )
        other.start()
        other.join()
    assert seen[0][0] is None
    assert memo.looked_up == p.is_american.sum()  # only this thread's build was kept


def test_a_memo_kept_across_overlapping_windows_keeps_the_bits_and_the_exact_engines_es() -> None:
    """``regulatory_es``' book memo: a ``GridMemo`` shared by the ``liquidity_adjusted_es`` calls of two overlapping
    windows and by the 1-day revaluations of a window and of the whole history finds options of the earlier calls,
    and gives the bits of every build on its own; the ES stays within 1e-6 of the book's gross value of the exact
    American engine's."""
    from risk_pipeline.defs.risk.regulatory_es import one_day_pnl

    rng = np.random.default_rng(7)
    p = _book(rng, 40)
    n = 140
    log_ret = rng.normal(0.0, 0.015, (n, p.n_symbols))
    iv = rng.normal(0.0, 0.03, (n, p.n_symbols))
    history = MarketHistory(log_ret, iv)
    current, span = MarketHistory(log_ret[-120:], iv[-120:]), MarketHistory(log_ret[5:125], iv[5:125])
    spot_lh, vol_lh = np.array([10, 20, 40]), np.array([20, 40, 60])
    la_memo, pnl_memo = GridMemo(2, boundaries=True), GridMemo(1, boundaries=True)
    kept = [reg.liquidity_adjusted_es(p, h, spot_lh, vol_lh, memo=la_memo) for h in (current, span)]
    pnl_kept = [one_day_pnl(p, h, pnl_memo) for h in (current, history)]
    assert la_memo.found > 0 and la_memo.found_boundaries > 0 and pnl_memo.found > 0
    alone = [reg.liquidity_adjusted_es(p, h, spot_lh, vol_lh, memo=None) for h in (current, span)]
    pnl_alone = [one_day_pnl(p, h) for h in (current, history)]
    for x, y in zip(kept, alone, strict=True):
        assert x.es_by_horizon.tobytes() == y.es_by_horizon.tobytes()
        assert (x.es, x.var_base) == (y.es, y.var_base)
    for x, y in zip(pnl_kept, pnl_alone, strict=True):
        assert x.tobytes() == y.tobytes()
    gross = float(np.sum(np.abs(p.quantity * p.multiplier * p.spot[p.symbol_index])))
    exact = reg.liquidity_adjusted_es(p, span, spot_lh, vol_lh, american="exact")
    np.testing.assert_allclose(kept[1].es_by_horizon, exact.es_by_horizon, rtol=0.0, atol=1e-6 * gross)
