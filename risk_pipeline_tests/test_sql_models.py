"""The dbt-like runner: ref() ordering, unknown refs, cycles, and the shipped models on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from risk_pipeline.paths import SQL_MODELS_DIR
from risk_pipeline.sql_models import apply_models, load_models
from risk_pipeline.warehouse import Warehouse


def _write(folder: Path, **models: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name, sql in models.items():
        (folder / f"{name}.sql").write_text(sql)
    return folder


def test_models_come_after_what_they_reference(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "m",
        a_top="select * from {{ ref('m_mid') }}",
        m_mid="select symbol from {{ ref('z_base') }}",
        z_base="select symbol from {{ ref('market_prices') }}",
    )
    assert [m.name for m in load_models(folder)] == ["z_base", "m_mid", "a_top"]


def test_unknown_ref_and_cycle_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model or table"):
        load_models(_write(tmp_path / "u", a="select * from {{ ref('nope') }}"))
    with pytest.raises(ValueError, match="cycle"):
        load_models(_write(tmp_path / "c", a="select * from {{ ref('b') }}", b="select * from {{ ref('a') }}"))


def test_shipped_models_apply_twice_on_both_engines(warehouse: Warehouse) -> None:
    names = [m.name for m in apply_models(warehouse, SQL_MODELS_DIR)]
    assert {"latest_market_snapshot", "data_quality_summary"} <= set(names)
    apply_models(warehouse, SQL_MODELS_DIR)  # re-applying is idempotent
    for name in names:
        assert len(warehouse.query(f"SELECT * FROM risk.{name}")) == 0


def test_a_count_model_is_refused_with_an_unknown_ref_and_used_for_the_row_count(tmp_path: Path) -> None:
    folder = _write(tmp_path / "m", a="select symbol from {{ ref('market_prices') }}", b="select 1 as x")
    _write(folder / "row_counts", a="select count(*) as n from {{ ref('market_prices') }}")
    a, b = sorted(load_models(folder), key=lambda m: m.name)
    assert a.row_count_query() == "select count(*) as n from risk.market_prices"
    assert b.count_sql is None and b.row_count_query() == "SELECT COUNT(*) AS n FROM risk.b"
    _write(folder / "row_counts", a="select count(*) as n from {{ ref('nope') }}")
    with pytest.raises(ValueError, match=r"row_counts/a\.sql: ref to unknown"):
        load_models(folder)


def _returns_sessions(prices: dict[str, list[int]], held: set[str]) -> dict[str, set[int]]:
    """Per held symbol, the sessions of its returns in correlation_latest: the last 64 distinct priced sessions,
    a return on each of the symbol's sessions there after its first one there (the model's lag over those rows)."""
    window = sorted({d for days in prices.values() for d in days})[-64:]
    out = {}
    for symbol in held:
        days = sorted(d for d in prices.get(symbol, []) if d in window)
        if len(days) > 1:
            out[symbol] = set(days[1:])
    return out


def _insert_case(wh: Warehouse, prices: dict[str, list[int]], held_by_date: dict[int, list[str]]) -> None:
    import datetime as dt

    day0 = dt.date(2026, 1, 1)
    now = "TIMESTAMPTZ '2026-06-01 00:00:00+00'"
    wh.execute("DELETE FROM risk.market_prices")
    wh.execute("DELETE FROM risk.positions")

    def close(s: str, d: int) -> float:
        return 100.0 + (7 * d + len(s) * 3 + ord(s[-1])) % 11

    rows = [
        f"(DATE '{day0 + dt.timedelta(days=d)}', '{s}', 1, 1, 1, {close(s, d)}, 1, 't', 'r', {now})"
        for s, days in prices.items()
        for d in days
    ]
    if rows:
        wh.execute(
            "INSERT INTO risk.market_prices (as_of_date, symbol, open, high, low, close, volume, source, run_id,"
            " materialized_at) VALUES " + ", ".join(rows)
        )
    rows = [
        f"(DATE '{day0 + dt.timedelta(days=d)}', 'book{i % 2}', 'p{i}', 'stock', '{s}', 1, 1, 'x', 't', 'r', {now})"
        for d, symbols in held_by_date.items()
        for i, s in enumerate(symbols)
    ]
    if rows:
        wh.execute(
            "INSERT INTO risk.positions (as_of_date, book, position_id, instrument_type, symbol, quantity,"
            " multiplier, strategy, source, run_id, materialized_at) VALUES " + ", ".join(rows)
        )


def test_correlation_latest_row_count_is_the_views_count(warehouse: Warehouse) -> None:
    """The count model against COUNT(*) of the view (what the step ran before) and the pairs with a common
    return session (independent oracle): gaps, disjoint windows, one price, prices outside the window, a symbol
    held twice, an unheld symbol, a random case and the empty tables."""
    import random

    model = next(m for m in apply_models(warehouse, SQL_MODELS_DIR) if m.name == "correlation_latest")
    assert model.count_sql is not None
    full = list(range(80))
    hand = {
        "AAA": full,
        "BBB": full,
        "CCC": list(range(16, 40)),  # the window's first part
        "DDD": list(range(60, 80)),  # its last part: no common session with CCC
        "EEE": [50],  # one price: no return
        "FFF": list(range(16, 80, 2)),  # every other session
        "GGG": list(range(0, 15)),  # before the window
        "HHH": list(range(16, 40)),  # CCC's sessions
        "III": [39, 60],  # one return, on DDD's first session (DDD has none there)
        "XXX": full,  # not held at the latest date
    }
    held = {79: ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH", "III", "AAA"], 70: ["XXX"]}
    rng = random.Random(7)
    symbols = [f"R{i:02d}" for i in range(30)]
    randomized = {}
    for s in symbols:
        start = rng.randrange(0, 90)
        days = [d for d in range(start, min(100, start + rng.randrange(1, 60))) if rng.random() < 0.7]
        if days:
            randomized[s] = days
    cases = [
        (hand, held),
        (randomized, {99: symbols[:25], 98: symbols}),
        ({}, {}),
        (hand, {}),
    ]
    for prices, held_by_date in cases:
        _insert_case(warehouse, prices, held_by_date)
        latest = held_by_date[max(held_by_date)] if held_by_date else []
        sessions = _returns_sessions(prices, set(latest))
        oracle = sum(1 for a in sessions.values() for b in sessions.values() if a & b)
        view = int(warehouse.query("SELECT COUNT(*) AS n FROM risk.correlation_latest")["n"].iloc[0])
        got = warehouse.query(model.row_count_query())["n"].iloc[0]
        assert int(got) == view == oracle
    assert oracle == 0 and view == 0
