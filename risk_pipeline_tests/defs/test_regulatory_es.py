"""regulatory_es of the synthetic run: the MAR33.4 cascade from the stored buckets, the stressed window and its ES
against an independent full revaluation (Black-Scholes-Merton and BS2002 prices of each position)."""

from __future__ import annotations

import json
import math

import dagster as dg
import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.defs.test_risk_layer import _position_values

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


def _es(pnl: np.ndarray, confidence: float = 0.975) -> float:
    """Acerbi-Tasche ES: the m = n (1 - c) worst, the fractional one partly."""
    p = np.sort(pnl)
    m = p.size * (1 - confidence)
    whole = math.floor(m + 1e-9)
    return -(p[:whole].sum() + (m - whole) * p[whole]) / m


def test_rows_cascade_and_selection(run: Run) -> None:
    wh, result = run
    assert result.success
    reg = wh.read("regulatory_es")
    books = set(wh.read("position_greeks")["book"])
    assert set(reg["book"]) == books
    cal = xcals.get_calendar("XNYS")
    first_price = pd.Timestamp(wh.read("market_prices", columns=["as_of_date"])["as_of_date"].min())
    for _, rows in reg.groupby("book"):
        assert sorted(zip(rows["period"], rows["source"], strict=True)) == [
            ("current", "stored_history"),
            ("stressed", "sp500_arch"),
            ("stressed", "stored_history"),
        ]
        assert rows["selected"].sum() == 1 and rows.loc[rows["selected"], "period"].iloc[0] == "stressed"
        for r in rows.itertuples():
            assert r.n_return_days == 250 and r.n_scenarios_10d == 241
            if r.source == "stored_history":
                span = cal.sessions_in_range(pd.Timestamp(r.window_start), pd.Timestamp(r.window_end))
                assert len(span) == 250 and pd.Timestamp(r.window_start) > first_price
            else:
                assert pd.Timestamp("1999-01-01") < pd.Timestamp(r.window_start) < pd.Timestamp(r.window_end)
                assert pd.Timestamp(r.window_end) <= pd.Timestamp("2018-12-31") and "arch.data.sp500" in r.data_source
            # MAR33.4 by hand: weights (LH_j - LH_j-1) / 10 = 1, 2, 2, 6 after the base bucket
            buckets = [r.es_975_10d_lh20, r.es_975_10d_lh40, r.es_975_10d_lh60, r.es_975_10d_lh120]
            total = r.es_975_10d**2 + sum(w * max(e, 0.0) ** 2 for w, e in zip((1, 2, 2, 6), buckets, strict=True))
            assert r.es_liquidity_adjusted == pytest.approx(math.sqrt(total), rel=1e-12)
            ratio = 1.0 if pd.isna(r.reduced_set_ratio) else max(1.0, r.reduced_set_ratio)
            assert r.es_regulatory == pytest.approx(r.es_liquidity_adjusted * ratio, rel=1e-12)
            mapping = json.loads(r.factor_mapping)
            assert len(mapping["spot_lh_days"]) == len(mapping["symbols"])
            assert set(mapping["spot_lh_days"]) <= {10, 20} and set(mapping["vol_lh_days"]) <= {20, 60}
        stressed = rows[rows["period"] == "stressed"]
        assert rows.loc[rows["selected"], "es_regulatory"].iloc[0] == stressed["es_regulatory"].max()


def test_stressed_window_against_an_independent_revaluation(run: Run) -> None:
    """Today's book repriced under every stored daily move: the stored window has the largest 250-day 97.5 % ES,
    and its 1-day and 10-day ES match a direct repricing (within 1 %: American options use a premium grid)."""
    wh, _ = run
    positions = wh.read("position_greeks")
    book = "vol_overlay" if "vol_overlay" in set(positions["book"]) else positions["book"].iloc[0]
    as_of = positions["as_of"].max()
    p = positions[(positions["book"] == book) & (positions["as_of"] == as_of)].reset_index(drop=True)
    row = wh.read("regulatory_es", {"book": book, "period": "stressed", "source": "stored_history"}).iloc[0]
    symbols = sorted(set(p["symbol"]))
    closes = wh.read("market_prices", {"symbol": symbols}, columns=["as_of_date", "symbol", "close"])
    wide = closes.pivot(index="as_of_date", columns="symbol", values="close").sort_index()
    returns = np.log(wide).diff().iloc[1:].dropna()
    atm = wh.read("atm_vol_history", {"symbol": symbols}).pivot(index="as_of_date", columns="symbol", values="atm_vol")
    vol_change = (atm / atm.shift(1)).reindex(returns.index).fillna(1.0)
    spot = p["spot"].to_numpy(float)
    base = _position_values(p, spot, 0.0).sum()

    def pnl(log_return: pd.Series, vol_ratio: pd.Series) -> float:
        r, v = log_return[p["symbol"]].to_numpy(float), vol_ratio[p["symbol"]].to_numpy(float)
        return float(_position_values(p, spot * np.exp(r), 0.0, v).sum() - base)

    daily = np.array([pnl(returns.loc[d], vol_change.loc[d]) for d in returns.index])
    es_by_window = np.array([_es(daily[i : i + 250]) for i in range(daily.size - 249)])
    start = list(returns.index).index(row["window_start"])
    assert returns.index[start + 249] == row["window_end"]
    assert es_by_window[start] == pytest.approx(es_by_window.max(), rel=0.01)
    assert row["es_975_1d"] == pytest.approx(es_by_window[start], rel=0.01)
    window = returns.iloc[start : start + 250]
    ratios = vol_change.iloc[start : start + 250]
    ten_day = np.array([pnl(window.iloc[i : i + 10].sum(), ratios.iloc[i : i + 10].prod()) for i in range(241)])
    assert row["es_975_10d"] == pytest.approx(_es(ten_day), rel=0.01)


def test_same_history_compares_every_factor_bit_for_bit() -> None:
    """The current period reused as the stressed window only when every factor change is the same bits."""
    from risk_pipeline.defs.risk.regulatory_es import same_history
    from risk_pipeline.quant.var import MarketHistory

    r = np.array([[0.01, -0.02], [0.0, 0.03], [0.02, 0.01]])
    iv = np.array([[0.1, np.nan], [-0.05, 0.0], [0.02, 0.01]])
    a = MarketHistory(r, iv)
    assert same_history(a, MarketHistory(r.copy(), iv.copy()))
    assert not same_history(a, MarketHistory(r, None))
    assert not same_history(a, MarketHistory(r[1:], iv[1:]))
    assert not same_history(a, MarketHistory(np.where(r == 0.0, -0.0, r), iv))  # -0.0 is other bits
    assert not same_history(a, MarketHistory(r, iv, rate_changes=np.zeros(3)))
