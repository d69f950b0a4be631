"""Stress vol shocks by name and expiry: hand-computed cases, calibration on known answers, replay ordering."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import QuantLib as ql
from scipy import stats

from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.stress import (
    FLAT_MULTIPLIER,
    ScenarioLibrary,
    StressScenario,
    VolShock,
    load_scenarios,
    run_stress,
)
from risk_pipeline.quant.vol_shocks import (
    VolShockRule,
    clipped_vol_betas,
    expiry_factor,
    fit_term_exponent,
    fit_vol_betas,
    max_loss_weights,
    option_vol_shifts,
    residual_sd,
    window_sessions,
)

LIBRARY = Path(__file__).resolve().parents[2] / "data" / "stress" / "scenarios.yaml"
RULE = VolShockRule(term_exponent=0.5, source="test")


@pytest.fixture(scope="module")
def library() -> ScenarioLibrary:
    return load_scenarios(LIBRARY)


def _shift(vol: float, days: float, beta: float, mult: float, rule: VolShockRule = RULE, **kw: float) -> float:
    """The rule's vol change of one option on one symbol (spot unchanged unless ``log_moneyness`` given)."""
    out = option_vol_shifts(
        implied_vol=[vol],
        time_years=[days / 365.0],
        log_strike=[kw.get("log_moneyness", 0.0)],
        symbol_index=[0],
        is_option=[True],
        log_spot_new=[[0.0]],
        index_log_vol_move=[math.log(mult)],
        vol_shift=[kw.get("shift", 0.0)],
        vol_skew=[kw.get("skew", 0.0)],
        vol_betas=clipped_vol_betas([beta], 1, rule),
        idio_log_vol_move=[[kw.get("idio", 0.0)]],
        rule=rule,
    )
    return float(out[0, 0])


def test_the_issue_case_a_29pct_108_day_put_in_the_1987_replay() -> None:
    # flat rule: 0.29 x 4.13 = 1.1977 (the issue's "120 %"). Expiry rule, beta 1, alpha 0.5:
    # (30/108)^0.5 = 0.527046; ln 4.13 = 1.418277; D = 0.747498; e^D = 2.111710 -> 0.612396
    assert 0.29 + _shift(0.29, 108, 1.0, 4.13) == pytest.approx(0.612396, abs=2e-6)
    # the 30-day option moves with the index: x 4.13 exactly
    assert 0.29 + _shift(0.29, 30, 1.0, 4.13) == pytest.approx(0.29 * 4.13, rel=1e-13)


def test_vol_beta_floor_cap_default_and_expiry_floor() -> None:
    # vol beta 0.5, 365 days: (30/365)^0.5 = 0.286691; 0.5 x ln 2 x 0.286691 = 0.099359 -> x 1.104463
    assert 0.2 + _shift(0.2, 365, 0.5, 2.0) == pytest.approx(0.2 * 1.104463, rel=2e-6)
    # a beta of 3 is capped at 2, 0.1 floored at 0.25, NaN (no history) takes the default 1
    np.testing.assert_array_equal(clipped_vol_betas([3.0, 0.1, np.nan, 0.7], 4, RULE), [2.0, 0.25, 1.0, 0.7])
    assert _shift(0.2, 30, 3.0, 1.5) == pytest.approx(0.2 * (1.5**2 - 1.0), rel=1e-13)
    # 2 days to expiry is scaled like 7: (30/7)^0.5 = 2.070197; 1.0 x ln 1.3 x 2.070197 = 0.543146
    assert 0.3 + _shift(0.3, 2, 1.0, 1.3) == pytest.approx(0.3 * math.exp(0.543146), rel=2e-6)
    np.testing.assert_allclose(expiry_factor([2 / 365, 7 / 365], RULE), [(30 / 7) ** 0.5] * 2, rtol=1e-14)
    # the log move is capped at ln 5: 7-day option under x 4.13 would move e^(1.418277 x 2.070197) = x 18.9
    assert 0.2 + _shift(0.2, 7, 1.0, 4.13) == pytest.approx(0.2 * 5.0, rel=1e-13)
    assert 0.2 + _shift(0.2, 7, 1.0, 1 / 30.0) == pytest.approx(0.2 / 5.0, rel=1e-13)


