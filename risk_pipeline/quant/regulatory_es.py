"""Regulatory expected shortfall: liquidity horizons (Basel MAR33) and the stressed window (numpy in and out).

Liquidity-horizon-adjusted ES (Basel Framework MAR33.4, the FRTB internal-models ES). Every risk factor gets a
liquidity horizon ``LH`` from the MAR33.12 table (``MAR33_LIQUIDITY_HORIZONS_DAYS``); with ``T = 10`` days and
``LH_1 < ... < LH_5 = 10, 20, 40, 60, 120``::

    ES = sqrt( ES_T(P)^2 + sum_{j >= 2} ( ES_T(P, j) sqrt((LH_j - LH_{j-1}) / T) )^2 )

``ES_T(P)`` is the 97.5 % ES over ``T`` days with every factor shocked, ``ES_T(P, j)`` the same with only the
factors of ``LH >= LH_j`` shocked (the others held at today's value). Here each ``ES_T`` is historical: the
overlapping ``T``-day moves of the period applied to today's book, every position fully revalued
(``var.historical_scenarios``, ``scenario_engine.evaluate``; no carry: the shocks are the risk). A bucket with no
factor contributes 0 (nothing is shocked), and a negative ``ES_T(P, j)`` (a tail that gains) enters the cascade
as 0.

Equity factors of this platform (spot and ATM implied vol per underlying) map by market capitalisation:
large cap (at least USD 2 bn, MAR21.78) spot 10 days and vol 20 days, small cap spot 20 and vol 60
(``equity_liquidity_horizons``).

Stressed window (Basel 2.5 stressed VaR; FRTB stressed ES calibration, MAR33.5). ``window_es`` gives the 1-day ES
of today's book on every ``window``-day span of a 1-day P&L history, ``worst_es_window`` the span where it is
largest (the latest on ties). A history that covers only the index (the S&P 500 of 2008 as a proxy of the book's
market factor) is mapped to the book's factors by ``index_mapped_history``: each underlying's log return is
``beta_s r_index`` and its ATM log-vol change ``kappa_s r_index`` (``index_betas``: least squares through the
origin on the platform's own history). That is a reduced set of risk factors (one), so its ES is scaled by
``ES_F,C / ES_R,C``, the ratio of the full-set to the reduced-set ES on the current period, floored at 1
(MAR33.5: ``ES = ES_R,S x ES_F,C / ES_R,C``; ``reduced_set_scaling``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from risk_pipeline.quant._numba import BoolArray, FloatArray
from risk_pipeline.quant.portfolio import POSITION_FIELDS, Portfolio
from risk_pipeline.quant.scenario_engine import AmericanMethod, GridMemo, ScenarioSet, evaluate, grid_memo
from risk_pipeline.quant.var import MarketHistory, empirical_var_es, historical_scenarios

#: Liquidity horizons of MAR33.12, trading days (``LH_1 .. LH_5``).
LIQUIDITY_HORIZONS_DAYS: tuple[int, ...] = (10, 20, 40, 60, 120)
#: Base horizon ``T`` of MAR33.4, trading days.
BASE_HORIZON_DAYS = 10
#: Confidence of the FRTB expected shortfall (MAR33.2).
FRTB_CONFIDENCE = 0.975
#: Large market capitalisation threshold of MAR21.78, USD.
LARGE_CAP_MIN_MARKET_CAP_USD = 2.0e9
#: MAR33.12: liquidity horizon of each risk-factor category, trading days.
MAR33_LIQUIDITY_HORIZONS_DAYS: dict[str, int] = {
    "interest_rate_specified_currency": 10,
    "interest_rate_unspecified_currency": 20,
    "interest_rate_atm_volatility": 60,
    "interest_rate_other": 60,
    "credit_spread_sovereign_ig": 20,
    "credit_spread_sovereign_hy": 40,
    "credit_spread_corporate_ig": 40,
    "credit_spread_corporate_hy": 60,
    "credit_spread_volatility": 120,
    "credit_spread_other": 120,
    "equity_price_large_cap": 10,
    "equity_price_small_cap": 20,
    "equity_volatility_large_cap": 20,
    "equity_volatility_small_cap": 60,
    "equity_other": 60,
    "fx_specified_currency_pair": 10,
    "fx_other_currency_pair": 20,
    "fx_volatility": 40,
    "fx_other": 40,
    "energy_carbon_price": 20,
    "precious_nonferrous_metals_price": 20,
    "other_commodities_price": 60,
    "energy_carbon_volatility": 60,
    "precious_nonferrous_metals_volatility": 60,
    "other_commodities_volatility": 120,
    "commodity_other": 120,
}


# ----------------------------------------------------------------------------------------------
# liquidity horizons (MAR33.4, MAR33.12)
# ----------------------------------------------------------------------------------------------


def equity_liquidity_horizons(is_large_cap: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Liquidity horizons (trading days) of each underlying's spot and implied-vol factor: MAR33.12 equity price
    large cap 10 / small cap 20, equity volatility large cap 20 / small cap 60."""
    large = np.asarray(is_large_cap, dtype=bool)
    t = MAR33_LIQUIDITY_HORIZONS_DAYS
    spot = np.where(large, t["equity_price_large_cap"], t["equity_price_small_cap"]).astype(np.int64)
    vol = np.where(large, t["equity_volatility_large_cap"], t["equity_volatility_small_cap"]).astype(np.int64)
    return spot, vol


