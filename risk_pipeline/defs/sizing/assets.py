"""Sizing layer: signals, ATR stops, the correlation matrix and clusters, position sizing and portfolio heat.

The numerics are in quant/sizing.py; these assets read their declared upstream tables, call the core and
publish through write-audit-publish. Configuration: data/sizing.yaml (defs/sizing/config.py) and the
limits file (data/limits/limits.yaml) for the exposure caps every recommended size is clipped by.
"""

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Iterator
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.blas import one_blas_thread
from risk_pipeline.contracts import table
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    PREVIOUS_SESSION,
    TableWrite,
    check_specs,
    compliance_rules,
    fail_closed,
    markdown_table,
    partition_sessions,
    publish,
    publish_source_sessions,
    session_check_spec,
    table_definition_metadata,
)
from risk_pipeline.defs.exposures.budgets import loss_streak_factor
from risk_pipeline.defs.sizing.config import SizingConfig, load_sizing_config
from risk_pipeline.errors import RiskDataError
from risk_pipeline.paths import COMPLIANCE_RULES_FILE, LIMITS_FILE
from risk_pipeline.quant import sizing as sz
from risk_pipeline.quant.limits import load_limits
from risk_pipeline.queries import AUDIT_COLUMNS, audit_row, latest_as_of
from risk_pipeline.resources import MarketDataResource, WarehouseResource
from risk_pipeline.risk_levels import sizing_for_book
from risk_pipeline.warehouse import Between, Warehouse

GROUP = "sizing"
ACTOR = "risk_pipeline.position_stops"
INDEX_SYMBOL = "SYNX"
HISTORY_SESSIONS = 320
ATR_BARS = 150
FORECAST_HORIZONS = (1, 5, 21)

Events = Iterator[dg.AssetCheckResult | dg.MaterializeResult]


class SizingSettings(dg.Config):
    """The sizing and limits files, and the symbol whose 30-day ATM implied vol stands in for a volatility index."""

    sizing_file: str = ""
    limits_file: str = str(LIMITS_FILE)
    index_symbol: str = INDEX_SYMBOL
    #: the loss-streak rule that scales the risk budgets (``emergency`` section), as the limits step applies it
    rules_file: str = str(COMPLIANCE_RULES_FILE)


def _config(settings: SizingSettings) -> SizingConfig:
    return load_sizing_config(settings.sizing_file or None)


# ---------------------------------------------------------------------------------------------- inputs
class History:
    """Daily bars of every stored symbol up to a session, as sessions x symbols arrays (NaN where missing)."""

    def __init__(self, bars: pd.DataFrame) -> None:
        wide = {
            c: bars.pivot(index="as_of_date", columns="symbol", values=c).sort_index()
            for c in ("open", "high", "low", "close", "volume")
        }
        self.dates: list[dt.date] = list(wide["close"].index)
        self.symbols: list[str] = [str(s) for s in wide["close"].columns]
        self.close = wide["close"].to_numpy(float)
        self.high = wide["high"].to_numpy(float)
        self.low = wide["low"].to_numpy(float)
        self.volume = wide["volume"].to_numpy(float)
        self._columns = {s: j for j, s in enumerate(self.symbols)}

    def column(self, symbol: str) -> int:
        """The symbol's column (a dict: the callers ask once per position or per name, 50,000 at 3,000 names)."""
        if symbol not in self._columns:
            raise ValueError(f"{symbol!r} is not in the history")
        return self._columns[symbol]

    def returns(self, symbols: list[str], window: int) -> np.ndarray:
        """Daily log returns of ``symbols`` over the last ``window`` sessions where every one has a bar."""
        c = self.close[:, [self.column(s) for s in symbols]]
        r = np.diff(np.log(c), axis=0)[-window:]
        return r[np.all(np.isfinite(r), axis=1)]


def read_history(wh: Warehouse, session: dt.date, sessions: int = HISTORY_SESSIONS) -> History:
    start = session - dt.timedelta(days=int(sessions * 7 / 5) + 15)
    bars = wh.read(
        "market_prices",
        {"as_of_date": Between(start, session)},
        columns=["as_of_date", "symbol", "open", "high", "low", "close", "volume"],
    )
    if bars.empty:
        raise RiskDataError(f"no market_prices up to {session}: load the price history first")
    return History(bars)


def valuation(wh: Warehouse, session: dt.date) -> tuple[pd.Timestamp, pd.DataFrame]:
    """The session's latest valuation time and its position_greeks rows."""
    as_of = latest_as_of(wh, "position_greeks", session)
    if as_of is None:
        raise RiskDataError(f"no position_greeks for {session}: value the books first")
    return as_of, wh.read("position_greeks", {"as_of": as_of})


def atr_now(h: History) -> dict[str, float]:
    """Wilder ATR(14) at the last session per symbol over its last ``ATR_BARS`` bars (seeded on their first 14
    true ranges; the seed's weight left is (13/14)^135, about 5e-5). Symbols without 15 bars are left out."""
    bars = slice(-ATR_BARS, None)
    atr = sz.wilder_atr(h.high[bars], h.low[bars], h.close[bars], 14)[-1]
    return {s: float(a) for s, a in zip(h.symbols, atr, strict=True) if math.isfinite(a)}


# ---------------------------------------------------------------------------------------------- signals
@dg.asset(
    name="signals",
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=check_specs("signals"),
    kinds={"pandas", "great_expectations"},
    owners=OWNERS,
    description=(
        "Trade signals per strategy and symbol (direction, expected return over horizon_days, confidence) from "
        "the market data source (folder: signals/<date>.csv), validated by blocking rules; failing rows go to "
        "quarantine. A session without signals is allowed: sizing then has no edge to size."
    ),
    metadata=table_definition_metadata("signals"),
)
def signals(context: dg.AssetExecutionContext, warehouse: WarehouseResource, market_data: MarketDataResource) -> Events:
    yield from publish_source_sessions(
        context,
        "signals",
        lambda first, last: market_data.get_source().signals(first, last),
        warehouse.get(),
        market_data.quality,
        market_data.kind,
    )


# ------------------------------------------------------------------------------------------------ stops
def _previous_state(wh: Warehouse, session: dt.date) -> tuple[pd.DataFrame, pd.Timestamp | None]:
    before = latest_as_of(wh, "position_stops", session, before=True)
    if before is None:
        return pd.DataFrame(), None
    return wh.read("position_stops", {"as_of": before}).set_index(["book", "position_id"]), before