def test_shift_skew_and_idiosyncratic_terms() -> None:
    # +5 vol points at 30 days become 5 x (30/120)^0.5 = 2.5 points at 120 days; skew -0.10 per unit ln(K/S')
    # scales with (30/120)^0.5 = 0.5: a 10 % OTM put (ln(K/S') = ln 0.9 = -0.105361) gains 0.10 x 0.5 x 0.105361
    got = _shift(0.25, 120, 1.0, 1.0, shift=0.05, skew=-0.10, log_moneyness=math.log(0.9))
    assert got == pytest.approx(0.025 + 0.005268, abs=1e-6)
    # idiosyncratic +0.2 log-vol on top of beta 0.5 x ln 2, 30 days: 0.2 + 0.346574 = 0.546574
    assert 0.3 + _shift(0.3, 30, 0.5, 2.0, idio=0.2) == pytest.approx(0.3 * math.exp(0.546574), rel=2e-6)
    # stocks never get a vol change
    stock = option_vol_shifts(
        implied_vol=[0.0],
        time_years=[0.0],
        log_strike=[0.0],
        symbol_index=[0],
        is_option=[False],
        log_spot_new=[[0.1]],
        index_log_vol_move=[1.0],
        vol_shift=[0.05],
        vol_skew=[-0.1],
        vol_betas=[1.0],
        idio_log_vol_move=None,
        rule=RULE,
    )
    assert stock[0, 0] == 0.0


def test_fit_term_exponent_recovers_a_known_exponent() -> None:
    rng = np.random.default_rng(11)
    n = 20_000
    x = rng.normal(0.0, 0.06, n)
    tau = rng.choice([45.0, 60.0, 91.0, 182.0, 365.0], n)
    y = (30.0 / tau) ** 0.42 * x + rng.normal(0.0, 0.01, n)
    fit = fit_term_exponent(x, y, 30.0, tau)
    assert fit.alpha == pytest.approx(0.42, abs=0.01) and fit.n_obs == n
    # shorter expiries than the reference work too (ratio above 1)
    y2 = (30.0 / 10.0) ** 0.42 * x
    assert fit_term_exponent(x, y2, 30.0, 10.0).alpha == pytest.approx(0.42, abs=1e-6)
    with pytest.raises(ValueError, match="two pairs"):
        fit_term_exponent([0.0, 0.0], [0.1, 0.2], 30.0, 60.0)


def test_fit_vol_betas_and_residuals_against_scipy() -> None:
    rng = np.random.default_rng(5)
    idx = rng.normal(0.0, 0.05, 300)
    names = np.column_stack([0.5 * idx + rng.normal(0, 0.02, 300), 1.2 * idx + rng.normal(0, 0.04, 300)])
    names[:10, 1] = np.nan
    beta, sd = fit_vol_betas(names, idx)
    for j in range(2):
        ok = np.isfinite(names[:, j])
        lr = stats.linregress(idx[ok], names[ok, j])
        resid = names[ok, j] - lr.intercept - lr.slope * idx[ok]
        assert beta[j] == pytest.approx(lr.slope, rel=1e-12)
        assert sd[j] == pytest.approx(np.std(resid, ddof=2), rel=1e-12)
    short, _ = fit_vol_betas(names[:40], idx[:40], min_obs=60)
    assert np.all(np.isnan(short))
    rs = residual_sd(names, idx, np.array([0.5, 1.2]))
    assert rs[0] == pytest.approx(np.std(names[:, 0] - 0.5 * idx, ddof=1), rel=1e-12)
    assert rs[1] == pytest.approx(np.std(names[10:, 1] - 1.2 * idx[10:], ddof=1), rel=1e-12)


def test_window_sessions_counts_weekdays() -> None:
    # Fri 16 Oct 1987 -> Mon 19 Oct: one session; 29 Aug 2008 -> 27 Oct 2008: 22 weekdays in Sep, 19 to 27 Oct
    got = window_sessions(["1987-10-16", "2008-08-29", None], ["1987-10-19", "2008-10-27", None])
    np.testing.assert_array_equal(got, [1.0, 41.0, 1.0])


# ----------------------------------------------------------------------------------------------
# run_stress under the rule: independent repricing and the ordering of the replays
# ----------------------------------------------------------------------------------------------


