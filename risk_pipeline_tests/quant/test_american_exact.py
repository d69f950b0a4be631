"""The exact American engine (Andersen-Lake-Offengeld) against QuantLib's QD-FP high-precision engine, its
Greeks against finite differences, its implied vols, the double-boundary fallback, the synthetic quotes
and the scenario engine's early-exercise grid."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

import numpy as np
import pytest
import QuantLib as ql

from risk_pipeline.quant.american import american_greeks, american_price
from risk_pipeline.quant.american_alo import NEWTON_STEP_TOL, NEWTON_STEP_TOL_GREEKS, american_point
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.implied_vol import IvStatus, implied_vol_american
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate, option_values
from risk_pipeline.sources.synthetic import SyntheticSource

TODAY = ql.Date(15, 1, 2025)


class _Ql:
    """QuantLib American engines on flat continuous curves, Actual365Fixed (``T = days / 365`` exactly)."""

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

    def npv(
        self, s: float, k: float, days: int, vol: float, r: float, q: float, call: bool, engine: ql.PricingEngine
    ) -> float:
        self.spot.setValue(s)
        self.r.setValue(r)
        self.q.setValue(q)
        self.v.setValue(vol)
        kind = ql.Option.Call if call else ql.Option.Put
        opt = ql.VanillaOption(ql.PlainVanillaPayoff(kind, k), ql.AmericanExercise(TODAY, TODAY + days))
        opt.setPricingEngine(engine)
        return opt.NPV()


@pytest.fixture(scope="module")
def qlam() -> _Ql:
    return _Ql()


def _grid(n: int, seed: int, r_lo: float = 0.0) -> dict[str, np.ndarray]:
    """Random contracts over the issue's grid: 1 day .. 3 years, vol 5-150 %, r and q 0-10 %, S/K 0.5-2."""
    rng = np.random.default_rng(seed)
    days = rng.integers(1, 3 * 365 + 1, n)
    return {
        "spot": 100.0 * np.exp(rng.uniform(np.log(0.5), np.log(2.0), n)),
        "strike": np.full(n, 100.0),
        "days": days,
        "t": days / 365.0,
        "vol": np.exp(rng.uniform(np.log(0.05), np.log(1.5), n)),
        "rate": rng.uniform(r_lo, 0.10, n),
        "div": rng.uniform(0.0, 0.10, n),
        "call": rng.random(n) < 0.5,
    }


