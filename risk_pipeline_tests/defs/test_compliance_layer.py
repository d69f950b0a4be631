"""The compliance group on the shared end-of-day run: compliance reports, the HTML report, alerts, manual
controls through check-trade and the trading state, and the downstream views on DuckDB and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from risk_pipeline import controls
from risk_pipeline.calendar import sessions
from risk_pipeline.cli import main
from risk_pipeline.contracts import TABLES
from risk_pipeline.defs.compliance.report import build_report
from risk_pipeline.paths import COMPLIANCE_RULES_FILE, SQL_MODELS_DIR
from risk_pipeline.quant.compliance import load_rules
from risk_pipeline.quant.trading_state import HALTED, MANUAL_HALT
from risk_pipeline.sql_models import apply_models
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.defs.conftest import SESSION

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


def _copy(run: tuple[Warehouse, dg.ExecuteInProcessResult], tmp_path: Path) -> Warehouse:
    source, _ = run
    target = tmp_path / "copy" / "risk_warehouse.duckdb"
    target.parent.mkdir()
    shutil.copy(source.url, target)
    return Warehouse(str(target))


def _check_trade(capsys: pytest.CaptureFixture[str], book: str, position_id: str) -> tuple[int, dict]:
    code = main(
        [
            *("check-trade", "--book", book, "--side", "sell", "--quantity", "1"),
            *("--position-id", position_id, "--max-age-sessions", "10000"),
        ]
    )
    return code, json.loads(capsys.readouterr().out)


def test_halt_and_resume_round_trip_through_check_trade(
    run: tuple[Warehouse, dg.ExecuteInProcessResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wh = _copy(run, tmp_path)
    monkeypatch.setenv("RISK_PIPELINE_WAREHOUSE_URL", wh.url)
    stocks = wh.query(
        "SELECT position_id FROM risk.position_greeks WHERE book = 'core_equity' AND instrument_type = 'stock' "
        "AND quantity >= 1 ORDER BY position_id"
    )
    position = str(stocks["position_id"].iloc[0])
    code, before = _check_trade(capsys, "core_equity", position)
    assert code in (0, 3), before  # selling one share reduces risk: allowed even in REDUCING
    assert main(["halt", "--book", "core_equity", "--reason", "desk review of fills", "--actor", "carol"]) == 0
    halted = json.loads(capsys.readouterr().out)
    assert (halted["action"], halted["actor"]) == ("halt", "carol")
    code, during = _check_trade(capsys, "core_equity", position)
    assert code == 4
    assert during["decision"] == "reject" and "desk review of fills" in during["reasons"][0]
    assert "manual halt of book core_equity by carol" in during["reasons"][0]
    code, other = _check_trade(capsys, "vol_overlay", _first_position(wh, "vol_overlay"))
    assert "manual halt" not in " ".join(other["reasons"])  # only the halted book is stopped
    assert main(["resume", "--book", "core_equity", "--reason", "fills reconciled", "--actor", "carol"]) == 0
    assert json.loads(capsys.readouterr().out)["was_halted"] is True
    code, after = _check_trade(capsys, "core_equity", position)
    assert code in (0, 3), after
    assert main(["emergency-stop", "--reason", "exchange outage", "--actor", "dave"]) == 0
    capsys.readouterr()
    code, stopped = _check_trade(capsys, "vol_overlay", _first_position(wh, "vol_overlay"))
    assert code == 4 and "manual emergency stop of every book by dave" in stopped["reasons"][0]
    decisions = wh.read("audit_trail", {"decision_type": "manual_control"}, order_by=["at"])
    assert list(decisions["decision"]) == ["halt", "resume", "emergency_stop"]


def _first_position(wh: Warehouse, book: str) -> str:
    got = wh.query("SELECT MIN(position_id) AS p FROM risk.position_greeks WHERE book = ?", [book])
    return str(got["p"].iloc[0])


def test_next_trading_state_run_honors_the_halt(
    run: tuple[Warehouse, dg.ExecuteInProcessResult], tmp_path: Path
) -> None:
    from risk_pipeline.defs.exposures.limits import risk_limits
    from risk_pipeline.resources import WarehouseResource

    wh = _copy(run, tmp_path)
    session = "2026-11-20"
    as_of = wh.query("SELECT MAX(as_of) AS t FROM risk.trading_state")["t"].iloc[0]
    before = wh.read("trading_state", {"book": "core_equity"})["state"].iloc[0]
    controls.halt(wh, "core_equity", "compliance hold", "erin", at=pd.Timestamp(as_of) - pd.Timedelta(hours=1))
    result = dg.materialize(
        [risk_limits], partition_key=session, resources={"warehouse": WarehouseResource(url=wh.url)}
    )
    assert result.success
    state = wh.read("trading_state", {"book": "core_equity"}).iloc[0]
    assert state["state"] == HALTED
    assert "compliance hold" in state["reason"] and MANUAL_HALT in json.loads(state["triggering_limits"])
    assert wh.read("trading_state", {"book": "vol_overlay"})["state"].iloc[0] != HALTED
    controls.resume(wh, "core_equity", "hold lifted", "erin", at=pd.Timestamp(as_of) - pd.Timedelta(minutes=30))
    assert dg.materialize(
        [risk_limits], partition_key=session, resources={"warehouse": WarehouseResource(url=wh.url)}
    ).success
    assert wh.read("trading_state", {"book": "core_equity"})["state"].iloc[0] == before


# ---------------------------------------------------------------------- compliance reports
def _expected_violations(wh: Warehouse, book: str) -> set[tuple[str, str]]:
    """(rule, subject) the default rules must find, computed here from the tables without the compliance code."""
    as_of = wh.query("SELECT MAX(as_of) AS t FROM risk.book_nav WHERE book = ?", [book])["t"].iloc[0]
    nav = float(wh.read("book_nav", {"book": book, "as_of": as_of})["nav"].iloc[0])
    greeks = wh.read("position_greeks", {"book": book, "as_of": as_of})
    expected = set()
    largest = greeks.loc[greeks["dollar_delta"].abs().idxmax()]
    if abs(largest["dollar_delta"]) / nav > 0.10:
        expected.add(("position_pct_nav", str(largest["position_id"])))
    var = wh.read("var_results", {"book": book, "as_of": as_of, "method": "historical", "horizon_days": 1})
    var99 = float(var.loc[np.isclose(var["confidence"], 0.99), "var"].iloc[0])
    if var99 / nav > 0.02:
        expected.add(("var_pct_nav", "VaR 99% 1-day (historical)"))
    limits = wh.read("limit_status", {"book": book, "as_of": as_of})
    expected |= {("limit_breach", n) for n in limits.loc[limits["status"] == "BREACH", "limit_name"]}
    if wh.read("trading_state", {"book": book, "as_of": as_of})["state"].iloc[0] == HALTED:
        expected.add(("trading_halted", "trading_state"))
    return expected


@pytest.fixture(scope="module")
def breach_run(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    """A copy of the run whose limits and compliance steps ran again with vol_overlay's position cap
    (max_position_pct_gross) at 90 % of the book's value in the run, so that a book is in BREACH of a position
    cap with required reductions whatever the synthetic market did (the run itself may have no such breach)."""
    import yaml

    from risk_pipeline.defs.compliance.assets import compliance_reports
    from risk_pipeline.defs.exposures.limits import risk_limits
    from risk_pipeline.paths import LIMITS_FILE
    from risk_pipeline.resources import ExportsResource, WarehouseResource

    source, _ = run
    root = tmp_path_factory.mktemp("breach")
    url = str(root / "risk_warehouse.duckdb")
    shutil.copy(source.url, url)
    status = Warehouse(url).read("limit_status", {"book": "vol_overlay", "limit_name": "max_position_pct_gross"})
    value = float(status.sort_values("as_of")["value"].iloc[-1])
    limits = yaml.safe_load(Path(LIMITS_FILE).read_text())
    limits["version"] = f"{limits['version']}-test-breach"
    limits["books"]["vol_overlay"]["max_position_pct_gross"] = round(0.9 * value, 6)
    limits_file = root / "limits.yaml"
    limits_file.write_text(yaml.safe_dump(limits, sort_keys=False))
    result = dg.materialize(
        [risk_limits, compliance_reports],
        partition_key=SESSION.isoformat(),
        resources={"warehouse": WarehouseResource(url=url), "exports": ExportsResource(root=str(root / "exports"))},
        run_config={"ops": {"risk_limits": {"config": {"limits_file": str(limits_file)}}}},
    )
    assert result.success
    return Warehouse(url)


def test_compliance_reports_of_the_run(run: Run, breach_run: Warehouse) -> None:
    wh, result = run
    assert result.success
    reports = wh.read("compliance_reports", {"report_date": SESSION}).set_index("book")
    assert sorted(reports.index) == ["core_equity", "vol_overlay"]
    for book, row in reports.iterrows():
        violations = json.loads(row["violations"])
        expected = _expected_violations(wh, str(book))
        assert {(v["rule"], v["subject"]) for v in violations} == expected, book
        majors = [v for v in violations if v["severity"] == "major"]
        assert row["status"] == ("major_violations" if majors else "minor_violations" if violations else "compliant")
        assert row["n_major"] == len(majors)
        for v in violations:  # one session of valuations: every violation started today
            assert (v["since"], v["duration_sessions"]) == (SESSION.isoformat(), 1)
    # the book in BREACH of a position cap (with required reductions): major, with the breach, its numbers and the
    # actions taken (on the copy with a tighter cap: the run's market need not breach one)
    wh = breach_run
    reports = wh.read("compliance_reports", {"report_date": SESSION}).set_index("book")
    for book, row in reports.iterrows():
        assert {(v["rule"], v["subject"]) for v in json.loads(row["violations"])} == _expected_violations(wh, str(book))
    reductions = wh.read("required_reductions", {"as_of": wh.read("required_reductions")["as_of"].max()})
    book = str(reductions["book"].iloc[0])
    reductions = reductions[reductions["book"] == book]
    core = reports.loc[book]
    assert core["status"] == "major_violations"
    breach = next(
        v
        for v in json.loads(core["violations"])
        if v["rule"] == "limit_breach" and not v["subject"].startswith("risk_budget:")
    )
    limit = wh.read("limit_status", {"book": book, "limit_name": breach["subject"]}).iloc[0]
    assert (breach["value"], breach["threshold"]) == pytest.approx((limit["value"], limit["threshold"]))
    actions = json.loads(core["actions"])
    assert {"state_change", "required_reduction"} <= {a["type"] for a in actions}
    assert {a["position_id"] for a in actions if a["type"] == "required_reduction"} == set(reductions["position_id"])
    assert breach["recommendations"] and json.loads(core["recommendations"])
    page = Path(core["report_path"]).read_text()
    assert "major_violations" in page and breach["subject"] in page
    assert page.count("<img") >= 3  # Greeks by underlying, stress heat map, limit utilization (+ VaR history)


def _shift(frame: pd.DataFrame, days: int, session: dt.date) -> pd.DataFrame:
    out = frame.copy()
    for column in ("as_of",):
        if column in out:
            out[column] = out[column] - pd.Timedelta(days=days)
    if "as_of_date" in out:
        out["as_of_date"] = session
    return out


def test_book_held_in_breach_for_three_sessions(breach_run: Warehouse, tmp_path: Path) -> None:
    """Two earlier valuations in the same breach (today's rows carried back): duration 3, since the first;
    the reduction asked for at the previous valuation and not executed is a violation of its own (on the copy
    of the run with a position cap in BREACH)."""
    target = tmp_path / "copy" / "risk_warehouse.duckdb"
    target.parent.mkdir()
    shutil.copy(breach_run.url, target)
    wh = Warehouse(str(target))
    earlier = [d for d in sessions(SESSION - dt.timedelta(days=10), SESSION) if d < SESSION][-2:]
    as_of = wh.query("SELECT MAX(as_of) AS t FROM risk.book_nav")["t"].iloc[0]
    for session in earlier:
        days = (SESSION - session).days
        for name in ("book_nav", "position_greeks", "limit_status", "trading_state", "var_results"):
            wh.write(name, _shift(wh.read(name, {"as_of": as_of}), days, session), run_id="test")
    previous_as_of = pd.Timestamp(as_of) - pd.Timedelta(days=(SESSION - earlier[-1]).days)
    asked = wh.read("required_reductions", {"as_of": as_of})
    book = str(asked["book"].iloc[0])  # a book in BREACH of a position cap, asked to reduce
    asked["as_of"] = previous_as_of
    wh.write("required_reductions", asked, run_id="test")
    asked = asked[asked["book"] == book]
    report = build_report(wh, SESSION, book, load_rules(COMPLIANCE_RULES_FILE))
    assert report.status == "major_violations"
    breach = next(v for v in report.violations if v.rule == "limit_breach" and not v.subject.startswith("risk_budget:"))
    assert (breach.duration_sessions, breach.since) == (3, earlier[0])
    unexecuted = [v for v in report.violations if v.rule == "unexecuted_reductions"]
    assert {v.subject for v in unexecuted} == set(asked["position_id"])
    assert all(v.duration_sessions == 1 and v.recommendations for v in unexecuted)


# ---------------------------------------------------------------------- alerts of the run
def test_run_alerts_to_the_log_once_per_cooldown(run: Run, tmp_path: Path) -> None:
    wh, _ = run
    alerts = wh.read("alerts")
    assert set(alerts["channel"]) == {"log"} and set(alerts["delivery_status"]) == {"delivered"}
    limits = wh.read("limit_status")
    budget = limits["limit_name"].str.startswith("risk_budget:")  # strategy VaR budgets alert under their own rule
    breaches = limits[(limits["status"] == "BREACH") & ~budget]
    over = alerts[alerts["rule"] == "risk_budget"]
    assert set(
        zip(over["book"], over["subject"].str.extract(r": (risk_budget:\w+) ")[0], over["level"], strict=True)
    ) == {
        (r.book, r.limit_name, {"WARN": "INFO", "BREACH": "WARNING"}[r.status])
        for r in limits[budget & limits["status"].isin(["WARN", "BREACH"])].itertuples()
    }
    position = alerts[alerts["rule"] == "position_limit"]
    critical = position[position["level"] == "CRITICAL"]
    assert set(zip(critical["book"], critical["subject"].str.extract(r": (\w+) BREACH")[0], strict=True)) == set(
        zip(breaches["book"], breaches["limit_name"], strict=True)
    )
    from risk_pipeline.alerts import load_config
    from risk_pipeline.paths import DATA_DIR

    rule = next(r for r in load_config(DATA_DIR / "alerts.yaml").rules if r.name == "position_limit")
    names = rule.where["limit_name"]["in"]
    warned = limits[(limits["status"] == "WARN") & limits["limit_name"].isin(names)]
    assert set(position.loc[position["level"] == "WARNING", "book"]) == set(warned["book"])
    compliance = alerts[alerts["rule"] == "compliance_status"].set_index("book")
    assert compliance.loc["core_equity", "level"] == "CRITICAL"
    # the same open conditions again inside the cooldown: nothing new is sent
    copy = _copy(run, tmp_path)
    from risk_pipeline.defs.compliance.assets import alerts as alerts_asset
    from risk_pipeline.resources import WarehouseResource

    again = dg.materialize(
        [alerts_asset],
        partition_key=SESSION.isoformat(),
        resources={"warehouse": WarehouseResource(url=copy.url)},
    )
    assert again.success
    assert copy.row_count("alerts") == len(alerts)


# ---------------------------------------------------------------------- views on both engines
VIEWS = (
    "risk_dashboard",
    "open_limit_breaches",
    "greeks_by_underlying_latest",
    "var_history",
    "correlation_latest",
    "hedge_effectiveness",
)


def _view(wh: Warehouse, name: str) -> pd.DataFrame:
    frame = wh.query(f"SELECT * FROM risk.{name}")
    for c in frame.columns:
        if (
            frame[c].dtype == object
            and len(frame)
            and isinstance(frame[c].dropna().iloc[0] if frame[c].notna().any() else None, dt.datetime)
        ):
            frame[c] = pd.to_datetime(frame[c], utc=True)
        elif pd.api.types.is_datetime64_any_dtype(frame[c]):
            frame[c] = pd.to_datetime(frame[c], utc=True)
    keys = [
        c
        for c in (
            "book",
            "limit_name",
            "underlying",
            "method",
            "confidence",
            "horizon_days",
            "var_date",
            "origin",
            "symbol_a",
            "symbol_b",
            "position_id",
        )
        if c in frame
    ]
    return frame.sort_values(keys).reset_index(drop=True)


def test_views_against_the_tables_on_duckdb(run: Run) -> None:
    wh, _ = run
    apply_models(wh, SQL_MODELS_DIR)
    dash = _view(wh, "risk_dashboard").set_index("book")
    nav = wh.read("book_nav").set_index("book")
    state = wh.read("trading_state").set_index("book")
    limits = wh.read("limit_status")
    stress = wh.read("stress_results")
    reports = wh.read("compliance_reports").set_index("book")
    for book in ("core_equity", "vol_overlay"):
        row = dash.loc[book]
        assert row["nav"] == pytest.approx(nav.loc[book, "nav"]) and row["state"] == state.loc[book, "state"]
        assert row["open_breaches"] == ((limits["book"] == book) & (limits["status"] == "BREACH")).sum()
        assert row["worst_stress_pnl"] == pytest.approx(stress.loc[stress["book"] == book, "pnl"].min())
        assert row["compliance_status"] == reports.loc[book, "status"]
        assert row["open_alerts"] >= 1 if book == "core_equity" else True
    breaches = _view(wh, "open_limit_breaches")
    expected = limits[limits["status"] == "BREACH"].sort_values(["book", "limit_name"])
    assert list(zip(breaches["book"], breaches["limit_name"], strict=True)) == list(
        zip(expected["book"], expected["limit_name"], strict=True)
    )
    assert (breaches["breach_valuations"] == 1).all()
    greeks = _view(wh, "greeks_by_underlying_latest")
    table = wh.read("portfolio_greeks", {"scope": "underlying"}).sort_values(["book", "scope_value"])
    np.testing.assert_allclose(greeks["dollar_delta"], table["dollar_delta"])
    assert list(greeks["underlying"]) == list(table["scope_value"])
    history = _view(wh, "var_history")
    observations = wh.row_count("var_backtest_observations")
    assert (history["origin"] == "backtest").sum() == observations
    assert (
        history.loc[history["origin"] == "backtest", "exception"].sum()
        == wh.query("SELECT COUNT(*) AS n FROM risk.var_backtest_observations WHERE exception")["n"].iloc[0]
    )
    corr = _view(wh, "correlation_latest")
    held = sorted(wh.read("positions")["symbol"].unique())
    closes = wh.read("market_prices").pivot(index="as_of_date", columns="symbol", values="close")[held]
    returns = np.log(closes.tail(64)).diff().iloc[1:]
    oracle = np.corrcoef(returns.to_numpy().T)
    got = corr.pivot(index="symbol_a", columns="symbol_b", values="correlation").loc[held, held]
    np.testing.assert_allclose(got.to_numpy(), oracle, atol=1e-10)
    assert (corr["n_returns"] == 63).all()
    hedges = _view(wh, "hedge_effectiveness")
    performance = wh.read("hedge_performance")
    if len(performance):
        latest = performance.groupby("book")["as_of"].transform("max")
        expected = performance[performance["as_of"] == latest].sort_values(["book", "position_id"])
        assert list(zip(hedges["book"], hedges["position_id"], strict=True)) == list(
            zip(expected["book"], expected["position_id"], strict=True)
        )
        np.testing.assert_allclose(hedges["hedge_pnl_cum"], expected["hedge_pnl_cum"])
    else:
        assert hedges.empty


@pytest.mark.postgres
def test_views_identical_on_postgres(run: Run, pg_server_url: str) -> None:
    duck, _ = run
    apply_models(duck, SQL_MODELS_DIR)
    pg = Warehouse(pg_server_url)
    pg.execute("DROP SCHEMA IF EXISTS risk CASCADE")
    pg.ensure_tables()
    for name, t in TABLES.items():
        if not duck.table_exists(name) or not duck.row_count(name):
            continue
        rows = duck.read(name)
        if t.append_only:
            pg.append(name, rows, run_id="copy")
        else:
            pg.write(name, rows, run_id="copy")
    apply_models(pg, SQL_MODELS_DIR)
    for name in VIEWS:
        a, b = _view(duck, name), _view(pg, name)
        assert list(a.columns) == list(b.columns), name
        assert len(a) == len(b) and (len(a) > 0 or name == "hedge_effectiveness"), name
        pd.testing.assert_frame_equal(a, b, check_dtype=False, check_exact=False, rtol=1e-9, obj=name)


# ---------------------------------------------------------------------- rules (pure)
def test_rules_file_is_validated_like_the_limits_file() -> None:
    from risk_pipeline.quant.compliance import RulesError, parse_rules

    bad = {
        "retention_days": 0,
        "colour": "red",
        "rules": {
            "var_pct_nav": {"severity": "huge", "threshold": 2.0},
            "nonsense": {"severity": "minor"},
            "warn_persistent": {"severity": "minor", "sessions": 2.5},
        },
        "emergency": {"vol_spike_multiple": 0.5},
    }
    with pytest.raises(RulesError) as info:
        parse_rules(bad, "rules.yaml")
    text = str(info.value)
    for needle in (
        "rules.yaml",
        "retention_days",
        "unknown key 'colour'",
        "rules.var_pct_nav.severity",
        "rules.var_pct_nav.threshold",
        "rules.nonsense: unknown rule",
        "rules.warn_persistent.sessions",
        "emergency.vol_spike_multiple",
    ):
        assert needle in text, needle
    rules = load_rules(COMPLIANCE_RULES_FILE)
    assert rules.rules["position_pct_nav"].settings["threshold"] == 0.10
    assert rules.rules["var_pct_nav"].settings["threshold"] == 0.02
    assert rules.retention_days == 365


def test_durations_and_status_from_session_arrays() -> None:
    from risk_pipeline.quant.compliance import ComplianceInputs, LimitHistory, evaluate, status_of

    days = [dt.date(2026, 11, d) for d in (16, 17, 18, 19, 20)]
    nav = np.full(5, 1e6)
    inputs = ComplianceInputs(
        book="b",
        sessions=days,
        nav=nav,
        var_99=np.array([0.03, 0.01, 0.025, 0.025, 0.025]) * 1e6,  # above 2 % for the last three sessions
        max_position_exposure=np.array([0.05, 0.05, 0.05, 0.05, 0.05]) * 1e6,
        largest_position="p1",
        limits=[
            LimitHistory("a", ["WARN", "WARN", "WARN", "WARN", "WARN"], 0.9, 1.0),  # 5 > 3 sessions: minor
            LimitHistory("c", [None, "OK", "WARN", "WARN", "WARN"], 0.9, 1.0),  # 3, not more than 3
            LimitHistory("d", ["BREACH", "OK", "OK", "BREACH", "BREACH"], 1.2, 1.0),
        ],
        states=["ACTIVE"] * 5,
        state_reason="ok",
    )
    rules = load_rules(COMPLIANCE_RULES_FILE)
    got = {(v.rule, v.subject): v for v in evaluate(inputs, rules)}
    assert set(got) == {("var_pct_nav", "VaR 99% 1-day (historical)"), ("warn_persistent", "a"), ("limit_breach", "d")}
    assert (got[("var_pct_nav", "VaR 99% 1-day (historical)")].duration_sessions, got[("limit_breach", "d")].since) == (
        3,
        days[3],
    )
    assert got[("warn_persistent", "a")].severity == "minor" and got[("warn_persistent", "a")].duration_sessions == 5
    assert status_of(list(got.values())) == "major_violations"
    assert status_of([got[("warn_persistent", "a")]]) == "minor_violations" and status_of([]) == "compliant"


def test_retention_removes_old_report_partitions_and_audits_it(tmp_path: Path) -> None:
    from risk_pipeline.defs.compliance.assets import cleanup_reports

    wh = Warehouse(str(tmp_path / "w" / "risk_warehouse.duckdb"))
    wh.ensure_tables(["compliance_reports", "audit_trail"])
    files = {}
    for day in (dt.date(2025, 11, 19), dt.date(2025, 11, 21), dt.date(2026, 11, 20)):
        path = tmp_path / "reports" / day.isoformat() / "core.html"
        path.parent.mkdir(parents=True)
        path.write_text("<html></html>")
        files[day] = path
        row = {
            "report_date": day,
            "book": "core",
            "as_of": pd.Timestamp(day.isoformat() + "T20:45:00Z"),
            "status": "compliant",
            "n_minor": 0,
            "n_major": 0,
            "violations": "[]",
            "actions": "[]",
            "recommendations": "[]",
            "rules_version": "t",
            "report_path": str(path),
        }
        wh.write("compliance_reports", pd.DataFrame([row]), run_id="t")
    removed = cleanup_reports(wh, dt.date(2026, 11, 20), 365, tmp_path, "t")
    assert removed == ["2025-11-19"]  # more than 365 days before 2026-11-20; 2025-11-21 is kept
    assert sorted(wh.read("compliance_reports")["report_date"]) == [dt.date(2025, 11, 21), dt.date(2026, 11, 20)]
    assert not files[dt.date(2025, 11, 19)].exists() and files[dt.date(2025, 11, 21)].exists()
    audit = wh.read("audit_trail", {"decision_type": "retention_cleanup"})
    assert list(audit["subject"]) == ["compliance_reports 2025-11-19"]
    assert json.loads(audit["inputs"].iloc[0])["files"] == [str(files[dt.date(2025, 11, 19)])]


def test_stress_recommendation_brings_the_loss_to_the_high_level() -> None:
    from risk_pipeline.quant.compliance import stress_recommendations

    recs = stress_recommendations(
        [
            ("crash", "CRITICAL", -80_000.0, -0.08, "AAA", -40_000.0),  # excess 30,000: AAA's 40,000 covers it
            ("dip", "HIGH", -60_000.0, -0.06, "BBB", -5_000.0),  # excess 10,000: BBB alone does not
            ("calm", "MEDIUM", -30_000.0, -0.03, None, None),
        ],
        high_threshold=-0.05,
        nav=1_000_000.0,
    )
    assert len(recs) == 2
    assert "cut the book by at least 37.5%" in recs[0] and "reduce AAA" in recs[0] and "30,000 must go" in recs[0]
    assert "cut the book by at least 16.7%" in recs[1] and "reduce BBB" not in recs[1]  # 1 - 0.05/0.06