def stop_rows(
    as_of: pd.Timestamp,
    positions: pd.DataFrame,
    h: History,
    previous: pd.DataFrame,
    previous_as_of: Any,
    params: sz.StopParams,
) -> pd.DataFrame:
    """position_stops rows: carried positions advance their state on the session's bar, new ones start at the close."""
    atr = atr_now(h)
    pos = positions[(positions["delta"] != 0) & positions["symbol"].isin(list(atr))].reset_index(drop=True)
    if pos.empty:
        return pd.DataFrame(columns=table("position_stops").data_column_names)
    col = np.array([h.column(s) for s in pos["symbol"]])
    close, high, low = h.close[-1, col], h.high[-1, col], h.low[-1, col]
    a = np.array([atr[s] for s in pos["symbol"]])
    side = np.sign(pos["delta"].to_numpy(float))
    keys = list(zip(pos["book"], pos["position_id"], strict=True))
    carried = np.array(
        [k in previous.index and previous.loc[k, "side"] == sd for k, sd in zip(keys, side, strict=True)]
    )
    prev = previous.reindex(pd.MultiIndex.from_tuples(keys)) if len(previous) else None
    entry = np.where(carried, prev["entry_price"].to_numpy(float), close) if prev is not None else close
    extreme = np.where(carried, prev["best_price"].to_numpy(float), close) if prev is not None else close
    active = (
        np.where(carried, prev["trailing_active"].fillna(False).to_numpy(bool), False)
        if prev is not None
        else np.zeros(len(pos), bool)
    )
    trail = np.where(carried, prev["trailing_stop_price"].to_numpy(float), np.nan) if prev is not None else np.nan
    state = sz.StopState(side, entry, extreme, active, np.broadcast_to(trail, side.shape).astype(float))
    lv = sz.advance_stops(state, high, low, a, params)
    fresh = sz.new_stop_state(side, close)
    stop, target = sz.initial_stops(side, close, a, params)
    new = ~carried
    eff = np.where(new, stop, lv.effective_stop)
    delta = pos["delta"].to_numpy(float)
    return pd.DataFrame(
        {
            "as_of": as_of,
            "as_of_date": pos["as_of_date"],
            "book": pos["book"],
            "position_id": pos["position_id"],
            "symbol": pos["symbol"],
            "side": side.astype(np.int64),
            "delta": delta,
            "close": close,
            "atr_14": a,
            "entry_price": np.where(new, fresh.entry, lv.state.entry),
            "stop_price": np.where(new, stop, lv.stop_price),
            "take_profit_price": np.where(new, target, lv.take_profit_price),
            "stop_distance_pct": np.abs(close - eff) / close,
            "best_price": np.where(new, fresh.extreme, lv.state.extreme),
            "trailing_active": np.where(new, False, lv.state.trailing_active),
            "trailing_stop_price": np.where(new, np.nan, lv.state.trailing_stop),
            "effective_stop_price": eff,
            "risk_at_stop": np.abs(delta) * np.abs(close - eff),
            "hit": np.where(new, False, lv.hit),
            "take_profit_hit": np.where(new, False, lv.take_profit_hit),
            "state_from": np.where(
                new, "new", str(pd.Timestamp(previous_as_of).isoformat()) if previous_as_of is not None else "new"
            ),
        }
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["position_greeks", "market_prices", dg.AssetDep("position_stops", partition_mapping=PREVIOUS_SESSION)],
    kinds={"pandas"},
    owners=OWNERS,
    check_specs=[
        session_check_spec(
            "stops_on_the_loss_side",
            asset="position_stops",
            blocking=True,
            description="Initial stop below the entry for a long (above for a short); target at reward/risk x the stop "
            "distance on the other side.",
        )
    ],
    description=(
        "ATR(14) (Wilder) stop and take-profit per position on its underlying (side = sign of delta): stop 2 ATR "
        "from the entry, target at 2:1; a trailing stop activates after +1 ATR and trails by 2 ATR, its state "
        "(entry, best price, trailing level) carried from the previous session's rows. A hit is flagged and "
        "recorded in audit_trail."
    ),
    metadata=table_definition_metadata("position_stops"),
)
@fail_closed
def position_stops(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> Events:
    wh = warehouse.get()
    params = sz.StopParams()
    frames, parts, audits = [], [], []
    for session in partition_sessions(context):
        as_of, positions = valuation(wh, session)
        h = read_history(wh, session, ATR_BARS)
        previous, previous_as_of = _previous_state(wh, session)
        rows = stop_rows(as_of, positions, h, previous, previous_as_of, params)
        frames.append(rows)
        parts.append({"as_of": as_of})
        for r in rows[rows["hit"]].itertuples():
            inputs = {
                "side": int(r.side),
                "stop": r.effective_stop_price,
                "close": r.close,
                "atr_14": r.atr_14,
                "entry": r.entry_price,
                "trailing_active": bool(r.trailing_active),
            }
            audits.append(audit_row(as_of, r.book, "stop_hit", r.position_id, "stop_hit", inputs, ACTOR))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out = out.reindex(columns=table("position_stops").data_column_names)
    side = out["side"].to_numpy(float)
    dist = side * (out["entry_price"] - out["stop_price"]).to_numpy(float)
    reward = side * (out["take_profit_price"] - out["entry_price"]).to_numpy(float)
    bad = (dist <= 0) | ~np.isclose(reward, params.reward_risk * dist, rtol=1e-9)
    check = dg.AssetCheckResult(
        check_name="stops_on_the_loss_side",
        asset_key="position_stops",
        passed=not bool(bad.any()),
        metadata={"failing_rows": int(bad.sum())},
    )
    yield from publish(
        context,
        wh,
        [TableWrite("position_stops", out, parts)],
        checks=[check],
        metadata={
            "position_stops": {
                "stops_hit": int(out["hit"].sum()),
                "trailing_active": int(out["trailing_active"].sum()),
                "preview": dg.MetadataValue.md(
                    markdown_table(
                        out[
                            ["book", "position_id", "close", "atr_14", "effective_stop_price", "risk_at_stop", "hit"]
                        ].round(2),
                        10,
                    )
                ),
            }
        },
    )
    if audits:
        wh.append("audit_trail", pd.DataFrame(audits, columns=AUDIT_COLUMNS), run_id=context.run.run_id)
        context.log_event(
            dg.AssetMaterialization(
                asset_key="audit_trail",
                description=f"{len(audits)} stop hits recorded",
                metadata={"rows_appended": len(audits), "from_asset": "position_stops", "run_id": context.run.run_id},
            )
        )


# ---------------------------------------------------------------------------------------- correlation
def _universe(positions: pd.DataFrame, sigs: pd.DataFrame, h: History) -> list[str]:
    wanted = set(positions["symbol"]) | set(sigs["symbol"])
    return sorted(s for s in wanted if s in h.symbols)


def correlation_rows(
    as_of: pd.Timestamp,
    session: dt.date,
    symbols: list[str],
    corr: np.ndarray,
    labels: np.ndarray,
    window_days: int,
    min_cluster_correlation: float,
) -> pd.DataFrame:
    """correlation_matrix rows of one session: every (symbol_a, symbol_b) pair, symbol_a major, both in ``symbols``'
    order. The symbols and the session are categorical (codes into ``symbols``: 2 bytes a row instead of an 8-byte
    reference and a hash per row when the warehouse checks and writes 9 million rows at 3,000 names); the warehouse
    stores the same text and dates."""
    n = len(symbols)
    codes = np.arange(n, dtype=np.int16 if n < 2**15 else np.int32)
    a = np.repeat(codes, n)  # row k = i n + j: symbol_a i, symbol_b j (the meshgrid's ravel, without its int64 grids)
    b = np.tile(codes, n)
    names = pd.Index(symbols, dtype=object)
    lab = np.asarray(labels, dtype=np.int64)
    return pd.DataFrame(
        {
            "as_of": pd.Series(as_of, index=range(n * n)).astype("datetime64[us, UTC]"),
            "as_of_date": pd.Categorical.from_codes(np.zeros(n * n, np.int8), pd.Index([session], dtype=object)),
            "symbol_a": pd.Categorical.from_codes(a, categories=names),
            "symbol_b": pd.Categorical.from_codes(b, categories=names),
            "correlation": np.asarray(corr, dtype=np.float64).ravel(),
            "window_days": np.full(n * n, window_days, dtype=np.int64),
            "cluster_a": lab[a],
            "cluster_b": lab[b],
            "min_cluster_correlation": np.full(n * n, min_cluster_correlation),
        },
        copy=False,
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["position_greeks", "market_prices", "signals"],
    kinds={"pandas", "scipy"},
    owners=OWNERS,
    check_specs=[
        session_check_spec(
            "valid_correlation_matrix",
            asset="correlation_matrix",
            blocking=True,
            description="Symmetric, unit diagonal, entries in [-1, 1], positive semi-definite.",
        )
    ],
    description=(
        "Correlation of daily log returns over the last correlation_window (63) sessions between every symbol held "
        "or signalled, with clusters: average-linkage hierarchical clustering (scipy) on the distance "
        "sqrt((1 - rho) / 2), cut at min_cluster_correlation (data/sizing.yaml)."
    ),
    metadata=table_definition_metadata("correlation_matrix"),
)
@fail_closed
def correlation_matrix(
    context: dg.AssetExecutionContext, config: SizingSettings, warehouse: WarehouseResource
) -> Events:
    wh = warehouse.get()
    d = _config(config).defaults
    frames, parts, problems, diagonals = [], [], [], []
    for session in partition_sessions(context):
        as_of, positions = valuation(wh, session)
        sigs = wh.read("signals", {"as_of_date": session}, columns=["symbol"])
        h = read_history(wh, session, d.correlation_window + 5)
        symbols = _universe(positions, sigs, h)
        r = h.returns(symbols, d.correlation_window) if symbols else np.empty((0, 0))
        parts.append({"as_of": as_of})
        if len(symbols) == 0 or r.shape[0] < 3:
            context.log.warning(f"{session}: fewer than 3 common returns; no correlation matrix")
            continue
        corr = np.atleast_2d(np.corrcoef(r, rowvar=False))
        labels = sz.correlation_clusters(corr, d.min_cluster_correlation)
        window = int(r.shape[0])
        frames.append(correlation_rows(as_of, session, symbols, corr, labels, window, d.min_cluster_correlation))
        diagonals.append(pd.DataFrame({"symbol": symbols, "cluster": labels}))
        ok = np.allclose(corr, corr.T) and np.allclose(np.diag(corr), 1.0) and np.all(np.abs(corr) <= 1 + 1e-12)
        if ok:
            with one_blas_thread():  # OpenBLAS's second thread mostly spins on a shared 2-core machine (blas.py)
                ok = not np.linalg.eigvalsh(corr).min() < -1e-10
        if not ok:
            problems.append(str(session))
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0] if frames else pd.DataFrame()
    del frames
    out = out.reindex(columns=table("correlation_matrix").data_column_names)
    check = dg.AssetCheckResult(
        check_name="valid_correlation_matrix",
        asset_key="correlation_matrix",
        passed=not problems,
        metadata={"sessions_failing": ", ".join(problems) or "none"},
    )
    # each session's symbols and clusters (the diagonal rows), without comparing the 9 million symbol pairs at 3,000
    clusters = pd.concat(diagonals, ignore_index=True) if diagonals else pd.DataFrame(columns=["symbol", "cluster"])
    yield from publish(
        context,
        wh,
        [TableWrite("correlation_matrix", out, parts)],
        checks=[check],
        metadata={
            "correlation_matrix": {
                "symbols": int(clusters["symbol"].nunique()),
                "clusters": dg.MetadataValue.md(markdown_table(clusters, 60)),
            }
        },
    )


