"""stochastic_vol_models' Heston fits on two threads give exactly the rows of the fits one after the other.

Quotes are Heston-generated (``heston_implied_vol``) so every fit converges; a chain with too few quotes checks
that an error stays with its own underlying on either path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from risk_pipeline.defs.volatility.stochastic_vol import _fit_chunk
from risk_pipeline.quant.heston import HestonParams, heston_implied_vol


def _chain(name: str, params: HestonParams, forward: float) -> pd.DataFrame:
    t = np.repeat([0.1, 0.35, 0.8], 9)
    k = np.tile(np.linspace(-0.25, 0.2, 9), 3) * np.sqrt(t / 0.35)
    return pd.DataFrame(
        {
            "underlying": name,
            "expiry": np.repeat(["2027-01-15", "2027-04-16", "2027-09-17"], 9),
            "time_to_expiry_years": t,
            "strike": forward * np.exp(k),
            "forward": forward,
            "spot": forward,
            "implied_vol": heston_implied_vol(params, t, k),
        }
    )


def test_heston_on_two_threads_equals_one_after_the_other() -> None:
    jobs = [
        ("AAA", _chain("AAA", HestonParams(0.04, 1.5, 0.05, 0.6, -0.6), 100.0), 1.0),
        ("BBB", _chain("BBB", HestonParams(0.09, 2.5, 0.06, 0.9, -0.3), 50.0), 1.0),
        ("CCC", _chain("CCC", HestonParams(0.02, 0.8, 0.03, 0.4, -0.8), 20.0), 1.0),
        ("TINY", _chain("TINY", HestonParams(0.04, 1.5, 0.05, 0.6, -0.6), 10.0).iloc[:2], 1.0),
    ]
    one = _fit_chunk(jobs, threads=1)
    two = _fit_chunk(jobs, threads=2)
    assert [r[0] for r in two] == ["AAA", "BBB", "CCC", "TINY"]
    for a, b in zip(one, two, strict=True):
        assert a[0] == b[0] and a[4] == b[4]
        assert a[1] == b[1]  # SABR rows
        assert {k: v for k, v in a[2].items() if k != "calibration_seconds"} == {
            k: v for k, v in b[2].items() if k != "calibration_seconds"
        }
        pd.testing.assert_series_equal(a[3], b[3], check_exact=True)
    assert two[3][4] and not any(r[4] for r in two[:3])  # the short chain fails alone
    # the fits recover the generating parameters (the oracle), so the rows compared are real fits
    assert abs(two[0][2]["rho"] - (-0.6)) < 1e-3 and abs(two[1][2]["v0"] - 0.09) < 1e-4
