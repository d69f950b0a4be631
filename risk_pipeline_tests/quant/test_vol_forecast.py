"""Volatility forecasts: EWMA, GARCH/GJR via arch, XGBoost, walk-forward evaluation and selection.

Expected values come from closed forms, arch's own forecasts, simulated data with known parameters
or hand computation, never from this module's earlier output.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import xgboost as xgb
from arch import arch_model

from risk_pipeline.quant import vol_forecast as vf
from risk_pipeline.quant.vol_forecast import (
    MODEL_EWMA,
    MODEL_GARCH,
    MODEL_GJR,
    MODEL_XGBOOST,
    GarchParams,
    HorizonForecast,
    PriceHistory,
    VolForecastConfig,
    build_features,
    ewma_variance,
    fit_garch,
    forecast_volatility,
    forward_realized_variance,
    garch_variance,
    garch_variance_sum,
    log_returns,
    mse,
    qlike,
    select_models,
    walk_forward,
)

TRUE_OMEGA, TRUE_ALPHA, TRUE_BETA, TRUE_NU = 2e-6, 0.08, 0.90, 6.0
SMALL = VolForecastConfig(horizons=(1, 5, 21), min_train=300, refit_every=63)


def simulate_garch(
    n: int,
    *,
    omega: float = TRUE_OMEGA,
    alpha: float = TRUE_ALPHA,
    gamma: float = 0.0,
    beta: float = TRUE_BETA,
    nu: float = TRUE_NU,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(GJR-)GARCH(1,1) returns with unit-variance Student-t shocks and their true variances.

    ``variance[t]`` is the variance of ``r[t]`` given ``r[:t]``; ``variance[n]`` the next one.
    """
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, size=n) / math.sqrt(nu / (nu - 2.0))
    r = np.empty(n)
    variance = np.empty(n + 1)
    variance[0] = omega / (1.0 - alpha - gamma / 2.0 - beta)
    for t in range(n):
        r[t] = math.sqrt(variance[t]) * z[t]
        variance[t + 1] = omega + (alpha + gamma * (r[t] < 0.0)) * r[t] ** 2 + beta * variance[t]
    return r, variance


