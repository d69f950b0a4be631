"""The hedging layer's stress scenarios are stress_results' (same vol rule and parameters); its hedge's effect per
HIGH / CRITICAL stress row, recomputed independently with the stress engine; the stress_recommendations_latest view."""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.defs.hedging.inputs import (
    AMERICAN,
    scenario_blocks,
    searched_block,
    stored_stress_block,
    stored_stress_first_pass,
    stored_vol_parameters,
    stress_block,
    universe,
)
from risk_pipeline.defs.risk.var import book_portfolio
from risk_pipeline.paths import LIMITS_FILE, SCENARIOS_FILE, SQL_MODELS_DIR
from risk_pipeline.quant.hedging import scenario_pnl
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.stress import ScenarioLibrary, load_scenarios, run_stress
from risk_pipeline.quant.vol_shocks import VolShockRule
from risk_pipeline.sql_models import apply_models
from risk_pipeline.warehouse import Warehouse

Run = tuple[Warehouse, dg.ExecuteInProcessResult]
INDEX = "SYNX"
SESSION = "2026-11-20"
#: Same engine (exact American prices), same shocks and vols; only the order of the sums differs (per symbol, then
#: over symbols in the stress step; over positions in the hedging step): rounding, far below a cent per 1e9 of NAV.
REL_TOL = 1e-9


def _stress(wh: Warehouse) -> pd.DataFrame:
    t = wh.query("SELECT MAX(as_of) AS t FROM risk.stress_results")["t"].iloc[0]
    return wh.read("stress_results", {"as_of": pd.Timestamp(t)})


def _latest_stress_inputs(
    wh: Warehouse,
) -> tuple[pd.DataFrame, pd.Timestamp, ScenarioLibrary, pd.DataFrame, dt.date, float]:
    """(stress_results of the latest valuation, its as_of, the scenario library, position_greeks then, the session,
    the index close that session)."""
    stress = _stress(wh)
    as_of = pd.Timestamp(stress["as_of"].iloc[0])
    positions = wh.read("position_greeks", {"as_of": as_of})
    session = pd.Timestamp(positions["as_of_date"].iloc[0]).date()
    index_close = float(wh.read("market_prices", {"as_of_date": session, "symbol": INDEX})["close"].iloc[0])
    return stress, as_of, load_scenarios(SCENARIOS_FILE), positions, session, index_close


def test_hedging_stress_block_equals_stress_results_per_book_and_scenario(run: Run) -> None:
    wh, _ = run
    stress, as_of, library, positions, session, index_close = _latest_stress_inputs(wh)
    books = sorted(stress["book"].unique())
    assert len(books) >= 2
    for book in books:
        rows = positions[positions["book"] == book].reset_index(drop=True)
        p = universe(rows, {INDEX: float(index_close)})  # as the hedging step: the index is always a symbol
        blocks = scenario_blocks(wh, session, p, rows, library)
        assert blocks.stress_as_of == as_of, blocks.stress_vol_source
        got = pd.Series(scenario_pnl(p, blocks.stress, 0.0, AMERICAN), index=list(blocks.stress_ids))
        want = stress[stress["book"] == book].set_index("scenario_id")
        nav = float(want["nav"].iloc[0])
        np.testing.assert_allclose(got[want.index], want["market_pnl"], rtol=0, atol=REL_TOL * nav, err_msg=book)
        # the rule the hedging step applied is stress_results' (alpha to full precision, from vol_parameters)
        params = json.loads(want["vol_parameters"].iloc[0])
        assert blocks.stress.rule == VolShockRule(**params["rule"])
        assert blocks.stress.rule.label() == want["vol_rule"].iloc[0]
        assert blocks.stress.rule.kind == "expiry_name_skew"
        assert blocks.stress.rule.source.startswith("atm_vol_history"), "alpha not fitted in the shared run"
        # the hedge monitor uses the same block
        assert "stress_results" in blocks.stress_vol_source


