"""The shifted early-exercise grid read folds a cell's rate and yield terms into one cubic in the grid's y coordinate
(``scenario_engine._american_grid_values``: once a run per cell in runs, per scenario otherwise): on random grids,
vols, shifts and runs, the premium it adds to BSM is the bicubic polynomial of the premium and its rate and yield
differences summed term by term in numpy, to rounding; the read in runs gives the scenario-by-scenario read's bits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import risk_pipeline.quant.scenario_engine as se

NV, NB, NY = 5, 9, 13  # vol nodes of the premium, vol nodes of the boundary, y nodes


def _runs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Run number of each of ``n`` scenarios (runs of 1 to 40 rows)."""
    starts = np.zeros(n, dtype=bool)
    starts[0] = True
    j = 0
    while j < n:
        j += int(rng.integers(1, 41))
        if j < n:
            starts[j] = True
    return np.cumsum(starts) - 1


def _case(rng: np.random.Generator, na: int, n: int) -> dict[str, np.ndarray]:
    """Random Americans (one symbol each) with random grids, and scenarios in runs of equal vol scale, rate shift and
    yield shift whose spots differ (rate shifts of some runs -0.0 and of the next +0.0)."""
    run = _runs(rng, n)
    n_run = run[-1] + 1
    strike = rng.uniform(50.0, 150.0, na)
    spot0 = strike * np.exp(rng.uniform(-0.2, 0.2, na))
    call = rng.random(na) < 0.5
    w = np.where(call, 1.0, -1.0)
    t = rng.uniform(0.1, 1.5, na)
    r = rng.uniform(0.0, 0.05, na)
    q = rng.uniform(0.0, 0.04, na)
    vol = rng.uniform(0.15, 0.5, na)
    h = rng.uniform(0.0005, 0.002, (na, 2))
    h[0, 1] = 0.0  # a yield that does not move: its differences are zero
    scale = np.exp(rng.normal(0.0, 0.1, (na, n_run)))[:, run]
    dr = (rng.uniform(-1.0, 1.0, (na, n_run)) * h[:, :1])[:, run]
    dd = (rng.uniform(-1.0, 1.0, (na, n_run)) * h[:, 1:])[:, run]
    dr[:, run == 1] = 0.0
    dr[:, run == 2] = -0.0
    ls = np.log(spot0)[:, None] + rng.normal(0.0, 0.05, (na, n))
    sig = vol[:, None] * scale
    v0 = sig.min(axis=1) - 0.01
    dv = (sig.max(axis=1) + 0.01 - v0) / (NV - 1)
    bcoef = rng.normal(0.0, 0.02, (na, NB - 1, 4))
    bcoef[..., 3] += 0.5 * w[:, None]  # ln(S*/K) about 0.5 above (calls) or below (puts): y > 0
    dbcoef = rng.normal(0.0, 0.005, (na, 4, NB - 1, 4))
    coef = rng.normal(0.0, 1.0, (na, NV - 1, NY - 1, 4, 4))
    coef[..., 3, 3] += 50.0  # a positive premium: the price is BSM plus the premium
    dcoef = rng.normal(0.0, 0.3, (na, 4, NV - 1, NY - 1, 4, 4))
    dcoef[0, 2:] = 0.0
    return dict(
        strike=strike, w=w, t=t, r=r, q=q, vol=vol, h=h, scale=scale, dr=dr, dd=dd, ls=ls, v0=v0, dv=dv,
        bcoef=bcoef, dbcoef=dbcoef, coef=coef, dcoef=dcoef, run=run,
    )  # fmt: skip


