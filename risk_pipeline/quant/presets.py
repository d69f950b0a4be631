"""Risk-level presets (conservative, moderate, aggressive) and the deployment overrides from the environment.

A preset sets, in one line of a book's configuration (``risk_level: conservative`` in its section of
data/limits/limits.yaml), the fractional limits and capital-preservation levels (``limits``), the sizing
fractions (``sizing``) and the hedging thresholds (``hedging``). Precedence, lowest first::

    the file's defaults  <  the preset  <  the book's own section  <  RISK_PIPELINE_MAX_DRAWDOWN_PCT[_<BOOK>]

The level itself comes from ``RISK_PIPELINE_RISK_LEVEL_<BOOK>``, else ``RISK_PIPELINE_RISK_LEVEL``, else the
book's ``risk_level``, else the defaults' ``risk_level`` (none: no preset). ``<BOOK>`` is the book name upper
case with every character other than A-Z and 0-9 replaced by ``_`` (``core_equity`` -> ``CORE_EQUITY``).
``moderate`` holds exactly the shipped defaults, so naming it changes nothing. Money caps (VaR, ES, Greeks)
are not in the presets: they scale with the book's size and stay in the limits file.

Pure: the environment is passed in as a mapping; problems are returned, each naming where the value came
from (the variable), the field, the value and the rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RISK_LEVELS: tuple[str, ...] = ("conservative", "moderate", "aggressive")
ENV_SOURCE = "environment"
ENV_RISK_LEVEL = "RISK_PIPELINE_RISK_LEVEL"
ENV_MAX_DRAWDOWN = "RISK_PIPELINE_MAX_DRAWDOWN_PCT"
ENV_PORTFOLIO_VALUE = "RISK_PIPELINE_PORTFOLIO_VALUE"

#: Limits-file settings per level (the limits file's field names; fractions are decimals).
LIMITS: dict[str, dict[str, Any]] = {
    "conservative": {
        "max_daily_loss_pct_nav": 0.01,
        "max_drawdown_pct": 0.06,
        "light_drawdown_pct": 0.03,
        "moderate_drawdown_pct": 0.045,
        "light_gross_cut": 0.33,
        "moderate_gross_cut": 0.60,
        "max_position_pct_gross": 0.10,
        "max_underlying_pct_gross": 0.15,
        "max_sector_pct_gross": 0.30,
        "max_pairwise_correlation": 0.60,
        "warning_fraction": 0.7,
        "recovery_sessions": 5,
    },
    "moderate": {
        "max_daily_loss_pct_nav": 0.02,
        "max_drawdown_pct": 0.10,
        "light_drawdown_pct": 0.05,
        "moderate_drawdown_pct": 0.075,
        "light_gross_cut": 0.25,
        "moderate_gross_cut": 0.50,
        "max_position_pct_gross": 0.20,
        "max_underlying_pct_gross": 0.20,
        "max_sector_pct_gross": 0.40,
        "max_pairwise_correlation": 0.70,
        "warning_fraction": 0.8,
        "recovery_sessions": 3,
    },
    "aggressive": {
        "max_daily_loss_pct_nav": 0.03,
        "max_drawdown_pct": 0.15,
        "light_drawdown_pct": 0.075,
        "moderate_drawdown_pct": 0.11,
        "light_gross_cut": 0.20,
        "moderate_gross_cut": 0.40,
        "max_position_pct_gross": 0.30,
        "max_underlying_pct_gross": 0.30,
        "max_sector_pct_gross": 0.50,
        "max_pairwise_correlation": 0.80,
        "warning_fraction": 0.85,
        "recovery_sessions": 2,
    },
}

#: Sizing fractions per level (data/sizing.yaml defaults). Each strategy's own kelly_fraction and target_vol
#: are scaled by the level's value over moderate's, so a strategy keeps its calibration relative to others.
SIZING: dict[str, dict[str, float]] = {
    "conservative": {
        "kelly_fraction": 0.10,
        "target_vol": 0.10,
        "max_position_risk_pct_nav": 0.005,
        "max_portfolio_risk_pct_nav": 0.03,
        "max_gross_pct_nav": 1.00,
    },
    "moderate": {
        "kelly_fraction": 0.25,
        "target_vol": 0.15,
        "max_position_risk_pct_nav": 0.01,
        "max_portfolio_risk_pct_nav": 0.05,
        "max_gross_pct_nav": 1.50,
    },
    "aggressive": {
        "kelly_fraction": 0.50,
        "target_vol": 0.25,
        "max_position_risk_pct_nav": 0.02,
        "max_portfolio_risk_pct_nav": 0.08,
        "max_gross_pct_nav": 2.00,
    },
}

#: Hedging thresholds per level (data/hedging/hedging.yaml fields).
HEDGING: dict[str, dict[str, float]] = {
    "conservative": {
        "tail_es_threshold_pct_nav": 0.03,
        "max_stress_loss_pct_nav": 0.10,
        "es_target_pct_nav": 0.03,
        "max_scenario_loss_pct_nav": 0.10,
        "max_hedge_cost_pct_nav": 0.03,
        "cppi_floor_fraction": 0.90,
        "cppi_multiplier": 3.0,
    },
    "moderate": {
        "tail_es_threshold_pct_nav": 0.05,
        "max_stress_loss_pct_nav": 0.15,
        "es_target_pct_nav": 0.05,
        "max_scenario_loss_pct_nav": 0.15,
        "max_hedge_cost_pct_nav": 0.02,
        "cppi_floor_fraction": 0.85,
        "cppi_multiplier": 4.0,
    },
    "aggressive": {
        "tail_es_threshold_pct_nav": 0.08,
        "max_stress_loss_pct_nav": 0.20,
        "es_target_pct_nav": 0.08,
        "max_scenario_loss_pct_nav": 0.20,
        "max_hedge_cost_pct_nav": 0.01,
        "cppi_floor_fraction": 0.80,
        "cppi_multiplier": 5.0,
    },
}

LEVEL_RULE = f"must be one of {list(RISK_LEVELS)}"


def env_suffix(book: str) -> str:
    """The book's part of a per-book variable name: upper case, non-alphanumerics as ``_``."""
    return re.sub(r"[^A-Z0-9]", "_", book.upper())


