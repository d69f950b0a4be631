"""Exact American option prices: the exercise-boundary integral equation (Andersen, Lake and Offengeld).

L. Andersen, M. Lake and D. Offengeld, "High-performance American option pricing", Journal of
Computational Finance 20(1), 2016 (ALO). A put on a stock with continuous dividend yield ``q`` and rate
``r`` (calls by the McDonald-Schroder symmetry ``C(S, K, T, r, q, sigma) = P(K, S, T, q, r, sigma)``) is
worth the European put plus the early-exercise premium over its exercise boundary ``B(tau)`` (``tau`` time
to maturity)::

    V(S) = p_E(S) + int_0^T [r K e^{-rt} N(-d-(t, S/B(T-t))) - q S e^{-qt} N(-d+(t, S/B(T-t)))] dt,
    d+-(t, z) = (ln z + (r - q) t) / (sigma sqrt t) +- sigma sqrt(t) / 2,

and the boundary solves ALO's integral equation (their FP-A form) ``B(tau) = K e^{-(r-q) tau} N(tau, B) /
D(tau, B)`` with::

    N = N(d-(tau, B(tau)/K)) + r int_0^tau e^{ru} N(d-(tau - u, B(tau)/B(u))) du,
    D = N(d+(tau, B(tau)/K)) + q int_0^tau e^{qu} N(d+(tau - u, B(tau)/B(u))) du.

Discretization (ALO section 4): ``B(0+) = X = K min(1, r/q)`` (``K`` when ``q <= 0``); the boundary is
carried as ``s(tau) = -ln(B(tau)/X) >= 0`` and ``H = s^2`` is interpolated by a polynomial in
``z = 2 sqrt(tau/T) - 1`` through the ``NODES + 1`` Chebyshev points of the second kind (barycentric
Lagrange form). Both integrals are taken in ``u = tau sin^2(phi)`` (boundary time) so that ``sqrt(u)`` and
``sqrt(tau - u)`` are smooth in ``phi``, by Gauss-Legendre in ``phi`` with ``FP_POINTS`` points for the
boundary equation and ``PRICE_POINTS`` for the premium. Departure from ALO: the discretized boundary
equation ``ln B_i = ln(K e^{-(r-q) tau_i} N_i / D_i)`` at the nodes is solved by Newton's method with
its analytic Jacobian (all nodes at once; a step that does not reduce the largest residual is halved,
up to 8 times), started from Li's QD+ boundary (M. Li, "Analytical
approximations for the critical stock prices of American options: a performance comparison", 2009;
Halley's iteration to ``QD_PLUS_TOL``, node by node from ``H = s^2`` extrapolated from the previous two
nodes), instead of ALO's fixed-point (Jacobi-Newton) iteration, which converges slowly for long-dated
low-volatility options; the iteration stops once the next step, predicted from the quadratic
convergence of the last two, is at most ``NEWTON_STEP_TOL`` in ``s`` (or the last one was), normally
after 2 steps, at most ``NEWTON_MAX_STEPS``. The iterates do not depend on the tolerance, so a solve at the
Greeks' tolerance of inputs solved before at ``NEWTON_STEP_TOL`` continues that solve's kept Newton state
(``solve_boundaries``): the same bits, without the QD+ start and its first steps. The point-wise integrands are
evaluated in branch-free loops over all quadrature points (vectorized by LLVM) and summed in point order afterwards.

Delta and gamma are the ``S``-derivatives of the same representation (the boundary does not depend on
``S``); theta is ``r V - (r - q) S delta - sigma^2 S^2 gamma / 2`` from the Black-Scholes equation in
the continuation region and 0 in the exercise region (``S <= B(T)`` for a put). Calls map delta and
gamma through the symmetry and the homogeneity of ``P`` in ``(S, K)``.

Regimes of the put (the call's through the symmetry): early exercise is never optimal when
``r <= 0`` and ``r <= q`` (the European value is returned); ``r < 0`` with ``q < r`` has two exercise
boundaries (Andersen and Lake 2021, "Fast American option pricing: the double-boundary case") and is
priced by the finite-difference solver ``american_fd.fd_american_price`` (QuantLib's QD+ and QD-FP
engines refuse it); at ``sigma sqrt(T) <= MIN_TOTAL_STD`` the deterministic value
``max_t (K e^{-rt} - S e^{-qt})^+`` over ``t in [0, T]`` is returned.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from risk_pipeline.quant import special as _sf
from risk_pipeline.quant._numba import JIT, BoolArray, FloatArray, IntArray, inner_njit, run_chunked
from risk_pipeline.quant.american_fd import fd_american_put
from risk_pipeline.quant.bsm import _bsm_point, _greeks_kernel, _price_kernel, bsm_price_point
from risk_pipeline.quant.special import exp_minus_half_square, fast_exp, fast_log

#: Chebyshev intervals of the boundary interpolation (``NODES + 1`` points, ``tau = 0`` included). With 12
#: intervals and 10 points below, 2 of 20,000 random contracts of the issue's grid (vol 5.5-6.5 %, |r - q| >=
#: 6.5 %, 1.7-2 years) missed 1e-6 relative (3.2e-6, 1.7e-6) against a 32-node run of the same engine; with
#: 14 and 12 every one is within 0.78 of the tolerance, at about 0.78 of the speed.
NODES = 14
#: Gauss-Legendre points of each integral of the boundary equation.
FP_POINTS = 12
#: Gauss-Legendre points of the early-exercise premium integral.
PRICE_POINTS = 48
#: Gauss-Legendre points of the premium integral in the Greeks (``american_point(greeks=True)``).
GREEKS_PRICE_POINTS = 96
#: The Newton iteration on the boundary stops once the next step, predicted from the quadratic
#: convergence of the last two, would be at most this (in ``s = -ln(B/X)``), or the last one was. Measured
#: on 20,000 options of the issue's grid: 2.03 steps on average, prices within 3.2e-8 relative or 3.2e-10
#: of the strike (whichever is larger) of the fully converged ones (1e-8: 2.5 steps, 1.9e-8 / 1.9e-10).
NEWTON_STEP_TOL = 1e-6
#: Same for the Greeks (bumped prices): converged to rounding, so the prices are smooth in the inputs.
NEWTON_STEP_TOL_GREEKS = 1e-13
#: Newton steps at most.
NEWTON_MAX_STEPS = 40
#: Halley's iteration of the QD+ starting boundary stops after a step below this fraction of ``X``.
QD_PLUS_TOL = 1e-4
#: The premium quadrature's first panel spans ``w = sqrt(t / T)`` in ``[0, min(LAYER_WIDTH w0, LAYER_MAX)]``
#: with ``w0 = ln(S / B(T)) / (sigma sqrt T)`` (``put_from_boundary``).
LAYER_WIDTH = 8.0
LAYER_MAX = 0.7
#: Relative spot step of the gamma taken from analytic deltas (``american_point(gamma_from_delta=True)``).
GAMMA_BUMP = 1e-4
#: ``sigma sqrt(T)`` at or below this uses the deterministic (zero-volatility) value.
MIN_TOTAL_STD = 1e-8

_INV_SQRT_2PI = 0.39894228040143267794


#: W. J. Cody's erf/erfc coefficients of ``special.norm_cdf_from_exp`` (``_ncdf_scalar``).
_A = (_sf._A0, _sf._A1, _sf._A2, _sf._A3, _sf._A4)
_B = (_sf._B0, _sf._B1, _sf._B2, _sf._B3)
_C = (_sf._C0, _sf._C1, _sf._C2, _sf._C3, _sf._C4, _sf._C5, _sf._C6, _sf._C7, _sf._C8)
_D = (_sf._D0, _sf._D1, _sf._D2, _sf._D3, _sf._D4, _sf._D5, _sf._D6, _sf._D7)
_P = (_sf._P0, _sf._P1, _sf._P2, _sf._P3, _sf._P4, _sf._P5)
_Q = (_sf._Q0, _sf._Q1, _sf._Q2, _sf._Q3, _sf._Q4)
_INV_SQRT2 = _sf._INV_SQRT2
_SQRT_PI_INV = _sf._SQRT_PI_INV


def _barycentric_matrix(x: FloatArray, z: FloatArray) -> FloatArray:
    """Rows: Lagrange basis on the Chebyshev points ``z`` (second kind) evaluated at ``x``."""
    w = (-1.0) ** np.arange(z.size)
    w[0] *= 0.5
    w[-1] *= 0.5
    d = x[:, None] - z[None, :]
    exact = d == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = w[None, :] / d
        out = t / t.sum(axis=1, keepdims=True)
    rows = exact.any(axis=1)
    out[rows] = exact[rows].astype(np.float64)
    return np.ascontiguousarray(out)


def alo_tables(nodes: int, fp_points: int, price_points: int) -> tuple[FloatArray, ...]:
    """Discretization tables (parameter-free): Chebyshev points and barycentric weights, the quadrature
    nodes and weights, the interpolation matrices; ``tab`` argument of the kernels below."""
    z = -np.cos(np.arange(nodes + 1) * np.pi / nodes)
    bw = (-1.0) ** np.arange(nodes + 1)
    bw[0] *= 0.5
    bw[-1] *= 0.5
    gx, gw = np.polynomial.legendre.leggauss(fp_points)
    phi = 0.25 * np.pi * (gx + 1.0)
    fw = gw * 0.25 * np.pi * np.sin(2.0 * phi)  # d(sin^2 phi) = sin(2 phi) dphi
    # interpolation of H at u = tau_i sin^2(phi_k): z(u) = (1 + z_i) sin(phi_k) - 1, independent of T
    fm = np.empty((nodes, nodes + 1, fp_points))
    for i in range(1, nodes + 1):
        fm[i - 1] = _barycentric_matrix((1.0 + z[i]) * np.sin(phi) - 1.0, z).T
    # premium: w = sqrt(t / T) in [0, LAYER_MAX] (dt = 2 T w dw) and phi = arccos(w) in [0, arccos(LAYER_MAX)]
    # (dt = T sin(2 phi) dphi), half of the points each (put_from_boundary moves the split closer to 0)
    lx, lw = np.polynomial.legendre.leggauss(price_points // 2)
    w_a = 0.5 * LAYER_MAX * (lx + 1.0)
    phi_c = np.arccos(LAYER_MAX)
    phi_b = 0.5 * phi_c * (lx + 1.0)
    pc = np.concatenate([w_a, np.cos(phi_b)])
    pw = np.concatenate([lw * 0.5 * LAYER_MAX * 2.0 * w_a, lw * 0.5 * phi_c * np.sin(2.0 * phi_b)])
    pm = _barycentric_matrix(2.0 * np.sqrt(1.0 - pc * pc) - 1.0, z)
    # the tables in the layouts of the kernels' vectorized loops (long or padded inner loops: LLVM's vector loops run
    # only on trip counts of at least their width times their unrolling, a shorter one all in scalar code):
    # fmj[j, i * fp_points + k] = fm[i, j, k] (the interpolation, flat over the points of every node), fmp[i, k, j - 1]
    # = fm[i, j, k] (the Jacobian's sums, the Chebyshev points j side by side, padded with zeros to a multiple of
    # _PAD columns), pts: sin^2 phi, the weights and cos phi of every point c = i * fp_points + k (flat loops), and
    # pmt[j, c] = pm[c, j] (the premium points' interpolated H side by side). As few arrays as needed: the tuple is
    # an argument of every compiled call, each of its arrays reference-counted at each call not inlined.
    fmj = np.ascontiguousarray(fm.transpose(1, 0, 2).reshape(nodes + 1, nodes * fp_points))
    fmp = np.zeros((nodes, fp_points, _padded(nodes)))
    fmp[:, :, :nodes] = fm[:, 1:, :].transpose(0, 2, 1)
    fs2 = np.sin(phi) ** 2
    pts = np.stack([np.tile(a, nodes) for a in (fs2, fw, np.cos(phi))])
    return (z, bw, fs2, pts, fmj, fmp, pc, pw, np.ascontiguousarray(pm.T), lx, lw)


#: Width to which the Newton solve's rows over the boundary nodes are padded (``alo_tables``, ``_solve``).
_PAD = 8


def _padded(n: int) -> int:
    """``n`` rounded up to a multiple of ``_PAD``."""
    return -(-n // _PAD) * _PAD


#: Tables of the exact engine (``NODES``, ``FP_POINTS``, ``PRICE_POINTS``).
EXACT_TABLES = alo_tables(NODES, FP_POINTS, PRICE_POINTS)
#: Coarser tables for the nodes of the scenario engine's early-exercise-premium grids (``scenario_engine.py``): 6
#: Chebyshev intervals, 6 points per boundary integral, 16 premium points. Node prices within 2.1e-6 K of the exact
#: engine (converged boundary, ``EXACT_TABLES``) on the nodes of a 4,680-American grid build, within 1.0e-5 K on
#: 40,000 random contracts of up to 3 years, 150 % vol and 10 % rates and yields (8, 8, 24 before: 5.3e-7, 1.7e-6),
#: far below the grid's own interpolation error (``KINK_CHECK_TOL`` 2e-5 K); about 25 % fewer operations in the
#: boundary solves and 29 % in the node prices (docs/speed_log.md).
GRID_TABLES = alo_tables(6, 6, 16)
#: Tables of the Greeks: ``GREEKS_PRICE_POINTS`` premium points, so that the spot derivatives stay
#: accurate just above the exercise boundary.
GREEKS_TABLES = alo_tables(NODES, FP_POINTS, GREEKS_PRICE_POINTS)


@inner_njit(forceinline=True)
def _ncdf_scalar(z: float, e: float) -> float:
    """``norm_cdf_from_exp(z, e)`` bit for bit, for scalar code: only the rational of ``|z|``'s region is evaluated
    (the branch-free form adds the other two times 0.0, which changes no bit of the finite terms)."""
    y = abs(z) * _INV_SQRT2
    if y <= 0.46875:
        w1 = y * y
        num1 = (((_A[4] * w1 + _A[0]) * w1 + _A[1]) * w1 + _A[2]) * w1 + _A[3]
        den1 = (((w1 + _B[0]) * w1 + _B[1]) * w1 + _B[2]) * w1 + _B[3]
        tail = 0.5 * (1.0 - y * (num1 / den1))
    elif y > 4.0:
        y3 = np.minimum(y, 32.0)
        w3 = y3 * y3
        p3 = ((((_P[4] * w3 + _P[3]) * w3 + _P[2]) * w3 + _P[1]) * w3 + _P[0]) * w3 + _P[5]
        q3 = w3 * (((((_Q[4] * w3 + _Q[3]) * w3 + _Q[2]) * w3 + _Q[1]) * w3 + _Q[0]) * w3 + 1.0)
        tail = 0.5 * (e * ((q3 * _SQRT_PI_INV - p3) / (q3 * y3)))
    else:
        num2 = ((((_C[8] * y + _C[0]) * y + _C[1]) * y + _C[2]) * y + _C[3]) * y + _C[4]
        num2 = ((num2 * y + _C[5]) * y + _C[6]) * y + _C[7]
        den2 = ((((y + _D[0]) * y + _D[1]) * y + _D[2]) * y + _D[3]) * y + _D[4]
        den2 = ((den2 * y + _D[5]) * y + _D[6]) * y + _D[7]
        tail = 0.5 * (e * (num2 / den2))
    return tail if z < 0.0 else 1.0 - tail


@inner_njit(forceinline=True)
def _ncdf_vec(z: float, e: float) -> float:
    """``norm_cdf_from_exp(z, e)`` bit for bit, for the engine's vectorized loops: the three rationals of Cody's
    regions are evaluated as there (branch-free), but the region's numerator, denominator and tail are selected
    instead of summed with 0/1 masks. The masked sums add the other regions' terms times 0.0, which are finite (each
    rational's argument is clamped to its region) and so change no bit of the selected one; the selects save the
    mask products and sums (about 9 % of a cdf with its ``exp_minus_half_square``)."""
    y = abs(z) * _INV_SQRT2
    r1 = y <= 0.46875
    r3 = y > 4.0
    y1 = np.minimum(y, 0.46875)
    w1 = y1 * y1
    num1 = (((_A[4] * w1 + _A[0]) * w1 + _A[1]) * w1 + _A[2]) * w1 + _A[3]
    den1 = (((w1 + _B[0]) * w1 + _B[1]) * w1 + _B[2]) * w1 + _B[3]
    y2 = np.minimum(y, 4.0)
    num2 = ((((_C[8] * y2 + _C[0]) * y2 + _C[1]) * y2 + _C[2]) * y2 + _C[3]) * y2 + _C[4]
    num2 = ((num2 * y2 + _C[5]) * y2 + _C[6]) * y2 + _C[7]
    den2 = ((((y2 + _D[0]) * y2 + _D[1]) * y2 + _D[2]) * y2 + _D[3]) * y2 + _D[4]
    den2 = ((den2 * y2 + _D[5]) * y2 + _D[6]) * y2 + _D[7]
    y3 = np.minimum(np.maximum(y, 4.0), 32.0)
    w3 = y3 * y3
    p3 = ((((_P[4] * w3 + _P[3]) * w3 + _P[2]) * w3 + _P[1]) * w3 + _P[0]) * w3 + _P[5]
    q3 = w3 * (((((_Q[4] * w3 + _Q[3]) * w3 + _Q[2]) * w3 + _Q[1]) * w3 + _Q[0]) * w3 + 1.0)
    num = num1 if r1 else ((q3 * _SQRT_PI_INV - p3) if r3 else num2)
    den = den1 if r1 else ((q3 * y3) if r3 else den2)
    ratio = num / den
    tail = 0.5 * ((1.0 - y1 * ratio) if r1 else (e * ratio))  # N(-|z|)
    return tail if z < 0.0 else 1.0 - tail


#: ``|z| / sqrt(2)`` above which Cody's third (asymptotic) rational serves ``N(z)`` (``_ncdf_near``).
_FAR = 4.0


@inner_njit(forceinline=True)
def _ncdf_near(z: float, e: float) -> float:
    """``_ncdf_vec(z, e)`` bit for bit where ``|z| / sqrt(2) <= _FAR`` (or ``z`` is NaN), for the vectorized loops
    whose points are almost never beyond: only the first two of Cody's rationals are evaluated (about a quarter of the
    cdf's operations fewer). Beyond ``_FAR`` the value is finite but wrong (region 2's rational at the clamp, times
    ``e``): the caller counts such points (``_is_far``) and evaluates them again with ``_ncdf_scalar``."""
    y = abs(z) * _INV_SQRT2
    r1 = y <= 0.46875
    y1 = np.minimum(y, 0.46875)
    w1 = y1 * y1
    num1 = (((_A[4] * w1 + _A[0]) * w1 + _A[1]) * w1 + _A[2]) * w1 + _A[3]
    den1 = (((w1 + _B[0]) * w1 + _B[1]) * w1 + _B[2]) * w1 + _B[3]
    y2 = np.minimum(y, 4.0)
    num2 = ((((_C[8] * y2 + _C[0]) * y2 + _C[1]) * y2 + _C[2]) * y2 + _C[3]) * y2 + _C[4]
    num2 = ((num2 * y2 + _C[5]) * y2 + _C[6]) * y2 + _C[7]
    den2 = ((((y2 + _D[0]) * y2 + _D[1]) * y2 + _D[2]) * y2 + _D[3]) * y2 + _D[4]
    den2 = ((den2 * y2 + _D[5]) * y2 + _D[6]) * y2 + _D[7]
    ratio = (num1 if r1 else num2) / (den1 if r1 else den2)
    tail = 0.5 * ((1.0 - y1 * ratio) if r1 else (e * ratio))  # N(-|z|)
    return tail if z < 0.0 else 1.0 - tail


@inner_njit(forceinline=True)
def _is_far(z: float) -> bool:
    """``z`` is in Cody's third region (``_ncdf_near`` not valid there)."""
    return abs(z) * _INV_SQRT2 > _FAR


