"""Throughput of the option-pricing core against plain numpy and QuantLib references.

Run ``python bench/bench_pricing.py [n] [--american N]`` (single process; default n = 1,000,000; n = 0
skips the European sections). Prints one table:

* European BSM price + Greeks: ``bsm_greeks`` (numba, all ten outputs, fresh and ``out=`` buffers) and
  ``bsm_price``, against a straightforward numpy + ``scipy.special.ndtr`` implementation written here
  (price, delta, gamma, vega, theta, rho) and QuantLib's ``AnalyticEuropeanEngine`` called per option
  on a 2,000-option sample (rate scaled to options/second).
* Implied volatility of n quotes: ``implied_vol`` (Jäckel's "Let's be rational") against a plain
  vectorized numpy Newton solver written here and QuantLib's ``impliedVolatility`` on a sample, with
  the maximum error against the volatility the quotes were generated from.
* American options (``--american N``, default 100,000, on the issue's grid: 1 day to 3 years, vol
  5-150 %, r and q 0-10 %, S/K 0.5-2): the exact engine (``american_price``), its Greeks and implied
  vols, Bjerksund-Stensland 2002, and QuantLib's ``QdFpAmericanEngine`` (high-precision scheme) per
  option on a 300-option sample, which is also the accuracy reference (error in units of the
  tolerance: 1 = 1e-6 relative or 1e-8 of the strike, whichever is larger).

Timings are the best of several runs after a warm-up call (numba compilation and cache loading are
excluded). "per second" is wall clock with all numba threads; "per core-s" divides by the process CPU
time instead, which other load on the machine does not inflate (2 idle cores give about twice it).
Importable: ``run(n)`` returns the rows, ``main()`` prints them.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import QuantLib as ql
from scipy.special import ndtr

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from risk_pipeline.quant.american import american_greeks, american_price
from risk_pipeline.quant.bsm import BsmResult, bsm_greeks, bsm_price
from risk_pipeline.quant.implied_vol import IvStatus, implied_vol, implied_vol_american

QL_SAMPLE = 2_000
QL_AMERICAN_SAMPLE = 300
SQRT_2PI = math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Row:
    section: str
    name: str
    per_second: float  # wall clock, all numba threads
    per_cpu_second: float = math.nan  # per core-second of process CPU time (insensitive to other load)
    note: str = ""


# ----------------------------------------------------------------------------------------------
# references written here
# ----------------------------------------------------------------------------------------------


def numpy_reference_greeks(
    s: np.ndarray, k: np.ndarray, t: np.ndarray, v: np.ndarray, r: np.ndarray, q: np.ndarray, call: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Textbook BSM price, delta, gamma, vega, theta, rho with ``scipy.special.ndtr`` (no edge handling)."""
    w = np.where(call, 1.0, -1.0)
    sqt = np.sqrt(t)
    sd = v * sqt
    d1 = (np.log(s / k) + (r - q) * t) / sd + 0.5 * sd
    d2 = d1 - sd
    dq = np.exp(-q * t)
    dr = np.exp(-r * t)
    nd1 = ndtr(w * d1)
    nd2 = ndtr(w * d2)
    pdf = np.exp(-0.5 * d1 * d1) / SQRT_2PI
    price = w * (s * dq * nd1 - k * dr * nd2)
    delta = w * dq * nd1
    gamma = dq * pdf / (s * sd)
    vega = s * dq * pdf * sqt
    theta = -s * dq * pdf * v / (2 * sqt) - w * r * k * dr * nd2 + w * q * s * dq * nd1
    rho = w * k * t * dr * nd2
    return price, delta, gamma, vega, theta, rho


