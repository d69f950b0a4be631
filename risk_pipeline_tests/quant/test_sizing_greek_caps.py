"""Greek caps on a recommended size (quant.sizing.greek_cap) and risk-budget rows of limit_status, by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from risk_pipeline.defs.exposures.budgets import budget_results
from risk_pipeline.quant import sizing as sz
from risk_pipeline.quant.limits import LimitsConfig
from risk_pipeline.warehouse import Warehouse


@pytest.mark.parametrize(
    ("current", "per_unit", "cap", "direction", "expected"),
    [
        (30_000.0, 1.0, 250_000.0, 1.0, 220_000.0),  # long stock on top of +30k delta: 220k shares left
        (30_000.0, 1.0, 250_000.0, -1.0, 280_000.0),  # short: from +30k down to -250k
        (-300_000.0, 1.0, 250_000.0, 1.0, 550_000.0),  # over the cap on the other side: buying helps up to +250k
        (260_000.0, 1.0, 250_000.0, 1.0, 0.0),  # already beyond the cap on the trade's side
        (1e6, 150.0, 25e6, -1.0, (25e6 + 1e6) / 150.0),  # book dollar delta, 150 USD per share
        (40_000.0, 0.0, 25_000.0, 1.0, math.inf),  # a stock's gamma is 0: the gamma cap cannot bind
        (5_000.0, 0.0, 100_000.0, -1.0, math.inf),  # nor the vega cap
        (5_000.0, 80.0, None, 1.0, math.inf),  # no cap configured
    ],
)
def test_greek_cap_by_hand(
    current: float, per_unit: float, cap: float | None, direction: float, expected: float
) -> None:
    assert sz.greek_cap(current, per_unit, cap, direction) == pytest.approx(expected, rel=1e-15)


def test_theta_cap_limits_only_the_loss() -> None:
    # theta -12,000 a day, cap on the loss 20,000: a unit paying 40 a day of decay leaves (20,000 - 12,000) / 40
    assert sz.greek_cap(-12_000.0, -40.0, 20_000.0, 1.0, loss_only=True) == pytest.approx(200.0, rel=1e-15)
    assert sz.greek_cap(-12_000.0, -40.0, 20_000.0, -1.0, loss_only=True) == math.inf  # selling it earns theta
    assert sz.greek_cap(-12_000.0, 0.0, 20_000.0, 1.0, loss_only=True) == math.inf


def _rows(name: str, wh: Warehouse, **columns: object) -> None:
    from risk_pipeline.contracts import table

    t = table(name)
    n = max(len(v) if isinstance(v, list) else 1 for v in columns.values())
    data = {c: columns[c] for c in t.column_names if c in columns}
    defaults = {"lookback_days": 250, "n_scenarios": 250, "as_of_date": pd.Timestamp("2026-11-20").date()}
    data |= {c: v for c, v in defaults.items() if c in t.column_names and c not in data}
    data |= {c.name: None for c in t.columns if c.name not in data}  # the rest: NULL (nullable in the contract)
    wh.write(name, pd.DataFrame({k: v if isinstance(v, list) else [v] * n for k, v in data.items()}), run_id="t")


def test_budget_rows_against_component_var_by_hand(tmp_path: Path) -> None:
    wh = Warehouse(str(tmp_path / "w.duckdb"))
    wh.ensure_tables(["var_results", "var_contributions"])
    as_of = pd.Timestamp("2026-11-20T21:00:00Z")
    common = {"as_of": as_of, "book": "b", "method": "historical", "horizon_days": 1}
    _rows("var_results", wh, **common, confidence=[0.99, 0.975], var=[200.0, 180.0], expected_shortfall=[250.0, 230.0])
    _rows(
        "var_contributions",
        wh,
        **common,
        confidence=0.99,
        symbol=["AAA", "BBB", "CCC"],
        component_var=[150.0, 60.0, -10.0],
    )
    positions = pd.DataFrame(
        {
            "symbol": ["AAA", "BBB", "BBB", "CCC"],
            "strategy": ["long_stock", "long_stock", "covered_call", "protective_put"],
            "dollar_delta": [5e5, 3e5, -1e5, -2e5],
        }
    )
    shares = {"long_stock": 0.8, "covered_call": 0.2, "protective_put": 0.3}
    got = {r.limit_name: r for r in budget_results(wh, as_of, "b", positions, shares, LimitsConfig())}
    # long_stock: AAA 150 + 3/4 of BBB's 60 = 195 against 0.8 x 200 = 160: BREACH, utilization 1.21875
    ls = got["risk_budget:long_stock"]
    assert (ls.value, ls.threshold, ls.warn_threshold, ls.status) == (195.0, 160.0, 128.0, "BREACH")
    assert ls.utilization == pytest.approx(195 / 160, rel=1e-15) and ls.drivers == ("AAA", "BBB")
    cc = got["risk_budget:covered_call"]  # 1/4 of 60 = 15 against 40: OK
    assert (cc.value, cc.threshold, cc.status) == (15.0, 40.0, "OK")
    pp = got["risk_budget:protective_put"]  # a hedge with negative component VaR uses none of its budget
    assert (pp.value, pp.status) == (-10.0, "OK")
    # no budgets configured, or no VaR within the previous five days: no rows
    assert budget_results(wh, as_of, "b", positions, {}, LimitsConfig()) == []
    assert budget_results(wh, as_of + pd.Timedelta(days=9), "b", positions, shares, LimitsConfig()) == []


def test_cap_to_risk_budget_by_hand() -> None:
    from risk_pipeline.quant.pretrade import PreTradeDecision
    from risk_pipeline.sizing_service import cap_to_risk_budget

    approve = PreTradeDecision("approve", 300, 300.0, (), ())
    over = {"long_stock": "component VaR 195 above its budget 160"}
    # adding to a long position of a strategy over budget: rejected
    got = cap_to_risk_budget(approve, over, "long_stock", 1_000.0, "buy")
    assert (got.decision, got.approved_quantity) == ("reject", 0) and "long_stock" in got.reasons[-1]
    # reducing it passes whole; a sell of 300 against a long of 200 keeps the 200 that reduce (the flip would add)
    assert cap_to_risk_budget(approve, over, "long_stock", 1_000.0, "sell") == approve
    flip = cap_to_risk_budget(approve, over, "long_stock", 200.0, "sell")
    assert (flip.decision, flip.approved_quantity) == ("resize", 200)
    # another strategy, or no breach: untouched
    assert cap_to_risk_budget(approve, over, "covered_call", 1_000.0, "buy") == approve
    assert cap_to_risk_budget(approve, {}, "long_stock", 1_000.0, "buy") == approve


def test_cap_to_recommendation_counts_an_option_order_by_its_delta_shares() -> None:
    import pandas as pd

    from risk_pipeline.quant.pretrade import PreTradeDecision
    from risk_pipeline.sizing_service import Recommendation, cap_to_recommendation

    rec = Recommendation("b", "AAA", pd.Timestamp("2026-11-20"), 3_000.0, 3e5, 0.03, "kelly", "none", "trend", 0.6)
    approve = PreTradeDecision("approve", 100, 100.0, (), ())
    # 1,000 shares held, 2,000 of headroom; a call of delta 0.45 on 100 shares adds 45 shares a contract:
    # floor(2000 / 45) = 44 contracts
    call = cap_to_recommendation(approve, rec, "buy", 1_000.0, 0.45 * 100)
    assert (call.decision, call.approved_quantity) == ("resize", 44) and "delta-equivalent" in call.reasons[-1]
    assert call.sizing is not None and call.sizing["recommended_quantity"] == 3_000.0
    # 44 contracts fit (1,980 shares), 45 would not (2,025): the bound is tight
    assert 44 * 45 <= 2_000 < 45 * 45
    # selling calls or buying puts moves the name toward 0 (and then short, against a long recommendation):
    # the part down to 0 passes, nothing beyond it; 1,000 shares at 45 a contract: 22 contracts
    put = cap_to_recommendation(approve, rec, "buy", 1_000.0, -0.45 * 100)
    assert (put.decision, put.approved_quantity) == ("resize", 22)
    assert cap_to_recommendation(approve, rec, "sell", 1_000.0, 0.45 * 100).approved_quantity == 22
    # a small order within the headroom is untouched, apart from the attached recommendation
    small = cap_to_recommendation(PreTradeDecision("approve", 10, 10.0, (), ()), rec, "buy", 1_000.0, 45.0)
    assert (small.decision, small.approved_quantity, small.reasons) == ("approve", 10, ())
    # a stock order: one share a unit, as before
    stock = cap_to_recommendation(PreTradeDecision("approve", 5_000, 5e3, (), ()), rec, "buy", 1_000.0)
    assert (stock.decision, stock.approved_quantity) == ("resize", 2_000)
    # already at the recommendation: adding is rejected; a delta that is not known fails closed
    assert cap_to_recommendation(approve, rec, "buy", 3_000.0, 45.0).decision == "reject"
    unknown = cap_to_recommendation(approve, rec, "buy", 0.0, float("nan"))
    assert (unknown.decision, unknown.approved_quantity) == ("reject", 0) and "delta" in unknown.reasons[-1]
    # a zero-delta order adds nothing to the name
    assert cap_to_recommendation(approve, rec, "buy", 3_000.0, 0.0).approved_quantity == 100