def test_stored_shocks_are_a_fresh_search_and_recreate_the_stress_pnl(run: Run) -> None:
    """stress_results.searched_shocks read back (the hedging layer's block without a search) are the shocks a fresh
    search of the book finds, bit for bit, and the book revalued in them (exact engine) is stress_results' market
    P&L; with the index added as a column the stress step did not search (a book without it), the hedging layer
    searches instead."""
    wh, _ = run
    stress, as_of, library, positions, session, index_close = _latest_stress_inputs(wh)
    assert stress["searched_shocks"].notna().all()
    read = 0
    for book in sorted(stress["book"].unique()):
        rows = positions[positions["book"] == book].reset_index(drop=True)
        vol, t, _ = stored_vol_parameters(wh, book, as_of)
        p = universe(rows, {})
        stored = stored_stress_block(wh, p, rows, library, vol, t)
        assert stored is not None and stored.first_pass is None, book
        fresh = stress_block(p, rows, library, vol)
        assert fresh.first_pass is not None
        for name in ("spot_log_shock", "name_log_vol_move", "vol_multiplier", "vol_shift", "vol_skew", "rate_shift"):
            np.testing.assert_array_equal(getattr(stored, name), getattr(fresh, name), err_msg=f"{book} {name}")
        assert stored.rule == fresh.rule and stored.american == fresh.american == "exact"
        want = stress[stress["book"] == book].set_index("scenario_id").loc[[s.scenario_id for s in library.scenarios]]
        nav = float(want["nav"].iloc[0])
        got = scenario_pnl(p, stored, 0.0, "exact")
        np.testing.assert_allclose(got, want["market_pnl"], rtol=0, atol=REL_TOL * nav, err_msg=book)
        # the hedging step's portfolio (the index always a symbol): the stored shocks only when the book holds it
        with_index = universe(rows, {INDEX: index_close})
        block = scenario_blocks(wh, session, with_index, rows, library).stress
        if with_index.n_symbols == p.n_symbols:
            assert block.first_pass is None
            read += 1
            np.testing.assert_array_equal(block.spot_log_shock, fresh.spot_log_shock)
            np.testing.assert_array_equal(block.name_log_vol_move, fresh.name_log_vol_move)
        else:
            assert stored_stress_block(wh, with_index, rows, library, vol, t) is None
            assert block.first_pass is not None
        # another valuation's shocks, or a book whose positions changed, are not used
        assert stored_stress_block(wh, p, rows, library, vol, t - pd.Timedelta(seconds=1)) is None
        changed = rows.assign(quantity=rows["quantity"].where(rows.index != 0, rows["quantity"] + 1.0))
        assert stored_stress_block(wh, universe(changed, {}), changed, library, vol, t) is None
    assert read, "no book holds the index: the hedging step never reads the stored shocks in this run"


@pytest.fixture(scope="module")
def hedged(run: Run, tmp_path_factory: pytest.TempPathFactory) -> tuple[Warehouse, Path]:
    """A copy of the run with stress_results re-materialized under tighter risk levels (HIGH at 1 % of NAV, so
    core_equity has HIGH and CRITICAL rows) and hedge_recommendations with a stress-loss trigger at 1 % of NAV
    (0.1 % for vol_overlay, whose vega warning level is lowered under its vega so its hedge holds options) and a
    scenario loss cap at 1.5 % of NAV."""
    import yaml

    from risk_pipeline.defs.hedging.assets import hedge_recommendations
    from risk_pipeline.defs.risk.stress import stress_tests
    from risk_pipeline.resources import ExportsResource, WarehouseResource

    tmp = tmp_path_factory.mktemp("hedge_stress")
    wh = _copy(run[0], tmp)
    lib = yaml.safe_load(SCENARIOS_FILE.read_text())
    lib["risk_levels"] = {"medium": -0.005, "high": -0.01, "critical": -0.02}
    (tmp / "scenarios.yaml").write_text(yaml.safe_dump(lib, sort_keys=False))
    hedging = {
        "version": "test",
        "defaults": {"max_stress_loss_pct_nav": 0.01, "max_scenario_loss_pct_nav": 0.015},
        "books": {"vol_overlay": {"max_stress_loss_pct_nav": 0.001}},  # vol_overlay's worst is about 0.5 %
    }
    (tmp / "hedging.yaml").write_text(yaml.safe_dump(hedging))
    # vol_overlay's vega cap at 0.75 x its vega (warning level 0.6 x): its hedge needs options
    limits = yaml.safe_load(LIMITS_FILE.read_text())
    greeks = wh.read("position_greeks", {"book": "vol_overlay"})
    vega = float(greeks.loc[greeks["as_of"] == greeks["as_of"].max(), "vega_per_vol_point"].sum())
    limits["books"]["vol_overlay"]["max_abs_vega_per_vol_point"] = round(0.75 * abs(vega))
    (tmp / "limits.yaml").write_text(yaml.safe_dump(limits))
    resources = {"warehouse": WarehouseResource(url=wh.url), "exports": ExportsResource(root=str(tmp / "exports"))}
    scen = str(tmp / "scenarios.yaml")
    for assets, op, config in (
        ([stress_tests], "stress_tests", {"scenarios_file": scen}),
        (
            [hedge_recommendations],
            "hedge_recommendations",
            {
                "scenarios_file": scen,
                "hedging_file": str(tmp / "hedging.yaml"),
                "limits_file": str(tmp / "limits.yaml"),
            },
        ),
    ):
        result = dg.materialize(
            assets, partition_key=SESSION, resources=resources, run_config={"ops": {op: {"config": config}}}
        )
        assert result.success, op
    return wh, tmp / "scenarios.yaml"


