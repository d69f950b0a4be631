"""Schema of every warehouse table: the one place writers, readers, checks and tests take it from.

These are promises to downstream systems (see docs/architecture.md, "Table contracts"). Changing a table here needs a
migration note in the README. Every table also carries ``run_id`` and ``materialized_at``, added by
the warehouse on write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LogicalType = Literal["date", "timestamp", "double", "bigint", "text", "boolean", "json"]

#: Column type per engine. JSON is stored as text on both engines so readers see identical values.
ENGINE_TYPES: dict[str, dict[LogicalType, str]] = {
    "duckdb": {
        "date": "DATE",
        "timestamp": "TIMESTAMPTZ",
        "double": "DOUBLE",
        "bigint": "BIGINT",
        "text": "VARCHAR",
        "boolean": "BOOLEAN",
        "json": "VARCHAR",
    },
    "postgres": {
        "date": "DATE",
        "timestamp": "TIMESTAMPTZ",
        "double": "DOUBLE PRECISION",
        "bigint": "BIGINT",
        "text": "TEXT",
        "boolean": "BOOLEAN",
        "json": "TEXT",
    },
}


@dataclass(frozen=True)
class Column:
    """One column: name, logical type, whether NULL is allowed, and what it means."""

    name: str
    type: LogicalType
    nullable: bool = True
    description: str = ""


@dataclass(frozen=True)
class Table:
    """A warehouse table: columns in order, primary key, and the columns a write replaces by.

    ``partition_by`` names the columns whose values identify one idempotent write: a write of
    rows with ``as_of_date = D`` replaces exactly the rows with ``as_of_date = D``. An empty
    tuple means the whole table is replaced. ``append_only`` tables are never deleted from.
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    partition_by: tuple[str, ...]
    description: str
    append_only: bool = False
    lineage: tuple[Column, ...] = field(default=(), repr=False)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.all_columns]

    @property
    def all_columns(self) -> tuple[Column, ...]:
        return self.columns + LINEAGE_COLUMNS

    @property
    def data_column_names(self) -> list[str]:
        """Columns a writer supplies (everything except run_id and materialized_at)."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.all_columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name!r}")


LINEAGE_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "text", False, "Dagster run id (or CLI run id) that wrote the row"),
    Column("materialized_at", "timestamp", False, "UTC time the row was written"),
)


def _c(name: str, type_: LogicalType, nullable: bool = True, description: str = "") -> Column:
    return Column(name, type_, nullable, description)


MARKET_PRICES = Table(
    name="market_prices",
    description="Daily OHLCV bars per symbol (adjusted for nothing: raw exchange prices).",
    key=("as_of_date", "symbol"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False, "Trading session date (exchange calendar XNYS)"),
        _c("symbol", "text", False),
        _c("open", "double", False),
        _c("high", "double", False),
        _c("low", "double", False),
        _c("close", "double", False),
        _c("volume", "double", False, "Shares traded"),
        _c("event_flag", "text", True, "Known event on the day (earnings, fomc, cpi): large move expected"),
        _c("source", "text", False, "Source name and file or dataset the row came from"),
    ),
)

OPTION_QUOTES = Table(
    name="option_quotes",
    description="Option chain snapshots; several snapshots a day are kept apart by as_of.",
    key=("as_of", "underlying", "expiry", "strike", "option_type"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Snapshot time (UTC)"),
        _c("as_of_date", "date", False, "Trading session date of the snapshot"),
        _c("underlying", "text", False),
        _c("expiry", "date", False),
        _c("strike", "double", False),
        _c("option_type", "text", False, "C or P"),
        _c("bid", "double", False),
        _c("ask", "double", False),
        _c("last", "double", True),
        _c("volume", "double", False),
        _c("open_interest", "double", False),
        _c("underlying_price", "double", False, "Underlying mid at the snapshot time"),
        _c("exercise_style", "text", False, "american or european"),
        _c("multiplier", "double", False, "Shares per contract"),
        _c("source", "text", False),
    ),
)

RATES_CURVE = Table(
    name="rates_curve",
    description="Risk-free zero curve, continuously compounded, per tenor in calendar days.",
    key=("as_of_date", "tenor_days"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False),
        _c("tenor_days", "bigint", False),
        _c("zero_rate", "double", False, "Continuously compounded, decimal (0.045)"),
        _c("source", "text", False),
    ),
)

DIVIDEND_YIELDS = Table(
    name="dividend_yields",
    description="Continuous dividend yield per symbol.",
    key=("as_of_date", "symbol"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False),
        _c("symbol", "text", False),
        _c("dividend_yield", "double", False, "Continuous, decimal (0.015)"),
        _c("source", "text", False),
    ),
)

EVENT_CALENDAR = Table(
    name="event_calendar",
    description="Scheduled events: earnings per symbol, FOMC and CPI market-wide.",
    key=("event_id",),
    partition_by=(),
    columns=(
        _c("event_id", "text", False),
        _c("event_type", "text", False, "earnings, fomc, cpi, ..."),
        _c("symbol", "text", True, "NULL = market-wide"),
        _c("event_time", "timestamp", False, "UTC"),
        _c("source", "text", False),
        _c("notes", "text", True),
    ),
)

POSITIONS = Table(
    name="positions",
    description="Positions per book at the start of the session.",
    key=("as_of_date", "book", "position_id"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False),
        _c("book", "text", False),
        _c("position_id", "text", False),
        _c("instrument_type", "text", False, "stock, etf, future, option"),
        _c("symbol", "text", False, "Underlying symbol (the stock itself for a stock row)"),
        _c("expiry", "date", True),
        _c("strike", "double", True),
        _c("option_type", "text", True, "C or P for options"),
        _c("exercise_style", "text", True, "american or european for options"),
        _c("quantity", "double", False, "Contracts or shares; > 0 long"),
        _c("multiplier", "double", False, "Shares per contract (1 for stock)"),
        _c("cost_basis", "double", True, "Price paid per unit (per share / per option share)"),
        _c("strategy", "text", False),
        _c("sector", "text", True),
        _c("source", "text", False),
    ),
)

QUARANTINE = Table(
    name="quarantine",
    description="Input rows that failed a data-quality rule, with the rule and reason. Nothing is dropped.",
    key=("run_id", "asset", "row_number", "check_name"),
    partition_by=("run_id", "asset", "partition_key"),
    columns=(
        _c("asset", "text", False, "Asset (table) the row was meant for"),
        _c("partition_key", "text", False, "Partition of the write that was blocked"),
        _c("row_number", "bigint", False, "Row number in the source file (1 = first data row)"),
        _c("check_name", "text", False),
        _c("reason", "text", False),
        _c("source_file", "text", True),
        _c("row", "json", False, "The row as read, JSON"),
        _c("quarantined_at", "timestamp", False),
    ),
)

IMPLIED_VOLS = Table(
    name="implied_vols",
    description="Implied volatility per quote, with every input used to compute it.",
    key=("as_of", "underlying", "expiry", "strike", "option_type"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("underlying", "text", False),
        _c("expiry", "date", False),
        _c("strike", "double", False),
        _c("option_type", "text", False),
        _c("bid", "double", False),
        _c("ask", "double", False),
        _c("mid", "double", False),
        _c("spot", "double", False),
        _c("forward", "double", False),
        _c("time_to_expiry_years", "double", False),
        _c("rate", "double", False),
        _c("dividend_yield", "double", False),
        _c("exercise_style", "text", False),
        _c("model", "text", False, "Pricing model inverted"),
        _c("implied_vol", "double", True, "NULL when status is not OK"),
        _c("status", "text", False),
    ),
)

VOL_SURFACE = Table(
    name="vol_surface",
    description="Fitted raw-SVI slice per underlying and expiry, with fit quality and arbitrage flags.",
    key=("as_of", "underlying", "expiry"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("underlying", "text", False),
        _c("expiry", "date", False),
        _c("time_to_expiry_years", "double", False),
        _c("forward", "double", False),
        _c("model", "text", False),
        _c("svi_a", "double", False),
        _c("svi_b", "double", False),
        _c("svi_rho", "double", False),
        _c("svi_m", "double", False),
        _c("svi_sigma", "double", False),
        _c("rmse_vol_points", "double", False),
        _c("n_quotes", "bigint", False),
        _c("butterfly_arbitrage_free", "boolean", False),
        _c(
            "calendar_arbitrage_free",
            "boolean",
            False,
            "Total variance non-decreasing against both neighbouring expiries at every point of the stored grid",
        ),
        _c("min_durrleman_g", "double", False),
        _c("min_quoted_log_moneyness", "double", True, "Quoted ln(K/F) range the slice was fitted on"),
        _c("max_quoted_log_moneyness", "double", True),
        _c(
            "calendar_arbitrage_free_quoted",
            "boolean",
            True,
            "The calendar check only where both neighbouring slices have quotes (no extrapolated wings)",
        ),
        _c("min_durrleman_g_quoted", "double", True, "Minimum of g(k) over the quoted range only"),
    ),
)

VOL_SURFACE_GRID = Table(
    name="vol_surface_grid",
    description="The fitted surface on a fixed log-moneyness grid per expiry.",
    key=("as_of", "underlying", "expiry", "log_moneyness"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("underlying", "text", False),
        _c("expiry", "date", False),
        _c("log_moneyness", "double", False, "ln(K / F)"),
        _c("time_to_expiry_years", "double", False),
        _c("implied_vol", "double", False),
        _c("total_variance", "double", False),
    ),
)

VOL_FORECASTS = Table(
    name="vol_forecasts",
    description="Annualized volatility forecasts per symbol, model and horizon with out-of-sample loss.",
    key=("as_of_date", "symbol", "model", "horizon_days"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False),
        _c("symbol", "text", False),
        _c("model", "text", False),
        _c("horizon_days", "bigint", False),
        _c("annualized_vol", "double", False),
        _c("oos_loss", "double", True, "Out-of-sample QLIKE"),
        _c("oos_mse", "double", True),
        _c("n_oos", "bigint", True),
        _c("selected", "boolean", False, "Used downstream"),
        _c("selection_reason", "text", True),
    ),
)


ATM_VOL_HISTORY = Table(
    name="atm_vol_history",
    description=(
        "Closing constant-maturity ATM implied vol per underlying and session: the implied-vol risk factor of "
        "historical and Monte Carlo VaR. At-the-forward vol of the two expiries bracketing the tenor (OTM mids, "
        "linear in log-moneyness), interpolated in total variance."
    ),
    key=("as_of_date", "symbol"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False),
        _c("symbol", "text", False),
        _c("as_of", "timestamp", False, "Option snapshot used (the session's last)"),
        _c("tenor_days", "bigint", False, "Calendar days"),
        _c("atm_vol", "double", False, "Annualized, at the forward, at tenor_days"),
        _c("spot", "double", False),
        _c("near_expiry", "date", True, "Expiry at or before the tenor (NULL if none)"),
        _c("near_time_years", "double", True),
        _c("near_atm_vol", "double", True),
        _c("far_expiry", "date", True, "Expiry after the tenor (NULL if none)"),
        _c("far_time_years", "double", True),
        _c("far_atm_vol", "double", True),
        _c("extrapolated", "boolean", False, "Only one side of the tenor listed: that expiry's vol"),
        _c("quotes_used", "bigint", False, "Quotes of the two expiries with a valid implied vol"),
        _c("method", "text", False),
        _c("source", "text", False),
    ),
)


POSITION_GREEKS = Table(
    name="position_greeks",
    description=(
        "Every position valued off the vol surface with every input on the row. Position-level "
        "units: delta in shares, dollar_gamma_1pct per 1 % move, vega per vol point, theta per "
        "calendar day, rho per 1 % of rate; vanna (d delta / d vol, shares per 1.00 vol), volga "
        "(d vega / d vol, per 1.00 vol squared) and charm (d delta / d time, shares per year) scaled "
        "by quantity x multiplier."
    ),
    key=("as_of", "book", "position_id"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used"),
        _c("as_of_date", "date", False),
        _c("book", "text", False),
        _c("position_id", "text", False),
        _c("symbol", "text", False),
        _c("instrument_type", "text", False),
        _c("option_type", "text", True),
        _c("exercise_style", "text", True),
        _c("expiry", "date", True),
        _c("quantity", "double", False),
        _c("multiplier", "double", False),
        _c("spot", "double", False, "Underlying price at as_of"),
        _c("strike", "double", True),
        _c("time_to_expiry_years", "double", True),
        _c("implied_vol", "double", True, "Vol from the surface at (expiry, strike)"),
        _c(
            "vol_model",
            "text",
            True,
            "Surface and sticky mode the vol came from; ends in '; expiry not listed: interpolated ...' or "
            "'...: extrapolated ...' when the option's expiry has no fitted slice",
        ),
        _c("rate", "double", True),
        _c("dividend_yield", "double", True),
        _c("pricing_model", "text", False),
        _c("price", "double", False, "Per unit of underlying (per share)"),
        _c("market_value", "double", False),
        _c("delta", "double", False, "Shares of the underlying"),
        _c("dollar_delta", "double", False),
        _c("gamma", "double", False, "Shares per 1.00 of spot"),
        _c("dollar_gamma_1pct", "double", False),
        _c("vega_per_vol_point", "double", False),
        _c("theta_per_day", "double", False),
        _c("rho_per_pct", "double", False),
        _c("vanna", "double", False),
        _c("volga", "double", False),
        _c("charm", "double", False),
        _c("beta", "double", True, "Beta to the index, rolling regression of daily log returns"),
        _c("beta_weighted_delta", "double", True, "Index-equivalent dollar delta: dollar_delta x beta"),
        _c("expiry_bucket", "text", False, "0-7d, 8-30d, 31-90d, 91d+ (stock: none)"),
        _c("strategy", "text", False),
        _c("sector", "text", True),
    ),
)

PORTFOLIO_GREEKS = Table(
    name="portfolio_greeks",
    description="Book totals and splits by underlying, expiry bucket and strategy; each split sums to the total.",
    key=("as_of", "book", "scope", "scope_value"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("as_of_date", "date", False),
        _c("book", "text", False),
        _c("scope", "text", False, "total, underlying, expiry_bucket, strategy"),
        _c("scope_value", "text", False, "'all' for total"),
        _c("delta", "double", False),
        _c("dollar_delta", "double", False),
        _c("gamma", "double", False),
        _c("dollar_gamma_1pct", "double", False),
        _c("vega_per_vol_point", "double", False),
        _c("theta_per_day", "double", False),
        _c("rho_per_pct", "double", False),
        _c("beta_weighted_delta", "double", False),
        _c("market_value", "double", False),
        _c("positions_count", "bigint", False),
    ),
)

LIMIT_STATUS = Table(
    name="limit_status",
    description="One row per limit and book: value against cap and warning level.",
    key=("as_of", "book", "limit_name"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("book", "text", False),
        _c("limit_name", "text", False),
        _c("value", "double", True),
        _c("threshold", "double", True),
        _c("warn_threshold", "double", True),
        _c("utilization", "double", True),
        _c("status", "text", False, "OK, WARN, BREACH or NOT_AVAILABLE"),
        _c("detail", "text", True),
        _c("limits_version", "text", False),
    ),
)

TRADING_STATE = Table(
    name="trading_state",
    description="Trading state per book (ACTIVE, REDUCING, HALTED) with the reason and the limits behind it.",
    key=("as_of", "book"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("book", "text", False),
        _c("state", "text", False),
        _c("preservation_level", "text", False, "none, light, moderate, maximum"),
        _c("reason", "text", False),
        _c("previous_state", "text", True),
        _c("since", "timestamp", True),
        _c("triggering_limits", "json", True),
        _c("clear_count", "bigint", True),
        _c("level_since", "timestamp", True),
        _c("target_state", "text", True, "What the inputs alone call for"),
        _c("target_level", "text", True),
        _c("target_gross_cut", "double", True, "Fraction of reference_gross to cut"),
        _c("reference_gross", "double", True, "Gross exposure when the preservation level was entered"),
        _c("hedges_required", "boolean", True),
        _c("flatten_speculative", "boolean", True),
    ),
)

BOOK_NAV = Table(
    name="book_nav",
    description=(
        "NAV per book: the previous valuation's positions revalued at this valuation's market give the "
        "P&L; NAV starts at the book's capital (data/books.yaml) on its first valuation."
    ),
    key=("as_of", "book"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("as_of_date", "date", False),
        _c("book", "text", False),
        _c("nav", "double", False),
        _c("peak_nav", "double", False),
        _c("daily_pnl", "double", False, "P&L since the previous end-of-day valuation"),
        _c("drawdown_pct", "double", False, "1 - nav / peak_nav"),
        _c("pnl_basis", "text", False, "inception, or revaluation of <previous as_of> positions"),
        _c("previous_as_of", "timestamp", True),
        _c("capital", "double", False),
    ),
)

REQUIRED_REDUCTIONS = Table(
    name="required_reductions",
    description="Smallest position reductions that bring every breached limit under its warning level.",
    key=("as_of", "book", "position_id"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("book", "text", False),
        _c("position_id", "text", False),
        _c("symbol", "text", True),
        _c("quantity_before", "double", True),
        _c("reduce_quantity", "double", False, "Signed toward zero: positive sells a long"),
        _c("quantity_after", "double", True),
        _c("reason", "text", False),
        _c("limits_cleared", "json", False),
    ),
)

AUDIT_TRAIL = Table(
    name="audit_trail",
    description="Every pre-trade answer, state change and limit breach; append-only.",
    key=("audit_id",),
    partition_by=(),
    append_only=True,
    columns=(
        _c("audit_id", "text", False, "Deterministic hash of the decision and its inputs"),
        _c("at", "timestamp", False),
        _c("actor", "text", False),
        _c("decision_type", "text", False, "pre_trade, state_change, limit_breach"),
        _c("book", "text", True),
        _c("subject", "text", False),
        _c("decision", "text", False),
        _c("inputs", "json", False),
    ),
)


VAR_RESULTS = Table(
    name="var_results",
    description="VaR and expected shortfall per book, method, horizon and confidence (positive = loss).",
    key=("as_of", "book", "method", "horizon_days", "confidence"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation (option snapshot) the book was revalued at"),
        _c("as_of_date", "date", False),
        _c("book", "text", False),
        _c("method", "text", False, "historical, delta_normal, delta_gamma_cf, monte_carlo_fhs"),
        _c("horizon_days", "bigint", False, "Trading days"),
        _c("confidence", "double", False),
        _c("var", "double", False),
        _c("expected_shortfall", "double", False),
        _c("n_scenarios", "bigint", False),
        _c("lookback_days", "bigint", False),
        _c("history_start", "date", True, "First day of the return history used"),
        _c("history_end", "date", True),
        _c("seed", "bigint", True, "Random seed of the Monte Carlo draws"),
        _c(
            "iv_history_coverage",
            "double",
            True,
            "Share of look-back (day, underlying) cells with a measured ATM-vol move (others: vol unchanged)",
        ),
        _c(
            "gap_var",
            "double",
            True,
            "Historical VaR with the gap scenarios of the events in the horizon minus without them (the var column "
            "includes them); NULL when no event with a move history falls in the horizon",
        ),
        _c("gap_expected_shortfall", "double", True, "The same for expected shortfall"),
        _c("gap_events", "json", True, "event_calendar ids whose past event-day moves are in the scenarios (JSON)"),
        _c(
            "standard_error",
            "double",
            True,
            "Sampling standard error of the VaR, USD: 0 for an exact result (1-day FHS from every filtered date), "
            "the bootstrap error of sampled Monte Carlo paths; NULL for historical and parametric rows",
        ),
        _c(
            "var_non_overlapping",
            "double",
            True,
            "Historical multi-day: VaR from the non-overlapping windows only, USD (positive = loss; cross-check)",
        ),
        _c(
            "independent_tail_obs",
            "double",
            True,
            "Historical: independent episodes among the tail windows (overlapping windows count once), count",
        ),
        _c("method_note", "text", True, "How the figure was obtained and any flag (tail is one episode, ...)"),
    ),
)

VAR_CONTRIBUTIONS = Table(
    name="var_contributions",
    description="Component VaR per underlying; the components of a (book, method, horizon, confidence) sum to its VaR.",
    key=("as_of", "book", "method", "horizon_days", "confidence", "symbol"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("book", "text", False),
        _c("method", "text", False),
        _c("horizon_days", "bigint", False),
        _c("confidence", "double", False),
        _c("symbol", "text", False),
        _c("component_var", "double", False),
    ),
)


STRESS_RESULTS = Table(
    name="stress_results",
    description="Full-revaluation P&L of every position under every scenario of data/stress/scenarios.yaml.",
    key=("as_of", "book", "scenario_id"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("book", "text", False),
        _c("scenario_id", "text", False),
        _c("scenario_type", "text", False),
        _c("description", "text", False),
        _c("spot_shock", "double", False, "Index move (relative)"),
        _c("vol_shock", "double", False, "Relative implied vol move (multiplier - 1)"),
        _c("vol_shift", "double", True, "Additive vol shift"),
        _c("vol_skew", "double", True),
        _c("rate_shift", "double", True),
        _c("market_pnl", "double", False),
        _c("liquidation_cost", "double", False),
        _c("pnl", "double", False, "market_pnl - liquidation_cost"),
        _c("pnl_pct_nav", "double", False),
        _c("risk_level", "text", False, "LOW, MEDIUM, HIGH, CRITICAL"),
        _c("worst_symbol", "text", True),
        _c("worst_symbol_pnl", "double", True),
        _c("days_to_liquidate", "double", True),
        _c("library_version", "text", False),
        _c("nav", "double", False),
    ),
)

STRESS_GRID = Table(
    name="stress_grid",
    description="P&L on a grid of spot moves (-30 % .. +30 %) against relative vol moves (-50 % .. +200 %).",
    key=("as_of", "book", "spot_shock", "vol_shock"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("book", "text", False),
        _c("spot_shock", "double", False),
        _c("vol_shock", "double", False),
        _c("pnl", "double", False),
        _c("pnl_pct_nav", "double", False),
    ),
)


VAR_BACKTEST = Table(
    name="var_backtest",
    description=(
        "Rolling 250-observation backtests of daily P&L against the previous day's VaR: exceptions, "
        "Kupiec POF, Christoffersen independence and conditional coverage, Basel traffic light."
    ),
    key=("window_end", "book", "method", "confidence"),
    partition_by=("book",),
    columns=(
        _c("window_end", "date", False),
        _c(
            "book",
            "text",
            False,
            "A pipeline book (realized P&L), hypothetical:<book> (today's book carried back through history) or "
            "reference:<series>:<portfolio> (reference backtest)",
        ),
        _c("method", "text", False),
        _c("confidence", "double", False),
        _c("window_start", "date", False),
        _c("n_obs", "bigint", False),
        _c("exceptions", "bigint", False),
        _c("expected_exceptions", "double", False),
        _c("kupiec_lr", "double", False),
        _c("kupiec_p_value", "double", False),
        _c("christoffersen_lr", "double", False),
        _c("christoffersen_p_value", "double", False),
        _c("conditional_coverage_lr", "double", False),
        _c("conditional_coverage_p_value", "double", False),
        _c("traffic_light", "text", False, "green, yellow, red"),
        _c("source", "text", False, "Where the P&L and VaR series came from"),
    ),
)


VAR_BACKTEST_OBSERVATIONS = Table(
    name="var_backtest_observations",
    description=(
        "Every day of a VaR backtest: the VaR made on var_date and the P&L from var_date to pnl_date, so each "
        "exception in var_backtest can be recomputed."
    ),
    key=("book", "method", "confidence", "var_date"),
    partition_by=("book",),
    columns=(
        _c("book", "text", False, "As in var_backtest (hypothetical:<book> for the static-book backtest)"),
        _c("method", "text", False),
        _c("confidence", "double", False),
        _c("var_date", "date", False, "Session whose close the VaR was made at"),
        _c("pnl_date", "date", False, "Next session: the P&L is from var_date's close to pnl_date's"),
        _c("horizon_days", "bigint", False),
        _c("var", "double", False, "Positive = loss"),
        _c("pnl", "double", False),
        _c("exception", "boolean", False, "pnl < -var"),
        _c("book_value", "double", True, "Value of the book at var_date"),
        _c("lookback_days", "bigint", True, "Return days behind the VaR"),
        _c("n_scenarios", "bigint", True, "Monte Carlo scenarios (NULL for other methods)"),
        _c("seed", "bigint", True),
        _c("positions_as_of", "timestamp", True, "Valuation whose positions were carried back (hypothetical)"),
        _c("source", "text", False),
    ),
)


EVENT_RISK = Table(
    name="event_risk",
    description=(
        "Loss estimate per book and upcoming event (earnings of a held name; FOMC and CPI for the index) from the "
        "empirical distribution of past event-day moves, every position fully revalued. Read by the gap-risk work."
    ),
    key=("as_of", "book", "event_id"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False),
        _c("book", "text", False),
        _c("event_id", "text", False),
        _c("event_type", "text", False),
        _c("symbol", "text", True, "NULL = market-wide (moves the index, others by beta)"),
        _c("event_time", "timestamp", False),
        _c("trading_days_until", "bigint", False),
        _c("n_scenarios", "bigint", False, "Past event days in the scenario set"),
        _c("expected_pnl", "double", False),
        _c("expected_loss", "double", False),
        _c("loss_quantile", "double", False, "Loss at the confidence level (positive = loss)"),
        _c("expected_shortfall", "double", False),
        _c("worst_loss", "double", False),
        _c("confidence", "double", False),
        _c("moves_source", "text", False),
    ),
)

GAP_RISK_ACTIONS = Table(
    name="gap_risk_actions",
    description=(
        "Actions ahead of scheduled events per book and event (earnings, FOMC, CPI, payrolls, PPI, GDP, option "
        "expiration, ...), decided at a valuation: one row per event with its most severe action (reduce, "
        "tighten_caps, block_new, flatten_short_gamma, alert) and all actions taken, the trades, the tightened "
        "caps and the estimated event-day loss before and after, in force until expires_at (the event time). "
        "symbol is the name for earnings and '*' (the whole book) for market-wide events; a book evaluated with "
        "no event in its window gets one row with action 'none'. The pre-trade check reads block_new, "
        "limit_status the caps."
    ),
    key=("as_of", "book", "event_id", "symbol"),
    partition_by=("as_of", "book"),
    columns=(
        _c("as_of", "timestamp", False, "Valuation the actions were decided at (UTC)"),
        _c("book", "text", False),
        _c("event_id", "text", False, "event_calendar.event_id ('none': no event in the window)"),
        _c("symbol", "text", False, "Symbol the action applies to ('*' = the whole book, for market-wide events)"),
        _c("event_type", "text", False, "earnings, fomc, cpi, nfp, ppi, gdp, opex, fed_speech, ... ('none')"),
        _c("event_time", "timestamp", True, "When the event happens (UTC)"),
        _c("event_date", "date", True, "New York date of the event"),
        _c(
            "reaction_session",
            "date",
            True,
            "First session whose close is after the event (the session whose return carries the gap)",
        ),
        _c(
            "trading_days_until",
            "bigint",
            True,
            "XNYS sessions after the valuation's session up to and including the reaction session",
        ),
        _c("lead_sessions", "bigint", True, "Lead window of the event type (sessions)"),
        _c("action", "text", False, "Most severe: flatten_short_gamma > reduce > block_new > tighten_caps > alert"),
        _c("actions", "json", False, "Every action taken (JSON list, most severe first)"),
        _c(
            "quantity",
            "double",
            True,
            "Units traded on the row's positions, summed over positions (shares and contracts); NULL without trades",
        ),
        _c(
            "trades",
            "json",
            True,
            "Per position: position_id, action, quantity_before, trade_quantity (signed, > 0 buys), quantity_after",
        ),
        _c("limit_overrides", "json", True, "Caps in force until expires_at (JSON: limit name -> value)"),
        _c("loss_before", "double", True, "Estimated event-day loss before the actions (positive = loss)"),
        _c("loss_after", "double", True, "Estimated event-day loss after the trades (positive = loss)"),
        _c("loss_measure", "text", True, "loss_quantile (at confidence), expected_shortfall or worst_loss"),
        _c("confidence", "double", True),
        _c("budget", "double", True, "Event-loss budget: max_event_loss_pct_nav x nav"),
        _c("nav", "double", True),
        _c("n_scenarios", "bigint", True, "Past event-day moves the loss is estimated from"),
        _c("moves_source", "text", True),
        _c("reason", "text", False),
        _c("expires_at", "timestamp", True, "When the actions stop applying: the event time (UTC)"),
    ),
)

PUBLISHED_VALUATIONS = Table(
    name="published_valuations",
    description=(
        "The pointer readers follow: one row per valuation whose run completed with every blocking check "
        "passed, written last by that run. The pre-trade service values books at the latest published "
        "valuation, never at rows a failed or running run left behind."
    ),
    key=("session", "as_of"),
    partition_by=("session", "as_of"),
    columns=(
        _c("session", "date", False, "Exchange session of the valuation"),
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot the books were valued at (UTC)"),
        _c("kind", "text", False, "end_of_day (every layer) or intraday (exposures, limits, trading state)"),
        _c("books", "json", False, "Books valued (JSON list)"),
        _c("tables", "json", False, "Tables that hold this valuation's rows (JSON list)"),
        _c("published_run_id", "text", False, "Dagster run that computed and published the valuation"),
        _c("published_at", "timestamp", False, "When the pointer was moved (UTC)"),
    ),
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        MARKET_PRICES,
        OPTION_QUOTES,
        RATES_CURVE,
        DIVIDEND_YIELDS,
        EVENT_CALENDAR,
        POSITIONS,
        QUARANTINE,
        IMPLIED_VOLS,
        VOL_SURFACE,
        VOL_SURFACE_GRID,
        VOL_FORECASTS,
        ATM_VOL_HISTORY,
        POSITION_GREEKS,
        PORTFOLIO_GREEKS,
        LIMIT_STATUS,
        TRADING_STATE,
        REQUIRED_REDUCTIONS,
        AUDIT_TRAIL,
        PUBLISHED_VALUATIONS,
        BOOK_NAV,
        VAR_RESULTS,
        VAR_CONTRIBUTIONS,
        STRESS_RESULTS,
        STRESS_GRID,
        VAR_BACKTEST,
        VAR_BACKTEST_OBSERVATIONS,
        EVENT_RISK,
        GAP_RISK_ACTIONS,
    )
}

#: Tables fed by a market data source and guarded by blocking data-quality checks.
RAW_TABLES: tuple[str, ...] = (
    "market_prices",
    "option_quotes",
    "rates_curve",
    "dividend_yields",
    "event_calendar",
    "positions",
)


def table(name: str) -> Table:
    """The contract of table ``name``; KeyError names the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {sorted(TABLES)}") from None


