"""Statistics of a daily market history that a risk platform is tested on (stylized facts).

Pure numpy in and out. Returns are daily log returns (oldest first); implied vols are annualized
decimals; realized vols use 252 sessions a year and zero-mean squared returns (no demeaning).

* ``abs_return_autocorrelation``: sample autocorrelation of ``|r|`` at each lag,
  ``sum (a_t - ā)(a_{t+l} - ā) / sum (a_t - ā)²`` (the usual biased ACF estimator).
* ``leverage_correlation``: Pearson ``corr(r_t, |r_{t+1}|)``.
* ``historical_var_backtest``: a unit long position; the 99 % VaR of day ``t`` is minus the
  ``1 - c`` quantile (linear interpolation, numpy's default) of the ``lookback`` returns before
  ``t``; an exception is ``r_t < -VaR_t``; each rolling window of ``window`` exceptions gets its
  Basel zone (``quant.backtest.traffic_light``) and the whole series Christoffersen's independence test.
* ``implied_correlation``: the CBOE formula with weights ``w``,
  ``(σ_I² - Σ w_i² σ_i²) / (Σ_{i≠j} w_i w_j σ_i σ_j)``; applied to realized vols it gives the
  realized counterpart on the same footing (Driessen, Maenhout and Vilkov 2009).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from risk_pipeline.quant._numba import FloatArray
from risk_pipeline.quant.backtest import RED, YELLOW, christoffersen_independence, traffic_light, transition_counts

PERIODS_PER_YEAR = 252


def _vector(x: ArrayLike) -> FloatArray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError("values must be finite")
    return a


def abs_return_autocorrelation(returns: ArrayLike, lags: tuple[int, ...] = (1, 5, 20)) -> FloatArray:
    """Autocorrelation of absolute returns at ``lags`` (module docstring)."""
    a = np.abs(_vector(returns))
    a = a - a.mean()
    denom = float(np.dot(a, a))
    if denom == 0.0 or max(lags) >= a.size:
        raise ValueError("need a non-constant series longer than the largest lag")
    return np.array([np.dot(a[:-lag], a[lag:]) / denom for lag in lags])


def leverage_correlation(returns: ArrayLike) -> float:
    """``corr(r_t, |r_{t+1}|)``: negative when falls raise the next day's volatility."""
    r = _vector(returns)
    return float(np.corrcoef(r[:-1], np.abs(r[1:]))[0, 1])


def skewness(returns: ArrayLike) -> float:
    """Moment skewness ``m3 / m2^1.5`` (biased estimator)."""
    r = _vector(returns)
    d = r - r.mean()
    return float(np.mean(d**3) / np.mean(d**2) ** 1.5)


def kurtosis(returns: ArrayLike) -> float:
    """Moment kurtosis ``m4 / m2²`` (3 for a normal distribution)."""
    r = _vector(returns)
    d = r - r.mean()
    return float(np.mean(d**4) / np.mean(d**2) ** 2)


def hill_tail_index(returns: ArrayLike, tail_fraction: float = 0.05) -> float:
    """Hill estimator of the tail index of ``|r|`` from its largest ``tail_fraction`` of observations."""
    x = np.sort(np.abs(_vector(returns)))[::-1]
    k = int(tail_fraction * x.size)
    if k < 2 or x[k] <= 0.0:
        raise ValueError("too few observations for the tail fraction")
    return float(1.0 / np.mean(np.log(x[:k] / x[k])))


def rolling_realized_vol(returns: ArrayLike, window: int = 21) -> FloatArray:
    """Annualized ``sqrt(252 · mean r²)`` over each run of ``window`` returns (``n - window + 1`` values)."""
    r = _vector(returns)
    return np.sqrt(PERIODS_PER_YEAR * sliding_window_view(r * r, window).mean(axis=1))


def forward_realized_vol(returns: ArrayLike, horizon: int = 21) -> FloatArray:
    """Per day ``t``, the realized vol of returns ``t+1 .. t+horizon`` (NaN where the horizon runs past the end)."""
    r = _vector(returns)
    out = np.full(r.size, np.nan)
    out[: r.size - horizon] = rolling_realized_vol(r, horizon)[1:]
    return out


