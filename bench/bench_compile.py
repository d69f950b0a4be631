"""Cold numba compilation and warm (cached) loading of the pricing core, and the demo from a clean state.

``python bench/bench_compile.py`` runs a workload that calls every kernel family the demo uses (the
exact American engine through ``american_price`` / ``american_greeks`` / ``implied_vol_american``, BSM
Greeks, the European implied vols, Heston COS pricing and calibration, the scenario engine with the exact
engine and with the early-exercise grid) twice, each time in a fresh subprocess:

* cold: with an empty ``NUMBA_CACHE_DIR`` (a temporary directory), so every kernel compiles; prints the
  workload's wall time, the compile time (``numba:compile`` events, outermost only; wall and the compiling
  thread's CPU time, the figure that holds on a loaded machine) and the ten kernels that took longest on
  their own (the compiling thread's CPU, with the wall time; callees' compile time not counted in their callers);
* warm: the same workload again on the cache the cold run left, so every kernel loads from disk; prints
  the wall time and the time spent loading (``numba:compiler_lock`` events, outermost only).

``--all-methods`` adds the Bjerksund-Stensland methods (``bs2002``, ``bs1993``, ``bs2002_reference``) and
the scenario engine's ``bs2002`` kernel. ``--demo`` instead runs ``risk-pipeline demo`` in a subprocess
from a clean state (a temporary DAGSTER_HOME, warehouse, exports folder and numba cache) and prints its
wall time, its CPU time (with the processes it waited for), the compile time (wall and CPU) of the demo
process (spawned processes not counted: a first run's history kernels compile in the kernel warm-up processes
of ``risk_pipeline.kernel_warmup``, so the CPU of the demo's child processes, the warm-up and any worker pools,
is printed beside; ``--no-warmup`` sets ``RISK_PIPELINE_KERNEL_WARMUP=0``, so the history's kernels compile in
the demo process and are counted), the garbage collector's time inside the compilations and in the
whole process, the demo process's peak resident memory and the kernels that took longest on their own. The load
average and a calibration (``bench_pipeline.py``'s sort) are printed with every figure: on a shared machine
only figures taken at the same load compare (run two versions side by side).

``--dump FILE`` writes 119 arrays of the public API (the four American methods' prices, Greeks, implied
vols and quote checks over every regime of the exact engine, BSM Greeks and implied vols, Heston prices and a
calibration, the scenario engine's three American modes with and without vol, rate and yield moves);
``--compare BEFORE AFTER`` checks two dumps bit for bit. ``--warm N`` times the kernel families warm at
pipeline sizes (best of N, in process).

``--demo --signatures FILE`` also writes the demo's outermost compilations (function and argument types, in
order) to FILE; ``--replay FILE`` compiles exactly those in a fresh process with an empty cache (about 20 s of
CPU instead of the demo's minutes) and prints the compile CPU and the longest functions on their own, so that a
change to a kernel's compile time can be measured many times, side by side with the code before. Compile it in
the same order as the demo did, a recorded signature compiles the same callees; a renamed kernel needs a new
recording.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _listen() -> dict[str, Any]:
    """Register numba event listeners in this process; the returned dict fills in as kernels compile."""
    from numba.core import event

    stats: dict[str, Any] = {
        "compile_s": 0.0,
        "compile_cpu_s": 0.0,
        "lock_s": 0.0,
        "compilations": 0,
        "own_s": {},
        "own_cpu_s": {},
    }
    stack: list[list[float]] = []

    # compilations hold numba's global compiler lock: one at a time, each started and ended in one thread, so
    # the thread's CPU time over a compilation is that compilation's (the figure that holds under load)
    class Compile(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            stack.append([time.perf_counter(), 0.0, time.thread_time(), 0.0])

        def on_end(self, ev: event.Event) -> None:
            began, inner, began_cpu, inner_cpu = stack.pop()
            took = time.perf_counter() - began
            took_cpu = time.thread_time() - began_cpu
            if stack:
                stack[-1][1] += took
                stack[-1][3] += took_cpu
            else:
                stats["compile_s"] += took
                stats["compile_cpu_s"] += took_cpu
            stats["compilations"] += 1
            d = ev.data.get("dispatcher")
            name = f"{d.py_func.__module__}.{d.py_func.__qualname__}" if d is not None else "?"
            stats["own_s"][name] = stats["own_s"].get(name, 0.0) + took - inner
            stats["own_cpu_s"][name] = stats["own_cpu_s"].get(name, 0.0) + took_cpu - inner_cpu

    class Lock(event.Listener):
        depth = 0

        def on_start(self, ev: event.Event) -> None:
            if Lock.depth == 0:
                Lock.began = time.perf_counter()
            Lock.depth += 1

        def on_end(self, ev: event.Event) -> None:
            Lock.depth -= 1
            if Lock.depth == 0:
                stats["lock_s"] += time.perf_counter() - Lock.began

    # Python's garbage collector runs inside compilations too (numba's compiler allocates many objects); a full
    # pass walks every object of the process, so its share grows with the process's heap (the demo's Dagster)
    import gc

    stats["gc_in_compile_s"] = 0.0
    stats["gc_total_s"] = 0.0
    gc_began: list[float] = []

    def collecting(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_began[:] = [time.perf_counter()]
        elif gc_began:
            took = time.perf_counter() - gc_began[0]
            stats["gc_total_s"] += took
            if stack:
                stats["gc_in_compile_s"] += took

    gc.callbacks.append(collecting)
    event.register("numba:compile", Compile())
    event.register("numba:compiler_lock", Lock())
    return stats


def workload(all_methods: bool) -> None:
    """Small inputs of the demo's argument types through every kernel family it uses."""
    import numpy as np

    from risk_pipeline.quant.american import american_greeks, american_price
    from risk_pipeline.quant.bsm import bsm_greeks, bsm_price
    from risk_pipeline.quant.heston import HestonParams, calibrate_heston, heston_implied_vol
    from risk_pipeline.quant.implied_vol import implied_vol, implied_vol_american
    from risk_pipeline.quant.portfolio import Portfolio
    from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate

    rng = np.random.default_rng(7)
    n = 64
    s, k = rng.uniform(80.0, 120.0, n), np.full(n, 100.0)
    t, v = rng.uniform(0.05, 1.5, n), rng.uniform(0.15, 0.6, n)
    r, q, call = np.full(n, 0.04), rng.uniform(0.0, 0.05, n), rng.random(n) < 0.5
    methods = ["alo", "bs2002", "bs1993", "bs2002_reference"] if all_methods else ["alo"]
    for method in methods:
        price = american_price(s, k, t, v, r, q, call, method=method)
        american_greeks(s, k, t, v, r, q, call, method=method)
        implied_vol_american(price, s, k, t, r, q, call, method=method)
    bsm_greeks(s, k, t, v, r, q, call)
    implied_vol(bsm_price(s, k, t, v, r, q, call), s, k, t, r, q, call)
    lk = np.linspace(-0.3, 0.2, 24)
    tt = np.repeat([0.1, 0.5, 1.0], 8)
    vols = heston_implied_vol(HestonParams(0.04, 1.5, 0.05, 0.6, -0.7), tt, lk)
    calibrate_heston(tt, lk, vols + 0.002 * np.sin(5.0 * lk))
    n_sym, n_pos = 4, 40
    sym = np.arange(n_pos) % n_sym
    is_opt = np.arange(n_pos) >= n_sym
    book = Portfolio(
        symbols=tuple(f"S{i}" for i in range(n_sym)),
        spot=np.array([50.0, 100.0, 150.0, 200.0]),
        symbol_index=sym,
        quantity=rng.integers(-20, 21, n_pos).astype(float),
        multiplier=np.where(is_opt, 100.0, 1.0),
        is_option=is_opt,
        is_call=rng.random(n_pos) < 0.5,
        strike=np.array([50.0, 100.0, 150.0, 200.0])[sym] * rng.uniform(0.85, 1.15, n_pos),
        time_years=rng.uniform(0.05, 1.0, n_pos),
        implied_vol=rng.uniform(0.2, 0.5, n_pos),
        rate=0.04,
        dividend_yield=0.02,
        is_american=is_opt & (rng.random(n_pos) < 0.5),
    )
    n_sc = 200
    scenarios = ScenarioSet(
        spot_shock_rel=rng.normal(0.0, 0.05, (n_sc, n_sym)),
        vol_scale=rng.uniform(0.8, 1.4, (n_sc, n_sym)),
        rate_shift_abs=np.where(rng.random(n_sc) < 0.3, 0.01, 0.0),
    )
    for american in ["exact", "eep_grid", "bs2002"] if all_methods else ["exact", "eep_grid"]:
        evaluate(book, scenarios, 1.0, american=american, per_symbol=True)  # type: ignore[arg-type]


