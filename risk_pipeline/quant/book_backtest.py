"""Hypothetical backtest of a static book: today's positions carried back through history.

For every past day ``t`` the book is re-expressed in day ``t``'s market with the same exposure profile:
per underlying the notional is kept (``quantity_t = quantity * S_T / S_t``), every option keeps its
moneyness and time to expiry (``K_t = K * S_t / S_T``) and its vol moves with the underlying's ATM vol
(``sigma_t = sigma * atm_t / atm_T``, unchanged where an ATM vol is missing); rates, dividend yields,
multipliers and exercise styles are today's. The VaR of that book is made at ``t`` from the
risk-factor history up to ``t`` (``var.compute_var``, the production code path) and compared with the
book's hypothetical P&L from ``t`` to ``t + 1``: full revaluation (exact Bjerksund-Stensland 2002 for
American options) at the next close, the next ATM vol ratio and the calendar days elapsed. This is the
"hypothetical P&L" of Basel (BCBS 2019, MAR32: fixed positions, market moves only) applied to a
constant-exposure book, so the exception count tests the VaR model, not the trading.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import FloatArray, IntArray
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import market_values, revalue
from risk_pipeline.quant.var import (
    ALL_METHODS,
    MONTE_CARLO_FHS,
    MarketHistory,
    VarConfig,
    compute_var,
    fit_garch_or_constant,
)
from risk_pipeline.quant.vol_forecast import GarchParams


def rescaled_book(portfolio: Portfolio, spot: ArrayLike, atm_ratio: ArrayLike) -> Portfolio:
    """``portfolio`` re-expressed at per-symbol ``spot`` with vols scaled by ``atm_ratio`` (module docstring)."""
    s = np.asarray(spot, dtype=np.float64)
    ratio = np.asarray(atm_ratio, dtype=np.float64)
    if s.shape != portfolio.spot.shape or ratio.shape != portfolio.spot.shape:
        raise ValueError("spot and atm_ratio need one value per portfolio symbol")
    if not (np.all(s > 0.0) and np.all(ratio > 0.0)):
        raise ValueError("spot and atm_ratio must be positive")
    move = (s / portfolio.spot)[portfolio.symbol_index]
    opt = portfolio.is_option
    return replace(
        portfolio,
        spot=s,
        quantity=portfolio.quantity / move,
        strike=np.where(opt, portfolio.strike * move, portfolio.strike),
        implied_vol=np.where(opt, portfolio.implied_vol * ratio[portfolio.symbol_index], portfolio.implied_vol),
        position_id=portfolio.position_id,
    )


@dataclass(frozen=True, eq=False)
class StaticBookBacktest:
    """Per backtest day ``t`` (row index into the inputs): the book value, its VaR per method, the next P&L."""

    day_index: IntArray
    book_value: FloatArray
    pnl: FloatArray
    var: dict[str, FloatArray]
    lookback_days: IntArray
    confidence: float
    #: VaR and ES per method at ``es_confidence`` (the ES backtest's level; empty when not asked for)
    es_var: dict[str, FloatArray] = field(default_factory=dict)
    expected_shortfall: dict[str, FloatArray] = field(default_factory=dict)
    es_confidence: float | None = None


def static_book_backtest(
    portfolio: Portfolio,
    closes: ArrayLike,
    atm_vols: ArrayLike,
    calendar_days: ArrayLike,
    days: ArrayLike,
    config: VarConfig,
    *,
    confidence: float = 0.99,
    es_confidence: float | None = None,
    min_history: int = 250,
    methods: tuple[str, ...] = ALL_METHODS,
    refit_every: int = 21,
) -> StaticBookBacktest:
    """Backtest the book of the last row of ``closes`` on the backtest days ``days``.

    ``closes`` and ``atm_vols`` are ``(n_days, n_symbols)`` in the portfolio's symbol order, oldest
    first, the last row being the book's own day (``portfolio.spot`` and vols are that day's);
    ``atm_vols`` may hold NaN. ``calendar_days[i]`` is the calendar-day count from row ``i - 1`` to ``i``.
    Each ``t`` in ``days`` needs ``t + 1 < n_days`` and at least ``min_history`` returns before it; the
    VaR uses the last ``config.lookback_days`` of them. The Monte Carlo method's GARCH(1,1)-t parameters
    are refitted on that window every ``refit_every`` backtest days (warm-started from the last fit) and
    used to filter the window in between, as in ``reference_backtest``.
    """
    if refit_every < 1:
        raise ValueError("refit_every must be at least 1")
    c = np.asarray(closes, dtype=np.float64)
    v = np.asarray(atm_vols, dtype=np.float64)
    gap = np.asarray(calendar_days, dtype=np.float64)
    t_days = np.asarray(days, dtype=np.intp)
    n, m = c.shape
    if m != portfolio.n_symbols or v.shape != c.shape or gap.shape != (n,):
        raise ValueError("closes, atm_vols (n_days, n_symbols) and calendar_days (n_days,) must match the book")
    if np.any(t_days < min_history) or np.any(t_days + 1 >= n):
        raise ValueError(f"every backtest day needs {min_history} returns before it and a next day")
    if not np.all(np.isfinite(c) & (c > 0.0)):
        raise ValueError("closes must be positive and finite")
    returns = np.diff(np.log(c), axis=0)  # returns[i] is row i -> i + 1
    iv_change = v[1:] / v[:-1] - 1.0  # NaN where either vol is missing
    today = v[-1]
    levels = (confidence,) if es_confidence is None else (confidence, es_confidence)
    cfg = replace(config, confidences=levels, horizons=(1,))
    values, pnl, lookbacks = [], [], []
    var: dict[str, list[float]] = {name: [] for name in methods}
    es_var: dict[str, list[float]] = {name: [] for name in methods} if es_confidence is not None else {}
    es: dict[str, list[float]] = {name: [] for name in methods} if es_confidence is not None else {}
    params: list[GarchParams] | None = None
    for i, t in enumerate(t_days):
        ratio = np.where(np.isfinite(v[t]) & np.isfinite(today), v[t] / today, 1.0)
        book = rescaled_book(portfolio, c[t], ratio)
        first = max(0, t - cfg.lookback_days)
        history = MarketHistory(returns[first:t], iv_change[first:t])
        if MONTE_CARLO_FHS in methods and (params is None or i % refit_every == 0):
            params = [
                fit_garch_or_constant(returns[first:t, s], None if params is None else params[s]) for s in range(m)
            ]
        report = compute_var(book, history, cfg, methods=methods, garch_params=params)
        vol_move = np.where(np.isfinite(iv_change[t]), 1.0 + iv_change[t], 1.0)
        moved = revalue(
            book,
            (c[t + 1] / c[t] - 1.0)[None, :],
            horizon_days=float(gap[t + 1]),
            vol_scale=vol_move[None, :],
            american="exact",
        )
        values.append(float(market_values(book).sum()))
        pnl.append(float(moved.pnl[0]))
        lookbacks.append(t - first)
        for name in methods:
            var[name].append(report.get(name, 1, confidence).var)
            if es_confidence is not None:
                at_es = report.get(name, 1, es_confidence)
                es_var[name].append(at_es.var)
                es[name].append(at_es.expected_shortfall)
    return StaticBookBacktest(
        day_index=t_days.copy(),
        book_value=np.asarray(values),
        pnl=np.asarray(pnl),
        var={name: np.asarray(x) for name, x in var.items()},
        lookback_days=np.asarray(lookbacks, dtype=np.intp),
        confidence=confidence,
        es_var={name: np.asarray(x) for name, x in es_var.items()},
        expected_shortfall={name: np.asarray(x) for name, x in es.items()},
        es_confidence=es_confidence,
    )