# --------------------------------------------------------------------------------------------- sizing
def correlation_inputs(
    wh: Warehouse, as_of: pd.Timestamp, caps: list[float]
) -> tuple[dict[str, int], dict[str, dict[str, float]]]:
    """What sizing reads of the correlation matrix at ``as_of``: each symbol's cluster (the diagonal rows) and, per
    symbol, the other symbols whose correlation with it is at least the lowest of ``caps`` (nothing when there is no
    cap). Not the n x n rows (9 million at 3,000 names) with a Python object per symbol of each row."""
    diagonal = wh.query(
        "SELECT symbol_a, cluster_a FROM risk.correlation_matrix WHERE as_of = ? AND symbol_a = symbol_b", [as_of]
    )
    clusters = {str(s): int(c) for s, c in zip(diagonal["symbol_a"], diagonal["cluster_a"], strict=True)}
    correlated: dict[str, dict[str, float]] = {}
    if caps and clusters:
        pairs = wh.read(
            "correlation_matrix",
            {"as_of": as_of, "correlation": Between(min(caps), math.inf)},
            columns=["symbol_a", "symbol_b", "correlation"],
        )
        for a, b, rho in zip(pairs["symbol_a"], pairs["symbol_b"], pairs["correlation"].to_numpy(float), strict=True):
            if a != b:
                correlated.setdefault(a, {})[b] = float(rho)
    return clusters, correlated


def best_forecasts(forecasts: pd.DataFrame) -> dict[tuple[str, int], tuple[float, str, str]]:
    """Per (symbol, horizon): the model with the lowest out-of-sample QLIKE among all models, and why."""
    out: dict[tuple[str, int], tuple[float, str, str]] = {}
    # one stable sort by (symbol, horizon, loss), then each group's slice (not a frame per group: 9,000 at 3,000 names)
    f = forecasts.dropna(subset=["oos_loss"]).sort_values(["symbol", "horizon_days", "oos_loss"], kind="stable")
    if f.empty:
        return out
    symbol, horizon = f["symbol"].to_numpy(object), f["horizon_days"].to_numpy()
    model, loss, vol, n_oos = (
        f["model"].to_numpy(object),
        f["oos_loss"].to_numpy(float),
        f["annualized_vol"],
        f["n_oos"],
    )
    vol, n_oos = vol.to_numpy(float), n_oos.array
    new = np.flatnonzero((symbol[1:] != symbol[:-1]) | (horizon[1:] != horizon[:-1])) + 1
    for a, b in zip(np.concatenate([[0], new]), np.concatenate([new, [len(f)]]), strict=True):
        others = ", ".join(f"{m} {v:.4g}" for m, v in zip(model[a + 1 : b], loss[a + 1 : b], strict=True))
        reason = f"lowest OOS QLIKE {loss[a]:.4g} (n_oos={n_oos[a]}) against {others or 'no other model'}"
        out[(str(symbol[a]), int(horizon[a]))] = (float(vol[a]), str(model[a]), reason)
    return out


