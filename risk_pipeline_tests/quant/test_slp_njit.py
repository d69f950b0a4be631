"""Kernels compiled by ``slp_njit`` get LLVM's SLP vectorizer for their own code only: numba's flag is set while their
library is optimized and restored afterwards (on error too), other kernels compiled before, after or in another
thread meanwhile stay scalar, a cached build without it is not loaded in its place, and the grid read and the spline
fit built with it give the bits of their builds without it."""

from __future__ import annotations

import importlib.util
import platform
import re
import textwrap
import threading
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest
from numba.core import config

import risk_pipeline.quant.scenario_engine as se
from risk_pipeline.quant import _numba
from risk_pipeline.quant._numba import JIT, slp_njit
from risk_pipeline_tests.quant.test_grid_fold import NY, _case, _grid_values, _reference

x86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="packed x86 instructions")

LANES = '''
def lanes(a, b, c, out):
    """Four independent multiply-adds over contiguous elements (straight-line code: SLP's case)."""
    x0 = a[0] * b[0] + c[0]
    x1 = a[1] * b[1] + c[1]
    x2 = a[2] * b[2] + c[2]
    x3 = a[3] * b[3] + c[3]
    out[0] = x0
    out[1] = x1
    out[2] = x2
    out[3] = x3
'''


def _lanes() -> Any:
    namespace: dict[str, Any] = {}
    exec(LANES, namespace)
    return namespace["lanes"]


def _arrays() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(5)
    return rng.normal(size=4), rng.normal(size=4), rng.normal(size=4), np.empty(4)


def _packed_multiplies(disp: Any) -> int:
    """Packed double multiplies (``mulpd``/``vmulpd``) in the machine code of ``disp``'s only version."""
    (asm,) = disp.inspect_asm().values()
    return len(re.findall(r"\bv?mulpd\b", asm))


