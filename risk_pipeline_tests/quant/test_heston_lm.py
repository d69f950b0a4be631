"""``calibrate_heston`` runs MINPACK through ``leastsq`` (no Jacobian at the solution, each function remembering its
last point): the fits are bit-identical to ``least_squares(method="lm")`` running the same residuals and Jacobian,
the oracle here; the generating parameters are recovered."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from risk_pipeline.quant import heston
from risk_pipeline.quant.heston import HestonParams, calibrate_heston, heston_implied_vol


def _least_squares_lm(residuals, jacobian, x0, tol=1e-10):
    res = least_squares(residuals, x0, jac=jacobian, method="lm", xtol=tol, ftol=tol, gtol=tol)
    return res.x, int(res.nfev), bool(res.success)


def random_heston_params(rng: np.random.Generator) -> HestonParams:
    """Heston parameters drawn from the ranges the fits' tests use."""
    return HestonParams(
        float(rng.uniform(0.01, 0.12)),
        float(rng.uniform(0.5, 5.0)),
        float(rng.uniform(0.01, 0.12)),
        float(rng.uniform(0.2, 1.2)),
        float(rng.uniform(-0.9, -0.1)),
    )


def _surface(rng: np.random.Generator) -> tuple[HestonParams, np.ndarray, np.ndarray, np.ndarray]:
    p = random_heston_params(rng)
    days = np.sort(rng.choice([2, 7, 14, 30, 60, 91, 182, 365, 730], size=int(rng.integers(2, 7)), replace=False))
    t = np.repeat(days / 365.0, 11)
    k = np.tile(np.linspace(-0.3, 0.2, 11), days.size) * np.sqrt(np.maximum(t, 0.02) / 0.25)
    return p, t, k, heston_implied_vol(p, t, k)


@pytest.mark.parametrize("noise", [0.0, 0.004])
def test_fits_are_bit_identical_to_least_squares_lm(noise: float, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11 if noise else 5)
    cases = [_surface(rng) for _ in range(6)]
    fits = []
    for _, t, k, vol in cases:
        noisy = vol + noise * np.sin(9.0 * k + t)
        fits.append(calibrate_heston(t, k, noisy))
    monkeypatch.setattr(heston, "_levenberg_marquardt", _least_squares_lm)
    for (p, t, k, vol), fit in zip(cases, fits, strict=True):
        ref = calibrate_heston(t, k, vol + noise * np.sin(9.0 * k + t))
        assert fit.params.as_array().tobytes() == ref.params.as_array().tobytes()
        assert (fit.iterations, fit.converged, fit.n_quotes, fit.n_expiries) == (
            ref.iterations,
            ref.converged,
            ref.n_quotes,
            ref.n_expiries,
        )
        assert fit.model_vol.tobytes() == ref.model_vol.tobytes()
        assert (fit.rmse_vol_points, fit.max_abs_error_vol_points) == (
            ref.rmse_vol_points,
            ref.max_abs_error_vol_points,
        )
        if noise == 0.0 and fit.rmse_vol_points < 1e-4:  # an exact surface: the generating parameters come back
            np.testing.assert_allclose(fit.params.as_array(), p.as_array(), rtol=1e-3, atol=1e-5)


def test_residuals_not_finite_at_the_start_raise_as_least_squares_does() -> None:
    def residuals(x: np.ndarray) -> np.ndarray:
        return np.array([np.nan, 1.0, 2.0, 3.0, 4.0, 5.0]) * x[0]

    def jacobian(x: np.ndarray) -> np.ndarray:
        return np.ones((6, 5))

    x0 = np.ones(5)
    with pytest.raises(ValueError, match="Residuals are not finite in the initial point") as ours:
        heston._levenberg_marquardt(residuals, jacobian, x0)
    with pytest.raises(ValueError) as theirs:
        _least_squares_lm(residuals, jacobian, x0)
    assert str(ours.value) == str(theirs.value)
