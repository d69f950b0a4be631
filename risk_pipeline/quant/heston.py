"""Heston (1993) stochastic volatility: European prices by the COS method, calibration to a whole surface.

Model under the pricing measure: ``dS/S = (r - q) dt + sqrt(v) dW``, ``dv = kappa (theta - v) dt + xi sqrt(v)
dZ``, ``dW dZ = rho dt``, ``v(0) = v0``.

* Characteristic function of ``x = ln(S_T / F_T)`` (``F_T = S e^{(r-q)T}``) in the "little Heston trap" form of
  Albrecher, Mayer, Schoutens & Tistaert (2007, Wilmott), continuous in ``u`` with the principal branch of the
  complex logarithm::

      beta = kappa - i rho xi u,   d = sqrt(beta^2 + xi^2 (u^2 + i u)),   g = (beta - d) / (beta + d)
      ln phi(u) = kappa theta / xi^2 [(beta - d) T - 2 ln((1 - g e^{-dT}) / (1 - g))]
                  + v0 (beta - d) / xi^2 (1 - e^{-dT}) / (1 - g e^{-dT})

* Prices by the COS method of Fang & Oosterlee (2008, SIAM J. Sci. Comput. 31, 826-848): on an interval
  ``[a, b]`` the density is a cosine series with coefficients ``Re(phi(u_k) e^{-i u_k a})``, ``u_k = k pi / (b -
  a)``, and the undiscounted price is ``F sum'_k Re(phi(u_k) e^{-i u_k a}) V_k`` with closed-form payoff
  coefficients ``V_k`` (their ``chi_k``, ``psi_k``). Puts use the pricing measure; calls the share measure
  (density ``e^x p(x)``, ``phi_S(u) = phi(u - i)``, payoff ``(1 - e^{k - x})^+``), so no ``e^b`` factor cancels.
  The out-of-the-money side is priced directly (put for ``K <= F``, call above) and the other side by put-call
  parity, so a small price keeps its relative accuracy.
* The interval: ``c1 -+ L sqrt(c2)`` of both measures (mean and variance of ``x`` from ``ln phi`` near 0, ``L =
  12``), widened until Chernoff bounds put under ``_TAIL_TOLERANCE`` the pricing-measure mass left of ``a`` and
  the share-measure mass right of ``b``, using the moments ``E[(S_T/F_T)^w]`` that stay finite to the expiry
  (explosion times of Andersen & Piterbarg 2007): Heston tails are exponential, and 12 standard deviations leave
  1e-3 of a price out when xi is large over months. The series stops at the first ``N = 32 x 1.25^j`` where
  ``|phi| / (1 + u^2)`` of both measures is under ``cf_tolerance`` (1e-14) at ``u_N`` and ``2 u_N`` (the payoff
  coefficients fall like ``1 / u^2``), capped at ``MAX_TERMS``. Kernels are numba, parallel over slices and
  options.
* Calibration (``calibrate_heston``): ``(v0, kappa, theta, xi, rho)`` to the implied vols of one underlying's
  out-of-the-money quotes, all expiries at once, by Levenberg-Marquardt (MINPACK's ``lmder`` as
  ``scipy.optimize.least_squares(method="lm")`` runs it, called through ``leastsq``) in unbounded coordinates
  (logs of the positive parameters, ``atanh rho``). Residuals are
  vega-scaled price differences (``(model - quote) / vega`` ~ vol error, weighted by ``sqrt(vega / max vega)``
  as the SVI and SABR fits are). With each slice's COS grid held fixed, price = (payoff matrix) x
  (characteristic-function coefficients), so the Jacobian is the payoff matrices times the coefficients' analytic
  derivatives in the parameters (``_log_cf_grad``: ``ln phi``'s partials through ``beta``, ``d`` and ``xi``, a
  few complex multiplications and divisions beside the one square root, exponential and logarithm), taken in the
  same pass as the residuals (``_cf_jacobian_block``): MINPACK asks for the Jacobian at the point whose residuals
  it evaluated last. The start (``initial_guess``) is read from the
  same quotes by small vol-of-vol expansions (ATM variance term structure, ATM skews, the shortest slice's
  curvature). Two rounds: the first is coarse (grids sized for the start's variances with ``xi`` 0.5 and ``rho``
  -0.5, fewer cosine terms; MINPACK's tolerances 1e-6), the second re-centres the grids on the first round's
  parameters and runs to 1e-10 (on the same grids when they already cover them). The reported RMSE is exact (model
  prices inverted to implied vols, Jaeckel 2015). The Feller condition ``2 kappa theta >= xi^2`` (variance never
  reaches 0) is reported, not imposed.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import ArrayLike
from scipy.optimize import _minpack, leastsq
from scipy.special import ndtr

from risk_pipeline.quant._numba import JIT, BoolArray, FloatArray, IntArray, inner_njit, run_chunked
from risk_pipeline.quant.implied_vol import implied_vol_black76

#: Half-width of the COS interval in standard deviations of ln(S_T/F_T).
DEFAULT_L = 12.0
#: The cosine series stops where |phi(u)| falls under this.
DEFAULT_CF_TOLERANCE = 1e-14
#: Fewest and most cosine terms per slice.
MIN_TERMS = 32
MAX_TERMS = 1 << 16
#: Calibration bounds enforced by the (v0, kappa, theta, xi, rho) <-> unbounded map.
RHO_BOUND = 0.999
_RESYNC = 64  # exact cos/sin every this many terms of the angle recurrence
#: Tail mass (Chernoff bound) left outside the COS interval, the moments tried for it and the widest half-width.
_TAIL_TOLERANCE = 1e-12
_MOMENTS = np.array([0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
_MAX_HALF_WIDTH = 60.0


@dataclass(frozen=True)
class HestonParams:
    """Heston parameters: initial and long-run variance (per year), mean reversion speed (per year), vol of
    variance (per sqrt year), spot-variance correlation."""

    v0: float
    kappa: float
    theta: float
    xi: float
    rho: float

    def as_array(self) -> FloatArray:
        return np.array([self.v0, self.kappa, self.theta, self.xi, self.rho], dtype=np.float64)

    @property
    def feller_ratio(self) -> float:
        """``2 kappa theta / xi^2``; at least 1 when the Feller condition holds."""
        return 2.0 * self.kappa * self.theta / (self.xi * self.xi)

    @property
    def feller_ok(self) -> bool:
        return self.feller_ratio >= 1.0


# ------------------------------------------------------------------------------------ characteristic function
@inner_njit()
def _log_cf_core(u: complex, t: float, kappa: float, xi: float, rho: float) -> tuple[complex, complex]:
    """The part of ``_log_cf`` that does not involve ``v0`` or ``theta``: ``ln phi(u) = kappa theta / xi^2 * big +
    dd * v0`` (``_log_cf_from_core``; ``_log_cf`` is the two together), so parameter rows that differ only in ``v0``
    and ``theta`` can share the costly complex functions."""
    iu = 1j * u
    beta = kappa - rho * xi * iu
    d = cmath.sqrt(beta * beta + xi * xi * (u * u + iu))
    g = (beta - d) / (beta + d)
    e = cmath.exp(-d * t)
    xi2 = xi * xi
    big = (beta - d) * t - 2.0 * cmath.log((1.0 - g * e) / (1.0 - g))
    dd = (beta - d) / xi2 * (1.0 - e) / (1.0 - g * e)
    return big, dd


@inner_njit()
def _log_cf_from_core(big: complex, dd: complex, v0: float, kappa: float, theta: float, xi: float) -> complex:
    """``_log_cf`` from its ``_log_cf_core`` parts (the same last operations)."""
    xi2 = xi * xi
    c = kappa * theta / xi2 * big
    return c + dd * v0


@inner_njit()
def _log_cf(u: complex, t: float, v0: float, kappa: float, theta: float, xi: float, rho: float) -> complex:
    """``ln phi(u)`` of ``ln(S_T/F_T)``, little-Heston-trap form (module docstring). Callers pass a real ``u`` as
    ``complex(u)``: one compiled signature (the same bits: ``u * u + iu`` and ``1j * u`` give the same complex
    numbers from ``u`` and from ``u + 0j``)."""
    big, dd = _log_cf_core(u, t, kappa, xi, rho)
    return _log_cf_from_core(big, dd, v0, kappa, theta, xi)


def heston_log_cf(
    u: ArrayLike, t: ArrayLike, v0: ArrayLike, kappa: ArrayLike, theta: ArrayLike, xi: ArrayLike, rho: ArrayLike
) -> np.ndarray:
    """``ln phi(u)`` of ``ln(S_T/F_T)`` (numpy, broadcasting; ``u`` real or complex)."""
    u, t, v0, kappa, theta, xi, rho = np.broadcast_arrays(
        np.asarray(u), *(np.asarray(a, dtype=np.float64) for a in (t, v0, kappa, theta, xi, rho))
    )
    iu = 1j * u
    beta = kappa - rho * xi * iu
    d = np.sqrt(beta * beta + xi * xi * (u * u + iu))
    g = (beta - d) / (beta + d)
    e = np.exp(-d * t)
    xi2 = xi * xi
    c = kappa * theta / xi2 * ((beta - d) * t - 2.0 * np.log((1.0 - g * e) / (1.0 - g)))
    return c + v0 * (beta - d) / xi2 * (1.0 - e) / (1.0 - g * e)


@inner_njit()
def _interval(
    t: float, v0: float, kappa: float, theta: float, xi: float, rho: float, l_std: float
) -> tuple[float, float]:
    """COS truncation ``[a, b] = c1 -+ L sqrt(c2)``: exact mean, variance from ``-d^2/du^2 ln phi`` at 0."""
    decay = -math.expm1(-kappa * t) / kappa if kappa * t > 1e-12 else t
    c1 = -0.5 * (theta * t + (v0 - theta) * decay)  # E[ln S_T/F_T] = -1/2 E[int v dt]
    scale = max(theta * t + (v0 - theta) * decay, 1e-12)
    h = 1e-3 / math.sqrt(scale)
    c2 = -2.0 * _log_cf(complex(h), t, v0, kappa, theta, xi, rho).real / (h * h)
    half = l_std * math.sqrt(max(c2, 0.25 * scale))
    # the share measure (density e^x p(x), ln phi_S(u) = ln phi(u - i)) has the fatter right tail an OTM call sees
    z = _log_cf(h - 1j, t, v0, kappa, theta, xi, rho)
    c1s, c2s = z.imag / h, -2.0 * z.real / (h * h)
    half_s = l_std * math.sqrt(max(c2s, 0.25 * scale))
    return min(c1 - half, c1s - half_s), max(c1 + half, c1s + half_s)


@inner_njit()
def _terms(t: float, v0: float, kappa: float, theta: float, xi: float, rho: float, width: float, tol: float) -> int:
    """Fewest terms ``N`` (``MIN_TERMS`` times powers of 1.25) where ``|phi| / (1 + u^2)`` and ``|phi_S| / (1 +
    u^2)`` (the payoff coefficients fall like ``1 / u^2``) are under ``tol`` at ``u_N`` and ``2 u_N``."""
    n = float(MIN_TERMS)
    log_tol = math.log(tol)
    while n < MAX_TERMS:
        u = math.ceil(n) * math.pi / width
        if (
            _log_cf(complex(u), t, v0, kappa, theta, xi, rho).real - math.log1p(u * u) < log_tol
            and _log_cf(complex(2.0 * u), t, v0, kappa, theta, xi, rho).real - math.log1p(4.0 * u * u) < log_tol
            and _log_cf(u - 1j, t, v0, kappa, theta, xi, rho).real - math.log1p(u * u) < log_tol
            and _log_cf(2.0 * u - 1j, t, v0, kappa, theta, xi, rho).real - math.log1p(4.0 * u * u) < log_tol
        ):
            return math.ceil(n)
        n *= 1.25
    return MAX_TERMS


@inner_njit()
def _coefficient(
    k: int, t: float, v0: float, kappa: float, theta: float, xi: float, rho: float, a: float, w: float, shift: float
) -> float:
    """``Re(phi(u_k - i shift) e^{-i u_k a})``: the pricing measure (shift 0) or the share measure (shift 1)."""
    if k == 0:
        return 1.0  # phi(0) = phi(-i) = 1 (phi(-i) = E[S_T/F_T]; the formula divides by zero there if kappa < rho xi)
    u = k * math.pi / w
    z = _log_cf(u - 1j * shift, t, v0, kappa, theta, xi, rho) - 1j * u * a
    return math.exp(z.real) * math.cos(z.imag)


@inner_njit()
def _explosion_time(omega: float, kappa: float, xi: float, rho: float) -> float:
    """Time at which ``E[(S_T/F_T)^omega]`` becomes infinite, ``omega`` outside ``[0, 1]`` (Andersen &
    Piterbarg 2007, Prop. 3.1); ``inf`` if it never does."""
    k = rho * xi * omega - kappa
    disc = k * k - xi * xi * omega * (omega - 1.0)
    if disc >= 0.0:
        if k < 0.0:
            return math.inf
        root = math.sqrt(disc)
        return math.log((k + root) / (k - root)) / root if k > root else 0.0
    gamma = math.sqrt(-disc)
    return 2.0 / gamma * ((math.pi if k < 0.0 else 0.0) + math.atan(gamma / k) if k != 0.0 else 0.5 * math.pi)


@inner_njit()
def _tail_interval(
    t: float, v0: float, kappa: float, theta: float, xi: float, rho: float, lo: float, hi: float
) -> tuple[float, float]:
    """Widen ``[lo, hi]`` until Chernoff bounds put under ``_TAIL_TOLERANCE`` the pricing-measure mass left of
    ``lo`` (``<= M(w) e^{-w lo}``, ``w < 0``) and the share-measure mass right of ``hi`` (``<= M(w) e^{-(w-1)
    hi}``, ``w > 1``), ``M(w) = E[(S_T/F_T)^w]`` over moments ``w`` that stay finite to ``T`` (with margin):
    Heston tails are exponential, far fatter than a few standard deviations suggest when xi is large."""
    log_tol = math.log(_TAIL_TOLERANCE)
    best_lo, best_hi = -_MAX_HALF_WIDTH, _MAX_HALF_WIDTH
    for i in range(_MOMENTS.size):
        w = _MOMENTS[i]
        for omega in (1.0 + w, -w):
            if _explosion_time(omega, kappa, xi, rho) <= 1.25 * t:
                continue
            log_m = _log_cf(-1j * omega, t, v0, kappa, theta, xi, rho).real
            if not math.isfinite(log_m):
                continue
            if omega > 1.0:
                best_hi = min(best_hi, (log_m - log_tol) / (omega - 1.0))
            else:
                best_lo = max(best_lo, (log_tol - log_m) / -omega)
    return min(lo, best_lo), max(hi, best_hi)


@njit(**JIT)
def _slice_setup(
    t: FloatArray,
    params: FloatArray,
    l_std: float,
    tol: float,
    a: FloatArray,
    b: FloatArray,
    n: IntArray,
    start: int,
    stop: int,
) -> None:
    """Interval (cumulants, widened for the tails) and number of terms of slices ``start .. stop-1``
    (``run_chunked``)."""
    for s in range(start, stop):
        v0, kappa, theta, xi, rho = params[s, 0], params[s, 1], params[s, 2], params[s, 3], params[s, 4]
        lo, hi = _interval(t[s], v0, kappa, theta, xi, rho, l_std)
        lo, hi = _tail_interval(t[s], v0, kappa, theta, xi, rho, lo, hi)
        a[s], b[s], n[s] = lo, hi, _terms(t[s], v0, kappa, theta, xi, rho, hi - lo, tol)


@njit(**JIT)
def _cf_coefficients(
    t: FloatArray,
    params: FloatArray,
    a: FloatArray,
    b: FloatArray,
    offset: IntArray,
    put: FloatArray,
    call: FloatArray,
    start: int,
    stop: int,
) -> None:
    """Pricing-measure (puts) and share-measure (calls) coefficients of slices ``start .. stop-1``
    (``run_chunked``), ragged: slice ``s`` at ``offset[s]:offset[s+1]``."""
    for s in range(start, stop):
        v0, kappa, theta, xi, rho = params[s, 0], params[s, 1], params[s, 2], params[s, 3], params[s, 4]
        w = b[s] - a[s]
        for k in range(offset[s + 1] - offset[s]):
            put[offset[s] + k] = _coefficient(k, t[s], v0, kappa, theta, xi, rho, a[s], w, 0.0)
            call[offset[s] + k] = _coefficient(k, t[s], v0, kappa, theta, xi, rho, a[s], w, 1.0)


@inner_njit()
def _cos_otm(
    ca: FloatArray, cb: FloatArray, cc: FloatArray, start: int, n: int, a: float, b: float, log_k: float, call: bool
) -> float:
    """Undiscounted OTM price per unit forward. Put: ``E[(e^k - e^x)^+]`` on ``[a, min(k, b)]`` with the
    pricing-measure coefficients; call: ``E_S[(1 - e^{k - x})^+]`` on ``[max(k, a), b]`` with the share-measure
    coefficients (no ``e^b`` factor, so no cancellation however wide the interval). ``ca, cb, cc`` are the
    coefficients divided by ``u``, by ``1 + u^2`` and times ``u / (1 + u^2)`` (no division in the loop)."""
    w = b - a
    ek = math.exp(log_k)
    c = min(max(log_k, a), b)
    theta = math.pi * (c - a) / w
    if call:  # psi_k(c, b) - e^k chi-_k(c, b), chi-_k = int e^{-x} cos(u_k (x - a)) dx
        emc, emb = math.exp(-c), math.exp(-b)
        total = 0.5 * ((b - c) - ek * (emc - emb))
    else:  # e^k psi_k(a, c) - chi_k(a, c), chi_k = int e^x cos(u_k (x - a)) dx
        ec, ea = math.exp(c), math.exp(a)
        total = 0.5 * (ek * (c - a) - (ec - ea))
    c1, s1 = math.cos(theta), math.sin(theta)
    ck, sk = 1.0, 0.0
    sign = 1.0
    for k in range(1, n):
        if k % _RESYNC == 0:
            ck, sk = math.cos(k * theta), math.sin(k * theta)
        else:
            ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        sign = -sign
        j = start + k
        if call:
            total += -sk * ca[j] - ek * (emc * ck - sign * emb) * cb[j] + ek * emc * sk * cc[j]
        else:
            total += ek * sk * ca[j] - (ck * ec - ea) * cb[j] - sk * ec * cc[j]
    return 2.0 / w * total


@njit(**JIT)
def _price_kernel(
    put: FloatArray,
    call: FloatArray,
    offset: IntArray,
    a: FloatArray,
    b: FloatArray,
    slice_of: IntArray,
    log_k: FloatArray,
    is_call: np.ndarray,
    parity: bool,
    out: FloatArray,
    start: int,
    stop: int,
) -> None:
    """Undiscounted price per unit forward of options ``start .. stop-1`` (``run_chunked``): OTM by COS and
    ITM by parity, or (``parity`` False) each by its own payoff's series."""
    no, yes = np.bool_(False), np.bool_(True)  # not literals: one compiled signature of _cos_otm
    for j in range(start, stop):
        s = slice_of[j]
        first, n = offset[s], offset[s + 1] - offset[s]
        otm_call = log_k[j] > 0.0 if parity else is_call[j]
        if otm_call:
            v = _cos_otm(call[0], call[1], call[2], first, n, a[s], b[s], log_k[j], yes)
        else:
            v = _cos_otm(put[0], put[1], put[2], first, n, a[s], b[s], log_k[j], no)
        v = max(v, 0.0)
        if is_call[j] == otm_call:
            out[j] = v
        elif is_call[j]:  # ITM call from the OTM put: C = P + 1 - K/F
            out[j] = v + 1.0 - math.exp(log_k[j])
        else:  # ITM put from the OTM call: P = C - 1 + K/F
            out[j] = v - 1.0 + math.exp(log_k[j])


