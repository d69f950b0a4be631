"""One book's compliance report from a small hand-made warehouse: the numbers by hand, and the same report on
DuckDB and PostgreSQL (the report reads everything but the NAV history in one UNION ALL query)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from risk_pipeline.contracts import table
from risk_pipeline.defs.compliance.report import build_report
from risk_pipeline.paths import COMPLIANCE_RULES_FILE
from risk_pipeline.quant.compliance import load_rules
from risk_pipeline.queries import AUDIT_COLUMNS, audit_row
from risk_pipeline.warehouse import Warehouse

DAYS = [dt.date(2026, 11, d) for d in (16, 17, 18, 19, 20)]
BOOK = "b"
_DEFAULTS: dict[str, Any] = {"text": "x", "double": 0.0, "bigint": 0, "boolean": False, "json": "[]"}


def _frame(name: str, n: int, **columns: Any) -> pd.DataFrame:
    out = {}
    for c in table(name).columns:
        if c.name in columns:
            out[c.name] = columns[c.name]
        else:
            out[c.name] = [_DEFAULTS.get(c.type) if not c.nullable else None] * n
    return pd.DataFrame(out)


def _as_of(day: dt.date) -> pd.Timestamp:
    return pd.Timestamp(f"{day.isoformat()}T21:00:00Z")


def _fill(wh: Warehouse) -> None:
    wh.ensure_tables()
    for i, day in enumerate(DAYS):
        t = _as_of(day)
        nav = 1e6
        # P2's delta-adjusted exposure is 150,000 = 15 % of NAV from the third session on (rule: 10 %)
        big = 150_000.0 if i >= 2 else 50_000.0
        writes = {
            "book_nav": _frame("book_nav", 1, as_of=t, as_of_date=day, book=BOOK, nav=nav, peak_nav=nav, capital=nav),
            "position_greeks": _frame(
                "position_greeks",
                2,
                as_of=t,
                as_of_date=day,
                book=BOOK,
                position_id=["P1", "P2"],
                symbol=["AAA", "BBB"],
                quantity=[100.0, 1_000.0],
                dollar_delta=[20_000.0, big],
                instrument_type="stock",
                pricing_model="stock",
                expiry_bucket="none",
                strategy="long_stock",
            ),
            "var_results": _frame(
                "var_results",
                1,
                as_of=t,
                as_of_date=day,
                book=BOOK,
                method="historical",
                horizon_days=1,
                confidence=0.99,
                var=15_000.0,
                expected_shortfall=18_000.0,
            ),
            "limit_status": _frame(
                "limit_status",
                2,
                as_of=t,
                book=BOOK,
                limit_name=["max_var_99_1d", "risk_budget:long_stock"],
                value=[15_000.0, 15_000.0],
                threshold=[20_000.0, 12_000.0],
                warn_threshold=[16_000.0, 9_600.0],
                utilization=[0.75, 1.25],
                status=["OK", "BREACH" if i >= 3 else "WARN"],
                limits_version="v",
            ),
            "trading_state": _frame("trading_state", 1, as_of=t, book=BOOK, state="ACTIVE", reason="all clear"),
        }
        for name, rows in writes.items():
            wh.write(name, rows, run_id="t")
    t = _as_of(DAYS[-1])
    wh.write(
        "stress_results",
        _frame(
            "stress_results",
            2,
            as_of=t,
            book=BOOK,
            scenario_id=["crash", "gap"],
            risk_level=["CRITICAL", "HIGH"],
            pnl=[-120_000.0, -60_000.0],
            pnl_pct_nav=[-0.12, -0.06],
            nav=1e6,
            worst_symbol=["BBB", "AAA"],
            worst_symbol_pnl=[-90_000.0, -50_000.0],
            spot_shock=[-0.2, 0.0],
            recommendations=[json.dumps([{"action": "reduce_book", "text": "cut every position by 58.3%"}]), None],
        ),
        run_id="t",
    )
    wh.append(
        "audit_trail",
        pd.DataFrame(
            [audit_row(_as_of(DAYS[1]), BOOK, "state_change", "ACTIVE->REDUCING", "REDUCING", {"reason": "r"}, "x")],
            columns=AUDIT_COLUMNS,
        ),
        run_id="t",
    )


def _report(wh: Warehouse) -> dict[str, Any]:
    return build_report(wh, DAYS[-1], BOOK, load_rules(COMPLIANCE_RULES_FILE)).row("v", None)


def test_report_numbers_by_hand(tmp_path: Path) -> None:
    wh = Warehouse(str(tmp_path / "w.duckdb"))
    _fill(wh)
    row = _report(wh)
    assert row["status"] == "major_violations"
    violations = {v["rule"]: v for v in json.loads(row["violations"])}
    # P2 above 10 % of NAV for the last three sessions (since the 18th); the budget in BREACH for two
    assert violations["position_pct_nav"]["value"] == pytest.approx(0.15)
    assert (violations["position_pct_nav"]["since"], violations["position_pct_nav"]["duration_sessions"]) == (
        "2026-11-18",
        3,
    )
    assert violations["limit_breach"]["subject"] == "risk_budget:long_stock"
    assert violations["limit_breach"]["duration_sessions"] == 2
    recs = json.loads(row["recommendations"])
    # the stored recommendation of the CRITICAL row, and the first-order cut for the HIGH row stored without one
    assert "stress crash (CRITICAL): cut every position by 58.3%" in recs
    assert any(r.startswith("stress gap (HIGH): loss 60,000 = 6.0% of NAV") and "16.7%" in r for r in recs)
    actions = json.loads(row["actions"])
    assert [(a["type"], a["subject"], a["detail"]) for a in actions] == [("state_change", "ACTIVE->REDUCING", "r")]


@pytest.mark.postgres
def test_report_identical_on_postgres(tmp_path: Path, pg_server_url: str) -> None:
    duck = Warehouse(str(tmp_path / "w.duckdb"))
    pg = Warehouse(pg_server_url)
    pg.execute("DROP SCHEMA IF EXISTS risk CASCADE")
    for wh in (duck, pg):
        _fill(wh)
    assert _report(duck) == _report(pg)
