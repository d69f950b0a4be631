"""The exact American engine's vectorized pieces against the formulas they replace, bit for bit: the normal cdf with
its region selected (``_ncdf_vec``) against the masked ``special.norm_cdf_from_exp`` and the branching
``_ncdf_scalar``, the elimination on padded rows (``_solve``) against the column-bounded one, and the tables' flat,
padded and transposed layouts against the interpolation matrices built as before."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from risk_pipeline.quant import american_alo as am
from risk_pipeline.quant.special import exp_minus_half_square, norm_cdf_from_exp


@njit(cache=False)
def _cdfs(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    masked = np.empty(z.size)
    selected = np.empty(z.size)
    scalar = np.empty(z.size)
    for i in range(z.size):
        e = exp_minus_half_square(z[i])
        masked[i] = norm_cdf_from_exp(z[i], e)
        selected[i] = am._ncdf_vec(z[i], e)
        scalar[i] = am._ncdf_scalar(z[i], e)
    return masked, selected, scalar


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def test_selected_cdf_is_the_masked_and_the_branching_cdf_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    edges = np.array([0.46875, 4.0, 32.0]) * math.sqrt(2.0)  # the regions' bounds in z
    near = (edges[:, None] * (1.0 + np.array([-1e-15, -2.3e-16, 0.0, 2.3e-16, 1e-15]))[None, :]).ravel()
    z = np.concatenate(
        [
            rng.normal(0.0, 3.0, 20_000),
            rng.uniform(-60.0, 60.0, 5_000),
            near,
            -near,
            np.nextafter(near, np.inf),
            [0.0, -0.0, 5e-324, -5e-324, 1e-300, 38.5, -38.5, 1e10, -1e10, 1e300, -1e300, np.inf, -np.inf],
        ]
    )
    masked, selected, scalar = _cdfs(z)
    assert np.array_equal(_bits(selected), _bits(masked))
    assert np.array_equal(_bits(selected), _bits(scalar))
    assert selected[-2] == 1.0 and selected[-1] == 0.0  # and the cdf it is: N(inf), N(-inf)
    nan = _cdfs(np.array([np.nan]))
    assert all(np.isnan(x[0]) for x in nan)


@njit(cache=False)
def _old_solve(a: np.ndarray, b: np.ndarray, n: int) -> None:
    """``american_alo._solve`` before the padded rows: the updates bounded to the columns after the pivot's."""
    for c in range(n):
        p = c
        big = abs(a[c, c])
        for i in range(c + 1, n):
            if abs(a[i, c]) > big:
                big = abs(a[i, c])
                p = i
        if p != c:
            for j in range(n):
                a[c, j], a[p, j] = a[p, j], a[c, j]
            b[c], b[p] = b[p], b[c]
        inv = 1.0 / a[c, c]
        for i in range(c + 1, n):
            f = a[i, c] * inv
            if f != 0.0:
                for j in range(c + 1, n):
                    a[i, j] -= f * a[c, j]
                b[i] -= f * b[c]
    for c in range(n - 1, -1, -1):
        acc = b[c]
        for j in range(c + 1, n):
            acc -= a[c, j] * b[j]
        b[c] = acc / a[c, c]


@njit(cache=False)
def _new_solve(a: np.ndarray, b: np.ndarray, n: int) -> None:
    am._solve(a, b, n)


@pytest.mark.parametrize("n", [1, 2, 6, 8, 9, 14, 16, 17])
def test_elimination_on_padded_rows_is_the_column_bounded_one_bit_for_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    for trial in range(40):
        a = rng.normal(0.0, 1.0, (n, n)) + (np.eye(n) * rng.uniform(0.0, 3.0) if trial % 2 else 0.0)
        if trial % 5 == 0:
            a[rng.random((n, n)) < 0.3] = 0.0  # zero multipliers (skipped rows) and pivots found by the search
            a[np.arange(n), rng.permutation(n)] += 1.0
        b = rng.normal(0.0, 1.0, n)
        a_old, b_old = a.copy(), b.copy()
        _old_solve(a_old, b_old, n)
        w = am._padded(n)
        a_new = np.zeros((n, w))
        a_new[:, :n] = a
        b_new = b.copy()
        _new_solve(a_new, b_new, n)
        assert np.array_equal(_bits(b_new), _bits(b_old)), (n, trial)
        assert np.allclose(a @ b_new, b, rtol=1e-6, atol=1e-6 * np.abs(a).sum()) or not np.isfinite(b_old).all()


@pytest.mark.parametrize("tab", [am.EXACT_TABLES, am.GRID_TABLES, am.GREEKS_TABLES], ids=["exact", "grid", "greeks"])
def test_table_layouts_are_the_interpolation_matrices_of_before(tab: tuple[np.ndarray, ...]) -> None:
    z, bw, fs2, pts, fmj, fmp, pc, _pw, pmt, lx, _lw = tab
    nodes, fp_points, price_points = z.size - 1, fs2.size, pc.size
    # the matrices as alo_tables built them before the layouts
    gx, gw = np.polynomial.legendre.leggauss(fp_points)
    phi = 0.25 * np.pi * (gx + 1.0)
    fw = gw * 0.25 * np.pi * np.sin(2.0 * phi)
    fm = np.empty((nodes, nodes + 1, fp_points))
    for i in range(1, nodes + 1):
        fm[i - 1] = am._barycentric_matrix((1.0 + z[i]) * np.sin(phi) - 1.0, z).T
    pm = am._barycentric_matrix(2.0 * np.sqrt(1.0 - pc * pc) - 1.0, z)
    assert price_points == 2 * lx.size
    assert np.array_equal(fs2, np.sin(phi) ** 2)
    for i in range(nodes):
        for k in range(fp_points):
            c = i * fp_points + k
            assert np.array_equal(fmj[:, c], fm[i, :, k])
            assert np.array_equal(fmp[i, k, :nodes], fm[i, 1:, k])
            assert pts[0, c] == fs2[k] and pts[1, c] == fw[k] and pts[2, c] == np.cos(phi)[k]
    assert fmp.shape[2] % am._PAD == 0 and not fmp[:, :, nodes:].any()
    assert np.array_equal(pmt, pm.T)
    assert np.array_equal(bw[1:-1], (-1.0) ** np.arange(1, nodes))
