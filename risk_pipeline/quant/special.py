"""Special functions of the pricing core: the normal distribution, erfc/erfcx and fast exp/log.

One set of W. J. Cody's rational Chebyshev coefficients for erf/erfc (Math. Comp. 23, 1969; netlib
specfun CALERF) serves two evaluations:

* ``norm_cdf_from_exp`` (with ``exp_minus_half_square``, ``fast_exp``, ``fast_log``): branch-free,
  inlined into the vectorized kernels of ``bsm.py``, ``american.py``, ``american_alo.py`` and
  ``scenario_engine.py`` (relative accuracy ~1e-15, polynomial ``exp``/``log`` within 2 and 4 ulp);
* ``calerf`` (``erfc``, ``erfcx``, ``norm_cdf``): Cody's CALERF as written, for scalar code such as
  Jäckel's implied volatility in ``implied_vol.py``.

``inverse_norm_cdf`` is Wichura's AS241 (Appl. Statist. 37, 1988).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from risk_pipeline.quant._numba import JIT, inner_njit

_DBL_EPSILON = float(np.finfo(np.float64).eps)
_DBL_MAX = float(np.finfo(np.float64).max)
_SQRT_DBL_EPSILON = math.sqrt(_DBL_EPSILON)
_ONE_OVER_SQRT_TWO = 1.0 / math.sqrt(2.0)
_ONE_OVER_SQRT_TWO_PI = 1.0 / math.sqrt(2.0 * math.pi)
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


@inner_njit(forceinline=True)
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


@inner_njit(forceinline=True)
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


@inner_njit(forceinline=True)
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
    num2 = (((((((_C8 * y2 + _C0) * y2 + _C1) * y2 + _C2) * y2 + _C3) * y2 + _C4) * y2 + _C5) * y2 + _C6) * y2 + _C7
    den2 = (((((((y2 + _D0) * y2 + _D1) * y2 + _D2) * y2 + _D3) * y2 + _D4) * y2 + _D5) * y2 + _D6) * y2 + _D7
    y3 = np.minimum(np.maximum(y, 4.0), 32.0)  # e == 0 beyond y = 27.3, the clamp keeps terms finite
    w3 = y3 * y3
    p3 = ((((_P4 * w3 + _P3) * w3 + _P2) * w3 + _P1) * w3 + _P0) * w3 + _P5
    q3 = w3 * (((((_Q4 * w3 + _Q3) * w3 + _Q2) * w3 + _Q1) * w3 + _Q0) * w3 + 1.0)
    ratio = (m1 * num1 + m2 * num2 + m3 * (q3 * _SQRT_PI_INV - p3)) / (m1 * den1 + m2 * den2 + m3 * q3 * y3)
    tail = 0.5 * (m1 * (1.0 - y1 * ratio) + (1.0 - m1) * (e * ratio))  # N(-|z|)
    return tail if z < 0.0 else 1.0 - tail


@inner_njit(forceinline=True)
def exp_minus_half_square(z: float) -> float:
    """``exp(-z^2/2)`` to full relative accuracy: Dekker's exact ``z^2 = hi + lo``, ``e^{-hi/2}(1 - lo/2)``."""
    zc = np.minimum(np.maximum(z, -1e10), 1e10)  # beyond, the result underflows to 0 anyway
    hi = zc * zc
    c = 134217729.0 * zc  # 2^27 + 1
    zh = c - (c - zc)
    zl = zc - zh
    lo = ((zh * zh - hi) + 2.0 * zh * zl) + zl * zl
    return fast_exp(-0.5 * hi) * (1.0 - 0.5 * lo)


@inner_njit()
def norm_cdf_nb(z: float) -> float:
    """Standard normal CDF ``N(z)`` for scalar numba code (Cody 1969, relative accuracy ~1e-15)."""
    return norm_cdf_from_exp(z, exp_minus_half_square(z))


@inner_njit()
def exp_minus_square(y: float) -> float:
    """``exp(-y^2)`` to full relative accuracy: Dekker's exact ``y^2 = hi + lo`` then ``e^{-hi}(1 - lo)``.

    Replaces Cody's ``exp(-ysq^2) exp(-del)`` split with one ``exp`` (valid for ``|y| < 1e150``).
    """
    hi = y * y
    c = 134217729.0 * y  # 2^27 + 1
    yh = c - (c - y)
    yl = y - yh
    lo = ((yh * yh - hi) + 2.0 * yh * yl) + yl * yl
    return math.exp(-hi) * (1.0 - lo)


@inner_njit()
def calerf(x: float, jint: int) -> float:
    """Cody's CALERF: ``erfc(x)`` for ``jint == 1``, ``erfcx(x) = exp(x^2) erfc(x)`` for ``jint == 2``.

    Rational Chebyshev coefficients of Cody (1969) / netlib specfun, Horner loops unrolled; the
    ``exp(-y^2)`` factors come from ``_exp_minus_square`` (one ``exp``, same accuracy as Cody's split).
    """
    y = abs(x)
    if y <= 0.46875:
        ysq = y * y if y > 1.11e-16 else 0.0
        xnum = (((_A4 * ysq + _A0) * ysq + _A1) * ysq + _A2) * ysq + _A3
        xden = (((ysq + _B0) * ysq + _B1) * ysq + _B2) * ysq + _B3
        result = 1.0 - x * xnum / xden
        return math.exp(ysq) * result if jint == 2 else result
    if y <= 4.0:
        xnum = (((((((_C8 * y + _C0) * y + _C1) * y + _C2) * y + _C3) * y + _C4) * y + _C5) * y + _C6) * y + _C7
        xden = (((((((y + _D0) * y + _D1) * y + _D2) * y + _D3) * y + _D4) * y + _D5) * y + _D6) * y + _D7
        result = xnum / xden
        if jint != 2:
            result = exp_minus_square(y) * result
    elif y >= 26.543 and (jint != 2 or y >= 2.53e307):
        result = 0.0
    elif y >= 6.71e7:
        result = 0.56418958354775628695 / y
    else:
        ysq = 1.0 / (y * y)
        xnum = ((((_P5 * ysq + _P0) * ysq + _P1) * ysq + _P2) * ysq + _P3) * ysq + _P4
        xden = ((((ysq + _Q0) * ysq + _Q1) * ysq + _Q2) * ysq + _Q3) * ysq + _Q4
        result = (0.56418958354775628695 - ysq * xnum / xden) / y
        if jint != 2:
            result = exp_minus_square(y) * result
    if jint == 1:
        return 2.0 - result if x < 0.0 else result
    if x < 0.0:
        if x < -26.628:
            return _DBL_MAX
        yy = 1.0 / exp_minus_square(x)
        return yy + yy - result
    return result


