"""The published-valuation pointer: moved last by a run whose every step and blocking check passed."""

import datetime as dt
import json
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from risk_pipeline.defs.common import OWNERS, PARTITIONS, TableWrite, fail_closed, partition_sessions, publish
from risk_pipeline.errors import RiskDataError
from risk_pipeline.queries import latest_valuation
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Warehouse

#: Tables every published valuation has rows in, for every book (intraday refreshes write these).
INTRADAY_TABLES = ("position_greeks", "portfolio_greeks", "book_nav", "limit_status", "trading_state")
#: Tables an end-of-day valuation adds.
END_OF_DAY_TABLES = ("var_results", "var_contributions", "stress_results", "stress_grid")
#: Every valuation table the pointer stands for (its upstream assets).
VALUATION_TABLES = (
    *INTRADAY_TABLES,
    "required_reductions",
    "audit_trail",
    *END_OF_DAY_TABLES,
    "event_risk",
    "gap_risk_actions",
    "var_backtest",
    "var_backtest_observations",
)


def books_with_rows(wh: Warehouse, name: str, as_of: pd.Timestamp) -> set[str]:
    got = wh.query(f"SELECT DISTINCT book FROM risk.{name} WHERE as_of = ?", [as_of])
    return set(got["book"])


def pointer_row(wh: Warehouse, session: dt.date, run_id: str) -> dict[str, object]:
    """The pointer for the session's latest valuation, after checking every book has rows in every table."""
    as_of, positions = latest_valuation(wh, session)
    books = sorted(set(positions["book"]))
    missing = {t: sorted(set(books) - books_with_rows(wh, t, as_of)) for t in INTRADAY_TABLES}
    missing = {t: b for t, b in missing.items() if b}
    if missing:
        raise RiskDataError(f"valuation {as_of.isoformat()} is incomplete, not published: missing rows {missing}")
    end_of_day = all(set(books) <= books_with_rows(wh, t, as_of) for t in END_OF_DAY_TABLES)
    tables = [*INTRADAY_TABLES, *(END_OF_DAY_TABLES if end_of_day else ())]
    return {
        "session": session,
        "as_of": as_of,
        "kind": "end_of_day" if end_of_day else "intraday",
        "books": json.dumps(books),
        "tables": json.dumps(tables),
        "published_run_id": run_id,
        "published_at": pd.Timestamp.now(tz="UTC"),
    }


@dg.asset(
    group_name="serving",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=list(VALUATION_TABLES),
    kinds={"pandas"},
    owners=OWNERS,
    description=(
        "The pointer to the latest complete valuation: written last, only when every upstream step of the "
        "run and its blocking checks passed (a failed step skips it), after checking that every book has "
        "rows in every valuation table at that as_of. The pre-trade service reads books at the latest "
        "published valuation, so it never sees a mix of a failed run's tables and the previous run's."
    ),
    metadata={"dagster/table_name": "risk.published_valuations"},
)
@fail_closed
def published_valuations(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult]:
    wh = warehouse.get()
    rows = pd.DataFrame([pointer_row(wh, s, context.run.run_id) for s in partition_sessions(context)])
    parts = [{"session": r.session, "as_of": r.as_of} for r in rows.itertuples()]
    yield from publish(
        context,
        wh,
        [TableWrite("published_valuations", rows, parts)],
        metadata={
            "published_valuations": {
                "as_of": ", ".join(pd.Timestamp(t).isoformat() for t in rows["as_of"]),
                "kind": ", ".join(rows["kind"]),
            }
        },
    )
