"""Data-quality suites for the raw tables, run with Great Expectations before anything is published.

Each raw table has a suite of named rules (versioned here, in code). ``validate`` takes a source
frame and returns a ``ValidationReport``: per rule, pass/fail, the failing rows and sample rows; the
typed frame to publish when everything passed; and quarantine rows otherwise. In order it:

1. ``readable``: rows the source could not read (a file that is not UTF-8 or not valid CSV, a row
   with more or fewer fields than the header, a corrupt Parquet file, a file name outside the
   layout) arrive as rows carrying ``source_error``; they fail here, row 0 when a whole file failed;
2. ``schema``: each file's header (``source_columns``) names exactly the contract's columns
   (``source`` may be left out); an unknown, misspelled or missing column fails every row of the file;
3. ``types``: values are coerced to the contract's types (numbers finite, integers whole and within
   64 bits); a value that does not parse fails for that row;
4. ``identifiers_valid``, ``not_null_keys``, ``unique_keys``, ``row_count_in_range`` (per session);
5. the table's own rules, as a Great Expectations suite on the typed rows plus derived columns
   (daily return, repeated bar, snapshot age, distance of a chain's underlying from the close, ...),
   and the checks against stored state (a calendar may not lose live events silently). A frame on
   which every expectation certainly passes (the comparisons GX makes, no missing values) is not
   handed to GX; any other is validated by GX whole (``_run_gx``).

Row numbers are the source's own (1 = first data row of the file, 0 = the file as a whole), so an
error reads "file market_prices/2026-11-20.csv row 3: rule prices_positive (open, high, low, close > 0)".
Nothing is repaired or dropped here: the caller publishes all rows or none.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from risk_pipeline.contracts import Table, table
from risk_pipeline.warehouse import duplicated_keys

SUITE_VERSION = "2026.12.1"

#: Rules every raw table has, in evaluation order, before the table's own rules.
COMMON_RULES = (
    "readable",
    "schema",
    "types",
    "identifiers_valid",
    "not_null_keys",
    "unique_keys",
    "row_count_in_range",
)

EVENT_TYPES = ("earnings", "fomc", "cpi", "ppi", "nfp", "gdp", "opex", "fed_speech", "other")
INSTRUMENT_TYPES = ("stock", "etf", "future", "option")

#: Lineage columns a source adds to each row (never published): file, row (1 = first data row,
#: 0 = the whole file), why the row could not be read, and the file's header as read (JSON list).
LINEAGE = ("source_file", "source_row", "source_error", "source_columns")
#: Contract columns a file may leave out of its header (the source fills them in).
HEADER_OPTIONAL = frozenset({"source"})

#: Symbols and underlyings: 1-24 characters, upper-case letters, digits and . - / ^ = _, not starting with a
#: separator (``AAPL``, ``BRK.B``, ``^SPX``, ``ESZ6``).
SYMBOL_RULE = "1-24 characters A-Z 0-9 . - / ^ = _, starting with a letter, digit or ^"
SYMBOL_PATTERN = re.compile(r"[A-Z0-9^][A-Z0-9./^=_-]{0,23}")
#: Books, strategies, position and event ids: 1-128 characters, letters, digits and _ - . : / + = @ #,
#: starting with a letter or digit (``core_equity``, ``core_equity:NEXQ:2026-12-18:310:C``).
ID_RULE = "1-128 characters A-Z a-z 0-9 _ - . : / + = @ #, starting with a letter or digit"
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/+=@#-]{0,127}")
IDENTIFIER_COLUMNS: Mapping[str, tuple[re.Pattern[str], str]] = {
    "symbol": (SYMBOL_PATTERN, SYMBOL_RULE),
    "underlying": (SYMBOL_PATTERN, SYMBOL_RULE),
    "book": (ID_PATTERN, ID_RULE),
    "strategy": (ID_PATTERN, ID_RULE),
    "position_id": (ID_PATTERN, ID_RULE),
    "event_id": (ID_PATTERN, ID_RULE),
}
#: Any other text value: at most this many characters, none of them a control, format (bidirectional
#: overrides, zero-width), line/paragraph separator, surrogate, private-use or unassigned character.
MAX_TEXT_LENGTH = 2000
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INTEGER_TEXT = re.compile(r"[+-]?\d+")
_CANCELLED = re.compile(r"cancelled")  # as event risk reads it

MissingSessionPolicy = Literal["fail", "keep"]


@dataclass(frozen=True)
class QualitySettings:
    """Thresholds of the suites; every one is configurable from the Dagster resource.

    ``missing_session_policy``: what a range run does with a session that has no input at all:
    ``fail`` (default) blocks the run; ``keep`` leaves that session's published rows as they are,
    writes the others and lists the session in the materialization metadata. A run in which no
    session has input always fails.
    """

    max_abs_daily_log_return: float = 0.40
    snapshot_max_age_minutes: float = 30.0
    missing_session_policy: MissingSessionPolicy = "fail"
    underlying_close_tolerance: float = 0.05
    underlying_close_window_minutes: float = 60.0
    row_count_ranges: Mapping[str, tuple[int, int]] = field(
        default_factory=lambda: {
            "market_prices": (1, 100_000),
            "option_quotes": (1, 2_000_000),
            "rates_curve": (1, 10_000),
            "dividend_yields": (1, 100_000),
            "event_calendar": (1, 1_000_000),
            "positions": (1, 1_000_000),
            "signals": (0, 1_000_000),  # a session without signals is allowed
            "smile_history": (0, 1_000_000),  # a session without a stored surface is allowed
        }
    )


@dataclass(frozen=True)
class Entry:
    """A failure not tied to one input row (a missing session, a whole file, live events left out): row 0."""

    file: str | None
    reason: str
    record: Mapping[str, Any] = field(default_factory=dict)
    row: int = 0


@dataclass(frozen=True)
class RuleResult:
    """Outcome of one rule: failing row positions (into the validated frame), entries and what was seen."""

    rule: str
    description: str
    passed: bool
    failing_positions: tuple[int, ...] = ()
    observed: str = ""
    table_level: bool = False
    entries: tuple[Entry, ...] = ()
    #: why each failing row failed (position -> reason), where the rule can say more than its description
    row_reasons: Mapping[int, str] = field(default_factory=dict)

    @property
    def n_failing(self) -> int:
        return len(self.failing_positions) + len(self.entries)


@dataclass
class ValidationReport:
    """All rule results for one table write, the typed frame and the raw rows."""

    table: str
    partition_key: str
    raw: pd.DataFrame
    typed: pd.DataFrame
    results: list[RuleResult]
    #: sessions without any input that the ``keep`` policy leaves as stored (not written)
    missing_sessions: tuple[dt.date, ...] = ()

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]

    def source_location(self, position: int) -> str | None:
        """Where the row at ``position`` came from: its file, or for a generated row (no file) the scheme
        ``<source>:<table>/<session or snapshot>?<key>=<value>&...``, e.g.
        ``synthetic(seed=7):market_prices/2026-11-20?symbol=STK03``, which regenerates the row.
        """
        file = _cell(self.raw, position, "source_file")
        if file is not None:
            return str(file)
        source = _cell(self.raw, position, "source")
        if source is None:
            return None
        t = table(self.table)
        when = _cell(self.raw, position, "as_of") or _cell(self.raw, position, "as_of_date")
        stamp = pd.Timestamp(when).isoformat() if isinstance(when, (dt.datetime, pd.Timestamp)) else when
        keys = [k for k in t.key if k not in ("as_of", "as_of_date")]
        query = "&".join(f"{k}={_cell(self.raw, position, k)}" for k in keys if k in self.raw.columns)
        return f"{source}:{self.table}/{stamp if stamp is not None else 'all'}" + (f"?{query}" if query else "")

    def location(self, position: int) -> str:
        """``file F row N`` for a row position of the frame (F: ``source_location``)."""
        file = self.source_location(position) or "source"
        row = _cell(self.raw, position, "source_row")
        row_number = int(row) if row is not None else position + 1
        return f"file {file} row {row_number}"

    def locations(self, result: RuleResult, limit: int = 3) -> list[str]:
        """Where a rule failed: its rows, then its entries (each ``file F row N``)."""
        rows = [self.location(p) for p in result.failing_positions[:limit]]
        rest = max(0, limit - len(rows))
        return rows + [f"file {e.file or 'source'} row {e.row}" for e in result.entries[:rest]]

    def sample(self, result: RuleResult, limit: int = 5) -> pd.DataFrame:
        """Up to ``limit`` failing raw rows (or entries), with file and row number first."""
        positions = list(result.failing_positions[:limit])
        if not positions and result.entries:
            return pd.DataFrame(
                {
                    "where": [f"file {e.file or 'source'} row {e.row}" for e in result.entries[:limit]],
                    "reason": [e.reason for e in result.entries[:limit]],
                }
            )
        rows = self.raw.iloc[positions].copy() if positions else self.raw.iloc[:0].copy()
        rows.insert(0, "where", [self.location(p) for p in positions])
        if result.row_reasons:
            rows.insert(1, "reason", [result.row_reasons.get(p, "") for p in positions])
        drop = [c for c in ("source_file", "source_row", "source_columns") if c in rows.columns]
        return rows.drop(columns=drop)

    def message(self) -> str:
        """One line per failed rule naming file, row, rule and reason."""
        lines = [f"{self.table} partition {self.partition_key} blocked by data-quality rules:"]
        for r in self.failed:
            seen = f" ({r.observed})" if r.observed else ""
            if not r.n_failing:
                file = _files(self.raw) or "source"
                lines.append(f"- rule {r.rule} ({r.description}) failed for {file}: {r.observed}")
                continue
            where = "; ".join(self.locations(r))
            more = f" and {r.n_failing - 3} more" if r.n_failing > 3 else ""
            lines.append(f"- rule {r.rule} ({r.description}) failed on {r.n_failing} rows{seen}: {where}{more}")
        return "\n".join(lines)

    def quarantine_frame(self, asset: str) -> pd.DataFrame:
        """One quarantine row per failing (row, rule); entries and file-level failures get row 0.

        The table's key is (run, asset, row number, rule): failures that share a row number and rule
        (row 3 of two files of a range, two missing sessions) become one row whose ``source_file``
        lists every file and whose ``row`` is the list of their rows, so nothing is lost.
        """
        now = pd.Timestamp.now(tz="UTC")
        records: list[dict[str, Any]] = []
        for r in self.failed:
            for e in r.entries:
                records.append(
                    {
                        "row_number": e.row,
                        "check_name": r.rule,
                        "reason": f"{r.description}: {e.reason}",
                        "source_file": e.file,
                        "row": {"reason": e.reason, **e.record},
                    }
                )
            if not r.failing_positions and not r.entries:
                records.append(
                    {
                        "row_number": 0,
                        "check_name": r.rule,
                        "reason": f"{r.description}: {r.observed}",
                        "source_file": _files(self.raw),
                        "row": {"observed": r.observed},
                    }
                )
            for p in r.failing_positions:
                row = _cell(self.raw, p, "source_row")
                why = r.row_reasons.get(p) or r.observed
                records.append(
                    {
                        "row_number": int(row) if row is not None else p + 1,
                        "check_name": r.rule,
                        "reason": r.description + (f": {why}" if why else ""),
                        "source_file": self.source_location(p),
                        "row": _row_record(self.raw, p),
                    }
                )
        columns = [
            "asset",
            "partition_key",
            "row_number",
            "check_name",
            "reason",
            "source_file",
            "row",
            "quarantined_at",
        ]
        merged = []
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        for rec in records:
            groups.setdefault((rec["row_number"], rec["check_name"]), []).append(rec)
        for (row_number, check), recs in groups.items():
            files = list(dict.fromkeys(str(r["source_file"]) for r in recs if r["source_file"] is not None))
            if len(recs) == 1:
                reason, row = recs[0]["reason"], recs[0]["row"]
            else:
                reasons = list(dict.fromkeys(r["reason"] for r in recs))
                reason = reasons[0] if len(reasons) == 1 else " | ".join(reasons)
                row = [{"source_file": r["source_file"], "row": r["row"]} for r in recs]
            merged.append(
                {
                    "asset": asset,
                    "partition_key": self.partition_key,
                    "row_number": row_number,
                    "check_name": check,
                    "reason": reason,
                    "source_file": ", ".join(files) if files else None,
                    "row": json.dumps(row, default=str, allow_nan=True),
                    "quarantined_at": now,
                }
            )
        return pd.DataFrame.from_records(merged, columns=columns)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and math.isnan(v))


def _cell(frame: pd.DataFrame, position: int, column: str) -> Any:
    if column not in frame.columns or position >= len(frame):
        return None
    v = frame[column].iloc[position]
    return None if _missing(v) else v


def _files(frame: pd.DataFrame) -> str | None:
    """Every file the frame came from: the ones read (``attrs``), then any other named by a row."""
    files = [str(f) for f in frame.attrs.get("source_files", [])]
    if "source_file" in frame.columns:
        files += sorted({str(f) for f in frame["source_file"] if not _missing(f)})
    files = list(dict.fromkeys(files))
    return ", ".join(files) if files else None


def _row_record(frame: pd.DataFrame, position: int) -> dict[str, Any]:
    return {
        k: (None if _missing(v) else v)
        for k, v in frame.iloc[position].to_dict().items()
        if k not in ("source_file", "source_row", "source_columns")
    }


def concat_source_frames(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Frames of several files or sessions as one frame, keeping their lineage attributes.

    ``attrs["source_files"]`` (files read, in order) and ``attrs["expected_files"]`` (session ->
    the file that was looked for and not found) are merged; frames without rows add only those.
    """
    frames = list(frames)
    with_rows = [f for f in frames if len(f)]
    out = pd.concat(with_rows, ignore_index=True) if with_rows else pd.DataFrame()
    if "source_error" in out.columns:  # a misnamed file is reported by each session's read: once is enough
        errors = out["source_error"].notna()
        repeated = out.duplicated(subset=["source_file", "source_row", "source_error"]) & errors
        out = out[~repeated].reset_index(drop=True)
    expected: dict[str, str] = {}
    for f in frames:
        expected.update(f.attrs.get("expected_files", {}))
    out.attrs = {
        "source_files": [name for f in frames for name in f.attrs.get("source_files", [])],
        "expected_files": expected,
    }
    return out


