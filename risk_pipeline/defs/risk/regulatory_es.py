"""regulatory_es: 97.5 % ES with Basel MAR33 liquidity horizons on the current year and on the stressed window (the
worst 250 sessions of the stored history, and of the S&P 500 1999-2018 from ``arch`` through the index factor)."""

import datetime as dt
import functools
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
from risk_pipeline.defs.risk.stress_vol import DEFAULT_INDEX_SYMBOL
from risk_pipeline.defs.risk.var import STRESS_HISTORY_SESSIONS, book_portfolio, factor_levels
from risk_pipeline.errors import RiskDataError
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.regulatory_es import (
    FRTB_CONFIDENCE,
    LARGE_CAP_MIN_MARKET_CAP_USD,
    LIQUIDITY_HORIZONS_DAYS,
    LiquidityAdjustedES,
    equity_liquidity_horizons,
    index_betas,
    index_mapped_history,
    liquidity_adjusted_es,
    reduced_set_scaling,
    worst_es_window,
)
from risk_pipeline.quant.scenario_engine import GridMemo, evaluate, grid_memo
from risk_pipeline.quant.var import MarketHistory, empirical_var_es, historical_scenarios
from risk_pipeline.queries import book_valuations
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Between, Warehouse

GROUP = "risk"
VAR_CONFIDENCE = 0.99
SYNTHETIC, SP500 = "stored_history", "sp500_arch"
#: Grid builds ``liquidity_adjusted_es`` keeps from one call to the next of a book (``book_rows``): the equity
#: buckets' three (every factor; the small caps' spot and every vol; the small caps' vols), each with its boundaries
#: and node values, so that a book with a small cap still finds the previous window's first two.
LA_MEMO_BUILDS = 3


class RegulatoryEsSettings(dg.Config):
    """Periods, the index proxy and the market-cap mapping of the liquidity horizons."""

    #: sessions of the current period (MAR33.5: at least 12 months)
    current_sessions: int = 250
    #: sessions of the stressed window
    stress_window_sessions: int = 250
    #: the platform's index, whose returns the S&P 500 stands in for (names map to it by beta)
    index_symbol: str = DEFAULT_INDEX_SYMBOL
    #: also search arch's S&P 500 history (1999-2018, with 2008) through the index factor
    sp500_proxy: bool = True
    #: large cap (MAR21.78: market cap >= USD 2 bn) when the median daily dollar volume over
    #: ``dollar_volume_sessions`` is at least this (USD 10 m: USD 2 bn turning over 0.5 % a day); the data has no
    #: market capitalisation. The index is large cap.
    large_cap_min_dollar_volume: float = 1.0e7
    dollar_volume_sessions: int = 60
    #: explicit overrides of the dollar-volume rule, comma-separated symbols
    large_cap_symbols: str = ""
    small_cap_symbols: str = ""


@functools.lru_cache(maxsize=1)
def sp500_log_returns() -> pd.Series:
    """Daily log returns of the S&P 500 'Adj Close' shipped with ``arch`` (``arch.data.sp500``, 1999-2018), by
    the date each return ends on."""
    from arch.data import sp500

    close = sp500.load()["Adj Close"].astype(float)
    r = np.log(close).diff().dropna()
    r.index = pd.Index([d.date() for d in r.index])
    return r


def sp500_source() -> str:
    import arch

    r = sp500_log_returns()
    return f"arch {arch.__version__} arch.data.sp500 'Adj Close' {r.index[0]}..{r.index[-1]} ({len(r)} returns)"


@dataclass(frozen=True)
class FactorHistory:
    """Stored daily log returns and ATM-vol changes (NaN where not measured) of a book's names and the index."""

    returns: pd.DataFrame
    iv_change: pd.DataFrame

    def book(self, symbols: Sequence[str], rows: slice = slice(None)) -> MarketHistory:
        cols = list(symbols)
        return MarketHistory(
            self.returns[cols].iloc[rows].to_numpy(float), self.iv_change[cols].iloc[rows].to_numpy(float)
        )

    @property
    def dates(self) -> list[dt.date]:
        return list(self.returns.index)