@inner_njit()
def exercise_limit(k: float, r: float, q: float) -> float:
    """``X = B(0+)`` of a put with early exercise: ``K min(1, r/q)`` for ``q > 0``, else ``K``."""
    return k * min(1.0, r / q) if q > 0.0 else k


@inner_njit(forceinline=True)
def _halley_step(
    x: float, tau: float, k: float, r: float, q: float, sig: float, terms: tuple[float, float, float, float, float]
) -> float:
    """Halley's step of QD+'s boundary equation at ``x`` (``terms`` of ``tau`` from ``qd_plus_boundary``)."""
    v, dr, dq, alpha, beta = terms
    s2 = sig * sig
    dp = math.log(x * dq / (k * dr)) / v + 0.5 * v
    dm = dp - v
    e_p = exp_minus_half_square(dp)
    n_mdp = _ncdf_scalar(-dp, e_p)
    n_mdm = _ncdf_scalar(-dm, exp_minus_half_square(-dm))
    pdf = _INV_SQRT_2PI * e_p
    npv = dr * k * n_mdm - x * dq * n_mdp
    theta = r * k * dr * n_mdm - q * x * dq * n_mdp - s2 * x / (2.0 * v) * dq * pdf
    charm = -dq * (pdf * ((r - q) / v - dm / (2.0 * tau)) + q * n_mdp)
    fx = (1.0 - dq * n_mdp) * x - beta * (k - x - npv) + alpha * theta / dr
    f1 = 1.0 - dq * n_mdp + dq / v * pdf + beta * (1.0 - dq * n_mdp) + alpha / dr * charm
    gam = pdf * dq / (v * x)
    colour = gam * (q + (r - q) * dp / v + (1.0 - dp * dm) / (2.0 * tau))
    f2 = dq * (pdf / (x * v) - pdf * dp / (x * v * v)) + beta * gam + alpha / dr * colour
    return fx / f1 / (1.0 - 0.5 * fx * f2 / (f1 * f1))


