"""Data-quality suites for the raw tables, run with Great Expectations before anything is published.

Each raw table has a suite of named rules (versioned here, in code). ``validate`` coerces a source
frame to the contract's types (an unparseable value fails rule ``types`` for that row), adds the
derived columns some rules need (daily return, snapshot age, UTC flag), runs the table's Great
Expectations suite on it and returns a ``ValidationReport``: per rule, pass/fail, failing rows and
sample rows; the typed frame to publish when everything passed; and quarantine rows otherwise.

Row numbers are the source's own (1 = first data row of the file), so an error reads
"file market_prices/2026-11-20.csv row 3: rule prices_positive (open, high, low, close > 0)".
Nothing is repaired or dropped here: the caller publishes all rows or none.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from risk_pipeline.contracts import Table, table

SUITE_VERSION = "2026.11.1"

#: Rules every raw table has, in evaluation order, before the table's own rules.
COMMON_RULES = ("schema", "types", "not_null_keys", "unique_keys", "row_count_in_range")

EVENT_TYPES = ("earnings", "fomc", "cpi", "ppi", "nfp", "gdp", "opex", "other")
INSTRUMENT_TYPES = ("stock", "etf", "future", "option")


@dataclass(frozen=True)
class QualitySettings:
    """Thresholds of the suites; every one is configurable from the Dagster resource."""

    max_abs_daily_log_return: float = 0.40
    snapshot_max_age_minutes: float = 30.0
    row_count_ranges: Mapping[str, tuple[int, int]] = field(
        default_factory=lambda: {
            "market_prices": (1, 100_000),
            "option_quotes": (1, 2_000_000),
            "rates_curve": (1, 10_000),
            "dividend_yields": (1, 100_000),
            "event_calendar": (1, 1_000_000),
            "positions": (1, 1_000_000),
        }
    )


@dataclass(frozen=True)
class RuleResult:
    """Outcome of one rule: failing row positions (into the validated frame) and what was seen."""

    rule: str
    description: str
    passed: bool
    failing_positions: tuple[int, ...] = ()
    observed: str = ""
    table_level: bool = False

    @property
    def n_failing(self) -> int:
        return len(self.failing_positions)


@dataclass
class ValidationReport:
    """All rule results for one table write, the typed frame and the raw rows."""

    table: str
    partition_key: str
    raw: pd.DataFrame
    typed: pd.DataFrame
    results: list[RuleResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]

    def location(self, position: int) -> str:
        """``file F row N`` for a row position of the frame."""
        file = _cell(self.raw, position, "source_file") or "generated"
        row = _cell(self.raw, position, "source_row")
        row_number = int(row) if row is not None and not _missing(row) else position + 1
        return f"file {file} row {row_number}"

    def sample(self, result: RuleResult, limit: int = 5) -> pd.DataFrame:
        """Up to ``limit`` failing raw rows, with file and row number first."""
        positions = list(result.failing_positions[:limit])
        rows = self.raw.iloc[positions].copy() if positions else self.raw.iloc[:0].copy()
        rows.insert(0, "where", [self.location(p) for p in positions])
        return rows.drop(columns=[c for c in ("source_file", "source_row") if c in rows.columns])

    def message(self) -> str:
        """One line per failed rule naming file, row, rule and reason."""
        lines = [f"{self.table} partition {self.partition_key} blocked by data-quality rules:"]
        for r in self.failed:
            if r.table_level and not r.failing_positions:
                file = _files(self.raw) or "source"
                lines.append(f"- rule {r.rule} ({r.description}) failed for {file}: {r.observed}")
                continue
            where = "; ".join(self.location(p) for p in r.failing_positions[:3])
            more = f" and {r.n_failing - 3} more" if r.n_failing > 3 else ""
            seen = f" ({r.observed})" if r.observed else ""
            lines.append(
                f"- rule {r.rule} ({r.description}) failed on {r.n_failing} rows{seen}: {where}{more}"
            )
        return "\n".join(lines)

    def quarantine_frame(self, asset: str) -> pd.DataFrame:
        """One quarantine row per failing (row, rule); a table-level failure without rows gets row 0."""
        now = pd.Timestamp.now(tz="UTC")
        records: list[dict[str, Any]] = []
        for r in self.failed:
            if not r.failing_positions:
                records.append(
                    {
                        "asset": asset,
                        "partition_key": self.partition_key,
                        "row_number": 0,
                        "check_name": r.rule,
                        "reason": f"{r.description}: {r.observed}",
                        "source_file": _files(self.raw),
                        "row": json.dumps({"observed": r.observed}),
                        "quarantined_at": now,
                    }
                )
                continue
            for p in r.failing_positions:
                row = _cell(self.raw, p, "source_row")
                records.append(
                    {
                        "asset": asset,
                        "partition_key": self.partition_key,
                        "row_number": int(row) if row is not None and not _missing(row) else p + 1,
                        "check_name": r.rule,
                        "reason": r.description + (f": {r.observed}" if r.observed else ""),
                        "source_file": _cell(self.raw, p, "source_file"),
                        "row": _row_json(self.raw, p),
                        "quarantined_at": now,
                    }
                )
        frame = pd.DataFrame.from_records(
            records,
            columns=[
                "asset",
                "partition_key",
                "row_number",
                "check_name",
                "reason",
                "source_file",
                "row",
                "quarantined_at",
            ],
        )
        return frame.drop_duplicates(subset=["row_number", "check_name"]).reset_index(drop=True)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _cell(frame: pd.DataFrame, position: int, column: str) -> Any:
    if column not in frame.columns or position >= len(frame):
        return None
    v = frame[column].iloc[position]
    return None if _missing(v) else v


def _files(frame: pd.DataFrame) -> str | None:
    files: set[str] = set()
    if "source_file" in frame.columns:
        files = {str(f) for f in frame["source_file"] if not _missing(f)}
    if not files:
        files = set(frame.attrs.get("source_files", []))
    return ", ".join(sorted(files)) if files else None


def _row_json(frame: pd.DataFrame, position: int) -> str:
    record = {
        k: v for k, v in frame.iloc[position].to_dict().items() if k not in ("source_file", "source_row")
    }
    return json.dumps(record, default=str, allow_nan=True)


# ---------------------------------------------------------------------- typing
def coerce_types(raw: pd.DataFrame, t: Table) -> tuple[pd.DataFrame, dict[int, list[str]]]:
    """Typed copy of ``raw`` and, per row position, the columns whose value did not parse.

    Missing values stay missing (the not-null rules judge them); a present value that does not
    parse becomes missing in the typed frame and is reported.
    """
    typed = pd.DataFrame(index=raw.index)
    bad: dict[int, list[str]] = {}
    for c in t.columns:
        if c.name not in raw.columns:
            continue
        s = raw[c.name]
        if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
            present = s.notna().to_numpy(bool)
        else:
            present = ~_map_unique(s, lambda v: _missing(v) or (isinstance(v, str) and v.strip() == "")).to_numpy(bool)
        if c.type == "double" or c.type == "bigint":
            conv = pd.to_numeric(s.where(present, None), errors="coerce").astype("float64")
        elif c.type == "date":
            conv = _to_datetime(s.where(present, None), utc=False)
            conv = pd.Series(conv.dt.date.astype(object).where(conv.notna(), None), index=s.index)
        elif c.type == "timestamp":
            conv = _to_datetime(s.where(present, None), utc=True)
        elif c.type == "boolean":
            conv = _map_unique(s, _to_bool)
        else:
            conv = _map_unique(s, lambda v: None if _missing(v) else str(v).strip()).where(present, None)
        failed = present & conv.isna().to_numpy(bool)
        for p in np.flatnonzero(failed):
            bad.setdefault(int(p), []).append(c.name)
        typed[c.name] = conv
    for extra in ("source_file", "source_row"):
        if extra in raw.columns:
            typed[extra] = raw[extra]
    return typed.reset_index(drop=True), bad


def _map_unique(s: pd.Series, f: Callable[[Any], Any]) -> pd.Series:
    """``s.map(f)`` evaluating ``f`` once per distinct value (dates and labels repeat on every row)."""
    try:
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
    except TypeError:  # unhashable values
        return s.map(f)
    values = np.array([f(v) for v in uniques] + [f(None)], dtype=object)
    return pd.Series(values[codes], index=s.index, dtype=object)


def _to_datetime(s: pd.Series, *, utc: bool) -> pd.Series:
    if s.dtype == object or str(s.dtype) in ("str", "string"):
        parsed = _map_unique(s, lambda v: _parse_one(v, utc))
        return pd.to_datetime(parsed, utc=utc)
    return pd.to_datetime(s, errors="coerce", utc=utc)


def _parse_one(v: Any, utc: bool) -> Any:
    if _missing(v):
        return None
    try:
        ts = pd.Timestamp(v)
    except (ValueError, TypeError):
        return None
    if ts is pd.NaT:
        return None
    if utc:
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.tz_localize(None) if ts.tzinfo is not None else ts


def _to_bool(v: Any) -> Any:
    if _missing(v):
        return None
    if isinstance(v, bool | np.bool_):
        return bool(v)
    text = str(v).strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(text)


# ---------------------------------------------------------------------- suites
@dataclass(frozen=True)
class Rule:
    """One named rule: a description and the GX expectations (all must pass) that implement it."""

    name: str
    description: str
    expectations: Callable[[], list[Any]]
    table_level: bool = False


def _gxe() -> Any:
    import great_expectations.expectations as gxe

    return gxe


def _positive(*columns: str) -> Callable[[], list[Any]]:
    return lambda: [
        _gxe().ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True) for c in columns
    ]


def _non_negative(*columns: str) -> Callable[[], list[Any]]:
    return lambda: [_gxe().ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in columns]


def _in_set(column: str, values: tuple[Any, ...]) -> Callable[[], list[Any]]:
    return lambda: [_gxe().ExpectColumnValuesToBeInSet(column=column, value_set=list(values))]


def _a_ge_b(*pairs: tuple[str, str]) -> Callable[[], list[Any]]:
    return lambda: [
        _gxe().ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=True)
        for a, b in pairs
    ]


def _between(column: str, low: float | None, high: float | None) -> Callable[[], list[Any]]:
    return lambda: [_gxe().ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high)]


def table_rules(name: str, settings: QualitySettings) -> list[Rule]:
    """The table's own rules (after the common ones), in evaluation order."""
    max_ret = settings.max_abs_daily_log_return
    max_age = settings.snapshot_max_age_minutes
    rules: dict[str, list[Rule]] = {
        "market_prices": [
            Rule("prices_positive", "open, high, low, close > 0", _positive("open", "high", "low", "close")),
            Rule(
                "ohlc_consistent",
                "low <= min(open, close) <= max(open, close) <= high",
                _a_ge_b(("open", "low"), ("close", "low"), ("high", "open"), ("high", "close")),
            ),
            Rule("volume_non_negative", "volume >= 0", _non_negative("volume")),
            Rule(
                "daily_return_plausible",
                f"|ln(close / previous close)| <= {max_ret} unless event_flag is set",
                _between("_abs_unflagged_log_return", None, max_ret),
            ),
            Rule(
                "date_in_partition",
                "as_of_date inside the partition written",
                _in_set("_in_partition", (True,)),
            ),
        ],
        "option_quotes": [
            Rule("bid_non_negative", "bid >= 0", _non_negative("bid")),
            Rule("bid_le_ask", "bid <= ask (no crossed quotes)", _a_ge_b(("ask", "bid"))),
            Rule("strike_positive", "strike > 0", _positive("strike")),
            Rule("underlying_price_positive", "underlying_price > 0", _positive("underlying_price")),
            Rule("multiplier_positive", "multiplier > 0", _positive("multiplier")),
            Rule("expiry_after_as_of", "expiry after the snapshot date", _in_set("_expiry_after", (True,))),
            Rule("option_type_valid", "option_type in {C, P}", _in_set("option_type", ("C", "P"))),
            Rule(
                "exercise_style_valid",
                "exercise_style in {american, european}",
                _in_set("exercise_style", ("american", "european")),
            ),
            Rule(
                "volume_non_negative",
                "volume >= 0 and open_interest >= 0",
                _non_negative("volume", "open_interest"),
            ),
            Rule(
                "snapshot_fresh",
                f"snapshot as_of within {max_age:g} minutes before the reference time",
                _between("_snapshot_age_minutes", 0.0, max_age),
            ),
            Rule(
                "date_in_partition",
                "as_of_date inside the partition written",
                _in_set("_in_partition", (True,)),
            ),
        ],
        "rates_curve": [
            Rule("tenor_positive", "tenor_days > 0", _positive("tenor_days")),
            Rule("rate_plausible", "-0.05 <= zero_rate <= 0.30", _between("zero_rate", -0.05, 0.30)),
            Rule(
                "date_in_partition",
                "as_of_date inside the partition written",
                _in_set("_in_partition", (True,)),
            ),
        ],
        "dividend_yields": [
            Rule("yield_plausible", "0 <= dividend_yield <= 0.25", _between("dividend_yield", 0.0, 0.25)),
            Rule(
                "date_in_partition",
                "as_of_date inside the partition written",
                _in_set("_in_partition", (True,)),
            ),
        ],
        "event_calendar": [
            Rule("event_type_valid", f"event_type in {set(EVENT_TYPES)}", _in_set("event_type", EVENT_TYPES)),
            Rule(
                "event_time_utc", "event_time parseable and given in UTC", _in_set("_event_time_utc", (True,))
            ),
        ],
        "positions": [
            Rule("quantity_finite", "quantity finite and non-zero", _in_set("_quantity_ok", (True,))),
            Rule("multiplier_positive", "multiplier > 0", _positive("multiplier")),
            Rule(
                "instrument_type_valid",
                f"instrument_type in {set(INSTRUMENT_TYPES)}",
                _in_set("instrument_type", INSTRUMENT_TYPES),
            ),
            Rule(
                "option_terms_present",
                "options have expiry, strike > 0, option_type C/P and exercise_style",
                _in_set("_option_terms_ok", (True,)),
            ),
            Rule(
                "date_in_partition",
                "as_of_date inside the partition written",
                _in_set("_in_partition", (True,)),
            ),
        ],
    }
    return rules[name]


