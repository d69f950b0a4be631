"""The synthetic source's universe sizes (``RISK_PIPELINE_UNIVERSE``): names, books and their chains are valid and
consistent. Small checks only: the large universe is built without its price history; the medium one's book is
checked on one session and its held contracts against the unpriced chain."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.resources import MarketDataResource
from risk_pipeline.sources.synthetic import _SECTORS, INDEX_SYMBOL, UNIVERSES, SyntheticSource

SESSION = dt.date(2026, 12, 3)


@pytest.fixture(scope="module")
def medium() -> SyntheticSource:
    n_underlyings, book_positions = UNIVERSES["medium"]
    return SyntheticSource(n_underlyings=n_underlyings, book_positions=book_positions)


@pytest.fixture(scope="module")
def medium_book(medium: SyntheticSource) -> pd.DataFrame:
    return medium.positions(SESSION)


def test_universe_sizes_are_the_documented_ones():
    assert UNIVERSES == {"sample": (50, None), "medium": (500, 5_000), "large": (3_000, 50_000)}


def test_resource_builds_the_universe_of_its_setting():
    for name, (n_underlyings, book_positions) in UNIVERSES.items():
        source = MarketDataResource(universe=name).get_source()
        assert isinstance(source, SyntheticSource)
        assert (source.n_underlyings, source.book_positions) == (n_underlyings, book_positions)


def test_large_instrument_master_is_valid_and_deterministic():
    n_underlyings, book_positions = UNIVERSES["large"]
    master = SyntheticSource(n_underlyings=n_underlyings, book_positions=book_positions).instrument_master()
    assert len(master) == 3_001
    assert master["symbol"].iloc[0] == INDEX_SYMBOL
    assert master["symbol"].is_unique
    assert master["symbol"].str.fullmatch(r"[A-Z]{4}").all()
    stocks = master.iloc[1:]
    assert (stocks["instrument_type"] == "stock").all() and (stocks["exercise_style"] == "american").all()
    # names are dealt to the 8 sectors in turn: 375 each
    assert stocks["sector"].value_counts().to_dict() == dict.fromkeys(_SECTORS, 375)
    assert stocks["beta"].between(0.5, 1.8).all()
    assert stocks["dividend_yield"].between(0.0, 0.04).all()
    assert (stocks["long_run_vol"] > 0.0).all() and (stocks["earnings_move_sd"] > 0.0).all()
    assert set(stocks["earnings_timing"]) == {"after close", "before open"}
    again = SyntheticSource(n_underlyings=n_underlyings, book_positions=book_positions).instrument_master()
    pd.testing.assert_frame_equal(master, again)
    other = SyntheticSource(seed=8, n_underlyings=n_underlyings).instrument_master()
    assert list(other["symbol"]) == list(master["symbol"]) and not np.allclose(other["beta"], master["beta"])


def test_first_names_of_a_larger_universe_are_the_sample_tickers():
    sample = SyntheticSource().instrument_master()["symbol"]
    medium = SyntheticSource(n_underlyings=500).instrument_master()["symbol"]
    assert list(medium.iloc[: len(sample)]) == list(sample)


def test_medium_book_size_and_keys(medium_book: pd.DataFrame):
    assert len(medium_book) == pytest.approx(5_000, rel=0.02)
    assert medium_book["position_id"].is_unique
    assert set(medium_book["book"]) == {"core_equity", "vol_overlay"}
    # positions spread over the names: most stocks are held
    assert medium_book["symbol"].nunique() >= 0.9 * 500
    options = medium_book[medium_book["instrument_type"] == "option"]
    assert not options.duplicated(["book", "symbol", "expiry", "strike", "option_type"]).any()
    assert (options["expiry"] > SESSION).all()
    assert (options["strike"] > 0.0).all() and (options["cost_basis"] >= 0.0).all()
    assert (options["quantity"] != 0.0).all() and (options["multiplier"] == 100.0).all()


def test_medium_book_matches_the_instrument_master(medium: SyntheticSource, medium_book: pd.DataFrame):
    master = medium.instrument_master().set_index("symbol")
    assert set(medium_book["symbol"]) <= set(master.index)
    assert (medium_book["sector"].to_numpy() == master.loc[medium_book["symbol"], "sector"].to_numpy()).all()


def test_medium_ladders_step_outward(medium: SyntheticSource, medium_book: pd.DataFrame):
    """Each ladder's calls lie above, its puts below the close of its roll session, strictly further out leg
    by leg (the legs in book order)."""
    ladders = medium_book[medium_book["strategy"] == "option_ladder"]
    assert len(ladders) > 0.85 * len(medium_book)
    for (_, _, otype), legs in ladders.groupby(["symbol", "expiry", "option_type"], sort=False):
        steps = np.diff(legs["strike"].to_numpy())
        assert (steps > 0).all() if otype == "C" else (steps < 0).all()


def test_medium_held_contracts_are_listed(medium: SyntheticSource, medium_book: pd.DataFrame):
    """Every option held on the session is a contract of that session's chain (checked on the unpriced chain)."""
    seen: list[pd.DataFrame] = []

    def keep_none(chain: pd.DataFrame) -> np.ndarray:
        seen.append(chain)
        return np.zeros(len(chain), dtype=bool)

    assert medium.option_quotes_where(SESSION, keep_none).empty
    chain = seen[0]
    key = ["underlying", "expiry", "strike", "option_type"]
    listed = set(map(tuple, chain[key].astype(str).to_numpy()))
    options = medium_book[medium_book["instrument_type"] == "option"]
    held = options[["symbol", "expiry", "strike", "option_type"]].astype(str).to_numpy()
    assert all(tuple(row) in listed for row in held)


def test_medium_book_is_deterministic(medium_book: pd.DataFrame):
    n_underlyings, book_positions = UNIVERSES["medium"]
    again = SyntheticSource(n_underlyings=n_underlyings, book_positions=book_positions).positions(SESSION)
    pd.testing.assert_frame_equal(medium_book, again)
