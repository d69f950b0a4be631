"""VaR and ES: closed forms, brute-force empirical quantiles, MC convergence, delta-gamma moments, Euler."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import kurtosis, norm, skew

from risk_pipeline.quant.american import american_price
from risk_pipeline.quant.bsm import bsm_price
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import revalue
from risk_pipeline.quant.var import (
    DELTA_GAMMA_CF,
    DELTA_NORMAL,
    HISTORICAL,
    MONTE_CARLO_FHS,
    FhsModel,
    MarketHistory,
    QuadraticMoments,
    VarConfig,
    compute_var,
    cornish_fisher_var_es,
    delta_gamma_exposures,
    delta_gamma_moments,
    empirical_var_es,
    fhs_draws,
    fhs_scenarios,
    fit_fhs,
    historical_var,
    kernel_component_var,
    monte_carlo_var,
    parametric_var,
)
from risk_pipeline.quant.vol_forecast import GarchParams, garch_variance

CONFIDENCES = (0.95, 0.975, 0.99)


def _book(seed: int = 0) -> Portfolio:
    rng = np.random.default_rng(seed)
    spot = np.array([100.0, 45.0, 310.0])
    n = 30
    sym = np.concatenate([rng.integers(0, 3, n), [0, 1, 2]])
    m = sym.size
    opt = np.arange(m) < n
    return Portfolio(
        symbols=("AAA", "BBB", "CCC"),
        spot=spot,
        symbol_index=sym,
        quantity=np.where(opt, rng.integers(-30, 31, m), rng.integers(-3000, 3001, m)).astype(float),
        multiplier=np.where(opt, 100.0, 1.0),
        is_option=opt,
        is_call=rng.random(m) < 0.5,
        strike=spot[sym] * np.exp(rng.normal(0.0, 0.1, m)),
        time_years=rng.uniform(0.05, 1.0, m),
        implied_vol=rng.uniform(0.15, 0.5, m),
        rate=0.04,
        dividend_yield=0.01,
        is_american=opt & (rng.random(m) < 0.3),
    )


def _history(n: int = 320, seed: int = 1, with_iv: bool = True) -> MarketHistory:
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(np.array([[1.0, 0.5, 0.3], [0.5, 1.0, 0.4], [0.3, 0.4, 1.0]]))
    r = (rng.standard_t(5, (n, 3)) * np.sqrt(3 / 5)) @ chol.T * np.array([0.012, 0.02, 0.015])
    iv = -1.5 * r + rng.normal(0.0, 0.02, r.shape) if with_iv else None
    return MarketHistory(r, iv)


# ----------------------------------------------------------------------------------------------
# estimator definitions
# ----------------------------------------------------------------------------------------------


def test_empirical_var_es_hand_computed() -> None:
    pnl = -np.arange(1.0, 101.0)  # losses 1 .. 100
    var, es = empirical_var_es(np.random.default_rng(0).permutation(pnl), 0.95)
    assert var == 96.0  # fifth largest loss
    assert es == pytest.approx((100 + 99 + 98 + 97 + 96) / 5, rel=1e-15)
    x = np.array([3.0, -1.0, 4.0, -5.0, 9.0, -2.0, 6.0, 5.0, -3.0, 5.0])  # m = 10 * 0.25 = 2.5
    var, es = empirical_var_es(x, 0.75)
    assert var == 2.0  # third worst P&L is -2
    assert es == pytest.approx((5.0 + 3.0 + 0.5 * 2.0) / 2.5, rel=1e-15)
    var, es = empirical_var_es(-np.arange(1.0, 501.0), 0.99)  # 500 * 0.01 rounds to exactly 5
    assert (var, es) == (496.0, pytest.approx(498.0, rel=1e-15))


def test_linear_position_matches_normal_closed_form() -> None:
    rng = np.random.default_rng(2)
    r = rng.normal(0.0, 0.013, (700, 1))
    p = Portfolio(symbols=("X",), spot=[250.0], symbol_index=[0], quantity=[-1200.0])
    cfg = VarConfig(lookback_days=500)
    sigma = math.sqrt(float(np.mean(r[-500:] ** 2)))
    res = parametric_var(p, MarketHistory(r), cfg)
    for x in res:
        z = norm.ppf(x.confidence)
        sd = 1200.0 * 250.0 * sigma * math.sqrt(x.horizon_days)
        assert x.var == pytest.approx(z * sd, rel=1e-12)
        tol = 1e-12 if x.method == DELTA_NORMAL else 1e-8  # CF: zero skew and kurtosis, ES by quadrature
        assert x.expected_shortfall == pytest.approx(sd * norm.pdf(z) / (1.0 - x.confidence), rel=tol)
        assert x.component_var[0] == pytest.approx(x.var, rel=1e-12)
        assert x.lookback_days == 500 and x.n_scenarios == 0
    assert {x.method for x in res} == {DELTA_NORMAL, DELTA_GAMMA_CF}


def _brute_force_historical_pnl(p: Portfolio, hist: MarketHistory, h: int, days_per_td: float) -> np.ndarray:
    """Independent revaluation: explicit window sums, the public pricers, every position."""
    r, iv = hist.log_returns, hist.iv_rel_changes
    assert iv is not None
    starts = range(r.shape[0] - h + 1)
    move = np.exp(np.array([r[a : a + h].sum(axis=0) for a in starts]))
    volm = np.array([np.prod(1.0 + iv[a : a + h], axis=0) for a in starts])
    s0 = p.position_spot
    t1 = np.maximum(p.time_years - h * days_per_td / 365.0, 0.0)

    def value(s: np.ndarray, t: np.ndarray, v: np.ndarray) -> np.ndarray:
        args = (s, p.strike, t, v, p.rate, p.dividend_yield, p.is_call)
        opt = np.where(p.is_american, american_price(*args), bsm_price(*args, backend="numpy"))
        return np.where(p.is_option, opt, s)

    base = value(s0, p.time_years, p.implied_vol)
    shocked = value(s0 * move[:, p.symbol_index], t1, p.implied_vol * volm[:, p.symbol_index])
    return (p.units * (shocked - base)).sum(axis=1)


def _sorted_quantile(pnl: np.ndarray, c: float) -> tuple[float, float]:
    """Sort-and-index with exact rational arithmetic for ``m = n (1 - c)``."""
    srt = sorted(pnl.tolist())
    m = len(srt) * (1 - Fraction(str(c)))
    k = math.ceil(m)
    whole = math.floor(m)
    tail = sum(srt[:whole]) + float(m - whole) * (srt[whole] if m > whole else 0.0)
    return -srt[k - 1], -tail / float(m)


def test_historical_var_is_the_sorted_empirical_quantile_of_full_revaluation() -> None:
    p = _book()
    hist = _history()
    cfg = VarConfig(lookback_days=250, american="exact")
    results, pnls = historical_var(p, hist, cfg)
    window = hist.window(250)
    for h in cfg.horizons:
        ref = _brute_force_historical_pnl(p, window, h, cfg.calendar_days_per_trading_day)
        assert ref.size == 250 - h + 1
        np.testing.assert_allclose(pnls[h], ref, rtol=0, atol=1e-9 * np.abs(ref).max())
        for c in cfg.confidences:
            got = next(x for x in results if x.horizon_days == h and x.confidence == c)
            var, es = _sorted_quantile(ref, c)
            assert got.var == pytest.approx(var, rel=1e-9)
            assert got.expected_shortfall == pytest.approx(es, rel=1e-9)
            assert got.n_scenarios == ref.size and got.method == HISTORICAL
    # the default (early-exercise-premium grid) agrees closely
    grid, _ = historical_var(p, hist, replace(cfg, american="eep_grid"))
    for a, b in zip(results, grid, strict=True):
        assert b.var == pytest.approx(a.var, rel=1e-4)


def test_monte_carlo_converges_to_parametric_for_a_linear_book() -> None:
    """FHS of a normal history (constant GARCH variance) against delta-normal, within 4 MC std errors."""
    n, sd = 4000, 0.002
    z = norm.ppf((np.arange(n) + 0.5) / n)
    r = (sd * np.random.default_rng(3).permutation(z))[:, None]
    s2 = float(np.mean(r**2))
    flat = GarchParams(omega=s2, alpha=0.0, gamma=0.0, beta=0.0, nu=math.inf, backcast=s2, converged=True)
    p = Portfolio(symbols=("X",), spot=[80.0], symbol_index=[0], quantity=[5000.0])
    n_mc = 40_000
    for paths in ("garch", "rescaled_sum"):
        cfg = VarConfig(lookback_days=n, n_scenarios=n_mc, horizons=(1, 5), fhs_paths=paths, seed=11)
        mc, _ = monte_carlo_var(p, MarketHistory(r), cfg, garch_params=[flat])
        para = {
            (x.horizon_days, x.confidence): x
            for x in parametric_var(p, MarketHistory(r), cfg)
            if x.method == DELTA_NORMAL
        }
        for x in mc:
            ref = para[(x.horizon_days, x.confidence)].var
            zc = norm.ppf(x.confidence)
            rel_se = math.sqrt(x.confidence * (1 - x.confidence) / n_mc) / (norm.pdf(zc) * zc)
            bias = 0.5 * zc * sd * math.sqrt(x.horizon_days)  # exp(r) - 1 against r
            assert abs(x.var / ref - 1.0) < 4.0 * rel_se + bias, (paths, x.horizon_days, x.confidence)
            # one day is exact (every filtered date once), longer horizons are the sampled paths
            assert x.n_scenarios == (n if x.horizon_days == 1 else n_mc) and x.method == MONTE_CARLO_FHS


def test_fhs_paths_brute_force() -> None:
    rng = np.random.default_rng(4)
    r = rng.normal(0.0, 0.01, (300, 2))
    params = [GarchParams(2e-6, 0.08, 0.05, 0.88, 6.0, 1e-4, True), GarchParams(4e-6, 0.1, 0.0, 0.85, 8.0, 2e-4, True)]
    model = fit_fhs(MarketHistory(r), params)
    for s in range(2):
        var = garch_variance(params[s], r[:, s])
        np.testing.assert_allclose(model.standardized[:, s], r[:, s] / np.sqrt(var[:-1]), rtol=1e-14)
        assert model.next_variance[s] == var[-1]
    draws = fhs_draws(300, 50, 3, seed=5)
    sc = fhs_scenarios(model, draws, 3, "garch")
    for j in range(50):
        for s in range(2):
            v, tot = model.next_variance[s], 0.0
            pr = params[s]
            for d in range(3):
                x = math.sqrt(v) * model.standardized[draws[j, d], s]
                tot += x
                v = pr.omega + (pr.alpha + pr.gamma * (x < 0)) * x * x + pr.beta * v
            assert sc.spot_shock_rel[j, s] == pytest.approx(math.expm1(tot), rel=1e-12)
    flat = fhs_scenarios(model, draws, 3, "rescaled_sum")
    expect = np.expm1(np.sqrt(model.next_variance) * model.standardized[draws[:, :3]].sum(axis=1))
    np.testing.assert_allclose(flat.spot_shock_rel, expect, rtol=1e-12)


def _fhs_scenarios_by_arrays(
    model: FhsModel, draws: np.ndarray, h: int, paths: str
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The FHS scenarios' formulas on whole arrays, day by day (spot shock, vol scale, rate and yield shifts)."""
    z = model.standardized
    omega, alpha, gamma, beta = (
        np.array([getattr(p, f) for p in model.params]) for f in ("omega", "alpha", "gamma", "beta")
    )
    var = np.broadcast_to(model.next_variance, (draws.shape[0], z.shape[1])).copy()
    total = np.zeros_like(var)
    log_scale = np.zeros_like(var) if model.iv_rel_changes is not None else None
    for d in range(h):
        zd = z[draws[:, d]]
        if paths == "garch":
            r = np.sqrt(var) * zd
            var = omega + (alpha + gamma * (r < 0.0)) * r * r + beta * var
        else:
            r = np.sqrt(model.next_variance) * zd
        total += r
        if log_scale is not None:
            log_scale += np.log1p(model.iv_rel_changes[draws[:, d]])
    rate = None if model.rate_changes is None else model.rate_changes[draws[:, :h]].sum(axis=1)
    div = None if model.dividend_changes is None else model.dividend_changes[draws[:, :h]].sum(axis=1)
    return np.expm1(total), None if log_scale is None else np.exp(log_scale), rate, div


