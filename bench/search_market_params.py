"""Automated search over the synthetic market's constants for issue 20's abs-return autocorrelation targets.

Usage::

    python bench/search_market_params.py --evals 80 --log /tmp/search.jsonl       # random start + local search
    python bench/search_market_params.py --confirm '{"crisis_half_life": 25}' --seeds 100   # one point, printed

Each candidate sets some of the module constants of ``risk_pipeline/sources/synthetic.py`` in-process (the
``KNOBS`` below; derived constants such as ``_PHI``, ``_KAPPA`` and the regimes are rebuilt), generates the
2021-2027 paths of ``--seeds`` seeds without the implied vols (``bench_market_stats.synthetic_path(...,
with_implied=False)``, as ``bench_market_stats.py --prices-only``), and computes the prices-only statistics of
``quant.market_stats.path_statistics`` aggregated as the tests aggregate them
(risk_pipeline_tests/sources/test_synthetic_market.py and test_synthetic.py). Its loss is the sum of squared
band violations, each divided by its band's width (a one-sided band by the stated scale), over every
prices-only band of those tests (times ``--band-weight``) and over the targets of the abs-return
autocorrelation at lags 1/5/20 (index and names: 0.25-0.30 / 0.28-0.32 / 0.19-0.23).

Search: ``--init`` points of a Latin hypercube over the knobs' ranges (the generator's current values first),
then a (1+1) evolution strategy from the best point (Gaussian steps in the unit cube, step size adapted by the
1/5 rule). One process; every evaluation is appended to ``--log`` as a JSON line (the figures and the loss
terms), and ``--resume`` continues from a log. Prints the Pareto front of the evaluated points between the
lag-5 autocorrelation (lower of index and names) and the >40 % share, the red share and the clustering
rejections, with the bands each point violates.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import re
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_market_stats as bms  # noqa: E402

from risk_pipeline.quant import market_stats as ms  # noqa: E402
from risk_pipeline.sources import synthetic as syn  # noqa: E402

# ---------------------------------------------------------------------- knobs
_SOURCE = Path(syn.__file__).read_text()
_BLOCK = _SOURCE[_SOURCE.index("_HALF_LIVES = ") : _SOURCE.index("class _VolModel")]
#: The module's parameter constants (the block from _HALF_LIVES to _REGIMES) as imported.
_BASE = {n: copy.deepcopy(getattr(syn, n)) for n in re.findall(r"^(_[A-Z][A-Z0-9_]*)\s*[:=]", _BLOCK, re.M)}


def _set_nested(name: str, index: tuple[int, ...], value: float) -> None:
    """Set ``syn.<name>[i][j]`` (tuples of tuples rebuilt, arrays copied)."""
    obj = getattr(syn, name)
    if isinstance(obj, np.ndarray):
        arr = obj.copy()
        arr[index] = value
        setattr(syn, name, arr)
        return

    def put(x: Any, idx: tuple[int, ...]) -> Any:
        if not idx:
            return value
        items = list(x)
        items[idx[0]] = put(items[idx[0]], idx[1:])
        return tuple(items)

    setattr(syn, name, put(obj, index))


def _set_regime(**fields: Any) -> None:
    syn._REGIMES["realistic"] = dataclasses.replace(syn._REGIMES["realistic"], **fields)


@dataclasses.dataclass(frozen=True)
class Knob:
    """One searched constant: its range and how a value is applied to the module."""

    name: str
    lo: float
    hi: float
    apply: Callable[[float], None]
    base: float
    log: bool = False


def _knobs() -> list[Knob]:
    b = _BASE
    real = b["_REGIMES"]["realistic"]
    return [
        Knob("fast_half_life", 3.0, 8.0, lambda v: _set_nested("_HALF_LIVES", (0,), v), float(b["_HALF_LIVES"][0])),
        Knob("mkt_fast_lev", 0.11, 0.24, lambda v: _set_nested("_MARKET_LOGVOL", (0, 0), v), b["_MARKET_LOGVOL"][0][0]),
        Knob(
            "mkt_med_lev", 0.008, 0.045, lambda v: _set_nested("_MARKET_LOGVOL", (0, 1), v), b["_MARKET_LOGVOL"][0][1]
        ),
        Knob("mkt_med_noise", 0.0, 0.03, lambda v: _set_nested("_MARKET_LOGVOL", (2, 1), v), b["_MARKET_LOGVOL"][2][1]),
        Knob("crisis_half_life", 18.0, 70.0, lambda v: setattr(syn, "_CRISIS_HALF_LIFE", v), b["_CRISIS_HALF_LIFE"]),
        Knob("crash_drift", 0.06, 0.14, lambda v: setattr(syn, "_CRASH_DRIFT", v), b["_CRASH_DRIFT"]),
        Knob("crisis_fast_load", 0.3, 0.9, lambda v: setattr(syn, "_CRISIS_FAST_LOAD", v), b["_CRISIS_FAST_LOAD"]),
        Knob("calm_vol", 0.05, 0.08, lambda v: setattr(syn, "_CALM_VOL", v), b["_CALM_VOL"]),
        Knob("market_nu", 8.0, 40.0, lambda v: setattr(syn, "_MARKET_NU", v), b["_MARKET_NU"], log=True),
        Knob("name_med_noise", 0.15, 0.40, lambda v: _set_nested("_NAME_LOGVOL", (2, 1), v), b["_NAME_LOGVOL"][2][1]),
        Knob(
            "idio_nu_scale",
            1.0,
            5.0,
            lambda v: setattr(syn, "_IDIO_NU", tuple(x * v for x in b["_IDIO_NU"])),
            1.0,
            log=True,
        ),
        Knob("peak_hi", 0.20, 0.30, lambda v: _set_regime(peak_vol=(real.peak_vol[0], v, real.peak_vol[2])), 0.23),
        Knob(
            "severe_share",
            0.03,
            0.12,
            lambda v: _set_regime(severe=(v, real.severe[1], real.severe[2])),
            real.severe[0],
        ),
        Knob("earnings_scale", 0.55, 0.8, lambda v: setattr(syn, "_EARNINGS_SCALE", v), b["_EARNINGS_SCALE"]),
        Knob(
            "names_market_load",
            0.7,
            1.2,
            lambda v: setattr(syn, "_MARKET_LOAD", (b["_MARKET_LOAD"][0], v)),
            b["_MARKET_LOAD"][1],
        ),
        Knob(
            "crisis_hold_scale",
            0.7,
            1.5,
            lambda v: _set_regime(crisis_hold=tuple(round(x * v) for x in real.crisis_hold)),
            1.0,
        ),
        Knob(
            "crisis_gap_scale",
            0.7,
            1.3,
            lambda v: _set_regime(crisis_gap=tuple(round(x * v) for x in real.crisis_gap)),
            1.0,
        ),
        Knob(
            "jump_feedback_scale",
            0.5,
            2.0,
            lambda v: setattr(syn, "_JUMP_FEEDBACK", tuple(x * v for x in b["_JUMP_FEEDBACK"])),
            1.0,
            log=True,
        ),
    ]


KNOBS = _knobs()


def apply_point(point: dict[str, float]) -> None:
    """Restore every constant to its module value, set the point's knobs, and rebuild the derived constants."""
    for name, value in _BASE.items():
        setattr(syn, name, copy.deepcopy(value))
    by_name = {k.name: k for k in KNOBS}
    for name, value in point.items():
        by_name[name].apply(float(value))
    syn._PHI = 0.5 ** (1.0 / syn._HALF_LIVES)
    syn._KAPPA = 252.0 * np.log(2.0) / syn._HALF_LIVES
    calm = syn._REGIMES["calm"]  # the calm market's vol is the calm vol
    syn._REGIMES["calm"] = dataclasses.replace(calm, peak_vol=(syn._CALM_VOL, syn._CALM_VOL, calm.peak_vol[2]))


