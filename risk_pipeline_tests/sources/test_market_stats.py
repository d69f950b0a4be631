"""quant.market_stats against independent computations (statsmodels, scipy, pandas, loops) and the S&P 500."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.tsa.stattools import acf

from risk_pipeline.quant import market_stats as ms


@pytest.fixture(scope="module")
def returns() -> np.ndarray:
    rng = np.random.default_rng(3)
    vol = np.exp(np.cumsum(rng.normal(0.0, 0.05, 1500)) * 0.3) * 0.01
    return vol * rng.standard_t(5, 1500)


def test_autocorrelation_matches_statsmodels(returns: np.ndarray) -> None:
    expected = acf(np.abs(returns), nlags=20, fft=False)[[1, 5, 20]]
    np.testing.assert_allclose(ms.abs_return_autocorrelation(returns), expected, rtol=1e-12)


def test_moments_match_scipy_and_pandas(returns: np.ndarray) -> None:
    assert ms.skewness(returns) == pytest.approx(stats.skew(returns), rel=1e-12)
    assert ms.kurtosis(returns) == pytest.approx(stats.kurtosis(returns, fisher=False), rel=1e-12)
    s = pd.Series(returns)
    assert ms.leverage_correlation(returns) == pytest.approx(s.corr(s.abs().shift(-1)), rel=1e-12)


def test_hill_index_of_a_pareto_sample() -> None:
    x = np.random.default_rng(0).pareto(3.0, 200_000) + 1.0  # tail index 3
    signs = np.where(np.arange(x.size) % 2 == 0, 1.0, -1.0)
    assert ms.hill_tail_index(x * signs, 0.05) == pytest.approx(3.0, rel=0.03)
    srt = np.sort(np.abs(x))[::-1]
    k = int(0.05 * x.size)
    loop = 1.0 / (sum(math.log(srt[i] / srt[k]) for i in range(k)) / k)
    assert ms.hill_tail_index(x * signs, 0.05) == pytest.approx(loop, rel=1e-10)


def test_realized_vol_and_drawdown(returns: np.ndarray) -> None:
    rolling = np.sqrt(252 * pd.Series(returns**2).rolling(21).mean()).dropna().to_numpy()
    np.testing.assert_allclose(ms.rolling_realized_vol(returns, 21), rolling, rtol=1e-10)
    forward = ms.forward_realized_vol(returns, 21)
    assert forward[0] == pytest.approx(math.sqrt(252 * np.mean(returns[1:22] ** 2)), rel=1e-12)
    assert np.isnan(forward[-21:]).all() and np.isfinite(forward[:-21]).all()
    prices = 100 * np.exp(np.cumsum(returns))
    peak, worst = prices[0], 0.0
    for p in prices:
        peak = max(peak, p)
        worst = min(worst, p / peak - 1)
    assert ms.max_drawdown(prices) == pytest.approx(worst, rel=1e-12)


def test_historical_var_backtest_loop(returns: np.ndarray) -> None:
    result = ms.historical_var_backtest(returns, lookback=250, window=250)
    exc = [returns[t] < np.percentile(returns[t - 250 : t], 1.0) for t in range(250, returns.size)]
    counts = [sum(exc[i : i + 250]) for i in range(len(exc) - 249)]
    red_from = min(k for k in range(251) if stats.binom.cdf(k, 250, 0.01) >= 0.9999)  # 10
    assert red_from == 10
    assert result.exceptions == sum(exc) and result.n_obs == len(exc)
    assert result.red_share == pytest.approx(np.mean(np.array(counts) >= 10))
    assert result.yellow_share == pytest.approx(np.mean((np.array(counts) >= 5) & (np.array(counts) < 10)))


def test_historical_var_backtest_on_the_sp500() -> None:
    """The issue's S&P 500 figures (9.1 % of 250-day windows red, clustering p 0.014), computed independently."""
    import arch.data.sp500

    close = arch.data.sp500.load()["Adj Close"].to_numpy(float)
    result = ms.historical_var_backtest(np.diff(np.log(close)))
    assert result.red_share == pytest.approx(0.091, abs=0.0015)
    assert result.christoffersen_p_value == pytest.approx(0.014, abs=0.001)


def test_correlations() -> None:
    rng = np.random.default_rng(5)
    n, names, rho = 200_000, 6, 0.4
    common = rng.standard_normal(n)
    x = math.sqrt(rho) * common[:, None] + math.sqrt(1 - rho) * rng.standard_normal((n, names))
    assert ms.mean_pairwise_correlation(x) == pytest.approx(rho, abs=0.01)
    index = x.mean(axis=1)
    down, up = ms.down_up_correlation(x, index)
    frame = pd.DataFrame(x)
    for value, mask in ((down, index < 0), (up, index > 0)):
        c = frame[mask].corr().to_numpy()
        assert value == pytest.approx((c.sum() - names) / (names * (names - 1)), rel=1e-12)
    # an equally weighted basket of names with vols s_i and pairwise correlation rho: the formula returns rho
    s = np.array([[0.2, 0.3, 0.4, 0.25]])
    w = np.full(4, 0.25)
    cov = rho * np.outer(s[0], s[0]) + (1 - rho) * np.diag(s[0] ** 2)
    basket = np.sqrt(w @ cov @ w)
    assert ms.implied_correlation(np.array([basket]), s)[0] == pytest.approx(rho, rel=1e-12)


def test_spot_vol_implied_realized_and_stress_days() -> None:
    rng = np.random.default_rng(9)
    r = rng.normal(0, 0.01, 600)
    iv = 0.2 * np.exp(np.cumsum(-2.0 * r + rng.normal(0, 0.01, 600)))
    corr, vov = ms.spot_vol(r, iv)
    d = np.diff(np.log(iv))
    assert corr == pytest.approx(np.corrcoef(r[1:], d)[0, 1], rel=1e-12)
    assert vov == pytest.approx(d.std(ddof=1) * math.sqrt(252), rel=1e-12)
    flat = np.full(600, 0.01)
    result = ms.implied_realized(np.full(600, 0.2), flat * np.where(np.arange(600) % 2, 1, -1))
    assert result.ratio == pytest.approx(0.2 / (0.01 * math.sqrt(252)))
    assert result.share_above == 1.0
    calm = np.r_[np.full(100, 0.005), np.full(30, 0.04), np.full(100, 0.005)] * np.where(np.arange(230) % 2, 1, -1)
    days = ms.stress_days(calm, 0.35)
    assert not days[:100].any() and days[121:131].all() and not days[160:].any()
    prices = 100 * np.exp(np.cumsum(np.r_[np.zeros(1), calm, np.zeros(900)]))
    assert 0.0 < ms.stress_coverage(prices, window=760, step=21) < 1.0
