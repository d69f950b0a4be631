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
found by a multi-start bounded Nelder-Mead search. Butterfly arbitrage is checked with Durrleman's
condition ``g(k) >= 0`` and calendar arbitrage by total variance being non-decreasing in expiry at
fixed ``k`` (Gatheral & Jacquier 2014, "Arbitrage-free SVI volatility surfaces").

Everything here is pure numerics: numpy arrays and frozen dataclasses in, the same out.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

FloatArray = NDArray[np.float64]

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
    start = SviParams(
        stage1.a, stage1.b, float(np.clip(stage1.rho, -MAX_ABS_RHO, MAX_ABS_RHO)), stage1.m, stage1.sigma
    )
    return _polish(data, start, m_bounds, sigma_bounds), converged


def _polish(
    data: _Slice, start: SviParams, m_bounds: tuple[float, float], sigma_bounds: tuple[float, float]
) -> SviParams:
    """SLSQP refinement of all five parameters under the exact raw-SVI constraints (see caller)."""

    def unpack(x: NDArray[np.float64]) -> SviParams:
        return SviParams(float(x[0]), float(x[1]), float(x[2]), float(x[3]), float(x[4]))

    constraints = [
        {"type": "ineq", "fun": lambda x: x[0] + x[1] * x[4] * np.sqrt(max(1.0 - x[2] ** 2, 0.0))},
        {"type": "ineq", "fun": lambda x: MAX_WING_SLOPE - x[1] * (1.0 + x[2])},
        {"type": "ineq", "fun": lambda x: MAX_WING_SLOPE - x[1] * (1.0 - x[2])},
    ]

    def objective_and_gradient(x: NDArray[np.float64]) -> tuple[float, FloatArray]:
        a, b, rho, m, sigma = (float(e) for e in x)
        dk = data.k - m
        root = np.sqrt(dk * dk + sigma * sigma)
        resid = (a + b * (rho * dk + root) - data.w) / data.scale
        dw = np.stack((np.ones_like(dk), rho * dk + root, b * dk, -b * (rho + dk / root), b * sigma / root))
        wr = data.weights * resid
        return float(wr @ resid), 2.0 * (dw @ wr) / data.scale

    x0 = np.array([start.a, start.b, start.rho, start.m, start.sigma])
    bounds = [(None, None), (0.0, MAX_WING_SLOPE), (-MAX_ABS_RHO, MAX_ABS_RHO), m_bounds, sigma_bounds]
    base = _objective(data, start)
    try:
        res = minimize(
            objective_and_gradient,
            x0,
            jac=True,
            method="SLSQP",
            bounds=bounds,
            constraints=constraints,
            options={"ftol": 1e-20, "maxiter": 300},
        )
    except (ValueError, np.linalg.LinAlgError):  # pragma: no cover - defensive
        return start
    cand = unpack(res.x)
    if np.all(np.isfinite(res.x)) and _feasible(cand) and _objective(data, cand) < base * (1.0 - 1e-9):
        return cand
    return start


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
        k = (
            self.default_grid()
            if log_moneyness_grid is None
            else np.asarray(log_moneyness_grid, float).ravel()
        )
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
            return CalendarCheck(
                False, tuple(bool(x) for x in ok), worst, float(k[j]), (int(i), int(i) + 1), k
            )
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
