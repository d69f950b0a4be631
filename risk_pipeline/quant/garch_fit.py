"""``vol_forecast.fit_garch`` without arch's per-fit overhead: the same optimizer run, the same parameters.

``arch_model(...).fit()`` minimizes the negative log-likelihood with scipy's SLSQP, which estimates the
gradient of the objective and of each of the six linear inequality constraints by forward differences
(``scipy.optimize._numdiff.approx_derivative``). In a 500-return fit most of the time goes to that
machinery (about 90 constraint Jacobians and 15 gradients, each through several Python layers), to arch's
starting-value grid search (run even when starting values are given) and to building the result object.

``fit_garch_fast`` drives scipy's SLSQP kernel (``scipy.optimize._slsqplib.slsqp``, the routine
``minimize(method="SLSQP")`` calls) with the loop of ``scipy.optimize._slsqp_py._minimize_slsqp`` and
computes every function value, difference step and difference quotient with the same floating-point
operations in the same order: the objective is arch's ``_loglikelihood`` (its volatility recursion and
Student-t density); a constraint's forward
difference at ``x + h_i e_i`` is ``np.dot(a_row, x1) - b`` as in ``arch.univariate.base.constraint``, and
the steps are ``approx_derivative``'s (absolute step ``sqrt(eps)``, reversed or shortened at a bound).
The iterates, hence the parameters and the convergence flag, are therefore bit-identical to
``fit_garch``'s for scipy 1.17 and arch 8.0 (asserted in the tests and in ``bench/bench_backtest.py``);
a scipy or arch upgrade must re-run those comparisons.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from arch import arch_model
from numpy.typing import ArrayLike
from scipy.optimize._slsqplib import slsqp

from risk_pipeline.quant._numba import FloatArray
from risk_pipeline.quant.vol_forecast import PERCENT, GarchParams, _backcast, fit_garch

#: SLSQP's defaults in ``minimize(method="SLSQP")`` (arch passes none): ftol, iterations, difference step.
SLSQP_FTOL = 1.0e-6
SLSQP_MAX_ITER = 100
SLSQP_STEP = math.sqrt(np.finfo(np.float64).eps)


class _FixedParameter(Exception):
    """A bound fixes a parameter: ``minimize`` removes it from the problem, a case left to arch itself."""


class _ForwardDifferences:
    """Forward-difference steps of ``approx_derivative(method="2-point", abs_step=SLSQP_STEP, bounds=...)``."""

    def __init__(self, lower: FloatArray, upper: FloatArray) -> None:
        self.lower = lower
        self.upper = upper
        self.unbounded = bool(np.all((lower == -np.inf) & (upper == np.inf)))

    def steps(self, x0: FloatArray) -> FloatArray:
        """The steps ``h`` at ``x0`` (raises as ``approx_derivative`` does when ``x0`` is outside the bounds)."""
        if np.any((x0 < self.lower) | (x0 > self.upper)):
            raise ValueError("`x0` violates bound constraints.")
        sign_x0 = (x0 >= 0).astype(float) * 2 - 1
        dx = (x0 + SLSQP_STEP) - x0
        h = np.where(dx == 0, SLSQP_STEP * sign_x0 * np.maximum(1.0, np.abs(x0)), SLSQP_STEP)
        if self.unbounded:
            return h
        h_adjusted = h.copy()
        lower_dist = x0 - self.lower
        upper_dist = self.upper - x0
        x = x0 + h
        violated = (x < self.lower) | (x > self.upper)
        fitting = np.abs(h) <= np.maximum(lower_dist, upper_dist)
        h_adjusted[violated & fitting] *= -1
        forward = (upper_dist >= lower_dist) & ~fitting
        h_adjusted[forward] = upper_dist[forward]
        backward = (upper_dist < lower_dist) & ~fitting
        h_adjusted[backward] = -lower_dist[backward]
        return h_adjusted


class _SlsqpProblem:
    """Objective, gradient, constraint values and normals as ``_minimize_slsqp`` evaluates them (jac=None)."""

    def __init__(self, objective: Any, a: FloatArray, b: FloatArray, lower: FloatArray, upper: FloatArray) -> None:
        self.objective = objective
        self.rows = [(a[i], b[i]) for i in range(a.shape[0])]
        self.lower = lower
        self.upper = upper
        self.differences = _ForwardDifferences(lower, upper)
        self._x: FloatArray | None = None
        self._f = 0.0
        self._g: FloatArray | None = None

    def _at(self, x: FloatArray) -> None:
        if self._x is None or not np.array_equal(x, self._x):
            self._x = np.array(x, dtype=np.float64)
            self._f = self.objective(np.copy(self._x))
            self._g = None

    def fun(self, x: FloatArray) -> float:
        """``ScalarFunction.fun``: the objective at ``x`` (cached for the last ``x``)."""
        self._at(x)
        return self._f

    def grad(self, x: FloatArray) -> FloatArray:
        """``ScalarFunction.grad`` with ``grad="2-point"``: forward differences from the value at ``x``."""
        self._at(x)
        if self._g is None:
            x0 = self._x
            assert x0 is not None
            h = self.differences.steps(x0)
            f0 = np.atleast_1d(self._f)
            g = np.empty(x0.size)
            for i in range(x0.size):
                x1 = np.copy(x0)
                x1[i] = x0[i] + h[i]
                f1 = np.atleast_1d(self.objective(np.copy(x1)))
                g[i] = ((f1 - f0) / ((x0[i] + h[i]) - x0[i]))[0]
            self._g = g
        return self._g

    def constraints(self, d: FloatArray, x: FloatArray) -> None:
        """``_eval_constraint``: ``d[k] = a[k] . x - b[k]``."""
        for k, (coeff, val) in enumerate(self.rows):
            d[k] = np.dot(coeff, x) - val

    def normals(self, c: FloatArray, x: FloatArray) -> None:
        """``_eval_con_normals``: each constraint's forward-difference gradient at ``x`` clipped to the bounds."""
        if (x < self.lower).any() or (x > self.upper).any():
            x = np.clip(x, self.lower, self.upper)
        h = self.differences.steps(x)
        n = x.size
        shifted = []
        for i in range(n):
            x1 = np.copy(x)
            x1[i] = x[i] + h[i]
            shifted.append(x1)
        dx = [(x[i] + h[i]) - x[i] for i in range(n)]
        for k, (coeff, val) in enumerate(self.rows):
            f0 = np.dot(coeff, x) - val
            for i in range(n):
                c[k, i] = ((np.dot(coeff, shifted[i]) - val) - f0) / dx[i]


