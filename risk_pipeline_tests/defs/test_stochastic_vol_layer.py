"""SABR slices, Heston parameters and the fit comparison written by ``stochastic_vol_models`` on synthetic data,
checked against QuantLib (Hagan's SABR vols, the analytic Heston engine) and the SVI table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import QuantLib as ql
from scipy.optimize import brentq
from scipy.stats import norm

from risk_pipeline.definitions import ALL_ASSETS
from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource
from risk_pipeline.warehouse import Warehouse

SESSION = dt.date(2026, 11, 20)
STEPS = {"option_quotes", "rates_curve", "dividend_yields", "implied_vols", "vol_surfaces", "stochastic_vol_models"}
Run = tuple[Warehouse, dg.ExecuteInProcessResult, dict[str, dg.ConfigurableResource]]


def _assets() -> list[dg.AssetsDefinition]:
    return [a for a in ALL_ASSETS if isinstance(a, dg.AssetsDefinition) and a.node_def.name in STEPS]


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("stochastic_vol")
    resources = {
        "warehouse": WarehouseResource(url=str(root / "risk_warehouse.duckdb")),
        "market_data": MarketDataResource(kind="synthetic", n_underlyings=3),
        "exports": ExportsResource(root=str(root / "exports")),
    }
    config = {
        "ops": {
            "vol_surfaces": {"config": {"workers": 1, "smile_plots": False}},
            "stochastic_vol_models": {"config": {"workers": 1}},
        }
    }
    result = dg.materialize(
        _assets(),
        partition_key=SESSION.isoformat(),
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config=config,
        raise_on_error=False,
    )
    return Warehouse(str(root / "risk_warehouse.duckdb")), result, resources


def _usable(wh: Warehouse) -> pd.DataFrame:
    iv = wh.read("implied_vols")
    otm = np.where(iv["option_type"] == "C", iv["strike"] > iv["forward"], iv["strike"] <= iv["forward"])
    return iv[(iv["status"] == "OK") & otm]


def test_every_step_and_blocking_check_succeeds(layer: Run) -> None:
    _, result, _ = layer
    assert result.success
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks[("heston_parameters", "parameters_valid")] and checks[("sabr_slices", "parameters_valid")]


def test_sabr_slices_reprice_with_quantlib_hagan_vols(layer: Run) -> None:
    """beta = 1 by default, where Obloj's leading term is Hagan's: QuantLib's sabrVolatility gives each stored RMSE."""
    wh, _, _ = layer
    sabr, usable = wh.read("sabr_slices"), _usable(wh)
    counts = usable.groupby(["underlying", "expiry"]).size()
    assert len(sabr) == int((counts >= 3).sum()) and (sabr["sabr_beta"] == 1.0).all()
    for _, row in sabr.iterrows():
        q = usable[(usable["underlying"] == row["underlying"]) & (usable["expiry"] == row["expiry"])]
        vols = [
            ql.sabrVolatility(
                float(k),
                row["forward"],
                row["time_to_expiry_years"],
                row["sabr_alpha"],
                1.0,
                row["sabr_nu"],
                row["sabr_rho"],
            )
            for k in q["strike"]
        ]
        rmse = float(np.sqrt(np.mean((np.asarray(vols) - q["implied_vol"].to_numpy()) ** 2)) * 100.0)
        assert row["rmse_vol_points"] == pytest.approx(rmse, rel=1e-8, abs=1e-10)
        assert row["n_quotes"] == len(q) and row["forward"] == pytest.approx(q["forward"].iloc[0], rel=1e-15)