def test_fhs_scenarios_are_the_array_formulas_bit_for_bit() -> None:
    """The kernel's paths, vol scales and yield shifts: every bit of the formulas on whole arrays, for one and more
    names, GARCH and GJR filters, both path kinds, horizons of 0 to 9 days, zero and negative-zero changes."""
    rng = np.random.default_rng(12)
    n_days = 80
    for n_sym in (1, 2, 7):
        params = tuple(
            GarchParams(1e-6 * (1 + s), 0.05 + 0.01 * s, 0.06 * (s % 2), 0.9 - 0.01 * s, 8.0, 1e-4, True)
            for s in range(n_sym)
        )
        iv = rng.normal(0.0, 0.05, (n_days, n_sym))
        div = rng.normal(0.0, 1e-4, (n_days, n_sym))
        div[rng.random(div.shape) < 0.3] = -0.0
        div[rng.random(div.shape) < 0.2] = 0.0
        z = rng.standard_normal((n_days, n_sym))
        full = FhsModel(params, z, 1e-4 * (1 + rng.random(n_sym)), iv, rng.normal(0.0, 1e-4, n_days), div)
        for model in (full, FhsModel(params, z, full.next_variance, None)):
            for h in (0, 1, 3, 5, 9):
                draws = fhs_draws(n_days, 300, max(h, 1), seed=h)
                for paths in ("garch", "rescaled_sum"):
                    sc = fhs_scenarios(model, draws, h, paths)  # type: ignore[arg-type]
                    got = (sc.spot_shock_rel, sc.vol_scale, sc.rate_shift_abs, sc.dividend_shift_abs)
                    for a, b in zip(got, _fhs_scenarios_by_arrays(model, draws, h, paths), strict=True):
                        assert (a is None) == (b is None)
                        if a is not None:
                            assert a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


