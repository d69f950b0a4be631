"""var_results of the synthetic run checked against an independent full revaluation; JSON; backtest."""

from __future__ import annotations

import datetime as dt
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
    assert len(var) == books * 5 * 3 * 3  # four methods and stressed historical
    assert (var["expected_shortfall"] >= var["var"] - 1e-9).all()
    # stressed VaR: a span of 250 return days (XNYS sessions) inside the stored history
    import exchange_calendars as xcals

    stressed = var[var["method"] == "stressed_historical"]
    assert len(stressed) == books * 9
    cal = xcals.get_calendar("XNYS")
    prices = wh.read("market_prices", columns=["as_of_date"])["as_of_date"]
    for r in stressed.drop_duplicates(["book"]).itertuples():
        span = cal.sessions_in_range(pd.Timestamp(r.history_start), pd.Timestamp(r.history_end))
        assert len(span) == 250 and pd.Timestamp(r.history_start) > pd.Timestamp(prices.min())
    parts = wh.read("var_contributions")
    sums = parts.groupby(["book", "method", "horizon_days", "confidence"])["component_var"].sum()
    stored = var.set_index(["book", "method", "horizon_days", "confidence"])["var"]
    np.testing.assert_allclose(sums.sort_index(), stored.reindex(sums.index).sort_index(), rtol=1e-9)
    # ES contributions of the simulation methods sum to the ES; NULL for the parametric ones
    simulated = parts["method"].isin(["historical", "monte_carlo_fhs", "stressed_historical"])
    assert parts.loc[simulated, "component_es"].notna().all() and parts.loc[~simulated, "component_es"].isna().all()
    es_sums = parts[simulated].groupby(["book", "method", "horizon_days", "confidence"])["component_es"].sum()
    es = var.set_index(["book", "method", "horizon_days", "confidence"])["expected_shortfall"]
    np.testing.assert_allclose(es_sums.sort_index(), es.reindex(es_sums.index).sort_index(), rtol=1e-9)


