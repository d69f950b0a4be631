"""Surface assembly: OTM selection, vega weights, calendar check restricted to the quoted overlap."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from risk_pipeline.quant.surfaces import black_vega_weight, calendar_on_quoted_overlap, fit_underlying, otm_mask
from risk_pipeline.quant.svi import SviFit, SviParams, SviSurface, svi_implied_vol


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
