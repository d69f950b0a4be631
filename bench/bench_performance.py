"""Cost of the returns ratios per row of performance_analytics: ``quant.performance.returns_metrics`` (empyrical)
against a plain-numpy evaluation of the same formulas, on one 252-session series (the largest rolling window),
and the agreement of the two.

Prints the time per call of each (best of 5 runs of 200 calls) and the ratio, and the largest relative
difference between the two over every ratio they share.
"""

from __future__ import annotations

import time

import numpy as np

from risk_pipeline.quant.performance import returns_metrics


def numpy_reference(r: np.ndarray, ann: int = 252) -> dict[str, float]:
    """The shared ratios written out with numpy only."""
    w = np.cumprod(1 + r)
    peak = np.maximum.accumulate(np.r_[1.0, w])[1:]
    mdd = float((1 - w / peak).max())
    cum = float(w[-1] - 1)
    annual = (1 + cum) ** (ann / r.size) - 1
    sd = float(r.std(ddof=1))
    down = float(np.sqrt(np.mean(np.minimum(r, 0) ** 2)) * np.sqrt(ann))
    return {
        "cumulative_return": cum,
        "annual_return": annual,
        "annual_volatility": sd * np.sqrt(ann),
        "sharpe_ratio": r.mean() / sd * np.sqrt(ann),
        "sortino_ratio": r.mean() * ann / down,
        "max_drawdown": mdd,
        "calmar_ratio": annual / mdd,
        "tail_ratio": abs(np.percentile(r, 95)) / abs(np.percentile(r, 5)),
    }


def best(fn, r: np.ndarray, calls: int = 200) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(r)
        times.append((time.perf_counter() - t0) / calls)
    return min(times)


def main() -> None:
    r = np.random.default_rng(7).normal(0.0004, 0.012, 252)
    ours, ref = returns_metrics(r).as_dict(), numpy_reference(r)
    worst = max(abs(ours[k] - v) / abs(v) for k, v in ref.items())
    t_ours, t_ref = best(returns_metrics, r), best(numpy_reference, r)
    print(f"returns_metrics (empyrical + own measures), 252 sessions: {t_ours * 1e6:.0f} us per call")
    print(f"numpy reference of the shared ratios:                     {t_ref * 1e6:.0f} us per call")
    print(f"ratio: {t_ours / t_ref:.1f}x; largest relative difference of the shared ratios: {worst:.1e}")


if __name__ == "__main__":
    main()
