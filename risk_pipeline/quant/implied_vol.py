"""Implied volatility: European quotes by Jäckel's "Let's be rational", American quotes by bracketing.

European (``implied_vol``, ``implied_vol_black76``): P. Jäckel, "Let's be rational", Wilmott (2015)
63-73 and the author's reference implementation (2013-2014, "Permission to use, copy, modify, and
distribute this software is freely granted, provided that this notice is preserved."), ported to
numba. The quote is normalised to ``beta = price / (e^{-rT} sqrt(F K))`` at log-moneyness
``x = ln(F/K)``, in-the-money quotes are mapped to out-of-the-money ones by subtracting the
normalised intrinsic, a four-branch rational-cubic initial guess is refined by third-order
Householder steps (convergence order 4) on branch-specific objectives, bracketed with bisection
fallback. The normalised Black
function uses Jäckel's asymptotic and small-``t`` expansions and W. J. Cody's erfc/erfcx (Math.
Comp. 23, 1969), the inverse normal CDF is Wichura's AS241 (Appl. Statist. 37, 1988); all three in
``special.py``.
Iterations stop once a step is below ``STOP_STEP`` of ``sigma sqrt(T)`` (two iterations typically,
relative error ~1e-12 or better); the limit is ``max_iterations``.

American (``implied_vol_american``): the price of ``american.py`` (by default the exact engine,
``american_alo.py``) is inverted by a safeguarded secant: the bracket runs from volatility 0 to the
European implied volatility of the same price (an upper bound since American >= European; doubled
while the quote exceeds it). The exact engine starts from the European implied volatility of the quote
less Bjerksund-Stensland 2002's early-exercise premium; the first step is Newton's with the European
vega, then secant
steps through the last two points, replaced by Illinois regula falsi whenever they leave the
bracket; it stops once the model price is within ``PRICE_TOL`` of the quote and the vol within
``VOL_TOL`` by the European vega (typically after 3 to 5 prices), or the bracket is narrower than ``tol``.

Invalid quotes get ``vol = NaN`` and a non-zero ``IvStatus``; checks are made in normalised space
against the discounted-forward bounds ``e^{-rT} max(w (F - K), 0) < price < e^{-rT} (F if call else K)``
(American: ``max(w (S - K), 0, European lower bound) < price < (S if call else K)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray

from risk_pipeline.quant._numba import JIT, FloatArray, inner_njit, run_chunked
from risk_pipeline.quant.american import DEFAULT_METHOD, Method, _method_code, american_price
from risk_pipeline.quant.bsm import broadcast_inputs, bsm_price
from risk_pipeline.quant.special import erfc as _erfc
from risk_pipeline.quant.special import erfcx as _erfcx
from risk_pipeline.quant.special import inverse_norm_cdf as _inverse_norm_cdf
from risk_pipeline.quant.special import norm_cdf as _norm_cdf
from risk_pipeline.quant.special import norm_pdf as _norm_pdf

_DBL_EPSILON = float(np.finfo(np.float64).eps)
_DBL_MIN = float(np.finfo(np.float64).tiny)
_DBL_MAX = float(np.finfo(np.float64).max)
_SQRT_DBL_EPSILON = math.sqrt(_DBL_EPSILON)
_FOURTH_ROOT_DBL_EPSILON = math.sqrt(_SQRT_DBL_EPSILON)
_SIXTEENTH_ROOT_DBL_EPSILON = math.sqrt(math.sqrt(_FOURTH_ROOT_DBL_EPSILON))
_SQRT_DBL_MAX = math.sqrt(_DBL_MAX)
_ONE_OVER_SQRT_TWO = 1.0 / math.sqrt(2.0)
_ONE_OVER_SQRT_TWO_PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_TWO_PI = math.sqrt(2.0 * math.pi)
_TWO_PI = 2.0 * math.pi
_SQRT_PI_OVER_TWO = math.sqrt(math.pi / 2.0)
_SQRT_THREE = math.sqrt(3.0)
_SQRT_ONE_OVER_THREE = math.sqrt(1.0 / 3.0)
_TWO_PI_OVER_SQRT_TWENTY_SEVEN = 2.0 * math.pi / math.sqrt(27.0)
_PI_OVER_SIX = math.pi / 6.0
_ASYMPTOTIC_EXPANSION_ACCURACY_THRESHOLD = -10.0
_SMALL_T_EXPANSION_THRESHOLD = 2.0 * _SIXTEENTH_ROOT_DBL_EPSILON
_MIN_RATIONAL_CUBIC_R = -(1.0 - _SQRT_DBL_EPSILON)
_MAX_RATIONAL_CUBIC_R = 2.0 / (_DBL_EPSILON * _DBL_EPSILON)

#: The iteration stops once a Householder step is below this fraction of ``sigma sqrt(T)``: the
#: order-4 convergent step leaves a relative error of order step^4 (at most 1.1e-12 relative against full
#: convergence on 1e6 random quotes, sigma 1%-300%, T 1 day-5 years, +-8 sd). Not reaching it
#: within the iteration limit is ``NOT_CONVERGED``.
STOP_STEP = 1e-3
#: American implied vols stop once the model price is within this fraction of the quote.
PRICE_TOL = 1e-9
#: ... and once the European vega puts the remaining vol error below this.
VOL_TOL = 1e-10
#: Default Householder iteration limit (Jäckel: 2 suffice; the rest is bisection safety).
DEFAULT_MAX_ITERATIONS = 10


class IvStatus(IntEnum):
    """Outcome per quote; every non-``OK`` quote has ``vol = NaN``."""

    OK = 0
    BELOW_INTRINSIC = 1  # price below the (discounted forward / immediate-exercise) intrinsic value
    ABOVE_UPPER_BOUND = 2  # price at or above e^{-qT} S (call) / e^{-rT} K (put); American: S / K
    ZERO_PRICE = 3  # zero price, zero bid, or zero time value: volatility not identifiable
    CROSSED = 4  # bid > ask
    EXPIRED = 5  # time_years <= 0
    NOT_CONVERGED = 6  # iteration limit reached without convergence
    INVALID_INPUT = 7  # NaN input, non-positive spot/forward/strike, ask < 0


@dataclass(frozen=True)
class ImpliedVolResult:
    """Implied volatilities (NaN where ``status != OK``), ``IvStatus`` codes, most iterations used."""

    vol: FloatArray
    status: NDArray[np.int8]
    iterations: int


# ----------------------------------------------------------------------------------------------
# normalised Black function (Jäckel 2015, section 2)
# ----------------------------------------------------------------------------------------------


@inner_njit()
def _normalised_intrinsic(x: float, q: float) -> float:
    """``max(q (e^{x/2} - e^{-x/2}), 0)`` with a Taylor series for small ``|x|``."""
    if q * x <= 0.0:
        return 0.0
    x2 = x * x
    if x2 < 98.0 * _FOURTH_ROOT_DBL_EPSILON:
        v = x * (1.0 + x2 * ((1.0 / 24.0) + x2 * ((1.0 / 1920.0) + x2 * ((1.0 / 322560.0) + (1.0 / 92897280.0) * x2))))
        return abs(max(q * v, 0.0))
    b_max = math.exp(0.5 * x)
    return abs(max(q * (b_max - 1.0 / b_max), 0.0))


def _asymptotic_coefficients() -> FloatArray:
    """Row ``k`` holds ``P_k(e) = (-1)^k 2 sum_j C(2k+1, 2j+1) e^j`` (Jäckel's 17-term expansion)."""
    c = np.zeros((18, 18))
    for k in range(1, 18):
        for j in range(k + 1):
            c[k, j] = (-1) ** k * 2.0 * math.comb(2 * k + 1, 2 * j + 1)
    return c


_ASYMPTOTIC = _asymptotic_coefficients()


@inner_njit()
def _asymptotic_expansion(h: float, t: float, g: float) -> float:
    """Normalised Black call for ``h < -10``: Jäckel (2015) eq. (2.8)-(2.9), 17 terms.

    ``b = n(h) n(t)-scaled (t/r) (2 + q T_1)`` with ``T_k = P_k(e) + (2k+1) q T_{k+1}``,
    ``e = (t/h)^2``, ``r = (h+t)(h-t)``, ``q = (h/r)^2``; ``g = exp(-(h^2 + t^2)/2)``.
    """
    e = (t / h) * (t / h)
    r = (h + t) * (h - t)
    q = (h / r) * (h / r)
    acc = 0.0
    for k in range(17, 0, -1):
        pk = _ASYMPTOTIC[k, k]
        for j in range(k - 1, -1, -1):
            pk = pk * e + _ASYMPTOTIC[k, j]
        acc = pk + (2.0 * k + 1.0) * q * acc if k < 17 else pk
    total = 2.0 + q * acc
    b = _ONE_OVER_SQRT_TWO_PI * g * (t / r) * total
    return abs(max(b, 0.0))


@inner_njit()
def _small_t_expansion(h: float, t: float, g: float) -> float:
    """Normalised Black call for small ``t = s/2``: Jäckel (2015) eq. (2.11)-(2.12), to ``t^13``;
    ``g = exp(-(h^2 + t^2)/2)``."""
    a = 1.0 + h * (0.5 * _SQRT_TWO_PI) * _erfcx(-_ONE_OVER_SQRT_TWO * h)
    w = t * t
    h2 = h * h
    c1 = (-1.0 + 3.0 * a + a * h2) / 6.0
    c2 = (-7.0 + 15.0 * a + h2 * (-1.0 + 10.0 * a + a * h2)) / 120.0
    c3 = (-57.0 + 105.0 * a + h2 * (-18.0 + 105.0 * a + h2 * (-1.0 + 21.0 * a + a * h2))) / 5040.0
    c4 = (
        -561.0 + 945.0 * a + h2 * (-285.0 + 1260.0 * a + h2 * (-33.0 + 378.0 * a + h2 * (-1.0 + 36.0 * a + a * h2)))
    ) / 362880.0
    c5 = (
        -6555.0
        + 10395.0 * a
        + h2
        * (
            -4680.0
            + 17325.0 * a
            + h2 * (-840.0 + 6930.0 * a + h2 * (-52.0 + 990.0 * a + h2 * (-1.0 + 55.0 * a + a * h2)))
        )
    ) / 39916800.0
    c6 = (
        -89055.0
        + 135135.0 * a
        + h2
        * (
            -82845.0
            + 270270.0 * a
            + h2
            * (
                -20370.0
                + 135135.0 * a
                + h2 * (-1926.0 + 25740.0 * a + h2 * (-75.0 + 2145.0 * a + h2 * (-1.0 + 78.0 * a + a * h2)))
            )
        )
    ) / 6227020800.0
    expansion = 2.0 * t * (a + w * (c1 + w * (c2 + w * (c3 + w * (c4 + w * (c5 + w * c6))))))
    b = _ONE_OVER_SQRT_TWO_PI * g * expansion
    return abs(max(b, 0.0))


@inner_njit()
def _normalised_black_call_cody(x: float, s: float, e_half: float, e_mhalf: float, g: float) -> float:
    """``b(x, s)`` from Cody's erfc/erfcx choosing per term the accurate form (Jäckel's regions 3-4).

    ``e_half = exp(x/2)``, ``e_mhalf = exp(-x/2)`` (fixed during an inversion), ``g = exp(-(h^2+t^2)/2)``.
    """
    threshold = 0.46875
    h = x / s
    t = 0.5 * s
    q1 = -_ONE_OVER_SQRT_TWO * (h + t)
    q2 = -_ONE_OVER_SQRT_TWO * (h - t)
    if q1 < threshold:
        if q2 < threshold:
            two_b = e_half * _erfc(q1) - e_mhalf * _erfc(q2)
        else:
            two_b = e_half * _erfc(q1) - g * _erfcx(q2)
    elif q2 < threshold:
        two_b = g * _erfcx(q1) - e_mhalf * _erfc(q2)
    else:
        two_b = g * (_erfcx(q1) - _erfcx(q2))
    return abs(max(0.5 * two_b, 0.0))


@inner_njit()
def _black_and_vega(x: float, s: float, e_half: float, e_mhalf: float) -> tuple[float, float]:
    """``(b(x, s), db/ds)`` for ``x <= 0`` (Jäckel's four regions), sharing ``exp(-(h^2 + t^2)/2)``.

    ``e_half = exp(x/2)``, ``e_mhalf = exp(-x/2)``; the vega is ``exp(-(h^2 + t^2)/2) / sqrt(2 pi)``.
    """
    if not s > 0.0:
        return 0.0, 0.0
    h = x / s
    t = 0.5 * s
    g = math.exp(-0.5 * (h * h + t * t))
    vega = _ONE_OVER_SQRT_TWO_PI * g
    if x < s * _ASYMPTOTIC_EXPANSION_ACCURACY_THRESHOLD and 0.5 * s * s + x < s * (
        _SMALL_T_EXPANSION_THRESHOLD + _ASYMPTOTIC_EXPANSION_ACCURACY_THRESHOLD
    ):
        return _asymptotic_expansion(h, t, g), vega
    if t < _SMALL_T_EXPANSION_THRESHOLD:
        return _small_t_expansion(h, t, g), vega
    return _normalised_black_call_cody(x, s, e_half, e_mhalf, g), vega


@inner_njit()
def _normalised_black_otm(x: float, s: float, e_half: float, e_mhalf: float) -> float:
    """``b(x, s)`` for ``x <= 0`` (Jäckel's four regions); ``e_half = exp(x/2)``, ``e_mhalf = exp(-x/2)``."""
    return _black_and_vega(x, s, e_half, e_mhalf)[0]


@inner_njit()
def normalised_black_call(x: float, s: float) -> float:
    """Normalised undiscounted Black call ``e^{x/2} N(x/s + s/2) - e^{-x/2} N(x/s - s/2)``, accurate.

    In-the-money: intrinsic plus the out-of-the-money value at ``-x`` (put-call parity).
    """
    itm = _normalised_intrinsic(x, 1.0) if x > 0.0 else 0.0
    ax = abs(x)
    return itm + _normalised_black_otm(-ax, s, math.exp(-0.5 * ax), math.exp(0.5 * ax))


# ----------------------------------------------------------------------------------------------
# rational cubic interpolation (Delbourgo & Gregory 1985, as used by Jäckel)
# ----------------------------------------------------------------------------------------------


@inner_njit()
def _is_zero(x: float) -> bool:
    return abs(x) < _DBL_MIN


@inner_njit()
def _rational_cubic_interpolation(
    x: float, x_l: float, x_r: float, y_l: float, y_r: float, d_l: float, d_r: float, r: float
) -> float:
    h = x_r - x_l
    if abs(h) <= 0.0:
        return 0.5 * (y_l + y_r)
    t = (x - x_l) / h
    if not r >= _MAX_RATIONAL_CUBIC_R:
        omt = 1.0 - t
        t2 = t * t
        omt2 = omt * omt
        return (y_r * t2 * t + (r * y_r - h * d_r) * t2 * omt + (r * y_l + h * d_l) * t * omt2 + y_l * omt2 * omt) / (
            1.0 + (r - 3.0) * t * omt
        )
    return y_r * t + y_l * (1.0 - t)


@inner_njit()
def _r_fit_left(
    x_l: float, x_r: float, y_l: float, y_r: float, d_l: float, d_r: float, second_derivative_l: float
) -> float:
    h = x_r - x_l
    numerator = 0.5 * h * second_derivative_l + (d_r - d_l)
    if _is_zero(numerator):
        return 0.0
    denominator = (y_r - y_l) / h - d_l
    if _is_zero(denominator):
        return _MAX_RATIONAL_CUBIC_R if numerator > 0.0 else _MIN_RATIONAL_CUBIC_R
    return numerator / denominator


@inner_njit()
def _r_fit_right(
    x_l: float, x_r: float, y_l: float, y_r: float, d_l: float, d_r: float, second_derivative_r: float
) -> float:
    h = x_r - x_l
    numerator = 0.5 * h * second_derivative_r + (d_r - d_l)
    if _is_zero(numerator):
        return 0.0
    denominator = d_r - (y_r - y_l) / h
    if _is_zero(denominator):
        return _MAX_RATIONAL_CUBIC_R if numerator > 0.0 else _MIN_RATIONAL_CUBIC_R
    return numerator / denominator


@inner_njit()
def _min_rational_cubic_r(d_l: float, d_r: float, s: float, prefer_shape: bool) -> float:
    monotonic = d_l * s >= 0.0 and d_r * s >= 0.0
    convex = d_l <= s <= d_r
    concave = d_l >= s >= d_r
    if not monotonic and not convex and not concave:
        return _MIN_RATIONAL_CUBIC_R
    d_r_m_d_l = d_r - d_l
    d_r_m_s = d_r - s
    s_m_d_l = s - d_l
    r1 = -_DBL_MAX
    r2 = r1
    if monotonic:
        if not _is_zero(s):
            r1 = (d_r + d_l) / s
        elif prefer_shape:
            r1 = _MAX_RATIONAL_CUBIC_R
    if convex or concave:
        if not (_is_zero(s_m_d_l) or _is_zero(d_r_m_s)):
            r2 = max(abs(d_r_m_d_l / d_r_m_s), abs(d_r_m_d_l / s_m_d_l))
        elif prefer_shape:
            r2 = _MAX_RATIONAL_CUBIC_R
    elif monotonic and prefer_shape:
        r2 = _MAX_RATIONAL_CUBIC_R
    return max(_MIN_RATIONAL_CUBIC_R, max(r1, r2))


@inner_njit()
def _convex_r_left(
    x_l: float, x_r: float, y_l: float, y_r: float, d_l: float, d_r: float, dd_l: float, prefer_shape: bool
) -> float:
    r = _r_fit_left(x_l, x_r, y_l, y_r, d_l, d_r, dd_l)
    return max(r, _min_rational_cubic_r(d_l, d_r, (y_r - y_l) / (x_r - x_l), prefer_shape))


@inner_njit()
def _convex_r_right(
    x_l: float, x_r: float, y_l: float, y_r: float, d_l: float, d_r: float, dd_r: float, prefer_shape: bool
) -> float:
    r = _r_fit_right(x_l, x_r, y_l, y_r, d_l, d_r, dd_r)
    return max(r, _min_rational_cubic_r(d_l, d_r, (y_r - y_l) / (x_r - x_l), prefer_shape))


# ----------------------------------------------------------------------------------------------
# Let's be rational: initial guess maps and iteration (Jäckel 2015, sections 3-5)
# ----------------------------------------------------------------------------------------------


@inner_njit()
def _f_lower_map(x: float, s: float) -> tuple[float, float, float]:
    """Jäckel's lower-branch map ``f(beta)`` at ``s`` and its first two ``beta`` derivatives (eq. 4.5-4.7)."""
    ax = abs(x)
    z = _SQRT_ONE_OVER_THREE * ax / s
    y = z * z
    s2 = s * s
    big_phi = _norm_cdf(-z)
    e1 = math.exp(y + 0.125 * s2)  # exp(2y + s^2/4) = e1^2
    small_phi = _norm_pdf(z)
    fpp = (
        _PI_OVER_SIX
        * y
        / (s2 * s)
        * big_phi
        * (8.0 * _SQRT_THREE * s * ax + (3.0 * s2 * (s2 - 8.0) - 8.0 * x * x) * big_phi / small_phi)
        * (e1 * e1)
    )
    phi2 = big_phi * big_phi
    fp = _TWO_PI * y * phi2 * e1
    f = _TWO_PI_OVER_SQRT_TWENTY_SEVEN * ax * (phi2 * big_phi)
    return f, fp, fpp


@inner_njit()
def _inverse_f_lower_map(x: float, f: float) -> float:
    if f <= 0.0:
        return 0.0
    u = math.exp(math.log(f / (_TWO_PI_OVER_SQRT_TWENTY_SEVEN * abs(x))) / 3.0)  # cube root
    return abs(x / (_SQRT_THREE * _inverse_norm_cdf(u)))


@inner_njit()
def _f_upper_map(x: float, s: float) -> tuple[float, float, float]:
    f = _norm_cdf(-0.5 * s)
    if x == 0.0:
        return f, -0.5, 0.0
    w = (x / s) * (x / s)
    return f, -0.5 * math.exp(0.5 * w), _SQRT_PI_OVER_TWO * math.exp(w + 0.125 * s * s) * w / s


@inner_njit()
def _householder_factor(newton: float, halley: float, hh3: float) -> float:
    return (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + hh3 * newton / 6.0))


