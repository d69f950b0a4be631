"""SABR smiles per expiry: Hagan et al. (2002) and Obloj (2008) lognormal vols, calibration, density check.

Model (Hagan, Kumar, Lesniewski & Woodward 2002, "Managing smile risk", Wilmott): the forward ``F`` and its
volatility ``a`` follow ``dF = a F^beta dW``, ``da = nu a dZ``, ``dW dZ = rho dt``, ``a(0) = alpha``.

* ``sabr_hagan_vol`` is their lognormal implied-vol expansion (eq. 2.17a)::

      sigma = alpha / ((F K)^{(1-b)/2} [1 + (1-b)^2 L^2 / 24 + (1-b)^4 L^4 / 1920]) * z / x(z) * (1 + T c)
      z = nu / alpha (F K)^{(1-b)/2} L,   L = ln(F / K),
      x(z) = ln((sqrt(1 - 2 rho z + z^2) + z - rho) / (1 - rho)),
      c = (1-b)^2 alpha^2 / (24 (F K)^{1-b}) + rho b nu alpha / (4 (F K)^{(1-b)/2}) + (2 - 3 rho^2) nu^2 / 24

  (the formula of QuantLib's ``sabrVolatility``, which the tests compare against).
* ``sabr_obloj_vol`` keeps the ``1 + T c`` correction but replaces the leading term by the exact short-expiry
  limit of Berestycki, Busca & Florent (2004), as Obloj (2008, "Fine-tune your smile: correction to Hagan et
  al.", Wilmott) recommends: ``sigma_0 = nu L / x(z)`` with ``z = nu (F^{1-b} - K^{1-b}) / (alpha (1-b))``
  (``z = nu L / alpha`` for ``b = 1``). It differs from Hagan's only for ``b < 1``, where Hagan's leading term
  is wrong in the wings as the expiry shrinks; the tests show it converges to the BBF limit, and both stay
  within about half a vol point of QuantLib's SABR PDE price at one year (beta 0.5, 60-170 % strikes).

Calibration (``calibrate_sabr``): ``beta`` fixed per underlying (1 by default for equities), ``(alpha, rho, nu)``
by bounded least squares (``scipy.optimize.least_squares``, trust-region reflective; ``nu`` at most
``nu_upper_bound(t)``) on the implied vols of the out-of-the-money mids, each residual weighted by the square root
of its Black vega (as the SVI fit is), from a start where ``alpha`` reproduces the quote nearest the money. Every input
and the fit quality (RMSE in vol points) are on the result. The least squares run compiled (``_calibrate_kernel``, one
call per slice): scipy's iterates bit for bit, the smile's logarithms and cubes still computed by numpy.
``density_check`` tests the risk-neutral density implied by the smile (the second strike derivative of undiscounted
Black call prices, Breeden & Litzenberger 1978) on a strike grid, the no-butterfly-arbitrage condition, as the SVI
slices have theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numba
import numpy as np
from numba.core import types as nbt
from numpy.typing import ArrayLike
from scipy.linalg import get_lapack_funcs
from scipy.linalg.lapack import _compute_lwork
from scipy.special import ndtr

from risk_pipeline.quant._numba import JIT, FloatArray, inner_njit
from risk_pipeline.quant._summation import block_sum

_SQRT_2PI = np.sqrt(2 * np.pi)  # scipy.stats' _norm_pdf_C
#: ``least_squares``' relative step of 2-point differences (``_numdiff._eps_for_method``) and the diagonal of 3x3.
_SQRT_EPS = np.finfo(np.float64).eps ** 0.5
_DIAG = np.arange(3)
#: ``JIT`` for the functions with an object-mode block (which holds the GIL anyway: numba warns at ``nogil``).
_OBJMODE_JIT = {**JIT, "nogil": False}
#: numba's C helper around LAPACK's ``gesdd`` (what ``np.linalg.svd`` calls in numba: scipy's LAPACK, the optimal
#: workspace), its float64 kind and ``jobz`` ``'S'``.
_GESDD_C = nbt.ExternalFunction(
    "numba_ez_gesdd",
    nbt.intc(
        nbt.char, nbt.char, nbt.intp, nbt.intp, nbt.CPointer(nbt.float64), nbt.intp, nbt.CPointer(nbt.float64),
        nbt.CPointer(nbt.float64), nbt.intp, nbt.CPointer(nbt.float64), nbt.intp,
    ),
)  # fmt: skip
_KIND_D = ord("d")
_JOBZ_S = ord("S")
_TRANS_T = ord("t")
#: numba's C helpers around BLAS' ``ddot`` and ``dgemv`` (what ``np.dot`` calls in numba), called directly: the
#: same products without compiling numba's ``np.dot`` for each operand type.
_DOT_C = nbt.ExternalFunction(
    "numba_xxdot", nbt.intc(nbt.char, nbt.char, nbt.intp, nbt.voidptr, nbt.voidptr, nbt.voidptr)
)
_GEMV_C = nbt.ExternalFunction(
    "numba_xxgemv",
    nbt.intc(
        nbt.char, nbt.char, nbt.intp, nbt.intp, nbt.voidptr, nbt.voidptr, nbt.intp, nbt.voidptr, nbt.voidptr,
        nbt.voidptr,
    ),
)  # fmt: skip
#: Quotes of the largest slice ``_calibrate_kernel`` fits (its ``_np_sum`` covers numpy's sums up to 128 terms).
_KERNEL_MAX_QUOTES = 128

#: Bounds of the calibrated parameters: alpha > 0, |rho| < 1, ``0 <= nu <= nu_upper_bound(t)``.
RHO_BOUND = 0.999
NU_MAX = 10.0
#: The expansions are in ``nu^2 T``; short slices may use ``nu`` up to ``sqrt(NU_SQUARED_T_MAX / T)`` (27 at
#: one day, 10.2 at one week). A flat cap of 10 held every 1-day slice of the demo at the bound (median RMSE
#: 0.42 vol points against 0.05 unbounded, where nu came out at 10-17).
NU_SQUARED_T_MAX = 2.0


def nu_upper_bound(t: float) -> float:
    """Upper bound of ``nu`` in the calibration of a slice expiring in ``t`` years: ``max(NU_MAX, sqrt(2 / t))``."""
    return max(NU_MAX, math.sqrt(NU_SQUARED_T_MAX / t))


#: |z| below this uses the series of z / x(z) (no 0/0 at the money).
_SMALL_Z = 1e-7


@dataclass(frozen=True)
class SabrFit:
    """A calibrated SABR slice with its inputs and fit quality."""

    alpha: float
    beta: float
    rho: float
    nu: float
    forward: float
    time_years: float
    rmse_vol_points: float
    n_quotes: int
    converged: bool
    formula: str


def _z_over_x(z: FloatArray, rho: float) -> FloatArray:
    """``z / x(z)``, with its series ``1 - rho z / 2`` near ``z = 0``."""
    small = np.abs(z) < _SMALL_Z
    zz = np.where(small, 1.0, z)
    x = np.log((np.sqrt(1.0 - 2.0 * rho * zz + zz * zz) + zz - rho) / (1.0 - rho))
    return np.where(small, 1.0 - 0.5 * rho * z, zz / x)


def _correction_from(
    den_alpha: FloatArray, den_rho: FloatArray, t: float, alpha: float, beta: float, rho: float, nu: float
) -> FloatArray:
    """The ``1 + T c`` factor shared by both formulas (module docstring), from its parameter-free denominators
    ``24 (F K)^(1-b)`` and ``4 (F K)^((1-b)/2)``."""
    c = (
        (1.0 - beta) ** 2 * alpha * alpha / den_alpha
        + rho * beta * nu * alpha / den_rho
        + (2.0 - 3.0 * rho * rho) * nu * nu / 24.0
    )
    return 1.0 + t * c


@dataclass(frozen=True)
class _Smile:
    """The parts of a formula's smile that depend on the strikes, forward and ``beta`` only: ``vol = alpha / lead
    * z / x(z) * (1 + T c)`` with ``z = nu / alpha * z_scale * log_fk`` and ``c`` over ``den_alpha``, ``den_rho``
    (``_correction_from``). Computed once per slice, the same operations as each formula's own lines."""

    log_fk: FloatArray
    z_scale: FloatArray
    lead: FloatArray
    den_alpha: FloatArray
    den_rho: FloatArray


