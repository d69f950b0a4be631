"""performance_analytics in the shared end-of-day run, re-materialized on a scripted NAV history, and the
counterfactual of a scripted preservation episode through the asset's own event code; option MFE/MAE on a
scripted warehouse; completed control events carried over between two partitions."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.calendar import sessions
from risk_pipeline.contracts import table
from risk_pipeline.defs.analytics import assets as analytics
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.defs.conftest import SESSION

Run = tuple[Warehouse, dg.ExecuteInProcessResult]
BOOKS = {"core_equity", "vol_overlay"}


def test_end_of_day_writes_performance_analytics_for_both_books(run: Run) -> None:
    wh, result = run
    mats = [
        m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == "performance_analytics"
    ]
    assert mats, "performance_analytics not materialized"
    checks = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "performance_analytics"
    }
    assert checks == {"metrics_finite": True, "strategies_sum_to_book": True}
    rows = wh.read("performance_analytics")
    assert set(rows["book"]) == BOOKS
    for book in BOOKS:
        mine = rows[rows["book"] == book]
        assert set(mine.loc[mine["strategy"] == "*", "window"]) == {"1d", "21d", "63d", "252d", "inception"}
        assert {"trades", "stops", "control:capital_preservation", "control:hedge", "control:gap_risk"} <= set(
            mine["strategy"]
        )
        # the first valuation of a book is its inception: no daily return yet
        assert (mine.loc[mine["strategy"] == "*", "n_obs"] == 0).all()
        assert json.loads(mine["inputs"].iloc[0])["ratios"] == "empyrical-reloaded"


@pytest.fixture(scope="module")
def scripted(run: Run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, np.ndarray]:
    """A copy of the run with 30 earlier sessions of core_equity NAV (scripted daily P&L), re-materialized."""
    wh, _ = run
    tmp = tmp_path_factory.mktemp("analytics")
    url = str(tmp / "risk_warehouse.duckdb")
    shutil.copy(wh.url, url)
    copy = Warehouse(url)
    days = [d for d in sessions(SESSION - dt.timedelta(days=60), SESSION) if d < SESSION][-30:]
    pnl = np.array([(-1) ** i * 1000.0 * (i % 7) - 300.0 * (i % 3) for i in range(30)])
    nav = 75e6 + np.cumsum(pnl)
    rows = pd.DataFrame(
        {
            "as_of": [pd.Timestamp(f"{d}T21:00:00Z") for d in days],
            "as_of_date": days,
            "book": "core_equity",
            "nav": nav,
            "peak_nav": np.maximum.accumulate(nav),
            "daily_pnl": pnl,
            "drawdown_pct": 1 - nav / np.maximum.accumulate(nav),
            "pnl_basis": "scripted",
            "previous_as_of": [pd.Timestamp(f"{d}T20:00:00Z") for d in days],
            "capital": 75e6,
        }
    )
    for r in rows.to_dict("records"):
        copy.write("book_nav", pd.DataFrame([r]), run_id="scripted", partitions=[{"as_of": r["as_of"]}])
    result = dg.materialize(
        [analytics.performance_analytics],
        partition_key=SESSION.isoformat(),
        resources={"warehouse": WarehouseResource(url=url)},
    )
    assert result.success
    returns = pnl / (nav - pnl)
    return copy, returns


def test_book_ratios_from_a_scripted_nav_history(scripted: tuple[Warehouse, np.ndarray]) -> None:
    wh, r = scripted
    rows = wh.read("performance_analytics", {"book": "core_equity", "strategy": "*"}).set_index("window")
    last21 = r[-21:]
    row = rows.loc["21d"]
    assert row["n_obs"] == 21
    sd = float(np.std(last21, ddof=1))
    assert row["sharpe_ratio"] == pytest.approx(last21.mean() / sd * np.sqrt(252), rel=1e-9)
    assert row["annual_volatility"] == pytest.approx(sd * np.sqrt(252), rel=1e-9)
    assert row["cumulative_return"] == pytest.approx(np.prod(1 + last21) - 1, rel=1e-9)
    w = np.cumprod(1 + r)
    assert rows.loc["inception", "max_drawdown"] == pytest.approx(
        max(1 - w / np.maximum.accumulate(np.r_[1.0, w])[1:]), rel=1e-9
    )
    assert rows.loc["inception", "n_obs"] == 30 and rows.loc["63d", "n_obs"] == 30
    assert rows.loc["1d", "n_obs"] == 0  # today's row is the run's inception valuation


def _script_prices(monkeypatch: pytest.MonkeyPatch, book: pd.DataFrame, factors: dict[dt.date, float]) -> list[int]:
    """Scripted valuations: every position of ``book`` (by the id after its ``s<k>:``/``d<k>:`` prefix) at its unit
    price times ``factors[day]``, a valuation on the days of ``factors`` only; returns the list of the frame sizes
    valued, one per call."""
    unit = dict(zip(book["position_id"], book["market_value"] / (book["quantity"] * book["multiplier"]), strict=True))
    sizes: list[int] = []

    def fake_value(wh_: Warehouse, day: dt.date, t: pd.Timestamp, positions: pd.DataFrame, **_: object) -> pd.DataFrame:
        sizes.append(len(positions))
        base = positions["position_id"].str.split(":", n=1).str[1].map(unit).to_numpy(float)
        mv = positions["quantity"].to_numpy(float) * positions["multiplier"].to_numpy(float) * base * factors[day]
        return pd.DataFrame({"market_value": mv})

    def fake_latest(wh_: Warehouse, table: str, day: dt.date, before: bool = False) -> pd.Timestamp | None:
        return pd.Timestamp(f"{day}T21:00:00Z") if day in factors else None

    monkeypatch.setattr(analytics, "value_positions", fake_value)
    monkeypatch.setattr(analytics, "latest_as_of", fake_latest)
    return sizes


def test_counterfactual_of_a_scripted_preservation_episode(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """core_equity enters light preservation at the run's valuation and halves its first position; the next
    three sessions are priced from a script. The static book without the cut and with it are revalued."""
    wh, _ = run
    as_of = analytics.latest_as_of(wh, "position_greeks", SESSION)
    book = wh.read("position_greeks", {"as_of": as_of, "book": "core_equity"})
    first = book.iloc[0]
    cut = -float(first["quantity"]) / 2
    later = list(sessions(SESSION + dt.timedelta(days=1), SESSION + dt.timedelta(days=10)))[:3]
    # scripted unit prices: every position's price moves by the same factors
    factors = {SESSION: 1.0, later[0]: 0.97, later[1]: 0.95, later[2]: 0.99}
    _script_prices(monkeypatch, book, factors)
    event = {"type": "capital_preservation", "book": "core_equity", "as_of": as_of, "id": "light:REDUCING",
             "trades": {first["position_id"]: cut}}  # fmt: skip
    (got,) = analytics.judge_events(wh, [event], later[-1], horizon=5)
    mv0 = float(book["market_value"].sum())
    path = np.array([factors[d] for d in [SESSION, *later]])
    without = np.diff(mv0 * path)
    first_mv = float(first["market_value"])
    with_ = np.diff((mv0 + first_mv * cut / float(first["quantity"])) * path)
    assert got["n_sessions"] == 3
    assert got["pnl_without"] == pytest.approx(without.sum(), rel=1e-12)
    assert got["pnl_with"] == pytest.approx(with_.sum(), rel=1e-12)
    assert got["difference"] == pytest.approx(with_.sum() - without.sum(), rel=1e-12)
    cum = np.r_[0.0, np.cumsum(without)]
    assert got["max_drawdown_without"] == pytest.approx((np.maximum.accumulate(cum) - cum).max(), rel=1e-12)
    assert len(got["valuations"]) == 4 and got["session"] == SESSION.isoformat()


def test_limit_status_records_the_effective_configuration(run: Run, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The shipped run has no preset; re-run on a copy with core_equity at conservative and an environment
    drawdown override: its rows say so and its drawdown cap is the environment's."""
    import yaml

    from risk_pipeline.defs.exposures.limits import risk_limits
    from risk_pipeline.paths import LIMITS_FILE

    wh, _ = run
    shipped = wh.read("limit_status")
    version = yaml.safe_load(LIMITS_FILE.read_text())["version"]
    assert set(shipped["effective_config"]) == {f"limits {version}; risk_level none; environment none"}
    assert shipped["risk_level"].isna().all()
    tmp = tmp_path_factory.mktemp("presets")
    url = str(tmp / "risk_warehouse.duckdb")
    shutil.copy(wh.url, url)
    raw = yaml.safe_load(LIMITS_FILE.read_text())
    raw["books"]["core_equity"]["risk_level"] = "conservative"
    (tmp / "limits.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RISK_PIPELINE_MAX_DRAWDOWN_PCT_CORE_EQUITY", "0.07")
        result = dg.materialize(
            [risk_limits],
            partition_key=SESSION.isoformat(),
            resources={"warehouse": WarehouseResource(url=url)},
            run_config={"ops": {"risk_limits": {"config": {"limits_file": str(tmp / "limits.yaml")}}}},
        )
    assert result.success
    rows = Warehouse(url).read("limit_status", {"book": "core_equity"}).set_index("limit_name")
    assert set(rows["risk_level"]) == {"conservative"}
    assert set(rows["effective_config"]) == {
        f"limits {version}; risk_level conservative; environment RISK_PIPELINE_MAX_DRAWDOWN_PCT_CORE_EQUITY=0.07"
    }
    assert rows.loc["max_drawdown_pct", "threshold"] == 0.07
    assert rows.loc["max_daily_loss_pct_nav", "threshold"] == 0.01  # the conservative preset's
    assert rows.loc["max_pairwise_correlation", "threshold"] == 0.92  # the book's own value wins


