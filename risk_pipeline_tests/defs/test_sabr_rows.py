"""sabr_slices rows taken from numpy columns per expiry equal the rows of a ``groupby("expiry", sort=True)`` over the
same quotes (the reference below is the former per-slice DataFrame grouping, each slice made into a row by the same
``sabr_row``): expiries sorted, each slice's quotes in their order in the frame, slices of fewer than 3 quotes
skipped."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from risk_pipeline.defs.volatility.stochastic_vol import SABR_FORMULA, sabr_row, sabr_rows
from risk_pipeline.quant.sabr import calibrate_sabr


def _reference_rows(quotes: pd.DataFrame, beta: float) -> list[dict[str, object]]:
    rows = []
    for expiry, g in quotes.groupby("expiry", sort=True):
        if len(g) < 3:
            continue
        forward = float(g["forward"].iloc[0])
        t = float(g["time_to_expiry_years"].iloc[0])
        fit = calibrate_sabr(
            g["strike"].to_numpy(float), g["implied_vol"].to_numpy(float), forward, t, beta, SABR_FORMULA
        )
        rows.append(sabr_row(expiry, t, forward, fit))
    return rows


def _chain(rng: np.random.Generator) -> pd.DataFrame:
    """Expiries in shuffled row order (one of two quotes), strikes unsorted within a slice."""
    expiries = [dt.date(2027, 1, 15), dt.date(2026, 12, 18), dt.date(2027, 6, 18), dt.date(2026, 12, 11)]
    counts = [9, 7, 2, 12]
    frames = []
    for expiry, n in zip(expiries, counts, strict=True):
        t = (expiry - dt.date(2026, 12, 3)).days / 365.0
        forward = 100.0 * math.exp(0.03 * t)
        x = rng.uniform(-0.3, 0.25, n) * math.sqrt(max(t, 0.05))
        v = 0.25 * (1.0 - 0.5 * x + 1.2 * x * x) + rng.normal(0.0, 0.002, n)
        frames.append(
            pd.DataFrame(
                {
                    "underlying": "AAA",
                    "expiry": expiry,
                    "time_to_expiry_years": t,
                    "strike": forward * np.exp(x),
                    "forward": forward,
                    "implied_vol": v,
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_rows_equal_the_per_slice_groupby(beta: float) -> None:
    rng = np.random.default_rng(7)
    for _ in range(3):
        quotes = _chain(rng)
        got = sabr_rows(quotes, beta)
        want = _reference_rows(quotes, beta)
        assert [r["expiry"] for r in got] == sorted({d for d in quotes["expiry"]} - {dt.date(2027, 6, 18)})
        assert got == want
        assert pd.DataFrame(got).equals(pd.DataFrame(want))
    assert sabr_rows(quotes.iloc[:0], beta) == []


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_rows_fitted_by_numpy_equal_the_compiled_rows(beta: float) -> None:
    """``compiled=False`` (a small first run, before the kernel is cached) gives the compiled path's rows."""
    rng = np.random.default_rng(11)
    for _ in range(3):
        quotes = _chain(rng)
        assert pd.DataFrame(sabr_rows(quotes, beta, compiled=False)).equals(pd.DataFrame(sabr_rows(quotes, beta)))


def test_the_kernel_is_used_for_many_underlyings_or_once_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    from risk_pipeline.defs.volatility import stochastic_vol

    n = stochastic_vol.SABR_KERNEL_MIN_UNDERLYINGS
    monkeypatch.setattr(stochastic_vol, "cached_on_disk", lambda kernels: False)
    assert not stochastic_vol.sabr_compiled(n - 1)
    assert stochastic_vol.sabr_compiled(n)
    monkeypatch.setattr(stochastic_vol, "cached_on_disk", lambda kernels: True)
    assert stochastic_vol.sabr_compiled(1)
