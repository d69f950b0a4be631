"""Performance of strategies and of the risk controls: returns ratios, trades, stops, counterfactual control effects.

Returns-based (``r`` = daily simple returns, ``N = 252`` sessions a year; the standard ratios come from
``empyrical`` (empyrical-reloaded), the field's reference implementation, so they match pyfolio/zipline)::

    cumulative_return   = prod(1 + r) - 1                                   empyrical.cum_returns_final
    annual_return       = (1 + cumulative_return) ** (N / n) - 1            empyrical.annual_return (CAGR)
    annual_volatility   = std(r, ddof=1) * sqrt(N)                          empyrical.annual_volatility
    sharpe_ratio        = mean(r) / std(r, ddof=1) * sqrt(N)                empyrical.sharpe_ratio (risk-free 0)
    sortino_ratio       = mean(r) * N / (sqrt(mean(min(r, 0)^2)) * sqrt(N)) empyrical.sortino_ratio (target 0)
    max_drawdown        = max_t (1 - W_t / max_{s<=t} W_s), W_t = prod_{s<=t} (1 + r_s), W_0 = 1
                          (a positive fraction; empyrical.max_drawdown returns it negative)
    calmar_ratio        = annual_return / max_drawdown                      empyrical.calmar_ratio
    tail_ratio          = |q95(r)| / |q5(r)| (numpy linear percentiles)      empyrical.tail_ratio

Written here because empyrical has no such function:

    max_drawdown_duration = longest run of sessions with W_t below its running peak (the start of the run
                            is the session after the peak; a run still open at the end counts to the end)
    hit_rate              = #(r > 0) / #(r != 0)
    profit_factor         = sum(r[r > 0]) / |sum(r[r < 0])|   (NaN without a losing session)
    average_win           = mean(r[r > 0]);  average_loss = mean(r[r < 0]) (negative)

Trades (``side`` +1 long, -1 short; prices per share)::

    mfe = max(0, max_t side * (extreme_t - entry) / entry)   extreme = high (long) / low (short) while held
    mae = max(0, max_t -side * (extreme_t - entry) / entry)  extreme = low (long) / high (short) while held
    (options, ``path_excursions``: no high/low is stored, so the extremes are the max / min of the path
     entry price, quote mids while held, exit price)
    stop loss_avoided_pct  = side * (stop - close_{t+h}) / stop   (> 0: the price kept going against the
                                                                   position after the stop: the stop paid)
    trailing_capture       = side * (stop - entry) / (side * (best - entry))   (share of the best move kept)

Controls (a counterfactual static book: the same positions held unchanged over the next sessions, with and
without the control's trades, both revalued at the same valuations)::

    difference         = sum(pnl_with) - sum(pnl_without)            (> 0: the control made money)
    drawdown_reduction = max_dd(pnl_without) - max_dd(pnl_with)      (max_dd of the cumulative P&L path from 0,
                                                                      money, >= 0; > 0: the control cut it)
    pnl_given_up       = max(0, -difference)
    net_benefit        = difference - explicit_cost                  (explicit: premium, spread, carry)

References: Sharpe (1966, 1994); Sortino & van der Meer (1991); Young (1991) for Calmar; Magdon-Ismail &
Atiya (2004) for drawdowns; Tharp (2008) and Sweeney (1997) for MFE/MAE; Kaufman, *Trading Systems and
Methods* (2013) for win rate, profit factor and stop analysis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import empyrical
import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import FloatArray

SESSIONS_PER_YEAR = 252


def _clean(returns: ArrayLike) -> FloatArray:
    r = np.asarray(returns, dtype=np.float64).ravel()
    return r[np.isfinite(r)]


def _finite(x: float) -> float:
    """``x`` as float, NaN for +-inf (a ratio with a zero denominator is undefined, not infinite)."""
    x = float(x)
    return x if math.isfinite(x) else math.nan


def wealth(returns: ArrayLike) -> FloatArray:
    """Compounded wealth ``W_t = prod_{s<=t} (1 + r_s)`` starting from 1 (length n)."""
    return np.cumprod(1.0 + _clean(returns))


def drawdown_path(returns: ArrayLike) -> FloatArray:
    """``1 - W_t / max(1, max_{s<=t} W_s)``: the drawdown after each session, a fraction >= 0."""
    w = wealth(returns)
    peak = np.maximum.accumulate(np.concatenate(([1.0], w)))[1:]
    return 1.0 - w / peak


def max_drawdown_duration(returns: ArrayLike) -> int:
    """Longest run of consecutive sessions below the running peak of wealth (0 without a drawdown)."""
    under = drawdown_path(returns) > 1e-15
    if not under.any():
        return 0
    # run lengths of True: positions where a run ends minus where it starts
    padded = np.concatenate(([False], under, [False])).astype(np.int8)
    edges = np.diff(padded)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max())


@dataclass(frozen=True)
class ReturnsMetrics:
    """Ratios of a daily return series (definitions in the module docstring); NaN where undefined."""

    n_obs: int
    cumulative_return: float
    annual_return: float
    annual_volatility: float
    sharpe_ratio: float
    sortino_ratio: float
    calmar_ratio: float
    max_drawdown: float
    max_drawdown_duration_sessions: int
    hit_rate: float
    profit_factor: float
    average_win: float
    average_loss: float
    tail_ratio: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def returns_metrics(returns: ArrayLike, periods_per_year: int = SESSIONS_PER_YEAR) -> ReturnsMetrics:
    """Every returns-based measure of ``returns`` (daily simple returns; non-finite entries dropped)."""
    r = _clean(returns)
    n = int(r.size)
    nan = math.nan
    if n == 0:
        return ReturnsMetrics(0, nan, nan, nan, nan, nan, nan, nan, 0, nan, nan, nan, nan, nan)
    with np.errstate(divide="ignore", invalid="ignore"):  # undefined ratios come back NaN, not as warnings
        return _returns_metrics(r, periods_per_year)


def _returns_metrics(r: FloatArray, ann: int) -> ReturnsMetrics:
    n, nan = int(r.size), math.nan
    wins, losses = r[r > 0], r[r < 0]
    mdd = float(-empyrical.max_drawdown(r))
    return ReturnsMetrics(
        n_obs=n,
        cumulative_return=float(empyrical.cum_returns_final(r)),
        annual_return=_finite(empyrical.annual_return(r, annualization=ann)),
        annual_volatility=_finite(empyrical.annual_volatility(r, annualization=ann)),
        sharpe_ratio=_finite(empyrical.sharpe_ratio(r, annualization=ann)) if n > 1 else nan,
        sortino_ratio=_finite(empyrical.sortino_ratio(r, annualization=ann)) if n > 1 else nan,
        calmar_ratio=_finite(empyrical.calmar_ratio(r, annualization=ann)) if mdd > 0 else nan,
        max_drawdown=mdd,
        max_drawdown_duration_sessions=max_drawdown_duration(r),
        hit_rate=float(wins.size / (wins.size + losses.size)) if wins.size + losses.size else nan,
        profit_factor=float(wins.sum() / -losses.sum()) if losses.size else nan,
        average_win=float(wins.mean()) if wins.size else nan,
        average_loss=float(losses.mean()) if losses.size else nan,
        tail_ratio=_finite(empyrical.tail_ratio(r)) if n > 1 else nan,
    )


# ------------------------------------------------------------------------------------------------- trades
@dataclass(frozen=True)
class RoundTrips:
    """Closed trades of one instrument (arrays of length k): flat -> position -> flat (or a flip)."""

    side: FloatArray  # +1 long, -1 short
    quantity: FloatArray  # units opened (> 0)
    entry_index: FloatArray  # index of the first opening fill
    exit_index: FloatArray  # index of the closing fill
    entry_price: FloatArray  # quantity-weighted average opening price
    exit_price: FloatArray  # quantity-weighted average closing price
    pnl: FloatArray  # side * quantity * multiplier * (exit - entry), money

    @property
    def n(self) -> int:
        return int(self.side.size)


def round_trips(signed_quantity: ArrayLike, price: ArrayLike, multiplier: float = 1.0) -> RoundTrips:
    """Closed round trips from a time-ordered list of fills of ONE instrument (signed: > 0 buys).

    Average-cost accounting: fills that add to the position move the entry price to their quantity-weighted
    average; fills that reduce it close at their price; a trade is closed when the position returns to zero.
    A fill through zero closes the trade and opens the opposite one with the remainder. An open position at
    the end is not a closed trade.
    """
    q = np.asarray(signed_quantity, dtype=np.float64).ravel()
    p = np.asarray(price, dtype=np.float64).ravel()
    out: list[tuple[float, float, int, int, float, float, float]] = []
    pos, entry, opened_qty, first, closed_value, closed_qty = 0.0, 0.0, 0.0, -1, 0.0, 0.0
    for i in range(q.size):  # fills of one instrument: a short sequential scan (state carries across fills)
        remaining = q[i]
        while remaining != 0.0:
            if pos == 0.0 or np.sign(remaining) == np.sign(pos):
                if pos == 0.0:
                    first, opened_qty, closed_value, closed_qty, entry = i, 0.0, 0.0, 0.0, 0.0
                entry = (entry * abs(pos) + p[i] * abs(remaining)) / (abs(pos) + abs(remaining))
                opened_qty += abs(remaining)
                pos += remaining
                remaining = 0.0
            else:
                take = min(abs(remaining), abs(pos))
                closed_value += take * p[i]
                closed_qty += take
                side = float(np.sign(pos))
                pos -= side * take
                remaining += side * take
                if abs(pos) < 1e-12:
                    pos = 0.0
                    exit_price = closed_value / closed_qty
                    pnl = side * opened_qty * multiplier * (exit_price - entry)
                    out.append((side, opened_qty, first, i, entry, exit_price, pnl))
    cols = list(zip(*out, strict=True)) if out else [()] * 7
    arrays = [np.asarray(c, dtype=np.float64) for c in cols]
    return RoundTrips(*arrays)


def excursions(side: float, entry_price: float, highs: ArrayLike, lows: ArrayLike) -> tuple[float, float]:
    """(MFE, MAE) of one trade as fractions of the entry price (both >= 0) over the bars it was held."""
    hi = np.asarray(highs, dtype=np.float64)
    lo = np.asarray(lows, dtype=np.float64)
    if hi.size == 0:
        return math.nan, math.nan
    favourable = (hi.max() - entry_price) if side > 0 else (entry_price - lo.min())
    adverse = (entry_price - lo.min()) if side > 0 else (hi.max() - entry_price)
    return max(0.0, favourable / entry_price), max(0.0, adverse / entry_price)


def path_excursions(
    side: ArrayLike, entry_price: ArrayLike, exit_price: ArrayLike, mark_trade: ArrayLike, mark_price: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """(MFE, MAE) of k trades (fractions of the entry price, >= 0) over a price path without highs and lows.

    Trade ``i``'s path is ``entry_price[i]``, the marks with ``mark_trade == i`` (e.g. option quote mids while
    held) and ``exit_price[i]``; its high and low are the path's max and min, then as ``excursions``. The path
    always holds the entry, so both are >= 0 without clipping. NaN where the entry price is not > 0.
    """
    s = np.asarray(side, dtype=np.float64).ravel()
    entry = np.asarray(entry_price, dtype=np.float64).ravel()
    exit_ = np.asarray(exit_price, dtype=np.float64).ravel()
    k = np.asarray(mark_trade, dtype=np.int64).ravel()
    m = np.asarray(mark_price, dtype=np.float64).ravel()
    keep = np.isfinite(m)
    hi, lo = np.fmax(entry, exit_), np.fmin(entry, exit_)
    np.maximum.at(hi, k[keep], m[keep])
    np.minimum.at(lo, k[keep], m[keep])
    with np.errstate(divide="ignore", invalid="ignore"):
        favourable = np.where(s > 0, hi - entry, entry - lo) / entry
        adverse = np.where(s > 0, entry - lo, hi - entry) / entry
    bad = ~(entry > 0)
    return np.where(bad, np.nan, favourable), np.where(bad, np.nan, adverse)


@dataclass(frozen=True)
class TradeMetrics:
    """Summary of closed trades: count, win rate, average holding (sessions), average MFE / MAE."""

    n_trades: int
    win_rate: float
    average_holding_sessions: float
    average_mfe: float
    average_mae: float


def trade_metrics(pnl: ArrayLike, holding_sessions: ArrayLike, mfe: ArrayLike, mae: ArrayLike) -> TradeMetrics:
    """``win_rate = #(pnl > 0) / n``; averages over the trades (NaN entries of MFE/MAE ignored)."""
    p = np.asarray(pnl, dtype=np.float64)
    n = int(p.size)
    if n == 0:
        return TradeMetrics(0, math.nan, math.nan, math.nan, math.nan)
    f, a = np.asarray(mfe, dtype=np.float64), np.asarray(mae, dtype=np.float64)
    return TradeMetrics(
        n_trades=n,
        win_rate=float((p > 0).mean()),
        average_holding_sessions=float(np.mean(np.asarray(holding_sessions, dtype=np.float64))),
        average_mfe=float(np.nanmean(f)) if np.isfinite(f).any() else math.nan,
        average_mae=float(np.nanmean(a)) if np.isfinite(a).any() else math.nan,
    )


