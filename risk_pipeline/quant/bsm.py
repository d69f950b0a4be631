"""Black-Scholes-Merton European option prices and Greeks with a continuous dividend yield.

Formulas (Hull, "Options, Futures, and Other Derivatives", 10th ed., ch. 15, 17 and 19; Haug, "The
Complete Guide to Option Pricing Formulas", 2nd ed. 2007, ch. 1 (generalized BSM) and ch. 2 (Greeks)), with
``w = +1`` for a call and ``-1`` for a put, ``F = S e^{(r-q)T}``, ``s = sigma sqrt(T)``,
``d1 = ln(F/K)/s + s/2`` and ``d2 = d1 - s``::

    price = w (S e^{-qT} N(w d1) - K e^{-rT} N(w d2))
    delta = w e^{-qT} N(w d1)                       gamma = e^{-qT} n(d1) / (S s)
    vega  = S e^{-qT} n(d1) sqrt(T)                 rho   = w K T e^{-rT} N(w d2)
    theta = -S e^{-qT} n(d1) sigma / (2 sqrt(T)) - w r K e^{-rT} N(w d2) + w q S e^{-qT} N(w d1)
    vanna = d delta / d sigma = -e^{-qT} n(d1) d2 / sigma
    volga = d vega / d sigma  = vega d1 d2 / sigma
    charm = -d delta / dT     = w q e^{-qT} N(w d1) - e^{-qT} n(d1) ((r - q)/s - d2/(2T))

Units: everything is per ONE option on ONE unit of underlying; vega per 1.00 of volatility, rho per
1.00 of rate, theta and charm per year of calendar time passing (``theta = dV/dt = -dV/dT``,
``charm = dDelta/dt = -dDelta/dT``), ``theta_per_day = theta / 365``. These are QuantLib's
``AnalyticEuropeanEngine`` conventions for vega, rho and theta.

Limits. When ``s = sigma sqrt(T) <= MIN_TOTAL_STD`` (expiry, zero or tiny volatility) the exact
``s -> 0`` limits are returned with ``H(z) = 1, 1/2, 0`` for ``z >, =, < 0`` applied to
``z = w ln(F/K)``: ``price = max(w (S e^{-qT} - K e^{-rT}), 0)`` (the discounted deterministic forward
payoff), ``delta = w e^{-qT} H``, ``rho = w K T e^{-rT} H``, ``theta = w (q S e^{-qT} - r K e^{-rT}) H``,
``charm = w q e^{-qT} H``, ``gamma = volga = 0``, and ``vega = S e^{-qT} sqrt(T) / sqrt(2 pi)``,
``vanna = e^{-qT} sqrt(T) / (2 sqrt(2 pi))`` when ``F == K`` exactly (else 0). So at expiry with
``S == K`` the delta is ``w/2`` and for ``sigma = 0``, ``F == K`` it is ``w e^{-qT}/2``. The terms that
diverge at ``F == K`` (the Dirac mass of gamma; the ``sigma/(2 sqrt(T))`` term of theta at ``T = 0``;
the ``(r - q)/s`` term of charm) are dropped so every output stays finite. ``time_years < 0`` is
treated as 0. Non-positive spot or strike, negative or NaN volatility and NaN inputs give NaN.

Two implementations agree to ~1e-13 relative: a numba kernel (``parallel=True``, ``fastmath=False``,
auto-vectorized) whose normal CDF is W. J. Cody's rational Chebyshev erfc (Math. Comp. 23, 1969)
evaluated branch-free on the density's ``exp(-d^2/2)`` (Dekker's exact square), with polynomial
``exp``/``log`` (Cody-Waite reduction, <= 2 and 4 ulp), and a plain numpy / ``scipy.special.ndtr``
reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

FloatArray = NDArray[np.float64]
Backend = Literal["auto", "numba", "numpy"]

#: Total standard deviations ``sigma sqrt(T)`` at or below this are treated as exactly zero.
MIN_TOTAL_STD = 1e-100
#: Days per year for ``theta_per_day`` (QuantLib's ``thetaPerDay`` convention).
DAYS_PER_YEAR = 365.0

_INV_SQRT2 = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794
_SQRT_PI_INV = 0.56418958354775628695  # 1/sqrt(pi)

# Cody (1969) erf / erfc rational Chebyshev coefficients (netlib specfun CALERF).
_A0, _A1, _A2, _A3, _A4 = (
    3.1611237438705656,
    113.864154151050156,
    377.485237685302021,
    3209.37758913846947,
    0.185777706184603153,
)
_B0, _B1, _B2, _B3 = 23.6012909523441209, 244.024637934444173, 1282.61652607737228, 2844.23683343917062
_C0, _C1, _C2, _C3, _C4, _C5, _C6, _C7, _C8 = (
    0.564188496988670089,
    8.88314979438837594,
    66.1191906371416295,
    298.635138197400131,
    881.95222124176909,
    1712.04761263407058,
    2051.07837782607147,
    1230.33935479799725,
    2.15311535474403846e-8,
)
_D0, _D1, _D2, _D3, _D4, _D5, _D6, _D7 = (
    15.7449261107098347,
    117.693950891312499,
    537.181101862009858,
    1621.38957456669019,
    3290.79923573345963,
    4362.61909014324716,
    3439.36767414372164,
    1230.33935480374942,
)
_P0, _P1, _P2, _P3, _P4, _P5 = (
    0.305326634961232344,
    0.360344899949804439,
    0.125781726111229246,
    0.0160837851487422766,
    6.58749161529837803e-4,
    0.0163153871373020978,
)
_Q0, _Q1, _Q2, _Q3, _Q4 = (
    2.56852019228982242,
    1.87295284992346047,
    0.527905102951428412,
    0.0605183413124413191,
    0.00233520497626869185,
)


@dataclass(frozen=True)
class BsmResult:
    """Price and Greeks per option on one unit of underlying (units in the module docstring)."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    vega: FloatArray
    theta: FloatArray
    theta_per_day: FloatArray
    rho: FloatArray
    vanna: FloatArray
    volga: FloatArray
    charm: FloatArray


