"""American options on a stock with a continuous dividend yield: Bjerksund-Stensland approximations.

Calls use the closed-form approximations of Bjerksund & Stensland, as written in Haug, "The Complete
Guide to Option Pricing Formulas", 2nd ed. 2007, ch. 3 (sections "Bjerksund and Stensland (1993)"
and "Bjerksund and Stensland (2002)"):

* ``"bs2002"`` (default): two flat exercise boundaries ``I2`` on ``[0, t1]`` and ``I1`` on
  ``[t1, T]`` with ``t1 = (sqrt(5) - 1) T / 2``; the ``psi`` terms need the bivariate normal CDF,
  computed with Genz (2004, Statistics and Computing 14, 151-160, section 2.4) Gauss-Legendre rules.
* ``"bs1993"``: one flat boundary; identical to QuantLib's ``BjerksundStenslandApproximationEngine``
  (including its ``ln(I/F)/(sigma sqrt T) > 12.5`` "run-away boundary" switch to the European value).

Puts use the Bjerksund-Stensland put-call transformation ``P(S, K, T, r, q, sigma) =
C(K, S, T, q, r, sigma)``. When early exercise is never optimal (call with ``q <= 0`` and ``q <= r``;
put with ``r <= 0`` and ``r <= q``) the European BSM value is returned. Every result is floored at
the European value and at the immediate-exercise value ``max(w (S - K), 0)``, so it is never below
either. At ``T <= 0`` or ``sigma sqrt(T) <= MIN_TOTAL_STD`` the value is
``max(w (S - K), 0, max(w (S e^{-qT} - K e^{-rT}), 0))``. All terms carrying powers such as
``(S/I)^beta`` are combined in log space so low volatilities do not overflow.

Greeks are central finite differences of the same price (bump-and-reprice inside one numba kernel);
bump sizes are the ``*_BUMP`` constants below. Returned in ``bsm.BsmResult`` with the same units
and sign conventions as the European Greeks (theta and charm per year of calendar time passing).
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Literal

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from risk_pipeline.quant.bsm import (
    DAYS_PER_YEAR,
    BsmResult,
    FloatArray,
    broadcast_inputs,
    bsm_greeks,
    bsm_price_point,
    norm_cdf_nb,
)

Method = Literal["bs2002", "bs1993"]

#: ``sigma sqrt(T)`` at or below this uses the deterministic limit (see module docstring).
MIN_TOTAL_STD = 1e-8
#: Relative spot bump for delta, gamma, vanna, charm: ``h_S = SPOT_BUMP * S``.
SPOT_BUMP = 1e-4
#: Relative volatility bump for vega, volga, vanna: ``h_sigma = VOL_BUMP * sigma``.
VOL_BUMP = 1e-4
#: Relative time bump for theta and charm: ``h_T = TIME_BUMP * T``.
TIME_BUMP = 1e-4
#: Absolute rate bump for rho: ``h_r = RATE_BUMP``.
RATE_BUMP = 1e-5
#: ``ln(I/F)/(sigma sqrt T)`` above this means a run-away boundary: the European value is used (QuantLib).
RUNAWAY_BOUNDARY = 12.5

_METHODS = {"bs2002": 0, "bs1993": 1}
_JIT = {"cache": True, "fastmath": False, "error_model": "numpy"}
_TWO_PI = 2.0 * math.pi
_SQRT_TWO_PI = math.sqrt(2.0 * math.pi)

_GL6_X, _GL6_W = np.polynomial.legendre.leggauss(6)
_GL12_X, _GL12_W = np.polynomial.legendre.leggauss(12)
_GL20_X, _GL20_W = np.polynomial.legendre.leggauss(20)

# BS2002 always correlates its two periods with rho = +-sqrt(t1/T) = +-sqrt((sqrt(5) - 1)/2), so the
# sines of Genz's |rho| < 0.925 integrand are tabulated once.
_RHO_2002 = math.sqrt(0.5 * (math.sqrt(5.0) - 1.0))
_ASR_2002 = math.asin(_RHO_2002)
_SN_2002 = np.sin(_ASR_2002 * (1.0 - _GL20_X) * 0.5)
_SN_2002_NEG = -_SN_2002


# ----------------------------------------------------------------------------------------------
# bivariate normal CDF (Genz 2004)
# ----------------------------------------------------------------------------------------------


@njit(**_JIT)
def _bvn_tabulated(h: float, k: float, sn: FloatArray, w: FloatArray, asr: float) -> float:
    """Genz eq. (3) quadrature for ``|rho| < 0.925`` with tabulated ``sin`` values; upper-tail form."""
    hk = h * k
    hs = 0.5 * (h * h + k * k)
    acc = 0.0
    for j in range(sn.shape[0]):
        s = sn[j]
        acc += w[j] * math.exp((s * hk - hs) / (1.0 - s * s))
    return acc * asr * (0.25 / math.pi) + norm_cdf_nb(-h) * norm_cdf_nb(-k)


@njit(**_JIT)
def bivariate_normal_cdf(a: float, b: float, rho: float) -> float:
    """``P(X <= a, Y <= b)`` for standard normals with correlation ``rho`` (Genz 2004, section 2.4).

    Gauss-Legendre with 6/12/20 points for ``|rho|`` below 0.3/0.75/0.925, Drezner-Wesolowsky's
    asymptotic form above; absolute accuracy ~1e-15.
    """
    if a != a or b != b or rho != rho:
        return math.nan
    h = -a
    k = -b
    ar = abs(rho)
    if ar < 0.925:
        if ar < 0.3:
            gx, gw = _GL6_X, _GL6_W
        elif ar < 0.75:
            gx, gw = _GL12_X, _GL12_W
        else:
            gx, gw = _GL20_X, _GL20_W
        if ar == 0.0:
            return norm_cdf_nb(a) * norm_cdf_nb(b)
        asr = math.asin(rho)
        return _bvn_tabulated(h, k, np.sin(asr * (1.0 - gx) * 0.5), gw, asr)
    hk = h * k
    if rho < 0.0:
        k = -k
        hk = -hk
    bvn = 0.0
    if ar < 1.0:
        ass = (1.0 - rho) * (1.0 + rho)
        aa = math.sqrt(ass)
        bs = (h - k) * (h - k)
        c = (4.0 - hk) / 8.0
        d = (12.0 - hk) / 16.0
        asr = -(bs / ass + hk) / 2.0
        if asr > -100.0:
            bvn = aa * math.exp(asr) * (
                1.0 - c * (bs - ass) * (1.0 - d * bs / 5.0) / 3.0 + c * d * ass * ass / 5.0
            )
        if -hk < 100.0:
            bb = math.sqrt(bs)
            bvn -= math.exp(-hk / 2.0) * _SQRT_TWO_PI * norm_cdf_nb(-bb / aa) * bb * (
                1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0
            )
        aa /= 2.0
        for j in range(_GL20_X.shape[0]):
            xs = aa * (1.0 - _GL20_X[j])
            xs = xs * xs
            rs = math.sqrt(1.0 - xs)
            asr2 = -(bs / xs + hk) / 2.0
            if asr2 > -100.0:
                bvn += _GL20_W[j] * aa * math.exp(asr2) * (
                    math.exp(-hk * (1.0 - rs) / (2.0 * (1.0 + rs))) / rs - (1.0 + c * xs * (1.0 + d * xs))
                )
        bvn /= -_TWO_PI
    if rho > 0.0:
        return bvn + norm_cdf_nb(-max(h, k))
    bvn = -bvn
    if k > h:
        if h >= 0.0:
            bvn += norm_cdf_nb(-h) - norm_cdf_nb(-k)
        else:
            bvn += norm_cdf_nb(k) - norm_cdf_nb(h)
    return max(bvn, 0.0)


@njit(**_JIT)
def _bvn_2002(a: float, b: float, positive: bool) -> float:
    """``bivariate_normal_cdf(a, b, +-rho_2002)`` with the tabulated sines."""
    if positive:
        return _bvn_tabulated(-a, -b, _SN_2002, _GL20_W, _ASR_2002)
    return _bvn_tabulated(-a, -b, _SN_2002_NEG, _GL20_W, -_ASR_2002)


# ----------------------------------------------------------------------------------------------
# Bjerksund-Stensland building blocks (calls)
# ----------------------------------------------------------------------------------------------


@njit(**_JIT)
def _exp_times(log_factor: float, m: float) -> float:
    """``exp(log_factor) * m`` without overflow when a huge factor meets a tiny probability."""
    if m <= 0.0:
        return 0.0
    if abs(log_factor) < 700.0:
        return math.exp(log_factor) * m
    return math.exp(log_factor + math.log(m))


@njit(**_JIT)
def _phi(log_pre: float, s: float, t: float, gamma: float, hh: float, ii: float, r: float, b: float,
         sig: float) -> float:
    """``exp(log_pre) * phi(S, t, gamma, H, I) / S^gamma`` (Haug 2007, Bjerksund-Stensland ``phi``)."""
    v = sig * sig
    sv = sig * math.sqrt(t)
    lam = (-r + gamma * b + 0.5 * gamma * (gamma - 1.0) * v) * t
    d = -(math.log(s / hh) + (b + (gamma - 0.5) * v) * t) / sv
    kappa = 2.0 * b / v + (2.0 * gamma - 1.0)
    lis = math.log(ii / s)
    return _exp_times(log_pre + lam, norm_cdf_nb(d)) - _exp_times(
        log_pre + lam + kappa * lis, norm_cdf_nb(d - 2.0 * lis / sv)
    )


@njit(**_JIT)
def _psi(log_pre: float, s: float, t2: float, gamma: float, hh: float, i2: float, i1: float, t1: float,
         r: float, b: float, sig: float) -> float:
    """``exp(log_pre) * psi(S, T, gamma, H, I2, I1, t1) / S^gamma`` (Haug 2007, BS2002 ``psi``)."""
    v = sig * sig
    m = (b + (gamma - 0.5) * v)
    s1 = sig * math.sqrt(t1)
    s2 = sig * math.sqrt(t2)
    lsi1 = math.log(s / i1)
    l2 = math.log(i2 * i2 / (s * i1))
    e1 = (lsi1 + m * t1) / s1
    e2 = (l2 + m * t1) / s1
    e3 = (lsi1 - m * t1) / s1
    e4 = (l2 - m * t1) / s1
    f1 = (math.log(s / hh) + m * t2) / s2
    f2 = (math.log(i2 * i2 / (s * hh)) + m * t2) / s2
    f3 = (math.log(i1 * i1 / (s * hh)) + m * t2) / s2
    f4 = (math.log(s * i1 * i1 / (hh * i2 * i2)) + m * t2) / s2
    lam = (-r + gamma * b + 0.5 * gamma * (gamma - 1.0) * v) * t2
    kappa = 2.0 * b / v + (2.0 * gamma - 1.0)
    base = log_pre + lam
    return (
        _exp_times(base, _bvn_2002(-e1, -f1, True))
        - _exp_times(base + kappa * math.log(i2 / s), _bvn_2002(-e2, -f2, True))
        - _exp_times(base + kappa * math.log(i1 / s), _bvn_2002(-e3, -f3, False))
        + _exp_times(base + kappa * math.log(i1 / i2), _bvn_2002(-e4, -f4, False))
    )


@njit(**_JIT)
def _beta(r: float, b: float, sig: float) -> float:
    v = sig * sig
    return (0.5 - b / v) + math.sqrt((b / v - 0.5) ** 2 + 2.0 * r / v)


@njit(**_JIT)
def _bs1993_call(s: float, k: float, t: float, r: float, q: float, sig: float) -> float:
    """Bjerksund-Stensland (1993) call as in QuantLib's engine; NaN means "use the European value"."""
    b = r - q
    beta = _beta(r, b, sig)
    b_inf = beta / (beta - 1.0) * k
    b0 = k if b == r else max(k, r / (r - b) * k)
    ht = -(b * t + 2.0 * sig * math.sqrt(t)) * b0 / (b_inf - b0)
    ii = b0 + (b_inf - b0) * (1.0 - math.exp(ht))
    if not ii >= k:
        return math.nan
    if s >= ii:
        return s - k
    if math.log(ii / s) - b * t > RUNAWAY_BOUNDARY * sig * math.sqrt(t):  # ln(I/F) / (sigma sqrt T)
        return math.nan
    lsi = math.log(s / ii)
    ls = math.log(s)
    return (
        (ii - k) * (math.exp(beta * lsi) - _phi(beta * lsi, s, t, beta, ii, ii, r, b, sig))
        + _phi(ls, s, t, 1.0, ii, ii, r, b, sig)
        - _phi(ls, s, t, 1.0, k, ii, r, b, sig)
        - k * _phi(0.0, s, t, 0.0, ii, ii, r, b, sig)
        + k * _phi(0.0, s, t, 0.0, k, ii, r, b, sig)
    )


