"""VaR backtests per book: realized P&L against the previous valuation's VaR, and today's book carried back."""

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.calendar import sessions
from risk_pipeline.contracts import table
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    TableWrite,
    fail_closed,
    markdown_table,
    publish,
    table_definition_metadata,
)
from risk_pipeline.defs.risk.var import TERM_STRUCTURES, book_portfolio, factor_levels, gjr_wins, term_structures
from risk_pipeline.quant.backtest import (
    christoffersen_independence,
    conditional_coverage,
    kupiec_pof,
    traffic_light,
)
from risk_pipeline.quant.book_backtest import GarchCache, rolling_garch_fits, static_book_backtest
from risk_pipeline.quant.es_backtest import Z2Cache, rolling_z2, simulated_z2, z2_test
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.smile_dynamics import SmileDynamics
from risk_pipeline.quant.surface_backtest import SmileGrid, surface_repriced_pnl
from risk_pipeline.quant.var import ALL_METHODS, MONTE_CARLO_FHS, VarConfig
from risk_pipeline.quant.vol_forecast import GarchParams
from risk_pipeline.queries import latest_valuation
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Between, Warehouse

WINDOW = 250
CONFIDENCE = 0.99
MIN_HISTORY = 250
#: Backtest days between refits of the Monte Carlo method's GARCH models in the static-book backtest.
GARCH_REFIT_DAYS = 21
#: Books whose static-book and surface backtests run at the same time (threads).
BOOK_THREADS = 2
#: Level of the ES backtest (FRTB's ES level) and the simulations behind its p-value.
ES_CONFIDENCE = 0.975
ES_SIMULATIONS = 5_000

#: Columns of each method's latest window shown in the materialization's metadata.
SUMMARY_COLUMNS = ["book", "method", "n_obs", "exceptions", "kupiec_p_value", "traffic_light", "es_z2"]
SUMMARY_COLUMNS += ["es_z2_p_value", "es_traffic_light"]
#: The ES-backtest columns of var_backtest.
ES_COLUMNS = ("es_confidence", "es_n_obs", "es_z2", "es_z2_p_value", "es_traffic_light")
#: Per method: (VaR, ES) at ES_CONFIDENCE on each day of the series.
EsSeries = dict[str, tuple[np.ndarray, np.ndarray]]


class BacktestSettings(dg.Config):
    """Days of the static-book backtest and the VaR settings it uses (those of var_results by default)."""

    backtest_days: int = 250
    lookback_days: int = 500
    n_scenarios: int = 10_000
    seed: int = 0
    #: term structure of the historical VaR's and the hypothetical P&L's ATM vol move, as var_results'
    #: ``vol_term_structure`` ("flat" or "expiry_scaled", alpha fitted on atm_vol_history at the session)
    vol_term_structure: str = "expiry_scaled"


def book_series(wh: Warehouse, book: str, until: dt.date) -> pd.DataFrame:
    """Per end-of-day valuation: the day's realized P&L and every method's 1-day 99 % VaR of the day before."""
    nav = wh.query(
        "SELECT n.as_of, n.as_of_date, n.daily_pnl, n.pnl_basis FROM risk.book_nav n WHERE n.book = ? "
        "AND n.as_of_date <= ? AND n.as_of = (SELECT MAX(m.as_of) FROM risk.book_nav m "
        "WHERE m.book = n.book AND m.as_of_date = n.as_of_date) ORDER BY n.as_of",
        [book, until],
    )
    if nav.empty:
        return pd.DataFrame()
    # the 1-day rows at both levels in one read (the rows of a read per level: each pivot sorts its own)
    both = wh.query(
        "SELECT as_of, method, confidence, var, expected_shortfall FROM risk.var_results "
        "WHERE book = ? AND horizon_days = 1 AND confidence IN (?, ?)",
        [book, CONFIDENCE, ES_CONFIDENCE],
    )
    level = both["confidence"].to_numpy(float)
    var = both[level == CONFIDENCE]
    if var.empty:
        return pd.DataFrame()
    wide = var.pivot(index="as_of", columns="method", values="var")
    at_es = both[level == ES_CONFIDENCE]
    if len(at_es):
        for value, prefix in (("var", "es_var:"), ("expected_shortfall", "es:")):
            part = at_es.pivot(index="as_of", columns="method", values=value)
            wide = wide.join(part.add_prefix(prefix), how="left")
    nav["previous_as_of"] = nav["as_of"].shift(1)
    nav["previous_date"] = nav["as_of_date"].shift(1)
    nav = nav[~nav["pnl_basis"].str.startswith("inception")].dropna(subset=["previous_as_of"])
    at_99 = [c for c in wide.columns if ":" not in c]
    return nav.join(wide, on="previous_as_of").dropna(subset=at_99, how="all")


