"""Request and response bodies of the risk service (pydantic): every input validated before it is used.

Identifiers (book, symbol, position and order ids) are free text within a length bound: they reach the
warehouse only as query parameters, so quotes, semicolons and comment markers are plain data.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Largest order or fill accepted, in shares or contracts (an "absurd size" above it is refused with 422).
MAX_QUANTITY = 10_000_000
#: Largest fill price accepted per unit.
MAX_PRICE = 10_000_000.0
IDENTIFIER = Field(min_length=1, max_length=64)


def _finite(name: str, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return value


class InstrumentFields(BaseModel):
    """A stock (symbol only) or a listed option (symbol = underlying, expiry, strike, option_type)."""

    model_config = ConfigDict(extra="forbid")

    symbol: str | None = Field(default=None, min_length=1, max_length=64)
    expiry: dt.date | None = None
    strike: float | None = Field(default=None, gt=0, le=1e7)
    option_type: Literal["C", "P"] | None = None

    @field_validator("strike")
    @classmethod
    def _strike_finite(cls, v: float | None) -> float | None:
        return _finite("strike", v)

    def option_fields_consistent(self) -> None:
        option = [self.expiry is not None, self.strike is not None, self.option_type is not None]
        if any(option) and not all(option):
            raise ValueError("an option needs expiry, strike and option_type together (a stock has none of them)")


class OrderCheckRequest(InstrumentFields):
    """``POST /v1/orders/check``: an order for an existing position (``position_id``) or an instrument."""

    book: str = IDENTIFIER
    side: Literal["buy", "sell"]
    quantity: float = Field(gt=0, le=MAX_QUANTITY, description="Shares or contracts, a positive whole number")
    position_id: str | None = Field(default=None, min_length=1, max_length=64)
    strategy: str | None = Field(default=None, min_length=1, max_length=64)
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    client_order_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="Idempotency key: the same id gets the same answer"
    )

    @field_validator("quantity")
    @classmethod
    def _whole(cls, v: float) -> float:
        _finite("quantity", v)
        if not float(v).is_integer():
            raise ValueError("quantity must be a whole number of shares or contracts")
        return v

    @model_validator(mode="after")
    def _target(self) -> OrderCheckRequest:
        if (self.position_id is None) == (self.symbol is None):
            raise ValueError("name exactly one of position_id or symbol")
        self.option_fields_consistent()
        return self


class LimitView(BaseModel):
    """One post-trade limit: value against its cap and warning level."""

    limit_name: str
    value: float | None
    threshold: float | None
    warn_threshold: float | None
    utilization: float | None
    status: str
    scope: str
    unit: str
    drivers: list[str]
    note: str


class OrderCheckResponse(BaseModel):
    """The decision with every reason, the book's trading state and the limits the order touches."""

    decision: Literal["approve", "resize", "reject"]
    approved_quantity: int
    requested_quantity: float
    reasons: list[str]
    book: str
    trading_state: str | None
    valuation_as_of: str | None
    limits_touched: list[str] = Field(description="Post-trade limits in WARN or BREACH")
    post_trade_limits: list[LimitView]
    client_order_id: str | None
    strategy: str | None
    confidence: float | None
    audit_id: str
    replayed: bool = Field(description="True when this is the stored answer to an earlier request with this id")


class ExecutionRequest(InstrumentFields):
    """``POST /v1/orders/executions``: one fill of an order."""

    client_order_id: str = IDENTIFIER
    execution_id: str | None = Field(default=None, min_length=1, max_length=64)
    book: str = IDENTIFIER
    symbol: str = IDENTIFIER
    side: Literal["buy", "sell"]
    quantity: float = Field(gt=0, le=MAX_QUANTITY)
    price: float = Field(gt=0, le=MAX_PRICE)
    multiplier: float | None = Field(default=None, gt=0, le=10_000)
    exercise_style: Literal["american", "european"] | None = None
    strategy: str | None = Field(default=None, min_length=1, max_length=64)
    executed_at: dt.datetime | None = Field(default=None, description="Fill time (default: when received)")

    @field_validator("quantity", "price")
    @classmethod
    def _finite_numbers(cls, v: float) -> float:
        return _finite("value", v)  # type: ignore[return-value]

    @field_validator("executed_at")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("executed_at needs a time zone (e.g. 2026-11-20T15:30:00Z)")
        return v

    @model_validator(mode="after")
    def _option(self) -> ExecutionRequest:
        self.option_fields_consistent()
        return self


class ExecutionResponse(BaseModel):
    client_order_id: str
    execution_id: str
    recorded: bool = Field(description="False when this fill was already recorded (a repeat adds nothing)")
    execution: dict[str, Any]


class ControlRequest(BaseModel):
    """``POST /v1/books/{book}/halt`` and ``/resume``."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)
    hours: float | None = Field(default=None, gt=0, le=24 * 365, description="Halt only: lapses after this long")

    @field_validator("hours")
    @classmethod
    def _hours_finite(cls, v: float | None) -> float | None:
        return _finite("hours", v)
