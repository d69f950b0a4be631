"""Reading the hedging layer's inputs from the warehouse into the quant core's arrays (no Dagster)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.defs.hedging.config import HedgingConfig
from risk_pipeline.defs.risk.stress import parse_first_pass
from risk_pipeline.defs.risk.stress_vol import StoredVolParameters, parse_searched_shocks
from risk_pipeline.defs.risk.var import book_portfolio, return_history
from risk_pipeline.quant.hedging import GreekRows, Scenarios
from risk_pipeline.quant.limits import LimitsConfig
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet
from risk_pipeline.quant.stress import (
    FirstPass,
    RuleScenarios,
    ScenarioLibrary,
    stored_first_pass,
    stress_scenarios,
)
from risk_pipeline.quant.var import historical_scenarios
from risk_pipeline.warehouse import SCHEMA, Warehouse

#: Days of decay per trading session (as the VaR layer: 365 / 252).
CALENDAR_DAYS_PER_SESSION = 365.0 / 252.0
#: Revaluation method for American options everywhere in this layer (one method: the optimizer's linear
#: model and the verifying revaluation agree to rounding): the VaR layer's (``VarConfig.american``), BSM plus
#: the exact engine's early-exercise premium on a spline grid, about 30 x faster than the exact engine in
#: every scenario on a 500-contract chain and 1,000 scenarios (the intraday path revalues every candidate).
AMERICAN = "eep_grid"
VAR_LOOKBACK = 500
EFFECTIVENESS_WINDOW = 60


@dataclass(frozen=True)
class ScenarioBlocks:
    """Stress, 1-day and 5-day historical scenarios on the universe's symbols, with their horizons (days)."""

    stress: RuleScenarios
    stress_ids: tuple[str, ...]
    hist_1d: ScenarioSet
    hist_5d: ScenarioSet
    history_first: dt.date | None
    history_last: dt.date | None
    #: why there are no historical scenarios (ES is then not measured, and not constrained)
    history_missing: str | None = None
    #: where the stress vol rule's parameters came from (the stress_results row read, or why none)
    stress_vol_source: str = ""
    #: ``as_of`` of the stress_results run those parameters are stored with (None: none)
    stress_as_of: pd.Timestamp | None = None
    #: the parameters themselves (None: the library's rule uncalibrated)
    stress_vol: StoredVolParameters | None = None

    def blocks(self) -> list[tuple[Scenarios, float]]:
        return [
            (self.stress, 0.0),
            (self.hist_1d, CALENDAR_DAYS_PER_SESSION),
            (self.hist_5d, 5 * CALENDAR_DAYS_PER_SESSION),
        ]

    def slices(self) -> dict[str, slice]:
        a, b = self.stress.n_scenarios, self.hist_1d.n_scenarios
        return {
            "stress": slice(0, a),
            "es_1d": slice(a, a + b),
            "es_5d": slice(a + b, a + b + self.hist_5d.n_scenarios),
        }


def universe(rows: pd.DataFrame, extra: dict[str, float]) -> Portfolio:
    """The book's portfolio with ``extra`` symbols (name -> spot) added, held by no position."""
    p = book_portfolio(rows)
    new = [s for s in extra if s not in p.symbols]
    if not new:
        return p
    return replace(p, symbols=p.symbols + tuple(new), spot=np.concatenate([p.spot, [extra[s] for s in new]]))


def symbol_attributes(rows: pd.DataFrame, symbols: tuple[str, ...]) -> tuple[np.ndarray, list[Any]]:
    """Beta (position_greeks; 1 where unknown, e.g. the index) and sector per symbol."""
    betas = rows.groupby("symbol")["beta"].first().reindex(list(symbols)).fillna(1.0).to_numpy(float)
    sectors = rows.groupby("symbol")["sector"].first().reindex(list(symbols))
    return betas, [None if pd.isna(s) else s for s in sectors]


def stored_vol_parameters(
    wh: Warehouse, book: str, as_of: pd.Timestamp, max_age_days: int = 10
) -> tuple[StoredVolParameters | None, pd.Timestamp | None, str]:
    """The book's ``stress_results.vol_parameters`` at the latest stress run at or before ``as_of`` (within
    ``max_age_days``: an intraday review uses the last end of day's calibration), its ``as_of`` and where they
    came from."""
    if not wh.table_exists("stress_results"):
        return None, None, "no stress_results table"
    got = wh.query(
        "SELECT as_of, vol_parameters FROM risk.stress_results WHERE book = ? AND as_of <= ? AND as_of >= ? "
        "AND vol_parameters IS NOT NULL ORDER BY as_of DESC LIMIT 1",
        [book, as_of, as_of - pd.Timedelta(days=max_age_days)],
    )
    if got.empty:
        return None, None, f"no stress_results vol_parameters for {book} at or before {as_of.isoformat()}"
    t = pd.Timestamp(got["as_of"].iloc[0])
    return StoredVolParameters.parse(str(got["vol_parameters"].iloc[0])), t, f"stress_results {book} at {t.isoformat()}"


