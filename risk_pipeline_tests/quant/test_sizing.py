"""Position sizing core against closed forms, numpy/scipy oracles and hand-computed series."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from scipy import optimize

from risk_pipeline.quant import sizing as sz
from risk_pipeline.quant._numba import JIT


# ------------------------------------------------------------------------------------------- Kelly
def test_kelly_binary_closed_form() -> None:
    # p = 0.6 at even odds: f = 0.6 - 0.4 / 1 = 0.2; p = 0.5 at 2:1: f = 0.5 - 0.5 / 2 = 0.25
    assert sz.kelly_binary(0.6, 1.0) == pytest.approx(0.2, abs=1e-15)
    assert sz.kelly_binary(0.5, 2.0) == pytest.approx(0.25, abs=1e-15)
    # the maximizer of p ln(1 + f b) + q ln(1 - f), found numerically
    p, b = 0.55, 1.5
    res = optimize.minimize_scalar(
        lambda f: -(p * math.log1p(f * b) + (1 - p) * math.log1p(-f)),
        bounds=(0, 0.99),
        method="bounded",
        options={"xatol": 1e-12},
    )
    assert sz.kelly_binary(p, b) == pytest.approx(res.x, abs=1e-8)


def test_kelly_gaussian_is_mu_over_variance() -> None:
    assert sz.kelly_gaussian(0.08, 0.20) == pytest.approx(0.08 / 0.04, rel=1e-15)
    np.testing.assert_allclose(sz.kelly_gaussian([0.05, -0.02], [0.25, 0.1]), [0.8, -2.0], rtol=1e-14)


def test_multi_asset_kelly_diagonal_equals_single_asset() -> None:
    mu = np.array([0.06, 0.03, -0.02])
    sig = np.array([0.2, 0.15, 0.3])
    r = sz.kelly_portfolio(mu, np.diag(sig**2), fraction=1.0)
    np.testing.assert_allclose(r.full_kelly, mu / sig**2, rtol=1e-13)
    np.testing.assert_allclose(r.weights, mu / sig**2, rtol=1e-13)
    # per-strategy fractions on a diagonal covariance: c_i mu_i / sigma_i^2
    c = np.array([0.25, 0.5, 0.1])
    np.testing.assert_allclose(sz.kelly_portfolio(mu, np.diag(sig**2), fraction=c).weights, c * mu / sig**2, rtol=1e-12)


def test_multi_asset_kelly_general_is_inverse_covariance_times_mu() -> None:
    sig = np.array([0.2, 0.3, 0.25])
    rho = np.array([[1.0, 0.5, 0.2], [0.5, 1.0, -0.3], [0.2, -0.3, 1.0]])
    cov = rho * np.outer(sig, sig)
    mu = np.array([0.05, 0.07, 0.02])
    r = sz.kelly_portfolio(mu, cov, fraction=0.25)
    np.testing.assert_allclose(r.full_kelly, np.linalg.solve(cov, mu), rtol=1e-12)
    np.testing.assert_allclose(r.weights, 0.25 * np.linalg.solve(cov, mu), rtol=1e-12)
    assert r.status == "closed_form"


def test_multi_asset_kelly_constraints() -> None:
    mu = np.array([0.06, 0.03, -0.02])
    sig = np.array([0.2, 0.15, 0.3])
    cov = np.diag(sig**2)
    # separable problem: per-name cap clips, long-only name with a negative edge gets 0
    r = sz.kelly_portfolio(mu, cov, fraction=1.0, allow_short=[True, True, False], max_weight=1.0)
    np.testing.assert_allclose(r.weights, [1.0, 1.0, 0.0], atol=1e-7)
    # gross cap on a diagonal problem: KKT gives w_i = sign(mu_i) max(|mu_i| - lam, 0) / sigma_i^2
    G = 1.0
    lam = optimize.brentq(lambda x: np.sum(np.maximum(np.abs(mu) - x, 0) / sig**2) - G, 0, 0.06)
    expected = np.sign(mu) * np.maximum(np.abs(mu) - lam, 0) / sig**2
    r = sz.kelly_portfolio(mu, cov, fraction=1.0, max_gross=G)
    np.testing.assert_allclose(r.weights, expected, atol=1e-6)
    assert np.abs(r.weights).sum() == pytest.approx(G, abs=1e-8)


# ----------------------------------------------------------------------------------------- optimal f
def test_optimal_f_two_outcomes_equals_kelly() -> None:
    # win 2 with probability 0.5, lose 1 otherwise: Vince's f = Kelly p - q / b = 0.25
    x = np.array([2.0, -1.0] * 50)
    o = sz.optimal_f(x, n_paths=200, seed=1)
    assert o.f == pytest.approx(sz.kelly_binary(0.5, 2.0), abs=1e-7)
    assert o.capital_fraction == pytest.approx(0.25, abs=1e-7)
    # unequal frequencies: p = 0.6, b = 1
    x = np.array([0.1] * 60 + [-0.1] * 40)
    o = sz.optimal_f(x, n_paths=200)
    assert o.f == pytest.approx(0.2, abs=1e-7)
    assert o.capital_fraction == pytest.approx(2.0, abs=1e-6)  # f / |worst| = 0.2 / 0.1
    assert 0.0 <= o.max_drawdown_median <= o.max_drawdown_p95 <= 1.0


def test_optimal_f_no_edge_is_zero() -> None:
    assert sz.optimal_f(np.array([0.01, -0.02, 0.01, -0.01])).f == 0.0


def _bootstrap_reference(x: np.ndarray, fraction: float, n_paths: int, h: int, seed: int) -> tuple:
    """The resampled paths in numpy, a path per row: cumulative products, running peaks floored at 1, drawdowns."""
    draws = np.random.default_rng(seed).integers(0, x.size, size=(n_paths, h))
    wealth = np.cumprod(1.0 + x[draws] * fraction, axis=1)
    peak = np.maximum(np.maximum.accumulate(wealth, axis=1), 1.0)
    drawdown = (1.0 - wealth / peak).max(axis=1)
    return wealth[:, -1], drawdown


@pytest.mark.parametrize("case", range(6))
def test_optimal_f_paths_are_the_numpy_paths_bits(case: int) -> None:
    """Terminal wealth and drawdown quantiles of the path kernel equal, bit for bit, those of the paths built in numpy
    from the same draws (also where wealth overflows: a worst loss of 1e-9 makes the capital fraction huge)."""
    rng = np.random.default_rng(100 + case)
    x = rng.standard_t(3, 40 + 50 * case) * 0.02 + 0.001
    if case == 5:
        x[0] = -1e-9
        x = np.where(x < 0, -1e-9, x)
    n_paths, h = (2000, sz.TRADING_DAYS) if case in (0, 2, 4, 5) else (37 + case, 5 * case)
    with np.errstate(all="ignore"):
        o = sz.optimal_f(x, n_paths=n_paths, horizon=h, seed=case)
        terminal, drawdown = _bootstrap_reference(x, o.capital_fraction, n_paths, h, case)
        expected = [np.quantile(terminal, 0.05), np.median(terminal), np.median(drawdown), np.quantile(drawdown, 0.95)]
    got = [o.terminal_wealth_p05, o.terminal_wealth_median, o.max_drawdown_median, o.max_drawdown_p95]
    np.testing.assert_array_equal(got, expected)
    if case == 5:
        assert np.isnan(got).any() or np.isinf(got).any()  # the overflow case reached inf or NaN


# ------------------------------------------------------------------------------------ vol targeting
def test_vol_target_weight_and_regime() -> None:
    v = sz.vol_target_weight(0.10, 0.25)
    assert v.weight == pytest.approx(0.4) and v.regime_scale == 1.0
    hot = sz.vol_target_weight(0.10, 0.25, vix_percentile=0.95, regime_scale=0.5)
    assert hot.weight == pytest.approx(0.2) and "volatility index" in hot.regime_reason
    assert sz.vol_target_weight(0.10, 0.25, realized_vol_percentile=0.91).regime_scale == 0.5
    assert sz.percentile_rank([1, 2, 3, 4], 3) == 0.75


# ------------------------------------------------------------------------------ equal risk contribution
def test_erc_diagonal_is_inverse_volatility() -> None:
    sig = np.array([0.1, 0.2, 0.4, 0.25])
    w = sz.equal_risk_contribution(np.diag(sig**2))
    inv = (1 / sig) / np.sum(1 / sig)
    np.testing.assert_allclose(w, inv, atol=1e-12)


def test_erc_general_covariance_equal_contributions() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T / 6 + np.diag(rng.uniform(0.01, 0.05, 6))
    w = sz.equal_risk_contribution(cov)
    assert np.all(w > 0) and w.sum() == pytest.approx(1.0, abs=1e-14)
    rc = w * (cov @ w) / (w @ cov @ w)  # recomputed here, not through the module
    np.testing.assert_allclose(rc, np.full(6, 1 / 6), atol=1e-8)


# ------------------------------------------------------------------------------------------ ATR, stops
def test_wilder_atr_against_hand_computed_series() -> None:
    rng = np.random.default_rng(5)
    close = 100 + np.cumsum(rng.normal(0, 1, 40))
    high = close + rng.uniform(0.2, 1.5, 40)
    low = close - rng.uniform(0.2, 1.5, 40)
    atr = sz.wilder_atr(high, low, close, 14)
    # by hand: TR with the previous close, seed = mean of TR_1..TR_14, then (13 ATR + TR) / 14
    tr = [high[0] - low[0]]
    for t in range(1, 40):
        tr.append(max(high[t] - low[t], abs(high[t] - close[t - 1]), abs(low[t] - close[t - 1])))
    expected = [math.nan] * 14 + [sum(tr[1:15]) / 14]
    for t in range(15, 40):
        expected.append((13 * expected[-1] + tr[t]) / 14)
    np.testing.assert_allclose(atr, expected, rtol=1e-13, equal_nan=True)
    # several columns at once give the same per column
    both = sz.wilder_atr(np.c_[high, high], np.c_[low, low], np.c_[close, close])
    np.testing.assert_allclose(both[:, 1], expected, rtol=1e-13, equal_nan=True)


def test_trailing_stop_on_a_scripted_path() -> None:
    p = sz.StopParams()  # 2 ATR stop, 2:1, trail activates at +1 ATR and trails by 2 ATR
    atr = 1.0
    state = sz.new_stop_state([1.0], [100.0])
    # session 1: high 100.5 -> not active; stop 98, target 104
    lv = sz.advance_stops(state, [100.5], [99.5], [atr], p)
    assert lv.stop_price[0] == 98.0 and lv.take_profit_price[0] == 104.0
    assert not lv.state.trailing_active[0] and not lv.hit[0]
    # session 2: high 101.5 >= 100 + 1 ATR -> active, trail = 101.5 - 2 = 99.5
    lv = sz.advance_stops(lv.state, [101.5], [100.2], [atr], p)
    assert lv.state.trailing_active[0] and lv.state.trailing_stop[0] == 99.5 and lv.effective_stop[0] == 99.5
    # session 3: high 103 -> trail 101; a lower high later never loosens it
    lv = sz.advance_stops(lv.state, [103.0], [101.5], [atr], p)
    assert lv.state.trailing_stop[0] == 101.0
    lv = sz.advance_stops(lv.state, [102.0], [101.2], [atr], p)
    assert lv.state.trailing_stop[0] == 101.0 and not lv.hit[0]
    # session 5: low 100.9 <= trailing 101 -> hit (the initial stop 98 alone would not be)
    lv = sz.advance_stops(lv.state, [101.5], [100.9], [atr], p)
    assert lv.hit[0]
    # a short mirrors it
    s = sz.new_stop_state([-1.0], [50.0])
    lv = sz.advance_stops(s, [50.2], [48.8], [0.5], p)  # best 48.8 <= 50 - 0.5 -> active, trail 49.8
    assert lv.state.trailing_active[0] and lv.state.trailing_stop[0] == pytest.approx(49.8)
    assert lv.stop_price[0] == 51.0 and lv.take_profit_price[0] == 48.0
    assert sz.advance_stops(lv.state, [49.9], [49.0], [0.5], p).hit[0]


# ------------------------------------------------------------------------------------- clusters, heat
def test_block_diagonal_correlation_recovers_blocks() -> None:
    blocks = [[0, 3, 5], [1, 4], [2, 6, 7]]
    c = np.eye(8)
    for b in blocks:
        for i in b:
            for j in b:
                if i != j:
                    c[i, j] = 0.8
    labels = sz.correlation_clusters(c, 0.5)
    groups = sorted(sorted(np.flatnonzero(labels == k).tolist()) for k in np.unique(labels))
    assert groups == sorted(blocks)


def test_portfolio_heat_formula() -> None:
    h = sz.portfolio_heat(
        [10_000, 20_000],
        [300_000, 100_000],
        [1, 2],
        1_000_000,
        max_portfolio_risk_pct_nav=0.05,
        max_position_pct_gross=1.0,
        max_cluster_pct_gross=1.0,
    )
    assert h.risk_at_stops_pct_nav == pytest.approx(0.03)
    assert h.largest_position_share == pytest.approx(0.75) and h.largest_cluster_share == pytest.approx(0.75)
    assert h.heat_score == pytest.approx(100 * (0.5 * 0.6 + 0.25 * 0.75 + 0.25 * 0.75))


# ----------------------------------------------------------------------------------------- XGBoost
def _market(t_n: int = 260, n: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vol = 0.01 * np.exp(np.cumsum(rng.normal(0, 0.05, (t_n, n)), axis=0))
    r = rng.normal(0, 1, (t_n, n)) * vol
    close = 100 * np.exp(np.cumsum(r, axis=0))
    high, low = close * (1 + vol), close * (1 - vol)
    volume = rng.uniform(1e5, 2e5, (t_n, n))
    f, y = sz.ml_dataset(
        close,
        high,
        low,
        volume,
        np.full((t_n, n), 0.2) + vol,
        np.full((t_n, n), 30.0),
        np.full(t_n, 18.0),
        np.arange(n),
    )
    return f, y


def test_ml_targets_are_forward_vol_and_drawdown() -> None:
    close = np.array([[100.0], [110.0], [99.0], [104.5], [90.0], [95.0], [96.0], [97.0]])
    ones = np.ones_like(close)
    f, y = sz.ml_dataset(close, close, close, ones, ones, ones, np.ones(8), [0], horizon=5)
    r = np.diff(np.log(close[:6, 0]))
    assert y[0, 0, 0] == pytest.approx(math.sqrt(np.sum(r**2) / 5 * 252))
    assert y[0, 0, 1] == pytest.approx(1 - 90 / 110)  # peak 110 then 90
    assert np.isnan(y[3, 0, 0])  # the window runs past the data
    assert f.shape == (8, 1, len(sz.ML_FEATURES))


def test_ml_fallback_in_each_case() -> None:
    f, y = _market()
    s = sz.MlSettings(min_train_rows=100, retrain_interval_sessions=10, confidence_threshold=0.0, n_rounds=20)
    t = 200
    x = f[150]  # a feature row inside the training range
    vt = np.array([0.3, 0.4, 0.5])
    # 1. too little data -> no model -> missing
    assert sz.train_ml_model(f[:50], y[:50], 49, s) is None
    out = sz.ml_size(None, x, t, target_vol=0.1, vol_target_weight=vt)
    assert list(out.fallback) == [sz.FALLBACK_MISSING] * 3
    np.testing.assert_array_equal(out.weight, vt)
    model = sz.train_ml_model(f, y, t, s)
    assert model is not None and model.trained_through == t - 5
    ok = sz.ml_size(model, x, t, target_vol=0.1, vol_target_weight=vt)
    assert list(ok.fallback) == [sz.FALLBACK_NONE] * 3
    expected = np.fmin(0.1 / ok.predicted_vol, 0.01 / ok.predicted_max_drawdown)
    np.testing.assert_allclose(ok.weight, expected)
    # 2. stale: as_of more than retrain_interval sessions after the training
    stale = sz.ml_size(model, x, t + 11, target_vol=0.1, vol_target_weight=vt)
    assert list(stale.fallback) == [sz.FALLBACK_STALE] * 3
    np.testing.assert_array_equal(stale.weight, vt)
    # 3. a feature outside the training range
    x_out = x.copy()
    x_out[1, 0] = model.feature_max[0] * 10
    out = sz.ml_size(model, x_out, t, target_vol=0.1, vol_target_weight=vt)
    assert list(out.fallback) == [sz.FALLBACK_NONE, sz.FALLBACK_OUT_OF_RANGE, sz.FALLBACK_NONE]
    assert out.weight[1] == vt[1]
    # 4. confidence below the threshold
    strict = sz.MlModel(
        model.boosters,
        model.trained_through,
        model.feature_min,
        model.feature_max,
        model.n_train,
        sz.MlSettings(retrain_interval_sessions=10, confidence_threshold=1.01),
    )
    out = sz.ml_size(strict, x, t, target_vol=0.1, vol_target_weight=vt)
    assert list(out.fallback) == [sz.FALLBACK_LOW_CONFIDENCE] * 3
    np.testing.assert_array_equal(out.weight, vt)


def test_walk_forward_has_no_look_ahead() -> None:
    f, y = _market(t_n=240)
    s = sz.MlSettings(min_train_rows=100, retrain_interval_sessions=20, n_rounds=10)
    base = sz.walk_forward_ml(f, y, 150, s)
    cut = 190
    rng = np.random.default_rng(9)
    f2, y2 = f.copy(), y.copy()
    perm = rng.permutation(np.arange(cut + 1, 240))
    f2[cut + 1 :], y2[cut + 1 :] = f[perm], y[perm]  # shuffle the future
    y2[cut - 4 : cut + 1] = rng.uniform(0, 1, y2[cut - 4 : cut + 1].shape)  # targets not yet realized at cut
    other = sz.walk_forward_ml(f2, y2, 150, s)
    np.testing.assert_array_equal(base.predicted_vol[: cut + 1], other.predicted_vol[: cut + 1])
    assert np.isfinite(base.predicted_vol[150:]).all()


def test_recommend_takes_the_most_conservative_then_limits() -> None:
    w, method, binding = sz.recommend({"kelly": 0.5, "vol_target": -0.2, "erc": 0.3}, -1.0, sz.SizeLimits())
    assert (w, method, binding) == (-0.2, "vol_target", "method")
    w, method, binding = sz.recommend({"kelly": 0.5}, 1.0, sz.SizeLimits(per_name=0.1, position_risk=0.05))
    assert (w, binding) == (0.05, "position_risk")


@pytest.mark.parametrize(
    ("current", "order", "recommended", "allowed"),
    [
        (0, 500, 300, 300),  # a new long capped at the recommendation
        (100, 500, 300, 200),  # adds only up to it
        (400, 100, 300, 0),  # already above: nothing more
        (400, -100, 300, -100),  # reducing is never cut
        (-200, 500, 300, 500),  # cover the short (reduces) then go long up to 300
        (-200, 700, 300, 500),
        (0, -500, 300, 0),  # against the recommended direction: no new short
        (0, -500, -200, -200),
        (-100, -500, -200, -100),
    ],
)
def test_quantity_within_recommendation(current: float, order: float, recommended: float, allowed: float) -> None:
    assert sz.quantity_within_recommendation(current, order, recommended) == allowed


def test_strategy_component_var_and_budgets() -> None:
    cvar = {"AAA": 100.0, "BBB": 40.0, "CCC": -10.0}
    by = sz.strategy_component_var(
        ["AAA", "BBB", "BBB", "CCC"], ["trend", "trend", "carry", "hedge"], [5e5, 3e5, 1e5, 2e5], cvar
    )
    assert by == pytest.approx({"trend": 100.0 + 30.0, "carry": 10.0, "hedge": -10.0})
    assert sum(by.values()) == pytest.approx(sum(cvar.values()))
    status = {b.strategy: b for b in sz.risk_budget_status(by, 200.0, {"trend": 0.5, "carry": 0.06, "hedge": 0.1})}
    assert status["trend"].budget == 100.0 and status["trend"].status == "BREACH"
    assert status["carry"].utilization == pytest.approx(10 / 12) and status["carry"].status == "WARN"
    assert status["hedge"].status == "OK"


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40, 251, 252, 253, 65_537, 2**31 + 12_345, 3_000_000_000, 2**32 - 1, 2**32])
def test_bootstrap_draws_are_numpys_integers(n: int) -> None:
    """The compiled draws equal ``Generator.integers(0, n, size)`` of numpy's PCG64, bit for bit: from a fresh
    generator and from one holding a buffered 32-bit half (one 32-bit draw made), over ranges whose Lemire rejection
    is rare (small ``n``) and frequent (``n`` just above ``2**31``: about half the draws are redrawn)."""
    for seed in range(4):
        for burn in (0, 1):
            rng = np.random.default_rng(seed)
            rng.integers(0, 5, size=burn, dtype=np.uint32)
            assert rng.bit_generator.state["has_uint32"] == burn
            state = sz._pcg64_state(rng)
            expected = rng.integers(0, n, size=(37, 29))
            got = np.empty((37, 29), dtype=np.int64)
            sz._bootstrap_draws(state, n, got)
            np.testing.assert_array_equal(got, expected)


def test_optimal_f_paths_with_frequent_new_peaks_are_the_numpy_paths_bits() -> None:
    """Paths that set new peaks often (a large capital fraction on returns with an edge) and paths that never rise
    above 1: the kernel's drawdowns per stretch between peaks equal numpy's running-peak drawdowns, path by path."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(252) * 0.02 + 0.003
    draws = rng.integers(0, x.size, size=(500, 252))
    # 60: steps below -1 (wealth changes sign); 1e306: wealth overflows and inf / inf drawdowns are NaN (paths that
    # end not finite are taken again step by step); one and two steps: stretches that end at once
    cases = [(draws, f) for f in (0.0, 0.5, 4.0, 12.0, -3.0, 60.0, 1e306)] + [(draws[:, :1], 4.0), (draws[:, :2], 60.0)]
    for paths, fraction in cases:
        terminal, drawdown = np.empty(500), np.empty(500)
        sz._path_outcomes(x, np.ascontiguousarray(paths), fraction, terminal, drawdown, 0, 500)
        with np.errstate(over="ignore", invalid="ignore"):
            wealth = np.cumprod(1.0 + x[paths] * fraction, axis=1)
            peak = np.maximum(np.maximum.accumulate(wealth, axis=1), 1.0)
            worst = (1.0 - wealth / peak).max(axis=1)
        np.testing.assert_array_equal(terminal, wealth[:, -1])
        np.testing.assert_array_equal(drawdown, worst)
        if fraction == 1e306:
            assert np.isnan(drawdown).any() and not np.isfinite(terminal).all()
        if fraction == 60.0:
            assert (wealth < 0.0).any()
    terminal, drawdown = np.empty(500), np.empty(500)
    sz._path_outcomes(x, np.ascontiguousarray(draws[:, :0]), 4.0, terminal, drawdown, 0, 500)
    assert np.all(terminal == 1.0) and np.all(drawdown == -np.inf)  # no step: wealth 1, no drawdown taken


