"""The synthetic market's stylized facts next to the S&P 500's (arch.data.sp500, 1999-2018).

Usage: ``python bench/bench_market_stats.py [--seeds 30] [--market realistic] [--fomc-seeds 3] [--prices-only]``

For every seed the generator's 2021-2027 path (market_prices, implied_vol_history at 30 and 365 days,
the earnings calendar and the macro calendar of ``data/event_calendar/macro_events.csv``) goes through
``quant.market_stats.path_statistics``; the table shows the median over seeds (or the stated
aggregate over paths) beside the same statistic on the S&P 500: the whole 1999-2018 sample and its
rolling 7-year windows (one a year, the length of a synthetic path). Statistics that need single
stocks or implied vols have no S&P value here (arch ships the index only); their reference values
come from the literature cited in the issue and are marked as such. The FOMC afternoon ratio reads the
generator's intraday prices at the 14:00 snapshot and the close on ``--fomc-seeds`` seeds. ``--prices-only``
skips the implied vols and the FOMC ratio and leaves out the rows that need them (about 0.15 s a seed
instead of 1.5 s: for screening variants of the generator on many seeds).
Prints a Markdown table (the README's "Synthetic market" table) and the time taken.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from risk_pipeline.quant import market_stats as ms  # noqa: E402
from risk_pipeline.sources.synthetic import FIRST_SESSION, LAST_SESSION, SyntheticSource  # noqa: E402

MACRO_FILE = ROOT / "data" / "event_calendar" / "macro_events.csv"
IMPLIED_MOVE = re.compile(r"implied move (-?[0-9.]+)%")


def macro_calendar() -> dict[dt.date, str]:
    """{New York date: 'cpi;fomc'-style label} from the shipped macro calendar (cancelled releases left out)."""
    frame = pd.read_csv(MACRO_FILE, dtype=str, keep_default_na=False)
    out: dict[dt.date, str] = {}
    for when, kind, note in zip(frame["event_time"], frame["event_type"], frame["notes"], strict=True):
        if "cancel" in note.lower():
            continue
        day = pd.Timestamp(when).tz_convert("America/New_York").date()
        out[day] = kind if day not in out else f"{out[day]};{kind}"
    return out


def synthetic_path(src: SyntheticSource, with_implied: bool = True) -> ms.MarketPath:
    """The generator's 2021-2027 output as a MarketPath (index = column 0 of symbols())."""
    symbols = src.symbols()
    prices = src.market_prices(FIRST_SESSION, LAST_SESSION)
    wide = {c: prices.pivot(index="as_of_date", columns="symbol", values=c)[symbols] for c in ("close", "open")}
    flags = prices.pivot(index="as_of_date", columns="symbol", values="event_flag")[symbols].fillna("")
    dates = list(wide["close"].index)
    events = src.earnings_events()
    reaction = events["notes"].str.extract(r"reaction session (\d{4}-\d{2}-\d{2})")[0]
    move = events["notes"].str.extract(IMPLIED_MOVE)[0].astype(float) / 100.0
    implied = pd.DataFrame(np.nan, index=dates, columns=symbols)
    for sym, day, m in zip(events["symbol"], reaction, move, strict=True):
        d = dt.date.fromisoformat(day)
        if d in implied.index:
            implied.loc[d, sym] = m
    index_flags = flags[symbols[0]]
    kwargs: dict[str, np.ndarray] = {}
    if with_implied:
        iv = src.implied_vol_history(FIRST_SESSION, LAST_SESSION, tenors_days=(30, 365))

        def pivot(tenor: int, column: str) -> np.ndarray:
            sub = iv[iv["tenor_days"] == tenor]
            return sub.pivot(index="as_of_date", columns="symbol", values=column)[symbols].to_numpy(float)

        a30, a365 = pivot(30, "atm_vol"), pivot(365, "atm_vol")
        kwargs = {
            "index_iv30": a30[:, 0],
            "index_iv365": a365[:, 0],
            "names_iv30": a30[:, 1:],
            "names_put25": pivot(30, "put_25d_vol")[:, 1:],
            "names_call25": pivot(30, "call_25d_vol")[:, 1:],
        }
    return ms.MarketPath(
        index_close=wide["close"].to_numpy(float)[:, 0],
        index_open=wide["open"].to_numpy(float)[:, 0],
        names_close=wide["close"].to_numpy(float)[:, 1:],
        names_open=wide["open"].to_numpy(float)[:, 1:],
        earnings=flags.apply(lambda col: col.str.contains("earnings")).to_numpy(bool)[:, 1:],
        implied_move=implied.to_numpy(float)[:, 1:],
        cpi=index_flags.str.contains("cpi").to_numpy(bool),
        fomc=index_flags.str.contains("fomc").to_numpy(bool),
        **kwargs,
    )