def numpy_newton_iv(
    price: np.ndarray,
    s: np.ndarray,
    k: np.ndarray,
    t: np.ndarray,
    r: np.ndarray,
    q: np.ndarray,
    call: np.ndarray,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> tuple[np.ndarray, int]:
    """Plain vectorized Newton on the price, Manaster-Koehler start ``sqrt(2|ln(F/K)|/T)``."""
    w = np.where(call, 1.0, -1.0)
    x = np.log(s / k) + (r - q) * t
    vol = np.maximum(np.sqrt(2.0 * np.abs(x) / t), 1e-3)
    active = np.arange(price.size)
    it = 0
    while active.size and it < max_iter:
        it += 1
        sa, ka, ta, ra, qa, wa, va = s[active], k[active], t[active], r[active], q[active], w[active], vol[active]
        sqt = np.sqrt(ta)
        sd = va * sqt
        d1 = (x[active]) / sd + 0.5 * sd
        d2 = d1 - sd
        model = wa * (sa * np.exp(-qa * ta) * ndtr(wa * d1) - ka * np.exp(-ra * ta) * ndtr(wa * d2))
        vega = sa * np.exp(-qa * ta) * np.exp(-0.5 * d1 * d1) / SQRT_2PI * sqt
        step = (model - price[active]) / vega
        new = va - step
        bad = ~np.isfinite(new) | (new <= 0)
        new = np.where(bad, 0.5 * va, new)
        vol[active] = new
        active = active[(np.abs(step) > tol) | bad]
    vol[active] = np.nan
    return vol, it


def quantlib_sample(
    s: np.ndarray,
    k: np.ndarray,
    days: np.ndarray,
    v: np.ndarray,
    r: np.ndarray,
    q: np.ndarray,
    call: np.ndarray,
    prices: np.ndarray | None,
) -> tuple[float, np.ndarray]:
    """Per-option QuantLib: NPV + delta, gamma, vega, theta, rho, or impliedVolatility when ``prices``."""
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    spot, rq, qq, vq = ql.SimpleQuote(100.0), ql.SimpleQuote(0.0), ql.SimpleQuote(0.0), ql.SimpleQuote(0.2)
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(spot),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(qq), dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(rq), dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), ql.QuoteHandle(vq), dc)),
    )
    engine = ql.AnalyticEuropeanEngine(process)
    out = np.empty(len(s))
    start = time.perf_counter()
    for i in range(len(s)):
        spot.setValue(float(s[i]))
        rq.setValue(float(r[i]))
        qq.setValue(float(q[i]))
        vq.setValue(float(v[i]))
        kind = ql.Option.Call if call[i] else ql.Option.Put
        option = ql.VanillaOption(ql.PlainVanillaPayoff(kind, float(k[i])), ql.EuropeanExercise(today + int(days[i])))
        option.setPricingEngine(engine)
        if prices is None:
            out[i] = option.NPV()
            option.delta(), option.gamma(), option.vega(), option.theta(), option.rho()
        else:
            try:
                out[i] = option.impliedVolatility(float(prices[i]), process, 1e-10, 200, 1e-7, 10.0)
            except RuntimeError:
                out[i] = np.nan
    return time.perf_counter() - start, out


