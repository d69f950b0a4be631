"""Market data layer: raw tables from the configured source, published only when every rule passes."""

import datetime as dt
from collections.abc import Callable, Iterator

import dagster as dg
import pandas as pd

from risk_pipeline.calendar import previous_session, session_close_utc
from risk_pipeline.calendar import sessions as xnys_sessions
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    PREVIOUS_AND_CURRENT_SESSION,
    PREVIOUS_SESSION,
    check_specs,
    partition_label,
    partition_sessions,
    publish_raw,
    table_definition_metadata,
)
from risk_pipeline.quality import (
    CloseReference,
    PriceReference,
    ValidationContext,
    concat_source_frames,
    error_frame,
)
from risk_pipeline.resources import MarketDataResource, WarehouseResource
from risk_pipeline.sources.base import SourceError
from risk_pipeline.warehouse import Between, Warehouse

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


def _read_source(read: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The source's frame, or an unreadable-input row when the source cannot be opened at all."""
    try:
        return read()
    except SourceError as exc:
        return error_frame(exc.file, str(exc))


def _previous_bars(wh: Warehouse, first: dt.date) -> pd.DataFrame:
    """Bars of the last stored session before ``first`` (daily-return and repeated-bar rules)."""
    last = wh.query("SELECT MAX(as_of_date) AS d FROM risk.market_prices WHERE as_of_date < ?", [first])
    day = last["d"].iloc[0] if len(last) else None
    if day is None or pd.isna(day):
        return pd.DataFrame(columns=["as_of_date", "symbol", "open", "high", "low", "close", "volume"])
    return wh.read(
        "market_prices",
        {"as_of_date": pd.Timestamp(day).date()},
        columns=["as_of_date", "symbol", "open", "high", "low", "close", "volume"],
    )


def _previous_sessions(sessions: list[dt.date]) -> dict[dt.date, dt.date]:
    """The XNYS session before each session of the partition."""
    days = (previous_session(sessions[0]), *xnys_sessions(sessions[0], sessions[-1]))
    return dict(zip(days[1:], days[:-1], strict=True))


def _stored_closes(wh: Warehouse, sessions: list[dt.date]) -> dict[dt.date, dict[str, float]]:
    """Stored closes per symbol for each session of the partition and the session before it."""
    first = previous_session(sessions[0])
    span = {"as_of_date": Between(first, sessions[-1])}
    rows = wh.read("market_prices", span, columns=["as_of_date", "symbol", "close"])
    return {d: dict(zip(g["symbol"], g["close"], strict=True)) for d, g in rows.groupby("as_of_date")}


def _close_references(wh: Warehouse, sessions: list[dt.date]) -> dict[dt.date, CloseReference | None]:
    """Per session: its own closes when stored (end of day), else the previous session's (intraday)."""
    closes = _stored_closes(wh, sessions)
    previous = _previous_sessions(sessions)
    out: dict[dt.date, CloseReference | None] = {}
    for s in sessions:
        before = previous[s]
        if s in closes:
            out[s] = CloseReference(s, closes[s], True, session_close_utc(s))
        elif before in closes:
            out[s] = CloseReference(before, closes[before], False)
        else:
            out[s] = None
    return out


def _price_references(wh: Warehouse, sessions: list[dt.date]) -> dict[dt.date, PriceReference | None]:
    """Per session: the symbols with a stored bar on it, else on the session before (start of day)."""
    closes = _stored_closes(wh, sessions)
    previous = _previous_sessions(sessions)
    out: dict[dt.date, PriceReference | None] = {}
    for s in sessions:
        before = previous[s]
        day = s if s in closes else before if before in closes else None
        out[s] = PriceReference(day, frozenset(closes[day])) if day is not None else None
    return out


@dg.asset(
    **_asset_args("market_prices", "Daily OHLCV bars per symbol, validated, one partition per session."),
    # the daily-return and repeated-bar rules compare each bar with the previous session's stored bar
    deps=[dg.AssetDep("market_prices", partition_mapping=PREVIOUS_SESSION)],
)
def market_prices(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, market_data: MarketDataResource
) -> Events:
    sessions = partition_sessions(context)
    raw = _read_source(lambda: market_data.get_source().market_prices(sessions[0], sessions[-1]))
    previous = _previous_bars(warehouse.get(), sessions[0])
    ctx = ValidationContext(
        partition_key=partition_label(sessions),
        sessions=tuple(sessions),
        previous_close=dict(zip(previous["symbol"], previous["close"], strict=True)),
        previous_bars=previous,
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
        "snapshot_time for intraday refreshes); snapshots are kept apart by as_of. Each chain's "
        "underlying_price is checked against the session's stored close (end of day) or the previous "
        "session's (intraday).",
    ),
    deps=[dg.AssetDep("market_prices", partition_mapping=PREVIOUS_AND_CURRENT_SESSION)],
)
def option_quotes(
    context: dg.AssetExecutionContext,
    config: OptionSnapshotConfig,
    warehouse: WarehouseResource,
    market_data: MarketDataResource,
) -> Events:
    sessions = partition_sessions(context)
    snapshot = pd.Timestamp(config.snapshot_time).to_pydatetime() if config.snapshot_time else None

    def read() -> pd.DataFrame:
        source = market_data.get_source()
        return concat_source_frames(source.option_quotes(session, snapshot) for session in sessions)

    raw = _read_source(read)
    wh = warehouse.get()
    ctx = ValidationContext(
        partition_key=partition_label(sessions),
        sessions=tuple(sessions),
        reference_time=_reference_times(config, sessions, snapshot),
        reference_closes=_close_references(wh, sessions),
    )
    as_of = pd.to_datetime(raw["as_of"], utc=True, errors="coerce") if "as_of" in raw.columns else pd.Series()
    yield from publish_raw(
        context,
        name="option_quotes",
        raw=raw,
        warehouse=wh,
        settings=market_data.quality,
        validation=ctx,
        partitions=None,  # the snapshots (as_of values) of the rows
        extra_metadata={
            # the distinct snapshots first: a set of every row's Timestamp took 1.2 CPU s at 3,000 names
            "snapshots": ", ".join(t.isoformat() for t in sorted(as_of.dropna().unique())),
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
        raw=_read_source(lambda: market_data.get_source().rates_curve(sessions[0], sessions[-1])),
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
        raw=_read_source(lambda: market_data.get_source().dividend_yields(sessions[0], sessions[-1])),
        warehouse=warehouse.get(),
        settings=market_data.quality,
        validation=ValidationContext(partition_label(sessions), tuple(sessions)),
        partitions=_session_partitions(sessions),
    )


@dg.asset(
    **_asset_args(
        "event_calendar",
        "Scheduled events: the source's earnings dates plus the FOMC and CPI dates shipped in "
        "data/event_calendar/macro_events.csv. Each materialization replaces the whole calendar; a stored "
        "event from the session on leaves it only when the source marks it cancelled.",
    )
)
def event_calendar(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, market_data: MarketDataResource
) -> Events:
    sessions = partition_sessions(context)
    earnings = _read_source(lambda: market_data.get_source().earnings_events())
    macro = market_data.macro_events()
    macro.attrs["source_files"] = list(macro["source_file"].unique())
    raw = concat_source_frames([earnings, macro])
    wh = warehouse.get()
    stored = wh.read("event_calendar", columns=["event_id", "event_type", "symbol", "event_time", "notes"])
    yield from publish_raw(
        context,
        name="event_calendar",
        raw=raw,
        warehouse=wh,
        settings=market_data.quality,
        validation=ValidationContext(
            partition_label(sessions),
            tuple(sessions),
            stored_events=stored,
        ),
        partitions=None,
        extra_metadata={"macro_events": len(macro), "earnings_events": len(earnings)},
    )


@dg.asset(
    **_asset_args(
        "positions",
        "Positions of every book at the start of the session. Every held symbol must have a stored bar of "
        "the session (end of day) or of the session before (start of day).",
    ),
    deps=[dg.AssetDep("market_prices", partition_mapping=PREVIOUS_AND_CURRENT_SESSION)],
)
def positions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, market_data: MarketDataResource
) -> Events:
    sessions = partition_sessions(context)
    raw = _read_source(lambda: concat_source_frames(market_data.get_source().positions(s) for s in sessions))
    wh = warehouse.get()
    yield from publish_raw(
        context,
        name="positions",
        raw=raw,
        warehouse=wh,
        settings=market_data.quality,
        validation=ValidationContext(
            partition_label(sessions), tuple(sessions), priced_symbols=_price_references(wh, sessions)
        ),
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
