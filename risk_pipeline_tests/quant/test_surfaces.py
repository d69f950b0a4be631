"""Surface assembly: OTM selection, vega weights, calendar check restricted to the quoted overlap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from risk_pipeline.quant.surfaces import (
    DEFAULT_GRID,
    FIT_LEGACY,
    UnderlyingSurface,
    black_vega_weight,
    calendar_on_quoted_overlap,
    fit_underlying,
    fit_underlyings,
    otm_mask,
)
from risk_pipeline.quant.svi import SviFit, SviParams, SviSurface, butterfly_check, svi_implied_vol


def _fit(a: float, b: float, rho: float, m: float, sigma: float, t: float) -> SviFit:
    return SviFit(a, b, rho, m, sigma, t, 0.0, 10, "test", True, True, 0.0)


def test_otm_mask_and_vega_weight() -> None:
    assert otm_mask([90, 110, 90, 110], 100.0, [True, True, False, False]).tolist() == [False, True, True, False]
    k, w = np.array([-0.2, 0.0, 0.3]), np.array([0.04, 0.04, 0.04])
    d1 = -k / np.sqrt(w) + 0.5 * np.sqrt(w)
    np.testing.assert_allclose(black_vega_weight(k, w), norm.pdf(d1))


def test_calendar_violation_only_in_the_wings_is_not_a_quoted_arbitrage() -> None:
    short = _fit(0.002, 0.10, 0.6, 0.0, 0.05, 0.05)  # steep right wing
    long_ = _fit(0.010, 0.02, -0.5, 0.0, 0.10, 0.25)
    surface = SviSurface((short, long_))
    k = np.linspace(-0.6, 0.6, 121)
    crossing = k[svi_implied_vol(short, k, 0.05) ** 2 * 0.05 > svi_implied_vol(long_, k, 0.25) ** 2 * 0.25]
    assert crossing.min() > 0.05  # the slices cross only far out of the money
    assert not surface.calendar_check(k).arbitrage_free
    assert calendar_on_quoted_overlap(surface, ((-0.05, 0.03), (-0.2, 0.2))) == (True, True)
    assert calendar_on_quoted_overlap(surface, ((-0.05, 0.5), (-0.2, 0.5))) == (False, False)


def test_fit_underlying_recovers_generating_smiles_and_sorts_expiries() -> None:
    truth = {0.5: SviParams(0.02, 0.1, -0.5, 0.0, 0.2), 0.1: SviParams(0.004, 0.08, -0.4, 0.0, 0.1)}
    labels, t, k, iv = [], [], [], []
    for label, (tt, p) in zip(("B", "A"), truth.items(), strict=True):
        kk = np.linspace(-0.3, 0.2, 15)
        labels += [label] * kk.size
        t += [tt] * kk.size
        k += kk.tolist()
        iv += svi_implied_vol(p, kk, tt).tolist()
    surface = fit_underlying(labels, t, k, iv)
    assert surface.expiry_labels == ("A", "B")
    for fit, tt in zip(surface.fits, (0.1, 0.5), strict=True):
        kk = np.linspace(-0.3, 0.2, 7)
        np.testing.assert_allclose(svi_implied_vol(fit, kk, tt), svi_implied_vol(truth[tt], kk, tt), atol=1e-6)
    assert surface.quoted_range == ((-0.3, 0.2), (-0.3, 0.2))


def test_wing_arbitrage_of_independent_fits_is_removed_by_the_constrained_pass() -> None:
    # quotes only near the money: the short slice's right wing crosses the long one near ln(K/F) = 0.32
    short = SviParams(0.002, 0.05, 0.3, 0.0, 0.05)
    long_ = SviParams(0.020, 0.02, -0.6, 0.0, 0.10)
    k_grid = np.linspace(-0.6, 0.6, 121)
    assert np.any(svi_implied_vol(short, k_grid, 0.05) ** 2 * 0.05 > svi_implied_vol(long_, k_grid, 0.25) ** 2 * 0.25)
    labels, t, k, iv = [], [], [], []
    quotes = (("A", 0.05, short, np.linspace(-0.08, 0.08, 9)), ("B", 0.25, long_, np.linspace(-0.2, 0.2, 15)))
    for label, tt, p, kk in quotes:
        labels += [label] * kk.size
        t += [tt] * kk.size
        k += kk.tolist()
        iv += svi_implied_vol(p, kk, tt).tolist()
    surface = fit_underlying(labels, t, k, iv)
    assert surface.calendar.arbitrage_free  # on the whole stored grid, wings included
    assert all(f.butterfly_arbitrage_free for f in surface.fits)
    assert all(f.rmse_vol_points < 0.5 for f in surface.fits)  # still close to the quotes
    assert "arbitrage_constrained" in surface.fits[1].method


# ------------------------------------------------------------------------------------------ batched method
@pytest.fixture(scope="module")
def sample_slices() -> list[tuple[str, tuple[np.ndarray, ...]]]:
    """fit_underlying inputs of the first underlyings of the sample universe (synthetic, seed 7)."""
    import datetime as dt

    from risk_pipeline.defs.volatility.surfaces import implied_vol_frame
    from risk_pipeline.sources.synthetic import SyntheticSource

    source = SyntheticSource(seed=7, n_underlyings=50)
    day = dt.date(2026, 11, 20)
    quotes = source.option_quotes(day)
    keep = sorted(quotes["underlying"].unique())[:SAMPLE_UNDERLYINGS]
    quotes = quotes[quotes["underlying"].isin(keep)].reset_index(drop=True)
    iv = implied_vol_frame(quotes, source.rates_curve(day, day), source.dividend_yields(day, day))
    usable = iv[(iv["status"] == "OK") & otm_mask(iv["strike"], iv["forward"], iv["option_type"] == "C")]
    return [
        (
            str(u),
            (
                g["expiry"].to_numpy(),
                g["time_to_expiry_years"].to_numpy(float),
                np.log(g["strike"].to_numpy(float) / g["forward"].to_numpy(float)),
                g["implied_vol"].to_numpy(float),
            ),
        )
        for u, g in usable.groupby("underlying", sort=True)
    ]


SAMPLE_UNDERLYINGS = 6


def _independent_flags(surface: UnderlyingSurface) -> tuple[list[bool], list[bool]]:
    """Butterfly (Durrleman g by finite differences of w on each slice's grid) and calendar flags
    (w non-decreasing in expiry at every point of DEFAULT_GRID, both slices of a crossing pair flagged)."""
    butterfly = []
    for f in surface.fits:
        k = np.linspace(-1.5, 1.5, 201) * np.sqrt(f.time_years)
        h = 1e-5

        def w_of(x: np.ndarray, f: SviFit = f) -> np.ndarray:
            return f.a + f.b * (f.rho * (x - f.m) + np.sqrt((x - f.m) ** 2 + f.sigma**2))

        w, w1 = w_of(k), (w_of(k + h) - w_of(k - h)) / (2 * h)
        w2 = (w_of(k + h) - 2 * w + w_of(k - h)) / h**2
        g = (1 - k * w1 / (2 * w)) ** 2 - w1**2 / 4 * (1 / w + 0.25) + w2 / 2
        butterfly.append(bool(g.min() >= -1e-6))
    grid = DEFAULT_GRID
    w = np.array([svi_implied_vol(f, grid, f.time_years) ** 2 * f.time_years for f in surface.fits])
    calendar = [True] * len(surface.fits)
    for i in range(len(surface.fits) - 1):
        if np.any(w[i] - w[i + 1] > 1e-9):
            calendar[i] = calendar[i + 1] = False
    return butterfly, calendar


def test_batched_fit_is_as_good_as_legacy_on_sample_slices(sample_slices: list) -> None:
    legacy = [fit_underlying(*args, method=FIT_LEGACY) for _, args in sample_slices]
    batched = fit_underlyings([args for _, args in sample_slices])
    assert all(isinstance(b, UnderlyingSurface) for b in batched)
    worse = []
    for old, new in zip(legacy, batched, strict=True):
        assert new.expiry_labels == old.expiry_labels and new.quoted_range == old.quoted_range
        worse += [n.rmse_vol_points - o.rmse_vol_points for o, n in zip(old.fits, new.fits, strict=True)]
        # no more arbitrage than the legacy method leaves, and every slice within the asset's RMSE bound
        assert sum(not f.butterfly_arbitrage_free for f in new.fits) <= sum(
            not f.butterfly_arbitrage_free for f in old.fits
        )
        assert sum(not ok for ok in new.calendar.per_slice_arbitrage_free) <= sum(
            not ok for ok in old.calendar.per_slice_arbitrage_free
        )
        assert max(f.rmse_vol_points for f in new.fits) < 2.0
    worse_arr = np.array(worse)
    assert worse_arr.size >= 30
    assert np.mean(worse_arr <= 0.05) >= 0.95
    assert np.median(worse_arr) <= 1e-3


def test_batched_flags_match_independent_checks(sample_slices: list) -> None:
    for surface in fit_underlyings([args for _, args in sample_slices]):
        assert isinstance(surface, UnderlyingSurface)
        butterfly, calendar = _independent_flags(surface)
        assert [f.butterfly_arbitrage_free for f in surface.fits] == butterfly
        assert list(surface.calendar.per_slice_arbitrage_free) == calendar
        for f in surface.fits:
            assert f.min_durrleman_g == pytest.approx(butterfly_check(f, f.time_years)[0], abs=1e-12)


def test_one_batch_equals_one_underlying_at_a_time(sample_slices: list) -> None:
    together = fit_underlyings([args for _, args in sample_slices[:3]])
    for (_, args), surface in zip(sample_slices[:3], together, strict=True):
        alone = fit_underlying(*args)
        assert isinstance(surface, UnderlyingSurface)
        # the same problems; only floating-point summation order may differ with the batch's shape
        assert [f.method for f in alone.fits] == [f.method for f in surface.fits]
        for a, b in zip(alone.fits, surface.fits, strict=True):
            assert a.rmse_vol_points == pytest.approx(b.rmse_vol_points, abs=1e-6)
            assert a.butterfly_arbitrage_free == b.butterfly_arbitrage_free
        np.testing.assert_allclose(alone.grid.implied_vol, surface.grid.implied_vol, atol=1e-6)
        assert alone.calendar.per_slice_arbitrage_free == surface.calendar.per_slice_arbitrage_free


def test_fit_underlyings_reports_an_underlying_without_quotes_and_fits_the_rest() -> None:
    k = np.linspace(-0.2, 0.2, 9)
    iv = svi_implied_vol(SviParams(0.01, 0.1, -0.3, 0.0, 0.1), k, 0.25)
    good = (["A"] * 9, [0.25] * 9, k, iv)
    bad = (["A"] * 9, [0.25] * 9, k, np.full(9, np.nan))
    out = fit_underlyings([bad, good])
    assert isinstance(out[0], ValueError) and isinstance(out[1], UnderlyingSurface)
    # quotes so far out of the money that every vega weight underflows to zero: the slice fit rejects them
    far = (["A"] * 5, [0.25] * 5, np.linspace(8.0, 9.0, 5), np.full(5, 0.01))
    out = fit_underlyings([good, far, good])
    assert isinstance(out[1], ValueError) and "weights" in str(out[1])
    assert isinstance(out[0], UnderlyingSurface) and out[0].fits == out[2].fits
    with pytest.raises(ValueError, match="method"):
        fit_underlying(*good, method="nope")


def test_legacy_method_removes_the_wing_arbitrage_too() -> None:
    short = SviParams(0.002, 0.05, 0.3, 0.0, 0.05)
    long_ = SviParams(0.020, 0.02, -0.6, 0.0, 0.10)
    labels, t, k, iv = [], [], [], []
    quotes = (("A", 0.05, short, np.linspace(-0.08, 0.08, 9)), ("B", 0.25, long_, np.linspace(-0.2, 0.2, 15)))
    for label, tt, p, kk in quotes:
        labels += [label] * kk.size
        t += [tt] * kk.size
        k += kk.tolist()
        iv += svi_implied_vol(p, kk, tt).tolist()
    legacy = fit_underlying(labels, t, k, iv, method=FIT_LEGACY)
    batched = fit_underlying(labels, t, k, iv)
    for surface in (legacy, batched):
        assert surface.calendar.arbitrage_free
        assert all(f.butterfly_arbitrage_free for f in surface.fits)
    for old, new in zip(legacy.fits, batched.fits, strict=True):
        assert new.rmse_vol_points <= old.rmse_vol_points + 0.05


def test_refit_of_a_slice_fitted_through_every_quote_keeps_the_quotes() -> None:
    # a 1-day weekly of a 11 %-vol name with five out-of-the-money quotes (strikes 244-248, forward 246.53):
    # the free fit passes through all five (five parameters) with butterfly arbitrage in the extrapolated wings
    t = 0.0027682648401826486
    k = np.log(np.array([244.0, 245.0, 246.0, 247.0, 248.0]) / 246.526269)
    iv = np.array([0.149000, 0.131042, 0.116400, 0.109203, 0.113987])
    free = fit_underlying(["1d"] * 5, [t] * 5, k, iv, method=FIT_LEGACY)  # legacy path: its own SLSQP
    batched = fit_underlying(["1d"] * 5, [t] * 5, k, iv)
    butterfly, _ = _independent_flags(batched)
    assert butterfly == [True] and batched.fits[0].butterfly_arbitrage_free
    assert "arbitrage_constrained" in batched.fits[0].method
    # the quotes are themselves free of arbitrage, so the constrained fit still goes through them
    assert batched.fits[0].rmse_vol_points < 0.05
    assert batched.fits[0].rmse_vol_points <= free.fits[0].rmse_vol_points + 0.01
