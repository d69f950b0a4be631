"""The Heston calibration's coefficient kernel ``_cf_block``: rows sharing ``(kappa, xi, rho)`` share the costly part
of the characteristic function, and a slice keeps that part from one call to the next. Checked bit for bit against
``_coefficient`` (the kernel before the sharing), against the numpy characteristic function ``heston_log_cf``, and the
surface prices of a Levenberg-Marquardt-like sequence of calls against fresh grids and the COS pricer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from risk_pipeline.quant.heston import (
    _cf_block,
    _coefficient,
    _SurfaceCos,
    _to_p,
    cos_grid,
    cos_interval,
    heston_log_cf,
    heston_price,
)


@njit(cache=False)
def _reference_block(t: float, a: float, w: float, params: np.ndarray, put: np.ndarray, call: np.ndarray) -> None:
    """Every coefficient on its own, as the kernel computed them before rows shared anything."""
    m, n = put.shape
    for i in range(m):
        v0, kappa, theta, xi, rho = params[i, 0], params[i, 1], params[i, 2], params[i, 3], params[i, 4]
        for k in range(n):
            put[i, k] = _coefficient(k, t, v0, kappa, theta, xi, rho, a, w, 0.0)
            call[i, k] = _coefficient(k, t, v0, kappa, theta, xi, rho, a, w, 1.0)


def _jacobian_rows(x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """The ten central-difference points of ``calibrate_heston``'s Jacobian, as parameters."""
    pts = np.repeat(x[None, :], 10, axis=0)
    pts[np.arange(5) * 2, np.arange(5)] += step
    pts[np.arange(5) * 2 + 1, np.arange(5)] -= step
    return _to_p(pts)


def _random_x(rng: np.random.Generator) -> np.ndarray:
    p = np.array(
        [
            rng.uniform(0.01, 0.2),
            rng.uniform(0.3, 6.0),
            rng.uniform(0.01, 0.2),
            rng.uniform(0.1, 2.0),
            rng.uniform(-0.95, 0.3),
        ]
    )
    return np.array([*np.log(p[:4]), math.atanh(p[4] / 0.999)])


def _block(t: float, a: float, w: float, params: np.ndarray, n: int, key: np.ndarray, core: np.ndarray):
    put, call = np.empty((params.shape[0], n)), np.empty((params.shape[0], n))
    _cf_block(t, a, w, np.ascontiguousarray(params), put, call, key, core)
    return put, call


@pytest.mark.parametrize("seed", range(6))
def test_shared_rows_and_kept_parts_equal_each_coefficient_on_its_own_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = float(rng.choice([2 / 365, 30 / 365, 0.5, 2.0]))
    x = _random_x(rng)
    base = _to_p(x[None, :])
    a_, b_, n_ = cos_interval(np.array([t]), base, 12.0, 1e-10)
    a, w, n = float(a_[0]), float(b_[0] - a_[0]), int(n_[0])
    key, core = np.zeros(4), np.zeros((4, n), dtype=np.complex128)
    trial = _to_p((x + rng.normal(0.0, 0.05, 5))[None, :])
    sequence = [base, _jacobian_rows(x), trial, trial, _jacobian_rows(x + 0.01), base[[0, 0, 0]], _jacobian_rows(x)]
    for params in sequence:  # residual at x, Jacobian at x (parts kept), a trial, ... in LM's order
        put, call = _block(t, a, w, params, n, key, core)
        ref_put, ref_call = np.empty_like(put), np.empty_like(call)
        _reference_block(t, a, w, np.ascontiguousarray(params), ref_put, ref_call)
        assert put.tobytes() == ref_put.tobytes()
        assert call.tobytes() == ref_call.tobytes()


def test_the_jacobian_shares_the_parts_of_its_v0_and_theta_rows() -> None:
    """The v0 and theta rows of a Jacobian have the base point's (kappa, xi, rho) exactly: the sharing applies."""
    rows = _jacobian_rows(_random_x(np.random.default_rng(3)))
    for r in (0, 1, 4, 5):
        assert rows[r, [1, 3, 4]].tobytes() == rows[0, [1, 3, 4]].tobytes()


def test_coefficients_match_the_numpy_characteristic_function() -> None:
    """Oracle: ``Re(phi(u_k - i shift) e^{-i u_k a})`` from ``heston_log_cf`` (numpy, independent code)."""
    rng = np.random.default_rng(9)
    x = _random_x(rng)
    params = _jacobian_rows(x)
    t, a, w, n = 0.25, -1.5, 3.0, 200
    put, call = _block(t, a, w, params, n, np.zeros(4), np.zeros((4, n), dtype=np.complex128))
    u = np.arange(n) * np.pi / w
    for i, p in enumerate(params):
        for shift, got in ((0.0, put[i]), (1.0, call[i])):
            z = heston_log_cf(u - 1j * shift, t, *p) - 1j * u * a
            ref = np.exp(z.real) * np.cos(z.imag)
            ref[0] = 1.0
            np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-15)


def test_surface_prices_over_a_call_sequence_equal_fresh_surfaces_and_the_cos_pricer() -> None:
    """One ``_SurfaceCos`` (parts kept between calls) gives the prices of a new one for every call; they are the COS
    prices of ``heston_price`` on the same grid."""
    rng = np.random.default_rng(5)
    t_slice = np.array([7 / 365, 0.1, 0.5, 1.5])
    slice_of = np.repeat(np.arange(4), 9)
    lk = np.tile(np.linspace(-0.4, 0.3, 9), 4) * np.sqrt(t_slice[slice_of])
    call = (lk > 0.0).astype(float)
    x = _random_x(rng)
    surf = _SurfaceCos(t_slice, slice_of, lk, call, _to_p(x)[None, :], 12.0, 1e-10)
    points = [x, x, x + 0.02, x + 0.02, x - 0.01]
    for i, pt in enumerate(points):
        params = _jacobian_rows(pt) if i % 2 else _to_p(pt)[None, :]
        fresh = _SurfaceCos(t_slice, slice_of, lk, call, _to_p(x)[None, :], 12.0, 1e-10)
        assert surf.prices(params).tobytes() == fresh.prices(params).tobytes()
    p = _to_p(x)
    grid = cos_grid(t_slice, p[None, :], 12.0, 1e-10)
    np.testing.assert_array_equal(grid.a, surf.a)
    np.testing.assert_array_equal(grid.terms, surf.n)
    cos = heston_price(1.0, np.exp(lk), t_slice[slice_of], 0.0, 0.0, call, *p, cf_tolerance=1e-10)
    np.testing.assert_allclose(surf.prices(p[None, :])[0], cos, rtol=1e-9, atol=1e-13)
