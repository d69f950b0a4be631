"""Stress testing: a versioned scenario library, full-revaluation stress P&L, spot-vol grid, event gaps.

Scenario shocks (every position fully revalued by ``scenario_engine``, instantaneously: no time
decay). Per underlying ``s`` with beta ``b_s`` to the reference index and index move ``m``::

    spot shock  = (1 + m)^{b_s} - 1        (beta on log returns, so a shock never reaches -100 %)

unless the scenario gives a move for the underlying's sector (``sector_moves``) or for the symbol
itself (``symbol_moves``), which is applied as is (symbol over sector over beta). Implied vols move by
``sigma' = max(sigma * multiplier + shift + skew * ln(K / S'), 0)`` (level multiplicative and/or
additive, skew per unit log-moneyness after the move, so ``skew < 0`` steepens the put skew) under the
legacy rule ``flat_multiplier``; the library's ``vol_rule`` ``expiry_name_skew`` (``vol_shocks``) instead
reads ``multiplier`` as the reference vol index's move and scales its log by each name's vol beta and
each expiry's ``(30 / tau)^alpha``, the skew by ``(30 / tau)^(1/2)``, and adds adverse idiosyncratic
spot and vol moves of single names (``idiosyncratic_sigmas``); rates by ``rate_shift``. Jorion, "Value
at Risk", 3rd ed., ch. 14; Hull, "Risk Management and Financial Institutions", 5th ed., ch. 22.

Liquidation cost (an exogenous spread cost scaled by a square-root participation rule; Bangia,
Diebold, Schuermann & Stroughair 1999, "Modeling liquidity risk, with implications for traditional
market risk measurement and management", Wharton FIC working paper 99-06; Almgren, Thum, Hauptmann &
Li 2005, "Direct estimation of equity market impact", Risk 18). A scenario liquidates the
fraction ``f`` of every position (``liquidation_fraction``; the position-limit shock halves every
position, a liquidity crisis liquidates the book). For position ``i`` with quoted bid-ask spread
``spread_i`` (price units per unit of underlying, e.g. dollars per share or per option share) and
average daily volume ``adv_i`` (in the units of ``quantity``)::

    q_i    = f |quantity_i|
    days_i = q_i / (participation_rate * adv_i * volume_multiplier)          time to liquidate
    cost_i = 0.5 * spread_i * spread_multiplier * multiplier_i * q_i * max(1, sqrt(days_i / H))

``0.5 * spread * multiplier * quantity`` is the cost of crossing half the (widened) spread at the
normal participation rate; a forced exit within the liquidation horizon ``H`` days needs a
participation ``days_i / H`` times higher, and by the square-root law the cost per unit grows with
its square root. Stress P&L = revaluation P&L - liquidation cost.

Risk level from ``pnl_pct_nav = pnl / nav`` and the thresholds (negative fractions of NAV):
``CRITICAL`` at or below ``critical``, ``HIGH`` at or below ``high``, ``MEDIUM`` at or below ``medium``,
else ``LOW``.

Event gap risk: per underlying the empirical distribution of its moves on past event days (its
earnings days) or, for market-wide events (FOMC, CPI), the index's moves on those days mapped by beta
to every underlying, gives an event-day scenario set (one scenario per past event); the book is
revalued under each and summarized by the expected P&L, the expected loss ``E[max(-P&L, 0)]``, the
loss quantile and ES at ``confidence`` (``var.empirical_var_es``) and the worst loss.

``load_scenarios`` (the library YAML, ``data/stress/scenarios.yaml``; schema in its README) is the
one I/O of this module. ``measure_move`` and ``event_day_moves`` measure index moves from a close
series, e.g. the arch package's S&P 500 history (1999-2018).
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml
from numpy.typing import ArrayLike, NDArray

from risk_pipeline.quant._numba import BoolArray, FloatArray, IntArray
from risk_pipeline.quant.portfolio import POSITION_FIELDS, Portfolio
from risk_pipeline.quant.scenario_engine import AmericanMethod, ScenarioSet, evaluate, market_values
from risk_pipeline.quant.var import empirical_var_es
from risk_pipeline.quant.vol_shocks import (
    VolShockRule,
    clipped_vol_betas,
    idiosyncratic_sign_sets,
    max_loss_weights,
    option_vol_shifts,
    window_sessions,
    worst_by_symbol,
)

if TYPE_CHECKING:
    from risk_pipeline.quant.smile_dynamics import SmileDynamics

LOW, MEDIUM, HIGH, CRITICAL = "LOW", "MEDIUM", "HIGH", "CRITICAL"
SCENARIO_TYPES = ("historical", "hypothetical")
#: The legacy vol rule: one multiplier for every name and expiry.
FLAT_MULTIPLIER = VolShockRule(kind="flat_multiplier")


# ----------------------------------------------------------------------------------------------
# library
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VolShock:
    """``sigma' = max(sigma * multiplier + shift + skew * ln(K / S'), 0)``."""

    multiplier: float = 1.0
    shift: float = 0.0
    skew: float = 0.0


@dataclass(frozen=True)
class LiquidityShock:
    """Spread and volume multipliers and the fraction of every position liquidated."""

    spread_multiplier: float = 1.0
    volume_multiplier: float = 1.0
    liquidation_fraction: float = 0.0


@dataclass(frozen=True, eq=False)
class StressScenario:
    """One scenario of the library (module docstring for the shock rules)."""

    scenario_id: str
    scenario_type: str
    description: str
    index_move: float = 0.0
    sector_moves: Mapping[str, float] = field(default_factory=dict)
    symbol_moves: Mapping[str, float] = field(default_factory=dict)
    vol: VolShock = VolShock()
    rate_shift: float = 0.0
    liquidity: LiquidityShock = LiquidityShock()
    window_start: str | None = None
    window_end: str | None = None
    measured_as: str | None = None
    measurable_from: str | None = None
    index_levels: Mapping[str, float] = field(default_factory=dict)
    vol_index: Mapping[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    #: adverse idiosyncratic move of every single name, in residual sds (None: the library rule's default)
    idiosyncratic_sigmas: float | None = None


@dataclass(frozen=True)
class RiskThresholds:
    """P&L as a fraction of NAV at or below which a scenario is MEDIUM, HIGH, CRITICAL."""

    medium: float = -0.02
    high: float = -0.05
    critical: float = -0.10

    def __post_init__(self) -> None:
        if not (self.critical < self.high < self.medium <= 0.0):
            raise ValueError("thresholds must satisfy critical < high < medium <= 0")

    def level(self, pnl_pct_nav: float) -> str:
        if pnl_pct_nav <= self.critical:
            return CRITICAL
        if pnl_pct_nav <= self.high:
            return HIGH
        if pnl_pct_nav <= self.medium:
            return MEDIUM
        return LOW


@dataclass(frozen=True)
class LiquidityModel:
    """Normal participation rate (fraction of ADV per day) and liquidation horizon (trading days)."""

    participation_rate: float = 0.10
    liquidation_horizon_days: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.participation_rate <= 1.0 and self.liquidation_horizon_days > 0.0):
            raise ValueError("participation_rate must be in (0, 1] and the horizon positive")


@dataclass(frozen=True)
class GridSpec:
    """Spot moves (relative) against relative vol moves (``sigma' = sigma (1 + v)``)."""

    spot_shocks: tuple[float, ...] = tuple(round(-0.30 + 0.05 * i, 2) for i in range(13))
    vol_shocks: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
    spot_mode: Literal["uniform", "beta"] = "uniform"


@dataclass(frozen=True, eq=False)
class ScenarioLibrary:
    """The versioned library: scenarios, risk thresholds, liquidity model and stress grid."""

    version: str
    reference_index: str
    scenarios: tuple[StressScenario, ...]
    thresholds: RiskThresholds = RiskThresholds()
    liquidity: LiquidityModel = LiquidityModel()
    grid: GridSpec = GridSpec()
    #: implied-vol shock rule (a library without ``vol_rule`` keeps the legacy flat multiplier)
    vol_rule: VolShockRule = FLAT_MULTIPLIER

    def get(self, scenario_id: str) -> StressScenario:
        for s in self.scenarios:
            if s.scenario_id == scenario_id:
                return s
        raise KeyError(scenario_id)


_TOP_KEYS = {"version", "reference_index", "risk_levels", "liquidity", "grid", "vol_rule", "scenarios"}
_RULE_KEYS = {
    "kind",
    "reference_tenor_days",
    "min_tenor_days",
    "term_exponent",
    "term_exponent_floor",
    "term_exponent_cap",
    "skew_term_exponent",
    "vol_beta_floor",
    "vol_beta_cap",
    "default_vol_beta",
    "log_move_cap",
    "idiosyncratic_sigmas",
    "source",
}
_SCENARIO_KEYS = {
    "id",
    "type",
    "description",
    "index_move",
    "sector_moves",
    "symbol_moves",
    "vol",
    "rate_shift",
    "liquidity",
    "window",
    "measured_as",
    "measurable_from",
    "index_levels",
    "vol_index",
    "sources",
    "notes",
    "idiosyncratic_sigmas",
}
_VOL_KEYS = {"multiplier", "shift", "skew"}
_LIQ_KEYS = {"spread_multiplier", "volume_multiplier", "liquidation_fraction"}


def _check_keys(where: str, got: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(got) - allowed
    if unknown:
        key = sorted(unknown)[0]
        hint = difflib.get_close_matches(key, sorted(allowed), n=1)
        raise ValueError(f"{where}: unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _num(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _scenario(raw: Mapping[str, Any]) -> StressScenario:
    sid = str(raw.get("id", ""))
    where = f"scenario {sid or '?'}"
    _check_keys(where, raw, _SCENARIO_KEYS)
    if not sid or raw.get("type") not in SCENARIO_TYPES or not raw.get("description"):
        raise ValueError(f"{where}: needs id, description and type in {SCENARIO_TYPES}")
    vol = dict(raw.get("vol") or {})
    _check_keys(f"{where}.vol", vol, _VOL_KEYS)
    liq = dict(raw.get("liquidity") or {})
    _check_keys(f"{where}.liquidity", liq, _LIQ_KEYS)
    window = dict(raw.get("window") or {})
    _check_keys(f"{where}.window", window, {"start", "end"})
    index_move = _num(f"{where}.index_move", raw.get("index_move", 0.0))
    idio = raw.get("idiosyncratic_sigmas")
    sector = {str(k): _num(f"{where}.sector_moves.{k}", v) for k, v in (raw.get("sector_moves") or {}).items()}
    symbol = {str(k): _num(f"{where}.symbol_moves.{k}", v) for k, v in (raw.get("symbol_moves") or {}).items()}
    if any(v <= -1.0 for v in (index_move, *sector.values(), *symbol.values())):
        raise ValueError(f"{where}: moves must be above -1")
    vs = VolShock(**{k: _num(f"{where}.vol.{k}", v) for k, v in vol.items()})
    ls = LiquidityShock(**{k: _num(f"{where}.liquidity.{k}", v) for k, v in liq.items()})
    if (
        vs.multiplier < 0
        or ls.spread_multiplier < 0
        or ls.volume_multiplier <= 0
        or not 0.0 <= ls.liquidation_fraction <= 1.0
    ):
        raise ValueError(f"{where}: invalid vol or liquidity shock")
    return StressScenario(
        scenario_id=sid,
        scenario_type=str(raw["type"]),
        description=" ".join(str(raw["description"]).split()),
        index_move=index_move,
        sector_moves=sector,
        symbol_moves=symbol,
        vol=vs,
        rate_shift=_num(f"{where}.rate_shift", raw.get("rate_shift", 0.0)),
        liquidity=ls,
        window_start=None if "start" not in window else str(window["start"]),
        window_end=None if "end" not in window else str(window["end"]),
        measured_as=raw.get("measured_as"),
        measurable_from=raw.get("measurable_from"),
        index_levels={str(k): _num(f"{where}.index_levels.{k}", v) for k, v in (raw.get("index_levels") or {}).items()},
        vol_index=dict(raw.get("vol_index") or {}),
        sources=tuple(str(s) for s in raw.get("sources") or ()),
        idiosyncratic_sigmas=(
            None if raw.get("idiosyncratic_sigmas") is None else _num(f"{where}.idiosyncratic_sigmas", idio)
        ),
    )


def load_scenarios(path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> ScenarioLibrary:
    """Read and validate the scenario library (a YAML path or the already-parsed mapping)."""
    if isinstance(path_or_dict, Mapping):
        raw: Any = path_or_dict
    else:
        with Path(path_or_dict).open(encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    if not isinstance(raw, Mapping):
        raise ValueError("the scenario library must be a mapping")
    _check_keys("library", raw, _TOP_KEYS)
    if not raw.get("version") or not raw.get("scenarios"):
        raise ValueError("the scenario library needs a version and scenarios")
    levels = dict(raw.get("risk_levels") or {})
    _check_keys("risk_levels", levels, {"medium", "high", "critical"})
    liq = dict(raw.get("liquidity") or {})
    _check_keys("liquidity", liq, {"participation_rate", "liquidation_horizon_days"})
    grid = dict(raw.get("grid") or {})
    _check_keys("grid", grid, {"spot_shocks", "vol_shocks", "spot_mode"})
    rule_raw = dict(raw.get("vol_rule") or {"kind": "flat_multiplier"})
    _check_keys("vol_rule", rule_raw, _RULE_KEYS)
    try:
        rule = VolShockRule(
            **{k: (str(v) if k in ("kind", "source") else _num(f"vol_rule.{k}", v)) for k, v in rule_raw.items()}
        )
    except ValueError as exc:
        raise ValueError(f"vol_rule: {exc}") from None
    scenarios = tuple(_scenario(s) for s in raw["scenarios"])
    if rule.kind == "expiry_name_skew":
        bad = [s.scenario_id for s in scenarios if s.vol.multiplier <= 0.0]
        if bad:
            raise ValueError(f"scenario {bad[0]}: vol.multiplier must be positive under vol_rule expiry_name_skew")
    if any((s.idiosyncratic_sigmas or 0.0) < 0.0 for s in scenarios):
        raise ValueError("idiosyncratic_sigmas must be non-negative")
    ids = [s.scenario_id for s in scenarios]
    if len(set(ids)) != len(ids):
        raise ValueError("scenario ids must be unique")
    gs = GridSpec(
        **{k: tuple(_num(f"grid.{k}", x) for x in grid[k]) for k in ("spot_shocks", "vol_shocks") if k in grid},
        **({"spot_mode": grid["spot_mode"]} if "spot_mode" in grid else {}),
    )
    if gs.spot_mode not in ("uniform", "beta") or any(x <= -1 for x in (*gs.spot_shocks, *gs.vol_shocks)):
        raise ValueError("grid: spot_mode must be uniform or beta and shocks above -1")
    return ScenarioLibrary(
        version=str(raw["version"]),
        reference_index=str(raw.get("reference_index", "")),
        scenarios=scenarios,
        thresholds=RiskThresholds(**{k: _num(f"risk_levels.{k}", v) for k, v in levels.items()}),
        liquidity=LiquidityModel(**{k: _num(f"liquidity.{k}", v) for k, v in liq.items()}),
        grid=gs,
        vol_rule=rule,
    )


# ----------------------------------------------------------------------------------------------
# scenario sets
# ----------------------------------------------------------------------------------------------


def _betas(portfolio: Portfolio, betas: ArrayLike | None) -> FloatArray:
    if betas is None:
        return np.ones(portfolio.n_symbols)
    b = np.asarray(betas, dtype=np.float64).reshape(-1)
    if b.shape != (portfolio.n_symbols,) or not np.all(np.isfinite(b)):
        raise ValueError("betas must be finite, one per symbol")
    return b


def beta_shocks(index_moves: ArrayLike, betas: ArrayLike) -> FloatArray:
    """``(1 + m)^beta - 1`` for every index move (rows) and underlying (columns)."""
    m = np.asarray(index_moves, dtype=np.float64).reshape(-1, 1)
    return np.expm1(np.asarray(betas, dtype=np.float64)[None, :] * np.log1p(m))


def scenario_set(
    portfolio: Portfolio,
    scenarios: Sequence[StressScenario],
    betas: ArrayLike | None = None,
    sectors: Sequence[str | None] | None = None,
) -> ScenarioSet:
    """The ``ScenarioSet`` of library scenarios for this portfolio's underlyings."""
    b = _betas(portfolio, betas)
    if sectors is not None and len(sectors) != portfolio.n_symbols:
        raise ValueError("sectors must have one entry per symbol")
    spot = beta_shocks([s.index_move for s in scenarios], b)
    # overrides: a (scenario x overridden name) table gathered per symbol; symbols last, so they win
    for key, names in (("sector_moves", sectors), ("symbol_moves", portfolio.symbols)):
        labels = sorted({k for sc in scenarios for k in getattr(sc, key)})
        if names is None or not labels:
            continue
        code = {name: k for k, name in enumerate(labels)}
        table = np.array([[getattr(sc, key).get(name, np.nan) for name in labels] for sc in scenarios])
        idx = np.array([code.get(str(x), -1) if x is not None else -1 for x in names])
        over = np.where(idx[None, :] >= 0, table[:, np.maximum(idx, 0)], np.nan)
        spot = np.where(np.isnan(over), spot, over)
    ones = np.ones((1, portfolio.n_symbols))
    return ScenarioSet(
        spot_shock_rel=spot,
        vol_scale=np.array([s.vol.multiplier for s in scenarios])[:, None] * ones,
        vol_shift_abs=np.array([s.vol.shift for s in scenarios])[:, None] * ones,
        vol_skew=np.array([s.vol.skew for s in scenarios])[:, None] * ones,
        rate_shift_abs=np.array([s.rate_shift for s in scenarios]),
    )


def liquidation_costs(
    portfolio: Portfolio,
    shocks: Sequence[LiquidityShock],
    spreads: ArrayLike | None,
    volumes: ArrayLike | None,
    model: LiquidityModel = LiquidityModel(),
) -> tuple[FloatArray, FloatArray]:
    """Per-scenario, per-underlying liquidation cost ``(n, n_symbols)`` and longest time to liquidate."""
    frac = np.array([s.liquidation_fraction for s in shocks], dtype=np.float64)
    n = frac.size
    if not np.any(frac > 0.0):
        return np.zeros((n, portfolio.n_symbols)), np.zeros(n)
    if spreads is None or volumes is None:
        raise ValueError("liquidity scenarios need per-position spreads and volumes")
    spr = np.asarray(spreads, dtype=np.float64).reshape(-1)
    adv = np.asarray(volumes, dtype=np.float64).reshape(-1)
    if spr.shape != (portfolio.n_positions,) or adv.shape != spr.shape:
        raise ValueError("spreads and volumes must have one entry per position")
    if not (np.all(np.isfinite(spr)) and np.all(spr >= 0.0) and np.all(np.isfinite(adv)) and np.all(adv > 0.0)):
        raise ValueError("spreads must be non-negative and volumes positive, all finite")
    smul = np.array([s.spread_multiplier for s in shocks])[:, None]
    vmul = np.array([s.volume_multiplier for s in shocks])[:, None]
    q = frac[:, None] * np.abs(portfolio.quantity)[None, :]
    days = q / (model.participation_rate * adv[None, :] * vmul)
    cost = (
        0.5
        * spr[None, :]
        * smul
        * portfolio.multiplier[None, :]
        * q
        * np.maximum(1.0, np.sqrt(days / model.liquidation_horizon_days))
    )
    cells = (np.arange(n)[:, None] * portfolio.n_symbols + portfolio.symbol_index[None, :]).ravel()
    by_symbol = np.bincount(cells, weights=cost.ravel(), minlength=n * portfolio.n_symbols)
    return by_symbol.reshape(n, portfolio.n_symbols), days.max(axis=1, initial=0.0)


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StressResult:
    """One scenario's result (a ``stress_results`` row plus diagnostics)."""

    scenario_id: str
    scenario_type: str
    description: str
    spot_shock: float
    vol_shock: float
    vol_shift: float
    vol_skew: float
    rate_shift: float
    market_pnl: float
    liquidation_cost: float
    pnl: float
    pnl_pct_nav: float
    risk_level: str
    worst_symbol: str | None
    worst_symbol_pnl: float
    days_to_liquidate: float
    library_version: str
    vol_rule: str = ""

    def to_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class GridPoint:
    """One ``stress_grid`` row: relative spot and vol moves, P&L and P&L % NAV."""

    spot_shock: float
    vol_shock: float
    pnl: float
    pnl_pct_nav: float

    def to_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _nav(portfolio: Portfolio, nav: float | None) -> float:
    value = float(np.sum(market_values(portfolio))) if nav is None else float(nav)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError("nav must be positive (pass it explicitly for a book with non-positive value)")
    return value


def run_stress(
    portfolio: Portfolio,
    scenarios: ScenarioLibrary | Sequence[StressScenario],
    betas: ArrayLike | None = None,
    sectors: Sequence[str | None] | None = None,
    spreads: ArrayLike | None = None,
    volumes: ArrayLike | None = None,
    nav: float | None = None,
    thresholds: RiskThresholds | Mapping[str, float] | None = None,
    *,
    liquidity_model: LiquidityModel | None = None,
    american: AmericanMethod = "exact",
    client: Any | None = None,
    vol_rule: VolShockRule | None = None,
    vol_betas: ArrayLike | None = None,
    idio_spot_sd: ArrayLike | None = None,
    idio_vol_sd: ArrayLike | None = None,
    shocks_out: list[tuple[FloatArray, FloatArray]] | None = None,
    first_pass_out: list[FirstPass] | None = None,
) -> tuple[StressResult, ...]:
    """Full-revaluation stress P&L of every scenario, P&L % NAV, worst underlying and risk level.

    ``betas`` (default 1) and ``sectors`` are per symbol; ``spreads`` and ``volumes`` per position
    (needed by scenarios that liquidate); ``nav`` defaults to the book's market value; thresholds and
    the liquidity model default to the library's (or the module defaults for a plain sequence).
    ``vol_rule`` defaults to the library's (``flat_multiplier`` for a plain sequence); under
    ``expiry_name_skew``, ``vol_betas`` (per symbol, NaN = no history), ``idio_spot_sd`` (daily residual
    log-return sd) and ``idio_vol_sd`` (daily residual 30-day log-vol sd; both 0 for the index, NaN or
    ``None`` = no idiosyncratic move) are per symbol (``vol_shocks``). ``shocks_out``: under ``expiry_name_skew``,
    the shocks the P&L is revalued in are appended to it, as ``stress_scenarios`` returns them: the log spot shock and
    the name's 30-day log-vol move per (scenario, symbol). ``first_pass_out``: the search's pass 1 is appended to it
    (nothing without idiosyncratic moves), what a search of the book plus hedge lines reuses (``stored_first_pass``).
    """
    lib = scenarios if isinstance(scenarios, ScenarioLibrary) else None
    items = tuple(lib.scenarios if lib is not None else scenarios)
    if not items:
        return ()
    if thresholds is None:
        th = lib.thresholds if lib is not None else RiskThresholds()
    else:
        th = thresholds if isinstance(thresholds, RiskThresholds) else RiskThresholds(**thresholds)
    model = liquidity_model or (lib.liquidity if lib is not None else LiquidityModel())
    nav_value = _nav(portfolio, nav)
    rule = vol_rule or (lib.vol_rule if lib is not None else FLAT_MULTIPLIER)
    sc = scenario_set(portfolio, items, betas, sectors)
    if rule.kind == "flat_multiplier":
        res = evaluate(portfolio, sc, 0.0, american=american, per_symbol=True, client=client)
        assert res.by_symbol is not None
        market_by_sym, market = res.by_symbol, res.pnl
    else:
        market_by_sym, spot_log, idio, first = _expiry_name_skew_pnl(
            portfolio, items, sc, rule, vol_betas, idio_spot_sd, idio_vol_sd, american, client
        )
        assert market_by_sym is not None
        if first_pass_out is not None and first is not None:
            first_pass_out.append(first)
        if shocks_out is not None:
            shocks_out.append((spot_log, _name_log_vol_move(items, portfolio.n_symbols, rule, vol_betas, idio)))
        market = market_by_sym.sum(axis=1)
    liq_sym, days = liquidation_costs(portfolio, [s.liquidity for s in items], spreads, volumes, model)
    by_sym = market_by_sym - liq_sym
    liq = liq_sym.sum(axis=1)
    total = market - liq
    version = lib.version if lib is not None else ""
    label = rule.label()
    out = []
    for j, s in enumerate(items):
        worst = int(np.argmin(by_sym[j])) if portfolio.n_symbols else -1
        pct = float(total[j] / nav_value)
        out.append(
            StressResult(
                scenario_id=s.scenario_id,
                scenario_type=s.scenario_type,
                description=s.description,
                spot_shock=s.index_move,
                vol_shock=s.vol.multiplier - 1.0,
                vol_shift=s.vol.shift,
                vol_skew=s.vol.skew,
                rate_shift=s.rate_shift,
                market_pnl=float(market[j]),
                liquidation_cost=float(liq[j]),
                pnl=float(total[j]),
                pnl_pct_nav=pct,
                risk_level=th.level(pct),
                worst_symbol=portfolio.symbols[worst] if worst >= 0 else None,
                worst_symbol_pnl=float(by_sym[j, worst]) if worst >= 0 else 0.0,
                days_to_liquidate=float(days[j]),
                library_version=version,
                vol_rule=label,
            )
        )
    return tuple(out)


def _per_symbol_sd(value: ArrayLike | None, n_symbols: int, name: str) -> FloatArray:
    if value is None:
        return np.zeros(n_symbols)
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (n_symbols,) or np.any(arr[np.isfinite(arr)] < 0.0):
        raise ValueError(f"{name} must be non-negative, one per symbol")
    return np.where(np.isfinite(arr), arr, 0.0)


@dataclass(frozen=True, eq=False)
class FirstPass:
    """Pass 1 of the idiosyncratic search of ``portfolio`` (``_expiry_name_skew_pnl``): the P&L per (scenario, symbol)
    without idiosyncratic moves, then with each sign combination at full size (5 arrays ``(n, n_symbols)``; None when
    read back from storage, ``stored_first_pass``), the inputs they were revalued with (a later search reuses the
    P&L only when its inputs are these), and what the search takes from them: each name's extra loss in its worst
    sign combination ``loss`` (base - worst, ``(n, n_symbols)``) and that combination ``pick`` (0..3)."""

    portfolio: Portfolio
    pnl: tuple[FloatArray, ...] | None
    items: tuple[StressScenario, ...]
    rule: VolShockRule
    american: AmericanMethod
    spot_log: FloatArray
    spot_sd: FloatArray
    vol_sd: FloatArray
    size: FloatArray
    vol_beta: FloatArray
    loss: FloatArray
    pick: IntArray

    def digest(self) -> str:
        """``first_pass_digest`` of the portfolio, scenarios, rule, engine and inputs this pass was revalued with."""
        inputs = (self.spot_log, self.spot_sd, self.vol_sd, self.size, self.vol_beta)
        return first_pass_digest(self.portfolio, self.items, self.rule, self.american, inputs)


#: bumped when what pass 1 computes from the same inputs changes (a stored pass of other code is then not reused)
FIRST_PASS_FORMAT = "stress-first-pass-1"


def first_pass_digest(
    portfolio: Portfolio,
    items: Sequence[StressScenario],
    rule: VolShockRule,
    american: AmericanMethod,
    inputs: tuple[FloatArray, ...],
) -> str:
    """SHA-256 of everything pass 1 of the idiosyncratic search depends on: the portfolio (symbols, spots, position
    ids, every position field, in order), every field of every scenario and of the rule (``repr``: floats exactly),
    the American method, and the search's per-symbol inputs (log spot shocks, residual sds, sizes, clipped vol betas)
    bit for bit."""
    h = hashlib.sha256(FIRST_PASS_FORMAT.encode())
    for text in (american, repr(rule), *(repr(s) for s in items), "\x1f".join(portfolio.symbols)):
        h.update(b"\x1e" + text.encode())
    h.update(b"\x1e" + "\x1f".join(portfolio.position_id or ()).encode())
    for a in (portfolio.spot, *(getattr(portfolio, name) for name in _POSITION_FIELDS), *inputs):
        arr = np.ascontiguousarray(a)
        h.update(f"\x1e{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


#: Every per-position field of a Portfolio (the symbol, the quantity and ``portfolio.POSITION_FIELDS``).
_POSITION_FIELDS = ("symbol_index", "quantity", *POSITION_FIELDS)


def _appended_symbols(old: Portfolio, new: Portfolio) -> BoolArray | None:
    """The symbols of the positions ``new`` appends to ``old`` (None unless ``new`` is ``old``'s positions, field for
    field and in order, then more, on the same symbols and spots)."""
    k = old.n_positions
    if old.symbols != new.symbols or not np.array_equal(old.spot, new.spot) or new.n_positions < k:
        return None
    for name in _POSITION_FIELDS:
        if not np.array_equal(getattr(old, name), getattr(new, name)[:k]):
            return None
    changed = np.zeros(new.n_symbols, dtype=np.bool_)
    changed[new.symbol_index[k:]] = True
    return changed


def _positions_on(p: Portfolio, symbols: BoolArray) -> Portfolio:
    """The positions of ``p`` on ``symbols`` (in order), with every symbol of ``p``."""
    keep = symbols[p.symbol_index]
    return Portfolio(
        symbols=p.symbols,
        spot=p.spot,
        position_id=tuple(i for i, k in zip(p.position_id or (), keep, strict=True) if k),
        **{name: getattr(p, name)[keep] for name in _POSITION_FIELDS},
    )


def _reusable(
    first: FirstPass | None,
    portfolio: Portfolio,
    items: Sequence[StressScenario],
    rule: VolShockRule,
    american: AmericanMethod,
    arrays: tuple[FloatArray, ...],
) -> BoolArray | None:
    """The symbols to revalue again when ``first`` is a search of ``portfolio``'s positions less some appended ones
    under the same scenarios and inputs (None: ``first`` cannot be reused)."""
    if first is None or first.rule != rule or first.american != american or len(first.items) != len(items):
        return None
    if any(a is not b for a, b in zip(first.items, items, strict=True)):
        return None
    kept = (first.spot_log, first.spot_sd, first.vol_sd, first.size, first.vol_beta)
    if not all(np.array_equal(a, b) for a, b in zip(kept, arrays, strict=True)):
        return None
    return _appended_symbols(first.portfolio, portfolio)


def _search_inputs(
    portfolio: Portfolio,
    items: Sequence[StressScenario],
    sc: ScenarioSet,
    rule: VolShockRule,
    idio_spot_sd: ArrayLike | None,
    idio_vol_sd: ArrayLike | None,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The idiosyncratic search's log spot shocks ``(n, n_symbols)``, residual spot and log-vol sds per symbol and
    size ``k_j sqrt(h_j)`` per scenario."""
    n_sym = portfolio.n_symbols
    k = np.array(
        [rule.idiosyncratic_sigmas if s.idiosyncratic_sigmas is None else s.idiosyncratic_sigmas for s in items]
    )
    size = k * np.sqrt(window_sessions([s.window_start for s in items], [s.window_end for s in items]))
    spot_sd = _per_symbol_sd(idio_spot_sd, n_sym, "idio_spot_sd")
    vol_sd = _per_symbol_sd(idio_vol_sd, n_sym, "idio_vol_sd")
    return np.log1p(sc.spot_shock_rel), spot_sd, vol_sd, size


def _searched(spot_sd: FloatArray, vol_sd: FloatArray, size: FloatArray) -> bool:
    """Whether any name moves idiosyncratically (else nothing is searched)."""
    return bool(np.any(size > 0.0) and (np.any(spot_sd > 0.0) or np.any(vol_sd > 0.0)))


def _worst_extra_loss(sets: tuple[FloatArray, ...]) -> tuple[FloatArray, IntArray]:
    """Per (scenario, symbol) of pass 1's P&L arrays (base, then the four sign combinations): the extra loss of the
    worst combination (base - worst) and which it was."""
    base, *moved = sets
    worst, pick = worst_by_symbol(moved)
    return base - worst, pick


def stored_first_pass(
    portfolio: Portfolio,
    scenarios: Sequence[StressScenario],
    betas: ArrayLike | None,
    sectors: Sequence[str | None] | None,
    digest: str,
    loss: ArrayLike,
    pick: ArrayLike,
    *,
    vol_rule: VolShockRule,
    vol_betas: ArrayLike | None = None,
    idio_spot_sd: ArrayLike | None = None,
    idio_vol_sd: ArrayLike | None = None,
    american: AmericanMethod = "exact",
) -> FirstPass | None:
    """A pass 1 kept elsewhere (``FirstPass.digest``, ``loss``, ``pick`` of a search, e.g. the stress step's) as the
    ``FirstPass`` of ``portfolio``'s search under these scenarios and inputs (``stress_scenarios``' arguments), for
    ``stress_scenarios``' ``reuse``: only when ``digest`` is the digest of this search's own portfolio, scenarios,
    rule, engine and inputs (None otherwise, or without idiosyncratic moves, or arrays of another shape)."""
    items = tuple(scenarios)
    if vol_rule.kind != "expiry_name_skew" or not items:
        return None
    shape = (len(items), portfolio.n_symbols)
    loss_arr = np.ascontiguousarray(loss, dtype=np.float64)
    pick_arr = np.ascontiguousarray(pick, dtype=np.intp)
    if loss_arr.shape != shape or pick_arr.shape != shape or np.any((pick_arr < 0) | (pick_arr > 3)):
        return None
    sc = scenario_set(portfolio, items, betas, sectors)
    spot_log, spot_sd, vol_sd, size = _search_inputs(portfolio, items, sc, vol_rule, idio_spot_sd, idio_vol_sd)
    if not _searched(spot_sd, vol_sd, size):
        return None
    inputs = (spot_log, spot_sd, vol_sd, size, clipped_vol_betas(vol_betas, portfolio.n_symbols, vol_rule))
    if first_pass_digest(portfolio, items, vol_rule, american, inputs) != digest:
        return None
    return FirstPass(portfolio, None, items, vol_rule, american, *inputs, loss=loss_arr, pick=pick_arr)


def _expiry_name_skew_pnl(
    portfolio: Portfolio,
    items: Sequence[StressScenario],
    sc: ScenarioSet,
    rule: VolShockRule,
    vol_betas: ArrayLike | None,
    idio_spot_sd: ArrayLike | None,
    idio_vol_sd: ArrayLike | None,
    american: AmericanMethod,
    client: Any | None,
    *,
    final_pnl: bool = True,
    reuse: FirstPass | None = None,
) -> tuple[FloatArray | None, FloatArray, FloatArray, FirstPass | None]:
    """Market P&L per (scenario, symbol) under ``expiry_name_skew`` (``vol_shocks``), idiosyncratic moves included
    (None without ``final_pnl``), the final log spot shock and idiosyncratic 30-day log-vol move per (scenario,
    symbol), and pass 1 (None without idiosyncratic moves).

    Without idiosyncratic moves one revaluation of the n scenarios. With them, pass 1 revalues the scenarios
    without and with every sign combination at full size (5 n rows, one set) and takes each name's worst
    combination and its extra loss ``a_js``; pass 2 revalues the scenarios with each name moved by its worst
    signs scaled by ``u_js = a_js / ||a_j||`` (``vol_shocks.max_loss_weights``). ``reuse``: pass 1 of a search of
    this portfolio less positions appended to it (``FirstPass``); only the symbols of the appended positions are
    revalued again (a symbol's P&L is its positions' own, summed in position order: the same numbers).
    """
    n, n_sym = sc.n_scenarios, portfolio.n_symbols
    spot_log, spot_sd, vol_sd, size = _search_inputs(portfolio, items, sc, rule, idio_spot_sd, idio_vol_sd)
    none = np.zeros((n, n_sym))
    args = (items, sc, rule, vol_betas, american, client)
    if not _searched(spot_sd, vol_sd, size):
        pnl = _revalue_sets([(spot_log, none)], portfolio, *args)[0] if final_pnl else None
        return pnl, spot_log, none, None
    # a scenario without idiosyncratic moves (size 0) moves no name in its sign combinations: they are its base
    # scenario, so its P&L (each scenario's is its own) is taken from the base instead of revalued four more times
    idio = np.flatnonzero(size > 0.0)
    combos = [(*c, idio) for c in idiosyncratic_sign_sets(spot_log[idio], none[idio], spot_sd, vol_sd, size[idio])]
    vol_beta = clipped_vol_betas(vol_betas, n_sym, rule)
    inputs = (spot_log, spot_sd, vol_sd, size, vol_beta)
    again = _reusable(reuse, portfolio, items, rule, american, inputs)
    if again is not None and final_pnl and reuse is not None and reuse.pnl is None:
        again = None  # the final P&L needs pass 1's base P&L, which a stored pass does not keep

    def first_pass(p: Portfolio) -> tuple[FloatArray, ...]:
        base, *moved = _revalue_sets([(spot_log, none), *combos], p, *args)
        out = [base]
        for m in moved:
            full = base.copy()
            full[idio] = m
            out.append(full)
        return tuple(out)

    sets: tuple[FloatArray, ...] | None
    if again is None or reuse is None:
        sets = first_pass(portfolio)
        loss, pick = _worst_extra_loss(sets)
    elif not again.any():
        sets, loss, pick = reuse.pnl, reuse.loss, reuse.pick
    else:
        # each (scenario, symbol)'s worst combination and extra loss are its own: the fresh symbols' taken from the
        # fresh pass, the others' from the reused one (the numbers of the merged pass, bit for bit)
        fresh = first_pass(_positions_on(portfolio, again))
        fresh_loss, fresh_pick = _worst_extra_loss(fresh)
        loss = np.where(again[None, :], fresh_loss, reuse.loss)
        pick = np.where(again[None, :], fresh_pick, reuse.pick)
        old = reuse.pnl
        sets = None if old is None else tuple(np.where(again[None, :], f, o) for f, o in zip(fresh, old, strict=True))
    first = FirstPass(portfolio, sets, tuple(items), rule, american, *inputs, loss=loss, pick=pick)
    u = max_loss_weights(loss)
    spot_sign = np.where(pick < 2, 1.0, -1.0)
    vol_sign = np.where(pick % 2 == 0, 1.0, -1.0)
    scaled = u * size[:, None]
    final = (spot_log + spot_sign * scaled * spot_sd[None, :], vol_sign * scaled * vol_sd[None, :])
    pnl = None
    if final_pnl:
        # a scenario without idiosyncratic moves (size 0) has its pass-1 inputs again (its moves are +-0): its P&L
        # is pass 1's base row (each scenario's is its own), so only the scenarios with moves are revalued
        assert sets is not None
        pnl = sets[0].copy()
        pnl[idio] = _revalue_sets([(final[0][idio], final[1][idio], idio)], portfolio, *args)[0]
    return pnl, *final, first


def _revalue_sets(
    sets: Sequence[tuple[FloatArray, FloatArray] | tuple[FloatArray, FloatArray, IntArray]],
    portfolio: Portfolio,
    items: Sequence[StressScenario],
    sc: ScenarioSet,
    rule: VolShockRule,
    vol_betas: ArrayLike | None,
    american: AmericanMethod,
    client: Any | None,
) -> list[FloatArray]:
    """P&L per (scenario, symbol) for each ``(spot log shock, idiosyncratic 30-day log-vol move[, scenario rows])``
    set (rows: which of the n scenarios the set's rows are; all by default), revalued together as one scenario set.

    The rows are revalued grouped by scenario (the sets' rows of one scenario, then of the next; the scenarios by
    rate shift, vol multiplier, vol shift and vol skew): rows of one scenario whose sign combinations move a name's
    spot but not its vols, and scenarios that move the vols alike, give its options the same vols, so the exact
    engine, which keeps each option's recent exercise boundaries by (vol, rate, yield), solves one boundary for them
    instead of one per set. Each row's P&L is its own (the same numbers in any order)."""
    p = portfolio
    n = sc.n_scenarios
    every = np.arange(n)
    rows = [np.asarray(x[2]) if len(x) == 3 else every for x in sets]
    mult = np.array([s.vol.multiplier for s in items], dtype=np.float64)
    rates = np.zeros(n) if sc.rate_shift_abs is None else np.asarray(sc.rate_shift_abs)
    # the scenarios in the order of their rate and vol inputs, so that two moving the vols alike (e.g. none) sit
    # side by side and their rows share the boundaries
    vol_inputs = [np.array([getattr(s.vol, f) for s in items], dtype=np.float64) for f in ("skew", "shift")]
    rank = np.empty(n, dtype=np.intp)
    rank[np.lexsort((every, *vol_inputs, mult, rates))] = every
    order = np.argsort(rank[np.concatenate(rows)], kind="stable")
    at = np.concatenate(rows)[order]
    spot_all = np.concatenate([x[0] for x in sets])[order]
    idio_all = np.concatenate([x[1] for x in sets])[order]
    shifts = option_vol_shifts(
        implied_vol=p.implied_vol,
        time_years=p.time_years,
        log_strike=np.log(np.where(p.is_option, p.strike, 1.0)),
        symbol_index=p.symbol_index,
        is_option=p.is_option,
        log_spot_new=np.log(p.spot)[None, :] + spot_all,
        index_log_vol_move=np.log(mult)[at],
        vol_shift=np.array([s.vol.shift for s in items], dtype=np.float64)[at],
        vol_skew=np.array([s.vol.skew for s in items], dtype=np.float64)[at],
        vol_betas=clipped_vol_betas(vol_betas, p.n_symbols, rule),
        idio_log_vol_move=idio_all,
        rule=rule,
    )
    full = ScenarioSet(
        np.expm1(spot_all),
        vol_shift_abs=shifts,
        rate_shift_abs=rates[at],
        vol_shift_per_position=True,
    )
    # about 3 n rows per chunk: the exact engine's work arrays for 3 n rows at a time, not all the sets' (each
    # scenario's P&L is its own: the same numbers; one set per chunk took about 7 % more CPU at 8,333 positions),
    # the first cut where a scenario's rows end (``_chunk_rows``; later chunks are of that size: with at most 5 n
    # rows, two chunks), so that rows sharing a boundary are not split between chunks
    res = evaluate(p, full, 0.0, american=american, per_symbol=True, client=client, chunk_size=_chunk_rows(at, 3 * n))
    assert res.by_symbol is not None
    by_symbol = np.empty_like(res.by_symbol)
    by_symbol[order] = res.by_symbol
    ends = np.cumsum([r.size for r in rows])
    return [by_symbol[e - r.size : e] for e, r in zip(ends, rows, strict=True)]


def _chunk_rows(scenario_of_row: IntArray, rows: int) -> int:
    """Rows per chunk: the first end of a scenario's rows (``scenario_of_row`` grouped) at or after ``rows``, at
    least 1; the first chunk holds whole scenarios (a set of at most 2 ``rows`` rows is cut there only)."""
    ends = np.flatnonzero(np.diff(scenario_of_row)) + 1
    after = ends[ends >= rows]
    return max(int(after[0]) if after.size else int(scenario_of_row.size), 1)


@dataclass(frozen=True, eq=False)
class RuleScenarios:
    """Stress scenarios as realized shocks per (scenario, symbol column), revalued on any portfolio of those columns.

    ``spot_log_shock`` is ``ln(S' / S)`` and ``name_log_vol_move`` the name's 30-day log-vol move ``L_js``
    (``vol_shocks``: vol beta x ``ln(multiplier)`` plus the idiosyncratic move), both ``(n, n_symbols)``;
    ``vol_multiplier``, ``vol_shift``, ``vol_skew``, ``rate_shift`` are ``(n,)``. ``scenario_set`` applies
    ``rule`` to each option of the portfolio it is given (its own expiry, strike and vol), so a book and hedge
    lines on the same symbols move exactly as ``run_stress`` moves the book. ``american`` is the method the
    stress engine revalues with.
    """

    spot_log_shock: FloatArray
    name_log_vol_move: FloatArray
    vol_multiplier: FloatArray
    vol_shift: FloatArray
    vol_skew: FloatArray
    rate_shift: FloatArray
    rule: VolShockRule
    american: AmericanMethod = "exact"
    #: pass 1 of the idiosyncratic search that found the shocks (None: none), for ``stress_scenarios``' ``reuse``
    first_pass: FirstPass | None = None

    @property
    def n_scenarios(self) -> int:
        return int(self.spot_log_shock.shape[0])

    @property
    def n_symbols(self) -> int:
        return int(self.spot_log_shock.shape[1])

    def columns(self, col: ArrayLike) -> RuleScenarios:
        """The same scenarios on the symbol columns ``col``."""
        c = np.asarray(col, dtype=np.intp)
        return replace(
            self,
            spot_log_shock=self.spot_log_shock[:, c],
            name_log_vol_move=self.name_log_vol_move[:, c],
            first_pass=None,
        )

    def rows(self, idx: ArrayLike) -> RuleScenarios:
        """The scenarios ``idx``."""
        i = np.asarray(idx, dtype=np.intp)
        return replace(
            self,
            spot_log_shock=self.spot_log_shock[i],
            name_log_vol_move=self.name_log_vol_move[i],
            vol_multiplier=self.vol_multiplier[i],
            vol_shift=self.vol_shift[i],
            vol_skew=self.vol_skew[i],
            rate_shift=self.rate_shift[i],
            first_pass=None,
        )

    def scenario_set(self, p: Portfolio) -> ScenarioSet:
        """The ``ScenarioSet`` of ``p`` (one symbol per column): per-position vol shifts under ``expiry_name_skew``."""
        if p.n_symbols != self.n_symbols:
            raise ValueError(f"portfolio has {p.n_symbols} symbols, the scenarios {self.n_symbols} columns")
        n = self.n_scenarios
        ones = np.ones((1, p.n_symbols))
        if self.rule.kind == "flat_multiplier":
            return ScenarioSet(
                np.expm1(self.spot_log_shock),
                vol_scale=self.vol_multiplier[:, None] * ones,
                vol_shift_abs=self.vol_shift[:, None] * ones,
                vol_skew=self.vol_skew[:, None] * ones,
                rate_shift_abs=self.rate_shift,
            )
        shifts = option_vol_shifts(
            implied_vol=p.implied_vol,
            time_years=p.time_years,
            log_strike=np.log(np.where(p.is_option, p.strike, 1.0)),
            symbol_index=p.symbol_index,
            is_option=p.is_option,
            log_spot_new=np.log(p.spot)[None, :] + self.spot_log_shock,
            index_log_vol_move=np.zeros(n),
            vol_shift=self.vol_shift,
            vol_skew=self.vol_skew,
            vol_betas=np.zeros(p.n_symbols),
            idio_log_vol_move=self.name_log_vol_move,
            rule=self.rule,
        )
        return ScenarioSet(
            np.expm1(self.spot_log_shock),
            vol_shift_abs=shifts,
            rate_shift_abs=self.rate_shift,
            vol_shift_per_position=True,
        )


def stress_scenarios(
    portfolio: Portfolio,
    scenarios: Sequence[StressScenario],
    betas: ArrayLike | None = None,
    sectors: Sequence[str | None] | None = None,
    *,
    vol_rule: VolShockRule = FLAT_MULTIPLIER,
    vol_betas: ArrayLike | None = None,
    idio_spot_sd: ArrayLike | None = None,
    idio_vol_sd: ArrayLike | None = None,
    american: AmericanMethod = "exact",
    reuse: RuleScenarios | None = None,
) -> RuleScenarios:
    """The shocks ``run_stress`` applies to ``portfolio`` (same arguments), as ``RuleScenarios``.

    Under ``expiry_name_skew`` the idiosyncratic moves are the book's worst (``run_stress``), found by
    revaluing ``portfolio``; revaluing other lines in the result keeps these shocks (the scenario is the
    book's, not re-searched for the lines). ``reuse``: the result for a portfolio whose positions ``portfolio``
    starts with (a book, ``portfolio`` the book and hedge lines): its search's pass 1 is reused for the symbols
    no appended position is on (the same numbers; searched in full when the scenarios or inputs differ).
    The search's final revaluation is not made (its P&L is not returned).
    """
    items = tuple(scenarios)
    sc = scenario_set(portfolio, items, betas, sectors)
    mult = np.array([s.vol.multiplier for s in items], dtype=np.float64)
    common = {
        "vol_multiplier": mult,
        "vol_shift": np.array([s.vol.shift for s in items], dtype=np.float64),
        "vol_skew": np.array([s.vol.skew for s in items], dtype=np.float64),
        "rate_shift": np.zeros(len(items)) if sc.rate_shift_abs is None else np.asarray(sc.rate_shift_abs, float),
        "rule": vol_rule,
        "american": american,
    }
    if vol_rule.kind == "flat_multiplier" or not items:
        none = np.zeros((len(items), portfolio.n_symbols))
        return RuleScenarios(np.log1p(sc.spot_shock_rel), none, **common)
    _, spot_log, idio, first = _expiry_name_skew_pnl(
        portfolio,
        items,
        sc,
        vol_rule,
        vol_betas,
        idio_spot_sd,
        idio_vol_sd,
        american,
        None,
        final_pnl=False,
        reuse=None if reuse is None else reuse.first_pass,
    )
    beta = clipped_vol_betas(vol_betas, portfolio.n_symbols, vol_rule)
    return RuleScenarios(spot_log, beta[None, :] * np.log(mult)[:, None] + idio, **common, first_pass=first)


def _name_log_vol_move(
    items: Sequence[StressScenario], n_symbols: int, rule: VolShockRule, vol_betas: ArrayLike | None, idio: FloatArray
) -> FloatArray:
    """``RuleScenarios.name_log_vol_move``: vol beta x ``ln(multiplier)`` plus the idiosyncratic move ``idio``."""
    mult = np.array([s.vol.multiplier for s in items], dtype=np.float64)
    return clipped_vol_betas(vol_betas, n_symbols, rule)[None, :] * np.log(mult)[:, None] + idio


def stress_grid(
    portfolio: Portfolio,
    grid: GridSpec | None = None,
    nav: float | None = None,
    betas: ArrayLike | None = None,
    *,
    american: AmericanMethod = "exact",
    client: Any | None = None,
) -> tuple[GridPoint, ...]:
    """P&L on the grid of spot moves (every underlying, or by beta) against relative vol moves."""
    g = grid or GridSpec()
    nav_value = _nav(portfolio, nav)
    spots, vols = np.asarray(g.spot_shocks, dtype=np.float64), np.asarray(g.vol_shocks, dtype=np.float64)
    spot, vol = np.repeat(spots, vols.size), np.tile(vols, spots.size)  # the grid's order: spot-major
    b = _betas(portfolio, betas) if g.spot_mode == "beta" else np.ones(portfolio.n_symbols)
    # revalued vol-major, one vol move (every spot move) per chunk: the exact American engine solves an option's
    # exercise boundary once per vol and prices every spot on it, so a chunk needs one boundary per option, and
    # holds a vol move's scenarios instead of the whole grid's (each scenario's P&L is its own: the same numbers)
    by_vol = ScenarioSet(
        beta_shocks(np.tile(spots, vols.size), b),
        vol_scale=np.broadcast_to(np.repeat(1.0 + vols, spots.size)[:, None], (spot.size, portfolio.n_symbols)),
    )
    chunk = max(spots.size, 1)
    pnl_by_vol = evaluate(portfolio, by_vol, 0.0, american=american, client=client, chunk_size=chunk).pnl
    pnl = pnl_by_vol.reshape(vols.size, spots.size).T.reshape(-1)
    return tuple(
        GridPoint(float(a), float(v), float(p), float(p / nav_value)) for a, v, p in zip(spot, vol, pnl, strict=True)
    )


# ----------------------------------------------------------------------------------------------
# event gap risk
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapEvent:
    """An upcoming event: ``symbol`` None means market-wide (FOMC, CPI)."""

    event_id: str
    event_type: str
    symbol: str | None = None


@dataclass(frozen=True)
class EventRisk:
    """Loss estimate of one event from its event-day scenario set (positive numbers = loss)."""

    event_id: str
    event_type: str
    symbol: str | None
    n_scenarios: int
    expected_pnl: float
    expected_loss: float
    loss_quantile: float
    expected_shortfall: float
    worst_loss: float
    confidence: float

    def to_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def event_scenarios(
    portfolio: Portfolio,
    event: GapEvent,
    moves: ArrayLike,
    betas: ArrayLike | None = None,
    vol_changes: ArrayLike | None = None,
) -> ScenarioSet:
    """One scenario per past event-day move: the symbol alone (earnings) or every symbol by beta.

    ``vol_changes`` (same length, relative) moves the implied vols of the same underlyings (e.g. the
    post-earnings vol crush); without it vols are unchanged.
    """
    m = np.asarray(moves, dtype=np.float64).reshape(-1)
    if m.size == 0 or not np.all(np.isfinite(m)) or np.any(m <= -1.0):
        raise ValueError(f"{event.event_id}: need finite past moves above -1")
    n_sym = portfolio.n_symbols
    scale = None
    if event.symbol is None:
        spot = beta_shocks(m, _betas(portfolio, betas))
        affected = np.ones(n_sym, dtype=bool)
    else:
        affected = np.zeros(n_sym, dtype=bool)
        affected[portfolio.symbol_position([event.symbol])[0]] = True
        spot = np.where(affected[None, :], m[:, None], 0.0)
    if vol_changes is not None:
        v = np.asarray(vol_changes, dtype=np.float64).reshape(-1)
        if v.shape != m.shape:
            raise ValueError("vol_changes must match moves")
        scale = np.where(affected[None, :], 1.0 + v[:, None], 1.0)
    return ScenarioSet(spot, vol_scale=scale)


def event_gap_risk(
    portfolio: Portfolio,
    events: Sequence[GapEvent],
    symbol_moves: Mapping[str, ArrayLike],
    market_moves: Mapping[str, ArrayLike],
    betas: ArrayLike | None = None,
    *,
    confidence: float = 0.95,
    horizon_days: float = 1.0,
    vol_changes: Mapping[str, ArrayLike] | None = None,
    vol_dynamics: Mapping[str, SmileDynamics] | None = None,
    american: AmericanMethod = "exact",
    client: Any | None = None,
) -> tuple[EventRisk, ...]:
    """Per-event loss estimates from the empirical event-day moves (module docstring).

    ``symbol_moves[symbol]`` are the symbol's past earnings-day moves, ``market_moves[event_type]`` the
    index's past moves on that type of day; ``vol_changes`` is keyed like the moves. ``vol_dynamics[event_id]``
    adds its per-position vol shifts to every scenario of that event (``smile_dynamics.EarningsVolCrush``: the
    reporting name's post-earnings vol crush). Events without history are skipped. ``horizon_days`` calendar days
    of time decay (the gap spans a day).
    """
    out = []
    for ev in events:  # one scenario set per event (a few per book)
        key = ev.symbol if ev.symbol is not None else ev.event_type
        source = symbol_moves if ev.symbol is not None else market_moves
        if key not in source or (ev.symbol is not None and ev.symbol not in portfolio.symbols):
            continue
        vc = None if vol_changes is None else vol_changes.get(key)
        sc = event_scenarios(portfolio, ev, source[key], betas, vc)
        if vol_dynamics is not None and ev.event_id in vol_dynamics:
            shift = vol_dynamics[ev.event_id].shifts(portfolio, sc)
            sc = replace(sc, vol_shift_abs=shift, vol_shift_per_position=True)
        pnl = evaluate(portfolio, sc, horizon_days, american=american, client=client).pnl
        var, es = empirical_var_es(pnl, confidence)
        out.append(
            EventRisk(
                ev.event_id,
                ev.event_type,
                ev.symbol,
                int(pnl.size),
                float(pnl.mean()),
                float(np.maximum(-pnl, 0.0).mean()),
                var,
                es,
                float(-pnl.min()),
                float(confidence),
            )
        )
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# measuring moves from a close series
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredMove:
    """Index move over a window of a close series (returns relative, decimals).

    ``start_close`` is the last close on or before the window start (the reference), ``end_close`` the
    last on or before its end; ``trough_return`` the lowest close in the window against the reference,
    ``intraday_trough_return`` the lowest low (when lows are given), ``worst_daily_return`` the worst
    close-to-close day after the reference.
    """

    start_date: np.datetime64
    end_date: np.datetime64
    start_close: float
    end_close: float
    total_return: float
    trough_return: float
    intraday_trough_return: float | None
    worst_daily_return: float
    max_drawdown: float


def _dates(dates: ArrayLike) -> NDArray[np.datetime64]:
    d = np.asarray(dates, dtype="datetime64[D]").reshape(-1)
    if d.size and np.any(np.diff(d) <= np.timedelta64(0, "D")):
        raise ValueError("dates must be strictly increasing")
    return d


def measure_move(
    dates: ArrayLike,
    closes: ArrayLike,
    start: str | np.datetime64,
    end: str | np.datetime64,
    lows: ArrayLike | None = None,
) -> MeasuredMove:
    """Measure the window ``[start, end]`` of a daily close series (see ``MeasuredMove``)."""
    d = _dates(dates)
    c = np.asarray(closes, dtype=np.float64).reshape(-1)
    if c.shape != d.shape:
        raise ValueError("dates and closes must have the same length")
    i0 = int(np.searchsorted(d, np.datetime64(start, "D"), side="right")) - 1
    i1 = int(np.searchsorted(d, np.datetime64(end, "D"), side="right")) - 1
    if i0 < 0 or i1 <= i0:
        raise ValueError("the series does not cover the window")
    w = c[i0 : i1 + 1]
    low_ret = None
    if lows is not None:
        lo = np.asarray(lows, dtype=np.float64).reshape(-1)
        low_ret = float(lo[i0 + 1 : i1 + 1].min() / w[0] - 1.0)
    return MeasuredMove(
        start_date=d[i0],
        end_date=d[i1],
        start_close=float(w[0]),
        end_close=float(w[-1]),
        total_return=float(w[-1] / w[0] - 1.0),
        trough_return=float(w.min() / w[0] - 1.0),
        intraday_trough_return=low_ret,
        worst_daily_return=float(np.min(w[1:] / w[:-1] - 1.0)),
        max_drawdown=float(np.min(w / np.maximum.accumulate(w) - 1.0)),
    )


def event_day_moves(dates: ArrayLike, closes: ArrayLike, event_dates: ArrayLike, lag: int = 0) -> FloatArray:
    """Close-to-close returns of the session on (or first after) each event date, shifted by ``lag``.

    ``lag=1`` takes the next session (earnings after the close). Events whose session or previous close
    falls outside the series are dropped.
    """
    d = _dates(dates)
    c = np.asarray(closes, dtype=np.float64).reshape(-1)
    if c.shape != d.shape:
        raise ValueError("dates and closes must have the same length")
    e = np.asarray(event_dates, dtype="datetime64[D]").reshape(-1)
    i = np.searchsorted(d, e, side="left") + lag
    ok = (i >= 1) & (i < d.size)
    i = i[ok]
    return c[i] / c[i - 1] - 1.0