@dataclass(frozen=True)
class EnvProblem:
    """One invalid environment value: the variable (field), the book it applies to, the value and the rule."""

    book: str
    field: str
    value: Any
    rule: str


@dataclass(frozen=True)
class EnvOverrides:
    """Validated deployment overrides: a level, a maximum drawdown and a portfolio value per book (or all)."""

    risk_level: str | None = None
    max_drawdown_pct: float | None = None
    book_risk_level: Mapping[str, str] = field(default_factory=dict)
    book_max_drawdown_pct: Mapping[str, float] = field(default_factory=dict)
    book_portfolio_value: Mapping[str, float] = field(default_factory=dict)
    #: variable -> raw value of every override used (recorded with the effective configuration)
    used: Mapping[str, str] = field(default_factory=dict)

    def level(self, book: str) -> str | None:
        return self.book_risk_level.get(book, self.risk_level)

    def drawdown(self, book: str) -> float | None:
        return self.book_max_drawdown_pct.get(book, self.max_drawdown_pct)

    def applied(self, book: str) -> dict[str, str]:
        """The variables that apply to ``book`` (global ones and its own), with their raw values."""
        own = env_suffix(book)
        keys = (ENV_RISK_LEVEL, ENV_MAX_DRAWDOWN, f"{ENV_RISK_LEVEL}_{own}", f"{ENV_MAX_DRAWDOWN}_{own}")
        keys += (f"{ENV_PORTFOLIO_VALUE}_{own}",)
        return {k: self.used[k] for k in keys if k in self.used}


def _number(raw: str) -> float | None:
    try:
        v = float(raw)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def environment_overrides(env: Mapping[str, str], books: Iterable[str]) -> tuple[EnvOverrides, list[EnvProblem]]:
    """Read ``RISK_PIPELINE_RISK_LEVEL[_<BOOK>]``, ``RISK_PIPELINE_MAX_DRAWDOWN_PCT[_<BOOK>]`` and
    ``RISK_PIPELINE_PORTFOLIO_VALUE_<BOOK>`` for the given books; every bad value is a problem.

    Empty values count as unset. Rules: a level must be a preset name (case-insensitive), a drawdown a number
    in (0, 1), a portfolio value a finite number > 0.
    """
    problems: list[EnvProblem] = []
    used: dict[str, str] = {}

    def level(var: str, book: str) -> str | None:
        raw = (env.get(var) or "").strip()
        if not raw:
            return None
        if raw.lower() not in RISK_LEVELS:
            problems.append(EnvProblem(book, var, raw, LEVEL_RULE))
            return None
        used[var] = raw
        return raw.lower()

    def fraction(var: str, book: str) -> float | None:
        raw = (env.get(var) or "").strip()
        if not raw:
            return None
        v = _number(raw)
        if v is None or not 0.0 < v < 1.0:
            problems.append(EnvProblem(book, var, raw, "must be a number in (0, 1)"))
            return None
        used[var] = raw
        return v

    def amount(var: str, book: str) -> float | None:
        raw = (env.get(var) or "").strip()
        if not raw:
            return None
        v = _number(raw)
        if v is None or v <= 0.0:
            problems.append(EnvProblem(book, var, raw, "must be a finite number > 0"))
            return None
        used[var] = raw
        return v

    glob_level = level(ENV_RISK_LEVEL, "*")
    glob_dd = fraction(ENV_MAX_DRAWDOWN, "*")
    book_level: dict[str, str] = {}
    book_dd: dict[str, float] = {}
    book_value: dict[str, float] = {}
    for book in books:
        s = env_suffix(book)
        if (lv := level(f"{ENV_RISK_LEVEL}_{s}", book)) is not None:
            book_level[book] = lv
        if (dd := fraction(f"{ENV_MAX_DRAWDOWN}_{s}", book)) is not None:
            book_dd[book] = dd
        if (pv := amount(f"{ENV_PORTFOLIO_VALUE}_{s}", book)) is not None:
            book_value[book] = pv
    return EnvOverrides(glob_level, glob_dd, book_level, book_dd, book_value, used), problems


def scaled_fraction(value: float, level: str, name: str) -> float:
    """A strategy's own sizing fraction moved to ``level``: ``value * SIZING[level][name] / moderate``, <= 1."""
    return min(1.0, value * SIZING[level][name] / SIZING["moderate"][name])