def stress_block(
    p: Portfolio,
    rows: pd.DataFrame,
    library: ScenarioLibrary,
    vol: StoredVolParameters | None,
    reuse: RuleScenarios | None = None,
) -> RuleScenarios:
    """The library's scenarios on ``p`` under the stress layer's vol rule: the rule, vol betas and residual sds
    stored with ``stress_results`` (``vol``), the book's worst idiosyncratic moves as ``run_stress`` finds them;
    without ``vol`` the library's rule uncalibrated (default vol beta, no idiosyncratic move). ``reuse``: the block
    of a book whose positions ``p`` starts with (``stress_scenarios``: its search reused where no line is added)."""
    betas, sectors = symbol_attributes(rows, p.symbols)
    if vol is None:
        return stress_scenarios(p, library.scenarios, betas, sectors, vol_rule=library.vol_rule, reuse=reuse)
    kw = vol.per_symbol(p.symbols)
    return stress_scenarios(p, library.scenarios, betas, sectors, vol_rule=vol.rule, reuse=reuse, **kw)


def stored_stress_block(
    wh: Warehouse,
    p: Portfolio,
    rows: pd.DataFrame,
    library: ScenarioLibrary,
    vol: StoredVolParameters | None,
    stress_as_of: pd.Timestamp | None,
) -> RuleScenarios | None:
    """``stress_block`` of the book without searching again: the shocks ``stress_results.searched_shocks`` stores for
    this book at this valuation (the stress step's search of the same positions, scenarios, rule and per-symbol
    inputs). None when they cannot stand for the search: another valuation, another library, other positions, spots or
    betas (``searched_digest``), a symbol column the stress step did not search (e.g. the index added to a book
    without it), or none stored."""
    got = _stored_stress_rows(wh, rows, library, vol, stress_as_of, "searched_shocks", ["spot_shock", "vol_shock"])
    if got is None or vol is None:
        return None
    items = library.scenarios
    if not (
        np.array_equal(got["spot_shock"].to_numpy(float), [s.index_move for s in items])
        and np.array_equal(got["vol_shock"].to_numpy(float), [s.vol.multiplier - 1.0 for s in items])
    ):
        return None
    betas, sectors = symbol_attributes(rows, p.symbols)
    stored = parse_searched_shocks(list(got["searched_shocks"]), p, betas)
    if stored is None:
        return None
    # the scenarios' closed-form fields (no idiosyncratic move: nothing revalued), then the stored shocks
    vol_betas = vol.per_symbol(p.symbols)["vol_betas"]
    closed = stress_scenarios(p, items, betas, sectors, vol_rule=vol.rule, vol_betas=vol_betas)
    return replace(closed, spot_log_shock=stored[0], name_log_vol_move=stored[1])


def _stored_stress_rows(
    wh: Warehouse,
    rows: pd.DataFrame,
    library: ScenarioLibrary,
    vol: StoredVolParameters | None,
    stress_as_of: pd.Timestamp | None,
    column: str,
    extra: Sequence[str] = (),
) -> pd.DataFrame | None:
    """The stress step's rows of this book at this valuation (``column`` and ``extra``), one per library scenario in
    the library's order; None when they cannot come from the stress step's search of this book: no calibrated
    ``expiry_name_skew`` rule, another valuation, an empty library, a warehouse written before ``column`` was added,
    other scenario ids or another library version."""
    book, as_of = str(rows["book"].iloc[0]), pd.Timestamp(rows["as_of"].iloc[0])
    if vol is None or vol.rule.kind != "expiry_name_skew" or stress_as_of != as_of or not library.scenarios:
        return None
    has_column = wh.query(
        "SELECT COUNT(*) AS n FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "AND column_name = ?",
        [SCHEMA, "stress_results", column],
    )
    if int(has_column["n"].iloc[0]) == 0:
        return None
    got = wh.read(
        "stress_results", {"as_of": as_of, "book": book}, columns=["scenario_id", "library_version", *extra, column]
    ).set_index("scenario_id")
    ids = [s.scenario_id for s in library.scenarios]
    if set(got.index) != set(ids) or len(got) != len(ids) or (got["library_version"] != library.version).any():
        return None
    return got.loc[ids]


