"""The rate risk factor of historical VaR: every option's rate moves by the day's change of the zero rate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.var import HISTORICAL, MarketHistory, VarConfig, compute_var, historical_scenarios


def _call(s: float, k: float, t: float, r: float, q: float, vol: float) -> float:
    d1 = (np.log(s / k) + (r - q + 0.5 * vol * vol) * t) / (vol * np.sqrt(t))
    return s * np.exp(-q * t) * norm.cdf(d1) - k * np.exp(-r * t) * norm.cdf(d1 - vol * np.sqrt(t))


def test_rate_moves_reprice_a_long_dated_call_by_hand() -> None:
    rng = np.random.default_rng(5)
    n = 300
    dr = rng.normal(0.0, 0.0008, n)  # 8 bp a day: rho is the only risk left
    history = MarketHistory(np.zeros((n, 1)), np.zeros((n, 1)), dr)
    book = Portfolio(
        symbols=("ABC",), spot=[100.0], symbol_index=[0], quantity=[50.0], multiplier=100.0,
        is_option=True, strike=110.0, time_years=2.0, implied_vol=0.3, rate=0.04, dividend_yield=0.01,
    )  # fmt: skip
    cfg = VarConfig(lookback_days=n, horizons=(1, 5), confidences=(0.99,))
    report = compute_var(book, history, cfg, methods=(HISTORICAL,))
    days = cfg.calendar_days_per_trading_day
    for h in (1, 5):
        shifts = np.convolve(dr, np.ones(h), mode="valid")  # overlapping h-day sums
        base = _call(100.0, 110.0, 2.0, 0.04, 0.01, 0.3)
        pnl = 5000.0 * np.array(
            [_call(100.0, 110.0, 2.0 - h * days / 365.0, 0.04 + x, 0.01, 0.3) - base for x in shifts]
        )
        k = int(np.ceil(pnl.size * 0.01 - 1e-9))
        assert report.get(HISTORICAL, h, 0.99).var == pytest.approx(np.sort(-pnl)[::-1][k - 1], rel=1e-9)
    np.testing.assert_allclose(historical_scenarios(history, 5).rate_shift_abs, np.convolve(dr, np.ones(5), "valid"))


def test_history_without_rates_and_missing_days() -> None:
    r = np.zeros((4, 1))
    assert historical_scenarios(MarketHistory(r), 1).rate_shift_abs is None
    h = MarketHistory(r, None, [0.001, np.nan, -0.002, 0.0005])
    np.testing.assert_allclose(h.rate_changes, [0.001, 0.0, -0.002, 0.0005])  # unknown: unchanged
    np.testing.assert_allclose(h.window(2).rate_changes, [-0.002, 0.0005])
    with pytest.raises(ValueError, match="rate_changes"):
        MarketHistory(r, None, [0.0, 0.0])
