"""Throughput of the VaR and stress engines against the targets and a QuantLib per-option reference.

Run ``python bench/bench_risk.py`` (single process, no Dask). The book: 50 underlyings, 5,000 option
positions (10 % American by default, ``--american-fraction``) and one stock position per underlying;
a 600-day synthetic history of returns (one market factor, GARCH(1,1) volatilities, Student-t shocks)
and relative ATM vol changes. Prints:

* Monte Carlo FHS VaR, 10,000 scenarios, 1-day horizon, full revaluation (5e7 option revaluations):
  scenario generation + revaluation + VaR/ES/component VaR at three confidences, target < 1 s; the
  three horizons; the GARCH calibration (50 fits, once a day) separately; peak memory of the MC step
  (``tracemalloc`` for the arrays allocated, ``ru_maxrss`` for the whole process), target < 1 GiB.
* Revaluations per second against QuantLib's ``AnalyticEuropeanEngine`` repricing a 2,000-option
  sample one by one (rate scaled to the same count).
* Historical VaR (500 days, three horizons) and the full stress suite (library scenarios, spot-vol
  grid, two event-gap sets) for the same book, target < 2 s together.
* The early-exercise-premium grid against the exact American engine on 20 American options under the
  first 2,000 MC scenarios: largest error per option (relative to the option's price, and per 100 of
  strike) and the VaR difference.
* The vectorized BS2002 lane kernel (``american="bs2002"``) against the scalar reference transcription
  (``method="bs2002_reference"``: Genz's 20-point rule, libm ``exp``/``log``) on 100 options' shocked
  inputs: timings and the largest difference per 100 of strike.

Timings are the best of ``--repeat`` runs after a warm-up (numba compilation and cache loading
excluded). Importable: ``run()`` returns the figures as a dict.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import QuantLib as ql

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from risk_pipeline.quant.american import american_price
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate, option_values
from risk_pipeline.quant.stress import GapEvent, event_gap_risk, load_scenarios, run_stress, stress_grid
from risk_pipeline.quant.var import (
    MarketHistory,
    VarConfig,
    empirical_var_es,
    fhs_draws,
    fhs_scenarios,
    fit_fhs,
    historical_var,
    monte_carlo_var,
)

ROOT = Path(__file__).resolve().parents[1]
N_SYMBOLS = 50
N_OPTIONS = 5_000
N_SCENARIOS = 10_000
QL_SAMPLE = 2_000
MC_TARGET_S = 1.0
HS_STRESS_TARGET_S = 2.0
MEMORY_TARGET = 2**30


def make_book(
    n_options: int = N_OPTIONS, n_symbols: int = N_SYMBOLS, american_fraction: float = 0.1, seed: int = 7
) -> tuple[Portfolio, np.ndarray, list[str]]:
    """A random option book (listed-like strikes and expiries) plus one stock per underlying."""
    rng = np.random.default_rng(seed)
    spot = rng.uniform(20.0, 600.0, n_symbols)
    sym = np.concatenate([rng.integers(0, n_symbols, n_options), np.arange(n_symbols)])
    n = sym.size
    is_opt = np.arange(n) < n_options
    days = rng.choice([7, 14, 30, 60, 91, 182, 273, 365, 547, 730], n)
    vol = rng.uniform(0.15, 0.6, n_symbols)[sym] * rng.uniform(0.9, 1.2, n)
    strike = np.round(spot[sym] * np.exp(rng.normal(0.0, 0.12, n)), 1)
    book = Portfolio(
        symbols=tuple(f"S{i:02d}" for i in range(n_symbols)),
        spot=spot,
        symbol_index=sym,
        quantity=np.where(is_opt, rng.integers(-40, 41, n), rng.integers(-2_000, 2_001, n)).astype(float),
        multiplier=np.where(is_opt, 100.0, 1.0),
        is_option=is_opt,
        is_call=rng.random(n) < 0.5,
        strike=strike,
        time_years=days / 365.0,
        implied_vol=vol,
        rate=0.04,
        dividend_yield=rng.uniform(0.0, 0.03, n_symbols)[sym],
        is_american=is_opt & (rng.random(n) < american_fraction),
    )
    betas = rng.uniform(0.6, 1.6, n_symbols)
    sectors = [str(s) for s in rng.choice(["Technology", "Energy", "Financials", "Health Care"], n_symbols)]
    return book, betas, sectors


def make_history(n_days: int = 600, n_symbols: int = N_SYMBOLS, seed: int = 11) -> MarketHistory:
    """One-factor returns with GARCH(1,1) variances and t(5) shocks; vol changes move against returns."""
    rng = np.random.default_rng(seed)
    beta = rng.uniform(0.6, 1.6, n_symbols)
    var_m, var_i = 1e-4, np.full(n_symbols, 2e-4)
    out = np.empty((n_days, n_symbols))
    for t in range(n_days):  # simulating the sample path day by day (test data, not a hot path)
        zm = rng.standard_t(5) * math.sqrt(3 / 5)
        zi = rng.standard_t(5, n_symbols) * math.sqrt(3 / 5)
        rm, ri = math.sqrt(var_m) * zm, np.sqrt(var_i) * zi
        out[t] = beta * rm + ri
        var_m = 2e-6 + 0.08 * rm * rm + 0.9 * var_m
        var_i = 4e-6 + 0.08 * ri * ri + 0.9 * var_i
    iv = -2.0 * out + rng.normal(0.0, 0.02, out.shape)
    return MarketHistory(out, iv)


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def quantlib_rate(book: Portfolio, scen: ScenarioSet, n: int) -> float:
    """Option repricings per second by QuantLib's AnalyticEuropeanEngine, one scenario spot each."""
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    spot, r, q, v = ql.SimpleQuote(100.0), ql.SimpleQuote(0.04), ql.SimpleQuote(0.0), ql.SimpleQuote(0.2)
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(spot),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(q), dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(r), dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), ql.QuoteHandle(v), dc)),
    )
    engine = ql.AnalyticEuropeanEngine(process)
    idx = np.flatnonzero(book.is_option)[:n]
    options = []
    for i in idx:
        kind = ql.Option.Call if book.is_call[i] else ql.Option.Put
        opt = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, float(book.strike[i])),
            ql.EuropeanExercise(today + round(book.time_years[i] * 365)),
        )
        opt.setPricingEngine(engine)
        options.append(opt)
    start = time.perf_counter()
    total = 0.0
    for k, i in enumerate(idx):  # the reference: one QuantLib repricing per (option, scenario)
        s = int(book.symbol_index[i])
        q.setValue(float(book.dividend_yield[i]))
        v.setValue(float(book.implied_vol[i] * scen.vol_scale[k % scen.n_scenarios, s]))
        spot.setValue(float(book.spot[s] * (1.0 + scen.spot_shock_rel[k % scen.n_scenarios, s])))
        total += options[k].NPV()
    return idx.size / (time.perf_counter() - start)


