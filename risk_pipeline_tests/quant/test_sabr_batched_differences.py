"""``calibrate_sabr`` evaluates the finite-difference points of each Jacobian in one call (``least_squares``'s
``workers`` map): the fits are bit-identical to ``least_squares`` calling the residuals once per point, and the
vectorized formulas equal the scalar ones element by element; SABR-generated smiles are recovered (QuantLib's
``sabrVolatility`` as the data source for Hagan's formula)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import QuantLib as ql
from scipy.optimize import least_squares

from risk_pipeline.quant.sabr import (
    RHO_BOUND,
    _black_vega_weight,
    calibrate_sabr,
    nu_upper_bound,
    sabr_hagan_vol,
    sabr_obloj_vol,
)


def _one_call_per_point(k: np.ndarray, v: np.ndarray, forward: float, t: float, beta: float, formula: str):
    """The calibration as it ran before: ``least_squares`` with its own finite differences, one call per point."""
    fn = {"hagan": sabr_hagan_vol, "obloj": sabr_obloj_vol}[formula]
    weight = np.sqrt(_black_vega_weight(k, forward, t, v))
    weight /= weight.max()
    atm = int(np.argmin(np.abs(np.log(k / forward))))
    x0 = np.array([float(v[atm] * forward ** (1.0 - beta)), 0.0, 0.5])
    bounds = (np.array([1e-8, -RHO_BOUND, 0.0]), np.array([np.inf, RHO_BOUND, nu_upper_bound(t)]))
    res = least_squares(
        lambda x: weight * (fn(k, forward, t, x[0], beta, x[1], x[2]) - v),
        x0,
        bounds=bounds,
        method="trf",
        x_scale="jac",
        xtol=1e-12,
        ftol=1e-12,
    )
    return res.x


def _smile(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, float]:
    forward = float(rng.uniform(20.0, 400.0))
    t = float(rng.choice([1 / 365, 7 / 365, 0.1, 0.5, 2.0]))
    n = int(rng.integers(3, 25))
    k = forward * np.exp(np.sort(rng.uniform(-0.5, 0.4, n)) * math.sqrt(max(t, 0.05)))
    base = rng.uniform(0.12, 0.6)
    v = base * (1.0 + rng.uniform(-0.4, 0.0) * np.log(k / forward) + rng.uniform(0.0, 1.5) * np.log(k / forward) ** 2)
    v = np.maximum(v + rng.normal(0.0, 0.003, n), 0.02)
    return k, v, forward, t


@pytest.mark.parametrize("formula", ["obloj", "hagan"])
@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0])
def test_fits_are_bit_identical_to_one_residual_call_per_point(formula: str, beta: float) -> None:
    rng = np.random.default_rng(int(beta * 10) + (formula == "hagan"))
    for _ in range(25):
        k, v, forward, t = _smile(rng)
        fit = calibrate_sabr(k, v, forward, t, beta, formula)
        ref = _one_call_per_point(k, v, forward, t, beta, formula)
        assert np.array([fit.alpha, fit.rho, fit.nu]).tobytes() == ref.tobytes()


@pytest.mark.parametrize("fn", [sabr_obloj_vol, sabr_hagan_vol])
def test_parameter_columns_give_each_scalar_smile_bit_for_bit(fn) -> None:
    rng = np.random.default_rng(3)
    k = 100.0 * np.exp(np.linspace(-0.6, 0.5, 23))
    params = np.column_stack([rng.uniform(0.05, 2.0, 7), rng.uniform(-0.99, 0.99, 7), rng.uniform(0.0, 12.0, 7)])
    params[3, 2] = 0.0  # z = 0: the series branch
    for beta in (1.0, 0.7, 0.0):
        block = fn(k, 100.0, 0.3, params[:, 0:1], beta, params[:, 1:2], params[:, 2:3])
        for i, (alpha, rho, nu) in enumerate(params):
            assert block[i].tobytes() == fn(k, 100.0, 0.3, alpha, beta, rho, nu).tobytes()


def test_calibration_recovers_quantlib_sabr_smiles() -> None:
    """Oracle: vols from QuantLib's ``sabrVolatility`` (Hagan 2002) are fitted back to 1e-6 vol."""
    forward, t = 100.0, 0.75
    k = forward * np.exp(np.linspace(-0.4, 0.3, 15))
    for alpha, beta, rho, nu in [(0.25, 1.0, -0.5, 0.8), (2.5, 0.5, -0.3, 0.6), (0.3, 1.0, 0.2, 1.5)]:
        v = np.array([ql.sabrVolatility(float(x), forward, t, alpha, beta, nu, rho) for x in k])
        fit = calibrate_sabr(k, v, forward, t, beta, "hagan")
        np.testing.assert_allclose(sabr_hagan_vol(k, forward, t, fit.alpha, beta, fit.rho, fit.nu), v, atol=1e-6)
        assert fit.rmse_vol_points < 1e-4