def test_hedge_stress_effects_before_equal_stress_results(hedged: tuple[Warehouse, Path]) -> None:
    wh, _ = hedged
    stress = _stress(wh)
    effects = wh.read("hedge_stress_effects", {"as_of": pd.Timestamp(stress["as_of"].iloc[0])})
    stress = stress.set_index(["book", "scenario_id"])
    assert len(effects), "no book had a hedge in the shared run"
    s = stress.loc[list(zip(effects["book"], effects["scenario_id"], strict=True))]
    tol = REL_TOL * s["nav"].to_numpy()
    assert (np.abs(effects["market_pnl_before"].to_numpy() - s["market_pnl"].to_numpy()) <= tol).all()
    assert (np.abs(effects["pnl_before"].to_numpy() - s["pnl"].to_numpy()) <= tol).all()
    assert list(effects["risk_level_before"]) == list(s["risk_level"])
    assert (effects["vol_rule"].to_numpy() == s["vol_rule"].to_numpy()).all()


def test_hedge_step_with_the_stored_shocks_equals_a_fresh_search(
    hedged: tuple[Warehouse, Path], tmp_path: Path
) -> None:
    """hedge_recommendations and hedge_stress_effects with the stored shocks (a hedged book's search reusing the book's
    pass 1, searched when needed) equal the step's on a copy whose searched_shocks are removed (every book searched
    again), but for the run's own columns."""

    wh, scenarios_file = hedged
    assert wh.read("stress_results")["searched_shocks"].notna().any()
    recs = wh.read("hedge_recommendations")
    assert (recs["kind"] == "optimized").any(), "no book hedged: the hedged book's search not exercised"
    _assert_hedge_step_same_without(wh, scenarios_file, tmp_path, "searched_shocks")


