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
        _c("symbol", "text", False, "Ticker symbol"),
        _c("open", "double", False, "Session open price, USD per share"),
        _c("high", "double", False, "Session high price, USD per share"),
        _c("low", "double", False, "Session low price, USD per share"),
        _c("close", "double", False, "Session close price, USD per share"),
        _c("volume", "double", False, "Shares traded in the session (count)"),
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
        _c("underlying", "text", False, "Underlying ticker symbol"),
        _c("expiry", "date", False, "Expiry date (the option expires at that session's close)"),
        _c("strike", "double", False, "Strike price, USD per share"),
        _c("option_type", "text", False, "C or P"),
        _c("bid", "double", False, "Best bid, USD per option share (x multiplier per contract)"),
        _c("ask", "double", False, "Best ask, USD per option share (x multiplier per contract)"),
        _c("last", "double", True, "Last trade price, USD per option share; NULL when no trade"),
        _c("volume", "double", False, "Contracts traded in the session (count)"),
        _c("open_interest", "double", False, "Open contracts (count)"),
        _c("underlying_price", "double", False, "Underlying mid at the snapshot time, USD per share"),
        _c("exercise_style", "text", False, "american or european"),
        _c("multiplier", "double", False, "Shares per contract"),
        _c("source", "text", False, "Source name and file or dataset the row came from"),
    ),
)

INSTRUMENT_QUOTES = Table(
    name="instrument_quotes",
    description=(
        "Delta-one hedge instruments on the index per snapshot: quarterly index futures (fair value by cost "
        "of carry) and the daily-reset -1x inverse ETF, quoted bid/ask (sources/instruments.py)."
    ),
    key=("as_of", "symbol"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Snapshot time (UTC), the option snapshot's"),
        _c("as_of_date", "date", False, "Trading session date of the snapshot"),
        _c("symbol", "text", False, "Instrument ticker (SYNXZ6: index future, December 2026; SYNXS: inverse ETF)"),
        _c("instrument_type", "text", False, "future or etf"),
        _c("underlying", "text", False, "Index the instrument tracks"),
        _c("expiry", "date", True, "Futures expiry session (final settlement at its close); NULL for an ETF"),
        _c("multiplier", "double", False, "USD per index point per futures contract; 1 per ETF share"),
        _c("leverage", "double", False, "Daily return per unit of the index's daily return (1 future, -1 inverse ETF)"),
        _c("bid", "double", False, "Best bid, index points (futures) or USD per share (ETF)"),
        _c("ask", "double", False, "Best ask, index points (futures) or USD per share (ETF)"),
        _c("price", "double", False, "Quote midpoint (bid + ask) / 2, index points or USD per share"),
        _c(
            "fair_value",
            "double",
            False,
            "Futures: S exp((r - q) T), index points; ETF: previous close x (1 + leverage x index return "
            "since the previous close), USD per share",
        ),
        _c("underlying_price", "double", False, "Index level at the snapshot, index points"),
        _c("time_to_expiry_years", "double", True, "Years to the expiry session's close, ACT/365; NULL for an ETF"),
        _c("rate", "double", True, "Zero rate at the expiry, continuously compounded decimal; NULL for an ETF"),
        _c("dividend_yield", "double", True, "Index dividend yield, continuous decimal; NULL for an ETF"),
        _c("previous_close", "double", True, "ETF close of the previous session, USD per share; NULL for futures"),
        _c(
            "underlying_previous_close",
            "double",
            True,
            "Index close of the previous session the ETF resets on, index points; NULL for futures",
        ),
        _c("source", "text", False, "Source name and file or dataset the row came from"),
    ),
)

RATES_CURVE = Table(
    name="rates_curve",
    description="Risk-free zero curve, continuously compounded, per tenor in calendar days.",
    key=("as_of_date", "tenor_days"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("tenor_days", "bigint", False, "Tenor in calendar days from the session"),
        _c("zero_rate", "double", False, "Zero rate, continuously compounded, annualized decimal (0.045 = 4.5 %)"),
        _c("source", "text", False, "Source name and file or dataset the row came from"),
    ),
)

DIVIDEND_YIELDS = Table(
    name="dividend_yields",
    description="Continuous dividend yield per symbol.",
    key=("as_of_date", "symbol"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("symbol", "text", False, "Ticker symbol"),
        _c("dividend_yield", "double", False, "Continuous dividend yield, annualized decimal (0.015 = 1.5 %)"),
        _c("source", "text", False, "Source name and file or dataset the row came from"),
    ),
)

EVENT_CALENDAR = Table(
    name="event_calendar",
    description="Scheduled events: earnings per symbol, FOMC and CPI market-wide.",
    key=("event_id",),
    partition_by=(),
    columns=(
        _c("event_id", "text", False, "Stable id of the event"),
        _c("event_type", "text", False, "earnings, fomc, cpi, ..."),
        _c("symbol", "text", True, "NULL = market-wide"),
        _c("event_time", "timestamp", False, "When the event happens (UTC)"),
        _c("source", "text", False, "Source name and file or dataset the row came from"),
        _c("notes", "text", True, "Free text"),
    ),
)

POSITIONS = Table(
    name="positions",
    description="Positions per book at the start of the session.",
    key=("as_of_date", "book", "position_id"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False, "Session whose start the positions hold at"),
        _c("book", "text", False, "Book (portfolio) name, data/books.yaml"),
        _c("position_id", "text", False, "Position id, unique within the book"),
        _c("instrument_type", "text", False, "stock, etf, future, option"),
        _c("symbol", "text", False, "Underlying symbol (the stock itself for a stock row)"),
        _c("expiry", "date", True, "Option expiry date (NULL for stock)"),
        _c("strike", "double", True, "Option strike, USD per share (NULL for stock)"),
        _c("option_type", "text", True, "C or P for options"),
        _c("exercise_style", "text", True, "american or european for options"),
        _c("quantity", "double", False, "Contracts (options) or shares; > 0 long, < 0 short"),
        _c("multiplier", "double", False, "Shares per contract (1 for stock)"),
        _c("cost_basis", "double", True, "Price paid per unit, USD per share / per option share (positive = paid)"),
        _c("strategy", "text", False, "Strategy label the position belongs to"),
        _c("sector", "text", True, "Sector of the underlying (GICS-like label)"),
        _c("source", "text", False, "Source name and file or dataset the row came from"),
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
        _c("check_name", "text", False, "Data-quality rule the row failed"),
        _c("reason", "text", False, "Why the row failed the rule, in words"),
        _c(
            "source_file",
            "text",
            True,
            "File the row came from; a generated row: <source>:<table>/<session>?<key>=<value> (synthetic(seed=7):...)",
        ),
        _c("row", "json", False, "The row as read, JSON"),
        _c("quarantined_at", "timestamp", False, "When the row was quarantined (UTC)"),
    ),
)

IMPLIED_VOLS = Table(
    name="implied_vols",
    description="Implied volatility per quote, with every input used to compute it.",
    key=("as_of", "underlying", "expiry", "strike", "option_type"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Option snapshot time (UTC)"),
        _c("underlying", "text", False, "Underlying ticker symbol"),
        _c("expiry", "date", False, "Expiry date"),
        _c("strike", "double", False, "Strike price, USD per share"),
        _c("option_type", "text", False, "C or P"),
        _c("bid", "double", False, "Best bid, USD per option share"),
        _c("ask", "double", False, "Best ask, USD per option share"),
        _c("mid", "double", False, "(bid + ask) / 2, USD per option share: the price inverted"),
        _c("spot", "double", False, "Underlying price at as_of, USD per share"),
        _c("forward", "double", False, "Forward S e^((r-q)T), USD per share"),
        _c("time_to_expiry_years", "double", False, "Years to expiry, ACT/365 from as_of to the expiry close"),
        _c("rate", "double", False, "Zero rate to expiry, continuously compounded, annualized decimal (0.045 = 4.5 %)"),
        _c("dividend_yield", "double", False, "Continuous dividend yield, annualized decimal"),
        _c("exercise_style", "text", False, "american or european"),
        _c("model", "text", False, "Pricing model inverted"),
        _c(
            "implied_vol",
            "double",
            True,
            "Implied volatility, annualized decimal (0.20 = 20 %); NULL when status is not OK",
        ),
        _c("status", "text", False, "OK or why no vol was found (below intrinsic, no bid, ...)"),
    ),
)

VOL_SURFACE = Table(
    name="vol_surface",
    description="Fitted raw-SVI slice per underlying and expiry, with fit quality and arbitrage flags.",
    key=("as_of", "underlying", "expiry"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Option snapshot time (UTC)"),
        _c("underlying", "text", False, "Underlying ticker symbol"),
        _c("expiry", "date", False, "Expiry date of the slice"),
        _c("time_to_expiry_years", "double", False, "Years to expiry, ACT/365"),
        _c("forward", "double", False, "Forward of the slice, USD per share"),
        _c("model", "text", False, "Surface model (raw SVI) and fit method"),
        _c(
            "svi_a",
            "double",
            False,
            "Raw-SVI level a of total variance w(k) = a + b(rho(k-m) + sqrt((k-m)^2 + sigma^2)), variance x years",
        ),
        _c("svi_b", "double", False, "Raw-SVI wing slope b >= 0, total variance per unit log-moneyness"),
        _c("svi_rho", "double", False, "Raw-SVI skew rho in (-1, 1), dimensionless (< 0 = put skew)"),
        _c("svi_m", "double", False, "Raw-SVI shift m, log-moneyness ln(K/F) units"),
        _c("svi_sigma", "double", False, "Raw-SVI smoothness sigma > 0, log-moneyness ln(K/F) units"),
        _c("rmse_vol_points", "double", False, "RMSE of fitted against quoted vols, vol points (1.0 = 0.01 of vol)"),
        _c("n_quotes", "bigint", False, "Quotes fitted (count)"),
        _c(
            "butterfly_arbitrage_free",
            "boolean",
            False,
            "Durrleman g(k) >= 0 on the stored grid (no butterfly arbitrage)",
        ),
        _c(
            "calendar_arbitrage_free",
            "boolean",
            False,
            "Total variance non-decreasing against both neighbouring expiries at every point of the stored grid",
        ),
        _c(
            "min_durrleman_g",
            "double",
            False,
            "Minimum of Durrleman's g(k) on the grid, dimensionless (< 0 = butterfly arbitrage)",
        ),
        _c(
            "min_quoted_log_moneyness",
            "double",
            True,
            "Lower end of the quoted ln(K/F) range the slice was fitted on (log-moneyness units)",
        ),
        _c("max_quoted_log_moneyness", "double", True, "Upper end of the quoted ln(K/F) range (log-moneyness units)"),
        _c(
            "calendar_arbitrage_free_quoted",
            "boolean",
            True,
            "The calendar check only where both neighbouring slices have quotes (no extrapolated wings)",
        ),
        _c(
            "min_durrleman_g_quoted",
            "double",
            True,
            "Minimum of g(k) over the quoted range only, dimensionless (< 0 = arbitrage)",
        ),
    ),
)