def error_frame(file: str | None, reason: str, row: int = 0) -> pd.DataFrame:
    """One unreadable-input row: the whole file (row 0) or one row of it could not be read."""
    out = pd.DataFrame({"source_file": [file], "source_row": [row], "source_error": [reason]}, dtype=object)
    out.attrs = {"source_files": [file] if file else [], "expected_files": {}}
    return out


# ---------------------------------------------------------------------- typing
def coerce_types(raw: pd.DataFrame, t: Table) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Typed copy of ``raw`` and, per row position, why values did not parse (``column: reason``).

    Missing values stay missing (the not-null rules judge them); a present value that does not
    parse becomes missing in the typed frame and is reported. Numbers must be finite; integers
    (``bigint``) whole and within 64 bits, kept exact as pandas ``Int64``.
    """
    typed = pd.DataFrame(index=raw.index)
    bad: dict[int, list[str]] = {}

    def flag(mask: np.ndarray, column: str, values: pd.Series, why: str) -> None:
        for p in np.flatnonzero(mask):
            bad.setdefault(int(p), []).append(f"{column} {_show(values.iloc[p])} {why}")

    for c in t.columns:
        if c.name not in raw.columns:
            continue
        s = raw[c.name]
        if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
            present = s.notna().to_numpy(bool)
        else:
            present = ~_map_unique(s, lambda v: _missing(v) or (isinstance(v, str) and v.strip() == "")).to_numpy(bool)
        if c.type == "double":
            conv = pd.to_numeric(s.where(present, None), errors="coerce").astype("float64")
            values = conv.to_numpy(float)
            unparsed = present & np.isnan(values)
            infinite = present & np.isinf(values)
            flag(unparsed, c.name, s, "is not a number")
            flag(infinite, c.name, s, "is not finite")
            conv = conv.where(~infinite, np.nan)
        elif c.type == "bigint":
            parsed = _map_unique(s.where(present, None), _parse_int)
            unparsed = present & parsed.map(lambda v: isinstance(v, str)).to_numpy(bool)
            for p in np.flatnonzero(unparsed):
                bad.setdefault(int(p), []).append(f"{c.name} {_show(s.iloc[p])} {parsed.iloc[p]}")
            conv = pd.Series(
                pd.array([None if isinstance(v, str) else v for v in parsed], dtype="Int64"), index=s.index
            )
        elif c.type == "date":
            conv = _to_date(s.where(present, None))
            flag(present & conv.isna().to_numpy(bool), c.name, s, "is not a date")
        elif c.type == "timestamp":
            conv = _to_datetime(s.where(present, None), utc=True)
            flag(present & conv.isna().to_numpy(bool), c.name, s, "is not a timestamp")
        elif c.type == "boolean":
            conv = _map_unique(s, _to_bool)
            flag(present & conv.isna().to_numpy(bool), c.name, s, "is not true/false")
        else:
            conv = _map_unique(s, lambda v: None if _missing(v) else str(v).strip()).where(present, None)
        typed[c.name] = conv
    for extra in ("source_file", "source_row"):
        if extra in raw.columns:
            typed[extra] = raw[extra]
    return typed.reset_index(drop=True), bad


def _show(v: Any) -> str:
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_int(v: Any) -> Any:
    """An exact Python int, or a string saying why the value is not a 64-bit integer."""
    if _missing(v):
        return None
    if isinstance(v, bool | np.bool_):
        return "is not an integer"
    if isinstance(v, int | np.integer):
        n = int(v)
    elif isinstance(v, float | np.floating):
        if not math.isfinite(v):
            return "is not finite"
        if not float(v).is_integer():
            return "is not a whole number"
        n = int(v)
    else:
        text = str(v).strip()
        if _INTEGER_TEXT.fullmatch(text):
            n = int(text)
        else:
            try:
                f = float(text)
            except ValueError:
                return "is not a number"
            if not math.isfinite(f):
                return "is not finite"
            if not f.is_integer():
                return "is not a whole number"
            n = int(f)
    if not _INT64_MIN <= n <= _INT64_MAX:
        return "is outside the 64-bit integer range"
    return n


def _map_unique(s: pd.Series, f: Callable[[Any], Any]) -> pd.Series:
    """``s.map(f)`` evaluating ``f`` once per distinct value (dates and labels repeat on every row)."""
    try:
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
    except TypeError:  # unhashable values
        return s.map(f).astype(object)
    values = np.empty(len(uniques) + 1, dtype=object)
    values[:] = [f(v) for v in uniques] + [f(None)]
    return pd.Series(values[codes], index=s.index, dtype=object)


def _is_text_like(s: pd.Series) -> bool:
    return s.dtype == object or str(s.dtype) in ("str", "string")


def _parsed_datetimes(values: pd.Series, utc: bool) -> pd.Series:
    """``pd.to_datetime`` of the values parsed one by one (``_parse_one``: text, dates, timestamps; unparseable:
    NaT)."""
    return pd.to_datetime(pd.Series([_parse_one(v, utc) for v in values], index=values.index, dtype=object), utc=utc)


def _dates(conv: pd.Series) -> pd.Series:
    """``datetime.date`` per timestamp, None where missing."""
    return pd.Series(conv.dt.date.astype(object).where(conv.notna(), None), index=conv.index)


def _to_datetime(s: pd.Series, *, utc: bool) -> pd.Series:
    """``pd.to_datetime`` of the values parsed one by one, each distinct text value converted once."""
    if _is_text_like(s):
        return _per_distinct(s, lambda values: _parsed_datetimes(values, utc))
    return pd.to_datetime(s, errors="coerce", utc=utc)


def _to_date(s: pd.Series) -> pd.Series:
    """``datetime.date`` per value (None where missing or unparseable), as ``_to_datetime(s, utc=False)``'s
    dates, each distinct text value converted once."""
    if _is_text_like(s):
        return _per_distinct(s, lambda values: _dates(_parsed_datetimes(values, False)))
    return _dates(_to_datetime(s, utc=False))


def _parse_one(v: Any, utc: bool) -> Any:
    if _missing(v):
        return None
    try:
        ts = pd.Timestamp(v)
    except (ValueError, TypeError, OverflowError):
        return None
    if ts is pd.NaT:
        return None
    if utc:
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.tz_localize(None) if ts.tzinfo is not None else ts


def _to_bool(v: Any) -> Any:
    if _missing(v):
        return None
    if isinstance(v, bool | np.bool_):
        return bool(v)
    text = str(v).strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(text)


# ---------------------------------------------------------------------- identifiers and text
def text_problem(value: str, pattern: re.Pattern[str] | None = None, rule: str = "") -> str | None:
    """Why a text value breaks the identifier rule (``pattern``) or the plain-text rule, else None."""
    for ch in value:
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            name = unicodedata.name(ch, "unnamed")
            return f"{_show(value)} contains U+{ord(ch):04X} ({name})"
    if pattern is not None and not pattern.fullmatch(value):
        return f"{_show(value)} is not {rule}"
    if len(value) > MAX_TEXT_LENGTH:
        return f"{len(value)} characters (at most {MAX_TEXT_LENGTH})"
    return None


def _text_problems(typed: pd.DataFrame, t: Table) -> dict[int, list[str]]:
    problems: dict[int, list[str]] = {}
    for c in t.columns:
        if c.type != "text" or c.name not in typed.columns:
            continue
        pattern, rule = IDENTIFIER_COLUMNS.get(c.name, (None, ""))
        found = _map_unique(typed[c.name], lambda v, p=pattern, r=rule: None if _missing(v) else text_problem(v, p, r))
        for pos in np.flatnonzero(found.notna().to_numpy(bool)):
            problems.setdefault(int(pos), []).append(f"{c.name} {found.iloc[pos]}")
    return problems


# ---------------------------------------------------------------------- suites
@dataclass(frozen=True)
class CloseReference:
    """The closes one session's option chain is compared with.

    ``same_session``: the chain's own session (end of day), else the previous session (intraday,
    before the close is stored). ``close_time``: the chain session's close (UTC); a snapshot taken
    in the last ``underlying_close_window_minutes`` before it is held to the tight tolerance.
    """

    session: dt.date
    closes: Mapping[str, float]
    same_session: bool
    close_time: pd.Timestamp | None = None


@dataclass(frozen=True)
class PriceReference:
    """The symbols with a stored bar on ``session`` (the positions' own session, or the one before)."""

    session: dt.date
    symbols: frozenset[str]


@dataclass(frozen=True)
class ValidationContext:
    """What the rules compare against: the partition's sessions, reference time and stored state.

    The stored-state fields are None when not supplied; the rule that needs one then has nothing to
    compare with and passes (the assets always supply them).
    """

    partition_key: str
    sessions: tuple[dt.date, ...] = ()
    reference_time: pd.Timestamp | Mapping[dt.date, pd.Timestamp] | None = None
    previous_close: Mapping[str, float] = field(default_factory=dict)
    #: market_prices: the last stored bar per symbol before the first session (symbol, as_of_date, OHLCV)
    previous_bars: pd.DataFrame | None = None
    #: option_quotes: per session, the closes the chain's underlying_price is compared with (None: none stored)
    reference_closes: Mapping[dt.date, CloseReference | None] | None = None
    #: positions: per session, the symbols with a stored bar (None: no bars stored for it or the session before)
    priced_symbols: Mapping[dt.date, PriceReference | None] | None = None
    #: event_calendar: the stored calendar (event_id, event_type, symbol, event_time, notes)
    stored_events: pd.DataFrame | None = None
    #: the time "future" is judged against (default: now)
    now: pd.Timestamp | None = None


TableCheck = Callable[[pd.DataFrame, ValidationContext, pd.DataFrame], list[Entry]]
Explain = Callable[[pd.DataFrame, int], str]


@dataclass(frozen=True)
class Rule:
    """One named rule: a description, the GX expectations (all must pass) that implement it, and
    optionally a per-row explanation and a table-level check evaluated in code (against stored state)."""

    name: str
    description: str
    expectations: Callable[[], list[Any]]
    table_level: bool = False
    explain: Explain | None = None
    table_check: TableCheck | None = None


def _gxe() -> Any:
    import great_expectations.expectations as gxe

    return gxe


#: GX compares int64 and float64 columns vectorized (``ColumnValuesBetween._pandas``); others value by value
_GX_VECTORIZED = (np.dtype(np.int64), np.dtype(np.float64))


def _numbers_without_missing(frame: pd.DataFrame, column: str) -> pd.Series | None:
    """The column as numbers every comparison treats exactly as GX does, when it has no missing value: an int64
    or float64 column as it is, a nullable ``Int64`` one as int64 within +-2**53 (exact as floats too); None
    for any other column (then only GX itself can say)."""
    if column not in frame.columns:
        return None
    s = frame[column]
    if s.dtype in _GX_VECTORIZED:
        return None if s.isna().any() else s
    if isinstance(s.dtype, pd.Int64Dtype) and not s.isna().any():
        values = s.to_numpy(np.int64)
        if len(values) and ((values > 2**53) | (values < -(2**53))).any():
            return None
        return pd.Series(values, index=s.index)
    return None


@dataclass(frozen=True)
class Expectation:
    """One GX expectation of a rule, described without importing GX: ``between`` (``column`` within
    ``min_value``/``max_value``, ``strict_min``), ``in_set`` (``column`` in ``value_set``) or ``a_ge_b``
    (``column`` >= ``column_b``). ``gx()`` builds the GX object; ``certainly_passes`` says whether GX would find
    no failing row, from the same pandas comparisons GX makes, where that is certain (no missing value, a dtype
    whose comparison GX makes the same way), else False (then GX decides)."""

    kind: Literal["between", "in_set", "a_ge_b"]
    column: str
    column_b: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    strict_min: bool = False
    value_set: tuple[Any, ...] = ()

    def gx(self) -> Any:
        gxe = _gxe()
        if self.kind == "between":
            return gxe.ExpectColumnValuesToBeBetween(
                column=self.column, min_value=self.min_value, max_value=self.max_value, strict_min=self.strict_min
            )
        if self.kind == "in_set":
            return gxe.ExpectColumnValuesToBeInSet(column=self.column, value_set=list(self.value_set))
        return gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=self.column, column_B=self.column_b, or_equal=True)

    def certainly_passes(self, frame: pd.DataFrame) -> bool:
        if self.kind == "in_set":
            if self.column not in frame.columns:
                return False
            s = frame[self.column]
            return not s.isna().any() and bool(s.isin(list(self.value_set)).all())
        a = _numbers_without_missing(frame, self.column)
        if a is None:
            return False
        if self.kind == "a_ge_b":
            b = _numbers_without_missing(frame, self.column_b or "")
            return b is not None and bool((a.to_numpy() >= b.to_numpy()).all())
        low, high = self.min_value, self.max_value
        if (low is None and high is None) or (low is not None and high is not None and low > high):
            return False  # GX raises on these bounds: a failure
        ok = np.ones(len(a), dtype=bool)
        if low is not None:
            ok &= (low < a).to_numpy(bool) if self.strict_min else (low <= a).to_numpy(bool)
        if high is not None:
            ok &= (a <= high).to_numpy(bool)
        return bool(ok.all())


