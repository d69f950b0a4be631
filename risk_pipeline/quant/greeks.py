"""Position-level Greeks: per-unit option Greeks scaled to positions, expiry buckets, betas.

Per-unit Greeks come from ``bsm.bsm_greeks`` (European exercise) or ``american.american_greeks``
(American, the exact engine of ``american_alo.py`` by default). Position conventions
(docs/architecture.md): ``delta`` in shares of the underlying (quantity x multiplier x option delta),
``dollar_delta = delta x spot``, ``gamma`` in shares per 1.00 of spot, ``dollar_gamma_1pct = gamma x spot^2 / 100``,
``vega_per_vol_point`` per 0.01 of vol, ``theta_per_day`` per calendar day, ``rho_per_pct`` per 0.01
of rate; ``vanna``, ``volga``, ``charm`` are the per-unit values times quantity x multiplier. A stock
row has delta = quantity x multiplier and zero option Greeks.

Sticky-delta valuation (vol a function of moneyness ln(K/F), moving with spot) adds the smile's
slope to delta: ``delta_sd = delta + vega x d sigma / d S`` with ``d sigma / d S = -(d sigma / d k) / S``
(Derman 1999, "Regimes of volatility"); sticky-strike (vol fixed per strike) uses the plain delta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from risk_pipeline.quant._numba import FloatArray
from risk_pipeline.quant.american import american_greeks
from risk_pipeline.quant.bsm import bsm_greeks

#: (label, first day, last day) of the expiry buckets, calendar days to expiry.
EXPIRY_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("0-7d", 0, 7),
    ("8-30d", 8, 30),
    ("31-90d", 31, 90),
    ("91d+", 91, np.inf),
)
NO_EXPIRY = "none"


@dataclass(frozen=True, eq=False)
class PositionGreeks:
    """Per-position values (arrays of the positions' length); see the module docstring for units."""

    price: FloatArray
    market_value: FloatArray
    delta: FloatArray
    dollar_delta: FloatArray
    gamma: FloatArray
    dollar_gamma_1pct: FloatArray
    vega_per_vol_point: FloatArray
    theta_per_day: FloatArray
    rho_per_pct: FloatArray
    vanna: FloatArray
    volga: FloatArray
    charm: FloatArray


def position_greeks(
    quantity: ArrayLike,
    multiplier: ArrayLike,
    is_option: ArrayLike,
    is_call: ArrayLike,
    is_american: ArrayLike,
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    vol: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    smile_slope: ArrayLike | None = None,
) -> PositionGreeks:
    """Greeks of every position; ``smile_slope`` (d sigma / d ln K at the strike) turns on sticky-delta."""
    n = np.asarray(quantity).size
    qty = np.asarray(quantity, dtype=float).reshape(n)
    mult = np.asarray(multiplier, dtype=float).reshape(n)
    opt = np.asarray(is_option, dtype=bool).reshape(n)
    s = np.broadcast_to(np.asarray(spot, dtype=float), (n,))
    units = qty * mult
    unit = {
        "price": s.copy(),
        "delta": np.ones(n),
        "gamma": np.zeros(n),
        "vega": np.zeros(n),
        "theta_per_day": np.zeros(n),
        "rho": np.zeros(n),
        "vanna": np.zeros(n),
        "volga": np.zeros(n),
        "charm": np.zeros(n),
    }
    args = [np.broadcast_to(np.asarray(a, dtype=float), (n,)) for a in (strike, time_years, vol, rate, dividend_yield)]
    call = np.broadcast_to(np.asarray(is_call, dtype=bool), (n,))
    american = np.broadcast_to(np.asarray(is_american, dtype=bool), (n,)) & opt
    for mask, fn in ((opt & ~american, bsm_greeks), (american, american_greeks)):
        if not mask.any():
            continue
        res = fn(s[mask], *(a[mask] for a in args), call[mask])
        for name in unit:
            unit[name][mask] = getattr(res, name)
    if smile_slope is not None:
        slope = np.nan_to_num(np.broadcast_to(np.asarray(smile_slope, dtype=float), (n,)))
        unit["delta"] = np.where(opt, unit["delta"] - unit["vega"] * slope / s, unit["delta"])
    delta = units * unit["delta"]
    gamma = units * unit["gamma"]
    return PositionGreeks(
        price=unit["price"],
        market_value=units * unit["price"],
        delta=delta,
        dollar_delta=delta * s,
        gamma=gamma,
        dollar_gamma_1pct=gamma * s * s / 100.0,
        vega_per_vol_point=units * unit["vega"] / 100.0,
        theta_per_day=units * unit["theta_per_day"],
        rho_per_pct=units * unit["rho"] / 100.0,
        vanna=units * unit["vanna"],
        volga=units * unit["volga"],
        charm=units * unit["charm"],
    )


def expiry_bucket(days_to_expiry: ArrayLike, is_option: ArrayLike) -> NDArray[np.object_]:
    """Bucket label per position from calendar days to expiry (``none`` for non-options)."""
    days = np.asarray(days_to_expiry, dtype=float)
    out = np.full(days.shape, NO_EXPIRY, dtype=object)
    opt = np.asarray(is_option, dtype=bool)
    for label, lo, hi in EXPIRY_BUCKETS:
        out[opt & (days >= lo) & (days <= hi)] = label
    out[opt & (days < 0)] = EXPIRY_BUCKETS[0][0]
    return out


def rolling_beta(asset_log_returns: ArrayLike, index_log_returns: ArrayLike, window: int = 252) -> FloatArray:
    """OLS beta of each column of ``asset_log_returns`` (days x assets) on the index over the last window.

    ``beta = cov(r_i, r_m) / var(r_m)`` on the days where both are finite (Hull, RMFI ch. 1).
    """
    r = np.asarray(asset_log_returns, dtype=float)[-window:]
    m = np.asarray(index_log_returns, dtype=float)[-window:]
    if r.ndim == 1:
        r = r[:, None]
    ok = np.isfinite(r) & np.isfinite(m)[:, None]
    count = ok.sum(axis=0)
    mz = np.where(ok, m[:, None], 0.0)
    rz = np.where(ok, r, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m_mean = mz.sum(axis=0) / count
        r_mean = rz.sum(axis=0) / count
        cov = (np.where(ok, (mz - m_mean) * (rz - r_mean), 0.0)).sum(axis=0) / (count - 1)
        var = (np.where(ok, (mz - m_mean) ** 2, 0.0)).sum(axis=0) / (count - 1)
        beta = cov / var
    return np.where(count >= 20, beta, np.nan)
