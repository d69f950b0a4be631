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
from scipy.optimize import minimize

from risk_pipeline.quant.svi import (
    CalendarCheck,
    SurfaceGrid,
    SviFit,
    SviParams,
    SviSurface,
    butterfly_check,
    butterfly_grid,
    durrleman_g,
    fit_svi_slice,
    svi_implied_vol,
    svi_total_variance,
)

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


#: Dense ln(K/F) points the calendar constraint is imposed on (covers the stored grid).
CALENDAR_POINTS = np.linspace(-0.6, 0.6, 121)
CONSTRAINT_MARGIN = 1e-9
#: A constrained refit is kept only if it costs at most this much fit RMSE (vol points); otherwise
#: the free fit stays and the arbitrage is reported by the flags instead of bought with a bad fit.
MAX_RMSE_INCREASE_VOL_POINTS = 0.5


def _violations(fit: SviFit, lower: SviFit | None) -> bool:
    """Butterfly arbitrage of ``fit`` on its dense grid, or calendar arbitrage below ``lower``."""
    g = durrleman_g(fit, butterfly_grid(fit.time_years))
    if np.min(g) < 0.0:
        return True
    if lower is None:
        return False
    return bool(np.any(svi_total_variance(lower, CALENDAR_POINTS) - svi_total_variance(fit, CALENDAR_POINTS) > 1e-10))


