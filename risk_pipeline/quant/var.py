"""Value at Risk and Expected Shortfall of a ``Portfolio``: historical, parametric and Monte Carlo (FHS).

Sign and units. VaR and ES are positive numbers meaning loss, in the book's currency, over
``horizon_days`` trading days at ``confidence`` (docs/architecture.md). For a P&L sample
``p_(1) <= ... <= p_(n)`` and ``m = n (1 - confidence)``::

    VaR = -p_(k),  k = ceil(m)                      (the lower empirical (1 - c)-quantile of P&L)
    ES  = -(sum_{i <= floor(m)} p_(i) + (m - floor(m)) p_(floor(m) + 1)) / m

the average loss beyond VaR in the tail-mean form of Acerbi & Tasche (2002, "On the coherence of
expected shortfall"), so ``ES >= VaR`` always and ES is the mean of the ``m`` worst when ``m`` is an
integer (Jorion, "Value at Risk", 3rd ed., ch. 5; Hull, "Risk Management and Financial
Institutions", 5th ed., ch. 12-13).

Methods (``method`` column):

* ``historical``: full revaluation under the joint historical moves of the last ``lookback_days``
  days: each underlying's h-day log return and, when a history of relative ATM implied-vol changes
  is supplied, its h-day relative vol change applied multiplicatively to every option on that
  underlying (without that history vols are left unchanged); with ``MarketHistory.rate_changes`` every
  option's rate moves by the day's zero-rate change, with ``dividend_changes`` every option's dividend yield
  by its underlying's yield change (absolute shifts, summed over the horizon). Multi-day horizons use the
  ``lookback - h + 1`` overlapping h-day windows, not the square-root-of-time rule (Hull ch. 13).
* ``delta_normal``: ``P&L = sum_s D_s x_s`` with dollar deltas ``D_s = sum units delta S_s`` and
  ``x ~ N(0, h Sigma)``, ``Sigma`` the zero-mean covariance of daily log returns over the lookback,
  equal-weighted by default or exponentially weighted (``covariance="ewma"``, RiskMetrics 1996, lambda
  0.94); ``VaR = z_c sqrt(D' h Sigma D)``, ``ES = sqrt(D' h Sigma D) phi(z_c) / (1 - c)``
  (Jorion ch. 7 and 11).
* ``delta_gamma_cornish_fisher``: the quadratic ``P&L = a + b'f + f'Gf / 2`` in the factors ``f`` =
  (returns, and relative ATM vol changes when that history is given) ~ ``N(0, h Sigma)``, with
  ``a`` the theta decay over the horizon, ``b`` dollar deltas and vega exposures ``units vega sigma``,
  ``G`` the per-underlying blocks of dollar gamma ``units gamma S^2``, ``units volga sigma^2`` and
  ``units vanna S sigma``. Its cumulants are exact (Mathai & Provost 1992, "Quadratic forms in random
  variables", ch. 3; Jorion ch. 15; Zangari 1996, "A VaR methodology for portfolios that include
  options", RiskMetrics Monitor Q1)::

      k1 = a + tr(G S)/2,   k_r = r!/2 b'S(GS)^{r-2}b + (r-1)!/2 tr((GS)^r)  (r >= 2, S = h Sigma)

  and the (1 - c)-quantile is the Cornish-Fisher expansion ``mu + sigma w(z)`` with
  ``w(z) = z + (z^2-1) s/6 + (z^3-3z) k/24 - (2z^3-5z) s^2/36`` (skewness ``s``, excess kurtosis
  ``k``); ES integrates ``w`` over the tail numerically (``scipy.integrate.quad``).
* ``monte_carlo_fhs``: filtered historical simulation (Barone-Adesi, Giannopoulos & Vosper 1999,
  "VaR without correlations for portfolios of derivative securities", J. Futures Markets 19). Each
  underlying's returns over the lookback window are standardized by its GARCH(1,1)-t conditional vol
  (``vol_forecast.fit_garch`` on that window, or given parameters; a failed fit falls back to a
  constant variance), whole dates (rows of standardized returns and of relative vol changes) are
  bootstrapped jointly, which keeps the cross-sectional dependence, and rescaled to today's forecast
  vol. ``fhs_paths=
  "garch"`` (default) builds h-day paths day by day with the GARCH variance recursion driven by the
  simulated returns (as in Barone-Adesi et al.); ``"rescaled_sum"`` uses today's forecast vol for all
  h days (``sigma_{T+1} sum z``). Vol changes are bootstrapped unfiltered and compounded over the h
  days, rate and dividend-yield changes (when the history has them) unfiltered and summed.
  ``n_scenarios`` (default 10,000) paths, seeded, full revaluation. At one day the bootstrap's
  distribution is uniform over the ``lookback`` filtered dates, so the 1-day VaR/ES are computed exactly
  from every date once (``standard_error`` 0); longer horizons report the bootstrap standard error of
  the sampled VaR (200 resamples of the scenario P&L).

Tail diagnostics of historical multi-day VaR (overlapping windows): ``var_non_overlapping`` is the VaR
of the non-overlapping windows only (every h-th, ending on the last day: fewer, independent scenarios),
``independent_tail_obs`` the number of episodes the ``ceil(n (1 - c))`` tail windows form (windows whose
starts are less than h days apart share days and count once), and a tail that is one episode is noted.

Component VaR (Euler allocation, ``sum_s component_s = VaR``; Jorion ch. 7; Tasche 2000):

* parametric: ``component_s = dVaR/dlambda_s`` for a scaling ``lambda_s`` of every exposure on
  underlying ``s``, exact (analytic derivatives of the cumulants above); for delta-normal this is the
  marginal formula ``z D_s (Sigma D)_s / sqrt(D' Sigma D)``;
* simulation: ``E[-P&L_s | P&L = -VaR]`` estimated with a Gaussian kernel on the scenario P&L around
  the VaR quantile (Gourieroux, Laurent & Scaillet 2000, "Sensitivity analysis of Values at Risk",
  J. Empirical Finance 7; Epperlein & Smillie 2006, "Cracking VaR with kernels", Risk), bandwidth by
  Silverman's rule; the kernel-weighted per-underlying P&L are scaled by their sum, so the components
  add up to VaR exactly.

Time decay. Options are revalued ``horizon_days * calendar_days_per_trading_day`` calendar days later
(default ``365 / 252``); the parametric CF method adds the matching theta decay. American options in
the simulation methods use ``VarConfig.american`` (default ``"eep_grid"``: BSM plus the interpolated
early-exercise premium, measured error in ``scenario_engine``; ``"exact"`` reprices BS2002 in every
scenario).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numba import njit
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm

from risk_pipeline.quant._numba import JIT, FloatArray, IntArray, run_chunked
from risk_pipeline.quant.american import american_greeks
from risk_pipeline.quant.bsm import bsm_greeks
from risk_pipeline.quant.portfolio import Portfolio, stack_portfolios
from risk_pipeline.quant.scenario_engine import (
    EEP_MIN_SCENARIOS,
    AmericanMethod,
    ScenarioPnl,
    ScenarioSet,
    evaluate,
    evaluate_many,
    evaluate_on_one_grid,
)
from risk_pipeline.quant.smile_dynamics import ExpiryScaledVolMoves, SmileDynamics, checked_moves
from risk_pipeline.quant.vol_forecast import GarchParams, fit_garch, garch_variance
from risk_pipeline.quant.vol_shocks import expiry_factor

HISTORICAL = "historical"
DELTA_NORMAL = "delta_normal"
DELTA_GAMMA_CF = "delta_gamma_cornish_fisher"
MONTE_CARLO_FHS = "monte_carlo_fhs"
ALL_METHODS = (HISTORICAL, DELTA_NORMAL, DELTA_GAMMA_CF, MONTE_CARLO_FHS)
#: Historical simulation on the worst window of the available history (``stressed_var``), reported beside
#: the four methods; not part of ``ALL_METHODS`` (the backtests and limits use those).
STRESSED_HISTORICAL = "stressed_historical"
STRESS_WINDOW_DAYS = 250
TRADING_DAYS = 252
DAYS_PER_YEAR = 365.0


@functools.lru_cache(maxsize=256)
def _norm_ppf(q: float) -> float:
    """``norm.ppf`` of a scalar, memoized (the same few confidence levels for every book and day)."""
    return float(norm.ppf(q))


@functools.lru_cache(maxsize=256)
def _norm_pdf(z: float) -> float:
    """``norm.pdf`` of a scalar, memoized."""
    return float(norm.pdf(z))


# ----------------------------------------------------------------------------------------------
# inputs and results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VarConfig:
    """Settings of every method (module docstring)."""

    confidences: tuple[float, ...] = (0.95, 0.975, 0.99)
    horizons: tuple[int, ...] = (1, 3, 5)
    lookback_days: int = 500
    n_scenarios: int = 10_000
    seed: int = 0
    fhs_paths: Literal["garch", "rescaled_sum"] = "garch"
    american: AmericanMethod = "eep_grid"
    calendar_days_per_trading_day: float = DAYS_PER_YEAR / TRADING_DAYS
    chunk_size: int | None = None
    #: covariance of the parametric methods: equal weights over the look-back, or RiskMetrics EWMA
    covariance: Literal["equal_weight", "ewma"] = "equal_weight"
    ewma_decay: float = 0.94

    def __post_init__(self) -> None:
        if not self.confidences or any(not 0.5 < c < 1.0 for c in self.confidences):
            raise ValueError("confidences must be in (0.5, 1)")
        if not self.horizons or any(int(h) != h or h < 1 for h in self.horizons):
            raise ValueError("horizons must be positive integers")
        if self.lookback_days < 2 or self.n_scenarios < 1:
            raise ValueError("lookback_days must be at least 2 and n_scenarios at least 1")
        if self.covariance not in ("equal_weight", "ewma") or not 0.0 < self.ewma_decay < 1.0:
            raise ValueError("covariance must be 'equal_weight' or 'ewma' with 0 < ewma_decay < 1")
        if self.fhs_paths not in ("garch", "rescaled_sum"):
            raise ValueError("fhs_paths must be 'garch' or 'rescaled_sum'")
        if not self.calendar_days_per_trading_day >= 0.0:
            raise ValueError("calendar_days_per_trading_day must be non-negative")


@dataclass(frozen=True, eq=False)
class MarketHistory:
    """Daily risk-factor history, oldest first, one column per portfolio symbol.

    ``log_returns[t, s] = ln(C_{t+1} / C_t)``; ``iv_rel_changes[t, s] = iv_{t+1} / iv_t - 1`` of the
    underlying's ATM implied vol on the same days (NaN where unknown: vol unchanged that day);
    ``rate_changes[t] = r_{t+1} - r_t``, the absolute change of the zero rate (decimal; NaN where unknown:
    rates unchanged that day), applied to every option as a parallel shift of its rate;
    ``dividend_changes[t, s] = q_{t+1} - q_t``, the absolute change of the underlying's continuous dividend
    yield (decimal; NaN where unknown: unchanged that day), applied to every option on it (historical and FHS).
    """

    log_returns: FloatArray
    iv_rel_changes: FloatArray | None = None
    rate_changes: FloatArray | None = None
    dividend_changes: FloatArray | None = None

    def __post_init__(self) -> None:
        r = np.ascontiguousarray(self.log_returns, dtype=np.float64)
        if r.ndim != 2 or r.shape[0] < 2 or not np.all(np.isfinite(r)):
            raise ValueError("log_returns must be a finite (n_days >= 2, n_symbols) array")
        object.__setattr__(self, "log_returns", r)
        if self.iv_rel_changes is not None:
            v = np.array(self.iv_rel_changes, dtype=np.float64)
            if v.shape != r.shape:
                raise ValueError("iv_rel_changes must have the shape of log_returns")
            v[~np.isfinite(v)] = 0.0
            if np.any(v <= -1.0):
                raise ValueError("iv_rel_changes must be above -1")
            object.__setattr__(self, "iv_rel_changes", v)
        if self.rate_changes is not None:
            dr = np.array(self.rate_changes, dtype=np.float64).reshape(-1)
            if dr.shape != (r.shape[0],):
                raise ValueError("rate_changes must have one entry per day of log_returns")
            dr[~np.isfinite(dr)] = 0.0
            object.__setattr__(self, "rate_changes", dr)
        if self.dividend_changes is not None:
            dq = np.array(self.dividend_changes, dtype=np.float64)
            if dq.shape != r.shape:
                raise ValueError("dividend_changes must have the shape of log_returns")
            dq[~np.isfinite(dq)] = 0.0
            object.__setattr__(self, "dividend_changes", dq)

    @property
    def n_days(self) -> int:
        return int(self.log_returns.shape[0])

    def window(self, lookback: int) -> MarketHistory:
        """The last ``lookback`` days (all of them if fewer)."""
        return self.rows(slice(-lookback, None))

    def rows(self, days: slice) -> MarketHistory:
        """The days ``days`` of every factor."""
        v, dr, dq = self.iv_rel_changes, self.rate_changes, self.dividend_changes
        return MarketHistory(
            self.log_returns[days],
            None if v is None else v[days],
            None if dr is None else dr[days],
            None if dq is None else dq[days],
        )

    def factor_tags(self) -> list[str]:
        """``method_note`` parts naming the rate and dividend-yield factors this history moves."""
        tags = []
        if self.rate_changes is not None:
            tags.append("rates: every option's rate shifted by the history's zero-rate change")
        if self.dividend_changes is not None:
            tags.append("dividends: every option's yield shifted by its underlying's dividend-yield change")
        return tags


@dataclass(frozen=True, eq=False)
class VarResult:
    """One (method, horizon, confidence): VaR, ES and the per-underlying component VaR."""

    method: str
    horizon_days: int
    confidence: float
    var: float
    expected_shortfall: float
    n_scenarios: int
    lookback_days: int
    symbols: tuple[str, ...]
    component_var: FloatArray = field(repr=False)
    #: bootstrap standard error of a sampled VaR (0 for an exact one, NaN where it does not apply)
    standard_error: float = math.nan
    #: historical multi-day: VaR from the non-overlapping windows only (every h-th, ending on the last day)
    var_non_overlapping: float = math.nan
    #: simulation methods: independent episodes among the tail scenarios (overlapping windows count once)
    independent_tail_obs: float = math.nan
    note: str = ""
    #: simulation methods: per-underlying ES contributions summing to the ES (``tail_component_es``)
    component_es: FloatArray | None = field(default=None, repr=False)

    def to_row(self) -> dict[str, Any]:
        """A ``var_results`` row without ``as_of``/``book``."""
        return {
            "method": self.method,
            "horizon_days": self.horizon_days,
            "confidence": self.confidence,
            "var": self.var,
            "expected_shortfall": self.expected_shortfall,
            "n_scenarios": self.n_scenarios,
            "lookback_days": self.lookback_days,
            "standard_error": self.standard_error,
            "var_non_overlapping": self.var_non_overlapping,
            "independent_tail_obs": self.independent_tail_obs,
            "method_note": self.note,
        }

    def contribution_rows(self) -> list[dict[str, Any]]:
        """``var_contributions`` rows (one per symbol) without ``as_of``/``book``."""
        return [
            {
                "method": self.method,
                "horizon_days": self.horizon_days,
                "confidence": self.confidence,
                "symbol": s,
                "component_var": float(c),
                "component_es": math.nan if self.component_es is None else float(self.component_es[i]),
            }
            for i, (s, c) in enumerate(zip(self.symbols, self.component_var, strict=True))
        ]


@dataclass(frozen=True, eq=False)
class VarReport:
    """Results of several methods; ``scenario_pnl[(method, horizon)]`` keeps the simulated P&L."""

    results: tuple[VarResult, ...]
    scenario_pnl: dict[tuple[str, int], FloatArray] = field(default_factory=dict, repr=False)

    def rows(self) -> list[dict[str, Any]]:
        return [r.to_row() for r in self.results]

    def contribution_rows(self) -> list[dict[str, Any]]:
        return [row for r in self.results for row in r.contribution_rows()]

    def get(self, method: str, horizon_days: int, confidence: float) -> VarResult:
        for r in self.results:
            if r.method == method and r.horizon_days == horizon_days and math.isclose(r.confidence, confidence):
                return r
        raise KeyError((method, horizon_days, confidence))


# ----------------------------------------------------------------------------------------------
# estimators
# ----------------------------------------------------------------------------------------------


def _tail_count(n: int, confidence: float) -> float:
    return n * (1.0 - confidence)


def _var_rank(n: int, confidence: float) -> int:
    """1-based rank ``k = ceil(n (1 - c))`` of the VaR order statistic (at least 1; rounding of ``n (1 - c)``
    absorbed, e.g. 500 * (1 - 0.99) = 5.000000000000004)."""
    return max(1, math.ceil(round(_tail_count(n, confidence), 9)))


def empirical_var_es(pnl: ArrayLike, confidence: float) -> tuple[float, float]:
    """VaR (lower empirical quantile) and Acerbi-Tasche ES of a P&L sample (module docstring)."""
    return _var_es_of_sorted(np.sort(np.asarray(pnl, dtype=np.float64).reshape(-1)), confidence)


def _var_es_of_sorted(p: FloatArray, confidence: float) -> tuple[float, float]:
    """``empirical_var_es`` of a sample already sorted ascending."""
    n = p.size
    if n == 0 or not np.all(np.isfinite(p)):
        raise ValueError("pnl must be a non-empty finite sample")
    m = _tail_count(n, confidence)
    if abs(m - round(m)) < 1e-9:  # absorbs the rounding of n (1 - c), e.g. 500 * (1 - 0.99) = 5.000000000000004
        m = float(round(m))
    var = -float(p[max(1, math.ceil(m)) - 1])
    if m <= 1.0:
        return var, -float(p[0])
    whole = math.floor(m)
    tail = float(np.sum(p[:whole])) + (m - whole) * (float(p[whole]) if whole < n else 0.0)
    return var, -tail / m


def tail_component_es(by_symbol: ArrayLike, confidence: float) -> FloatArray:
    """ES contributions per underlying: the ``empirical_var_es`` tail average applied to each column.

    The scenarios are ordered by the book P&L (the row sum of ``by_symbol``); the ``m = n (1 - c)`` worst
    get weight ``1 / m`` (the fractional one ``(m - floor m) / m``), so the contributions sum to the ES and
    each is ``E[-P&L_s | tail]`` (Euler allocation of ES, Tasche 2002, "Expected shortfall and beyond").
    """
    x = np.asarray(by_symbol, dtype=np.float64)
    return _tail_component_of_ordered(x[np.argsort(x.sum(axis=1), kind="stable")], confidence)


def _tail_component_of_ordered(ordered: FloatArray, confidence: float) -> FloatArray:
    """``tail_component_es`` of ``by_symbol`` rows already in ``tail_component_es``'s order (book P&L ascending)."""
    n = ordered.shape[0]
    m = _tail_count(n, confidence)
    if abs(m - round(m)) < 1e-9:
        m = float(round(m))
    if m <= 1.0:
        return -ordered[0]
    whole = math.floor(m)
    w = np.zeros(n)
    w[:whole] = 1.0
    if whole < n:
        w[whole] = m - whole
    return -(w @ ordered) / m


