"""Memory and CPU of ``hedge_recommendations``' hedging core at the large universe's size, old code against new.

Run ``python bench/bench_hedge_scale.py`` (default sizes 500 and 3,000 names; ``--sizes 50 500`` etc.). Each
(size, code) runs in its own subprocess, the old code (``quant/hedging.py`` of ``--ref``, default ``main``,
loaded from ``git show``) and the new one alternating per size. The problem is built directly from the quant
core at the size of one book of ``RISK_PIPELINE_UNIVERSE=large`` (no warehouse): ``names`` stocks plus the
index, ``50,000 x names / 3,000`` book positions (85 % options, the rest stock), the hedging layer's listed
candidates (``option_candidates`` keeps the ``max_options_per_underlying`` = 24 quotes nearest the money per
underlying, each on both sides: 48 option lines per name, plus a buy and a sell delta-one line per name: about
150,000 lines at 3,000 names), scenario blocks as ``scenario_blocks`` (30 stress, 500 one-day and 496 five-day
historical), the Greek rows of ``greek_rows`` (net delta and gamma per symbol, dollar delta, vega: 6,004 rows at
3,000 names). European options and ``ScenarioSet`` scenarios throughout (the engine's time is not what is
measured here). The measured core is ``recommend_book``'s from the book's exposure on:

* ``book_exposure`` (old: the rows x positions matrix summed; new: ``GreekRows.totals``);
* the pre-screen: ``build_candidates`` of every listed line in the book's 25 worst scenarios, ``screen_candidates``;
* ``build_candidates`` of the screened lines in every scenario, ``solve_hedge`` (``--time-limit``, default 60 s of
  wall time: ``hedging.yaml`` gives the step 20 s, which a loaded machine can reach at 3,000 names), the
  verification's exposure after the hedge (``greeks[:, chosen] @ quantity``).

Per phase: CPU seconds (``time.process_time``) and the tracemalloc peak above the phase's start (numpy arrays
are traced; HiGHS' own memory is not; ``solve_hedge`` runs untraced, as tracemalloc slows its Python side), and
for the whole core the process's peak RSS rise (``ru_maxrss`` less the RSS at the core's start; the setup's own
peak stays below the core's at these sizes when it matters). The
old code is not run above ``--old-max-names`` (default 1,000: at 3,000 names its dense exposure matrix alone is
6,004 x 150,000 x 8 bytes = 7.2 GB, twice over while stacked). Equality: the parent compares old and new at each
size where both ran: the exposure (relative difference), the screened lines, the chosen lines and quantities,
the cost.

The solve under the time limit (``--time-limit 20``: the step's ``time_limit_seconds``): its status, cost, CPU
and wall seconds, the CPU and wall seconds to the first hedge meeting every row (``first_feasible_*`` of the
solution), the gap of the returned cost to the lower bound proven, and whether the hedge meets every row, checked
here on the candidates' matrices. ``--gamma-levels above`` puts every name's gamma within its level, which makes
the program feasible (the default, the 99th percentile, leaves names no screened option can fix: a partial
hedge); ``--compare-solver`` also solves the same candidates with the ``--ref`` ``solve_hedge`` in the new code's
process, so old and new solvers are compared on one problem at every size. A partial hedge's line says
whether it meets the budget, contract bounds and minimum notional (checked here), the ES before and after, and
its violation and bound (``HedgeSolution.violation``, ``violation_bound``; not in older code). ``--child new --sizes N
--save-inputs FILE`` pickles the solver's candidates and targets for ``bench_hedge_solve.py`` (any code's solver
replays the same problem).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_warm_steps import rss_bytes  # noqa: E402
from old_code import module_at  # noqa: E402

POSITIONS_PER_NAME = 50_000 / 3_000
QUOTES_PER_NAME = 24  # HedgingConfig.max_options_per_underlying
N_STRESS, N_1D, N_5D = 30, 500, 496
SCREEN_OPTIONS, SCREEN_TAIL = 160, 25  # defs/hedging/assets.py


def load_hedging(code: str, ref: str) -> Any:
    if code == "new":
        import risk_pipeline.quant.hedging as mod

        return mod
    return module_at(ref, "risk_pipeline.quant.hedging")


def setup(n_names: int, seed: int = 0) -> dict[str, Any]:
    from risk_pipeline.quant.portfolio import Portfolio
    from risk_pipeline.quant.scenario_engine import ScenarioSet

    rng = np.random.default_rng(seed)
    n_sym = n_names + 1  # the stocks and the index (last)
    symbols = (*(f"X{i:04d}" for i in range(n_names)), "SYNX")
    spot = np.concatenate([rng.uniform(20.0, 300.0, n_names), [5_000.0]])
    beta = np.concatenate([rng.uniform(0.6, 1.6, n_names), [1.0]])
    # the book: option ladders (1-10 contracts a leg) and stock lines
    n_pos = round(POSITIONS_PER_NAME * n_names)
    is_opt = rng.random(n_pos) < 0.85
    sym = rng.integers(0, n_sym, n_pos)
    book = Portfolio(
        symbols=symbols,
        spot=spot,
        symbol_index=sym,
        quantity=np.where(
            is_opt,
            rng.integers(1, 11, n_pos) * rng.choice([-1.0, 1.0], n_pos),
            rng.integers(1, 50, n_pos) * 100.0 * rng.choice([-1.0, 1.0], n_pos),
        ),
        multiplier=np.where(is_opt, 100.0, 1.0),
        is_option=is_opt,
        is_call=rng.random(n_pos) < 0.5,
        strike=np.where(is_opt, spot[sym] * np.exp(rng.normal(0.0, 0.12, n_pos)), 1.0),
        time_years=np.where(is_opt, rng.uniform(0.03, 0.4, n_pos), 0.0),
        implied_vol=np.where(is_opt, rng.uniform(0.15, 0.6, n_pos), 0.0),
        rate=0.04,
        dividend_yield=0.01,
    )
    # listed lines: 24 quotes a name (expiries 7-120 days, |ln K/S| <= 0.3), both sides; delta-one both sides
    n_q = QUOTES_PER_NAME * n_sym
    q_sym = np.repeat(np.arange(n_sym), QUOTES_PER_NAME)
    q_strike = spot[q_sym] * np.exp(rng.uniform(-0.3, 0.3, n_q))
    q_t = rng.integers(7, 121, n_q) / 365.0
    q_vol = rng.uniform(0.15, 0.6, n_q)
    q_call = rng.random(n_q) < 0.5
    d1 = np.arange(n_sym)
    n_lines = 2 * n_q + 2 * n_sym
    opt = np.arange(n_lines) < 2 * n_q
    lines = Portfolio(
        symbols=symbols,
        spot=spot,
        symbol_index=np.concatenate([q_sym, q_sym, d1, d1]),
        quantity=np.concatenate([np.ones(n_q), -np.ones(n_q), np.ones(n_sym), -np.ones(n_sym)]),
        multiplier=np.where(opt, 100.0, 1.0),
        is_option=opt,
        is_call=np.concatenate([q_call, q_call, np.zeros(2 * n_sym, bool)]),
        strike=np.concatenate([q_strike, q_strike, np.ones(2 * n_sym)]),
        time_years=np.concatenate([q_t, q_t, np.zeros(2 * n_sym)]),
        implied_vol=np.concatenate([q_vol, q_vol, np.zeros(2 * n_sym)]),
        rate=0.04,
        dividend_yield=0.01,
        position_id=tuple(f"line-{i}" for i in range(n_lines)),
    )

    def block(n: int, scale: float, tail: float) -> ScenarioSet:
        market = rng.standard_t(4, n) * scale - tail
        moves = np.clip(beta[None, :] * market[:, None] + rng.normal(0.0, scale, (n, n_sym)), -0.6, 0.6)
        return ScenarioSet(moves, vol_scale=np.exp(-2.5 * moves))

    blocks = [
        (block(N_STRESS, 0.03, 0.08), 0.0),
        (block(N_1D, 0.012, 0.0), 365 / 252),
        (block(N_5D, 0.027, 0.0), 5 * 365 / 252),
    ]
    return {"symbols": symbols, "book": book, "lines": lines, "blocks": blocks, "is_opt": opt}


def subset(p: Any, idx: np.ndarray) -> Any:
    from dataclasses import replace

    from risk_pipeline.quant.portfolio import POSITION_FIELDS

    fields = ("symbol_index", "quantity", *POSITION_FIELDS)
    return replace(
        p,
        **{f: np.broadcast_to(np.asarray(getattr(p, f)), (p.n_positions,))[idx] for f in fields},
        position_id=tuple(p.position_id[i] for i in idx),
    )


def meets_every_row(h: Any, hc: Any, t: Any, x: np.ndarray) -> bool:
    """The hedge against every row of the program, computed here (Greek levels, every scenario's loss cap, the
    exact 97.5 % ES, the budget, the minimum notional, whole contracts)."""
    after = t.exposure + hc.greeks @ x
    pnl = t.book_pnl + hc.scenario_pnl @ x
    used = x > 0
    return bool(
        np.all(np.abs(after) <= t.warn_level * (1 + 1e-6) + 1e-6)
        and -pnl.min() <= t.loss_cap * (1 + 1e-9)
        and h.empirical_es(pnl[t.es_rows], t.es_confidence) <= t.es_target * (1 + 1e-9)
        and (hc.premium + hc.cost) @ x <= t.budget * (1 + 1e-9)
        and np.all(hc.notional[used] * x[used] >= t.min_notional * (1 - 1e-9))
        and np.all(x == np.round(x))
    )


def within_hard_rows(hc: Any, t: Any, x: np.ndarray) -> bool:
    """The hedge against the rows a partial hedge must meet, computed here: the budget, whole contracts within
    their bounds, the minimum notional."""
    used = x > 0
    return bool(
        (hc.premium + hc.cost) @ x <= t.budget * (1 + 1e-9)
        and np.all(hc.notional[used] * x[used] >= t.min_notional * (1 - 1e-9))
        and np.all((x == np.round(x)) & (x >= 0) & (x <= hc.max_contracts))
    )


def child(
    code: str,
    n_names: int,
    ref: str,
    time_limit: float,
    gamma_levels: str = "q99",
    compare_solver: bool = False,
    save_inputs: str | None = None,
) -> dict[str, Any]:
    from risk_pipeline.quant.scenario_engine import evaluate

    h = load_hedging(code, ref)
    s = setup(n_names)
    book, lines, blocks, symbols = s["book"], s["lines"], s["blocks"], s["symbols"]
    book_pnl = np.concatenate([evaluate(book, sc, hz).pnl for sc, hz in blocks])
    g_book = h.position_greek_arrays(book)
    line_g = h.position_greek_arrays(lines)
    mid = line_g["price"]
    trade = np.where(lines.quantity > 0, mid * 1.04 + 0.01, np.maximum(mid * 0.96 - 0.01, 0.0))
    rows = h.GreekRows(symbols, symbols, dollar_delta=True, vega=True)
    book_sym = [symbols[i] for i in book.symbol_index]
    # warning levels: one per kind (as greek_rows), the per-symbol ones at the 99th percentile of the book's names
    # (a few names over, more over half), dollar delta and vega at 80 % of the book's
    n_sym = len(symbols)
    net_d = np.bincount(book.symbol_index, g_book["delta"], n_sym)
    net_g = np.bincount(book.symbol_index, g_book["gamma"], n_sym)
    # --gamma-levels above: every name's gamma within its level (the program is then feasible)
    gamma_level = np.quantile(np.abs(net_g), 0.99) if gamma_levels == "q99" else 1.01 * np.abs(net_g).max()
    warn = np.concatenate(
        [
            np.full(n_sym, np.quantile(np.abs(net_d), 0.99)),
            np.full(n_sym, gamma_level),
            [0.8 * abs(g_book["dollar_delta"].sum()), 0.8 * abs(g_book["vega_per_vol_point"].sum())],
        ]
    )
    es_rows = np.arange(N_STRESS + N_1D, N_STRESS + N_1D + N_5D)
    es = h.empirical_es(book_pnl[es_rows], 0.975)
    budget = 0.02 * 40.0 * es
    kw = dict(
        symbol_columns=symbols,
        horizon_calendar_days=5 * 365 / 252,
        financing_rate=0.05,
        budget=budget,
        american="eep_grid",
    )
    del line_g
    gc.collect()

    phases: dict[str, dict[str, float]] = {}
    rss0 = rss_bytes()
    tracemalloc.start()

    def phase(name: str, fn: Any, traced: bool = True) -> Any:
        if not traced:  # tracemalloc slows the solver's Python side several-fold: time it untraced
            tracemalloc.stop()
            t = time.process_time()
            out = fn()
            phases[name] = {"cpu_s": time.process_time() - t, "peak_mb": float("nan")}
            tracemalloc.start()
            return out
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        t = time.process_time()
        out = fn()
        phases[name] = {
            "cpu_s": time.process_time() - t,
            "peak_mb": (tracemalloc.get_traced_memory()[1] - base) / 2**20,
        }
        return out

    cpu0 = time.process_time()
    if code == "new":
        exposure = phase(
            "book_exposure",
            lambda: rows.totals(
                book_sym, g_book["delta"], g_book["gamma"], g_book["dollar_delta"], g_book["vega_per_vol_point"]
            ),
        )
    else:
        exposure = phase(
            "book_exposure",
            lambda: rows.matrix(
                book_sym, g_book["delta"], g_book["gamma"], g_book["dollar_delta"], g_book["vega_per_vol_point"]
            ).sum(axis=1),
        )
    exposure = np.asarray(exposure, dtype=float).ravel()
    worst = np.sort(np.argsort(book_pnl, kind="stable")[:SCREEN_TAIL])
    tail, start = [], 0
    for sc, hz in blocks:
        inside = worst[(worst >= start) & (worst < start + sc.n_scenarios)] - start
        if inside.size:
            tail.append((h.scenario_rows(sc, inside), hz))
        start += sc.n_scenarios
    pre = phase("build_candidates_listed", lambda: h.build_candidates(lines, trade, mid, rows, tail, **kw))
    kept = phase(
        "screen_candidates",
        lambda pre=pre: h.screen_candidates(pre, s["is_opt"], exposure, warn, book_pnl[worst], SCREEN_OPTIONS),
    )
    del pre
    gc.collect()
    chosen_lines = subset(lines, kept)
    hc = phase(
        "build_candidates_screened",
        lambda: h.build_candidates(chosen_lines, trade[kept], mid[kept], rows, blocks, **kw),
    )
    targets = h.HedgeTargets(
        greek_names=rows.names,
        exposure=exposure,
        warn_level=warn,
        book_pnl=book_pnl,
        loss_cap=0.9 * float(-book_pnl.min()),
        es_rows=es_rows,
        es_confidence=0.975,
        es_target=0.85 * es,
        budget=budget,
        min_notional=10_000.0,
    )
    if save_inputs:  # for bench_hedge_solve.py
        import pickle

        Path(save_inputs).write_bytes(pickle.dumps({"hc": hc, "t": targets, "time_limit": time_limit}))
    load_at_solve = os.getloadavg()[0]
    sol = phase("solve_hedge", lambda: h.solve_hedge(hc, targets, time_limit=time_limit), traced=False)
    chosen = np.flatnonzero(sol.quantity > 0)
    solver = {
        "status": sol.status,
        "partial": bool(sol.partial),
        "cost": sol.cost,
        "wall_s": sol.solve_seconds,
        "cpu_s": phases["solve_hedge"]["cpu_s"],
        "load": load_at_solve,
        "first_feasible_s": getattr(sol, "first_feasible_seconds", None),
        "first_feasible_cpu_s": getattr(sol, "first_feasible_cpu_seconds", None),
        "lower_bound": getattr(sol, "lower_bound", None),
        "gap": getattr(sol, "gap", None),
        "meets_every_row": bool(chosen.size) and meets_every_row(h, hc, targets, sol.quantity),
        "within_hard_rows": within_hard_rows(hc, targets, sol.quantity),
        "violation": getattr(sol, "violation", None),
        "violation_bound": getattr(sol, "violation_bound", None),
        "es_after": h.empirical_es((targets.book_pnl + hc.scenario_pnl @ sol.quantity)[es_rows], 0.975),
        "es_before": es,
        "es_target": targets.es_target,
    }
    if compare_solver:  # the old solve_hedge on the same candidates, same limit, same process, untraced
        tracemalloc.stop()
        old = load_hedging("old", ref)
        load_old = os.getloadavg()[0]
        t0, w0 = time.process_time(), time.perf_counter()
        so = old.solve_hedge(hc, targets, time_limit=time_limit)
        solver["old"] = {
            "status": so.status,
            "partial": bool(so.partial),
            "cost": so.cost,
            "wall_s": time.perf_counter() - w0,
            "cpu_s": time.process_time() - t0,
            "load": load_old,
            "meets_every_row": bool((so.quantity > 0).any()) and meets_every_row(h, hc, targets, so.quantity),
        }
        tracemalloc.start()
    after = phase(
        "verify_exposure", lambda: exposure + (hc.greeks[:, chosen] @ sol.quantity[chosen] if chosen.size else 0.0)
    )
    cpu = time.process_time() - cpu0
    tracemalloc.stop()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "code": code,
        "names": n_names,
        "positions": book.n_positions,
        "listed_lines": lines.n_positions,
        "greek_rows": len(rows.names),
        "scenarios": int(book_pnl.size),
        "screened_lines": int(kept.size),
        "phases": phases,
        "core_cpu_s": cpu,
        "rss_before_gib": rss0 / 2**30,
        "peak_rss_gib": peak_rss / 2**30,
        "rss_rise_gib": max(peak_rss - rss0, 0) / 2**30,
        "status": sol.status,
        "solver": solver,
        "message": sol.message,
        "cost": sol.cost,
        "kept": kept.tolist(),
        "chosen": chosen.tolist(),
        "quantity": sol.quantity[chosen].tolist(),
        "exposure": exposure.tolist(),
        "after_max_ratio": float(np.max(np.abs(after) / warn)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 3000])
    parser.add_argument("--ref", default="main", help="git revision of the old quant/hedging.py")
    parser.add_argument("--old-max-names", type=int, default=1000)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument(
        "--gamma-levels", choices=["q99", "above"], default="q99",
        help="per-name gamma warning level: the 99th percentile of the names' |gamma| (the program is infeasible: "
        "a partial hedge), or above every name's (feasible)",
    )  # fmt: skip
    parser.add_argument(
        "--compare-solver", action="store_true",
        help="in the new code's process, also solve the same candidates with the --ref solve_hedge",
    )  # fmt: skip
    parser.add_argument(
        "--save-inputs", help="with --child: pickle the solver's candidates and targets here (bench_hedge_solve.py)"
    )
    parser.add_argument("--child", choices=["old", "new"])
    parser.add_argument("--json", help="also write every run's result here")
    a = parser.parse_args()
    if a.child:
        print(
            json.dumps(child(a.child, a.sizes[0], a.ref, a.time_limit, a.gamma_levels, a.compare_solver, a.save_inputs))
        )
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    print(f"load average at start: {os.getloadavg()}")
    results = []
    for n in a.sizes:
        got = {}
        for code in ("old", "new"):
            if code == "old" and n > a.old_max_names:
                print(f"{n} names, old: not run (dense exposures over --old-max-names)")
                continue
            cmd = [
                sys.executable,
                __file__,
                "--child",
                code,
                "--sizes",
                str(n),
                "--ref",
                a.ref,
                "--time-limit",
                str(a.time_limit),
                "--gamma-levels",
                a.gamma_levels,
                *(["--compare-solver"] if a.compare_solver and code == "new" else []),
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(f"{n} names, {code}: failed ({proc.returncode})\n{proc.stderr[-3000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            got[code] = r
            results.append(r)
            print(
                f"\n{n} names, {code} code: {r['positions']:,} positions, {r['listed_lines']:,} listed lines, "
                f"{r['greek_rows']:,} Greek rows, {r['scenarios']:,} scenarios, {r['screened_lines']:,} screened"
            )
            for name, ph in r["phases"].items():
                print(f"  {name:28s} {ph['cpu_s']:8.2f} CPU s  traced peak {ph['peak_mb']:10.1f} MB")
            print(
                f"  {'core':28s} {r['core_cpu_s']:8.2f} CPU s  peak RSS {r['peak_rss_gib']:.2f} GiB "
                f"(+{r['rss_rise_gib']:.2f} over {r['rss_before_gib']:.2f} at the core's start)"
            )
            print(f"  solve: {r['status']}, cost {r['cost']:,.2f}, {len(r['chosen'])} lines; {r['message'][:160]}")
            sv = r["solver"]
            first = sv["first_feasible_cpu_s"]
            print(
                f"  solver (limit {a.time_limit:g} s wall, load {sv['load']:.1f}): {sv['status']}, "
                f"{'partial, ' if sv['partial'] else ''}cost {sv['cost']:,.2f}, {sv['cpu_s']:.2f} CPU s "
                f"({sv['wall_s']:.1f} s wall); first hedge meeting every row after "
                + (f"{first:.2f} CPU s ({sv['first_feasible_s']:.1f} s wall)" if first == first and first else "-")
                + (f"; gap to the lower bound {sv['gap']:.3%}" if sv["gap"] == sv["gap"] and sv["gap"] else "")
                + f"; meets every row (checked here): {'yes' if sv['meets_every_row'] else 'no'}"
            )
            if sv["partial"]:
                viol, vb = sv.get("violation"), sv.get("violation_bound")
                print(
                    f"  partial hedge: {len(r['chosen'])} lines, within the budget, bounds and minimum notional "
                    f"(checked here): {'yes' if sv['within_hard_rows'] else 'no'}; ES {sv['es_before']:,.0f} -> "
                    f"{sv['es_after']:,.0f} (target {sv['es_target']:,.0f}); target rows' excess "
                    + (f"{viol:.4g}" if viol is not None and viol == viol else "-")
                    + (f", bound {vb:.4g}" if vb is not None and vb == vb else ", no bound")
                )
            if "old" in sv:
                o = sv["old"]
                print(
                    f"  --ref solve_hedge, same candidates (load {o['load']:.1f}): {o['status']}, "
                    f"{'partial, ' if o['partial'] else ''}cost {o['cost']:,.2f}, {o['cpu_s']:.2f} CPU s "
                    f"({o['wall_s']:.1f} s wall); meets every row: {'yes' if o['meets_every_row'] else 'no'}"
                )
        if len(got) == 2:
            o, w = got["old"], got["new"]
            eo, en = np.array(o["exposure"]), np.array(w["exposure"])
            rel = float(np.max(np.abs(eo - en) / np.maximum(np.abs(eo), 1e-300)))
            same = o["kept"] == w["kept"] and o["chosen"] == w["chosen"] and o["quantity"] == w["quantity"]
            kept_same = "same" if o["kept"] == w["kept"] else "DIFFER"
            print(
                f"  old vs new: exposure max relative difference {rel:.2e} (bit-identical rows "
                f"{int(np.sum(eo == en))} of {eo.size}); screened lines {kept_same}; "
                f"chosen lines and quantities {'same' if same else 'DIFFER'}; cost {o['cost']!r} vs {w['cost']!r}"
            )
            for name in o["phases"]:
                po, pn = o["phases"][name], w["phases"][name]
                print(
                    f"    {name:28s} CPU {po['cpu_s']:.2f} -> {pn['cpu_s']:.2f} s, traced peak "
                    f"{po['peak_mb']:.1f} -> {pn['peak_mb']:.1f} MB"
                )
    print(f"load average at end: {os.getloadavg()}")
    if a.json:
        Path(a.json).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