def constrained_refit(
    k: FloatArray, w: FloatArray, weights: FloatArray, fit: SviFit, lower: SviFit | None, upper: SviFit | None = None
) -> SviFit | None:
    """Refit one slice with no butterfly arbitrage and no calendar arbitrage against its neighbours.

    ``lower`` is the previous expiry's slice (w >= w_lower), ``upper`` the next one's (w <= w_upper).

    Same weighted least squares in total variance as the free fit, by SLSQP from the free fit, with
    Durrleman's g(k) >= 0 on the slice's dense grid and w(k) >= w_lower(k) on ``CALENDAR_POINTS`` as
    constraints (sequential calibration in expiry order, as in Gatheral & Jacquier 2014, section 5).
    Returns None when the optimizer does not reach a point that satisfies every constraint.
    """
    t = fit.time_years
    kb = butterfly_grid(t)
    scale = float(np.mean(w))
    wt = weights / weights.sum()
    floor = None if lower is None else svi_total_variance(lower, CALENDAR_POINTS)
    cap = None if upper is None else svi_total_variance(upper, CALENDAR_POINTS)

    def params(x: FloatArray) -> SviParams:
        return SviParams(float(x[0]), float(x[1]), float(x[2]), float(x[3]), float(x[4]))

    def objective(x: FloatArray) -> float:
        resid = (svi_total_variance(params(x), k) - w) / scale
        return float(wt @ (resid * resid))

    constraints = [
        {"type": "ineq", "fun": lambda x: x[0] + x[1] * x[4] * np.sqrt(max(1.0 - x[2] ** 2, 0.0))},
        {"type": "ineq", "fun": lambda x: 4.0 - x[1] * (1.0 + abs(x[2]))},
        {"type": "ineq", "fun": lambda x: durrleman_g(params(x), kb) - CONSTRAINT_MARGIN},
    ]
    if floor is not None:
        constraints.append(
            {
                "type": "ineq",
                "fun": lambda x: svi_total_variance(params(x), CALENDAR_POINTS) - floor - CONSTRAINT_MARGIN,
            }
        )
    if cap is not None:
        constraints.append(
            {"type": "ineq", "fun": lambda x: cap - svi_total_variance(params(x), CALENDAR_POINTS) - CONSTRAINT_MARGIN}
        )
    bounds = [(None, None), (0.0, 4.0), (-0.999, 0.999), (-2.0, 2.0), (1e-4, 5.0)]
    starts = [
        np.array([fit.a, fit.b, fit.rho, fit.m, fit.sigma]),
        # a smoother smile near the free fit (less skew, flatter wings, wider curvature)
        np.array([fit.a, 0.8 * fit.b, 0.5 * fit.rho, fit.m, max(1.5 * fit.sigma, 0.05)]),
    ]
    if lower is not None:
        # the previous slice lifted to the quotes' level: feasible for the calendar condition
        lift = max(0.0, float(np.mean(w - svi_total_variance(lower, k))))
        starts.append(np.array([lower.a + lift, lower.b, lower.rho, lower.m, lower.sigma]))
    best = None
    for x0 in starts:
        try:
            res = minimize(
                objective,
                x0,
                method="SLSQP",
                bounds=bounds,
                constraints=constraints,
                options={"maxiter": 300, "ftol": 1e-14},
            )
        except (ValueError, np.linalg.LinAlgError):
            continue
        if not np.all(np.isfinite(res.x)):
            continue
        trial = params(res.x)
        feasible = (
            np.min(durrleman_g(trial, kb)) >= 0.0
            and (floor is None or np.all(svi_total_variance(trial, CALENDAR_POINTS) >= floor - 1e-12))
            and (cap is None or np.all(svi_total_variance(trial, CALENDAR_POINTS) <= cap + 1e-12))
        )
        if feasible and (best is None or objective(res.x) < objective(best.x)):
            best = res
    if best is None:
        return None
    res = best
    p = params(res.x)
    g_min, butterfly_ok = butterfly_check(p, t)
    candidate = SviFit(
        a=p.a,
        b=p.b,
        rho=p.rho,
        m=p.m,
        sigma=p.sigma,
        time_years=t,
        rmse_vol_points=float(np.sqrt(np.mean((svi_implied_vol(p, k, t) - np.sqrt(w / t)) ** 2)) * 100.0),
        n_quotes=fit.n_quotes,
        method=f"{fit.method}+arbitrage_constrained",
        converged=bool(res.success),
        butterfly_arbitrage_free=butterfly_ok,
        min_durrleman_g=g_min,
    )
    if _violations(candidate, lower) or (upper is not None and _violations(upper, candidate)):
        return None
    return candidate


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

    # second pass in expiry order: a slice with butterfly arbitrage, or below the previous slice
    # anywhere on the calendar points, is refitted under those constraints when the optimizer can
    def quotes_of(label: object, t_slice: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        sel = ok & (labels == label)
        w = iv[sel] ** 2 * t_slice
        return k[sel], w, black_vega_weight(k[sel], w)

    previous: SviFit | None = None
    for i, (t_slice, label, fit, quoted) in enumerate(fits):
        if _violations(fit, previous):
            # either raise this slice above the previous one, or lower the previous one below this one
            # (the wing that crosses is often extrapolated); keep whichever fits the quotes better
            options: list[tuple[float, SviFit | None, SviFit]] = []
            raised = constrained_refit(*quotes_of(label, t_slice), fit, previous)
            if raised is not None and raised.rmse_vol_points <= fit.rmse_vol_points + MAX_RMSE_INCREASE_VOL_POINTS:
                options.append((raised.rmse_vol_points + (previous.rmse_vol_points if previous else 0.0), None, raised))
            if previous is not None and not _violations(fit, None):
                t_prev, label_prev, _, _ = fits[i - 1]
                before = fits[i - 2][2] if i >= 2 else None
                lowered = constrained_refit(*quotes_of(label_prev, t_prev), previous, before, upper=fit)
                if (
                    lowered is not None
                    and lowered.rmse_vol_points <= previous.rmse_vol_points + MAX_RMSE_INCREASE_VOL_POINTS
                ):
                    options.append((lowered.rmse_vol_points + fit.rmse_vol_points, lowered, fit))
            if options:
                _, new_previous, new_fit = min(options, key=lambda o: o[0])
                if new_previous is not None:
                    fits[i - 1] = (fits[i - 1][0], fits[i - 1][1], new_previous, fits[i - 1][3])
                fits[i] = (t_slice, label, new_fit, quoted)
                fit = new_fit
        previous = fit
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