def _smile(
    strike: ArrayLike,
    forward: float | FloatArray,
    beta: float,
    formula: str,
    forward_power: FloatArray | None = None,
) -> _Smile:
    """``_Smile`` of ``formula`` (``"hagan"`` or ``"obloj"``) at ``strike``. ``forward`` may be a column, one forward
    per row of ``strike`` (``density_checks``); then ``forward_power`` is the column of each row's ``forward ** (1 -
    beta)`` taken as a Python float (numpy's power of an array may take another path, e.g. ``sqrt`` for 0.5)."""
    k = np.asarray(strike, dtype=np.float64)
    log_fk = np.log(forward / k)
    b1 = 1.0 - beta
    if formula == "hagan":
        fk_half = (forward * k) ** (0.5 * (1.0 - beta))
        z_scale = fk_half
        lead = fk_half * (1.0 + b1 * b1 * log_fk * log_fk / 24.0 + b1**4 * log_fk**4 / 1920.0)
    elif b1 == 0.0:
        z_scale = lead = np.full_like(log_fk, 1.0)  # (F^{1-b} - K^{1-b}) / ((1-b) L) -> 1 at b = 1
    else:
        # (F^{1-b} - K^{1-b}) / ((1 - b) L) = F^{1-b} (1 - exp(-(1-b) L)) / ((1-b) L), stable near L = 0
        small = np.abs(b1 * log_fk) < 1e-12
        safe = np.where(small, 1.0, b1 * log_fk)
        power = forward**b1 if forward_power is None else forward_power
        z_scale = lead = power * np.where(small, 1.0, -np.expm1(-safe) / safe)
    fk = forward * k
    return _Smile(log_fk, z_scale, lead, 24.0 * fk ** (1.0 - beta), 4.0 * fk ** (0.5 * (1.0 - beta)))


def _smile_vol(smile: _Smile, t: float, alpha: float, beta: float, rho: float, nu: float) -> FloatArray:
    """The smile's vols for parameters (scalars, or columns: one smile per row)."""
    z = nu / alpha * smile.z_scale * smile.log_fk
    corr = _correction_from(smile.den_alpha, smile.den_rho, t, alpha, beta, rho, nu)
    return alpha / smile.lead * _z_over_x(z, rho) * corr


def sabr_hagan_vol(
    strike: ArrayLike, forward: float, t: float, alpha: float, beta: float, rho: float, nu: float
) -> FloatArray:
    """Hagan et al. (2002) lognormal implied vol at each strike (module docstring)."""
    return _smile_vol(_smile(strike, forward, beta, "hagan"), t, alpha, beta, rho, nu)


def sabr_obloj_vol(
    strike: ArrayLike, forward: float, t: float, alpha: float, beta: float, rho: float, nu: float
) -> FloatArray:
    """Obloj (2008): the exact short-expiry leading term of Berestycki et al. times Hagan's correction
    (``sigma_0 = nu L / x(z) = (nu L / z) (z / x(z)) = alpha / ratio * z / x(z)``,
    ``ratio = (F^{1-b} - K^{1-b}) / ((1-b) L)``, ``z = nu / alpha * ratio * L``)."""
    return _smile_vol(_smile(strike, forward, beta, "obloj"), t, alpha, beta, rho, nu)


FORMULAS = {"hagan": sabr_hagan_vol, "obloj": sabr_obloj_vol}


def sabr_vol(fit: SabrFit, strike: ArrayLike, forward: float | None = None) -> FloatArray:
    """The fitted smile at ``strike``; with another ``forward`` it is the smile after a spot move with the same
    parameters (SABR's backbone: the "sticky-model" dynamic the risk layers can use)."""
    f = fit.forward if forward is None else forward
    return FORMULAS[fit.formula](strike, f, fit.time_years, fit.alpha, fit.beta, fit.rho, fit.nu)


def _black_vega_weight(strike: FloatArray, forward: float, t: float, vol: FloatArray) -> FloatArray:
    """Undiscounted Black vega per unit forward, ``phi(d1) sqrt(T)``."""
    sd = np.maximum(vol * math.sqrt(t), 1e-12)
    d1 = np.log(forward / strike) / sd + 0.5 * sd
    # scipy.stats.norm.pdf's own formula without its per-call argument handling (same bits)
    return np.exp(-(d1**2) / 2.0) / _SQRT_2PI * math.sqrt(t)


#: LAPACK's SVD as ``scipy.linalg.svd`` picks it for float64 matrices (``gesdd``), and its workspace query.
_GESDD, _GESDD_LWORK = get_lapack_funcs(("gesdd", "gesdd_lwork"), (np.empty((2, 2)),), ilp64="preferred")
_EPS = np.finfo(float).eps


def _norm(x: FloatArray) -> np.float64:
    """``numpy.linalg.norm(x)`` of a 1-D float array: its own operations (``sqrt(x.dot(x))``)."""
    return np.sqrt(x.dot(x))  # type: ignore[no-any-return]


def _step_size_to_bound(x: FloatArray, s: FloatArray, lb: FloatArray, ub: FloatArray) -> tuple[float, FloatArray]:
    """scipy's ``_lsq.common.step_size_to_bound``."""
    non_zero = np.nonzero(s)
    s_non_zero = s[non_zero]
    steps = np.empty_like(x)
    steps.fill(np.inf)
    with np.errstate(over="ignore"):
        steps[non_zero] = np.maximum((lb - x)[non_zero] / s_non_zero, (ub - x)[non_zero] / s_non_zero)
    min_step = np.min(steps)
    return min_step, np.equal(steps, min_step) * np.sign(s).astype(int)


def _make_strictly_feasible(x: FloatArray, lb: FloatArray, ub: FloatArray, rstep: float = 1e-10) -> FloatArray:
    """scipy's ``_lsq.common.make_strictly_feasible`` (with its ``find_active_constraints``)."""
    x_new = x.copy()
    active = np.zeros_like(x, dtype=int)
    if rstep == 0:
        active[x <= lb] = -1
        active[x >= ub] = 1
    else:
        lower_dist = x - lb
        upper_dist = ub - x
        lower_threshold = rstep * np.maximum(1, np.abs(lb))
        upper_threshold = rstep * np.maximum(1, np.abs(ub))
        active[np.isfinite(lb) & (lower_dist <= np.minimum(upper_dist, lower_threshold))] = -1
        active[np.isfinite(ub) & (upper_dist <= np.minimum(lower_dist, upper_threshold))] = 1
    lower_mask = np.equal(active, -1)
    upper_mask = np.equal(active, 1)
    if rstep == 0:
        x_new[lower_mask] = np.nextafter(lb[lower_mask], ub[lower_mask])
        x_new[upper_mask] = np.nextafter(ub[upper_mask], lb[upper_mask])
    else:
        x_new[lower_mask] = lb[lower_mask] + rstep * np.maximum(1, np.abs(lb[lower_mask]))
        x_new[upper_mask] = ub[upper_mask] - rstep * np.maximum(1, np.abs(ub[upper_mask]))
    tight_bounds = (x_new < lb) | (x_new > ub)
    x_new[tight_bounds] = 0.5 * (lb[tight_bounds] + ub[tight_bounds])
    return x_new


def _cl_scaling_vector(x: FloatArray, g: FloatArray, lb: FloatArray, ub: FloatArray) -> tuple[FloatArray, FloatArray]:
    """scipy's ``_lsq.common.CL_scaling_vector`` (Coleman-Li)."""
    v = np.ones_like(x)
    dv = np.zeros_like(x)
    mask = (g < 0) & np.isfinite(ub)
    v[mask] = ub[mask] - x[mask]
    dv[mask] = -1
    mask = (g > 0) & np.isfinite(lb)
    v[mask] = x[mask] - lb[mask]
    dv[mask] = 1
    return v, dv


