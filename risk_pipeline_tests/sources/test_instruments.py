"""Index futures and the inverse ETF (sources/instruments.py): cost of carry and the daily reset, by hand.

The oracles here are independent of the code under test: the XNYS calendar from ``exchange_calendars``,
the zero rate interpolated by hand from the source's own ``rates_curve``, the ETF path compounded in a
plain Python loop over the published index closes.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from pathlib import Path

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.contracts import table
from risk_pipeline.defs.market_data.instruments import typed
from risk_pipeline.sources.folder import FolderSource
from risk_pipeline.sources.instruments import daily_reset_path, quote_around
from risk_pipeline.sources.synthetic import FIRST_SESSION, SyntheticSource

SESSION = dt.date(2026, 11, 20)
XNYS = xcals.get_calendar("XNYS")


@pytest.fixture(scope="module")
def src() -> SyntheticSource:
    return SyntheticSource(seed=7, n_underlyings=3)


@pytest.fixture(scope="module")
def quotes(src: SyntheticSource) -> pd.DataFrame:
    snap = src.snapshot_times(SESSION)[1]  # an intraday snapshot (12:00 New York)
    return src.instrument_quotes(SESSION, snap)


def test_rows_have_the_contract_columns_and_pass_their_own_rules(quotes: pd.DataFrame) -> None:
    assert list(quotes.columns) == [*table("instrument_quotes").data_column_names, "source_file", "source_row"]
    assert set(quotes["instrument_type"]) == {"future", "etf"}
    _, problems = typed(quotes)
    assert (problems == "").all(), problems[problems != ""].tolist()


def test_futures_are_the_next_two_quarterlies_at_the_cost_of_carry_forward_by_hand(
    src: SyntheticSource, quotes: pd.DataFrame
) -> None:
    fut = quotes[quotes["instrument_type"] == "future"].reset_index(drop=True)
    # third Fridays of December 2026 and March 2027, both sessions; Z = December, H = March
    assert fut["expiry"].tolist() == [dt.date(2026, 12, 18), dt.date(2027, 3, 19)]
    assert fut["symbol"].tolist() == ["SYNXZ6", "SYNXH7"]
    as_of = pd.Timestamp(quotes["as_of"].iloc[0])
    spot = float(src.spot_prices(SESSION, as_of.to_pydatetime())["SYNX"])
    curve = src.rates_curve(SESSION, SESSION).sort_values("tenor_days")
    divs = src.dividend_yields(SESSION, SESSION)
    q = float(divs.loc[divs["symbol"] == "SYNX", "dividend_yield"].iloc[0])
    for r in fut.itertuples():
        close = XNYS.session_close(pd.Timestamp(r.expiry))  # UTC close of the expiry session
        t = (close - as_of).total_seconds() / (365 * 86400)
        days = 365 * t
        tenors, zeros = curve["tenor_days"].tolist(), curve["zero_rate"].tolist()
        i = max(k for k in range(len(tenors)) if tenors[k] <= days) if days >= tenors[0] else 0
        if days <= tenors[0]:
            rate = zeros[0]
        elif days >= tenors[-1]:
            rate = zeros[-1]
        else:
            w = (days - tenors[i]) / (tenors[i + 1] - tenors[i])
            rate = zeros[i] + w * (zeros[i + 1] - zeros[i])
        forward = spot * math.exp((rate - q) * t)
        assert r.time_to_expiry_years == pytest.approx(t, rel=1e-12)
        assert r.rate == pytest.approx(rate, rel=1e-12)
        assert r.fair_value == pytest.approx(forward, rel=1e-12)
        assert r.underlying_price == pytest.approx(spot, rel=1e-15)
        # quoted on the 0.25 grid, strictly around fair value, mid = price
        assert r.bid < forward < r.ask and r.ask - r.bid <= 0.75 + 1e-9
        assert (r.bid / 0.25) == pytest.approx(round(r.bid / 0.25)) and r.price == pytest.approx((r.bid + r.ask) / 2)
        assert r.multiplier == 50.0 and r.leverage == 1.0


def test_inverse_etf_follows_the_daily_reset_path_by_hand(src: SyntheticSource, quotes: pd.DataFrame) -> None:
    etf = quotes[quotes["instrument_type"] == "etf"].iloc[0]
    assert etf["symbol"] == "SYNXS" and etf["leverage"] == -1.0
    bars = src.market_prices(FIRST_SESSION, SESSION)
    closes = bars[(bars["symbol"] == "SYNX") & (bars["as_of_date"] < SESSION)]["close"].tolist()
    price = 100.0  # launched at 100 at the close of FIRST_SESSION
    for before, after in itertools.pairwise(closes):
        price *= 1.0 - (after / before - 1.0)
    assert etf["previous_close"] == pytest.approx(price, rel=1e-10)
    assert etf["underlying_previous_close"] == pytest.approx(closes[-1], rel=1e-15)
    intraday = price * (1.0 - (etf["underlying_price"] / closes[-1] - 1.0))
    assert etf["fair_value"] == pytest.approx(intraday, rel=1e-10)
    assert etf["bid"] < intraday < etf["ask"]


def test_daily_reset_path_on_a_three_day_example() -> None:
    # +10 % then -10 %: the index ends at 99, the -1x ETF at 100 x 0.9 x 1.1 = 99 (volatility drag both ways)
    assert daily_reset_path([100.0, 110.0, 99.0], 100.0) == pytest.approx([100.0, 90.0, 99.0], rel=1e-15)
    bid, ask = quote_around(np.array([53.071]), 0.01)
    assert (bid[0], ask[0]) == pytest.approx((53.06, 53.09))


def test_folder_source_reads_instrument_files_and_has_none_without_them(tmp_path: Path, quotes: pd.DataFrame) -> None:
    src = FolderSource(tmp_path)
    assert src.instrument_quotes(SESSION).empty
    folder = tmp_path / "instrument_quotes" / SESSION.isoformat()
    folder.mkdir(parents=True)
    quotes.drop(columns=["source_file", "source_row"]).to_csv(folder / "170000Z.csv", index=False)
    read = src.instrument_quotes(SESSION)
    assert len(read) == len(quotes) and set(read["source_file"]) == {f"instrument_quotes/{SESSION}/170000Z.csv"}
    frame, problems = typed(read)
    assert (problems == "").all()
    assert frame["fair_value"].to_numpy(float) == pytest.approx(quotes["fair_value"].to_numpy(float), rel=1e-12)
    # a vendor row whose fair value breaks the cost-of-carry identity is named with its rule
    bad = read.copy()
    bad.loc[0, "fair_value"] = str(float(quotes["fair_value"].iloc[0]) * 1.01)
    _, problems = typed(bad)
    assert problems.iloc[0].startswith("cost_of_carry") and (problems.iloc[1:] == "").all()