def outputs() -> dict[str, Any]:
    """Arrays through the public API of every kernel family (``--dump``/``--compare``: outputs before and after
    a change); inputs cover every regime of the American engine (single and double boundary, never exercised,
    zero vol, expired, invalid)."""
    import numpy as np

    from risk_pipeline.quant.american import american_greeks, american_price, bs2002_call_raw
    from risk_pipeline.quant.bsm import bsm_greeks, bsm_price
    from risk_pipeline.quant.heston import HestonParams, calibrate_heston, heston_implied_vol
    from risk_pipeline.quant.implied_vol import (
        american_quote_status,
        implied_vol,
        implied_vol_american,
        implied_vol_from_quotes,
    )
    from risk_pipeline.quant.portfolio import Portfolio
    from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate

    rng = np.random.default_rng(11)
    n = 400
    s, k = rng.uniform(60.0, 140.0, n), rng.uniform(80.0, 120.0, n)
    t, v = rng.uniform(0.02, 3.0, n), rng.uniform(0.05, 0.9, n)
    r, q, call = rng.uniform(-0.02, 0.08, n), rng.uniform(-0.01, 0.06, n), rng.random(n) < 0.5
    # regimes: double boundary (r < 0, q < r), never exercised, zero vol, expired, invalid, tiny vol
    r[:20], q[:20] = -0.01, -0.03
    r[20:40], q[20:40] = -0.005, 0.01
    v[40:50] = 0.0
    t[50:55] = 0.0
    s[55], v[56], t[57], k[58] = -1.0, np.nan, np.nan, 0.0
    v[60:65] = 1e-9
    out: dict[str, Any] = {}
    for method in ["alo", "bs2002", "bs1993", "bs2002_reference"]:
        price = american_price(s, k, t, v, r, q, call, method=method)
        out[f"{method}.price"] = price
        g = american_greeks(s, k, t, v, r, q, call, method=method)
        for name, arr in vars(g).items():
            out[f"{method}.greeks.{name}"] = arr
        quote = price * (1.0 + 0.01 * rng.standard_normal(n))
        iv = implied_vol_american(quote, s, k, t, r, q, call, method=method)
        out[f"{method}.iv.vol"], out[f"{method}.iv.status"] = iv.vol, iv.status
        out[f"{method}.iv.iterations"] = np.array(iv.iterations)
        iv = implied_vol_american(price, s, k, t, r, q, call, method=method)
        out[f"{method}.iv_exact.vol"], out[f"{method}.iv_exact.status"] = iv.vol, iv.status
        bid, ask = quote * 0.99, quote * 1.01
        bid[::37] = 0.0
        ask[::41] = np.nan
        qs = american_quote_status(bid, ask, s, k, t, r, q, call, method=method)
        out[f"{method}.quote_status"], out[f"{method}.quote_bounded"] = qs
        iv = implied_vol_from_quotes(bid, ask, s, k, t, r, q, call, style="american", method=method)
        out[f"{method}.iv_quotes.vol"], out[f"{method}.iv_quotes.status"] = iv.vol, iv.status
    out["bs2002_call_raw"] = bs2002_call_raw(s[100:], k[100:], t[100:], v[100:], r[100:], q[100:])
    for name, arr in vars(bsm_greeks(s, k, t, v, r, q, call)).items():
        out[f"bsm.greeks.{name}"] = arr
    euro = bsm_price(s, k, t, v, r, q, call)
    iv = implied_vol(euro, s, k, t, r, q, call)
    out["bsm.iv.vol"], out["bsm.iv.status"] = iv.vol, iv.status
    lk = np.linspace(-0.3, 0.2, 24)
    tt = np.repeat([0.1, 0.5, 1.0], 8)
    vols = heston_implied_vol(HestonParams(0.04, 1.5, 0.05, 0.6, -0.7), tt, lk)
    out["heston.vols"] = vols
    fit = calibrate_heston(tt, lk, vols + 0.002 * np.sin(5.0 * lk))
    out["heston.fit"] = np.array([*fit.params.as_array(), fit.rmse_vol_points, fit.max_abs_error_vol_points])
    n_sym, n_pos = 5, 60
    sym = np.arange(n_pos) % n_sym
    is_opt = np.arange(n_pos) >= n_sym
    spot0 = np.array([50.0, 100.0, 150.0, 200.0, 80.0])
    book = Portfolio(
        symbols=tuple(f"S{i}" for i in range(n_sym)),
        spot=spot0,
        symbol_index=sym,
        quantity=rng.integers(-20, 21, n_pos).astype(float),
        multiplier=np.where(is_opt, 100.0, 1.0),
        is_option=is_opt,
        is_call=rng.random(n_pos) < 0.5,
        strike=spot0[sym] * rng.uniform(0.8, 1.2, n_pos),
        time_years=rng.uniform(0.02, 2.0, n_pos),
        implied_vol=rng.uniform(0.15, 0.6, n_pos),
        rate=np.where(sym == 4, -0.01, 0.04),
        dividend_yield=np.where(sym == 4, -0.03, np.where(sym == 3, 0.0, 0.02)),
        is_american=is_opt & (rng.random(n_pos) < 0.7),
    )
    n_sc = 300
    spot_only = ScenarioSet(spot_shock_rel=rng.normal(0.0, 0.05, (n_sc, n_sym)))
    full = ScenarioSet(
        spot_shock_rel=rng.normal(0.0, 0.05, (n_sc, n_sym)),
        vol_scale=np.where(rng.random((n_sc, n_sym)) < 0.3, 1.0, rng.uniform(0.7, 1.5, (n_sc, n_sym))),
        vol_skew=rng.normal(0.0, 0.05, (n_sc, n_sym)),
        rate_shift_abs=np.where(rng.random(n_sc) < 0.3, 0.01, 0.0),
        dividend_shift_abs=rng.normal(0.0, 0.002, (n_sc, n_sym)),
    )
    for label, sc in [("spot", spot_only), ("full", full)]:
        for american in ["exact", "eep_grid", "bs2002"]:
            for horizon in [0.0, 5.0]:
                res = evaluate(book, sc, horizon, american=american, per_symbol=True)  # type: ignore[arg-type]
                out[f"scenario.{label}.{american}.{horizon}.pnl"] = res.pnl
                out[f"scenario.{label}.{american}.{horizon}.by_symbol"] = res.by_symbol
    return {key: np.asarray(val) for key, val in out.items()}


