"""Synthetic market data: a seeded, self-consistent market of fictional stocks and one index (``SYNX``).

Everything is a deterministic function of ``seed`` (and ``n_underlyings``, ``macro_event_dates``):
the whole daily history is simulated once per instance for the XNYS sessions 2020-07-01 … 2027-12-31
(the part before 2021-01-04 is burn-in, used for entry prices of the sample book) and tables are
cut from it, so a row never depends on which dates were asked for or in which order. Per-session
extras (intraday path, quote noise) come from generators seeded by ``(seed, stream, session[, minute])``.
Published window: sessions ``FIRST_SESSION`` … ``LAST_SESSION``; other dates raise ``ValueError``.

Prices (daily log returns, one row per symbol and session)::

    r = drift + β·m + s_sector + e + jumps

``m`` (market), ``s`` (one per sector) and ``e`` (idiosyncratic) are GJR-GARCH(1,1) processes with
standardized Student-t innovations: volatility clustering, leverage (negative shocks raise the
variance more) and fat tails. Jumps are compound Poisson (index jumps reach stocks through β);
earnings moves land on each name's reaction session, macro moves on ``macro_event_dates`` hit the
index and, through β, every stock. The non-event part of a day is capped at ±30 % (index ±15 %), and
a very weak mean reversion of the log price (half-life ≈ 1.4 years) keeps 7-year paths tradable.
OHLC: an overnight gap (20 % of the diffusive variance plus any earnings move) then an intraday
Brownian bridge from open to close; high and low are exact draws of that bridge's maximum and
minimum, so ``low <= min(open, close) <= max(open, close) <= high``. Volume rises with |return|
and on event days.

``event_flag`` marks the session whose close-to-close return contains the event: the announcement
day for before-open earnings, the next session for after-close earnings, the date itself for
macro events; values 'earnings', the macro type ('macro' for plain dates, or the type given in a
``{date: 'fomc'}`` mapping), or both joined by ';'; None otherwise.

Option quotes (every underlying, per snapshot):

* Expiries: Friday expiries moved to Thursday on exchange holidays; the next 2 weeklies (index and
  the more liquid half of the stocks, else 1), the next 3 monthlies (third Friday) and quarterlies
  (Mar/Jun/Sep/Dec) up to 380 days out. Strikes: 17-25 per expiry around the previous close with an
  increment from {0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250} (at least 5 for the index) that widens with
  expiry and price; strikes held in ``positions(session)`` are listed too.
* Underlying price at a snapshot: one Brownian-bridge path per (seed, session) from the open to the
  close on a one-minute grid, clipped to the day's [low, high].
* Conventions used for pricing (and needed to invert the quotes exactly): time to expiry
  ``T = (expiry session close - as_of) / 365 days`` (UTC instants); rate = the session's
  ``zero_rate`` linearly interpolated in ``tenor_days`` at ``365·T`` (flat outside the tenors);
  dividend = the session's ``dividend_yield``; forward ``F = S·exp((r - q)·T)``.
* Smile: SSVI (Gatheral and Jacquier 2014) ``w(k) = θ/2·(1 + ρφk + sqrt((φk + ρ)² + 1 - ρ²))``,
  ``k = ln(K/F)``, with the power law ``φ = η / (θ^γ (1 + θ)^(1-γ))``, ``γ <= 1/2`` and
  ``η(1 + |ρ|) < 2``, which is free of static arbitrage. θ(T) = (risk premium · GARCH term
  structure of the name's current variance)² integrated to T, plus the earnings variance of every
  reaction session in (session, expiry] and β²·macro variance of macro dates in (session, expiry].
  Each slice is exactly a raw SVI: ``a = θ(1-ρ²)/2, b = θφ/2, ρ, m = -ρ/φ, σ = sqrt(1-ρ²)/φ``
  (``true_surface``). Skew is negative (ρ ≈ -0.7 for the index, -0.55 … -0.25 for stocks).
* Prices: Black-Scholes-Merton *European* formula for every option. Single-stock options are
  American-style contracts (``exercise_style='american'``) but their synthetic quotes ignore the
  early-exercise premium, only flooring the European price at the immediate-exercise value
  (max(S - K, 0) or max(K - S, 0)), so no quote sits below intrinsic. The missing premium is small
  for calls on low-dividend names and for out-of-the-money or short-dated puts; it grows for
  in-the-money puts with long expiries (with rates near 4-5 % it reaches a few percent of the
  strike at one year), where an American inversion returns a lower vol than the generating one.
  Out-of-the-money quotes recover the generating smile (``true_surface``) with either model.
* Quotes: half-spread grows with the distance from the money and with low open interest; tick 0.01
  below 3.00 and 0.05 from 3.00; bid floored to the tick and at 0, ask ceiled, ask > bid always,
  and the ask is raised where needed so the mid is never below the no-arbitrage floor. Open
  interest (fixed for the day) and volume (cumulative to the snapshot) fall with |moneyness| and
  expiry and rise after an overnight gap; ``last`` lies inside the spread, NaN when volume is 0.

Dtypes: DATE columns hold ``datetime.date`` objects (object dtype); TIMESTAMP columns are tz-aware
UTC pandas timestamps (``datetime64[ns, UTC]``); doubles are float64 with NaN for NULL;
``tenor_days`` is int64; text columns use pandas' default string dtype (missing = NaN). Every frame
has the contract's data columns plus ``source_file`` and ``source_row`` (both None: generated
data); ``source`` is ``synthetic(seed=N)``.
"""

from __future__ import annotations

import datetime as dt
import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from scipy.special import ndtr

from risk_pipeline.contracts import table
from risk_pipeline.sources.base import MarketDataSource

FIRST_SESSION = dt.date(2021, 1, 4)
LAST_SESSION = dt.date(2027, 12, 31)
INDEX_SYMBOL = "SYNX"
INDEX_SECTOR = "Index"
TENORS_DAYS: tuple[int, ...] = (1, 7, 30, 60, 91, 182, 273, 365, 730)
#: Snapshot wall-clock times (America/New_York); the last one is always 15 minutes before the close.
SNAPSHOT_TIMES_NY: tuple[dt.time, ...] = (dt.time(10, 0), dt.time(12, 0), dt.time(14, 0))
LAST_SNAPSHOT_BEFORE_CLOSE = dt.timedelta(minutes=15)
EARNINGS_TIME_NY = {"after close": dt.time(16, 30), "before open": dt.time(8, 0)}

_SIM_START = dt.date(2020, 7, 1)
_CAL_START = dt.date(2020, 1, 1)
_CAL_END = dt.date(2029, 12, 31)
_EVENTS_END = LAST_SESSION + dt.timedelta(days=400)
_NY = ZoneInfo("America/New_York")
_NS_PER_DAY = 86_400 * 10**9
_NS_PER_YEAR = 365 * _NS_PER_DAY
_QUARTERLY_HORIZON_DAYS = 380
_NICE_INCREMENTS = np.array([0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0])
_MACRO_SD = 0.012  # daily sd of a macro-day move of the market factor
_EARNINGS_PREMIUM = 1.1  # implied / true earnings move
_MARKET_VOL = 0.17
_INDEX_LEVEL0 = 4200.0

# Sector: (factor vol, dividend yield level, total vol range, mean beta); 8 fictional tickers each.
_SECTORS: dict[str, tuple[float, float, tuple[float, float], float]] = {
    "Technology": (0.14, 0.006, (0.28, 0.55), 1.35),
    "Health Care": (0.12, 0.014, (0.25, 0.55), 0.95),
    "Financials": (0.13, 0.025, (0.22, 0.40), 1.15),
    "Energy": (0.18, 0.032, (0.28, 0.50), 1.05),
    "Consumer": (0.10, 0.016, (0.20, 0.40), 0.95),
    "Industrials": (0.11, 0.018, (0.20, 0.38), 1.10),
    "Utilities": (0.09, 0.034, (0.17, 0.28), 0.60),
    "Communication": (0.12, 0.010, (0.24, 0.50), 1.15),
}
_TICKERS: dict[str, tuple[str, ...]] = {
    "Technology": ("QBYT", "ZYLO", "NEXQ", "VEXL", "KRYX", "DATZ", "CYBQ", "PIXZ"),
    "Health Care": ("MEDQ", "VIRZ", "CURQ", "HLXZ", "BIOQ", "NURZ", "GENQ", "CLNZ"),
    "Financials": ("BNKQ", "LDGZ", "CRDQ", "FNDZ", "VLTX", "ASTQ", "INSZ", "TRSQ"),
    "Energy": ("PTRQ", "SOLZ", "GRDQ", "OILZ", "WNDQ", "FUZN", "DRLQ", "PWLZ"),
    "Consumer": ("SHPQ", "BRWZ", "FODQ", "LUXZ", "TOYQ", "WRXQ", "CAFZ", "RTLQ"),
    "Industrials": ("MACQ", "RAIZ", "AERQ", "STLZ", "BLDQ", "FRTZ", "TRKQ", "ROBZ"),
    "Utilities": ("PWRQ", "WATZ", "GASQ", "GRIZ", "HYDQ", "ELCZ", "NUKQ", "FLXZ"),
    "Communication": ("TELQ", "STRZ", "MDQX", "NWSQ", "ADVZ", "SIGQ", "CSTZ", "GAMQ"),
}


