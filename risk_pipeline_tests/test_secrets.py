"""A password in RISK_PIPELINE_WAREHOUSE_URL never reaches the UI: not in the job's config schema
(resource defaults), the run config, or any event of a real run on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from risk_pipeline.definitions import build_definitions
from risk_pipeline.resources import resources_from_env
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.folder_fixture import write_good_folder

pytestmark = pytest.mark.postgres

PASSWORD = "Sup3r-s3cret-pw-7d1f"  # the local server trusts every connection, so any password works


def test_warehouse_password_is_not_in_config_or_events(
    pg_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheme, rest = pg_server_url.split("://", 1)
    user_host = rest.split("@", 1)[-1]
    url = f"{scheme}://postgres:{PASSWORD}@{user_host}"
    Warehouse(url).execute("DROP SCHEMA IF EXISTS risk CASCADE")
    monkeypatch.setenv("RISK_PIPELINE_WAREHOUSE_URL", url)
    monkeypatch.setenv("RISK_PIPELINE_SOURCE", "folder")
    monkeypatch.setenv("RISK_PIPELINE_FOLDER", str(write_good_folder(tmp_path / "folder")))
    monkeypatch.setenv("RISK_PIPELINE_EXPORTS", str(tmp_path / "exports"))
    defs = build_definitions(resources_from_env(), executor=dg.in_process_executor)
    job = defs.resolve_job_def("market_data_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, partition_key="2026-11-20")
        assert result.success
        assert Warehouse(url).row_count("market_prices") > 0  # the run really used the password-bearing URL
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        texts = {
            "run config": repr(run.run_config),
            "job snapshot (config schema with resource defaults)": dg.serialize_value(
                instance.get_job_snapshot(run.job_snapshot_id)
            ),
            "execution plan": dg.serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)),
        }
        texts.update({f"event {i}": dg.serialize_value(e) for i, e in enumerate(instance.all_logs(result.run_id))})
    leaked = [where for where, text in texts.items() if PASSWORD in text]
    assert not leaked, f"password found in: {leaked[:5]}"
    # the variable's name is what the UI shows instead
    assert "RISK_PIPELINE_WAREHOUSE_URL" in texts["job snapshot (config schema with resource defaults)"]


def test_literal_url_would_leak_into_the_config_schema() -> None:
    """The control: a resource built from a literal string shows it in the job snapshot's defaults."""
    from risk_pipeline.resources import ExportsResource, MarketDataResource, WarehouseResource

    literal = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/none"
    defs = build_definitions(
        {
            "warehouse": WarehouseResource(url=literal),
            "market_data": MarketDataResource(),
            "exports": ExportsResource(),
        },
        executor=dg.in_process_executor,
    )
    snapshot = defs.resolve_job_def("market_data_job").get_job_snapshot()
    assert PASSWORD in dg.serialize_value(snapshot)