def cascade_es(
    es_by_horizon: ArrayLike,
    horizons_days: Sequence[int] = LIQUIDITY_HORIZONS_DAYS,
    base_days: int = BASE_HORIZON_DAYS,
) -> float:
    """MAR33.4: ``sqrt(ES_1^2 + sum_{j>=2} (ES_j sqrt((LH_j - LH_{j-1}) / T))^2)``, ``ES_j = ES_T(P, j)``
    (negative ``ES_j`` count as 0)."""
    es = np.maximum(np.asarray(es_by_horizon, dtype=np.float64), 0.0)
    lh = np.asarray(horizons_days, dtype=np.float64)
    if es.shape != lh.shape or es.size == 0 or np.any(np.diff(lh) <= 0.0) or lh[0] != base_days:
        raise ValueError("one ES per liquidity horizon, horizons increasing from the base horizon")
    weights = np.concatenate([[1.0], np.diff(lh) / base_days])
    return float(math.sqrt(float(np.sum(es * es * weights))))


@dataclass(frozen=True)
class LiquidityAdjustedES:
    """``ES_T(P, j)`` per liquidity horizon (``es_by_horizon[0] = ES_T(P)``), the cascade ES and the T-day VaR."""

    es_by_horizon: np.ndarray
    es: float
    var_base: float
    var_confidence: float
    n_scenarios: int

    @property
    def es_base(self) -> float:
        """``ES_T(P)``: every factor shocked."""
        return float(self.es_by_horizon[0])