# ---------------------------------------------------------------------- calendar
@dataclass(frozen=True)
class _Calendar:
    """XNYS sessions 2020-2029 with open/close instants and the expiry cycles (indices into sessions)."""

    dates: tuple[dt.date, ...]
    ordinals: np.ndarray
    opens_ns: np.ndarray
    closes_ns: np.ndarray
    weekly: np.ndarray
    monthly: np.ndarray
    quarterly: np.ndarray
    quarter_starts: np.ndarray

    def index(self, day: dt.date) -> int:
        i = int(np.searchsorted(self.ordinals, day.toordinal()))
        if i >= len(self.ordinals) or self.ordinals[i] != day.toordinal():
            raise ValueError(f"{day} is not an XNYS session")
        return i

    def on_or_before(self, ordinals: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.ordinals, ordinals, side="right") - 1


@functools.cache
def _calendar() -> _Calendar:
    import exchange_calendars as xcals

    with warnings.catch_warnings():  # exchange_calendars' own pandas deprecation warnings
        warnings.simplefilter("ignore")
        cal = xcals.get_calendar("XNYS", start=_CAL_START.isoformat(), end=_CAL_END.isoformat())
    dates = tuple(d.date() for d in cal.sessions)
    ordinals = np.array([d.toordinal() for d in dates], dtype=np.int64)
    opens = pd.DatetimeIndex(cal.opens).as_unit("ns").asi8
    closes = pd.DatetimeIndex(cal.closes).as_unit("ns").asi8
    first_friday = _CAL_START + dt.timedelta(days=(4 - _CAL_START.weekday()) % 7)
    fridays = np.arange(first_friday.toordinal(), _CAL_END.toordinal() + 1, 7)
    months = [(y, m) for y in range(_CAL_START.year, _CAL_END.year + 1) for m in range(1, 13)]
    third = np.array([_third_friday(y, m).toordinal() for y, m in months])
    quarter = np.array([m % 3 == 0 for _, m in months])
    proto = _Calendar(dates, ordinals, opens, closes, *(np.empty(0, np.int64),) * 4)
    qstarts = np.array([dt.date(y, m, 1).toordinal() for y, m in months if m % 3 == 1])
    return _Calendar(
        dates,
        ordinals,
        opens,
        closes,
        weekly=np.unique(proto.on_or_before(fridays)),
        monthly=np.unique(proto.on_or_before(third)),
        quarterly=np.unique(proto.on_or_before(third[quarter])),
        quarter_starts=np.searchsorted(ordinals, qstarts),
    )


def _third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


def _utc_ns(day: dt.date, local: dt.time) -> int:
    instant = dt.datetime.combine(day, local, tzinfo=_NY).astimezone(dt.UTC)
    return int(pd.Timestamp(instant).value)


