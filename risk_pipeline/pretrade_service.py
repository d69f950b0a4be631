"""Pre-trade check against the latest warehouse tables, usable without Dagster running.

``PreTradeService`` reads a book's ``position_greeks``, ``book_nav`` and ``trading_state`` at its latest
published valuation (``published_valuations``: a run that completed with every blocking check passed)
(plus the correlation of held names and, when the risk layer exists, VaR/ES), builds the quant
core's ``BookExposure`` once, and answers orders with ``quant.pretrade.check_order``. Every answer is
appended to ``audit_trail`` with a deterministic id, so the same decision on the same inputs is
recorded once. Missing data fails closed: the order is rejected with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from risk_pipeline import controls
from risk_pipeline.calendar import latest_session, sessions
from risk_pipeline.errors import RiskDataError
from risk_pipeline.event_windows import event_blackouts
from risk_pipeline.paths import LIMITS_FILE
from risk_pipeline.quant.gap_risk import Blackout, blackout_for_order
from risk_pipeline.quant.limits import BookExposure, LimitsConfig, load_limits
from risk_pipeline.quant.pretrade import BookAggregates, Instrument, Order, PreTradeDecision, check_order, precompute
from risk_pipeline.quant.trading_state import TradingStateRecord
from risk_pipeline.queries import (
    AUDIT_COLUMNS,
    audit_id,
    correlation_matrix,
    latest_published_as_of,
    risk_numbers,
    state_at,
)
from risk_pipeline.sizing_service import (
    Recommendation,
    budget_breaches,
    cap_to_recommendation,
    cap_to_risk_budget,
    recommended_sizes,
)
from risk_pipeline.valuation import book_exposure, value_positions
from risk_pipeline.warehouse import Warehouse


@dataclass
class BookSnapshot:
    """Everything a check needs about one book, loaded once."""

    book: str
    as_of: pd.Timestamp
    positions: pd.DataFrame
    exposure: BookExposure
    aggregates: BookAggregates
    config: LimitsConfig
    state: TradingStateRecord | None
    blackouts: list[Blackout]
    symbol_of: dict[str, str]
    #: recommended position per symbol (position_sizing at the same valuation; empty without the table)
    sizing: dict[str, Recommendation] = field(default_factory=dict)
    #: position strategies over their VaR budget at the valuation (limit_status risk_budget:* in BREACH)
    budget_breaches: dict[str, str] = field(default_factory=dict)


def utc_now() -> pd.Timestamp:
    """The service's default clock (tests replace it)."""
    return pd.Timestamp.now(tz="UTC")


class PreTradeError(RiskDataError):
    """The check could not be made (the caller must treat the order as rejected)."""


class BookHalted(RiskDataError):
    """A manual halt or emergency stop is in force for the book (risk_pipeline.controls): every order is rejected."""


#: Prefix of the reason when the check itself could not be made (warehouse unreachable, malformed order).
NOT_POSSIBLE = "check not possible"
#: CLI exit codes: approve, resize, reject by the rules or for missing/stale risk data, check not possible.
EXIT_CODES = {"approve": 0, "resize": 3, "reject": 4, "not_possible": 5}


def exit_code(decision: PreTradeDecision) -> int:
    """0 approve, 3 resize, 4 reject, 5 reject because the check could not be made."""
    if decision.decision == "reject" and any(r.startswith(NOT_POSSIBLE) for r in decision.reasons):
        return EXIT_CODES["not_possible"]
    return EXIT_CODES.get(decision.decision, EXIT_CODES["reject"])


def sessions_since(as_of: pd.Timestamp, now: pd.Timestamp) -> int:
    """XNYS sessions after the valuation's session up to the current one (0: valued this session)."""
    valued = as_of.tz_convert("America/New_York").date()
    current = latest_session(now.tz_convert("America/New_York").date())
    return len([d for d in sessions(valued, current) if d > valued]) if current > valued else 0