VOL_SURFACE_GRID = Table(
    name="vol_surface_grid",
    description="The fitted surface on a fixed log-moneyness grid per expiry.",
    key=("as_of", "underlying", "expiry", "log_moneyness"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Option snapshot time (UTC)"),
        _c("underlying", "text", False, "Underlying ticker symbol"),
        _c("expiry", "date", False, "Expiry date of the slice"),
        _c("log_moneyness", "double", False, "ln(K / F), dimensionless"),
        _c("time_to_expiry_years", "double", False, "Years to expiry, ACT/365"),
        _c("implied_vol", "double", False, "Fitted implied volatility, annualized decimal (0.20 = 20 %)"),
        _c("total_variance", "double", False, "Total implied variance implied_vol^2 x years (decimal)"),
    ),
)

VOL_FORECASTS = Table(
    name="vol_forecasts",
    description="Annualized volatility forecasts per symbol, model and horizon with out-of-sample loss.",
    key=("as_of_date", "symbol", "model", "horizon_days"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False, "Session whose close the forecast is made at"),
        _c("symbol", "text", False, "Ticker symbol"),
        _c("model", "text", False, "Forecast model (EWMA, GARCH, GJR-GARCH or XGBoost)"),
        _c("horizon_days", "bigint", False, "Forecast horizon in trading sessions"),
        _c("annualized_vol", "double", False, "Forecast volatility, annualized decimal (0.20 = 20 %)"),
        _c("oos_loss", "double", True, "Out-of-sample QLIKE loss, dimensionless (lower is better)"),
        _c(
            "oos_mse",
            "double",
            True,
            "Out-of-sample mean squared error of the variance forecast, annualized variance squared",
        ),
        _c("n_oos", "bigint", True, "Out-of-sample observations (count)"),
        _c("selected", "boolean", False, "Used downstream"),
        _c("selection_reason", "text", True, "Why this model was (not) selected"),
    ),
)


SABR_SLICES = Table(
    name="sabr_slices",
    description=(
        "SABR slice per underlying and expiry beside the SVI slice of vol_surface, fitted to the same "
        "out-of-the-money mid vols (Hagan et al. 2002 with Obloj's 2008 leading term, beta fixed per underlying)."
    ),
    key=("as_of", "underlying", "expiry"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Option snapshot time (UTC)"),
        _c("underlying", "text", False, "Underlying ticker symbol"),
        _c("expiry", "date", False, "Expiry date of the slice"),
        _c("time_to_expiry_years", "double", False, "Years to expiry, ACT/365"),
        _c("forward", "double", False, "Forward of the slice, USD per share"),
        _c("model", "text", False, "Surface model and implied-vol formula (sabr:obloj)"),
        _c("sabr_alpha", "double", False, "SABR initial vol alpha > 0, forward^(1-beta) x annualized vol units"),
        _c("sabr_beta", "double", False, "SABR CEV exponent beta in [0, 1], fixed per underlying (1 = lognormal)"),
        _c("sabr_rho", "double", False, "SABR forward-vol correlation in (-1, 1), dimensionless (< 0 = put skew)"),
        _c("sabr_nu", "double", False, "SABR vol of vol nu >= 0, annualized decimal"),
        _c("rmse_vol_points", "double", False, "RMSE of fitted against quoted vols, vol points (1.0 = 0.01 of vol)"),
        _c("n_quotes", "bigint", False, "Quotes fitted (count)"),
        _c("converged", "boolean", False, "The least-squares solver reported convergence"),
        _c(
            "butterfly_arbitrage_free",
            "boolean",
            False,
            "Risk-neutral density (second strike difference of Black call prices) >= 0 on a +-4 sd strike grid",
        ),
        _c("min_density", "double", False, "Minimum of that density on the grid, per USD of strike (< 0 = arbitrage)"),
    ),
)

HESTON_PARAMETERS = Table(
    name="heston_parameters",
    description=(
        "Heston parameters per underlying calibrated to the whole surface of out-of-the-money mid vols of one "
        "snapshot (COS pricing, Levenberg-Marquardt), with fit quality and the Feller flag."
    ),
    key=("as_of", "underlying"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Option snapshot time (UTC) of the implied vols fitted"),
        _c("underlying", "text", False, "Underlying ticker symbol"),
        _c("v0", "double", False, "Initial instantaneous variance, annualized decimal variance (0.04 = 20 % vol)"),
        _c("kappa", "double", False, "Mean-reversion speed of the variance, per year"),
        _c("theta", "double", False, "Long-run variance, annualized decimal variance"),
        _c("xi", "double", False, "Vol of variance, per sqrt(year)"),
        _c("rho", "double", False, "Spot-variance correlation in (-1, 1), dimensionless (< 0 = put skew)"),
        _c("feller_ok", "boolean", False, "Feller condition 2 kappa theta >= xi^2 holds (variance never reaches 0)"),
        _c("feller_ratio", "double", False, "2 kappa theta / xi^2, dimensionless (>= 1 when feller_ok)"),
        _c(
            "rmse_vol_points",
            "double",
            False,
            "RMSE over all quotes of model (Black-inverted Heston price) against quoted vols, vol points",
        ),
        _c("max_abs_error_vol_points", "double", False, "Largest absolute vol error over the quotes, vol points"),
        _c("n_quotes", "bigint", False, "Quotes fitted (count)"),
        _c("n_expiries", "bigint", False, "Expiries fitted (count)"),
        _c("converged", "boolean", False, "The Levenberg-Marquardt solver reported convergence"),
        _c("spot", "double", False, "Underlying price of the snapshot, USD per share"),
        _c("min_time_to_expiry_years", "double", False, "Shortest expiry fitted, years ACT/365"),
        _c("max_time_to_expiry_years", "double", False, "Longest expiry fitted, years ACT/365"),
    ),
)

VOL_FIT_COMPARISON = Table(
    name="vol_fit_comparison",
    description=(
        "Fit RMSE per slice of the three surface models on the same quotes: SVI (vol_surface), SABR "
        "(sabr_slices) and Heston (heston_parameters, one fit per underlying evaluated on the slice)."
    ),
    key=("as_of", "underlying", "expiry"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Option snapshot time (UTC)"),
        _c("underlying", "text", False, "Underlying ticker symbol"),
        _c("expiry", "date", False, "Expiry date of the slice"),
        _c("time_to_expiry_years", "double", False, "Years to expiry, ACT/365"),
        _c("n_quotes", "bigint", False, "Quotes of the slice (count)"),
        _c("svi_rmse_vol_points", "double", True, "SVI fit RMSE of the slice, vol points (NULL: no SVI slice)"),
        _c("sabr_rmse_vol_points", "double", True, "SABR fit RMSE of the slice, vol points (NULL: under 3 quotes)"),
        _c("heston_rmse_vol_points", "double", False, "Heston surface fit's RMSE on the slice's quotes, vol points"),
        _c("best_model", "text", False, "Model with the smallest RMSE on the slice (svi, sabr or heston)"),
    ),
)

STRESS_MODEL_CONSISTENT = Table(
    name="stress_model_consistent",
    description=(
        "Each library scenario's market P&L with model-consistent vol shocks: every option's vol moves by its "
        "underlying's calibrated Heston model (v0 shifted by rho xi ln(1 + spot move), surface re-implied at the "
        "moved spot), and by its SABR slice (forward and alpha moved together: alpha + rho nu dF / F^beta), "
        "beside the rule-based market P&L of stress_results for the same scenario."
    ),
    key=("as_of", "book", "scenario_id"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("book", "text", False, "Book name"),
        _c("scenario_id", "text", False, "Scenario id in the library"),
        _c("spot_shock", "double", False, "Index move, relative decimal (-0.20 = -20 %)"),
        _c("rate_shift", "double", False, "Parallel rate shift, decimal (0.01 = +100 bp)"),
        _c(
            "market_pnl",
            "double",
            False,
            "Full-revaluation P&L with the Heston vol shifts, USD (positive = gain; no liquidation cost)",
        ),
        _c("pnl_pct_nav", "double", False, "market_pnl / nav, decimal fraction (positive = gain)"),
        _c(
            "rule_based_market_pnl",
            "double",
            True,
            "market_pnl of stress_results for the same scenario (rule-based vol shocks), USD (positive = gain)",
        ),
        _c(
            "mean_abs_vol_shift_vol_points",
            "double",
            False,
            "Mean absolute Heston vol shift over the modelled option positions, less those that keep their market vol "
            "in this scenario (options_model_fallback), vol points (1.0 = 0.01 of vol)",
        ),
        _c(
            "options_without_model",
            "bigint",
            False,
            "Option positions whose underlying has no Heston fit (they keep their market vol in every scenario), count",
        ),
        _c("nav", "double", False, "NAV the percentage is taken of, USD"),
        _c(
            "sabr_market_pnl",
            "double",
            True,
            "Full-revaluation P&L with SABR smile dynamics (forward and alpha moved together, quant.sabr_dynamics; "
            "vols of options without a SABR slice unchanged), USD (positive = gain)",
        ),
        _c("sabr_pnl_pct_nav", "double", True, "sabr_market_pnl / nav, decimal fraction (positive = gain)"),
        _c(
            "sabr_mean_abs_vol_shift_vol_points",
            "double",
            True,
            "Mean absolute SABR vol shift over the option positions with a slice, vol points (1.0 = 0.01 of vol)",
        ),
        _c(
            "options_without_sabr",
            "bigint",
            True,
            "Option positions with no SABR slice for their underlying and expiry (count)",
        ),
        _c(
            "options_model_fallback",
            "bigint",
            True,
            "Option positions of a modelled underlying that keep their market vol in this scenario: a Heston price, "
            "before or after the move, under 1e-12 of the forward (nothing to invert), count",
        ),
    ),
)

