"""Risk budgets in limit_status, recommendations on stress_results and the compliance report on both engines,
on the shared end-of-day run, every number recomputed from the upstream tables."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.contracts import TABLES
from risk_pipeline.defs.compliance.report import build_report
from risk_pipeline.defs.sizing.config import load_sizing_config
from risk_pipeline.paths import COMPLIANCE_RULES_FILE, LIMITS_FILE, SCENARIOS_FILE
from risk_pipeline.pretrade_service import PreTradeService
from risk_pipeline.quant.compliance import load_rules
from risk_pipeline.quant.limits import load_limits
from risk_pipeline.quant.stress import load_scenarios
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.defs.conftest import SESSION

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


def _latest(wh: Warehouse, name: str) -> pd.DataFrame:
    frame = wh.read(name)
    return frame[frame["as_of"] == frame["as_of"].max()].reset_index(drop=True)


def test_limit_status_carries_each_strategy_budget(run: Run) -> None:
    wh, _ = run
    status = _latest(wh, "limit_status")
    budgets = status[status["limit_name"].str.startswith("risk_budget:")]
    greeks = _latest(wh, "position_greeks")
    contrib = _latest(wh, "var_contributions").query("method == 'historical' and horizon_days == 1")
    contrib = contrib[np.isclose(contrib["confidence"], 0.99)]
    var = _latest(wh, "var_results").query("method == 'historical' and horizon_days == 1")
    var = var[np.isclose(var["confidence"], 0.99)].set_index("book")["var"]
    config = load_sizing_config().risk_budgets
    limits = load_limits(LIMITS_FILE)
    emergency = load_rules(COMPLIANCE_RULES_FILE).emergency
    navs = wh.read("book_nav").sort_values(["as_of_date", "as_of"]).drop_duplicates(["book", "as_of_date"], keep="last")

    def factor(book: str) -> float:  # a run of losing sessions up to the valuation scales every budget share
        pnl = navs[navs["book"] == book]["daily_pnl"].to_numpy(float)[::-1]
        streak = int(np.argmax(pnl >= 0)) if (pnl >= 0).any() else len(pnl)
        return emergency.loss_streak_budget_factor if streak >= emergency.loss_streak_sessions else 1.0

    expected_names = {(b, f"risk_budget:{s}") for b in var.index if b in config for s in config[b]}
    assert set(zip(budgets["book"], budgets["limit_name"], strict=True)) == expected_names and expected_names
    for r in budgets.itertuples():
        strategy = r.limit_name.removeprefix("risk_budget:")
        g = greeks[greeks["book"] == r.book].assign(e=lambda f: f["dollar_delta"].abs())
        c = contrib[contrib["book"] == r.book].set_index("symbol")["component_var"]
        # by hand: each symbol's component VaR split over the strategies holding it by |dollar delta|
        per = g.groupby(["symbol", "strategy"])["e"].sum()
        share = per / per.groupby(level="symbol").transform("sum")
        weighted = share * c.reindex(share.index.get_level_values("symbol")).to_numpy()
        value = float(weighted.xs(strategy, level="strategy").sum()) if strategy in set(g["strategy"]) else 0.0
        threshold = config[r.book][strategy] * factor(r.book) * var[r.book]
        warn = limits.for_book(r.book).warning_fraction * threshold
        assert r.value == pytest.approx(value, rel=1e-9, abs=1e-9)
        assert (r.threshold, r.warn_threshold) == (pytest.approx(threshold, rel=1e-12), pytest.approx(warn, rel=1e-12))
        assert r.utilization == pytest.approx(value / threshold, rel=1e-9, abs=1e-12)
        assert r.status == ("BREACH" if value > threshold else "WARN" if value > warn else "OK")
    # the sizing layer judged the same budgets (each recommendation's inputs.risk_budget)
    rec = _latest(wh, "position_sizing").query("method == 'recommended'")
    for r in rec.itertuples():
        b = json.loads(r.inputs)["risk_budget"]
        if b is not None:
            row = budgets[(budgets["book"] == r.book) & (budgets["limit_name"] == "risk_budget:" + b["strategy"])]
            assert row["value"].iloc[0] == pytest.approx(b["component_var"], rel=1e-9)
            assert row["status"].iloc[0] == b["status"]


def test_high_and_critical_stress_rows_carry_recommendations(run: Run) -> None:
    wh, _ = run
    severe = _check_stress_recommendations(wh, load_scenarios(SCENARIOS_FILE).thresholds.high)
    if severe.empty:
        pytest.skip("no HIGH or CRITICAL scenario in this run: only the empty lists were checked")


def test_recommendations_with_risk_levels_low_enough_that_rows_are_severe(run: Run, tmp_path: Path) -> None:
    """The same checks on a copy of the run whose stress step ran with the library's risk levels at a tenth,
    so that HIGH and CRITICAL rows exist whatever the synthetic market did."""
    import yaml

    from risk_pipeline.defs.risk.stress import stress_tests
    from risk_pipeline.resources import WarehouseResource

    source, _ = run
    url = str(tmp_path / "copy.duckdb")
    shutil.copy(source.url, url)
    library = yaml.safe_load(Path(SCENARIOS_FILE).read_text())
    library["version"] = f"{library['version']}-test-levels"
    library["risk_levels"] = {k: v / 10.0 for k, v in library["risk_levels"].items()}
    scenarios = tmp_path / "scenarios.yaml"
    scenarios.write_text(yaml.safe_dump(library, sort_keys=False))
    result = dg.materialize(
        [stress_tests],
        partition_key=SESSION.isoformat(),
        resources={"warehouse": WarehouseResource(url=url)},
        run_config={"ops": {"stress_tests": {"config": {"scenarios_file": str(scenarios)}}}},
    )
    assert result.success
    severe = _check_stress_recommendations(Warehouse(url), load_scenarios(str(scenarios)).thresholds.high)
    assert not severe.empty and set(severe["risk_level"]) <= {"HIGH", "CRITICAL"}


def _check_stress_recommendations(wh: Warehouse, high: float) -> pd.DataFrame:
    """Every latest stress_results row's recommendations against their formulas; returns the HIGH/CRITICAL rows."""
    rows = _latest(wh, "stress_results")
    assert "recommendations" in rows
    severe = rows[rows["risk_level"].isin(["HIGH", "CRITICAL"])]
    closes = wh.read("market_prices", {"symbol": "SYNX"}).query("as_of_date <= @SESSION")
    spot = float(closes.sort_values("as_of_date")["close"].iloc[-1]) if len(closes) else None
    for r in rows.itertuples():
        recs = json.loads(r.recommendations)
        if r.risk_level not in ("HIGH", "CRITICAL"):
            assert recs == []
            continue
        book = recs[0]
        assert book["action"] == "reduce_book"
        assert book["cut_fraction"] == pytest.approx(1 - high / r.pnl_pct_nav, rel=1e-12)
        assert book["loss_after_at_most"] == pytest.approx(-high * r.nav, rel=1e-9)
        excess = -r.pnl + high * r.nav
        names = [x for x in recs if x["action"] == "reduce_name"]
        assert bool(names) == bool(r.worst_symbol_pnl < 0 and -r.worst_symbol_pnl >= excess)
        for x in names:
            assert x["symbol"] == r.worst_symbol
            assert x["cut_fraction"] == pytest.approx(excess / -r.worst_symbol_pnl, rel=1e-12)
        index = [x for x in recs if x["action"] == "index_hedge"]
        assert bool(index) == (r.spot_shock != 0 and spot is not None)
        for x in index:  # the index's close of the session, against the scenario's index move
            assert (x["symbol"], x["index_spot"], x["index_move"]) == ("SYNX", spot, r.spot_shock)
            assert x["side"] == ("sell" if r.spot_shock < 0 else "buy")
            assert x["quantity"] == math.ceil(excess / (spot * abs(r.spot_shock)) - 1e-9)
    return severe