def _expected(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.array([a[i] * b[i] + c[i] for i in range(4)])  # one rounding each (no fastmath, no FMA contraction)


@x86
def test_the_vectorizer_applies_to_the_slp_kernel_only_and_the_flag_is_restored() -> None:
    before = config.SLP_VECTORIZE
    plain = numba.njit(**{**JIT, "cache": False})(_lanes())
    packed = slp_njit(cache=False)(_lanes())
    a, b, c, out = _arrays()
    packed(a, b, c, out)
    np.testing.assert_array_equal(out, _expected(a, b, c))
    assert config.SLP_VECTORIZE == before
    plain(a, b, c, out)  # compiled after the SLP kernel
    np.testing.assert_array_equal(out, _expected(a, b, c))
    assert _packed_multiplies(packed) > 0
    assert _packed_multiplies(plain) == 0


@x86
def test_a_kernel_compiled_in_another_thread_meanwhile_stays_scalar() -> None:
    before = config.SLP_VECTORIZE
    for _ in range(3):
        plain = numba.njit(**{**JIT, "cache": False})(_lanes())
        packed = slp_njit(cache=False)(_lanes())
        a, b, c, _ = _arrays()
        outs = [np.empty(4), np.empty(4)]
        threads = [
            threading.Thread(target=kernel, args=(a, b, c, out))
            for kernel, out in zip((packed, plain), outs, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for out in outs:
            np.testing.assert_array_equal(out, _expected(a, b, c))
        assert _packed_multiplies(packed) > 0 and _packed_multiplies(plain) == 0
        assert config.SLP_VECTORIZE == before


def test_the_flag_is_restored_on_error() -> None:
    before = config.SLP_VECTORIZE
    with pytest.raises(ValueError, match="inside"):
        with _numba._slp_vectorizer_on():
            assert config.SLP_VECTORIZE == 1
            raise ValueError("inside")
    assert config.SLP_VECTORIZE == before


@x86
def test_no_other_thread_compiles_while_the_flag_is_set() -> None:
    plain = numba.njit(**{**JIT, "cache": False})(_lanes())
    a, b, c, out = _arrays()
    with _numba._slp_vectorizer_on():
        other = threading.Thread(target=plain, args=(a, b, c, out))
        other.start()
        other.join(timeout=1.0)
        assert other.is_alive()  # waiting for the compiler lock
        assert not plain.signatures
    other.join()
    np.testing.assert_array_equal(out, _expected(a, b, c))
    assert _packed_multiplies(plain) == 0


@x86
def test_a_cached_build_without_the_vectorizer_is_not_loaded_for_the_slp_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "cache"))
    module = tmp_path / "slp_cache_module.py"
    module.write_text(textwrap.dedent(LANES))
    spec = importlib.util.spec_from_file_location("slp_cache_module", module)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a, b, c, out = _arrays()

    plain = numba.njit(**JIT)(mod.lanes)
    plain(a, b, c, out)
    assert not plain.stats.cache_hits and plain.stats.cache_misses  # compiled and saved
    packed = slp_njit()(mod.lanes)
    packed(a, b, c, out)
    np.testing.assert_array_equal(out, _expected(a, b, c))
    assert not packed.stats.cache_hits and packed.stats.cache_misses  # the plain entry not loaded: compiled
    assert _packed_multiplies(packed) > 0
    again = slp_njit()(mod.lanes)  # its own entry is loaded
    out2 = np.empty(4)
    again(a, b, c, out2)
    assert again.stats.cache_hits and not again.stats.cache_misses
    np.testing.assert_array_equal(out2, out)
    plain_again = numba.njit(**JIT)(mod.lanes)  # and the plain kernel still loads its own
    plain_again(a, b, c, out2)
    assert plain_again.stats.cache_hits and not plain_again.stats.cache_misses
    key = packed._cache._index_key(packed.signatures[0], packed.targetctx.codegen())
    assert key[-1] == _numba.SLP_CACHE_TAG
    assert key[:-1] == plain._cache._index_key(plain.signatures[0], plain.targetctx.codegen())


def _grid_read(kernel: Any, c: dict[str, np.ndarray], shifted: bool, runs: bool) -> tuple[np.ndarray, np.ndarray]:
    y = _reference(c)[0]
    y0 = y.min(axis=1) - 1e-3
    dy = (y.max(axis=1) + 1e-3 - y0) / (NY - 1)
    mode = np.ones(c["ls"].shape[0], dtype=np.int8)
    mode[-1] = 2  # the exact engine's: NaN
    return _grid_values(kernel, c, y0, dy, shifted, runs, mode)


def test_the_grid_read_gives_the_bits_of_its_build_without_the_vectorizer() -> None:
    assert isinstance(se._american_grid_values, _numba._SlpDispatcher)
    scalar = numba.njit(**{**JIT, "cache": False})(se._american_grid_values.py_func)
    for seed in (1, 2):
        c = _case(np.random.default_rng(seed), na=9, n=700)
        for shifted, runs in ((True, True), (True, False), (False, False)):
            got, got_nan = _grid_read(se._american_grid_values, c, shifted, runs)
            want, want_nan = _grid_read(scalar, c, shifted, runs)
            assert got.tobytes() == want.tobytes()
            np.testing.assert_array_equal(got_nan, want_nan)
            assert got_nan[-1] == got.shape[1] and np.isfinite(got).any()


def _node_values(rng: np.random.Generator) -> list[np.ndarray]:
    """Random node values (exact zeros, negative zeros, magnitudes over 10 decades, an inf and a NaN) and the node
    values of a grid build (``test_grid_runs``' book under a set with vol, rate and yield moves: the base grid and
    its four shifted grids)."""
    from risk_pipeline_tests.quant.test_grid_memo import _sets
    from risk_pipeline_tests.quant.test_grid_runs import _book

    vals = rng.normal(0.0, 1.0, (300, 5, 13)) * rng.lognormal(0.0, 5.0, (300, 1, 1))
    vals[rng.random(vals.shape) < 0.2] = 0.0
    vals[30:60, :, :4] = -0.0
    vals[60, 0, 0] = np.inf
    vals[61, 2, 7] = np.nan
    got = [vals]
    p = _book(rng)
    sc = _sets(rng, p.n_symbols)[0]
    fit = se._spline_coefficients

    def keep(v: np.ndarray, out: np.ndarray, slot: int | None = None) -> np.ndarray:
        got.append(v.copy())
        return fit(v, out, slot)

    se._spline_coefficients = keep
    try:
        book = se.prepare(p, 1.0, sc, "eep_grid")
    finally:
        se._spline_coefficients = fit
    assert len(got) == 6 and (book.grid_mode == 1).any()
    return got


def _fma_unit() -> bool:
    from llvmlite import binding

    return bool(binding.get_host_cpu_features().get("fma", False))


def _spline_run(kernel: Any, vals: np.ndarray) -> np.ndarray:
    """``kernel`` on ``vals`` into slot 1 of three grids (the others NaN), in two chunks of options."""
    out = np.full((vals.shape[0], 3, 4, 12, 4, 4), np.nan)
    m_vt, m_yt = se._spline_map_t(5), se._spline_map_t(13)
    half = vals.shape[0] // 2
    kernel(vals, m_vt, m_yt, out, 1, 0, half)
    kernel(vals, m_vt, m_yt, out, 1, half, vals.shape[0])
    return out


def test_the_spline_fit_gives_the_bits_of_its_build_without_the_vectorizer() -> None:
    assert isinstance(se._spline_kernel, _numba._SlpDispatcher)
    scalar = numba.njit(**{**JIT, "cache": False})(se._spline_kernel.py_func)
    for vals in _node_values(np.random.default_rng(3)):
        got, want = _spline_run(se._spline_kernel, vals), _spline_run(scalar, vals)
        assert got.tobytes() == want.tobytes()
        assert np.isnan(got[:, [0, 2]]).all() and np.isfinite(got[:, 1]).any()


@x86
@pytest.mark.skipif(not _fma_unit(), reason="no FMA instructions")
def test_the_spline_fit_runs_packed_fused_multiply_adds() -> None:
    """Its four chains a step run as one vector fused multiply-add (here an uncached build: a build loaded from the
    cache has no assembly to inspect); without the vectorizer each is a scalar one."""
    builds = [slp_njit(cache=False), numba.njit(**{**JIT, "cache": False})]
    packed, plain = (build(se._spline_kernel.py_func) for build in builds)
    for kernel in (packed, plain):
        _spline_run(kernel, np.zeros((2, 5, 13)))
    (asm,) = packed.inspect_asm().values()
    assert re.search(r"\bvfmadd\w*pd\b", asm) and not re.search(r"\bvfmadd\w*sd\b", asm)
    (asm,) = plain.inspect_asm().values()
    assert re.search(r"\bvfmadd\w*sd\b", asm) and not re.search(r"\bvfmadd\w*pd\b", asm)
