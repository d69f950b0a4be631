"""SABR smiles per expiry: Hagan et al. (2002) and Obloj (2008) lognormal vols, calibration, density check.

Model (Hagan, Kumar, Lesniewski & Woodward 2002, "Managing smile risk", Wilmott): the forward ``F`` and its
volatility ``a`` follow ``dF = a F^beta dW``, ``da = nu a dZ``, ``dW dZ = rho dt``, ``a(0) = alpha``.

* ``sabr_hagan_vol`` is their lognormal implied-vol expansion (eq. 2.17a)::

      sigma = alpha / ((F K)^{(1-b)/2} [1 + (1-b)^2 L^2 / 24 + (1-b)^4 L^4 / 1920]) * z / x(z) * (1 + T c)
      z = nu / alpha (F K)^{(1-b)/2} L,   L = ln(F / K),
      x(z) = ln((sqrt(1 - 2 rho z + z^2) + z - rho) / (1 - rho)),
      c = (1-b)^2 alpha^2 / (24 (F K)^{1-b}) + rho b nu alpha / (4 (F K)^{(1-b)/2}) + (2 - 3 rho^2) nu^2 / 24

  (the formula of QuantLib's ``sabrVolatility``, which the tests compare against).
* ``sabr_obloj_vol`` keeps the ``1 + T c`` correction but replaces the leading term by the exact short-expiry
  limit of Berestycki, Busca & Florent (2004), as Obloj (2008, "Fine-tune your smile: correction to Hagan et
  al.", Wilmott) recommends: ``sigma_0 = nu L / x(z)`` with ``z = nu (F^{1-b} - K^{1-b}) / (alpha (1-b))``
  (``z = nu L / alpha`` for ``b = 1``). It differs from Hagan's only for ``b < 1``, where Hagan's leading term
  is wrong in the wings as the expiry shrinks; the tests show it converges to the BBF limit, and both stay
  within about half a vol point of QuantLib's SABR PDE price at one year (beta 0.5, 60-170 % strikes).

Calibration (``calibrate_sabr``): ``beta`` fixed per underlying (1 by default for equities), ``(alpha, rho, nu)``
by bounded least squares (``scipy.optimize.least_squares``, trust-region reflective; ``nu`` at most
``nu_upper_bound(t)``) on the implied vols of the out-of-the-money mids, each residual weighted by the square root
of its Black vega (as the SVI fit is), from a start where ``alpha`` reproduces the quote nearest the money. Every input
and the fit quality (RMSE in vol points) are on the result. ``density_check`` tests the risk-neutral density
implied by the smile (the second strike derivative of undiscounted Black call prices, Breeden & Litzenberger 1978)
on a strike grid, the no-butterfly-arbitrage condition, as the SVI slices have theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares
from scipy.special import ndtr

from risk_pipeline.quant._numba import FloatArray

_SQRT_2PI = np.sqrt(2 * np.pi)  # scipy.stats' _norm_pdf_C
#: ``least_squares``' relative step of 2-point differences (``_numdiff._eps_for_method``) and the diagonal of 3x3.
_SQRT_EPS = np.finfo(np.float64).eps ** 0.5
_DIAG = np.arange(3)

#: Bounds of the calibrated parameters: alpha > 0, |rho| < 1, ``0 <= nu <= nu_upper_bound(t)``.
RHO_BOUND = 0.999
NU_MAX = 10.0
#: The expansions are in ``nu^2 T``; short slices may use ``nu`` up to ``sqrt(NU_SQUARED_T_MAX / T)`` (27 at
#: one day, 10.2 at one week). A flat cap of 10 held every 1-day slice of the demo at the bound (median RMSE
#: 0.42 vol points against 0.05 unbounded, where nu came out at 10-17).
NU_SQUARED_T_MAX = 2.0


def nu_upper_bound(t: float) -> float:
    """Upper bound of ``nu`` in the calibration of a slice expiring in ``t`` years: ``max(NU_MAX, sqrt(2 / t))``."""
    return max(NU_MAX, math.sqrt(NU_SQUARED_T_MAX / t))


#: |z| below this uses the series of z / x(z) (no 0/0 at the money).
_SMALL_Z = 1e-7


@dataclass(frozen=True)
class SabrFit:
    """A calibrated SABR slice with its inputs and fit quality."""

    alpha: float
    beta: float
    rho: float
    nu: float
    forward: float
    time_years: float
    rmse_vol_points: float
    n_quotes: int
    converged: bool
    formula: str


def _z_over_x(z: FloatArray, rho: float) -> FloatArray:
    """``z / x(z)``, with its series ``1 - rho z / 2`` near ``z = 0``."""
    small = np.abs(z) < _SMALL_Z
    zz = np.where(small, 1.0, z)
    x = np.log((np.sqrt(1.0 - 2.0 * rho * zz + zz * zz) + zz - rho) / (1.0 - rho))
    return np.where(small, 1.0 - 0.5 * rho * z, zz / x)


def _correction_from(
    den_alpha: FloatArray, den_rho: FloatArray, t: float, alpha: float, beta: float, rho: float, nu: float
) -> FloatArray:
    """The ``1 + T c`` factor shared by both formulas (module docstring), from its parameter-free denominators
    ``24 (F K)^(1-b)`` and ``4 (F K)^((1-b)/2)``."""
    c = (
        (1.0 - beta) ** 2 * alpha * alpha / den_alpha
        + rho * beta * nu * alpha / den_rho
        + (2.0 - 3.0 * rho * rho) * nu * nu / 24.0
    )
    return 1.0 + t * c


@dataclass(frozen=True)
class _Smile:
    """The parts of a formula's smile that depend on the strikes, forward and ``beta`` only: ``vol = alpha / lead
    * z / x(z) * (1 + T c)`` with ``z = nu / alpha * z_scale * log_fk`` and ``c`` over ``den_alpha``, ``den_rho``
    (``_correction_from``). Computed once per slice, the same operations as each formula's own lines."""

    log_fk: FloatArray
    z_scale: FloatArray
    lead: FloatArray
    den_alpha: FloatArray
    den_rho: FloatArray


