"""``_numba.run_chunked``: every index exactly once, and the exact-engine kernels it drives give the same bits
whatever the number of threads."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from risk_pipeline.quant import _numba
from risk_pipeline.quant.american import american_greeks, american_price
from risk_pipeline.quant.implied_vol import implied_vol_american


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 37])
def test_chunks_cover_every_index_once(monkeypatch: pytest.MonkeyPatch, threads: int, n: int) -> None:
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", threads)
    seen = np.zeros(n, dtype=int)

    def kernel(tag: str, start: int, stop: int) -> None:
        assert tag == "x"
        seen[start:stop] += 1

    _numba.run_chunked(kernel, n, "x")
    assert np.array_equal(seen, np.ones(n, dtype=int))


def test_exact_engine_does_not_depend_on_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    n = 40
    s, t, v = rng.uniform(60.0, 150.0, n), rng.uniform(0.02, 2.0, n), rng.uniform(0.1, 0.8, n)
    r, q, call = rng.uniform(0.0, 0.08, n), rng.uniform(0.0, 0.08, n), rng.random(n) < 0.5

    def run() -> list[np.ndarray]:
        price = american_price(s, 100.0, t, v, r, q, call)
        greeks = american_greeks(s, 100.0, t, v, r, q, call)
        iv = implied_vol_american(price, s, 100.0, t, r, q, call).vol
        return [price, greeks.delta, greeks.gamma, greeks.vega, greeks.charm, iv]

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    two = run()
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 1)
    one = run()
    for a, b in zip(two, one, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
