"""VaR and expected shortfall four ways per book, with component VaR and a JSON document per book."""

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    TableWrite,
    fail_closed,
    markdown_table,
    partition_sessions,
    publish,
    session_check_spec,
    table_definition_metadata,
)
from risk_pipeline.defs.risk.stress_vol import (
    CALIBRATION_MIN_OBS,
    CALIBRATION_SESSIONS,
    DEFAULT_INDEX_SYMBOL,
    stress_vol_inputs,
)
from risk_pipeline.errors import RiskDataError
from risk_pipeline.event_windows import var_with_gap_scenarios
from risk_pipeline.paths import LIMITS_FILE, SCENARIOS_FILE
from risk_pipeline.quant.limits import load_limits
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.sabr_dynamics import SabrBackboneSlide, SabrSlices
from risk_pipeline.quant.scenario_engine import GridMemo, grid_memo
from risk_pipeline.quant.smile_dynamics import ExpiryScaledVolMoves, SmileDynamics, StickyMoneyness, SviSlices
from risk_pipeline.quant.stress import load_scenarios
from risk_pipeline.quant.var import (
    ALL_METHODS,
    HISTORICAL,
    STRESS_WINDOW_DAYS,
    STRESSED_HISTORICAL,
    MarketHistory,
    VarConfig,
    VarReport,
    VarResult,
    compute_var,
    historical_scenarios,
    historical_var_runs,
    stressed_var,
)
from risk_pipeline.queries import atm_vol_matrix, book_valuations, close_matrix
from risk_pipeline.resources import ExportsResource, WarehouseResource
from risk_pipeline.warehouse import Between, Warehouse

GROUP = "risk"
#: Sessions of stored history searched for the stressed window (up to ten years; whatever is stored).
STRESS_HISTORY_SESSIONS = 2520


#: smile dynamics historical VaR offers (VarSettings.smile_dynamics)
SMILE_DYNAMICS = ("sticky_strike", "sticky_moneyness", "sabr")
#: term structures of the ATM vol move (VarSettings.vol_term_structure)
TERM_STRUCTURES = ("flat", "expiry_scaled")


class VarSettings(dg.Config):
    """Look-back, scenario count and seed of the VaR run."""

    lookback_days: int = 500
    n_scenarios: int = 10_000
    seed: int = 0
    limits_file: str = str(LIMITS_FILE)
    #: covariance of the parametric methods: "equal_weight" over the look-back or "ewma" (RiskMetrics, 0.94)
    covariance: str = "equal_weight"
    #: smile dynamics of historical VaR (quant/smile_dynamics.py): "sticky_strike" (each strike's vol scaled by the
    #: ATM move), "sticky_moneyness" (also read at the moved log-moneyness of its SVI slice, vol_surface) or "sabr"
    #: (also slid along its SABR slice's backbone, sabr_slices); the others are computed beside it
    #: (var_results.smile_sensitivity)
    smile_dynamics: str = "sticky_strike"
    #: term structure of the ATM vol move: "flat" (the 30-day move at every expiry) or "expiry_scaled" (times
    #: (30 / tau)^alpha, alpha fitted as the stress layer fits it); the other is computed beside it
    vol_term_structure: str = "expiry_scaled"
    #: the rate risk factor of historical and FHS VaR: every option's rate moves by the day's change of the 91-day
    #: zero rate (rates_curve)
    rate_factor: bool = True
    #: the dividend risk factor of historical and FHS VaR: every option's dividend yield moves by the day's change of
    #: its underlying's yield (dividend_yields)
    dividend_factor: bool = True


def book_portfolio(rows: pd.DataFrame) -> Portfolio:
    """The quant core's Portfolio from one book's position_greeks rows (inputs as stored)."""
    symbols = tuple(sorted(rows["symbol"].unique()))
    index = {s: i for i, s in enumerate(symbols)}
    spot = rows.groupby("symbol")["spot"].first().reindex(list(symbols)).to_numpy(float)
    is_option = (rows["instrument_type"] == "option").to_numpy(bool)
    return Portfolio(
        symbols=symbols,
        spot=spot,
        symbol_index=rows["symbol"].map(index).to_numpy(np.intp),
        quantity=rows["quantity"].to_numpy(float),
        multiplier=rows["multiplier"].to_numpy(float),
        is_option=is_option,
        is_call=(rows["option_type"] == "C").to_numpy(bool),
        strike=np.where(is_option, rows["strike"].to_numpy(float), 1.0),
        time_years=np.where(is_option, rows["time_to_expiry_years"].to_numpy(float), 0.0),
        implied_vol=np.where(is_option, rows["implied_vol"].to_numpy(float), 0.0),
        rate=np.where(is_option, rows["rate"].to_numpy(float), 0.0),
        dividend_yield=np.where(is_option, rows["dividend_yield"].to_numpy(float), 0.0),
        is_american=(rows["exercise_style"] == "american").to_numpy(bool),
        position_id=tuple(rows["position_id"]),
    )


