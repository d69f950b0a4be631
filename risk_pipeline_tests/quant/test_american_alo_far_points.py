"""The boundary solve's Newton integrands evaluate the normal cdf without Cody's third region (``_ncdf_near``) and
evaluate the points beyond it again (``_is_far``): ``_ncdf_near`` against ``_ncdf_vec`` bit for bit where it is
valid, and ``boundary_kernel`` against the same kernel with every point's cdf by ``_ncdf_vec`` (the module's source
with the fix-up taken out, compiled apart), bit for bit, on low-volatility rows whose integrands reach the third
region."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from numba import njit

from risk_pipeline.quant import american_alo as am
from risk_pipeline.quant.special import exp_minus_half_square


@njit(cache=False)
def _cdfs(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    near = np.empty(z.size)
    full = np.empty(z.size)
    far = np.empty(z.size, dtype=np.bool_)
    for i in range(z.size):
        e = exp_minus_half_square(z[i])
        near[i] = am._ncdf_near(z[i], e)
        full[i] = am._ncdf_vec(z[i], e)
        far[i] = am._is_far(z[i])
    return near, full, far


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def test_near_cdf_is_the_selected_cdf_bit_for_bit_outside_the_third_region() -> None:
    rng = np.random.default_rng(11)
    edges = np.array([0.46875, 4.0]) * math.sqrt(2.0)
    near_edges = (edges[:, None] * (1.0 + np.array([-1e-15, -2.3e-16, 0.0, 2.3e-16, 1e-15]))[None, :]).ravel()
    z = np.concatenate(
        [
            rng.normal(0.0, 3.0, 20_000),
            rng.uniform(-60.0, 60.0, 5_000),
            near_edges,
            -near_edges,
            np.nextafter(near_edges, np.inf),
            np.nextafter(near_edges, -np.inf),
            [0.0, -0.0, 5e-324, -5e-324, 1e-300, 38.5, -38.5, 1e10, -1e10, np.inf, -np.inf, np.nan],
        ]
    )
    near, full, far = _cdfs(z)
    y = np.abs(z) / math.sqrt(2.0)
    with np.errstate(invalid="ignore"):
        expected_far = np.abs(z) * am._INV_SQRT2 > 4.0  # the region test of _ncdf_vec, in numpy
    assert np.array_equal(far, expected_far)
    assert far.any() and (~far).any()
    ok = ~far
    assert np.array_equal(_bits(near[ok]), _bits(full[ok]))
    assert np.isfinite(near[far & (y < np.inf)]).all()  # beyond: finite (then evaluated again by the caller)
    assert np.isnan(near[-1]) and np.isnan(full[-1])


def _reference_module() -> ModuleType:
    """``american_alo`` with every Newton integrand's cdf by ``_ncdf_vec`` and no second pass (the code before the
    fix-up), compiled without the cache under another name."""
    text = Path(am.__file__).read_text()
    for a, b in (
        ("tn[c] = wr[c] * _ncdf_near(dm, e_m)", "tn[c] = wr[c] * _ncdf_vec(dm, e_m)"),
        ("td[c] = wq[c] * _ncdf_near(dp, e_p)", "td[c] = wq[c] * _ncdf_vec(dp, e_p)"),
        ("        if far:  # the points", "        if far < 0:  # the points"),
        ("@njit(**JIT)", "@njit(**{**JIT, 'cache': False})"),
    ):
        assert a in text, a
        text = text.replace(a, b)
    name = "american_alo_full_cdf_reference"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__file__ = am.__file__
    sys.modules[name] = mod
    try:
        exec(compile(text, f"<{name}>", "exec"), mod.__dict__)
    finally:
        del sys.modules[name]
    return mod


@pytest.fixture(scope="module")
def reference() -> ModuleType:
    return _reference_module()


def _solve(mod: ModuleType, rows: dict[str, np.ndarray], tab: tuple[np.ndarray, ...], tol: float) -> list[np.ndarray]:
    n = rows["pr"].size
    x_max = mod.exercise_limits(rows["pr"], rows["pq"])
    s = np.empty((n, tab[0].shape[0]))
    steps = np.empty(n, dtype=np.intp)
    b_t = np.empty(n)
    state = np.empty((n, tab[0].shape[0] - 1 + mod._STATE_EXTRA))
    args = (rows["pr"], rows["pq"], rows["sig"], rows["t"], x_max, tol, tab, mod.QD_PLUS_START, s, steps, b_t)
    mod.boundary_kernel(*args, state, 0, n)
    return [s, steps, b_t, state]


@pytest.mark.parametrize("tol", [am.NEWTON_STEP_TOL, am.NEWTON_STEP_TOL_GREEKS], ids=["price", "greeks"])
@pytest.mark.parametrize("name", ["EXACT_TABLES", "GRID_TABLES"])
def test_boundaries_with_far_points_are_those_of_the_full_cdf_bit_for_bit(
    reference: ModuleType, name: str, tol: float
) -> None:
    rng = np.random.default_rng(3)
    n = 1_500
    rows = {
        "pr": rng.uniform(0.0, 0.15, n),
        "pq": rng.uniform(-0.05, 0.2, n),
        "sig": np.exp(rng.uniform(math.log(0.002), math.log(0.5), n)),
        "t": np.exp(rng.uniform(math.log(3 / 365), math.log(5.0), n)),
    }
    new = _solve(am, rows, getattr(am, name), tol)
    old = _solve(reference, rows, getattr(reference, name), tol)
    for a, b in zip(new, old, strict=True):
        assert np.array_equal(_bits(a) if a.dtype.kind == "f" else a, _bits(b) if b.dtype.kind == "f" else b)
    # the rows do reach the third region at their Newton iterates (here at the converged boundaries)
    z_c, fs2, pts, fmj = getattr(am, name)[0], getattr(am, name)[2], getattr(am, name)[3], getattr(am, name)[4]
    s = new[0]
    lq = fs2.size
    root = np.sqrt(np.maximum((s * s)[:, 1:] @ fmj[1:], 0.0))
    tau = np.repeat((0.5 * np.sqrt(rows["t"])[:, None] * (1.0 + z_c[None, 1:])) ** 2, lq, axis=1)
    sd = rows["sig"][:, None] * np.sqrt(tau) * pts[2][None, :]
    dp = (root - np.repeat(s[:, 1:], lq, axis=1)) / sd + (rows["pr"] - rows["pq"])[:, None] * tau * (1.0 - pts[0]) / sd
    dp += 0.5 * sd
    far = (np.abs(dp) > 4.0 * math.sqrt(2.0)) | (np.abs(dp - sd) > 4.0 * math.sqrt(2.0))
    assert 0.05 < far.any(axis=1).mean() < 0.95