@pytest.mark.postgres
def test_compliance_report_identical_on_postgres(run: Run, pg_server_url: str) -> None:
    duck, _ = run
    pg = Warehouse(pg_server_url)
    pg.execute("DROP SCHEMA IF EXISTS risk CASCADE")
    pg.ensure_tables()
    for name, t in TABLES.items():
        if duck.table_exists(name) and duck.row_count(name):
            (pg.append if t.append_only else pg.write)(name, duck.read(name), run_id="copy")
    rules = load_rules(COMPLIANCE_RULES_FILE)
    books = sorted(_latest(duck, "book_nav")["book"])
    for book in books:
        a, b = build_report(duck, SESSION, book, rules), build_report(pg, SESSION, book, rules)
        ra, rb = a.row(rules.version, None), b.row(rules.version, None)
        assert ra == rb, book
        pd.testing.assert_frame_equal(a.frames["limits"], b.frames["limits"], check_dtype=False)


def test_pre_trade_stops_adding_to_a_strategy_over_its_budget(run: Run, tmp_path: Path) -> None:
    """A strategy put in BREACH of its budget at the valuation: an order adding to one of its positions is
    rejected with the budget named, the same order reducing it passes, another strategy's order is untouched.
    """
    source, _ = run
    target = tmp_path / "copy" / "risk_warehouse.duckdb"
    target.parent.mkdir()
    shutil.copy(source.url, target)
    wh = Warehouse(str(target))
    greeks = _latest(wh, "position_greeks").query("book == 'core_equity' and quantity.abs() >= 2")
    budgeted = set(load_sizing_config().risk_budgets["core_equity"])
    held = greeks[greeks["strategy"].isin(budgeted)].sort_values("position_id").iloc[0]
    strategy = str(held["strategy"])
    as_of = pd.Timestamp(held["as_of"])
    # without the sizing layer's recommendations (which apply the same budgets to stock orders) the budget check
    # itself decides
    wh.write(
        "position_sizing",
        wh.read("position_sizing", {"as_of": as_of}).iloc[0:0],
        run_id="t",
        partitions=[{"as_of": as_of}],
    )
    clock = lambda: as_of + pd.Timedelta(minutes=1)  # noqa: E731
    side_adding = "buy" if held["quantity"] > 0 else "sell"
    side_reducing = "sell" if side_adding == "buy" else "buy"
    pid = str(held["position_id"])
    status = wh.read("limit_status", {"as_of": as_of, "book": "core_equity"})
    name = "risk_budget:" + strategy
    assert name in set(status["limit_name"])
    status.loc[status["limit_name"] == name, "status"] = "OK"
    wh.write("limit_status", status, run_id="test")
    before = PreTradeService(wh, max_valuation_age_sessions=10_000, clock=clock)
    base = before.check("core_equity", side_adding, 1, position_id=pid, record=False)
    assert not any("risk budget" in r for r in base.reasons)
    status.loc[status["limit_name"] == name, "status"] = "BREACH"
    wh.write("limit_status", status, run_id="test")
    service = PreTradeService(wh, max_valuation_age_sessions=10_000, clock=clock)
    adding = service.check("core_equity", side_adding, 1, position_id=pid, record=False)
    assert adding.decision == "reject" and adding.approved_quantity == 0
    assert base.decision != "reject", base.reasons  # without the breach the order passes: the budget rejects it
    assert any(f"risk budget: strategy {strategy} component VaR" in r for r in adding.reasons), adding.reasons
    reducing = service.check("core_equity", side_reducing, 1, position_id=pid, record=False)
    assert not any("risk budget" in r for r in reducing.reasons)
    others = greeks[greeks["strategy"] != strategy]
    if len(others):
        other_id = str(others["position_id"].iloc[0])
        other = service.check("core_equity", side_adding, 1, position_id=other_id, record=False)
        assert not any("risk budget" in r for r in other.reasons)