def rule_names(name: str, settings: QualitySettings | None = None) -> list[str]:
    """Every rule of a table's suite, common ones first (used to declare the Dagster checks)."""
    return list(COMMON_RULES) + [r.name for r in table_rules(name, settings or QualitySettings())]


def rule_descriptions(name: str, settings: QualitySettings | None = None) -> dict[str, str]:
    s = settings or QualitySettings()
    lo, hi = s.row_count_ranges[name]
    common = {
        "schema": "every contract column present",
        "types": "every value parses as the contract type",
        "not_null_keys": f"key and required columns not null: {list(_required(table(name)))}",
        "unique_keys": f"key {list(table(name).key)} unique",
        "row_count_in_range": f"row count between {lo} and {hi}",
    }
    return common | {r.name: r.description for r in table_rules(name, s)}


def _required(t: Table) -> tuple[str, ...]:
    return tuple(c.name for c in t.columns if not c.nullable)


# ---------------------------------------------------------------------- derived columns
@dataclass(frozen=True)
class ValidationContext:
    """What the rules compare against: the partition's sessions, reference time, previous closes."""

    partition_key: str
    sessions: tuple[dt.date, ...] = ()
    reference_time: pd.Timestamp | Mapping[dt.date, pd.Timestamp] | None = None
    previous_close: Mapping[str, float] = field(default_factory=dict)


