"""Folder-of-files source: CSV or Parquet files in a documented layout (see README, "Folder source").

Layout under the folder root (one file per table per session or snapshot; ``.csv`` or ``.parquet``)::

    market_prices/2026-11-20.csv
    option_quotes/2026-11-20/204500Z.csv      one file per snapshot, UTC time HHMMSSZ
    instrument_quotes/2026-11-20/204500Z.csv  optional: index futures and inverse ETFs at that snapshot
    rates_curve/2026-11-20.csv
    dividend_yields/2026-11-20.csv
    positions/2026-11-20.csv
    signals/2026-11-20.csv                    trade signals (strategy, symbol, direction, expected_return, ...)
    smile_history/2026-11-20.csv              optional: vols per symbol and tenor_days at the forward and 25-delta
    event_calendar/*.csv                      every file is read (earnings and other events)

Columns are the contract's data columns (contracts.py); ``source`` may be omitted and is then set
to ``folder:<relative path>``. CSV files are UTF-8 (a byte-order mark is allowed), read as text so
that the data-quality suite, not the reader, decides what parses: nothing is coerced, repaired or
dropped here. Each row carries ``source_file`` (path relative to the root), ``source_row`` (1 =
first data row) and ``source_columns`` (the file's header, JSON). What cannot be read becomes a row
with ``source_error`` set, which the suite's ``readable`` rule reports: a file that is not UTF-8,
not valid CSV (an unbalanced quote) or not a valid Parquet file, or has a duplicate or empty header
name (``source_row`` 0: the whole file); a row with more or fewer fields than the header (its own row
number); a data file whose name is not ``YYYY-MM-DD`` (or ``HHMMSSZ`` for a snapshot). Files that
are not ``.csv`` or ``.parquet`` (a README, ``.DS_Store``) are ignored.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path

import pandas as pd

from risk_pipeline.quality import concat_source_frames, error_frame
from risk_pipeline.sources.base import MarketDataSource, SourceError

NA_VALUES = frozenset({"", "NaN", "nan", "NA", "N/A", "null", "NULL", "None"})
DATA_SUFFIXES = (".csv", ".parquet")
_SESSION_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")
_SNAPSHOT_NAME = re.compile(r"\d{6}Z")


def _is_data_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in DATA_SUFFIXES


class FolderSource(MarketDataSource):
    """Reads the layout above from ``root``."""

    name = "folder"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"folder source root {self.root} is not a directory", table="*", file=str(root))

    # -------------------------------------------------------------- reading
    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _read(self, path: Path) -> pd.DataFrame:
        """One file as rows of text (or unreadable-input rows), with the lineage columns."""
        rel = self._rel(path)
        if path.suffix.lower() == ".parquet":
            frame = _read_parquet(path, rel)
        else:
            frame = _read_csv(path, rel)
        frame.attrs = {"source_files": [rel], "expected_files": {}}
        return frame

    def _session_files(self, table_name: str) -> tuple[dict[dt.date, list[Path]], list[Path]]:
        """Data files of a per-session table by session, and the data files whose name is not a date."""
        folder = self.root / table_name
        by_day: dict[dt.date, list[Path]] = {}
        misnamed: list[Path] = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not _is_data_file(path):
                continue
            day = _session_of(path.stem)
            if day is None:
                misnamed.append(path)
            else:
                by_day.setdefault(day, []).append(path)
        return by_day, misnamed

    def _sessions_frame(self, table_name: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        by_day, misnamed = self._session_files(table_name)
        frames = [error_frame(self._rel(p), f"file name is not a session date YYYY-MM-DD{p.suffix}") for p in misnamed]
        expected: dict[str, str] = {}
        day = start
        while day <= end:
            paths = by_day.get(day, [])
            frames += [self._read(p) for p in paths]
            if not paths:
                expected[day.isoformat()] = f"{table_name}/{day.isoformat()}.csv"
            day += dt.timedelta(days=1)
        out = concat_source_frames(frames)
        out.attrs["expected_files"] = expected
        return out

    def market_prices(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        return self._sessions_frame("market_prices", start, end)

    def rates_curve(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        return self._sessions_frame("rates_curve", start, end)

    def dividend_yields(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        return self._sessions_frame("dividend_yields", start, end)

    def positions(self, session: dt.date) -> pd.DataFrame:
        return self._sessions_frame("positions", session, session)

    def signals(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        return self._sessions_frame("signals", start, end)

    def smile_history(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        return self._sessions_frame("smile_history", start, end)

    def _snapshot_files(self, session: dt.date) -> tuple[dict[dt.datetime, list[Path]], list[Path]]:
        """Snapshot files of a session by UTC time, and the data files whose name is not ``HHMMSSZ``."""
        folder = self.root / "option_quotes" / session.isoformat()
        by_time: dict[dt.datetime, list[Path]] = {}
        misnamed: list[Path] = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not _is_data_file(path):
                continue
            t = _snapshot_time_of(path.stem)
            if t is None:
                misnamed.append(path)
            else:
                by_time.setdefault(dt.datetime.combine(session, t, tzinfo=dt.UTC), []).append(path)
        return by_time, misnamed

    def snapshot_times(self, session: dt.date) -> list[dt.datetime]:
        """Times of the correctly named snapshot files (a misnamed file is reported when the session is read)."""
        return sorted(self._snapshot_files(session)[0])

    def option_quotes(self, session: dt.date, snapshot_time: dt.datetime | None = None) -> pd.DataFrame:
        by_time, misnamed = self._snapshot_files(session)
        frames = [
            error_frame(self._rel(p), f"snapshot file name is not a UTC time HHMMSSZ{p.suffix}") for p in misnamed
        ]
        if snapshot_time is None and by_time:
            snapshot_time = max(by_time)
        paths: list[Path] = []
        if snapshot_time is None:
            wanted = f"option_quotes/{session.isoformat()}/<HHMMSS>Z.csv"
        else:
            stem = snapshot_time.astimezone(dt.UTC).strftime("%H%M%SZ")
            wanted = f"option_quotes/{session.isoformat()}/{stem}.csv"
            paths = by_time.get(snapshot_time.astimezone(dt.UTC), [])
        out = concat_source_frames([*frames, *(self._read(p) for p in paths)])
        if not paths:
            out.attrs["expected_files"] = {session.isoformat(): wanted}
        return out

    def instrument_quotes(self, session: dt.date, snapshot_time: dt.datetime | None = None) -> pd.DataFrame:
        """``instrument_quotes/<session>/<HHMMSSZ>.csv`` (index futures and ETFs) of the snapshot; none when the
        layout has no ``instrument_quotes`` folder for the session (a market without them)."""
        folder = self.root / "instrument_quotes" / session.isoformat()
        if not folder.is_dir():
            return super().instrument_quotes(session, snapshot_time)
        by_time: dict[dt.datetime, list[Path]] = {}
        frames = []
        for path in sorted(p for p in folder.iterdir() if _is_data_file(p)):
            t = _snapshot_time_of(path.stem)
            if t is None:
                why = f"snapshot file name is not a UTC time HHMMSSZ{path.suffix}"
                frames.append(error_frame(self._rel(path), why))
            else:
                by_time.setdefault(dt.datetime.combine(session, t, tzinfo=dt.UTC), []).append(path)
        if snapshot_time is None and by_time:
            snapshot_time = max(by_time)
        paths = by_time.get(snapshot_time.astimezone(dt.UTC), []) if snapshot_time is not None else []
        return concat_source_frames([*frames, *(self._read(p) for p in paths)])

    def earnings_events(self) -> pd.DataFrame:
        folder = self.root / "event_calendar"
        paths = sorted(p for p in folder.iterdir() if _is_data_file(p)) if folder.is_dir() else []
        out = concat_source_frames([self._read(p) for p in paths])
        if not paths:
            out.attrs["source_files"] = ["event_calendar/*.csv (no file)"]
        return out


def _session_of(stem: str) -> dt.date | None:
    if not _SESSION_NAME.fullmatch(stem):
        return None
    try:
        return dt.date.fromisoformat(stem)
    except ValueError:
        return None


def _snapshot_time_of(stem: str) -> dt.time | None:
    if not _SNAPSHOT_NAME.fullmatch(stem):
        return None
    try:
        return dt.datetime.strptime(stem, "%H%M%SZ").time()
    except ValueError:
        return None


def _with_lineage(records: list[list[str | None]], header: list[str], rel: str, errors: dict[int, str]) -> pd.DataFrame:
    """Rows (already split into fields) as a text frame with the lineage columns."""
    frame = pd.DataFrame(records or None, columns=header, dtype=object)
    if "source" not in header:
        frame["source"] = f"folder:{rel}"
    frame["source_file"] = rel
    frame["source_row"] = list(range(1, len(frame) + 1))
    frame["source_error"] = [errors.get(i) for i in range(1, len(frame) + 1)]
    frame["source_columns"] = json.dumps(header)
    return frame


def _header_error(header: list[str]) -> str | None:
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        return f"header has duplicate columns {dupes}"
    if any(c == "" for c in header):
        return f"header has an empty column name (position {header.index('') + 1})"
    return None


def _read_csv(path: Path, rel: str) -> pd.DataFrame:
    """A CSV file as text rows; see the module docstring for what becomes an unreadable-input row."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return error_frame(rel, f"cannot open: {exc}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return error_frame(rel, f"not UTF-8: byte 0x{data[exc.start]:02x} on line {line}")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    header: list[str] | None = None
    records: list[list[str | None]] = []
    errors: dict[int, str] = {}
    first_line = 1
    try:
        for fields in reader:
            line, first_line = first_line, reader.line_num + 1
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if header is None:
                header = [f.strip() for f in fields]
                problem = _header_error(header)
                if problem:
                    return error_frame(rel, problem)
                continue
            row = len(records) + 1
            if len(fields) != len(header):
                errors[row] = f"row has {len(fields)} fields, header has {len(header)} (line {line})"
            values: list[str | None] = [None if f in NA_VALUES else f for f in fields[: len(header)]]
            records.append(values + [None] * (len(header) - len(values)))
    except csv.Error as exc:
        return error_frame(rel, f"not valid CSV from line {first_line} on: {exc} (an unbalanced quote?)")
    if header is None:
        return pd.DataFrame()  # an empty file: no rows (the row-count rule reports it)
    return _with_lineage(records, header, rel, errors)


def _read_parquet(path: Path, rel: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # any failure to decode means the file is unreadable
        detail = str(exc).replace(str(path), rel)
        return error_frame(rel, f"not a readable Parquet file ({type(exc).__name__}: {detail})")
    header = [str(c) for c in frame.columns]
    problem = _header_error(header)
    if problem:
        return error_frame(rel, problem)
    frame.columns = header
    frame = frame.astype(object).where(frame.notna(), None)
    records = frame.to_numpy(dtype=object).tolist()
    return _with_lineage(records, header, rel, {})
