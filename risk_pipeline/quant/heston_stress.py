"""A "model-consistent" vol shock: the implied-vol surface a calibrated Heston model gives after a spot shock.

Rule-based stress vol shocks (``stress.py``, ``vol_shocks.py``) move implied vols by a rule. Here the move comes
from the calibrated model instead: over a short horizon Heston's variance and log-spot move together,
``E[dv | d ln S] = rho xi d ln S`` (``d ln S ~ sqrt(v) dW``, ``dv ~ xi sqrt(v) dZ``, ``E[dZ | dW] = rho dW``), so a
spot shock ``s`` (relative, -0.2 = down 20 %) shifts the instantaneous variance to::

    v0' = max(v0 + rho xi ln(1 + s), V0_FLOOR) * (1 + extra_vol_shock)^2

(``extra_vol_shock`` an optional relative shock of ``sqrt(v0)`` on top, 0 by default). The shocked surface is
the Black implied vol of Heston prices with ``v0'`` and the shocked spot, the other parameters (kappa, theta, xi,
rho) unchanged, at each option's own strike and expiry: short expiries move more (their vol is mostly ``v0``)
than long ones (mean reversion to ``theta``), and the skew follows from the model.

``heston_vol_shifts`` turns this into the per-position absolute vol shifts of a scenario set (``ScenarioSet(...,
vol_shift_abs=shifts, vol_shift_per_position=True)`` of ``scenario_engine``): each option keeps its market vol
plus the model's change at its strike and expiry (the asset ``stress_model_consistent``).

Where the model has nothing to invert: a (scenario, option) pair whose Heston out-of-the-money price, before or
after the move, is below ``PRICE_FLOOR`` (1e-12) of the forward (a short-dated strike far out of the money after a
large move) gets shift 0, i.e. keeps its market vol, in that scenario only: the option's other scenarios keep their
model shifts. Why 1e-12: the COS prices are accurate to about 1e-14 of the forward (against a reference with tail
mass 1e-30, 30 standard deviations and cf tolerance 1e-20: at most 1.6e-14 off over the 2,709 pairs priced under
1e-8 in the 500-name warehouse's vol_overlay book), so under the floor a price carries 1 % error or more and its
vol grows unreliable: pairs priced in [1e-14, 1e-13) had vols up to 0.57 vol points off the reference's, pairs
under 1e-14 up to 6.5, and a price of exactly 0 (no vol at all) is what made the former rule drop the option in
every scenario; pairs in [1e-12, 1e-11) are within 0.007 vol points. The value such an option's vol carries is nil
either way: on that book the fallback pairs' market-vol and market-vol-plus-raw-shift values at the stressed spot
differ by at most 5.4e-6 USD in a scenario (1.1e-13 of NAV), and a 1e-9 change of the parameters now moves no pair
across the floor (a price crosses it only if it lies within about 1e-9 of it), where the former rule flipped whole
options with the series' rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import FloatArray
from risk_pipeline.quant.heston import HestonParams, heston_implied_vol, heston_price
from risk_pipeline.quant.implied_vol import implied_vol_black76
from risk_pipeline.quant.portfolio import Portfolio

#: Smallest shocked initial variance (1 % vol): an up-move with rho < 0 cannot make v0 negative.
V0_FLOOR = 1e-4
#: Most (scenario, option) prices in one ``heston_price`` call of ``heston_vol_shifts``: the call's COS grid (every
#: distinct slice's coefficients, up to ``heston.MAX_TERMS`` terms each, and their scaled copies) is what takes the
#: memory, not the prices.
SHIFT_BLOCK = 2048
#: Smallest Heston out-of-the-money price, per unit forward, whose implied vol is used (module docstring): about a
#: hundred times the COS prices' absolute accuracy.
PRICE_FLOOR = 1e-12


@dataclass(frozen=True)
class HestonShifts:
    """``heston_vol_shifts_with_fallback``: the shifts, ``(scenarios, positions)``, and which (scenario, position)
    pairs fell back to shift 0 because a Heston price of the option, before or after the move, was under
    ``PRICE_FLOOR`` (or did not invert)."""

    shift: FloatArray
    fallback: np.ndarray


@dataclass(frozen=True)
class ModelConsistentShock:
    """Implied vols before and after a spot shock under one calibrated Heston model, per option."""

    params_before: HestonParams
    params_after: HestonParams
    spot_shock: float
    vol_before: FloatArray
    vol_after: FloatArray

    @property
    def vol_change(self) -> FloatArray:
        """``vol_after - vol_before``, annualized decimal vol (0.01 = one vol point)."""
        return self.vol_after - self.vol_before


def shocked_v0(params: HestonParams, spot_shock: float, extra_vol_shock: float = 0.0) -> float:
    """``v0'`` of the module docstring."""
    if not spot_shock > -1.0:
        raise ValueError(f"spot_shock must be above -1 (a relative move), got {spot_shock}")
    if not extra_vol_shock > -1.0:
        raise ValueError(f"extra_vol_shock must be above -1 (a relative move of sqrt(v0)), got {extra_vol_shock}")
    v = max(params.v0 + params.rho * params.xi * math.log1p(spot_shock), V0_FLOOR)
    return v * (1.0 + extra_vol_shock) ** 2