@njit(**_JIT)
def _bs2002_call(s: float, k: float, t: float, r: float, q: float, sig: float) -> float:
    """Bjerksund-Stensland (2002) call (Haug 2007); NaN means "use the European value"."""
    b = r - q
    t1 = 0.5 * (math.sqrt(5.0) - 1.0) * t
    beta = _beta(r, b, sig)
    b_inf = beta / (beta - 1.0) * k
    b0 = k if b == r else max(k, r / (r - b) * k)
    scale = k * k / ((b_inf - b0) * b0)
    i1 = b0 + (b_inf - b0) * (1.0 - math.exp(-(b * t1 + 2.0 * sig * math.sqrt(t1)) * scale))
    i2 = b0 + (b_inf - b0) * (1.0 - math.exp(-(b * t + 2.0 * sig * math.sqrt(t)) * scale))
    if not (i1 >= k and i2 >= k):
        return math.nan
    if s >= i2:
        return s - k
    if math.log(i2 / s) - b * t > RUNAWAY_BOUNDARY * sig * math.sqrt(t):
        return math.nan
    ls = math.log(s)
    l1 = beta * math.log(s / i1)  # log of alpha1 S^beta / (I1 - K)
    l2 = beta * math.log(s / i2)
    return (
        (i2 - k) * (math.exp(l2) - _phi(l2, s, t1, beta, i2, i2, r, b, sig))
        + _phi(ls, s, t1, 1.0, i2, i2, r, b, sig)
        - _phi(ls, s, t1, 1.0, i1, i2, r, b, sig)
        - k * _phi(0.0, s, t1, 0.0, i2, i2, r, b, sig)
        + k * _phi(0.0, s, t1, 0.0, i1, i2, r, b, sig)
        + (i1 - k) * _phi(l1, s, t1, beta, i1, i2, r, b, sig)
        - (i1 - k) * _psi(l1, s, t, beta, i1, i2, i1, t1, r, b, sig)
        + _psi(ls, s, t, 1.0, i1, i2, i1, t1, r, b, sig)
        - _psi(ls, s, t, 1.0, k, i2, i1, t1, r, b, sig)
        - k * _psi(0.0, s, t, 0.0, i1, i2, i1, t1, r, b, sig)
        + k * _psi(0.0, s, t, 0.0, k, i2, i1, t1, r, b, sig)
    )


