"""The compiled batched inner problem of the SVI fit (``_batched_inner``): bit for bit the numpy path
(``svi_numpy_reference.batched_inner_numpy``) on random, degenerate and padded batches; numpy's summation order
(``pairwise_sum``); and against the per-slice inner fit (``_inner_fit``, ``np.linalg.solve`` and the face
enumeration of ``_box_lsq``) and scipy's bounded least squares."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from scipy.optimize import lsq_linear

from risk_pipeline.quant._summation import pairwise_sum
from risk_pipeline.quant.svi import (
    MAX_WING_SLOPE,
    _Batch,
    _batched_inner,
    _inner_fit,
    _Slice,
)
from risk_pipeline_tests.quant.svi_numpy_reference import batched_inner_numpy


@njit(cache=False)
def _sum(a: np.ndarray) -> float:
    return pairwise_sum(a, 0, a.size)


def test_pairwise_sum_is_numpys_sum_bit_for_bit() -> None:
    rng = np.random.default_rng(4)
    for n in [*range(0, 400), 1000, 1023, 1024, 1025, 4099, 9000]:
        a = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6, n)
        assert _sum(a) == np.sum(a)


def _batch(rng: np.random.Generator, slices: int, n_max: int) -> _Batch:
    """Random slices of 5 .. n_max quotes, padded as ``fit_svi_slices`` pads them (zero weight, first quote)."""
    k = np.empty((slices, n_max))
    w = np.empty_like(k)
    wt = np.zeros_like(k)
    lo, hi = np.empty(slices), np.empty(slices)
    for s in range(slices):
        n = int(rng.integers(5, n_max + 1))
        ks = np.sort(rng.uniform(-0.6, 0.4, n))
        ws = 0.04 + 0.1 * (ks - 0.02) ** 2 + rng.normal(0.0, 0.002, n)
        ws = np.abs(ws) + 1e-4
        weights = rng.uniform(0.1, 1.0, n)
        k[s, :n], k[s, n:] = ks, ks[0]
        w[s, :n], w[s, n:] = ws, ws[0]
        wt[s, :n] = weights / weights.sum()
        lo[s], hi[s] = ks.min(), ks.max()
    return _Batch(k=k, w=w, weights=wt, scale=w.mean(axis=1), t=np.full(slices, 0.5), k_lo=lo, k_hi=hi)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize(("slices", "n_max", "candidates"), [(30, 6, 72), (25, 40, 8), (4, 300, 9), (12, 17, 1)])
def test_compiled_inner_problem_is_the_numpy_path_bit_for_bit(slices: int, n_max: int, candidates: int) -> None:
    rng = np.random.default_rng(slices * n_max)
    batch = _batch(rng, slices, n_max)
    m = rng.uniform(-0.8, 0.6, (slices, candidates))
    sigma = np.exp(rng.uniform(np.log(1e-4), np.log(2.0), (slices, candidates)))
    x, err = _batched_inner(batch, m, sigma)
    x_ref, err_ref = batched_inner_numpy(batch, m, sigma)
    assert _same_bits(x, x_ref)
    assert _same_bits(err, err_ref)


def test_degenerate_candidates_agree_bit_for_bit() -> None:
    """Tiny and huge sigma, m far outside the quotes, a flat smile (singular faces, vertices, clipping at 0)."""
    rng = np.random.default_rng(8)
    batch = _batch(rng, 6, 12)
    flat = _Batch(
        k=batch.k,
        w=np.full_like(batch.w, 0.04),
        weights=batch.weights,
        scale=np.full(6, 0.04),
        t=batch.t,
        k_lo=batch.k_lo,
        k_hi=batch.k_hi,
    )
    m = np.array([[-50.0, 0.0, 50.0, 1e-12, -0.1, 0.2]] * 6)
    sigma = np.array([[1e-12, 1e-8, 1e3, 1e8, 1e-4, 2.0]] * 6)
    for b in (batch, flat):
        x, err = _batched_inner(b, m, sigma)
        x_ref, err_ref = batched_inner_numpy(b, m, sigma)
        assert _same_bits(x, x_ref)
        assert _same_bits(err, err_ref)


def test_inner_problem_matches_the_per_slice_fit_and_scipy_bounded_least_squares() -> None:
    rng = np.random.default_rng(12)
    batch = _batch(rng, 8, 15)
    m = rng.uniform(-0.3, 0.2, (8, 3))
    sigma = rng.uniform(0.02, 0.6, (8, 3))
    x, err = _batched_inner(batch, m, sigma)
    for s in range(8):
        n = int(np.count_nonzero(batch.weights[s]))
        data = _Slice(
            k=batch.k[s, :n], w=batch.w[s, :n], weights=batch.weights[s, :n], scale=float(batch.scale[s]), t=0.5
        )
        for c in range(3):
            params, value = _inner_fit(data, float(m[s, c]), float(sigma[s, c]))
            assert err[s, c] == pytest.approx(value, rel=1e-8, abs=1e-14)
            u, v = x[s, c, 1], x[s, c, 2]
            assert 0.5 * (u + v) / sigma[s, c] == pytest.approx(params.b, rel=1e-6, abs=1e-9)
            # scipy: weighted least squares over the same box
            y = (data.k - m[s, c]) / sigma[s, c]
            z = np.sqrt(y * y + 1.0)
            root = np.sqrt(data.weights)[:, None]
            design = np.column_stack((np.ones_like(y), 0.5 * (z + y), 0.5 * (z - y))) / data.scale * root
            target = data.w / data.scale * root[:, 0]
            upper = np.array([data.w.max(), MAX_WING_SLOPE * sigma[s, c], MAX_WING_SLOPE * sigma[s, c]])
            ref = lsq_linear(design, target, bounds=(np.zeros(3), upper), method="bvls", tol=1e-14)
            assert err[s, c] == pytest.approx(float(np.sum((design @ ref.x - target) ** 2)), rel=1e-7, abs=1e-14)
