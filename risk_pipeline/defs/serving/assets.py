"""Views for downstream readers: each SQL model of dbt_like_sql/ is an asset whose upstreams are its refs."""

from collections.abc import Iterator

import dagster as dg

from risk_pipeline.defs.common import OWNERS, PARTITIONS
from risk_pipeline.defs.serving.executions import executions
from risk_pipeline.defs.serving.publication import published_valuations
from risk_pipeline.paths import SQL_MODELS_DIR
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.sql_models import apply_models, load_models

MODELS = load_models(SQL_MODELS_DIR)


def _description(sql: str) -> str:
    """The model's leading ``--`` comment lines."""
    lines = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line.removeprefix("--").strip())
    return " ".join(lines) or "SQL view"


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            m.name,
            group_name="serving",
            deps=list(m.refs),
            kinds={"sql"},
            owners=OWNERS,
            description=f"View risk.{m.name} (dbt_like_sql/{m.path.name}): {_description(m.sql)}",
            metadata={"dagster/table_name": f"risk.{m.name}", "sql": dg.MetadataValue.md(f"```sql\n{m.sql}\n```")},
        )
        for m in MODELS
    ],
    name="sql_models",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def sql_models(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> Iterator[dg.MaterializeResult]:
    """(Re)creates every view in ref() order in one transaction."""
    wh = warehouse.get()
    for m in apply_models(wh, SQL_MODELS_DIR):
        rows = int(wh.query(m.row_count_query())["n"].iloc[0])
        yield dg.MaterializeResult(
            asset_key=m.name,
            metadata={
                "dagster/row_count": rows,
                "refs": ", ".join(m.refs),
                "warehouse": wh.describe(),
                "run_id": context.run.run_id,
            },
        )


ASSETS = [sql_models, published_valuations, executions]
