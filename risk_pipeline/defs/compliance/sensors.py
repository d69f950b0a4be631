"""Alerts for failed runs: SYSTEM_ERROR, or DATA_QUALITY when a blocking data-quality check stopped the run."""

from typing import Any

import dagster as dg

from risk_pipeline import alerts as alerting
from risk_pipeline.resources import WarehouseResource, alerts_resource_from_env

#: Metadata keys a step failure carries when a blocking check stopped it (defs/common.publish_raw and publish).
_BLOCKING_MARKERS = ("failed_rules", "failed_checks", "quarantined_rows")


def classify_failure(step_failures: list[Any]) -> tuple[str, str, list[str]]:
    """(alert_type, level, messages) of a failed run from its STEP_FAILURE events."""
    blocking, messages = False, []
    for event in step_failures:
        data = event.event_specific_data
        user = getattr(data, "user_failure_data", None)
        if user is not None and any(k in (user.metadata or {}) for k in _BLOCKING_MARKERS):
            blocking = True
        if user is not None and user.description:
            text = user.description
        else:  # the user code's own exception, not Dagster's wrapper
            error = data.error
            text = (error.cause.message if error.cause is not None else error.message).strip()
        messages.append(f"{event.step_key}: {text}")
    if blocking:
        return "DATA_QUALITY", "CRITICAL", messages
    return "SYSTEM_ERROR", "CRITICAL", messages


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    description=(
        "Raises a SYSTEM_ERROR alert for every failed run, DATA_QUALITY when a blocking data-quality check "
        "stopped it; delivered on the default channels of data/alerts.yaml and recorded in the alerts table."
    ),
    monitor_all_code_locations=False,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, warehouse: WarehouseResource) -> None:
    run = context.dagster_run
    failures = [e for e in context.get_step_failure_events()]
    alert_type, level, messages = classify_failure(failures)
    message = "; ".join(messages) or (context.failure_event.message or "run failed")
    alerting.alert_now(
        warehouse.get(),
        alerts_resource_from_env().config(),
        alert_type=alert_type,
        level=level,
        subject=f"run {run.run_id[:8]} of {run.job_name} failed",
        message=message[:4000],
        condition_key=f"run_failure|{run.run_id}",
        rule="run_failure_alert_sensor",
        run_id=f"sensor:run_failure:{run.run_id}",
    )


SENSORS = [run_failure_alert_sensor]
