"""Helpers compiled by ``inner_njit`` run inside their compiled callers, fresh and from the cache, and refuse Python
calls instead of jumping to a missing wrapper."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from risk_pipeline.quant._numba import JIT, inner_njit
from risk_pipeline.quant.special import norm_cdf


@inner_njit()
def _scaled(x: float, k: float) -> float:
    return k * math.exp(-x * x)


@inner_njit(forceinline=True)
def _both(x: float) -> float:
    return _scaled(x, 2.0) + _scaled(x, 0.5)


@njit(**JIT)
def _kernel(x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        out[i] = _both(x[i]) + norm_cdf(x[i])


def test_inner_helpers_give_the_python_source_results_inside_a_kernel() -> None:
    x = np.linspace(-3.0, 3.0, 13)
    out = np.empty_like(x)
    _kernel(x, out)
    # the same IEEE operations as the Python source (the helpers' .py_func), and the closed form of Phi
    expected = [2.0 * math.exp(-v * v) + 0.5 * math.exp(-v * v) + norm_cdf.py_func(v) for v in x]
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out - 2.5 * np.exp(-x * x), [0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x], 1e-15)


def test_a_python_call_raises_instead_of_calling_missing_machine_code() -> None:
    _kernel(np.zeros(1), np.empty(1))  # compiled for float64 already
    with pytest.raises(TypeError, match="compiled for numba kernels only"):
        _scaled(0.5, 1.0)
    with pytest.raises(TypeError, match="compiled for numba kernels only"):
        norm_cdf(0.5)
    assert _scaled.py_func(0.5, 1.0) == math.exp(-0.25)


def test_a_cached_kernel_runs_in_a_fresh_process_without_compiling_its_helpers(tmp_path: Path) -> None:
    module = tmp_path / "inner_cache_module.py"
    module.write_text(
        textwrap.dedent(
            """
            import math
            import numpy as np
            from numba import njit
            from risk_pipeline.quant._numba import JIT, inner_njit

            @inner_njit()
            def helper(x):
                return math.sqrt(x) + 1.0

            @njit(**JIT)
            def kernel(x, out):
                for i in range(x.shape[0]):
                    out[i] = helper(x[i])
            """
        )
    )
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        sys.path.insert(0, sys.argv[1])
        from numba.core import event
        compiled = []

        class Listen(event.Listener):
            def on_start(self, ev):
                compiled.append(ev.data["dispatcher"].py_func.__name__)

            def on_end(self, ev):
                pass

        event.register("numba:compile", Listen())
        import inner_cache_module as m
        out = np.empty(3)
        m.kernel(np.array([1.0, 4.0, 9.0]), out)
        print(json.dumps({"out": out.tolist(), "compiled": compiled}))
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, check=True
            ).stdout.splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert runs[0]["out"] == runs[1]["out"] == [2.0, 3.0, 4.0]
    assert sorted(runs[0]["compiled"]) == ["helper", "kernel"]  # cold: both compile
    assert runs[1]["compiled"] == []  # warm: the kernel loads from the cache, the helper is not needed
