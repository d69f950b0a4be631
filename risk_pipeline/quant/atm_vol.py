"""Constant-maturity at-the-money implied vol of an option chain (the daily vol risk factor).

Per expiry, the at-the-forward vol ``sigma_e`` is the linear interpolation in log-moneyness
``k = ln(K / F)`` between the out-of-the-money quote with the largest ``k <= 0`` (a put) and the one
with the smallest ``k > 0`` (a call). An expiry without a valid quote on each side of the forward has
no ATM vol. Per underlying, the ``tenor_years`` vol interpolates total variance ``w = sigma^2 T``
linearly in ``T`` between the two expiries bracketing the tenor (the variance-time interpolation of
the VIX methodology, Cboe VIX white paper 2019, and of Gatheral, "The Volatility Surface", ch. 3);
when every listed expiry is after the tenor it is extrapolated along the first two
(``constant_maturity_vol``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import BoolArray, FloatArray, IntArray


def _last_first(
    group: IntArray, x: FloatArray, target: FloatArray, valid: BoolArray, n_groups: int
) -> tuple[IntArray, IntArray]:
    """Per group: index of the valid element with the largest ``x <= target`` and of the smallest ``x > target``."""
    # a stable sort of complex keys is lexicographic (real part, then imaginary; NaN last) like np.lexsort
    order = np.argsort(np.asarray(group, dtype=np.float64) + 1j * np.asarray(x, dtype=np.float64), kind="stable")
    below = order[(valid & (x <= target))[order]][::-1]
    above = order[(valid & (x > target))[order]]
    lo = np.full(n_groups, -1, dtype=np.intp)
    hi = np.full(n_groups, -1, dtype=np.intp)
    g, first = np.unique(group[below], return_index=True)
    lo[g] = below[first]
    g, first = np.unique(group[above], return_index=True)
    hi[g] = above[first]
    return lo, hi


def atm_quote_picks(
    slice_id: ArrayLike, log_moneyness: ArrayLike, is_call: ArrayLike, usable: ArrayLike, n_slices: int
) -> tuple[IntArray, IntArray]:
    """The two quotes ``expiry_atm_vols`` interpolates between, per slice, among the ``usable`` ones: index of
    the OTM put with the largest ``k <= 0`` and of the OTM call with the smallest ``k > 0`` (-1 if none)."""
    sid = np.asarray(slice_id, dtype=np.intp)
    k = np.asarray(log_moneyness, dtype=np.float64)
    call = np.asarray(is_call, dtype=bool)
    otm = np.where(call, k > 0.0, k <= 0.0)
    valid = otm & np.asarray(usable, dtype=bool) & np.isfinite(k)
    return _last_first(sid, k, np.zeros_like(k), valid, n_slices)


def expiry_atm_vols(
    slice_id: ArrayLike, log_moneyness: ArrayLike, implied_vol: ArrayLike, is_call: ArrayLike, n_slices: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """At-the-forward vol per slice (one underlying and expiry) from its OTM quotes' implied vols.

    Returns ``(atm_vol, k_below, k_above)``: NaN where a slice lacks a valid OTM quote on either side.
    """
    k = np.asarray(log_moneyness, dtype=np.float64)
    iv = np.asarray(implied_vol, dtype=np.float64)
    lo, hi = atm_quote_picks(slice_id, k, is_call, np.isfinite(iv) & (iv > 0.0), n_slices)
    ok = (lo >= 0) & (hi >= 0)
    atm = np.full(n_slices, np.nan)
    k_lo = np.full(n_slices, np.nan)
    k_hi = np.full(n_slices, np.nan)
    a, b = lo[ok], hi[ok]
    k_lo[ok], k_hi[ok] = k[a], k[b]
    atm[ok] = iv[a] + (0.0 - k[a]) * (iv[b] - iv[a]) / (k[b] - k[a])
    return atm, k_lo, k_hi


@dataclass(frozen=True, eq=False)
class ConstantMaturityVol:
    """Per underlying: the tenor's ATM vol and the two slices (indices, -1 if none) it came from."""

    atm_vol: FloatArray
    near_slice: IntArray
    far_slice: IntArray
    extrapolated: BoolArray


def constant_maturity_vol(
    underlying_id: ArrayLike, time_years: ArrayLike, atm_vol: ArrayLike, tenor_years: float, n_underlyings: int
) -> ConstantMaturityVol:
    """ATM vol at ``tenor_years`` per underlying from per-slice ATM vols.

    Total variance is interpolated linearly in time between the expiries bracketing the tenor. With
    every expiry after the tenor, it is extrapolated back along the line through the first two, but the
    vol is never below the first expiry's: a falling front (an event before the tenor, a crisis) gives
    a vol above the first expiry's, at most ``sqrt(t1 / tenor)`` times it, as the line gives; a rising
    front (often an event between the first two expiries, which the tenor does not span) gives the first
    expiry's vol instead of a line that can fall to zero. With every expiry before the tenor, or a single
    one, the nearest vol is used. Both cases are flagged ``extrapolated``.
    """
    if not tenor_years > 0.0:
        raise ValueError("tenor_years must be positive")
    uid = np.asarray(underlying_id, dtype=np.intp)
    t = np.asarray(time_years, dtype=np.float64)
    vol = np.asarray(atm_vol, dtype=np.float64)
    valid = np.isfinite(vol) & (vol > 0.0) & np.isfinite(t) & (t > 0.0)
    target = np.full_like(t, tenor_years)
    near, far = _last_first(uid, t, target, valid, n_underlyings)
    bracketed = (near >= 0) & (far >= 0)
    # the second expiry after the tenor, for underlyings listing nothing before it
    taken = np.zeros(t.size, dtype=bool)
    taken[far[far >= 0]] = True
    _, second = _last_first(uid, t, target, valid & ~taken, n_underlyings)
    use_second = (near < 0) & (far >= 0) & (second >= 0)
    near = np.where(use_second, far, near)
    far = np.where(use_second, second, far)
    w = vol**2 * t
    out = np.full(n_underlyings, np.nan)
    pair = (near >= 0) & (far >= 0)
    n_, f_ = near[pair], far[pair]
    w_tau = w[n_] + (tenor_years - t[n_]) * (w[f_] - w[n_]) / (t[f_] - t[n_])
    line = np.sqrt(np.maximum(w_tau, 0.0) / tenor_years)  # w_tau > 0 between two expiries
    # extrapolated back (every expiry after the tenor): not below the first expiry's vol
    out[pair] = np.where(bracketed[pair], line, np.maximum(line, vol[n_]))
    nearest = np.where(near >= 0, near, far)
    flat = np.isnan(out) & (nearest >= 0)
    out[flat] = vol[nearest[flat]]
    return ConstantMaturityVol(out, near, far, ~bracketed & (nearest >= 0))