def slice_of_position(rows: pd.DataFrame, portfolio: Portfolio, slices: pd.DataFrame) -> np.ndarray:
    """Each position's row in ``slices`` (underlying, expiry), -1 for stocks and options without one."""
    index = {
        (str(u), pd.Timestamp(e).date()): i
        for i, (u, e) in enumerate(zip(slices["underlying"], slices["expiry"], strict=True))
    }
    expiry = pd.to_datetime(rows["expiry"]).dt.date
    return np.array(
        [
            index.get((str(s), e), -1) if o else -1
            for s, e, o in zip(rows["symbol"], expiry, portfolio.is_option, strict=True)
        ],
        dtype=np.intp,
    )


def book_slices(rows: pd.DataFrame, portfolio: Portfolio, sabr: pd.DataFrame) -> SabrSlices:
    """The book's SABR slices (``sabr_slices`` rows of the snapshot) and each position's, by underlying and expiry."""
    keyed = sabr.reset_index(drop=True)
    return SabrSlices(
        alpha=keyed["sabr_alpha"].to_numpy(float),
        beta=keyed["sabr_beta"].to_numpy(float),
        rho=keyed["sabr_rho"].to_numpy(float),
        nu=keyed["sabr_nu"].to_numpy(float),
        forward=keyed["forward"].to_numpy(float),
        time_years=keyed["time_to_expiry_years"].to_numpy(float),
        formula=tuple(str(m).split(":")[-1] for m in keyed["model"]),
        slice_of_position=slice_of_position(rows, portfolio, keyed),
    )


def book_svi_slices(rows: pd.DataFrame, portfolio: Portfolio, surface: pd.DataFrame) -> SviSlices:
    """The book's SVI slices (``vol_surface`` rows of the snapshot) and each position's, by underlying and expiry."""
    keyed = surface.reset_index(drop=True)
    return SviSlices(
        *(keyed[f"svi_{c}"].to_numpy(float) for c in ("a", "b", "rho", "m", "sigma")),
        forward=keyed["forward"].to_numpy(float),
        time_years=keyed["time_to_expiry_years"].to_numpy(float),
        slice_of_position=slice_of_position(rows, portfolio, keyed),
    )


def smile_dynamics(
    wh: Warehouse, as_of: pd.Timestamp, rows: pd.DataFrame, portfolio: Portfolio
) -> dict[str, SmileDynamics | None]:
    """Every smile dynamic historical VaR offers for the book at ``as_of`` (None: sticky strike, or the slices
    it needs are not stored, then left out)."""
    out: dict[str, SmileDynamics | None] = {"sticky_strike": None}
    for name, table_name, build in (
        ("sticky_moneyness", "vol_surface", lambda f: StickyMoneyness(book_svi_slices(rows, portfolio, f))),
        ("sabr", "sabr_slices", lambda f: SabrBackboneSlide(book_slices(rows, portfolio, f))),
    ):
        frame = wh.read(table_name, {"as_of": as_of}) if wh.table_exists(table_name) else None
        if frame is not None and len(frame):
            out[name] = build(frame)
    return out


#: Grid builds ``var_results`` keeps for the next ones (``scenario_engine.GridMemo``): the three horizons' of the
#: historical VaR for the gap sets', of the last smile run for the stressed window's
GRID_MEMO_BUILDS = 3