def _positive(*columns: str) -> Callable[[], list[Expectation]]:
    return lambda: [Expectation("between", c, min_value=0, strict_min=True) for c in columns]


def _non_negative(*columns: str) -> Callable[[], list[Expectation]]:
    return lambda: [Expectation("between", c, min_value=0) for c in columns]


def _in_set(column: str, values: tuple[Any, ...]) -> Callable[[], list[Expectation]]:
    return lambda: [Expectation("in_set", column, value_set=tuple(values))]


def _a_ge_b(*pairs: tuple[str, str]) -> Callable[[], list[Expectation]]:
    return lambda: [Expectation("a_ge_b", a, column_b=b) for a, b in pairs]


def _between(column: str, low: float | None, high: float | None) -> Callable[[], list[Expectation]]:
    return lambda: [Expectation("between", column, min_value=low, max_value=high)]


def _none() -> list[Expectation]:
    return []


def _date_in_partition() -> Rule:
    return Rule("date_in_partition", "as_of_date inside the partition written", _in_set("_in_partition", (True,)))


def table_rules(name: str, settings: QualitySettings) -> list[Rule]:
    """The table's own rules (after the common ones), in evaluation order."""
    max_ret = settings.max_abs_daily_log_return
    max_age = settings.snapshot_max_age_minutes
    tight = settings.underlying_close_tolerance
    window = settings.underlying_close_window_minutes
    rules: dict[str, list[Rule]] = {
        "market_prices": [
            Rule("prices_positive", "open, high, low, close > 0", _positive("open", "high", "low", "close")),
            Rule(
                "ohlc_consistent",
                "low <= min(open, close) <= max(open, close) <= high",
                _a_ge_b(("open", "low"), ("close", "low"), ("high", "open"), ("high", "close")),
            ),
            Rule("volume_non_negative", "volume >= 0", _non_negative("volume")),
            Rule(
                "daily_return_plausible",
                f"|ln(close / previous close)| <= {max_ret} unless event_flag is set",
                _between("_abs_unflagged_log_return", None, max_ret),
            ),
            Rule(
                "bars_not_repeated",
                "no bar identical (open, high, low, close, volume) to the symbol's previous session (frozen feed)",
                _in_set("_bar_repeated", (False,)),
                explain=lambda f, p: str(f["_bar_repeated_note"].iloc[p]),
            ),
            _date_in_partition(),
        ],
        "option_quotes": [
            Rule("bid_non_negative", "bid >= 0", _non_negative("bid")),
            Rule("bid_le_ask", "bid <= ask (no crossed quotes)", _a_ge_b(("ask", "bid"))),
            Rule("strike_positive", "strike > 0", _positive("strike")),
            Rule("underlying_price_positive", "underlying_price > 0", _positive("underlying_price")),
            Rule("multiplier_positive", "multiplier > 0", _positive("multiplier")),
            Rule("expiry_after_as_of", "expiry after the snapshot date", _in_set("_expiry_after", (True,))),
            Rule("option_type_valid", "option_type in {C, P}", _in_set("option_type", ("C", "P"))),
            Rule(
                "exercise_style_valid",
                "exercise_style in {american, european}",
                _in_set("exercise_style", ("american", "european")),
            ),
            Rule(
                "volume_non_negative",
                "volume >= 0 and open_interest >= 0",
                _non_negative("volume", "open_interest"),
            ),
            Rule(
                "snapshot_fresh",
                f"snapshot as_of within {max_age:g} minutes before the reference time",
                _between("_snapshot_age_minutes", 0.0, max_age),
            ),
            Rule(
                "underlying_matches_close",
                f"|ln(underlying_price / close)| <= {tight:g} against the session's close for a snapshot in its "
                f"last {window:g} minutes, else <= {max_ret:g} against the latest stored close (the session's or "
                "the previous session's)",
                _between("_underlying_close_excess", None, 1.0),
                explain=_explain_underlying,
            ),
            _date_in_partition(),
        ],
        "rates_curve": [
            Rule("tenor_positive", "tenor_days > 0", _positive("tenor_days")),
            Rule("rate_plausible", "-0.05 <= zero_rate <= 0.30", _between("zero_rate", -0.05, 0.30)),
            _date_in_partition(),
        ],
        "dividend_yields": [
            Rule("yield_plausible", "0 <= dividend_yield <= 0.25", _between("dividend_yield", 0.0, 0.25)),
            _date_in_partition(),
        ],
        "event_calendar": [
            Rule("event_type_valid", f"event_type in {set(EVENT_TYPES)}", _in_set("event_type", EVENT_TYPES)),
            Rule("event_time_utc", "event_time parseable and given in UTC", _in_set("_event_time_utc", (True,))),
            Rule(
                "future_events_kept",
                "every stored event from the partition's session on is in the input; a source removes one "
                "with a row whose notes say 'cancelled'",
                _none,
                table_level=True,
                table_check=_future_events_kept,
            ),
        ],
        "positions": [
            Rule("quantity_finite", "quantity finite and non-zero", _in_set("_quantity_ok", (True,))),
            Rule("multiplier_positive", "multiplier > 0", _positive("multiplier")),
            Rule(
                "instrument_type_valid",
                f"instrument_type in {set(INSTRUMENT_TYPES)}",
                _in_set("instrument_type", INSTRUMENT_TYPES),
            ),
            Rule(
                "option_terms_present",
                "options have expiry, strike > 0, option_type C/P and exercise_style",
                _in_set("_option_terms_ok", (True,)),
            ),
            Rule(
                "symbols_priced",
                "every position's symbol has a bar in market_prices of its session (before the close: of the "
                "previous session)",
                _in_set("_symbol_priced", (True,)),
                explain=_explain_unpriced,
                table_check=_prices_stored,
            ),
            _date_in_partition(),
        ],
        "signals": [
            Rule("direction_valid", "direction in {-1, 1}", _in_set("direction", (-1, 1))),
            Rule(
                "expected_return_plausible",
                "-1 < expected_return <= 10 and its sign agrees with direction (or it is 0)",
                _in_set("_expected_return_ok", (True,)),
            ),
            Rule("horizon_positive", "1 <= horizon_days <= 252", _between("horizon_days", 1, 252)),
            Rule("confidence_in_unit_interval", "0 <= confidence <= 1", _between("confidence", 0.0, 1.0)),
            _date_in_partition(),
        ],
        "smile_history": [
            Rule("tenor_positive", "1 <= tenor_days <= 3650", _between("tenor_days", 1, 3650)),
            Rule("atm_vol_plausible", "0.01 <= atm_vol <= 5", _between("atm_vol", 0.01, 5.0)),
            Rule("put_25d_vol_plausible", "0.01 <= put_25d_vol <= 5", _between("put_25d_vol", 0.01, 5.0)),
            Rule("call_25d_vol_plausible", "0.01 <= call_25d_vol <= 5", _between("call_25d_vol", 0.01, 5.0)),
            _date_in_partition(),
        ],
    }
    return rules[name]