def test_option_round_trips_get_mfe_mae_from_their_quote_mids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted warehouse: two round trips of one call (long, then short), one of a put and one of the stock.
    Options: path = entry fill, quote mids strictly between the fills, exit fill; all quotes in one query."""
    wh = Warehouse(str(tmp_path / "w.duckdb"))
    wh.ensure_tables(["executions", "market_prices", "option_quotes"])
    d = sessions(dt.date(2026, 11, 10), dt.date(2026, 11, 20))[-7:]  # d[0] .. d[6]
    expiry = dt.date(2026, 12, 18)

    def at(i: int, hour: int) -> pd.Timestamp:
        return pd.Timestamp(f"{d[i]}T{hour:02d}:00:00Z")

    fills = [  # (time, session, instrument, strike, type, side, quantity, price)
        (at(1, 15), 1, "option", 100.0, "C", "buy", 2, 3.00),
        (at(3, 15), 3, "option", 100.0, "C", "sell", 2, 3.60),
        (at(4, 15), 4, "option", 100.0, "C", "sell", 1, 4.00),
        (at(5, 15), 5, "option", 100.0, "C", "buy", 1, 3.50),
        (at(1, 16), 1, "option", 90.0, "P", "buy", 1, 1.00),
        (at(2, 16), 2, "option", 90.0, "P", "sell", 1, 0.90),
        (at(1, 15), 1, "stock", None, None, "buy", 100, 100.0),
        (at(3, 15), 3, "stock", None, None, "sell", 100, 104.0),
    ]
    opt = [f[2] == "option" for f in fills]
    wh.append(
        "executions",
        pd.DataFrame(
            {
                "client_order_id": [f"o{i}" for i in range(len(fills))],
                "execution_id": [f"o{i}" for i in range(len(fills))],
                "at": [f[0] for f in fills],
                "as_of_date": [d[f[1]] for f in fills],
                "book": "b",
                "symbol": "SYN",
                "instrument_type": [f[2] for f in fills],
                "expiry": [expiry if o else None for o in opt],
                "strike": [f[3] for f in fills],
                "option_type": [f[4] for f in fills],
                "exercise_style": ["american" if o else None for o in opt],
                "multiplier": [100.0 if o else 1.0 for o in opt],
                "side": [f[5] for f in fills],
                "quantity": [float(f[6]) for f in fills],
                "price": [f[7] for f in fills],
                "strategy": "s",
                "source": "test",
                "pre_trade_decision": None,
            }
        ),
        run_id="test",
    )
    quotes = [  # (time, strike, type, bid, ask)
        (at(0, 21), 100.0, "C", 9.9, 10.1),  # before the first trip: out
        (at(1, 15), 100.0, "C", 0.0, 0.2),  # at the opening fill itself: out (the fill price is the path's point)
        (at(1, 21), 100.0, "C", 3.3, 3.5),  # mid 3.40
        (at(2, 21), 100.0, "C", 2.4, 2.6),  # mid 2.50
        (at(3, 21), 100.0, "C", 4.9, 5.1),  # 5.00: after the first trip's exit, before the second's entry: out
        (at(4, 21), 100.0, "C", 4.5, 4.7),  # mid 4.60
        (at(5, 21), 100.0, "C", 0.4, 0.6),  # after the second trip: out
        (at(1, 21), 90.0, "P", 1.1, 1.3),  # mid 1.20
        (at(1, 21), 95.0, "P", 8.9, 9.1),  # another strike: out
    ]
    wh.write(
        "option_quotes",
        pd.DataFrame(
            {
                "as_of": [q[0] for q in quotes],
                "as_of_date": [q[0].tz_convert("America/New_York").date() for q in quotes],
                "underlying": "SYN",
                "expiry": expiry,
                "strike": [q[1] for q in quotes],
                "option_type": [q[2] for q in quotes],
                "bid": [q[3] for q in quotes],
                "ask": [q[4] for q in quotes],
                "last": None,
                "volume": 0.0,
                "open_interest": 0.0,
                "underlying_price": 100.0,
                "exercise_style": "american",
                "multiplier": 100.0,
                "source": "test",
            }
        ),
        run_id="test",
    )
    highs, lows = [150.0, 101.0, 106.0, 105.0, 103.0, 103.0, 103.0], [50.0, 99.0, 98.0, 100.0, 101.0, 101.0, 101.0]
    wh.write(
        "market_prices",
        pd.DataFrame(
            {
                "as_of_date": d,
                "symbol": "SYN",
                "open": 100.0,
                "high": highs,
                "low": lows,
                "close": 100.0,
                "volume": 1.0,
                "event_flag": None,
                "source": "test",
            }
        ),
        run_id="test",
    )
    option_queries: list[str] = []
    query = Warehouse.query

    def counting(self: Warehouse, sql: str, params: Sequence[object] = ()) -> pd.DataFrame:
        if "option_quotes" in sql:
            option_queries.append(sql)
        return query(self, sql, params)

    monkeypatch.setattr(Warehouse, "query", counting)
    rows = analytics.trade_rows(wh, "b", d[6], at(6, 21), horizon=5)
    (row,) = [r for r in rows if r["strategy"] == "trades" and r["window"] == "inception"]
    trips = {(t["instrument"].split("|")[0 if "stock" in t["instrument"] else 3], t["side"]): t
             for t in json.loads(row["events"])}  # fmt: skip
    assert len(trips) == 4 and len(option_queries) == 1
    # long call from 3.00: path 3.00, 3.40, 2.50, 3.60 -> MFE (3.60 - 3.00) / 3.00, MAE (3.00 - 2.50) / 3.00
    long_call = trips[("100.0", 1.0)]
    assert (long_call["mfe"], long_call["mae"]) == (pytest.approx(0.6 / 3.0), pytest.approx(0.5 / 3.0))
    # short call from 4.00: path 4.00, 4.60, 3.50 -> MFE (4.00 - 3.50) / 4.00, MAE (4.60 - 4.00) / 4.00
    short_call = trips[("100.0", -1.0)]
    assert (short_call["mfe"], short_call["mae"]) == (pytest.approx(0.125), pytest.approx(0.15))
    # long put from 1.00: path 1.00, 1.20, 0.90 -> MFE 0.20, MAE 0.10
    put = trips[("90.0", 1.0)]
    assert (put["mfe"], put["mae"]) == (pytest.approx(0.2), pytest.approx(0.1))
    # the stock from 100 over the bars of d1..d3: high 106, low 98
    stock = trips[("SYN", 1.0)]
    assert (stock["mfe"], stock["mae"]) == (pytest.approx(0.06), pytest.approx(0.02))
    assert row["average_mfe"] == pytest.approx((0.2 + 0.125 + 0.2 + 0.06) / 4)
    assert row["average_mae"] == pytest.approx((0.5 / 3 + 0.15 + 0.1 + 0.02) / 4)


def test_judge_from_starts_after_the_last_event_complete_in_the_previous_partition() -> None:
    s = sessions(dt.date(2026, 10, 1), dt.date(2026, 11, 20))
    start = s[0]
    # consecutive partitions, horizon 5: the events of the last 6 sessions (the previous one judged them short)
    assert analytics.judge_from(s[-1], s[-2], 5, start) == s[-6]
    # the previous partition 4 sessions back: its last complete event was 5 sessions before it (s[-10])
    assert analytics.judge_from(s[-1], s[-5], 5, start) == s[-9]
    assert analytics.judge_from(s[-1], s[-2], 0, start) == s[-1]
    # no previous partition: the whole cache window; a previous partition older than the window: the window
    assert analytics.judge_from(s[-1], None, 5, s[-30]) == s[-30]
    assert analytics.judge_from(s[-1], s[-30], 5, s[-10]) == s[-10]


def test_completed_control_events_are_carried_over_not_revalued(
    run: Run, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the run with core_equity valued (the run's positions) at six earlier sessions and entering
    capital preservation three times (each cutting its first position), horizon 2 sessions. performance_analytics
    for the session before the run's (D0), then for the run's (D1): the events of s[-26] and s[-4] were complete
    in D0 and are carried into D1 unchanged, never revalued; the one of s[-3] is judged again with one more
    session. Every position is priced by a scripted factor per session, changed between the two runs."""
    wh, _ = run
    url = str(tmp_path_factory.mktemp("carry") / "risk_warehouse.duckdb")
    shutil.copy(wh.url, url)
    copy = Warehouse(url)
    s = sessions(SESSION - dt.timedelta(days=60), SESSION)
    d0, d1, horizon = s[-2], s[-1], 2

    def t(day: dt.date) -> pd.Timestamp:
        return pd.Timestamp(f"{day}T20:45:00Z")

    greeks = copy.read("position_greeks")
    for day in (s[-26], s[-25], s[-24], s[-4], s[-3], s[-2]):
        frame = greeks.assign(as_of=t(day), as_of_date=day)
        copy.write("position_greeks", frame, run_id="t", partitions=[{"as_of": t(day)}])
    navs = copy.read("book_nav")
    copy.write("book_nav", navs.assign(as_of=t(d0), as_of_date=d0), run_id="t", partitions=[{"as_of": t(d0)}])
    book = greeks[greeks["book"] == "core_equity"].reset_index(drop=True)
    first = book.iloc[0]
    cuts = {s[-26]: 0.5, s[-4]: 0.25, s[-3]: 0.5}  # share of the first position cut at each event
    for day, level in ((s[-26], "light"), (s[-25], "none"), (s[-4], "light"), (s[-3], "moderate")):
        state = {"as_of": t(day), "book": "core_equity", "state": "REDUCING" if level != "none" else "ACTIVE",
                 "preservation_level": level, "reason": "scripted"}  # fmt: skip
        state_row = pd.DataFrame([state]).reindex(columns=table("trading_state").data_column_names)
        copy.write("trading_state", state_row, run_id="t", partitions=[{"as_of": t(day)}])
        if day in cuts:
            q = float(first["quantity"])
            cut = {"as_of": t(day), "book": "core_equity", "position_id": first["position_id"],
                   "symbol": first["symbol"], "quantity_before": q, "reduce_quantity": cuts[day] * q,
                   "quantity_after": (1 - cuts[day]) * q, "reason": "scripted", "limits_cleared": "[]"}  # fmt: skip
            copy.write("required_reductions", pd.DataFrame([cut]), run_id="t", partitions=[{"as_of": t(day)}])
    unit = dict(zip(book["position_id"], book["market_value"] / (book["quantity"] * book["multiplier"]), strict=True))
    factors: dict[dt.date, float] = {}

    def fake_value(
        wh_: Warehouse, day: dt.date, as_of: pd.Timestamp, positions: pd.DataFrame, **_: object
    ) -> pd.DataFrame:
        base = positions["position_id"].str.split(":", n=1).str[1].map(unit).fillna(0.0).to_numpy(float)
        mv = positions["quantity"].to_numpy(float) * positions["multiplier"].to_numpy(float) * base * factors[day]
        return pd.DataFrame({"market_value": mv})

    judged_sessions: list[list[str]] = []
    judge = analytics.judge_events

    def spy(wh_: Warehouse, events: list[dict], session: dt.date, h: int) -> list[dict]:
        judged_sessions.append(
            sorted(str(pd.Timestamp(e["as_of"]).tz_convert("America/New_York").date()) for e in events)
        )
        return judge(wh_, events, session, h)

    monkeypatch.setattr(analytics, "value_positions", fake_value)
    monkeypatch.setattr(analytics, "judge_events", spy)

    def materialize(day: dt.date) -> dict[str, dict[str, dict]]:
        result = dg.materialize(
            [analytics.performance_analytics],
            partition_key=day.isoformat(),
            resources={"warehouse": WarehouseResource(url=url)},
            run_config={"ops": {"performance_analytics": {"config": {"horizon_sessions": horizon}}}},
        )
        assert result.success
        rows = copy.read("performance_analytics", {"as_of": t(day), "book": "core_equity", "kind": "control"})
        rows = rows[rows["strategy"] == "control:capital_preservation"].set_index("window")
        return {w: {e["session"]: e for e in json.loads(events)} for w, events in rows["events"].items()}

    factors.update({s[-26]: 1.0, s[-25]: 0.96, s[-24]: 0.93, s[-4]: 1.0, s[-3]: 1.02, s[-2]: 0.97})
    first_run = materialize(d0)
    factors.update({s[-26]: 2.0, s[-25]: 0.5, s[-24]: 3.0, s[-4]: 0.7, s[-3]: 1.10, s[-2]: 1.04, s[-1]: 1.08})
    second_run = materialize(d1)
    old, mid, new = (str(x) for x in (s[-26], s[-4], s[-3]))
    # D0 had no previous partition: every event of the window judged; D1 judges only s[-3] again
    assert judged_sessions == [[old, mid, new], [new]]
    mv, m1 = float(book["market_value"].sum()), float(first["market_value"])

    def by_hand(day: dt.date, path: list[dt.date], f: dict[dt.date, float]) -> tuple[float, float]:
        move = f[path[-1]] - f[path[0]]  # P&L of the static book without / with the cut over the path
        return mv * move, (mv - cuts[day] * m1) * move

    d0_events, d1_events = first_run["252d"], second_run["252d"]
    f0 = {s[-26]: 1.0, s[-25]: 0.96, s[-24]: 0.93, s[-4]: 1.0, s[-3]: 1.02, s[-2]: 0.97}
    for day, path in ((s[-26], s[-26:-23]), (s[-4], s[-4:-1])):
        without, with_ = by_hand(day, path, f0)
        got = d0_events[str(day)]
        assert got["n_sessions"] == 2 and got["valuations"] == [t(x).isoformat() for x in path]
        assert (got["pnl_without"], got["pnl_with"]) == (
            pytest.approx(without, rel=1e-12),
            pytest.approx(with_, rel=1e-12),
        )
        # carried into D1 as stored in D0, although D1 prices those sessions differently
        assert d1_events[str(day)] == got
    # the event still inside its horizon in D0 (one session) is judged again in D1 over two, at D1's prices
    assert d0_events[new]["n_sessions"] == 1 and d1_events[new]["n_sessions"] == 2
    without, with_ = by_hand(s[-3], s[-3:], factors)
    assert d1_events[new]["pnl_without"] == pytest.approx(without, rel=1e-12)
    assert d1_events[new]["pnl_with"] == pytest.approx(with_, rel=1e-12)
    # windows by event session: s[-26] is before the 21d window's start (s[-21]), inside 63d and 252d
    assert sorted(second_run["21d"]) == [mid, new]
    assert sorted(second_run["63d"]) == sorted(second_run["252d"]) == [old, mid, new]
    rows = copy.read("performance_analytics", {"as_of": t(d1), "book": "core_equity", "kind": "control"})
    row = rows[rows["strategy"] == "control:capital_preservation"].set_index("window")
    assert (row.loc["21d", "n_obs"], row.loc["63d", "n_obs"]) == (2, 3)
    assert row.loc["21d", "window_start"] == s[-21]
    total = sum(e["pnl_without"] for e in second_run["63d"].values())
    assert row.loc["63d", "pnl_without"] == pytest.approx(total, rel=1e-12)