def history_from_returns(r: np.ndarray, seed: int = 1, *, with_ranges: bool = True) -> PriceHistory:
    """Close prices from returns plus plausible open/high/low and an implied-vol level."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    if not with_ranges:
        return PriceHistory(close=close)
    scale = 0.01
    opening = close * np.exp(0.3 * scale * rng.standard_normal(close.size))
    high = np.maximum(opening, close) * np.exp(0.5 * scale * np.abs(rng.standard_normal(close.size)))
    low = np.minimum(opening, close) * np.exp(-0.5 * scale * np.abs(rng.standard_normal(close.size)))
    iv = np.full(close.size, 0.2)
    iv[::10] = np.nan
    return PriceHistory(close=close, open=opening, high=high, low=low, implied_vol=iv)


@pytest.fixture(scope="module")
def simulated() -> tuple[np.ndarray, np.ndarray]:
    return simulate_garch(4000, seed=11)


@pytest.fixture(scope="module")
def small_run() -> tuple[PriceHistory, object]:
    r, _ = simulate_garch(800, seed=5)
    history = history_from_returns(r)
    return history, forecast_volatility(history, SMALL)


# ------------------------------------------------------------------------------------ building blocks


def test_log_returns() -> None:
    np.testing.assert_allclose(log_returns([100.0, 110.0, 99.0]), [math.log(1.1), math.log(0.9)], rtol=1e-14)


def test_ewma_matches_closed_form_weighted_sum() -> None:
    rng = np.random.default_rng(3)
    r = 0.01 * rng.standard_normal(300)
    lam, seed = 0.94, 2.5e-4
    s = ewma_variance(r, lam, seed)
    assert s.shape == (301,)
    for t in (0, 1, 2, 17, 150, 300):
        j = np.arange(t)
        direct = lam**t * seed + (1 - lam) * np.sum(lam**j * r[t - 1 - j] ** 2)
        assert s[t] == pytest.approx(direct, rel=1e-12)
    # default seed: r_0^2
    assert ewma_variance(r, lam)[0] == pytest.approx(r[0] ** 2)
    assert ewma_variance(r, lam)[1] == pytest.approx(r[0] ** 2)


def test_forward_realized_variance_matches_direct_sum() -> None:
    r = np.random.default_rng(4).standard_normal(50)
    for h in (1, 5, 21):
        rv = forward_realized_variance(r, h)
        for t in range(50):
            if t + h <= 49:
                assert rv[t] == pytest.approx(np.sum(r[t + 1 : t + h + 1] ** 2), rel=1e-12)
            else:
                assert np.isnan(rv[t])


def test_qlike_and_mse_hand_computed() -> None:
    realized = np.array([2.0, 1.0, 0.5])
    forecast = np.ones(3)
    # (2 - ln 2 - 1) + 0 + (0.5 - ln 0.5 - 1) = 1 - ln 2 + ln 2 - 0.5 = 0.5
    assert qlike(realized, forecast) == pytest.approx(0.5 / 3, rel=1e-14)
    assert mse(realized, forecast) == pytest.approx((1.0 + 0.0 + 0.25) / 3, rel=1e-14)
    assert qlike([0.3, 4.0], [0.3, 4.0]) == 0.0
    # QLIKE depends on the ratio only; MSE on the scale
    assert qlike(realized * 7, forecast * 7) == pytest.approx(qlike(realized, forecast), rel=1e-14)
    for bad in ([0.0, 1.0, 1.0], [-1.0, 1.0, 1.0]):
        with pytest.raises(ValueError):
            qlike(bad, forecast)
        with pytest.raises(ValueError):
            qlike(forecast, bad)
    with pytest.raises(ValueError):
        mse([1.0], [1.0, 2.0])


# ------------------------------------------------------------------------------------------- GARCH


def test_garch_fit_recovers_true_parameters(simulated: tuple[np.ndarray, np.ndarray]) -> None:
    r, _ = simulated
    p = fit_garch(r)
    assert p.gamma == 0.0
    assert p.alpha == pytest.approx(TRUE_ALPHA, abs=0.03)
    assert p.beta == pytest.approx(TRUE_BETA, abs=0.04)
    assert 4.0 < p.nu < 10.0
    true_uncond = TRUE_OMEGA / (1 - TRUE_ALPHA - TRUE_BETA)
    assert p.omega / (1 - p.alpha - p.beta) == pytest.approx(true_uncond, rel=0.3)


def test_gjr_fit_recovers_asymmetry() -> None:
    r, _ = simulate_garch(4000, alpha=0.03, gamma=0.10, beta=0.9, seed=12)
    p = fit_garch(r, asymmetric=True)
    assert p.gamma == pytest.approx(0.10, abs=0.05)
    assert p.alpha == pytest.approx(0.03, abs=0.03)
    assert p.beta == pytest.approx(0.90, abs=0.04)
    assert p.persistence == pytest.approx(p.alpha + p.gamma / 2 + p.beta)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_garch_variance_path_matches_arch(simulated: tuple[np.ndarray, np.ndarray], asymmetric: bool) -> None:
    r = simulated[0][:1500]
    res = arch_model(100 * r, mean="Zero", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t", rescale=False).fit(
        disp="off", show_warning=False
    )
    params = GarchParams(
        omega=res.params["omega"] / 1e4,
        alpha=res.params["alpha[1]"],
        gamma=res.params["gamma[1]"] if asymmetric else 0.0,
        beta=res.params["beta[1]"],
        nu=res.params["nu"],
        backcast=float(np.sum(r[:75] ** 2 * 0.94 ** np.arange(75)) / np.sum(0.94 ** np.arange(75))),
        converged=True,
    )
    path = garch_variance(params, r)
    np.testing.assert_allclose(path[:-1], np.asarray(res.conditional_volatility) ** 2 / 1e4, rtol=1e-9)
    # arch's analytic forecast of E[sigma^2_{t+k}], k = 1..21, from the end of the sample
    arch_steps = res.forecast(horizon=21, reindex=False).variance.to_numpy()[-1] / 1e4
    assert path[-1] == pytest.approx(arch_steps[0], rel=1e-9)
    for h in (1, 5, 21):
        assert garch_variance_sum(params, path[-1], h) == pytest.approx(arch_steps[:h].sum(), rel=1e-9)


def test_garch_h_step_forecast_matches_closed_form(simulated: tuple[np.ndarray, np.ndarray]) -> None:
    r = simulated[0][:2000]
    p = fit_garch(r)
    next_var = garch_variance(p, r)[-1]
    persistence = p.alpha + p.beta
    uncond = p.omega / (1 - persistence)
    for h in (1, 5, 21):
        k = np.arange(1, h + 1)
        closed = np.sum(uncond + persistence ** (k - 1) * (next_var - uncond))
        assert garch_variance_sum(p, next_var, h) == pytest.approx(closed, rel=1e-12)
    # vectorized over origins
    many = np.array([0.5, 1.0, 2.0]) * next_var
    np.testing.assert_allclose(garch_variance_sum(p, many, 5), [garch_variance_sum(p, v, 5) for v in many], rtol=1e-14)


def test_fit_garch_against_arch_parameters(simulated: tuple[np.ndarray, np.ndarray]) -> None:
    r = simulated[0][:1500]
    ours = fit_garch(r)
    res = arch_model(100 * r, mean="Zero", vol="GARCH", p=1, q=1, dist="t", rescale=False).fit(
        disp="off", show_warning=False
    )
    assert ours.omega == pytest.approx(res.params["omega"] / 1e4, rel=1e-6)
    assert ours.alpha == pytest.approx(res.params["alpha[1]"], rel=1e-6)
    assert ours.beta == pytest.approx(res.params["beta[1]"], rel=1e-6)
    w = 0.94 ** np.arange(75)
    assert ours.backcast == pytest.approx(np.sum(r[:75] ** 2 * w) / w.sum(), rel=1e-12)


def _arch_reference(r: np.ndarray, asymmetric: bool, start: np.ndarray | None) -> tuple[np.ndarray, int]:
    """arch's own ``ARCHModel.fit`` (scipy.optimize.minimize SLSQP): parameters and convergence flag."""
    model = arch_model(100 * r, mean="Zero", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t", rescale=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(disp="off", show_warning=False, starting_values=start)
    return np.asarray(res.params, dtype=float), int(res.convergence_flag)


@pytest.mark.skipif(not vf._LEAN_SLSQP, reason="lean SLSQP path only for the SciPy/arch versions it repeats")
@pytest.mark.parametrize("asymmetric", [False, True])
def test_lean_garch_fit_is_bit_equal_to_arch_fit(asymmetric: bool) -> None:
    """The lean SLSQP driver repeats arch's fit step for step: identical parameters and flag, from arch's own
    starting values, from a warm start, and from a start outside the constraints (arch keeps it, clipped)."""
    r, _ = simulate_garch(900, gamma=0.06 if asymmetric else 0.0, alpha=0.05, seed=21)
    starts: list[np.ndarray | None] = [None]
    previous = _arch_reference(r[:600], asymmetric, None)[0]
    starts.append(previous)
    bad = previous.copy()
    bad[-2] = 1.5  # beta above its bound and alpha + gamma / 2 + beta > 1
    starts.append(bad)
    for n_obs in (400, 650, 900):
        for start in starts:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x, flag = vf._arch_fit(100 * r[:n_obs], asymmetric, start)
            ref_x, ref_flag = _arch_reference(r[:n_obs], asymmetric, start)
            assert flag == ref_flag
            np.testing.assert_array_equal(x, ref_x)


@pytest.mark.parametrize("asymmetric", [False, True])
def test_starting_values_equal_archs(asymmetric: bool) -> None:
    """The fit's starting values are arch's own: GARCH.starting_values' grid choice and StudentsT's moment
    estimate, bit for bit."""
    import arch.univariate

    for seed, n_obs in ((3, 300), (4, 520), (5, 900)):
        y = 100 * simulate_garch(n_obs, gamma=0.06 if asymmetric else 0.0, alpha=0.05, seed=seed)[0]
        v = arch.univariate.GARCH(p=1, o=int(asymmetric), q=1)
        ours = vf._garch_starting_values(v, y, np.absolute(y) ** 2.0, np.sign(y), v.variance_bounds(y))
        np.testing.assert_array_equal(ours, v.starting_values(y))
        std = y / np.std(y)
        np.testing.assert_array_equal(vf._t_starting_value(std), arch.univariate.StudentsT().starting_values(std))


def test_linear_constraint_kernels_equal_numpy() -> None:
    """Constraint values and forward-difference normals of the compiled kernels equal ``np.dot``'s, and the
    finite-difference steps equal SciPy's rule (inside and at the bounds)."""
    rng = np.random.default_rng(0)
    _, _, a, b = vf._garch_t_parts(True)
    lower = np.array([1e-6, 0.0, -1.0, 0.0, 2.05])
    upper = np.array([10.0, 1.0, 2.0, 1.0, 500.0])
    for _ in range(500):
        x = lower + (upper - lower) * rng.uniform(size=5) ** rng.choice([1.0, 8.0])
        at_bound = rng.uniform(size=5)
        x = np.where(at_bound < 0.1, lower, np.where(at_bound > 0.9, upper, x))  # some exactly at a bound
        h = vf._forward_steps(x, lower, upper)
        values, normals = np.empty(a.shape[0]), np.zeros(a.shape, order="F")
        vf._constraint_values_kernel(a, b, x, values)
        vf._constraint_normals_kernel(a, b, x, h, normals)
        for k in range(a.shape[0]):
            f0 = np.dot(a[k], x) - b[k]
            assert values[k].tobytes() == f0.tobytes()
            for i in range(5):
                p = x.copy()
                p[i] = x[i] + h[i]
                assert normals[k, i] == ((np.dot(a[k], p) - b[k]) - f0) / ((x[i] + h[i]) - x[i])
        step = np.sqrt(np.finfo(float).eps)
        expected = np.where(x + step > upper, -step, step)  # SciPy's reversal when the step would leave the box
        np.testing.assert_array_equal(h, expected)


@pytest.mark.parametrize("previous", [None, GarchParams(1e-6, 0.05, 0.0, 0.9, 8.0, 1e-4, True)])
def test_fit_garch_on_constant_prices_equals_reference_path(
    monkeypatch: pytest.MonkeyPatch, previous: GarchParams | None
) -> None:
    """All-zero returns fix omega's bounds at 0 (SciPy then drops the parameter): both paths give arch's answer."""
    fast = fit_garch(np.zeros(300), previous=previous)
    monkeypatch.setattr(vf, "_LEAN_SLSQP", False)
    assert fast == fit_garch(np.zeros(300), previous=previous)


def test_lean_fit_garch_equals_reference_path_in_walk_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """fit_garch and the XGBoost training on their fast paths give the very numbers of ARCHModel.fit and
    xgb.train (the reference paths) over a whole walk-forward."""
    r, _ = simulate_garch(700, seed=8)
    history = history_from_returns(r)
    fast = walk_forward(history, SMALL)
    monkeypatch.setattr(vf, "_LEAN_SLSQP", False)
    monkeypatch.setattr(vf, "_LEAN_XGB", False)
    reference = walk_forward(history, SMALL)
    assert fast.forecast_variance.keys() == reference.forecast_variance.keys()
    for key, values in reference.forecast_variance.items():
        np.testing.assert_array_equal(fast.forecast_variance[key], values)
    assert fast.garch_params == reference.garch_params


def test_xgb_train_predict_matches_xgb_train() -> None:
    """The direct C calls give the predictions of xgb.train and Booster.predict with the same parameters and data."""
    rng = np.random.default_rng(3)
    features = rng.standard_normal((400, 6))
    features[::17, 2] = np.nan  # missing values take the learned default direction
    target = np.exp(0.5 * features[:, 0] + 0.3 * rng.standard_normal(400))
    params = {
        "objective": "reg:gamma",
        "tree_method": "hist",
        "max_depth": 2,
        "eta": 0.1,
        "min_child_weight": 5.0,
        "nthread": 1,
        "seed": 0,
        "base_score": float(target.mean()),
        "verbosity": 0,
    }
    test = rng.standard_normal((50, 6))
    test[::7, 2] = np.nan
    for rounds in (0, 1, 40):
        ours = vf._xgb_train_predict(params, features, target, test, rounds)
        booster = xgb.train(params, xgb.DMatrix(features, label=target, nthread=1), num_boost_round=rounds)
        theirs = booster.predict(xgb.DMatrix(test, nthread=1))
        assert ours.dtype == theirs.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs)


