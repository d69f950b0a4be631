"""Raw SVI implied-volatility slices, their calibration and arbitrage checks, and an SVI surface.

Raw SVI (Gatheral 2004, "A parsimonious arbitrage-free implied volatility parameterization") gives
the total implied variance ``w = sigma_BS(k)^2 * t`` of one expiry as a function of the log-moneyness
``k = ln(K / F)``::

    w(k) = a + b * (rho * (k - m) + sqrt((k - m)^2 + sigma^2))

with ``b >= 0``, ``|rho| < 1``, ``sigma > 0`` and ``a + b * sigma * sqrt(1 - rho^2) >= 0`` (the
minimum of ``w``, so that ``w >= 0`` everywhere).

Calibration follows the quasi-explicit method of Zeliade Systems (2009, "Quasi-explicit calibration
of Gatheral's SVI model"): for fixed ``(m, sigma)`` the model is linear in ``(a, b*rho*sigma,
b*sigma)`` and is fitted by exact box-constrained linear least squares; ``(m, sigma)`` are then
found by a multi-start bounded Nelder-Mead search (``fit_svi_slice``), or for many slices at once
by a batched pattern search (``fit_svi_slices``; its inner problems of every slice and candidate in one
compiled kernel, bit-identical to the numpy formulation kept beside it). Butterfly arbitrage is checked with
Durrleman's condition ``g(k) >= 0`` and calendar arbitrage by total variance being non-decreasing
in expiry at fixed ``k`` (Gatheral & Jacquier 2014, "Arbitrage-free SVI volatility surfaces").

Everything here is pure numerics: numpy arrays and frozen dataclasses in, the same out.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

from risk_pipeline.quant._numba import JIT, FloatArray, inner_njit
from risk_pipeline.quant._slsqp import LEAN_SLSQP, slsqp_core, slsqp_workspace
from risk_pipeline.quant._summation import pairwise_sum

#: Slices with fewer quotes than this use a constrained simpler shape (see ``fit_svi_slice``).
MIN_QUOTES_FULL_FIT = 5
#: Butterfly-check grid: ``k in [-BUTTERFLY_K_WIDTH, BUTTERFLY_K_WIDTH] * sqrt(t)``.
BUTTERFLY_K_WIDTH = 1.5
BUTTERFLY_GRID_POINTS = 201
#: ``g`` (dimensionless) and total-variance differences above ``-ARBITRAGE_TOLERANCE`` count as zero.
ARBITRAGE_TOLERANCE = 1e-10
#: Upper bound on the wing slopes ``b * (1 + |rho|) <= 4`` (the Zeliade 2009 domain; cf. the
#: Rogers-Tehranchi bound ``|dw/dk| <= 4``).
MAX_WING_SLOPE = 4.0
#: Largest ``|rho|`` reported; the Zeliade box allows ``|rho| = 1``, the raw-SVI constraint is strict.
MAX_ABS_RHO = 1.0 - 1e-6

METHOD_QUASI_EXPLICIT = "quasi_explicit"
METHOD_M0_FIXED_SIGMA = "m0_fixed_sigma"
METHOD_FLAT_ATM = "flat_atm"
METHOD_QUASI_EXPLICIT_BATCHED = "quasi_explicit_batched"


@dataclass(frozen=True)
class SviParams:
    """Raw SVI parameters of one slice (Gatheral 2004): total variance in log-moneyness."""

    a: float
    b: float
    rho: float
    m: float
    sigma: float


@dataclass(frozen=True)
class SviFit:
    """A calibrated raw-SVI slice with fit quality and butterfly-arbitrage diagnostics.

    ``rmse_vol_points`` is the unweighted RMSE of implied volatility over the quotes, times 100.
    ``method`` is one of ``quasi_explicit`` (full five-parameter fit), ``m0_fixed_sigma`` (three or
    four quotes) or ``flat_atm`` (one or two quotes); see ``fit_svi_slice``. ``converged`` reports
    the optimizer's own success flag (always True for the closed-form fallbacks).
    ``butterfly_arbitrage_free`` and ``min_durrleman_g`` come from ``butterfly_check``.
    """

    a: float
    b: float
    rho: float
    m: float
    sigma: float
    time_years: float
    rmse_vol_points: float
    n_quotes: int
    method: str
    converged: bool
    butterfly_arbitrage_free: bool
    min_durrleman_g: float

    @property
    def params(self) -> SviParams:
        """The five raw-SVI parameters."""
        return SviParams(self.a, self.b, self.rho, self.m, self.sigma)


SviLike = SviParams | SviFit


# --------------------------------------------------------------------------------------------------
# The SVI formula and its derivatives
# --------------------------------------------------------------------------------------------------


def svi_total_variance(params: SviLike, k: ArrayLike) -> FloatArray:
    """Raw SVI total variance ``w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2))``."""
    x = np.asarray(k, dtype=np.float64) - params.m
    return params.a + params.b * (params.rho * x + np.sqrt(x * x + params.sigma**2))


def svi_implied_vol(params: SviLike, k: ArrayLike, t: float) -> FloatArray:
    """Black implied volatility ``sqrt(w(k) / t)``; NaN where ``w(k) < 0``."""
    if not t > 0:
        raise ValueError(f"time_years must be positive, got {t}")
    w = svi_total_variance(params, k)
    with np.errstate(invalid="ignore"):
        return np.sqrt(np.where(w >= 0.0, w, np.nan) / t)


def _svi_derivatives(params: SviLike, k: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``(w, dw/dk, d2w/dk2)`` of raw SVI, analytic."""
    x = np.asarray(k, dtype=np.float64) - params.m
    root = np.sqrt(x * x + params.sigma**2)
    w = params.a + params.b * (params.rho * x + root)
    w1 = params.b * (params.rho + x / root)
    w2 = params.b * params.sigma**2 / root**3
    return w, w1, w2


def durrleman_g(params: SviLike, k: ArrayLike) -> FloatArray:
    """Durrleman's function (Gatheral & Jacquier 2014), with analytic derivatives of raw SVI.

    ``g(k) = (1 - k w' / (2 w))^2 - (w'^2 / 4) (1 / w + 1 / 4) + w'' / 2``. The slice is free of
    butterfly arbitrage iff ``g >= 0`` (and ``w -> +inf`` in the wings). Where ``w <= 0`` the
    density is undefined and ``-inf`` is returned.
    """
    kk = np.asarray(k, dtype=np.float64)
    w, w1, w2 = _svi_derivatives(params, kk)
    positive = w > 0.0
    safe_w = np.where(positive, w, 1.0)
    g = (1.0 - kk * w1 / (2.0 * safe_w)) ** 2 - (w1 * w1 / 4.0) * (1.0 / safe_w + 0.25) + w2 / 2.0
    return np.where(positive, g, -np.inf)


def batched_durrleman_g(
    a: FloatArray, b: FloatArray, rho: FloatArray, m: FloatArray, sigma: FloatArray, k: FloatArray
) -> FloatArray:
    """``durrleman_g`` of many slices at once: parameters of shape ``(S,)``, ``k`` of shape ``(S, N)``.

    The same operations in the same order as ``durrleman_g`` row by row, so each row equals it exactly.
    """
    kk = np.asarray(k, dtype=np.float64)
    col = [np.asarray(p, dtype=np.float64)[:, None] for p in (a, b, rho, m, sigma)]
    a_, b_, rho_, m_, sigma_ = col
    sigma2 = sigma_**2
    x = kk - m_
    root = np.sqrt(x * x + sigma2)
    w = a_ + b_ * (rho_ * x + root)
    w1 = b_ * (rho_ + x / root)
    w2 = b_ * sigma2 / root**3
    positive = w > 0.0
    safe_w = np.where(positive, w, 1.0)
    g = (1.0 - kk * w1 / (2.0 * safe_w)) ** 2 - (w1 * w1 / 4.0) * (1.0 / safe_w + 0.25) + w2 / 2.0
    return np.where(positive, g, -np.inf)


