"""Bjerksund-Stensland American prices: QuantLib's engine (1993), accurate American engines (2002),
textbook values, no-arbitrage floors and finite-difference Greeks."""

from __future__ import annotations

import math
import warnings
from dataclasses import fields

import numpy as np
import pytest
import QuantLib as ql
from scipy.special import ndtr
from scipy.stats import multivariate_normal, norm

from risk_pipeline.quant.american import (
    _RHO_2002,
    _TABLES,
    american_greeks,
    american_price,
    american_price_point,
    bivariate_normal_cdf,
)
from risk_pipeline.quant.bsm import BsmResult, bsm_greeks, bsm_price

TODAY = ql.Date(15, 1, 2025)


def _random_american(n: int, seed: int, max_days: int = 2 * 365) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    days = rng.integers(7, max_days, n)
    return {
        "spot": rng.uniform(60.0, 140.0, n),
        "strike": np.full(n, 100.0),
        "days": days,
        "time_years": days / 365.0,
        "vol": rng.uniform(0.1, 0.5, n),
        "rate": rng.uniform(0.0, 0.08, n),
        "dividend_yield": rng.uniform(0.0, 0.08, n),
        "is_call": rng.random(n) < 0.5,
    }


def _args(o: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return tuple(o[k] for k in ("spot", "strike", "time_years", "vol", "rate", "dividend_yield", "is_call"))


class _QlAmerican:
    """QuantLib American pricing with flat continuous curves on Actual365Fixed (T = days / 365 exactly)."""

    def __init__(self) -> None:
        ql.Settings.instance().evaluationDate = TODAY
        dc = ql.Actual365Fixed()
        self.spot, self.r, self.q, self.v = (ql.SimpleQuote(x) for x in (100.0, 0.0, 0.0, 0.2))
        self.process = ql.BlackScholesMertonProcess(
            ql.QuoteHandle(self.spot),
            ql.YieldTermStructureHandle(ql.FlatForward(TODAY, ql.QuoteHandle(self.q), dc)),
            ql.YieldTermStructureHandle(ql.FlatForward(TODAY, ql.QuoteHandle(self.r), dc)),
            ql.BlackVolTermStructureHandle(ql.BlackConstantVol(TODAY, ql.NullCalendar(), ql.QuoteHandle(self.v), dc)),
        )

    def run(self, o: dict[str, np.ndarray], engine: ql.PricingEngine, greeks: bool = False) -> np.ndarray:
        rows = []
        for i in range(len(o["spot"])):
            self.spot.setValue(float(o["spot"][i]))
            self.r.setValue(float(o["rate"][i]))
            self.q.setValue(float(o["dividend_yield"][i]))
            self.v.setValue(float(o["vol"][i]))
            kind = ql.Option.Call if o["is_call"][i] else ql.Option.Put
            opt = ql.VanillaOption(
                ql.PlainVanillaPayoff(kind, float(o["strike"][i])),
                ql.AmericanExercise(TODAY, TODAY + int(o["days"][i])),
            )
            opt.setPricingEngine(engine)
            if greeks:
                rows.append((opt.NPV(), opt.delta(), opt.gamma(), opt.vega(), opt.rho(), opt.theta()))
            else:
                rows.append((opt.NPV(),))
        return np.array(rows)


@pytest.fixture(scope="module")
def qlam() -> _QlAmerican:
    return _QlAmerican()


def test_haug_textbook_values_bs1993() -> None:
    # Haug, "Option pricing formulas" (1998) p. 27 and its VBA code (QuantLib's test-suite values)
    assert float(american_price(42.0, 40.0, 0.75, 0.35, 0.04, 0.08, True, method="bs1993")) == pytest.approx(
        5.2704, abs=1e-4
    )
    assert float(american_price(36.0, 40.0, 1.0, 0.20, 0.06, 0.0, False, method="bs1993")) == pytest.approx(
        4.4531, abs=1e-4
    )


def test_bs1993_matches_quantlib_engine(qlam: _QlAmerican) -> None:
    o = _random_american(400, seed=1)
    ref = qlam.run(o, ql.BjerksundStenslandApproximationEngine(qlam.process), greeks=True)
    ours = american_price(*_args(o), method="bs1993")
    np.testing.assert_allclose(ours, ref[:, 0], rtol=1e-8, atol=1e-10)
    g = american_greeks(*_args(o), method="bs1993")
    # QuantLib's engine has analytic Greeks; ours are central differences (module bump sizes)
    for j, name in enumerate(("delta", "gamma", "vega", "rho", "theta"), start=1):
        np.testing.assert_allclose(getattr(g, name), ref[:, j], rtol=2e-5, atol=2e-6, err_msg=name)


def test_bs2002_against_accurate_american_engines(qlam: _QlAmerican) -> None:
    """BS2002 is a lower bound (a feasible exercise policy) and close to the true value.

    Oracles: QuantLib's QD+ fixed-point engine (high precision) and a 2001-step Leisen-Reimer tree.
    Documented tolerance for the approximation itself: within 0.5% of the strike, mean error below
    0.3% of the option value on this domain (T <= 2y, 10% <= sigma <= 50%, 0 <= r, q <= 8%).
    """
    o = _random_american(300, seed=2)
    exact = qlam.run(o, ql.QdFpAmericanEngine(qlam.process, ql.QdFpAmericanEngine.highPrecisionScheme()))[:, 0]
    sub = {k: v[:40] for k, v in o.items()}  # the tree is slow: 40 options
    tree = qlam.run(sub, ql.BinomialVanillaEngine(qlam.process, "lr", 2001))[:, 0]
    np.testing.assert_allclose(tree, exact[:40], atol=1e-2)  # the two oracles agree to 1e-4 K
    ours = american_price(*_args(o), method="bs2002")
    assert np.all(ours <= exact + 1e-8 * o["strike"])
    assert np.all(np.abs(ours[:40] - tree) <= 5e-3 * sub["strike"])
    assert np.all(np.abs(ours - exact) <= 5e-3 * o["strike"])
    priced = exact > 1e-2
    assert np.mean(np.abs(ours - exact)[priced] / exact[priced]) < 3e-3
    # the two-boundary 2002 approximation is on average closer than the 1993 one
    old = american_price(*_args(o), method="bs1993")
    assert np.mean(np.abs(ours - exact)) < np.mean(np.abs(old - exact))


def _haug_bs2002_call_scalar(s: float, k: float, t: float, r: float, b: float, v: float) -> float:
    """Straight scalar transcription of Haug (2007), BS2002 call, with scipy's bivariate normal."""

    def cbnd(a: float, bb: float, rho: float) -> float:
        return float(multivariate_normal(mean=[0.0, 0.0], cov=[[1.0, rho], [rho, 1.0]]).cdf([a, bb]))

    def phi(S: float, T: float, g: float, h: float, i: float) -> float:
        lam = (-r + g * b + 0.5 * g * (g - 1) * v**2) * T
        d = -(math.log(S / h) + (b + (g - 0.5) * v**2) * T) / (v * math.sqrt(T))
        kap = 2 * b / v**2 + 2 * g - 1
        return (
            math.exp(lam)
            * S**g
            * (norm.cdf(d) - (i / S) ** kap * norm.cdf(d - 2 * math.log(i / S) / (v * math.sqrt(T))))
        )

    def psi(S: float, T2: float, g: float, h: float, i2: float, i1: float, t1: float) -> float:
        m = b + (g - 0.5) * v**2
        e1 = (math.log(S / i1) + m * t1) / (v * math.sqrt(t1))
        e2 = (math.log(i2**2 / (S * i1)) + m * t1) / (v * math.sqrt(t1))
        e3 = (math.log(S / i1) - m * t1) / (v * math.sqrt(t1))
        e4 = (math.log(i2**2 / (S * i1)) - m * t1) / (v * math.sqrt(t1))
        f1 = (math.log(S / h) + m * T2) / (v * math.sqrt(T2))
        f2 = (math.log(i2**2 / (S * h)) + m * T2) / (v * math.sqrt(T2))
        f3 = (math.log(i1**2 / (S * h)) + m * T2) / (v * math.sqrt(T2))
        f4 = (math.log(S * i1**2 / (h * i2**2)) + m * T2) / (v * math.sqrt(T2))
        rho = math.sqrt(t1 / T2)
        lam = -r + g * b + 0.5 * g * (g - 1) * v**2
        kap = 2 * b / v**2 + 2 * g - 1
        return (
            math.exp(lam * T2)
            * S**g
            * (
                cbnd(-e1, -f1, rho)
                - (i2 / S) ** kap * cbnd(-e2, -f2, rho)
                - (i1 / S) ** kap * cbnd(-e3, -f3, -rho)
                + (i1 / i2) ** kap * cbnd(-e4, -f4, -rho)
            )
        )

    t1 = 0.5 * (math.sqrt(5) - 1) * t
    beta = (0.5 - b / v**2) + math.sqrt((b / v**2 - 0.5) ** 2 + 2 * r / v**2)
    b_inf = beta / (beta - 1) * k
    b0 = max(k, r / (r - b) * k)
    h1 = -(b * t1 + 2 * v * math.sqrt(t1)) * k**2 / ((b_inf - b0) * b0)
    h2 = -(b * t + 2 * v * math.sqrt(t)) * k**2 / ((b_inf - b0) * b0)
    i1 = b0 + (b_inf - b0) * (1 - math.exp(h1))
    i2 = b0 + (b_inf - b0) * (1 - math.exp(h2))
    a1 = (i1 - k) * i1 ** (-beta)
    a2 = (i2 - k) * i2 ** (-beta)
    if s >= i2:
        return s - k
    return (
        a2 * s**beta
        - a2 * phi(s, t1, beta, i2, i2)
        + phi(s, t1, 1, i2, i2)
        - phi(s, t1, 1, i1, i2)
        - k * phi(s, t1, 0, i2, i2)
        + k * phi(s, t1, 0, i1, i2)
        + a1 * phi(s, t1, beta, i1, i2)
        - a1 * psi(s, t, beta, i1, i2, i1, t1)
        + psi(s, t, 1, i1, i2, i1, t1)
        - psi(s, t, 1, k, i2, i1, t1)
        - k * psi(s, t, 0, i1, i2, i1, t1)
        + k * psi(s, t, 0, k, i2, i1, t1)
    )


@pytest.mark.parametrize(
    ("s", "k", "t", "r", "q", "v", "call"),
    [
        (42.0, 40.0, 0.75, 0.04, 0.08, 0.35, True),
        (100.0, 100.0, 0.5, 0.05, 0.10, 0.30, True),
        (36.0, 40.0, 1.0, 0.06, 0.0, 0.20, False),
        (90.0, 100.0, 2.0, 0.08, 0.02, 0.45, False),
    ],
)
def test_bs2002_matches_scalar_transcription(
    s: float, k: float, t: float, r: float, q: float, v: float, call: bool
) -> None:
    # put-call transformation P(S, K, r, q) = C(K, S, q, r): r' = q, b' = q - r
    expected = (
        _haug_bs2002_call_scalar(s, k, t, r, r - q, v) if call else _haug_bs2002_call_scalar(k, s, t, q, q - r, v)
    )
    assert float(american_price(s, k, t, v, r, q, call, method="bs2002")) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("method", ["alo", "bs2002", "bs1993"])
def test_never_below_european_or_intrinsic(method: str) -> None:
    rng = np.random.default_rng(4)
    n = 5000
    s = rng.uniform(20.0, 200.0, n)
    t = rng.uniform(0.0, 5.0, n)
    v = rng.uniform(0.01, 1.5, n)
    r = rng.uniform(-0.02, 0.12, n)
    q = rng.uniform(-0.01, 0.12, n)
    c = rng.random(n) < 0.5
    with np.errstate(all="ignore"):  # the numba kernel never touches numpy's FP state; inputs only
        am = american_price(s, 100.0, t, v, r, q, c, method=method)
    eu = bsm_price(s, 100.0, t, v, r, q, c)
    intrinsic = np.maximum(np.where(c, s - 100.0, 100.0 - s), 0.0)
    assert np.all(np.isfinite(am))
    assert np.all(am >= eu)
    assert np.all(am >= intrinsic)
    assert np.all(am <= np.where(c, s, 100.0) + 1e-12)


@pytest.mark.parametrize("method", ["alo", "bs2002", "bs1993"])
def test_call_without_dividend_is_european(method: str) -> None:
    rng = np.random.default_rng(6)
    n = 500
    args = (
        rng.uniform(50, 150, n),
        100.0,
        rng.uniform(0.01, 3, n),
        rng.uniform(0.05, 0.8, n),
        rng.uniform(0.0, 0.1, n),
        0.0,
        True,
    )
    np.testing.assert_array_equal(american_price(*args, method=method), bsm_price(*args))
    # and so is a put at a non-positive rate with q >= r
    put = (args[0], 100.0, args[2], args[3], -0.01, 0.02, False)
    np.testing.assert_array_equal(american_price(*put, method=method), bsm_price(*put))


def test_greeks_of_european_case_match_analytic() -> None:
    """With q = 0 the American call is European: finite-difference Greeks equal the BSM ones."""
    rng = np.random.default_rng(8)
    n = 200
    args = (
        rng.uniform(70, 130, n),
        100.0,
        rng.uniform(0.1, 2, n),
        rng.uniform(0.1, 0.5, n),
        rng.uniform(0.0, 0.08, n),
        0.0,
        True,
    )
    fd = american_greeks(*args)
    exact = bsm_greeks(*args)
    tol = {
        "delta": 1e-7,
        "gamma": 1e-6,
        "vega": 1e-6,
        "theta": 1e-6,
        "theta_per_day": 1e-6,
        "rho": 1e-5,
        "vanna": 1e-5,
        "volga": 1e-4,
        "charm": 1e-5,
    }
    np.testing.assert_array_equal(fd.price, exact.price)
    for name, rtol in tol.items():
        np.testing.assert_allclose(getattr(fd, name), getattr(exact, name), rtol=rtol, atol=rtol, err_msg=name)


def test_american_greeks_shape_and_limits() -> None:
    g = american_greeks(np.array([[90.0], [110.0]]), 100.0, np.array([0.0, 0.5, 1.0]), 0.3, 0.05, 0.03, False)
    assert isinstance(g, BsmResult)
    for f in fields(BsmResult):
        arr = getattr(g, f.name)
        assert arr.shape == (2, 3) and np.all(np.isfinite(arr)), f.name
    np.testing.assert_array_equal(g.price[:, 0], [10.0, 0.0])  # expiry: intrinsic
    np.testing.assert_allclose(g.theta_per_day, g.theta / 365.0)
    # zero volatility: deterministic limit, no warnings
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        z = american_greeks(90.0, 100.0, 1.0, 0.0, 0.05, 0.0, False)
    assert float(z.price) == pytest.approx(10.0)
    assert np.isnan(american_price(-1.0, 100.0, 1.0, 0.2, 0.0, 0.0, True))


def test_bivariate_normal_against_scipy() -> None:
    rng = np.random.default_rng(9)
    for rho in (-0.999, -0.95, -_RHO_2002, -0.5, -0.1, 0.0, 0.2, 0.5, _RHO_2002, 0.9, 0.97, 0.9999):
        for a, b in rng.normal(0.0, 2.5, (15, 2)):
            ref = multivariate_normal(mean=[0.0, 0.0], cov=[[1.0, rho], [rho, 1.0]]).cdf([a, b])
            assert bivariate_normal_cdf(a, b, rho) == pytest.approx(ref, abs=5e-15), (a, b, rho)
    assert bivariate_normal_cdf(1.0, 2.0, 1.0) == pytest.approx(norm.cdf(1.0), abs=1e-15)
    assert bivariate_normal_cdf(0.5, -0.3, -1.0) == pytest.approx(max(norm.cdf(0.5) + norm.cdf(-0.3) - 1, 0), abs=1e-15)


def _genz_bvn_numpy(a: np.ndarray, b: np.ndarray, rho: float, points: int = 24) -> np.ndarray:
    """``P(X <= a, Y <= b)`` by Genz's (2004) ``|rho| < 0.925`` integral with its own Gauss-Legendre rule."""
    x, w = np.polynomial.legendre.leggauss(points)
    asr = math.asin(rho)
    sn = np.sin(asr * (1.0 - x) * 0.5)
    h, k = -a[..., None], -b[..., None]
    terms = w * np.exp((sn * h * k - 0.5 * (h * h + k * k)) / (1.0 - sn * sn))
    return terms.sum(axis=-1) * asr / (4.0 * math.pi) + ndtr(a) * ndtr(b)


def _bs2002_numpy(
    s: np.ndarray, k: np.ndarray, t: np.ndarray, r: np.ndarray, q: np.ndarray, v: np.ndarray, call: np.ndarray
) -> np.ndarray:
    """Independent oracle: Haug (2007) BS2002 in plain numpy (24-point Genz bivariate normal, scipy ``ndtr``),
    put-call transformation, floored at BSM and intrinsic; European where BS2002 says so."""
    cs, ck, cr, cq = np.where(call, s, k), np.where(call, k, s), np.where(call, r, q), np.where(call, q, r)
    b = cr - cq
    rho = math.sqrt(0.5 * (math.sqrt(5.0) - 1.0))
    t1 = rho * rho * t
    beta = (0.5 - b / v**2) + np.sqrt((b / v**2 - 0.5) ** 2 + 2.0 * cr / v**2)
    b_inf = beta / (beta - 1.0) * ck
    b0 = np.maximum(ck, cr / (cr - b) * ck)
    i1 = b0 + (b_inf - b0) * (1.0 - np.exp(-(b * t1 + 2.0 * v * np.sqrt(t1)) * ck**2 / ((b_inf - b0) * b0)))
    i2 = b0 + (b_inf - b0) * (1.0 - np.exp(-(b * t + 2.0 * v * np.sqrt(t)) * ck**2 / ((b_inf - b0) * b0)))

    def phi(tt: np.ndarray, g: float | np.ndarray, h: np.ndarray, i: np.ndarray) -> np.ndarray:
        lam = (-cr + g * b + 0.5 * g * (g - 1.0) * v**2) * tt
        d = -(np.log(cs / h) + (b + (g - 0.5) * v**2) * tt) / (v * np.sqrt(tt))
        kap = 2.0 * b / v**2 + 2.0 * g - 1.0
        return np.exp(lam) * cs**g * (ndtr(d) - (i / cs) ** kap * ndtr(d - 2.0 * np.log(i / cs) / (v * np.sqrt(tt))))

    def psi(g: float | np.ndarray, h: np.ndarray) -> np.ndarray:
        m = b + (g - 0.5) * v**2
        e = [
            (np.log(cs / i1) + m * t1),
            (np.log(i2**2 / (cs * i1)) + m * t1),
            (np.log(cs / i1) - m * t1),
            (np.log(i2**2 / (cs * i1)) - m * t1),
        ]
        f = [np.log(cs / h), np.log(i2**2 / (cs * h)), np.log(i1**2 / (cs * h)), np.log(cs * i1**2 / (h * i2**2))]
        e = [x / (v * np.sqrt(t1)) for x in e]
        f = [(x + m * t) / (v * np.sqrt(t)) for x in f]
        kap = 2.0 * b / v**2 + 2.0 * g - 1.0
        lam = (-cr + g * b + 0.5 * g * (g - 1.0) * v**2) * t
        return (
            np.exp(lam)
            * cs**g
            * (
                _genz_bvn_numpy(-e[0], -f[0], rho)
                - (i2 / cs) ** kap * _genz_bvn_numpy(-e[1], -f[1], rho)
                - (i1 / cs) ** kap * _genz_bvn_numpy(-e[2], -f[2], -rho)
                + (i1 / i2) ** kap * _genz_bvn_numpy(-e[3], -f[3], -rho)
            )
        )

    a1 = (i1 - ck) * i1 ** (-beta)
    a2 = (i2 - ck) * i2 ** (-beta)
    with np.errstate(all="ignore"):
        formula = (
            a2 * cs**beta
            - a2 * phi(t1, beta, i2, i2)
            + phi(t1, 1.0, i2, i2)
            - phi(t1, 1.0, i1, i2)
            - ck * phi(t1, 0.0, i2, i2)
            + ck * phi(t1, 0.0, i1, i2)
            + a1 * phi(t1, beta, i1, i2)
            - a1 * psi(beta, i1)
            + psi(1.0, i1)
            - psi(1.0, ck)
            - ck * psi(0.0, i1)
            + ck * psi(0.0, ck)
        )
    formula = np.where(cs >= i2, cs - ck, formula)
    european = (i1 < ck) | (i2 < ck) | (np.log(i2 / cs) - b * t > 12.5 * v * np.sqrt(t))
    floor = np.maximum(bsm_price(s, k, t, v, r, q, call, backend="numpy"), np.maximum(np.where(call, s - k, k - s), 0))
    return np.where(european, floor, np.maximum(formula, floor))


def test_bs2002_lane_kernel_against_independent_numpy_oracle() -> None:
    """The vectorized lane kernel (14-point Genz rule at rho_2002, polynomial exp/log) against a plain numpy
    transcription (24-point rule, libm, scipy): within 1e-12 of the strike (measured 2e-15)."""
    rng = np.random.default_rng(12)
    n = 4000
    o = {
        "spot": rng.uniform(50.0, 160.0, n),
        "strike": rng.uniform(60.0, 140.0, n),
        "time_years": rng.uniform(0.02, 2.0, n),
        "vol": rng.uniform(0.1, 0.7, n),
        "rate": rng.uniform(0.0, 0.08, n),
        "dividend_yield": rng.uniform(0.001, 0.08, n),
        "is_call": rng.random(n) < 0.5,
    }
    ours = american_price(*_args(o), method="bs2002")
    oracle = _bs2002_numpy(*_args(o)[:3], o["rate"], o["dividend_yield"], o["vol"], o["is_call"])
    assert np.all(np.isfinite(oracle))
    assert np.max(np.abs(ours - oracle) / o["strike"]) < 1e-12
    # and the scalar reference transcription (20-point rule, libm exp/log) of the same formula
    ref = american_price(*_args(o), method="bs2002_reference")
    assert np.max(np.abs(ours - ref) / o["strike"]) < 1e-13


def test_bs2002_lane_kernel_over_a_wide_domain() -> None:
    """Extreme inputs (1 % vols, 5-year expiries, negative rates) against the scalar reference, with NaN where it
    is NaN; the lanes' overflow guards keep every price finite."""
    rng = np.random.default_rng(13)
    n = 20000
    args = (
        rng.uniform(20.0, 200.0, n),
        100.0,
        rng.uniform(0.0, 5.0, n),
        rng.uniform(0.01, 1.5, n),
        rng.uniform(-0.02, 0.12, n),
        rng.uniform(-0.01, 0.12, n),
        rng.random(n) < 0.5,
    )
    with np.errstate(all="ignore"):
        ours = american_price(*args, method="bs2002")
        ref = american_price(*args, method="bs2002_reference")
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, ref, rtol=0.0, atol=1e-13 * 100.0)