# ----------------------------------------------------------------------------------------------
# delta-gamma Cornish-Fisher
# ----------------------------------------------------------------------------------------------


def test_delta_gamma_moments_match_a_large_sample() -> None:
    rng = np.random.default_rng(6)
    k = 4
    a_mat = rng.normal(0.0, 0.02, (k, k))
    cov = a_mat @ a_mat.T
    b = rng.normal(0.0, 1e5, k)
    g = rng.normal(0.0, 4e6, (k, k))
    g = 0.5 * (g + g.T)
    mom = delta_gamma_moments(123.0, b, g, cov)
    f = rng.multivariate_normal(np.zeros(k), cov, size=2_000_000)
    q = 123.0 + f @ b + 0.5 * np.einsum("ij,jk,ik->i", f, g, f)
    assert mom.mean == pytest.approx(q.mean(), abs=4 * q.std() / math.sqrt(q.size))
    assert mom.variance == pytest.approx(q.var(), rel=0.01)
    assert mom.skewness == pytest.approx(skew(q), abs=0.02)
    assert mom.excess_kurtosis == pytest.approx(kurtosis(q), abs=0.15)
    assert abs(mom.skewness) > 0.2  # a genuinely non-normal case


def test_low_rank_terms_equal_the_dense_moments_and_components() -> None:
    """A covariance of fewer days than factors: the d x d route (LowRankQuadratic) against the n x n products."""
    from risk_pipeline.quant.var import LowRankQuadratic, cornish_fisher_components

    rng = np.random.default_rng(11)
    n_sym, d = 40, 25
    n = 2 * n_sym
    root = rng.normal(0.0, 0.02, (d, n))
    b = rng.normal(0.0, 1e5, n)
    i = np.arange(n_sym)
    g = np.zeros((n, n))  # block structure of delta_gamma_exposures: spot, vol and cross terms per underlying
    g[i, i], g[n_sym + i, n_sym + i] = rng.normal(0.0, 4e6, n_sym), rng.normal(0.0, 1e6, n_sym)
    g[i, n_sym + i] = g[n_sym + i, i] = rng.normal(0.0, 2e6, n_sym)
    owner = np.concatenate([i, i])
    a_sym = rng.normal(0.0, 50.0, n_sym)
    for h in (1.0, 3.0):
        cov = h * (root.T @ root)
        form = LowRankQuadratic.build(b, g, root, h)
        dense, low = delta_gamma_moments(float(a_sym.sum()), b, g, cov), form.moments(float(a_sym.sum()))
        for x, y in zip(
            (dense.mean, dense.variance, dense.skewness, dense.excess_kurtosis),
            (low.mean, low.variance, low.skewness, low.excess_kurtosis),
            strict=True,
        ):
            assert y == pytest.approx(x, rel=1e-10)
        for c in CONFIDENCES:
            want = cornish_fisher_components(a_sym, b, g, cov, owner, n_sym, c)
            np.testing.assert_allclose(
                form.components(a_sym, owner, n_sym, c), want, rtol=1e-9, atol=1e-9 * abs(want).max()
            )