def butterfly_grid(time_years: float) -> FloatArray:
    """The butterfly-check grid: 201 points, ``k in [-1.5, 1.5] * sqrt(t)``."""
    width = BUTTERFLY_K_WIDTH * math.sqrt(time_years)
    return np.linspace(-width, width, BUTTERFLY_GRID_POINTS)


def butterfly_check(params: SviLike, time_years: float) -> tuple[float, bool]:
    """``(min g, arbitrage_free)`` of Durrleman's ``g`` on ``butterfly_grid(time_years)``.

    ``arbitrage_free`` is ``min g >= -1e-10``. A grid check: it can miss negative ``g`` outside the
    grid or between grid points.
    """
    g_min = float(np.min(durrleman_g(params, butterfly_grid(time_years))))
    return g_min, bool(g_min >= -ARBITRAGE_TOLERANCE)


# --------------------------------------------------------------------------------------------------
# Calibration (Zeliade 2009)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slice:
    """Validated quotes plus the objective's scaling: weights sum to one, ``w`` divided by its mean."""

    k: FloatArray
    w: FloatArray
    weights: FloatArray
    scale: float
    t: float


def _box_faces() -> tuple[tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.bool_]], ...]:
    """Faces of a 3-D box: (free indices, fixed indices, every lower/upper choice of the fixed ones)."""
    faces = []
    for free_mask in itertools.product((True, False), repeat=3):
        free = np.flatnonzero(free_mask)
        fixed = np.flatnonzero(~np.array(free_mask))
        choices = np.array(list(itertools.product((False, True), repeat=fixed.size)), dtype=bool)
        faces.append((free, fixed, choices.reshape(2**fixed.size, fixed.size)))
    return tuple(faces)


_BOX_FACES = _box_faces()