@inner_njit()
def qd_plus_boundary(
    tau: float, k: float, r: float, q: float, sig: float, x_max: float, start: float, tol: float
) -> float:
    """Li's (2009) QD+ approximation of the put exercise boundary at time to maturity ``tau``: Halley's
    iteration from ``start`` until a step below ``tol * X``."""
    dr = math.exp(-r * tau)
    rt = r * tau
    ddr = r / (1.0 - dr) if abs(rt) > 1e-5 else 1.0 / (tau * (1.0 - 0.5 * rt * (1.0 - rt / 3.0)))
    return _qd_plus(tau, k, r, q, sig, x_max, start, tol, dr, math.exp(-q * tau), ddr)


@inner_njit()
def _qd_plus(
    tau: float,
    k: float,
    r: float,
    q: float,
    sig: float,
    x_max: float,
    start: float,
    tol: float,
    dr: float,
    dq: float,
    ddr: float,
) -> float:
    """``qd_plus_boundary`` given its volatility-free terms ``dr = e^{-r tau}``, ``dq = e^{-q tau}`` and ``ddr``
    (``_boundary_rates``: once for the boundary solves of one option's vol nodes)."""
    s2 = sig * sig
    v = sig * math.sqrt(tau)
    om = 2.0 * (r - q) / s2
    root = math.sqrt((om - 1.0) ** 2 + 8.0 * ddr / s2)
    lam = 0.5 * (-(om - 1.0) - root)
    lam_p = 2.0 * ddr * ddr / (s2 * root)
    den = 2.0 * lam + om - 1.0
    alpha = 2.0 * dr / (s2 * den)
    beta = alpha * (ddr + lam_p / den) - lam
    terms = (v, dr, dq, alpha, beta)
    x_min = 1e-12 * x_max
    x = start
    for _ in range(16):
        x_new = max(x_min, x - _halley_step(x, tau, k, r, q, sig, terms))
        if not x_new == x_new:
            break
        done = abs(x_new - x) < tol * x_max
        x = x_new
        if done:
            break
    return min(x, x_max)


@inner_njit()
def _solve(a: FloatArray, b: FloatArray, n: int) -> None:
    """``b <- a^{-1} b`` by Gaussian elimination with partial pivoting of the ``n x n`` matrix ``a[:, :n]`` (``a`` is
    overwritten; its columns from ``n`` on are padding, finite, e.g. zeros). The elimination updates whole rows
    (``a.shape[1]`` columns, a multiple of ``_PAD``: one vector loop): on the columns after the pivot's the operations
    of an update of those columns alone, on the pivot's and earlier ones values that are never read again (the
    pivot searches and the back substitution read only later columns), on the padding whatever, never read."""
    w = a.shape[1]
    for c in range(n):
        p = c
        big = abs(a[c, c])
        for i in range(c + 1, n):
            if abs(a[i, c]) > big:
                big = abs(a[i, c])
                p = i
        if p != c:
            for j in range(w):
                a[c, j], a[p, j] = a[p, j], a[c, j]
            b[c], b[p] = b[p], b[c]
        inv = 1.0 / a[c, c]
        for i in range(c + 1, n):
            f = a[i, c] * inv
            if f != 0.0:
                for j in range(w):
                    a[i, j] -= f * a[c, j]
                b[i] -= f * b[c]
    for c in range(n - 1, -1, -1):
        acc = b[c]
        for j in range(c + 1, n):
            acc -= a[c, j] * b[j]
        b[c] = acc / a[c, c]


@inner_njit()
def put_boundary(
    k: float,
    r: float,
    q: float,
    sig: float,
    t: float,
    x_max: float,
    s: FloatArray,
    tol: float,
    tab: tuple[FloatArray, ...],
    warm: bool,
) -> int:
    """Solve the boundary equation: ``s[j] = -ln(B(tau_j)/X)`` at the ``NODES + 1`` Chebyshev points
    ``tau_j = T (1 + z_j)^2 / 4``; Newton steps until one is at most ``tol``; returns the steps taken
    (negative if a step failed). Put with early
    exercise and a single boundary (``r >= 0``, not ``r <= 0 <= q``), ``sigma sqrt(T) > 0``. The Newton
    iteration starts from the QD+ boundary, or with ``warm`` from ``s`` as given (``s[0] = 0``; e.g. the
    boundary of a nearby option at the same node positions ``z_j``)."""
    n = tab[0].shape[0] - 1
    rates = np.empty((_RATE_ROWS, max(n * tab[2].shape[0], tab[5].shape[2])))
    _boundary_rates(r, q, t, tab, rates)
    work = np.empty((_WORK_ROWS, max(n * tab[2].shape[0], tab[5].shape[2])))
    jac = np.empty((n, tab[5].shape[2]))  # not a reshaped view: reshape's error path compiles string formatting
    mode = WARM_START if warm else QD_PLUS_START
    return _solve_boundary(k, r, q, sig, t, x_max, s, tol, tab, mode, rates, work, jac, np.empty(0))


#: Rows of ``_boundary_rates``' table and of ``_solve_boundary``'s workspace.
_RATE_ROWS = 9
_WORK_ROWS = 19
#: ``_solve_boundary``'s starts: QD+, the boundary given in ``s`` (warm), a stopped solve's Newton state (resumed).
QD_PLUS_START = 0
WARM_START = 1
RESUME_START = 2
#: Length of a Newton state (``_solve_boundary``'s ``state``) beyond the ``NODES`` boundary values ``s[1:]``: the
#: last accepted residual norm, the last step's size, the one before it, the steps taken.
_STATE_EXTRA = 4


@inner_njit()
def _boundary_rates(r: float, q: float, t: float, tab: tuple[FloatArray, ...], rates: FloatArray) -> None:
    """The volatility-free terms of ``put_boundary``'s solve (the same IEEE operations, so the same bits) into the
    rows of ``rates`` (``(_RATE_ROWS, NODES * FP_POINTS)``): per quadrature point ``c = i * FP_POINTS + kk`` the
    integrals' weights ``wr``, ``wq`` and the drift ``(r - q) tau_i (1 - sin^2 phi_kk)``; per node ``i`` its time
    ``tau_i``, ``(r - q) tau_i`` and QD+'s ``e^{-r tau_i}``, ``e^{-q tau_i}`` and ``ddr``. Shared by the solves of
    one option's vol nodes (``boundary_kernel``)."""
    z_c = tab[0]
    n = z_c.shape[0] - 1
    lq = tab[2].shape[0]
    sqt = math.sqrt(t)
    wr = rates[0]
    wq = rates[1]
    drift = rates[2]
    tau = rates[3]
    rqt = rates[4]
    qdr = rates[5]
    qdq = rates[6]
    qddr = rates[7]
    for i in range(n):
        xi = 0.5 * sqt * (1.0 + z_c[i + 1])
        ti = xi * xi
        tau[i] = ti
        rqt[i] = (r - q) * ti
        dr = math.exp(-r * ti)
        qdr[i] = dr
        qdq[i] = math.exp(-q * ti)
        rt = r * ti
        qddr[i] = r / (1.0 - dr) if abs(rt) > 1e-5 else 1.0 / (ti * (1.0 - 0.5 * rt * (1.0 - rt / 3.0)))
    for i in range(n, tab[5].shape[2]):  # the padding of _solve_boundary's loops over the nodes
        rqt[i] = 0.0
    tc = rates[8]  # tau_i of every point
    for i in range(n):
        ti = tau[i]
        for kk in range(lq):
            tc[i * lq + kk] = ti
    fs2c, fwc = tab[3][0], tab[3][1]  # fs2[kk] and fw[kk] of every point
    for c in range(n * lq):  # flat, branch-free: vectorized (the inner loops over kk were too short for it)
        ti = tc[c]
        rt = r * ti
        qt = q * ti
        drift[c] = (r - q) * ti * (1.0 - fs2c[c])
        wr[c] = rt * fwc[c] * fast_exp(rt * fs2c[c])
        wq[c] = qt * fwc[c] * fast_exp(qt * fs2c[c])


