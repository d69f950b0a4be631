"""One underlying's volatility surface from its implied vols: SVI slices, arbitrage checks, grid.

Input quotes are out-of-the-money options (puts below the forward, calls at and above it) with a
valid implied vol. Each expiry is fitted with raw SVI (``svi.fit_svi_slice``) in total variance,
weighted by Black vega (quotes whose price barely moves with vol say little about vol); the
slices form an ``SviSurface`` interpolated linearly in total variance between expiries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

from risk_pipeline.quant._numba import JIT, FloatArray
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
    fit_svi_slices,
    slsqp_minimize,
    svi_implied_vol,
    svi_total_variance,
    svi_weighted_residuals,
)

Refit = Callable[..., SviFit | None]

#: ``fit_underlying`` methods: batched quasi-explicit + cutting-plane refit, or the per-slice original.
FIT_BATCHED = "batched"
FIT_LEGACY = "legacy"

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


#: Bounds of ``(a, b, rho, m, sigma)`` in the constrained refits.
REFIT_BOUNDS = [(None, None), (0.0, 4.0), (-0.999, 0.999), (-2.0, 2.0), (1e-4, 5.0)]


def _refit_starts(k: FloatArray, w: FloatArray, fit: SviFit, lower: SviFit | None) -> list[FloatArray]:
    """Start points of the constrained refits."""
    starts = [
        np.array([fit.a, fit.b, fit.rho, fit.m, fit.sigma]),
        # a smoother smile near the free fit (less skew, flatter wings, wider curvature)
        np.array([fit.a, 0.8 * fit.b, 0.5 * fit.rho, fit.m, max(1.5 * fit.sigma, 0.05)]),
    ]
    if lower is not None:
        # the previous slice lifted to the quotes' level: feasible for the calendar condition
        lift = max(0.0, float(np.mean(w - svi_total_variance(lower, k))))
        starts.append(np.array([lower.a + lift, lower.b, lower.rho, lower.m, lower.sigma]))
    return starts


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
    bounds = REFIT_BOUNDS
    best = None
    for x0 in _refit_starts(k, w, fit, lower):
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
    return _refit_result(k, w, fit, lower, upper, params(best.x), converged=bool(best.success))


def _refit_result(
    k: FloatArray, w: FloatArray, fit: SviFit, lower: SviFit | None, upper: SviFit | None, p: SviParams, converged: bool
) -> SviFit | None:
    """The refitted slice as an ``SviFit`` (flags by ``butterfly_check``), or None if it or ``upper`` violates."""
    t = fit.time_years
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
        converged=converged,
        butterfly_arbitrage_free=butterfly_ok,
        min_durrleman_g=g_min,
    )
    if _violations(candidate, lower) or (upper is not None and _violations(upper, candidate)):
        return None
    return candidate


def _svi_jacobians(x: FloatArray, k: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``dg/dtheta`` (Durrleman) and ``dw/dtheta`` of raw SVI at ``k`` for ``theta = (a, b, rho, m, sigma)``, and ``g``.

    Shapes ``(k.size, 5)``, ``(k.size, 5)``, ``(k.size,)``; analytic (chain rule through ``w, w', w''``). ``d = k - m``,
    ``r``, ``r^3`` and ``r^5`` are numpy's (its ``power`` is not libm's ``pow``); the rest is ``_svi_jacobians_kernel``,
    the same IEEE operations element by element in the order the array expressions took them."""
    a, b, rho, m, sigma = x.tolist()  # Python floats, as float(e) gives
    d = k - m
    r = np.sqrt(d * d + sigma * sigma)
    r3, r5 = r**3, r**5  # each power once (the same values as computing it at every use)
    n = k.size
    dg, dw, g = np.empty((n, 5)), np.empty((n, 5)), np.empty(n)
    kk = np.ascontiguousarray(k, dtype=np.float64)
    _svi_jacobians_kernel(a, b, rho, sigma, sigma**3, kk, d, r, r3, r5, dg, dw, g)
    return dg, dw, g


