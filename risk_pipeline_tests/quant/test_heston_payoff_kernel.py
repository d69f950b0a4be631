"""The Heston calibration's COS payoff coefficients (``_SurfaceCos._payoff``, compiled element by element) against the
numpy formulation they replaced (``_payoff_numpy``, bit for bit) and against the integrals they stand for (scipy's
``quad``), and the round-two surface built from an interval already taken against one that takes its own."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from risk_pipeline.quant.heston import _SurfaceCos, _to_p, cos_interval


def _surface(
    seed: int, quotes_per_slice: int = 15, outside: bool = True
) -> tuple[_SurfaceCos, np.ndarray, np.ndarray, np.ndarray]:
    """A random surface of 4 slices; ``outside``: two log strikes far outside every interval (clipped to a or b)."""
    rng = np.random.default_rng(seed)
    t_slice = np.sort(rng.choice([1 / 365, 3 / 365, 14 / 365, 0.1, 0.4, 1.0, 3.0], size=4, replace=False))
    slice_of = rng.permutation(np.repeat(np.arange(t_slice.size), quotes_per_slice))
    sd = np.sqrt(t_slice[slice_of]) * rng.uniform(0.1, 0.8)
    lk = rng.normal(0.0, 2.0, slice_of.size) * sd
    lk[:3] = [0.0, -0.0, 1e-300]  # at the money: put side (log strike not above 0), and the smallest call
    if outside:
        lk[3:5] = [-80.0, 80.0]
    call = (lk > 0.0).astype(np.float64)
    x = np.array(
        [
            math.log(rng.uniform(0.01, 0.3)),
            math.log(rng.uniform(0.2, 6.0)),
            math.log(rng.uniform(0.01, 0.3)),
            math.log(rng.uniform(0.1, 2.5)),
            math.atanh(rng.uniform(-0.95, 0.5) / 0.999),
        ]
    )
    surf = _SurfaceCos(t_slice, slice_of, lk, call, _to_p(x)[None, :], 12.0, 1e-10)
    return surf, slice_of, lk, call


def _put_integrand(x: float, k: float, freq: float, a: float) -> float:
    return (math.exp(k) - math.exp(x)) * math.cos(freq * (x - a))


def _call_integrand(x: float, k: float, freq: float, a: float) -> float:
    return (1.0 - math.exp(k - x)) * math.cos(freq * (x - a))


@pytest.mark.parametrize("seed", range(8))
def test_compiled_payoff_equals_the_numpy_formulation_bit_for_bit(seed: int) -> None:
    surf, _, lk, call = _surface(seed)
    for s, idx in enumerate(surf.order):
        got = surf._payoff(s, lk[idx], call[idx])
        ref = surf._payoff_numpy(s, lk[idx], call[idx])
        assert got[0].tobytes() == ref[0].tobytes()
        assert got[1].tobytes() == ref[1].tobytes()
        # and what the surface keeps is that
        assert surf.payoff[s][0].tobytes() == ref[0].tobytes()
        assert surf.payoff[s][1].tobytes() == ref[1].tobytes()


def test_payoff_coefficients_are_the_cosine_integrals_of_the_payoffs() -> None:
    """Oracle: ``V_k = 2 / (b - a) int payoff(x) cos(u_k (x - a)) dx`` (halved at k = 0), put ``(e^k - e^x)^+`` over
    the pricing measure's interval, call ``(1 - e^(k - x))^+`` (share measure), by adaptive quadrature."""
    surf, _, lk, call = _surface(11, quotes_per_slice=6, outside=False)
    for s, idx in enumerate(surf.order):
        a, b, u = float(surf.a[s]), float(surf.b[s]), surf.k[s]
        put_v, call_v = surf._payoff(s, lk[idx], call[idx])
        for row, k in enumerate(lk[idx]):
            otm_call = k > 0.0
            c = min(max(k, a), b)
            for term in (0, 1, 2, 7, u.size // 3, u.size - 1):
                freq = float(u[term])
                if otm_call:
                    value = quad(_call_integrand, c, b, args=(float(k), freq, a), limit=400)[0]
                else:
                    value = quad(_put_integrand, a, c, args=(float(k), freq, a), limit=400)[0]
                expected = 2.0 / (b - a) * value * (0.5 if term == 0 else 1.0)
                got, other = (call_v, put_v) if otm_call else (put_v, call_v)
                assert got[row, term] == pytest.approx(expected, rel=1e-7, abs=1e-10)
                assert other[row, term] == 0.0


def test_surface_from_an_interval_already_taken_equals_one_that_takes_its_own() -> None:
    surf, slice_of, lk, call = _surface(4)
    p = _to_p(np.array([math.log(0.05), math.log(1.2), math.log(0.06), math.log(0.7), -0.6]))[None, :]
    own = _SurfaceCos(surf.t, slice_of, lk, call, p, 12.0, 1e-10)
    given = _SurfaceCos(surf.t, slice_of, lk, call, p, 12.0, 1e-10, cos_interval(surf.t, p, 12.0, 1e-10))
    for name in ("a", "b", "n"):
        assert getattr(own, name).tobytes() == getattr(given, name).tobytes()
    rows = np.repeat(p, 3, axis=0) * np.array([[1.0], [1.01], [0.99]])
    assert own.prices(rows).tobytes() == given.prices(rows).tobytes()
