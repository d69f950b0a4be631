"""var_backtest's reads: one var_results read per book for both levels, one GJR read for every book's names."""

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from risk_pipeline.contracts import table
from risk_pipeline.defs.risk.backtest import CONFIDENCE, ES_CONFIDENCE, book_series
from risk_pipeline.defs.risk.var import gjr_wins
from risk_pipeline.warehouse import Warehouse

NAV_COLUMNS = ["as_of", "as_of_date", "book", "nav", "peak_nav", "daily_pnl", "drawdown_pct", "pnl_basis", "capital"]
VAR_COLUMNS = ["as_of", "as_of_date", "book", "method", "horizon_days", "confidence", "var", "expected_shortfall"]
VAR_COLUMNS += ["n_scenarios", "lookback_days", "seed"]


def _book_series_in_three_reads(wh: Warehouse, book: str, until: dt.date) -> pd.DataFrame:
    """``book_series`` as written before: the valuations, then a var_results read per level."""
    nav = wh.query(
        "SELECT n.as_of, n.as_of_date, n.daily_pnl, n.pnl_basis FROM risk.book_nav n WHERE n.book = ? "
        "AND n.as_of_date <= ? AND n.as_of = (SELECT MAX(m.as_of) FROM risk.book_nav m "
        "WHERE m.book = n.book AND m.as_of_date = n.as_of_date) ORDER BY n.as_of",
        [book, until],
    )
    var = wh.query(
        "SELECT as_of, as_of_date, method, var, n_scenarios, lookback_days, seed FROM risk.var_results "
        "WHERE book = ? AND horizon_days = 1 AND confidence = ?",
        [book, CONFIDENCE],
    )
    if nav.empty or var.empty:
        return pd.DataFrame()
    wide = var.pivot(index="as_of", columns="method", values="var")
    at_es = wh.query(
        "SELECT as_of, method, var, expected_shortfall FROM risk.var_results "
        "WHERE book = ? AND horizon_days = 1 AND confidence = ?",
        [book, ES_CONFIDENCE],
    )
    if len(at_es):
        for value, prefix in (("var", "es_var:"), ("expected_shortfall", "es:")):
            part = at_es.pivot(index="as_of", columns="method", values=value)
            wide = wide.join(part.add_prefix(prefix), how="left")
    nav["previous_as_of"] = nav["as_of"].shift(1)
    nav["previous_date"] = nav["as_of_date"].shift(1)
    nav = nav[~nav["pnl_basis"].str.startswith("inception")].dropna(subset=["previous_as_of"])
    at_99 = [c for c in wide.columns if ":" not in c]
    return nav.join(wide, on="previous_as_of").dropna(subset=at_99, how="all")


def _warehouse(tmp_path: Path) -> Warehouse:
    wh = Warehouse(str(tmp_path / "wh.duckdb"))
    wh.ensure_tables(["book_nav", "var_results", "vol_forecasts"])
    rng = np.random.default_rng(7)
    days = [dt.date(2026, 11, d) for d in (2, 3, 4, 5, 6, 9, 10)]
    nav, var = [], []
    for book in ("a", "b", "c", "d"):
        for i, day in enumerate(days):
            stamps = [pd.Timestamp(day) + pd.Timedelta(hours=21)]
            if book == "a" and i == 3:  # two valuations of one day: the later one counts
                stamps.insert(0, pd.Timestamp(day) + pd.Timedelta(hours=15))
            for as_of in stamps:
                if book != "b":
                    basis = "inception (no previous valuation)" if i == 0 else "mark to market"
                    nav.append((as_of, day, book, 1e6, 1e6, rng.normal(0, 1e4), 0.0, basis, 1e6))
                if book == "c":
                    continue
                for method in ("historical", "delta_normal", "monte_carlo_fhs"):
                    for horizon in (1, 10):
                        for level in (0.95, ES_CONFIDENCE, CONFIDENCE):
                            if book == "d" and level == CONFIDENCE:
                                continue  # no 99 % rows: no series
                            if book == "a" and i == 2 and level == ES_CONFIDENCE and method == "delta_normal":
                                continue  # one day without one method's ES rows
                            if book == "a" and i == 4 and level == CONFIDENCE and method == "historical":
                                continue  # one day without one method's VaR
                            v = abs(rng.normal(2e4, 5e3)) * (1 + horizon / 10) * (1 + level)
                            var.append((as_of, day, book, method, horizon, level, v, 1.3 * v, 500, 250, 0))
    for name, data, columns in (("book_nav", nav, NAV_COLUMNS), ("var_results", var, VAR_COLUMNS)):
        frame = pd.DataFrame(data, columns=columns).reindex(columns=table(name).data_column_names)
        wh.append(name, frame.astype(object).where(frame.notna(), None), run_id="t")
    return wh


def test_book_series_from_one_read_of_both_levels_equals_a_read_per_level(tmp_path: Path) -> None:
    wh = _warehouse(tmp_path)
    for book in ("a", "b", "c", "d", "none"):
        for until in (dt.date(2026, 11, 6), dt.date(2026, 11, 10), dt.date(2026, 11, 1)):
            expected = _book_series_in_three_reads(wh, book, until)
            got = book_series(wh, book, until)
            pd.testing.assert_frame_equal(got, expected, check_exact=True)
    full = book_series(wh, "a", dt.date(2026, 11, 10))
    assert len(full) == 6 and full["es:delta_normal"].isna().sum() == 1 and full["historical"].isna().sum() == 1
    assert book_series(wh, "d", dt.date(2026, 11, 10)).empty and book_series(wh, "c", dt.date(2026, 11, 10)).empty


def test_gjr_flags_of_every_books_names_read_once_are_each_books_own(tmp_path: Path) -> None:
    wh = _warehouse(tmp_path)
    session = dt.date(2026, 11, 10)
    rows = []
    for day, shift in ((dt.date(2026, 11, 9), 1.0), (session, 0.0), (dt.date(2026, 11, 11), -1.0)):
        for j, name in enumerate(["AAA", "BBB", "CCC", "DDD", "EEE"]):
            for model, loss in (("garch", 1.0 + shift), ("gjr", 1.0 + 0.1 * (j - 2) + shift), ("ewma", 0.0)):
                if (name, model) in {("DDD", "gjr"), ("EEE", "garch"), ("EEE", "gjr")}:
                    continue  # a name without one loss, or without either: GARCH
                rows.append((day, name, model, 1, 0.2, loss, False))
    frame = pd.DataFrame(
        rows, columns=["as_of_date", "symbol", "model", "horizon_days", "annualized_vol", "oos_loss", "selected"]
    )
    frame = frame.reindex(columns=table("vol_forecasts").data_column_names)
    wh.append("vol_forecasts", frame.astype(object).where(frame.notna(), None), run_id="t")
    names = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]
    union = dict(zip(names, gjr_wins(wh, session, names).tolist(), strict=True))
    assert union == {"AAA": True, "BBB": True, "CCC": False, "DDD": False, "EEE": False, "FFF": False}
    for book in (["CCC", "AAA"], ["FFF"], ["BBB", "DDD", "EEE"], names[::-1]):
        own = gjr_wins(wh, session, book)
        taken = np.array([union[s] for s in book], dtype=bool)
        assert own.dtype == taken.dtype and np.array_equal(own, taken)
