"""ES contributions per underlying: the tail average of each column, summing to the book's ES."""

from __future__ import annotations

import numpy as np
import pytest

from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import revalue
from risk_pipeline.quant.var import MarketHistory, VarConfig, empirical_var_es, historical_var, tail_component_es


def test_tail_component_es_by_hand() -> None:
    x = np.array([[2.0, 1.0], [-6.0, -4.0], [1.0, 2.0], [-5.0, 1.0], [4.0, 5.0], [-3.0, -1.0], [0.0, -1.0], [3.0, 2.0]])
    # book P&L (row sums) 3, -10, 3, -4, 9, -4, -1, 5; c = 0.75: m = 8 x 0.25 = 2 tail scenarios, the worst
    # (-10: [-6, -4]) and the first of the tied -4 rows in stable order ([-5, 1])
    es = tail_component_es(x, 0.75)
    np.testing.assert_allclose(es, [-(-6.0 - 5.0) / 2, -(-4.0 + 1.0) / 2], rtol=1e-15)
    assert es.sum() == pytest.approx(empirical_var_es(x.sum(axis=1), 0.75)[1], rel=1e-15)
    # c = 0.7: m = 2.4: the 0.4 weight goes to the third worst (the other -4 row, [-3, -1])
    es2 = tail_component_es(x, 0.7)
    np.testing.assert_allclose(es2, [-(-6.0 - 5.0 + 0.4 * -3.0) / 2.4, -(-4.0 + 1.0 + 0.4 * -1.0) / 2.4], rtol=1e-14)
    assert es2.sum() == pytest.approx(empirical_var_es(x.sum(axis=1), 0.7)[1], rel=1e-14)
    # m <= 1: the worst scenario
    np.testing.assert_allclose(tail_component_es(x, 0.9), [6.0, 4.0], rtol=1e-15)


def test_historical_es_components_sum_to_es_and_equal_a_direct_tail_average() -> None:
    rng = np.random.default_rng(3)
    n_days = 300
    r = rng.standard_t(4, (n_days, 3)) * 0.01
    p = Portfolio(
        symbols=("A", "B", "C"),
        spot=[100.0, 50.0, 20.0],
        symbol_index=[0, 1, 2, 2],
        quantity=[1000.0, -500.0, 2000.0, -30.0],
        multiplier=[1.0, 1.0, 1.0, 100.0],
        is_option=[False, False, False, True],
        is_call=[True, True, True, False],
        strike=[1.0, 1.0, 1.0, 19.0],
        time_years=[0.0, 0.0, 0.0, 0.3],
        implied_vol=[0.0, 0.0, 0.0, 0.35],
        rate=0.03,
    )
    # m = 300 (1 - c): 15, 7.5 (a fractional tail weight) and 3 scenarios
    results, _ = historical_var(p, MarketHistory(r), VarConfig(horizons=(1,), lookback_days=n_days))
    direct = revalue(p, np.expm1(r), horizon_days=VarConfig().calendar_days_per_trading_day, per_symbol=True)
    assert direct.by_symbol is not None
    for res in results:
        assert res.component_es is not None
        assert res.component_es.sum() == pytest.approx(res.expected_shortfall, rel=1e-9)
        m = n_days * (1 - res.confidence)
        order = np.argsort(direct.pnl, kind="stable")
        w = np.zeros(n_days)
        w[: int(np.floor(m + 1e-9))] = 1.0
        if abs(m - round(m)) > 1e-9:
            w[int(np.floor(m))] = m - np.floor(m)
        expected = -(w @ direct.by_symbol[order]) / m
        np.testing.assert_allclose(res.component_es, expected, rtol=1e-9, atol=1e-6)
        rows = res.contribution_rows()
        assert [r["component_es"] for r in rows] == pytest.approx(list(res.component_es))