def kernel_component_var(by_symbol: ArrayLike, var: float) -> FloatArray:
    """Euler components ``E[-P&L_s | P&L = -VaR]`` by a Gaussian kernel, scaled to sum to ``var``.

    ``by_symbol`` is the ``(n, n_symbols)`` per-underlying scenario P&L (the book P&L is its row sum).
    Bandwidth ``1.06 min(std, IQR / 1.34) n^{-1/5}`` (Silverman 1986) of the book P&L.
    """
    x = np.asarray(by_symbol, dtype=np.float64)
    total = x.sum(axis=1)
    return _kernel_component(x, total, _kernel_spread(total), var)


def _kernel_spread(total: FloatArray) -> float:
    """``kernel_component_var``'s spread of the book P&L: ``min(std, IQR / 1.34)``, or the std."""
    q75, q25 = np.percentile(total, [75.0, 25.0])
    return min(float(np.std(total)), float(q75 - q25) / 1.34) or float(np.std(total))


def _kernel_component(x: FloatArray, total: FloatArray, spread: float, var: float) -> FloatArray:
    """``kernel_component_var`` from the row sums ``total`` of ``x`` and their ``_kernel_spread``."""
    n = total.size
    if spread <= 0.0:
        return np.full(x.shape[1], var / x.shape[1])
    h = 1.06 * spread * n ** (-0.2)
    w = np.exp(-0.5 * ((total + var) / h) ** 2)
    num = w @ x
    den = float(num.sum())
    if den == 0.0 or not math.isfinite(den):
        return np.full(x.shape[1], var / x.shape[1])
    comp = var * num / den
    comp[np.argmax(np.abs(comp))] += var - comp.sum()
    return comp


def tail_episodes(pnl: ArrayLike, confidence: float, horizon_days: int) -> tuple[int, int]:
    """Tail scenarios of overlapping h-day windows (in date order) and how many independent episodes they form.

    The tail is the ``ceil(n (1 - c))`` worst windows (those at or beyond the VaR); two tail windows whose
    starts are less than ``h`` days apart share days and belong to one episode (chained). Returns
    ``(tail scenarios, episodes)``; for ``h = 1`` every tail day is its own episode.
    """
    p = np.asarray(pnl, dtype=np.float64).reshape(-1)
    return _tail_episodes_of_order(np.argsort(p, kind="stable"), confidence, horizon_days)


def _tail_episodes_of_order(order: NDArray[np.intp], confidence: float, horizon_days: int) -> tuple[int, int]:
    """``tail_episodes`` from the P&L's stable ascending order."""
    m = _var_rank(order.size, confidence)
    starts = np.sort(order[:m])
    if horizon_days <= 1:
        return m, m
    return m, int(1 + np.count_nonzero(np.diff(starts) >= horizon_days))


def bootstrap_standard_error(
    pnl: ArrayLike, confidences: Sequence[float], n_boot: int = 200, seed: int = 0
) -> FloatArray:
    """Standard error of the empirical VaR of an i.i.d. scenario sample, by resampling it ``n_boot`` times."""
    p = np.asarray(pnl, dtype=np.float64).reshape(-1)
    idx = np.random.default_rng(seed).integers(0, p.size, size=(n_boot, p.size))
    resampled = np.sort(p[idx], axis=1)
    out = np.empty(len(confidences))
    for j, c in enumerate(confidences):
        k = _var_rank(p.size, c)
        out[j] = float(np.std(-resampled[:, k - 1], ddof=1))
    return out