def fomc_afternoon_ratio(src: SyntheticSource) -> float:
    """Mean |log(close / price at 14:00)| of the index on FOMC days over the same on days without events."""
    prices = src.market_prices(FIRST_SESSION, LAST_SESSION)
    index = prices[prices["symbol"] == src.symbols()[0]].set_index("as_of_date")
    fomc, normal = [], []
    for day, flag in index["event_flag"].items():
        is_fomc = isinstance(flag, str) and "fomc" in flag
        if not is_fomc and (isinstance(flag, str) or len(normal) >= 150 or day.weekday() != 2):
            continue
        at_two = pd.Timestamp(day.isoformat() + " 14:00", tz="America/New_York").to_pydatetime()
        move = abs(np.log(index.loc[day, "close"] / src.spot_prices(day, at_two).iloc[0]))
        (fomc if is_fomc else normal).append(move)
    return float(np.mean(fomc) / np.mean(normal))


def sp500_paths() -> tuple[ms.MarketPath, list[ms.MarketPath]]:
    """The S&P 500 (arch) as one path and as rolling 7-year paths (one starting each January, 1999-2012)."""
    import arch.data.sp500

    data = arch.data.sp500.load()
    full = ms.MarketPath(index_close=data["Adj Close"].to_numpy(float), index_open=data["Open"].to_numpy(float))
    windows = []
    for start in range(1999, 2013):
        sub = data.loc[str(start) : str(start + 6)]
        windows.append(
            ms.MarketPath(index_close=sub["Adj Close"].to_numpy(float), index_open=sub["Open"].to_numpy(float))
        )
    return full, windows