def _solve_lsq_trust_region(
    n: int, m: int, uf: FloatArray, s: FloatArray, v: FloatArray, delta: float, initial_alpha: float
) -> tuple[FloatArray, float]:
    """scipy's ``_lsq.common.solve_lsq_trust_region`` (``rtol`` 0.01, ``max_iter`` 10)."""

    def phi_and_derivative(alpha: float) -> tuple[float, float]:
        denom = s**2 + alpha
        p_norm = _norm(suf / denom)
        return p_norm - delta, -np.sum(suf**2 / denom**3) / p_norm

    suf = s * uf
    if m >= n:
        threshold = _EPS * m * s[0]
        full_rank = s[-1] > threshold
    else:
        full_rank = False
    if full_rank:
        p = -v.dot(uf / s)
        if _norm(p) <= delta:
            return p, 0.0
    alpha_upper = _norm(suf) / delta
    if full_rank:
        phi, phi_prime = phi_and_derivative(0.0)
        alpha_lower = -phi / phi_prime
    else:
        alpha_lower = 0.0
    if not full_rank and initial_alpha == 0:
        alpha = max(0.001 * alpha_upper, (alpha_lower * alpha_upper) ** 0.5)
    else:
        alpha = initial_alpha
    for _ in range(10):
        if alpha < alpha_lower or alpha > alpha_upper:
            alpha = max(0.001 * alpha_upper, (alpha_lower * alpha_upper) ** 0.5)
        phi, phi_prime = phi_and_derivative(alpha)
        if phi < 0:
            alpha_upper = alpha
        ratio = phi / phi_prime
        alpha_lower = max(alpha_lower, alpha - ratio)
        alpha -= (phi + delta) * ratio / delta
        if np.abs(phi) < 0.01 * delta:
            break
    p = -v.dot(suf / (s**2 + alpha))
    p *= delta / _norm(p)
    return p, alpha


def _evaluate_quadratic(j: FloatArray, g: FloatArray, s: FloatArray, diag: FloatArray) -> float:
    """scipy's ``_lsq.common.evaluate_quadratic`` of a 1-D step."""
    js = j.dot(s)
    q = np.dot(js, js)
    q += np.dot(s * diag, s)
    return 0.5 * q + np.dot(s, g)  # type: ignore[no-any-return]


def _minimize_quadratic_1d(a: float, b: float, lb: float, ub: float, c: float = 0) -> tuple[float, float]:
    """scipy's ``_lsq.common.minimize_quadratic_1d``."""
    t = [lb, ub]
    if a != 0:
        extremum = -0.5 * b / a
        if lb < extremum < ub:
            t.append(extremum)
    ts = np.asarray(t)
    y = ts * (a * ts + b) + c
    i = np.argmin(y)
    return ts[i], y[i]


def _select_step(
    x: FloatArray,
    j_h: FloatArray,
    diag_h: FloatArray,
    g_h: FloatArray,
    p: FloatArray,
    p_h: FloatArray,
    d: FloatArray,
    delta: float,
    lb: FloatArray,
    ub: FloatArray,
    theta: float,
) -> tuple[FloatArray, FloatArray, float]:
    """scipy's ``_lsq.trf.select_step`` (its ``build_quadratic_1d`` and ``intersect_trust_region`` inline)."""
    if np.all((x + p >= lb) & (x + p <= ub)):
        return p, p_h, -_evaluate_quadratic(j_h, g_h, p_h, diag_h)
    p_stride, hits = _step_size_to_bound(x, p, lb, ub)
    r_h = np.copy(p_h)
    r_h[hits.astype(bool)] *= -1
    r = d * r_h
    p *= p_stride
    p_h *= p_stride
    x_on_bound = x + p
    # intersect_trust_region(p_h, r_h, delta)
    qa = np.dot(r_h, r_h)
    if qa == 0:
        raise ValueError("`s` is zero.")
    qb = np.dot(p_h, r_h)
    qc = np.dot(p_h, p_h) - delta**2
    if qc > 0:
        raise ValueError("`x` is not within the trust region.")
    root = np.sqrt(qb * qb - qa * qc)
    q = -(qb + math.copysign(root, qb))
    t1, t2 = q / qa, qc / q
    to_tr = t2 if t1 < t2 else t1
    to_bound, _ = _step_size_to_bound(x_on_bound, r, lb, ub)
    r_stride = min(to_bound, to_tr)
    if r_stride > 0:
        r_stride_l = (1 - theta) * p_stride / r_stride
        r_stride_u = theta * to_bound if r_stride == to_bound else to_tr
    else:
        r_stride_l = 0
        r_stride_u = -1
    if r_stride_l <= r_stride_u:
        # build_quadratic_1d(j_h, g_h, r_h, s0=p_h, diag=diag_h)
        v = j_h.dot(r_h)
        a = np.dot(v, v)
        a += np.dot(r_h * diag_h, r_h)
        a *= 0.5
        b = np.dot(g_h, r_h)
        u = j_h.dot(p_h)
        b += np.dot(u, v)
        c = 0.5 * np.dot(u, u) + np.dot(g_h, p_h)
        b += np.dot(p_h * diag_h, r_h)
        c += 0.5 * np.dot(p_h * diag_h, p_h)
        r_stride, r_value = _minimize_quadratic_1d(a, b, r_stride_l, r_stride_u, c=c)
        r_h *= r_stride
        r_h += p_h
        r = r_h * d
    else:
        r_value = np.inf
    p *= theta
    p_h *= theta
    p_value = _evaluate_quadratic(j_h, g_h, p_h, diag_h)
    ag_h = -g_h
    ag = d * ag_h
    to_tr = delta / _norm(ag_h)
    to_bound, _ = _step_size_to_bound(x, ag, lb, ub)
    ag_stride = theta * to_bound if to_bound < to_tr else to_tr
    # build_quadratic_1d(j_h, g_h, ag_h, diag=diag_h)
    v = j_h.dot(ag_h)
    a = np.dot(v, v)
    a += np.dot(ag_h * diag_h, ag_h)
    a *= 0.5
    b = np.dot(g_h, ag_h)
    ag_stride, ag_value = _minimize_quadratic_1d(a, b, 0, ag_stride)
    ag_h *= ag_stride
    ag *= ag_stride
    if p_value < r_value and p_value < ag_value:
        return p, p_h, -p_value
    if r_value < p_value and r_value < ag_value:
        return r, r_h, -r_value
    return ag, ag_h, -ag_value


