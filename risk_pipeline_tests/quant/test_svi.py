"""Raw SVI: calibration, Durrleman's condition, butterfly and calendar checks, surface interpolation.

Expected values come from the SVI formula itself, finite differences, or the papers' examples
(Gatheral & Jacquier 2014), never from this module's earlier output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from risk_pipeline.quant.svi import (
    METHOD_FLAT_ATM,
    METHOD_M0_FIXED_SIGMA,
    METHOD_QUASI_EXPLICIT,
    SviFit,
    SviParams,
    SviSurface,
    butterfly_check,
    butterfly_grid,
    durrleman_g,
    fit_svi_slice,
    svi_implied_vol,
    svi_total_variance,
    thin_slice_sigma,
)

#: Axel Vogt's example, Gatheral & Jacquier (2014): butterfly arbitrage at t = 1.
VOGT = SviParams(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)
#: A typical equity-index smile (negative skew), arbitrage-free.
EQUITY = SviParams(a=0.04, b=0.4, rho=-0.4, m=0.05, sigma=0.15)


def raw_svi(p: SviParams, k: np.ndarray) -> np.ndarray:
    """Gatheral (2004) raw SVI, written out independently of the module."""
    return p.a + p.b * (p.rho * (k - p.m) + np.sqrt((k - p.m) ** 2 + p.sigma**2))


def make_slice(p: SviParams, t: float) -> SviFit:
    """An SviFit with given parameters (diagnostics irrelevant for surface tests)."""
    return SviFit(
        a=p.a,
        b=p.b,
        rho=p.rho,
        m=p.m,
        sigma=p.sigma,
        time_years=t,
        rmse_vol_points=0.0,
        n_quotes=10,
        method=METHOD_QUASI_EXPLICIT,
        converged=True,
        butterfly_arbitrage_free=True,
        min_durrleman_g=0.0,
    )


def assert_raw_svi_constraints(fit: SviFit) -> None:
    assert fit.b >= 0.0
    assert abs(fit.rho) < 1.0
    assert fit.sigma > 0.0
    assert fit.a + fit.b * fit.sigma * math.sqrt(1.0 - fit.rho**2) >= -1e-12
    assert fit.b * (1.0 + abs(fit.rho)) <= 4.0 + 1e-9


# ------------------------------------------------------------------------------------------ formula


def test_total_variance_and_implied_vol_match_formula() -> None:
    k = np.linspace(-1.0, 1.0, 41)
    np.testing.assert_allclose(svi_total_variance(EQUITY, k), raw_svi(EQUITY, k), rtol=1e-15)
    np.testing.assert_allclose(svi_implied_vol(EQUITY, k, 0.5), np.sqrt(raw_svi(EQUITY, k) / 0.5), rtol=1e-15)
    # minimum of raw SVI is a + b sigma sqrt(1 - rho^2) at k = m - rho sigma / sqrt(1 - rho^2)
    k_star = EQUITY.m - EQUITY.rho * EQUITY.sigma / math.sqrt(1 - EQUITY.rho**2)
    w_min = EQUITY.a + EQUITY.b * EQUITY.sigma * math.sqrt(1 - EQUITY.rho**2)
    assert float(svi_total_variance(EQUITY, k_star)) == pytest.approx(w_min, rel=1e-12)


@pytest.mark.parametrize("params", [EQUITY, VOGT, SviParams(0.01, 0.8, 0.7, -0.2, 0.05)])
def test_durrleman_g_matches_finite_differences(params: SviParams) -> None:
    k = np.linspace(-1.2, 1.2, 49)
    h = 1e-4
    w = raw_svi(params, k)
    w1 = (raw_svi(params, k + h) - raw_svi(params, k - h)) / (2 * h)
    w2 = (raw_svi(params, k + h) - 2 * w + raw_svi(params, k - h)) / h**2
    g_fd = (1 - k * w1 / (2 * w)) ** 2 - w1**2 / 4 * (1 / w + 0.25) + w2 / 2
    np.testing.assert_allclose(durrleman_g(params, k), g_fd, rtol=1e-5, atol=1e-6)


def test_durrleman_g_of_flat_total_variance_is_one() -> None:
    flat = SviParams(a=0.09, b=0.0, rho=0.0, m=0.0, sigma=0.1)
    np.testing.assert_allclose(durrleman_g(flat, np.linspace(-2, 2, 9)), 1.0)


def test_vogt_example_has_butterfly_arbitrage() -> None:
    g_min, ok = butterfly_check(VOGT, 1.0)
    assert not ok
    assert g_min < 0.0
    grid = butterfly_grid(1.0)
    assert grid.size == 201 and grid[0] == pytest.approx(-1.5) and grid[-1] == pytest.approx(1.5)
    # independent: g from finite differences is negative somewhere on the same grid
    h = 1e-5
    w = raw_svi(VOGT, grid)
    w1 = (raw_svi(VOGT, grid + h) - raw_svi(VOGT, grid - h)) / (2 * h)
    w2 = (raw_svi(VOGT, grid + h) - 2 * w + raw_svi(VOGT, grid - h)) / h**2
    g_fd = (1 - grid * w1 / (2 * w)) ** 2 - w1**2 / 4 * (1 / w + 0.25) + w2 / 2
    assert g_min == pytest.approx(g_fd.min(), abs=1e-5)


def test_arbitrage_free_smile_passes_butterfly_check() -> None:
    g_min, ok = butterfly_check(EQUITY, 1.0)
    assert ok and g_min > 0.0


def test_negative_total_variance_gives_minus_infinity() -> None:
    negative = SviParams(a=-0.1, b=0.1, rho=0.0, m=0.0, sigma=0.1)  # w(0) = -0.09
    assert durrleman_g(negative, np.array([0.0]))[0] == -np.inf
    assert np.isnan(svi_implied_vol(negative, np.array([0.0]), 1.0)[0])
    assert butterfly_check(negative, 1.0)[1] is False


# ------------------------------------------------------------------------------------------ fitting


@pytest.mark.parametrize(
    ("params", "t"),
    [
        (EQUITY, 1.0),
        (SviParams(a=0.002, b=0.05, rho=-0.6, m=0.01, sigma=0.04), 0.08),
        (SviParams(a=-0.02, b=0.3, rho=0.2, m=0.1, sigma=0.2), 0.5),  # a < 0: outside the Zeliade box
    ],
)
def test_noiseless_slice_recovers_parameters(params: SviParams, t: float) -> None:
    k = np.linspace(-0.6, 0.5, 25) * math.sqrt(t)
    fit = fit_svi_slice(k, raw_svi(params, k), None, t)
    assert fit.method == METHOD_QUASI_EXPLICIT
    assert fit.n_quotes == 25
    assert fit.time_years == t
    assert fit.rmse_vol_points < 1e-5
    for name in ("a", "b", "rho", "m", "sigma"):
        assert getattr(fit, name) == pytest.approx(getattr(params, name), abs=1e-5), name
    assert_raw_svi_constraints(fit)


def test_noisy_slice_is_near_truth_and_at_least_as_good_as_truth() -> None:
    rng = np.random.default_rng(7)
    t = 1.0
    k = np.linspace(-0.7, 0.5, 40)
    vol = np.sqrt(raw_svi(EQUITY, k) / t) * (1 + 0.005 * rng.standard_normal(k.size))
    w = vol**2 * t
    fit = fit_svi_slice(k, w, None, t)
    # the true parameters are feasible, so the constrained optimum cannot fit worse than them
    sse_fit = np.sum((svi_total_variance(fit, k) - w) ** 2)
    sse_true = np.sum((raw_svi(EQUITY, k) - w) ** 2)
    assert sse_fit <= sse_true * (1 + 1e-9)
    assert fit.a == pytest.approx(EQUITY.a, abs=0.01)
    assert fit.b == pytest.approx(EQUITY.b, abs=0.05)
    assert fit.rho == pytest.approx(EQUITY.rho, abs=0.05)
    assert fit.m == pytest.approx(EQUITY.m, abs=0.03)
    assert fit.sigma == pytest.approx(EQUITY.sigma, abs=0.03)
    # rmse in vol points: recompute independently
    rmse = 100 * np.sqrt(np.mean((np.sqrt(svi_total_variance(fit, k) / t) - vol) ** 2))
    assert fit.rmse_vol_points == pytest.approx(rmse, rel=1e-9)
    assert 0.05 < fit.rmse_vol_points < 0.5  # noise is 0.5% of a ~20% vol, i.e. ~0.1 vol points
    assert fit.butterfly_arbitrage_free


def test_weights_zero_out_a_bad_quote() -> None:
    k = np.linspace(-0.5, 0.5, 21)
    w = raw_svi(EQUITY, k)
    w[5] *= 1.5  # a bad quote
    weights = np.ones_like(k)
    weights[5] = 0.0
    fit = fit_svi_slice(k, w, weights, 1.0)
    for name in ("a", "b", "rho", "m", "sigma"):
        assert getattr(fit, name) == pytest.approx(getattr(EQUITY, name), abs=1e-5), name
    unweighted = fit_svi_slice(k, w, None, 1.0)
    assert abs(unweighted.a - EQUITY.a) + abs(unweighted.b - EQUITY.b) > 1e-3


def test_fit_of_vogt_quotes_is_flagged() -> None:
    k = np.linspace(-1.5, 1.5, 31)
    fit = fit_svi_slice(k, raw_svi(VOGT, k), None, 1.0)
    assert fit.rmse_vol_points < 1e-3
    assert not fit.butterfly_arbitrage_free
    assert fit.min_durrleman_g < 0.0


def test_three_quotes_use_m0_fixed_sigma_shape() -> None:
    t = 0.25
    truth = SviParams(a=0.01, b=0.1, rho=-0.3, m=0.0, sigma=thin_slice_sigma(t))
    k = np.array([-0.1, 0.0, 0.08])
    fit = fit_svi_slice(k, raw_svi(truth, k), None, t)
    assert fit.method == METHOD_M0_FIXED_SIGMA
    assert fit.m == 0.0 and fit.sigma == pytest.approx(truth.sigma)
    for name in ("a", "b", "rho"):
        assert getattr(fit, name) == pytest.approx(getattr(truth, name), abs=1e-8), name
    assert_raw_svi_constraints(fit)


def test_one_or_two_quotes_give_flat_atm_total_variance() -> None:
    one = fit_svi_slice([0.02], [0.05], None, 1.0)
    assert one.method == METHOD_FLAT_ATM
    assert (one.a, one.b, one.rho, one.m) == (0.05, 0.0, 0.0, 0.0)
    two = fit_svi_slice([0.1, -0.1], [0.05, 0.07], [1.0, 2.0], 1.0)
    assert two.method == METHOD_FLAT_ATM
    assert two.a == pytest.approx(0.06)  # linear interpolation to k = 0
    np.testing.assert_allclose(svi_total_variance(two, np.linspace(-1, 1, 5)), 0.06)
    assert two.butterfly_arbitrage_free and two.min_durrleman_g == pytest.approx(1.0)
    assert two.rmse_vol_points == pytest.approx(100 * np.sqrt(np.mean((np.sqrt([0.05, 0.07]) - 0.06**0.5) ** 2)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"log_moneyness": [], "total_variance": [], "weights": None, "time_years": 1.0},
        {"log_moneyness": [0.0, 0.1], "total_variance": [0.04], "weights": None, "time_years": 1.0},
        {"log_moneyness": [0.0], "total_variance": [-0.04], "weights": None, "time_years": 1.0},
        {"log_moneyness": [0.0], "total_variance": [0.04], "weights": None, "time_years": 0.0},
        {"log_moneyness": [0.0], "total_variance": [0.04], "weights": [0.0], "time_years": 1.0},
        {"log_moneyness": [np.nan], "total_variance": [0.04], "weights": None, "time_years": 1.0},
    ],
)
def test_invalid_inputs_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        fit_svi_slice(**kwargs)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=st.floats(-0.01, 0.08),
    b=st.floats(0.02, 0.8),
    rho=st.floats(-0.9, 0.9),
    m=st.floats(-0.2, 0.2),
    sigma=st.floats(0.02, 0.5),
    noise=st.floats(0.0, 0.02),
    seed=st.integers(0, 10_000),
)
def test_fits_always_satisfy_constraints(
    a: float, b: float, rho: float, m: float, sigma: float, noise: float, seed: int
) -> None:
    p = SviParams(a, b, rho, m, sigma)
    k = np.linspace(-0.8, 0.6, 15)
    w = raw_svi(p, k)
    w = np.where(w > 1e-4, w, 1e-4) * np.exp(noise * np.random.default_rng(seed).standard_normal(k.size))
    fit = fit_svi_slice(k, w, None, 1.0)
    assert_raw_svi_constraints(fit)
    assert np.all(svi_total_variance(fit, np.linspace(-3, 3, 61)) >= -1e-12)


# ------------------------------------------------------------------------------------------ surface


def test_calendar_check_flags_crossing_pair() -> None:
    near = make_slice(SviParams(0.05, 0.05, -0.5, 0.0, 0.2), 0.25)  # ATM w = 0.06
    far = make_slice(SviParams(0.01, 0.3, -0.2, 0.0, 0.1), 1.0)  # ATM w = 0.04, much steeper wings
    grid = np.linspace(-1.0, 1.0, 101)
    excess = raw_svi(near.params, grid) - raw_svi(far.params, grid)
    assert excess.max() > 0 and excess.min() < 0  # the two slices do cross
    check = SviSurface((far, near)).calendar_check(grid)
    assert not check.arbitrage_free
    assert check.per_slice_arbitrage_free == (False, False)
    assert check.worst_violation == pytest.approx(excess.max(), rel=1e-12)
    assert check.worst_log_moneyness == pytest.approx(grid[np.argmax(excess)])
    assert check.worst_pair == (0, 1)


def test_calendar_check_passes_nested_slices_and_flags_only_the_bad_pair() -> None:
    base = SviParams(0.01, 0.1, -0.4, 0.0, 0.2)
    s1 = make_slice(base, 0.1)
    s2 = make_slice(SviParams(0.03, 0.1, -0.4, 0.0, 0.2), 0.5)
    s3 = make_slice(SviParams(0.06, 0.12, -0.4, 0.0, 0.2), 1.0)
    ok = SviSurface((s3, s1, s2)).calendar_check()
    assert ok.arbitrage_free and ok.per_slice_arbitrage_free == (True, True, True)
    assert ok.worst_violation == 0.0 and ok.worst_pair is None
    bad3 = make_slice(SviParams(0.02, 0.1, -0.4, 0.0, 0.2), 1.0)  # below s2 everywhere
    check = SviSurface((s1, s2, bad3)).calendar_check()
    assert check.per_slice_arbitrage_free == (True, False, False)
    assert check.worst_violation == pytest.approx(0.01)
    assert check.worst_pair == (1, 2)


def test_surface_sorts_and_rejects_duplicate_expiries() -> None:
    s1, s2 = make_slice(EQUITY, 1.0), make_slice(EQUITY, 0.5)
    surface = SviSurface((s1, s2))
    np.testing.assert_array_equal(surface.times, [0.5, 1.0])
    with pytest.raises(ValueError):
        SviSurface((s1, make_slice(EQUITY, 1.0)))
    with pytest.raises(ValueError):
        SviSurface(())


def _three_slice_surface() -> tuple[SviSurface, list[SviParams], list[float]]:
    params = [
        SviParams(0.005, 0.08, -0.5, 0.0, 0.1),
        SviParams(0.02, 0.12, -0.45, 0.02, 0.15),
        SviParams(0.045, 0.16, -0.4, 0.04, 0.2),
    ]
    times = [0.1, 0.5, 1.0]
    return SviSurface(tuple(make_slice(p, t) for p, t in zip(params, times, strict=True))), params, times


def test_interpolation_reproduces_slices_and_is_linear_in_total_variance() -> None:
    surface, params, times = _three_slice_surface()
    assert surface.calendar_check().arbitrage_free
    k = np.linspace(-0.8, 0.8, 33)
    for p, t in zip(params, times, strict=True):
        np.testing.assert_allclose(surface.implied_vol(t, k), np.sqrt(raw_svi(p, k) / t), rtol=1e-13)
    # midpoint between the 2nd and 3rd expiries: average of total variances
    np.testing.assert_allclose(
        surface.total_variance(0.75, k), 0.5 * (raw_svi(params[1], k) + raw_svi(params[2], k)), rtol=1e-13
    )
    # monotone in t at fixed k between and beyond the expiries
    t_dense = np.linspace(0.01, 2.0, 400)
    w = surface.total_variance(t_dense[:, None], k[None, :])
    assert w.shape == (400, 33)
    assert np.all(np.diff(w, axis=0) >= -1e-15)


def test_extrapolation_rules() -> None:
    surface, params, _ = _three_slice_surface()
    k = np.linspace(-0.5, 0.5, 11)
    # before the first expiry: w proportional to t, so implied vol equals the first slice's
    np.testing.assert_allclose(surface.total_variance(0.05, k), raw_svi(params[0], k) * 0.05 / 0.1, rtol=1e-13)
    np.testing.assert_allclose(surface.implied_vol(0.05, k), np.sqrt(raw_svi(params[0], k) / 0.1), rtol=1e-13)
    # after the last: constant implied vol
    np.testing.assert_allclose(surface.implied_vol(3.0, k), np.sqrt(raw_svi(params[2], k) / 1.0), rtol=1e-13)
    assert float(surface.total_variance(0.0, 0.1)) == 0.0
    with pytest.raises(ValueError):
        surface.implied_vol(0.0, 0.1)


def test_implied_vol_broadcasts_any_shapes() -> None:
    surface, _, _ = _three_slice_surface()
    t = np.array([[0.1], [0.3], [2.0]])
    k = np.array([-0.2, 0.0, 0.1, 0.3])
    iv = surface.implied_vol(t, k)
    assert iv.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert iv[i, j] == pytest.approx(float(surface.implied_vol(float(t[i, 0]), float(k[j]))), rel=1e-14)
    assert np.ndim(surface.implied_vol(0.3, 0.0)) == 0


def test_grid_returns_per_expiry_arrays() -> None:
    surface, params, times = _three_slice_surface()
    k = np.linspace(-0.4, 0.4, 9)
    g = surface.grid(k)
    assert g.implied_vol.shape == g.total_variance.shape == (3, 9)
    np.testing.assert_array_equal(g.time_years, times)
    np.testing.assert_array_equal(g.log_moneyness, k)
    for i, (p, t) in enumerate(zip(params, times, strict=True)):
        np.testing.assert_allclose(g.total_variance[i], raw_svi(p, k), rtol=1e-14)
        np.testing.assert_allclose(g.implied_vol[i], np.sqrt(raw_svi(p, k) / t), rtol=1e-14)


def test_fitted_slices_build_a_calendar_free_surface() -> None:
    surface_true, params, times = _three_slice_surface()
    fits = []
    for p, t in zip(params, times, strict=True):
        k = np.linspace(-0.6, 0.6, 15) * math.sqrt(t)
        fits.append(fit_svi_slice(k, raw_svi(p, k), np.ones_like(k), t))
    surface = SviSurface(tuple(fits))
    assert surface.calendar_check().arbitrage_free
    k = np.linspace(-0.3, 0.3, 7)
    np.testing.assert_allclose(surface.implied_vol(0.7, k), surface_true.implied_vol(0.7, k), rtol=1e-5)


# ------------------------------------------------------------------------------------------ batched fit


def test_batched_box_least_squares_matches_scipy_lsq_linear() -> None:
    from scipy.optimize import lsq_linear

    from risk_pipeline_tests.quant.svi_numpy_reference import batched_box_lsq

    rng = np.random.default_rng(11)
    design = rng.standard_normal((40, 12, 3))  # 40 problems, 12 rows, 3 unknowns
    target = rng.standard_normal((40, 12)) * 2.0
    hi = rng.uniform(0.1, 1.5, (40, 3))
    gram = np.einsum("pni,pnj->pij", design, design)
    rhs = np.einsum("pni,pn->pi", design, target)
    x, value = batched_box_lsq(gram, rhs, hi)
    for p in range(40):
        ref = lsq_linear(design[p], target[p], bounds=(np.zeros(3), hi[p]), tol=1e-14, method="bvls")
        np.testing.assert_allclose(x[p], ref.x, atol=1e-9)
        sse = np.sum((design[p] @ x[p] - target[p]) ** 2)
        assert value[p] + target[p] @ target[p] == pytest.approx(sse, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("params", "t"),
    [
        (EQUITY, 1.0),
        (SviParams(a=0.002, b=0.05, rho=-0.6, m=0.01, sigma=0.04), 0.08),
        (SviParams(a=-0.02, b=0.3, rho=0.2, m=0.1, sigma=0.2), 0.5),  # a < 0: the polish takes it
        (VOGT, 1.0),
    ],
)
def test_batched_fit_recovers_parameters_in_one_batch(params: SviParams, t: float) -> None:
    from risk_pipeline.quant.svi import METHOD_QUASI_EXPLICIT_BATCHED, fit_svi_slices

    k = np.linspace(-0.6, 0.5, 25) * math.sqrt(t)
    other = SviParams(a=0.01, b=0.1, rho=-0.3, m=0.0, sigma=0.1)  # a second slice in the same batch
    k2 = np.linspace(-0.3, 0.3, 9)
    fits = fit_svi_slices([k, k2], [raw_svi(params, k), raw_svi(other, k2)], [None, None], [t, 0.25])
    fit = fits[0]
    assert fit.method == METHOD_QUASI_EXPLICIT_BATCHED and fit.n_quotes == 25
    assert fit.rmse_vol_points < 1e-4
    for name in ("a", "b", "rho", "m", "sigma"):
        assert getattr(fit, name) == pytest.approx(getattr(params, name), abs=1e-4), name
    assert_raw_svi_constraints(fit)
    assert fits[1].rmse_vol_points < 1e-4


def test_batched_flags_equal_butterfly_check_and_finite_differences() -> None:
    from risk_pipeline.quant.svi import fit_svi_slices

    rng = np.random.default_rng(3)
    ks, ws, ts = [], [], []
    for p, t in ((EQUITY, 1.0), (VOGT, 1.0), (SviParams(0.001, 0.3, -0.9, 0.02, 0.01), 0.05)):
        k = np.linspace(-1.2, 1.2, 30) * math.sqrt(t)
        ks.append(k)
        ws.append(raw_svi(p, k) * (1 + 0.002 * rng.standard_normal(k.size)))
        ts.append(t)
    fits = fit_svi_slices(ks, ws, [None] * 3, ts)
    flags = []
    for fit in fits:
        g_min, ok = butterfly_check(fit, fit.time_years)
        assert fit.min_durrleman_g == pytest.approx(g_min, rel=1e-12, abs=1e-14)
        assert fit.butterfly_arbitrage_free == ok
        # independent: Durrleman g from finite differences of total variance on the same grid
        grid = butterfly_grid(fit.time_years)
        h = 1e-5
        p = SviParams(fit.a, fit.b, fit.rho, fit.m, fit.sigma)
        w = raw_svi(p, grid)
        w1 = (raw_svi(p, grid + h) - raw_svi(p, grid - h)) / (2 * h)
        w2 = (raw_svi(p, grid + h) - 2 * w + raw_svi(p, grid - h)) / h**2
        g_fd = (1 - grid * w1 / (2 * w)) ** 2 - w1**2 / 4 * (1 / w + 0.25) + w2 / 2
        assert fit.min_durrleman_g == pytest.approx(g_fd.min(), abs=1e-4)
        flags.append(fit.butterfly_arbitrage_free)
    assert flags[0] and not flags[1]  # the Vogt quotes keep their arbitrage


def test_batched_thin_slices_use_the_same_fallbacks() -> None:
    from risk_pipeline.quant.svi import fit_svi_slices

    k3 = np.array([-0.1, 0.0, 0.1])
    w3 = np.array([0.05, 0.04, 0.045])
    batched = fit_svi_slices([k3, [0.02]], [w3, [0.05]], [None, None], [0.5, 1.0])
    assert batched[0] == fit_svi_slice(k3, w3, None, 0.5)
    assert batched[1] == fit_svi_slice([0.02], [0.05], None, 1.0)
    assert batched[0].method == METHOD_M0_FIXED_SIGMA and batched[1].method == METHOD_FLAT_ATM
