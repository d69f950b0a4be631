"""Stress testing: the scenario library and its sources, QuantLib repricing, shocks, liquidity, grid, events."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import QuantLib as ql

from risk_pipeline.quant.american import american_price
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import market_values, revalue
from risk_pipeline.quant.stress import (
    CRITICAL,
    HIGH,
    LOW,
    MEDIUM,
    GapEvent,
    GridSpec,
    LiquidityShock,
    RiskThresholds,
    ScenarioLibrary,
    StressScenario,
    VolShock,
    beta_shocks,
    event_day_moves,
    event_gap_risk,
    event_scenarios,
    liquidation_costs,
    load_scenarios,
    measure_move,
    run_stress,
    stress_grid,
)
from risk_pipeline.quant.var import empirical_var_es

LIBRARY = Path(__file__).resolve().parents[2] / "data" / "stress" / "scenarios.yaml"
TODAY = ql.Date(15, 1, 2025)


@pytest.fixture(scope="module")
def library() -> ScenarioLibrary:
    return load_scenarios(LIBRARY)


# ----------------------------------------------------------------------------------------------
# the library
# ----------------------------------------------------------------------------------------------


def test_library_has_the_required_scenarios(library: ScenarioLibrary) -> None:
    ids = {s.scenario_id for s in library.scenarios}
    assert {
        "black_monday_1987",
        "gfc_sep_oct_2008",
        "flash_crash_2010",
        "china_deval_aug_2015",
        "volmageddon_2018",
        "covid_mar_2020",
        "rate_shock_2022",
        "market_crash_30",
        "liquidity_crisis",
        "flash_crash_15",
        "position_limit_shock",
        "black_swan",
    } <= ids
    assert library.version and library.reference_index == "SPX"
    assert (library.thresholds.medium, library.thresholds.high, library.thresholds.critical) == (-0.02, -0.05, -0.10)
    assert len(library.grid.spot_shocks) == 13 and library.grid.spot_shocks[0] == -0.30
    assert library.grid.vol_shocks[0] == -0.5 and library.grid.vol_shocks[-1] == 2.0
    crash = library.get("market_crash_30")
    assert (crash.index_move, crash.vol.multiplier) == (-0.30, 3.0)
    swan = library.get("black_swan")
    assert (swan.index_move, swan.vol.multiplier) == (-0.50, 5.0)
    liq = library.get("liquidity_crisis").liquidity
    assert (liq.spread_multiplier, liq.volume_multiplier, liq.liquidation_fraction) == (5.0, 0.3, 1.0)
    assert library.get("position_limit_shock").liquidity.liquidation_fraction == 0.5


def test_historical_moves_are_consistent_with_their_published_levels(library: ScenarioLibrary) -> None:
    for s in library.scenarios:
        if s.scenario_type != "historical":
            continue
        assert s.sources and s.window_start and s.window_end, s.scenario_id
        lv = s.index_levels
        end = lv["intraday_low"] if s.measured_as == "intraday_trough_return" else lv["end"]
        assert s.index_move == pytest.approx(end / lv["start"] - 1.0, abs=6e-5), s.scenario_id
        vi = s.vol_index
        assert s.vol.multiplier == pytest.approx(vi["end"] / vi["start"], abs=6e-3), s.scenario_id


def test_replays_inside_the_arch_sample_can_be_measured_from_data(library: ScenarioLibrary) -> None:
    sp500 = pytest.importorskip("arch.data.sp500").load()
    dates = sp500.index.values.astype("datetime64[D]")
    measured = 0
    for s in library.scenarios:
        if s.measurable_from != "arch.data.sp500":
            continue
        m = measure_move(dates, sp500["Close"].to_numpy(), s.window_start, s.window_end, sp500["Low"].to_numpy())
        assert m.start_close == pytest.approx(s.index_levels["start"], abs=0.006), s.scenario_id
        value = {"total_return": m.total_return, "intraday_trough_return": m.intraday_trough_return}[s.measured_as]
        assert value == pytest.approx(s.index_move, abs=6e-5), s.scenario_id
        measured += 1
    assert measured == 4


def test_measure_move_on_a_hand_series() -> None:
    dates = np.array(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05", "2024-01-08"], dtype="datetime64[D]")
    close = np.array([100.0, 90.0, 95.0, 80.0, 88.0])
    lows = np.array([99.0, 85.0, 90.0, 75.0, 86.0])
    m = measure_move(dates, close, "2024-01-02", "2024-01-07", lows)  # end falls on a weekend: last close 80
    assert (m.start_close, m.end_close, m.end_date) == (100.0, 80.0, np.datetime64("2024-01-05"))
    assert m.total_return == pytest.approx(-0.2)
    assert m.intraday_trough_return == pytest.approx(-0.25)
    assert m.worst_daily_return == pytest.approx(80.0 / 95.0 - 1.0)
    assert m.max_drawdown == pytest.approx(-0.2)
    moves = event_day_moves(dates, close, np.array(["2024-01-03", "2024-01-06", "2023-12-01"], dtype="datetime64[D]"))
    np.testing.assert_allclose(moves, [-0.1, 0.1])  # Jan 6 -> next session Jan 8; Dec 1 has no previous close
    np.testing.assert_allclose(
        event_day_moves(dates, close, np.array(["2024-01-03"], "datetime64[D]"), lag=1), [95.0 / 90.0 - 1.0]
    )


def test_invalid_library_entries_are_rejected() -> None:
    base = {"version": "x", "scenarios": [{"id": "a", "type": "hypothetical", "description": "d", "index_move": -0.1}]}
    assert load_scenarios(base).scenarios[0].index_move == -0.1
    bad = {**base, "scenarios": [{**base["scenarios"][0], "index_mov": -0.1}]}
    with pytest.raises(ValueError, match="index_move"):
        load_scenarios(bad)
    with pytest.raises(ValueError, match="above -1"):
        load_scenarios({**base, "scenarios": [{**base["scenarios"][0], "index_move": -1.0}]})
    with pytest.raises(ValueError):
        load_scenarios({**base, "risk_levels": {"medium": -0.1, "high": -0.05, "critical": -0.2}})


# ----------------------------------------------------------------------------------------------
# full revaluation against QuantLib
# ----------------------------------------------------------------------------------------------


class _QlPricer:
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
        self,
        s: float,
        k: float,
        days: int,
        vol: float,
        r: float,
        q: float,
        call: bool,
        american: bool,
        engine: str = "analytic",
    ) -> float:
        self.spot.setValue(s)
        self.r.setValue(r)
        self.q.setValue(q)
        self.v.setValue(vol)
        kind = ql.Option.Call if call else ql.Option.Put
        ex = ql.AmericanExercise(TODAY, TODAY + days) if american else ql.EuropeanExercise(TODAY + days)
        opt = ql.VanillaOption(ql.PlainVanillaPayoff(kind, k), ex)
        eng = {"analytic": ql.AnalyticEuropeanEngine, "fd": lambda p: ql.FdBlackScholesVanillaEngine(p, 800, 800)}
        opt.setPricingEngine(eng[engine](self.process))
        return opt.NPV()


def _one_option(k: float, days: int, vol: float, call: bool, american: bool, q: float = 0.015) -> Portfolio:
    return Portfolio(
        symbols=("IDX",),
        spot=[100.0],
        symbol_index=[0],
        quantity=[3.0],
        multiplier=100.0,
        is_option=True,
        is_call=call,
        strike=k,
        time_years=days / 365.0,
        implied_vol=vol,
        rate=0.04,
        dividend_yield=q,
        is_american=american,
    )


SCENARIO = StressScenario("s", "hypothetical", "test", index_move=-0.2, vol=VolShock(2.5, 0.02, -0.1), rate_shift=-0.01)


@pytest.mark.parametrize(
    ("k", "days", "vol", "call"),
    [(90.0, 30, 0.25, False), (105.0, 200, 0.4, True), (80.0, 700, 0.18, False), (100.0, 1, 0.3, True)],
)
def test_stress_pnl_of_a_european_equals_quantlib(k: float, days: int, vol: float, call: bool) -> None:
    ql_pricer = _QlPricer()
    p = _one_option(k, days, vol, call, american=False)
    (res,) = run_stress(p, [SCENARIO], nav=1e6)
    s1 = 100.0 * 0.8
    vol1 = max(vol * 2.5 + 0.02 - 0.1 * math.log(k / s1), 0.0)
    before = ql_pricer.npv(100.0, k, days, vol, 0.04, 0.015, call, False)
    after = ql_pricer.npv(s1, k, days, vol1, 0.03, 0.015, call, False)
    assert res.pnl == pytest.approx(300.0 * (after - before), rel=1e-10, abs=1e-9)
    assert res.pnl_pct_nav == pytest.approx(res.pnl / 1e6, rel=1e-15)


@pytest.mark.parametrize(
    ("k", "days", "vol", "call"), [(110.0, 180, 0.3, False), (95.0, 365, 0.25, True), (100.0, 90, 0.5, False)]
)
def test_stress_pnl_of_an_american_is_bs2002_and_close_to_quantlib_fd(
    k: float, days: int, vol: float, call: bool
) -> None:
    ql_pricer = _QlPricer()
    q = 0.04 if call else 0.015
    p = _one_option(k, days, vol, call, american=True, q=q)
    (res,) = run_stress(p, [SCENARIO], nav=1e6)
    s1 = 80.0
    vol1 = max(vol * 2.5 + 0.02 - 0.1 * math.log(k / s1), 0.0)
    t = days / 365.0
    exact = float(american_price(s1, k, t, vol1, 0.03, q, call) - american_price(100.0, k, t, vol, 0.04, q, call))
    assert res.pnl == pytest.approx(300.0 * exact, rel=1e-12)
    fd = ql_pricer.npv(s1, k, days, vol1, 0.03, q, call, True, "fd") - ql_pricer.npv(
        100.0, k, days, vol, 0.04, q, call, True, "fd"
    )
    # the exact engine against QuantLib's finite differences (1 % of the option value, QuantLib's grid error)
    scale = ql_pricer.npv(s1, k, days, vol1, 0.03, q, call, True, "fd")
    assert abs(res.pnl / 300.0 - fd) < 0.01 * scale


def test_american_call_without_dividends_is_the_quantlib_european() -> None:
    ql_pricer = _QlPricer()
    p = _one_option(100.0, 120, 0.3, True, american=True, q=0.0)
    (res,) = run_stress(p, [SCENARIO], nav=1e6)
    vol1 = 0.3 * 2.5 + 0.02 - 0.1 * math.log(100.0 / 80.0)
    ref = ql_pricer.npv(80.0, 100.0, 120, vol1, 0.03, 0.0, True, False) - ql_pricer.npv(
        100.0, 100.0, 120, 0.3, 0.04, 0.0, True, False
    )
    assert res.pnl == pytest.approx(300.0 * ref, rel=1e-10)


# ----------------------------------------------------------------------------------------------
# shocks, liquidity, levels, grid
# ----------------------------------------------------------------------------------------------


def _book() -> Portfolio:
    spot = np.array([100.0, 50.0, 4000.0])
    return Portfolio(
        symbols=("TEC", "ENE", "IDX"),
        spot=spot,
        symbol_index=[0, 1, 2, 0, 2],
        quantity=[1000.0, -2000.0, 10.0, 5.0, -3.0],
        multiplier=[1.0, 1.0, 1.0, 100.0, 100.0],
        is_option=[False, False, False, True, True],
        is_call=[True, True, True, False, False],
        strike=[1.0, 1.0, 1.0, 95.0, 3800.0],
        time_years=[0.0, 0.0, 0.0, 0.25, 0.5],
        implied_vol=[0.0, 0.0, 0.0, 0.35, 0.2],
        rate=0.04,
        dividend_yield=0.01,
        is_american=[False, False, False, True, False],
    )


def test_beta_sector_and_symbol_shocks() -> None:
    p = _book()
    betas = np.array([1.5, 0.5, 1.0])
    sc = StressScenario(
        "x", "hypothetical", "x", index_move=-0.2, sector_moves={"Energy": -0.4}, symbol_moves={"IDX": -0.19}
    )
    (res,) = run_stress(p, [sc], betas=betas, sectors=["Technology", "Energy", "Index"], nav=1e7)
    expected = np.array([0.8**1.5 - 1.0, -0.4, -0.19])
    np.testing.assert_allclose(beta_shocks([-0.2], betas)[0], [0.8**1.5 - 1, 0.8**0.5 - 1, -0.2], rtol=1e-15)
    ref = revalue(p, expected[None, :]).pnl[0]
    assert res.market_pnl == pytest.approx(ref, rel=1e-13)
    by_sym = revalue(p, expected[None, :], per_symbol=True).by_symbol
    assert by_sym is not None
    assert res.worst_symbol == p.symbols[int(np.argmin(by_sym[0]))]
    assert res.worst_symbol_pnl == pytest.approx(float(by_sym[0].min()), rel=1e-13)


def test_liquidation_cost_formula() -> None:
    p = _book()
    spreads = np.array([0.02, 0.05, 1.0, 0.10, 4.0])
    volumes = np.array([1e4, 1e5, 1e3, 500.0, 10.0])
    shock = LiquidityShock(spread_multiplier=5.0, volume_multiplier=0.3, liquidation_fraction=1.0)
    cost, days = liquidation_costs(p, [shock], spreads, volumes)
    q = np.abs(p.quantity)
    t = q / (0.10 * volumes * 0.3)
    per_pos = 0.5 * spreads * 5.0 * p.multiplier * q * np.maximum(1.0, np.sqrt(t))
    np.testing.assert_allclose(cost[0], [per_pos[0] + per_pos[3], per_pos[1], per_pos[2] + per_pos[4]], rtol=1e-14)
    assert days[0] == pytest.approx(t.max())
    # e.g. the stock TEC: 1000 shares, 10 % of 3,000 a day -> 3.33 days; cost 0.5*0.1*1000*sqrt(3.33)
    assert per_pos[0] == pytest.approx(0.5 * 0.02 * 5 * 1000 * math.sqrt(1000 / 300), rel=1e-14)
    half, _ = liquidation_costs(p, [LiquidityShock(liquidation_fraction=0.5)], spreads, volumes)
    q2 = 0.5 * q
    ref = 0.5 * spreads * p.multiplier * q2 * np.maximum(1.0, np.sqrt(q2 / (0.1 * volumes)))
    assert half.sum() == pytest.approx(ref.sum(), rel=1e-14)
    with pytest.raises(ValueError, match="spreads"):
        liquidation_costs(p, [shock], None, None)


def test_run_stress_library_rows_and_levels(library: ScenarioLibrary) -> None:
    p = _book()
    nav = float(np.sum(np.abs(market_values(p))))
    res = run_stress(
        p,
        library,
        betas=[1.3, 0.8, 1.0],
        sectors=["Technology", "Energy", "Index"],
        spreads=np.full(5, 0.05),
        volumes=np.full(5, 1e4),
        nav=nav,
    )
    assert [r.scenario_id for r in res] == [s.scenario_id for s in library.scenarios]
    th = library.thresholds
    for r in res:
        assert r.pnl == pytest.approx(r.market_pnl - r.liquidation_cost, rel=1e-12, abs=1e-9)
        assert r.pnl_pct_nav == pytest.approx(r.pnl / nav, rel=1e-15)
        expected = (
            CRITICAL
            if r.pnl_pct_nav <= th.critical
            else HIGH
            if r.pnl_pct_nav <= th.high
            else MEDIUM
            if r.pnl_pct_nav <= th.medium
            else LOW
        )
        assert r.risk_level == expected
        assert r.library_version == library.version
        assert {
            "scenario_id",
            "scenario_type",
            "description",
            "spot_shock",
            "vol_shock",
            "pnl",
            "pnl_pct_nav",
            "risk_level",
        } <= set(r.to_row())
    by_id = {r.scenario_id: r for r in res}
    assert by_id["liquidity_crisis"].market_pnl == 0.0 and by_id["liquidity_crisis"].liquidation_cost > 0.0
    assert by_id["black_swan"].pnl < by_id["market_crash_30"].pnl < 0.0
    assert RiskThresholds().level(-0.02) == MEDIUM and RiskThresholds().level(-0.0199) == LOW


def test_grid_matches_direct_revaluation() -> None:
    p = _book()
    grid = stress_grid(p, GridSpec(), nav=1e6)
    assert len(grid) == 13 * 8
    spots = sorted({g.spot_shock for g in grid})
    assert spots[0] == -0.3 and spots[-1] == 0.3
    zero = next(g for g in grid if g.spot_shock == 0.0 and g.vol_shock == 0.0)
    assert zero.pnl == 0.0
    g = next(g for g in grid if g.spot_shock == -0.15 and g.vol_shock == 1.0)
    ref = revalue(p, np.full((1, 3), -0.15), vol_scale=np.full((1, 3), 2.0)).pnl[0]
    assert g.pnl == pytest.approx(ref, rel=1e-14)
    assert g.pnl_pct_nav == pytest.approx(ref / 1e6, rel=1e-14)


def test_grid_revalued_by_vol_move_is_each_points_own_revaluation() -> None:
    """A 3 x 4 grid by beta, the book with an American put: every point (in spot-major order) is the P&L of that
    point's scenario revalued alone, bit for bit (the grid revalues one vol move per chunk, then reorders)."""
    p = _book()
    betas = [1.5, 0.5, 1.0]
    spec = GridSpec(spot_shocks=(-0.2, 0.0, 0.1), vol_shocks=(-0.5, 0.0, 0.5, 2.0), spot_mode="beta")
    grid = stress_grid(p, spec, nav=1e6, betas=betas)
    assert [(g.spot_shock, g.vol_shock) for g in grid] == [(a, v) for a in spec.spot_shocks for v in spec.vol_shocks]
    for g in grid:
        moves = [[(1.0 + g.spot_shock) ** b - 1.0 for b in betas]]
        alone = revalue(p, beta_shocks([g.spot_shock], betas), vol_scale=np.full((1, 3), 1.0 + g.vol_shock)).pnl[0]
        np.testing.assert_allclose(beta_shocks([g.spot_shock], betas), moves, rtol=1e-14)
        assert g.pnl == alone


