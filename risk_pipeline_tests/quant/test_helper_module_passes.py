"""Inner helpers linked into their callers without numba's module passes of their own
(``_numba.HELPER_MODULE_PASSES`` off) give the same bits as with them: the callers' module passes optimize the
linked copy, without ``fastmath``, so LLVM keeps every IEEE operation.

Off is the package's setting, so the "off" process uses the test session's own numba cache (the kernels the
other tests compile and load; compiled there with the setting off, whichever test comes first); only the
"on" process compiles in a private cache."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from risk_pipeline.quant import _numba

_SCRIPT = textwrap.dedent(
    """
    import dataclasses, hashlib, sys
    import numpy as np
    from risk_pipeline.quant import _numba
    _numba.HELPER_MODULE_PASSES = sys.argv[1] == "on"
    from risk_pipeline.quant.american import american_greeks, american_price
    from risk_pipeline.quant.implied_vol import implied_vol_american

    rng = np.random.default_rng(11)
    n = 400
    s, k = rng.uniform(60.0, 140.0, n), np.full(n, 100.0)
    t, v = rng.uniform(0.01, 2.0, n), rng.uniform(0.05, 0.9, n)
    r, q, call = rng.uniform(0.0, 0.08, n), rng.uniform(0.0, 0.1, n), rng.random(n) < 0.5
    digest = hashlib.sha256()
    for method in ("bs2002", "alo"):
        price = american_price(s, k, t, v, r, q, call, method=method)
        greeks = american_greeks(s, k, t, v, r, q, call, method=method)
        vols = implied_vol_american(price, s, k, t, r, q, call, method=method)
        for out in (price, *dataclasses.astuple(greeks), vols):
            for arr in out if isinstance(out, tuple) else (out,):
                data = np.ascontiguousarray(arr).tobytes() if isinstance(arr, np.ndarray) else repr(arr).encode()
                digest.update(data)
    print(digest.hexdigest())
    """
)


def _outputs(flag: str, cache: Path | None) -> str:
    """The digest of every output with the helpers' module passes ``flag``, in a process with numba's cache in
    ``cache`` (None: the test session's own cache)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)} if cache is not None else dict(os.environ)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, flag], env=env, capture_output=True, text=True, check=True, timeout=600
    )
    return done.stdout.strip().splitlines()[-1]


def test_helpers_without_their_own_module_passes_give_the_same_bits(tmp_path: Path) -> None:
    # BS2002's lanes and the exact engine's boundary and quadrature are the largest inner helpers
    assert not _numba.HELPER_MODULE_PASSES  # "off" is what the session's cache holds
    assert _outputs("off", None) == _outputs("on", tmp_path / "on")