# ---------------------------------------------------------------------- statistics and loss
def evaluate(point: dict[str, float], seeds: range, names_seeds: range = range(10)) -> dict[str, Any]:
    """Prices-only statistics of ``point`` aggregated as the tests aggregate them, the loss terms and CPU time."""
    apply_point(point)
    macro = bms.macro_calendar()
    cpu0 = time.process_time()
    rows, cover, jumps, largest, median_vol = [], [], [], [], []
    min_vol, max_vol, min_price = math.inf, 0.0, math.inf
    seed7: dict[str, float] = {}
    for seed in seeds:
        src = syn.SyntheticSource(seed=seed, macro_event_dates=macro)
        path = bms.synthetic_path(src, with_implied=False)
        rows.append(ms.path_statistics(path))
        cover.append(ms.stress_coverage(path.index_close))
        r_names = np.diff(np.log(path.names_close), axis=0)
        vols = r_names.std(axis=0) * math.sqrt(252)
        if seed in names_seeds:  # test_names_vols_stay_sane
            min_vol, max_vol = min(min_vol, vols.min()), max(max_vol, vols.max())
            min_price = min(min_price, float((path.names_close.min(axis=0) / path.names_close[0]).min()))
            largest.append(vols.max())
            median_vol.append(np.median(vols))
        if seed < 20:  # test_index_jumps_negative_and_self_exciting
            j = src.index_jumps(syn.FIRST_SESSION, syn.LAST_SESSION)["jump"].to_numpy(float)
            jumps.append(j)
        if seed == 7:  # test_synthetic.py's test_stylized_facts (its vols; the demo's windows)
            seed7 = {"vol_index": float(np.diff(np.log(path.index_close)).std() * math.sqrt(252))}
            seed7["max_name_vol"], seed7["min_name_vol"] = float(vols.max()), float(vols.min())
            seed7["demo_windows"] = _demo_windows(src, path.index_close)
    cpu = time.process_time() - cpu0

    def col(key: str, sub: range | None = None) -> np.ndarray:
        idx = [i for i, s in enumerate(seeds) if sub is None or s in sub]
        return np.array([rows[i].get(key, np.nan) for i in idx], dtype=float)

    def med(key: str, sub: range | None = None) -> float:
        return float(np.nanmedian(col(key, sub)))

    hit = [j != 0.0 for j in jumps]
    counts = [h.sum() / (h.size / 252) for h in hit]
    pooled = np.concatenate([j[h] for j, h in zip(jumps, hit, strict=True)]) if jumps else np.zeros(1)
    follow = [np.mean(h[1:][np.convolve(h.astype(float), np.ones(10), "full")[: h.size][:-1] > 0]) for h in hit]
    peak = col("max_rv21")
    fig = {
        **{f"acf_index_{k}": med(f"acf_index_{k}") for k in (1, 5, 20)},
        **{f"acf_names_{k}": med(f"acf_names_{k}") for k in (1, 5, 20)},
        "leverage": med("leverage"),
        "skewness": med("skewness"),
        "kurtosis": med("kurtosis"),
        "hill": med("hill"),
        "kurtosis_names": med("kurtosis_names"),
        "hill_names": med("hill_names"),
        "share_above_40": float(np.mean(peak > 0.40)),
        "max_rv21_q75": float(np.quantile(peak, 0.75)),
        "drawdown_q05": float(np.quantile(col("max_drawdown"), 0.05)),
        "drawdown_min": float(np.min(col("max_drawdown"))),
        "vol": med("vol"),
        "red_share": float(np.mean(col("red_share"))),
        "clustering_rejected": float(np.mean(col("clustering_p") < 0.05)),
        "jumps_per_year": float(np.median(counts)) if counts else math.nan,
        "jump_mean": float(pooled.mean()),
        "jump_negative": float(np.mean(pooled < 0)),
        "jump_follow_ratio": float(np.mean(follow) / np.mean([h.mean() for h in hit])) if hit else math.nan,
        "down_minus_up_correlation": med("down_minus_up_correlation"),
        "stress_correlation": med("stress_correlation"),
        "avg_correlation": med("avg_correlation"),
        "cpi_gap_ratio": med("cpi_gap_ratio"),
        "cpi_move_ratio": med("cpi_move_ratio"),
        "earnings_move_ratio": med("earnings_move_ratio"),
        "earnings_gap_ratio": med("earnings_gap_ratio"),
        "earnings_below_implied": med("earnings_below_implied"),
        "stress_coverage": float(np.mean(cover)),
        "names_min_vol": float(min_vol),
        "names_max_vol": float(max_vol),
        "names_min_price": float(min_price),
        "names_largest_vol_median": float(np.median(largest)),
        "names_median_vol_median": float(np.median(median_vol)),
        **{f"seed7_{k}": v for k, v in seed7.items()},
    }
    for key in ("acf_names_1", "acf_names_5", "acf_names_20", "kurtosis_names", "hill_names", "stress_correlation"):
        fig[f"first10_{key}"] = med(key, names_seeds)  # the test's FULL_SEEDS (bands checked on all seeds)
    terms = loss_terms(fig)
    return {"point": point, "figures": fig, "terms": terms, "cpu_s": cpu, "seeds": len(seeds)}