def liquidity_adjusted_es(
    portfolio: Portfolio,
    history: MarketHistory,
    spot_lh_days: ArrayLike,
    vol_lh_days: ArrayLike,
    *,
    confidence: float = FRTB_CONFIDENCE,
    var_confidence: float = 0.99,
    base_days: int = BASE_HORIZON_DAYS,
    horizons_days: Sequence[int] = LIQUIDITY_HORIZONS_DAYS,
    carry_calendar_days: float = 0.0,
    american: AmericanMethod = "eep_grid",
    client: Any | None = None,
    chunk_size: int | None = None,
    memo: GridMemo | None = None,
) -> LiquidityAdjustedES:
    """MAR33.4 ES of ``portfolio`` on ``history`` (module docstring): overlapping ``base_days`` moves applied
    instantly (``carry_calendar_days`` of time decay, 0 by default: carry is not a risk factor, and it would
    enter every bucket again), full revaluation, factors of ``LH < LH_j`` held for ``ES_T(P, j)``; also the
    ``base_days`` VaR at ``var_confidence`` with every factor shocked. The buckets' grid builds use ``memo``
    (``scenario_engine.GridMemo``; a caller's, kept across calls on other histories of the same portfolio, keeps
    the same bits), a ``GridMemo(1, boundaries=True)`` of this call's by default."""
    spot_lh = np.asarray(spot_lh_days, dtype=np.int64)
    vol_lh = np.asarray(vol_lh_days, dtype=np.int64)
    n_sym = portfolio.n_symbols
    if spot_lh.shape != (n_sym,) or vol_lh.shape != (n_sym,):
        raise ValueError("one spot and one vol liquidity horizon per portfolio symbol")
    if not set(spot_lh.tolist()) | set(vol_lh.tolist()) <= set(horizons_days):
        raise ValueError(f"liquidity horizons must be among {tuple(horizons_days)}")
    sc = historical_scenarios(history, base_days)
    # without carry a position on a name the bucket holds is not revalued: its inputs do not move, so its P&L is 0
    # but for rounding (an exact-engine American's scenario price can differ from its base price by about 1e-10 USD
    # a name), so the bucket revalues the positions on the names it shocks and leaves those terms out (each P&L its
    # own, summed in position order: ES within rounding, 1.8e-14 relative measured), e.g. the small caps' alone in
    # their vol buckets
    sub_books = carry_calendar_days == 0.0
    es = np.zeros(len(horizons_days))
    var_base = math.nan
    done: dict[tuple[bytes, bytes], float] = {}  # ES by the factors a bucket shocks
    # an American whose whole grid input (its vol and log-spot ranges) is the previous bucket's takes that bucket's
    # boundaries and node values, one whose vol range is takes its boundaries (scenario_engine.GridMemo: the same
    # bits); a caller's memo also holds its earlier calls' builds (another window of the same book)
    with grid_memo(GridMemo(1, boundaries=True) if memo is None else memo):
        for j, lh in enumerate(horizons_days):  # five buckets, each a vectorized revaluation of every scenario
            spot_on = spot_lh >= lh
            vol_on = (vol_lh >= lh) & (sc.vol_scale is not None)
            if j > 0 and not (spot_on.any() or vol_on.any()):
                continue  # nothing shocked: no contribution
            key = (spot_on.tobytes(), vol_on.tobytes())
            if key in done:  # the same factors as a shorter horizon's bucket (equity: 40 and 60 days): the same set
                es[j] = done[key]
                continue
            moved = ScenarioSet(
                np.where(spot_on, sc.spot_shock_rel, 0.0),
                vol_scale=None if sc.vol_scale is None else np.where(vol_on, sc.vol_scale, 1.0),
            )
            book = _options_moved(portfolio, spot_on | vol_on) if sub_books else portfolio
            pnl = evaluate(
                book, moved, carry_calendar_days, american=american, client=client, chunk_size=chunk_size
            ).pnl
            es[j] = done[key] = empirical_var_es(pnl, confidence)[1]
            if j == 0:
                var_base = empirical_var_es(pnl, var_confidence)[0]
    return LiquidityAdjustedES(es, cascade_es(es, horizons_days, base_days), var_base, var_confidence, sc.n_scenarios)


def _options_moved(portfolio: Portfolio, shocked: BoolArray) -> Portfolio:
    """``portfolio`` without its options on the symbols not ``shocked`` (itself when it has none; every symbol and
    stock kept, the positions in order)."""
    keep = shocked[portfolio.symbol_index] | ~portfolio.is_option
    if keep.all():
        return portfolio
    fields = ("symbol_index", "quantity", *POSITION_FIELDS)
    return Portfolio(
        symbols=portfolio.symbols,
        spot=portfolio.spot,
        position_id=tuple(i for i, k in zip(portfolio.position_id or (), keep, strict=True) if k),
        **{name: getattr(portfolio, name)[keep] for name in fields},
    )