@njit(**JIT)
def _svi_jacobians_kernel(
    a: float,
    b: float,
    rho: float,
    sigma: float,
    sigma3: float,
    k: FloatArray,
    d: FloatArray,
    r: FloatArray,
    r3: FloatArray,
    r5: FloatArray,
    dg: FloatArray,
    dw: FloatArray,
    g: FloatArray,
) -> None:
    """The element-wise part of ``_svi_jacobians`` (its array formulation: ``w = a + b (rho d + r)``,
    ``w' = b (rho + d/r)``, ``w'' = b sigma sigma / r^3``, the columns of ``dw``, ``dw'`` and ``dw''``, Durrleman's
    ``g`` and its partials in ``w`` and ``w'``), each scalar product of the array code formed first as there; no
    fast-math, so no contraction into fused multiply-adds: the same bits (``test_svi_jacobians_columns``)."""
    bss = b * sigma * sigma
    mbss = -b * sigma * sigma
    tbss = 3.0 * b * sigma * sigma
    two_sigma = 2.0 * sigma
    three_s3 = 3.0 * sigma3
    ss = sigma * sigma
    bs = b * sigma
    for i in range(k.shape[0]):
        di, ri, r3i, r5i, ki = d[i], r[i], r3[i], r5[i], k[i]
        d_r = di / ri
        w = a + b * (rho * di + ri)
        w1 = b * (rho + d_r)
        w2 = bss / r3i
        dw0, dw1c, dw2c, dw3, dw4 = 1.0, rho * di + ri, b * di, -b * (rho + d_r), bs / ri
        dw[i, 0], dw[i, 1], dw[i, 2], dw[i, 3], dw[i, 4] = dw0, dw1c, dw2c, dw3, dw4
        e1, e2, e3, e4 = rho + d_r, b, mbss / r3i, -b * di * sigma / r3i  # dw' columns 1-4 (column 0 is 0)
        f1, f3, f4 = ss / r3i, tbss * di / r5i, b * (two_sigma / r3i - three_s3 / r5i)  # dw'' columns 1, 3, 4
        if w > 0.0:
            safe_w = w
        else:
            safe_w = 1.0
        lead = 1.0 - ki * w1 / (2.0 * safe_w)
        sw2 = safe_w * safe_w
        g_w = lead * ki * w1 / sw2 + w1 * w1 / (4.0 * sw2)
        g_w1 = -lead * ki / safe_w - 0.5 * w1 * (1.0 / safe_w + 0.25)
        if w > 0.0:
            g[i] = lead * lead - (w1 * w1 / 4.0) * (1.0 / safe_w + 0.25) + w2 / 2.0
            dg[i, 0] = g_w * dw0 + g_w1 * 0.0 + 0.5 * 0.0
            dg[i, 1] = g_w * dw1c + g_w1 * e1 + 0.5 * f1
            dg[i, 2] = g_w * dw2c + g_w1 * e2 + 0.5 * 0.0
            dg[i, 3] = g_w * dw3 + g_w1 * e3 + 0.5 * f3
            dg[i, 4] = g_w * dw4 + g_w1 * e4 + 0.5 * f4
        else:
            g[i] = -1.0
            for j in range(5):
                dg[i, j] = 0.0


def _svi_dw_columns(b: float, rho: float, sigma: float, d: FloatArray, r: FloatArray, d_r: FloatArray) -> FloatArray:
    """``dw/dtheta`` of raw SVI from ``d = k - m``, ``r = sqrt(d^2 + sigma^2)`` and ``d / r``, shape ``(d.size, 5)``."""
    dw = np.empty((d.size, 5))
    dw[:, 0] = 1.0
    dw[:, 1] = rho * d + r
    dw[:, 2] = b * d
    dw[:, 3] = -b * (rho + d_r)
    dw[:, 4] = b * sigma / r
    return dw


def _svi_dw(x: FloatArray, k: FloatArray) -> FloatArray:
    """``dw/dtheta`` of ``_svi_jacobians`` alone (the same operations), shape ``(k.size, 5)``."""
    _, b, rho, m, sigma = (float(e) for e in x)
    d = k - m
    r = np.sqrt(d * d + sigma * sigma)
    return _svi_dw_columns(b, rho, sigma, d, r, d / r)


