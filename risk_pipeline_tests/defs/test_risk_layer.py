"""var_results of the synthetic run checked against an independent full revaluation; JSON; backtest."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.quant.american import american_price
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.warehouse import Warehouse

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


def test_every_book_method_horizon_confidence_and_components(run: Run) -> None:
    wh, result = run
    assert result.success
    var = wh.read("var_results")
    books = wh.read("position_greeks")["book"].nunique()
    assert len(var) == books * 4 * 3 * 3
    assert (var["expected_shortfall"] >= var["var"] - 1e-9).all()
    parts = wh.read("var_contributions")
    sums = parts.groupby(["book", "method", "horizon_days", "confidence"])["component_var"].sum()
    stored = var.set_index(["book", "method", "horizon_days", "confidence"])["var"]
    np.testing.assert_allclose(sums.sort_index(), stored.reindex(sums.index).sort_index(), rtol=1e-9)


def _position_values(p: pd.DataFrame, spot: np.ndarray, years_later: float) -> np.ndarray:
    """Exact value of each position (Black-Scholes-Merton or Bjerksund-Stensland 2002) at given spots."""
    units = (p["quantity"] * p["multiplier"]).to_numpy()
    option = (p["instrument_type"] == "option").to_numpy()
    value = spot.copy()
    t = np.maximum(p["time_to_expiry_years"].to_numpy(float) - years_later, 0.0)
    args = (
        spot,
        p["strike"].to_numpy(float),
        t,
        p["implied_vol"].to_numpy(float),
        p["rate"].to_numpy(float),
        p["dividend_yield"].to_numpy(float),
        (p["option_type"] == "C").to_numpy(),
    )
    american = (p["exercise_style"] == "american").to_numpy()
    euro = option & ~american
    value[euro] = bsm_price(*(a[euro] for a in args))
    value[option & american] = american_price(*(a[option & american] for a in args))
    return units * value


def test_historical_var_equals_an_independent_revaluation(run: Run) -> None:
    wh, _ = run
    positions = wh.read("position_greeks")
    book = "vol_overlay" if "vol_overlay" in set(positions["book"]) else positions["book"].iloc[0]
    p = positions[positions["book"] == book].reset_index(drop=True)
    stored = wh.read("var_results", {"book": book, "method": "historical", "horizon_days": 1})
    start, end = stored["history_start"].iloc[0], stored["history_end"].iloc[0]
    closes = wh.read("market_prices", {"symbol": sorted(set(p["symbol"]))}, columns=["as_of_date", "symbol", "close"])
    wide = closes.pivot(index="as_of_date", columns="symbol", values="close").sort_index()
    returns = np.log(wide).diff().loc[start:end]
    base = _position_values(p, p["spot"].to_numpy(float), 0.0).sum()
    pnl = np.array(
        [
            _position_values(p, p["spot"].to_numpy(float) * np.exp(day[p["symbol"]].to_numpy(float)), 1 / 252).sum()
            - base
            for _, day in returns.iterrows()
        ]
    )
    losses = np.sort(-pnl)[::-1]  # largest loss first
    for confidence in (0.95, 0.99):
        k = int(np.ceil(len(pnl) * (1 - confidence) - 1e-9))
        expected = losses[k - 1]  # the k-th largest loss: the lower empirical quantile of P&L
        got = stored.loc[np.isclose(stored["confidence"], confidence), "var"].iloc[0]
        # American options in the scenarios use an early-exercise-premium grid: within 1 %
        assert got == pytest.approx(expected, rel=0.01)


def test_var_document_per_book(run: Run, exports_root: str) -> None:
    wh, _ = run
    var = wh.read("var_results", {"method": "historical"})
    for book, rows in var.groupby("book"):
        doc = json.loads((Path(exports_root) / "var" / f"{book}.json").read_text())
        assert set(doc) == {"var_1d", "var_3d", "var_5d", "confidence", "current_exposure", "status"}
        pick = rows[np.isclose(rows["confidence"], 0.99)].set_index("horizon_days")["var"]
        assert (doc["var_1d"], doc["var_3d"], doc["var_5d"]) == pytest.approx((pick[1], pick[3], pick[5]))
        assert doc["status"] in ("within_limits", "breach")


def test_stress_and_grid_cover_every_book(run: Run) -> None:
    wh, _ = run
    stress = wh.read("stress_results")
    grid = wh.read("stress_grid")
    for book, rows in stress.groupby("book"):
        assert {"market_crash_30", "black_swan", "flash_crash_15"} <= set(rows["scenario_id"])
        np.testing.assert_allclose(rows["pnl_pct_nav"], rows["pnl"] / rows["nav"])
        g = grid[grid["book"] == book]
        assert len(g) == 13 * 8
        # no move, no P&L (other than one day of nothing: the grid is instantaneous)
        assert abs(g.loc[(g["spot_shock"] == 0) & (g["vol_shock"] == 0), "pnl"].iloc[0]) < 1e-6 * rows["nav"].iloc[0]


def test_backtest_waits_for_two_valuations(run: Run) -> None:
    wh, _ = run
    assert wh.row_count("var_backtest") == 0  # one end-of-day valuation: no realized P&L against a VaR yet


def test_event_day_moves_are_the_flagged_days(run: Run) -> None:
    from risk_pipeline.defs.risk.events import event_day_moves

    wh, _ = run
    bars = wh.read("market_prices")
    symbol = bars.loc[bars["event_flag"].fillna("").str.contains("earnings"), "symbol"].iloc[0]
    moves, market = event_day_moves(wh, bars["as_of_date"].max(), [symbol], "SYNX")
    one = bars[bars["symbol"] == symbol].sort_values("as_of_date").reset_index(drop=True)
    flagged = one.index[one["event_flag"].fillna("").str.contains("earnings")]
    expected = (one["close"] / one["close"].shift(1) - 1).loc[flagged].dropna().to_numpy()
    np.testing.assert_allclose(moves[symbol], expected)
    assert set(market) <= {"fomc", "cpi"}
    risk = wh.read("event_risk")
    assert (risk["worst_loss"] >= risk["loss_quantile"] - 1e-9).all()
    assert (risk["expected_loss"] >= 0).all()