def _ql_european(s: float, k: float, days: int, vol: float, r: float, q: float, call: bool) -> float:
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(ql.SimpleQuote(s)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), vol, dc)),
    )
    kind = ql.Option.Call if call else ql.Option.Put
    opt = ql.VanillaOption(ql.PlainVanillaPayoff(kind, k), ql.EuropeanExercise(today + days))
    opt.setPricingEngine(ql.AnalyticEuropeanEngine(process))
    return opt.NPV()


def test_run_stress_expiry_rule_equals_quantlib_with_hand_shocked_vols() -> None:
    """Two index puts (30 and 200 days) and a name's stock and call, beta 1.5, vol beta 0.6, idiosyncratic moves."""
    p = Portfolio(
        symbols=("IDX", "ABC"),
        spot=[4000.0, 50.0],
        symbol_index=[0, 0, 1, 1],
        quantity=[2.0, 3.0, 1000.0, -10.0],
        multiplier=[100.0, 100.0, 1.0, 100.0],
        is_option=[True, True, False, True],
        is_call=[False, False, True, True],
        strike=[3800.0, 3600.0, 1.0, 55.0],
        time_years=[30 / 365, 200 / 365, 0.0, 91 / 365],
        implied_vol=[0.2, 0.19, 0.0, 0.35],
        rate=0.04,
        dividend_yield=0.01,
    )
    rule = replace(RULE, idiosyncratic_sigmas=2.0)
    sc = StressScenario("x", "historical", "x", index_move=-0.1, vol=VolShock(2.0, 0.0, -0.05))
    (res,) = run_stress(
        p, [sc], betas=[1.0, 1.5], nav=1e6, vol_rule=rule, vol_betas=[1.0, 0.6], idio_spot_sd=[0.0, 0.02],
        idio_vol_sd=[0.0, 0.05],
    )  # fmt: skip
    lx = math.log(2.0)
    s_idx = 4000.0 * 0.9
    # index: no idiosyncratic move; vols x 2^(30/tau)^0.5, skew -0.05 (30/tau)^0.5 ln(K/S')
    v1 = 0.2 * math.exp(lx) - 0.05 * math.log(3800.0 / s_idx)
    f2 = (30 / 200) ** 0.5
    v2 = 0.19 * math.exp(lx * f2) - 0.05 * f2 * math.log(3600.0 / s_idx)
    pnl_idx = 200.0 * (_ql_european(s_idx, 3800.0, 30, v1, 0.04, 0.01, False) - _ql_european(
        4000.0, 3800.0, 30, 0.2, 0.04, 0.01, False
    )) + 300.0 * (_ql_european(s_idx, 3600.0, 200, v2, 0.04, 0.01, False) - _ql_european(
        4000.0, 3600.0, 200, 0.19, 0.04, 0.01, False
    ))  # fmt: skip
    # the name: spot log move 1.5 ln 0.9 +- 2 x 0.02, 91-day vol log move (0.6 ln 2 +- 2 x 0.05)(30/91)^0.5;
    # the worst of the four sign combinations for 1000 shares long and 10 calls short
    f3 = (30 / 91) ** 0.5
    base = 1000.0 * 50.0 - 1000.0 * _ql_european(50.0, 55.0, 91, 0.35, 0.04, 0.01, True)
    worst = math.inf
    for a in (1.0, -1.0):
        for b in (1.0, -1.0):
            s1 = 50.0 * math.exp(1.5 * math.log(0.9) + a * 0.04)
            v3 = 0.35 * math.exp((0.6 * lx + b * 0.1) * f3) - 0.05 * f3 * math.log(55.0 / s1)
            worst = min(worst, 1000.0 * s1 - 1000.0 * _ql_european(s1, 55.0, 91, v3, 0.04, 0.01, True) - base)
    assert res.market_pnl == pytest.approx(pnl_idx + worst, rel=1e-9)
    assert res.vol_rule.startswith("expiry_name_skew") and "^0.500" in res.vol_rule


