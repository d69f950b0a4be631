"""Process CPU seconds of the end of day's revaluations that read only ``market_value``: ``judge_events`` and
``strategy_pnl`` (performance_analytics) and ``nav_rows`` (book_nav), on a warehouse that holds the session.

``python bench/bench_valuation_calls.py WAREHOUSE.duckdb [--date 2026-12-03] [--repeat 3]``: one warm-up call of
each (numba cache, imports), then ``--repeat`` calls; prints each call's process CPU seconds (numba's worker
threads included) and their median.
Read only (nothing is written); ``PYTHONPATH`` picks the code measured (old and new alternated).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("warehouse")
    ap.add_argument("--date", default="2026-12-03")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    from risk_pipeline.calendar import sessions as xnys_sessions
    from risk_pipeline.defs.analytics import assets as an
    from risk_pipeline.defs.exposures.limits import book_capital, nav_rows
    from risk_pipeline.paths import BOOKS_FILE
    from risk_pipeline.queries import latest_as_of
    from risk_pipeline.warehouse import Warehouse

    wh = Warehouse(a.warehouse)
    session = dt.date.fromisoformat(a.date)
    as_of = latest_as_of(wh, "position_greeks", session)
    nav = an.book_returns(wh, session)
    prev = wh.query("SELECT MAX(as_of_date) AS d FROM risk.performance_analytics WHERE as_of_date < ?", [session])
    prev_session = prev["d"].iloc[0]
    prev_session = None if prev_session is None or str(prev_session) == "NaT" else prev_session
    days = xnys_sessions(session - dt.timedelta(days=400), session)
    cache = dict(an.CONTROL_WINDOWS)[an.CACHE_WINDOW]
    horizon = an.AnalyticsSettings().horizon_sessions
    since = an.judge_from(session, prev_session, horizon, days[-min(cache, len(days))])
    capital = book_capital(str(BOOKS_FILE))
    calls = {
        "judge_events": lambda: an.judge_events(wh, an.control_events(wh, since, session), session, horizon),
        "strategy_pnl": lambda: an.strategy_pnl(wh, session, as_of, nav),
        "nav_rows": lambda: nav_rows(wh, session, capital),
    }
    for name, fn in calls.items():
        fn()
        cpu = []
        for _ in range(a.repeat):
            t0 = time.process_time()
            fn()
            cpu.append(time.process_time() - t0)
        print(f"{name}: median {statistics.median(cpu):.3f} s process CPU; runs {' '.join(f'{c:.3f}' for c in cpu)}")


if __name__ == "__main__":
    main()