def test_low_rank_terms_from_the_gamma_blocks_and_without_diagonals() -> None:
    """``LowRankQuadratic.build`` from G's diagonal blocks (no dense product) and without the diagonals: the same
    moments as the dense route of ``_cumulants`` (an independent n x n computation); without diagonals the moments'
    terms are the same bits as with them, and the components are refused."""
    from risk_pipeline.quant.var import LowRankQuadratic

    rng = np.random.default_rng(13)
    for n_sym, d, with_vega in ((40, 25, True), (300, 120, True), (60, 30, False)):
        n = 2 * n_sym if with_vega else n_sym
        root = rng.normal(0.0, 0.02, (d, n))
        b = rng.normal(0.0, 1e5, n)
        i = np.arange(n_sym)
        g_xx, g_yy, g_xy = rng.normal(0.0, 4e6, n_sym), rng.normal(0.0, 1e6, n_sym), rng.normal(0.0, 2e6, n_sym)
        g = np.zeros((n, n))
        g[i, i] = g_xx
        blocks: tuple[np.ndarray, ...] = (g_xx,)
        if with_vega:
            g[n_sym + i, n_sym + i] = g_yy
            g[i, n_sym + i] = g[n_sym + i, i] = g_xy
            blocks = (g_xx, g_yy, g_xy)
        dense = delta_gamma_moments(7.0, b, g, 2.0 * (root.T @ root))
        full = LowRankQuadratic.build(b, g, root, 2.0)
        lean = LowRankQuadratic.build(b, g, root, 2.0, diagonals=False, gamma_blocks=blocks)
        low = lean.moments(7.0)
        for x, y in zip(
            (dense.mean, dense.variance, dense.skewness, dense.excess_kurtosis),
            (low.mean, low.variance, low.skewness, low.excess_kurtosis),
            strict=True,
        ):
            assert y == pytest.approx(x, rel=1e-10)
        assert lean.traces == pytest.approx(full.traces, rel=1e-13)
        assert LowRankQuadratic.build(b, g, root, 2.0, diagonals=False).traces == full.traces  # same products
        assert lean.diagonals == ()
        with pytest.raises(ValueError, match="without diagonals"):
            lean.components(np.zeros(n_sym), np.concatenate([i, i]) if with_vega else i, n_sym, 0.99)


def test_quadratic_fallback_in_blocks_equals_one_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback's draws in blocks of rows (a large book) are the same draws and the same quantiles."""
    from risk_pipeline.quant import var as var_module

    rng = np.random.default_rng(12)
    n = 6
    a_mat = rng.normal(0.0, 0.02, (n, n))
    b = rng.normal(0.0, 1e5, n)
    g = np.diag(rng.normal(0.0, 4e6, n))
    g[0, 3] = g[3, 0] = 1e6
    whole = var_module.quadratic_var_es(5.0, b, g, a_mat @ a_mat.T, CONFIDENCES, n_draws=20_000, seed=3)
    monkeypatch.setattr(var_module, "QUADRATIC_CELLS", 1_000)
    blocks = var_module.quadratic_var_es(5.0, b, g, a_mat @ a_mat.T, CONFIDENCES, n_draws=20_000, seed=3)
    for (v1, e1), (v2, e2) in zip(whole, blocks, strict=True):
        assert v2 == pytest.approx(v1, rel=1e-10)
        assert e2 == pytest.approx(e1, rel=1e-10)