def _least_squares_trf(
    fun: Callable[[FloatArray], FloatArray],
    jac: Callable[[FloatArray], FloatArray],
    x0: FloatArray,
    lb: FloatArray,
    ub: FloatArray,
    ftol: float,
    xtol: float,
    gtol: float = 1e-8,
) -> tuple[FloatArray, bool]:
    """``least_squares(fun, x0, jac=jac, bounds=(lb, ub), method="trf", x_scale="jac", ftol=ftol, xtol=xtol,
    gtol=gtol)`` for finite bounds on every side of at least one variable and a dense Jacobian: scipy 1.17's
    ``trf_bounds`` (exact trust-region solver, linear loss) with the same operations in the same order, so the same
    iterates, without ``least_squares``' per-evaluation wrappers (``VectorFunction``), the ``scipy.linalg.svd``
    argument handling (the same LAPACK call and workspace) or ``numpy.linalg.norm``'s (``sqrt(x.dot(x))`` as it
    computes it), which cost more than the SABR smile itself. (the solution, converged)"""
    x0 = np.atleast_1d(x0).astype(float)
    if not np.all((x0 >= lb) & (x0 <= ub)):
        raise ValueError("Initial guess is outside of provided bounds")
    x = _make_strictly_feasible(x0, lb, ub)
    f = np.atleast_1d(fun(x.copy())).copy()
    if not np.all(np.isfinite(f)):
        raise ValueError("Residuals are not finite in the initial point.")
    jac_matrix = np.atleast_2d(jac(x.copy()))
    jac_matrix = jac_matrix.astype(jac_matrix.dtype)
    m, n = jac_matrix.shape
    nfev = 1
    max_nfev = n * 100
    cost = 0.5 * np.dot(f, f)
    g = jac_matrix.T.dot(f)
    scale_inv = np.sum(jac_matrix**2, axis=0) ** 0.5
    scale_inv[scale_inv == 0] = 1
    scale = 1 / scale_inv
    v, dv = _cl_scaling_vector(x, g, lb, ub)
    v[dv != 0] *= scale_inv[dv != 0]
    delta = _norm(x * scale_inv / v**0.5)
    if delta == 0:
        delta = 1.0
    f_augmented = np.zeros(m + n)
    j_augmented = np.empty((m + n, n))
    lwork = _compute_lwork(_GESDD_LWORK, m + n, n, compute_uv=True, full_matrices=False)
    alpha = 0.0
    status = None
    while True:
        v, dv = _cl_scaling_vector(x, g, lb, ub)
        g_norm = np.abs(g * v).max()
        if g_norm < gtol:
            status = 1
        if status is not None or nfev == max_nfev:
            break
        v[dv != 0] *= scale_inv[dv != 0]
        d = v**0.5 * scale
        diag_h = g * dv * scale
        g_h = d * g
        f_augmented[:m] = f
        j_augmented[:m] = jac_matrix * d
        j_h = j_augmented[:m]
        j_augmented[m:] = np.diag(diag_h**0.5)
        if not np.all(np.isfinite(j_augmented)):  # scipy.linalg.svd's check_finite
            raise ValueError("array must not contain infs or NaNs")
        u_mat, s, vt, info = _GESDD(j_augmented, compute_uv=True, lwork=lwork, full_matrices=False, overwrite_a=False)
        if info > 0:
            raise np.linalg.LinAlgError("SVD did not converge")
        if info < 0:
            raise ValueError("A has a NaN entry" if info == -4 else f"illegal value in {-info}th argument of gesdd")
        v_mat = vt.T
        uf = u_mat.T.dot(f_augmented)
        theta = max(0.995, 1 - g_norm)
        actual_reduction = -1
        while actual_reduction <= 0 and nfev < max_nfev:
            p_h, alpha = _solve_lsq_trust_region(n, m, uf, s, v_mat, delta, initial_alpha=alpha)
            p = d * p_h
            step, step_h, predicted_reduction = _select_step(x, j_h, diag_h, g_h, p, p_h, d, delta, lb, ub, theta)
            x_new = _make_strictly_feasible(x + step, lb, ub, rstep=0)
            f_new = np.atleast_1d(fun(x_new.copy())).copy()
            nfev += 1
            step_h_norm = _norm(step_h)
            if not np.all(np.isfinite(f_new)):
                delta = 0.25 * step_h_norm
                continue
            cost_new = 0.5 * np.dot(f_new, f_new)
            actual_reduction = cost - cost_new
            # update_tr_radius
            if predicted_reduction > 0:
                ratio = actual_reduction / predicted_reduction
            elif predicted_reduction == actual_reduction == 0:
                ratio = 1
            else:
                ratio = 0
            delta_new = delta
            if ratio < 0.25:
                delta_new = 0.25 * step_h_norm
            elif ratio > 0.75 and step_h_norm > 0.95 * delta:
                delta_new *= 2.0
            step_norm = _norm(step)
            # check_termination
            ftol_ok = actual_reduction < ftol * cost and ratio > 0.25
            xtol_ok = step_norm < xtol * (xtol + _norm(x))
            status = 4 if ftol_ok and xtol_ok else 2 if ftol_ok else 3 if xtol_ok else None
            if status is not None:
                break
            alpha *= delta / delta_new
            delta = delta_new
        if actual_reduction > 0:
            x = x_new
            f = f_new
            cost = cost_new
            jac_matrix = np.atleast_2d(jac(x.copy()))
            jac_matrix = jac_matrix.astype(jac_matrix.dtype)
            g = jac_matrix.T.dot(f)
            scale_inv = np.maximum(np.sum(jac_matrix**2, axis=0) ** 0.5, scale_inv)
            scale = 1 / scale_inv
    return x, (status or 0) > 0


# ---------------------------------------------------------------------------------------------------------------
# The calibration compiled: ``_least_squares_trf`` with ``calibrate_sabr``'s residuals and differences, one kernel
# call per slice, the same IEEE operations in the same order. Not compiled, because numba's would give other bits:
# ``np.log`` and ``x ** 3`` of float64 arrays, which numpy computes with its own SIMD code (not libm's) on machines
# with AVX-512; the kernel hands those arrays to numpy (``_by_numpy``, an object-mode block), and scalar powers
# (``delta ** 2``, ``x ** 0.5`` of numpy scalars: libm's ``pow``, not always the product or the square root) stay
# ``pow`` calls. Dot and matrix-vector products and the SVD call BLAS ``ddot``/``dgemv`` and LAPACK ``dgesdd`` as
# numpy and scipy do (numba's C helpers, scipy's OpenBLAS: the same results, the tests check them against
# ``least_squares``); ``np.sum`` is numpy's pairwise summation (``_np_sum``), a vector dot ``0.0 + ddot`` as in numpy.
# Cold compilation about 3.4 CPU s; every process compiles the object-mode block's lifted code again (0.2 s).


@numba.njit(**_OBJMODE_JIT)
def _by_numpy(a: FloatArray, cube: np.bool_) -> FloatArray:
    """``np.log(a)``, or ``a ** 3`` if ``cube``, computed by numpy itself (one object-mode block: numba compiles
    its lifted code in each process, about 0.2 CPU s, as it does not cache it)."""
    with numba.objmode(out="float64[:]"):
        out = a**3 if cube else np.log(a)
    return out


@inner_njit(forceinline=True)
def _np_sum(a: FloatArray, start: int, stop: int) -> float:
    """``np.sum`` of ``a[start:stop]`` (contiguous, at most 128 elements): numpy's pairwise summation."""
    return block_sum(a, start, stop - start)


@inner_njit()
def _smile_rows(
    log_fk: FloatArray,
    z_scale: FloatArray,
    lead: FloatArray,
    den_alpha: FloatArray,
    den_rho: FloatArray,
    t: float,
    b1sq: float,
    beta: float,
    params: FloatArray,
    rows: int,
    out: FloatArray,
) -> None:
    """``_smile_vol`` for ``rows`` parameter rows of ``params`` (alpha, rho, nu) into ``out`` (rows x quotes, flat):
    each element the operations of the numpy formulation, the logarithm by numpy."""
    m = log_fk.size
    n = rows * m
    zz = np.empty(n)
    arg = np.empty(n)
    corr = np.empty(n)
    for r in range(rows):
        alpha, rho, nu = params[r, 0], params[r, 1], params[r, 2]
        na = nu / alpha
        c1 = b1sq * alpha * alpha
        c2 = rho * beta * nu * alpha
        c3 = (2.0 - 3.0 * rho * rho) * nu * nu / 24.0
        r2 = 2.0 * rho
        for i in range(m):
            j = r * m + i
            z = na * z_scale[i] * log_fk[i]
            out[j] = z
            w = 1.0 if abs(z) < _SMALL_Z else z
            zz[j] = w
            arg[j] = (np.sqrt(1.0 - r2 * w + w * w) + w - rho) / (1.0 - rho)
            c = c1 / den_alpha[i] + c2 / den_rho[i] + c3
            corr[j] = 1.0 + t * c
    x = _by_numpy(arg, np.bool_(False))
    for r in range(rows):
        alpha, rho = params[r, 0], params[r, 1]
        hr = 0.5 * rho
        for i in range(m):
            j = r * m + i
            z = out[j]
            zx = 1.0 - hr * z if abs(z) < _SMALL_Z else zz[j] / x[j]
            out[j] = alpha / lead[i] * zx * corr[j]


@inner_njit()
def _residuals_into(
    log_fk: FloatArray,
    z_scale: FloatArray,
    lead: FloatArray,
    den_alpha: FloatArray,
    den_rho: FloatArray,
    weight: FloatArray,
    v: FloatArray,
    t: float,
    b1sq: float,
    beta: float,
    params: FloatArray,
    rows: int,
    out: FloatArray,
) -> None:
    """``weight * (smile vol - v)`` for ``rows`` parameter rows into ``out`` (flat, row after row)."""
    _smile_rows(log_fk, z_scale, lead, den_alpha, den_rho, t, b1sq, beta, params, rows, out)
    m = v.size
    for r in range(rows):
        for i in range(m):
            out[r * m + i] = weight[i] * (out[r * m + i] - v[i])


@inner_njit()
def _strictly_feasible(x: FloatArray, lb: FloatArray, ub: FloatArray, rstep: float) -> FloatArray:
    """``_make_strictly_feasible`` (scipy's ``make_strictly_feasible``), element by element (``np.maximum(1,
    |bound|)`` and ``np.minimum`` as comparisons: the bounds are not NaN)."""
    n = x.size
    out = np.empty(n)
    for i in range(n):
        out[i] = x[i]
        active = 0
        if rstep == 0:
            if x[i] <= lb[i]:
                active = -1
            if x[i] >= ub[i]:
                active = 1
        else:
            lower_dist = x[i] - lb[i]
            upper_dist = ub[i] - x[i]
            lower_threshold = rstep * _py_max(1.0, abs(lb[i]))
            upper_threshold = rstep * _py_max(1.0, abs(ub[i]))
            if np.isfinite(lb[i]) and lower_dist <= (upper_dist if upper_dist < lower_threshold else lower_threshold):
                active = -1
            if np.isfinite(ub[i]) and upper_dist <= (lower_dist if lower_dist < upper_threshold else upper_threshold):
                active = 1
        if rstep == 0:
            if active == -1:
                out[i] = np.nextafter(lb[i], ub[i])
            elif active == 1:
                out[i] = np.nextafter(ub[i], lb[i])
        else:
            if active == -1:
                out[i] = lb[i] + rstep * _py_max(1.0, abs(lb[i]))
            elif active == 1:
                out[i] = ub[i] - rstep * _py_max(1.0, abs(ub[i]))
        if out[i] < lb[i] or out[i] > ub[i]:
            out[i] = 0.5 * (lb[i] + ub[i])
    return out