def _derive(name: str, typed: pd.DataFrame, ctx: ValidationContext) -> pd.DataFrame:
    out = typed.copy()
    sessions = set(ctx.sessions)
    if "as_of_date" in out.columns:
        out["_in_partition"] = out["as_of_date"].map(
            lambda d: d is not None and (not sessions or d in sessions)
        )
    if name == "market_prices":
        out["_abs_unflagged_log_return"] = _abs_unflagged_returns(out, ctx.previous_close)
    if name == "option_quotes":
        expiry = pd.to_datetime(out["expiry"])
        as_of_date = pd.to_datetime(out["as_of_date"])
        out["_expiry_after"] = (expiry > as_of_date).fillna(False).astype(bool)
        ref: Any = ctx.reference_time if ctx.reference_time is not None else pd.Timestamp.now(tz="UTC")
        if isinstance(ref, Mapping):
            ref = pd.to_datetime(out["as_of_date"].map(lambda d: ref.get(d)), utc=True)
        age = ((ref - out["as_of"]).dt.total_seconds() / 60.0).to_numpy(float)
        # a row without a reference (session outside the partition) or without as_of is not fresh
        out["_snapshot_age_minutes"] = np.where(np.isnan(age), np.inf, age)
    if name == "event_calendar":
        raw_utc = out.get("_raw_event_time_utc")
        parsed = out["event_time"].notna()
        out["_event_time_utc"] = parsed & (raw_utc if raw_utc is not None else True)
    if name == "positions":
        q = pd.to_numeric(out["quantity"], errors="coerce").to_numpy(float)
        out["_quantity_ok"] = np.isfinite(q) & (q != 0)
        is_option = out["instrument_type"] == "option"
        strike = pd.to_numeric(out["strike"], errors="coerce")
        terms = (
            out["expiry"].notna()
            & (strike > 0).fillna(False)
            & out["option_type"].isin(["C", "P"])
            & out["exercise_style"].isin(["american", "european"])
        )
        out["_option_terms_ok"] = (~is_option | terms).astype(bool)
    return out