@inner_njit()
def _lbr(beta: float, x: float, b_max: float, e_mhalf: float, n_max: int) -> tuple[float, int, bool]:
    """Normalised implied ``s = sigma sqrt(T)`` of an out-of-the-money call quote (Jäckel 2015).

    ``x = ln(F/K) <= 0``, ``0 < beta < b_max = exp(x/2)``, ``e_mhalf = exp(-x/2)`` (in-the-money and
    put quotes are mapped here by the caller). Returns (s, iterations, converged).
    """
    iterations = 0
    reversals = 0
    f = -_DBL_MAX
    s = -_DBL_MAX
    ds = s
    ds_previous = 0.0
    s_left = _DBL_MIN
    s_right = _DBL_MAX
    s_c = math.sqrt(abs(2.0 * x))
    if x > -600.0:  # d1 = 0 at s_c: b_c = e^{x/2}/2 - e^{-x/2} N(-s_c), one erfc instead of two
        b_c = max(0.5 * b_max - e_mhalf * _norm_cdf(-s_c), 0.0)
    else:
        b_c = _normalised_black_otm(x, s_c, b_max, e_mhalf)
    v_c = _ONE_OVER_SQRT_TWO_PI * b_max  # at s_c = sqrt(2|x|): exp(-(x^2/s^2 + s^2/4)/2) = exp(x/2)
    objective = 0  # 0: b - beta, 1: 1/ln(b) lower branch, 2: ln(b_max - b) upper branch
    if beta < b_c:
        s_l = s_c - b_c / v_c
        b_l, v_l = _black_and_vega(x, s_l, b_max, e_mhalf)
        if beta < b_l:
            f_l, df_l, d2f_l = _f_lower_map(x, s_l)
            r_ll = _convex_r_right(0.0, b_l, 0.0, f_l, 1.0, df_l, d2f_l, np.bool_(True))
            f = _rational_cubic_interpolation(beta, 0.0, b_l, 0.0, f_l, 1.0, df_l, r_ll)
            if not f > 0.0:
                t = beta / b_l
                f = (f_l * t + b_l * (1.0 - t)) * t
            s = _inverse_f_lower_map(x, f)
            s_right = s_l
            objective = 1
        else:
            r_lm = _convex_r_right(b_l, b_c, s_l, s_c, 1.0 / v_l, 1.0 / v_c, 0.0, np.bool_(False))
            s = _rational_cubic_interpolation(beta, b_l, b_c, s_l, s_c, 1.0 / v_l, 1.0 / v_c, r_lm)
            s_left = s_l
            s_right = s_c
    else:
        s_h = s_c + (b_max - b_c) / v_c if v_c > _DBL_MIN else s_c
        b_h, v_h = _black_and_vega(x, s_h, b_max, e_mhalf)
        if beta <= b_h:
            r_hm = _convex_r_left(b_c, b_h, s_c, s_h, 1.0 / v_c, 1.0 / v_h, 0.0, np.bool_(False))
            s = _rational_cubic_interpolation(beta, b_c, b_h, s_c, s_h, 1.0 / v_c, 1.0 / v_h, r_hm)
            s_left = s_c
            s_right = s_h
        else:
            f_h, df_h, d2f_h = _f_upper_map(x, s_h)
            if -_SQRT_DBL_MAX < d2f_h < _SQRT_DBL_MAX:
                r_hh = _convex_r_left(b_h, b_max, f_h, 0.0, df_h, -0.5, d2f_h, np.bool_(True))
                f = _rational_cubic_interpolation(beta, b_h, b_max, f_h, 0.0, df_h, -0.5, r_hh)
            if f <= 0.0:
                h = b_max - b_h
                t = (beta - b_h) / h
                f = (f_h * (1.0 - t) + 0.5 * h * t) * (1.0 - t)
            s = -2.0 * _inverse_norm_cdf(f)
            s_left = s_h
            if beta > 0.5 * b_max:
                objective = 2
    converged = False
    ln_beta = math.log(beta) if objective == 1 else 0.0
    while iterations < n_max:
        if ds * ds_previous < 0.0:
            reversals += 1
        if iterations > 0 and (reversals == 3 or not (s_left < s < s_right)):
            s = 0.5 * (s_left + s_right)
            if s_right - s_left <= _DBL_EPSILON * s:
                converged = True
                break
            reversals = 0
            ds = 0.0
        ds_previous = ds
        b, bp = _black_and_vega(x, s, b_max, e_mhalf)
        if b > beta and s < s_right:
            s_right = s
        elif b < beta and s > s_left:
            s_left = s
        if objective == 1:
            if b <= 0.0 or bp <= 0.0:
                ds = 0.5 * (s_left + s_right) - s
            else:
                ln_b = math.log(b)
                bpob = bp / b
                h = x / s
                b_halley = h * h / s - s / 4.0
                newton = (ln_beta - ln_b) * ln_b / ln_beta / bpob
                halley = b_halley - bpob * (1.0 + 2.0 / ln_b)
                b_hh3 = b_halley * b_halley - 3.0 * (h / s) * (h / s) - 0.25
                hh3 = (
                    b_hh3
                    + 2.0 * bpob * bpob * (1.0 + 3.0 / ln_b * (1.0 + 1.0 / ln_b))
                    - 3.0 * b_halley * bpob * (1.0 + 2.0 / ln_b)
                )
                ds = newton * _householder_factor(newton, halley, hh3)
        elif objective == 2:
            if b >= b_max or bp <= _DBL_MIN:
                ds = 0.5 * (s_left + s_right) - s
            else:
                b_max_minus_b = b_max - b
                g = math.log((b_max - beta) / b_max_minus_b)
                gp = bp / b_max_minus_b
                h = x / s
                b_halley = h * h / s - s / 4.0
                b_hh3 = b_halley * b_halley - 3.0 * (h / s) * (h / s) - 0.25
                newton = -g / gp
                halley = b_halley + gp
                hh3 = b_hh3 + gp * (2.0 * gp + 3.0 * b_halley)
                ds = newton * _householder_factor(newton, halley, hh3)
        else:
            newton = (beta - b) / bp
            h = x / s
            halley = h * h / s - s / 4.0
            hh3 = halley * halley - 3.0 * (h / s) * (h / s) - 0.25
            ds = newton * _householder_factor(newton, halley, hh3)
        ds = max(-0.5 * s, ds)
        s += ds
        iterations += 1
        if abs(ds) <= STOP_STEP * s:
            converged = True
            break
    return s, iterations, converged and s == s and s < math.inf


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------