@inner_njit(forceinline=True)
def _py_max(a: float, b: float) -> float:
    """Python's ``max(a, b)``: ``b`` only if it is greater."""
    return b if b > a else a


@inner_njit(forceinline=True)
def _dot(a: FloatArray, b: FloatArray) -> float:
    """``np.dot`` of two vectors as numpy computes it: ``0.0 + ddot`` (BLAS)."""
    out = np.empty(1)
    _DOT_C(_KIND_D, 0, a.size, a.ctypes, b.ctypes, out.ctypes)
    return 0.0 + out[0]


@inner_njit()
def _matvec(a: FloatArray, x: FloatArray) -> FloatArray:
    """``np.dot(a, x)`` of a C-contiguous matrix: BLAS ``dgemv`` as numpy and numba call it (``'t'`` on the
    Fortran view)."""
    rows, cols = a.shape
    out = np.empty(rows)
    one = np.empty(1)
    one[0] = 1.0
    zero = np.empty(1)
    zero[0] = 0.0
    _GEMV_C(_KIND_D, _TRANS_T, cols, rows, one.ctypes, a.ctypes, cols, x.ctypes, zero.ctypes, out.ctypes)
    return out


@inner_njit(forceinline=True)
def _norm_c(x: FloatArray) -> float:
    """``_norm``: ``sqrt(x.dot(x))``."""
    return np.sqrt(_dot(x, x))


@inner_njit()
def _step_to_bound(x: FloatArray, s: FloatArray, lb: FloatArray, ub: FloatArray) -> tuple[float, FloatArray]:
    """``_step_size_to_bound``: the smallest step to a bound along ``s`` and the hit bounds (-1, 0, 1) as floats."""
    n = x.size
    steps = np.empty(n)
    for i in range(n):
        if s[i] != 0:
            lo = (lb[i] - x[i]) / s[i]
            hi = (ub[i] - x[i]) / s[i]
            steps[i] = lo if (lo >= hi or np.isnan(lo)) else hi  # np.maximum: NaN propagates
        else:
            steps[i] = np.inf
    min_step = steps[0]
    for i in range(1, n):
        if np.isnan(min_step):
            break
        if np.isnan(steps[i]) or steps[i] < min_step:
            min_step = steps[i]
    hits = np.empty(n)
    for i in range(n):
        sign = 1.0 if s[i] > 0 else (-1.0 if s[i] < 0 else 0.0)
        hits[i] = sign if steps[i] == min_step else 0.0
    return min_step, hits


