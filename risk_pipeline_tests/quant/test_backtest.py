"""VaR backtests: Kupiec and Christoffersen against binomial likelihoods and scipy, Basel zones, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, chi2

from risk_pipeline.quant.backtest import (
    GREEN,
    RED,
    YELLOW,
    backtest,
    backtest_exceptions,
    basel_plus_factor,
    christoffersen_independence,
    exceptions,
    kupiec_pof,
    rolling_backtest,
    traffic_light,
    transition_counts,
    zone_bounds,
)


def test_exceptions_compare_with_the_previous_days_var() -> None:
    pnl = np.array([0.0, -5.0, -11.0, 3.0, -9.0])
    var = np.array([10.0, 10.0, 8.0, 8.0, 8.0])
    # day 1: -5 vs -10 no; day 2: -11 vs -10 yes; day 3: 3 vs -8 no; day 4: -9 vs -8 yes
    np.testing.assert_array_equal(exceptions(pnl, var), [False, True, False, True])
    np.testing.assert_array_equal(exceptions(pnl, var, lag=0), [False, False, True, False, True])
    with pytest.raises(ValueError):
        exceptions(pnl, var[:-1])


@pytest.mark.parametrize(("x", "n", "c"), [(3, 250, 0.99), (12, 250, 0.99), (30, 500, 0.95), (1, 40, 0.975)])
def test_kupiec_is_the_binomial_likelihood_ratio(x: int, n: int, c: float) -> None:
    lr, p = kupiec_pof(x, n, c)
    expected = -2.0 * (binom.logpmf(x, n, 1 - c) - binom.logpmf(x, n, x / n))
    assert lr == pytest.approx(expected, rel=1e-10)
    assert p == pytest.approx(chi2.sf(expected, 1), rel=1e-9)


def test_kupiec_edge_cases_are_finite_limits() -> None:
    assert kupiec_pof(5, 500, 0.99)[0] == pytest.approx(0.0, abs=1e-10)  # exactly p n exceptions
    assert kupiec_pof(5, 500, 0.99)[1] == pytest.approx(1.0, abs=1e-9)
    lr0, p0 = kupiec_pof(0, 250, 0.99)
    assert lr0 == pytest.approx(-2.0 * 250 * math.log(0.99), rel=1e-13)
    assert p0 == pytest.approx(chi2.sf(lr0, 1), rel=1e-12)
    lr_all, p_all = kupiec_pof(250, 250, 0.99)
    assert lr_all == pytest.approx(-2.0 * 250 * math.log(0.01), rel=1e-13)
    assert math.isfinite(p_all)
    with pytest.raises(ValueError):
        kupiec_pof(3, 2, 0.99)


def _markov_lr(e: np.ndarray) -> float:
    """Independence LR by direct products over consecutive pairs (two-state Markov chain)."""
    a, b = e[:-1], e[1:]
    n = [[int(np.sum((a == i) & (b == j))) for j in (0, 1)] for i in (0, 1)]

    def ll(counts: list[int], prob: float) -> float:
        return sum(k * math.log(q) for k, q in zip(counts, (1 - prob, prob), strict=True) if k)

    pi0 = n[0][1] / max(n[0][0] + n[0][1], 1)
    pi1 = n[1][1] / max(n[1][0] + n[1][1], 1)
    pi = (n[0][1] + n[1][1]) / (len(e) - 1)
    l0 = ll([n[0][0] + n[1][0], n[0][1] + n[1][1]], pi)
    l1 = ll(n[0], pi0) + ll(n[1], pi1)
    return -2.0 * (l0 - l1)


def test_christoffersen_independence_against_direct_likelihoods() -> None:
    rng = np.random.default_rng(0)
    for p in (0.02, 0.05, 0.2):
        e = rng.random(500) < p
        e[100:104] = True  # a cluster
        lr, pv = christoffersen_independence(*transition_counts(e))
        assert lr == pytest.approx(_markov_lr(e.astype(int)), rel=1e-10)
        assert pv == pytest.approx(chi2.sf(lr, 1), rel=1e-9)
    res = backtest_exceptions(e, 0.99)
    assert res.conditional_coverage_lr == pytest.approx(res.kupiec_lr + res.christoffersen_lr, rel=1e-14)
    assert res.conditional_coverage_p_value == pytest.approx(chi2.sf(res.conditional_coverage_lr, 2), rel=1e-9)
    alternating = np.arange(200) % 2 == 0
    assert christoffersen_independence(*transition_counts(alternating))[0] > 100.0


@pytest.mark.parametrize("e", [np.zeros(250, bool), np.ones(250, bool), np.array([True]), np.array([False])])
def test_degenerate_series_have_no_nan(e: np.ndarray) -> None:
    res = backtest_exceptions(e, 0.99)
    values = [
        res.kupiec_lr,
        res.kupiec_p_value,
        res.christoffersen_lr,
        res.christoffersen_p_value,
        res.conditional_coverage_lr,
        res.conditional_coverage_p_value,
    ]
    assert all(math.isfinite(v) for v in values)
    assert res.christoffersen_lr == 0.0 and res.christoffersen_p_value == 1.0
    single_after_none = np.array([False] * 50 + [True])  # no day after an exception: pi_1 undefined
    lr, _ = christoffersen_independence(*transition_counts(single_after_none))
    assert lr == pytest.approx(_markov_lr(single_after_none.astype(int)), abs=1e-12)


def test_basel_traffic_light_250_days() -> None:
    zones = traffic_light(np.arange(16), 250, 0.99)
    assert list(zones[:5]) == [GREEN] * 5
    assert list(zones[5:10]) == [YELLOW] * 5
    assert list(zones[10:]) == [RED] * 6
    assert zone_bounds(250, 0.99) == (4, 9)
    assert traffic_light(4) == GREEN and traffic_light(5) == YELLOW and traffic_light(10) == RED
    assert [basel_plus_factor(x) for x in (0, 4, 5, 6, 7, 8, 9, 10, 30)] == [
        0.0,
        0.0,
        0.40,
        0.50,
        0.65,
        0.75,
        0.85,
        1.0,
        1.0,
    ]


@pytest.mark.parametrize(("n", "c"), [(500, 0.99), (250, 0.975), (1000, 0.95)])
def test_general_zones_follow_the_binomial_cdf(n: int, c: float) -> None:
    green_max, yellow_max = zone_bounds(n, c)
    cdf = binom.cdf(np.arange(n + 1), n, 1 - c)
    assert cdf[green_max] < 0.95 <= cdf[green_max + 1]
    assert cdf[yellow_max] < 0.9999 <= cdf[yellow_max + 1]
    assert traffic_light(green_max, n, c) == GREEN
    assert traffic_light(green_max + 1, n, c) == YELLOW
    assert traffic_light(yellow_max + 1, n, c) == RED


def test_rolling_windows_equal_direct_backtests() -> None:
    rng = np.random.default_rng(1)
    n = 400
    var = np.full(n, 2.33)
    pnl = rng.standard_t(4, n)
    rolled = rolling_backtest(pnl, var, 0.99, window=250)
    e = exceptions(pnl, var)
    assert len(rolled) == e.size - 250 + 1
    for k in (0, 37, len(rolled) - 1):
        direct = backtest_exceptions(e[k : k + 250], 0.99)
        got = rolled[k]
        assert got.window_end_index == k + 250  # index into pnl (lag 1)
        assert got.exceptions == direct.exceptions and got.traffic_light == direct.traffic_light
        for f in (
            "kupiec_lr",
            "kupiec_p_value",
            "christoffersen_lr",
            "christoffersen_p_value",
            "conditional_coverage_lr",
            "conditional_coverage_p_value",
        ):
            assert getattr(got, f) == pytest.approx(getattr(direct, f), rel=1e-12, abs=1e-14)
    whole = backtest(pnl, var, 0.99)
    assert whole.n_obs == n - 1 and whole.exceptions == int(e.sum())
    assert set(whole.to_row()) >= {
        "n_obs",
        "exceptions",
        "kupiec_lr",
        "kupiec_p_value",
        "christoffersen_lr",
        "christoffersen_p_value",
        "traffic_light",
    }
    assert rolling_backtest(pnl[:100], var[:100], 0.99, window=250) == ()