def max_drawdown(prices: ArrayLike) -> float:
    """Largest fall from a running peak, ``min(P_t / max_{s<=t} P_s) - 1`` (a negative number)."""
    p = _vector(prices)
    return float(np.min(p / np.maximum.accumulate(p)) - 1.0)


@dataclass(frozen=True)
class HistoricalVarBacktest:
    """Rolling-window backtest of historical VaR on a unit long position (module docstring)."""

    n_obs: int
    exceptions: int
    red_share: float
    yellow_share: float
    christoffersen_p_value: float


def historical_var_backtest(
    returns: ArrayLike, lookback: int = 250, window: int = 250, confidence: float = 0.99
) -> HistoricalVarBacktest:
    """Exceptions of historical VaR and the share of ``window``-day windows in the yellow and red zones."""
    r = _vector(returns)
    if r.size < lookback + window:
        raise ValueError("need at least lookback + window returns")
    var = -np.quantile(sliding_window_view(r[:-1], lookback), 1.0 - confidence, axis=1)
    exc = r[lookback:] < -var
    counts = np.convolve(exc.astype(np.float64), np.ones(window), "valid").round().astype(np.int64)
    zones = traffic_light(counts, window, confidence)
    _, p_ind = christoffersen_independence(*transition_counts(exc))
    return HistoricalVarBacktest(
        n_obs=int(exc.size),
        exceptions=int(exc.sum()),
        red_share=float(np.mean(zones == RED)),
        yellow_share=float(np.mean(zones == YELLOW)),
        christoffersen_p_value=float(p_ind),
    )