def test_event_gap_risk() -> None:
    p = _book()
    rng = np.random.default_rng(0)
    earnings = rng.standard_t(3, 16) * 0.05
    crush = np.full(16, -0.3)
    fomc = rng.normal(0.0, 0.01, 40)
    events = [
        GapEvent("earn-TEC", "earnings", "TEC"),
        GapEvent("fomc-1", "fomc"),
        GapEvent("earn-XXX", "earnings", "XXX"),
    ]
    res = event_gap_risk(
        p, events, {"TEC": earnings}, {"fomc": fomc}, betas=[1.2, 0.7, 1.0], vol_changes={"TEC": crush}, confidence=0.9
    )
    assert [r.event_id for r in res] == ["earn-TEC", "fomc-1"]  # no history for XXX
    sc = event_scenarios(p, events[0], earnings, vol_changes=crush)
    assert np.all(sc.spot_shock_rel[:, 1:] == 0.0) and np.all(sc.spot_shock_rel[:, 0] == earnings)
    shocks = np.zeros((16, 3))
    shocks[:, 0] = earnings
    scale = np.ones((16, 3))
    scale[:, 0] = 0.7
    pnl = revalue(p, shocks, vol_scale=scale, horizon_days=1.0).pnl
    var, es = empirical_var_es(pnl, 0.9)
    r = res[0]
    assert r.n_scenarios == 16
    assert r.loss_quantile == pytest.approx(var, rel=1e-13) and r.expected_shortfall == pytest.approx(es, rel=1e-13)
    assert r.expected_loss == pytest.approx(float(np.mean(np.maximum(-pnl, 0.0))), rel=1e-13)
    assert r.worst_loss == pytest.approx(float(-pnl.min()), rel=1e-13)
    assert r.expected_pnl == pytest.approx(float(pnl.mean()), rel=1e-12)
    market = revalue(p, beta_shocks(fomc, [1.2, 0.7, 1.0]), horizon_days=1.0).pnl
    assert res[1].worst_loss == pytest.approx(float(-market.min()), rel=1e-13)


def test_stress_american_uses_exact_pricing_with_put_price_check() -> None:
    """A deep in-the-money American put after a crash is worth at least intrinsic (full BS2002, no grid)."""
    p = _one_option(100.0, 180, 0.3, False, american=True)
    (res,) = run_stress(p, [StressScenario("c", "hypothetical", "c", index_move=-0.5, vol=VolShock(5.0))], nav=1e6)
    after = float(american_price(50.0, 100.0, 180 / 365, 1.5, 0.04, 0.015, False))
    before = float(american_price(100.0, 100.0, 180 / 365, 0.3, 0.04, 0.015, False))
    assert res.pnl == pytest.approx(300.0 * (after - before), rel=1e-12)
    assert after >= 50.0
    assert after >= float(bsm_price(50.0, 100.0, 180 / 365, 1.5, 0.04, 0.015, False))