def sessions_to_earnings(dates: list[dt.date], symbols: list[str], calendar: pd.DataFrame, cap: int = 63) -> np.ndarray:
    """Business days from each session to each symbol's next earnings event (capped; cap when none is known)."""
    out = np.full((len(dates), len(symbols)), float(cap))
    if calendar.empty:
        return out
    earn = calendar[calendar["event_type"] == "earnings"].dropna(subset=["symbol"])
    day = np.array(dates, dtype="datetime64[D]")
    # each symbol's New York event dates, grouped once (not a pass over the calendar per symbol)
    local = (
        pd.to_datetime(earn["event_time"], utc=True).dt.tz_convert("America/New_York").dt.date.to_numpy()
        if len(earn)
        else np.empty(0, dtype=object)
    )
    by_symbol = pd.Series(local, dtype=object).groupby(earn["symbol"].to_numpy(object), sort=False).indices
    for j, s in enumerate(symbols):
        rows = by_symbol.get(s)
        if rows is None:
            continue
        ev = np.sort(local[rows].astype("datetime64[D]"))
        k = np.searchsorted(ev, day, side="left")
        has = k < ev.size
        out[has, j] = np.minimum(np.busday_count(day[has], ev[k[has]]), cap)
    return out


def _pivot(frame: pd.DataFrame, value: str, dates: list[dt.date], symbols: list[str]) -> np.ndarray:
    if frame.empty:
        return np.full((len(dates), len(symbols)), np.nan)
    wide = frame.pivot_table(index="as_of_date", columns="symbol", values=value, aggfunc="last")
    return wide.reindex(index=dates, columns=symbols).to_numpy(float)


@dataclasses.dataclass
class BookInputs:
    """What one book's sizing needs besides the market: NAV, state, holdings, stops, clusters, limits."""

    book: str
    nav: float
    state: str
    exposure: pd.Series  # |dollar delta| per symbol
    sector: dict[str, str]
    risk_at_stops: pd.Series  # per symbol
    net_delta: pd.Series  # shares per symbol
    #: strategy holding each symbol (largest |dollar delta|) and the budget status of every budgeted strategy
    held_strategy: dict[str, str] = dataclasses.field(default_factory=dict)
    budgets: dict[str, sz.RiskBudget] = dataclasses.field(default_factory=dict)
    #: Greeks the caps cover besides the sized stock position: per symbol the stock shares and dollar delta held
    #: and the name's gamma (shares per 1.00 of spot); book totals of dollar delta, vega per vol point, theta per day
    stock_delta: pd.Series = dataclasses.field(default_factory=lambda: pd.Series(dtype=float))
    stock_dollar_delta: pd.Series = dataclasses.field(default_factory=lambda: pd.Series(dtype=float))
    name_gamma: pd.Series = dataclasses.field(default_factory=lambda: pd.Series(dtype=float))
    book_dollar_delta: float = 0.0
    book_vega_per_vol_point: float = 0.0
    book_theta_per_day: float = 0.0


