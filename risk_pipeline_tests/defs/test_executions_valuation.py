"""Fills reported to the risk service (executions) are intraday trades of the next valuation of their session."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from risk_pipeline.valuation import value_positions
from risk_pipeline.warehouse import Warehouse

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


@pytest.fixture
def copied(run: Run, tmp_path: Path) -> Warehouse:
    target = tmp_path / "copy" / "risk_warehouse.duckdb"
    target.parent.mkdir()
    shutil.copy(run[0].url, target)
    wh = Warehouse(str(target))
    wh.ensure_tables(["executions"])
    return wh


def test_next_valuation_applies_the_sessions_fills_up_to_its_time(copied: Warehouse) -> None:
    wh = copied
    as_of = wh.read("position_greeks")["as_of"].max()
    before = wh.read("position_greeks", {"as_of": as_of})
    session = before["as_of_date"].iloc[0]
    held = before[before["instrument_type"] != "option"].iloc[0]
    book, symbol = str(held["book"]), str(held["symbol"])
    quote = wh.query(
        "SELECT underlying, expiry, strike, option_type, exercise_style, multiplier FROM risk.option_quotes "
        "WHERE as_of = ? AND underlying = ? ORDER BY expiry DESC, strike LIMIT 1",
        [as_of, symbol],
    ).iloc[0]
    base = {
        "book": book,
        "symbol": symbol,
        "as_of_date": session,
        "strategy": "test",
        "source": "test",
        "pre_trade_decision": None,
        "exercise_style": None,
        "expiry": None,
        "strike": None,
        "option_type": None,
        "instrument_type": "stock",
        "multiplier": 1.0,
    }
    fills = pd.DataFrame(
        [
            {
                **base,
                "client_order_id": "o1",
                "execution_id": "1",
                "at": as_of - pd.Timedelta(hours=2),
                "side": "buy",
                "quantity": 120.0,
                "price": float(held["spot"]),
            },
            {
                **base,
                "client_order_id": "o2",
                "execution_id": "1",
                "at": as_of - pd.Timedelta(hours=1),
                "side": "sell",
                "quantity": 20.0,
                "price": float(held["spot"]),
            },
            {
                **base,
                "client_order_id": "o3",
                "execution_id": "1",
                "at": as_of - pd.Timedelta(minutes=30),
                "side": "buy",
                "quantity": 3.0,
                "price": 1.0,
                "instrument_type": "option",
                "expiry": quote["expiry"],
                "strike": float(quote["strike"]),
                "option_type": quote["option_type"],
                "exercise_style": quote["exercise_style"],
                "multiplier": float(quote["multiplier"]),
            },
            # after the valuation: belongs to the next one
            {
                **base,
                "client_order_id": "o4",
                "execution_id": "1",
                "at": as_of + pd.Timedelta(minutes=1),
                "side": "buy",
                "quantity": 1_000.0,
                "price": float(held["spot"]),
            },
        ]
    )
    assert wh.append("executions", fills, run_id="test") == 4
    after = value_positions(wh, session, as_of).set_index("position_id")
    stock = after.loc[held["position_id"]]
    assert stock["quantity"] == held["quantity"] + 120 - 20
    assert stock["market_value"] == pytest.approx(stock["quantity"] * held["spot"], rel=1e-12)
    opened = after[after.index.str.startswith("fill:")]
    assert len(opened) == 1 and opened["quantity"].iloc[0] == 3.0
    assert opened["symbol"].iloc[0] == symbol and opened["instrument_type"].iloc[0] == "option"
    alone = value_positions(wh, session, as_of, positions=wh.read("positions", {"as_of_date": session}))
    assert len(after) == len(alone) + 1  # every other position unchanged in number
    others = after.drop(index=[held["position_id"], opened.index[0]])
    assert others["market_value"].sum() == pytest.approx(
        alone.set_index("position_id").drop(index=held["position_id"])["market_value"].sum(), rel=1e-12
    )
