"""The ATM vol history's fast path: only the quotes it uses are built and priced, with the full chain's values."""

from __future__ import annotations

import datetime as dt
import functools

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from risk_pipeline.defs.volatility import atm_history
from risk_pipeline.defs.volatility.atm_history import (
    AtmVolSettings,
    atm_vol_rows,
    bracketing_mask,
    bracketing_quotes,
    history_implied_vols,
    sessions_bracketing_mask,
)
from risk_pipeline.defs.volatility.surfaces import implied_vol_frame
from risk_pipeline.quant.curves import zero_rate
from risk_pipeline.quant.implied_vol import ImpliedVolResult, IvStatus
from risk_pipeline.resources import MarketDataResource
from risk_pipeline.sources.base import QUOTE_KEY_COLUMNS, MarketDataSource
from risk_pipeline.sources.synthetic import SyntheticSource
from risk_pipeline.warehouse import Warehouse

KEY = ["underlying", "expiry", "strike", "option_type"]


def _reference_bracketing(
    quotes: pd.DataFrame, curve: pd.DataFrame, dividends: pd.DataFrame, settings: AtmVolSettings
) -> pd.DataFrame:
    """The pandas selection the asset used before the fast path (groupby, joins and rank), kept as the oracle."""
    days = (pd.to_datetime(quotes["expiry"]) - pd.to_datetime(quotes["as_of_date"])).dt.days.to_numpy()
    listed = quotes.assign(_days=days)[days >= settings.min_expiry_days]
    near = listed[listed["_days"] <= settings.tenor_days].groupby("underlying")["_days"].max().rename("_near")
    after = listed.loc[listed["_days"] > settings.tenor_days, ["underlying", "_days"]].drop_duplicates()
    after = after.sort_values(["underlying", "_days"])
    rank = after.groupby("underlying").cumcount().to_numpy()
    far = after[rank == 0].set_index("underlying")["_days"].rename("_far")
    second = after[rank == 1].set_index("underlying")["_days"].rename("_second")
    chosen = listed.join(near, on="underlying").join(far, on="underlying").join(second, on="underlying")
    use = (chosen["_days"] == chosen["_near"]) | (chosen["_days"] == chosen["_far"])
    use |= chosen["_near"].isna() & (chosen["_days"] == chosen["_second"])
    chosen = chosen[use]
    t = chosen["_days"].to_numpy(float) / 365.0
    rate = zero_rate(curve["tenor_days"].to_numpy(float), curve["zero_rate"].to_numpy(float), t)
    q = chosen["underlying"].map(dict(zip(dividends["symbol"], dividends["dividend_yield"], strict=True)))
    forward = chosen["underlying_price"].to_numpy(float) * np.exp((rate - q.fillna(0.0).to_numpy(float)) * t)
    k = np.log(chosen["strike"].to_numpy(float) / forward)
    otm = np.where((chosen["option_type"] == "C").to_numpy(), k > 0.0, k <= 0.0)
    chosen = chosen.assign(_abs_k=np.abs(k))[otm]
    rank = chosen.groupby(["underlying", "expiry", "option_type"])["_abs_k"].rank(method="first")
    out = chosen[rank.to_numpy() <= settings.strikes_per_side]
    return out.drop(columns=["_days", "_near", "_far", "_second", "_abs_k"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def source() -> SyntheticSource:
    return SyntheticSource(seed=11, n_underlyings=6)


_CHAINS: dict[dt.date, pd.DataFrame] = {}


def _chain(source: SyntheticSource, session: dt.date) -> pd.DataFrame:
    """The full chain, built once per session for the module."""
    if session not in _CHAINS:
        _CHAINS[session] = source.option_quotes(session)
    return _CHAINS[session].copy()


def _inputs(source: SyntheticSource, session: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    return source.rates_curve(session, session), source.dividend_yields(session, session)


SESSIONS = [dt.date(2021, 1, 4), dt.date(2022, 3, 18), dt.date(2024, 12, 24), dt.date(2026, 11, 20)]
SETTINGS = [AtmVolSettings(), AtmVolSettings(tenor_days=91, min_expiry_days=2, strikes_per_side=2)]


@pytest.mark.parametrize("session", SESSIONS)
@pytest.mark.parametrize("settings", SETTINGS)
def test_mask_selects_what_the_pandas_reference_selects(
    source: SyntheticSource, session: dt.date, settings: AtmVolSettings
) -> None:
    quotes = _chain(source, session)
    curve, dividends = _inputs(source, session)
    expected = _reference_bracketing(quotes, curve, dividends, settings)
    got = bracketing_quotes(quotes, curve, dividends, settings)
    # two expiries, both sides of the forward, every underlying
    assert len(got) == 2 * 2 * settings.strikes_per_side * quotes["underlying"].nunique()
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_mask_skips_rows_without_underlying_or_expiry(source: SyntheticSource) -> None:
    session = SESSIONS[1]
    quotes = _chain(source, session)
    curve, dividends = _inputs(source, session)
    broken = quotes.copy()
    broken.loc[broken.index[:40], "underlying"] = None
    broken["expiry"] = broken["expiry"].astype(object)
    broken.loc[broken.index[40:80], "expiry"] = None
    broken.loc[broken.index[80:120], "underlying_price"] = np.nan
    expected = _reference_bracketing(broken, curve, dividends, AtmVolSettings())
    pd.testing.assert_frame_equal(
        bracketing_quotes(broken, curve, dividends, AtmVolSettings()), expected, check_exact=True
    )


@pytest.mark.parametrize("session", SESSIONS)
def test_source_prices_only_the_selected_quotes_with_the_full_chains_values(
    source: SyntheticSource, session: dt.date
) -> None:
    curve, dividends = _inputs(source, session)
    seen: list[pd.DataFrame] = []

    def select(unpriced: pd.DataFrame) -> np.ndarray:
        seen.append(unpriced)
        return bracketing_mask(unpriced, curve, dividends, AtmVolSettings())

    fast = source.option_quotes_where(session, select)
    full = _chain(source, session)
    assert list(seen[0].columns) == list(QUOTE_KEY_COLUMNS) and len(seen[0]) == len(full)
    # the generic path (whole chain, then filter) gives the same frame, value for value
    generic = MarketDataSource.option_quotes_where(source, session, select)
    pd.testing.assert_frame_equal(fast, generic, check_exact=True)
    pd.testing.assert_frame_equal(fast, bracketing_quotes(full, curve, dividends, AtmVolSettings()), check_exact=True)
    assert 0 < len(fast) < len(full) / 10
    assert (fast["exercise_style"] == "american").sum() > len(fast) / 2  # the exact engine priced these


def test_mask_over_several_sessions_equals_the_per_session_masks(source: SyntheticSource) -> None:
    """Sessions in one frame, each with its own curve and dividends, select what each session alone selects."""
    curves = {s: _inputs(source, s)[0] for s in SESSIONS}
    dividends = {s: _inputs(source, s)[1] for s in SESSIONS}
    order = list(reversed(SESSIONS))  # not in date order
    chains = [_chain(source, s) for s in order]
    expected = np.concatenate(
        [bracketing_mask(_chain(source, s), curves[s], dividends[s], AtmVolSettings()) for s in order]
    )
    together = pd.concat(chains, ignore_index=True)
    got = sessions_bracketing_mask(together, curves, dividends, AtmVolSettings())
    np.testing.assert_array_equal(got, expected)
    # rows of the sessions interleaved: the same rows are selected
    shuffled = np.random.default_rng(3).permutation(len(together))
    got = sessions_bracketing_mask(together.iloc[shuffled].reset_index(drop=True), curves, dividends, AtmVolSettings())
    np.testing.assert_array_equal(got, expected[shuffled])


def test_quotes_of_many_sessions_equal_the_per_session_quotes(source: SyntheticSource) -> None:
    """``option_quotes_where_many`` (several sessions' chains selected together, priced in one call) returns the
    per-session frames, concatenated, value for value; so does the generic source implementation."""
    sessions = source.sessions(dt.date(2024, 12, 16), dt.date(2025, 1, 10))
    curves = dict(tuple(source.rates_curve(sessions[0], sessions[-1]).groupby("as_of_date")))
    dividends = dict(tuple(source.dividend_yields(sessions[0], sessions[-1]).groupby("as_of_date")))
    seen: list[int] = []

    def select(unpriced: pd.DataFrame) -> np.ndarray:
        seen.append(unpriced["as_of_date"].nunique())
        return sessions_bracketing_mask(unpriced, curves, dividends, AtmVolSettings())

    expected = pd.concat(
        [bracketing_quotes(source.option_quotes(s), curves[s], dividends[s], AtmVolSettings()) for s in sessions],
        ignore_index=True,
    )
    got = source.option_quotes_where_many(sessions, select, block=7)
    assert seen == [7, 7, len(sessions) - 14]
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    generic = MarketDataSource.option_quotes_where_many(source, sessions, select)
    pd.testing.assert_frame_equal(generic, expected, check_exact=True)


def test_default_block_holds_about_the_row_budget(source: SyntheticSource, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``block`` the sessions per call follow ``CHAIN_ROWS_PER_CALL`` (at most 20): a budget of 7 sessions'
    contracts selects 7 sessions at a time, and the frame is the one of any other block size."""
    import risk_pipeline.sources.synthetic as synthetic

    sessions = source.sessions(dt.date(2024, 12, 16), dt.date(2025, 1, 10))
    seen: list[int] = []

    def select(unpriced: pd.DataFrame) -> np.ndarray:
        seen.append(unpriced["as_of_date"].nunique())
        return (unpriced["strike"].to_numpy() / unpriced["underlying_price"].to_numpy() > 1.1).astype(bool)

    per_session = synthetic._CHAIN_ROWS_PER_NAME * len(source.symbols())
    source.option_quotes_where_many(sessions, select)
    assert seen == [len(sessions)] and len(sessions) <= 20  # the sample universe: up to 20 sessions a call
    seen.clear()
    monkeypatch.setattr(synthetic, "CHAIN_ROWS_PER_CALL", 7 * per_session + per_session // 2)
    got = source.option_quotes_where_many(sessions, select)
    assert seen == [7, 7, len(sessions) - 14]
    pd.testing.assert_frame_equal(got, source.option_quotes_where_many(sessions, select, block=20), check_exact=True)


def test_one_inversion_for_all_sessions_equals_the_per_session_frames(source: SyntheticSource) -> None:
    sessions = source.sessions(dt.date(2023, 3, 1), dt.date(2023, 3, 10))
    curves = dict(tuple(source.rates_curve(sessions[0], sessions[-1]).groupby("as_of_date")))
    dividends = dict(tuple(source.dividend_yields(sessions[0], sessions[-1]).groupby("as_of_date")))
    chains = {
        s: bracketing_quotes(source.option_quotes(s), curves[s], dividends[s], AtmVolSettings()) for s in sessions
    }
    per_session = []
    for s in sessions:
        iv = implied_vol_frame(chains[s], curves[s], dividends[s])
        iv["as_of_date"] = s
        per_session.append(iv)
    expected = pd.concat(per_session, ignore_index=True)
    # sessions deliberately out of order: the result is ordered by session, rows stable within one
    shuffled = pd.concat([chains[s] for s in reversed(sessions)], ignore_index=True)
    got = history_implied_vols(shuffled, curves, dividends)
    assert (got["status"] == "OK").mean() > 0.9
    columns = [c for c in expected.columns if c != "mid"]
    pd.testing.assert_frame_equal(got[columns], expected[columns], check_exact=True)
    pd.testing.assert_frame_equal(atm_vol_rows(got, 30, "s"), atm_vol_rows(expected, 30, "s"), check_exact=True)


def test_stored_history_equals_the_full_chain_path(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    """The shared run's atm_vol_history (fast path) equals rows rebuilt from each session's whole chain."""
    wh, _ = run
    stored = wh.read("atm_vol_history")
    source = MarketDataResource(kind="synthetic", n_underlyings=4).get_source()
    days = sorted(stored["as_of_date"].unique())[::97]
    frames = []
    for day in days:
        curve = wh.read("rates_curve", {"as_of_date": day})
        dividends = wh.read("dividend_yields", {"as_of_date": day})
        quotes = _reference_bracketing(source.option_quotes(day), curve, dividends, AtmVolSettings())
        iv = implied_vol_frame(quotes, curve, dividends)
        iv["as_of_date"] = day
        frames.append(iv)
    expected = atm_vol_rows(pd.concat(frames, ignore_index=True), 30, "synthetic")
    got = stored[stored["as_of_date"].isin(days)].sort_values(["as_of_date", "symbol"]).reset_index(drop=True)
    assert len(got) == len(expected) == len(source.symbols()) * len(days)
    for column in ("atm_vol", "near_atm_vol", "far_atm_vol", "near_time_years", "spot"):
        np.testing.assert_array_equal(got[column].to_numpy(float), expected[column].to_numpy(float))
    assert got["quotes_used"].tolist() == expected["quotes_used"].tolist()
    assert got["extrapolated"].tolist() == expected["extrapolated"].tolist()


def test_atm_only_inversion_gives_the_rows_of_every_quote_inverted(
    source: SyntheticSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``history_implied_vols(atm_only=True)`` inverts only the quotes the ATM interpolation lands on and gives
    the rows, every status and those quotes' vols of inverting every quote, with zero bids and crossed quotes
    (found before the iteration). When the iteration fails on a pick, the next quote out is inverted: the
    vols are still those of inverting every quote; ``quotes_used`` then counts the quotes not inverted as
    valid (a volatility exists), so only it can differ."""
    sessions = source.sessions(dt.date(2023, 3, 1), dt.date(2023, 3, 10))
    curves = dict(tuple(source.rates_curve(sessions[0], sessions[-1]).groupby("as_of_date")))
    dividends = dict(tuple(source.dividend_yields(sessions[0], sessions[-1]).groupby("as_of_date")))
    select = functools.partial(
        sessions_bracketing_mask, curve_by_day=curves, div_by_day=dividends, settings=AtmVolSettings()
    )
    quotes = source.option_quotes_where_many(sessions, select)
    rng = np.random.default_rng(4)
    faulty = rng.random(len(quotes))
    quotes.loc[faulty < 0.05, "bid"] = 0.0
    crossed = (faulty >= 0.05) & (faulty < 0.08)
    quotes.loc[crossed, "bid"] = quotes.loc[crossed, "ask"] + 0.01

    every = history_implied_vols(quotes, curves, dividends)
    atm_only = history_implied_vols(quotes, curves, dividends, atm_only=True)
    inverted = np.isfinite(atm_only["implied_vol"].to_numpy(float))
    assert inverted.sum() < 0.5 * len(quotes)
    assert set(every["status"]) == {"OK", "ZERO_PRICE", "CROSSED"}
    pd.testing.assert_series_equal(atm_only["status"], every["status"])
    np.testing.assert_array_equal(
        atm_only["implied_vol"].to_numpy(float)[inverted], every["implied_vol"].to_numpy(float)[inverted]
    )
    rows = atm_vol_rows(every, 30, "s")
    assert len(rows) > 0
    pd.testing.assert_frame_equal(atm_vol_rows(atm_only, 30, "s"), rows, check_exact=True)

    solver = atm_history.chain_implied_vols

    def failing_solver(*args: np.ndarray) -> tuple[ImpliedVolResult, np.ndarray]:
        """The solver, with the iteration failing on every quote whose strike is a multiple of 7."""
        result, model = solver(*args)
        fails = np.asarray(args[3]) % 7.0 == 0.0
        vol = np.where(fails, np.nan, result.vol)
        status = np.where(fails, np.int8(IvStatus.NOT_CONVERGED), result.status)
        return ImpliedVolResult(vol, status, result.iterations), model

    monkeypatch.setattr(atm_history, "chain_implied_vols", failing_solver)
    every = history_implied_vols(quotes, curves, dividends)
    atm_only = history_implied_vols(quotes, curves, dividends, atm_only=True)
    inverted = np.isfinite(atm_only["implied_vol"].to_numpy(float)) | (atm_only["status"] == "NOT_CONVERGED")
    assert (atm_only["status"] == "NOT_CONVERGED").any()  # picks that failed, replaced by the next quote out
    pd.testing.assert_series_equal(atm_only["status"][inverted], every["status"][inverted])
    np.testing.assert_array_equal(
        atm_only["implied_vol"].to_numpy(float)[inverted], every["implied_vol"].to_numpy(float)[inverted]
    )
    rows = atm_vol_rows(every, 30, "s")
    got = atm_vol_rows(atm_only, 30, "s")
    pd.testing.assert_frame_equal(got.drop(columns="quotes_used"), rows.drop(columns="quotes_used"), check_exact=True)
    assert (got["quotes_used"] >= rows["quotes_used"]).all()