@dataclass(frozen=True)
class CosGrid:
    """COS grids of a set of slices: interval ``[a, b]``, ragged term offsets, put and call coefficients."""

    a: FloatArray
    b: FloatArray
    offset: IntArray
    put_coef: FloatArray
    call_coef: FloatArray

    @property
    def terms(self) -> IntArray:
        return np.diff(self.offset)

    def scaled(self) -> tuple[FloatArray, FloatArray]:
        """Each measure's coefficients over ``u``, over ``1 + u^2`` and times ``u / (1 + u^2)``, shape (3, terms)."""
        n = self.terms
        k = np.arange(int(self.offset[-1])) - np.repeat(self.offset[:-1], n)
        u = k * (np.pi / np.repeat(self.b - self.a, n))
        inv_u = np.divide(1.0, u, out=np.zeros_like(u), where=u > 0.0)
        inv_1u2 = 1.0 / (1.0 + u * u)
        return tuple(np.stack([c * inv_u, c * inv_1u2, c * u * inv_1u2]) for c in (self.put_coef, self.call_coef))


def cos_interval(
    t: ArrayLike, params: ArrayLike, l_std: float = DEFAULT_L, cf_tolerance: float = DEFAULT_CF_TOLERANCE
) -> tuple[FloatArray, FloatArray, IntArray]:
    """The interval ``[a, b]`` and number of terms of each slice of ``cos_grid`` (same arguments), without its
    characteristic-function coefficients."""
    t = np.ascontiguousarray(t, dtype=np.float64).reshape(-1)
    # a copy: a broadcast view is read-only, another numba type (the kernels compiled twice)
    p = np.array(np.broadcast_to(np.asarray(params, dtype=np.float64), (t.size, 5)), order="C")
    a, b, n = np.empty(t.size), np.empty(t.size), np.empty(t.size, dtype=np.intp)
    run_chunked(_slice_setup, t.size, t, p, float(l_std), float(cf_tolerance), a, b, n)
    return a, b, n