def stored_history(wh: Warehouse, session: dt.date, names: Sequence[str], min_days: int) -> FactorHistory:
    """Every stored session (up to ``STRESS_HISTORY_SESSIONS``) of ``names``: complete return days only."""
    wide, vols = factor_levels(wh, session, STRESS_HISTORY_SESSIONS, names, "regulatory ES")
    returns = np.log(wide).diff().iloc[1:].dropna().tail(STRESS_HISTORY_SESSIONS)
    if len(returns) < min_days:
        raise RiskDataError(f"only {len(returns)} days of complete return history before {session}; need {min_days}")
    return FactorHistory(returns, (vols / vols.shift(1) - 1.0).reindex(returns.index))


def large_caps(
    wh: Warehouse, session: dt.date, symbols: Sequence[str], settings: RegulatoryEsSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Large-cap flag and median daily dollar volume (USD) per symbol (``RegulatoryEsSettings``)."""
    start = session - dt.timedelta(days=int(settings.dollar_volume_sessions * 7 / 5) + 10)
    bars = wh.read(
        "market_prices",
        {"as_of_date": Between(start, session), "symbol": list(symbols)},
        columns=["as_of_date", "symbol", "close", "volume"],
    )
    bars = bars.sort_values("as_of_date").groupby("symbol").tail(settings.dollar_volume_sessions)
    adv = (bars["close"] * bars["volume"]).groupby(bars["symbol"]).median().reindex(list(symbols)).to_numpy(float)
    large = np.nan_to_num(adv, nan=0.0) >= settings.large_cap_min_dollar_volume
    names = np.asarray(symbols, dtype=object)
    listed = {k: [x.strip() for x in v.split(",") if x.strip()] for k, v in
              (("large", settings.large_cap_symbols), ("small", settings.small_cap_symbols))}  # fmt: skip
    large |= (names == settings.index_symbol) | np.isin(names, listed["large"])
    large &= ~np.isin(names, listed["small"])
    return large, adv


def one_day_pnl(portfolio: Portfolio, history: MarketHistory, memo: GridMemo | None = None) -> np.ndarray:
    """Today's book under every 1-day move of ``history``, applied instantly (full revaluation); its grid build
    uses ``memo`` (``scenario_engine.GridMemo``: the same bits), if given."""
    with grid_memo(memo):
        return evaluate(portfolio, historical_scenarios(history, 1), 0.0, american="eep_grid").pnl


def _measures(
    pnl_1d: np.ndarray, la: LiquidityAdjustedES, ratio: float | None = None, scale: float = 1.0
) -> dict[str, Any]:
    var_1d = empirical_var_es(pnl_1d, VAR_CONFIDENCE)[0]
    es_1d = empirical_var_es(pnl_1d, FRTB_CONFIDENCE)[1]
    return {
        "var_99_1d": var_1d,
        "es_975_1d": es_1d,
        "var_99_10d": la.var_base,
        "es_975_10d": la.es_base,
        **{
            f"es_975_10d_lh{lh}": float(e)
            for lh, e in zip(LIQUIDITY_HORIZONS_DAYS[1:], la.es_by_horizon[1:], strict=True)
        },
        "es_liquidity_adjusted": la.es,
        "reduced_set_ratio": np.nan if ratio is None else ratio,
        "es_regulatory": la.es * scale,
        "n_scenarios_10d": la.n_scenarios,
    }


def same_history(a: MarketHistory, b: MarketHistory) -> bool:
    """Whether two histories hold the same factor changes, bit for bit (then every measure of them is the same)."""

    def bits(x: np.ndarray | None) -> bytes | None:
        return None if x is None else np.ascontiguousarray(x).tobytes()

    fields = ("log_returns", "iv_rel_changes", "rate_changes", "dividend_changes")
    return a.log_returns.shape == b.log_returns.shape and all(
        bits(getattr(a, f)) == bits(getattr(b, f)) for f in fields
    )


def _rows(a: np.ndarray | None, start: int, n: int) -> np.ndarray | None:
    return None if a is None else a[start : start + n]


def _listed(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def book_rows(
    wh: Warehouse, session: dt.date, rows: pd.DataFrame, settings: RegulatoryEsSettings
) -> list[dict[str, Any]]:
    """The current, stressed (stored history) and stressed (S&P 500 proxy) rows of one book."""
    portfolio = book_portfolio(rows)
    symbols = list(portfolio.symbols)
    index = settings.index_symbol
    has_index = wh.row_count("market_prices", {"as_of_date": session, "symbol": index}) > 0
    proxy = settings.sp500_proxy and has_index
    names = symbols + ([index] if proxy and index not in symbols else [])
    hist = stored_history(wh, session, names, max(settings.current_sessions, settings.stress_window_sessions))
    dates = hist.dates
    large, adv = large_caps(wh, session, symbols, settings)
    spot_lh, vol_lh = equity_liquidity_horizons(large)
    mapping: dict[str, Any] = {
        "symbols": symbols,
        "large_cap": large.tolist(),
        "median_dollar_volume_usd": _listed(adv),
        "spot_lh_days": spot_lh.tolist(),
        "vol_lh_days": vol_lh.tolist(),
        "rule": (
            f"MAR33.12 equity: large cap (index, or median {settings.dollar_volume_sessions}-session dollar volume "
            f">= USD {settings.large_cap_min_dollar_volume:,.0f}, a USD {LARGE_CAP_MIN_MARKET_CAP_USD:,.0f} cap at "
            "0.5 % daily turnover, MAR21.78) spot 10 / vol 20 days, small cap spot 20 / vol 60 days"
        ),
    }
    # grid builds kept from one window to the next (scenario_engine.GridMemo: an American whose grid input repeats
    # takes the kept boundaries and node values, the same bits): the stressed window's buckets find the current
    # period's (the windows overlap), the whole stored history's 1-day build the current period's
    la_memo, pnl_memo = GridMemo(LA_MEMO_BUILDS, boundaries=True), GridMemo(1, boundaries=True)
    la = functools.partial(liquidity_adjusted_es, portfolio, spot_lh_days=spot_lh, vol_lh_days=vol_lh, memo=la_memo)
    n_cur, n_win = settings.current_sessions, settings.stress_window_sessions
    stored = f"market_prices and atm_vol_history {dates[0]}..{dates[-1]} ({len(dates)} return days)"
    out: list[dict[str, Any]] = []

    def row(period: str, source: str, first: dt.date, last: dt.date, n: int, data: str, note: str, **m: Any) -> None:
        out.append(
            {
                "period": period,
                "source": source,
                "window_start": first,
                "window_end": last,
                "n_return_days": n,
                **m,
                "data_source": data,
                "method_note": note,
            }
        )

    lh_note = "97.5 % ES of overlapping 10-day moves applied instantly, full revaluation, MAR33.4 cascade"
    # current period: the last n_cur sessions, every factor
    current = hist.book(symbols, slice(-n_cur, None))
    full_current = la(current)
    current_pnl = one_day_pnl(portfolio, current, pnl_memo)
    row(
        "current",
        SYNTHETIC,
        dates[-n_cur],
        dates[-1],
        n_cur,
        stored,
        lh_note,
        **_measures(current_pnl, full_current, None),
    )
    # stressed window of the stored history: the span with the largest 1-day 97.5 % ES of today's book
    book_hist = hist.book(symbols)
    pnl = one_day_pnl(portfolio, book_hist, pnl_memo)
    del pnl_memo
    s = worst_es_window(pnl, n_win)
    span = hist.book(symbols, slice(s, s + n_win))
    # the worst window can be the current period itself (the same days): its ES is already known, to the bit
    span_la = full_current if same_history(span, current) else la(span)
    row(
        "stressed", SYNTHETIC, dates[s], dates[s + n_win - 1], n_win, stored,
        f"worst {n_win}-session window of {len(dates)} by 1-day 97.5 % ES; {lh_note}",
        **_measures(pnl[s : s + n_win], span_la),
    )  # fmt: skip
    if proxy:
        # reduced set: the index factor alone, every name by its beta (spot) and slope (ATM log-vol) on the index
        x = hist.returns[index].to_numpy(float)
        beta = index_betas(hist.returns[symbols].to_numpy(float), x)
        fallback = rows.groupby("symbol")["beta"].first().reindex(symbols).fillna(1.0).to_numpy(float)
        beta = np.where(np.isfinite(beta), beta, fallback)
        slope = index_betas(np.log1p(hist.iv_change[symbols].to_numpy(float)), x)
        mapping |= {"index_symbol": index, "spot_beta": _listed(beta), "vol_slope": _listed(slope)}
        reduced_current = la(index_mapped_history(x[-n_cur:], beta, slope))
        ratio = full_current.es / reduced_current.es if reduced_current.es > 0.0 else None
        scale = reduced_set_scaling(full_current.es, reduced_current.es)
        sp = sp500_log_returns()
        sp_hist = index_mapped_history(sp.to_numpy(float), beta, slope)
        sp_pnl = one_day_pnl(portfolio, sp_hist)
        k = worst_es_window(sp_pnl, n_win)
        sp_span = MarketHistory(sp_hist.log_returns[k : k + n_win], _rows(sp_hist.iv_rel_changes, k, n_win))
        row(
            "stressed", SP500, sp.index[k], sp.index[k + n_win - 1], n_win,
            f"{sp500_source()}; beta and vol slope on {index} over {stored}",
            f"S&P 500 as {index}: names by OLS beta on {index} (spot) and ATM log-vol slope on {index} return "
            f"(vol); worst {n_win}-session window by 1-day 97.5 % ES; {lh_note}; es_regulatory = ES x ES_F,C / "
            f"ES_R,C floored at 1 (MAR33.5), reduced-set current ES {reduced_current.es:,.0f}",
            **_measures(sp_pnl[k : k + n_win], la(sp_span), ratio, scale),
        )  # fmt: skip
    worst = max((r for r in out if r["period"] == "stressed"), key=lambda r: r["es_regulatory"])
    text = json.dumps(mapping)
    for r in out:
        r["selected"] = r is worst
        r["factor_mapping"] = text
    return out


@dg.asset(
    name="regulatory_es",
    group_name=GROUP,
    deps=["position_greeks", "market_prices", "atm_vol_history"],
    kinds={"pandas", "numba"},
    owners=OWNERS,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata=table_definition_metadata("regulatory_es"),
    check_specs=[
        session_check_spec(
            "stressed_not_below_current",
            asset="regulatory_es",
            description="The selected stressed ES (es_regulatory) is at least the current liquidity-adjusted ES.",
        )
    ],
    description=(
        "FRTB-style expected shortfall per book: 97.5 % ES over 10 days with the Basel MAR33.4 liquidity-horizon "
        "cascade (10/20/40/60/120 days by risk-factor class, MAR33.12) on the current 250 sessions and on the "
        "stressed window: the 250 sessions of the stored history, and of the S&P 500 1999-2018 (arch) mapped "
        "through the index, where today's book has its largest 1-day 97.5 % ES; window dates and data source "
        "on every row."
    ),
)
@fail_closed
def regulatory_es(
    context: dg.AssetExecutionContext, config: RegulatoryEsSettings, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    wh = warehouse.get()
    frames = []
    for v in book_valuations(wh, partition_sessions(context)):
        frame = pd.DataFrame(book_rows(wh, v.session, v.rows, config))
        frame.insert(0, "book", v.book)
        frame.insert(0, "as_of_date", v.session)
        frame.insert(0, "as_of", v.as_of)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    parts = [{"as_of": t} for t in sorted(out["as_of"].unique())]
    cur = out[out["period"] == "current"].set_index(["as_of", "book"])["es_liquidity_adjusted"]
    sel = out[out["selected"]].set_index(["as_of", "book"])["es_regulatory"]
    below = sel[sel < cur.reindex(sel.index)]
    shown = out[["book", "period", "source", "window_start", "window_end", "es_975_10d", "es_regulatory"]]
    yield from publish(
        context,
        wh,
        [TableWrite("regulatory_es", out, parts)],
        checks=[
            dg.AssetCheckResult(
                check_name="stressed_not_below_current",
                asset_key="regulatory_es",
                passed=below.empty,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"books_below": ", ".join(str(b) for _, b in below.index) or "none"},
            )
        ],
        metadata={"regulatory_es": {"es": dg.MetadataValue.md(markdown_table(shown.round(0), 20))}},
    )
