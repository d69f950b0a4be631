"""Daily constant-maturity ATM implied vol per underlying: the implied-vol risk factor history of VaR."""

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from risk_pipeline.calendar import expiry_close_utc, session_close_utc
from risk_pipeline.contracts import table
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    TableWrite,
    check_events,
    markdown_table,
    partition_label,
    partition_sessions,
    publish,
    session_check_spec,
    table_definition_metadata,
    write_quarantine,
)
from risk_pipeline.kernel_warmup import HISTORY_WARMUP
from risk_pipeline.quality import ValidationContext, ValidationReport, combine_reports, validate
from risk_pipeline.quant.atm_vol import atm_quote_picks, constant_maturity_vol, expiry_atm_vols
from risk_pipeline.quant.chain import MODEL_AMERICAN, MODEL_EUROPEAN, chain_implied_vols
from risk_pipeline.quant.curves import forward_price, zero_rate
from risk_pipeline.quant.implied_vol import IvStatus, american_quote_status
from risk_pipeline.resources import MarketDataResource, WarehouseResource
from risk_pipeline.sources.base import MarketDataSource
from risk_pipeline.warehouse import Between

METHOD = (
    "at-forward vol linear in ln(K/F) between OTM mids; total variance linear in T between bracketing expiries"
    " (every expiry after the tenor: extrapolated back along the first two, not below the first expiry's vol)"
)
MIN_VOL, MAX_VOL = 0.01, 5.0


class AtmVolSettings(dg.Config):
    """Tenor of the constant-maturity vol, shortest expiry used and OTM strikes used per side of the forward;
    ``sessions_per_block``: sessions whose quotes are built, validated and inverted together (memory is bounded
    by one block's quotes; the rows do not depend on it); ``prefetch_max_quotes``: while a block is validated
    and inverted, the next block's quotes are built in a second thread if the block has at most this many quotes
    (memory then holds two blocks' quotes; 0: never; the rows do not depend on it)."""

    tenor_days: int = 30
    min_expiry_days: int = 7
    strikes_per_side: int = 3
    sessions_per_block: int = 60
    prefetch_max_quotes: int = 1_000_000


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer code per row and the distinct values (missing values get -1): ``pd.factorize``, or for a
    categorical column its own codes, renumbered over the categories that occur (in category order, not in
    order of appearance: the callers only group by the codes)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes = values.cat.codes.to_numpy().astype(np.intp)
        present = np.zeros(len(values.cat.categories) + 1, dtype=bool)
        present[codes + 1] = True
        present[0] = False  # the code -1 of a missing value
        renumber = np.cumsum(present) - 1
        renumber[0] = -1
        return renumber[codes + 1], np.asarray(values.cat.categories, dtype=object)[present[1:]]
    codes, uniques = pd.factorize(values, sort=False)
    return codes, np.asarray(uniques, dtype=object)


def bracketing_mask(
    quotes: pd.DataFrame, curve: pd.DataFrame, dividends: pd.DataFrame, settings: AtmVolSettings
) -> np.ndarray:
    """Which of one session's quotes are used: per underlying the two expiries around the tenor (the first
    two after it when none is before), and per expiry the ``strikes_per_side`` out-of-the-money puts and
    calls nearest the forward (curve rate, dividend yield; ties to the earlier row).

    Needs only ``base.QUOTE_KEY_COLUMNS`` (no prices), so a source can price just these rows
    (``option_quotes_where``).
    """
    return sessions_bracketing_mask(quotes, defaultdict(lambda: curve), defaultdict(lambda: dividends), settings)


