"""Write any source's data in the folder-source layout (used for data/sample_folder and tests)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from risk_pipeline.contracts import table
from risk_pipeline.sources.base import MarketDataSource


def _write(frame: pd.DataFrame, name: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = frame[table(name).data_column_names].copy()
    for c in table(name).columns:
        if c.type == "timestamp":
            out[c.name] = pd.to_datetime(out[c.name], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if path.suffix == ".parquet":
        out.to_parquet(path, index=False)
    else:
        out.to_csv(path, index=False, float_format="%.10g")


def export_folder(
    source: MarketDataSource,
    root: Path,
    sessions: Sequence[dt.date],
    symbols: Sequence[str] | None = None,
    snapshots_per_session: int = 1,
    fmt: str = "csv",
) -> list[Path]:
    """Write ``sessions`` of ``source`` (restricted to ``symbols``) under ``root``; returns files written.

    Option snapshots are the last ``snapshots_per_session`` of each session; positions keep only
    rows on the chosen symbols; events keep the chosen symbols' earnings.
    """
    written: list[Path] = []
    keep = set(symbols) if symbols else None

    def pick(frame: pd.DataFrame, column: str) -> pd.DataFrame:
        return frame if keep is None else frame[frame[column].isin(keep)]

    for day in sessions:
        stem = day.isoformat()
        for name, frame, column in (
            ("market_prices", source.market_prices(day, day), "symbol"),
            ("rates_curve", source.rates_curve(day, day), None),
            ("dividend_yields", source.dividend_yields(day, day), "symbol"),
            ("positions", source.positions(day), "symbol"),
            ("smile_history", source.smile_history(day, day), "symbol"),
        ):
            if name == "smile_history" and frame.empty:  # optional: a source without it writes no file
                continue
            path = root / name / f"{stem}.{fmt}"
            _write(pick(frame, column) if column else frame, name, path)
            written.append(path)
        for snap in source.snapshot_times(day)[-snapshots_per_session:]:
            quotes = pick(source.option_quotes(day, snap), "underlying")
            path = root / "option_quotes" / stem / f"{snap.astimezone(dt.UTC).strftime('%H%M%SZ')}.{fmt}"
            _write(quotes, "option_quotes", path)
            written.append(path)
    events = source.earnings_events()
    path = root / "event_calendar" / f"earnings.{fmt}"
    _write(pick(events, "symbol"), "event_calendar", path)
    written.append(path)
    return written
