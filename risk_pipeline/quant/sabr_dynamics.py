"""SABR smile dynamics under a spot move: the "sticky-model" alternative to sticky strike and sticky moneyness.

A calibrated SABR slice (``sabr.py``: ``dF = a F^beta dW``, ``da = nu a dZ``, ``dW dZ = rho dt``) says how its
smile moves when the forward moves. Over a short horizon the forward and the vol factor move together::

    E[d a | dF] = nu a rho dW = rho nu dF / F^beta      (dW = dF / (a F^beta))

(the correlated part of Bartlett's 2006 "Hedging under SABR model", Wilmott, whose delta is the derivative of
the option's value along this path). So a relative spot move ``s`` (the forward moves by the same factor, ``F' =
F (1 + s)``) moves ``alpha`` to::

    alpha' = max(alpha + rho nu D, ALPHA_FLOOR_VOL F'^(1 - beta)),
    D = int_F^F' x^-beta dx = (F'^(1-beta) - F^(1-beta)) / (1 - beta)   (ln(1 + s) for beta = 1)

and every strike's vol follows the slice's formula at ``(F', alpha')``, ``beta``, ``rho`` and ``nu`` unchanged:
``shift(K) = sigma(K; F', alpha') - sigma(K; F, alpha)``. With ``rho = 0`` only the backbone moves the smile
(for ``beta = 1`` exactly sticky moneyness: ``sigma'(K) = sigma(K F / F')``); with the negative ``rho`` of an
equity smile the vols rise as spot falls. A position keeps its own market vol plus this shift (``ScenarioSet(...,
vol_shift_abs=shifts, vol_shift_per_position=True)``), as the Heston variant (``heston_stress.py``) does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import FloatArray
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.sabr import FORMULAS
from risk_pipeline.quant.scenario_engine import ScenarioSet
from risk_pipeline.quant.smile_dynamics import checked_moves

#: Smallest shifted alpha, as a lognormal vol (1 %): an up-move with rho < 0 cannot make alpha negative.
ALPHA_FLOOR_VOL = 0.01


@dataclass(frozen=True)
class SabrSlices:
    """SABR slices by row (``sabr_slices`` columns) and each portfolio position's slice (-1: none)."""

    alpha: FloatArray
    beta: FloatArray
    rho: FloatArray
    nu: FloatArray
    forward: FloatArray
    time_years: FloatArray
    formula: tuple[str, ...]
    slice_of_position: np.ndarray


def shifted_alpha(
    alpha: float, beta: float, rho: float, nu: float, forward: ArrayLike, spot_shock: ArrayLike
) -> FloatArray:
    """``alpha'`` of the module docstring for relative moves ``spot_shock`` (> -1) of a forward ``forward``."""
    s = np.asarray(spot_shock, dtype=np.float64)
    if np.any(~(s > -1.0)):
        raise ValueError("spot_shock must be above -1 (relative moves)")
    f = np.asarray(forward, dtype=np.float64)
    moved = f * (1.0 + s)
    b1 = 1.0 - beta
    drift = np.log1p(s) if b1 == 0.0 else (moved**b1 - f**b1) / b1
    return np.maximum(alpha + rho * nu * drift, ALPHA_FLOOR_VOL * moved**b1)


def slice_vol_shifts(
    strike: ArrayLike,
    forward: float,
    time_years: float,
    alpha: float,
    beta: float,
    rho: float,
    nu: float,
    spot_shock: ArrayLike,
    formula: str = "obloj",
) -> FloatArray:
    """Vol shift at each strike (columns) of one slice for each relative move (rows): ``(moves, strikes)``."""
    vol, k, s = _slice_inputs(formula, strike, spot_shock)
    before = vol(k, forward, time_years, alpha, beta, rho, nu)
    moved = forward * (1.0 + s)
    # the formulas broadcast: forward and alpha as columns (one per move), strikes as a row
    after = vol(k, moved, time_years, shifted_alpha(alpha, beta, rho, nu, forward, s), beta, rho, nu)
    return after - before