def _abs_unflagged_returns(frame: pd.DataFrame, previous_close: Mapping[str, float]) -> pd.Series:
    """|ln(close_t / close_{t-1})| per symbol, 0 where the day carries an event flag or has no history."""
    order = frame.sort_values(["symbol", "as_of_date"], kind="stable")
    prev = order.groupby("symbol", sort=False)["close"].shift(1)
    first = prev.isna()
    prev = prev.where(~first, order["symbol"].map(lambda s: previous_close.get(s, np.nan)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.abs(np.log(order["close"].to_numpy(float) / prev.to_numpy(float)))
    flagged = order["event_flag"].map(lambda v: not _missing(v) and str(v).strip() != "").to_numpy(bool)
    ret = np.where(flagged | ~np.isfinite(prev.to_numpy(float)), 0.0, ret)
    # non-positive or missing closes fail other rules; here they must not also look like a spike
    ret = np.where(np.isfinite(ret), ret, 0.0)
    return pd.Series(ret, index=order.index).reindex(frame.index)


# ---------------------------------------------------------------------- running the suite
_GX_STATE: dict[str, Any] = {}


def _gx_batch_definition(name: str) -> Any:
    """An ephemeral GX context with one pandas dataframe asset per table (built once per process)."""
    if "context" not in _GX_STATE:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        _GX_STATE["context"] = context
        _GX_STATE["source"] = context.data_sources.add_pandas("risk_pipeline_raw")
        _GX_STATE["batches"] = {}
    batches = _GX_STATE["batches"]
    if name not in batches:
        asset = _GX_STATE["source"].add_dataframe_asset(name)
        batches[name] = asset.add_batch_definition_whole_dataframe(f"{name}_whole")
    return batches[name]


def _run_gx(name: str, frame: pd.DataFrame, rules: list[Rule]) -> dict[str, tuple[set[int], list[str]]]:
    """Failing row positions and observations per rule name, from one GX suite validation."""
    import great_expectations as gx

    batch_definition = _gx_batch_definition(name)
    suite = gx.ExpectationSuite(name=f"{name}_suite_v{SUITE_VERSION}")
    for rule in rules:
        for exp in rule.expectations():
            exp.meta = {"rule": rule.name}
            suite.add_expectation(exp)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame.reset_index(drop=True)})
    result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    out: dict[str, tuple[set[int], list[str]]] = {r.name: (set(), []) for r in rules}
    for er in result.results:
        rule = (er.expectation_config.meta or {}).get("rule")
        if rule is None or er.success:
            continue
        rows, notes = out[rule]
        res = er.result or {}
        rows.update(int(i) for i in res.get("unexpected_index_list") or [])
        if er.exception_info and er.exception_info.get("raised_exception"):
            notes.append(f"{er.expectation_config.type}: {er.exception_info.get('exception_message')}")
        elif "observed_value" in res:
            notes.append(f"observed {res['observed_value']}")
        elif not res.get("unexpected_index_list"):
            notes.append(f"{er.expectation_config.type} failed")
    return out


