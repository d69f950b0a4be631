"""``_numba.run_chunked``: every index exactly once, and the exact-engine kernels it drives give the same bits
whatever the number of threads; the compile-time rules of ``_numba``'s docstring."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest
from numba.core.registry import CPUDispatcher as Dispatcher

from risk_pipeline.quant import (
    _numba,
    american,
    american_alo,
    american_fd,
    bsm,
    heston,
    implied_vol,
    scenario_engine,
    special,
)
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


def test_set_num_threads_in_the_calling_thread_runs_one_chunk() -> None:
    calls: list[tuple[int, int]] = []

    def kernel(start: int, stop: int) -> None:
        calls.append((start, stop))

    def one_thread() -> None:
        numba.set_num_threads(1)  # per thread, as the Heston fits do
        _numba.run_chunked(kernel, 9)

    worker = threading.Thread(target=one_thread)
    worker.start()
    worker.join()
    assert calls == [(0, 9)]


def test_no_kernel_compiles_a_parallel_loop() -> None:
    """``parallel=True`` compiles a loop body and its call tree twice (``_numba`` module docstring)."""
    parallel = [
        f"{module.__name__}.{name}"
        for module in (american, american_alo, american_fd, bsm, heston, implied_vol, scenario_engine, special)
        for name, obj in vars(module).items()
        if isinstance(obj, Dispatcher) and obj.targetoptions.get("parallel")
    ]
    assert parallel == []


def test_one_compiled_signature_per_kernel_across_methods() -> None:
    """Never two signatures (a callee is compiled only when its caller is: with a warm on-disk cache it has none)."""
    rng = np.random.default_rng(5)
    n = 20
    s, t, v = rng.uniform(60.0, 150.0, n), rng.uniform(0.02, 2.0, n), rng.uniform(0.1, 0.8, n)
    r, q, call = rng.uniform(0.0, 0.08, n), rng.uniform(0.0, 0.08, n), rng.random(n) < 0.5
    for method in ("alo", "bs2002", "bs1993", "bs2002_reference"):
        american_price(s, 100.0, t, v, r, q, call, method=method)
    implied_vol.implied_vol(american_price(s, 100.0, t, v, r, 0.0, call, method="bs2002"), s, 100.0, t, r, 0.0, call)
    for kernel in (american._price_kernel, american._bvn_2002, special.calerf):
        assert len(kernel.signatures) <= 1, kernel