def model_consistent_vols(
    params: HestonParams,
    spot: float,
    spot_shock: float,
    strike: ArrayLike,
    time_years: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    extra_vol_shock: float = 0.0,
) -> ModelConsistentShock:
    """Heston implied vols of each option (``strike``, ``time_years``) at ``spot`` and after ``spot * (1 +
    spot_shock)`` with the correlated shift of ``v0`` (module docstring); inputs broadcast together."""
    k, t, r, q = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (strike, time_years, rate, dividend_yield))
    )
    after = replace(params, v0=shocked_v0(params, spot_shock, extra_vol_shock))
    carry = (r - q) * t
    before_k = np.log(k / spot) - carry
    after_k = np.log(k / (spot * (1.0 + spot_shock))) - carry
    return ModelConsistentShock(
        params,
        after,
        float(spot_shock),
        heston_implied_vol(params, t, before_k),
        heston_implied_vol(after, t, after_k),
    )


def _otm_price_vol(
    t: FloatArray,
    log_k: FloatArray,
    v0: FloatArray,
    kappa: FloatArray,
    theta: FloatArray,
    xi: FloatArray,
    rho: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """The OTM Heston price at ``ln(K/F)`` per unit forward and its Black vol, per element (parameters per
    element)."""
    call = log_k > 0.0
    price = heston_price(1.0, np.exp(log_k), t, 0.0, 0.0, call, v0, kappa, theta, xi, rho)
    return price, implied_vol_black76(price, 1.0, np.exp(log_k), t, 0.0, call).vol


def _usable(price: FloatArray, vol: FloatArray) -> np.ndarray:
    """Whether a Heston price is at least ``PRICE_FLOOR`` and its vol finite (module docstring)."""
    return (price >= PRICE_FLOOR) & np.isfinite(vol)


def heston_vol_shifts(portfolio: Portfolio, params: ArrayLike, spot_shock_rel: ArrayLike) -> FloatArray:
    """Model-consistent absolute vol shift of every position in every scenario, shape ``(scenarios, positions)``
    (``heston_vol_shifts_with_fallback``'s shifts)."""
    return heston_vol_shifts_with_fallback(portfolio, params, spot_shock_rel).shift


def heston_vol_shifts_with_fallback(portfolio: Portfolio, params: ArrayLike, spot_shock_rel: ArrayLike) -> HestonShifts:
    """Model-consistent absolute vol shift of every position in every scenario, shape ``(scenarios, positions)``,
    and the (scenario, position) pairs that fell back to 0.

    ``params`` has one row ``(v0, kappa, theta, xi, rho)`` per portfolio symbol (a row of NaN: no model, shift
    0); ``spot_shock_rel`` is ``(scenarios, symbols)`` relative spot moves (a ``ScenarioSet``'s
    ``spot_shock_rel``). Stocks and symbols without a model get 0 (not a fallback); every option gets Heston's
    vol at its strike and expiry after the move (``v0`` shifted by ``rho xi ln(1 + s)``, floored) less the vol
    before, except a pair where either Heston price is under ``PRICE_FLOOR`` of its forward or does not invert:
    shift 0, flagged in ``fallback`` (module docstring). Every shift is finite."""
    return heston_vol_shifts_of_books([(portfolio, params, spot_shock_rel)])[0]


def heston_vol_shifts_of_books(books: Sequence[tuple[Portfolio, ArrayLike, ArrayLike]]) -> list[HestonShifts]:
    """``heston_vol_shifts_with_fallback(portfolio, params, spot_shock_rel)`` of each book, computed together: the
    options of every book with the same number of scenarios in one pass, sorted by underlying (its name) and expiry
    and cut into blocks only where an expiry ends, so that a slice's COS grids (before and after each move) are
    built once for all the books and blocks holding it. Each price and vol is its own (the COS grid of its slice,
    elementwise kernels), so every book gets the bits of its own call."""
    checked = []
    for portfolio, params, spot_shock_rel in books:
        p = np.asarray(params, dtype=np.float64).reshape(portfolio.n_symbols, 5)
        moves = np.atleast_2d(np.asarray(spot_shock_rel, dtype=np.float64))
        if moves.shape[1] != portfolio.n_symbols:
            raise ValueError(
                f"spot_shock_rel needs one column per symbol ({portfolio.n_symbols}), got {moves.shape[1]}"
            )
        if np.any(moves <= -1.0):
            raise ValueError("spot_shock_rel must be above -1 (relative moves)")
        checked.append((portfolio, p, moves))
    out = [
        HestonShifts(np.zeros((m.shape[0], pf.quantity.size)), np.zeros((m.shape[0], pf.quantity.size), dtype=bool))
        for pf, _, m in checked
    ]
    for n_scenarios in dict.fromkeys(m.shape[0] for _, _, m in checked):
        group = [k for k, (_, _, m) in enumerate(checked) if m.shape[0] == n_scenarios]
        _shifts_together([checked[k] for k in group], [out[k] for k in group])
    return out


def _shifts_together(books: list[tuple[Portfolio, FloatArray, FloatArray]], out: list[HestonShifts]) -> None:
    """``heston_vol_shifts_of_books`` for books with the same number of scenarios, into ``out`` (zeros)."""
    parts = []  # per book: its options' positions, parameter rows, expiries, log-moneyness and moves (columns)
    for portfolio, p, moves in books:
        sym = portfolio.symbol_index
        use = np.flatnonzero(portfolio.is_option & np.isfinite(p[sym]).all(axis=1) & (portfolio.time_years > 0.0))
        t = portfolio.time_years[use]
        carry = (portfolio.rate[use] - portfolio.dividend_yield[use]) * t
        log_k = np.log(portfolio.strike[use] / portfolio.spot[sym[use]]) - carry
        names = np.asarray(portfolio.symbols, dtype=object)[sym[use]]
        parts.append((use, p[sym[use]], t, log_k, moves[:, sym[use]], names))
    book_of = np.concatenate([np.full(x[0].size, k, dtype=np.intp) for k, x in enumerate(parts)])
    n_use = book_of.size
    if n_use == 0:
        return
    position = np.concatenate([x[0] for x in parts])
    q_all, t_all, lk_all = (np.concatenate([x[f] for x in parts]) for f in (1, 2, 3))
    moves_all = np.concatenate([x[4] for x in parts], axis=1)
    _, name_code = np.unique(np.concatenate([x[5] for x in parts]).astype(str), return_inverse=True)
    # the options of one underlying and expiry side by side, so that a block of them shares its slices' COS grids
    order = np.lexsort((t_all, name_code.reshape(-1)))
    q, t, log_k, moves = q_all[order], t_all[order], lk_all[order], np.ascontiguousarray(moves_all[:, order])
    code = name_code.reshape(-1)[order]
    # where an (underlying, expiry) starts: a block ends only there (its slices' grids not built in two blocks)
    starts = np.flatnonzero(np.concatenate([[True], (code[1:] != code[:-1]) | (t[1:] != t[:-1])]))
    shift = np.zeros((moves.shape[0], n_use))
    fallback = np.zeros(shift.shape, dtype=bool)
    # a block of options in every scenario at a time: each price is its own (its slice's COS grid, an elementwise
    # kernel), so the same numbers as one call over the whole book, with one block's grids held instead of all
    width = max(1, SHIFT_BLOCK // max(1, moves.shape[0]))
    a = 0
    while a < n_use:
        at = int(np.searchsorted(starts, a + width))
        b = int(starts[at]) if at < starts.size else n_use
        qb, tb = q[a:b], t[a:b]
        before_price, before = _otm_price_vol(tb, log_k[a:b], *qb.T)
        s = moves[:, a:b]  # (scenarios, options of the block)
        v0_after = np.maximum(qb[:, 0] + qb[:, 4] * qb[:, 3] * np.log1p(s), V0_FLOOR)
        log_k_after = log_k[a:b][None, :] - np.log1p(s)
        shape = s.shape
        # an option's Heston vol after a move depends on the move only through (ln(K/F'), v0'): a pair whose two are
        # the bits of the option's before (a scenario that leaves its spot alone) takes its before vol, and pairs of
        # one option with the same two bits (scenarios moving its spot alike) one price; the rest priced as before,
        # each price being its own (``_otm_price_vol`` element by element), so every vol keeps its bits
        new, first, inverse = _distinct_pairs(log_k_after, v0_after, log_k[a:b], qb[:, 0])
        after = np.broadcast_to(before, shape).ravel()  # a copy
        usable = np.broadcast_to(_usable(before_price, before), shape).ravel()  # a copy
        if first.size:
            col = first % shape[1]
            price, priced = _otm_price_vol(
                tb[col], log_k_after.ravel()[first], v0_after.ravel()[first], *(qb[col, i] for i in (1, 2, 3, 4))
            )
            after[new] = priced[inverse[new]]
            usable[new] &= _usable(price, priced)[inverse[new]]
        usable = usable.reshape(shape)
        shift[:, a:b] = np.where(usable, after.reshape(shape) - before[None, :], 0.0)
        fallback[:, a:b] = ~usable
        a = b
    for k, res in enumerate(out):
        mine = np.flatnonzero(book_of[order] == k)
        res.shift[:, position[order][mine]] = shift[:, mine]
        res.fallback[:, position[order][mine]] = fallback[:, mine]


def _distinct_pairs(
    log_k_after: FloatArray, v0_after: FloatArray, log_k: FloatArray, v0: FloatArray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the (scenario, option) pairs of ``heston_vol_shifts``' block (raveled, scenario-major): whether the pair's
    ``(ln(K/F'), v0')`` differ in their bits from the option's before ``(ln(K/F), v0)``, the first pair of each
    distinct (option, ``ln(K/F')``, ``v0'``) among those that do, and each pair's index into those (0 for the
    others)."""
    n_opt = log_k.size
    lk, v = log_k_after.view(np.int64), v0_after.view(np.int64)
    new = ((lk != log_k.view(np.int64)[None, :]) | (v != v0.view(np.int64)[None, :])).ravel()
    pairs = np.flatnonzero(new)
    inverse = np.zeros(new.size, dtype=np.intp)
    if not pairs.size:
        return new, pairs, inverse
    key = np.column_stack([pairs % n_opt, lk.ravel()[pairs], v.ravel()[pairs]])
    rows = np.ascontiguousarray(key).view(np.dtype((np.void, 24))).reshape(-1)
    _, first, inv = np.unique(rows, return_index=True, return_inverse=True)
    inverse[pairs] = inv.reshape(-1)
    return new, pairs[first], inverse