# ---------------------------------------------------------------------- Black-Scholes-Merton
def _bsm(
    forward: np.ndarray, strike: np.ndarray, total_var: np.ndarray, disc: np.ndarray, is_call: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """European price and forward-delta N(d1) (call) / N(d1) - 1 (put) from forward and total variance."""
    sd = np.sqrt(total_var)
    d1 = np.log(forward / strike) / sd + 0.5 * sd
    d2 = d1 - sd
    call = disc * (forward * ndtr(d1) - strike * ndtr(d2))
    put = disc * (strike * ndtr(-d2) - forward * ndtr(-d1))
    price = np.maximum(np.where(is_call, call, put), 0.0)
    return price, np.where(is_call, ndtr(d1), ndtr(d1) - 1.0)


def _ssvi_total_variance(k: np.ndarray, theta: np.ndarray, phi: np.ndarray, rho: np.ndarray) -> np.ndarray:
    pk = phi * k
    return 0.5 * theta * (1.0 + rho * pk + np.sqrt((pk + rho) ** 2 + 1.0 - rho**2))


# ---------------------------------------------------------------------- model state
_INDEX_JUMP = (1.5, -0.02, 0.02)  # index Poisson jumps: intensity per year, mean, sd


@dataclass(frozen=True)
class _Garch:
    """GJR-GARCH(1,1) of the market (column 0), sector and idiosyncratic processes (daily units)."""

    omega: np.ndarray
    alpha: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    long_run: np.ndarray
    nu: np.ndarray


@dataclass(frozen=True)
class _Universe:
    """Per-symbol parameters; position 0 is the index."""

    symbols: tuple[str, ...]
    sectors: tuple[str, ...]
    sector_id: np.ndarray  # -1 for the index
    beta: np.ndarray
    div0: np.ndarray
    price0: np.ndarray
    lr_var: np.ndarray  # annual long-run diffusive variance
    jump_lam: np.ndarray  # Poisson jumps per year (own jumps; the index's reach stocks through β)
    jump_mu: np.ndarray
    jump_sd: np.ndarray
    jump_var: np.ndarray  # annual variance of all jumps a symbol sees
    kappa: np.ndarray  # variance mean reversion per year
    earn_sd: np.ndarray
    earn_after_close: np.ndarray
    earn_lag: np.ndarray
    rho: np.ndarray
    eta: np.ndarray
    gamma: np.ndarray
    vrp: np.ndarray
    oi_base: np.ndarray
    volume_base: np.ndarray
    n_weeklies: np.ndarray
    garch: _Garch

    @property
    def is_index(self) -> np.ndarray:
        return np.arange(len(self.symbols)) == 0


@dataclass(frozen=True)
class _History:
    """Simulated daily state on sessions sim0, sim0 + 1, ... (rows) per symbol (columns)."""

    sim0: int
    close: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    volume: np.ndarray
    ret: np.ndarray
    day_var: np.ndarray  # conditional diffusive daily variance of each day
    var_ann: np.ndarray  # (n + 1, N) conditional annualized diffusive variance of day t (last row: next day)
    intraday_var: np.ndarray
    flags: np.ndarray  # object: None, 'earnings', the macro type, or both joined by ';'
    curve: np.ndarray  # (n, len(TENORS_DAYS))
    divs: np.ndarray
    rho: np.ndarray
    reactions: np.ndarray  # (N, quarters) session index of each earnings reaction (index row: -1)
    announce: np.ndarray  # (N, quarters) session index of each announcement (index row: -1)
    macro_idx: np.ndarray  # sorted session indices of macro events


def _ticker_list(n: int) -> list[tuple[str, str]]:
    """(ticker, sector) interleaved across sectors; fictional 'X???' names beyond the fixed 64."""
    rounds = zip(*(_TICKERS[s] for s in _SECTORS), strict=True)
    names = [(t, s) for group in rounds for t, s in zip(group, _SECTORS, strict=True)]
    if n <= len(names):
        return names[:n]
    taken = {t for t, _ in names} | {INDEX_SYMBOL}
    sectors = list(_SECTORS)
    letters = "ABCDEFGHJKLMNPRSTVWY"
    i = 0
    while len(names) < n:
        name = f"X{letters[(i // 400) % 20]}{letters[(i // 20) % 20]}{letters[i % 20]}"
        if name not in taken:
            names.append((name, sectors[len(names) % len(sectors)]))
            taken.add(name)
        i += 1
    return names


def _ou(rng: np.random.Generator, kappa: float, sd: float, mean: float, shape: tuple[int, ...]) -> np.ndarray:
    """Daily-sampled Ornstein-Uhlenbeck paths (axis 0 = time) with stationary sd, started stationary."""
    a = np.exp(-kappa / 252.0)
    noise = rng.standard_normal(shape) * sd * np.sqrt(1.0 - a * a)
    start = rng.standard_normal(shape[1:]) * sd
    return mean + lfilter([1.0], [1.0, -a], noise, axis=0, zi=(a * start)[None, ...])[0]


def _is_session(day: dt.date) -> bool:
    cal = _calendar()
    i = int(np.searchsorted(cal.ordinals, day.toordinal()))
    return i < len(cal.ordinals) and cal.ordinals[i] == day.toordinal()


def _to_tick(price: np.ndarray, rounding: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Price on the option tick grid: 0.01 below 3.00, 0.05 from 3.00 (``rounding``: floor, ceil, round)."""
    cents = rounding(np.round(price * 100.0, 6)) / 100.0
    nickels = rounding(np.round(price * 20.0, 6)) / 20.0
    return np.round(np.where(nickels >= 3.0, nickels, np.where(cents >= 3.0, 3.0, cents)), 2)


def _fmt_strike(strike: float) -> str:
    return f"{strike:.4f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------------- the source
class SyntheticSource(MarketDataSource):
    """Seeded synthetic market: daily bars, option chains, curves, dividends, earnings and a sample book.

    ``macro_event_dates``: dates with a market-wide move (and a vol premium in options expiring
    after them); a plain sequence flags them 'macro', a mapping ``{date: 'fomc' | 'cpi' | ...}``
    uses its values. Results are cached per instance; every call returns a fresh frame.
    """

    name = "synthetic"

    def __init__(
        self,
        seed: int = 7,
        n_underlyings: int = 50,
        macro_event_dates: Sequence[dt.date] | Mapping[dt.date, str] = (),
    ) -> None:
        if seed < 0:
            raise ValueError("seed must be >= 0")
        if not 1 <= n_underlyings <= 2000:
            raise ValueError("n_underlyings must be in 1..2000")
        self.seed = int(seed)
        self.n_underlyings = int(n_underlyings)
        if isinstance(macro_event_dates, Mapping):
            items = list(macro_event_dates.items())
        else:
            items = [(d, "macro") for d in macro_event_dates]
        macro: dict[dt.date, str] = {}
        for d, kind in items:
            day = d.date() if isinstance(d, dt.datetime) else d
            macro[day] = kind if macro.get(day, kind) == kind else f"{macro[day]};{kind}"
        #: Macro event date -> event_flag label.
        self.macro_events: dict[dt.date, str] = dict(sorted(macro.items()))
        self.source_label = f"synthetic(seed={self.seed})"
        self._universe_cache: _Universe | None = None
        self._history_cache: _History | None = None
        self._plan_cache: dict[str, Any] | None = None
        self._frames: dict[str, pd.DataFrame] = {}
        self._positions_cache: dict[int, pd.DataFrame] = {}

    # ------------------------------------------------------------------ public API
    def symbols(self) -> list[str]:
        """The index first, then the stocks."""
        return list(self._universe().symbols)

    def sessions(self, start: dt.date = FIRST_SESSION, end: dt.date = LAST_SESSION) -> list[dt.date]:
        """Published XNYS sessions in [start, end]."""
        lo, hi = self._public_range(start, end)
        return list(_calendar().dates[lo:hi])

    def instrument_master(self) -> pd.DataFrame:
        """One row per symbol: type, sector, beta, exercise style, multiplier and generator parameters."""
        u = self._universe()
        n = len(u.symbols)
        return pd.DataFrame(
            {
                "symbol": np.array(u.symbols, dtype=object),
                "instrument_type": np.where(u.is_index, "index", "stock").astype(object),
                "sector": np.array(u.sectors, dtype=object),
                "beta": u.beta,
                "exercise_style": np.where(u.is_index, "european", "american").astype(object),
                "multiplier": np.full(n, 100.0),
                "dividend_yield": u.div0,
                "long_run_vol": np.sqrt(u.lr_var + u.jump_var),
                "earnings_move_sd": u.earn_sd,
                "earnings_timing": np.array(
                    [None, *("after close" if a else "before open" for a in u.earn_after_close[1:])],
                    dtype=object,
                ),
                "weekly_expiries": u.n_weeklies.astype(np.int64),
            }
        )

    def market_prices(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Daily bars for every published session in [start, end], ordered by date, then symbols()."""
        return self._slice("market_prices", start, end, len(self._universe().symbols))

    def rates_curve(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Zero rates (continuously compounded) at TENORS_DAYS for every published session in [start, end]."""
        return self._slice("rates_curve", start, end, len(TENORS_DAYS))

    def dividend_yields(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Continuous dividend yield per symbol for every published session in [start, end]."""
        return self._slice("dividend_yields", start, end, len(self._universe().symbols))

    def earnings_events(self) -> pd.DataFrame:
        """Earnings announced FIRST_SESSION … LAST_SESSION + 400 days (all that option prices use).

        event_time is 16:30 (after close) or 08:00 (before open) New York time, in UTC.
        """
        if "event_calendar" not in self._frames:
            self._frames["event_calendar"] = self._build_events()
        return self._frames["event_calendar"].copy()

    def snapshot_times(self, session: dt.date) -> list[dt.datetime]:
        """10:00, 12:00, 14:00 New York (those before the last) and 15 minutes before the close, in UTC."""
        cal = _calendar()
        d = self._public_index(session)
        last = int(cal.closes_ns[d]) - int(LAST_SNAPSHOT_BEFORE_CLOSE.total_seconds()) * 10**9
        times = [ns for ns in (_utc_ns(cal.dates[d], t) for t in SNAPSHOT_TIMES_NY) if ns < last] + [last]
        return [pd.Timestamp(ns, tz="UTC").to_pydatetime() for ns in times]

    def option_quotes(self, session: dt.date, snapshot_time: dt.datetime | None = None) -> pd.DataFrame:
        """The chain of every underlying at ``snapshot_time`` (default: the last snapshot).

        Any instant between the session's open and close is accepted (naive = UTC); see the module
        docstring for expiries, strikes, smile, pricing conventions and quote construction.
        """
        d, as_of_ns = self._snapshot(session, snapshot_time)
        return self._chain(d, as_of_ns)

    def true_surface(self, session: dt.date, snapshot_time: dt.datetime | None = None) -> pd.DataFrame:
        """The generating smile per underlying and listed expiry as raw-SVI parameters of total variance."""
        d, as_of_ns = self._snapshot(session, snapshot_time)
        sym, exp = self._pairs(d)
        spot = self._spot(d, as_of_ns)
        s = self._surface(d, as_of_ns, sym, exp)
        rho, phi, theta = s["rho"], s["phi"], s["theta"]
        cal = _calendar()
        n = len(sym)
        return pd.DataFrame(
            {
                "as_of": pd.to_datetime(np.full(n, as_of_ns, dtype=np.int64), utc=True),
                "underlying": np.array(self._universe().symbols, dtype=object)[sym],
                "expiry": np.array(cal.dates, dtype=object)[exp],
                "time_to_expiry_years": s["T"],
                "spot": spot[sym],
                "forward": spot[sym] * np.exp((s["r"] - s["q"]) * s["T"]),
                "rate": s["r"],
                "dividend_yield": s["q"],
                "atm_vol": np.sqrt(theta / s["T"]),
                "svi_a": 0.5 * theta * (1.0 - rho**2),
                "svi_b": 0.5 * theta * phi,
                "svi_rho": rho,
                "svi_m": -rho / phi,
                "svi_sigma": np.sqrt(1.0 - rho**2) / phi,
            }
        )

    def positions(self, session: dt.date) -> pd.DataFrame:
        """The sample book at the start of ``session`` (books core_equity and vol_overlay).

        Option legs are opened at the close of a roll session (5 sessions before a monthly, or for
        index_hedge quarterly, expiry) and held until the next roll, so they always expire after
        ``session``; their cost_basis is the model price (per share) at that close. Stock legs were
        bought in the 2020 burn-in at that day's close; the delta_hedged_short_vol stock leg is
        rebalanced to the straddle's model delta at the previous close.
        """
        d = self._public_index(session)
        if d not in self._positions_cache:
            self._positions_cache[d] = self._build_positions(d)
        return self._positions_cache[d].copy()

    # ------------------------------------------------------------------ window helpers
    @staticmethod
    def _public_range(start: dt.date, end: dt.date) -> tuple[int, int]:
        cal = _calendar()
        lo = int(np.searchsorted(cal.ordinals, max(start, FIRST_SESSION).toordinal(), side="left"))
        hi = int(np.searchsorted(cal.ordinals, min(end, LAST_SESSION).toordinal(), side="right"))
        return lo, max(lo, hi)

    @staticmethod
    def _public_index(session: dt.date) -> int:
        if isinstance(session, dt.datetime):
            session = session.date()
        if not FIRST_SESSION <= session <= LAST_SESSION:
            raise ValueError(f"{session} is outside the synthetic window {FIRST_SESSION} … {LAST_SESSION}")
        return _calendar().index(session)

    def _snapshot(self, session: dt.date, snapshot_time: dt.datetime | None) -> tuple[int, int]:
        d = self._public_index(session)
        if snapshot_time is None:
            snapshot_time = self.snapshot_times(session)[-1]
        ts = pd.Timestamp(snapshot_time)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        cal = _calendar()
        if not cal.opens_ns[d] <= ts.value <= cal.closes_ns[d]:
            raise ValueError(f"snapshot {ts.isoformat()} is outside the {session} session")
        return d, int(ts.value)

    def _slice(self, name: str, start: dt.date, end: dt.date, per_session: int) -> pd.DataFrame:
        if name not in self._frames:
            builders = {
                "market_prices": self._build_prices,
                "rates_curve": self._build_rates,
                "dividend_yields": self._build_dividends,
            }
            self._frames[name] = builders[name]()
        lo, hi = self._public_range(start, end)
        first = self._public_range(FIRST_SESSION, FIRST_SESSION)[0]
        out = self._frames[name].iloc[(lo - first) * per_session : (hi - first) * per_session]
        out = out.reset_index(drop=True)
        out.attrs["source_files"] = [self.source_label]
        return out

    def _finish(self, name: str, data: dict[str, Any], n: int) -> pd.DataFrame:
        """Frame with exactly the contract's data columns, ``source`` and the two (empty) lineage columns."""
        data = {**data, "source": np.full(n, self.source_label, dtype=object)}
        frame = pd.DataFrame({c: data[c] for c in table(name).data_column_names})
        frame["source_file"] = np.full(n, None, dtype=object)
        frame["source_row"] = np.full(n, None, dtype=object)
        frame.attrs["source_files"] = [self.source_label]
        return frame

    # ------------------------------------------------------------------ universe
    def _universe(self) -> _Universe:
        if self._universe_cache is None:
            self._universe_cache = self._build_universe()
        return self._universe_cache

    def _build_universe(self) -> _Universe:
        rng = np.random.default_rng([self.seed, 1])
        names = _ticker_list(self.n_underlyings)
        n = len(names)
        sector_names = list(_SECTORS)
        sec = np.array([sector_names.index(s) for _, s in names])
        fvol, dlevel, vrange, bmean = (
            np.array(x) for x in zip(*(_SECTORS[s] for _, s in names), strict=True)
        )

        beta = np.clip(bmean + rng.normal(0.0, 0.2, n), 0.5, 1.8)
        target = rng.uniform(vrange[:, 0], vrange[:, 1])
        earn_sd = rng.uniform(0.025, 0.085, n) * np.sqrt(target / 0.35)
        jump_lam = rng.uniform(1.0, 3.0, n)
        jump_mu = np.full(n, -0.005)
        jump_sd = rng.uniform(0.025, 0.05, n)
        own_jump_var = jump_lam * (jump_mu**2 + jump_sd**2)
        idx_jump_var = _INDEX_JUMP[0] * (_INDEX_JUMP[1] ** 2 + _INDEX_JUMP[2] ** 2)
        systematic = (beta * _MARKET_VOL) ** 2 + fvol**2
        idio_var = np.maximum(
            target**2 - systematic - own_jump_var - beta**2 * idx_jump_var - 4.0 * earn_sd**2, 0.07**2
        )
        div = np.clip(dlevel * rng.lognormal(0.0, 0.35, n), 0.0, 0.04)
        div = np.where((dlevel < 0.012) & (rng.random(n) < 0.35), 0.0, div)
        price0 = np.exp(rng.uniform(np.log(18.0), np.log(450.0), n))
        after_close = rng.random(n) < 0.7
        lag = rng.integers(12, 36, n)
        rho = rng.uniform(-0.55, -0.25, n)
        eta = np.minimum(rng.uniform(0.6, 1.0, n), 1.9 / (1.1 + np.abs(rho)))
        gamma = rng.uniform(0.35, 0.5, n)
        vrp = rng.uniform(1.04, 1.14, n)
        liquidity = rng.lognormal(0.0, 0.7, n)
        weeklies = np.where(liquidity >= np.median(liquidity), 2, 1)

        # GJR-GARCH: market, one per sector, one per name; persistence alpha + gamma/2 + beta
        n_sec = len(_SECTORS)
        sector_vol = np.array([v[0] for v in _SECTORS.values()])
        pers = np.concatenate([[0.985], rng.uniform(0.96, 0.98, n_sec), rng.uniform(0.965, 0.985, n)])
        alpha = np.concatenate([[0.02], rng.uniform(0.02, 0.04, n_sec), rng.uniform(0.03, 0.06, n)])
        gam = np.concatenate([[0.13], rng.uniform(0.05, 0.09, n_sec), rng.uniform(0.10, 0.16, n)])
        long_run = np.concatenate([[_MARKET_VOL**2], sector_vol**2, idio_var]) / 252.0
        nu = np.concatenate([[7.0], rng.uniform(6.0, 9.0, n_sec), rng.uniform(7.0, 12.0, n)])
        garch = _Garch(long_run * (1.0 - pers), alpha, gam, pers - alpha - 0.5 * gam, long_run, nu)
        # options see a variance-weighted mean reversion speed of the three components
        w_m, w_s = (beta * _MARKET_VOL) ** 2, fvol**2
        p_name = (w_m * pers[0] + w_s * pers[1 + sec] + idio_var * pers[1 + n_sec :]) / (w_m + w_s + idio_var)

        def with_index(value: float, values: np.ndarray) -> np.ndarray:
            return np.concatenate([np.array([value], dtype=values.dtype), values])

        return _Universe(
            symbols=(INDEX_SYMBOL, *(t for t, _ in names)),
            sectors=(INDEX_SECTOR, *(s for _, s in names)),
            sector_id=with_index(-1, sec),
            beta=with_index(1.0, beta),
            div0=with_index(0.015, div),
            price0=with_index(_INDEX_LEVEL0, price0),
            lr_var=with_index(_MARKET_VOL**2, systematic + idio_var),
            jump_lam=with_index(_INDEX_JUMP[0], jump_lam),
            jump_mu=with_index(_INDEX_JUMP[1], jump_mu),
            jump_sd=with_index(_INDEX_JUMP[2], jump_sd),
            jump_var=with_index(idx_jump_var, own_jump_var + beta**2 * idx_jump_var),
            kappa=with_index(-252.0 * np.log(pers[0]), -252.0 * np.log(p_name)),
            earn_sd=with_index(0.0, earn_sd),
            earn_after_close=with_index(False, after_close),
            earn_lag=with_index(0, lag),
            rho=with_index(-0.70, rho),
            eta=with_index(1.0, eta),
            gamma=with_index(0.5, gamma),
            vrp=with_index(1.10, vrp),
            oi_base=with_index(20_000.0, 1500.0 * liquidity),
            volume_base=with_index(3.0e9, 2.5e6 * liquidity * np.sqrt(100.0 / price0)),
            n_weeklies=with_index(2, weeklies),
            garch=garch,
        )

    # ------------------------------------------------------------------ history
    def _history(self) -> _History:
        if self._history_cache is None:
            self._history_cache = self._build_history()
        return self._history_cache

    def _build_history(self) -> _History:
        u = self._universe()
        g = u.garch
        cal = _calendar()
        sim0 = int(np.searchsorted(cal.ordinals, _SIM_START.toordinal()))
        sim1 = cal.index(LAST_SESSION) + 1
        n_t = sim1 - sim0
        n_sym = len(u.symbols)
        n_sec = len(_SECTORS)
        beta_s = u.beta[1:]
        sec = u.sector_id[1:]

        # diffusive factors: GJR-GARCH with standardized Student-t shocks (h has a next-day row)
        rng = np.random.default_rng([self.seed, 2])
        z = rng.standard_t(g.nu, size=(n_t, len(g.nu))) * np.sqrt((g.nu - 2.0) / g.nu)
        h = np.empty((n_t + 1, len(g.nu)))
        h[0] = g.long_run
        cap = 6.0 * g.long_run
        for t in range(n_t):
            zt = z[t]
            h[t + 1] = np.minimum(
                g.omega + (g.alpha + g.gamma * (zt < 0.0)) * (zt * zt) * h[t] + g.beta * h[t], cap
            )
        eps = np.sqrt(h[:-1]) * z
        m, s, e = eps[:, 0], eps[:, 1 : 1 + n_sec], eps[:, 1 + n_sec :]
        stock_var = beta_s**2 * h[:, :1] + h[:, 1 : 1 + n_sec][:, sec] + h[:, 1 + n_sec :]
        var_all = np.concatenate([h[:, :1], stock_var], axis=1)
        day_var = var_all[:-1]

        # jumps (index jumps pass through β), macro-day and earnings moves
        rng = np.random.default_rng([self.seed, 3])
        counts = rng.poisson(u.jump_lam / 252.0, size=(n_t, n_sym))
        jumps = counts * u.jump_mu + np.sqrt(counts) * u.jump_sd * rng.standard_normal((n_t, n_sym))
        macro_size = _MACRO_SD * rng.standard_t(5.0, n_t) * np.sqrt(3.0 / 5.0)
        earn_size = rng.standard_t(4.0, size=(n_t, n_sym)) / np.sqrt(2.0)

        macro_idx = np.array(
            sorted(cal.index(d) for d in self.macro_events if _is_session(d)), dtype=np.int64
        )
        macro_day = np.zeros(n_t, dtype=bool)
        macro_day[macro_idx[(macro_idx >= sim0) & (macro_idx < sim1)] - sim0] = True
        announce, reactions = self._earnings_schedule(u)
        earn_day = np.zeros((n_t, n_sym), dtype=bool)
        ok = (reactions >= sim0) & (reactions < sim1)
        earn_day[reactions[ok] - sim0, np.nonzero(ok)[0]] = True

        market = m + jumps[:, 0]
        core = np.empty((n_t, n_sym))
        core[:, 0] = np.clip(market, -0.15, 0.15)
        core[:, 1:] = np.clip(beta_s * market[:, None] + s[:, sec] + e + jumps[:, 1:], -0.30, 0.30)
        macro_move = np.where(macro_day, macro_size, 0.0)[:, None] * u.beta
        earn_move = np.where(earn_day, earn_size * u.earn_sd, 0.0)
        shock = core + macro_move + earn_move
        # log price = drifting anchor + dev, dev_t = (1 - k) dev_{t-1} + shock_t (half-life ~1.4 years)
        k_mr = 0.002
        dev = lfilter([1.0], [1.0, -(1.0 - k_mr)], shock, axis=0)
        prev_dev = np.vstack([np.zeros((1, n_sym)), dev[:-1]])
        mu = (np.concatenate([[0.07], 0.02 + 0.05 * beta_s]) - u.div0) / 252.0
        ret = mu - 0.5 * day_var + shock - k_mr * prev_dev

        log_close = np.log(u.price0) + np.cumsum(ret, axis=0)
        log_prev = np.vstack([np.log(u.price0)[None, :], log_close[:-1]])
        rng = np.random.default_rng([self.seed, 4])
        log_open = (
            log_prev + 0.2 * core + np.sqrt(0.16 * day_var) * rng.standard_normal((n_t, n_sym)) + earn_move
        )
        intraday_var = 0.8 * day_var + macro_move**2
        # exact max / min of a Brownian bridge from log open to log close with the intraday variance
        mid = 0.5 * (log_open + log_close)
        half2 = 0.25 * (log_close - log_open) ** 2
        log_high = mid + np.sqrt(half2 - 0.5 * intraday_var * np.log(1.0 - rng.random((n_t, n_sym))))
        log_low = mid - np.sqrt(half2 - 0.5 * intraday_var * np.log(1.0 - rng.random((n_t, n_sym))))
        close, open_ = np.exp(log_close), np.exp(log_open)
        high = np.maximum(np.exp(log_high), np.maximum(open_, close))
        low = np.minimum(np.exp(log_low), np.minimum(open_, close))
        event_any = earn_day | macro_day[:, None]
        size = np.abs(ret) / np.sqrt(day_var)
        noise = rng.lognormal(0.0, 0.25, (n_t, n_sym))
        volume = np.maximum(np.round(u.volume_base * noise * (0.6 + 0.45 * size) * (1.0 + event_any)), 100.0)

        macro_label = np.array(
            [self.macro_events[cal.dates[sim0 + t]] if macro_day[t] else "" for t in range(n_t)], dtype=object
        )[:, None]
        earn_label = np.where(earn_day, "earnings", "").astype(object)
        joined = earn_label + np.where(earn_day & macro_day[:, None], ";", "").astype(object) + macro_label
        flags = np.where(joined == "", None, joined)

        curve, divs, rho_t = self._slow_processes(u, n_t)
        return _History(
            sim0=sim0,
            close=close,
            open=open_,
            high=high,
            low=low,
            volume=volume,
            ret=ret,
            day_var=day_var,
            var_ann=252.0 * var_all,
            intraday_var=intraday_var,
            flags=flags,
            curve=curve,
            divs=divs,
            rho=rho_t,
            reactions=reactions,
            announce=announce,
            macro_idx=macro_idx,
        )

    def _earnings_schedule(self, u: _Universe) -> tuple[np.ndarray, np.ndarray]:
        """(announcement, reaction) session indices per symbol and quarter; the index row is -1.

        Each name reports a fixed number of sessions (12-35) after every calendar-quarter start,
        jittered by up to 2 sessions; the reaction is the next session for after-close reports.
        """
        cal = _calendar()
        qs = cal.quarter_starts
        rng = np.random.default_rng([self.seed, 5])
        jitter = rng.integers(-2, 3, size=(len(u.symbols), len(qs)))
        announce = np.clip(qs[None, :] + u.earn_lag[:, None] + jitter, 0, len(cal.dates) - 2)
        reactions = announce + u.earn_after_close[:, None].astype(np.int64)
        announce[0] = -1
        reactions[0] = -1
        return announce, reactions

    def _slow_processes(self, u: _Universe, n_t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Zero curves (Nelson-Siegel level/slope/curvature as OU processes), dividend yields and ρ paths."""
        rng = np.random.default_rng([self.seed, 6])
        level = _ou(rng, 0.8, 0.0050, 0.040, (n_t,))
        slope = _ou(rng, 0.6, 0.0060, 0.003, (n_t,))
        curv = _ou(rng, 0.8, 0.0040, 0.000, (n_t,))
        tau = np.array(TENORS_DAYS, dtype=float) / (1.5 * 365.0)
        f1 = (1.0 - np.exp(-tau)) / tau
        f2 = f1 - np.exp(-tau)
        curve = np.round(np.clip(level[:, None] + slope[:, None] * f1 + curv[:, None] * f2, 0.001, 0.09), 6)
        n = len(u.symbols)
        x = _ou(rng, 1.0, 1.0, 0.0, (n_t, n))
        divs = np.round(np.clip(u.div0 * np.exp(np.where(u.is_index, 0.08, 0.15) * x), 0.0, 0.04), 6)
        rho_t = u.rho + 0.06 * np.clip(_ou(rng, 2.0, 1.0, 0.0, (n_t, n)), -1.5, 1.5)
        return curve, divs, rho_t

    # ------------------------------------------------------------------ daily tables
    def _public_rows(self) -> tuple[int, int, np.ndarray]:
        """History rows of the published window and its session dates."""
        h = self._history()
        lo, hi = self._public_range(FIRST_SESSION, LAST_SESSION)
        return lo - h.sim0, hi - h.sim0, np.array(_calendar().dates[lo:hi], dtype=object)

    def _build_prices(self) -> pd.DataFrame:
        h = self._history()
        symbols = np.array(self._universe().symbols, dtype=object)
        a, b, dates = self._public_rows()
        data = {
            "as_of_date": np.repeat(dates, len(symbols)),
            "symbol": np.tile(symbols, b - a),
            "open": h.open[a:b].ravel(),
            "high": h.high[a:b].ravel(),
            "low": h.low[a:b].ravel(),
            "close": h.close[a:b].ravel(),
            "volume": h.volume[a:b].ravel(),
            "event_flag": h.flags[a:b].ravel(),
        }
        return self._finish("market_prices", data, (b - a) * len(symbols))

    def _build_rates(self) -> pd.DataFrame:
        h = self._history()
        a, b, dates = self._public_rows()
        data = {
            "as_of_date": np.repeat(dates, len(TENORS_DAYS)),
            "tenor_days": np.tile(np.array(TENORS_DAYS, dtype=np.int64), b - a),
            "zero_rate": h.curve[a:b].ravel(),
        }
        return self._finish("rates_curve", data, (b - a) * len(TENORS_DAYS))

    def _build_dividends(self) -> pd.DataFrame:
        h = self._history()
        symbols = np.array(self._universe().symbols, dtype=object)
        a, b, dates = self._public_rows()
        data = {
            "as_of_date": np.repeat(dates, len(symbols)),
            "symbol": np.tile(symbols, b - a),
            "dividend_yield": h.divs[a:b].ravel(),
        }
        return self._finish("dividend_yields", data, (b - a) * len(symbols))

    def _build_events(self) -> pd.DataFrame:
        h = self._history()
        u = self._universe()
        cal = _calendar()
        lo, hi = FIRST_SESSION.toordinal(), _EVENTS_END.toordinal()
        rows: list[tuple[int, str, str, str]] = []
        for j in range(1, len(u.symbols)):  # per symbol over its ~40 quarters
            timing = "after close" if u.earn_after_close[j] else "before open"
            for a, r in zip(h.announce[j].tolist(), h.reactions[j].tolist(), strict=True):
                day = cal.dates[a]
                if lo <= day.toordinal() <= hi:
                    note = (
                        f"{timing}; reaction session {cal.dates[r].isoformat()}; "
                        f"implied move {u.earn_sd[j] * _EARNINGS_PREMIUM:.1%}"
                    )
                    rows.append((_utc_ns(day, EARNINGS_TIME_NY[timing]), u.symbols[j], day.isoformat(), note))
        rows.sort()
        n = len(rows)
        data = {
            "event_id": np.array([f"earn-{s}-{d}" for _, s, d, _ in rows], dtype=object),
            "event_type": np.full(n, "earnings", dtype=object),
            "symbol": np.array([s for _, s, _, _ in rows], dtype=object),
            "event_time": pd.to_datetime(np.array([t for t, _, _, _ in rows], dtype=np.int64), utc=True),
            "notes": np.array([x for _, _, _, x in rows], dtype=object),
        }
        return self._finish("event_calendar", data, n)

    # ------------------------------------------------------------------ option machinery
    @staticmethod
    def _expiries(d: int, n_weeklies: int) -> np.ndarray:
        """Session indices of the expiries listed on session d."""
        cal = _calendar()
        weekly = cal.weekly[cal.weekly > d][:n_weeklies]
        monthly = cal.monthly[cal.monthly > d][:3]
        horizon = cal.ordinals[d] + _QUARTERLY_HORIZON_DAYS
        quarterly = cal.quarterly[(cal.quarterly > d) & (cal.ordinals[cal.quarterly] <= horizon)]
        return np.union1d(np.union1d(weekly, monthly), quarterly)

    def _pairs(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """(symbol index, expiry session index) of every listed expiry of every underlying on session d."""
        u = self._universe()
        by_n = {k: self._expiries(d, k) for k in np.unique(u.n_weeklies).tolist()}
        lists = [by_n[int(k)] for k in u.n_weeklies]
        sym = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
        return sym.astype(np.int64), np.concatenate(lists).astype(np.int64)

    def _surface(self, d: int, as_of_ns: int, sym: np.ndarray, exp: np.ndarray) -> dict[str, np.ndarray]:
        """T, r, q and the SSVI slice (θ, φ, ρ) of contracts (sym, expiry) seen at as_of_ns on session d."""
        h = self._history()
        u = self._universe()
        cal = _calendar()
        ts = d - h.sim0
        frac = float(np.clip((as_of_ns - cal.opens_ns[d]) / (cal.closes_ns[d] - cal.opens_ns[d]), 0.0, 1.0))
        T = (cal.closes_ns[exp] - as_of_ns) / _NS_PER_YEAR
        r = np.interp(T * 365.0, np.array(TENORS_DAYS, dtype=float), h.curve[ts])
        var0 = (1.0 - frac) * h.var_ann[ts, sym] + frac * h.var_ann[ts + 1, sym] + u.jump_var[sym]
        lr = u.lr_var[sym] + u.jump_var[sym]
        kap = u.kappa[sym]
        theta = u.vrp[sym] ** 2 * (lr * T + (var0 - lr) * (1.0 - np.exp(-kap * T)) / kap)
        react = h.reactions[sym]
        n_earn = ((react > d) & (react <= exp[:, None])).sum(axis=1)
        theta = theta + n_earn * (u.earn_sd[sym] * _EARNINGS_PREMIUM) ** 2
        n_macro = np.searchsorted(h.macro_idx, exp, side="right") - np.searchsorted(
            h.macro_idx, d, side="right"
        )
        theta = theta + n_macro * (u.beta[sym] * _MACRO_SD) ** 2
        g = u.gamma[sym]
        phi = u.eta[sym] / (theta**g * (1.0 + theta) ** (1.0 - g))
        return {"T": T, "r": r, "q": h.divs[ts, sym], "theta": theta, "phi": phi, "rho": h.rho[ts, sym]}

    def _spot(self, d: int, as_of_ns: int) -> np.ndarray:
        """Prices at as_of_ns: one minute-grid Brownian bridge per (seed, session) from open to close."""
        h = self._history()
        cal = _calendar()
        ts = d - h.sim0
        open_ns, close_ns = int(cal.opens_ns[d]), int(cal.closes_ns[d])
        n_min = max(1, round((close_ns - open_ns) / 60e9))
        n_sym = h.close.shape[1]
        steps = np.random.default_rng([self.seed, 10, d]).standard_normal((n_min, n_sym))
        walk = np.vstack([np.zeros((1, n_sym)), np.cumsum(steps, axis=0)]) / np.sqrt(n_min)
        pos = float(np.clip((as_of_ns - open_ns) / 60e9, 0.0, n_min))
        m0 = min(int(pos), n_min)
        m1 = min(m0 + 1, n_min)
        f = pos / n_min
        bridge = (1.0 - (pos - m0)) * walk[m0] + (pos - m0) * walk[m1] - f * walk[n_min]
        lo, lc = np.log(h.open[ts]), np.log(h.close[ts])
        return np.clip(
            np.exp(lo + f * (lc - lo) + np.sqrt(h.intraday_var[ts]) * bridge), h.low[ts], h.high[ts]
        )

    @staticmethod
    def _grid(
        spot: np.ndarray, vol: np.ndarray, T: np.ndarray, is_index: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """Strike increment, strikes per side and centre strike per (underlying, expiry)."""
        width = np.clip(2.5 * vol * np.sqrt(T), 0.06, 0.6)
        raw = spot * width / 10.0
        pick = np.argmin(np.abs(np.log(_NICE_INCREMENTS)[None, :] - np.log(raw)[:, None]), axis=1)
        inc = np.where(is_index, np.maximum(_NICE_INCREMENTS[pick], 5.0), _NICE_INCREMENTS[pick])
        n_side = np.clip(np.round(spot * width / inc), 8, 12).astype(np.int64)
        return inc, n_side, inc * np.round(spot / inc)

    def _day_reference(self, d: int, sym: np.ndarray, exp: np.ndarray) -> dict[str, np.ndarray]:
        """What is fixed for the whole of session d: previous close, slice at the open, strike grid."""
        h = self._history()
        s = self._surface(d, int(_calendar().opens_ns[d]), sym, exp)
        ref = h.close[d - h.sim0 - 1, sym]
        inc, n_side, center = self._grid(
            ref, np.sqrt(s["theta"] / s["T"]), s["T"], self._universe().is_index[sym]
        )
        fwd = ref * np.exp((s["r"] - s["q"]) * s["T"])
        return {**s, "forward": fwd, "inc": inc, "n_side": n_side, "center": center}

    def _contract_values(
        self,
        d: int,
        as_of_ns: int,
        spot: np.ndarray,
        sym: np.ndarray,
        exp: np.ndarray,
        strike: np.ndarray,
        is_call: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Model price and BSM spot delta (per share) of the given contracts; ``spot`` is per symbol."""
        s = self._surface(d, as_of_ns, sym, exp)
        fwd = spot[sym] * np.exp((s["r"] - s["q"]) * s["T"])
        w = _ssvi_total_variance(np.log(strike / fwd), s["theta"], s["phi"], s["rho"])
        price, fdelta = _bsm(fwd, strike, w, np.exp(-s["r"] * s["T"]), is_call)
        price = self._american_floor(price, spot[sym], strike, is_call, self._universe().is_index[sym])
        return price, np.exp(-s["q"] * s["T"]) * fdelta

    @staticmethod
    def _american_floor(
        price: np.ndarray, spot: np.ndarray, strike: np.ndarray, is_call: np.ndarray, european: np.ndarray
    ) -> np.ndarray:
        """American contracts are worth at least their immediate-exercise value."""
        intrinsic = np.maximum(np.where(is_call, spot - strike, strike - spot), 0.0)
        return np.where(european, price, np.maximum(price, intrinsic))

    def _chain(self, d: int, as_of_ns: int) -> pd.DataFrame:
        h = self._history()
        u = self._universe()
        cal = _calendar()
        ts = d - h.sim0
        pair_sym, pair_exp = self._pairs(d)
        ref = self._day_reference(d, pair_sym, pair_exp)
        inc, n_side, center = ref["inc"], ref["n_side"], ref["center"]
        counts = 2 * n_side + 1
        pair_of = np.repeat(np.arange(len(pair_sym)), counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts + n_side, counts)
        strikes = np.round(center[pair_of] + inc[pair_of] * offset, 4)
        held = self.positions(cal.dates[d])
        held = held[held["instrument_type"] == "option"]
        if len(held):  # strikes with open positions stay listed
            pair_key = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(pair_sym, pair_exp, strict=True))}
            sym_pos = {s: i for i, s in enumerate(u.symbols)}
            extra = [
                pair_key[(sym_pos[s], cal.index(e))]
                for s, e in zip(held["symbol"], held["expiry"], strict=True)
            ]
            pair_of = np.concatenate([pair_of, np.array(extra, dtype=np.int64)])
            strikes = np.concatenate([strikes, held["strike"].to_numpy(float)])
        keep = strikes > 0
        both = np.unique(np.column_stack([pair_of[keep].astype(float), strikes[keep]]), axis=0)

        spot = self._spot(d, as_of_ns)
        surf = self._surface(d, as_of_ns, pair_sym, pair_exp)
        n_k = len(both)
        p = np.repeat(both[:, 0].astype(np.int64), 2)
        K = np.repeat(both[:, 1], 2)
        is_call = np.tile(np.array([True, False]), n_k)
        n = len(K)
        sym, exp_idx, T = pair_sym[p], pair_exp[p], surf["T"][p]
        fwd = spot[sym] * np.exp((surf["r"][p] - surf["q"][p]) * T)
        k = np.log(K / fwd)
        w = _ssvi_total_variance(k, surf["theta"][p], surf["phi"][p], surf["rho"][p])
        disc = np.exp(-surf["r"][p] * T)
        price, _ = _bsm(fwd, K, w, disc, is_call)
        price = self._american_floor(price, spot[sym], K, is_call, u.is_index[sym])
        ax = np.minimum(np.abs(k / np.sqrt(w)), 4.0)
        extrinsic = np.maximum(price - disc * np.maximum(np.where(is_call, fwd - K, K - fwd), 0.0), 0.0)

        # open interest and day volume depend only on what is fixed for the day (moneyness against the
        # previous close, the overnight gap) and per-(seed, session) noise: every snapshot agrees
        k0 = np.log(K / ref["forward"][p])
        x = k0 / np.sqrt(_ssvi_total_variance(k0, ref["theta"][p], ref["phi"][p], ref["rho"][p]))
        T0 = ref["T"][p]
        rng = np.random.default_rng([self.seed, 11, d])
        cycle = np.where(
            np.isin(exp_idx, cal.quarterly), 1.3, np.where(np.isin(exp_idx, cal.monthly), 1.0, 0.45)
        )
        otm = np.where(is_call, k0 > 0, k0 < 0)
        oi = np.floor(
            u.oi_base[sym]
            * cycle
            * (0.15 + np.exp(-T0 / 0.5))
            * np.exp(-0.5 * (x / 1.4) ** 2)
            * np.where(otm, 1.0, 0.6)
            * rng.lognormal(0.0, 0.5, n)
        )
        gap = np.log(h.open[ts, sym] / h.close[ts - 1, sym])
        big_move = 1.0 + 3.0 * np.abs(gap) / np.sqrt(h.day_var[ts, sym])
        day_volume = oi * 0.12 * big_move * np.exp(-0.5 * (x / 1.1) ** 2) * rng.lognormal(0.0, 0.8, n)
        elapsed = (as_of_ns - cal.opens_ns[d]) / (cal.closes_ns[d] - cal.opens_ns[d])
        volume = np.floor(day_volume * float(np.clip(elapsed, 0.0, 1.0)) ** 0.85)

        liq = 1.0 + 2.0 / np.sqrt(1.0 + oi / 200.0)
        half = (0.004 + 0.004 * ax) * extrinsic + 0.001 * price + 0.012 * liq * (1.0 + 0.5 * ax)
        bid = np.maximum(_to_tick(price - half, np.floor), 0.0)
        ask = np.maximum(_to_tick(price + half, np.ceil), bid + np.where(bid >= 3.0, 0.05, 0.01))
        # the mid never sits below the no-arbitrage floor (discounted forward intrinsic; spot
        # intrinsic for American contracts) even after tick rounding
        floor = np.maximum(
            price - extrinsic, self._american_floor(0.0 * price, spot[sym], K, is_call, u.is_index[sym])
        )
        ask = np.round(np.maximum(ask, _to_tick(2.0 * floor - bid, np.ceil)), 2)
        minute = int((as_of_ns - cal.opens_ns[d]) // 60_000_000_000)
        jitter = np.random.default_rng([self.seed, 12, d, max(minute, 0)]).uniform(-0.4, 0.4, n)
        last = np.clip(
            _to_tick(0.5 * (bid + ask) + jitter * (ask - bid), np.round), np.maximum(bid, 0.01), ask
        )
        last = np.where(volume > 0, last, np.nan)

        data = {
            "as_of": pd.to_datetime(np.full(n, as_of_ns, dtype=np.int64), utc=True),
            "as_of_date": np.full(n, cal.dates[d], dtype=object),
            "underlying": np.array(u.symbols, dtype=object)[sym],
            "expiry": np.array(cal.dates, dtype=object)[exp_idx],
            "strike": K,
            "option_type": np.where(is_call, "C", "P").astype(object),
            "bid": bid,
            "ask": ask,
            "last": last,
            "volume": volume,
            "open_interest": oi,
            "underlying_price": spot[sym],
            "exercise_style": np.where(u.is_index[sym], "european", "american").astype(object),
            "multiplier": np.full(n, 100.0),
        }
        return self._finish("option_quotes", data, n)

    # ------------------------------------------------------------------ sample book
    def _plan(self) -> dict[str, Any]:
        """Names per strategy, sizes and stock entry sessions (fixed per seed)."""
        if self._plan_cache is not None:
            return self._plan_cache
        u = self._universe()
        h = self._history()
        rng = np.random.default_rng([self.seed, 7])
        stocks = list(range(1, len(u.symbols)))
        first_public = self._public_range(FIRST_SESSION, FIRST_SESSION)[0] - h.sim0
        books = (
            (
                {
                    "long_stock": 10,
                    "short_stock": 4,
                    "covered_call": 3,
                    "protective_put": 3,
                    "bull_call_spread": 2,
                }
            ),
            ({"long_straddle": 2, "short_strangle": 2, "delta_hedged_short_vol": 2}),
        )
        alloc: dict[str, list[int]] = {}
        for wanted in books:
            perm = rng.permutation(stocks).tolist()
            for strategy, count in wanted.items():
                alloc[strategy], perm = perm[:count], perm[count:]
        entry = {j: int(rng.integers(5, first_public - 10)) for j in stocks}
        notional = {j: float(rng.uniform(0.5e6, 3.0e6)) for j in stocks}
        shares = {j: max(100.0, float(np.round(notional[j] / h.close[entry[j], j], -2))) for j in stocks}
        names = ("bull_call_spread", "long_straddle", "short_strangle", "delta_hedged_short_vol")
        contracts = {s: int(rng.integers(5, 21)) for s in (*names, "iron_condor", "calendar_spread")}
        beta_dollars = sum(
            shares[j] * h.close[entry[j], j] * u.beta[j]
            for s in ("long_stock", "covered_call", "protective_put")
            for j in alloc[s]
        )
        index_hedge = max(1, round(0.4 * beta_dollars / (h.close[first_public - 1, 0] * 100.0)))
        self._plan_cache = {
            "alloc": alloc,
            "entry": entry,
            "shares": shares,
            "contracts": contracts,
            "index_hedge": index_hedge,
        }
        return self._plan_cache

    def _build_positions(self, d: int) -> pd.DataFrame:
        h = self._history()
        u = self._universe()
        cal = _calendar()
        plan = self._plan()
        alloc, entry, shares, n_of = plan["alloc"], plan["entry"], plan["shares"], plan["contracts"]
        rows: list[dict[str, Any]] = []

        def stock(book: str, j: int, qty: float, strategy: str, cost: float) -> None:
            rows.append(
                {
                    "book": book,
                    "position_id": f"{book}:{u.symbols[j]}:stock",
                    "instrument_type": "stock",
                    "symbol": u.symbols[j],
                    "expiry": None,
                    "strike": np.nan,
                    "option_type": None,
                    "exercise_style": None,
                    "quantity": float(qty),
                    "multiplier": 1.0,
                    "cost_basis": float(cost),
                    "strategy": strategy,
                    "sector": u.sectors[j],
                }
            )

        # option legs: (book, strategy, symbol, cycle, nth expiry after the roll, type, strike rule, qty)
        # strike rule: ("atm",), ("pct", x), ("sd", n) [n standard deviations of the slice], optionally
        # a third element = offset of an earlier leg of the same strategy to stay beyond (or "same")
        legs: list[tuple[str, str, int, str, int, str, tuple[Any, ...], float]] = []
        for j in alloc["long_stock"]:
            stock("core_equity", j, shares[j], "long_stock", h.close[entry[j], j])
        for j in alloc["short_stock"]:
            stock("core_equity", j, -shares[j], "short_stock", h.close[entry[j], j])
        for j in alloc["covered_call"]:
            stock("core_equity", j, shares[j], "covered_call", h.close[entry[j], j])
            legs.append(("core_equity", "covered_call", j, "m", 1, "C", ("pct", 1.05), -shares[j] / 100.0))
        for j in alloc["protective_put"]:
            stock("core_equity", j, shares[j], "protective_put", h.close[entry[j], j])
            legs.append(("core_equity", "protective_put", j, "m", 2, "P", ("pct", 0.92), shares[j] / 100.0))
        for j in alloc["bull_call_spread"]:
            q = n_of["bull_call_spread"]
            legs.append(("core_equity", "bull_call_spread", j, "m", 1, "C", ("atm",), q))
            legs.append(("core_equity", "bull_call_spread", j, "m", 1, "C", ("pct", 1.08, -1), -q))
        legs.append(("core_equity", "index_hedge", 0, "q", 2, "P", ("pct", 0.90), plan["index_hedge"]))
        for j in alloc["long_straddle"]:
            q = n_of["long_straddle"]
            legs += [("vol_overlay", "long_straddle", j, "m", 1, t, ("atm",), q) for t in ("C", "P")]
        for j in alloc["short_strangle"]:
            q = n_of["short_strangle"]
            legs.append(("vol_overlay", "short_strangle", j, "m", 1, "P", ("sd", -0.9), -q))
            legs.append(("vol_overlay", "short_strangle", j, "m", 1, "C", ("sd", 0.9), -q))
        for j in alloc["delta_hedged_short_vol"]:
            q = n_of["delta_hedged_short_vol"]
            legs += [
                ("vol_overlay", "delta_hedged_short_vol", j, "m", 1, t, ("atm",), -q) for t in ("C", "P")
            ]
        q = n_of["iron_condor"]
        legs += [
            ("vol_overlay", "iron_condor", 0, "m", 1, "P", ("sd", -0.8), -q),
            ("vol_overlay", "iron_condor", 0, "m", 1, "P", ("sd", -1.6, -1), q),
            ("vol_overlay", "iron_condor", 0, "m", 1, "C", ("sd", 0.6), -q),
            ("vol_overlay", "iron_condor", 0, "m", 1, "C", ("sd", 1.2, -1), q),
        ]
        q = n_of["calendar_spread"]
        legs += [
            ("vol_overlay", "calendar_spread", 0, "m", 1, "C", ("atm",), -q),
            ("vol_overlay", "calendar_spread", 0, "m", 2, "C", ("atm", 0.0, "same"), q),
        ]
        option_rows = self._option_legs(d, legs)
        rows += option_rows

        # delta hedge of each short straddle at the previous close, in round lots of 10 shares
        prev = d - 1
        prev_close = h.close[prev - h.sim0]
        for j in alloc["delta_hedged_short_vol"]:
            mine = [r for r in option_rows if r["strategy"] == "delta_hedged_short_vol" and r["_sym"] == j]
            _, delta = self._contract_values(
                prev,
                int(cal.closes_ns[prev]),
                prev_close,
                np.full(len(mine), j),
                np.array([cal.index(r["expiry"]) for r in mine]),
                np.array([r["strike"] for r in mine]),
                np.array([r["option_type"] == "C" for r in mine]),
            )
            hedge = -float(np.round(np.sum(delta * np.array([r["quantity"] for r in mine]) * 100.0), -1))
            if hedge != 0.0:
                stock("vol_overlay", j, hedge, "delta_hedged_short_vol", prev_close[j])
        n = len(rows)
        data: dict[str, Any] = {c: np.array([r[c] for r in rows], dtype=object) for c in rows[0]}
        for c in ("strike", "quantity", "multiplier", "cost_basis"):
            data[c] = data[c].astype(float)
        data["as_of_date"] = np.full(n, cal.dates[d], dtype=object)
        return self._finish("positions", data, n)

    def _option_legs(self, d: int, legs: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """Roll session, expiry, strike and entry price (model, at the roll close) of each leg."""
        h = self._history()
        u = self._universe()
        cal = _calendar()
        resolved = []
        for book, strategy, j, cycle, nth, otype, rule, qty in legs:
            expiries = cal.monthly if cycle == "m" else cal.quarterly
            i = int(np.searchsorted(expiries - 5, d, side="left")) - 1  # last roll strictly before d
            resolved.append(
                (book, strategy, j, int(expiries[i] - 5), int(expiries[i + nth]), otype, rule, qty)
            )
        strikes = np.zeros(len(resolved))
        cost = np.zeros(len(resolved))
        for roll in sorted({leg[3] for leg in resolved}):
            members = [n for n, leg in enumerate(resolved) if leg[3] == roll]
            sym = np.array([resolved[n][2] for n in members])
            exp = np.array([resolved[n][4] for n in members])
            inc = self._day_reference(roll, sym, exp)["inc"]
            close_ns = int(cal.closes_ns[roll])
            spot_all = h.close[roll - h.sim0]
            sd = np.sqrt(self._surface(roll, close_ns, sym, exp)["theta"])
            for pos, n in enumerate(members):
                rule, step, spot = resolved[n][6], inc[pos], spot_all[sym[pos]]
                atm = step * np.round(spot / step)
                if rule[0] == "atm":
                    k, side = atm, 0
                else:
                    target = spot * (rule[1] if rule[0] == "pct" else np.exp(rule[1] * sd[pos]))
                    side = 1 if target > spot else -1
                    k = step * (np.ceil(target / step) if side > 0 else np.floor(target / step))
                    k = max(k, atm + step) if side > 0 else min(k, atm - step)
                if len(rule) > 2:
                    ref = strikes[n + rule[2]] if rule[2] != "same" else strikes[n - 1]
                    k = ref if rule[2] == "same" else (max(k, ref + step) if side > 0 else min(k, ref - step))
                strikes[n] = max(float(np.round(k, 4)), step)
            is_call = np.array([resolved[n][5] == "C" for n in members])
            cost[members] = self._contract_values(
                roll, close_ns, spot_all, sym, exp, strikes[members], is_call
            )[0]
        out = []
        for n, (book, strategy, j, _, exp_i, otype, _, qty) in enumerate(resolved):
            expiry = cal.dates[exp_i]
            contract = f"{u.symbols[j]}:{expiry.isoformat()}:{_fmt_strike(strikes[n])}:{otype}"
            out.append(
                {
                    "book": book,
                    "position_id": f"{book}:{contract}",
                    "instrument_type": "option",
                    "symbol": u.symbols[j],
                    "expiry": expiry,
                    "strike": float(strikes[n]),
                    "option_type": otype,
                    "exercise_style": "european" if j == 0 else "american",
                    "quantity": float(qty),
                    "multiplier": 100.0,
                    "cost_basis": float(np.round(cost[n], 4)),
                    "strategy": strategy,
                    "sector": u.sectors[j],
                    "_sym": j,
                }
            )
        return out