def size_book(
    b: BookInputs,
    sigs: pd.DataFrame,
    h: History,
    cfg: SizingConfig,
    ml: dict[str, Any],
    forecasts: dict[tuple[str, int], tuple[float, str, str]],
    correlated: dict[str, dict[str, float]],
    clusters: dict[str, int],
    limits: Any,
    atr: dict[str, float],
    vix_pct: float,
    spots: dict[str, float],
    hedge_drag: float | None = None,
) -> list[dict[str, Any]]:
    """position_sizing rows (every method and the recommendation) for the book's signalled symbols.

    ``correlated``: per symbol of the correlation matrix, the other symbols whose correlation with it is at least the
    lowest pairwise-correlation cap (``correlation_inputs``); ``clusters``: each matrix symbol's cluster.
    """
    d = cfg.defaults
    sigs = sigs[sigs["symbol"].isin(h.symbols) & sigs["symbol"].isin(list(atr))]
    sigs = sigs.sort_values(["symbol", "confidence"], ascending=[True, False]).drop_duplicates("symbol")
    if sigs.empty:
        return []
    symbols = list(sigs["symbol"])
    n = len(symbols)
    strat = [cfg.strategy(s) for s in sigs["strategy"]]
    direction = sigs["direction"].to_numpy(float)
    horizon = sigs["horizon_days"].to_numpy(float)
    mu = sigs["expected_return"].to_numpy(float) * sz.TRADING_DAYS / horizon
    r_all = h.returns(symbols, d.covariance_window)
    cov = np.cov(r_all, rowvar=False, ddof=1).reshape(n, n) * sz.TRADING_DAYS if r_all.shape[0] > n + 2 else None
    rows: list[dict[str, Any]] = []
    weights: dict[str, dict[str, float]] = {s: {} for s in symbols}
    common = {"as_of_date": None}
    base = [
        {
            "symbol": s,
            "strategy": sigs["strategy"].iloc[i],
            "direction": int(direction[i]),
            "expected_return": float(sigs["expected_return"].iloc[i]),
            "horizon_days": int(horizon[i]),
            "signal_confidence": float(sigs["confidence"].iloc[i]),
            "mu_annual": float(mu[i]),
            "spot": spots[s],
            "nav": b.nav,
            "fallback_used": False,
        }
        for i, s in enumerate(symbols)
    ]

    def add(i: int, method: str, weight: float, **extra: Any) -> None:
        weights[symbols[i]][method] = weight
        rows.append({**common, **base[i], "method": method, "weight": weight, **extra})

    # forecast vol per symbol and the signal's horizon: the lowest-QLIKE model (else realized 63-session vol)
    sigma = np.empty(n)
    fc_model, fc_reason = [], []
    for i, s in enumerate(symbols):
        hz = min(FORECAST_HORIZONS, key=lambda k: abs(k - horizon[i]))
        got = forecasts.get((s, hz))
        r = h.returns([s], 63)[:, 0]
        if got is not None:
            sigma[i], m, why = got
            fc_model.append(m)
            fc_reason.append(f"{hz}-session horizon: {why}")
        else:
            sigma[i] = float(np.std(r, ddof=1) * math.sqrt(sz.TRADING_DAYS)) if r.size > 2 else math.nan
            fc_model.append("realized_63d")
            fc_reason.append("no vol_forecasts row for the symbol: realized vol of the last 63 sessions")
    realized_pct = np.array([_realized_vol_percentile(h, s) for s in symbols])
    enabled = set(d.methods)
    vt = []
    for i in range(n):
        st = strat[i]
        if not sigma[i] > 0:
            vt.append(None)
            continue
        v = sz.vol_target_weight(
            st.target_vol,
            sigma[i],
            vix_percentile=vix_pct,
            realized_vol_percentile=realized_pct[i],
            top_decile=d.regime_top_decile,
            regime_scale=d.regime_scale,
        )
        vt.append(v)
        allowed = st.allow_short or direction[i] > 0
        if "kelly" in enabled:
            full = float(sz.kelly_gaussian(mu[i], sigma[i]))
            w = st.kelly_fraction * full if allowed and full * direction[i] > 0 else 0.0
            add(
                i,
                "kelly",
                w,
                sigma_annual=sigma[i],
                kelly_fraction=st.kelly_fraction,
                full_kelly_weight=full,
                forecast_model=fc_model[i],
                forecast_reason=fc_reason[i],
                confidence=base[i]["signal_confidence"],
            )
        if "vol_target" in enabled:
            add(
                i,
                "vol_target",
                direction[i] * v.weight if allowed else 0.0,
                sigma_annual=sigma[i],
                target_vol=v.target_vol,
                forecast_vol=v.forecast_vol,
                forecast_model=fc_model[i],
                forecast_reason=fc_reason[i],
                regime_scale=v.regime_scale,
                regime_reason=v.regime_reason,
                inputs=json.dumps({"vix_percentile": _num(vix_pct), "realized_vol_percentile": _num(realized_pct[i])}),
            )
        if "optimal_f" in enabled:
            # the name's daily returns, recentred on the signal's expected daily return, in the signal's direction
            simple = np.expm1(h.returns([symbols[i]], d.covariance_window)[:, 0])
            x = direction[i] * (simple - simple.mean()) + direction[i] * mu[i] / sz.TRADING_DAYS
            if x.size >= 20:
                o = sz.optimal_f(x, n_paths=d.optimal_f_paths, horizon=sz.TRADING_DAYS, seed=i)
                w = direction[i] * min(o.capital_fraction, 1e6) if allowed else 0.0
                add(
                    i,
                    "optimal_f",
                    w,
                    optimal_f=o.f,
                    worst_loss=o.worst_loss,
                    mc_terminal_wealth_p05=o.terminal_wealth_p05,
                    mc_max_drawdown_p95=o.max_drawdown_p95,
                    inputs=json.dumps(
                        {
                            "n_returns": o.n_returns,
                            "geometric_mean": _num(o.geometric_mean),
                            "mc_paths": d.optimal_f_paths,
                            "mc_horizon_sessions": sz.TRADING_DAYS,
                        }
                    ),
                )
    if cov is not None and "kelly_multi" in enabled:
        frac = np.array([st.kelly_fraction for st in strat])
        k = sz.kelly_portfolio(
            mu,
            cov,
            fraction=frac,
            allow_short=[st.allow_short for st in strat],
            max_weight=d.max_name_pct_nav,
            max_gross=d.max_gross_pct_nav,
        )
        for i in range(n):
            add(
                i,
                "kelly_multi",
                float(k.weights[i]),
                sigma_annual=float(math.sqrt(cov[i, i])),
                kelly_fraction=float(frac[i]),
                full_kelly_weight=float(k.full_kelly[i]),
                inputs=json.dumps(
                    {
                        "symbols": symbols,
                        "solver": k.status,
                        "max_name_pct_nav": d.max_name_pct_nav,
                        "max_gross_pct_nav": d.max_gross_pct_nav,
                        "covariance_sessions": int(r_all.shape[0]),
                    }
                ),
            )
    if cov is not None and "risk_parity" in enabled:
        w = sz.equal_risk_contribution(cov) if n > 1 else np.ones(1)
        rc = sz.risk_contributions(w, cov)
        port_vol = float(math.sqrt(w @ cov @ w))
        for i in range(n):
            tv = strat[i].target_vol
            add(
                i,
                "risk_parity",
                direction[i] * w[i] * tv / port_vol,
                sigma_annual=float(math.sqrt(cov[i, i])),
                target_vol=tv,
                risk_contribution=float(rc[i]),
                inputs=json.dumps(
                    {
                        "erc_weight": float(w[i]),
                        "erc_portfolio_vol": port_vol,
                        "symbols": symbols,
                        "covariance_sessions": int(r_all.shape[0]),
                    }
                ),
            )
    if "xgboost" in enabled:
        rows_ml = ml["rows"]
        x = np.array([rows_ml[s] if s in rows_ml else np.full(len(sz.ML_FEATURES), np.nan) for s in symbols])
        vt_w = np.array([v.weight if v is not None else 0.0 for v in vt])
        tv = np.array([st.target_vol for st in strat])
        rscale = np.array([v.regime_scale if v is not None else 1.0 for v in vt])
        m = sz.ml_size(
            ml["model"],
            x,
            ml["as_of_index"],
            target_vol=tv,
            vol_target_weight=vt_w,
            regime_scale=rscale,
            max_position_risk_pct_nav=d.max_position_risk_pct_nav,
        )
        for i in range(n):
            allowed = strat[i].allow_short or direction[i] > 0
            add(
                i,
                "xgboost",
                direction[i] * float(m.weight[i]) if allowed else 0.0,
                target_vol=float(tv[i]),
                forecast_vol=float(sigma[i]),
                predicted_vol_5d=_num(m.predicted_vol[i]),
                predicted_max_drawdown_5d=_num(m.predicted_max_drawdown[i]),
                confidence=_num(m.confidence[i]),
                fallback_used=m.fallback[i] != sz.FALLBACK_NONE,
                fallback_reason=str(m.fallback[i]),
                inputs=json.dumps(
                    {
                        "n_train": ml["n_train"],
                        "trained_through": ml["trained_through"],
                        "confidence_threshold": d.ml_confidence_threshold,
                    }
                ),
            )
    # the recommendation: most conservative method, then every limit
    lim = limits.for_book(b.book)
    gross = float(b.exposure.sum())
    # the book's held names with their sector and cluster, once: each signalled symbol (up to every name of the
    # universe) selects the others by masks instead of a Python pass over the held names (same names, same order)
    held_names = b.exposure.index.to_numpy(object)
    held_sector = np.array([b.sector.get(k) for k in held_names], dtype=object)
    held_cluster = np.array([clusters.get(k) for k in held_names], dtype=object)
    held_rank = {k: r for r, k in enumerate(held_names[b.exposure.to_numpy(float) > 0])}
    # the sums over the other names from the values once (a pandas selection or drop per symbol cost about 0.7 ms)
    exposure_terms, stop_terms = _sum_terms(b.exposure), _sum_terms(b.risk_at_stops)
    stop_names = b.risk_at_stops.index.to_numpy(object)
    rho_cap = lim.threshold("max_pairwise_correlation")
    for i, s in enumerate(symbols):
        own = float(b.exposure.get(s, 0.0))
        g_other = gross - own
        sector = b.sector.get(s)
        others = held_names != s
        sec_other = _masked_sum(b.exposure, exposure_terms, (held_sector == sector) & others) if sector else 0.0
        cl = clusters.get(s)
        cl_other = _masked_sum(b.exposure, exposure_terms, (held_cluster == cl) & others) if cl else 0.0
        stop_dist = 2.0 * atr[s] / spots[s]
        other_risk = _masked_sum(b.risk_at_stops, stop_terms, stop_names != s)  # risk_at_stops.drop(s).sum()
        too_close = []
        if rho_cap is not None:  # the held names (other than s) correlated with s above the cap, in holding order
            near = [k for k, rho in correlated.get(s, {}).items() if k != s and k in held_rank and rho > rho_cap]
            too_close = sorted(near, key=held_rank.__getitem__)
        # Greek caps on the post-trade book with the name's stock position at the recommendation (a stock: delta 1
        # share, dollar delta = spot per share, gamma, vega and theta 0); "other" is everything else each cap covers
        other = {
            "delta": float(b.net_delta.get(s, 0.0)) - float(b.stock_delta.get(s, 0.0)),
            "dollar_delta": b.book_dollar_delta - float(b.stock_dollar_delta.get(s, 0.0)),
            "gamma": float(b.name_gamma.get(s, 0.0)),
            "vega_per_vol_point": b.book_vega_per_vol_point,
            "theta_per_day": b.book_theta_per_day,
        }
        per_share = {
            "delta": 1.0,
            "dollar_delta": spots[s],
            "gamma": 0.0,
            "vega_per_vol_point": 0.0,
            "theta_per_day": 0.0,
        }
        greek_limits = {
            "delta": lim.threshold("max_abs_net_delta_shares"),
            "dollar_delta": lim.threshold("max_abs_net_dollar_delta"),
            "gamma": lim.threshold("max_abs_gamma_shares"),
            "vega_per_vol_point": lim.threshold("max_abs_vega_per_vol_point"),
            "theta_per_day": lim.threshold("max_theta_per_day_loss"),
        }
        greek_caps = {
            k: sz.greek_cap(other[k], per_share[k], greek_limits[k], direction[i], loss_only=k == "theta_per_day")
            * spots[s]
            / b.nav
            for k in other
        }
        # what is held on the signal's side: the most a REDUCING book (or a too-correlated name) may keep
        same_side = own if float(b.net_delta.get(s, 0.0)) * direction[i] > 0 else 0.0
        budget = b.budgets.get(b.held_strategy.get(s, ""))
        caps = sz.SizeLimits(
            per_name=_share_cap(lim.threshold("max_underlying_pct_gross"), g_other, 0.0) / b.nav,
            sector=_share_cap(lim.threshold("max_sector_pct_gross"), g_other, sec_other) / b.nav
            if sector
            else math.inf,
            cluster=_share_cap(d.max_cluster_pct_gross, g_other, cl_other) / b.nav if cl else math.inf,
            delta=greek_caps["delta"],
            dollar_delta=greek_caps["dollar_delta"],
            gamma=greek_caps["gamma"],
            vega=greek_caps["vega_per_vol_point"],
            theta=greek_caps["theta_per_day"],
            correlation=same_side / b.nav if too_close else math.inf,
            trading_state={"HALTED": 0.0, "REDUCING": same_side / b.nav}.get(b.state, math.inf),
            position_risk=d.max_position_risk_pct_nav / stop_dist,
            portfolio_risk=max(d.max_portfolio_risk_pct_nav - other_risk / b.nav, 0.0) / stop_dist,
            # a strategy over its share of the book's VaR may keep what it holds, not add
            risk_budget=same_side / b.nav if budget is not None and budget.status == "BREACH" else math.inf,
        )
        # the hedging layer's cost drag of the book (fraction of NAV a year) scales every method's size
        scale = 1.0 - min(max(hedge_drag or 0.0, 0.0), 1.0)
        w, method, binding = sz.recommend({k: v * scale for k, v in weights[s].items()}, direction[i], caps)
        add(
            i,
            "recommended",
            w,
            strategy=base[i]["strategy"],
            binding_limit=binding,
            confidence=base[i]["signal_confidence"],
            inputs=json.dumps(
                {
                    "method": method,
                    "method_weights": weights[s],
                    "hedge_cost_drag_pct_nav_yr": hedge_drag,
                    "risk_budget": dataclasses.asdict(budget) if budget is not None else None,
                    "hedge_cost_scale": scale,
                    "caps": {k: _num(v) for k, v in vars(caps).items()},
                    "correlated_with": too_close,
                    "greeks": {"other": other, "per_share": per_share, "limits": greek_limits},
                    "trading_state": b.state,
                    "sizing_version": cfg.version,
                    "limits_version": limits.version,
                }
            ),
        )
        rows[-1]["binding_limit"] = binding
    for r in rows:
        r["size_notional"] = r["weight"] * b.nav
        r["size_quantity"] = float(np.trunc(r["size_notional"] / r["spot"]))
        r.setdefault("binding_limit", "method" if r["method"] != "recommended" else None)
        if r["method"] != "recommended":
            r["binding_limit"] = None
    return rows