def test_true_model_beats_constant_vol_in_qlike(simulated: tuple[np.ndarray, np.ndarray]) -> None:
    r, variance = simulated
    persistence = TRUE_ALPHA + TRUE_BETA
    uncond = TRUE_OMEGA / (1 - persistence)
    for h in (1, 5, 21):
        origins = np.arange(0, r.size - h)
        realized = np.array([np.sum(r[t + 1 : t + h + 1] ** 2) for t in origins])
        keep = realized > 0
        k = np.arange(1, h + 1)
        true_fc = np.sum(uncond + persistence ** (k[None, :] - 1) * (variance[origins + 1, None] - uncond), axis=1)
        const_fc = np.full(origins.size, h * uncond)
        assert qlike(realized[keep], true_fc[keep]) < qlike(realized[keep], const_fc[keep])


# ------------------------------------------------------------------------------------------ features


def test_features_are_trailing_and_match_direct_formulas() -> None:
    r, _ = simulate_garch(200, seed=8)
    history = history_from_returns(r)
    garch_vol = np.linspace(0.1, 0.3, r.size)
    x, names = build_features(history, garch_vol)
    assert x.shape == (r.size, len(names))
    assert names == (
        "rv_5",
        "rv_10",
        "rv_21",
        "rv_63",
        "parkinson_5",
        "parkinson_21",
        "garman_klass_5",
        "garman_klass_21",
        "ret",
        "abs_ret",
        "garch_vol",
        "implied_vol",
    )
    col = dict(zip(names, x.T, strict=True))
    t = 120
    for w in (5, 10, 21, 63):
        assert col[f"rv_{w}"][t] == pytest.approx(math.sqrt(252 * np.mean(r[t - w + 1 : t + 1] ** 2)), rel=1e-10)
        assert np.isnan(col[f"rv_{w}"][w - 2])
    # day d = t + 1 is the day return t ends on
    days = slice(t + 1 - 4, t + 2)
    hl = np.log(history.high[days] / history.low[days]) ** 2
    co = np.log(history.close[days] / history.open[days]) ** 2
    assert col["parkinson_5"][t] == pytest.approx(math.sqrt(252 * np.mean(hl / (4 * math.log(2)))), rel=1e-10)
    gk = 0.5 * hl - (2 * math.log(2) - 1) * co
    assert col["garman_klass_5"][t] == pytest.approx(math.sqrt(252 * np.mean(np.maximum(gk, 0))), rel=1e-10)
    assert col["ret"][t] == pytest.approx(r[t], rel=1e-12)
    assert col["abs_ret"][t] == pytest.approx(abs(r[t]), rel=1e-12)
    np.testing.assert_array_equal(col["garch_vol"], garch_vol)
    np.testing.assert_array_equal(col["implied_vol"], history.implied_vol[1:])
    # close-only history: no range or implied columns
    _, bare = build_features(history_from_returns(r, with_ranges=False), garch_vol)
    assert bare == ("rv_5", "rv_10", "rv_21", "rv_63", "ret", "abs_ret", "garch_vol")


