"""The source's standardized implied-vol grid per session (``smile_history``): the stored surface history."""

from collections.abc import Iterator

import dagster as dg

from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    check_specs,
    publish_source_sessions,
    table_definition_metadata,
)
from risk_pipeline.resources import MarketDataResource, WarehouseResource


@dg.asset(
    name="smile_history",
    group_name="volatility",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=check_specs("smile_history"),
    kinds={"pandas", "great_expectations"},
    owners=OWNERS,
    description=(
        "Closing implied vols per underlying and constant maturity at the forward and at the 25 % forward-delta "
        "put and call strikes, as the source delivers them (folder: smile_history/<date>.csv), validated by "
        "blocking rules; failing rows go to quarantine. The stored surface of each day that the "
        "surface-repriced VaR backtest (var_backtest, `surface:<book>`) reprices options off. A session "
        "without rows is allowed: those backtest days are left out."
    ),
    metadata=table_definition_metadata("smile_history"),
)
def smile_history(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, market_data: MarketDataResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    yield from publish_source_sessions(
        context,
        "smile_history",
        lambda first, last: market_data.get_source().smile_history(first, last),
        warehouse.get(),
        market_data.quality,
        market_data.kind,
    )
