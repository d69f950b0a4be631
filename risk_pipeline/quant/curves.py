"""Discounting and forwards: zero-curve interpolation, time to expiry, put-call-parity forwards.

Conventions: continuously compounded zero rates; time in years ACT/365 (calendar time, as the
pricing core uses); the zero curve is interpolated linearly in the zero rate between tenors and
extrapolated flat beyond the end points (the convention the synthetic source prices with).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import FloatArray

DAYS_PER_YEAR = 365.0


def zero_rate(tenor_days: ArrayLike, rates: ArrayLike, time_years: ArrayLike) -> FloatArray:
    """Zero rate at ``time_years`` from a curve given at ``tenor_days`` (ascending)."""
    tenors = np.asarray(tenor_days, dtype=float) / DAYS_PER_YEAR
    r = np.asarray(rates, dtype=float)
    t = np.asarray(time_years, dtype=float)
    if tenors.ndim != 1 or tenors.size == 0 or tenors.size != r.size:
        raise ValueError("curve needs matching, non-empty tenor and rate arrays")
    order = np.argsort(tenors)
    tenors, r = tenors[order], r[order]
    return np.interp(t, tenors, r)  # np.interp is flat outside the end points


def discount_factor(rate: ArrayLike, time_years: ArrayLike) -> FloatArray:
    return np.exp(-np.asarray(rate, dtype=float) * np.asarray(time_years, dtype=float))


def forward_price(spot: ArrayLike, rate: ArrayLike, dividend_yield: ArrayLike, time_years: ArrayLike) -> FloatArray:
    """F = S exp((r - q) T)."""
    return np.asarray(spot, dtype=float) * np.exp(
        (np.asarray(rate, dtype=float) - np.asarray(dividend_yield, dtype=float)) * np.asarray(time_years, dtype=float)
    )


def year_fraction(start_ns: ArrayLike, end_ns: ArrayLike) -> FloatArray:
    """(end - start) in years ACT/365 from int64 nanosecond timestamps (UTC)."""
    diff = np.asarray(end_ns, dtype=np.int64) - np.asarray(start_ns, dtype=np.int64)
    return diff.astype(float) / (86_400e9 * DAYS_PER_YEAR)


def parity_forward(
    strike: ArrayLike,
    call_mid: ArrayLike,
    put_mid: ArrayLike,
    discount: float,
    reference_forward: float,
    n_strikes: int = 3,
) -> float:
    """Forward implied by put-call parity, C - P = D (F - K), for one European expiry.

    Uses the median of F = K + (C - P) / D over the ``n_strikes`` strikes nearest
    ``reference_forward`` that have both a call and a put mid; NaN when none has.
    """
    k = np.asarray(strike, dtype=float)
    c = np.asarray(call_mid, dtype=float)
    p = np.asarray(put_mid, dtype=float)
    ok = np.isfinite(c) & np.isfinite(p) & (k > 0)
    if not ok.any() or not discount > 0:
        return float("nan")
    k, c, p = k[ok], c[ok], p[ok]
    nearest = np.argsort(np.abs(k - reference_forward))[:n_strikes]
    return float(np.median(k[nearest] + (c[nearest] - p[nearest]) / discount))