def stored_stress_first_pass(
    wh: Warehouse,
    p: Portfolio,
    rows: pd.DataFrame,
    library: ScenarioLibrary,
    vol: StoredVolParameters | None,
    stress_as_of: pd.Timestamp | None,
) -> FirstPass | None:
    """Pass 1 of the book's search as ``stress_results.searched_first_pass`` stores it for this book at this valuation
    (the stress step's search), for the hedged book's ``stress_block``: only when its digest is that of this search's
    own portfolio, scenarios, rule, engine and per-symbol inputs (``quant.stress.stored_first_pass``); None when it
    cannot stand for the search (another valuation, library, position, spot, beta, vol input or symbol column, or
    none stored)."""
    got = _stored_stress_rows(wh, rows, library, vol, stress_as_of, "searched_first_pass")
    if got is None or vol is None:
        return None
    parsed = parse_first_pass(list(got["searched_first_pass"]))
    if parsed is None:
        return None
    betas, sectors = symbol_attributes(rows, p.symbols)
    return stored_first_pass(
        p, library.scenarios, betas, sectors, *parsed, vol_rule=vol.rule, **vol.per_symbol(p.symbols)
    )


def searched_block(
    block: RuleScenarios,
    p: Portfolio,
    rows: pd.DataFrame,
    library: ScenarioLibrary,
    vol: StoredVolParameters | None,
    wh: Warehouse | None = None,
    stress_as_of: pd.Timestamp | None = None,
) -> RuleScenarios:
    """``block`` when it carries its search's pass 1; else with the pass 1 the stress step stored for the book
    (``stored_stress_first_pass``, given ``wh``); else the book's search (``stress_block``): what a hedged book's
    ``stress_block`` reuses."""
    if block.first_pass is not None:
        return block
    if wh is not None:
        first = stored_stress_first_pass(wh, p, rows, library, vol, stress_as_of)
        if first is not None:
            return replace(block, first_pass=first)
    return stress_block(p, rows, library, vol)


def scenario_blocks(
    wh: Warehouse, session: dt.date, p: Portfolio, rows: pd.DataFrame, library: ScenarioLibrary
) -> ScenarioBlocks:
    """The stress library (``stress_block``: scenarios, betas, sectors and vol rule as the stress layer; the shocks
    stress_results stored for the book at this valuation when it has them, ``stored_stress_block``) and the VaR
    layer's historical scenarios (none, with the reason, when the history is shorter than VaR needs)."""
    option_symbols = sorted(rows.loc[rows["instrument_type"] == "option", "symbol"].unique())
    vol, stress_as_of, source = stored_vol_parameters(
        wh, str(rows["book"].iloc[0]), pd.Timestamp(rows["as_of"].iloc[0])
    )
    stress = stored_stress_block(wh, p, rows, library, vol, stress_as_of) or stress_block(p, rows, library, vol)
    source = f"{stress.rule.label()} ({source})"
    ids = tuple(s.scenario_id for s in library.scenarios)
    try:
        factors = return_history(wh, session, p.symbols, VAR_LOOKBACK, option_symbols)
    except dg.Failure as exc:  # too short a history (e.g. an intraday run on a new folder source)
        empty = ScenarioSet(np.zeros((0, p.n_symbols)))
        return ScenarioBlocks(stress, ids, empty, empty, None, None, str(exc.description), source, stress_as_of, vol)
    hist = factors.history.window(VAR_LOOKBACK)
    return ScenarioBlocks(
        stress=stress,
        stress_ids=ids,
        hist_1d=historical_scenarios(hist, 1),
        hist_5d=historical_scenarios(hist, 5),
        history_first=factors.first,
        history_last=factors.last,
        stress_vol_source=source,
        stress_as_of=stress_as_of,
        stress_vol=vol,
    )