def test_bs2002_does_not_depend_on_batching() -> None:
    """Scalar calls, arrays, sub-arrays and the Greeks' base price agree bit for bit (the lane kernel computes
    every lane by the same operations whatever the others hold)."""
    o = _random_american(300, seed=14)
    args = _args(o)
    full = american_price(*args, method="bs2002")
    part = american_price(*(a[7:91] for a in args), method="bs2002")
    np.testing.assert_array_equal(part, full[7:91])
    scalar = np.array(
        [american_price_point(*(float(a[i]) for a in args[:6]), bool(args[6][i]), 0) for i in range(0, 300, 17)]
    )
    np.testing.assert_array_equal(scalar, full[::17])
    np.testing.assert_array_equal(american_greeks(*args, method="bs2002").price, full)


def test_bvn_rule_of_the_lane_kernel_reaches_double_precision() -> None:
    """``BVN_POINTS`` Gauss-Legendre points at rho = +-rho_2002 (the lane kernel's table) against scipy."""
    gl = _TABLES[:3]
    rng = np.random.default_rng(15)
    for rho in (_RHO_2002, -_RHO_2002):
        for a, b in rng.normal(0.0, 2.5, (40, 2)):
            hk, hs = a * b * np.sign(rho), 0.5 * (a * a + b * b)
            acc = np.sum(gl[2] * np.exp(hk * gl[0] - hs * gl[1]))
            ours = acc * math.asin(abs(rho)) * np.sign(rho) / (4.0 * math.pi) + norm.cdf(a) * norm.cdf(b)
            ref = multivariate_normal(mean=[0.0, 0.0], cov=[[1.0, rho], [rho, 1.0]]).cdf([a, b])
            assert ours == pytest.approx(ref, abs=5e-15), (a, b, rho)
