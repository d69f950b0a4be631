"""The position_sizing step's sums over a book's other names: from the values once, the bits of pandas' sums."""

import numpy as np
import pandas as pd

from risk_pipeline.defs.sizing.assets import _masked_sum, _sum_terms


def test_masked_sums_are_pandas_sums_bit_for_bit() -> None:
    """Against ``Series[mask].sum()`` and ``Series.drop(name, errors="ignore").sum()`` (the oracle: pandas itself) on
    values of mixed magnitudes with NaNs, every single-name drop (and a name not held), random masks, an empty
    series; an object-dtype series takes pandas' own path."""
    rng = np.random.default_rng(11)
    for n in (0, 1, 2, 7, 130, 1001):
        values = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 9, n)
        values[rng.random(n) < 0.1] = np.nan
        names = np.array([f"S{i:04d}" for i in range(n)], dtype=object)
        series = pd.Series(values, index=pd.Index(names, name="symbol"))
        terms = _sum_terms(series)
        assert terms is not None
        for name in [*names[:60], "NOT_HELD"]:
            got = _masked_sum(series, terms, names != name)
            want = float(series.drop(name, errors="ignore").sum())
            assert np.float64(got).tobytes() == np.float64(want).tobytes()
        for _ in range(20):
            mask = rng.random(n) < rng.random()
            got = _masked_sum(series, terms, mask)
            assert np.float64(got).tobytes() == np.float64(float(series[mask].sum())).tobytes()
    mixed = pd.Series([0.1, 0.2, 0.3], index=["A", "B", "C"], dtype=object)
    assert _sum_terms(mixed) is None
    assert _masked_sum(mixed, None, np.array([True, False, True])) == float(mixed[[True, False, True]].sum())
