"""Real daily history shipped inside a Python package: the ``arch`` package's S&P 500 data set.

``arch.data.sp500`` holds daily Open/High/Low/Close/Volume of the S&P 500 index from 1999-01-04 to
2018-12-31 (Yahoo Finance, as shipped by arch). It becomes ``market_prices`` rows for symbol
``SPX``; the source has no option chains, curves, dividends, events or positions, so it is used for
the price layer and for real-data backtests.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from risk_pipeline.contracts import table
from risk_pipeline.sources.base import MarketDataSource

DATASETS = {"sp500": ("SPX", "arch.data.sp500")}


class PackagedHistorySource(MarketDataSource):
    """market_prices from a data set shipped with ``arch`` (default: S&P 500)."""

    name = "packaged"

    def __init__(self, dataset: str = "sp500") -> None:
        if dataset not in DATASETS:
            raise ValueError(f"unknown packaged dataset {dataset!r}; known: {sorted(DATASETS)}")
        self.dataset = dataset
        self.symbol, self.module = DATASETS[dataset]
        self._history: pd.DataFrame | None = None

    def history(self) -> pd.DataFrame:
        """The whole shipped history as market_prices rows."""
        if self._history is None:
            import importlib

            raw = importlib.import_module(self.module).load()
            frame = pd.DataFrame(
                {
                    "as_of_date": [d.date() for d in pd.to_datetime(raw.index)],
                    "symbol": self.symbol,
                    "open": raw["Open"].to_numpy(float),
                    "high": raw["High"].to_numpy(float),
                    "low": raw["Low"].to_numpy(float),
                    "close": raw["Close"].to_numpy(float),
                    "volume": raw["Volume"].to_numpy(float),
                    "event_flag": None,
                    "source": f"packaged:{self.module}",
                    "source_file": self.module,
                    "source_row": range(1, len(raw) + 1),
                }
            )
            self._history = frame
        return self._history

    def symbols(self) -> list[str]:
        return [self.symbol]

    def market_prices(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        h = self.history()
        mask = (h["as_of_date"] >= start) & (h["as_of_date"] <= end)
        return h[mask].reset_index(drop=True)

    def _empty(self, name: str) -> pd.DataFrame:
        frame = pd.DataFrame(columns=[*table(name).data_column_names, "source_file", "source_row"])
        frame.attrs["source_files"] = [f"{self.module} (has no {name})"]
        return frame

    def option_quotes(self, session: dt.date, snapshot_time: dt.datetime | None = None) -> pd.DataFrame:
        return self._empty("option_quotes")

    def snapshot_times(self, session: dt.date) -> list[dt.datetime]:
        return []

    def rates_curve(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        return self._empty("rates_curve")

    def dividend_yields(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        return self._empty("dividend_yields")

    def earnings_events(self) -> pd.DataFrame:
        return self._empty("event_calendar")

    def positions(self, session: dt.date) -> pd.DataFrame:
        return self._empty("positions")
