"""A book's risk-level preset applied to the sizing and hedging configurations, and the portfolio-value override.

The limits part of a preset is applied by ``quant.limits.load_limits`` (the book's ``risk_level`` line and the
environment); this module applies the same level to the other two configurations (values in
``quant/presets.py``):

- hedging: the file's defaults < the preset < the book's own section of data/hedging/hedging.yaml;
- sizing: data/sizing.yaml has no per-book section, so the preset replaces its defaults for the book and scales
  each strategy's ``kelly_fraction`` and ``target_vol`` by the level's value over moderate's (capped at 1);
- capital: ``RISK_PIPELINE_PORTFOLIO_VALUE_<BOOK>`` replaces the book's capital of data/books.yaml.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from risk_pipeline.quant import presets
from risk_pipeline.quant.limits import LimitsConfigError, LimitsProblem

if TYPE_CHECKING:  # the layers import this module: no import of theirs at run time
    from risk_pipeline.defs.hedging.config import HedgingConfig, HedgingFile
    from risk_pipeline.defs.sizing.config import SizingConfig


def hedging_for_book(hfile: HedgingFile, book: str, level: str | None) -> HedgingConfig:
    """The book's hedging settings with its preset beneath the book's own values (no level: unchanged)."""
    cfg = hfile.for_book(book)
    if level is None:
        return cfg
    own = hfile.explicit.get(book, frozenset())
    return replace(cfg, **{k: v for k, v in presets.HEDGING[level].items() if k not in own})


def sizing_for_book(cfg: SizingConfig, level: str | None) -> SizingConfig:
    """The sizing configuration at ``level`` (no level: unchanged)."""
    if level is None:
        return cfg
    strategies = {
        name: replace(
            s,
            kelly_fraction=presets.scaled_fraction(s.kelly_fraction, level, "kelly_fraction"),
            target_vol=s.target_vol * presets.SIZING[level]["target_vol"] / presets.SIZING["moderate"]["target_vol"],
        )
        for name, s in cfg.strategies.items()
    }
    return replace(cfg, defaults=replace(cfg.defaults, **presets.SIZING[level]), strategies=strategies)


def capital_with_overrides(capital: Mapping[str, float], env: Mapping[str, str] | None = None) -> dict[str, float]:
    """``capital`` with ``RISK_PIPELINE_PORTFOLIO_VALUE_<BOOK>`` applied; a bad value raises ``LimitsConfigError``."""
    over, problems = presets.environment_overrides(os.environ if env is None else env, capital)
    bad = [p for p in problems if p.field.startswith(presets.ENV_PORTFOLIO_VALUE)]
    if bad:
        raise LimitsConfigError([LimitsProblem(presets.ENV_SOURCE, p.book, p.field, p.value, p.rule) for p in bad])
    return {book: over.book_portfolio_value.get(book, value) for book, value in capital.items()}


def effective_configuration(version: str, level: str | None, environment: tuple[tuple[str, str], ...]) -> str:
    """One line recorded with each limit_status row: limits version, preset and the environment overrides."""
    env = ", ".join(f"{k}={v}" for k, v in environment) or "none"
    return f"limits {version}; risk_level {level or 'none'}; environment {env}"