@inner_njit()
def _european_point(
    price: float, lnfk: float, sqrt_fk_df: float, t: float, call: bool, n_max: int
) -> tuple[float, int, int]:
    """(vol, status, iterations) for an undiscounted normalisation ``beta = price / sqrt_fk_df``."""
    if not (t > 0.0):
        return math.nan, 5 if t == t else 7, 0
    if not (price == price and lnfk == lnfk and sqrt_fk_df > 0.0 and sqrt_fk_df < math.inf):
        return math.nan, 7, 0
    if price == 0.0:
        return math.nan, 3, 0
    if price < 0.0:
        return math.nan, 1, 0
    beta = price / sqrt_fk_df
    ax = abs(lnfk)
    e_lo = math.exp(-0.5 * ax)
    e_hi = math.exp(0.5 * ax)
    itm = (lnfk > 0.0) if call else (lnfk < 0.0)
    if itm:  # upper bound e^{|x|/2}; subtract the normalised intrinsic e^{|x|/2} - e^{-|x|/2}
        if beta >= e_hi:
            return math.nan, 2, 0
        iota = _normalised_intrinsic(ax, 1.0) if ax * ax < 98.0 * _FOURTH_ROOT_DBL_EPSILON else e_hi - e_lo
        if beta < iota:
            return math.nan, 1, 0
        beta = beta - iota
        if beta <= 0.0:
            return math.nan, 3, 0
    elif beta >= e_lo:
        return math.nan, 2, 0
    s, it, ok = _lbr(beta, -ax, e_lo, e_hi, n_max)
    if not ok:
        return math.nan, 6, it
    if not s > 0.0:
        return math.nan, 3, it
    return s / math.sqrt(t), 0, it


