"""The arch package's S&P 500 history as market_prices rows."""

from __future__ import annotations

import datetime as dt

import arch.data.sp500
import numpy as np

from risk_pipeline.calendar import sessions
from risk_pipeline.quality import ValidationContext, validate
from risk_pipeline.sources.packaged import PackagedHistorySource


def test_sp500_rows_match_the_shipped_data_and_pass_the_suite() -> None:
    src = PackagedHistorySource("sp500")
    rows = src.market_prices(dt.date(2008, 9, 1), dt.date(2008, 10, 31))
    raw = arch.data.sp500.load().loc["2008-09-01":"2008-10-31"]
    assert len(rows) == len(raw) == len(sessions(dt.date(2008, 9, 1), dt.date(2008, 10, 31))) == 44
    np.testing.assert_array_equal(rows["close"].to_numpy(), raw["Close"].to_numpy())
    assert set(rows["symbol"]) == {"SPX"}
    # 2008-10-13 (+11.0 %) and 2008-10-15 (-9.0 %) are real moves inside the 0.40 log-return bound
    report = validate("market_prices", rows, ValidationContext("2008-09..10", tuple(rows["as_of_date"])))
    assert report.passed, report.message()
    assert rows["source"].iloc[0] == "packaged:arch.data.sp500"