def sessions_apart(series: pd.DataFrame) -> np.ndarray:
    """Exchange sessions from each row's ``previous_date`` to its ``as_of_date`` (1 = consecutive valuations)."""
    if series.empty:
        return np.zeros(0, dtype=np.int64)
    first, last = min(series["previous_date"]), max(series["as_of_date"])
    ordinals = np.array([d.toordinal() for d in sessions(first, last)])
    before = np.searchsorted(ordinals, [d.toordinal() for d in series["previous_date"]], side="right")
    upto = np.searchsorted(ordinals, [d.toordinal() for d in series["as_of_date"]], side="right")
    return upto - before


def rolling_rows(
    pnl_dates: pd.Series,
    pnl: np.ndarray,
    var: dict[str, np.ndarray],
    book: str,
    source: str,
    es: EsSeries | None = None,
    z2_cache: Z2Cache | None = None,
) -> pd.DataFrame:
    """var_backtest rows: for every day, the window of the last WINDOW observations ending there.

    Days without a VaR are left out of a window (its exceptions and consecutive-day pairs are those of
    the days kept); a window without any is skipped. All windows of a method at once (cumulative counts).
    With ``es``, each window also gets the Acerbi-Szekely Z2 at ES_CONFIDENCE over its days with a VaR and
    ES there, and each method's latest window its simulated p-value and zone (``z2_cache``: one dict for a run,
    so that series with the same VaR and ES share one simulation).
    """
    columns = table("var_backtest").data_column_names
    dates = np.asarray(list(pnl_dates), dtype=object)
    ends = np.arange(len(dates))
    starts = np.maximum(0, ends - WINDOW + 1)
    if z2_cache is not None and es:
        _simulate_latest_z2(pnl, var, es, starts, ends, z2_cache)
    frames = []
    for method, v in var.items():
        ok = np.isfinite(v)
        kept = (pnl < -v)[ok]  # the exception series of the days with a VaR
        before = np.concatenate([[0], np.cumsum(ok)])
        lo, hi = before[starts], before[ends + 1]  # each window's days in ``kept``: [lo, hi)
        has = hi > lo
        lo, hi, n_obs = lo[has], hi[has], (hi - lo)[has]
        cum = np.concatenate([[0], np.cumsum(kept)])
        x = cum[hi] - cum[lo]
        a, b = kept[:-1], kept[1:]
        # pairs (j, j + 1) of the window: j in [lo, hi - 2]
        pairs = [np.concatenate([[0], np.cumsum(p)]) for p in (~a & ~b, ~a & b, a & ~b, a & b)]
        counts = [c[hi - 1] - c[lo] for c in pairs]
        lr_pof, p_pof = (np.atleast_1d(r) for r in kupiec_pof(x, n_obs, CONFIDENCE))
        lr_ind, p_ind = (np.atleast_1d(r) for r in christoffersen_independence(*counts))
        lr_cc, p_cc = (np.atleast_1d(r) for r in conditional_coverage(lr_pof, lr_ind))
        frames.append(
            pd.DataFrame(
                {
                    "window_end": dates[ends[has]],
                    "book": book,
                    "method": method,
                    "confidence": float(CONFIDENCE),
                    "window_start": dates[starts[has]],
                    "n_obs": n_obs.astype(np.int64),
                    "exceptions": x.astype(np.int64),
                    "expected_exceptions": n_obs * (1.0 - CONFIDENCE),
                    "kupiec_lr": lr_pof,
                    "kupiec_p_value": p_pof,
                    "christoffersen_lr": lr_ind,
                    "christoffersen_p_value": p_ind,
                    "conditional_coverage_lr": lr_cc,
                    "conditional_coverage_p_value": p_cc,
                    "traffic_light": np.atleast_1d(traffic_light(x, n_obs, CONFIDENCE)).astype(object),
                    "source": source,
                    **_es_columns(pnl, (es or {}).get(method), ends[has], z2_cache),
                },
                columns=columns,
            )
        )
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _latest_es_window(pnl: np.ndarray, es_var: np.ndarray, es: np.ndarray, end: int) -> np.ndarray:
    """Days of the WINDOW ending at ``end`` with a P&L, VaR and ES (the latest window's Z2 test)."""
    last = np.arange(max(0, end - WINDOW + 1), end + 1)
    return last[np.isfinite(es_var[last]) & np.isfinite(es[last]) & np.isfinite(pnl[last])]