#: ``_norm_kernel``'s inputs: spot (``implied_vol``), forward (``implied_vol_black76``), the American search's.
_NORM_SPOT, _NORM_FORWARD, _NORM_AMERICAN = np.int64(0), np.int64(1), np.int64(2)


@njit(**JIT)
def _norm_kernel(
    kind: int,
    spot: FloatArray,
    strike: FloatArray,
    tau: FloatArray,
    rate: FloatArray,
    div: FloatArray,
    lnfk: FloatArray,
    norm: FloatArray,
    start: int,
    stop: int,
) -> None:
    """``ln(F/K)`` and ``e^{-rT} sqrt(F K)`` of quotes ``start .. stop-1`` (``run_chunked``; one kernel for the three
    callers: one compilation instead of three). ``_NORM_SPOT``: given the spot, NaN for invalid input;
    ``_NORM_FORWARD``: ``spot`` is the forward (``div`` unread), NaN for invalid input; ``_NORM_AMERICAN``: the
    American search's (valid inputs only)."""
    for i in range(start, stop):
        s, k, t, r, q = spot[i], strike[i], tau[i], rate[i], div[i]
        if kind == _NORM_AMERICAN:
            lnfk[i] = math.log(s / k) + (r - q) * t
            norm[i] = math.sqrt(s) * math.sqrt(k) * math.exp(-0.5 * (r + q) * t)
        elif kind == _NORM_FORWARD:
            f = s
            if f > 0.0 and k > 0.0 and r == r:
                lnfk[i] = math.log(f / k)
                norm[i] = math.sqrt(f) * math.sqrt(k) * math.exp(-r * max(t, 0.0))
            else:
                lnfk[i] = math.nan
                norm[i] = math.nan
        elif s > 0.0 and k > 0.0 and r == r and q == q:
            tt = max(t, 0.0)
            lnfk[i] = math.log(s / k) + (r - q) * tt
            # e^{-rT} sqrt(F K) = sqrt(S K) e^{-(r+q)T/2}
            sk = s * k
            root = math.sqrt(sk) if sk < math.inf else math.sqrt(s) * math.sqrt(k)
            norm[i] = root * math.exp(-0.5 * (r + q) * tt)
        else:
            lnfk[i] = math.nan
            norm[i] = math.nan