def _args(o: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return tuple(o[k] for k in ("spot", "strike", "t", "vol", "rate", "div", "call"))


def _score(ours: np.ndarray, ref: np.ndarray, strike: np.ndarray) -> np.ndarray:
    """Error in units of the tolerance: passes below 1 (1e-6 relative, or 1e-8 absolute per unit of strike)."""
    err = np.abs(ours - ref)
    return np.minimum(err / np.maximum(np.abs(ref), 1e-300) / 1e-6, err / (1e-8 * strike))


def test_matches_quantlib_high_precision_engine_on_a_random_grid(qlam: _Ql) -> None:
    # 600 contracts of the grid, plus 100 with negative rates (q >= 0: puts European, calls early-exercised
    # through the symmetry with a negative "dividend") -- q > r occurs throughout
    o = _grid(600, 2025)
    neg = _grid(100, 7, r_lo=-0.03)
    o = {k: np.concatenate([o[k], np.minimum(neg[k], 0.0) if k == "rate" else neg[k]]) for k in o}
    engine = ql.QdFpAmericanEngine(qlam.process, ql.QdFpAmericanEngine.highPrecisionScheme())
    ref = np.array(
        [
            qlam.npv(
                float(o["spot"][i]),
                100.0,
                int(o["days"][i]),
                float(o["vol"][i]),
                float(o["rate"][i]),
                float(o["div"][i]),
                bool(o["call"][i]),
                engine,
            )
            for i in range(o["spot"].size)
        ]
    )
    ours = american_price(*_args(o))
    score = _score(ours, ref, o["strike"])
    # QuantLib's high-precision scheme stops after 10 fixed-point iterations: on a few slowly converging
    # contracts (low vol, long-dated) it is itself off by more than the tolerance. There the same engine
    # with 20 iterations and 40 nodes decides, and such contracts must stay rare.
    off = np.flatnonzero(score > 1.0)
    assert off.size <= 0.01 * score.size, off
    converged = ql.QdFpAmericanEngine(qlam.process, ql.QdFpTanhSinhIterationScheme(20, 40, 1e-12))
    for i in off:
        ref2 = qlam.npv(
            float(o["spot"][i]),
            100.0,
            int(o["days"][i]),
            float(o["vol"][i]),
            float(o["rate"][i]),
            float(o["div"][i]),
            bool(o["call"][i]),
            converged,
        )
        assert _score(ours[i : i + 1], np.array([ref2]), o["strike"][i : i + 1])[0] <= 1.0, i
    assert np.all(ours >= bsm_price(*_args(o)) - 1e-12 * o["strike"])


def test_bs2002_error_against_the_exact_engine_is_what_the_docs_say() -> None:
    # the domain: spot 60-140, strike 100, 0.05-2 years, vol 12-60 %, r 0-6 %, q 0-5 %
    rng = np.random.default_rng(11)
    n = 4000
    o = {
        "spot": rng.uniform(60.0, 140.0, n),
        "strike": np.full(n, 100.0),
        "t": rng.uniform(0.05, 2.0, n),
        "vol": rng.uniform(0.12, 0.6, n),
        "rate": rng.uniform(0.0, 0.06, n),
        "div": rng.uniform(0.0, 0.05, n),
        "call": rng.random(n) < 0.5,
    }
    exact = american_price(*_args(o))
    bs2002 = american_price(*_args(o), method="bs2002")
    priced = exact > 0.05
    rel = np.abs(bs2002 - exact)[priced] / exact[priced]
    # measured (README, american.py): 3.0 % of the price at most (a 0.17 out-of-the-money put), 0.6 % of the strike
    assert 1e-2 < rel.max() < 0.04
    assert np.max(np.abs(bs2002 - exact)) < 0.008 * 100.0
    assert np.all(bs2002 <= exact + 1e-9 * 100.0)  # BS2002 is a lower bound (a feasible exercise policy)


def test_call_without_early_exercise_is_european_and_puts_with_negative_rates_too() -> None:
    args = (np.array([80.0, 100.0, 130.0]), 100.0, 0.7, 0.3, 0.03, 0.0, True)
    np.testing.assert_allclose(american_price(*args), bsm_price(*args), rtol=1e-14)
    put = (np.array([80.0, 100.0, 130.0]), 100.0, 0.7, 0.3, -0.01, 0.02, False)
    np.testing.assert_allclose(american_price(*put), bsm_price(*put), rtol=1e-14)


def test_double_boundary_regime_against_quantlib_finite_differences(qlam: _Ql) -> None:
    # put with q < r < 0 (and the call mirror r < q < 0): two exercise boundaries, priced by american_fd.py
    fd = ql.FdBlackScholesVanillaEngine(qlam.process, 1000, 4000, 2, ql.FdmSchemeDesc.CrankNicolson())
    cases = [
        (100.0, 365, 0.2, -0.02, -0.05, False),
        (80.0, 730, 0.3, -0.01, -0.06, False),
        (120.0, 182, 0.15, -0.005, -0.03, False),
        (100.0, 365, 0.25, -0.05, -0.02, True),
    ]
    for s, days, vol, r, q, call in cases:
        ref = qlam.npv(s, 100.0, days, vol, r, q, call, fd)
        ours = float(american_price(s, 100.0, days / 365.0, vol, r, q, call))
        assert ours == pytest.approx(ref, rel=2e-4)
        assert ours >= float(bsm_price(s, 100.0, days / 365.0, vol, r, q, call))


def test_fd_fallback_agrees_with_the_exact_engine_on_single_boundary_puts() -> None:
    from risk_pipeline.quant.american_fd import fd_american_put

    for s, r, q, vol, t in ((100.0, 0.05, 0.0, 0.2, 1.0), (120.0, 0.03, 0.01, 0.15, 0.5), (80.0, 0.08, 0.02, 0.4, 2.0)):
        fd = fd_american_put(s, 100.0, r, q, vol, t)[0]
        assert fd == pytest.approx(float(american_price(s, 100.0, t, vol, r, q, False)), rel=3e-6)


def _precise(s: float, k: float, t: float, vol: float, r: float, q: float, call: bool) -> float:
    return american_point(s, k, t, vol, r, q, call, NEWTON_STEP_TOL_GREEKS, True)[0]


def _with_time_value(
    o: dict[str, np.ndarray],
) -> Iterator[tuple[int, tuple[float, float, float, float, float, float, bool], float]]:
    """(index, (spot, strike, t, vol, rate, div, call), precise price) of the points of ``o`` with time value (the
    others' Greeks are intrinsic's, and a relative test of them is meaningless)."""
    for i in range(o["spot"].size):
        s, k, t, v, r, q = (float(o[x][i]) for x in ("spot", "strike", "t", "vol", "rate", "div"))
        c = bool(o["call"][i])
        price = _precise(s, k, t, v, r, q, c)
        if price >= 1e-6 * k and price - max(s - k if c else k - s, 0.0) >= 1e-4 * k:
            yield i, (s, k, t, v, r, q, c), price


def _central(
    x: tuple[float, float, float, float, float, float, bool], j: int, h: float, price: float, second: bool = False
) -> float:
    """Central difference of the price in argument ``j``, Richardson-extrapolated over steps h and 2h."""

    def bumped(d: float) -> float:
        y = list(x)
        y[j] += d
        return _precise(*y)

    def one(hh: float) -> float:
        if second:
            return (bumped(hh) - 2.0 * price + bumped(-hh)) / hh**2
        return (bumped(hh) - bumped(-hh)) / (2.0 * hh)

    return (4.0 * one(h) - one(2.0 * h)) / 3.0


def test_greeks_are_central_differences_of_the_price() -> None:
    o = _grid(120, 5)
    g = american_greeks(*_args(o))
    for i, x, price in _with_time_value(o):
        s, k, t, v, r, _, _ = x
        fd = {
            "delta": _central(x, 0, 1e-3 * s, price),
            "gamma": _central(x, 0, 1e-3 * s, price, second=True),
            "vega": _central(x, 3, 1e-3 * v, price),
            "theta": -_central(x, 2, 1e-3 * t, price),
            "rho": _central(x, 4, min(1e-4, 0.5 * r), price) if r > 0.0 else float(g.rho[i]),
        }
        scale = {"delta": 1.0, "gamma": 1.0 / s, "vega": s * np.sqrt(t), "theta": price / t, "rho": k * t}
        for name, ref in fd.items():
            got = float(getattr(g, name)[i])
            # 1e-6 relative, or 1e-7 of the Greek's natural scale (the finite difference's own truncation)
            assert abs(got - ref) <= 1e-6 * abs(ref) + 1e-7 * scale[name], (name, i, got, ref)


def test_implied_vol_reproduces_the_quote() -> None:
    o = _grid(4000, 21)
    price = american_price(*_args(o))
    res = implied_vol_american(price, o["spot"], o["strike"], o["t"], o["rate"], o["div"], o["call"])
    zero_vol = american_price(o["spot"], 100.0, o["t"], 0.0, o["rate"], o["div"], o["call"])
    ok = res.status == IvStatus.OK
    # every quote worth more than at zero volatility is inverted; the others say that no vol is identifiable
    timely = (price - zero_vol > 1e-8 * price) & (price > 1e-10 * 100.0)
    assert np.all(ok[timely])
    assert np.all(np.isin(res.status[~ok], [IvStatus.ZERO_PRICE, IvStatus.BELOW_INTRINSIC]))
    back = american_price(o["spot"][ok], 100.0, o["t"][ok], res.vol[ok], o["rate"][ok], o["div"][ok], o["call"][ok])
    sel = price[ok] > 1e-6 * 100.0
    assert np.max(np.abs(back - price[ok])[sel] / price[ok][sel]) < 1e-8
    # where the vol moves the price (vega over 1e-4 of the price per vol point), it is the generating vol
    vega = american_greeks(
        o["spot"][ok], 100.0, o["t"][ok], res.vol[ok], o["rate"][ok], o["div"][ok], o["call"][ok]
    ).vega
    sens = vega * 0.01 > 1e-4 * price[ok]
    assert np.max(np.abs(res.vol[ok][sens] - o["vol"][ok][sens]) / o["vol"][ok][sens]) < 1e-6


def test_synthetic_american_quotes_recover_the_generating_vol() -> None:
    src = SyntheticSource(seed=7)
    rng = np.random.default_rng(3)
    n = 400
    spot = rng.uniform(30.0, 300.0, n)
    strike = spot * np.exp(rng.uniform(-0.5, 0.5, n))
    t = rng.uniform(7.0, 365.0, n) / 365.0
    vol = rng.uniform(0.15, 0.9, n)
    r = rng.uniform(0.01, 0.06, n)
    q = rng.uniform(0.0, 0.05, n)
    call = rng.random(n) < 0.5
    mid = src._american_price(np.zeros(n), spot, strike, t, vol * vol * t, r, q, call, np.zeros(n, dtype=bool))
    res = implied_vol_american(mid, spot, strike, t, r, q, call)
    vega = american_greeks(spot, strike, t, vol, r, q, call).vega
    sens = (res.status == IvStatus.OK) & (vega * 0.01 > 1e-4 * mid)
    assert sens.mean() > 0.8
    assert np.max(np.abs(res.vol[sens] - vol[sens])) < 1e-6


def test_eep_grid_reproduces_the_exact_engine_on_var_scenarios() -> None:
    rng = np.random.default_rng(8)
    n_sym, n_opt, n_sc = 4, 40, 2000
    spot = rng.uniform(20.0, 400.0, n_sym)
    sym = rng.integers(0, n_sym, n_opt)
    book = Portfolio(
        symbols=tuple(f"S{i}" for i in range(n_sym)),
        spot=spot,
        symbol_index=sym,
        quantity=np.ones(n_opt),
        is_option=True,
        is_call=rng.random(n_opt) < 0.5,
        strike=np.round(spot[sym] * np.exp(rng.normal(0.0, 0.12, n_opt)), 1),
        time_years=rng.choice([7, 30, 91, 182, 365, 730], n_opt) / 365.0,
        implied_vol=rng.uniform(0.15, 0.6, n_opt),
        rate=0.04,
        dividend_yield=rng.uniform(0.0, 0.04, n_opt),
        is_american=True,
    )
    # one-day moves: Student-t(4) returns of 2 % daily scale and 6 % relative vol moves
    sc = ScenarioSet(
        0.02 * rng.standard_t(4, (n_sc, n_sym)) / np.sqrt(2.0),
        vol_scale=np.exp(0.06 * rng.standard_normal((n_sc, n_sym))),
    )
    worst = 0.0
    for i in range(n_opt):
        one = Portfolio(
            symbols=book.symbols,
            spot=spot,
            symbol_index=sym[i : i + 1],
            quantity=[1.0],
            is_option=True,
            is_call=book.is_call[i],
            strike=book.strike[i],
            time_years=book.time_years[i],
            implied_vol=book.implied_vol[i],
            rate=0.04,
            dividend_yield=book.dividend_yield[i],
            is_american=True,
        )
        exact = evaluate(one, sc, 1.0, american="exact").pnl
        grid = evaluate(one, sc, 1.0, american="eep_grid").pnl
        price = exact + option_values(one)[0]
        big = price > 1e-3 * book.strike[i]
        worst = max(worst, float(np.max(np.abs(grid - exact)[big] / price[big], initial=0.0)))
    assert worst < 1e-4


def test_price_only_path_gives_the_same_prices() -> None:
    # american_price skips the delta and gamma integrals (american_point(price_only=True)); the price must be the
    # one of the full path, bit for bit, in every regime the grid reaches (negative rates included)
    o = _grid(500, 31, r_lo=-0.03)
    full = np.array(
        [
            american_point(
                *(float(o[x][i]) for x in ("spot", "strike", "t", "vol", "rate", "div")),
                bool(o["call"][i]),
                NEWTON_STEP_TOL,
            )[0]
            for i in range(o["spot"].size)
        ]
    )
    np.testing.assert_array_equal(american_price(*_args(o)), full)


def test_points_sharing_rates_and_time_in_any_order_are_each_points_own_bits() -> None:
    # american_points solves the boundaries of one (rate, yield, time) side by side (their volatility-free terms
    # once a run): shuffled points of few such triples (both zeros, calls and puts, repeated rows, zero vol, the
    # Greeks with warm-started bumps) must be american_point's bits, point by point
    from risk_pipeline.quant.american_alo import american_points

    rng = np.random.default_rng(11)
    g = 40
    r = np.where(rng.random(g) < 0.2, rng.choice([0.0, -0.0], g), rng.uniform(-0.01, 0.08, g))
    q = np.where(rng.random(g) < 0.2, rng.choice([0.0, -0.0], g), rng.uniform(-0.02, 0.1, g))
    t = rng.uniform(1.0 / 365.0, 3.0, g)
    idx = rng.integers(0, g, 400)
    idx = np.concatenate([idx, idx[:50]])  # repeated rows
    n = idx.size
    sp, k = rng.uniform(60.0, 140.0, n), rng.uniform(70.0, 130.0, n)
    sig = np.where(rng.random(n) < 0.03, 0.0, rng.uniform(0.05, 0.9, n))
    call = rng.random(n) < 0.5
    cols = (sp, k, t[idx], sig, r[idx], q[idx], call)
    for tol, greeks, price_only in ((NEWTON_STEP_TOL, False, True), (NEWTON_STEP_TOL_GREEKS, True, False)):
        got = np.stack(american_points(*cols, tol, greeks, price_only))
        want = np.array(
            [american_point(*(float(c[i]) for c in cols[:6]), bool(call[i]), tol, greeks, price_only) for i in range(n)]
        ).T
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))
    # warm starts: the bumped points' boundaries from their base point's, the base points' the cold bits
    bumped = (sp, k, t[idx], sig * (1.0 + 1e-4), r[idx], q[idx], call)
    both = [np.concatenate([a, b]) for a, b in zip(cols, bumped, strict=True)]
    warm = np.stack(american_points(*both, NEWTON_STEP_TOL_GREEKS, True, warm_from=np.concatenate([np.arange(n)] * 2)))
    cold = np.stack(american_points(*both, NEWTON_STEP_TOL_GREEKS, True))
    np.testing.assert_array_equal(warm[:, :n].view(np.int64), cold[:, :n].view(np.int64))
    np.testing.assert_allclose(warm[0, n:], cold[0, n:], rtol=1e-10, atol=1e-12)