def sessions_bracketing_mask(
    quotes: pd.DataFrame,
    curve_by_day: Mapping[dt.date, pd.DataFrame],
    div_by_day: Mapping[dt.date, pd.DataFrame],
    settings: AtmVolSettings,
) -> np.ndarray:
    """``bracketing_mask`` of quotes of several sessions at once, each session with its own curve and dividend
    yields: the same rows as the per-session masks (``option_quotes_where_many``)."""
    n = len(quotes)
    if n == 0:
        return np.zeros(0, dtype=bool)
    exp_code, exp_values = _codes(quotes["expiry"])
    day_code, day_values = _codes(quotes["as_of_date"])
    exp_days = pd.to_datetime(pd.Series(exp_values)).to_numpy("datetime64[D]").astype(np.int64)
    as_of_days = pd.to_datetime(pd.Series(day_values)).to_numpy("datetime64[D]").astype(np.int64)
    days = exp_days[exp_code] - as_of_days[day_code]
    und_code, und_values = _codes(quotes["underlying"])
    n_und = len(und_values)
    listed = (days >= settings.min_expiry_days) & (exp_code >= 0) & (day_code >= 0) & (und_code >= 0)
    # per (session, underlying): rows with a missing code are never listed, their index is not used
    pair = day_code.astype(np.int64) * n_und + und_code
    n_pair = len(day_values) * n_und
    before = listed & (days <= settings.tenor_days)
    after = listed & (days > settings.tenor_days)
    none = np.iinfo(np.int64).max
    near = np.full(n_pair, -1, dtype=np.int64)
    np.maximum.at(near, pair[before], days[before])
    far = np.full(n_pair, none, dtype=np.int64)
    np.minimum.at(far, pair[after], days[after])
    later = after & (days > far[pair])
    second = np.full(n_pair, none, dtype=np.int64)
    np.minimum.at(second, pair[later], days[later])
    # the second expiry after the tenor only where none is before it (extrapolation, quant.atm_vol)
    nu, fu, su = near[pair], far[pair], second[pair]
    use = listed & ((days == nu) | ((fu < none) & (days == fu)) | ((nu < 0) & (su < none) & (days == su)))
    # forwards and log-moneyness of the rows of the expiries used only
    used = np.flatnonzero(use)
    t = days[used].astype(float) / 365.0
    rate = np.zeros(len(used))
    order = np.argsort(day_code[used], kind="stable")
    bounds = np.searchsorted(day_code[used][order], np.arange(len(day_values) + 1))
    # the sessions as dates: a folder source's unpriced chain carries them as text
    day_dates = pd.to_datetime(pd.Series(day_values)).dt.date.to_numpy()
    for i, day in enumerate(day_dates):
        rows = order[bounds[i] : bounds[i + 1]]
        curve = curve_by_day[day]
        rate[rows] = zero_rate(curve["tenor_days"].to_numpy(float), curve["zero_rate"].to_numpy(float), t[rows])
    yields = _yields_by_session(div_by_day, day_dates, und_values)[0]
    q = np.where(np.isnan(yields), 0.0, yields)[day_code[used], und_code[used]]
    forward = quotes["underlying_price"].to_numpy(float)[used] * np.exp((rate - q) * t)
    k = np.log(quotes["strike"].to_numpy(float)[used] / forward)
    is_call = (quotes["option_type"] == "C").to_numpy(bool)[used]
    candidate = np.where(is_call, k > 0.0, k <= 0.0)
    rows = used[candidate]
    abs_k = np.abs(k[candidate])
    # rank by |k| within (session, underlying, expiry, option type); stable sort keeps ties in row order
    group = (pair[rows] * len(exp_values) + exp_code[rows]) * 2 + is_call[candidate]
    # a stable sort of complex keys is lexicographic (real part, then imaginary) like np.lexsort, and faster
    by_group = np.argsort(group + 1j * abs_k, kind="stable")
    order = rows[by_group]
    group_sorted = group[by_group]
    start = np.searchsorted(group_sorted, group_sorted, side="left")
    rank = np.arange(len(order)) - start + 1
    out = np.zeros(n, dtype=bool)
    out[order[rank <= settings.strikes_per_side]] = True
    return out


