"""Risk limits of a book: the versioned limits file, the book's exposures, one status row per limit.

Exposures (``BookExposure``; ``units = quantity * multiplier``; greeks are per ONE option on ONE
share, or per share for a stock: delta 1, other greeks 0)::

    delta_shares       = units * delta            dollar_delta   = delta_shares * spot
    gamma_shares       = units * gamma            vega_per_vol_point = units * vega / 100
    position_theta_per_day = units * theta_per_day    market_value = units * unit_price
    gross              = |dollar_delta|           (per position; the book's gross is the sum)

Gross exposure is one measure for every instrument: the absolute delta-adjusted notional
``|quantity * multiplier * delta * spot|``. For a stock it is ``|market value at spot|``; for an
option it is the stock position with the same first-order risk. An option with a delta near zero
therefore adds almost nothing to gross (its risk is bounded by the gamma, vega and theta caps). The
concentration limits divide by ``D = max(gross, concentration_min_gross_pct_nav * nav)`` so that a
book being built from nothing is not measured against a tiny gross (with the default ``0``,
``D = gross``).

Limits (one row each; ``scope`` says what the maximum is taken over):

==============================  ==========  ===========================================================
limit                           scope       value
==============================  ==========  ===========================================================
max_abs_net_delta_shares        underlying  ``max_u |sum delta_shares in u|`` (shares of different
                                            stocks are not summed)
max_abs_net_dollar_delta        book        ``|sum dollar_delta|``
max_abs_gamma_shares            underlying  ``max_u |sum gamma_shares in u|`` (shares per 1.00 of spot)
max_abs_vega_per_vol_point      book        ``|sum vega_per_vol_point|``
max_theta_per_day_loss          book        ``-sum position_theta_per_day`` (negative when the book
                                            earns theta)
max_var_99_1d, max_es_975_1d    book        the inputs, positive numbers meaning loss
max_position_pct_gross          position    ``max_i gross_i / D``
max_underlying_pct_gross        underlying  ``max_u sum_{i in u} gross_i / D``
max_sector_pct_gross            sector      ``max_s sum_{i in s} gross_i / D``
min_positions, max_positions    book        number of DISTINCT UNDERLYINGS with a non-zero position
max_pairwise_correlation        pair        largest correlation between two held underlyings
max_daily_loss_pct_nav          book        ``max(0, -daily_pnl) / (nav - daily_pnl)`` (start-of-day NAV)
max_drawdown_pct                book        ``max(0, 1 - nav / peak_nav)``
==============================  ==========  ===========================================================

Status. A cap allows its threshold: ``BREACH`` when ``value > threshold``, ``WARN`` when
``value > warn_threshold = warning_fraction * threshold``, else ``OK``; ``utilization = value /
threshold``. A floor (``min_positions``) has ``warn_threshold = threshold / warning_fraction``,
``BREACH`` when ``value < threshold``, ``WARN`` when ``value < warn_threshold`` and ``utilization =
threshold / value`` (``inf`` for an empty book), so for both kinds ``utilization > 1`` is a breach
and larger is worse. ``NOT_AVAILABLE`` (value and utilization NaN) when an input is missing: VaR or
ES is ``None`` (the risk layer has not produced it), the correlation matrix is absent or does not
cover a held underlying, or a needed number is NaN. It is never ``OK``: the trading state treats it
as failing closed. Positions with ``quantity == 0`` are ignored everywhere.

Everything here is pure numerics except ``load_limits``, which reads the YAML limits file.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import ArrayLike, NDArray

from risk_pipeline.quant import presets
from risk_pipeline.quant._numba import FloatArray, IntArray
from risk_pipeline.quant.presets import RISK_LEVELS

OK = "OK"
WARN = "WARN"
BREACH = "BREACH"
NOT_AVAILABLE = "NOT_AVAILABLE"
CAP = "cap"
FLOOR = "floor"


@dataclass(frozen=True)
class LimitSpec:
    """What a limit measures: ``kind`` cap or floor, ``scope`` of its maximum, ``unit`` of its value."""

    name: str
    kind: str
    scope: str
    unit: str


#: Every limit, in the order ``evaluate_limits`` reports them.
LIMIT_SPECS: tuple[LimitSpec, ...] = (
    LimitSpec("max_abs_net_delta_shares", CAP, "underlying", "shares"),
    LimitSpec("max_abs_net_dollar_delta", CAP, "book", "money"),
    LimitSpec("max_abs_gamma_shares", CAP, "underlying", "shares per 1.00 of spot"),
    LimitSpec("max_abs_vega_per_vol_point", CAP, "book", "money per vol point"),
    LimitSpec("max_theta_per_day_loss", CAP, "book", "money per day"),
    LimitSpec("max_var_99_1d", CAP, "book", "money"),
    LimitSpec("max_es_975_1d", CAP, "book", "money"),
    LimitSpec("max_position_pct_gross", CAP, "position", "fraction of gross"),
    LimitSpec("max_underlying_pct_gross", CAP, "underlying", "fraction of gross"),
    LimitSpec("max_sector_pct_gross", CAP, "sector", "fraction of gross"),
    LimitSpec("min_positions", FLOOR, "book", "underlyings"),
    LimitSpec("max_positions", CAP, "book", "underlyings"),
    LimitSpec("max_pairwise_correlation", CAP, "pair", "correlation"),
    LimitSpec("max_daily_loss_pct_nav", CAP, "book", "fraction of NAV"),
    LimitSpec("max_drawdown_pct", CAP, "book", "fraction of peak NAV"),
)
LIMIT_NAMES: tuple[str, ...] = tuple(s.name for s in LIMIT_SPECS)
SPECS: dict[str, LimitSpec] = {s.name: s for s in LIMIT_SPECS}
#: Limits linear in position quantities (for a fixed sign of each position); the reductions LP and
#: the pre-trade ratio test handle these exactly.
LINEAR_LIMITS: frozenset[str] = frozenset(
    {
        "max_abs_net_delta_shares",
        "max_abs_net_dollar_delta",
        "max_abs_gamma_shares",
        "max_abs_vega_per_vol_point",
        "max_theta_per_day_loss",
        "max_position_pct_gross",
        "max_underlying_pct_gross",
        "max_sector_pct_gross",
    }
)
#: Limits on realized losses; they set the capital-preservation level of the trading state.
LOSS_LIMITS: frozenset[str] = frozenset({"max_daily_loss_pct_nav", "max_drawdown_pct"})
#: Limits reported but not driving the trading state (REDUCING would block the cure: adding names).
ADVISORY_LIMITS: frozenset[str] = frozenset({"min_positions"})

TRADING_STATES_ON_MISSING = ("REDUCING", "HALTED")


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitsProblem:
    """One invalid entry of a limits file: where it is, what it holds and the rule it breaks."""

    file: str
    book: str
    field: str
    value: Any
    rule: str

    def __str__(self) -> str:
        return f"{self.file}: book {self.book!r}, field {self.field!r} = {self.value!r}: {self.rule}"


class LimitsConfigError(ValueError):
    """Raised with every problem of a limits file or config at once (``problems``)."""

    def __init__(self, problems: list[LimitsProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} invalid limits setting(s):\n{lines}")


_RULE_TEXT = {
    "amount": "must be a finite number > 0",
    "fraction": "must be a number in (0, 1]",
    "open_fraction": "must be a number in (0, 1)",
    "nonneg": "must be a finite number >= 0",
    "count": "must be an integer >= 0",
    "count_pos": "must be an integer >= 1",
    "state": f"must be one of {TRADING_STATES_ON_MISSING}",
    "names": "must be a list of strings",
    "warnings": "must map limit names to numbers in (0, 1)",
    "text": "must be a string",
    "level": f"must be one of {list(RISK_LEVELS)}",
}

#: Field -> (rule kind, null allowed). Every limit may be null (disabled) except max_drawdown_pct,
#: which is the maximum capital-preservation level.
_FIELD_RULES: dict[str, tuple[str, bool]] = {
    "max_abs_net_delta_shares": ("amount", True),
    "max_abs_net_dollar_delta": ("amount", True),
    "max_abs_gamma_shares": ("amount", True),
    "max_abs_vega_per_vol_point": ("amount", True),
    "max_theta_per_day_loss": ("amount", True),
    "max_var_99_1d": ("amount", True),
    "max_es_975_1d": ("amount", True),
    "max_position_pct_gross": ("fraction", True),
    "max_underlying_pct_gross": ("fraction", True),
    "max_sector_pct_gross": ("fraction", True),
    "min_positions": ("count", True),
    "max_positions": ("count_pos", True),
    "max_pairwise_correlation": ("fraction", True),
    "max_daily_loss_pct_nav": ("open_fraction", True),
    "max_drawdown_pct": ("open_fraction", False),
    "warning_fraction": ("open_fraction", False),
    "warning_fractions": ("warnings", False),
    "light_drawdown_pct": ("open_fraction", False),
    "moderate_drawdown_pct": ("open_fraction", False),
    "light_gross_cut": ("fraction", False),
    "moderate_gross_cut": ("fraction", False),
    "recovery_sessions": ("count_pos", False),
    "not_available_state": ("state", False),
    "hedge_strategies": ("names", False),
    "concentration_min_gross_pct_nav": ("nonneg", False),
    # a named preset (quant/presets.py): sets the fractional limits beneath the book's own values
    "risk_level": ("level", True),
}
SETTING_NAMES: tuple[str, ...] = tuple(_FIELD_RULES)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool | np.bool_)


def _rule_broken(kind: str, value: Any) -> bool:
    """True when ``value`` breaks the rule ``kind`` (see ``_RULE_TEXT``)."""
    if kind in ("amount", "fraction", "open_fraction", "nonneg"):
        if not _is_number(value) or not math.isfinite(float(value)):
            return True
        v = float(value)
        return {
            "amount": v <= 0.0,
            "fraction": not 0.0 < v <= 1.0,
            "open_fraction": not 0.0 < v < 1.0,
            "nonneg": v < 0.0,
        }[kind]
    if kind in ("count", "count_pos"):
        if not _is_number(value) or not float(value).is_integer():
            return True
        return int(value) < (1 if kind == "count_pos" else 0)
    if kind == "state":
        return value not in TRADING_STATES_ON_MISSING
    if kind == "names":
        return not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value)
    if kind == "text":
        return not isinstance(value, str)
    if kind == "level":
        return value not in RISK_LEVELS
    raise AssertionError(kind)


#: Strategies a position may carry (positions.strategy); ``new`` marks an order not yet assigned to one.
KNOWN_STRATEGIES = frozenset(
    {
        "long_stock",
        "short_stock",
        "covered_call",
        "protective_put",
        "bull_call_spread",
        "long_straddle",
        "short_strangle",
        "delta_hedged_short_vol",
        "index_hedge",
        "new",
    }
)


def unheld_hedge_strategies(config: LimitsConfig, held_strategies: Iterable[str]) -> list[str]:
    """``hedge_strategies`` entries that match no position of the book (a warning: likely a misconfiguration)."""
    held = set(held_strategies)
    return [s for s in config.hedge_strategies if s not in held]


def _check_settings(values: Mapping[str, Any], file: str, book: str) -> list[LimitsProblem]:
    """Problems of one book's settings: unknown names, bad values, inconsistent levels."""
    problems: list[LimitsProblem] = []

    def bad(name: str, value: Any, rule: str) -> None:
        problems.append(LimitsProblem(file, book, name, value, rule))

    for name, value in values.items():
        if name not in _FIELD_RULES:
            close = difflib.get_close_matches(str(name), SETTING_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            bad(str(name), value, f"unknown field{hint}")
            continue
        kind, nullable = _FIELD_RULES[name]
        if value is None:
            if not nullable:
                bad(name, value, "must not be null")
            continue
        if kind == "warnings":
            if not isinstance(value, Mapping):
                bad(name, value, _RULE_TEXT[kind])
                continue
            for limit, frac in value.items():
                if limit not in SPECS:
                    bad(f"{name}.{limit}", frac, "unknown limit name")
                elif _rule_broken("open_fraction", frac):
                    bad(f"{name}.{limit}", frac, _RULE_TEXT["open_fraction"])
            continue
        if _rule_broken(kind, value):
            bad(name, value, _RULE_TEXT[kind] + (" (or null to disable)" if nullable else ""))
    if problems:
        return problems

    def get(name: str) -> Any:
        return values.get(name)

    levels = [get("light_drawdown_pct"), get("moderate_drawdown_pct"), get("max_drawdown_pct")]
    if all(v is not None for v in levels) and not levels[0] < levels[1] < levels[2]:
        bad(
            "light_drawdown_pct/moderate_drawdown_pct/max_drawdown_pct",
            tuple(levels),
            "must satisfy light_drawdown_pct < moderate_drawdown_pct < max_drawdown_pct",
        )
    for strategy in get("hedge_strategies") or ():
        if strategy not in KNOWN_STRATEGIES:
            close = difflib.get_close_matches(str(strategy), sorted(KNOWN_STRATEGIES), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            bad("hedge_strategies", strategy, f"not a known strategy{hint}; known: {sorted(KNOWN_STRATEGIES)}")
    cuts = [get("light_gross_cut"), get("moderate_gross_cut")]
    if all(v is not None for v in cuts) and cuts[0] > cuts[1]:
        bad("light_gross_cut/moderate_gross_cut", tuple(cuts), "must satisfy light <= moderate")
    counts = [get("min_positions"), get("max_positions")]
    if all(v is not None for v in counts) and counts[0] > counts[1]:
        bad("min_positions/max_positions", tuple(counts), "must satisfy min_positions <= max_positions")
    return problems


@dataclass(frozen=True)
class LimitsConfig:
    """The limits of one book (see the module docstring for what each limit measures).

    Caps are positive numbers in the units of their limit (``None`` disables a limit). Percent caps
    are fractions (0.20 = 20 %). ``warning_fraction`` sets every ``warn_threshold``; entries of
    ``warning_fractions`` (limit name -> fraction) override it per limit. Capital preservation:
    drawdown past ``light_drawdown_pct`` asks for a ``light_gross_cut`` of gross, past
    ``moderate_drawdown_pct`` a ``moderate_gross_cut`` plus hedges, past ``max_drawdown_pct`` (or a
    daily loss past ``max_daily_loss_pct_nav``) a HALT. A condition must stay clear for
    ``recovery_sessions`` consecutive evaluations before the state steps down one level.
    ``not_available_state`` is the state a NOT_AVAILABLE limit forces (fail closed).
    ``hedge_strategies`` are the strategies kept when speculative positions are flattened.
    """

    book: str = "default"
    version: str = ""
    source: str = "<dict>"
    max_abs_net_delta_shares: float | None = None
    max_abs_net_dollar_delta: float | None = None
    max_abs_gamma_shares: float | None = None
    max_abs_vega_per_vol_point: float | None = None
    max_theta_per_day_loss: float | None = None
    max_var_99_1d: float | None = None
    max_es_975_1d: float | None = None
    max_position_pct_gross: float | None = 0.20
    max_underlying_pct_gross: float | None = 0.20
    max_sector_pct_gross: float | None = 0.40
    min_positions: int | None = 3
    max_positions: int | None = 20
    max_pairwise_correlation: float | None = 0.70
    max_daily_loss_pct_nav: float | None = 0.02
    max_drawdown_pct: float = 0.10
    warning_fraction: float = 0.8
    warning_fractions: tuple[tuple[str, float], ...] = ()
    light_drawdown_pct: float = 0.05
    moderate_drawdown_pct: float = 0.075
    light_gross_cut: float = 0.25
    moderate_gross_cut: float = 0.50
    recovery_sessions: int = 3
    not_available_state: str = "HALTED"
    hedge_strategies: tuple[str, ...] = ("index_hedge", "protective_put")
    concentration_min_gross_pct_nav: float = 0.0
    #: the preset in force (None: none) and the environment variables applied (name, raw value)
    risk_level: str | None = None
    environment: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        wf = self.warning_fractions
        if isinstance(wf, Mapping):
            wf = tuple(sorted(wf.items()))
        object.__setattr__(self, "warning_fractions", tuple((str(k), v) for k, v in wf))
        object.__setattr__(self, "hedge_strategies", tuple(self.hedge_strategies))
        values = {name: getattr(self, name) for name in SETTING_NAMES}
        values["warning_fractions"] = dict(self.warning_fractions)
        problems = _check_settings(values, self.source, self.book)
        if problems:
            raise LimitsConfigError(problems)
        for name, (kind, _) in _FIELD_RULES.items():
            value = getattr(self, name)
            if value is not None and kind in ("amount", "fraction", "open_fraction", "nonneg"):
                object.__setattr__(self, name, float(value))
            elif value is not None and kind in ("count", "count_pos"):
                object.__setattr__(self, name, int(value))
        object.__setattr__(self, "warning_fractions", tuple((k, float(v)) for k, v in self.warning_fractions))

    def threshold(self, limit_name: str) -> float | None:
        """The cap (or floor) of ``limit_name``, ``None`` when disabled."""
        value = getattr(self, limit_name)
        return None if value is None else float(value)

    def warn_fraction(self, limit_name: str) -> float:
        """The warning fraction of ``limit_name`` (its override, else ``warning_fraction``)."""
        return float(dict(self.warning_fractions).get(limit_name, self.warning_fraction))

    def warn_threshold(self, limit_name: str) -> float | None:
        """``fraction * cap`` for a cap, ``floor / fraction`` for a floor, ``None`` when disabled."""
        t = self.threshold(limit_name)
        if t is None:
            return None
        f = self.warn_fraction(limit_name)
        return t / f if SPECS[limit_name].kind == FLOOR else t * f


@dataclass(frozen=True)
class LimitsFile:
    """A parsed limits file: its ``version``, ``defaults`` and the per-book configs (defaults merged)."""

    version: str
    source: str
    defaults: LimitsConfig
    books: tuple[LimitsConfig, ...]
    #: the ``defaults`` section as written and the RISK_PIPELINE_* environment it was loaded with, so a book
    #: without a section gets its own preset and overrides (see quant/presets.py)
    raw_defaults: Mapping[str, Any] | None = None
    env: Mapping[str, str] | None = None

    @property
    def book_names(self) -> tuple[str, ...]:
        """Books with their own section."""
        return tuple(b.book for b in self.books)

    def for_book(self, book: str) -> LimitsConfig:
        """The config of ``book``; a book without a section gets the defaults (with its preset and environment
        overrides, if any) under its own name."""
        for cfg in self.books:
            if cfg.book == book:
                return cfg
        if self.raw_defaults is None:
            return replace(self.defaults, book=book)
        values, used, problems = _resolve_book(self.source, book, self.raw_defaults, {}, self.env or {})
        if problems:
            raise LimitsConfigError(problems)
        return _make_config(book, self.version, self.source, values, used)


def _resolve_book(
    file: str, book: str, defaults: Mapping[str, Any], section: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], tuple[tuple[str, str], ...], list[LimitsProblem]]:
    """A book's settings: defaults < preset of its risk level < its own section < the environment's drawdown.

    The level: ``RISK_PIPELINE_RISK_LEVEL_<BOOK>``, ``RISK_PIPELINE_RISK_LEVEL``, the section's ``risk_level``,
    the defaults' ``risk_level``. Problems of environment values name the variable as the field and
    ``environment`` as the file.
    """
    over, env_problems = presets.environment_overrides(env, [book] if book != "defaults" else [])
    problems = [LimitsProblem(presets.ENV_SOURCE, p.book, p.field, p.value, p.rule) for p in env_problems]
    level = over.level(book) or section.get("risk_level") or defaults.get("risk_level")
    values: dict[str, Any] = {**defaults}
    if level in presets.LIMITS:
        values |= presets.LIMITS[level]
    values |= section
    values["risk_level"] = level
    used = (
        over.applied(book)
        if book != "defaults"
        else {k: v for k, v in over.used.items() if k in (presets.ENV_RISK_LEVEL, presets.ENV_MAX_DRAWDOWN)}
    )
    drawdown = over.drawdown(book)
    if drawdown is not None:
        values["max_drawdown_pct"] = drawdown
        var = next(k for k in used if k.startswith(presets.ENV_MAX_DRAWDOWN))
        for p in _check_settings(values, file, book):
            problems.append(LimitsProblem(presets.ENV_SOURCE, book, var, used[var], f"{p.field}: {p.rule}"))
    return values, tuple(sorted(used.items())), problems


def _make_config(
    book: str, version: str, file: str, values: Mapping[str, Any], environment: tuple[tuple[str, str], ...] = ()
) -> LimitsConfig:
    kwargs = dict(values)
    if "hedge_strategies" in kwargs:
        kwargs["hedge_strategies"] = tuple(kwargs["hedge_strategies"])
    return LimitsConfig(book=book, version=version, source=file, environment=environment, **kwargs)


def load_limits(source: str | os.PathLike[str] | Mapping[str, Any], env: Mapping[str, str] | None = None) -> LimitsFile:
    """Read and validate a limits file (a path to YAML, or the already-parsed mapping).

    Schema: ``version`` (required), ``defaults`` (required; every limit name present, ``null`` to
    disable), ``books`` (optional; book name -> overrides of any setting; ``risk_level`` names a preset
    of quant/presets.py applied beneath the section's own values). ``env`` (default ``os.environ``) gives
    the deployment overrides ``RISK_PIPELINE_RISK_LEVEL[_<BOOK>]`` and ``RISK_PIPELINE_MAX_DRAWDOWN_PCT[_<BOOK>]``.
    Raises ``LimitsConfigError`` listing every problem (file, book, field, value, rule; for an environment
    value the file is ``environment`` and the field the variable).
    """
    env = {k: v for k, v in (os.environ if env is None else env).items() if k.startswith("RISK_PIPELINE_")}
    if isinstance(source, Mapping):
        file, raw = "<dict>", source
    else:
        file = str(Path(source))
        try:
            raw = yaml.safe_load(Path(source).read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise LimitsConfigError([LimitsProblem(file, "-", "-", None, f"invalid YAML: {exc}")]) from exc
    problems: list[LimitsProblem] = []
    if not isinstance(raw, Mapping):
        raise LimitsConfigError([LimitsProblem(file, "-", "-", raw, "the file must hold a mapping")])
    for key in raw:
        if key not in ("version", "defaults", "books"):
            problems.append(LimitsProblem(file, "-", str(key), raw[key], "unknown top-level key"))
    version = raw.get("version")
    if version is None or not (isinstance(version, str | int | float) and str(version).strip()):
        problems.append(LimitsProblem(file, "-", "version", version, "required: a non-empty version"))
    defaults = raw.get("defaults")
    if not isinstance(defaults, Mapping):
        problems.append(LimitsProblem(file, "defaults", "defaults", defaults, "required: a mapping"))
        defaults = {}
    else:
        for name in LIMIT_NAMES:
            if name not in defaults:
                problems.append(
                    LimitsProblem(file, "defaults", name, "<missing>", "required in defaults (null to disable)")
                )
        problems += _check_settings(defaults, file, "defaults")
    books = raw.get("books") or {}
    if not isinstance(books, Mapping):
        problems.append(LimitsProblem(file, "books", "books", books, "must map book names to mappings"))
        books = {}
    merged: dict[str, dict[str, Any]] = {}
    used: dict[str, tuple[tuple[str, str], ...]] = {}
    for book, overrides in books.items():
        if not isinstance(overrides, Mapping):
            problems.append(LimitsProblem(file, str(book), "-", overrides, "must be a mapping"))
            continue
        own = _check_settings(overrides, file, str(book))
        problems += own
        if not own:
            values, used[str(book)], env_problems = _resolve_book(file, str(book), defaults, overrides, env)
            problems += env_problems or _check_settings(values, file, str(book))
            merged[str(book)] = values
    base, used["defaults"], env_problems = _resolve_book(file, "defaults", defaults, {}, env)
    problems += env_problems
    if problems:
        raise LimitsConfigError(list(dict.fromkeys(problems)))  # a global variable's problem once
    ver = str(version)
    return LimitsFile(
        version=ver,
        source=file,
        defaults=_make_config("defaults", ver, file, base, used["defaults"]),
        books=tuple(_make_config(b, ver, file, v, used[b]) for b, v in merged.items()),
        raw_defaults=dict(defaults),
        env=env,
    )


# --------------------------------------------------------------------------------------------------
# Exposures
# --------------------------------------------------------------------------------------------------

_STR_FIELDS = ("position_id", "symbol", "sector", "strategy")
_FLOAT_FIELDS = (
    "quantity",
    "multiplier",
    "spot",
    "unit_price",
    "delta",
    "gamma",
    "vega",
    "theta_per_day",
)


@dataclass(frozen=True, eq=False, kw_only=True)
class BookExposure:
    """A book as per-position arrays (length n) plus book-level inputs.

    Per unit (one option on one share, or one share): ``unit_price``, ``delta``, ``gamma``, ``vega``
    (per 1.00 of vol), ``theta_per_day``. ``quantity`` is signed (> 0 long) in contracts or shares.
    ``var_99_1d`` / ``es_975_1d`` are ``None`` until the risk layer has produced them.
    ``correlation`` is a symmetric matrix over ``correlation_symbols`` (optional).
    ``is_option`` defaults to all False and ``strategy`` to empty strings.
    """

    position_id: ArrayLike
    symbol: ArrayLike
    sector: ArrayLike
    quantity: ArrayLike
    multiplier: ArrayLike
    spot: ArrayLike
    unit_price: ArrayLike
    delta: ArrayLike
    gamma: ArrayLike
    vega: ArrayLike
    theta_per_day: ArrayLike
    nav: float
    peak_nav: float
    daily_pnl: float
    is_option: ArrayLike | None = None
    strategy: ArrayLike | None = None
    var_99_1d: float | None = None
    es_975_1d: float | None = None
    correlation: ArrayLike | None = None
    correlation_symbols: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = np.asarray(self.quantity).size
        if self.strategy is None:
            object.__setattr__(self, "strategy", np.full(n, "", dtype=str))
        if self.is_option is None:
            object.__setattr__(self, "is_option", np.zeros(n, dtype=bool))
        for name in _STR_FIELDS:
            object.__setattr__(self, name, np.asarray(getattr(self, name)).astype(str).ravel())
        for name in _FLOAT_FIELDS:
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64).ravel())
        object.__setattr__(self, "is_option", np.asarray(self.is_option, dtype=bool).ravel())
        for name in (*_STR_FIELDS, *_FLOAT_FIELDS, "is_option"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have {n} entries like quantity")
        if len(set(self.position_id.tolist())) != n:
            raise ValueError("position_id must be unique")
        for name in ("nav", "peak_nav", "daily_pnl"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.correlation is not None:
            corr = np.asarray(self.correlation, dtype=np.float64)
            syms = tuple(str(s) for s in (self.correlation_symbols or ()))
            if corr.shape != (len(syms), len(syms)):
                raise ValueError("correlation must be square over correlation_symbols")
            object.__setattr__(self, "correlation", corr)
            object.__setattr__(self, "correlation_symbols", syms)

    @property
    def n(self) -> int:
        """Number of positions."""
        return int(self.quantity.size)

    @cached_property
    def units(self) -> FloatArray:
        """``quantity * multiplier`` (shares of underlying per position)."""
        return self.quantity * self.multiplier

    @cached_property
    def delta_shares(self) -> FloatArray:
        """``quantity * multiplier * delta``."""
        return self.units * self.delta

    @cached_property
    def dollar_delta(self) -> FloatArray:
        """``delta_shares * spot``."""
        return self.delta_shares * self.spot

    @cached_property
    def gamma_shares(self) -> FloatArray:
        """``quantity * multiplier * gamma`` (shares per 1.00 of spot)."""
        return self.units * self.gamma

    @cached_property
    def vega_per_vol_point(self) -> FloatArray:
        """``quantity * multiplier * vega / 100``."""
        return self.units * self.vega / 100.0

    @cached_property
    def position_theta_per_day(self) -> FloatArray:
        """``quantity * multiplier * theta_per_day`` (money per calendar day)."""
        return self.units * self.theta_per_day

    @cached_property
    def market_value(self) -> FloatArray:
        """``quantity * multiplier * unit_price``."""
        return self.units * self.unit_price

    @cached_property
    def gross(self) -> FloatArray:
        """Per-position gross exposure ``|dollar_delta|`` (delta-adjusted notional)."""
        return np.abs(self.dollar_delta)

    @property
    def gross_exposure(self) -> float:
        """Book gross exposure: the sum of ``gross`` over held positions."""
        return float(self.gross[self.quantity != 0.0].sum())

    @property
    def drawdown_pct(self) -> float:
        """``drawdown_pct(nav, peak_nav)``."""
        return drawdown_pct(self.nav, self.peak_nav)

    @property
    def daily_loss_pct(self) -> float:
        """``daily_loss_pct(nav, daily_pnl)``."""
        return daily_loss_pct(self.nav, self.daily_pnl)

    def with_quantity(self, quantity: ArrayLike) -> BookExposure:
        """The same book with new quantities (book-level inputs unchanged)."""
        return replace(self, quantity=np.asarray(quantity, dtype=np.float64))


def drawdown_pct(nav: float, peak_nav: float) -> float:
    """``max(0, 1 - nav / peak_nav)``; NaN when either is missing or not positive."""
    if not (math.isfinite(nav) and math.isfinite(peak_nav)) or nav <= 0.0 or peak_nav <= 0.0:
        return math.nan
    return max(0.0, 1.0 - nav / peak_nav)


def daily_loss_pct(nav: float, daily_pnl: float) -> float:
    """Loss as a fraction of start-of-day NAV ``max(0, -pnl) / (nav - pnl)``; NaN when undefined."""
    start = nav - daily_pnl
    if not (math.isfinite(nav) and math.isfinite(daily_pnl)) or start <= 0.0:
        return math.nan
    return max(0.0, -daily_pnl) / start


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitResult:
    """One ``limit_status`` row: value against threshold and warning level, and what drives it.

    ``drivers`` names the positions, underlyings, sectors or pair behind the value (for a grouped
    limit every group above its warning level, largest first, else the largest one). ``note``
    explains NOT_AVAILABLE and special cases.
    """

    limit_name: str
    value: float
    threshold: float
    warn_threshold: float
    utilization: float
    status: str
    kind: str = CAP
    scope: str = "book"
    unit: str = ""
    drivers: tuple[str, ...] = ()
    note: str = ""


def group_codes(labels: NDArray[np.str_]) -> tuple[NDArray[np.str_], IntArray]:
    """Distinct labels (sorted) and each entry's index into them."""
    keys, inverse = np.unique(labels, return_inverse=True)
    return keys, inverse.astype(np.intp).ravel()


def group_sum(inverse: IntArray, values: FloatArray, n_groups: int) -> FloatArray:
    """Sum of ``values`` per group (NaN propagates into its group)."""
    return np.bincount(inverse, weights=values, minlength=n_groups).astype(np.float64)


@dataclass(frozen=True, eq=False)
class BookMetrics:
    """Aggregates of the held positions (``quantity != 0``), shared by limits, reductions, pre-trade.

    ``held`` indexes the positions; ``sym_inv``/``sec_inv`` map each held position to ``symbols`` /
    ``sectors``. ``denominator`` is the concentration denominator ``max(gross, floor)``.
    """

    held: IntArray
    symbols: NDArray[np.str_]
    sym_inv: IntArray
    sectors: NDArray[np.str_]
    sec_inv: IntArray
    net_delta_by_symbol: FloatArray
    gamma_by_symbol: FloatArray
    gross_by_symbol: FloatArray
    gross_by_sector: FloatArray
    net_dollar_delta: float
    vega: float
    theta_loss: float
    gross: float
    gross_floor: float

    @property
    def denominator(self) -> float:
        """Concentration denominator ``max(gross, gross_floor)``."""
        return max(self.gross, self.gross_floor) if self.gross_floor > 0.0 else self.gross


def concentration_floor(nav: float, config: LimitsConfig) -> float:
    """``concentration_min_gross_pct_nav * nav`` (0 when the setting is 0; NaN for a bad NAV)."""
    pct = config.concentration_min_gross_pct_nav
    if pct == 0.0:
        return 0.0
    return pct * nav if math.isfinite(nav) and nav > 0.0 else math.nan


def book_metrics(exposure: BookExposure, config: LimitsConfig) -> BookMetrics:
    """Group the held positions and sum their exposures (vectorized, no loop over positions)."""
    held = np.flatnonzero(exposure.quantity != 0.0)
    symbols, sym_inv = group_codes(exposure.symbol[held])
    sectors, sec_inv = group_codes(exposure.sector[held])
    gross = exposure.gross[held]
    return BookMetrics(
        held=held,
        symbols=symbols,
        sym_inv=sym_inv,
        sectors=sectors,
        sec_inv=sec_inv,
        net_delta_by_symbol=group_sum(sym_inv, exposure.delta_shares[held], symbols.size),
        gamma_by_symbol=group_sum(sym_inv, exposure.gamma_shares[held], symbols.size),
        gross_by_symbol=group_sum(sym_inv, gross, symbols.size),
        gross_by_sector=group_sum(sec_inv, gross, sectors.size),
        net_dollar_delta=float(exposure.dollar_delta[held].sum()),
        vega=float(exposure.vega_per_vol_point[held].sum()),
        theta_loss=float(-exposure.position_theta_per_day[held].sum()),
        gross=float(gross.sum()),
        gross_floor=concentration_floor(exposure.nav, config),
    )


def limit_status(value: float, threshold: float, warn_threshold: float, kind: str = CAP) -> str:
    """OK / WARN / BREACH of ``value`` (NOT_AVAILABLE when not finite); see the module docstring."""
    if not math.isfinite(value):
        return NOT_AVAILABLE
    if kind == FLOOR:
        return BREACH if value < threshold else WARN if value < warn_threshold else OK
    return BREACH if value > threshold else WARN if value > warn_threshold else OK


def utilization(value: float, threshold: float, kind: str = CAP) -> float:
    """``value / threshold`` for a cap, ``threshold / value`` for a floor (NaN when not finite)."""
    if not math.isfinite(value):
        return math.nan
    if kind == FLOOR:
        return math.inf if value == 0.0 else threshold / value
    return value / threshold


def make_result(
    config: LimitsConfig, name: str, value: float, drivers: tuple[str, ...] = (), note: str = ""
) -> LimitResult | None:
    """The row of limit ``name`` at ``value`` (``None`` when the limit is disabled)."""
    spec = SPECS[name]
    threshold = config.threshold(name)
    if threshold is None:
        return None
    warn = config.warn_threshold(name)
    assert warn is not None
    value = float(value)
    return LimitResult(
        limit_name=name,
        value=value,
        threshold=threshold,
        warn_threshold=warn,
        utilization=utilization(value, threshold, spec.kind),
        status=limit_status(value, threshold, warn, spec.kind),
        kind=spec.kind,
        scope=spec.scope,
        unit=spec.unit,
        drivers=drivers if math.isfinite(value) else (),
        note=note,
    )


def _bad_ids(exposure: BookExposure, held: IntArray, *arrays: FloatArray) -> str:
    bad = np.zeros(held.size, dtype=bool)
    for a in arrays:
        bad |= ~np.isfinite(a[held])
    ids = exposure.position_id[held[bad]]
    if ids.size == 0:
        return ""
    more = f" and {ids.size - 5} more" if ids.size > 5 else ""
    return f"missing (NaN) inputs at positions {', '.join(ids[:5].tolist())}{more}"


def _group_drivers(keys: NDArray[np.str_], values: FloatArray, warn: float, limit: int = 10) -> tuple[str, ...]:
    """Groups with ``values > warn`` (largest first, at most ``limit``), else the largest group."""
    if keys.size == 0 or not np.all(np.isfinite(values)):
        return ()
    order = np.argsort(-values, kind="stable")
    above = order[values[order] > warn][:limit]
    return tuple(keys[above if above.size else order[:1]].tolist())


def _max_abs(values: FloatArray) -> float:
    return float(np.max(np.abs(values))) if values.size else 0.0


def _top_contributors(ids: NDArray[np.str_], contrib: FloatArray, sign: float, k: int = 3) -> tuple[str, ...]:
    """The ``k`` positions adding most to a net value of sign ``sign``."""
    if ids.size == 0 or sign == 0.0 or not np.all(np.isfinite(contrib)):
        return ()
    signed = contrib * sign
    order = np.argsort(-signed, kind="stable")[:k]
    order = order[signed[order] > 0.0]
    return tuple(ids[order].tolist())


def correlation_value(exposure: BookExposure, symbols: NDArray[np.str_]) -> tuple[float, tuple[str, ...], str]:
    """Largest correlation between two of ``symbols``, the pair, and a note (NaN when unavailable)."""
    if symbols.size < 2:
        return 0.0, (), "fewer than two held underlyings: no pairs"
    if exposure.correlation is None or exposure.correlation_symbols is None:
        return math.nan, (), "no correlation matrix given"
    index = {s: i for i, s in enumerate(exposure.correlation_symbols)}
    missing = [s for s in symbols.tolist() if s not in index]
    if missing:
        return math.nan, (), f"correlation matrix lacks held underlyings {', '.join(missing[:5])}"
    idx = np.array([index[s] for s in symbols.tolist()], dtype=np.intp)
    sub = exposure.correlation[np.ix_(idx, idx)]
    iu, ju = np.triu_indices(idx.size, k=1)
    pairs = sub[iu, ju]
    if not np.all(np.isfinite(pairs)):
        return math.nan, (), "correlation matrix has NaN entries among held underlyings"
    k = int(np.argmax(pairs))
    return float(pairs[k]), (f"{symbols[iu[k]]}/{symbols[ju[k]]}",), ""


def evaluate_limits(
    exposure: BookExposure, config: LimitsConfig, metrics: BookMetrics | None = None
) -> list[LimitResult]:
    """One ``LimitResult`` per enabled limit, in ``LIMIT_NAMES`` order (see the module docstring)."""
    m = book_metrics(exposure, config) if metrics is None else metrics
    e, held = exposure, m.held
    ids = e.position_id[held]
    rows: list[LimitResult | None] = []

    def add(name: str, value: float, drivers: tuple[str, ...] = (), note: str = "") -> None:
        if not math.isfinite(value) and not note:
            note = "input not available"
        rows.append(make_result(config, name, value, drivers, note))

    def warn(name: str) -> float:
        w = config.warn_threshold(name)
        return math.inf if w is None else w

    abs_delta = np.abs(m.net_delta_by_symbol)
    add(
        "max_abs_net_delta_shares",
        _max_abs(m.net_delta_by_symbol),
        _group_drivers(m.symbols, abs_delta, warn("max_abs_net_delta_shares")),
        _bad_ids(e, held, e.quantity, e.multiplier, e.delta),
    )
    add(
        "max_abs_net_dollar_delta",
        abs(m.net_dollar_delta),
        _top_contributors(ids, e.dollar_delta[held], math.copysign(1.0, m.net_dollar_delta)),
        _bad_ids(e, held, e.quantity, e.multiplier, e.delta, e.spot),
    )
    add(
        "max_abs_gamma_shares",
        _max_abs(m.gamma_by_symbol),
        _group_drivers(m.symbols, np.abs(m.gamma_by_symbol), warn("max_abs_gamma_shares")),
        _bad_ids(e, held, e.quantity, e.multiplier, e.gamma),
    )
    add(
        "max_abs_vega_per_vol_point",
        abs(m.vega),
        _top_contributors(ids, e.vega_per_vol_point[held], math.copysign(1.0, m.vega)),
        _bad_ids(e, held, e.quantity, e.multiplier, e.vega),
    )
    add(
        "max_theta_per_day_loss",
        m.theta_loss,
        _top_contributors(ids, -e.position_theta_per_day[held], 1.0),
        _bad_ids(e, held, e.quantity, e.multiplier, e.theta_per_day),
    )
    for name, risk in (("max_var_99_1d", e.var_99_1d), ("max_es_975_1d", e.es_975_1d)):
        if risk is None:
            add(name, math.nan, (), "not produced by the risk layer (None)")
        else:
            add(name, float(risk))
    denom = m.denominator
    gross_note = _bad_ids(e, held, e.quantity, e.multiplier, e.delta, e.spot)
    if not math.isfinite(denom):
        gross_note = gross_note or "NAV not available for the concentration floor"

    def share(values: FloatArray) -> FloatArray:
        return values / denom if denom > 0.0 else np.zeros_like(values)

    pos_share = share(e.gross[held])
    sym_share = share(m.gross_by_symbol)
    sec_share = share(m.gross_by_sector)
    for name, keys, values in (
        ("max_position_pct_gross", ids, pos_share),
        ("max_underlying_pct_gross", m.symbols, sym_share),
        ("max_sector_pct_gross", m.sectors, sec_share),
    ):
        value = float(values.max()) if values.size else 0.0
        if not math.isfinite(denom):
            value = math.nan
        add(name, value, _group_drivers(keys, values, warn(name)), gross_note)
    count_note = _bad_ids(e, held, e.quantity)
    count = math.nan if count_note else float(m.symbols.size)
    add("min_positions", count, (), count_note)
    add("max_positions", count, (), count_note)
    corr, pair, note = correlation_value(e, m.symbols)
    add("max_pairwise_correlation", corr, pair, note)
    add(
        "max_daily_loss_pct_nav",
        e.daily_loss_pct,
        (),
        "" if math.isfinite(e.daily_loss_pct) else "NAV or P&L missing",
    )
    add(
        "max_drawdown_pct",
        e.drawdown_pct,
        (),
        "" if math.isfinite(e.drawdown_pct) else "NAV or peak NAV missing",
    )
    return [r for r in rows if r is not None]


def results_by_name(results: list[LimitResult]) -> dict[str, LimitResult]:
    """``{limit_name: result}``."""
    return {r.limit_name: r for r in results}
