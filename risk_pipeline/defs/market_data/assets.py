"""Market data layer: raw tables from the configured source, published only when every rule passes."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from risk_pipeline.calendar import session_close_utc
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    PREVIOUS_SESSION,
    check_specs,
    partition_label,
    partition_sessions,
    publish_raw,
    table_definition_metadata,
)
from risk_pipeline.quality import ValidationContext
from risk_pipeline.resources import MarketDataResource, WarehouseResource

GROUP = "market_data"
KINDS = {"pandas", "great_expectations"}

Events = Iterator[dg.AssetCheckResult | dg.MaterializeResult]


def _asset_args(name: str, description: str) -> dict:
    return {
        "name": name,
        "group_name": GROUP,
        "partitions_def": PARTITIONS,
        "backfill_policy": dg.BackfillPolicy.single_run(),
        "check_specs": check_specs(name),
        "kinds": KINDS,
        "owners": OWNERS,
        "description": description,
        "metadata": table_definition_metadata(name),
    }


def _session_partitions(sessions: list[dt.date]) -> list[dict[str, dt.date]]:
    return [{"as_of_date": s} for s in sessions]


def _concat_sessions(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Frames of several sessions as one, keeping the list of files they came from."""
    with_columns = [f for f in frames if len(f.columns)]
    raw = pd.concat(with_columns, ignore_index=True) if with_columns else frames[0]
    raw.attrs["source_files"] = [f for frame in frames for f in frame.attrs.get("source_files", [])]
    return raw


def _previous_closes(warehouse: WarehouseResource, first: dt.date) -> dict[str, float]:
    """Close per symbol on the last stored session before ``first`` (for the daily-return rule)."""
    wh = warehouse.get()
    last = wh.query("SELECT MAX(as_of_date) AS d FROM risk.market_prices WHERE as_of_date < ?", [first])
    day = last["d"].iloc[0] if len(last) else None
    if day is None or pd.isna(day):
        return {}
    rows = wh.read("market_prices", {"as_of_date": pd.Timestamp(day).date()}, columns=["symbol", "close"])
    return dict(zip(rows["symbol"], rows["close"], strict=True))


@dg.asset(
    **_asset_args("market_prices", "Daily OHLCV bars per symbol, validated, one partition per session."),
    # the daily-return rule compares each close with the previous session's stored close
    deps=[dg.AssetDep("market_prices", partition_mapping=PREVIOUS_SESSION)],
)
def market_prices(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, market_data: MarketDataResource
) -> Events:
    sessions = partition_sessions(context)
    raw = market_data.get_source().market_prices(sessions[0], sessions[-1])
    ctx = ValidationContext(
        partition_key=partition_label(sessions),
        sessions=tuple(sessions),
        previous_close=_previous_closes(warehouse, sessions[0]),
    )
    yield from publish_raw(
        context,
        name="market_prices",
        raw=raw,
        warehouse=warehouse.get(),
        settings=market_data.quality,
        validation=ctx,
        partitions=_session_partitions(sessions),
        extra_metadata={"source": market_data.kind, "sessions": len(sessions)},
    )


class OptionSnapshotConfig(dg.Config):
    """Which snapshot to load and the time freshness is judged against (ISO-8601, UTC)."""

    snapshot_time: str | None = None
    reference_time: str | None = None


def _reference_times(
    config: OptionSnapshotConfig, sessions: list[dt.date], snapshot: dt.datetime | None
) -> pd.Timestamp | dict[dt.date, pd.Timestamp]:
    """Explicit reference, else the requested snapshot time, else each session's close (capped at now)."""
    if config.reference_time:
        return pd.Timestamp(config.reference_time).tz_convert("UTC")
    if snapshot is not None:
        return pd.Timestamp(snapshot).tz_convert("UTC")
    now = pd.Timestamp.now(tz="UTC")
    return {s: min(session_close_utc(s), now) for s in sessions}