SMILE_HISTORY = Table(
    name="smile_history",
    description=(
        "The source's standardized implied-vol grid per underlying, session and constant maturity: the vols at "
        "the forward, at the 25 % forward-delta put and at the 25 % forward-delta call strike (the form vendors "
        "deliver volatility-surface history in). The stored surface the surface-repriced VaR backtest reprices "
        "every option off; a session without rows is allowed (those backtest days are left out)."
    ),
    key=("as_of_date", "symbol", "tenor_days"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar), closing surface"),
        _c("symbol", "text", False, "Ticker symbol"),
        _c("tenor_days", "bigint", False, "Constant maturity in calendar days (T = tenor_days / 365)"),
        _c("atm_vol", "double", False, "Implied vol at the forward, annualized decimal (0.20 = 20 %)"),
        _c("put_25d_vol", "double", False, "Implied vol at the 25 % forward-delta put strike, annualized decimal"),
        _c("call_25d_vol", "double", False, "Implied vol at the 25 % forward-delta call strike, annualized decimal"),
        _c("source", "text", False, "Source name and file or dataset the row came from"),
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
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("symbol", "text", False, "Ticker symbol"),
        _c("as_of", "timestamp", False, "Option snapshot used (the session's last)"),
        _c("tenor_days", "bigint", False, "Calendar days"),
        _c("atm_vol", "double", False, "At-the-forward implied vol at tenor_days, annualized decimal (0.20 = 20 %)"),
        _c("spot", "double", False, "Underlying price at as_of, USD per share"),
        _c("near_expiry", "date", True, "Expiry at or before the tenor (NULL if none)"),
        _c("near_time_years", "double", True, "Years to the near expiry, ACT/365"),
        _c("near_atm_vol", "double", True, "ATM vol of the near expiry, annualized decimal"),
        _c("far_expiry", "date", True, "Expiry after the tenor (NULL if none)"),
        _c("far_time_years", "double", True, "Years to the far expiry, ACT/365"),
        _c("far_atm_vol", "double", True, "ATM vol of the far expiry, annualized decimal"),
        _c("extrapolated", "boolean", False, "Only one side of the tenor listed: that expiry's vol"),
        _c("quotes_used", "bigint", False, "Quotes of the two expiries with a valid implied vol (count)"),
        _c("method", "text", False, "Interpolation method"),
        _c("source", "text", False, "Tables the row was computed from"),
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
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("book", "text", False, "Book name"),
        _c("position_id", "text", False, "Position id within the book"),
        _c("symbol", "text", False, "Underlying ticker symbol"),
        _c("instrument_type", "text", False, "stock, etf, future, option"),
        _c("option_type", "text", True, "C or P (NULL for stock)"),
        _c("exercise_style", "text", True, "american or european (NULL for stock)"),
        _c("expiry", "date", True, "Option expiry date (NULL for stock)"),
        _c("quantity", "double", False, "Contracts or shares; > 0 long, < 0 short"),
        _c("multiplier", "double", False, "Shares per contract (1 for stock)"),
        _c("spot", "double", False, "Underlying price at as_of, USD per share"),
        _c("strike", "double", True, "Strike, USD per share (NULL for stock)"),
        _c("time_to_expiry_years", "double", True, "Years to expiry, ACT/365 from as_of (NULL for stock)"),
        _c("implied_vol", "double", True, "Vol from the surface at (expiry, strike), annualized decimal (0.20 = 20 %)"),
        _c(
            "vol_model",
            "text",
            True,
            "Surface and sticky mode the vol came from; ends in '; expiry not listed: interpolated ...' or "
            "'...: extrapolated ...' when the option's expiry has no fitted slice",
        ),
        _c("rate", "double", True, "Zero rate to expiry, continuously compounded, annualized decimal"),
        _c("dividend_yield", "double", True, "Continuous dividend yield, annualized decimal"),
        _c("pricing_model", "text", False, "american_alo_exact, bsm_european, or linear (delta one)"),
        _c("price", "double", False, "Model price per unit of underlying, USD per share / per option share"),
        _c("market_value", "double", False, "quantity x multiplier x price, USD (book currency); < 0 for shorts"),
        _c("delta", "double", False, "Position delta in shares of the underlying (> 0 gains when spot rises)"),
        _c("dollar_delta", "double", False, "delta x spot, USD per 1.00 relative move of spot (USD exposure)"),
        _c("gamma", "double", False, "Position gamma, shares per 1.00 USD change of spot"),
        _c(
            "dollar_gamma_1pct",
            "double",
            False,
            "gamma x spot^2 / 100: change of dollar_delta for a 1 % spot move, USD",
        ),
        _c("vega_per_vol_point", "double", False, "Value change per 0.01 (one vol point) rise in implied vol, USD"),
        _c(
            "theta_per_day",
            "double",
            False,
            "Value change per calendar day passing, USD (< 0 = position loses value with time)",
        ),
        _c("rho_per_pct", "double", False, "Value change per 0.01 (1 %) rise in the rate, USD"),
        _c("vanna", "double", False, "d delta / d vol: shares per 1.00 change in vol"),
        _c("volga", "double", False, "d vega / d vol: USD per 1.00 change in vol, per 1.00 change in vol"),
        _c("charm", "double", False, "d delta / d time: shares per year of calendar time passing"),
        _c("beta", "double", True, "Beta to the index, rolling regression of daily log returns, dimensionless"),
        _c("beta_weighted_delta", "double", True, "Index-equivalent dollar delta: dollar_delta x beta, USD"),
        _c("expiry_bucket", "text", False, "0-7d, 8-30d, 31-90d, 91d+ (stock: none)"),
        _c("strategy", "text", False, "Strategy label"),
        _c("sector", "text", True, "Sector of the underlying"),
    ),
)

PORTFOLIO_GREEKS = Table(
    name="portfolio_greeks",
    description="Book totals and splits by underlying, expiry bucket and strategy; each split sums to the total.",
    key=("as_of", "book", "scope", "scope_value"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("book", "text", False, "Book name"),
        _c("scope", "text", False, "total, underlying, expiry_bucket, strategy"),
        _c("scope_value", "text", False, "'all' for total"),
        _c(
            "delta",
            "double",
            False,
            "Sum of position delta, shares (summed across underlyings only in sub-scopes of one name)",
        ),
        _c("dollar_delta", "double", False, "Sum of delta x spot, USD per 1.00 relative spot move"),
        _c("gamma", "double", False, "Sum of position gamma, shares per 1.00 USD change of spot"),
        _c(
            "dollar_gamma_1pct",
            "double",
            False,
            "Sum of gamma x spot^2 / 100, USD change of dollar delta per 1 % spot move",
        ),
        _c(
            "vega_per_vol_point",
            "double",
            False,
            "Value change per 0.01 (one vol point) rise in every implied vol, USD",
        ),
        _c(
            "theta_per_day",
            "double",
            False,
            "Value change per calendar day passing, USD (< 0 = the book loses value with time)",
        ),
        _c("rho_per_pct", "double", False, "Value change per 0.01 (1 %) parallel rise in rates, USD"),
        _c("beta_weighted_delta", "double", False, "Sum of dollar_delta x beta, index-equivalent USD"),
        _c("market_value", "double", False, "Sum of market value, USD (book currency); shorts negative"),
        _c("positions_count", "bigint", False, "Positions in the scope (count)"),
    ),
)

LIMIT_STATUS = Table(
    name="limit_status",
    description="One row per limit and book: value against cap and warning level.",
    key=("as_of", "book", "limit_name"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("book", "text", False, "Book name"),
        _c(
            "limit_name",
            "text",
            False,
            "Limit of data/limits.yaml (its name carries the unit: _shares, _pct_nav, ...), or "
            "risk_budget:<position strategy> (value: the strategy's component VaR, USD; threshold: its share of the "
            "book's 99 % 1-day VaR, USD)",
        ),
        _c(
            "value",
            "double",
            True,
            "Measured value, in the limit's unit (shares, USD, fraction of NAV or count as its name says)",
        ),
        _c("threshold", "double", True, "Cap (or floor for min_ limits), same unit as value"),
        _c("warn_threshold", "double", True, "Warning level, same unit as value"),
        _c(
            "utilization",
            "double",
            True,
            "value / threshold (floors: threshold / value), dimensionless ratio; > 1 = breach",
        ),
        _c("status", "text", False, "OK, WARN, BREACH or NOT_AVAILABLE"),
        _c("detail", "text", True, "Which underlying, position or pair the value was taken over"),
        _c("limits_version", "text", False, "Version of the limits file"),
        _c(
            "risk_level",
            "text",
            True,
            "Risk-level preset in force for the book (conservative, moderate, aggressive; NULL: none)",
        ),
        _c(
            "effective_config",
            "text",
            True,
            "Effective configuration: limits version, risk level and the RISK_PIPELINE_* environment overrides "
            "applied (name=value), as text",
        ),
    ),
)

TRADING_STATE = Table(
    name="trading_state",
    description="Trading state per book (ACTIVE, REDUCING, HALTED) with the reason and the limits behind it.",
    key=("as_of", "book"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("book", "text", False, "Book name"),
        _c("state", "text", False, "ACTIVE, REDUCING or HALTED"),
        _c("preservation_level", "text", False, "none, light, moderate, maximum"),
        _c("reason", "text", False, "Why, in words"),
        _c("previous_state", "text", True, "State of the previous valuation"),
        _c("since", "timestamp", True, "When the current state began (UTC)"),
        _c("triggering_limits", "json", True, "Limits behind the state (JSON list)"),
        _c("clear_count", "bigint", True, "Consecutive clear valuations (count)"),
        _c("level_since", "timestamp", True, "When the preservation level began (UTC)"),
        _c("target_state", "text", True, "What the inputs alone call for"),
        _c("target_level", "text", True, "Preservation level the inputs alone call for"),
        _c("target_gross_cut", "double", True, "Fraction of reference_gross to cut, decimal (0.25 = 25 %)"),
        _c(
            "reference_gross",
            "double",
            True,
            "Gross exposure (sum of |delta x spot|) when the preservation level was entered, USD",
        ),
        _c("hedges_required", "boolean", True, "Hedges must be put on"),
        _c("flatten_speculative", "boolean", True, "Speculative positions must be closed"),
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
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("book", "text", False, "Book name"),
        _c("nav", "double", False, "Net asset value, USD (book currency)"),
        _c("peak_nav", "double", False, "Highest NAV so far, USD"),
        _c("daily_pnl", "double", False, "P&L since the previous end-of-day valuation, USD (positive = gain)"),
        _c("drawdown_pct", "double", False, "1 - nav / peak_nav, decimal fraction (0.05 = 5 % below peak)"),
        _c("pnl_basis", "text", False, "inception, or revaluation of <previous as_of> positions"),
        _c("previous_as_of", "timestamp", True, "Valuation the P&L is measured from (UTC)"),
        _c("capital", "double", False, "Starting capital of the book, USD (data/books.yaml)"),
    ),
)

REQUIRED_REDUCTIONS = Table(
    name="required_reductions",
    description="Smallest position reductions that bring every breached limit under its warning level.",
    key=("as_of", "book", "position_id"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("book", "text", False, "Book name"),
        _c("position_id", "text", False, "Position id within the book"),
        _c("symbol", "text", True, "Underlying ticker symbol"),
        _c("quantity_before", "double", True, "Contracts or shares before; > 0 long"),
        _c(
            "reduce_quantity",
            "double",
            False,
            "Contracts or shares to trade, signed toward zero: positive sells a long",
        ),
        _c("quantity_after", "double", True, "Contracts or shares after; > 0 long"),
        _c("reason", "text", False, "Why, in words"),
        _c("limits_cleared", "json", False, "Limits the reduction clears (JSON list)"),
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
        _c("at", "timestamp", False, "When it happened (UTC)"),
        _c("actor", "text", False, "Who or what decided (service token, run, operator)"),
        _c("decision_type", "text", False, "pre_trade, state_change, limit_breach"),
        _c("book", "text", True, "Book name (NULL if not book-specific)"),
        _c("subject", "text", False, "What the decision is about"),
        _c("decision", "text", False, "The decision"),
        _c("inputs", "json", False, "Every input of the decision (JSON)"),
    ),
)