def _position_values(
    p: pd.DataFrame,
    spot: np.ndarray,
    years_later: float,
    vol_scale: np.ndarray | float = 1.0,
    rate_shift: float = 0.0,
    dividend_shift: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Exact value of each position (Black-Scholes-Merton or the exact American engine) at given spots, vols, rate
    and dividend-yield shifts."""
    units = (p["quantity"] * p["multiplier"]).to_numpy()
    option = (p["instrument_type"] == "option").to_numpy()
    value = spot.copy()
    t = np.maximum(p["time_to_expiry_years"].to_numpy(float) - years_later, 0.0)
    args = (
        spot,
        p["strike"].to_numpy(float),
        t,
        p["implied_vol"].to_numpy(float) * vol_scale,
        p["rate"].to_numpy(float) + rate_shift,
        p["dividend_yield"].to_numpy(float) + dividend_shift,
        (p["option_type"] == "C").to_numpy(),
    )
    american = (p["exercise_style"] == "american").to_numpy()
    euro = option & ~american
    value[euro] = bsm_price(*(a[euro] for a in args))
    value[option & american] = american_price(*(a[option & american] for a in args))
    return units * value


def test_historical_var_equals_an_independent_revaluation(run: Run) -> None:
    """Each historical day: spots by the day's returns, each option's vol by the day's relative ATM-vol change ``c``
    raised to ``(30 / max(tau_days, 7))^alpha`` (the default expiry-scaled term structure, alpha as the stress layer
    stored it), every option's rate by the day's change of the 91-day zero rate and its dividend yield by its
    underlying's yield change (both factors are on by default)."""
    from risk_pipeline.defs.risk.stress_vol import StoredVolParameters

    wh, _ = run
    positions = wh.read("position_greeks")
    book = "vol_overlay" if "vol_overlay" in set(positions["book"]) else positions["book"].iloc[0]
    p = positions[positions["book"] == book].reset_index(drop=True)
    stored = wh.read("var_results", {"book": book, "method": "historical", "horizon_days": 1})
    assert (stored["iv_history_coverage"] == 1.0).all()
    assert (stored["rate_history_coverage"] == 1.0).all() and (stored["dividend_history_coverage"] == 1.0).all()
    start, end = stored["history_start"].iloc[0], stored["history_end"].iloc[0]
    symbols = sorted(set(p["symbol"]))
    closes = wh.read("market_prices", {"symbol": symbols}, columns=["as_of_date", "symbol", "close"])
    wide = closes.pivot(index="as_of_date", columns="symbol", values="close").sort_index()
    returns = np.log(wide).diff().loc[start:end]
    atm = wh.read("atm_vol_history", {"symbol": symbols}).pivot(index="as_of_date", columns="symbol", values="atm_vol")
    vol_change = (atm / atm.shift(1)).reindex(returns.index).fillna(1.0)
    stress = wh.read("stress_results", {"book": book})
    latest = stress.loc[stress["as_of"] == stress["as_of"].max(), "vol_parameters"].iloc[0]
    rule = StoredVolParameters.parse(str(latest)).rule
    tau_days = p["time_to_expiry_years"].to_numpy(float) * 365.0
    power = (rule.reference_tenor_days / np.maximum(tau_days, rule.min_tenor_days)) ** rule.term_exponent
    assert 0.0 < rule.term_exponent < 1.0 and rule.reference_tenor_days == 30.0
    curve = wh.read("rates_curve", {"tenor_days": 91}).set_index("as_of_date")["zero_rate"].sort_index()
    rate_change = curve.diff().reindex(returns.index).fillna(0.0)
    yields = wh.read("dividend_yields", {"symbol": symbols})
    yields = yields.pivot(index="as_of_date", columns="symbol", values="dividend_yield").sort_index()
    div_change = yields.diff().reindex(returns.index).fillna(0.0)
    base = _position_values(p, p["spot"].to_numpy(float), 0.0).sum()
    pnl = np.array(
        [
            _position_values(
                p,
                p["spot"].to_numpy(float) * np.exp(returns.loc[day, p["symbol"]].to_numpy(float)),
                1 / 252,
                vol_change.loc[day, p["symbol"]].to_numpy(float) ** power,
                float(rate_change.loc[day]),
                div_change.loc[day, p["symbol"]].to_numpy(float),
            ).sum()
            - base
            for day in returns.index
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
        assert set(doc) == {"var_1d", "var_3d", "var_5d", "confidence", "current_exposure", "status", "gap_component"}
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
        # the vol rule of every row, its expiry exponent calibrated on the stored atm_vol_history
        assert rows["vol_rule"].str.startswith("expiry_name_skew").all()
        assert rows["vol_rule"].str.contains("alpha from atm_vol_history").all(), rows["vol_rule"].iloc[0]
        g = grid[grid["book"] == book]
        assert len(g) == 13 * 8
        # no move, no P&L (other than one day of nothing: the grid is instantaneous)
        assert abs(g.loc[(g["spot_shock"] == 0) & (g["vol_shock"] == 0), "pnl"].iloc[0]) < 1e-6 * rows["nav"].iloc[0]


def test_realized_backtest_waits_for_two_valuations(run: Run) -> None:
    wh, _ = run
    books = set(wh.read("var_backtest")["book"])
    assert books and all(b.startswith(("hypothetical:", "surface:")) for b in books)  # one valuation: no realized P&L
    assert {b.split(":", 1)[1] for b in books if b.startswith("surface:")} == {
        b.split(":", 1)[1] for b in books if b.startswith("hypothetical:")
    }


def test_surface_backtest_shares_the_static_books_var_and_reprices_off_smile_history(run: Run) -> None:
    """surface:<book> compares the VaR of hypothetical:<book> (same days, same figures) with P&L repriced off the
    stored smile_history; a day's P&L differs from the factor-mapped one only through the options' vols."""
    wh, _ = run
    assert len(wh.read("smile_history")) > 0
    obs = wh.read("var_backtest_observations")
    hyp = obs[obs["book"].str.startswith("hypothetical:")].copy()
    surf = obs[obs["book"].str.startswith("surface:")].copy()
    assert len(surf) > 0
    hyp["name"] = hyp["book"].str.split(":").str[1]
    surf["name"] = surf["book"].str.split(":").str[1]
    key = ["name", "method", "var_date"]
    both = surf.merge(hyp, on=key, suffixes=("_s", "_h"))
    assert len(both) == len(surf)
    np.testing.assert_array_equal(both["var_s"], both["var_h"])
    np.testing.assert_array_equal(both["pnl_date_s"], both["pnl_date_h"])
    assert both["pnl_s"].notna().all() and (both["exception_s"] == (both["pnl_s"] < -both["var_s"])).all()
    assert surf["source"].str.contains("smile_history").all()
    positions = wh.read("position_greeks")
    for name, p in positions.groupby("book"):
        if not (p["instrument_type"] == "option").any():  # a stock book: the same P&L either way
            rows = both[both["name"] == name]
            np.testing.assert_allclose(rows["pnl_s"], rows["pnl_h"], rtol=1e-12)


def test_hypothetical_backtest_last_day_is_an_independent_repricing(run: Run) -> None:
    """The book carried back to the previous session and moved to today, repriced exactly by hand; each option's
    vol moves by the ATM ratio ``c`` raised to ``(30 / max(tau_days, 7))^alpha`` (the default expiry-scaled term
    structure, alpha as the stress layer stored it at the session)."""
    from risk_pipeline.defs.risk.stress_vol import StoredVolParameters

    wh, _ = run
    positions = wh.read("position_greeks")
    stress = wh.read("stress_results")
    latest = stress.loc[stress["as_of"] == stress["as_of"].max(), "vol_parameters"].iloc[0]
    rule = StoredVolParameters.parse(str(latest)).rule
    for book, p in positions.groupby("book"):
        p = p.reset_index(drop=True)
        tau_days = p["time_to_expiry_years"].to_numpy(float) * 365.0
        power = (rule.reference_tenor_days / np.maximum(tau_days, rule.min_tenor_days)) ** rule.term_exponent
        obs = wh.read("var_backtest_observations", {"book": f"hypothetical:{book}", "method": "historical"})
        last = obs.sort_values("var_date").iloc[-1]
        today, before = last["pnl_date"], last["var_date"]
        symbols = sorted(set(p["symbol"]))
        closes = wh.read("market_prices", {"symbol": symbols, "as_of_date": [before, today]})
        close = closes.pivot(index="as_of_date", columns="symbol", values="close")
        atm = wh.read("atm_vol_history", {"symbol": symbols, "as_of_date": [before, today]})
        vol = atm.pivot(index="as_of_date", columns="symbol", values="atm_vol")
        s_then = close.loc[before, p["symbol"]].to_numpy(float)
        move = s_then / p["spot"].to_numpy(float)
        carried = p.assign(
            quantity=p["quantity"] / move,
            strike=p["strike"] * move,
            implied_vol=p["implied_vol"] * (vol.loc[before, p["symbol"]] / vol.loc[today, p["symbol"]]).to_numpy(),
        )
        days = (today - before).days
        value_then = _position_values(carried, s_then, 0.0).sum()
        value_now = _position_values(
            carried,
            close.loc[today, p["symbol"]].to_numpy(float),
            days / 365.0,
            (vol.loc[today, p["symbol"]] / vol.loc[before, p["symbol"]]).to_numpy(float) ** power,
        ).sum()
        assert last["pnl"] == pytest.approx(value_now - value_then, rel=1e-9, abs=1e-6)
        assert last["book_value"] == pytest.approx(value_then, rel=1e-9)


def test_es_backtest_recomputes_from_the_observations(run: Run) -> None:
    """Each method's latest window carries Z2 at 97.5 %, recomputed here by the paper's formula from the stored
    97.5 % VaR, ES and P&L of the window's days; its p-value and zone are consistent."""
    wh, _ = run
    windows = wh.read("var_backtest")
    obs = wh.read("var_backtest_observations")
    assert (obs["expected_shortfall"] >= obs["es_var"] - 1e-9).all()
    assert set(obs["es_confidence"].dropna()) == {0.975}
    checked = 0
    for (book, method), w in windows.groupby(["book", "method"]):
        last = w.sort_values("window_end").iloc[-1]
        o = obs[(obs["book"] == book) & (obs["method"] == method)]
        inside = o[(o["pnl_date"] >= last["window_start"]) & (o["pnl_date"] <= last["window_end"])]
        inside = inside.dropna(subset=["expected_shortfall", "es_var"])
        hit = inside["pnl"] < -inside["es_var"]
        z2 = 1 + (inside["pnl"] / inside["expected_shortfall"])[hit].sum() / (len(inside) * 0.025)
        assert last["es_confidence"] == 0.975 and last["es_n_obs"] == len(inside)
        assert last["es_z2"] == pytest.approx(z2, abs=1e-12)
        assert 0 < last["es_z2_p_value"] <= 1
        zone = "green" if last["es_z2_p_value"] > 0.05 else ("yellow" if last["es_z2_p_value"] > 1e-4 else "red")
        assert last["es_traffic_light"] == zone
        earlier = w.sort_values("window_end").iloc[:-1]
        assert earlier["es_z2_p_value"].isna().all() and earlier["es_z2"].notna().all()
        checked += 1
    assert checked >= 2


def test_hypothetical_windows_recount_from_the_observations(run: Run) -> None:
    from scipy.stats import chi2

    wh, _ = run
    windows = wh.read("var_backtest")
    obs = wh.read("var_backtest_observations")
    assert (obs["exception"] == (obs["pnl"] < -obs["var"])).all()
    for (book, method), w in windows.groupby(["book", "method"]):
        last = w.sort_values("window_end").iloc[-1]
        o = obs[(obs["book"] == book) & (obs["method"] == method)]
        inside = o[(o["pnl_date"] >= last["window_start"]) & (o["pnl_date"] <= last["window_end"])]
        assert len(inside) == last["n_obs"] == min(len(o), 250)
        x, n, p0 = int(inside["exception"].sum()), len(inside), 0.01
        assert last["exceptions"] == x
        hat = x / n
        lr = -2 * (
            (n - x) * np.log(1 - p0)
            + x * np.log(p0)
            - ((n - x) * np.log(1 - hat) if hat < 1 else 0)
            - (x * np.log(hat) if x else 0)
        )
        assert last["kupiec_lr"] == pytest.approx(lr, abs=1e-9)
        assert last["kupiec_p_value"] == pytest.approx(chi2.sf(lr, 1), abs=1e-12)


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


def test_a_held_option_that_did_not_trade_today_liquidates_one_contract_a_day(run: Run) -> None:
    """Zero volume (thin single-name options) must not fail the stress step: the most conservative volume."""
    from risk_pipeline.defs.risk.stress import liquidity_inputs

    wh, _ = run
    rows = wh.read("position_greeks")
    rows = rows[rows["book"] == rows["book"].iloc[0]].reset_index(drop=True)
    option = rows.index[rows["instrument_type"] == "option"][0]
    quotes = wh.read("option_quotes", {"as_of": rows["as_of"].iloc[0]})
    held = quotes.merge(
        rows.loc[[option], ["symbol", "expiry", "strike", "option_type"]].rename(columns={"symbol": "underlying"})
    )
    assert len(held) == 1
    _, volumes = liquidity_inputs(wh, rows, rows["as_of"].iloc[0], 5.0)
    assert volumes[option] == max(float(held["volume"].iloc[0]), 1.0)
    missing = rows.assign(strike=rows["strike"] + 0.123)  # no quote for the held contract
    _, volumes_missing = liquidity_inputs(wh, missing, rows["as_of"].iloc[0], 5.0)
    assert volumes_missing[option] == 1.0 and (volumes_missing > 0).all()


def test_liquidity_inputs_read_only_the_books_contracts_and_match_the_whole_snapshot(run: Run) -> None:
    """The quotes read for a book (its underlyings, expiries and strikes) give every position the spread and volume
    of a merge with the whole snapshot, bit for bit, for each book."""
    from risk_pipeline.defs.risk.stress import liquidity_inputs

    wh, _ = run
    everything = wh.read("position_greeks")
    for _, rows in everything.groupby("book"):
        rows = rows.reset_index(drop=True)
        as_of = rows["as_of"].iloc[0]
        quotes = wh.read("option_quotes", {"as_of": as_of}).rename(columns={"underlying": "symbol"})
        key = ["symbol", "expiry", "strike", "option_type"]
        merged = rows[key].merge(quotes, on=key, how="left")
        is_option = (rows["instrument_type"] == "option").to_numpy(bool)
        assert is_option.any() and merged["ask"].notna()[is_option].all()
        spreads, volumes = liquidity_inputs(wh, rows, as_of, 5.0)
        np.testing.assert_array_equal(spreads[is_option], (merged["ask"] - merged["bid"]).to_numpy(float)[is_option])
        np.testing.assert_array_equal(volumes[is_option], np.maximum(merged["volume"].to_numpy(float), 1.0)[is_option])
        np.testing.assert_array_equal(spreads[~is_option], 2 * 5.0 / 1e4 * rows["spot"].to_numpy(float)[~is_option])


def test_var_results_with_sabr_smile_and_flat_term_structure(run: Run, tmp_path: Path) -> None:
    """var_results with smile_dynamics 'sabr' and vol_term_structure 'flat' on a copy of the run (both differ from
    the defaults, sticky strike and expiry-scaled): historical rows say so and equal historical_var with each
    position's stored SABR slice and no expiry scaling; the other methods are unchanged; the sensitivity JSON of
    both runs agree where they describe the same choice; a wrong value fails."""
    import shutil

    from risk_pipeline.defs.risk.var import book_portfolio, book_slices, return_history, var_results
    from risk_pipeline.quant.sabr_dynamics import SabrBackboneSlide
    from risk_pipeline.quant.var import VarConfig, historical_var
    from risk_pipeline.resources import ExportsResource, WarehouseResource
    from risk_pipeline_tests.defs.conftest import SESSION

    wh, _ = run
    url = str(tmp_path / "copy.duckdb")
    shutil.copy(wh.url, url)
    resources = {"warehouse": WarehouseResource(url=url), "exports": ExportsResource(root=str(tmp_path / "exports"))}
    before = Warehouse(url).read("var_results")
    choice = {"smile_dynamics": "sabr", "vol_term_structure": "flat"}
    result = dg.materialize(
        [var_results],
        partition_key=SESSION.isoformat(),
        resources=resources,
        run_config={"ops": {"var_results": {"config": choice}}},
    )
    assert result.success
    copy = Warehouse(url)
    after = copy.read("var_results")
    as_of = after["as_of"].max()
    key = ["book", "method", "horizon_days", "confidence"]
    now = after[after["as_of"] == as_of].set_index(key).sort_index()
    was = before[before["as_of"] == as_of].set_index(key).sort_index()
    hist = now.xs("historical", level="method")
    assert hist["method_note"].str.contains("smile: SABR backbone").all()
    assert not hist["method_note"].str.contains("term:").any()
    assert was.xs("historical", level="method")["method_note"].str.contains("term: ATM vol move x").all()
    others = [
        m for m in now.index.get_level_values("method").unique() if m not in ("historical", "stressed_historical")
    ]
    for m in others:
        np.testing.assert_allclose(now.xs(m, level="method")["var"], was.xs(m, level="method")["var"], rtol=1e-12)
    # the 1-day historical VaR of each book equals historical_var with the stored SABR slices, every expiry moved
    # by the 30-day ATM ratio
    sabr = copy.read("sabr_slices", {"as_of": as_of})
    greeks = copy.read("position_greeks", {"as_of": as_of})
    compared = 0
    for book, rows in greeks.groupby("book"):
        rows = rows.reset_index(drop=True)
        portfolio = book_portfolio(rows)
        options = sorted(rows.loc[rows["instrument_type"] == "option", "symbol"].unique())
        factors = return_history(copy, SESSION, portfolio.symbols, 500, options, True, True)  # the defaults
        res, _ = historical_var(
            portfolio,
            factors.history,
            VarConfig(horizons=(1,)),
            smile=SabrBackboneSlide(book_slices(rows, portfolio, sabr)),
            term=None,
        )
        for r in res:
            row = hist.loc[(book, 1, r.confidence)]
            if pd.isna(row["gap_var"]) or row["gap_var"] == 0:  # an event gap adds its own scenarios
                assert row["var"] == pytest.approx(r.var, rel=1e-12)
                compared += 1
    assert compared
    # every historical row carries the VaR under each smile (production term) and each term (production smile)
    for (book, method, h, c), row in now.iterrows():
        if method != "historical":
            assert row["smile_sensitivity"] is None or pd.isna(row["smile_sensitivity"])
            continue
        new_s = json.loads(row["smile_sensitivity"])
        old_s = json.loads(was.loc[(book, method, h, c), "smile_sensitivity"])
        assert (new_s["smile"]["production"], new_s["term"]["production"]) == ("sabr", "flat")
        assert (old_s["smile"]["production"], old_s["term"]["production"]) == ("sticky_strike", "expiry_scaled")
        assert set(new_s["smile"]["var"]) == {"sticky_strike", "sticky_moneyness", "sabr"}
        assert set(new_s["term"]["var"]) == {"flat", "expiry_scaled"}
        assert new_s["smile"]["var"]["sabr"] == new_s["term"]["var"]["flat"]
        # (sabr, expiry_scaled) and (sticky_strike, flat) were computed by both runs; the first on a grid shared with
        # other runs (each run's figures within the grid's interpolation error of its own grid's: other runs, other
        # shared ranges), the second on its own grids
        assert new_s["term"]["var"]["expiry_scaled"] == pytest.approx(old_s["smile"]["var"]["sabr"], rel=1e-5)
        assert new_s["smile"]["var"]["sticky_strike"] == pytest.approx(old_s["term"]["var"]["flat"], rel=1e-12)
    for bad_choice in ({"smile_dynamics": "sticky_delta"}, {"vol_term_structure": "steep"}):
        bad = dg.materialize(
            [var_results],
            partition_key=SESSION.isoformat(),
            resources=resources,
            run_config={"ops": {"var_results": {"config": bad_choice}}},
            raise_on_error=False,
        )
        assert not bad.success


def test_fhs_uses_gjr_garch_where_it_wins_out_of_sample(run: Run) -> None:
    """The Monte Carlo FHS rows name, for each book, exactly its underlyings whose stored 1-day out-of-sample QLIKE
    of GJR-GARCH (vol_forecasts) is below GARCH's."""
    wh, _ = run
    forecasts = wh.read("vol_forecasts", {"horizon_days": 1})
    forecasts = forecasts[forecasts["as_of_date"] == forecasts["as_of_date"].max()]
    loss = forecasts.pivot_table(index="symbol", columns="model", values="oos_loss", aggfunc="first")
    winners = set(loss.index[loss["gjr"] < loss["garch"]])
    var = wh.read("var_results", {"method": "monte_carlo_fhs"})
    latest = var["as_of"].max()
    positions = wh.read("position_greeks", {"as_of": latest})
    checked = 0
    for book, rows in var[var["as_of"] == latest].groupby("book"):
        held = set(positions.loc[positions["book"] == book, "symbol"])
        want = sorted(held & winners)
        for note in rows["method_note"]:
            named = (
                note.split(";")[0].removeprefix("GJR-GARCH filter for ").split(", ") if note.startswith("GJR") else []
            )
            assert sorted(named) == want, (book, note, want)
            checked += 1
    assert checked and winners


def _event_moves_per_key(wh: Warehouse, until: dt.date, symbols: list[str], index: str, calendar: pd.DataFrame):  # type: ignore[no-untyped-def]
    """``event_windows.event_move_history``'s lookup as it was: one ``reindex`` of the stored moves per symbol and
    type (the days from ``event_days``, which it shares)."""
    from risk_pipeline.event_windows import event_days

    moves, days = event_days(wh, until, symbols, index, calendar)
    out: dict[str, dict[str, np.ndarray]] = {"earnings": {}, "market": {}}
    for (kind, symbol), when in days.items():
        got = moves.reindex([(symbol, d) for d in sorted(when)]).dropna().to_numpy(float)
        if got.size:
            out["earnings" if kind == "earnings" else "market"][symbol if kind == "earnings" else kind] = got
    return out


def test_event_move_history_looks_every_day_up_at_once_with_the_per_key_bits(run: Run) -> None:
    """The moves of every held name's earnings and of the index per market-wide type, from the flagged bars and the
    calendar's past reaction sessions (also days without a stored bar), equal a reindex per key, bit for bit."""
    from risk_pipeline.event_windows import event_move_history

    wh, _ = run
    calendar = wh.read("event_calendar")
    symbols = sorted(wh.read("market_prices")["symbol"].unique())
    for until in (dt.date(2026, 11, 20), dt.date(2026, 6, 1)):
        got = event_move_history(wh, until, symbols, "SYNX", calendar)
        want = _event_moves_per_key(wh, until, symbols, "SYNX", calendar)
        for mine, theirs in ((got.symbol_moves, want["earnings"]), (got.market_moves, want["market"])):
            assert list(mine) == list(theirs) and theirs
            assert all(mine[k].tobytes() == theirs[k].tobytes() for k in theirs)


def test_book_histories_from_one_read_of_every_book_are_each_books_own(run: Run) -> None:
    """backtest_tables reads every book's closes and ATM vols once (``factor_levels`` of all the books' names) and
    each book takes its columns: its dates, closes, ATM vols, gaps and backtest days are those of its own read, bit
    for bit (a book of fewer names: dates where only other names trade are dropped with the incomplete rows)."""
    from risk_pipeline.defs.risk.backtest import BacktestSettings, book_history
    from risk_pipeline.defs.risk.var import factor_levels
    from risk_pipeline.queries import latest_valuation

    from .conftest import SESSION

    wh, _ = run
    settings = BacktestSettings()
    _, positions = latest_valuation(wh, SESSION)
    names = sorted({str(s) for s in positions["symbol"]})
    need = settings.backtest_days + settings.lookback_days + 1
    levels = factor_levels(wh, SESSION, need, names, "test")
    # a smaller book than the union: one of each book's names left out of its rows
    books = list(positions.groupby("book", sort=True))
    assert len(books) > 1
    for book, rows in [*books, (books[0][0], books[0][1][books[0][1]["symbol"] != books[0][1]["symbol"].iloc[0]])]:
        own = book_history(wh, str(book), rows, SESSION, settings)
        shared = book_history(wh, str(book), rows, SESSION, settings, levels)
        assert list(shared.dates) == list(own.dates)
        for name in ("closes", "atm_vols", "calendar_days", "days"):
            a, b = getattr(own, name), getattr(shared, name)
            assert a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
