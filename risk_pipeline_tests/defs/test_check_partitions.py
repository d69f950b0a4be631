"""Check results name their session partition and leave no unresolved (phantom) evaluation beside them."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from risk_pipeline.defs.common import PARTITIONS, check_events, session_check_spec
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.defs.conftest import SESSION

CHECK = dg.AssetCheckKey(dg.AssetKey("checked"), "rows_valid")


@dg.asset(
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[session_check_spec("rows_valid", asset="checked", blocking=True, description="test rule")],
)
def checked(context: dg.AssetExecutionContext) -> Iterator[Any]:
    yield dg.MaterializeResult()
    passed = context.run.tags.get("verdict", "pass") == "pass"
    yield from check_events(context, [dg.AssetCheckResult(check_name="rows_valid", passed=passed)])


@dg.asset(partitions_def=PARTITIONS, deps=[checked], backfill_policy=dg.BackfillPolicy.single_run())
def downstream() -> None:
    """Runs only when the blocking check passed."""


def _records(instance: dg.DagsterInstance) -> list[tuple[str, str | None]]:
    history = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=50)
    return sorted((r.status.value, r.partition) for r in history)


def test_single_session_result_names_its_partition() -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([checked, downstream], partition_key="2026-11-20", instance=instance)
    evaluations = [
        e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert [(e.check_name, e.partition) for e in evaluations] == [("rows_valid", "2026-11-20")]
    assert _records(instance) == [(AssetCheckExecutionRecordStatus.SUCCEEDED.value, "2026-11-20")]


@pytest.mark.parametrize("verdict", ["pass", "fail"])
def test_session_range_records_one_result_per_session_and_nothing_else(verdict: str) -> None:
    instance = dg.DagsterInstance.ephemeral()
    tags = {
        "dagster/asset_partition_range_start": "2026-11-17",
        "dagster/asset_partition_range_end": "2026-11-20",
        "verdict": verdict,
    }
    result = dg.materialize([checked, downstream], instance=instance, tags=tags, raise_on_error=False)
    status = AssetCheckExecutionRecordStatus.SUCCEEDED if verdict == "pass" else AssetCheckExecutionRecordStatus.FAILED
    sessions = ["2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"]
    assert _records(instance) == [(status.value, s) for s in sessions]  # no PLANNED row, no row without partition
    ran = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert ("downstream" in ran) == (verdict == "pass")  # a failed blocking check still blocks downstream


def test_every_check_of_the_end_of_day_run_names_the_session(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    _, result = run
    evaluations = [
        e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert len(evaluations) > 20
    unnamed = [
        f"{e.asset_key.to_user_string()}.{e.check_name}" for e in evaluations if e.partition != SESSION.isoformat()
    ]
    assert not unnamed, f"check results without the session partition: {unnamed}"