def test_prices_of_many_spots_on_one_boundary_equal_the_premium_kernel_and_quantlib(qlam: _Ql) -> None:
    """``row_premiums`` (the spots of each boundary together, as the early-exercise grid prices its nodes) gives
    ``premiums``' prices bit for bit, on both quadrature splits (spots far from and close to the boundary), in the
    exercise region and for NaN spots, with the grid's and the exact engine's tables; with the exact tables and a
    boundary converged like ``american_price``'s, the put prices match QuantLib's QD-FP high-precision engine."""
    from risk_pipeline.quant.american_alo import (
        EXACT_TABLES,
        GRID_TABLES,
        exercise_limits,
        premiums,
        row_premiums,
        solve_boundaries,
    )

    rng = np.random.default_rng(41)
    n, nu = 300, 13
    days = rng.integers(1, 3 * 365 + 1, n)
    pr, pq = rng.uniform(0.0, 0.10, n), rng.uniform(0.0, 0.10, n)
    sig, t = np.exp(rng.uniform(np.log(0.05), np.log(1.5), n)), days / 365.0
    x_max = exercise_limits(pr, pq)
    for tab in (GRID_TABLES, EXACT_TABLES):
        s, steps, b_t = solve_boundaries(pr, pq, sig, t, x_max, NEWTON_STEP_TOL, tab)
        assert np.all(steps > 0)
        # from just below the boundary (exercise) through the moved split near it to far above it
        x = b_t[:, None] * np.exp(np.linspace(-0.02, 1.2, nu))[None, :] * rng.uniform(0.99, 1.01, (n, nu))
        x[::9, 4] = np.nan
        bounds = (pr, pq, sig, t, x_max)
        got = row_premiums(x, bounds, s, tab)
        for greeks in (True, False):
            want = premiums(x.ravel(), np.repeat(np.arange(n), nu), bounds, s, tab, greeks)[0].reshape(n, nu)
            np.testing.assert_array_equal(got, want)
    engine = ql.QdFpAmericanEngine(qlam.process, ql.QdFpAmericanEngine.highPrecisionScheme())
    rows = np.arange(0, n, 15)
    cols = np.array([0, 2, 6, 12])
    ref = np.array(
        [
            qlam.npv(
                100.0 * float(x[i, j]), 100.0, int(days[i]), float(sig[i]), float(pr[i]), float(pq[i]), False, engine
            )
            for i in rows
            for j in cols
        ]
    )
    ours = 100.0 * got[rows][:, cols].ravel()
    assert np.all(_score(ours, ref, np.full(ref.size, 100.0)) < 1.0)