def greek_rows(limits: LimitsConfig, symbols: tuple[str, ...]) -> tuple[GreekRows, np.ndarray]:
    """Rows for every enabled Greek limit (per-symbol delta and gamma, book dollar delta and vega) and their
    warning levels."""
    wd = limits.warn_threshold("max_abs_net_delta_shares")
    wg = limits.warn_threshold("max_abs_gamma_shares")
    wdd = limits.warn_threshold("max_abs_net_dollar_delta")
    wv = limits.warn_threshold("max_abs_vega_per_vol_point")
    rows = GreekRows(
        delta_symbols=symbols if wd is not None else (),
        gamma_symbols=symbols if wg is not None else (),
        dollar_delta=wdd is not None,
        vega=wv is not None,
    )
    levels = [wd] * len(rows.delta_symbols) + [wg] * len(rows.gamma_symbols)
    levels += [wdd] if wdd is not None else []
    levels += [wv] if wv is not None else []
    return rows, np.array(levels, dtype=float)


def book_exposure(rows: pd.DataFrame, g: GreekRows) -> np.ndarray:
    """The book's value of every Greek row, from the stored position_greeks (``GreekRows.totals``: linear in the
    positions, no rows x positions matrix)."""
    return g.totals(
        rows["symbol"].tolist(),
        rows["delta"].to_numpy(float),
        rows["gamma"].to_numpy(float),
        rows["dollar_delta"].to_numpy(float),
        rows["vega_per_vol_point"].to_numpy(float),
    )


