"""The sizing model fits only the quantile boosters its predictions read: the vol's 10/50/90 % and the drawdown's
50/90 %. Each is the booster XGBoost fits by itself on the same rows (the oracle: ``xgb.train`` with the same
parameters, every (target, quantile) of the former six), so the sizes are unchanged."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from risk_pipeline.quant import sizing as sz
from risk_pipeline_tests.quant.test_sizing import _market


def _all_six(features: np.ndarray, targets: np.ndarray, as_of: int, s: sz.MlSettings) -> dict:
    """Every (target, quantile) booster fitted as ``train_ml_model`` did before, one DMatrix per target."""
    last = as_of - s.horizon
    x = features[: last + 1].reshape(-1, features.shape[2])
    y = targets[: last + 1].reshape(-1, targets.shape[2])
    keep = np.all(np.isfinite(y), axis=1) & np.isfinite(x[:, 2])
    x, y = x[keep], y[keep]
    out = {}
    dm = xgb.DMatrix(x, missing=np.nan, nthread=s.n_jobs)
    for k, name in enumerate(sz.ML_TARGETS):
        dm.set_label(y[:, k])
        for q in sz.QUANTILES:
            params = {
                "objective": "reg:quantileerror",
                "quantile_alpha": q,
                "tree_method": "hist",
                "max_depth": s.max_depth,
                "eta": s.learning_rate,
                "seed": s.seed,
                "nthread": s.n_jobs,
                "base_score": float(np.quantile(y[:, k], q)),
                "verbosity": 0,
            }
            out[(name, q)] = xgb.train(params, dm, num_boost_round=s.n_rounds)
    return out


def test_the_fitted_boosters_are_the_read_ones_and_predict_as_fitted_alone() -> None:
    f, y = _market(t_n=260, n=4, seed=3)
    s = sz.MlSettings(min_train_rows=100, n_rounds=15)
    t = 230
    model = sz.train_ml_model(f, y, t, s)
    assert model is not None
    assert set(model.boosters) == {
        ("forward_vol_5d", 0.1),
        ("forward_vol_5d", 0.5),
        ("forward_vol_5d", 0.9),
        ("forward_max_drawdown_5d", 0.5),
        ("forward_max_drawdown_5d", 0.9),
    }
    reference = _all_six(f, y, t, s)
    x = f[t]
    dm = xgb.DMatrix(x, missing=np.nan)
    for key, booster in model.boosters.items():
        assert booster.predict(dm).tobytes() == reference[key].predict(dm).tobytes(), key
    got = sz.predict_ml(model, x)
    full = sz.predict_ml(sz.MlModel(reference, model.trained_through, model.feature_min, model.feature_max, 0, s), x)
    for field in ("vol_q10", "vol_q50", "vol_q90", "drawdown_q50", "drawdown_q90", "confidence", "in_range"):
        assert getattr(got, field).tobytes() == getattr(full, field).tobytes(), field
