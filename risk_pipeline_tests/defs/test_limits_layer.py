"""A book built to breach a delta cap and a drawdown level; pre-trade answers in every state."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from risk_pipeline.definitions import ALL_ASSETS
from risk_pipeline.pretrade_service import PreTradeService
from risk_pipeline.quant.limits import evaluate_limits, load_limits
from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource
from risk_pipeline.valuation import book_exposure
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.defs.test_market_data_blocking import Pipeline

RESOURCES: dict[int, dict] = {}
SELECTION = dg.AssetSelection.all() - dg.AssetSelection.assets("vol_forecasts") - dg.AssetSelection.groups("risk")


def _limits(tmp: Path) -> Path:
    defaults = yaml.safe_load((Path(__file__).parents[2] / "data" / "limits" / "limits.yaml").read_text())["defaults"]
    defaults.update(
        max_abs_net_dollar_delta=2_000_000,
        max_abs_net_delta_shares=1_000_000,
        max_var_99_1d=None,
        max_es_975_1d=None,
        max_position_pct_gross=None,
        max_underlying_pct_gross=None,
        max_sector_pct_gross=None,
        min_positions=None,
        max_positions=None,
        max_pairwise_correlation=None,
        max_daily_loss_pct_nav=0.10,
        max_drawdown_pct=0.10,
        light_drawdown_pct=0.05,
        moderate_drawdown_pct=0.075,
    )
    path = tmp / "limits.yaml"
    path.write_text(yaml.safe_dump({"version": "test-1", "defaults": defaults}))
    return path


def _books(tmp: Path) -> Path:
    path = tmp / "books.yaml"
    books = {"core": {"capital": 1_000_000}, "clean": {"capital": 10_000_000}}
    path.write_text(yaml.safe_dump({"version": "test-1", "books": books}))
    return path


def _positions(folder: Path, day: str) -> None:
    """core: 40,000 AAA (about $4M of delta against a $2M cap); clean: BBB just under the cap."""
    path = folder / "positions" / f"{day}.csv"
    rows = pd.read_csv(path)
    rows.loc[rows["position_id"] == "core:AAA:stock", "quantity"] = 40_000
    clean = rows[rows["position_id"] == "core:AAA:stock"].copy()
    clean[["book", "position_id", "symbol", "quantity"]] = ["clean", "clean:BBB:stock", "BBB", 39_215]
    pd.concat([rows, clean]).to_csv(path, index=False)


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> tuple[Pipeline, Path, dict]:
    tmp = tmp_path_factory.mktemp("limits")
    p = Pipeline(tmp)
    RESOURCES[id(p)] = {
        "warehouse": WarehouseResource(url=p.url),
        "market_data": MarketDataResource(kind="folder", folder=str(p.folder)),
        "exports": ExportsResource(root=str(tmp / "exports")),
    }
    limits, books = _limits(tmp), _books(tmp)
    config = {
        "ops": {
            op: {"config": {"limits_file": str(limits), "books_file": str(books)}} for op in ("book_nav", "risk_limits")
        }
    }
    assets = ALL_ASSETS
    for day in ("2026-11-19", "2026-11-20"):
        _positions(p.folder, day)
        result = dg.materialize(
            assets,
            selection=SELECTION,
            partition_key=day,
            instance=p.instance,
            run_config=config,
            resources=RESOURCES[id(p)],
        )
        assert result.success
    return p, limits, config


def test_breaching_book_ends_reducing_with_reductions_that_clear_it(book: tuple[Pipeline, Path, dict]) -> None:
    p, limits_path, _ = book
    wh = p.warehouse
    nav = wh.read("book_nav", {"book": "core"}, order_by=["as_of"])
    assert nav["pnl_basis"].iloc[0].startswith("inception")
    # day 2 P&L is day 1's book revalued at day 2's market: AAA 101 -> 99.5 on 40,000 shares plus the calls
    assert nav["daily_pnl"].iloc[1] == pytest.approx(nav["nav"].iloc[1] - 1_000_000)
    assert nav["daily_pnl"].iloc[1] < -55_000
    drawdown = nav["drawdown_pct"].iloc[1]
    assert 0.05 < drawdown < 0.075
    last = nav["as_of"].iloc[1]
    state = wh.read("trading_state", {"book": "core", "as_of": last}).iloc[0]
    assert (state["state"], state["preservation_level"]) == ("REDUCING", "light")
    status = wh.read("limit_status", {"book": "core", "as_of": last}).set_index("limit_name")
    assert status.loc["max_abs_net_dollar_delta", "status"] == "BREACH"
    cuts = wh.read("required_reductions", {"book": "core", "as_of": last})
    assert len(cuts) and (cuts["reduce_quantity"] != 0).all()
    # apply the reductions and recompute every limit independently of the plan's own verification
    positions = wh.read("position_greeks", {"book": "core", "as_of": last})
    after = (
        positions["quantity"].to_numpy()
        - positions["position_id"]
        .map(dict(zip(cuts["position_id"], cuts["reduce_quantity"], strict=True)))
        .fillna(0.0)
        .to_numpy()
    )
    exposure = book_exposure(positions, wh.read("book_nav", {"book": "core", "as_of": last}).iloc[0], None)
    results = {
        r.limit_name: r
        for r in evaluate_limits(exposure.with_quantity(after), load_limits(limits_path).for_book("core"))
    }
    dollar = results["max_abs_net_dollar_delta"]
    assert dollar.value <= dollar.warn_threshold
    assert np.all(np.sign(after) * np.sign(positions["quantity"].to_numpy()) >= 0)  # never flips a position


def test_audit_trail_records_breach_and_state_change_once(book: tuple[Pipeline, Path, dict]) -> None:
    p, _, config = book
    wh = p.warehouse
    audit = wh.read("audit_trail")
    assert {"limit_breach", "state_change"} <= set(audit["decision_type"])
    before = len(audit)
    assets = ALL_ASSETS
    rerun = dg.materialize(
        assets,
        selection=dg.AssetSelection.assets("book_nav", "limit_status").required_multi_asset_neighbors(),
        partition_key="2026-11-20",
        instance=p.instance,
        run_config=config,
        resources=RESOURCES[id(p)],
    )
    assert rerun.success
    assert len(wh.read("audit_trail")) == before


#: The valuation of 2026-11-20 is the current one until the next session's valuation.
CLOCK = lambda: pd.Timestamp("2026-11-20T21:30:00Z")  # noqa: E731


def _store_var(wh: Warehouse, books: tuple[str, ...] = ("core", "clean")) -> None:
    """VaR/ES rows for the books' latest valuation (the risk layer is not run on this 2-day folder)."""
    as_of = pd.Timestamp(wh.query("SELECT MAX(as_of) AS t FROM risk.position_greeks")["t"].iloc[0])
    rows = pd.DataFrame(
        [
            {
                "as_of": as_of,
                "as_of_date": as_of.date(),
                "book": b,
                "method": "historical",
                "horizon_days": 1,
                "confidence": c,
                "var": 10_000.0,
                "expected_shortfall": 12_000.0,
                "n_scenarios": 500,
                "lookback_days": 500,
                "history_start": None,
                "history_end": None,
                "seed": None,
                "iv_history_coverage": None,
                "rate_history_coverage": None,
                "dividend_history_coverage": None,
                "gap_var": None,
                "gap_expected_shortfall": None,
                "gap_events": None,
                "standard_error": None,
                "var_non_overlapping": None,
                "independent_tail_obs": None,
                "method_note": None,
                "smile_sensitivity": None,
            }
            for b in books
            for c in (0.975, 0.99)
        ]
    )
    wh.write("var_results", rows, run_id="test-var", partitions=[{"as_of": as_of}])


