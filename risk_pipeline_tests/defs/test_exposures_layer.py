"""position_greeks against QuantLib with the inputs stored on each row; portfolio splits and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from risk_pipeline.defs.exposures.greeks import GREEK_COLUMNS
from risk_pipeline.valuation import surfaces_by_underlying
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.oracles import quantlib_option

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


def test_european_positions_match_quantlib(run: Run) -> None:
    wh, result = run
    assert result.success
    rows = wh.read("position_greeks")
    euro = rows[rows["exercise_style"] == "european"]
    assert len(euro) >= 3
    for _, r in euro.iterrows():
        option, scale = quantlib_option(r)
        units = r["quantity"] * r["multiplier"]
        assert r["price"] == pytest.approx(option.NPV(), rel=1e-9)
        assert r["delta"] == pytest.approx(units * option.delta(), rel=1e-9)
        assert r["gamma"] == pytest.approx(units * option.gamma(), rel=1e-8)
        # QuantLib sees vol x sqrt(scale), rate x scale and time / scale: chain rule back to the row's units
        assert r["vega_per_vol_point"] == pytest.approx(units * option.vega() * np.sqrt(scale) / 100, rel=1e-8)
        assert r["rho_per_pct"] == pytest.approx(units * option.rho() * scale / 100, rel=1e-8)
        assert r["theta_per_day"] == pytest.approx(units * option.theta() / scale / 365, rel=1e-8)
        assert r["dollar_gamma_1pct"] == pytest.approx(r["gamma"] * r["spot"] ** 2 / 100, rel=1e-12)


def test_american_positions_are_near_a_converged_tree(run: Run) -> None:
    wh, _ = run
    rows = wh.read("position_greeks")
    amer = rows[rows["exercise_style"] == "american"]
    assert len(amer) >= 3
    for _, r in amer.iterrows():
        option, _ = quantlib_option(r)
        units = r["quantity"] * r["multiplier"]
        assert r["price"] == pytest.approx(option.NPV(), rel=6e-3, abs=0.01)  # Bjerksund-Stensland 2002
        assert r["delta"] == pytest.approx(units * option.delta(), rel=0.02, abs=abs(units) * 0.01)


def test_vol_on_each_row_is_the_surface_vol_at_its_strike(run: Run) -> None:
    wh, _ = run
    rows = wh.read("position_greeks")
    options = rows[rows["instrument_type"] == "option"]
    surfaces = surfaces_by_underlying(wh.read("vol_surface", {"as_of": options["as_of"].iloc[0]}))
    for _, r in options.iterrows():
        forward = r["spot"] * np.exp((r["rate"] - r["dividend_yield"]) * r["time_to_expiry_years"])
        expected = surfaces[r["symbol"]].implied_vol(r["time_to_expiry_years"], np.log(r["strike"] / forward))
        assert r["implied_vol"] == pytest.approx(float(expected), rel=1e-12)


def test_stock_rows_are_linear(run: Run) -> None:
    wh, _ = run
    rows = wh.read("position_greeks")
    stock = rows[rows["instrument_type"] != "option"]
    assert len(stock) > 0
    np.testing.assert_allclose(stock["delta"], stock["quantity"] * stock["multiplier"])
    np.testing.assert_allclose(stock["dollar_delta"], stock["delta"] * stock["spot"])
    assert (stock[["gamma", "vega_per_vol_point", "theta_per_day", "rho_per_pct"]] == 0).all().all()


def test_every_split_sums_to_the_independently_summed_total(run: Run) -> None:
    wh, _ = run
    positions = wh.read("position_greeks")
    portfolio = wh.read("portfolio_greeks")
    for book, p in positions.groupby("book"):
        book_rows = portfolio[portfolio["book"] == book]
        total = book_rows[book_rows["scope"] == "total"].iloc[0]
        assert total["positions_count"] == len(p)
        for column in GREEK_COLUMNS:
            assert total[column] == pytest.approx(p[column].sum(), rel=1e-12, abs=1e-9)
        for scope in ("underlying", "expiry_bucket", "strategy"):
            split = book_rows[book_rows["scope"] == scope]
            assert split["positions_count"].sum() == len(p)
            for column in GREEK_COLUMNS:
                assert split[column].sum() == pytest.approx(total[column], rel=1e-12, abs=1e-9)


def test_json_document_per_book(run: Run, exports_root: str) -> None:
    wh, _ = run
    totals = wh.read("portfolio_greeks", {"scope": "total"})
    for _, total in totals.iterrows():
        doc = json.loads((Path(exports_root) / "portfolio_greeks" / f"{total['book']}.json").read_text())
        assert set(doc) == {"delta", "gamma", "theta", "vega", "timestamp", "positions_count"}
        assert doc["delta"] == pytest.approx(total["delta"])
        assert doc["vega"] == pytest.approx(total["vega_per_vol_point"])
        assert doc["theta"] == pytest.approx(total["theta_per_day"])
        assert doc["positions_count"] == total["positions_count"]
        assert doc["timestamp"] == total["as_of"].strftime("%Y-%m-%dT%H:%M:%SZ")


def test_an_option_on_an_unlisted_expiry_is_valued_off_the_surface_and_flagged(run: Run) -> None:
    """Two positions whose expiries have no fitted slice (one between listed expiries, one past the last) are
    valued with the total variance interpolated linearly in t between the bracketing slices (raw-SVI formula
    evaluated here by hand), or proportional to t past the last, and their vol_model says so."""
    import datetime as dt

    import pandas as pd

    from risk_pipeline.calendar import expiry_close_utc
    from risk_pipeline.valuation import UNLISTED_EXTRAPOLATED, UNLISTED_INTERPOLATED, value_positions

    wh, _ = run
    stored = wh.read("position_greeks")
    as_of = stored["as_of"].max()
    options = stored[(stored["as_of"] == as_of) & (stored["instrument_type"] == "option")]
    sym = options["symbol"].iloc[0]
    session = pd.Timestamp(stored["as_of_date"].max()).date()
    slices = wh.read("vol_surface", {"as_of": as_of, "underlying": sym}).sort_values("time_to_expiry_years")
    expiries = sorted(pd.to_datetime(slices["expiry"]).dt.date)
    between = expiries[0] + (expiries[1] - expiries[0]) / 2
    beyond = expiries[-1] + dt.timedelta(days=91)
    assert between not in expiries and beyond not in expiries
    base = wh.read("positions", {"as_of_date": session})
    template = base[(base["symbol"] == sym) & (base["instrument_type"] == "option")].iloc[[0, 0]].copy()
    template["position_id"] = ["unlisted-between", "unlisted-beyond"]
    template["expiry"] = [between, beyond]
    template["exercise_style"] = "european"
    out = value_positions(wh, session, as_of, positions=template.reset_index(drop=True))
    assert out["vol_model"].tolist() == [
        "raw_svi surface, sticky-strike" + UNLISTED_INTERPOLATED,
        "raw_svi surface, sticky-strike" + UNLISTED_EXTRAPOLATED,
    ]

    def w(r: pd.Series, k: float) -> float:  # raw SVI total variance
        return r.svi_a + r.svi_b * (r.svi_rho * (k - r.svi_m) + np.sqrt((k - r.svi_m) ** 2 + r.svi_sigma**2))

    closes = expiry_close_utc(pd.Series([between, beyond]))
    for i, row in out.iterrows():
        t = (closes.iloc[i] - as_of).total_seconds() / (365.0 * 86400.0)
        assert row["time_to_expiry_years"] == pytest.approx(t, rel=1e-12)
        k = float(np.log(row["strike"] / (row["spot"] * np.exp((row["rate"] - row["dividend_yield"]) * t))))
        ts = slices["time_to_expiry_years"].to_numpy()
        if i == 0:
            lo, hi = slices.iloc[0], slices.iloc[1]
            x = (t - ts[0]) / (ts[1] - ts[0])
            total = (1 - x) * w(lo, k) + x * w(hi, k)
        else:
            total = w(slices.iloc[-1], k) * t / ts[-1]
        assert row["implied_vol"] == pytest.approx(np.sqrt(total / t), rel=1e-9)