def rule_names(name: str, settings: QualitySettings | None = None) -> list[str]:
    """Every rule of a table's suite, common ones first (used to declare the Dagster checks)."""
    return list(COMMON_RULES) + [r.name for r in table_rules(name, settings or QualitySettings())]


def rule_descriptions(name: str, settings: QualitySettings | None = None) -> dict[str, str]:
    s = settings or QualitySettings()
    lo, hi = s.row_count_ranges[name]
    t = table(name)
    per_session = "per session" if "as_of_date" in t.data_column_names else "in the table"
    optional = ", ".join(sorted(HEADER_OPTIONAL))
    common = {
        "readable": "every file decodes as UTF-8 and parses (CSV: one value per header column on every row, balanced "
        "quotes; Parquet: a valid file) and is named as the folder layout says",
        "schema": f"each file's header names exactly the contract columns ({optional} may be left out)",
        "types": "every value parses as the contract type (numbers finite; integers whole, within 64 bits)",
        "identifiers_valid": f"symbols {SYMBOL_RULE}; books, strategies, position and event ids {ID_RULE}; no text "
        f"with control or bidirectional-format characters, none longer than {MAX_TEXT_LENGTH}",
        "not_null_keys": f"key and required columns not null: {list(_required(t))}",
        "unique_keys": f"key {list(t.key)} unique",
        "row_count_in_range": f"row count between {lo} and {hi} {per_session}",
    }
    return common | {r.name: r.description for r in table_rules(name, s)}


