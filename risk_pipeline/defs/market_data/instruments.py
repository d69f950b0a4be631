"""``instrument_quotes``: index futures and the inverse ETF from the configured source, checked before publishing."""

from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.contracts import table
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    TableWrite,
    fail_closed,
    markdown_table,
    partition_sessions,
    publish,
    session_check_spec,
    table_definition_metadata,
)
from risk_pipeline.quality import concat_source_frames
from risk_pipeline.resources import MarketDataResource, WarehouseResource

GROUP = "market_data"
NUMERIC = (
    "multiplier",
    "leverage",
    "bid",
    "ask",
    "price",
    "fair_value",
    "underlying_price",
    "time_to_expiry_years",
    "rate",
    "dividend_yield",
    "previous_close",
    "underlying_previous_close",
)
#: Relative tolerance of the cost-of-carry identity F = S exp((r - q) T) on a row's own columns.
CARRY_TOLERANCE = 1e-6


class InstrumentSnapshotConfig(dg.Config):
    """Snapshot (ISO time, UTC) to read; empty: the source's last snapshot of the session."""

    snapshot_time: str = ""


def typed(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Contract-typed rows and, per row, the first problem found ('' when none): parse failures and rules."""
    cols = table("instrument_quotes").data_column_names
    if raw.empty:
        return pd.DataFrame(columns=cols), pd.Series(dtype=object)
    missing = [c for c in cols if c not in raw.columns and c != "source"]
    problems = pd.Series("", index=raw.index, dtype=object)
    if "source_error" in raw.columns:
        problems = problems.mask(raw["source_error"].notna() & (problems == ""), raw["source_error"].astype(str))
    if missing:
        return pd.DataFrame(columns=cols), problems.mask(problems == "", f"schema: missing columns {missing}")
    out = raw.copy()
    for c in NUMERIC:
        out[c] = pd.to_numeric(out[c], errors="coerce")
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True, errors="coerce")
    for c in ("as_of_date", "expiry"):
        out[c] = pd.to_datetime(out[c], errors="coerce").dt.date
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    fut = out["instrument_type"] == "future"
    etf = out["instrument_type"] == "etf"
    carry = out["underlying_price"] * np.exp((out["rate"] - out["dividend_yield"]) * out["time_to_expiry_years"])
    index_return = out["underlying_price"] / out["underlying_previous_close"] - 1
    daily = out["previous_close"] * (1 + out["leverage"] * index_return)
    expires_later = pd.Series(
        [e is not None and d is not None and e > d for e, d in zip(out["expiry"], out["as_of_date"], strict=True)],
        index=out.index,
    )
    quoted = ["bid", "ask", "price", "fair_value", "underlying_price", "multiplier"]
    rules = [
        (out["as_of"].isna() | out["as_of_date"].isna(), "types: as_of and as_of_date parse as time and date"),
        (~(fut | etf), "instrument_type_valid: future or etf"),
        (out[quoted].isna().any(axis=1), f"types: {', '.join(quoted)} are finite numbers"),
        (~(out["bid"] > 0) | ~(out["ask"] > out["bid"]), "quote_valid: 0 < bid < ask"),
        (~np.isclose(out["price"], (out["bid"] + out["ask"]) / 2, rtol=1e-9, atol=1e-9), "price_is_mid: (bid+ask)/2"),
        (~(out["multiplier"] > 0), "multiplier_positive: multiplier > 0"),
        (fut & ~expires_later, "expiry_after_session: a future's expiry after the snapshot's session"),
        (
            fut & ~np.isclose(out["fair_value"], carry, rtol=CARRY_TOLERANCE, atol=0.0),
            "cost_of_carry: fair_value = underlying_price exp((rate - dividend_yield) time_to_expiry_years)",
        ),
        (
            etf & ~np.isclose(out["fair_value"], daily, rtol=CARRY_TOLERANCE, atol=0.0),
            "daily_reset: fair_value = previous_close (1 + leverage (underlying_price / "
            "underlying_previous_close - 1))",
        ),
    ]
    for mask, rule in rules:
        failed = pd.Series(np.asarray(mask, dtype=object), index=out.index).fillna(True).astype(bool)
        problems = problems.mask(failed & (problems == ""), rule)
    if "source" not in out.columns or out["source"].isna().all():
        out["source"] = "folder:" + out.get("source_file", pd.Series("?", index=out.index)).astype(str)
    return out[cols], problems


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["option_quotes"],
    kinds={"pandas"},
    owners=OWNERS,
    check_specs=[
        session_check_spec(
            "instrument_rows_valid",
            asset="instrument_quotes",
            blocking=True,
            description=(
                "Every row parses, 0 < bid < ask, price is the mid, futures fair value = S exp((r - q) T) and "
                "expire after the session, ETF fair value follows the daily reset (failures name file and row)."
            ),
        )
    ],
    description=(
        "Index futures (quarterly, fair value by cost of carry) and the daily-reset -1x inverse ETF at the "
        "option snapshot, from the source (synthetic: derived from the index, the zero curve and the index "
        "dividend yield; folder: instrument_quotes/<session>/<HHMMSSZ>.csv); hedge candidates."
    ),
    metadata=table_definition_metadata("instrument_quotes"),
)
@fail_closed
def instrument_quotes(
    context: dg.AssetExecutionContext,
    config: InstrumentSnapshotConfig,
    warehouse: WarehouseResource,
    market_data: MarketDataResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    source = market_data.get_source()
    snapshot = pd.Timestamp(config.snapshot_time).to_pydatetime() if config.snapshot_time else None
    raw = concat_source_frames(source.instrument_quotes(s, snapshot) for s in partition_sessions(context))
    frame, problems = typed(raw.reset_index(drop=True))
    bad = problems[problems != ""]
    where = raw.loc[bad.index, [c for c in ("source_file", "source_row") if c in raw.columns]] if len(bad) else None
    failing = [f"{'' if where is None else where.loc[i].to_dict()}: {rule}" for i, rule in bad.head(10).items()]
    check = dg.AssetCheckResult(
        check_name="instrument_rows_valid",
        asset_key="instrument_quotes",
        passed=bad.empty,
        metadata={"rows": len(raw), "failing_rows": "; ".join(failing) or "none"},
    )
    parts = [{"as_of": t} for t in sorted(set(frame["as_of"]))]
    yield from publish(
        context,
        warehouse.get(),
        [TableWrite("instrument_quotes", frame, parts)],
        checks=[check],
        metadata={
            "instrument_quotes": {
                "quotes": dg.MetadataValue.md(
                    markdown_table(frame[["as_of", "symbol", "instrument_type", "bid", "ask", "fair_value"]], 10)
                    if len(frame)
                    else "(the source lists no index futures or ETFs)"
                ),
                "source": market_data.kind,
            }
        },
    )