# ----------------------------------------------------------------------------------------------
# stressed window
# ----------------------------------------------------------------------------------------------


def window_es(pnl_1d: ArrayLike, window: int, confidence: float = FRTB_CONFIDENCE) -> FloatArray:
    """Acerbi-Tasche ES (``var.empirical_var_es``) of every ``window``-day span of a 1-day P&L series in date
    order; element ``i`` is the span starting at ``i``."""
    p = np.asarray(pnl_1d, dtype=np.float64).reshape(-1)
    if p.size < window or window < 1 or not np.all(np.isfinite(p)):
        raise ValueError(f"a finite series of at least {window} days is needed, got {p.size}")
    spans = np.sort(np.lib.stride_tricks.sliding_window_view(p, window), axis=1)
    m = window * (1.0 - confidence)
    if abs(m - round(m)) < 1e-9:
        m = float(round(m))
    if m <= 1.0:
        return -spans[:, 0]
    whole = math.floor(m)
    tail = spans[:, :whole].sum(axis=1)
    if whole < window:
        tail = tail + (m - whole) * spans[:, whole]
    return -tail / m


def worst_es_window(pnl_1d: ArrayLike, window: int, confidence: float = FRTB_CONFIDENCE) -> int:
    """Start of the span with the largest ``window_es`` (the latest such span on ties)."""
    es = window_es(pnl_1d, window, confidence)
    return int(es.size - 1 - np.argmax(es[::-1]))


def index_betas(factor_changes: ArrayLike, index_returns: ArrayLike, min_obs: int = 60) -> np.ndarray:
    """Least-squares slope through the origin of each column of ``factor_changes`` on ``index_returns``:
    ``sum x y / sum x^2`` over the days where both are finite; NaN with fewer than ``min_obs`` such days."""
    y = np.asarray(factor_changes, dtype=np.float64)
    x = np.asarray(index_returns, dtype=np.float64).reshape(-1)
    if y.ndim != 2 or y.shape[0] != x.size:
        raise ValueError("factor_changes must be (n_days, n_factors) with one index return per day")
    ok = np.isfinite(y) & np.isfinite(x)[:, None]
    xs = np.where(ok, x[:, None], 0.0)
    sxx = np.sum(xs * xs, axis=0)
    sxy = np.sum(xs * np.where(ok, y, 0.0), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = sxy / sxx
    return np.where((ok.sum(axis=0) >= min_obs) & (sxx > 0.0), beta, np.nan)


def index_mapped_history(
    index_log_returns: ArrayLike, spot_betas: ArrayLike, vol_slopes: ArrayLike | None = None
) -> MarketHistory:
    """A one-factor history: log return ``beta_s r_t`` and relative ATM-vol change ``exp(kappa_s r_t) - 1`` per
    underlying ``s`` and day ``t`` (a NaN ``kappa_s`` leaves that vol unchanged; ``None``: no vol moves)."""
    x = np.asarray(index_log_returns, dtype=np.float64).reshape(-1)
    b = np.asarray(spot_betas, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(b)):
        raise ValueError("every underlying needs a finite spot beta")
    iv = None
    if vol_slopes is not None:
        k = np.nan_to_num(np.asarray(vol_slopes, dtype=np.float64).reshape(-1), nan=0.0)
        iv = np.expm1(np.outer(x, k))
    return MarketHistory(np.outer(x, b), iv)


def reduced_set_scaling(es_full_current: float, es_reduced_current: float) -> float:
    """MAR33.5 ``ES_F,C / ES_R,C`` floored at 1 (1 when the reduced set has no ES)."""
    if not es_reduced_current > 0.0:
        return 1.0
    return max(1.0, es_full_current / es_reduced_current)
