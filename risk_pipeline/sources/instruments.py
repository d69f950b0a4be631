"""Delta-one hedge instruments on the index: quarterly futures at fair value and a daily-reset -1x ETF.

Derived from what a source already has (no randomness), so any source holding the index's closes, its
price at a snapshot, the zero curve and the index dividend yield can list them (``SyntheticSource``
does; a folder source ships its own ``instrument_quotes`` files instead):

* Futures: the next ``N_FUTURES`` quarterly contracts (third Friday of March, June, September and
  December; the session before when that Friday is a holiday), symbol ``<index><month code><last year
  digit>`` (``SYNXZ6``), ``FUTURE_MULTIPLIER`` per index point. Fair value by cost of carry
  ``F = S exp((r - q) T)`` with ``T = (expiry session close - as_of) / 365 days``, ``r`` the zero rate
  at ``365 T`` days (linear in tenor, flat beyond the ends: ``quant.curves.zero_rate``) and ``q`` the
  index dividend yield, the conventions of the option quotes.
* Inverse ETF ``<index>S``: -1x the index's simple return each session, reset daily, launched at
  ``ETF_LAUNCH_PRICE`` at the close of ``ETF_LAUNCH_SESSION``: ``P_t = P_{t-1} (1 - (C_t / C_{t-1} - 1))``
  on the index closes ``C``; intraday ``P = P_{close, t-1} (1 - (S / C_{t-1} - 1))``. No fee accrues.
* Quotes: ``bid = floor((mid - tick) / tick) tick`` and ``ask = ceil((mid + tick) / tick) tick`` around
  the fair value (futures tick 0.25 index points, ETF 0.01 USD), so ``bid < fair < ask``; ``price`` is
  the quote midpoint.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from risk_pipeline.calendar import expiry_close_utc, sessions
from risk_pipeline.quant.curves import zero_rate

N_FUTURES = 2
FUTURE_MULTIPLIER = 50.0
FUTURE_TICK = 0.25
ETF_TICK = 0.01
ETF_LAUNCH_PRICE = 100.0
ETF_LAUNCH_SESSION = dt.date(2021, 1, 4)
ETF_LEVERAGE = -1.0
MONTH_CODES = {3: "H", 6: "M", 9: "U", 12: "Z"}
QUARTER_MONTHS = (3, 6, 9, 12)


def etf_symbol(index_symbol: str) -> str:
    """The inverse ETF's ticker: the index's with an ``S`` (``SYNX`` -> ``SYNXS``)."""
    return f"{index_symbol}S"


def future_symbol(index_symbol: str, expiry: dt.date) -> str:
    """``<index><month code><last digit of the year>``: ``SYNXZ6`` for December 2026."""
    return f"{index_symbol}{MONTH_CODES[expiry.month]}{expiry.year % 10}"


def quarterly_expiry(year: int, month: int) -> dt.date:
    """Third Friday of the month, or the last XNYS session before it when it is not a session."""
    first = dt.date(year, month, 1)
    friday = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)
    listed = sessions(friday - dt.timedelta(days=7), friday)
    return listed[-1] if listed else friday


def future_expiries(session: dt.date, n: int = N_FUTURES) -> list[dt.date]:
    """The next ``n`` quarterly expiries strictly after ``session`` (a contract expiring today is gone)."""
    out: list[dt.date] = []
    year, month = session.year, session.month
    while len(out) < n:
        if month in QUARTER_MONTHS:
            e = quarterly_expiry(year, month)
            if e > session:
                out.append(e)
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return out


def cost_of_carry_forward(spot: float, rate: float, dividend_yield: float, time_years: float) -> float:
    """``S exp((r - q) T)``: the futures fair value (continuous rates and yield)."""
    return float(spot * np.exp((rate - dividend_yield) * time_years))


def daily_reset_path(index_closes: Sequence[float], launch_price: float, leverage: float = ETF_LEVERAGE) -> np.ndarray:
    """ETF closes on the index closes (first close = launch): ``P_t = P_{t-1} (1 + leverage (C_t / C_{t-1} - 1))``."""
    c = np.asarray(index_closes, dtype=float)
    if c.size == 0:
        return c
    if np.any(~np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("index closes must be finite and positive")
    steps = 1.0 + leverage * (c[1:] / c[:-1] - 1.0)
    return launch_price * np.concatenate([[1.0], np.cumprod(steps)])


def quote_around(fair: np.ndarray, tick: float) -> tuple[np.ndarray, np.ndarray]:
    """Bid and ask one tick or more either side of ``fair`` on the tick grid (bid < fair < ask)."""
    f = np.asarray(fair, dtype=float)
    return np.floor((f - tick) / tick) * tick, np.ceil((f + tick) / tick) * tick


def instrument_quotes_frame(
    *,
    index_symbol: str,
    session: dt.date,
    as_of: pd.Timestamp,
    index_price: float,
    index_closes: pd.Series,
    curve: pd.DataFrame,
    index_dividend_yield: float,
    source: str,
) -> pd.DataFrame:
    """``instrument_quotes`` rows (contract columns) of one snapshot.

    ``index_closes``: the index's closes by session date (ascending), at least from ``ETF_LAUNCH_SESSION``
    to the session before ``session``; ``curve``: that session's ``rates_curve`` rows.
    """
    as_of = pd.Timestamp(as_of).tz_convert("UTC")
    closes = index_closes[(index_closes.index >= ETF_LAUNCH_SESSION) & (index_closes.index < session)]
    expiries = future_expiries(session)
    close_times = expiry_close_utc(pd.Series(expiries, dtype=object))
    t = np.array([(c - as_of).total_seconds() / (365.0 * 86_400.0) for c in close_times])
    tenors, rates = curve["tenor_days"].to_numpy(float), curve["zero_rate"].to_numpy(float)
    r = zero_rate(tenors, rates, t)
    fair = index_price * np.exp((r - index_dividend_yield) * t)
    rows = []
    fb, fa = quote_around(fair, FUTURE_TICK)
    for i, e in enumerate(expiries):
        rows.append(
            {
                "symbol": future_symbol(index_symbol, e),
                "instrument_type": "future",
                "expiry": e,
                "multiplier": FUTURE_MULTIPLIER,
                "leverage": 1.0,
                "bid": fb[i],
                "ask": fa[i],
                "fair_value": fair[i],
                "time_to_expiry_years": t[i],
                "rate": r[i],
                "dividend_yield": index_dividend_yield,
                "previous_close": None,
            }
        )
    if len(closes) and closes.index[0] == ETF_LAUNCH_SESSION:
        path = daily_reset_path(closes.to_numpy(float), ETF_LAUNCH_PRICE)
        prev_etf, prev_index = float(path[-1]), float(closes.iloc[-1])
        etf = prev_etf * (1.0 + ETF_LEVERAGE * (index_price / prev_index - 1.0))
        eb, ea = quote_around(np.array([etf]), ETF_TICK)
        rows.append(
            {
                "symbol": etf_symbol(index_symbol),
                "instrument_type": "etf",
                "expiry": None,
                "multiplier": 1.0,
                "leverage": ETF_LEVERAGE,
                "bid": eb[0],
                "ask": ea[0],
                "fair_value": etf,
                "time_to_expiry_years": None,
                "rate": None,
                "dividend_yield": None,
                "previous_close": prev_etf,
                "underlying_previous_close": prev_index,
            }
        )
    frame = pd.DataFrame(rows)
    frame["as_of"] = as_of
    frame["as_of_date"] = session
    frame["underlying"] = index_symbol
    frame["underlying_price"] = float(index_price)
    frame["price"] = (frame["bid"] + frame["ask"]) / 2.0
    frame["source"] = source
    if "underlying_previous_close" not in frame:
        frame["underlying_previous_close"] = None
    return frame
