"""``batched_durrleman_g`` (many slices at once, used by the vol_surface rows) against ``durrleman_g`` per slice.

The batched function must give exactly the per-slice numbers (the vol_surface table's ``min_durrleman_g_quoted``
was computed slice by slice before); Vogt's example (Gatheral & Jacquier 2014) is the arbitrage oracle.
"""

from __future__ import annotations

import numpy as np

from risk_pipeline.quant.svi import SviParams, batched_durrleman_g, durrleman_g

#: Axel Vogt's example, Gatheral & Jacquier (2014): g < 0 near k = 0.6 (butterfly arbitrage).
VOGT = SviParams(a=-0.0410, b=0.1331, rho=0.3060, m=0.3586, sigma=0.4153)


def test_batched_durrleman_g_equals_per_slice_exactly() -> None:
    rng = np.random.default_rng(11)
    n = 300
    params = [
        SviParams(
            a=float(rng.uniform(-0.05, 0.1)),
            b=float(rng.uniform(0.0, 1.0)),
            rho=float(rng.uniform(-0.95, 0.95)),
            m=float(rng.uniform(-0.3, 0.3)),
            sigma=float(rng.uniform(1e-3, 0.6)),
        )
        for _ in range(n)
    ]
    params.append(VOGT)
    lo = rng.uniform(-1.5, 0.0, len(params))
    hi = lo + rng.uniform(0.0, 2.0, len(params))
    k = np.linspace(lo, hi, 201, axis=-1)
    columns = [np.array([getattr(p, f) for p in params]) for f in ("a", "b", "rho", "m", "sigma")]
    got = batched_durrleman_g(*columns, k)
    assert got.shape == (len(params), 201)
    for row, p in enumerate(params):
        expected = durrleman_g(p, np.linspace(lo[row], hi[row], 201))
        np.testing.assert_array_equal(k[row], np.linspace(lo[row], hi[row], 201))
        np.testing.assert_array_equal(got[row], expected)
    # some rows have w <= 0 somewhere (-inf there, as per slice), and Vogt's slice has g < 0
    assert np.isneginf(got).any()
    k_vogt = np.linspace(0.4, 0.8, 41)[None, :]
    g_vogt = batched_durrleman_g(*(np.array([getattr(VOGT, f)]) for f in ("a", "b", "rho", "m", "sigma")), k_vogt)
    assert g_vogt.min() < 0.0