def smile_sensitivity(
    portfolio: Portfolio,
    history: MarketHistory,
    cfg: VarConfig,
    dynamics: dict[str, SmileDynamics | None],
    terms: dict[str, SmileDynamics | None],
    production: tuple[str, str],
    report: VarReport,
    pnl_out: dict[tuple[str, str], dict[int, np.ndarray]] | None = None,
) -> dict[tuple[str, int, float], str]:
    """Historical VaR of every (horizon, confidence) under each available smile dynamic (with the production term
    structure) and under each term structure (with the production smile), as the JSON of the historical rows
    (``{"smile": {"production": name, "var": {name: USD}}, "term": {...}}``) keyed by (method, horizon,
    confidence); the production figure is the report's (before event gaps). ``pnl_out`` receives each (smile, term)
    pair's scenario P&L by horizon."""
    smile, term = production
    # every (smile, term) pair the report needs; the production one is the report's
    pairs = list(dict.fromkeys([(name, term) for name in dynamics] + [(smile, name) for name in terms]))
    # the sticky-strike, flat-term run on its own grids and last: the stressed VaR reuses its 1-day P&L
    # (same_one_day_pnl) and its window's builds find their Americans' grids in this run's (the memo of the last
    # builds); the other runs share one grid a horizon (historical_var_runs: within the grid's interpolation error
    # of their own grids')
    alone = ("sticky_strike", "flat")
    shared = [x for x in pairs if x not in (production, alone)]
    own = [alone] if alone in pairs and alone != production else []

    def var_by_row(results: Sequence[VarResult]) -> dict[tuple[int, float], float]:
        return {(r.horizon_days, round(r.confidence, 6)): r.var for r in results}

    got: dict[tuple[str, str], dict[tuple[int, float], float]] = {}
    for group in (shared, own):
        if not group:
            continue
        runs = historical_var_runs(
            portfolio, history, cfg, [(dynamics[s], terms[t]) for s, t in group], components=False
        )  # only the VaR of each row is read: the components are not computed
        for (s, t), (res, pnls) in zip(group, runs, strict=True):
            if pnl_out is not None:
                pnl_out[(s, t)] = pnls
            got[(s, t)] = var_by_row(res)
    if pnl_out is not None:
        pnl_out[production] = {h: p for (m, h), p in report.scenario_pnl.items() if m == HISTORICAL}
    got[production] = var_by_row([r for r in report.results if r.method == HISTORICAL])
    by_smile = {name: got[(name, term)] for name in dynamics}
    by_term = {name: got[(smile, name)] for name in terms}
    return {
        (HISTORICAL, h, c): json.dumps(
            {
                "smile": {"production": smile, "var": {n: round(v[(h, c)], 2) for n, v in by_smile.items()}},
                "term": {"production": term, "var": {n: round(v[(h, c)], 2) for n, v in by_term.items()}},
            }
        )
        for h, c in by_smile[smile]
    }


def same_one_day_pnl(
    history: MarketHistory,
    long: MarketHistory,
    cfg: VarConfig,
    pnls: dict[tuple[str, str], dict[int, np.ndarray]],
) -> np.ndarray | None:
    """The sticky-strike, flat-term historical VaR's 1-day P&L (``smile_sensitivity``'s) when its scenarios are
    those of the stressed VaR's whole-history search (``stressed_var``): the look-back holds every stored return of
    ``long`` (fewer stored sessions than the look-back), so both revalue the same 1-day set, no vol shifts, the same
    book; None otherwise."""
    mine = pnls.get(("sticky_strike", "flat"), {}).get(1)
    if mine is None:
        return None
    a, b = historical_scenarios(history.window(cfg.lookback_days), 1), historical_scenarios(long, 1)

    def same(x: np.ndarray | None, y: np.ndarray | None) -> bool:
        return (x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))

    fields = ("spot_shock_rel", "vol_scale", "rate_shift_abs", "dividend_shift_abs")
    return mine if all(same(getattr(a, f), getattr(b, f)) for f in fields) else None


def gjr_wins(wh: Warehouse, session: dt.date, symbols: Sequence[str]) -> np.ndarray:
    """Per symbol: GJR-GARCH's out-of-sample 1-day QLIKE in ``vol_forecasts`` (the latest session up to
    ``session``) is below GARCH's; False without both losses (the FHS then filters with GARCH)."""
    if not wh.table_exists("vol_forecasts") or not symbols:
        return np.zeros(len(symbols), dtype=bool)
    rows = wh.query(
        "SELECT symbol, model, oos_loss FROM risk.vol_forecasts WHERE horizon_days = 1 AND model IN ('garch', 'gjr') "
        "AND as_of_date = (SELECT MAX(as_of_date) FROM risk.vol_forecasts WHERE as_of_date <= ?)",
        [session],
    )
    loss = rows.pivot_table(index="symbol", columns="model", values="oos_loss", aggfunc="first")
    loss = loss.reindex(index=list(symbols), columns=["garch", "gjr"])
    return (loss["gjr"] < loss["garch"]).to_numpy(bool)  # NaN compares False


def term_structures(wh: Warehouse, session: dt.date, symbols: Sequence[str]) -> dict[str, SmileDynamics | None]:
    """``flat`` (the 30-day ATM move at every expiry) and ``expiry_scaled`` (that move times (30 / tau)^alpha, alpha
    fitted on atm_vol_history's near and far expiries exactly as the stress layer fits it)."""
    library = load_scenarios(str(SCENARIOS_FILE))
    fitted = stress_vol_inputs(
        wh, session, symbols, DEFAULT_INDEX_SYMBOL, library.vol_rule, CALIBRATION_SESSIONS, CALIBRATION_MIN_OBS
    )
    return {"flat": None, "expiry_scaled": ExpiryScaledVolMoves(fitted.rule)}


