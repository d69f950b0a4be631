"""The sizing configuration file (data/sizing.yaml): per-strategy Kelly fractions and vol targets, risk bounds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from risk_pipeline.errors import RiskDataError
from risk_pipeline.paths import DATA_DIR

SIZING_FILE = DATA_DIR / "sizing.yaml"
METHODS = ("kelly", "kelly_multi", "optimal_f", "vol_target", "risk_parity", "xgboost")


@dataclass(frozen=True)
class StrategySizing:
    """One strategy's sizing parameters."""

    kelly_fraction: float = 0.25
    allow_short: bool = True
    target_vol: float = 0.15


@dataclass(frozen=True)
class SizingDefaults:
    """Book-wide bounds and method settings (see data/sizing.yaml for units)."""

    kelly_fraction: float = 0.25
    allow_short: bool = True
    target_vol: float = 0.15
    max_position_risk_pct_nav: float = 0.01
    max_portfolio_risk_pct_nav: float = 0.05
    max_name_pct_nav: float = 0.10
    max_gross_pct_nav: float = 1.50
    max_cluster_pct_gross: float = 0.50
    min_cluster_correlation: float = 0.50
    correlation_window: int = 63
    covariance_window: int = 252
    regime_scale: float = 0.5
    regime_top_decile: float = 0.9
    optimal_f_paths: int = 2000
    ml_confidence_threshold: float = 0.5
    ml_retrain_interval_sessions: int = 21
    ml_min_train_rows: int = 200
    methods: tuple[str, ...] = METHODS


@dataclass(frozen=True)
class SizingConfig:
    """The whole file: version, defaults, strategies and each book's strategies."""

    version: str
    defaults: SizingDefaults
    strategies: Mapping[str, StrategySizing] = field(default_factory=dict)
    books: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: per book: share of the book's 99 % 1-day VaR each position strategy may take (component VaR)
    risk_budgets: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def strategy(self, name: str) -> StrategySizing:
        """The strategy's parameters; the defaults for a strategy the file does not list."""
        d = self.defaults
        return self.strategies.get(name, StrategySizing(d.kelly_fraction, d.allow_short, d.target_vol))

    def book_strategies(self, book: str, available: set[str]) -> set[str]:
        """Strategies whose signals the book sizes (every one available when the book is not listed)."""
        return set(self.books[book]) & available if book in self.books else set(available)


def _known(kind: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RiskDataError(f"{where}: unknown keys {unknown} (known: {sorted(names)})")
    return dict(values)


def load_sizing_config(path: str | Path | None = None) -> SizingConfig:
    """Parse and validate the file; a ``RiskDataError`` names the file and the offending key."""
    p = Path(path or SIZING_FILE)
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RiskDataError(f"{p}: cannot read the sizing configuration: {exc}") from exc
    d = _known(SizingDefaults, raw.get("defaults") or {}, f"{p} defaults")
    if "methods" in d:
        bad = sorted(set(d["methods"]) - set(METHODS))
        if bad:
            raise RiskDataError(f"{p} defaults.methods: unknown {bad} (known: {list(METHODS)})")
        d["methods"] = tuple(d["methods"])
    defaults = SizingDefaults(**d)
    strategies = {}
    for name, values in (raw.get("strategies") or {}).items():
        v = _known(StrategySizing, values or {}, f"{p} strategies.{name}")
        s = StrategySizing(
            float(v.get("kelly_fraction", defaults.kelly_fraction)),
            bool(v.get("allow_short", defaults.allow_short)),
            float(v.get("target_vol", defaults.target_vol)),
        )
        if not 0.0 < s.kelly_fraction <= 1.0 or not s.target_vol > 0.0:
            raise RiskDataError(f"{p} strategies.{name}: kelly_fraction must be in (0, 1] and target_vol > 0")
        strategies[str(name)] = s
    books = {str(b): tuple((v or {}).get("strategies", ())) for b, v in (raw.get("books") or {}).items()}
    budgets: dict[str, dict[str, float]] = {}
    for b, shares in (raw.get("risk_budgets") or {}).items():
        budgets[str(b)] = {str(k): float(v) for k, v in (shares or {}).items()}
        bad = {k: v for k, v in budgets[str(b)].items() if not 0.0 < v <= 1.0}
        if bad:
            raise RiskDataError(f"{p} risk_budgets.{b}: shares must be in (0, 1], got {bad}")
    return SizingConfig(str(raw.get("version", "unversioned")), defaults, strategies, books, budgets)