def eep_accuracy(book: Portfolio, am: np.ndarray, scen: ScenarioSet, hd: float) -> dict[str, float]:
    """Early-exercise-premium grid against the exact engine: timings, per-option and book errors."""
    sub = Portfolio(
        symbols=book.symbols,
        spot=book.spot,
        symbol_index=book.symbol_index[am],
        quantity=np.ones(am.size),
        is_option=True,
        is_call=book.is_call[am],
        strike=book.strike[am],
        time_years=book.time_years[am],
        implied_vol=book.implied_vol[am],
        rate=book.rate[am],
        dividend_yield=book.dividend_yield[am],
        is_american=True,
    )
    t_exact, exact = best_of(lambda: evaluate(sub, scen, hd, american="exact"), 1)
    t_grid, grid = best_of(lambda: evaluate(sub, scen, hd, american="eep_grid"), 1)
    worst = worst_rel = 0.0
    for k in range(am.size):  # per-option errors
        one = Portfolio(
            symbols=book.symbols,
            spot=book.spot,
            symbol_index=sub.symbol_index[k : k + 1],
            quantity=[1.0],
            is_option=True,
            is_call=sub.is_call[k],
            strike=sub.strike[k],
            time_years=sub.time_years[k],
            implied_vol=sub.implied_vol[k],
            rate=sub.rate[k],
            dividend_yield=sub.dividend_yield[k],
            is_american=True,
        )
        e = evaluate(one, scen, hd, american="exact").pnl
        g = evaluate(one, scen, hd, american="eep_grid").pnl
        price = e + option_values(one)[0]
        worst = max(worst, float(np.abs(e - g).max() / sub.strike[k] * 100.0))
        big = price > 1e-3 * sub.strike[k]
        worst_rel = max(worst_rel, float(np.max(np.abs(e - g)[big] / price[big], initial=0.0)))
    v_e, _ = empirical_var_es(exact.pnl, 0.99)
    v_g, _ = empirical_var_es(grid.pnl, 0.99)
    return {
        "eep_exact_s": t_exact,
        "eep_grid_s": t_grid,
        "eep_max_err_per_100_strike": worst,
        "eep_max_rel_err": worst_rel,
        "eep_book_max_abs_err": float(np.abs(exact.pnl - grid.pnl).max()),
        "eep_pnl_std": float(exact.pnl.std()),
        "eep_var99_rel_diff": abs(v_g - v_e) / v_e,
    }