# ----------------------------------------------------------------------------------- walk-forward


def test_no_look_ahead() -> None:
    r, _ = simulate_garch(620, seed=21)
    history = history_from_returns(r)
    cut = 480  # origins t <= cut only see r_0 .. r_cut
    rng = np.random.default_rng(99)
    shocked = r.copy()
    shocked[cut + 1 :] *= np.exp(rng.standard_normal(r.size - cut - 1))
    changed = history_from_returns(shocked)
    # same open/high/low/implied up to day cut + 1 (the day return cut ends on), different after
    for name in ("open", "high", "low"):
        np.testing.assert_array_equal(
            getattr(changed, name)[: cut + 2] / changed.close[: cut + 2],
            getattr(history, name)[: cut + 2] / history.close[: cut + 2],
        )
    cfg = VolForecastConfig(horizons=(1, 5), min_train=300, refit_every=50)
    a, b = walk_forward(history, cfg), walk_forward(changed, cfg)
    upto = a.origins <= cut
    assert upto.sum() > 100 and (~upto).sum() > 100
    for key, fa in a.forecast_variance.items():
        fb = b.forecast_variance[key]
        np.testing.assert_array_equal(fa[upto], fb[upto], err_msg=str(key))
        assert not np.allclose(fa[~upto], fb[~upto]), key


