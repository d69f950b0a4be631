"""Synthetic market data: a seeded, self-consistent market of fictional stocks and one index (``SYNX``).

Everything is a deterministic function of ``seed`` (and ``n_underlyings``, ``macro_event_dates``, ``market``):
the whole daily history is simulated once per instance for the XNYS sessions 2020-07-01 … 2027-12-31
(the part before 2021-01-04 is burn-in, used for entry prices of the sample book) and tables are
cut from it, so a row never depends on which dates were asked for or in which order. Per-session
extras (intraday path, quote noise) come from generators seeded by ``(seed, stream, session[, minute])``.
Published window: sessions ``FIRST_SESSION`` … ``LAST_SESSION``; other dates raise ``ValueError``.

Prices (daily log returns, one row per symbol and session)::

    index  r = drift + m + crash + J
    stock  r = drift + β (m - a (|m| - E|m|) + crash + J) + s_sector + e + own jumps

``m`` (market), ``s`` (one per sector) and ``e`` (idiosyncratic) are Student-t shocks scaled by
stochastic volatilities. Each Gaussian log-vol is a sum of three AR(1) components with half-lives of 4,
90 and 400 sessions, each moved every day by the factor's own shock (``-z``: falls raise the vol, the
leverage effect; ``|z|``) and by independent noise (soft tanh bounds at ±2 on the log-vol exponent only
keep it finite; there is no variance cap). A name's own log-vol is persistent but bounded: its noise is in
the 90-session component (stationary sd 1.6, none in the 400-session one, whose 7-year average would differ
from name to name) and its exponent's soft upper bound is 1 (the idiosyncratic vol at most e x its median),
normalized by quadrature so its variance has the long-run mean; vol regimes of a name average out over a
7-year path instead of making one name explode. The market's Gaussian vol has a long-run level of 6.5 %
(calm markets); sector and idiosyncratic log-vols load on the market's components too. On top of that, crises
(the long memory and the regimes): a renewal process starts one every 240-650 sessions ('realistic', so
every 760-session window has one). Each crisis drives the market's diffusive vol to a peak level drawn
in absolute terms: a moderate crisis (93 %) to ``18.5 % + 4.5 % V²`` (a plateau near 20 %), a severe one
(7 %) to 50-85 % (uniform), nothing in between (``V`` uniform): it adds the annual variance
``max(peak² - vol², peak² / 4)`` (``vol`` the market's at the onset), built up over a crash phase of 10-20
sessions with random steps, every step with a fall of the market of 12 % per unit of the log-vol rise
(``crash``), held for 115-260 sessions, then decaying with a half-life of 40 sessions; the crisis variance
moves with the market's fast log-vol component (loading 0.6). The crisis log-vol ``R`` (``exp(2R)`` = the
market's variance over its Gaussian part) loads 0.5 on the sectors' and the names' log-vols, so
correlation rises in crises; the stocks' loading on the
market is larger on falls than on rises (``β(1 ± a)``, ``a`` 0.25-0.45, mean-zero), so correlation is
higher on down days. Index jumps ``J`` are a Hawkes process: a baseline of 1.2 a year, each jump raising
the intensity (branching ratio 0.4, half-life 6 sessions) and the market's log-vol; sizes -4.1 % ± 1.5 %
(log); a crisis opens with a crash day of -4.5 % x ``min(peak / 60 %, 1)²`` and adds
15 x ``min(peak / 60 %, 1)²`` jumps a year to the intensity (severe crises crash harder).
Stocks get ``J`` through β and have their own compound Poisson jumps. Earnings moves land on each name's
reaction session (a random sign times a Gamma(2) size); macro moves on ``macro_event_dates`` (Student-t,
10 degrees of freedom) are sized by the market's vol of the day (CPI 1.3x, payrolls 1.1x, FOMC 1.2x, other
types 1x) and hit the index and, through β, every stock. The non-event part of a day is capped at ±30 %
(index ±15 %); the log price reverts very weakly to a drifting anchor (half-life ≈ 1.4 years, started at
its stationary offset) so 7-year paths stay tradable and jumps and crashes are recovered over time. The
``market`` switch:
'realistic' (above), 'calm' (no crises, 60 % of the vol of vol, fewer jumps) or 'crisis' (a crisis
peaking at 45-85 % vol every 250-500 sessions). Every market has the same calm-time vol levels.
OHLC: an overnight gap (20 % of the diffusive variance, any earnings move and the move of a macro
release at 8:30 New York: CPI, payrolls) then an intraday Brownian bridge from open to close; an FOMC
move is a step just after 14:00 New York; other macro types move intraday. High and low are exact draws
of the bridge's maximum and minimum (with the day's whole intraday variance), so
``low <= min(open, close) <= max(open, close) <= high``. Volume rises with |return| and on event days.

``event_flag`` marks the session whose close-to-close return contains the event: the announcement
day for before-open earnings, the next session for after-close earnings, the date itself for
macro events; values 'earnings', the macro type ('macro' for plain dates, or the type given in a
``{date: 'fomc'}`` mapping), or both joined by ';'; None otherwise. The earnings calendar's notes
state the implied move on a straddle basis: sqrt(2/π) x the implied sd of the reaction session (the
event's implied variance plus a day of the name's implied variance).

Option quotes (every underlying, per snapshot):

* Expiries: Friday expiries moved to Thursday on exchange holidays; the next 2 weeklies (index and
  the more liquid half of the stocks, else 1), the next 3 monthlies (third Friday) and quarterlies
  (Mar/Jun/Sep/Dec) up to 380 days out. Strikes: 17-25 per expiry around the previous close with an
  increment from {0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250} (at least 5 for the index) that widens with
  expiry and price; strikes held in ``positions(session)`` are listed too.
* Underlying price at a snapshot (``spot_prices``): one Brownian-bridge path per (seed, session) from
  the open to the close on a one-minute grid, plus an FOMC day's step after 14:00, clipped to the
  day's [low, high].
* Conventions used for pricing (and needed to invert the quotes exactly): time to expiry
  ``T = (expiry session close - as_of) / 365 days`` (UTC instants); rate = the session's
  ``zero_rate`` linearly interpolated in ``tenor_days`` at ``365·T`` (flat outside the tenors);
  dividend = the session's ``dividend_yield``; forward ``F = S·exp((r - q)·T)``.
* Smile: SSVI (Gatheral and Jacquier 2014) ``w(k) = θ/2·(1 + ρφk + sqrt((φk + ρ)² + 1 - ρ²))``,
  ``k = ln(K/F)``, with the power law ``φ = η / (θ^γ (1 + θ)^(1-γ))``, ``γ <= 1/2`` and
  ``η(1 + |ρ|) < 2``, which is free of static arbitrage. θ(T) (``implied_vol_history`` at any tenor) =
  vrp² x the expected diffusive variance to T of a three-level term structure (the current variance
  decays to the medium level, the medium to the slow level and that to a long-run level ``ℓ_t`` that
  moves on its own, a second, slow term-structure factor, so the curve inverts when the current vol is
  far above it) plus the expected index jump variance (from the current Hawkes intensity), plus 1.1² x
  the event variance of every earnings reaction and macro release after ``as_of`` whose session closes
  by the expiry (a macro release sized by the current market vol). The index's vrp moves around 1.07:
  its log jumps up in sell-offs (0.125 per unit of ``-z``) and decays with a half-life of 10 sessions, so
  an option of ``T`` years carries ``vrp_bar (vrp / vrp_bar)^g(kT)`` (``g(x) = (1 - e^-x) / x``: the
  average over its life, the short end moves most); 2 % of annual vol is added to its implied variance;
  the names' vrp is 0.90-0.94 (their IV/RV near 1: implied correlation above realized). Each slice is exactly a raw SVI:
  ``a = θ(1-ρ²)/2, b = θφ/2, ρ, m = -ρ/φ, σ = sqrt(1-ρ²)/φ`` (``true_surface``). Skew is negative: ρ ≈
  -0.7 for the index; for stocks -0.35 … -0.20 with η 0.85-1.2 and, for about a quarter of the names, a
  smile (ρ -0.16 … -0.10, η 1.0-1.35) whose call wing rises above the ATM vol; γ 0.47-0.5 gives 1-month
  25-delta butterflies of 1-3 vol points.
* Prices: index options by the Black-Scholes-Merton European formula; single-stock options are
  American-style contracts (``exercise_style='american'``) priced by the exact American engine
  (``quant.american.american_price``, Andersen-Lake-Offengeld) at the smile's vol for their strike,
  so an American inversion of the mid before spread noise recovers the generating smile
  (``true_surface``) at every strike.
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
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from scipy.special import ndtr

from risk_pipeline.contracts import table
from risk_pipeline.sources.base import MarketDataSource
from risk_pipeline.sources.instruments import instrument_quotes_frame
from risk_pipeline.sources.signals import synthetic_signals

FIRST_SESSION = dt.date(2021, 1, 4)
LAST_SESSION = dt.date(2027, 12, 31)
INDEX_SYMBOL = "SYNX"
INDEX_SECTOR = "Index"
TENORS_DAYS: tuple[int, ...] = (1, 7, 30, 60, 91, 182, 273, 365, 730)
#: Snapshot wall-clock times (America/New_York); the last one is always 15 minutes before the close.
SNAPSHOT_TIMES_NY: tuple[dt.time, ...] = (dt.time(10, 0), dt.time(12, 0), dt.time(14, 0))
LAST_SNAPSHOT_BEFORE_CLOSE = dt.timedelta(minutes=15)
#: Constant maturities (calendar days) of the ``smile_history`` grid.
SMILE_TENORS_DAYS = (10, 30, 60, 91, 182, 365)
#: Rows of ``_atm_total_variance`` computed at once (its event terms hold rows x events arrays).
THETA_BLOCK_ROWS = 131_072
EARNINGS_TIME_NY = {"after close": dt.time(16, 30), "before open": dt.time(8, 0)}
#: Universe sizes (``RISK_PIPELINE_UNIVERSE``): stocks besides the index, and the positions the books total
#: (None: the sample book of about 60 positions; otherwise the scaled book of ``_scaled_plan``, about this many).
UNIVERSES: dict[str, tuple[int, int | None]] = {"sample": (50, None), "medium": (500, 5_000), "large": (3_000, 50_000)}

_SIM_START = dt.date(2020, 7, 1)
_CAL_START = dt.date(2020, 1, 1)
_CAL_END = dt.date(2029, 12, 31)
_EVENTS_END = LAST_SESSION + dt.timedelta(days=400)
_NY = ZoneInfo("America/New_York")
_NS_PER_DAY = 86_400 * 10**9
_NS_PER_YEAR = 365 * _NS_PER_DAY
_QUARTERLY_HORIZON_DAYS = 380
#: Unpriced contracts ``option_quotes_where_many`` builds at once (about 0.1 GiB of memory a million), and the
#: contracts a session lists per underlying, rounded up (314 for the sample universe, 368 at 3,000 names).
CHAIN_ROWS_PER_CALL = 4_000_000
_CHAIN_ROWS_PER_NAME = 400
_NICE_INCREMENTS = np.array([0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0])
_MACRO_SD = 0.012  # daily sd of a macro-day move of the market factor
_MARKET_VOL = 0.16
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
# The parameters below are calibrated to the statistics of the S&P 500 and of option markets that
# bench/bench_market_stats.py prints (and risk_pipeline_tests/sources/test_synthetic_market.py bounds).
MARKETS: tuple[str, ...] = ("calm", "realistic", "crisis")
#: Half-lives in sessions of the fast, medium and slow log-volatility components.
_HALF_LIVES = np.array([4.0, 90.0, 400.0])
_PHI = 0.5 ** (1.0 / _HALF_LIVES)  # daily AR(1) coefficients
_KAPPA = 252.0 * np.log(2.0) / _HALF_LIVES  # annual mean-reversion rates
_JUMP_HALF_LIFE = 6.0  # sessions: decay of the Hawkes excitation of index jumps
_JUMP_BRANCHING = 0.4  # expected index jumps triggered by one index jump
_INDEX_JUMP = (-0.041, 0.015)  # index jump size: mean, sd (log return)
_ONSET_JUMP = (-0.045, 0.015)  # the crash that opens a crisis, per unit of its severity: mean, sd
_CRISIS_JUMP_BOOST = 15.0  # added to the index jump intensity (per year) at a crisis onset, per unit of severity
_INDEX_VRP = 1.07  # index implied / expected vol, long run
_VRP_HALF_LIFE = 10.0  # sessions: decay of the index premium's shocks
_VRP_LOGVOL = (0.125, 0.008)  # index implied/expected log-vol: loading on -z, own noise (half-life 10 sessions)
_CRASH_DRIFT = 0.12  # market fall per unit of crisis log-vol added during a crash phase
#: Sessions of a crash phase (uniform). 10-20, not 15-30 as before: with 15-30, 12.1 % of 250-day windows were red
#: for 99 % historical VaR (target 8-10 %; bench_market_stats.py, seeds 0-29); 10-20 brings it into the band with
#: the other bands held, 5-10 overshoots skewness and kurtosis (README). _crisis_moment's mean ramp follows it.
_CRASH_DAYS = (10, 20)
_CRISIS_HALF_LIFE = 40.0  # sessions: decay of the crisis log-vol after its crash phase
#: Daily moves of the (fast, medium, slow) log-vol components per unit of -z (leverage), of |z| - E|z| and of
#: independent noise: the market's, the sectors' and the names' own (bounded above by _NAME_LOGVOL_CAP).
_MARKET_LOGVOL = ((0.155, 0.015, 0.003), (0.010, 0.010, 0.0), (0.006, 0.008, 0.005))
_FACTOR_LOGVOL = ((0.010, 0.010, 0.003), (0.025, 0.012, 0.0), (0.015, 0.085, 0.030))
_NAME_LOGVOL = ((0.010, 0.010, 0.003), (0.025, 0.012, 0.0), (0.015, 0.20, 0.0))
_JUMP_FEEDBACK = (0.040, 0.053, 0.0)  # market log-vol components per index jump (scaled to its size)
_MARKET_NU = 14.0  # Student-t degrees of freedom of the market's shocks
_IDIO_NU = (8.0, 12.0)  # ... of the names' own shocks (uniform range; sectors 6-9)
_MARKET_LOAD = (0.5, 0.9)  # loading of the sectors' and names' log-vols on the market's components
_CRISIS_LOAD = (0.5, 0.5)  # loading of the sectors' and names' log-vols on the crisis log-vol (market: 1)
_LOGVOL_BOUNDS = (2.0, 2.0)  # soft bounds (tanh) of the Gaussian log-vol exponent: below, above
_NAME_LOGVOL_CAP = 1.0  # soft upper bound of the names' idiosyncratic log-vol exponent (vol up to e^this x its median)
_FULL_CRASH_PEAK = 0.6  # crisis peak vol from which its opening crash and jump burst are full size
_CRASH_POWER = 2.0  # below it they scale as (peak / _FULL_CRASH_PEAK)^this
_MAX_JUMP_SCALE = 2.0  # largest multiplier of index jump sizes and intensity in high vol
_CRISIS_FAST_LOAD = 0.6  # loading of the crisis log-vol on the market's fast log-vol component
_JUMP_VOL_POWER = 0.0  # index jump sizes and intensity grow as (variance / h_bar)^this
_MIN_BUMP = 0.3  # smallest crisis log-vol bump (a crisis starting when the market's vol is above its peak target)
_CALM_VOL = 0.065  # the market's long-run vol outside crises (annual, the Gaussian part's level)
_LEVEL_HALF_LIFE = 120.0  # sessions
_LEVEL_PREMIUM = 1.25  # median multiplier of the long-run variance options revert to
_LEVEL_LOGVOL = (0.006, 0.040)  # long-run level's innovations: loading on -z of the market, own noise
_INDEX_VAR_PREMIUM = 0.02**2  # annual variance added to the index's implied variance (all regimes)
#: Size of a macro release's move, x the market's daily vol of the day (other types: 1.0; 'opex' does not move).
_MACRO_SCALE = {"cpi": 1.3, "nfp": 1.1, "payrolls": 1.1, "ppi": 0.8, "gdp": 0.8, "fomc": 1.2, "opex": 0.0}
_MACRO_NU = 10.0  # Student-t degrees of freedom of a macro release's move
_GAP_EVENTS = frozenset({"cpi", "nfp", "payrolls", "ppi", "gdp"})  # released 8:30 New York: the move is in the open
_AFTERNOON_EVENTS = frozenset({"fomc"})  # 14:00 New York: the move is after the 14:00 snapshot
_AFTERNOON_NY = dt.time(14, 0)
_EVENT_PREMIUM = 1.1  # implied / true sd of an event move (earnings, macro)
_DOWN_BETA = (0.25, 0.45)  # range of a: stocks load β(1 + a) on index falls, β(1 - a) on rises
_NAME_VRP = (0.90, 0.94)  # the names' implied / expected vol (uniform range)
_IDIO_SCALE = 1.25  # multiplier of the names' idiosyncratic long-run variance
_EARNINGS_SCALE = 0.7  # earnings-move sd per unit of uniform(2.5 %, 8.5 %) x sqrt(name's vol / 35 %)


@dataclass(frozen=True)
class _Regime:
    """What the ``market`` switch sets."""

    crisis_gap: tuple[int, int]  # sessions between crisis onsets: uniform range ((0, 0): no crises)
    peak_vol: tuple[float, float, float]  # annual vol a crisis drives the market to: lo + (hi - lo) U^power
    jumps_per_year: float  # baseline intensity of index jumps (before self-excitation)
    vol_of_vol: float  # scale of the Gaussian log-vol components
    vol_scale: float  # scale of the market's long-run vol
    crisis_hold: tuple[int, int] = (0, 0)  # sessions a crisis holds its peak log-vol before it decays (uniform)
    severe: tuple[float, float, float] = (0.0, 0.0, 0.0)  # share of severe crises and their peak vol range (uniform)

    @property
    def crisis_rate(self) -> float:
        """Crisis onsets per session (the renewal process's long-run rate)."""
        return 2.0 / sum(self.crisis_gap) if self.crisis_gap[1] > 0 else 0.0

    def peak_at(self, u: np.ndarray) -> np.ndarray:
        """Crisis peak vol (annual) at the uniform draw ``u``: ``lo + (hi - lo) v^power`` (peak_vol) for a moderate
        crisis, uniform in the severe range for the top ``severe[0]`` of ``u`` (``v``: ``u`` rescaled to 0-1)."""
        lo, hi, power = self.peak_vol
        share, severe_lo, severe_hi = self.severe
        u = np.asarray(u, dtype=np.float64)
        mild = u < 1.0 - share
        v = np.where(mild, u / (1.0 - share), (u - 1.0 + share) / max(share, 1e-12))
        return np.where(mild, lo + (hi - lo) * v**power, severe_lo + (severe_hi - severe_lo) * v)

    def crash_at(self, peak: np.ndarray) -> np.ndarray:
        """Size of a crisis' opening crash and jump burst (0-1) from its peak vol: severe crises crash harder."""
        return np.minimum(np.asarray(peak) / _FULL_CRASH_PEAK, 1.0) ** _CRASH_POWER

    def severity_at(self, u: np.ndarray) -> np.ndarray:
        """Crisis log-vol bump at ``u`` for a crisis starting at the typical onset vol (normalizations only)."""
        return np.maximum(np.log(self.peak_at(u) / _CALM_VOL), _MIN_BUMP)


_REGIMES: dict[str, _Regime] = {
    "calm": _Regime((0, 0), (_CALM_VOL, _CALM_VOL, 1.0), 0.6, 0.6, 1.0),
    "realistic": _Regime((240, 650), (0.185, 0.23, 2.0), 1.2, 1.0, 1.0, (115, 260), (0.07, 0.50, 0.85)),
    "crisis": _Regime((250, 500), (0.45, 0.85, 1.0), 1.4, 1.0, 1.0, (130, 300)),
}


@dataclass(frozen=True)
class _VolModel:
    """Log-vol model of the market (column 0), the sectors and the idiosyncratic parts (daily units).

    ``y = Σ_k X_k + market_load · Σ_k X^market_k + crisis_load · R``; variance ``h = h_bar exp(2 soft(y - c))``
    (``_soft``), times ``exp(2R)`` for the market, whose crisis log-vol ``R`` is outside the soft bounds.
    Component ``k`` of a factor moves by ``lev_k (-z) + abs_k (|z| - E|z|) + noise_k ξ`` per day.
    """

    h_bar: np.ndarray  # (F,) long-run daily variance
    nu: np.ndarray  # (F,) Student-t degrees of freedom of the shocks
    lev: np.ndarray  # (F, 3)
    absn: np.ndarray  # (F, 3)
    noise: np.ndarray  # (F, 3)
    market_load: np.ndarray  # (F,) 0 for the market itself
    crisis_load: np.ndarray  # (F,)
    jump_load: np.ndarray  # (3,) market components per unit of index jump (-J / 3.5 %)
    c: np.ndarray  # (F,) normalization: E[h] = h_bar in the realistic market (calm-time vols alike in every market)
    var_k: np.ndarray  # (F, 3) stationary variance of each own component
    crisis_m2: np.ndarray  # (F,) E[exp(2 crisis_load R)] of this market (the market's with load 1)
    abs_mean: np.ndarray  # (F,) E|z|
    upper: np.ndarray  # (F,) soft upper bound of the log-vol exponent


@dataclass(frozen=True)
class _Universe:
    """Per-symbol parameters; position 0 is the index."""

    symbols: tuple[str, ...]
    sectors: tuple[str, ...]
    sector_id: np.ndarray  # -1 for the index
    beta: np.ndarray
    asym: np.ndarray  # down-day loading: β(1 + asym) on index falls, β(1 - asym) on rises
    div0: np.ndarray
    price0: np.ndarray
    lr_var: np.ndarray  # annual long-run diffusive variance
    jump_lam: np.ndarray  # own Poisson jumps per year (the index's are Hawkes, see _History.jump_lam)
    jump_mu: np.ndarray
    jump_sd: np.ndarray
    jump_var: np.ndarray  # annual long-run variance of all jumps a symbol sees
    earn_sd: np.ndarray
    earn_after_close: np.ndarray
    earn_lag: np.ndarray
    rho: np.ndarray
    eta: np.ndarray
    gamma: np.ndarray
    vrp: np.ndarray  # implied / expected vol (the index's moves around it, see _History.vrp)
    oi_base: np.ndarray
    volume_base: np.ndarray
    n_weeklies: np.ndarray
    vol: _VolModel
    index_jump_rate: float  # long-run index jumps per year

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
    med_ann: np.ndarray  # (n + 1, N) the same without the fast component (the medium level options see)
    slow_ann: np.ndarray  # (n + 1, N) the slow level options see
    jump_var: np.ndarray  # (n + 1,) expected index jump variance per year of day t (intensity x size²)
    vrp: np.ndarray  # (n + 1,) index implied / expected vol
    level: np.ndarray  # (n + 1,) multiplier of the long-run variance options revert to
    intraday_var: np.ndarray
    afternoon: np.ndarray  # (n, N) log move after 14:00 New York (FOMC days), part of the close
    flags: np.ndarray  # object: None, 'earnings', the macro type, or both joined by ';'
    curve: np.ndarray  # (n, len(TENORS_DAYS))
    divs: np.ndarray
    rho: np.ndarray
    reactions: np.ndarray  # (N, quarters) session index of each earnings reaction (index row: -1)
    announce: np.ndarray  # (N, quarters) session index of each announcement (index row: -1)
    macro_idx: np.ndarray  # sorted session indices of macro events
    macro_ns: np.ndarray  # instant after which each macro event's move is in the price (UTC ns)
    macro_scale: np.ndarray  # its size in units of the market's daily vol
    crisis: np.ndarray  # (n + 1,) crisis log-vol R of day t
    index_jump: np.ndarray  # (n,) index jump log return of day t (0 without one; crash days included)


def _abs_mean_t(nu: np.ndarray) -> np.ndarray:
    """E|z| of a Student-t scaled to unit variance."""
    from scipy.special import gammaln

    e_abs = 2.0 * np.sqrt(nu) * np.exp(gammaln((nu + 1.0) / 2.0) - gammaln(nu / 2.0)) / (np.sqrt(np.pi) * (nu - 1.0))
    return e_abs * np.sqrt((nu - 2.0) / nu)


def _crisis_profile(ramp: np.ndarray, hold: int) -> np.ndarray:
    """A crisis' log-vol per unit severity on the sessions after its onset: ``ramp`` (rising to 1), ``hold``
    sessions at 1, then a decay with half-life _CRISIS_HALF_LIFE (cut after 20 half-lives)."""
    decay = 0.5 ** (np.arange(1, int(20 * _CRISIS_HALF_LIFE) + 1) / _CRISIS_HALF_LIFE)
    return np.concatenate([ramp, np.ones(hold), decay])


def _crisis_moment(regime: _Regime, load: np.ndarray) -> np.ndarray:
    """E[exp(2 load R)] over time, R the crisis log-vol: ``exp(2R) = 1 + (peak / calm vol)² g(τ)²`` τ sessions
    after an onset (g: _crisis_profile with the mean crash phase and hold), onsets at the regime's rate, overlaps
    neglected: ``1 + rate Σ_τ E[(1 + (peak / calm)² g(τ)²)^load - 1]``."""
    rate = regime.crisis_rate
    if rate <= 0.0:
        return np.ones_like(load)
    ratio2 = (regime.peak_at((np.arange(64) + 0.5) / 64.0) / _CALM_VOL) ** 2  # midpoint quadrature over U
    n_ramp = round(0.5 * sum(_CRASH_DAYS))
    g2 = _crisis_profile(np.arange(1, n_ramp + 1) / n_ramp, round(0.5 * sum(regime.crisis_hold))) ** 2
    loads, back = np.unique(np.asarray(load, dtype=np.float64), return_inverse=True)
    excess = ((1.0 + ratio2[None, None, :] * g2[None, :, None]) ** loads[:, None, None] - 1.0).mean(axis=2)
    return (1.0 + rate * np.sum(excess, axis=1))[back.reshape(-1)]


def _soft(y: np.ndarray, upper: np.ndarray | float = _LOGVOL_BOUNDS[1]) -> np.ndarray:
    """Log-vol exponent with soft bounds: ``Y tanh(y / Y)`` with Y = ``upper`` above 0, _LOGVOL_BOUNDS[0] below."""
    bound = np.where(y > 0.0, upper, _LOGVOL_BOUNDS[0])
    return bound * np.tanh(y / bound)


def _soft_shift(var: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """``c`` with ``E[exp(2 soft(x - c, upper))] = 1`` for ``x ~ N(0, var)`` (Gauss-Hermite, bisection)."""
    nodes, weights = _hermite_nodes(48)
    x = np.sqrt(np.asarray(var, dtype=np.float64))[:, None] * nodes[None, :]
    up = np.asarray(upper, dtype=np.float64)[:, None]
    lo, hi = np.full(x.shape[0], -5.0), np.full(x.shape[0], 10.0)
    for _ in range(60):  # E[...] falls as c rises
        c = 0.5 * (lo + hi)
        above = np.exp(2.0 * _soft(x - c[:, None], up)) @ weights > 1.0
        lo, hi = np.where(above, c, lo), np.where(above, hi, c)
    return 0.5 * (lo + hi)


@functools.cache
def _hermite_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights (summing to 1) for expectations over a standard normal."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    return nodes, weights / weights.sum()


def _soft_mean(mean: np.ndarray, var: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """``E[exp(2 soft(mean + x, upper))]`` for ``x ~ N(0, var)``, per column (``var``, ``upper``: one per column).

    Gauss-Hermite (60 nodes) on a grid of means (step 0.025, linear interpolation: relative error below 1e-3),
    one table per distinct (var, upper) rounded to 4 decimals (the names' variances differ by far less).
    """
    nodes, weights = _hermite_nodes(60)
    grid = np.linspace(-10.0, 10.0, 801)
    out = np.empty_like(mean)
    keys = np.round(np.column_stack([var, upper]), 4)
    for key in np.unique(keys, axis=0):
        cols = np.flatnonzero((keys == key).all(axis=1))
        table = np.exp(2.0 * _soft(grid[:, None] + math.sqrt(key[0]) * nodes[None, :], key[1])) @ weights
        out[:, cols] = np.interp(mean[:, cols], grid, table)
    return out


def _g(x: np.ndarray) -> np.ndarray:
    """(1 - e^-x) / x with its limit 1 at 0."""
    return np.where(x > 1e-8, -np.expm1(-x) / np.maximum(x, 1e-300), 1.0 - 0.5 * x)


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
    after them); a plain sequence flags them 'macro', a mapping ``{date: 'fomc' | 'cpi' | 'nfp' | ...}``
    uses its values and times the move (module docstring). ``market``: 'realistic' (default), 'calm'
    or 'crisis' (module docstring). ``book_positions``: None for the sample book (books core_equity and
    vol_overlay, about 60 positions); a number for the scaled book of a large universe (the sample's strategies
    on proportionally more names plus an option ladder on every other stock, about that many positions in all,
    ``UNIVERSES``). Results are cached per instance; every call returns a fresh frame.
    """

    name = "synthetic"

    def __init__(
        self,
        seed: int = 7,
        n_underlyings: int = 50,
        macro_event_dates: Sequence[dt.date] | Mapping[dt.date, str] = (),
        market: Literal["calm", "realistic", "crisis"] = "realistic",
        book_positions: int | None = None,
    ) -> None:
        if market not in MARKETS:
            raise ValueError(f"market must be one of {', '.join(MARKETS)}")
        if seed < 0:
            raise ValueError("seed must be >= 0")
        if not 1 <= n_underlyings <= 5000:
            raise ValueError("n_underlyings must be in 1..5000")
        if book_positions is not None and book_positions < 100:
            raise ValueError("book_positions must be None (the sample book) or at least 100")
        self.seed = int(seed)
        self.n_underlyings = int(n_underlyings)
        #: None: the sample book; otherwise the scaled book of about this many positions (``_scaled_plan``).
        self.book_positions = None if book_positions is None else int(book_positions)
        #: 'calm' (no crises, lower and tamer vol), 'realistic' (a stress episode every 220-650 sessions,
        #: a few of them severe) or 'crisis' (a severe crisis every 150-450 sessions).
        self.market: str = market
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
        market_tag = "" if market == "realistic" else f", market={market}"
        self.source_label = f"synthetic(seed={self.seed}{market_tag})"
        self._universe_cache: _Universe | None = None
        self._history_cache: _History | None = None
        self._plan_cache: dict[str, Any] | None = None
        self._frames: dict[str, pd.DataFrame] = {}
        self._positions_cache: dict[int, pd.DataFrame] = {}
        self._held_cache: dict[tuple[tuple[int, int], ...], np.ndarray] = {}

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

    def option_quotes_where(
        self, session: dt.date, select: Callable[[pd.DataFrame], np.ndarray], snapshot_time: dt.datetime | None = None
    ) -> pd.DataFrame:
        """The rows of ``option_quotes(session, snapshot_time)`` that ``select`` keeps, identical to the full
        chain's; only those are priced. ``select`` gets the unpriced chain (``base.QUOTE_KEY_COLUMNS``) and
        returns a boolean mask over its rows."""
        d, as_of_ns = self._snapshot(session, snapshot_time)
        return self._chain(d, as_of_ns, select)

    def option_quotes_where_many(
        self, sessions: Sequence[dt.date], select: Callable[[pd.DataFrame], np.ndarray], block: int | None = None
    ) -> pd.DataFrame:
        """``option_quotes_where(session, select)`` at the last snapshot of each session, in one frame (sessions
        in the given order, index reset), identical to the per-session frames concatenated. ``select`` gets the
        unpriced chains of up to ``block`` sessions at once (categorical keys); the kept contracts of those
        sessions are priced in one call. The default ``block`` holds about ``CHAIN_ROWS_PER_CALL`` unpriced
        contracts (at most 20 sessions): 20 for the sample universe, 3 at 3,000 names."""
        if block is None:
            per_session = _CHAIN_ROWS_PER_NAME * len(self._universe().symbols)
            block = max(1, min(20, CHAIN_ROWS_PER_CALL // per_session))
        frames = []
        for i in range(0, len(sessions), block):
            snaps = [self._snapshot(s, None) for s in sessions[i : i + block]]
            frames.append(self._chain_many([d for d, _ in snaps], [t for _, t in snaps], select))
        if not frames:
            return self._finish("option_quotes", {c: np.empty(0) for c in table("option_quotes").data_column_names}, 0)
        out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        out.attrs["source_files"] = [self.source_label]
        return out

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

    def implied_vol_history(
        self, start: dt.date, end: dt.date, tenors_days: Sequence[int] = (30, 91, 182, 365)
    ) -> pd.DataFrame:
        """Constant-maturity vols of the generating surface at each session's last snapshot.

        Per published session in [start, end], symbol and tenor (calendar days, T = tenor / 365):
        ``atm_vol`` at the forward (``sqrt(θ / T)``) and the vols at the forward-delta 25 % put and call
        strikes (``put_25d_vol``, ``call_25d_vol``) of the SSVI slice with that θ. The quotes of
        ``option_quotes`` are priced off the same surface at their listed expiries (``true_surface``).
        """
        cal = _calendar()
        u = self._universe()
        h = self._history()
        lo, hi = self._public_range(start, end)
        days = np.arange(lo, hi)
        tenors = np.asarray(tenors_days, dtype=float)
        n_d, n_s, n_k = len(days), len(u.symbols), len(tenors)
        d = np.repeat(days, n_s * n_k)
        sym = np.tile(np.repeat(np.arange(n_s), n_k), n_d)
        T = np.tile(tenors / 365.0, n_d * n_s)
        as_of = cal.closes_ns[d] - int(LAST_SNAPSHOT_BEFORE_CLOSE.total_seconds()) * 10**9
        theta = self._atm_total_variance(d, as_of, sym, T)
        g = u.gamma[sym]
        phi = u.eta[sym] / (theta**g * (1.0 + theta) ** (1.0 - g))
        rho = h.rho[d - h.sim0, sym]
        z25 = 0.6744897501960817  # N^-1(0.75)
        k_call = np.zeros_like(theta)
        k_put = np.zeros_like(theta)
        for _ in range(12):  # fixed point of k = sqrt(w(k)) (±z + sqrt(w(k)) / 2): forward delta ±25 %
            s_c = np.sqrt(_ssvi_total_variance(k_call, theta, phi, rho))
            s_p = np.sqrt(_ssvi_total_variance(k_put, theta, phi, rho))
            k_call, k_put = s_c * (z25 + 0.5 * s_c), s_p * (0.5 * s_p - z25)
        frame = pd.DataFrame(
            {
                "as_of_date": np.array(cal.dates, dtype=object)[d],
                "symbol": np.array(u.symbols, dtype=object)[sym],
                "tenor_days": np.tile(np.asarray(tenors_days, dtype=np.int64), n_d * n_s),
                "atm_vol": np.sqrt(theta / T),
                "put_25d_vol": np.sqrt(_ssvi_total_variance(k_put, theta, phi, rho) / T),
                "call_25d_vol": np.sqrt(_ssvi_total_variance(k_call, theta, phi, rho) / T),
            }
        )
        return frame

    def smile_history(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        """The ``smile_history`` table: ``implied_vol_history`` at ``SMILE_TENORS_DAYS`` (the quotes' surface)."""
        frame = self.implied_vol_history(start, end, SMILE_TENORS_DAYS)
        data = {c: frame[c].to_numpy() for c in frame.columns}
        return self._finish("smile_history", data, len(frame))

    def index_jumps(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        """The index's jump part of each published session's return in [start, end] (0.0 without one).

        Hawkes jumps and the crash that opens each crisis, as log returns (the generator's ground truth).
        """
        h = self._history()
        lo, hi = self._public_range(start, end)
        return pd.DataFrame(
            {
                "as_of_date": np.array(_calendar().dates[lo:hi], dtype=object),
                "jump": h.index_jump[lo - h.sim0 : hi - h.sim0],
            }
        )

    def spot_prices(self, session: dt.date, snapshot_time: dt.datetime | None = None) -> pd.Series:
        """Every symbol's price at ``snapshot_time`` (default: the last snapshot): the quotes' underlying_price."""
        d, as_of_ns = self._snapshot(session, snapshot_time)
        return pd.Series(self._spot(d, as_of_ns), index=pd.Index(self.symbols(), name="symbol"), name="price")

    def instrument_quotes(self, session: dt.date, snapshot_time: dt.datetime | None = None) -> pd.DataFrame:
        """Quarterly SYNX futures and the daily-reset -1x ETF at the snapshot (sources/instruments.py).

        Futures at the cost-of-carry fair value off the snapshot's index price, the session's zero curve
        and index dividend yield; the ETF on the published index closes from its launch session.
        """
        d, as_of_ns = self._snapshot(session, snapshot_time)
        day = _calendar().dates[d]
        bars = self._slice("market_prices", FIRST_SESSION, day, len(self._universe().symbols))
        idx = bars[bars["symbol"] == INDEX_SYMBOL]
        closes = pd.Series(idx["close"].to_numpy(float), index=list(idx["as_of_date"]))
        dividends = self.dividend_yields(day, day)
        frame = instrument_quotes_frame(
            index_symbol=INDEX_SYMBOL,
            session=day,
            as_of=pd.Timestamp(as_of_ns, tz="UTC"),
            index_price=float(self._spot(d, as_of_ns)[0]),
            index_closes=closes,
            curve=self.rates_curve(day, day),
            index_dividend_yield=float(dividends.loc[dividends["symbol"] == INDEX_SYMBOL, "dividend_yield"].iloc[0]),
            source=self.source_label,
        )
        return self._finish("instrument_quotes", {c: frame[c] for c in frame.columns}, len(frame))

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

    def held_symbols(self, session: dt.date) -> set[str]:
        """``set(positions(session)["symbol"])`` without building the positions (their option legs' prices): the
        names of the stock legs and of the option legs (a delta hedge's stock is an option leg's name), the same
        on every session."""
        self._public_index(session)
        u = self._universe()
        alloc = self._plan()["alloc"]
        stocks = [j for s in ("long_stock", "short_stock", "covered_call", "protective_put") for j in alloc[s]]
        return {u.symbols[j] for j in (*stocks, *(leg[2] for leg in self._option_leg_specs()))}

    def signals(self, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Trade signals with a weak, noisy edge for every published session in [start, end] (sources/signals.py)."""
        h = self._history()
        u = self._universe()
        lo, hi = self._public_range(start, end)
        days = np.arange(lo, hi)
        data = synthetic_signals(
            h.close, days - h.sim0, np.array(_calendar().dates[lo:hi], dtype=object),
            np.array(u.symbols, dtype=object), u.is_index, self.seed, days,
        )  # fmt: skip
        return self._finish("signals", data, len(data["symbol"]))

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
        regime = _REGIMES[self.market]
        names = _ticker_list(self.n_underlyings)
        n = len(names)
        sector_names = list(_SECTORS)
        sec = np.array([sector_names.index(s) for _, s in names])
        fvol, dlevel, vrange, bmean = (np.array(x) for x in zip(*(_SECTORS[s] for _, s in names), strict=True))

        beta = np.clip(bmean + rng.normal(0.0, 0.2, n), 0.5, 1.8)
        target = rng.uniform(vrange[:, 0], vrange[:, 1])
        earn_sd = _EARNINGS_SCALE * rng.uniform(0.025, 0.085, n) * np.sqrt(target / 0.35)
        jump_lam = rng.uniform(1.0, 3.0, n)
        jump_mu = np.full(n, -0.005)
        jump_sd = rng.uniform(0.025, 0.05, n)
        own_jump_var = jump_lam * (jump_mu**2 + jump_sd**2)
        div = np.clip(dlevel * rng.lognormal(0.0, 0.35, n), 0.0, 0.04)
        div = np.where((dlevel < 0.012) & (rng.random(n) < 0.35), 0.0, div)
        price0 = np.exp(rng.uniform(np.log(18.0), np.log(450.0), n))
        after_close = rng.random(n) < 0.7
        lag = rng.integers(12, 36, n)
        # smiles: most names skewed, about a quarter with a smile whose call wing rises above the ATM vol
        smile_name = rng.random(n) < 0.25
        rho = np.where(smile_name, rng.uniform(-0.16, -0.10, n), rng.uniform(-0.35, -0.20, n))
        eta = np.where(smile_name, rng.uniform(1.0, 1.35, n), rng.uniform(0.85, 1.2, n))
        eta = np.minimum(eta, 1.9 / (1.0 + np.abs(rho)))
        gamma = rng.uniform(0.47, 0.5, n)
        vrp = rng.uniform(*_NAME_VRP, n)
        liquidity = rng.lognormal(0.0, 0.7, n)
        weeklies = np.where(liquidity >= np.median(liquidity), 2, 1)
        asym = rng.uniform(*_DOWN_BETA, n)

        # index jumps: Hawkes with baseline jumps_per_year x E[exp(load R)] and branching ratio
        crisis_rate = regime.crisis_rate
        base_rate = regime.jumps_per_year  # x E[sqrt(h / h_bar)], close to 1
        mean_crash = float(np.mean(regime.crash_at(regime.peak_at((np.arange(64) + 0.5) / 64.0))))
        boost_jumps = crisis_rate * mean_crash * _CRISIS_JUMP_BOOST / (1.0 - 0.5 ** (1.0 / _JUMP_HALF_LIFE))
        index_jump_rate = (base_rate + boost_jumps) / (1.0 - _JUMP_BRANCHING) + crisis_rate * 252.0
        idx_jump_var = index_jump_rate * (_INDEX_JUMP[0] ** 2 + _INDEX_JUMP[1] ** 2)

        e_abs2 = 0.8  # E|z|² of the market shock (approximate, t with 6-7 dof), for the asymmetric-beta variance
        market_vol = _MARKET_VOL * regime.vol_scale
        systematic = (beta * market_vol) ** 2 * (1.0 + asym**2 * (1.0 - e_abs2)) + fvol**2
        idio_var = _IDIO_SCALE * np.maximum(
            target**2 - systematic - own_jump_var - beta**2 * idx_jump_var - 4.0 * earn_sd**2, 0.07**2
        )

        # log-vol model: market, one per sector, one per name
        n_sec = len(_SECTORS)
        sector_vol = np.array([v[0] for v in _SECTORS.values()])
        n_f = 1 + n_sec + n
        s = regime.vol_of_vol
        lev = np.zeros((n_f, 3))
        absn = np.zeros((n_f, 3))
        noise = np.zeros((n_f, 3))
        lev[0], absn[0], noise[0] = _MARKET_LOGVOL
        lev[1 : 1 + n_sec], absn[1 : 1 + n_sec], noise[1 : 1 + n_sec] = _FACTOR_LOGVOL
        lev[1 + n_sec :], absn[1 + n_sec :], noise[1 + n_sec :] = _NAME_LOGVOL
        lev, absn, noise = lev * s, absn * s, noise * s
        market_load = np.concatenate([[0.0], np.full(n_sec, _MARKET_LOAD[0]), np.full(n, _MARKET_LOAD[1])])
        crisis_load = np.concatenate([[0.0], np.full(n_sec, _CRISIS_LOAD[0]), np.full(n, _CRISIS_LOAD[1])])
        nu = np.concatenate([[_MARKET_NU], rng.uniform(6.0, 9.0, n_sec), rng.uniform(*_IDIO_NU, n)])
        abs_mean = _abs_mean_t(nu)
        var_k = (lev**2 + absn**2 * (1.0 - abs_mean[:, None] ** 2) + noise**2) / (1.0 - _PHI[None, :] ** 2)
        # E[exp(2 load R)] of this market's crises and of the realistic one's: every market is normalized as
        # the realistic one (same calm-time vols); its long-run variances grow by the ratio (none in 'calm')
        full_load = np.where(crisis_load > 0, crisis_load, 1.0)  # the market's crisis multiplies outside the bounds
        crisis_m2 = _crisis_moment(regime, full_load)
        growth = crisis_m2 / _crisis_moment(_REGIMES["realistic"], full_load)
        own = var_k.sum(axis=1)
        upper = np.concatenate([np.full(1 + n_sec, _LOGVOL_BOUNDS[1]), np.full(n, _NAME_LOGVOL_CAP)])
        gauss = own + market_load**2 * own[0]
        # index jumps raise the market's log-vol by jump_load per jump on average: part of the normalization
        feedback = float(np.sum(np.array(_JUMP_FEEDBACK) * s * index_jump_rate / 252.0 / (1.0 - _PHI)))
        c = (
            np.concatenate([gauss[:1], _soft_shift(gauss[1:], upper[1:])])
            + 0.5 * np.log(crisis_m2 / growth)
            + np.where(market_load > 0, market_load, 1.0) * feedback
        )
        # the market's Gaussian log-vol is normalized to the calm level; its crises come on top (in absolute terms)
        calm_vol = _CALM_VOL * regime.vol_scale
        c[0] -= 0.5 * np.log(crisis_m2[0] / growth[0])
        h_bar = np.concatenate([[calm_vol**2], sector_vol**2, idio_var]) / 252.0
        vol = _VolModel(
            h_bar=h_bar,
            nu=nu,
            lev=lev,
            absn=absn,
            noise=noise,
            market_load=market_load,
            crisis_load=crisis_load,
            jump_load=np.array(_JUMP_FEEDBACK) * s,
            c=c,
            var_k=var_k,
            crisis_m2=crisis_m2,
            abs_mean=abs_mean,
            upper=upper,
        )

        def with_index(value: float, values: np.ndarray) -> np.ndarray:
            return np.concatenate([np.array([value], dtype=values.dtype), values])

        return _Universe(
            symbols=(INDEX_SYMBOL, *(t for t, _ in names)),
            sectors=(INDEX_SECTOR, *(s for _, s in names)),
            sector_id=with_index(-1, sec),
            beta=with_index(1.0, beta),
            asym=with_index(0.0, asym),
            div0=with_index(0.015, div),
            price0=with_index(_INDEX_LEVEL0, price0),
            lr_var=with_index(
                calm_vol**2 * crisis_m2[0],
                (systematic - fvol**2) * growth[0] + fvol**2 * growth[1 + sec] + idio_var * growth[1 + n_sec :],
            ),
            jump_lam=with_index(0.0, jump_lam),
            jump_mu=with_index(0.0, jump_mu),
            jump_sd=with_index(0.0, jump_sd),
            jump_var=with_index(idx_jump_var, own_jump_var + beta**2 * idx_jump_var),
            earn_sd=with_index(0.0, earn_sd),
            earn_after_close=with_index(False, after_close),
            earn_lag=with_index(0, lag),
            rho=with_index(-0.70, rho),
            eta=with_index(1.0, eta),
            gamma=with_index(0.5, gamma),
            vrp=with_index(_INDEX_VRP, vrp),
            oi_base=with_index(20_000.0, 1500.0 * liquidity),
            volume_base=with_index(3.0e9, 2.5e6 * liquidity * np.sqrt(100.0 / price0)),
            n_weeklies=with_index(2, weeklies),
            vol=vol,
            index_jump_rate=float(index_jump_rate),
        )

    # ------------------------------------------------------------------ history
    def _history(self) -> _History:
        if self._history_cache is None:
            self._history_cache = self._build_history()
        return self._history_cache

    def _build_history(self) -> _History:
        u = self._universe()
        v = u.vol
        regime = _REGIMES[self.market]
        cal = _calendar()
        sim0 = int(np.searchsorted(cal.ordinals, _SIM_START.toordinal()))
        sim1 = cal.index(LAST_SESSION) + 1
        n_t = sim1 - sim0
        n_sym = len(u.symbols)
        n_sec = len(_SECTORS)
        n_f = len(v.h_bar)
        beta_s = u.beta[1:]
        sec = u.sector_id[1:]

        # log-vol components before the index-jump feedback (rows: day t's state; the last row is the next day's)
        rng = np.random.default_rng([self.seed, 2])
        z = rng.standard_t(v.nu, size=(n_t, n_f)) * np.sqrt((v.nu - 2.0) / v.nu)
        parts = []
        for k in range(3):
            innov = (
                v.lev[:, k] * (-z)
                + v.absn[:, k] * (np.abs(z) - v.abs_mean)
                + v.noise[:, k] * rng.standard_normal((n_t, n_f))
            )
            x0 = rng.standard_normal(n_f) * np.sqrt(v.var_k[:, k])
            xk = np.empty((n_t + 1, n_f))
            xk[0] = x0
            xk[1:] = lfilter([1.0], [1.0, -_PHI[k]], innov, axis=0, zi=(_PHI[k] * x0)[None, :])[0]
            parts.append(xk)

        # crises: an onset on day t (a crash day) raises the crisis log-vol R from day t + 1
        rng = np.random.default_rng([self.seed, 20])
        onset = np.zeros(n_t, dtype=bool)
        if regime.crisis_gap[1] > 0:  # a renewal process: gaps uniform in crisis_gap, the first within one gap
            t = int(rng.integers(0, regime.crisis_gap[1]))
            while t < n_t:
                onset[t] = True
                t += int(rng.integers(regime.crisis_gap[0], regime.crisis_gap[1] + 1))
        # each crisis drives the market's vol to a peak level drawn in absolute terms (regime.peak_vol): its
        # log-vol bump (the severity) is log(peak / the market's vol at the onset), at least _MIN_BUMP, so a
        # crisis out of a calm market climbs further and the peaks' distribution does not depend on the start
        peak = regime.peak_at(rng.random(n_t))
        gauss_vol = np.sqrt(252.0 * v.h_bar[0]) * np.exp(
            _soft(parts[0][:-1, 0] + parts[1][:-1, 0] + parts[2][:-1, 0] - v.c[0])
        )
        severity = np.zeros(n_t)
        crisis_var = np.zeros(n_t + 1)  # annual variance the crises add to the market's of day t
        # a crash phase: the crisis vol builds up over _CRASH_DAYS sessions, each step with a fall of the market; it
        # then holds for regime.crisis_hold sessions and decays (_crisis_profile). The crisis adds the variance that
        # takes the market to the peak vol (at least a quarter of the peak's); severity is the log-vol rise
        build = np.zeros(n_t)
        for t0 in np.nonzero(onset)[0]:
            before = gauss_vol[t0] ** 2 + crisis_var[t0]
            added = max(peak[t0] ** 2 - before, 0.25 * peak[t0] ** 2)
            severity[t0] = 0.5 * math.log1p(added / before)
            n_days = int(rng.integers(_CRASH_DAYS[0], _CRASH_DAYS[1] + 1))
            steps = rng.exponential(1.0, n_days)  # random daily steps that add up to the severity
            hold = int(rng.integers(regime.crisis_hold[0], regime.crisis_hold[1] + 1))
            stop = min(t0 + n_days, n_t)
            build[t0:stop] += severity[t0] * steps[: stop - t0] / steps.sum()
            profile = _crisis_profile(np.cumsum(steps) / steps.sum(), hold)[: n_t - t0]
            crisis_var[t0 + 1 : t0 + 1 + len(profile)] += added * profile**2

        # index jumps: Hawkes (self-exciting); intensity and size grow with the market's vol, and every
        # jump raises the market's log-vol components (jump_load per 3.5 % fall)
        rng = np.random.default_rng([self.seed, 21])
        size_draw = rng.standard_normal(n_t)
        onset_draw = rng.standard_normal(n_t)
        phi_h = 0.5 ** (1.0 / _JUMP_HALF_LIFE)
        alpha = _JUMP_BRANCHING * 252.0 * (1.0 - phi_h)
        y_base = (parts[0][:, 0] + parts[1][:, 0] + parts[2][:, 0] - v.c[0]).tolist()
        added_ratio = (crisis_var / (252.0 * v.h_bar[0])).tolist()  # crisis variance in units of h_bar
        gauss_ratio = np.empty(n_t + 1)
        crisis_ratio = np.empty(n_t + 1)
        # the crisis variance moves with the market's fast log-vol component (leverage and clustering in crises)
        fast_base = (parts[0][:, 0] - _CRISIS_FAST_LOAD * v.var_k[0, 0]).tolist()
        lo_b, hi_b = _LOGVOL_BOUNDS
        phis = [float(p) for p in _PHI]
        loads = [float(x) for x in v.jump_load]
        feedback = np.zeros((n_t + 1, 3))
        jump_lam = np.empty(n_t + 1)
        jump_scale = np.empty(n_t + 1)
        index_jump = np.zeros(n_t)
        excite, f0, f1, f2 = 0.0, 0.0, 0.0, 0.0
        crash = np.where(onset, regime.crash_at(peak), 0.0).tolist()  # opening crash and jump burst per crisis
        for t in range(n_t + 1):
            y = y_base[t] + f0 + f1 + f2
            bound = hi_b if y > 0.0 else lo_b
            gauss_ratio[t] = math.exp(2.0 * bound * math.tanh(y / bound))
            crisis_ratio[t] = added_ratio[t] * math.exp(2.0 * _CRISIS_FAST_LOAD * (fast_base[t] + f0))
            ratio = gauss_ratio[t] + crisis_ratio[t]
            scale = min(ratio**_JUMP_VOL_POWER, _MAX_JUMP_SCALE)
            lam = regime.jumps_per_year * scale + excite
            jump_lam[t], jump_scale[t] = lam, scale
            feedback[t] = (f0, f1, f2)
            if t == n_t:
                break
            k = int(rng.poisson(lam / 252.0))
            jump = scale * (k * _INDEX_JUMP[0] + math.sqrt(k) * _INDEX_JUMP[1] * size_draw[t])
            if onset[t]:
                jump += (_ONSET_JUMP[0] + _ONSET_JUMP[1] * onset_draw[t]) * crash[t]
            index_jump[t] = jump
            news = -jump / (abs(_INDEX_JUMP[0]) * scale)
            f0, f1, f2 = phis[0] * f0 + loads[0] * news, phis[1] * f1 + loads[1] * news, phis[2] * f2 + loads[2] * news
            excite = phi_h * excite + alpha * k + _CRISIS_JUMP_BOOST * crash[t]
        jump_news = -index_jump / (abs(_INDEX_JUMP[0]) * jump_scale[:-1])
        crisis_mult = 1.0 + crisis_ratio / gauss_ratio  # the market's variance multiplier
        crisis = 0.5 * np.log(crisis_mult)  # the crisis log-vol R
        for k in range(3):
            parts[k][:, 0] += feedback[:, k]
            parts[k] = parts[k] + v.market_load * parts[k][:, :1]
        fast, med, slow = parts[0], parts[1] + v.crisis_load * crisis[:, None], parts[2]
        var_fast = v.var_k[:, 0] + v.market_load**2 * v.var_k[0, 0]
        var_med = v.var_k[:, 1] + v.market_load**2 * v.var_k[0, 1]
        h = v.h_bar * np.exp(2.0 * _soft(fast + med + slow - v.c, v.upper))
        # the levels options see: the expectation over the faster components (market, sectors: the lognormal
        # shift; names, whose bound is tighter: by quadrature)
        fs, nm = slice(0, 1 + n_sec), slice(1 + n_sec, None)
        slow_mean = slow - v.c + 0.5 * np.log(v.crisis_m2)
        h_med, h_slow = np.empty_like(h), np.empty_like(h)
        h_med[:, fs] = v.h_bar[fs] * np.exp(2.0 * _soft((med + slow - v.c + var_fast)[:, fs]))
        h_slow[:, fs] = v.h_bar[fs] * np.exp(2.0 * _soft((slow_mean + var_fast + var_med)[:, fs]))
        h_med[:, nm] = v.h_bar[nm] * _soft_mean((med + slow - v.c)[:, nm], var_fast[nm], v.upper[nm])
        h_slow[:, nm] = v.h_bar[nm] * _soft_mean(slow_mean[:, nm], (var_fast + var_med)[nm], v.upper[nm])
        for x in (h, h_med):  # the market's crisis (its slow level holds the crisis' long-run mean already)
            x[:, 0] *= crisis_mult

        def per_symbol(x: np.ndarray) -> np.ndarray:
            """Index and stock variances from factor variances (asymmetric β adds β² asym² Var|z|)."""
            load = beta_s**2 * (1.0 + u.asym[1:] ** 2 * (1.0 - v.abs_mean[0] ** 2))
            return np.concatenate([x[:, :1], load * x[:, :1] + x[:, 1 : 1 + n_sec][:, sec] + x[:, 1 + n_sec :]], axis=1)

        var_all, med_all, slow_all = per_symbol(h), per_symbol(h_med), per_symbol(h_slow)
        day_var = var_all[:-1]
        eps = np.sqrt(h[:-1]) * z
        m, s, e = eps[:, 0], eps[:, 1 : 1 + n_sec], eps[:, 1 + n_sec :]
        m_dev = np.abs(m) - np.sqrt(h[:-1, 0]) * v.abs_mean[0]  # mean-zero: falls load more, rises less

        # implied/expected vol of the index: rises in sell-offs, decays in ~10 sessions
        q_phi = 0.5 ** (1.0 / _VRP_HALF_LIFE)
        q_innov = _VRP_LOGVOL[0] * (-z[:, 0]) + _VRP_LOGVOL[1] * rng.standard_normal(n_t) + 0.03 * jump_news
        vrp = np.empty(n_t + 1)
        vrp[0] = 0.0
        vrp[1:] = lfilter([1.0], [1.0, -q_phi], q_innov)
        vrp = u.vrp[0] * np.exp(vrp)

        # the long-run vol level options revert to: a slow second term-structure factor
        l_phi = 0.5 ** (1.0 / _LEVEL_HALF_LIFE)
        l_innov = _LEVEL_LOGVOL[0] * (-z[:, 0]) + _LEVEL_LOGVOL[1] * rng.standard_normal(n_t)
        l_var = (_LEVEL_LOGVOL[0] ** 2 + _LEVEL_LOGVOL[1] ** 2) / (1.0 - l_phi**2)
        level = np.empty(n_t + 1)
        level[0] = rng.standard_normal() * np.sqrt(l_var)
        level[1:] = lfilter([1.0], [1.0, -l_phi], l_innov, zi=[l_phi * level[0]])[0]
        level = _LEVEL_PREMIUM * np.exp(2.0 * level)  # long-dated options carry a term premium

        # own jumps of the names, macro-day and earnings moves
        rng = np.random.default_rng([self.seed, 3])
        own_counts = rng.poisson(u.jump_lam / 252.0, size=(n_t, n_sym))
        own_jumps = own_counts * u.jump_mu + np.sqrt(own_counts) * u.jump_sd * rng.standard_normal((n_t, n_sym))
        # earnings surprises: a random sign times a Gamma(2) size (unit second moment): beats and misses
        # rather than a peak at zero, so the realized move is inside the straddle's ~60 % of the time
        sign = np.where(rng.random((n_t, n_sym)) < 0.5, -1.0, 1.0)
        earn_size = sign * rng.gamma(2.0, 1.0 / np.sqrt(6.0), (n_t, n_sym))
        macro_draw = rng.standard_t(_MACRO_NU, size=(n_t, 3)) * np.sqrt((_MACRO_NU - 2.0) / _MACRO_NU)

        macro_scale2 = np.zeros((n_t, 3))  # squared sizes of the gap, afternoon and intraday parts
        macro_day = np.zeros(n_t, dtype=bool)
        ev_idx, ev_ns, ev_scale = [], [], []
        for day, label in self.macro_events.items():
            if not _is_session(day):
                continue
            i = cal.index(day)
            for kind in label.split(";"):
                scale = _MACRO_SCALE.get(kind, 1.0)
                part = 0 if kind in _GAP_EVENTS else 1 if kind in _AFTERNOON_EVENTS else 2
                local = (dt.time(8, 30), _AFTERNOON_NY, None)[part]
                ev_idx.append(i)
                ev_ns.append(_utc_ns(day, local) if local is not None else int(cal.opens_ns[i]))
                ev_scale.append(scale)
                if sim0 <= i < sim1:
                    macro_day[i - sim0] = True
                    macro_scale2[i - sim0, part] += scale**2
        order = np.argsort(np.array(ev_ns, dtype=np.int64), kind="stable")
        macro_sd = np.sqrt(macro_scale2) * np.sqrt(h[:-1, :1]) * macro_draw  # regime-sized: x today's vol
        gap_move, after_move, intra_move = (macro_sd[:, p : p + 1] * u.beta for p in range(3))

        announce, reactions = self._earnings_schedule(u)
        earn_day = np.zeros((n_t, n_sym), dtype=bool)
        ok = (reactions >= sim0) & (reactions < sim1)
        earn_day[reactions[ok] - sim0, np.nonzero(ok)[0]] = True

        drift_m = -_CRASH_DRIFT * build
        market = m + drift_m + index_jump
        core = np.empty((n_t, n_sym))
        core[:, 0] = np.clip(market, -0.15, 0.15)
        core[:, 1:] = np.clip(
            beta_s * (market[:, None] - u.asym[1:] * m_dev[:, None]) + s[:, sec] + e + own_jumps[:, 1:], -0.30, 0.30
        )
        earn_move = np.where(earn_day, earn_size * u.earn_sd, 0.0)
        shock = core + gap_move + after_move + intra_move + earn_move
        # log price = drifting anchor + dev, dev_t = (1 - k) dev_{t-1} + shock_t (half-life ~1.4 years)
        # dev starts at its stationary mean (the mean shock / k: jumps and crashes are negative), so the pull
        # back to the anchor offsets the mean shock and the log price grows with the anchor from the start
        k_mr = 0.002
        quadrature = (np.arange(64) + 0.5) / 64.0
        mean_severity = float(np.mean(regime.severity_at(quadrature)))
        mean_crash = float(np.mean(regime.crash_at(regime.peak_at(quadrature))))
        index_mean = u.index_jump_rate * _INDEX_JUMP[0] / 252.0 + regime.crisis_rate * (
            mean_crash * _ONSET_JUMP[0] - mean_severity * _CRASH_DRIFT
        )
        dev0 = (u.beta * index_mean + u.jump_lam * u.jump_mu / 252.0) / k_mr
        dev = lfilter([1.0], [1.0, -(1.0 - k_mr)], shock, axis=0, zi=((1.0 - k_mr) * dev0)[None, :])[0]
        prev_dev = np.vstack([dev0[None, :], dev[:-1]])
        # the anchor drifts 7 % (index) and 2 % + 5 % x β (stocks) a year, less the dividend yield
        mu = (np.concatenate([[0.07], 0.02 + 0.05 * beta_s]) - u.div0) / 252.0
        ret = mu - 0.5 * day_var + shock - k_mr * prev_dev

        log_close = np.log(u.price0) + np.cumsum(ret, axis=0)
        log_prev = np.vstack([np.log(u.price0)[None, :], log_close[:-1]])
        rng = np.random.default_rng([self.seed, 4])
        log_open = (
            log_prev + 0.2 * core + np.sqrt(0.16 * day_var) * rng.standard_normal((n_t, n_sym)) + earn_move + gap_move
        )
        intraday_var = 0.8 * day_var + intra_move**2 + after_move**2
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
            med_ann=252.0 * med_all,
            slow_ann=252.0 * slow_all,
            jump_var=jump_lam * jump_scale**2 * (_INDEX_JUMP[0] ** 2 + _INDEX_JUMP[1] ** 2),
            vrp=vrp,
            level=level,
            intraday_var=intraday_var,
            afternoon=after_move,
            flags=flags,
            curve=curve,
            divs=divs,
            rho=rho_t,
            reactions=reactions,
            announce=announce,
            macro_idx=np.array(ev_idx, dtype=np.int64)[order],
            macro_ns=np.array(ev_ns, dtype=np.int64)[order],
            macro_scale=np.array(ev_scale, dtype=np.float64)[order],
            crisis=crisis,
            index_jump=index_jump,
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
        rho_t = np.where(u.is_index, rho_t, np.minimum(rho_t, -0.08))  # the names' put wing stays above the call's
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
        # implied move on a straddle basis: E|move| = sqrt(2/π) x the implied sd of the reaction session
        # (the event's implied variance plus one day of the name's implied diffusive variance, as of the
        # close before the reaction; the long run beyond the simulated window)
        rows_t = np.clip(h.reactions - h.sim0, 0, h.var_ann.shape[0] - 1)
        day_var = np.where(
            h.reactions - h.sim0 < h.var_ann.shape[0],
            h.var_ann[rows_t, np.arange(len(u.symbols))[:, None]],
            u.lr_var[:, None],
        )
        implied = np.sqrt(2.0 / np.pi) * np.sqrt(
            (u.earn_sd[:, None] * _EVENT_PREMIUM) ** 2 + u.vrp[:, None] ** 2 * day_var / 252.0
        )
        rows: list[tuple[int, str, str, str]] = []
        for j in range(1, len(u.symbols)):  # per symbol over its ~40 quarters
            timing = "after close" if u.earn_after_close[j] else "before open"
            for q, (a, r) in enumerate(zip(h.announce[j].tolist(), h.reactions[j].tolist(), strict=True)):
                day = cal.dates[a]
                if lo <= day.toordinal() <= hi:
                    note = (
                        f"{timing}; reaction session {cal.dates[r].isoformat()}; "
                        f"implied move {implied[j, q]:.1%} (straddle)"
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
        T = (cal.closes_ns[exp] - as_of_ns) / _NS_PER_YEAR
        r = np.interp(T * 365.0, np.array(TENORS_DAYS, dtype=float), h.curve[ts])
        theta = self._atm_total_variance(np.full(len(sym), d), np.full(len(sym), as_of_ns), sym, T)
        g = u.gamma[sym]
        phi = u.eta[sym] / (theta**g * (1.0 + theta) ** (1.0 - g))
        return {"T": T, "r": r, "q": h.divs[ts, sym], "theta": theta, "phi": phi, "rho": h.rho[ts, sym]}

    def _atm_total_variance(self, d: np.ndarray, as_of_ns: np.ndarray, sym: np.ndarray, T: np.ndarray) -> np.ndarray:
        """SSVI θ: implied at-the-forward total variance to ``as_of + T`` per (session, instant, symbol, T).

        vrp² x (the expected diffusive variance of a three-level term structure, fast → medium → slow →
        long run, plus the expected jump variance), plus the event variance (x the event premium) of every
        earnings reaction and macro release after ``as_of`` whose session closes by ``as_of + T``.

        Rows are taken ``THETA_BLOCK_ROWS`` at a time, since the event terms hold (rows x events) arrays (260
        sessions of 3,000 names at six tenors: 4.7 million rows, about 5.6 GB at once). A row's value depends on
        that row alone; its macro term is a row of a BLAS matrix-vector product, whose sum order is the BLAS
        kernel's (the same bits in blocks as in one call with this project's OpenBLAS: tested).
        """
        block = THETA_BLOCK_ROWS
        if len(d) <= block:
            return self._atm_total_variance_rows(d, as_of_ns, sym, T)
        return np.concatenate(
            [
                self._atm_total_variance_rows(*(a[i : i + block] for a in (d, as_of_ns, sym, T)))
                for i in range(0, len(d), block)
            ]
        )

    def _atm_total_variance_rows(
        self, d: np.ndarray, as_of_ns: np.ndarray, sym: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """``_atm_total_variance`` of one block of rows."""
        h = self._history()
        u = self._universe()
        cal = _calendar()
        ts = d - h.sim0
        frac = np.clip((as_of_ns - cal.opens_ns[d]) / (cal.closes_ns[d] - cal.opens_ns[d]), 0.0, 1.0)

        def now(x: np.ndarray) -> np.ndarray:  # state at as_of: between the day's and the next day's
            return (
                (1.0 - frac) * x[ts, sym] + frac * x[ts + 1, sym]
                if x.ndim == 2
                else (1.0 - frac) * x[ts] + frac * x[ts + 1]
            )

        level = now(h.level)
        v, med, slow, lbar = now(h.var_ann), now(h.med_ann), now(h.slow_ann) * level, u.lr_var[sym] * level
        k_f, k_m, k_s = _KAPPA
        diffusive = T * (lbar + (slow - lbar) * _g(k_s * T) + (med - slow) * _g(k_m * T) + (v - med) * _g(k_f * T))
        k_h = 252.0 * (1.0 - 0.5 ** (1.0 / _JUMP_HALF_LIFE))
        long_run = u.index_jump_rate * (_INDEX_JUMP[0] ** 2 + _INDEX_JUMP[1] ** 2)
        index_jumps = T * (long_run + (now(h.jump_var) - long_run) * _g(k_h * T))
        own = u.jump_lam[sym] * (u.jump_mu[sym] ** 2 + u.jump_sd[sym] ** 2) * T
        # the index's premium shock decays with a 10-session half-life: an option's average premium over its life
        k_q = 252.0 * (1.0 - 0.5 ** (1.0 / _VRP_HALF_LIFE))
        vrp = np.where(sym == 0, u.vrp[0] * (now(h.vrp) / u.vrp[0]) ** _g(k_q * T), u.vrp[sym])
        theta = vrp**2 * (diffusive + u.beta[sym] ** 2 * index_jumps + own) + np.where(
            sym == 0, _INDEX_VAR_PREMIUM * T, 0.0
        )

        end_ns = as_of_ns + T * _NS_PER_YEAR + 1.0
        # each symbol's reaction sessions and their closes (never for a missing one, -1), then taken per row
        closes = np.where(h.reactions >= 0, cal.closes_ns[np.maximum(h.reactions, 0)], np.iinfo(np.int64).max)
        react, react_close = h.reactions[sym], closes[sym]
        n_earn = ((react > d[:, None]) & (react_close <= end_ns[:, None])).sum(axis=1)
        theta = theta + n_earn * (u.earn_sd[sym] * _EVENT_PREMIUM) ** 2
        if len(h.macro_idx):
            pending = (h.macro_ns[None, :] >= as_of_ns[:, None]) & (
                cal.closes_ns[h.macro_idx][None, :] <= end_ns[:, None]
            )
            scale2 = pending @ (h.macro_scale**2)
            index_day_var = ((1.0 - frac) * h.var_ann[ts, 0] + frac * h.var_ann[ts + 1, 0]) / 252.0
            theta = theta + scale2 * index_day_var * (u.beta[sym] * _EVENT_PREMIUM) ** 2
        return theta

    def _spot(self, d: int, as_of_ns: int) -> np.ndarray:
        """Prices at as_of_ns: one minute-grid Brownian bridge per (seed, session) from open to close."""
        h = self._history()
        cal = _calendar()
        ts = d - h.sim0
        open_ns, close_ns = int(cal.opens_ns[d]), int(cal.closes_ns[d])
        n_min = max(1, round((close_ns - open_ns) / 60e9))
        n_sym = h.close.shape[1]
        steps = np.random.default_rng([self.seed, 10, d]).standard_normal((n_min, n_sym))
        cumulative = np.cumsum(steps, axis=0)

        def walk(m: int) -> np.ndarray:  # the scaled walk after m minutes (0 at the open)
            return cumulative[m - 1] / np.sqrt(n_min) if m > 0 else np.zeros(n_sym)

        pos = float(np.clip((as_of_ns - open_ns) / 60e9, 0.0, n_min))
        m0 = min(int(pos), n_min)
        m1 = min(m0 + 1, n_min)
        f = pos / n_min
        bridge = (1.0 - (pos - m0)) * walk(m0) + (pos - m0) * walk(m1) - f * walk(n_min)
        # an afternoon (FOMC) move is a step just after 14:00 New York; the bridge carries the rest
        step = h.afternoon[ts]
        after = float(as_of_ns > _utc_ns(cal.dates[d], _AFTERNOON_NY))
        lo, lc = np.log(h.open[ts]), np.log(h.close[ts]) - step
        sd = np.sqrt(np.maximum(h.intraday_var[ts] - step**2, 0.0))
        return np.clip(np.exp(lo + f * (lc - lo) + sd * bridge + after * step), h.low[ts], h.high[ts])

    @staticmethod
    def _grid(spot: np.ndarray, vol: np.ndarray, T: np.ndarray, is_index: np.ndarray) -> tuple[np.ndarray, ...]:
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
        inc, n_side, center = self._grid(ref, np.sqrt(s["theta"] / s["T"]), s["T"], self._universe().is_index[sym])
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
        price = self._american_price(
            price, spot[sym], strike, s["T"], w, s["r"], s["q"], is_call, self._universe().is_index[sym]
        )
        return price, np.exp(-s["q"] * s["T"]) * fdelta

    @staticmethod
    def _american_floor(
        price: np.ndarray, spot: np.ndarray, strike: np.ndarray, is_call: np.ndarray, european: np.ndarray
    ) -> np.ndarray:
        """American contracts are worth at least their immediate-exercise value."""
        intrinsic = np.maximum(np.where(is_call, spot - strike, strike - spot), 0.0)
        return np.where(european, price, np.maximum(price, intrinsic))

    @staticmethod
    def _american_price(
        price: np.ndarray,
        spot: np.ndarray,
        strike: np.ndarray,
        T: np.ndarray,
        w: np.ndarray,
        r: np.ndarray,
        q: np.ndarray,
        is_call: np.ndarray,
        european: np.ndarray,
    ) -> np.ndarray:
        """European contracts keep ``price``; American ones get the exact American price at the surface's
        vol ``sqrt(w / T)`` (``quant.american.american_price``), so an American inversion of the mid
        recovers the generating vol."""
        from risk_pipeline.quant.american import american_price

        out = np.array(price, dtype=float)
        am = ~np.broadcast_to(european, out.shape)
        if am.any():
            t, ww, rr, qq = (np.broadcast_to(a, out.shape)[am] for a in (T, w, r, q))
            vol = np.sqrt(ww / np.maximum(t, 1e-300))
            out[am] = american_price(
                np.broadcast_to(spot, out.shape)[am],
                np.broadcast_to(strike, out.shape)[am],
                t,
                vol,
                rr,
                qq,
                np.broadcast_to(is_call, out.shape)[am],
            )
        return out

    def _chain(self, d: int, as_of_ns: int, select: Callable[[pd.DataFrame], np.ndarray] | None = None) -> pd.DataFrame:
        """The chain on session d at as_of_ns; with ``select`` only the rows it keeps (``option_quotes_where``)."""
        c = self._chain_contracts(d, as_of_ns)
        rows = np.arange(c["n"])
        if select is not None:
            unpriced = {
                "as_of_date": np.full(c["n"], _calendar().dates[d], dtype=object),
                "underlying": np.array(self._universe().symbols, dtype=object)[c["sym"]],
                "expiry": np.array(_calendar().dates, dtype=object)[c["exp_idx"]],
                "strike": c["K"],
                "option_type": np.where(c["is_call"], "C", "P").astype(object),
                "underlying_price": c["spot"][c["sym"]],
                "exercise_style": np.where(self._universe().is_index[c["sym"]], "european", "american").astype(object),
            }
            rows = np.flatnonzero(np.asarray(select(pd.DataFrame(unpriced)), dtype=bool))
        v = self._contract_rows(c, rows)
        data = self._chain_quotes(d, as_of_ns, c, rows, v, self._american_price(*self._pricing_inputs(c, v)))
        return self._finish("option_quotes", data, len(rows))

    def _chain_many(
        self, days: Sequence[int], as_of_ns: Sequence[int], select: Callable[[pd.DataFrame], np.ndarray]
    ) -> pd.DataFrame:
        """``_chain(d, as_of_ns, select)`` of several sessions in one frame (ordered by session): ``select`` sees
        every session's unpriced chain in one frame (categorical keys), the kept American contracts of all
        sessions are priced in one call and the frame is built once."""
        u = self._universe()
        cal = _calendar()
        parts = [self._chain_contracts(d, t) for d, t in zip(days, as_of_ns, strict=True)]
        day_code = np.repeat(np.arange(len(parts)), [c["n"] for c in parts])
        sym = np.concatenate([c["sym"] for c in parts])
        exp_idx = np.concatenate([c["exp_idx"] for c in parts])
        call = np.concatenate([c["is_call"] for c in parts])
        dates = np.array(cal.dates, dtype=object)
        unpriced = pd.DataFrame(
            {
                "as_of_date": pd.Categorical.from_codes(day_code, categories=list(dates[list(days)])),
                "underlying": pd.Categorical.from_codes(sym, categories=list(u.symbols)),
                "expiry": pd.Categorical.from_codes(exp_idx, categories=list(dates)),
                "strike": np.concatenate([c["K"] for c in parts]),
                "option_type": pd.Categorical.from_codes((~call).astype(np.int8), categories=["C", "P"]),
                "underlying_price": np.concatenate([c["spot"][c["sym"]] for c in parts]),
                "exercise_style": pd.Categorical.from_codes(
                    u.is_index[sym].astype(np.int8), categories=["american", "european"]
                ),
            }
        )
        keep = np.asarray(select(unpriced), dtype=bool)
        bounds = np.concatenate([[0], np.cumsum([c["n"] for c in parts])])
        rows = [np.flatnonzero(keep[bounds[i] : bounds[i + 1]]) for i in range(len(parts))]
        values = [self._contract_rows(c, r) for c, r in zip(parts, rows, strict=True)]
        inputs = [self._pricing_inputs(c, v) for c, v in zip(parts, values, strict=True)]
        price = self._american_price(*(np.concatenate(x) for x in zip(*inputs, strict=True)))
        ends = np.cumsum([len(r) for r in rows])
        columns = [
            self._chain_quotes(d, t, c, r, v, price[e - len(r) : e])
            for d, t, c, r, v, e in zip(days, as_of_ns, parts, rows, values, ends, strict=True)
        ]
        data = {name: np.concatenate([col[name] for col in columns]) for name in columns[0] if name != "as_of"}
        data["as_of"] = pd.to_datetime(np.concatenate([col["as_of"].asi8 for col in columns]), utc=True)
        return self._finish("option_quotes", data, int(ends[-1]) if len(ends) else 0)

    def _held_options(self, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(symbol index, expiry session index, strike) of the sample book's option legs on session d: the
        contracts of ``positions`` without pricing them (strikes fixed at each roll, cached per roll set)."""
        resolved = self._resolve_legs(d, self._option_leg_specs())
        key = tuple((leg[3], leg[4]) for leg in resolved)
        if key not in self._held_cache:
            self._held_cache[key] = self._leg_strikes(resolved)
        sym = np.array([leg[2] for leg in resolved], dtype=np.int64)
        exp = np.array([leg[4] for leg in resolved], dtype=np.int64)
        return sym, exp, self._held_cache[key]

    @staticmethod
    def _pair_index(pair_sym: np.ndarray, pair_exp: np.ndarray, sym: np.ndarray, exp: np.ndarray) -> np.ndarray:
        """Index of each (symbol, expiry) in the pairs of ``_pairs`` (sorted by symbol, then expiry); KeyError
        for one that is not listed."""
        width = int(max(pair_exp.max(initial=0), exp.max(initial=0))) + 1
        keys = pair_sym * width + pair_exp
        wanted = sym * width + exp
        at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        missing = keys[at] != wanted
        if missing.any():
            raise KeyError((int(sym[missing][0]), int(exp[missing][0])))
        return at.astype(np.int64)

    def _chain_contracts(self, d: int, as_of_ns: int) -> dict[str, Any]:
        """Every contract listed on session d (the strike grid plus held strikes), seen at as_of_ns: the keys as
        arrays over the ``n`` rows of the chain, the spots, each listed expiry's surface (``surf``) and the day's
        reference slice; ``_contract_rows`` gives the surface values and European prices of the rows used."""
        u = self._universe()
        pair_sym, pair_exp = self._pairs(d)
        ref = self._day_reference(d, pair_sym, pair_exp)
        inc, n_side, center = ref["inc"], ref["n_side"], ref["center"]
        counts = 2 * n_side + 1
        pair_of = np.repeat(np.arange(len(pair_sym)), counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts + n_side, counts)
        strikes = np.round(center[pair_of] + inc[pair_of] * offset, 4)
        held_sym, held_exp, held_strike = self._held_options(d)
        if len(held_strike):  # strikes with open positions stay listed
            pair_of = np.concatenate([pair_of, self._pair_index(pair_sym, pair_exp, held_sym, held_exp)])
            strikes = np.concatenate([strikes, held_strike])
        keep = strikes > 0
        # distinct (pair, strike), sorted by pair then strike (np.unique of the rows); a stable sort of complex
        # keys is lexicographic (real part, then imaginary) like np.lexsort, and fast on the grid's sorted runs
        pair_kept, strike_kept = pair_of[keep], strikes[keep]
        order = np.argsort(pair_kept + 1j * strike_kept, kind="stable")
        pair_kept, strike_kept = pair_kept[order], strike_kept[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (pair_kept[1:] != pair_kept[:-1]) | (strike_kept[1:] != strike_kept[:-1])

        spot = self._spot(d, as_of_ns)
        n_k = int(first.sum())
        p = np.repeat(pair_kept[first].astype(np.int64), 2)
        K = np.repeat(strike_kept[first], 2)
        is_call = np.tile(np.array([True, False]), n_k)
        sym = pair_sym[p]
        return {
            "n": len(K),
            "p": p,
            "K": K,
            "is_call": is_call,
            "sym": sym,
            "exp_idx": pair_exp[p],
            "spot": spot,
            "surf": self._surface(d, as_of_ns, pair_sym, pair_exp),
            "ref": ref,
            "european": u.is_index[sym],
        }

    @staticmethod
    def _contract_rows(c: dict[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
        """The chain rows ``rows`` of ``_chain_contracts``: keys, the surface at each (T, r, q, forward,
        log-moneyness, total variance, discount factor) and the European model price. Every value is computed
        element by element, so it is the same as on the whole chain."""
        surf = c["surf"]
        p = c["p"][rows]
        K, is_call, sym = c["K"][rows], c["is_call"][rows], c["sym"][rows]
        T, r, q = surf["T"][p], surf["r"][p], surf["q"][p]
        fwd = c["spot"][sym] * np.exp((r - q) * T)
        k = np.log(K / fwd)
        w = _ssvi_total_variance(k, surf["theta"][p], surf["phi"][p], surf["rho"][p])
        disc = np.exp(-r * T)
        price, _ = _bsm(fwd, K, w, disc, is_call)
        return {
            "p": p,
            "K": K,
            "is_call": is_call,
            "sym": sym,
            "exp_idx": c["exp_idx"][rows],
            "T": T,
            "fwd": fwd,
            "k": k,
            "w": w,
            "disc": disc,
            "price": price,
            "r": r,
            "q": q,
            "european": c["european"][rows],
        }

    @staticmethod
    def _pricing_inputs(c: dict[str, Any], v: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """``_american_price`` arguments of the chain rows ``v`` (``_contract_rows``: European price, spot, strike,
        T, w, r, q, call, european)."""
        names = ("price", "K", "T", "w", "r", "q", "is_call", "european")
        price, K, T, w, r, q, call, european = (v[name] for name in names)
        return price, c["spot"][v["sym"]], K, T, w, r, q, call, european

    def _chain_quotes(
        self, d: int, as_of_ns: int, c: dict[str, Any], rows: np.ndarray, v: dict[str, np.ndarray], price: np.ndarray
    ) -> dict[str, Any]:
        """The quote columns of the chain rows ``rows`` (ascending; ``v`` their ``_contract_rows``) from their model
        ``price``; the session's random draws are taken over the whole chain, so every row is as in the full
        chain."""
        h = self._history()
        u = self._universe()
        cal = _calendar()
        ts = d - h.sim0
        n_all, n = c["n"], len(rows)
        ref = c["ref"]
        p, K, is_call, sym, exp_idx = (v[name] for name in ("p", "K", "is_call", "sym", "exp_idx"))
        fwd, k, w, disc = (v[name] for name in ("fwd", "k", "w", "disc"))
        spot = c["spot"]
        ax = np.minimum(np.abs(k / np.sqrt(w)), 4.0)
        extrinsic = np.maximum(price - disc * np.maximum(np.where(is_call, fwd - K, K - fwd), 0.0), 0.0)

        # open interest and day volume depend only on what is fixed for the day (moneyness against the
        # previous close, the overnight gap) and per-(seed, session) noise: every snapshot agrees
        k0 = np.log(K / ref["forward"][p])
        x = k0 / np.sqrt(_ssvi_total_variance(k0, ref["theta"][p], ref["phi"][p], ref["rho"][p]))
        T0 = ref["T"][p]
        rng = np.random.default_rng([self.seed, 11, d])
        cycle = np.where(np.isin(exp_idx, cal.quarterly), 1.3, np.where(np.isin(exp_idx, cal.monthly), 1.0, 0.45))
        otm = np.where(is_call, k0 > 0, k0 < 0)
        oi = np.floor(
            u.oi_base[sym]
            * cycle
            * (0.15 + np.exp(-T0 / 0.5))
            * np.exp(-0.5 * (x / 1.4) ** 2)
            * np.where(otm, 1.0, 0.6)
            * rng.lognormal(0.0, 0.5, n_all)[rows]
        )
        gap = np.log(h.open[ts, sym] / h.close[ts - 1, sym])
        big_move = 1.0 + 3.0 * np.abs(gap) / np.sqrt(h.day_var[ts, sym])
        day_volume = oi * 0.12 * big_move * np.exp(-0.5 * (x / 1.1) ** 2) * rng.lognormal(0.0, 0.8, n_all)[rows]
        elapsed = (as_of_ns - cal.opens_ns[d]) / (cal.closes_ns[d] - cal.opens_ns[d])
        volume = np.floor(day_volume * float(np.clip(elapsed, 0.0, 1.0)) ** 0.85)

        liq = 1.0 + 2.0 / np.sqrt(1.0 + oi / 200.0)
        half = (0.004 + 0.004 * ax) * extrinsic + 0.001 * price + 0.012 * liq * (1.0 + 0.5 * ax)
        bid = np.maximum(_to_tick(price - half, np.floor), 0.0)
        ask = np.maximum(_to_tick(price + half, np.ceil), bid + np.where(bid >= 3.0, 0.05, 0.01))
        # the mid never sits below the no-arbitrage floor (discounted forward intrinsic; spot
        # intrinsic for American contracts) even after tick rounding
        floor = np.maximum(price - extrinsic, self._american_floor(0.0 * price, spot[sym], K, is_call, u.is_index[sym]))
        ask = np.round(np.maximum(ask, _to_tick(2.0 * floor - bid, np.ceil)), 2)
        minute = int((as_of_ns - cal.opens_ns[d]) // 60_000_000_000)
        jitter = np.random.default_rng([self.seed, 12, d, max(minute, 0)]).uniform(-0.4, 0.4, n_all)[rows]
        last = np.clip(_to_tick(0.5 * (bid + ask) + jitter * (ask - bid), np.round), np.maximum(bid, 0.01), ask)
        last = np.where(volume > 0, last, np.nan)

        return {
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
        # a scaled book: as many names per strategy per 50 stocks as the sample book has in all
        scale = 1 if self.book_positions is None else max(1, round(len(stocks) / 50))
        alloc: dict[str, list[int]] = {}
        for wanted in books:
            perm = rng.permutation(stocks).tolist()
            for strategy, count in wanted.items():
                alloc[strategy], perm = perm[: count * scale], perm[count * scale :]
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
            "ladders": self._ladder_plan(alloc, stocks) if self.book_positions is not None else [],
        }
        return self._plan_cache

    def _ladder_plan(self, alloc: dict[str, list[int]], stocks: list[int]) -> list[tuple[int, int, int]]:
        """(stock, legs, signed contracts) of the scaled book's option ladders in vol_overlay: every stock
        without another vol_overlay strategy gets one, their legs together filling the book up to about
        ``book_positions`` positions (the strategies of ``_plan`` count 2 per stock leg and option pair)."""
        assert self.book_positions is not None
        rng = np.random.default_rng([self.seed, 8])
        overlay = set(alloc["long_straddle"]) | set(alloc["short_strangle"]) | set(alloc["delta_hedged_short_vol"])
        names = [j for j in stocks if j not in overlay]
        stock_legs = sum(len(alloc[s]) for s in ("long_stock", "short_stock", "covered_call", "protective_put"))
        option_legs = (
            len(alloc["covered_call"]) + len(alloc["protective_put"]) + 2 * len(alloc["bull_call_spread"])
            + 2 * len(alloc["long_straddle"]) + 2 * len(alloc["short_strangle"])
            + 3 * len(alloc["delta_hedged_short_vol"]) + 7
        )  # fmt: skip
        wanted = max(self.book_positions - stock_legs - option_legs, len(names))
        legs = np.full(len(names), wanted // len(names))
        legs[rng.permutation(len(names))[: wanted % len(names)]] += 1
        contracts = rng.integers(1, 11, len(names)) * np.where(rng.random(len(names)) < 0.5, -1, 1)
        return [(j, int(k), int(q)) for j, k, q in zip(names, legs, contracts, strict=True)]

    def _build_positions(self, d: int) -> pd.DataFrame:
        h = self._history()
        u = self._universe()
        cal = _calendar()
        plan = self._plan()
        alloc, entry, shares = plan["alloc"], plan["entry"], plan["shares"]
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

        for j in alloc["long_stock"]:
            stock("core_equity", j, shares[j], "long_stock", h.close[entry[j], j])
        for j in alloc["short_stock"]:
            stock("core_equity", j, -shares[j], "short_stock", h.close[entry[j], j])
        for j in alloc["covered_call"]:
            stock("core_equity", j, shares[j], "covered_call", h.close[entry[j], j])
        for j in alloc["protective_put"]:
            stock("core_equity", j, shares[j], "protective_put", h.close[entry[j], j])
        legs = self._option_leg_specs()
        option_rows = self._option_legs(d, legs)
        rows += option_rows

        # delta hedge of each short straddle at the previous close, in round lots of 10 shares
        prev = d - 1
        prev_close = h.close[prev - h.sim0]
        hedged = [r for r in option_rows if r["strategy"] == "delta_hedged_short_vol"]
        for j in alloc["delta_hedged_short_vol"]:
            mine = [r for r in hedged if r["_sym"] == j]
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

    def _option_leg_specs(self) -> list[tuple[str, str, int, str, int, str, tuple[Any, ...], float]]:
        """The sample book's option legs (fixed per seed), in ``positions`` order."""
        plan = self._plan()
        alloc, shares, n_of = plan["alloc"], plan["shares"], plan["contracts"]
        # option legs: (book, strategy, symbol, cycle, nth expiry after the roll, type, strike rule, qty)
        # strike rule: ("atm",), ("pct", x), ("sd", n) [n standard deviations of the slice], optionally
        # a third element = offset of an earlier leg of the same strategy to stay beyond (or "same")
        legs: list[tuple[str, str, int, str, int, str, tuple[Any, ...], float]] = []
        for j in alloc["covered_call"]:
            legs.append(("core_equity", "covered_call", j, "m", 1, "C", ("pct", 1.05), -shares[j] / 100.0))
        for j in alloc["protective_put"]:
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
            legs += [("vol_overlay", "delta_hedged_short_vol", j, "m", 1, t, ("atm",), -q) for t in ("C", "P")]
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
        # scaled book: a ladder per stock over the next two monthlies, calls above and puts below the money, leg
        # i on (expiry, type) i % 4; the first of each at 2 % out of the money, every later one 3 % further out
        # and at least one strike beyond the one before it (four legs back), so every contract is distinct
        combos = ((1, "C", 1.0), (1, "P", -1.0), (2, "C", 1.0), (2, "P", -1.0))
        for j, n_legs, q in plan["ladders"]:
            for i in range(n_legs):
                nth, otype, side = combos[i % 4]
                depth = i // 4
                rule = ("pct", 1.0 + side * (0.02 + 0.03 * depth)) + ((-4,) if depth else ())
                legs.append(("vol_overlay", "option_ladder", j, "m", nth, otype, rule, float(q)))
        return legs

    @staticmethod
    def _resolve_legs(d: int, legs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Each leg with its roll session and expiry (session indices) as held on session d."""
        cal = _calendar()
        resolved = []
        for book, strategy, j, cycle, nth, otype, rule, qty in legs:
            expiries = cal.monthly if cycle == "m" else cal.quarterly
            i = int(np.searchsorted(expiries - 5, d, side="left")) - 1  # last roll strictly before d
            resolved.append((book, strategy, j, int(expiries[i] - 5), int(expiries[i + nth]), otype, rule, qty))
        return resolved

    def _leg_strikes(self, resolved: list[tuple[Any, ...]]) -> np.ndarray:
        """Strike of each resolved leg, set by its rule at its roll session's close."""
        h = self._history()
        cal = _calendar()
        strikes = np.zeros(len(resolved))
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
        return strikes

    def _option_legs(self, d: int, legs: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        """Roll session, expiry, strike and entry price (model, at the roll close) of each leg."""
        h = self._history()
        u = self._universe()
        cal = _calendar()
        resolved = self._resolve_legs(d, legs)
        strikes = self._leg_strikes(resolved)
        cost = np.zeros(len(resolved))
        for roll in sorted({leg[3] for leg in resolved}):
            members = [n for n, leg in enumerate(resolved) if leg[3] == roll]
            sym = np.array([resolved[n][2] for n in members])
            exp = np.array([resolved[n][4] for n in members])
            close_ns = int(cal.closes_ns[roll])
            spot_all = h.close[roll - h.sim0]
            is_call = np.array([resolved[n][5] == "C" for n in members])
            cost[members] = self._contract_values(roll, close_ns, spot_all, sym, exp, strikes[members], is_call)[0]
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
