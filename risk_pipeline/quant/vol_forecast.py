"""Per-symbol volatility forecasts (EWMA, GARCH, GJR-GARCH, XGBoost) with walk-forward evaluation.

Conventions. ``close`` has one entry per trading day; ``r_t = ln(C_{t+1} / C_t)`` is the daily log
return and day-level inputs (open/high/low, implied vol and skew) are aligned to the return ending
on that day. A forecast made at origin ``t`` uses ``r_0 .. r_t`` only; its target for horizon ``h``
is the realized variance ``RV_t(h) = sum_{j=1..h} r_{t+j}^2``. Forecasts are h-day variance sums in
daily units and are reported annualized as ``sigma = sqrt(252 * sum / h)``. Returns are taken to
have zero mean, as in RiskMetrics (1996).

Models:

* ``ewma``: RiskMetrics (1996) ``s_{t+1} = lam s_t + (1 - lam) r_t^2`` with ``lam = 0.94``; the
  h-day forecast is ``h s_{t+1}`` (square-root-of-time rule).
* ``garch`` / ``gjr``: GARCH(1,1) (Bollerslev 1986) and GJR-GARCH(1,1) (Glosten, Jagannathan &
  Runkle 1993) with standardized Student-t innovations, fitted by ``arch.arch_model`` on returns in
  percent; h-day forecasts are sums of the analytic ``E[sigma^2_{t+k}]``.
* ``xgboost``: gradient-boosted trees (``xgboost.train``, ``reg:gamma``) for the forward realized
  variance. The gamma objective has a log link, so the model is additive in log variance; its
  deviance ``2 (y / mu - ln(y / mu) - 1)`` is exactly twice QLIKE, so it targets the conditional
  mean of RV rather than the (downward-biased) conditional geometric mean that least squares on
  ``ln RV`` would give.

Evaluation: expanding-window walk-forward with refits every ``refit_every`` days; QLIKE (Patton
2011, "Volatility forecast comparison using imperfect volatility proxies") and MSE of annualized
variance on the out-of-sample origins. XGBoost is selected for a horizon only where its OOS QLIKE
beats GARCH's.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import arch
import numpy as np
import scipy
import scipy.stats
import xgboost as xgb
from arch import arch_model
from numba import njit
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln

from risk_pipeline.quant._numba import JIT, FloatArray
from risk_pipeline.quant._slsqp import LEAN_SLSQP, slsqp_core, slsqp_workspace
from risk_pipeline.quant._summation import pairwise_sum

try:  # the C entry points DMatrix, Booster, Booster.update and Booster.predict call, without their Python layers
    from xgboost._data_utils import array_interface as _xgb_array_interface
    from xgboost.core import _LIB as _XGB_LIB
    from xgboost.core import _check_call as _xgb_check_call
    from xgboost.core import make_jcargs as _xgb_jcargs
except ImportError:  # pragma: no cover - other XGBoost versions: xgb.train
    _XGB_LIB = None
#: Train and predict with ``_xgb_train_predict``'s direct C calls (False: ``xgb.train`` and ``Booster.predict``;
#: the benchmark and the tests compare both).
_LEAN_XGB = _XGB_LIB is not None

TRADING_DAYS = 252
RISKMETRICS_LAMBDA = 0.94
#: Trailing windows (days) of the lagged realized-vol features.
RV_WINDOWS = (5, 10, 21, 63)
#: Trailing windows (days) of the Parkinson and Garman-Klass features.
RANGE_WINDOWS = (5, 21)
#: arch is fitted on returns in percent: variance parameters scale by 100^2.
PERCENT = 100.0
#: arch's backcast: exponentially weighted (0.94) mean of the first 75 squared residuals.
BACKCAST_LENGTH = 75

MODEL_EWMA = "ewma"
MODEL_GARCH = "garch"
MODEL_GJR = "gjr"
MODEL_XGBOOST = "xgboost"
ALL_MODELS = (MODEL_EWMA, MODEL_GARCH, MODEL_GJR, MODEL_XGBOOST)


@dataclass(frozen=True)
class VolForecastConfig:
    """Walk-forward and model settings.

    ``min_train`` returns are observed before the first out-of-sample origin; the GARCH, GJR and
    XGBoost models are refitted on the expanding window every ``refit_every`` origins (and once more
    at the last origin for the latest forecast). XGBoost trains on rows whose target window has
    ended by the refit origin and is used only with at least ``xgb_min_rows`` such rows.
    """

    horizons: tuple[int, ...] = (1, 5, 21)
    models: tuple[str, ...] = ALL_MODELS
    ewma_lambda: float = RISKMETRICS_LAMBDA
    refit_every: int = 63
    min_train: int = 504
    min_oos_for_selection: int = 63
    xgb_num_boost_round: int = 100
    xgb_max_depth: int = 2
    xgb_learning_rate: float = 0.03
    xgb_min_child_weight: float = 100.0
    xgb_n_jobs: int = 1
    xgb_min_rows: int = 100
    random_state: int = 0

    def __post_init__(self) -> None:
        if not self.horizons or any(h < 1 for h in self.horizons) or len(set(self.horizons)) != len(self.horizons):
            raise ValueError("horizons must be distinct positive integers")
        unknown = set(self.models) - set(ALL_MODELS)
        if unknown or MODEL_GARCH not in self.models:
            raise ValueError(f"models must be a subset of {ALL_MODELS} containing {MODEL_GARCH!r}")
        if not 0.0 < self.ewma_lambda < 1.0:
            raise ValueError("ewma_lambda must be in (0, 1)")
        if self.refit_every < 1:
            raise ValueError("refit_every must be at least 1")
        if self.min_train < max(RV_WINDOWS) + max(self.horizons) + self.xgb_min_rows:
            raise ValueError("min_train too short for the XGBoost training window")


@dataclass(frozen=True, eq=False)
class PriceHistory:
    """Daily bars of one symbol, oldest first; all arrays have ``len(close)`` entries.

    ``open``/``high``/``low`` are optional (range features need high and low; Garman-Klass also
    open). ``implied_vol`` (annualized ATM level) and ``implied_skew`` are optional, NaN allowed.
    """

    close: FloatArray
    open: FloatArray | None = None
    high: FloatArray | None = None
    low: FloatArray | None = None
    implied_vol: FloatArray | None = None
    implied_skew: FloatArray | None = None

    def __post_init__(self) -> None:
        close = np.asarray(self.close, dtype=np.float64).ravel()
        if close.size < 2 or not np.all(np.isfinite(close)) or np.any(close <= 0.0):
            raise ValueError("close must hold at least two positive finite prices")
        object.__setattr__(self, "close", close)
        for name in ("open", "high", "low", "implied_vol", "implied_skew"):
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.asarray(value, dtype=np.float64).ravel()
            if arr.shape != close.shape:
                raise ValueError(f"{name} must have the same length as close")
            if name in ("open", "high", "low") and (not np.all(np.isfinite(arr)) or np.any(arr <= 0.0)):
                raise ValueError(f"{name} must be positive and finite")
            object.__setattr__(self, name, arr)
        if self.high is not None and self.low is not None and np.any(self.high < self.low):
            raise ValueError("high must not be below low")

    @property
    def returns(self) -> FloatArray:
        """Daily log returns ``ln(C_{t+1} / C_t)``, ``len(close) - 1`` entries."""
        return log_returns(self.close)


@dataclass(frozen=True)
class GarchParams:
    """(GJR-)GARCH(1,1)-t parameters in daily decimal-return units (``gamma = 0`` for GARCH).

    ``sigma^2_t = omega + (alpha + gamma 1[r_{t-1} < 0]) r_{t-1}^2 + beta sigma^2_{t-1}``; ``nu`` is
    the Student-t degrees of freedom; ``backcast`` stands for ``r_{-1}^2`` and ``sigma^2_{-1}`` as
    in arch.
    """

    omega: float
    alpha: float
    gamma: float
    beta: float
    nu: float
    backcast: float
    converged: bool

    @property
    def persistence(self) -> float:
        """``alpha + gamma / 2 + beta`` (symmetric innovations)."""
        return self.alpha + 0.5 * self.gamma + self.beta


@dataclass(frozen=True)
class HorizonForecast:
    """One (model, horizon) row: latest annualized vol forecast and its out-of-sample record.

    ``oos_qlike`` (Patton 2011) and ``oos_mse`` (annualized variance, squared) are ``None`` when
    there were no out-of-sample points. ``selected``/``selection_reason`` are set by
    ``select_models``.
    """

    model: str
    horizon_days: int
    annualized_vol: float
    oos_qlike: float | None
    oos_mse: float | None
    n_oos: int
    selected: bool = False
    selection_reason: str | None = None


@dataclass(frozen=True)
class ModelSelection:
    """The model used downstream for one horizon and why."""

    horizon_days: int
    selected_model: str
    use_xgboost: bool
    reason: str


@dataclass(frozen=True, eq=False)
class WalkForward:
    """Walk-forward forecasts per origin.

    ``origins`` are return indices ``t`` (forecast made after observing ``r_t``); the last one is
    the latest forecast. ``forecast_variance[(model, h)]`` and ``realized_variance[h]`` are
    annualized variances per origin (realized is NaN where ``t + h`` is beyond the data).
    ``is_oos`` marks origins after the first ``min_train`` returns. ``refit_origins`` are the
    origins at which GARCH/GJR/XGBoost were refitted and ``garch_params[model]`` the fits there.
    """

    origins: NDArray[np.int64]
    is_oos: NDArray[np.bool_]
    forecast_variance: dict[tuple[str, int], FloatArray]
    realized_variance: dict[int, FloatArray]
    refit_origins: tuple[int, ...]
    garch_params: dict[str, tuple[GarchParams, ...]]
    feature_names: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class VolForecastResult:
    """Everything ``forecast_volatility`` produces for one symbol."""

    forecasts: tuple[HorizonForecast, ...]
    selections: tuple[ModelSelection, ...]
    walk_forward: WalkForward = field(repr=False)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------


def log_returns(close: ArrayLike) -> FloatArray:
    """``ln(C_{t+1} / C_t)``."""
    c = np.asarray(close, dtype=np.float64)
    return np.diff(np.log(c))


def ewma_variance(returns: ArrayLike, lam: float = RISKMETRICS_LAMBDA, seed: float | None = None) -> FloatArray:
    """RiskMetrics (1996) EWMA one-step variances, ``n + 1`` entries.

    ``s_0 = seed`` (default ``r_0^2``) and ``s_t = lam s_{t-1} + (1 - lam) r_{t-1}^2``, i.e.
    ``s_t = lam^t s_0 + (1 - lam) sum_{j<t} lam^j r_{t-1-j}^2``: for ``t >= 1``, ``s_t`` forecasts
    ``r_t^2`` from ``r_0 .. r_{t-1}``; ``s_n`` is the next-day forecast.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.size == 0:
        raise ValueError("need at least one return")
    s0 = float(r[0] ** 2) if seed is None else float(seed)
    return _one_pole(s0, 1.0 - lam, lam, r * r)


