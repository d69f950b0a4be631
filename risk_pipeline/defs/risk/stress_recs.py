"""Recommendations on HIGH and CRITICAL stress_results rows (the numerics are in quant/stress_actions.py).

The index hedge uses the index's latest close at or before the session from ``market_prices`` (an upstream of the
stress step already). The hedging layer's optimized hedges are not read here: the stress step does not wait for the
hedging step (a hedging failure must not stop the stress tests); the compliance report lists both.
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

from risk_pipeline.quant.stress_actions import stress_recommendations
from risk_pipeline.warehouse import Warehouse


def index_close(wh: Warehouse, session: dt.date, symbol: str) -> float | None:
    """The index's latest close at or before the session (within ten days); None without one."""
    got = wh.query(
        "SELECT close FROM risk.market_prices WHERE symbol = ? AND as_of_date <= ? AND as_of_date >= ? "
        "ORDER BY as_of_date DESC LIMIT 1",
        [symbol, session, session - dt.timedelta(days=10)],
    )
    return float(got["close"].iloc[0]) if len(got) and pd.notna(got["close"].iloc[0]) else None


def row_recommendations(
    frame: pd.DataFrame, high_threshold: float, index_symbol: str, index_spot: float | None
) -> list[str]:
    """The ``recommendations`` JSON of each stress_results row of one book (``[]`` below HIGH)."""
    return [
        json.dumps(
            stress_recommendations(
                scenario_id=str(r.scenario_id),
                risk_level=str(r.risk_level),
                pnl=float(r.pnl),
                pnl_pct_nav=float(r.pnl_pct_nav),
                nav=float(r.nav),
                high_threshold=high_threshold,
                worst_symbol=None if pd.isna(r.worst_symbol) else str(r.worst_symbol),
                worst_symbol_pnl=None if pd.isna(r.worst_symbol_pnl) else float(r.worst_symbol_pnl),
                index_symbol=index_symbol,
                index_spot=index_spot,
                index_move=float(r.spot_shock),
            )
        )
        for r in frame.itertuples(index=False)
    ]