def test_parametric_var_with_fewer_days_than_factors_equals_the_dense_covariance() -> None:
    """Equal-weight covariance of a history and of the same days twice over are equal; the first (4 days, 6 factors)
    takes the low-rank route, the second (8 days) the dense one."""
    p = _book()
    x = _history(n=4)
    twice = MarketHistory(np.vstack([x.log_returns] * 2), np.vstack([x.iv_rel_changes] * 2))
    cfg = VarConfig(lookback_days=8, horizons=(1, 5))
    low, dense = parametric_var(p, x, cfg), parametric_var(p, twice, cfg)
    assert len(low) == len(dense)
    for a, b in zip(low, dense, strict=True):
        assert (a.method, a.horizon_days, a.confidence) == (b.method, b.horizon_days, b.confidence)
        assert a.var == pytest.approx(b.var, rel=1e-10)
        assert a.expected_shortfall == pytest.approx(b.expected_shortfall, rel=1e-10)
        np.testing.assert_allclose(a.component_var, b.component_var, rtol=1e-8, atol=1e-9 * abs(b.var))
    # without components the low-rank route skips the diagonals: the same VaR and ES bits
    for a, b in zip(low, parametric_var(p, x, cfg, components=False), strict=True):
        assert (a.var, a.expected_shortfall) == (b.var, b.expected_shortfall)
        assert np.isnan(b.component_var).all()


def test_cornish_fisher_es_reduces_to_the_normal_closed_form() -> None:
    for c in CONFIDENCES:
        var, es = cornish_fisher_var_es(QuadraticMoments(10.0, 4.0, 0.0, 0.0), c)
        z = norm.ppf(c)
        assert var == pytest.approx(2.0 * z - 10.0, rel=1e-12)
        assert es == pytest.approx(2.0 * norm.pdf(z) / (1 - c) - 10.0, rel=1e-9)


def test_delta_gamma_exposures_are_the_taylor_expansion_of_full_revaluation() -> None:
    p = _book()
    expo = delta_gamma_exposures(p, with_vega=True)
    rng = np.random.default_rng(7)
    for eps in (2e-3, 1e-3):
        f = rng.normal(0.0, 1.0, (20, 6)) * eps
        x, y = f[:, :3], f[:, 3:]
        full = revalue(p, x, vol_scale=1.0 + y).pnl  # instantaneous, same vols relative moves
        quad = f @ expo.delta + 0.5 * np.einsum("ij,jk,ik->i", f, expo.gamma, f)
        lin = f @ expo.delta
        scale = float(np.abs(lin).max())
        assert np.max(np.abs(full - quad)) < 5e-2 * eps * scale  # third order (finite-difference American Greeks)
        assert np.max(np.abs(full - quad)) < 0.2 * np.max(np.abs(full - lin))


def test_parametric_components_are_euler_derivatives() -> None:
    """Analytic components against central differences of the VaR when one underlying's book is scaled."""
    p = _book()
    hist = _history()
    cfg = VarConfig(lookback_days=250, horizons=(1, 5))
    base = parametric_var(p, hist, cfg)
    eps = 1e-4
    bumped = {}
    for s in range(p.n_symbols):
        for sign in (1.0, -1.0):
            q = np.where(p.symbol_index == s, p.quantity * (1.0 + sign * eps), p.quantity)
            bumped[(s, sign)] = parametric_var(replace(p, quantity=q), hist, cfg)
    for k, res in enumerate(base):
        fd = np.array([(bumped[(s, 1.0)][k].var - bumped[(s, -1.0)][k].var) / (2 * eps) for s in range(3)])
        np.testing.assert_allclose(res.component_var, fd, rtol=1e-5, atol=1e-7 * res.var)
        assert res.component_var.sum() == pytest.approx(res.var, rel=1e-12)


def test_kernel_components_match_the_normal_euler_allocation() -> None:
    rng = np.random.default_rng(8)
    cov = np.array([[1.0, 0.6, -0.2], [0.6, 2.0, 0.3], [-0.2, 0.3, 0.5]]) * 1e-4
    b = np.array([2e6, -1e6, 3e6])
    x = rng.multivariate_normal(np.zeros(3), cov, size=400_000) * b
    sd = math.sqrt(b @ cov @ b)
    for c in CONFIDENCES:
        var = norm.ppf(c) * sd
        comp = kernel_component_var(x, var)
        euler = norm.ppf(c) * b * (cov @ b) / sd
        assert comp.sum() == pytest.approx(var, rel=1e-12)
        np.testing.assert_allclose(comp, euler, atol=0.03 * var)


# ----------------------------------------------------------------------------------------------
# every method together
# ----------------------------------------------------------------------------------------------


def test_all_methods_are_coherent() -> None:
    p = _book()
    hist = _history()
    cfg = VarConfig(lookback_days=250, n_scenarios=10_000)
    report = compute_var(p, hist, cfg)
    assert {r.method for r in report.results} == {HISTORICAL, DELTA_NORMAL, DELTA_GAMMA_CF, MONTE_CARLO_FHS}
    assert len(report.results) == 4 * 3 * 3
    for r in report.results:
        assert r.var > 0.0 and r.expected_shortfall >= r.var
        assert r.component_var.sum() == pytest.approx(r.var, rel=1e-12)
        assert r.component_var.shape == (3,)
    for method in (HISTORICAL, DELTA_NORMAL, DELTA_GAMMA_CF, MONTE_CARLO_FHS):
        for h in cfg.horizons:
            v = [report.get(method, h, c).var for c in CONFIDENCES]
            assert v == sorted(v)
    rows = report.rows()
    assert set(rows[0]) == {
        "method",
        "horizon_days",
        "confidence",
        "var",
        "expected_shortfall",
        "n_scenarios",
        "lookback_days",
        "standard_error",
        "var_non_overlapping",
        "independent_tail_obs",
        "method_note",
    }
    contrib = report.contribution_rows()
    assert len(contrib) == len(report.results) * 3
    assert {c["symbol"] for c in contrib} == set(p.symbols)
    # the same seed gives the same Monte Carlo numbers
    again = compute_var(p, hist, cfg, methods=(MONTE_CARLO_FHS,))
    assert [r.var for r in again.results] == [r.var for r in report.results if r.method == MONTE_CARLO_FHS]