@njit(**JIT)
def _european_kernel(
    price: FloatArray,
    lnfk: FloatArray,
    norm: FloatArray,
    tau: FloatArray,
    call: NDArray[np.bool_],
    n_max: int,
    vol: FloatArray,
    status: NDArray[np.int8],
    iters: NDArray[np.int32],
    start: int,
    stop: int,
) -> None:
    """``_european_point`` of quotes ``start .. stop-1`` given ``ln(F/K)`` and ``e^{-rT} sqrt(F K)``
    (``run_chunked``)."""
    for i in range(start, stop):
        v, st, it = _european_point(price[i], lnfk[i], norm[i], tau[i], call[i], n_max)
        vol[i] = v
        status[i] = st
        iters[i] = it


@njit(**JIT)
def _vega_kernel(
    x: FloatArray,
    spot: FloatArray,
    tau: FloatArray,
    div: FloatArray,
    lnfk: FloatArray,
    vega: FloatArray,
    start: int,
    stop: int,
) -> None:
    """European vega at vol ``x`` (the American search's convergence test and first step), ``start .. stop-1``."""
    for i in range(start, stop):
        t = tau[i]
        sd = x[i] * math.sqrt(t)
        d1 = lnfk[i] / sd + 0.5 * sd
        vega[i] = spot[i] * math.exp(-div[i] * t) * _ONE_OVER_SQRT_TWO_PI * math.exp(-0.5 * d1 * d1) * math.sqrt(t)