def validate(
    name: str,
    raw: pd.DataFrame,
    ctx: ValidationContext,
    settings: QualitySettings | None = None,
) -> ValidationReport:
    """Run the table's whole suite on a source frame; see the module docstring."""
    settings = settings or QualitySettings()
    t = table(name)
    files = list(raw.attrs.get("source_files", []))
    raw = raw.reset_index(drop=True)
    raw.attrs["source_files"] = files
    descriptions = rule_descriptions(name, settings)
    results: list[RuleResult] = []

    missing = [c for c in t.data_column_names if c not in raw.columns]
    lo, hi = settings.row_count_ranges[name]
    if len(raw) == 0 and missing:
        # an empty or missing file: nothing to type-check, the row count is what failed
        observed = "0 rows (empty or missing file)"
        results.append(
            RuleResult("row_count_in_range", descriptions["row_count_in_range"], False, (), observed, True)
        )
        return ValidationReport(name, ctx.partition_key, raw, raw.iloc[:0], results)
    if missing:
        # later rules cannot be evaluated without the columns; they report nothing
        observed = f"missing columns {missing}"
        all_rows = tuple(range(len(raw)))
        results.append(RuleResult("schema", descriptions["schema"], False, all_rows, observed, True))
        return ValidationReport(name, ctx.partition_key, raw, raw.iloc[:0], results)
    results.append(RuleResult("schema", descriptions["schema"], True))

    typed, bad_types = coerce_types(raw, t)
    if name == "event_calendar":
        typed["_raw_event_time_utc"] = raw["event_time"].map(_given_in_utc).to_numpy(bool)
    results.append(
        RuleResult(
            "types",
            descriptions["types"],
            not bad_types,
            tuple(sorted(bad_types)),
            "; ".join(f"row {p + 1}: {cols}" for p, cols in sorted(bad_types.items())[:3]),
        )
    )
    required = list(_required(t))
    null_rows = typed[required].isna().any(axis=1).to_numpy(bool, copy=True)
    # a value that failed to parse is a types failure, not also a null failure
    for p in bad_types:
        cols = set(bad_types[p])
        if not typed.loc[p, [c for c in required if c not in cols]].isna().any():
            null_rows[p] = False
    results.append(
        RuleResult(
            "not_null_keys",
            descriptions["not_null_keys"],
            not null_rows.any(),
            tuple(np.flatnonzero(null_rows)),
        )
    )
    key = list(t.key)
    dup = typed.duplicated(subset=key, keep=False).to_numpy(bool) & ~typed[key].isna().any(axis=1).to_numpy(
        bool
    )
    results.append(
        RuleResult("unique_keys", descriptions["unique_keys"], not dup.any(), tuple(np.flatnonzero(dup)))
    )
    n = len(typed)
    results.append(
        RuleResult(
            "row_count_in_range",
            descriptions["row_count_in_range"],
            lo <= n <= hi,
            (),
            f"{n} rows",
            True,
        )
    )
    rules = table_rules(name, settings)
    if n:
        derived = _derive(name, typed, ctx)
        failures = _run_gx(name, derived, rules)
        for rule in rules:
            rows, notes = failures[rule.name]
            results.append(
                RuleResult(
                    rule.name, rule.description, not rows and not notes, tuple(sorted(rows)), "; ".join(notes)
                )
            )
    else:
        results += [RuleResult(r.name, r.description, True, (), "no rows") for r in rules]
    typed_out = typed[
        [*t.data_column_names, *[c for c in ("source_file", "source_row") if c in typed.columns]]
    ]
    return ValidationReport(name, ctx.partition_key, raw, typed_out, results)


def _given_in_utc(v: Any) -> bool:
    """True when an event time is a tz-aware UTC timestamp or an ISO string ending in Z / +00:00."""
    if _missing(v):
        return False
    if isinstance(v, pd.Timestamp | dt.datetime):
        return v.tzinfo is not None and v.utcoffset() == dt.timedelta(0)
    text = str(v).strip()
    return text.endswith(("Z", "+00:00", "+0000", "UTC")) and _parse_one(text, True) is not None