@inner_njit()
def _solve_boundary(
    k: float,
    r: float,
    q: float,
    sig: float,
    t: float,
    x_max: float,
    s: FloatArray,
    tol: float,
    tab: tuple[FloatArray, ...],
    mode: int,
    rates: FloatArray,
    work: FloatArray,
    jac: FloatArray,
    state: FloatArray,
) -> int:
    """``put_boundary`` given ``_boundary_rates(r, q, t, tab, rates)`` and its workspace (``work``:
    ``(_WORK_ROWS, max(NODES * FP_POINTS, _padded(NODES)))``, ``jac``: ``(NODES, _padded(NODES))``; contents not
    read), started
    by ``mode``: ``QD_PLUS_START``, ``WARM_START`` (Newton from ``s`` as given) or ``RESUME_START``.

    ``state`` (``NODES + _STATE_EXTRA`` values, or empty: none): the Newton state where the iteration stopped on its
    tolerance test (``s[1:]``, the last accepted residual norm, the last step's size, the one before, the steps;
    the steps NaN if it stopped otherwise), written unless resuming. ``RESUME_START`` continues such a state of a
    solve of the same inputs at a looser ``tol``: the iteration is the same whatever ``tol`` until its test, so the
    result is bit for bit a solve from QD+ at this ``tol``, unless the next step is halved (it would need the
    state's previous iterate): then 0 is returned (``s`` not converged; solve it again from QD+)."""
    z_c, fmj, fmp = tab[0], tab[4], tab[5]
    n = z_c.shape[0] - 1
    lq = tab[2].shape[0]
    nl = n * lq
    wr = rates[0]
    wq = rates[1]
    drift = rates[2]
    tau = rates[3]
    rqt = rates[4]
    lnk = math.log(k / x_max)
    s[0] = 0.0
    b0 = x_max
    resume = mode == RESUME_START
    if resume:
        for i in range(n):
            s[i + 1] = state[i]
    for i in range(0 if mode != QD_PLUS_START else n):  # QD+ start, node by node, Halley from H = s^2 extrapolated
        if i > 0:
            h1 = s[i] * s[i]
            h0 = s[i - 1] * s[i - 1]
            hg = h1 + (h1 - h0) * (z_c[i + 1] - z_c[i]) / (z_c[i] - z_c[i - 1])
            b0 = x_max * math.exp(-math.sqrt(max(hg, 0.0)))
        b0 = _qd_plus(tau[i], k, r, q, sig, x_max, b0, QD_PLUS_TOL, rates[5, i], rates[6, i], rates[7, i])
        s[i + 1] = max(-math.log(b0 / x_max), 0.0)
    # one workspace for the arrays of the iteration (its rows; row views, not slices: less code to compile)
    inv_sd = work[0]
    cc = work[1]
    sdv = work[2]
    sh = work[3]
    sn = work[4]
    tn = work[5]
    td = work[6]
    aa = work[7]
    ca = work[8]
    hh = work[9]
    s_acc = work[10]
    full = work[11]
    res = work[12]
    nn = work[13]
    dd = work[14]
    vv = work[15]
    pm0 = work[16]
    pp0 = work[17]
    acc = sn  # the Jacobian's sums (sn is read only by the integrand loop before them)
    wj = fmp.shape[2]  # the padded width of jac and of the Jacobian's sums
    stc = tn  # sigma sqrt(tau_i) of every point (tn is written before it is read in the iteration)
    for i in range(n):
        st = sig * math.sqrt(tau[i])
        vv[i] = st
        for kk in range(lq):
            stc[i * lq + kk] = st
    s1 = work[18]  # s[1:], padded to wj like vv and rqt (their padding finite: the padded lanes read no garbage)
    for i in range(n, wj):
        vv[i] = 1.0
        s1[i] = 0.0
    fcc = tab[3][2]  # fc[kk] of every point
    for c in range(nl):  # flat, branch-free: vectorized
        sd = stc[c] * fcc[c]
        inv_sd[c] = 1.0 / sd
        sdv[c] = sd
        cc[c] = drift[c] / sd + 0.5 * sd
    steps = 0
    prev = 1.0
    best = math.inf
    back = 0
    lam = 1.0
    for i in range(n + 1):
        s_acc[i] = s[i]
        full[i] = 0.0
    big = 0.0
    if resume:  # the stopped solve's test at this tolerance, then its iteration goes on
        best = state[n]
        big = state[n + 1]
        steps = int(state[n + 3])
        if big <= tol or (steps > 1 and big * big * big <= tol * state[n + 2] * state[n + 2]):
            return steps
        prev = big
    done = False
    for _ in range(NEWTON_MAX_STEPS - steps):
        steps += 1
        for j in range(n + 1):
            hh[j] = s[j] * s[j]
        for j in range(n):
            s1[j] = s[j + 1]
        # H at the points, sh[c] = sum over j of fm[i, j, kk] hh[j] (c = i * lq + kk) in the order of j from 0.0,
        # every point side by side (fmj[j] = fm[:, j, :] flat)
        for c in range(nl):
            sh[c] = 0.0
        for j in range(1, n + 1):
            hj = hh[j]
            for c in range(nl):
                sh[c] += fmj[j, c] * hj
        for i in range(n):
            for kk in range(lq):
                sn[i * lq + kk] = s[i + 1]
        far = 0
        for c in range(nl):  # flat, branch-free: vectorized
            root = math.sqrt(np.maximum(sh[c], 0.0))
            dp = (root - sn[c]) * inv_sd[c] + cc[c]
            dm = dp - sdv[c]
            e_p = exp_minus_half_square(dp)
            e_m = exp_minus_half_square(dm)
            tn[c] = wr[c] * _ncdf_near(dm, e_m)
            td[c] = wq[c] * _ncdf_near(dp, e_p)
            aa[c] = wr[c] * _INV_SQRT_2PI * e_m * inv_sd[c]
            ca[c] = wq[c] * _INV_SQRT_2PI * e_p * inv_sd[c]
            sh[c] = root
            far += _is_far(dm) | _is_far(dp)
        if far:  # the points in Cody's third region (almost none), their cdfs again with it (the same dp, dm)
            for c in range(nl):
                dp = (sh[c] - sn[c]) * inv_sd[c] + cc[c]
                dm = dp - sdv[c]
                if _is_far(dm) or _is_far(dp):
                    tn[c] = wr[c] * _sf.norm_cdf_nb(dm)  # _ncdf_vec's bits; not inlined: less to compile
                    td[c] = wq[c] * _sf.norm_cdf_nb(dp)
        for i in range(wj):  # the u = tau_i terms, branch-free: vectorized (padded: finite values beyond n)
            v = vv[i]
            dp0 = (-lnk - s1[i] + rqt[i]) / v + 0.5 * v
            dm0 = dp0 - v
            e_p = exp_minus_half_square(dp0)
            e_m = exp_minus_half_square(dm0)
            nn[i] = _ncdf_vec(dm0, e_m)
            dd[i] = _ncdf_vec(dp0, e_p)
            pm0[i] = _INV_SQRT_2PI * e_m / v
            pp0[i] = _INV_SQRT_2PI * e_p / v
        for i in range(n):  # the integrals, summed in point order
            num = nn[i]
            den = dd[i]
            sa = 0.0
            sc = 0.0
            for kk in range(lq):
                c = i * lq + kk
                num += tn[c]
                den += td[c]
                sa += aa[c]
                sc += ca[c]
            nn[i] = num
            dd[i] = den
            pm0[i] = -(pm0[i] + sa)  # d N_i / d s_i (the diagonal part)
            pp0[i] = -(pp0[i] + sc)
        for i in range(wj):  # branch-free: vectorized (padded)
            res[i] = lnk - rqt[i] + fast_log(nn[i]) - fast_log(dd[i]) + s1[i]
        for i in range(n):
            for j in range(wj):  # the padding too: _solve wrote into it
                jac[i, j] = 0.0
            jac[i, i] = pm0[i] / nn[i] - pp0[i] / dd[i] + 1.0
        norm = 0.0
        for i in range(n):
            norm = max(norm, abs(res[i]))
        if not norm <= best and back < 8:  # the last step made the residual worse (or NaN): halve it
            if resume and steps == int(state[n + 3]) + 1:  # the halved step starts from an iterate not kept
                return 0
            back += 1
            lam *= 0.5
            for i in range(n):
                s[i + 1] = max(s_acc[i + 1] - lam * full[i], 0.0)
            continue
        best = norm
        back = 0
        lam = 1.0
        for i in range(n + 1):
            s_acc[i] = s[i]
        # d/ds_j through the interpolated H at the quadrature points: 1 / N_i and 1 / D_i of every point (rows of
        # td and hh, not read again in this iteration), then the integrands flat (vectorized)
        ivn = td
        ivd = hh
        for i in range(n):
            inv_n = 1.0 / nn[i]
            inv_d = 1.0 / dd[i]
            for kk in range(lq):
                ivn[i * lq + kk] = inv_n
                ivd[i * lq + kk] = inv_d
        for c in range(nl):
            root = sh[c]
            tn[c] = (aa[c] * ivn[c] - ca[c] * ivd[c]) / root if root > 0.0 else 0.0
        for i in range(n):
            # acc[j - 1] = sum over kk of tn * fm[i, j, kk] in point order from 0.0, the j side by side (fmp[i, kk]:
            # fm[i, 1:, kk] padded with zeros)
            for j in range(wj):
                acc[j] = 0.0
            for kk in range(lq):
                tk = tn[i * lq + kk]
                for j in range(wj):
                    acc[j] += tk * fmp[i, kk, j]
            for j in range(1, n + 1):
                jac[i, j - 1] += s[j] * acc[j - 1]
        _solve(jac, res, n)
        big = 0.0
        for i in range(n):
            step = res[i]
            if not step == step:
                big = math.inf
                break
            full[i] = step
            s[i + 1] = max(s[i + 1] - step, 0.0)
            big = max(big, abs(step))
        if not big < math.inf:
            steps = -steps
            break
        # quadratic convergence: the next step would be about (big / prev^2) big^2
        if big <= tol or (steps > 1 and big * big * big <= tol * prev * prev):
            done = True
            break
        prev = big
    if state.shape[0] and not resume:
        for i in range(n):
            state[i] = s[i + 1]
        state[n] = best
        state[n + 1] = big
        state[n + 2] = prev
        state[n + 3] = steps if done else math.nan
    return steps


@inner_njit()
def put_from_boundary(
    sp: float,
    k: float,
    r: float,
    q: float,
    sig: float,
    t: float,
    x_max: float,
    s: FloatArray,
    tab: tuple[FloatArray, ...],
    greeks: bool = True,
) -> tuple[float, float, float]:
    """(price, delta, gamma) of the put at spot ``sp`` from the boundary ``s`` of ``put_boundary``
    (delta and gamma NaN unless ``greeks``, which skips their integrals).

    The premium integrals run over ``w = sqrt(t / T)`` (``t`` elapsed); their integrands change over
    ``w ~ w0 = ln(S / B(T)) / (sigma sqrt T)``. Gauss-Legendre on two panels: ``w in [0, wc]`` (in ``w``)
    and the rest (in ``phi = arccos w``, smooth at ``t = T``), half of the points each, with
    ``wc = min(LAYER_WIDTH w0, LAYER_MAX)``: tabulated points far from the boundary, the same rule moved
    towards ``w = 0`` close to it (the boundary interpolated there in barycentric form), so the price is
    continuous in the spot. The integrands are evaluated in one branch-free (vectorized) loop over the
    points and summed in point order afterwards.
    """
    z_c, bw, pcs, pws, lx, lw = tab[0], tab[1], tab[6], tab[7], tab[9], tab[10]
    n = z_c.shape[0] - 1
    b_t = x_max * math.exp(-s[n])
    sqt = math.sqrt(t)
    v = sig * sqt
    if sp <= b_t:
        return k - sp, -1.0, 0.0
    dq = math.exp(-q * t)
    dr = math.exp(-r * t)
    lnk = math.log(sp / k)
    dp = (lnk + (r - q) * t) / v + 0.5 * v
    e_p = exp_minus_half_square(dp)
    pdf = _INV_SQRT_2PI * e_p
    n_mdp = _ncdf_scalar(-dp, e_p)
    z = -(dp - v)
    price = k * dr * _ncdf_scalar(z, exp_minus_half_square(z)) - sp * dq * n_mdp
    delta = -dq * n_mdp
    gamma = dq * pdf / (sp * v)
    nq = pcs.shape[0]
    work = np.empty((7, max(nq, n + 1)))  # row views, not slices: less code to compile
    pc_a = work[0]
    wt_a = work[1]
    h_a = work[2]
    ta = work[3]
    tb = work[4]
    tg = work[5]
    hh = work[6]
    for j in range(n + 1):
        hh[j] = s[j] * s[j]
    w0 = math.log(sp / b_t) / v
    if LAYER_WIDTH * w0 >= LAYER_MAX:  # the tabulated split
        pmt = tab[8]
        for c in range(nq):  # h_a[c] = sum over j of pm[c, j] hh[j] from 0.0 in the order of j, the c side by side
            h_a[c] = 0.0
            pc_a[c] = pcs[c]
            wt_a[c] = pws[c]
        for j in range(1, n + 1):
            hj = hh[j]
            for c in range(nq):
                h_a[c] += pmt[j, c] * hj
    else:
        wc = LAYER_WIDTH * w0
        phi_c = math.acos(wc)
        for c in range(lx.shape[0]):
            for panel in range(2):
                if panel == 0:  # w in [0, wc]: dt = 2 T w dw
                    pc = 0.5 * wc * (lx[c] + 1.0)
                    wt = lw[c] * 0.5 * wc * 2.0 * pc
                else:  # phi in [0, phi_c]: dt = T sin(2 phi) dphi
                    ph = 0.5 * phi_c * (lx[c] + 1.0)
                    pc = math.cos(ph)
                    wt = lw[c] * 0.5 * phi_c * math.sin(2.0 * ph)
                zz = 2.0 * math.sqrt(1.0 - pc * pc) - 1.0  # z of the boundary time u = T (1 - w^2)
                num = 0.0
                den = 0.0
                hit = -1
                for j in range(n + 1):
                    dz = zz - z_c[j]
                    if dz == 0.0:
                        hit = j
                    else:
                        f = bw[j] / dz
                        num += f * hh[j]
                        den += f
                c2 = 2 * c + panel
                h_a[c2] = hh[hit] if hit >= 0 else num / den
                pc_a[c2] = pc
                wt_a[c2] = wt
    # integrands (times the weights) of the premium, delta and gamma at elapsed time t pc^2
    lsx = lnk if x_max == k else math.log(sp / x_max)  # X = K (r >= q): the same quotient, so the same log
    rk = r * k
    for c in range(nq):
        pc = pc_a[c]
        w = wt_a[c]
        root = math.sqrt(np.maximum(h_a[c], 0.0))
        tt = t * pc * pc
        sd = v * pc
        d1 = (lsx + root + (r - q) * tt) / sd + 0.5 * sd
        d2 = d1 - sd
        e1 = exp_minus_half_square(d1)
        e2 = exp_minus_half_square(d2)
        er = fast_exp(-r * tt)
        eq = fast_exp(-q * tt)
        n1 = _ncdf_vec(-d1, e1)
        ta[c] = w * (rk * er * _ncdf_vec(-d2, e2) - q * sp * eq * n1)
        if greeks:
            b = x_max * fast_exp(-root)
            g = er * _INV_SQRT_2PI * e2 / (sp * sd)
            tb[c] = w * (-q * eq * n1 - g * (rk - q * b))
            tg[c] = w * g / sp * (q * b + (rk - q * b) * (1.0 + d2 / sd))
    e_price = 0.0
    e_delta = 0.0
    e_gamma = 0.0
    for c in range(nq):
        e_price += ta[c]
    if not greeks:
        return price + t * e_price, math.nan, math.nan
    for c in range(nq):
        e_delta += tb[c]
        e_gamma += tg[c]
    return price + t * e_price, delta + t * e_delta, gamma + t * e_gamma