@njit(**JIT)
def _one_pole_kernel(b0: float, a1: float, x: FloatArray, z: float, out: FloatArray) -> None:
    """``out[1 + k] = y[k]`` of ``scipy.signal.lfilter([b0], [1, a1], x, zi=[z])``, operation for operation as
    its direct form II transposed loop (``y = z + b0 x; z = 0 x - a1 y``): the same bits."""
    for k in range(x.shape[0]):
        y = z + b0 * x[k]
        out[1 + k] = y
        z = 0.0 * x[k] - a1 * y


def _one_pole(s0: float, b0: float, pole: float, x: FloatArray) -> FloatArray:
    """``[s0, y_0, .., y_{n-1}]`` with ``y_k = pole y_{k-1} + b0 x_k`` and ``y_{-1} = s0``:
    ``np.concatenate(([s0], lfilter([b0], [1, -pole], x, zi=[pole * s0])[0]))`` without SciPy's per-call
    overhead (thousands of short filters a backtest)."""
    out = np.empty(x.shape[0] + 1)
    out[0] = s0
    _one_pole_kernel(float(b0), -float(pole), np.ascontiguousarray(x, dtype=np.float64), float(pole) * s0, out)
    return out


def _backcast(returns: FloatArray) -> float:
    """arch's backcast: weights ``0.94^j`` (normalized) on the first 75 squared returns."""
    tau = min(BACKCAST_LENGTH, returns.size)
    w = 0.94 ** np.arange(tau)
    return float(np.sum(returns[:tau] ** 2 * w) / w.sum())


#: ``_arch_fit`` repeats the floating-point steps of these versions' ``ARCHModel.fit`` and SLSQP driver
#: exactly; with any other version (or False: the benchmark compares both) ``fit_garch`` calls ``ARCHModel.fit``.
_LEAN_SLSQP = LEAN_SLSQP and arch.__version__.split(".")[0] == "8"
#: SciPy's finite-difference step for SLSQP gradients (``sqrt(machine epsilon)``, absolute).
_SLSQP_STEP = float(np.sqrt(np.finfo(np.float64).eps))
#: arch's compiled GARCH variance recursion (the one ``GARCH.compute_variance`` calls).
_garch_recursion = arch.univariate.volatility.rec.garch_recursion
#: ``scipy.stats.kurtosis`` without its ``nan_policy``/axis wrapper (the computation itself).
_kurtosis = getattr(scipy.stats.kurtosis, "__wrapped__", scipy.stats.kurtosis)