_EMPTY = np.empty(0)

#: Cutting-plane refit: rounds, and the initial working set (every n-th point of each check grid).
CUTTING_PLANE_ROUNDS = 8
CUTTING_PLANE_STRIDE = 10
#: SLSQP limits of the cutting-plane refit (objective normalized to 1 at the start).
REFIT_MAX_ITERATIONS = 100
REFIT_FTOL = 1e-6
#: Further starts are skipped once a feasible refit is within this relative objective of the free fit.
REFIT_GOOD_ENOUGH = 1e-3
#: Least divisor of the refit's objective (weighted mean squared total-variance error relative to
#: the slice's mean total variance): 1e-8 is a relative error of 1e-4 in total variance, about 0.001
#: vol points at a 20 % vol.
REFIT_OBJECTIVE_FLOOR = 1e-8


def constrained_refit_fast(
    k: FloatArray, w: FloatArray, weights: FloatArray, fit: SviFit, lower: SviFit | None, upper: SviFit | None = None
) -> SviFit | None:
    """``constrained_refit`` (same objective, constraints, grids, starts and acceptance) by cutting planes.

    SLSQP with analytic gradients, on scaled variables, is run with the butterfly (``g >= margin``)
    and calendar constraints imposed only on a working set of grid points (every
    ``CUTTING_PLANE_STRIDE``-th point at first); every point of the full grids where the result
    violates a constraint is added and the problem re-solved from the result, until the full grids
    hold (at most ``CUTTING_PLANE_ROUNDS`` rounds). The answer satisfies the constraints on the same
    full grids as ``constrained_refit``; SLSQP's work per iteration shrinks with the number of
    constraints. Unlike ``constrained_refit``, the remaining starts are skipped once a feasible
    refit's objective is within ``REFIT_GOOD_ENOUGH`` (relative) of the free fit's (a lower bound
    on it when the free fit is the unconstrained optimum).
    """
    t = fit.time_years
    kb = butterfly_grid(t)
    scale = float(np.mean(w))
    wt = weights / weights.sum()
    floor = None if lower is None else svi_total_variance(lower, CALENDAR_POINTS)
    cap = None if upper is None else svi_total_variance(upper, CALENDAR_POINTS)

    def params(x: FloatArray) -> SviParams:
        return SviParams(float(x[0]), float(x[1]), float(x[2]), float(x[3]), float(x[4]))

    k_c, w_c = (np.ascontiguousarray(v, dtype=np.float64) for v in (k, w))

    def objective(x: FloatArray) -> tuple[float, FloatArray]:
        resid, dw, wr = svi_weighted_residuals(x, k_c, w_c, wt, scale)
        return float(wr @ resid), 2.0 * (dw @ wr) / scale

    def feasible_full(x: FloatArray) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
        p = params(x)
        g_bad = durrleman_g(p, kb) < CONSTRAINT_MARGIN
        wc = svi_total_variance(p, CALENDAR_POINTS)
        f_bad = np.zeros(CALENDAR_POINTS.size, bool) if floor is None else wc - floor < CONSTRAINT_MARGIN
        c_bad = np.zeros(CALENDAR_POINTS.size, bool) if cap is None else cap - wc < CONSTRAINT_MARGIN
        return g_bad, f_bad, c_bad

    def strict_ok(x: FloatArray) -> bool:
        p = params(x)
        wc = svi_total_variance(p, CALENDAR_POINTS)
        return bool(
            np.min(durrleman_g(p, kb)) >= 0.0
            and (floor is None or np.all(wc >= floor - 1e-12))
            and (cap is None or np.all(wc <= cap + 1e-12))
        )

    def solve(x0: FloatArray, g_idx: NDArray[np.intp], c_idx: NDArray[np.intp]) -> tuple[FloatArray, bool] | None:
        kg, kc = kb[g_idx], CALENDAR_POINTS[c_idx]
        cache: dict[str, tuple[bytes, tuple[FloatArray, FloatArray, FloatArray]]] = {}

        def jac_at(x: FloatArray, which: str) -> tuple[FloatArray, FloatArray, FloatArray]:
            key = x.tobytes()
            if which not in cache or cache[which][0] != key:
                # the calendar constraints use only dw/dtheta: the Durrleman part is not computed for them
                cache[which] = (key, _svi_jacobians(x, kg) if which == "g" else (_EMPTY, _svi_dw(x, kc), _EMPTY))
            return cache[which][1]

        # one constraint function and one Jacobian for SLSQP's rows, in its order: w's minimum >= 0 (1 row), the wing
        # slopes b (1 +- rho) <= 4 (2 rows), Durrleman's g >= margin on the working set (finite, -1, where w <= 0,
        # which the first row excludes anyway), then w above the floor and below the cap on the calendar working set
        # (scaled by 1 / scale); each value and row is the expression of the per-constraint formulation, times dx
        # for z = x / dx (its factor 1.0 on the first three rows dropped: x * 1.0 is x)
        with_floor = floor is not None and c_idx.size > 0
        with_cap = cap is not None and c_idx.size > 0
        n_g, n_c = g_idx.size, c_idx.size
        floor_c = None if floor is None else floor[c_idx]
        cap_c = None if cap is None else cap[c_idx]
        inv_scale = 1.0 / scale
        rows = 3 + n_g + n_c * (int(with_floor) + int(with_cap))

        def constraint_values(z: FloatArray) -> FloatArray:
            x = dx * z
            out = np.empty(rows)
            out[0] = x[0] + x[1] * x[4] * np.sqrt(max(1.0 - x[2] ** 2, 0.0))
            out[1] = 4.0 - x[1] * (1.0 + x[2])
            out[2] = 4.0 - x[1] * (1.0 - x[2])
            out[3 : 3 + n_g] = jac_at(x, "g")[2] - CONSTRAINT_MARGIN
            at = 3 + n_g
            if with_floor:
                out[at : at + n_c] = inv_scale * (svi_total_variance(params(x), kc) - floor_c - CONSTRAINT_MARGIN)
                at += n_c
            if with_cap:
                out[at : at + n_c] = inv_scale * (cap_c - svi_total_variance(params(x), kc) - CONSTRAINT_MARGIN)
            return out

        def constraint_normals(z: FloatArray) -> FloatArray:
            x = dx * z
            out = np.empty((rows, 5))
            out[0] = (
                1.0,
                x[4] * np.sqrt(max(1.0 - x[2] ** 2, 0.0)),
                -x[1] * x[4] * x[2] / np.sqrt(max(1.0 - x[2] ** 2, 1e-300)),
                0.0,
                x[1] * np.sqrt(max(1.0 - x[2] ** 2, 0.0)),
            )
            out[1] = (0.0, -(1.0 + x[2]), -x[1], 0.0, 0.0)
            out[2] = (0.0, -(1.0 - x[2]), x[1], 0.0, 0.0)
            out[3 : 3 + n_g] = jac_at(x, "g")[0]
            at = 3 + n_g
            if with_floor:
                out[at : at + n_c] = inv_scale * jac_at(x, "c")[1]
                at += n_c
            if with_cap:
                out[at : at + n_c] = inv_scale * -jac_at(x, "c")[1]
            out *= dx
            return out

        # SLSQP on z = x / dx with the objective divided by its value at the start: O(1) variables,
        # gradients and constraints (its BFGS model starts from the identity). The divisor is at least
        # REFIT_OBJECTIVE_FLOOR: a free fit through every quote (5 quotes, 5 parameters) has an objective
        # near 0, and dividing by it made every step look 1e8 times too costly to SLSQP
        obj0 = max(objective(x0)[0], REFIT_OBJECTIVE_FLOOR)
        cons_z = [{"type": "ineq", "fun": constraint_values, "jac": constraint_normals}]

        def objective_z(z: FloatArray) -> tuple[float, FloatArray]:
            value, grad = objective(dx * z)
            return value / obj0, grad * dx / obj0

        bounds_z = [
            (None if lo is None else lo / d, None if hi is None else hi / d)
            for (lo, hi), d in zip(REFIT_BOUNDS, dx, strict=True)
        ]
        try:
            res = slsqp_minimize(objective_z, x0 / dx, bounds_z, cons_z, maxiter=REFIT_MAX_ITERATIONS, ftol=REFIT_FTOL)
        except (ValueError, np.linalg.LinAlgError):
            return None
        x_out = dx * res.x
        return (x_out, bool(res.success)) if np.all(np.isfinite(x_out)) else None

    starts = _refit_starts(k, w, fit, lower)
    dx = np.array([scale, max(abs(fit.b), 1e-3), 1.0, max(fit.sigma, 1e-2), max(fit.sigma, 1e-2)])
    best: FloatArray | None = None
    best_success = False
    free_value = objective(starts[0])[0]  # the free fit: no feasible point fits better
    for x0 in starts:
        if best is not None and objective(best)[0] <= free_value * (1.0 + REFIT_GOOD_ENOUGH):
            break
        success = False
        g_idx = np.arange(0, kb.size, CUTTING_PLANE_STRIDE)
        c_idx = np.arange(0, CALENDAR_POINTS.size, CUTTING_PLANE_STRIDE)
        x = x0
        for _ in range(CUTTING_PLANE_ROUNDS):
            sol = solve(x, g_idx, c_idx)
            if sol is None:
                break
            x, success = sol
            if strict_ok(x):
                break
            g_bad, f_bad, c_bad = feasible_full(x)
            g_new = np.union1d(g_idx, np.flatnonzero(g_bad))
            c_new = np.union1d(c_idx, np.flatnonzero(f_bad | c_bad))
            if g_new.size == g_idx.size and c_new.size == c_idx.size:
                break  # violations only at points already imposed: SLSQP cannot do better
            g_idx, c_idx = g_new, c_new
        if strict_ok(x) and (best is None or objective(x)[0] < objective(best)[0]):
            best, best_success = x, success
    if best is None:
        return None
    return _refit_result(k, w, fit, lower, upper, params(best), converged=best_success)