def test_pre_trade_in_every_state(book: tuple[Pipeline, Path, dict]) -> None:
    p, limits_path, _ = book
    wh = Warehouse(p.url)
    _store_var(wh)
    service = PreTradeService(wh, limits_path, actor="test", clock=CLOCK)
    # REDUCING book: selling AAA reduces risk and is approved; buying more is rejected with the reason
    sell = service.check("core", "sell", 1000, position_id="core:AAA:stock")
    assert sell.decision == "approve"
    buy = service.check("core", "buy", 1000, position_id="core:AAA:stock")
    assert buy.decision == "reject" and any("REDUCING" in r for r in buy.reasons)
    # ACTIVE book just under its $2M dollar-delta cap: one more share breaches it, a sale is fine
    state = wh.read("trading_state", {"book": "clean"}, order_by=["as_of"]).iloc[-1]
    assert state["state"] == "ACTIVE"
    one_more = service.check("clean", "buy", 1, symbol="BBB")
    assert one_more.decision == "reject" and any("max_abs_net_dollar_delta" in r for r in one_more.reasons)
    # the same book after selling down: a large buy is resized to the largest quantity that passes
    snap = service.snapshot("clean")
    service._books["clean"] = type(snap)(**{**snap.__dict__})
    resized = _resized_check(service, wh)
    assert resized.decision == "resize" and 0 < resized.approved_quantity < 50_000
    # HALTED: everything is rejected
    halted = wh.read("trading_state", {"book": "core"}, order_by=["as_of"]).iloc[[-1]].assign(state="HALTED")
    wh.write("trading_state", halted, run_id="test-halt", partitions=[{"as_of": halted["as_of"].iloc[0]}])
    service.refresh()
    for side in ("buy", "sell"):
        answer = service.check("core", side, 10, position_id="core:AAA:stock")
        assert answer.decision == "reject" and any("HALTED" in r for r in answer.reasons)
    # every answer is in the audit trail, and asking the same again adds nothing
    n = len(wh.read("audit_trail", {"decision_type": "pre_trade"}))
    service.check("core", "buy", 10, position_id="core:AAA:stock")
    assert len(wh.read("audit_trail", {"decision_type": "pre_trade"})) == n