@njit(**JIT)
def _forward_steps_kernel(x: FloatArray, lower: FloatArray, upper: FloatArray, step: float, h: FloatArray) -> bool:
    """SciPy's 2-point steps at ``x`` into ``h``, element by element with the same IEEE operations as its
    array code (``sign * max(1, |x|)`` scaling, reversal or shrinking at the bounds); False if ``x`` is outside
    the bounds."""
    for i in range(x.shape[0]):
        if x[i] < lower[i] or x[i] > upper[i]:
            return False
    for i in range(x.shape[0]):
        xi = x[i]
        if (xi + step) - xi == 0:
            sign = 1.0 if xi >= 0 else -1.0
            size = abs(xi)
            hi = step * sign * (1.0 if 1.0 >= size else size)  # np.maximum(1.0, |x|), NaN kept
        else:
            hi = step
        lower_dist = xi - lower[i]
        upper_dist = upper[i] - xi
        violated = (xi + hi) < lower[i] or (xi + hi) > upper[i]
        if lower_dist != lower_dist:  # np.maximum propagates NaN
            widest = lower_dist
        elif upper_dist != upper_dist:
            widest = upper_dist
        else:
            widest = lower_dist if lower_dist >= upper_dist else upper_dist
        fitting = abs(hi) <= widest
        if violated and fitting:
            hi = hi * -1
        if upper_dist >= lower_dist and not fitting:
            hi = upper_dist
        if upper_dist < lower_dist and not fitting:
            hi = -lower_dist
        h[i] = hi
    return True


def _forward_steps(x: FloatArray, lower: FloatArray, upper: FloatArray) -> FloatArray:
    """SciPy's 2-point steps at ``x``: ``sqrt(eps)`` absolute, reversed or shrunk to stay within the bounds."""
    h = np.empty(x.shape[0])
    if not _forward_steps_kernel(np.ascontiguousarray(x, dtype=np.float64), lower, upper, _SLSQP_STEP, h):
        raise ValueError("`x0` violates bound constraints.")  # what approx_derivative raises
    return h


@njit(**JIT)
def _constraint_values_kernel(a: FloatArray, b: FloatArray, point: FloatArray, out: FloatArray) -> None:
    """``out[k] = np.dot(a[k], point) - b[k]``. ``np.dot`` of these short vectors is BLAS's ``ddot``: a sum
    from 0.0 in index order; the coefficients (0, +-1, -0.5) make every product exact, so this loop gives the
    same bits (test_vol_forecast checks it against ``np.dot``)."""
    for k in range(a.shape[0]):
        total = 0.0
        for j in range(a.shape[1]):
            total += a[k, j] * point[j]
        out[k] = total - b[k]


@njit(**JIT)
def _constraint_normals_kernel(a: FloatArray, b: FloatArray, point: FloatArray, h: FloatArray, out: FloatArray) -> None:
    """``out[k, i] = ((a[k] . p_i - b[k]) - (a[k] . point - b[k])) / ((point[i] + h[i]) - point[i])`` with
    ``p_i = point`` but ``p_i[i] = point[i] + h[i]``: SciPy's forward differences of the linear constraints,
    each dot product summed as ``_constraint_values_kernel`` does."""
    m, n = a.shape
    for k in range(m):
        f0 = 0.0
        for j in range(n):
            f0 += a[k, j] * point[j]
        f0 = f0 - b[k]
        for i in range(n):
            shifted = point[i] + h[i]
            total = 0.0
            for j in range(n):
                total += a[k, j] * (shifted if j == i else point[j])
            out[k, i] = ((total - b[k]) - f0) / (shifted - point[i])


@njit(**JIT)
def _equal_points(x: FloatArray, y: FloatArray) -> bool:
    """``np.array_equal(x, y)`` of two points of the same length: every entry ``==`` (NaN unequal, -0.0 equal
    to 0.0)."""
    for i in range(x.shape[0]):
        if not x[i] == y[i]:
            return False
    return True


def _slsqp_minimize(
    objective: Callable[[FloatArray], float],
    x0: FloatArray,
    lower: FloatArray,
    upper: FloatArray,
    a: FloatArray,
    b: FloatArray,
    maxiter: int = 100,
    ftol: float = 1e-6,
    objective_rows: Callable[[FloatArray], FloatArray] | None = None,
) -> tuple[FloatArray, int]:
    """``scipy.optimize.minimize(objective, x0, method="SLSQP", bounds=..., constraints=...)`` with the
    inequality constraints ``a[k] . x - b[k] >= 0`` given one function per row and no gradients (arch's
    call), step for step: the same SLSQP core, the same forward-difference gradients and constraint normals
    (each constraint value an ``np.dot`` of the same vectors), the same function-value caching; without
    SciPy's per-call wrappers. ``objective_rows`` (optional) gives ``objective`` at each row of a 2-D array of
    points, the same bits: then a gradient's shifted points are evaluated in one call. Returns the solution and
    SLSQP's exit mode (0: converged)."""
    n, m = x0.size, a.shape[0]
    x = np.clip(np.asarray(x0, dtype=np.float64).reshape(-1), lower, upper)
    xl = np.where(np.isfinite(lower), lower, np.nan)
    xu = np.where(np.isfinite(upper), upper, np.nan)
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)

    def value(point: FloatArray) -> float:
        fx = objective(np.copy(point))
        return fx if np.isscalar(fx) else np.asarray(fx).item()

    def gradient(point: FloatArray, f0: float, h: FloatArray) -> FloatArray:
        if objective_rows is not None:  # row i: point with coordinate i shifted by h[i]
            shifted = np.repeat(point[np.newaxis], n, axis=0)
            diagonal = np.arange(n)
            shifted[diagonal, diagonal] = point + h
            return (objective_rows(shifted) - f0) / ((point + h) - point)
        g = np.empty(n)
        for i in range(n):
            shifted = np.copy(point)
            shifted[i] = point[i] + h[i]
            g[i] = (value(shifted) - f0) / ((point[i] + h[i]) - point[i])
        return g

    def constraint_values(out: FloatArray, point: FloatArray) -> None:
        _constraint_values_kernel(a, b, point, out)

    def constraint_normals(out: FloatArray, point: FloatArray, h: FloatArray) -> None:
        _constraint_normals_kernel(a, b, point, h, out)

    # ScalarFunction's cache: f and g at x_cached, recomputed only when x changes; the driver's fx is
    # reassigned only on a function request (mode 1), as in SciPy
    # (the steps h at a point serve its gradient and constraint normals: SLSQP asks for gradients only at
    # points inside the bounds - elsewhere SciPy's gradient raises before the constraints are clipped)
    x_cached = x.copy()
    f_cached = value(x_cached)
    h_cached = _forward_steps(x_cached, lower, upper)
    g = gradient(x_cached, f_cached, h_cached)
    g_current = True
    fx = f_cached
    ws = slsqp_workspace(n, m, ftol, maxiter)
    state, c, d = ws.state, ws.c, ws.d
    if m:
        constraint_normals(c, x, h_cached)
        constraint_values(d, x)
    while True:
        slsqp_core(state, fx, g, c, d, x, ws.mult, xl, xu, ws.buffer, ws.indices)
        mode = state["mode"]
        if mode in (1, -1) and not _equal_points(x, x_cached):
            x_cached, g_current = x.copy(), False
            f_cached = value(x_cached)
        if mode == 1:
            fx = f_cached
            if m:
                constraint_values(d, x)
        if mode == -1:
            if not g_current:
                h_cached = _forward_steps(x_cached, lower, upper)
                g, g_current = gradient(x_cached, f_cached, h_cached), True
            if m:
                constraint_normals(c, x, h_cached)
        if abs(mode) != 1:
            return x, int(mode)


