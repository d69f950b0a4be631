"""How an option's implied vol moves with its underlying in a VaR scenario, beyond the ATM vol move.

Historical VaR moves every option of an underlying by the relative change of its ATM vol (``vol_scale``); by
itself that is *sticky strike*: the smile stays where it is in strike. A smile dynamic adds a per-position
absolute shift (``ScenarioSet(vol_shift_abs=..., vol_shift_per_position=True)``) for the scenario's spot move:

* *sticky moneyness* (``StickyMoneyness``): the smile is fixed in log-moneyness ``k = ln(K / F)`` and the forward
  moves with spot, ``F' = F (1 + s)``, so an option's vol is read at ``k' = k - ln(1 + s)`` of its own SVI slice
  (``vol_surface``): ``shift = sigma_SVI(k') - sigma_SVI(k)``. The ATM vol is unchanged by it, so the level is
  still the ATM factor's;
* the SABR backbone (``sabr_dynamics.SabrBackboneSlide``): the smile slides along its SABR slice's backbone
  with alpha held, measured against the slice's own ATM vol (the "sticky-model" dynamic).

and the term structure of the ATM move (``ExpiryScaledVolMoves``): the scenario's 30-day ATM log-vol move
``ln c`` applies to an option of ``tau`` days as ``ln c * (30 / max(tau, 7))^alpha`` (the stress layer's expiry
rule, ``vol_shocks.expiry_factor``, alpha fitted on ``atm_vol_history``'s near and far expiries), so short-dated
vols move more than the 30-day one and long-dated less: shift ``sigma (c^g - c)`` on top of the scenario's
``sigma c``.

Each is a ``SmileDynamics``: a ``label`` and ``shifts(portfolio, scenarios) -> (scenarios, positions)`` (0 for
stocks and options they do not cover); shifts of several add up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import FloatArray
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import RowVolShifts, ScenarioSet
from risk_pipeline.quant.vol_shocks import VolShockRule, expiry_factor


class SmileDynamics(Protocol):
    """A smile dynamic for historical VaR (module docstring)."""

    @property
    def label(self) -> str: ...

    def shifts(self, portfolio: Portfolio, scenarios: ScenarioSet) -> FloatArray: ...


#: Scenario rows x positions of one block of ``summed_shifts`` (each temporary of a dynamic's ``shifts`` is at most
#: this many floats, 32 MB).
SHIFT_BLOCK_CELLS = 4_000_000


def summed_shifts(
    dynamics: Sequence[SmileDynamics], portfolio: Portfolio, scenarios: ScenarioSet, block_cells: int | None = None
) -> FloatArray:
    """The sum of every dynamic's ``shifts`` (in the order given), ``(scenarios, positions)``.

    Every dynamic's shift of a scenario depends on that scenario's row only, so the rows are taken in blocks of
    at most ``block_cells`` (default ``SHIFT_BLOCK_CELLS``) rows x positions: the same numbers as summing the
    whole-set arrays, bit for bit, while only the result and one block's temporaries are held (the gap VaR of a
    5,000-position book sums 50,000 scenarios' shifts: 1.9 GB per whole-set array, several at once).
    """
    if not dynamics:
        raise ValueError("summed_shifts needs at least one dynamic")
    n, n_pos = scenarios.n_scenarios, portfolio.quantity.size
    rows = max(1, (block_cells or SHIFT_BLOCK_CELLS) // max(1, n_pos))
    out = np.empty((n, n_pos))
    for start in range(0, n, rows):
        part = scenarios.take(start, min(start + rows, n))
        total = dynamics[0].shifts(portfolio, part)
        for d in dynamics[1:]:
            total = total + d.shifts(portfolio, part)
        out[start : start + part.n_scenarios] = total
    return out


@dataclass(frozen=True, eq=False)
class SummedShiftRows:
    """``summed_shifts`` of rows ``start:stop`` of ``scenarios``: the ``make`` of a ``scenario_engine.RowVolShifts``
    (``summed_shift_rows``)."""

    dynamics: tuple[SmileDynamics, ...]
    portfolio: Portfolio
    scenarios: ScenarioSet
    block_cells: int | None = None

    def __call__(self, start: int, stop: int) -> FloatArray:
        return summed_shifts(self.dynamics, self.portfolio, self.scenarios.take(start, stop), self.block_cells)


def summed_shift_rows(
    dynamics: Sequence[SmileDynamics], portfolio: Portfolio, scenarios: ScenarioSet, block_cells: int | None = None
) -> RowVolShifts:
    """``summed_shifts(dynamics, portfolio, scenarios)`` as ``RowVolShifts``: the scenario engine makes each chunk's
    rows when it needs them (the early-exercise grid's range scan, then each evaluation chunk), so the whole-set
    ``(scenarios, positions)`` array is never held. Every dynamic's shift of a scenario depends on its own row
    only, so the engine sees the numbers of the whole-set sum, bit for bit; each row is made twice."""
    if not dynamics:
        raise ValueError("summed_shift_rows needs at least one dynamic")
    return RowVolShifts(SummedShiftRows(tuple(dynamics), portfolio, scenarios, block_cells), portfolio.quantity.size)


def checked_moves(portfolio: Portfolio, spot_shock_rel: ArrayLike) -> FloatArray:
    """``spot_shock_rel`` as a ``(scenarios, symbols)`` array, validated."""
    moves = np.atleast_2d(np.asarray(spot_shock_rel, dtype=np.float64))
    if moves.shape[1] != portfolio.n_symbols:
        raise ValueError(f"spot_shock_rel needs one column per symbol ({portfolio.n_symbols}), got {moves.shape[1]}")
    if np.any(moves <= -1.0):
        raise ValueError("spot_shock_rel must be above -1 (relative moves)")
    return moves


@dataclass(frozen=True)
class SviSlices:
    """Raw-SVI slices by row (``vol_surface`` columns) and each portfolio position's slice (-1: none)."""

    a: FloatArray
    b: FloatArray
    rho: FloatArray
    m: FloatArray
    sigma: FloatArray
    forward: FloatArray
    time_years: FloatArray
    slice_of_position: np.ndarray


@dataclass(frozen=True)
class StickyMoneyness:
    """The smile fixed in ``ln(K / F)`` while the forward moves with spot (module docstring)."""

    slices: SviSlices
    label: str = "sticky moneyness (each option's SVI slice)"

    def shifts(self, portfolio: Portfolio, scenarios: ScenarioSet) -> FloatArray:
        moves = checked_moves(portfolio, scenarios.spot_shock_rel)
        out = np.zeros((moves.shape[0], portfolio.quantity.size))
        of = np.asarray(self.slices.slice_of_position, dtype=np.intp)
        cols = np.flatnonzero(portfolio.is_option & (of >= 0))
        if cols.size == 0:
            return out
        j = of[cols]
        sl = self.slices
        a, b, rho, m, sig, t = (
            np.asarray(x, dtype=np.float64)[j] for x in (sl.a, sl.b, sl.rho, sl.m, sl.sigma, sl.time_years)
        )
        k = np.log(portfolio.strike[cols] / np.asarray(sl.forward, dtype=np.float64)[j])
        k_moved = k[None, :] - np.log1p(moves[:, portfolio.symbol_index[cols]])

        def vol(x: FloatArray) -> FloatArray:
            d = x - m
            w = a + b * (rho * d + np.sqrt(d * d + sig * sig))
            if np.any(w < 0.0):
                bad = int(np.flatnonzero((w < 0.0).reshape(-1, cols.size).any(axis=0))[0])
                raise ValueError(f"SVI slice {int(j[bad])} has negative total variance at a scenario's moneyness")
            return np.sqrt(w / t)

        out[:, cols] = vol(k_moved) - vol(k)[None, :]
        return out


@dataclass(frozen=True)
class ExpiryScaledVolMoves:
    """The ATM move scaled by expiry, ``(30 / max(tau, 7))^alpha`` of ``rule`` (module docstring)."""

    rule: VolShockRule

    @property
    def label(self) -> str:
        return f"ATM vol move x ({self.rule.reference_tenor_days:g}/tau)^{self.rule.term_exponent:.3f}"

    def shifts(self, portfolio: Portfolio, scenarios: ScenarioSet) -> FloatArray:
        checked_moves(portfolio, scenarios.spot_shock_rel)
        out = np.zeros((scenarios.n_scenarios, portfolio.quantity.size))
        if scenarios.vol_scale is None:
            return out
        cols = np.flatnonzero(portfolio.is_option & (portfolio.time_years > 0.0))
        if cols.size == 0:
            return out
        c = scenarios.vol_scale[:, portfolio.symbol_index[cols]]
        g = expiry_factor(portfolio.time_years[cols], self.rule)[None, :]
        out[:, cols] = portfolio.implied_vol[cols][None, :] * (np.power(c, g) - c)
        return out


#: The crush never takes an option's vol below this fraction of its vol before the event.
CRUSH_FLOOR_FRACTION = 0.5


@dataclass(frozen=True)
class EarningsVolCrush:
    """The post-earnings implied-vol crush in an earnings gap scenario.

    An option of ``tau`` years on the reporting name whose expiry is after the reaction session holds the
    event's variance ``e`` in its total variance; once the name has reacted it is gone::

        sigma' = sqrt(max(sigma^2 tau - e, (CRUSH_FLOOR_FRACTION sigma)^2 tau) / tau)

    (options expiring before the reaction keep their vol). ``e`` is the mean squared log move of the name's
    past earnings reactions: a realized proxy of the variance the market prices in (the quoted implied move is
    usually a little larger, so this understates the crush slightly). Applied to every scenario of the event's
    gap set, since each of them contains the event; ``symbol`` is the name's index in the portfolio.
    """

    symbol: int
    event_variance: float
    years_to_reaction: float
    event_id: str = ""

    @property
    def label(self) -> str:
        return f"post-earnings vol crush {self.event_id} (event variance {self.event_variance:.3g})"

    def shifts(self, portfolio: Portfolio, scenarios: ScenarioSet) -> FloatArray:
        checked_moves(portfolio, scenarios.spot_shock_rel)
        if not (self.event_variance >= 0.0 and np.isfinite(self.event_variance)):
            raise ValueError(f"{self.event_id}: event variance must be finite and non-negative")
        tau = portfolio.time_years
        sigma = portfolio.implied_vol
        hit = portfolio.is_option & (portfolio.symbol_index == self.symbol) & (tau > self.years_to_reaction)
        shift = np.zeros(portfolio.quantity.size)
        total = sigma[hit] ** 2 * tau[hit]
        left = np.maximum(total - self.event_variance, (CRUSH_FLOOR_FRACTION * sigma[hit]) ** 2 * tau[hit])
        shift[hit] = np.sqrt(left / tau[hit]) - sigma[hit]
        return np.broadcast_to(shift, (scenarios.n_scenarios, shift.size)).copy()


def earnings_vol_crush(
    portfolio: Portfolio, symbol: str, past_moves: ArrayLike, years_to_reaction: float, event_id: str = ""
) -> EarningsVolCrush | None:
    """The crush of ``symbol``'s earnings: event variance = mean squared log move of its past reactions (simple
    returns ``past_moves``); None without past moves or when the book does not hold the name."""
    m = np.asarray(past_moves, dtype=np.float64).reshape(-1)
    if m.size == 0 or symbol not in portfolio.symbols:
        return None
    return EarningsVolCrush(
        symbol=int(portfolio.symbol_position([symbol])[0]),
        event_variance=float(np.mean(np.log1p(m) ** 2)),
        years_to_reaction=float(years_to_reaction),
        event_id=event_id,
    )
