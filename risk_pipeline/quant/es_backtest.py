"""Expected-shortfall backtest: Acerbi and Szekely's (2014) Z2 statistic with a simulated p-value.

Acerbi, C. and Szekely, B. (2014), "Backtesting Expected Shortfall", Risk, December. With P&L X_t (positive
= gain), the model's VaR_t and ES_t at tail probability alpha (positive = loss) and I_t = 1{X_t < -VaR_t},

    Z2 = 1 + sum_t X_t I_t / (T alpha ES_t) = 1 - sum_t L_t I_t / (T alpha ES_t),    L_t = -X_t.

Under the model E[Z2] = 0; an ES that is too small makes Z2 negative. The p-value P(Z2 <= z2 | model) is
simulated: each day's loss is drawn from the Student-t location-zero scale family whose alpha-quantile
and ES equal that day's VaR and ES (the degrees of freedom follow from the ratio ES/VaR; a ratio at or
below the normal's gives the normal). Acerbi and Szekely found the 5 % and 0.01 % critical values of Z2
nearly distribution-free at -0.70 and -1.8 (T = 250, alpha = 2.5 %); the zones below use the p-value at
those significance levels: green above 5 %, yellow down to 0.01 %, red below.

Pure numpy/scipy; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import special, stats

#: Significance levels of the zones (Acerbi and Szekely 2014: critical Z2 about -0.70 and -1.8).
YELLOW_BELOW, RED_BELOW = 0.05, 0.0001
#: Degrees of freedom searched when matching a day's ES/VaR ratio (above the upper end: normal).
DF_MIN, DF_MAX = 2.05, 1_000.0


@dataclass(frozen=True)
class EsBacktestResult:
    """Z2 and its simulated p-value for one series; every input count alongside."""

    z2: float
    p_value: float
    zone: str
    n_obs: int
    n_exceptions: int
    alpha: float
    n_simulations: int
    seed: int


def z2_statistic(pnl: ArrayLike, var: ArrayLike, es: ArrayLike, alpha: float) -> float:
    """Acerbi-Szekely Z2 of P&L (positive = gain) against VaR and ES (positive = loss) at tail ``alpha``."""
    x, v, e = (np.asarray(a, dtype=float) for a in (pnl, var, es))
    hit = x < -v
    return float(1.0 + np.sum(np.where(hit, x / e, 0.0)) / (x.size * alpha))


def _t_ratio(df: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(ES / VaR, VaR) of the standard Student-t with ``df`` degrees of freedom (finite, positive) at tail ``alpha``.

    ``stats.t.ppf(1 - alpha, df)`` and ``stats.t.pdf(q, df)`` as SciPy computes them for finite ``df`` (its quantile
    and log-density functions, the same operations on the same arrays), without the distribution's per-call
    argument handling: the bisection of ``matched_student_t`` calls this 60 times a series."""
    q = special.stdtrit(df, 1.0 - alpha)
    log_pdf = (
        np.log(special.poch(0.5 * df, 0.5)) - 0.5 * (np.log(df) + np.log(np.pi)) - (df + 1) / 2 * np.log1p(q * q / df)
    )
    es = np.exp(log_pdf) * (df + q * q) / (df - 1.0) / alpha
    return es / q, q