@functools.cache
def _garch_t_parts(asymmetric: bool) -> tuple[arch.univariate.GARCH, arch.univariate.StudentsT, FloatArray, FloatArray]:
    """The volatility process, distribution and stacked linear constraints ``a x - b >= 0`` that
    ``arch_model(y, mean="Zero", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t")`` builds (the zero mean
    adds no parameter or constraint); fitting reads but does not change them, so one set serves every fit."""
    v = arch.univariate.GARCH(p=1, o=int(asymmetric), q=1, power=2.0)
    dist = arch.univariate.StudentsT()
    a_v, b_v = v.constraints()
    a_d, b_d = dist.constraints()
    kv = int(v.num_params)
    a = np.zeros((a_v.shape[0] + a_d.shape[0], kv + int(dist.num_params)))
    a[: a_v.shape[0], :kv] = a_v
    a[a_v.shape[0] :, kv:] = a_d
    return v, dist, a, np.concatenate([b_v, b_d]).astype(float)


@njit(**JIT)
def _garch_recursions_kernel(
    parameters: FloatArray,
    fresids: FloatArray,
    sresids: FloatArray,
    p: int,
    o: int,
    q: int,
    backcast: float,
    var_bounds: FloatArray,
    sigma2: FloatArray,
) -> None:
    """``sigma2[r]`` = arch's ``garch_recursion(parameters[r], ...)`` for every row ``r``: its loop (Cython,
    ``recursions.pyx``) and its ``bounds_check``, operation for operation (libm's ``log``, no fused products)."""
    nobs = fresids.shape[0]
    for r in range(parameters.shape[0]):
        for t in range(nobs):
            loc = 0
            s = parameters[r, loc]
            loc += 1
            for j in range(p):
                if (t - 1 - j) < 0:
                    s += parameters[r, loc] * backcast
                else:
                    s += parameters[r, loc] * fresids[t - 1 - j]
                loc += 1
            for j in range(o):
                if (t - 1 - j) < 0:
                    s += parameters[r, loc] * 0.5 * backcast
                else:
                    s += parameters[r, loc] * fresids[t - 1 - j] * (1.0 if sresids[t - 1 - j] < 0 else 0.0)
                loc += 1
            for j in range(q):
                if (t - 1 - j) < 0:
                    s += parameters[r, loc] * backcast
                else:
                    s += parameters[r, loc] * sigma2[r, t - 1 - j]
                loc += 1
            if s < var_bounds[t, 0]:
                s = var_bounds[t, 0]
            elif s > var_bounds[t, 1]:
                if s > 1.7976931348623157e308:
                    s = var_bounds[t, 1] + 1000
                else:
                    s = var_bounds[t, 1] + math.log(s / var_bounds[t, 1])
            sigma2[r, t] = s


@njit(**JIT)
def _normal_loglikelihood_rows(
    sigma2: FloatArray, log_sigma2: FloatArray, squared: FloatArray, log_2pi: float, out: FloatArray
) -> None:
    """``out[r] = np.sum(-0.5 * (log_2pi + log_sigma2[r] + squared / sigma2[r]))`` (arch's Gaussian
    log-likelihood of a starting-value point), each term as the array code forms it, numpy's pairwise sum,
    written over ``log_sigma2``."""
    n = squared.shape[0]
    for r in range(sigma2.shape[0]):
        row = log_sigma2[r]
        for i in range(n):
            row[i] = -0.5 * ((log_2pi + row[i]) + squared[i] / sigma2[r, i])
        out[r] = pairwise_sum(row, 0, n)


@functools.cache
def _starting_value_grid(p: int, o: int, q: int) -> tuple[FloatArray, FloatArray, NDArray[np.intp], NDArray[np.intp]]:
    """arch's 64-point starting-value grid with the target variance left out: ``1 - (alpha + gamma / 2 + beta)``
    per point (the factor of the target in the constant), the points with the constant 1 (the other entries as
    ``GARCH.starting_values`` computes them), the first point of each distinct one and each point's distinct
    index (without ``gamma``, 16 distinct)."""
    alphas = [0.01, 0.05, 0.1, 0.2]
    factors, points = [], []
    for alpha, gamma, agb in itertools.product(alphas, alphas, [0.5, 0.7, 0.9, 0.98]):
        factors.append(1.0 - agb)
        sv = np.ones(p + o + q + 1, dtype=float)
        if p > 0:
            sv[1 : 1 + p] = alpha / p
            agb -= alpha
        if o > 0:
            sv[1 + p : 1 + p + o] = gamma / o
            agb -= gamma / 2.0
        if q > 0:
            sv[1 + p + o : 1 + p + o + q] = agb / q
        points.append(sv)
    factor = np.array(factors)
    keys = [(f, *sv[1:]) for f, sv in zip(factors, points, strict=True)]  # the constant is factor * target
    first: dict[tuple[float, ...], int] = {}
    inverse = np.array([first.setdefault(k, len(first)) for k in keys], dtype=np.intp)
    unique = np.array([keys.index(k) for k in first], dtype=np.intp)
    grid = (factor, np.array(points), unique, inverse)
    for arr in grid:  # cached: read-only, so no caller can change the next fit's grid
        arr.setflags(write=False)
    return grid


def _garch_starting_values(
    v: arch.univariate.GARCH, resids: FloatArray, f_resids: FloatArray, s_resids: FloatArray, var_bounds: FloatArray
) -> FloatArray:
    """``GARCH.starting_values(resids)`` (power 2): the same 64-point grid, each point's Gaussian
    log-likelihood by the same recursion and operations, the first maximum kept. The grid's constants are
    ``(1 - agb) * target`` (one product, as arch's ``(1 - agb) * target * ones``), the distinct points' recursions
    run in one kernel (without ``gamma``, 16 of them) and their ``log(sigma2)`` in one ``np.log``."""
    p, o, q, power = v.p, v.o, v.q, v.power
    target = np.mean(np.absolute(resids) ** power)
    scale = np.mean(resids**2) / (target ** (2.0 / power))
    target *= scale ** (power / 2)
    factor, points, unique, inverse = _starting_value_grid(p, o, q)
    svs = points.copy()
    svs[:, 0] = factor * target
    distinct = np.ascontiguousarray(svs[unique])
    nobs = resids.shape[0]
    sigma2 = np.empty((distinct.shape[0], nobs))
    _garch_recursions_kernel(distinct, f_resids, s_resids, p, o, q, float(v.backcast(resids)), var_bounds, sigma2)
    llfs = np.empty(distinct.shape[0])
    _normal_loglikelihood_rows(sigma2, np.log(sigma2), resids**2.0, float(np.log(2 * np.pi)), llfs)
    return svs[int(np.argmax(llfs[inverse]))]


def _t_starting_value(std_resids: FloatArray) -> FloatArray:
    """``StudentsT.starting_values(std_resids)``: the moment estimate of ``nu`` from the kurtosis, computed
    by ``scipy.stats.kurtosis`` itself without its argument-checking wrapper (a 1-D float array)."""
    k = float(_kurtosis(std_resids, fisher=False))
    sv = max((4.0 * k - 6.0) / (k - 3.0) if k > 3.75 else 12.0, 4.0)
    return np.array([sv])


