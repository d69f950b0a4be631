"""Chunked full revaluation of a ``Portfolio`` under market scenarios, in process or on a Dask cluster.

A scenario moves, per underlying ``s``, the spot ``S'_s = S_s (1 + spot_shock_rel[j, s])`` and every
option's implied volatility (position ``i`` on underlying ``s``, ``K_i`` its strike)::

    sigma'_i = max(sigma_i * vol_scale[j, s] + vol_shift_abs[j, s or i] + vol_skew[j, s] * ln(K_i / S'_s), 0)

and every rate ``r'_i = r_i + rate_shift_abs[j]``; time passes by ``horizon_days`` calendar days
(``T'_i = max(T_i - horizon_days / 365, 0)``). Each option is then repriced in full (no Greeks):

* stocks: ``P&L = quantity * multiplier * (S' - S)``;
* European options: Black-Scholes-Merton (Hull, "Options, Futures, and Other Derivatives", ch. 15) with
  the Cody (1969) normal CDF of ``bsm.py``;
* American options, ``american="exact"`` (default): Bjerksund-Stensland (2002) via
  ``american.american_price_point`` in every scenario;
* American options, ``american="eep_grid"``: BSM in every scenario plus the early-exercise premium
  ``EEP = BS2002 - BSM`` interpolated on a per-position grid of ``EEP_SPOT_NODES`` log-spot nodes
  (not-a-knot cubic spline) by ``EEP_VOL_NODES`` volatility nodes (linear) spanning exactly the range
  the scenario set reaches, at the horizon's ``T'`` and the unshifted rate. BS2002 costs about 100
  times a BSM evaluation here (Genz bivariate normals), so the grid replaces ``n_scenarios`` BS2002
  calls per position by ``EEP_SPOT_NODES * EEP_VOL_NODES``. Measured on 400 American options with
  10,000 FHS-like scenarios (``bench/bench_risk.py``, ``test_scenario_engine.py``): largest absolute
  error below ``1e-3`` per option on a 100 strike, P&L quantiles within ``1e-4`` relative. Scenario
  sets with rate shifts or callable / per-position vol shifts fall back to ``"exact"``.

Every position's P&L is ``quantity * multiplier * (V' - V)`` where ``V`` is today's value by the same
formula, so a zero scenario at zero horizon gives exactly zero. Per-underlying P&L (``per_symbol``)
sums each underlying's stocks and options.

Evaluation (``evaluate``): per-position constants (log strikes, ``sqrt(T')``, dividend and rate
discount factors, today's values, the EEP grid) are computed once in a ``PreparedBook``; scenarios
are split into chunks (``chunk_size``, by default sized so one chunk's temporaries stay under
``CHUNK_MEMORY_BYTES``) evaluated by one numba kernel that loops scenarios in parallel and positions
sequentially, so no ``n_scenarios x n_positions`` array is ever built (unless the caller passes
per-position vol shifts). With a ``dask.distributed.Client`` the book is scattered to every worker once
and the chunks run as tasks; each scenario's P&L is a sequential sum over positions in a fixed order,
so the result is bit-for-bit the same as in process whatever the chunking.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray
from scipy.interpolate import CubicSpline

from risk_pipeline.quant.american import american_price_point
from risk_pipeline.quant.bsm import MIN_TOTAL_STD

if TYPE_CHECKING:
    from risk_pipeline.quant.portfolio import Portfolio

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
BoolArray = NDArray[np.bool_]
AmericanMethod = Literal["exact", "eep_grid"]
#: ``(rows, log_moneyness, symbol_index) -> vol shift``: ``rows`` is the slice of scenario indices of
#: the chunk, ``log_moneyness`` is ``ln(K_i / S'_s)`` of every position (0 for stocks), shape
#: ``(n_chunk, n_positions)``; returns the absolute vol shift of every position, same shape.
VolShiftFn = Callable[[slice, FloatArray, IntArray], FloatArray]

DAYS_PER_YEAR = 365.0
#: Log-spot nodes of the early-exercise-premium grid (cubic spline).
EEP_SPOT_NODES = 17
#: Volatility nodes of the early-exercise-premium grid (linear).
EEP_VOL_NODES = 7
#: Target size of one chunk's temporaries (bytes); bounds peak memory whatever the scenario count.
CHUNK_MEMORY_BYTES = 64 * 2**20
#: Fewest scenarios per chunk (parallel efficiency of the kernel).
MIN_CHUNK = 256

_JIT = {"cache": True, "fastmath": False, "error_model": "numpy"}
_INV_SQRT2 = 0.70710678118654752440


# ----------------------------------------------------------------------------------------------
# scenario sets
# ----------------------------------------------------------------------------------------------


def _as_2d(name: str, value: ArrayLike | None, n: int | None) -> FloatArray | None:
    if value is None:
        return None
    arr = np.ascontiguousarray(value, dtype=np.float64)
    if arr.ndim != 2 or (n is not None and arr.shape[0] != n):
        raise ValueError(f"{name} must be a 2-d array with one row per scenario")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


@dataclass(frozen=True, eq=False)
class ScenarioSet:
    """Scenarios as arrays, one row per scenario (module docstring for the formulas).

    ``spot_shock_rel`` is ``(n, n_symbols)`` with every entry above -1; ``vol_scale`` and ``vol_skew``
    are ``(n, n_symbols)`` or ``None`` (1 and 0); ``vol_shift_abs`` is ``(n, n_symbols)``,
    ``(n, n_positions)`` (``vol_shift_per_position=True`` when the two counts are equal), a
    ``VolShiftFn`` or ``None``; ``rate_shift_abs`` is ``(n,)`` or ``None``. ``row_offset`` is the index
    of the first row in the full set (chunks keep it for callables).
    """

    spot_shock_rel: FloatArray
    vol_scale: FloatArray | None = None
    vol_shift_abs: FloatArray | VolShiftFn | None = None
    vol_skew: FloatArray | None = None
    rate_shift_abs: FloatArray | None = None
    vol_shift_per_position: bool | None = None
    row_offset: int = 0

    def __post_init__(self) -> None:
        spot = _as_2d("spot_shock_rel", self.spot_shock_rel, None)
        assert spot is not None
        if np.any(spot <= -1.0):
            raise ValueError("spot_shock_rel must be above -1 (a price cannot fall 100 % or more)")
        n, n_sym = spot.shape
        object.__setattr__(self, "spot_shock_rel", spot)
        for name in ("vol_scale", "vol_skew"):
            arr = _as_2d(name, getattr(self, name), n)
            if arr is not None and arr.shape[1] != n_sym:
                raise ValueError(f"{name} must have one column per symbol")
            object.__setattr__(self, name, arr)
        if self.vol_scale is not None and np.any(self.vol_scale < 0.0):
            raise ValueError("vol_scale must be non-negative")
        if not callable(self.vol_shift_abs):
            object.__setattr__(self, "vol_shift_abs", _as_2d("vol_shift_abs", self.vol_shift_abs, n))
        if self.rate_shift_abs is not None:
            rate = np.ascontiguousarray(self.rate_shift_abs, dtype=np.float64)
            if rate.shape != (n,) or not np.all(np.isfinite(rate)):
                raise ValueError("rate_shift_abs must be a finite (n_scenarios,) array")
            object.__setattr__(self, "rate_shift_abs", rate)

    @property
    def n_scenarios(self) -> int:
        return int(self.spot_shock_rel.shape[0])

    @property
    def n_symbols(self) -> int:
        return int(self.spot_shock_rel.shape[1])

    def take(self, start: int, stop: int) -> ScenarioSet:
        """Rows ``start:stop`` (views), keeping the absolute row offset for callables."""

        def cut(a: Any) -> Any:
            return a[start:stop] if isinstance(a, np.ndarray) else a

        return replace(
            self,
            spot_shock_rel=self.spot_shock_rel[start:stop],
            vol_scale=cut(self.vol_scale),
            vol_shift_abs=cut(self.vol_shift_abs),
            vol_skew=cut(self.vol_skew),
            rate_shift_abs=cut(self.rate_shift_abs),
            row_offset=self.row_offset + start,
        )


@dataclass(frozen=True)
class SkewVolShift:
    """Skew-aware vol shift ``level + skew * ln(K / S')`` as a ``VolShiftFn``.

    ``level`` and ``skew`` are scalars, ``(n_scenarios,)`` or ``(n_scenarios, n_symbols)`` arrays
    (absolute vol per unit log-moneyness for ``skew``; a negative value steepens a put skew).
    """

    level: float | FloatArray = 0.0
    skew: float | FloatArray = 0.0

    def _rows(self, value: float | FloatArray, rows: slice, symbol_index: IntArray) -> FloatArray:
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            return arr[()] * np.ones((1, 1))
        if arr.ndim == 1:
            return arr[rows][:, None]
        return arr[rows][:, symbol_index]

    def __call__(self, rows: slice, log_moneyness: FloatArray, symbol_index: IntArray) -> FloatArray:
        lvl = self._rows(self.level, rows, symbol_index)
        skw = self._rows(self.skew, rows, symbol_index)
        return np.broadcast_to(lvl + skw * log_moneyness, log_moneyness.shape)


@dataclass(frozen=True, eq=False)
class ScenarioPnl:
    """Scenario P&L of the book, ``(n,)``, and per underlying, ``(n, n_symbols)`` when requested."""

    pnl: FloatArray
    by_symbol: FloatArray | None = None


# ----------------------------------------------------------------------------------------------
# numba kernels
# ----------------------------------------------------------------------------------------------


@njit(inline="always", **_JIT)
def _bsm(s: float, ls: float, lk: float, t: float, sqt: float, sig: float, r: float, q: float, w: float,
         dq: float, kdr: float) -> float:
    """BSM price from ``ln S``, ``ln K`` and precomputed ``e^{-qT}`` and ``K e^{-rT}`` (bsm.py limits)."""
    sdq = s * dq
    x = ls - lk + (r - q) * t
    sd = sig * sqt
    if sd > MIN_TOTAL_STD:
        d1 = x / sd + 0.5 * sd
        d2 = d1 - sd
        n1 = 0.5 * math.erfc(-_INV_SQRT2 * w * d1)
        n2 = 0.5 * math.erfc(-_INV_SQRT2 * w * d2)
        return max(w * (sdq * n1 - kdr * n2), 0.0)
    if w * x > 0.0:
        return max(w * (sdq - kdr), 0.0)
    return 0.0


@njit(inline="always", **_JIT)
def _shocked_vol(sig: float, j: int, s: int, io: int, lk: float, ls: float, scale: FloatArray,
                 shift: FloatArray, skew: FloatArray, has_scale: bool, shift_mode: int,
                 has_skew: bool) -> float:
    if has_scale:
        sig = sig * scale[j, s]
    if shift_mode == 1:
        sig = sig + shift[j, s]
    elif shift_mode == 2:
        sig = sig + shift[j, io]
    if has_skew:
        sig = sig + skew[j, s] * (lk - ls)
    return max(sig, 0.0)


@njit(parallel=True, **_JIT)
def _pnl_kernel(spot_new: FloatArray, log_spot_new: FloatArray, scale: FloatArray, shift: FloatArray,
                skew: FloatArray, rate_shift: FloatArray, has_scale: bool, shift_mode: int, has_skew: bool,
                has_rate: bool, per_symbol: bool,
                spot0: FloatArray, log_spot0: FloatArray, stock_units: FloatArray,
                opt_sym: IntArray, units: FloatArray, log_strike: FloatArray, strike: FloatArray,
                t: FloatArray, sqt: FloatArray, vol: FloatArray, rate: FloatArray, div: FloatArray,
                w: FloatArray, call: BoolArray, dq: FloatArray, kdr: FloatArray, base: FloatArray,
                bsm_idx: IntArray, am_idx: IntArray, eep_idx: IntArray,
                g_u0: FloatArray, g_du: FloatArray, g_v0: FloatArray, g_dv: FloatArray, g_coef: FloatArray,
                out_pnl: FloatArray, out_sym: FloatArray) -> None:
    """P&L of every scenario (row of ``spot_new``) into ``out_pnl`` (and ``out_sym``); module docstring."""
    n, nsym = spot_new.shape
    nu = g_coef.shape[2] + 1
    nv = g_coef.shape[1] + 1
    for j in prange(n):
        total = 0.0
        dr = rate_shift[j] if has_rate else 0.0
        for s in range(nsym):
            v = stock_units[s] * (spot_new[j, s] - spot0[s])
            total += v
            if per_symbol:
                out_sym[j, s] = v
        for m in range(bsm_idx.shape[0]):
            i = bsm_idx[m]
            s = opt_sym[i]
            ls = log_spot_new[j, s]
            sig = _shocked_vol(vol[i], j, s, i, log_strike[i], ls, scale, shift, skew, has_scale, shift_mode,
                               has_skew)
            k_dr = kdr[i] * math.exp(-dr * t[i]) if has_rate else kdr[i]
            p = _bsm(spot_new[j, s], ls, log_strike[i], t[i], sqt[i], sig, rate[i] + dr, div[i], w[i], dq[i],
                     k_dr)
            v = units[i] * (p - base[i])
            total += v
            if per_symbol:
                out_sym[j, s] += v
        for m in range(am_idx.shape[0]):
            i = am_idx[m]
            s = opt_sym[i]
            ls = log_spot_new[j, s]
            sig = _shocked_vol(vol[i], j, s, i, log_strike[i], ls, scale, shift, skew, has_scale, shift_mode,
                               has_skew)
            p = american_price_point(spot_new[j, s], strike[i], t[i], sig, rate[i] + dr, div[i], call[i], 0)
            v = units[i] * (p - base[i])
            total += v
            if per_symbol:
                out_sym[j, s] += v
        for m in range(eep_idx.shape[0]):
            i = eep_idx[m]
            s = opt_sym[i]
            ls = log_spot_new[j, s]
            sig = _shocked_vol(vol[i], j, s, i, log_strike[i], ls, scale, shift, skew, has_scale, shift_mode,
                               has_skew)
            fu = (ls - log_spot0[s] - g_u0[m]) / g_du[m]
            iu = min(max(int(math.floor(fu)), 0), nu - 2)
            tu = fu - iu
            fv = (sig - g_v0[m]) / g_dv[m]
            iv = min(max(int(math.floor(fv)), 0), nv - 2)
            tv = fv - iv
            c = g_coef[m, iv, iu]
            eep = 0.0
            for a in range(4):
                eep = eep * tv + (((c[a, 0] * tu + c[a, 1]) * tu + c[a, 2]) * tu + c[a, 3])
            k_dr = kdr[i] * math.exp(-dr * t[i]) if has_rate else kdr[i]
            s_new = spot_new[j, s]
            euro = _bsm(s_new, ls, log_strike[i], t[i], sqt[i], sig, rate[i] + dr, div[i], w[i], dq[i], k_dr)
            p = max(euro + max(eep, 0.0), w[i] * (s_new - strike[i]))  # American >= European, intrinsic
            v = units[i] * (p - base[i])
            total += v
            if per_symbol:
                out_sym[j, s] += v
        out_pnl[j] = total


@njit(parallel=True, **_JIT)
def _price_kernel(s: FloatArray, k: FloatArray, t: FloatArray, sig: FloatArray, r: FloatArray, q: FloatArray,
                  call: BoolArray, american: BoolArray, out: FloatArray) -> None:
    """Today's price by the kernel's own formulas (BSM, or BS2002 where ``american``)."""
    for i in prange(out.shape[0]):
        if american[i]:
            out[i] = american_price_point(s[i], k[i], t[i], sig[i], r[i], q[i], call[i], 0)
        else:
            w = 1.0 if call[i] else -1.0
            tt = max(t[i], 0.0)
            out[i] = _bsm(s[i], math.log(s[i]), math.log(k[i]), tt, math.sqrt(tt), sig[i], r[i], q[i], w,
                          math.exp(-q[i] * tt), k[i] * math.exp(-r[i] * tt))


@njit(parallel=True, **_JIT)
def _eep_nodes(spot0: FloatArray, u: FloatArray, v: FloatArray, k: FloatArray, t: FloatArray,
               r: FloatArray, q: FloatArray, call: BoolArray, out: FloatArray) -> None:
    """``BS2002 - BSM`` at every (position, vol node, spot node): ``out[a, l, m]``."""
    na, nv = v.shape
    nu = u.shape[1]
    for flat in prange(na * nv):
        a = flat // nv
        m = flat % nv
        w = 1.0 if call[a] else -1.0
        sqt = math.sqrt(t[a])
        dq = math.exp(-q[a] * t[a])
        kdr = k[a] * math.exp(-r[a] * t[a])
        lk = math.log(k[a])
        for c in range(nu):
            ls = math.log(spot0[a]) + u[a, c]
            s = math.exp(ls)
            am = american_price_point(s, k[a], t[a], v[a, m], r[a], q[a], call[a], 0)
            out[a, m, c] = am - _bsm(s, ls, lk, t[a], sqt, v[a, m], r[a], q[a], w, dq, kdr)


@njit(parallel=True, **_JIT)
def _vol_range(log_spot_new: FloatArray, scale: FloatArray, shift: FloatArray, skew: FloatArray,
               has_scale: bool, shift_mode: int, has_skew: bool, opt_sym: IntArray, log_strike: FloatArray,
               vol: FloatArray, idx: IntArray, lo: FloatArray, hi: FloatArray) -> None:
    """Smallest and largest shocked vol of the options ``idx`` over all scenarios."""
    for m in prange(idx.shape[0]):
        i = idx[m]
        s = opt_sym[i]
        a = math.inf
        b = -math.inf
        for j in range(log_spot_new.shape[0]):
            sig = _shocked_vol(vol[i], j, s, i, log_strike[i], log_spot_new[j, s], scale, shift, skew,
                               has_scale, shift_mode, has_skew)
            a = min(a, sig)
            b = max(b, sig)
        lo[m] = a
        hi[m] = b


# ----------------------------------------------------------------------------------------------
# prepared book
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PreparedBook:
    """Per-position constants of a portfolio at one horizon (built once by ``prepare``).

    Option arrays are indexed by option number (``option_positions`` maps them to positions);
    ``bsm_idx``/``american_idx``/``eep_idx`` select the options priced by BSM, by exact BS2002 and
    with the early-exercise-premium grid (whose arrays are aligned with ``eep_idx``).
    """

    n_positions: int
    symbol_index: IntArray
    spot0: FloatArray
    log_spot0: FloatArray
    stock_units: FloatArray
    option_positions: IntArray
    opt_sym: IntArray
    units: FloatArray
    log_strike: FloatArray
    strike: FloatArray
    t: FloatArray
    sqrt_t: FloatArray
    vol: FloatArray
    rate: FloatArray
    div: FloatArray
    w: FloatArray
    call: BoolArray
    dq: FloatArray
    kdr: FloatArray
    base: FloatArray
    bsm_idx: IntArray
    american_idx: IntArray
    eep_idx: IntArray
    grid_u0: FloatArray
    grid_du: FloatArray
    grid_v0: FloatArray
    grid_dv: FloatArray
    grid_coef: FloatArray
    horizon_days: float
    american: AmericanMethod

    @property
    def n_symbols(self) -> int:
        return int(self.spot0.shape[0])


def option_values(portfolio: Portfolio) -> FloatArray:
    """Today's price per unit of every position: spot for stocks, BSM or BS2002 for options."""
    n = portfolio.n_positions
    out = np.asarray(portfolio.spot[portfolio.symbol_index], dtype=np.float64).copy()
    opt = np.flatnonzero(portfolio.is_option)
    if opt.size:
        vals = np.empty(opt.size)
        _price_kernel(np.ascontiguousarray(portfolio.spot[portfolio.symbol_index[opt]]),
                      np.ascontiguousarray(portfolio.strike[opt]), np.ascontiguousarray(portfolio.time_years[opt]),
                      np.ascontiguousarray(portfolio.implied_vol[opt]), np.ascontiguousarray(portfolio.rate[opt]),
                      np.ascontiguousarray(portfolio.dividend_yield[opt]),
                      np.ascontiguousarray(portfolio.is_call[opt]),
                      np.ascontiguousarray(portfolio.is_american[opt]), vals)
        out[opt] = vals
    assert out.shape == (n,)
    return out


def _empty_grid(n: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    z = np.zeros(n)
    return z, np.ones(n), z.copy(), np.ones(n), np.zeros((n, 1, 1, 4, 4))


def prepare(portfolio: Portfolio, horizon_days: float = 0.0, scenarios: ScenarioSet | None = None,
            american: AmericanMethod = "exact") -> PreparedBook:
    """Precompute the per-position constants at ``T' = max(T - horizon_days / 365, 0)``.

    ``american="eep_grid"`` needs ``scenarios`` (the grid spans exactly their spot and vol range); it
    falls back to ``"exact"`` when they carry rate shifts or callable / per-position vol shifts.
    """
    if american not in ("exact", "eep_grid"):
        raise ValueError(f"unknown american method {american!r}")
    if not (math.isfinite(horizon_days) and horizon_days >= 0.0):
        raise ValueError("horizon_days must be finite and non-negative")
    p = portfolio
    n_sym = p.n_symbols
    stock = ~p.is_option
    stock_units = np.bincount(p.symbol_index[stock], weights=p.units[stock], minlength=n_sym).astype(np.float64)
    opt = np.flatnonzero(p.is_option)
    t_new = np.maximum(p.time_years[opt] - horizon_days / DAYS_PER_YEAR, 0.0)
    base = option_values(p)[opt]
    is_am = p.is_american[opt]
    method = american
    if method == "eep_grid" and (scenarios is None or _needs_exact(scenarios)):
        method = "exact"
    opt_idx = np.arange(opt.size)
    if method == "exact":
        bsm_idx, am_idx, eep_idx = opt_idx[~is_am], opt_idx[is_am], opt_idx[:0]
    else:
        bsm_idx, am_idx, eep_idx = opt_idx[~is_am], opt_idx[:0], opt_idx[is_am]
    book = PreparedBook(
        n_positions=p.n_positions,
        symbol_index=p.symbol_index,
        spot0=p.spot,
        log_spot0=np.log(p.spot),
        stock_units=stock_units,
        option_positions=opt,
        opt_sym=np.ascontiguousarray(p.symbol_index[opt]),
        units=np.ascontiguousarray(p.units[opt]),
        log_strike=np.log(p.strike[opt]),
        strike=np.ascontiguousarray(p.strike[opt]),
        t=t_new,
        sqrt_t=np.sqrt(t_new),
        vol=np.ascontiguousarray(p.implied_vol[opt]),
        rate=np.ascontiguousarray(p.rate[opt]),
        div=np.ascontiguousarray(p.dividend_yield[opt]),
        w=np.where(p.is_call[opt], 1.0, -1.0),
        call=np.ascontiguousarray(p.is_call[opt]),
        dq=np.exp(-p.dividend_yield[opt] * t_new),
        kdr=p.strike[opt] * np.exp(-p.rate[opt] * t_new),
        base=base,
        bsm_idx=bsm_idx,
        american_idx=am_idx,
        eep_idx=eep_idx,
        grid_u0=np.zeros(0),
        grid_du=np.ones(0),
        grid_v0=np.zeros(0),
        grid_dv=np.ones(0),
        grid_coef=np.zeros((0, 1, 1, 4, 4)),
        horizon_days=float(horizon_days),
        american=method,
    )
    if eep_idx.size:
        assert scenarios is not None
        book = _with_eep_grid(book, scenarios)
    return book


def _needs_exact(scenarios: ScenarioSet) -> bool:
    return (
        (scenarios.rate_shift_abs is not None and bool(np.any(scenarios.rate_shift_abs != 0.0)))
        or callable(scenarios.vol_shift_abs)
        or (isinstance(scenarios.vol_shift_abs, np.ndarray) and scenarios.vol_shift_abs.shape[1]
            != scenarios.n_symbols)
    )


def _vol_arrays(book: PreparedBook, sc: ScenarioSet) -> tuple[FloatArray, FloatArray, FloatArray, bool, int, bool]:
    """Kernel inputs for the vol shock of a chunk (dummies where absent)."""
    dummy = np.zeros((1, 1))
    scale = sc.vol_scale if sc.vol_scale is not None else dummy
    skew = sc.vol_skew if sc.vol_skew is not None else dummy
    shift_mode = 0
    shift: FloatArray = dummy
    v = sc.vol_shift_abs
    if callable(v):
        ls_pos = book.log_spot0[book.symbol_index] + np.log1p(sc.spot_shock_rel[:, book.symbol_index])
        lm = np.zeros_like(ls_pos)
        lk = book.log_strike
        lm[:, book.option_positions] = lk[None, :] - ls_pos[:, book.option_positions]
        rows = slice(sc.row_offset, sc.row_offset + sc.n_scenarios)
        full = np.asarray(v(rows, lm, book.symbol_index), dtype=np.float64)
        if full.shape != lm.shape or not np.all(np.isfinite(full)):
            raise ValueError("a vol-shift callable must return finite (n_chunk, n_positions) shifts")
        shift = np.ascontiguousarray(full[:, book.option_positions])
        shift_mode = 2
    elif v is not None:
        arr = np.asarray(v)
        if _per_position(book, arr.shape[1], sc.vol_shift_per_position):
            shift = np.ascontiguousarray(arr[:, book.option_positions])
            shift_mode = 2
        else:
            shift = np.ascontiguousarray(arr)
            shift_mode = 1
    return scale, shift, skew, sc.vol_scale is not None, shift_mode, sc.vol_skew is not None


def _per_position(book: PreparedBook, ncol: int, flag: bool | None) -> bool:
    n_pos, n_sym = book.n_positions, book.n_symbols
    if ncol not in (n_pos, n_sym):
        raise ValueError(f"vol_shift_abs must have {n_sym} (per symbol) or {n_pos} (per position) columns")
    if n_pos == n_sym and flag is None:
        if np.array_equal(book.symbol_index, np.arange(n_pos)):
            return False
        raise ValueError("vol_shift_abs is ambiguous (as many symbols as positions): set vol_shift_per_position")
    if flag is not None:
        if ncol != (n_pos if flag else n_sym):
            raise ValueError("vol_shift_abs columns do not match vol_shift_per_position")
        return flag
    return ncol == n_pos


def _with_eep_grid(book: PreparedBook, sc: ScenarioSet) -> PreparedBook:
    """Build the EEP grid of ``book.eep_idx`` spanning the spot and vol range of ``sc``."""
    idx = book.eep_idx
    sym = book.opt_sym[idx]
    lu = np.log1p(sc.spot_shock_rel)
    u_lo = np.minimum(lu.min(axis=0), 0.0)[sym]
    u_hi = np.maximum(lu.max(axis=0), 0.0)[sym]
    width = np.maximum(u_hi - u_lo, 1e-4)
    u_hi = u_lo + width
    ls_new = book.log_spot0[None, :] + lu
    scale, shift, skew, has_scale, shift_mode, has_skew = _vol_arrays(book, sc)
    v_lo = np.empty(idx.size)
    v_hi = np.empty(idx.size)
    _vol_range(np.ascontiguousarray(ls_new), scale, shift, skew, has_scale, shift_mode, has_skew, book.opt_sym,
               book.log_strike, book.vol, idx, v_lo, v_hi)
    v_w = np.maximum(v_hi - v_lo, 1e-4 * np.maximum(book.vol[idx], 1e-2))
    v_hi = v_lo + v_w
    nu, nv = EEP_SPOT_NODES, EEP_VOL_NODES
    u_nodes = u_lo[:, None] + (u_hi - u_lo)[:, None] * np.linspace(0.0, 1.0, nu)[None, :]
    v_nodes = v_lo[:, None] + (v_hi - v_lo)[:, None] * np.linspace(0.0, 1.0, nv)[None, :]
    vals = np.empty((idx.size, nv, nu))
    _eep_nodes(np.ascontiguousarray(book.spot0[sym]), np.ascontiguousarray(u_nodes), np.ascontiguousarray(v_nodes),
               book.strike[idx], book.t[idx], book.rate[idx], book.div[idx], book.call[idx], vals)
    # tensor-product not-a-knot cubic spline: along spot, then the spot coefficients along vol
    cu = CubicSpline(np.arange(nu, dtype=np.float64), vals, axis=2).c  # (4, nu-1, na, nv)
    cv = CubicSpline(np.arange(nv, dtype=np.float64), cu, axis=3).c  # (4, nv-1, 4, nu-1, na)
    coef = np.ascontiguousarray(np.transpose(cv, (4, 1, 3, 0, 2)))  # (na, nv-1, nu-1, 4 vol, 4 spot)
    return replace(book, grid_u0=u_lo, grid_du=(u_hi - u_lo) / (nu - 1), grid_v0=v_lo,
                   grid_dv=(v_hi - v_lo) / (nv - 1), grid_coef=coef)


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------


def evaluate_chunk(book: PreparedBook, sc: ScenarioSet, per_symbol: bool = False) -> ScenarioPnl:
    """Revalue one chunk of scenarios in this process (the unit of work sent to Dask workers)."""
    if sc.n_symbols != book.n_symbols:
        raise ValueError(f"scenarios have {sc.n_symbols} symbol columns, the book {book.n_symbols}")
    n = sc.n_scenarios
    spot_new = book.spot0[None, :] * (1.0 + sc.spot_shock_rel)
    log_spot_new = book.log_spot0[None, :] + np.log1p(sc.spot_shock_rel)
    scale, shift, skew, has_scale, shift_mode, has_skew = _vol_arrays(book, sc)
    has_rate = sc.rate_shift_abs is not None
    rate = sc.rate_shift_abs if sc.rate_shift_abs is not None else np.zeros(1)
    if has_rate and book.american == "eep_grid" and np.any(rate != 0.0):
        raise ValueError("this book's early-exercise grid was built without rate shifts")
    pnl = np.empty(n)
    by_sym = np.empty((n, book.n_symbols) if per_symbol else (1, 1))
    _pnl_kernel(spot_new, log_spot_new, scale, shift, skew, rate, has_scale, shift_mode, has_skew, has_rate,
                per_symbol, book.spot0, book.log_spot0, book.stock_units, book.opt_sym, book.units,
                book.log_strike, book.strike, book.t, book.sqrt_t, book.vol, book.rate, book.div, book.w,
                book.call, book.dq, book.kdr, book.base, book.bsm_idx, book.american_idx, book.eep_idx,
                book.grid_u0, book.grid_du, book.grid_v0, book.grid_dv, book.grid_coef, pnl, by_sym)
    return ScenarioPnl(pnl, by_sym if per_symbol else None)


def default_chunk_size(book: PreparedBook, sc: ScenarioSet) -> int:
    """Scenarios per chunk so that one chunk's temporaries stay under ``CHUNK_MEMORY_BYTES``."""
    per_scenario = 8 * (6 * book.n_symbols + 2)
    if callable(sc.vol_shift_abs):
        per_scenario += 8 * 5 * book.n_positions
    elif isinstance(sc.vol_shift_abs, np.ndarray) and sc.vol_shift_abs.shape[1] != book.n_symbols:
        per_scenario += 8 * book.option_positions.size
    return max(MIN_CHUNK, CHUNK_MEMORY_BYTES // per_scenario)


def evaluate_prepared(book: PreparedBook, scenarios: ScenarioSet, *, per_symbol: bool = False,
                      client: Any | None = None, chunk_size: int | None = None) -> ScenarioPnl:
    """Revalue all scenarios chunk by chunk, in process or (``client``) as Dask tasks; same numbers."""
    n = scenarios.n_scenarios
    size = int(chunk_size) if chunk_size else default_chunk_size(book, scenarios)
    if size < 1:
        raise ValueError("chunk_size must be positive")
    bounds = [(a, min(a + size, n)) for a in range(0, n, size)]
    if client is None:
        parts = [evaluate_chunk(book, scenarios.take(a, b), per_symbol) for a, b in bounds]
    else:
        [remote_book] = client.scatter([book], broadcast=True, hash=False)
        futures = [client.submit(evaluate_chunk, remote_book, scenarios.take(a, b), per_symbol, pure=False)
                   for a, b in bounds]
        parts = client.gather(futures)
    if not parts:
        return ScenarioPnl(np.zeros(0), np.zeros((0, book.n_symbols)) if per_symbol else None)
    pnl = np.concatenate([p.pnl for p in parts])
    by_sym = np.concatenate([p.by_symbol for p in parts]) if per_symbol else None
    return ScenarioPnl(pnl, by_sym)


def evaluate(portfolio: Portfolio, scenarios: ScenarioSet, horizon_days: float = 0.0, *,
             american: AmericanMethod = "exact", per_symbol: bool = False, client: Any | None = None,
             chunk_size: int | None = None) -> ScenarioPnl:
    """Full-revaluation P&L of ``portfolio`` under ``scenarios`` after ``horizon_days`` calendar days."""
    if scenarios.n_symbols != portfolio.n_symbols:
        raise ValueError(f"scenarios have {scenarios.n_symbols} symbol columns, the portfolio "
                         f"{portfolio.n_symbols}")
    book = prepare(portfolio, horizon_days, scenarios, american)
    return evaluate_prepared(book, scenarios, per_symbol=per_symbol, client=client, chunk_size=chunk_size)