def bracketing_quotes(
    quotes: pd.DataFrame, curve: pd.DataFrame, dividends: pd.DataFrame, settings: AtmVolSettings
) -> pd.DataFrame:
    """The rows of one session's quotes that ``bracketing_mask`` keeps, in their order, index reset."""
    out = quotes[bracketing_mask(quotes, curve, dividends, settings)].reset_index(drop=True)
    out.attrs = quotes.attrs
    return out


def _yields_by_session(
    div_by_day: Mapping[dt.date, pd.DataFrame], days: np.ndarray, symbols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Dividend yield per (session, symbol) from each session's dividend_yields rows (the last row of a
    symbol wins) and whether the session has a row for the symbol (NaN yield where not)."""
    frames = [div_by_day[day] for day in days]
    out = np.full((len(days), len(symbols)), np.nan)
    listed = np.zeros(out.shape, dtype=bool)
    if not frames:
        return out, listed
    rows = pd.concat(frames, ignore_index=True)
    day_index = np.repeat(np.arange(len(days)), [len(f) for f in frames])
    symbol_index = pd.Index(symbols).get_indexer(rows["symbol"])
    known = symbol_index >= 0
    out[day_index[known], symbol_index[known]] = rows["dividend_yield"].to_numpy(float)[known]
    listed[day_index[known], symbol_index[known]] = True
    return out, listed


def _atm_quote_vols(
    values: tuple[np.ndarray, ...], is_call: np.ndarray, american: np.ndarray, slices: np.ndarray, k: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Implied vol and ``IvStatus`` code per quote, inverting only the quotes ``atm_vol_rows`` interpolates
    between: the European quotes, the American quotes the two picks of a slice (``atm_quote_picks``) land on,
    repeated while a pick fails to invert, and those whose search is not bounded by their European vol. Every
    other American quote keeps NaN and ``american_quote_status``'s code (OK where a volatility exists).
    ``values`` are bid, ask, spot, strike, time, rate and dividend yield."""
    n = len(is_call)
    vol = np.full(n, np.nan)
    status = np.zeros(n, dtype=np.int8)
    inverted = np.zeros(n, dtype=bool)

    def invert(rows: np.ndarray) -> None:
        result, _ = chain_implied_vols(*(v[rows] for v in values), is_call[rows], american[rows])
        vol[rows], status[rows], inverted[rows] = result.vol, result.status, True

    rows = np.flatnonzero(american)
    status[rows], bounded = american_quote_status(*(v[rows] for v in values), is_call[rows])
    unbounded = rows[(status[rows] == IvStatus.OK) & ~bounded]
    invert(np.union1d(np.flatnonzero(~american), unbounded))
    n_slices = int(slices.max()) + 1 if n else 0
    while True:
        usable = np.where(inverted, np.isfinite(vol) & (vol > 0.0), status == IvStatus.OK)
        below, above = atm_quote_picks(slices, k, is_call, usable, n_slices)
        picks = np.union1d(below[below >= 0], above[above >= 0])
        todo = picks[~inverted[picks]]
        if todo.size == 0:
            return vol, status
        invert(todo)