def _required(t: Table) -> tuple[str, ...]:
    return tuple(c.name for c in t.columns if not c.nullable)


# ---------------------------------------------------------------------- derived columns and table checks
def _derive(name: str, typed: pd.DataFrame, ctx: ValidationContext, settings: QualitySettings) -> pd.DataFrame:
    out = typed.copy()
    sessions = set(ctx.sessions)
    if "as_of_date" in out.columns:
        out["_in_partition"] = _map_unique(
            out["as_of_date"], lambda d: d is not None and (not sessions or d in sessions)
        ).astype(bool)
    if name == "market_prices":
        out["_abs_unflagged_log_return"] = _abs_unflagged_returns(out, ctx.previous_close)
        repeated, notes = _repeated_bars(out, ctx.previous_bars)
        out["_bar_repeated"] = repeated
        out["_bar_repeated_note"] = notes
    if name == "option_quotes":
        expiry = _per_distinct(out["expiry"], pd.to_datetime)
        as_of_date = _per_distinct(out["as_of_date"], pd.to_datetime)
        out["_expiry_after"] = (expiry > as_of_date).fillna(False).astype(bool)
        ref: Any = ctx.reference_time if ctx.reference_time is not None else pd.Timestamp.now(tz="UTC")
        if isinstance(ref, Mapping):
            times = ref
            ref = _per_distinct(
                out["as_of_date"], lambda days: pd.to_datetime(days.map(lambda d: times.get(d)), utc=True)
            )
        age = ((ref - out["as_of"]).dt.total_seconds() / 60.0).to_numpy(float)
        # a row without a reference (session outside the partition) or without as_of is not fresh
        out["_snapshot_age_minutes"] = np.where(np.isnan(age), np.inf, age)
        out = pd.concat([out, _underlying_vs_close(out, ctx.reference_closes, settings)], axis=1)
    if name == "event_calendar":
        raw_utc = out.get("_raw_event_time_utc")
        parsed = out["event_time"].notna()
        out["_event_time_utc"] = parsed & (raw_utc if raw_utc is not None else True)
    if name == "positions":
        q = pd.to_numeric(out["quantity"], errors="coerce").to_numpy(float)
        out["_quantity_ok"] = np.isfinite(q) & (q != 0)
        is_option = out["instrument_type"] == "option"
        strike = pd.to_numeric(out["strike"], errors="coerce")
        terms = (
            out["expiry"].notna()
            & (strike > 0).fillna(False)
            & out["option_type"].isin(["C", "P"])
            & out["exercise_style"].isin(["american", "european"])
        )
        out["_option_terms_ok"] = (~is_option | terms).astype(bool)
        out = pd.concat([out, _symbols_priced(out, ctx.priced_symbols)], axis=1)
    if name == "signals":
        er = pd.to_numeric(out["expected_return"], errors="coerce").to_numpy(float)
        direction = pd.to_numeric(out["direction"], errors="coerce").to_numpy(float)
        with np.errstate(invalid="ignore"):
            out["_expected_return_ok"] = (er > -1.0) & (er <= 10.0) & ((er == 0.0) | (np.sign(er) == direction))
    return out