def _simulation_results(
    method: str,
    horizon: int,
    pnl: FloatArray,
    by_symbol: FloatArray,
    config: VarConfig,
    symbols: tuple[str, ...],
    lookback: int,
    *,
    overlapping: bool = False,
    standard_errors: FloatArray | None = None,
    note: str = "",
    components: bool = True,
) -> list[VarResult]:
    """VaR, ES and components per confidence. ``overlapping`` (historical h-day windows in date order) adds the
    non-overlapping cross-check and the tail's episodes; ``standard_errors`` are the sampling errors. The sorts,
    row sums and spread are made once for every confidence: each figure is that of ``empirical_var_es``,
    ``tail_episodes``, ``kernel_component_var`` and ``tail_component_es``, bit for bit. Without ``components``
    the component VaR is NaN and the component ES None (not computed; every other figure the same)."""
    out = []
    p = np.asarray(pnl, dtype=np.float64).reshape(-1)
    p_sorted = np.sort(p)
    cols = np.asarray(by_symbol, dtype=np.float64)
    if components:
        total = cols.sum(axis=1)
        spread = _kernel_spread(total)
        ordered = cols[np.argsort(total, kind="stable")]
    pnl_order = np.argsort(p, kind="stable") if overlapping else None
    for j, c in enumerate(config.confidences):
        var, es = _var_es_of_sorted(p_sorted, c)
        extra: dict[str, Any] = {"note": note}
        if standard_errors is not None:
            extra["standard_error"] = float(standard_errors[j])
        if pnl_order is not None:
            tail, episodes = _tail_episodes_of_order(pnl_order, c, horizon)
            extra["independent_tail_obs"] = float(episodes)
            if horizon > 1:
                extra["var_non_overlapping"] = empirical_var_es(pnl[::-1][::horizon], c)[0]
                if episodes == 1 and tail > 1:
                    extra["note"] = "; ".join(
                        x for x in (note, f"tail is one episode ({tail} overlapping windows)") if x
                    )
        out.append(
            VarResult(
                method,
                horizon,
                float(c),
                var,
                es,
                int(pnl.size),
                lookback,
                symbols,
                _kernel_component(cols, total, spread, var) if components else np.full(cols.shape[1], np.nan),
                component_es=_tail_component_of_ordered(ordered, c) if components else None,
                **extra,
            )
        )
    return out


# ----------------------------------------------------------------------------------------------
# historical simulation
# ----------------------------------------------------------------------------------------------


def _window_sums(x: FloatArray, h: int, overwrite: bool = False) -> FloatArray:
    """``c[h:] - c[:n]`` of the running sums ``c = [0, cumsum(x)]`` (every ``h``-row window's sum as the difference
    of two running sums; ``n = rows - h + 1``), without the zero-padded copy of ``c``: the same bits with one
    temporary the size of ``x`` instead of three (none with ``overwrite``: the sums are run in ``x`` itself)."""
    c = np.cumsum(x, axis=0, out=x if overwrite else None)  # c[i] is the padded sums' row i + 1
    n = x.shape[0] - h + 1
    out = np.empty((n, x.shape[1]))
    np.subtract(c[h - 1], 0.0, out=out[0])  # the padded row 0 is zeros
    np.subtract(c[h:], c[: n - 1], out=out[1:])
    return out


def historical_scenarios(history: MarketHistory, horizon_days: int) -> ScenarioSet:
    """Overlapping h-day scenarios: ``expm1`` of h-day log returns, compounded h-day vol changes and summed h-day
    rate and dividend-yield changes."""
    r = history.log_returns
    n = r.shape[0] - horizon_days + 1
    if n < 1:
        raise ValueError("history shorter than the horizon")
    spot = _window_sums(r, horizon_days)
    np.expm1(spot, out=spot)
    scale = None
    if history.iv_rel_changes is not None:
        scale = _window_sums(np.log1p(history.iv_rel_changes), horizon_days, overwrite=True)
        np.exp(scale, out=scale)
    rate = None
    if history.rate_changes is not None:
        cr = np.concatenate([[0.0], np.cumsum(history.rate_changes)])
        rate = cr[horizon_days:] - cr[:n]
    div = None
    if history.dividend_changes is not None:
        cq = np.vstack([np.zeros((1, r.shape[1])), np.cumsum(history.dividend_changes, axis=0)])
        div = cq[horizon_days:] - cq[:n]
    return ScenarioSet(spot, vol_scale=scale, rate_shift_abs=rate, dividend_shift_abs=div)


def historical_var(
    portfolio: Portfolio,
    history: MarketHistory,
    config: VarConfig | None = None,
    *,
    client: Any | None = None,
    smile: SmileDynamics | None = None,
    term: SmileDynamics | None = None,
    components: bool = True,
) -> tuple[tuple[VarResult, ...], dict[int, FloatArray]]:
    """Historical-simulation VaR/ES with full revaluation; also the scenario P&L per horizon.

    ``smile`` (``smile_dynamics``): each option's vol also moves with the scenario's spot move by that dynamic
    (sticky moneyness, the SABR backbone), around the historical ATM vol move; without it each option keeps its
    strike's vol scaled by the ATM move (sticky strike). ``term`` (``smile_dynamics.ExpiryScaledVolMoves``):
    the ATM move scaled by expiry instead of the same relative move at every expiry; the two shifts add up.
    Without ``components`` the component VaR is NaN and the component ES None (``_simulation_results``; every other
    figure the same)."""
    [out] = historical_var_runs(portfolio, history, config, [(smile, term)], client=client, components=components)
    return out


def historical_var_runs(
    portfolio: Portfolio,
    history: MarketHistory,
    config: VarConfig | None,
    runs: Sequence[tuple[SmileDynamics | None, SmileDynamics | None]],
    *,
    client: Any | None = None,
    components: bool = True,
) -> list[tuple[tuple[VarResult, ...], dict[int, FloatArray]]]:
    """``historical_var(portfolio, history, config, smile=s, term=t, ...)`` of every run ``(s, t)``; with more than
    one run (and no ``client``), each horizon's sets of the runs (the same returns, other vol shifts) are revalued on
    one early-exercise grid spanning all their ranges (``scenario_engine.evaluate_on_one_grid``): one grid build a
    horizon instead of one a run, each run's figures within the grid's interpolation error of its own build's. One
    run: ``historical_var``'s bits."""
    cfg = config or VarConfig()
    hist = history.window(cfg.lookback_days)
    results: list[list[VarResult]] = [[] for _ in runs]
    pnls: list[dict[int, FloatArray]] = [{} for _ in runs]
    for h in cfg.horizons:
        base = historical_scenarios(hist, h)
        sets = []
        for smile, term in runs:
            sc = base
            extra = [d.shifts(portfolio, sc) for d in (smile, term) if d is not None]
            if extra:
                sc = replace(sc, vol_shift_abs=sum(extra[1:], extra[0]), vol_shift_per_position=True)
            sets.append(sc)
        kw: dict[str, Any] = {"american": cfg.american, "per_symbol": True, "chunk_size": cfg.chunk_size}
        days = h * cfg.calendar_days_per_trading_day
        if len(sets) == 1 or client is not None:
            revalued = [evaluate(portfolio, sc, days, client=client, **kw) for sc in sets]
        else:
            revalued = evaluate_on_one_grid(portfolio, sets, days, **kw)
        for k, res in enumerate(revalued):
            assert res.by_symbol is not None
            pnls[k][h] = res.pnl
            results[k] += _simulation_results(
                HISTORICAL, h, res.pnl, res.by_symbol, cfg, portfolio.symbols, hist.n_days, overlapping=True,
                components=components,
            )  # fmt: skip
    out = []
    for (smile, term), res_k, pnl_k in zip(runs, results, pnls, strict=True):
        tags = [f"{kind}: {d.label}" for kind, d in (("smile", smile), ("term", term)) if d is not None]
        tags += hist.factor_tags()
        if tags:
            res_k = [replace(r, note="; ".join(x for x in (*tags, r.note) if x)) for r in res_k]
        out.append((tuple(res_k), pnl_k))
    return out


def worst_window(pnl_1d: ArrayLike, window: int, confidence: float) -> int:
    """Start of the ``window``-day span of a 1-day P&L series (in date order) with the largest empirical VaR at
    ``confidence``; the latest such span on ties."""
    p = np.asarray(pnl_1d, dtype=np.float64).reshape(-1)
    if p.size < window:
        raise ValueError(f"a stressed window of {window} days needs at least that many days, got {p.size}")
    spans = np.sort(np.lib.stride_tricks.sliding_window_view(p, window), axis=1)
    k = _var_rank(window, confidence)
    var = -spans[:, k - 1]
    return int(var.size - 1 - np.argmax(var[::-1]))


def stressed_var(
    portfolio: Portfolio,
    history: MarketHistory,
    config: VarConfig | None = None,
    *,
    window: int = STRESS_WINDOW_DAYS,
    select_confidence: float = 0.99,
    client: Any | None = None,
    one_day_pnl: ArrayLike | None = None,
) -> tuple[tuple[VarResult, ...], int]:
    """Stressed VaR/ES (Basel 2.5 stressed VaR, FRTB's stressed ES calibration): historical simulation with full
    revaluation on the ``window``-day span of ``history`` where today's book has its largest 1-day VaR at
    ``select_confidence`` (every 1-day scenario of the whole history is revalued to find it); every horizon and
    confidence of ``config`` on that span. Returns the results (method ``stressed_historical``) and the span's
    start index in ``history``. ``one_day_pnl``: that 1-day P&L of every scenario of the whole history, when the
    caller has already revalued ``historical_scenarios(history, 1)`` for this book (e.g. as the sticky-strike,
    flat-term historical VaR of the same returns): not revalued again."""
    cfg = config or VarConfig()
    if one_day_pnl is not None:
        one_day = np.asarray(one_day_pnl, dtype=np.float64)
        if one_day.shape != (history.n_days,):
            raise ValueError("one_day_pnl needs one P&L per day of history")
    else:
        one_day = evaluate(
            portfolio,
            historical_scenarios(history, 1),
            cfg.calendar_days_per_trading_day,
            american=cfg.american,
            client=client,
            chunk_size=cfg.chunk_size,
        ).pnl
    start = worst_window(one_day, window, select_confidence)
    span = history.rows(slice(start, start + window))
    results, _ = historical_var(portfolio, span, replace(cfg, lookback_days=window), client=client)
    note = f"worst {window}-day window of {history.n_days} by 1-day {select_confidence:.0%} VaR"
    return tuple(
        replace(r, method=STRESSED_HISTORICAL, note="; ".join(x for x in (note, r.note) if x)) for r in results
    ), start


# ----------------------------------------------------------------------------------------------
# parametric: delta-normal and delta-gamma(-vega) Cornish-Fisher
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuadraticMoments:
    """Mean, variance, skewness and excess kurtosis of ``a + b'f + f'Gf/2``, ``f ~ N(0, cov)``."""

    mean: float
    variance: float
    skewness: float
    excess_kurtosis: float


def _cumulants(a: float, b: FloatArray, g: FloatArray, cov: FloatArray) -> tuple[float, float, float, float]:
    gs = g @ cov
    gs2 = gs @ gs
    u0 = cov @ b
    u1 = cov @ (g @ u0)
    u2 = cov @ (g @ u1)
    k1 = a + 0.5 * np.trace(gs)
    k2 = float(b @ u0) + 0.5 * np.trace(gs2)
    k3 = 3.0 * float(b @ u1) + float(np.trace(gs2 @ gs))
    k4 = 12.0 * float(b @ u2) + 3.0 * float(np.trace(gs2 @ gs2))
    return float(k1), float(k2), k3, k4


def delta_gamma_moments(a: float, b: ArrayLike, gamma: ArrayLike, cov: ArrayLike) -> QuadraticMoments:
    """Exact moments of the delta-gamma quadratic form (Mathai & Provost 1992; module docstring)."""
    bb = np.asarray(b, dtype=np.float64)
    g = np.asarray(gamma, dtype=np.float64)
    s = np.asarray(cov, dtype=np.float64)
    k1, k2, k3, k4 = _cumulants(float(a), bb, g, s)
    if k2 <= 0.0:
        return QuadraticMoments(k1, 0.0, 0.0, 0.0)
    return QuadraticMoments(k1, k2, k3 / k2**1.5, k4 / k2**2)


def cornish_fisher(z: ArrayLike, skewness: float, excess_kurtosis: float) -> FloatArray:
    """Cornish-Fisher quantile ``w(z)`` to the fourth cumulant (Zangari 1996; module docstring)."""
    z = np.asarray(z, dtype=np.float64)
    s, k = skewness, excess_kurtosis
    return z + (z * z - 1.0) * s / 6.0 + (z**3 - 3.0 * z) * k / 24.0 - (2.0 * z**3 - 5.0 * z) * s * s / 36.0


