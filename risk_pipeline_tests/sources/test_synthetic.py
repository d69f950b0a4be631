"""SyntheticSource: contracts, determinism, internal consistency and stylized facts.

Option checks invert the quotes with a Black-Scholes-Merton formula written here, independently of
the generator, using the source's own rates_curve and dividend_yields tables.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal
from scipy.optimize import brentq
from scipy.stats import kurtosis

from risk_pipeline.contracts import table
from risk_pipeline.sources.synthetic import FIRST_SESSION, LAST_SESSION, TENORS_DAYS, SyntheticSource

NY = ZoneInfo("America/New_York")
SESSION = dt.date(2026, 11, 20)  # a monthly expiration day: that day's expiry must not be listed
EARLY_CLOSE = dt.date(2026, 11, 27)
MACRO = {dt.date(2026, 9, 16): "fomc", dt.date(2026, 10, 14): "cpi", dt.date(2026, 12, 16): "fomc"}
LINEAGE = ["source_file", "source_row"]


@pytest.fixture(scope="module")
def src() -> SyntheticSource:
    return SyntheticSource(seed=7, macro_event_dates=MACRO)


@pytest.fixture(scope="module")
def prices(src: SyntheticSource) -> pd.DataFrame:
    frame = src.market_prices(FIRST_SESSION, LAST_SESSION)
    frame["ret"] = np.log(frame["close"] / frame.groupby("symbol")["close"].shift())
    return frame


@pytest.fixture(scope="module")
def chain(src: SyntheticSource) -> pd.DataFrame:
    return src.option_quotes(SESSION)


# ---------------------------------------------------------------------- helpers (independent of the module)
def ncdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def bsm(s: float, k: float, t: float, r: float, q: float, vol: float, call: bool) -> float:
    d1 = (math.log(s / k) + (r - q + 0.5 * vol * vol) * t) / (vol * math.sqrt(t))
    d2 = d1 - vol * math.sqrt(t)
    if call:
        return s * math.exp(-q * t) * ncdf(d1) - k * math.exp(-r * t) * ncdf(d2)
    return k * math.exp(-r * t) * ncdf(-d2) - s * math.exp(-q * t) * ncdf(-d1)


def implied_vol(price: float, s: float, k: float, t: float, r: float, q: float, call: bool) -> float:
    return brentq(lambda v: bsm(s, k, t, r, q, v, call) - price, 1e-4, 5.0, xtol=1e-10)


def market_inputs(src: SyntheticSource, quotes: pd.DataFrame, session: dt.date) -> pd.DataFrame:
    """Quotes with T (ACT/365 to the expiry session's close), r (linear in tenor days) and q attached."""
    closes = {e: _session_close(e) for e in quotes["expiry"].unique()}
    curve = src.rates_curve(session, session)
    divs = src.dividend_yields(session, session).set_index("symbol")["dividend_yield"]
    out = quotes.copy()
    close = out["expiry"].map(closes)
    out["T"] = (close - out["as_of"]).dt.total_seconds() / (365 * 86400)
    out["r"] = np.interp(out["T"] * 365, curve["tenor_days"].astype(float), curve["zero_rate"])
    out["q"] = out["underlying"].map(divs)
    out["mid"] = 0.5 * (out["bid"] + out["ask"])
    return out


@functools.cache
def _xnys() -> object:
    import exchange_calendars as xcals

    return xcals.get_calendar("XNYS", start="2020-01-01", end="2029-12-31")


def _session_close(day: dt.date) -> pd.Timestamp:
    return _xnys().session_close(pd.Timestamp(day)).tz_convert("UTC")  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- contracts
def test_frames_follow_the_contracts(src: SyntheticSource, chain: pd.DataFrame) -> None:
    frames = {
        "market_prices": src.market_prices(SESSION, SESSION),
        "option_quotes": chain,
        "rates_curve": src.rates_curve(SESSION, SESSION),
        "dividend_yields": src.dividend_yields(SESSION, SESSION),
        "event_calendar": src.earnings_events(),
        "positions": src.positions(SESSION),
    }
    for name, frame in frames.items():
        t = table(name)
        assert list(frame.columns) == [*t.data_column_names, *LINEAGE], name
        assert frame["source_file"].isna().all() and frame["source_row"].isna().all(), name
        assert set(frame["source"]) == {"synthetic(seed=7)"}, name
        assert not frame.duplicated(subset=list(t.key)).any(), name
        required = [c.name for c in t.columns if not c.nullable]
        assert frame[required].notna().all().all(), name
        for c in t.columns:
            col = frame[c.name].dropna()
            if c.type == "date":
                assert all(type(v) is dt.date for v in col), (name, c.name)
            elif c.type == "timestamp":
                assert str(frame[c.name].dtype) in ("datetime64[ns, UTC]", "datetime64[us, UTC]"), (
                    name,
                    c.name,
                )
            elif c.type == "double":
                assert frame[c.name].dtype == np.float64, (name, c.name)
    assert len(frames["market_prices"]) == len(src.symbols()) == 51
    assert len(frames["dividend_yields"]) == 51
    assert sorted(frames["rates_curve"]["tenor_days"]) == list(TENORS_DAYS)


def test_universe(src: SyntheticSource) -> None:
    master = src.instrument_master()
    assert list(master["symbol"]) == src.symbols()
    assert src.symbols()[0] == "SYNX" and len(set(src.symbols())) == 51
    assert all(re.fullmatch(r"[A-Z]{3,4}", s) for s in src.symbols())
    stocks = master[master["symbol"] != "SYNX"]
    assert stocks["sector"].nunique() == 8
    assert stocks["beta"].between(0.5, 1.8).all()
    assert stocks["dividend_yield"].between(0.0, 0.04).all()
    assert set(stocks["exercise_style"]) == {"american"}
    assert master.set_index("symbol").loc["SYNX", "exercise_style"] == "european"
    assert (master["multiplier"] == 100).all()


def test_bad_requests_raise(src: SyntheticSource) -> None:
    with pytest.raises(ValueError):
        src.option_quotes(dt.date(2026, 11, 21))  # a Saturday
    with pytest.raises(ValueError):
        src.positions(dt.date(2019, 1, 2))
    with pytest.raises(ValueError):
        src.option_quotes(SESSION, dt.datetime(2026, 11, 20, 22, 0, tzinfo=dt.UTC))


# ---------------------------------------------------------------------- determinism
def test_same_seed_same_frames_in_any_order() -> None:
    a, b = SyntheticSource(seed=11), SyntheticSource(seed=11)
    quotes_a = a.option_quotes(SESSION)
    positions_a = a.positions(SESSION)
    prices_a = a.market_prices(dt.date(2026, 11, 2), dt.date(2026, 11, 30))
    prices_b = b.market_prices(dt.date(2025, 1, 1), dt.date(2027, 6, 30))
    positions_b = b.positions(SESSION)
    quotes_b = b.option_quotes(SESSION, b.snapshot_times(SESSION)[-1])
    window = prices_b["as_of_date"].between(dt.date(2026, 11, 2), dt.date(2026, 11, 30))
    assert_frame_equal(prices_a, prices_b[window].reset_index(drop=True))
    assert_frame_equal(quotes_a, quotes_b)
    assert_frame_equal(positions_a, positions_b)
    for method in ("rates_curve", "dividend_yields"):
        assert_frame_equal(getattr(a, method)(SESSION, SESSION), getattr(b, method)(SESSION, SESSION))
    assert_frame_equal(a.earnings_events(), b.earnings_events())
    other = SyntheticSource(seed=12)
    assert not np.allclose(other.market_prices(SESSION, SESSION)["close"], prices_a["close"].iloc[-51:])
    assert not other.positions(SESSION)["position_id"].equals(positions_a["position_id"])


def test_date_range_independence(src: SyntheticSource, prices: pd.DataFrame) -> None:
    short = src.market_prices(dt.date(2024, 3, 1), dt.date(2024, 3, 31))
    window = prices["as_of_date"].between(dt.date(2024, 3, 1), dt.date(2024, 3, 31))
    assert_frame_equal(short, prices.loc[window, short.columns].reset_index(drop=True))
    assert set(short["as_of_date"]) == set(src.sessions(dt.date(2024, 3, 1), dt.date(2024, 3, 31)))
    rates = src.rates_curve(dt.date(2024, 3, 1), dt.date(2024, 3, 31))
    one = src.rates_curve(dt.date(2024, 3, 15), dt.date(2024, 3, 15))
    assert_frame_equal(one, rates[rates["as_of_date"] == dt.date(2024, 3, 15)].reset_index(drop=True))
    assert src.market_prices(dt.date(2019, 1, 1), dt.date(2020, 12, 31)).empty


# ---------------------------------------------------------------------- daily bars
def test_ohlc_volume_and_returns(prices: pd.DataFrame) -> None:
    body_low = prices[["open", "close"]].min(axis=1)
    body_high = prices[["open", "close"]].max(axis=1)
    assert (prices["low"] <= body_low).all() and (body_high <= prices["high"]).all()
    assert (prices["low"] > 0).all() and (prices["volume"] > 0).all()
    unflagged = prices["event_flag"].isna()
    assert prices.loc[unflagged, "ret"].abs().max() <= 0.40
    moves = prices["ret"].abs() / prices.groupby("symbol")["ret"].transform("std")
    big = moves > 3
    volume_ratio = prices["volume"] / prices.groupby("symbol")["volume"].transform("median")
    assert volume_ratio[big].mean() > 1.3 * volume_ratio[~big].mean()


def test_event_flags(src: SyntheticSource, prices: pd.DataFrame) -> None:
    events = src.earnings_events()
    sessions = src.sessions()
    local = events["event_time"].dt.tz_convert(NY)
    assert set(local.dt.strftime("%H:%M")) <= {"16:30", "08:00"}
    assert events["event_id"].str.fullmatch(r"earn-[A-Z]{3,4}-\d{4}-\d{2}-\d{2}").all()
    expected: set[tuple[dt.date, str]] = set()
    for symbol, when in zip(events["symbol"], local, strict=True):
        day = when.date()
        if day <= LAST_SESSION:
            i = sessions.index(day)
            reaction = sessions[i + 1] if when.hour >= 16 and i + 1 < len(sessions) else day
            expected.add((reaction, symbol))
    flagged = prices[prices["event_flag"].fillna("").str.contains("earnings")]
    assert set(zip(flagged["as_of_date"], flagged["symbol"], strict=True)) == expected
    for day, kind in MACRO.items():
        flags = prices.loc[prices["as_of_date"] == day, "event_flag"]
        assert len(flags) == 51 and all(kind in f.split(";") for f in flags)
    plain = SyntheticSource(seed=7, macro_event_dates=[dt.date(2026, 9, 16)])
    assert set(plain.market_prices(dt.date(2026, 9, 16), dt.date(2026, 9, 16))["event_flag"]) <= {
        "macro",
        "earnings;macro",
    }


def test_earnings_roughly_quarterly(src: SyntheticSource) -> None:
    events = src.earnings_events()
    assert set(events["symbol"]) == set(src.symbols()[1:])
    gaps = events.groupby("symbol")["event_time"].diff().dropna().dt.days
    assert gaps.between(75, 110).all()


def test_stylized_facts(prices: pd.DataFrame) -> None:
    acf, leverage, kurt, earnings_ratio, vols = [], [], [], [], {}
    for symbol, g in prices.groupby("symbol", sort=False):
        r = g["ret"].to_numpy()[1:]
        flag = g["event_flag"].to_numpy()[1:]
        calm = r[pd.isna(flag)]
        sq = calm**2
        acf.append(np.corrcoef(sq[:-1], sq[1:])[0, 1])
        leverage.append(np.corrcoef(calm[:-1], np.abs(calm[1:]))[0, 1])
        kurt.append(kurtosis(r, fisher=False))
        vols[symbol] = r.std() * math.sqrt(252)
        earn = pd.Series(flag).fillna("").str.contains("earnings").to_numpy()
        if earn.any():
            earnings_ratio.append(np.abs(r[earn]).mean() / np.abs(r[~earn]).mean())
    acf = np.array(acf)
    assert acf.mean() / (acf.std(ddof=1) / math.sqrt(len(acf))) > 4  # clustering: t-stat across names
    assert acf.mean() > 0.03 and np.mean(acf > 0) > 0.9
    assert np.mean(leverage) < 0 and np.mean(np.array(leverage) < 0) > 0.7
    assert np.min(kurt) > 3
    assert np.mean(earnings_ratio) > 1.5 and np.min(earnings_ratio) > 1.0
    assert 0.12 <= vols.pop("SYNX") <= 0.22
    assert all(0.14 <= v <= 0.62 for v in vols.values())


def test_rates_and_dividends(src: SyntheticSource) -> None:
    rates = src.rates_curve(FIRST_SESSION, LAST_SESSION)
    assert rates["zero_rate"].between(0.0, 0.09).all()
    assert 0.025 < rates["zero_rate"].mean() < 0.06
    wide = rates.pivot(index="as_of_date", columns="tenor_days", values="zero_rate")
    assert wide.diff().abs().max().max() < 0.003
    divs = src.dividend_yields(FIRST_SESSION, LAST_SESSION)
    assert divs["dividend_yield"].between(0.0, 0.04).all()
    assert 0.01 < divs.loc[divs["symbol"] == "SYNX", "dividend_yield"].mean() < 0.02


# ---------------------------------------------------------------------- option chains
def test_snapshot_times(src: SyntheticSource) -> None:
    regular = src.snapshot_times(SESSION)
    assert [t.astimezone(NY).strftime("%H:%M") for t in regular] == ["10:00", "12:00", "14:00", "15:45"]
    assert all(t.tzinfo is not None and t.utcoffset() == dt.timedelta(0) for t in regular)
    early = src.snapshot_times(EARLY_CLOSE)
    assert [t.astimezone(NY).strftime("%H:%M") for t in early] == ["10:00", "12:00", "12:45"]
    assert src.option_quotes(EARLY_CLOSE)["as_of"].iloc[0] == pd.Timestamp(early[-1])


def test_chain_sanity(src: SyntheticSource, chain: pd.DataFrame) -> None:
    assert 10_000 <= len(chain) <= 30_000
    assert (chain["bid"] >= 0).all() and (chain["ask"] > chain["bid"]).all()
    assert (chain["strike"] > 0).all() and set(chain["option_type"]) == {"C", "P"}
    assert (chain["expiry"] > SESSION).all() and (chain["as_of_date"] == SESSION).all()
    assert (chain["as_of"] == pd.Timestamp(src.snapshot_times(SESSION)[-1])).all()
    assert (chain["multiplier"] == 100).all()
    styles = chain.groupby("underlying")["exercise_style"].unique()
    assert list(styles["SYNX"]) == ["european"] and all(list(v) == ["american"] for v in styles.drop("SYNX"))
    bar = src.market_prices(SESSION, SESSION).set_index("symbol")
    spot = chain.groupby("underlying")["underlying_price"].first()
    assert (spot >= bar.loc[spot.index, "low"]).all() and (spot <= bar.loc[spot.index, "high"]).all()
    expiries = chain.groupby("underlying")["expiry"].nunique()
    assert expiries.between(6, 9).all()
    strikes = chain[chain["option_type"] == "C"].groupby(["underlying", "expiry"])["strike"].nunique()
    assert strikes.between(15, 30).all() and strikes.median() >= 17
    weekday = {e.weekday() for e in chain["expiry"]}
    assert weekday <= {3, 4}
    for side in ("bid", "ask"):  # tick 0.01 below 3.00, 0.05 from 3.00
        tick = np.where(chain[side] >= 3.0, 0.05, 0.01)
        assert np.allclose(np.round(chain[side] / tick) * tick, chain[side], rtol=0, atol=1e-9)
    traded = chain["volume"] > 0
    assert chain.loc[~traded, "last"].isna().all()
    assert chain.loc[traded, "last"].between(chain.loc[traded, "bid"], chain.loc[traded, "ask"]).all()


def test_quotes_respect_no_arbitrage_floors(src: SyntheticSource, chain: pd.DataFrame) -> None:
    q = market_inputs(src, chain, SESSION)
    s, k, t = q["underlying_price"], q["strike"], q["T"]
    call = q["option_type"] == "C"
    fwd_intrinsic = np.where(
        call,
        s * np.exp(-q["q"] * t) - k * np.exp(-q["r"] * t),
        k * np.exp(-q["r"] * t) - s * np.exp(-q["q"] * t),
    )
    spot_intrinsic = np.where(call, s - k, k - s)
    floor = np.maximum(fwd_intrinsic, 0.0)
    american = q["exercise_style"] == "american"
    floor = np.where(american, np.maximum(floor, spot_intrinsic), floor)
    assert (q["mid"] >= floor - 1e-9).all()
    otm = np.where(call, k > s, k < s)
    assert (q.loc[otm, "bid"] == 0).mean() < 0.2  # most out-of-the-money quotes have a bid


def test_snapshots_of_a_day_agree(src: SyntheticSource) -> None:
    times = src.snapshot_times(SESSION)
    first, last = src.option_quotes(SESSION, times[0]), src.option_quotes(SESSION, times[-1])
    keys = ["underlying", "expiry", "strike", "option_type"]
    assert_frame_equal(first[keys], last[keys])
    assert (first["open_interest"] == last["open_interest"]).all()
    assert (first["volume"] <= last["volume"]).all()
    assert not np.allclose(first["underlying_price"], last["underlying_price"])


def test_put_call_parity_index(src: SyntheticSource, chain: pd.DataFrame) -> None:
    q = market_inputs(src, chain[chain["underlying"] == "SYNX"], SESSION)
    keys = ["expiry", "strike"]
    calls = q[q["option_type"] == "C"].set_index(keys)
    puts = q[q["option_type"] == "P"].set_index(keys)
    s, t, r, d = calls["underlying_price"], calls["T"], calls["r"], calls["q"]
    parity = s * np.exp(-d * t) - calls.index.get_level_values("strike") * np.exp(-r * t)
    error = (calls["mid"] - puts["mid"] - parity).abs()
    tolerance = 0.5 * (calls["ask"] - calls["bid"]) + 0.5 * (puts["ask"] - puts["bid"]) + 1e-6
    assert (error <= tolerance).all()
    assert len(calls) > 100


def test_negative_skew(src: SyntheticSource, chain: pd.DataFrame) -> None:
    q = market_inputs(src, chain, SESSION)
    q = q[(q["T"] > 20 / 365) & (q["bid"] > 0)]

    def nearest(rows: pd.DataFrame, log_moneyness: float, fwd: float) -> pd.Series:
        return rows.iloc[int(np.argmin(np.abs(np.log(rows["strike"].to_numpy() / fwd) - log_moneyness)))]

    outcomes: dict[str, list[bool]] = {}
    for (underlying, _), g in q.groupby(["underlying", "expiry"]):
        s, t, r, d = g["underlying_price"].iloc[0], g["T"].iloc[0], g["r"].iloc[0], g["q"].iloc[0]
        fwd = s * math.exp((r - d) * t)
        atm = nearest(g, 0.0, fwd)
        vol = implied_vol(atm["mid"], s, atm["strike"], t, r, d, atm["option_type"] == "C")
        width = 0.675 * vol * math.sqrt(t)  # ~25-delta strikes
        put = nearest(g[g["option_type"] == "P"], -width, fwd)
        call = nearest(g[g["option_type"] == "C"], width, fwd)
        iv_put = implied_vol(put["mid"], s, put["strike"], t, r, d, False)
        iv_call = implied_vol(call["mid"], s, call["strike"], t, r, d, True)
        outcomes.setdefault(underlying, []).append(iv_put > iv_call)
    assert all(outcomes.pop("SYNX"))
    assert np.mean([x for v in outcomes.values() for x in v]) > 0.9


def test_true_surface_is_arbitrage_free_and_matches_quotes(src: SyntheticSource, chain: pd.DataFrame) -> None:
    surf = src.true_surface(SESSION)
    k = np.linspace(-1.5, 1.5, 301)
    for _, row in surf.iterrows():
        a, b, rho, m, sig = row["svi_a"], row["svi_b"], row["svi_rho"], row["svi_m"], row["svi_sigma"]
        root = np.sqrt((k - m) ** 2 + sig**2)
        w = a + b * (rho * (k - m) + root)
        w1 = b * (rho + (k - m) / root)
        w2 = b * sig**2 / root**3
        g = (1 - k * w1 / (2 * w)) ** 2 - w1**2 / 4 * (1 / w + 0.25) + w2 / 2  # Durrleman
        assert (w > 0).all() and g.min() >= -1e-9
    grid = surf.assign(key=1).merge(pd.DataFrame({"k": [-0.3, 0.0, 0.3], "key": 1}), on="key")
    root = np.sqrt((grid["k"] - grid["svi_m"]) ** 2 + grid["svi_sigma"] ** 2)
    grid["w"] = grid["svi_a"] + grid["svi_b"] * (grid["svi_rho"] * (grid["k"] - grid["svi_m"]) + root)
    grid = grid.sort_values(["underlying", "k", "time_to_expiry_years"])
    assert (grid.groupby(["underlying", "k"])["w"].diff().dropna() >= -1e-12).all()  # no calendar arbitrage

    q = market_inputs(src, chain[chain["underlying"].isin(["SYNX", *src.symbols()[1:6]])], SESSION)
    q = q[(q["bid"] > 0) & (q["mid"] > 0.5)]
    fwd = q["underlying_price"] * np.exp((q["r"] - q["q"]) * q["T"])
    otm = np.where(q["option_type"] == "C", q["strike"] >= fwd, q["strike"] < fwd)
    q = q[otm].merge(surf[["underlying", "expiry", "svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma"]])
    q = q.sample(n=min(len(q), 200), random_state=0)
    for _, o in q.iterrows():
        x = math.log(o["strike"] / (o["underlying_price"] * math.exp((o["r"] - o["q"]) * o["T"])))
        w = o["svi_a"] + o["svi_b"] * (o["svi_rho"] * (x - o["svi_m"]) + math.hypot(x - o["svi_m"], o["svi_sigma"]))
        iv = implied_vol(o["mid"], o["underlying_price"], o["strike"], o["T"], o["r"], o["q"], o["option_type"] == "C")
        assert abs(iv - math.sqrt(w / o["T"])) < 0.03


# ---------------------------------------------------------------------- positions
def test_positions_reference_listed_contracts(src: SyntheticSource) -> None:
    days = [*src.sessions(dt.date(2026, 11, 9), dt.date(2026, 11, 25))[::3], SESSION, EARLY_CLOSE]
    ids_seen = []
    for day in days:
        book = src.positions(day)
        assert 40 <= len(book) <= 80
        assert set(book["book"]) == {"core_equity", "vol_overlay"}
        assert (book["quantity"] != 0).all() and (book["quantity"] > 0).any() and (book["quantity"] < 0).any()
        assert book["sector"].notna().all() and (book["cost_basis"] > 0).all()
        stocks = book[book["instrument_type"] == "stock"]
        assert (stocks["multiplier"] == 1).all()
        assert stocks[["expiry", "option_type", "exercise_style"]].isna().all().all() and stocks["strike"].isna().all()
        options = book[book["instrument_type"] == "option"]
        assert (options["expiry"] > day).all() and (options["multiplier"] == 100).all()
        quotes = src.option_quotes(day)
        listed = options.merge(
            quotes,
            left_on=["symbol", "expiry", "strike", "option_type"],
            right_on=["underlying", "expiry", "strike", "option_type"],
            how="left",
            suffixes=("", "_q"),
        )
        assert listed["bid"].notna().all(), day
        assert (listed["exercise_style"] == listed["exercise_style_q"]).all()
        assert {
            "covered_call",
            "protective_put",
            "long_straddle",
            "short_strangle",
            "iron_condor",
            "delta_hedged_short_vol",
            "long_stock",
            "short_stock",
            "index_hedge",
        } <= set(book["strategy"])
        ids_seen.append(set(book["position_id"]))
        pattern = r"(core_equity|vol_overlay):[A-Z]{3,4}:(stock|\d{4}-\d{2}-\d{2}:\d+(\.\d+)?:[CP])"
        assert book["position_id"].str.fullmatch(pattern).all()
    assert len(set.union(*ids_seen)) > len(ids_seen[0])  # option legs roll over time
    assert len(set.intersection(*ids_seen)) >= 20  # stock holdings persist


# ---------------------------------------------------------------------- performance
def test_a_full_chain_is_generated() -> None:
    """The size of one session's chain (its generation speed belongs to bench/, not to a timed test)."""
    fresh = SyntheticSource(seed=3)
    fresh.market_prices(FIRST_SESSION, LAST_SESSION)
    fresh.positions(SESSION)
    quotes = fresh.option_quotes(dt.date(2026, 11, 18))
    assert len(quotes) > 10_000
