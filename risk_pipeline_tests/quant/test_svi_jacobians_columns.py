"""``_svi_jacobians`` (compiled) and ``svi_weighted_residuals``: the same numbers, bit for bit, as stacking them (the
array formulations they replaced, written out here), and derivatives that agree with central differences of raw SVI
and Durrleman's g."""

from __future__ import annotations

import numpy as np
import pytest

from risk_pipeline.quant.surfaces import _svi_dw, _svi_jacobians
from risk_pipeline.quant.svi import SviParams, durrleman_g, svi_total_variance, svi_weighted_residuals


def _stacked(x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, rho, m, sigma = (float(e) for e in x)
    d = k - m
    r = np.sqrt(d * d + sigma * sigma)
    w = a + b * (rho * d + r)
    w1 = b * (rho + d / r)
    w2 = b * sigma * sigma / r**3
    zeros, ones = np.zeros_like(k), np.ones_like(k)
    dw = np.stack((ones, rho * d + r, b * d, -b * (rho + d / r), b * sigma / r), axis=1)
    dw1 = np.stack((zeros, rho + d / r, b * ones, -b * sigma * sigma / r**3, -b * d * sigma / r**3), axis=1)
    dw2 = np.stack(
        (
            zeros,
            sigma * sigma / r**3,
            zeros,
            3.0 * b * sigma * sigma * d / r**5,
            b * (2.0 * sigma / r**3 - 3.0 * sigma**3 / r**5),
        ),
        axis=1,
    )
    safe_w = np.where(w > 0.0, w, 1.0)
    lead = 1.0 - k * w1 / (2.0 * safe_w)
    g = lead**2 - (w1 * w1 / 4.0) * (1.0 / safe_w + 0.25) + w2 / 2.0
    g_w = lead * k * w1 / safe_w**2 + w1 * w1 / (4.0 * safe_w**2)
    g_w1 = -lead * k / safe_w - 0.5 * w1 * (1.0 / safe_w + 0.25)
    dg = g_w[:, None] * dw + g_w1[:, None] * dw1 + 0.5 * dw2
    return np.where((w > 0.0)[:, None], dg, 0.0), dw, np.where(w > 0.0, g, -1.0)


@pytest.mark.parametrize("seed", range(5))
def test_columns_in_place_equal_the_stacked_formulation_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = np.linspace(-1.0, 1.0, int(rng.integers(1, 230)))
    for _ in range(20):
        x = np.array(
            [rng.uniform(-0.05, 0.1), rng.uniform(0.0, 2.0), rng.uniform(-0.99, 0.99), rng.uniform(-0.5, 0.5), 0.0]
        )
        x[4] = 10.0 ** rng.uniform(-4, 0.5)
        for got, ref in zip(_svi_jacobians(x, k), _stacked(x, k), strict=True):
            assert got.shape == ref.shape and got.tobytes() == ref.tobytes()


def test_derivatives_match_central_differences() -> None:
    x = np.array([0.02, 0.4, -0.4, 0.05, 0.15])
    k = np.linspace(-0.8, 0.8, 41)
    dg, dw, g = _svi_jacobians(x, k)
    np.testing.assert_allclose(g, durrleman_g(SviParams(*x), k), rtol=1e-12)
    for j in range(5):
        h = np.zeros(5)
        h[j] = 1e-6
        up, dn = SviParams(*(x + h)), SviParams(*(x - h))
        np.testing.assert_allclose(
            dw[:, j], (svi_total_variance(up, k) - svi_total_variance(dn, k)) / 2e-6, rtol=1e-6, atol=1e-8
        )
        np.testing.assert_allclose(dg[:, j], (durrleman_g(up, k) - durrleman_g(dn, k)) / 2e-6, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_svi_dw_alone_equals_the_stacked_dw_bit_for_bit_and_central_differences(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = np.linspace(-1.0, 1.0, int(rng.integers(1, 230)))
    for _ in range(20):
        x = np.array(
            [rng.uniform(-0.05, 0.1), rng.uniform(0.0, 2.0), rng.uniform(-0.99, 0.99), rng.uniform(-0.5, 0.5), 0.0]
        )
        x[4] = 10.0 ** rng.uniform(-4, 0.5)
        got = _svi_dw(x, k)
        assert got.tobytes() == _stacked(x, k)[1].tobytes()
    x = np.array([0.02, 0.4, -0.4, 0.05, 0.15])
    for j in range(5):
        h = np.zeros(5)
        h[j] = 1e-6
        fd = (svi_total_variance(SviParams(*(x + h)), k) - svi_total_variance(SviParams(*(x - h)), k)) / 2e-6
        np.testing.assert_allclose(_svi_dw(x, k)[:, j], fd, rtol=1e-6, atol=1e-9)


def _residuals_arrays(
    x: np.ndarray, k: np.ndarray, w: np.ndarray, weights: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fits' objective arrays as numpy computed them (``np.stack`` of the rows)."""
    a, b, rho, m, sigma = (float(e) for e in x)
    d = k - m
    r = np.sqrt(d * d + sigma * sigma)
    resid = (a + b * (rho * d + r) - w) / scale
    dw = np.stack((np.ones_like(d), rho * d + r, b * d, -b * (rho + d / r), b * sigma / r))
    return resid, dw, weights * resid


@pytest.mark.parametrize("seed", range(4))
def test_svi_weighted_residuals_equal_the_array_formulation_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for _ in range(30):
        n = int(rng.integers(1, 260))
        k = np.sort(rng.uniform(-1.0, 1.0, n))
        w = 0.04 + 0.1 * k * k + rng.normal(0.0, 0.003, n)
        weights = rng.uniform(0.0, 1.0, n)
        weights /= weights.sum()
        x = np.array(
            [rng.uniform(-0.05, 0.1), rng.uniform(0.0, 2.0), rng.uniform(-0.99, 0.99), rng.uniform(-0.5, 0.5), 0.0]
        )
        x[4] = 10.0 ** rng.uniform(-4, 0.5)
        scale = float(np.mean(w))
        for got, ref in zip(
            svi_weighted_residuals(x, k, w, weights, scale), _residuals_arrays(x, k, w, weights, scale), strict=True
        ):
            assert got.shape == ref.shape and got.tobytes() == ref.tobytes()
    # and the residuals are those of svi_total_variance
    resid = svi_weighted_residuals(x, k, w, weights, scale)[0]
    np.testing.assert_allclose(resid * scale + w, svi_total_variance(SviParams(*x), k), rtol=1e-12, atol=1e-15)