def _european(
    price: FloatArray, lnfk: FloatArray, norm: FloatArray, tau: FloatArray, call: NDArray[np.bool_], n_max: int
) -> tuple[FloatArray, NDArray[np.int8], NDArray[np.int32]]:
    vol, status, iters = _outputs(price.size)
    if price.size:
        run_chunked(_european_kernel, price.size, price, lnfk, norm, tau, call, int(n_max), vol, status, iters)
    return vol, status, iters


@dataclass
class _AmericanQuotes:
    """Flat inputs of the American search and its checks (``_american_bounds``)."""

    price: FloatArray
    s: FloatArray
    k: FloatArray
    t: FloatArray
    r: FloatArray
    q: FloatArray
    call: NDArray[np.bool_]
    method: Method
    status: NDArray[np.int8]  # -1 where a volatility exists (the search runs), else the IvStatus
    f_lo: FloatArray  # price at zero volatility less the quote
    sig_e: FloatArray  # European implied vol of the quote
    st_e: NDArray[np.int8]  # its status
    lnfk: FloatArray
    norm: FloatArray

    def model(self, idx: NDArray[np.intp], vol: FloatArray, method: Method | None = None) -> FloatArray:
        """The American price of quotes ``idx`` at volatilities ``vol`` (``american.american_price``; trial vols:
        no Newton states kept for Greeks, which no caller takes at them)."""
        m = self.method if method is None else method
        s, k, t, r, q, c = self.s[idx], self.k[idx], self.t[idx], self.r[idx], self.q[idx], self.call[idx]
        return american_price(s, k, t, vol, r, q, c, method=m, keep_newton_states=False)


def _american_bounds(
    price: FloatArray,
    s: FloatArray,
    k: FloatArray,
    t: FloatArray,
    r: FloatArray,
    q: FloatArray,
    call: NDArray[np.bool_],
    method: Method,
) -> _AmericanQuotes:
    """The checks before the American search, in the order of the scalar rules: expired or NaN time, invalid
    input, zero price, at or above the upper bound, then (pricing at zero volatility) below the zero-volatility
    price or no time value; status -1 where the quote lies strictly between (a volatility exists), with the
    European implied vol of the quote."""
    n = price.size
    status = np.full(n, -1, dtype=np.int8)
    f_lo = np.full(n, np.nan)
    sig_e = np.full(n, np.nan)
    st_e = np.full(n, 7, dtype=np.int8)
    lnfk = np.full(n, np.nan)
    norm = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        expired = ~(t > 0.0)
        status[expired] = np.where(t[expired] == t[expired], 5, 7)
        left = ~expired
        bad = left & ~((price == price) & (s > 0.0) & (k > 0.0) & (r == r) & (q == q))
        status[bad] = 7
        left &= ~bad
        zero = left & (price == 0.0)
        status[zero] = 3
        left &= ~zero
        above = left & (price >= np.where(call, s, k))
        status[above] = 2
        left &= ~above
    quotes = _AmericanQuotes(price, s, k, t, r, q, call, method, status, f_lo, sig_e, st_e, lnfk, norm)
    i = np.flatnonzero(left)
    if i.size:
        ftol = PRICE_TOL * price[i]
        f = quotes.model(i, np.zeros(i.size)) - price[i]
        f_lo[i] = f
        status[i[f > ftol]] = 1
        status[i[(f <= ftol) & (f >= -ftol)]] = 3  # no time value left to identify a volatility
        j = i[f < -ftol]
        if j.size:
            # European implied vol of the same price bounds the American one from above (when it exists)
            ln, nm = np.empty(j.size), np.empty(j.size)
            run_chunked(_norm_kernel, j.size, _NORM_AMERICAN, s[j], k[j], t[j], r[j], q[j], ln, nm)
            lnfk[j], norm[j] = ln, nm
            sig_e[j], st_e[j], _ = _european(price[j], ln, nm, t[j], call[j], DEFAULT_MAX_ITERATIONS)
    return quotes