def _box_lsq(gram: FloatArray, rhs: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray:
    """Exact minimizer of ``x' G x - 2 h' x`` over the box ``lo <= x <= hi`` (three variables).

    A convex QP, so the optimum is the best feasible stationary point over the 27 faces of the box
    (each variable free, at its lower or at its upper bound): the enumeration Zeliade (2009)
    prescribes for the inner problem. Faces sharing a free set are solved together.
    """
    tol = 1e-12 * (1.0 + np.abs(hi))
    try:
        x = np.linalg.solve(gram, rhs)
        if np.all(x >= lo - tol) and np.all(x <= hi + tol):
            return np.clip(x, lo, hi)
    except np.linalg.LinAlgError:
        pass
    blocks = []
    for free, fixed, choices in _BOX_FACES:
        cand = np.empty((choices.shape[0], 3))
        fixed_values = np.where(choices, hi[fixed], lo[fixed])
        cand[:, fixed] = fixed_values
        if free.size:
            sub_rhs = rhs[free][None, :] - fixed_values @ gram[np.ix_(free, fixed)].T
            cand[:, free] = sub_rhs @ np.linalg.pinv(gram[np.ix_(free, free)]).T
        blocks.append(cand)
    cand = np.vstack(blocks)
    feasible = np.all((cand >= lo - tol) & (cand <= hi + tol), axis=1)
    cand = np.clip(cand[feasible], lo, hi)  # never empty: the box's vertices are candidates
    values = np.einsum("ij,jk,ik->i", cand, gram, cand) - 2.0 * cand @ rhs
    return cand[int(np.argmin(values))]


def _inner_fit(data: _Slice, m: float, sigma: float) -> tuple[SviParams, float]:
    """Best raw SVI for fixed ``(m, sigma)`` and its scaled weighted squared error.

    With ``y = (k - m) / sigma`` and ``z = sqrt(y^2 + 1)``: ``w = a + d y + c z`` where ``c = b sigma``
    and ``d = rho b sigma``. In ``u = c + d``, ``v = c - d`` the Zeliade domain ``0 <= c <= 4 sigma``,
    ``|d| <= c``, ``|d| <= 4 sigma - c``, ``0 <= a <= max w`` is the box ``u, v in [0, 4 sigma]``,
    ``a in [0, max w]``, and ``w = a + u (z + y) / 2 + v (z - y) / 2``.
    """
    y = (data.k - m) / sigma
    z = np.sqrt(y * y + 1.0)
    design = np.column_stack((np.ones_like(y), 0.5 * (z + y), 0.5 * (z - y))) / data.scale
    target = data.w / data.scale
    weighted = design * data.weights[:, None]
    gram = design.T @ weighted
    rhs = weighted.T @ target
    upper_uv = MAX_WING_SLOPE * sigma  # u, v = b sigma (1 +- rho) <= 4 sigma
    lo = np.zeros(3)
    hi = np.array([float(np.max(data.w)), upper_uv, upper_uv])
    x = _box_lsq(gram, rhs, lo, hi)
    resid = design @ x - target
    a, u, v = (float(e) for e in x)
    c, d = 0.5 * (u + v), 0.5 * (u - v)
    b = c / sigma
    rho = d / c if c > 0.0 else 0.0
    return SviParams(a=a, b=b, rho=rho, m=m, sigma=sigma), float(data.weights @ (resid * resid))


def _objective(data: _Slice, params: SviParams) -> float:
    """Weighted squared error of total variance, in units of the mean quoted total variance."""
    resid = (svi_total_variance(params, data.k) - data.w) / data.scale
    return float(data.weights @ (resid * resid))


def _feasible(p: SviParams) -> bool:
    """Raw-SVI constraints of the module docstring plus the wing-slope bound."""
    return (
        p.b >= 0.0
        and abs(p.rho) <= MAX_ABS_RHO
        and p.sigma > 0.0
        and p.a + p.b * p.sigma * math.sqrt(1.0 - p.rho**2) >= -1e-14
        and p.b * (1.0 + abs(p.rho)) <= MAX_WING_SLOPE + 1e-12
    )


def _quasi_explicit(data: _Slice) -> tuple[SviParams, bool]:
    """Zeliade (2009) outer search over ``(m, log sigma)``, then a local polish of all five parameters.

    Outer: the inner objective on a 9 x 8 grid of ``(m, sigma)``, then bounded Nelder-Mead from the
    three best grid points. Polish: SLSQP on ``(a, b, rho, m, sigma)`` under the exact constraints
    ``a + b sigma sqrt(1 - rho^2) >= 0``, ``b (1 +- rho) <= 4``, kept only if it lowers the error; it
    lets ``a`` go negative, which the Zeliade box (``a >= 0``) excludes.
    """
    k_lo, k_hi = float(np.min(data.k)), float(np.max(data.k))
    span = max(k_hi - k_lo, 1e-3)
    m_bounds = (k_lo - span, k_hi + span)
    sigma_bounds = (1e-4, max(2.0, 2.0 * span))
    log_s_bounds = (math.log(sigma_bounds[0]), math.log(sigma_bounds[1]))

    def outer(x: NDArray[np.float64]) -> float:
        m = float(np.clip(x[0], *m_bounds))
        s = math.exp(float(np.clip(x[1], *log_s_bounds)))
        return _inner_fit(data, m, s)[1]

    m_grid = np.linspace(k_lo, k_hi, 9)
    s_grid = np.geomspace(max(0.02 * span, 2e-4), max(span, 0.05), 8)
    starts = sorted(
        ((outer(np.array([m, math.log(s)])), m, math.log(s)) for m in m_grid for s in s_grid),
        key=lambda e: e[0],
    )
    best_x, best_v, converged = np.array([starts[0][1], starts[0][2]]), starts[0][0], False
    for _, m0, ls0 in starts[:3]:
        simplex = np.array([[m0, ls0], [m0 + 0.1 * span, ls0], [m0, ls0 + 0.5]])
        res = minimize(
            outer,
            np.array([m0, ls0]),
            method="Nelder-Mead",
            bounds=[m_bounds, log_s_bounds],
            options={"initial_simplex": simplex, "xatol": 1e-9, "fatol": 1e-16, "maxiter": 2000},
        )
        if res.fun < best_v or (not converged and res.success and res.fun <= best_v):
            best_x, best_v, converged = res.x, float(res.fun), bool(res.success)
    m = float(np.clip(best_x[0], *m_bounds))
    s = math.exp(float(np.clip(best_x[1], *log_s_bounds)))
    stage1 = _inner_fit(data, m, s)[0]
    start = SviParams(stage1.a, stage1.b, float(np.clip(stage1.rho, -MAX_ABS_RHO, MAX_ABS_RHO)), stage1.m, stage1.sigma)
    return _polish(data, start, m_bounds, sigma_bounds), converged


@dataclass(frozen=True)
class SlsqpResult:
    """What the callers read of ``scipy.optimize.minimize(method="SLSQP")``'s result."""

    x: FloatArray
    fun: float
    success: bool
    status: int
    nit: int


def slsqp_minimize(
    fun_and_grad: Callable[[FloatArray], tuple[float, FloatArray]],
    x0: ArrayLike,
    bounds: Sequence[tuple[float | None, float | None]],
    constraints: Sequence[dict[str, Any]],
    maxiter: int = 100,
    ftol: float = 1e-6,
) -> SlsqpResult:
    """``minimize(fun_and_grad, x0, jac=True, method="SLSQP", bounds=bounds, constraints=constraints,
    options={"maxiter": maxiter, "ftol": ftol})`` for inequality constraints that all have a ``jac``: the same calls
    of scipy's SLSQP routine with the same arrays (scipy 1.17's ``_minimize_slsqp``), so the same iterates and
    result, without scipy's per-evaluation wrappers (``ScalarFunction``, ``MemoizeJac``, ``atleast_1d``), which cost
    more than the fits' own functions. As there, the objective is evaluated (on a copy of the point) only where the
    point differs from the last evaluated one, and its gradient array is the one that evaluation returned; each
    constraint gets SLSQP's own point. Anything else (equality constraints, a constraint without ``jac``, a
    variable fixed by equal bounds, a SciPy other than 1.17) goes to ``minimize`` itself."""
    n_x = len(bounds)
    lb = np.array([float(lo) if lo is not None else -np.inf for lo, _ in bounds])
    ub = np.array([float(hi) if hi is not None else np.inf for _, hi in bounds])
    if (
        not LEAN_SLSQP
        or any(c["type"] != "ineq" or not callable(c.get("jac")) for c in constraints)
        or np.any(lb == ub)
        or np.asarray(x0).shape != (n_x,)
        or np.asarray(x0).dtype != np.float64
    ):
        res = minimize(
            fun_and_grad,
            x0,
            jac=True,
            method="SLSQP",
            bounds=bounds,
            constraints=list(constraints),
            options={"maxiter": maxiter, "ftol": ftol},
        )
        return SlsqpResult(res.x, res.fun, bool(res.success), int(res.status), int(res.nit))
    if np.any(ub < lb):
        raise ValueError("An upper bound is less than the corresponding lower bound.")
    x = np.clip(np.atleast_1d(np.asarray(x0)).astype(np.float64), lb, ub)
    funs = [c["fun"] for c in constraints]
    jacs = [c["jac"] for c in constraints]
    values = [np.atleast_1d(f(x)).ravel() for f in funs]
    m = sum(len(v) for v in values)
    n = x.size
    xl = np.where(np.isfinite(lb), lb, np.nan)
    xu = np.where(np.isfinite(ub), ub, np.nan)
    last_x = np.empty(0)
    last: tuple[float, FloatArray] = (0.0, np.empty(0))

    def evaluate(point: FloatArray) -> tuple[float, FloatArray]:
        nonlocal last_x, last
        if last_x.size == 0 or not (point == last_x).all():
            last_x = point.copy()
            value, grad = fun_and_grad(point.copy())
            if not np.isscalar(value):
                value = np.asarray(value).item()
            grad = np.asarray(grad)
            last = (value, grad if grad.ndim else grad.reshape(1))  # atleast_1d
        return last

    ws = slsqp_workspace(n, m, ftol, maxiter)
    state, c_mat, d = ws.state, ws.c, ws.d
    fx, g = evaluate(x)

    def normals() -> None:
        row = 0
        for jac in jacs:
            rows = np.asarray(jac(x))
            if rows.ndim < 2:  # atleast_2d
                rows = rows.reshape(1, -1)
            c_mat[row : row + rows.shape[0], :] = rows
            row += rows.shape[0]

    def values_at() -> None:
        row = 0
        for f in funs:
            v = np.asarray(f(x)).ravel()  # atleast_1d(...).ravel()
            d[row : row + v.size] = v
            row += len(v)

    if m:
        normals()
        values_at()
    while True:
        slsqp_core(state, fx, g, c_mat, d, x, ws.mult, xl, xu, ws.buffer, ws.indices)
        if state["mode"] == 1:
            fx = evaluate(x)[0]
            if m:
                values_at()
        if state["mode"] == -1:
            g = evaluate(x)[1]
            if m:
                normals()
        if abs(state["mode"]) != 1:
            break
    return SlsqpResult(x, fx, state["mode"] == 0, int(state["mode"]), int(state["iter"]))


def _polish(
    data: _Slice,
    start: SviParams,
    m_bounds: tuple[float, float],
    sigma_bounds: tuple[float, float],
    analytic_constraint_jacobians: bool = False,
    max_iterations: int = 300,
    ftol: float = 1e-20,
) -> SviParams:
    """SLSQP refinement of all five parameters under the exact raw-SVI constraints (see caller).

    ``analytic_constraint_jacobians`` gives SLSQP the constraints' exact gradients instead of
    letting it difference them (same problem, fewer evaluations; used by ``fit_svi_slices`` with
    ``BATCH_POLISH_ITERATIONS``).
    """

    def unpack(x: NDArray[np.float64]) -> SviParams:
        return SviParams(float(x[0]), float(x[1]), float(x[2]), float(x[3]), float(x[4]))

    constraints: list[dict[str, object]] = [
        {"type": "ineq", "fun": lambda x: x[0] + x[1] * x[4] * np.sqrt(max(1.0 - x[2] ** 2, 0.0))},
        {"type": "ineq", "fun": lambda x: MAX_WING_SLOPE - x[1] * (1.0 + x[2])},
        {"type": "ineq", "fun": lambda x: MAX_WING_SLOPE - x[1] * (1.0 - x[2])},
    ]
    if analytic_constraint_jacobians:

        def min_w_jac(x: NDArray[np.float64]) -> FloatArray:
            root = math.sqrt(max(1.0 - x[2] ** 2, 0.0))
            d_rho = -x[1] * x[4] * x[2] / root if root > 0.0 else 0.0
            return np.array([1.0, x[4] * root, d_rho, 0.0, x[1] * root])

        def values(x: NDArray[np.float64]) -> FloatArray:
            out = np.empty(3)
            out[0] = x[0] + x[1] * x[4] * np.sqrt(max(1.0 - x[2] ** 2, 0.0))
            out[1] = MAX_WING_SLOPE - x[1] * (1.0 + x[2])
            out[2] = MAX_WING_SLOPE - x[1] * (1.0 - x[2])
            return out

        def normals(x: NDArray[np.float64]) -> FloatArray:
            out = np.empty((3, 5))
            out[0] = min_w_jac(x)
            out[1] = (0.0, -(1.0 + x[2]), -x[1], 0.0, 0.0)
            out[2] = (0.0, -(1.0 - x[2]), x[1], 0.0, 0.0)
            return out

        # the three constraints as one function and one Jacobian: SLSQP gets the same values and rows, in one call each
        constraints = [{"type": "ineq", "fun": values, "jac": normals}]

    def objective_and_gradient(x: NDArray[np.float64]) -> tuple[float, FloatArray]:
        resid, dw, wr = svi_weighted_residuals(x, data.k, data.w, data.weights, data.scale)
        return float(wr @ resid), 2.0 * (dw @ wr) / data.scale

    x0 = np.array([start.a, start.b, start.rho, start.m, start.sigma])
    bounds = [(None, None), (0.0, MAX_WING_SLOPE), (-MAX_ABS_RHO, MAX_ABS_RHO), m_bounds, sigma_bounds]
    base = _objective(data, start)
    try:
        res = slsqp_minimize(objective_and_gradient, x0, bounds, constraints, maxiter=max_iterations, ftol=ftol)
    except (ValueError, np.linalg.LinAlgError):  # pragma: no cover - defensive
        return start
    cand = unpack(res.x)
    if np.all(np.isfinite(res.x)) and _feasible(cand) and _objective(data, cand) < base * (1.0 - 1e-9):
        return cand
    return start


def svi_weighted_residuals(
    x: FloatArray, k: FloatArray, w: FloatArray, weights: FloatArray, scale: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``resid = (w_svi(k) - w) / scale`` at ``x = (a, b, rho, m, sigma)``, ``dw/dtheta`` (rows, shape ``(5, k.size)``)
    and ``weights * resid``: the array formulation (``d = k - m``, ``r = sqrt(d d + sigma sigma)``,
    ``dw = (1, rho d + r, b d, -b (rho + d / r), b sigma / r)``) element by element in ``_svi_residual_kernel``, the
    same IEEE operations (no fast-math); the fits' objectives then take numpy's dot products of them."""
    a, b, rho, m, sigma = x.tolist()  # Python floats, as float(e) gives
    n = k.shape[0]
    resid, dw, wr = np.empty(n), np.empty((5, n)), np.empty(n)
    _svi_residual_kernel(a, b, rho, m, sigma, k, w, weights, float(scale), resid, dw, wr)
    return resid, dw, wr


@njit(**JIT)
def _svi_residual_kernel(
    a: float,
    b: float,
    rho: float,
    m: float,
    sigma: float,
    k: FloatArray,
    w: FloatArray,
    weights: FloatArray,
    scale: float,
    resid: FloatArray,
    dw: FloatArray,
    wr: FloatArray,
) -> None:
    """``svi_weighted_residuals``' arrays, one quote at a time."""
    ss = sigma * sigma
    minus_b = -b
    bs = b * sigma
    for i in range(k.shape[0]):
        d = k[i] - m
        r = math.sqrt(d * d + ss)
        e = (a + b * (rho * d + r) - w[i]) / scale
        resid[i] = e
        dw[0, i] = 1.0
        dw[1, i] = rho * d + r
        dw[2, i] = b * d
        dw[3, i] = minus_b * (rho + d / r)
        dw[4, i] = bs / r
        wr[i] = weights[i] * e


def _validate(
    log_moneyness: ArrayLike, total_variance: ArrayLike, weights: ArrayLike | None, time_years: float
) -> _Slice:
    k = np.asarray(log_moneyness, dtype=np.float64).ravel()
    w = np.asarray(total_variance, dtype=np.float64).ravel()
    if k.shape != w.shape:
        raise ValueError("log_moneyness and total_variance must have the same length")
    if k.size == 0:
        raise ValueError("an SVI slice needs at least one quote")
    if not (math.isfinite(time_years) and time_years > 0.0):
        raise ValueError(f"time_years must be positive and finite, got {time_years}")
    if not (np.all(np.isfinite(k)) and np.all(np.isfinite(w))):
        raise ValueError("log_moneyness and total_variance must be finite")
    if np.any(w <= 0.0):
        raise ValueError("total_variance must be positive")
    wt = np.ones_like(w) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if wt.shape != w.shape:
        raise ValueError("weights must have the same length as the quotes")
    if not np.all(np.isfinite(wt)) or np.any(wt < 0.0) or not wt.sum() > 0.0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return _Slice(k=k, w=w, weights=wt / wt.sum(), scale=float(np.mean(w)), t=float(time_years))


def thin_slice_sigma(time_years: float) -> float:
    """``sigma`` used by the ``m0_fixed_sigma`` fallback: ``max(0.1 sqrt(t), 0.01)``."""
    return max(0.1 * math.sqrt(time_years), 0.01)


def fit_svi_slice(
    log_moneyness: ArrayLike,
    total_variance: ArrayLike,
    weights: ArrayLike | None,
    time_years: float,
) -> SviFit:
    """Calibrate raw SVI to one expiry's quotes of total implied variance ``w = iv^2 t``.

    Minimizes ``sum_i weights_i (w_svi(k_i) - w_i)^2`` (weights e.g. vega or 1 / spread; ``None``
    means equal; they are normalized to sum to one) subject to ``b >= 0``, ``|rho| < 1``,
    ``sigma > 0``, ``a + b sigma sqrt(1 - rho^2) >= 0`` and ``b (1 + |rho|) <= 4``.

    * five or more quotes: ``quasi_explicit`` -- Zeliade (2009) quasi-explicit calibration (exact
      box-constrained inner least squares in ``(a, rho b sigma, b sigma)``, multi-start bounded
      Nelder-Mead over ``(m, log sigma)``), then an SLSQP polish of all five parameters.
    * three or four quotes: ``m0_fixed_sigma`` -- ``m = 0`` and ``sigma = thin_slice_sigma(t)``
      fixed; ``a, b, rho`` from the same constrained inner least squares.
    * one or two quotes: ``flat_atm`` -- flat total variance at the ATM level (``b = rho = m = 0``,
      ``a`` = quoted ``w`` linearly interpolated to ``k = 0``, nearest quote if 0 is not bracketed).
    """
    data = _validate(log_moneyness, total_variance, weights, time_years)
    n = int(data.k.size)
    converged = True
    if n >= MIN_QUOTES_FULL_FIT:
        params, converged = _quasi_explicit(data)
        method = METHOD_QUASI_EXPLICIT
    elif n >= 3:
        raw = _inner_fit(data, 0.0, thin_slice_sigma(data.t))[0]
        params = SviParams(raw.a, raw.b, float(np.clip(raw.rho, -MAX_ABS_RHO, MAX_ABS_RHO)), 0.0, raw.sigma)
        method = METHOD_M0_FIXED_SIGMA
    else:
        order = np.argsort(data.k)
        atm = float(np.interp(0.0, data.k[order], data.w[order]))
        params = SviParams(atm, 0.0, 0.0, 0.0, thin_slice_sigma(data.t))
        method = METHOD_FLAT_ATM
    model_vol = svi_implied_vol(params, data.k, data.t)
    quote_vol = np.sqrt(data.w / data.t)
    rmse = float(np.sqrt(np.mean((model_vol - quote_vol) ** 2)) * 100.0)
    g_min, butterfly_ok = butterfly_check(params, data.t)
    return SviFit(
        a=params.a,
        b=params.b,
        rho=params.rho,
        m=params.m,
        sigma=params.sigma,
        time_years=data.t,
        rmse_vol_points=rmse,
        n_quotes=n,
        method=method,
        converged=converged,
        butterfly_arbitrage_free=butterfly_ok,
        min_durrleman_g=g_min,
    )


# --------------------------------------------------------------------------------------------------
# Batched calibration: the same Zeliade (2009) problem for many slices at once, in numpy
# --------------------------------------------------------------------------------------------------

#: Outer search of ``fit_svi_slices``: the 9 x 8 start grid of ``_quasi_explicit``, the number of
#: best grid points searched from, and the pattern-search iterations and final step (in ``m`` units
#: of the quoted span and in ``log sigma``).
BATCH_STARTS = 3
BATCH_MAX_ITERATIONS = 100
BATCH_STEP_TOLERANCE = 1e-6
#: SLSQP limits of the polish of slices whose ``a`` is at the Zeliade bound: ``fit_svi_slice``'s 300
#: iterations, but stopping once the objective (scaled squared error, about 1e-5) changes by < 1e-16.
BATCH_POLISH_ITERATIONS = 300
BATCH_POLISH_FTOL = 1e-16


# The batched inner problem compiled: the same operations as the numpy reference ``batched_inner_numpy`` and its
# ``batched_box_lsq`` (``risk_pipeline_tests/quant/svi_numpy_reference.py``) element by element, in the same order,
# fused into one pass per slice and candidate instead of some fifty numpy temporaries of shape (S, C, N) or (S, C,
# 27). Sums over the quotes follow numpy's pairwise summation of a contiguous row (``_summation.pairwise_sum``), so
# every result is bit-identical to the numpy path (the tests compare both on random and fitted slices).


@inner_njit()
def _nan_if_tiny(v: float) -> float:
    """``np.where(np.abs(v) > 1e-300, v, np.nan)``."""
    return v if abs(v) > 1e-300 else np.nan


@inner_njit()
def _clip(x: float, lo: float, hi: float) -> float:
    """``np.clip`` of a float64 (NaN propagates; ``max`` then ``min`` as numpy's ``_NPY_CLIP``)."""
    if x != x:
        return x
    v = x if x > lo else lo
    if v != v:
        return v
    return v if v < hi else hi


@njit(**JIT)
def _batched_inner_kernel(
    k: FloatArray,
    weights: FloatArray,
    target: FloatArray,
    inv: FloatArray,
    w_max: FloatArray,
    const: FloatArray,
    m: FloatArray,
    sigma: FloatArray,
    x_out: FloatArray,
    err_out: FloatArray,
) -> None:
    """The numpy reference ``batched_inner_numpy`` (tests) of slices ``(S, N)`` and candidates ``m, sigma``
    ``(S, C)``: ``x_out`` ``(S, C, 3)``,
    ``err_out`` ``(S, C)``. ``target`` is ``w / scale``, ``inv`` ``1 / scale``, ``const`` the weighted sum of
    squared targets per slice."""
    s_count, n = k.shape
    c_count = m.shape[1]
    wp = np.empty(n)
    wq = np.empty(n)
    t1 = np.empty(n)
    t2 = np.empty(n)
    t3 = np.empty(n)
    t4 = np.empty(n)
    wtt = np.empty(n)
    cx0 = np.empty(27)
    cx1 = np.empty(27)
    cx2 = np.empty(27)
    g = np.empty((3, 3))
    h = np.empty(3)
    hi = np.empty(3)
    v = np.empty(3)
    for s in range(s_count):
        for i in range(n):
            wtt[i] = weights[s, i] * target[s, i]
        s_t = pairwise_sum(wtt, 0, n)
        inv2 = inv[s] * inv[s]
        for c in range(c_count):
            mm, sg = m[s, c], sigma[s, c]
            for i in range(n):
                y = (k[s, i] - mm) / sg
                z = math.sqrt(y * y + 1.0)
                p = 0.5 * (z + y)
                q = 0.5 * (z - y)
                wt = weights[s, i]
                wp[i] = wt * p
                wq[i] = wt * q
                t1[i] = wp[i] * p
                t2[i] = wq[i] * q
                t3[i] = wtt[i] * p
                t4[i] = wtt[i] * q
            s_p, s_q = pairwise_sum(wp, 0, n), pairwise_sum(wq, 0, n)
            s_pp, s_qq = pairwise_sum(t1, 0, n), pairwise_sum(t2, 0, n)
            g00 = 1.0 * inv2
            g01 = s_p * inv2
            g02 = s_q * inv2
            g11 = s_pp * inv2
            g12 = 0.25 * inv2
            g22 = s_qq * inv2
            g10, g20, g21 = g01, g02, g12
            h0 = s_t * inv[s]
            h1 = pairwise_sum(t3, 0, n) * inv[s]
            h2 = pairwise_sum(t4, 0, n) * inv[s]
            hi0, hi1, hi2 = w_max[s], 4.0 * sg, 4.0 * sg
            g[0, 0], g[0, 1], g[0, 2] = g00, g01, g02
            g[1, 0], g[1, 1], g[1, 2] = g10, g11, g12
            g[2, 0], g[2, 1], g[2, 2] = g20, g21, g22
            h[0], h[1], h[2] = h0, h1, h2
            hi[0], hi[1], hi[2] = hi0, hi1, hi2
            # interior: G x = h (Cramer's rule)
            det = g00 * (g11 * g22 - g12 * g21) - g01 * (g10 * g22 - g12 * g20) + g02 * (g10 * g21 - g11 * g20)
            inv_det = 1.0 / _nan_if_tiny(det)
            cx0[0] = (
                h0 * (g11 * g22 - g12 * g21) - g01 * (h1 * g22 - g12 * h2) + g02 * (h1 * g21 - g11 * h2)
            ) * inv_det
            cx1[0] = (
                g00 * (h1 * g22 - g12 * h2) - h0 * (g10 * g22 - g12 * g20) + g02 * (g10 * h2 - h1 * g20)
            ) * inv_det
            cx2[0] = (
                g00 * (g11 * h2 - h1 * g21) - g01 * (g10 * h2 - h1 * g20) + h0 * (g10 * g21 - g11 * g20)
            ) * inv_det
            j = 1
            # one variable at a bound (0, then its upper bound), two free
            for fixed in range(3):
                a_, b_ = (1, 2) if fixed == 0 else ((0, 2) if fixed == 1 else (0, 1))
                inv_2 = 1.0 / _nan_if_tiny(g[a_, a_] * g[b_, b_] - g[a_, b_] * g[b_, a_])
                for side in range(2):
                    cb = 0.0 if side == 0 else hi[fixed]
                    ri = h[a_] - g[a_, fixed] * cb
                    rj = h[b_] - g[b_, fixed] * cb
                    xa = (ri * g[b_, b_] - g[a_, b_] * rj) * inv_2
                    xb = (g[a_, a_] * rj - g[b_, a_] * ri) * inv_2
                    v[0], v[1], v[2] = cb, cb, cb
                    v[a_] = xa
                    v[b_] = xb
                    cx0[j], cx1[j], cx2[j] = v[0], v[1], v[2]
                    j += 1
            # two at a bound, one free
            for free in range(3):
                a_, b_ = (1, 2) if free == 0 else ((0, 2) if free == 1 else (0, 1))
                inv_1 = 1.0 / _nan_if_tiny(g[free, free])
                for side_a in range(2):
                    ca = 0.0 if side_a == 0 else hi[a_]
                    for side_b in range(2):
                        cbb = 0.0 if side_b == 0 else hi[b_]
                        v[0], v[1], v[2] = ca, ca, ca
                        v[a_] = ca
                        v[b_] = cbb
                        v[free] = (h[free] - g[free, a_] * ca - g[free, b_] * cbb) * inv_1
                        cx0[j], cx1[j], cx2[j] = v[0], v[1], v[2]
                        j += 1
            # vertices
            for s0 in range(2):
                for s1 in range(2):
                    for s2 in range(2):
                        cx0[j] = 0.0 if s0 == 0 else hi0
                        cx1[j] = 0.0 if s1 == 0 else hi1
                        cx2[j] = 0.0 if s2 == 0 else hi2
                        j += 1
            tol = 1e-12
            best = -1
            best_value = 0.0
            bx0, bx1, bx2 = 0.0, 0.0, 0.0
            for j in range(27):
                x0, x1, x2 = cx0[j], cx1[j], cx2[j]
                feasible = (
                    (x0 >= -tol * (1.0 + hi0))
                    and (x0 <= hi0 * (1.0 + tol) + tol)
                    and (x1 >= -tol * (1.0 + hi1))
                    and (x1 <= hi1 * (1.0 + tol) + tol)
                    and (x2 >= -tol * (1.0 + hi2))
                    and (x2 <= hi2 * (1.0 + tol) + tol)
                )
                x0 = _clip(x0 if feasible else 0.0, 0.0, hi0)
                x1 = _clip(x1 if feasible else 0.0, 0.0, hi1)
                x2 = _clip(x2 if feasible else 0.0, 0.0, hi2)
                value = (
                    x0 * (g00 * x0 + 2.0 * (g01 * x1 + g02 * x2 - h0))
                    + x1 * (g11 * x1 + 2.0 * (g12 * x2 - h1))
                    + x2 * (g22 * x2 - 2.0 * h2)
                )
                if not feasible:
                    value = np.inf
                # np.argmin: the first NaN, else the first minimum
                if best < 0 or (best_value == best_value and (value != value or value < best_value)):
                    best, best_value = j, value
                    bx0, bx1, bx2 = x0, x1, x2
            x_out[s, c, 0], x_out[s, c, 1], x_out[s, c, 2] = bx0, bx1, bx2
            total = best_value + const[s]
            err_out[s, c] = total if (total != total or total > 0.0) else 0.0


@dataclass(frozen=True)
class _Batch:
    """Quotes of many slices padded to a common length; padding carries zero weight."""

    k: FloatArray  # (S, N)
    w: FloatArray  # (S, N)
    weights: FloatArray  # (S, N), each row sums to one
    scale: FloatArray  # (S,)
    t: FloatArray  # (S,)
    k_lo: FloatArray
    k_hi: FloatArray


def _batched_inner(batch: _Batch, m: FloatArray, sigma: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``_inner_fit`` for every slice and candidate: ``(a, u, v)`` of shape ``(S, C, 3)`` and errors ``(S, C)``.

    The numbers of the numpy reference ``batched_inner_numpy`` (tests), bit for bit, from the compiled
    ``_batched_inner_kernel``."""
    m, sigma = np.broadcast_arrays(np.asarray(m, dtype=np.float64), np.asarray(sigma, dtype=np.float64))
    shape = m.shape
    s_count = batch.k.shape[0]
    m2 = np.ascontiguousarray(np.broadcast_to(m, shape).reshape(s_count, -1))
    sigma2 = np.ascontiguousarray(np.broadcast_to(sigma, shape).reshape(s_count, -1))
    target = batch.w / batch.scale[:, None]
    const = np.sum(batch.weights * target**2, axis=1)
    x = np.empty((*m2.shape, 3))
    err = np.empty(m2.shape)
    _batched_inner_kernel(
        np.ascontiguousarray(batch.k),
        np.ascontiguousarray(batch.weights),
        np.ascontiguousarray(target),
        1.0 / batch.scale,
        np.max(batch.w, axis=1),
        const,
        m2,
        sigma2,
        x,
        err,
    )
    return x.reshape(*shape, 3), err.reshape(shape)


def _take(batch: _Batch, rows: NDArray[np.intp]) -> _Batch:
    """The slices ``rows`` of a batch (rows may repeat)."""
    return _Batch(*(getattr(batch, f)[rows] for f in ("k", "w", "weights", "scale", "t", "k_lo", "k_hi")))


def _batched_outer(batch: _Batch) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
    """Best ``(m, sigma)`` per slice: the 9 x 8 grid of ``_quasi_explicit``, then a bounded pattern search.

    The search runs from the ``BATCH_STARTS`` best grid points of each slice (a track each): a step
    tries the eight neighbours ``(m +- dm, log sigma +- ds)`` and moves to the best if it lowers the
    error (doubling the steps, at most to their start values), else halves the steps; a track stops
    when both steps are below ``BATCH_STEP_TOLERANCE`` (converged). Only running tracks are evaluated.
    """
    s_count = batch.k.shape[0]
    span = np.maximum(batch.k_hi - batch.k_lo, 1e-3)
    m_grid = batch.k_lo[:, None] + np.linspace(0.0, 1.0, 9)[None, :] * (batch.k_hi - batch.k_lo)[:, None]
    s_lo = np.log(np.maximum(0.02 * span, 2e-4))
    s_hi = np.log(np.maximum(span, 0.05))
    ls_grid = s_lo[:, None] + np.linspace(0.0, 1.0, 8)[None, :] * (s_hi - s_lo)[:, None]  # (S, 8)
    m_c = np.repeat(m_grid, 8, axis=1)
    ls_c = np.tile(ls_grid, (1, 9))
    _, err = _batched_inner(batch, m_c, np.exp(ls_c))
    order = np.argsort(err, axis=1, kind="stable")[:, :BATCH_STARTS]
    # one row per track
    owner = np.repeat(np.arange(s_count), order.shape[1])
    m = np.take_along_axis(m_c, order, axis=1).ravel()
    ls = np.take_along_axis(ls_c, order, axis=1).ravel()
    best = np.take_along_axis(err, order, axis=1).ravel()
    tracks = _take(batch, owner)
    span_t = span[owner]
    m_lo, m_hi = (batch.k_lo - span)[owner], (batch.k_hi + span)[owner]
    ls_lo, ls_hi = math.log(1e-4), np.log(np.maximum(2.0, 2.0 * span))[owner]
    dm0, ds0 = 0.1 * span_t, 0.5
    dm, ds = dm0.copy(), np.full(m.shape, ds0)
    offsets = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)], dtype=np.float64)
    for _ in range(BATCH_MAX_ITERATIONS):
        run = np.flatnonzero((dm > BATCH_STEP_TOLERANCE * span_t) | (ds > BATCH_STEP_TOLERANCE))
        if run.size == 0:
            break
        cand_m = np.clip(m[run, None] + offsets[:, 0] * dm[run, None], m_lo[run, None], m_hi[run, None])
        cand_ls = np.clip(ls[run, None] + offsets[:, 1] * ds[run, None], ls_lo, ls_hi[run, None])
        running = _take(tracks, run)  # the running tracks' quotes, taken once for both inner solves
        _, cand_err = _batched_inner(running, cand_m, np.exp(cand_ls))
        # Newton point of the quadratic through the 3 x 3 stencil (steps dm, ds; cross term from diagonals)
        f0 = best[run]
        fm = cand_err.reshape(-1, 8)
        e_m, e_p = fm[:, 3], fm[:, 4]  # (0, -1), (0, +1) in (m, ls) order: see offsets
        e_lm, e_lp = fm[:, 1], fm[:, 6]  # (-1, 0), (+1, 0)
        h_mm = (fm[:, 6] - 2.0 * f0 + fm[:, 1]) / dm[run] ** 2
        h_ss = (e_p - 2.0 * f0 + e_m) / ds[run] ** 2
        h_ms = (fm[:, 7] - fm[:, 5] - fm[:, 2] + fm[:, 0]) / (4.0 * dm[run] * ds[run])
        g_m = (e_lp - e_lm) / (2.0 * dm[run])
        g_s = (e_p - e_m) / (2.0 * ds[run])
        det = h_mm * h_ss - h_ms * h_ms
        with np.errstate(divide="ignore", invalid="ignore"):
            step_m = -(h_ss * g_m - h_ms * g_s) / det
            step_s = -(h_mm * g_s - h_ms * g_m) / det
        ok = (det > 0) & (h_mm > 0) & np.isfinite(step_m) & np.isfinite(step_s)
        newton_m = np.clip(m[run] + np.where(ok, step_m, 0.0), m_lo[run], m_hi[run])[:, None]
        newton_ls = np.clip(ls[run] + np.where(ok, step_s, 0.0), ls_lo, ls_hi[run])[:, None]
        _, newton_err = _batched_inner(running, newton_m, np.exp(newton_ls))
        cand_m = np.concatenate((cand_m, newton_m), axis=1)
        cand_ls = np.concatenate((cand_ls, newton_ls), axis=1)
        cand_err = np.concatenate((cand_err, np.where(ok[:, None], newton_err, np.inf)), axis=1)
        pick = np.argmin(cand_err, axis=1)[:, None]
        pick_err = np.take_along_axis(cand_err, pick, axis=1)[:, 0]
        better = pick_err < best[run] * (1.0 - 1e-12)
        moved = run[better]
        m[moved] = np.take_along_axis(cand_m, pick, axis=1)[better, 0]
        ls[moved] = np.take_along_axis(cand_ls, pick, axis=1)[better, 0]
        best[moved] = pick_err[better]
        dm[moved] = np.minimum(2.0 * dm[moved], dm0[moved])
        ds[moved] = np.minimum(2.0 * ds[moved], ds0)
        stuck = run[~better]
        dm[stuck] *= 0.5
        ds[stuck] *= 0.5
    converged = ~((dm > BATCH_STEP_TOLERANCE * span_t) | (ds > BATCH_STEP_TOLERANCE))
    best_2d = best.reshape(s_count, -1)
    winner = np.arange(s_count) * best_2d.shape[1] + np.argmin(best_2d, axis=1)
    return m[winner], np.exp(ls[winner]), converged[winner]


def batched_durrleman_min(
    a: FloatArray, b: FloatArray, rho: FloatArray, m: FloatArray, sigma: FloatArray, time_years: FloatArray
) -> FloatArray:
    """``min g`` of ``durrleman_g`` on each slice's ``butterfly_grid`` (same grid, same formula), shape ``(S,)``."""
    width = BUTTERFLY_K_WIDTH * np.sqrt(time_years)
    k = np.linspace(-1.0, 1.0, BUTTERFLY_GRID_POINTS)[None, :] * width[:, None]
    x = k - m[:, None]
    root = np.sqrt(x * x + (sigma**2)[:, None])
    w = a[:, None] + b[:, None] * (rho[:, None] * x + root)
    w1 = b[:, None] * (rho[:, None] + x / root)
    w2 = b[:, None] * (sigma**2)[:, None] / root**3
    positive = w > 0.0
    safe_w = np.where(positive, w, 1.0)
    g = (1.0 - k * w1 / (2.0 * safe_w)) ** 2 - (w1 * w1 / 4.0) * (1.0 / safe_w + 0.25) + w2 / 2.0
    return np.min(np.where(positive, g, -np.inf), axis=1)


def fit_svi_slices(
    log_moneyness: list[ArrayLike],
    total_variance: list[ArrayLike],
    weights: list[ArrayLike | None],
    time_years: list[float],
) -> list[SviFit]:
    """``fit_svi_slice`` for many slices at once, with the outer search done for all of them in numpy.

    Same objective, constraints, inner problem (Zeliade 2009 box least squares in ``(a, u, v)``),
    start grid and fallbacks (``m0_fixed_sigma``, ``flat_atm``) as ``fit_svi_slice``; the outer
    search over ``(m, log sigma)`` is a batched pattern search with a Newton step instead of
    per-slice Nelder-Mead. The five-parameter SLSQP polish (which lets ``a`` go below the Zeliade
    bound ``a >= 0``) runs only on slices whose best ``a`` is at that bound: elsewhere the box
    optimum is already a local optimum of the five-parameter problem (the box's other faces are the
    same constraints ``b >= 0``, ``b (1 +- rho) <= 4``). Flags and
    ``min_durrleman_g`` are computed on the same grid with the same formula as ``butterfly_check``.
    """
    if not (len(log_moneyness) == len(total_variance) == len(weights) == len(time_years)):
        raise ValueError("one log_moneyness, total_variance, weights and time_years per slice")
    data = [
        _validate(k, w, wt, t) for k, w, wt, t in zip(log_moneyness, total_variance, weights, time_years, strict=True)
    ]
    out: list[SviFit | None] = [None] * len(data)
    full = [i for i, d in enumerate(data) if d.k.size >= MIN_QUOTES_FULL_FIT]
    for i, d in enumerate(data):
        if d.k.size < MIN_QUOTES_FULL_FIT:
            out[i] = fit_svi_slice(d.k, d.w, d.weights, d.t)
    if full:
        n_max = max(data[i].k.size for i in full)
        k = np.empty((len(full), n_max))
        w = np.empty_like(k)
        wt = np.zeros_like(k)
        for row, i in enumerate(full):
            d = data[i]
            n = d.k.size
            k[row, :n], k[row, n:] = d.k, d.k[0]
            w[row, :n], w[row, n:] = d.w, d.w[0]
            wt[row, :n] = d.weights
        batch = _Batch(
            k=k,
            w=w,
            weights=wt,
            scale=np.array([data[i].scale for i in full]),
            t=np.array([data[i].t for i in full]),
            k_lo=np.array([float(np.min(data[i].k)) for i in full]),
            k_hi=np.array([float(np.max(data[i].k)) for i in full]),
        )
        m, sigma, converged = _batched_outer(batch)
        x, _ = _batched_inner(batch, m[:, None], sigma[:, None])
        a, u, v = x[:, 0, 0], x[:, 0, 1], x[:, 0, 2]
        c, d_ = 0.5 * (u + v), 0.5 * (u - v)
        b = c / sigma
        rho = np.clip(np.where(c > 0.0, d_ / np.where(c > 0.0, c, 1.0), 0.0), -MAX_ABS_RHO, MAX_ABS_RHO)
        polished = {}
        for row in np.flatnonzero(a <= 1e-12 * batch.scale):
            # a at the Zeliade bound a >= 0: let the five-parameter polish of ``fit_svi_slice`` take a < 0
            d = data[full[row]]
            span = max(float(batch.k_hi[row] - batch.k_lo[row]), 1e-3)
            start = SviParams(float(a[row]), float(b[row]), float(rho[row]), float(m[row]), float(sigma[row]))
            bounds_m = (float(batch.k_lo[row]) - span, float(batch.k_hi[row]) + span)
            polished[int(row)] = _polish(
                d, start, bounds_m, (1e-4, max(2.0, 2.0 * span)), True, BATCH_POLISH_ITERATIONS, BATCH_POLISH_FTOL
            )
        for row, p in polished.items():
            a[row], b[row], rho[row], m[row], sigma[row] = p.a, p.b, p.rho, p.m, p.sigma
        g_min = batched_durrleman_min(a, b, rho, m, sigma, batch.t)
        for row, i in enumerate(full):
            d = data[i]
            params = SviParams(float(a[row]), float(b[row]), float(rho[row]), float(m[row]), float(sigma[row]))
            model_vol = svi_implied_vol(params, d.k, d.t)
            rmse = float(np.sqrt(np.mean((model_vol - np.sqrt(d.w / d.t)) ** 2)) * 100.0)
            out[i] = SviFit(
                a=params.a,
                b=params.b,
                rho=params.rho,
                m=params.m,
                sigma=params.sigma,
                time_years=d.t,
                rmse_vol_points=rmse,
                n_quotes=int(d.k.size),
                method=METHOD_QUASI_EXPLICIT_BATCHED,
                converged=bool(converged[row]),
                butterfly_arbitrage_free=bool(g_min[row] >= -ARBITRAGE_TOLERANCE),
                min_durrleman_g=float(g_min[row]),
            )
    return [f for f in out if f is not None]


# --------------------------------------------------------------------------------------------------
# Surface
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CalendarCheck:
    """Calendar-arbitrage check of adjacent slices on a log-moneyness grid (Gatheral & Jacquier 2014).

    A slice is flagged (``per_slice_arbitrage_free[i]`` False) when its total variance exceeds the
    next slice's, or falls below the previous slice's, at some grid point: both slices of a crossing
    pair are flagged. ``worst_violation`` is ``max_{i,k} (w_i(k) - w_{i+1}(k))`` clipped at 0 (total
    variance units), at ``worst_log_moneyness`` between slices ``worst_pair``.
    """

    arbitrage_free: bool
    per_slice_arbitrage_free: tuple[bool, ...]
    worst_violation: float
    worst_log_moneyness: float | None
    worst_pair: tuple[int, int] | None
    log_moneyness_grid: FloatArray


@dataclass(frozen=True, eq=False)
class SurfaceGrid:
    """The surface at the slice expiries: arrays of shape ``(n_expiries, n_k)``."""

    time_years: FloatArray
    log_moneyness: FloatArray
    implied_vol: FloatArray
    total_variance: FloatArray


@dataclass(frozen=True, eq=False)
class SviSurface:
    """SVI slices sorted by expiry, interpolated linearly in total variance at fixed log-moneyness.

    For ``t_i <= t <= t_{i+1}``: ``w(t, k) = w_i(k) + (t - t_i) / (t_{i+1} - t_i) (w_{i+1}(k) - w_i(k))``,
    which is non-decreasing in ``t`` wherever the slices are free of calendar arbitrage
    (Gatheral & Jacquier 2014). Before the first expiry ``w(t, k) = w_1(k) t / t_1``
    (total variance proportional to ``t``); after the last, ``w(t, k) = w_N(k) t / t_N`` (constant
    implied volatility at each ``k``).
    """

    slices: tuple[SviFit, ...]
    times: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.slices, key=lambda s: s.time_years))
        if not ordered:
            raise ValueError("an SVI surface needs at least one slice")
        times = np.array([s.time_years for s in ordered], dtype=np.float64)
        if np.any(times <= 0.0) or np.any(np.diff(times) <= 0.0):
            raise ValueError("slice expiries must be positive and distinct")
        object.__setattr__(self, "slices", ordered)
        object.__setattr__(self, "times", times)

    def _slice_variances(self, k: FloatArray) -> FloatArray:
        """``w_i(k)`` for every slice, shape ``(n_slices,) + k.shape``."""
        return np.stack([svi_total_variance(s, k) for s in self.slices])

    def default_grid(self) -> FloatArray:
        """201 points, ``k in [-1.5, 1.5] * sqrt(last expiry)``."""
        return butterfly_grid(float(self.times[-1]))

    def calendar_check(self, log_moneyness_grid: ArrayLike | None = None) -> CalendarCheck:
        """Is total variance non-decreasing in expiry at every ``k`` of the grid (default: ``default_grid``)?

        ``ARBITRAGE_TOLERANCE`` of total variance is allowed.
        """
        k = self.default_grid() if log_moneyness_grid is None else np.asarray(log_moneyness_grid, float).ravel()
        n = len(self.slices)
        if n < 2 or k.size == 0:
            return CalendarCheck(True, (True,) * n, 0.0, None, None, k)
        w = self._slice_variances(k)
        excess = w[:-1] - w[1:]  # (n - 1, n_k): positive means the later slice is below the earlier
        bad_pair = np.any(excess > ARBITRAGE_TOLERANCE, axis=1)
        ok = np.ones(n, dtype=bool)
        ok[:-1] &= ~bad_pair
        ok[1:] &= ~bad_pair
        i, j = np.unravel_index(int(np.argmax(excess)), excess.shape)
        worst = float(excess[i, j])
        if worst > ARBITRAGE_TOLERANCE:
            return CalendarCheck(False, tuple(bool(x) for x in ok), worst, float(k[j]), (int(i), int(i) + 1), k)
        return CalendarCheck(True, (True,) * n, 0.0, None, None, k)

    def total_variance(self, time_years: ArrayLike, log_moneyness: ArrayLike) -> FloatArray:
        """Total implied variance at broadcast ``(t, k)``; ``t >= 0`` (see class docstring)."""
        t, k = np.broadcast_arrays(
            np.asarray(time_years, dtype=np.float64), np.asarray(log_moneyness, dtype=np.float64)
        )
        if np.any(t < 0.0) or not np.all(np.isfinite(t)):
            raise ValueError("time_years must be finite and non-negative")
        tf, kf = t.ravel(), k.ravel()
        w = self._slice_variances(kf)  # (n, size)
        n = len(self.slices)
        idx = np.searchsorted(self.times, tf, side="right") - 1  # slice at or before t, -1 before the first
        cols = np.arange(tf.size)
        lo = np.clip(idx, 0, n - 1)
        hi = np.clip(idx + 1, 0, n - 1)
        t_lo, t_hi = self.times[lo], self.times[hi]
        w_lo, w_hi = w[lo, cols], w[hi, cols]
        interior = (idx >= 0) & (idx < n - 1)
        frac = np.where(interior, (tf - t_lo) / np.where(interior, t_hi - t_lo, 1.0), 0.0)
        out = np.where(interior, w_lo + frac * (w_hi - w_lo), w_lo * tf / t_lo)
        return out.reshape(t.shape)

    def implied_vol(self, time_years: ArrayLike, log_moneyness: ArrayLike) -> FloatArray:
        """Implied vol ``sqrt(w(t, k) / t)`` at broadcast ``(t, k)``, ``t > 0``; NaN where ``w < 0``."""
        t = np.asarray(time_years, dtype=np.float64)
        if np.any(t <= 0.0):
            raise ValueError("time_years must be positive for an implied volatility")
        w = self.total_variance(t, log_moneyness)
        with np.errstate(invalid="ignore"):
            return np.sqrt(np.where(w >= 0.0, w, np.nan) / t)

    def grid(self, log_moneyness_grid: ArrayLike) -> SurfaceGrid:
        """Each slice's implied vol and total variance on ``log_moneyness_grid``."""
        k = np.asarray(log_moneyness_grid, dtype=np.float64).ravel()
        w = self._slice_variances(k)
        with np.errstate(invalid="ignore"):
            iv = np.sqrt(np.where(w >= 0.0, w, np.nan) / self.times[:, None])
        return SurfaceGrid(time_years=self.times.copy(), log_moneyness=k, implied_vol=iv, total_variance=w)