def history_implied_vols(
    quotes: pd.DataFrame,
    curve_by_day: Mapping[dt.date, pd.DataFrame],
    div_by_day: Mapping[dt.date, pd.DataFrame],
    *,
    atm_only: bool = False,
) -> pd.DataFrame:
    """``surfaces.implied_vol_frame`` of several sessions' quotes in one inversion (the columns ``atm_vol_rows``
    reads plus the inputs): each row's time, rate (its session's curve), dividend yield and vol as the
    per-session frame has them, rows ordered by session (stable).

    ``atm_only``: only the quotes ``atm_vol_rows`` interpolates between get a vol; the other American ones
    keep NaN with the status of the checks before the iteration (``_atm_quote_vols``), so ``atm_vol_rows``
    gives the same rows as from the full frame.
    """
    day_code, days = pd.factorize(quotes["as_of_date"], sort=True)
    quotes = quotes.iloc[np.argsort(day_code, kind="stable")].reset_index(drop=True)
    day_code = np.sort(day_code, kind="stable")
    as_of = quotes["as_of"]
    # each distinct expiry's close once, then taken per row (the values a per-row map gives)
    expiry_code, expiries = pd.factorize(quotes["expiry"], use_na_sentinel=False)
    close = expiry_close_utc(pd.Series(expiries)).iloc[expiry_code].reset_index(drop=True)
    t = ((close - as_of).dt.total_seconds() / (365.0 * 86400.0)).to_numpy(float)
    rate = np.empty(len(quotes))
    bounds = np.searchsorted(day_code, np.arange(len(days) + 1))
    for i, session in enumerate(days):
        rows = slice(bounds[i], bounds[i + 1])
        curve = curve_by_day[session]
        rate[rows] = zero_rate(curve["tenor_days"].to_numpy(float), curve["zero_rate"].to_numpy(float), t[rows])
    underlying = quotes["underlying"]
    und_code, symbols = _codes(underlying)
    yields, listed = _yields_by_session(div_by_day, np.asarray(days, dtype=object), symbols)
    q = yields[day_code, und_code]
    unlisted = ~listed[day_code, und_code]
    if unlisted.any():
        missing = pd.DataFrame({"session": days[day_code], "symbol": underlying.to_numpy()})[unlisted]
        for session, symbols_missing in missing.groupby("session", sort=True)["symbol"]:
            raise dg.Failure(
                f"no dividend_yields row for {sorted(set(symbols_missing))[:10]} on {session}: cannot compute forwards"
            )
    spot = quotes["underlying_price"].to_numpy(float)
    strike = quotes["strike"].to_numpy(float)
    bid = quotes["bid"].to_numpy(float)
    ask = quotes["ask"].to_numpy(float)
    american = (quotes["exercise_style"] == "american").to_numpy(bool)
    is_call = (quotes["option_type"] == "C").to_numpy(bool)
    forward = forward_price(spot, rate, q, t)
    values = (bid, ask, spot, strike, t, rate, q)
    if atm_only:
        slices = quotes.groupby(["as_of_date", "underlying", "expiry"], sort=True).ngroup().to_numpy()
        vol, status = _atm_quote_vols(values, is_call, american, slices, np.log(strike / forward))
        model = np.where(american, MODEL_AMERICAN, MODEL_EUROPEAN)
    else:
        result, model = chain_implied_vols(*values, is_call, american)
        vol, status = result.vol, result.status
    status_names = np.array([s.name for s in sorted(IvStatus)], dtype=object)
    out = pd.DataFrame(
        {
            "as_of_date": quotes["as_of_date"].to_numpy(),
            "as_of": pd.to_datetime(as_of, utc=True).array,
            "underlying": underlying.to_numpy(),
            "expiry": quotes["expiry"].to_numpy(),
            "strike": strike,
            "option_type": quotes["option_type"].to_numpy(),
            "bid": bid,
            "ask": ask,
            "spot": spot,
            "forward": forward,
            "time_to_expiry_years": t,
            "rate": rate,
            "dividend_yield": q,
            "exercise_style": quotes["exercise_style"].to_numpy(),
            "model": model,
            "implied_vol": vol,
            "status": status_names[status.astype(np.intp)],
        }
    )
    return out