def test_no_vol_history_leaves_vols_unchanged() -> None:
    p = _book()
    hist = _history(with_iv=False)
    _, pnls = historical_var(p, hist, VarConfig(lookback_days=100, horizons=(1,), american="exact"))
    r = hist.log_returns[-100:]
    ref = revalue(p, np.expm1(r), horizon_days=365.0 / 252.0).pnl
    np.testing.assert_allclose(pnls[1], ref, rtol=1e-12, atol=1e-9)
    with pytest.raises(ValueError, match="log_returns"):
        MarketHistory(np.array([[np.nan, 0.0], [0.0, 0.0]]))


def test_one_day_fhs_is_exact_the_sorted_filtered_scenarios() -> None:
    """1-day FHS VaR/ES equal the order statistics of the P&L of every filtered date rescaled to today's vol
    (computed here by hand for a stock book: q S expm1(sigma_{T+1} z_t)), with zero sampling error; the 5-day
    rows carry a bootstrap standard error close to the asymptotic sqrt(p (1 - p) / n) / f(q)."""
    rng = np.random.default_rng(8)
    r = rng.standard_t(5, size=(500, 1)) * 0.012
    params = [GarchParams(3e-6, 0.07, 0.06, 0.88, 6.0, 1.4e-4, True)]
    p = Portfolio(symbols=("X",), spot=[50.0], symbol_index=[0], quantity=[10_000.0])
    cfg = VarConfig(lookback_days=500, n_scenarios=20_000, horizons=(1, 5), seed=2, calendar_days_per_trading_day=0.0)
    results, pnls = monte_carlo_var(p, MarketHistory(r), cfg, garch_params=params)
    var_path = garch_variance(params[0], r[:, 0])
    z = r[:, 0] / np.sqrt(var_path[:-1])
    by_hand = np.sort(10_000.0 * 50.0 * np.expm1(np.sqrt(var_path[-1]) * z))
    for c in cfg.confidences:
        one = next(x for x in results if x.horizon_days == 1 and x.confidence == c)
        k = math.ceil(round(500 * (1 - c), 9))
        assert one.var == pytest.approx(-by_hand[k - 1], rel=1e-12)
        m = 500 * (1 - c)
        whole = math.floor(m + 1e-9)
        es = (
            -(by_hand[:whole].sum() + (m - whole) * by_hand[whole]) / m if m > whole + 1e-9 else -by_hand[:whole].mean()
        )
        assert one.expected_shortfall == pytest.approx(es, rel=1e-12)
        assert one.n_scenarios == 500 and one.standard_error == 0.0
        five = next(x for x in results if x.horizon_days == 5 and x.confidence == c)
        sample = pnls[5]
        q = -five.var
        density = float(np.mean(norm.pdf((sample - q) / (h := 1.06 * sample.std() * sample.size**-0.2))) / h)
        asymptotic = math.sqrt(c * (1 - c) / sample.size) / density
        assert five.standard_error == pytest.approx(asymptotic, rel=0.35)


def test_tail_episodes_and_the_non_overlapping_cross_check() -> None:
    """Overlapping 5-day windows of a series with one crash: the tail windows all contain the crash, so the tail
    is one episode and is flagged; the non-overlapping VaR is the order statistic of every 5th window."""
    from risk_pipeline.quant.var import _simulation_results, tail_episodes

    pnl = np.full(200, 1.0) + 0.001 * np.arange(200)
    pnl[100:105] = [-50.0, -60.0, -70.0, -60.0, -50.0]  # five windows that hold the crash day
    pnl[30] = -40.0  # a second, separate bad window
    assert tail_episodes(pnl, 0.975, 5) == (5, 1)  # ceil(200 * 0.025) = 5 tail windows, all at 100..104
    assert tail_episodes(pnl, 0.97, 5) == (6, 2)  # the sixth worst (day 30) is another episode
    assert tail_episodes(pnl, 0.975, 1) == (5, 5)
    cfg = VarConfig(confidences=(0.975,), horizons=(5,))
    (row,) = _simulation_results("historical", 5, pnl, pnl[:, None], cfg, ("X",), 204, overlapping=True)
    assert row.independent_tail_obs == 1.0 and "tail is one episode (5 overlapping windows)" in row.note
    ends = pnl[::-1][::5]  # windows ending on the last day, every 5th: 40 independent windows
    assert ends.size == 40
    assert row.var_non_overlapping == -np.sort(ends)[math.ceil(40 * 0.025) - 1]