@dataclass(frozen=True)
class RiskFactorHistory:
    """Returns and ATM-vol moves of a book's underlyings, with the window and the vol coverage."""

    history: MarketHistory
    first: dt.date
    last: dt.date
    iv_coverage: float
    #: the date of each return row (the session it ends on)
    dates: tuple[dt.date, ...] = ()
    #: share of the days with a measured zero-rate change (NaN without the rate factor)
    rate_coverage: float = float("nan")
    #: share of the (day, optioned underlying) cells with a measured dividend-yield change (NaN without the factor)
    dividend_coverage: float = float("nan")


def factor_levels(
    wh: Warehouse, session: dt.date, sessions_back: int, symbols: Sequence[str], purpose: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Closes and 30-day ATM vols (sessions x ``symbols``, same index) covering ``sessions_back`` sessions.

    Fails closed, naming ``purpose``, when a symbol has no price history.
    """
    wide = close_matrix(wh, session, sessions_back, symbols)
    missing = [s for s in symbols if s not in wide.columns]
    if missing:
        raise dg.Failure(f"no price history for {missing}: {purpose} cannot be computed (fail closed)")
    vols = atm_vol_matrix(wh, wide.index[0], session, symbols).reindex(wide.index)
    return wide[list(symbols)], vols


#: Tenor (calendar days) of the zero rate whose daily change is the rate risk factor of historical VaR.
RATE_FACTOR_TENOR_DAYS = 91


@dataclass(frozen=True)
class FactorRows:
    """The stored rows ``return_history`` reads for ``sessions_back`` sessions ending at ``session``: closes
    (``queries.close_matrix``'s window), ATM vols, the zero rate and the dividend yields (None when not read)."""

    session: dt.date
    sessions_back: int
    symbols: tuple[str, ...]
    closes: pd.DataFrame
    vols: pd.DataFrame
    curve: pd.DataFrame | None
    yields: pd.DataFrame | None


def _close_window_start(session: dt.date, sessions_back: int) -> dt.date:
    """The first calendar date of ``queries.close_matrix(wh, session, sessions_back)``'s read."""
    return session - dt.timedelta(days=int((sessions_back + 1) * 7 / 5) + 30)


def _dated(frame: pd.DataFrame, first: dt.date, last: dt.date) -> pd.DataFrame:
    """The rows of ``frame`` (in order) whose ``as_of_date`` is in ``[first, last]`` (a ``Between`` read's rows)."""
    dates = frame["as_of_date"]
    return frame[((dates >= first) & (dates <= last)).to_numpy(bool)]


def read_factor_rows(
    wh: Warehouse,
    session: dt.date,
    symbols: tuple[str, ...],
    sessions_back: int,
    rate_factor: bool,
    dividend_factor: bool,
    longer: FactorRows | None = None,
) -> FactorRows:
    """``return_history``'s reads; ``longer``: rows already read for the same session, symbols and factors over
    at least as many sessions, whose rows in this window are taken instead of reading them again (the same rows in
    the same order, so the same frames bit for bit)."""
    start = _close_window_start(session, sessions_back)
    if (
        longer is not None
        and longer.session == session
        and longer.symbols == symbols
        and longer.sessions_back >= sessions_back
        and (longer.curve is not None) == rate_factor
        and (longer.yields is not None) == dividend_factor
    ):
        closes = _dated(longer.closes, start, session)
        if not len(closes):
            return FactorRows(session, sessions_back, symbols, closes, longer.vols.iloc[:0], None, None)
        first, last = min(closes["as_of_date"]), max(closes["as_of_date"])
        return FactorRows(
            session,
            sessions_back,
            symbols,
            closes,
            _dated(longer.vols, first, session),
            None if longer.curve is None else _dated(longer.curve, first, last),
            None if longer.yields is None else _dated(longer.yields, first, last),
        )
    closes = wh.read(
        "market_prices",
        {"as_of_date": Between(start, session), "symbol": list(symbols)},
        columns=["as_of_date", "symbol", "close"],
    )
    if not len(closes):
        return FactorRows(session, sessions_back, symbols, closes, closes.iloc[:0], None, None)
    first, last = min(closes["as_of_date"]), max(closes["as_of_date"])
    vols = wh.read(
        "atm_vol_history",
        {"as_of_date": Between(first, session), "symbol": list(symbols)},
        columns=["as_of_date", "symbol", "atm_vol"],
    )
    span = Between(first, last)
    curve = (
        wh.read(
            "rates_curve",
            {"tenor_days": RATE_FACTOR_TENOR_DAYS, "as_of_date": span},
            columns=["as_of_date", "zero_rate"],
        )
        if rate_factor
        else None
    )
    yields = (
        wh.read(
            "dividend_yields",
            {"as_of_date": span, "symbol": list(symbols)},
            columns=["as_of_date", "symbol", "dividend_yield"],
        )
        if dividend_factor
        else None
    )
    return FactorRows(session, sessions_back, symbols, closes, vols, curve, yields)


def return_history(
    wh: Warehouse,
    session: dt.date,
    symbols: tuple[str, ...],
    lookback: int,
    option_symbols: Sequence[str] = (),
    rate_factor: bool = False,
    dividend_factor: bool = False,
    rows: FactorRows | None = None,
) -> RiskFactorHistory:
    """Daily log returns and relative ATM-vol changes of ``symbols`` over the last ``lookback`` sessions.

    The vol change of a day is ``atm_vol_t / atm_vol_(t-1) - 1`` from ``atm_vol_history``; a day without both
    vols is NaN (the vol is left unchanged that day). With ``rate_factor`` the rate change of a day is the change
    of the ``RATE_FACTOR_TENOR_DAYS`` zero rate (``rates_curve``), applied to every option's rate as a parallel
    shift (NaN without both: rates unchanged that day). With ``dividend_factor`` the dividend-yield change of a
    day is that of each underlying's yield (``dividend_yields``), applied to every option on it (NaN without
    both: unchanged that day). ``iv_coverage`` is the measured share of the (day, underlying) cells of
    ``option_symbols`` (1.0 when the book has no options); ``rate_coverage`` and ``dividend_coverage`` the same
    for the two factors (NaN when off). ``rows``: ``read_factor_rows(wh, session, symbols, lookback, rate_factor,
    dividend_factor)`` when already read (the frames are those of ``factor_levels`` and the reads below).
    """
    if rows is None:
        rows = read_factor_rows(wh, session, symbols, lookback, rate_factor, dividend_factor)
    # factor_levels' frames from the rows (queries.close_matrix and atm_vol_matrix)
    wide = rows.closes.pivot(index="as_of_date", columns="symbol", values="close").sort_index()
    missing = [s for s in symbols if s not in wide.columns]
    if missing:
        raise dg.Failure(f"no price history for {missing}: VaR cannot be computed (fail closed)")
    vol_wide = rows.vols.pivot(index="as_of_date", columns="symbol", values="atm_vol").sort_index()
    vols = vol_wide.reindex(columns=list(symbols)).reindex(wide.index)
    wide = wide[list(symbols)]
    returns = np.log(wide).diff().iloc[1:].dropna().tail(lookback)
    if len(returns) < 250:
        raise dg.Failure(f"only {len(returns)} days of complete return history before {session}; VaR needs 250")
    iv_change = (vols / vols.shift(1) - 1.0).reindex(returns.index)
    measured = np.isfinite(iv_change[list(option_symbols)].to_numpy(float)) if option_symbols else np.ones(1)
    rate_change, div_change = None, None
    rate_coverage, div_coverage = float("nan"), float("nan")
    if rate_factor:
        assert rows.curve is not None
        rate = rows.curve.set_index("as_of_date")["zero_rate"].reindex(wide.index)
        rate_change = rate.diff().reindex(returns.index).to_numpy(float)
        rate_coverage = float(np.isfinite(rate_change).mean())
    if dividend_factor:
        assert rows.yields is not None
        yields = rows.yields.pivot(index="as_of_date", columns="symbol", values="dividend_yield")
        yields = yields.reindex(index=wide.index, columns=list(symbols))
        div_frame = yields.diff().reindex(returns.index)
        div_change = div_frame.to_numpy(float)
        div_coverage = (
            float(np.isfinite(div_frame[list(option_symbols)].to_numpy(float)).mean()) if option_symbols else 1.0
        )
    return RiskFactorHistory(
        MarketHistory(returns.to_numpy(float), iv_change.to_numpy(float), rate_change, div_change),
        returns.index[0],
        returns.index[-1],
        float(measured.mean()),
        tuple(returns.index),
        rate_coverage,
        div_coverage,
    )


def var_document(rows: pd.DataFrame, current_exposure: float, var_cap: float | None) -> dict[str, Any]:
    """The JSON document downstream tools read per book (99 % historical VaR)."""
    pick = rows[(rows["method"] == "historical") & np.isclose(rows["confidence"], 0.99)].set_index("horizon_days")
    var_1d = float(pick.loc[1, "var"])
    return {
        "var_1d": var_1d,
        "var_3d": float(pick.loc[3, "var"]),
        "var_5d": float(pick.loc[5, "var"]),
        "confidence": 0.99,
        "current_exposure": float(current_exposure),
        "status": "within_limits" if var_cap is None or var_1d <= var_cap else "breach",
        # what the gap scenarios of events inside each horizon add to that VaR (0 without such an event)
        "gap_component": {
            **{f"var_{h}d": float(np.nan_to_num(pick.loc[h].get("gap_var", np.nan))) for h in (1, 3, 5)},
            "events": sorted({e for v in pick.get("gap_events", pd.Series()).dropna() for e in json.loads(v)}),
        },
    }


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "var_results",
            group_name=GROUP,
            deps=[
                "position_greeks",
                "market_prices",
                "atm_vol_history",
                "rates_curve",
                "dividend_yields",
                "event_calendar",
                "vol_surface",
                "sabr_slices",
                "vol_forecasts",
            ],
            kinds={"pandas", "numba", "json"},
            owners=OWNERS,
            description=(
                "VaR and ES per book at 95 / 97.5 / 99 % over 1, 3 and 5 sessions: historical simulation with full "
                "revaluation under joint moves of spot, ATM implied vol (atm_vol_history), the 91-day zero rate "
                "(rates_curve) and each name's dividend yield (dividend_yields; overlapping multi-day moves), "
                "delta-normal, delta-gamma-vega Cornish-Fisher, and filtered historical simulation Monte "
                "Carlo (returns standardized by GARCH, or by GJR-GARCH where its out-of-sample 1-day QLIKE in "
                "vol_forecasts is lower; joint date resampling, 10,000 scenarios). Also "
                "exports/var/<book>.json, written once the rows are published."
            ),
            metadata=table_definition_metadata("var_results"),
        ),
        dg.AssetSpec(
            "var_contributions",
            group_name=GROUP,
            deps=["var_results"],
            kinds={"pandas"},
            owners=OWNERS,
            description=(
                "Component VaR per underlying of every var_results row (Euler allocation: sums to the book's VaR), "
                "published in the same transaction as var_results."
            ),
            metadata=table_definition_metadata("var_contributions"),
        ),
    ],
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        session_check_spec(
            "es_at_least_var",
            asset="var_results",
            blocking=True,
            description="Expected shortfall >= VaR for every row.",
        ),
        session_check_spec(
            "monotone_in_confidence_and_horizon",
            asset="var_results",
            description="VaR non-decreasing in confidence and in horizon.",
        ),
        session_check_spec(
            "components_sum_to_var",
            asset="var_contributions",
            blocking=True,
            description="Component VaR of every result sums to its VaR.",
        ),
        session_check_spec(
            "methods_agree",
            asset="var_results",
            description="Every method within a factor 3 of historical VaR (warning).",
        ),
    ],
)
@fail_closed
def var_results(
    context: dg.AssetExecutionContext, config: VarSettings, warehouse: WarehouseResource, exports: ExportsResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    wh = warehouse.get()
    limits = load_limits(config.limits_file)
    cfg = VarConfig(
        lookback_days=config.lookback_days,
        n_scenarios=config.n_scenarios,
        seed=config.seed,
        covariance=config.covariance,  # type: ignore[arg-type]  # checked by VarConfig
    )
    if config.smile_dynamics not in SMILE_DYNAMICS:
        raise dg.Failure(f"var_results: smile_dynamics must be one of {SMILE_DYNAMICS}, got {config.smile_dynamics!r}")
    if config.vol_term_structure not in TERM_STRUCTURES:
        raise dg.Failure(
            f"var_results: vol_term_structure must be one of {TERM_STRUCTURES}, got {config.vol_term_structure!r}"
        )
    result_rows, component_rows, documents = [], [], {}
    valuations = list(book_valuations(wh, partition_sessions(context)))
    terms_at: dict[pd.Timestamp, dict[str, SmileDynamics | None]] = {}
    for v in valuations:
        portfolio = book_portfolio(v.rows)
        option_symbols = sorted(v.rows.loc[v.rows["instrument_type"] == "option", "symbol"].unique())
        # the stressed VaR's whole-history rows, read once: the look-back's are those of its last sessions
        long_rows = read_factor_rows(
            wh, v.session, portfolio.symbols, STRESS_HISTORY_SESSIONS, config.rate_factor, config.dividend_factor
        )
        factors = return_history(
            wh, v.session, portfolio.symbols, cfg.lookback_days, option_symbols, config.rate_factor,
            config.dividend_factor,
            read_factor_rows(
                wh, v.session, portfolio.symbols, cfg.lookback_days, config.rate_factor, config.dividend_factor,
                longer=long_rows,
            ),
        )  # fmt: skip
        dynamics = smile_dynamics(wh, v.as_of, v.rows, portfolio)
        if config.smile_dynamics not in dynamics:
            raise RiskDataError(
                f"smile_dynamics {config.smile_dynamics!r} needs its slices "
                f"({'vol_surface' if config.smile_dynamics == 'sticky_moneyness' else 'sabr_slices'}) at "
                f"{v.as_of.isoformat()}: run them first"
            )
        if v.as_of not in terms_at:  # one calibration a valuation, on every book's names as the stress step does
            names = sorted({str(x) for w in valuations if w.as_of == v.as_of for x in w.rows["symbol"]})
            terms_at[v.as_of] = term_structures(wh, v.session, names)
        terms = terms_at[v.as_of]
        smile, term = dynamics[config.smile_dynamics], terms[config.vol_term_structure]
        # the historical VaR's grid builds keep their Americans' exercise boundaries (one build per horizon) for the gap
        # sets' builds, whose vol, rate and yield ranges are theirs (the Monte Carlo's builds in between left out)
        hist_memo = GridMemo(GRID_MEMO_BUILDS, boundaries=True, nodes=False)
        with grid_memo(hist_memo):
            report = compute_var(portfolio, factors.history, cfg, methods=ALL_METHODS[:3], smile=smile, term=term)
        mc = compute_var(
            portfolio, factors.history, cfg, methods=ALL_METHODS[3:],
            fhs_asymmetric=gjr_wins(wh, v.session, portfolio.symbols),
        )  # fmt: skip
        report = VarReport(report.results + mc.results, {**report.scenario_pnl, **mc.scenario_pnl})
        # events inside a horizon: historical VaR with their gap scenarios, the gap component in its own columns
        with grid_memo(hist_memo):
            gap = var_with_gap_scenarios(
                wh, v.session, v.as_of, v.rows, portfolio, factors.history, cfg, report,
                dynamics=[d for d in (smile, term) if d is not None],
            )  # fmt: skip
        del hist_memo
        production = (config.smile_dynamics, config.vol_term_structure)
        pnls: dict[tuple[str, str], dict[int, np.ndarray]] = {}
        long = return_history(
            wh, v.session, portfolio.symbols, STRESS_HISTORY_SESSIONS, option_symbols, config.rate_factor,
            config.dividend_factor, long_rows,
        )  # fmt: skip
        # the smile runs (on the report before the gap sets), then the stressed VaR right after them: the stressed
        # window's grid builds find most of their Americans' grid work in the last smile run's (sticky strike, flat
        # term: the same returns), one build per horizon, in the memo of the last three builds
        with grid_memo(GridMemo(GRID_MEMO_BUILDS)):
            sensitivity = smile_sensitivity(portfolio, factors.history, cfg, dynamics, terms, production, report, pnls)
            stressed, start = stressed_var(
                portfolio, long.history, cfg, one_day_pnl=same_one_day_pnl(factors.history, long.history, cfg, pnls)
            )
        report = gap.report
        book_rows = pd.DataFrame(report.rows()).merge(
            gap.gap_columns, on=["method", "horizon_days", "confidence"], how="left"
        )
        book_rows["gap_events"] = book_rows["gap_events"].astype(object).where(book_rows["gap_events"].notna(), None)
        book_rows["smile_sensitivity"] = [
            sensitivity.get((m, int(h), round(float(c), 6))) for m, h, c in
            zip(book_rows["method"], book_rows["horizon_days"], book_rows["confidence"], strict=True)
        ]  # fmt: skip
        book_rows.insert(0, "book", v.book)
        book_rows.insert(0, "as_of_date", v.session)
        book_rows.insert(0, "as_of", v.as_of)
        book_rows["history_start"], book_rows["history_end"] = factors.first, factors.last
        book_rows["seed"], book_rows["iv_history_coverage"] = cfg.seed, factors.iv_coverage
        book_rows["rate_history_coverage"] = factors.rate_coverage
        book_rows["dividend_history_coverage"] = factors.dividend_coverage
        # stressed VaR/ES (computed above): historical simulation on the worst 250-session window of the whole
        # stored history
        stressed_rows = pd.DataFrame([r.to_row() for r in stressed])
        stressed_rows.insert(0, "book", v.book)
        stressed_rows.insert(0, "as_of_date", v.session)
        stressed_rows.insert(0, "as_of", v.as_of)
        stressed_rows["history_start"] = long.dates[start]
        stressed_rows["history_end"] = long.dates[start + STRESS_WINDOW_DAYS - 1]
        stressed_rows["seed"], stressed_rows["iv_history_coverage"] = cfg.seed, long.iv_coverage
        stressed_rows["rate_history_coverage"] = long.rate_coverage
        stressed_rows["dividend_history_coverage"] = long.dividend_coverage
        for c in ("gap_var", "gap_expected_shortfall", "gap_events", "smile_sensitivity"):
            stressed_rows[c] = None
        result_rows.append(pd.concat([book_rows, stressed_rows[book_rows.columns]], ignore_index=True))
        report = VarReport(report.results + stressed, report.scenario_pnl)
        parts = pd.DataFrame(report.contribution_rows())
        parts.insert(0, "book", v.book)
        parts.insert(0, "as_of", v.as_of)
        component_rows.append(parts)
        documents[v.book] = var_document(
            book_rows, float(v.rows["dollar_delta"].abs().sum()), limits.for_book(v.book).max_var_99_1d
        )
    results = pd.concat(result_rows, ignore_index=True)
    components = pd.concat(component_rows, ignore_index=True)
    parts_ = [{"as_of": t} for t in sorted(results["as_of"].unique())]
    headline = results[np.isclose(results["confidence"], 0.99) & (results["horizon_days"] == 1)]
    headline = headline[["book", "method", "var", "expected_shortfall", "n_scenarios"]].round(0)
    yield from publish(
        context,
        wh,
        [TableWrite("var_results", results, parts_), TableWrite("var_contributions", components, parts_)],
        checks=var_checks(results, components),
        metadata={
            "var_results": {
                "var_99_1d": dg.MetadataValue.md(
                    markdown_table(
                        headline[["book", "method", "var", "expected_shortfall", "n_scenarios"]].round(0), 20
                    )
                ),
                "json_documents": ", ".join(f"var/{book}.json" for book in documents),
                "iv_history_coverage": ", ".join(
                    f"{b}: {c:.3f}" for b, c in results.groupby("book")["iv_history_coverage"].first().items()
                ),
            }
        },
    )
    for book, doc in documents.items():  # only once the rows they summarize are published
        exports.write_json(f"var/{book}.json", doc)


def var_checks(results: pd.DataFrame, components: pd.DataFrame) -> list[dg.AssetCheckResult]:
    """The four var_results checks, computed from the rows written."""
    es_bad = results[results["expected_shortfall"] < results["var"] - 1e-9 * results["var"].abs()]
    mono_bad = []
    for (book, method, h), g in results.groupby(["book", "method", "horizon_days"]):
        v = g.sort_values("confidence")["var"].to_numpy()
        if np.any(np.diff(v) < -1e-9 * np.abs(v[:-1])):
            mono_bad.append(f"{book} {method} h={h}: not increasing in confidence")
    for (book, method, c), g in results.groupby(["book", "method", "confidence"]):
        v = g.sort_values("horizon_days")["var"].to_numpy()
        if np.any(np.diff(v) < -1e-9 * np.abs(v[:-1])):
            mono_bad.append(f"{book} {method} {c}: not increasing in horizon")
    sums = components.groupby(["book", "method", "horizon_days", "confidence"])["component_var"].sum()
    joined = results.set_index(["book", "method", "horizon_days", "confidence"])["var"]
    gap = (sums - joined.reindex(sums.index)).abs() / joined.reindex(sums.index).abs().clip(lower=1.0)
    # stressed VaR is meant to exceed today's: it is not compared
    ratio = results[results["method"] != STRESSED_HISTORICAL].merge(
        results[results["method"] == "historical"][["book", "horizon_days", "confidence", "var"]],
        on=["book", "horizon_days", "confidence"],
        suffixes=("", "_historical"),
    )
    ratio["ratio"] = ratio["var"] / ratio["var_historical"]
    outliers = ratio[(ratio["ratio"] > 3) | (ratio["ratio"] < 1 / 3)]
    return [
        dg.AssetCheckResult(
            check_name="es_at_least_var",
            asset_key="var_results",
            passed=es_bad.empty,
            metadata={"violations": len(es_bad)},
        ),
        dg.AssetCheckResult(
            check_name="monotone_in_confidence_and_horizon",
            asset_key="var_results",
            passed=not mono_bad,
            # a warning, like methods_agree: a book with carry (short options: theta grows with the horizon,
            # the spread only with its square root) can have a lower multi-day VaR at 95-97.5 %
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"violations": len(mono_bad), "detail": "; ".join(mono_bad[:10]) or "none"},
        ),
        dg.AssetCheckResult(
            check_name="components_sum_to_var",
            asset_key="var_contributions",
            passed=bool((gap < 1e-6).all()),
            metadata={"worst_relative_gap": float(gap.max()) if len(gap) else 0.0},
        ),
        dg.AssetCheckResult(
            check_name="methods_agree",
            asset_key="var_results",
            passed=outliers.empty,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "ratio_range": f"{ratio['ratio'].min():.2f} .. {ratio['ratio'].max():.2f}",
                "outside_3x": dg.MetadataValue.md(
                    markdown_table(outliers[["book", "method", "horizon_days", "confidence", "ratio"]].round(3), 20)
                ),
            },
        ),
    ]
