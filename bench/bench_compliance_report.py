"""Time to produce one book's compliance report from the warehouse tables (DuckDB), excluding the plots.

Builds a book of 500 positions with 60 sessions of history in every table the report reads
(position_greeks, book_nav, var_results, limit_status with 16 limits, trading_state, required_reductions,
gap_risk_actions, audit_trail), then times ``build_report`` + ``render_html`` (no plots) warm on one kept-open
connection, and the plots separately. Target: at most 200 ms per book excluding plots.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from risk_pipeline.calendar import sessions
from risk_pipeline.contracts import table
from risk_pipeline.defs.compliance.report import build_report, render_html, report_plots
from risk_pipeline.paths import COMPLIANCE_RULES_FILE
from risk_pipeline.quant.compliance import load_rules
from risk_pipeline.queries import AUDIT_COLUMNS, audit_row
from risk_pipeline.warehouse import Warehouse

N_POSITIONS, N_SESSIONS, N_LIMITS = 500, 60, 16
SESSION = dt.date(2026, 11, 20)
BOOK = "bench_book"
_DEFAULTS: dict[str, Any] = {"text": "x", "double": 0.0, "bigint": 0, "boolean": False, "json": "[]"}


def frame(name: str, n: int, **columns: Any) -> pd.DataFrame:
    """``n`` rows of a contract table: the given columns, every other column a neutral default."""
    out = {}
    for c in table(name).columns:
        if c.name in columns:
            out[c.name] = columns[c.name]
        elif c.type in _DEFAULTS:
            out[c.name] = [_DEFAULTS[c.type]] * n
        else:
            out[c.name] = [None] * n
    return pd.DataFrame(out)


def build(wh: Warehouse) -> None:
    rng = np.random.default_rng(0)
    days = [d for d in sessions(SESSION - dt.timedelta(days=120), SESSION)][-N_SESSIONS:]
    frames: dict[str, list[pd.DataFrame]] = {}
    audit = []
    for i, day in enumerate(days):
        as_of = pd.Timestamp(day.isoformat() + "T20:45:00Z")
        nav = 1e7 * (1 + 0.001 * i)
        ids = [f"P{j:04d}" for j in range(N_POSITIONS)]
        qty = rng.integers(1, 500, N_POSITIONS).astype(float)
        dd = qty * rng.uniform(50, 300, N_POSITIONS)
        writes = [
            (
                "position_greeks",
                frame(
                    "position_greeks",
                    N_POSITIONS,
                    as_of=as_of,
                    as_of_date=day,
                    book=BOOK,
                    position_id=ids,
                    symbol=[f"S{j % 50:02d}" for j in range(N_POSITIONS)],
                    quantity=qty,
                    dollar_delta=dd,
                    market_value=dd,
                    expiry_bucket="none",
                    strategy="core",
                    pricing_model="stock",
                    instrument_type="stock",
                ),
            ),
            (
                "book_nav",
                frame("book_nav", 1, as_of=as_of, as_of_date=day, book=BOOK, nav=nav, peak_nav=nav, capital=1e7),
            ),
            (
                "var_results",
                frame(
                    "var_results",
                    2,
                    as_of=as_of,
                    as_of_date=day,
                    book=BOOK,
                    method="historical",
                    horizon_days=1,
                    confidence=[0.99, 0.975],
                    var=[0.025 * nav, 0.02 * nav],
                    expected_shortfall=[0.03 * nav, 0.026 * nav],
                ),
            ),
            (
                "limit_status",
                frame(
                    "limit_status",
                    N_LIMITS,
                    as_of=as_of,
                    book=BOOK,
                    limit_name=[f"limit_{k:02d}" for k in range(N_LIMITS)],
                    value=rng.uniform(0, 1.2, N_LIMITS),
                    threshold=1.0,
                    warn_threshold=0.8,
                    utilization=rng.uniform(0, 1.2, N_LIMITS),
                    status=["BREACH" if k < 2 else "WARN" if k < 5 else "OK" for k in range(N_LIMITS)],
                ),
            ),
            ("trading_state", frame("trading_state", 1, as_of=as_of, book=BOOK, state="REDUCING", reason="bench")),
            (
                "required_reductions",
                frame(
                    "required_reductions",
                    20,
                    as_of=as_of,
                    book=BOOK,
                    position_id=ids[:20],
                    symbol="S00",
                    quantity_before=qty[:20],
                    reduce_quantity=1.0,
                    quantity_after=qty[:20] - 1.0,
                    reason="limit_00",
                ),
            ),
            (
                "gap_risk_actions",
                frame(
                    "gap_risk_actions",
                    1,
                    as_of=as_of,
                    book=BOOK,
                    event_id=f"ev{i}",
                    symbol="*",
                    action="reduce",
                    loss_after=1.0,
                    budget=2.0,
                    expires_at=as_of + pd.Timedelta(hours=20),
                ),
            ),
        ]
        for name, rows in writes:
            frames.setdefault(name, []).append(rows)
        audit += [
            audit_row(as_of, BOOK, "state_change", f"s{i}", "REDUCING", {"reason": "bench"}, "bench"),
            audit_row(as_of, BOOK, "limit_breach", "limit_00", "BREACH", {"value": 1.1}, "bench"),
        ]
    wh.write_many([(n, pd.concat(f, ignore_index=True), None) for n, f in frames.items()], run_id="bench")
    wh.append("audit_trail", pd.DataFrame(audit, columns=AUDIT_COLUMNS), run_id="bench")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        wh = Warehouse(str(Path(folder) / "bench_warehouse.duckdb"))
        wh.ensure_tables()
        began = time.perf_counter()
        build(wh)
        print(f"built {N_POSITIONS} positions x {N_SESSIONS} sessions in {time.perf_counter() - began:.1f} s")
        wh = Warehouse(wh.url, keep_open=True)  # one connection, as a report service would hold
        rules = load_rules(COMPLIANCE_RULES_FILE)
        exists: dict[str, bool] = {}
        began = time.perf_counter()
        report = build_report(wh, SESSION, BOOK, rules, exists)
        render_html(report, {})
        cold = time.perf_counter() - began
        times, cpu = [], []
        for _ in range(30):
            began, began_cpu = time.perf_counter(), time.process_time()
            report = build_report(wh, SESSION, BOOK, rules, exists)
            render_html(report, {})
            times.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
        began = time.perf_counter()
        plots = report_plots(wh, report, exists)
        plot_time = time.perf_counter() - began
        median, worst = statistics.median(times), max(times)
        p95 = float(np.percentile(times, 95))
        print(
            f"report {BOOK}: status {report.status}, {len(report.violations)} violations, {len(report.actions)} actions"
        )
        print(
            f"build + render (no plots): cold {1000 * cold:.0f} ms; warm median {1000 * median:.0f} ms, "
            f"p95 {1000 * p95:.0f} ms, max {1000 * worst:.0f} ms (target <= 200 ms): "
            f"{'OK' if p95 <= 0.2 else 'MISSED'}"
        )
        print(
            f"CPU time of this process per report: median {1000 * statistics.median(cpu):.0f} ms "
            f"(wall time counts waiting for a core on a shared machine; load average {os.getloadavg()[0]:.1f})"
        )
        print(f"plots ({len(plots)}): {1000 * plot_time:.0f} ms")


if __name__ == "__main__":
    main()