def atm_vol_rows(iv: pd.DataFrame, tenor_days: int, source: str) -> pd.DataFrame:
    """atm_vol_history rows from implied_vols-style rows of one or more sessions."""
    columns = table("atm_vol_history").data_column_names
    if iv.empty:
        return pd.DataFrame(columns=columns)
    slices = iv.groupby(["as_of_date", "underlying", "expiry"], sort=True).ngroup().to_numpy()
    n_slices = int(slices.max()) + 1
    k = np.log(iv["strike"].to_numpy(float) / iv["forward"].to_numpy(float))
    ok = iv["status"].to_numpy() == "OK"
    vol = np.where(ok, iv["implied_vol"].to_numpy(float), np.nan)
    atm, _, _ = expiry_atm_vols(slices, k, vol, iv["option_type"].to_numpy() == "C", n_slices)
    # a quote with a valid implied vol: status OK (a frame made with atm_only has vols only where they are used)
    valid_quotes = np.bincount(slices, weights=ok, minlength=n_slices)
    per_slice = (
        iv.assign(slice=slices)
        .groupby("slice", sort=True)
        .agg(
            as_of_date=("as_of_date", "first"),
            symbol=("underlying", "first"),
            expiry=("expiry", "first"),
            time_years=("time_to_expiry_years", "first"),
            as_of=("as_of", "first"),
            spot=("spot", "first"),
        )
    )
    per_slice["atm_vol"] = atm
    per_slice["quotes_used"] = valid_quotes.astype(np.int64)
    days = per_slice.groupby(["as_of_date", "symbol"], sort=True).ngroup().to_numpy()
    n_days = int(days.max()) + 1
    cm = constant_maturity_vol(days, per_slice["time_years"].to_numpy(float), atm, tenor_days / 365.0, n_days)
    head = per_slice.groupby(days).first()
    near, far = cm.near_slice, cm.far_slice
    used = per_slice["quotes_used"].to_numpy(np.int64)

    def pick(column: str, index: np.ndarray, missing: Any = np.nan) -> np.ndarray:
        values = per_slice[column].to_numpy()
        return np.where(index >= 0, values[np.maximum(index, 0)], missing)

    out = pd.DataFrame(
        {
            "as_of_date": head["as_of_date"].to_numpy(),
            "symbol": head["symbol"].to_numpy(),
            "as_of": head["as_of"].array,
            "tenor_days": tenor_days,
            "atm_vol": cm.atm_vol,
            "spot": head["spot"].to_numpy(float),
            "near_expiry": pick("expiry", near, None),
            "near_time_years": pick("time_years", near),
            "near_atm_vol": pick("atm_vol", near),
            "far_expiry": pick("expiry", far, None),
            "far_time_years": pick("time_years", far),
            "far_atm_vol": pick("atm_vol", far),
            "extrapolated": cm.extrapolated,
            "quotes_used": used[np.maximum(near, 0)] * (near >= 0) + used[np.maximum(far, 0)] * (far >= 0),
            "method": METHOD,
            "source": source,
        }
    )
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True)
    return out[np.isfinite(out["atm_vol"].to_numpy(float))].reset_index(drop=True)[columns]