def test_events_of_one_book_and_valuation_share_one_static_book(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """A preservation cut and a gap-risk trade of core_equity at the same valuation, judged together: the static
    book is valued once (the frame holds it once beside both deltas), and each event's effect is the effect it has
    judged alone, exactly (scripted unit prices, as above)."""
    wh, _ = run
    as_of = analytics.latest_as_of(wh, "position_greeks", SESSION)
    book = wh.read("position_greeks", {"as_of": as_of, "book": "core_equity"})
    later = list(sessions(SESSION + dt.timedelta(days=1), SESSION + dt.timedelta(days=10)))[:3]
    factors = {SESSION: 1.0, later[0]: 0.97, later[1]: 1.02, later[2]: 0.99}
    sizes = _script_prices(monkeypatch, book, factors)
    p0, p1 = book["position_id"].iloc[0], book["position_id"].iloc[1]
    cut = {"type": "capital_preservation", "book": "core_equity", "as_of": as_of, "id": "light:REDUCING",
           "trades": {p0: -float(book["quantity"].iloc[0]) / 2}}  # fmt: skip
    gap = {"type": "gap_risk", "book": "core_equity", "as_of": pd.Timestamp(as_of), "id": "e:X:reduce",
           "trades": {p1: -float(book["quantity"].iloc[1])}}  # fmt: skip
    together = analytics.judge_events(wh, [cut, gap], later[-1], horizon=5)
    assert sizes and set(sizes) == {int((book["quantity"] != 0).sum()) + 2}
    alone = [analytics.judge_events(wh, [e], later[-1], horizon=5)[0] for e in (cut, gap)]
    assert together == alone
    assert together[0]["pnl_without"] == together[1]["pnl_without"] and together[0]["n_sessions"] == 3