def _sum_terms(series: pd.Series) -> np.ndarray | None:
    """A float64 series' values as ``Series.sum`` adds them (NaN as 0, numpy's pairwise sum in order), so that
    ``_masked_sum`` of a mask is ``series[mask].sum()``, bit for bit; None for another dtype."""
    if series.dtype != np.float64:
        return None
    values = series.to_numpy(np.float64)
    return np.where(np.isnan(values), 0.0, values)


def _masked_sum(series: pd.Series, terms: np.ndarray | None, mask: np.ndarray) -> float:
    """``float(series[mask].sum())`` (``terms``: ``_sum_terms(series)``)."""
    return float(series[mask].sum()) if terms is None else float(terms[mask].sum())


def _share_cap(cap: float | None, gross_other: float, group_other: float) -> float:
    return sz.gross_share_cap(cap if cap is not None else math.inf, gross_other, group_other)


def _num(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _realized_vol_percentile(h: History, symbol: str, window: int = 21) -> float:
    """Percentile of the name's current 21-session realized vol within its own history of 21-session vols."""
    r = np.diff(np.log(h.close[:, h.column(symbol)]))
    r = r[np.isfinite(r)]
    if r.size < 2 * window:
        return math.nan
    sq = np.concatenate([[0.0], np.cumsum(r * r)])
    rv = np.sqrt((sq[window:] - sq[:-window]) / window)
    return sz.percentile_rank(rv[:-1], float(rv[-1]))


def ml_inputs(
    h: History,
    ivs: pd.DataFrame,
    calendar: pd.DataFrame,
    sectors: dict[str, str],
    index_symbol: str,
    cfg: SizingConfig,
) -> dict[str, Any]:
    """Train the XGBoost vol/drawdown model on the stored history (no look-ahead) and the features of the session."""
    d = cfg.defaults
    iv = _pivot(ivs, "atm_vol", h.dates, h.symbols)
    vix = iv[:, h.column(index_symbol)] if index_symbol in h.symbols else np.full(len(h.dates), np.nan)
    codes = {s: i for i, s in enumerate(sorted(set(sectors.values())))}
    sector_code = np.array([codes.get(sectors.get(s, ""), np.nan) for s in h.symbols], dtype=float)
    feats, targets = sz.ml_dataset(
        h.close, h.high, h.low, h.volume, iv, sessions_to_earnings(h.dates, h.symbols, calendar), vix, sector_code
    )
    settings = sz.MlSettings(
        min_train_rows=d.ml_min_train_rows,
        retrain_interval_sessions=d.ml_retrain_interval_sessions,
        confidence_threshold=d.ml_confidence_threshold,
    )
    t = len(h.dates) - 1
    model = sz.train_ml_model(feats, targets, t, settings)
    return {
        "model": model,
        "as_of_index": t,
        "rows": {s: feats[t, j] for j, s in enumerate(h.symbols)},
        "n_train": model.n_train if model else 0,
        "trained_through": h.dates[model.trained_through].isoformat() if model else None,
    }


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        "signals",
        "hedge_performance",
        "var_results",
        "var_contributions",
        "position_greeks",
        "book_nav",
        "trading_state",
        "market_prices",
        "vol_forecasts",
        "atm_vol_history",
        "event_calendar",
        "position_stops",
        "correlation_matrix",
    ],
    kinds={"pandas", "scipy", "xgboost"},
    owners=OWNERS,
    check_specs=[
        session_check_spec(
            "recommended_is_most_conservative_within_limits",
            asset="position_sizing",
            blocking=True,
            description="Each recommended |weight| is at most every method's |weight| and every cap on the row.",
        )
    ],
    description=(
        "Position size per book and signalled symbol by each method (Kelly mu/sigma^2, multi-asset Kelly "
        "Sigma^-1 mu under the book's constraints, optimal f with Monte Carlo, volatility targeting on the "
        "lowest-QLIKE forecast with a regime scale, equal risk contribution, XGBoost vol/drawdown sizing with its "
        "fallback) and the "
        "recommendation: the most conservative method, times (1 - the book's hedge cost drag from hedge_performance), "
        "clipped by the exposure limits, the trading state and the "
        "per-trade and portfolio risk-at-stop bounds. Inputs of each method are on its row."
    ),
    metadata=table_definition_metadata("position_sizing"),
)
@fail_closed
def position_sizing(context: dg.AssetExecutionContext, config: SizingSettings, warehouse: WarehouseResource) -> Events:
    wh = warehouse.get()
    cfg = _config(config)
    limits = load_limits(config.limits_file)
    emergency = compliance_rules(config.rules_file).emergency
    frames, parts, budget_rows = [], [], []
    for session in partition_sessions(context):
        as_of, positions = valuation(wh, session)
        navs = wh.read("book_nav", {"as_of": as_of}).set_index("book")["nav"]
        states = wh.read("trading_state", {"as_of": as_of})
        state = dict(zip(states["book"], states["state"], strict=True)) if len(states) else {}
        sigs = wh.read("signals", {"as_of_date": session})
        h = read_history(wh, session, max(HISTORY_SESSIONS, cfg.defaults.covariance_window + 5))
        forecasts = best_forecasts(wh.read("vol_forecasts", {"as_of_date": session}))
        ivs = wh.read(
            "atm_vol_history", {"as_of_date": Between(h.dates[0], session)}, columns=["as_of_date", "symbol", "atm_vol"]
        )
        stops = wh.read("position_stops", {"as_of": as_of})
        books = sorted(set(positions["book"]) & set(navs.index))
        rho_caps = [limits.for_book(book).threshold("max_pairwise_correlation") for book in books]
        clusters, correlated = correlation_inputs(wh, as_of, [c for c in rho_caps if c is not None])
        sectors = {
            str(k): str(v) for k, v in positions.dropna(subset=["sector"]).groupby("symbol")["sector"].first().items()
        }
        atr = atr_now(h)
        spots = {s: float(h.close[-1, h.column(s)]) for s in h.symbols}
        spots |= positions.groupby("symbol")["spot"].first().astype(float).to_dict()
        vix_iv = ivs[ivs["symbol"] == config.index_symbol].sort_values("as_of_date")["atm_vol"].to_numpy(float)
        vix_pct = sz.percentile_rank(vix_iv[:-1], float(vix_iv[-1])) if vix_iv.size > 20 else math.nan
        ml = ml_inputs(h, ivs, wh.read("event_calendar"), sectors, config.index_symbol, cfg) if len(sigs) else {}
        hedge_drags = hedge_cost_drags(wh, as_of)
        component = wh.read("var_contributions", {"as_of": as_of, "method": "historical", "horizon_days": 1})
        component = component[np.isclose(component["confidence"], 0.99)]
        book_vars = wh.read("var_results", {"as_of": as_of, "method": "historical", "horizon_days": 1})
        book_vars = book_vars[np.isclose(book_vars["confidence"], 0.99)].set_index("book")["var"]
        parts.append({"as_of": as_of})
        for book in books:
            p = positions[positions["book"] == book]
            dd = p.assign(g=p["dollar_delta"].abs())
            b = BookInputs(
                book=book,
                nav=float(navs[book]),
                state=state.get(book, "ACTIVE"),
                exposure=dd.groupby("symbol")["g"].sum(),
                sector={
                    str(k): str(v) for k, v in p.dropna(subset=["sector"]).groupby("symbol")["sector"].first().items()
                },
                risk_at_stops=stops[stops["book"] == book].groupby("symbol")["risk_at_stop"].sum(),
                net_delta=p.groupby("symbol")["delta"].sum(),
                stock_delta=p[p["instrument_type"] != "option"].groupby("symbol")["delta"].sum(),
                stock_dollar_delta=p[p["instrument_type"] != "option"].groupby("symbol")["dollar_delta"].sum(),
                name_gamma=p.groupby("symbol")["gamma"].sum(),
                book_dollar_delta=float(p["dollar_delta"].sum()),
                book_vega_per_vol_point=float(p["vega_per_vol_point"].sum()),
                book_theta_per_day=float(p["theta_per_day"].sum()),
            )
            # the budgets as limit_status judges them: scaled by a loss streak, warned at the book's warning fraction
            shares = dict(cfg.risk_budgets.get(book, {}))
            factor = loss_streak_factor(wh, book, as_of, emergency)[1] if shares else 1.0
            b.held_strategy, b.budgets = book_budgets(
                dd,
                component[component["book"] == book],
                book_vars.get(book),
                {k: v * factor for k, v in shares.items()},
                limits.for_book(book).warning_fraction,
            )
            budget_rows += [{"book": book, **dataclasses.asdict(x)} for x in b.budgets.values()]
            book_sigs = sigs[sigs["strategy"].isin(cfg.book_strategies(book, set(sigs["strategy"])))]
            drag = hedge_drags.get(book)
            bcfg = sizing_for_book(cfg, limits.for_book(book).risk_level)  # the book's risk-level preset
            rows = size_book(
                b, book_sigs, h, bcfg, ml, forecasts, correlated, clusters, limits, atr, vix_pct, spots, drag
            )
            if rows:
                f = pd.DataFrame(rows)
                f["as_of"], f["as_of_date"], f["book"] = as_of, session, book
                frames.append(f)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    out = out.reindex(columns=table("position_sizing").data_column_names)
    failing = _recommendation_violations(out)
    check = dg.AssetCheckResult(
        check_name="recommended_is_most_conservative_within_limits",
        asset_key="position_sizing",
        passed=not failing,
        metadata={"failing": "; ".join(failing[:10]) or "none"},
    )
    rec = out[out["method"] == "recommended"]
    yield from publish(
        context,
        wh,
        [TableWrite("position_sizing", out, parts)],
        checks=[check],
        metadata={
            "position_sizing": {
                "recommendations": dg.MetadataValue.md(
                    markdown_table(
                        rec[
                            ["book", "symbol", "direction", "weight", "size_notional", "size_quantity", "binding_limit"]
                        ].round(4),
                        30,
                    )
                ),
                "xgboost_fallbacks": dg.MetadataValue.md(
                    markdown_table(
                        out[out["method"] == "xgboost"].groupby("fallback_reason").size().rename("rows").reset_index(),
                        10,
                    )
                ),
                "sizing_version": cfg.version,
                "risk_budgets": dg.MetadataValue.md(
                    markdown_table(pd.DataFrame(budget_rows).round(4), 40) if budget_rows else "(no budgets)"
                ),
            }
        },
    )


