"""The demo's session: the latest closed session with a gap-risk event inside its lead window (checked against
exchange_calendars directly, not through the platform's calendar helpers)."""

from __future__ import annotations

import datetime as dt

import exchange_calendars as xcals
import pandas as pd

from risk_pipeline.cli import _session_with_gap_events
from risk_pipeline.event_windows import load_gap_risk_config
from risk_pipeline.resources import MarketDataResource


def _in_window(day: dt.date, calendar: pd.DataFrame, held: set[str], leads: dict[str, int]) -> list[str]:
    """Event ids whose reaction session (first XNYS close after the event) is 1..lead sessions after ``day``."""
    cal = xcals.get_calendar("XNYS", start="2026-01-01", end="2027-06-30")
    closes = cal.closes
    close_day = closes[pd.Timestamp(day)]
    found = []
    for r in calendar.itertuples():
        t = pd.Timestamp(r.event_time)
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        if t <= close_day or t >= closes.iloc[-1] or "cancelled" in str(r.notes or ""):
            continue
        reaction = closes.index[closes > t][0]
        n = len(cal.sessions_in_range(pd.Timestamp(day) + pd.Timedelta(days=1), reaction))
        concerns = pd.isna(r.symbol) or r.symbol in held
        if concerns and n <= leads.get(r.event_type, leads["other"]):
            found.append(str(r.event_id))
    return found


def test_demo_picks_the_latest_session_with_an_event_in_its_window() -> None:
    resources = {"market_data": MarketDataResource(kind="synthetic")}
    source = resources["market_data"].get_source()
    calendar = pd.concat([source.earnings_events(), resources["market_data"].macro_events()], ignore_index=True)
    leads_cfg = load_gap_risk_config().leads
    leads = {t: leads_cfg.lead(t) for t in ("earnings", "fomc", "cpi", "nfp", "ppi", "gdp", "opex", "other")}
    latest = dt.date(2026, 12, 2)
    chosen, names = _session_with_gap_events(resources, latest)
    assert chosen <= latest and names != "none"
    assert _in_window(chosen, calendar, set(source.positions(chosen)["symbol"]), leads)
    skipped = xcals.get_calendar("XNYS").sessions_in_range(pd.Timestamp(chosen) + pd.Timedelta(days=1), latest)
    for day in skipped:
        d = day.date()
        assert not _in_window(d, calendar, set(source.positions(d)["symbol"]), leads), d


def test_held_symbols_are_the_positions_symbols() -> None:
    """``SyntheticSource.held_symbols`` (what the demo's session search uses) names the symbols of ``positions``,
    for the sample book and a scaled one, on sessions around rolls and expiries."""
    from risk_pipeline.sources.synthetic import SyntheticSource

    days = [dt.date(2024, 3, 12), dt.date(2024, 3, 15), dt.date(2025, 6, 20), dt.date(2026, 12, 3)]
    for source in (SyntheticSource(seed=7), SyntheticSource(seed=11, n_underlyings=60, book_positions=300)):
        for day in days:
            assert source.held_symbols(day) == set(source.positions(day)["symbol"]), day
