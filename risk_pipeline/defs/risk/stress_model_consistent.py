"""Stress variants with model-consistent vol shocks: the library's spot and rate moves, vols moved by Heston and
by the SABR smile dynamics."""

import itertools
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    TableWrite,
    fail_closed,
    markdown_table,
    partition_sessions,
    publish,
    table_definition_metadata,
)
from risk_pipeline.defs.risk.var import book_portfolio, book_slices
from risk_pipeline.errors import RiskDataError
from risk_pipeline.paths import SCENARIOS_FILE
from risk_pipeline.quant.heston_stress import HestonShifts, heston_vol_shifts_of_books, heston_vol_shifts_with_fallback
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.sabr_dynamics import sabr_vol_shifts
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate
from risk_pipeline.quant.stress import load_scenarios, scenario_set
from risk_pipeline.queries import book_valuations
from risk_pipeline.resources import WarehouseResource

PARAMS = ["v0", "kappa", "theta", "xi", "rho"]


class ModelConsistentStressSettings(dg.Config):
    """The scenario library (the same file as stress_results by default)."""

    scenarios_file: str = str(SCENARIOS_FILE)


def mean_abs_shift(shifts: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """The mean absolute vol ``shifts`` over the ``covered`` options per scenario (vol points; 0 without any):
    ``covered`` per position, or per (scenario, position) pair."""
    if covered.ndim == 2:
        n = covered.sum(axis=1)
        total = np.where(covered, np.abs(shifts), 0.0).sum(axis=1)
        return np.where(n > 0, total / np.maximum(n, 1), 0.0) * 100.0
    return np.abs(shifts[:, covered]).mean(axis=1) * 100.0 if covered.any() else np.zeros(len(shifts))


def revalue_shift_sets(portfolio: Portfolio, sc: ScenarioSet, shift_sets: list[np.ndarray]) -> list[np.ndarray]:
    """Full-revaluation P&L of the library's spot and rate moves with each set of per-position vol shifts
    (scenarios x positions), in one revaluation: a scenario whose shifts in a later set have the first set's
    bits takes the first set's P&L (a row's P&L depends on that row's moves only)."""
    first = np.ascontiguousarray(shift_sets[0], dtype=float)
    n = sc.n_scenarios
    rows, stacked, own, offset = [np.arange(n)], [first], [], n
    for shifts in shift_sets[1:]:
        shifts = np.ascontiguousarray(shifts, dtype=float)
        new = np.flatnonzero(~(shifts.view(np.uint64) == first.view(np.uint64)).all(axis=1))
        own.append((new, offset + np.arange(len(new))))
        offset += len(new)
        rows.append(new)
        stacked.append(shifts[new])
    idx = np.concatenate(rows)
    moved = ScenarioSet(
        spot_shock_rel=sc.spot_shock_rel[idx],
        vol_shift_abs=np.concatenate(stacked),
        rate_shift_abs=None if sc.rate_shift_abs is None else np.asarray(sc.rate_shift_abs)[idx],
        vol_shift_per_position=True,
    )
    pnl = evaluate(portfolio, moved, 0.0).pnl
    out = [pnl[:n]]
    for new, at in own:
        p = pnl[:n].copy()
        p[new] = pnl[at]
        out.append(p)
    return out


def revalue_with_shifts(
    portfolio: Portfolio, sc: ScenarioSet, shifts: np.ndarray, covered: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Full-revaluation P&L of the library's spot and rate moves with per-position vol ``shifts``, and the mean
    absolute shift over the ``covered`` options per scenario (vol points; 0 without any): ``covered`` per position,
    or per (scenario, position) pair."""
    return revalue_shift_sets(portfolio, sc, [shifts])[0], mean_abs_shift(shifts, covered)


@dataclass(frozen=True)
class BookInputs:
    """A book's portfolio, the library's scenarios on it and its Heston parameters per symbol (``book_inputs``)."""

    portfolio: Portfolio
    items: list[Any]
    scenarios: ScenarioSet
    params: np.ndarray


def book_inputs(rows: pd.DataFrame, heston: pd.DataFrame, library: Any) -> BookInputs:
    """The portfolio of a book's rows, the library's scenario set on it (each name by its beta and sector) and the
    ``heston`` parameters (indexed by underlying) per symbol (NaN: no model)."""
    portfolio = book_portfolio(rows)
    symbols = list(portfolio.symbols)
    betas = rows.groupby("symbol")["beta"].first().reindex(symbols).fillna(1.0).to_numpy()
    sectors = rows.groupby("symbol")["sector"].first().reindex(symbols).tolist()
    items = list(library.scenarios)
    sc = scenario_set(portfolio, items, betas, sectors)
    return BookInputs(portfolio, items, sc, heston.reindex(symbols)[PARAMS].to_numpy(float))


def book_rows(
    rows: pd.DataFrame,
    heston: pd.DataFrame,
    library: Any,
    nav: float,
    rule_based: pd.Series,
    sabr: pd.DataFrame | None = None,
    *,
    given: tuple[BookInputs, HestonShifts] | None = None,
) -> pd.DataFrame:
    """stress_model_consistent rows of one book (``heston`` indexed by underlying, ``rule_based`` the
    stress_results market P&L by scenario id, ``sabr`` the snapshot's sabr_slices rows); ``given``: the book's
    ``book_inputs`` and Heston shifts, already made (``heston_stress.heston_vol_shifts_of_books``: the same
    bits)."""
    # a (scenario, option) pair whose Heston price before or after the move is below what can be inverted (a
    # short-dated strike far out of the money after the move: under heston_stress.PRICE_FLOOR of the forward) keeps
    # its market vol in that scenario only, and is left out of that scenario's mean shift
    if given is None:
        inputs = book_inputs(rows, heston, library)
        model = heston_vol_shifts_with_fallback(inputs.portfolio, inputs.params, inputs.scenarios.spot_shock_rel)
    else:
        inputs, model = given
    portfolio, items, sc, params = inputs.portfolio, inputs.items, inputs.scenarios, inputs.params
    modelled = portfolio.is_option & np.isfinite(params[portfolio.symbol_index]).all(axis=1)
    mean_shift = mean_abs_shift(model.shift, modelled[None, :] & ~model.fallback)
    ids = [s.scenario_id for s in items]
    sabr_part: dict[str, Any] = {}
    if sabr is None:
        (pnl,) = revalue_shift_sets(portfolio, sc, [model.shift])
    else:
        slices = book_slices(rows, portfolio, sabr)
        with_slice = portfolio.is_option & (slices.slice_of_position >= 0)
        sabr_shifts = sabr_vol_shifts(portfolio, slices, sc.spot_shock_rel)
        # one revaluation for both models: a still scenario moves no vol in either (the same row, priced once)
        pnl, sabr_pnl = revalue_shift_sets(portfolio, sc, [model.shift, sabr_shifts])
        sabr_shift = mean_abs_shift(sabr_shifts, with_slice)
        sabr_part = {
            "sabr_market_pnl": sabr_pnl,
            "sabr_pnl_pct_nav": sabr_pnl / nav,
            "sabr_mean_abs_vol_shift_vol_points": sabr_shift,
            "options_without_sabr": int((portfolio.is_option & ~with_slice).sum()),
        }
    return pd.DataFrame(
        {
            "scenario_id": ids,
            "spot_shock": [float(s.index_move) for s in items],
            "rate_shift": [float(s.rate_shift) for s in items],
            "market_pnl": pnl,
            "pnl_pct_nav": pnl / nav,
            "rule_based_market_pnl": rule_based.reindex(ids).to_numpy(float),
            "mean_abs_vol_shift_vol_points": mean_shift,
            "options_without_model": int((portfolio.is_option & ~modelled).sum()),
            "nav": nav,
            **sabr_part,
            "options_model_fallback": model.fallback.sum(axis=1).astype(np.int64),
        }
    )


@dg.asset(
    name="stress_model_consistent",
    group_name="risk",
    deps=["position_greeks", "book_nav", "heston_parameters", "sabr_slices", "stress_results"],
    kinds={"pandas", "numba"},
    owners=OWNERS,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata=table_definition_metadata("stress_model_consistent"),
    description=(
        "Every library scenario revalued with model-consistent vol shocks (each underlying's calibrated Heston "
        "model: v0 moved by rho xi ln(1 + spot move), the surface re-implied at the moved spot) and with SABR "
        "smile dynamics (each slice's forward and alpha moved together), beside the rule-based market P&L of "
        "stress_results."
    ),
)
@fail_closed
def stress_model_consistent(
    context: dg.AssetExecutionContext, config: ModelConsistentStressSettings, warehouse: WarehouseResource
) -> Any:
    wh = warehouse.get()
    library = load_scenarios(config.scenarios_file)
    frames = []
    # the books of one valuation together: their Heston shifts in one pass (a name's slices' COS grids built once
    # for every book holding options on it; each book's shifts the bits of its own call)
    for as_of, group in itertools.groupby(book_valuations(wh, partition_sessions(context)), key=lambda v: v.as_of):
        valuations = list(group)
        navs, heston, rules, sabr = (
            wh.read("book_nav", {"as_of": as_of}).set_index("book")["nav"],
            wh.read("heston_parameters", {"as_of": as_of}).set_index("underlying"),
            wh.read("stress_results", {"as_of": as_of}),
            wh.read("sabr_slices", {"as_of": as_of}) if wh.table_exists("sabr_slices") else None,
        )
        for v in valuations:
            if v.book not in navs:
                raise RiskDataError(f"no book_nav for {v.book} at {as_of.isoformat()}: stress P&L needs the NAV")
        inputs = [book_inputs(v.rows, heston, library) for v in valuations]
        models = heston_vol_shifts_of_books([(x.portfolio, x.params, x.scenarios.spot_shock_rel) for x in inputs])
        for v, given in zip(valuations, zip(inputs, models, strict=True), strict=True):
            rule_based = rules[rules["book"] == v.book].set_index("scenario_id")["market_pnl"]
            frame = book_rows(v.rows, heston, library, float(navs[v.book]), rule_based, sabr, given=given)
            frame.insert(0, "book", v.book)
            frame.insert(0, "as_of", v.as_of)
            frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    parts = [{"as_of": t} for t in sorted(out["as_of"].unique())]
    last = out[out["as_of"] == out["as_of"].max()]
    worst = last.sort_values("pnl_pct_nav").groupby("book").head(5)
    cols = ["book", "scenario_id", "market_pnl", "sabr_market_pnl", "rule_based_market_pnl"]
    cols += ["mean_abs_vol_shift_vol_points", "sabr_mean_abs_vol_shift_vol_points"]
    yield from publish(
        context,
        wh,
        [TableWrite("stress_model_consistent", out, parts)],
        metadata={"stress_model_consistent": {"worst_scenarios": dg.MetadataValue.md(markdown_table(worst[cols], 20))}},
    )