def book_backtests(seed: int, market: str, session: dt.date, history: int = 760, days: int = 250) -> list[tuple]:
    """The sample books' hypothetical static-book VaR backtest (as the pipeline's var_backtest) on the demo window.

    Positions of ``session``; each option's vol from the generating surface at the last snapshot (the
    pipeline fits SVI to the quotes); closes of the ``history`` sessions to ``session``; the 30-day ATM
    vol per underlying from ``implied_vol_history`` (the pipeline measures it from the quotes, within half
    a vol point); VaR by ``var.compute_var`` with the pipeline's settings (500-day look-back, 10,000
    scenarios, seed 0). Returns (book, method, exceptions, Kupiec p, Christoffersen p, CC p, zone).
    """
    from risk_pipeline.quant.backtest import backtest_exceptions
    from risk_pipeline.quant.book_backtest import static_book_backtest
    from risk_pipeline.quant.portfolio import Portfolio
    from risk_pipeline.quant.var import VarConfig

    src = SyntheticSource(seed=seed, macro_event_dates=macro_calendar(), market=market)
    window = src.sessions(FIRST_SESSION, session)[-history:]
    prices = src.market_prices(window[0], session)
    closes = prices.pivot(index="as_of_date", columns="symbol", values="close")
    iv = src.implied_vol_history(window[0], session, tenors_days=(30,))
    atm = iv.pivot(index="as_of_date", columns="symbol", values="atm_vol")
    snap = src.snapshot_times(session)[-1]
    surf = src.true_surface(session, snap).set_index(["underlying", "expiry"])
    spot = src.spot_prices(session, snap)
    ordinals = np.array([d.toordinal() for d in window], dtype=float)
    gaps = np.concatenate([[0.0], np.diff(ordinals)])
    rows = []
    for book, pos in src.positions(session).groupby("book", sort=True):
        symbols = tuple(sorted(pos["symbol"].unique()))
        index = {x: i for i, x in enumerate(symbols)}
        opt = (pos["instrument_type"] == "option").to_numpy(bool)
        vol, t_years, rate, div = (np.zeros(len(pos)) for _ in range(4))
        for i, (sym, exp, k) in enumerate(zip(pos["symbol"], pos["expiry"], pos["strike"], strict=True)):
            if not opt[i]:
                continue
            sl = surf.loc[(sym, exp)]
            t = sl["time_to_expiry_years"]
            x = np.log(k / sl["forward"])
            w = sl["svi_a"] + sl["svi_b"] * (
                sl["svi_rho"] * (x - sl["svi_m"]) + np.hypot(x - sl["svi_m"], sl["svi_sigma"])
            )
            vol[i], t_years[i], rate[i], div[i] = np.sqrt(w / t), t, sl["rate"], sl["dividend_yield"]
        portfolio = Portfolio(
            symbols=symbols,
            spot=spot[list(symbols)].to_numpy(float),
            symbol_index=pos["symbol"].map(index).to_numpy(np.intp),
            quantity=pos["quantity"].to_numpy(float),
            multiplier=pos["multiplier"].to_numpy(float),
            is_option=opt,
            is_call=(pos["option_type"] == "C").to_numpy(bool),
            strike=np.where(opt, pos["strike"].to_numpy(float), 1.0),
            time_years=t_years,
            implied_vol=vol,
            rate=rate,
            dividend_yield=div,
            is_american=(pos["exercise_style"] == "american").to_numpy(bool),
            position_id=tuple(pos["position_id"]),
        )
        c = closes[list(symbols)].to_numpy(float)
        v = atm[list(symbols)].to_numpy(float)
        test_days = np.arange(len(window) - 1 - days, len(window) - 1)
        result = static_book_backtest(portfolio, c, v, gaps, test_days, VarConfig(), confidence=0.99)
        for method, var in result.var.items():
            r = backtest_exceptions(result.pnl < -var, 0.99)
            rows.append(
                (
                    f"hypothetical:{book}",
                    method,
                    r.exceptions,
                    r.kupiec_p_value,
                    r.christoffersen_p_value,
                    r.conditional_coverage_p_value,
                    r.traffic_light,
                )
            )
    return rows