def _demo_windows(src: syn.SyntheticSource, close: np.ndarray) -> float:
    """Share of seed 7's 760-session windows ending from 2026-06-30 (every 10th) with a stress episode."""
    import datetime as dt

    days = src.sessions()
    ends = [i for i, d in enumerate(days) if d >= dt.date(2026, 6, 30)][::10]
    ok = []
    for end in ends:
        w = close[end - 759 : end + 1]
        ok.append(ms.rolling_realized_vol(np.diff(np.log(w))).max() >= 0.25 or ms.max_drawdown(w) <= -0.15)
    return float(np.mean(ok))


#: (figure, lo, hi, scale of a one-sided band): the tests' prices-only bands.
TEST_BANDS: list[tuple[str, float, float, float]] = [
    ("acf_index_1", 0.20, 0.32, 0.0),
    ("acf_index_5", 0.20, 0.36, 0.0),
    ("acf_index_20", 0.13, 0.28, 0.0),
    ("acf_names_1", 0.20, 0.32, 0.0),
    ("acf_names_5", 0.20, 0.36, 0.0),
    ("acf_names_20", 0.15, 0.28, 0.0),
    ("names_min_vol", 0.12, math.inf, 0.05),
    ("names_max_vol", -math.inf, 1.0, 0.1),
    ("names_min_price", 0.01, math.inf, 0.01),
    ("names_largest_vol_median", -math.inf, 0.75, 0.05),
    ("names_median_vol_median", 0.25, 0.40, 0.0),
    ("leverage", -0.16, -0.10, 0.0),
    ("skewness", -0.7, -0.3, 0.0),
    ("kurtosis", 6.0, 20.0, 0.0),
    ("hill", 2.4, 3.8, 0.0),
    ("kurtosis_names", 6.0, 20.0, 0.0),
    ("hill_names", 2.4, 4.0, 0.0),
    ("share_above_40", 0.35, 0.65, 0.0),
    ("max_rv21_q75", 0.60, 0.90, 0.0),
    ("drawdown_q05", -math.inf, -0.45, 0.05),
    ("drawdown_min", -0.85, math.inf, 0.05),
    ("vol", 0.14, 0.22, 0.0),
    ("red_share", 0.065, 0.115, 0.0),
    ("clustering_rejected", 0.30, 0.70, 0.0),
    ("jumps_per_year", 2.0, 3.0, 0.0),
    ("jump_mean", -0.04, -0.03, 0.0),
    ("jump_negative", 0.95, math.inf, 0.02),
    ("jump_follow_ratio", 3.0, math.inf, 0.5),
    ("down_minus_up_correlation", 0.10, 0.20, 0.0),
    ("stress_correlation", 0.60, 0.75, 0.0),
    ("avg_correlation", 0.22, 0.38, 0.0),
    ("cpi_gap_ratio", 2.0, math.inf, 0.2),
    ("cpi_move_ratio", 1.2, math.inf, 0.1),
    ("earnings_move_ratio", 2.2, 3.5, 0.0),
    ("earnings_gap_ratio", 4.0, 7.5, 0.0),
    ("earnings_below_implied", 0.55, 0.65, 0.0),
    ("stress_coverage", 0.9, math.inf, 0.05),
    ("seed7_vol_index", 0.12, 0.22, 0.0),
    ("seed7_max_name_vol", -math.inf, 0.62, 0.05),
    ("seed7_min_name_vol", 0.14, math.inf, 0.05),
    ("seed7_demo_windows", 1.0, math.inf, 0.1),
]
#: The issue's autocorrelation targets (index and names).
TARGET_BANDS: list[tuple[str, float, float, float]] = [
    (f"acf_{who}_{lag}", lo, hi, 0.0)
    for who in ("index", "names")
    for lag, lo, hi in ((1, 0.25, 0.30), (5, 0.28, 0.32), (20, 0.19, 0.23))
]