def _per_distinct(s: pd.Series, convert: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``convert(s)`` for an element-wise ``convert``, applied to the distinct values of ``s`` (and a missing
    value) only and taken back per row; ``convert(s)`` itself where the values are not hashable."""
    try:
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
    except TypeError:
        return convert(s)
    converted = convert(pd.Series([*uniques, None], dtype=object))
    return pd.Series(converted.array.take(codes), index=s.index)


def _abs_unflagged_returns(frame: pd.DataFrame, previous_close: Mapping[str, float]) -> pd.Series:
    """|ln(close_t / close_{t-1})| per symbol, 0 where the day carries an event flag or has no history."""
    order = frame.sort_values(["symbol", "as_of_date"], kind="stable")
    prev = order.groupby("symbol", sort=False)["close"].shift(1)
    first = prev.isna()
    prev = prev.where(~first, order["symbol"].map(lambda s: previous_close.get(s, np.nan)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.abs(np.log(order["close"].to_numpy(float) / prev.to_numpy(float)))
    flagged = order["event_flag"].map(lambda v: not _missing(v) and str(v).strip() != "").to_numpy(bool)
    ret = np.where(flagged | ~np.isfinite(prev.to_numpy(float)), 0.0, ret)
    # non-positive or missing closes fail other rules; here they must not also look like a spike
    ret = np.where(np.isfinite(ret), ret, 0.0)
    return pd.Series(ret, index=order.index).reindex(frame.index)


_BAR = ("open", "high", "low", "close", "volume")


def _repeated_bars(frame: pd.DataFrame, previous_bars: pd.DataFrame | None) -> tuple[np.ndarray, list[str]]:
    """Per row: is the bar identical to the same symbol's bar of the session before (in the frame, or stored)?"""
    cols = ["symbol", "as_of_date", *_BAR]
    prev_stored = previous_bars[cols] if previous_bars is not None and len(previous_bars) else None
    this = frame[cols].copy()
    this["_pos"] = np.arange(len(frame))
    both = pd.concat([prev_stored.assign(_pos=-1), this], ignore_index=True) if prev_stored is not None else this
    both = both[both["symbol"].notna() & both["as_of_date"].notna()]
    both = both.sort_values(["symbol", "as_of_date", "_pos"], kind="stable")
    shifted = both.groupby("symbol", sort=False)[["as_of_date", *_BAR]].shift(1)
    same = np.ones(len(both), dtype=bool)
    for c in _BAR:
        a = pd.to_numeric(both[c], errors="coerce").to_numpy(float)
        b = pd.to_numeric(shifted[c], errors="coerce").to_numpy(float)
        same &= np.isfinite(a) & np.isfinite(b) & (a == b)
    same &= (shifted["as_of_date"] != both["as_of_date"]).to_numpy(bool)  # duplicates are unique_keys' business
    repeated = np.zeros(len(frame), dtype=bool)
    notes = [""] * len(frame)
    for pos, prev_day, row in zip(
        both["_pos"].to_numpy()[same],
        shifted["as_of_date"].to_numpy()[same],
        both[same].itertuples(index=False),
        strict=True,
    ):
        if pos < 0:
            continue
        repeated[pos] = True
        notes[pos] = (
            f"{row.symbol} bar of {row.as_of_date} identical to {prev_day} "
            f"(open {row.open:g}, high {row.high:g}, low {row.low:g}, close {row.close:g}, volume {row.volume:g})"
        )
    return repeated, notes


def _underlying_vs_close(
    frame: pd.DataFrame, references: Mapping[dt.date, CloseReference | None] | None, settings: QualitySettings
) -> pd.DataFrame:
    """Per quote: |ln(underlying_price / reference close)| as a multiple of its tolerance (0 = not compared),
    with the reference close, its session, the tolerance and the distance (for the failure message)."""
    refs = [
        (day, sym, float(close), ref.session, ref.same_session, ref.close_time)
        for day, ref in (references or {}).items()
        if ref is not None
        for sym, close in ref.closes.items()
    ]
    names = ["as_of_date", "underlying", "_uc_close", "_uc_session", "_uc_same", "_uc_close_time"]
    table_ = pd.DataFrame(refs, columns=names)
    table_["_uc_close_time"] = pd.to_datetime(table_["_uc_close_time"], utc=True)
    merged = frame[["as_of_date", "underlying"]].merge(table_, how="left", on=["as_of_date", "underlying"])
    price = pd.to_numeric(frame["underlying_price"], errors="coerce").to_numpy(float)
    close = pd.to_numeric(merged["_uc_close"], errors="coerce").to_numpy(float)
    window = pd.Timedelta(minutes=settings.underlying_close_window_minutes)
    in_window = (frame["as_of"].reset_index(drop=True) >= merged["_uc_close_time"] - window).fillna(False)
    end_of_day = merged["_uc_same"].fillna(False).astype(bool).to_numpy() & in_window.to_numpy(bool)
    tol = np.where(end_of_day, settings.underlying_close_tolerance, settings.max_abs_daily_log_return)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.abs(np.log(price / close))
    compared = np.isfinite(distance) & (price > 0) & (close > 0)
    return pd.DataFrame(
        {
            "_underlying_close_excess": np.where(compared, distance / tol, 0.0),
            "_uc_close": close,
            "_uc_session": merged["_uc_session"].to_numpy(object),
            "_uc_same": merged["_uc_same"].to_numpy(object),
            "_uc_end_of_day": end_of_day,
            "_uc_tolerance": tol,
            "_uc_distance": distance,
        },
        index=frame.index,
    )


def _explain_underlying(f: pd.DataFrame, p: int) -> str:
    r = f.iloc[p]
    which = "close" if r["_uc_same"] else "previous close"
    kind = "end-of-day snapshot" if r["_uc_end_of_day"] else "a day's move"
    return (
        f"{r['underlying']} underlying_price {float(r['underlying_price']):g} vs {which} {r['_uc_close']:g} of "
        f"{r['_uc_session']} (|ln| {r['_uc_distance']:.3f} > {r['_uc_tolerance']:g}, {kind})"
    )


def _symbols_priced(frame: pd.DataFrame, references: Mapping[dt.date, PriceReference | None] | None) -> pd.DataFrame:
    """Per position: does its symbol have a bar on the reference session (True where no reference applies)?"""
    refs = references or {}
    pairs = pd.DataFrame(
        [(day, sym) for day, ref in refs.items() if ref is not None for sym in ref.symbols],
        columns=["as_of_date", "symbol"],
    ).assign(_hit=True)
    merged = frame[["as_of_date", "symbol"]].merge(pairs, how="left", on=["as_of_date", "symbol"])
    checked = _map_unique(frame["as_of_date"], lambda d: refs.get(d) is not None).to_numpy(bool)
    hit = merged["_hit"].fillna(False).astype(bool).to_numpy()
    session = _map_unique(frame["as_of_date"], lambda d: refs[d].session if refs.get(d) is not None else None)
    return pd.DataFrame(
        {"_symbol_priced": ~checked | hit, "_symbol_ref_session": session.to_numpy(object)}, index=frame.index
    )


def _explain_unpriced(f: pd.DataFrame, p: int) -> str:
    return f"{f['symbol'].iloc[p]} has no bar in market_prices of {f['_symbol_ref_session'].iloc[p]}"


def _prices_stored(frame: pd.DataFrame, ctx: ValidationContext, raw: pd.DataFrame) -> list[Entry]:
    """Positions of a session for which neither it nor the session before has stored bars cannot be checked."""
    if ctx.priced_symbols is None:
        return []
    entries = []
    for day in sorted({d for d in frame["as_of_date"] if d is not None and d in ctx.priced_symbols}):
        if ctx.priced_symbols[day] is None:
            files = _session_files(frame, day)
            entries.append(
                Entry(
                    files,
                    f"session {day}: no market_prices stored for it or the session before, so the held symbols "
                    "cannot be checked (load market_prices first)",
                    {"session": str(day)},
                )
            )
    return entries


def _future_events_kept(frame: pd.DataFrame, ctx: ValidationContext, raw: pd.DataFrame) -> list[Entry]:
    """Stored events from the partition's first session on (or now, if earlier) that the input leaves out."""
    stored = ctx.stored_events
    if stored is None or not len(stored):
        return []
    now = ctx.now if ctx.now is not None else pd.Timestamp.now(tz="UTC")
    since = now
    if ctx.sessions:
        since = min(now, pd.Timestamp(min(ctx.sessions)).tz_localize("UTC"))
    times = pd.to_datetime(stored["event_time"], utc=True)
    notes = stored["notes"].map(lambda v: "" if _missing(v) else str(v))
    live = stored[(times >= since).to_numpy(bool) & ~notes.str.contains(_CANCELLED).to_numpy(bool)]
    given = {v for v in frame["event_id"] if v is not None}
    gone = live[~live["event_id"].isin(given)].sort_values(["event_time", "event_id"])
    if not len(gone):
        return []
    listed = [
        f"{r.event_id} ({r.event_type}{' ' + r.symbol if not _missing(r.symbol) else ''} "
        f"{pd.Timestamp(r.event_time).tz_convert('UTC').isoformat()})"
        for r in gone.itertuples(index=False)
    ]
    shown = ", ".join(listed[:20]) + (f" and {len(listed) - 20} more" if len(listed) > 20 else "")
    return [
        Entry(
            _files(raw),
            f"{len(gone)} stored event(s) from {since.date()} on missing from the input and not marked cancelled: "
            f"{shown}",
            {"missing_events": list(gone["event_id"]), "since": since.isoformat()},
        )
    ]


def _session_files(frame: pd.DataFrame, day: dt.date) -> str | None:
    if "source_file" not in frame.columns or "as_of_date" not in frame.columns:
        return None
    files = sorted(
        {str(f) for f, d in zip(frame["source_file"], frame["as_of_date"], strict=True) if d == day and not _missing(f)}
    )
    return ", ".join(files) or None


# ---------------------------------------------------------------------- running the suite
_GX_STATE: dict[str, Any] = {}


def _gx_batch_definition(name: str) -> Any:
    """An ephemeral GX context with one pandas dataframe asset per table (built once per process)."""
    if "context" not in _GX_STATE:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _GX_STATE["context"] = context
        _GX_STATE["source"] = context.data_sources.add_pandas("risk_pipeline_raw")
        _GX_STATE["batches"] = {}
    batches = _GX_STATE["batches"]
    if name not in batches:
        asset = _GX_STATE["source"].add_dataframe_asset(name)
        batches[name] = asset.add_batch_definition_whole_dataframe(f"{name}_whole")
    return batches[name]


def _run_gx(name: str, frame: pd.DataFrame, rules: list[Rule]) -> dict[str, tuple[set[int], list[str]]]:
    """Failing row positions and observations per rule name, from one GX suite validation.

    A frame on which every expectation certainly passes (``Expectation.certainly_passes``: the comparisons GX
    makes, on columns without missing values) is not handed to GX: nothing fails, as GX would report. Any other
    frame is validated by GX whole, so every failure and observation is GX's own.
    """
    out: dict[str, tuple[set[int], list[str]]] = {r.name: (set(), []) for r in rules}
    expectations = [(rule.name, e) for rule in rules for e in rule.expectations()]
    if all(e.certainly_passes(frame) for _, e in expectations):
        # GX would find no failing row (or has nothing to validate): its outcome, without importing GX (1.6-2.4 CPU
        # s once per process) or its fixed cost per validation (tenths of a second)
        return out
    return _gx_failures(name, frame, expectations, out)


def _gx_failures(
    name: str,
    frame: pd.DataFrame,
    expectations: list[tuple[str, Expectation]],
    out: dict[str, tuple[set[int], list[str]]],
) -> dict[str, tuple[set[int], list[str]]]:
    """``out`` (empty per rule name) filled with the failing row positions and observations of one GX validation
    of the (rule name, expectation) pairs."""
    import great_expectations as gx

    batch_definition = _gx_batch_definition(name)
    suite = gx.ExpectationSuite(name=f"{name}_suite_v{SUITE_VERSION}")
    for rule_name, e in expectations:
        exp = e.gx()
        exp.meta = {"rule": rule_name}
        suite.add_expectation(exp)
    # only the columns the expectations read (``column``, ``column_A``, ``column_B``; every column for any other
    # kind): GX hashes the whole frame it is given; the rows keep their positions
    named = [{getattr(e, f, None) for f in ("column", "column_A", "column_B")} - {None} for e in suite.expectations]
    used = set().union(*named)
    columns = [c for c in frame.columns if c in used] if all(named) else list(frame.columns)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame[columns].reset_index(drop=True)})
    # pass/fail first (about half the cost: no unexpected-row lists); only a suite with a failure is run again for
    # the failing rows and observations, so every outcome is that of the complete run
    result = batch.validate(suite, result_format={"result_format": "BOOLEAN_ONLY"})
    if not all(er.success for er in result.results):
        result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    for er in result.results:
        rule = (er.expectation_config.meta or {}).get("rule")
        if rule is None or er.success:
            continue
        rows, notes = out[rule]
        res = er.result or {}
        rows.update(int(i) for i in res.get("unexpected_index_list") or [])
        if er.exception_info and er.exception_info.get("raised_exception"):
            notes.append(f"{er.expectation_config.type}: {er.exception_info.get('exception_message')}")
        elif "observed_value" in res:
            notes.append(f"observed {res['observed_value']}")
        elif not res.get("unexpected_index_list"):
            notes.append(f"{er.expectation_config.type} failed")
    return out