def _fmt(x: float, spec: str = ".2f") -> str:
    return "–" if not np.isfinite(x) else format(x, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--market", default="realistic")
    parser.add_argument("--fomc-seeds", type=int, default=3)
    parser.add_argument(
        "--prices-only", action="store_true", help="no implied vols or FOMC ratio (their rows are left out)"
    )
    parser.add_argument(
        "--backtest", action="store_true", help="only the sample books' VaR backtest on the demo window"
    )
    parser.add_argument("--date", help="demo session (default: the latest closed XNYS session)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the demo (with --backtest)")
    args = parser.parse_args()
    if args.backtest:
        from risk_pipeline.calendar import latest_closed_session

        session = dt.date.fromisoformat(args.date) if args.date else latest_closed_session(pd.Timestamp.now(tz="UTC"))
        start = time.perf_counter()
        rows = book_backtests(args.seed, args.market, session)
        window = SyntheticSource(seed=args.seed).sessions(FIRST_SESSION, session)[-760:]
        print(
            f"Static-book VaR backtests, seed {args.seed}, market '{args.market}', demo session {session} "
            f"(history {window[0]} .. {window[-1]}; {time.perf_counter() - start:.0f} s)\n"
        )
        print("| book | method | exceptions | Kupiec p | Christoffersen p | CC p | zone |")
        print("|---|---|---|---|---|---|---|")
        for book, method, n_exc, p_k, p_c, p_cc, zone in rows:
            print(f"| {book} | {method} | {n_exc} | {p_k:.3f} | {p_c:.3f} | {p_cc:.3f} | {zone} |")
        return

    macro = macro_calendar()
    start = time.perf_counter()
    stats, coverage, fomc = [], [], []
    for seed in range(args.seeds):
        src = SyntheticSource(seed=seed, macro_event_dates=macro, market=args.market)
        path = synthetic_path(src, with_implied=not args.prices_only)
        stats.append(ms.path_statistics(path))
        coverage.append(ms.stress_coverage(path.index_close))
        if seed < args.fomc_seeds and not args.prices_only:
            fomc.append(fomc_afternoon_ratio(src))
    elapsed = time.perf_counter() - start
    full, windows = sp500_paths()
    sp = ms.path_statistics(full)
    spw = [ms.path_statistics(w) for w in windows]

    def col(key: str, rows: list[dict[str, float]] = stats) -> np.ndarray:
        return np.array([r.get(key, np.nan) for r in rows], dtype=float)

    def med(key: str, rows: list[dict[str, float]] = stats) -> float:
        values = col(key, rows)
        return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")

    def triple(prefix: str, rows: list[dict[str, float]] = stats) -> str:
        return "/".join(_fmt(med(f"{prefix}_{lag}", rows)) for lag in (1, 5, 20))

    n = args.seeds
    lit = "n/a in arch (issue: {})"
    table = [
        (
            "autocorrelation of abs returns, lags 1/5/20: index",
            triple("acf_index"),
            f"{triple('acf_index', [sp])} (7-year windows: {triple('acf_index', spw)})",
            "about 0.25/0.30/0.20",
        ),
        ("the same, single names (median over names)", triple("acf_names"), "n/a in arch", "about 0.25/0.30/0.20"),
        (
            "leverage corr(r_t, abs r_t+1), index",
            _fmt(med("leverage"), ".3f"),
            f"{_fmt(sp['leverage'], '.3f')} (windows {_fmt(col('leverage', spw).min(), '.3f')} to "
            f"{_fmt(col('leverage', spw).max(), '.3f')})",
            "-0.10 to -0.16",
        ),
        (
            "index skewness",
            _fmt(med("skewness")),
            f"{_fmt(sp['skewness'])} (windows median {_fmt(med('skewness', spw))})",
            "-0.3 to -0.7",
        ),
        (
            "index kurtosis; Hill tail index of abs returns (5 % tail)",
            f"{_fmt(med('kurtosis'), '.1f')}; {_fmt(med('hill'))}",
            f"{_fmt(sp['kurtosis'], '.1f')}; {_fmt(sp['hill'])}",
            "keep (fat tails)",
        ),
        (
            "max 21-day realized vol: median; upper quartile; share of paths above 40 %",
            f"{med('max_rv21'):.0%}; {np.quantile(col('max_rv21'), 0.75):.0%}; {np.mean(col('max_rv21') > 0.4):.0%}",
            f"{sp['max_rv21']:.0%} (7-year windows: median {med('max_rv21', spw):.0%}, "
            f"above 40 % in {np.mean(col('max_rv21', spw) > 0.4):.0%})",
            "60-90 %, a >40 % episode in about half",
        ),
        (
            "7-year max drawdown: median; 5 % worst",
            f"{med('max_drawdown'):.0%}; {np.quantile(col('max_drawdown'), 0.05):.0%}",
            f"{sp['max_drawdown']:.0%} (windows median {med('max_drawdown', spw):.0%})",
            "5 % worst <= -45 %",
        ),
        (
            "250-day windows in the red zone, 99 % historical VaR (250-day look-back): pooled; "
            "clustering rejected (p < 0.05)",
            f"{np.mean(col('red_share')):.1%}; {np.mean(col('clustering_p') < 0.05):.0%} of paths",
            f"{sp['red_share']:.1%}, p {sp['clustering_p']:.3f} (windows: {np.mean(col('red_share', spw)):.1%}, "
            f"rejected in {np.mean(col('clustering_p', spw) < 0.05):.0%})",
            "8-10 %, rejected in about half",
        ),
        (
            "760-session windows with a stress episode (21-day vol >= 25 % or drawdown <= -15 %)",
            f"{np.mean(coverage):.0%}",
            "",
            "the demo window has one",
        ),
        ("mean pairwise correlation of the names", _fmt(med("avg_correlation")), "n/a in arch", "keep"),
        (
            "correlation on down minus up index days",
            _fmt(med("down_minus_up_correlation")),
            lit.format("higher by 0.1-0.2 on down days"),
            "+0.1 to +0.2",
        ),
        (
            "correlation on stress days (trailing 21-day index vol >= 35 %)",
            _fmt(med("stress_correlation")),
            "n/a in arch",
            "0.6-0.75",
        ),
        (
            "index spot-vol correlation; vol of vol (30-day ATM)",
            f"{med('spot_vol_correlation'):.2f}; {med('vol_of_vol'):.2f}",
            lit.format("-0.83; 1.30"),
            "-0.75 to -0.85; 1.1-1.3",
        ),
        (
            "index implied minus realized vol (30-day ATM vs next 21 sessions); share of days above",
            f"{med('iv_minus_rv_points'):+.1f} pts; {med('iv_above_rv_share'):.0%}",
            lit.format("+3.0 pts, 82 %"),
            "",
        ),
        (
            "IV/RV: index; names",
            f"{med('iv_rv_ratio_index'):.2f}; {med('iv_rv_ratio_names'):.2f}",
            "n/a in arch",
            "1.2-1.3; 1.00-1.05",
        ),
        (
            "implied minus realized correlation (equal weights)",
            f"{med('implied_minus_realized_correlation'):+.3f}",
            lit.format("+0.10 to +0.20"),
            "+0.10 to +0.15",
        ),
        (
            "ATM term structure: corr(30-day level, 1-year minus 30-day slope); inverted on the top 5 % vol days "
            "(on the calmer half)",
            f"{med('level_slope_correlation'):.2f}; {med('inverted_share_top5'):.0%} "
            f"(calm half: {med('inverted_share_calm'):.0%})",
            "n/a in arch",
            "-0.6 to -0.8, inverted in crises",
        ),
        (
            "single-name 1-month 25-delta butterfly; names whose call wing is above ATM",
            f"{med('butterfly_names_points'):.2f} pts; {med('call_wing_up_share'):.0%}",
            lit.format("1-3 pts"),
            "1-3 pts, 20-30 %",
        ),
        (
            "CPI day: opening gap; close-to-close move (x a day without events)",
            f"{med('cpi_gap_ratio'):.2f}x; {med('cpi_move_ratio'):.2f}x",
            lit.format("gaps at the open"),
            "gap >= 2x",
        ),
        (
            "FOMC day: move after 14:00 New York (x a Wednesday without events)",
            f"{np.median(fomc):.2f}x ({len(fomc)} seeds)" if fomc else "–",
            "n/a in arch",
            "moves in the afternoon",
        ),
        (
            "earnings day: move; opening gap (x a day without earnings)",
            f"{med('earnings_move_ratio'):.1f}x; {med('earnings_gap_ratio'):.1f}x",
            "n/a in arch",
            "keep (2.6x; 5.2x)",
        ),
        (
            "earnings moves below the calendar's implied move (straddle basis)",
            f"{med('earnings_below_implied'):.0%}",
            lit.format("55-65 %"),
            "55-65 %",
        ),
        ("index vol (7-year realized)", f"{med('vol'):.1%}", f"{sp['vol']:.1%}", ""),
    ]
    print(
        f"Synthetic market '{args.market}': {n} seeds, {elapsed:.1f} s ({elapsed / n:.2f} s a seed); "
        f"S&P 500 1999-2018 from arch.data.sp500\n"
    )
    print(f"| statistic | synthetic (median over {n} seeds) | S&P 500 | target |")
    print("|---|---|---|---|")
    for row in table:
        if args.prices_only and ("nan" in row[1] or row[1] == "–"):
            continue  # needs the implied vols or the intraday prices
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
