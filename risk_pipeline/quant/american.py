"""American options on a stock with a continuous dividend yield: the exact engine and the
Bjerksund-Stensland approximations.

``method="alo"`` (the default everywhere): the exact engine of ``american_alo.py`` (Andersen, Lake and
Offengeld 2016: the exercise-boundary integral equation on Chebyshev nodes, solved by Newton's method;
the double-boundary regime by ``american_fd.py``). Its measured error against QuantLib's
``QdFpAmericanEngine`` high-precision scheme is in ``risk_pipeline_tests/quant/test_american_exact.py`` and
``bench/bench_pricing.py``.

The Bjerksund-Stensland methods are closed-form approximations, kept as fast alternatives (e.g. inside
scenario loops); BS2002 prices up to about 0.8 % below the exact value (long-dated puts; measured in
``bench/bench_pricing.py``). Calls use the formulas of Haug, "The Complete Guide to Option Pricing
Formulas", 2nd ed. 2007, ch. 3 (sections "Bjerksund and Stensland (1993)" and "Bjerksund and
Stensland (2002)"):

* ``"bs2002"``: two flat exercise boundaries ``I2`` on ``[0, t1]`` and ``I1`` on
  ``[t1, T]`` with ``t1 = (sqrt(5) - 1) T / 2``; the ``psi`` terms need the bivariate normal CDF,
  computed with Genz (2004, Statistics and Computing 14, 151-160, section 2.4) Gauss-Legendre rules.
  Evaluated by a vectorized lane kernel (``_bs2002_lanes``: 64 calls at a time, polynomial
  ``exp``/``log`` of ``special.py``, 14-point rule at BS2002's fixed ``|rho| = rho_2002``), ~1 us a call
  per core; same result whether priced one by one or in arrays.
* ``"bs2002_reference"``: the same formula as a direct scalar transcription (libm ``exp``/``log``,
  Genz's 20-point rule), ~4 us a call; the reference of the lane kernel, which it matches to
  < 4e-15 of the strike (T <= 5 y, 1 % <= sigma <= 150 %, -2 % <= r, q <= 12 %).
* ``"bs1993"``: one flat boundary; identical to QuantLib's ``BjerksundStenslandApproximationEngine``
  (including its ``ln(I/F)/(sigma sqrt T) > 12.5`` "run-away boundary" switch to the European value).

Bjerksund-Stensland puts use the put-call transformation ``P(S, K, T, r, q, sigma) =
C(K, S, T, q, r, sigma)``. When early exercise is never optimal (call with ``q <= 0`` and ``q <= r``;
put with ``r <= 0`` and ``r <= q``) the European BSM value is returned. Every result is floored at
the European value and at the immediate-exercise value ``max(w (S - K), 0)``, so it is never below
either. At ``T <= 0`` or ``sigma sqrt(T) <= MIN_TOTAL_STD`` the value is
``max(w (S - K), 0, max(w (S e^{-qT} - K e^{-rT}), 0))``. All terms carrying powers such as
``(S/I)^beta`` are combined in log space so low volatilities do not overflow.

Bjerksund-Stensland Greeks are central finite differences of the same price (bump-and-reprice inside
one numba kernel, the 17 repricings of an option through the lane kernel together); bump sizes are the
``*_BUMP`` constants below (the exact engine's Greeks: ``american_greeks``). Returned in
``bsm.BsmResult`` with the same units and sign conventions as the European Greeks (theta and charm
per year of calendar time passing).
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Literal

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import JIT, BoolArray, FloatArray, inner_njit, run_chunked
from risk_pipeline.quant.american_alo import NEWTON_STEP_TOL, NEWTON_STEP_TOL_GREEKS, american_points
from risk_pipeline.quant.bsm import (
    DAYS_PER_YEAR,
    BsmResult,
    broadcast_inputs,
    bsm_greeks,
    bsm_price_point,
)
from risk_pipeline.quant.special import (
    exp_minus_half_square,
    fast_exp,
    fast_log,
    norm_cdf_from_exp,
    norm_cdf_nb,
)

Method = Literal["alo", "bs2002", "bs1993", "bs2002_reference"]

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

_METHODS = {"bs2002": 0, "bs1993": 1, "bs2002_reference": 2, "alo": 3}
#: Name of each method as recorded on output rows (``model`` / ``pricing_model`` columns).
MODEL_NAMES = {
    "alo": "american_alo_exact",
    "bs2002": "bjerksund_stensland_2002",
    "bs1993": "bjerksund_stensland_1993",
    "bs2002_reference": "bjerksund_stensland_2002",
}
#: The default method: the exact engine of ``american_alo.py``.
DEFAULT_METHOD: Method = "alo"
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


@inner_njit()
def _bvn_tabulated(h: float, k: float, sn: FloatArray, w: FloatArray, asr: float) -> float:
    """Genz eq. (3) quadrature for ``|rho| < 0.925`` with tabulated ``sin`` values; upper-tail form."""
    hk = h * k
    hs = 0.5 * (h * h + k * k)
    acc = 0.0
    for j in range(sn.shape[0]):
        s = sn[j]
        acc += w[j] * math.exp((s * hk - hs) / (1.0 - s * s))
    return acc * asr * (0.25 / math.pi) + norm_cdf_nb(-h) * norm_cdf_nb(-k)


@njit(**JIT)
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
            bvn = aa * math.exp(asr) * (1.0 - c * (bs - ass) * (1.0 - d * bs / 5.0) / 3.0 + c * d * ass * ass / 5.0)
        if -hk < 100.0:
            bb = math.sqrt(bs)
            bvn -= (
                math.exp(-hk / 2.0)
                * _SQRT_TWO_PI
                * norm_cdf_nb(-bb / aa)
                * bb
                * (1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0)
            )
        aa /= 2.0
        for j in range(_GL20_X.shape[0]):
            xs = aa * (1.0 - _GL20_X[j])
            xs = xs * xs
            rs = math.sqrt(1.0 - xs)
            asr2 = -(bs / xs + hk) / 2.0
            if asr2 > -100.0:
                bvn += (
                    _GL20_W[j]
                    * aa
                    * math.exp(asr2)
                    * (math.exp(-hk * (1.0 - rs) / (2.0 * (1.0 + rs))) / rs - (1.0 + c * xs * (1.0 + d * xs)))
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


@njit(**JIT)
def _bvn_2002(a: float, b: float, positive: bool) -> float:
    """``bivariate_normal_cdf(a, b, +-rho_2002)`` with the tabulated sines."""
    if positive:
        return _bvn_tabulated(-a, -b, _SN_2002, _GL20_W, _ASR_2002)
    return _bvn_tabulated(-a, -b, _SN_2002_NEG, _GL20_W, -_ASR_2002)


# ----------------------------------------------------------------------------------------------
# Bjerksund-Stensland building blocks (calls)
# ----------------------------------------------------------------------------------------------


@inner_njit()
def _exp_times(log_factor: float, m: float) -> float:
    """``exp(log_factor) * m`` without overflow when a huge factor meets a tiny probability."""
    if m <= 0.0:
        return 0.0
    if abs(log_factor) < 700.0:
        return math.exp(log_factor) * m
    return math.exp(log_factor + math.log(m))


@inner_njit()
def _phi(
    log_pre: float, s: float, t: float, gamma: float, hh: float, ii: float, r: float, b: float, sig: float
) -> float:
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


@inner_njit()
def _psi(
    log_pre: float,
    s: float,
    t2: float,
    gamma: float,
    hh: float,
    i2: float,
    i1: float,
    t1: float,
    r: float,
    b: float,
    sig: float,
) -> float:
    """``exp(log_pre) * psi(S, T, gamma, H, I2, I1, t1) / S^gamma`` (Haug 2007, BS2002 ``psi``)."""
    v = sig * sig
    m = b + (gamma - 0.5) * v
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
    no, yes = np.bool_(False), np.bool_(True)  # not literals: one compiled signature of _bvn_2002
    return (
        _exp_times(base, _bvn_2002(-e1, -f1, yes))
        - _exp_times(base + kappa * math.log(i2 / s), _bvn_2002(-e2, -f2, yes))
        - _exp_times(base + kappa * math.log(i1 / s), _bvn_2002(-e3, -f3, no))
        + _exp_times(base + kappa * math.log(i1 / i2), _bvn_2002(-e4, -f4, no))
    )


@inner_njit()
def _beta(r: float, b: float, sig: float) -> float:
    v = sig * sig
    return (0.5 - b / v) + math.sqrt((b / v - 0.5) ** 2 + 2.0 * r / v)


@inner_njit()
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


@inner_njit()
def _bs2002_call_reference(s: float, k: float, t: float, r: float, q: float, sig: float) -> float:
    """Bjerksund-Stensland (2002) call as a direct scalar transcription of Haug (2007): libm ``exp`` and
    ``log``, Genz's 20-point rule (``_bvn_2002``). The reference of the lane kernel (method
    ``"bs2002_reference"``); NaN means "use the European value"."""
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


# ----------------------------------------------------------------------------------------------
# Bjerksund-Stensland (2002) calls, lane by lane
#
# One BS2002 call needs 6 ``phi`` terms (12 normal CDFs) and 5 ``psi`` terms (20 bivariate normals).
# ``_bs2002_lanes`` evaluates up to ``_LANES`` calls at once, pass by pass over a scratch block of
# rows (one value per lane): boundaries; logarithms; the ``phi``/``psi`` arguments; the 52 normal
# CDFs; Genz's sums; the 33 terms ``exp(log prefactor) x probability``; their sum. Every pass is a
# branch-free loop over the lanes with the polynomial ``fast_exp``/``fast_log`` of ``special.py``, so
# LLVM vectorizes it (AVX2 / AVX-512, no fastmath), and each of those is inlined at one place only
# (numba's inlining dominates the compile time). A lane's value comes from the same IEEE operations
# whatever the other lanes hold, so prices do not depend on how calls are batched; the scalar
# ``american_price_point`` runs the same kernel on one lane.
#
# The bivariate normals all have ``rho = +-rho_2002``; Genz's ``|rho| < 0.925`` form then reaches
# full double precision with 14 Gauss-Legendre points instead of 20 (largest absolute error 2.2e-16
# against a 200-point rule over ``|h|, |k| <= 9``; BS2002 prices move by < 1.2e-15 of the strike).
# ----------------------------------------------------------------------------------------------

#: Calls evaluated together by ``_bs2002_lanes`` (row length of its scratch block).
_LANES = 64
#: Gauss-Legendre points of the bivariate normals at ``rho = +-rho_2002``.
BVN_POINTS = 14
_NB = 20  # bivariate normals per BS2002 call: 5 psi terms x 4
# scratch rows: call inputs (after the put-call transformation), result, per-call constants
_R_S, _R_K, _R_T, _R_R, _R_Q, _R_SIG, _R_OUT, _R_ST, _R_ACC = range(9)
_R_BETA, _R_B, _R_V, _R_T1, _R_S1, _R_S2, _R_C1, _R_C2 = range(9, 17)
_R_X1, _R_X2 = 17, 18  # exponents of the two boundaries, then the exponentials
_R_LS, _R_LK, _R_L1, _R_L2 = 19, 20, 21, 22  # S, K, I1, I2, then their logarithms
_R_E2 = 23  # probability 1 of the term alpha2 S^beta = (I2 - K) exp(lb2)
_R_D = 24  # 12 rows: phi CDF arguments; then _NB of -h and _NB of -k: 52 rows of CDF arguments
_R_H = _R_D + 12
_R_KK = _R_H + _NB
_R_LE2 = _R_KK + _NB  # 33 log prefactors, row for row with the probabilities _R_E2 .. _R_H + _NB
_R_PL = _R_LE2 + 1
_R_LF = _R_PL + 12
_R_HK = _R_LF + _NB  # _NB rows: +-h k
_R_HS = _R_HK + _NB  # _NB rows: (h^2 + k^2) / 2
_NROWS = _R_HS + _NB
_T1_FRACTION = 0.5 * (math.sqrt(5.0) - 1.0)
_GLB_X, _GLB_W = np.polynomial.legendre.leggauss(BVN_POINTS)
_SNB = np.sin(_ASR_2002 * (1.0 - _GLB_X) * 0.5)
_BVN_C = _ASR_2002 * (0.25 / math.pi)
# Haug's BS2002 call is (I2 - K)(alpha2 - phi_0) + phi_1 - phi_2 - K phi_3 + K phi_4 + (I1 - K) phi_5
# - (I1 - K) psi_0 + psi_1 - psi_2 - K psi_3 + K psi_4 with alpha2 = (S / I2)^beta, phi_j = phi(S, t1, gamma_j,
# H_j, I2) and psi_j = psi(S, T, gamma_j, H_j, I2, I1, t1), each times exp(log_pre_j) / S^gamma_j:
#   phi: gamma = beta, 1, 1, 0, 0, beta; H = I2, I2, I1, I2, I1, I1; log_pre = beta ln(S/I2), ln S, ln S, 0, 0,
#        beta ln(S/I1);
#   psi: gamma = beta, 1, 1, 0, 0; H = I1, I1, K, I1, K; log_pre = beta ln(S/I1), ln S, ln S, 0, 0.
# Coded with 0/1 coefficients (exact in floating point): gamma = g_beta beta + g_one, log_pre = lp_x ln S +
# lp_beta beta ln(S / I), ln H = h_1 ln I1 + h_2 ln I2 + h_k ln K.
_PHI_COEF = np.array(
    [  # rows g_beta, g_one, lp_x, lp_beta, h_1, h_2, (I of lp_beta is I1)
        [1, 0, 0, 0, 0, 1],
        [0, 1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0, 0],
        [1, 0, 0, 0, 0, 1],
        [0, 0, 1, 0, 1, 1],
        [1, 1, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 1],
    ],
    dtype=np.float64,
)
_PSI_COEF = np.array(
    [  # rows g_beta, g_one, lp_x, lp_beta (I = I1), h_1, h_k
        [1, 0, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 0, 1, 0],
        [0, 0, 1, 0, 1],
    ],
    dtype=np.float64,
)
#: Constant tables of ``_bs2002_lanes``: rows 0-2 Genz's ``A_j``, ``B_j`` (exponent ``hk A_j - hs B_j``)
#: and weights, rows 3-9 ``_PHI_COEF``, rows 10-15 ``_PSI_COEF`` (``BVN_POINTS >= 6`` columns).
_TABLES = np.zeros((16, BVN_POINTS))
_TABLES[0] = _SNB / (1.0 - _SNB * _SNB)
_TABLES[1] = 1.0 / (1.0 - _SNB * _SNB)
_TABLES[2] = _GLB_W
_TABLES[3:10, :6] = _PHI_COEF
_TABLES[10:16, :5] = _PSI_COEF


@inner_njit()
def _bs2002_lanes(ws: FloatArray, n: int, nb: int, tab: FloatArray) -> None:
    """BS2002 calls (Haug 2007) of lanes ``0 .. n-1`` of the flat scratch ``ws`` (row ``i`` is
    ``ws[i * _LANES: i * _LANES + n]``; inputs in rows ``_R_S .. _R_SIG``) into row ``_R_OUT``: ``S - K``
    in the exercise region, NaN where the European value is to be used. ``nb`` is ``_NB`` and ``tab``
    ``_TABLES``, arguments so that LLVM does not unroll the loops over them (compile time).
    """
    ld = _LANES
    ngl = tab.shape[1]
    for lane in range(n):  # pass 1: per-call constants, exponents of the boundaries
        k = ws[_R_K * ld + lane]
        t = ws[_R_T * ld + lane]
        r = ws[_R_R * ld + lane]
        sig = ws[_R_SIG * ld + lane]
        b = r - ws[_R_Q * ld + lane]
        v = sig * sig
        bv = b / v
        beta = (0.5 - bv) + math.sqrt((bv - 0.5) * (bv - 0.5) + 2.0 * r / v)
        b_inf = beta / (beta - 1.0) * k
        y = r / (r - b) * k
        b0 = y if (b != r) & (y > k) else k  # max(K, r / (r - b) K), K when b == r
        scale = k * k / ((b_inf - b0) * b0)
        t1 = _T1_FRACTION * t
        sq1 = math.sqrt(t1)
        sq2 = math.sqrt(t)
        ws[_R_BETA * ld + lane] = beta
        ws[_R_B * ld + lane] = b
        ws[_R_V * ld + lane] = v
        ws[_R_T1 * ld + lane] = t1
        ws[_R_S1 * ld + lane] = sig * sq1
        ws[_R_S2 * ld + lane] = sig * sq2
        ws[_R_C1 * ld + lane] = b0  # boundaries I = b0 + (b_inf - b0)(1 - exp(X)), finished in pass 3
        ws[_R_C2 * ld + lane] = b_inf - b0
        ws[_R_X1 * ld + lane] = -(b * t1 + 2.0 * sig * sq1) * scale
        ws[_R_X2 * ld + lane] = -(b * t + 2.0 * sig * sq2) * scale
    for row in range(2):  # pass 2 (row views: LLVM vectorizes only constant offsets into ws)
        x_row = ws[(_R_X1 + row) * ld : (_R_X1 + row + 1) * ld]
        for lane in range(n):
            x_row[lane] = fast_exp(x_row[lane])
    for lane in range(n):  # pass 3: the flat boundaries I1 (on [t1, T]) and I2 (on [0, t1])
        b0 = ws[_R_C1 * ld + lane]
        span = ws[_R_C2 * ld + lane]
        ws[_R_LS * ld + lane] = ws[_R_S * ld + lane]
        ws[_R_LK * ld + lane] = ws[_R_K * ld + lane]
        ws[_R_L1 * ld + lane] = b0 + span * (1.0 - ws[_R_X1 * ld + lane])
        ws[_R_L2 * ld + lane] = b0 + span * (1.0 - ws[_R_X2 * ld + lane])
    for lane in range(n):  # status: 2 = European value, 1 = exercise, 0 = the formula
        s = ws[_R_S * ld + lane]
        k = ws[_R_K * ld + lane]
        i1 = ws[_R_L1 * ld + lane]
        i2 = ws[_R_L2 * ld + lane]
        ws[_R_C1 * ld + lane] = i1 - k
        ws[_R_C2 * ld + lane] = i2 - k
        valid = (i1 >= k) & (i2 >= k)
        ws[_R_ST * ld + lane] = 2.0 if not valid else (1.0 if s >= i2 else 0.0)
    for row in range(4):  # pass 4: ln S, ln K, ln I1, ln I2
        l_row = ws[(_R_LS + row) * ld : (_R_LS + row + 1) * ld]
        for lane in range(n):
            l_row[lane] = fast_log(l_row[lane])
    for lane in range(n):  # run-away boundary: ln(I/F) / (sigma sqrt T) > 12.5 (QuantLib)
        runaway = (ws[_R_L2 * ld + lane] - ws[_R_LS * ld + lane]) - ws[_R_B * ld + lane] * ws[
            _R_T * ld + lane
        ] > RUNAWAY_BOUNDARY * ws[_R_SIG * ld + lane] * math.sqrt(ws[_R_T * ld + lane])
        st = ws[_R_ST * ld + lane]
        ws[_R_ST * ld + lane] = 2.0 if (st == 0.0) & runaway else st
        ok = ws[_R_ST * ld + lane] == 0.0
        ws[_R_E2 * ld + lane] = 1.0
        lb2 = ws[_R_BETA * ld + lane] * (ws[_R_LS * ld + lane] - ws[_R_L2 * ld + lane])
        ws[_R_LE2 * ld + lane] = lb2 if ok else 0.0  # log of alpha2 S^beta / (I2 - K)
    for term in range(6):  # pass 5: phi(S, t1, gamma, H, I2) = exp(pl0) N(d0) - exp(pl1) N(d1) (Haug 2007)
        g_beta = tab[3, term]
        g_one = tab[4, term]
        lp_x = tab[5, term]
        lp_beta = tab[6, term]
        h1 = tab[7, term]
        h2 = tab[8, term]
        lb_on_1 = tab[9, term]
        d_rows = ws[(_R_D + 2 * term) * ld : (_R_D + 2 * term + 2) * ld]
        p_rows = ws[(_R_PL + 2 * term) * ld : (_R_PL + 2 * term + 2) * ld]
        for lane in range(n):
            ok = ws[_R_ST * ld + lane] == 0.0
            r = ws[_R_R * ld + lane]
            b = ws[_R_B * ld + lane]
            v = ws[_R_V * ld + lane]
            t1 = ws[_R_T1 * ld + lane]
            s1 = ws[_R_S1 * ld + lane]
            beta = ws[_R_BETA * ld + lane]
            x = ws[_R_LS * ld + lane]
            l1 = ws[_R_L1 * ld + lane]
            l2 = ws[_R_L2 * ld + lane]
            gamma = g_beta * beta + g_one
            log_pre = lp_x * x + lp_beta * (beta * (x - (lb_on_1 * l1 + (1.0 - lb_on_1) * l2)))
            lh = h1 * l1 + h2 * l2
            lam = (-r + gamma * b + 0.5 * gamma * (gamma - 1.0) * v) * t1
            d = -((x - lh) + (b + (gamma - 0.5) * v) * t1) / s1
            kappa = 2.0 * b / v + (2.0 * gamma - 1.0)
            lis = l2 - x
            d_rows[lane] = d if ok else 0.0
            d_rows[ld + lane] = d - 2.0 * lis / s1 if ok else 0.0
            p_rows[lane] = log_pre + lam if ok else 0.0
            p_rows[ld + lane] = log_pre + lam + kappa * lis if ok else 0.0
    for term in range(5):  # pass 6: psi(S, T, gamma, H, I2, I1, t1): Genz's -h, -k and log prefactors
        g_beta = tab[10, term]
        g_one = tab[11, term]
        lp_x = tab[12, term]
        lp_beta = tab[13, term]
        h1 = tab[14, term]
        h_k = tab[15, term]
        rows = ws[(_R_H + 4 * term) * ld : (_R_H + 4 * term + 4) * ld]  # one view per loop: few alias checks
        for lane in range(n):
            ok = ws[_R_ST * ld + lane] == 0.0
            v = ws[_R_V * ld + lane]
            t1 = ws[_R_T1 * ld + lane]
            s1 = ws[_R_S1 * ld + lane]
            x = ws[_R_LS * ld + lane]
            l1 = ws[_R_L1 * ld + lane]
            l2 = ws[_R_L2 * ld + lane]
            m = ws[_R_B * ld + lane] + ((g_beta * ws[_R_BETA * ld + lane] + g_one) - 0.5) * v
            u1 = x - l1  # ln(S / I1)
            u2 = (2.0 * l2 - x) - l1  # ln(I2^2 / (S I1))
            rows[lane] = -((u1 + m * t1) / s1) if ok else 0.0
            rows[ld + lane] = -((u2 + m * t1) / s1) if ok else 0.0
            rows[2 * ld + lane] = -((u1 - m * t1) / s1) if ok else 0.0
            rows[3 * ld + lane] = -((u2 - m * t1) / s1) if ok else 0.0
        rows = ws[(_R_KK + 4 * term) * ld : (_R_KK + 4 * term + 4) * ld]
        for lane in range(n):
            ok = ws[_R_ST * ld + lane] == 0.0
            t = ws[_R_T * ld + lane]
            v = ws[_R_V * ld + lane]
            s2 = ws[_R_S2 * ld + lane]
            x = ws[_R_LS * ld + lane]
            l1 = ws[_R_L1 * ld + lane]
            l2 = ws[_R_L2 * ld + lane]
            m = ws[_R_B * ld + lane] + ((g_beta * ws[_R_BETA * ld + lane] + g_one) - 0.5) * v
            lh = h1 * l1 + h_k * ws[_R_LK * ld + lane]
            rows[lane] = -(((x - lh) + m * t) / s2) if ok else 0.0
            rows[ld + lane] = -((((2.0 * l2 - x) - lh) + m * t) / s2) if ok else 0.0
            rows[2 * ld + lane] = -((((2.0 * l1 - x) - lh) + m * t) / s2) if ok else 0.0
            rows[3 * ld + lane] = -(((((x + 2.0 * l1) - lh) - 2.0 * l2) + m * t) / s2) if ok else 0.0
        rows = ws[(_R_LF + 4 * term) * ld : (_R_LF + 4 * term + 4) * ld]
        for lane in range(n):
            ok = ws[_R_ST * ld + lane] == 0.0
            b = ws[_R_B * ld + lane]
            v = ws[_R_V * ld + lane]
            beta = ws[_R_BETA * ld + lane]
            x = ws[_R_LS * ld + lane]
            l1 = ws[_R_L1 * ld + lane]
            l2 = ws[_R_L2 * ld + lane]
            gamma = g_beta * beta + g_one
            lam = (-ws[_R_R * ld + lane] + gamma * b + 0.5 * gamma * (gamma - 1.0) * v) * ws[_R_T * ld + lane]
            kappa = 2.0 * b / v + (2.0 * gamma - 1.0)
            base = (lp_x * x + lp_beta * (beta * (x - l1))) + lam
            rows[lane] = base if ok else 0.0
            rows[ld + lane] = base + kappa * (l2 - x) if ok else 0.0
            rows[2 * ld + lane] = base + kappa * (l1 - x) if ok else 0.0
            rows[3 * ld + lane] = base + kappa * (l1 - l2) if ok else 0.0
    for e in range(nb):  # pass 7: Genz's hk (sign of rho: + for the first two of every four) and hs
        sgn = 1.0 if (e & 2) == 0 else -1.0
        h_row = ws[(_R_H + e) * ld : (_R_H + e + 1) * ld]
        k_row = ws[(_R_KK + e) * ld : (_R_KK + e + 1) * ld]
        hk_row = ws[(_R_HK + e) * ld : (_R_HK + e + 1) * ld]
        hs_row = ws[(_R_HS + e) * ld : (_R_HS + e + 1) * ld]
        for lane in range(n):
            hv = h_row[lane]
            kv = k_row[lane]
            hk_row[lane] = sgn * (hv * kv)
            hs_row[lane] = 0.5 * (hv * hv + kv * kv)
    for row in range(12 + 2 * nb):  # pass 8: every normal CDF, N(d), N(-h), N(-k), in place
        z_row = ws[(_R_D + row) * ld : (_R_D + row + 1) * ld]
        for lane in range(n):
            z = z_row[lane]
            z_row[lane] = norm_cdf_from_exp(z, exp_minus_half_square(z))
    for e in range(nb):  # pass 9: Genz (2004) eq. (3) for |rho| < 0.925, into the rows of h
        sgn = 1.0 if (e & 2) == 0 else -1.0
        h_row = ws[(_R_H + e) * ld : (_R_H + e + 1) * ld]
        k_row = ws[(_R_KK + e) * ld : (_R_KK + e + 1) * ld]
        hk_row = ws[(_R_HK + e) * ld : (_R_HK + e + 1) * ld]
        hs_row = ws[(_R_HS + e) * ld : (_R_HS + e + 1) * ld]
        for lane in range(n):
            ws[_R_ACC * ld + lane] = 0.0
        for j in range(ngl):
            a = tab[0, j]
            c = tab[1, j]
            w = tab[2, j]
            for lane in range(n):
                ws[_R_ACC * ld + lane] += w * fast_exp(hk_row[lane] * a - hs_row[lane] * c)
        for lane in range(n):
            h_row[lane] = ws[_R_ACC * ld + lane] * (sgn * _BVN_C) + h_row[lane] * k_row[lane]
    for row in range(13 + nb):  # pass 10: exp(log prefactor) x probability (0 where it is <= 0)
        f_row = ws[(_R_LE2 + row) * ld : (_R_LE2 + row + 1) * ld]
        m_row = ws[(_R_E2 + row) * ld : (_R_E2 + row + 1) * ld]
        for lane in range(n):
            lf = f_row[lane]
            m = m_row[lane]
            big = abs(lf) >= 700.0  # split so that a huge factor times a tiny probability stays finite
            e = fast_exp(0.5 * lf if big else lf)
            p = e * m
            p = p * e if big else p
            m_row[lane] = 0.0 if m <= 0.0 else p
    for lane in range(n):  # pass 11: the BS2002 sum (Haug 2007)
        k = ws[_R_K * ld + lane]
        c1 = ws[_R_C1 * ld + lane]
        ph0 = ws[(_R_D + 0) * ld + lane] - ws[(_R_D + 1) * ld + lane]
        ph1 = ws[(_R_D + 2) * ld + lane] - ws[(_R_D + 3) * ld + lane]
        ph2 = ws[(_R_D + 4) * ld + lane] - ws[(_R_D + 5) * ld + lane]
        ph3 = ws[(_R_D + 6) * ld + lane] - ws[(_R_D + 7) * ld + lane]
        ph4 = ws[(_R_D + 8) * ld + lane] - ws[(_R_D + 9) * ld + lane]
        ph5 = ws[(_R_D + 10) * ld + lane] - ws[(_R_D + 11) * ld + lane]
        ps0 = (
            ws[(_R_H + 0) * ld + lane]
            - ws[(_R_H + 1) * ld + lane]
            - ws[(_R_H + 2) * ld + lane]
            + ws[(_R_H + 3) * ld + lane]
        )
        ps1 = (
            ws[(_R_H + 4) * ld + lane]
            - ws[(_R_H + 5) * ld + lane]
            - ws[(_R_H + 6) * ld + lane]
            + ws[(_R_H + 7) * ld + lane]
        )
        ps2 = (
            ws[(_R_H + 8) * ld + lane]
            - ws[(_R_H + 9) * ld + lane]
            - ws[(_R_H + 10) * ld + lane]
            + ws[(_R_H + 11) * ld + lane]
        )
        ps3 = (
            ws[(_R_H + 12) * ld + lane]
            - ws[(_R_H + 13) * ld + lane]
            - ws[(_R_H + 14) * ld + lane]
            + ws[(_R_H + 15) * ld + lane]
        )
        ps4 = (
            ws[(_R_H + 16) * ld + lane]
            - ws[(_R_H + 17) * ld + lane]
            - ws[(_R_H + 18) * ld + lane]
            + ws[(_R_H + 19) * ld + lane]
        )
        total = (
            ws[_R_C2 * ld + lane] * (ws[_R_E2 * ld + lane] - ph0)
            + ph1
            - ph2
            - k * ph3
            + k * ph4
            + c1 * ph5
            - c1 * ps0
            + ps1
            - ps2
            - k * ps3
            + k * ps4
        )
        status = ws[_R_ST * ld + lane]
        ws[_R_OUT * ld + lane] = math.nan if status == 2.0 else (ws[_R_S * ld + lane] - k if status == 1.0 else total)


@inner_njit()
def _bs2002_call(s: float, k: float, t: float, r: float, q: float, sig: float) -> float:
    """Bjerksund-Stensland (2002) call (Haug 2007) on one lane of the lane kernel (the same bits as in an
    array); NaN means "use the European value"."""
    ws = np.empty(_NROWS * _LANES)
    ws[_R_S * _LANES] = s
    ws[_R_K * _LANES] = k
    ws[_R_T * _LANES] = t
    ws[_R_R * _LANES] = r
    ws[_R_Q * _LANES] = q
    ws[_R_SIG * _LANES] = sig
    _bs2002_lanes(ws, np.intp(1), np.intp(_NB), _TABLES)
    return ws[_R_OUT * _LANES]


@inner_njit()
def _bs2002_call_block(
    s: FloatArray, k: FloatArray, t: FloatArray, r: FloatArray, q: FloatArray, sig: FloatArray, out: FloatArray
) -> None:
    """``_bs2002_call`` of 1-d arrays into ``out`` (sequential), by lanes."""
    n = s.shape[0]
    ws = np.empty(_NROWS * _LANES)
    for a in range(0, n, _LANES):
        m = min(n, a + _LANES) - a
        for lane in range(m):
            ws[_R_S * _LANES + lane] = s[a + lane]
            ws[_R_K * _LANES + lane] = k[a + lane]
            ws[_R_T * _LANES + lane] = t[a + lane]
            ws[_R_R * _LANES + lane] = r[a + lane]
            ws[_R_Q * _LANES + lane] = q[a + lane]
            ws[_R_SIG * _LANES + lane] = sig[a + lane]
        _bs2002_lanes(ws, m, np.intp(_NB), _TABLES)
        for lane in range(m):
            out[a + lane] = ws[_R_OUT * _LANES + lane]


@inner_njit()
def _american_setup(
    s: float, k: float, t: float, sig: float, r: float, q: float, call: bool
) -> tuple[float, bool, float, float, float, float, float]:
    """``american_price_point`` before the approximation: (value without it, whether BS2002 is needed,
    and the put-call transformed call inputs ``S, K, T, r, q``)."""
    valid = (s > 0.0) & (k > 0.0) & (sig >= 0.0) & (t == t) & (r == r) & (q == q)
    tt = max(t, 0.0)
    euro = bsm_price_point(s, k, tt, sig, r, q, call)
    intrinsic = max(s - k, 0.0) if call else max(k - s, 0.0)
    floor = max(euro, intrinsic)
    cs, ck, cr, cq = (s, k, r, q) if call else (k, s, q, r)
    need = valid & (sig * math.sqrt(tt) > MIN_TOTAL_STD) & ((cq > 0.0) | (cq > cr))
    return (floor if valid else math.nan), need, cs, ck, tt, cr, cq


@njit(**JIT)
def american_bs2002_prices(
    s: FloatArray,
    k: FloatArray,
    t: FloatArray,
    sig: FloatArray,
    r: FloatArray,
    q: FloatArray,
    call: BoolArray,
    out: FloatArray,
    start: int,
    stop: int,
) -> None:
    """``american_price_point(..., method=0)`` of options ``start .. stop-1`` of 1-d arrays into ``out`` (a
    ``run_chunked`` kernel, and called by the other BS2002 kernels with ``0, n``); the options that need BS2002
    are packed into lanes (a lane's price does not depend on the others in its block), the others get their
    floor."""
    ws = np.empty(_NROWS * _LANES)
    floor = np.empty(_LANES)
    pos = np.empty(_LANES, dtype=np.intp)
    for a in range(start, stop, _LANES):
        m = np.intp(0)
        for i in range(a, min(stop, a + _LANES)):
            fl, need, cs, ck, tt, cr, cq = _american_setup(s[i], k[i], t[i], sig[i], r[i], q[i], call[i])
            out[i] = fl
            if need:
                ws[_R_S * _LANES + m] = cs
                ws[_R_K * _LANES + m] = ck
                ws[_R_T * _LANES + m] = tt
                ws[_R_R * _LANES + m] = cr
                ws[_R_Q * _LANES + m] = cq
                ws[_R_SIG * _LANES + m] = sig[i]
                floor[m] = fl
                pos[m] = i
                m += 1
        if m:
            _bs2002_lanes(ws, m, np.intp(_NB), _TABLES)
        for c in range(m):
            approx = ws[_R_OUT * _LANES + c]
            if approx == approx and approx < math.inf:
                out[pos[c]] = max(approx, floor[c])


@inner_njit()
def _bs_point(s: float, k: float, t: float, sig: float, r: float, q: float, call: bool, method: int) -> float:
    """BS1993 (``method`` 1) or the BS2002 reference (2) of one option; module docstring rules."""
    floor, need, cs, ck, tt, cr, cq = _american_setup(s, k, t, sig, r, q, call)
    if not need:
        return floor  # invalid input (NaN), deterministic limit, or early exercise never optimal
    if method == 1:
        approx = _bs1993_call(cs, ck, tt, cr, cq, sig)
    else:
        approx = _bs2002_call_reference(cs, ck, tt, cr, cq, sig)
    if approx == approx and approx < math.inf:
        return max(approx, floor)
    return floor


@njit(**JIT)
def american_price_point(
    s: float, k: float, t: float, sig: float, r: float, q: float, call: bool, method: int
) -> float:
    """American price of one option by a Bjerksund-Stensland method (``method`` 0 = BS2002 on one lane of the
    lane kernel, 1 = BS1993, 2 = BS2002 reference); module docstring rules. No kernel calls it (each would link
    every method's call tree): the exact engine is priced in arrays only (``american_alo.american_points``)."""
    if method != 0:
        return _bs_point(s, k, t, sig, r, q, call, method)
    floor, need, cs, ck, tt, cr, cq = _american_setup(s, k, t, sig, r, q, call)
    if not need:
        return floor
    approx = _bs2002_call(cs, ck, tt, cr, cq, sig)
    if approx == approx and approx < math.inf:
        return max(approx, floor)
    return floor


@njit(**JIT)
def _price_kernel(
    spot: FloatArray,
    strike: FloatArray,
    tau: FloatArray,
    vol: FloatArray,
    rate: FloatArray,
    div: FloatArray,
    call: BoolArray,
    method: int,
    out: FloatArray,
    start: int,
    stop: int,
) -> None:
    """``_bs_point(..., method)`` (BS1993 or the BS2002 reference) of options ``start .. stop-1``
    (``run_chunked``; BS2002 is ``american_bs2002_prices``)."""
    for i in range(start, stop):
        out[i] = _bs_point(spot[i], strike[i], tau[i], vol[i], rate[i], div[i], call[i], method)


@njit(**JIT)
def _raw_kernel(
    s: FloatArray,
    k: FloatArray,
    t: FloatArray,
    r: FloatArray,
    q: FloatArray,
    sig: FloatArray,
    out: FloatArray,
    start: int,
    stop: int,
) -> None:
    """``_bs2002_call_block`` of work items ``start .. stop-1`` of ``_RAW_ITEM`` calls each (``run_chunked``)."""
    n = out.shape[0]
    for blk in range(start, stop):
        a = blk * _RAW_ITEM
        z = min(n, a + _RAW_ITEM)
        _bs2002_call_block(s[a:z], k[a:z], t[a:z], r[a:z], q[a:z], sig[a:z], out[a:z])


_RAW_ITEM = 8 * _LANES  # calls per work item of ``_raw_kernel`` (one scratch block each)


#: Bumps of the Greeks kernel (multiples of the spot, vol, time and rate bumps), one repricing each:
#: base; spot +-; vol +-; time +-; rate +-; spot x vol (vanna); spot x time (charm).
_BUMPS = np.array(
    [
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [-1, 0, 0, 0],
        [0, 1, 0, 0],
        [0, -1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, -1, 0],
        [0, 0, 0, 1],
        [0, 0, 0, -1],
        [1, 1, 0, 0],
        [1, -1, 0, 0],
        [-1, 1, 0, 0],
        [-1, -1, 0, 0],
        [1, 0, 1, 0],
        [1, 0, -1, 0],
        [-1, 0, 1, 0],
        [-1, 0, -1, 0],
    ],
    dtype=np.float64,
)
_GREEK_BLOCK = 8  # options per work item of the Greeks kernel (8 x 17 repricings)


@njit(**JIT)
def _greeks_kernel(
    spot: FloatArray,
    strike: FloatArray,
    tau: FloatArray,
    vol: FloatArray,
    rate: FloatArray,
    div: FloatArray,
    call: BoolArray,
    method: int,
    bumps: FloatArray,
    out: FloatArray,
    start: int,
    stop: int,
) -> None:
    """Bump-and-reprice central differences into the rows of ``out`` in ``BsmResult`` field order, for the
    blocks of ``_GREEK_BLOCK`` options ``start .. stop-1`` (``run_chunked``).

    The ``len(bumps)`` repricings of a block of options go through the lane kernel together (BS2002).
    """
    n = spot.shape[0]
    nbump = bumps.shape[0]
    for blk in range(start, stop):
        a = blk * _GREEK_BLOCK
        g = min(n, a + _GREEK_BLOCK) - a
        m = g * nbump
        bs = np.empty(m)
        bk = np.empty(m)
        bt = np.empty(m)
        bv = np.empty(m)
        br = np.empty(m)
        bq = np.empty(m)
        px = np.empty(m)
        bc = np.empty(m, dtype=np.bool_)
        for o in range(g):
            i = a + o
            s, t, sig = spot[i], tau[i], vol[i]
            for u in range(nbump):
                c = o * nbump + u
                bs[c] = s + bumps[u, 0] * (SPOT_BUMP * s)
                bv[c] = sig + bumps[u, 1] * (VOL_BUMP * sig)
                bt[c] = t + bumps[u, 2] * (TIME_BUMP * t)
                br[c] = rate[i] + bumps[u, 3] * RATE_BUMP
                bk[c] = strike[i]
                bq[c] = div[i]
                bc[c] = call[i]
        if method == 0:
            american_bs2002_prices(bs, bk, bt, bv, br, bq, bc, px, np.intp(0), m)
        else:
            for c in range(m):
                px[c] = _bs_point(bs[c], bk[c], bt[c], bv[c], br[c], bq[c], bc[c], method)
        for o in range(g):
            i = a + o
            x = px[o * nbump : (o + 1) * nbump]
            p0, pu, pd, vu, vd, tu, td, ru, rd = x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8]
            hs = SPOT_BUMP * spot[i]
            hv = VOL_BUMP * vol[i]
            ht = TIME_BUMP * tau[i]
            out[0, i] = p0
            out[1, i] = (pu - pd) / (2.0 * hs)
            out[2, i] = (pu - 2.0 * p0 + pd) / (hs * hs)
            out[3, i] = (vu - vd) / (2.0 * hv)
            out[4, i] = -(tu - td) / (2.0 * ht)
            out[5, i] = out[4, i] / DAYS_PER_YEAR
            out[6, i] = (ru - rd) / (2.0 * RATE_BUMP)
            out[7, i] = (x[9] - x[10] - x[11] + x[12]) / (4.0 * hs * hv)
            out[8, i] = (vu - 2.0 * p0 + vd) / (hv * hv)
            out[9, i] = -(x[13] - x[14] - x[15] + x[16]) / (4.0 * hs * ht)


def _alo_greeks(
    spot: FloatArray,
    strike: FloatArray,
    tau: FloatArray,
    vol: FloatArray,
    rate: FloatArray,
    div: FloatArray,
    call: BoolArray,
    out: FloatArray,
    with_rho: bool = True,
    warm: bool = False,
) -> None:
    """Greeks of the exact engine into the rows of ``out`` (``BsmResult`` order): price and delta analytic,
    gamma from analytic deltas on the same boundary (``american_alo.american_point``); vega, volga and vanna
    from vol bumps, rho from rate bumps, theta and charm from time bumps of the price and of the analytic
    delta (central differences, the module's bump constants). The seven repricings of every option go
    through ``american_alo.american_points`` in one batch; without ``with_rho`` the two rate bumps are left out
    (rho NaN; every other Greek the same bits: each point is priced on its own). With ``warm`` the time-bumped
    repricings' boundaries are solved from the base one's (``american_points(warm_from=)``): theta and charm equal
    to rounding (their prices converged to the same tolerance from another start), every other Greek the same bits.
    Only the time bumps: the vol bumps' prices warm-started round apart by as much, but volga divides that by
    ``h_sigma^2`` and the delta-gamma VaR reads vega and volga (measured: the Cornish-Fisher VaR of a 7-position
    book 1.9e-10 relative apart with warm vol bumps, 1e-14 with warm time bumps; theta only moves its drift)."""
    n = spot.shape[0]
    hv = VOL_BUMP * vol
    ht = TIME_BUMP * tau
    # columns of the batch: base, vol up, vol down, (rate up, rate down,) time up, time down
    which = {"vol": 1, "rate": 3, "time": 5} if with_rho else {"vol": 1, "time": 3}
    cols_n = 7 if with_rho else 5

    def batch(base: FloatArray, up: FloatArray, down: FloatArray, name: str) -> FloatArray:
        cols = [base] * cols_n
        if name in which:
            cols[which[name]], cols[which[name] + 1] = up, down
        return np.concatenate(cols)

    sig = batch(vol, vol + hv, vol - hv, "vol")
    r = batch(rate, rate + RATE_BUMP, rate - RATE_BUMP, "rate")
    t = batch(tau, tau + ht, tau - ht, "time")
    s, k, q, c = (np.concatenate([a] * cols_n) for a in (spot, strike, div, call))
    # the bumped repricings' gammas are not used: no bumped deltas for them (price and delta unchanged)
    bump = np.zeros(cols_n * n, dtype=np.bool_)
    bump[:n] = True
    # with ``warm`` the time-bumped repricings' boundaries start from the base one's (Newton from a boundary a bump
    # away: 2 steps, no QD+ start); every other column starts from itself (QD+)
    warm_from = None
    if warm:
        warm_from = np.arange(cols_n * n)
        for j in (which["time"], which["time"] + 1):
            warm_from[j * n : (j + 1) * n] -= j * n
    price, delta, gamma, _ = american_points(
        s, k, t, sig, r, q, c, NEWTON_STEP_TOL_GREEKS, True, False, bump, warm_from
    )

    def col(a: FloatArray, j: int) -> FloatArray:
        return a[j * n : (j + 1) * n]

    with np.errstate(divide="ignore", invalid="ignore"):  # NaN Greeks of invalid inputs, as before
        p0, vu, vd, tu, td = (col(price, j) for j in (0, 1, 2, which["time"], which["time"] + 1))
        d0, dvu, dvd, du, dd = (col(delta, j) for j in (0, 1, 2, which["time"], which["time"] + 1))
        th0 = -(tu - td) / (2.0 * ht)
        out[0] = p0
        out[1] = d0
        out[2] = gamma[:n]
        out[3] = (vu - vd) / (2.0 * hv)
        out[4] = th0
        out[5] = th0 / DAYS_PER_YEAR
        out[6] = (col(price, 3) - col(price, 4)) / (2.0 * RATE_BUMP) if with_rho else np.nan
        out[7] = (dvu - dvd) / (2.0 * hv)
        out[8] = (vu - 2.0 * p0 + vd) / (hv * hv)
        out[9] = -(du - dd) / (2.0 * ht)


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
    method: Method = DEFAULT_METHOD,
    keep_newton_states: bool = True,
) -> FloatArray:
    """American price by ``method`` (default the exact engine, ``american_alo.py``; the Bjerksund-Stensland
    approximations of the module docstring on request), vectorized over broadcast inputs.

    Same argument order and units as ``bsm.bsm_price``; never below the European price or intrinsic.
    ``keep_newton_states`` false: the exact engine keeps no Newton states for Greeks of the same inputs
    (``american_alo.solve_boundaries``; the same prices), for callers that price trial inputs only.
    """
    code = _method_code(method)
    shape, flat = broadcast_inputs(spot, strike, time_years, vol, rate, dividend_yield, is_call)
    out = np.empty(math.prod(shape), dtype=np.float64)
    if out.size and code == _METHODS["alo"]:
        out = american_points(*flat, NEWTON_STEP_TOL, False, True, True, keep_states=keep_newton_states)[0]
    elif out.size and code == _METHODS["bs2002"]:
        run_chunked(american_bs2002_prices, out.size, *flat, out)
    elif out.size:
        run_chunked(_price_kernel, out.size, *flat, code, out)
    return out.reshape(shape)


