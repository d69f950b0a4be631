"""Python's garbage collector is off while numba compiles (``_numba.NO_COLLECTION_WHILE_COMPILING``) and back to its
previous state afterwards, also after a compilation that fails."""

from __future__ import annotations

import gc

import numba
import pytest
from numba.core.errors import TypingError
from numba.extending import overload

from risk_pipeline.quant._numba import JIT

seen: list[bool] = []


def _probe():  # type: ignore[no-untyped-def]
    """A new function whose numba overload records the collector's state while numba types its caller (a new
    function each time: numba caches the typing of a function per argument types)."""

    def probe() -> None:
        raise NotImplementedError

    @overload(probe)
    def probe_typing() -> object:
        seen.append(gc.isenabled())
        return lambda: None

    return probe


def _fresh_kernel(scale: float):  # type: ignore[no-untyped-def]
    """A kernel and a helper never compiled before, each calling a probe of its own."""
    probe_helper, probe_kernel = _probe(), _probe()

    @numba.njit(**{**JIT, "cache": False})
    def helper(x: float) -> float:
        probe_helper()
        return scale * x

    @numba.njit(**{**JIT, "cache": False})
    def kernel(x: float) -> float:
        probe_kernel()
        return helper(x) + 1.0  # helper compiles inside kernel's compilation (nested events)

    return kernel


def test_collector_off_inside_a_compilation_and_on_again_after_it() -> None:
    assert gc.isenabled()
    seen.clear()
    kernel = _fresh_kernel(2.0)
    assert kernel(3.0) == 7.0
    assert len(seen) == 2 and not any(seen)  # kernel and the helper it compiled, both without the collector
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    seen.clear()
    gc.disable()
    try:
        assert _fresh_kernel(1.0)(1.0) == 2.0
        assert seen and not any(seen)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_collector_on_again_after_a_failed_compilation() -> None:
    @numba.njit(**{**JIT, "cache": False})
    def broken(x: float) -> float:
        return x + "text"  # type: ignore[operator]

    with pytest.raises(TypingError):
        broken(1.0)
    assert gc.isenabled()
    assert _fresh_kernel(0.5)(2.0) == 2.0  # the depth counter is back at zero: later compilations still work
    assert gc.isenabled()