@njit(**_JIT)
def american_price_point(s: float, k: float, t: float, sig: float, r: float, q: float, call: bool,
                         method: int) -> float:
    """American price of one option (``method`` 0 = BS2002, 1 = BS1993); module docstring rules."""
    if not (s > 0.0 and k > 0.0 and sig >= 0.0 and t == t and r == r and q == q):
        return math.nan
    t = max(t, 0.0)
    euro = bsm_price_point(s, k, t, sig, r, q, call)
    intrinsic = max(s - k, 0.0) if call else max(k - s, 0.0)
    floor = max(euro, intrinsic)
    if sig * math.sqrt(t) <= MIN_TOTAL_STD:
        return floor
    # put-call transformation: P(S, K, T, r, q) = C(K, S, T, q, r)
    cs, ck, cr, cq = (s, k, r, q) if call else (k, s, q, r)
    if cq <= 0.0 and cq <= cr:
        return floor  # early exercise never optimal
    approx = _bs2002_call(cs, ck, t, cr, cq, sig) if method == 0 else _bs1993_call(cs, ck, t, cr, cq, sig)
    if approx == approx and approx < math.inf:
        return max(approx, floor)
    return floor


@njit(parallel=True, **_JIT)
def _price_kernel(spot: FloatArray, strike: FloatArray, tau: FloatArray, vol: FloatArray, rate: FloatArray,
                  div: FloatArray, call: NDArray[np.bool_], method: int, out: FloatArray) -> None:
    for i in prange(out.shape[0]):
        out[i] = american_price_point(spot[i], strike[i], tau[i], vol[i], rate[i], div[i], call[i], method)