def _smile(strike: ArrayLike, forward: float, beta: float, formula: str) -> _Smile:
    """``_Smile`` of ``formula`` (``"hagan"`` or ``"obloj"``) at ``strike``."""
    k = np.asarray(strike, dtype=np.float64)
    log_fk = np.log(forward / k)
    b1 = 1.0 - beta
    if formula == "hagan":
        fk_half = (forward * k) ** (0.5 * (1.0 - beta))
        z_scale = fk_half
        lead = fk_half * (1.0 + b1 * b1 * log_fk * log_fk / 24.0 + b1**4 * log_fk**4 / 1920.0)
    elif b1 == 0.0:
        z_scale = lead = np.full_like(log_fk, 1.0)  # (F^{1-b} - K^{1-b}) / ((1-b) L) -> 1 at b = 1
    else:
        # (F^{1-b} - K^{1-b}) / ((1 - b) L) = F^{1-b} (1 - exp(-(1-b) L)) / ((1-b) L), stable near L = 0
        small = np.abs(b1 * log_fk) < 1e-12
        safe = np.where(small, 1.0, b1 * log_fk)
        z_scale = lead = forward**b1 * np.where(small, 1.0, -np.expm1(-safe) / safe)
    fk = forward * k
    return _Smile(log_fk, z_scale, lead, 24.0 * fk ** (1.0 - beta), 4.0 * fk ** (0.5 * (1.0 - beta)))


