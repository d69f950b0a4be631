"""A small published warehouse (stock books, no Dagster run) and the real risk service on 127.0.0.1.

Books at the valuation ``AS_OF`` (published): ``alpha`` (five equal stock positions, ACTIVE), ``beta``
(same, used by the halt tests), ``delta`` (trading_state HALTED), ``gamma`` (no VaR/ES rows) and
``METACHAR_BOOK`` (a name full of SQL metacharacters); ``stale`` is published two sessions earlier.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn

from risk_pipeline.calendar import sessions
from risk_pipeline.contracts import table
from risk_pipeline.service.app import create_app
from risk_pipeline.service.auth import Principal, TokenStore
from risk_pipeline.service.core import ServiceSettings
from risk_pipeline.warehouse import Warehouse

SESSION = dt.date(2026, 11, 20)
AS_OF = pd.Timestamp("2026-11-20T20:45:00Z")
STALE_AS_OF = pd.Timestamp("2026-11-18T20:45:00Z")
NOW = pd.Timestamp("2026-11-20T21:00:00Z")
SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE")
PRICE = 100.0
QUANTITY = 1_000.0
NAV = 10_000_000.0
#: A book name that breaks any SQL built by string concatenation.
METACHAR_BOOK = "x'); DROP TABLE risk.audit_trail; --"
BOOKS = ("alpha", "beta", "delta", "gamma", METACHAR_BOOK)
#: Per-position and per-underlying cap: with five equal positions an order on one of them is resized to
#: the largest x with (QUANTITY + x) / (5 QUANTITY + x) <= CAP (see test_service_api).
CAP = 0.25
TOKENS = {
    "reader": "reader-token-0123456789abcdef",
    "trader": "trader-token-0123456789abcdef",
    "operator": "operator-token-0123456789abcdef",
}


def rows(name: str, records: list[dict]) -> pd.DataFrame:
    """Contract rows: columns not given are NULL."""
    return pd.DataFrame([{c: r.get(c) for c in table(name).data_column_names} for r in records])


def write_limits(path: Path) -> Path:
    caps = {
        "max_abs_net_delta_shares": 1e12,
        "max_abs_net_dollar_delta": 1e12,
        "max_abs_gamma_shares": 1e12,
        "max_abs_vega_per_vol_point": 1e12,
        "max_theta_per_day_loss": 1e12,
        "max_var_99_1d": "null",
        "max_es_975_1d": "null",
        "max_position_pct_gross": CAP,
        "max_underlying_pct_gross": CAP,
        "max_sector_pct_gross": 0.9,
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
    }
    path.write_text("version: service-test\ndefaults:\n" + "".join(f"  {k}: {v}\n" for k, v in caps.items()))
    return path


def build_book(wh: Warehouse, book: str, as_of: pd.Timestamp, state: str = "ACTIVE", var: bool = True) -> None:
    """One book of five equal long stock positions valued at ``as_of``, with NAV, state, limits, VaR, stress."""
    day = as_of.tz_convert("America/New_York").date()
    positions = [
        {
            "as_of": as_of,
            "as_of_date": day,
            "book": book,
            "position_id": f"{book}-{s}",
            "symbol": s,
            "instrument_type": "stock",
            "quantity": QUANTITY,
            "multiplier": 1.0,
            "spot": PRICE,
            "pricing_model": "linear",
            "price": PRICE,
            "market_value": QUANTITY * PRICE,
            "delta": QUANTITY,
            "dollar_delta": QUANTITY * PRICE,
            "gamma": 0.0,
            "dollar_gamma_1pct": 0.0,
            "vega_per_vol_point": 0.0,
            "theta_per_day": 0.0,
            "rho_per_pct": 0.0,
            "vanna": 0.0,
            "volga": 0.0,
            "charm": 0.0,
            "expiry_bucket": "n/a",
            "strategy": "core",
            "sector": f"sector-{s}",
        }
        for s in SYMBOLS
    ]
    _add(wh, "position_greeks", as_of, positions)
    common = {"as_of": as_of, "as_of_date": day, "book": book}
    _add(
        wh,
        "book_nav",
        as_of,
        [
            {
                **common,
                "nav": NAV,
                "peak_nav": NAV,
                "daily_pnl": 0.0,
                "drawdown_pct": 0.0,
                "pnl_basis": "test",
                "capital": NAV,
            }
        ],
    )
    _add(
        wh,
        "portfolio_greeks",
        as_of,
        [
            {
                **common,
                "scope": "total",
                "scope_value": "all",
                "delta": 5 * QUANTITY,
                "dollar_delta": 5 * QUANTITY * PRICE,
                "gamma": 0.0,
                "dollar_gamma_1pct": 0.0,
                "vega_per_vol_point": 0.0,
                "theta_per_day": 0.0,
                "rho_per_pct": 0.0,
                "beta_weighted_delta": 0.0,
                "market_value": 5 * QUANTITY * PRICE,
                "positions_count": 5,
            }
        ],
    )
    _add(
        wh,
        "trading_state",
        as_of,
        [
            {
                "as_of": as_of,
                "book": book,
                "state": state,
                "preservation_level": "none",
                "reason": f"test book {state}",
                "triggering_limits": "[]",
                "clear_count": 0,
                "since": as_of,
                "level_since": as_of,
                "target_state": state,
                "target_level": "none",
                "target_gross_cut": 0.0,
                "hedges_required": False,
                "flatten_speculative": False,
            }
        ],
    )
    _add(
        wh,
        "limit_status",
        as_of,
        [
            {
                "as_of": as_of,
                "book": book,
                "limit_name": "max_position_pct_gross",
                "value": 0.2,
                "threshold": CAP,
                "warn_threshold": 0.8 * CAP,
                "utilization": 0.8,
                "status": "WARN",
                "limits_version": "service-test",
            },
            {
                "as_of": as_of,
                "book": book,
                "limit_name": "max_positions",
                "value": 5.0,
                "threshold": 4.0,
                "warn_threshold": 3.2,
                "utilization": 1.25,
                "status": "BREACH",
                "limits_version": "service-test",
            },
        ],
    )
    if var:
        _add(
            wh,
            "var_results",
            as_of,
            [
                {
                    **common,
                    "method": "historical",
                    "horizon_days": h,
                    "confidence": c,
                    "var": 1e5 * h**0.5,
                    "expected_shortfall": 1.2e5 * h**0.5,
                    "n_scenarios": 500,
                    "lookback_days": 500,
                }
                for h in (1, 3, 5)
                for c in (0.975, 0.99)
            ],
        )
    _add(
        wh,
        "stress_results",
        as_of,
        [
            {
                "as_of": as_of,
                "book": book,
                "scenario_id": sid,
                "scenario_type": "test",
                "description": sid,
                "spot_shock": shock,
                "vol_shock": 0.0,
                "market_pnl": shock * 5 * QUANTITY * PRICE,
                "liquidation_cost": 0.0,
                "pnl": shock * 5 * QUANTITY * PRICE,
                "pnl_pct_nav": shock * 0.05,
                "risk_level": "LOW",
                "library_version": "t",
                "nav": NAV,
            }
            for sid, shock in (("down_20", -0.2), ("down_10", -0.1), ("up_10", 0.1))
        ],
    )
    event_time = pd.Timestamp("2026-11-25T19:00:00Z")
    _add(
        wh,
        "gap_risk_actions",
        as_of,
        [
            {
                "as_of": as_of,
                "book": book,
                "event_id": "fomc-2026-11-25",
                "symbol": "*",
                "event_type": "fomc",
                "event_time": event_time,
                "event_date": dt.date(2026, 11, 25),
                "trading_days_until": 3,
                "action": "alert",
                "actions": '["alert"]',
                "loss_before": 50_000.0,
                "budget": 200_000.0,
                "nav": NAV,
                "reason": "test event",
                "expires_at": event_time,
            }
        ],
        by_book=True,
    )


def _add(wh: Warehouse, name: str, as_of: pd.Timestamp, new: list[dict], by_book: bool = False) -> None:
    """Add rows to the ``as_of`` partition, keeping the rows of other books already there."""
    existing = wh.read(name, {"as_of": as_of}).drop(columns=["run_id", "materialized_at"])
    frame = pd.concat([existing, rows(name, new)], ignore_index=True) if len(existing) else rows(name, new)
    if by_book:
        wh.write(name, rows(name, new), run_id="test", partitions=[{"as_of": as_of, "book": new[0]["book"]}])
        return
    wh.write(name, frame, run_id="test", partitions=[{"as_of": as_of}])


def publish(wh: Warehouse, as_of: pd.Timestamp, books: list[str]) -> None:
    pointer = {
        "session": as_of.tz_convert("America/New_York").date(),
        "as_of": as_of,
        "kind": "end_of_day",
        "books": json.dumps(books),
        "tables": "[]",
        "published_run_id": "test",
        "published_at": pd.Timestamp.now(tz="UTC"),
    }
    wh.write("published_valuations", rows("published_valuations", [pointer]), run_id="test")


def build_warehouse(url: str) -> Warehouse:
    """The test warehouse (see the module docstring); returns a Warehouse that opens a connection per call."""
    wh = Warehouse(url, keep_open=True)  # one connection for the ~60 writes
    wh.ensure_tables()
    rng = np.random.default_rng(3)
    days = sessions(SESSION - dt.timedelta(days=200), SESSION)[-90:]
    closes = PRICE * np.exp(np.cumsum(rng.normal(0, 0.01, (len(days), len(SYMBOLS))), axis=0))
    closes[-1] = PRICE
    prices = pd.DataFrame(
        {"as_of_date": np.repeat(days, len(SYMBOLS)), "symbol": np.tile(SYMBOLS, len(days)), "close": closes.ravel()}
    ).assign(source="test", volume=1e6)
    prices = prices.assign(open=prices["close"], high=prices["close"], low=prices["close"])
    wh.write("market_prices", rows("market_prices", prices.to_dict("records")), run_id="test")
    for book in BOOKS:
        build_book(wh, book, AS_OF, state="HALTED" if book == "delta" else "ACTIVE", var=book != "gamma")
    build_book(wh, "stale", STALE_AS_OF)
    publish(wh, STALE_AS_OF, ["stale"])
    publish(wh, AS_OF, list(BOOKS))
    wh.close()
    return Warehouse(url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running service: its base URL, the warehouse behind it and the uvicorn server."""

    url: str
    wh: Warehouse
    server: uvicorn.Server
    thread: threading.Thread
    app: object

    def client(self, role: str | None = None, token: str | None = None) -> httpx.Client:
        headers = {}
        if token is not None or role is not None:
            headers["Authorization"] = f"Bearer {token if token is not None else TOKENS[str(role)]}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def token_store() -> TokenStore:
    return TokenStore({token: Principal(f"{role}-test", role) for role, token in TOKENS.items()})


def start_server(settings: ServiceSettings, wh: Warehouse, clock: object = None) -> Server:
    """uvicorn in a thread on a free loopback port; returns once it answers /healthz."""
    app = create_app(settings, token_store(), clock=clock)  # type: ignore[arg-type]
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.started:
            break
        time.sleep(0.02)
    assert server.started, "the service did not start"
    return Server(url, wh, server, thread, app)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("service")
    wh = build_warehouse(str(tmp / "risk_warehouse.duckdb"))
    settings = ServiceSettings(
        warehouse_url=wh.url,
        limits_file=write_limits(tmp / "limits.yaml"),
        books_file=tmp / "no_books.yaml",
        poll_seconds=0.1,
        max_body_bytes=4096,
    )
    started = time.monotonic()

    def clock() -> pd.Timestamp:  # NOW, advancing in real time (halts and resumes follow each other)
        return (NOW + pd.Timedelta(seconds=time.monotonic() - started)).floor("us")

    running = start_server(settings, wh, clock=clock)
    yield running
    running.stop()