@inner_njit()
def put_prices_from_boundary(
    sps: FloatArray,
    k: float,
    r: float,
    q: float,
    sig: float,
    t: float,
    x_max: float,
    s: FloatArray,
    tab: tuple[FloatArray, ...],
    out: FloatArray,
    moved: BoolArray,
    work: FloatArray,
) -> None:
    """``out[c] = put_from_boundary(sps[c], k, r, q, sig, t, x_max, s, tab)[0]`` for several spots on one boundary,
    bit for bit, for the spots in the exercise region and on the tabulated split: what does not depend on the spot
    (the squared boundary, the interpolated boundary at the premium points with its square root, elapsed times,
    spreads and discount factors) is computed once and read by every spot in the same operations, and the integrand
    of every (spot, point) pair is evaluated in one branch-free (vectorized) loop, then summed in point order spot
    by spot; the pairs whose integrand is surely +-0.0 (``_ZERO_D``) are left out of both. Spots on the moved split
    (close to the boundary, and NaN) are only flagged in ``moved`` (``out`` not written) for the caller to price by
    ``put_from_boundary`` (``premiums``). ``work``: scratch, ``(_PRICE_ROWS, w)`` with ``w >= max(max(len(sps), 1)
    * nq, n + 1)`` for the ``nq`` premium points and ``n + 1`` boundary nodes of ``tab`` (contents not read)."""
    z_c, pcs, pws = tab[0], tab[6], tab[7]
    n = z_c.shape[0] - 1
    b_t = x_max * math.exp(-s[n])
    sqt = math.sqrt(t)
    v = sig * sqt
    dq = math.exp(-q * t)
    dr = math.exp(-r * t)
    nq = pcs.shape[0]
    ns = sps.shape[0]
    # the spots of the tabulated split (their index, European price, ln(S / X), q S), in order (row views of work)
    idx = work[0]
    euro = work[1]
    lsx_a = work[2]
    qs_a = work[3]
    dp_a = work[15]
    sp_a = work[16]
    m = 0
    for i in range(ns):
        sp = sps[i]
        if sp <= b_t:
            out[i] = k - sp
            continue
        w0 = math.log(sp / b_t) / v
        if not LAYER_WIDTH * w0 >= LAYER_MAX:  # the moved split: left to put_from_boundary (moved[i])
            moved[i] = True
            continue
        lnk = math.log(sp / k)
        dp_a[m] = (lnk + (r - q) * t) / v + 0.5 * v
        sp_a[m] = sp
        lsx_a[m] = lnk if x_max == k else math.log(sp / x_max)  # X = K (r >= q): the same quotient, the same log
        qs_a[m] = q * sp
        idx[m] = i  # exact as a float
        m += 1
    if m == 0:
        return
    kdr = k * dr
    for a in range(m):  # their European prices, branch-free (_ncdf_vec: _ncdf_scalar's bits): vectorized
        dp = dp_a[a]
        e_p = exp_minus_half_square(dp)
        z = -(dp - v)
        euro[a] = kdr * _ncdf_vec(z, exp_minus_half_square(z)) - sp_a[a] * dq * _ncdf_vec(-dp, e_p)
    # the spot-free terms at the premium points: sqrt(H), (r - q) t pc^2, the spread, r K e^{-r t pc^2}, e^{-q ..}
    hh = work[4]
    for j in range(n + 1):
        hh[j] = s[j] * s[j]
    root_a = work[5]
    rqt_a = work[6]
    sd_a = work[7]
    rker_a = work[8]
    eq_a = work[4]  # hh is read only above
    rk = r * k
    pmt = tab[8]
    for c in range(nq):  # H at the premium points: the sums over j of pm[c, j] hh[j] from 0.0, the c side by side
        root_a[c] = 0.0
    for j in range(1, n + 1):
        hj = hh[j]
        for c in range(nq):
            root_a[c] += pmt[j, c] * hj
    for c in range(nq):
        root_a[c] = math.sqrt(np.maximum(root_a[c], 0.0))
    for c in range(nq):
        pc = pcs[c]
        tt = t * pc * pc
        rqt_a[c] = (r - q) * tt
        sd_a[c] = v * pc
        rker_a[c] = rk * fast_exp(-r * tt)
        eq_a[c] = fast_exp(-q * tt)
    # the integrands (times the weights) of the (spot, point) pairs, in (spot, point) order, but for those surely zero
    # (_ZERO_D): a spot's pairs at first[a] .. first[a + 1] - 1 (row views of work)
    d1u = work[9]
    sdu = work[10]
    wu = work[11]
    ru = work[12]
    qe = work[13]
    ta = work[14]
    first = work[17]
    k = 0
    for a in range(m):
        lsx = lsx_a[a]
        qs = qs_a[a]
        first[a] = k  # exact as a float
        for c in range(nq):
            sd = sd_a[c]
            d1 = (lsx + root_a[c] + rqt_a[c]) / sd + 0.5 * sd
            q_e = qs * eq_a[c]
            r_e = rker_a[c]
            w = pws[c]
            d1u[k] = d1
            sdu[k] = sd
            wu[k] = w
            ru[k] = r_e
            qe[k] = q_e
            # kept (k moves on) unless zero: branch-free
            k += not (d1 - sd >= _ZERO_D and abs(q_e) <= _FLOAT_MAX and abs(r_e) <= _FLOAT_MAX and abs(w) <= _FLOAT_MAX)
    first[m] = k
    for u in range(k):  # branch-free: vectorized
        sd = sdu[u]
        d1 = d1u[u]
        d2 = d1 - sd
        e1 = exp_minus_half_square(d1)
        e2 = exp_minus_half_square(d2)
        n1 = _ncdf_vec(-d1, e1)
        ta[u] = wu[u] * (ru[u] * _ncdf_vec(-d2, e2) - qe[u] * n1)
    for a in range(m):  # in point order, the zeros left out (adding +-0.0 to a sum begun at 0.0 changes no bit)
        e_price = 0.0
        for u in range(int(first[a]), int(first[a + 1])):
            e_price += ta[u]
        out[int(idx[a])] = euro[a] + t * e_price


#: ``put_prices_from_boundary`` leaves out the (spot, point) integrands with ``d- >= _ZERO_D`` (and finite weight, ``r K
#: e^{-rt}`` and ``q S e^{-qt}``): there ``-d-^2 / 2 < -745.5`` (and ``d+ >= d-``), so ``exp_minus_half_square`` of
#: both is 0.0 exactly (``fast_exp``'s clamp, ``exp_minus_half_square``'s at 1e10 included: up to ``d = inf``), both
#: cdfs are 0.0 and the integrand is +-0.0. On the scenario grids' nodes about 12 % of the pairs (spots far above the
#: boundary at the first premium points).
_ZERO_D = 38.7
_FLOAT_MAX = 1.7976931348623157e308


#: Rows of ``put_prices_from_boundary``'s scratch.
_PRICE_ROWS = 18


@inner_njit()
def deterministic_put(sp: float, k: float, r: float, q: float, t: float) -> tuple[float, float]:
    """Zero-volatility American put ``max_t (K e^{-rt} - S e^{-qt})^+`` over ``t in [0, T]`` and its delta."""
    best = max(k - sp, 0.0)
    arg = 0.0
    cands = [t, 0.0]
    if r != q and q * sp > 0.0 and r * k > 0.0:
        ts = math.log(r * k / (q * sp)) / (r - q)
        if 0.0 < ts < t:
            cands[1] = ts
    for tc in cands:
        val = k * math.exp(-r * tc) - sp * math.exp(-q * tc)
        if val > best:
            best = val
            arg = tc
    return best, (-math.exp(-q * arg) if best > 0.0 else 0.0)


@inner_njit()
def price_from_unit_boundary(
    sp: float, k: float, call: bool, pr: float, pq: float, sig: float, t: float, x_max: float, s: FloatArray
) -> float:
    """Price of an option whose put-space unit-strike boundary ``s`` (rates ``pr``, ``pq``; ``EXACT_TABLES``)
    is already solved: the same arithmetic as ``american_point``'s single-boundary branch."""
    ps, pk = (k, sp) if call else (sp, k)
    p = put_from_boundary(ps / pk, 1.0, pr, pq, sig, t, x_max, s, EXACT_TABLES, np.bool_(False))[0] * pk
    r, q = (pq, pr) if call else (pr, pq)
    return max(p, pk - ps, bsm_price_point(sp, k, t, sig, r, q, call))