# ----------------------------------------------------------------------------------------------
# numba kernels
#
# The per-option functions are branch-free (selects and 0/1 blends instead of if/else, every
# intermediate finite), call no libm function (exp/log below are polynomial, within a few ulp of
# libm) and are inlined into the kernels, so LLVM vectorizes the contiguous loops (AVX2/AVX-512).
# IEEE semantics throughout: no fastmath.
# ----------------------------------------------------------------------------------------------

_JIT = {"cache": True, "fastmath": False, "error_model": "numpy"}


@intrinsic
def _i64_as_f64(typingctx: Any, value: Any) -> tuple[Any, Callable[..., Any]]:
    """Reinterpret the bits of an int64 as a float64 (a free SIMD move)."""
    sig = types.float64(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return sig, codegen


@intrinsic
def _f64_as_i64(typingctx: Any, value: Any) -> tuple[Any, Callable[..., Any]]:
    """Reinterpret the bits of a float64 as an int64."""
    sig = types.int64(types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return sig, codegen


_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # Cody-Waite split of ln 2 (fdlibm)
_LN2_LO = 1.90821492927058770002e-10
_EXP_C = tuple(1.0 / math.factorial(j) for j in range(14))
_LOG_C = tuple(2.0 / (2 * j + 1) for j in range(13))


@njit(inline="always", **_JIT)
def fast_exp(x: float) -> float:
    """``exp(x)`` within 2 ulp of libm, branch-free so that loops calling it vectorize.

    ``x = k ln2 + r`` (Cody-Waite, ``|r| <= ln2/2``), degree-13 Taylor polynomial for ``e^r``, and
    ``2^k`` assembled from exponent bits in two halves so that subnormal results stay right.
    """
    xc = np.minimum(np.maximum(x, -745.5), 710.0)
    kf = np.floor(xc * _LOG2E + 0.5)
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    p = _EXP_C[13]
    p = p * r + _EXP_C[12]
    p = p * r + _EXP_C[11]
    p = p * r + _EXP_C[10]
    p = p * r + _EXP_C[9]
    p = p * r + _EXP_C[8]
    p = p * r + _EXP_C[7]
    p = p * r + _EXP_C[6]
    p = p * r + _EXP_C[5]
    p = p * r + _EXP_C[4]
    p = p * r + _EXP_C[3]
    p = p * r + _EXP_C[2]
    p = p * r + _EXP_C[1]
    p = p * r + _EXP_C[0]
    k = np.int64(kf)
    k1 = k >> 1
    return p * _i64_as_f64((k1 + 1023) << 52) * _i64_as_f64((k - k1 + 1023) << 52)


@njit(inline="always", **_JIT)
def fast_log(x: float) -> float:
    """``log(x)`` within 4 ulp of libm, branch-free: ``x = 2^e m``, ``ln m = 2 atanh((m-1)/(m+1))``."""
    small = x < 2.2250738585072014e-308
    xs = x * 18014398509481984.0 if small else x  # 2^54 lifts subnormals
    bits = _f64_as_i64(xs)
    m = _i64_as_f64((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)  # mantissa in [1, 2)
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    e = np.float64(((bits >> 52) & 0x7FF) - 1023) + np.float64(big) - 54.0 * np.float64(small)
    f = (m - 1.0) / (m + 1.0)
    f2 = f * f
    p = _LOG_C[12]
    p = p * f2 + _LOG_C[11]
    p = p * f2 + _LOG_C[10]
    p = p * f2 + _LOG_C[9]
    p = p * f2 + _LOG_C[8]
    p = p * f2 + _LOG_C[7]
    p = p * f2 + _LOG_C[6]
    p = p * f2 + _LOG_C[5]
    p = p * f2 + _LOG_C[4]
    p = p * f2 + _LOG_C[3]
    p = p * f2 + _LOG_C[2]
    p = p * f2 + _LOG_C[1]
    res = e * _LN2_HI + ((2.0 * f + f * f2 * p) + e * _LN2_LO)
    res = res if x < math.inf else x
    return res if x > 0.0 else (-math.inf if x == 0.0 else math.nan)


@njit(inline="always", **_JIT)
def norm_cdf_from_exp(z: float, e: float) -> float:
    """``N(z)`` given ``e = exp(-z^2/2)``: Cody's (1969) erf/erfc rational approximations, branch-free.

    Regions in ``y = |z|/sqrt(2)``: ``y <= 0.46875`` erf; ``y <= 4`` erfc with the (c, d) rational;
    beyond, the asymptotic (p, q) rational rewritten in ``y^2`` so that one division serves all three.
    The lower tail ``N(-|z|)`` is formed without cancellation (relative accuracy ~1e-15).
    """
    y = abs(z) * _INV_SQRT2
    m1 = np.float64(y <= 0.46875)
    m3 = np.float64(y > 4.0)
    m2 = 1.0 - m1 - m3
    y1 = np.minimum(y, 0.46875)
    w1 = y1 * y1
    num1 = (((_A4 * w1 + _A0) * w1 + _A1) * w1 + _A2) * w1 + _A3
    den1 = (((w1 + _B0) * w1 + _B1) * w1 + _B2) * w1 + _B3
    y2 = np.minimum(y, 4.0)
    num2 = (((((((_C8 * y2 + _C0) * y2 + _C1) * y2 + _C2) * y2 + _C3) * y2 + _C4) * y2 + _C5) * y2
            + _C6) * y2 + _C7
    den2 = (((((((y2 + _D0) * y2 + _D1) * y2 + _D2) * y2 + _D3) * y2 + _D4) * y2 + _D5) * y2 + _D6) * y2 + _D7
    y3 = np.minimum(np.maximum(y, 4.0), 32.0)  # e == 0 beyond y = 27.3, the clamp keeps terms finite
    w3 = y3 * y3
    p3 = ((((_P4 * w3 + _P3) * w3 + _P2) * w3 + _P1) * w3 + _P0) * w3 + _P5
    q3 = w3 * (((((_Q4 * w3 + _Q3) * w3 + _Q2) * w3 + _Q1) * w3 + _Q0) * w3 + 1.0)
    ratio = (m1 * num1 + m2 * num2 + m3 * (q3 * _SQRT_PI_INV - p3)) / (m1 * den1 + m2 * den2 + m3 * q3 * y3)
    tail = 0.5 * (m1 * (1.0 - y1 * ratio) + (1.0 - m1) * (e * ratio))  # N(-|z|)
    return tail if z < 0.0 else 1.0 - tail


@njit(inline="always", **_JIT)
def exp_minus_half_square(z: float) -> float:
    """``exp(-z^2/2)`` to full relative accuracy: Dekker's exact ``z^2 = hi + lo``, ``e^{-hi/2}(1 - lo/2)``."""
    zc = np.minimum(np.maximum(z, -1e10), 1e10)  # beyond, the result underflows to 0 anyway
    hi = zc * zc
    c = 134217729.0 * zc  # 2^27 + 1
    zh = c - (c - zc)
    zl = zc - zh
    lo = ((zh * zh - hi) + 2.0 * zh * zl) + zl * zl
    return fast_exp(-0.5 * hi) * (1.0 - 0.5 * lo)


@njit(**_JIT)
def norm_cdf_nb(z: float) -> float:
    """Standard normal CDF ``N(z)`` for scalar numba code (Cody 1969, relative accuracy ~1e-15)."""
    return norm_cdf_from_exp(z, exp_minus_half_square(z))


@njit(inline="always", **_JIT)
def _bsm_point(
    s: float, k: float, t: float, sig: float, r: float, q: float, call: bool
) -> tuple[float, float, float, float, float, float, float, float, float]:
    """Price, delta, gamma, vega, theta, rho, vanna, volga, charm of one option (module docstring)."""
    valid = (s > 0.0) & (k > 0.0) & (sig >= 0.0) & (t == t) & (r == r) & (q == q)
    t = np.maximum(t, 0.0)
    w = 1.0 if call else -1.0
    sqt = math.sqrt(t)
    sd = sig * sqt
    dq = fast_exp(-q * t)
    dr = fast_exp(-r * t)
    sdq = s * dq
    kdr = k * dr
    x = fast_log(s / k) + (r - q) * t
    reg = sd > MIN_TOTAL_STD
    # regular branch, evaluated with harmless stand-ins where it is not used
    sds = sd if reg else 1.0
    sigs = sig if reg else 1.0
    ts = t if reg else 1.0
    sqts = sqt if reg else 1.0
    d1 = x / sds + 0.5 * sds
    d2 = d1 - sds
    e1 = exp_minus_half_square(d1)
    e2 = exp_minus_half_square(d2)
    nd1 = norm_cdf_from_exp(w * d1, e1)
    nd2 = norm_cdf_from_exp(w * d2, e2)
    pdf = _INV_SQRT_2PI * e1
    # s -> 0 limits: H(w x) in {0, 1/2, 1}; the density term survives only at x == 0
    wx = w * x
    h = np.float64(wx > 0.0) + 0.5 * np.float64(wx == 0.0)
    nd1 = nd1 if reg else h
    nd2 = nd2 if reg else h
    at_fwd = np.float64(x == 0.0) * _INV_SQRT_2PI
    pdf = pdf if reg else at_fwd
    price_lim = np.maximum(w * (sdq - kdr), 0.0) * np.float64(wx > 0.0) + 0.0  # + 0.0: no -0.0
    price = np.maximum(w * (sdq * nd1 - kdr * nd2), 0.0) + 0.0
    price = price if reg else price_lim
    delta = w * dq * nd1
    gamma = dq * pdf / (s * sds) if reg else 0.0
    vega = sdq * pdf * sqt
    theta_sig = -0.5 * sdq * pdf * sig / sqts if reg else 0.0
    theta = theta_sig + w * (q * sdq * nd1 - r * kdr * nd2)
    rho = w * kdr * t * nd2
    vanna = -dq * pdf * d2 / sigs if reg else 0.5 * dq * sqt * pdf
    volga = vega * d1 * d2 / sigs if reg else 0.0
    charm_pdf = dq * pdf * ((r - q) / sds - 0.5 * d2 / ts) if reg else 0.0
    charm = w * q * dq * nd1 - charm_pdf
    nan = np.nan
    if valid:
        return price, delta, gamma, vega, theta, rho, vanna, volga, charm
    return nan, nan, nan, nan, nan, nan, nan, nan, nan


@njit(inline="always", **_JIT)
def bsm_price_point(s: float, k: float, t: float, sig: float, r: float, q: float, call: bool) -> float:
    """Price of one option in numba (same formula and limits as ``bsm_greeks``), branch-free."""
    valid = (s > 0.0) & (k > 0.0) & (sig >= 0.0) & (t == t) & (r == r) & (q == q)
    t = np.maximum(t, 0.0)
    w = 1.0 if call else -1.0
    sd = sig * math.sqrt(t)
    sdq = s * fast_exp(-q * t)
    kdr = k * fast_exp(-r * t)
    x = fast_log(s / k) + (r - q) * t
    reg = sd > MIN_TOTAL_STD
    sds = sd if reg else 1.0
    d1 = x / sds + 0.5 * sds
    d2 = d1 - sds
    e1 = exp_minus_half_square(d1)
    e2 = exp_minus_half_square(d2)
    price = np.maximum(w * (sdq * norm_cdf_from_exp(w * d1, e1) - kdr * norm_cdf_from_exp(w * d2, e2)), 0.0)
    price_lim = np.maximum(w * (sdq - kdr), 0.0) * np.float64(w * x > 0.0) + 0.0
    price = price if reg else price_lim
    return price if valid else np.nan


@njit(parallel=True, **_JIT)
def _greeks_kernel(
    spot: FloatArray,
    strike: FloatArray,
    tau: FloatArray,
    vol: FloatArray,
    rate: FloatArray,
    div: FloatArray,
    call: NDArray[np.bool_],
    price: FloatArray,
    delta: FloatArray,
    gamma: FloatArray,
    vega: FloatArray,
    theta: FloatArray,
    theta_per_day: FloatArray,
    rho: FloatArray,
    vanna: FloatArray,
    volga: FloatArray,
    charm: FloatArray,
) -> None:
    """Fill the ten outputs (all arrays contiguous and of the same length)."""
    for i in prange(spot.shape[0]):
        p, de, ga, ve, th, rh, va, vo, ch = _bsm_point(spot[i], strike[i], tau[i], vol[i], rate[i], div[i],
                                                       call[i])
        price[i] = p
        delta[i] = de
        gamma[i] = ga
        vega[i] = ve
        theta[i] = th
        theta_per_day[i] = th / DAYS_PER_YEAR
        rho[i] = rh
        vanna[i] = va
        volga[i] = vo
        charm[i] = ch


@njit(parallel=True, **_JIT)
def _price_kernel(
    spot: FloatArray,
    strike: FloatArray,
    tau: FloatArray,
    vol: FloatArray,
    rate: FloatArray,
    div: FloatArray,
    call: NDArray[np.bool_],
    price: FloatArray,
) -> None:
    """Fill ``price`` (all inputs contiguous and of the same length)."""
    for i in prange(price.shape[0]):
        price[i] = bsm_price_point(spot[i], strike[i], tau[i], vol[i], rate[i], div[i], call[i])


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------


def broadcast_inputs(*args: ArrayLike) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """Broadcast shape and flat C-contiguous arrays of that size (float64; the last one bool).

    Inputs are materialized (scalars copied out) because the kernels vectorize only over
    contiguous unit-stride arrays; read-only arrays are copied.
    """
    arrs = [np.asarray(a, dtype=np.float64) for a in args[:-1]]
    arrs.append(np.asarray(args[-1], dtype=np.bool_))
    shape = np.broadcast_shapes(*(a.shape for a in arrs))
    flat = [np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1) for a in arrs]
    # read-only inputs would be a different numba type (one more compilation): copy them
    return shape, [f if f.flags.writeable else f.copy() for f in flat]


def _resolve_backend(backend: Backend) -> str:
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"unknown backend {backend!r}")
    return "numpy" if backend == "numpy" else "numba"


# ----------------------------------------------------------------------------------------------
# numpy reference implementation
# ----------------------------------------------------------------------------------------------


def _numpy_greeks(
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    price_only: bool,
) -> tuple[FloatArray, ...]:
    s, k, t, sig, r, q = (np.asarray(a, dtype=np.float64) for a in
                          (spot, strike, time_years, vol, rate, dividend_yield))
    s, k, t, sig, r, q, call = np.broadcast_arrays(s, k, t, sig, r, q, np.asarray(is_call, dtype=bool))
    # Underflow to zero is the correct limit everywhere below (numpy's default is to ignore it too).
    with np.errstate(under="ignore"):
        valid = (s > 0) & (k > 0) & (sig >= 0) & ~np.isnan(t) & ~np.isnan(r) & ~np.isnan(q)
        s = np.where(valid, s, 1.0)
        k = np.where(valid, k, 1.0)
        sig = np.where(valid, sig, 0.0)
        t = np.where(valid, np.maximum(t, 0.0), 0.0)
        r = np.where(valid, r, 0.0)
        q = np.where(valid, q, 0.0)
        w = np.where(call, 1.0, -1.0)
        sqt = np.sqrt(t)
        sd = sig * sqt
        dq = np.exp(-q * t)
        dr = np.exp(-r * t)
        sdq = s * dq
        kdr = k * dr
        x = np.log(s / k) + (r - q) * t
        reg = sd > MIN_TOTAL_STD
        sd_s = np.where(reg, sd, 1.0)
        d1 = np.where(reg, x / sd_s + 0.5 * sd_s, 0.0)
        d2 = d1 - np.where(reg, sd_s, 0.0)
        wx = w * x
        h = np.where(wx > 0, 1.0, np.where(wx == 0, 0.5, 0.0))
        nd1 = np.where(reg, ndtr(w * d1), h)
        nd2 = np.where(reg, ndtr(w * d2), h)
        price = np.where(
            reg, w * (sdq * nd1 - kdr * nd2), np.where(wx > 0, w * (sdq - kdr), 0.0)
        )
        price = np.maximum(price, 0.0) + 0.0
        if price_only:
            return (np.where(valid, price, np.nan),)
        pdf = np.where(reg, np.exp(-0.5 * d1 * d1) * _INV_SQRT_2PI, np.where(x == 0, _INV_SQRT_2PI, 0.0))
        sig_s = np.where(reg, sig, 1.0)
        t_s = np.where(reg, t, 1.0)
        sqt_s = np.where(reg, sqt, 1.0)
        delta = w * dq * nd1
        gamma = np.where(reg, dq * pdf / (s * sd_s), 0.0)
        vega = sdq * pdf * sqt
        theta = np.where(reg, -0.5 * sdq * pdf * sig / sqt_s, 0.0) + w * (q * sdq * nd1 - r * kdr * nd2)
        rho = w * kdr * t * nd2
        vanna = np.where(reg, -dq * pdf * d2 / sig_s, 0.5 * dq * sqt * pdf)
        volga = np.where(reg, vega * d1 * d2 / sig_s, 0.0)
        charm = w * q * dq * nd1 - np.where(reg, dq * pdf * ((r - q) / sd_s - 0.5 * d2 / t_s), 0.0)
        out = (price, delta, gamma, vega, theta, theta / DAYS_PER_YEAR, rho, vanna, volga, charm)
        return tuple(np.where(valid, o, np.nan) for o in out)


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def _check_out(arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if arr.dtype != np.float64 or arr.shape != shape or not arr.flags.c_contiguous or not arr.flags.writeable:
        raise ValueError(f"out arrays must be writeable C-contiguous float64 of shape {shape}")
    return arr.reshape(-1)


def bsm_greeks(
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    *,
    backend: Backend = "auto",
    out: BsmResult | None = None,
) -> BsmResult:
    """European BSM price and Greeks, vectorized over broadcastable inputs (Hull ch. 19, Haug 2.1).

    ``time_years`` in years, ``vol``/``rate``/``dividend_yield`` as decimals (continuously
    compounded), ``is_call`` boolean. Each field has the broadcast shape of the inputs. Units,
    sign conventions and the ``sigma sqrt(T) -> 0`` limits are in the module docstring.
    ``backend="numba"`` (also ``"auto"``) runs the parallel kernel, ``"numpy"`` the reference.
    ``out`` (numba backend only) receives the results in place and is returned.
    """
    if _resolve_backend(backend) == "numpy":
        if out is not None:
            raise ValueError("out= is supported by the numba backend only")
        return BsmResult(*_numpy_greeks(spot, strike, time_years, vol, rate, dividend_yield, is_call, False))
    shape, flat = broadcast_inputs(spot, strike, time_years, vol, rate, dividend_yield, is_call)
    if out is None:
        block = np.empty((10, math.prod(shape)), dtype=np.float64)
        result = BsmResult(*(row.reshape(shape) for row in block))
        rows = list(block)
    else:
        result = out
        rows = [_check_out(getattr(out, f.name), shape) for f in fields(BsmResult)]
    if flat[0].size:
        _greeks_kernel(*flat, *rows)
    return result


def bsm_price(
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    *,
    backend: Backend = "auto",
    out: FloatArray | None = None,
) -> FloatArray:
    """European BSM price only (Hull ch. 15/17), same inputs, limits and backends as ``bsm_greeks``."""
    if _resolve_backend(backend) == "numpy":
        if out is not None:
            raise ValueError("out= is supported by the numba backend only")
        return _numpy_greeks(spot, strike, time_years, vol, rate, dividend_yield, is_call, True)[0]
    shape, flat = broadcast_inputs(spot, strike, time_years, vol, rate, dividend_yield, is_call)
    result = np.empty(shape, dtype=np.float64) if out is None else out
    target = _check_out(result, shape)
    if target.size:
        _price_kernel(*flat, target)
    return result
