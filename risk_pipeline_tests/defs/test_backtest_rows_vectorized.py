"""var_backtest's rolling windows, computed for all windows at once, against one backtest per window."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.contracts import table
from risk_pipeline.defs.risk.backtest import CONFIDENCE, WINDOW, rolling_rows
from risk_pipeline.quant.backtest import backtest_exceptions


def _reference_rows(
    pnl_dates: pd.Series, pnl: np.ndarray, var: dict[str, np.ndarray], book: str, source: str
) -> pd.DataFrame:
    """The per-window loop the asset used before (``quant.backtest.backtest_exceptions`` on each window)."""
    rows: list[dict[str, Any]] = []
    dates = list(pnl_dates)
    for method, v in var.items():
        ok = np.isfinite(v)
        exc = pnl < -v
        for end in range(len(dates)):
            start = max(0, end - WINDOW + 1)
            window = ok[start : end + 1]
            if not window.any():
                continue
            r = backtest_exceptions(exc[start : end + 1][window], CONFIDENCE)
            rows.append(
                {
                    **r.to_row(),
                    "window_end": dates[end],
                    "window_start": dates[start],
                    "book": book,
                    "method": method,
                    "expected_exceptions": r.expected_exceptions,
                    "source": source,
                }
            )
    return pd.DataFrame(rows, columns=table("var_backtest").data_column_names)


@pytest.mark.parametrize("n_days", [0, 1, 7, WINDOW + 60])
def test_windows_equal_one_backtest_per_window(n_days: int) -> None:
    rng = np.random.default_rng(n_days)
    dates = pd.Series([dt.date(2025, 1, 1) + dt.timedelta(days=i) for i in range(n_days)], dtype=object)
    pnl = rng.standard_normal(n_days)
    clustered = np.abs(rng.standard_normal(n_days)) * 2.0
    clustered[n_days // 3 : n_days // 3 + 6] = 0.0  # a run of consecutive exceptions
    gappy = np.abs(rng.standard_normal(n_days)) * 2.3
    gappy[rng.random(n_days) < 0.2] = np.nan  # days without that method's VaR
    gappy[:5] = np.nan  # windows that start with no VaR at all
    var = {"historical": clustered, "monte_carlo_fhs": gappy, "parametric": np.full(n_days, np.nan)}
    got = rolling_rows(dates, pnl, var, "book", "src")
    expected = _reference_rows(dates, pnl, var, "book", "src")
    assert len(got) == len(expected)
    if n_days > WINDOW:
        assert set(got["traffic_light"]) >= {"green"} and got["exceptions"].max() >= 6
    pd.testing.assert_frame_equal(got, expected, check_exact=True, check_dtype=n_days > 0)
