"""VaR backtest of a reference index portfolio on a real close series (e.g. the S&P 500 in ``arch``).

Portfolio held from each day t to t+1: a constant notional of the index, and optionally a collar
of one-month options on the same units (long an at-the-money put, short a 5 % out-of-the-money
call), re-struck every day, priced by Black-Scholes with the GARCH(1,1)-t conditional volatility
as implied vol, zero rate and dividend yield. Its realized P&L from t to t+1 is compared with the
VaR made at t from the returns up to t (``var.compute_var``: historical with full revaluation and
the GARCH-vol changes as the implied-vol history, delta-normal, delta-gamma Cornish-Fisher and
filtered historical simulation). GARCH is refitted every ``refit_every`` days on the expanding
window and filtered daily in between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from risk_pipeline.quant._numba import FloatArray
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.var import ALL_METHODS, MarketHistory, VarConfig, compute_var
from risk_pipeline.quant.vol_forecast import GarchParams, fit_garch, garch_variance

TRADING_DAYS = 252
OPTION_DAYS = 21
CALL_MONEYNESS = 1.05


@dataclass(frozen=True, eq=False)
class ReferenceBacktest:
    """Per method: realized P&L from t to t+1 and the VaR made at t, on the same days."""

    day_index: NDArray[np.intp]
    pnl: FloatArray
    var: dict[str, FloatArray]
    confidence: float
    with_options: bool


def _collar_units(notional: float, spot: float) -> float:
    return notional / spot


def _portfolio(spot: float, vol: float, units: float, with_options: bool) -> Portfolio:
    t = OPTION_DAYS / TRADING_DAYS
    if not with_options:
        return Portfolio(symbols=("IDX",), spot=[spot], symbol_index=[0], quantity=[units])
    return Portfolio(
        symbols=("IDX",),
        spot=[spot],
        symbol_index=[0, 0, 0],
        quantity=[units, units, -units],
        is_option=[False, True, True],
        is_call=[False, False, True],
        strike=[1.0, spot, CALL_MONEYNESS * spot],
        time_years=[0.0, t, t],
        implied_vol=[0.0, vol, vol],
    )


def _book_value(spot: float, vol: float, strikes: tuple[float, float], t: float, units: float, options: bool) -> float:
    value = units * spot
    if options:
        put = bsm_price(spot, strikes[0], t, vol, 0.0, 0.0, False)
        call = bsm_price(spot, strikes[1], t, vol, 0.0, 0.0, True)
        value += units * (float(put) - float(call))
    return value


def run_reference_backtest(
    closes: ArrayLike,
    *,
    with_options: bool,
    first_day: int = 504,
    lookback: int = 500,
    confidence: float = 0.99,
    notional: float = 10_000_000.0,
    n_scenarios: int = 10_000,
    refit_every: int = 21,
    methods: tuple[str, ...] = ALL_METHODS,
    seed: int = 0,
) -> ReferenceBacktest:
    """VaR at ``confidence`` made each day from ``first_day`` on, against the next day's realized P&L."""
    c = np.asarray(closes, dtype=float)
    r = np.diff(np.log(c))
    n_days = r.size
    params: GarchParams | None = None
    cfg = VarConfig(
        confidences=(confidence,), horizons=(1,), lookback_days=lookback, n_scenarios=n_scenarios, seed=seed
    )
    days, pnl = [], []
    var: dict[str, list[float]] = {m: [] for m in methods}
    for t in range(first_day, n_days):  # close t is known, r[t] is the move to t+1
        if params is None or (t - first_day) % refit_every == 0:
            params = fit_garch(r[:t], previous=params)
        # variance[s] is the forecast for r[s] from r[0..s-1]; [t] is today's, [t + 1] tomorrow's
        variance = garch_variance(params, r[: t + 1])
        vol_t = float(np.sqrt(variance[t] * TRADING_DAYS))
        vol_hist = np.sqrt(variance[t - lookback : t + 1] * TRADING_DAYS)
        iv_changes = vol_hist[1:] / vol_hist[:-1] - 1.0
        spot = float(c[t])
        units = _collar_units(notional, spot)
        portfolio = _portfolio(spot, vol_t, units, with_options)
        history = MarketHistory(r[t - lookback : t, None], iv_changes[:, None])
        report = compute_var(portfolio, history, cfg, methods=methods, garch_params=[params])
        # realized: the same book one day later at the next close and the next conditional vol
        vol_next = float(np.sqrt(variance[t + 1] * TRADING_DAYS))
        strikes = (spot, CALL_MONEYNESS * spot)
        t_opt = OPTION_DAYS / TRADING_DAYS
        before = _book_value(spot, vol_t, strikes, t_opt, units, with_options)
        after = _book_value(float(c[t + 1]), vol_next, strikes, t_opt - 1 / TRADING_DAYS, units, with_options)
        days.append(t)
        pnl.append(after - before)
        for m in methods:
            var[m].append(report.get(m, 1, confidence).var)
    return ReferenceBacktest(
        day_index=np.asarray(days, dtype=np.intp),
        pnl=np.asarray(pnl),
        var={m: np.asarray(v) for m, v in var.items()},
        confidence=confidence,
        with_options=with_options,
    )
