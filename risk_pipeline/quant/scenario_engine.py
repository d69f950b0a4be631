"""Chunked full revaluation of a ``Portfolio`` under market scenarios, in process or on a Dask cluster.

A scenario moves, per underlying ``s``, the spot ``S'_s = S_s (1 + spot_shock_rel[j, s])`` and every
option's implied volatility (position ``i`` on underlying ``s``, ``K_i`` its strike)::

    sigma'_i = max(sigma_i * vol_scale[j, s] + vol_shift_abs[j, s or i] + vol_skew[j, s] * ln(K_i / S'_s), 0)

every rate ``r'_i = r_i + rate_shift_abs[j (, s)]`` and every dividend yield ``q'_i = q_i +
dividend_shift_abs[j, s]`` (absolute shifts); time passes by ``horizon_days`` calendar days
(``T'_i = max(T_i - horizon_days / 365, 0)``). Each option is then repriced in full (no Greeks):

* stocks: ``P&L = quantity * multiplier * (S' - S)``;
* European options: Black-Scholes-Merton (Hull, "Options, Futures, and Other Derivatives", ch. 15) with
  the Cody (1969) normal CDF of ``bsm.py``;
* American options, ``american="exact"`` (default): the exact engine (``american_alo.py``: Andersen,
  Lake and Offengeld's boundary equation, ~10-20 us an option per core) in every scenario, option by
  option; the boundary depends on the vol, rate and yield only, so each option reuses the boundaries of its
  last 16 distinct (vol, rate, yield) triples and prices a new spot on them (~2-4 us); a scenario repeating
  the previous one's spot, vol, rate and yield for an option reuses its price;
* American options, ``american="bs2002"``: Bjerksund-Stensland (2002) in every scenario (the fast
  approximation, up to ~0.8 % below the exact price), batched through ``american.american_bs2002_prices``
  (the vectorized lane kernel, ~1 us a call); today's values by BS2002 as well;
* American options, ``american="eep_grid"`` (VaR and stress, many scenarios): BSM in every scenario plus
  the early-exercise premium ``EEP = American - BSM`` interpolated per position on a tensor-product
  not-a-knot cubic spline in (``y``, vol), ``y = w ln(S*(vol) / S')`` the log distance to the exact
  engine's exercise boundary at maturity ``S*`` (a cubic spline in vol through the boundaries solved at
  the vol nodes), with ``EEP_SPOT_NODES`` nodes spanning the distances and ``EEP_VOL_NODES`` the vols the
  scenario set reaches; the node values are the exact engine's prices on ``american_alo.GRID_TABLES``
  (within 3e-6 K of the converged engine over the books' range, 1.5e-5 K at worst: far below the spline's
  error), 5 boundary solves and 65 prices per option. In the
  exercise region (``y <= 0``) the price is ``max(BSM, intrinsic)``, i.e. the intrinsic value; the
  premium is floored at 0 after interpolation. Options whose early exercise is never optimal (call
  ``q <= 0``, ``q <= r``; put ``r <= 0``, ``r <= q``) are priced ``max(BSM, intrinsic)``; options the grid
  does not cover somewhere in the vol range (two exercise boundaries, zero vol) and scenarios off the grid
  use the exact engine. Measured against ``"exact"`` (``test_scenario_engine.py``,
  ``bench/bench_risk.py``): see the README's "Speed of the risk engine". Rate and dividend-yield shifts: the
  BSM part is priced at the shifted rate and yield exactly; ``ln(S*/K)`` and the premium splines are built
  again at ``r -+ h_r`` and ``q -+ h_q`` (``h`` the set's largest shift of the option's underlying) on the same
  nodes and read as the quadratic through the three grids of each factor (no cross term; measured in
  ``test_var_rate_dividend.py`` and ``bench/bench_var_factors.py``); options whose shifted range reaches the
  edge of the never-exercise region, or ``r = q`` (a kink of the boundary) where the grid is more than
  ``KINK_CHECK_TOL`` of the strike off the exact engine at check points, use the exact engine; those reaching
  ``r = q`` are first tried on a smaller box on one side of it (``KINK_BOX_SHARES``, checked the same way), read
  from that grid inside it and exactly outside it. Scenario
  sets with callable vol shifts fall back to ``"exact"`` (per-position shift arrays, and ``RowVolShifts`` made
  chunk by chunk, are covered by the grid's vol range).

Every position's P&L is ``quantity * multiplier * (V' - V)`` where ``V`` is today's value by the same
formula, so a zero scenario at zero horizon gives exactly zero. Per-underlying P&L (``per_symbol``)
sums each underlying's stocks and options.

Evaluation (``evaluate``): per-option constants (log strikes, ``sqrt(T')``, ``(r - q) T'``, dividend
and rate discount factors, today's values, the EEP grid) are computed once in a ``PreparedBook``;
scenarios are split into chunks (``chunk_size``, by default sized so one chunk's temporaries stay
under ``CHUNK_MEMORY_BYTES``) evaluated by numba kernels that loop scenarios in parallel and positions
sequentially (Europeans in a vectorized loop into a per-scenario buffer; Americans on the grid option by
option over the chunk's scenarios, read symbol-major, or exactly in batches of the lane kernel), so no
``n_scenarios x n_positions`` array is ever built (unless the caller passes per-position vol shifts as a
whole-set array; ``RowVolShifts`` and callables make one chunk's at a time; the grid keeps one
``n_chunk x n_american`` block). With a ``dask.distributed.Client`` the
book is scattered to every worker once and the chunks run as tasks; each scenario's P&L is a sequential
sum over positions in a fixed order, so the result is bit-for-bit the same as in process whatever the
chunking.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray
from scipy.interpolate import CubicSpline

from risk_pipeline.quant._numba import (
    JIT,
    BoolArray,
    FloatArray,
    IntArray,
    fused_multiply_add,
    inner_njit,
    run_chunked,
    slp_njit,
)
from risk_pipeline.quant.american import MIN_TOTAL_STD as AMERICAN_MIN_TOTAL_STD
from risk_pipeline.quant.american import american_bs2002_prices, american_price
from risk_pipeline.quant.american_alo import (
    EXACT_TABLES,
    GRID_TABLES,
    NEWTON_STEP_TOL,
    american_points,
    distinct_rows,
    exercise_limit,
    exercise_limits,
    premiums,
    py_max,
    row_premiums,
    solve_boundaries,
)
from risk_pipeline.quant.bsm import MIN_TOTAL_STD, bsm_price
from risk_pipeline.quant.bsm import _price_kernel as _bsm_price_kernel
from risk_pipeline.quant.portfolio import Portfolio, stack_portfolios
from risk_pipeline.quant.special import fast_exp, norm_cdf_from_exp

AmericanMethod = Literal["exact", "eep_grid", "bs2002"]
#: ``(rows, log_moneyness, symbol_index) -> vol shift``: ``rows`` is the slice of scenario indices of
#: the chunk, ``log_moneyness`` is ``ln(K_i / S'_s)`` of every position (0 for stocks), shape
#: ``(n_chunk, n_positions)``; returns the absolute vol shift of every position, same shape.
VolShiftFn = Callable[[slice, FloatArray, IntArray], FloatArray]

DAYS_PER_YEAR = 365.0
#: Nodes in the distance to the exercise boundary ``y`` of the early-exercise-premium spline.
EEP_SPOT_NODES = 13
#: Volatility nodes of the early-exercise-premium spline.
EEP_VOL_NODES = 5
#: Exercise boundaries the exact kernel keeps per option (distinct vol-rate pairs, most recent first out).
_BOUNDARY_CACHE = 16
#: Options whose rate and yield shifts reach ``r = q`` (a kink of the exercise boundary in the shifts) are read from
#: the shifted grids only if the grid is within this fraction of the strike of the exact engine at check points
#: halfway between the grids (``_kink_check``); others are priced exactly.
KINK_CHECK_TOL = 2e-5
#: Scenario sets smaller than this are priced exactly (a grid costs about as much as 8 exact prices).
EEP_MIN_SCENARIOS = 8
#: Target size of one chunk's temporaries (bytes); bounds peak memory whatever the scenario count.
CHUNK_MEMORY_BYTES = 64 * 2**20
#: Fewest scenarios per chunk (parallel efficiency of the kernel).
MIN_CHUNK = 256


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
class RowVolShifts:
    """Per-position vol shifts of a scenario set, made a block of rows at a time instead of held whole.

    ``make(start, stop)`` returns the ``(stop - start, n_positions)`` absolute vol shifts of rows ``start:stop`` of
    the full set; each row's shifts must depend on that row only, so that any blocks give the numbers of the
    whole-set array, bit for bit. The engine takes them like a per-position array (``vol_shift_per_position``):
    the early-exercise grid's range scan and every evaluation chunk ask for their own rows, so only one chunk's
    shifts exist at a time (each row is made twice: once for the grid's range, once for the revaluation).
    Unlike a ``VolShiftFn`` they do not read the shocked log-moneyness, which is why the grid can span them.
    ``work_per_position``: floats per scenario row and position ``make`` holds at once (chunk sizing).
    ``make_columns(start, stop, columns)``, when given: the columns ``columns`` of ``make(start, stop)`` (the same
    values), made without the other positions' (the engine reads only the options' shifts).
    """

    make: Callable[[int, int], FloatArray]
    n_positions: int
    work_per_position: int = 5
    make_columns: Callable[[int, int, IntArray], FloatArray] | None = None


@dataclass(frozen=True, eq=False)
class ScenarioSet:
    """Scenarios as arrays, one row per scenario (module docstring for the formulas).

    ``spot_shock_rel`` is ``(n, n_symbols)`` with every entry above -1; ``vol_scale`` and ``vol_skew``
    are ``(n, n_symbols)`` or ``None`` (1 and 0); ``vol_shift_abs`` is ``(n, n_symbols)``,
    ``(n, n_positions)`` (``vol_shift_per_position=True`` when the two counts are equal), a
    ``RowVolShifts`` (per position, made chunk by chunk), a ``VolShiftFn`` or ``None``; ``rate_shift_abs``
    is ``(n,)`` (every option) or ``(n, n_symbols)`` (the options on each underlying) or ``None``;
    ``dividend_shift_abs`` is ``(n, n_symbols)`` or ``None`` (absolute shifts of the continuous rate and
    dividend yield, decimal). ``row_offset`` is the index of the first row in the full set (chunks keep it
    for callables and ``RowVolShifts``).
    """

    spot_shock_rel: FloatArray
    vol_scale: FloatArray | None = None
    vol_shift_abs: FloatArray | VolShiftFn | None = None
    vol_skew: FloatArray | None = None
    rate_shift_abs: FloatArray | None = None
    vol_shift_per_position: bool | None = None
    row_offset: int = 0
    dividend_shift_abs: FloatArray | None = None

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
        if isinstance(self.vol_shift_abs, RowVolShifts):
            if self.vol_shift_per_position is False:
                raise ValueError("RowVolShifts are per position (vol_shift_per_position True or None)")
        elif not callable(self.vol_shift_abs):
            object.__setattr__(self, "vol_shift_abs", _as_2d("vol_shift_abs", self.vol_shift_abs, n))
        if self.rate_shift_abs is not None:
            rate = np.ascontiguousarray(self.rate_shift_abs, dtype=np.float64)
            if rate.shape not in ((n,), (n, n_sym)) or not np.all(np.isfinite(rate)):
                raise ValueError("rate_shift_abs must be a finite (n_scenarios,) or (n_scenarios, n_symbols) array")
            object.__setattr__(self, "rate_shift_abs", rate)
        div = _as_2d("dividend_shift_abs", self.dividend_shift_abs, n)
        if div is not None and div.shape[1] != n_sym:
            raise ValueError("dividend_shift_abs must have one column per symbol")
        object.__setattr__(self, "dividend_shift_abs", div)

    @property
    def n_scenarios(self) -> int:
        return int(self.spot_shock_rel.shape[0])

    @property
    def n_symbols(self) -> int:
        return int(self.spot_shock_rel.shape[1])

    def take(self, start: int, stop: int) -> ScenarioSet:
        """Rows ``start:stop`` (views), keeping the absolute row offset for callables (not checked again: the rows
        of a checked set are checked, ``_checked``)."""

        def cut(a: Any) -> Any:
            return a[start:stop] if isinstance(a, np.ndarray) else a

        return _checked(
            self,
            spot_shock_rel=self.spot_shock_rel[start:stop],
            vol_scale=cut(self.vol_scale),
            vol_shift_abs=cut(self.vol_shift_abs),
            vol_skew=cut(self.vol_skew),
            rate_shift_abs=cut(self.rate_shift_abs),
            dividend_shift_abs=cut(self.dividend_shift_abs),
            row_offset=self.row_offset + start,
        )

    def rate_by_symbol(self) -> FloatArray | None:
        """``rate_shift_abs`` as ``(n, n_symbols)`` (a per-scenario shift repeated for every underlying)."""
        r = self.rate_shift_abs
        if r is None or r.ndim == 2:
            return r
        return np.ascontiguousarray(np.broadcast_to(r[:, None], self.spot_shock_rel.shape))

    @property
    def moves_carry(self) -> bool:
        """Whether any scenario shifts a rate or a dividend yield."""
        return any(a is not None and bool(np.any(a != 0.0)) for a in (self.rate_shift_abs, self.dividend_shift_abs))


def _checked(template: ScenarioSet, **fields: Any) -> ScenarioSet:
    """``replace(template, **fields)`` without repeating ``ScenarioSet.__post_init__``'s checks, for a set made of a
    checked set's arrays (row slices): the same object ``replace`` makes when every array is C-contiguous float64
    (the checks keep those as they are); otherwise ``replace`` itself."""
    for value in fields.values():
        if isinstance(value, np.ndarray) and not (value.dtype == np.float64 and value.flags.c_contiguous):
            return replace(template, **fields)
    out = object.__new__(ScenarioSet)
    for f in dataclasses.fields(ScenarioSet):
        object.__setattr__(out, f.name, fields[f.name] if f.name in fields else getattr(template, f.name))
    return out


@dataclass(frozen=True, eq=False)
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
#
# The European loop is branch-free (selects instead of if/else; ``np.maximum``, not the builtin ``max``,
# which LLVM does not vectorize) and writes each option's price into a buffer, so LLVM vectorizes it
# (gathers of the shocked spots, the Cody rational functions, the polynomial ``fast_exp``); ``N(d2)``
# reuses ``exp(-d1^2/2)`` through ``exp(-d2^2/2) = exp(-d1^2/2) F/K``. The P&L is then summed
# sequentially in a fixed order. Exact BS2002 prices go through ``american.american_bs2002_prices`` in
# batches (its lane kernel vectorizes across options and scenarios).
# ----------------------------------------------------------------------------------------------

#: Scenarios per work item of the European kernel (one price buffer each).
_BLOCK = 32
#: Exact BS2002 repricings per work item of the exact kernel (lanes of ``american_bs2002_prices``).
_LANE_TARGET = 256
#: Scenarios per block of ``_american_grid_values``' two passes over an option (its six buffers, 2 kB each at most,
#: stay in L1).
_READ_BLOCK = 256

_AM_MIN_TOTAL_STD = AMERICAN_MIN_TOTAL_STD


@inner_njit(forceinline=True)
def _bsm(
    s: float, ls: float, lk: float, carry: float, sqt: float, sig: float, w: float, dq: float, kdr: float
) -> float:
    """BSM price (bsm.py formulas and limits) from ``ln S``, ``ln K``, ``carry = (r - q) T``,
    ``sqrt(T)``, ``e^{-qT}`` and ``K e^{-rT}``; branch-free."""
    sdq = s * dq
    x = ls - lk + carry
    sd = sig * sqt
    reg = sd > MIN_TOTAL_STD
    sds = sd if reg else 1.0
    d1 = x / sds + 0.5 * sds
    d2 = d1 - sds
    e1 = fast_exp(-0.5 * d1 * d1)
    e2 = e1 * (sdq / kdr)  # exp(-d2^2/2) = exp(-d1^2/2) F / K
    price = np.maximum(w * (sdq * norm_cdf_from_exp(w * d1, e1) - kdr * norm_cdf_from_exp(w * d2, e2)), 0.0)
    limit = np.maximum(w * (sdq - kdr), 0.0) * np.float64(w * x > 0.0)
    return (price if reg else limit) + 0.0


@inner_njit(forceinline=True)
def _bsm_shifted(
    s: float,
    ls: float,
    lk: float,
    carry: float,
    sqt: float,
    sig: float,
    w: float,
    dq: float,
    kdr: float,
    t: float,
    dr: float,
    dd: float,
) -> float:
    """``_bsm`` with the rate moved by ``dr`` and the dividend yield by ``dd`` (``carry``, ``dq``, ``kdr`` those of
    the unmoved rate and yield, ``t`` the time in years)."""
    return _bsm(s, ls, lk, carry + (dr - dd) * t, sqt, sig, w, dq * math.exp(-dd * t), kdr * math.exp(-dr * t))


@inner_njit(forceinline=True)
def _sigma(vol: float, scale: float, shift: float, skew: float, lk: float, ls: float, extra: float) -> float:
    return np.maximum(vol * scale + shift + skew * (lk - ls) + extra, 0.0)


@njit(**JIT)
def _european_kernel(
    spot_new: FloatArray,
    log_spot_new: FloatArray,
    scale: FloatArray,
    shift: FloatArray,
    skew: FloatArray,
    shift_opt: FloatArray,
    opt_stride: int,
    rate_shift: FloatArray,
    div_shift: FloatArray,
    moved: BoolArray,
    per_symbol: bool,
    n_euro: int,
    spot0: FloatArray,
    stock_units: FloatArray,
    opt_sym: IntArray,
    units: FloatArray,
    log_strike: FloatArray,
    t: FloatArray,
    sqt: FloatArray,
    carry: FloatArray,
    vol: FloatArray,
    w: FloatArray,
    dq: FloatArray,
    kdr: FloatArray,
    base: FloatArray,
    out_pnl: FloatArray,
    out_sym: FloatArray,
    start: int,
    stop: int,
) -> None:
    """Stock and European-option (options ``0 .. n_euro-1``, BSM) P&L of the scenarios of blocks
    ``start .. stop-1`` of ``_BLOCK`` (``run_chunked``) into ``out_pnl`` (and ``out_sym``). Kept apart from any
    BS2002 call: with one in the same function LLVM no longer vectorizes the pricing loop.
    """
    n, nsym = spot_new.shape
    for blk in range(start, stop):
        j0 = blk * _BLOCK
        j1 = min(n, j0 + _BLOCK)
        buf = np.empty(n_euro)
        for j in range(j0, j1):
            if not moved[j]:
                for i in range(n_euro):
                    s = opt_sym[i]
                    ls = log_spot_new[j, s]
                    sig = _sigma(
                        vol[i], scale[j, s], shift[j, s], skew[j, s], log_strike[i], ls, shift_opt[j, i * opt_stride]
                    )
                    buf[i] = _bsm(spot_new[j, s], ls, log_strike[i], carry[i], sqt[i], sig, w[i], dq[i], kdr[i])
            else:
                for i in range(n_euro):
                    s = opt_sym[i]
                    ls = log_spot_new[j, s]
                    sig = _sigma(
                        vol[i], scale[j, s], shift[j, s], skew[j, s], log_strike[i], ls, shift_opt[j, i * opt_stride]
                    )
                    dr = rate_shift[j, s]
                    dd = div_shift[j, s]
                    buf[i] = _bsm_shifted(
                        spot_new[j, s], ls, log_strike[i], carry[i], sqt[i], sig, w[i], dq[i], kdr[i], t[i], dr, dd
                    )
            total = 0.0
            for s in range(nsym):
                v = stock_units[s] * (spot_new[j, s] - spot0[s])
                total += v
                if per_symbol:
                    out_sym[j, s] = v
            for i in range(n_euro):
                v = units[i] * (buf[i] - base[i])
                total += v
                if per_symbol:
                    out_sym[j, opt_sym[i]] += v
            out_pnl[j] = total


@njit(**JIT)
def _american_exact_kernel(
    spot_new: FloatArray,
    log_spot_new: FloatArray,
    scale: FloatArray,
    shift: FloatArray,
    skew: FloatArray,
    shift_opt: FloatArray,
    opt_stride: int,
    rate_shift: FloatArray,
    div_shift: FloatArray,
    moved: BoolArray,
    per_symbol: bool,
    n_euro: int,
    opt_sym: IntArray,
    units: FloatArray,
    log_strike: FloatArray,
    strike: FloatArray,
    t: FloatArray,
    vol: FloatArray,
    rate: FloatArray,
    div: FloatArray,
    call: BoolArray,
    base: FloatArray,
    out_pnl: FloatArray,
    out_sym: FloatArray,
    start: int,
    stop: int,
) -> None:
    """Add the P&L of the American options ``n_euro ..`` priced by BS2002 in the scenarios of work items
    ``start .. stop-1`` (``"bs2002"``; ``run_chunked``).

    Work items of ``max(1, _LANE_TARGET // n_american)`` scenarios: every (scenario, option) of an item
    goes through ``american_bs2002_prices`` together, then each scenario's terms are added in position
    order (a price does not depend on its batch, so neither does the P&L).
    """
    n = spot_new.shape[0]
    na = units.shape[0] - n_euro
    if na == 0:
        return
    per_item = max(1, _LANE_TARGET // na)
    for item in range(start, stop):
        j0 = item * per_item
        j1 = min(n, j0 + per_item)
        m = (j1 - j0) * na
        ps, pk, pt, pv, pr, pq, px = (
            np.empty(m),
            np.empty(m),
            np.empty(m),
            np.empty(m),
            np.empty(m),
            np.empty(m),
            np.empty(m),
        )
        pc = np.empty(m, dtype=np.bool_)
        for j in range(j0, j1):
            for a in range(na):
                i = n_euro + a
                s = opt_sym[i]
                c = (j - j0) * na + a
                ps[c] = spot_new[j, s]
                pk[c] = strike[i]
                pt[c] = t[i]
                pv[c] = _sigma(
                    vol[i],
                    scale[j, s],
                    shift[j, s],
                    skew[j, s],
                    log_strike[i],
                    log_spot_new[j, s],
                    shift_opt[j, i * opt_stride],
                )
                pr[c] = rate[i] + rate_shift[j, s]
                pq[c] = div[i] + div_shift[j, s]
                pc[c] = call[i]
        american_bs2002_prices(ps, pk, pt, pv, pr, pq, pc, px, np.intp(0), m)
        for j in range(j0, j1):
            total = out_pnl[j]
            for a in range(na):
                i = n_euro + a
                v = units[i] * (px[(j - j0) * na + a] - base[i])
                total += v
                if per_symbol:
                    out_sym[j, opt_sym[i]] += v
            out_pnl[j] = total


@inner_njit(forceinline=True)
def _horner(c: FloatArray, x: float) -> float:
    """``((c[0] x + c[1]) x + c[2]) x + c[3]``."""
    return ((c[0] * x + c[1]) * x + c[2]) * x + c[3]


#: Built with LLVM's SLP vectorizer (``slp_njit``): the shifted read's fold of a cell (16 coefficients plus their
#: rate and yield terms, four Horner chains of four over contiguous coefficients) is packed into vector instructions,
#: the same IEEE operations (the same prices bit for bit); without it numba's build is scalar code.
@slp_njit()
def _american_grid_values(
    spot_t: FloatArray,
    log_spot_t: FloatArray,
    scale_t: FloatArray,
    shift_t: FloatArray,
    skew_t: FloatArray,
    shift_opt_t: FloatArray,
    opt_stride: int,
    rate_t: FloatArray,
    div_t: FloatArray,
    shifted: bool,
    runs: bool,
    n_euro: int,
    opt_sym: IntArray,
    log_strike: FloatArray,
    strike: FloatArray,
    t: FloatArray,
    sqt: FloatArray,
    carry: FloatArray,
    vol: FloatArray,
    w: FloatArray,
    dq: FloatArray,
    kdr: FloatArray,
    g_mode: NDArray[np.int8],
    g_y0: FloatArray,
    g_dy: FloatArray,
    g_v0: FloatArray,
    g_dv: FloatArray,
    g_coef: FloatArray,
    g_bcoef: FloatArray,
    g_step: FloatArray,
    g_dcoef: FloatArray,
    g_dbcoef: FloatArray,
    values: FloatArray,
    n_nan: IntArray,
    start: int,
    stop: int,
) -> None:
    """American price ``values[m, j]`` of option ``n_euro + m``, ``m`` in ``start .. stop-1`` (``run_chunked``),
    in scenario ``j``: BSM plus the interpolated early-exercise premium, or NaN where the exact engine is needed
    (mode 2, off the grid in any coordinate, e.g. a book prepared for other scenarios); ``n_nan[m]`` counts the
    NaNs.

    The scenario inputs are symbol-major (``x_t[s, j]``, contiguous along the scenarios). Each option's scenarios
    go in blocks of ``_READ_BLOCK`` through two passes: the first reads the grids (gathers of the cells' spline
    coefficients) and keeps per scenario the vol, BSM's carry and discount factors, the premium (NaN where the grid
    gives no value) and whether only the floor applies; the second, without gathers and branch-free, prices BSM from
    those and applies the floors, and vectorizes (one loop over the scenarios with both did not: BSM took half the
    read). The same operations on the same numbers as one pass, so the same prices bit for bit. Kept apart from any
    exact pricing; ``g_bcoef`` is the cubic spline in vol of ``ln(S*/K)``. ``shifted`` (the set moves rates or
    dividend yields, ``rate_t``/``div_t``): each price is read from the grids interpolated quadratically in the shifts
    (``_with_eep_grid``; ``g_step`` the shifted grids' steps, ``g_dcoef``/``g_dbcoef`` their differences from the base
    grid); without it those are not read. The shifted read folds a cell first: each of its 16 coefficients plus its
    rate and yield terms, summed along vol (Horner in the vol coordinate) into one cubic in the y coordinate, which
    the scenario evaluates (the unshifted read sums the y cubics of the four vol powers). The same polynomial as
    summing the 16 Horner chains in y of ``g_dcoef`` per scenario, in another order (prices within rounding of it).

    ``runs`` (with ``shifted``; scenario sets whose rows come in runs that move an option's vol, rate and yield alike
    and only its spot differently, e.g. the gap VaR's combined set of many past gaps of one historical window): what
    does not depend on the spot (the vol coordinates, the boundary ``ln(S*/K)`` read from the shifted grids, BSM's
    shifted carry and discount factors) is computed only when an option's (vol, rate shift, yield shift) differs in
    its bits from the previous scenario's, and reused while it does not, and a cell's folded cubic is made once a run
    (the first time a scenario of the run reaches the cell; a gap set's run of about 26 spots reaches a few cells).
    The same operations on the same inputs either way, so the same prices bit for bit; without ``runs`` every
    scenario computes them. One kernel for both reads (not a second ``_american_grid_values_runs``), so the demo
    compiles one.
    """
    n = values.shape[1]
    ny = g_coef.shape[2] + 1
    nv = g_coef.shape[1] + 1
    nb = g_bcoef.shape[1] + 1
    b_per_v = (nb - 1) / (nv - 1)
    # one block's spot-free BSM inputs, premiums (NaN: no grid value) and floor flags, from pass 1 to pass 2
    b_sig = np.empty(_READ_BLOCK)
    b_carry = np.empty(_READ_BLOCK)
    b_dq = np.empty(_READ_BLOCK)
    b_kdr = np.empty(_READ_BLOCK)
    b_eep = np.empty(_READ_BLOCK)
    b_floor = np.empty(_READ_BLOCK)  # 1.0: only the floor applies (floats: no other array type to compile)
    # the shifted read's folded cubics in ty per y cell, and the run (``run_no``) each was folded in
    fold = np.empty((ny - 1, 4))
    fold_run = np.full(ny - 1, -1.0)
    run_no = 0.0
    for m in range(start, stop):  # option-major: one option's spline (~3 kB) stays in cache across the scenarios
        i = n_euro + m
        s = opt_sym[i]
        mode = g_mode[m]
        inv_dv = 1.0 / g_dv[m]  # grid coordinates by multiplication (vectorizes better)
        inv_dy = 1.0 / g_dy[m]
        lk = log_strike[i]
        ti = t[i]
        sq = sqt[i]
        wi = w[i]
        ki = strike[i]
        count = 0
        h_r = g_step[m, 0] if shifted else 0.0
        h_q = g_step[m, 1] if shifted else 0.0
        inv_r = 1.0 / h_r if h_r != 0.0 else 0.0
        inv_q = 1.0 / h_q if h_q != 0.0 else 0.0
        lim_r = abs(h_r) * (1.0 + 1e-9)
        lim_q = abs(h_q) * (1.0 + 1e-9)
        # the previous scenario's vol and shifts, and what they gave
        last_sig = math.nan
        last_dr = math.nan
        last_dd = math.nan
        fv = 0.0
        iv = np.int64(0)
        tv = 0.0
        lstar = 0.0
        xr = 0.0
        xq = 0.0
        in_range = not shifted  # the unshifted read has no rate and yield range
        carry_s = 0.0
        dq_s = 0.0
        kdr_s = 0.0
        if not shifted:
            for c in range(_READ_BLOCK):
                b_carry[c] = carry[i]
                b_dq[c] = dq[i]
                b_kdr[c] = kdr[i]
        for j0 in range(0, n, _READ_BLOCK):
            j1 = min(n, j0 + _READ_BLOCK)
            for j in range(j0, j1):  # pass 1: the grids
                ls = log_spot_t[s, j]
                extra = shift_opt_t[i * opt_stride, j]
                sig = _sigma(vol[i], scale_t[s, j], shift_t[s, j], skew_t[s, j], lk, ls, extra)
                dr = rate_t[s, j] if shifted else 0.0
                dd = div_t[s, j] if shifted else 0.0
                same = (
                    runs
                    and shifted
                    and (
                        sig == last_sig
                        and dr == last_dr
                        and dd == last_dd
                        and math.copysign(1.0, sig) == math.copysign(1.0, last_sig)
                        and math.copysign(1.0, dr) == math.copysign(1.0, last_dr)
                        and math.copysign(1.0, dd) == math.copysign(1.0, last_dd)
                    )
                )
                if not same:
                    run_no += 1.0
                    last_sig = sig
                    last_dr = dr
                    last_dd = dd
                    fv = (sig - g_v0[m]) * inv_dv
                    iv = np.int64(np.minimum(np.maximum(fv, 0.0), nv - 2.0))
                    tv = fv - iv
                    fb = fv * b_per_v
                    ib = np.int64(np.minimum(np.maximum(fb, 0.0), nb - 2.0))
                    tb = fb - ib
                    lstar = ((g_bcoef[m, ib, 0] * tb + g_bcoef[m, ib, 1]) * tb + g_bcoef[m, ib, 2]) * tb + (
                        g_bcoef[m, ib, 3]
                    )
                    if shifted:
                        xr = dr * inv_r
                        xq = dd * inv_q
                        in_range = (abs(dr) <= lim_r) & (abs(dd) <= lim_q)
                        b0 = _horner(g_dbcoef[m, 0, ib], tb)
                        b1 = _horner(g_dbcoef[m, 1, ib], tb)
                        b2 = _horner(g_dbcoef[m, 2, ib], tb)
                        b3 = _horner(g_dbcoef[m, 3, ib], tb)
                        lstar += xr * (b0 + xr * b1) + xq * (b2 + xq * b3)
                        carry_s = carry[i] + (dr - dd) * ti  # _bsm_shifted's arguments
                        dq_s = dq[i] * math.exp(-dd * ti)
                        kdr_s = kdr[i] * math.exp(-dr * ti)
                y = wi * (lstar - ls + lk)  # distance to the exercise boundary, > 0: continuation
                fy = (y - g_y0[m]) * inv_dy
                iy = np.int64(np.minimum(np.maximum(fy, 0.0), ny - 2.0))
                ty = fy - iy
                if shifted:
                    # the cell's premium as one cubic in ty: its 16 coefficients with the rate and yield terms
                    # added and summed along vol (Horner in tv), once a run per cell the run reaches (each row's
                    # cubic depends on its own inputs only: the same bits in runs or not)
                    if not (runs and fold_run[iy] == run_no):
                        f0 = 0.0
                        f1 = 0.0
                        f2 = 0.0
                        f3 = 0.0
                        for a in range(4):
                            coef = g_coef[m, iv, iy, a]
                            d0 = g_dcoef[m, 0, iv, iy, a]
                            d1 = g_dcoef[m, 1, iv, iy, a]
                            d2 = g_dcoef[m, 2, iv, iy, a]
                            d3 = g_dcoef[m, 3, iv, iy, a]
                            f0 = f0 * tv + (coef[0] + xr * (d0[0] + xr * d1[0]) + xq * (d2[0] + xq * d3[0]))
                            f1 = f1 * tv + (coef[1] + xr * (d0[1] + xr * d1[1]) + xq * (d2[1] + xq * d3[1]))
                            f2 = f2 * tv + (coef[2] + xr * (d0[2] + xr * d1[2]) + xq * (d2[2] + xq * d3[2]))
                            f3 = f3 * tv + (coef[3] + xr * (d0[3] + xr * d1[3]) + xq * (d2[3] + xq * d3[3]))
                        fold[iy, 0] = f0
                        fold[iy, 1] = f1
                        fold[iy, 2] = f2
                        fold[iy, 3] = f3
                        fold_run[iy] = run_no
                    eep = ((fold[iy, 0] * ty + fold[iy, 1]) * ty + fold[iy, 2]) * ty + fold[iy, 3]
                else:
                    eep = 0.0
                    for a in range(4):
                        cc = (
                            (g_coef[m, iv, iy, a, 0] * ty + g_coef[m, iv, iy, a, 1]) * ty + g_coef[m, iv, iy, a, 2]
                        ) * ty + g_coef[m, iv, iy, a, 3]
                        eep = eep * tv + cc
                on_grid = (fy >= 0.0) & (fy <= ny - 1.0) & (fv >= -1e-9) & (fv <= nv - 1.0 + 1e-9) & in_range
                c = j - j0
                b_sig[c] = sig
                if shifted:
                    b_carry[c] = carry_s
                    b_dq[c] = dq_s
                    b_kdr[c] = kdr_s
                b_eep[c] = eep if ((mode == 1) & on_grid) else math.nan
                b_floor[c] = np.float64((mode == 0) | (sig * sq <= _AM_MIN_TOTAL_STD) | ((mode == 1) & (y <= 0.0)))
            for j in range(j0, j1):  # pass 2: BSM and the floors, no gathers (vectorizes)
                c = j - j0
                sp = spot_t[s, j]
                euro = _bsm(sp, log_spot_t[s, j], lk, b_carry[c], sq, b_sig[c], wi, b_dq[c], b_kdr[c])
                intrinsic = wi * (sp - ki)
                spline = np.maximum(euro + np.maximum(b_eep[c], 0.0), intrinsic)  # BS2002's own floors
                price = np.maximum(euro, intrinsic) if b_floor[c] != 0.0 else spline
                count += np.int64(price != price)
                values[m, j] = price
        n_nan[m] = count


@njit(**JIT)
def _american_grid_sum(
    values: FloatArray,
    per_symbol: bool,
    n_euro: int,
    opt_sym: IntArray,
    units: FloatArray,
    base: FloatArray,
    out_pnl: FloatArray,
    out_sym: FloatArray,
) -> None:
    """Add the American P&L from the prices ``values[m, j]``, each scenario's terms in position order (blocks
    of scenarios read the option-major values row by row). Sequential: a pass over memory, too short to gain
    from threads.

    A block's per-underlying sums are run in a buffer with the underlyings as rows (``acc[k, c]``: the block's
    scenarios contiguous, one row per underlying with an American, in order of first appearance), started from
    ``out_sym``'s entries and written back at the block's end: each entry gets the same additions in the same
    order as added in place (the same bits), without a strided write into ``out_sym`` for every price."""
    na, n = values.shape
    n_sym = out_sym.shape[1] if per_symbol else 0
    row = np.full(n_sym, -1, dtype=np.int64)  # an underlying's row of acc, -1: no American on it
    held = np.empty(n_sym, dtype=np.int64)  # the underlying of each row
    n_held = 0
    for m in range(na if per_symbol else 0):
        s = opt_sym[n_euro + m]
        if row[s] < 0:
            row[s] = n_held
            held[n_held] = s
            n_held += 1
    acc = np.empty((n_held, _BLOCK))
    total = np.empty(_BLOCK)
    for blk in range((n + _BLOCK - 1) // _BLOCK):
        j0 = blk * _BLOCK
        nb = min(n, j0 + _BLOCK) - j0
        for c in range(nb):
            total[c] = out_pnl[j0 + c]
        for k in range(n_held):
            s = held[k]
            for c in range(nb):
                acc[k, c] = out_sym[j0 + c, s]
        for m in range(na):
            i = n_euro + m
            u = units[i]
            b = base[i]
            vm = values[m, j0 : j0 + nb]
            if per_symbol:
                a = acc[row[opt_sym[i]]]
                for c in range(nb):
                    v = u * (vm[c] - b)
                    total[c] += v
                    a[c] += v
            else:
                for c in range(nb):
                    total[c] += u * (vm[c] - b)
        for c in range(nb):
            out_pnl[j0 + c] = total[c]
        for k in range(n_held):
            s = held[k]
            for c in range(nb):
                out_sym[j0 + c, s] = acc[k, c]


@njit(**JIT)
def _bsm_kernel(
    spot: FloatArray,
    log_spot: FloatArray,
    log_strike: FloatArray,
    carry: FloatArray,
    sqt: FloatArray,
    vol: FloatArray,
    w: FloatArray,
    dq: FloatArray,
    kdr: FloatArray,
    out: FloatArray,
) -> None:
    """BSM prices by the kernels' own formula (``_bsm``), element by element (sequential: the book's options
    and the premium grid's nodes, a few milliseconds)."""
    for i in range(out.shape[0]):
        out[i] = _bsm(spot[i], log_spot[i], log_strike[i], carry[i], sqt[i], vol[i], w[i], dq[i], kdr[i])