class PreTradeService:
    """Answers orders for books from the warehouse; caches each book's snapshot until ``refresh``.

    Fails closed: an order is rejected when the book's latest valuation is older than
    ``max_valuation_age_sessions`` sessions (intraday valuations count), when its VaR/ES or the
    gap-risk table is missing, and when anything else prevents the check (the reason then starts with
    ``check not possible``). ``clock`` returns the current time (UTC), for tests.
    """

    def __init__(
        self,
        warehouse: Warehouse,
        limits_file: str | Path = LIMITS_FILE,
        actor: str = "pre-trade",
        max_valuation_age_sessions: int = 1,
        clock: Callable[[], pd.Timestamp] | None = None,
    ) -> None:
        self.warehouse = warehouse
        self.limits = load_limits(limits_file)
        self.actor = actor
        self.max_valuation_age_sessions = max_valuation_age_sessions
        self.clock = clock or (lambda: utc_now())
        self._books: dict[str, BookSnapshot] = {}
        self._controls_table = False

    def refresh(self) -> None:
        self._books.clear()

    def snapshot(self, book: str) -> BookSnapshot:
        if book not in self._books:
            self._books[book] = self._load(book)
        return self._books[book]

    def _load(self, book: str) -> BookSnapshot:
        wh = self.warehouse
        as_of = latest_published_as_of(wh, book)
        if as_of is None:
            raise PreTradeError(
                f"no published valuation of book {book!r} (published_valuations): nothing complete to check against"
            )
        age = sessions_since(as_of, self.clock())
        if age > self.max_valuation_age_sessions:
            raise PreTradeError(
                f"latest valuation of {book} is {as_of.isoformat()}, {age} sessions old "
                f"(at most {self.max_valuation_age_sessions} allowed): value the book first"
            )
        positions = wh.read("position_greeks", {"as_of": as_of, "book": book})
        nav = wh.read("book_nav", {"as_of": as_of, "book": book})
        if nav.empty:
            raise PreTradeError(f"no book_nav for {book!r} at {as_of.isoformat()}: NAV unknown")
        nav_row = nav.iloc[0]
        deployed, var, es = risk_numbers(wh, as_of, book)
        if not deployed or var is None or es is None:
            raise PreTradeError(
                f"no 99 % VaR / 97.5 % ES of {book} in var_results for the valuation at {as_of.isoformat()} "
                "or the session before: the risk caps cannot be checked"
            )
        if not wh.table_exists("gap_risk_actions"):
            raise PreTradeError("table gap_risk_actions does not exist: event blackouts cannot be checked")
        config = self.limits.for_book(book)
        session = positions["as_of_date"].iloc[0]
        correlation = correlation_matrix(wh, session, 63)
        exposure = book_exposure(positions, nav_row, correlation, var, es)
        state = state_at(wh, book, as_of)
        return BookSnapshot(
            book=book,
            as_of=as_of,
            positions=positions,
            exposure=exposure,
            aggregates=precompute(exposure, config),
            config=config,
            state=state,
            blackouts=event_blackouts(wh, book, as_of),
            symbol_of=dict(zip(positions["position_id"], positions["symbol"], strict=True)),
            sizing=recommended_sizes(wh, book, as_of, positions),
            budget_breaches=budget_breaches(wh, book, as_of),
        )

    def check(
        self,
        book: str,
        side: str,
        quantity: float,
        *,
        position_id: str | None = None,
        symbol: str | None = None,
        expiry: dt.date | None = None,
        strike: float | None = None,
        option_type: str | None = None,
        record: bool = True,
    ) -> PreTradeDecision:
        """Approve, resize or reject an order; an existing position by id, or a stock / listed option."""
        try:
            self._raise_if_halted(book)
            snap = self.snapshot(book)
            order = self._order(snap, side, quantity, position_id, symbol, expiry, strike, option_type)
            traded = symbol or snap.symbol_of[position_id]
            decision = check_order(
                snap.exposure,
                order,
                snap.config,
                snap.state,
                # new entries blocked by a gap-risk action until its event (checked at the current time)
                event_blackout=(blackout := blackout_for_order(snap.blackouts, str(traded), self.clock())) is not None,
                blackout_reason=blackout or "",
                aggregates=snap.aggregates,
            )
            decision = self._cap_to_recommendation(snap, decision, side, str(traded), order)
            if position_id is not None and snap.budget_breaches:  # adding to a strategy over its VaR budget
                held = snap.positions.loc[snap.positions["position_id"] == position_id].iloc[0]
                decision = cap_to_risk_budget(
                    decision, snap.budget_breaches, str(held["strategy"]), float(held["quantity"]), side
                )
        except BookHalted as exc:  # checked on every order, never cached: a halt applies at once
            decision = PreTradeDecision("reject", 0, float(quantity), (str(exc),), ())
            snap = None
        except (RiskDataError, KeyError) as exc:
            decision = PreTradeDecision("reject", 0, float(quantity), (f"fail closed: {exc}",), ())
            snap = None
        except Exception as exc:  # infrastructure or input: the order cannot be checked, so it is rejected
            reason = f"{NOT_POSSIBLE}: {type(exc).__name__}: {exc}".strip()
            decision = PreTradeDecision("reject", 0, float(quantity), (reason,), ())
            snap = None
        if record:
            order_fields = {
                "side": side,
                "quantity": quantity,
                "position_id": position_id,
                "symbol": symbol,
                "expiry": expiry,
                "strike": strike,
                "option_type": option_type,
            }
            try:
                self._audit(book, snap, order_fields, decision)
            except Exception as exc:  # the warehouse is not writable: the answer stands, unrecorded
                if decision.decision != "reject":
                    reason = f"{NOT_POSSIBLE}: the audit trail could not be written ({type(exc).__name__}: {exc})"
                    decision = PreTradeDecision("reject", 0, float(quantity), (reason,), ())
        return decision

    def _cap_to_recommendation(
        self, snap: BookSnapshot, decision: PreTradeDecision, side: str, symbol: str, order: Order
    ) -> PreTradeDecision:
        """Attach the name's recommended size; resize an order whose delta-equivalent shares take the name
        beyond it (a stock by its shares, an option by delta x multiplier per contract)."""
        rec = snap.sizing.get(symbol)
        if rec is None:
            return decision
        if order.instrument is not None:
            per_unit = order.instrument.delta * order.instrument.multiplier
        else:
            i = snap.aggregates.row_of[str(order.position_id)]
            e = snap.exposure
            per_unit = float(np.asarray(e.delta)[i]) * float(np.asarray(e.multiplier)[i])
        return cap_to_recommendation(decision, rec, side, rec.held_shares, float(per_unit))

    def _raise_if_halted(self, book: str) -> None:
        """BookHalted when a manual halt (controls.halt / emergency_stop) is in force for the book now."""
        if not self._controls_table:
            self._controls_table = self.warehouse.table_exists(controls.TABLE)  # once it exists it stays
            if not self._controls_table:
                return
        event = controls.book_halt(self.warehouse, book, self.clock())
        if event is not None:
            raise BookHalted(controls.describe(event))

    def _order(
        self,
        snap: BookSnapshot,
        side: str,
        quantity: float,
        position_id: str | None,
        symbol: str | None,
        expiry: dt.date | None,
        strike: float | None,
        option_type: str | None,
    ) -> Order:
        if position_id is not None:
            if position_id not in set(snap.positions["position_id"]):
                raise PreTradeError(f"position {position_id!r} is not in book {snap.book}")
            return Order(side=side, quantity=quantity, position_id=position_id)
        if symbol is None:
            raise PreTradeError("an order names a position_id or a symbol")
        held = snap.positions
        if expiry is None:  # a stock
            match = held[(held["symbol"] == symbol) & (held["instrument_type"] != "option")]
            if len(match):
                return Order(side=side, quantity=quantity, position_id=str(match["position_id"].iloc[0]))
            spot = self._spot(snap, symbol)
            instrument = Instrument(symbol, self._sector(snap, symbol), 1.0, spot, spot, 1.0, strategy="new")
            return Order(side=side, quantity=quantity, instrument=instrument)
        match = held[
            (held["symbol"] == symbol)
            & (held["expiry"] == expiry)
            & (held["strike"] == strike)
            & (held["option_type"] == option_type)
        ]
        if len(match):
            return Order(side=side, quantity=quantity, position_id=str(match["position_id"].iloc[0]))
        return Order(side=side, quantity=quantity, instrument=self._option(snap, symbol, expiry, strike, option_type))

    def _spot(self, snap: BookSnapshot, symbol: str) -> float:
        got = self.warehouse.query(
            "SELECT close FROM risk.market_prices WHERE symbol = ? AND as_of_date <= ? "
            "ORDER BY as_of_date DESC LIMIT 1",
            [symbol, snap.positions["as_of_date"].iloc[0]],
        )
        if got.empty:
            raise PreTradeError(f"no price for {symbol}")
        return float(got["close"].iloc[0])

    def _sector(self, snap: BookSnapshot, symbol: str) -> str:
        known = snap.positions.loc[snap.positions["symbol"] == symbol, "sector"]
        if len(known):
            return str(known.iloc[0])
        got = self.warehouse.query("SELECT MAX(sector) AS s FROM risk.positions WHERE symbol = ?", [symbol])
        return str(got["s"].iloc[0]) if len(got) and got["s"].iloc[0] is not None else "unknown"

    def _option(
        self, snap: BookSnapshot, symbol: str, expiry: dt.date, strike: float | None, option_type: str | None
    ) -> Instrument:
        """A listed option not held yet, valued off the same surface as the book."""
        if strike is None or option_type not in ("C", "P"):
            raise PreTradeError("an option order needs expiry, strike and option_type C or P")
        listed = self.warehouse.query(
            "SELECT exercise_style, multiplier FROM risk.option_quotes WHERE as_of = ? AND underlying = ? "
            "AND expiry = ? AND strike = ? AND option_type = ?",
            [snap.as_of, symbol, expiry, float(strike), option_type],
        )
        if listed.empty:
            raise PreTradeError(f"{symbol} {expiry} {strike} {option_type} is not listed at {snap.as_of.isoformat()}")
        session = snap.positions["as_of_date"].iloc[0]
        row = pd.DataFrame(
            [
                {
                    "as_of_date": session,
                    "book": snap.book,
                    "position_id": "proposed",
                    "instrument_type": "option",
                    "symbol": symbol,
                    "expiry": expiry,
                    "strike": float(strike),
                    "option_type": option_type,
                    "exercise_style": listed["exercise_style"].iloc[0],
                    "quantity": 1.0,
                    "multiplier": float(listed["multiplier"].iloc[0]),
                    "cost_basis": None,
                    "strategy": "new",
                    "sector": self._sector(snap, symbol),
                    "source": "pre-trade",
                }
            ]
        )
        try:
            valued = value_positions(self.warehouse, session, snap.as_of, positions=row)
        except RiskDataError as exc:
            raise PreTradeError(f"cannot value {symbol} {expiry} {strike} {option_type}: {exc}") from exc
        v = valued.iloc[0]
        units = v["multiplier"]
        return Instrument(
            symbol=symbol,
            sector=str(v["sector"]),
            multiplier=float(v["multiplier"]),
            spot=float(v["spot"]),
            unit_price=float(v["price"]),
            delta=float(v["delta"] / units),
            gamma=float(v["gamma"] / units),
            vega=float(v["vega_per_vol_point"] / units * 100.0),
            theta_per_day=float(v["theta_per_day"] / units),
            is_option=True,
            strategy="new",
        )

    def _audit(self, book: str, snap: BookSnapshot | None, order: dict[str, Any], decision: PreTradeDecision) -> None:
        """Append the answer; the id hashes book, valuation, order and answer, so a repeat adds nothing."""
        valuation = snap.as_of.isoformat() if snap is not None else "unavailable"
        inputs = {
            "order": order,
            "valuation_as_of": valuation,
            "state": snap.state.state if snap is not None and snap.state is not None else None,
            "approved_quantity": decision.approved_quantity,
            "reasons": list(decision.reasons),
            "limits_version": self.limits.version,
        }
        payload = json.dumps(inputs, sort_keys=True, default=str)
        subject = order["position_id"] or " ".join(
            str(order[k]) for k in ("symbol", "expiry", "strike", "option_type") if order[k] is not None
        )
        row = {
            "audit_id": audit_id(
                "pre_trade",
                book,
                valuation,
                json.dumps(order, sort_keys=True, default=str),
                decision.decision,
                decision.approved_quantity,
            ),
            "at": pd.Timestamp.now(tz="UTC"),
            "actor": self.actor,
            "decision_type": "pre_trade",
            "book": book,
            "subject": f"{order['side']} {order['quantity']:g} {subject}",
            "decision": decision.decision,
            "inputs": payload,
        }
        self.warehouse.append_record("audit_trail", row, run_id=f"pretrade:{self.actor}")


def decision_json(decision: PreTradeDecision) -> str:
    return json.dumps(
        {
            "decision": decision.decision,
            "approved_quantity": decision.approved_quantity,
            "requested_quantity": decision.requested_quantity,
            "reasons": list(decision.reasons),
            **({"sizing": dict(decision.sizing)} if decision.sizing else {}),
        },
        indent=2,
    )


__all__ = ["AUDIT_COLUMNS", "PreTradeError", "PreTradeService", "audit_id", "decision_json", "exit_code"]
