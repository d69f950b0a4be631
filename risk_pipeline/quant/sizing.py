"""Position sizing and trade-level risk: Kelly, optimal f, volatility targeting, equal risk contribution,
XGBoost sizing with a fallback, ATR stops with trailing state, correlation clusters and portfolio heat.

Pure numerics (numpy, scipy, xgboost and dataclasses in and out; no Dagster, no I/O). Sizes are weights:
signed fractions of NAV (notional / NAV; > 0 long). Formulas and references:

* Kelly (Kelly 1956; Thorp 2006, "The Kelly criterion in blackjack, sports betting and the stock market"):
  a binary bet paying ``b`` per unit staked with win probability ``p`` has ``f* = p - q / b``; a continuous
  asset with drift ``mu`` and variance ``sigma^2`` per period has ``f* = mu / sigma^2``; several assets
  ``w* = Sigma^-1 mu``. Fractional Kelly ``c`` maximizes ``w'mu - w'Sigma w / (2c)``, whose unconstrained
  solution is ``c Sigma^-1 mu``; with the book's constraints (long-only names, per-name and gross caps) the
  same concave objective is maximized by scipy's SLSQP on ``w = u - v``, ``u, v >= 0``.
* Optimal f (Vince 1990, "Portfolio Management Formulas"): ``f`` in (0, 1] maximizing the terminal wealth
  relative ``TWR(f) = prod(1 + f (-X_i / W))`` over the trades (or periods) ``X_i`` with worst loss ``W < 0``;
  the fraction of capital is ``f / |W|``. On a two-outcome distribution it equals Kelly. Terminal wealth and
  maximum drawdown at the chosen ``f`` are resampled (bootstrap with replacement, ``n_paths`` paths).
* Volatility targeting (Moreira and Muir 2017): ``w = target_vol / forecast_vol``, times ``regime_scale``
  (default 0.5) when the volatility index or the name's realized volatility is in the top decile of its
  history.
* Equal risk contribution (Maillard, Roncalli and Teiletche 2010): long-only ``w`` with
  ``w_i (Sigma w)_i = w'Sigma w / n``; solved in Spinu's (2013) convex form ``min y'Sigma y / 2 - sum b_i ln y_i``
  (scipy L-BFGS-B) polished by Newton steps on ``Sigma y = b / y``; ``w = y / sum(y)``.
* ATR (Wilder 1978): ``TR_t = max(H_t - L_t, |H_t - C_{t-1}|, |L_t - C_{t-1}|)``; the first ATR is the mean of
  the first ``n`` true ranges (bars 1..n), then ``ATR_t = ((n - 1) ATR_{t-1} + TR_t) / n``.
* Correlation clusters (Mantegna 1999): distance ``sqrt((1 - rho) / 2)``, average-linkage hierarchical
  clustering (scipy), cut at the distance of ``min_cluster_correlation``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic
from numpy.typing import ArrayLike, NDArray
from scipy import optimize
from scipy.cluster import hierarchy
from scipy.signal import lfilter
from scipy.spatial.distance import squareform

from risk_pipeline.quant._numba import JIT, FloatArray, IntArray, inner_njit, slp_njit

TRADING_DAYS = 252

# ----------------------------------------------------------------------------------------------- Kelly


def kelly_binary(p: float, b: float) -> float:
    """Kelly fraction of a bet winning ``b`` per unit staked with probability ``p`` (else losing the stake)."""
    if not 0.0 <= p <= 1.0 or b <= 0.0:
        raise ValueError("p must be in [0, 1] and b > 0")
    return p - (1.0 - p) / b


def kelly_gaussian(mu: ArrayLike, sigma: ArrayLike) -> FloatArray:
    """Continuous Kelly weight ``mu / sigma^2`` (same period for both)."""
    m = np.asarray(mu, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)
    if np.any(~(s > 0.0)):
        raise ValueError("sigma must be positive")
    return m / (s * s)


@dataclass(frozen=True)
class KellyResult:
    """Multi-asset Kelly: the unconstrained full Kelly ``Sigma^-1 mu`` and the constrained fractional weights."""

    full_kelly: FloatArray
    weights: FloatArray
    fraction: FloatArray
    growth_rate: float
    status: str


def kelly_portfolio(
    mu: ArrayLike,
    cov: ArrayLike,
    *,
    fraction: ArrayLike = 0.25,
    allow_short: ArrayLike | bool = True,
    max_weight: ArrayLike | float = math.inf,
    max_gross: float = math.inf,
) -> KellyResult:
    """Fractional multi-asset Kelly under long/short, per-name and gross constraints.

    ``fraction`` (scalar or per asset: each strategy's fraction of full Kelly) scales the growth-optimal weights:
    the objective is ``w'mu - w'D^-1/2 Sigma D^-1/2 w / 2`` with ``D = diag(fraction)``, whose unconstrained
    maximizer ``D^1/2 Sigma^-1 D^1/2 mu`` is ``c Sigma^-1 mu`` for equal fractions and ``c_i mu_i / sigma_i^2``
    for a diagonal Sigma. Without binding constraints that closed form is returned; otherwise SLSQP solves the
    constrained problem.
    """
    m = np.asarray(mu, dtype=np.float64)
    s = np.asarray(cov, dtype=np.float64)
    n = m.size
    if s.shape != (n, n):
        raise ValueError("cov must be n x n for n expected returns")
    c = np.broadcast_to(np.asarray(fraction, dtype=np.float64), (n,)).copy()
    if np.any(~(c > 0.0)):
        raise ValueError("Kelly fractions must be positive")
    short = np.broadcast_to(np.asarray(allow_short, dtype=bool), (n,))
    cap = np.broadcast_to(np.asarray(max_weight, dtype=np.float64), (n,))
    full = np.linalg.solve(s, m)
    root = np.sqrt(c)
    scaled_cov = s / np.outer(root, root)  # D^-1/2 Sigma D^-1/2
    w0 = np.linalg.solve(scaled_cov, m)
    lo = np.where(short, -cap, 0.0)
    feasible = np.all(w0 >= lo - 1e-15) and np.all(w0 <= cap + 1e-15) and np.abs(w0).sum() <= max_gross + 1e-12
    if feasible:
        w, status = w0, "closed_form"
    else:
        w, status = _kelly_slsqp(m, scaled_cov, lo, cap, max_gross)
    growth = float(w @ m - 0.5 * w @ s @ w)
    return KellyResult(full_kelly=full, weights=w, fraction=c, growth_rate=growth, status=status)


def _kelly_slsqp(
    m: FloatArray, scaled_cov: FloatArray, lo: FloatArray, hi: FloatArray, max_gross: float
) -> tuple[FloatArray, str]:
    """Maximize ``w'm - w'Q w / 2`` over ``w = u - v`` with ``0 <= u <= hi``, ``0 <= v <= -lo``, ``sum(u + v) <= G``."""
    n = m.size
    big = 1e6
    ub_u = np.minimum(np.where(np.isfinite(hi), hi, big), big)
    ub_v = np.minimum(np.where(np.isfinite(-lo), -lo, big), big)

    def split(x: FloatArray) -> FloatArray:
        return x[:n] - x[n:]

    def neg(x: FloatArray) -> float:
        w = split(x)
        return float(-(w @ m) + 0.5 * w @ scaled_cov @ w)

    def grad(x: FloatArray) -> FloatArray:
        g = -m + scaled_cov @ split(x)
        return np.concatenate([g, -g])

    cons = []
    if math.isfinite(max_gross):
        cons.append({"type": "ineq", "fun": lambda x: max_gross - x.sum(), "jac": lambda x: -np.ones(2 * n)})
    x0 = np.zeros(2 * n)
    res = optimize.minimize(
        neg,
        x0,
        jac=grad,
        bounds=list(zip(np.zeros(2 * n), np.concatenate([ub_u, ub_v]), strict=True)),
        constraints=cons,
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    return split(res.x), "slsqp" if res.success else f"slsqp: {res.message}"


# ------------------------------------------------------------------------------------------ optimal f


@dataclass(frozen=True)
class OptimalF:
    """Vince's optimal f, the fraction of capital it implies and the resampled outcomes at that f."""

    f: float
    worst_loss: float
    capital_fraction: float
    geometric_mean: float
    n_returns: int
    terminal_wealth_p05: float
    terminal_wealth_median: float
    max_drawdown_median: float
    max_drawdown_p95: float


@inner_njit(forceinline=True)
def _nan_max(a: float, b: float) -> float:
    """``np.maximum(a, b)``: the larger, NaN if either is NaN."""
    if a != a or a >= b:
        return a
    return b


@intrinsic
def _mulhi_u64(typingctx: Any, a: Any, b: Any) -> Any:
    """The high 64 bits of the 128-bit product of two uint64s (LLVM's ``i128`` multiply: one ``mul``/``umulh``)."""
    if not (a == types.uint64 and b == types.uint64):
        return None
    sig = types.uint64(types.uint64, types.uint64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        wide = llvm_ir.IntType(128)
        product = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        return builder.trunc(builder.lshr(product, llvm_ir.Constant(wide, 64)), llvm_ir.IntType(64))

    return sig, codegen


def _pcg64_state(rng: np.random.Generator) -> NDArray[np.uint64]:
    """A PCG64 generator's state as ``_bootstrap_draws`` reads it: state high and low 64 bits, increment high and
    low, and ``has_uint32 << 32 | uinteger`` (the buffered upper half of the last 64-bit output)."""
    s = rng.bit_generator.state
    if s["bit_generator"] != "PCG64":
        raise ValueError("the bootstrap draws follow numpy's PCG64")
    state, inc, mask = int(s["state"]["state"]), int(s["state"]["inc"]), (1 << 64) - 1
    buffered = (int(s["has_uint32"]) << 32) | int(s["uinteger"])
    return np.array([state >> 64, state & mask, inc >> 64, inc & mask, buffered], dtype=np.uint64)


@inner_njit()
def _exact_path(x: FloatArray, draws: IntArray, fraction: float) -> tuple[float, float]:
    """Terminal wealth and maximum drawdown of one path of returns ``x[draws]``: ``W_t = prod_{k <= t} (1 + fraction
    x_k)``, drawdown ``max_t 1 - W_t / max(1, max_{k <= t} W_k)``; the operations of numpy's ``cumprod``,
    ``maximum.accumulate``, ``maximum``, ``divide`` and ``max`` in order (NaN propagated as ``np.maximum`` does)."""
    w = 1.0
    peak = -np.inf
    worst = -np.inf
    for t in range(draws.size):
        step = x[draws[t]] * fraction
        step = step + 1.0
        w = step if t == 0 else w * step
        peak = w if t == 0 else _nan_max(peak, w)
        dd = 1.0 - w / _nan_max(peak, 1.0)
        worst = dd if t == 0 else _nan_max(worst, dd)
    return w, worst


@inner_njit()
def _next_draws(state: NDArray[np.uint64], n: int, out: IntArray) -> None:
    """``out`` (1-D) filled with the next ``out.size`` draws of ``Generator.integers(0, n)`` of the PCG64 generator in
    ``state`` (``_pcg64_state``), bit for bit, for ``1 <= n <= 2**32``, and ``state`` moved on past them: numpy's
    buffered Lemire draw on 32-bit outputs, each 64-bit PCG64 XSL-RR output giving its low then its high half."""
    hi, lo, inc_hi, inc_lo = state[0], state[1], state[2], state[3]
    has_half = (state[4] >> np.uint64(32)) != np.uint64(0)
    half = state[4] & np.uint64(0xFFFFFFFF)
    mul_hi, mul_lo = np.uint64(0x2360ED051FC65DA4), np.uint64(0x4385DF649FCCF645)
    span = np.uint64(n)
    threshold = (np.uint64(0xFFFFFFFF) - (span - np.uint64(1))) % span
    for i in range(out.size):
        while True:
            if has_half:
                u = half
                has_half = False
            else:
                # state = state * multiplier + increment (mod 2**128), then the XSL-RR output
                prod_lo = lo * mul_lo
                prod_hi = _mulhi_u64(lo, mul_lo) + lo * mul_hi + hi * mul_lo
                lo = prod_lo + inc_lo
                hi = prod_hi + inc_hi + (np.uint64(1) if lo < prod_lo else np.uint64(0))
                v = hi ^ lo
                rot = hi >> np.uint64(58)
                out64 = (v >> rot) | (v << ((np.uint64(64) - rot) & np.uint64(63)))
                half = out64 >> np.uint64(32)
                has_half = True
                u = out64 & np.uint64(0xFFFFFFFF)
            m = u * span  # Lemire: the high half, unless the low half falls below the rejection threshold
            left = m & np.uint64(0xFFFFFFFF)
            if left >= span or left >= threshold:
                break
        out[i] = np.int64(m >> np.uint64(32))
    state[0], state[1] = hi, lo
    state[4] = ((np.uint64(1) << np.uint64(32)) if has_half else np.uint64(0)) | half


@njit(**JIT)
def _bootstrap_draws(state: NDArray[np.uint64], n: int, draws: NDArray[np.int64]) -> None:
    """``draws`` (C order) filled with ``Generator.integers(0, n, size=draws.shape)`` of a PCG64 generator in ``state``
    (``_pcg64_state``; left unchanged), bit for bit, for ``1 <= n <= 2**32`` (``_next_draws`` row after row)."""
    moving = state.copy()
    for r in range(draws.shape[0]):
        _next_draws(moving, n, draws[r])


@inner_njit()
def _path_outcome(
    x: FloatArray, draws: IntArray, fraction: float, stretch_low: FloatArray, stretch_top: FloatArray
) -> tuple[float, float]:
    """``_exact_path(x, draws, fraction)`` (``draws`` 1-D), the drawdown taken once per stretch between two new peaks
    above 1, at the stretch's lowest wealth (``_path_outcomes``); ``stretch_low`` and ``stretch_top``: scratch of at
    least ``draws.size`` values."""
    h = draws.size
    if h == 0:
        return _exact_path(x, draws, fraction)
    w = x[draws[0]] * fraction
    w = w + 1.0
    top = w if w >= 1.0 else 1.0  # max(1, peak) of the stretch
    lowest = w
    k = 0
    for t in range(1, h):
        step = x[draws[t]] * fraction
        step = step + 1.0
        w = w * step
        # a stretch's (lowest, divisor) written at every step, kept (k moves on) at a new peak: no branch
        stretch_low[k] = lowest
        stretch_top[k] = top
        high = w > top
        k += 1 if high else 0
        lowest = w if high | (w < lowest) else lowest
        top = w if high else top
    worst = 1.0 - lowest / top
    for j in range(k):
        dd = 1.0 - stretch_low[j] / stretch_top[j]
        worst = dd if dd > worst else worst
    if math.isfinite(w):
        return w, worst
    return _exact_path(x, draws, fraction)


@njit(**JIT)
def _path_outcomes(
    x: FloatArray, draws: IntArray, fraction: float, terminal: FloatArray, drawdown: FloatArray, start: int, stop: int
) -> None:
    """Terminal wealth and maximum drawdown (``_exact_path``) of the paths ``start .. stop-1``, path ``p`` the returns
    ``x[draws[p]]``.

    A path's drawdown is taken once per stretch between two new peaks above 1, at the stretch's lowest wealth: the
    divisor ``d = max(1, peak)`` is constant on a stretch and ``1 - w / d`` (each operation correctly rounded,
    ``d >= 1``) does not increase with ``w``, so its largest value there is the lowest wealth's, the same number
    (never ``-0.0``, so the largest of them is the same in any order). A path whose wealth ends not finite
    (overflow, NaN: both stay once reached) is computed again step by step (``_exact_path``)."""
    h = draws.shape[1]
    stretch_low, stretch_top = np.empty(max(h, 1)), np.empty(max(h, 1))
    for p in range(start, stop):
        terminal[p], drawdown[p] = _path_outcome(x, draws[p], fraction, stretch_low, stretch_top)


@inner_njit()
def _path_outcome_pair(x: FloatArray, rows: IntArray, fraction: float, stretches: FloatArray, out: FloatArray) -> None:
    """``_path_outcome`` of the two paths ``rows[0]`` and ``rows[1]`` (``rows.shape[1] >= 1``) side by side, the same
    operations on each: ``out[j]`` terminal wealth and ``out[2 + j]`` drawdown of path ``j``; ``stretches``: scratch
    of 4 rows of at least ``rows.shape[1]`` values. Two independent lanes of straight-line code, which LLVM's SLP
    vectorizer packs (``slp_njit``); a path whose wealth ends not finite is computed again step by step
    (``_exact_path``)."""
    h = rows.shape[1]
    low_a, top_a, low_b, top_b = stretches[0], stretches[1], stretches[2], stretches[3]
    ra, rb = rows[0], rows[1]
    wa = x[ra[0]] * fraction
    wb = x[rb[0]] * fraction
    wa = wa + 1.0
    wb = wb + 1.0
    topa = wa if wa >= 1.0 else 1.0
    topb = wb if wb >= 1.0 else 1.0
    lowa = wa
    lowb = wb
    ka = 0
    kb = 0
    for t in range(1, h):
        sa = x[ra[t]] * fraction
        sb = x[rb[t]] * fraction
        sa = sa + 1.0
        sb = sb + 1.0
        wa = wa * sa
        wb = wb * sb
        low_a[ka] = lowa
        top_a[ka] = topa
        low_b[kb] = lowb
        top_b[kb] = topb
        ha = wa > topa
        hb = wb > topb
        ka += 1 if ha else 0
        kb += 1 if hb else 0
        lowa = wa if ha | (wa < lowa) else lowa
        lowb = wb if hb | (wb < lowb) else lowb
        topa = wa if ha else topa
        topb = wb if hb else topb
    worst = 1.0 - lowa / topa
    for j in range(ka):
        dd = 1.0 - low_a[j] / top_a[j]
        worst = dd if dd > worst else worst
    out[0], out[2] = wa, worst
    worst = 1.0 - lowb / topb
    for j in range(kb):
        dd = 1.0 - low_b[j] / top_b[j]
        worst = dd if dd > worst else worst
    out[1], out[3] = wb, worst
    if not math.isfinite(wa):
        out[0], out[2] = _exact_path(x, ra, fraction)
    if not math.isfinite(wb):
        out[1], out[3] = _exact_path(x, rb, fraction)


@slp_njit()
def _bootstrap_path_outcomes(
    x: FloatArray, state: NDArray[np.uint64], fraction: float, horizon: int, terminal: FloatArray, drawdown: FloatArray
) -> None:
    """``_path_outcomes`` of ``terminal.size`` paths of ``horizon`` returns each, the draws ``_bootstrap_draws``
    makes from ``state`` (left unchanged), drawn two paths at a time into two rows (not held as a paths x horizon
    array) and their outcomes taken side by side (``_path_outcome_pair``; a last odd path in both lanes). Built with
    LLVM's SLP vectorizer (``slp_njit``): the pair's wealth steps run packed, with the same IEEE operations, so the
    same bits as the path-by-path ``_path_outcome``."""
    moving = state.copy()
    n = terminal.size
    rows = np.empty((2, horizon), dtype=np.int64)
    stretches = np.empty((4, max(horizon, 1)))
    pair = np.empty(4)
    p = 0
    if horizon > 0:
        while p + 1 < n:
            _next_draws(moving, x.size, rows[0])
            _next_draws(moving, x.size, rows[1])
            _path_outcome_pair(x, rows, fraction, stretches, pair)
            terminal[p], terminal[p + 1], drawdown[p], drawdown[p + 1] = pair[0], pair[1], pair[2], pair[3]
            p += 2
    if p < n:  # the last of an odd count (or every path of horizon 0): in both lanes of a pair
        _next_draws(moving, x.size, rows[0])
        for t in range(horizon):
            rows[1, t] = rows[0, t]
        if horizon > 0:
            _path_outcome_pair(x, rows, fraction, stretches, pair)
        else:
            pair[0], pair[2] = _exact_path(x, rows[0], fraction)
        for q in range(p, n):
            terminal[q], drawdown[q] = pair[0], pair[2]


def optimal_f(returns: ArrayLike, *, n_paths: int = 2000, horizon: int | None = None, seed: int = 0) -> OptimalF:
    """Optimal f over per-trade or per-period returns ``X`` (fractions), with bootstrap terminal wealth and drawdown.

    ``HPR_i(f) = 1 + f (-X_i / W)``, ``W = min(X) < 0``; ``f`` maximizes ``mean(ln HPR)`` on (0, 1]. With no
    loss the distribution gives no bound and ``f = 1`` with ``capital_fraction = inf`` is reported; with no
    positive expectancy ``f = 0``. Paths resample ``horizon`` (default: ``len(X)``) returns of the capital
    fraction ``f / |W|``.
    """
    x = np.asarray(returns, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        raise ValueError("optimal f needs at least two returns")
    if x.size > 2**32:
        raise ValueError("optimal f resamples at most 2**32 returns")
    worst = float(x.min())
    if worst >= 0.0:
        return OptimalF(1.0, worst, math.inf, math.nan, x.size, math.nan, math.nan, 0.0, 0.0)
    scaled = -x / worst  # X_i / |W|: the worst becomes -1

    def neg_log(f: float) -> float:
        return -float(np.mean(np.log1p(f * scaled)))

    if scaled.mean() <= 0.0:
        f = 0.0
    else:
        res = optimize.minimize_scalar(neg_log, bounds=(0.0, 1.0 - 1e-12), method="bounded", options={"xatol": 1e-12})
        f = float(res.x)
    fraction = f / abs(worst)
    h = horizon or x.size
    terminal, drawdown = np.empty(n_paths), np.empty(n_paths)
    # path p resamples the draws p * h .. p * h + h - 1 of np.random.default_rng(seed).integers(0, x.size), i.e. row
    # p of integers(..., size=(n_paths, h)), compiled and drawn two paths at a time with the bits of path-by-path
    # draws; the paths on this thread (a thread pool's hand-offs cost CPU for a few milliseconds of work)
    _bootstrap_path_outcomes(x, _pcg64_state(np.random.default_rng(seed)), float(fraction), h, terminal, drawdown)
    return OptimalF(
        f=f,
        worst_loss=worst,
        capital_fraction=fraction,
        geometric_mean=float(np.exp(-neg_log(f))) if f > 0 else 1.0,
        n_returns=int(x.size),
        terminal_wealth_p05=float(np.quantile(terminal, 0.05)),
        terminal_wealth_median=float(np.median(terminal)),
        max_drawdown_median=float(np.median(drawdown)),
        max_drawdown_p95=float(np.quantile(drawdown, 0.95)),
    )


# ------------------------------------------------------------------------------- volatility targeting


def percentile_rank(history: ArrayLike, value: float) -> float:
    """Fraction of the finite ``history`` at or below ``value`` (NaN without history)."""
    h = np.asarray(history, dtype=np.float64)
    h = h[np.isfinite(h)]
    if h.size == 0 or not math.isfinite(value):
        return math.nan
    return float(np.mean(h <= value))


@dataclass(frozen=True)
class VolTarget:
    """Volatility-target weight and its inputs."""

    weight: float
    target_vol: float
    forecast_vol: float
    regime_scale: float
    regime_reason: str


def vol_target_weight(
    target_vol: float,
    forecast_vol: float,
    *,
    vix_percentile: float = math.nan,
    realized_vol_percentile: float = math.nan,
    top_decile: float = 0.9,
    regime_scale: float = 0.5,
) -> VolTarget:
    """``target_vol / forecast_vol``, scaled by ``regime_scale`` when either percentile is in its top decile."""
    if not forecast_vol > 0.0:
        raise ValueError("forecast_vol must be positive")
    hot = [
        f"{name} at percentile {p:.2f}"
        for name, p in (("volatility index", vix_percentile), ("realized vol", realized_vol_percentile))
        if math.isfinite(p) and p >= top_decile
    ]
    scale = regime_scale if hot else 1.0
    reason = ("; ".join(hot) + f": x{regime_scale:g}") if hot else "normal regime"
    return VolTarget(target_vol / forecast_vol * scale, target_vol, forecast_vol, scale, reason)


# ------------------------------------------------------------------------------ equal risk contribution


def risk_contributions(weights: ArrayLike, cov: ArrayLike) -> FloatArray:
    """Each asset's share of portfolio variance: ``w_i (Sigma w)_i / w'Sigma w`` (sums to 1)."""
    w = np.asarray(weights, dtype=np.float64)
    s = np.asarray(cov, dtype=np.float64)
    marginal = s @ w
    return w * marginal / float(w @ marginal)


def equal_risk_contribution(cov: ArrayLike, budgets: ArrayLike | None = None) -> FloatArray:
    """Long-only weights (summing to 1) whose risk contributions equal ``budgets`` (default equal)."""
    s = np.asarray(cov, dtype=np.float64)
    n = s.shape[0]
    b = np.full(n, 1.0 / n) if budgets is None else np.asarray(budgets, dtype=np.float64) / np.sum(budgets)
    y0 = b / np.sqrt(np.diag(s))

    def f(y: FloatArray) -> float:
        return float(0.5 * y @ s @ y - b @ np.log(y))

    def g(y: FloatArray) -> FloatArray:
        return s @ y - b / y

    res = optimize.minimize(f, y0, jac=g, method="L-BFGS-B", bounds=[(1e-12, None)] * n, options={"gtol": 1e-12})
    y = res.x
    for _ in range(20):  # Newton on F(y) = Sigma y - b / y (its Jacobian Sigma + diag(b / y^2) is positive definite)
        step = np.linalg.solve(s + np.diag(b / (y * y)), s @ y - b / y)
        y_new = y - step
        while np.any(y_new <= 0.0):
            step *= 0.5
            y_new = y - step
        y = y_new
        if np.max(np.abs(step)) < 1e-15 * np.max(y):
            break
    return y / y.sum()


def covariance_from_prices(close: ArrayLike, window: int = 252) -> FloatArray:
    """Sample covariance of daily log returns over the last ``window`` returns (columns = assets), annualized."""
    c = np.asarray(close, dtype=np.float64)
    r = np.diff(np.log(c), axis=0)[-window:]
    return np.cov(r, rowvar=False, ddof=1).reshape(c.shape[1], c.shape[1]) * TRADING_DAYS


# -------------------------------------------------------------------------------------- ATR and stops


def true_range(high: ArrayLike, low: ArrayLike, close: ArrayLike) -> FloatArray:
    """Wilder's true range; the first bar (no previous close) is ``H - L``. Columns are assets (or 1-d)."""
    h, lo, c = (np.asarray(a, dtype=np.float64) for a in (high, low, close))
    tr = h - lo
    prev = c[:-1]
    tr[1:] = np.maximum.reduce([h[1:] - lo[1:], np.abs(h[1:] - prev), np.abs(lo[1:] - prev)])
    return tr


def wilder_atr(high: ArrayLike, low: ArrayLike, close: ArrayLike, n: int = 14) -> FloatArray:
    """ATR(n), Wilder: NaN for the first ``n`` bars, the mean of TR over bars 1..n at bar n, then smoothed."""
    tr = true_range(high, low, close)
    out = np.full(tr.shape, np.nan)
    if tr.shape[0] <= n:
        return out
    seed = tr[1 : n + 1].mean(axis=0)
    alpha = 1.0 / n
    rest = tr[n + 1 :]
    out[n] = seed
    if rest.shape[0]:
        zi = np.asarray((1.0 - alpha) * seed)[np.newaxis, ...]
        out[n + 1 :] = lfilter([alpha], [1.0, -(1.0 - alpha)], rest, axis=0, zi=zi)[0]
    return out


@dataclass(frozen=True)
class StopParams:
    """Stop distance, reward/risk, trailing activation and trail distance, all in ATRs."""

    stop_atr: float = 2.0
    reward_risk: float = 2.0
    trail_activate_atr: float = 1.0
    trail_atr: float = 2.0


@dataclass(frozen=True)
class StopState:
    """State of each position's stops carried from session to session (arrays over positions)."""

    side: FloatArray  # +1 long, -1 short
    entry: FloatArray  # reference price the initial stop and target are measured from
    extreme: FloatArray  # best price since entry: highest for a long, lowest for a short
    trailing_active: np.ndarray
    trailing_stop: FloatArray  # NaN until active


@dataclass(frozen=True)
class StopLevels:
    """The stops in force after a session, and whether the session hit the stop in force before it."""

    state: StopState
    stop_price: FloatArray
    take_profit_price: FloatArray
    effective_stop: FloatArray  # the tighter of the initial and the trailing stop
    hit: np.ndarray
    take_profit_hit: np.ndarray


def initial_stops(side: ArrayLike, entry: ArrayLike, atr: ArrayLike, p: StopParams) -> tuple[FloatArray, FloatArray]:
    """Stop ``entry - side k ATR`` and take profit ``entry + side k rr ATR``."""
    s, e, a = (np.asarray(x, dtype=np.float64) for x in (side, entry, atr))
    return e - s * p.stop_atr * a, e + s * p.stop_atr * p.reward_risk * a


def new_stop_state(side: ArrayLike, entry: ArrayLike) -> StopState:
    """State of positions seen for the first time: measured from ``entry``, trailing not active."""
    s = np.asarray(side, dtype=np.float64)
    e = np.asarray(entry, dtype=np.float64)
    return StopState(s, e.copy(), e.copy(), np.zeros(s.shape, dtype=bool), np.full(s.shape, np.nan))


def _effective(state: StopState, stop: FloatArray) -> FloatArray:
    trail = np.where(state.trailing_active, state.trailing_stop, np.nan)
    return np.where(np.isnan(trail), stop, np.where(state.side > 0, np.fmax(stop, trail), np.fmin(stop, trail)))


def advance_stops(
    state: StopState, high: ArrayLike, low: ArrayLike, atr: ArrayLike, p: StopParams = StopParams()
) -> StopLevels:
    """One session: test the session's range against the stops in force, then update the trailing state.

    A long is stopped when ``low <= stop`` (a short when ``high >= stop``), the stop being the tighter of the
    initial stop (from ``entry`` at this session's ATR) and the trailing stop carried in. The trailing stop
    activates once the best price is ``trail_activate_atr`` ATRs beyond the entry and trails ``trail_atr`` ATRs
    behind the best price; it only ever tightens.
    """
    h, lo, a = (np.asarray(x, dtype=np.float64) for x in (high, low, atr))
    long = state.side > 0
    stop, target = initial_stops(state.side, state.entry, a, p)
    in_force = _effective(state, stop)
    hit = np.where(long, lo <= in_force, h >= in_force)
    tp_hit = np.where(long, h >= target, lo <= target)
    extreme = np.where(long, np.fmax(state.extreme, h), np.fmin(state.extreme, lo))
    active = state.trailing_active | (state.side * (extreme - state.entry) >= p.trail_activate_atr * a)
    candidate = extreme - state.side * p.trail_atr * a
    prior = state.trailing_stop
    tightened = np.where(
        np.isnan(prior), candidate, np.where(long, np.fmax(prior, candidate), np.fmin(prior, candidate))
    )
    trailing = np.where(active, tightened, np.nan)
    new_state = StopState(state.side, state.entry, extreme, active, trailing)
    return StopLevels(new_state, stop, target, _effective(new_state, stop), hit, tp_hit)


# -------------------------------------------------------------------------------- correlation clusters


def correlation_distance(corr: ArrayLike) -> FloatArray:
    """Mantegna's metric ``sqrt((1 - rho) / 2)``."""
    c = np.clip(np.asarray(corr, dtype=np.float64), -1.0, 1.0)
    d = np.sqrt(0.5 * (1.0 - c))
    np.fill_diagonal(d, 0.0)
    return d


def correlation_clusters(corr: ArrayLike, min_cluster_correlation: float = 0.5) -> np.ndarray:
    """Cluster labels 1..k: average linkage on correlation distance, cut at ``sqrt((1 - min_corr) / 2)``."""
    c = np.asarray(corr, dtype=np.float64)
    n = c.shape[0]
    if n == 1:
        return np.ones(1, dtype=np.int64)
    d = correlation_distance(c)
    link = hierarchy.linkage(squareform(d, checks=False), method="average")
    cut = math.sqrt(0.5 * (1.0 - min_cluster_correlation))
    return hierarchy.fcluster(link, t=cut, criterion="distance").astype(np.int64)


# ------------------------------------------------------------------------------------------ portfolio heat

#: Weights of the heat score's parts (each part is a utilization clipped to [0, 1]).
HEAT_WEIGHTS = {"risk_at_stops": 0.5, "largest_position": 0.25, "largest_cluster": 0.25}


@dataclass(frozen=True)
class Heat:
    """Portfolio heat of a book: the parts, their utilizations and the 0-100 score."""

    risk_at_stops_pct_nav: float
    largest_position_share: float
    largest_cluster_share: float
    risk_utilization: float
    position_utilization: float
    cluster_utilization: float
    heat_score: float


def portfolio_heat(
    risk_at_stops: ArrayLike,
    gross_exposure: ArrayLike,
    clusters: ArrayLike,
    nav: float,
    *,
    max_portfolio_risk_pct_nav: float,
    max_position_pct_gross: float,
    max_cluster_pct_gross: float,
) -> Heat:
    """``heat = 100 (0.5 u_risk + 0.25 u_position + 0.25 u_cluster)``, each ``u`` = part / its cap clipped to [0, 1].

    ``risk_at_stops`` and ``gross_exposure`` are per position (positive money); ``clusters`` labels them.
    """
    r = np.asarray(risk_at_stops, dtype=np.float64)
    g = np.abs(np.asarray(gross_exposure, dtype=np.float64))
    lab = np.asarray(clusters)
    gross = g.sum()
    risk_pct = float(r.sum() / nav)
    largest = float(g.max() / gross) if gross > 0 else 0.0
    if gross > 0:
        _, inv = np.unique(lab, return_inverse=True)
        cluster_share = float(np.bincount(inv, weights=g).max() / gross)
    else:
        cluster_share = 0.0
    u = (
        min(max(risk_pct / max_portfolio_risk_pct_nav, 0.0), 1.0),
        min(largest / max_position_pct_gross, 1.0),
        min(cluster_share / max_cluster_pct_gross, 1.0),
    )
    score = 100.0 * sum(w * x for w, x in zip(HEAT_WEIGHTS.values(), u, strict=True))
    return Heat(risk_pct, largest, cluster_share, *u, score)


# ----------------------------------------------------------------------------------- XGBoost sizing

ML_FEATURES: tuple[str, ...] = (
    "realized_vol_5d",
    "realized_vol_21d",
    "realized_vol_63d",
    "implied_vol",
    "log_volume_ratio",
    "return_5d",
    "return_21d",
    "sessions_to_earnings",
    "volatility_index",
    "sector_code",
)
ML_TARGETS: tuple[str, ...] = ("forward_vol_5d", "forward_max_drawdown_5d")
QUANTILES: tuple[float, float, float] = (0.1, 0.5, 0.9)
#: The quantile boosters fitted per target: the ones ``predict_ml``'s users read (the vol's three, for the median
#: and the confidence; the drawdown's median and 90 %; a 10 % drawdown booster was fitted and never read).
TARGET_QUANTILES: dict[str, tuple[float, ...]] = {ML_TARGETS[0]: QUANTILES, ML_TARGETS[1]: (0.5, 0.9)}

FALLBACK_NONE = "none"
FALLBACK_MISSING = "model_missing"
FALLBACK_STALE = "model_stale"
FALLBACK_OUT_OF_RANGE = "features_out_of_range"
FALLBACK_LOW_CONFIDENCE = "low_confidence"


@dataclass(frozen=True)
class MlSettings:
    """Training and fallback settings of the XGBoost sizing model."""

    horizon: int = 5
    min_train_rows: int = 200
    retrain_interval_sessions: int = 21
    confidence_threshold: float = 0.5
    n_rounds: int = 60
    max_depth: int = 3
    learning_rate: float = 0.1
    seed: int = 0
    n_jobs: int = 1


def ml_dataset(
    close: ArrayLike,
    high: ArrayLike,
    low: ArrayLike,
    volume: ArrayLike,
    implied_vol: ArrayLike,
    sessions_to_earnings: ArrayLike,
    volatility_index: ArrayLike,
    sector_code: ArrayLike,
    horizon: int = 5,
) -> tuple[FloatArray, FloatArray]:
    """Features (T x N x F, ``ML_FEATURES``) known at each close and targets (T x N x 2, ``ML_TARGETS``).

    Inputs are T x N (sessions x names; ``volatility_index`` T, ``sector_code`` N). The targets of session t are
    the annualized realized vol of the log returns t+1..t+h and the maximum drawdown of the close path
    t..t+h (NaN where the window runs past the data): they are only known at t+h.
    """
    c = np.asarray(close, dtype=np.float64)
    t_n, n = c.shape
    r = np.vstack([np.full((1, n), np.nan), np.diff(np.log(c), axis=0)])

    def trailing_vol(w: int) -> FloatArray:
        sq = np.nan_to_num(r * r)
        cs = np.vstack([np.zeros((1, n)), np.cumsum(sq, axis=0)])
        out = np.full((t_n, n), np.nan)
        out[w:] = np.sqrt((cs[w + 1 :] - cs[1:-w]) / w * TRADING_DAYS)
        return out

    def trailing_ret(w: int) -> FloatArray:
        out = np.full((t_n, n), np.nan)
        out[w:] = np.log(c[w:] / c[:-w])
        return out

    vol = np.asarray(volume, dtype=np.float64)
    lv = np.log(np.maximum(vol, 1.0))
    cs_v = np.vstack([np.zeros((1, n)), np.cumsum(lv, axis=0)])
    mean21 = np.full((t_n, n), np.nan)
    mean21[21:] = (cs_v[22:] - cs_v[1:-21]) / 21
    feats = np.stack(
        [
            trailing_vol(5),
            trailing_vol(21),
            trailing_vol(63),
            np.asarray(implied_vol, dtype=np.float64),
            lv - mean21,
            trailing_ret(5),
            trailing_ret(21),
            np.asarray(sessions_to_earnings, dtype=np.float64),
            np.broadcast_to(np.asarray(volatility_index, dtype=np.float64)[:, None], (t_n, n)),
            np.broadcast_to(np.asarray(sector_code, dtype=np.float64)[None, :], (t_n, n)),
        ],
        axis=2,
    )
    targets = np.full((t_n, n, 2), np.nan)
    h = horizon
    if t_n > h:
        fwd = np.stack([r[k + 1 : t_n - h + k + 1] for k in range(h)], axis=0)  # h x (T-h) x N
        targets[: t_n - h, :, 0] = np.sqrt(np.sum(fwd * fwd, axis=0) / h * TRADING_DAYS)
        path = np.stack([c[k : t_n - h + k] for k in range(h + 1)], axis=0)  # (h+1) x (T-h) x N
        peak = np.maximum.accumulate(path, axis=0)
        targets[: t_n - h, :, 1] = np.max(1.0 - path / peak, axis=0)
    return feats, targets


@dataclass(frozen=True)
class MlModel:
    """Quantile boosters per target, the last session whose targets were known, and the training range."""

    boosters: dict[tuple[str, float], xgb.Booster]
    trained_through: int
    feature_min: FloatArray
    feature_max: FloatArray
    n_train: int
    settings: MlSettings = field(default_factory=MlSettings)


def train_ml_model(features: FloatArray, targets: FloatArray, as_of: int, settings: MlSettings) -> MlModel | None:
    """Fit on sessions ``t <= as_of - horizon`` (targets fully realized by ``as_of``); None if too few rows.

    ``features`` T x N x F and ``targets`` T x N x 2 from ``ml_dataset``. Nothing after ``as_of`` is read.
    """
    last = as_of - settings.horizon
    if last < 0:
        return None
    x = features[: last + 1].reshape(-1, features.shape[2])
    y = targets[: last + 1].reshape(-1, targets.shape[2])
    keep = np.all(np.isfinite(y), axis=1) & np.isfinite(x[:, 2])  # the 63-session vol is formed
    if int(keep.sum()) < settings.min_train_rows:
        return None
    x, y = x[keep], y[keep]
    boosters: dict[tuple[str, float], xgb.Booster] = {}
    dm = xgb.DMatrix(x, missing=np.nan, nthread=settings.n_jobs)
    for k, name in enumerate(ML_TARGETS):
        dm.set_label(y[:, k])
        for q in TARGET_QUANTILES[name]:
            params = {
                "objective": "reg:quantileerror",
                "quantile_alpha": q,
                "tree_method": "hist",
                "max_depth": settings.max_depth,
                "eta": settings.learning_rate,
                "seed": settings.seed,
                "nthread": settings.n_jobs,
                "base_score": float(np.quantile(y[:, k], q)),
                "verbosity": 0,
            }
            boosters[(name, q)] = xgb.train(params, dm, num_boost_round=settings.n_rounds)
    with warnings.catch_warnings():  # a feature the source never has (no volatility index) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(x, axis=0), np.nanmax(x, axis=0)
    return MlModel(boosters, last, lo, hi, int(keep.sum()), settings)


@dataclass(frozen=True)
class MlPrediction:
    """Quantile predictions per name (arrays) and the confidence score ``1 - (q90 - q10) / (2 q50)`` of the vol."""

    vol_q10: FloatArray
    vol_q50: FloatArray
    vol_q90: FloatArray
    drawdown_q50: FloatArray
    drawdown_q90: FloatArray
    confidence: FloatArray
    in_range: np.ndarray


def predict_ml(model: MlModel, x: FloatArray) -> MlPrediction:
    """Predictions for feature rows ``x`` (N x F); ``in_range``: every finite feature inside the training range."""
    dm = xgb.DMatrix(x, missing=np.nan, nthread=model.settings.n_jobs)
    p = {k: model.boosters[k].predict(dm).astype(np.float64) for k in model.boosters}
    v10, v50, v90 = np.sort(np.stack([p[(ML_TARGETS[0], q)] for q in QUANTILES]), axis=0)
    d50, d90 = p[(ML_TARGETS[1], 0.5)], np.fmax(p[(ML_TARGETS[1], 0.9)], p[(ML_TARGETS[1], 0.5)])
    conf = np.where(v50 > 0, np.clip(1.0 - (v90 - v10) / (2.0 * v50), 0.0, 1.0), 0.0)
    finite = np.isfinite(x)
    inside = (~finite) | ((x >= model.feature_min) & (x <= model.feature_max))
    return MlPrediction(v10, v50, v90, d50, d90, conf, np.all(inside, axis=1))


@dataclass(frozen=True)
class MlSize:
    """Per name: the weight applied, which rule applied (``fallback``) and the model's numbers behind it."""

    weight: FloatArray
    fallback: np.ndarray  # object array of FALLBACK_* codes
    predicted_vol: FloatArray
    predicted_max_drawdown: FloatArray
    confidence: FloatArray


def ml_size(
    model: MlModel | None,
    x: FloatArray,
    as_of: int,
    *,
    target_vol: ArrayLike,
    vol_target_weight: ArrayLike,
    regime_scale: ArrayLike = 1.0,
    max_position_risk_pct_nav: float = 0.01,
) -> MlSize:
    """ML weight ``min(target / predicted vol x regime, risk bound / predicted q90 drawdown)``, else the fallback.

    The fallback (the volatility-target weight) applies, in this order, when the model is missing, was last
    trained more than ``retrain_interval_sessions`` before ``as_of`` (``as_of - horizon - trained_through``),
    any feature is outside the training range, or the confidence is below its threshold.
    """
    n = x.shape[0]
    vt = np.broadcast_to(np.asarray(vol_target_weight, dtype=np.float64), (n,))
    tv = np.broadcast_to(np.asarray(target_vol, dtype=np.float64), (n,))
    rs = np.broadcast_to(np.asarray(regime_scale, dtype=np.float64), (n,))
    nan = np.full(n, np.nan)
    if model is None:
        return MlSize(vt.copy(), np.full(n, FALLBACK_MISSING, dtype=object), nan, nan, nan)
    pred = predict_ml(model, x)
    reason = np.full(n, FALLBACK_NONE, dtype=object)
    age = as_of - model.settings.horizon - model.trained_through
    if age > model.settings.retrain_interval_sessions:
        reason[:] = FALLBACK_STALE
    else:
        reason[~pred.in_range] = FALLBACK_OUT_OF_RANGE
        low = (reason == FALLBACK_NONE) & (pred.confidence < model.settings.confidence_threshold)
        reason[low] = FALLBACK_LOW_CONFIDENCE
    vol = np.where(pred.vol_q50 > 0, pred.vol_q50, np.nan)
    dd = np.where(pred.drawdown_q90 > 0, pred.drawdown_q90, np.nan)
    by_vol = tv / vol * rs
    by_dd = np.where(np.isnan(dd), np.inf, max_position_risk_pct_nav / dd)
    model_weight = np.fmin(by_vol, by_dd)
    weight = np.where(reason == FALLBACK_NONE, model_weight, vt)
    return MlSize(weight, reason, pred.vol_q50, pred.drawdown_q90, pred.confidence)


@dataclass(frozen=True)
class WalkForwardMl:
    """Out-of-sample predictions of the forward 5-day vol (median) at each session from ``start`` on."""

    predicted_vol: FloatArray  # T x N, NaN before the first prediction
    refit_sessions: tuple[int, ...]


def walk_forward_ml(features: FloatArray, targets: FloatArray, start: int, settings: MlSettings) -> WalkForwardMl:
    """Refit every ``retrain_interval_sessions`` from ``start``; predict each session with the latest fit.

    A prediction at session t uses a model trained at some ``s <= t`` on targets realized by ``s``: no
    look-ahead (changing anything after t leaves the predictions up to t unchanged).
    """
    t_n, n, _ = features.shape
    out = np.full((t_n, n), np.nan)
    refits: list[int] = []
    model: MlModel | None = None
    for t in range(start, t_n):
        if model is None or (t - start) % settings.retrain_interval_sessions == 0:
            model = train_ml_model(features[: t + 1], targets[: t + 1], t, settings) or model
            refits.append(t)
        if model is not None:
            out[t] = predict_ml(model, features[t]).vol_q50
    return WalkForwardMl(out, tuple(refits))


# ------------------------------------------------------------------------------ recommendation and limits


@dataclass(frozen=True)
class SizeLimits:
    """Caps on one name's absolute weight (fractions of NAV); inf where a limit does not apply."""

    per_name: float = math.inf
    sector: float = math.inf
    cluster: float = math.inf
    delta: float = math.inf
    dollar_delta: float = math.inf
    gamma: float = math.inf
    vega: float = math.inf
    theta: float = math.inf
    correlation: float = math.inf
    trading_state: float = math.inf
    position_risk: float = math.inf
    portfolio_risk: float = math.inf
    risk_budget: float = math.inf


def greek_cap(
    current: float, per_unit: float, cap: float | None, direction: float, *, loss_only: bool = False
) -> float:
    """Most units of an instrument (in the signal's ``direction``) a Greek cap allows: the largest ``q >= 0`` with
    ``|current + direction x per_unit x q| <= cap`` (``loss_only``: ``-(current + direction x per_unit x q) <= cap``,
    the theta cap on the loss per day). ``current`` is the Greek of everything else the cap covers. Inf when the
    instrument does not move the Greek toward the cap (a stock's gamma, vega and theta are 0) or there is no cap;
    0 when the cap is already used up in the direction the trade moves it.
    """
    g = direction * per_unit
    if cap is None or not math.isfinite(cap):
        return math.inf
    if loss_only:
        return math.inf if g >= 0.0 else max((cap + current) / -g, 0.0)
    if g == 0.0:
        return math.inf
    return max((cap - math.copysign(1.0, g) * current) / abs(g), 0.0)


def gross_share_cap(cap_share: float, gross_other: float, group_other: float = 0.0) -> float:
    """Largest exposure ``x`` with ``(group_other + x) / (gross_other + x) <= cap_share`` (inf when never binding)."""
    if not math.isfinite(cap_share) or cap_share >= 1.0:
        return math.inf
    return max((cap_share * gross_other - group_other) / (1.0 - cap_share), 0.0)


def recommend(method_weights: dict[str, float], direction: float, limits: SizeLimits) -> tuple[float, str, str]:
    """The most conservative method's |weight|, clipped by every limit; returns (signed weight, method, binding).

    ``binding`` is the limit that cut the size (``method`` when none did).
    """
    finite = {k: abs(v) for k, v in method_weights.items() if v is not None and math.isfinite(v)}
    if not finite or direction == 0:
        return 0.0, "none", "no_signal"
    method = min(finite, key=lambda k: finite[k])
    size = finite[method]
    binding = "method"
    for name, cap in vars(limits).items():
        cap = max(cap, 0.0)
        if cap < size:
            size, binding = cap, name
    return math.copysign(size, direction), method, binding


def quantity_within_recommendation(current: float, order: float, recommended: float) -> float:
    """Largest part of a signed ``order`` (shares) keeping the position within the recommended size.

    The post-trade position may lie between 0 and ``recommended`` (both signs allowed only through 0); an
    order that moves the position toward 0 is never cut, and an order that adds to a position already
    beyond the recommendation gets 0. Returns a signed quantity of the order's sign, |result| <= |order|.
    """
    if order > 0:
        max_post = max(recommended, 0.0, min(current, 0.0))
        return min(max(max_post - current, 0.0), order)
    if order < 0:
        min_post = min(recommended, 0.0, max(current, 0.0))
        return -min(max(current - min_post, 0.0), -order)
    return 0.0


# ------------------------------------------------------------------------------------------ risk budgets


def strategy_component_var(
    symbols: Sequence[str], strategies: Sequence[str], exposure: ArrayLike, component_var: Mapping[str, float]
) -> dict[str, float]:
    """Each strategy's share of the book's component VaR: a symbol's component VaR split over the strategies
    holding it in proportion to their |exposure| in it (exact when one strategy holds the symbol; equal split
    when every exposure is 0). Sums to the component VaR of the symbols held."""
    e = np.abs(np.asarray(exposure, dtype=np.float64))
    out: dict[str, float] = {}
    sym = np.asarray(symbols, dtype=object)
    strat = np.asarray(strategies, dtype=object)
    for s in dict.fromkeys(sym):
        mask = sym == s
        cvar = float(component_var.get(s, 0.0))
        w = e[mask]
        share = w / w.sum() if w.sum() > 0 else np.full(w.size, 1.0 / w.size)
        for k, x in zip(strat[mask], share, strict=True):
            out[str(k)] = out.get(str(k), 0.0) + cvar * float(x)
    return out


@dataclass(frozen=True)
class RiskBudget:
    """A strategy's component VaR against its budget (share x the book's VaR)."""

    strategy: str
    component_var: float
    budget_share: float
    budget: float
    utilization: float
    status: str  # OK, WARN, BREACH


def risk_budget_status(
    component_var: Mapping[str, float], book_var: float, budgets: Mapping[str, float], warn_fraction: float = 0.8
) -> list[RiskBudget]:
    """Budget utilization per budgeted strategy: BREACH above its budget, WARN above ``warn_fraction`` of it."""
    out = []
    for strategy, share in budgets.items():
        cvar = float(component_var.get(strategy, 0.0))
        budget = share * book_var
        u = cvar / budget if budget > 0 else (math.inf if cvar > 0 else 0.0)
        status = "BREACH" if u > 1.0 else "WARN" if u > warn_fraction else "OK"
        out.append(RiskBudget(strategy, cvar, share, budget, u, status))
    return out
