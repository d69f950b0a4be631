"""``data/hedging/hedging.yaml``: per-book hedging settings, validated like the limits file."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from risk_pipeline.paths import DATA_DIR
from risk_pipeline.quant.limits import LimitsProblem

HEDGING_FILE = DATA_DIR / "hedging" / "hedging.yaml"


@dataclass(frozen=True)
class HedgingConfig:
    """One book's settings (meaning and units in data/hedging/hedging.yaml)."""

    tail_es_threshold_pct_nav: float = 0.05
    max_stress_loss_pct_nav: float = 0.15
    es_target_pct_nav: float = 0.05
    max_scenario_loss_pct_nav: float = 0.15
    max_hedge_cost_pct_nav: float = 0.02
    min_hedge_notional: float = 10_000.0
    horizon_sessions: int = 5
    financing_rate: float = 0.05
    stock_half_spread_bps: float = 5.0
    max_relative_spread: float = 0.25
    min_days_to_expiry: int = 7
    max_days_to_expiry: int = 120
    max_abs_log_moneyness: float = 0.3
    max_options_per_underlying: int = 24
    time_limit_seconds: float = 20.0
    beta_target_dollar_delta: float = 0.0
    cppi_floor_fraction: float = 0.85
    cppi_multiplier: float = 4.0


#: field -> (rule, predicate)
_RULES: dict[str, tuple[str, Any]] = {
    "tail_es_threshold_pct_nav": ("must be a number in (0, 1)", lambda v: 0 < v < 1),
    "max_stress_loss_pct_nav": ("must be a number in (0, 1)", lambda v: 0 < v < 1),
    "es_target_pct_nav": ("must be a number in (0, 1)", lambda v: 0 < v < 1),
    "max_scenario_loss_pct_nav": ("must be a number in (0, 1)", lambda v: 0 < v < 1),
    "max_hedge_cost_pct_nav": ("must be a number in (0, 1)", lambda v: 0 < v < 1),
    "min_hedge_notional": ("must be a finite number >= 0", lambda v: v >= 0),
    "horizon_sessions": ("must be an integer >= 1", lambda v: float(v).is_integer() and v >= 1),
    "financing_rate": ("must be a number in [0, 1)", lambda v: 0 <= v < 1),
    "stock_half_spread_bps": ("must be a finite number >= 0", lambda v: v >= 0),
    "max_relative_spread": ("must be a number in (0, 2]", lambda v: 0 < v <= 2),
    "min_days_to_expiry": ("must be an integer >= 0", lambda v: float(v).is_integer() and v >= 0),
    "max_days_to_expiry": ("must be an integer >= 1", lambda v: float(v).is_integer() and v >= 1),
    "max_abs_log_moneyness": ("must be a number > 0", lambda v: v > 0),
    "max_options_per_underlying": ("must be an integer >= 0", lambda v: float(v).is_integer() and v >= 0),
    "time_limit_seconds": ("must be a number > 0", lambda v: v > 0),
    "beta_target_dollar_delta": ("must be a finite number", lambda v: True),
    "cppi_floor_fraction": ("must be a number in [0, 1)", lambda v: 0 <= v < 1),
    "cppi_multiplier": ("must be a number > 0", lambda v: v > 0),
}


class HedgingConfigError(ValueError):
    """Every problem of a hedging file at once (``problems``), each naming file, book, field, value and rule."""

    def __init__(self, problems: list[LimitsProblem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} invalid hedging setting(s):\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class HedgingFile:
    """The validated file: version, defaults and per-book overrides."""

    path: str
    version: str
    defaults: HedgingConfig
    books: dict[str, HedgingConfig]
    #: settings each book's own section sets (they win over a risk-level preset, risk_pipeline/risk_levels.py)
    explicit: dict[str, frozenset[str]] = field(default_factory=dict)

    def for_book(self, book: str) -> HedgingConfig:
        return self.books.get(book, self.defaults)


def hedging_file() -> Path:
    """``RISK_PIPELINE_HEDGING_FILE`` or the shipped data/hedging/hedging.yaml."""
    return Path(os.environ.get("RISK_PIPELINE_HEDGING_FILE") or HEDGING_FILE)


def _check(values: dict[str, Any], file: str, book: str) -> list[LimitsProblem]:
    problems = []
    for name, value in values.items():
        if name not in _RULES:
            problems.append(LimitsProblem(file, book, name, value, f"unknown setting; known: {sorted(_RULES)}"))
            continue
        rule, ok = _RULES[name]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(float(value)) or not ok(float(value)):
            problems.append(LimitsProblem(file, book, name, value, rule))
    if not problems and values.get("min_days_to_expiry", 0) >= values.get("max_days_to_expiry", math.inf):
        v = values.get("min_days_to_expiry")
        problems.append(LimitsProblem(file, book, "min_days_to_expiry", v, "must be below max_days_to_expiry"))
    return problems


def load_hedging_config(path: str | os.PathLike[str] | None = None) -> HedgingFile:
    """Read and validate the file; raise ``HedgingConfigError`` listing every problem."""
    p = Path(path) if path else hedging_file()
    file = str(p)
    raw = yaml.safe_load(p.read_text()) or {}
    problems: list[LimitsProblem] = []
    for key in sorted(set(raw) - {"version", "defaults", "books"}):
        problems.append(LimitsProblem(file, "*", key, raw[key], "unknown top-level key (version, defaults, books)"))
    if not isinstance(raw.get("version"), str):
        problems.append(LimitsProblem(file, "*", "version", raw.get("version"), "must be a string"))
    defaults = raw.get("defaults") or {}
    books = raw.get("books") or {}
    if not isinstance(defaults, dict):
        problems.append(LimitsProblem(file, "defaults", "defaults", defaults, "must be a mapping"))
        defaults = {}
    if not isinstance(books, dict):
        problems.append(LimitsProblem(file, "*", "books", books, "must map book names to settings"))
        books = {}
    base = {f.name: getattr(HedgingConfig(), f.name) for f in fields(HedgingConfig)}
    problems += _check(dict(defaults), file, "defaults")
    merged: dict[str, dict[str, Any]] = {}
    for book, over in books.items():
        if over is not None and not isinstance(over, dict):
            problems.append(LimitsProblem(file, str(book), "*", over, "must be a mapping of settings"))
            continue
        problems += _check(dict(over or {}), file, str(book))
        merged[str(book)] = {**base, **defaults, **(over or {})}
    if problems:
        raise HedgingConfigError(problems)
    cast = {f.name: f.type for f in fields(HedgingConfig)}

    def make(values: dict[str, Any]) -> HedgingConfig:
        return HedgingConfig(**{k: (int(v) if cast[k] == "int" else float(v)) for k, v in values.items()})

    explicit = {str(b): frozenset(over or {}) for b, over in books.items()}
    return HedgingFile(
        file, str(raw["version"]), make({**base, **defaults}), {b: make(v) for b, v in merged.items()}, explicit
    )
