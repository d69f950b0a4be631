"""Hedging layer on the shared synthetic run, the hourly review against exchange_calendars, the config file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest
import yaml

from risk_pipeline.defs.automation.sensors import intraday_refresh_job
from risk_pipeline.defs.hedging.assets import REVIEW_TAG
from risk_pipeline.defs.hedging.config import HedgingConfigError, load_hedging_config
from risk_pipeline.defs.hedging.schedules import hedge_review_schedule, review_ticks
from risk_pipeline.paths import LIMITS_FILE
from risk_pipeline.quant.limits import load_limits
from risk_pipeline.warehouse import Warehouse

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


def _latest(wh: Warehouse, name: str) -> pd.DataFrame:
    as_of = wh.query(f"SELECT MAX(as_of) AS t FROM risk.{name}")["t"].iloc[0]
    return wh.read(name, {"as_of": pd.Timestamp(as_of)})


def test_layer_materializes_with_its_checks_passing(run: Run) -> None:
    _, result = run
    for key in ("volatility_index", "hedge_recommendations", "hedge_performance"):
        mats = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]
        assert mats, f"{key} not materialized"
    checks = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "hedge_recommendations"
    }
    assert checks == {"quantities_whole": True, "cost_within_cap": True, "after_metrics_meet_constraints": True}


def test_volatility_index_is_near_the_index_30_day_implied_vol(run: Run) -> None:
    wh, _ = run
    vix = _latest(wh, "volatility_index")
    assert len(vix) == 1
    r = vix.iloc[0]
    assert r["near_minutes"] <= 43_200 < r["next_minutes"]
    # independent: interpolate the ATM implied vols of the two expiries in total variance to 30 days
    vols = wh.read("implied_vols", {"as_of": r["as_of"], "underlying": r["index_symbol"]})
    vols = vols[vols["implied_vol"].notna()]
    atm = []
    for e, f in ((r["near_expiry"], r["near_forward"]), (r["next_expiry"], r["next_forward"])):
        ve = vols[vols["expiry"] == e]
        atm.append(float(ve.iloc[(np.log(ve["strike"] / f)).abs().argsort()[:2]]["implied_vol"].mean()))
    t1, t2 = r["near_time_years"], r["next_time_years"]
    w = (30 / 365 - t1) / (t2 - t1)
    atm30 = np.sqrt(((1 - w) * atm[0] ** 2 * t1 + w * atm[1] ** 2 * t2) / (30 / 365))
    # the strip prices the whole smile: above ATM vol under a put skew, but the same order
    assert 0.9 * atm30 <= r["level"] <= 1.6 * atm30


def test_recommendations_are_consistent_with_the_other_layers(run: Run, exports_root: str) -> None:
    wh, _ = run
    recs = _latest(wh, "hedge_recommendations")
    greeks = _latest(wh, "position_greeks")
    var = _latest(wh, "var_results")
    nav = _latest(wh, "book_nav").set_index("book")["nav"]
    books = sorted(greeks["book"].unique())
    for book in books:
        doc = json.loads((Path(exports_root) / "hedges" / f"{book}.json").read_text())
        rows = recs[recs["book"] == book]
        if rows.empty:
            assert doc["status"] == "no trigger" and doc["triggers"] == []
            continue
        r = rows.iloc[0]
        g = greeks[greeks["book"] == book]
        # before-metrics: the stored Greeks, and ES by the VaR layer's historical method (eep_grid in both layers)
        assert r["dollar_delta_before"] == pytest.approx(g["dollar_delta"].sum(), rel=1e-9)
        assert r["vega_per_vol_point_before"] == pytest.approx(g["vega_per_vol_point"].sum(), rel=1e-9)
        hist = var[(var["book"] == book) & (var["method"] == "historical") & np.isclose(var["confidence"], 0.975)]
        es_1d = float(hist.loc[hist["horizon_days"] == 1, "expected_shortfall"].iloc[0])
        assert r["es_975_1d_before"] == pytest.approx(es_1d, rel=0.02)
        assert json.loads(r["trigger"]) and r["urgency"] in ("LOW", "MEDIUM", "HIGH", "IMMEDIATE")
        assert (rows["quantity"] == rows["quantity"].round()).all()
        assert r["total_outlay"] <= 0.02 * nav[book] * (1 + 1e-9)
        if not r["partial"]:
            assert r["es_975_5d_after"] <= r["es_target"] * (1 + 1e-6)
            assert r["worst_scenario_loss_after"] <= r["loss_cap"] * (1 + 1e-6)
        else:
            assert r["binding_constraints"]
        assert doc["status"] == r["solver_status"] and doc["rationale"] == r["rationale"]


def test_hedge_performance_against_closed_forms(run: Run) -> None:
    wh, _ = run
    perf = _latest(wh, "hedge_performance")
    greeks = _latest(wh, "position_greeks").set_index("position_id")
    nav = _latest(wh, "book_nav").set_index("book")["nav"]
    limits = load_limits(LIMITS_FILE)
    cfg = load_hedging_config()
    assert "core_equity" in set(perf["book"])  # it holds an index put hedge and protective puts
    for book, rows in perf.groupby("book"):
        hedges = rows[rows["position_id"] != "*"]
        assert set(greeks.loc[hedges["position_id"], "strategy"]) <= set(limits.for_book(book).hedge_strategies)
        g = greeks.loc[hedges["position_id"]]
        opt = (g["instrument_type"] == "option").to_numpy()
        fin = np.where(opt, 0.0, g["market_value"].abs() * cfg.for_book(book).financing_rate)
        drag = (np.maximum(-g["theta_per_day"].to_numpy(float), 0) * 365 + fin) / nav[book]
        assert hedges["cost_drag_pct_nav_yr"].to_numpy(float) == pytest.approx(drag, rel=1e-9)
        total = rows[rows["position_id"] == "*"].iloc[0]
        assert total["cost_drag_pct_nav_yr"] == pytest.approx(drag.sum(), rel=1e-9)
        assert total["protection_value"] == pytest.approx(
            total["worst_stress_loss_without"] - total["worst_stress_loss_with"]
        )
        eff = total["effectiveness"]
        assert eff is None or eff <= 1.0


def test_intraday_refresh_also_recommends_hedges() -> None:
    keys = {k.to_user_string() for k in intraday_refresh_job.selection.resolve(_all_graph())}
    assert {"hedge_recommendations", "volatility_index"} <= keys


def _all_graph() -> dg.AssetGraph:  # type: ignore[name-defined]
    from risk_pipeline.definitions import defs

    return defs.resolve_asset_graph()


@pytest.mark.parametrize(
    "day",
    [dt.date(2026, 11, 25), dt.date(2026, 11, 26), dt.date(2026, 11, 27), dt.date(2026, 12, 24), dt.date(2026, 11, 28)],
)
def test_review_ticks_follow_the_exchange_calendar(day: dt.date) -> None:
    """Normal day, Thanksgiving, the early close after it, Christmas Eve (early close), a Saturday."""
    cal = xcals.get_calendar("XNYS", start="2026-01-01", end="2026-12-31")
    expected = []
    for hour in range(24):
        tick = pd.Timestamp(dt.datetime.combine(day, dt.time(hour)), tz="America/New_York").tz_convert("UTC")
        if cal.is_session(pd.Timestamp(day)) and cal.session_open(day) < tick <= cal.session_close(day):
            expected.append(tick)
    assert review_ticks(day) == expected
    ran = []
    for hour in range(10, 17):  # the cron's ticks
        tick = pd.Timestamp(dt.datetime.combine(day, dt.time(hour)), tz="America/New_York")
        if tick.weekday() >= 5:
            continue
        ctx = dg.build_schedule_context(scheduled_execution_time=tick.to_pydatetime())
        out = hedge_review_schedule(ctx)
        if isinstance(out, dg.RunRequest):
            assert out.partition_key == day.isoformat() and out.tags[REVIEW_TAG] == "scheduled"
            ran.append(tick.tz_convert("UTC"))
    assert ran == expected


def test_config_errors_name_file_field_value_and_rule(tmp_path: Path) -> None:
    bad = tmp_path / "hedging.yaml"
    bad.write_text(
        "version: '1'\ndefaults:\n  max_hedge_cost_pct_nav: 1.5\n  horizon_sessions: 2.5\n"
        "books:\n  core_equity:\n    min_hedge_notional: -1\n    no_such_setting: 3\n"
    )
    with pytest.raises(HedgingConfigError) as err:
        load_hedging_config(bad)
    text = str(err.value)
    assert len(err.value.problems) == 4
    for piece in (
        str(bad),
        "'max_hedge_cost_pct_nav' = 1.5: must be a number in (0, 1)",
        "'horizon_sessions' = 2.5: must be an integer >= 1",
        "book 'core_equity', field 'min_hedge_notional' = -1",
        "'no_such_setting' = 3: unknown setting",
    ):
        assert piece in text


@pytest.fixture(scope="module")
def triggered(run: Run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, dg.ExecuteInProcessResult, Path]:
    """hedge_recommendations re-materialized on a copy of the run for vol_overlay, with its vega cap lowered to
    0.75 x the book's vega (warning level 0.6 x, under the book's vega) and an ES threshold and target it is
    over."""
    import shutil

    import yaml

    from risk_pipeline.defs.hedging.assets import hedge_recommendations
    from risk_pipeline.resources import ExportsResource, WarehouseResource

    wh, _ = run
    tmp = tmp_path_factory.mktemp("hedging")
    url = str(tmp / "risk_warehouse.duckdb")
    shutil.copy(wh.url, url)
    limits = yaml.safe_load(LIMITS_FILE.read_text())
    # the vega cap at 0.75 x the book's vega: its warning level (0.8 x the cap) is 0.6 x the book's vega
    vega = float(_latest(wh, "position_greeks").query("book == 'vol_overlay'")["vega_per_vol_point"].sum())
    limits["books"]["vol_overlay"]["max_abs_vega_per_vol_point"] = round(0.75 * abs(vega))
    (tmp / "limits.yaml").write_text(yaml.safe_dump(limits))
    es = float(_latest(wh, "var_results").query("book == 'vol_overlay'")["expected_shortfall"].max())
    nav = 50e6
    hedging = {
        "version": "test",
        "defaults": {"time_limit_seconds": 60.0},
        # ES trigger at 0.1 x the book's largest stored ES; target well above that but under the book's 5-day ES
        "books": {"vol_overlay": {"tail_es_threshold_pct_nav": 0.1 * es / nav, "es_target_pct_nav": 0.0004}},
    }
    (tmp / "hedging.yaml").write_text(yaml.safe_dump(hedging))
    # the capital-preservation level of vol_overlay requires hedges (as after a moderate drawdown)
    copy = Warehouse(url)
    state = _latest(copy, "trading_state").drop(columns=["run_id", "materialized_at"])
    book = state["book"] == "vol_overlay"
    state.loc[book, "hedges_required"], state.loc[book, "preservation_level"] = True, "moderate"
    copy.write("trading_state", state, run_id="test-hedges-required")
    config = {
        "books": ["vol_overlay"],
        "hedging_file": str(tmp / "hedging.yaml"),
        "limits_file": str(tmp / "limits.yaml"),
    }
    result = dg.materialize(
        [hedge_recommendations],
        partition_key="2026-11-20",
        resources={"warehouse": WarehouseResource(url=url), "exports": ExportsResource(root=str(tmp / "exports"))},
        run_config={"ops": {"hedge_recommendations": {"config": config}}},
    )
    return Warehouse(url), result, tmp


def test_vega_over_its_warning_level_is_hedged_under_it_on_full_revaluation(triggered) -> None:  # type: ignore[no-untyped-def]
    wh, result, tmp = triggered
    assert result.success
    recs = _latest(wh, "hedge_recommendations")
    assert set(recs["book"]) == {"vol_overlay"}
    r = recs.iloc[0]
    warn = 0.8 * yaml.safe_load((tmp / "limits.yaml").read_text())["books"]["vol_overlay"]["max_abs_vega_per_vol_point"]
    assert abs(r["vega_per_vol_point_before"]) > warn and not r["partial"] and r["meets_constraints"]
    assert "tail_es" in r["trigger_kinds"]
    # independent revaluation of the lines' vega: BSM vega (scipy) per chosen option at its stored inputs
    from scipy.stats import norm

    lines = recs[recs["instrument_type"] == "option"]
    s, k, t = lines["spot"], lines["strike"], lines["time_to_expiry_years"]
    v, rr, q = lines["implied_vol"], lines["rate"], lines["dividend_yield"]
    d1 = (np.log(s / k) + (rr - q + v**2 / 2) * t) / (v * np.sqrt(t))
    vega = s * np.exp(-q * t) * norm.pdf(d1) * np.sqrt(t) / 100 * lines["multiplier"] * lines["quantity"]
    signed = np.where(lines["side"] == "buy", 1.0, -1.0) * vega
    european = (lines["exercise_style"] == "european").all()
    after = r["vega_per_vol_point_before"] + signed.sum()
    if european:
        assert after == pytest.approx(r["vega_per_vol_point_after"], rel=1e-6)
    assert abs(r["vega_per_vol_point_after"]) <= warn * (1 + 1e-9)
    assert r["es_975_5d_after"] <= r["es_target"] * (1 + 1e-6) < r["es_975_5d_before"]
    assert (recs["quantity"] == recs["quantity"].round()).all() and (recs["quantity"] > 0).all()
    assert r["total_outlay"] <= r["budget"]
    buys = recs[recs["side"] == "buy"]
    assert (buys["price_side"] == "ask").all() and (recs[recs["side"] == "sell"]["price_side"] == "bid").all()
    # the preservation beta hedge: index units taking beta-weighted dollar delta to 0, closed form
    greeks = _latest(wh, "position_greeks").query("book == 'vol_overlay'")
    bwdd = greeks["beta_weighted_delta"].fillna(greeks["dollar_delta"]).sum()
    beta = recs[recs["hedge_id"] == "beta"].iloc[0]
    assert "preservation_hedges_required" in beta["trigger_kinds"]
    assert beta["urgency"] in ("HIGH", "IMMEDIATE")  # moderate preservation level: HIGH at least
    signed = beta["quantity"] * (1 if beta["side"] == "buy" else -1)
    # with the front index future: one contract carries multiplier x S exp((r - q) T) of index dollar delta
    fut = wh.read("instrument_quotes", {"as_of": r["as_of"]}).sort_values("expiry").iloc[0]
    assert beta["symbol"] == fut["symbol"] and beta["instrument_type"] == "future"
    carry = np.exp((fut["rate"] - fut["dividend_yield"]) * fut["time_to_expiry_years"])
    per_contract = fut["multiplier"] * beta["spot"] * carry
    assert signed == round(-bwdd / per_contract) and beta["beta_weighted_dollar_delta"] == pytest.approx(bwdd)
    assert beta["price"] == (fut["ask"] if signed > 0 else fut["bid"]) and beta["multiplier"] == fut["multiplier"]
    # CPPI on every row: target = multiplier x (NAV - floor x peak NAV)
    nav = _latest(wh, "book_nav").set_index("book").loc["vol_overlay"]
    assert r["cppi_target_exposure"] == pytest.approx(4.0 * max(nav["nav"] - 0.85 * nav["peak_nav"], 0.0))
    assert r["cppi_scale"] == pytest.approx(r["cppi_target_exposure"] / r["risky_exposure"])
    doc = json.loads((tmp / "exports" / "hedges" / "vol_overlay.json").read_text())
    assert doc["status"] == r["solver_status"] and len(doc["lines"]) == len(recs)


def test_an_illiquid_or_empty_chain_leaves_only_delta_one_candidates_and_says_why(run: Run) -> None:
    from risk_pipeline.defs.hedging.inputs import delta_one_candidates, lines_portfolio, option_candidates

    wh, _ = run
    quotes = _latest(wh, "option_quotes")
    vols = wh.read("implied_vols", {"as_of": quotes["as_of"].iloc[0]})
    spots = {"SYNX": float(quotes.loc[quotes["underlying"] == "SYNX", "underlying_price"].iloc[0])}
    cfg = load_hedging_config().for_book("vol_overlay")
    as_of = pd.Timestamp(quotes["as_of"].iloc[0])
    liquid, _ = option_candidates(quotes, vols, spots, as_of, cfg)
    assert len(liquid) and (liquid["bid"] > 0).all()
    assert ((liquid["ask"] - liquid["bid"]) / liquid["mid"] <= cfg.max_relative_spread).all()
    # an implied vol counts when its status is OK in any case, and only then
    lower, _ = option_candidates(quotes, vols.assign(status=vols["status"].str.lower()), spots, as_of, cfg)
    pd.testing.assert_frame_equal(lower, liquid)
    failed, skipped = option_candidates(quotes, vols.assign(status="FAILED"), spots, as_of, cfg)
    assert failed.empty and skipped["no_implied_vol"] > 0
    no_bids = quotes.assign(bid=0.0)
    none, skipped = option_candidates(no_bids, vols, spots, as_of, cfg)
    assert none.empty and skipped["zero_bid"] == int((quotes["underlying"] == "SYNX").sum())
    empty, _ = option_candidates(quotes.iloc[0:0], vols, spots, as_of, cfg)
    assert empty.empty
    cands = pd.concat([empty, delta_one_candidates(spots, "SYNX", cfg)], ignore_index=True)
    p = lines_portfolio(cands, spots, cands["side"].to_numpy(float))
    assert p.n_positions == 2 and not p.is_option.any()


def test_index_futures_and_the_inverse_etf_are_published_and_offered_as_candidates(run: Run) -> None:
    from risk_pipeline.defs.hedging.inputs import index_instrument_candidates, lines_portfolio
    from risk_pipeline.quant.hedging import per_position_pnl
    from risk_pipeline.quant.scenario_engine import ScenarioSet

    wh, result = run
    checks = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "instrument_quotes"
    }
    assert checks == {"instrument_rows_valid": True}
    inst = _latest(wh, "instrument_quotes")
    assert sorted(inst["instrument_type"]) == ["etf", "future", "future"]
    spot = float(inst["underlying_price"].iloc[0])
    cfg = load_hedging_config().for_book("core_equity")
    cands = index_instrument_candidates(inst, "SYNX", spot, pd.Timestamp(inst["as_of"].iloc[0]), cfg)
    assert len(cands) == 6 and set(cands["price_side"]) == {"ask", "bid"}
    fut = inst[inst["instrument_type"] == "future"].set_index("symbol")
    etf = inst[inst["instrument_type"] == "etf"].iloc[0]
    # a +5 % index move: a future gains multiplier x F x 5 % (F linear in S), a -1x ETF share loses price x 5 %
    p = lines_portfolio(cands, {"SYNX": spot}, cands["side"].to_numpy(float))
    pnl = per_position_pnl(p, ScenarioSet(np.array([[0.05]])))[0]
    for i, c in cands.iterrows():
        if c["instrument_type"] == "future":
            f = fut.loc[c["instrument_symbol"]]
            expected = c["side"] * f["multiplier"] * f["fair_value"] * 0.05
        else:
            expected = -c["side"] * etf["price"] * 0.05
        assert pnl[i] == pytest.approx(expected, rel=1e-12)
    # buying a future pays its basis roll-down over the horizon when r > q, selling does not
    days = cfg.horizon_sessions * 365 / 252
    for c in cands[cands["instrument_type"] == "future"].itertuples():
        f = fut.loc[c.instrument_symbol]
        roll = c.side * f["multiplier"] * f["fair_value"] * (f["rate"] - f["dividend_yield"]) * days / 365
        assert c.carry == pytest.approx(max(roll, 0.0), rel=1e-12, abs=1e-12)


def test_future_and_etf_positions_are_valued_at_their_own_quotes(run: Run) -> None:
    from risk_pipeline.valuation import value_positions

    wh, _ = run
    inst = _latest(wh, "instrument_quotes").set_index("symbol")
    as_of = pd.Timestamp(inst["as_of"].iloc[0])
    session = inst["as_of_date"].iloc[0]
    front = inst[inst["instrument_type"] == "future"].sort_values("expiry").index[0]
    positions = pd.DataFrame(
        {
            "book": ["core_equity", "core_equity"],
            "position_id": ["fut-1", "etf-1"],
            "instrument_type": ["future", "etf"],
            "symbol": [front, "SYNXS"],
            "expiry": [inst.loc[front, "expiry"], None],
            "strike": [np.nan, np.nan],
            "option_type": [None, None],
            "exercise_style": [None, None],
            "quantity": [-3.0, 400.0],
            "multiplier": [50.0, 1.0],
            "cost_basis": [np.nan, np.nan],
            "strategy": ["index_hedge", "index_hedge"],
            "sector": ["Index", "Index"],
        }
    )
    valued = value_positions(wh, session, as_of, positions=positions).set_index("position_id")
    for pid, sym, qty, mult, lev in (("fut-1", front, -3.0, 50.0, 1.0), ("etf-1", "SYNXS", 400.0, 1.0, -1.0)):
        mid = (inst.loc[sym, "bid"] + inst.loc[sym, "ask"]) / 2
        v = valued.loc[pid]
        assert v["price"] == pytest.approx(mid, rel=1e-12)
        assert v["market_value"] == pytest.approx(qty * mult * mid, rel=1e-12)
        assert v["dollar_delta"] == pytest.approx(qty * mult * mid, rel=1e-12)
        assert v["gamma"] == 0.0 and v["vega_per_vol_point"] == 0.0
        assert v["beta"] == lev and v["beta_weighted_delta"] == pytest.approx(lev * qty * mult * mid, rel=1e-12)
    missing = positions.assign(symbol=["SYNXU9", "SYNXS"])
    with pytest.raises(Exception, match="fut-1"):
        value_positions(wh, session, as_of, positions=missing)


def test_rationale_of_a_partial_hedge_stopped_at_the_time_limit_gives_its_excess_and_bound() -> None:
    from risk_pipeline.defs.hedging.assets import rationale
    from risk_pipeline.quant.hedging import Trigger, check_hedge, solve_hedge
    from risk_pipeline_tests.quant.test_hedging import STOPPED_EARLY, infeasible_program

    c, t = infeasible_program(0, n=60)
    # stopped at the MILP's first node (deterministic stops only): the best partial hedge, its excess and the bound
    sol = solve_hedge(c, t, **STOPPED_EARLY)
    assert sol.status == "time_limit" and sol.partial and np.isfinite(sol.violation_bound)
    chk = check_hedge(c, t, sol.quantity)
    assert sol.violation == pytest.approx(float(chk.greek_excess.sum()) + chk.loss_excess + chk.es_excess)
    metrics = {"es_975_5d": 1.0, "worst_stress_loss": 1.0, "vega_per_vol_point": 0.0, "dollar_delta": 0.0}
    lines = pd.DataFrame({"side": [1], "quantity": [2.0], "label": ["X"]})
    text = rationale("b", [Trigger("limit_breach", "", 1.0, 1.0, "HIGH")], lines, metrics, metrics, sol)
    assert text.startswith(f"b: best partial hedge (buy 2 X) because {', '.join(sol.binding)} cannot be met")
    assert f"excess {sol.violation:.4g} in units of their levels, at least {sol.violation_bound:.4g}" in text
