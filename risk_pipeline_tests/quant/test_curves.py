"""Curve interpolation and parity forwards against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from risk_pipeline.quant.curves import forward_price, parity_forward, year_fraction, zero_rate


def test_zero_rate_hits_nodes_and_is_linear_between() -> None:
    tenors, rates = np.array([30, 365, 730]), np.array([0.05, 0.04, 0.03])
    t = tenors / 365.0
    np.testing.assert_allclose(zero_rate(tenors, rates, t), rates, rtol=0, atol=1e-15)
    mid = (t[0] + t[1]) / 2
    expected = 0.045
    assert zero_rate(tenors, rates, mid) == pytest.approx(expected, rel=1e-14)
    # flat beyond the ends
    np.testing.assert_allclose(zero_rate(tenors, rates, [0.0, 0.001, 5.0]), [0.05, 0.05, 0.03])


def test_year_fraction_is_act_365() -> None:
    start = np.datetime64("2026-11-20T21:00:00", "ns").astype(np.int64)
    end = np.datetime64("2027-11-20T21:00:00", "ns").astype(np.int64)
    assert year_fraction(start, end) == pytest.approx(1.0)


def test_parity_forward_recovers_the_forward_of_bsm_prices() -> None:
    s, r, q, t, vol = 100.0, 0.04, 0.015, 0.5, 0.25
    f = forward_price(s, r, q, t)
    d = np.exp(-r * t)
    k = np.array([80.0, 90, 95, 100, 105, 110, 120])
    d1 = (np.log(f / k) + 0.5 * vol**2 * t) / (vol * np.sqrt(t))
    d2 = d1 - vol * np.sqrt(t)
    call = d * (f * norm.cdf(d1) - k * norm.cdf(d2))
    put = d * (k * norm.cdf(-d2) - f * norm.cdf(-d1))
    assert parity_forward(k, call, put, d, reference_forward=f) == pytest.approx(f, rel=1e-12)
    assert np.isnan(parity_forward(k, call * np.nan, put, d, reference_forward=f))
