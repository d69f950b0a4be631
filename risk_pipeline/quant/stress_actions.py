"""Recommendations carried by a HIGH or CRITICAL stress result: what brings its loss back under the HIGH threshold.

Pure: inputs are one ``stress_results`` row's numbers and the index the book can hedge with. Full-revaluation P&L of
every position is linear in the position's quantity, and the liquidation cost of a scaled book is at most
proportionally smaller, so scaling the whole book by ``s`` scales the scenario's P&L by at least ``s``: the cut
``1 - high / pnl_pct_nav`` is sufficient (exact without liquidation costs). Reducing one name by a fraction ``f``
removes ``f`` times its loss, so the worst name alone suffices when its loss covers the excess
``excess = high x nav - pnl`` (fraction ``excess / |worst_symbol_pnl|``). A delta-one index position moves by the
scenario's index move ``m``, so ``excess / (spot x |m|)`` units against the move (short for a fall) offset the excess
(before that position's own trading costs; none for a scenario without an index move).

Each recommendation is a dict with ``action`` (``reduce_book``, ``reduce_name``, ``index_hedge``), its numbers and
``text``.
"""

from __future__ import annotations

import math
from typing import Any

LEVELS_WITH_ACTIONS = ("HIGH", "CRITICAL")


def stress_recommendations(
    *,
    scenario_id: str,
    risk_level: str,
    pnl: float,
    pnl_pct_nav: float,
    nav: float,
    high_threshold: float,
    worst_symbol: str | None = None,
    worst_symbol_pnl: float | None = None,
    index_symbol: str | None = None,
    index_spot: float | None = None,
    index_move: float | None = None,
) -> list[dict[str, Any]]:
    """Recommendations for one scenario (empty unless its level is HIGH or CRITICAL and it loses).

    ``high_threshold``: the HIGH level as P&L / NAV (e.g. -0.05); ``index_move``: the scenario's relative index move
    (``spot_shock``), ``index_spot`` the index price in USD per unit.
    """
    if risk_level not in LEVELS_WITH_ACTIONS or not (pnl < 0 and pnl_pct_nav <= high_threshold < 0 and nav > 0):
        return []
    allowed_loss = -high_threshold * nav
    excess = -pnl - allowed_loss  # USD of loss that must go (>= 0 here)
    cut = 1.0 - high_threshold / pnl_pct_nav
    out: list[dict[str, Any]] = [
        {
            "action": "reduce_book",
            "cut_fraction": cut,
            "loss_before": -pnl,
            "loss_after_at_most": -pnl * (1.0 - cut),
            "text": (
                f"loss {-pnl:,.0f} = {-pnl_pct_nav:.1%} of NAV; cut every position by {cut:.1%} to bring it to at "
                f"most {-high_threshold:.0%} of NAV ({allowed_loss:,.0f})"
            ),
        }
    ]
    if worst_symbol and worst_symbol_pnl is not None and worst_symbol_pnl < 0 and -worst_symbol_pnl >= excess:
        fraction = excess / -worst_symbol_pnl
        out.append(
            {
                "action": "reduce_name",
                "symbol": worst_symbol,
                "cut_fraction": fraction,
                "name_loss": -worst_symbol_pnl,
                "text": (
                    f"or cut {worst_symbol} alone by {fraction:.1%} (it loses {-worst_symbol_pnl:,.0f}; "
                    f"{excess:,.0f} must go)"
                ),
            }
        )
    ok_index = index_symbol and index_spot is not None and math.isfinite(index_spot) and index_spot > 0
    if ok_index and index_move is not None and math.isfinite(index_move) and index_move != 0.0:
        units = math.ceil(excess / (index_spot * abs(index_move)) - 1e-9)  # whole units
        side = "sell" if index_move < 0 else "buy"
        out.append(
            {
                "action": "index_hedge",
                "symbol": index_symbol,
                "side": side,
                "quantity": units,
                "index_spot": index_spot,
                "index_move": index_move,
                "hedge_pnl": units * index_spot * abs(index_move),
                "text": (
                    f"or {side} {units:,} units of {index_symbol} at {index_spot:,.2f} (delta one): it gains "
                    f"{units * index_spot * abs(index_move):,.0f} on the scenario's {index_move:+.0%} index move"
                ),
            }
        )
    return out