def test_premiums_without_greeks_grouped_by_boundary_are_each_spots_own_bits() -> None:
    """``premiums`` without Greeks prices the spots of each boundary together (any order of rows, boundaries with
    no spot, one spot and more than ``GROUP_SPOTS``): the prices of the spot-by-spot path (with Greeks) bit for
    bit, in the exercise region, on both quadrature splits and for NaN spots; delta -1 and gamma 0 in the exercise
    region (``x <= B(T)``), NaN elsewhere."""
    from risk_pipeline.quant import american_alo as alo

    rng = np.random.default_rng(43)
    nb = 60
    pr, pq = rng.uniform(0.0, 0.10, nb), rng.uniform(0.0, 0.10, nb)
    sig, t = np.exp(rng.uniform(np.log(0.05), np.log(1.5), nb)), rng.integers(1, 3 * 365 + 1, nb) / 365.0
    x_max = alo.exercise_limits(pr, pq)
    s, steps, b_t = alo.solve_boundaries(pr, pq, sig, t, x_max, NEWTON_STEP_TOL, alo.EXACT_TABLES)
    assert np.all(steps > 0)
    counts = rng.integers(0, 5, nb)
    counts[:3] = (0, 1, 2 * alo.GROUP_SPOTS + 5)
    row = rng.permutation(np.repeat(np.arange(nb), counts))
    x = b_t[row] * np.exp(rng.uniform(-0.05, 1.2, row.size))
    x[::11] = b_t[row[::11]] * np.exp(rng.uniform(0.0, 1e-3, x[::11].size))  # the moved split, close above B(T)
    x[::17] = np.nan
    bounds = (pr, pq, sig, t, x_max)
    price, delta, gamma = alo.premiums(x, row, bounds, s, alo.EXACT_TABLES, False)
    want = alo.premiums(x, row, bounds, s, alo.EXACT_TABLES, True)[0]
    np.testing.assert_array_equal(price.view(np.int64), want.view(np.int64))
    out = x <= b_t[row]
    assert out.any() and (~out).any()
    np.testing.assert_array_equal(delta, np.where(out, -1.0, np.nan))
    np.testing.assert_array_equal(gamma, np.where(out, 0.0, np.nan))


