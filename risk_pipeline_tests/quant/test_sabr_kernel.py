"""``calibrate_sabr``'s compiled least squares (``_calibrate_kernel``): the same fits, bit for bit, as
``scipy.optimize.least_squares(method="trf")`` with its own finite differences (the oracle) and as the numpy path
(``compiled=False``), over betas, both formulas, slices of 3 to 128 quotes, exact and noisy smiles and fits that end
on a bound; slices above ``_KERNEL_MAX_QUOTES`` take the numpy path; SABR smiles are recovered."""

from __future__ import annotations

import math

import numpy as np
import pytest

from risk_pipeline.quant.sabr import (
    _KERNEL_MAX_QUOTES,
    calibrate_sabr,
    nu_upper_bound,
    sabr_hagan_vol,
    sabr_obloj_vol,
)
from risk_pipeline_tests.quant.test_sabr_batched_differences import _one_call_per_point as _scipy_fit

FORMULAS = {"hagan": sabr_hagan_vol, "obloj": sabr_obloj_vol}


def _slice(rng: np.random.Generator, n: int, beta: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """A SABR smile (random parameters, some at or past the bounds' reach) with noise of 0 to 5 vol points."""
    forward = float(rng.uniform(20.0, 400.0))
    t = float(rng.choice([1 / 365, 5 / 365, 30 / 365, 0.25, 1.0, 2.0]))
    sd = 0.3 * math.sqrt(t)
    k = forward * np.exp(np.sort(rng.uniform(-3.0 * sd, 3.0 * sd, n)))
    alpha = float(rng.uniform(0.1, 0.6)) * forward ** (1.0 - beta)
    rho = float(rng.choice([-0.999, -0.95, rng.uniform(-0.9, 0.5), 0.9]))
    nu = float(rng.choice([0.0, rng.uniform(0.1, 4.0), 30.0]))
    v = sabr_obloj_vol(k, forward, t, alpha, beta, rho, nu)
    v = np.abs(v + rng.normal(0.0, float(rng.choice([0.0, 0.001, 0.01, 0.05])), n))
    return k, np.maximum(v, 0.01), forward, t


def _params(fit) -> bytes:
    return np.array([fit.alpha, fit.rho, fit.nu]).tobytes()


@pytest.mark.parametrize("formula", ["obloj", "hagan"])
@pytest.mark.parametrize("beta", [1.0, 0.7, 0.5, 0.0])
def test_compiled_fits_equal_least_squares_bit_for_bit(formula: str, beta: float) -> None:
    rng = np.random.default_rng(int(beta * 10) + 100 * (formula == "hagan"))
    sizes = [3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 40, 64, 127, 128]
    at_bound = errors = fitted = 0
    for i in range(40):
        n = sizes[i % len(sizes)]
        k, v, forward, t = _slice(rng, n, beta)
        try:
            slow = calibrate_sabr(k, v, forward, t, beta, formula, compiled=False)
        except ValueError as exc:  # a smile whose start gives non-finite residuals: the same error
            with pytest.raises(ValueError, match=str(exc).replace(".", r"\.")):
                calibrate_sabr(k, v, forward, t, beta, formula)
            errors += 1
            continue
        fit = calibrate_sabr(k, v, forward, t, beta, formula)
        assert _params(fit) == _scipy_fit(k, v, forward, t, beta, formula).tobytes(), (i, n)
        assert fit == slow
        fitted += 1
        at_bound += abs(fit.rho) > 0.998 or fit.nu < 1e-6 or fit.nu > 0.999 * nu_upper_bound(t)
    assert at_bound > 0  # some fits end on a bound (the reflective steps and the bound checks are taken)
    assert fitted >= 30 and errors <= 10


def test_slices_above_the_kernel_size_take_the_numpy_path_and_the_same_fit() -> None:
    rng = np.random.default_rng(5)
    k, v, forward, t = _slice(rng, _KERNEL_MAX_QUOTES + 7, 1.0)
    fit = calibrate_sabr(k, v, forward, t)
    assert fit == calibrate_sabr(k, v, forward, t, compiled=False)
    assert _params(fit) == _scipy_fit(k, v, forward, t, 1.0, "obloj").tobytes()


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_exact_smiles_are_recovered(beta: float) -> None:
    """Smiles of known parameters (Hagan's formula, checked against QuantLib's ``sabrVolatility`` in
    ``test_sabr.py``) are fitted back to 1e-6 in vol."""
    forward, t = 100.0, 0.5
    k = forward * np.exp(np.linspace(-0.4, 0.3, 11))
    alpha = 0.25 * forward ** (1.0 - beta)
    v = sabr_hagan_vol(k, forward, t, alpha, beta, -0.4, 0.8)
    fit = calibrate_sabr(k, v, forward, t, beta, "hagan")
    assert fit.converged
    np.testing.assert_allclose(sabr_hagan_vol(k, forward, t, fit.alpha, beta, fit.rho, fit.nu), v, atol=1e-6)
    assert fit.rmse_vol_points < 1e-4


def test_a_fit_repeated_between_others_is_the_same() -> None:
    """No state is kept from one kernel call to the next."""
    forward = 100.0
    slices = []
    for n, t, rho, nu in ((5, 0.1, -0.5, 1.0), (12, 0.5, -0.2, 2.0), (40, 1.0, 0.3, 0.6)):
        k = forward * np.exp(np.linspace(-0.4, 0.3, n))
        slices.append((k, sabr_obloj_vol(k, forward, t, 0.25, 1.0, rho, nu) + 0.002 * np.sin(np.arange(n)), forward, t))
    first = [calibrate_sabr(*s) for s in slices]
    assert [calibrate_sabr(*s) for s in reversed(slices)] == first[::-1]
