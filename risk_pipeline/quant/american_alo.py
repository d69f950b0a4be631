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
its analytic Jacobian (all nodes at once), started from Li's QD+ boundary (M. Li, "Analytical
approximations for the critical stock prices of American options: a performance comparison", 2009),
instead of ALO's fixed-point (Jacobi-Newton) iteration, which converges slowly for long-dated
low-volatility options; the iteration stops after a step below ``NEWTON_STEP_TOL`` in ``s`` (the next
one would move it by ~its square), normally after 3 to 4 steps, at most ``NEWTON_MAX_STEPS``.

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

import numpy as np
from numba import njit

from risk_pipeline.quant._numba import JIT, FloatArray
from risk_pipeline.quant.special import exp_minus_half_square, fast_exp, norm_cdf_from_exp

#: Chebyshev intervals of the boundary interpolation (``NODES + 1`` points, ``tau = 0`` included).
NODES = 16
#: Gauss-Legendre points of each integral of the boundary equation.
FP_POINTS = 12
#: Gauss-Legendre points of the early-exercise premium integral.
PRICE_POINTS = 48
#: The Newton iteration on the boundary stops after a step of at most this (in ``s = -ln(B/X)``).
NEWTON_STEP_TOL = 1e-7
#: Newton steps at most.
NEWTON_MAX_STEPS = 12
#: Halley's iteration of the QD+ starting boundary stops after a step below this fraction of ``X``.
QD_PLUS_TOL = 1e-4
#: ``sigma sqrt(T)`` at or below this uses the deterministic (zero-volatility) value.
MIN_TOTAL_STD = 1e-8

_INV_SQRT_2PI = 0.39894228040143267794
_NL = NODES * FP_POINTS


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


def _tables() -> tuple[FloatArray, ...]:
    """Chebyshev points, quadrature nodes and weights, and the interpolation matrices (parameter-free)."""
    z = -np.cos(np.arange(NODES + 1) * np.pi / NODES)
    gx, gw = np.polynomial.legendre.leggauss(FP_POINTS)
    phi = 0.25 * np.pi * (gx + 1.0)
    fw = gw * 0.25 * np.pi * np.sin(2.0 * phi)  # d(sin^2 phi) = sin(2 phi) dphi
    # interpolation of H at u = tau_i sin^2(phi_k): z(u) = (1 + z_i) sin(phi_k) - 1, independent of T
    fm = np.empty((NODES, NODES + 1, FP_POINTS))
    for i in range(1, NODES + 1):
        fm[i - 1] = _barycentric_matrix((1.0 + z[i]) * np.sin(phi) - 1.0, z).T
    gx, gw = np.polynomial.legendre.leggauss(PRICE_POINTS)
    phi_p = 0.25 * np.pi * (gx + 1.0)
    pw = gw * 0.25 * np.pi * np.sin(2.0 * phi_p)
    pm = _barycentric_matrix(2.0 * np.sin(phi_p) - 1.0, z)
    return (z, np.sin(phi) ** 2, np.cos(phi), fw, np.ascontiguousarray(fm), np.cos(phi_p), pw, pm)


_Z, _FS2, _FC, _FW, _FM, _PC, _PW, _PM = _tables()


@njit(inline="always", **JIT)
def _ncdf(x: float) -> float:
    return norm_cdf_from_exp(x, exp_minus_half_square(x))


@njit(**JIT)
def exercise_limit(k: float, r: float, q: float) -> float:
    """``X = B(0+)`` of a put with early exercise: ``K min(1, r/q)`` for ``q > 0``, else ``K``."""
    return k * min(1.0, r / q) if q > 0.0 else k