def cos_grid(
    t: ArrayLike, params: ArrayLike, l_std: float = DEFAULT_L, cf_tolerance: float = DEFAULT_CF_TOLERANCE
) -> CosGrid:
    """COS interval, number of terms and characteristic-function coefficients per slice.

    ``t`` (years) has one entry per slice, ``params`` shape ``(slices, 5)`` (v0, kappa, theta, xi, rho)."""
    t = np.ascontiguousarray(t, dtype=np.float64).reshape(-1)
    # a copy: a broadcast view is read-only, another numba type (the kernels compiled twice)
    p = np.array(np.broadcast_to(np.asarray(params, dtype=np.float64), (t.size, 5)), order="C")
    a, b, n = cos_interval(t, p, l_std, cf_tolerance)
    offset = np.zeros(t.size + 1, dtype=np.intp)
    np.cumsum(n, out=offset[1:])
    put, call = np.empty(int(offset[-1])), np.empty(int(offset[-1]))
    run_chunked(_cf_coefficients, t.size, t, p, a, b, offset, put, call)
    return CosGrid(a, b, offset, put, call)


def _validate(params: FloatArray, t: FloatArray) -> None:
    v0, kappa, theta, xi, rho = params.T
    bad = ~((v0 > 0) & (kappa > 0) & (theta > 0) & (xi > 0) & (np.abs(rho) < 1) & (t > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Heston inputs out of domain at index {i}: need v0, kappa, theta, xi > 0, |rho| < 1, T > 0; got "
            f"params={params[i].tolist()}, T={float(t[i])}"
        )


def heston_price(
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    v0: ArrayLike,
    kappa: ArrayLike,
    theta: ArrayLike,
    xi: ArrayLike,
    rho: ArrayLike,
    *,
    l_std: float = DEFAULT_L,
    cf_tolerance: float = DEFAULT_CF_TOLERANCE,
    parity: bool = True,
) -> FloatArray:
    """Heston European option prices by the COS method (module docstring), inputs broadcast together.

    Options sharing ``(time_years, v0, kappa, theta, xi, rho)`` share one characteristic-function evaluation,
    so a surface (many strikes per expiry) costs little more than its strikes' payoff sums. ``parity=False``
    prices in-the-money options by their own series too (put: pricing measure, call: share measure) instead of
    from the out-of-the-money side, which is how the tests check the two series against put-call parity."""
    arrays = np.broadcast_arrays(
        *(np.asarray(x, dtype=np.float64) for x in (spot, strike, time_years, rate, dividend_yield, is_call)),
        *(np.asarray(x, dtype=np.float64) for x in (v0, kappa, theta, xi, rho)),
    )
    shape = arrays[0].shape
    s, k, t, r, q, call, *p = (x.reshape(-1) for x in arrays)
    varying = [col for col in (t, *p) if col.size and not np.all(col == col[0])]
    if not varying:
        slice_of = np.zeros(t.size, dtype=np.intp)
        uniq = np.column_stack([t, *p])[:1]
    else:
        key = np.ascontiguousarray(np.column_stack(varying))
        rows = key.view(np.dtype((np.void, key.dtype.itemsize * key.shape[1]))).reshape(-1)
        _, first, slice_of = np.unique(rows, return_index=True, return_inverse=True)
        uniq = np.column_stack([t, *p])[first]
    _validate(uniq[:, 1:], uniq[:, 0])
    grid = cos_grid(uniq[:, 0], uniq[:, 1:], l_std, cf_tolerance)
    fwd = s * np.exp((r - q) * t)
    out = _grid_prices(grid, slice_of.reshape(-1).astype(np.intp), np.log(k / fwd), call != 0.0, bool(parity))
    return (out * fwd * np.exp(-r * t)).reshape(shape)


def _grid_prices(grid: CosGrid, slice_of: IntArray, log_k: FloatArray, call: BoolArray, parity: bool) -> FloatArray:
    """The undiscounted, forward-normalised prices of ``_price_kernel`` on ``grid`` at the log strikes ``log_k`` (each
    on its slice ``slice_of``), calls where ``call``, with put-call parity as ``parity`` says."""
    out = np.empty(log_k.size)
    put_scaled, call_scaled = grid.scaled()
    run_chunked(
        _price_kernel, out.size, put_scaled, call_scaled, grid.offset, grid.a, grid.b, slice_of, log_k, call, parity,
        out,
    )  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------------ calibration
@dataclass(frozen=True)
class HestonFit:
    """A Heston calibration to one surface with its inputs' size and fit quality."""

    params: HestonParams
    rmse_vol_points: float
    max_abs_error_vol_points: float
    n_quotes: int
    n_expiries: int
    iterations: int
    converged: bool
    model_vol: FloatArray

    @property
    def feller_ok(self) -> bool:
        return self.params.feller_ok


def _to_x(p: FloatArray) -> FloatArray:
    return np.array([math.log(p[0]), math.log(p[1]), math.log(p[2]), math.log(p[3]), math.atanh(p[4] / RHO_BOUND)])


def _to_p(x: FloatArray) -> FloatArray:
    x = np.asarray(x, dtype=np.float64)
    if x.shape == (5,):  # the fit's points: the same ufuncs on the same values, without clip's and concatenate's layers
        p = np.empty(5)
        np.exp(np.minimum(np.maximum(x[:4], -30.0), 30.0), out=p[:4])
        p[4:] = RHO_BOUND * np.tanh(x[4:])
        return p
    return np.concatenate([np.exp(np.clip(x[..., :4], -30.0, 30.0)), RHO_BOUND * np.tanh(x[..., 4:5])], axis=-1)


def _black_undiscounted(
    log_k: FloatArray, t: FloatArray, vol: FloatArray, call: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Black price and vega per unit forward (undiscounted)."""
    sd = vol * np.sqrt(t)
    d1 = -log_k / sd + 0.5 * sd
    d2 = d1 - sd
    ek = np.exp(log_k)
    # scipy.stats.norm's cdf and pdf without its argument checks: ``ndtr`` and ``exp(-x^2 / 2) / sqrt(2 pi)``, the
    # functions it calls (the same values for every input, infinities and NaN included)
    price = np.where(call, ndtr(d1) - ek * ndtr(d2), ek * ndtr(-d2) - ndtr(-d1))
    return price, np.exp(-(d1**2) / 2.0) / _NORM_PDF_C * np.sqrt(t)


#: ``scipy.stats.norm``'s density constant ``sqrt(2 pi)`` (``_continuous_distns._norm_pdf_C``).
_NORM_PDF_C = np.sqrt(2 * np.pi)


class _SurfaceCos:
    """The quotes of one surface with fixed COS grids: price = payoff matrix x coefficients, per slice."""

    def __init__(
        self,
        t_slice: FloatArray,
        slice_of: IntArray,
        log_k: FloatArray,
        call: FloatArray,
        p: FloatArray,
        l_std: float,
        tol: float,
        interval: tuple[FloatArray, FloatArray, IntArray] | None = None,
        same_quotes: _SurfaceCos | None = None,
    ) -> None:
        self.t = t_slice
        # cos_grid's, without its coefficients; ``interval``: ``cos_interval(t_slice, p, l_std, tol)`` already taken
        self.a, self.b, self.n = cos_interval(t_slice, p, l_std, tol) if interval is None else interval
        self.k = [np.arange(n) * math.pi / (b - a) for a, b, n in zip(self.a, self.b, self.n, strict=True)]
        if same_quotes is None:
            self.order = [np.flatnonzero(slice_of == s) for s in range(t_slice.size)]
            self.parity = [
                np.where(
                    call[idx] != (log_k[idx] > 0.0),
                    np.where(call[idx] > 0, 1.0 - np.exp(log_k[idx]), np.exp(log_k[idx]) - 1.0),
                    0.0,
                )
                for idx in self.order
            ]
            quotes = [
                slice(int(idx[0]), int(idx[-1]) + 1) if int(idx[-1]) - int(idx[0]) + 1 == idx.size else idx
                for idx in self.order
            ]
        else:  # another grid of the same quotes: their grid-free parts taken from it
            self.order, self.parity = same_quotes.order, same_quotes.parity
            quotes = [sl[-1] for sl in same_quotes.slices]
        self.payoff = [self._payoff(s, log_k[idx], call[idx]) for s, idx in enumerate(self.order)]
        self.size = log_k.size
        #: per slice: (set flag, kappa, xi, rho) of the last parameters seen and their _log_cf_core parts (``prices``)
        self._cache: list[tuple[FloatArray, np.ndarray]] | None = None
        #: per slice, taken out once: the slice's scalars, the payoff matrices (transposed views, as ``prices``
        #: multiplied by them), the parity row, and the slice's quotes (a ``slice`` where consecutive)
        self.slices = [
            (
                float(self.t[s]),
                float(self.a[s]),
                float(self.b[s] - self.a[s]),
                self.payoff[s][0].T,
                self.payoff[s][1].T,
                self.parity[s][None, :],
                quotes[s],
            )
            for s in range(len(self.order))
        ]
        #: coefficient arrays (put, call) per slice by number of parameter rows, reused (``_cf_block`` fills them)
        self.buffers: dict[int, list[tuple[FloatArray, FloatArray]]] = {}
        #: the same for ``prices_and_jacobian``'s six rows
        self.jacobian_buffers: list[tuple[FloatArray, FloatArray]] | None = None

    @property
    def cache(self) -> list[tuple[FloatArray, np.ndarray]]:
        """Per slice ``_cf_block``'s key and ``_log_cf_core`` parts of the last parameters ``prices`` saw."""
        if self._cache is None:
            self._cache = [(np.zeros(4), np.zeros((4, int(n)), dtype=np.complex128)) for n in self.n]
        return self._cache

    def _payoff(self, s: int, log_k: FloatArray, call: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Payoff coefficients of the slice's quotes, OTM side: (put rows, call rows), zero on the other rows
        (``_payoff_kernel``; the per-quote exponentials by numpy, as ``_payoff_numpy`` takes them)."""
        a, b, u = self.a[s], self.b[s], self.k[s]
        lk = log_k[:, None]
        c = np.minimum(np.maximum(lk, a), b)  # np.clip(lk, a, b): the same ufuncs without clip's layers
        put, call_ = np.empty((lk.shape[0], u.size)), np.empty((lk.shape[0], u.size))
        _payoff_kernel(
            u,
            c.reshape(-1),
            np.exp(lk).reshape(-1),
            np.exp(c).reshape(-1),
            np.exp(-c).reshape(-1),
            (lk > 0.0).reshape(-1),
            float(a),
            float(b),
            math.exp(a),
            math.exp(-b),
            2.0 / (b - a),
            put,
            call_,
        )
        return put, call_

    def _payoff_numpy(self, s: int, log_k: FloatArray, call: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``_payoff`` in numpy (the tests' reference: the same operations on whole matrices)."""
        a, b, u = self.a[s], self.b[s], self.k[s]
        w = b - a
        lk = log_k[:, None]
        otm_call = lk > 0.0
        c = np.clip(lk, a, b)
        ek = np.exp(lk)
        ang = u[None, :] * (c - a)
        ck, sk = np.cos(ang), np.sin(ang)
        sign = np.where(np.arange(u.size) % 2 == 0, 1.0, -1.0)[None, :]
        u_safe = np.where(u == 0.0, 1.0, u)[None, :]
        inv = 1.0 / (1.0 + u * u)
        # put: e^k psi_k(a, c) - chi_k(a, c); call (share measure): psi_k(c, b) - e^k chi-_k(c, b)
        put = ek * np.where(u == 0.0, c - a, sk / u_safe) - (ck * np.exp(c) - math.exp(a) + u * sk * np.exp(c)) * inv
        call = np.where(u == 0.0, b - c, -sk / u_safe) - ek * (
            np.where(u == 0.0, np.exp(-c) - math.exp(-b), (-sign * math.exp(-b) + np.exp(-c) * (ck - u * sk)) * inv)
        )
        put[:, 0] *= 0.5
        call[:, 0] *= 0.5
        scale = 2.0 / w
        return np.where(otm_call, 0.0, put) * scale, np.where(otm_call, call, 0.0) * scale

    def prices(self, params: FloatArray) -> FloatArray:
        """Undiscounted prices per unit forward for each row of ``params`` (shape ``(m, 5)``) -> ``(m, quotes)``.

        Each slice keeps the ``v0``/``theta``-free parts of the characteristic function of the last parameters
        it saw (``_cf_block``): a Levenberg-Marquardt Jacobian is asked for at the point whose residuals were
        just evaluated, so its rows shifted in ``v0`` or ``theta`` cost no complex function at all."""
        p = np.ascontiguousarray(params, dtype=np.float64)
        m = p.shape[0]
        out = np.empty((m, self.size))
        buffers = self.buffers.get(m)
        if buffers is None:
            buffers = self.buffers[m] = [(np.empty((m, int(n))), np.empty((m, int(n)))) for n in self.n]
        for (t, a, w, v_put_t, v_call_t, parity, quotes), (key, core), (put, call) in zip(
            self.slices, self.cache, buffers, strict=True
        ):
            _cf_block(t, a, w, p, put, call, key, core)
            out[:, quotes] = put @ v_put_t + call @ v_call_t + parity
        return out

    def prices_and_jacobian(self, x: FloatArray) -> FloatArray:
        """Undiscounted prices per unit forward at the calibration coordinates ``x`` (``_to_x``) in row 0 and their
        derivatives in ``x`` in rows 1-5 -> ``(6, quotes)``: one pass of the characteristic function with its
        analytic parameter derivatives (``_cf_jacobian_block``) through the same payoff matrices. Zero in a
        coordinate ``_to_p`` clips."""
        x = np.asarray(x, dtype=np.float64)
        p = np.ascontiguousarray(_to_p(x))
        factor = np.empty(5)
        factor[:4] = np.where(np.abs(x[:4]) <= 30.0, p[:4], 0.0)
        factor[4] = RHO_BOUND * (1.0 - math.tanh(x[4]) ** 2)
        out = np.empty((6, self.size))
        buffers = self.jacobian_buffers
        if buffers is None:
            buffers = self.jacobian_buffers = [(np.empty((6, int(n))), np.empty((6, int(n)))) for n in self.n]
        for (t, a, w, v_put_t, v_call_t, parity, quotes), (put, call) in zip(self.slices, buffers, strict=True):
            _cf_jacobian_block(t, a, w, p, factor, put, call)
            out[:, quotes] = put @ v_put_t + call @ v_call_t
            out[0, quotes] += parity[0]
        return out


@njit(**JIT)
def _payoff_kernel(
    u: FloatArray,
    c: FloatArray,
    ek: FloatArray,
    ec: FloatArray,
    emc: FloatArray,
    otm_call: np.ndarray,
    a: float,
    b: float,
    ea: float,
    emb: float,
    scale: float,
    put: FloatArray,
    call: FloatArray,
) -> None:
    """``_SurfaceCos._payoff_numpy``'s matrices element by element, the same operations in the same order (so the
    same bits), each quote's side only (the other side is ``0.0 * scale``, as ``np.where`` then the product give
    it): ``c`` the log strikes clipped to ``[a, b]``, ``ek``, ``ec``, ``emc`` numpy's ``exp`` of the log strikes,
    of ``c`` and of ``-c``, ``ea = exp(a)``, ``emb = exp(-b)``, ``scale = 2 / (b - a)``; ``u`` the slice's
    frequencies (``u[0] = 0``)."""
    q, n = put.shape
    zero = 0.0 * scale
    for j in range(q):
        cj, ekj, ecj, emcj = c[j], ek[j], ec[j], emc[j]
        cma = cj - a
        is_call = otm_call[j]
        for k in range(n):
            uk = u[k]
            ang = uk * cma
            ck, sk = math.cos(ang), math.sin(ang)
            inv = 1.0 / (1.0 + uk * uk)
            usk = uk * sk
            if is_call:
                if uk == 0.0:
                    v = (b - cj) - ekj * (emcj - emb)
                else:
                    sign = 1.0 if k % 2 == 0 else -1.0
                    v = -sk / uk - ekj * ((-sign * emb + emcj * (ck - usk)) * inv)
                if k == 0:
                    v *= 0.5
                put[j, k] = zero
                call[j, k] = v * scale
            else:
                first = cma if uk == 0.0 else sk / uk
                v = ekj * first - ((ck * ecj - ea) + usk * ecj) * inv
                if k == 0:
                    v *= 0.5
                put[j, k] = v * scale
                call[j, k] = zero


@njit(**JIT)
def _cf_block(
    t: float,
    a: float,
    w: float,
    params: FloatArray,
    put: FloatArray,
    call: FloatArray,
    key: FloatArray,
    core: np.ndarray,
) -> None:
    """Both measures' coefficients of one slice for each parameter row: ``put[i, k]``, ``call[i, k]``, each equal
    bit for bit to ``_coefficient(k, t, *params[i], a, w, 0.0 or 1.0)``.

    Rows with the same ``(kappa, xi, rho)`` (exactly) share ``_log_cf_core``; a group whose ``(kappa, xi, rho)``
    equals ``key[1:4]`` (``key[0]`` 1: set) takes its parts from ``core`` (shape ``(4, n)``: put ``big``, put
    ``dd``, call ``big``, call ``dd``), and the parts of row 0's group are left there with ``key`` for the next
    call."""
    m, n = put.shape
    leader = np.empty(m, dtype=np.intp)
    for i in range(m):
        leader[i] = i
        for j in range(i):
            if (
                leader[j] == j
                and params[j, 1] == params[i, 1]
                and params[j, 3] == params[i, 3]
                and params[j, 4] == params[i, 4]
            ):
                leader[i] = j
                break
    # per row, taken out of the loop over terms: ``kappa theta / xi^2``, the first product of _log_cf_from_core
    # (kappa and xi are the row's group's, the same bits)
    lead_coef = np.empty(m)
    for r in range(m):
        xi2 = params[leader[r], 3] * params[leader[r], 3]
        lead_coef[r] = params[leader[r], 1] * params[r, 2] / xi2
    cached = key[0] == 1.0 and params[0, 1] == key[1] and params[0, 3] == key[2] and params[0, 4] == key[3]
    for i in range(m):
        if leader[i] != i:
            continue
        kappa, xi, rho = params[i, 1], params[i, 3], params[i, 4]
        from_cache = cached and i == 0
        if n > 0:
            for r in range(i, m):
                if leader[r] == i:
                    put[r, 0] = 1.0  # phi(0) = phi(-i) = 1, as _coefficient
                    call[r, 0] = 1.0
        for k in range(1, n):
            u = k * math.pi / w
            if from_cache:
                big_p, dd_p, big_c, dd_c = core[0, k], core[1, k], core[2, k], core[3, k]
            else:
                big_p, dd_p = _log_cf_core(u - 1j * 0.0, t, kappa, xi, rho)
                big_c, dd_c = _log_cf_core(u - 1j * 1.0, t, kappa, xi, rho)
                if i == 0:
                    core[0, k], core[1, k], core[2, k], core[3, k] = big_p, dd_p, big_c, dd_c
            iua = 1j * u * a  # once per term, not per row
            for r in range(i, m):
                if leader[r] != i:
                    continue
                v0 = params[r, 0]
                # _log_cf_from_core(big, dd, v0, kappa, theta, xi) - 1j * u * a, the same operations
                z = (lead_coef[r] * big_p + dd_p * v0) - iua
                put[r, k] = math.exp(z.real) * math.cos(z.imag)
                z = (lead_coef[r] * big_c + dd_c * v0) - iua
                call[r, k] = math.exp(z.real) * math.cos(z.imag)
    if not cached and n > 0:
        key[0], key[1], key[2], key[3] = 1.0, params[0, 1], params[0, 3], params[0, 4]


@inner_njit()
def _log_cf_grad(
    u: complex, t: float, v0: float, kappa: float, theta: float, xi: float, rho: float, grad: np.ndarray
) -> complex:
    """``ln phi(u)`` (``_log_cf``'s formula, not its bits) and its partial derivatives in ``(v0, kappa, theta, xi,
    rho)`` into ``grad[0:5]``. With ``beta``, ``d`` and ``xi`` the only routes of ``kappa``, ``xi`` and ``rho`` into
    ``big`` and ``dd`` (``_log_cf_core``): ``d big = B_beta d beta + B_d d d``, likewise ``dd``, with ``d d = (beta d
    beta + xi d xi (u^2 + i u)) / d`` and ``d beta`` 1, ``-i rho u`` and ``-i xi u`` for ``kappa``, ``xi``,
    ``rho``."""
    iu = 1j * u
    q = u * u + iu
    beta = kappa - rho * xi * iu
    d = cmath.sqrt(beta * beta + xi * xi * q)
    bm = beta - d
    inv_bp = 1.0 / (beta + d)
    g = bm * inv_bp
    e = cmath.exp(-d * t)
    xi2 = xi * xi
    h = 1.0 - g * e
    h1 = 1.0 - g
    inv_h, inv_h1 = 1.0 / h, 1.0 / h1
    big = bm * t - 2.0 * cmath.log(h * inv_h1)
    ratio = (1.0 - e) * inv_h
    dd = bm / xi2 * ratio
    # partials in beta and in d (each with the other fixed)
    g_b = (1.0 - g) * inv_bp
    g_d = -(1.0 + g) * inv_bp
    e_d = -t * e
    h_b = -g_b * e
    h_d = -(g_d * e + g * e_d)
    big_b = t - 2.0 * (h_b * inv_h + g_b * inv_h1)
    big_d = -t - 2.0 * (h_d * inv_h + g_d * inv_h1)
    dd_b = (ratio - bm * ratio * h_b * inv_h) / xi2
    dd_d = (-ratio + bm * (-e_d - ratio * h_d) * inv_h) / xi2
    inv_d = 1.0 / d
    coef = kappa * theta / xi2
    # kappa: d beta = 1
    d_k = beta * inv_d
    dk = theta / xi2 * big + coef * (big_b + big_d * d_k) + v0 * (dd_b + dd_d * d_k)
    # xi: d beta = -i rho u, and xi itself
    b_x = -rho * iu
    d_x = (beta * b_x + xi * q) * inv_d
    dx = -2.0 * coef / xi * big + coef * (big_b * b_x + big_d * d_x) + v0 * (dd_b * b_x + dd_d * d_x - 2.0 * dd / xi)
    # rho: d beta = -i xi u
    b_r = -xi * iu
    d_r = beta * b_r * inv_d
    dr = coef * (big_b * b_r + big_d * d_r) + v0 * (dd_b * b_r + dd_d * d_r)
    grad[0], grad[1], grad[2], grad[3], grad[4] = dd, dk, kappa / xi2 * big, dx, dr
    return coef * big + dd * v0


@njit(**JIT)
def _cf_jacobian_block(
    t: float, a: float, w: float, params: FloatArray, factor: FloatArray, put: FloatArray, call: FloatArray
) -> None:
    """Both measures' coefficients of one slice (``_cf_block``'s ``Re(phi(u_k - i shift) e^{-i u_k a})``, the same
    formula, not its bits) in row 0 and their derivatives in the calibration coordinates in rows ``1 + j``:
    ``put`` (shift 0), ``call`` (shift 1), each partial in parameter ``j`` of ``params`` (shape ``(5,)``) times
    ``factor[j]`` (``d param_j / d x_j``). ``k = 0``: 1 and 0 (``phi(0) = phi(-i) = 1``)."""
    n = put.shape[1]
    v0, kappa, theta, xi, rho = params[0], params[1], params[2], params[3], params[4]
    grad = np.empty(5, dtype=np.complex128)
    if n > 0:
        put[0, 0] = 1.0
        call[0, 0] = 1.0
        for j in range(5):
            put[1 + j, 0] = 0.0
            call[1 + j, 0] = 0.0
    for k in range(1, n):
        u = k * math.pi / w
        iua = 1j * u * a
        for m in range(2):
            z = _log_cf_grad(u - 1j * float(m), t, v0, kappa, theta, xi, rho, grad) - iua
            ez = cmath.exp(z)
            out = put if m == 0 else call
            out[0, k] = ez.real
            for j in range(5):
                out[1 + j, k] = (ez * grad[j]).real * factor[j]


#: MINPACK's limit on residual evaluations, as ``least_squares(method="lm")`` sets it for 5 parameters (``100 n``).
_MAX_NFEV = 500
#: MINPACK's ``ftol``, ``xtol`` and ``gtol`` of the final round, and of the coarse first round.
_TOLERANCE = 1e-10
_FIRST_TOLERANCE = 1e-6
#: ``(xi, rho)`` the coarse first round's grids are sized for (with the start's ``v0``, ``kappa``, ``theta``): the
#: former fixed start's, whose grids had few terms (``phi`` falls faster in ``u`` with a smaller vol of variance).
_FIRST_GRID = (0.5, -0.5)
#: MINPACK's return codes of a converged fit.
_LM_CONVERGED = (1, 2, 3, 4)


class _LastPoint:
    """``fn`` remembering its last point: called again at the same bits, it returns a copy of the same value."""

    def __init__(self, fn: Callable[[FloatArray], FloatArray]) -> None:
        self.fn = fn
        self.key = b""
        self.value = np.empty(0)

    def __call__(self, x: FloatArray) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        if x.tobytes() != self.key:
            self.value = self.fn(x)
            self.key = x.tobytes()
        return self.value.copy()


def _levenberg_marquardt(
    residuals: Callable[[FloatArray], FloatArray],
    jacobian: Callable[[FloatArray], FloatArray],
    x0: FloatArray,
    tol: float = 1e-10,
) -> tuple[FloatArray, int, bool]:
    """MINPACK's ``lmder`` from ``x0`` with the arguments ``least_squares(residuals, x0, jac=jacobian, method="lm",
    xtol=tol, ftol=tol, gtol=tol)`` gives it, so the same iterates: the solution, MINPACK's count of residual
    evaluations and whether it converged. Through ``leastsq``, which (unlike ``least_squares``) evaluates no
    Jacobian at the solution once MINPACK has returned (a whole Jacobian, 10 shifted points, for a ``grad`` not
    used here); its checks at ``x0`` are the residuals and Jacobian that MINPACK then asks for at ``x0``, so each
    function remembers its last point. Residuals not finite at ``x0`` raise ``least_squares``' ValueError; MINPACK's
    codes 6-8 (no further progress possible), on which ``least_squares`` raised a KeyError, count as not converged."""
    fun, jac = _LastPoint(residuals), _LastPoint(jacobian)
    x0 = np.array(x0, dtype=np.float64)
    if not np.all(np.isfinite(fun(x0))):
        raise ValueError("Residuals are not finite in the initial point.")
    if _LMDER is None:
        x, _, info, _, status = leastsq(
            fun, x0, Dfun=jac, full_output=True, ftol=tol, xtol=tol, gtol=tol, maxfev=_MAX_NFEV, factor=100.0
        )
        return x, int(info["nfev"]), status in _LM_CONVERGED
    # leastsq's own call of MINPACK (its arguments: no extra args, full output, row Jacobian, no diag), without its
    # checks at x0 (the values above, remembered) and the covariance it derives from the result, unread here
    x, info, status = _LMDER(fun, jac, x0, (), 1, 0, tol, tol, tol, _MAX_NFEV, 100.0, None)
    return x, int(info["nfev"]), status in _LM_CONVERGED


#: MINPACK's ``lmder`` as ``scipy.optimize.leastsq`` calls it (None: through ``leastsq``).
_LMDER = getattr(_minpack, "_lmder", None)


#: Mean-reversion speeds tried by ``initial_guess`` on the ATM variance term structure (per year).
_GUESS_KAPPAS = np.array([0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])


def _lstsq(a: FloatArray, b: FloatArray) -> FloatArray:
    """``np.linalg.lstsq(a, b, rcond=None)[0]`` of float64 ``a`` (``(m, n)``, or a stack ``(s, m, n)`` of problems
    with one ``b`` of ``(m,)``): the gufunc it calls (LAPACK ``dgelsd``, one call per problem, the same workspace),
    with its ``rcond`` and error handling, without its wrapper's checks and copies; numpy's ``lstsq`` itself per
    problem if the gufunc is not found."""
    m, n = a.shape[-2:]
    if _LSTSQ is None or m == 0:
        if a.ndim == 2:
            return np.linalg.lstsq(a, b, rcond=None)[0]
        return np.stack([np.linalg.lstsq(ai, b, rcond=None)[0] for ai in a])
    with np.errstate(call=_LSTSQ_ERROR, invalid="call", over="ignore", divide="ignore", under="ignore"):
        x = _LSTSQ(a, b[:, None], np.finfo(np.float64).eps * max(n, m), signature="ddd->ddid")[0]
    return x[..., 0]


_LSTSQ = getattr(getattr(np.linalg, "_umath_linalg", None), "lstsq", None)
_LSTSQ_ERROR = getattr(getattr(np.linalg, "_linalg", None), "_raise_linalgerror_lstsq", None)
if _LSTSQ_ERROR is None:
    _LSTSQ = None


def _smile_moments(k: FloatArray, vol: FloatArray, t: float) -> tuple[float, float, float]:
    """ATM vol, skew ``d vol / d k`` and half curvature of one slice: the least-squares parabola ``a + b k + c k^2``
    through its quotes within 1.5 ATM standard deviations of the forward (the 5 nearest if fewer than 4); the
    nearest quote's vol and no skew with fewer than 3 distinct strikes."""
    atm = float(vol[np.argmin(np.abs(k))])
    near = np.abs(k) <= 1.5 * atm * math.sqrt(t)
    if np.count_nonzero(near) < 4:
        near = np.argsort(np.abs(k), kind="stable")[:5]
    kk, vv = k[near], vol[near]
    # np.unique(kk).size (a set of the floats counts the same for finite values, -0.0 == 0.0 either way)
    if (len(set(kk.tolist())) if np.isfinite(kk).all() else np.unique(kk).size) < 3:
        return atm, 0.0, 0.0
    coef = _lstsq(np.stack([np.ones_like(kk), kk, kk * kk], axis=1), vv)
    if not (np.all(np.isfinite(coef)) and coef[0] > 0.0):
        return atm, 0.0, 0.0
    return float(coef[0]), float(coef[1]), float(coef[2])


def _mean_factor(x: FloatArray) -> FloatArray:
    """``(1 - e^-x) / x`` (1 at 0): the weight of ``v0`` in the mean expected variance over ``[0, T]``, ``x =
    kappa T``."""
    return np.where(x > 1e-8, -np.expm1(-x) / np.maximum(x, 1e-300), 1.0 - 0.5 * x)


def initial_guess(t_slice: FloatArray, slice_of: IntArray, lk: FloatArray, vol: FloatArray) -> HestonParams:
    """A start for ``calibrate_heston`` from the surface's own quotes (no earlier fit), by the small vol-of-vol
    expansions of Heston implied vols:

    * per slice the ATM vol ``a``, skew ``b`` and half curvature ``c`` (``_smile_moments``);
    * ``v0``, ``theta``, ``kappa`` from the ATM variance term structure read as the mean expected variance,
      ``a^2 = theta + (v0 - theta) (1 - e^{-kappa T}) / (kappa T)``: linear least squares in ``(v0, theta)`` for
      each ``kappa`` of ``_GUESS_KAPPAS``, the best kept (with fewer than 3 slices ``kappa = 2``, ``v0`` and
      ``theta`` the first and last ATM variances);
    * ``rho xi`` from the ATM skews, ``b = rho xi / (4 a) g(kappa T)`` with ``g(x) = 2 / x (1 - (1 - e^{-x}) / x)``
      (Gatheral 2006, ch. 3: the short-expiry skew ``rho xi / (4 sqrt(v0))`` decaying like ``1 / (kappa T)``),
      least squares over the slices;
    * ``xi`` from the shortest slice's curvature: Heston's volatility ``sqrt(v)`` has lognormal vol of vol ``nu =
      xi / (2 a)``, and Hagan et al.'s (2002) lognormal expansion gives ``c = (2 - 3 rho^2) nu^2 / (12 a)``, so
      ``xi^2 = (48 a^3 c + 3 (rho xi)^2) / 2``;

    then clipped to ``xi`` in ``[max(0.1, |rho xi| / 0.9), 5]`` and ``rho`` in ``[-0.9, 0.9]``, ``v0`` and
    ``theta`` within a factor 4 of the ATM variances. Anything not finite falls back to the former fixed start
    ``(a_0^2, 2, a_last^2, 0.5, -0.5)`` from the nearest-to-the-money vols."""
    m = t_slice.size
    moments = np.array([_smile_moments(lk[slice_of == s], vol[slice_of == s], float(t_slice[s])) for s in range(m)])
    a, b, c = moments[:, 0], moments[:, 1], moments[:, 2]
    var = a * a
    kappa, v0, theta = 2.0, float(var[0]), float(var[-1])
    if m >= 3:
        best = math.inf
        # every kappa's design at once and their least squares in one gufunc call (each problem its own dgelsd)
        f = _mean_factor(_GUESS_KAPPAS[:, None] * t_slice[None, :])
        designs = np.stack([f, 1.0 - f], axis=2)
        sols = _lstsq(designs, var)
        for i, kap in enumerate(_GUESS_KAPPAS):
            design, sol = designs[i], sols[i]
            ssr = float(np.sum((design @ sol - var) ** 2))
            if ssr < best:
                best, kappa, v0, theta = ssr, float(kap), float(sol[0]), float(sol[1])
    lo, hi = 0.25 * float(var.min()), 4.0 * float(var.max())
    v0, theta = min(max(v0, lo), hi), min(max(theta, lo), hi)
    x = kappa * t_slice
    h = np.where(x > 1e-6, 2.0 / np.maximum(x, 1e-300) * (1.0 - _mean_factor(x)), 1.0 - x / 3.0) / (4.0 * a)
    rho_xi = float(np.sum(h * b) / np.sum(h * h))
    xi = math.sqrt(max((48.0 * a[0] ** 3 * max(c[0], 0.0) + 3.0 * rho_xi * rho_xi) / 2.0, 0.0))
    xi = min(max(xi, 0.1, abs(rho_xi) / 0.9), 5.0)
    rho = min(max(rho_xi / xi, -0.9), 0.9)
    guess = np.array([v0, kappa, theta, xi, rho])
    if np.all(np.isfinite(guess)) and np.all(guess[:4] > 0.0):
        return HestonParams(v0, kappa, theta, xi, rho)
    atm = [float(vol[slice_of == s][np.argmin(np.abs(lk[slice_of == s]))]) for s in range(m)]
    return HestonParams(atm[0] ** 2, 2.0, atm[-1] ** 2, 0.5, -0.5)


def calibrate_heston(
    time_years: ArrayLike,
    log_moneyness: ArrayLike,
    implied_vol: ArrayLike,
    *,
    initial: HestonParams | None = None,
    l_std: float = DEFAULT_L,
    cf_tolerance: float = 1e-10,
    rounds: int = 2,
) -> HestonFit:
    """Fit ``(v0, kappa, theta, xi, rho)`` to out-of-the-money implied vols of one underlying (module docstring).

    ``log_moneyness`` is ``ln(K/F)`` of each quote's own expiry; calls are used above the forward, puts below."""
    t = np.asarray(time_years, dtype=np.float64).reshape(-1)
    lk = np.asarray(log_moneyness, dtype=np.float64).reshape(-1)
    vol = np.asarray(implied_vol, dtype=np.float64).reshape(-1)
    if not (t.size == lk.size == vol.size):
        raise ValueError("time_years, log_moneyness and implied_vol must have the same length")
    ok = np.isfinite(t) & np.isfinite(lk) & np.isfinite(vol) & (t > 0) & (vol > 0)
    t, lk, vol = t[ok], lk[ok], vol[ok]
    if t.size < 5:
        raise ValueError(f"Heston calibration needs at least 5 quotes with a positive vol, got {t.size}")
    call = (lk > 0.0).astype(np.float64)
    market, vega = _black_undiscounted(lk, t, vol, call > 0)
    weight = np.sqrt(vega / vega.max()) / np.maximum(vega, 1e-12)
    t_slice, slice_of = np.unique(t, return_inverse=True)
    if initial is None:
        initial = initial_guess(t_slice, slice_of, lk, vol)
    x = _to_x(initial.as_array())
    iterations, converged = 0, False
    # the first of two or more rounds is a coarse stage: grids sized for the start's variances with the small vol of
    # variance and rho of _FIRST_GRID (fewer terms) and MINPACK's tolerances at _FIRST_TOLERANCE
    first = _to_p(x)[None, :]
    if rounds > 1:
        first = first.copy()
        first[0, 3:] = _FIRST_GRID
    surf = _SurfaceCos(t_slice, slice_of, lk, call, first, l_std, cf_tolerance)
    for round_ in range(max(rounds, 1)):
        if round_ > 0:  # re-centre the grids on the fitted parameters unless the ones used already cover them
            grid_a, grid_b, grid_n = cos_interval(t_slice, _to_p(x)[None, :], l_std, cf_tolerance)
            width, used = grid_b - grid_a, surf.b - surf.a
            covered = np.all((grid_a >= surf.a) & (grid_b <= surf.b) & (grid_n * used / width <= surf.n))
            if covered and round_ > 1:
                break
            if not covered:
                surf = _SurfaceCos(
                    t_slice,
                    slice_of,
                    lk,
                    call,
                    _to_p(x)[None, :],
                    l_std,
                    cf_tolerance,
                    (grid_a, grid_b, grid_n),
                    same_quotes=surf,
                )

        # MINPACK asks for the Jacobian at the point whose residuals it evaluated last: both from one pass there
        last: dict[bytes, FloatArray] = {}

        def residuals(x_: FloatArray, surf: _SurfaceCos = surf, last: dict[bytes, FloatArray] = last) -> FloatArray:
            both = surf.prices_and_jacobian(x_)
            last.clear()
            last[np.asarray(x_, dtype=np.float64).tobytes()] = both[1:]
            return weight * (both[0] - market)

        def jacobian(x_: FloatArray, surf: _SurfaceCos = surf, last: dict[bytes, FloatArray] = last) -> FloatArray:
            d = last.get(np.asarray(x_, dtype=np.float64).tobytes())
            return (weight * (surf.prices_and_jacobian(x_)[1:] if d is None else d)).T

        tol = _FIRST_TOLERANCE if round_ == 0 and rounds > 1 else _TOLERANCE
        x, nfev, converged = _levenberg_marquardt(residuals, jacobian, x, tol)
        iterations += nfev
    p = _to_p(x)
    params = HestonParams(*(float(v) for v in p))
    model_price = _surface_prices(t_slice, slice_of, np.exp(lk), call, p)
    model_vol = implied_vol_black76(model_price, 1.0, np.exp(lk), t, 0.0, call > 0).vol
    err = (model_vol - vol) * 100.0
    full = np.full(ok.size, np.nan)
    full[ok] = model_vol
    return HestonFit(
        params,
        float(np.sqrt(np.nanmean(err**2))),
        float(np.nanmax(np.abs(err))),
        int(t.size),
        int(t_slice.size),
        iterations,
        converged,
        full,
    )


def _surface_prices(
    t_slice: FloatArray, slice_of: IntArray, strike: FloatArray, call: FloatArray, p: FloatArray
) -> FloatArray:
    """``heston_price(1.0, strike, t_slice[slice_of], 0.0, 0.0, call, *p)`` (default interval and tolerance) of one
    parameter set, with the slices already found: the same grids, coefficients and kernel calls, so the same prices.
    (``heston_price`` orders the expiries by their bytes, not their values: each slice's grid is its own either way.)
    The forward is ``1.0 * exp(0.0 * t) = 1.0`` and the discount ``exp(-0.0 * t) = 1.0``, so the log strikes are
    ``log(strike / 1.0)`` and the prices the kernel's."""
    params = np.array(np.broadcast_to(p, (t_slice.size, 5)), order="C")
    _validate(params, t_slice)
    grid = cos_grid(t_slice, params, DEFAULT_L, DEFAULT_CF_TOLERANCE)
    return _grid_prices(grid, slice_of.astype(np.intp), np.log(strike / 1.0), call != 0.0, True)


def heston_implied_vol(params: HestonParams, time_years: ArrayLike, log_moneyness: ArrayLike) -> FloatArray:
    """Black implied vol of the Heston OTM price at ``ln(K/F)`` (call above the forward, put below)."""
    t, lk = np.broadcast_arrays(np.asarray(time_years, dtype=np.float64), np.asarray(log_moneyness, dtype=np.float64))
    call = lk > 0.0
    price = heston_price(1.0, np.exp(lk), t, 0.0, 0.0, call, *params.as_array())
    return implied_vol_black76(price, 1.0, np.exp(lk), t, 0.0, call).vol
