"""``_least_squares_trf`` (``calibrate_sabr``'s solver) against ``scipy.optimize.least_squares(method="trf")`` itself:
the same solution bit for bit and the same residual points, on bounded problems whose steps hit and reflect off the
bounds, start on a bound, or end on one."""

import numpy as np
import pytest
from scipy.optimize import least_squares

from risk_pipeline.quant.sabr import _least_squares_trf


def _exp_decay(seed: int) -> tuple:
    """``y = a exp(-b t) + c`` with noise: 3 parameters, bounds that bind for some seeds."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 4.0, 25)
    a, b, c = rng.uniform(0.5, 2.0), rng.uniform(0.3, 3.0), rng.uniform(-0.5, 0.5)
    y = a * np.exp(-b * t) + c + rng.normal(0.0, 0.02, t.size)

    def fun(x):
        return x[0] * np.exp(-x[1] * t) + x[2] - y

    def jac(x):
        e = np.exp(-x[1] * t)
        return np.stack((e, -x[0] * t * e, np.ones_like(t)), axis=1)

    lb = np.array([0.0, 0.0, -rng.uniform(0.0, 0.3)])  # c's bound binds where c came out below it
    ub = np.array([np.inf, rng.uniform(1.0, 4.0), 0.3])
    x0 = np.array([1.0, 0.5, 0.0])
    return fun, jac, x0, lb, ub


def _rosenbrock(seed: int) -> tuple:
    """Rosenbrock residuals with a box cutting off the minimum (1, 1, 1): the solution is on a bound."""
    rng = np.random.default_rng(seed)

    def fun(x):
        return np.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0], 10.0 * (x[2] - x[1] ** 2), 1.0 - x[1]])

    def jac(x):
        return np.array(
            [[-20.0 * x[0], 10.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -20.0 * x[1], 10.0], [0.0, -1.0, 0.0]]
        )  # fmt: skip

    lb = np.array([-2.0, -1.5, 0.0])
    ub = np.array([rng.uniform(0.5, 0.9), 2.0, 2.0])
    x0 = np.array([-1.2, 1.0, 0.0])  # x[2] starts on its lower bound
    return fun, jac, x0, lb, ub


@pytest.mark.parametrize("make", [_exp_decay, _rosenbrock])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tol", [1e-8, 1e-12])
def test_same_solution_as_least_squares(make, seed: int, tol: float) -> None:
    fun, jac, x0, lb, ub = make(seed)
    points: list[list[bytes]] = [[], []]

    def counted(i: int):
        def f(x):
            points[i].append(np.asarray(x).tobytes())
            return fun(x)

        return f

    want = least_squares(
        counted(0), x0, jac=jac, bounds=(lb, ub), method="trf", x_scale="jac", ftol=tol, xtol=tol
    )  # fmt: skip
    got, success = _least_squares_trf(counted(1), jac, x0, lb, ub, ftol=tol, xtol=tol)
    assert got.tobytes() == want.x.tobytes()
    assert success == bool(want.success)
    assert points[1] == points[0]


def test_bound_hit_is_exercised() -> None:
    """At least one of the problems above ends on a bound (the reflective steps are used)."""
    on_bound = 0
    for seed in range(6):
        fun, jac, x0, lb, ub = _rosenbrock(seed)
        x, _ = _least_squares_trf(fun, jac, x0, lb, ub, ftol=1e-12, xtol=1e-12)
        on_bound += bool(np.any(np.isclose(x, ub, rtol=0, atol=1e-6)))
    assert on_bound > 0


def test_start_outside_bounds_raises_as_least_squares() -> None:
    fun, jac, _, lb, ub = _exp_decay(0)
    with pytest.raises(ValueError, match="outside of provided bounds"):
        least_squares(fun, np.array([1.0, 0.5, 5.0]), jac=jac, bounds=(lb, ub), method="trf")
    with pytest.raises(ValueError, match="outside of provided bounds"):
        _least_squares_trf(fun, jac, np.array([1.0, 0.5, 5.0]), lb, ub, ftol=1e-8, xtol=1e-8)