def test_grid_tables_node_prices_are_within_their_documented_error_of_the_converged_exact_engine(qlam: _Ql) -> None:
    """The early-exercise grid's node prices (``GRID_TABLES``: boundary solved to the grid's 1e-7, spots of each
    boundary by ``row_premiums``) against the exact engine on a boundary converged to rounding (``EXACT_TABLES``,
    ``NEWTON_STEP_TOL_GREEKS``), from the boundary to three standard deviations above it (the grid's ``y`` nodes):
    within 1.5e-5 K over contracts of up to 3 years, 150 % vol and 10 % rates and yields, within 3e-6 K over the books'
    range (15-60 % vol, up to 1.5 years), far below ``KINK_CHECK_TOL`` (the grid's read); the exact engine checked
    against QuantLib's QD-FP high-precision engine on some of them."""
    from risk_pipeline.quant.american_alo import (
        EXACT_TABLES,
        GRID_TABLES,
        exercise_limits,
        row_premiums,
        solve_boundaries,
    )
    from risk_pipeline.quant.scenario_engine import KINK_CHECK_TOL

    rng = np.random.default_rng(43)
    n, nu = 3000, 13
    for wide in (True, False):
        days = rng.integers(1, (3 if wide else 1.5) * 365 + 1, n)
        pr, pq = rng.uniform(0.0, 0.10 if wide else 0.06, n), rng.uniform(0.0, 0.10 if wide else 0.04, n)
        sig = np.exp(rng.uniform(np.log(0.05), np.log(1.5), n)) if wide else rng.uniform(0.15, 0.6, n)
        t = days / 365.0
        x_max = exercise_limits(pr, pq)
        bounds = (pr, pq, sig, t, x_max)
        s_ex, steps, b_t = solve_boundaries(pr, pq, sig, t, x_max, NEWTON_STEP_TOL_GREEKS, EXACT_TABLES)
        assert np.all(steps > 0)
        x = b_t[:, None] * np.exp(np.linspace(0.0, 3.0, nu)[None, :] * np.minimum(sig * np.sqrt(t), 1.0)[:, None])
        exact = row_premiums(x, bounds, s_ex, EXACT_TABLES)
        s, steps, _ = solve_boundaries(pr, pq, sig, t, x_max, 1e-7, GRID_TABLES)
        assert np.all(steps > 0)
        err = np.abs(row_premiums(x, bounds, s, GRID_TABLES) - exact)
        assert err.max() < (1.5e-5 if wide else 3e-6) < KINK_CHECK_TOL
    engine = ql.QdFpAmericanEngine(qlam.process, ql.QdFpAmericanEngine.highPrecisionScheme())
    rows, cols = np.arange(0, n, 150), np.array([1, 4, 9])
    ref = np.array(
        [
            qlam.npv(
                100.0 * float(x[i, j]), 100.0, int(days[i]), float(sig[i]), float(pr[i]), float(pq[i]), False, engine
            )
            for i in rows
            for j in cols
        ]
    )
    assert np.all(_score(100.0 * exact[rows][:, cols].ravel(), ref, np.full(ref.size, 100.0)) < 1.0)