def book_budgets(
    rows: pd.DataFrame,
    component: pd.DataFrame,
    book_var: float | None,
    shares: dict[str, float],
    warn_fraction: float = 0.8,
) -> tuple[dict[str, str], dict[str, sz.RiskBudget]]:
    """The strategy holding each symbol (largest |dollar delta|) and each budgeted strategy's budget status."""
    held = rows.sort_values("g", ascending=False).drop_duplicates("symbol")
    held_strategy = dict(zip(held["symbol"], held["strategy"], strict=True))
    if not shares or book_var is None or not len(component):
        return held_strategy, {}
    by_symbol = dict(zip(component["symbol"], component["component_var"], strict=True))
    by_strategy = sz.strategy_component_var(list(rows["symbol"]), list(rows["strategy"]), rows["g"], by_symbol)
    budgets = sz.risk_budget_status(by_strategy, float(book_var), shares, warn_fraction)
    return held_strategy, {x.strategy: x for x in budgets}


def hedge_cost_drags(wh: Warehouse, as_of: pd.Timestamp) -> dict[str, float]:
    """Per book, the hedging layer's cost drag of all its hedges (hedge_performance row ``*``) at the valuation."""
    if not wh.table_exists("hedge_performance"):
        return {}
    rows = wh.read("hedge_performance", {"as_of": as_of, "position_id": "*"}, columns=["book", "cost_drag_pct_nav_yr"])
    return {str(b): float(v) for b, v in zip(rows["book"], rows["cost_drag_pct_nav_yr"], strict=True) if pd.notna(v)}