def stop_loss_avoided_pct(side: ArrayLike, stop_price: ArrayLike, later_close: ArrayLike) -> FloatArray:
    """Per stop: ``side * (stop - later_close) / stop`` (> 0: the stop avoided a further loss)."""
    s = np.asarray(side, dtype=np.float64)
    stop = np.asarray(stop_price, dtype=np.float64)
    return s * (stop - np.asarray(later_close, dtype=np.float64)) / stop


def trailing_capture(side: ArrayLike, entry: ArrayLike, best: ArrayLike, stop: ArrayLike) -> FloatArray:
    """Per trailing stop: ``side * (stop - entry) / (side * (best - entry))``; NaN where best == entry."""
    s = np.asarray(side, dtype=np.float64)
    e = np.asarray(entry, dtype=np.float64)
    move = s * (np.asarray(best, dtype=np.float64) - e)
    kept = s * (np.asarray(stop, dtype=np.float64) - e)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(move > 0, kept / move, np.nan)


# ----------------------------------------------------------------------------------------------- controls
def max_drawdown_money(pnl: ArrayLike) -> float:
    """Largest fall of the cumulative P&L path ``0, c_1, ..., c_n`` from its running peak, money (>= 0)."""
    c = np.concatenate(([0.0], np.cumsum(np.asarray(pnl, dtype=np.float64))))
    return float((np.maximum.accumulate(c) - c).max())


