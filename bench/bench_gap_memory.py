"""Peak memory and CPU seconds of the gap VaR with per-position vol shifts: whole-set array or made chunk by chunk.

``python bench/bench_gap_memory.py --positions 5000 --symbols 500 [--scenarios 50000] [--american 0.9]
[--mode rows|whole] [--out FILE]``: a synthetic book (``--positions`` options on ``--symbols`` underlyings, a
fraction ``--american`` of them American, plus one stock per underlying), 300 historical scenarios with rate and
dividend-yield shifts, and one earnings event of 200 past moves (``--events market``: three market-wide events by beta
and one earnings), combined by ``gap_risk.gap_var`` into
``--scenarios`` scenarios (its ``max_scenarios``) and revalued on the early-exercise grid with the expiry-scaled ATM
move and the event's vol crush as dynamics, as ``var_results``' gap VaR does. ``--mode rows`` (the code as it is):
the dynamics' shifts are ``RowVolShifts``, made per engine chunk; ``--mode whole``: the whole-set
``summed_shifts`` array handed to the engine (the code before). One mode per process, since the peak resident
memory (sampled every 20 ms) is the process's; ``--out`` saves VaR, ES and the components to compare the modes
(``--compare A B``: bit for bit).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_warm_steps import rss_bytes as rss  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--positions", type=int, default=5000)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--scenarios", type=int, default=50_000)
    ap.add_argument("--american", type=float, default=0.9)
    ap.add_argument("--mode", choices=["rows", "whole"], default="rows")
    ap.add_argument(
        "--events",
        choices=["earnings", "market"],
        default="earnings",
        help="one earnings event of 200 past moves (default), or three market-wide events moving every name by "
        "beta (14, 3 and 14 past moves, each with both signs, like NFP, FOMC and CPI in 300 sessions) plus "
        "the earnings of one name (3 past moves, both signs)",
    )
    ap.add_argument("--out")
    ap.add_argument("--compare", nargs=2)
    a = ap.parse_args(argv)
    if a.compare:
        x, y = (np.load(f) for f in a.compare)
        same = all(np.array_equal(x[k], y[k]) for k in x.files)
        print(f"{a.compare[0]} vs {a.compare[1]}: {'bit-identical' if same else 'DIFFERENT'}")
        return 0 if same else 1

    import risk_pipeline.quant.smile_dynamics as sd
    from risk_pipeline.quant.gap_risk import gap_var
    from risk_pipeline.quant.portfolio import Portfolio
    from risk_pipeline.quant.scenario_engine import ScenarioSet
    from risk_pipeline.quant.vol_shocks import VolShockRule

    rng = np.random.default_rng(7)
    n, k = a.positions, a.symbols
    spot = rng.uniform(30.0, 300.0, k)
    sym = np.concatenate([rng.integers(0, k, n), np.arange(k)])
    m = sym.size
    opt = np.arange(m) < n
    book = Portfolio(
        symbols=tuple(f"S{i}" for i in range(k)),
        spot=spot,
        symbol_index=sym,
        quantity=rng.integers(-20, 21, m).astype(float),
        multiplier=np.where(opt, 100.0, 1.0),
        is_option=opt,
        is_call=rng.random(m) < 0.5,
        strike=spot[sym] * np.exp(rng.normal(0.0, 0.1, m)),
        time_years=rng.uniform(0.02, 1.0, m),
        implied_vol=rng.uniform(0.15, 0.6, m),
        rate=0.04,
        dividend_yield=rng.uniform(0.0, 0.03, m),
        is_american=opt & (rng.random(m) < a.american),
    )
    days = 300
    base = ScenarioSet(
        np.expm1(rng.normal(0.0, 0.02, (days, k))),
        vol_scale=np.exp(rng.normal(0.0, 0.04, (days, k))),
        rate_shift_abs=rng.normal(0.0, 0.0005, days),
        dividend_shift_abs=rng.normal(0.0, 0.0002, (days, k)),
    )
    base_pnl = np.zeros(days)
    events, dynamics = [], [sd.ExpiryScaledVolMoves(VolShockRule(term_exponent=0.4))]
    if a.events == "market":
        betas = rng.uniform(0.5, 1.5, k)
        for name, count in (("nfp", 14), ("fomc", 3), ("cpi", 14)):
            moves = rng.normal(0.0, 0.01, count)[:, None]
            shock = np.expm1(betas[None, :] * np.log1p(moves))
            events.append((name, np.vstack([shock, -shock])))
    for s, count in ((0, 100),) if a.events == "earnings" else ((0, 3),):
        past = rng.normal(0.0, 0.06, count)
        gap = np.zeros((2 * count, k))
        gap[:, s] = np.concatenate([past, -past])
        events.append((f"earnings-{s}", gap))
        crush = sd.EarningsVolCrush(s, float(np.mean(np.log1p(past) ** 2)), 2 / 365)
        dynamics.insert(len(dynamics) - 1, crush)
    if a.mode == "whole":  # the code before: the whole set's summed shifts as one array
        sd.summed_shift_rows = lambda d, p, sc, block_cells=None: sd.summed_shifts(d, p, sc)  # type: ignore[assignment]

    peak = [rss()]
    stop = [False]

    def sample() -> None:
        while not stop[0]:
            peak[0] = max(peak[0], rss())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    before = rss()
    t0, c0 = time.time(), os.times()
    res = gap_var(
        book,
        base,
        base_pnl,
        events,
        horizon_days=5,
        confidences=(0.99, 0.975),
        calendar_days=7.0,
        american="eep_grid",
        max_scenarios=a.scenarios,
        dynamics=dynamics,
    )
    c1 = os.times()
    stop[0] = True
    cpu = c1.user + c1.system - c0.user - c0.system
    gib = 2.0**30
    print(
        f"mode {a.mode}: {n} options ({int(book.is_american.sum())} American) + {k} stocks on {k} underlyings, "
        f"{res[0].n_scenarios} scenarios; wall {time.time() - t0:.1f} s, CPU {cpu:.1f} s, load "
        f"{os.getloadavg()[0]:.1f}; RSS before {before / gib:.2f} GiB, peak {peak[0] / gib:.2f} GiB "
        f"(+{(peak[0] - before) / gib:.2f}); whole-set shift array would be {res[0].n_scenarios * m * 8 / gib:.2f} GiB"
    )
    print(f"   VaR 99 % {res[0].var:.6f}, ES 97.5 % {res[1].expected_shortfall:.6f}")
    if a.out:
        np.savez(
            a.out,
            var=np.array([r.var for r in res]),
            es=np.array([r.expected_shortfall for r in res]),
            component_var=np.stack([r.component_var for r in res]),
            component_es=np.stack([r.component_es for r in res]),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
