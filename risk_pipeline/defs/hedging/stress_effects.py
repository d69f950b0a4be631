"""The hedge's effect per stress scenario (``hedge_stress_effects`` rows; no Dagster)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from risk_pipeline.defs.hedging.inputs import ScenarioBlocks
from risk_pipeline.quant.stress import RiskThresholds
from risk_pipeline.warehouse import Warehouse


def stress_effect_rows(
    wh: Warehouse,
    as_of: pd.Timestamp,
    session: dt.date,
    book: str,
    nav: float,
    blocks: ScenarioBlocks,
    market_before: np.ndarray,
    market_after: np.ndarray,
    hedge_ids: list[str],
    thresholds: RiskThresholds,
) -> list[dict[str, Any]]:
    """One row per stress scenario (order of ``blocks.stress_ids``): the book's market P&L before (``market_before``,
    the book's worst idiosyncratic moves) and with the hedge lines (``market_after``, the hedged book's worst), less
    the book's liquidation cost from ``stress_results`` at ``blocks.stress_as_of`` (none: ``pnl_*`` are null)."""
    cost: dict[str, float] = {}
    if blocks.stress_as_of is not None:
        got = wh.read(
            "stress_results", {"as_of": blocks.stress_as_of, "book": book}, columns=["scenario_id", "liquidation_cost"]
        )
        cost = dict(zip(got["scenario_id"].astype(str), got["liquidation_cost"].astype(float), strict=True))
    out = []
    for j, sid in enumerate(blocks.stress_ids):
        before, after = float(market_before[j]), float(market_after[j])
        liq = cost.get(sid)
        pnl_before = None if liq is None else before - liq
        pnl_after = None if liq is None else after - liq
        pct_before = None if pnl_before is None else pnl_before / nav
        pct_after = None if pnl_after is None else pnl_after / nav
        out.append(
            {
                "as_of": as_of,
                "as_of_date": session,
                "book": book,
                "scenario_id": sid,
                "stress_as_of": blocks.stress_as_of,
                "nav": nav,
                "hedge_ids": ",".join(hedge_ids) or None,
                "market_pnl_before": before,
                "liquidation_cost": liq,
                "pnl_before": pnl_before,
                "pnl_pct_nav_before": pct_before,
                "risk_level_before": None if pct_before is None else thresholds.level(pct_before),
                "hedge_pnl": after - before,
                "market_pnl_after": after,
                "pnl_after": pnl_after,
                "pnl_pct_nav_after": pct_after,
                "risk_level_after": None if pct_after is None else thresholds.level(pct_after),
                "high_threshold": thresholds.high,
                "under_high_threshold": None if pct_after is None else bool(pct_after > thresholds.high),
                "vol_rule": blocks.stress.rule.label(),
            }
        )
    return out
