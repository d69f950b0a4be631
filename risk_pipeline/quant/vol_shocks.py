"""Stress implied-vol shocks by name and expiry, a skew term and idiosyncratic name shocks, with calibration.

The scenario library gives, per scenario ``j``, the move of the reference vol index (VIX / VXO closes)
as ``vol.multiplier``: its 30-day ATM log-vol move is ``X_j = ln(multiplier_j)``. Option ``i`` on
underlying ``s`` with ``tau_i`` calendar days to expiry, strike ``K_i`` and implied vol ``sigma_i`` moves
(rule ``expiry_name_skew``)::

    f_i      = (T_ref / max(tau_i, tau_min))^alpha                  expiry scaling of log-vol moves
    g_i      = (T_ref / max(tau_i, tau_min))^(1/2)                  expiry scaling of the skew slope
    L_js     = clip(beta_v_s, beta_floor, beta_cap) X_j + e_js      the name's 30-day log-vol move
    D_ji     = clip(L_js f_i, -log_move_cap, log_move_cap)
    sigma'_i = max(sigma_i exp(D_ji) + shift_j f_i + skew_j g_i ln(K_i / S'_s), 0)

``T_ref`` = 30 days (the tenor of the vol index), ``tau_min`` = 7 days (the scaling of shorter
expiries is that of 7 days). ``alpha`` (``term_exponent``) is calibrated from the term structure of
daily ATM log-vol moves (``fit_term_exponent``: a longer expiry's move against a shorter one's,
``y = (tau_short / tau_long)^alpha x``, least squares); ``beta_v_s`` (vol beta) is the OLS slope of the
name's daily 30-day ATM log-vol changes on the reference index's (``fit_vol_betas``), floored and
capped (a name's vol moves by at least ``beta_floor`` and at most ``beta_cap`` times the index's, in
log terms; ``default_vol_beta`` without history). ``e_js`` is the idiosyncratic 30-day log-vol move
of the name (below). Long-dated vols move less than the 30-day vol; the power law in expiry and the
ATM skew decaying like ``tau^(-1/2)`` (hence ``g_i``) follow Gatheral, "The Volatility Surface", 2006.

Idiosyncratic name shocks (``idiosyncratic_sigmas`` ``k_j`` over ``h_j`` sessions): every underlying
other than the reference index additionally moves by ``+/- u_js k_j sd_spot_s sqrt(h_j)`` in log price
and ``+/- u_js k_j sd_vol_s sqrt(h_j)`` in 30-day log-vol (``sd_*`` the daily standard deviations of its
residuals after beta to the index). The signs are, per name, the one of the four combinations that
loses most for the book's positions in that name at ``u = 1`` (exact: a name's P&L depends on its own
spot and vol only); ``u_js = a_js / ||a_j||`` with ``a_js`` that name's extra loss at ``u = 1``
(``max_loss_weights``): the worst point of the ``k``-sd ellipsoid of independent residuals for a book
linear in them (Studer 1997, "Maximum loss for measurement of market risk", ETH Zurich), so a one-name book takes
the full ``k`` sds and a diversified one about ``k / sqrt(names)`` per name. The legacy rule
``flat_multiplier`` moves every vol of every name and expiry by the
scenario's ``sigma' = max(sigma multiplier + shift + skew ln(K / S'), 0)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar

from risk_pipeline.quant._numba import FloatArray, IntArray

RuleKind = Literal["expiry_name_skew", "flat_multiplier"]
DAYS_PER_YEAR = 365.0


@dataclass(frozen=True)
class VolShockRule:
    """Parameters of the stress vol rule (module docstring); ``source`` says where ``term_exponent`` came from."""

    kind: RuleKind = "expiry_name_skew"
    reference_tenor_days: float = 30.0
    min_tenor_days: float = 7.0
    term_exponent: float = 0.45
    term_exponent_floor: float = 0.2
    term_exponent_cap: float = 0.8
    skew_term_exponent: float = 0.5
    vol_beta_floor: float = 0.25
    vol_beta_cap: float = 2.0
    default_vol_beta: float = 1.0
    log_move_cap: float = math.log(5.0)
    idiosyncratic_sigmas: float = 0.0
    source: str = "library default"

    def __post_init__(self) -> None:
        if self.kind not in ("expiry_name_skew", "flat_multiplier"):
            raise ValueError(f"unknown vol rule {self.kind!r}")
        if not (self.reference_tenor_days > 0 and 0 < self.min_tenor_days <= self.reference_tenor_days):
            raise ValueError("vol rule: need 0 < min_tenor_days <= reference_tenor_days")
        if not (0.0 <= self.term_exponent_floor <= self.term_exponent <= self.term_exponent_cap):
            raise ValueError("vol rule: need term_exponent_floor <= term_exponent <= term_exponent_cap")
        if not (0.0 <= self.vol_beta_floor <= self.default_vol_beta <= self.vol_beta_cap):
            raise ValueError("vol rule: need vol_beta_floor <= default_vol_beta <= vol_beta_cap")
        if not (self.log_move_cap > 0 and self.skew_term_exponent >= 0 and self.idiosyncratic_sigmas >= 0):
            raise ValueError("vol rule: log_move_cap must be positive, skew exponent and sigmas non-negative")

    def label(self) -> str:
        """The rule as written in ``stress_results.vol_rule``."""
        if self.kind == "flat_multiplier":
            return "flat_multiplier: sigma'=max(sigma*multiplier+shift+skew*ln(K/S'),0), every name and expiry"
        return (
            f"expiry_name_skew: dln(sigma)=clip((clip(beta_v,{self.vol_beta_floor:g},{self.vol_beta_cap:g})"
            f"*ln(multiplier)+idio)*({self.reference_tenor_days:g}/max(tau,{self.min_tenor_days:g}))"
            f"^{self.term_exponent:.3f},+-{self.log_move_cap:.3f}); shift*same factor; "
            f"skew*({self.reference_tenor_days:g}/tau)^{self.skew_term_exponent:g}*ln(K/S'); "
            f"alpha from {self.source}"
        )


def expiry_factor(time_years: ArrayLike, rule: VolShockRule, exponent: float | None = None) -> FloatArray:
    """``(T_ref / max(tau, tau_min))^exponent`` per option (``tau`` in days; exponent defaults to alpha)."""
    tau = np.asarray(time_years, dtype=np.float64) * DAYS_PER_YEAR
    a = rule.term_exponent if exponent is None else exponent
    return (rule.reference_tenor_days / np.maximum(tau, rule.min_tenor_days)) ** a


def clipped_vol_betas(vol_betas: ArrayLike | None, n_symbols: int, rule: VolShockRule) -> FloatArray:
    """Vol betas floored and capped; NaN (no history) or ``None`` become ``default_vol_beta``."""
    if vol_betas is None:
        return np.full(n_symbols, rule.default_vol_beta)
    b = np.asarray(vol_betas, dtype=np.float64).reshape(-1)
    if b.shape != (n_symbols,):
        raise ValueError("vol_betas must have one entry per symbol")
    return np.clip(np.where(np.isfinite(b), b, rule.default_vol_beta), rule.vol_beta_floor, rule.vol_beta_cap)


def option_vol_shifts(
    *,
    implied_vol: ArrayLike,
    time_years: ArrayLike,
    log_strike: ArrayLike,
    symbol_index: ArrayLike,
    is_option: ArrayLike,
    log_spot_new: ArrayLike,
    index_log_vol_move: ArrayLike,
    vol_shift: ArrayLike,
    vol_skew: ArrayLike,
    vol_betas: ArrayLike,
    idio_log_vol_move: ArrayLike | None,
    rule: VolShockRule,
) -> FloatArray:
    """Absolute vol change ``sigma' - sigma`` (before the floor at 0) of every position, ``(n, n_positions)``.

    Per position: ``implied_vol``, ``time_years``, ``log_strike`` (``ln K``), ``symbol_index``, ``is_option``
    (stocks get 0). Per scenario: ``index_log_vol_move`` ``X_j``, ``vol_shift``, ``vol_skew`` ``(n,)``;
    ``log_spot_new`` ``(n, n_symbols)`` is ``ln S'``; ``vol_betas`` per symbol (already clipped);
    ``idio_log_vol_move`` ``(n, n_symbols)`` or ``None``.
    """
    sig = np.asarray(implied_vol, dtype=np.float64)
    sym = np.asarray(symbol_index, dtype=np.intp)
    opt = np.asarray(is_option, dtype=bool)
    x = np.asarray(index_log_vol_move, dtype=np.float64)[:, None]
    f = np.where(opt, expiry_factor(time_years, rule), 0.0)[None, :]
    g = np.where(opt, expiry_factor(time_years, rule, rule.skew_term_exponent), 0.0)[None, :]
    name_move = np.asarray(vol_betas, dtype=np.float64)[None, :] * x
    if idio_log_vol_move is not None:
        name_move = name_move + np.asarray(idio_log_vol_move, dtype=np.float64)
    d = np.clip(name_move[:, sym] * f, -rule.log_move_cap, rule.log_move_cap)
    lm = np.where(opt[None, :], np.asarray(log_strike, dtype=np.float64)[None, :] - np.asarray(log_spot_new)[:, sym], 0)
    shift = np.asarray(vol_shift, dtype=np.float64)[:, None]
    skew = np.asarray(vol_skew, dtype=np.float64)[:, None]
    return np.where(opt[None, :], sig[None, :] * np.expm1(d) + shift * f + skew * g * lm, 0.0)


# ----------------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TermExponentFit:
    """Least-squares ``alpha`` of ``y = (tau_short / tau_long)^alpha x``, observations and R^2."""

    alpha: float
    n_obs: int
    r_squared: float


def fit_term_exponent(
    short_moves: ArrayLike, long_moves: ArrayLike, short_days: ArrayLike, long_days: ArrayLike
) -> TermExponentFit:
    """``alpha`` minimizing ``sum (y - (tau_s / tau_l)^alpha x)^2`` over the finite pairs (``alpha`` in [0, 2]).

    ``x`` is a log-vol move at ``tau_s`` days and ``y`` the same day's move at ``tau_l`` days (scalars or one
    per pair; pairs with ``tau_s == tau_l`` carry no information and are left out). The pipeline passes as
    ``x`` the systematic 30-day move ``beta_v_s X_t`` (index move times the name's vol beta) and as ``y`` the
    name's move at a listed expiry, so the idiosyncratic 30-day noise (earnings entering the 30-day
    window) does not bias ``alpha``.
    """
    x, y, ts, tl = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (short_moves, long_moves, short_days, long_days))
    )
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(ts) & np.isfinite(tl) & (ts > 0) & (tl > 0) & (tl != ts)
    x, y, lr = x[ok], y[ok], np.log(ts[ok] / tl[ok])
    if x.size < 2 or not np.any(x != 0.0):
        raise ValueError("fit_term_exponent: need at least two pairs with a non-zero short move")

    def sse(a: float) -> float:
        return float(np.sum((y - np.exp(a * lr) * x) ** 2))

    res = minimize_scalar(sse, bounds=(0.0, 2.0), method="bounded", options={"xatol": 1e-8})
    tss = float(np.sum((y - y.mean()) ** 2))
    return TermExponentFit(float(res.x), int(x.size), 1.0 - float(res.fun) / tss if tss > 0 else float("nan"))


def fit_vol_betas(
    name_log_vol_changes: ArrayLike, index_log_vol_changes: ArrayLike, min_obs: int = 60
) -> tuple[FloatArray, FloatArray]:
    """OLS slope (with intercept) of each column's daily log-vol changes on the index's, and the residual sd.

    ``(n_days, n_names)`` and ``(n_days,)``; days with a NaN in either are left out per name; a name with
    fewer than ``min_obs`` days gets NaN for both.
    """
    y = np.asarray(name_log_vol_changes, dtype=np.float64)
    x = np.broadcast_to(np.asarray(index_log_vol_changes, dtype=np.float64).reshape(-1, 1), y.shape)
    return _ols_slopes(y, x, min_obs)


def _ols_slopes(y: FloatArray, x: FloatArray, min_obs: int) -> tuple[FloatArray, FloatArray]:
    ok = np.isfinite(y) & np.isfinite(x)
    n = ok.sum(axis=0)
    w = ok.astype(np.float64)
    xs, ys = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = xs.sum(axis=0) / n, ys.sum(axis=0) / n
        cxx = (w * (xs - mx) ** 2).sum(axis=0)
        cxy = (w * (xs - mx) * (ys - my)).sum(axis=0)
        beta = cxy / cxx
        resid = w * (ys - my - beta * (xs - mx))
        sd = np.sqrt((resid**2).sum(axis=0) / (n - 2))
    bad = (n < max(min_obs, 3)) | ~(cxx > 0)
    return np.where(bad, np.nan, beta), np.where(bad, np.nan, sd)


def residual_sd(returns: ArrayLike, index_returns: ArrayLike, betas: ArrayLike, min_obs: int = 60) -> FloatArray:
    """Daily sd of ``r_s - beta_s r_index`` per column (the given betas; NaN with fewer than ``min_obs`` days)."""
    r = np.asarray(returns, dtype=np.float64)
    e = r - np.asarray(betas, dtype=np.float64)[None, :] * np.asarray(index_returns, dtype=np.float64).reshape(-1, 1)
    ok = np.isfinite(e)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(ok, e, 0.0).sum(axis=0) / n
        sd = np.sqrt(np.where(ok, (e - m) ** 2, 0.0).sum(axis=0) / (n - 1))
    return np.where(n >= max(min_obs, 2), sd, np.nan)


def window_sessions(starts: Sequence[str | None], ends: Sequence[str | None]) -> FloatArray:
    """Weekdays from each window's start (exclusive) to its end (inclusive); 1 without a window."""
    out = np.ones(len(starts))
    have = np.array([a is not None and b is not None for a, b in zip(starts, ends, strict=True)], dtype=bool)
    if have.any():
        a = np.array([s for s, h in zip(starts, have, strict=True) if h], dtype="datetime64[D]") + 1
        b = np.array([e for e, h in zip(ends, have, strict=True) if h], dtype="datetime64[D]") + 1
        out[have] = np.maximum(np.busday_count(a, b), 1)
    return out


