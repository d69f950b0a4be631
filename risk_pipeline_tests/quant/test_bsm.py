"""Black-Scholes-Merton prices and Greeks against QuantLib, textbook values, parity and finite differences."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import fields

import numpy as np
import pytest
import QuantLib as ql
from numba import njit
from scipy.special import ndtr

from risk_pipeline.quant.bsm import BsmResult, bsm_greeks, bsm_price
from risk_pipeline.quant.special import fast_exp, fast_log, norm_cdf_nb

GREEKS = [f.name for f in fields(BsmResult)]
EPS = float(np.finfo(np.float64).eps)
BACKENDS = ["numba", "numpy"]


@pytest.fixture
def strict_fp() -> Iterator[None]:
    """Every floating-point exception raises and every warning is an error."""
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _random_options(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    days = rng.integers(1, 5 * 365, n)
    vol = rng.uniform(0.03, 1.2, n)
    time_years = days / 365.0
    # strikes spread over +-4 standard deviations of log-moneyness
    strike = 100.0 * np.exp(rng.uniform(-4.0, 4.0, n) * vol * np.sqrt(time_years))
    return {
        "spot": np.full(n, 100.0),
        "strike": strike,
        "days": days,
        "time_years": time_years,
        "vol": vol,
        "rate": rng.uniform(-0.02, 0.10, n),
        "dividend_yield": rng.uniform(0.0, 0.08, n),
        "is_call": rng.random(n) < 0.5,
    }


def _quantlib_european(opts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """QuantLib AnalyticEuropeanEngine, flat continuous curves, Actual365Fixed, T = days / 365 exactly."""
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    spot, r, q, v = ql.SimpleQuote(100.0), ql.SimpleQuote(0.0), ql.SimpleQuote(0.0), ql.SimpleQuote(0.2)
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(spot),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(q), dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(r), dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), ql.QuoteHandle(v), dc)),
    )
    engine = ql.AnalyticEuropeanEngine(process)
    out: dict[str, list[float]] = {k: [] for k in ("price", "delta", "gamma", "vega", "theta", "theta_per_day", "rho")}
    for i in range(len(opts["strike"])):
        spot.setValue(float(opts["spot"][i]))
        r.setValue(float(opts["rate"][i]))
        q.setValue(float(opts["dividend_yield"][i]))
        v.setValue(float(opts["vol"][i]))
        kind = ql.Option.Call if opts["is_call"][i] else ql.Option.Put
        option = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, float(opts["strike"][i])), ql.EuropeanExercise(today + int(opts["days"][i]))
        )
        option.setPricingEngine(engine)
        out["price"].append(option.NPV())
        out["delta"].append(option.delta())
        out["gamma"].append(option.gamma())
        out["vega"].append(option.vega())
        out["theta"].append(option.theta())
        out["theta_per_day"].append(option.thetaPerDay())
        out["rho"].append(option.rho())
    return {k: np.array(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def ql_case() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    opts = _random_options(3000, seed=20250115)
    return opts, _quantlib_european(opts)


def _args(opts: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return tuple(opts[k] for k in ("spot", "strike", "time_years", "vol", "rate", "dividend_yield", "is_call"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_price_and_greeks_match_quantlib(ql_case, backend: str) -> None:
    opts, ref = ql_case
    res = bsm_greeks(*_args(opts), backend=backend)
    scale = opts["spot"]
    for name in ("price", "delta", "gamma", "vega", "theta", "theta_per_day", "rho"):
        ours = getattr(res, name)
        # 1e-9 relative; values below ~1e-6 of the spot compare absolutely (QuantLib's own normal CDF
        # loses relative accuracy in the far tail)
        tol = 1e-9 * np.abs(ref[name]) + 1e-12 * scale * (1.0 if name != "gamma" else 1e-2)
        bad = np.abs(ours - ref[name]) > tol
        assert not bad.any(), (name, np.flatnonzero(bad)[:5], ours[bad][:5], ref[name][bad][:5])


def test_quantlib_tight_away_from_the_tails(ql_case) -> None:
    """Within two standard deviations of the forward the agreement is ~1e-12 relative (beyond, QuantLib's
    ``1 + erf`` normal CDF loses digits in the tail, e.g. 6e-11 relative at d2 = -4.9 and K = 5500 S)."""
    opts, ref = ql_case
    res = bsm_greeks(*_args(opts))
    sd = opts["vol"] * np.sqrt(opts["time_years"])
    near = np.abs(np.log(opts["strike"] / opts["spot"])) < 2.0 * sd
    for name in ("price", "delta", "gamma", "vega", "rho"):
        big = near & (np.abs(ref[name]) > 1e-3 * (opts["spot"] if name != "gamma" else 1e-3))
        rel = np.abs(getattr(res, name)[big] - ref[name][big]) / np.abs(ref[name][big])
        assert rel.max() < 5e-12, (name, rel.max())


def test_textbook_values() -> None:
    # Hull, Options, Futures, and Other Derivatives, Example 15.6: c = 4.76, p = 0.81
    r = bsm_greeks(42.0, 40.0, 0.5, 0.2, 0.1, 0.0, np.array([True, False]))
    np.testing.assert_allclose(r.price, [4.76, 0.81], atol=5e-3)
    # Hull, ch. 19 running example (S=49, K=50, r=5%, sigma=20%, 20 weeks): c = 2.40, delta 0.522,
    # gamma 0.066, vega 12.1, theta -4.31 per year, rho 8.91
    r = bsm_greeks(49.0, 50.0, 20 / 52, 0.2, 0.05, 0.0, True)
    hull = {
        "price": (2.40, 5e-3),
        "delta": (0.522, 5e-4),
        "gamma": (0.066, 5e-4),
        "vega": (12.1, 0.05),
        "theta": (-4.31, 5e-3),
        "rho": (8.91, 5e-3),
    }
    for name, (value, tol) in hull.items():
        assert float(getattr(r, name)) == pytest.approx(value, abs=tol), name
    # Haug, The Complete Guide to Option Pricing Formulas (2007): generalized BSM examples
    assert float(bsm_price(60.0, 65.0, 0.25, 0.3, 0.08, 0.0, True)) == pytest.approx(2.1334, abs=5e-5)
    assert float(bsm_price(100.0, 95.0, 0.5, 0.2, 0.10, 0.05, False)) == pytest.approx(2.4648, abs=5e-5)
    futures = bsm_greeks(105.0, 100.0, 0.5, 0.36, 0.10, 0.10, np.array([True, False]))  # b = 0
    np.testing.assert_allclose(futures.delta, [0.5946, -0.3566], atol=5e-5)
    assert float(bsm_greeks(55.0, 60.0, 0.75, 0.30, 0.10, 0.0, True).gamma) == pytest.approx(0.0278, abs=5e-5)
    assert float(bsm_greeks(430.0, 405.0, 0.0833, 0.2, 0.07, 0.05, False).theta) == pytest.approx(-31.1924, abs=5e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_put_call_parity(backend: str) -> None:
    opts = _random_options(20000, seed=3)
    s, k, t, v, r, q, _ = _args(opts)
    call = bsm_price(s, k, t, v, r, q, True, backend=backend)
    put = bsm_price(s, k, t, v, r, q, False, backend=backend)
    forward_pv = s * np.exp(-q * t) - k * np.exp(-r * t)
    assert np.all(np.abs(call - put - forward_pv) <= 1e-14 * np.maximum(s, k))
    gc = bsm_greeks(s, k, t, v, r, q, True, backend=backend)
    gp = bsm_greeks(s, k, t, v, r, q, False, backend=backend)
    np.testing.assert_allclose(gc.delta - gp.delta, np.exp(-q * t), atol=1e-14)
    np.testing.assert_allclose(gc.gamma, gp.gamma, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(gc.vega, gp.vega, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(gc.rho - gp.rho, k * t * np.exp(-r * t), rtol=1e-12, atol=1e-10)


def test_finite_differences_of_price() -> None:
    """Every Greek equals a central finite difference of the price (mixed ones for vanna and charm)."""
    rng = np.random.default_rng(11)
    n = 400
    t = rng.uniform(0.1, 3.0, n)
    v = rng.uniform(0.1, 0.6, n)
    s = np.full(n, 100.0)
    k = 100.0 * np.exp(rng.uniform(-1.5, 1.5, n) * v * np.sqrt(t))
    r = rng.uniform(0.0, 0.08, n)
    q = rng.uniform(0.0, 0.05, n)
    c = rng.random(n) < 0.5
    g = bsm_greeks(s, k, t, v, r, q, c)

    def p(ds: float = 0.0, dv: float = 0.0, dt: float = 0.0, dr: float = 0.0) -> np.ndarray:
        return bsm_price(s + ds, k, t + dt, v + dv, r + dr, q, c)

    hs, hv, ht, hr = 1e-2, 1e-4, 1e-5, 1e-5
    p0 = p()
    fd = {
        "delta": (p(hs) - p(-hs)) / (2 * hs),
        "gamma": (p(hs) - 2 * p0 + p(-hs)) / hs**2,
        "vega": (p(dv=hv) - p(dv=-hv)) / (2 * hv),
        "volga": (p(dv=hv) - 2 * p0 + p(dv=-hv)) / hv**2,
        "theta": -(p(dt=ht) - p(dt=-ht)) / (2 * ht),
        "rho": (p(dr=hr) - p(dr=-hr)) / (2 * hr),
        "vanna": (p(hs, hv) - p(hs, -hv) - p(-hs, hv) + p(-hs, -hv)) / (4 * hs * hv),
        "charm": -(p(hs, dt=ht) - p(hs, dt=-ht) - p(-hs, dt=ht) + p(-hs, dt=-ht)) / (4 * hs * ht),
    }
    for name, approx in fd.items():
        exact = getattr(g, name)
        np.testing.assert_allclose(exact, approx, rtol=2e-5, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(g.theta_per_day, g.theta / 365.0, rtol=1e-15)


def test_greek_units_match_conventions() -> None:
    """vega/rho per 1.00, theta per year of time passing (negative for a long ATM call, q = r = 0)."""
    g = bsm_greeks(100.0, 100.0, 1.0, 0.2, 0.0, 0.0, True)
    n0 = 1.0 / np.sqrt(2 * np.pi)
    d1 = 0.1
    assert float(g.vega) == pytest.approx(100.0 * np.exp(-0.5 * d1 * d1) * n0, rel=1e-14)
    assert float(g.theta) == pytest.approx(-0.5 * 100.0 * 0.2 * np.exp(-0.5 * d1 * d1) * n0, rel=1e-14)
    assert float(g.theta) < 0 and float(g.charm) != 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_agree(backend: str) -> None:
    opts = _random_options(5000, seed=5)
    a = bsm_greeks(*_args(opts), backend="numba")
    b = bsm_greeks(*_args(opts), backend=backend)
    for name in GREEKS:
        x, y = getattr(a, name), getattr(b, name)
        np.testing.assert_allclose(x, y, rtol=1e-11, atol=1e-13 * 100, err_msg=name)


def _edge_grid() -> tuple[np.ndarray, ...]:
    s = [100.0]
    k = [1e-6, 50.0, 100.0, 150.0, 1e8]
    t = [0.0, 1e-14, 1e-9, 1.0 / 365.0, 1.0, 30.0]
    v = [0.0, 1e-14, 1e-8, 0.2, 5.0]
    r = [0.0, 0.05, -0.01]
    q = [0.0, 0.03]
    c = [True, False]
    mesh = np.meshgrid(s, k, t, v, r, q, c, indexing="ij")
    return tuple(m.ravel() for m in mesh)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_cases_are_finite_and_silent(strict_fp, backend: str) -> None:
    s, k, t, v, r, q, c = _edge_grid()
    c = c.astype(bool)
    g = bsm_greeks(s, k, t, v, r, q, c, backend=backend)
    for name in GREEKS:
        assert np.all(np.isfinite(getattr(g, name))), name
    p = bsm_price(s, k, t, v, r, q, c, backend=backend)
    np.testing.assert_array_equal(p, g.price)
    w = np.where(c, 1.0, -1.0)
    # never below the discounted forward intrinsic, never above the no-arbitrage upper bound
    lower = np.maximum(w * (s * np.exp(-q * t) - k * np.exp(-r * t)), 0.0)
    upper = np.where(c, s * np.exp(-q * t), k * np.exp(-r * t))
    assert np.all(p >= lower - 1e-12 * np.maximum(s, k))
    assert np.all(p <= upper * (1 + 1e-12))


@pytest.mark.parametrize("backend", BACKENDS)
def test_expiry_limits(strict_fp, backend: str) -> None:
    k = np.array([90.0, 100.0, 110.0])
    call = bsm_greeks(100.0, k, 0.0, 0.25, 0.05, 0.02, True, backend=backend)
    put = bsm_greeks(100.0, k, 0.0, 0.25, 0.05, 0.02, False, backend=backend)
    np.testing.assert_array_equal(call.price, [10.0, 0.0, 0.0])
    np.testing.assert_array_equal(put.price, [0.0, 0.0, 10.0])
    np.testing.assert_array_equal(call.delta, [1.0, 0.5, 0.0])  # S == K at expiry: N(0) = 1/2
    np.testing.assert_array_equal(put.delta, [0.0, -0.5, -1.0])
    np.testing.assert_array_equal(call.gamma, 0.0)
    np.testing.assert_array_equal(call.vega, 0.0)
    # tiny time converges to the same limits
    tiny = bsm_greeks(100.0, k, 1e-12, 0.25, 0.05, 0.02, True, backend=backend)
    np.testing.assert_allclose(tiny.price, [10.0, 0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(tiny.delta, [1.0, 0.5, 0.0], atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_vol_limits(strict_fp, backend: str) -> None:
    s, t, r, q = 100.0, 2.0, 0.05, 0.02
    k = np.array([80.0, 120.0])
    fwd_pv = s * np.exp(-q * t)
    k_pv = k * np.exp(-r * t)
    call = bsm_greeks(s, k, t, 0.0, r, q, True, backend=backend)
    put = bsm_greeks(s, k, t, 0.0, r, q, False, backend=backend)
    np.testing.assert_allclose(call.price, np.maximum(fwd_pv - k_pv, 0.0), rtol=1e-15)
    np.testing.assert_allclose(put.price, np.maximum(k_pv - fwd_pv, 0.0), rtol=1e-15)
    np.testing.assert_allclose(call.delta, [np.exp(-q * t), 0.0], rtol=1e-15)
    np.testing.assert_allclose(call.rho, [k[0] * t * np.exp(-r * t), 0.0], rtol=1e-15)
    np.testing.assert_allclose(call.theta, [q * fwd_pv - r * k_pv[0], 0.0], rtol=1e-14)
    # sigma -> 0 converges to the sigma = 0 limit
    tiny = bsm_greeks(s, k, t, 1e-9, r, q, True, backend=backend)
    for name in ("price", "delta", "rho", "theta", "gamma", "vega"):
        np.testing.assert_allclose(getattr(tiny, name), getattr(call, name), rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strike_equal_to_forward(strict_fp, backend: str) -> None:
    """F == K exactly (r == q, S == K): delta -> w e^{-qT}/2, vega -> S e^{-qT} sqrt(T/(2 pi)) as sigma -> 0."""
    t, r = 1.5, 0.03
    zero = bsm_greeks(100.0, 100.0, t, 0.0, r, r, np.array([True, False]), backend=backend)
    np.testing.assert_allclose(zero.delta, [0.5 * np.exp(-r * t), -0.5 * np.exp(-r * t)], rtol=1e-15)
    np.testing.assert_allclose(zero.vega, 100.0 * np.exp(-r * t) * np.sqrt(t / (2 * np.pi)), rtol=1e-15)
    np.testing.assert_array_equal(zero.price, 0.0)
    small = bsm_greeks(100.0, 100.0, t, 1e-10, r, r, np.array([True, False]), backend=backend)
    np.testing.assert_allclose(small.delta, zero.delta, rtol=1e-9)
    np.testing.assert_allclose(small.vega, zero.vega, rtol=1e-9)
    np.testing.assert_allclose(small.vanna, zero.vanna, rtol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deep_wings_and_zero_rate(strict_fp, backend: str) -> None:
    k = np.array([1e-8, 1e-3, 1e3, 1e9])
    call = bsm_greeks(100.0, k, 0.5, 0.3, 0.0, 0.0, True, backend=backend)
    put = bsm_greeks(100.0, k, 0.5, 0.3, 0.0, 0.0, False, backend=backend)
    np.testing.assert_allclose(call.price[:2], 100.0 - k[:2], rtol=1e-15)
    np.testing.assert_allclose(call.price[2:], 0.0, atol=1e-25)  # 5.7e-27 at K = 1000
    np.testing.assert_allclose(put.price[:2], 0.0, atol=1e-25)
    np.testing.assert_allclose(put.price[2:], k[2:] - 100.0, rtol=1e-15)
    np.testing.assert_allclose(call.delta, [1.0, 1.0, 0.0, 0.0], rtol=1e-15, atol=1e-25)


@pytest.mark.parametrize("backend", BACKENDS)
def test_invalid_inputs_give_nan(backend: str) -> None:
    g = bsm_greeks(
        [np.nan, -1.0, 100.0, 100.0],
        [100.0, 100.0, 0.0, 100.0],
        1.0,
        [0.2, 0.2, 0.2, -0.1],
        0.0,
        0.0,
        True,
        backend=backend,
    )
    for name in GREEKS:
        assert np.all(np.isnan(getattr(g, name))), name


def test_broadcasting_and_out() -> None:
    k = np.array([[90.0], [100.0], [110.0]])
    t = np.array([0.25, 0.5, 1.0, 2.0])
    g = bsm_greeks(100.0, k, t, 0.2, 0.01, 0.0, True)
    assert g.price.shape == (3, 4)
    loop = np.array([[float(bsm_price(100.0, kk, tt, 0.2, 0.01, 0.0, True)) for tt in t] for kk in k[:, 0]])
    np.testing.assert_array_equal(g.price, loop)
    scalar = bsm_greeks(100.0, 100.0, 1.0, 0.2, 0.0, 0.0, True)
    assert scalar.price.shape == () and scalar.theta_per_day.shape == ()
    out = BsmResult(*(np.empty((3, 4)) for _ in GREEKS))
    same = bsm_greeks(100.0, k, t, 0.2, 0.01, 0.0, True, out=out)
    assert same is out
    for name in GREEKS:
        np.testing.assert_array_equal(getattr(out, name), getattr(g, name))
    buf = np.empty((3, 4))
    assert bsm_price(100.0, k, t, 0.2, 0.01, 0.0, True, out=buf) is buf
    np.testing.assert_array_equal(buf, g.price)
    with pytest.raises(ValueError):
        bsm_price(100.0, k, t, 0.2, 0.01, 0.0, True, out=np.empty(3))


@njit
def _apply(fn_id: int, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.size):
        out[i] = fast_exp(x[i]) if fn_id == 0 else (fast_log(x[i]) if fn_id == 1 else norm_cdf_nb(x[i]))
    return out


def test_vectorizable_exp_log_and_cdf_against_libm() -> None:
    """The kernels' branch-free exp/log (bit-assembled 2^k) and Cody normal CDF against numpy/scipy."""
    rng = np.random.default_rng(17)
    x = np.concatenate([rng.uniform(-745.0, 709.0, 200_000), rng.uniform(-1.0, 1.0, 100_000)])
    ours, ref = _apply(0, x), np.exp(x)
    normal = ref > np.finfo(float).tiny
    assert np.max(np.abs(ours[normal] - ref[normal]) / ref[normal]) < 3 * EPS
    assert np.all(np.abs(ours[~normal] - ref[~normal]) <= 4e-323)  # subnormal results: within 8 ulp of 5e-324
    np.testing.assert_array_equal(_apply(0, np.array([-800.0, 800.0, np.inf, -np.inf])), [0.0, np.inf, np.inf, 0.0])
    assert np.isnan(_apply(0, np.array([np.nan]))[0])
    y = np.concatenate(
        [np.exp(rng.uniform(-700.0, 700.0, 200_000)), 1.0 + rng.uniform(-1e-6, 1e-6, 50_000), [5e-324, 1e-310]]
    )
    ours, ref = _apply(1, y), np.log(y)
    nonzero = ref != 0.0
    assert np.max(np.abs(ours[nonzero] - ref[nonzero]) / np.abs(ref[nonzero])) < 5 * EPS
    np.testing.assert_array_equal(ours[~nonzero], 0.0)
    special = _apply(1, np.array([0.0, -1.0, np.inf, np.nan]))
    assert special[0] == -np.inf and np.isnan(special[1]) and special[2] == np.inf and np.isnan(special[3])
    z = np.linspace(-37.0, 37.0, 100_001)
    ours, ref = _apply(2, z), ndtr(z)
    assert np.max(np.abs(ours - ref) / ref) < 3e-13  # scipy's own tail error dominates (z^2 eps)