@njit(**JIT)
def american_point(
    sp: float,
    k: float,
    t: float,
    sig: float,
    r: float,
    q: float,
    call: bool,
    tol: float,
    greeks: bool = False,
    price_only: bool = False,
    gamma_bump: bool = True,
) -> tuple[float, float, float, float]:
    """(price, delta, gamma, theta) of one American option in every regime of the module docstring;
    ``tol`` is the Newton tolerance (``NEWTON_STEP_TOL`` or ``NEWTON_STEP_TOL_GREEKS``). Theta per year of
    calendar time passing. With ``greeks`` the premium integral uses ``GREEKS_TABLES`` and the gamma is the
    central difference of the analytic delta at ``S (1 +- GAMMA_BUMP)`` on the same boundary (accurate
    also just above the exercise boundary, where the gamma integrand's ``1/t`` layer is hardest). With
    ``price_only`` (and not ``greeks``) the premium's delta and gamma integrals are skipped: the same price,
    with delta, gamma and theta NaN where the single-boundary engine prices in the continuation region
    (``american_price``'s path). With ``greeks`` and not ``gamma_bump`` the gamma is the premium integral's
    (no bumped deltas; for repricings whose gamma is not used). NaN for invalid input
    (non-positive spot or strike, negative or NaN vol, NaN)."""
    nan = math.nan
    if not ((sp > 0.0) & (k > 0.0) & (sig >= 0.0) & (t == t) & (r == r) & (q == q)):
        return nan, nan, nan, nan
    t = max(t, 0.0)
    ps, pk, pr, pq = (k, sp, q, r) if call else (sp, k, r, q)
    if (pr <= 0.0) & (pr <= pq):  # early exercise never optimal: the European value
        e = _bsm_point(sp, k, t, sig, r, q, call)
        return e[0], e[1], e[2], e[4]
    if sig * math.sqrt(t) <= MIN_TOTAL_STD:
        p, d = deterministic_put(ps, pk, pr, pq, t)
        g = 0.0
        th = 0.0
    else:
        if (pr < 0.0) & (pq < pr):  # two exercise boundaries: finite differences
            p, d, g = fd_american_put(ps, pk, pr, pq, sig, t)
            cont = p > pk - ps + 1e-12 * pk
        else:  # unit strike: P(S', K') = K' p(S'/K'), so the boundary does not depend on the call's spot
            x_max = exercise_limit(1.0, pr, pq)
            tab = GREEKS_TABLES if greeks else EXACT_TABLES
            s = np.empty(NODES + 1)
            put_boundary(1.0, pr, pq, sig, t, x_max, s, tol, tab, np.bool_(False))
            x = ps / pk
            p, d, g = put_from_boundary(x, 1.0, pr, pq, sig, t, x_max, s, tab, greeks or not price_only)
            b_t = x_max * math.exp(-s[NODES])
            cont = x > b_t
            if greeks and gamma_bump and cont:
                h = GAMMA_BUMP * x
                yes = np.bool_(True)  # not a literal: one compiled signature of put_from_boundary
                d_up = put_from_boundary(x + h, 1.0, pr, pq, sig, t, x_max, s, tab, yes)[1]
                d_dn = put_from_boundary(x - h, 1.0, pr, pq, sig, t, x_max, s, tab, yes)[1] if x - h > b_t else -1.0
                g = (d_up - d_dn) / (2.0 * h)
            p *= pk
            g /= pk
        th = (pr * p - (pr - pq) * ps * d - 0.5 * sig * sig * ps * ps * g) if cont else 0.0
    # rounding of the quadrature (just above the boundary, or a vanishing premium) must not undercut
    # immediate exercise or the European value
    p = max(p, pk - ps, bsm_price_point(sp, k, t, sig, r, q, call))
    if call:  # C(S, K) = P(K, S): d/dS = d/dK' = (P - S' dP/dS') / K'; S^2 d2C/dS2 = S'^2 d2P/dS'2
        return p, (p - ps * d) / pk, ps * ps * g / (pk * pk), th
    return p, d, g, th


# ----------------------------------------------------------------------------------------------
# array kernels: the only compiled callers of the engine's call tree
#
# Each piece of the engine (the boundary solve, the premium integral, the finite-difference and
# zero-volatility regimes) is linked into exactly one kernel, compiled once; ``american_points`` and the
# scenario engine combine them with numpy (the same IEEE operations as ``american_point``, so the same
# bits). A numba kernel that called ``american_point`` would link, re-optimize and re-emit the whole call
# tree again (5-9 s of compilation each).
# ----------------------------------------------------------------------------------------------


@inner_njit(forceinline=True)
def _same_bits(a: float, b: float) -> bool:
    """``a`` and ``b`` are the same number with the same sign (``0.0`` is not ``-0.0``; NaN is never the same)."""
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


@njit(**JIT)
def boundary_kernel(
    pr: FloatArray,
    pq: FloatArray,
    sig: FloatArray,
    t: FloatArray,
    x_max: FloatArray,
    tol: float,
    tab: tuple[FloatArray, ...],
    mode: int,
    s: FloatArray,
    steps: IntArray,
    b_t: FloatArray,
    state: FloatArray,
    start: int,
    stop: int,
) -> None:
    """``put_boundary(1, pr[i], pq[i], sig[i], t[i], x_max[i], s[i], tol, tab, warm)`` of unit-strike puts
    ``start .. stop-1`` (``run_chunked``): the boundary ``s[i]`` (``mode``: ``_solve_boundary``'s start; with
    ``WARM_START`` from ``s[i]`` as given, with ``RESUME_START`` from the Newton state ``state[i]``), the Newton
    steps and ``B(T) = x_max e^{-s[i, -1]}``; unless resuming, each solve's Newton state into ``state[i]`` if
    ``state`` has rows (``(0, 0)``: none kept)."""
    last = s.shape[1] - 1
    n = tab[0].shape[0] - 1
    nl = n * tab[2].shape[0]
    none = np.empty(0)
    rates = np.empty((_RATE_ROWS, max(nl, tab[5].shape[2])))
    work = np.empty((_WORK_ROWS, max(nl, tab[5].shape[2])))
    jac = np.empty((n, tab[5].shape[2]))
    for i in range(start, stop):
        # the volatility-free terms once for a run of rows of equal (bit for bit) rate, yield and time: the vol
        # nodes of one option (``scenario_engine._grid_solve``), and ``american_points``' distinct rows of one
        # (rate, yield, time), which it puts side by side (``_by_rates``)
        if (
            i == start
            or not _same_bits(pr[i], pr[i - 1])
            or not _same_bits(pq[i], pq[i - 1])
            or not _same_bits(t[i], t[i - 1])
        ):
            _boundary_rates(pr[i], pq[i], t[i], tab, rates)
        row = state[i] if state.shape[0] else none
        steps[i] = _solve_boundary(
            1.0, pr[i], pq[i], sig[i], t[i], x_max[i], s[i], tol, tab, mode, rates, work, jac, row
        )
        b_t[i] = x_max[i] * math.exp(-s[i, last])


@njit(**JIT)
def premium_kernel(
    x: FloatArray,
    row: IntArray,
    pr: FloatArray,
    pq: FloatArray,
    sig: FloatArray,
    t: FloatArray,
    x_max: FloatArray,
    s: FloatArray,
    tab: tuple[FloatArray, ...],
    greeks: bool,
    price: FloatArray,
    delta: FloatArray,
    gamma: FloatArray,
    grouped: bool,
    moved: BoolArray,
    start: int,
    stop: int,
) -> None:
    """``put_from_boundary`` of unit-strike puts at spots ``x[i]`` on the boundaries ``s[row[i]]`` (solved at
    ``pr, pq, sig, t, x_max`` of that row), ``i`` in ``start .. stop-1`` (``run_chunked``).

    With ``grouped`` instead (``greeks`` not read): the prices of the spots ``x[row[b]:row[b + 1]]`` on the boundary
    ``s[b]`` into ``price[row[b]:row[b + 1]]``, boundaries ``b`` in ``start .. stop-1``, by
    ``put_prices_from_boundary``, and the spots it leaves (``moved``) by ``put_from_boundary`` without Greeks; if
    ``delta`` is not empty, delta and gamma as ``put_from_boundary`` without Greeks gives them (-1 and 0 in the
    exercise region, else NaN). One kernel for all (not a second ``premium_rows_kernel``), so a run compiles one."""
    if grouped:
        last = tab[0].shape[0] - 1  # put_from_boundary's last node
        most = 0
        for b in range(start, stop):
            most = max(most, row[b + 1] - row[b])
        work = np.empty((_PRICE_ROWS, max(most * tab[6].shape[0], tab[0].shape[0])))
        for b in range(start, stop):
            lo, hi = row[b], row[b + 1]
            put_prices_from_boundary(
                x[lo:hi], 1.0, pr[b], pq[b], sig[b], t[b], x_max[b], s[b], tab, price[lo:hi], moved[lo:hi], work
            )
            b_t = x_max[b] * math.exp(-s[b, last])  # put_from_boundary's exercise test
            for c in range(lo, hi):
                if moved[c]:
                    no = np.bool_(False)  # not a literal: one compiled signature of put_from_boundary
                    price[c] = put_from_boundary(x[c], 1.0, pr[b], pq[b], sig[b], t[b], x_max[b], s[b], tab, no)[0]
                if delta.shape[0]:
                    out = x[c] <= b_t
                    delta[c] = -1.0 if out else math.nan
                    gamma[c] = 0.0 if out else math.nan
        return
    for i in range(start, stop):
        b = row[i]
        p, d, g = put_from_boundary(x[i], 1.0, pr[b], pq[b], sig[b], t[b], x_max[b], s[b], tab, greeks)
        price[i] = p
        delta[i] = d
        gamma[i] = g


@njit(**JIT)
def deterministic_kernel(
    ps: FloatArray,
    pk: FloatArray,
    pr: FloatArray,
    pq: FloatArray,
    t: FloatArray,
    price: FloatArray,
    delta: FloatArray,
    gamma: FloatArray,
    start: int,
    stop: int,
) -> None:
    """Puts at zero volatility, ``start .. stop-1`` (``run_chunked``): ``deterministic_put``, gamma 0."""
    for i in range(start, stop):
        p, d = deterministic_put(ps[i], pk[i], pr[i], pq[i], t[i])
        price[i] = p
        delta[i] = d
        gamma[i] = 0.0


@njit(**JIT)
def fd_kernel(
    ps: FloatArray,
    pk: FloatArray,
    pr: FloatArray,
    pq: FloatArray,
    sig: FloatArray,
    t: FloatArray,
    price: FloatArray,
    delta: FloatArray,
    gamma: FloatArray,
    start: int,
    stop: int,
) -> None:
    """Puts with two exercise boundaries, ``start .. stop-1`` (``run_chunked``): ``fd_american_put``. A kernel
    of its own, compiled only by a run that meets the regime (``q < r < 0``): the finite-difference solver's
    compilation is not paid by the zero-volatility prices of every American implied-vol search."""
    for i in range(start, stop):
        p, d, g = fd_american_put(ps[i], pk[i], pr[i], pq[i], sig[i], t[i])
        price[i] = p
        delta[i] = d
        gamma[i] = g