def fit_underlying(
    expiry_label: ArrayLike,
    time_years: ArrayLike,
    log_moneyness: ArrayLike,
    implied_vol: ArrayLike,
    grid: ArrayLike = DEFAULT_GRID,
    method: str = FIT_BATCHED,
) -> UnderlyingSurface:
    """Fit every expiry of one underlying; quotes with the same label share ``time_years``.

    ``method`` ``"batched"`` (default): the slices' free fits in one ``fit_svi_slices`` call and the
    constrained second pass by ``constrained_refit_fast``; ``"legacy"``: ``fit_svi_slice`` per slice
    and ``constrained_refit``. Both solve the same problems and compute the same flags.
    """
    if method == FIT_BATCHED:
        result = fit_underlyings([(expiry_label, time_years, log_moneyness, implied_vol)], grid)[0]
        if isinstance(result, ValueError):
            raise result
        return result
    if method != FIT_LEGACY:
        raise ValueError(f"method must be {FIT_BATCHED!r} or {FIT_LEGACY!r}, got {method!r}")
    slices = _slice_quotes(expiry_label, time_years, log_moneyness, implied_vol)
    first = [fit_svi_slice(s[2], s[3], s[4], s[0]) for s in slices]
    return _assemble(slices, first, grid, constrained_refit)