def _delta_precise(s: float, k: float, t: float, vol: float, r: float, q: float, call: bool) -> float:
    return american_point(s, k, t, vol, r, q, call, NEWTON_STEP_TOL_GREEKS, True)[1]


def _central_of(f, x: tuple[float, float, float, float, float, float, bool], j: int, h: float) -> float:
    """Central difference of ``f`` in argument ``j``, Richardson-extrapolated over steps h and 2h."""

    def bumped(d: float) -> float:
        y = list(x)
        y[j] += d
        return f(*y)

    def one(hh: float) -> float:
        return (bumped(hh) - bumped(-hh)) / (2.0 * hh)

    return (4.0 * one(h) - one(2.0 * h)) / 3.0


def test_greeks_with_warm_bumped_boundaries_are_central_differences_of_the_price() -> None:
    """``warm_bumps``: the time-bumped repricings' boundaries solved from the base one's instead of QD+. Price,
    delta, gamma and the vol bumps' Greeks are the same bits (their boundaries are solved as before); theta and
    charm, and the others, match Richardson-extrapolated central differences of the exact engine (each bumped price
    or delta solved on its own from QD+, ``american_point``) within the bounds the default path meets (volga, a
    second difference over a 1e-4 relative vol bump, is looser)."""
    o = _grid(120, 5)
    cold = american_greeks(*_args(o), with_rho=False)
    warm = american_greeks(*_args(o), with_rho=False, warm_bumps=True)
    for name in ("price", "delta", "gamma", "vega", "volga", "vanna"):
        assert np.array_equal(getattr(warm, name), getattr(cold, name)), name
    assert not np.array_equal(warm.theta, cold.theta)  # another start: some last bits move
    assert np.all(np.isnan(warm.rho))
    checked = 0
    for i, x, price in _with_time_value(o):
        s, _, t, v, _, _, _ = x
        checked += 1
        fd = {
            "vega": _central(x, 3, 1e-3 * v, price),
            "volga": _central(x, 3, 1e-3 * v, price, second=True),
            "theta": -_central(x, 2, 1e-3 * t, price),
            "vanna": _central_of(_delta_precise, x, 3, 1e-3 * v),
            "charm": -_central_of(_delta_precise, x, 2, 1e-3 * t),
        }
        scale = {"vega": s * np.sqrt(t), "volga": s * np.sqrt(t) / v, "theta": price / t, "vanna": np.sqrt(t) / v}
        scale["charm"] = 1.0 / t
        for name, ref in fd.items():
            got = float(getattr(warm, name)[i])
            rel, absolute = (1e-5, 1e-6) if name == "volga" else (1e-6, 1e-7)
            assert abs(got - ref) <= rel * abs(ref) + absolute * scale[name], (name, i, got, ref)
    assert checked >= 60