@inner_njit(forceinline=True)
def _times(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a * b`` (vectors)."""
    out = np.empty(a.size)
    for i in range(a.size):
        out[i] = a[i] * b[i]
    return out


@inner_njit()
def _quadratic(j: FloatArray, g: FloatArray, s: FloatArray, diag: FloatArray) -> float:
    """``_evaluate_quadratic`` (``j``: C-contiguous)."""
    js = _matvec(j, s)
    q = _dot(js, js)
    q += _dot(_times(s, diag), s)
    return 0.5 * q + _dot(s, g)


@inner_njit()
def _quadratic_1d_min(a: float, b: float, lb: float, ub: float, c: float) -> tuple[float, float]:
    """``_minimize_quadratic_1d``: the first of the candidates ``lb``, ``ub`` and an inner extremum with the least
    value (``np.argmin``: a NaN value wins)."""
    ts = np.empty(3)
    ts[0] = lb
    ts[1] = ub
    k = 2
    if a != 0:
        extremum = -0.5 * b / a
        if lb < extremum and extremum < ub:
            ts[2] = extremum
            k = 3
    best_t = ts[0]
    best_y = ts[0] * (a * ts[0] + b) + c
    if not np.isnan(best_y):
        for i in range(1, k):
            y = ts[i] * (a * ts[i] + b) + c
            if np.isnan(y):
                best_t, best_y = ts[i], y
                break
            if y < best_y:
                best_t, best_y = ts[i], y
    return best_t, best_y


@inner_njit()
def _phi_and_derivative(suf: FloatArray, s: FloatArray, alpha: float, delta: float) -> tuple[float, float]:
    """``_solve_lsq_trust_region``'s ``phi_and_derivative`` (``denom ** 3`` and the ``np.sum`` as numpy's)."""
    n = s.size
    denom = np.empty(n)
    ratio = np.empty(n)
    for i in range(n):
        denom[i] = s[i] * s[i] + alpha
        ratio[i] = suf[i] / denom[i]
    p_norm = _norm_c(ratio)
    cube = _by_numpy(denom, np.bool_(True))
    for i in range(n):
        ratio[i] = suf[i] * suf[i] / cube[i]
    return p_norm - delta, -_np_sum(ratio, 0, n) / p_norm


@inner_njit()
def _trust_region_step(
    n: int, m: int, uf: FloatArray, s: FloatArray, v: FloatArray, delta: float, initial_alpha: float, half: float
) -> tuple[FloatArray, float]:
    """``_solve_lsq_trust_region`` (``v``: C-contiguous, ``vt.T``'s layout in numpy)."""
    suf = _times(s, uf)
    work = np.empty(n)
    if m >= n:
        threshold = _EPS * m * s[0]
        full_rank = s[-1] > threshold
    else:
        full_rank = False
    if full_rank:
        for i in range(n):
            work[i] = uf[i] / s[i]
        p = _matvec(v, work)
        for i in range(n):
            p[i] = -p[i]
        if _norm_c(p) <= delta:
            return p, 0.0
    alpha_upper = _norm_c(suf) / delta
    if full_rank:
        phi, phi_prime = _phi_and_derivative(suf, s, 0.0, delta)
        alpha_lower = -phi / phi_prime
    else:
        alpha_lower = 0.0
    if not full_rank and initial_alpha == 0:
        alpha = _py_max(0.001 * alpha_upper, math.pow(alpha_lower * alpha_upper, half))
    else:
        alpha = initial_alpha
    for _ in range(10):
        if alpha < alpha_lower or alpha > alpha_upper:
            alpha = _py_max(0.001 * alpha_upper, math.pow(alpha_lower * alpha_upper, half))
        phi, phi_prime = _phi_and_derivative(suf, s, alpha, delta)
        if phi < 0:
            alpha_upper = alpha
        ratio = phi / phi_prime
        alpha_lower = _py_max(alpha_lower, alpha - ratio)
        alpha -= (phi + delta) * ratio / delta
        if np.abs(phi) < 0.01 * delta:
            break
    for i in range(n):
        work[i] = suf[i] / (s[i] * s[i] + alpha)
    p = _matvec(v, work)
    for i in range(n):
        p[i] = -p[i]
    scale = delta / _norm_c(p)
    for i in range(n):
        p[i] *= scale
    return p, alpha


@inner_njit()
def _select_step_c(
    x: FloatArray,
    j_h: FloatArray,
    diag_h: FloatArray,
    g_h: FloatArray,
    p: FloatArray,
    p_h: FloatArray,
    d: FloatArray,
    delta: float,
    lb: FloatArray,
    ub: FloatArray,
    theta: float,
    two: float,
) -> tuple[FloatArray, FloatArray, float]:
    """``_select_step`` (``j_h``: C-contiguous)."""
    n = x.size
    inside = True
    for i in range(n):
        if not (x[i] + p[i] >= lb[i] and x[i] + p[i] <= ub[i]):
            inside = False
    if inside:
        return p, p_h, -_quadratic(j_h, g_h, p_h, diag_h)
    p_stride, hits = _step_to_bound(x, p, lb, ub)
    r_h = p_h.copy()
    for i in range(n):
        if hits[i] != 0:
            r_h[i] *= -1
    r = _times(d, r_h)
    x_on_bound = np.empty(n)
    for i in range(n):
        p[i] *= p_stride
        p_h[i] *= p_stride
        x_on_bound[i] = x[i] + p[i]
    qa = _dot(r_h, r_h)
    if qa == 0:
        raise ValueError("`s` is zero.")
    qb = _dot(p_h, r_h)
    qc = _dot(p_h, p_h) - math.pow(delta, two)
    if qc > 0:
        raise ValueError("`x` is not within the trust region.")
    root = np.sqrt(qb * qb - qa * qc)
    q = -(qb + math.copysign(root, qb))
    t1, t2 = q / qa, qc / q
    to_tr = t2 if t1 < t2 else t1
    to_bound, _ = _step_to_bound(x_on_bound, r, lb, ub)
    r_stride = to_tr if to_tr < to_bound else to_bound
    if r_stride > 0:
        r_stride_l = (1 - theta) * p_stride / r_stride
        r_stride_u = theta * to_bound if r_stride == to_bound else to_tr
    else:
        r_stride_l = 0.0
        r_stride_u = -1.0
    if r_stride_l <= r_stride_u:
        vv = _matvec(j_h, r_h)
        a = _dot(vv, vv)
        a += _dot(_times(r_h, diag_h), r_h)
        a *= 0.5
        b = _dot(g_h, r_h)
        u = _matvec(j_h, p_h)
        b += _dot(u, vv)
        c = 0.5 * _dot(u, u) + _dot(g_h, p_h)
        pd = _times(p_h, diag_h)
        b += _dot(pd, r_h)
        c += 0.5 * _dot(pd, p_h)
        r_stride, r_value = _quadratic_1d_min(a, b, r_stride_l, r_stride_u, c)
        for i in range(n):
            r_h[i] *= r_stride
            r_h[i] += p_h[i]
            r[i] = r_h[i] * d[i]
    else:
        r_value = np.inf
    for i in range(n):
        p[i] *= theta
        p_h[i] *= theta
    p_value = _quadratic(j_h, g_h, p_h, diag_h)
    ag_h = np.empty(n)
    ag = np.empty(n)
    for i in range(n):
        ag_h[i] = -g_h[i]
        ag[i] = d[i] * ag_h[i]
    to_tr = delta / _norm_c(ag_h)
    to_bound, _ = _step_to_bound(x, ag, lb, ub)
    ag_stride = theta * to_bound if to_bound < to_tr else to_tr
    vv = _matvec(j_h, ag_h)
    a = _dot(vv, vv)
    a += _dot(_times(ag_h, diag_h), ag_h)
    a *= 0.5
    b = _dot(g_h, ag_h)
    ag_stride, ag_value = _quadratic_1d_min(a, b, 0.0, ag_stride, 0.0)
    for i in range(n):
        ag_h[i] *= ag_stride
        ag[i] *= ag_stride
    if p_value < r_value and p_value < ag_value:
        return p, p_h, -p_value
    if r_value < p_value and r_value < ag_value:
        return r, r_h, -r_value
    return ag, ag_h, -ag_value


@inner_njit()
def _jacobian_c(
    log_fk: FloatArray,
    z_scale: FloatArray,
    lead: FloatArray,
    den_alpha: FloatArray,
    den_rho: FloatArray,
    weight: FloatArray,
    v: FloatArray,
    t: float,
    b1sq: float,
    beta: float,
    x: FloatArray,
    f0: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
) -> FloatArray:
    """``calibrate_sabr``'s ``jacobian`` at ``x`` (residuals ``f0`` there): as parameters x quotes (C-contiguous,
    the memory of numpy's ``jac_matrix.T``)."""
    n = 3
    m = v.size
    h = np.empty(n)
    for i in range(n):
        sign = 1.0 if x[i] >= 0 else -1.0
        ax = abs(x[i])
        h[i] = _SQRT_EPS * sign * (ax if ax >= 1.0 or np.isnan(ax) else 1.0)
        lower_dist = x[i] - lower[i]
        upper_dist = upper[i] - x[i]
        fitting = abs(h[i]) <= (lower_dist if lower_dist >= upper_dist or np.isnan(lower_dist) else upper_dist)
        if ((x[i] + h[i]) < lower[i] or (x[i] + h[i]) > upper[i]) and fitting:
            h[i] *= -1
        if upper_dist >= lower_dist and not fitting:
            h[i] = upper_dist
        if upper_dist < lower_dist and not fitting:
            h[i] = -lower_dist
    points = np.empty((n, n))
    for r in range(n):
        for c in range(n):
            points[r, c] = x[c]
        points[r, r] = x[r] + h[r]
    shifted = np.empty(n * m)
    _residuals_into(
        log_fk, z_scale, lead, den_alpha, den_rho, weight, v, t, b1sq, beta, points, points.shape[0], shifted
    )
    jt = np.empty((n, m))
    for r in range(n):
        step = points[r, r] - x[r]
        for i in range(m):
            jt[r, i] = (shifted[r * m + i] - f0[i]) / step
    return jt


@inner_njit()
def _scale_inv(jt: FloatArray, out: FloatArray) -> None:
    """``np.sum(jac ** 2, axis=0) ** 0.5`` per parameter into ``out`` (``jt``: parameters x quotes)."""
    n, m = jt.shape
    sq = np.empty(m)
    for j in range(n):
        for i in range(m):
            sq[i] = jt[j, i] * jt[j, i]
        out[j] = np.sqrt(_np_sum(sq, 0, m))


@inner_njit()
def _svd(a_t: FloatArray, mm: int, n: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """LAPACK's ``dgesdd`` (``jobz='S'``, the optimal workspace: what ``scipy.linalg.svd`` and numba's
    ``np.linalg.svd`` call) of the ``mm x n`` matrix whose Fortran-order memory is ``a_t`` (its transpose, C order;
    overwritten): ``U.T``, the singular values and ``V`` (``Vt.T``), each C-contiguous."""
    ut = np.empty((n, mm))
    s = np.empty(n)
    v = np.empty((n, n))
    info = _GESDD_C(_KIND_D, _JOBZ_S, mm, n, a_t.ctypes, mm, s.ctypes, ut.ctypes, mm, v.ctypes, n)
    if info != 0:
        raise np.linalg.LinAlgError("SVD did not converge")
    return ut, s, v


@numba.njit(**JIT)
def _calibrate_kernel(
    log_fk: FloatArray,
    z_scale: FloatArray,
    lead: FloatArray,
    den_alpha: FloatArray,
    den_rho: FloatArray,
    weight: FloatArray,
    v: FloatArray,
    t: float,
    b1sq: float,
    beta: float,
    x0: FloatArray,
    lb: FloatArray,
    ub: FloatArray,
    ftol: float,
    xtol: float,
    gtol: float,
    two: float,
    half: float,
) -> tuple[FloatArray, bool]:
    """``_least_squares_trf`` with ``calibrate_sabr``'s residuals and Jacobian, compiled (the section's comment);
    ``two`` and ``half`` are 2.0 and 0.5, arguments so that ``pow`` stays libm's call (a constant exponent would
    be folded into a product or a square root). (the solution, converged)"""
    n = 3
    m = v.size
    for i in range(n):
        if not (x0[i] >= lb[i] and x0[i] <= ub[i]):
            raise ValueError("Initial guess is outside of provided bounds")
    x = _strictly_feasible(x0, lb, ub, 1e-10)
    params = np.empty((1, n))
    f = np.empty(m)
    for i in range(n):
        params[0, i] = x[i]
    _residuals_into(log_fk, z_scale, lead, den_alpha, den_rho, weight, v, t, b1sq, beta, params, params.shape[0], f)
    for i in range(m):
        if not np.isfinite(f[i]):
            raise ValueError("Residuals are not finite in the initial point.")
    jt = _jacobian_c(log_fk, z_scale, lead, den_alpha, den_rho, weight, v, t, b1sq, beta, x, f, lb, ub)
    nfev = 1
    max_nfev = n * 100
    cost = 0.5 * _dot(f, f)
    g = _matvec(jt, f)
    scale_inv = np.empty(n)
    _scale_inv(jt, scale_inv)
    scale = np.empty(n)
    for j in range(n):
        if scale_inv[j] == 0:
            scale_inv[j] = 1.0
        scale[j] = 1 / scale_inv[j]
    v_cl, dv = _cl_scaling(x, g, lb, ub)
    work = np.empty(n)
    for j in range(n):
        if dv[j] != 0:
            v_cl[j] *= scale_inv[j]
        work[j] = x[j] * scale_inv[j] / np.sqrt(v_cl[j])
    delta = _norm_c(work)
    if delta == 0:
        delta = 1.0
    mm = m + n
    f_augmented = np.empty(mm)
    for i in range(mm):
        f_augmented[i] = 0.0
    a_t = np.empty((n, mm))
    j_h = np.empty((m, n))
    d = np.empty(n)
    diag_h = np.empty(n)
    g_h = np.empty(n)
    new_inv = np.empty(n)
    alpha = 0.0
    status = 0
    actual_reduction = -1.0
    x_new = x
    f_new = f
    cost_new = cost
    params1 = np.empty((1, n))
    while True:
        v_cl, dv = _cl_scaling(x, g, lb, ub)
        g_norm = abs(g[0] * v_cl[0])
        for j in range(1, n):
            gv = abs(g[j] * v_cl[j])
            if gv > g_norm or np.isnan(gv):
                g_norm = gv
        if g_norm < gtol:
            status = 1
        if status != 0 or nfev == max_nfev:
            break
        for j in range(n):
            if dv[j] != 0:
                v_cl[j] *= scale_inv[j]
            d[j] = np.sqrt(v_cl[j]) * scale[j]
            diag_h[j] = g[j] * dv[j] * scale[j]
            g_h[j] = d[j] * g[j]
        for i in range(m):
            f_augmented[i] = f[i]
            for j in range(n):
                j_h[i, j] = jt[j, i] * d[j]
                a_t[j, i] = j_h[i, j]
        for i in range(n):
            for j in range(n):
                a_t[j, m + i] = np.sqrt(diag_h[j]) if i == j else 0.0
        for i in range(n):
            for j in range(mm):
                if not np.isfinite(a_t[i, j]):
                    raise ValueError("array must not contain infs or NaNs")
        ut, s, v_mat = _svd(a_t, mm, n)
        uf = _matvec(ut, f_augmented)
        theta = 1 - g_norm if 1 - g_norm > 0.995 else 0.995
        actual_reduction = -1.0
        while actual_reduction <= 0 and nfev < max_nfev:
            p_h, alpha = _trust_region_step(n, m, uf, s, v_mat, delta, alpha, half)
            p = _times(d, p_h)
            step, step_h, predicted_reduction = _select_step_c(
                x, j_h, diag_h, g_h, p, p_h, d, delta, lb, ub, theta, two
            )
            for i in range(n):
                work[i] = x[i] + step[i]
            x_new = _strictly_feasible(work, lb, ub, 0.0)
            for i in range(n):
                params1[0, i] = x_new[i]
            f_new = np.empty(m)
            _residuals_into(
                log_fk, z_scale, lead, den_alpha, den_rho, weight, v, t, b1sq, beta, params1, params1.shape[0], f_new
            )
            nfev += 1
            step_h_norm = _norm_c(step_h)
            finite = True
            for i in range(m):
                if not np.isfinite(f_new[i]):
                    finite = False
            if not finite:
                delta = 0.25 * step_h_norm
                continue
            cost_new = 0.5 * _dot(f_new, f_new)
            actual_reduction = cost - cost_new
            if predicted_reduction > 0:
                ratio = actual_reduction / predicted_reduction
            elif predicted_reduction == actual_reduction and actual_reduction == 0:
                ratio = 1.0
            else:
                ratio = 0.0
            delta_new = delta
            if ratio < 0.25:
                delta_new = 0.25 * step_h_norm
            elif ratio > 0.75 and step_h_norm > 0.95 * delta:
                delta_new *= 2.0
            step_norm = _norm_c(step)
            ftol_ok = actual_reduction < ftol * cost and ratio > 0.25
            xtol_ok = step_norm < xtol * (xtol + _norm_c(x))
            if ftol_ok and xtol_ok:
                status = 4
            elif ftol_ok:
                status = 2
            elif xtol_ok:
                status = 3
            if status != 0:
                break
            alpha *= delta / delta_new
            delta = delta_new
        if actual_reduction > 0:
            x = x_new
            f = f_new
            cost = cost_new
            jt = _jacobian_c(log_fk, z_scale, lead, den_alpha, den_rho, weight, v, t, b1sq, beta, x, f, lb, ub)
            g = _matvec(jt, f)
            _scale_inv(jt, new_inv)
            for j in range(n):
                col = new_inv[j]
                scale_inv[j] = col if (col >= scale_inv[j] or np.isnan(col)) else scale_inv[j]
                scale[j] = 1 / scale_inv[j]
    return x, status > 0


@inner_njit()
def _cl_scaling(x: FloatArray, g: FloatArray, lb: FloatArray, ub: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``_cl_scaling_vector`` (``dv`` as floats: -1, 0, 1)."""
    n = x.size
    v = np.empty(n)
    dv = np.empty(n)
    for i in range(n):
        v[i] = 1.0
        dv[i] = 0.0
        if g[i] < 0 and np.isfinite(ub[i]):
            v[i] = ub[i] - x[i]
            dv[i] = -1.0
        if g[i] > 0 and np.isfinite(lb[i]):
            v[i] = x[i] - lb[i]
            dv[i] = 1.0
    return v, dv


def _fit_python(
    smile: _Smile,
    weight: FloatArray,
    v: FloatArray,
    t: float,
    beta: float,
    x0: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
) -> tuple[FloatArray, bool]:
    """``calibrate_sabr``'s least squares in numpy and Python (``_calibrate_kernel`` compiles the same operations):
    the vega-weighted residuals, ``least_squares``' 2-point differences and ``_least_squares_trf``."""
    last: list[tuple[bytes, FloatArray]] = [(b"", v)]

    def residuals(x: FloatArray) -> FloatArray:
        out = weight * (_smile_vol(smile, t, x[0], beta, x[1], x[2]) - v)
        last[0] = (x.tobytes(), out)
        return out

    def jacobian(x: FloatArray) -> FloatArray:
        """``least_squares``' own 2-point differences (``scipy.optimize._numdiff.approx_derivative`` with the
        bounds, the same operations), the shifted points in one evaluation: parameters as columns, every element
        the same operations as ``residuals`` (the tests check the fits bit for bit against ``least_squares``
        differencing by itself)."""
        key, f0 = last[0]
        if key != x.tobytes():
            f0 = residuals(x)
        h = _SQRT_EPS * ((x >= 0).astype(float) * 2 - 1) * np.maximum(1.0, np.abs(x))
        lower_dist, upper_dist = x - lower, upper - x
        fitting = np.abs(h) <= np.maximum(lower_dist, upper_dist)
        h[(((x + h) < lower) | ((x + h) > upper)) & fitting] *= -1
        forward_only = (upper_dist >= lower_dist) & ~fitting
        h[forward_only] = upper_dist[forward_only]
        backward_only = (upper_dist < lower_dist) & ~fitting
        h[backward_only] = -lower_dist[backward_only]
        points = np.repeat(x[None, :], 3, axis=0)
        points[_DIAG, _DIAG] = x + h
        shifted = weight * (_smile_vol(smile, t, points[:, 0:1], beta, points[:, 1:2], points[:, 2:3]) - v)
        return ((shifted - f0) / (points[_DIAG, _DIAG] - x)[:, None]).T

    # least_squares(residuals, x0, jac=jacobian, bounds=(lower, upper), method="trf", x_scale="jac", xtol=1e-12,
    # ftol=1e-12), the same iterates without its wrappers
    return _least_squares_trf(residuals, jacobian, x0, lower, upper, ftol=1e-12, xtol=1e-12)


def calibrate_sabr(
    strike: ArrayLike,
    implied_vol: ArrayLike,
    forward: float,
    t: float,
    beta: float = 1.0,
    formula: str = "obloj",
    compiled: bool = True,
) -> SabrFit:
    """Fit ``(alpha, rho, nu)`` of one expiry to implied vols (OTM mids), ``beta`` fixed (module docstring).
    ``compiled``: by ``_calibrate_kernel`` (slices of at most ``_KERNEL_MAX_QUOTES`` quotes), else by
    ``_fit_python``; the same operations, so the same fit."""
    if formula not in FORMULAS:
        raise ValueError(f"formula must be one of {sorted(FORMULAS)}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError("beta must be in [0, 1]")
    k = np.asarray(strike, dtype=np.float64).reshape(-1)
    v = np.asarray(implied_vol, dtype=np.float64).reshape(-1)
    ok = np.isfinite(k) & np.isfinite(v) & (k > 0.0) & (v > 0.0)
    k, v = k[ok], v[ok]
    if k.size < 3:
        raise ValueError(f"SABR needs at least 3 quotes with a positive vol, got {k.size}")
    if not (forward > 0.0 and t > 0.0):
        raise ValueError("forward and time to expiry must be positive")
    weight = np.sqrt(_black_vega_weight(k, forward, t, v))
    weight /= weight.max()
    smile = _smile(k, forward, beta, formula)
    atm = int(np.argmin(np.abs(np.log(k / forward))))
    alpha0 = float(v[atm] * forward ** (1.0 - beta))
    x0 = np.array([alpha0, 0.0, 0.5])
    lower = np.array([1e-8, -RHO_BOUND, 0.0])
    upper = np.array([np.inf, RHO_BOUND, nu_upper_bound(t)])
    if compiled and k.size <= _KERNEL_MAX_QUOTES:
        solution, success = _calibrate_kernel(
            smile.log_fk, smile.z_scale, smile.lead, smile.den_alpha, smile.den_rho, weight, v, float(t),
            (1.0 - beta) ** 2, float(beta), x0, lower, upper, 1e-12, 1e-12, 1e-8, 2.0, 0.5,
        )  # fmt: skip
    else:
        solution, success = _fit_python(smile, weight, v, t, beta, x0, lower, upper)
    alpha, rho, nu = (float(x) for x in solution)
    model = _smile_vol(smile, t, alpha, beta, rho, nu)
    rmse = float(np.sqrt(np.mean((model - v) ** 2)) * 100.0)
    return SabrFit(alpha, beta, rho, nu, float(forward), float(t), rmse, int(k.size), bool(success), formula)


@dataclass(frozen=True)
class DensityCheck:
    """Risk-neutral density of a smile on a strike grid: arbitrage-free when nowhere negative."""

    arbitrage_free: bool
    min_density: float
    strikes: FloatArray


def black_call(forward: float, strike: FloatArray, t: float, vol: FloatArray) -> FloatArray:
    """Undiscounted Black call price."""
    sd = np.maximum(vol * math.sqrt(t), 1e-300)
    d1 = np.log(forward / strike) / sd + 0.5 * sd
    return forward * ndtr(d1) - strike * ndtr(d1 - sd)  # ndtr: what scipy.stats.norm.cdf evaluates


def density_check(fit: SabrFit, n_std: float = 4.0, points: int = 401, tolerance: float = 1e-10) -> DensityCheck:
    """Second difference of undiscounted call prices in strike (Breeden-Litzenberger) on ``points`` strikes
    spanning ``+-n_std`` ATM standard deviations in log-moneyness; negative anywhere is butterfly arbitrage."""
    atm = float(sabr_vol(fit, np.array([fit.forward]))[0])
    half = n_std * atm * math.sqrt(fit.time_years)
    strikes = fit.forward * np.exp(np.linspace(-half, half, points))
    h = np.diff(strikes)
    prices = black_call(fit.forward, strikes, fit.time_years, sabr_vol(fit, strikes))
    slope = np.diff(prices) / h
    density = 2.0 * np.diff(slope) / (h[1:] + h[:-1])
    minimum = float(density.min())
    return DensityCheck(bool(minimum >= -tolerance), minimum, strikes[1:-1])


def density_checks(
    fits: Sequence[SabrFit], n_std: float = 4.0, points: int = 401, tolerance: float = 1e-10
) -> list[DensityCheck]:
    """``density_check`` of each fit (in order), the fits of one formula and ``1 - beta`` as the rows of one array
    (one numpy call per step for them all, not per slice). Every row takes the same IEEE operations on the same
    operands as ``density_check`` of its fit alone: the scalar parts (``forward ** (1 - beta)``, ``nu / alpha``,
    the correction's parameter terms, the grid's ``half`` and step) computed per fit as Python floats, then used as
    columns; the powers keep their scalar exponents. So every check is ``density_check``'s, bit for bit."""
    out: list[DensityCheck | None] = [None] * len(fits)
    groups: dict[tuple[str, float], list[int]] = {}
    for i, fit in enumerate(fits):
        groups.setdefault((fit.formula, 1.0 - fit.beta), []).append(i)
    for (formula, b1), rows in groups.items():
        fs = [fits[i] for i in rows]
        beta = fs[0].beta  # every fit of the group has this 1 - beta (beta -0.0 and 0.0 alike)
        forward = np.array([f.forward for f in fs])[:, None]
        power = np.array([f.forward**b1 for f in fs])[:, None]
        t = [f.time_years for f in fs]
        atm = _fit_vol_rows(fs, forward, forward.copy(), power, beta, formula)[:, 0]
        half = [n_std * float(a) * math.sqrt(ti) for a, ti in zip(atm, t, strict=True)]
        grid = _grid_rows(half, points)
        strikes = forward * np.exp(grid)
        h = np.diff(strikes, axis=1)
        vol = _fit_vol_rows(fs, strikes, forward, power, beta, formula)
        # black_call of each row
        sd = np.maximum(vol * np.array([math.sqrt(ti) for ti in t])[:, None], 1e-300)
        d1 = np.log(forward / strikes) / sd + 0.5 * sd
        prices = forward * ndtr(d1) - strikes * ndtr(d1 - sd)
        slope = np.diff(prices, axis=1) / h
        density = 2.0 * np.diff(slope, axis=1) / (h[:, 1:] + h[:, :-1])
        minimum = density.min(axis=1)
        for j, i in enumerate(rows):
            m = float(minimum[j])
            out[i] = DensityCheck(bool(m >= -tolerance), m, strikes[j, 1:-1])
    return [c for c in out if c is not None]


def _fit_vol_rows(
    fits: Sequence[SabrFit], strike: FloatArray, forward: FloatArray, power: FloatArray, beta: float, formula: str
) -> FloatArray:
    """``sabr_vol(fit, strike[j])`` of each fit ``j`` (one formula, one ``1 - beta``) as rows: ``_smile_vol``'s
    operations with each parameter term a column of the Python floats ``_smile_vol`` and ``_correction_from``
    form from scalars."""
    smile = _smile(strike, forward, beta, formula, power)

    def col(values: list[float]) -> FloatArray:
        return np.array(values)[:, None]

    alpha = col([f.alpha for f in fits])
    rho = col([f.rho for f in fits])
    z = col([f.nu / f.alpha for f in fits]) * smile.z_scale * smile.log_fk
    # _correction_from: ((1 - beta)^2 alpha alpha) / den_alpha + (rho beta nu alpha) / den_rho + (2 - 3 rho^2) nu^2 / 24
    c = (
        col([(1.0 - f.beta) ** 2 * f.alpha * f.alpha for f in fits]) / smile.den_alpha
        + col([f.rho * f.beta * f.nu * f.alpha for f in fits]) / smile.den_rho
        + col([(2.0 - 3.0 * f.rho * f.rho) * f.nu * f.nu / 24.0 for f in fits])
    )
    corr = 1.0 + col([f.time_years for f in fits]) * c
    # _z_over_x with rho's terms as columns
    small = np.abs(z) < _SMALL_Z
    zz = np.where(small, 1.0, z)
    x = np.log((np.sqrt(1.0 - col([2.0 * f.rho for f in fits]) * zz + zz * zz) + zz - rho) / (1.0 - rho))
    zx = np.where(small, 1.0 - col([0.5 * f.rho for f in fits]) * z, zz / x)
    return alpha / smile.lead * zx * corr


def _grid_rows(half: list[float], points: int) -> FloatArray:
    """``np.linspace(-half[j], half[j], points)`` as rows: ``arange * step + start``, the end set to ``stop`` (numpy's
    operations for a scalar start and stop); a row whose step is 0 (numpy's other path) by ``np.linspace`` itself."""
    div = points - 1
    start = np.array([-x for x in half])
    stop = np.array(half)
    if div <= 0:
        return np.stack([np.linspace(-x, x, points) for x in half])
    step = np.array([(x - (-x)) / div for x in half])
    grid = np.arange(0, points, dtype=np.float64)[None, :] * step[:, None]
    grid += start[:, None]
    grid[:, -1] = stop
    for j in np.flatnonzero(step == 0):
        grid[j] = np.linspace(-half[j], half[j], points)
    return grid
