"""vol_fit_comparison's Heston RMSE per slice (``group_rmse``) equals pandas' own per-group ``Series.mean`` (the oracle:
the groupby aggregation with a lambda the step used before), bit for bit, with NaN model vols, an all-NaN slice
and slices long enough for numpy's pairwise summation blocks."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from risk_pipeline.defs.volatility.stochastic_vol import comparison


def _pandas_rmse(usable: pd.DataFrame, heston_vol: pd.Series) -> pd.Series:
    err = usable.assign(err2=((heston_vol.reindex(usable.index) - usable["implied_vol"]) * 100.0) ** 2)
    return (
        err.groupby(["underlying", "expiry"], sort=True)
        .agg(heston_rmse_vol_points=("err2", lambda s: float(np.sqrt(s.mean()))))
        .reset_index()["heston_rmse_vol_points"]
    )


def test_heston_rmse_per_slice_equals_pandas_group_means() -> None:
    rng = np.random.default_rng(8)
    sizes = [1, 3, 7, 8, 9, 16, 43, 127, 128, 129, 300, 5]
    rows = []
    for i, n in enumerate(sizes):
        for _ in range(n):
            rows.append(
                {
                    "as_of": pd.Timestamp("2026-12-03 20:45", tz="UTC"),
                    "underlying": ["ZZZ", "AAA", "MMM"][i % 3],
                    "expiry": dt.date(2027, 1 + i % 12, 15),
                    "time_to_expiry_years": 0.1 * (i + 1),
                    "implied_vol": float(rng.uniform(0.1, 0.6)),
                }
            )
    usable = pd.DataFrame(rows).sample(frac=1.0, random_state=3)  # slices interleaved, as quotes come
    usable.index = rng.permutation(len(usable)) * 7 + 100
    heston_vol = pd.Series(usable["implied_vol"].to_numpy() + rng.normal(0.0, 0.01, len(usable)), index=usable.index)
    heston_vol[heston_vol.sample(frac=0.1, random_state=1).index] = np.nan
    heston_vol[usable.index[(usable["expiry"] == dt.date(2027, 12, 15)).to_numpy()]] = np.nan  # an all-NaN slice
    heston_vol = heston_vol.drop(usable.index[:4])  # quotes without a Heston vol (reindexed to NaN)
    keys = usable[["underlying", "expiry"]].drop_duplicates()
    svi = keys.assign(rmse_vol_points=rng.uniform(0.1, 1.0, len(keys)))
    sabr = keys.assign(rmse_vol_points=rng.uniform(0.1, 1.0, len(keys)))
    out = comparison(usable, heston_vol, sabr, svi)
    ref = _pandas_rmse(usable, heston_vol)
    assert len(out) == len(keys) and out["heston_rmse_vol_points"].isna().sum() == 1
    assert out["heston_rmse_vol_points"].to_numpy().tobytes() == ref.to_numpy().tobytes()
    assert out["n_quotes"].sum() == len(usable)