def matched_student_t(var: ArrayLike, es: ArrayLike, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Degrees of freedom (inf = normal) and scale of the zero-mean Student-t whose alpha-quantile loss is
    ``var`` and whose ES is ``es``; vectorized bisection on log(df) (the ratio ES/VaR falls with df)."""
    v, e = np.broadcast_arrays(np.asarray(var, dtype=float), np.asarray(es, dtype=float))
    if np.any(v <= 0) or np.any(e < v):
        raise ValueError("each VaR must be positive and each ES at least its VaR")
    ratio = e / v
    z = special.ndtri(1.0 - alpha)
    normal_ratio = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi) / alpha / z
    lo, hi = np.full(v.shape, np.log(DF_MIN)), np.full(v.shape, np.log(DF_MAX))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        r_mid, _ = _t_ratio(np.exp(mid), alpha)
        heavier = r_mid < ratio  # need a heavier tail: fewer degrees of freedom
        hi = np.where(heavier, mid, hi)
        lo = np.where(heavier, lo, mid)
    df = np.exp(0.5 * (lo + hi))
    df = np.where(ratio <= normal_ratio * (1.0 + 1e-9), np.inf, df)
    q = np.where(np.isinf(df), z, stats.t.ppf(1.0 - alpha, np.where(np.isinf(df), 10.0, df)))
    return df, v / q


#: Simulated Z2 by (VaR bytes, ES bytes, alpha, simulations, seed): series with the same VaR and ES (e.g. one
#: book's VaR against two P&L series) share one simulation.
Z2Cache = dict[tuple[bytes, bytes, float, int, int], np.ndarray]


def simulated_z2(
    var: np.ndarray, es: np.ndarray, alpha: float, n_simulations: int, seed: int, cache: Z2Cache | None = None
) -> np.ndarray:
    """``n_simulations`` draws of Z2 under the model (each day's matched Student-t), looked up in ``cache``."""
    key = (var.tobytes(), es.tobytes(), float(alpha), int(n_simulations), int(seed))
    if cache is not None and key in cache:
        return cache[key]
    pairs, inverse = np.unique(np.column_stack([var, es]), axis=0, return_inverse=True)
    df, scale = (m[inverse.ravel()] for m in matched_student_t(pairs[:, 0], pairs[:, 1], alpha))
    rng = np.random.default_rng(seed)
    normal = np.isinf(df)
    if not normal.any():  # every day a Student-t (the usual case): the draws as drawn, without a copy
        draws = rng.standard_t(df, size=(n_simulations, var.size))
    else:
        draws = np.empty((n_simulations, var.size))
        draws[:, normal] = rng.standard_normal((n_simulations, int(normal.sum())))
        if not normal.all():
            draws[:, ~normal] = rng.standard_t(df[~normal], size=(n_simulations, int((~normal).sum())))
    losses = np.multiply(draws, scale, out=draws)
    # X_t I_t / ES_t: the quotient where the loss exceeds the VaR, 0 elsewhere (dividing only there: the same array)
    term = np.zeros_like(losses)
    np.divide(losses, es, out=term, where=losses > var)
    simulated = 1.0 - np.sum(term, axis=1) / (var.size * alpha)
    if cache is not None:
        cache[key] = simulated
    return simulated


def z2_test(
    pnl: ArrayLike,
    var: ArrayLike,
    es: ArrayLike,
    alpha: float,
    n_simulations: int = 10_000,
    seed: int = 0,
    cache: Z2Cache | None = None,
) -> EsBacktestResult:
    """Z2 of the series and P(Z2 <= z2) under the model (each day's matched Student-t), with its zone.

    ``cache`` (one dict for a run) keeps the simulated Z2 of each VaR and ES series (``simulated_z2``).
    """
    x, v, e = (np.asarray(a, dtype=float) for a in (pnl, var, es))
    if not (x.shape == v.shape == e.shape) or x.ndim != 1 or x.size == 0:
        raise ValueError("pnl, var and es must be equal-length non-empty 1-d series")
    z2 = z2_statistic(x, v, e, alpha)
    simulated = simulated_z2(v, e, alpha, n_simulations, seed, cache)
    p_value = float((1 + np.sum(simulated <= z2)) / (n_simulations + 1))
    zone = "green" if p_value > YELLOW_BELOW else ("yellow" if p_value > RED_BELOW else "red")
    return EsBacktestResult(z2, p_value, zone, int(x.size), int(np.sum(x < -v)), alpha, n_simulations, seed)


def rolling_z2(
    pnl: ArrayLike, var: ArrayLike, es: ArrayLike, alpha: float, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each day i, Z2 over days max(0, i - window + 1)..i that have a finite VaR and ES, and their count.

    The windows are positions in the series, as the VaR backtest's; NaN where a window has no such day.
    """
    x, v, e = (np.asarray(a, dtype=float) for a in (pnl, var, es))
    ok = np.isfinite(v) & np.isfinite(e) & np.isfinite(x)
    term = np.where(ok & (x < -np.where(ok, v, 0.0)), x / np.where(ok, e, 1.0), 0.0)
    ends = np.arange(x.size)
    starts = np.maximum(0, ends - window + 1)
    kept = np.concatenate([[0], np.cumsum(ok)])
    n = (kept[ends + 1] - kept[starts]).astype(float)
    total = np.concatenate([[0.0], np.cumsum(term)])
    tail = total[ends + 1] - total[starts]
    with np.errstate(invalid="ignore", divide="ignore"):
        z2 = np.where(n > 0, 1.0 + tail / (n * alpha), np.nan)
    return z2, n.astype(np.int64)