@njit(**JIT)
def qd_plus_boundary(tau: float, k: float, r: float, q: float, sig: float, x_max: float, start: float,
                     tol: float) -> float:
    """Li's (2009) QD+ approximation of the put exercise boundary at time to maturity ``tau``: Halley's
    iteration from ``start`` until a step below ``tol * X``."""
    s2 = sig * sig
    v = sig * math.sqrt(tau)
    dr = math.exp(-r * tau)
    dq = math.exp(-q * tau)
    rt = r * tau
    ddr = r / (1.0 - dr) if abs(rt) > 1e-5 else 1.0 / (tau * (1.0 - 0.5 * rt * (1.0 - rt / 3.0)))
    om = 2.0 * (r - q) / s2
    root = math.sqrt((om - 1.0) ** 2 + 8.0 * ddr / s2)
    lam = 0.5 * (-(om - 1.0) - root)
    lam_p = 2.0 * ddr * ddr / (s2 * root)
    den = 2.0 * lam + om - 1.0
    alpha = 2.0 * dr / (s2 * den)
    beta = alpha * (ddr + lam_p / den) - lam
    x_min = 1e-12 * x_max
    x = start
    for _ in range(16):
        dp = math.log(x * dq / (k * dr)) / v + 0.5 * v
        dm = dp - v
        e_p = exp_minus_half_square(dp)
        n_mdp = norm_cdf_from_exp(-dp, e_p)
        n_mdm = _ncdf(-dm)
        pdf = _INV_SQRT_2PI * e_p
        npv = dr * k * n_mdm - x * dq * n_mdp
        theta = r * k * dr * n_mdm - q * x * dq * n_mdp - s2 * x / (2.0 * v) * dq * pdf
        charm = -dq * (pdf * ((r - q) / v - dm / (2.0 * tau)) + q * n_mdp)
        fx = (1.0 - dq * n_mdp) * x - beta * (k - x - npv) + alpha * theta / dr
        f1 = 1.0 - dq * n_mdp + dq / v * pdf + beta * (1.0 - dq * n_mdp) + alpha / dr * charm
        gam = pdf * dq / (v * x)
        colour = gam * (q + (r - q) * dp / v + (1.0 - dp * dm) / (2.0 * tau))
        f2 = dq * (pdf / (x * v) - pdf * dp / (x * v * v)) + beta * gam + alpha / dr * colour
        step = fx / f1 / (1.0 - 0.5 * fx * f2 / (f1 * f1))
        x_new = max(x_min, x - step)
        if not x_new == x_new:
            break
        done = abs(x_new - x) < tol * x_max
        x = x_new
        if done:
            break
    return min(x, x_max)


@njit(**JIT)
def _solve(a: FloatArray, b: FloatArray, n: int) -> None:
    """``b <- a^{-1} b`` by Gaussian elimination with partial pivoting (``a`` is overwritten)."""
    for c in range(n):
        p = c
        big = abs(a[c, c])
        for i in range(c + 1, n):
            if abs(a[i, c]) > big:
                big = abs(a[i, c])
                p = i
        if p != c:
            for j in range(n):
                a[c, j], a[p, j] = a[p, j], a[c, j]
            b[c], b[p] = b[p], b[c]
        inv = 1.0 / a[c, c]
        for i in range(c + 1, n):
            f = a[i, c] * inv
            if f != 0.0:
                for j in range(c + 1, n):
                    a[i, j] -= f * a[c, j]
                b[i] -= f * b[c]
    for c in range(n - 1, -1, -1):
        acc = b[c]
        for j in range(c + 1, n):
            acc -= a[c, j] * b[j]
        b[c] = acc / a[c, c]