@pytest.mark.parametrize("horizon", [0, 1, 2, 29, 252])
def test_bootstrap_path_outcomes_are_the_numpy_paths_of_numpys_draws(horizon: int) -> None:
    """The paths drawn one by one equal numpy's: the draws of ``Generator.integers(0, n, size=(paths, horizon))``
    (fresh generator and one holding a buffered 32-bit half, so a path's draws can start on either half of an
    output) and numpy's ``cumprod`` / running-peak drawdowns of them, bit for bit, overflowing paths included; the
    state passed in is left unchanged."""
    x = np.random.default_rng(3).standard_normal(251) * 0.02 + 0.003
    for seed, burn in ((0, 0), (1, 1), (2, 1)):
        for fraction in (0.0, 4.0, -3.0, 60.0, 1e306):
            rng = np.random.default_rng(seed)
            rng.integers(0, 5, size=burn, dtype=np.uint32)
            state = sz._pcg64_state(rng)
            kept = state.copy()
            paths = rng.integers(0, x.size, size=(301, horizon))
            terminal, drawdown = np.empty(301), np.empty(301)
            sz._bootstrap_path_outcomes(x, state, fraction, horizon, terminal, drawdown)
            np.testing.assert_array_equal(state, kept)
            with np.errstate(over="ignore", invalid="ignore"):
                wealth = np.cumprod(1.0 + x[paths] * fraction, axis=1)
                peak = np.maximum(np.maximum.accumulate(wealth, axis=1), 1.0)
                worst = (1.0 - wealth / peak).max(axis=1, initial=-np.inf)
            np.testing.assert_array_equal(terminal, wealth[:, -1] if horizon else np.ones(301))
            np.testing.assert_array_equal(drawdown, worst)