def test_american_points_warm_starts_equal_the_cold_solves_to_rounding() -> None:
    """``american_points(warm_from=)``: points that start from themselves are the cold solve's bits; a point started
    from a nearby point's boundary (vol and time a bump away, a chain of two, a start in the zero-vol regime or in
    the European one) prices like its own cold solve to rounding."""
    from risk_pipeline.quant.american_alo import american_points

    sp = np.array([100.0, 100.0, 100.0, 100.0, 90.0, 100.0, 100.0])
    k = np.full(7, 100.0)
    t = np.array([0.5, 0.5, 0.50005, 0.50005, 1.0, 0.5, 1.0])
    sig = np.array([0.25, 0.250025, 0.25, 0.250025, 1e-12, 0.3, 0.3])
    r = np.array([0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.0])
    q = np.array([0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.02])
    call = np.array([False, False, False, False, False, False, False])
    tol = NEWTON_STEP_TOL_GREEKS
    cold = american_points(sp, k, t, sig, r, q, call, tol, True)
    own = american_points(sp, k, t, sig, r, q, call, tol, True, warm_from=np.arange(7))
    for a, b in zip(cold, own, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    # 1 and 2 from 0, 3 from 1 (a chain), 5 from the zero-vol 4, 6 (European: r = 0 <= q) from itself
    warm = american_points(sp, k, t, sig, r, q, call, tol, True, warm_from=np.array([0, 0, 0, 1, 4, 4, 6]))
    for a, b in zip(cold, warm, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-13)
    assert np.array_equal(cold[0][[0, 4, 6]], warm[0][[0, 4, 6]])


def _options(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Spot, strike, time, vol, rate, yield and call flag of ``n`` random single-boundary Americans."""
    rng = np.random.default_rng(seed)
    return (
        np.full(n, 100.0),
        rng.uniform(70.0, 130.0, n),
        rng.uniform(0.01, 3.0, n),
        rng.uniform(0.05, 1.0, n),
        rng.uniform(0.005, 0.1, n),
        rng.uniform(0.0, 0.08, n),
        rng.random(n) < 0.5,
    )


def test_greeks_boundaries_resumed_from_kept_exact_price_solves_are_the_bits_from_qd_plus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``solve_boundaries`` at ``NEWTON_STEP_TOL_GREEKS`` of inputs solved before at ``NEWTON_STEP_TOL`` resumes the
    kept Newton states: the Greeks' prices, deltas, gammas and thetas are ``american_point``'s (the scalar engine,
    from QD+) bit for bit, and every Greek of ``american_greeks`` after ``american_price`` of the same options is
    the one without kept states; a kept state whose next step is halved is solved again from QD+, the same bits."""
    from risk_pipeline.quant import american_alo as alo

    memo = alo._NewtonStateMemo(alo.NEWTON_STATE_ROWS)
    monkeypatch.setattr(alo, "_NEWTON_STATES", memo)
    sp, k, t, sig, r, q, call = _options(120, 17)
    without = american_greeks(sp, k, t, sig, r, q, call)
    assert not memo._calls  # the Greeks keep nothing
    american_price(sp, k, t, sig, r, q, call)
    assert sum(c[0].size for c in memo._calls) == sp.size
    # the Greeks' base boundaries are found (resumed), their bumped ones are not
    pr, pq = np.where(call, q, r), np.where(call, r, q)
    found, _ = memo.find(pr, pq, sig, t, alo.exercise_limits(pr, pq))
    assert found.size == sp.size
    assert memo.find(pr, pq, sig * 1.0001, t, alo.exercise_limits(pr, pq))[0].size == 0
    resumed = american_greeks(sp, k, t, sig, r, q, call)
    for f in fields(without):
        assert np.array_equal(getattr(without, f.name), getattr(resumed, f.name), equal_nan=True)
    points = alo.american_points(sp, k, t, sig, r, q, call, NEWTON_STEP_TOL_GREEKS, True)
    scalar = np.array(
        [
            american_point(*(float(x[i]) for x in (sp, k, t, sig, r, q)), bool(call[i]), NEWTON_STEP_TOL_GREEKS, True)
            for i in range(sp.size)
        ]
    ).T
    for a, b in zip(points, scalar, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    # states made to halve their next step (a kept residual norm of 0): 0 steps from the kernel, then QD+ again
    x_max = alo.exercise_limits(pr, pq)
    tol = NEWTON_STEP_TOL_GREEKS
    cold = alo.solve_boundaries(pr, pq, sig, t, x_max, tol, tuple(alo.GREEKS_TABLES))  # not the engine's: not kept
    _, state = memo.find(pr, pq, sig, t, x_max)
    state[:, alo.NODES] = 0.0
    s, steps, b_t = np.empty_like(cold[0]), np.empty(sp.size, dtype=np.intp), np.empty(sp.size)
    args = (pr, pq, sig, t, x_max, tol, alo.GREEKS_TABLES, alo.RESUME_START, s, steps, b_t, state, 0, sp.size)
    alo.boundary_kernel(*args)
    assert np.all((steps == 0) | (steps == cold[1]))
    assert np.any(steps == 0)
    for *_, kept in memo._calls:
        kept[:, alo.NODES] = 0.0
    again = alo.solve_boundaries(pr, pq, sig, t, x_max, tol, alo.GREEKS_TABLES)
    for a, b in zip(cold, again, strict=True):
        assert np.array_equal(a, b)


def test_newton_state_memo_keeps_the_latest_rows_and_finds_them_by_their_bits() -> None:
    """``_NewtonStateMemo``: at most ``rows`` kept (the oldest calls dropped first, a call larger than that not
    kept), rows found only where every input is the same bits (``0.0`` is not ``-0.0``), states of solves that
    did not stop on their test (NaN steps) not kept."""
    from risk_pipeline.quant.american_alo import NODES, _NewtonStateMemo

    memo = _NewtonStateMemo(50)
    width = NODES + 4
    a = np.arange(40, dtype=np.float64)
    b = np.arange(40, 80, dtype=np.float64)
    z = np.zeros(40)
    state_a = np.tile(a[:, None], (1, width))
    state_b = np.tile(b[:, None], (1, width))
    state_a[3, -1] = np.nan
    memo.add(a, z, z, z, z, state_a)
    found, state = memo.find(a[::-1], z, z, z, z)
    assert np.array_equal(found, np.flatnonzero(a[::-1] != 3.0))
    assert np.array_equal(state[:, 0], a[::-1][found])
    assert memo.find(a, -z, z, z, z)[0].size == 0  # -0.0 is not 0.0
    memo.add(b, z, z, z, z, state_b)  # 79 rows: the first call dropped
    both = np.concatenate([a, b])
    found, state = memo.find(both, np.zeros(80), np.zeros(80), np.zeros(80), np.zeros(80))
    assert np.array_equal(found, np.arange(40, 80))
    assert np.array_equal(state, state_b)
    memo.add(np.arange(60.0), *(np.zeros(60),) * 4, np.zeros((60, width)))  # larger than the memo: not kept
    assert np.array_equal(memo.find(np.arange(60.0), *(np.zeros(60),) * 4)[0], np.arange(40, 60))