VAR_RESULTS = Table(
    name="var_results",
    description="VaR and expected shortfall per book, method, horizon and confidence (positive = loss).",
    key=("as_of", "book", "method", "horizon_days", "confidence"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation (option snapshot) the book was revalued at"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("book", "text", False, "Book name"),
        _c(
            "method",
            "text",
            False,
            "historical, delta_normal, delta_gamma_cornish_fisher, monte_carlo_fhs, or stressed_historical "
            "(historical on the worst 250-session window of the stored history: history_start/history_end)",
        ),
        _c("horizon_days", "bigint", False, "Trading days"),
        _c("confidence", "double", False, "Confidence level, decimal (0.99 = 99 %)"),
        _c("var", "double", False, "Value at risk, USD (positive = loss)"),
        _c("expected_shortfall", "double", False, "Expected shortfall beyond the VaR, USD (positive = loss)"),
        _c("n_scenarios", "bigint", False, "Scenarios or draws used (count)"),
        _c("lookback_days", "bigint", False, "Return history length, trading sessions"),
        _c("history_start", "date", True, "First day of the return history used"),
        _c("history_end", "date", True, "Last day of the return history used"),
        _c("seed", "bigint", True, "Random seed of the Monte Carlo draws"),
        _c(
            "iv_history_coverage",
            "double",
            True,
            "Share of look-back (day, underlying) cells with a measured ATM-vol move, decimal fraction",
        ),
        _c(
            "rate_history_coverage",
            "double",
            True,
            "Share of look-back days with a measured 91-day zero-rate change (the rate factor of historical and "
            "Monte Carlo rows), decimal fraction; NULL with the rate factor off",
        ),
        _c(
            "dividend_history_coverage",
            "double",
            True,
            "Share of look-back (day, optioned underlying) cells with a measured dividend-yield change (the dividend "
            "factor of historical and Monte Carlo rows), decimal fraction; NULL with the dividend factor off",
        ),
        _c(
            "gap_var",
            "double",
            True,
            "Historical VaR with the gap scenarios of the events in the horizon minus without them, USD (positive = "
            "more loss; the var column includes them); NULL when no event with a move history falls in the horizon",
        ),
        _c("gap_expected_shortfall", "double", True, "The same for expected shortfall, USD (positive = more loss)"),
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
        _c(
            "smile_sensitivity",
            "text",
            True,
            "Historical rows: this horizon and confidence's VaR under each smile dynamic (production term "
            "structure) and each term structure (production smile), USD (JSON {smile: {production, var: "
            "{sticky_strike, sticky_moneyness, sabr}}, term: {production, var: {flat, expiry_scaled}}}; before "
            "event gaps)",
        ),
    ),
)

VAR_CONTRIBUTIONS = Table(
    name="var_contributions",
    description="Component VaR per underlying; the components of a (book, method, horizon, confidence) sum to its VaR.",
    key=("as_of", "book", "method", "horizon_days", "confidence", "symbol"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("book", "text", False, "Book name"),
        _c("method", "text", False, "VaR method"),
        _c("horizon_days", "bigint", False, "Horizon, trading days"),
        _c("confidence", "double", False, "Confidence level, decimal (0.99 = 99 %)"),
        _c("symbol", "text", False, "Underlying ticker symbol"),
        _c(
            "component_var",
            "double",
            False,
            "Component VaR of the underlying, USD (positive = adds to the loss; sums to var)",
        ),
        _c(
            "component_es",
            "double",
            True,
            "ES contribution of the underlying: its mean loss over the book's tail scenarios, USD (positive = adds "
            "to the loss; sums to expected_shortfall); NULL for the parametric methods",
        ),
    ),
)


REGULATORY_ES = Table(
    name="regulatory_es",
    description=(
        "FRTB-style expected shortfall per book: 97.5 % ES of overlapping 10-session moves applied instantly with "
        "the Basel MAR33.4 liquidity-horizon cascade (MAR33.12 horizons by risk-factor class), on the current "
        "period and on stressed windows (the 250 sessions where today's book has its largest 1-day 97.5 % ES: of "
        "the stored history, and of arch's S&P 500 1999-2018 mapped through the index); each row names its window "
        "and data source so it can be recomputed."
    ),
    key=("as_of", "book", "period", "source"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar) of the valuation"),
        _c("book", "text", False, "Book name"),
        _c("period", "text", False, "current (the last sessions) or stressed (the worst window)"),
        _c(
            "source",
            "text",
            False,
            "stored_history (market_prices and atm_vol_history, every factor) or sp500_arch (the S&P 500 of "
            "arch.data.sp500 as the index, names through their beta: a reduced set of one factor)",
        ),
        _c("window_start", "date", False, "Session of the window's first daily return"),
        _c("window_end", "date", False, "Session of the window's last daily return"),
        _c("n_return_days", "bigint", False, "Daily returns in the window (count)"),
        _c("var_99_1d", "double", False, "99 % VaR of the window's 1-session moves, USD (positive = loss)"),
        _c(
            "es_975_1d",
            "double",
            False,
            "97.5 % ES of the window's 1-session moves, USD (positive = loss; selects the window)",
        ),
        _c(
            "var_99_10d",
            "double",
            False,
            "99 % VaR of the overlapping 10-session moves, every factor, USD (positive = loss)",
        ),
        _c(
            "es_975_10d",
            "double",
            False,
            "ES_T(P): 97.5 % ES of the overlapping 10-session moves, every factor, USD (positive = loss)",
        ),
        _c(
            "es_975_10d_lh20",
            "double",
            False,
            "ES_T(P, 2): only factors of liquidity horizon >= 20 days moved, USD (positive = loss)",
        ),
        _c(
            "es_975_10d_lh40",
            "double",
            False,
            "ES_T(P, 3): only factors of liquidity horizon >= 40 days moved, USD (positive = loss)",
        ),
        _c(
            "es_975_10d_lh60",
            "double",
            False,
            "ES_T(P, 4): only factors of liquidity horizon >= 60 days moved, USD (positive = loss)",
        ),
        _c(
            "es_975_10d_lh120",
            "double",
            False,
            "ES_T(P, 5): only factors of liquidity horizon 120 days moved, USD (positive = loss)",
        ),
        _c(
            "es_liquidity_adjusted",
            "double",
            False,
            "MAR33.4: sqrt(ES_T(P)^2 + sum_j>=2 (ES_T(P, j) sqrt((LH_j - LH_j-1) / 10))^2), USD (positive = loss; "
            "a negative bucket counts as 0)",
        ),
        _c(
            "reduced_set_ratio",
            "double",
            True,
            "sp500_arch: ES_F,C / ES_R,C, full-set over reduced-set (index only) liquidity-adjusted ES on the current "
            "period (dimensionless); NULL for full-set rows",
        ),
        _c(
            "es_regulatory",
            "double",
            False,
            "es_liquidity_adjusted, times reduced_set_ratio floored at 1 for the reduced set (MAR33.5), USD "
            "(positive = loss)",
        ),
        _c("n_scenarios_10d", "bigint", False, "Overlapping 10-session moves in the window (count)"),
        _c("data_source", "text", False, "Tables or dataset, with dates, the window was taken from"),
        _c("method_note", "text", False, "How the row was computed (window rule, mapping, cascade)"),
        _c("selected", "boolean", False, "True on the stressed row with the largest es_regulatory of the book"),
        _c(
            "factor_mapping",
            "json",
            False,
            "Per symbol: large_cap, median_dollar_volume_usd, spot_lh_days, vol_lh_days (MAR33.12) and, with the "
            "S&P 500 proxy, spot_beta and vol_slope (ATM log-vol change per unit index log return) on index_symbol",
        ),
    ),
)


STRESS_RESULTS = Table(
    name="stress_results",
    description="Full-revaluation P&L of every position under every scenario of data/stress/scenarios.yaml.",
    key=("as_of", "book", "scenario_id"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("book", "text", False, "Book name"),
        _c("scenario_id", "text", False, "Scenario id in the library"),
        _c("scenario_type", "text", False, "historical, hypothetical, ..."),
        _c("description", "text", False, "What the scenario represents"),
        _c("spot_shock", "double", False, "Index move, relative decimal (-0.20 = -20 %)"),
        _c(
            "vol_shock",
            "double",
            False,
            "Relative move of the reference 30-day vol index, decimal (multiplier - 1; 0.5 = x 1.5); each option's "
            "vol moves by vol_rule",
        ),
        _c("vol_shift", "double", True, "Additive implied vol shift, annualized decimal (0.05 = +5 vol points)"),
        _c(
            "vol_skew",
            "double",
            True,
            "Vol change per unit log-moneyness ln(K/S'), decimal (< 0 steepens the put skew)",
        ),
        _c("rate_shift", "double", True, "Parallel rate shift, decimal (0.01 = +100 bp)"),
        _c("market_pnl", "double", False, "Full-revaluation P&L, USD (positive = gain)"),
        _c(
            "liquidation_cost",
            "double",
            False,
            "Cost of liquidating the scenario's fraction of the book, USD (positive = cost)",
        ),
        _c("pnl", "double", False, "market_pnl - liquidation_cost, USD (positive = gain)"),
        _c("pnl_pct_nav", "double", False, "pnl / nav, decimal fraction (positive = gain; -0.10 = 10 % of NAV lost)"),
        _c("risk_level", "text", False, "LOW, MEDIUM, HIGH, CRITICAL"),
        _c("worst_symbol", "text", True, "Underlying with the largest loss"),
        _c("worst_symbol_pnl", "double", True, "P&L of worst_symbol, USD (positive = gain)"),
        _c(
            "days_to_liquidate",
            "double",
            True,
            "Longest time to liquidate a position at the participation rate, trading days",
        ),
        _c("library_version", "text", False, "Version of the scenario library"),
        _c("nav", "double", False, "NAV the percentage is taken of, USD"),
        _c(
            "vol_rule",
            "text",
            True,
            "Implied-vol shock rule applied (dimensionless text): expiry_name_skew with its vol-beta floor/cap, "
            "expiry exponent alpha and calibration source, or flat_multiplier (vol_shock applied to every vol)",
        ),
        _c(
            "recommendations",
            "json",
            True,
            "HIGH and CRITICAL rows: what brings the loss to at most the HIGH threshold x NAV (JSON list; each with "
            "action reduce_book / reduce_name / index_hedge, cut_fraction as a decimal fraction of the positions, "
            "losses and hedge_pnl in USD as positive numbers, quantity in index units, side buy/sell, and text); "
            "empty list for LOW and MEDIUM rows",
        ),
        _c(
            "vol_parameters",
            "json",
            True,
            "The vol rule's inputs for this book (JSON, same on every row of the book): rule (every VolShockRule "
            "field; term_exponent is the fitted expiry exponent alpha, dimensionless), and per symbol of the book and "
            "the reference index: symbols, vol_beta (dimensionless, before floor and cap), idio_vol_sd (daily "
            "residual 30-day log-vol sd, decimal) and idio_spot_sd (daily residual log-return sd, decimal); null = "
            "no history. The hedging layer revalues its stress scenarios with these",
        ),
        _c(
            "searched_shocks",
            "json",
            True,
            "The shocks this scenario's P&L was revalued in under expiry_name_skew, the book's worst idiosyncratic "
            "moves included (JSON): symbols (the book's), spot_log_shock (ln(S'/S) per symbol, decimal) and "
            "name_log_vol_move (the name's 30-day log-vol move per symbol, decimal); null under flat_multiplier. "
            "The hedging layer reads them for the same book and valuation instead of searching again",
        ),
        _c(
            "searched_first_pass",
            "json",
            True,
            "What the hedging layer's search of the book plus hedge lines reuses of this book's search under "
            "expiry_name_skew (JSON): digest (SHA-256 of the positions, scenarios, rule, engine and per-symbol inputs "
            "searched), loss (this scenario's extra loss per symbol in its worst idiosyncratic sign combination, USD, "
            "base64 of little-endian float64) and pick (that combination per symbol, one digit: 0-3 for the spot and "
            "vol signs ++, +-, -+, --); null when no name moves idiosyncratically",
        ),
    ),
)