@njit(**JIT)
def _bsm_node_kernel(
    spot: FloatArray,
    log_spot: FloatArray,
    log_strike: FloatArray,
    carry: FloatArray,
    sqt: FloatArray,
    vol: FloatArray,
    w: FloatArray,
    dq: FloatArray,
    kdr: FloatArray,
    out: FloatArray,
) -> None:
    """``_bsm_kernel`` at the premium grid's nodes: ``out[m, l, c]`` the BSM price (``_bsm``) at ``spot[m, l, c]``,
    ``log_spot[m, l, c]`` and vol ``vol[m, l]`` of option ``m`` (its strike, carry and discount factors per option),
    the same call on the same numbers as ``_bsm_kernel`` on the per-option arrays broadcast to the nodes, without
    those copies (sequential, as ``_bsm_kernel``)."""
    na, nv, nu = out.shape
    for m in range(na):
        lk = log_strike[m]
        cm = carry[m]
        sq = sqt[m]
        wm = w[m]
        dm = dq[m]
        km = kdr[m]
        for v in range(nv):
            sig = vol[m, v]
            for c in range(nu):
                out[m, v, c] = _bsm(spot[m, v, c], log_spot[m, v, c], lk, cm, sq, sig, wm, dm, km)


def _eep_nodes(
    ls_star: FloatArray,
    y: FloatArray,
    v: FloatArray,
    bnd: FloatArray,
    k: FloatArray,
    lk: FloatArray,
    t: FloatArray,
    sqt: FloatArray,
    carry: FloatArray,
    r: FloatArray,
    q: FloatArray,
    w: FloatArray,
    call: BoolArray,
    dq: FloatArray,
    kdr: FloatArray,
) -> FloatArray:
    """``American - BSM``, ``(n_options, n_vol_nodes, n_y_nodes)``, at ``ln S = ln S*(v_l) - w y_c`` (the
    exact engine on ``GRID_TABLES``, from the boundaries ``bnd`` already solved at those vols)."""
    shape = (v.shape[0], v.shape[1], y.shape[1])
    ls = ls_star[:, :, None] - w[:, None, None] * y[:, None, :]
    s = np.exp(ls)
    am = _grid_prices(t, r, q, call, k, v, s, bnd)
    # BSM at the nodes by the kernels' own formula, the per-option inputs read per option (not broadcast to the
    # nodes and copied: seven arrays of the nodes' size a fit), then subtracted in place (the same bits)
    euro = np.empty(shape)
    _bsm_node_kernel(
        s, ls, *(np.ascontiguousarray(a) for a in (lk, carry, sqt, v, w, dq, kdr)), euro
    )  # fmt: skip
    return np.subtract(am, euro, out=am)


