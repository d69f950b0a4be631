"""Serving position sizes without Dagster: the recommendation for one name, and the pre-trade cap it implies.

Reads ``position_sizing`` rows (method ``recommended``) at the book's latest published valuation. The pre-trade
check (pretrade_service.py) attaches the recommendation to every answer on the name and resizes an order whose
post-trade position would exceed it (``quant.sizing.quantity_within_recommendation``): a stock order by its shares,
an option order by its delta-equivalent shares (delta x multiplier per contract).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from risk_pipeline.errors import RiskDataError
from risk_pipeline.quant.pretrade import PreTradeDecision
from risk_pipeline.quant.sizing import quantity_within_recommendation
from risk_pipeline.queries import latest_published_as_of
from risk_pipeline.warehouse import Warehouse


@dataclass(frozen=True)
class Recommendation:
    """One name's recommended position (signed shares and fraction of NAV), the method and the binding limit."""

    book: str
    symbol: str
    as_of: pd.Timestamp
    quantity: float
    notional: float
    weight: float
    method: str
    binding_limit: str
    strategy: str
    signal_confidence: float
    #: the book's stock shares in the symbol at the valuation, and those stock positions' ids
    held_shares: float = 0.0
    stock_position_ids: frozenset[str] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        return {
            "book": self.book,
            "symbol": self.symbol,
            "as_of": self.as_of.isoformat(),
            "recommended_quantity": self.quantity,
            "recommended_notional": round(self.notional, 2),
            "recommended_weight_pct_nav": self.weight,
            "method": self.method,
            "binding_limit": self.binding_limit,
            "strategy": self.strategy,
            "signal_confidence": self.signal_confidence,
        }


def recommended_sizes(
    wh: Warehouse, book: str, as_of: pd.Timestamp, positions: pd.DataFrame | None = None
) -> dict[str, Recommendation]:
    """The book's recommendations at ``as_of`` by symbol (empty when the table or the rows are absent).

    ``positions`` (the book's position_greeks rows) give each name's stock holding, so a check needs no lookup.
    """
    if not wh.table_exists("position_sizing"):
        return {}
    rows = wh.read("position_sizing", {"as_of": as_of, "book": book, "method": "recommended"})
    stocks = positions[positions["instrument_type"] != "option"] if positions is not None else None
    out = {}
    for r in rows.itertuples():
        method = json.loads(r.inputs).get("method", "") if isinstance(r.inputs, str) else ""
        held = stocks[stocks["symbol"] == r.symbol] if stocks is not None else None
        out[str(r.symbol)] = Recommendation(
            book,
            str(r.symbol),
            as_of,
            float(r.size_quantity),
            float(r.size_notional),
            float(r.weight),
            method,
            str(r.binding_limit),
            str(r.strategy),
            float(r.signal_confidence),
            float(held["quantity"].sum()) if held is not None else 0.0,
            frozenset(held["position_id"]) if held is not None else frozenset(),
        )
    return out


def cap_to_recommendation(
    decision: PreTradeDecision,
    rec: Recommendation | None,
    side: str,
    current_shares: float,
    shares_per_unit: float = 1.0,
) -> PreTradeDecision:
    """Attach the recommendation; resize (or reject) an approved order that would take the name beyond it.

    ``shares_per_unit`` is the order's signed delta in shares per unit bought (1 for a stock, delta x multiplier
    for an option). The order's delta-equivalent shares count against the headroom between the book's stock
    shares in the name (``current_shares``) and the recommended stock position: the recommendation already
    treats the options held as part of the rest of the book (its Greek caps), so only the new delta is added.
    An option order that moves the name toward 0 is never cut; one with zero delta adds nothing to the name.
    """
    if rec is None:
        return decision
    info = rec.as_dict()
    if decision.decision == "reject" or decision.approved_quantity == 0:
        return replace(decision, sizing=info)
    if not math.isfinite(shares_per_unit):  # fail closed: the order's delta is unknown
        reason = f"sizing: the order's delta in {rec.symbol} is not available, so its size cannot be checked"
        return replace(
            decision, decision="reject", approved_quantity=0, reasons=(*decision.reasons, reason), sizing=info
        )
    if shares_per_unit == 0.0:
        return replace(decision, sizing=info)
    sign = 1.0 if side == "buy" else -1.0
    order_shares = sign * decision.approved_quantity * shares_per_unit
    allowed_shares = abs(quantity_within_recommendation(current_shares, order_shares, rec.quantity))
    allowed_whole = math.floor(allowed_shares / abs(shares_per_unit) + 1e-9)
    if allowed_whole >= decision.approved_quantity:
        return replace(decision, sizing=info)
    unit = "" if shares_per_unit == 1.0 else f" (delta-equivalent {shares_per_unit:+.4g} shares per unit)"
    reason = (
        f"sizing: recommended position {rec.quantity:g} shares of {rec.symbol} ({rec.method}, binding "
        f"{rec.binding_limit}); position {current_shares:g} allows {allowed_whole} of "
        f"{decision.approved_quantity}{unit}"
    )
    kind = "resize" if allowed_whole > 0 else "reject"
    return replace(
        decision, decision=kind, approved_quantity=allowed_whole, reasons=(*decision.reasons, reason), sizing=info
    )