STRESS_GRID = Table(
    name="stress_grid",
    description="P&L on a grid of spot moves (-30 % .. +30 %) against relative vol moves (-50 % .. +200 %).",
    key=("as_of", "book", "spot_shock", "vol_shock"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("book", "text", False, "Book name"),
        _c("spot_shock", "double", False, "Spot move of every underlying, relative decimal (-0.30 = -30 %)"),
        _c("vol_shock", "double", False, "Relative implied vol move, decimal (multiplier - 1)"),
        _c("pnl", "double", False, "Full-revaluation P&L, USD (positive = gain)"),
        _c("pnl_pct_nav", "double", False, "pnl / nav, decimal fraction (positive = gain)"),
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
        _c("window_end", "date", False, "Last P&L date of the window"),
        _c(
            "book",
            "text",
            False,
            "A pipeline book (realized P&L), hypothetical:<book> (today's book carried back through history), "
            "surface:<book> (the same, P&L repriced off smile_history) or reference:<series>:<portfolio> "
            "(reference backtest)",
        ),
        _c("method", "text", False, "VaR method"),
        _c("confidence", "double", False, "Confidence level, decimal (0.99 = 99 %)"),
        _c("window_start", "date", False, "First P&L date of the window"),
        _c("n_obs", "bigint", False, "Observations in the window (count)"),
        _c("exceptions", "bigint", False, "Days with pnl < -var (count)"),
        _c("expected_exceptions", "double", False, "n_obs x (1 - confidence), count"),
        _c("kupiec_lr", "double", False, "Kupiec POF likelihood ratio, chi-square(1) statistic, dimensionless"),
        _c("kupiec_p_value", "double", False, "p-value of kupiec_lr, probability in [0, 1]"),
        _c(
            "christoffersen_lr",
            "double",
            False,
            "Christoffersen independence likelihood ratio, chi-square(1), dimensionless",
        ),
        _c("christoffersen_p_value", "double", False, "p-value of christoffersen_lr, probability in [0, 1]"),
        _c("conditional_coverage_lr", "double", False, "kupiec_lr + christoffersen_lr, chi-square(2), dimensionless"),
        _c(
            "conditional_coverage_p_value",
            "double",
            False,
            "p-value of conditional_coverage_lr, probability in [0, 1]",
        ),
        _c("traffic_light", "text", False, "green, yellow, red"),
        _c("source", "text", False, "Where the P&L and VaR series came from"),
        _c(
            "es_confidence",
            "double",
            True,
            "Confidence level of the ES backtest, decimal (0.975 = 97.5 %); NULL without ES in the series",
        ),
        _c(
            "es_n_obs",
            "bigint",
            True,
            "Observations of the window with a VaR and ES at es_confidence (count)",
        ),
        _c(
            "es_z2",
            "double",
            True,
            "Acerbi-Szekely Z2 of the window, dimensionless: 1 + sum(pnl x exception / es) / (n x (1 - "
            "es_confidence)); about 0 if ES is right, negative if ES is too small",
        ),
        _c(
            "es_z2_p_value",
            "double",
            True,
            "Simulated P(Z2 <= es_z2) under the model (each day a Student-t matched to its VaR and ES), "
            "probability in [0, 1]; only on each method's latest window (NULL on earlier windows)",
        ),
        _c(
            "es_traffic_light",
            "text",
            True,
            "green (p > 5 %), yellow (p > 0.01 %), red; only on each method's latest window",
        ),
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
        _c(
            "book",
            "text",
            False,
            "As in var_backtest (hypothetical:<book> and surface:<book> for the static-book backtests)",
        ),
        _c("method", "text", False, "VaR method"),
        _c("confidence", "double", False, "Confidence level, decimal (0.99 = 99 %)"),
        _c("var_date", "date", False, "Session whose close the VaR was made at"),
        _c("pnl_date", "date", False, "Next session: the P&L is from var_date's close to pnl_date's"),
        _c("horizon_days", "bigint", False, "VaR horizon, trading days"),
        _c("var", "double", False, "VaR made on var_date, USD (positive = loss)"),
        _c("pnl", "double", False, "P&L from var_date's close to pnl_date's, USD (positive = gain)"),
        _c("exception", "boolean", False, "pnl < -var"),
        _c("book_value", "double", True, "Value of the book at var_date, USD"),
        _c("lookback_days", "bigint", True, "Return days behind the VaR, trading sessions"),
        _c("n_scenarios", "bigint", True, "Monte Carlo scenarios (NULL for other methods)"),
        _c("seed", "bigint", True, "Random seed of the Monte Carlo draws (NULL for other methods)"),
        _c("positions_as_of", "timestamp", True, "Valuation whose positions were carried back (hypothetical)"),
        _c("source", "text", False, "Where the P&L and VaR came from"),
        _c("es_confidence", "double", True, "Confidence level of es_var and expected_shortfall, decimal"),
        _c("es_var", "double", True, "VaR made on var_date at es_confidence, USD (positive = loss)"),
        _c(
            "expected_shortfall",
            "double",
            True,
            "ES made on var_date at es_confidence, USD (positive = loss); the ES backtest compares it with pnl",
        ),
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
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("book", "text", False, "Book name"),
        _c("event_id", "text", False, "event_calendar.event_id"),
        _c("event_type", "text", False, "earnings, fomc, cpi, ..."),
        _c("symbol", "text", True, "NULL = market-wide (moves the index, others by beta)"),
        _c("event_time", "timestamp", False, "When the event happens (UTC)"),
        _c("trading_days_until", "bigint", False, "Trading sessions until the event's reaction session"),
        _c("n_scenarios", "bigint", False, "Past event days in the scenario set"),
        _c("expected_pnl", "double", False, "Mean event-day P&L over the scenarios, USD (positive = gain)"),
        _c("expected_loss", "double", False, "E[max(-P&L, 0)], USD (positive = loss)"),
        _c("loss_quantile", "double", False, "Loss at the confidence level, USD (positive = loss)"),
        _c("expected_shortfall", "double", False, "Mean loss beyond loss_quantile, USD (positive = loss)"),
        _c("worst_loss", "double", False, "Largest loss over the scenarios, USD (positive = loss)"),
        _c("confidence", "double", False, "Confidence level, decimal (0.95 = 95 %)"),
        _c("moves_source", "text", False, "Where the past event-day moves came from"),
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
        _c("book", "text", False, "Book name"),
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
        _c("loss_before", "double", True, "Estimated event-day loss before the actions, USD (positive = loss)"),
        _c("loss_after", "double", True, "Estimated event-day loss after the trades, USD (positive = loss)"),
        _c("loss_measure", "text", True, "loss_quantile (at confidence), expected_shortfall or worst_loss"),
        _c("confidence", "double", True, "Confidence level of loss_quantile, decimal (0.95 = 95 %)"),
        _c("budget", "double", True, "Event-loss budget max_event_loss_pct_nav x nav, USD"),
        _c("nav", "double", True, "NAV of the book, USD"),
        _c("n_scenarios", "bigint", True, "Past event-day moves the loss is estimated from"),
        _c("moves_source", "text", True, "Where the past event-day moves came from"),
        _c("reason", "text", False, "Why, in words"),
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

MANUAL_CONTROLS = Table(
    name="manual_controls",
    description=(
        "Manual trading controls, append-only: halt, resume and emergency_stop events per book ('*' = every "
        "book), with who and why. A halt is in force from created_at_utc until a later resume of the book (or of "
        "'*') or until expires_at_utc; the pre-trade check and the next trading-state run honor it."
    ),
    key=("event_id",),
    partition_by=(),
    append_only=True,
    columns=(
        _c("event_id", "text", False, "Deterministic hash of book, action, reason, actor and time"),
        _c("book", "text", False, "Book the control applies to; '*' = every book"),
        _c("action", "text", False, "halt, resume or emergency_stop"),
        _c("reason", "text", False, "Why, in words"),
        _c("actor", "text", False, "Who ordered it"),
        _c("created_at_utc", "timestamp", False, "When the control was ordered (UTC)"),
        _c("expires_at_utc", "timestamp", True, "When a halt lapses by itself (NULL: until resumed)"),
    ),
)

COMPLIANCE_REPORTS = Table(
    name="compliance_reports",
    description=(
        "The daily compliance report per book: status from the rules of data/compliance/rules.yaml, every "
        "violation with its measured value, threshold, duration and the actions taken, and the rendered report."
    ),
    key=("report_date", "book"),
    partition_by=("report_date",),
    columns=(
        _c("report_date", "date", False, "Session reported on"),
        _c("book", "text", False, "Book name"),
        _c("as_of", "timestamp", False, "Valuation the report reads"),
        _c("status", "text", False, "compliant, minor_violations or major_violations"),
        _c("n_minor", "bigint", False, "Minor violations (count)"),
        _c("n_major", "bigint", False, "Major violations (count)"),
        _c(
            "violations",
            "json",
            False,
            "JSON list: rule, severity, subject, measured value, threshold, since (session), duration_sessions, "
            "actions, recommendations",
        ),
        _c("actions", "json", False, "Actions taken on the book (state changes, reductions, hedges, gap-risk)"),
        _c("recommendations", "json", False, "JSON list of recommendations"),
        _c("rules_version", "text", False, "Hash of the rules file"),
        _c("report_path", "text", True, "Rendered HTML report (exports/reports/...)"),
    ),
)

ALERTS = Table(
    name="alerts",
    description=(
        "Every alert delivery attempt per channel, append-only: level, type, book, subject and message, the "
        "condition key de-duplication uses, and the delivery status with the number of attempts."
    ),
    key=("alert_id",),
    partition_by=(),
    append_only=True,
    columns=(
        _c("alert_id", "text", False, "Hash of rule, condition key, level, channel and time"),
        _c("at", "timestamp", False, "When the delivery was attempted (UTC)"),
        _c("level", "text", False, "INFO, WARNING, CRITICAL, EMERGENCY"),
        _c("alert_type", "text", False, "PORTFOLIO_HEAT, DRAWDOWN, VAR_BREACH, POSITION_LIMIT, ..."),
        _c("book", "text", True, "Book name (NULL if market-wide)"),
        _c("rule", "text", False, "Alert rule of data/alerts.yaml (or sensor name)"),
        _c("condition_key", "text", False, "Identity of the open condition (rule, book, subject)"),
        _c("event", "text", False, "open, escalated, repeat (after the cooldown) or cleared"),
        _c("subject", "text", False, "What the alert is about"),
        _c("message", "text", False, "Text delivered"),
        _c("channel", "text", False, "log, webhook:<name> or email:<name>"),
        _c("delivery_status", "text", False, "delivered or failed"),
        _c("attempts", "bigint", False, "Delivery attempts (count)"),
        _c("error", "text", True, "Last delivery error"),
        _c("as_of", "timestamp", True, "Valuation the condition was read at"),
    ),
)

EXECUTIONS = Table(
    name="executions",
    description=(
        "Fills reported by trading systems through the risk service (POST /v1/orders/executions), append-only: "
        "one row per fill (client order id and the fill's own id), with the instrument, side, quantity and price. "
        "The next valuation of the fill's session applies the fills made up to its as_of to the start-of-day "
        "positions (intraday trades); it is also the book's blotter."
    ),
    key=("client_order_id", "execution_id"),
    partition_by=(),
    append_only=True,
    columns=(
        _c("client_order_id", "text", False, "The trading system's order id (as sent to /v1/orders/check)"),
        _c("execution_id", "text", False, "The fill's id within the order (default: the client order id)"),
        _c("at", "timestamp", False, "When the fill happened (UTC)"),
        _c("as_of_date", "date", False, "Exchange session of the fill (New York date)"),
        _c("book", "text", False, "Book name"),
        _c("symbol", "text", False, "Stock symbol, or the underlying of an option"),
        _c("instrument_type", "text", False, "stock or option"),
        _c("expiry", "date", True, "Option expiry (NULL for stock)"),
        _c("strike", "double", True, "Option strike, USD per share (NULL for stock)"),
        _c("option_type", "text", True, "C or P for options"),
        _c("exercise_style", "text", True, "american or european for options"),
        _c("multiplier", "double", False, "Shares per contract (1 for stock)"),
        _c("side", "text", False, "buy or sell"),
        _c("quantity", "double", False, "Shares or contracts filled (> 0; the side gives the sign)"),
        _c("price", "double", False, "Fill price per unit, USD per share / per option share"),
        _c("strategy", "text", True, "Strategy label"),
        _c("source", "text", False, "Who reported the fill (the service token's name)"),
        _c("pre_trade_decision", "text", True, "Decision of the pre-trade check with this client order id, if any"),
    ),
)


SIGNALS = Table(
    name="signals",
    description=(
        "Trade signals per strategy and symbol: direction, expected return over a horizon and a confidence. "
        "The expected edge position sizing works from."
    ),
    key=("as_of_date", "strategy", "symbol"),
    partition_by=("as_of_date",),
    columns=(
        _c("as_of_date", "date", False, "Session whose close the signal is formed at"),
        _c("strategy", "text", False, "Strategy that produced the signal"),
        _c("symbol", "text", False, "Ticker symbol"),
        _c("direction", "bigint", False, "+1 long, -1 short"),
        _c(
            "expected_return",
            "double",
            False,
            "Expected simple return over the horizon, signed decimal (0.02 = +2 %; > 0 = up)",
        ),
        _c("horizon_days", "bigint", False, "Horizon in trading sessions"),
        _c("confidence", "double", False, "Confidence in [0, 1], dimensionless"),
        _c("source", "text", False, "Source name and file or dataset the row came from"),
    ),
)

POSITION_SIZING = Table(
    name="position_sizing",
    description=(
        "Recommended size per book, symbol and method (kelly, kelly_multi, optimal_f, vol_target, risk_parity, "
        "xgboost, recommended), each row with the inputs of its method. Weights are signed fractions of NAV."
    ),
    key=("as_of", "book", "symbol", "method"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation (option snapshot) the sizes are computed at"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("book", "text", False, "Book name"),
        _c("symbol", "text", False, "Ticker symbol"),
        _c("method", "text", False, "Sizing method"),
        _c("strategy", "text", True, "Signal strategy sized (NULL for risk_parity without a signal)"),
        _c("direction", "bigint", True, "+1 long, -1 short"),
        _c(
            "expected_return",
            "double",
            True,
            "Signal's expected return over horizon_days, signed decimal (0.02 = +2 %)",
        ),
        _c("horizon_days", "bigint", True, "Signal horizon, trading sessions"),
        _c("signal_confidence", "double", True, "Signal confidence in [0, 1]"),
        _c("mu_annual", "double", True, "Expected return annualized: expected_return x 252 / horizon_days, decimal"),
        _c("sigma_annual", "double", True, "Annualized volatility the method used, decimal (0.20 = 20 %)"),
        _c("kelly_fraction", "double", True, "Fraction of full Kelly (per strategy), decimal"),
        _c(
            "full_kelly_weight",
            "double",
            True,
            "mu / sigma^2 (kelly) or (Sigma^-1 mu)_i (kelly_multi), fraction of NAV",
        ),
        _c(
            "optimal_f",
            "double",
            True,
            "Vince's f on the name's daily returns recentred on the signal's edge, decimal fraction",
        ),
        _c(
            "worst_loss",
            "double",
            True,
            "Worst of those daily returns, decimal (positive = loss); weight = direction x f / |worst_loss|",
        ),
        _c(
            "mc_terminal_wealth_p05",
            "double",
            True,
            "5th percentile of bootstrap terminal wealth at f after one year, multiple of start (1.0 = flat)",
        ),
        _c(
            "mc_max_drawdown_p95",
            "double",
            True,
            "95th percentile of bootstrap max drawdown at f over one year, decimal fraction",
        ),
        _c("target_vol", "double", True, "Strategy's target volatility, annualized decimal"),
        _c("forecast_vol", "double", True, "vol_forecasts annualized vol used, decimal"),
        _c("forecast_model", "text", True, "Model with the lowest OOS QLIKE for the symbol and horizon"),
        _c("forecast_reason", "text", True, "Why that forecast"),
        _c("regime_scale", "double", True, "Multiplier from the volatility regime, dimensionless (1 = no change)"),
        _c("regime_reason", "text", True, "Regime in words"),
        _c(
            "risk_contribution",
            "double",
            True,
            "Share of the ERC portfolio's variance (risk_parity), decimal fraction",
        ),
        _c("predicted_vol_5d", "double", True, "XGBoost median forward 5-day vol, annualized decimal"),
        _c(
            "predicted_max_drawdown_5d",
            "double",
            True,
            "XGBoost 90 % quantile of the forward 5-day max drawdown, decimal fraction",
        ),
        _c(
            "confidence",
            "double",
            True,
            "Method's confidence in [0, 1]: XGBoost 1 - (q90 - q10) / (2 q50); else the signal's",
        ),
        _c("fallback_used", "boolean", False, "The volatility-target size was used instead of the method's"),
        _c("fallback_reason", "text", True, "none, model_missing, model_stale, features_out_of_range, low_confidence"),
        _c("weight", "double", False, "Signed size as a fraction of NAV (> 0 long)"),
        _c("spot", "double", False, "Underlying price, USD per share"),
        _c("nav", "double", False, "NAV of the book, USD"),
        _c("size_notional", "double", False, "weight x NAV, signed USD (> 0 long)"),
        _c("size_quantity", "double", False, "Shares: size_notional / spot, truncated toward zero; > 0 long"),
        _c("binding_limit", "text", True, "recommended: the limit that cut the size (method when none did)"),
        _c("inputs", "json", True, "Further inputs of the method (JSON)"),
    ),
)

POSITION_STOPS = Table(
    name="position_stops",
    description=(
        "ATR(14) stop and take-profit per position (on its underlying, side = sign of delta), with a trailing "
        "stop whose state carries from session to session."
    ),
    key=("as_of", "book", "position_id"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("book", "text", False, "Book name"),
        _c("position_id", "text", False, "Position id within the book"),
        _c("symbol", "text", False, "Underlying ticker symbol"),
        _c("side", "bigint", False, "+1 long delta, -1 short delta"),
        _c("delta", "double", False, "Position delta, shares of the underlying (> 0 long)"),
        _c("close", "double", False, "Session close of the underlying, USD per share"),
        _c("atr_14", "double", False, "Wilder ATR(14) over the underlying's last 150 bars, USD per share"),
        _c("entry_price", "double", False, "Reference the initial stop and target are measured from, USD per share"),
        _c("stop_price", "double", False, "entry - side x stop_atr x ATR, USD per share"),
        _c("take_profit_price", "double", False, "entry + side x stop_atr x reward_risk x ATR, USD per share"),
        _c("stop_distance_pct", "double", False, "|close - effective stop| / close, decimal fraction (0.05 = 5 %)"),
        _c("best_price", "double", False, "Highest (long) or lowest (short) price since entry, USD per share"),
        _c("trailing_active", "boolean", False, "The trailing stop is in force"),
        _c("trailing_stop_price", "double", True, "Trailing stop, USD per share (NULL until active)"),
        _c("effective_stop_price", "double", False, "Tighter of the initial and the trailing stop, USD per share"),
        _c("risk_at_stop", "double", False, "|delta| x |close - effective stop|, USD (positive = loss if stopped)"),
        _c("hit", "boolean", False, "The session's range touched the stop in force"),
        _c("take_profit_hit", "boolean", False, "The session's range touched the take-profit price"),
        _c("state_from", "text", False, "new (first seen: entry = close) or the previous as_of the state came from"),
    ),
)

CORRELATION_MATRIX = Table(
    name="correlation_matrix",
    description="Correlation of daily log returns over window_days per symbol pair, with hierarchical clusters.",
    key=("as_of", "symbol_a", "symbol_b"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("symbol_a", "text", False, "First symbol of the pair"),
        _c("symbol_b", "text", False, "Second symbol of the pair"),
        _c("correlation", "double", False, "Pearson correlation of daily log returns, dimensionless in [-1, 1]"),
        _c("window_days", "bigint", False, "Sessions of returns (count)"),
        _c("cluster_a", "bigint", False, "Cluster number of symbol_a"),
        _c("cluster_b", "bigint", False, "Cluster number of symbol_b"),
        _c(
            "min_cluster_correlation",
            "double",
            False,
            "Clusters cut at distance sqrt((1 - this) / 2); correlation, dimensionless",
        ),
    ),
)

PORTFOLIO_HEAT = Table(
    name="portfolio_heat",
    description=(
        "Portfolio heat per book: 100 x (0.5 risk-at-stops utilization + 0.25 largest-position utilization + "
        "0.25 largest-cluster utilization), each utilization clipped to [0, 1]."
    ),
    key=("as_of", "book"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("book", "text", False, "Book name"),
        _c("nav", "double", False, "NAV of the book, USD"),
        _c("gross_exposure", "double", False, "Sum of |delta x spot|, USD"),
        _c(
            "risk_at_stops",
            "double",
            False,
            "Sum of position_stops.risk_at_stop, USD (positive = loss if every stop is hit)",
        ),
        _c("risk_at_stops_pct_nav", "double", False, "risk_at_stops / nav, decimal fraction (0.02 = 2 %)"),
        _c("max_portfolio_risk_pct_nav", "double", False, "Cap on risk_at_stops_pct_nav, decimal fraction"),
        _c("largest_position_share", "double", False, "Largest |delta x spot| / gross, decimal fraction"),
        _c("max_position_pct_gross", "double", False, "Cap on largest_position_share, decimal fraction"),
        _c("largest_cluster", "bigint", True, "Cluster number with the largest share of gross"),
        _c("largest_cluster_share", "double", False, "Largest cluster's |delta x spot| / gross, decimal fraction"),
        _c("max_cluster_pct_gross", "double", False, "Cap on largest_cluster_share, decimal fraction"),
        _c("risk_utilization", "double", False, "risk_at_stops_pct_nav / its cap, clipped to [0, 1], dimensionless"),
        _c(
            "position_utilization",
            "double",
            False,
            "largest_position_share / its cap, clipped to [0, 1], dimensionless",
        ),
        _c("cluster_utilization", "double", False, "largest_cluster_share / its cap, clipped to [0, 1], dimensionless"),
        _c("heat_score", "double", False, "Heat score, points 0-100 (higher = hotter)"),
        _c("stops_hit", "bigint", False, "Positions whose stop was hit in the session (count)"),
    ),
)

VOLATILITY_INDEX = Table(
    name="volatility_index",
    description=(
        "30-day volatility index of the index chain by the Cboe VIX white-paper method: OTM strip variance of the "
        "two expiries bracketing 30 days (forward from put-call parity at the strike of the smallest |C - P|, K0 "
        "the first strike at or below it, two consecutive zero bids end a side), interpolated in minutes to 30 "
        "days. One row per option snapshot; the partitions hold its history."
    ),
    key=("as_of", "index_symbol"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Option snapshot (UTC)"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("index_symbol", "text", False, "Index whose option chain is used"),
        _c("level", "double", False, "30-day volatility, annualized decimal (0.20 = 20 %)"),
        _c("level_points", "double", False, "100 x level, vol points quoted like the Cboe VIX"),
        _c("near_expiry", "date", False, "Near-term expiry (at most 30 days out)"),
        _c("next_expiry", "date", False, "Next-term expiry (beyond 30 days)"),
        _c("near_minutes", "double", False, "Minutes from the snapshot to the near expiry's close"),
        _c("next_minutes", "double", False, "Minutes from the snapshot to the next expiry's close"),
        _c("near_time_years", "double", False, "near_minutes / 525,600, years"),
        _c("next_time_years", "double", False, "next_minutes / 525,600, years"),
        _c(
            "near_rate",
            "double",
            False,
            "Continuous zero rate at the near expiry, annualized decimal (rates_curve, linear in tenor)",
        ),
        _c("next_rate", "double", False, "Continuous zero rate at the next expiry, annualized decimal"),
        _c("near_forward", "double", False, "Forward index level of the near expiry (put-call parity), index points"),
        _c("next_forward", "double", False, "Forward index level of the next expiry, index points"),
        _c("near_k0", "double", False, "First strike at or below the near forward, index points"),
        _c("next_k0", "double", False, "First strike at or below the next forward, index points"),
        _c(
            "near_variance",
            "double",
            False,
            "sigma^2 of the near expiry (white paper, equation 2), annualized variance decimal",
        ),
        _c("next_variance", "double", False, "sigma^2 of the next expiry, annualized variance decimal"),
        _c("near_n_strikes", "bigint", False, "Strikes in the near strip (count)"),
        _c("next_n_strikes", "bigint", False, "Strikes in the next strip (count)"),
        _c("n_strikes", "bigint", False, "Strikes used in both strips (count)"),
        _c("method", "text", False, "Method and version"),
    ),
)

_HEDGE_METRICS = (
    ("net_delta", "Net delta, shares (sum over underlyings)"),
    ("dollar_delta", "Net dollar delta (delta x spot), USD"),
    ("gamma", "Net gamma, shares per 1.00 USD of spot"),
    ("vega_per_vol_point", "Vega per 0.01 (one vol point) of implied vol, USD"),
    ("theta_per_day", "Theta per calendar day, USD (< 0 = the book loses value with time)"),
    ("es_975_1d", "97.5 % 1-day ES, historical full revaluation, USD (positive = loss)"),
    ("es_975_5d", "97.5 % 5-day ES, historical full revaluation, USD (positive = loss)"),
    ("worst_stress_loss", "Worst stress-library market P&L as a loss before liquidation costs, USD (positive = loss)"),
    ("worst_scenario_loss", "Worst loss over every stress and VaR scenario, USD (positive = loss)"),
)

HEDGE_RECOMMENDATIONS = Table(
    name="hedge_recommendations",
    description=(
        "Hedges a trader can execute, per book with a trigger: the cheapest whole-contract hedge from the "
        "live option chain, stocks, the index, index futures and the inverse ETF (scipy.optimize.milp, HiGHS)"
        " meeting the Greek warning levels, the loss cap in every stress and VaR scenario and the 97.5 % "
        "5-day ES target, within the cost cap; one row per line, with the book's metrics before and after "
        "(the after-metrics from full revaluation of the hedged book, the Greeks through the position_greeks "
        "code), the triggers, urgency, rationale and solver status. hedge_id 'none': triggered but no trade "
        "needed or possible; 'beta': the capital-preservation beta hedge (closed form, with the front index "
        "future, else the inverse ETF, else the index), with the CPPI target on every row. A book without "
        "trigger has no rows."
    ),
    key=("as_of", "book", "hedge_id"),
    partition_by=("as_of", "book"),
    columns=(
        _c("as_of", "timestamp", False, "Valuation hedged (UTC)"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("book", "text", False, "Book name"),
        _c("hedge_id", "text", False, "opt-NN (optimized line), beta (preservation beta hedge), none"),
        _c("kind", "text", False, "optimized, beta_hedge or none"),
        _c("instrument_type", "text", False, "option, stock, index, future, etf or none"),
        _c("symbol", "text", True, "Instrument or underlying symbol (NULL for none)"),
        _c("expiry", "date", True, "Option or futures expiry"),
        _c("strike", "double", True, "Option strike, USD per share"),
        _c("option_type", "text", True, "C or P"),
        _c("exercise_style", "text", True, "american or european"),
        _c("side", "text", True, "buy or sell"),
        _c("quantity", "double", False, "Whole contracts (options) or shares/units, >= 0 (side gives the sign)"),
        _c("multiplier", "double", True, "Shares per contract (1: stock, index, ETF); USD per index point (future)"),
        _c(
            "price",
            "double",
            True,
            "Price used per unit, USD per share / per option share: the side traded (ask to buy, bid to sell)",
        ),
        _c("price_side", "text", True, "ask or bid (delta-one lines: mid +/- the configured half spread)"),
        _c("mid", "double", True, "Mid price, USD per share / per option share"),
        _c("spot", "double", True, "Underlying price used, USD per share"),
        _c("implied_vol", "double", True, "implied_vols of the quote, annualized decimal (options)"),
        _c("time_to_expiry_years", "double", True, "Years to expiry, ACT/365"),
        _c("rate", "double", True, "Zero rate, continuously compounded, annualized decimal"),
        _c("dividend_yield", "double", True, "Continuous dividend yield, annualized decimal"),
        _c(
            "estimated_cost",
            "double",
            True,
            "Half spread plus carry of the line over the horizon, USD (positive = cost)",
        ),
        _c(
            "carry_cost",
            "double",
            True,
            "Decay (options bought) or financing (delta one) over the horizon, USD (positive = cost)",
        ),
        _c("premium", "double", True, "Premium paid for options bought, USD (positive = paid)"),
        *(
            _c(f"{m}_{w}", "double", True, f"{d}, {w} the hedge")
            for m, d in _HEDGE_METRICS
            for w in ("before", "after")
        ),
        _c("nav", "double", False, "NAV of the book, USD"),
        _c("trigger", "json", False, "Every trigger: kind, detail, value, threshold, urgency (JSON list)"),
        _c("trigger_kinds", "text", False, "Trigger kinds, comma-separated"),
        _c("urgency", "text", False, "LOW, MEDIUM, HIGH or IMMEDIATE: the most urgent trigger"),
        _c("rationale", "text", False, "Why this hedge, in words"),
        _c("solver", "text", False, "Solver used"),
        _c("solver_status", "text", False, "optimal, partial, no_candidates, time_limit or error"),
        _c("solve_seconds", "double", False, "Solver wall time, seconds"),
        _c("partial", "boolean", False, "True: no feasible hedge; the best partial one, binding_constraints say why"),
        _c("binding_constraints", "text", True, "Constraints the partial hedge cannot meet"),
        _c("meets_constraints", "boolean", False, "The revalued hedged book meets every constraint"),
        _c("n_candidates", "bigint", False, "Candidate instruments (count)"),
        _c("n_scenarios", "bigint", False, "Stress plus 1-day and 5-day historical scenarios"),
        _c("history_start", "date", True, "First day of the return history of the scenarios"),
        _c("history_end", "date", True, "Last day of that history"),
        _c("es_target", "double", False, "97.5 % 5-day ES target, USD (positive = loss)"),
        _c("loss_cap", "double", False, "Loss cap in every scenario, USD (positive = loss)"),
        _c("budget", "double", False, "Cost cap max_hedge_cost_pct_nav x NAV, USD"),
        _c("total_cost", "double", False, "Costs of the whole hedge (the objective), USD (positive = cost)"),
        _c("total_outlay", "double", False, "Premium plus costs of the whole hedge, USD (positive = paid)"),
        _c("horizon_sessions", "bigint", False, "Hedge horizon, trading sessions"),
        _c("beta_weighted_dollar_delta", "double", False, "Book's sum of dollar_delta x beta, index-equivalent USD"),
        _c("cppi_floor", "double", False, "cppi_floor_fraction x peak NAV, USD"),
        _c("cppi_target_exposure", "double", False, "cppi_multiplier x max(NAV - floor, 0), USD"),
        _c("risky_exposure", "double", False, "Beta-weighted dollar delta of the non-hedge positions, USD"),
        _c("cppi_scale", "double", False, "cppi_target_exposure / risky_exposure, dimensionless ratio"),
        _c("config_version", "text", False, "Version of the hedging configuration"),
    ),
)

HEDGE_STRESS_EFFECTS = Table(
    name="hedge_stress_effects",
    description=(
        "Per book with a hedge recommendation and per stress scenario: the loss before and after the hedging "
        "layer's optimized hedge (hedge_recommendations lines opt-*, not the beta hedge), revalued in full under "
        "the stress layer's scenarios and vol rule (the parameters stored in stress_results.vol_parameters; the "
        "idiosyncratic moves are the book's worst before and the hedged book's worst after, as stress_results "
        "would find them), and whether the hedge brings the loss under the HIGH threshold. At a valuation "
        "stress_results has, pnl_before equals its pnl for the same book and scenario."
    ),
    key=("as_of", "book", "scenario_id"),
    partition_by=("as_of", "book"),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time of the hedge (UTC)"),
        _c("as_of_date", "date", False, "Trading session (New York)"),
        _c("book", "text", False, "Book name"),
        _c("scenario_id", "text", False, "Scenario id in the stress library"),
        _c(
            "stress_as_of",
            "timestamp",
            True,
            "Valuation time of the stress_results run whose vol_parameters and liquidation_cost were used (UTC); "
            "null: none stored, the library's rule uncalibrated",
        ),
        _c("nav", "double", False, "NAV the percentages are taken of, USD"),
        _c(
            "hedge_ids",
            "text",
            True,
            "hedge_recommendations.hedge_id of the hedge lines, comma-separated; null: no line",
        ),
        _c("market_pnl_before", "double", False, "Full-revaluation P&L of the book, USD (positive = gain)"),
        _c(
            "liquidation_cost",
            "double",
            True,
            "The book's liquidation cost in the scenario from stress_results at stress_as_of, USD (positive = cost); "
            "the hedge lines' own liquidation cost is not included",
        ),
        _c("pnl_before", "double", True, "market_pnl_before - liquidation_cost, USD (positive = gain)"),
        _c("pnl_pct_nav_before", "double", True, "pnl_before / nav, decimal fraction (positive = gain)"),
        _c("risk_level_before", "text", True, "LOW, MEDIUM, HIGH, CRITICAL of pnl_pct_nav_before"),
        _c(
            "hedge_pnl",
            "double",
            False,
            "What the hedge lines change in the scenario: market_pnl_after - market_pnl_before, USD (positive = gain)",
        ),
        _c(
            "market_pnl_after",
            "double",
            False,
            "Full-revaluation P&L of the book plus the hedge lines (idiosyncratic moves the hedged book's worst), "
            "USD (positive = gain)",
        ),
        _c("pnl_after", "double", True, "market_pnl_after - liquidation_cost, USD (positive = gain)"),
        _c("pnl_pct_nav_after", "double", True, "pnl_after / nav, decimal fraction (positive = gain)"),
        _c("risk_level_after", "text", True, "LOW, MEDIUM, HIGH, CRITICAL of pnl_pct_nav_after"),
        _c(
            "high_threshold",
            "double",
            False,
            "The library's HIGH threshold, decimal fraction of NAV (negative: a loss at or below it is HIGH)",
        ),
        _c(
            "under_high_threshold",
            "boolean",
            True,
            "pnl_pct_nav_after above high_threshold: the hedge brings the loss under the HIGH threshold",
        ),
        _c("vol_rule", "text", True, "The vol rule applied (dimensionless text, as stress_results.vol_rule)"),
    ),
)

HEDGE_PERFORMANCE = Table(
    name="hedge_performance",
    description=(
        "Hedge monitor per book and hedge position (strategy in hedge_strategies), plus position_id '*' for all "
        "of the book's hedges: daily and cumulative P&L, protection value (worst stress loss and 97.5 % 5-day "
        "ES without the hedge minus with it), cost drag (decay plus financing as a fraction of NAV per year; "
        "the '*' row is the hedge cost the sizing layer reads) and effectiveness (1 - variance of the static "
        "book's hypothetical P&L with / without, trailing 60 sessions)."
    ),
    key=("as_of", "book", "position_id"),
    partition_by=("as_of", "book"),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("book", "text", False, "Book name"),
        _c("position_id", "text", False, "Hedge position, or '*' for all of the book's hedges"),
        _c("symbol", "text", True, "Underlying symbol (NULL on the '*' row)"),
        _c("strategy", "text", False, "Strategy label of the hedge"),
        _c("quantity", "double", True, "Contracts or shares; > 0 long (NULL on the '*' row)"),
        _c("market_value", "double", False, "Market value of the hedge, USD (shorts negative)"),
        _c(
            "hedge_pnl_day",
            "double",
            True,
            "Today's quantity x multiplier x price change, USD (positive = gain); NULL when new today",
        ),
        _c("hedge_pnl_cum", "double", False, "Previous session's cumulative plus today's, USD (positive = gain)"),
        _c(
            "worst_stress_loss_with",
            "double",
            False,
            "Worst stress-library loss of the book with the hedge, USD (positive = loss)",
        ),
        _c(
            "worst_stress_loss_without",
            "double",
            False,
            "Worst stress-library loss without the hedge, USD (positive = loss)",
        ),
        _c(
            "es_975_5d_with",
            "double",
            True,
            "97.5 % 5-day ES with the hedge, USD (positive = loss; NULL without VaR history)",
        ),
        _c(
            "es_975_5d_without",
            "double",
            True,
            "97.5 % 5-day ES without the hedge, USD (positive = loss; NULL without VaR history)",
        ),
        _c(
            "protection_value",
            "double",
            False,
            "worst_stress_loss_without - worst_stress_loss_with, USD (positive = the hedge protects)",
        ),
        _c(
            "protection_value_es",
            "double",
            True,
            "es_975_5d_without - es_975_5d_with, USD (positive = the hedge protects)",
        ),
        _c(
            "cost_drag_pct_nav_yr",
            "double",
            False,
            "(max(-theta_per_day, 0) x 365 + financing) / NAV: decimal fraction of NAV per year (positive = cost)",
        ),
        _c(
            "effectiveness",
            "double",
            True,
            "1 - var(P&L with) / var(P&L without), trailing window, dimensionless (1 = perfect)",
        ),
        _c("effectiveness_window", "bigint", False, "Sessions of the effectiveness window"),
        _c("n_stress_scenarios", "bigint", False, "Stress scenarios (count)"),
        _c("nav", "double", False, "NAV of the book, USD"),
        _c("previous_as_of", "timestamp", True, "Previous valuation the daily P&L is measured from (UTC)"),
    ),
)


PERFORMANCE_ANALYTICS = Table(
    name="performance_analytics",
    description=(
        "Performance of each book and strategy and of the risk controls, per valuation and rolling window. kind "
        "'returns': strategy '*' is the book (returns from book_nav), any other strategy its share of the book's "
        "revaluation P&L (return = P&L / the book's start-of-day NAV; 'unattributed' holds the rest, e.g. fills), "
        "ratios from empyrical; kind 'trades': closed round trips of executions (strategy 'trades') and stop hits "
        "of position_stops (strategy 'stops'); kind 'control': capital-preservation episodes, hedge "
        "recommendations and gap-risk actions judged on a counterfactual static book over the next "
        "horizon_sessions valuations, and the held hedges of hedge_performance (strategy 'control:<type>'). "
        "Formulas: README, 'Performance analytics'."
    ),
    key=("as_of", "book", "strategy", "window"),
    partition_by=("as_of",),
    columns=(
        _c("as_of", "timestamp", False, "Valuation time: the option snapshot used (UTC)"),
        _c("as_of_date", "date", False, "Trading session date (XNYS calendar)"),
        _c("book", "text", False, "Book name"),
        _c(
            "strategy",
            "text",
            False,
            "'*' (the whole book), a position strategy, 'unattributed', 'trades', 'stops' or 'control:<type>'",
        ),
        _c("window", "text", False, "1d, 21d, 63d, 252d (sessions) or inception"),
        _c("kind", "text", False, "returns, trades or control"),
        _c("window_start", "date", True, "First session in the window (NULL: no observation)"),
        _c("n_obs", "bigint", False, "Daily returns (returns), closed trades or stop hits (trades), events (control)"),
        _c("pnl", "double", True, "Sum of daily P&L over the window, USD (positive = gain)"),
        _c("nav", "double", True, "NAV of the book at as_of, USD"),
        _c("cumulative_return", "double", True, "prod(1 + r) - 1, decimal fraction (0.05 = +5 %)"),
        _c("annual_return", "double", True, "(1 + cumulative_return)^(252 / n) - 1 (CAGR), decimal fraction per year"),
        _c("annual_volatility", "double", True, "std(r, ddof=1) x sqrt(252), annualized decimal"),
        _c("sharpe_ratio", "double", True, "mean(r) / std(r, ddof=1) x sqrt(252), risk-free 0, dimensionless"),
        _c(
            "sortino_ratio",
            "double",
            True,
            "252 mean(r) / (sqrt(mean(min(r, 0)^2)) sqrt(252)), target 0, dimensionless",
        ),
        _c("calmar_ratio", "double", True, "annual_return / max_drawdown, dimensionless (NULL without drawdown)"),
        _c("max_drawdown", "double", True, "Largest fall of compounded wealth from its peak, decimal fraction >= 0"),
        _c(
            "max_drawdown_duration_sessions",
            "bigint",
            True,
            "Longest run of sessions below the running peak of wealth (sessions)",
        ),
        _c("hit_rate", "double", True, "#(r > 0) / #(r != 0), decimal fraction"),
        _c("profit_factor", "double", True, "sum of gains / |sum of losses|, dimensionless (NULL without a loss)"),
        _c("average_win", "double", True, "Mean of the positive daily returns, decimal fraction"),
        _c("average_loss", "double", True, "Mean of the negative daily returns, decimal fraction (< 0)"),
        _c("tail_ratio", "double", True, "|95th percentile of r| / |5th percentile of r|, dimensionless"),
        _c("win_rate", "double", True, "Closed trades with P&L > 0 / closed trades, decimal fraction"),
        _c("average_holding_sessions", "double", True, "Mean sessions from the first opening to the closing fill"),
        _c("average_mfe", "double", True, "Mean maximum favourable excursion, fraction of the entry price (>= 0)"),
        _c("average_mae", "double", True, "Mean maximum adverse excursion, fraction of the entry price (>= 0)"),
        _c(
            "stop_loss_avoided_pct",
            "double",
            True,
            "Mean side x (stop - close horizon_sessions later) / stop over stop hits, decimal (> 0 = the stop paid)",
        ),
        _c(
            "trailing_capture",
            "double",
            True,
            "Mean share of the best move kept by trailing stops that were hit, decimal fraction",
        ),
        _c("horizon_sessions", "bigint", True, "Sessions after an event over which a control is judged"),
        _c(
            "pnl_with",
            "double",
            True,
            "Static book's P&L with the control(s), summed over events, USD (positive = gain)",
        ),
        _c(
            "pnl_without",
            "double",
            True,
            "Static book's P&L without the control(s), summed over events, USD (positive = gain)",
        ),
        _c("control_difference", "double", True, "pnl_with - pnl_without, USD (positive = the control made money)"),
        _c(
            "drawdown_reduction",
            "double",
            True,
            "Max drawdown of the cumulative P&L without minus with, summed over events, USD (positive = cut)",
        ),
        _c("pnl_given_up", "double", True, "Sum of max(0, pnl_without - pnl_with) per event, USD (positive = cost)"),
        _c(
            "explicit_cost",
            "double",
            True,
            "Stated costs of the controls (hedges: estimated_cost), USD (positive = cost)",
        ),
        _c("net_benefit", "double", True, "control_difference - explicit_cost, USD (positive = paid for itself)"),
        _c(
            "share_paid",
            "double",
            True,
            "Share of events with net_benefit > 0 or drawdown_reduction > pnl_given_up + explicit_cost, decimal",
        ),
        _c("events", "json", True, "Per event or trade: its inputs and results (JSON list)"),
        _c("inputs", "json", False, "Tables, valuations and settings the row was computed from (JSON)"),
    ),
)


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        MARKET_PRICES,
        OPTION_QUOTES,
        INSTRUMENT_QUOTES,
        RATES_CURVE,
        DIVIDEND_YIELDS,
        EVENT_CALENDAR,
        POSITIONS,
        QUARANTINE,
        IMPLIED_VOLS,
        VOL_SURFACE,
        VOL_SURFACE_GRID,
        SABR_SLICES,
        HESTON_PARAMETERS,
        VOL_FIT_COMPARISON,
        STRESS_MODEL_CONSISTENT,
        VOL_FORECASTS,
        ATM_VOL_HISTORY,
        SMILE_HISTORY,
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
        REGULATORY_ES,
        STRESS_RESULTS,
        STRESS_GRID,
        VAR_BACKTEST,
        VAR_BACKTEST_OBSERVATIONS,
        EVENT_RISK,
        GAP_RISK_ACTIONS,
        VOLATILITY_INDEX,
        HEDGE_RECOMMENDATIONS,
        HEDGE_STRESS_EFFECTS,
        HEDGE_PERFORMANCE,
        EXECUTIONS,
        MANUAL_CONTROLS,
        COMPLIANCE_REPORTS,
        ALERTS,
        SIGNALS,
        POSITION_SIZING,
        POSITION_STOPS,
        CORRELATION_MATRIX,
        PORTFOLIO_HEAT,
        PERFORMANCE_ANALYTICS,
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
    "signals",
    "smile_history",
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