@njit(**JIT)
def _vol_range(
    log_spot_new: FloatArray,
    scale: FloatArray,
    shift: FloatArray,
    skew: FloatArray,
    shift_opt: FloatArray,
    opt_stride: int,
    opt_sym: IntArray,
    log_strike: FloatArray,
    vol: FloatArray,
    first: int,
    lo: FloatArray,
    hi: FloatArray,
    ls_lo: FloatArray,
    ls_hi: FloatArray,
    start: int,
    stop: int,
) -> None:
    """Range of the shocked vol and of the shocked log spot of options ``first + m`` over all scenarios, ``m`` in
    ``start .. stop-1`` (``run_chunked``)."""
    for m in range(start, stop):
        i = first + m
        s = opt_sym[i]
        a = math.inf
        b = -math.inf
        c = math.inf
        d = -math.inf
        for j in range(log_spot_new.shape[0]):
            ls = log_spot_new[j, s]
            sig = _sigma(vol[i], scale[j, s], shift[j, s], skew[j, s], log_strike[i], ls, shift_opt[j, i * opt_stride])
            a = min(a, sig)
            b = max(b, sig)
            c = min(c, ls)
            d = max(d, ls)
        lo[m] = a
        hi[m] = b
        ls_lo[m] = c
        ls_hi[m] = d


@njit(**JIT)
def _alo_plan(
    spot_t: FloatArray,
    scale_t: FloatArray,
    shift_t: FloatArray,
    skew_t: FloatArray,
    log_spot_t: FloatArray,
    shift_opt: FloatArray,
    opt_stride: int,
    rate_t: FloatArray,
    div_t: FloatArray,
    n_euro: int,
    opt_sym: IntArray,
    log_strike: FloatArray,
    t: FloatArray,
    vol: FloatArray,
    rate: FloatArray,
    div: FloatArray,
    call: BoolArray,
    inputs: FloatArray,
    kind: NDArray[np.int8],
    src: IntArray,
    bounds: FloatArray,
    n_bounds: IntArray,
    start: int,
    stop: int,
) -> None:
    """What the exact engine must do for option ``n_euro + m`` (``m`` in ``start .. stop-1``, ``run_chunked``) in
    scenario ``j``, scenario inputs symbol-major: ``inputs[:, m, j]`` = (spot, vol, rate, yield); ``kind[m, j]`` 0:
    the previous scenario's inputs again (its price: scenario ``src[m, j]``), 1: ``american_point`` (no single
    exercise boundary, or zero vol), 2: the price on boundary ``src[m, j]`` of the option's list ``bounds[:, m]``
    (pr, pq, vol, x_max; ``n_bounds[m]`` of them). The boundary depends on the vol, rate and dividend yield only,
    not on the spot: each option keeps the last ``_BOUNDARY_CACHE`` boundaries it solved, keyed by (vol, rate,
    yield), and prices a new spot on a cached one."""
    n = kind.shape[1]
    nb = _BOUNDARY_CACHE
    for m in range(start, stop):
        i = n_euro + m
        sy = opt_sym[i]
        c = call[i]
        keys = np.full((nb, 3), math.nan)
        ids = np.zeros(nb, dtype=np.intp)
        slot = 0
        count = 0
        last = (math.nan, math.nan, math.nan, math.nan)
        last_j = -1
        for j in range(n):
            sp = spot_t[sy, j]
            sig = _sigma(
                vol[i],
                scale_t[sy, j],
                shift_t[sy, j],
                skew_t[sy, j],
                log_strike[i],
                log_spot_t[sy, j],
                shift_opt[j, i * opt_stride],
            )
            rr = rate[i] + rate_t[sy, j]
            qq = div[i] + div_t[sy, j]
            if sp == last[0] and sig == last[1] and rr == last[2] and qq == last[3]:  # e.g. an unmoved underlying
                kind[m, j] = 0
                src[m, j] = last_j
                continue
            last = (sp, sig, rr, qq)
            last_j = j
            inputs[0, m, j] = sp
            inputs[1, m, j] = sig
            inputs[2, m, j] = rr
            inputs[3, m, j] = qq
            pr, pq = (qq, rr) if c else (rr, qq)
            single = not ((pr <= 0.0) & (pr <= pq) or (pr < 0.0) & (pq < pr)) and sig * math.sqrt(t[i]) > 1e-8
            if not single:
                kind[m, j] = 1
                continue
            hit = -1
            for b in range(nb):
                if keys[b, 0] == sig and keys[b, 1] == rr and keys[b, 2] == qq:
                    hit = b
                    break
            if hit < 0:
                hit = slot
                slot = (slot + 1) % nb
                keys[hit, 0] = sig
                keys[hit, 1] = rr
                keys[hit, 2] = qq
                ids[hit] = count
                bounds[0, m, count] = pr
                bounds[1, m, count] = pq
                bounds[2, m, count] = sig
                bounds[3, m, count] = exercise_limit(1.0, pr, pq)
                count += 1
            kind[m, j] = 2
            src[m, j] = ids[hit]
        n_bounds[m] = count


def _alo_values(book: PreparedBook, inp: _ChunkInputs, values: FloatArray) -> None:
    """Exact American price ``values[m, j]`` of option ``n_euro + m`` in scenario ``j`` (the engine of
    ``american_alo.py``): ``_alo_plan``, then each boundary solved once (``american_alo.solve_boundaries``), the
    spots priced on them (``premiums``, same arithmetic as ``american_price``) and the other regimes by
    ``american_points``."""
    n_am, n = values.shape
    first = book.n_euro
    inputs = np.empty((4, n_am, n))
    kind = np.empty((n_am, n), dtype=np.int8)
    src = np.empty((n_am, n), dtype=np.intp)
    bounds = np.empty((4, n_am, n))
    n_bounds = np.empty(n_am, dtype=np.intp)
    sym_major = inp.symbol_major("spot_new", "scale", "shift", "skew", "log_spot_new")
    run_chunked(
        _alo_plan,
        n_am,
        *sym_major,
        inp.shift_opt,
        inp.opt_stride,
        np.ascontiguousarray(inp.rate.T),
        np.ascontiguousarray(inp.div.T),
        first,
        book.opt_sym,
        book.log_strike,
        book.t,
        book.vol,
        book.rate,
        book.div,
        book.call,
        inputs,
        kind,
        src,
        bounds,
        n_bounds,
    )
    used = np.arange(n)[None, :] < n_bounds[:, None]
    t_b = book.t[first + np.nonzero(used)[0]]
    pr, pq, sig_b, x_max = (bounds[f][used] for f in range(4))
    s, _, _ = solve_boundaries(pr, pq, sig_b, t_b, x_max, NEWTON_STEP_TOL, EXACT_TABLES)
    m, j = np.nonzero(kind == 2)
    if m.size:  # american_alo.price_from_unit_boundary
        i = first + m
        sp, sig, rr, qq = (inputs[f, m, j] for f in range(4))
        c, k = book.call[i], book.strike[i]
        ps, pk = np.where(c, k, sp), np.where(c, sp, k)
        row = (np.cumsum(n_bounds) - n_bounds)[m] + src[m, j]
        p = premiums(ps / pk, row, (pr, pq, sig_b, t_b, x_max), s, EXACT_TABLES, False)[0] * pk
        euro = np.empty(m.size)
        run_chunked(_bsm_price_kernel, m.size, sp, k, book.t[i], sig, rr, qq, c, euro)
        values[m, j] = py_max(py_max(p, pk - ps), euro)
    m, j = np.nonzero(kind == 1)
    if m.size:
        i = first + m
        sp, sig, rr, qq = (inputs[f, m, j] for f in range(4))
        values[m, j] = american_points(
            sp, book.strike[i], book.t[i], sig, rr, qq, book.call[i], NEWTON_STEP_TOL, False, False, True
        )[0]
    m, j = np.nonzero(kind == 0)
    values[m, j] = values[m, src[m, j]]