@njit(**JIT)
def _t_log_argument(sigma2: FloatArray, nu_minus_2: float, squared: FloatArray, out: FloatArray) -> None:
    """``out = 1 + squared / (sigma2 * (nu - 2))``: arch's ``np.multiply``, ``np.divide``, ``np.add`` steps."""
    for i in range(sigma2.shape[0]):
        out[i] = 1.0 + squared[i] / (sigma2[i] * nu_minus_2)


@njit(**JIT)
def _t_loglikelihood_sum(constant: float, log_sigma2: FloatArray, half_nu_plus_1: float, log_arg: FloatArray) -> float:
    """``sum(constant - 0.5 log(sigma2) - (nu + 1) / 2 log_arg)`` with arch's order of operations per element and
    numpy's pairwise summation (``_summation.pairwise_sum``), written over ``log_arg``: the same bits as the arrays."""
    n = log_sigma2.shape[0]
    for i in range(n):
        log_arg[i] = (constant - 0.5 * log_sigma2[i]) - half_nu_plus_1 * log_arg[i]
    return pairwise_sum(log_arg, 0, n)


@njit(**JIT)
def _t_log_argument_rows(sigma2: FloatArray, nu_minus_2: FloatArray, squared: FloatArray, out: FloatArray) -> None:
    """``_t_log_argument`` of each row ``r`` with ``nu - 2 = nu_minus_2[r]``."""
    for r in range(sigma2.shape[0]):
        _t_log_argument(sigma2[r], nu_minus_2[r], squared, out[r])


@njit(**JIT)
def _t_loglikelihood_rows(
    constant: FloatArray, log_sigma2: FloatArray, half_nu_plus_1: FloatArray, log_arg: FloatArray, out: FloatArray
) -> None:
    """``out[r] = _t_loglikelihood_sum`` of row ``r`` with its ``constant[r]`` and ``half_nu_plus_1[r]``."""
    for r in range(log_sigma2.shape[0]):
        out[r] = _t_loglikelihood_sum(constant[r], log_sigma2[r], half_nu_plus_1[r], log_arg[r])


def _arch_fit(y: FloatArray, asymmetric: bool, start: FloatArray | None) -> tuple[FloatArray, int]:
    """``arch_model(y, mean="Zero", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t", rescale=False)
    .fit(starting_values=start)``'s parameters and convergence flag: arch's own backcast, bounds, constraints,
    starting values (only without ``start``) and log-likelihood, minimized by ``_slsqp_minimize``. The
    residuals of a zero-mean model are the data (``y - 0``, the same bits), so no model object is built."""
    v, dist, a, b = _garch_t_parts(asymmetric)
    resids = np.ascontiguousarray(y, dtype=float)
    p, o, q, nobs = v.p, v.o, v.q, resids.shape[0]
    # what GARCH.compute_variance recomputes on every call from the residuals alone, made once per fit
    f_resids = np.absolute(resids) ** v.power
    s_resids = np.sign(resids)
    squared = resids**2.0
    backcast = v.backcast(resids)
    var_bounds = v.variance_bounds(resids)
    sigma2 = np.zeros(nobs, dtype=float)
    if start is None:
        sv_volatility = _garch_starting_values(v, resids, f_resids, s_resids, var_bounds)
        _garch_recursion(sv_volatility, f_resids, s_resids, sigma2, p, o, q, nobs, backcast, var_bounds)
        sv = np.hstack([sv_volatility, _t_starting_value(resids / np.sqrt(sigma2))])
    else:
        sv = np.asarray(start, dtype=float)
    bounds = [*v.bounds(resids), *dist.bounds(resids)]  # the Student-t bounds do not depend on the residuals
    lower = np.array([float(lo) if lo is not None else -np.inf for lo, _ in bounds])
    upper = np.array([float(up) if up is not None else np.inf for _, up in bounds])
    if np.any(~(lower < upper)):  # a fixed parameter (all-zero returns): minimize takes another route, so arch fits
        model = arch_model(y, mean="Zero", vol="GARCH", p=1, o=o, q=1, dist="t", rescale=False)
        res = model.fit(disp="off", show_warning=False, starting_values=start)
        return np.asarray(res.params, dtype=float), int(res.convergence_flag)
    kv = int(v.num_params)

    lls, term = np.empty(nobs), np.empty(nobs)
    constants: dict[float, float] = {}  # the log-density's constant by nu (a gradient's steps share nu)

    def t_constant(nu: float) -> float:
        """The t log-density's constant at ``nu``, computed once per ``nu`` (NaN for a NaN ``nu``)."""
        constant = constants.get(nu)
        if constant is None:
            constant = constants[nu] = gammaln((nu + 1) / 2) - gammaln(nu / 2) - np.log(np.pi * (nu - 2)) / 2
        return constant

    def garch_t_negative_loglikelihood(x: FloatArray) -> float:
        """arch 8's GARCH.compute_variance and StudentsT.loglikelihood, operation for operation (the same
        ufuncs on the same operands, written into two buffers instead of fresh arrays)."""
        _garch_recursion(x[:kv], f_resids, s_resids, sigma2, p, o, q, nobs, backcast, var_bounds)
        nu = x[kv:][0]
        constant = t_constant(nu)
        # lls = constant - 0.5 * log(sigma2) - (nu + 1) / 2 * log(1 + e^2 / (sigma2 * (nu - 2))): the two logarithms
        # by numpy's log (its SIMD log is not libm's), the arithmetic and the sum by the kernels, element for element
        np.log(sigma2, out=term)
        _t_log_argument(sigma2, float(nu - 2), squared, lls)
        np.log(lls, out=lls)
        return -_t_loglikelihood_sum(float(constant), term, float((nu + 1) / 2), lls)

    def garch_t_negative_loglikelihoods(points: FloatArray) -> FloatArray:
        """``garch_t_negative_loglikelihood`` of each row of ``points``: the recursions in one kernel (arch's
        loop), each logarithm by numpy over all rows, the arithmetic and the sums by the same kernels per row."""
        rows = points.shape[0]
        sigma2_rows, term_rows, lls_rows = np.empty((rows, nobs)), np.empty((rows, nobs)), np.empty((rows, nobs))
        _garch_recursions_kernel(
            np.ascontiguousarray(points[:, :kv]), f_resids, s_resids, p, o, q, backcast, var_bounds, sigma2_rows
        )
        nus = points[:, kv]
        row_constants = np.array([t_constant(nu) for nu in nus])  # a gradient's few points
        np.log(sigma2_rows, out=term_rows)
        _t_log_argument_rows(sigma2_rows, nus - 2, squared, lls_rows)
        np.log(lls_rows, out=lls_rows)
        out = np.empty(rows)
        _t_loglikelihood_rows(row_constants, term_rows, (nus + 1) / 2, lls_rows, out)
        return -out

    return _slsqp_minimize(
        garch_t_negative_loglikelihood, sv, lower, upper, a, b, objective_rows=garch_t_negative_loglikelihoods
    )