def _smile_vol(smile: _Smile, t: float, alpha: float, beta: float, rho: float, nu: float) -> FloatArray:
    """The smile's vols for parameters (scalars, or columns: one smile per row)."""
    z = nu / alpha * smile.z_scale * smile.log_fk
    corr = _correction_from(smile.den_alpha, smile.den_rho, t, alpha, beta, rho, nu)
    return alpha / smile.lead * _z_over_x(z, rho) * corr


def sabr_hagan_vol(
    strike: ArrayLike, forward: float, t: float, alpha: float, beta: float, rho: float, nu: float
) -> FloatArray:
    """Hagan et al. (2002) lognormal implied vol at each strike (module docstring)."""
    return _smile_vol(_smile(strike, forward, beta, "hagan"), t, alpha, beta, rho, nu)


def sabr_obloj_vol(
    strike: ArrayLike, forward: float, t: float, alpha: float, beta: float, rho: float, nu: float
) -> FloatArray:
    """Obloj (2008): the exact short-expiry leading term of Berestycki et al. times Hagan's correction
    (``sigma_0 = nu L / x(z) = (nu L / z) (z / x(z)) = alpha / ratio * z / x(z)``,
    ``ratio = (F^{1-b} - K^{1-b}) / ((1-b) L)``, ``z = nu / alpha * ratio * L``)."""
    return _smile_vol(_smile(strike, forward, beta, "obloj"), t, alpha, beta, rho, nu)


FORMULAS = {"hagan": sabr_hagan_vol, "obloj": sabr_obloj_vol}


def sabr_vol(fit: SabrFit, strike: ArrayLike, forward: float | None = None) -> FloatArray:
    """The fitted smile at ``strike``; with another ``forward`` it is the smile after a spot move with the same
    parameters (SABR's backbone: the "sticky-model" dynamic the risk layers can use)."""
    f = fit.forward if forward is None else forward
    return FORMULAS[fit.formula](strike, f, fit.time_years, fit.alpha, fit.beta, fit.rho, fit.nu)


def _black_vega_weight(strike: FloatArray, forward: float, t: float, vol: FloatArray) -> FloatArray:
    """Undiscounted Black vega per unit forward, ``phi(d1) sqrt(T)``."""
    sd = np.maximum(vol * math.sqrt(t), 1e-12)
    d1 = np.log(forward / strike) / sd + 0.5 * sd
    # scipy.stats.norm.pdf's own formula without its per-call argument handling (same bits)
    return np.exp(-(d1**2) / 2.0) / _SQRT_2PI * math.sqrt(t)


