"""Implied vols of a whole option chain: European quotes by BSM, American by the exact American engine."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from risk_pipeline.quant.american import DEFAULT_METHOD, MODEL_NAMES
from risk_pipeline.quant.implied_vol import ImpliedVolResult, implied_vol_from_quotes

MODEL_EUROPEAN = "bsm_european"
MODEL_AMERICAN = MODEL_NAMES[DEFAULT_METHOD]  # "american_alo_exact"


def chain_implied_vols(
    bid: ArrayLike,
    ask: ArrayLike,
    spot: ArrayLike,
    strike: ArrayLike,
    time_years: ArrayLike,
    rate: ArrayLike,
    dividend_yield: ArrayLike,
    is_call: ArrayLike,
    is_american: ArrayLike,
) -> tuple[ImpliedVolResult, NDArray[np.str_]]:
    """Implied vol of each mid with the model its exercise style needs, and that model's name."""
    arrays = np.broadcast_arrays(
        *(np.asarray(a, dtype=float) for a in (bid, ask, spot, strike, time_years, rate, dividend_yield)),
        np.asarray(is_call, dtype=bool),
        np.asarray(is_american, dtype=bool),
    )
    *values, call, american = (a.ravel() for a in arrays)
    vol = np.full(call.size, np.nan)
    status = np.zeros(call.size, dtype=np.int8)
    iterations = 0
    for style, mask in (("european", ~american), ("american", american)):
        if not mask.any():
            continue
        res = implied_vol_from_quotes(*(v[mask] for v in values), call[mask], style=style)
        vol[mask] = res.vol
        status[mask] = res.status
        iterations = max(iterations, res.iterations)
    model = np.where(american, MODEL_AMERICAN, MODEL_EUROPEAN)
    return ImpliedVolResult(vol, status, iterations), model
