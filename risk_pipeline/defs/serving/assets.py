"""Views for downstream readers, from the SQL models in dbt_like_sql/."""

import dagster as dg

from risk_pipeline.defs.common import OWNERS, PARTITIONS
from risk_pipeline.resources import SQL_MODELS_DIR, WarehouseResource
from risk_pipeline.sql_models import apply_models, load_models

RAW_TABLES = [
    "market_prices",
    "option_quotes",
    "rates_curve",
    "dividend_yields",
    "event_calendar",
    "positions",
]


@dg.asset(
    group_name="serving",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[*RAW_TABLES, "quarantine"],
    kinds={"sql"},
    owners=OWNERS,
    description="Applies every SQL model of dbt_like_sql/ as a view in schema risk, in ref() order.",
    metadata={"models": ", ".join(m.name for m in load_models(SQL_MODELS_DIR))},
)
def sql_models(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.get()
    models = apply_models(wh, SQL_MODELS_DIR)
    counts = {m.name: int(wh.query(f"SELECT COUNT(*) AS n FROM risk.{m.name}")["n"].iloc[0]) for m in models}
    table = "| view | rows | refs |\n|---|---|---|\n" + "\n".join(
        f"| risk.{m.name} | {counts[m.name]} | {', '.join(m.refs)} |" for m in models
    )
    return dg.MaterializeResult(
        metadata={
            "views": dg.MetadataValue.md(table),
            "warehouse": wh.describe(),
            "run_id": context.run.run_id,
        }
    )


ASSETS = [sql_models]
