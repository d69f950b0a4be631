"""Hypothetical P&L of a static book repriced off each day's stored implied-vol surface.

The static-book backtest (``book_backtest``) moves every option's vol by its underlying's 30-day ATM
vol ratio, the VaR's own factor mapping, so a wrong mapping is in the VaR and in the P&L alike and the
backtest cannot see it. This module prices the same carried-back book off the market's smile instead:

* the stored surface of a day is a standardized grid per underlying (``smile_history``): at constant
  maturities ``T_j`` the vols at the forward, at the 25 % forward-delta put and at the 25 % forward-delta
  call strike. In standardized log-moneyness ``x = ln(K / F) / sqrt(T)`` those strikes sit at
  ``x_put = s_p (s_p / 2 - z) / sqrt(T)`` and ``x_call = s_c (z + s_c / 2) / sqrt(T)`` with
  ``s = vol sqrt(T)`` and ``z = N^-1(0.75)``;
* a slice's vol at ``x`` is the quadratic in ``x`` through its three points; beyond the 25-delta strikes
  the variance ``vol^2`` is linear in ``x`` with the quadratic's slope at the wing point (not falling
  away from the money, and at most Lee's moment bound ``|dw/dk| <= 2``); between maturities the total
  variance ``vol^2 T`` at the same ``x`` is linear in ``T``; before the first and after the last maturity
  the vol at the same ``x`` is that slice's;
* on backtest day ``t`` the book is re-expressed in day ``t``'s market as in ``book_backtest`` (notional,
  moneyness ``K / F`` and time to expiry kept: ``K_t = K S_t / S_T``), every option is priced at day
  ``t``'s surface vol for its strike and expiry, and revalued at the next close, the calendar days
  elapsed and day ``t + 1``'s surface vol for the same strike and the shorter expiry (exact American
  engine where American). Stocks move with the close.

The P&L of a day is NaN when an option's underlying has no surface on ``t`` or ``t + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import FloatArray, IntArray
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import market_values, revalue

#: N^-1(0.75): the standardized distance of the 25 % forward-delta strikes.
Z_25_DELTA = 0.6744897501960817


@dataclass(frozen=True, eq=False)
class SmileGrid:
    """Standardized vols per point and maturity: ``atm``, ``put_25d`` and ``call_25d`` are ``(..., n_tenors)``.

    ``tenor_years`` is ``(n_tenors,)``, increasing. NaN marks a missing slice.
    """

    tenor_years: FloatArray
    atm: FloatArray
    put_25d: FloatArray
    call_25d: FloatArray

    def __post_init__(self) -> None:
        t = np.asarray(self.tenor_years, dtype=np.float64)
        if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0.0) or t[0] <= 0.0:
            raise ValueError("tenor_years must be positive and increasing")
        shapes = {np.shape(self.atm), np.shape(self.put_25d), np.shape(self.call_25d)}
        if len(shapes) != 1 or np.shape(self.atm)[-1] != t.size:
            raise ValueError("atm, put_25d and call_25d need the same shape, the last axis one entry per tenor")


def _slice_vol(x: FloatArray, sqrt_t: FloatArray, atm: FloatArray, put: FloatArray, call: FloatArray) -> FloatArray:
    """Vol of one maturity at standardized log-moneyness ``x`` (module docstring), elementwise."""
    xp = put * (0.5 * put * sqrt_t - Z_25_DELTA)
    xc = call * (Z_25_DELTA + 0.5 * call * sqrt_t)
    xx = np.clip(x, xp, xc)
    # Lagrange quadratic through (xp, put), (0, atm), (xc, call), and its slope at the wing points
    c_put = 1.0 / (xp * (xp - xc))
    c_atm = 1.0 / (xp * xc)
    c_call = 1.0 / (xc * (xc - xp))
    vol = put * xx * (xx - xc) * c_put + atm * (xx - xp) * (xx - xc) * c_atm + call * xx * (xx - xp) * c_call
    edge = np.where(x < xp, xp, xc)
    slope = put * (2.0 * edge - xc) * c_put + atm * (2.0 * edge - xp - xc) * c_atm + call * (2.0 * edge - xp) * c_call
    # beyond the wing points: variance linear in x with the quadratic's slope there, never falling away from
    # the money and at most Lee's bound |dw/dk| <= 2 (dw/dk = d(vol^2)/dx sqrt(T))
    edge_vol = np.where(x < xp, put, call)
    dvar = 2.0 * edge_vol * slope
    cap = 2.0 / sqrt_t
    dvar = np.where(x < xp, np.clip(dvar, -cap, 0.0), np.clip(dvar, 0.0, cap))
    wing = np.sqrt(edge_vol**2 + dvar * (x - edge))
    return np.where((x < xp) | (x > xc), wing, vol)


def smile_vol(grid: SmileGrid, log_moneyness: ArrayLike, time_years: ArrayLike) -> FloatArray:
    """Vol at ``ln(K / F)`` and ``time_years`` (arrays broadcast to ``grid.atm.shape[:-1]``), module docstring."""
    tenors = np.asarray(grid.tenor_years, dtype=np.float64)
    lead = np.shape(grid.atm)[:-1]
    k = np.broadcast_to(np.asarray(log_moneyness, dtype=np.float64), lead)
    tau = np.broadcast_to(np.maximum(np.asarray(time_years, dtype=np.float64), 1e-8), lead)
    x = k / np.sqrt(tau)
    j = np.clip(np.searchsorted(tenors, tau, side="right") - 1, 0, tenors.size - 1)
    j1 = np.minimum(j + 1, tenors.size - 1)
    atm, put, call = (np.asarray(a, dtype=np.float64) for a in (grid.atm, grid.put_25d, grid.call_25d))

    def at(idx: IntArray) -> FloatArray:
        pick = idx[..., None]
        sl = [np.take_along_axis(a, pick, axis=-1)[..., 0] for a in (atm, put, call)]
        return _slice_vol(x, np.sqrt(tenors[idx]), *sl)

    v0, v1 = at(j), at(j1)
    t0, t1 = tenors[j], tenors[j1]
    inside = (tau > t0) & (j1 > j)
    weight = np.where(inside, (tau - t0) / np.where(inside, t1 - t0, 1.0), 0.0)
    w = (1.0 - weight) * v0**2 * t0 + weight * v1**2 * t1
    interpolated = np.sqrt(np.maximum(w, 0.0) / tau)
    beyond = tau >= tenors[-1]
    return np.where(inside, interpolated, np.where(beyond, v1, v0))


@dataclass(frozen=True, eq=False)
class SurfaceRepricedPnl:
    """Per backtest day ``t``: the book value at day ``t``'s surface and its P&L to ``t + 1`` (both NaN: no surface)."""

    day_index: IntArray
    book_value: FloatArray
    pnl: FloatArray
    #: Option positions priced per day (0 for a stock-only book)
    n_options: int