def py_max(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Elementwise ``max(a, b)`` with Python's (and numba's) rule: ``b`` only if ``b > a`` (NaN in ``a`` stays,
    and of two equal zeros the first)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.where(b > a, b, a)


def py_min(a: ArrayLike, b: ArrayLike) -> FloatArray:
    """Elementwise ``min(a, b)`` with Python's rule: ``b`` only if ``b < a``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.where(b < a, b, a)


def exercise_limits(r: FloatArray, q: FloatArray) -> FloatArray:
    """``exercise_limit(1, r, q)`` of arrays."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(q > 0.0, py_min(1.0, r / q), 1.0)


def solve_boundaries(
    pr: FloatArray,
    pq: FloatArray,
    sig: FloatArray,
    t: FloatArray,
    x_max: FloatArray,
    tol: float,
    tab: tuple[FloatArray, ...],
    start: FloatArray | None = None,
    keep_states: bool = True,
) -> tuple[FloatArray, IntArray, FloatArray]:
    """``boundary_kernel`` of 1-d arrays: (boundaries ``(n, nodes + 1)``, Newton steps, ``B(T)``); Newton from
    QD+, or from the rows of ``start`` (``(n, nodes + 1)``, ``s[:, 0] = 0``; not modified).

    From QD+ on the exact engine's nodes, the solves at ``NEWTON_STEP_TOL`` keep their Newton states
    (``_NEWTON_STATES``; not with ``keep_states`` false, for callers whose inputs are never solved again at the
    Greeks' tolerance, e.g. the implied-vol search's trial vols), and those at ``NEWTON_STEP_TOL_GREEKS`` of the same
    inputs resume them: the same bits as from QD+ (``_solve_boundary``), without the QD+ start and the steps already
    taken. The boundaries are the same bits either way."""
    n = pr.shape[0]
    warm = start is not None
    s = np.array(start, dtype=np.float64) if warm else np.empty((n, tab[0].shape[0]))
    steps = np.empty(n, dtype=np.intp)
    b_t = np.empty(n)
    if not n:
        return s, steps, b_t
    exact_nodes = not warm and (tab is EXACT_TABLES or tab is GREEKS_TABLES)
    keep = exact_nodes and tol == NEWTON_STEP_TOL and keep_states
    cold = np.arange(n)
    if exact_nodes and tol == NEWTON_STEP_TOL_GREEKS:
        found, state = _NEWTON_STATES.find(pr, pq, sig, t, x_max)
        if found.size:
            part = _solve_rows(found, (pr, pq, sig, t, x_max), tol, tab, RESUME_START, state)
            ok = part[1] > 0  # 0: the resumed step was halved; < 0: diverged; both solved again from QD+ below
            s[found[ok]], steps[found[ok]], b_t[found[ok]] = (a[ok] for a in part)
            mine = np.ones(n, dtype=np.bool_)
            mine[found[ok]] = False
            cold = np.flatnonzero(mine)
    if cold.size == n:
        state = np.empty((n, NODES + _STATE_EXTRA)) if keep else np.empty((0, 0))
        mode = WARM_START if warm else QD_PLUS_START
        run_chunked(boundary_kernel, n, pr, pq, sig, t, x_max, float(tol), tab, mode, s, steps, b_t, state)
        if keep:
            _NEWTON_STATES.add(pr, pq, sig, t, x_max, state)
    elif cold.size:
        s[cold], steps[cold], b_t[cold] = _solve_rows(cold, (pr, pq, sig, t, x_max), tol, tab, QD_PLUS_START)
    return s, steps, b_t


def _solve_rows(
    rows: IntArray,
    bounds: tuple[FloatArray, ...],
    tol: float,
    tab: tuple[FloatArray, ...],
    mode: int,
    state: FloatArray | None = None,
) -> tuple[FloatArray, IntArray, FloatArray]:
    """``boundary_kernel`` of the ``rows`` of ``bounds`` (pr, pq, sig, t, x_max) started by ``mode`` (from
    ``state``'s rows, one per row, with ``RESUME_START``), no state kept: (boundaries, Newton steps, ``B(T)``)."""
    m = rows.size
    out = np.empty((m, tab[0].shape[0])), np.empty(m, dtype=np.intp), np.empty(m)
    kept = np.empty((0, 0)) if state is None else state
    run_chunked(boundary_kernel, m, *(b[rows] for b in bounds), float(tol), tab, mode, *out, kept)
    return out


