"""The volatility layer on synthetic data, checked against QuantLib repricing and the generator's truth."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.calendar import session_close_utc
from risk_pipeline.quant.svi import SviParams, svi_implied_vol
from risk_pipeline.resources import MarketDataResource
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.oracles import quantlib_option

SESSION = dt.date(2026, 11, 20)
HISTORY = 300


def test_every_asset_and_blocking_check_succeeds(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    _, result = run
    assert result.success
    failed = [
        e.event_specific_data.check_name
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and not e.event_specific_data.passed
        and e.event_specific_data.severity.value == "ERROR"
    ]
    assert failed == []


def test_time_forward_and_rate_are_recomputable(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    wh, _ = run
    iv = wh.read("implied_vols")
    expiry_close = iv["expiry"].map(lambda d: session_close_utc(d))
    t = (expiry_close - iv["as_of"]).dt.total_seconds() / (365 * 86400)
    np.testing.assert_allclose(iv["time_to_expiry_years"], t, rtol=1e-12)
    np.testing.assert_allclose(
        iv["forward"],
        iv["spot"] * np.exp((iv["rate"] - iv["dividend_yield"]) * iv["time_to_expiry_years"]),
        rtol=1e-13,
    )
    curve = wh.read("rates_curve", {"as_of_date": SESSION})
    np.testing.assert_allclose(iv["rate"], np.interp(t * 365, curve["tenor_days"], curve["zero_rate"]), rtol=1e-12)


def _quantlib_price(row: pd.Series, vol: float) -> float:
    return quantlib_option(row, vol)[0].NPV()


def test_quantlib_reprices_the_mid_at_the_stored_implied_vol(
    run: tuple[Warehouse, dg.ExecuteInProcessResult],
) -> None:
    wh, _ = run
    iv = wh.read("implied_vols")
    ok = iv[iv["status"] == "OK"]
    assert len(ok) / len(iv) > 0.9
    european = ok[ok["exercise_style"] == "european"].sample(n=150, random_state=1)
    for _, row in european.iterrows():
        assert _quantlib_price(row, row["implied_vol"]) == pytest.approx(row["mid"], rel=1e-7, abs=1e-7), row.to_dict()
    # out of the money: all time value, so the price pins the vol down (deep in-the-money American
    # quotes sit on the exercise boundary, where vega vanishes and any approximation error shows)
    otm = np.where(ok["option_type"] == "C", ok["strike"] > ok["spot"], ok["strike"] < ok["spot"])
    american = ok[(ok["exercise_style"] == "american") & otm].sample(n=60, random_state=1)
    for _, row in american.iterrows():
        # Bjerksund-Stensland 2002 is a lower-bound approximation: it prices long-dated American
        # puts up to ~0.5 % below a converged tree (Haug 2007, ch. 3), so the tolerance is 0.6 %
        tree = _quantlib_price(row, row["implied_vol"])
        assert tree == pytest.approx(row["mid"], rel=6e-3, abs=0.01), row.to_dict()
    assert set(iv.loc[iv["status"] != "OK", "implied_vol"].isna()) <= {True}
    assert (iv.loc[iv["bid"] <= 0, "status"] == "ZERO_PRICE").all()


def test_index_surface_is_close_to_the_generating_smile(
    run: tuple[Warehouse, dg.ExecuteInProcessResult],
) -> None:
    wh, _ = run
    surface = wh.read("vol_surface", {"underlying": "SYNX"})
    source = MarketDataResource(kind="synthetic", n_underlyings=4).get_source()
    truth = source.true_surface(SESSION).set_index(["underlying", "expiry"])  # type: ignore[attr-defined]
    k = np.linspace(-0.1, 0.05, 7)
    for _, s in surface.iterrows():
        true = truth.loc[("SYNX", s["expiry"])]
        t = s["time_to_expiry_years"]
        fitted = svi_implied_vol(SviParams(s["svi_a"], s["svi_b"], s["svi_rho"], s["svi_m"], s["svi_sigma"]), k, t)
        generating = svi_implied_vol(
            SviParams(true["svi_a"], true["svi_b"], true["svi_rho"], true["svi_m"], true["svi_sigma"]), k, t
        )
        # quotes are rounded to ticks, so the fit can only be as good as the quotes near the money
        np.testing.assert_allclose(fitted, generating, atol=0.01)


def test_grid_matches_the_stored_slices(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    wh, _ = run
    surface = wh.read("vol_surface").set_index(["underlying", "expiry"])
    grid = wh.read("vol_surface_grid")
    for (u, e), g in grid.groupby(["underlying", "expiry"]):
        s = surface.loc[(u, e)]
        p = SviParams(s["svi_a"], s["svi_b"], s["svi_rho"], s["svi_m"], s["svi_sigma"])
        np.testing.assert_allclose(g["implied_vol"], svi_implied_vol(p, g["log_moneyness"], s["time_to_expiry_years"]))
        np.testing.assert_allclose(g["total_variance"], g["implied_vol"] ** 2 * s["time_to_expiry_years"])


def test_forecasts_cover_every_symbol_model_horizon_and_select_one(
    run: tuple[Warehouse, dg.ExecuteInProcessResult],
) -> None:
    wh, _ = run
    fc = wh.read("vol_forecasts")
    assert len(fc) == 5 * 4 * 3
    assert (fc["annualized_vol"] > 0.03).all() and (fc["annualized_vol"] < 2).all()
    assert (fc.groupby(["symbol", "horizon_days"])["selected"].sum() == 1).all()
    pivot = fc.pivot_table(index=["symbol", "horizon_days"], columns="model", values="oos_loss")
    chosen = fc[fc["selected"]].set_index(["symbol", "horizon_days"])["model"]
    for key, model in chosen.items():
        assert model in ("garch", "xgboost")
        n_oos = fc.set_index(["symbol", "horizon_days", "model"]).loc[(*key, "xgboost"), "n_oos"]
        beats = pivot.loc[key, "xgboost"] < pivot.loc[key, "garch"] and n_oos >= 63
        assert (model == "xgboost") == beats


def test_atm_vol_history_matches_the_generating_surface(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    """The stored 30-day ATM vol against the generator's at-the-forward vol interpolated in total variance."""
    wh, _ = run
    stored = wh.read("atm_vol_history")
    source = MarketDataResource(kind="synthetic", n_underlyings=4).get_source()
    days = sorted(stored["as_of_date"].unique())
    assert len(days) == HISTORY + 1 and days[-1] == SESSION
    assert (stored.groupby("as_of_date")["symbol"].count() == len(source.symbols())).all()
    # single names list monthlies only: when the front month is inside 7 days, the 30-day vol is extrapolated
    assert stored["extrapolated"].mean() < 0.25
    tau = 30 / 365.0
    diffs = []
    for day in [*days[::60], SESSION]:
        truth = source.true_surface(day)  # type: ignore[attr-defined]
        got = stored[stored["as_of_date"] == day].set_index("symbol")["atm_vol"]
        for symbol, g in truth.groupby("underlying"):
            g = g.sort_values("time_to_expiry_years")
            t = g["time_to_expiry_years"].to_numpy(float)
            w = np.interp(tau, t, g["atm_vol"].to_numpy(float) ** 2 * t)
            diffs.append(got[symbol] - np.sqrt(w / tau))
    diffs = np.array(diffs)
    # quotes are tick-rounded mids; linear interpolation across the smile's curvature costs a little more
    assert np.abs(diffs).max() < 0.01
    assert np.abs(diffs).mean() < 0.002