# ----------------------------------------------------------------------------------------------
# benchmark
# ----------------------------------------------------------------------------------------------


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Shortest wall-clock and shortest process-CPU time over ``repeats`` calls."""
    wall = cpu = math.inf
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def _market(n: int, seed: int) -> dict[str, np.ndarray]:
    """Random book: expiries 1 day to 2 years, vols 5%-100%, strikes within +-3 sd, calls and puts."""
    rng = np.random.default_rng(seed)
    days = np.maximum(1, np.round(np.exp(rng.uniform(0.0, math.log(730.0), n)))).astype(np.int64)
    t = days / 365.0
    vol = np.exp(rng.uniform(math.log(0.05), math.log(1.0), n))
    return {
        "s": rng.uniform(50.0, 150.0, n),
        "days": days,
        "t": t,
        "vol": vol,
        "r": rng.uniform(0.0, 0.06, n),
        "q": rng.uniform(0.0, 0.04, n),
        "call": rng.random(n) < 0.5,
        "z": rng.uniform(-3.0, 3.0, n),
    }


def run(n: int = 1_000_000) -> list[Row]:
    m = _market(n, seed=2025)
    s, t, vol, r, q, call = m["s"], m["t"], m["vol"], m["r"], m["q"], m["call"]
    k = s * np.exp(m["z"] * vol * np.sqrt(t))
    rows: list[Row] = []

    # warm-up: compile or load the numba caches
    bsm_greeks(s[:16], k[:16], t[:16], vol[:16], r[:16], q[:16], call[:16])
    bsm_price(s[:16], k[:16], t[:16], vol[:16], r[:16], q[:16], call[:16])
    implied_vol(np.full(16, 1.0), s[:16], k[:16], t[:16], r[:16], q[:16], call[:16])

    sec = f"European BSM, n = {n:,}"
    t_fast = _best(lambda: bsm_greeks(s, k, t, vol, r, q, call), 7)
    out = BsmResult(*(np.empty(n) for _ in range(10)))
    t_out = _best(lambda: bsm_greeks(s, k, t, vol, r, q, call, out=out), 7)
    t_price = _best(lambda: bsm_price(s, k, t, vol, r, q, call), 7)
    t_np = _best(lambda: numpy_reference_greeks(s, k, t, vol, r, q, call), 3)
    idx = np.linspace(0, n - 1, min(QL_SAMPLE, n)).astype(np.int64)
    t_ql, ql_price = quantlib_sample(s[idx], k[idx], m["days"][idx], vol[idx], r[idx], q[idx], call[idx], None)
    ref = numpy_reference_greeks(s, k, t, vol, r, q, call)
    fast = bsm_greeks(s, k, t, vol, r, q, call)
    diff = max(
        float(np.max(np.abs(getattr(fast, f) - g) / np.maximum(np.abs(g), 1e-6 * s)))
        for f, g in zip(("price", "delta", "gamma", "vega", "theta", "rho"), ref, strict=True)
    )
    ql_diff = float(np.max(np.abs(fast.price[idx] - ql_price) / np.maximum(np.abs(ql_price), 1e-6 * s[idx])))
    rows += [
        Row(
            sec,
            "numba bsm_greeks: price + 9 Greeks, new arrays",
            n / t_fast[0],
            n / t_fast[1],
            f"max rel diff vs numpy {diff:.1e}",
        ),
        Row(sec, "numba bsm_greeks, out= preallocated", n / t_out[0], n / t_out[1]),
        Row(sec, "numba bsm_price", n / t_price[0], n / t_price[1]),
        Row(sec, "numpy + ndtr reference: price + 5 Greeks", n / t_np[0], n / t_np[1]),
        Row(
            sec,
            f"QuantLib AnalyticEuropeanEngine ({idx.size:,} sampled)",
            idx.size / t_ql,
            idx.size / t_ql,
            f"max rel diff vs QuantLib {ql_diff:.1e}",
        ),
    ]

    sec = f"Implied volatility, n = {n:,} quotes"
    price = bsm_price(s, k, t, vol, r, q, call)
    x = np.log(s / k) + (r - q) * t
    sd = vol * np.sqrt(t)
    live = np.exp(-0.5 * (x / sd) ** 2 - sd * sd / 8) / SQRT_2PI > 1e-8  # normalised vega
    t_iv = _best(lambda: implied_vol(price, s, k, t, r, q, call), 5)
    res = implied_vol(price, s, k, t, r, q, call)
    err = np.abs(res.vol - vol)[live]
    t_newton = _best(lambda: numpy_newton_iv(price, s, k, t, r, q, call), 2)
    newton_vol, newton_it = numpy_newton_iv(price, s, k, t, r, q, call)
    newton_err = np.abs(newton_vol - vol)[live]
    t_qliv, ql_vol = quantlib_sample(s[idx], k[idx], m["days"][idx], vol[idx], r[idx], q[idx], call[idx], price[idx])
    ql_err = np.abs(ql_vol - vol[idx])[live[idx]]
    rows += [
        Row(
            sec,
            "numba implied_vol (Let's be rational)",
            n / t_iv[0],
            n / t_iv[1],
            f"max |err| {np.nanmax(err):.1e}, non-OK {int(np.sum(res.status[live] != IvStatus.OK))}, "
            f"iterations <= {res.iterations}",
        ),
        Row(
            sec,
            "numpy Newton reference",
            n / t_newton[0],
            n / t_newton[1],
            f"max |err| {np.nanmax(newton_err):.1e}, failed {int(np.sum(np.isnan(newton_err)))}, {newton_it} sweeps",
        ),
        Row(
            sec,
            f"QuantLib impliedVolatility ({idx.size:,} sampled)",
            idx.size / t_qliv,
            idx.size / t_qliv,
            f"max |err| {np.nanmax(ql_err):.1e}",
        ),
    ]
    rows.append(
        Row(
            "", "", 0.0, note=f"{int(live.sum()):,} of {n:,} quotes have normalised vega > 1e-8 (errors measured there)"
        )
    )
    return rows


def _american_market(n: int, seed: int) -> dict[str, np.ndarray]:
    """The issue's grid: 1 day to 3 years (whole days), vol 5-150 %, r and q 0-10 %, S/K 0.5-2, strike 100."""
    rng = np.random.default_rng(seed)
    days = rng.integers(1, 3 * 365 + 1, n)
    return {
        "s": 100.0 * np.exp(rng.uniform(math.log(0.5), math.log(2.0), n)),
        "k": np.full(n, 100.0),
        "days": days,
        "t": days / 365.0,
        "vol": np.exp(rng.uniform(math.log(0.05), math.log(1.5), n)),
        "r": rng.uniform(0.0, 0.10, n),
        "q": rng.uniform(0.0, 0.10, n),
        "call": rng.random(n) < 0.5,
    }