@njit(parallel=True, **_JIT)
def _greeks_kernel(spot: FloatArray, strike: FloatArray, tau: FloatArray, vol: FloatArray, rate: FloatArray,
                   div: FloatArray, call: NDArray[np.bool_], method: int, out: FloatArray) -> None:
    """Bump-and-reprice central differences into the rows of ``out`` in ``BsmResult`` field order."""
    for i in prange(spot.shape[0]):
        s, k, t, sig, r, q, c = spot[i], strike[i], tau[i], vol[i], rate[i], div[i], call[i]
        p0 = american_price_point(s, k, t, sig, r, q, c, method)
        out[0, i] = p0
        hs = SPOT_BUMP * s
        hv = VOL_BUMP * sig
        ht = TIME_BUMP * t
        hr = RATE_BUMP
        pu = american_price_point(s + hs, k, t, sig, r, q, c, method)
        pd = american_price_point(s - hs, k, t, sig, r, q, c, method)
        vu = american_price_point(s, k, t, sig + hv, r, q, c, method)
        vd = american_price_point(s, k, t, sig - hv, r, q, c, method)
        tu = american_price_point(s, k, t + ht, sig, r, q, c, method)
        td = american_price_point(s, k, t - ht, sig, r, q, c, method)
        ru = american_price_point(s, k, t, sig, r + hr, q, c, method)
        rd = american_price_point(s, k, t, sig, r - hr, q, c, method)
        out[1, i] = (pu - pd) / (2.0 * hs)
        out[2, i] = (pu - 2.0 * p0 + pd) / (hs * hs)
        out[3, i] = (vu - vd) / (2.0 * hv)
        out[4, i] = -(tu - td) / (2.0 * ht)
        out[5, i] = out[4, i] / DAYS_PER_YEAR
        out[6, i] = (ru - rd) / (2.0 * hr)
        out[7, i] = (
            american_price_point(s + hs, k, t, sig + hv, r, q, c, method)
            - american_price_point(s + hs, k, t, sig - hv, r, q, c, method)
            - american_price_point(s - hs, k, t, sig + hv, r, q, c, method)
            + american_price_point(s - hs, k, t, sig - hv, r, q, c, method)
        ) / (4.0 * hs * hv)
        out[8, i] = (vu - 2.0 * p0 + vd) / (hv * hv)
        out[9, i] = -(
            american_price_point(s + hs, k, t + ht, sig, r, q, c, method)
            - american_price_point(s + hs, k, t - ht, sig, r, q, c, method)
            - american_price_point(s - hs, k, t + ht, sig, r, q, c, method)
            + american_price_point(s - hs, k, t - ht, sig, r, q, c, method)
        ) / (4.0 * hs * ht)


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def _method_code(method: Method) -> int:
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(_METHODS)}")
    return _METHODS[method]