def _american_search(
    quotes: _AmericanQuotes, tol: float, n_max: int
) -> tuple[FloatArray, NDArray[np.int8], NDArray[np.int32]]:
    """Safeguarded secant on the American price (module docstring), all quotes with status -1 at once: every
    step is the scalar rule applied elementwise, one batch of model prices per step."""
    n = quotes.price.size
    vol = np.full(n, np.nan)
    status = np.maximum(quotes.status, 0).astype(np.int8)
    evals = np.zeros(n, dtype=np.int32)
    a = np.flatnonzero(quotes.status < 0)
    if not a.size:
        return vol, status, evals
    price, t, lnfk, norm = quotes.price[a], quotes.t[a], quotes.lnfk[a], quotes.norm[a]
    sig_e, st_e = quotes.sig_e[a], quotes.st_e[a]
    m = a.size
    lo = np.zeros(m)
    f_lo = quotes.f_lo[a].copy()
    ftol = PRICE_TOL * price
    ev = np.zeros(m, dtype=np.int32)
    f_hi = np.full(m, math.inf)  # f(hi) >= 0 is known without pricing at the European implied vol
    hi = np.ones(m)
    x = np.ones(m)
    done = np.zeros(m, dtype=bool)
    res_v = np.full(m, np.nan)
    res_s = np.full(m, 6, dtype=np.int8)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        e = np.flatnonzero(st_e == 0)
        if e.size:
            h = np.where(1e-8 > sig_e[e], 1e-8, sig_e[e]) * (1.0 + 1e-9)
            hi[e] = h
            x[e] = h
            if quotes.method == "alo":
                # start from the European vol of the quote less BS2002's early-exercise premium
                ae = a[e]
                euro = bsm_price(quotes.s[ae], quotes.k[ae], t[e], h, quotes.r[ae], quotes.q[ae], quotes.call[ae])
                eep = quotes.model(ae, h, "bs2002") - euro
                guess, st_g, _ = _european(
                    price[e] - eep, lnfk[e], norm[e], t[e], quotes.call[ae], DEFAULT_MAX_ITERATIONS
                )
                use = (st_g == 0) & (0.0 < guess) & (guess < h)
                x[e[use]] = guess[use]
        b = np.flatnonzero(st_e != 0)
        if b.size:
            f_hi[b] = quotes.model(a[b], hi[b]) - price[b]
            ev[b] = 1
            while b.size:
                up = b[f_hi[b] < 0.0]
                if not up.size:
                    break
                lo[up], f_lo[up] = hi[up], f_hi[up]
                hi[up] *= 2.0
                out = up[hi[up] > 1e3]
                done[out] = True
                res_s[out] = 2
                up = up[hi[up] <= 1e3]
                f_hi[up] = quotes.model(a[up], hi[up]) - price[up]
                ev[up] += 1
                b = up
            b = np.flatnonzero((st_e != 0) & ~done)
            ok = b[f_hi[b] <= ftol[b]]
            done[ok] = True
            res_v[ok] = hi[ok]
            res_s[ok] = 0
            x[b] = hi[b]
        x_prev = np.full(m, np.nan)
        f_prev = np.full(m, np.nan)
        side = np.zeros(m, dtype=np.int8)
        while True:
            c = np.flatnonzero(~done & (ev < n_max))
            if not c.size:
                break
            lc, hc, xc, flc, fhc = lo[c], hi[c], x[c], f_lo[c], f_hi[c]
            outside = ~((lc < xc) & (xc < hc))
            sec = np.where(fhc < math.inf, (lc * fhc - hc * flc) / (fhc - flc), 0.5 * (lc + hc))
            sec = np.where((lc < sec) & (sec < hc), sec, 0.5 * (lc + hc))
            xc = np.where(outside, sec, xc)
            fx = quotes.model(a[c], xc) - price[c]
            ev[c] += 1
            vega = np.empty(c.size)
            ac = a[c]
            run_chunked(_vega_kernel, c.size, xc, quotes.s[ac], t[c], quotes.q[ac], lnfk[c], vega)
            # converged: the quote is matched and the European vega says the vol is within VOL_TOL, or the
            # bracket is narrower than tol
            conv = ((np.abs(fx) <= ftol[c]) & (np.abs(fx) <= VOL_TOL * vega)) | ((hc - lc) <= tol)
            done[c[conv]] = True
            res_v[c[conv]] = xc[conv]
            res_s[c[conv]] = 0
            pos = fx > 0.0
            sc = side[c]
            hc = np.where(pos, xc, hc)
            fhc = np.where(pos, fx, fhc)
            flc = np.where(pos & (sc == 1), flc * 0.5, flc)
            lc = np.where(pos, lc, xc)
            flc = np.where(pos, flc, fx)
            fhc = np.where(~pos & (sc == -1) & (fhc < math.inf), fhc * 0.5, fhc)
            xp, fp = x_prev[c], f_prev[c]
            secant = (xp == xp) & (fx != fp)  # secant through the last two points
            newton = np.where(vega > 0.0, xc - fx / vega, math.nan)  # first step: Newton with the European vega
            x_new = np.where(secant, xc - fx * (xc - xp) / (fx - fp), newton)
            lo[c], hi[c], f_lo[c], f_hi[c] = lc, hc, flc, fhc
            side[c] = np.where(pos, 1, -1)
            x_prev[c], f_prev[c] = xc, fx
            x[c] = x_new
    vol[a] = res_v
    status[a] = res_s
    evals[a] = ev
    return vol, status, evals


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def _result(
    shape: tuple[int, ...], vol: FloatArray, status: NDArray[np.int8], iters: NDArray[np.int32]
) -> ImpliedVolResult:
    return ImpliedVolResult(vol.reshape(shape), status.reshape(shape), int(iters.max()) if iters.size else 0)