def _minimize_slsqp(problem: _SlsqpProblem, x0: FloatArray) -> tuple[FloatArray, int]:
    """``_minimize_slsqp``'s loop for inequality constraints only: the solution and SLSQP's exit mode."""
    n = x0.size
    m = len(problem.rows)
    x = np.clip(np.asarray(x0, dtype=np.float64).reshape(-1), problem.lower, problem.upper)
    xl = np.where(np.isfinite(problem.lower), problem.lower, np.nan)
    xu = np.where(np.isfinite(problem.upper), problem.upper, np.nan)
    state: dict[str, Any] = {
        "acc": SLSQP_FTOL,
        "alpha": 0.0,
        "f0": 0.0,
        "gs": 0.0,
        "h1": 0.0,
        "h2": 0.0,
        "h3": 0.0,
        "h4": 0.0,
        "t": 0.0,
        "t0": 0.0,
        "tol": 10.0 * SLSQP_FTOL,
        "exact": 0,
        "inconsistent": 0,
        "reset": 0,
        "iter": 0,
        "itermax": SLSQP_MAX_ITER,
        "line": 0,
        "m": m,
        "meq": 0,
        "mode": 0,
        "n": n,
    }
    indices = np.zeros([max(m + 2 * n + 2, 1)], dtype=np.int32)
    buffer_size = n * (n + 1) // 2 + 3 * m * n + 9 * m + 8 * n * n + 35 * n + 28
    if m == 0:
        buffer_size += 2 * n * (n + 1)
    buffer = np.zeros(max(buffer_size, 1), dtype=np.float64)
    fx = problem.fun(x)
    g = problem.grad(x)
    mult = np.zeros([max(1, m + 2 * n + 2)], dtype=np.float64)
    c = np.zeros([max(1, m), n], dtype=np.float64, order="F")
    d = np.zeros([max(1, m)], dtype=np.float64)
    problem.normals(c, x)
    problem.constraints(d, x)
    while True:
        slsqp(state, fx, g, c, d, x, mult, xl, xu, buffer, indices)
        if state["mode"] == 1:
            fx = problem.fun(x)
            problem.constraints(d, x)
        if state["mode"] == -1:
            g = problem.grad(x)
            problem.normals(c, x)
        if abs(state["mode"]) != 1:
            break
    return x, int(state["mode"])


