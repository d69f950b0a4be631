"""Event-calendar sensor, gap-risk actions, tightened limits, pre-trade blackout and UVaR on the synthetic run.

The shared end-of-day run (conftest, 2026-11-20, 4 underlyings) has no event inside its window; these tests
copy its warehouse, add an earnings date two sessions ahead for a name both books hold (QBYT: core_equity
long stock, vol_overlay a short strangle) and drive the sensor, the launched runs, limit_status, the
``risk-pipeline check-trade`` command and VaR against that copy.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from risk_pipeline import cli, pretrade_service
from risk_pipeline.contracts import table
from risk_pipeline.definitions import ALL_ASSETS, build_definitions
from risk_pipeline.defs.automation import event_sensor
from risk_pipeline.event_windows import GAP_RISK_FILE, actions_in_force
from risk_pipeline.quant.gap_risk import gap_document
from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource
from risk_pipeline.warehouse import Warehouse

Run = tuple[Warehouse, dg.ExecuteInProcessResult]
SESSION = "2026-11-20"
AFTER_CLOSE = pd.Timestamp("2026-11-20T21:30:00Z")
EVENT_ID = "earn-QBYT-2026-11-24"
EVENT_TIME = pd.Timestamp("2026-11-24T13:00:00Z")  # 08:00 New York, before the open: reaction 11-24


def _latest(wh: Warehouse, name: str) -> pd.DataFrame:
    as_of = wh.query(f"SELECT MAX(as_of) AS t FROM risk.{name}")["t"].iloc[0]
    return wh.read(name, {"as_of": pd.Timestamp(as_of)})


def _set_event(
    wh: Warehouse, event_id: str, time: pd.Timestamp | None, event_type: str = "earnings", symbol: str | None = "QBYT"
) -> None:
    """Add, move (same id, new time) or remove (``time`` None) an event: a re-materialized calendar."""
    calendar = wh.read("event_calendar")
    calendar = calendar[calendar["event_id"] != event_id]
    if time is not None:
        row = {
            "event_id": event_id,
            "event_type": event_type,
            "symbol": symbol,
            "event_time": time,
            "source": "test",
            "notes": None,
        }
        calendar = pd.concat([calendar, pd.DataFrame([row])], ignore_index=True)
    wh.write("event_calendar", calendar, run_id="test-calendar")


class Copy:
    """The shared run's warehouse copied, with its own definitions and exports folder."""

    def __init__(self, source: str, tmp: Path) -> None:
        self.url = str(tmp / "wh" / "risk_warehouse.duckdb")
        Path(self.url).parent.mkdir(parents=True)
        shutil.copy(source, self.url)
        self.exports = tmp / "exports"
        self.resources = {
            "warehouse": WarehouseResource(url=self.url),
            "market_data": MarketDataResource(kind="synthetic", n_underlyings=4),
            "exports": ExportsResource(root=str(self.exports)),
        }
        self.defs = build_definitions(self.resources, executor=dg.in_process_executor)
        self.instance = dg.DagsterInstance.ephemeral()

    @property
    def wh(self) -> Warehouse:
        return Warehouse(self.url)

    def materialize(self, selection: dg.AssetSelection, config: dict | None = None) -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            ALL_ASSETS,
            selection=selection,
            partition_key=SESSION,
            instance=self.instance,
            resources=self.resources,
            run_config=config or {},
        )
        assert result.success
        return result


@pytest.fixture(scope="module")
def flow(run: Run, tmp_path_factory: pytest.TempPathFactory) -> Copy:
    wh, result = run
    assert result.success
    copy = Copy(wh.url, tmp_path_factory.mktemp("gap"))
    _set_event(copy.wh, EVENT_ID, EVENT_TIME)
    return copy


def test_shared_run_marks_books_without_events_and_writes_the_documents(run: Run, exports_root: str) -> None:
    wh, _ = run
    rows = _latest(wh, "gap_risk_actions")
    assert set(rows["book"]) == set(_latest(wh, "position_greeks")["book"])
    for book, got in rows.groupby("book"):
        doc = json.loads((Path(exports_root) / "gap_risk" / f"{book}.json").read_text())
        assert set(doc) == {"upcoming_events", "risk_level", "recommended_action"}
        expected = gap_document(got.to_dict("records"), float(got["budget"].iloc[0]))
        assert doc == json.loads(json.dumps(expected, default=str))
        if (got["action"] == "none").all():
            assert doc == {"upcoming_events": [], "risk_level": "LOW", "recommended_action": "none"}