@njit(**JIT)
def put_boundary(k: float, r: float, q: float, sig: float, t: float, x_max: float, s: FloatArray) -> int:
    """Solve the boundary equation: ``s[j] = -ln(B(tau_j)/X)`` at the ``NODES + 1`` Chebyshev points
    ``tau_j = T (1 + z_j)^2 / 4``; returns the Newton steps taken (module docstring). Put with early
    exercise and a single boundary (``r >= 0``, not ``r <= 0 <= q``), ``sigma sqrt(T) > 0``."""
    n = NODES
    nl = _NL
    lq = FP_POINTS
    sqt = math.sqrt(t)
    tau = np.empty(n)
    lnk = math.log(k / x_max)
    s[0] = 0.0
    b0 = x_max
    for i in range(n):  # QD+ start, node by node from the previous node's boundary (it falls with tau)
        xi = 0.5 * sqt * (1.0 + _Z[i + 1])
        tau[i] = xi * xi
        b0 = qd_plus_boundary(tau[i], k, r, q, sig, x_max, b0, QD_PLUS_TOL)
        s[i + 1] = max(-math.log(b0 / x_max), 0.0)
    inv_sd = np.empty(nl)
    cc = np.empty(nl)
    sdv = np.empty(nl)
    wr = np.empty(nl)
    wq = np.empty(nl)
    sh = np.empty(nl)
    sn = np.empty(nl)
    tn = np.empty(nl)
    td = np.empty(nl)
    aa = np.empty(nl)
    ca = np.empty(nl)
    hh = np.empty(n + 1)
    jac = np.empty((n, n))
    res = np.empty(n)
    nn = np.empty(n)
    dd = np.empty(n)
    for i in range(n):
        ti = tau[i]
        st = sig * math.sqrt(ti)
        for kk in range(lq):
            c = i * lq + kk
            u = ti * _FS2[kk]
            sd = st * _FC[kk]
            inv_sd[c] = 1.0 / sd
            sdv[c] = sd
            cc[c] = (r - q) * (ti - u) / sd + 0.5 * sd
            wr[c] = r * ti * _FW[kk] * math.exp(r * u)
            wq[c] = q * ti * _FW[kk] * math.exp(q * u)
    steps = 0
    for _ in range(NEWTON_MAX_STEPS):
        steps += 1
        for j in range(n + 1):
            hh[j] = s[j] * s[j]
        for i in range(n):
            for kk in range(lq):
                sh[i * lq + kk] = 0.0
            for j in range(1, n + 1):
                hj = hh[j]
                for kk in range(lq):
                    sh[i * lq + kk] += _FM[i, j, kk] * hj
            for kk in range(lq):
                sn[i * lq + kk] = s[i + 1]
        for c in range(nl):  # flat, branch-free: vectorized
            root = math.sqrt(np.maximum(sh[c], 0.0))
            dp = (root - sn[c]) * inv_sd[c] + cc[c]
            dm = dp - sdv[c]
            e_p = exp_minus_half_square(dp)
            e_m = exp_minus_half_square(dm)
            tn[c] = wr[c] * norm_cdf_from_exp(dm, e_m)
            td[c] = wq[c] * norm_cdf_from_exp(dp, e_p)
            aa[c] = wr[c] * _INV_SQRT_2PI * e_m * inv_sd[c]
            ca[c] = wq[c] * _INV_SQRT_2PI * e_p * inv_sd[c]
            sh[c] = root
        for i in range(n):
            ti = tau[i]
            si = s[i + 1]
            v = sig * math.sqrt(ti)
            dp0 = (-lnk - si + (r - q) * ti) / v + 0.5 * v
            dm0 = dp0 - v
            e_p = exp_minus_half_square(dp0)
            e_m = exp_minus_half_square(dm0)
            num = norm_cdf_from_exp(dm0, e_m)
            den = norm_cdf_from_exp(dp0, e_p)
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
            res[i] = lnk - (r - q) * ti + math.log(num) - math.log(den) + si
            d_num = -(_INV_SQRT_2PI * e_m / v + sa)
            d_den = -(_INV_SQRT_2PI * e_p / v + sc)
            for j in range(n):
                jac[i, j] = 0.0
            jac[i, i] = d_num / num - d_den / den + 1.0
        for i in range(n):  # d/ds_j through the interpolated H at the quadrature points
            inv_n = 1.0 / nn[i]
            inv_d = 1.0 / dd[i]
            for kk in range(lq):
                c = i * lq + kk
                root = sh[c]
                tn[c] = (aa[c] * inv_n - ca[c] * inv_d) / root if root > 0.0 else 0.0
            for j in range(1, n + 1):
                acc = 0.0
                for kk in range(lq):
                    acc += tn[i * lq + kk] * _FM[i, j, kk]
                jac[i, j - 1] += s[j] * acc
        _solve(jac, res, n)
        big = 0.0
        for i in range(n):
            step = res[i]
            if not step == step:
                big = math.inf
                break
            s[i + 1] = max(s[i + 1] - step, 0.0)
            big = max(big, abs(step))
        if big <= NEWTON_STEP_TOL:
            break
        if not big < math.inf:
            steps = -steps
            break
    return steps