def _fit(r: FloatArray, asymmetric: bool, previous: GarchParams | None) -> tuple[FloatArray, int]:
    """arch's ``fit`` of zero-mean (GJR-)GARCH(1,1)-t on percent returns: parameters and SLSQP's exit mode."""
    model = arch_model(
        PERCENT * r, mean="Zero", vol="GARCH", p=1, o=1 if asymmetric else 0, q=1, dist="t", rescale=False
    )
    vol, dist = model.volatility, model.distribution
    model._adjust_sample(None, None)
    resids = model.resids(model.starting_values())
    backcast = vol.backcast(resids)
    sigma2 = np.zeros(resids.shape[0], dtype=float)
    var_bounds = vol.variance_bounds(resids)
    model._backcast = backcast
    model._var_bounds = var_bounds
    parts = (vol.constraints(), dist.constraints())  # the zero mean has no parameters and no constraints
    a = np.zeros((sum(p[0].shape[0] for p in parts), vol.num_params + dist.num_params))
    b = np.zeros(a.shape[0])
    row = col = 0
    for coeff, val in parts:
        a[row : row + coeff.shape[0], col : col + coeff.shape[1]] = coeff
        b[row : row + coeff.shape[0]] = val
        row, col = row + coeff.shape[0], col + coeff.shape[1]
    if previous is None:  # arch's starting values: its grid search, then the distribution's
        sv_volatility = vol.starting_values(resids)
        vol.compute_variance(sv_volatility, resids, sigma2, backcast, var_bounds)
        std_resids = resids / np.sqrt(sigma2)
        bounds = vol.bounds(resids) + dist.bounds(std_resids)
        start = np.hstack([sv_volatility, dist.starting_values(std_resids)])
    else:  # given starting values are used as they are (arch only warns when they break a bound)
        bounds = vol.bounds(resids) + dist.bounds(resids)
        head = [previous.omega * PERCENT**2, previous.alpha]
        start = np.array([*head, *([previous.gamma] if asymmetric else []), previous.beta, previous.nu], dtype=float)
    lower = np.array([-np.inf if lo is None else float(lo) for lo, _ in bounds])
    upper = np.array([np.inf if hi is None else float(hi) for _, hi in bounds])
    if np.any(upper < lower):
        raise ValueError("An upper bound is less than the corresponding lower bound.")
    if np.any(lower == upper):  # minimize would take fixed parameters out of the problem: arch's own fit
        raise _FixedParameter

    n_vol = vol.num_params

    def objective(x: FloatArray) -> float:  # arch's ``_loglikelihood`` without its parameter parsing
        variance = vol.compute_variance(x[:n_vol], resids, sigma2, backcast, var_bounds)
        return -float(dist.loglikelihood(x[n_vol:], resids, variance, False))

    return _minimize_slsqp(_SlsqpProblem(objective, a, b, lower, upper), start)


def fit_garch_fast(returns: ArrayLike, *, asymmetric: bool = False, previous: GarchParams | None = None) -> GarchParams:
    """``vol_forecast.fit_garch(returns, asymmetric=asymmetric, previous=previous)``, bit for bit (module docstring).

    Zero-mean (GJR-)GARCH(1,1) with standardized Student-t innovations on percent returns; a failed fit
    returns ``previous`` with ``converged=False`` (without ``previous`` it raises ``RuntimeError``).
    """
    r = np.asarray(returns, dtype=np.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, mode = _fit(r, asymmetric, previous)
    except _FixedParameter:
        return fit_garch(r, asymmetric=asymmetric, previous=previous)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
        if previous is None:
            raise RuntimeError(f"GARCH fit failed: {exc}") from exc
        return GarchParams(**{**previous.__dict__, "converged": False})
    params = GarchParams(
        omega=float(p[0]) / PERCENT**2,
        alpha=float(p[1]),
        gamma=float(p[2]) if asymmetric else 0.0,
        beta=float(p[-2]),
        nu=float(p[-1]),
        backcast=_backcast(r),
        converged=mode == 0,
    )
    if not all(math.isfinite(v) for v in (params.omega, params.alpha, params.gamma, params.beta)):
        if previous is None:
            raise RuntimeError("GARCH fit returned non-finite parameters")
        return GarchParams(**{**previous.__dict__, "converged": False})
    return params
