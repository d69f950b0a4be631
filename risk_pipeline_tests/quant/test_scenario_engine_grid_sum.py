"""``scenario_engine._american_grid_sum``: the American P&L added into the book and per-underlying sums, bit for bit
the in-place additions it documents (each scenario's terms in position order), whatever the block layout."""

import numpy as np
import pytest

from risk_pipeline.quant.scenario_engine import _american_grid_sum


def _oracle(
    values: np.ndarray,
    per_symbol: bool,
    n_euro: int,
    opt_sym: np.ndarray,
    units: np.ndarray,
    base: np.ndarray,
    pnl: np.ndarray,
    sym: np.ndarray,
) -> None:
    """The documented sums, one American at a time in position order: ``v = units (value - base)`` added to the
    scenario's total and, with ``per_symbol``, to its underlying's entry (each entry gets the same IEEE additions in
    the same order as a scenario-by-scenario loop)."""
    for m in range(values.shape[0]):
        i = n_euro + m
        v = units[i] * (values[m] - base[i])
        pnl += v
        if per_symbol:
            sym[:, opt_sym[i]] += v


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.int64)


def _case(rng: np.random.Generator, na: int, n: int, n_sym: int, n_euro: int, specials: bool) -> tuple:
    values = rng.standard_normal((na, n)) * 3.0 + 5.0
    if specials and values.size:
        flat = values.reshape(-1)
        pick = rng.choice(flat.size, size=min(flat.size, 12), replace=False)
        flat[pick] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e-300, 5.0, 0.0, -0.0, 2.5e-310, 7.0][: pick.size]
    # the Americans on some of the underlyings (not all, and not in order), the Europeans anywhere
    on = rng.choice(n_sym, size=max(1, n_sym // 2), replace=False)
    opt_sym = np.concatenate([rng.integers(0, n_sym, n_euro), rng.choice(on, size=na)]).astype(np.int64)
    units = rng.standard_normal(n_euro + na) * 100.0
    units[rng.random(units.size) < 0.1] = 0.0
    base = np.where(np.arange(n_euro + na) >= n_euro, rng.standard_normal(n_euro + na) * 3.0 + 5.0, np.nan)
    base[n_euro:][rng.random(na) < 0.1] = -0.0
    pnl0 = rng.standard_normal(n) * 1e4
    sym0 = rng.standard_normal((n, n_sym)) * 1e3
    if n:
        sym0[0, :] = -0.0
    return values, opt_sym, units, base, pnl0, sym0


@pytest.mark.parametrize(
    ("na", "n", "n_sym", "n_euro"),
    [(1, 1, 1, 0), (7, 31, 5, 2), (40, 32, 9, 0), (40, 33, 9, 3), (300, 257, 60, 11), (0, 50, 4, 2), (5, 0, 3, 1)],
)
@pytest.mark.parametrize("per_symbol", [True, False])
@pytest.mark.parametrize("specials", [False, True])
def test_grid_sum_is_the_in_place_additions_bit_for_bit(
    na: int, n: int, n_sym: int, n_euro: int, per_symbol: bool, specials: bool
) -> None:
    rng = np.random.default_rng(na * 1000 + n + 7 * n_sym + per_symbol + 2 * specials)
    values, opt_sym, units, base, pnl0, sym0 = _case(rng, na, n, n_sym, n_euro, specials)
    want_pnl, got_pnl = pnl0.copy(), pnl0.copy()
    if per_symbol:
        want_sym, got_sym = sym0.copy(), sym0.copy()
    else:
        want_sym, got_sym = np.zeros((1, 1)), np.zeros((1, 1))
    with np.errstate(invalid="ignore", over="ignore"):
        _oracle(values, per_symbol, n_euro, opt_sym, units, base, want_pnl, want_sym)
    _american_grid_sum(values, per_symbol, n_euro, opt_sym, units, base, got_pnl, got_sym)
    np.testing.assert_array_equal(_bits(got_pnl), _bits(want_pnl))
    np.testing.assert_array_equal(_bits(got_sym), _bits(want_sym))
    if per_symbol:
        # the underlyings without an American keep their entries as they were
        untouched = np.setdiff1d(np.arange(n_sym), opt_sym[n_euro:])
        np.testing.assert_array_equal(_bits(got_sym[:, untouched]), _bits(sym0[:, untouched]))


def test_grid_sum_of_one_underlying_equals_the_scalar_loop() -> None:
    """Every American on one underlying: the book's and the underlying's sums are the same chain of additions of a
    scalar loop over the scenarios and options (an oracle with no arrays)."""
    rng = np.random.default_rng(3)
    na, n = 9, 70
    values = rng.standard_normal((na, n))
    opt_sym = np.zeros(na + 1, dtype=np.int64)
    units = rng.standard_normal(na + 1)
    base = rng.standard_normal(na + 1)
    pnl = rng.standard_normal(n)
    sym = rng.standard_normal((n, 2))
    want_pnl, want_sym = pnl.copy(), sym.copy()
    for j in range(n):
        total, own = float(pnl[j]), float(sym[j, 0])
        for m in range(na):
            v = float(units[1 + m]) * (float(values[m, j]) - float(base[1 + m]))
            total += v
            own += v
        want_pnl[j], want_sym[j, 0] = total, own
    _american_grid_sum(values, True, 1, opt_sym, units, base, pnl, sym)
    np.testing.assert_array_equal(_bits(pnl), _bits(want_pnl))
    np.testing.assert_array_equal(_bits(sym), _bits(want_sym))