def warm_timings(repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` seconds of each kernel family at pipeline sizes (``--warm``; call after a first run has
    compiled or loaded every kernel)."""
    import numpy as np

    from risk_pipeline.quant.american import american_greeks, american_price
    from risk_pipeline.quant.bsm import bsm_price
    from risk_pipeline.quant.implied_vol import american_quote_status, implied_vol, implied_vol_american
    from risk_pipeline.quant.portfolio import Portfolio
    from risk_pipeline.quant.scenario_engine import ScenarioSet, evaluate

    rng = np.random.default_rng(3)
    n = 20_000
    s, k = rng.uniform(70.0, 130.0, n), np.full(n, 100.0)
    t, v = rng.uniform(0.02, 2.0, n), rng.uniform(0.1, 0.7, n)
    r, q, call = np.full(n, 0.04), rng.uniform(0.0, 0.05, n), rng.random(n) < 0.5
    price = american_price(s, k, t, v, r, q, call)
    euro = bsm_price(s, k, t, v, r, q, call)
    n_sym, n_pos = 10, 110
    sym = np.arange(n_pos) % n_sym
    is_opt = np.arange(n_pos) >= n_sym
    spot0 = np.linspace(50.0, 200.0, n_sym)
    book = Portfolio(
        symbols=tuple(f"S{i}" for i in range(n_sym)),
        spot=spot0,
        symbol_index=sym,
        quantity=rng.integers(-20, 21, n_pos).astype(float),
        multiplier=np.where(is_opt, 100.0, 1.0),
        is_option=is_opt,
        is_call=rng.random(n_pos) < 0.5,
        strike=spot0[sym] * rng.uniform(0.85, 1.15, n_pos),
        time_years=rng.uniform(0.05, 1.0, n_pos),
        implied_vol=rng.uniform(0.2, 0.5, n_pos),
        rate=0.04,
        dividend_yield=0.02,
        is_american=is_opt,
    )
    n_sc = 2_000
    spot_sc = ScenarioSet(spot_shock_rel=rng.normal(0.0, 0.05, (n_sc, n_sym)))
    full_sc = ScenarioSet(
        spot_shock_rel=rng.normal(0.0, 0.05, (n_sc, n_sym)),
        vol_scale=rng.uniform(0.8, 1.4, (n_sc, n_sym)),
        rate_shift_abs=rng.normal(0.0, 0.002, n_sc),
    )
    cases = {
        "american_price alo, 20,000": lambda: american_price(s, k, t, v, r, q, call),
        "american_greeks alo, 5,000": lambda: american_greeks(
            s[:5000], k[:5000], t[:5000], v[:5000], r[:5000], q[:5000], call[:5000]
        ),
        "american_price bs2002, 20,000": lambda: american_price(s, k, t, v, r, q, call, method="bs2002"),
        "implied_vol_american alo, 20,000": lambda: implied_vol_american(price, s, k, t, r, q, call),
        "american_quote_status, 20,000": lambda: american_quote_status(price * 0.99, price * 1.01, s, k, t, r, q, call),
        "implied_vol European, 20,000": lambda: implied_vol(euro, s, k, t, r, q, call),
        "scenarios exact, spot only, 100 Americans x 2,000": lambda: evaluate(book, spot_sc, 1.0, american="exact"),
        "scenarios exact, vol and rate, 100 x 500": lambda: evaluate(book, full_sc.take(0, 500), 1.0, american="exact"),
        "scenarios eep_grid, 100 x 2,000": lambda: evaluate(book, full_sc, 1.0, american="eep_grid"),
    }
    out = {}
    for name, fn in cases.items():
        best = np.inf
        for _ in range(repeat):
            began = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - began)
        out[name] = best
    return out


def dump(path: str) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    arrays = outputs()
    np.savez(path, **arrays)
    print(f"{len(arrays)} arrays written to {path}")


def compare(before: str, after: str) -> None:
    """Every array of two ``--dump`` files: bit-identical, or the largest relative difference."""
    import numpy as np

    a, b = np.load(before), np.load(after)
    assert sorted(a.files) == sorted(b.files), "different array names"
    same = 0
    for name in sorted(a.files):
        x, y = a[name], b[name]
        if x.shape == y.shape and x.tobytes() == y.tobytes():
            same += 1
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            both_nan = np.isnan(x) & np.isnan(y) if x.dtype.kind == "f" else np.zeros(x.shape, bool)
            rel = np.where(both_nan | (x == y), 0.0, np.abs(x - y) / np.maximum(np.abs(x), np.abs(y)))
        print(
            f"  {name}: largest relative difference {np.nanmax(rel) if rel.size else 0.0:.3g}"
            f" ({int(np.count_nonzero(rel))} of {x.size} elements differ; NaN mismatch "
            f"{int(np.count_nonzero(np.isnan(x) != np.isnan(y))) if x.dtype.kind == 'f' else 0})"
        )
    print(f"{same} of {len(a.files)} arrays bit-identical")


def child(all_methods: bool) -> None:
    """The workload with the listeners on; one JSON line on stdout."""
    sys.path.insert(0, str(ROOT))
    stats = _listen()
    began = time.perf_counter()
    workload(all_methods)
    stats["wall_s"] = time.perf_counter() - began
    print(json.dumps(stats))


def _record_signatures() -> list[dict[str, Any]]:
    """Register a listener that appends every outermost compilation (module, qualified name, pickled argument
    types) to the returned list."""
    import pickle

    from numba.core import event

    records: list[dict[str, Any]] = []
    depth = [0]

    class Record(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            depth[0] += 1

        def on_end(self, ev: event.Event) -> None:
            depth[0] -= 1
            d = ev.data.get("dispatcher")
            if depth[0] == 0 and d is not None:
                records.append(
                    {
                        "module": d.py_func.__module__,
                        "qualname": d.py_func.__qualname__,
                        "args": pickle.dumps(tuple(ev.data["args"])),
                    }
                )

    event.register("numba:compile", Record())
    return records


def demo_child() -> int:
    """``risk-pipeline demo`` in this process with the listeners on; the compile figures on the last line."""
    sys.path.insert(0, str(ROOT))
    stats = _listen()
    path = os.environ.get("BENCH_COMPILE_SIGNATURES")
    records = _record_signatures() if path else []
    from risk_pipeline import cli

    began = time.perf_counter()
    code = cli.main(["demo"])
    stats["wall_s"] = time.perf_counter() - began
    stats["children_cpu_s"] = _children_cpu_s()  # the kernel warm-up processes and any worker pools
    if path:
        import pickle

        Path(path).write_bytes(pickle.dumps(records))
    print(json.dumps(stats))
    return code


def replay_child(path: str) -> None:
    """Compile the outermost compilations recorded by ``--signatures`` in their order; one JSON line on stdout."""
    import importlib
    import pickle

    sys.path.insert(0, str(ROOT))
    stats = _listen()
    began = time.perf_counter()
    for rec in pickle.loads(Path(path).read_bytes()):
        func: Any = importlib.import_module(rec["module"])
        for part in rec["qualname"].split("."):
            func = getattr(func, part)
        func.compile(pickle.loads(rec["args"]))
    stats["wall_s"] = time.perf_counter() - began
    print(json.dumps(stats))


def type_expr(ty: Any) -> str:
    """``ty`` (a numba type) as an expression over ``numba.types`` and ``A`` (``kernel_warmup._types_namespace``);
    ValueError for a kind of type it does not write."""
    from numba.core import types

    if isinstance(ty, types.Array):
        extra = "" if ty.layout == "C" else f", {ty.layout!r}"
        extra += ", readonly=True" if not ty.mutable else ""
        return f"A({type_expr(ty.dtype)}, {ty.ndim}{extra})"
    if isinstance(ty, types.Literal):
        return f"literal({ty.literal_value!r})"
    if isinstance(ty, types.Omitted):
        return f"Omitted({ty.value!r})"
    if isinstance(ty, types.UniTuple):
        return f"UniTuple({type_expr(ty.dtype)}, {ty.count})"
    if isinstance(ty, types.Tuple):
        inner = ", ".join(type_expr(t) for t in ty.types)
        return f"Tuple(({inner}{',' if len(ty.types) == 1 else ''}))"
    if isinstance(ty, types.Boolean):
        return "boolean"
    if isinstance(ty, types.NoneType):
        return "none"
    if isinstance(ty, (types.Integer, types.Float, types.Complex)):
        return str(ty)
    raise ValueError(f"no expression for numba type {ty!r}")


def warmup_list(path: str) -> None:
    """Print ``kernel_warmup.END_OF_DAY_SIGNATURES`` from a ``--signatures`` recording of the demo (with the
    history's kernel warm-up on): the demo process's outermost compilations, in order, as Python source."""
    import pickle

    sys.path.insert(0, str(ROOT))
    from numba.core import types

    from risk_pipeline.kernel_warmup import _types_namespace

    namespace = _types_namespace()
    print("END_OF_DAY_SIGNATURES: tuple[tuple[str, str, str], ...] = (")
    for rec in pickle.loads(Path(path).read_bytes()):
        args = pickle.loads(rec["args"])
        try:
            text = ", ".join(type_expr(a) for a in args)
        except ValueError as exc:
            print(f"    # {rec['module']}.{rec['qualname']}: {exc}")
            continue
        again = eval(f"({text},)", {"__builtins__": {}}, namespace) if text else ()
        assert tuple(again) == tuple(args), (again, args)
        assert all(isinstance(a, types.Type) for a in again)
        print(f"    (\n        {rec['module']!r},\n        {rec['qualname']!r},")
        line = ""
        for part in text.split(", "):  # implicitly concatenated literals of at most 100 characters
            if line and len(line) + len(part) > 96:
                print(f"        {line!r}")
                line = ""
            line += f"{part}, "
        print(f"        {line.removesuffix(', ')!r},\n    ),")
    print(")")


def bench_replay(path: str, top: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_replay_") as tmp:
        env = _env(NUMBA_CACHE_DIR=str(Path(tmp) / "numba"))
        print(f"replay of {path} (empty cache), {_load()}")
        stats, took, _ = _run(["--replay-child", path], env)
        print(
            f"  compile {stats['compile_s']:.1f} s (CPU {stats['compile_cpu_s']:.2f} s), "
            f"{stats['compilations']} compilations (process {took:.1f} s); longest on their own:"
        )
        _print_own(stats, top)
        print(f"done, {_load()}")


def calibration_s() -> float:
    """``bench_pipeline.py``'s unit of machine speed (a fixed single-threaded sort), best of three."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_pipeline import calibration_s as pipeline_calibration_s

    return pipeline_calibration_s()


def _load() -> str:
    return (
        "load average "
        + ", ".join(f"{x:.1f}" for x in os.getloadavg())
        + f", calibration {1e3 * calibration_s():.0f} ms"
    )


def _children_cpu_s() -> float:
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _run(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float, str]:
    """Run this script with ``args`` in a subprocess: its JSON line (plus ``cpu_s``, the CPU time of the
    process and the processes it waited for), wall seconds and stdout."""
    began, began_cpu = time.perf_counter(), _children_cpu_s()
    done = subprocess.run(
        [sys.executable, __file__, *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - began
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{args} failed with exit code {done.returncode}")
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    stats["cpu_s"] = _children_cpu_s() - began_cpu
    import resource

    stats["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest child so far
    return stats, took, done.stdout


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


def _print_own(stats: dict[str, Any], top: int) -> None:
    """The ``top`` functions by their own compile CPU (the compiling thread's, callees' compilations not counted),
    with their own wall time."""
    for name, cpu in sorted(stats["own_cpu_s"].items(), key=lambda kv: -kv[1])[:top]:
        wall = stats["own_s"][name]
        print(f"    {cpu:6.2f} s CPU ({wall:6.2f} s wall)  {name.removeprefix('risk_pipeline.quant.')}")


def bench_workload(all_methods: bool, top: int) -> None:
    flag = ["--all-methods"] if all_methods else []
    with tempfile.TemporaryDirectory(prefix="bench_compile_") as tmp:
        env = _env(NUMBA_CACHE_DIR=str(Path(tmp) / "numba"))
        print(f"cold (empty cache), {_load()}")
        cold, took, _ = _run(["--child", *flag], env)
        print(
            f"  workload {cold['wall_s']:.1f} s (process {took:.1f} s, CPU {cold['cpu_s']:.1f} s); compile "
            f"{cold['compile_s']:.1f} s (CPU {cold['compile_cpu_s']:.1f} s; garbage collection inside it "
            f"{cold['gc_in_compile_s']:.1f} s, in the whole process {cold['gc_total_s']:.1f} s), "
            f"{cold['compilations']} compilations; "
            "longest on their own:"
        )
        _print_own(cold, top)
        print(f"warm (the cache above), {_load()}")
        warm, took, _ = _run(["--child", *flag], env)
        print(
            f"  workload {warm['wall_s']:.2f} s (process {took:.1f} s); loading cached kernels "
            f"{warm['lock_s']:.2f} s; compile {warm['compile_s']:.2f} s ({warm['compilations']} compilations)"
        )
        print(f"done, {_load()}")


def bench_demo(top: int, signatures: str | None = None, warmup: bool = True, keep: str | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        # recording the demo's compilations for ``kernel_warmup.END_OF_DAY_SIGNATURES``: without that warm-up
        extra = (
            {"BENCH_COMPILE_SIGNATURES": str(Path(signatures).resolve()), "RISK_PIPELINE_KERNEL_WARMUP": "history"}
            if signatures and warmup
            else {"BENCH_COMPILE_SIGNATURES": str(Path(signatures).resolve())}
            if signatures
            else {}
        )
        env = _env(
            DAGSTER_HOME=str(home),
            RISK_PIPELINE_WAREHOUSE_URL=str(Path(tmp) / "warehouse.duckdb"),
            RISK_PIPELINE_EXPORTS=str(Path(tmp) / "exports"),
            NUMBA_CACHE_DIR=str(Path(tmp) / "numba"),
            **extra,
            **({} if warmup else {"RISK_PIPELINE_KERNEL_WARMUP": "0"}),
        )
        print(f"risk-pipeline demo from a clean state, {_load()}")
        stats, took, out = _run(["--demo-child"], env)
        for line in out.splitlines()[:-1]:
            if line.startswith(("  ", "risk_pipeline demo", "result")):
                print(line)
        share = stats["compile_s"] / took if took else 0.0
        print(
            f"demo {took:.1f} s wall (target 90 s; CPU {stats['cpu_s']:.1f} s), numba compile "
            f"{stats['compile_s']:.1f} s ({share:.0%}; CPU {stats['compile_cpu_s']:.1f} s; garbage collection "
            f"inside it {stats['gc_in_compile_s']:.1f} s, in the whole process {stats['gc_total_s']:.1f} s) in "
            f"{stats['compilations']} compilations, peak RSS {stats['peak_rss_mib']:.0f} MiB, {_load()}"
        )
        print(
            f"  the demo's child processes (kernel warm-up{'' if warmup else ' off'}, worker pools): "
            f"{stats.get('children_cpu_s', 0.0):.1f} CPU s, their compilations not counted above"
        )
        print("  longest on their own:")
        _print_own(stats, top)
        if keep:
            import shutil

            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(tmp) / "warehouse.duckdb", Path(keep) / "warehouse.duckdb")
            print(f"  warehouse kept in {keep}/warehouse.duckdb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all-methods", action="store_true", help="also the Bjerksund-Stensland methods")
    parser.add_argument("--demo", action="store_true", help="time risk-pipeline demo from a clean state")
    parser.add_argument(
        "--no-warmup", action="store_true", help="--demo with RISK_PIPELINE_KERNEL_WARMUP=0 (every compile counted)"
    )
    parser.add_argument("--top", type=int, default=10, help="kernels listed by own compile time")
    parser.add_argument("--warm", type=int, metavar="REPEAT", help="warm kernel timings in process (best of REPEAT)")
    parser.add_argument("--dump", metavar="NPZ", help="write the outputs of the public API to NPZ (in process)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two --dump files")
    parser.add_argument(
        "--signatures", metavar="FILE", help="with --demo: write the demo's outermost compilations to FILE"
    )
    parser.add_argument("--replay", metavar="FILE", help="compile the compilations of a --signatures FILE, cold")
    parser.add_argument("--keep", metavar="DIR", help="with --demo: copy the demo's warehouse into DIR")
    parser.add_argument(
        "--warmup-list", metavar="FILE", help="print kernel_warmup.END_OF_DAY_SIGNATURES from a --signatures FILE"
    )
    parser.add_argument("--replay-child", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--demo-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warm:
        sys.path.insert(0, str(ROOT))
        warm_timings(1)  # compile or load every kernel
        print(f"warm kernels, best of {args.warm} ({_load()}):")
        for name, secs in warm_timings(args.warm).items():
            print(f"  {secs * 1e3:9.1f} ms  {name}")
    elif args.dump:
        dump(args.dump)
    elif args.compare:
        compare(*args.compare)
    elif args.child:
        child(args.all_methods)
    elif args.demo_child:
        raise SystemExit(demo_child())
    elif args.replay_child:
        replay_child(args.replay_child)
    elif args.warmup_list:
        warmup_list(args.warmup_list)
    elif args.replay:
        bench_replay(args.replay, args.top)
    elif args.demo:
        bench_demo(args.top, args.signatures, warmup=not args.no_warmup, keep=args.keep)
    else:
        bench_workload(args.all_methods, args.top)


if __name__ == "__main__":
    main()
