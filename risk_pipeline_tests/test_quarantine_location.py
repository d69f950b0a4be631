"""A quarantined row of the synthetic source names where it came from, not "file generated"."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.quality import ValidationContext, validate
from risk_pipeline.sources.synthetic import SyntheticSource

DAY = dt.date(2026, 11, 20)


@pytest.fixture(scope="module")
def generated() -> pd.DataFrame:
    """One session of synthetic bars (seed 11)."""
    return SyntheticSource(seed=11, n_underlyings=3).market_prices(DAY, DAY)


def test_synthetic_row_is_located_by_source_table_session_and_key(generated: pd.DataFrame) -> None:
    prices = generated.copy()
    assert prices["source_file"].isna().all()  # generated: no file behind the rows
    bad = 1
    symbol = prices["symbol"].iloc[bad]
    prices.loc[bad, "high"] = prices.loc[bad, "low"] - 1.0  # high below low

    report = validate("market_prices", prices, ValidationContext(DAY.isoformat(), (DAY,)))

    assert not report.passed
    expected = f"synthetic(seed=11):market_prices/{DAY.isoformat()}?symbol={symbol}"
    assert report.source_location(bad) == expected
    assert report.location(bad).startswith(f"file {expected} row ")
    quarantine = report.quarantine_frame("market_prices")
    located = quarantine[quarantine["source_file"] == expected]
    assert not located.empty
    assert "generated" not in " ".join(str(f) for f in quarantine["source_file"])
    row = json.loads(located["row"].iloc[0])
    assert row["symbol"] == symbol and np.isclose(row["high"], row["low"] - 1.0)


def test_file_rows_keep_their_file(generated: pd.DataFrame) -> None:
    prices = generated.copy()
    prices["source_file"] = "data/sample_folder/prices/2026-11-20.csv"
    prices["source_row"] = np.arange(1, len(prices) + 1)
    prices.loc[0, "high"] = prices.loc[0, "low"] - 1.0
    report = validate("market_prices", prices, ValidationContext(DAY.isoformat(), (DAY,)))
    assert report.location(0) == "file data/sample_folder/prices/2026-11-20.csv row 1"