def bs2002_call_raw(
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
) -> FloatArray:
    """The Bjerksund-Stensland (2002) call formula itself, vectorized over broadcast inputs (lane kernel):
    ``S - K`` in the exercise region, NaN where BS2002 falls back to the European value; no floor at the
    European or intrinsic value and no early-exercise checks (``american_price`` adds those). Puts are
    ``bs2002_call_raw(strike, spot, T, vol, dividend_yield, rate)``. Needs ``sigma sqrt(T) > 0``."""
    shape, flat = broadcast_inputs(spot, strike, time_years, vol, rate, dividend_yield, False)
    s, k, t, v, r, q = flat[:6]
    out = np.empty(math.prod(shape), dtype=np.float64)
    if out.size:
        run_chunked(_raw_kernel, (out.size + _RAW_ITEM - 1) // _RAW_ITEM, s, k, t, r, q, v, out)
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
    method: Method = DEFAULT_METHOD,
    with_rho: bool = True,
    warm_bumps: bool = False,
) -> BsmResult:
    """American price and Greeks as a ``BsmResult`` (units of ``bsm.py``; ``with_rho=False``: the exact engine
    skips the rate bumps and leaves ``rho`` NaN, the other Greeks unchanged; ``warm_bumps``: the exact engine's
    time-bumped boundaries solved from the base one's, ``_alo_greeks(warm=True)``: theta and charm equal to
    rounding, the other Greeks the same bits).

    Exact engine (``method="alo"``, default): delta analytic, gamma from analytic deltas on the same
    boundary (``american_alo.py``); ``vega, volga`` in vol, ``rho`` in rate, ``theta = -dV/dT``, ``vanna``
    (vol bumps of the analytic delta) and ``charm = -d delta/dT`` by central differences, every price
    converged to rounding (``NEWTON_STEP_TOL_GREEKS``; its price may differ from ``american_price`` by
    ~1e-10 relative).
    Bjerksund-Stensland methods: central differences of ``american_price`` (``delta, gamma`` in spot,
    ``vega, volga`` in vol, ``theta = -dV/dT``, ``rho`` in rate, ``vanna`` spot x vol and ``charm`` spot x
    time). Bumps are the module constants. Where ``sigma sqrt(T) <= MIN_TOTAL_STD`` the analytic BSM
    limits of ``bsm.bsm_greeks`` are returned (price still the American value).
    """
    code = _method_code(method)
    shape, flat = broadcast_inputs(spot, strike, time_years, vol, rate, dividend_yield, is_call)
    n = math.prod(shape)
    block = np.empty((10, n), dtype=np.float64)
    if n:
        if code == _METHODS["alo"]:
            _alo_greeks(*flat, block, with_rho, warm_bumps)
        else:
            run_chunked(_greeks_kernel, (n + _GREEK_BLOCK - 1) // _GREEK_BLOCK, *flat, code, _BUMPS, block)
        with np.errstate(invalid="ignore"):
            tiny = flat[3] * np.sqrt(np.maximum(flat[2], 0.0)) <= MIN_TOTAL_STD
        if np.any(tiny):
            idx = np.flatnonzero(tiny)
            lim = bsm_greeks(*(f[idx] for f in flat))
            for row, f in enumerate(fields(BsmResult)):
                if f.name != "price":
                    block[row, idx] = getattr(lim, f.name)
    return BsmResult(*(row.reshape(shape) for row in block))