def _simulate_latest_z2(
    pnl: np.ndarray, var: dict[str, np.ndarray], es: EsSeries, starts: np.ndarray, ends: np.ndarray, cache: Z2Cache
) -> None:
    """Simulate the Z2 distributions of every method's latest window into ``cache`` at once, on two threads
    (numpy's generator releases the GIL), so that ``_es_columns`` finds them there."""
    todo = []
    for method, v in var.items():
        before = np.concatenate([[0], np.cumsum(np.isfinite(v))])
        has = before[ends + 1] > before[starts]
        if method not in es or not has.any():
            continue
        es_var, es_value = es[method]
        keep = _latest_es_window(pnl, es_var, es_value, int(ends[has][-1]))
        if keep.size:
            todo.append((es_var[keep], es_value[keep]))
    if len(todo) < 2:
        return
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="z2") as pool:
        for future in [pool.submit(simulated_z2, v, e, 1.0 - ES_CONFIDENCE, ES_SIMULATIONS, 0, cache) for v, e in todo]:
            future.result()


def _es_columns(
    pnl: np.ndarray,
    series: tuple[np.ndarray, np.ndarray] | None,
    ends: np.ndarray,
    z2_cache: Z2Cache | None = None,
) -> dict[str, Any]:
    """The ES-backtest columns of the windows ending at ``ends`` (none without an ES series: NULL)."""
    n = len(ends)
    if series is None or n == 0:
        return {name: np.full(n, np.nan) for name in ES_COLUMNS}
    out: dict[str, Any] = {
        "es_confidence": np.full(n, np.nan),
        "es_n_obs": pd.array([None] * n, dtype="Int64"),
        "es_z2": np.full(n, np.nan),
        "es_z2_p_value": np.full(n, np.nan),
        "es_traffic_light": np.full(n, None, dtype=object),
    }
    es_var, es = series
    alpha = 1.0 - ES_CONFIDENCE
    z2, count = rolling_z2(pnl, es_var, es, alpha, WINDOW)
    z2, count = z2[ends], count[ends]
    has = count > 0
    out["es_confidence"] = np.where(has, ES_CONFIDENCE, np.nan)
    out["es_n_obs"] = pd.Series(count).where(has).astype("Int64").array
    out["es_z2"] = z2
    if has[-1]:
        keep = _latest_es_window(pnl, es_var, es, int(ends[-1]))
        test = z2_test(pnl[keep], es_var[keep], es[keep], alpha, n_simulations=ES_SIMULATIONS, seed=0, cache=z2_cache)
        out["es_z2_p_value"][-1] = test.p_value
        out["es_traffic_light"][-1] = test.zone
    return out


