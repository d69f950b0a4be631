"""A small, hand-written folder-source data set (independent of the synthetic generator)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

SESSIONS = [dt.date(2026, 11, 18), dt.date(2026, 11, 19), dt.date(2026, 11, 20)]
SNAPSHOT = "204500Z"  # 15:45 New York, 15 minutes before the close
CLOSES = {"AAA": [100.0, 101.0, 99.5], "BBB": [50.0, 50.5, 51.0]}


def write_good_folder(root: Path) -> Path:
    """Every table for SESSIONS: 2 stocks, a 12-quote chain on AAA, a curve, dividends, a book."""
    for i, day in enumerate(SESSIONS):
        d = day.isoformat()
        rows = []
        for sym, closes in CLOSES.items():
            c = closes[i]
            rows.append(
                {
                    "as_of_date": d,
                    "symbol": sym,
                    "open": c * 0.995,
                    "high": c * 1.01,
                    "low": c * 0.99,
                    "close": c,
                    "volume": 1_000_000,
                    "event_flag": "",
                }
            )
        _csv(root / "market_prices" / f"{d}.csv", rows)
        quotes = []
        spot = CLOSES["AAA"][i]
        for strike in (90.0, 95.0, 100.0, 105.0, 110.0, 115.0):
            for opt in ("C", "P"):
                intrinsic = max(spot - strike, 0.0) if opt == "C" else max(strike - spot, 0.0)
                mid = intrinsic + 2.0
                quotes.append(
                    {
                        "as_of": f"{d}T20:45:00Z",
                        "as_of_date": d,
                        "underlying": "AAA",
                        "expiry": "2026-12-18",
                        "strike": strike,
                        "option_type": opt,
                        "bid": round(mid - 0.05, 2),
                        "ask": round(mid + 0.05, 2),
                        "last": round(mid, 2),
                        "volume": 10,
                        "open_interest": 100,
                        "underlying_price": spot,
                        "exercise_style": "american",
                        "multiplier": 100,
                    }
                )
        _csv(root / "option_quotes" / d / f"{SNAPSHOT}.csv", quotes)
        _csv(
            root / "rates_curve" / f"{d}.csv",
            [{"as_of_date": d, "tenor_days": t, "zero_rate": r} for t, r in ((30, 0.043), (91, 0.042), (365, 0.04))],
        )
        _csv(
            root / "dividend_yields" / f"{d}.csv",
            [{"as_of_date": d, "symbol": s, "dividend_yield": y} for s, y in (("AAA", 0.01), ("BBB", 0.02))],
        )
        _csv(
            root / "positions" / f"{d}.csv",
            [
                {
                    "as_of_date": d,
                    "book": "core",
                    "position_id": "core:AAA:stock",
                    "instrument_type": "stock",
                    "symbol": "AAA",
                    "quantity": 1000,
                    "multiplier": 1,
                    "cost_basis": 95.0,
                    "strategy": "covered_call",
                    "sector": "tech",
                },
                {
                    "as_of_date": d,
                    "book": "core",
                    "position_id": "core:AAA:2026-12-18:110:C",
                    "instrument_type": "option",
                    "symbol": "AAA",
                    "expiry": "2026-12-18",
                    "strike": 110,
                    "option_type": "C",
                    "exercise_style": "american",
                    "quantity": -10,
                    "multiplier": 100,
                    "cost_basis": 2.1,
                    "strategy": "covered_call",
                    "sector": "tech",
                },
            ],
        )
    _csv(
        root / "event_calendar" / "earnings.csv",
        [
            {
                "event_id": "earn-AAA-2027-01-28",
                "event_type": "earnings",
                "symbol": "AAA",
                "event_time": "2027-01-28T21:00:00Z",
                "notes": "",
            }
        ],
    )
    return root


def _csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def edit_csv(path: Path, row: int, **values: object) -> None:
    """Set columns of data row ``row`` (1-based) of a CSV file."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for k, v in values.items():
        frame.loc[row - 1, k] = v
    frame.to_csv(path, index=False)