class _NewtonStateMemo:
    """Newton states (``boundary_kernel``'s ``state``) of the latest solves kept by ``solve_boundaries``, by the bits
    of their inputs (pr, pq, sig, t, x_max), at most ``rows`` of them (the oldest calls' dropped first); only states
    of solves that stopped on their tolerance test. Thread-safe. Each state is a function of its inputs alone, so
    which solve kept it does not matter."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self._lock = threading.Lock()
        self._calls: list[tuple[NDArray[np.int64], NDArray[np.int64], FloatArray]] = []

    @staticmethod
    def _keys(*columns: FloatArray) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        bits = np.stack([np.ascontiguousarray(c, dtype=np.float64).view(np.int64) for c in columns], axis=1)
        return _bits_hash(*columns), bits

    def add(self, *columns_and_state: FloatArray) -> None:
        """Keep the states (last argument, one row per input row) of the inputs given as columns."""
        *columns, state = columns_and_state
        ok = np.flatnonzero(state[:, -1] == state[:, -1])  # NaN steps: not stopped on the test
        if not ok.size or ok.size > self.rows:
            return
        h, bits = self._keys(*(c[ok] for c in columns))
        order = np.argsort(h, kind="stable")
        entry = (h[order], bits[order], state[ok[order]])
        with self._lock:
            self._calls.append(entry)
            total = sum(e[0].size for e in self._calls)
            while total > self.rows:
                total -= self._calls.pop(0)[0].size

    def find(self, *columns: FloatArray) -> tuple[IntArray, FloatArray]:
        """(the rows of the columns with a kept state, in order; their states)."""
        with self._lock:
            calls = list(self._calls)
        n = columns[0].shape[0]
        if not calls or not n:
            return np.zeros(0, dtype=np.intp), np.empty((0, 0))
        h, bits = self._keys(*columns)
        where = np.full(n, -1, dtype=np.intp)
        which = np.full(n, -1, dtype=np.intp)
        for c, (kh, kbits, _) in enumerate(reversed(calls)):  # the latest first
            todo = np.flatnonzero(which < 0)
            if not todo.size:
                break
            pos = np.minimum(np.searchsorted(kh, h[todo]), kh.size - 1)
            hit = (kh[pos] == h[todo]) & np.all(kbits[pos] == bits[todo], axis=1)
            where[todo[hit]] = pos[hit]
            which[todo[hit]] = len(calls) - 1 - c
        found = np.flatnonzero(which >= 0)
        state = np.empty((found.size, NODES + _STATE_EXTRA))
        for c in np.unique(which[found]):
            rows = found[which[found] == c]
            state[np.searchsorted(found, rows)] = calls[c][2][where[rows]]
        return found, state


#: Rows of Newton states ``solve_boundaries`` keeps (about 190 bytes each): the exact prices of a few large books.
NEWTON_STATE_ROWS = 250_000
_NEWTON_STATES = _NewtonStateMemo(NEWTON_STATE_ROWS)


def premiums(
    x: FloatArray,
    row: IntArray,
    bounds: tuple[FloatArray, ...],
    s: FloatArray,
    tab: tuple[FloatArray, ...],
    greeks: bool,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``premium_kernel`` of 1-d arrays: (price, delta, gamma) of unit-strike puts at ``x`` on boundaries
    ``s[row]``; ``bounds`` = (pr, pq, sig, t, x_max) per boundary. Without ``greeks`` (``put_from_boundary``'s
    delta and gamma without them) the spots of each boundary are priced together (``_grouped_prices``), the same
    bits."""
    n = x.shape[0]
    # contiguous inputs: a strided index (``np.nonzero`` of a 2-d mask) would compile the kernel a second time
    x, row = np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(row, dtype=np.intp)
    bounds = tuple(np.ascontiguousarray(b, dtype=np.float64) for b in bounds)
    if not greeks:
        price, delta, gamma = np.empty(n), np.empty(n), np.empty(n)
        if n:
            # the points of each boundary side by side, at most GROUP_SPOTS a group (the groups spread the threads)
            order = np.argsort(row, kind="stable")
            count = np.bincount(row, minlength=s.shape[0])
            groups = -(-count // GROUP_SPOTS)
            boundary = np.repeat(np.arange(count.size), groups)  # each group's boundary
            first = np.cumsum(groups) - groups  # each boundary's first group
            start = (np.cumsum(count) - count)[boundary] + (np.arange(boundary.size) - first[boundary]) * GROUP_SPOTS
            group_bounds = tuple(c[boundary] for c in bounds)
            p, d, g = _grouped_prices(x[order], np.append(start, n), group_bounds, s[boundary], tab, True)
            price[order], delta[order], gamma[order] = p, d, g
        return price, delta, gamma
    out = np.empty(n), np.empty(n), np.empty(n)
    if n:
        no_moved = np.zeros(0, dtype=np.bool_)
        run_chunked(premium_kernel, n, x, row, *bounds, s, tab, np.bool_(greeks), *out, np.bool_(False), no_moved)
    return out


#: Spots at most of one group of ``premiums``' grouped prices (a boundary's spot-free terms once a group).
GROUP_SPOTS = 64


def _grouped_prices(
    x: FloatArray,
    offsets: IntArray,
    bounds: tuple[FloatArray, ...],
    s: FloatArray,
    tab: tuple[FloatArray, ...],
    exercise_delta_gamma: bool,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``premium_kernel`` (``grouped``): (price, delta, gamma) of unit-strike puts at the spots
    ``x[offsets[b]:offsets[b + 1]]`` on the boundary ``s[b]``, ``bounds`` = (pr, pq, sig, t, x_max) per group ``b``;
    delta and gamma those of ``put_from_boundary`` without Greeks (-1 and 0 in the exercise region, else NaN) if
    ``exercise_delta_gamma``, else empty."""
    n = x.shape[0]
    m = n if exercise_delta_gamma else 0
    out = np.empty(n), np.empty(m), np.empty(m)
    moved = np.zeros(n, dtype=np.bool_)
    no = np.bool_(False)
    run_chunked(premium_kernel, offsets.shape[0] - 1, x, offsets, *bounds, s, tab, no, *out, np.bool_(True), moved)
    return out


def row_premiums(
    x: FloatArray, bounds: tuple[FloatArray, ...], s: FloatArray, tab: tuple[FloatArray, ...]
) -> FloatArray:
    """``premium_kernel`` (``grouped``) of 2-d spots: the prices ``(n_rows, n_spots)`` of unit-strike puts at
    ``x[b]`` on the boundary ``s[b]``, ``bounds`` = (pr, pq, sig, t, x_max) per row; equal, bit for bit, to
    ``premiums(x.ravel(), np.repeat(np.arange(n_rows), n_spots), bounds, s, tab, greeks)[0]``."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not x.size:
        return np.empty(x.shape)
    bounds = tuple(np.ascontiguousarray(b, dtype=np.float64) for b in bounds)
    offsets = np.arange(x.shape[0] + 1) * x.shape[1]
    return _grouped_prices(x.reshape(-1), offsets, bounds, s, tab, False)[0].reshape(x.shape)


#: Odd multiplier of ``distinct_rows``' hash of the columns' bits.
_HASH_MULTIPLIER = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15 as a signed 64-bit integer


def _bits_hash(*columns: FloatArray) -> NDArray[np.int64]:
    """A hash of each row's bits over the float columns (64-bit integer arithmetic, wrapping around)."""
    bits = [np.ascontiguousarray(c, dtype=np.float64).view(np.int64) for c in columns]
    h = bits[0].copy()
    for b in bits[1:]:
        h = (h * _HASH_MULTIPLIER) ^ b
    return h


def distinct_rows(*columns: FloatArray) -> tuple[IntArray, IntArray]:
    """Rows of the float columns that are equal bit for bit, grouped: a representative index of each group and each
    row's group (``c[first][row]`` is ``c`` bit for bit, for every column ``c``). The rows are sorted by a hash of
    their bits and a group is a run of identical rows in that order (two different rows of one hash at most split
    a group), so it costs a sort of one integer per row."""
    n = columns[0].shape[0]
    if n <= 1:
        return np.arange(n), np.arange(n)
    bits = [np.ascontiguousarray(c, dtype=np.float64).view(np.int64) for c in columns]
    order = np.argsort(_bits_hash(*columns), kind="stable")
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for b in bits:
        sb = b[order]
        new[1:] |= sb[1:] != sb[:-1]
    row = np.empty(n, dtype=np.intp)
    row[order] = np.cumsum(new) - 1
    return order[new], row


def _by_rates(
    first: IntArray, row: IntArray, pr: FloatArray, pq: FloatArray, t: FloatArray
) -> tuple[IntArray, IntArray]:
    """``distinct_rows``' groups (``first``, ``row``) renumbered so that groups of equal (bit for bit) ``pr``,
    ``pq`` and ``t`` are adjacent (ordered by a hash of those bits, then as before): ``boundary_kernel`` computes
    their volatility-free terms once a run. Each group's boundary is the same; only its index moves."""
    if first.size <= 2:
        return first, row
    order = np.argsort(_bits_hash(pr[first], pq[first], t[first]), kind="stable")
    new = np.empty_like(order)
    new[order] = np.arange(order.size)
    return first[order], new[row]


def _warm_boundaries(
    bounds: tuple[FloatArray, ...],
    tol: float,
    tab: tuple[FloatArray, ...],
    i: IntArray,
    u: IntArray,
    row: IntArray,
    warm_from: IntArray,
) -> tuple[FloatArray, FloatArray]:
    """``american_points``' boundaries (``s``, ``B(T)``) of the distinct rows ``u`` of the single-boundary points
    ``i`` (``row``: each point's row), started as ``warm_from`` says: first the rows of a point that starts from
    itself (or from a point outside ``i``) from QD+, then the others from their starting point's row."""
    m = u.shape[0]
    group = np.full(warm_from.shape[0], -1, dtype=np.intp)  # each point's row (-1: not single-boundary)
    group[i] = row
    src_row = group[warm_from[u]]
    cold = (src_row < 0) | (src_row == np.arange(m))
    # a row holding any point that starts from itself is solved cold, so that its bits are those without warm_from
    own = i[warm_from[i] == i]
    cold[group[own]] = True
    s = np.empty((m, tab[0].shape[0]))
    b_t = np.empty(m)
    c = np.flatnonzero(cold)
    s[c], _, b_t[c] = solve_boundaries(*(b[c] for b in bounds), tol, tab)
    w = np.flatnonzero(~cold)
    if w.size:
        # a warm row's start is a cold row (its starting point starts from itself, as the Greeks' layout has it);
        # where a chain would start from another warm row, that row is solved cold instead
        chained = ~cold[src_row[w]]
        if chained.any():
            cc = w[chained]
            s[cc], _, b_t[cc] = solve_boundaries(*(b[cc] for b in bounds), tol, tab)
            w = w[~chained]
        s[w], steps, b_t[w] = solve_boundaries(*(b[w] for b in bounds), tol, tab, start=s[src_row[w]])
        failed = w[steps <= 0]
        if failed.size:  # a warm start whose Newton step failed: solved again from QD+, as without warm_from
            s[failed], _, b_t[failed] = solve_boundaries(*(b[failed] for b in bounds), tol, tab)
    return s, b_t


def american_points(
    sp: FloatArray,
    k: FloatArray,
    t: FloatArray,
    sig: FloatArray,
    r: FloatArray,
    q: FloatArray,
    call: BoolArray,
    tol: float,
    greeks: bool = False,
    price_only: bool = False,
    gamma_bump: BoolArray | bool = True,
    warm_from: IntArray | None = None,
    keep_states: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``american_point`` of 1-d float64 arrays (``gamma_bump`` per option or one flag): (price, delta, gamma,
    theta), bit for bit the same, from the array kernels above and numpy (each step the same IEEE operation
    as in ``american_point``).

    ``warm_from`` (the Greeks' bumped repricings): per point, the point whose boundary starts the Newton iteration
    of its own (itself: the QD+ start). Boundaries of points that start from themselves, or whose starting point
    is not in the single-boundary regime, are solved first from QD+ (the same bits as without ``warm_from``); the
    others from their starting point's converged boundary (the same node positions ``z_j``), which is close for a
    small bump of the vol or time: about 2 Newton steps and no QD+ start, converged to the same tolerance (the
    boundary equal to rounding, not bit for bit). ``keep_states``: ``solve_boundaries``' (the same results either
    way)."""
    n = sp.shape[0]
    nan = np.full(n, np.nan)
    price, delta, gamma, theta = nan.copy(), nan.copy(), nan.copy(), nan.copy()
    if not n:
        return price, delta, gamma, theta
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        valid = (sp > 0.0) & (k > 0.0) & (sig >= 0.0) & (t == t) & (r == r) & (q == q)
        tt = np.where(0.0 > t, 0.0, t)
        ps, pk = np.where(call, k, sp), np.where(call, sp, k)
        pr, pq = np.where(call, q, r), np.where(call, r, q)
        never = valid & (pr <= 0.0) & (pr <= pq)
        rest = valid & ~never
        det = rest & (sig * np.sqrt(tt) <= MIN_TOTAL_STD)
        fd = rest & ~det & (pr < 0.0) & (pq < pr)
        single = rest & ~det & ~fd
        if never.any():  # early exercise never optimal: the European value
            i = np.flatnonzero(never)
            e = [np.empty(i.size) for _ in range(10)]
            args = (sp[i], k[i], tt[i], sig[i], r[i], q[i], np.ascontiguousarray(call[i]))
            run_chunked(_greeks_kernel, i.size, *args, *e)
            price[i], delta[i], gamma[i], theta[i] = e[0], e[1], e[2], e[4]
        p, d, g, th = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        o = np.flatnonzero(det)
        if o.size:
            pd = (np.empty(o.size), np.empty(o.size), np.empty(o.size))
            run_chunked(deterministic_kernel, o.size, ps[o], pk[o], pr[o], pq[o], tt[o], *pd)
            p[o], d[o], g[o] = pd
        of = np.flatnonzero(fd)
        if of.size:
            pd = (np.empty(of.size), np.empty(of.size), np.empty(of.size))
            run_chunked(fd_kernel, of.size, ps[of], pk[of], pr[of], pq[of], sig[of], tt[of], *pd)
            p[of], d[of], g[of] = pd
            cont = p[of] > pk[of] - ps[of] + 1e-12 * pk[of]
            th[of] = np.where(
                cont,
                pr[of] * p[of] - (pr[of] - pq[of]) * ps[of] * d[of] - 0.5 * sig[of] * sig[of] * ps[of] * ps[of] * g[of],
                0.0,
            )
        i = np.flatnonzero(single)
        if i.size:  # unit strike: P(S', K') = K' p(S'/K'), so the boundary does not depend on the call's spot
            tab = GREEKS_TABLES if greeks else EXACT_TABLES
            # one boundary per distinct (pr, pq, sig, t), bit for bit (points of many spots on few vols share it)
            first, row = distinct_rows(pr[i], pq[i], sig[i], tt[i])
            # the rows of one (pr, pq, t) side by side: boundary_kernel computes their volatility-free terms once
            first, row = _by_rates(first, row, pr[i], pq[i], tt[i])
            u = i[first]
            bounds = (pr[u], pq[u], sig[u], tt[u], exercise_limits(pr[u], pq[u]))
            if warm_from is None:
                s, _, b_u = solve_boundaries(*bounds, tol, tab, keep_states=keep_states)
            else:
                s, b_u = _warm_boundaries(bounds, tol, tab, i, u, row, warm_from)
            b_t = b_u[row]
            x = ps[i] / pk[i]
            pi, di, gi = premiums(x, row, bounds, s, tab, greeks or not price_only)
            cont = x > b_t
            if greeks:
                bump = np.flatnonzero(np.broadcast_to(gamma_bump, (n,))[i] & cont)
                if bump.size:
                    xb = x[bump]
                    h = GAMMA_BUMP * xb
                    d_up = premiums(xb + h, row[bump], bounds, s, tab, True)[1]
                    down = xb - h > b_t[bump]
                    d_dn = np.full(bump.size, -1.0)
                    d_dn[down] = premiums((xb - h)[down], row[bump][down], bounds, s, tab, True)[1]
                    gi[bump] = (d_up - d_dn) / (2.0 * h)
            pi = pi * pk[i]
            gi = gi / pk[i]
            p[i], d[i], g[i] = pi, di, gi
            th[i] = np.where(
                cont,
                pr[i] * pi - (pr[i] - pq[i]) * ps[i] * di - 0.5 * sig[i] * sig[i] * ps[i] * ps[i] * gi,
                0.0,
            )
        j = np.flatnonzero(rest)
        if j.size:
            # rounding of the quadrature must not undercut immediate exercise or the European value
            euro = np.empty(j.size)
            run_chunked(
                _price_kernel, j.size, sp[j], k[j], tt[j], sig[j], r[j], q[j], np.ascontiguousarray(call[j]), euro
            )
            pj = py_max(py_max(p[j], pk[j] - ps[j]), euro)
            cj = call[j]
            price[j] = pj
            delta[j] = np.where(cj, (pj - ps[j] * d[j]) / pk[j], d[j])
            gamma[j] = np.where(cj, ps[j] * ps[j] * g[j] / (pk[j] * pk[j]), g[j])
            theta[j] = th[j]
    return price, delta, gamma, theta