def cornish_fisher_tail(z: float, skewness: float, excess_kurtosis: float) -> float:
    """``int_{-inf}^{z} w(u) phi(u) du`` in closed form.

    ``w(u) = c0 + c1 u + c2 u^2 + c3 u^3`` with ``c0 = -s/6 = -c2``, ``c1 = 1 - k/8 + 5 s^2/36``, ``c3 = k/24 -
    s^2/18``, and ``int_{-inf}^{z} u^j phi`` is ``Phi``, ``-phi``, ``Phi - z phi``, ``-(z^2 + 2) phi`` for ``j =
    0..3``; the ``Phi`` terms cancel, leaving ``-phi(z) (c1 + c2 z + c3 (z^2 + 2))``."""
    s, k = skewness, excess_kurtosis
    c1 = 1.0 - k / 8.0 + 5.0 * s * s / 36.0
    c2 = s / 6.0
    c3 = k / 24.0 - s * s / 18.0
    return -_norm_pdf(z) * (c1 + c2 * z + c3 * (z * z + 2.0))


def cornish_fisher_var_es(moments: QuadraticMoments, confidence: float) -> tuple[float, float]:
    """VaR ``-(mu + sigma w(z))`` and ES ``-(mu + sigma / (1 - c) int_{-inf}^{z} w(u) phi(u) du)`` (the integral
    in closed form, ``cornish_fisher_tail``)."""
    z = _norm_ppf(1.0 - confidence)
    sd = math.sqrt(moments.variance)
    s, k = moments.skewness, moments.excess_kurtosis
    var = -(moments.mean + sd * float(cornish_fisher(z, s, k)))
    es = -(moments.mean + sd * cornish_fisher_tail(z, s, k) / (1.0 - confidence))
    return var, es


#: The Cornish-Fisher quantile must increase on [CF_CHECK_FROM, z]: below it the normal mass is < 1e-15.
CF_CHECK_FROM = -8.0
#: Draws of the quadratic form when the Cornish-Fisher expansion is not valid (seeded).
QUADRATIC_DRAWS = 200_000
#: Draws x factors above which the fallback draws in blocks (a book of a few hundred underlyings and more).
QUADRATIC_CELLS = 50_000_000


def cornish_fisher_is_monotone(skewness: float, excess_kurtosis: float, confidence: float) -> bool:
    """Whether ``w(u)`` increases on the whole lower tail ``[-8, z_{1-c}]`` that VaR and ES use.

    ``w'(u) = 1 + u s/3 + (u^2 - 1) k/8 - (6u^2 - 5) s^2/36``; where it is negative the expansion is not a
    quantile function (Chernozhukov, Fernandez-Val & Galichon 2010; Maillard 2012, "A user's guide to the
    Cornish Fisher expansion"), which happens for strongly skewed books such as long gamma.
    """
    s, k = skewness, excess_kurtosis
    u = np.linspace(CF_CHECK_FROM, _norm_ppf(1.0 - confidence), 2001)
    slope = 1.0 + u * s / 3.0 + (u * u - 1.0) * k / 8.0 - (6.0 * u * u - 5.0) * s * s / 36.0
    return bool(np.all(slope > 0.0))


