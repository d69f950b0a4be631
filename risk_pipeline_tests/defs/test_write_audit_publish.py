"""Blocking checks on derived tables run on the staged rows: a failure publishes nothing and skips downstream."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from risk_pipeline.defs.exposures import greeks
from risk_pipeline.defs.exposures.greeks import portfolio_greeks, position_greeks
from risk_pipeline.defs.volatility.surfaces import vol_surfaces
from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.defs.conftest import SESSION

Run = tuple[Warehouse, dg.ExecuteInProcessResult]


@pytest.fixture
def copied(run: Run, tmp_path: Path) -> Warehouse:
    """A private copy of the shared end-of-day warehouse (the failing runs must not touch the shared one)."""
    target = tmp_path / "copy" / "risk_warehouse.duckdb"
    target.parent.mkdir()
    shutil.copy(run[0].url, target)
    return Warehouse(str(target))


def _resources(wh: Warehouse, exports: Path) -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": WarehouseResource(url=wh.url),
        "market_data": MarketDataResource(kind="synthetic", n_underlyings=4),
        "exports": ExportsResource(root=str(exports)),
    }


def _failed_checks(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}


def test_splits_that_do_not_sum_publish_nothing(copied: Warehouse, tmp_path: Path, monkeypatch) -> None:
    before = copied.read("portfolio_greeks")
    real = greeks.aggregate

    def one_split_off(rows: pd.DataFrame) -> pd.DataFrame:
        out = real(rows)
        first_underlying = out.index[out["scope"] == "underlying"][0]
        out.loc[first_underlying, "delta"] += 1_000.0  # a book whose underlying split no longer sums to its total
        return out

    monkeypatch.setattr(greeks, "aggregate", one_split_off)
    exports = tmp_path / "exports"
    result = dg.materialize(
        [portfolio_greeks],
        partition_key=SESSION.isoformat(),
        resources=_resources(copied, exports),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    assert _failed_checks(result) == {"splits_sum_to_total"}
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "splits_sum_to_total" in failure.step_failure_data.error.message
    after = copied.read("portfolio_greeks")
    pd.testing.assert_frame_equal(before, after)  # the previous version, untouched (same run_id and rows)
    assert not (exports / "portfolio_greeks").exists()  # no JSON document for unpublished rows


def test_surface_over_rmse_bound_is_not_published_and_greeks_are_skipped(copied: Warehouse, tmp_path: Path) -> None:
    surface_before = copied.read("vol_surface")
    grid_before = copied.read("vol_surface_grid")
    greeks_before = copied.read("position_greeks")
    config = {"ops": {"vol_surfaces": {"config": {"workers": 1, "smile_plots": False, "max_rmse_vol_points": 1e-6}}}}
    result = dg.materialize(
        [vol_surfaces, position_greeks],
        partition_key=SESSION.isoformat(),
        resources=_resources(copied, tmp_path / "exports"),
        instance=dg.DagsterInstance.ephemeral(),
        run_config=config,
        raise_on_error=False,
    )
    assert not result.success
    assert "fit_rmse_within_bound" in _failed_checks(result)
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"vol_surfaces"}  # the downstream step never ran
    pd.testing.assert_frame_equal(surface_before, copied.read("vol_surface"))
    pd.testing.assert_frame_equal(grid_before, copied.read("vol_surface_grid"))
    pd.testing.assert_frame_equal(greeks_before, copied.read("position_greeks"))


def test_passing_checks_publish_every_table_of_the_step_in_one_run(copied: Warehouse, tmp_path: Path) -> None:
    result = dg.materialize(
        [portfolio_greeks],
        partition_key=SESSION.isoformat(),
        resources=_resources(copied, tmp_path / "exports"),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    assert set(copied.read("portfolio_greeks")["run_id"]) == {result.run_id}
    doc = json.loads(next((tmp_path / "exports" / "portfolio_greeks").glob("*.json")).read_text())
    assert {"delta", "gamma", "theta", "vega", "timestamp", "positions_count"} <= set(doc)