def surface_repriced_pnl(
    portfolio: Portfolio,
    closes: ArrayLike,
    grid: SmileGrid,
    calendar_days: ArrayLike,
    days: ArrayLike,
) -> SurfaceRepricedPnl:
    """Hypothetical P&L of the book of the last row of ``closes`` on each backtest day, off the stored surfaces.

    ``closes`` is ``(n_days, n_symbols)`` in the portfolio's symbol order, oldest first, the last row the
    book's own day; ``grid`` holds ``(n_days, n_symbols, n_tenors)`` vols for the same rows;
    ``calendar_days[i]`` is the calendar-day count from row ``i - 1`` to ``i``; every ``t`` in ``days``
    needs ``t + 1 < n_days``. All days are revalued in one engine call per distinct gap.
    """
    c = np.asarray(closes, dtype=np.float64)
    gap = np.asarray(calendar_days, dtype=np.float64)
    t_days = np.asarray(days, dtype=np.intp)
    n, m = c.shape
    if m != portfolio.n_symbols or gap.shape != (n,) or np.shape(grid.atm)[:2] != (n, m):
        raise ValueError("closes (n_days, n_symbols), grid (n_days, n_symbols, n_tenors) and gaps must match")
    if t_days.size and (t_days.min() < 0 or t_days.max() + 1 >= n):
        raise ValueError("every backtest day needs a next day")
    if not np.all(np.isfinite(c) & (c > 0.0)):
        raise ValueError("closes must be positive and finite")
    n_days = t_days.size
    p = portfolio
    npos = p.n_positions
    opt = np.asarray(p.is_option)
    sym = np.asarray(p.symbol_index)
    move = c[t_days][:, sym] / np.asarray(p.spot)[sym]  # (n_days, npos)
    strike = np.where(opt, np.asarray(p.strike) * move, np.asarray(p.strike))
    tau = np.broadcast_to(np.asarray(p.time_years), (n_days, npos))
    carry = np.asarray(p.rate) - np.asarray(p.dividend_yield)
    k_today = np.log(strike / (c[t_days][:, sym] * np.exp(carry * tau)))
    step = gap[t_days + 1][:, None] / 365.0
    tau_next = np.maximum(tau - step, 0.0)
    k_next = np.log(strike / (c[t_days + 1][:, sym] * np.exp(carry * tau_next)))

    def surface(rows: IntArray) -> SmileGrid:
        return SmileGrid(
            grid.tenor_years,
            *(np.asarray(a)[rows[:, None], sym[None, :]] for a in (grid.atm, grid.put_25d, grid.call_25d)),
        )

    vol_t = np.where(opt, smile_vol(surface(t_days), k_today, tau), 0.0)
    vol_next = np.where(opt, smile_vol(surface(t_days + 1), k_next, tau_next), 0.0)
    missing = np.any(opt & ~(np.isfinite(vol_t) & np.isfinite(vol_next)), axis=1)
    per_day = {
        "quantity": np.asarray(p.quantity)[None, :] / move,
        "strike": strike,
        "time_years": np.array(tau),
        "implied_vol": vol_t,
    }
    tiled = ("multiplier", "is_option", "is_call", "rate", "dividend_yield", "is_american")
    shock = c[t_days + 1] / c[t_days] - 1.0  # (n_days, m)
    shift = vol_next - vol_t
    values = np.full(n_days, np.nan)
    pnl = np.full(n_days, np.nan)
    for g in np.unique(gap[t_days + 1]):
        # one stacked book per distinct gap (the engine takes one horizon a call): position (day i, j) sits on
        # the stacked symbol i * m + symbol_index[j] at day i's close
        rows = np.flatnonzero((gap[t_days + 1] == g) & ~missing)  # days without a surface stay NaN
        if rows.size == 0:
            continue
        k = rows.size
        book = replace(
            p,
            symbols=tuple(f"{s}@{i}" for i in rows for s in p.symbols),
            spot=c[t_days[rows]].reshape(-1),
            symbol_index=(np.arange(k)[:, None] * m + sym[None, :]).reshape(-1),
            position_id=tuple(f"{pid}@{i}" for i in rows for pid in (p.position_id or ())),
            **{name: arr[rows].reshape(-1) for name, arr in per_day.items()},
            **{name: np.tile(np.asarray(getattr(p, name)), k) for name in tiled},
        )
        values[rows] = market_values(book).reshape(k, npos).sum(axis=1)
        moved = revalue(
            book,
            shock[rows].reshape(1, -1),
            vol_shift_abs=shift[rows].reshape(1, -1),
            vol_shift_per_position=True,
            horizon_days=float(g),
            per_symbol=True,
            american="exact",
        )
        by_symbol = np.asarray(moved.by_symbol)
        pnl[rows] = by_symbol[0].reshape(k, m).sum(axis=1)
    return SurfaceRepricedPnl(t_days.copy(), values, pnl, int(opt.sum()))
