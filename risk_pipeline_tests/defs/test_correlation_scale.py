"""correlation_matrix's rows as categorical columns, and what position_sizing reads of them, against references
written out here: numpy's corrcoef in long form with plain object columns, and a brute-force filter of the matrix."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.contracts import table
from risk_pipeline.defs.sizing.assets import correlation_inputs, correlation_rows
from risk_pipeline.quant import sizing as sz
from risk_pipeline.warehouse import Warehouse, WarehouseError, _coerce

SESSION = dt.date(2026, 12, 3)
AS_OF = pd.Timestamp("2026-12-03T21:00:00Z")
COLUMNS = table("correlation_matrix").data_column_names


def _matrix(n: int, seed: int = 3) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    common = rng.normal(size=(63, 1))
    r = common * rng.uniform(0.0, 2.0, n) + rng.normal(size=(63, n))
    corr = np.corrcoef(r, rowvar=False)
    symbols = [f"N{k:02d}" for k in rng.permutation(n)]  # not in sorted order: the rows follow the list
    return symbols, corr, sz.correlation_clusters(corr, 0.5)


def _reference(symbols: list[str], corr: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """One row per (symbol_a, symbol_b), symbol_a major, plain Python values."""
    n = len(symbols)
    rows = [
        {
            "as_of": AS_OF,
            "as_of_date": SESSION,
            "symbol_a": symbols[i],
            "symbol_b": symbols[j],
            "correlation": float(corr[i, j]),
            "window_days": 63,
            "cluster_a": int(labels[i]),
            "cluster_b": int(labels[j]),
            "min_cluster_correlation": 0.5,
        }
        for i, j in itertools.product(range(n), range(n))
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def _stored(wh: Warehouse) -> pd.DataFrame:
    got = wh.read("correlation_matrix", {"as_of": AS_OF}, columns=COLUMNS)
    return got.sort_values(["symbol_a", "symbol_b"], ignore_index=True)


def test_rows_are_the_long_form_of_the_matrix_and_store_as_plain_columns(warehouse: Warehouse) -> None:
    symbols, corr, labels = _matrix(9)
    rows = correlation_rows(AS_OF, SESSION, symbols, corr, labels, 63, 0.5)
    expected = _reference(symbols, corr, labels)
    assert list(rows.columns) == COLUMNS and len(rows) == 81
    for c in ("symbol_a", "symbol_b", "as_of_date"):  # 2 bytes a row, not an object per row
        assert isinstance(rows[c].dtype, pd.CategoricalDtype)
        assert list(rows[c].astype(object)) == list(expected[c])
    for c in ("correlation", "window_days", "cluster_a", "cluster_b", "min_cluster_correlation"):
        np.testing.assert_array_equal(rows[c].to_numpy(), expected[c].to_numpy())
    assert (rows["as_of"] == AS_OF).all()

    warehouse.write_many([("correlation_matrix", rows, [{"as_of": AS_OF}])], run_id="new")
    new = _stored(warehouse)
    warehouse.write_many([("correlation_matrix", expected, [{"as_of": AS_OF}])], run_id="reference")
    reference = _stored(warehouse)
    pd.testing.assert_frame_equal(new, reference)  # values and dtypes as read back
    assert new["symbol_a"].dtype == object and isinstance(new["as_of_date"].iloc[0], dt.date)


def test_categorical_text_keeps_the_contract_checks(warehouse: Warehouse) -> None:
    symbols, corr, labels = _matrix(3)
    rows = correlation_rows(AS_OF, SESSION, symbols, corr, labels, 63, 0.5)
    missing = rows.assign(symbol_b=rows["symbol_b"].cat.set_categories(symbols[:2]))  # the third becomes missing
    with pytest.raises(WarehouseError, match="NULL in NOT NULL column 'symbol_b'"):
        warehouse.write_many([("correlation_matrix", missing, [{"as_of": AS_OF}])], run_id="x")
    twice = pd.concat([rows, rows.iloc[:1]], ignore_index=True)
    twice["symbol_a"] = pd.Categorical(twice["symbol_a"].astype(object), categories=symbols)
    twice["symbol_b"] = pd.Categorical(twice["symbol_b"].astype(object), categories=symbols)
    with pytest.raises(WarehouseError, match="duplicate key"):
        warehouse.write_many([("correlation_matrix", twice, [{"as_of": AS_OF}])], run_id="x")
    assert warehouse.row_count("correlation_matrix") == 0
    # categories that become equal text (1 and "1") are written as the plain text column
    one = pd.DataFrame({"x": pd.Categorical([1, "1", 1], categories=[1, "1"])})
    got = _coerce(one["x"], "text", "t", "x")
    assert got.dtype == object and list(got) == ["1", "1", "1"]


def test_sizing_reads_the_clusters_and_the_pairs_above_the_lowest_cap(warehouse: Warehouse) -> None:
    symbols, corr, labels = _matrix(12, seed=8)
    warehouse.write_many(
        [("correlation_matrix", correlation_rows(AS_OF, SESSION, symbols, corr, labels, 63, 0.5), [{"as_of": AS_OF}])],
        run_id="x",
    )
    clusters, correlated = correlation_inputs(warehouse, AS_OF, [0.6, 0.3])
    assert clusters == {s: int(c) for s, c in zip(symbols, labels, strict=True)}
    expected: dict[str, dict[str, float]] = {}
    for i, j in itertools.product(range(12), range(12)):  # brute force over the numpy matrix
        if i != j and corr[i, j] >= 0.3:
            expected.setdefault(symbols[i], {})[symbols[j]] = float(corr[i, j])
    assert sum(len(v) for v in expected.values()) > 10  # the case has pairs on both sides of the cap
    assert sum(len(v) for v in expected.values()) < 12 * 11
    assert correlated == expected
    assert correlation_inputs(warehouse, AS_OF, []) == (clusters, {})
    assert correlation_inputs(warehouse, AS_OF + pd.Timedelta(days=1), [0.3]) == ({}, {})


def test_sessions_to_earnings_counts_business_days_to_the_next_event() -> None:
    from risk_pipeline.defs.sizing.assets import sessions_to_earnings

    dates = [
        dt.date(2026, 11, 2) + dt.timedelta(days=k) for k in range(40) if (dt.date(2026, 11, 2).weekday() + k) % 7 < 5
    ]
    # event times in UTC; the New York date counts (the 01:30 UTC event is the previous evening in New York)
    events = {
        "AAA": ["2026-11-10T12:00:00Z", "2026-11-25T01:30:00Z"],
        "BBB": ["2026-11-03T21:00:00Z"],
        "CCC": [],
    }
    rows = [{"event_type": "earnings", "symbol": s, "event_time": t} for s, ts in events.items() for t in ts]
    rows += [{"event_type": "fomc", "symbol": None, "event_time": "2026-11-12T19:00:00Z"}]
    calendar = pd.DataFrame(rows)
    got = sessions_to_earnings(dates, ["CCC", "AAA", "BBB", "DDD"], calendar, cap=10)
    for j, s in enumerate(["CCC", "AAA", "BBB", "DDD"]):
        local = sorted(pd.Timestamp(t).tz_convert("America/New_York").date() for t in events.get(s, []))
        for i, d in enumerate(dates):
            nxt = [e for e in local if e >= d]
            want = 10.0 if not nxt else min(float(np.busday_count(d, nxt[0])), 10.0)  # brute force per cell
            assert got[i, j] == want, (s, d)
    assert got[dates.index(dt.date(2026, 11, 24)), 1] == 0.0  # AAA's second event is on the 24th in New York
    assert (sessions_to_earnings(dates, ["AAA"], calendar.iloc[:0]) == 63.0).all()


def test_best_forecasts_pick_the_lowest_loss_per_symbol_and_horizon() -> None:
    from risk_pipeline.defs.sizing.assets import best_forecasts

    rng = np.random.default_rng(4)
    rows = [(f"S{k % 7}", m, h) for k in range(21) for m in ("EWMA", "GARCH", "GJR") for h in (1, 5)]
    rows = [rows[k] for k in rng.permutation(len(rows))]
    f = pd.DataFrame(rows, columns=["symbol", "model", "horizon_days"]).drop_duplicates(ignore_index=True)
    f["annualized_vol"] = rng.uniform(0.1, 0.5, len(f))
    f["oos_loss"] = np.round(rng.uniform(0.0, 1.0, len(f)), 1)  # ties: the earlier row wins
    f.loc[rng.random(len(f)) < 0.2, "oos_loss"] = np.nan
    f["n_oos"] = rng.integers(50, 300, len(f))
    got = best_forecasts(f)
    expected = {}
    for s, h in sorted(set(zip(f["symbol"], f["horizon_days"], strict=True))):  # brute force per key, row by row
        g = [r for r in f.itertuples() if r.symbol == s and r.horizon_days == h and not np.isnan(r.oos_loss)]
        if not g:
            continue
        order = sorted(range(len(g)), key=lambda k: (g[k].oos_loss, k))
        best, rest = g[order[0]], [g[k] for k in order[1:]]
        others = ", ".join(f"{r.model} {r.oos_loss:.4g}" for r in rest) or "no other model"
        reason = f"lowest OOS QLIKE {best.oos_loss:.4g} (n_oos={best.n_oos}) against {others}"
        expected[(s, int(h))] = (best.annualized_vol, best.model, reason)
    assert got == expected and len(expected) == 14
    assert best_forecasts(f.iloc[:0]) == {}
