"""The realized backtest leaves out P&L that spans more than one session (a gap between valuations)."""

import datetime as dt

import numpy as np
import pandas as pd

from risk_pipeline.defs.risk.backtest import sessions_apart


def test_sessions_apart_on_the_exchange_calendar() -> None:
    d = dt.date
    series = pd.DataFrame(
        {
            "previous_date": [d(2026, 11, 20), d(2026, 11, 19), d(2026, 11, 25), d(2026, 12, 24), d(2026, 11, 2)],
            "as_of_date": [d(2026, 11, 23), d(2026, 11, 23), d(2026, 11, 27), d(2026, 12, 28), d(2026, 11, 9)],
        }
    )
    # Fri -> Mon; Thu -> Mon skips Friday; Wed -> Fri over Thanksgiving; Dec 24 -> Dec 28 over Christmas; a week
    np.testing.assert_array_equal(sessions_apart(series), [1, 2, 1, 1, 5])
    assert sessions_apart(pd.DataFrame()).size == 0