@dg.asset(
    **_asset_args(
        "option_quotes",
        "Option chain snapshot per session (the last of the session by default, or the configured "
        "snapshot_time for intraday refreshes); snapshots are kept apart by as_of.",
    )
)
def option_quotes(
    context: dg.AssetExecutionContext,
    config: OptionSnapshotConfig,
    warehouse: WarehouseResource,
    market_data: MarketDataResource,
) -> Events:
    sessions = partition_sessions(context)
    source = market_data.get_source()
    snapshot = pd.Timestamp(config.snapshot_time).to_pydatetime() if config.snapshot_time else None
    raw = _concat_sessions([source.option_quotes(session, snapshot) for session in sessions])
    ctx = ValidationContext(
        partition_key=partition_label(sessions),
        sessions=tuple(sessions),
        reference_time=_reference_times(config, sessions, snapshot),
    )
    as_of_values = sorted(set(pd.to_datetime(raw["as_of"], utc=True, errors="coerce").dropna())) if len(raw) else []
    yield from publish_raw(
        context,
        name="option_quotes",
        raw=raw,
        warehouse=warehouse.get(),
        settings=market_data.quality,
        validation=ctx,
        partitions=[{"as_of": t} for t in as_of_values],
        extra_metadata={
            "snapshots": ", ".join(t.isoformat() for t in as_of_values),
            "source": market_data.kind,
        },
    )


@dg.asset(**_asset_args("rates_curve", "Zero curve per session (continuously compounded, tenor in days)."))
def rates_curve(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, market_data: MarketDataResource
) -> Events:
    sessions = partition_sessions(context)
    yield from publish_raw(
        context,
        name="rates_curve",
        raw=market_data.get_source().rates_curve(sessions[0], sessions[-1]),
        warehouse=warehouse.get(),
        settings=market_data.quality,
        validation=ValidationContext(partition_label(sessions), tuple(sessions)),
        partitions=_session_partitions(sessions),
    )


@dg.asset(**_asset_args("dividend_yields", "Continuous dividend yield per symbol and session."))
def dividend_yields(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, market_data: MarketDataResource
) -> Events:
    sessions = partition_sessions(context)
    yield from publish_raw(
        context,
        name="dividend_yields",
        raw=market_data.get_source().dividend_yields(sessions[0], sessions[-1]),
        warehouse=warehouse.get(),
        settings=market_data.quality,
        validation=ValidationContext(partition_label(sessions), tuple(sessions)),
        partitions=_session_partitions(sessions),
    )


@dg.asset(
    **_asset_args(
        "event_calendar",
        "Scheduled events: the source's earnings dates plus the FOMC and CPI dates shipped in "
        "data/event_calendar/macro_events.csv. Each materialization replaces the whole calendar.",
    )
)
def event_calendar(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, market_data: MarketDataResource
) -> Events:
    sessions = partition_sessions(context)
    earnings = market_data.get_source().earnings_events()
    macro = market_data.macro_events()
    frames = [f for f in (earnings, macro) if len(f.columns)]
    raw = pd.concat(frames, ignore_index=True)
    raw.attrs["source_files"] = [*earnings.attrs.get("source_files", []), *macro["source_file"].unique()]
    yield from publish_raw(
        context,
        name="event_calendar",
        raw=raw,
        warehouse=warehouse.get(),
        settings=market_data.quality,
        validation=ValidationContext(partition_label(sessions), ()),
        partitions=None,
        extra_metadata={"macro_events": len(macro), "earnings_events": len(earnings)},
    )


@dg.asset(**_asset_args("positions", "Positions of every book at the start of the session."))
def positions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, market_data: MarketDataResource
) -> Events:
    sessions = partition_sessions(context)
    source = market_data.get_source()
    raw = _concat_sessions([source.positions(s) for s in sessions])
    yield from publish_raw(
        context,
        name="positions",
        raw=raw,
        warehouse=warehouse.get(),
        settings=market_data.quality,
        validation=ValidationContext(partition_label(sessions), tuple(sessions)),
        partitions=_session_partitions(sessions),
        extra_metadata={"books": ", ".join(sorted(set(raw["book"].dropna()))) if "book" in raw else ""},
    )


quarantine = dg.AssetSpec(
    "quarantine",
    group_name=GROUP,
    description=(
        "Rows that failed a data-quality rule, with the rule, the reason, the file and row number. "
        "Written by each raw asset's data-quality step; never read back into the pipeline."
    ),
    kinds={"pandas"},
    owners=OWNERS,
    metadata=table_definition_metadata("quarantine"),
)

ASSETS = [market_prices, option_quotes, rates_curve, dividend_yields, event_calendar, positions, quarantine]