def american_price(
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    *,
    method: Method = "bs2002",
) -> FloatArray:
    """American price by Bjerksund-Stensland (module docstring), vectorized over broadcast inputs.

    Same argument order and units as ``bsm.bsm_price``; never below the European price or intrinsic.
    """
    code = _method_code(method)
    shape, flat = broadcast_inputs(spot, strike, time_years, vol, rate, dividend_yield, is_call)
    out = np.empty(math.prod(shape), dtype=np.float64)
    if out.size:
        _price_kernel(*flat, code, out)
    return out.reshape(shape)


def american_greeks(
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    *,
    method: Method = "bs2002",
) -> BsmResult:
    """American price and finite-difference Greeks (bumps in the module constants) as a ``BsmResult``.

    Central differences of ``american_price``: ``delta, gamma`` in spot, ``vega, volga`` in vol,
    ``theta = -dV/dT``, ``rho`` in rate, ``vanna`` (spot x vol) and ``charm = -d delta/dT``
    (spot x time) cross differences. Where ``sigma sqrt(T) <= MIN_TOTAL_STD`` the analytic BSM limits
    of ``bsm.bsm_greeks`` are returned (price still the American value).
    """
    code = _method_code(method)
    shape, flat = broadcast_inputs(spot, strike, time_years, vol, rate, dividend_yield, is_call)
    n = math.prod(shape)
    block = np.empty((10, n), dtype=np.float64)
    if n:
        _greeks_kernel(*flat, code, block)
        with np.errstate(invalid="ignore"):
            tiny = flat[3] * np.sqrt(np.maximum(flat[2], 0.0)) <= MIN_TOTAL_STD
        if np.any(tiny):
            idx = np.flatnonzero(tiny)
            lim = bsm_greeks(*(f[idx] for f in flat))
            for row, f in enumerate(fields(BsmResult)):
                if f.name != "price":
                    block[row, idx] = getattr(lim, f.name)
    return BsmResult(*(row.reshape(shape) for row in block))