def _long_equity_book() -> tuple[Portfolio, np.ndarray, np.ndarray]:
    """A long-equity book as core_equity: long stocks, a protective put, a covered call and index puts."""
    spot = np.array([4000.0, 100.0, 60.0, 150.0, 40.0])
    shares = np.array([3000.0, 5000.0, 2000.0, 6000.0])
    beta = np.array([1.0, 1.1, 0.9, 1.3, 0.8])
    dollars = float(np.sum(shares * spot[1:] * beta[1:]))
    n_index = round(0.4 * dollars / (4000.0 * 100.0))  # index puts on 40 % of the beta dollars
    p = Portfolio(
        symbols=("IDX", "AAA", "BBB", "CCC", "DDD"),
        spot=spot,
        symbol_index=[1, 2, 3, 4, 1, 3, 0],
        quantity=[*shares, 30.0, -20.0, float(n_index)],
        multiplier=[1.0, 1.0, 1.0, 1.0, 100.0, 100.0, 100.0],
        is_option=[False] * 4 + [True] * 3,
        is_call=[True] * 4 + [False, True, False],
        strike=[1.0] * 4 + [92.0, 160.0, 3600.0],
        time_years=np.array([0.0] * 4 + [50.0, 25.0, 108.0]) / 365.0,
        implied_vol=[0.0] * 4 + [0.29, 0.27, 0.19],
        rate=0.04,
        dividend_yield=0.01,
    )
    return p, beta, np.array([1.0, 0.5, 0.45, 0.55, 0.4])


SINGLE_DAY = ("black_monday_1987", "covid_mar_2020", "flash_crash_2010", "volmageddon_2018", "china_deval_aug_2015")


def test_single_day_replays_rank_as_their_published_index_moves(library: ScenarioLibrary) -> None:
    p, beta, vol_beta = _long_equity_book()
    scen = [library.get(s) for s in SINGLE_DAY]
    assert all(window_sessions([s.window_start], [s.window_end])[0] == 1.0 for s in scen)
    res = run_stress(
        p, scen, betas=beta, nav=2e6, vol_rule=library.vol_rule, vol_betas=vol_beta,
        idio_spot_sd=[0.0, 0.018, 0.015, 0.022, 0.012], idio_vol_sd=[0.0, 0.05, 0.04, 0.06, 0.05],
    )  # fmt: skip
    by_pnl = [r.scenario_id for r in sorted(res, key=lambda r: r.pnl)]
    assert by_pnl[0] == "black_monday_1987"
    # every pair of replays whose index moves differ by more than a point ranks as the moves do (2015 and
    # 2018 are 0.16 points apart, -3.94 % and -4.10 %, and the 2018 VIX doubled: its puts gain more)
    pnl = {r.scenario_id: r.pnl for r in res}
    move = {s.scenario_id: s.index_move for s in scen}
    pairs = [(a, b) for a in SINGLE_DAY for b in SINGLE_DAY if move[a] < move[b] - 0.01]
    assert len(pairs) == 9
    assert all(pnl[a] < pnl[b] for a, b in pairs), pnl
    # the legacy flat multiplier prices the 108-day index puts at 4.13 x their vol: a milder 1987
    flat = {r.scenario_id: r.pnl for r in run_stress(p, scen, betas=beta, nav=2e6, vol_rule=FLAT_MULTIPLIER)}
    plain = run_stress(p, scen[:1], betas=beta, nav=2e6, vol_rule=library.vol_rule, vol_betas=vol_beta)
    assert flat["black_monday_1987"] > plain[0].pnl > pnl["black_monday_1987"]


def test_library_rule_and_its_validation(library: ScenarioLibrary) -> None:
    rule = library.vol_rule
    assert rule.kind == "expiry_name_skew" and rule.reference_tenor_days == 30.0 and rule.min_tenor_days == 7.0
    assert rule.term_exponent_floor <= rule.term_exponent <= rule.term_exponent_cap
    assert rule.log_move_cap == pytest.approx(math.log(5.0), abs=1e-4)
    assert library.get("black_monday_1987").idiosyncratic_sigmas == 2.33
    assert library.get("rates_up_100bp").idiosyncratic_sigmas is None
    base = {
        "version": "t",
        "vol_rule": {"kind": "expiry_name_skew"},
        "scenarios": [{"id": "a", "type": "hypothetical", "description": "a", "vol": {"multiplier": 0.0}}],
    }
    with pytest.raises(ValueError, match="multiplier must be positive"):
        load_scenarios(base)
    with pytest.raises(ValueError, match="unknown key 'term_exponant'"):
        load_scenarios({**base, "vol_rule": {"term_exponant": 0.4}})
    with pytest.raises(ValueError, match="vol_rule: vol rule: need term_exponent_floor"):
        load_scenarios({**base, "vol_rule": {"term_exponent": 0.1}})
    assert load_scenarios({**base, "vol_rule": None}).vol_rule == FLAT_MULTIPLIER