def fit_underlyings(
    underlyings: list[tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]], grid: ArrayLike = DEFAULT_GRID
) -> list[UnderlyingSurface | ValueError]:
    """``fit_underlying(..., method="batched")`` for many underlyings, the free fits of all slices in one batch.

    Each item is ``(expiry_label, time_years, log_moneyness, implied_vol)``; each result is the
    surface, or the ``ValueError`` that underlying's quotes raise (the others are still fitted).
    """
    prepared: list[list[_SliceQuotes] | ValueError] = []
    for item in underlyings:
        try:
            prepared.append(_slice_quotes(*item))
        except ValueError as exc:
            prepared.append(exc)

    def free_fits(slices: list[_SliceQuotes]) -> list[SviFit]:
        return fit_svi_slices(
            [s[2] for s in slices], [s[3] for s in slices], [s[4] for s in slices], [s[0] for s in slices]
        )

    try:
        first = iter(free_fits([s for p in prepared if not isinstance(p, ValueError) for s in p]))
        per_underlying = [p if isinstance(p, ValueError) else [next(first) for _ in p] for p in prepared]
    except ValueError:  # a slice the fit rejects: find its underlying, fit the others
        per_underlying = []
        for p in prepared:
            try:
                per_underlying.append(p if isinstance(p, ValueError) else free_fits(p))
            except ValueError as exc:
                per_underlying.append(exc)
    out: list[UnderlyingSurface | ValueError] = []
    for p, fits in zip(prepared, per_underlying, strict=True):
        if isinstance(p, ValueError) or isinstance(fits, ValueError):
            out.append(p if isinstance(p, ValueError) else fits)
            continue
        try:
            out.append(_assemble(p, fits, grid, constrained_refit_fast))
        except ValueError as exc:
            out.append(exc)
    return out