def sabr_vol_shifts(portfolio: Portfolio, slices: SabrSlices, spot_shock_rel: ArrayLike) -> FloatArray:
    """Absolute vol shift of every position in every scenario, shape ``(scenarios, positions)``.

    ``spot_shock_rel`` is ``(scenarios, symbols)`` (a ``ScenarioSet``'s ``spot_shock_rel``); the forward of a
    slice moves with its underlying. Stocks and options without a slice get 0."""
    return _per_position(portfolio, slices, spot_shock_rel, slice_vol_shifts)


def slice_smile_slide(
    strike: ArrayLike,
    forward: float,
    time_years: float,
    alpha: float,
    beta: float,
    rho: float,
    nu: float,
    spot_shock: ArrayLike,
    formula: str = "obloj",
) -> FloatArray:
    """The backbone's move of the smile relative to its at-the-money vol, ``(moves, strikes)``::

        [sigma(K; F', alpha) - sigma(F'; F', alpha)] - [sigma(K; F, alpha) - sigma(F; F, alpha)]

    ``alpha`` fixed: the level of the at-the-money vol is left to another factor (historical VaR's ATM vol
    change), so only the smile's slide along the strikes under the spot move is added. For ``beta = 1`` this is
    sticky moneyness of the skew around a separately moving ATM vol."""
    vol, k, s = _slice_inputs(formula, strike, spot_shock)
    moved = forward * (1.0 + s)
    before = vol(k, forward, time_years, alpha, beta, rho, nu) - vol(
        np.array([forward]), forward, time_years, alpha, beta, rho, nu
    )
    after = vol(k, moved, time_years, alpha, beta, rho, nu) - vol(moved, moved, time_years, alpha, beta, rho, nu)
    return after - before


def sabr_smile_slide(portfolio: Portfolio, slices: SabrSlices, spot_shock_rel: ArrayLike) -> FloatArray:
    """``slice_smile_slide`` of every position in every scenario, ``(scenarios, positions)``; stocks and options
    without a slice get 0 (as ``sabr_vol_shifts``)."""
    return _per_position(portfolio, slices, spot_shock_rel, slice_smile_slide)


def _slice_inputs(formula: str, strike: ArrayLike, spot_shock: ArrayLike) -> tuple[Any, FloatArray, FloatArray]:
    """The slice's formula, strikes as a row and relative moves (> -1) as a column (the formulas broadcast)."""
    s = np.asarray(spot_shock, dtype=np.float64).reshape(-1, 1)
    if np.any(~(s > -1.0)):
        raise ValueError("spot_shock must be above -1 (relative moves)")
    return FORMULAS[formula], np.asarray(strike, dtype=np.float64).reshape(1, -1), s


def _per_position(portfolio: Portfolio, slices: SabrSlices, spot_shock_rel: ArrayLike, fn: Any) -> FloatArray:
    moves = checked_moves(portfolio, spot_shock_rel)
    out = np.zeros((moves.shape[0], portfolio.quantity.size))
    of = np.asarray(slices.slice_of_position, dtype=np.intp)
    use = portfolio.is_option & (of >= 0)
    for j in np.unique(of[use]):  # one vectorized evaluation per slice (all its positions and scenarios)
        cols = np.flatnonzero(use & (of == j))
        sym = int(portfolio.symbol_index[cols[0]])
        out[:, cols] = fn(
            portfolio.strike[cols],
            float(slices.forward[j]),
            float(slices.time_years[j]),
            float(slices.alpha[j]),
            float(slices.beta[j]),
            float(slices.rho[j]),
            float(slices.nu[j]),
            moves[:, sym],
            slices.formula[j],
        )
    return out


@dataclass(frozen=True)
class SabrBackboneSlide:
    """``smile_dynamics.SmileDynamics`` of the SABR backbone with alpha held (``sabr_smile_slide``)."""

    slices: SabrSlices
    label: str = "SABR backbone around the ATM move"

    def shifts(self, portfolio: Portfolio, scenarios: ScenarioSet) -> FloatArray:
        return sabr_smile_slide(portfolio, self.slices, scenarios.spot_shock_rel)