def _md(text: str) -> str:
    """Text for a markdown table cell: one line, with ``\\``, ``|``, ``<`` and ``*`` escaped."""
    for ch in ("\\", "|", "<", "*"):
        text = text.replace(ch, "\\" + ch)
    return " ".join(text.split())


def _md_columns(columns: tuple[Column, ...]) -> list[str]:
    rows = [f"| `{c.name}` | {c.type} | {'yes' if c.nullable else 'no'} | {_md(c.description)} |" for c in columns]
    return ["| column | type | nullable | description |", "|---|---|---|---|", *rows]


def contracts_markdown() -> str:
    """Every table of ``TABLES`` as markdown: description, key, write partition, append-only, columns.

    The generated part of docs/architecture.md ("Table contracts"); ``python docs/update_contracts.py``
    writes it there and ``risk_pipeline_tests/test_docs.py`` fails when the two differ.
    """
    out = [
        "Every table also carries these lineage columns, stamped by the warehouse on write:",
        "",
        *_md_columns(LINEAGE_COLUMNS),
        "",
        "Logical types and the column types they become on each engine:",
        "",
        "| type | DuckDB | PostgreSQL |",
        "|---|---|---|",
        *(f"| {t} | {ENGINE_TYPES['duckdb'][t]} | {ENGINE_TYPES['postgres'][t]} |" for t in ENGINE_TYPES["duckdb"]),
    ]
    for t in TABLES.values():
        replaces = (
            "never (append-only: rows are only inserted)"
            if t.append_only
            else "the rows with the same " + ", ".join(f"`{c}`" for c in t.partition_by)
            if t.partition_by
            else "the whole table"
        )
        out += [
            "",
            f"### `{t.name}`",
            "",
            _md(t.description),
            "",
            f"- key: {', '.join(f'`{k}`' for k in t.key)}",
            f"- a write replaces: {replaces}",
            "",
            *_md_columns(t.columns),
        ]
    return "\n".join(out) + "\n"
