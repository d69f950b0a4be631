"""The gap sets' per-position vol shifts gathered from their options' columns only (``RowVolShifts.make_columns``,
``gap_risk._GatheredRows.columns``): the same shifts and the same P&L, bit for bit, as every position's rows with
the options' columns taken from them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from risk_pipeline.quant.gap_risk import _base_row_table, _GatheredRows, _take_rows
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import RowVolShifts, ScenarioSet, evaluate
from risk_pipeline.quant.smile_dynamics import EarningsVolCrush
from risk_pipeline_tests.quant.test_grid_runs import _book as grid_runs_book


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.int64)


def _book(rng: np.random.Generator, n_opt: int = 60) -> Portfolio:
    """``test_grid_runs``' book (Americans in both exercise regimes, Europeans, a stock per name) with no dividend
    yield on the third name: options whose yield never moves."""
    book = grid_runs_book(rng, n_opt)
    return dataclasses.replace(book, dividend_yield=np.where(book.symbol_index == 2, 0.0, book.dividend_yield))


def _set(rng: np.random.Generator, n: int, n_sym: int) -> ScenarioSet:
    return ScenarioSet(
        np.expm1(rng.normal(0.0, 0.02, (n, n_sym))),
        vol_scale=np.exp(rng.normal(0.0, 0.05, (n, n_sym))),
        rate_shift_abs=rng.normal(0.0, 0.0008, n),
        dividend_shift_abs=rng.normal(0.0, 0.0003, (n, n_sym)) * np.array([1.0, 1.0, 0.0]),
    )


def test_option_columns_of_gathered_rows_give_the_same_pnl() -> None:
    rng = np.random.default_rng(2)
    p = _book(rng)
    base = _set(rng, 30, p.n_symbols)
    base_rows = np.repeat(np.arange(30), 12)
    rows = ScenarioSet(
        np.expm1(rng.normal(0.0, 0.03, (base_rows.size, p.n_symbols))),
        vol_scale=base.vol_scale[base_rows],
        rate_shift_abs=base.rate_shift_abs[base_rows],
        dividend_shift_abs=base.dividend_shift_abs[base_rows],
    )
    crush = EarningsVolCrush(symbol=1, event_variance=0.004, years_to_reaction=0.01, event_id="e")
    table = _base_row_table([crush], p, lambda idx: _take_rows(rows, idx), base_rows)
    assert table is not None and table.make_columns is not None
    plain = RowVolShifts(table.make, table.n_positions)  # every position's shifts, the options' taken by the engine
    cols = np.flatnonzero(p.is_option)
    assert np.array_equal(_bits(table.make_columns(10, 50, cols)), _bits(table.make(10, 50)[:, cols]))
    pnl = {}
    for name, shifts in (("columns", table), ("whole rows", plain)):
        sc = ScenarioSet(
            rows.spot_shock_rel,
            vol_scale=rows.vol_scale,
            vol_shift_abs=shifts,
            vol_shift_per_position=True,
            rate_shift_abs=rows.rate_shift_abs,
            dividend_shift_abs=rows.dividend_shift_abs,
        )
        pnl[name] = evaluate(p, sc, 1.4, american="eep_grid", per_symbol=True, chunk_size=64)
    assert np.array_equal(_bits(pnl["columns"].pnl), _bits(pnl["whole rows"].pnl))
    gathered = _GatheredRows(np.array([[0.0, np.inf], [0.0, 0.0]]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="finite"):
        gathered.columns(1, 3, np.array([0]))