def quantlib_american(m: dict[str, np.ndarray], scheme: ql.QdFpIterationScheme) -> tuple[float, np.ndarray]:
    """QuantLib QD-FP American prices one by one (flat curves, Actual365Fixed): (seconds, prices)."""
    today = ql.Date(15, 1, 2025)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    spot, rq, qq, vq = (ql.SimpleQuote(x) for x in (100.0, 0.0, 0.0, 0.2))
    process = ql.BlackScholesMertonProcess(
        ql.QuoteHandle(spot),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(qq), dc)),
        ql.YieldTermStructureHandle(ql.FlatForward(today, ql.QuoteHandle(rq), dc)),
        ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, ql.NullCalendar(), ql.QuoteHandle(vq), dc)),
    )
    engine = ql.QdFpAmericanEngine(process, scheme)
    options = []
    for i in range(m["s"].size):
        kind = ql.Option.Call if m["call"][i] else ql.Option.Put
        opt = ql.VanillaOption(
            ql.PlainVanillaPayoff(kind, float(m["k"][i])), ql.AmericanExercise(today, today + int(m["days"][i]))
        )
        opt.setPricingEngine(engine)
        options.append(opt)
    out = np.empty(m["s"].size)
    start = time.perf_counter()
    for i, opt in enumerate(options):
        spot.setValue(float(m["s"][i]))
        rq.setValue(float(m["r"][i]))
        qq.setValue(float(m["q"][i]))
        vq.setValue(float(m["vol"][i]))
        out[i] = opt.NPV()
    return time.perf_counter() - start, out