def test_deterministic(small_run: tuple[PriceHistory, object]) -> None:
    history, first = small_run
    second = forecast_volatility(history, SMALL)
    assert first.forecasts == second.forecasts
    assert first.selections == second.selections
    for key, value in first.walk_forward.forecast_variance.items():
        np.testing.assert_array_equal(value, second.walk_forward.forecast_variance[key])


def test_walk_forward_bookkeeping(small_run: tuple[PriceHistory, object]) -> None:
    history, result = small_run
    wf = result.walk_forward
    n = history.close.size - 1
    np.testing.assert_array_equal(wf.origins, np.arange(SMALL.min_train - 1, n))
    assert wf.refit_origins[0] == SMALL.min_train - 1 and wf.refit_origins[-1] == n - 1
    assert np.all(np.diff(wf.refit_origins[:-1]) == SMALL.refit_every)
    assert set(wf.forecast_variance) == {
        (m, h) for m in (MODEL_EWMA, MODEL_GARCH, MODEL_GJR, MODEL_XGBOOST) for h in SMALL.horizons
    }
    r = history.returns
    for h in SMALL.horizons:
        np.testing.assert_allclose(wf.realized_variance[h], 252 / h * forward_realized_variance(r, h)[wf.origins])
        rows = {f.model: f for f in result.forecasts if f.horizon_days == h}
        assert set(rows) == {MODEL_EWMA, MODEL_GARCH, MODEL_GJR, MODEL_XGBOOST}
        assert np.all(r != 0.0)  # so every OOS origin with an observed target counts
        for f in rows.values():
            assert f.n_oos == n - h - SMALL.min_train + 1
            assert f.oos_qlike is not None and f.oos_qlike > 0 and f.oos_mse is not None and f.oos_mse > 0
            assert f.annualized_vol == pytest.approx(math.sqrt(wf.forecast_variance[(f.model, h)][-1]))
        # latest EWMA: sqrt(252 * s_{n}) for every horizon (square-root-of-time)
        assert rows[MODEL_EWMA].annualized_vol == pytest.approx(math.sqrt(252 * ewma_variance(r)[-1]), rel=1e-12)
        # latest GARCH: closed form from the last refit's parameters
        p = wf.garch_params[MODEL_GARCH][-1]
        nv = garch_variance(p, r)[-1]
        k = np.arange(1, h + 1)
        uncond = p.omega / (1 - p.alpha - p.beta)
        closed = np.sum(uncond + (p.alpha + p.beta) ** (k - 1) * (nv - uncond))
        assert rows[MODEL_GARCH].annualized_vol == pytest.approx(math.sqrt(252 * closed / h), rel=1e-9)
        # OOS QLIKE recomputed from the stored arrays
        f = wf.forecast_variance[(MODEL_GARCH, h)]
        mask = wf.is_oos & np.isfinite(wf.realized_variance[h])
        assert rows[MODEL_GARCH].oos_qlike == pytest.approx(qlike(wf.realized_variance[h][mask], f[mask]), rel=1e-12)


def test_walk_forward_garch_beats_constant_vol() -> None:
    r, _ = simulate_garch(1500, seed=31)
    cfg = VolForecastConfig(models=(MODEL_GARCH,), horizons=(1, 21))
    wf = walk_forward(history_from_returns(r, with_ranges=False), cfg)
    for h in cfg.horizons:
        mask = wf.is_oos & np.isfinite(wf.realized_variance[h]) & (wf.realized_variance[h] > 0)
        t = wf.origins[mask]
        expanding_mean = np.cumsum(r**2)[t] / (t + 1) * 252  # constant-vol forecast from data <= t
        rv = wf.realized_variance[h][mask]
        assert qlike(rv, wf.forecast_variance[(MODEL_GARCH, h)][mask]) < qlike(rv, expanding_mean)


