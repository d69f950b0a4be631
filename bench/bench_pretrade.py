"""Pre-trade check latency on a 5,000-position book read from the warehouse (DuckDB), once warm.

Builds the book's tables in a temporary warehouse (5,000 positions over 400 underlyings with 250
sessions of prices for the correlation), then times ``PreTradeService.check`` with the audit append
(the production path) and without it, against the cold first call in the same process.
Targets: median < 10 ms, 99th percentile < 50 ms.
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from risk_pipeline.calendar import sessions
from risk_pipeline.pretrade_service import PreTradeService
from risk_pipeline.warehouse import Warehouse

N_POSITIONS, N_SYMBOLS, N_DAYS = 5_000, 400, 250
SESSION = dt.date(2026, 11, 20)


def build(wh: Warehouse, limits: Path) -> None:
    rng = np.random.default_rng(0)
    as_of = pd.Timestamp("2026-11-20T20:45:00Z")
    symbols = np.array([f"S{i:03d}" for i in range(N_SYMBOLS)])
    sym = rng.integers(0, N_SYMBOLS, N_POSITIONS)
    spot = rng.uniform(20, 400, N_SYMBOLS)[sym]
    is_option = rng.random(N_POSITIONS) < 0.6
    qty = np.where(is_option, rng.integers(-20, 21, N_POSITIONS), rng.integers(-500, 501, N_POSITIONS))
    qty = np.where(qty == 0, 1, qty).astype(float)
    mult = np.where(is_option, 100.0, 1.0)
    unit_delta = np.where(is_option, rng.uniform(-0.9, 0.9, N_POSITIONS), 1.0)
    units = qty * mult
    price = np.where(is_option, rng.uniform(0.5, 20, N_POSITIONS), spot)
    rows = pd.DataFrame(
        {
            "as_of": as_of,
            "as_of_date": SESSION,
            "book": "bench",
            "position_id": [f"p{i}" for i in range(N_POSITIONS)],
            "symbol": symbols[sym],
            "instrument_type": np.where(is_option, "option", "stock"),
            "option_type": np.where(is_option, "C", None),
            "exercise_style": np.where(is_option, "american", None),
            "expiry": np.where(is_option, dt.date(2027, 1, 15), None),
            "quantity": qty,
            "multiplier": mult,
            "spot": spot,
            "strike": np.where(is_option, spot, np.nan),
            "time_to_expiry_years": np.where(is_option, 0.15, np.nan),
            "implied_vol": np.where(is_option, 0.3, np.nan),
            "vol_model": None,
            "rate": np.nan,
            "dividend_yield": np.nan,
            "pricing_model": "bench",
            "price": price,
            "market_value": units * price,
            "delta": units * unit_delta,
            "dollar_delta": units * unit_delta * spot,
            "gamma": units * np.where(is_option, 0.01, 0.0),
            "dollar_gamma_1pct": 0.0,
            "vega_per_vol_point": units * np.where(is_option, 0.2, 0.0),
            "theta_per_day": units * np.where(is_option, -0.02, 0.0),
            "rho_per_pct": 0.0,
            "vanna": 0.0,
            "volga": 0.0,
            "charm": 0.0,
            "beta": 1.0,
            "beta_weighted_delta": 0.0,
            "expiry_bucket": "31-90d",
            "strategy": "bench",
            "sector": [f"sector{i % 11}" for i in sym],
        }
    )
    wh.write("position_greeks", rows, run_id="bench")
    wh.write(
        "book_nav",
        pd.DataFrame(
            [
                {
                    "as_of": as_of,
                    "as_of_date": SESSION,
                    "book": "bench",
                    "nav": 1e9,
                    "peak_nav": 1e9,
                    "daily_pnl": 0.0,
                    "drawdown_pct": 0.0,
                    "pnl_basis": "bench",
                    "previous_as_of": None,
                    "capital": 1e9,
                }
            ]
        ),
        run_id="bench",
    )
    var_rows = [
        {
            "as_of": as_of,
            "as_of_date": SESSION,
            "book": "bench",
            "method": "historical",
            "horizon_days": 1,
            "confidence": c,
            "var": 1e6,
            "expected_shortfall": 1.2e6,
            "n_scenarios": 500,
            "lookback_days": 500,
            "history_start": None,
            "history_end": None,
            "seed": None,
            "iv_history_coverage": None,
            "gap_var": None,
            "gap_expected_shortfall": None,
            "gap_events": None,
            "standard_error": None,
            "var_non_overlapping": None,
            "independent_tail_obs": None,
            "method_note": None,
            "smile_sensitivity": None,
        }
        for c in (0.975, 0.99)
    ]
    wh.write("var_results", pd.DataFrame(var_rows), run_id="bench")  # the service rejects without VaR/ES
    pointer = {
        "session": SESSION,
        "as_of": as_of,
        "kind": "end_of_day",
        "books": '["bench"]',
        "tables": "[]",
        "published_run_id": "bench",
        "published_at": as_of,
    }
    wh.write("published_valuations", pd.DataFrame([pointer]), run_id="bench")
    state = {
        "as_of": as_of,
        "book": "bench",
        "state": "ACTIVE",
        "preservation_level": "none",
        "reason": "bench",
        "previous_state": None,
        "since": as_of,
        "triggering_limits": "[]",
        "clear_count": 0,
        "level_since": as_of,
        "target_state": "ACTIVE",
        "target_level": "none",
        "target_gross_cut": 0.0,
        "reference_gross": float("nan"),
        "hedges_required": False,
        "flatten_speculative": False,
    }
    wh.write("trading_state", pd.DataFrame([state]), run_id="bench")  # without one the service rejects
    days = sessions(SESSION - dt.timedelta(days=400), SESSION)[-N_DAYS:]
    factor = rng.normal(0, 0.01, (len(days), 1))
    closes = 100 * np.exp(np.cumsum(factor + rng.normal(0, 0.015, (len(days), N_SYMBOLS)), axis=0))
    prices = pd.DataFrame(
        {"as_of_date": np.repeat(days, N_SYMBOLS), "symbol": np.tile(symbols, len(days)), "close": closes.ravel()}
    )
    prices = prices.assign(
        open=prices["close"], high=prices["close"], low=prices["close"], volume=1.0, event_flag=None, source="bench"
    )
    wh.write("market_prices", prices, run_id="bench")
    limits.write_text(
        "version: bench\ndefaults:\n"
        + "".join(
            f"  {k}: {v}\n"
            for k, v in {
                "max_abs_net_delta_shares": 1e9,
                "max_abs_net_dollar_delta": 1e10,
                "max_abs_gamma_shares": 1e9,
                "max_abs_vega_per_vol_point": 1e9,
                "max_theta_per_day_loss": 1e9,
                "max_var_99_1d": "null",
                "max_es_975_1d": "null",
                "max_position_pct_gross": 0.2,
                "max_underlying_pct_gross": 0.2,
                "max_sector_pct_gross": 0.5,
                "min_positions": 3,
                "max_positions": 1000,
                "max_pairwise_correlation": 0.99,
                "max_daily_loss_pct_nav": 0.02,
                "max_drawdown_pct": 0.1,
                "light_drawdown_pct": 0.05,
                "moderate_drawdown_pct": 0.075,
                "light_gross_cut": 0.25,
                "moderate_gross_cut": 0.5,
                "warning_fraction": 0.8,
                "recovery_sessions": 3,
                "not_available_state": "HALTED",
                "concentration_min_gross_pct_nav": 0.0,
            }.items()
        )
    )


def time_checks(service: PreTradeService, n: int, record: bool) -> list[float]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        began = time.perf_counter()
        service.check(
            "bench",
            "buy" if i % 2 else "sell",
            int(rng.integers(1, 50)),
            position_id=f"p{int(rng.integers(0, N_POSITIONS))}",
            record=record,
        )
        out.append((time.perf_counter() - began) * 1000)
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wh = Warehouse(os.path.join(tmp, "bench_warehouse.duckdb"))
        wh.ensure_tables()
        limits = Path(tmp) / "limits.yaml"
        build(wh, limits)
        clock = lambda: pd.Timestamp("2026-11-20T21:00:00Z")  # noqa: E731  (the book's valuation is current)
        service = PreTradeService(Warehouse(wh.url, keep_open=True), limits, actor="bench", clock=clock)
        began = time.perf_counter()
        first = service.check("bench", "buy", 1, position_id="p0", record=False)
        cold_ms = (time.perf_counter() - began) * 1000
        print(f"book: {N_POSITIONS} positions, {N_SYMBOLS} underlyings; first answer {first.decision}")
        assert first.decision != "reject", f"the bench book must be checkable: {first.reasons}"
        print(f"{'path':<34}{'median ms':>10}{'p99 ms':>9}{'vs cold':>9}")
        print(f"{'cold (load book from warehouse)':<34}{cold_ms:>10.2f}{'':>9}{1.0:>9.2f}")
        for label, record in (("warm, decision only", False), ("warm, with audit_trail append", True)):
            times = time_checks(service, 400, record)
            med, p99 = statistics.median(times), float(np.percentile(times, 99))
            print(f"{label:<34}{med:>10.2f}{p99:>9.2f}{med / cold_ms:>9.3f}")
        print("targets: median < 10 ms, p99 < 50 ms")


if __name__ == "__main__":
    main()