def test_stored_first_pass_is_the_books_search_and_the_hedge_step_equals_a_search_again(
    hedged: tuple[Warehouse, Path], tmp_path: Path
) -> None:
    """stress_results.searched_first_pass read back for a book the hedging step reads the stored shocks of (its
    symbols the book's) is the pass 1 of a fresh search of the book (extra losses and picks bit for bit);
    another valuation or a changed position is not read; and hedge_recommendations and hedge_stress_effects with
    it equal the step's on a copy whose searched_first_pass is removed (the book searched again for its hedged
    book), but for the run's own columns."""

    wh, scenarios_file = hedged
    stress, as_of, _, positions, session, index_close = _latest_stress_inputs(wh)
    library = load_scenarios(scenarios_file)
    assert stress["searched_first_pass"].notna().all()
    recs = wh.read("hedge_recommendations", {"as_of": as_of})
    read = 0
    for book in sorted(stress["book"].unique()):
        rows = positions[positions["book"] == book].reset_index(drop=True)
        vol, t, _ = stored_vol_parameters(wh, book, as_of)
        p = universe(rows, {INDEX: index_close})  # as the hedging step
        first = stored_stress_first_pass(wh, p, rows, library, vol, t)
        if p.n_symbols != universe(rows, {}).n_symbols:  # the index added: stored for other columns
            assert first is None, book
            continue
        assert first is not None and first.pnl is None, book
        fresh = stress_block(p, rows, library, vol).first_pass
        assert fresh is not None
        assert first.loss.tobytes() == fresh.loss.tobytes(), book
        np.testing.assert_array_equal(first.pick, fresh.pick)
        blocks = scenario_blocks(wh, session, p, rows, library)
        assert blocks.stress.first_pass is None  # the stored shocks
        reuse = searched_block(blocks.stress, p, rows, library, vol, wh, blocks.stress_as_of)
        assert reuse.first_pass is not None and reuse.first_pass.pnl is None  # the stored pass, not a search
        assert stored_stress_first_pass(wh, p, rows, library, vol, t - pd.Timedelta(seconds=1)) is None
        changed = rows.assign(quantity=rows["quantity"].where(rows.index != 0, rows["quantity"] + 1.0))
        q = universe(changed, {INDEX: index_close})
        assert stored_stress_first_pass(wh, q, changed, library, vol, t) is None
        read += int((recs.loc[recs["book"] == book, "kind"] == "optimized").any())
    assert read, "no hedged book holds the index: the stored pass 1 is never read in this run"
    _assert_hedge_step_same_without(wh, scenarios_file, tmp_path, "searched_first_pass")


def _hedge_lines(wh: Warehouse, recs: pd.DataFrame, symbols: list[str]) -> Portfolio:
    """The optimized lines of hedge_recommendations as positions (futures / ETFs as index units)."""
    lines = recs[recs["kind"] == "optimized"]
    inst = wh.read("instrument_quotes", {"as_of_date": recs["as_of_date"].iloc[0]})
    inst = inst[inst["as_of"] <= recs["as_of"].iloc[0]]
    inst = inst[inst["as_of"] == inst["as_of"].max()].set_index("symbol") if len(inst) else inst
    out = []
    for r in lines.itertuples():
        q = r.quantity * (1.0 if r.side == "buy" else -1.0)
        opt = r.instrument_type == "option"
        sym, mult = r.symbol, 1.0
        if r.instrument_type == "future":  # multiplier x F / S, F = S exp((r - q) T)
            i = inst.loc[r.symbol]
            sym, mult = INDEX, r.multiplier * math.exp((i.rate - i.dividend_yield) * i.time_to_expiry_years)
        elif r.instrument_type == "etf":  # leverage x price / S
            i = inst.loc[r.symbol]
            sym, mult = INDEX, i.leverage * i.price / r.spot
        elif opt:
            mult = r.multiplier
        out.append(
            {
                "symbol": sym, "q": q, "mult": mult, "opt": opt, "call": r.option_type == "C",
                "k": r.strike if opt else 1.0, "t": r.time_to_expiry_years if opt else 0.0,
                "iv": r.implied_vol if opt else 0.0, "r": r.rate if opt else 0.0,
                "d": r.dividend_yield if opt else 0.0, "am": r.exercise_style == "american",
            }
        )  # fmt: skip
    f = pd.DataFrame(out)
    return f, {s: i for i, s in enumerate(symbols)}