def test_macro_event_inside_the_horizon_gives_event_risk_for_every_book(run: Run, tmp_path: Path) -> None:
    """FOMC 2026-12-09 and CPI 2026-12-10 are 12 and 13 sessions after 2026-11-20."""
    wh, _ = run
    bars = wh.read("market_prices", {"symbol": "SYNX"})
    flags = bars.set_index("as_of_date")["event_flag"].dropna()
    assert flags.get(dt.date(2026, 10, 28)) == "fomc" and flags.get(dt.date(2026, 11, 10)) == "cpi"
    assert not flags.str.contains("macro").any()  # the generator got the type of each date, not a list
    copy = Copy(wh.url, tmp_path)
    copy.materialize(
        dg.AssetSelection.assets("event_risk"), {"ops": {"event_risk": {"config": {"horizon_sessions": 15}}}}
    )
    risk = _latest(copy.wh, "event_risk")
    books = set(_latest(copy.wh, "position_greeks")["book"])
    for event_id, kind in (("fomc-2026-12-09", "fomc"), ("cpi-2026-12-10", "cpi")):
        got = risk[risk["event_id"] == event_id]
        assert set(got["book"]) == books and (got["event_type"] == kind).all()
        # one scenario per past flagged day of that type with a previous close in the history
        closes = bars.sort_values("as_of_date").reset_index(drop=True)
        days = closes.index[closes["event_flag"].fillna("").str.contains(kind)]
        assert (got["n_scenarios"] == int((days > 0).sum())).all()
    assert (risk.loc[risk["event_id"] == "fomc-2026-12-09", "trading_days_until"] == 12).all()


