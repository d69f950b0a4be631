"""Intraday fills (executions) applied to the start-of-day book and their P&L, against hand-computed values."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.valuation import apply_fills, fill_pnl

SESSION = dt.date(2026, 11, 20)
EXPIRY = dt.date(2027, 1, 15)


def positions() -> pd.DataFrame:
    base = {
        "as_of_date": SESSION,
        "book": "b",
        "exercise_style": None,
        "cost_basis": 1.0,
        "strategy": "core",
        "source": "file",
    }
    return pd.DataFrame(
        [
            {
                **base,
                "position_id": "p1",
                "instrument_type": "stock",
                "symbol": "AAA",
                "expiry": None,
                "strike": np.nan,
                "option_type": None,
                "quantity": 100.0,
                "multiplier": 1.0,
                "sector": "tech",
            },
            {
                **base,
                "position_id": "p2",
                "instrument_type": "option",
                "symbol": "AAA",
                "expiry": EXPIRY,
                "strike": 100.0,
                "option_type": "C",
                "exercise_style": "american",
                "quantity": 5.0,
                "multiplier": 100.0,
                "sector": "tech",
            },
            {
                **base,
                "position_id": "p3",
                "instrument_type": "stock",
                "symbol": "BBB",
                "expiry": None,
                "strike": np.nan,
                "option_type": None,
                "quantity": 50.0,
                "multiplier": 1.0,
                "sector": "energy",
            },
        ]
    )


def fill(symbol: str, side: str, quantity: float, price: float, **option: object) -> dict:
    is_option = bool(option)
    return {
        "client_order_id": f"{symbol}-{side}-{quantity}",
        "execution_id": "1",
        "book": "b",
        "symbol": symbol,
        "instrument_type": "option" if is_option else "stock",
        "expiry": option.get("expiry"),
        "strike": option.get("strike", np.nan),
        "option_type": option.get("option_type"),
        "exercise_style": "american" if is_option else None,
        "multiplier": 100.0 if is_option else 1.0,
        "side": side,
        "quantity": quantity,
        "price": price,
        "strategy": None,
        "as_of_date": SESSION,
    }


FILLS = pd.DataFrame(
    [
        fill("AAA", "buy", 30, 10.0),
        fill("AAA", "sell", 20, 11.0),
        fill("BBB", "sell", 50, 9.0),
        fill("AAA", "buy", 2, 3.5, expiry=EXPIRY, strike=100.0, option_type="C"),
        fill("CCC", "buy", 3, 20.0),
        fill("CCC", "buy", 1, 30.0),
    ]
)


def test_fills_change_held_positions_open_new_ones_and_drop_flat_ones() -> None:
    book = apply_fills(positions(), FILLS, SESSION).set_index("position_id")
    assert book.loc["p1", "quantity"] == 100 + 30 - 20
    assert book.loc["p2", "quantity"] == 5 + 2
    assert "p3" not in book.index  # 50 sold: flat
    opened = book[book["source"] == "executions"]
    assert len(opened) == 1 and opened.index[0].startswith("fill:b|CCC|")
    row = opened.iloc[0]
    assert row["quantity"] == 4 and row["cost_basis"] == pytest.approx((3 * 20 + 1 * 30) / 4)
    assert row["strategy"] == "intraday" and row["as_of_date"] == SESSION and row["instrument_type"] == "stock"
    assert apply_fills(positions(), pd.DataFrame(), SESSION).equals(positions())


def test_fill_pnl_marks_each_fill_at_the_valuation() -> None:
    valued = pd.DataFrame(
        {
            "book": ["b", "b", "b"],
            "symbol": ["AAA", "AAA", "CCC"],
            "instrument_type": ["stock", "option", "stock"],
            "expiry": [None, EXPIRY, None],
            "strike": [np.nan, 100.0, np.nan],
            "option_type": [None, "C", None],
            "price": [12.0, 4.0, 25.0],
        }
    )
    # 30 x (12 - 10) - 20 x (12 - 11) + 2 x 100 x (4 - 3.5) + 3 x (25 - 20) + 1 x (25 - 30); BBB no longer held: 0
    assert fill_pnl(FILLS, valued).to_dict() == {"b": pytest.approx(60 - 20 + 100 + 15 - 5)}