class _QuoteBlocks:
    """The quotes of each block of sessions in turn (``source.option_quotes_where_many``): asked for block ``j``,
    it returns its quotes and starts building block ``j + 1``'s in ``pool`` if block ``j`` has at most
    ``max_quotes`` quotes, so the source works in one thread at a time and each block's quotes are those it
    gives alone."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        source: MarketDataSource,
        select: Callable[[pd.DataFrame], np.ndarray],
        blocks: Sequence[list[dt.date]],
        max_quotes: int,
    ) -> None:
        self.pool, self.source, self.select, self.blocks, self.max_quotes = pool, source, select, blocks, max_quotes
        self.pending: dict[int, Future[pd.DataFrame]] = {}

    def __call__(self, j: int) -> pd.DataFrame:
        future = self.pending.pop(j, None)
        if future is not None:
            quotes = future.result()
        else:
            quotes = self.source.option_quotes_where_many(self.blocks[j], self.select)
        if j + 1 < len(self.blocks) and 0 < self.max_quotes and len(quotes) <= self.max_quotes:
            build = self.source.option_quotes_where_many
            self.pending[j + 1] = self.pool.submit(build, self.blocks[j + 1], self.select)
        return quotes


@dg.asset(
    group_name="volatility",
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["rates_curve", "dividend_yields"],
    kinds={"pandas", "numba"},
    owners=OWNERS,
    description=(
        "Closing 30-day constant-maturity ATM implied vol per underlying and session, from the source's last "
        "option snapshot of the session (two expiries bracketing the tenor, the three OTM strikes nearest the "
        "forward on each side, validated with the option_quotes suite). Loaded with the price history: its "
        "day-on-day changes are the implied-vol moves that historical and Monte Carlo VaR apply to every option."
    ),
    metadata=table_definition_metadata("atm_vol_history"),
    check_specs=[
        session_check_spec(
            "source_quotes_valid",
            asset="atm_vol_history",
            blocking=True,
            description="The quotes used pass every option_quotes rule (failing rows go to quarantine).",
        ),
        session_check_spec(
            "atm_vol_plausible",
            asset="atm_vol_history",
            blocking=True,
            description=f"Every ATM vol within [{MIN_VOL}, {MAX_VOL}].",
        ),
    ],
)
def atm_vol_history(
    context: dg.AssetExecutionContext,
    config: AtmVolSettings,
    warehouse: WarehouseResource,
    market_data: MarketDataResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    wh = warehouse.get()
    sessions = partition_sessions(context)
    source = market_data.get_source()
    label = partition_label(sessions)
    span = {"as_of_date": Between(sessions[0], sessions[-1])}
    curve_by_day = dict(tuple(wh.read("rates_curve", span).groupby("as_of_date")))
    div_by_day = dict(tuple(wh.read("dividend_yields", span).groupby("as_of_date")))
    # a first run's kernels, compiled in a separate process since the run started (MarketDataResource): wait
    # for it and load them from numba's cache instead of compiling them a second time here
    warmup = HISTORY_WARMUP.wait()
    if warmup:
        context.log.info(warmup)
    for session in sessions:
        if session not in curve_by_day or session not in div_by_day:
            if source.option_quotes(session).empty:
                continue
            raise dg.Failure(f"no rates_curve / dividend_yields for {session}: load the price history first")
    with_inputs = [s for s in sessions if s in curve_by_day and s in div_by_day]
    # only the quotes used are built (and, for the synthetic source, priced), many sessions at a time
    select = functools.partial(
        sessions_bracketing_mask, curve_by_day=curve_by_day, div_by_day=div_by_day, settings=config
    )
    now = pd.Timestamp.now(tz="UTC")
    reference = {s: min(session_close_utc(s), now) for s in sessions}

    def check(
        counted: list[dt.date], block: list[dt.date], quotes: pd.DataFrame | None = None
    ) -> tuple[int, ValidationReport | None]:
        """The block's quotes (built here unless given) and their validation, the row counts judged on the
        sessions ``counted``."""
        if quotes is None:
            quotes = source.option_quotes_where_many(block, select)
        if quotes.empty:
            return 0, None
        ctx = ValidationContext(label, tuple(counted), reference)
        return len(quotes), validate("option_quotes", quotes, ctx, market_data.quality)

    # block by block, memory bounded by one block's quotes: quotes, validation and rows are per session, so
    # the rows are those of one block. After a failed block the rest are still validated (every bad row is
    # quarantined) but not inverted. A session without quotes is counted with the next block that has some
    # (the one before for the last ones), as in the one validation of the whole range.
    size = max(1, config.sessions_per_block)
    validated = 0
    failed: list[ValidationReport] = []
    blocks: list[pd.DataFrame] = []
    quoted: list[dt.date] = []
    carried = [s for s in sessions if s not in with_inputs]
    # the last block with quotes: its counted sessions, its sessions and whether it failed
    last: tuple[list[dt.date], list[dt.date], bool] | None = None
    block_list = [with_inputs[i : i + size] for i in range(0, len(with_inputs), size)]
    # the next block's quotes are built (the source's Python and its pricing kernels) while this block is
    # validated and inverted: the source is used by that one thread only, each block's quotes as built alone
    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atm_quotes")
    try:
        quotes_of = _QuoteBlocks(prefetch, source, select, block_list, config.prefetch_max_quotes)
        for j, block in enumerate(block_list):
            n, report = check(carried + block, block, quotes_of(j))
            if report is None:
                carried += block
                continue
            last, carried = (carried + block, block, not report.passed), []
            validated += n
            if not report.passed:
                failed.append(report)
            if failed:
                continue
            iv = history_implied_vols(report.typed, curve_by_day, div_by_day, atm_only=True)
            del report
            quoted += sorted(set(iv["as_of_date"]))
            blocks.append(atm_vol_rows(iv, config.tenor_days, market_data.kind))
            del iv
    finally:
        prefetch.shutdown(wait=True, cancel_futures=True)
    if carried and last is not None:
        # sessions without quotes after the last block with quotes: that block validated again with them
        counted, block, block_failed = last
        _, report = check(counted + carried, block)
        if report is not None and not report.passed:
            # this report replaces the block's own failed one (it holds the same rows and more rules)
            if block_failed:
                failed[-1] = report
            else:
                failed.append(report)
    if failed:
        report = combine_reports(failed)
        quarantine = report.quarantine_frame("atm_vol_history")
        write_quarantine(context, wh, quarantine, asset="atm_vol_history", partition_key=label)
        failed_check = dg.AssetCheckResult(
            check_name="source_quotes_valid",
            asset_key="atm_vol_history",
            passed=False,
            metadata={
                "quotes_validated": validated,
                "failed_rules": ", ".join(r.rule for r in report.failed),
                "quarantined_rows": len(quarantine),
                "where": "; ".join(report.location(p) for r in report.failed for p in r.failing_positions[:3]),
            },
        )
        yield from check_events(context, [failed_check])
        raise dg.Failure(
            description=report.message(),
            metadata={
                "failed_rules": ", ".join(r.rule for r in report.failed),
                "quarantined_rows": len(quarantine),
                "table_unchanged": "risk.atm_vol_history",
            },
        )
    if len(blocks) > 1:
        rows = pd.concat(blocks, ignore_index=True)
    else:
        rows = blocks[0] if blocks else atm_vol_rows(pd.DataFrame(), config.tenor_days, market_data.kind)
    bad = rows[~((rows["atm_vol"] >= MIN_VOL) & (rows["atm_vol"] <= MAX_VOL))]
    per_day = rows.groupby("as_of_date")["symbol"].count()
    preview = rows.tail(10).round(dict.fromkeys(rows.select_dtypes("number").columns, 4))
    yield from publish(
        context,
        wh,
        # only the sessions that had quotes: a session the source has no chain for keeps what is stored
        [TableWrite("atm_vol_history", rows, [{"as_of_date": s} for s in quoted])],
        checks=[
            dg.AssetCheckResult(
                check_name="source_quotes_valid",
                asset_key="atm_vol_history",
                passed=True,
                metadata={"quotes_validated": validated},
            ),
            dg.AssetCheckResult(
                check_name="atm_vol_plausible",
                asset_key="atm_vol_history",
                passed=bad.empty,
                metadata={
                    "rows": len(rows),
                    "outside_bounds": len(bad),
                    "sample": dg.MetadataValue.md(markdown_table(bad[["as_of_date", "symbol", "atm_vol"]], 20)),
                },
            ),
        ],
        metadata={
            "atm_vol_history": {
                "sessions_with_quotes": len(quoted),
                "sessions_without_quotes": len(sessions) - len(quoted),
                "sessions_kept_as_stored": ", ".join(str(s) for s in sessions if s not in quoted) or "none",
                "underlyings_per_session": f"{int(per_day.min())}..{int(per_day.max())}" if len(per_day) else "0",
                "extrapolated_rows": int(rows["extrapolated"].sum()),
                "preview": dg.MetadataValue.md(markdown_table(preview, 10)),
            }
        },
    )