def _resized_check(service: PreTradeService, wh: Warehouse) -> object:
    """Sell most of the BBB position in the cached book, then ask for a large buy."""
    from risk_pipeline.quant.pretrade import precompute

    snap = service.snapshot("clean")
    exposure = snap.exposure.with_quantity(
        np.where(snap.exposure.position_id == "clean:BBB:stock", 1000.0, snap.exposure.quantity)
    )
    snap.exposure, snap.aggregates = exposure, precompute(exposure, snap.config)
    return service.check("clean", "buy", 100_000, symbol="BBB", record=False)


def test_pre_trade_fails_closed_on_stale_or_missing_risk_data(
    book: tuple[Pipeline, Path, dict], tmp_path: Path
) -> None:
    p, limits_path, _ = book
    import shutil

    copy = tmp_path / "wh" / "risk_warehouse.duckdb"
    copy.parent.mkdir()
    shutil.copy(p.url, copy)
    wh = Warehouse(str(copy))
    _store_var(wh, ("clean",))  # core's VaR rows are missing

    def ask(book_name: str, clock: object = CLOCK, **kw: object) -> object:
        service = PreTradeService(wh, limits_path, actor="test", clock=clock, **kw)  # type: ignore[arg-type]
        return service.check(book_name, "sell", 10, position_id=f"{book_name}:BBB:stock", record=False)

    assert ask("clean").decision == "approve"
    # a valuation 9 sessions old (2026-11-20 to 2026-12-04, Thanksgiving closed) is rejected, with its age
    stale = ask("clean", clock=lambda: pd.Timestamp("2026-12-04T15:00:00Z"))
    assert stale.decision == "reject" and "9 sessions old" in stale.reasons[0]
    assert (
        ask("clean", clock=lambda: pd.Timestamp("2026-12-04T15:00:00Z"), max_valuation_age_sessions=9).decision
        == "approve"
    )
    # the next session counts one: yesterday's end-of-day valuation is still good before today's close
    assert ask("clean", clock=lambda: pd.Timestamp("2026-11-23T15:00:00Z")).decision == "approve"
    # the book's VaR rows missing
    missing = PreTradeService(wh, limits_path, actor="test", clock=CLOCK).check(
        "core", "sell", 10, position_id="core:AAA:stock", record=False
    )
    assert missing.decision == "reject" and "VaR" in missing.reasons[0]
    # var_results empty
    wh.execute("DELETE FROM risk.var_results")
    empty = ask("clean")
    assert empty.decision == "reject" and "VaR" in empty.reasons[0]
    _store_var(wh, ("clean",))
    # the gap-risk table missing: blackouts cannot be checked
    wh.execute("DROP TABLE risk.gap_risk_actions")
    blind = ask("clean")
    assert blind.decision == "reject" and "gap_risk_actions" in blind.reasons[0]


def test_check_trade_cli_rejects_with_json_and_exit_code_instead_of_crashing(
    book: tuple[Pipeline, Path, dict], tmp_path: Path
) -> None:
    import json
    import os
    import subprocess
    import sys

    p, _, _ = book

    def cli(url: str, *extra: str) -> tuple[int, dict]:
        env = {**os.environ, "RISK_PIPELINE_WAREHOUSE_URL": url}
        args = ["--book", "clean", "--side", "buy", "--quantity", "5", "--symbol", "BBB", *extra]
        done = subprocess.run(
            [sys.executable, "-m", "risk_pipeline.cli", "check-trade", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.returncode, json.loads(done.stdout)

    # a mistyped path: rejected, and no folder or file is created
    missing = tmp_path / "no_such_dir" / "risk_warehouse.duckdb"
    code, answer = cli(str(missing))
    assert code == 5 and answer["decision"] == "reject" and "no DuckDB warehouse" in answer["reasons"][0]
    assert not missing.parent.exists()
    # a bad expiry string
    code, answer = cli(p.url, "--expiry", "2026-13-45", "--strike", "100", "--option-type", "C")
    assert code == 5 and answer["decision"] == "reject" and "check not possible" in answer["reasons"][0]
    # a PostgreSQL port nobody listens on
    code, answer = cli("postgresql://postgres@127.0.0.1:1/none")
    assert code == 5 and answer["decision"] == "reject" and "OperationalError" in answer["reasons"][0]
    # a DuckDB file locked by a writer in another process
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({p.url!r}); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, answer = cli(p.url)
        assert code == 5 and answer["decision"] == "reject" and "check not possible" in answer["reasons"][0]
    finally:
        holder.kill()
        holder.wait()
