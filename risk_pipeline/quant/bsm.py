"""Black-Scholes-Merton European option prices and Greeks with a continuous dividend yield.

Formulas (Hull, "Options, Futures, and Other Derivatives", 10th ed., ch. 15, 17 and 19; Haug, "The
Complete Guide to Option Pricing Formulas", 2nd ed. 2007, sections 1.1.6 and 2.1-2.3), with
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

Two implementations give the same numbers (to a few ulps): a numba kernel (``parallel=True``,
``fastmath=False``) whose normal CDF is W. J. Cody's rational Chebyshev erfc (Math. Comp. 23, 1969)
sharing one ``exp`` with the density, and a plain numpy / ``scipy.special.ndtr`` reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numba import njit, prange
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
# ----------------------------------------------------------------------------------------------


@njit(cache=True, fastmath=False, error_model="numpy")
def norm_cdf_from_exp(z: float, e: float) -> float:
    """``N(z)`` given ``e = exp(-z^2/2)``: Cody's (1969) erf/erfc rational approximations."""
    y = abs(z) * _INV_SQRT2
    if y <= 0.46875:
        y2 = y * y
        num = (((_A4 * y2 + _A0) * y2 + _A1) * y2 + _A2) * y2 + _A3
        den = (((y2 + _B0) * y2 + _B1) * y2 + _B2) * y2 + _B3
        return 0.5 + 0.5 * (z * _INV_SQRT2) * num / den
    if y <= 4.0:
        num = ((((((((_C8 * y + _C0) * y + _C1) * y + _C2) * y + _C3) * y + _C4) * y + _C5) * y + _C6) * y
               + _C7)
        den = (((((((y + _D0) * y + _D1) * y + _D2) * y + _D3) * y + _D4) * y + _D5) * y + _D6) * y + _D7
        ratio = num / den
    else:
        iy2 = 1.0 / (y * y)
        num = ((((_P5 * iy2 + _P0) * iy2 + _P1) * iy2 + _P2) * iy2 + _P3) * iy2 + _P4
        den = ((((iy2 + _Q0) * iy2 + _Q1) * iy2 + _Q2) * iy2 + _Q3) * iy2 + _Q4
        ratio = (_SQRT_PI_INV - iy2 * num / den) / y
    tail = 0.5 * e * ratio  # N(-|z|) = erfc(|z|/sqrt 2)/2
    return tail if z < 0.0 else 1.0 - tail


@njit(cache=True, fastmath=False, error_model="numpy")
def norm_cdf_nb(z: float) -> float:
    """Standard normal CDF ``N(z)`` in numba (Cody 1969; relative accuracy ~1e-15 in the tails)."""
    if z != z:
        return z
    if z < -40.0:
        return 0.0
    if z > 40.0:
        return 1.0
    return norm_cdf_from_exp(z, math.exp(-0.5 * z * z))


