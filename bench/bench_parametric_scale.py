"""Delta-gamma Cornish-Fisher VaR of a large book: the n x n route against the low-rank one (issue #10, scale).

Run ``python bench/bench_parametric_scale.py [names ...]`` (default 450 1000). For a book on ``names`` underlyings
with spot and vol factors (``2 x names`` factors) and a covariance of 299 days (the stored returns of
``bench_scale.py``'s 300-session history), it times one horizon of ``var.parametric_var``'s Cornish-Fisher work
(the moments and the Euler components at three confidences) both ways in this process: the n x n products
(``delta_gamma_moments`` and ``cornish_fisher_components`` on the dense covariance, what ran for every book
before) and ``var.LowRankQuadratic`` (what ``parametric_var`` uses when the look-back has fewer days than
factors), and prints the largest relative difference of the variance and of the components. The machine may be
shared: the load average is printed; compare the two columns, not runs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from risk_pipeline.quant.var import LowRankQuadratic, cornish_fisher_components, delta_gamma_moments

DAYS = 299
CONFIDENCES = (0.95, 0.975, 0.99)


def main(argv: list[str]) -> int:
    sizes = [int(x) for x in argv] or [450, 1000]
    print(f"load average {os.getloadavg()[0]:.1f}; {DAYS} days of factor history")
    print(
        f"{'names':>6}{'factors':>9}{'n x n, s':>10}{'low rank, s':>13}{'ratio':>8}"
        f"{'var rel diff':>14}{'comp rel diff':>15}"
    )
    for n_sym in sizes:
        n = 2 * n_sym
        rng = np.random.default_rng(0)
        root = rng.normal(0.0, 0.02, (DAYS, n))  # covariance root' root: rank DAYS
        b = rng.normal(0.0, 1e5, n)
        i = np.arange(n_sym)
        g = np.zeros((n, n))  # delta_gamma_exposures' structure: spot, vol and cross gamma per underlying
        g[i, i], g[n_sym + i, n_sym + i] = rng.normal(0.0, 4e6, n_sym), rng.normal(0.0, 1e6, n_sym)
        g[i, n_sym + i] = g[n_sym + i, i] = rng.normal(0.0, 2e6, n_sym)
        owner = np.concatenate([i, i])
        a_sym = rng.normal(0.0, 50.0, n_sym)
        t0 = time.perf_counter()
        cov = root.T @ root
        dense = delta_gamma_moments(float(a_sym.sum()), b, g, cov)
        dense_comp = [cornish_fisher_components(a_sym, b, g, cov, owner, n_sym, c) for c in CONFIDENCES]
        t1 = time.perf_counter()
        form = LowRankQuadratic.build(b, g, root, 1.0)
        low = form.moments(float(a_sym.sum()))
        low_comp = [form.components(a_sym, owner, n_sym, c) for c in CONFIDENCES]
        t2 = time.perf_counter()
        var_diff = abs(low.variance / dense.variance - 1.0)
        comp_diff = max(float(np.abs(x - y).max() / np.abs(y).max()) for x, y in zip(low_comp, dense_comp, strict=True))
        print(
            f"{n_sym:>6}{n:>9}{t1 - t0:>10.2f}{t2 - t1:>13.2f}{(t1 - t0) / (t2 - t1):>8.1f}"
            f"{var_diff:>14.1e}{comp_diff:>15.1e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
