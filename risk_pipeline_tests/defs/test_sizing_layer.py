"""Sizing layer end to end on the shared synthetic run, with every published number recomputed independently."""

from __future__ import annotations

import datetime as dt
import json
import math

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from risk_pipeline.quality import ValidationContext, validate
from risk_pipeline.sources.synthetic import SyntheticSource
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.defs.conftest import SESSION

TABLES = ("signals", "position_sizing", "position_stops", "correlation_matrix", "portfolio_heat")


def _latest(wh: Warehouse, name: str) -> pd.DataFrame:
    frame = wh.read(name)
    return frame[frame["as_of"] == frame["as_of"].max()].reset_index(drop=True)


def _closes(wh: Warehouse) -> pd.DataFrame:
    bars = wh.read("market_prices", columns=["as_of_date", "symbol", "close", "high", "low"])
    return bars[bars["as_of_date"] <= SESSION]


def test_sizing_assets_and_checks_succeed(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    wh, result = run
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert set(TABLES) <= materialized
    for t in TABLES:
        assert wh.row_count(t) > 0, t
    checks = result.get_asset_check_evaluations()
    ours = [c for c in checks if c.asset_key.to_user_string() in TABLES]
    assert ours and all(c.passed for c in ours), [c.check_name for c in ours if not c.passed]


def test_kelly_and_vol_target_rows_recompute(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    wh, _ = run
    rows = _latest(wh, "position_sizing")
    kelly = rows[rows["method"] == "kelly"]
    assert len(kelly)
    for r in kelly.itertuples():
        assert r.mu_annual == pytest.approx(r.expected_return * 252 / r.horizon_days, rel=1e-12)
        assert r.full_kelly_weight == pytest.approx(r.mu_annual / r.sigma_annual**2, rel=1e-12)
        edge_ok = r.full_kelly_weight * r.direction > 0
        expected = r.kelly_fraction * r.full_kelly_weight if edge_ok else 0.0
        if r.strategy == "index_timing" and r.direction < 0:  # long-only strategy in data/sizing.yaml
            expected = 0.0
        assert r.weight == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert r.size_notional == pytest.approx(r.weight * r.nav, rel=1e-12)
        assert r.size_quantity == math.trunc(r.size_notional / r.spot)
    # the forecast behind vol targeting is the lowest-QLIKE model of vol_forecasts at the 5-session horizon
    fc = wh.read("vol_forecasts", {"as_of_date": SESSION})
    vt = rows[rows["method"] == "vol_target"]
    for r in vt.itertuples():
        g = fc[(fc["symbol"] == r.symbol) & (fc["horizon_days"] == 5)].dropna(subset=["oos_loss"])
        best = g.loc[g["oos_loss"].idxmin()]
        assert r.forecast_model == best["model"] and r.forecast_vol == pytest.approx(best["annualized_vol"])
        allowed = not (r.strategy == "index_timing" and r.direction < 0)
        expected = r.direction * r.target_vol / r.forecast_vol * r.regime_scale if allowed else 0.0
        assert r.weight == pytest.approx(expected, rel=1e-12)


def test_recommendation_is_most_conservative_and_within_every_cap(
    run: tuple[Warehouse, dg.ExecuteInProcessResult],
) -> None:
    wh, _ = run
    rows = _latest(wh, "position_sizing")
    rec = rows[rows["method"] == "recommended"]
    assert len(rec) and set(rows["method"]) >= {"kelly", "vol_target", "optimal_f", "xgboost", "recommended"}
    for r in rec.itertuples():
        others = rows[(rows["book"] == r.book) & (rows["symbol"] == r.symbol) & (rows["method"] != "recommended")]
        inputs = json.loads(r.inputs)
        caps = [v for v in inputs["caps"].values() if v is not None]
        drag = inputs["hedge_cost_drag_pct_nav_yr"] or 0.0  # the hedging layer's cost drag scales the methods
        assert inputs["hedge_cost_scale"] == pytest.approx(1 - drag)
        bound = min([*(others["weight"].abs() * (1 - drag)), *caps])
        assert abs(r.weight) == pytest.approx(bound, rel=1e-12, abs=1e-15)
        assert r.weight == 0 or np.sign(r.weight) == r.direction
        assert r.binding_limit
    xgb = rows[rows["method"] == "xgboost"]
    assert set(xgb["fallback_reason"]) <= {
        "none",
        "model_missing",
        "model_stale",
        "features_out_of_range",
        "low_confidence",
    }


def test_risk_parity_rows_have_equal_contributions(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    wh, _ = run
    rows = _latest(wh, "position_sizing")
    rp = rows[rows["method"] == "risk_parity"]
    for _, g in rp.groupby("book"):
        np.testing.assert_allclose(g["risk_contribution"], 1 / len(g), atol=1e-8)


def test_correlation_matrix_matches_numpy(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    wh, _ = run
    cm = _latest(wh, "correlation_matrix")
    symbols = sorted(cm["symbol_a"].unique())
    wide = _closes(wh).pivot(index="as_of_date", columns="symbol", values="close")[symbols]
    r = np.diff(np.log(wide.to_numpy(float)), axis=0)[-63:]
    expected = np.corrcoef(r, rowvar=False)
    got = cm.pivot(index="symbol_a", columns="symbol_b", values="correlation").loc[symbols, symbols].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert (cm["window_days"] == 63).all()


def test_stops_use_wilder_atr_and_heat_parts_add_up(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    wh, _ = run
    stops = _latest(wh, "position_stops")
    bars = _closes(wh)
    for symbol, g in stops.groupby("symbol"):
        b = bars[bars["symbol"] == symbol].sort_values("as_of_date").tail(150)
        hi, lo, c = (b[k].to_numpy(float) for k in ("high", "low", "close"))
        tr = [max(hi[t] - lo[t], abs(hi[t] - c[t - 1]), abs(lo[t] - c[t - 1])) for t in range(1, len(c))]
        atr = sum(tr[:14]) / 14
        for x in tr[14:]:
            atr = (13 * atr + x) / 14
        np.testing.assert_allclose(g["atr_14"], atr, rtol=1e-10)
        np.testing.assert_allclose(g["close"], c[-1])
    new = stops[stops["state_from"] == "new"]
    np.testing.assert_allclose(new["stop_price"], new["entry_price"] - new["side"] * 2 * new["atr_14"])
    np.testing.assert_allclose(new["take_profit_price"], new["entry_price"] + new["side"] * 4 * new["atr_14"])
    heat = _latest(wh, "portfolio_heat")
    for h in heat.itertuples():
        s = stops[stops["book"] == h.book]
        assert h.risk_at_stops == pytest.approx(s["risk_at_stop"].sum())
        u = [
            min(h.risk_at_stops_pct_nav / h.max_portfolio_risk_pct_nav, 1),
            min(h.largest_position_share / h.max_position_pct_gross, 1),
            min(h.largest_cluster_share / h.max_cluster_pct_gross, 1),
        ]
        assert h.heat_score == pytest.approx(100 * (0.5 * u[0] + 0.25 * u[1] + 0.25 * u[2]))
        assert 0 <= h.heat_score <= 100


def test_synthetic_signals_have_a_weak_positive_edge() -> None:
    src = SyntheticSource(n_underlyings=12)
    sig = src.signals(dt.date(2022, 1, 3), dt.date(2024, 12, 31))
    bars = src.market_prices(dt.date(2022, 1, 3), dt.date(2025, 1, 31))
    close = bars.pivot(index="as_of_date", columns="symbol", values="close")
    fwd = (close.shift(-5) / close - 1).stack().rename("fwd").reset_index()
    m = sig.merge(fwd, on=["as_of_date", "symbol"])
    ic = spearmanr(m["expected_return"], m["fwd"]).statistic
    assert 0.02 < ic < 0.15  # weak and noisy, but there
    assert set(sig["direction"]) == {-1, 1} and sig["confidence"].between(0, 1).all()
    # a session's rows do not depend on the range asked for
    one = src.signals(dt.date(2023, 6, 1), dt.date(2023, 6, 1)).drop(columns=["source_file", "source_row"])
    same = sig[sig["as_of_date"] == dt.date(2023, 6, 1)].drop(columns=["source_file", "source_row"])
    pd.testing.assert_frame_equal(one.reset_index(drop=True), same.reset_index(drop=True))


def test_signals_rules_block_and_name_file_and_row() -> None:
    day = dt.date(2026, 11, 20)
    raw = pd.DataFrame(
        {
            "as_of_date": [day.isoformat()] * 3,
            "strategy": ["equity_alpha"] * 3,
            "symbol": ["AAA", "BBB", "CCC"],
            "direction": ["1", "1", "-1"],
            "expected_return": ["0.01", "-0.02", "-0.01"],
            "horizon_days": ["5", "5", "5"],
            "confidence": ["0.5", "0.6", "1.5"],
            "source": ["folder:signals/2026-11-20.csv"] * 3,
            "source_file": ["signals/2026-11-20.csv"] * 3,
            "source_row": [1, 2, 3],
        }
    )
    report = validate("signals", raw, ValidationContext(day.isoformat(), (day,)))
    assert not report.passed
    assert {r.rule for r in report.failed} == {"expected_return_plausible", "confidence_in_unit_interval"}
    q = report.quarantine_frame("signals")
    assert set(zip(q["row_number"], q["check_name"], strict=True)) == {
        (2, "expected_return_plausible"),
        (3, "confidence_in_unit_interval"),
    }
    assert "signals/2026-11-20.csv" in report.message()


def test_pre_trade_check_attaches_and_enforces_the_recommendation(
    run: tuple[Warehouse, dg.ExecuteInProcessResult],
) -> None:
    from risk_pipeline.pretrade_service import PreTradeService
    from risk_pipeline.quant.sizing import quantity_within_recommendation

    wh, _ = run
    clock = lambda: pd.Timestamp("2026-11-20T21:30:00Z")  # noqa: E731
    service = PreTradeService(wh, actor="test", clock=clock)
    rec = _latest(wh, "position_sizing")
    rec = rec[rec["method"] == "recommended"]
    greeks = _latest(wh, "position_greeks")
    checked = 0
    for r in rec.itertuples():
        for side in ("buy", "sell"):
            d = service.check(r.book, side, 1_000_000, symbol=r.symbol, record=False)
            assert d.sizing is not None and d.sizing["recommended_quantity"] == r.size_quantity
            if d.decision == "reject":
                continue
            held = greeks[(greeks["book"] == r.book) & (greeks["symbol"] == r.symbol)]
            current = float(held.loc[held["instrument_type"] != "option", "quantity"].sum())
            sign = 1 if side == "buy" else -1
            allowed = abs(quantity_within_recommendation(current, sign * 1_000_000, r.size_quantity))
            assert d.approved_quantity <= math.floor(allowed + 1e-9)
            checked += 1
    assert checked


def test_pre_trade_check_resizes_an_option_order_by_its_delta_shares(
    run: tuple[Warehouse, dg.ExecuteInProcessResult],
) -> None:
    from risk_pipeline.pretrade_service import PreTradeService
    from risk_pipeline.quant.sizing import quantity_within_recommendation
    from risk_pipeline.valuation import value_positions

    wh, _ = run
    clock = lambda: pd.Timestamp("2026-11-20T21:30:00Z")  # noqa: E731
    service = PreTradeService(wh, actor="test", clock=clock)
    rec = _latest(wh, "position_sizing").query("method == 'recommended' and size_quantity != 0")
    greeks = _latest(wh, "position_greeks")
    as_of = greeks["as_of"].iloc[0]
    quotes = wh.read("option_quotes", {"as_of": as_of})
    resized = 0
    for r in rec.itertuples():
        listed = quotes[(quotes["underlying"] == r.symbol) & (quotes["option_type"] == "C")]
        if listed.empty:
            continue
        q = listed.iloc[(listed["strike"] / listed["strike"].median() - 1).abs().argmin()]
        # the call's delta per contract, valued independently of the service off the same surface
        row = pd.DataFrame(
            [
                {
                    "as_of_date": SESSION,
                    "book": r.book,
                    "position_id": "x",
                    "instrument_type": "option",
                    "symbol": r.symbol,
                    "expiry": q["expiry"],
                    "strike": float(q["strike"]),
                    "option_type": "C",
                    "exercise_style": q["exercise_style"],
                    "quantity": 1.0,
                    "multiplier": float(q["multiplier"]),
                    "cost_basis": None,
                    "strategy": "new",
                    "sector": "x",
                    "source": "test",
                }
            ]
        )
        per_contract = float(value_positions(wh, SESSION, as_of, positions=row)["delta"].iloc[0])
        held = greeks[(greeks["book"] == r.book) & (greeks["symbol"] == r.symbol)]
        stock = float(held.loc[held["instrument_type"] != "option", "quantity"].sum())
        side = "buy" if r.size_quantity > 0 else "sell"  # a call bought adds long delta, sold adds short
        d = service.check(
            r.book,
            side,
            100_000,
            symbol=r.symbol,
            expiry=q["expiry"],
            strike=float(q["strike"]),
            option_type="C",
            record=False,
        )
        assert d.sizing is not None and d.sizing["recommended_quantity"] == r.size_quantity
        if d.decision == "reject" and not any(x.startswith("sizing:") for x in d.reasons):
            continue
        sign = 1 if side == "buy" else -1
        allowed = abs(quantity_within_recommendation(stock, sign * 100_000 * per_contract, r.size_quantity))
        assert d.approved_quantity <= math.floor(allowed / abs(per_contract) + 1e-9)
        # one more contract would take the name beyond the recommendation (or the order was cut by another limit)
        if any(x.startswith("sizing:") for x in d.reasons):
            post = stock + sign * (d.approved_quantity + 1) * per_contract
            assert abs(post) > abs(r.size_quantity) - 1e-9
            resized += 1
    assert resized


def test_size_command_prints_the_recommendation(
    run: tuple[Warehouse, dg.ExecuteInProcessResult], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from risk_pipeline.cli import main

    wh, _ = run
    monkeypatch.setenv("RISK_PIPELINE_WAREHOUSE_URL", wh.url)
    r = _latest(wh, "position_sizing").query("method == 'recommended'").iloc[0]
    assert main(["size", "--book", r["book"], "--symbol", r["symbol"]]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recommended_quantity"] == r["size_quantity"] and out["binding_limit"] == r["binding_limit"]
    assert main(["size", "--book", r["book"], "--symbol", r["symbol"], "--confidence", "1.01"]) == 0
    assert json.loads(capsys.readouterr().out)["recommended_quantity"] == 0.0
    assert main(["size", "--book", r["book"], "--symbol", "NOSUCH"]) == 4


def test_risk_budgets_recompute_from_component_var(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    wh, _ = run
    rec = _latest(wh, "position_sizing").query("method == 'recommended'")
    greeks = _latest(wh, "position_greeks")
    contrib = _latest(wh, "var_contributions").query("method == 'historical' and horizon_days == 1")
    contrib = contrib[np.isclose(contrib["confidence"], 0.99)]
    var = _latest(wh, "var_results").query("method == 'historical' and horizon_days == 1")
    var = var[np.isclose(var["confidence"], 0.99)].set_index("book")["var"]
    checked = 0
    for r in rec.itertuples():
        budget = json.loads(r.inputs)["risk_budget"]
        if budget is None:
            continue
        g = greeks[greeks["book"] == r.book].assign(e=lambda f: f["dollar_delta"].abs())
        c = contrib[contrib["book"] == r.book].set_index("symbol")["component_var"]
        # by hand: each symbol's component VaR split over its strategies by |dollar delta|
        per = g.groupby(["symbol", "strategy"])["e"].sum()
        share = per / per.groupby(level="symbol").transform("sum")
        expected = float(
            (share * c.reindex(share.index.get_level_values("symbol")).to_numpy())
            .xs(budget["strategy"], level="strategy")
            .sum()
        )
        assert budget["component_var"] == pytest.approx(expected, rel=1e-9)
        assert budget["budget"] == pytest.approx(budget["budget_share"] * var[r.book], rel=1e-12)
        over = budget["component_var"] > budget["budget"]
        assert (budget["status"] == "BREACH") == over
        if over:
            assert json.loads(r.inputs)["caps"]["risk_budget"] is not None
        checked += 1
    assert checked