def test_library_exponent_is_reproduced_on_the_synthetic_generators_surface(library: ScenarioLibrary) -> None:
    """The library's default alpha: the fit on the generator's surface the library names (8 names, 3 years)."""
    import datetime as dt

    from risk_pipeline.sources.synthetic import INDEX_SYMBOL, SyntheticSource

    tenors = (7, 14, 30, 60, 91, 182, 365)
    assert "seed 7, 8 names + index) 2023-12-04..2026-12-03" in library.vol_rule.source
    h = SyntheticSource(seed=7, n_underlyings=8).implied_vol_history(dt.date(2023, 12, 4), dt.date(2026, 12, 3), tenors)
    d = np.log(h.pivot_table(index="as_of_date", columns=["tenor_days", "symbol"], values="atm_vol")).diff().iloc[1:]
    v30 = d[30]
    beta, _ = fit_vol_betas(v30.to_numpy(), v30[INDEX_SYMBOL].to_numpy())
    systematic = np.outer(v30[INDEX_SYMBOL].to_numpy(), beta).ravel()
    others = [t for t in tenors if t != 30]
    fit = fit_term_exponent(
        np.tile(systematic, len(others)),
        np.concatenate([d[t][v30.columns].to_numpy().ravel() for t in others]),
        30.0,
        np.repeat(np.array(others, dtype=float), systematic.size),
    )
    assert fit.alpha == pytest.approx(library.vol_rule.term_exponent, abs=0.01)
    names = np.asarray(v30.columns) != INDEX_SYMBOL
    assert beta[~names][0] == pytest.approx(1.0) and np.median(beta[names]) < 0.6  # names' vols move less, in log


def test_idiosyncratic_moves_take_the_worst_point_of_the_ellipsoid() -> None:
    """Two long stocks (no options): extra losses a_s at k sds, weights a_s / ||a||, exact P&L at those moves."""
    np.testing.assert_allclose(
        max_loss_weights([[3.0, 4.0, -1.0], [0, 0, 0]]),
        [[0.6, 0.8, 0.0], [0.0, 0.0, 0.0]],
        rtol=1e-15,
    )
    p = Portfolio(symbols=("IDX", "AAA", "BBB"), spot=[100.0, 50.0, 20.0], symbol_index=[1, 2], quantity=[1e4, 3e4])
    sc = StressScenario("x", "historical", "x", index_move=-0.05, vol=VolShock(1.5), idiosyncratic_sigmas=2.0)
    (res,) = run_stress(p, [sc], betas=[1.0, 1.2, 0.8], nav=1e6, vol_rule=RULE, idio_spot_sd=[0.0, 0.02, 0.03])
    m = np.array([1.2, 0.8]) * math.log(0.95)
    units, spot, sd = np.array([1e4, 3e4]), np.array([50.0, 20.0]), np.array([0.02, 0.03])
    a = units * spot * (np.exp(m) - np.exp(m - 2.0 * sd))  # extra loss of each name at -2 sds
    u = a / np.linalg.norm(a)
    expected = float(np.sum(units * spot * (np.exp(m - 2.0 * u * sd) - 1.0)))
    assert res.market_pnl == pytest.approx(expected, rel=1e-12)
    # one name alone takes the full 2 sds
    (one,) = run_stress(p, [sc], betas=[1.0, 1.2, 0.8], nav=1e6, vol_rule=RULE, idio_spot_sd=[0.0, 0.02, 0.0])
    full = 1e4 * 50.0 * (math.exp(m[0] - 0.04) - 1.0) + 3e4 * 20.0 * (math.exp(m[1]) - 1.0)
    assert one.market_pnl == pytest.approx(full, rel=1e-12)