def test_sensor_launches_once_per_book_keeps_a_cursor_and_follows_the_calendar(
    flow: Copy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(event_sensor, "utc_now", lambda: AFTER_CLOSE)
    resources = {"warehouse": WarehouseResource(url=flow.url)}
    with dg.instance_for_test() as instance:

        def tick(cursor: str | None, on: dg.DagsterInstance = instance) -> dg.SensorResult:
            with dg.build_sensor_context(instance=on, cursor=cursor, resources=resources) as context:
                return event_sensor.event_calendar_sensor(context)

        first = tick(None)
        assert sorted((r.tags["risk_pipeline/book"], r.partition_key) for r in first.run_requests) == [
            ("core_equity", SESSION),
            ("vol_overlay", SESSION),
        ]
        assert {r.run_key for r in first.run_requests} == {
            f"gap:{SESSION}:{EVENT_ID}@{EVENT_TIME.isoformat()}:{b}" for b in ("core_equity", "vol_overlay")
        }
        for r in first.run_requests:
            assert r.run_config == {"ops": {"gap_risk_actions": {"config": {"books": [r.tags["risk_pipeline/book"]]}}}}
            assert r.tags["risk_pipeline/event"] == EVENT_ID and r.tags["risk_pipeline/trading_days_until"] == "2"
        # a second tick with the cursor launches nothing
        assert not tick(first.cursor).run_requests
        # a restart: a new context (and a new instance) with the stored cursor launches nothing and misses nothing
        with dg.instance_for_test() as restarted:
            assert not tick(first.cursor, restarted).run_requests
        # a new market-wide event inside its window (re-materialized calendar) is launched for every book
        _set_event(flow.wh, "fed_speech-test", pd.Timestamp("2026-11-23T16:00:00Z"), "fed_speech", None)
        new = tick(first.cursor)
        assert sorted(r.tags["risk_pipeline/book"] for r in new.run_requests) == ["core_equity", "vol_overlay"]
        assert {r.tags["risk_pipeline/event"] for r in new.run_requests} == {"fed_speech-test"}
        _set_event(flow.wh, "fed_speech-test", None)
        # the earnings moved a session earlier: the new window is launched (new run keys), once
        _set_event(flow.wh, EVENT_ID, pd.Timestamp("2026-11-23T13:00:00Z"))
        moved = tick(new.cursor)
        assert {r.run_key for r in moved.run_requests} == {
            f"gap:{SESSION}:{EVENT_ID}@2026-11-23T13:00:00+00:00:{b}" for b in ("core_equity", "vol_overlay")
        }
        assert {r.tags["risk_pipeline/trading_days_until"] for r in moved.run_requests} == {"1"}
        assert not tick(moved.cursor).run_requests
        # moved out of the window (three sessions ahead): nothing is due
        _set_event(flow.wh, EVENT_ID, pd.Timestamp("2026-11-25T13:00:00Z"))
        assert not tick(None).run_requests
        _set_event(flow.wh, EVENT_ID, EVENT_TIME)
        # the next session starts a new cursor state: the event, still in its window, is launched for it
        monkeypatch.setattr(event_sensor, "utc_now", lambda: pd.Timestamp("2026-11-23T15:00:00Z"))
        next_day = tick(first.cursor)
        assert not next_day.run_requests  # no valuation of 2026-11-23 yet: waits (cursor not moved)
        assert "no valuation" in next_day.skip_reason.skip_message


def test_launched_runs_write_actions_audit_and_documents(flow: Copy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_sensor, "utc_now", lambda: AFTER_CLOSE)
    resources = {"warehouse": WarehouseResource(url=flow.url)}
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance, resources=resources) as context:
        requests = event_sensor.event_calendar_sensor(context).run_requests
    job = flow.defs.resolve_job_def("gap_risk_job")
    wh = flow.wh
    audit_before = len(wh.read("audit_trail"))
    # core_equity with a budget at half the loss of its QBYT shares on the 95 % quantile of QBYT's past earnings
    # moves (computed here from the bars): the shares must be cut, whatever size and vol the market gave them
    bars = wh.read("market_prices", {"symbol": "QBYT"}).sort_values("as_of_date").reset_index(drop=True)
    moves = (bars["close"] / bars["close"].shift(1) - 1)[bars["event_flag"].fillna("").str.contains("earnings")]
    worst_q = np.sort(moves.dropna().to_numpy())
    k = int(np.ceil(worst_q.size * 0.05)) - 1
    shares = _latest(wh, "position_greeks").set_index("position_id").loc["core_equity:QBYT:stock"]
    nav = float(_latest(wh, "book_nav").set_index("book").loc["core_equity", "nav"])
    budget_pct = 0.5 * float(shares["quantity"] * shares["spot"] * -worst_q[k]) / nav
    assert budget_pct > 0.0
    policy = yaml.safe_load(GAP_RISK_FILE.read_text())
    policy["books"]["core_equity"] = {"max_event_loss_pct_nav": budget_pct}
    policy_file = flow.exports.parent / "gap_risk.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    for r in sorted(requests, key=lambda r: r.tags["risk_pipeline/book"]):
        config = r.run_config
        config["ops"]["gap_risk_actions"]["config"]["gap_risk_file"] = str(policy_file)
        result = job.execute_in_process(
            instance=flow.instance, partition_key=r.partition_key, run_config=config, tags=r.tags
        )
        assert result.success
    rows = _latest(wh, "gap_risk_actions").set_index(["book", "event_id"])
    risk = _latest(wh, "event_risk").set_index(["book", "event_id"])
    core, vol = rows.loc[("core_equity", EVENT_ID)], rows.loc[("vol_overlay", EVENT_ID)]
    for r, book in ((core, "core_equity"), (vol, "vol_overlay")):
        assert r["symbol"] == "QBYT" and r["event_type"] == "earnings" and r["trading_days_until"] == 2
        assert r["reaction_session"] == dt.date(2026, 11, 24) and pd.Timestamp(r["expires_at"]) == EVENT_TIME
        assert {"block_new", "tighten_caps", "alert"} <= set(json.loads(r["actions"]))
        # the same estimate as event_risk (full revaluation under QBYT's past earnings-day moves)
        assert r["loss_before"] == pytest.approx(risk.loc[(book, EVENT_ID), "loss_quantile"], rel=1e-9)
        assert r["budget"] == pytest.approx(r["nav"] * {"core_equity": budget_pct, "vol_overlay": 0.015}[book])
    assert json.loads(core["limit_overrides"]) == {
        "max_abs_net_delta_shares": 125_000.0,
        "max_abs_gamma_shares": 12_500.0,
    }
    # vol_overlay's short QBYT strangle is bought back before the earnings
    trades = json.loads(vol["trades"])
    shorts = {t["position_id"]: t for t in trades if t["action"] == "flatten_short_gamma"}
    greeks = _latest(wh, "position_greeks")
    vol_rows = greeks[(greeks["book"] == "vol_overlay") & (greeks["symbol"] == "QBYT")]
    short_options = vol_rows[(vol_rows["instrument_type"] == "option") & (vol_rows["quantity"] < 0)]
    assert vol["action"] == "flatten_short_gamma" and len(short_options) == 2
    assert set(shorts) == set(short_options["position_id"])
    for pid, t in shorts.items():
        q = short_options.set_index("position_id").loc[pid, "quantity"]
        assert (t["quantity_before"], t["trade_quantity"], t["quantity_after"]) == (q, -q, 0.0)
    # core_equity holds QBYT stock only: the loss is linear in the shares (the other positions' decay is a constant)
    greeks = greeks.set_index("position_id")
    assert core["action"] == "reduce"
    (trade,) = json.loads(core["trades"])
    assert trade["position_id"] == "core_equity:QBYT:stock" and trade["trade_quantity"] < 0
    assert core["loss_after"] <= core["budget"] < core["loss_before"]
    bars = wh.read("market_prices", {"symbol": "QBYT"}).sort_values("as_of_date").reset_index(drop=True)
    moves = (bars["close"] / bars["close"].shift(1) - 1)[bars["event_flag"].fillna("").str.contains("earnings")]
    worst_q = np.sort(moves.dropna().to_numpy())  # the loss quantile scenario is the same for any long size
    spot = greeks.loc["core_equity:QBYT:stock", "spot"]
    k = int(np.ceil(worst_q.size * 0.05)) - 1
    assert core["loss_before"] - core["loss_after"] == pytest.approx(-trade["trade_quantity"] * spot * -worst_q[k])
    assert core["loss_after"] + spot * -worst_q[k] > core["budget"]  # one more share would breach: the least cut
    # the rows are audited once: a re-run of the same request adds nothing and rewrites the same rows
    audit = wh.read("audit_trail")
    mine = audit[audit["decision_type"] == "gap_risk_action"]
    assert set(mine["subject"]) >= {f"{EVENT_ID} QBYT"} and len(audit) > audit_before
    before = _latest(wh, "gap_risk_actions").drop(columns=["run_id", "materialized_at"])
    r = requests[0]
    assert job.execute_in_process(
        instance=flow.instance, partition_key=r.partition_key, run_config=r.run_config
    ).success
    after = _latest(wh, "gap_risk_actions").drop(columns=["run_id", "materialized_at"])
    pd.testing.assert_frame_equal(
        before.sort_values(["book", "event_id"]).reset_index(drop=True),
        after.sort_values(["book", "event_id"]).reset_index(drop=True),
    )
    assert len(wh.read("audit_trail")) == len(audit)
    doc = json.loads((flow.exports / "gap_risk" / "vol_overlay.json").read_text())
    assert doc["recommended_action"] == "flatten_short_gamma"
    assert doc["upcoming_events"] == [
        {
            "symbol": "QBYT",
            "event_type": "earnings",
            "date": "2026-11-24",
            "days_until": 2,
            "action": "flatten_short_gamma",
        }
    ]
    assert doc["risk_level"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL")


def test_limit_status_applies_the_tightened_caps_while_in_force(flow: Copy) -> None:
    flow.materialize(dg.AssetSelection.assets("limit_status").required_multi_asset_neighbors())
    status = _latest(flow.wh, "limit_status").set_index(["book", "limit_name"])
    delta = status.loc[("core_equity", "max_abs_net_delta_shares")]
    greeks = _latest(flow.wh, "position_greeks")
    net = greeks[greeks["book"] == "core_equity"].groupby("symbol")["delta"].sum().abs()
    assert "event caps in force" in delta["detail"] and EVENT_ID in delta["detail"]
    # QBYT against its halved cap has the highest utilization of the book's names
    assert delta["threshold"] == 125_000.0 and delta["value"] == pytest.approx(net["QBYT"])
    assert delta["utilization"] == pytest.approx(net["QBYT"] / 125_000.0)
    gamma = status.loc[("vol_overlay", "max_abs_gamma_shares")]
    assert "event caps in force" in gamma["detail"]
    untouched = status.loc[("core_equity", "max_theta_per_day_loss")]
    assert untouched["detail"] is None or "event caps" not in untouched["detail"]
    # after the event nothing is in force any more
    assert actions_in_force(flow.wh, "core_equity", EVENT_TIME) == []
    assert len(actions_in_force(flow.wh, "core_equity", EVENT_TIME - pd.Timedelta(minutes=1))) == 1


def test_check_trade_rejects_new_risk_in_the_name_until_the_event(
    flow: Copy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RISK_PIPELINE_WAREHOUSE_URL", flow.url)

    def check_trade(now: pd.Timestamp, side: str, *order: str) -> tuple[int, dict]:
        monkeypatch.setattr(pretrade_service, "utc_now", lambda: now)
        code = cli.main(
            [
                "check-trade",
                "--book",
                "core_equity",
                "--side",
                side,
                "--quantity",
                "100",
                "--max-age-sessions",
                "5",
                *order,
            ]
        )
        return code, json.loads(capsys.readouterr().out)

    code, answer = check_trade(AFTER_CLOSE, "buy", "--symbol", "QBYT")
    assert code == 4 and answer["decision"] == "reject"
    assert any("event blackout" in r and EVENT_ID in r for r in answer["reasons"]), answer
    code, answer = check_trade(AFTER_CLOSE, "sell", "--position-id", "core_equity:QBYT:stock")
    assert code == 0 and answer["decision"] == "approve", answer
    # another name is not blocked by a single-name event
    _, other = check_trade(AFTER_CLOSE, "buy", "--symbol", "MEDQ")
    assert not any(EVENT_ID in r for r in other["reasons"])
    # after the event the restriction is gone
    _, later = check_trade(EVENT_TIME + pd.Timedelta(minutes=1), "buy", "--symbol", "QBYT")
    assert not any(EVENT_ID in r or "blackout" in r for r in later["reasons"]), later


def test_var_includes_the_gap_scenarios_of_events_in_the_horizon(flow: Copy) -> None:
    flow.materialize(dg.AssetSelection.assets("var_results", "var_contributions"))
    var = _latest(flow.wh, "var_results")
    hist = var[(var["method"] == "historical") & (var["book"] == "core_equity")].set_index(
        ["horizon_days", "confidence"]
    )
    # the earnings' reaction session is 2 sessions ahead: in the 3- and 5-day horizons, not the 1-day
    assert hist.loc[(1, 0.99), "gap_events"] is None
    for h in (3, 5):
        row = hist.loc[(h, 0.99)]
        # an event never lowers the VaR: with gaps it is at least the VaR without (gap_var 0 when the gap
        # scenarios did not raise it and the row without them was kept)
        assert json.loads(row["gap_events"]) == [EVENT_ID] and row["gap_var"] >= 0
        assert row["var"] >= hist.loc[(1, 0.99), "var"]
    other = var[var["method"] != "historical"]
    assert other["gap_var"].isna().all()
    doc = json.loads((flow.exports / "var" / "core_equity.json").read_text())
    assert doc["gap_component"]["events"] == [EVENT_ID] and doc["gap_component"]["var_1d"] == 0.0
    assert doc["gap_component"]["var_3d"] == pytest.approx(hist.loc[(3, 0.99), "gap_var"])


def test_expired_actions_are_audited(flow: Copy) -> None:
    wh = flow.wh
    earlier = pd.Timestamp("2026-11-19T21:00:00Z")
    row = {
        "as_of": earlier,
        "book": "core_equity",
        "event_id": "cpi-test",
        "symbol": "*",
        "event_type": "cpi",
        "event_time": pd.Timestamp("2026-11-20T13:30:00Z"),
        "action": "block_new",
        "actions": json.dumps(["block_new", "alert"]),
        "reason": "test",
        "expires_at": pd.Timestamp("2026-11-20T13:30:00Z"),
    }
    wh.write(
        "gap_risk_actions",
        pd.DataFrame([row], columns=table("gap_risk_actions").data_column_names),
        run_id="test",
        partitions=[{"as_of": earlier, "book": "core_equity"}],
    )
    flow.materialize(
        dg.AssetSelection.assets("gap_risk_actions"),
        {"ops": {"gap_risk_actions": {"config": {"books": ["core_equity"]}}}},
    )
    audit = wh.read("audit_trail", {"decision_type": "gap_risk_expiry"})
    assert list(audit["subject"]) == ["cpi-test *"] and list(audit["decision"]) == ["expired"]
    assert pd.Timestamp(audit["at"].iloc[0]) == pd.Timestamp("2026-11-20T13:30:00Z")