def option_candidates(
    quotes: pd.DataFrame, vols: pd.DataFrame, spots: dict[str, float], as_of: pd.Timestamp, cfg: HedgingConfig
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Liquid quotes of the candidate underlyings, priced at the side traded (ask to buy, bid to sell).

    Keeps quotes with a positive bid, a relative spread at most ``max_relative_spread``, days to expiry in
    range, |ln(K / S)| at most ``max_abs_log_moneyness`` and an OK implied vol; then the
    ``max_options_per_underlying`` nearest the money per underlying. One row per quote and side.
    Also returns how many quotes each filter removed.
    """
    key = ["underlying", "expiry", "strike", "option_type"]
    q = quotes[quotes["underlying"].isin(list(spots))].copy()
    skipped: dict[str, int] = {}

    def keep(mask: pd.Series, why: str) -> None:
        nonlocal q
        skipped[why] = int((~mask).sum())
        q = q[mask]

    keep(q["bid"] > 0, "zero_bid")
    mid = (q["bid"] + q["ask"]) / 2
    keep((q["ask"] > q["bid"]) & ((q["ask"] - q["bid"]) / mid <= cfg.max_relative_spread), "spread_too_wide")
    days = (pd.to_datetime(q["expiry"]) - as_of.tz_convert("America/New_York").tz_localize(None).normalize()).dt.days
    keep((days >= cfg.min_days_to_expiry) & (days <= cfg.max_days_to_expiry), "expiry_out_of_range")
    spot = q["underlying"].map(spots).astype(float)
    lm = np.log(q["strike"].astype(float) / spot)
    keep(lm.abs() <= cfg.max_abs_log_moneyness, "strike_out_of_range")
    # status "OK" in any case: the distinct labels upper-cased, not every row (the whole chain's vols)
    ok = [s for s in pd.unique(vols["status"].dropna()) if isinstance(s, str) and s.upper() == "OK"]
    v = vols[vols["implied_vol"].notna() & vols["status"].isin(ok)]
    v = v[[*key, "implied_vol", "time_to_expiry_years", "rate", "dividend_yield"]]
    merged = q.merge(v, on=key, how="left")
    skipped["no_implied_vol"] = int(merged["implied_vol"].isna().sum())
    merged = merged[merged["implied_vol"].notna()].copy()
    merged["abs_lm"] = np.log(merged["strike"] / merged["underlying"].map(spots)).abs()
    merged = merged.sort_values(["underlying", "abs_lm", "expiry", "strike", "option_type"])
    merged = merged.groupby("underlying", sort=True).head(cfg.max_options_per_underlying)
    buy = merged.assign(side=1, price=merged["ask"], price_side="ask")
    sell = merged.assign(side=-1, price=merged["bid"], price_side="bid")
    out = pd.concat([buy, sell], ignore_index=True)
    out["mid"] = (out["bid"] + out["ask"]) / 2
    out["instrument_type"] = "option"
    out = out.rename(columns={"underlying": "symbol"})
    return out.reset_index(drop=True), skipped


def delta_one_candidates(spots: dict[str, float], index_symbol: str, cfg: HedgingConfig) -> pd.DataFrame:
    """Buy and sell lines of every underlying and the index at mid -/+ the configured half spread."""
    h = cfg.stock_half_spread_bps / 1e4
    out = []
    for s, px in spots.items():
        kind = "index" if s == index_symbol else "stock"
        for side, price, label in ((1, px * (1 + h), "ask"), (-1, px * (1 - h), "bid")):
            out.append(
                {"symbol": s, "instrument_type": kind, "side": side, "price": price, "mid": px, "price_side": label}
            )
    return pd.DataFrame(out)


def index_instrument_candidates(
    instruments: pd.DataFrame, index_symbol: str, index_spot: float, as_of: pd.Timestamp, cfg: HedgingConfig
) -> pd.DataFrame:
    """Buy and sell lines of the index futures and inverse ETFs of ``instrument_quotes`` (ask to buy, bid to sell).

    Each is a line on the index: ``index_units`` per contract (a future: multiplier x fair value / index,
    i.e. multiplier x exp((r - q) T); an ETF share: leverage x price / index), ``multiplier`` the USD per
    quoted point. ``carry`` per contract over the horizon: a future's basis roll-down
    ``max(side x multiplier x F x (r - q) x days / 365, 0)``; an ETF's financing as a stock's. Futures
    expiring within ``min_days_to_expiry`` and quotes wider than ``max_relative_spread`` are skipped.
    """
    cols = ["symbol", "instrument_symbol", "instrument_type", "side", "price", "mid", "price_side", "multiplier",
            "index_units", "carry", "expiry", "fair_value"]  # fmt: skip
    q = instruments[(instruments["underlying"] == index_symbol) & (instruments["bid"] > 0)]
    q = q[(q["ask"] - q["bid"]) / q["price"] <= cfg.max_relative_spread]
    today = as_of.tz_convert("America/New_York").tz_localize(None).normalize()
    days_left = (pd.to_datetime(q["expiry"]) - today).dt.days
    q = q[(q["instrument_type"] == "etf") | (days_left >= cfg.min_days_to_expiry)]
    horizon_days = cfg.horizon_sessions * CALENDAR_DAYS_PER_SESSION
    out = []
    for r in q.itertuples():
        fut = r.instrument_type == "future"
        units = r.multiplier * r.fair_value / index_spot if fut else r.leverage * r.price / index_spot
        for side, price, label in ((1, r.ask, "ask"), (-1, r.bid, "bid")):
            if fut:
                carry = max(side * r.multiplier * r.fair_value * (r.rate - r.dividend_yield) * horizon_days / 365, 0.0)
            else:
                carry = abs(r.price) * cfg.financing_rate * horizon_days / 365.0
            expiry = r.expiry if fut else None
            out.append([index_symbol, r.symbol, r.instrument_type, side, float(price), float(r.price), label,
                        float(r.multiplier), float(units), carry, expiry, float(r.fair_value)])  # fmt: skip
    return pd.DataFrame(out, columns=cols)


def lines_portfolio(c: pd.DataFrame, spots: dict[str, float], quantity: np.ndarray) -> Portfolio:
    """Candidate rows as a Portfolio (``quantity`` signed per row), on the symbols they name."""
    symbols = tuple(sorted(set(c["symbol"]))) if len(c) else (next(iter(spots)),)
    index = {s: i for i, s in enumerate(symbols)}
    opt = (c["instrument_type"] == "option").to_numpy(bool)

    def col(name: str, default: float) -> np.ndarray:
        return np.where(opt, c[name].to_numpy(float), default) if name in c else np.full(len(c), default)

    # index units per contract of a delta-one line: 1 for stock and index, its own for futures and ETFs
    delta_one_units = c["index_units"].fillna(1.0).to_numpy(float) if "index_units" in c else 1.0

    return Portfolio(
        symbols=symbols,
        spot=np.array([spots[s] for s in symbols]),
        symbol_index=c["symbol"].map(index).to_numpy(np.intp),
        quantity=np.asarray(quantity, dtype=float),
        multiplier=np.where(opt, c["multiplier"].to_numpy(float), delta_one_units) if "multiplier" in c else 1.0,
        is_option=opt,
        is_call=(c["option_type"] == "C").to_numpy(bool) if "option_type" in c else False,
        strike=col("strike", 1.0),
        time_years=col("time_to_expiry_years", 0.0),
        implied_vol=col("implied_vol", 0.0),
        rate=col("rate", 0.0),
        dividend_yield=col("dividend_yield", 0.0),
        is_american=(c["exercise_style"] == "american").to_numpy(bool) & opt if "exercise_style" in c else False,
        position_id=tuple(f"hedge-{i}" for i in range(len(c))),
    )