def idiosyncratic_sign_sets(
    spot_log_shock: FloatArray, vol_log_move: FloatArray, spot_sd: FloatArray, vol_sd: FloatArray, size: FloatArray
) -> list[tuple[FloatArray, FloatArray]]:
    """The four ``(spot, vol)`` idiosyncratic log-move arrays ``(n, n_symbols)``: signs ``(+,+), (+,-), (-,+), (-,-)``.

    ``size`` ``(n,)`` is ``k_j sqrt(h_j)``; ``spot_sd`` / ``vol_sd`` per symbol (0 for the index)."""
    ds = size[:, None] * spot_sd[None, :]
    dv = size[:, None] * vol_sd[None, :]
    return [(spot_log_shock + a * ds, vol_log_move + b * dv) for a in (1.0, -1.0) for b in (1.0, -1.0)]


def max_loss_weights(extra_loss: ArrayLike) -> FloatArray:
    """``u_js = a_js / sqrt(sum_s a_js^2)`` (0 where all are 0), ``a = max(extra_loss, 0)``, ``(n, n_symbols)``.

    With independent standardized residuals ``z_s`` and a loss linear in them, ``sum_s a_s z_s`` is largest
    over the ellipsoid ``sum_s z_s^2 <= 1`` at ``z = u`` (Studer's maximum loss): the book's idiosyncratic
    loss at ``k`` residual sds, not every name at ``k`` sds at once.
    """
    a = np.maximum(np.asarray(extra_loss, dtype=np.float64), 0.0)
    norm = np.sqrt(np.sum(a**2, axis=1, keepdims=True))
    return np.divide(a, norm, out=np.zeros_like(a), where=norm > 0.0)


def worst_by_symbol(by_symbol: Sequence[FloatArray]) -> tuple[FloatArray, IntArray]:
    """Per (scenario, symbol) the lowest P&L over the sign combinations, and which combination it was."""
    stack = np.stack(by_symbol)
    pick = np.argmin(stack, axis=0)
    return np.take_along_axis(stack, pick[None], axis=0)[0], pick