def calibrate_sabr(
    strike: ArrayLike,
    implied_vol: ArrayLike,
    forward: float,
    t: float,
    beta: float = 1.0,
    formula: str = "obloj",
) -> SabrFit:
    """Fit ``(alpha, rho, nu)`` of one expiry to implied vols (OTM mids), ``beta`` fixed (module docstring)."""
    if formula not in FORMULAS:
        raise ValueError(f"formula must be one of {sorted(FORMULAS)}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError("beta must be in [0, 1]")
    k = np.asarray(strike, dtype=np.float64).reshape(-1)
    v = np.asarray(implied_vol, dtype=np.float64).reshape(-1)
    ok = np.isfinite(k) & np.isfinite(v) & (k > 0.0) & (v > 0.0)
    k, v = k[ok], v[ok]
    if k.size < 3:
        raise ValueError(f"SABR needs at least 3 quotes with a positive vol, got {k.size}")
    if not (forward > 0.0 and t > 0.0):
        raise ValueError("forward and time to expiry must be positive")
    weight = np.sqrt(_black_vega_weight(k, forward, t, v))
    weight /= weight.max()
    smile = _smile(k, forward, beta, formula)
    atm = int(np.argmin(np.abs(np.log(k / forward))))
    alpha0 = float(v[atm] * forward ** (1.0 - beta))
    x0 = np.array([alpha0, 0.0, 0.5])
    lower = np.array([1e-8, -RHO_BOUND, 0.0])
    upper = np.array([np.inf, RHO_BOUND, nu_upper_bound(t)])
    last: list[tuple[bytes, FloatArray]] = [(b"", v)]

    def residuals(x: FloatArray) -> FloatArray:
        out = weight * (_smile_vol(smile, t, x[0], beta, x[1], x[2]) - v)
        last[0] = (x.tobytes(), out)
        return out

    def jacobian(x: FloatArray) -> FloatArray:
        """``least_squares``' own 2-point differences (``scipy.optimize._numdiff.approx_derivative`` with the
        bounds, the same operations), the shifted points in one evaluation: parameters as columns, every element
        the same operations as ``residuals`` (the tests check the fits bit for bit against ``least_squares``
        differencing by itself)."""
        key, f0 = last[0]
        if key != x.tobytes():
            f0 = residuals(x)
        h = _SQRT_EPS * ((x >= 0).astype(float) * 2 - 1) * np.maximum(1.0, np.abs(x))
        lower_dist, upper_dist = x - lower, upper - x
        fitting = np.abs(h) <= np.maximum(lower_dist, upper_dist)
        h[(((x + h) < lower) | ((x + h) > upper)) & fitting] *= -1
        forward_only = (upper_dist >= lower_dist) & ~fitting
        h[forward_only] = upper_dist[forward_only]
        backward_only = (upper_dist < lower_dist) & ~fitting
        h[backward_only] = -lower_dist[backward_only]
        points = np.repeat(x[None, :], 3, axis=0)
        points[_DIAG, _DIAG] = x + h
        shifted = weight * (_smile_vol(smile, t, points[:, 0:1], beta, points[:, 1:2], points[:, 2:3]) - v)
        return ((shifted - f0) / (points[_DIAG, _DIAG] - x)[:, None]).T

    res = least_squares(
        residuals,
        x0,
        jac=jacobian,
        bounds=(lower, upper),
        method="trf",
        x_scale="jac",
        xtol=1e-12,
        ftol=1e-12,
    )
    alpha, rho, nu = (float(x) for x in res.x)
    model = _smile_vol(smile, t, alpha, beta, rho, nu)
    rmse = float(np.sqrt(np.mean((model - v) ** 2)) * 100.0)
    return SabrFit(alpha, beta, rho, nu, float(forward), float(t), rmse, int(k.size), bool(res.success), formula)


@dataclass(frozen=True)
class DensityCheck:
    """Risk-neutral density of a smile on a strike grid: arbitrage-free when nowhere negative."""

    arbitrage_free: bool
    min_density: float
    strikes: FloatArray


def black_call(forward: float, strike: FloatArray, t: float, vol: FloatArray) -> FloatArray:
    """Undiscounted Black call price."""
    sd = np.maximum(vol * math.sqrt(t), 1e-300)
    d1 = np.log(forward / strike) / sd + 0.5 * sd
    return forward * ndtr(d1) - strike * ndtr(d1 - sd)  # ndtr: what scipy.stats.norm.cdf evaluates


def density_check(fit: SabrFit, n_std: float = 4.0, points: int = 401, tolerance: float = 1e-10) -> DensityCheck:
    """Second difference of undiscounted call prices in strike (Breeden-Litzenberger) on ``points`` strikes
    spanning ``+-n_std`` ATM standard deviations in log-moneyness; negative anywhere is butterfly arbitrage."""
    atm = float(sabr_vol(fit, np.array([fit.forward]))[0])
    half = n_std * atm * math.sqrt(fit.time_years)
    strikes = fit.forward * np.exp(np.linspace(-half, half, points))
    h = np.diff(strikes)
    prices = black_call(fit.forward, strikes, fit.time_years, sabr_vol(fit, strikes))
    slope = np.diff(prices) / h
    density = 2.0 * np.diff(slope) / (h[1:] + h[:-1])
    minimum = float(density.min())
    return DensityCheck(bool(minimum >= -tolerance), minimum, strikes[1:-1])
