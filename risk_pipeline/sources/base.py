"""The market data source interface: one class per vendor or format.

A source returns pandas frames whose columns are the contract's data columns (see contracts.py)
plus two lineage columns, ``source_file`` and ``source_row`` (1-based data row in that file, or
NULL for generated data), that data-quality errors and quarantine use to name the offending row.
The warehouse drops the lineage columns on write. A source never repairs or drops rows: what it
read is what it returns, so the checks see it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from datetime import date, datetime

import numpy as np
import pandas as pd

LINEAGE_SOURCE_COLUMNS = ("source_file", "source_row")
#: option_quotes columns known before a quote is priced (what ``option_quotes_where``'s ``select`` sees).
QUOTE_KEY_COLUMNS = (
    "as_of_date",
    "underlying",
    "expiry",
    "strike",
    "option_type",
    "underlying_price",
    "exercise_style",
)


class SourceError(Exception):
    """A source could not read its input at all (missing file, unreadable format, missing column)."""

    def __init__(self, message: str, *, table: str, file: str | None = None, rule: str = "readable"):
        super().__init__(message)
        self.table = table
        self.file = file
        self.rule = rule


class MarketDataSource(abc.ABC):
    """What every market data source provides. Dates are exchange session dates (XNYS)."""

    #: Short name written to each row's ``source`` column prefix.
    name: str

    @abc.abstractmethod
    def market_prices(self, start: date, end: date) -> pd.DataFrame:
        """Daily bars for every session in [start, end]."""

    @abc.abstractmethod
    def option_quotes(self, session: date, snapshot_time: datetime | None = None) -> pd.DataFrame:
        """The option chain snapshot taken at ``snapshot_time`` (UTC) on ``session``.

        ``None`` means the last snapshot of the session the source has.
        """

    def option_quotes_where(
        self, session: date, select: Callable[[pd.DataFrame], np.ndarray], snapshot_time: datetime | None = None
    ) -> pd.DataFrame:
        """The rows of ``option_quotes(session, snapshot_time)`` that ``select`` keeps, index reset.

        ``select`` receives a frame with at least the ``QUOTE_KEY_COLUMNS`` of every row (no prices) and
        returns a boolean mask over its rows. The default builds the whole chain and filters it; a source
        that prices its own quotes (``SyntheticSource``) prices only the rows kept.
        """
        quotes = self.option_quotes(session, snapshot_time)
        out = quotes[np.asarray(select(quotes), dtype=bool)].reset_index(drop=True)
        out.attrs = quotes.attrs
        return out

    def option_quotes_where_many(
        self, sessions: Sequence[date], select: Callable[[pd.DataFrame], np.ndarray]
    ) -> pd.DataFrame:
        """``option_quotes_where(session, select)`` at the last snapshot of each session, concatenated in the
        given order (index reset; empty chains left out).

        ``select`` may get several sessions' rows in one frame (a source that builds its own quotes groups
        sessions), so it must select per ``as_of_date``. The default asks session by session.
        """
        frames = [f for f in (self.option_quotes_where(s, select) for s in sessions) if not f.empty]
        if not frames:
            return pd.DataFrame()
        out = pd.concat(frames, ignore_index=True)
        out.attrs = frames[0].attrs
        return out

    @abc.abstractmethod
    def snapshot_times(self, session: date) -> list[datetime]:
        """Snapshot times (UTC, ascending) the source holds for ``session``."""

    @abc.abstractmethod
    def rates_curve(self, start: date, end: date) -> pd.DataFrame:
        """Zero curve rows for every session in [start, end]."""

    @abc.abstractmethod
    def dividend_yields(self, start: date, end: date) -> pd.DataFrame:
        """Dividend yield rows for every session in [start, end]."""

    @abc.abstractmethod
    def earnings_events(self) -> pd.DataFrame:
        """Per-symbol events (earnings) in event_calendar columns; macro events come from data/."""

    @abc.abstractmethod
    def positions(self, session: date) -> pd.DataFrame:
        """Positions of every book at the start of ``session``."""

    def signals(self, start: date, end: date) -> pd.DataFrame:
        """Trade signals (the ``signals`` table) for every session in [start, end]; none by default."""
        out = pd.DataFrame()
        out.attrs["source_files"] = [f"{self.name} (no signals)"]
        return out

    def smile_history(self, start: date, end: date) -> pd.DataFrame:
        """Standardized implied-vol grid (the ``smile_history`` table) for every session in [start, end]; none by
        default."""
        out = pd.DataFrame()
        out.attrs["source_files"] = [f"{self.name} (no smile history)"]
        return out

    def instrument_quotes(self, session: date, snapshot_time: datetime | None = None) -> pd.DataFrame:
        """Index futures and inverse-ETF quotes (the ``instrument_quotes`` table) at the snapshot; none by default."""
        out = pd.DataFrame()
        out.attrs["source_files"] = [f"{self.name} (no index futures or ETFs)"]
        return out

    def symbols(self) -> list[str]:
        """Symbols the source covers (may be empty if unknown before reading)."""
        return []
