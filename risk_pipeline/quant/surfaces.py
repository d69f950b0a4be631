"""One underlying's volatility surface from its implied vols: SVI slices, arbitrage checks, grid.

Input quotes are out-of-the-money options (puts below the forward, calls at and above it) with a
valid implied vol. Each expiry is fitted with raw SVI (``svi.fit_svi_slice``) in total variance,
weighted by Black vega (quotes whose price barely moves with vol say little about vol); the
slices form an ``SviSurface`` interpolated linearly in total variance between expiries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from risk_pipeline.quant.svi import CalendarCheck, SurfaceGrid, SviFit, SviSurface, fit_svi_slice, svi_total_variance

FloatArray = NDArray[np.float64]

#: Log-moneyness grid of ``vol_surface_grid``: ln(K/F) from -0.6 to 0.6 in steps of 0.05.
DEFAULT_GRID = np.round(np.linspace(-0.6, 0.6, 25), 10)


@dataclass(frozen=True, eq=False)
class UnderlyingSurface:
    """Fitted slices (sorted by expiry), their labels, quoted ranges, calendar checks and grid.

    ``calendar`` checks total variance non-decreasing in expiry on the whole stored grid
    (extrapolated wings included); ``calendar_quoted`` checks each adjacent pair only where both
    slices have quotes (``quoted_range``), the region where a violation is a market arbitrage
    rather than an extrapolation choice.
    """

    expiry_labels: tuple[object, ...]
    fits: tuple[SviFit, ...]
    quoted_range: tuple[tuple[float, float], ...]
    calendar: CalendarCheck
    calendar_quoted: tuple[bool, ...]
    grid: SurfaceGrid


def calendar_on_quoted_overlap(
    surface: SviSurface, quoted_range: tuple[tuple[float, float], ...], points: int = 101, tolerance: float = 1e-9
) -> tuple[bool, ...]:
    """Per slice: no calendar arbitrage with either neighbour where both slices are quoted."""
    n = len(surface.slices)
    ok = [True] * n
    for i in range(n - 1):
        lo = max(quoted_range[i][0], quoted_range[i + 1][0])
        hi = min(quoted_range[i][1], quoted_range[i + 1][1])
        if hi < lo:
            continue
        k = np.linspace(lo, hi, points)
        excess = svi_total_variance(surface.slices[i], k) - svi_total_variance(surface.slices[i + 1], k)
        if np.any(excess > tolerance):
            ok[i] = ok[i + 1] = False
    return tuple(ok)


def otm_mask(strike: ArrayLike, forward: ArrayLike, is_call: ArrayLike) -> NDArray[np.bool_]:
    """Out-of-the-money quotes: puts with K < F, calls with K >= F."""
    k = np.asarray(strike, dtype=float)
    f = np.asarray(forward, dtype=float)
    c = np.asarray(is_call, dtype=bool)
    return np.where(c, k >= f, k < f)


def black_vega_weight(log_moneyness: ArrayLike, total_variance: ArrayLike) -> FloatArray:
    """Undiscounted Black vega per unit forward, ``phi(d1) sqrt(t)`` up to the common sqrt(t): phi(d1)."""
    k = np.asarray(log_moneyness, dtype=float)
    w = np.maximum(np.asarray(total_variance, dtype=float), 1e-12)
    d1 = -k / np.sqrt(w) + 0.5 * np.sqrt(w)
    return np.exp(-0.5 * d1 * d1) / np.sqrt(2.0 * np.pi)


def fit_underlying(
    expiry_label: ArrayLike,
    time_years: ArrayLike,
    log_moneyness: ArrayLike,
    implied_vol: ArrayLike,
    grid: ArrayLike = DEFAULT_GRID,
) -> UnderlyingSurface:
    """Fit every expiry of one underlying; quotes with the same label share ``time_years``."""
    labels = np.asarray(expiry_label, dtype=object)
    t = np.asarray(time_years, dtype=float)
    k = np.asarray(log_moneyness, dtype=float)
    iv = np.asarray(implied_vol, dtype=float)
    ok = np.isfinite(t) & (t > 0) & np.isfinite(k) & np.isfinite(iv) & (iv > 0)
    fits: list[tuple[float, object, SviFit, tuple[float, float]]] = []
    for label in sorted(set(labels[ok].tolist()), key=str):
        sel = ok & (labels == label)
        t_slice = float(t[sel][0])
        w = iv[sel] ** 2 * t_slice
        fit = fit_svi_slice(k[sel], w, black_vega_weight(k[sel], w), t_slice)
        fits.append((t_slice, label, fit, (float(k[sel].min()), float(k[sel].max()))))
    if not fits:
        raise ValueError("no valid quotes to fit a surface")
    fits.sort(key=lambda x: x[0])
    surface = SviSurface(tuple(f[2] for f in fits))
    quoted = tuple(f[3] for f in fits)
    return UnderlyingSurface(
        expiry_labels=tuple(f[1] for f in fits),
        fits=surface.slices,
        quoted_range=quoted,
        calendar=surface.calendar_check(grid),
        calendar_quoted=calendar_on_quoted_overlap(surface, quoted),
        grid=surface.grid(grid),
    )
