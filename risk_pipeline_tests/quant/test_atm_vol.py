"""Constant-maturity ATM vol against closed forms and a chain priced and inverted end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest

from risk_pipeline.quant.atm_vol import constant_maturity_vol, expiry_atm_vols
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.chain import chain_implied_vols


def test_linear_smile_gives_its_intercept_and_one_sided_slices_give_nan() -> None:
    # slice 0: vol = 0.2 - 0.3 k (puts at k <= 0, calls at k > 0); slice 1 has calls only
    k = np.array([-0.10, -0.04, -0.01, 0.02, 0.05, 0.03, 0.06])
    call = np.array([False, False, False, True, True, True, True])
    sid = np.array([0, 0, 0, 0, 0, 1, 1])
    iv = 0.2 - 0.3 * k
    atm, k_lo, k_hi = expiry_atm_vols(sid, k, iv, call, 2)
    assert atm[0] == pytest.approx(0.2, abs=1e-15)
    assert (k_lo[0], k_hi[0]) == (-0.01, 0.02)
    assert math.isnan(atm[1])


def test_in_the_money_and_invalid_quotes_are_ignored() -> None:
    k = np.array([-0.02, -0.01, 0.01, 0.03, -0.005])
    call = np.array([False, True, True, False, False])  # an ITM call at -0.01 and an ITM put at 0.03
    iv = np.array([0.25, 9.0, 0.21, 9.0, np.nan])  # the NaN put nearest the forward is skipped
    atm, _, _ = expiry_atm_vols(np.zeros(5, int), k, iv, call, 1)
    assert atm[0] == pytest.approx(0.25 + 0.02 * (0.21 - 0.25) / 0.03)


def test_total_variance_interpolation_and_extrapolation() -> None:
    uid = np.array([0, 0, 0, 1, 2, 2, 4, 4, 5, 5])
    t = np.array([10, 25, 40, 60, 3, 20, 35, 63, 40, 80]) / 365.0
    vol = np.array([0.30, 0.25, 0.22, 0.18, 0.5, 0.4, 0.30, 0.26, 0.10, 0.60])
    tau = 30 / 365.0
    cm = constant_maturity_vol(uid, t, vol, tau, 6)
    w = vol**2 * t
    assert cm.atm_vol[0] == pytest.approx(math.sqrt((w[1] + (tau - t[1]) * (w[2] - w[1]) / (t[2] - t[1])) / tau))
    assert (cm.near_slice[0], cm.far_slice[0], cm.extrapolated[0]) == (1, 2, False)
    # one expiry only, or none after the tenor: that vol, flagged
    assert cm.atm_vol[1] == 0.18 and cm.extrapolated[1] and (cm.near_slice[1], cm.far_slice[1]) == (-1, 3)
    assert cm.atm_vol[2] == 0.4 and cm.extrapolated[2] and cm.far_slice[2] == -1
    assert math.isnan(cm.atm_vol[3]) and not cm.extrapolated[3]
    # every expiry after the tenor, a falling front: total variance extrapolated back along the first two,
    # a vol above the first expiry's
    w4 = w[6] + (tau - t[6]) * (w[7] - w[6]) / (t[7] - t[6])
    assert cm.atm_vol[4] == pytest.approx(math.sqrt(w4 / tau))
    assert 0.30 < cm.atm_vol[4] < 0.30 * math.sqrt(t[6] / tau)
    assert (cm.near_slice[4], cm.far_slice[4], cm.extrapolated[4]) == (6, 7, True)
    # a steep rising front extrapolates to negative variance: the first expiry's vol instead
    assert cm.atm_vol[5] == 0.10 and cm.extrapolated[5]


def test_rising_front_is_not_extrapolated_below_the_first_expiry() -> None:
    """An earnings move between the first two expiries (39 and 67 days) does not pull the 30-day vol down.

    Base variance rate 0.08**2 a year plus a jump of total variance J on day 50: the first expiry does not
    span the event, so the 30-day vol is 0.08 (the line through the two expiries would give about 0.005).
    """
    base, jump = 0.08**2, 0.00163
    t = np.array([39.0, 67.0]) / 365.0
    w = base * t + np.array([0.0, jump])
    cm = constant_maturity_vol(np.zeros(2, int), t, np.sqrt(w / t), 30 / 365.0, 1)
    line = w[0] + (30 / 365.0 - t[0]) * (w[1] - w[0]) / (t[1] - t[0])
    assert 0.0 < line and math.sqrt(line / (30 / 365.0)) < 0.01  # what the line alone gives
    assert cm.atm_vol[0] == pytest.approx(0.08, rel=1e-12) and cm.extrapolated[0]
    # the event before the tenor (day 10) instead: both expiries span it and the line gives the truth
    w = base * t + jump
    cm = constant_maturity_vol(np.zeros(2, int), t, np.sqrt(w / t), 30 / 365.0, 1)
    assert cm.atm_vol[0] == pytest.approx(math.sqrt((base * 30 / 365.0 + jump) / (30 / 365.0)), rel=1e-12)


def test_priced_chain_round_trips_to_the_generating_atm_vol() -> None:
    """Quotes priced by BSM off a smile, inverted, give the smile at the forward to interpolation error."""
    spot, r, q = 100.0, 0.04, 0.01
    expiries = np.array([21.0, 49.0]) / 365.0
    atm_true = np.array([0.24, 0.21])
    strikes = np.arange(90.0, 110.5, 1.0)
    s_id, kk, tt, cc = [], [], [], []
    for e, t in enumerate(expiries):
        for call in (True, False):
            s_id += [e] * strikes.size
            kk += list(strikes)
            tt += [t] * strikes.size
            cc += [call] * strikes.size
    sid, strike, t, call = np.array(s_id), np.array(kk), np.array(tt), np.array(cc)
    forward = spot * np.exp((r - q) * t)
    k = np.log(strike / forward)
    smile = atm_true[sid] - 0.2 * k + 0.5 * k**2
    price = bsm_price(spot, strike, t, smile, r, q, call)
    res, _ = chain_implied_vols(price, price, spot, strike, t, r, q, call, np.zeros_like(call))
    atm, k_lo, k_hi = expiry_atm_vols(sid, k, res.vol, call, 2)
    # linear interpolation of a quadratic: error 0.5 * |k_lo| * k_hi (curvature 2 * 0.5)
    bound = 0.5 * np.abs(k_lo) * k_hi + 1e-9
    assert np.all(np.abs(atm - atm_true) <= bound)
    cm = constant_maturity_vol(np.zeros(2, int), expiries, atm, 30 / 365.0, 1)
    w = np.interp(30 / 365.0, expiries, atm_true**2 * expiries)
    assert cm.atm_vol[0] == pytest.approx(math.sqrt(w / (30 / 365.0)), abs=2e-4)
