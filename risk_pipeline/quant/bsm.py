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

Two implementations agree to ~1e-13 relative: a numba kernel (``nogil``, run on threads by ``_numba.run_chunked``,
``fastmath=False``, auto-vectorized) whose normal CDF is W. J. Cody's rational Chebyshev erfc (Math. Comp. 23,
1969; ``special.py``) evaluated branch-free on the density's ``exp(-d^2/2)`` (Dekker's exact square), with polynomial
``exp``/``log`` (Cody-Waite reduction, <= 2 and 4 ulp), and a plain numpy / ``scipy.special.ndtr``
reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from risk_pipeline.quant._numba import JIT, FloatArray, inner_njit, run_chunked
from risk_pipeline.quant.special import (
    exp_minus_half_square,
    fast_exp,
    fast_log,
    norm_cdf_from_exp,
)

Backend = Literal["auto", "numba", "numpy"]

#: Total standard deviations ``sigma sqrt(T)`` at or below this are treated as exactly zero.
MIN_TOTAL_STD = 1e-100
#: Days per year for ``theta_per_day`` (QuantLib's ``thetaPerDay`` convention).
DAYS_PER_YEAR = 365.0

_INV_SQRT_2PI = 0.39894228040143267794


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
# intermediate finite), call no libm function (exp/log of ``special.py`` are polynomial, within a few
# ulp of libm) and are inlined into the kernels, so LLVM vectorizes the contiguous loops (AVX2/AVX-512).
# IEEE semantics throughout: no fastmath.
# ----------------------------------------------------------------------------------------------


@inner_njit(forceinline=True)
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


@inner_njit(forceinline=True)
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


@njit(**JIT)
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
    start: int,
    stop: int,
) -> None:
    """Fill the ten outputs at ``start .. stop-1`` (all arrays contiguous and of the same length;
    ``run_chunked``)."""
    for i in range(start, stop):
        p, de, ga, ve, th, rh, va, vo, ch = _bsm_point(spot[i], strike[i], tau[i], vol[i], rate[i], div[i], call[i])
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


@njit(**JIT)
def _price_kernel(
    spot: FloatArray,
    strike: FloatArray,
    tau: FloatArray,
    vol: FloatArray,
    rate: FloatArray,
    div: FloatArray,
    call: NDArray[np.bool_],
    price: FloatArray,
    start: int,
    stop: int,
) -> None:
    """Fill ``price`` at ``start .. stop-1`` (all inputs contiguous and of the same length; ``run_chunked``)."""
    for i in range(start, stop):
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
    s, k, t, sig, r, q = (
        np.asarray(a, dtype=np.float64) for a in (spot, strike, time_years, vol, rate, dividend_yield)
    )
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
        price = np.where(reg, w * (sdq * nd1 - kdr * nd2), np.where(wx > 0, w * (sdq - kdr), 0.0))
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
    ``backend="numba"`` (also ``"auto"``) runs the numba kernel on threads, ``"numpy"`` the reference.
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
        run_chunked(_greeks_kernel, flat[0].size, *flat, *rows)
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
        run_chunked(_price_kernel, target.size, *flat, target)
    return result
