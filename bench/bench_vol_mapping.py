"""How well each vol mapping of the VaR tracks the P&L repriced off the stored surfaces (issue #19's choice of default).

Run ``python bench/bench_vol_mapping.py --warehouse PATH [--date YYYY-MM-DD]`` on a warehouse with a history
(``price_history_job``, smile_history included) and one end-of-day valuation. For the option legs of every book,
carried back over the last 250 sessions as in the static-book backtest, it prints the daily P&L of

* the production mapping (every option's vol scaled by its underlying's 30-day ATM vol ratio), and
* the expiry-scaled mapping (the ratio raised to ``(30 / max(days to expiry, 7))^alpha``, alpha 0.3 / 0.45 / 0.6),

against the P&L repriced off each day's ``smile_history`` surface (``quant.surface_backtest``): root-mean-square
difference, correlation and standard deviation, in USD.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from risk_pipeline.defs.risk.backtest import smile_grid
from risk_pipeline.defs.risk.var import book_portfolio, factor_levels
from risk_pipeline.quant.book_backtest import rescaled_book
from risk_pipeline.quant.scenario_engine import revalue
from risk_pipeline.quant.surface_backtest import surface_repriced_pnl
from risk_pipeline.queries import latest_valuation
from risk_pipeline.resources import WarehouseResource

ALPHAS = (None, 0.3, 0.45, 0.6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", required=True, help="DuckDB path")
    parser.add_argument("--date", default="2026-12-03", help="session of the valuation")
    args = parser.parse_args(argv)
    wh = WarehouseResource(url=args.warehouse).get()
    session = dt.date.fromisoformat(args.date)
    as_of, positions = latest_valuation(wh, session)
    print(f"valuation {as_of.isoformat()}; option legs; P&L in USD against the surface-repriced P&L")
    print(f"{'book':<14}{'mapping':<22}{'rmse':>12}{'corr':>8}{'std':>12}")
    for name, rows in positions.groupby("book"):
        p = book_portfolio(rows)
        opt = np.asarray(p.is_option)
        if not opt.any():
            continue
        p = replace(p, quantity=np.where(opt, p.quantity, 0.0))
        wide, vols = factor_levels(wh, session, 252, p.symbols, "the vol mapping study")
        wide = wide.dropna()
        vols = vols.reindex(wide.index)
        dates = list(wide.index)
        c, v = wide.to_numpy(float), vols.to_numpy(float)
        gaps = np.concatenate([[0.0], np.diff([d.toordinal() for d in dates])]).astype(float)
        days = np.arange(len(dates) - 1)
        surface = surface_repriced_pnl(p, c, smile_grid(wh, dates, p.symbols), gaps, days).pnl
        ok = np.isfinite(surface)
        print(f"{name:<14}{'surface':<22}{'':>12}{'':>8}{surface[ok].std():>12,.0f}")
        sym = np.asarray(p.symbol_index)
        for alpha in ALPHAS:
            pnl = np.empty(days.size)
            for i, t in enumerate(days):  # one revaluation a day (250 small calls: a study, not a hot path)
                book = rescaled_book(p, c[t], np.where(np.isfinite(v[t] / v[-1]), v[t] / v[-1], 1.0))
                ratio = np.where(np.isfinite(v[t + 1] / v[t]), v[t + 1] / v[t], 1.0)
                shock = (c[t + 1] / c[t] - 1.0)[None, :]
                if alpha is None:
                    res = revalue(book, shock, horizon_days=float(gaps[t + 1]), vol_scale=ratio[None, :])
                else:
                    g = (30.0 / np.maximum(np.asarray(book.time_years) * 365.0, 7.0)) ** alpha
                    shift = (np.asarray(book.implied_vol) * (ratio[sym] ** g - 1.0))[None, :]
                    res = revalue(book, shock, shift, horizon_days=float(gaps[t + 1]), vol_shift_per_position=True)
                pnl[i] = res.pnl[0]
            label = "ATM ratio (flat)" if alpha is None else f"expiry-scaled a={alpha}"
            rmse = np.sqrt(np.mean((pnl[ok] - surface[ok]) ** 2))
            corr = np.corrcoef(pnl[ok], surface[ok])[0, 1]
            print(f"{'':<14}{label:<22}{rmse:>12,.0f}{corr:>8.3f}{pnl[ok].std():>12,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