#: limit_status rows of the risk budgets (defs/exposures/budgets.py): ``risk_budget:<position strategy>``
BUDGET_PREFIX = "risk_budget:"


def budget_breaches(wh: Warehouse, book: str, as_of: pd.Timestamp) -> dict[str, str]:
    """Position strategies of the book whose component VaR is above their budget at ``as_of`` (limit_status BREACH),
    with the numbers; empty without the table or such rows."""
    if not wh.table_exists("limit_status"):
        return {}
    rows = wh.query_rows(
        "SELECT limit_name, value, threshold FROM risk.limit_status WHERE book = ? AND as_of = ? "
        "AND status = 'BREACH' AND limit_name LIKE ?",  # the pattern as a parameter: a literal % breaks psycopg
        [book, as_of, BUDGET_PREFIX + "%"],
    )
    return {
        name.removeprefix(BUDGET_PREFIX): f"component VaR {float(value):,.0f} above its budget {float(threshold):,.0f}"
        for name, value, threshold in rows
    }


def cap_to_risk_budget(
    decision: PreTradeDecision, breaches: dict[str, str], strategy: str | None, current: float, side: str
) -> PreTradeDecision:
    """Reject an approved order that adds to a position of a strategy over its VaR budget; one that reduces the
    position (toward 0) is never cut, and the part of an order beyond 0 (a flip) counts as adding."""
    if strategy not in breaches or decision.decision == "reject" or decision.approved_quantity == 0:
        return decision
    sign = 1.0 if side == "buy" else -1.0
    allowed = math.floor(min(decision.approved_quantity, abs(current)) + 1e-9) if sign * current < 0 else 0
    if allowed >= decision.approved_quantity:
        return decision
    reason = f"risk budget: strategy {strategy} {breaches[strategy]}; only reductions of its positions pass"
    return replace(
        decision,
        decision="resize" if allowed > 0 else "reject",
        approved_quantity=allowed,
        reasons=(*decision.reasons, reason),
    )


class SizingService:
    """``risk-pipeline size``: the recommendation for one name at the book's latest published valuation."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self._cache: dict[str, dict[str, Recommendation]] = {}

    def recommendations(self, book: str) -> dict[str, Recommendation]:
        if book not in self._cache:
            as_of = latest_published_as_of(self.warehouse, book)
            if as_of is None:
                raise RiskDataError(f"no published valuation of book {book!r}")
            self._cache[book] = recommended_sizes(self.warehouse, book, as_of)
        return self._cache[book]

    def size(self, book: str, symbol: str, min_confidence: float = 0.0) -> dict[str, Any]:
        """The recommendation as a dict; size 0 when the signal's confidence is below ``min_confidence``."""
        rec = self.recommendations(book).get(symbol)
        if rec is None:
            raise RiskDataError(f"no recommended size for {symbol} in book {book} (no signal, or no price history)")
        out = rec.as_dict()
        if rec.signal_confidence < min_confidence:
            out |= {
                "recommended_quantity": 0.0,
                "recommended_notional": 0.0,
                "recommended_weight_pct_nav": 0.0,
                "binding_limit": f"signal confidence {rec.signal_confidence:.3f} below {min_confidence:g}",
            }
        return out