@pytest.mark.parametrize("skew", [-1.2, -0.4, 0.0, 0.3, 1.0])
@pytest.mark.parametrize("kurt", [0.0, 1.5, 6.0])
def test_cornish_fisher_tail_integral_in_closed_form_equals_scipy_quad(skew: float, kurt: float) -> None:
    from scipy import integrate
    from scipy.stats import norm

    from risk_pipeline.quant.var import cornish_fisher, cornish_fisher_tail

    for c in (0.95, 0.975, 0.99, 0.999):
        z = float(norm.ppf(1.0 - c))
        want, _ = integrate.quad(
            lambda u: float(cornish_fisher(u, skew, kurt)) * float(norm.pdf(u)), -np.inf, z, epsabs=1e-14,
            epsrel=1e-12, limit=200,
        )  # fmt: skip
        assert cornish_fisher_tail(z, skew, kurt) == pytest.approx(want, rel=1e-10, abs=1e-15)


def test_cornish_fisher_validity_check_and_its_fallback() -> None:
    """A long-gamma position, P&L = a + g f^2 / 2 with f ~ N(0, s^2): skewness 2 sqrt 2 and excess kurtosis 12,
    so the expansion bends back in the lower tail (w' < 0 between about -4.9 and -0.75) and is not used. The
    fallback's quantile matches the closed form -(a + g s^2 q^2 / 2), q = Phi^-1((2 - c) / 2), and a mild
    delta-dominated book keeps the expansion."""
    from risk_pipeline.quant.var import cornish_fisher_is_monotone, delta_gamma_moments, quadratic_var_es

    a, g, sd = -1_000.0, 4.0e6, 0.02
    mom = delta_gamma_moments(a, [0.0], [[g]], [[sd * sd]])
    assert mom.skewness == pytest.approx(2 * math.sqrt(2)) and mom.excess_kurtosis == pytest.approx(12.0)
    assert not cornish_fisher_is_monotone(mom.skewness, mom.excess_kurtosis, 0.99)
    got = quadratic_var_es(a, [0.0], [[g]], [[sd * sd]], [0.95, 0.99], n_draws=400_000, seed=1)
    for (var, es), c in zip(got, (0.95, 0.99), strict=True):
        q = norm.ppf((2.0 - c) / 2.0)  # |f| / s below q with probability 1 - c
        exact = -(a + 0.5 * g * sd * sd * q * q)
        assert var == pytest.approx(exact, abs=0.5 * g * sd * sd * 0.01)  # within 1 % of the gamma scale
        assert es >= var
    mild = delta_gamma_moments(0.0, [1e6], [[-1e6]], [[sd * sd]])
    assert cornish_fisher_is_monotone(mild.skewness, mild.excess_kurtosis, 0.99)


def test_ewma_covariance_is_the_riskmetrics_recursion() -> None:
    """EWMA weights over the window equal the RiskMetrics recursion S_t = lambda S_{t-1} + (1 - lambda) r r',
    normalized by the weight mass of the window; equal weights stay the plain mean of r r'."""
    from risk_pipeline.quant.var import factor_covariance

    r = np.random.default_rng(6).normal(0.0, 0.01, (300, 3))
    hist = MarketHistory(r)
    rec = np.zeros((3, 3))
    for row in r:  # the recursion, started from zero
        rec = 0.94 * rec + 0.06 * np.outer(row, row)
    np.testing.assert_allclose(factor_covariance(hist, False, "ewma"), rec / (1 - 0.94**300), rtol=1e-12)
    np.testing.assert_allclose(factor_covariance(hist, False), r.T @ r / 300, rtol=1e-14)


def test_stressed_var_takes_the_worst_window_of_the_history() -> None:
    """A calm history with one turbulent stretch: the stressed window is the 250-day span whose 1-day 99 % VaR is
    largest (found here by a plain loop over every span), and its VaR/ES are the order statistics of that span's
    P&L, computed by hand for a stock book (q S expm1(r))."""
    from risk_pipeline.quant.var import STRESSED_HISTORICAL, stressed_var

    rng = np.random.default_rng(12)
    r = rng.normal(0.0, 0.01, (760, 1))
    r[400:470] *= 4.0  # a 70-day crisis
    p = Portfolio(symbols=("X",), spot=[100.0], symbol_index=[0], quantity=[1_000.0])
    cfg = VarConfig(confidences=(0.975, 0.99), horizons=(1,), calendar_days_per_trading_day=0.0)
    results, start = stressed_var(p, MarketHistory(r), cfg)
    pnl = 1_000.0 * 100.0 * np.expm1(r[:, 0])
    best, best_var = -1, -np.inf
    for s in range(760 - 250 + 1):  # every span, the latest on ties
        v = -np.sort(pnl[s : s + 250])[math.ceil(round(250 * 0.01, 9)) - 1]
        if v >= best_var:
            best, best_var = s, v
    assert start == best and start < 470  # the span holds (part of) the crisis
    span = np.sort(pnl[start : start + 250])
    for x in results:
        assert x.method == STRESSED_HISTORICAL and x.n_scenarios == 250 and "worst 250-day window" in x.note
        k = math.ceil(round(250 * (1 - x.confidence), 9))
        assert x.var == pytest.approx(-span[k - 1], rel=1e-12)
    calm, _ = historical_var(p, MarketHistory(r[-250:]), replace(cfg, lookback_days=250))
    assert all(s.var > c.var for s, c in zip(results, calm, strict=True))


