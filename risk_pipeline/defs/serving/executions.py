"""The executions table as an external asset: written by the risk service, read by the next valuation."""

import dagster as dg

from risk_pipeline.defs.common import OWNERS, table_definition_metadata

executions = dg.AssetSpec(
    "executions",
    group_name="serving",
    owners=OWNERS,
    kinds={"sql"},
    description=(
        "Append-only fills reported by trading systems through the risk service (POST /v1/orders/executions), "
        "outside Dagster runs. position_greeks and book_nav apply the session's fills up to the valuation time "
        "to the start-of-day positions (intraday trades)."
    ),
    metadata=table_definition_metadata("executions"),
)