_SliceQuotes = tuple[float, object, FloatArray, FloatArray, FloatArray]  # t, label, k, w, vega weights


def _slice_quotes(
    expiry_label: ArrayLike, time_years: ArrayLike, log_moneyness: ArrayLike, implied_vol: ArrayLike
) -> list[_SliceQuotes]:
    """Valid quotes per expiry label (sorted by label), with total variance and vega weights."""
    labels = np.asarray(expiry_label, dtype=object)
    t = np.asarray(time_years, dtype=float)
    k = np.asarray(log_moneyness, dtype=float)
    iv = np.asarray(implied_vol, dtype=float)
    ok = np.isfinite(t) & (t > 0) & np.isfinite(k) & np.isfinite(iv) & (iv > 0)
    # the rows of each label in one pass over the labels (hashing, as the set of labels does), not one comparison of
    # every label object per expiry
    rows: dict[object, list[int]] = {}
    for i, label in zip(np.flatnonzero(ok).tolist(), labels[ok].tolist(), strict=True):
        rows.setdefault(label, []).append(i)
    slices = []
    for label in sorted(rows, key=str):
        sel = np.array(rows[label], dtype=np.intp)
        t_slice = float(t[sel][0])
        w = iv[sel] ** 2 * t_slice
        slices.append((t_slice, label, k[sel], w, black_vega_weight(k[sel], w)))
    if not slices:
        raise ValueError("no valid quotes to fit a surface")
    return slices


def _assemble(slices: list[_SliceQuotes], first: list[SviFit], grid: ArrayLike, refit: Refit) -> UnderlyingSurface:
    """Second (arbitrage-constrained) pass over the first-pass fits, then calendar checks and grid."""
    fits: list[tuple[float, object, SviFit, tuple[float, float]]] = [
        (s[0], s[1], f, (float(s[2].min()), float(s[2].max()))) for s, f in zip(slices, first, strict=True)
    ]
    by_label = {s[1]: s for s in slices}
    fits.sort(key=lambda x: x[0])

    def quotes_of(label: object, t_slice: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        return by_label[label][2], by_label[label][3], by_label[label][4]

    # second pass in expiry order: a slice with butterfly arbitrage, or below the previous slice
    # anywhere on the calendar points, is refitted under those constraints when the optimizer can
    previous: SviFit | None = None
    for i, (t_slice, label, fit, quoted) in enumerate(fits):
        if _violations(fit, previous):
            # either raise this slice above the previous one, or lower the previous one below this one
            # (the wing that crosses is often extrapolated); keep whichever fits the quotes better
            options: list[tuple[float, SviFit | None, SviFit]] = []
            raised = refit(*quotes_of(label, t_slice), fit, previous)
            if raised is not None and raised.rmse_vol_points <= fit.rmse_vol_points + MAX_RMSE_INCREASE_VOL_POINTS:
                options.append((raised.rmse_vol_points + (previous.rmse_vol_points if previous else 0.0), None, raised))
            if previous is not None and not _violations(fit, None):
                t_prev, label_prev, _, _ = fits[i - 1]
                before = fits[i - 2][2] if i >= 2 else None
                lowered = refit(*quotes_of(label_prev, t_prev), previous, before, upper=fit)
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