def test_stressed_var_reuses_the_one_day_pnl_of_the_same_scenarios() -> None:
    """The stressed window search revalues every 1-day scenario of the whole history; given that P&L from the
    sticky-strike, flat-term historical VaR of the same returns (``one_day_pnl``), the results are the same, bit for
    bit, on a book of American options on the early-exercise grid with rate moves; and ``var_results`` hands it
    over only when the look-back holds the whole history (the same scenarios)."""
    from risk_pipeline.defs.risk.var import same_one_day_pnl
    from risk_pipeline.quant.var import stressed_var

    rng = np.random.default_rng(21)
    n_days = 280
    r = rng.normal(0.0, 0.012, (n_days, 2))
    hist = MarketHistory(
        r, iv_rel_changes=rng.normal(0.0, 0.03, (n_days, 2)), rate_changes=rng.normal(0.0, 3e-4, n_days)
    )
    p = Portfolio(
        symbols=("A", "B"),
        spot=[100.0, 40.0],
        symbol_index=[0, 0, 1, 1],
        quantity=[10.0, -5.0, 7.0, 100.0],
        multiplier=[100.0, 100.0, 100.0, 1.0],
        is_option=[True, True, True, False],
        is_call=[False, True, False, True],
        strike=[95.0, 110.0, 42.0, 1.0],
        time_years=[0.4, 0.8, 0.25, 0.0],
        implied_vol=[0.3, 0.25, 0.45, 0.0],
        rate=0.05,
        dividend_yield=[0.02, 0.0, 0.03, 0.0],
        is_american=[True, True, True, False],
    )
    cfg = VarConfig(lookback_days=500)  # more than the history: the look-back is the whole history
    _, pnls = historical_var(p, hist, cfg)
    given = same_one_day_pnl(hist, hist, cfg, {("sticky_strike", "flat"): pnls})
    assert given is pnls[1]
    fresh, start = stressed_var(p, hist, cfg)
    reused, start2 = stressed_var(p, hist, cfg, one_day_pnl=given)
    assert start == start2 and len(fresh) == len(reused)
    for a, b in zip(fresh, reused, strict=True):
        for f in fields(a):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if isinstance(x, np.ndarray | float):
                assert np.array_equal(x, y, equal_nan=True), f.name
            else:
                assert x == y, f.name
    shorter = replace(cfg, lookback_days=250)  # a look-back shorter than the history: other scenarios
    assert same_one_day_pnl(hist, hist, shorter, {("sticky_strike", "flat"): pnls}) is None
    assert same_one_day_pnl(hist, hist, cfg, {}) is None
    with pytest.raises(ValueError, match="one P&L per day"):
        stressed_var(p, hist, cfg, one_day_pnl=pnls[1][:-1])


def test_fhs_filters_the_asymmetric_names_with_gjr_garch_as_arch_does() -> None:
    """``asymmetric``: that underlying's returns are standardized by GJR-GARCH(1,1)-t. The 1-day FHS VaR equals
    the order statistic of q S expm1(sigma_{T+1} z_t) summed over the names, with arch's own fits, conditional
    vols and one-step forecasts (GJR for the first name, GARCH for the second) as the oracle."""
    from arch import arch_model

    rng = np.random.default_rng(21)
    n = 500
    shocks = rng.standard_t(6, size=(n, 2)) * 0.011
    r = np.empty_like(shocks)
    var = np.array([1.2e-4, 1.2e-4])
    for t in range(n):  # a leveraged first name: variance reacts more to falls (test data, not a hot path)
        r[t] = np.sqrt(var) * shocks[t] / 0.011
        var = (
            2e-6
            + (0.03 + np.array([0.12, 0.0]) * (r[t] < 0)) * r[t] ** 2
            + 0.9 * var
            + np.array([0.0, 0.03]) * r[t] ** 2
        )
    p = Portfolio(symbols=("LEV", "SYM"), spot=[80.0, 40.0], symbol_index=[0, 1], quantity=[5_000.0, -3_000.0])
    cfg = VarConfig(lookback_days=n, horizons=(1,), calendar_days_per_trading_day=0.0)
    results, _ = monte_carlo_var(p, MarketHistory(r), cfg, asymmetric=[True, False])
    sigma_next, z = np.empty(2), np.empty((n, 2))
    for s, o in ((0, 1), (1, 0)):
        fit = arch_model(100.0 * r[:, s], mean="Zero", vol="GARCH", p=1, o=o, q=1, dist="t", rescale=False).fit(
            disp="off"
        )
        z[:, s] = 100.0 * r[:, s] / fit.conditional_volatility
        sigma_next[s] = math.sqrt(float(fit.forecast(horizon=1, reindex=False).variance.iloc[-1, 0])) / 100.0
    pnl = np.sort((np.array([5_000.0 * 80.0, -3_000.0 * 40.0]) * np.expm1(sigma_next * z)).sum(axis=1))
    for c in cfg.confidences:
        one = next(x for x in results if x.confidence == c)
        assert one.var == pytest.approx(-pnl[math.ceil(round(n * (1 - c), 9)) - 1], rel=1e-6)
        assert one.note.startswith("GJR-GARCH filter for LEV;")
    fitted = fit_fhs(MarketHistory(r), asymmetric=[True, False])
    assert fitted.params[0].gamma > 0.0 and fitted.params[1].gamma == 0.0
    plain, _ = monte_carlo_var(p, MarketHistory(r), cfg)
    same, _ = monte_carlo_var(p, MarketHistory(r), cfg, asymmetric=[False, False])
    assert [x.var for x in plain] == [x.var for x in same] and "GJR" not in plain[0].note