def american_rows(n: int) -> list[Row]:
    """Exact engine, BS2002 and QuantLib on the issue's grid (module docstring)."""
    m = _american_market(n, seed=2026)
    args = (m["s"], m["k"], m["t"], m["vol"], m["r"], m["q"], m["call"])
    sample = {key: v[:QL_AMERICAN_SAMPLE] for key, v in m.items()}
    american_price(*(a[:64] for a in args))  # warm-up
    american_price(*(a[:64] for a in args), method="bs2002")
    american_greeks(*(a[:64] for a in args))
    t_exact = _best(lambda: american_price(*args), 3)
    t_bs = _best(lambda: american_price(*args, method="bs2002"), 3)
    ng = max(n // 10, 1)
    t_greeks = _best(lambda: american_greeks(*(a[:ng] for a in args)), 1)
    price = american_price(*args)
    implied_vol_american(price[:64], m["s"][:64], 100.0, m["t"][:64], m["r"][:64], m["q"][:64], m["call"][:64])
    ni = max(n // 5, 1)
    t_iv = _best(
        lambda: implied_vol_american(
            price[:ni], m["s"][:ni], 100.0, m["t"][:ni], m["r"][:ni], m["q"][:ni], m["call"][:ni]
        ),
        2,
    )
    res = implied_vol_american(price[:ni], m["s"][:ni], 100.0, m["t"][:ni], m["r"][:ni], m["q"][:ni], m["call"][:ni])
    ok = res.status == IvStatus.OK
    back = american_price(
        m["s"][:ni][ok], 100.0, m["t"][:ni][ok], res.vol[ok], m["r"][:ni][ok], m["q"][:ni][ok], m["call"][:ni][ok]
    )
    big = price[:ni][ok] > 1e-6 * 100.0
    iv_err = float(np.max(np.abs(back - price[:ni][ok])[big] / price[:ni][ok][big]))
    t_ql, ref = quantlib_american(sample, ql.QdFpAmericanEngine.highPrecisionScheme())
    t_qlf, _ = quantlib_american(sample, ql.QdFpAmericanEngine.fastScheme())
    sub = tuple(a[:QL_AMERICAN_SAMPLE] for a in args)

    def score(x: np.ndarray) -> float:
        err = np.abs(x - ref)
        return float(np.max(np.minimum(err / np.maximum(ref, 1e-300) / 1e-6, err / (1e-8 * 100.0))))

    exact_s, bs_s = american_price(*sub), american_price(*sub, method="bs2002")
    priced = ref > 0.05
    bs_rel = float(np.max(np.abs(bs_s - ref)[priced] / ref[priced]))
    sec = f"American, n = {n:,} (issue grid)"
    ns = QL_AMERICAN_SAMPLE
    return [
        Row(
            sec,
            "exact engine american_price (ALO, Newton)",
            n / t_exact[0],
            n / t_exact[1],
            f"error vs QL high precision {score(exact_s):.2f} tol units (max |rel| "
            f"{float(np.max(np.abs(exact_s - ref)[priced] / ref[priced])):.1e})",
        ),
        Row(sec, "exact engine american_greeks (n/10), 10 outputs", ng / t_greeks[0], ng / t_greeks[1]),
        Row(
            sec,
            "exact engine implied_vol_american (n/5)",
            ni / t_iv[0],
            ni / t_iv[1],
            f"quote reproduced to {iv_err:.1e} rel, non-OK {int(np.sum(~ok))} (no vol information)",
        ),
        Row(
            sec,
            "Bjerksund-Stensland 2002 (method='bs2002')",
            n / t_bs[0],
            n / t_bs[1],
            f"max |rel err| vs QL high precision {bs_rel:.2%} (prices > 0.05), "
            f"{float(np.max(np.abs(bs_s - ref))):.3f} per 100 strike",
        ),
        Row(sec, f"QuantLib QdFpAmericanEngine high precision ({ns} sampled)", ns / t_ql, ns / t_ql, "reference"),
        Row(sec, f"QuantLib QdFpAmericanEngine fast scheme ({ns} sampled)", ns / t_qlf, ns / t_qlf),
    ]


def _format(rows: list[Row], load_before: float) -> str:
    """One block per section; ratios are against that section's numpy and QuantLib rows."""
    lines = [
        f"cores: {os.cpu_count()} logical, numba threads {numba.get_num_threads()} "
        f"({numba.threading_layer()}), numpy {np.__version__}, numba {numba.__version__}, "
        f"QuantLib {ql.__version__}; best of several runs after warm-up; "
        f"1-min load average before the run {load_before:.2f}",
    ]
    for section in dict.fromkeys(r.section for r in rows if r.name):
        same = [r for r in rows if r.section == section]
        np_rate = next((r.per_second for r in same if "numpy" in r.name), math.nan)
        ql_rate = next(r.per_second for r in same if "QuantLib" in r.name)
        lines += ["", f"{section:<58} {'per second':>12} {'per core-s':>12} {'x numpy':>8} {'x QL':>6}  note"]
        for r in same:
            lines.append(
                f"  {r.name:<56} {r.per_second:>12,.0f} {r.per_cpu_second:>12,.0f} "
                f"{r.per_second / np_rate:>8.2f} {r.per_second / ql_rate:>6.0f}  {r.note}"
            )
    lines += [r.note for r in rows if not r.name]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    n_am = 100_000
    if "--american" in args:
        at = args.index("--american")
        n_am = int(args[at + 1])
        del args[at : at + 2]
    n = int(args[0]) if args else 1_000_000
    load_before = os.getloadavg()[0]
    rows = run(n) if n > 0 else []
    print(_format(rows + (american_rows(n_am) if n_am > 0 else []), load_before))


if __name__ == "__main__":
    main()