def mean_pairwise_correlation(returns: ArrayLike) -> float:
    """Average off-diagonal Pearson correlation of the columns of a (days, names) array."""
    x = np.asarray(returns, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2 or x.shape[0] < 3:
        raise ValueError("need a (days, names) array with at least 2 names and 3 days")
    c = np.corrcoef(x, rowvar=False)
    n = c.shape[0]
    return float((c.sum() - np.trace(c)) / (n * (n - 1)))


def down_up_correlation(name_returns: ArrayLike, index_returns: ArrayLike) -> tuple[float, float]:
    """Mean pairwise correlation of the names on days the index fell and on days it rose."""
    x = np.asarray(name_returns, dtype=np.float64)
    idx = _vector(index_returns)
    if x.shape[0] != idx.size:
        raise ValueError("one index return per row of name returns")
    return mean_pairwise_correlation(x[idx < 0.0]), mean_pairwise_correlation(x[idx > 0.0])


def stress_days(index_returns: ArrayLike, vol_threshold: float, window: int = 21) -> NDArray[np.bool_]:
    """Days whose trailing ``window``-day index realized vol (that day included) is at least ``vol_threshold``."""
    idx = _vector(index_returns)
    out = np.zeros(idx.size, dtype=bool)
    out[window - 1 :] = rolling_realized_vol(idx, window) >= vol_threshold
    return out


def spot_vol(index_returns: ArrayLike, atm_vol: ArrayLike) -> tuple[float, float]:
    """``corr(r_t, Δ ln σ_t)`` and the annualized std of ``Δ ln σ_t`` (vol of vol); same-day alignment."""
    r = _vector(index_returns)
    dlog = np.diff(np.log(_vector(atm_vol)))
    if r.size != dlog.size + 1:
        raise ValueError("one return per implied vol")
    return float(np.corrcoef(r[1:], dlog)[0, 1]), float(dlog.std(ddof=1) * np.sqrt(PERIODS_PER_YEAR))


@dataclass(frozen=True)
class ImpliedRealized:
    """Implied vol at ``t`` against the realized vol of the next ``horizon`` returns."""

    mean_difference: float  # mean of σ_implied - σ_realized (decimal vol)
    share_above: float  # share of days with σ_implied > σ_realized
    ratio: float  # mean σ_implied / mean σ_realized


def implied_realized(atm_vol: ArrayLike, returns: ArrayLike, horizon: int = 21) -> ImpliedRealized:
    """Compare each day's implied vol with the realized vol over the following ``horizon`` returns."""
    iv = _vector(atm_vol)
    rv = forward_realized_vol(returns, horizon)
    if iv.size != rv.size:
        raise ValueError("one implied vol per return")
    ok = np.isfinite(rv)
    return ImpliedRealized(
        mean_difference=float(np.mean(iv[ok] - rv[ok])),
        share_above=float(np.mean(iv[ok] > rv[ok])),
        ratio=float(np.mean(iv[ok]) / np.mean(rv[ok])),
    )


def implied_correlation(index_vol: ArrayLike, name_vols: ArrayLike, weights: ArrayLike | None = None) -> FloatArray:
    """CBOE-style correlation per day from the index vol ``(days,)`` and name vols ``(days, names)``."""
    s_i = _vector(index_vol)
    s = np.asarray(name_vols, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s_i.size:
        raise ValueError("name_vols must be (days, names) with one row per index vol")
    w = np.full(s.shape[1], 1.0 / s.shape[1]) if weights is None else _vector(weights)
    ws = s * w
    own = np.sum(ws * ws, axis=1)
    return (s_i**2 - own) / (np.sum(ws, axis=1) ** 2 - own)


def stress_coverage(
    index_close: ArrayLike,
    window: int = 760,
    vol_threshold: float = 0.25,
    drawdown_threshold: float = -0.15,
    step: int = 21,
) -> float:
    """Share of ``window``-session windows (every ``step`` sessions) with a stress episode.

    A stress episode is a 21-day realized vol of at least ``vol_threshold`` or a drawdown of at least
    ``-drawdown_threshold`` inside the window.
    """
    c = _vector(index_close)
    if c.size < window + 1:
        raise ValueError("need more than one window of prices")
    r = np.diff(np.log(c))
    hits = []
    for start in range(0, c.size - window, step):
        rv = rolling_realized_vol(r[start : start + window]).max()
        hits.append(rv >= vol_threshold or max_drawdown(c[start : start + window + 1]) <= drawdown_threshold)
    return float(np.mean(hits))


@dataclass(frozen=True)
class MarketPath:
    """One simulated or historical path: daily closes and opens, event days and implied vols.

    Rows are sessions (oldest first). Column 0 of the name arrays is not the index: ``names_*``
    hold single stocks only. Implied vols are each session's constant-maturity vols; ``None`` where
    the path has none (the S&P 500 history).
    """

    index_close: FloatArray
    index_open: FloatArray
    names_close: FloatArray | None = None  # (days, names)
    names_open: FloatArray | None = None
    earnings: NDArray[np.bool_] | None = None  # (days, names) earnings reaction sessions
    implied_move: FloatArray | None = None  # (days, names) the calendar's implied move on those sessions
    cpi: NDArray[np.bool_] | None = None  # (days,) CPI release sessions
    fomc: NDArray[np.bool_] | None = None
    index_iv30: FloatArray | None = None
    index_iv365: FloatArray | None = None
    names_iv30: FloatArray | None = None  # (days, names)
    names_put25: FloatArray | None = None
    names_call25: FloatArray | None = None


def path_statistics(path: MarketPath, stress_vol: float = 0.35) -> dict[str, float]:
    """Every statistic of the synthetic-market table that ``path`` supports (keys as in the table)."""
    out: dict[str, float] = {}
    c = _vector(path.index_close)
    r = np.diff(np.log(c))
    for lag, value in zip((1, 5, 20), abs_return_autocorrelation(r), strict=True):
        out[f"acf_index_{lag}"] = float(value)
    out["leverage"] = leverage_correlation(r)
    out["skewness"] = skewness(r)
    out["kurtosis"] = kurtosis(r)
    out["hill"] = hill_tail_index(r)
    out["vol"] = float(r.std() * np.sqrt(PERIODS_PER_YEAR))
    out["max_rv21"] = float(rolling_realized_vol(r).max())
    out["max_drawdown"] = max_drawdown(c)
    bt = historical_var_backtest(r)
    out["red_share"] = bt.red_share
    out["clustering_p"] = bt.christoffersen_p_value
    gap = np.log(_vector(path.index_open)[1:] / c[:-1])
    if path.cpi is not None and path.fomc is not None:
        cpi, fomc = np.asarray(path.cpi, bool)[1:], np.asarray(path.fomc, bool)[1:]
        normal = ~cpi & ~fomc
        if cpi.any():
            out["cpi_gap_ratio"] = float(np.abs(gap[cpi]).mean() / np.abs(gap[normal]).mean())
            out["cpi_move_ratio"] = float(np.abs(r[cpi]).mean() / np.abs(r[normal]).mean())
    if path.names_close is not None:
        nc = np.asarray(path.names_close, dtype=np.float64)
        rn = np.diff(np.log(nc), axis=0)
        acf = np.array([abs_return_autocorrelation(rn[:, j]) for j in range(rn.shape[1])])
        for k, lag in enumerate((1, 5, 20)):
            out[f"acf_names_{lag}"] = float(np.median(acf[:, k]))
        out["leverage_names"] = float(np.median([leverage_correlation(rn[:, j]) for j in range(rn.shape[1])]))
        out["kurtosis_names"] = float(np.median([kurtosis(rn[:, j]) for j in range(rn.shape[1])]))
        out["hill_names"] = float(np.median([hill_tail_index(rn[:, j]) for j in range(rn.shape[1])]))
        out["avg_correlation"] = mean_pairwise_correlation(rn)
        down, up = down_up_correlation(rn, r)
        out["down_minus_up_correlation"] = down - up
        stress = stress_days(r, stress_vol)
        if stress.sum() >= 21:
            out["stress_correlation"] = mean_pairwise_correlation(rn[stress])
        if path.earnings is not None and path.names_open is not None:
            earn = np.asarray(path.earnings, bool)[1:]
            quiet = ~earn
            gaps = np.log(np.asarray(path.names_open, dtype=np.float64)[1:] / nc[:-1])
            move = [np.abs(rn[earn[:, j], j]).mean() / np.abs(rn[quiet[:, j], j]).mean() for j in range(rn.shape[1])]
            gap_ratio = [
                np.abs(gaps[earn[:, j], j]).mean() / np.abs(gaps[quiet[:, j], j]).mean() for j in range(rn.shape[1])
            ]
            out["earnings_move_ratio"] = float(np.median(move))
            out["earnings_gap_ratio"] = float(np.median(gap_ratio))
            if path.implied_move is not None:
                implied = np.asarray(path.implied_move, dtype=np.float64)[1:]
                out["earnings_below_implied"] = float(np.mean(np.abs(rn[earn]) < implied[earn]))
    if path.index_iv30 is not None:
        iv = _vector(path.index_iv30)
        out["spot_vol_correlation"], out["vol_of_vol"] = spot_vol(np.concatenate([[0.0], r]), iv)
        ir = implied_realized(iv[:-1], r)
        out["iv_minus_rv_points"] = 100.0 * ir.mean_difference
        out["iv_above_rv_share"] = ir.share_above
        out["iv_rv_ratio_index"] = ir.ratio
        if path.index_iv365 is not None:
            slope = _vector(path.index_iv365) - iv
            out["level_slope_correlation"] = float(np.corrcoef(iv, slope)[0, 1])
            top = iv >= np.quantile(iv, 0.95)
            out["inverted_share_top5"] = float(np.mean(slope[top] < 0.0))
            out["inverted_share"] = float(np.mean(slope < 0.0))
            out["inverted_share_calm"] = float(np.mean(slope[iv <= np.median(iv)] < 0.0))
        if path.names_iv30 is not None and path.names_close is not None:
            niv = np.asarray(path.names_iv30, dtype=np.float64)
            out["iv_rv_ratio_names"] = float(
                np.median([implied_realized(niv[:-1, j], rn[:, j]).ratio for j in range(rn.shape[1])])
            )
            rv = np.column_stack([forward_realized_vol(x) for x in (r, *rn.T)])
            ok = np.isfinite(rv[:, 0])
            implied_c = implied_correlation(iv[:-1][ok], niv[:-1][ok])
            realized_c = implied_correlation(rv[ok, 0], rv[ok, 1:])
            out["implied_correlation"] = float(implied_c.mean())
            out["realized_correlation"] = float(realized_c.mean())
            out["implied_minus_realized_correlation"] = float(np.mean(implied_c - realized_c))
        if path.names_put25 is not None and path.names_call25 is not None and path.names_iv30 is not None:
            niv = np.asarray(path.names_iv30, dtype=np.float64)
            put, call = np.asarray(path.names_put25, float), np.asarray(path.names_call25, float)
            out["butterfly_names_points"] = float(np.median(100.0 * (0.5 * (put + call) - niv)))
            out["call_wing_up_share"] = float(np.mean(np.mean(call > niv, axis=0) > 0.5))
    return out