def test_bootstrap_path_outcomes_built_with_slp_are_the_bits_of_the_plain_build() -> None:
    """``_bootstrap_path_outcomes`` (``slp_njit``: two paths side by side, packed) gives the bits of its source
    compiled by ``numba.njit(**JIT)`` (scalar) and of the path-by-path kernels (``_bootstrap_draws``, then
    ``_path_outcomes``): odd and even path counts, horizons 0-300, pairs with one lane ending
    not finite (a return of 1e100 drawn four times or more overflows, a NaN return stays) and the other finite."""
    plain = numba.njit(**{**JIT, "cache": False})(sz._bootstrap_path_outcomes.py_func)
    rng = np.random.default_rng(19)
    mixed = 0
    for k in range(40):
        x = rng.standard_normal(int(rng.integers(2, 300))) * 0.02
        if k % 2:
            x[0] = 1e100
        if k % 5 == 0:
            x[-1] = np.nan
        fraction = float(rng.choice([0.0, 1.0, 4.0, -3.0, 60.0]))
        horizon = int(rng.choice([0, 1, 2, 3, 29, 252, 300]))
        n_paths = int(rng.choice([1, 2, 3, 64, 301]))
        state = sz._pcg64_state(np.random.default_rng(k))
        a = np.empty(n_paths), np.empty(n_paths)
        b = np.empty(n_paths), np.empty(n_paths)
        sz._bootstrap_path_outcomes(x, state, fraction, horizon, *a)
        plain(x, state, fraction, horizon, *b)
        # and the bits of the path-by-path kernels: every path's draws, then every path's outcome one at a time
        draws = np.empty((n_paths, horizon), dtype=np.int64)
        sz._bootstrap_draws(state, x.size, draws)
        c = np.empty(n_paths), np.empty(n_paths)
        sz._path_outcomes(x, draws, fraction, *c, 0, n_paths)
        for got, expected, by_path in zip(a, b, c, strict=True):
            np.testing.assert_array_equal(got.view(np.int64), expected.view(np.int64))
            np.testing.assert_array_equal(got.view(np.int64), by_path.view(np.int64))
        finite = np.isfinite(a[0][: n_paths - n_paths % 2].reshape(-1, 2))
        mixed += int(np.sum(finite[:, 0] != finite[:, 1]))
    assert mixed > 0
