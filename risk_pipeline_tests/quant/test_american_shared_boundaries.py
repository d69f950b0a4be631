"""The exact American engine solves one exercise boundary per distinct (rates, vol, expiry) of a batch: points that
share them (many spots on few vols, as in gap scenarios) get the prices each would get alone, bit for bit."""

from __future__ import annotations

import numpy as np

from risk_pipeline.quant.american import american_greeks, american_price
from risk_pipeline.quant.american_alo import distinct_rows


def test_distinct_rows_groups_equal_bits_only() -> None:
    a = np.array([1.0, 2.0, 1.0, 0.0, -0.0, np.nan, 1.0])
    b = np.array([5.0, 5.0, 5.0, 3.0, 3.0, 1.0, 6.0])
    first, row = distinct_rows(a, b)
    assert first.size == 6  # (1, 5) twice; 0.0 and -0.0 differ in their bits
    for c in (a, b):
        assert np.array_equal(c[first][row].view(np.int64), c.view(np.int64))
    assert row[0] == row[2] and len({row[3], row[4]}) == 2
    one, only = distinct_rows(np.array([4.0]))
    assert one.tolist() == [0] and only.tolist() == [0]


def test_prices_of_a_batch_sharing_boundaries_equal_each_point_priced_alone() -> None:
    rng = np.random.default_rng(3)
    vols = np.array([0.2, 0.35, 0.6])
    n = 300
    spot = rng.uniform(60.0, 140.0, n)
    k = np.full(n, 100.0)
    t = np.where(rng.random(n) < 0.5, 0.25, 1.0)
    vol = vols[rng.integers(0, 3, n)]
    r = np.where(rng.random(n) < 0.5, 0.05, 0.01)
    q = np.where(rng.random(n) < 0.5, 0.0, 0.04)
    call = rng.random(n) < 0.5
    batch = american_price(spot, k, t, vol, r, q, call)
    alone = np.array([american_price(spot[i], k[i], t[i], vol[i], r[i], q[i], call[i]) for i in range(n)])
    assert np.array_equal(batch, alone)
    # and never below the European value or intrinsic (the engine's floors), early exercise worth something
    assert np.all(batch >= np.where(call, spot - k, k - spot) - 1e-12)
    g = american_greeks(spot[:40], k[:40], t[:40], vol[:40], r[:40], q[:40], call[:40])
    for i in range(0, 40, 7):
        gi = american_greeks(spot[i], k[i], t[i], vol[i], r[i], q[i], call[i])
        for name in ("price", "delta", "gamma"):
            assert np.array_equal(np.asarray(getattr(g, name))[i], np.asarray(getattr(gi, name)))