@njit(**JIT)
def put_from_boundary(sp: float, k: float, r: float, q: float, sig: float, t: float, x_max: float,
                      s: FloatArray) -> tuple[float, float, float]:
    """(price, delta, gamma) of the put at spot ``sp`` from the boundary ``s`` of ``put_boundary``."""
    n = NODES
    b_t = x_max * math.exp(-s[n])
    sqt = math.sqrt(t)
    v = sig * sqt
    if sp <= b_t:
        return k - sp, -1.0, 0.0
    dq = math.exp(-q * t)
    dr = math.exp(-r * t)
    dp = (math.log(sp / k) + (r - q) * t) / v + 0.5 * v
    e_p = exp_minus_half_square(dp)
    pdf = _INV_SQRT_2PI * e_p
    price = k * dr * _ncdf(-(dp - v)) - sp * dq * norm_cdf_from_exp(-dp, e_p)
    delta = -dq * norm_cdf_from_exp(-dp, e_p)
    gamma = dq * pdf / (sp * v)
    hh = np.empty(n + 1)
    for j in range(n + 1):
        hh[j] = s[j] * s[j]
    lsx = math.log(sp / x_max)
    rk = r * k
    e_price = 0.0
    e_delta = 0.0
    e_gamma = 0.0
    for c in range(PRICE_POINTS):
        h = 0.0
        for j in range(1, n + 1):
            h += _PM[c, j] * hh[j]
        root = math.sqrt(np.maximum(h, 0.0))
        pc = _PC[c]
        tt = t * pc * pc
        sd = v * pc
        d1 = (lsx + root + (r - q) * tt) / sd + 0.5 * sd
        d2 = d1 - sd
        e1 = exp_minus_half_square(d1)
        e2 = exp_minus_half_square(d2)
        er = fast_exp(-r * tt)
        eq = fast_exp(-q * tt)
        b = x_max * fast_exp(-root)
        n1 = norm_cdf_from_exp(-d1, e1)
        w = _PW[c]
        g = er * _INV_SQRT_2PI * e2 / (sp * sd)
        e_price += w * (rk * er * norm_cdf_from_exp(-d2, e2) - q * sp * eq * n1)
        e_delta += w * (-q * eq * n1 - g * (rk - q * b))
        e_gamma += w * g / sp * (q * b + (rk - q * b) * (1.0 + d2 / sd))
    return price + t * e_price, delta + t * e_delta, gamma + t * e_gamma


@njit(**JIT)
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


@njit(**JIT)
def alo_point(sp: float, k: float, t: float, sig: float, r: float, q: float, call: bool
              ) -> tuple[float, float, float, float]:
    """(price, delta, gamma, theta) of one American option on the single-boundary or deterministic
    branches (module docstring); NaN for invalid input and for the double-boundary regime."""
    nan = math.nan
    if not ((sp > 0.0) & (k > 0.0) & (sig >= 0.0) & (t == t) & (r == r) & (q == q)):
        return nan, nan, nan, nan
    t = max(t, 0.0)
    ps, pk, pr, pq = (k, sp, q, r) if call else (sp, k, r, q)
    if (pr < 0.0) & (pq < pr):
        return nan, nan, nan, nan
    if sig * math.sqrt(t) <= MIN_TOTAL_STD:
        p, d = deterministic_put(ps, pk, pr, pq, t)
        g = 0.0
        th = 0.0
    else:
        x_max = exercise_limit(pk, pr, pq)
        s = np.empty(NODES + 1)
        put_boundary(pk, pr, pq, sig, t, x_max, s)
        p, d, g = put_from_boundary(ps, pk, pr, pq, sig, t, x_max, s)
        cont = ps > x_max * math.exp(-s[NODES])
        th = (pr * p - (pr - pq) * ps * d - 0.5 * sig * sig * ps * ps * g) if cont else 0.0
    if call:  # C(S, K) = P(K, S): d/dS = d/dK' = (P - S' dP/dS') / K'; S^2 d2C/dS2 = S'^2 d2P/dS'2
        return p, (p - ps * d) / pk, ps * ps * g / (pk * pk), th
    return p, d, g, th