def _horner(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    return ((c[..., 0] * x + c[..., 1]) * x + c[..., 2]) * x + c[..., 3]


def _reference(c: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Per option and scenario: y (the kernel's formula, operation for operation), the rate and yield shifts in steps
    of the shifted grids, the vol cell and the coordinate in it."""
    m = np.arange(c["w"].size)[:, None]
    sig = c["vol"][:, None] * c["scale"]
    fv = (sig - c["v0"][:, None]) * (1.0 / c["dv"])[:, None]
    iv = np.clip(fv, 0.0, NV - 2.0).astype(np.int64)
    tv = fv - iv
    fb = fv * ((NB - 1) / (NV - 1))
    ib = np.clip(fb, 0.0, NB - 2.0).astype(np.int64)
    tb = fb - ib
    xr = c["dr"] * (1.0 / c["h"][:, :1])
    xq = np.where(c["h"][:, 1:] != 0.0, c["dd"] * (1.0 / np.where(c["h"][:, 1:] != 0.0, c["h"][:, 1:], 1.0)), 0.0)
    lstar = _horner(c["bcoef"][m, ib], tb)
    b = [_horner(c["dbcoef"][m, k, ib], tb) for k in range(4)]
    lstar = lstar + (xr * (b[0] + xr * b[1]) + xq * (b[2] + xq * b[3]))
    lk = np.log(c["strike"])[:, None]
    y = c["w"][:, None] * (lstar - c["ls"] + lk)
    return y, xr, xq, iv, tv


def _premium(c: dict[str, np.ndarray], y0: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The premium as the bicubic polynomial's 16 terms (each coefficient plus its rate and yield differences) summed
    in numpy, and the sum of the terms' magnitudes."""
    y, xr, xq, iv, tv = _reference(c)
    m = np.arange(c["w"].size)[:, None]
    fy = (y - y0[:, None]) * (1.0 / dy)[:, None]
    iy = np.clip(fy, 0.0, NY - 2.0).astype(np.int64)
    ty = fy - iy
    cell = c["coef"][m, iv, iy]  # [option, scenario, vol power, y power]
    diff = [c["dcoef"][m, k, iv, iy] for k in range(4)]
    terms = (
        cell
        + xr[..., None, None] * (diff[0] + xr[..., None, None] * diff[1])
        + xq[..., None, None] * (diff[2] + xq[..., None, None] * diff[3])
    )
    powers = tv[..., None, None] ** (3 - np.arange(4))[:, None] * ty[..., None, None] ** (3 - np.arange(4))[None, :]
    return (terms * powers).sum(axis=(-2, -1)), (np.abs(terms) * powers).sum(axis=(-2, -1))


def _grid_values(
    kernel: Any, c: dict[str, np.ndarray], y0: np.ndarray, dy: np.ndarray, shifted: bool, runs: bool, mode: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``kernel`` (``_american_grid_values`` or a build of its source) on case ``c``: its values and NaN counts."""
    na, n = c["ls"].shape
    lk = np.log(c["strike"])
    carry = (c["r"] - c["q"]) * c["t"]
    dq = np.exp(-c["q"] * c["t"])
    kdr = c["strike"] * np.exp(-c["r"] * c["t"])
    values = np.empty((na, n))
    n_nan = np.empty(na, dtype=np.intp)
    zeros = np.zeros((na, n))
    kernel(
        np.exp(c["ls"]), c["ls"], c["scale"].copy(), zeros, zeros, np.zeros((1, n)), 0, c["dr"].copy(),
        c["dd"].copy(), np.bool_(shifted), np.bool_(runs), 0, np.arange(na), lk, c["strike"], c["t"], np.sqrt(c["t"]),
        carry, c["vol"], c["w"], dq, kdr, mode, y0, dy, c["v0"], c["dv"], c["coef"], c["bcoef"],
        c["h"], c["dcoef"], c["dbcoef"], values, n_nan, 0, na,
    )  # fmt: skip
    return values, n_nan


def _read(c: dict[str, np.ndarray], y0: np.ndarray, dy: np.ndarray, runs: bool) -> np.ndarray:
    mode = np.ones(c["ls"].shape[0], dtype=np.int8)
    values, n_nan = _grid_values(se._american_grid_values, c, y0, dy, True, runs, mode)
    assert not n_nan.any()
    return values


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_folded_read_is_bsm_plus_the_bicubic_premium_to_rounding(seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = _case(rng, na=7, n=600)
    y = _reference(c)[0]
    assert np.all(y > 0.0)
    y0 = y.min(axis=1) - 1e-3
    dy = (y.max(axis=1) + 1e-3 - y0) / (NY - 1)
    got = _read(c, y0, dy, runs=True)
    # BSM at the shifted rate and yield by the kernels' own formula (``_bsm_kernel``), the premium as above
    na, n = got.shape
    r = c["r"][:, None] + c["dr"]
    q = c["q"][:, None] + c["dd"]
    t = np.broadcast_to(c["t"][:, None], (na, n))
    k = np.broadcast_to(c["strike"][:, None], (na, n))
    euro = np.empty(na * n)
    se._bsm_kernel(
        np.exp(c["ls"]).ravel(), c["ls"].ravel(), np.log(k).ravel(), ((r - q) * t).ravel(), np.sqrt(t).ravel(),
        (c["vol"][:, None] * c["scale"]).ravel(), np.broadcast_to(c["w"][:, None], (na, n)).ravel(),
        np.exp(-q * t).ravel(), (k * np.exp(-r * t)).ravel(), euro,
    )  # fmt: skip
    premium, size = _premium(c, y0, dy)
    assert np.all(premium > 1.0)
    err = np.abs(got - euro.reshape(na, n) - premium)
    assert np.all(err <= 1e-13 * (size + np.abs(got)))
    # and the cells a run reaches are folded once in runs: the same bits as folding every scenario
    assert got.tobytes() == _read(c, y0, dy, runs=False).tobytes()
    # runs that reach several cells (each folded once a run) and cells reached again in a run
    iy = np.clip((y - y0[:, None]) / dy[:, None], 0.0, NY - 2.0).astype(np.int64)
    cells = {(a, c["run"][j], iy[a, j]) for a in range(na) for j in range(n)}
    assert na * (c["run"][-1] + 1) * 2 < len(cells) < na * n / 2