def _quantlib_heston_vol(row: pd.Series, p: pd.Series) -> float:
    """Black vol of QuantLib's analytic Heston price of the quote. QuantLib counts whole days, so time runs 10,000
    days scaled by s = T / (10000/365): v0, theta, kappa and xi scale by s (dv' = kappa s (theta s - v') dt' +
    xi s sqrt(v') dW'), rates by s; the price is unchanged."""
    today = ql.Date(20, 11, 2026)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    s = float(row["time_to_expiry_years"]) / (10_000 / 365.0)
    forward, strike = float(row["forward"]), float(row["strike"])
    flat = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.0, dc))
    process = ql.HestonProcess(
        flat,
        flat,
        ql.QuoteHandle(ql.SimpleQuote(forward)),
        p["v0"] * s,
        p["kappa"] * s,
        p["theta"] * s,
        p["xi"] * s,
        p["rho"],
    )
    call = strike > forward
    option = ql.VanillaOption(
        ql.PlainVanillaPayoff(ql.Option.Call if call else ql.Option.Put, strike), ql.EuropeanExercise(today + 10_000)
    )
    option.setPricingEngine(ql.AnalyticHestonEngine(ql.HestonModel(process), 1e-12, 1_000_000))
    price, t, w = option.NPV(), float(row["time_to_expiry_years"]), 1.0 if call else -1.0

    def black(vol: float) -> float:
        sd = vol * np.sqrt(t)
        d1 = np.log(forward / strike) / sd + 0.5 * sd
        return w * (forward * norm.cdf(w * d1) - strike * norm.cdf(w * (d1 - sd))) - price

    return brentq(black, 1e-4, 5.0, xtol=1e-14)


def test_heston_parameters_and_rmse_against_quantlib(layer: Run) -> None:
    wh, _, _ = layer
    heston, usable, cmp = wh.read("heston_parameters"), _usable(wh), wh.read("vol_fit_comparison")
    assert sorted(heston["underlying"]) == sorted(usable["underlying"].unique())
    np.testing.assert_array_equal(
        heston.set_index("underlying")["n_quotes"].sort_index(), usable.groupby("underlying").size().sort_index()
    )
    assert (heston["feller_ok"] == (2 * heston["kappa"] * heston["theta"] >= heston["xi"] ** 2)).all()
    assert heston["converged"].all()
    p = heston.sort_values("n_quotes").iloc[0]  # the smallest surface, to keep QuantLib's share of the test short
    q = usable[usable["underlying"] == p["underlying"]]
    model = np.array([_quantlib_heston_vol(row, p) for _, row in q.iterrows()])
    err2 = ((model - q["implied_vol"].to_numpy()) * 100.0) ** 2
    assert p["rmse_vol_points"] == pytest.approx(float(np.sqrt(err2.mean())), rel=1e-6)
    assert p["max_abs_error_vol_points"] == pytest.approx(float(np.sqrt(err2.max())), rel=1e-6)
    per_slice = pd.Series(err2, index=q["expiry"].to_numpy()).groupby(level=0).mean() ** 0.5
    mine = cmp[cmp["underlying"] == p["underlying"]].set_index("expiry")["heston_rmse_vol_points"]
    np.testing.assert_allclose(mine.sort_index(), per_slice.sort_index(), rtol=1e-6)


def test_fit_comparison_matches_the_svi_and_sabr_tables(layer: Run) -> None:
    wh, _, _ = layer
    cmp, svi, sabr = wh.read("vol_fit_comparison"), wh.read("vol_surface"), wh.read("sabr_slices")
    keys = ["underlying", "expiry"]
    both = cmp.merge(svi[[*keys, "rmse_vol_points"]], on=keys).merge(
        sabr[[*keys, "rmse_vol_points"]], on=keys, suffixes=("_svi", "_sabr")
    )
    assert len(both) == len(sabr) and len(cmp) == len(svi)
    np.testing.assert_array_equal(both["svi_rmse_vol_points"], both["rmse_vol_points_svi"])
    np.testing.assert_array_equal(both["sabr_rmse_vol_points"], both["rmse_vol_points_sabr"])
    rmse = cmp[["svi_rmse_vol_points", "sabr_rmse_vol_points", "heston_rmse_vol_points"]].fillna(np.inf).to_numpy()
    assert (cmp["best_model"].to_numpy() == np.array(["svi", "sabr", "heston"])[rmse.argmin(axis=1)]).all()


def test_sabr_beta_is_configurable_per_underlying(layer: Run, tmp_path: Path) -> None:
    wh, _, resources = layer
    name = sorted(wh.read("heston_parameters")["underlying"])[0]
    model = next(a for a in _assets() if a.node_def.name == "stochastic_vol_models")
    result = dg.materialize(
        [model],
        partition_key=SESSION.isoformat(),
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"stochastic_vol_models": {"config": {"workers": 1, "sabr_beta": {name: 0.5}}}}},
    )
    assert result.success
    sabr = wh.read("sabr_slices")
    assert set(sabr.loc[sabr["underlying"] == name, "sabr_beta"]) == {0.5}
    assert set(sabr.loc[sabr["underlying"] != name, "sabr_beta"]) == {1.0}