def _outputs(n: int) -> tuple[FloatArray, NDArray[np.int8], NDArray[np.int32]]:
    return np.empty(n, dtype=np.float64), np.empty(n, dtype=np.int8), np.empty(n, dtype=np.int32)


def implied_vol(
    price: ArrayLike,
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    *,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> ImpliedVolResult:
    """Black-Scholes-Merton implied volatility of European option prices (Jäckel 2015), vectorized.

    Inputs broadcast like ``bsm.bsm_price``; ``F = S e^{(r-q)T}``. Statuses in ``IvStatus``.
    """
    shape, flat = broadcast_inputs(price, spot, strike, time_years, rate, dividend_yield, is_call)
    n = flat[0].size
    lnfk, norm = np.empty(n), np.empty(n)
    if n:
        run_chunked(_norm_kernel, n, _NORM_SPOT, *flat[1:6], lnfk, norm)
    return _result(shape, *_european(flat[0], lnfk, norm, flat[3], flat[6], max_iterations))


def implied_vol_black76(
    price: ArrayLike,
    forward: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    rate: ArrayLike,
    is_call: ArrayLike,
    *,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> ImpliedVolResult:
    """Black (1976) implied volatility from a forward price, discounting at ``rate`` (Jäckel 2015)."""
    shape, flat = broadcast_inputs(price, forward, strike, time_years, rate, is_call)
    n = flat[0].size
    lnfk, norm = np.empty(n), np.empty(n)
    if n:
        run_chunked(_norm_kernel, n, _NORM_FORWARD, *flat[1:5], flat[4], lnfk, norm)
    return _result(shape, *_european(flat[0], lnfk, norm, flat[3], flat[5], max_iterations))


def implied_vol_american(
    price: ArrayLike,
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    *,
    method: Method = DEFAULT_METHOD,
    tol: float = 1e-12,
    max_evaluations: int = 60,
) -> ImpliedVolResult:
    """Implied volatility of American prices under ``american.american_price`` (safeguarded secant).

    Converges when the model price is within ``PRICE_TOL`` of the quote or the volatility bracket is
    narrower than ``tol``; ``iterations`` counts price
    evaluations. ``BELOW_INTRINSIC`` means below the price at zero volatility.
    """
    _method_code(method)
    shape, flat = broadcast_inputs(price, spot, strike, time_years, rate, dividend_yield, is_call)
    vol, status, iters = _american_search(_american_bounds(*flat, method), float(tol), int(max_evaluations))
    return _result(shape, vol, status, iters)


def implied_vol_from_quotes(
    bid: ArrayLike,
    ask: ArrayLike,
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    *,
    style: Literal["european", "american"] = "european",
    method: Method = DEFAULT_METHOD,
) -> ImpliedVolResult:
    """Implied volatility of the mid ``(bid + ask)/2`` (``style`` European or American).

    Zero bids get ``ZERO_PRICE``, ``bid > ask`` gets ``CROSSED``, NaN or negative ask gets
    ``INVALID_INPUT`` (later ones take precedence), all with NaN volatility. Flagged quotes are not inverted
    (their volatility would be discarded; every quote's inversion is its own, so the others' are the same bits);
    ``iterations`` is the most any inverted quote took.
    """
    if style not in ("european", "american"):
        raise ValueError(f"unknown style {style!r}")
    if style == "american":
        _method_code(method)
    mid, flags = _mid_and_flags(bid, ask)
    shape, flat = broadcast_inputs(mid, spot, strike, time_years, rate, dividend_yield, is_call)
    n = flat[0].size
    vol = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int8)
    flagged = np.zeros(n, dtype=bool)
    for mask, code in flags:
        m = np.broadcast_to(mask, shape).reshape(-1)
        status[m] = code
        flagged |= m
    keep = np.flatnonzero(~flagged)
    iterations = 0
    if keep.size:
        args = [a if keep.size == n else a[keep] for a in flat]
        if style == "european":
            res = implied_vol(*args)
        else:
            res = implied_vol_american(*args, method=method)
        vol[keep] = res.vol
        status[keep] = res.status
        iterations = res.iterations
    return ImpliedVolResult(vol.reshape(shape), status.reshape(shape), iterations)


def american_quote_status(
    bid: ArrayLike,
    ask: ArrayLike,
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    *,
    method: Method = DEFAULT_METHOD,
) -> tuple[NDArray[np.int8], NDArray[np.bool_]]:
    """``implied_vol_from_quotes(style="american")``'s checks without its iteration: ``(status, bounded)``.

    ``status`` is the ``IvStatus`` it returns unless its iteration fails: ``OK`` where the mid lies strictly
    between the zero-volatility price and the upper bound, so an implied volatility exists. ``bounded``: the
    European implied vol of the mid bounds the search (else the search doubles a bracket from 100 % and can
    still end ``ABOVE_UPPER_BOUND``).
    """
    mid, flags = _mid_and_flags(bid, ask)
    _method_code(method)
    shape, flat = broadcast_inputs(mid, spot, strike, time_years, rate, dividend_yield, is_call)
    quotes = _american_bounds(*flat, method)
    status = np.maximum(quotes.status, 0).astype(np.int8).reshape(shape)
    bounded = ((quotes.status < 0) & (quotes.st_e == 0)).reshape(shape)
    for mask, flag in flags:
        m = np.broadcast_to(mask, shape)
        status[m] = flag
        bounded[m] = False
    return status, bounded


def _mid_and_flags(bid: ArrayLike, ask: ArrayLike) -> tuple[FloatArray, tuple[tuple[NDArray[np.bool_], IvStatus], ...]]:
    """The mid of each quote and its quote-level failures, later ones taking precedence."""
    bid_a = np.asarray(bid, dtype=np.float64)
    ask_a = np.asarray(ask, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        mid = 0.5 * (bid_a + ask_a)
        crossed = bid_a > ask_a
        zero_bid = bid_a <= 0.0
        bad = np.isnan(bid_a) | np.isnan(ask_a) | (ask_a < 0.0)
    return mid, ((zero_bid, IvStatus.ZERO_PRICE), (crossed, IvStatus.CROSSED), (bad, IvStatus.INVALID_INPUT))
