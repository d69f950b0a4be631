"""VaR backtesting: exceptions, Kupiec and Christoffersen likelihood-ratio tests, Basel traffic light.

An exception on day ``t`` is a realized P&L below minus the VaR computed the day before:
``pnl[t] < -var[t - 1]`` (``lag`` days in general; Jorion, "Value at Risk", 3rd ed., ch. 6). With ``x``
exceptions in ``n`` observations and expected rate ``p = 1 - confidence``:

* Kupiec (1995, "Techniques for verifying the accuracy of risk measurement models", J. Derivatives 3)
  proportion of failures: ``LR_pof = -2 ln[(1-p)^{n-x} p^x] + 2 ln[(1-x/n)^{n-x} (x/n)^x]``,
  chi-squared with 1 degree of freedom.
* Christoffersen (1998, "Evaluating interval forecasts", Int. Economic Review 39) independence: with
  ``n_ij`` the number of days in state ``j`` after a day in state ``i`` (1 = exception),
  ``pi_i = n_i1 / (n_i0 + n_i1)`` and ``pi = (n_01 + n_11) / (n - 1)``,
  ``LR_ind = -2 ln[(1-pi)^{n_00+n_10} pi^{n_01+n_11}] + 2 ln[(1-pi_0)^{n_00} pi_0^{n_01}
  (1-pi_1)^{n_10} pi_1^{n_11}]`` (1 dof), and conditional coverage ``LR_cc = LR_pof + LR_ind``
  (2 dof).

All logarithms use ``0 ln 0 = 0`` (``scipy.special.xlogy``), the limit of the likelihoods, so every
statistic is finite: no exception gives ``LR_pof = -2 n ln(1-p)``, all exceptions ``-2 n ln p``,
``x = p n`` gives 0, and a sample without a pair of consecutive days (or without a state to leave)
gives ``LR_ind = 0`` with p-value 1.

Basel traffic light (Basel Committee on Banking Supervision 1996, "Supervisory framework for the use
of 'backtesting' in conjunction with the internal models approach to market risk capital
requirements"): with ``F`` the binomial CDF of the exception count under the nominal
coverage, a count is green when ``F(x) < 0.95``, red when ``F(x) >= 0.9999`` and yellow between; for
250 days at 99 % that is green 0-4, yellow 5-9, red 10 or more, with plus factors 0.40, 0.50, 0.65,
0.75, 0.85 for 5-9 exceptions and 1.0 in the red zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import xlogy
from scipy.stats import binom, chi2

from risk_pipeline.quant._numba import BoolArray, FloatArray

GREEN = "green"
YELLOW = "yellow"
RED = "red"
#: Cumulative binomial probability at which the yellow and the red zones start (Basel 1996).
YELLOW_FROM = 0.95
RED_FROM = 0.9999
#: Basel 1996 plus factors for 250 observations at 99 %, by number of exceptions in the yellow zone.
BASEL_PLUS_FACTORS = {5: 0.40, 6: 0.50, 7: 0.65, 8: 0.75, 9: 0.85}


def exceptions(pnl: ArrayLike, var: ArrayLike, lag: int = 1) -> BoolArray:
    """``pnl[t] < -var[t - lag]`` for ``t = lag .. n-1`` (``n - lag`` booleans); VaR positive = loss."""
    p = np.asarray(pnl, dtype=np.float64).reshape(-1)
    v = np.asarray(var, dtype=np.float64).reshape(-1)
    if p.shape != v.shape:
        raise ValueError("pnl and var must have the same length")
    if lag < 0:
        raise ValueError("lag must be non-negative")
    p_t, v_prev = p[lag:], v[: p.size - lag]
    if not (np.all(np.isfinite(p_t)) and np.all(np.isfinite(v_prev))):
        raise ValueError("pnl and var must be finite")
    return p_t < -v_prev


def kupiec_pof(n_exceptions: ArrayLike, n_obs: ArrayLike, confidence: float) -> tuple[Any, Any]:
    """Kupiec (1995) proportion-of-failures LR and its chi2(1) p-value (vectorized)."""
    x = np.asarray(n_exceptions, dtype=np.float64)
    n = np.asarray(n_obs, dtype=np.float64)
    if np.any(x < 0) or np.any(x > n) or np.any(n < 1):
        raise ValueError("need 0 <= exceptions <= n_obs and n_obs >= 1")
    p = 1.0 - confidence
    phat = x / n
    lr = -2.0 * (xlogy(n - x, 1.0 - p) + xlogy(x, p)) + 2.0 * (xlogy(n - x, 1.0 - phat) + xlogy(x, phat))
    lr = np.maximum(lr, 0.0)
    return _out(lr), _out(chi2.sf(lr, 1))


def transition_counts(exc: ArrayLike) -> tuple[int, int, int, int]:
    """``(n00, n01, n10, n11)``: consecutive-day pairs by (yesterday, today) exception state."""
    e = np.asarray(exc, dtype=bool).reshape(-1)
    a, b = e[:-1], e[1:]
    return (int(np.sum(~a & ~b)), int(np.sum(~a & b)), int(np.sum(a & ~b)), int(np.sum(a & b)))


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def christoffersen_independence(n00: ArrayLike, n01: ArrayLike, n10: ArrayLike, n11: ArrayLike) -> tuple[Any, Any]:
    """Christoffersen (1998) independence LR from the transition counts and its chi2(1) p-value."""
    c00, c01, c10, c11 = (np.asarray(v, dtype=np.float64) for v in (n00, n01, n10, n11))
    pi0 = _ratio(c01, c00 + c01)
    pi1 = _ratio(c11, c10 + c11)
    pi = _ratio(c01 + c11, c00 + c01 + c10 + c11)
    log_l0 = xlogy(c00 + c10, 1.0 - pi) + xlogy(c01 + c11, pi)
    log_l1 = xlogy(c00, 1.0 - pi0) + xlogy(c01, pi0) + xlogy(c10, 1.0 - pi1) + xlogy(c11, pi1)
    lr = np.maximum(-2.0 * (log_l0 - log_l1), 0.0)
    return _out(lr), _out(chi2.sf(lr, 1))


def conditional_coverage(lr_pof: ArrayLike, lr_ind: ArrayLike) -> tuple[Any, Any]:
    """``LR_cc = LR_pof + LR_ind`` and its chi2(2) p-value."""
    lr = np.asarray(lr_pof, dtype=np.float64) + np.asarray(lr_ind, dtype=np.float64)
    return _out(lr), _out(chi2.sf(lr, 2))


def _out(a: Any) -> Any:
    arr = np.asarray(a, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


def traffic_light(n_exceptions: ArrayLike, n_obs: ArrayLike = 250, confidence: float = 0.99) -> Any:
    """Basel zone(s) from the binomial CDF (green below 95 %, red at or above 99.99 %)."""
    x = np.asarray(n_exceptions)
    cdf = binom.cdf(x, np.asarray(n_obs), 1.0 - confidence)
    zone = np.where(cdf >= RED_FROM, RED, np.where(cdf >= YELLOW_FROM, YELLOW, GREEN))
    return str(zone) if zone.ndim == 0 else zone


def zone_bounds(n_obs: int, confidence: float) -> tuple[int, int]:
    """Largest green and largest yellow exception count for ``n_obs`` days at ``confidence``."""
    k = np.arange(n_obs + 1)
    cdf = binom.cdf(k, n_obs, 1.0 - confidence)
    green_max = int(k[cdf < YELLOW_FROM].max()) if np.any(cdf < YELLOW_FROM) else -1
    yellow_max = int(k[cdf < RED_FROM].max()) if np.any(cdf < RED_FROM) else -1
    return green_max, yellow_max


def basel_plus_factor(n_exceptions: int) -> float:
    """Basel 1996 plus factor for 250 days at 99 % (0 green, table values yellow, 1 red)."""
    if n_exceptions <= 4:
        return 0.0
    return BASEL_PLUS_FACTORS.get(int(n_exceptions), 1.0)


@dataclass(frozen=True)
class BacktestResult:
    """Backtest of one window: counts, LR statistics with p-values and the traffic light."""

    confidence: float
    n_obs: int
    exceptions: int
    expected_exceptions: float
    kupiec_lr: float
    kupiec_p_value: float
    christoffersen_lr: float
    christoffersen_p_value: float
    conditional_coverage_lr: float
    conditional_coverage_p_value: float
    traffic_light: str
    window_end_index: int

    def to_row(self) -> dict[str, Any]:
        """A ``var_backtest`` row without ``window_end``/``book``/``method`` (the caller's keys)."""
        return {
            "confidence": self.confidence,
            "n_obs": self.n_obs,
            "exceptions": self.exceptions,
            "kupiec_lr": self.kupiec_lr,
            "kupiec_p_value": self.kupiec_p_value,
            "christoffersen_lr": self.christoffersen_lr,
            "christoffersen_p_value": self.christoffersen_p_value,
            "conditional_coverage_lr": self.conditional_coverage_lr,
            "conditional_coverage_p_value": self.conditional_coverage_p_value,
            "traffic_light": self.traffic_light,
        }


def backtest_exceptions(exc: ArrayLike, confidence: float) -> BacktestResult:
    """All statistics of one exception series (``window_end_index`` = its last index)."""
    e = np.asarray(exc, dtype=bool).reshape(-1)
    if e.size == 0:
        raise ValueError("need at least one observation")
    n, x = int(e.size), int(e.sum())
    lr_pof, p_pof = kupiec_pof(x, n, confidence)
    lr_ind, p_ind = christoffersen_independence(*transition_counts(e))
    lr_cc, p_cc = conditional_coverage(lr_pof, lr_ind)
    return BacktestResult(
        float(confidence),
        n,
        x,
        n * (1.0 - confidence),
        lr_pof,
        p_pof,
        lr_ind,
        p_ind,
        lr_cc,
        p_cc,
        traffic_light(x, n, confidence),
        n - 1,
    )


def backtest(pnl: ArrayLike, var: ArrayLike, confidence: float, lag: int = 1) -> BacktestResult:
    """Backtest daily P&L against the VaR of ``lag`` days before over the whole sample."""
    return backtest_exceptions(exceptions(pnl, var, lag), confidence)


def rolling_backtest(
    pnl: ArrayLike, var: ArrayLike, confidence: float, window: int = 250, lag: int = 1
) -> tuple[BacktestResult, ...]:
    """Backtests of every ``window``-day window of exceptions (vectorized cumulative counts).

    ``window_end_index`` is the index in ``pnl`` of the window's last day.
    """
    e = exceptions(pnl, var, lag)
    if window < 1:
        raise ValueError("window must be positive")
    n = e.size
    if n < window:
        return ()
    ends = np.arange(window - 1, n)
    cs = np.concatenate([[0], np.cumsum(e)])
    x = cs[ends + 1] - cs[ends + 1 - window]
    a, b = e[:-1], e[1:]
    pair_cs = {
        key: np.concatenate([[0], np.cumsum(v)])
        for key, v in (("00", ~a & ~b), ("01", ~a & b), ("10", a & ~b), ("11", a & b))
    }
    # pairs (i-1, i) with i in [end - window + 2, end]: pair indices end - window + 1 .. end - 1
    lo, hi = ends - window + 1, ends
    counts = [pair_cs[k][hi] - pair_cs[k][lo] for k in ("00", "01", "10", "11")]
    lr_pof, p_pof = kupiec_pof(x, np.full(ends.size, window), confidence)
    lr_ind, p_ind = christoffersen_independence(*counts)
    lr_cc, p_cc = conditional_coverage(lr_pof, lr_ind)
    zones = traffic_light(x, window, confidence)
    lr_pof, p_pof, lr_ind, p_ind, lr_cc, p_cc = (np.atleast_1d(v) for v in (lr_pof, p_pof, lr_ind, p_ind, lr_cc, p_cc))
    zones = np.atleast_1d(zones)
    return tuple(
        BacktestResult(
            float(confidence),
            int(window),
            int(x[i]),
            window * (1.0 - confidence),
            float(lr_pof[i]),
            float(p_pof[i]),
            float(lr_ind[i]),
            float(p_ind[i]),
            float(lr_cc[i]),
            float(p_cc[i]),
            str(zones[i]),
            int(ends[i] + lag),
        )
        for i in range(ends.size)
    )
