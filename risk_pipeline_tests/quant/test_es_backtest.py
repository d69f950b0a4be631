"""Acerbi-Szekely Z2 ES backtest: the formula by hand, the matched Student-t, the published critical values,
and size and power by simulation with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from risk_pipeline.quant.es_backtest import matched_student_t, rolling_z2, simulated_z2, z2_statistic, z2_test

ALPHA = 0.025


def _t_var_es(df: float, scale: float = 1.0) -> tuple[float, float]:
    q = stats.t.ppf(1 - ALPHA, df)
    return scale * q, scale * stats.t.pdf(q, df) * (df + q * q) / (df - 1) / ALPHA


def test_z2_by_hand() -> None:
    # exceptions: -3 and -2.5 (below -VaR = -2); Z2 = 1 - (3/2.5 + 2.5/2.5) / (4 x 0.25) = -1.2
    assert z2_statistic([-3.0, 1.0, -0.5, -2.5], [2.0] * 4, [2.5] * 4, 0.25) == pytest.approx(-1.2, abs=1e-15)
    # no exception: Z2 = 1
    assert z2_statistic([1.0, -1.0], [2.0, 2.0], [2.5, 2.5], 0.25) == 1.0


def test_matched_student_t_recovers_df_and_scale() -> None:
    var, es = zip(*[_t_var_es(3.0, 2.0), _t_var_es(5.0, 1000.0), _t_var_es(30.0, 0.5)], strict=True)
    df, scale = matched_student_t(var, es, ALPHA)
    np.testing.assert_allclose(df, [3.0, 5.0, 30.0], rtol=1e-6)
    np.testing.assert_allclose(scale, [2.0, 1000.0, 0.5], rtol=1e-6)
    # the normal's ratio (ES/VaR = phi(z)/(alpha z)) gives the normal
    z = stats.norm.ppf(1 - ALPHA)
    df, scale = matched_student_t([z * 3.0], [3.0 * stats.norm.pdf(z) / ALPHA], ALPHA)
    assert np.isinf(df[0]) and scale[0] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="ES at least its VaR"):
        matched_student_t([2.0], [1.0], ALPHA)


def test_null_distribution_matches_the_published_critical_values() -> None:
    """Acerbi and Szekely (2014): at T = 250, alpha = 2.5 %, the 5 % critical value of Z2 is about -0.70 for a
    thin-tailed model and -0.72 for Student-t with 5 degrees of freedom; a series exactly at those values has
    p about 0.05."""
    for df, critical in ((100.0, -0.70), (5.0, -0.72)):
        var, es = _t_var_es(df)
        # a series whose Z2 equals the critical value: one exception carrying the whole tail mass
        n = 250
        loss = (1 - critical) * n * ALPHA * es
        pnl = np.zeros(n)
        pnl[0] = -loss
        result = z2_test(pnl, np.full(n, var), np.full(n, es), ALPHA, n_simulations=20_000, seed=1)
        assert result.z2 == pytest.approx(critical, abs=1e-12)
        assert 0.035 < result.p_value < 0.07, (df, result.p_value)


def test_size_and_power_by_simulation() -> None:
    """Correct ES (Student-t(4) losses, the model's t(4) VaR and ES): rejected at 5 % in about 5 % of paths.
    Losses 30 % larger than the model says (its ES 23 % too low): rejected in most paths."""
    rng = np.random.default_rng(7)
    n, paths = 250, 60
    var_t, es_t = _t_var_es(4.0)
    rejected = {1.0: 0, 1.3: 0}
    for i in range(paths):
        for scale in rejected:
            losses = scale * rng.standard_t(4.0, n)
            r = z2_test(-losses, np.full(n, var_t), np.full(n, es_t), ALPHA, n_simulations=1_000, seed=i)
            rejected[scale] += r.p_value <= 0.05
    assert rejected[1.0] / paths < 0.11
    assert rejected[1.3] / paths > 0.5


def test_zones_and_counts() -> None:
    var, es = _t_var_es(100.0)
    n = 250
    calm = np.zeros(n)
    assert z2_test(calm, np.full(n, var), np.full(n, es), ALPHA, n_simulations=2_000).zone == "green"
    crash = np.full(n, -3.0 * es)  # every day an exception three times the ES
    result = z2_test(crash, np.full(n, var), np.full(n, es), ALPHA, n_simulations=20_000)
    assert result.zone == "red" and result.n_exceptions == n and result.n_obs == n


def test_rolling_z2_equals_z2_of_each_window() -> None:
    rng = np.random.default_rng(3)
    n, window = 40, 10
    pnl = rng.standard_normal(n) * 2
    var = np.full(n, 1.5)
    es = np.full(n, 2.0)
    var[[3, 17]] = np.nan  # days without a VaR are left out of their windows
    es[25] = np.nan
    z2, count = rolling_z2(pnl, var, es, 0.1, window)
    for i in range(n):
        days = np.arange(max(0, i - window + 1), i + 1)
        days = days[np.isfinite(var[days]) & np.isfinite(es[days])]
        assert count[i] == len(days)
        assert z2[i] == pytest.approx(z2_statistic(pnl[days], var[days], es[days], 0.1), abs=1e-12)


def test_series_with_the_same_var_and_es_share_one_simulation() -> None:
    rng = np.random.default_rng(3)
    n = 250
    var, es = (np.full(n, x) for x in _t_var_es(5.0, 2.0))
    var[::7] *= 1.3  # days with another matched t
    es[::7] *= 1.3
    pnl_a, pnl_b = -2.0 * rng.standard_t(5.0, n), -2.0 * rng.standard_t(5.0, n)
    cache: dict = {}
    a = z2_test(pnl_a, var, es, ALPHA, n_simulations=2_000, seed=4, cache=cache)
    b = z2_test(pnl_b, var, es, ALPHA, n_simulations=2_000, seed=4, cache=cache)
    assert len(cache) == 1
    assert a == z2_test(pnl_a, var, es, ALPHA, n_simulations=2_000, seed=4)
    assert b == z2_test(pnl_b, var, es, ALPHA, n_simulations=2_000, seed=4)
    z2_test(pnl_a, var, es, ALPHA, n_simulations=2_000, seed=5, cache=cache)  # another seed: another simulation
    assert len(cache) == 2


@pytest.mark.parametrize("with_normal", [False, True])
def test_simulated_z2_is_the_formula_on_the_matched_draws(with_normal: bool) -> None:
    """The simulated Z2 is ``1 - sum_t L_t 1{L_t > VaR_t} / ES_t / (T alpha)`` of each day's matched Student-t
    draws (standard normal where the ratio is the normal's), drawn normal columns first: equal bit for bit to
    that formula written with ``np.where``."""
    rng = np.random.default_rng(3)
    var = rng.uniform(1.0, 2.0, 40)
    es = var * rng.uniform(1.2, 1.5, 40)
    if with_normal:  # some days with the normal's ES/VaR ratio
        z = stats.norm.ppf(1 - ALPHA)
        es[::5] = var[::5] * stats.norm.pdf(z) / ALPHA / z
    df, scale = matched_student_t(var, es, ALPHA)
    normal = np.isinf(df)
    assert normal.any() == with_normal
    gen = np.random.default_rng(11)
    draws = np.empty((700, var.size))
    if normal.any():
        draws[:, normal] = gen.standard_normal((700, int(normal.sum())))
    draws[:, ~normal] = gen.standard_t(df[~normal], size=(700, int((~normal).sum())))
    losses = draws * scale
    want = 1.0 - np.sum(np.where(losses > var, losses / es, 0.0), axis=1) / (var.size * ALPHA)
    np.testing.assert_array_equal(simulated_z2(var, es, ALPHA, 700, 11), want)


def test_t_ratio_is_scipy_t_distribution_bit_for_bit() -> None:
    """``_t_ratio`` calls SciPy's Student-t quantile and log-density functions directly: the same bits as
    ``stats.t.ppf`` and ``stats.t.pdf`` (arrays of any length and 0-d, the bisection's range of ``df``), and its ES
    over VaR is the Student-t's own (``stats.t.expect`` of the tail)."""
    from risk_pipeline.quant.es_backtest import DF_MAX, DF_MIN, _t_ratio

    rng = np.random.default_rng(5)
    alpha = 0.025
    for n in (1, 2, 7, 8, 9, 250, 1001):
        df = np.exp(rng.uniform(np.log(DF_MIN), np.log(DF_MAX), n))
        for d in (df, df[0].reshape(())):
            q = stats.t.ppf(1.0 - alpha, d)
            want = stats.t.pdf(q, d) * (d + q * q) / (d - 1.0) / alpha / q
            ratio, quantile = _t_ratio(d, alpha)
            np.testing.assert_array_equal(quantile, q)
            np.testing.assert_array_equal(ratio, want)
    for d in (2.5, 4.0, 30.0):
        q = stats.t.ppf(1.0 - alpha, d)
        es = stats.t.expect(lambda x: -x, args=(d,), ub=-q) / alpha
        assert abs(_t_ratio(np.array([d]), alpha)[0][0] - es / q) < 1e-7 * es / q