def _header_problems(body: pd.DataFrame, t: Table) -> list[tuple[np.ndarray, str]]:
    """(row positions, problem) per file whose header breaks the contract, and for rows without a header.

    A file's header is the ``source_columns`` of its rows (JSON list); rows without one (generated
    data, frames built in code) are judged by the frame's own columns.
    """
    contract = set(t.data_column_names)
    lineage = set(LINEAGE)
    problems: list[tuple[np.ndarray, str]] = []
    headers = body["source_columns"] if "source_columns" in body.columns else pd.Series([None] * len(body))
    has_header = headers.notna().to_numpy(bool)
    attributed: set[str] = set()
    for header_json, index in body.groupby(headers.where(has_header, None), sort=True, dropna=True).groups.items():
        header = [str(c) for c in json.loads(str(header_json))]
        attributed |= set(header)
        unknown = [c for c in header if c not in contract and c not in lineage]
        missing = [c for c in t.data_column_names if c not in header and c not in HEADER_OPTIONAL]
        if unknown or missing:
            positions = np.sort(body.index.get_indexer(index))
            files = sorted({str(f) for f in body["source_file"].iloc[positions] if not _missing(f)}) or ["source"]
            problems.append((positions, f"{', '.join(files)}: {_describe_header(unknown, missing)}"))
    bare = np.flatnonzero(~has_header)
    if len(bare):
        columns = [str(c) for c in body.columns if not str(c).startswith("_")]
        unknown = [c for c in columns if c not in contract and c not in lineage and c not in attributed]
        missing = [c for c in t.data_column_names if c not in body.columns]
        if unknown or missing:
            problems.append((bare, _describe_header(unknown, missing)))
    return problems


def _describe_header(unknown: list[str], missing: list[str]) -> str:
    import difflib

    parts = []
    if unknown:
        hints = []
        for c in unknown:
            close = difflib.get_close_matches(c, missing, n=1, cutoff=0.6)
            if close:
                hints.append(f"'{c}' looks like '{close[0]}'")
        parts.append(f"unknown columns {unknown}" + (f" ({'; '.join(hints)})" if hints else ""))
    if missing:
        parts.append(f"missing columns {missing}")
    return "; ".join(parts)


def combine_reports(reports: list[ValidationReport]) -> ValidationReport:
    """One report for the frames of several reports of the same table and partition, validated apart (blocks of
    sessions), as the rows of their frames concatenated in order: each rule's failing rows, entries and
    observations of every report, so its message and quarantine hold every failure once."""
    first = reports[0]
    raw = pd.concat([r.raw for r in reports], ignore_index=True) if len(reports) > 1 else first.raw
    raw.attrs = dict(first.raw.attrs)
    raw.attrs["source_files"] = list(dict.fromkeys(f for r in reports for f in r.raw.attrs.get("source_files", [])))
    offsets = np.cumsum([0] + [len(r.raw) for r in reports[:-1]])
    merged: dict[str, RuleResult] = {}
    for report, offset in zip(reports, offsets, strict=True):
        for r in report.results:
            shifted = replace(
                r,
                failing_positions=tuple(int(p + offset) for p in r.failing_positions),
                row_reasons={int(p + offset): why for p, why in r.row_reasons.items()},
            )
            seen = merged.get(r.rule)
            if seen is None:
                merged[r.rule] = shifted
                continue
            observed = [o for o in dict.fromkeys((seen.observed, shifted.observed)) if o]
            merged[r.rule] = replace(
                seen,
                passed=seen.passed and shifted.passed,
                failing_positions=seen.failing_positions + shifted.failing_positions,
                observed="; ".join(observed),
                entries=seen.entries + shifted.entries,
                row_reasons={**seen.row_reasons, **shifted.row_reasons},
            )
    typed = pd.concat([r.typed for r in reports], ignore_index=True) if len(reports) > 1 else first.typed
    missing = tuple(dict.fromkeys(s for r in reports for s in r.missing_sessions))
    return ValidationReport(first.table, first.partition_key, raw, typed, list(merged.values()), missing)