@njit(**JIT)
def erfc(x: float) -> float:
    """Complementary error function (Cody's CALERF, ``jint = 1``)."""
    return calerf(x, np.int64(1))  # not a literal: one compiled signature of calerf


@inner_njit()
def erfcx(x: float) -> float:
    """Scaled complementary error function ``exp(x^2) erfc(x)`` (Cody's CALERF, ``jint = 2``)."""
    return calerf(x, np.int64(2))


@inner_njit()
def norm_pdf(x: float) -> float:
    """Standard normal density."""
    return _ONE_OVER_SQRT_TWO_PI * math.exp(-0.5 * x * x)


@inner_njit()
def norm_cdf(z: float) -> float:
    """``N(z)``; below -10 the asymptotic series of Abramowitz-Stegun 26.2.12 (as in Jäckel's code)."""
    if z <= -10.0:
        total = 1.0
        if z >= -1.0 / _SQRT_DBL_EPSILON:
            zsqr = z * z
            i = 1.0
            g = 1.0
            a = _DBL_MAX
            while True:
                lasta = a
                xx = (4.0 * i - 3.0) / zsqr
                yy = xx * ((4.0 * i - 1.0) / zsqr)
                a = g * (xx - yy)
                total -= a
                g *= yy
                i += 1.0
                a = abs(a)
                if not (lasta > a and a >= abs(total * _DBL_EPSILON)):
                    break
        return -norm_pdf(z) * total / z
    return 0.5 * erfc(-z * _ONE_OVER_SQRT_TWO)


@inner_njit()
def inverse_norm_cdf(u: float) -> float:
    """Wichura's AS241 (PPND16), about 1e-16 relative accuracy."""
    if u <= 0.0:
        return -math.inf
    if u >= 1.0:
        return math.inf
    q = u - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return (
            q
            * (
                (
                    (
                        (
                            (
                                ((2.5090809287301226727e3 * r + 3.3430575583588128105e4) * r + 6.7265770927008700853e4)
                                * r
                                + 4.5921953931549871457e4
                            )
                            * r
                            + 1.3731693765509461125e4
                        )
                        * r
                        + 1.9715909503065514427e3
                    )
                    * r
                    + 1.3314166789178437745e2
                )
                * r
                + 3.3871328727963666080e0
            )
            / (
                (
                    (
                        (
                            (
                                ((5.2264952788528545610e3 * r + 2.8729085735721942674e4) * r + 3.9307895800092710610e4)
                                * r
                                + 2.1213794301586595867e4
                            )
                            * r
                            + 5.3941960214247511077e3
                        )
                        * r
                        + 6.8718700749205790830e2
                    )
                    * r
                    + 4.2313330701600911252e1
                )
                * r
                + 1.0
            )
        )
    r = u if q < 0.0 else 1.0 - u
    r = math.sqrt(-math.log(r))
    if r < 5.0:
        r -= 1.6
        ret = (
            (
                (
                    (
                        (
                            (
                                (7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r
                                + 2.41780725177450611770e-1
                            )
                            * r
                            + 1.27045825245236838258e0
                        )
                        * r
                        + 3.64784832476320460504e0
                    )
                    * r
                    + 5.76949722146069140550e0
                )
                * r
                + 4.63033784615654529590e0
            )
            * r
            + 1.42343711074968357734e0
        ) / (
            (
                (
                    (
                        (
                            (
                                (1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r
                                + 1.51986665636164571966e-2
                            )
                            * r
                            + 1.48103976427480074590e-1
                        )
                        * r
                        + 6.89767334985100004550e-1
                    )
                    * r
                    + 1.67638483018380384940e0
                )
                * r
                + 2.05319162663775882187e0
            )
            * r
            + 1.0
        )
    else:
        r -= 5.0
        ret = (
            (
                (
                    (
                        (
                            (
                                (2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r
                                + 1.24266094738807843860e-3
                            )
                            * r
                            + 2.65321895265761230930e-2
                        )
                        * r
                        + 2.96560571828504891230e-1
                    )
                    * r
                    + 1.78482653991729133580e0
                )
                * r
                + 5.46378491116411436990e0
            )
            * r
            + 6.65790464350110377720e0
        ) / (
            (
                (
                    (
                        (
                            (
                                (2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r
                                + 1.84631831751005468180e-5
                            )
                            * r
                            + 7.86869131145613259100e-4
                        )
                        * r
                        + 1.48753612908506148525e-2
                    )
                    * r
                    + 1.36929880922735805310e-1
                )
                * r
                + 5.99832206555887937690e-1
            )
            * r
            + 1.0
        )
    return -ret if q < 0.0 else ret
