"""The premium grid's BSM at the nodes (``scenario_engine._bsm_node_kernel``, read per option) against
``_bsm_kernel`` on the per-option inputs broadcast to the nodes and copied (what ``_eep_nodes`` did): bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from risk_pipeline.quant import scenario_engine as se


def _inputs(na: int, nv: int, nu: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = rng.uniform(50.0, 150.0, na)
    t = rng.uniform(0.0, 2.0, na)
    t[::7] = 1e-6  # below BSM's total-std floor at small vols
    r, q = rng.uniform(-0.01, 0.06, na), rng.uniform(0.0, 0.05, na)
    call = rng.random(na) < 0.5
    v = np.sort(rng.uniform(0.0, 1.2, (na, nv)), axis=1)
    v[::5, 0] = 0.0
    ls = np.log(k)[:, None, None] + rng.normal(0.0, 0.5, (na, nv, nu))
    return {
        "s": np.exp(ls),
        "ls": ls,
        "lk": np.log(k),
        "carry": (r - q) * t,
        "sqt": np.sqrt(t),
        "v": v,
        "w": np.where(call, 1.0, -1.0),
        "dq": np.exp(-q * t),
        "kdr": k * np.exp(-r * t),
    }


def _broadcast_reference(x: dict[str, np.ndarray]) -> np.ndarray:
    shape = x["s"].shape
    out = np.empty(x["s"].size)

    def flat(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1)

    se._bsm_kernel(
        x["s"].reshape(-1),
        x["ls"].reshape(-1),
        flat(x["lk"][:, None, None]),
        flat(x["carry"][:, None, None]),
        flat(x["sqt"][:, None, None]),
        flat(x["v"][:, :, None]),
        flat(x["w"][:, None, None]),
        flat(x["dq"][:, None, None]),
        flat(x["kdr"][:, None, None]),
        out,
    )
    return out.reshape(shape)


@pytest.mark.parametrize(("na", "nv", "nu", "seed"), [(0, 5, 13, 0), (1, 5, 13, 1), (257, 5, 13, 2), (40, 3, 7, 3)])
def test_node_bsm_is_the_broadcast_kernels_bit_for_bit(na: int, nv: int, nu: int, seed: int) -> None:
    x = _inputs(na, nv, nu, seed)
    out = np.empty(x["s"].shape)
    se._bsm_node_kernel(
        x["s"], x["ls"], x["lk"], x["carry"], x["sqt"], x["v"], x["w"], x["dq"], x["kdr"], out
    )  # fmt: skip
    ref = _broadcast_reference(x)
    assert out.tobytes() == ref.tobytes()
    assert np.all(np.isfinite(out)) and np.all(out >= 0.0)


def test_eep_nodes_are_american_minus_the_broadcast_bsm() -> None:
    """``_eep_nodes`` is ``_grid_prices`` (the exact engine at the nodes) minus the broadcast kernel's BSM, bit for
    bit, on boundaries solved by ``_grid_solve``."""
    na, nv, nu = 30, se.EEP_VOL_NODES, se.EEP_SPOT_NODES
    rng = np.random.default_rng(7)
    k = rng.uniform(80.0, 120.0, na)
    t = rng.uniform(0.05, 1.5, na)
    r, q = rng.uniform(0.01, 0.05, na), rng.uniform(0.0, 0.04, na)
    call = rng.random(na) < 0.5
    v = np.sort(rng.uniform(0.1, 0.6, (na, nv)), axis=1)
    ratio, bnd = se._grid_solve(t, r, q, call, v)
    ls_star = np.log(k)[:, None] + np.log(np.where(np.isfinite(ratio), ratio, 1.0))
    y = np.linspace(0.0, 0.8, nu)[None, :] + rng.uniform(0.0, 0.05, (na, 1))
    w = np.where(call, 1.0, -1.0)
    tc = se._time_constants(t, k, r, q)
    got = se._eep_nodes(
        ls_star, y, v, bnd, k, np.log(k), t, tc["sqrt_t"], tc["carry"], r, q, w, call, tc["dq"], tc["kdr"]
    )
    ls = ls_star[:, :, None] - w[:, None, None] * y[:, None, :]
    s = np.exp(ls)
    am = se._grid_prices(t, r, q, call, k, v, s, bnd)
    euro = _broadcast_reference(
        {"s": s, "ls": ls, "lk": np.log(k), "carry": tc["carry"], "sqt": tc["sqrt_t"], "v": v, "w": w,
         "dq": tc["dq"], "kdr": tc["kdr"]}
    )  # fmt: skip
    assert got.tobytes() == (am - euro).tobytes()