def bs2002_accuracy(book: Portfolio, am: np.ndarray, scen: ScenarioSet, hd: float) -> dict[str, float]:
    """BS2002 lane kernel against the scalar reference on the shocked inputs of options ``am``, every scenario."""
    sym = book.symbol_index[am]
    scale = np.ones((scen.n_scenarios, book.n_symbols)) if scen.vol_scale is None else scen.vol_scale
    args = (
        book.spot[sym][None, :] * (1.0 + scen.spot_shock_rel[:, sym]),
        book.strike[am],
        np.maximum(book.time_years[am] - hd / 365.0, 0.0),
        book.implied_vol[am][None, :] * scale[:, sym],
        book.rate[am],
        book.dividend_yield[am],
        book.is_call[am],
    )
    t_lane, lane = best_of(lambda: american_price(*args, method="bs2002"), 1)
    t_ref, ref = best_of(lambda: american_price(*args, method="bs2002_reference"), 1)
    return {
        "bs2002_lane_s": t_lane,
        "bs2002_ref_s": t_ref,
        "bs2002_max_diff_per_100_strike": float(np.max(np.abs(lane - ref) / book.strike[am]) * 100.0),
    }


def run(american_fraction: float = 0.1, repeat: int = 3) -> dict[str, Any]:
    book, betas, sectors = make_book(american_fraction=american_fraction)
    history = make_history()
    n_rev = N_OPTIONS * N_SCENARIOS
    fig: dict[str, Any] = {"n_american": int(book.is_american.sum())}
    cfg1 = VarConfig(horizons=(1,), n_scenarios=N_SCENARIOS)
    cfg = VarConfig(n_scenarios=N_SCENARIOS)
    hist500 = history.window(cfg.lookback_days)

    fig["garch_fit_s"], model = best_of(lambda: fit_fhs(hist500), 1)
    # warm-up: numba kernels (compiled or loaded from cache) on a small problem
    monte_carlo_var(book, history, VarConfig(horizons=(1,), n_scenarios=300), model=model)

    fig["mc_1h_s"], _ = best_of(lambda: monte_carlo_var(book, history, cfg1, model=model), repeat)
    fig["mc_3h_s"], _ = best_of(lambda: monte_carlo_var(book, history, cfg, model=model), 1)
    fig["revals_per_s"] = n_rev / fig["mc_1h_s"]

    tracemalloc.start()
    monte_carlo_var(book, history, cfg1, model=model)
    _, fig["mc_tracemalloc_peak"] = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    fig["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    scen = fhs_scenarios(model, fhs_draws(model.standardized.shape[0], N_SCENARIOS, 1, cfg.seed), 1)
    fig["quantlib_per_s"] = quantlib_rate(book, scen, QL_SAMPLE)

    lib = load_scenarios(ROOT / "data" / "stress" / "scenarios.yaml")
    rng = np.random.default_rng(3)
    spreads = np.where(book.is_option, 0.05, 0.01) * rng.uniform(0.5, 2.0, book.n_positions)
    volumes = np.where(book.is_option, 2_000.0, 2e6) * rng.uniform(0.2, 5.0, book.n_positions)
    earnings = {s: rng.standard_t(3, 24) * 0.04 for s in book.symbols[:10]}
    macro = {"fomc": rng.normal(0.0, 0.012, 64), "cpi": rng.normal(0.0, 0.01, 48)}
    events = [
        GapEvent("fomc-next", "fomc"),
        GapEvent("cpi-next", "cpi"),
        *(GapEvent(f"earnings-{s}", "earnings", s) for s in book.symbols[:10]),
    ]
    nav = 5e8

    def hs_and_stress() -> None:
        historical_var(book, history, cfg)
        run_stress(book, lib, betas, sectors, spreads, volumes, nav)
        stress_grid(book, lib.grid, nav, betas)
        event_gap_risk(book, events, earnings, macro, betas)

    hs_and_stress()
    fig["hs_stress_s"], _ = best_of(hs_and_stress, repeat)
    fig["hs_s"], _ = best_of(lambda: historical_var(book, history, cfg), repeat)

    # EEP grid against the exact engine on 20 American options, 2,000 scenarios; BS2002 kernels on 100
    am = np.flatnonzero(book.is_american)[:100]
    if am.size:
        fig.update(eep_accuracy(book, am[:20], scen.take(0, 2_000), cfg.calendar_days_per_trading_day))
        fig.update(bs2002_accuracy(book, am, scen, cfg.calendar_days_per_trading_day))
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--american-fraction", type=float, default=0.1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    f = run(args.american_fraction, args.repeat)
    mib = 2**20
    ok = lambda good: "OK" if good else "MISSED"  # noqa: E731
    print(
        f"book: {N_OPTIONS} options ({f['n_american']} American) + {N_SYMBOLS} stocks on {N_SYMBOLS} "
        f"underlyings; {N_SCENARIOS} scenarios"
    )
    print(
        f"{'Monte Carlo FHS VaR, 1 horizon (5e7 revaluations)':58s} {f['mc_1h_s']:8.3f} s  "
        f"target {MC_TARGET_S:.1f} s  ratio {f['mc_1h_s'] / MC_TARGET_S:5.2f}  {ok(f['mc_1h_s'] < MC_TARGET_S)}"
    )
    print(f"{'Monte Carlo FHS VaR, 3 horizons':58s} {f['mc_3h_s']:8.3f} s")
    print(f"{'GARCH(1,1)-t calibration, 50 fits (daily, separate)':58s} {f['garch_fit_s']:8.3f} s")
    print(f"{'revaluations per second (engine)':58s} {f['revals_per_s']:12.3e}")
    print(
        f"{'revaluations per second (QuantLib AnalyticEuropean loop)':58s} {f['quantlib_per_s']:12.3e}  "
        f"engine/QuantLib {f['revals_per_s'] / f['quantlib_per_s']:8.0f}x"
    )
    print(
        f"{'MC step peak memory, tracemalloc (arrays)':58s} {f['mc_tracemalloc_peak'] / mib:8.1f} MiB  "
        f"target {MEMORY_TARGET / mib:.0f} MiB  ratio {f['mc_tracemalloc_peak'] / MEMORY_TARGET:5.3f}"
    )
    print(
        f"{'process peak RSS, ru_maxrss (interpreter + libraries)':58s} {f['maxrss'] / mib:8.1f} MiB  "
        f"ratio {f['maxrss'] / MEMORY_TARGET:5.3f}  {ok(f['maxrss'] < MEMORY_TARGET)}"
    )
    print(
        f"{'historical VaR (500 days, 3 horizons) + full stress suite':58s} {f['hs_stress_s']:8.3f} s  "
        f"target {HS_STRESS_TARGET_S:.1f} s  ratio {f['hs_stress_s'] / HS_STRESS_TARGET_S:5.2f}  "
        f"{ok(f['hs_stress_s'] < HS_STRESS_TARGET_S)}"
    )
    print(f"{'  of which historical VaR':58s} {f['hs_s']:8.3f} s")
    if "eep_grid_s" not in f:
        return
    print(
        f"{'EEP grid vs exact engine, 20 American x 2,000 scenarios':58s} grid {f['eep_grid_s']:.3f} s, "
        f"exact {f['eep_exact_s']:.3f} s ({f['eep_exact_s'] / f['eep_grid_s']:.0f}x)"
    )
    print(f"{'  max |error| per option, per 100 of strike':58s} {f['eep_max_err_per_100_strike']:.2e}")
    print(f"{'  max |error| per option / its price (price > 1e-3 K)':58s} {f['eep_max_rel_err']:.2e}")
    print(
        f"{'  max |error| of the 20-option book P&L / P&L std':58s} {f['eep_book_max_abs_err'] / f['eep_pnl_std']:.2e}"
    )
    print(f"{'  99% VaR relative difference':58s} {f['eep_var99_rel_diff']:.2e}")
    print(
        f"{'BS2002 lane kernel vs scalar reference, same 1e6 repricings':58s} lane {f['bs2002_lane_s']:.3f} s, "
        f"reference {f['bs2002_ref_s']:.3f} s ({f['bs2002_ref_s'] / f['bs2002_lane_s']:.1f}x)"
    )
    print(f"{'  max |difference| per 100 of strike':58s} {f['bs2002_max_diff_per_100_strike']:.2e}")


if __name__ == "__main__":
    main()
