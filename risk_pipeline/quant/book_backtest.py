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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import overload

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import FloatArray, IntArray
from risk_pipeline.quant.portfolio import Portfolio, stack_portfolios
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate, evaluate_many, market_values, share_values
from risk_pipeline.quant.smile_dynamics import ExpiryScaledVolMoves, SmileDynamics
from risk_pipeline.quant.var import (
    ALL_METHODS,
    MONTE_CARLO_FHS,
    MarketHistory,
    VarConfig,
    VarReport,
    compute_var_batch,
    fit_garch_or_constant,
)
from risk_pipeline.quant.vol_forecast import GarchParams

#: Scenario rows x positions of one ``compute_var_batch`` call of the backtest (each per-position array of the
#: stacked call is at most this many floats, 400 MB).
BATCH_CELLS = 50_000_000


def days_per_batch(lookbacks: Sequence[int], n_positions: int) -> int:
    """Backtest days per ``compute_var_batch`` call of ``static_book_backtest``: as many as keep the scenario rows the
    call holds x the stacked positions within ``BATCH_CELLS`` (at least one). With the backtest's one-day horizon both
    the historical and the Monte Carlo (every filtered date once) sets hold one row per return of the longest window
    of the call (``lookbacks``: each day's window rows, at most ``VarConfig.lookback_days``, fewer where the history
    is shorter), so the rows the windows really hold size the calls, not the configured look-back."""
    rows = max(lookbacks, default=1)
    return max(1, BATCH_CELLS // max(1, rows * n_positions))


#: GARCH fits by (returns window as bytes, warm start, GJR): books of one run sharing an underlying share its fits.
GarchCache = dict[tuple[bytes, GarchParams | None, bool], GarchParams]


def _garch_fit(
    returns: FloatArray, previous: GarchParams | None, cache: GarchCache | None, asymmetric: bool = False
) -> GarchParams:
    """``fit_garch_or_constant(returns, previous, asymmetric)``, looked up in ``cache`` first (and stored there)."""
    if cache is None:
        return fit_garch_or_constant(returns, previous, asymmetric)
    key = (returns.tobytes(), previous, asymmetric)
    if key not in cache:
        cache[key] = fit_garch_or_constant(returns, previous, asymmetric)
    return cache[key]


def rolling_garch_fits(
    closes: ArrayLike,
    days: ArrayLike,
    lookback_days: int,
    *,
    refit_every: int = 21,
    garch_cache: GarchCache | None = None,
    asymmetric: Sequence[bool] | None = None,
) -> list[list[GarchParams]]:
    """The Monte Carlo method's GARCH(1,1)-t parameters per symbol on each backtest day (``static_book_backtest``;
    GJR-GARCH(1,1)-t for the symbols flagged ``asymmetric``, as ``var.fit_fhs`` fits them).

    On every ``refit_every``-th day (the first included) each symbol's model is refitted on the day's look-back
    window of log returns (the last ``lookback_days`` before it), warm-started from the previous fit; the days
    in between keep the last fit. Independent of the book's positions, so it can run ahead of (or beside) the
    revaluation.
    """
    if refit_every < 1:
        raise ValueError("refit_every must be at least 1")
    returns = np.diff(np.log(np.asarray(closes, dtype=np.float64)), axis=0)  # returns[i] is row i -> i + 1
    m = returns.shape[1]
    gjr = [False] * m if asymmetric is None else [bool(a) for a in asymmetric]
    if len(gjr) != m:
        raise ValueError("asymmetric must have one entry per symbol")
    fits: list[list[GarchParams]] = []
    params: list[GarchParams] | None = None
    for i, t in enumerate(np.asarray(days, dtype=np.intp)):
        first = max(0, t - lookback_days)
        if params is None or i % refit_every == 0:
            previous = [None] * m if params is None else params
            params = [_garch_fit(returns[first:t, s], previous[s], garch_cache, gjr[s]) for s in range(m)]
        fits.append(params)
    return fits


class _LazyFits(Sequence[list[GarchParams]]):
    """Days ``lo:hi`` of the backtest's GARCH fits, taken from ``get()`` only when a day's fits are read (the Monte
    Carlo method comes last in ``compute_var_batch``, so that fits made on another thread are waited for only
    then)."""

    def __init__(self, get: Callable[[], list[list[GarchParams]]], lo: int, hi: int) -> None:
        self._get, self._lo, self._hi = get, lo, hi

    def __len__(self) -> int:
        return self._hi - self._lo

    @overload
    def __getitem__(self, k: int) -> list[GarchParams]: ...
    @overload
    def __getitem__(self, k: slice) -> _LazyFits: ...
    def __getitem__(self, k: int | slice) -> list[GarchParams] | _LazyFits:
        if isinstance(k, slice):
            lo, hi, step = k.indices(len(self))
            if step != 1:
                raise ValueError("only contiguous days")
            return _LazyFits(self._get, self._lo + lo, self._lo + max(lo, hi))
        i = k + len(self) if k < 0 else k
        if not 0 <= i < len(self):
            raise IndexError(k)
        return self._get()[self._lo + i]


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
    garch_cache: GarchCache | None = None,
    garch_fits: list[list[GarchParams]] | Callable[[], list[list[GarchParams]]] | None = None,
    term: SmileDynamics | None = None,
    fhs_asymmetric: Sequence[bool] | None = None,
    days_per_call: int | None = None,
) -> StaticBookBacktest:
    """Backtest the book of the last row of ``closes`` on the backtest days ``days``.

        ``closes`` and ``atm_vols`` are ``(n_days, n_symbols)`` in the portfolio's symbol order, oldest
        first, the last row being the book's own day (``portfolio.spot`` and vols are that day's);
        ``atm_vols`` may hold NaN. ``calendar_days[i]`` is the calendar-day count from row ``i - 1`` to ``i``.
        Each ``t`` in ``days`` needs ``t + 1 < n_days`` and at least ``min_history`` returns before it; the
        VaR uses the last ``config.lookback_days`` of them. The Monte Carlo method's GARCH(1,1)-t parameters
        are refitted on that window every ``refit_every`` backtest days (warm-started from the last fit) and
        used to filter the window in between, as in ``reference_backtest``; ``garch_cache`` (one dict for the books
        of a run) lets books that share an underlying share its fits; ``garch_fits`` are those fits made
        beforehand (``rolling_garch_fits`` with the same closes, days, look-back and ``refit_every``), or a function
    returning them, called only when the Monte Carlo method needs them (e.g. a future's ``result`` of fits made on
    another thread, so that the other methods run meanwhile). Every day's
        VaR is ``var.compute_var``'s, computed for all days at once (``var.compute_var_batch``: one scenario-engine
        call per method). ``term`` (``smile_dynamics.ExpiryScaledVolMoves``): the historical VaR's and the P&L's ATM
        vol move scaled by expiry, as ``var.historical_var`` applies it (None: every expiry moves by the ATM ratio).
        ``fhs_asymmetric``: the symbols the Monte Carlo method filters with GJR-GARCH (``rolling_garch_fits``).
        ``days_per_call``: backtest days per ``compute_var_batch`` call and per stacked revaluation of the next day's
        P&L (default: ``days_per_batch``, as many as keep the scenarios the call holds x positions within
        ``BATCH_CELLS``, so memory stays bounded for large books; the figures do not depend on it).
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
    books, histories, lookbacks = [], [], []
    for t in t_days:  # per day: the rescaled book and its history
        ratio = np.where(np.isfinite(v[t]) & np.isfinite(today), v[t] / today, 1.0)
        books.append(rescaled_book(portfolio, c[t], ratio))
        first = max(0, t - cfg.lookback_days)
        histories.append(MarketHistory(returns[first:t], iv_change[first:t]))
        lookbacks.append(t - first)
    fits: Sequence[list[GarchParams] | None] = [None] * len(t_days)
    if MONTE_CARLO_FHS in methods:  # every refit_every days GARCH fits (given, or made here)
        if garch_fits is None:
            garch_fits = rolling_garch_fits(
                c,
                t_days,
                cfg.lookback_days,
                refit_every=refit_every,
                garch_cache=garch_cache,
                asymmetric=fhs_asymmetric,
            )
        source = garch_fits
        resolved: list[list[list[GarchParams]]] = []

        def checked_fits() -> list[list[GarchParams]]:
            if not resolved:
                got = source() if callable(source) else source
                if len(got) != len(t_days) or any(len(p) != m for p in got):
                    raise ValueError("garch_fits needs one set of per-symbol parameters per backtest day")
                resolved.append(got)
            return resolved[0]

        if not callable(source):
            checked_fits()  # given fits are checked at once
        fits = _LazyFits(checked_fits, 0, len(t_days))
    # every day's VaR by the production code path, the days' books in as few scenario-engine calls per method as
    # the memory bound allows (one call for the sample books)
    per_call = days_per_call or days_per_batch(lookbacks, portfolio.n_positions)
    reports: list[VarReport] = []
    n_pos = portfolio.n_positions
    value_parts = [np.zeros(0)]
    stacks: list[Portfolio] = []  # the stacked book of each call: day k is block k % per_call of stacks[k // per_call]
    for lo in range(0, len(books), per_call):
        hi = lo + per_call
        stacked = stack_portfolios(books[lo:hi])
        stacks.append(stacked)
        reports += compute_var_batch(  # no component VaR or ES: the backtest reads the VaR and ES only
            books[lo:hi],
            histories[lo:hi],
            cfg,
            methods=methods,
            garch_params=fits[lo:hi],
            term=term,
            stacked=stacked,
            components=False,
            warm_bumps=True,  # the time bumps' boundaries from the base ones: equal to rounding, about 7 % less CPU
        )
        # each day's book value: today's option values, which the VaR's engine calls cached on the stacked book
        # (each option priced on its own: the same bits as a stack of every day's book)
        value_parts.append(market_values(stacked).reshape(-1, n_pos).sum(axis=1))
    values = np.concatenate(value_parts)
    # the next day's full revaluation (exact American prices), the days of one calendar gap and of one VaR call
    # together (at most per_call days' books stacked in one call; each book's P&L is its own options', bit for bit
    # whatever the stack): a block within one call takes today's option values from that call's stacked book, where a
    # block of days from two calls priced them all again (at 50,000 positions, two days a call)
    pnl = np.empty(len(books))
    step = gap[t_days + 1]
    call_of = np.arange(len(books)) // per_call
    blocks = [
        np.flatnonzero((step == d) & (call_of == k))
        for d in np.unique(step)
        for k in range(int(call_of.max(initial=-1)) + 1)
    ]
    blocks = [idx for idx in blocks if idx.size]
    for idx in blocks:
        days_elapsed = step[idx[0]]
        tt = t_days[idx]
        vol_move = np.where(np.isfinite(iv_change[tt]), 1.0 + iv_change[tt], 1.0)
        # the days' books stacked as the engine stacks them, given today's option values the VaR's calls priced
        # (each option on its own: the same bits), so that only the moved prices are computed here
        day_books = [books[k] for k in idx]
        together = stack_portfolios(day_books)
        rows = ((idx % per_call)[:, None] * n_pos + np.arange(n_pos)[None, :]).ravel()
        share_values(stacks[int(call_of[idx[0]])], rows, together)  # the block's days are of one call
        if term is None or type(term) is ExpiryScaledVolMoves:
            # the days' one-scenario sets made side by side at once, as evaluate_many stacks them: the same moves,
            # vol scales and (element-wise) vol shifts, so the same bits; each day's P&L its block's sum, as there
            together_set = ScenarioSet((c[tt + 1] / c[tt] - 1.0).reshape(1, -1), vol_scale=vol_move.reshape(1, -1))
            if term is not None:
                together_set = replace(
                    together_set, vol_shift_abs=term.shifts(together, together_set), vol_shift_per_position=True
                )
            res = evaluate(together, together_set, float(days_elapsed), american="exact", per_symbol=True)
            assert res.by_symbol is not None
            pnl[idx] = [float(res.by_symbol[:1, j * m : (j + 1) * m].sum(axis=1)[0]) for j in range(idx.size)]
            continue
        sets = [ScenarioSet((c[t + 1] / c[t] - 1.0)[None, :], vol_scale=vol_move[j][None, :]) for j, t in enumerate(tt)]
        if term is not None:
            sets = [
                replace(sc, vol_shift_abs=term.shifts(books[k], sc), vol_shift_per_position=True)
                for k, sc in zip(idx, sets, strict=True)
            ]
        moved = evaluate_many(day_books, sets, float(days_elapsed), american="exact", stacked=together)
        pnl[idx] = [float(r.pnl[0]) for r in moved]
    var = {name: np.array([r.get(name, 1, confidence).var for r in reports]) for name in methods}
    es_var: dict[str, FloatArray] = {}
    es: dict[str, FloatArray] = {}
    if es_confidence is not None:
        for name in methods:
            at_es = [r.get(name, 1, es_confidence) for r in reports]
            es_var[name] = np.array([x.var for x in at_es])
            es[name] = np.array([x.expected_shortfall for x in at_es])
    return StaticBookBacktest(
        day_index=t_days.copy(),
        book_value=np.asarray(values, dtype=np.float64),
        pnl=pnl,
        var=var,
        lookback_days=np.asarray(lookbacks, dtype=np.intp),
        confidence=confidence,
        es_var=es_var,
        expected_shortfall=es,
        es_confidence=es_confidence,
    )
