"""The market data source interface: one class per vendor or format.

A source returns pandas frames whose columns are the contract's data columns (see contracts.py)
plus two lineage columns, ``source_file`` and ``source_row`` (1-based data row in that file, or
NULL for generated data), that data-quality errors and quarantine use to name the offending row.
The warehouse drops the lineage columns on write. A source never repairs or drops rows: what it
read is what it returns, so the checks see it.
"""

from __future__ import annotations

import abc
from datetime import date, datetime

import pandas as pd

LINEAGE_SOURCE_COLUMNS = ("source_file", "source_row")


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

    def symbols(self) -> list[str]:
        """Symbols the source covers (may be empty if unknown before reading)."""
        return []
