"""The spots of one boundary priced together (``put_prices_from_boundary``: ``row_premiums``, ``premiums`` without
Greeks) leave out the (spot, point) integrands with ``d- >= _ZERO_D``: both normal cdfs are 0.0 exactly there, and
the prices are those of ``put_from_boundary`` (every integrand evaluated, one spot at a time) bit for bit, on spots
from the exercise region to far above the boundary (most of their first points' integrands left out), huge and
infinite spots and NaN, positive and negative yields."""

from __future__ import annotations

import numpy as np
from numba import njit

from risk_pipeline.quant import american_alo as am
from risk_pipeline.quant.special import exp_minus_half_square


@njit(cache=False)
def _zero_terms(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.empty(d.size)
    n = np.empty(d.size)
    for i in range(d.size):
        e[i] = exp_minus_half_square(d[i])
        n[i] = am._ncdf_vec(-d[i], e[i])
    return e, n


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64)


def test_both_cdfs_are_zero_from_the_threshold_up_to_infinity() -> None:
    lo = am._ZERO_D
    d = np.concatenate(
        [
            [lo, np.nextafter(lo, np.inf), 38.75, 40.0, 1e3, 1e10, np.nextafter(1e10, np.inf), 1e11, 1e300],
            [np.finfo(float).max, np.inf],
            np.random.default_rng(5).uniform(lo, 1e4, 20_000),
        ]
    )
    e, n = _zero_terms(d)
    np.testing.assert_array_equal(_bits(e), np.zeros(d.size, dtype=np.int64))  # +0.0
    np.testing.assert_array_equal(_bits(n), np.zeros(d.size, dtype=np.int64))
    # just below it the exponential is not (always) zero: the threshold is not far above where it has to be
    e_below, _ = _zero_terms(np.array([38.5]))
    assert e_below[0] > 0.0


def _d_minus(x: np.ndarray, bounds: tuple[np.ndarray, ...], s: np.ndarray, tab: tuple[np.ndarray, ...]) -> np.ndarray:
    """``d-`` of every (spot, point) pair as ``put_prices_from_boundary`` forms it (numpy, to within rounding)."""
    pr, pq, sig, t, x_max = bounds
    pc, pmt = tab[6], tab[8]
    v = sig * np.sqrt(t)
    root = np.sqrt(np.maximum((s * s) @ pmt, 0.0))
    sd = v[:, None] * pc[None, :]
    with np.errstate(all="ignore"):
        num = np.log(x / x_max[:, None])[:, :, None] + root[:, None, :]
        num = num + ((pr - pq)[:, None] * t[:, None] * pc[None, :] ** 2)[:, None, :]
        return num / sd[:, None, :] - 0.5 * sd[:, None, :]


def test_spots_priced_together_leave_out_the_zero_pairs_with_the_spot_by_spot_bits() -> None:
    rng = np.random.default_rng(47)
    n, nu = 240, 13
    pr = rng.uniform(0.0, 0.10, n)
    pq = rng.uniform(-0.03, 0.10, n)
    sig = np.exp(rng.uniform(np.log(0.03), np.log(1.5), n))
    t = rng.integers(1, 3 * 365 + 1, n) / 365.0
    x_max = am.exercise_limits(pr, pq)
    bounds = (pr, pq, sig, t, x_max)
    v = sig * np.sqrt(t)
    for tab in (am.GRID_TABLES, am.EXACT_TABLES):
        s, steps, b_t = am.solve_boundaries(pr, pq, sig, t, x_max, am.NEWTON_STEP_TOL, tab)
        assert np.all(steps > 0)
        # below the boundary, close above it (the moved split) and up to 45 total deviations above it (where the
        # European price underflows and the integrands just below the threshold are all the price there is)
        y = np.linspace(-0.05, 45.0, nu)[None, :] * v[:, None] * rng.uniform(0.9, 1.1, (n, nu))
        y[:, 1] = rng.uniform(0.0, 1e-3, n) * v
        x = b_t[:, None] * np.exp(y)
        x[::7, 5] = 1e300
        x[::11, 6] = np.inf
        x[::13, 7] = np.nan
        d_minus = _d_minus(x, bounds, s, tab)
        tabulated = np.isfinite(x) & (x > b_t[:, None]) & (x < 1e300)
        share = np.mean(d_minus[tabulated] >= am._ZERO_D + 1.0)
        assert 0.1 < share < 0.8, share
        got = am.row_premiums(x, bounds, s, tab)
        want = am.premiums(x.ravel(), np.repeat(np.arange(n), nu), bounds, s, tab, True)[0].reshape(n, nu)
        np.testing.assert_array_equal(_bits(got), _bits(want))
        assert np.isfinite(got[tabulated]).all()