def observation_frame(
    book: str,
    var_dates: Any,
    pnl_dates: Any,
    pnl: np.ndarray,
    var: dict[str, np.ndarray],
    source: str,
    *,
    n_scenarios: int | None = None,
    es: EsSeries | None = None,
    **inputs: Any,
) -> pd.DataFrame:
    """var_backtest_observations rows: one per method and day with a VaR (``inputs``: the optional columns).

    ``n_scenarios`` applies to the Monte Carlo method only; ``es`` gives each method's VaR and ES at
    ES_CONFIDENCE.
    """
    columns = table("var_backtest_observations").data_column_names
    inputs = {k: v.to_numpy() if isinstance(v, pd.Series) else v for k, v in inputs.items()}
    frames = []
    for method, v in var.items():
        es_var, es_value = (es or {}).get(method, (np.full(len(v), np.nan), np.full(len(v), np.nan)))
        frame = pd.DataFrame(
            {
                **inputs,
                "book": book,
                "method": method,
                "confidence": CONFIDENCE,
                "var_date": np.asarray(var_dates),
                "pnl_date": np.asarray(pnl_dates),
                "horizon_days": 1,
                "var": v,
                "pnl": pnl,
                "exception": pnl < -v,
                "n_scenarios": n_scenarios if method == MONTE_CARLO_FHS else None,
                "source": source,
                "es_confidence": np.where(np.isfinite(es_value), ES_CONFIDENCE, np.nan),
                "es_var": es_var,
                "expected_shortfall": es_value,
            }
        ).reindex(columns=columns)
        frames.append(frame[np.isfinite(v)])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def realized(wh: Warehouse, book: str, until: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Windows and observations of the book's realized P&L against the previous valuation's VaR."""
    series = book_series(wh, book, until)
    gaps = sessions_apart(series)
    series = series[gaps <= 1] if len(series) else series
    methods = [m for m in ALL_METHODS if m in series.columns]
    var = {m: series[m].to_numpy(float) for m in methods}
    es = {
        m: (series[f"es_var:{m}"].to_numpy(float), series[f"es:{m}"].to_numpy(float))
        for m in methods
        if f"es:{m}" in series.columns
    }
    pnl = series["daily_pnl"].to_numpy(float) if len(series) else np.zeros(0)
    source = "book_nav.daily_pnl against the previous valuation's var_results"
    if (gaps > 1).any():
        source += f"; {int((gaps > 1).sum())} P&L spanning more than one session left out (a gap between valuations)"
    windows = rolling_rows(series.get("as_of_date", pd.Series(dtype=object)), pnl, var, book, source, es)
    obs = observation_frame(
        book,
        series.get("previous_date"),
        series.get("as_of_date"),
        pnl,
        var,
        source,
        es=es,
        positions_as_of=series.get("previous_as_of"),
    )
    return windows, obs


@dataclass(frozen=True, eq=False)
class BookHistory:
    """The inputs of one book's static-book backtest: closes and ATM vols (oldest first, the session last)."""

    portfolio: Portfolio
    dates: pd.Series
    closes: np.ndarray
    atm_vols: np.ndarray
    calendar_days: np.ndarray
    days: np.ndarray
    config: VarConfig


def book_history(
    wh: Warehouse,
    book: str,
    rows: pd.DataFrame,
    session: dt.date,
    settings: BacktestSettings,
    levels: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> BookHistory:
    """The closes and ATM vols behind ``book``'s static-book backtest and its backtest days (may be none).
    ``levels``: ``factor_levels`` of the same session and sessions for symbols including the book's (one read for
    several books), whose columns of the book's symbols are taken instead of reading them again."""
    portfolio = book_portfolio(rows)
    need = settings.backtest_days + settings.lookback_days + 1
    symbols = list(portfolio.symbols)
    if levels is not None and set(symbols) <= set(levels[0].columns):
        # the book's own read would pivot the same stored rows: the same values on its dates, and the dates where
        # only other books' names trade are all NaN in its columns, dropped below (complete rows only); its vols
        # from an earlier first date, reindexed to those complete rows
        wide, vols = levels[0][symbols], levels[1][symbols]
    else:
        wide, vols = factor_levels(wh, session, need, portfolio.symbols, f"the static-book backtest of {book}")
    wide = wide.dropna().tail(need)
    vols = vols.reindex(wide.index)
    if len(wide) == 0 or wide.index[-1] != session:
        raise dg.Failure(f"no closes of {book}'s underlyings on {session}")
    first_day = max(MIN_HISTORY, len(wide) - 1 - settings.backtest_days)
    dates = pd.Series(list(wide.index))
    ordinals = np.array([d.toordinal() for d in dates], dtype=float)
    return BookHistory(
        portfolio=portfolio,
        dates=dates,
        closes=wide.to_numpy(float),
        atm_vols=vols.to_numpy(float),
        calendar_days=np.concatenate([[0.0], np.diff(ordinals)]),
        days=np.arange(first_day, len(wide) - 1),
        config=VarConfig(lookback_days=settings.lookback_days, n_scenarios=settings.n_scenarios, seed=settings.seed),
    )


def book_garch_fits(
    history: BookHistory, garch_cache: GarchCache | None = None, asymmetric: Sequence[bool] | None = None
) -> list[list[GarchParams]]:
    """The Monte Carlo method's GARCH fits of ``history``'s backtest days (``book_backtest.rolling_garch_fits``;
    GJR-GARCH for the symbols flagged ``asymmetric``, as var_results filters them)."""
    return rolling_garch_fits(
        history.closes,
        history.days,
        history.config.lookback_days,
        refit_every=GARCH_REFIT_DAYS,
        garch_cache=garch_cache,
        asymmetric=asymmetric,
    )


def hypothetical(
    wh: Warehouse,
    book: str,
    rows: pd.DataFrame,
    as_of: pd.Timestamp,
    session: dt.date,
    settings: BacktestSettings,
    garch_cache: GarchCache | None = None,
    *,
    history: BookHistory | None = None,
    garch_fits: list[list[GarchParams]] | Callable[[], list[list[GarchParams]]] | None = None,
    z2_cache: Z2Cache | None = None,
    term: SmileDynamics | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Windows and observations of the book as of ``as_of`` carried back over the last sessions (``garch_cache``:
    one dict for the run's books, so that books sharing an underlying share its GARCH fits; ``history`` and
    ``garch_fits``: ``book_history`` and ``book_garch_fits`` made beforehand, the fits possibly as a function
    returning them, called when the Monte Carlo method needs them)."""
    x = history if history is not None else book_history(wh, book, rows, session, settings)
    label = f"hypothetical:{book}"
    if x.days.size == 0:
        return pd.DataFrame(), pd.DataFrame()
    result = static_book_backtest(
        x.portfolio,
        x.closes,
        x.atm_vols,
        x.calendar_days,
        x.days,
        x.config,
        confidence=CONFIDENCE,
        es_confidence=ES_CONFIDENCE,
        min_history=MIN_HISTORY,
        refit_every=GARCH_REFIT_DAYS,
        garch_cache=garch_cache,
        garch_fits=garch_fits,
        term=term,
    )
    source = (
        f"hypothetical P&L of {book}'s positions as of {as_of.isoformat()} carried back (quant.book_backtest); "
        f"VaR by var.compute_var, look-back {settings.lookback_days}, seed {settings.seed}; "
        f"vol term structure {'flat' if term is None else term.label}"
    )
    pnl_dates = x.dates.iloc[x.days + 1].reset_index(drop=True)
    es = {m: (result.es_var[m], result.expected_shortfall[m]) for m in result.expected_shortfall}
    windows = rolling_rows(pnl_dates, result.pnl, result.var, label, source, es, z2_cache)
    obs = observation_frame(
        label,
        x.dates.iloc[x.days],
        pnl_dates,
        result.pnl,
        result.var,
        source,
        es=es,
        book_value=result.book_value,
        lookback_days=result.lookback_days,
        n_scenarios=settings.n_scenarios,
        seed=settings.seed,
        positions_as_of=as_of,
    )
    return windows, obs


def smile_grid(wh: Warehouse, dates: Sequence[dt.date], symbols: Sequence[str]) -> SmileGrid:
    """The stored surfaces (``smile_history``) of ``dates`` x ``symbols`` as a ``SmileGrid`` (NaN: none stored)."""
    rows = wh.read(
        "smile_history",
        {"as_of_date": Between(dates[0], dates[-1]), "symbol": list(symbols)},
        columns=["as_of_date", "symbol", "tenor_days", "atm_vol", "put_25d_vol", "call_25d_vol"],
    )
    tenors = np.sort(rows["tenor_days"].unique().astype(np.int64)) if len(rows) else np.array([30], dtype=np.int64)
    day_at = {d: i for i, d in enumerate(dates)}
    sym_at = {s: j for j, s in enumerate(symbols)}
    shape = (len(dates), len(symbols), tenors.size)
    out = {c: np.full(shape, np.nan) for c in ("atm_vol", "put_25d_vol", "call_25d_vol")}
    if len(rows):
        i = rows["as_of_date"].map(day_at)
        keep = i.notna().to_numpy()
        i = i.to_numpy()[keep].astype(np.intp)
        j = rows["symbol"].map(sym_at).to_numpy()[keep].astype(np.intp)
        k = np.searchsorted(tenors, rows["tenor_days"].to_numpy(np.int64)[keep])
        for c, arr in out.items():
            arr[i, j, k] = rows[c].to_numpy(float)[keep]
    return SmileGrid(tenors / 365.0, out["atm_vol"], out["put_25d_vol"], out["call_25d_vol"])


def surface_repriced(
    wh: Warehouse,
    book: str,
    rows: pd.DataFrame,
    as_of: pd.Timestamp,
    session: dt.date,
    hypothetical_obs: pd.DataFrame,
    z2_cache: Z2Cache | None = None,
    history: BookHistory | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Windows and observations of ``surface:<book>``: the static book's VaR (those of ``hypothetical:<book>``)
    against its P&L repriced off each day's stored surface (``quant.surface_backtest``). ``history``: the book's
    ``book_history``, whose closes are taken instead of reading them again (the same rows)."""
    if hypothetical_obs.empty:
        return pd.DataFrame(), pd.DataFrame()
    portfolio = book_portfolio(rows)
    var_dates = sorted(set(hypothetical_obs["var_date"]))
    if history is None:
        wide, _ = factor_levels(wh, session, len(var_dates) + 2, portfolio.symbols, f"the surface backtest of {book}")
        wide = wide.dropna()
        wide = wide[wide.index >= var_dates[0]]
        dates, closes = list(wide.index), wide.to_numpy(float)
    else:
        # the rows factor_levels(wh, session, len(var_dates) + 2, ...) reads (close_matrix's calendar span), complete,
        # from var_dates[0]: those of the history, which read the same prices over a longer span and kept every
        # complete row from before var_dates[0]
        span_start = session - dt.timedelta(days=int((len(var_dates) + 3) * 7 / 5) + 30)
        keep = (history.dates >= max(var_dates[0], span_start)).to_numpy()
        dates, closes = list(history.dates[keep]), history.closes[keep]
    at = {d: i for i, d in enumerate(dates)}
    days = np.array([at[d] for d in var_dates if d in at and at[d] + 1 < len(dates)], dtype=np.intp)
    if days.size == 0:
        return pd.DataFrame(), pd.DataFrame()
    ordinals = np.array([d.toordinal() for d in dates], dtype=float)
    gaps = np.concatenate([[0.0], np.diff(ordinals)])
    result = surface_repriced_pnl(portfolio, closes, smile_grid(wh, dates, portfolio.symbols), gaps, days)
    priced = np.isfinite(result.pnl)
    if not priced.any():
        return pd.DataFrame(), pd.DataFrame()
    day_dates = [dates[t] for t in days[priced]]
    next_dates = pd.Series([dates[t + 1] for t in days[priced]])
    by_day = hypothetical_obs.set_index(["method", "var_date"])
    methods = list(dict.fromkeys(hypothetical_obs["method"]))

    def series(method: str, column: str) -> np.ndarray:
        return by_day.loc[method][column].reindex(day_dates).to_numpy(float)

    var = {m: series(m, "var") for m in methods}
    es = {m: (series(m, "es_var"), series(m, "expected_shortfall")) for m in methods}
    lookback = by_day.loc[methods[0]]["lookback_days"].reindex(day_dates).to_numpy()
    label = f"surface:{book}"
    n_missing = int((~priced).sum())
    source = (
        f"hypothetical P&L of {book}'s positions as of {as_of.isoformat()} carried back and repriced off each day's "
        f"smile_history surface (quant.surface_backtest; {n_missing} day(s) without a stored surface left out); "
        f"VaR of hypothetical:{book}"
    )
    pnl = result.pnl[priced]
    windows = rolling_rows(next_dates, pnl, var, label, source, es, z2_cache)
    first = hypothetical_obs.iloc[0]
    obs = observation_frame(
        label,
        pd.Series(day_dates),
        next_dates,
        pnl,
        var,
        source,
        es=es,
        book_value=result.book_value[priced],
        lookback_days=lookback,
        n_scenarios=first["n_scenarios"] if MONTE_CARLO_FHS in methods else None,
        seed=first["seed"],
        positions_as_of=as_of,
    )
    return windows, obs


@dataclass(frozen=True, eq=False)
class BacktestTables:
    """var_backtest and var_backtest_observations rows of a session, each method's latest window, the labels."""

    windows: pd.DataFrame
    observations: pd.DataFrame
    latest_windows: pd.DataFrame
    labels: list[dict[str, str]]
    positions_as_of: pd.Timestamp


def backtest_tables(wh: Warehouse, session: dt.date, config: BacktestSettings) -> BacktestTables:
    """Every book's realized, ``hypothetical:`` and ``surface:`` backtests for ``session``.

    The static-book backtests' GARCH refits (one chain per book and underlying, shared between books through one
    cache) run on a worker thread, book after book, in the order of a serial run (a book's backtest waits for its
    fits only when its Monte Carlo method, the last, needs them); the books' backtests run on
    BOOK_THREADS threads (the scenario engine's kernels release the GIL, so one book's Python work overlaps
    another's kernels) while this thread reads the realized series. Every result is that of a serial run.
    """
    if config.vol_term_structure not in TERM_STRUCTURES:
        raise dg.Failure(
            f"var_backtest: vol_term_structure must be one of {TERM_STRUCTURES}, got {config.vol_term_structure!r}"
        )
    realized_books = wh.query("SELECT DISTINCT book FROM risk.book_nav WHERE as_of_date <= ?", [session])["book"]
    as_of, positions = latest_valuation(wh, session)
    # alpha fitted once at the session on every book's names, as var_results fits it
    names = sorted({str(x) for x in positions["symbol"]})
    term = term_structures(wh, session, names)[config.vol_term_structure] if len(positions) else None
    position_books = list(positions.groupby("book", sort=True))
    jobs: list[tuple[str, Any]] = [(str(b), None) for b in sorted(realized_books)]
    jobs += [(f"hypothetical:{b}", rows) for b, rows in position_books]
    window_frames, observation_frames, summary = [], [], []
    garch_cache: GarchCache = {}
    z2_cache: Z2Cache = {}
    histories: dict[str, BookHistory] = {}
    fits: dict[str, Future[list[list[GarchParams]]]] = {}

    def static_book(book: str, rows: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
        """``hypothetical:<book>`` and ``surface:<book>``: windows and observations of each."""
        windows, obs = hypothetical(
            wh,
            book,
            rows,
            as_of,
            session,
            config,
            history=histories[book],
            garch_fits=fits[book].result if book in fits else None,  # waited for only by the Monte Carlo method
            z2_cache=z2_cache,
            term=term,
        )
        return (windows, obs, *surface_repriced(wh, book, rows, as_of, session, obs, z2_cache, histories[book]))

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="garch-refits") as refits,
        ThreadPoolExecutor(max_workers=BOOK_THREADS, thread_name_prefix="static-book") as books,
    ):
        # every book's closes and ATM vols in one read (each book takes its columns: the same rows as its own read)
        union = sorted({str(s) for s in positions["symbol"]}) if len(position_books) > 1 else []
        need = config.backtest_days + config.lookback_days + 1
        levels = None
        if union:
            try:
                levels = factor_levels(wh, session, need, union, "the static-book backtests")
            except dg.Failure:  # a name without prices: each book's own read says whose
                levels = None
        # GJR or GARCH per name as var_results chooses them at the session: one read for every book's names (each
        # name's flag is its own rows'), made when the first book with backtest days needs it
        wins: dict[str, bool] = {}
        for b, rows in position_books:  # each book's fits start as soon as its history is read
            histories[str(b)] = x = book_history(wh, str(b), rows, session, config, levels)
            if x.days.size:
                missing = [s for s in x.portfolio.symbols if s not in wins]
                if missing:  # the first time every book's names (and any name of this book not among them)
                    ask = missing if wins else sorted(set(names) | set(missing))
                    wins.update(zip(ask, gjr_wins(wh, session, ask).tolist(), strict=True))
                gjr = np.array([wins[s] for s in x.portfolio.symbols], dtype=bool)
                fits[str(b)] = refits.submit(book_garch_fits, x, garch_cache, gjr)
        static = {str(b): books.submit(static_book, str(b), rows) for b, rows in position_books}
        for label, rows in jobs:
            if rows is None:
                windows, obs = realized(wh, label, session)
            else:
                windows, obs, surface_windows, surface_obs = static[label.split(":", 1)[1]].result()
                window_frames.append(surface_windows)
                observation_frames.append(surface_obs)
                if len(surface_windows):
                    last = surface_windows[surface_windows["window_end"] == surface_windows["window_end"].max()]
                    summary.append(last[SUMMARY_COLUMNS])
            window_frames.append(windows)
            observation_frames.append(obs)
            if len(windows):
                last = windows[windows["window_end"] == windows["window_end"].max()]
                summary.append(last[SUMMARY_COLUMNS])
    labels = [{"book": label} for label, _ in jobs]
    labels += [{"book": f"surface:{b}"} for b in sorted(positions["book"].unique())]
    return BacktestTables(
        windows=_concat(window_frames, "var_backtest"),
        observations=_concat(observation_frames, "var_backtest_observations"),
        latest_windows=pd.concat(summary) if summary else pd.DataFrame(),
        labels=labels,
        positions_as_of=as_of,
    )


BACKTEST_DESCRIPTION = (
    "1-day 99 % VaR backtests per book and method, over rolling windows of the last 250 observations: "
    "exceptions, Kupiec, Christoffersen, conditional coverage and the Basel traffic light. Three P&L series: "
    "the book's realized daily P&L (book_nav) against the previous end-of-day VaR (fills as valuations "
    "accumulate; P&L spanning more than one session is left out), `hypothetical:<book>`, today's book carried "
    "back over the last 250 sessions (constant notional, moneyness and tenor; full revaluation with the VaR's "
    "vol mapping) against the VaR made each day from the history before it, and `surface:<book>`, the same "
    "book and VaR with the P&L repriced off each day's stored smile_history surface. Every observation is in "
    "var_backtest_observations. Each window also carries the Acerbi-Szekely Z2 ES "
    "backtest at 97.5 % (its latest window a simulated p-value and zone). Reference backtests on the S&P 500 "
    "come from `risk-pipeline var-backtest`."
)


#: The tables both backtest assets are computed from.
BACKTEST_READS = [
    "book_nav",
    "var_results",
    "position_greeks",
    "market_prices",
    "atm_vol_history",
    "smile_history",
    "vol_forecasts",
]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "var_backtest",
            group_name="risk",
            deps=BACKTEST_READS,
            kinds={"pandas", "scipy"},
            owners=OWNERS,
            description=BACKTEST_DESCRIPTION,
            metadata=table_definition_metadata("var_backtest"),
        ),
        dg.AssetSpec(
            "var_backtest_observations",
            group_name="risk",
            deps=BACKTEST_READS,
            kinds={"pandas"},
            owners=OWNERS,
            description=(
                "Every observation behind var_backtest: the day's VaR per method, the P&L it is compared with, "
                "the exception flag, book value, look-back, scenarios and seed, so every count can be recomputed."
            ),
            metadata=table_definition_metadata("var_backtest_observations"),
        ),
    ],
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
@fail_closed
def var_backtest(
    context: dg.AssetExecutionContext, config: BacktestSettings, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult]:
    wh = warehouse.get()
    session = dt.date.fromisoformat(context.partition_keys[-1])
    tables = backtest_tables(wh, session, config)
    latest = tables.latest_windows
    yield from publish(
        context,
        wh,
        [
            TableWrite("var_backtest", tables.windows, tables.labels),
            TableWrite("var_backtest_observations", tables.observations, tables.labels),
        ],
        metadata={
            "var_backtest": {
                "latest_windows": dg.MetadataValue.md(
                    markdown_table(latest.round(3), 40) if len(latest) else "(no backtest observations yet)"
                ),
                "positions_as_of": tables.positions_as_of.isoformat(),
            }
        },
    )


def _concat(frames: list[pd.DataFrame], name: str) -> pd.DataFrame:
    non_empty = [f for f in frames if len(f)]
    return pd.concat(non_empty, ignore_index=True) if non_empty else pd.DataFrame(columns=table(name).data_column_names)