@dataclass(frozen=True)
class ControlEffect:
    """One control event judged on a static book over ``n_sessions`` valuations after it (money, USD)."""

    n_sessions: int
    pnl_with: float
    pnl_without: float
    difference: float
    max_drawdown_with: float
    max_drawdown_without: float
    drawdown_reduction: float
    pnl_given_up: float
    explicit_cost: float
    net_benefit: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def control_effect(pnl_with: ArrayLike, pnl_without: ArrayLike, explicit_cost: float = 0.0) -> ControlEffect:
    """Compare the static book's daily P&L with and without a control (same sessions; see module docstring)."""
    w = np.asarray(pnl_with, dtype=np.float64).ravel()
    wo = np.asarray(pnl_without, dtype=np.float64).ravel()
    if w.shape != wo.shape:
        raise ValueError(f"pnl_with and pnl_without must cover the same sessions ({w.size} != {wo.size})")
    diff = float(w.sum() - wo.sum())
    dd_w, dd_wo = max_drawdown_money(w), max_drawdown_money(wo)
    return ControlEffect(
        n_sessions=int(w.size),
        pnl_with=float(w.sum()),
        pnl_without=float(wo.sum()),
        difference=diff,
        max_drawdown_with=dd_w,
        max_drawdown_without=dd_wo,
        drawdown_reduction=dd_wo - dd_w,
        pnl_given_up=max(0.0, -diff),
        explicit_cost=float(explicit_cost),
        net_benefit=diff - float(explicit_cost),
    )