def test_short_history_has_latest_forecasts_but_no_oos() -> None:
    r, _ = simulate_garch(250, seed=2)
    result = forecast_volatility(history_from_returns(r), VolForecastConfig(horizons=(1, 5), min_train=400))
    models = {f.model for f in result.forecasts}
    assert {MODEL_EWMA, MODEL_GARCH, MODEL_GJR} <= models
    for f in result.forecasts:
        assert f.n_oos == 0 and f.oos_qlike is None and f.oos_mse is None
        assert f.annualized_vol > 0
    for s in result.selections:
        assert s.selected_model == MODEL_GARCH and not s.use_xgboost


def test_config_and_input_validation() -> None:
    with pytest.raises(ValueError):
        VolForecastConfig(horizons=(0,))
    with pytest.raises(ValueError):
        VolForecastConfig(models=(MODEL_EWMA,))
    with pytest.raises(ValueError):
        VolForecastConfig(min_train=100)
    with pytest.raises(ValueError):
        PriceHistory(close=np.array([100.0, -1.0]))
    with pytest.raises(ValueError):
        PriceHistory(close=np.ones(5), high=np.ones(5), low=np.full(5, 2.0))
    with pytest.raises(ValueError):
        walk_forward(PriceHistory(close=np.linspace(100, 101, 50)))


# --------------------------------------------------------------------------------------- selection


def _row(model: str, h: int, q: float | None, n: int = 500) -> HorizonForecast:
    return HorizonForecast(model, h, 0.2, q, None if q is None else 1e-3, n if q is not None else 0)


def test_xgboost_selected_only_where_it_beats_garch() -> None:
    rows = [
        _row(MODEL_GARCH, 1, 1.40),
        _row(MODEL_XGBOOST, 1, 1.35),  # better: use xgboost
        _row(MODEL_EWMA, 1, 1.30),  # ewma is never chosen
        _row(MODEL_GARCH, 5, 0.40),
        _row(MODEL_XGBOOST, 5, 0.40),  # a tie keeps garch
        _row(MODEL_GARCH, 21, 0.30),
        _row(MODEL_XGBOOST, 21, 0.10, n=20),  # too few OOS points
        _row(MODEL_GARCH, 63, None),
    ]
    out, selections = select_models(rows, min_oos=63)
    chosen = {s.horizon_days: s.selected_model for s in selections}
    assert chosen == {1: MODEL_XGBOOST, 5: MODEL_GARCH, 21: MODEL_GARCH, 63: MODEL_GARCH}
    assert [s.use_xgboost for s in selections] == [True, False, False, False]
    for h in (1, 5, 21, 63):
        selected = [f for f in out if f.horizon_days == h and f.selected]
        assert len(selected) == 1 and selected[0].model == chosen[h]
        assert all(f.selection_reason for f in out if f.horizon_days == h)
    assert "1.35" in selections[0].reason and "1.4" in selections[0].reason
    assert "n_oos=20" in selections[2].reason
    assert "no xgboost" in selections[3].reason


def test_full_run_selects_one_model_per_horizon(small_run: tuple[PriceHistory, object]) -> None:
    _, result = small_run
    for h in SMALL.horizons:
        rows = [f for f in result.forecasts if f.horizon_days == h]
        assert sum(f.selected for f in rows) == 1
        sel = next(s for s in result.selections if s.horizon_days == h)
        garch = next(f for f in rows if f.model == MODEL_GARCH)
        xgbr = next(f for f in rows if f.model == MODEL_XGBOOST)
        assert sel.use_xgboost == (xgbr.oos_qlike < garch.oos_qlike)
        assert all(math.isfinite(f.annualized_vol) and 0.02 < f.annualized_vol < 2.0 for f in rows)


def test_xgboost_selected_when_it_has_information_garch_lacks() -> None:
    """Exogenous log-vol AR(1); the implied-vol feature reveals next day's variance (positive control)."""
    rng = np.random.default_rng(0)
    n = 1200
    mean = math.log(0.2**2 / 252)
    log_var = np.empty(n + 1)
    log_var[0] = mean
    for t in range(n):
        log_var[t + 1] = mean + 0.98 * (log_var[t] - mean) + 0.25 * rng.standard_normal()
    r = np.exp(log_var[1:] / 2) * rng.standard_normal(n)  # Var(r_t) = exp(log_var[t + 1])
    close = 100 * np.exp(np.concatenate(([0.0], np.cumsum(r))))
    iv = np.full(n + 1, np.nan)
    iv[:n] = np.sqrt(252 * np.exp(log_var[1:]))  # known at the close of the day r_{t} ends on
    cfg = VolForecastConfig(models=(MODEL_GARCH, MODEL_XGBOOST))
    result = forecast_volatility(PriceHistory(close=close, implied_vol=iv), cfg)
    assert "implied_vol" in result.walk_forward.feature_names
    for s in result.selections:
        assert s.use_xgboost and s.selected_model == MODEL_XGBOOST, s


