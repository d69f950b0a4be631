"""Folder-of-files source: CSV or Parquet files in a documented layout (see README, "Folder source").

Layout under the folder root (one file per table per session or snapshot; ``.csv`` or ``.parquet``)::

    market_prices/2026-11-20.csv
    option_quotes/2026-11-20/204500Z.csv      one file per snapshot, UTC time HHMMSS
    rates_curve/2026-11-20.csv
    dividend_yields/2026-11-20.csv
    positions/2026-11-20.csv
    event_calendar/*.csv                      every file is read (earnings and other events)

Columns are the contract's data columns (contracts.py); ``source`` may be omitted and is then set
to ``folder:<relative path>``. CSV values are read as text so that the data-quality suite, not the
reader, decides what parses: nothing is coerced, repaired or dropped here. Each row carries
``source_file`` (path relative to the root) and ``source_row`` (1 = first data row).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from risk_pipeline.contracts import table
from risk_pipeline.sources.base import MarketDataSource, SourceError

NA_VALUES = ["", "NaN", "nan", "NA", "N/A", "null", "NULL", "None"]


class FolderSource(MarketDataSource):
    """Reads the layout above from ``root``."""

    name = "folder"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"folder source root {self.root} is not a directory", table="*", file=str(root))

    # -------------------------------------------------------------- reading
    def _read(self, table_name: str, path: Path) -> pd.DataFrame:
        rel = path.relative_to(self.root).as_posix()
        try:
            if path.suffix == ".parquet":
                frame = pd.read_parquet(path)
            elif path.stat().st_size == 0:
                frame = pd.DataFrame()
            else:
                frame = pd.read_csv(
                    path, dtype=str, keep_default_na=False, na_values=NA_VALUES, skipinitialspace=True
                )
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise SourceError(f"{rel}: cannot read ({exc})", table=table_name, file=rel) from exc
        frame = frame.astype(object).where(frame.notna(), None) if len(frame.columns) else frame
        if "source" not in frame.columns and len(frame.columns):
            frame["source"] = f"folder:{rel}"
        contract = table(table_name)
        for c in contract.columns:
            if c.nullable and c.name not in frame.columns and len(frame.columns):
                frame[c.name] = None
        frame["source_file"] = rel
        frame["source_row"] = range(1, len(frame) + 1)
        return frame

    def _files(self, table_name: str, stem: str) -> list[Path]:
        return [
            p for p in (self.root / table_name / f"{stem}{ext}" for ext in (".csv", ".parquet")) if p.exists()
        ]

    def _sessions_frame(self, table_name: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        folder = self.root / table_name
        frames: list[pd.DataFrame] = []
        expected: list[str] = []
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.suffix not in (".csv", ".parquet"):
                continue
            try:
                day = dt.date.fromisoformat(path.stem)
            except ValueError:
                continue
            if start <= day <= end:
                frames.append(self._read(table_name, path))
                expected.append(path.relative_to(self.root).as_posix())
        return _concat(frames, expected or [f"{table_name}/{start.isoformat()}.csv"])

    def market_prices(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        return self._sessions_frame("market_prices", start, end)

    def rates_curve(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        return self._sessions_frame("rates_curve", start, end)

    def dividend_yields(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        return self._sessions_frame("dividend_yields", start, end)

    def positions(self, session: dt.date) -> pd.DataFrame:
        return self._sessions_frame("positions", session, session)

    def snapshot_times(self, session: dt.date) -> list[dt.datetime]:
        folder = self.root / "option_quotes" / session.isoformat()
        times = []
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.suffix in (".csv", ".parquet") and path.stem.endswith("Z"):
                t = dt.datetime.strptime(path.stem, "%H%M%SZ").time()
                times.append(dt.datetime.combine(session, t, tzinfo=dt.UTC))
        return sorted(set(times))

    def option_quotes(self, session: dt.date, snapshot_time: dt.datetime | None = None) -> pd.DataFrame:
        times = self.snapshot_times(session)
        if snapshot_time is None:
            if not times:
                return _concat([], [f"option_quotes/{session.isoformat()}/<HHMMSS>Z.csv"])
            snapshot_time = times[-1]
        stem = snapshot_time.astimezone(dt.UTC).strftime("%H%M%SZ")
        folder = self.root / "option_quotes" / session.isoformat()
        paths = [p for p in (folder / f"{stem}{ext}" for ext in (".csv", ".parquet")) if p.exists()]
        frames = [self._read("option_quotes", p) for p in paths]
        return _concat(frames, [f"option_quotes/{session.isoformat()}/{stem}.csv"])

    def earnings_events(self) -> pd.DataFrame:
        folder = self.root / "event_calendar"
        paths = (
            sorted(p for p in folder.glob("*") if p.suffix in (".csv", ".parquet")) if folder.is_dir() else []
        )
        return _concat([self._read("event_calendar", p) for p in paths], ["event_calendar/*.csv"])


def _concat(frames: list[pd.DataFrame], files: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f.columns)]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out.attrs["source_files"] = files
    return out