@dataclass(frozen=True)
class ControlSummary:
    """Events of one control type: how many, judged over how many sessions, totals and the share that paid."""

    n_events: int
    difference: float
    drawdown_reduction: float
    pnl_given_up: float
    explicit_cost: float
    net_benefit: float
    share_paid: float  # events with net_benefit > 0 or drawdown_reduction > pnl_given_up + explicit_cost


def summarize_controls(effects: list[ControlEffect]) -> ControlSummary:
    """Totals over events judged on at least one session (``share_paid`` over those events)."""
    judged = [e for e in effects if e.n_sessions > 0]
    if not judged:
        return ControlSummary(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    arr = {k: np.array([getattr(e, k) for e in judged]) for k in ControlEffect.__dataclass_fields__}
    paid = (arr["net_benefit"] > 0) | (arr["drawdown_reduction"] > arr["pnl_given_up"] + arr["explicit_cost"])
    return ControlSummary(
        n_events=len(judged),
        difference=float(arr["difference"].sum()),
        drawdown_reduction=float(arr["drawdown_reduction"].sum()),
        pnl_given_up=float(arr["pnl_given_up"].sum()),
        explicit_cost=float(arr["explicit_cost"].sum()),
        net_benefit=float(arr["net_benefit"].sum()),
        share_paid=float(paid.mean()),
    )