def test_garch_and_ewma_variance_recursions_equal_scipy_lfilter() -> None:
    """``garch_variance`` and ``ewma_variance`` run their one-pole recursion in a compiled loop: equal bit for bit
    to ``scipy.signal.lfilter`` with the initial state (the oracle), on random shocks, poles and seeds."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(7)
    for k in range(200):
        n = int(rng.integers(1, 600))
        r = rng.standard_t(4, n) * 10 ** rng.uniform(-3, -1)
        p = vf.GarchParams(
            omega=float(rng.uniform(1e-7, 1e-5)),
            alpha=float(rng.uniform(0.01, 0.2)),
            gamma=float(rng.uniform(0.0, 0.1)) if k % 2 else 0.0,
            beta=float(rng.uniform(0.5, 0.95)),
            nu=8.0,
            backcast=float(np.mean(r * r)),
            converged=True,
        )
        s0 = p.omega + p.persistence * p.backcast
        shock = p.omega + (p.alpha + p.gamma * (r < 0.0)) * r * r
        want = np.concatenate(([s0], lfilter([1.0], [1.0, -p.beta], shock, zi=[p.beta * s0])[0]))
        np.testing.assert_array_equal(vf.garch_variance(p, r), want)
        lam = float(rng.uniform(0.8, 0.99))
        want = np.concatenate(([r[0] ** 2], lfilter([1.0 - lam], [1.0, -lam], r * r, zi=[lam * r[0] ** 2])[0]))
        np.testing.assert_array_equal(vf.ewma_variance(r, lam), want)


# ------------------------------------------------------------------------------------ boosters nobody reads


@pytest.mark.parametrize(("n_returns", "min_train", "unread"), [(260, 252, 1), (509, 252, 1), (800, 300, 0)])
def test_scored_only_gives_the_same_rows_without_the_unread_boosters(
    monkeypatch: pytest.MonkeyPatch, n_returns: int, min_train: int, unread: int
) -> None:
    """``scored_only`` leaves out exactly the (block, horizon) boosters whose forecasts ``evaluate`` never reads: the
    rows and selections are the same bits, and the XGBoost forecasts differ only at origins it does not score."""
    r, _ = simulate_garch(n_returns, seed=21)
    history = history_from_returns(r)
    cfg = VolForecastConfig(min_train=min_train, refit_every=63)
    trained: list[int] = []
    real = vf._xgb_train_predict

    def counting(*args: object) -> np.ndarray:
        trained.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(vf, "_xgb_train_predict", counting)
    full = forecast_volatility(history, cfg)
    n_full = len(trained)
    trained.clear()
    lean = forecast_volatility(history, cfg, scored_only=True)
    assert repr(full.forecasts) == repr(lean.forecasts) and full.selections == lean.selections
    wf_full, wf_lean = full.walk_forward, lean.walk_forward
    # the boosters a block needs: some origin of it scored (out of sample, realized variance observed), or the last
    n = r.size
    blocks = list(zip(wf_full.refit_origins, [*wf_full.refit_origins[1:], n], strict=True))
    needed = sum(
        1 for s, end in blocks for h in cfg.horizons if end == n or max(s, min_train - 1) <= min(end - 1, n - 1 - h)
    )
    assert len(trained) == needed == n_full - unread
    for h in cfg.horizons:
        a, b = wf_full.forecast_variance[(MODEL_XGBOOST, h)], wf_lean.forecast_variance[(MODEL_XGBOOST, h)]
        scored = wf_full.is_oos & (wf_full.realized_variance[h] > 0.0)
        assert a[scored].tobytes() == b[scored].tobytes() and a[-1] == b[-1]
        assert np.all(np.isnan(b[~scored & (a != b)]))
        for key in ((MODEL_GARCH, h), (MODEL_GJR, h), (MODEL_EWMA, h)):
            assert wf_full.forecast_variance[key].tobytes() == wf_lean.forecast_variance[key].tobytes()


def test_t_loglikelihood_kernels_equal_archs_array_steps_bit_for_bit() -> None:
    """``_t_log_argument`` and ``_t_loglikelihood_sum`` against arch 8's ``StudentsT.loglikelihood`` array steps
    (the ufuncs and ``sum`` it calls), written out here, on random variances, residuals and degrees of freedom."""
    from scipy.special import gammaln

    rng = np.random.default_rng(3)
    for n in (1, 7, 8, 9, 127, 128, 129, 251, 260, 500, 1000, 2049):
        for _ in range(5):
            sigma2 = np.exp(rng.uniform(-3, 3, n))
            squared = (rng.standard_normal(n) * np.exp(rng.uniform(-2, 2, n))) ** 2
            nu = np.float64(rng.uniform(2.05, 60.0))
            constant = gammaln((nu + 1) / 2) - gammaln(nu / 2) - np.log(np.pi * (nu - 2)) / 2
            lls = constant - 0.5 * np.log(sigma2) - (nu + 1) / 2 * np.log(1 + squared / (sigma2 * (nu - 2)))
            expected = -float(lls.sum())
            term, arg = np.log(sigma2), np.empty(n)
            vf._t_log_argument(sigma2, float(nu - 2), squared, arg)
            np.log(arg, out=arg)
            got = -vf._t_loglikelihood_sum(float(constant), term, float((nu + 1) / 2), arg)
            assert got == expected


def test_t_loglikelihood_row_kernels_equal_archs_array_steps_bit_for_bit() -> None:
    """``_t_log_argument_rows`` and ``_t_loglikelihood_rows`` (each row its own ``nu``, the logarithms by
    ``np.log`` over all rows) against arch 8's ``StudentsT.loglikelihood`` array steps on each row alone."""
    from scipy.special import gammaln

    rng = np.random.default_rng(4)
    for n in (1, 9, 128, 129, 259, 500, 1001):
        rows = 5
        sigma2 = np.exp(rng.uniform(-3, 3, (rows, n)))
        squared = (rng.standard_normal(n) * np.exp(rng.uniform(-2, 2, n))) ** 2
        nus = rng.uniform(2.05, 60.0, rows)
        constants = np.array([gammaln((nu + 1) / 2) - gammaln(nu / 2) - np.log(np.pi * (nu - 2)) / 2 for nu in nus])
        arg, out = np.empty((rows, n)), np.empty(rows)
        vf._t_log_argument_rows(sigma2, nus - 2, squared, arg)
        np.log(arg, out=arg)
        vf._t_loglikelihood_rows(constants, np.log(sigma2), (nus + 1) / 2, arg, out)
        for r, nu in enumerate(nus):
            s2 = sigma2[r].copy()
            lls = constants[r] - 0.5 * np.log(s2) - (nu + 1) / 2 * np.log(1 + squared / (s2 * (nu - 2)))
            assert out[r] == float(lls.sum())