def _grid_solve(
    t: FloatArray, r: FloatArray, q: FloatArray, call: BoolArray, v: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Exercise boundary at maturity of every option at every grid vol: ``ratio[m, l] = S*/K`` (NaN where
    the grid does not apply: no early exercise, two boundaries, zero vol, a failed solve) and the unit-strike
    put boundary ``bnd[m, l]`` (``american_alo.put_boundary``, ``GRID_TABLES``; calls by the symmetry; zeros
    where not solved)."""
    na, nv = v.shape
    ratio = np.full((na, nv), np.nan)
    bnd = np.zeros((na, nv, GRID_TABLES[0].size))
    pr, pq = np.where(call, q, r), np.where(call, r, q)
    skip = (pr <= 0.0) & (pr <= pq) | (pr < 0.0) & (pq < pr)
    with np.errstate(invalid="ignore"):
        go = ~skip[:, None] & (v * np.sqrt(t)[:, None] > 1e-8)
    m, col = np.nonzero(go)
    if m.size:
        s, steps, b_t = solve_boundaries(
            pr[m], pq[m], v[m, col], t[m], exercise_limits(pr[m], pq[m]), 1e-7, GRID_TABLES
        )
        bnd[m, col] = s
        with np.errstate(divide="ignore"):
            ratio[m, col] = np.where(steps > 0, np.where(call[m], 1.0 / b_t, b_t), np.nan)
    return ratio, bnd


def _grid_prices(
    t: FloatArray,
    r: FloatArray,
    q: FloatArray,
    call: BoolArray,
    k: FloatArray,
    v: FloatArray,
    spot: FloatArray,
    bnd: FloatArray,
) -> FloatArray:
    """American prices at the grid nodes ``spot[m, l, c]`` (vol ``v[m, l]``) from the boundaries of
    ``_grid_solve``: ``K p(S/K)`` for puts, ``S p'(K/S)`` for calls (homogeneity, unit strike)."""
    na, nv, nu = spot.shape
    pr, pq = np.where(call, q, r), np.where(call, r, q)
    per_bnd = [np.repeat(a, nv) for a in (pr, pq)]
    bounds = (*per_bnd, np.ascontiguousarray(v).reshape(-1), np.repeat(t, nv), np.repeat(exercise_limits(pr, pq), nv))
    cb = call[:, None, None]
    kb = k[:, None, None]
    x = np.where(cb, kb / spot, spot / kb).reshape(na * nv, nu)
    scale = np.where(cb, spot, kb)
    # the nu spots of each boundary together (its spot-free terms once): premiums' prices, bit for bit
    p = row_premiums(x, bounds, np.ascontiguousarray(bnd).reshape(na * nv, -1), GRID_TABLES)
    return scale * p.reshape(spot.shape)


# ----------------------------------------------------------------------------------------------
# prepared book
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PreparedBook:
    """Per-option constants of a portfolio at one horizon (built once by ``prepare``).

    Options are reordered Europeans first (``n_euro`` of them), then Americans; ``option_positions``
    maps them back to positions. ``base`` is every option's value today, ``unmoved`` its value at the
    horizon with today's spot, vol and rate (both cached per portfolio; ``unmoved`` priced on first use: only a
    scenario that leaves an American off its grid and unmoved reads it). The ``grid_*`` arrays (one entry
    per American, when ``american == "eep_grid"``) hold the early-exercise-premium spline.
    """

    n_positions: int
    symbol_index: IntArray
    spot0: FloatArray
    log_spot0: FloatArray
    stock_units: FloatArray
    option_positions: IntArray
    n_euro: int
    opt_sym: IntArray
    units: FloatArray
    log_strike: FloatArray
    strike: FloatArray
    t: FloatArray
    sqrt_t: FloatArray
    carry: FloatArray
    vol: FloatArray
    rate: FloatArray
    div: FloatArray
    w: FloatArray
    call: BoolArray
    dq: FloatArray
    kdr: FloatArray
    base: FloatArray
    unmoved_values: _UnmovedValues
    grid_mode: NDArray[np.int8]
    grid_y0: FloatArray
    grid_dy: FloatArray
    grid_v0: FloatArray
    grid_dv: FloatArray
    grid_coef: FloatArray
    grid_bcoef: FloatArray
    #: rate and yield steps of the shifted grids ``(n_american, 2)``, their coefficient differences from the base
    #: grid (no rows when the set shifts neither)
    grid_step: FloatArray
    grid_dcoef: FloatArray
    grid_dbcoef: FloatArray
    horizon_days: float
    american: AmericanMethod

    @property
    def n_symbols(self) -> int:
        return int(self.spot0.shape[0])

    @property
    def unmoved(self) -> FloatArray:
        """Every option's value at the horizon with today's spot, vol and rate (priced on first use)."""
        return self.unmoved_values()


def _time_constants(t: FloatArray, strike: FloatArray, rate: FloatArray, div: FloatArray) -> dict[str, FloatArray]:
    """``sqrt(T)``, ``(r - q) T``, ``e^{-qT}`` and ``K e^{-rT}`` (one code path for every horizon)."""
    return {"sqrt_t": np.sqrt(t), "carry": (rate - div) * t, "dq": np.exp(-div * t), "kdr": strike * np.exp(-rate * t)}


def _option_arrays(p: Portfolio, opt: IntArray) -> dict[str, Any]:
    k = np.ascontiguousarray(p.strike[opt])
    return {
        "opt_sym": np.ascontiguousarray(p.symbol_index[opt]),
        "units": np.ascontiguousarray(p.units[opt]),
        "strike": k,
        "log_strike": np.log(k),
        "vol": np.ascontiguousarray(p.implied_vol[opt]),
        "rate": np.ascontiguousarray(p.rate[opt]),
        "div": np.ascontiguousarray(p.dividend_yield[opt]),
        "w": np.where(p.is_call[opt], 1.0, -1.0),
        "call": np.ascontiguousarray(p.is_call[opt]),
    }


#: Per portfolio: option values with today's spot, vol and rate after ``horizon_days`` (key ``(horizon_days,
#: method)``), so that the many scenario sets of one book (VaR horizons, stress, events) price them once.
_UNMOVED: weakref.WeakKeyDictionary[Portfolio, dict[tuple[float, str], FloatArray]] = weakref.WeakKeyDictionary()


def _unmoved_values(
    p: Portfolio, opt: IntArray, arrays: dict[str, Any], horizon_days: float, american: AmericanMethod
) -> FloatArray:
    """``_base_values`` at ``T' = max(T - horizon_days / 365, 0)`` for the options ``opt``, cached per portfolio."""
    key = (float(horizon_days), "bs2002" if american == "bs2002" else "alo")
    cache = _UNMOVED.setdefault(p, {})
    if key not in cache:
        all_opt = np.flatnonzero(p.is_option)
        t_new = np.maximum(p.time_years[all_opt] - horizon_days / DAYS_PER_YEAR, 0.0)
        full = np.full(p.n_positions, np.nan)
        full[all_opt] = _base_values(p, all_opt, _option_arrays(p, all_opt), american, t_new)
        full.setflags(write=False)
        cache[key] = full
    return cache[key][opt]


@dataclass(frozen=True, eq=False)
class _UnmovedValues:
    """``_unmoved_values(portfolio, opt, ..., horizon_days, american)``, priced when first called (then cached per
    portfolio like every ``_unmoved_values``): most scenario sets never read them, and each option is priced on
    its own, so pricing them later gives the same bits."""

    portfolio: Portfolio
    opt: IntArray
    horizon_days: float
    american: AmericanMethod

    def __call__(self) -> FloatArray:
        p = self.portfolio
        return _unmoved_values(p, self.opt, _option_arrays(p, self.opt), self.horizon_days, self.american)


def _base_values(
    p: Portfolio,
    opt: IntArray,
    arrays: dict[str, Any],
    american: AmericanMethod = "exact",
    t_years: FloatArray | None = None,
) -> FloatArray:
    t = np.ascontiguousarray(p.time_years[opt] if t_years is None else t_years)
    tc = _time_constants(t, arrays["strike"], arrays["rate"], arrays["div"])
    sym = arrays["opt_sym"]
    out = np.empty(opt.size)
    if opt.size:
        spot = np.ascontiguousarray(p.spot[sym])
        _bsm_kernel(
            spot,
            np.log(p.spot)[sym],
            arrays["log_strike"],
            tc["carry"],
            tc["sqrt_t"],
            arrays["vol"],
            arrays["w"],
            tc["dq"],
            tc["kdr"],
            out,
        )
        am = np.flatnonzero(p.is_american[opt])  # the exact engine, or BS2002 as in its kernel (same bits)
        if am.size:
            out[am] = american_price(
                spot[am],
                arrays["strike"][am],
                t[am],
                arrays["vol"][am],
                arrays["rate"][am],
                arrays["div"][am],
                arrays["call"][am],
                method="bs2002" if american == "bs2002" else "alo",
            )
    return out


def option_values(portfolio: Portfolio) -> FloatArray:
    """Today's price per unit of every position: spot for stocks, BSM or the exact American engine for options."""
    out = np.asarray(portfolio.position_spot, dtype=np.float64).copy()
    opt = np.flatnonzero(portfolio.is_option)
    out[opt] = _unmoved_values(portfolio, opt, _option_arrays(portfolio, opt), 0.0, "exact")
    return out


def prepare(
    portfolio: Portfolio,
    horizon_days: float = 0.0,
    scenarios: ScenarioSet | None = None,
    american: AmericanMethod = "exact",
    *,
    kept: dict[tuple[int, int], _ChunkInputs] | None = None,
) -> PreparedBook:
    """Precompute the per-option constants at ``T' = max(T - horizon_days / 365, 0)``.

    ``american="eep_grid"`` needs ``scenarios`` (the grid spans exactly their spot, vol, rate and dividend-yield
    range); it falls back to ``"exact"`` when they carry callable vol shifts. ``kept``: given, the dense inputs the
    grid's range scan made for the set's first chunk are put there (``_eep_ranges``), for ``evaluate_prepared``.
    """
    if american not in ("exact", "eep_grid", "bs2002"):
        raise ValueError(f"unknown american method {american!r}")
    if not (math.isfinite(horizon_days) and horizon_days >= 0.0):
        raise ValueError("horizon_days must be finite and non-negative")
    p = portfolio
    is_am = p.is_american
    opt = np.concatenate([np.flatnonzero(p.is_option & ~is_am), np.flatnonzero(is_am)])
    arrays = _option_arrays(p, opt)
    t_new = np.maximum(p.time_years[opt] - horizon_days / DAYS_PER_YEAR, 0.0)
    method = american
    if method == "eep_grid" and (scenarios is None or _needs_exact(scenarios)):
        method = "exact"
    book = PreparedBook(
        n_positions=p.n_positions,
        symbol_index=p.symbol_index,
        spot0=p.spot,
        log_spot0=np.log(p.spot),
        stock_units=_stock_units(p),
        option_positions=opt,
        n_euro=int(opt.size - np.count_nonzero(is_am)),
        t=t_new,
        **_time_constants(t_new, arrays["strike"], arrays["rate"], arrays["div"]),
        **arrays,
        base=_unmoved_values(p, opt, arrays, 0.0, american),
        unmoved_values=_UnmovedValues(p, opt, float(horizon_days), american),
        grid_mode=np.zeros(0, dtype=np.int8),
        grid_y0=np.zeros(0),
        grid_dy=np.ones(0),
        grid_v0=np.zeros(0),
        grid_dv=np.ones(0),
        grid_coef=np.zeros((0, 1, 1, 4, 4)),
        grid_bcoef=np.zeros((0, 1, 4)),
        grid_step=np.zeros((0, 2)),
        grid_dcoef=np.zeros((0, 4, 1, 1, 4, 4)),
        grid_dbcoef=np.zeros((0, 4, 1, 4)),
        horizon_days=float(horizon_days),
        american=method,
    )
    if method == "eep_grid" and book.n_euro < opt.size:
        assert scenarios is not None
        book = _with_eep_grid(book, scenarios, kept)
    return book


def _stock_units(p: Portfolio) -> FloatArray:
    """Shares held per symbol (the stock positions' units summed)."""
    stock = ~p.is_option
    return np.bincount(p.symbol_index[stock], weights=p.units[stock], minlength=p.n_symbols).astype(np.float64)


def with_quantity(book: PreparedBook, portfolio: Portfolio) -> PreparedBook:
    """``book``, prepared from a portfolio that ``portfolio`` equals but for its quantities, with ``portfolio``'s
    units: every other constant of a prepared book (prices today and at the horizon, the early-exercise grids over a
    scenario set's ranges, the time constants) depends on the positions' contracts, not on how many are held, so
    ``evaluate_prepared(with_quantity(book, portfolio), sc)`` gives the bits of ``evaluate(portfolio, sc, ...)`` for
    the ``sc``, horizon and method ``book`` was prepared with, without pricing or building the grids again."""
    if portfolio.n_positions != book.n_positions or not np.array_equal(portfolio.symbol_index, book.symbol_index):
        raise ValueError("portfolio must have the prepared book's positions")
    return replace(
        book,
        stock_units=_stock_units(portfolio),
        units=np.ascontiguousarray(portfolio.units[book.option_positions]),
    )


def prepare_parts(
    portfolio: Portfolio,
    horizon_days: float,
    parts: Sequence[tuple[IntArray, Portfolio, ScenarioSet | Sequence[ScenarioSet]]],
    n_scenarios: int,
    moves_carry: bool,
) -> list[PreparedBook]:
    """``prepare(portfolio, horizon_days, S, "eep_grid")`` restricted to parts of the book, without ``S``.

    Part ``k`` is ``(rows, sub, scenarios)``: the positions ``rows`` of ``portfolio`` (increasing; every position
    in one part), ``sub`` the book of those positions (on some of the symbols, ``gap_risk.sub_portfolio``), and the
    scenarios under which they are revalued (``sub``'s columns); ``S`` is a set of ``n_scenarios`` scenarios whose
    rows give each part's positions exactly the values its scenarios give them (the spot, vol, rate and yield of
    each option), and ``moves_carry`` whether ``S`` shifts a rate or a yield. Each American's early-exercise grid
    spans the ranges its part's scenarios reach, and the grids are built once for the whole book, as ``prepare``
    builds them on ``S`` (same ranges, same arrays, so the same coefficients bit for bit: the spline fit of
    ``_grid_from_ranges`` is a matrix product over all the book's Americans, whose rounding depends on their count);
    part ``k``'s book is ``sub``'s with its Americans' grids, so revaluing part ``k``'s scenarios on it gives
    ``sub``'s P&L of them on ``S``'s grid. A part's scenarios may come as a sequence of blocks of rows (made when
    read, one at a time): its ranges are those of all of them (min and max, exact).
    """
    blocks = [[sc] if isinstance(sc, ScenarioSet) else sc for _, _, sc in parts]
    books = [prepare(sub, horizon_days, None, "exact") for _, sub, _ in parts]
    full = replace(prepare(portfolio, horizon_days, None, "exact"), american="eep_grid")
    na = full.units.size - full.n_euro
    # a part's blocks share their vol shifts' kind (one whole-set shift, read by rows); without Americans prepare
    # reads only that kind, so the first block stands for them
    exact = [len(b) > 0 and _needs_exact(b[0]) for b in blocks]
    if na == 0 or any(exact):
        if na and any(len(b) != 1 for b in blocks):
            raise ValueError("scenarios the grid cannot span must come as one set per part")
        return [prepare(sub, horizon_days, b[0], "eep_grid") for (_, sub, _), b in zip(parts, blocks, strict=True)]
    # each part's Americans among the whole book's (both in position order)
    am_full = full.option_positions[full.n_euro :]
    where = []
    got = {k: np.full(na, np.nan) for k in ("v_lo", "v_hi", "ls_lo", "ls_hi", "lr", "lq")}
    for (rows, sub, _), part_blocks, book in zip(parts, blocks, books, strict=True):
        if sub.n_positions != len(rows):
            raise ValueError("each part's book must hold its rows")
        at = np.searchsorted(am_full, np.asarray(rows)[book.option_positions[book.n_euro :]])
        where.append(at)
        if at.size:
            ranges = _eep_ranges_of_blocks(book, part_blocks)
            for k, v in got.items():
                v[at] = getattr(ranges, k)
    if np.any(np.isnan(got["v_lo"])):
        raise ValueError("every American of the book must be in one part")
    grid = _grid_from_ranges(full, _GridRanges(**got), n_scenarios, moves_carry)
    fields = ("grid_mode", "grid_y0", "grid_dy", "grid_v0", "grid_dv", "grid_coef", "grid_bcoef")
    out = []
    for book, at in zip(books, where, strict=True):
        if at.size == 0:
            out.append(book)
            continue
        mine = {f: np.ascontiguousarray(getattr(grid, f)[at]) for f in fields}
        for f in ("grid_step", "grid_dcoef", "grid_dbcoef"):  # empty when the set shifts no rate or yield
            a = getattr(grid, f)
            mine[f] = np.ascontiguousarray(a[at]) if a.shape[0] == na else a
        out.append(replace(book, american="eep_grid", **mine))
    return out


def _eep_ranges_of_blocks(book: PreparedBook, blocks: Sequence[ScenarioSet]) -> _GridRanges:
    """``_eep_ranges`` of the blocks of rows of one set together (min and max of theirs: exact, so the ranges of the
    whole set bit for bit)."""
    out: _GridRanges | None = None
    for k in range(len(blocks)):
        r = _eep_ranges(book, blocks[k])
        if out is None:
            out = r
            continue
        for f, pick in (("v_lo", np.minimum), ("v_hi", np.maximum), ("ls_lo", np.minimum), ("ls_hi", np.maximum)):
            pick(getattr(out, f), getattr(r, f), out=getattr(out, f))
        np.maximum(out.lr, r.lr, out=out.lr)
        np.maximum(out.lq, r.lq, out=out.lq)
    if out is None:
        raise ValueError("a part needs at least one block of scenarios")
    return out


def _needs_exact(scenarios: ScenarioSet) -> bool:
    # per-position vol shifts are arrays known in advance: the grid spans the vols they reach (_vol_range); rate
    # and dividend-yield shifts are spanned by the shifted grids
    return callable(scenarios.vol_shift_abs)


@dataclass(frozen=True, eq=False)
class _ChunkInputs:
    spot_new: FloatArray
    log_spot_new: FloatArray
    scale: FloatArray
    shift: FloatArray
    skew: FloatArray
    shift_opt: FloatArray
    opt_stride: int
    #: rate and dividend-yield shifts ``(n, n_symbols)`` and whether row ``j`` moves either (``(n,)``)
    rate: FloatArray
    div: FloatArray
    moved: BoolArray
    #: the arrays made as constants (absent shocks), by name: their value (0 or 1 everywhere)
    constant: tuple[tuple[str, float], ...] = ()

    def symbol_major(self, *names: str) -> list[FloatArray]:
        """The arrays ``names`` transposed to ``(n_symbols, n)``, contiguous (a constant's own array reshaped: every
        entry is the same, so the same bits as its transpose, without a copy or a fill)."""
        fill = dict(self.constant)
        out = []
        for name in names:
            a = getattr(self, name)
            out.append(a.reshape(a.shape[::-1]) if name in fill else np.ascontiguousarray(a.T))
        return out


def _chunk_inputs(book: PreparedBook, sc: ScenarioSet) -> _ChunkInputs:
    """Dense kernel inputs of a chunk: absent shocks become ones / zeros (module docstring)."""
    n, n_sym = sc.n_scenarios, book.n_symbols
    if sc.n_symbols != n_sym:
        raise ValueError(f"scenarios have {sc.n_symbols} symbol columns, the book {n_sym}")
    log_spot_new = book.log_spot0[None, :] + np.log1p(sc.spot_shock_rel)
    shift = no_shift = np.zeros((n, n_sym))
    shift_opt = np.zeros((n, 1))
    stride = 0
    v = sc.vol_shift_abs
    if callable(v):
        lm = np.zeros((n, book.n_positions))
        lm[:, book.option_positions] = book.log_strike[None, :] - log_spot_new[:, book.opt_sym]
        rows = slice(sc.row_offset, sc.row_offset + n)
        full = np.asarray(v(rows, lm, book.symbol_index), dtype=np.float64)
        if full.shape != lm.shape or not np.all(np.isfinite(full)):
            raise ValueError("a vol-shift callable must return finite (n_chunk, n_positions) shifts")
        shift_opt, stride = np.ascontiguousarray(full[:, book.option_positions]), 1
    elif isinstance(v, RowVolShifts):
        if v.n_positions != book.n_positions:
            raise ValueError(f"RowVolShifts are for {v.n_positions} positions, the book has {book.n_positions}")
        if v.make_columns is not None:  # the options' columns only: one copy of them, not of every position's
            shift_opt = np.ascontiguousarray(
                v.make_columns(sc.row_offset, sc.row_offset + n, book.option_positions), dtype=np.float64
            )
            if shift_opt.shape != (n, book.option_positions.size) or not np.all(np.isfinite(shift_opt)):
                raise ValueError("RowVolShifts must make finite (rows, n_positions) shifts")
        else:
            full = np.asarray(v.make(sc.row_offset, sc.row_offset + n), dtype=np.float64)
            if full.shape != (n, book.n_positions) or not np.all(np.isfinite(full)):
                raise ValueError("RowVolShifts must make finite (rows, n_positions) shifts")
            shift_opt = np.ascontiguousarray(full[:, book.option_positions])
            del full
        stride = 1
    elif v is not None:
        arr = np.asarray(v)
        if _per_position(book, arr.shape[1], sc.vol_shift_per_position):
            shift_opt, stride = np.ascontiguousarray(arr[:, book.option_positions]), 1
        else:
            shift = np.ascontiguousarray(arr)
    if shift_opt.shape[1] == 0:
        shift_opt, stride = np.zeros((n, 1)), 0
    # without shifts the kernels never read these (``moved`` all False, ``evaluate_chunk`` passes no transposes)
    rate = sc.rate_by_symbol()
    # (absent shocks share one array of zeros: every reader only reads them)
    rate = no_shift if rate is None else np.ascontiguousarray(rate)
    div = no_shift if sc.dividend_shift_abs is None else np.ascontiguousarray(sc.dividend_shift_abs)
    moved = (
        np.zeros(n, dtype=np.bool_)
        if sc.rate_shift_abs is None and sc.dividend_shift_abs is None
        else np.any(rate != 0.0, axis=1) | np.any(div != 0.0, axis=1)
    )
    constant = [("shift", 0.0)] if shift is no_shift else []
    if sc.vol_scale is None:
        constant.append(("scale", 1.0))
    if sc.vol_skew is None:
        constant.append(("skew", 0.0))
    return _ChunkInputs(
        spot_new=book.spot0[None, :] * (1.0 + sc.spot_shock_rel),
        log_spot_new=log_spot_new,
        scale=np.ones((n, n_sym)) if sc.vol_scale is None else np.ascontiguousarray(sc.vol_scale),
        shift=shift,
        skew=no_shift if sc.vol_skew is None else np.ascontiguousarray(sc.vol_skew),
        shift_opt=shift_opt,
        opt_stride=stride,
        rate=rate,
        div=div,
        moved=moved,
        constant=tuple(constant),
    )


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


@functools.lru_cache(maxsize=8)
def _spline_map(n: int) -> FloatArray:
    """Coefficients ``(4, n - 1, n)`` of the not-a-knot cubic spline through ``n`` equally spaced values as a
    linear map of the values: ``c[k, i] = map[k, i] @ y`` is scipy's ``CubicSpline(arange(n), y).c[k, i]``."""
    out = CubicSpline(np.arange(n, dtype=np.float64), np.eye(n), axis=0).c
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def _spline_map_t(n: int) -> FloatArray:
    """``_spline_map(n)`` with the power last, ``(n - 1, n, 4)``: ``out[i, j, k] = _spline_map(n)[k, i, j]``
    (``_spline_kernel``'s operands)."""
    out = np.ascontiguousarray(_spline_map(n).transpose(1, 2, 0))
    out.flags.writeable = False
    return out


def _spline_coefficients(vals: FloatArray, out: FloatArray, slot: int | None = None) -> FloatArray:
    """Not-a-knot spline coefficients of the node values ``vals`` ``(options, nv, nu)``:
    ``np.einsum("lmv,kin,avn->amilk", _spline_map(nv), _spline_map(nu), vals)`` to rounding, written into ``out`` or,
    given ``slot``, ``out[:, slot]`` (``out`` ``(options, grids, vol cell, y cell, vol power, y power)``, e.g.
    ``grid_dcoef``); returns that target. Always ``_spline_kernel``'s two products, option by option, so an option's
    coefficients are the same bits whatever other options are fitted with it (NumPy's einsum picks its contraction
    order, and OpenBLAS its kernel, by the number of options: a book's grids would then depend on the books stacked
    with it). Where the einsum contracts the vol nodes first (from about 17 options), its BLAS products are the
    kernel's bits on machines whose OpenBLAS kernel sums each entry as one FMA chain in index order."""
    target = out if slot is None else out[:, slot]
    m_vt, m_yt = _spline_map_t(vals.shape[1]), _spline_map_t(vals.shape[2])
    run_chunked(_spline_kernel, vals.shape[0], vals, m_vt, m_yt, out[:, None] if slot is None else out, slot or 0)
    return target


def _boundary_coefficients(lratio: FloatArray) -> FloatArray:
    """Cubic-spline coefficients ``[a, vol cell, power]`` of ``lratio`` ``(options, nv)`` along the vol nodes:
    ``np.einsum("kin,an->aik", _spline_map(nv), lratio)`` to rounding, as element-wise products summed over the nodes
    in index order, so each option's coefficients are the same bits whatever the number of options (NumPy's
    einsum, and the BLAS kernel under it, change their order with it)."""
    nv = lratio.shape[1]
    m = np.transpose(_spline_map(nv), (1, 0, 2))  # (vol cell, power, node)
    out = np.multiply(lratio[:, None, None, 0], m[None, :, :, 0], out=np.empty((lratio.shape[0], nv - 1, 4)))
    term = np.empty_like(out)
    for n in range(1, nv):
        out += np.multiply(lratio[:, None, None, n], m[None, :, :, n], out=term)
    return out


@slp_njit()
def _spline_kernel(
    vals: FloatArray, m_vt: FloatArray, m_yt: FloatArray, out: FloatArray, slot: int, start: int, stop: int
) -> None:
    """``_spline_coefficients``' two matrix products for the options ``start .. stop-1`` (``run_chunked``), element by
    element as OpenBLAS' double-precision kernels make them: each entry a chain of fused multiply-adds over the
    shared dimension in index order from 0.0 (the vol nodes, then the y nodes), the first product's entries rounded
    before the second reads them; written straight into ``out[:, slot]`` (``out`` ``(options, grids, vol cell, y
    cell, vol power, y power)``).
    Bit for bit the BLAS products where OpenBLAS' kernel sums each entry as one FMA chain in index order (on this
    project's x86-64 machines: the pipeline's tables compared in docs/speed_log.md; test_scenario_engine checks it to
    rounding from 17 to 46,730 options) at a fraction of their memory traffic: no ``(options x 768)`` intermediate
    and no transposed copy of it.
    The maps come with the power last (``_spline_map_t``: ``m_vt[vc, v, vp]``, ``m_yt[yc, y, yp]``), so the four chains
    of the four powers (vol powers in the first product, y powers in the second) advance side by side, each in its
    own accumulator, over contiguous operands: four independent lanes that LLVM's SLP vectorizer (``slp_njit``) packs
    into one vector fused multiply-add; each chain's operations and their order are unchanged (the same bits)."""
    nv, nu = vals.shape[1], vals.shape[2]
    tmp = np.empty((nv - 1, nu, 4))  # tmp[vc, y, vp]: the first product
    for a in range(start, stop):
        for vc in range(nv - 1):
            for y in range(nu):
                b0 = b1 = b2 = b3 = 0.0
                for v in range(nv):
                    x = vals[a, v, y]
                    b0 = fused_multiply_add(x, m_vt[vc, v, 0], b0)
                    b1 = fused_multiply_add(x, m_vt[vc, v, 1], b1)
                    b2 = fused_multiply_add(x, m_vt[vc, v, 2], b2)
                    b3 = fused_multiply_add(x, m_vt[vc, v, 3], b3)
                tmp[vc, y, 0] = b0
                tmp[vc, y, 1] = b1
                tmp[vc, y, 2] = b2
                tmp[vc, y, 3] = b3
        for vc in range(nv - 1):
            for yc in range(nu - 1):
                for vp in range(4):
                    c0 = c1 = c2 = c3 = 0.0
                    for y in range(nu):
                        x = tmp[vc, y, vp]
                        c0 = fused_multiply_add(x, m_yt[yc, y, 0], c0)
                        c1 = fused_multiply_add(x, m_yt[yc, y, 1], c1)
                        c2 = fused_multiply_add(x, m_yt[yc, y, 2], c2)
                        c3 = fused_multiply_add(x, m_yt[yc, y, 3], c3)
                    out[a, slot, vc, yc, vp, 0] = c0
                    out[a, slot, vc, yc, vp, 1] = c1
                    out[a, slot, vc, yc, vp, 2] = c2
                    out[a, slot, vc, yc, vp, 3] = c3


def _grid_boundaries(
    t: FloatArray, r: FloatArray, q: FloatArray, call: BoolArray, v_nodes: FloatArray, solve: IntArray
) -> tuple[FloatArray, FloatArray]:
    """``S*/K`` and the unit-strike put boundaries at the vol nodes (``_grid_solve``) of the options
    ``solve`` (NaN ratios elsewhere)."""
    na, nv = v_nodes.shape
    ratio = np.full((na, nv), np.nan)
    bnd = np.zeros((na, nv, GRID_TABLES[0].size))
    if solve.size:
        ratio[solve], bnd[solve] = _grid_solve(t[solve], r[solve], q[solve], call[solve], v_nodes[solve])
    return ratio, bnd


def _never_exercised(call: BoolArray, r: FloatArray, q: FloatArray) -> BoolArray:
    """Early exercise never optimal (the European value): call ``q <= 0``, ``q <= r``; put ``r <= 0``, ``r <= q``."""
    cr, cq = np.where(call, r, q), np.where(call, q, r)  # rates of the (put-call transformed) call
    return (cq <= 0.0) & (cq <= cr)


def _largest_shift(shift: FloatArray, sym: IntArray) -> FloatArray:
    """Per option, the largest magnitude of the scenario set's shifts of its underlying (0 if none)."""
    return np.abs(shift).max(axis=0)[sym]


def _horner_np(c: FloatArray, x: FloatArray) -> FloatArray:
    """``((c[..., 0] x + c[..., 1]) x + c[..., 2]) x + c[..., 3]``."""
    return ((c[..., 0] * x + c[..., 1]) * x + c[..., 2]) * x + c[..., 3]


def _kink_check(
    book: PreparedBook,
    check: IntArray,
    grids: tuple[FloatArray, ...],
    steps: FloatArray,
    v_nodes: FloatArray,
    ls_lo: FloatArray,
    ls_hi: FloatArray,
) -> BoolArray:
    """Whether the shifted grids of the Americans ``check`` (indices among the Americans) are within
    ``KINK_CHECK_TOL`` of the strike of the exact engine at 12 points each: the lowest, middle and highest shocked
    spot, the vol halfway between the 2nd and 3rd vol nodes, and the four rate and yield shifts ``-+ h / 2`` (the
    grid read as ``_american_grid_values`` reads it, to rounding: its terms summed here along y first; BSM by
    ``bsm.bsm_price``)."""
    coef, bcoef, dcoef, dbcoef, y0, dy, v0, dv = grids
    half = np.array([(a, b) for a in (-0.5, 0.5) for b in (-0.5, 0.5)])
    a = np.repeat(check, 12)
    ls = np.repeat(np.stack([ls_lo, 0.5 * (ls_lo + ls_hi), ls_hi], axis=1)[check], 4, axis=1).ravel()
    xr = np.tile(half[:, 0], 3 * check.size)
    xq = np.tile(half[:, 1], 3 * check.size)
    sig = 0.5 * (v_nodes[a, 1] + v_nodes[a, 2])
    i = book.n_euro + a
    nv, ny = coef.shape[1] + 1, coef.shape[2] + 1
    fv = (sig - v0[a]) / dv[a]
    iv = np.clip(fv, 0.0, nv - 2.0).astype(np.int64)
    tv = fv - iv
    d = [_horner_np(dbcoef[a, k, iv], tv) for k in range(4)]
    lstar = _horner_np(bcoef[a, iv], tv) + xr * (d[0] + xr * d[1]) + xq * (d[2] + xq * d[3])
    y = book.w[i] * (lstar - ls + book.log_strike[i])
    fy = (y - y0[a]) / dy[a]
    iy = np.clip(fy, 0.0, ny - 2.0).astype(np.int64)
    ty = fy - iy
    eep = np.zeros(a.size)
    for power in range(4):
        e = [_horner_np(dcoef[a, k, iv, iy, power], ty) for k in range(4)]
        c = _horner_np(coef[a, iv, iy, power], ty) + xr * (e[0] + xr * e[1]) + xq * (e[2] + xq * e[3])
        eep = eep * tv + c
    spot = np.exp(ls)
    r, q = book.rate[i] + xr * steps[a, 0], book.div[i] + xq * steps[a, 1]
    args = (spot, book.strike[i], book.t[i], sig, r, q, book.call[i])
    euro = bsm_price(*args, backend="numpy")
    intrinsic = book.w[i] * (spot - book.strike[i])
    grid = np.where(y <= 0.0, np.maximum(euro, intrinsic), np.maximum(euro + np.maximum(eep, 0.0), intrinsic))
    bad = np.abs(grid - american_price(*args)) > KINK_CHECK_TOL * book.strike[i]
    return ~bad.reshape(check.size, 12).any(axis=1)


def _with_eep_grid(
    book: PreparedBook, sc: ScenarioSet, kept: dict[tuple[int, int], _ChunkInputs] | None = None
) -> PreparedBook:
    """Build the EEP grids of the Americans over the spot, vol, rate and dividend-yield range reached by ``sc``.

    Per option (mode 1): ``EEP_VOL_NODES`` vols spanning the scenarios' shocked vols and
    ``EEP_SPOT_NODES`` distances ``y = w ln(S*(vol) / S)`` from the exercise boundary, ``0 .. y_max``,
    the largest distance the scenarios reach (with a margin; farther scenarios are priced exactly).
    ``S*(vol)`` is the exact engine's boundary at maturity, solved once per vol node; the node values are
    the exact engine's prices (``GRID_TABLES``) from those boundaries. Mode 0: early exercise never
    optimal (the floor ``max(BSM, intrinsic)`` is exact); mode 2: the grid does not apply somewhere in the
    vol range (two exercise boundaries, zero vol): exact prices in every scenario.

    Rate and dividend-yield shifts (``sc.moves_carry``): the same grid is built again at ``r -+ h_r`` and at
    ``q -+ h_q`` on the same (y, vol) nodes, ``h`` the set's largest shift of the option's underlying, and the
    kernel reads ``ln(S*/K)`` and the premium as the quadratic through the three grids of each factor,
    ``f(x_r, x_q) = f + x_r D1_r + x_r^2 D2_r + x_q D1_q + x_q^2 D2_q`` with ``x = shift / h`` (no cross term;
    the BSM part is priced at the shifted rate and yield exactly). Options whose shifted box reaches the edge of
    the never-exercise region, or ``r = q`` (where the boundary at maturity has a kink) unless the grid passes
    ``_kink_check``, are priced exactly (mode 2); those reaching ``r = q`` are first built again on a box on one side
    of it (``_one_side_grids``): the scenarios inside it read from that grid, the others exactly.
    """
    return _grid_from_ranges(book, _eep_ranges(book, sc, kept), sc.n_scenarios, sc.moves_carry)


@dataclass(frozen=True, eq=False)
class _GridRanges:
    """Per American of a book: the lowest and highest shocked vol and log spot a scenario set reaches, and the largest
    rate and dividend-yield shift of its underlying (``_eep_ranges``)."""

    v_lo: FloatArray
    v_hi: FloatArray
    ls_lo: FloatArray
    ls_hi: FloatArray
    lr: FloatArray
    lq: FloatArray


def _eep_ranges(
    book: PreparedBook, sc: ScenarioSet, kept: dict[tuple[int, int], _ChunkInputs] | None = None
) -> _GridRanges:
    """The ranges ``_with_eep_grid`` spans, over the whole set (a chunk of scenarios at a time; ``kept``: the first
    chunk's dense inputs are put there under its rows ``(0, stop)``, for ``evaluate_prepared`` to reuse)."""
    first = book.n_euro
    am = slice(first, None)
    na = book.units.size - first
    sym = book.opt_sym[am]
    v_lo, ls_lo = np.full(na, np.inf), np.full(na, np.inf)
    v_hi, ls_hi = np.full(na, -np.inf), np.full(na, -np.inf)
    lr, lq = np.zeros(na), np.zeros(na)  # the largest rate and dividend-yield shift of each option's underlying
    # the ranges over the whole set, taken a chunk of scenarios at a time (min and max are exact, so the same
    # numbers as one pass over the set; only one chunk's dense inputs are held, not the set's)
    n = sc.n_scenarios
    rows = default_chunk_size(book, sc)
    for start in range(0, n, rows):
        inp = _chunk_inputs(book, sc.take(start, min(start + rows, n)))
        if kept is not None and start == 0:
            kept[0, min(rows, n)] = inp
        if sc.vol_shift_abs is None and sc.vol_skew is None:
            # sigma' = sigma * scale exactly (see _sigma); x -> sigma x is monotone, so its range is sigma times
            # the range of the symbol's scale, bit for bit what _vol_range finds scenario by scenario
            b_lo = book.vol[am] * inp.scale.min(axis=0)[sym]
            b_hi = book.vol[am] * inp.scale.max(axis=0)[sym]
            b_ls_lo = inp.log_spot_new.min(axis=0)[sym]
            b_ls_hi = inp.log_spot_new.max(axis=0)[sym]
        else:
            b_lo, b_hi, b_ls_lo, b_ls_hi = (np.empty(na) for _ in range(4))
            # without a skew an option's shocked vol does not depend on the spot: a scenario repeating the previous
            # one's vol scales and shifts (the gap sets' runs) repeats every vol, so only the others are scanned for
            # the vol range (min and max of the same values); the log spots' range is every scenario's
            keep = _new_vol_rows(inp) if sc.vol_skew is None else None
            scan = inp if keep is None else _rows_of(inp, keep)
            run_chunked(
                _vol_range,
                na,
                scan.log_spot_new,
                scan.scale,
                scan.shift,
                scan.skew,
                scan.shift_opt,
                scan.opt_stride,
                book.opt_sym,
                book.log_strike,
                book.vol,
                first,
                b_lo,
                b_hi,
                b_ls_lo,
                b_ls_hi,
            )
            if keep is not None:
                b_ls_lo = inp.log_spot_new.min(axis=0)[sym]
                b_ls_hi = inp.log_spot_new.max(axis=0)[sym]
        np.minimum(v_lo, b_lo, out=v_lo)
        np.maximum(v_hi, b_hi, out=v_hi)
        np.minimum(ls_lo, b_ls_lo, out=ls_lo)
        np.maximum(ls_hi, b_ls_hi, out=ls_hi)
        if sc.moves_carry:
            np.maximum(lr, _largest_shift(inp.rate, sym), out=lr)
            np.maximum(lq, _largest_shift(inp.div, sym), out=lq)
    return _GridRanges(v_lo, v_hi, ls_lo, ls_hi, lr, lq)


def _new_vol_rows(inp: _ChunkInputs) -> IntArray | None:
    """The scenarios of a chunk whose vol scales or vol shifts (per symbol or per position) differ in their bits from
    the previous scenario's (the first always), or None when that is more than half of them (no runs worth skipping)."""
    n = inp.log_spot_new.shape[0]
    if n < 2:
        return None
    fixed = dict(inp.constant)
    new = np.zeros(n - 1, dtype=bool)
    arrays = [getattr(inp, name) for name in ("scale", "shift") if name not in fixed]
    for a in arrays + ([inp.shift_opt] if inp.opt_stride else []):
        bits = np.ascontiguousarray(a).view(np.int64)  # bits, not values: -0.0 and 0.0 differ
        new |= np.any(bits[1:] != bits[:-1], axis=1)
    rows = np.concatenate([[0], 1 + np.flatnonzero(new)])
    return rows if 2 * rows.size <= n else None


def _rows_of(inp: _ChunkInputs, rows: IntArray) -> _ChunkInputs:
    """The vol inputs of the scenarios ``rows`` of a chunk (what ``_vol_range`` reads)."""
    return replace(
        inp,
        log_spot_new=inp.log_spot_new[rows],
        scale=inp.scale[rows],
        shift=inp.shift[rows],
        skew=inp.skew[rows],
        shift_opt=inp.shift_opt[rows] if inp.opt_stride else inp.shift_opt[:1],
    )


# ----------------------------------------------------------------------------------------------
# grid memo: an American's grid work kept from one build to the next of one call chain
# ----------------------------------------------------------------------------------------------


#: Golden-ratio multiplier of ``_row_hashes`` (odd: a bijection of 64-bit words).
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _row_hashes(keys: NDArray[np.int64]) -> NDArray[np.uint64]:
    """A 64-bit hash of each row's words (multiply-xor; only for sorting and finding candidates: a candidate's
    whole row is compared before it is used)."""
    h = np.zeros(keys.shape[0], dtype=np.uint64)
    words = keys.view(np.uint64)
    for c in range(words.shape[1]):
        h ^= words[:, c]
        h *= _HASH_MULTIPLIER
        h ^= h >> np.uint64(29)
    return h


@dataclass(frozen=True, eq=False)
class _MemoBuild:
    """What one grid build made for each of its Americans: its key row (``_memo_keys``), the boundaries' ``S*/K`` at
    the vol nodes of the base grid (``ratio``) and of the rate and yield grids (``ratio_k``, ``(4, na, nv)``; empty
    without carry moves), the unit-strike put boundaries of each grid (``bnd``, ``(grids, na, nv, nodes)``; empty
    unless the memo keeps them) and the node values ``American - BSM`` of each grid (``vals``, ``(grids, na, nv,
    nu)``, zero where not fitted)."""

    keys: NDArray[np.int64]
    ratio: FloatArray
    ratio_k: FloatArray
    bnd: FloatArray
    vals: FloatArray


#: Columns of ``_memo_keys`` that decide an American's exercise boundaries at the vol nodes (the first ones).
_VOL_KEY_COLUMNS = 11


class GridMemo:
    """The last ``builds`` early-exercise grid builds' per-option work (``_grid_from_ranges``), for the next builds of
    the same call chain (``grid_memo``): an American whose whole grid input (contract, rate, yield, vol, the
    set's vol, log-spot, rate and yield ranges, whether it is priced exactly and whether the set moves rates)
    equals, bit for bit, one of those builds' takes that build's exercise boundary ratios and node values
    instead of solving and pricing them again (without ``nodes``, no node values are kept or taken); with
    ``boundaries``, one whose vol, rate and yield ranges (not its log-spot range) equal one of theirs takes its
    boundaries and prices its own node values from them. Each is elementwise (an option's boundaries and node prices
    depend on its own inputs only), so every coefficient is the same; the spline fit still runs over the whole book.
    Memory per American and kept build: about 2.9 kB with ``nodes``, 2.1 kB with ``boundaries``, 4.7 kB with both."""

    def __init__(self, builds: int = 1, *, boundaries: bool = False, nodes: bool = True) -> None:
        if builds < 1 or not (boundaries or nodes):
            raise ValueError("a memo keeps at least one build, and its boundaries or its node values")
        self.builds = builds
        self.boundaries = boundaries
        self.nodes = nodes
        self._kept: list[_MemoBuild] = []
        #: per key width: the kept builds' rows, concatenated, sorted by their hash (order, hashes in that order)
        self._index: dict[int, tuple[IntArray, NDArray[np.uint64]]] = {}
        self.looked_up = 0  # Americans of the builds kept
        self.found = 0  # of them found whole
        self.found_boundaries = 0  # found by their boundaries' inputs (``boundaries``; the found whole included)

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept builds and their index."""
        arrays = [a for b in self._kept for a in (b.keys, b.ratio, b.ratio_k, b.bnd, b.vals)]
        arrays += [a for x in self._index.values() for a in x]
        return int(sum(a.nbytes for a in arrays))

    def find(self, keys: NDArray[np.int64], width: int | None = None) -> tuple[BoolArray, IntArray, IntArray]:
        """Per key row (its first ``width`` columns; all by default): whether a kept build holds it, which build and
        which of its rows."""
        n = keys.shape[0]
        width = keys.shape[1] if width is None else width
        hit = np.zeros(n, dtype=bool)
        which, row = np.zeros(n, dtype=np.intp), np.zeros(n, dtype=np.intp)
        if not self._kept or n == 0:
            return hit, which, row
        if width not in self._index:
            hashes = np.concatenate([_row_hashes(b.keys[:, :width]) for b in self._kept])
            order = np.argsort(hashes, kind="stable")
            self._index[width] = (order, hashes[order])
        order, sorted_h = self._index[width]
        mine = keys[:, :width]
        h = _row_hashes(mine)
        pos = np.minimum(np.searchsorted(sorted_h, h), sorted_h.size - 1)
        cand = order[pos]
        starts = np.cumsum([0] + [b.keys.shape[0] for b in self._kept])
        which = np.searchsorted(starts, cand, side="right") - 1
        row = cand - starts[which]
        stored = np.empty_like(mine)
        for g, b in enumerate(self._kept):
            at = which == g
            stored[at] = b.keys[row[at], :width]
        hit = (sorted_h[pos] == h) & np.all(stored == mine, axis=1)
        if width == keys.shape[1]:
            self.found += int(np.count_nonzero(hit))
        else:
            self.found_boundaries += int(np.count_nonzero(hit))
        return hit, which, row

    def gather(
        self, field: str, part: int | None, found: tuple[BoolArray, IntArray, IntArray], out: FloatArray
    ) -> None:
        """``out`` (options first) takes, in the rows found (``find``), the kept ``field`` (its ``part``: the grid
        or the rate and yield grid, options second)."""
        hit, which, row = found
        for g, b in enumerate(self._kept):
            at = np.flatnonzero(hit & (which == g))
            if at.size:
                src = getattr(b, field)
                out[at] = (src if part is None else src[part])[row[at]]

    def keep(self, build: _MemoBuild) -> None:
        """Keep a build (the oldest dropped beyond ``builds``)."""
        self._kept = [*self._kept, build][-self.builds :]
        self._index = {}
        self.looked_up += build.keys.shape[0]


#: The memo ``_grid_from_ranges`` reads and fills (``grid_memo``); None: every build on its own. A context variable,
#: so a block in one thread (a Dagster step, a service request) never hands its memo to another thread's builds.
_GRID_MEMO: contextvars.ContextVar[GridMemo | None] = contextvars.ContextVar("grid_memo", default=None)


@contextlib.contextmanager
def grid_memo(memo: GridMemo | None) -> Iterator[GridMemo | None]:
    """Grid builds inside this block (in this thread or context) use ``memo`` (None: none), the one before it
    afterwards."""
    token = _GRID_MEMO.set(memo)
    try:
        yield memo
    finally:
        _GRID_MEMO.reset(token)


def _memo_keys(book: PreparedBook, ranges: _GridRanges, still: BoolArray, moves_carry: bool) -> NDArray[np.int64]:
    """Per American of ``book``: the bits of everything its grid build reads (``GridMemo``)."""
    am = slice(book.n_euro, None)
    # first the _VOL_KEY_COLUMNS inputs of its boundaries at the vol nodes (_grid_solve's t, r, q, call and vol nodes,
    # and which grids are solved), then the rest of what its node values read
    cols = [getattr(book, f)[am] for f in ("t", "rate", "div", "vol")]
    cols += [book.call[am].astype(np.float64), still.astype(np.float64), np.full(still.size, float(moves_carry))]
    cols += [ranges.v_lo, ranges.v_hi, ranges.lr, ranges.lq]
    cols += [getattr(book, f)[am] for f in ("sqrt_t", "strike", "log_strike", "w")] + [ranges.ls_lo, ranges.ls_hi]
    return np.ascontiguousarray(np.stack(cols, axis=1)).view(np.int64)


def _americans_of(book: PreparedBook, idx: IntArray) -> PreparedBook:
    """The book of the Americans ``idx`` (indices among the Americans) of ``book`` alone, for a grid build of theirs
    (``_grid_from_ranges``; no Europeans, no stocks read)."""
    i = book.n_euro + idx
    return replace(book, n_euro=0, **{f: getattr(book, f)[i] for f in _OPTION_FIELDS})


#: The per-option arrays of a ``PreparedBook`` (``_americans_of``).
_OPTION_FIELDS = (
    "option_positions",
    "opt_sym",
    "units",
    "log_strike",
    "strike",
    "t",
    "sqrt_t",
    "carry",
    "vol",
    "rate",
    "div",
    "w",
    "call",
    "dq",
    "kdr",
    "base",
)


def _grid_from_ranges(
    book: PreparedBook, ranges: _GridRanges, n_scenarios: int, moves_carry: bool, *, one_side: bool = False
) -> PreparedBook:
    """``_with_eep_grid`` from the ranges of a set of ``n_scenarios`` scenarios (``moves_carry``: whether it shifts a
    rate or a dividend yield).

    An option whose rate and yield box reaches ``r = q`` and fails ``_kink_check`` is built again (on its own, no memo)
    with its box shrunk to one side of ``r = q`` (``KINK_BOX_SHARES`` of the largest box that stays off it, in
    proportion to its rate and yield steps), ``one_side``: every option of that build checked by ``_kink_check``,
    and those that pass are read from that grid inside its smaller box (the scenarios outside it are off the grid:
    the exact engine), the others priced exactly in every scenario (mode 2) as before."""
    first = book.n_euro
    am = slice(first, None)
    na = book.units.size - first
    v_lo, v_hi, ls_lo, ls_hi, lr, lq = ranges.v_lo, ranges.v_hi, ranges.ls_lo, ranges.ls_hi, ranges.lr, ranges.lq
    # an option every scenario leaves alone, or a set too small to pay for a grid: exact prices (mode 2)
    still = (v_hi == v_lo) & (ls_hi == ls_lo) | (n_scenarios < EEP_MIN_SCENARIOS)
    v_hi = v_lo + np.maximum(v_hi - v_lo, 1e-4 * np.maximum(book.vol[am], 1e-2))
    nu, nv = EEP_SPOT_NODES, EEP_VOL_NODES
    v_nodes = v_lo[:, None] + (v_hi - v_lo)[:, None] * np.linspace(0.0, 1.0, nv)[None, :]
    t, r, q, call, w = (np.ascontiguousarray(getattr(book, f)[am]) for f in ("t", "rate", "div", "call", "w"))
    # the memo (grid_memo): an option whose whole grid input an earlier build of the call chain had takes that
    # build's boundary ratios and node values (each elementwise: the same bits) instead of solving and pricing them
    memo = _GRID_MEMO.get()
    keys = _memo_keys(book, ranges, still, moves_carry) if memo is not None else np.zeros((0, 0), dtype=np.int64)
    nodes = memo is not None and memo.nodes
    found = memo.find(keys) if memo is not None and nodes else (np.zeros(na, dtype=bool), np.zeros(0), np.zeros(0))
    hit = found[0]
    # found by the inputs of its boundaries only (the memo keeps those): the boundaries taken, the node values priced
    solved = memo.find(keys, _VOL_KEY_COLUMNS) if memo is not None and memo.boundaries else found
    bnd_found = solved[0]
    solve = np.flatnonzero(~still & ~bnd_found)
    ratio, bnd = _grid_boundaries(t, r, q, call, v_nodes, solve)
    if memo is not None:
        memo.gather("ratio", None, solved, ratio)
        if memo.boundaries:
            memo.gather("bnd", 0, solved, bnd)
    never = _never_exercised(call, r, q)
    finite = np.all(np.isfinite(ratio), axis=1)
    # the shifted grids: (rate step, yield step) per option; grids at r -+ h_r and at q -+ h_q
    shifted = moves_carry
    steps = np.zeros((na, 2))
    kinked = np.zeros(0, dtype=np.int64)  # options whose box reaches r = q and fails _kink_check
    variants: list[tuple[int, float, FloatArray, FloatArray, FloatArray, FloatArray]] = []
    if shifted:
        steps[:, 0] = lr
        steps[:, 1] = lq
        h_r, h_q = steps[:, 0], steps[:, 1]
        # the region where exercise is never optimal is convex: never at the four corners is never in the box
        corners = [_never_exercised(call, r + a * h_r, q + b * h_q) for a in (-1.0, 1.0) for b in (-1.0, 1.0)]
        always = never & np.all(corners, axis=0)
        # exact where the box reaches exercise never being optimal (but not everywhere); where it reaches r = q the
        # boundary at maturity, K max(1, r/q) for calls and K min(1, r/q) for puts, has a kink: exact unless the
        # grid passes _kink_check below
        kink = (np.abs(r - q) <= h_r + h_q) | one_side
        exact = (never | np.any(corners, axis=0)) & ~always
        never = always
        for k in (0, 1):
            on = (steps[:, k] != 0.0) & ~still & ~exact & ~never
            for sign in (1.0, -1.0):
                rk = r + sign * h_r if k == 0 else r
                qk = q + sign * h_q if k == 1 else q
                ratio_k, bnd_k = _grid_boundaries(t, rk, qk, call, v_nodes, np.flatnonzero(on & ~bnd_found))
                ratio_k[~on] = ratio[~on]
                if memo is not None:
                    memo.gather("ratio_k", len(variants), solved, ratio_k)
                    if memo.boundaries:
                        memo.gather("bnd", 1 + len(variants), solved, bnd_k)
                finite &= np.all(np.isfinite(ratio_k), axis=1)
                variants.append((k, sign, rk, qk, ratio_k, bnd_k))
        finite &= ~exact
    mode = np.where(never, 0, np.where(finite & ~still, 1, 2)).astype(np.int8)
    ls_star = book.log_strike[am][:, None] + np.log(np.where(np.isfinite(ratio), ratio, 1.0))
    ls_all = [ls_star] + [
        book.log_strike[am][:, None] + np.log(np.where(np.isfinite(v[4]), v[4], 1.0)) for v in variants
    ]
    ls_max = np.max([x.max(axis=1) for x in ls_all], axis=0)
    ls_min = np.min([x.min(axis=1) for x in ls_all], axis=0)
    # largest distance to the boundary any scenario reaches: far side of the boundary range, far spot
    y_far = np.where(w > 0, ls_max - ls_lo, ls_hi - ls_min)
    y_near = np.where(w > 0, ls_min - ls_hi, ls_lo - ls_max)
    y_lo = np.maximum(y_near - 0.05 * (y_far - y_near) - 1e-3, 0.0)
    y_hi = np.maximum(y_far + 0.05 * (y_far - y_near) + 1e-3, y_lo + 1e-3)
    y_nodes = y_lo[:, None] + (y_hi - y_lo)[:, None] * np.linspace(0.0, 1.0, nu)[None, :]
    n_grids = 1 + len(variants)
    node_vals = np.zeros((n_grids, na if nodes else 0, nv, nu))

    def spline(
        grid: int,
        ls_node: FloatArray,
        bnd_v: FloatArray,
        r_v: FloatArray,
        q_v: FloatArray,
        out: FloatArray,
        priced: BoolArray | None = None,
        slot: int | None = None,
    ) -> FloatArray:
        """Premium spline coefficients ``[a, vol cell, y cell, vol power, y power]`` of the grid ``grid`` (0 the
        base, then the rate and yield grids) at rates ``r_v``, ``q_v`` (zero outside mode 1 and, given ``priced``,
        outside it), written into ``out`` or, given ``slot``, ``out[:, slot]`` (``_spline_coefficients``: in place,
        no intermediate arrays). With the memo, the options found take its
        node values and the build's are kept for it."""
        vals = node_vals[grid] if nodes else np.zeros((na, nv, nu))
        take = mode == 1 if priced is None else (mode == 1) & priced
        if memo is not None and nodes:
            memo.gather("vals", grid, (take & hit, *found[1:]), vals)
        fit = np.flatnonzero(take & ~hit)
        if fit.size:
            consts = {**_time_constants(t, book.strike[am], r_v, q_v), "rate": r_v, "div": q_v}
            cols = ("strike", "log_strike", "t", "sqrt_t", "carry", "rate", "div", "w", "call", "dq", "kdr")
            vals[fit] = _eep_nodes(
                ls_node[fit],
                y_nodes[fit],
                v_nodes[fit],
                bnd_v[fit],
                *(np.ascontiguousarray((consts[f] if f in consts else getattr(book, f)[am])[fit]) for f in cols),
            )
        return _spline_coefficients(vals, out, slot)

    def boundary(ratio_v: FloatArray) -> FloatArray:
        """ln(S*/K) along vol: cubic spline through the vol nodes (modes 0 and 2 never read it)."""
        return _boundary_coefficients(np.log(np.where(mode[:, None] == 1, ratio_v, 1.0)))

    # contiguous (``_boundary_coefficients``' own array), as the split books' grids are: one compiled signature of
    # ``_american_grid_values`` instead of two
    coef_shape = (na, nv - 1, nu - 1, 4, 4)
    coef = spline(0, ls_star, bnd, book.rate[am], book.div[am], np.empty(coef_shape))
    bcoef = boundary(ratio)
    dcoef = np.zeros((0, 4, *coef.shape[1:]))
    dbcoef = np.zeros((0, 4, *bcoef.shape[1:]))
    if shifted:
        # f(x) = f + x D1 + x^2 D2, x = shift / h: D1 = (f+ - f-) / 2, D2 = (f+ + f- - 2 f) / 2 (quadratic through the
        # three grids; zero where a factor does not move)
        dcoef = np.empty((na, 4, *coef.shape[1:]))  # every row written below
        dbcoef = np.zeros((na, 4, *bcoef.shape[1:]))
        c_m = np.empty(coef_shape)
        for k in (0, 1):
            (_, _, r_p, q_p, ratio_p, bnd_p), (_, _, r_m, q_m, ratio_m, bnd_m) = variants[2 * k : 2 * k + 2]
            on = steps[:, k] != 0.0
            # the same operations made in their rows of dcoef (f+ fitted into the first while f- is fitted into c_m:
            # one other array of the coefficients' size), then zero where the factor does not move
            d1, d2 = dcoef[:, 2 * k], dcoef[:, 2 * k + 1]
            # the node values of an option whose factor does not move are not read (its rows are zeroed below):
            # not priced
            spline(2 * k + 1, ls_all[2 * k + 1], bnd_p, r_p, q_p, dcoef, on, 2 * k)
            spline(2 * k + 2, ls_all[2 * k + 2], bnd_m, r_m, q_m, c_m, on)
            np.multiply(np.add(d1, c_m, out=d2), 0.5, out=d2)  # f+ + f- straight into d2 (no copy of f+ first)
            np.subtract(d2, coef, out=d2)
            np.multiply(np.subtract(d1, c_m, out=d1), 0.5, out=d1)
            d1[~on] = 0.0
            d2[~on] = 0.0
            b_p, b_m = boundary(ratio_p), boundary(ratio_m)
            dbcoef[on, 2 * k] = (0.5 * (b_p - b_m))[on]
            dbcoef[on, 2 * k + 1] = (0.5 * (b_p + b_m) - bcoef)[on]
        check = np.flatnonzero(kink & (mode == 1))
        if check.size:
            grids = (coef, bcoef, dcoef, dbcoef, y_lo, (y_hi - y_lo) / (nu - 1), v_lo, (v_hi - v_lo) / (nv - 1))
            kinked = check[~_kink_check(book, check, grids, steps, v_nodes, ls_lo, ls_hi)]
            mode[kinked] = 2
    if memo is not None:
        ratio_k = np.stack([v[4] for v in variants]) if variants else np.zeros((0, na, nv))
        bnds = np.stack([bnd] + [v[5] for v in variants]) if memo.boundaries else np.zeros((0, na, nv, 0))
        memo.keep(_MemoBuild(keys, ratio, ratio_k, bnds, node_vals))
    out = replace(
        book,
        grid_mode=mode,
        grid_y0=y_lo,
        grid_dy=(y_hi - y_lo) / (nu - 1),
        grid_v0=v_lo.copy(),  # not the caller's ranges: _one_side_grids writes rows of it
        grid_dv=(v_hi - v_lo) / (nv - 1),
        grid_coef=coef,
        grid_bcoef=bcoef,
        grid_step=steps,
        grid_dcoef=dcoef,
        grid_dbcoef=dbcoef,
    )
    if kinked.size and not one_side:
        _one_side_grids(out, ranges, n_scenarios, kinked[r[kinked] != q[kinked]])
    return out


#: ``_grid_from_ranges``: an option failing ``_kink_check`` is tried again on rate and yield boxes of these shares of
#: the largest box on one side of ``r = q`` (its steps ``h_r + h_q = |r - q|``), the next only if the last failed too.
KINK_BOX_SHARES = (0.9, 0.45)


def _one_side_grids(book: PreparedBook, ranges: _GridRanges, n_scenarios: int, todo: IntArray) -> None:
    """The Americans ``todo`` (mode 2 in ``book``'s grid: their box reaches ``r = q`` and failed ``_kink_check``) built
    again on their own, each on a box shrunk to one side of ``r = q`` (``KINK_BOX_SHARES``); the rows of those whose
    grid then passes ``_kink_check`` written into ``book``'s grid arrays in place (mode 1: the scenarios inside the
    smaller box are read from it, the others are off the grid)."""
    am = slice(book.n_euro, None)
    r, q = book.rate[am], book.div[am]
    for share in KINK_BOX_SHARES:
        if not todo.size:
            return
        h = ranges.lr[todo] + ranges.lq[todo]
        scale = share * np.abs(r[todo] - q[todo]) / h
        sub_ranges = _GridRanges(
            *(getattr(ranges, f)[todo] for f in ("v_lo", "v_hi", "ls_lo", "ls_hi")),
            ranges.lr[todo] * scale,
            ranges.lq[todo] * scale,
        )
        with grid_memo(None):
            sub = _grid_from_ranges(_americans_of(book, todo), sub_ranges, n_scenarios, True, one_side=True)
        ok = sub.grid_mode == 1
        for f in _GRID_FIELDS:
            getattr(book, f)[todo[ok]] = getattr(sub, f)[ok]
        todo = todo[~ok]


#: The per-American grid arrays of a ``PreparedBook`` built with rate or yield shifts (``_one_side_grids``).
_GRID_FIELDS = (
    "grid_mode",
    "grid_y0",
    "grid_dy",
    "grid_v0",
    "grid_dv",
    "grid_coef",
    "grid_bcoef",
    "grid_step",
    "grid_dcoef",
    "grid_dbcoef",
)


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------


#: Placeholder for kernel inputs a call does not read.
_NOT_READ = np.zeros((1, 1))


#: Share of a chunk's scenarios that repeat the previous one's vols, rates and yields per underlying (moving only
#: spots) from which ``evaluate_chunk`` reads the Americans with ``_american_grid_values(runs=True)``.
RUNS_SHARE = 0.5


def _rows_repeat(inp: _ChunkInputs) -> bool:
    """Whether at least ``RUNS_SHARE`` of the chunk's scenarios leave every underlying's vol scale, vol shift, skew,
    rate and yield shift as the scenario before them (the gap VaR's combined sets: runs of gaps on one window)."""
    n = inp.spot_new.shape[0]
    if n < 2:
        return False
    fixed = dict(inp.constant)
    same = np.ones(n - 1, dtype=bool)
    for name in ("scale", "shift", "skew", "rate", "div"):
        if name not in fixed:
            a = getattr(inp, name)
            same &= np.all(a[1:] == a[:-1], axis=1)
    if inp.opt_stride:
        same &= np.all(inp.shift_opt[1:] == inp.shift_opt[:-1], axis=1)
    return bool(np.count_nonzero(same) >= RUNS_SHARE * (n - 1))


def evaluate_chunk(
    book: PreparedBook, sc: ScenarioSet, per_symbol: bool = False, inputs: _ChunkInputs | None = None
) -> ScenarioPnl:
    """Revalue one chunk of scenarios in this process (the unit of work sent to Dask workers; ``inputs``: the
    chunk's ``_chunk_inputs``, if already made)."""
    inp = _chunk_inputs(book, sc) if inputs is None else inputs
    use_grid = book.american == "eep_grid"
    shifted = bool(np.any(inp.moved))
    if use_grid and shifted and book.grid_dcoef.shape[0] != book.grid_mode.size:
        raise ValueError("this book's early-exercise grid was built without rate or dividend-yield shifts")
    n = sc.n_scenarios
    pnl = np.empty(n)
    by_sym = np.empty((n, book.n_symbols) if per_symbol else (1, 1))
    common = (
        inp.spot_new,
        inp.log_spot_new,
        inp.scale,
        inp.shift,
        inp.skew,
        inp.shift_opt,
        inp.opt_stride,
        inp.rate,
        inp.div,
        inp.moved,
        per_symbol,
        book.n_euro,
    )
    n_am = book.units.size - book.n_euro
    grid = use_grid and n_am > 0
    run_chunked(
        _european_kernel,
        (n + _BLOCK - 1) // _BLOCK,
        *common,
        book.spot0,
        book.stock_units,
        book.opt_sym,
        book.units,
        book.log_strike,
        book.t,
        book.sqrt_t,
        book.carry,
        book.vol,
        book.w,
        book.dq,
        book.kdr,
        book.base,
        pnl,
        by_sym,
    )
    if grid:
        values = np.empty((n_am, n))
        n_nan = np.empty(n_am, dtype=np.intp)
        sym_major = inp.symbol_major("spot_new", "log_spot_new", "scale", "shift", "skew")
        runs = shifted and _rows_repeat(inp)
        run_chunked(
            _american_grid_values,
            n_am,
            *sym_major,
            np.ascontiguousarray(inp.shift_opt.T),  # option-major, like the symbol-major inputs
            inp.opt_stride,
            np.ascontiguousarray(inp.rate.T) if shifted else _NOT_READ,
            np.ascontiguousarray(inp.div.T) if shifted else _NOT_READ,
            np.bool_(shifted),
            np.bool_(runs),
            book.n_euro,
            book.opt_sym,
            book.log_strike,
            book.strike,
            book.t,
            book.sqrt_t,
            book.carry,
            book.vol,
            book.w,
            book.dq,
            book.kdr,
            book.grid_mode,
            book.grid_y0,
            book.grid_dy,
            book.grid_v0,
            book.grid_dv,
            book.grid_coef,
            book.grid_bcoef,
            book.grid_step,
            book.grid_dcoef,
            book.grid_dbcoef,
            values,
            n_nan,
        )
        if np.any(n_nan):
            _exact_where_nan(book, inp, values, n_nan)
        _american_grid_sum(values, per_symbol, book.n_euro, book.opt_sym, book.units, book.base, pnl, by_sym)
    elif n_am and book.american == "bs2002":
        run_chunked(
            _american_exact_kernel,
            -(-n // max(1, _LANE_TARGET // n_am)),  # work items of the kernel
            *common,
            book.opt_sym,
            book.units,
            book.log_strike,
            book.strike,
            book.t,
            book.vol,
            book.rate,
            book.div,
            book.call,
            book.base,
            pnl,
            by_sym,
        )
    elif n_am:
        values = np.empty((n_am, n))
        _alo_values(book, inp, values)
        _american_grid_sum(values, per_symbol, book.n_euro, book.opt_sym, book.units, book.base, pnl, by_sym)
    return ScenarioPnl(pnl, by_sym if per_symbol else None)


def _exact_where_nan(book: PreparedBook, inp: _ChunkInputs, values: FloatArray, n_nan: IntArray) -> None:
    """The exact engine for the NaN entries of the grid values (mode 2, off the grid), in place; ``n_nan[m]`` the
    NaNs of row ``m`` (``_american_grid_values``' count): only rows with some are searched (a few of the chunk's
    thousands; the entries in the same order as ``np.nonzero`` of the whole array)."""
    rows = np.flatnonzero(n_nan)
    sub, j = np.nonzero(np.isnan(values[rows]))
    m = rows[sub]
    if m.size:
        i = book.n_euro + m
        s = book.opt_sym[i]
        ls = inp.log_spot_new[j, s]
        extra = inp.shift_opt[j, i * inp.opt_stride]
        sig = np.maximum(
            book.vol[i] * inp.scale[j, s] + inp.shift[j, s] + inp.skew[j, s] * (book.log_strike[i] - ls) + extra, 0.0
        )  # _sigma
        spot = inp.spot_new[j, s]
        dr, dd = inp.rate[j, s], inp.div[j, s]
        alone = (spot == book.spot0[s]) & (sig == book.vol[i]) & (dr == 0.0) & (dd == 0.0)
        if alone.any():
            values[m[alone], j[alone]] = book.unmoved[i[alone]]
        m, j, i, spot, sig, dr, dd = (a[~alone] for a in (m, j, i, spot, sig, dr, dd))
        if not m.size:
            return
        # price each distinct (option, spot, vol, rate, yield) once: an option no scenario moves costs one price (rows
        # equal in their bits share a price, grouped by a hash of the bits instead of a lexicographic sort of the rows)
        f, inverse = distinct_rows(m.astype(np.float64), spot, sig, dr, dd)
        prices = american_price(
            spot[f],
            book.strike[i[f]],
            book.t[i[f]],
            sig[f],
            book.rate[i[f]] + dr[f],
            book.div[i[f]] + dd[f],
            book.call[i[f]],
        )
        values[m, j] = prices[inverse]


def default_chunk_size(book: PreparedBook, sc: ScenarioSet) -> int:
    """Scenarios per chunk so that one chunk's temporaries stay under ``CHUNK_MEMORY_BYTES``."""
    per_scenario = 8 * (6 * book.n_symbols + 2)
    if sc.rate_shift_abs is not None or sc.dividend_shift_abs is not None:
        per_scenario += 8 * 2 * book.n_symbols
    if book.american == "eep_grid":
        per_scenario += 8 * (book.units.size - book.n_euro + 5 * book.n_symbols)  # values, symbol-major inputs
    if callable(sc.vol_shift_abs):
        per_scenario += 8 * 5 * book.n_positions
    elif isinstance(sc.vol_shift_abs, RowVolShifts):
        per_scenario += 8 * (sc.vol_shift_abs.work_per_position * book.n_positions + book.option_positions.size)
    elif isinstance(sc.vol_shift_abs, np.ndarray) and sc.vol_shift_abs.shape[1] != book.n_symbols:
        per_scenario += 8 * book.option_positions.size
    return max(MIN_CHUNK, CHUNK_MEMORY_BYTES // per_scenario)


def evaluate_prepared(
    book: PreparedBook,
    scenarios: ScenarioSet,
    *,
    per_symbol: bool = False,
    client: Any | None = None,
    chunk_size: int | None = None,
    kept: dict[tuple[int, int], _ChunkInputs] | None = None,
) -> ScenarioPnl:
    """Revalue all scenarios chunk by chunk, in process or (``client``) as Dask tasks; same numbers. ``kept``:
    chunks' dense inputs already made (``prepare(..., kept=)``), by rows; each is used (and dropped) when its chunk's
    rows come up."""
    n = scenarios.n_scenarios
    size = int(chunk_size) if chunk_size else default_chunk_size(book, scenarios)
    if size < 1:
        raise ValueError("chunk_size must be positive")
    bounds = [(a, min(a + size, n)) for a in range(0, n, size)]
    if client is None:
        # each chunk written into the result as it comes (no list of parts and concatenated copy: the per-underlying
        # P&L of a large set is scenarios x symbols)
        pnl = np.empty(n)
        by_sym = np.empty((n, book.n_symbols)) if per_symbol else None
        for a, b in bounds:
            part = evaluate_chunk(
                book, scenarios.take(a, b), per_symbol, None if kept is None else kept.pop((a, b), None)
            )
            pnl[a:b] = part.pnl
            if by_sym is not None:
                by_sym[a:b] = part.by_symbol
        return ScenarioPnl(pnl, by_sym)
    else:
        [remote_book] = client.scatter([book], broadcast=True, hash=False)
        futures = [
            client.submit(evaluate_chunk, remote_book, scenarios.take(a, b), per_symbol, pure=False) for a, b in bounds
        ]
        parts = client.gather(futures)
    if not parts:
        return ScenarioPnl(np.zeros(0), np.zeros((0, book.n_symbols)) if per_symbol else None)
    pnl = np.concatenate([p.pnl for p in parts])
    by_sym = np.concatenate([p.by_symbol for p in parts]) if per_symbol else None
    return ScenarioPnl(pnl, by_sym)


def evaluate(
    portfolio: Portfolio,
    scenarios: ScenarioSet,
    horizon_days: float = 0.0,
    *,
    american: AmericanMethod = "exact",
    per_symbol: bool = False,
    client: Any | None = None,
    chunk_size: int | None = None,
) -> ScenarioPnl:
    """Full-revaluation P&L of ``portfolio`` under ``scenarios`` after ``horizon_days`` calendar days."""
    if scenarios.n_symbols != portfolio.n_symbols:
        raise ValueError(f"scenarios have {scenarios.n_symbols} symbol columns, the portfolio {portfolio.n_symbols}")
    # the first chunk's inputs, made for the grid's ranges, reused when the chunks are the same (in this process)
    kept: dict[tuple[int, int], _ChunkInputs] | None = {} if client is None and not chunk_size else None
    book = prepare(portfolio, horizon_days, scenarios, american, kept=kept)
    return evaluate_prepared(book, scenarios, per_symbol=per_symbol, client=client, chunk_size=chunk_size, kept=kept)


def evaluate_on_one_grid(
    portfolio: Portfolio,
    scenario_sets: Sequence[ScenarioSet],
    horizon_days: float = 0.0,
    *,
    american: AmericanMethod = "exact",
    per_symbol: bool = False,
    chunk_size: int | None = None,
) -> list[ScenarioPnl]:
    """``evaluate(portfolio, sc, horizon_days, ...)`` of every set ``sc`` of ``scenario_sets``, with (``american=
    "eep_grid"``) one early-exercise grid build for all of them: each American's grid spans the union of the sets'
    ranges (min and max of each set's vol, log-spot, rate and dividend-yield range, ``_eep_ranges``) with the same
    nodes as one set's grid, instead of one grid per set. For sets that move the same spots, rates and yields and
    differ in their vol shifts (historical VaR under other smile dynamics) the union is about as wide as each set's
    vol range, so the nodes are about as close: each set's P&L is then its own grid's within the grid's
    interpolation error, not the same bits (the cells are wider where the union is wider). Other methods, a single
    set, sets with callable vol shifts or below ``EEP_MIN_SCENARIOS`` scenarios: ``evaluate`` set by set (its bits).
    """
    sets = list(scenario_sets)
    for sc in sets:
        if sc.n_symbols != portfolio.n_symbols:
            raise ValueError(f"scenarios have {sc.n_symbols} symbol columns, the portfolio {portfolio.n_symbols}")
    if (
        american != "eep_grid"
        or len(sets) < 2
        or not np.any(portfolio.is_american & portfolio.is_option)
        or any(_needs_exact(sc) or sc.n_scenarios < EEP_MIN_SCENARIOS for sc in sets)
    ):
        return [
            evaluate(portfolio, sc, horizon_days, american=american, per_symbol=per_symbol, chunk_size=chunk_size)
            for sc in sets
        ]
    # the book as prepare makes it for "eep_grid" but for the grid (prepare_parts does the same)
    book = replace(prepare(portfolio, horizon_days, None, "exact"), american="eep_grid")
    # each set's first chunk's inputs, made for its ranges, reused when its chunks are the default ones (as evaluate)
    kept: list[dict[tuple[int, int], _ChunkInputs] | None] = [None if chunk_size else {} for _ in sets]
    ranges = _eep_ranges(book, sets[0], kept[0])
    for sc, k in zip(sets[1:], kept[1:], strict=True):
        r = _eep_ranges(book, sc, k)
        for f, pick in (("v_lo", np.minimum), ("ls_lo", np.minimum), ("v_hi", np.maximum), ("ls_hi", np.maximum)):
            pick(getattr(ranges, f), getattr(r, f), out=getattr(ranges, f))
        for f in ("lr", "lq"):
            np.maximum(getattr(ranges, f), getattr(r, f), out=getattr(ranges, f))
    n = min(sc.n_scenarios for sc in sets)
    book = _grid_from_ranges(book, ranges, n, any(sc.moves_carry for sc in sets))
    return [
        evaluate_prepared(book, sc, per_symbol=per_symbol, chunk_size=chunk_size, kept=k)
        for sc, k in zip(sets, kept, strict=True)
    ]


def _stack_sets(sets: Sequence[ScenarioSet], n: int, books: Sequence[Portfolio]) -> ScenarioSet:
    """The sets side by side (one block of symbol columns each), each padded to ``n`` rows by repeating its last.
    If any set shifts vols per position, the stacked set does too (one block of position columns per book; a
    per-symbol shift is read at each position's symbol, none is 0)."""

    def pad(a: FloatArray) -> FloatArray:
        return a if a.shape[0] == n else np.vstack([a, np.repeat(a[-1:], n - a.shape[0], axis=0)])

    def cat(blocks: list[FloatArray | None], fill: float) -> FloatArray | None:
        if all(a is None for a in blocks):
            return None
        return np.hstack(
            [
                pad(np.full(sc.spot_shock_rel.shape, fill) if a is None else a)
                for sc, a in zip(sets, blocks, strict=True)
            ]
        )

    per_position = any(sc.vol_shift_per_position for sc in sets)
    if per_position:
        shifts = []
        for sc, book in zip(sets, books, strict=True):
            a = sc.vol_shift_abs
            if a is None:
                shifts.append(pad(np.zeros((sc.n_scenarios, book.n_positions))))
            else:
                shifts.append(pad(a if sc.vol_shift_per_position else a[:, book.symbol_index]))  # type: ignore[index]
        vol_shift: FloatArray | None = np.hstack(shifts)
    else:
        vol_shift = cat([sc.vol_shift_abs for sc in sets], 0.0)  # type: ignore[misc]  # arrays (checked)
    # blocks of checked sets (and constants that pass the checks): the stacked set is not checked again
    return _checked(
        sets[0],
        spot_shock_rel=np.hstack([pad(sc.spot_shock_rel) for sc in sets]),
        vol_scale=cat([sc.vol_scale for sc in sets], 1.0),
        vol_shift_abs=vol_shift,
        vol_shift_per_position=True if per_position else None,
        vol_skew=cat([sc.vol_skew for sc in sets], 0.0),
        rate_shift_abs=cat([sc.rate_by_symbol() for sc in sets], 0.0),
        dividend_shift_abs=cat([sc.dividend_shift_abs for sc in sets], 0.0),
        row_offset=0,
    )


def evaluate_many(
    portfolios: Sequence[Portfolio],
    scenario_sets: Sequence[ScenarioSet],
    horizon_days: float = 0.0,
    *,
    american: AmericanMethod = "exact",
    stacked: Portfolio | None = None,
    chunk_size: int | None = None,
) -> list[ScenarioPnl]:
    """``evaluate(portfolios[k], scenario_sets[k], horizon_days, per_symbol=True)`` of every ``k`` in one engine call.

    The books are evaluated side by side as one book (``stack_portfolios``; ``stacked``, if given, must be that
    book, so that its cached values today are reused), set ``k`` moving book ``k``'s block of symbols. Every
    option's price in every scenario, each American's early-exercise grid (it spans its own set's range) and the
    per-underlying P&L are those of the separate calls, bit for bit; a book's P&L is the sum of its
    per-underlying P&L (the separate call sums by position: equal to rounding). Sets are padded to the longest by
    repeating their last row (no range changes); sets below ``EEP_MIN_SCENARIOS`` rows are evaluated apart from
    the others (they get no grid). Vol shifts per symbol or per position (``vol_shift_per_position``), no
    callables; rate and dividend-yield shifts move each set's own block (a per-scenario rate shift becomes
    per-symbol).
    """
    if len(portfolios) != len(scenario_sets) or not portfolios:
        raise ValueError("need one scenario set per portfolio, at least one")
    for p, sc in zip(portfolios, scenario_sets, strict=True):
        if sc.n_symbols != p.n_symbols:
            raise ValueError(f"scenarios have {sc.n_symbols} symbol columns, the portfolio {p.n_symbols}")
        if callable(sc.vol_shift_abs) or isinstance(sc.vol_shift_abs, RowVolShifts):
            raise ValueError("evaluate_many takes array scenarios only (no vol shift functions)")
        width = p.n_positions if sc.vol_shift_per_position else p.n_symbols
        if isinstance(sc.vol_shift_abs, np.ndarray) and sc.vol_shift_abs.shape[1] != width:
            raise ValueError("a vol shift needs one column per symbol (per position with vol_shift_per_position)")
    small = np.array([sc.n_scenarios < EEP_MIN_SCENARIOS for sc in scenario_sets])
    out: list[ScenarioPnl | None] = [None] * len(portfolios)
    for flag in (False, True):
        idx = np.flatnonzero(small == flag)
        if not idx.size:
            continue
        books = [portfolios[k] for k in idx]
        sets = [scenario_sets[k] for k in idx]
        book = stacked if (stacked is not None and idx.size == len(portfolios)) else stack_portfolios(books)
        n = max(sc.n_scenarios for sc in sets)
        res = evaluate(
            book,
            _stack_sets(sets, n, books),
            horizon_days,
            american=american,
            per_symbol=True,
            chunk_size=chunk_size,
        )
        assert res.by_symbol is not None
        lo = 0
        for k, p, sc in zip(idx, books, sets, strict=True):
            block = res.by_symbol[: sc.n_scenarios, lo : lo + p.n_symbols]
            out[k] = ScenarioPnl(block.sum(axis=1), np.ascontiguousarray(block))
            lo += p.n_symbols
    return [r for r in out if r is not None]


def share_values(source: Portfolio, rows: IntArray, target: Portfolio) -> None:
    """Give ``target``, whose positions are ``source``'s positions ``rows`` (checked), the option values cached on
    ``source`` (today's and after each horizon already priced), so that ``target`` does not price them again.
    Each option is priced on its own (BSM or the American engine, element by element), so they are the values
    ``target`` would get, bit for bit."""
    idx = np.asarray(rows, dtype=np.intp)
    same = target.n_positions == idx.size and all(
        np.array_equal(np.asarray(getattr(source, f))[idx], np.asarray(getattr(target, f)))
        for f in ("position_spot", "strike", "time_years", "implied_vol", "rate", "dividend_yield", "is_call")
    )
    same = same and np.array_equal(source.is_option[idx], target.is_option)
    same = same and np.array_equal(source.is_american[idx], target.is_american)
    if not same:
        raise ValueError("target's positions must be source's positions rows")
    cached = _UNMOVED.get(source)
    if not cached:
        return
    mine = _UNMOVED.setdefault(target, {})
    for key, values in cached.items():
        if key not in mine:
            part = values[idx]
            part.setflags(write=False)
            mine[key] = part


def market_values(portfolio: Portfolio) -> FloatArray:
    """Value of every position today: ``units * price`` (BSM or BS2002 for options, spot for stocks)."""
    return portfolio.units * option_values(portfolio)


def revalue(
    portfolio: Portfolio,
    spot_shock_rel: ArrayLike,
    vol_shift_abs: ArrayLike | VolShiftFn | None = None,
    rate_shift_abs: ArrayLike | None = None,
    horizon_days: float = 0.0,
    *,
    vol_scale: ArrayLike | None = None,
    vol_skew: ArrayLike | None = None,
    vol_shift_per_position: bool | None = None,
    per_symbol: bool = False,
    american: AmericanMethod = "exact",
    client: Any | None = None,
    chunk_size: int | None = None,
) -> ScenarioPnl:
    """Full-revaluation P&L of every scenario (``(n,)``) and, with ``per_symbol``, per underlying.

    ``spot_shock_rel`` is ``(n, n_symbols)``; ``vol_shift_abs`` is ``(n, n_symbols)``,
    ``(n, n_positions)`` or a ``VolShiftFn`` such as ``SkewVolShift``; ``rate_shift_abs`` is ``(n,)``;
    ``vol_scale`` (multiplicative) and ``vol_skew`` (per unit ``ln(K / S')``) are ``(n, n_symbols)``.
    ``horizon_days`` calendar days of time decay. See ``scenario_engine`` for the formulas, the
    American methods and the chunked / Dask evaluation.
    """
    shifts: Any = (
        vol_shift_abs
        if (vol_shift_abs is None or callable(vol_shift_abs))
        else np.asarray(vol_shift_abs, dtype=np.float64)
    )
    sc = ScenarioSet(
        spot_shock_rel=np.asarray(spot_shock_rel, dtype=np.float64),
        vol_scale=None if vol_scale is None else np.asarray(vol_scale, dtype=np.float64),
        vol_shift_abs=shifts,
        vol_skew=None if vol_skew is None else np.asarray(vol_skew, dtype=np.float64),
        rate_shift_abs=None if rate_shift_abs is None else np.asarray(rate_shift_abs, dtype=np.float64),
        vol_shift_per_position=vol_shift_per_position,
    )
    return evaluate(
        portfolio, sc, horizon_days, american=american, per_symbol=per_symbol, client=client, chunk_size=chunk_size
    )