@njit(cache=True, fastmath=False, error_model="numpy", inline="always")
def _bsm_point(
    s: float, k: float, t: float, sig: float, r: float, q: float, call: bool
) -> tuple[float, float, float, float, float, float, float, float, float]:
    """Price, delta, gamma, vega, theta, rho, vanna, volga, charm of one option (module docstring)."""
    nan = math.nan
    if not (s > 0.0 and k > 0.0 and sig >= 0.0 and t == t and r == r and q == q):
        return nan, nan, nan, nan, nan, nan, nan, nan, nan
    t = max(t, 0.0)
    w = 1.0 if call else -1.0
    sqt = math.sqrt(t)
    sd = sig * sqt
    dq = math.exp(-q * t)
    dr = math.exp(-r * t)
    sdq = s * dq
    kdr = k * dr
    x = math.log(s / k) + (r - q) * t
    if sd > MIN_TOTAL_STD:
        d1 = x / sd + 0.5 * sd
        d2 = d1 - sd
        e1 = math.exp(-0.5 * d1 * d1)
        fk = sdq / kdr  # F/K = exp(x): n(d2) = n(d1) F/K
        if e1 > 1e-280 and fk < 1e280:
            e2 = e1 * fk
        else:
            e2 = math.exp(-0.5 * d2 * d2)
        nd1 = norm_cdf_from_exp(w * d1, e1)
        nd2 = norm_cdf_from_exp(w * d2, e2)
        pdf = _INV_SQRT_2PI * e1
        price = w * (sdq * nd1 - kdr * nd2)
        delta = w * dq * nd1
        gamma = dq * pdf / (s * sd)
        vega = sdq * pdf * sqt
        theta = -0.5 * sdq * pdf * sig / sqt - w * r * kdr * nd2 + w * q * sdq * nd1
        rho = w * kdr * t * nd2
        vanna = -dq * pdf * d2 / sig
        volga = vega * d1 * d2 / sig
        charm = w * q * dq * nd1 - dq * pdf * ((r - q) / sd - 0.5 * d2 / t)
        return max(price, 0.0), delta, gamma, vega, theta, rho, vanna, volga, charm
    wx = w * x
    h = 1.0 if wx > 0.0 else (0.5 if wx == 0.0 else 0.0)
    price = max(w * (sdq - kdr), 0.0) if wx > 0.0 else 0.0
    vega = sdq * sqt * _INV_SQRT_2PI if x == 0.0 else 0.0
    vanna = 0.5 * dq * sqt * _INV_SQRT_2PI if x == 0.0 else 0.0
    theta = w * h * (q * sdq - r * kdr)
    return price, w * dq * h, 0.0, vega, theta, w * kdr * t * h, vanna, 0.0, w * q * dq * h


@njit(parallel=True, cache=True, fastmath=False, error_model="numpy")
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
    tpd: FloatArray,
    rho: FloatArray,
    vanna: FloatArray,
    volga: FloatArray,
    charm: FloatArray,
) -> None:
    """Fill the ten output arrays; inputs of length 1 are broadcast (index stride 0)."""
    n = price.shape[0]
    a0 = 1 if spot.shape[0] > 1 else 0
    a1 = 1 if strike.shape[0] > 1 else 0
    a2 = 1 if tau.shape[0] > 1 else 0
    a3 = 1 if vol.shape[0] > 1 else 0
    a4 = 1 if rate.shape[0] > 1 else 0
    a5 = 1 if div.shape[0] > 1 else 0
    a6 = 1 if call.shape[0] > 1 else 0
    for i in prange(n):
        p, de, ga, ve, th, rh, va, vo, ch = _bsm_point(
            spot[i * a0], strike[i * a1], tau[i * a2], vol[i * a3], rate[i * a4], div[i * a5], call[i * a6]
        )
        price[i] = p
        delta[i] = de
        gamma[i] = ga
        vega[i] = ve
        theta[i] = th
        tpd[i] = th / 365.0
        rho[i] = rh
        vanna[i] = va
        volga[i] = vo
        charm[i] = ch


@njit(cache=True, fastmath=False, error_model="numpy", inline="always")
def bsm_price_point(s: float, k: float, t: float, sig: float, r: float, q: float, call: bool) -> float:
    """Price of one option in numba (same formula and limits as ``bsm_greeks``)."""
    if not (s > 0.0 and k > 0.0 and sig >= 0.0 and t == t and r == r and q == q):
        return math.nan
    t = max(t, 0.0)
    w = 1.0 if call else -1.0
    sd = sig * math.sqrt(t)
    sdq = s * math.exp(-q * t)
    kdr = k * math.exp(-r * t)
    x = math.log(s / k) + (r - q) * t
    if sd > MIN_TOTAL_STD:
        d1 = x / sd + 0.5 * sd
        d2 = d1 - sd
        e1 = math.exp(-0.5 * d1 * d1)
        fk = sdq / kdr
        if e1 > 1e-280 and fk < 1e280:
            e2 = e1 * fk
        else:
            e2 = math.exp(-0.5 * d2 * d2)
        price = w * (sdq * norm_cdf_from_exp(w * d1, e1) - kdr * norm_cdf_from_exp(w * d2, e2))
        return max(price, 0.0)
    if w * x > 0.0:
        return max(w * (sdq - kdr), 0.0)
    return 0.0