def fit_garch(returns: ArrayLike, *, asymmetric: bool = False, previous: GarchParams | None = None) -> GarchParams:
    """Fit zero-mean (GJR-)GARCH(1,1) with Student-t innovations with ``arch.arch_model``.

    Returns are rescaled to percent for the optimizer and parameters are converted back.
    ``previous`` warm-starts the optimizer (e.g. the last walk-forward fit); if the fit then fails
    or gives non-finite parameters, ``previous`` is returned with ``converged=False`` (without
    ``previous`` a ``RuntimeError`` is raised).
    """
    r = np.asarray(returns, dtype=np.float64)
    y = PERCENT * r
    if not np.all(np.isfinite(y)):  # what arch_model raises
        raise ValueError("NaN or inf values found in y. y must contains only finite values.")
    start = None
    if previous is not None:
        head = [previous.omega * PERCENT**2, previous.alpha]
        start = np.array([*head, *([previous.gamma] if asymmetric else []), previous.beta, previous.nu])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if _LEAN_SLSQP:
                x, flag = _arch_fit(y, asymmetric, start)
            else:
                model = arch_model(y, mean="Zero", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t", rescale=False)
                res = model.fit(disp="off", show_warning=False, starting_values=start)
                x, flag = np.asarray(res.params, dtype=float), int(res.convergence_flag)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        if previous is None:
            raise RuntimeError(f"GARCH fit failed: {exc}") from exc
        return replace(previous, converged=False)
    # parameter order: omega, alpha[1], (gamma[1],) beta[1], nu
    params = GarchParams(
        omega=float(x[0]) / PERCENT**2,
        alpha=float(x[1]),
        gamma=float(x[2]) if asymmetric else 0.0,
        beta=float(x[-2]),
        nu=float(x[-1]),
        backcast=_backcast(r),
        converged=flag == 0,
    )
    if not all(math.isfinite(v) for v in (params.omega, params.alpha, params.gamma, params.beta)):
        if previous is None:
            raise RuntimeError("GARCH fit returned non-finite parameters")
        return replace(previous, converged=False)
    return params


def garch_variance(params: GarchParams, returns: ArrayLike) -> FloatArray:
    """One-step conditional variances, ``n + 1`` entries: entry ``t`` uses ``r_0 .. r_{t-1}``.

    Same recursion and backcast as arch (``sigma^2_0 = omega + (alpha + gamma / 2 + beta) backcast``),
    without arch's extreme-value variance bounds.
    """
    r = np.asarray(returns, dtype=np.float64)
    s0 = params.omega + params.persistence * params.backcast
    shock = params.omega + (params.alpha + params.gamma * (r < 0.0)) * r * r
    return _one_pole(s0, 1.0, params.beta, shock)


def garch_variance_sum(params: GarchParams, next_variance: ArrayLike, horizon: int) -> FloatArray:
    """``sum_{k=1..h} E_t[sigma^2_{t+k}]`` given ``sigma^2_{t+1}`` (vectorized over origins).

    ``E_t[sigma^2_{t+k+1}] = omega + (alpha + gamma / 2 + beta) E_t[sigma^2_{t+k}]`` (symmetric
    innovations), the recursion behind arch's analytic forecasts.
    """
    v = np.asarray(next_variance, dtype=np.float64)
    total = np.zeros_like(v)
    for _ in range(horizon):
        total = total + v
        v = params.omega + params.persistence * v
    return total


def forward_realized_variance(returns: ArrayLike, horizon: int) -> FloatArray:
    """``RV_t(h) = sum_{j=1..h} r_{t+j}^2`` for every ``t``; NaN where ``t + h >= n``."""
    r = np.asarray(returns, dtype=np.float64)
    n = r.size
    csum = np.concatenate(([0.0], np.cumsum(r * r)))
    out = np.full(n, np.nan)
    t = np.arange(max(n - horizon, 0))
    out[t] = csum[t + horizon + 1] - csum[t + 1]
    return out


def _trailing_mean(x: FloatArray, window: int) -> FloatArray:
    """Mean of ``x[t - window + 1 .. t]``; NaN for ``t < window - 1``."""
    csum = np.concatenate(([0.0], np.cumsum(x)))
    out = np.full(x.size, np.nan)
    if x.size >= window:
        out[window - 1 :] = (csum[window:] - csum[:-window]) / window
    return out


def build_features(history: PriceHistory, garch_vol: ArrayLike) -> tuple[FloatArray, tuple[str, ...]]:
    """Feature matrix, one row per return index ``t`` using data through day ``t`` only.

    Columns: ``rv_{w}`` trailing realized vols (annualized) over 5/10/21/63 days; ``parkinson_{w}``
    (``(ln H/L)^2 / (4 ln 2)``, Parkinson 1980) and ``garman_klass_{w}``
    (``0.5 (ln H/L)^2 - (2 ln 2 - 1) (ln C/O)^2``, Garman & Klass 1980) over 5/21 days, annualized,
    when high/low (and open) are given; ``ret`` and ``abs_ret``; ``garch_vol`` (the caller's
    annualized one-step GARCH vol after ``r_t``); ``implied_vol`` and ``implied_skew`` when given.
    """
    r = history.returns
    cols: list[FloatArray] = []
    names: list[str] = []
    for w in RV_WINDOWS:
        cols.append(np.sqrt(TRADING_DAYS * _trailing_mean(r * r, w)))
        names.append(f"rv_{w}")
    if history.high is not None and history.low is not None:
        hl = np.log(history.high / history.low)[1:] ** 2
        parkinson = hl / (4.0 * math.log(2.0))
        for w in RANGE_WINDOWS:
            cols.append(np.sqrt(TRADING_DAYS * _trailing_mean(parkinson, w)))
            names.append(f"parkinson_{w}")
        if history.open is not None:
            co = np.log(history.close / history.open)[1:] ** 2
            gk = np.maximum(0.5 * hl - (2.0 * math.log(2.0) - 1.0) * co, 0.0)
            for w in RANGE_WINDOWS:
                cols.append(np.sqrt(TRADING_DAYS * _trailing_mean(gk, w)))
                names.append(f"garman_klass_{w}")
    cols += [r, np.abs(r), np.asarray(garch_vol, dtype=np.float64)]
    names += ["ret", "abs_ret", "garch_vol"]
    for name in ("implied_vol", "implied_skew"):
        value = getattr(history, name)
        if value is not None:
            cols.append(value[1:])
            names.append(name)
    return np.column_stack(cols), tuple(names)


def qlike(realized: ArrayLike, forecast: ArrayLike) -> float:
    """Mean QLIKE loss (Patton 2011): ``RV / F - ln(RV / F) - 1``; both must be positive."""
    rv = np.asarray(realized, dtype=np.float64)
    f = np.asarray(forecast, dtype=np.float64)
    if rv.shape != f.shape or rv.size == 0:
        raise ValueError("realized and forecast must be non-empty and of equal shape")
    if np.any(~(rv > 0.0)) or np.any(~(f > 0.0)):
        raise ValueError("QLIKE needs positive realized and forecast variances")
    ratio = rv / f
    return float(np.mean(ratio - np.log(ratio) - 1.0))


def mse(realized: ArrayLike, forecast: ArrayLike) -> float:
    """Mean squared error ``mean((RV - F)^2)``."""
    rv = np.asarray(realized, dtype=np.float64)
    f = np.asarray(forecast, dtype=np.float64)
    if rv.shape != f.shape or rv.size == 0:
        raise ValueError("realized and forecast must be non-empty and of equal shape")
    return float(np.mean((rv - f) ** 2))


# --------------------------------------------------------------------------------------------------
# Walk-forward
# --------------------------------------------------------------------------------------------------


def _fit_predict_xgboost(
    features: FloatArray, target: FloatArray, x_pred: FloatArray, config: VolForecastConfig
) -> FloatArray | None:
    """Predictions at ``x_pred`` of a ``reg:gamma`` booster trained on the rows with a positive target; None if
    too few rows."""
    keep = np.isfinite(target) & (target > 0.0)
    if int(keep.sum()) < config.xgb_min_rows:
        return None
    y = target[keep]
    params = {
        "objective": "reg:gamma",
        "tree_method": "hist",
        "max_depth": config.xgb_max_depth,
        "eta": config.xgb_learning_rate,
        "min_child_weight": config.xgb_min_child_weight,
        "nthread": config.xgb_n_jobs,
        "seed": config.random_state,
        "base_score": float(np.mean(y)),
        "verbosity": 0,
    }
    return _xgb_train_predict(params, features[keep], y, x_pred, config.xgb_num_boost_round)


def _xgb_train_predict(
    params: dict[str, object], x: FloatArray, y: FloatArray, x_pred: FloatArray, rounds: int
) -> NDArray[np.float32]:
    """``xgb.train(params, xgb.DMatrix(x, label=y, missing=nan, nthread=params["nthread"]), rounds)
    .predict(xgb.DMatrix(x_pred, missing=nan, nthread=params["nthread"]))`` (no evaluation sets, no callbacks).

    The same C calls with the same arguments: ``XGDMatrixCreateFromDense`` on the arrays' interfaces and
    ``XGDMatrixSetInfoFromInterface`` for the label (``DMatrix``), ``XGBoosterCreate`` with the training matrix
    as its cache and ``XGBoosterSetParam`` per parameter, ``validate_parameters`` last (``Booster``), one
    ``XGBoosterUpdateOneIter`` per round (``Booster.update``) and ``XGBoosterPredictFromDMatrix`` with
    ``Booster.predict``'s defaults; without the Python layers around them (data dispatch, feature-name checks,
    ``xgb.train``'s callback container), which change no number. The handles are freed before returning."""
    nthread = int(params["nthread"])  # type: ignore[call-overload]
    if not _LEAN_XGB or rounds < 1:
        dtrain = xgb.DMatrix(x, label=y, missing=np.nan, nthread=nthread)
        booster = xgb.train(params, dtrain, num_boost_round=rounds)
        return booster.predict(xgb.DMatrix(x_pred, missing=np.nan, nthread=nthread))
    lib, check = _XGB_LIB, _xgb_check_call
    x, y, x_pred = (np.require(a, np.float64, "CA") for a in (x, y, x_pred))
    args = _xgb_jcargs(missing=float(np.nan), nthread=nthread, data_split_mode=0)
    train, pred, booster = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    try:
        check(lib.XGDMatrixCreateFromDense(_xgb_array_interface(x), args, ctypes.byref(train)))
        check(lib.XGDMatrixSetInfoFromInterface(train, b"label", _xgb_array_interface(y)))
        check(lib.XGBoosterCreate((ctypes.c_void_p * 1)(train), ctypes.c_uint64(1), ctypes.byref(booster)))
        for key, value in [*params.items(), ("validate_parameters", True)]:
            check(lib.XGBoosterSetParam(booster, key.encode(), str(value).encode()))
        for i in range(rounds):
            check(lib.XGBoosterUpdateOneIter(booster, ctypes.c_int(i), train))
        check(lib.XGDMatrixCreateFromDense(_xgb_array_interface(x_pred), args, ctypes.byref(pred)))
        shape, dims = ctypes.POINTER(ctypes.c_uint64)(), ctypes.c_uint64()
        values = ctypes.POINTER(ctypes.c_float)()
        check(
            lib.XGBoosterPredictFromDMatrix(
                booster, pred, _XGB_PREDICT_ARGS, ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(values)
            )
        )
        size = math.prod(shape[i] for i in range(dims.value))
        return np.ctypeslib.as_array(values, shape=(size,)).copy()  # the buffer belongs to the booster
    finally:
        for handle, free in ((booster, "XGBoosterFree"), (pred, "XGDMatrixFree"), (train, "XGDMatrixFree")):
            if handle.value:
                check(getattr(lib, free)(handle))


#: ``Booster.predict``'s configuration with its defaults (values, all trees, not training, flat output).
_XGB_PREDICT_ARGS = json.dumps(
    {"type": 0, "training": False, "iteration_begin": 0, "iteration_end": 0, "strict_shape": False}
).encode()


def walk_forward(
    history: PriceHistory, config: VolForecastConfig | None = None, *, scored_only: bool = False
) -> WalkForward:
    """Expanding-window walk-forward forecasts of every model and horizon, without look-ahead.

    Origins run from ``min_train - 1`` (or the last return, for short histories) to ``n - 1``.
    At each refit origin ``s`` GARCH/GJR are fitted on ``r_0 .. r_s`` (warm-started from the
    previous fit) and, per horizon ``h``, XGBoost on feature rows ``t <= s - h`` (so targets end by
    ``s``). Forecasts at origins ``t`` of the block use those fits and data through ``r_t`` only.
    XGBoost's ``garch_vol`` feature is the GARCH filter with the parameters fitted at ``s``, for its
    training rows as well as for the block's forecast rows.

    ``scored_only``: no XGBoost booster for a (block, horizon) that ``evaluate`` never reads, i.e. whose
    origins are all before ``min_train - 1`` or without a positive realized variance and which does not hold
    the last origin (the last block of the longest horizons); those forecasts stay NaN. ``evaluate`` and
    ``select_models`` give the same rows either way.
    """
    cfg = config or VolForecastConfig()
    r = history.returns
    n = r.size
    if n < 2 * BACKCAST_LENGTH:
        raise ValueError(f"need at least {2 * BACKCAST_LENGTH} returns, got {n}")
    first_oos = cfg.min_train - 1
    start = min(first_oos, n - 1)
    origins = np.arange(start, n, dtype=np.int64)
    refits = sorted({*range(start, n, cfg.refit_every), n - 1})
    blocks = list(zip(refits, [*refits[1:], n], strict=True))  # [s, end): origins using the fit at s
    annual = {h: TRADING_DAYS / h for h in cfg.horizons}

    forecasts: dict[tuple[str, int], FloatArray] = {}
    if MODEL_EWMA in cfg.models:
        s = ewma_variance(r, cfg.ewma_lambda)[origins + 1]
        for h in cfg.horizons:
            forecasts[(MODEL_EWMA, h)] = annual[h] * h * s

    garch_models = [m for m in (MODEL_GARCH, MODEL_GJR) if m in cfg.models]
    fits: dict[str, list[GarchParams]] = {m: [] for m in garch_models}
    for m in garch_models:
        for h in cfg.horizons:
            forecasts[(m, h)] = np.full(origins.size, np.nan)
    use_xgb = MODEL_XGBOOST in cfg.models
    targets = {h: forward_realized_variance(r, h) for h in cfg.horizons}
    feature_names: tuple[str, ...] = ()
    base_features: FloatArray | None = None
    if use_xgb:
        base_features, feature_names = build_features(history, np.full(n, np.nan))
        garch_col = feature_names.index("garch_vol")
        for h in cfg.horizons:
            forecasts[(MODEL_XGBOOST, h)] = np.full(origins.size, np.nan)
    warmup = max(RV_WINDOWS) - 1
    # the origins evaluate() scores per horizon (out of sample, realized variance positive); the last is reported
    scored = {h: (origins >= first_oos) & (targets[h][origins] > 0.0) for h in cfg.horizons}  # False for NaN

    for s, end in blocks:
        rows = slice(s - start, end - start)
        paths: dict[str, FloatArray] = {}
        for m in garch_models:
            prev = fits[m][-1] if fits[m] else None
            params = fit_garch(r[: s + 1], asymmetric=m == MODEL_GJR, previous=prev)
            fits[m].append(params)
            paths[m] = garch_variance(params, r[:end])  # entry t + 1 uses r_0 .. r_t
            for h in cfg.horizons:
                forecasts[(m, h)][rows] = annual[h] * garch_variance_sum(params, paths[m][s + 1 : end + 1], h)
        trained = [h for h in cfg.horizons if not scored_only or end == n or bool(scored[h][rows].any())]
        if use_xgb and base_features is not None and trained:
            x = base_features[:end].copy()
            x[:, garch_col] = np.sqrt(TRADING_DAYS * paths[MODEL_GARCH][1 : end + 1])
            scale = float(np.mean(r[: s + 1] ** 2)) or 1e-12
            for h in trained:
                last_row = s - h  # target r_{t+1..t+h} observed by s
                if last_row < warmup:
                    continue
                train = slice(warmup, last_row + 1)
                pred = _fit_predict_xgboost(x[train], targets[h][train] / (h * scale), x[s:end], cfg)
                if pred is None:
                    continue
                forecasts[(MODEL_XGBOOST, h)][rows] = annual[h] * h * scale * pred.astype(np.float64)

    realized = {h: annual[h] * targets[h][origins] for h in cfg.horizons}
    return WalkForward(
        origins=origins,
        is_oos=origins >= first_oos,
        forecast_variance=forecasts,
        realized_variance=realized,
        refit_origins=tuple(refits),
        garch_params={m: tuple(v) for m, v in fits.items()},
        feature_names=feature_names,
    )


def evaluate(wf: WalkForward, horizons: Sequence[int]) -> tuple[HorizonForecast, ...]:
    """Latest forecast and OOS QLIKE / MSE per (model, horizon).

    All models of a horizon are scored on the same origins: out-of-sample, realized variance
    observed and positive (QLIKE is undefined at zero), and every model's forecast finite and
    positive. A model with no forecast at the last origin (XGBoost on a short history) is omitted.
    """
    out: list[HorizonForecast] = []
    models = sorted({m for m, _ in wf.forecast_variance}, key=ALL_MODELS.index)
    for h in horizons:
        rv = wf.realized_variance[h]
        reported = [m for m in models if wf.forecast_variance[(m, h)][-1] > 0.0]  # False for NaN
        mask = wf.is_oos & np.isfinite(rv) & (rv > 0.0)
        for m in reported:
            f = wf.forecast_variance[(m, h)]
            mask &= np.isfinite(f) & (f > 0.0)
        n_oos = int(mask.sum())
        for m in reported:
            f = wf.forecast_variance[(m, h)]
            latest = float(f[-1])
            out.append(
                HorizonForecast(
                    model=m,
                    horizon_days=int(h),
                    annualized_vol=math.sqrt(latest),
                    oos_qlike=qlike(rv[mask], f[mask]) if n_oos else None,
                    oos_mse=mse(rv[mask], f[mask]) if n_oos else None,
                    n_oos=n_oos,
                )
            )
    return tuple(out)


def select_models(
    forecasts: Sequence[HorizonForecast], min_oos: int = 63
) -> tuple[tuple[HorizonForecast, ...], tuple[ModelSelection, ...]]:
    """Per horizon, use XGBoost only where its OOS QLIKE is strictly below GARCH's, else GARCH.

    Needs at least ``min_oos`` out-of-sample points. Every row of the horizon gets the decision's
    reason; exactly the chosen row gets ``selected=True``. Horizons without a GARCH row select
    nothing and get no ``ModelSelection``.
    """
    rows = list(forecasts)
    selections: list[ModelSelection] = []
    for h in sorted({f.horizon_days for f in rows}):
        by_model = {f.model: f for f in rows if f.horizon_days == h}
        garch = by_model.get(MODEL_GARCH)
        if garch is None:
            continue
        xgbr = by_model.get(MODEL_XGBOOST)
        use_xgb = False
        if xgbr is None:
            reason = "garch: no xgboost forecast"
        elif xgbr.oos_qlike is None or garch.oos_qlike is None or xgbr.n_oos < min_oos:
            reason = f"garch: too few out-of-sample points to compare (n_oos={xgbr.n_oos} < {min_oos})"
        elif xgbr.oos_qlike < garch.oos_qlike:
            use_xgb = True
            reason = f"xgboost: OOS QLIKE {xgbr.oos_qlike:.6g} < garch {garch.oos_qlike:.6g} (n_oos={xgbr.n_oos})"
        else:
            reason = (
                f"garch: xgboost OOS QLIKE {xgbr.oos_qlike:.6g} >= garch {garch.oos_qlike:.6g} (n_oos={xgbr.n_oos})"
            )
        chosen = MODEL_XGBOOST if use_xgb else MODEL_GARCH
        selections.append(ModelSelection(h, chosen, use_xgb, reason))
        for i, f in enumerate(rows):
            if f.horizon_days == h:
                rows[i] = replace(f, selected=f.model == chosen, selection_reason=reason)
    return tuple(rows), tuple(selections)


def forecast_volatility(
    history: PriceHistory, config: VolForecastConfig | None = None, *, scored_only: bool = False
) -> VolForecastResult:
    """Walk-forward, evaluate and select: the per-symbol entry point (``scored_only``: see ``walk_forward``;
    the same forecasts and selections, fewer walk-forward XGBoost forecasts)."""
    cfg = config or VolForecastConfig()
    wf = walk_forward(history, cfg, scored_only=scored_only)
    rows, selections = select_models(evaluate(wf, cfg.horizons), cfg.min_oos_for_selection)
    return VolForecastResult(forecasts=rows, selections=selections, walk_forward=wf)