def test_hedge_effect_recomputed_with_the_stress_engine(hedged: tuple[Warehouse, Path]) -> None:
    """Book plus hedge lines (from the stored tables) revalued by run_stress with stress_results' vol_parameters."""
    wh, scenarios_file = hedged
    stress = _stress(wh)
    as_of = pd.Timestamp(stress["as_of"].iloc[0])
    library = load_scenarios(scenarios_file)
    effects = wh.read("hedge_stress_effects", {"as_of": as_of})
    recs = wh.read("hedge_recommendations", {"as_of": as_of})
    positions = wh.read("position_greeks", {"as_of": as_of})
    checked = options = 0
    for book, eff in effects.groupby("book"):
        rows = positions[positions["book"] == book].reset_index(drop=True)
        book_recs = recs[recs["book"] == book]
        want = stress[stress["book"] == book].set_index("scenario_id")
        params = json.loads(want["vol_parameters"].iloc[0])
        b = book_portfolio(rows)
        spots = dict(zip(b.symbols, b.spot, strict=True))
        for r in book_recs[book_recs["kind"] == "optimized"].itertuples():
            spots.setdefault(INDEX if r.instrument_type in ("future", "etf", "index") else r.symbol, r.spot)
        symbols = sorted(spots)
        lines, where = _hedge_lines(wh, book_recs, symbols)
        n = len(lines)
        sym_idx = [where[b.symbols[i]] for i in b.symbol_index] + [where[x] for x in lines.get("symbol", [])]
        qty = np.concatenate([b.quantity, lines["q"].to_numpy(float) if n else []])
        both = Portfolio(
            symbols=tuple(symbols),
            spot=np.array([spots[s] for s in symbols]),
            symbol_index=np.array(sym_idx, dtype=np.intp),
            quantity=qty,
            multiplier=np.concatenate([b.multiplier, lines["mult"].to_numpy(float) if n else []]),
            is_option=np.concatenate([b.is_option, lines["opt"].to_numpy(bool) if n else []]).astype(bool),
            is_call=np.concatenate([b.is_call, lines["call"].to_numpy(bool) if n else []]).astype(bool),
            strike=np.concatenate([b.strike, lines["k"].to_numpy(float) if n else []]),
            time_years=np.concatenate([b.time_years, lines["t"].to_numpy(float) if n else []]),
            implied_vol=np.concatenate([b.implied_vol, lines["iv"].to_numpy(float) if n else []]),
            rate=np.concatenate([b.rate, lines["r"].to_numpy(float) if n else []]),
            dividend_yield=np.concatenate([b.dividend_yield, lines["d"].to_numpy(float) if n else []]),
            is_american=np.concatenate([b.is_american, lines["am"].to_numpy(bool) if n else []]).astype(bool),
        )  # fmt: skip
        by = {
            k: dict(zip(params["symbols"], params[k], strict=True)) for k in ("vol_beta", "idio_vol_sd", "idio_spot_sd")
        }
        arr = {k: np.array([np.nan if by[k].get(s) is None else by[k][s] for s in symbols]) for k in by}
        betas = rows.groupby("symbol")["beta"].first().reindex(symbols).fillna(1.0).to_numpy(float)
        sectors = rows.groupby("symbol")["sector"].first().reindex(symbols).tolist()
        nav = float(want["nav"].iloc[0])
        res = run_stress(
            both, library, betas, sectors, np.zeros(both.n_positions), np.ones(both.n_positions), nav,
            vol_rule=VolShockRule(**params["rule"]), vol_betas=arr["vol_beta"], idio_vol_sd=arr["idio_vol_sd"],
            idio_spot_sd=arr["idio_spot_sd"],
        )  # fmt: skip
        after = pd.Series({x.scenario_id: x.market_pnl for x in res})
        e = eff.set_index("scenario_id")
        np.testing.assert_allclose(e["market_pnl_after"], after[e.index], rtol=0, atol=REL_TOL * nav, err_msg=book)
        pnl_after = after[e.index] - want.loc[e.index, "liquidation_cost"]
        np.testing.assert_allclose(e["pnl_after"], pnl_after, rtol=0, atol=REL_TOL * nav)
        levels = [library.thresholds.level(x / nav) for x in pnl_after]
        assert list(e["risk_level_after"]) == levels
        assert list(e["under_high_threshold"]) == [x / nav > library.thresholds.high for x in pnl_after]
        assert (
            e["hedge_ids"].fillna("") == ",".join(book_recs.loc[book_recs["kind"] == "optimized", "hedge_id"])
        ).all()
        checked += n
        options += int(lines["opt"].sum()) if n else 0
        print(book, n, "lines", e[["pnl_before", "pnl_after", "risk_level_before", "risk_level_after"]].to_string())
    assert checked and options, f"{checked} hedge lines, {options} options recomputed"


def _copy(wh: Warehouse, tmp_path: Path) -> Warehouse:
    dst = tmp_path / "copy.duckdb"
    shutil.copy(wh.url, dst)
    return Warehouse(str(dst))


