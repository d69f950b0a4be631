"""``calibrate_heston``'s direct calls, each against the library call it replaces, bit for bit: the least squares of
the start (``_lstsq``: numpy's ``lstsq`` gufunc, one problem or a stack), the Black price and vega (``ndtr`` and the
normal density instead of ``scipy.stats.norm``), ``_to_p``'s fast path, the final pricing (``_surface_prices``
against ``heston_price``), MINPACK called as ``leastsq`` calls it, and whole fits with every direct call against
the library paths."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from risk_pipeline.quant import heston
from risk_pipeline.quant.heston import HestonParams, calibrate_heston, heston_implied_vol, heston_price


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=np.float64).tobytes()


@pytest.mark.parametrize("m", [3, 4, 7, 12, 40])
def test_lstsq_equals_numpys_lstsq_for_one_problem_and_a_stack(m: int) -> None:
    rng = np.random.default_rng(m)
    for _ in range(20):
        k = rng.normal(0.0, 0.3, m)
        a = np.stack([np.ones_like(k), k, k * k], axis=1)
        b = rng.normal(0.3, 0.05, m)
        assert _bits(heston._lstsq(a, b)) == _bits(np.linalg.lstsq(a, b, rcond=None)[0])
        f = rng.uniform(0.0, 1.0, (7, m))
        stack = np.stack([f, 1.0 - f], axis=2)
        got = heston._lstsq(stack, b)
        for i in range(7):
            assert _bits(got[i]) == _bits(np.linalg.lstsq(stack[i], b, rcond=None)[0])
    # rank-deficient and duplicated rows: dgelsd's minimum-norm answer either way
    a = np.stack([np.ones(5), np.zeros(5), np.zeros(5)], axis=1)
    b = np.arange(5.0)
    assert _bits(heston._lstsq(a, b)) == _bits(np.linalg.lstsq(a, b, rcond=None)[0])


def test_black_undiscounted_equals_scipy_norm() -> None:
    rng = np.random.default_rng(3)
    log_k = np.concatenate([rng.normal(0.0, 0.5, 5000), [0.0, -0.0, 1e-300, -40.0, 40.0]])
    t = rng.uniform(1.0 / 365.0, 5.0, log_k.size)
    vol = rng.uniform(0.01, 3.0, log_k.size)
    call = log_k > 0.0
    price, vega = heston._black_undiscounted(log_k, t, vol, call)
    sd = vol * np.sqrt(t)
    d1 = -log_k / sd + 0.5 * sd
    d2 = d1 - sd
    ek = np.exp(log_k)
    want = np.where(call, norm.cdf(d1) - ek * norm.cdf(d2), ek * norm.cdf(-d2) - norm.cdf(-d1))
    assert _bits(price) == _bits(want)
    assert _bits(vega) == _bits(norm.pdf(d1) * np.sqrt(t))


def test_to_p_fast_path_equals_the_array_formulation() -> None:
    rng = np.random.default_rng(5)
    xs = rng.normal(0.0, 20.0, (2000, 5))
    xs[:10, :4] = [[31.0, -31.0, 30.0, -30.0]] * 10
    for x in xs:
        want = np.concatenate([np.exp(np.clip(x[:4], -30.0, 30.0)), heston.RHO_BOUND * np.tanh(x[4:5])])
        assert _bits(heston._to_p(x)) == _bits(want)
    assert _bits(heston._to_p(xs)) == _bits(np.stack([heston._to_p(x) for x in xs]))


@pytest.mark.parametrize("p", [HestonParams(0.035, 1.8, 0.06, 0.8, -0.65), HestonParams(0.09, 4.0, 0.04, 2.5, -0.4)])
def test_surface_prices_equal_heston_price(p: HestonParams) -> None:
    rng = np.random.default_rng(11)
    expiries = np.array([3.0, 10.0, 45.0, 200.0, 700.0]) / 365.0
    t = np.repeat(expiries, 15)
    lk = rng.normal(0.0, 0.3, t.size) * np.sqrt(t)
    order = rng.permutation(t.size)  # quotes not grouped by expiry
    t, lk = t[order], lk[order]
    call = (lk > 0.0).astype(np.float64)
    t_slice, slice_of = np.unique(t, return_inverse=True)
    got = heston._surface_prices(t_slice, slice_of, np.exp(lk), call, p.as_array())
    want = heston_price(1.0, np.exp(lk), t, 0.0, 0.0, call, *p.as_array())
    assert _bits(got) == _bits(want)
    with pytest.raises(ValueError, match="out of domain"):
        heston._surface_prices(t_slice, slice_of, np.exp(lk), call, np.array([0.04, 1.0, 0.04, -0.5, 0.0]))


def _heston_surface(p: HestonParams, noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    expiries = np.array([7.0, 21.0, 45.0, 91.0, 182.0, 365.0]) / 365.0
    t, x = np.meshgrid(expiries, np.linspace(-1.5, 1.0, 11), indexing="ij")
    k = x * np.sqrt(p.v0) * np.sqrt(t)
    vol = heston_implied_vol(p, t.ravel(), k.ravel())
    vol = vol + np.random.default_rng(2).normal(0.0, noise, vol.size)
    return t.ravel(), k.ravel(), vol


@pytest.mark.parametrize("noise", [0.0, 0.004])
def test_fits_with_the_direct_calls_equal_the_library_paths(monkeypatch: pytest.MonkeyPatch, noise: float) -> None:
    surface = _heston_surface(HestonParams(0.04, 2.0, 0.05, 0.9, -0.6), noise)
    fit = calibrate_heston(*surface)

    # the library paths: leastsq, numpy's lstsq, scipy.stats.norm, heston_price and a surface built afresh each round
    def black(log_k, t, vol, call):
        sd = vol * np.sqrt(t)
        d1 = -log_k / sd + 0.5 * sd
        d2 = d1 - sd
        ek = np.exp(log_k)
        price = np.where(call, norm.cdf(d1) - ek * norm.cdf(d2), ek * norm.cdf(-d2) - norm.cdf(-d1))
        return price, norm.pdf(d1) * np.sqrt(t)

    def surface_prices(t_slice, slice_of, strike, call, p):
        return heston_price(1.0, strike, t_slice[slice_of], 0.0, 0.0, call, *p)

    class FreshSurface(heston._SurfaceCos):
        def __init__(self, *args, same_quotes=None, **kwargs) -> None:
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(heston, "_LMDER", None)
    monkeypatch.setattr(heston, "_LSTSQ", None)
    monkeypatch.setattr(heston, "_black_undiscounted", black)
    monkeypatch.setattr(heston, "_surface_prices", surface_prices)
    monkeypatch.setattr(heston, "_SurfaceCos", FreshSurface)
    ref = calibrate_heston(*surface)
    assert _bits(fit.params.as_array()) == _bits(ref.params.as_array())
    assert _bits(fit.model_vol) == _bits(ref.model_vol)
    assert (fit.rmse_vol_points, fit.max_abs_error_vol_points, fit.iterations, fit.converged) == (
        ref.rmse_vol_points,
        ref.max_abs_error_vol_points,
        ref.iterations,
        ref.converged,
    )
