"""Every contract column explains itself: a description, and for quantities a unit and a sign convention.

The UI's catalog shows these descriptions (``dagster/column_schema``), so a reader of ``portfolio_greeks``
learns that ``vega_per_vol_point`` is USD per 0.01 of vol without opening the code.
"""

from __future__ import annotations

import re

import pytest

from risk_pipeline.contracts import TABLES, Column, Table

#: Name parts that say a numeric column is a quantity with a unit (money, price, vol, rate, Greek, share ...).
UNIT_NAME_PARTS = frozenset(
    {
        "price", "open", "high", "low", "close", "bid", "ask", "mid", "last", "spot", "strike", "forward",
        "vol", "volatility", "variance", "var", "es", "shortfall", "pnl", "loss", "delta", "gamma", "vega",
        "theta", "rho", "vanna", "volga", "charm", "rate", "yield", "pct", "nav", "value", "cost", "premium",
        "exposure", "notional", "budget", "drawdown", "return", "weight", "gross", "atr", "shock", "shift",
        "skew", "years", "days", "minutes", "level", "quantity", "capital", "outlay", "cap", "target", "floor",
    }
)  # fmt: skip

#: Words that state a unit (a currency, a count of something, a scale or "dimensionless").
UNIT_WORDS = re.compile(
    r"USD|currency|shares?\b|contracts?\b|decimal|fraction|%|\bpercent|\byears?\b|\bdays?\b|\bsessions?\b|"
    r"\bminutes\b|\bseconds\b|points?\b|annualized|dimensionless|ratio|\(count\)|\bcount\b|probability|"
    r"log-moneyness|ln\(K|multiple of|in \[0, 1\]|in \[-1, 1\]|0-100|\+1 long",
    re.IGNORECASE,
)

#: Name parts of money amounts (in USD, or as a fraction of NAV) whose sign must be stated (gain or loss).
SIGNED_NAME_PARTS = frozenset({"pnl", "loss", "var", "es", "shortfall", "cost", "protection"})
SIGN_WORDS = re.compile(r"positive|negative|> ?0|< ?0|signed|\bgain\b", re.IGNORECASE)

#: Tables other work is still adding to the contracts; they are held to the non-empty rule only.
UNIT_RULE_PENDING: frozenset[str] = frozenset()


def _parts(column: Column) -> set[str]:
    return set(column.name.lower().split("_"))


def _numeric_with_unit(column: Column) -> bool:
    return column.type in ("double", "bigint") and bool(_parts(column) & UNIT_NAME_PARTS)


def _columns() -> list[tuple[Table, Column]]:
    return [(t, c) for t in TABLES.values() for c in t.all_columns]


def test_every_column_has_a_description() -> None:
    empty = [f"{t.name}.{c.name}" for t, c in _columns() if not c.description.strip()]
    assert not empty, f"{len(empty)} columns without a description: {empty}"


def test_numeric_quantities_state_their_unit() -> None:
    checked = [(t, c) for t, c in _columns() if t.name not in UNIT_RULE_PENDING and _numeric_with_unit(c)]
    assert len(checked) > 150, "the rule must cover the Greek, VaR, price and vol columns"
    missing = [f"{t.name}.{c.name}: {c.description!r}" for t, c in checked if not UNIT_WORDS.search(c.description)]
    assert not missing, "columns whose description names no unit:\n" + "\n".join(missing)


def test_money_amounts_state_their_sign_convention() -> None:
    checked = [
        (t, c)
        for t, c in _columns()
        if t.name not in UNIT_RULE_PENDING
        and c.type == "double"
        and _parts(c) & SIGNED_NAME_PARTS
        and ("USD" in c.description or "nav" in _parts(c))
    ]
    assert len(checked) > 40, "the rule must cover the P&L, VaR, ES and loss columns"
    missing = [f"{t.name}.{c.name}: {c.description!r}" for t, c in checked if not SIGN_WORDS.search(c.description)]
    assert not missing, "P&L, loss, VaR, ES and cost columns must say which sign is a loss:\n" + "\n".join(missing)


@pytest.mark.parametrize(
    ("table_name", "column_name", "words"),
    [
        ("portfolio_greeks", "vega_per_vol_point", ("USD", "0.01")),
        ("portfolio_greeks", "theta_per_day", ("USD", "calendar day")),
        ("position_greeks", "implied_vol", ("annualized", "decimal")),
        ("var_results", "var", ("USD", "positive = loss")),
        ("implied_vols", "time_to_expiry_years", ("ACT/365",)),
    ],
)
def test_key_columns_read_as_documented(table_name: str, column_name: str, words: tuple[str, ...]) -> None:
    description = TABLES[table_name].column(column_name).description
    for word in words:
        assert word in description, f"{table_name}.{column_name}: {description!r} lacks {word!r}"