def _violation(value: float, lo: float, hi: float, scale: float) -> float:
    width = scale if scale > 0 else hi - lo
    if not math.isfinite(value):
        return 10.0
    return max(lo - value, value - hi, 0.0) / width


def loss_terms(fig: dict[str, float]) -> dict[str, dict[str, float]]:
    """Normalized violations (nonzero only) of the tests' bands and of the autocorrelation targets."""
    out: dict[str, dict[str, float]] = {"test": {}, "target": {}}
    for kind, bands in (("test", TEST_BANDS), ("target", TARGET_BANDS)):
        for key, lo, hi, scale in bands:
            v = _violation(fig.get(key, math.nan), lo, hi, scale)
            if v > 0:
                out[kind][key] = v
    return out


def loss(result: dict[str, Any], band_weight: float) -> float:
    t = result["terms"]
    return band_weight * sum(v * v for v in t["test"].values()) + sum(v * v for v in t["target"].values())


# ---------------------------------------------------------------------- search
def to_unit(point: dict[str, float]) -> np.ndarray:
    out = []
    for k in KNOBS:
        v = point.get(k.name, k.base)
        out.append((math.log(v / k.lo) / math.log(k.hi / k.lo)) if k.log else (v - k.lo) / (k.hi - k.lo))
    return np.array(out)