def quadratic_var_es(
    a: float,
    b: ArrayLike,
    gamma: ArrayLike,
    cov: ArrayLike,
    confidences: Sequence[float],
    n_draws: int = QUADRATIC_DRAWS,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """VaR and ES of ``a + b'f + f'Gf/2``, ``f ~ N(0, cov)``, from ``n_draws`` seeded draws (the fallback of the
    Cornish-Fisher method: no expansion, the distribution of the same quadratic form)."""
    bb = np.asarray(b, dtype=np.float64)
    g = np.asarray(gamma, dtype=np.float64)
    c = np.asarray(cov, dtype=np.float64)
    w, v = np.linalg.eigh(c)  # cov may be singular (a factor without history): the PSD square root
    root = v * np.sqrt(np.clip(w, 0.0, None))
    rng = np.random.default_rng(seed)
    if n_draws * bb.size <= QUADRATIC_CELLS:
        f = rng.standard_normal((n_draws, bb.size)) @ root.T
        pnl = a + f @ bb + 0.5 * np.einsum("ij,jk,ik->i", f, g, f, optimize=True)
    else:  # a large book: the same draws in blocks of rows, f'Gf over G's non-zero entries (memory and time ~ n)
        rows_i, cols_j = np.nonzero(g)
        weights = g[rows_i, cols_j]
        block = max(1, QUADRATIC_CELLS // (4 * bb.size))
        pnl = np.empty(n_draws)
        for lo in range(0, n_draws, block):
            f = rng.standard_normal((min(block, n_draws - lo), bb.size)) @ root.T
            pnl[lo : lo + f.shape[0]] = a + f @ bb + 0.5 * ((f[:, rows_i] * f[:, cols_j]) @ weights)
    return [empirical_var_es(pnl, conf) for conf in confidences]


def cornish_fisher_components(
    a_sym: FloatArray,
    b: FloatArray,
    g: FloatArray,
    cov: FloatArray,
    owner: NDArray[np.intp],
    n_symbols: int,
    confidence: float,
) -> FloatArray:
    """Euler components of the CF VaR: exact derivatives in the per-underlying exposure scalings.

    ``owner[f]`` is the underlying of factor ``f``; ``g`` is block-diagonal by underlying;
    ``a_sym`` the theta decay per underlying. Homogeneity of degree one makes them sum to the VaR.
    """
    k1, k2, k3, k4 = _cumulants(float(a_sym.sum()), b, g, cov)
    z = _norm_ppf(1.0 - confidence)
    if k2 <= 0.0:
        return -a_sym.copy()

    def grp(v: FloatArray) -> FloatArray:
        return np.bincount(owner, weights=v, minlength=n_symbols)

    gs = g @ cov
    gs2 = gs @ gs
    gs3 = gs2 @ gs
    u0 = cov @ b
    u1 = cov @ (g @ u0)
    u2 = cov @ (g @ u1)
    d1 = a_sym + 0.5 * grp(np.diag(gs))
    d2 = 2.0 * grp(b * u0) + grp(np.diag(gs2))
    d3 = 3.0 * (2.0 * grp(b * u1) + grp(u0 * (g @ u0))) + 3.0 * grp(np.diag(gs3))
    d4 = 12.0 * (2.0 * grp(b * u2) + 2.0 * grp(u0 * (g @ u1))) + 12.0 * grp(np.diag(gs3 @ gs))
    return _cf_euler((k1, k2, k3, k4), (d1, d2, d3, d4), z)


def _cf_euler(
    cumulants: tuple[float, float, float, float], derivatives: tuple[FloatArray, ...], z: float
) -> FloatArray:
    """Euler components of the CF VaR at the normal quantile ``z`` from the cumulants and their derivatives in the
    per-underlying exposure scalings (``cornish_fisher_components``; ``k2 > 0``)."""
    k1, k2, k3, k4 = cumulants
    d1, d2, d3, d4 = derivatives
    sd = math.sqrt(k2)
    s = k3 / k2**1.5
    k = k4 / k2**2
    w = float(cornish_fisher(z, s, k))
    dsd = d2 / (2.0 * sd)
    ds = d3 / k2**1.5 - 1.5 * k3 / k2**2.5 * d2
    dk = d4 / k2**2 - 2.0 * k4 / k2**3 * d2
    dw_ds = (z * z - 1.0) / 6.0 - (2.0 * z**3 - 5.0 * z) * s / 18.0
    dw_dk = (z**3 - 3.0 * z) / 24.0
    comp = -(d1 + dsd * w + sd * (dw_ds * ds + dw_dk * dk))
    total = -(k1 + sd * w)
    comp[np.argmax(np.abs(comp))] += total - comp.sum()
    return comp


def _block_diagonal_product(blocks: Sequence[FloatArray], x: FloatArray) -> FloatArray:
    """``G x`` for ``G = diag(g_xx)`` (``blocks = (g_xx,)``) or ``G = [[diag(g_xx), diag(g_xy)], [diag(g_xy),
    diag(g_yy)]]`` (``(g_xx, g_yy, g_xy)``), from the nonzero terms only: row ``i`` is ``g_xx[i] x[i] + g_xy[i]
    x[n + i]`` (the dense product's terms; BLAS adds the other rows' zeros, which leave the sum as it is, and takes
    the two products in another order, fused where they share a block of its inner loop: equal to rounding, and
    bit for bit when the two terms are in different blocks, measured for 200 or more underlyings)."""
    if len(blocks) == 1:
        return blocks[0][:, None] * x
    g_xx, g_yy, g_xy = blocks
    n = g_xx.size
    out = np.empty(x.shape)
    np.add(g_xx[:, None] * x[:n], g_xy[:, None] * x[n:], out=out[:n])
    np.add(g_xy[:, None] * x[:n], g_yy[:, None] * x[n:], out=out[n:])
    return out


@dataclass(frozen=True, eq=False)
class LowRankQuadratic:
    """The moments and Euler-component terms of ``a + b'f + f'Gf/2``, ``f ~ N(0, Sigma)``, ``Sigma = scale R'R`` with
    the ``d x n`` root ``R`` of fewer rows than factors (a covariance of ``d`` days of ``n`` factors: rank ``d``).

    Every trace and diagonal of ``(G Sigma)^k`` is taken in the ``d``-dimensional span of ``R``:
    ``(G Sigma)^k = scale G R' M^(k-1) R`` with ``M = scale R G R'`` (``d x d``), so ``tr((G Sigma)^k) = tr(M^k)``
    and its diagonal is ``scale`` times the row sums of ``(G R' M^(k-1)) * R'``: O(n^2 d) instead of the n x n
    products' O(n^3) of ``_cumulants`` and ``cornish_fisher_components``, equal to them up to rounding.
    """

    b: FloatArray
    #: ``Sigma b``, ``Sigma G Sigma b``, ``Sigma (G Sigma)^2 b`` and ``G u0``, ``G u1``
    u: tuple[FloatArray, FloatArray, FloatArray]
    g_u: tuple[FloatArray, FloatArray]
    #: ``tr((G Sigma)^k)`` and ``diag((G Sigma)^k)``, k = 1..4 (no diagonals when built without them)
    traces: tuple[float, float, float, float]
    diagonals: tuple[FloatArray, ...]

    @classmethod
    def build(
        cls,
        b: ArrayLike,
        gamma: ArrayLike,
        root: ArrayLike,
        scale: float,
        diagonals: bool = True,
        gamma_blocks: Sequence[FloatArray] = (),
    ) -> LowRankQuadratic:
        """The terms of ``a + b'f + f'Gf/2`` with ``Sigma = scale R'R``. ``diagonals=False``: without the diagonals,
        which only ``components`` reads (the n x d x d products ``G R' M^(k-1)`` are skipped; the moments are the
        same bits). ``gamma_blocks``: ``G``'s diagonal blocks (``DeltaGammaExposures.gamma_blocks``), so that
        ``G R'`` is taken from its nonzero terms in O(n d) instead of the dense product's O(n^2 d)."""
        bb = np.asarray(b, dtype=np.float64)
        g = np.asarray(gamma, dtype=np.float64)
        r = np.asarray(root, dtype=np.float64)
        rt = r.T
        gr = _block_diagonal_product(gamma_blocks, rt) if gamma_blocks else g @ rt  # G R', n x d
        m = scale * (r @ gr)
        powers = [m, m @ m]
        powers += [powers[1] @ m, powers[1] @ powers[1]]
        # G R' M^(k-1), for the diagonals
        left = [gr, gr @ powers[0], gr @ powers[1], gr @ powers[2]] if diagonals else []

        def cov_times(v: FloatArray) -> FloatArray:
            return scale * (rt @ (r @ v))

        u0 = cov_times(bb)
        g_u0 = g @ u0
        u1 = cov_times(g_u0)
        g_u1 = g @ u1
        u2 = cov_times(g_u1)
        return cls(
            b=bb,
            u=(u0, u1, u2),
            g_u=(g_u0, g_u1),
            traces=tuple(float(np.trace(x)) for x in powers),  # type: ignore[arg-type]
            diagonals=tuple(scale * np.einsum("ij,ij->i", x, rt) for x in left),  # type: ignore[arg-type]
        )

    def cumulants(self, a: float) -> tuple[float, float, float, float]:
        """``_cumulants(a, b, G, Sigma)``."""
        (u0, u1, u2), (t1, t2, t3, t4) = self.u, self.traces
        k1 = a + 0.5 * t1
        k2 = float(self.b @ u0) + 0.5 * t2
        k3 = 3.0 * float(self.b @ u1) + t3
        k4 = 12.0 * float(self.b @ u2) + 3.0 * t4
        return float(k1), float(k2), k3, k4

    def moments(self, a: float) -> QuadraticMoments:
        """``delta_gamma_moments(a, b, G, Sigma)``."""
        k1, k2, k3, k4 = self.cumulants(a)
        if k2 <= 0.0:
            return QuadraticMoments(k1, 0.0, 0.0, 0.0)
        return QuadraticMoments(k1, k2, k3 / k2**1.5, k4 / k2**2)

    def components(self, a_sym: FloatArray, owner: NDArray[np.intp], n_symbols: int, confidence: float) -> FloatArray:
        """``cornish_fisher_components(a_sym, b, G, Sigma, owner, n_symbols, confidence)`` (needs the diagonals)."""
        if not self.diagonals:
            raise ValueError("built without diagonals (LowRankQuadratic.build(..., diagonals=False))")
        k = self.cumulants(float(a_sym.sum()))
        if k[1] <= 0.0:
            return -a_sym.copy()

        def grp(v: FloatArray) -> FloatArray:
            return np.bincount(owner, weights=v, minlength=n_symbols)

        b, (u0, u1, u2), (g_u0, g_u1), dg = self.b, self.u, self.g_u, self.diagonals
        d1 = a_sym + 0.5 * grp(dg[0])
        d2 = 2.0 * grp(b * u0) + grp(dg[1])
        d3 = 3.0 * (2.0 * grp(b * u1) + grp(u0 * g_u0)) + 3.0 * grp(dg[2])
        d4 = 12.0 * (2.0 * grp(b * u2) + 2.0 * grp(u0 * g_u1)) + 12.0 * grp(dg[3])
        return _cf_euler(k, (d1, d2, d3, d4), _norm_ppf(1.0 - confidence))


def factor_root(
    history: MarketHistory,
    with_vega: bool,
    method: Literal["equal_weight", "ewma"] = "equal_weight",
    decay: float = 0.94,
) -> FloatArray:
    """``R`` (days x factors) with ``R'R = factor_covariance(history, with_vega, method, decay)`` up to rounding."""
    f = history.log_returns
    if with_vega:
        assert history.iv_rel_changes is not None
        f = np.hstack([f, history.iv_rel_changes])
    if method == "equal_weight":
        return f / math.sqrt(f.shape[0])
    if method != "ewma" or not 0.0 < decay < 1.0:
        raise ValueError("covariance must be 'equal_weight' or 'ewma' with 0 < decay < 1")
    w = decay ** np.arange(f.shape[0] - 1, -1, -1, dtype=np.float64)
    w /= w.sum()
    return f * np.sqrt(w)[:, None]


@dataclass(frozen=True, eq=False)
class DeltaGammaExposures:
    """Per-factor exposures of the quadratic P&L (factor order: returns, then vol changes if any).

    ``theta_per_year[s]`` is the book's theta on underlying ``s`` (money per year of time passing).
    """

    delta: FloatArray
    gamma: FloatArray
    theta_per_year: FloatArray
    owner: NDArray[np.intp]
    with_vega: bool
    #: the per-underlying diagonals ``gamma`` is made of: ``(g_xx,)``, or ``(g_xx, g_yy, g_xy)`` with vega (the
    #: spot, vol and cross blocks, each diagonal)
    gamma_blocks: tuple[FloatArray, ...] = ()


#: Per position: delta, gamma, vega, theta, vanna, volga (stocks: delta 1, the others 0).
PositionGreeks = tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]


def position_greeks(portfolio: Portfolio, warm_bumps: bool = False) -> PositionGreeks:
    """Each position's Greeks: BSM for European options, the exact American engine for American ones (without its
    rate bumps: no method uses rho; ``warm_bumps``: its time-bumped boundaries solved from the base one's,
    ``american_greeks(warm_bumps=True)``: theta and charm equal to rounding, the other Greeks the same bits)."""
    p = portfolio
    s = p.position_spot
    delta = np.ones(p.n_positions)
    zeros = np.zeros(p.n_positions)
    gamma, vega, theta, vanna, volga = zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy()
    american = functools.partial(american_greeks, with_rho=False, warm_bumps=warm_bumps)
    for mask, fn in ((p.is_option & ~p.is_american, bsm_greeks), (p.is_american, american)):
        idx = np.flatnonzero(mask)
        if idx.size:
            gr = fn(
                s[idx],
                p.strike[idx],
                p.time_years[idx],
                p.implied_vol[idx],
                p.rate[idx],
                p.dividend_yield[idx],
                p.is_call[idx],
            )
            delta[idx], gamma[idx], vega[idx] = gr.delta, gr.gamma, gr.vega
            theta[idx], vanna[idx], volga[idx] = gr.theta, gr.vanna, gr.volga
    return delta, gamma, vega, theta, vanna, volga


def delta_gamma_exposures(
    portfolio: Portfolio, with_vega: bool, greeks: PositionGreeks | None = None
) -> DeltaGammaExposures:
    """Dollar delta, dollar gamma (and vega, volga, vanna per relative vol change) per underlying
    (``greeks``: the book's ``position_greeks``, computed if not given)."""
    p = portfolio
    n_sym = p.n_symbols
    s = p.position_spot
    units = p.units
    delta, gamma, vega, theta, vanna, volga = position_greeks(p) if greeks is None else greeks
    sig = p.implied_vol
    by = p.symbol_index

    def agg(v: FloatArray) -> FloatArray:
        return np.bincount(by, weights=units * v, minlength=n_sym)

    d_x = agg(delta * s)
    g_xx = agg(gamma * s * s)
    th = agg(theta)
    if not with_vega:
        return DeltaGammaExposures(d_x, np.diag(g_xx), th, np.arange(n_sym), False, (g_xx,))
    d_y = agg(vega * sig)
    g_yy = agg(volga * sig * sig)
    g_xy = agg(vanna * s * sig)
    g = np.zeros((2 * n_sym, 2 * n_sym))
    i = np.arange(n_sym)
    g[i, i] = g_xx
    g[n_sym + i, n_sym + i] = g_yy
    g[i, n_sym + i] = g_xy
    g[n_sym + i, i] = g_xy
    return DeltaGammaExposures(np.concatenate([d_x, d_y]), g, th, np.concatenate([i, i]), True, (g_xx, g_yy, g_xy))


def factor_covariance(
    history: MarketHistory,
    with_vega: bool,
    method: Literal["equal_weight", "ewma"] = "equal_weight",
    decay: float = 0.94,
) -> FloatArray:
    """Zero-mean daily covariance of log returns (and relative vol changes) over the look-back.

    ``equal_weight``: every day weighs ``1/n``. ``ewma``: day ``t`` days back weighs ``(1 - lambda) lambda^t``,
    normalized over the window (RiskMetrics 1996 technical document, lambda = 0.94 for daily data).
    """
    f = history.log_returns
    if with_vega:
        assert history.iv_rel_changes is not None
        f = np.hstack([f, history.iv_rel_changes])
    if method == "equal_weight":
        return (f.T @ f) / f.shape[0]
    if method != "ewma" or not 0.0 < decay < 1.0:
        raise ValueError("covariance must be 'equal_weight' or 'ewma' with 0 < decay < 1")
    w = decay ** np.arange(f.shape[0] - 1, -1, -1, dtype=np.float64)
    w /= w.sum()
    return (f * w[:, None]).T @ f


def _gram(a: FloatArray, b: FloatArray) -> FloatArray:
    """``a[d].T @ b[d]`` for every ``d``, summed over blocks of at most 200,000 multiply-adds, which OpenBLAS runs
    on one thread (measured on 2 shared cores: 250 look-backs of 500 x 46 in 0.04 s, 0.3-0.8 s as whole products
    on its threads)."""
    k = a.shape[2] * b.shape[2]
    rows = max(1, 200_000 // max(k, 1))
    at = a.transpose(0, 2, 1)
    out = at[:, :, :rows] @ b[:, :rows]
    for start in range(rows, a.shape[1], rows):
        out += at[:, :, start : start + rows] @ b[:, start : start + rows]
    return out


def factor_covariances(
    histories: Sequence[MarketHistory],
    method: Literal["equal_weight", "ewma"] = "equal_weight",
    decay: float = 0.94,
) -> list[FloatArray]:
    """``factor_covariance`` of every history (with vol changes where it has them, as ``parametric_var``), those
    of one shape in one stacked matrix product."""
    out: list[FloatArray] = [np.zeros(0)] * len(histories)
    keys = [(x.n_days, x.iv_rel_changes is not None) for x in histories]
    for n, with_vega in sorted(set(keys)):
        idx = [k for k, key in enumerate(keys) if key == (n, with_vega)]
        parts = [[histories[k].log_returns] + ([histories[k].iv_rel_changes] if with_vega else []) for k in idx]
        f = np.stack([np.hstack(p) for p in parts])  # type: ignore[arg-type]
        if method == "equal_weight":
            cov = _gram(f, f) / n
        elif method == "ewma" and 0.0 < decay < 1.0:
            w = decay ** np.arange(n - 1, -1, -1, dtype=np.float64)
            w /= w.sum()
            cov = _gram(f * w[None, :, None], f)
        else:
            raise ValueError("covariance must be 'equal_weight' or 'ewma' with 0 < decay < 1")
        for j, k in enumerate(idx):
            out[k] = cov[j]
    return out


def parametric_var(
    portfolio: Portfolio,
    history: MarketHistory,
    config: VarConfig | None = None,
    *,
    greeks: PositionGreeks | None = None,
    covariance: FloatArray | None = None,
    components: bool = True,
) -> tuple[VarResult, ...]:
    """Delta-normal and delta-gamma(-vega) Cornish-Fisher VaR/ES with Euler components (``greeks``: the book's
    ``position_greeks``, ``covariance``: the look-back's ``factor_covariance``; computed if not given; without
    ``components`` the components are NaN, not computed, and every VaR and ES the same)."""
    cfg = config or VarConfig()
    hist = history.window(cfg.lookback_days)
    with_vega = hist.iv_rel_changes is not None
    expo = delta_gamma_exposures(portfolio, with_vega, greeks)
    # fewer days than factors (a large book): the covariance has the rank of the days, and the quadratic form's
    # terms are taken in their span (LowRankQuadratic: O(n^2 d) instead of O(n^3), equal up to rounding)
    root = factor_root(hist, with_vega, cfg.covariance, cfg.ewma_decay) if hist.n_days < expo.delta.size else None
    cov1 = np.zeros(0)
    if root is None:
        cov1 = factor_covariance(hist, with_vega, cfg.covariance, cfg.ewma_decay) if covariance is None else covariance
    n_sym = portfolio.n_symbols
    out: list[VarResult] = []
    d_x = expo.delta[:n_sym]
    for h in cfg.horizons:
        form = (
            None
            if root is None
            else LowRankQuadratic.build(
                expo.delta, expo.gamma, root, float(h), diagonals=components, gamma_blocks=expo.gamma_blocks
            )
        )
        if root is None:
            cov_x = h * cov1[:n_sym, :n_sym]
            variance_x = float(d_x @ cov_x @ d_x)
            cov_d_x = cov_x @ d_x
        else:
            y = root[:, :n_sym] @ d_x
            variance_x = float(h * (y @ y))
            cov_d_x = h * (root[:, :n_sym].T @ y)
        sd = math.sqrt(max(variance_x, 0.0))
        dt = h * cfg.calendar_days_per_trading_day / DAYS_PER_YEAR
        a = float(expo.theta_per_year.sum() * dt)
        mom = delta_gamma_moments(a, expo.delta, expo.gamma, h * cov1) if form is None else form.moments(a)
        invalid = [c for c in cfg.confidences if not cornish_fisher_is_monotone(mom.skewness, mom.excess_kurtosis, c)]
        fallback = {}
        if invalid:
            cov_h = h * cov1 if root is None else float(h) * (root.T @ root)
            fallback = dict(
                zip(invalid, quadratic_var_es(a, expo.delta, expo.gamma, cov_h, invalid, seed=cfg.seed), strict=True)
            )
        for c in cfg.confidences:
            z = _norm_ppf(c)
            comp = (z * d_x * cov_d_x / sd) if sd > 0.0 else np.zeros(n_sym)
            if not components:
                comp = np.full(n_sym, np.nan)
            out.append(
                VarResult(
                    DELTA_NORMAL,
                    h,
                    float(c),
                    z * sd,
                    sd * _norm_pdf(z) / (1.0 - c),
                    0,
                    hist.n_days,
                    portfolio.symbols,
                    comp,
                    note=f"{cfg.covariance.replace('_', '-')} covariance",
                )
            )
            if not components:
                comp_cf = np.full(n_sym, np.nan)
            elif form is None:
                comp_cf = cornish_fisher_components(
                    expo.theta_per_year * dt, expo.delta, expo.gamma, h * cov1, expo.owner, n_sym, c
                )
            else:
                comp_cf = form.components(expo.theta_per_year * dt, expo.owner, n_sym, c)
            note = f"Cornish-Fisher expansion, {cfg.covariance.replace('_', '-')} covariance"
            if c in fallback:
                var, es = fallback[c]
                if components:
                    total = float(comp_cf.sum())
                    comp_cf = comp_cf * (var / total) if total else np.full(n_sym, var / n_sym)
                note = (
                    f"Cornish-Fisher not monotone (skewness {mom.skewness:.2f}, excess kurtosis "
                    f"{mom.excess_kurtosis:.2f}): quantile of {QUADRATIC_DRAWS:,} draws of the same quadratic form, "
                    "components rescaled"
                )
            else:
                var, es = cornish_fisher_var_es(mom, c)
            out.append(
                VarResult(
                    DELTA_GAMMA_CF,
                    h,
                    float(c),
                    var,
                    es,
                    QUADRATIC_DRAWS if c in fallback else 0,
                    hist.n_days,
                    portfolio.symbols,
                    comp_cf,
                    note=note,
                )
            )
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# Monte Carlo filtered historical simulation
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FhsModel:
    """GARCH filter of each underlying: parameters, standardized returns ``z[t, s]`` and the
    one-step-ahead variance ``next_variance[s]`` (daily), plus the vol-, rate- and dividend-yield-change rows
    bootstrapped with z (unfiltered).
    """

    params: tuple[GarchParams, ...]
    standardized: FloatArray
    next_variance: FloatArray
    iv_rel_changes: FloatArray | None
    rate_changes: FloatArray | None = None
    dividend_changes: FloatArray | None = None


def _constant_variance(r: FloatArray) -> GarchParams:
    v = float(np.mean(r * r))
    return GarchParams(omega=v, alpha=0.0, gamma=0.0, beta=0.0, nu=math.inf, backcast=v, converged=False)


def fit_garch_or_constant(
    returns: FloatArray, previous: GarchParams | None = None, asymmetric: bool = False
) -> GarchParams:
    """GARCH(1,1)-t (GJR-GARCH(1,1)-t with ``asymmetric``) of one return series (warm-started from ``previous``;
    ``vol_forecast.fit_garch``); constant variance if it fails."""
    try:
        return fit_garch(returns, asymmetric=asymmetric, previous=previous)
    except RuntimeError:
        return _constant_variance(returns)


def fit_fhs(
    history: MarketHistory,
    garch_params: Sequence[GarchParams] | None = None,
    asymmetric: Sequence[bool] | None = None,
) -> FhsModel:
    """Fit (or take) GARCH(1,1)-t per underlying (GJR-GARCH(1,1)-t where ``asymmetric``) and standardize the
    returns by its conditional vol.

    A failed fit falls back to a constant variance (the sample mean square, ``converged=False``).
    """
    r = history.log_returns
    n_sym = r.shape[1]
    if garch_params is not None and len(garch_params) != n_sym:
        raise ValueError("garch_params must have one entry per symbol")
    gjr = np.zeros(n_sym, dtype=bool) if asymmetric is None else np.asarray(asymmetric, dtype=bool)
    if gjr.shape != (n_sym,):
        raise ValueError("asymmetric must have one entry per symbol")
    params: list[GarchParams] = []
    z = np.empty_like(r)
    nxt = np.empty(n_sym)
    for s in range(n_sym):  # one GARCH fit per underlying (calibration, not a hot path)
        p = garch_params[s] if garch_params is not None else fit_garch_or_constant(r[:, s], asymmetric=bool(gjr[s]))
        var = garch_variance(p, r[:, s])
        params.append(p)
        z[:, s] = r[:, s] / np.sqrt(var[:-1])
        nxt[s] = var[-1]
    return FhsModel(tuple(params), z, nxt, history.iv_rel_changes, history.rate_changes, history.dividend_changes)


def fhs_draws(n_days: int, n_scenarios: int, max_horizon: int, seed: int) -> NDArray[np.intp]:
    """Bootstrapped date indices ``(n_scenarios, max_horizon)``; horizon h uses the first h columns."""
    return np.random.default_rng(seed).integers(0, n_days, size=(n_scenarios, max_horizon)).astype(np.intp)


@njit(**JIT)
def _fhs_paths_kernel(
    z: FloatArray,
    draws: IntArray,
    horizon_days: int,
    garch: bool,
    omega: FloatArray,
    alpha: FloatArray,
    gamma: FloatArray,
    beta: FloatArray,
    next_variance: FloatArray,
    with_iv: bool,
    log_iv: FloatArray,
    with_div: bool,
    div_changes: FloatArray,
    total: FloatArray,
    log_scale: FloatArray,
    div: FloatArray,
    start: int,
    stop: int,
) -> None:
    """``fhs_scenarios``' sums of the scenarios ``k`` in ``start .. stop-1`` (``run_chunked``) over the days of the
    horizon: ``total[k, s]`` the path's log return (``garch``: each day's ``sqrt(var) z`` with the variance updated
    by the GARCH/GJR recursion; else ``sqrt(next_variance) z``), ``log_scale[k, s]`` of ``log_iv`` (``log1p`` of the
    vol changes; ``with_iv``), ``div[k, s]`` of ``div_changes`` (``with_div``). The operations and their order of
    the NumPy arrays' formulas element by element (each sum from zero in the days' order, as NumPy's ``sum(axis=1)``
    of the drawn rows: a sum of ``-0.0`` is ``0.0``), so the same bits."""
    n_sym = z.shape[1]
    var = np.empty(n_sym)
    for k in range(start, stop):
        for s in range(n_sym):
            var[s] = next_variance[s]
            total[k, s] = 0.0
            if with_iv:
                log_scale[k, s] = 0.0
            if with_div:
                div[k, s] = 0.0
        for d in range(horizon_days):
            row = draws[k, d]
            for s in range(n_sym):
                zd = z[row, s]
                if garch:
                    r = math.sqrt(var[s]) * zd
                    neg = 1.0 if r < 0.0 else 0.0
                    var[s] = omega[s] + (alpha[s] + gamma[s] * neg) * r * r + beta[s] * var[s]
                else:
                    r = math.sqrt(next_variance[s]) * zd
                total[k, s] += r
                if with_iv:
                    log_scale[k, s] += log_iv[row, s]
                if with_div:
                    div[k, s] += div_changes[row, s]


def fhs_scenarios(
    model: FhsModel, draws: NDArray[np.intp], horizon_days: int, paths: Literal["garch", "rescaled_sum"] = "garch"
) -> ScenarioSet:
    """h-day FHS scenarios from bootstrapped whole dates (module docstring); the paths summed by one kernel
    (``_fhs_paths_kernel``)."""
    z = np.ascontiguousarray(model.standardized, dtype=np.float64)
    params = {
        f: np.array([getattr(p, f) for p in model.params], dtype=np.float64)
        for f in ("omega", "alpha", "gamma", "beta")
    }
    draws = np.ascontiguousarray(draws, dtype=np.intp)
    if draws.ndim != 2 or draws.shape[1] < horizon_days:
        raise ValueError("draws must have a column for every day of the horizon")
    n, n_sym = draws.shape[0], z.shape[1]
    total = np.empty((n, n_sym))
    iv, dq = model.iv_rel_changes, model.dividend_changes
    # log1p of every stored vol change once (element by element the values of log1p of the drawn rows)
    log_iv = np.log1p(np.ascontiguousarray(iv, dtype=np.float64)) if iv is not None else np.zeros((1, 1))
    log_scale = np.empty((n, n_sym)) if iv is not None else np.zeros((1, 1))
    # the yield changes summed by the kernel in NumPy's order of ``sum(axis=1)`` over the drawn rows: from zero, day by
    # day, the symbols the inner loop; with one symbol NumPy sums along the days pairwise: its own formula then
    by_kernel = dq is not None and n_sym > 1
    div_changes = np.ascontiguousarray(dq, dtype=np.float64) if by_kernel else np.zeros((1, 1))
    div = np.empty((n, n_sym)) if by_kernel else np.zeros((1, 1))
    if n:
        run_chunked(
            _fhs_paths_kernel,
            n,
            z,
            draws,
            int(horizon_days),
            np.bool_(paths == "garch"),
            *(params[f] for f in ("omega", "alpha", "gamma", "beta")),
            np.ascontiguousarray(model.next_variance, dtype=np.float64),
            np.bool_(iv is not None),
            log_iv,
            np.bool_(by_kernel),
            div_changes,
            total,
            log_scale,
            div,
        )
    # rate changes of the drawn dates, summed over the horizon (as historical_scenarios)
    rate = None if model.rate_changes is None else model.rate_changes[draws[:, :horizon_days]].sum(axis=1)
    if dq is not None and not by_kernel:
        div = dq[draws[:, :horizon_days]].sum(axis=1)
    return ScenarioSet(
        np.expm1(total),
        vol_scale=None if iv is None else np.exp(log_scale),
        rate_shift_abs=rate,
        dividend_shift_abs=None if dq is None else div,
    )


def monte_carlo_var(
    portfolio: Portfolio,
    history: MarketHistory,
    config: VarConfig | None = None,
    *,
    garch_params: Sequence[GarchParams] | None = None,
    client: Any | None = None,
    model: FhsModel | None = None,
    asymmetric: Sequence[bool] | None = None,
) -> tuple[tuple[VarResult, ...], dict[int, FloatArray]]:
    """Monte Carlo FHS VaR/ES with full revaluation; also the scenario P&L per horizon (``asymmetric``: the
    underlyings filtered by GJR-GARCH instead of GARCH, named in each row's note)."""
    cfg = config or VarConfig()
    hist = history.window(cfg.lookback_days)
    fhs = model or fit_fhs(hist, garch_params, asymmetric)
    tags = hist.factor_tags()
    if asymmetric is not None and np.any(asymmetric):
        names = ", ".join(s for s, a in zip(portfolio.symbols, asymmetric, strict=True) if a)
        tags = [f"GJR-GARCH filter for {names}", *tags]
    results: list[VarResult] = []
    pnls: dict[int, FloatArray] = {}
    for h, sc in iter_fhs_scenario_sets(fhs, cfg):  # one horizon's paths held at a time
        res = evaluate(
            portfolio,
            sc,
            h * cfg.calendar_days_per_trading_day,
            american=cfg.american,
            per_symbol=True,
            client=client,
            chunk_size=cfg.chunk_size,
        )
        assert res.by_symbol is not None
        pnls[h] = res.pnl
        results += _fhs_results(h, res.pnl, res.by_symbol, cfg, portfolio.symbols, hist.n_days, tags)
    return tuple(results), pnls


def fhs_scenario_sets(fhs: FhsModel, config: VarConfig) -> dict[int, ScenarioSet]:
    """The FHS scenarios of every horizon of ``config`` (one day: every filtered date once; longer: sampled paths)."""
    return dict(iter_fhs_scenario_sets(fhs, config))


def iter_fhs_scenario_sets(fhs: FhsModel, config: VarConfig) -> Iterator[tuple[int, ScenarioSet]]:
    """``fhs_scenario_sets``' (horizon, scenarios) pairs in the horizons' order, each set made when asked for (the
    same draws for every horizon), so that a caller revaluing one horizon at a time holds one set of paths."""
    n_days = fhs.standardized.shape[0]
    # one day: the bootstrap's distribution is exactly uniform over the filtered dates, so every date once
    # gives the exact FHS VaR (no sampling error); longer horizons are sampled paths (drawn only if asked for)
    longest = max(config.horizons)
    draws = fhs_draws(n_days, config.n_scenarios, longest, config.seed) if longest > 1 else np.zeros((0, 1), np.intp)
    for h in config.horizons:
        yield h, fhs_scenarios(fhs, np.arange(n_days, dtype=np.intp)[:, None] if h == 1 else draws, h, config.fhs_paths)


def _fhs_results(
    h: int,
    pnl: FloatArray,
    by_symbol: FloatArray,
    cfg: VarConfig,
    symbols: tuple[str, ...],
    lookback: int,
    tags: Sequence[str] = (),
    components: bool = True,
) -> list[VarResult]:
    exact = h == 1
    errors = np.zeros(len(cfg.confidences)) if exact else bootstrap_standard_error(pnl, cfg.confidences)
    note = "; ".join([*tags, "exact: every filtered date once" if exact else f"{pnl.size} sampled paths"])
    return _simulation_results(
        MONTE_CARLO_FHS,
        h,
        pnl,
        by_symbol,
        cfg,
        symbols,
        lookback,
        standard_errors=errors,
        note=note,
        components=components,
    )


def compute_var(
    portfolio: Portfolio,
    history: MarketHistory,
    config: VarConfig | None = None,
    *,
    methods: Sequence[str] = ALL_METHODS,
    garch_params: Sequence[GarchParams] | None = None,
    client: Any | None = None,
    smile: SmileDynamics | None = None,
    term: SmileDynamics | None = None,
    fhs_asymmetric: Sequence[bool] | None = None,
) -> VarReport:
    """Every requested method at every horizon and confidence of ``config`` (``smile``, ``term``: historical_var's;
    ``fhs_asymmetric``: monte_carlo_var's ``asymmetric``)."""
    cfg = config or VarConfig()
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; expected a subset of {ALL_METHODS}")
    if history.log_returns.shape[1] != portfolio.n_symbols:
        raise ValueError("history must have one column per portfolio symbol")
    results: list[VarResult] = []
    pnl: dict[tuple[str, int], FloatArray] = {}
    if HISTORICAL in methods:
        res, p = historical_var(portfolio, history, cfg, client=client, smile=smile, term=term)
        results += res
        pnl.update({(HISTORICAL, h): v for h, v in p.items()})
    if DELTA_NORMAL in methods or DELTA_GAMMA_CF in methods:
        results += [r for r in parametric_var(portfolio, history, cfg) if r.method in methods]
    if MONTE_CARLO_FHS in methods:
        res, p = monte_carlo_var(
            portfolio, history, cfg, garch_params=garch_params, client=client, asymmetric=fhs_asymmetric
        )
        results += res
        pnl.update({(MONTE_CARLO_FHS, h): v for h, v in p.items()})
    return VarReport(tuple(results), pnl)


def _stacked_historical_set(
    portfolios: Sequence[Portfolio],
    hists: Sequence[MarketHistory],
    stacked: Portfolio,
    horizon_days: int,
    term: SmileDynamics | None,
) -> ScenarioSet | None:
    """``scenario_engine._stack_sets`` of the books' ``historical_scenarios(hists[k], horizon_days)`` (with ``term``'s
    per-position vol shifts, as ``compute_var_batch`` adds them; each set padded to the longest by repeating its last
    row) made at once for the books of each history length: each book's running sums, ``expm1``, ``exp`` and vol
    shifts are the same operations on the same numbers, element by element, so the same bits. None (the caller makes
    the sets one by one) unless every history has the same symbols and no rate or dividend-yield changes, ``term`` is
    None or ``ExpiryScaledVolMoves`` (element-wise per position) and evaluate_many would revalue all the sets in one
    call (none or all of them below ``EEP_MIN_SCENARIOS`` rows)."""
    m = hists[0].log_returns.shape[1]
    has_iv = hists[0].iv_rel_changes is not None
    lengths = np.array([x.n_days for x in hists])
    small = lengths - horizon_days + 1 < EEP_MIN_SCENARIOS  # evaluate_many revalues those apart from the others
    if (
        (term is not None and type(term) is not ExpiryScaledVolMoves)
        or lengths.min() < horizon_days
        or (small.any() and not small.all())
        or any(
            x.log_returns.shape[1] != m
            or (x.iv_rel_changes is not None) != has_iv
            or x.rate_changes is not None
            or x.dividend_changes is not None
            for x in hists
        )
    ):
        return None
    n = int(lengths.max()) - horizon_days + 1
    longest = _common_prefix(hists, lengths)
    if longest is not None:
        return _stacked_prefix_set(portfolios, hists[longest], lengths, stacked, horizon_days, term)
    spot = np.empty((n, len(hists), m))
    scale = np.empty((n, len(hists), m)) if has_iv else None

    for length in np.unique(lengths):
        books = np.flatnonzero(lengths == length)
        _stacked_window_sums(np.stack([hists[k].log_returns for k in books], axis=1), spot, books, horizon_days)
        if scale is not None:
            iv = np.stack([hists[k].iv_rel_changes for k in books], axis=1)  # type: ignore[misc]
            _stacked_window_sums(np.log1p(iv), scale, books, horizon_days)
    flat = spot.reshape(n, -1)
    np.expm1(flat, out=flat)
    if scale is not None:
        scale = scale.reshape(n, -1)
        np.exp(scale, out=scale)
    sc = ScenarioSet(flat, vol_scale=scale)
    if term is not None:
        sc = replace(sc, vol_shift_abs=term.shifts(stacked, sc), vol_shift_per_position=True)
    return sc


def _stacked_window_sums(x: FloatArray, out: FloatArray, books: NDArray[np.intp], horizon_days: int) -> None:
    """``_window_sums(x[:, j], horizon_days, overwrite=True)`` of each book ``books[j]`` (``x``: days x books x
    symbols) into ``out[:, books[j]]``, its last row repeated below (running sums down the days, in ``x``)."""
    m = x.shape[2]
    c = np.cumsum(x, axis=0, out=x)
    rows = x.shape[0] - horizon_days + 1
    every = books.size == out.shape[1]  # all the books (one history length): the sums made in ``out`` itself
    sums = out[:rows] if every else np.empty((rows, books.size, m))
    np.subtract(c[horizon_days - 1], 0.0, out=sums[0])
    np.subtract(c[horizon_days:], c[: rows - 1], out=sums[1:])
    if not every:
        out[:rows, books] = sums
    out[rows:, books] = sums[-1]


def _same_bits(a: FloatArray | None, b: FloatArray | None) -> bool:
    """Whether two float arrays (or two Nones) hold the same shape and bits."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def _common_prefix(hists: Sequence[MarketHistory], lengths: NDArray[np.intp]) -> int | None:
    """The index of a longest history of which every other one is the first rows, bit for bit (the backtest's days
    while the look-back reaches back to the first stored return: every day's history starts there), or None (e.g.
    a look-back window sliding with the days). Only the returns and vol changes are compared (the caller has
    checked there are no rate or dividend-yield changes)."""
    if len(hists) < 2:
        return None
    top = int(np.argmax(lengths))
    r, iv = hists[top].log_returns, hists[top].iv_rel_changes
    for x, length in zip(hists, lengths, strict=True):
        if not _same_bits(x.log_returns, r[:length]) or not _same_bits(
            x.iv_rel_changes, None if iv is None else iv[:length]
        ):
            return None
    return top


def _stacked_prefix_set(
    portfolios: Sequence[Portfolio],
    longest: MarketHistory,
    lengths: NDArray[np.intp],
    stacked: Portfolio,
    horizon_days: int,
    term: SmileDynamics | None,
) -> ScenarioSet:
    """``_stacked_historical_set`` of histories that are each the first ``lengths[k]`` rows of ``longest``: row ``i``
    of book ``k``'s set is then row ``min(i, lengths[k] - horizon_days)`` of the longest's (its running sums of the
    same numbers from the same first row, ``expm1`` and ``exp`` element-wise), so each is made once and gathered.
    ``term``'s per-position shifts ``vol (c^g - c)`` (``ExpiryScaledVolMoves.shifts``) take ``c^g - c`` once per
    row of the longest and option when every book has the same options, expiries and symbols (the backtest's
    rescaled days of one book), each day's vols multiplying it: the same operations on the same numbers."""
    m = longest.log_returns.shape[1]
    n_full = longest.n_days - horizon_days + 1
    rows = np.minimum(np.arange(n_full)[:, None], (lengths - horizon_days)[None, :])  # (scenario, book) -> row
    spot = np.empty((n_full, 1, m))
    _stacked_window_sums(longest.log_returns[:, None, :].copy(), spot, np.zeros(1, dtype=np.intp), horizon_days)
    full_spot = np.expm1(spot[:, 0], out=spot[:, 0])
    flat = full_spot[rows].reshape(n_full, -1)
    full_scale = None
    scale = None
    if longest.iv_rel_changes is not None:
        log_scale = np.empty((n_full, 1, m))
        _stacked_window_sums(
            np.log1p(longest.iv_rel_changes)[:, None, :], log_scale, np.zeros(1, dtype=np.intp), horizon_days
        )
        full_scale = np.exp(log_scale[:, 0], out=log_scale[:, 0])
        scale = full_scale[rows].reshape(n_full, -1)
    sc = ScenarioSet(flat, vol_scale=scale)
    if term is None:
        return sc
    first = portfolios[0]
    same_book = all(
        p.n_symbols == m
        and np.array_equal(p.symbol_index, first.symbol_index)
        and np.array_equal(p.is_option, first.is_option)
        and _same_bits(np.asarray(p.time_years, dtype=np.float64), np.asarray(first.time_years, dtype=np.float64))
        for p in portfolios
    )
    if not (type(term) is ExpiryScaledVolMoves and full_scale is not None and same_book):
        return replace(sc, vol_shift_abs=term.shifts(stacked, sc), vol_shift_per_position=True)
    checked_moves(stacked, flat)
    npos = first.n_positions
    shift = np.zeros((n_full, len(portfolios), npos))
    moved = first.is_option & (first.time_years > 0.0)
    cols = np.flatnonzero(moved)
    if cols.size:
        c = full_scale[:, first.symbol_index[cols]]
        factor = np.zeros((n_full, npos))  # c^g - c in the moved options' columns (the others not read)
        factor[:, cols] = np.subtract(np.power(c, expiry_factor(first.time_years[cols], term.rule)[None, :]), c, out=c)
        for k, p in enumerate(portfolios):  # each day's vol times its rows, written in the moved options' columns
            np.multiply(p.implied_vol[None, :], factor[rows[:, k]], out=shift[:, k], where=moved[None, :])
    return replace(sc, vol_shift_abs=shift.reshape(n_full, -1), vol_shift_per_position=True)


def _stacked_one_day_fhs_set(models: Sequence[FhsModel], hists: Sequence[MarketHistory]) -> ScenarioSet | None:
    """``scenario_engine._stack_sets`` of the books' 1-day FHS sets (``fhs_scenario_sets``: every filtered date once),
    each padded to the longest by repeating its last row, made at once for the books of each history length: the
    same element-wise operations on the same numbers (``fhs_scenarios``' one step from zero sums), so the same bits.
    None unless every model has the same symbols and no rate or dividend-yield changes, and evaluate_many would
    revalue all the sets in one call."""
    m = models[0].standardized.shape[1]
    has_iv = models[0].iv_rel_changes is not None
    lengths = np.array([f.standardized.shape[0] for f in models])
    small = lengths < EEP_MIN_SCENARIOS
    if (small.any() and not small.all()) or any(
        f.standardized.shape[1] != m
        or (f.iv_rel_changes is not None) != has_iv
        or f.rate_changes is not None
        or f.dividend_changes is not None
        for f in models
    ):
        return None
    n = int(lengths.max())
    total = np.empty((n, len(models), m))  # every row of every book written below
    log_scale = np.empty((n, len(models), m)) if has_iv else None
    for length in np.unique(lengths):
        books = np.flatnonzero(lengths == length)
        every = books.size == len(models)  # one history length: the sums made in ``total`` itself
        z = np.stack([models[k].standardized for k in books], axis=1, out=total[:length] if every else None)
        # the step (in z's own array), then 0 + step: the one-step sum from zero (x + 0.0 is 0.0 + x, bit for bit)
        sums = np.multiply(np.sqrt(np.stack([models[k].next_variance for k in books]))[None, :, :], z, out=z)
        sums += 0.0
        if not every:
            total[:length, books] = sums
        total[length:, books] = sums[-1]
        if log_scale is not None:
            sums = np.log1p(np.stack([models[k].iv_rel_changes for k in books], axis=1))  # type: ignore[misc]
            sums += 0.0
            log_scale[:length, books] = sums
            log_scale[length:, books] = sums[-1]
    spot = total.reshape(n, -1)
    np.expm1(spot, out=spot)  # in place: ``total`` is not read again
    if log_scale is None:
        return ScenarioSet(spot)
    scale = log_scale.reshape(n, -1)
    return ScenarioSet(spot, vol_scale=np.exp(scale, out=scale))


def _fhs_models(
    hists: Sequence[MarketHistory], garch_params: Sequence[Sequence[GarchParams] | None] | None
) -> list[FhsModel]:
    """``fit_fhs(hists[k], garch_params[k])`` for every book. Books given one and the same list of parameters (the
    backtest's days between two refits) whose returns are each the first rows of the longest of them (days whose
    look-back reaches back to the first return) are filtered once, on the longest: the variance recursion runs
    forward from the same start, so a shorter history's conditional variances, standardized returns and next
    variance are the longest's first entries, bit for bit."""
    n = len(hists)
    models: list[FhsModel | None] = [None] * n
    groups: dict[int, list[int]] = {}
    for k in range(n):
        given = None if garch_params is None else garch_params[k]
        if given is None:
            models[k] = fit_fhs(hists[k], None)
        else:
            groups.setdefault(id(given), []).append(k)
    for ks in groups.values():
        lengths = [hists[k].n_days for k in ks]
        top = ks[int(np.argmax(lengths))]
        r = hists[top].log_returns
        params = garch_params[top]  # type: ignore[index]
        if (
            len(ks) == 1
            or params is None
            or len(params) != r.shape[1]
            or not all(_same_bits(hists[k].log_returns, r[: hists[k].n_days]) for k in ks)
        ):
            for k in ks:
                models[k] = fit_fhs(hists[k], None if garch_params is None else garch_params[k])
            continue
        z = np.empty_like(r)
        nxt = np.empty((len(ks), r.shape[1]))
        at = np.array(lengths)
        for s_ in range(r.shape[1]):  # fit_fhs's filter of each underlying, on the longest history
            var = garch_variance(params[s_], r[:, s_])
            z[:, s_] = r[:, s_] / np.sqrt(var[:-1])
            nxt[:, s_] = var[at]
        for i, k in enumerate(ks):
            x = hists[k]
            models[k] = FhsModel(
                tuple(params), z[: x.n_days], nxt[i], x.iv_rel_changes, x.rate_changes, x.dividend_changes
            )
    return models  # type: ignore[return-value]  # every entry set above


def compute_var_batch(
    portfolios: Sequence[Portfolio],
    histories: Sequence[MarketHistory],
    config: VarConfig | None = None,
    *,
    methods: Sequence[str] = ALL_METHODS,
    garch_params: Sequence[Sequence[GarchParams] | None] | None = None,
    term: SmileDynamics | None = None,
    stacked: Portfolio | None = None,
    components: bool = True,
    warm_bumps: bool = False,
) -> list[VarReport]:
    """``compute_var(portfolios[k], histories[k], config, methods=methods, garch_params=garch_params[k], term=term)``
    for every ``k`` at once: one scenario-engine call per simulation method and horizon for all the books
    (``scenario_engine.evaluate_many``) and one Greeks call; the same scenarios, prices and statistics (a book's
    scenario P&L is the sum of its per-underlying P&L instead of the sum by position: equal to rounding).
    ``stacked``: ``stack_portfolios(portfolios)`` made by the caller, so that the option values the engine caches
    on it (today's, ``scenario_engine.market_values``) serve the caller too. ``components=False``: no component
    VaR or ES (NaN and None; callers that read only the VaR and ES, such as the backtest, skip their work).
    ``warm_bumps``: the Greeks' time-bumped boundaries are solved from the base ones (``position_greeks``): theta,
    charm and the parametric VaR then equal ``compute_var``'s to rounding (within 1e-13 relative), not bit for bit."""
    cfg = config or VarConfig()
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; expected a subset of {ALL_METHODS}")
    n = len(portfolios)
    if len(histories) != n or (garch_params is not None and len(garch_params) != n):
        raise ValueError("need one history (and one set of GARCH parameters, if any) per portfolio")
    if any(x.log_returns.shape[1] != p.n_symbols for p, x in zip(portfolios, histories, strict=True)):
        raise ValueError("history must have one column per portfolio symbol")
    if n == 0:
        return []
    if stacked is None:
        stacked = stack_portfolios(portfolios)
    elif stacked.n_positions != sum(p.n_positions for p in portfolios):
        raise ValueError("stacked must be stack_portfolios(portfolios)")
    hists = [x.window(cfg.lookback_days) for x in histories]
    results: list[list[VarResult]] = [[] for _ in range(n)]
    pnl: list[dict[tuple[str, int], FloatArray]] = [{} for _ in range(n)]

    def revalue_stacked(sc: ScenarioSet, h: int) -> list[ScenarioPnl]:
        """``evaluate_many``'s engine call and split for the books' historical sets already stacked."""
        res = evaluate(
            stacked,
            sc,
            h * cfg.calendar_days_per_trading_day,
            american=cfg.american,
            per_symbol=True,
            chunk_size=cfg.chunk_size,
        )
        assert res.by_symbol is not None
        out, lo = [], 0
        for p, x in zip(portfolios, hists, strict=True):
            block = res.by_symbol[: x.n_days - h + 1, lo : lo + p.n_symbols]
            out.append(ScenarioPnl(block.sum(axis=1), np.ascontiguousarray(block)))
            lo += p.n_symbols
        return out

    def each_horizon(method: str, sets: list[dict[int, ScenarioSet]] | dict[int, ScenarioSet]) -> None:
        for h in cfg.horizons:
            if isinstance(sets, dict):  # one stacked set per horizon
                revalued = revalue_stacked(sets[h], h)
            else:
                revalued = evaluate_many(
                    portfolios,
                    [s[h] for s in sets],
                    h * cfg.calendar_days_per_trading_day,
                    american=cfg.american,
                    stacked=stacked,
                    chunk_size=cfg.chunk_size,
                )
            for k, (p, x, res) in enumerate(zip(portfolios, hists, revalued, strict=True)):
                assert res.by_symbol is not None
                pnl[k][(method, h)] = res.pnl
                if method == HISTORICAL:
                    tags = ([f"term: {term.label}"] if term is not None else []) + x.factor_tags()
                    results[k] += _simulation_results(
                        HISTORICAL, h, res.pnl, res.by_symbol, cfg, p.symbols, x.n_days, overlapping=True,
                        note="; ".join(tags), components=components,
                    )  # fmt: skip
                else:
                    results[k] += _fhs_results(
                        h, res.pnl, res.by_symbol, cfg, p.symbols, x.n_days, x.factor_tags(), components
                    )

    if HISTORICAL in methods:
        # every book's set made at once, stacked as evaluate_many stacks them (same bits); else one by one
        together = {h: _stacked_historical_set(portfolios, hists, stacked, h, term) for h in cfg.horizons}
        if all(sc is not None for sc in together.values()):
            each_horizon(HISTORICAL, together)  # type: ignore[arg-type]  # no None (checked)
        else:
            sets = [{h: historical_scenarios(x, h) for h in cfg.horizons} for x in hists]
            if term is not None:  # the expiry-scaled ATM move: per-position vol shifts, as historical_var adds them
                sets = [
                    {
                        h: replace(sc, vol_shift_abs=term.shifts(p, sc), vol_shift_per_position=True)
                        for h, sc in s.items()
                    }
                    for p, s in zip(portfolios, sets, strict=True)
                ]
            each_horizon(HISTORICAL, sets)
    if DELTA_NORMAL in methods or DELTA_GAMMA_CF in methods:
        greeks = position_greeks(stacked, warm_bumps=warm_bumps)
        ends = np.cumsum([0] + [p.n_positions for p in portfolios])
        # the covariances parametric_var uses (none where it works in the span of fewer days than factors)
        dense = [
            k
            for k, (p, x) in enumerate(zip(portfolios, hists, strict=True))
            if x.n_days >= p.n_symbols * (1 if x.iv_rel_changes is None else 2)
        ]
        cov: list[FloatArray | None] = [None] * n
        for k, c in zip(
            dense, factor_covariances([hists[k] for k in dense], cfg.covariance, cfg.ewma_decay), strict=True
        ):
            cov[k] = c
        for k, (p, x) in enumerate(zip(portfolios, histories, strict=True)):
            mine = tuple(g[ends[k] : ends[k + 1]] for g in greeks)
            results[k] += [
                r
                for r in parametric_var(
                    p,
                    x,
                    cfg,
                    greeks=mine,  # type: ignore[arg-type]
                    covariance=cov[k],
                    components=components,
                )
                if r.method in methods
            ]
    if MONTE_CARLO_FHS in methods:
        models = _fhs_models(hists, garch_params)
        one_day = _stacked_one_day_fhs_set(models, hists) if tuple(cfg.horizons) == (1,) else None
        if one_day is not None:  # every book's set made at once, stacked as evaluate_many stacks them (same bits)
            each_horizon(MONTE_CARLO_FHS, {1: one_day})
        else:
            each_horizon(MONTE_CARLO_FHS, [fhs_scenario_sets(m, cfg) for m in models])
    return [VarReport(tuple(r), p) for r, p in zip(results, pnl, strict=True)]