def _view(wh: Warehouse) -> pd.DataFrame:
    v = wh.query("SELECT * FROM risk.stress_recommendations_latest")
    return v.sort_values(["book", "scenario_id"]).reset_index(drop=True)


def test_stress_recommendations_view_on_duckdb(hedged: tuple[Warehouse, Path], tmp_path: Path) -> None:
    wh, _ = hedged
    copy = _copy(wh, tmp_path)
    apply_models(copy, SQL_MODELS_DIR)
    view = _view(copy)
    stress = _stress(wh)
    high = stress[stress["risk_level"].isin(["HIGH", "CRITICAL"])].sort_values(["book", "scenario_id"])
    assert len(high), "the shared run has no HIGH or CRITICAL stress row"
    assert list(zip(view["book"], view["scenario_id"], strict=True)) == list(
        zip(high["book"], high["scenario_id"], strict=True)
    )
    assert list(view["recommendations"]) == list(high["recommendations"])
    effects = wh.read("hedge_stress_effects", {"as_of": pd.Timestamp(high["as_of"].iloc[0])}).set_index(
        ["book", "scenario_id"]
    )
    for r in view.itertuples():
        if (r.book, r.scenario_id) in effects.index:
            e = effects.loc[(r.book, r.scenario_id)]
            assert r.pnl_after_hedge == pytest.approx(e["pnl_after"], rel=1e-12)
            assert r.hedge_under_high_threshold == e["under_high_threshold"]
            assert r.hedge_layer_pnl_before == pytest.approx(r.pnl, abs=REL_TOL * r.nav)
        else:
            assert pd.isna(r.pnl_after_hedge) and pd.isna(r.hedge_ids)
    print(view.drop(columns=["recommendations"]).to_string())


@pytest.mark.postgres
def test_stress_recommendations_view_identical_on_postgres(
    hedged: tuple[Warehouse, Path], pg_server_url: str, tmp_path: Path
) -> None:
    duck = _copy(hedged[0], tmp_path)
    pg = Warehouse(pg_server_url)
    pg.execute("DROP SCHEMA IF EXISTS risk CASCADE")
    pg.ensure_tables()
    for name in ("stress_results", "hedge_stress_effects"):
        pg.write(name, duck.read(name), run_id="copy")
    apply_models(pg, SQL_MODELS_DIR)
    apply_models(duck, SQL_MODELS_DIR)
    a = duck.query("SELECT * FROM risk.stress_recommendations_latest")
    b = pg.query("SELECT * FROM risk.stress_recommendations_latest")
    key = ["book", "scenario_id"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    assert list(a.columns) == list(b.columns) and len(a) > 0
    pd.testing.assert_frame_equal(a, b, check_dtype=False, check_exact=False, rtol=1e-12)


def _assert_hedge_step_same_without(wh: Warehouse, scenarios_file: Path, tmp_path: Path, column: str) -> None:
    """hedge_recommendations and hedge_stress_effects of the hedged run equal the step's run again on a copy whose
    stress_results ``column`` is NULL, but for the run's own columns."""
    from risk_pipeline.defs.hedging.assets import hedge_recommendations
    from risk_pipeline.resources import ExportsResource, WarehouseResource

    tmp = scenarios_file.parent
    copy = _copy(wh, tmp_path)
    copy.execute(f"UPDATE risk.stress_results SET {column} = NULL")
    config = {
        "scenarios_file": str(scenarios_file),
        "hedging_file": str(tmp / "hedging.yaml"),
        "limits_file": str(tmp / "limits.yaml"),
    }
    result = dg.materialize(
        [hedge_recommendations],
        partition_key=SESSION,
        resources={"warehouse": WarehouseResource(url=copy.url), "exports": ExportsResource(root=str(tmp_path / "x"))},
        run_config={"ops": {"hedge_recommendations": {"config": config}}},
    )
    assert result.success
    run_columns = ["run_id", "materialized_at", "solve_seconds"]
    for name in ("hedge_recommendations", "hedge_stress_effects"):
        a, b = wh.read(name), copy.read(name)
        cols = [c for c in a.columns if c not in run_columns]
        assert len(a) > 0
        pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True, obj=name)