def _recommendation_violations(out: pd.DataFrame) -> list[str]:
    bad = []
    for r in out[out["method"] == "recommended"].itertuples():
        inputs = json.loads(r.inputs)
        scale = inputs.get("hedge_cost_scale", 1.0)
        bounds = [abs(v) * scale for v in inputs["method_weights"].values()] + [
            v for v in inputs["caps"].values() if v is not None
        ]
        if bounds and abs(r.weight) > min(bounds) * (1 + 1e-12) + 1e-15:
            bad.append(f"{r.book} {r.symbol}: |{r.weight:.6g}| > {min(bounds):.6g}")
    return bad


# ---------------------------------------------------------------------------------------------- heat
@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["position_stops", "position_greeks", "correlation_matrix", "book_nav"],
    kinds={"pandas"},
    owners=OWNERS,
    description=(
        "Portfolio heat per book: risk at stops as a fraction of NAV (cap max_portfolio_risk_pct_nav), the largest "
        "position's share of gross (cap max_position_pct_gross), the largest correlation cluster's share of gross "
        "(cap max_cluster_pct_gross) and heat_score = 100 x (0.5 u_risk + 0.25 u_position + 0.25 u_cluster), each "
        "utilization clipped to [0, 1]."
    ),
    metadata=table_definition_metadata("portfolio_heat"),
)
@fail_closed
def portfolio_heat(context: dg.AssetExecutionContext, config: SizingSettings, warehouse: WarehouseResource) -> Events:
    wh = warehouse.get()
    sizing = _config(config)
    limits = load_limits(config.limits_file)
    rows, parts = [], []
    for session in partition_sessions(context):
        as_of, positions = valuation(wh, session)
        navs = wh.read("book_nav", {"as_of": as_of}).set_index("book")["nav"]
        stops = wh.read("position_stops", {"as_of": as_of})
        # each symbol's cluster from the matrix's diagonal (n rows, not the n x n of the whole matrix)
        cm = wh.query(
            "SELECT symbol_a, cluster_a FROM risk.correlation_matrix WHERE as_of = ? AND symbol_a = symbol_b", [as_of]
        )
        clusters = dict(zip(cm["symbol_a"], cm["cluster_a"], strict=True)) if len(cm) else {}
        parts.append({"as_of": as_of})
        for book in sorted(set(positions["book"]) & set(navs.index)):
            p = positions[positions["book"] == book]
            gross = p["dollar_delta"].abs().to_numpy(float)
            labels = np.array([clusters.get(s, -i - 1) for i, s in enumerate(p["symbol"])])  # unclustered: own label
            risk = stops.loc[stops["book"] == book, "risk_at_stop"].to_numpy(float)
            cap_pos = limits.for_book(book).threshold("max_position_pct_gross") or 1.0
            d = sizing_for_book(sizing, limits.for_book(book).risk_level).defaults  # the book's risk-level preset
            heat = sz.portfolio_heat(
                risk,
                gross,
                labels,
                float(navs[book]),
                max_portfolio_risk_pct_nav=d.max_portfolio_risk_pct_nav,
                max_position_pct_gross=cap_pos,
                max_cluster_pct_gross=d.max_cluster_pct_gross,
            )
            by_cluster = pd.Series(gross).groupby(labels).sum()
            top = int(by_cluster.idxmax()) if gross.sum() > 0 else None
            rows.append(
                {
                    "as_of": as_of,
                    "book": book,
                    "nav": float(navs[book]),
                    "gross_exposure": float(gross.sum()),
                    "risk_at_stops": float(risk.sum()),
                    "risk_at_stops_pct_nav": heat.risk_at_stops_pct_nav,
                    "max_portfolio_risk_pct_nav": d.max_portfolio_risk_pct_nav,
                    "largest_position_share": heat.largest_position_share,
                    "max_position_pct_gross": cap_pos,
                    "largest_cluster": top if top is not None and top > 0 else None,
                    "largest_cluster_share": heat.largest_cluster_share,
                    "max_cluster_pct_gross": d.max_cluster_pct_gross,
                    "risk_utilization": heat.risk_utilization,
                    "position_utilization": heat.position_utilization,
                    "cluster_utilization": heat.cluster_utilization,
                    "heat_score": heat.heat_score,
                    "stops_hit": int(stops.loc[stops["book"] == book, "hit"].sum()),
                }
            )
    out = pd.DataFrame(rows, columns=table("portfolio_heat").data_column_names)
    yield from publish(
        context,
        wh,
        [TableWrite("portfolio_heat", out, parts)],
        metadata={
            "portfolio_heat": {
                "heat": dg.MetadataValue.md(
                    markdown_table(
                        out[
                            [
                                "book",
                                "heat_score",
                                "risk_at_stops_pct_nav",
                                "largest_position_share",
                                "largest_cluster_share",
                            ]
                        ].round(4)
                    )
                )
            }
        },
    )


ASSETS = [signals, position_stops, correlation_matrix, position_sizing, portfolio_heat]