def validate(
    name: str,
    raw: pd.DataFrame,
    ctx: ValidationContext,
    settings: QualitySettings | None = None,
) -> ValidationReport:
    """Run the table's whole suite on a source frame; see the module docstring."""
    settings = settings or QualitySettings()
    t = table(name)
    attrs = dict(raw.attrs)
    raw = raw.reset_index(drop=True)
    raw.attrs = attrs
    descriptions = rule_descriptions(name, settings)
    results: list[RuleResult] = []

    # 1. readable: rows the source could not read
    errors = (
        raw["source_error"].map(lambda v: not _missing(v)).to_numpy(bool)
        if "source_error" in raw.columns
        else np.zeros(len(raw), dtype=bool)
    )
    error_pos = tuple(int(p) for p in np.flatnonzero(errors))
    reasons = {p: str(raw["source_error"].iloc[p]) for p in error_pos}
    results.append(
        RuleResult(
            "readable",
            descriptions["readable"],
            not error_pos,
            error_pos,
            "; ".join(list(dict.fromkeys(reasons.values()))[:3]),
            row_reasons=reasons,
        )
    )
    good = np.flatnonzero(~errors)
    body = raw.iloc[good].drop(columns=["source_error"], errors="ignore").reset_index(drop=True)

    def to_raw(r: RuleResult) -> RuleResult:
        """Positions of ``body`` as positions of ``raw``."""
        return replace(
            r,
            failing_positions=tuple(int(good[p]) for p in r.failing_positions),
            row_reasons={int(good[p]): why for p, why in r.row_reasons.items()},
        )

    # 2. schema: every file's header against the contract
    problems = _header_problems(body, t)
    if problems:
        positions = sorted({int(p) for pos, _ in problems for p in pos})
        row_reasons = {int(p): why for pos, why in problems for p in pos}
        observed = "; ".join(why for _, why in problems[:3])
        results.append(
            to_raw(
                RuleResult(
                    "schema", descriptions["schema"], False, tuple(positions), observed, True, row_reasons=row_reasons
                )
            )
        )
        # the later rules cannot be evaluated on rows whose columns are not the contract's
        return ValidationReport(name, ctx.partition_key, raw, raw.iloc[:0], results)
    results.append(RuleResult("schema", descriptions["schema"], True))
    for c in t.data_column_names:
        if c not in body.columns:  # only when there are no rows, or `source` left out of a header
            body[c] = None

    # 3. types and text
    typed, bad_types = coerce_types(body, t)
    if name == "event_calendar":
        typed["_raw_event_time_utc"] = body["event_time"].map(_given_in_utc).to_numpy(bool)
    results.append(
        to_raw(
            RuleResult(
                "types",
                descriptions["types"],
                not bad_types,
                tuple(sorted(bad_types)),
                "; ".join(f"{why}" for p, whys in sorted(bad_types.items())[:3] for why in whys[:1]),
                row_reasons={p: "; ".join(whys) for p, whys in bad_types.items()},
            )
        )
    )
    text = _text_problems(typed, t)
    results.append(
        to_raw(
            RuleResult(
                "identifiers_valid",
                descriptions["identifiers_valid"],
                not text,
                tuple(sorted(text)),
                "; ".join(whys[0] for _, whys in sorted(text.items())[:3]),
                row_reasons={p: "; ".join(whys) for p, whys in text.items()},
            )
        )
    )
    required = list(_required(t))
    null_rows = typed[required].isna().any(axis=1).to_numpy(bool, copy=True)
    # a value that failed to parse is a types failure, not also a null failure
    for p, whys in bad_types.items():
        cols = {w.split(" ", 1)[0] for w in whys}
        if not typed.loc[p, [c for c in required if c not in cols]].isna().any():
            null_rows[p] = False
    results.append(
        to_raw(
            RuleResult(
                "not_null_keys",
                descriptions["not_null_keys"],
                not null_rows.any(),
                tuple(int(p) for p in np.flatnonzero(null_rows)),
            )
        )
    )
    key = list(t.key)
    dup = duplicated_keys(typed, key) & ~typed[key].isna().any(axis=1).to_numpy(bool)
    results.append(
        to_raw(
            RuleResult(
                "unique_keys", descriptions["unique_keys"], not dup.any(), tuple(int(p) for p in np.flatnonzero(dup))
            )
        )
    )
    row_count, missing_sessions = _row_count(name, t, typed, raw, ctx, settings, descriptions["row_count_in_range"])
    results.append(row_count)

    # 4. the table's own rules
    rules = table_rules(name, settings)
    n = len(typed)
    if n:
        derived = _derive(name, typed, ctx, settings)
        failures = _run_gx(name, derived, rules)
        for rule in rules:
            rows, notes = failures[rule.name]
            entries = tuple(rule.table_check(derived, ctx, raw)) if rule.table_check else ()
            row_reasons = {p: rule.explain(derived, p) for p in rows} if rule.explain else {}
            observed = "; ".join(
                [e.reason for e in entries][:1]
                + list(dict.fromkeys(row_reasons[p] for p in sorted(row_reasons)))[:3]
                + notes
            )
            results.append(
                to_raw(
                    RuleResult(
                        rule.name,
                        rule.description,
                        not rows and not notes and not entries,
                        tuple(sorted(rows)),
                        observed,
                        rule.table_level,
                        entries,
                        row_reasons,
                    )
                )
            )
    else:
        results += [RuleResult(r.name, r.description, True, (), "no rows") for r in rules]
    typed_out = typed[[*t.data_column_names, *[c for c in ("source_file", "source_row") if c in typed.columns]]]
    return ValidationReport(name, ctx.partition_key, raw, typed_out, results, missing_sessions)


def _row_count(
    name: str,
    t: Table,
    typed: pd.DataFrame,
    raw: pd.DataFrame,
    ctx: ValidationContext,
    settings: QualitySettings,
    description: str,
) -> tuple[RuleResult, tuple[dt.date, ...]]:
    """Row count per session (whole table when unpartitioned by session); applies the missing-session policy."""
    lo, hi = settings.row_count_ranges[name]
    if not ctx.sessions or "as_of_date" not in t.data_column_names:
        n = len(typed)
        ok = lo <= n <= hi
        entries = () if ok else (Entry(_files(raw), f"{n} rows", {"rows": n}),)
        return RuleResult("row_count_in_range", description, ok, (), f"{n} rows", True, entries), ()
    counts = _value_counts(typed["as_of_date"])
    sessions = sorted(set(ctx.sessions))
    missing = [s for s in sessions if counts.get(s, 0) == 0]
    keep = settings.missing_session_policy == "keep" and len(missing) < len(sessions)
    unreadable = _unreadable_sessions(raw, sessions)
    expected = raw.attrs.get("expected_files", {})
    entries = []
    for s in sessions:
        k = counts.get(s, 0)
        if lo <= k <= hi or (k == 0 and (keep or s in unreadable)):
            continue
        files = _session_files(typed, s) or _named_files(raw.attrs.get("source_files", []), s)
        if k == 0 and not files and expected.get(s.isoformat()):
            files, note = expected[s.isoformat()], " (no such file)"
        else:
            note = ""
        entries.append(Entry(files, f"session {s}: {k} rows{note}", {"session": str(s), "rows": k}))
    kept = tuple(s for s in missing if keep)
    total = f"{len(typed)} rows in {len(sessions)} session(s)"
    observed = "; ".join(e.reason for e in entries[:3]) or total
    if kept:
        observed += f"; without input, kept as stored: {', '.join(str(s) for s in kept)}"
    return RuleResult("row_count_in_range", description, not entries, (), observed, True, tuple(entries)), kept


def _value_counts(column: pd.Series) -> dict[Any, int]:
    """Rows per present value (missing values not counted), each distinct value hashed once in pandas instead of
    a Python counter over every row (1.1 million option quotes a snapshot at 3,000 names)."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    return dict(zip(np.asarray(uniques, dtype=object).tolist(), counts.tolist(), strict=True))


def _named_files(files: Sequence[str], day: dt.date) -> str | None:
    named = [f for f in dict.fromkeys(files) if day.isoformat() in f]
    return ", ".join(named) or None


def _unreadable_sessions(raw: pd.DataFrame, sessions: Sequence[dt.date]) -> set[dt.date]:
    """Sessions one of whose files could not be read (the readable rule reports them; no count failure too)."""
    if "source_error" not in raw.columns:
        return set()
    failed = {str(f) for f, e in zip(raw["source_file"], raw["source_error"], strict=True) if not _missing(e)}
    return {s for s in sessions if any(s.isoformat() in f for f in failed)}


def _given_in_utc(v: Any) -> bool:
    """True when an event time is a tz-aware UTC timestamp or an ISO string ending in Z / +00:00."""
    if _missing(v):
        return False
    if isinstance(v, pd.Timestamp | dt.datetime):
        return v.tzinfo is not None and v.utcoffset() == dt.timedelta(0)
    text = str(v).strip()
    return text.endswith(("Z", "+00:00", "+0000", "UTC")) and _parse_one(text, True) is not None
