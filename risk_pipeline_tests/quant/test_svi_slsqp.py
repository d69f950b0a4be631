"""``slsqp_minimize`` against ``scipy.optimize.minimize(method="SLSQP")`` itself: the same iterates, bit for bit."""

import numpy as np
import pytest
from scipy.optimize import minimize

from risk_pipeline.quant.svi import slsqp_minimize


def _problem(seed: int) -> tuple:
    """A raw-SVI least-squares fit with the polish's constraints (min total variance, wing slopes), from a rough
    start, with analytic gradients: the shape of problem the fits hand to SLSQP."""
    rng = np.random.default_rng(seed)
    k = np.sort(rng.uniform(-0.5, 0.4, 15))
    a, b, rho, m, sigma = 0.02, 0.15, -0.5, 0.02, 0.2
    w = a + b * (rho * (k - m) + np.sqrt((k - m) ** 2 + sigma**2)) + rng.normal(0.0, 2e-4, k.size)
    weights = rng.uniform(0.5, 1.0, k.size)

    def fun(x):
        a, b, rho, m, sigma = (float(e) for e in x)
        dk = k - m
        root = np.sqrt(dk * dk + sigma * sigma)
        resid = a + b * (rho * dk + root) - w
        dw = np.stack((np.ones_like(dk), rho * dk + root, b * dk, -b * (rho + dk / root), b * sigma / root))
        wr = weights * resid
        return float(wr @ resid), 2.0 * (dw @ wr)

    constraints = [
        {
            "type": "ineq",
            "fun": lambda x: np.array([x[0] + x[1] * x[4] * np.sqrt(max(1.0 - x[2] ** 2, 0.0))]),
            "jac": lambda x: np.array(
                [
                    [
                        1.0,
                        x[4] * np.sqrt(max(1.0 - x[2] ** 2, 0.0)),
                        -x[1] * x[4] * x[2] / np.sqrt(max(1.0 - x[2] ** 2, 1e-300)),
                        0.0,
                        x[1] * np.sqrt(max(1.0 - x[2] ** 2, 0.0)),
                    ]
                ]
            ),
        },
        {
            "type": "ineq",
            "fun": lambda x: np.array([2.0 - x[1] * (1.0 + x[2]), 2.0 - x[1] * (1.0 - x[2])]),
            "jac": lambda x: np.array([[0.0, -(1.0 + x[2]), -x[1], 0.0, 0.0], [0.0, -(1.0 - x[2]), x[1], 0.0, 0.0]]),
        },
    ]
    bounds = [(None, None), (0.0, 2.0), (-0.999, 0.999), (-1.0, 1.0), (1e-3, 2.0)]
    x0 = np.array([0.01, 0.3, 0.2, -0.1, 0.5]) * rng.uniform(0.5, 1.5, 5)
    return fun, x0, bounds, constraints


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ftol", [1e-6, 1e-14])
def test_same_iterates_as_scipy(seed: int, ftol: float) -> None:
    fun, x0, bounds, constraints = _problem(seed)
    calls: list[list[bytes]] = [[], []]

    def counted(i: int):
        def f(x):
            calls[i].append(x.tobytes())
            return fun(x)

        return f

    want = minimize(
        counted(0), x0, jac=True, method="SLSQP", bounds=bounds, constraints=constraints,
        options={"maxiter": 60, "ftol": ftol},
    )  # fmt: skip
    got = slsqp_minimize(counted(1), x0, bounds, constraints, maxiter=60, ftol=ftol)
    assert got.x.tobytes() == want.x.tobytes()
    assert got.fun == want.fun
    assert (got.success, got.status, got.nit) == (bool(want.success), int(want.status), int(want.nit))
    assert calls[1] == calls[0]  # the objective evaluated at the same points, in the same order


def test_unconstrained_and_start_outside_bounds() -> None:
    """No constraints (``m = 0``: the larger workspace) and a start outside the bounds (clipped first)."""
    fun, _, bounds, _ = _problem(3)
    x0 = np.array([0.05, 3.0, 0.5, 0.0, 0.3])  # b above its bound
    want = minimize(fun, x0, jac=True, method="SLSQP", bounds=bounds, options={"maxiter": 50, "ftol": 1e-12})
    got = slsqp_minimize(fun, x0, bounds, [], maxiter=50, ftol=1e-12)
    assert got.x.tobytes() == want.x.tobytes()
    assert (got.success, got.nit) == (bool(want.success), int(want.nit))


def test_constraint_without_jacobian_goes_to_scipy() -> None:
    fun, x0, bounds, constraints = _problem(5)
    loose = [{"type": "ineq", "fun": c["fun"]} for c in constraints]
    want = minimize(fun, x0, jac=True, method="SLSQP", bounds=bounds, constraints=loose, options={"maxiter": 60})
    got = slsqp_minimize(fun, x0, bounds, loose, maxiter=60)
    assert got.x.tobytes() == want.x.tobytes()