def from_unit(u: np.ndarray) -> dict[str, float]:
    u = np.clip(u, 0.0, 1.0)
    out = {}
    for k, x in zip(KNOBS, u, strict=True):
        v = k.lo * (k.hi / k.lo) ** x if k.log else k.lo + x * (k.hi - k.lo)
        out[k.name] = float(round(v, 5))
    return out


def summary(res: dict[str, Any], band_weight: float) -> str:
    f = res["figures"]
    bad = ", ".join(f"{k} {f[k]:.3g}" for k in res["terms"]["test"])
    return (
        f"loss {loss(res, band_weight):7.3f} | index {f['acf_index_1']:.3f}/{f['acf_index_5']:.3f}/"
        f"{f['acf_index_20']:.3f} names {f['acf_names_1']:.3f}/{f['acf_names_5']:.3f}/{f['acf_names_20']:.3f} "
        f">40% {f['share_above_40']:.0%} red {f['red_share']:.1%} clust {f['clustering_rejected']:.0%} "
        f"| {res['cpu_s']:.0f} CPU s | violates: {bad or 'none'}"
    )


def pareto(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points not dominated in (higher lag-5 min, lower >40 % share excess, red excess, clustering excess)."""

    def key(r: dict[str, Any]) -> tuple[float, ...]:
        f = r["figures"]
        return (
            -min(f["acf_index_5"], f["acf_names_5"]),
            max(f["share_above_40"] - 0.65, 0.0),
            max(f["red_share"] - 0.115, 0.0),
            max(f["clustering_rejected"] - 0.70, 0.0),
            sum(
                v
                for k, v in r["terms"]["test"].items()
                if k not in ("share_above_40", "red_share", "clustering_rejected")
            ),
        )

    keys = [key(r) for r in results]
    front = []
    for i, a in enumerate(keys):
        if not any(all(x <= y for x, y in zip(b, a, strict=True)) and b != a for b in keys):
            front.append(results[i])
    return sorted(front, key=lambda r: -min(r["figures"]["acf_index_5"], r["figures"]["acf_names_5"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evals", type=int, default=80)
    parser.add_argument("--init", type=int, default=30, help="Latin-hypercube points before the local search")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--band-weight", type=float, default=4.0, help="weight of the tests' bands in the loss")
    parser.add_argument("--log", default="/tmp/search_market_params.jsonl")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--rng", type=int, default=20)
    parser.add_argument("--step", type=float, default=0.15, help="first step of the local search (unit cube)")
    parser.add_argument("--confirm", help="JSON point: evaluate it only and print its figures")
    parser.add_argument("--start", help="JSON point evaluated before the local search (which starts from the best)")
    parser.add_argument("--no-base", action="store_true", help="do not evaluate the module's current values first")
    parser.add_argument("--front", action="store_true", help="print the Pareto front of --log and stop")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.confirm is not None:
        res = evaluate(json.loads(args.confirm), seeds)
        print(json.dumps(res, indent=1))
        print(summary(res, args.band_weight))
        return
    log = Path(args.log)
    results = (
        [json.loads(x) for x in log.read_text().splitlines()] if (args.resume or args.front) and log.exists() else []
    )
    for r in results:  # the loss of a logged point under this run's band weight
        r["loss"] = loss(r, args.band_weight)
    if args.front:
        for r in pareto(results):
            print(json.dumps({k: v for k, v in r["point"].items()}), summary(r, args.band_weight))
        return
    rng = np.random.default_rng(args.rng)
    dim = len(KNOBS)
    lhs = (rng.permuted(np.tile(np.arange(args.init), (dim, 1)), axis=1).T + rng.random((args.init, dim))) / args.init
    step = args.step

    def run(point: dict[str, float], tag: str) -> dict[str, Any]:
        res = evaluate(point, seeds)
        res["tag"] = tag
        res["loss"] = loss(res, args.band_weight)
        res["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with log.open("a") as fh:
            fh.write(json.dumps(res) + "\n")
        results.append(res)
        print(f"[{len(results):3d} {tag}] {summary(res, args.band_weight)}", flush=True)
        return res

    if not results and not args.no_base:
        run({}, "base")
    if args.start is not None:
        run(json.loads(args.start), "start")
    while len(results) < args.evals:
        n = len(results)
        if n <= args.init and not (args.resume or args.no_base):
            run(from_unit(lhs[n - 1]), "lhs")
            continue
        best = min(results, key=lambda r: r["loss"])
        u = to_unit(best["point"])
        cand = from_unit(u + step * rng.standard_normal(dim))
        res = run(cand, f"es step {step:.3f}")
        step = step * (1.5 if res["loss"] < best["loss"] else 1.5**-0.25)
        step = float(np.clip(step, 0.02, 0.4))
    best = min(results, key=lambda r: r["loss"])
    print("best:", json.dumps(best["point"]))
    print(summary(best, args.band_weight))
    print("Pareto front (lag 5 vs >40 % share, red share, clustering, other bands):")
    for r in pareto(results):
        print(json.dumps(r["point"]), summary(r, args.band_weight))


if __name__ == "__main__":
    main()