@pytest.mark.parametrize("asymmetric", [False, True])
def test_recursions_kernel_equals_archs_recursion(asymmetric: bool) -> None:
    """``_garch_recursions_kernel`` gives arch's compiled ``garch_recursion`` row by row, bit for bit, also
    where the variance bounds clip (tiny parameters below the lower bound, huge ones above the upper, sums past the
    largest double)."""
    import arch.univariate

    rng = np.random.default_rng(5)
    o = int(asymmetric)
    v = arch.univariate.GARCH(p=1, o=o, q=1)
    for seed, n_obs in ((6, 40), (7, 259), (8, 700)):
        y = 100 * simulate_garch(n_obs, gamma=0.06 * o, alpha=0.05, seed=seed)[0]
        f, s, bounds, backcast = np.absolute(y) ** 2.0, np.sign(y), v.variance_bounds(y), float(v.backcast(y))
        params = rng.uniform(0.0, 1.0, (7, 3 + o)) * np.array([[1e-12], [0.1], [1.0], [3.0], [1e150], [1e300], [1.0]])
        params[-1] = [1.7e308, 1e308, 1e308, 1.0] if o else [1.7e308, 1e308, 1.0]  # sums past DBL_MAX: inf
        got = np.empty((params.shape[0], n_obs))
        vf._garch_recursions_kernel(params, f, s, 1, o, 1, backcast, bounds, got)
        for row, x in zip(got, params, strict=True):
            expected = np.zeros(n_obs)
            vf._garch_recursion(x.copy(), f, s, expected, 1, o, 1, n_obs, backcast, bounds)
            assert row.tobytes() == expected.tobytes()
        assert np.any(got[0] == bounds[:, 0]) and np.any(got[-2] > bounds[:, 1])
        assert np.any(got[-1] == bounds[:, 1] + 1000.0)  # arch's value for an infinite variance


def test_slsqp_with_objective_rows_equals_scipys_minimize() -> None:
    """A gradient's shifted points evaluated in one ``objective_rows`` call give SciPy's SLSQP iterates: the same
    solution and exit mode as ``scipy.optimize.minimize`` with the objective alone. ``objective_rows`` here loops
    over the objective, so this checks how the gradient is assembled from the rows; ``test_garch_fit.py`` checks the
    GARCH fits' batched objective against arch's own fits."""
    from scipy.optimize import minimize

    _, _, a, b = vf._garch_t_parts(True)
    lower = np.array([1e-6, 0.0, -1.0, 0.0, 2.05])
    upper = np.array([10.0, 1.0, 2.0, 1.0, 500.0])
    center = np.array([0.3, 0.08, 0.05, 0.85, 7.0])

    def objective(x: np.ndarray) -> float:
        return float(np.sum((x - center) ** 2 * np.array([3.0, 50.0, 20.0, 40.0, 0.01])) + np.sin(x[0] * x[3]))

    constraints = [{"type": "ineq", "fun": lambda x, k=k: np.dot(a[k], x) - b[k]} for k in range(a.shape[0])]
    for x0 in ([1.0, 0.1, 0.0, 0.8, 10.0], [0.05, 0.3, 0.4, 0.5, 4.0], [5.0, 0.01, 0.0, 0.9, 100.0]):
        start = np.array(x0)
        x, mode = vf._slsqp_minimize(
            objective, start, lower, upper, a, b, objective_rows=lambda p: np.array([objective(r) for r in p])
        )
        ref = minimize(
            objective,
            start,
            method="SLSQP",
            bounds=list(zip(lower, upper, strict=True)),
            constraints=constraints,
            options={"maxiter": 100, "ftol": 1e-6},
        )
        assert mode == ref.status
        assert x.tobytes() == ref.x.tobytes()