@njit(parallel=True, cache=True, fastmath=False, error_model="numpy")
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
    """Fill ``price``; inputs of length 1 are broadcast (index stride 0)."""
    n = price.shape[0]
    a0 = 1 if spot.shape[0] > 1 else 0
    a1 = 1 if strike.shape[0] > 1 else 0
    a2 = 1 if tau.shape[0] > 1 else 0
    a3 = 1 if vol.shape[0] > 1 else 0
    a4 = 1 if rate.shape[0] > 1 else 0
    a5 = 1 if div.shape[0] > 1 else 0
    a6 = 1 if call.shape[0] > 1 else 0
    for i in prange(n):
        price[i] = bsm_price_point(
            spot[i * a0], strike[i * a1], tau[i * a2], vol[i * a3], rate[i * a4], div[i * a5], call[i * a6]
        )


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------


def broadcast_inputs(
    *args: ArrayLike, bool_last: bool = True
) -> tuple[tuple[int, ...], list[NDArray[np.float64] | NDArray[np.bool_]]]:
    """Broadcast shape plus 1-D contiguous copies-or-views; size-1 inputs stay length 1 (stride 0).

    The last argument is converted to ``bool`` when ``bool_last`` (the ``is_call`` flag).
    """
    arrs: list[np.ndarray] = []
    for j, a in enumerate(args):
        dtype = np.bool_ if (bool_last and j == len(args) - 1) else np.float64
        arrs.append(np.asarray(a, dtype=dtype))
    shape = np.broadcast_shapes(*(a.shape for a in arrs))
    n = math.prod(shape)
    flat: list[np.ndarray] = []
    for a in arrs:
        if a.size == 1 and n != 0:
            flat.append(np.ascontiguousarray(a.reshape(1)))
        elif a.shape == shape:
            flat.append(np.ascontiguousarray(a).reshape(-1))
        else:
            flat.append(np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1))
    return shape, flat


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
        price = np.maximum(price, 0.0)
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
) -> BsmResult:
    """European BSM price and Greeks, vectorized over broadcastable inputs (Hull ch. 19, Haug 2.1).

    ``time_years`` in years, ``vol``/``rate``/``dividend_yield`` as decimals (continuously
    compounded), ``is_call`` boolean. Each field has the broadcast shape of the inputs. Units,
    sign conventions and the ``sigma sqrt(T) -> 0`` limits are in the module docstring.
    ``backend="numba"`` (also ``"auto"``) runs the parallel kernel, ``"numpy"`` the reference.
    """
    if _resolve_backend(backend) == "numpy":
        return BsmResult(*_numpy_greeks(spot, strike, time_years, vol, rate, dividend_yield, is_call, False))
    shape, flat = broadcast_inputs(spot, strike, time_years, vol, rate, dividend_yield, is_call)
    n = math.prod(shape)
    block = np.empty((10, n), dtype=np.float64)
    outs = list(block)
    if n:
        _greeks_kernel(*flat, *outs)
    return BsmResult(*(o.reshape(shape) for o in outs))


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
) -> FloatArray:
    """European BSM price only (Hull ch. 15/17), same inputs, limits and backends as ``bsm_greeks``."""
    if _resolve_backend(backend) == "numpy":
        return _numpy_greeks(spot, strike, time_years, vol, rate, dividend_yield, is_call, True)[0]
    shape, flat = broadcast_inputs(spot, strike, time_years, vol, rate, dividend_yield, is_call)
    out = np.empty(math.prod(shape), dtype=np.float64)
    if out.size:
        _price_kernel(*flat, out)
    return out.reshape(shape)

