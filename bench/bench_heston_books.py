"""``stress_model_consistent``'s Heston shifts of every book of one valuation, the code before and after, alternated
in one process.

``python bench/bench_heston_books.py WAREHOUSE OLD_HESTON_STRESS_PY [--date 2026-12-03] [--repeats 10]``: reads the
books' positions and ``heston_parameters`` from ``WAREHOUSE`` (a copy: read only), makes each book's library scenario
set, and times (``time.process_time``) the old file's ``heston_vol_shifts_with_fallback`` per book against this
tree's ``heston_vol_shifts_of_books`` over all books, old/new and new/old in turn (the same kernels and ``heston.py``),
after checking their shifts and fallbacks equal bit for bit; prints every figure, the medians and the median pair
difference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import risk_pipeline  # noqa: E402, F401  (the package's OpenBLAS setting before numpy)

# isort: split
import numpy as np  # noqa: E402

from risk_pipeline.defs.risk.var import book_portfolio  # noqa: E402
from risk_pipeline.paths import SCENARIOS_FILE  # noqa: E402
from risk_pipeline.quant import heston_stress as new  # noqa: E402
from risk_pipeline.quant.stress import load_scenarios, scenario_set  # noqa: E402
from risk_pipeline.queries import book_valuations  # noqa: E402
from risk_pipeline.warehouse import Warehouse  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("warehouse")
    ap.add_argument("old", help="the heston_stress.py of the code before")
    ap.add_argument("--date", default="2026-12-03")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("heston_stress_old", args.old)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    sys.modules["heston_stress_old"] = old
    spec.loader.exec_module(old)
    wh = Warehouse(args.warehouse)
    library = load_scenarios(str(SCENARIOS_FILE))
    books = []
    for v in book_valuations(wh, [dt.date.fromisoformat(args.date)]):
        heston = wh.read("heston_parameters", {"as_of": v.as_of}).set_index("underlying")
        p = book_portfolio(v.rows)
        symbols = list(p.symbols)
        betas = v.rows.groupby("symbol")["beta"].first().reindex(symbols).fillna(1.0).to_numpy()
        sectors = v.rows.groupby("symbol")["sector"].first().reindex(symbols).tolist()
        sc = scenario_set(p, list(library.scenarios), betas, sectors)
        params = heston.reindex(symbols)[["v0", "kappa", "theta", "xi", "rho"]].to_numpy(float)
        books.append((p, params, sc.spot_shock_rel))
        print(f"{v.book}: {p.n_positions} positions, {int(p.is_option.sum())} options, {sc.n_scenarios} scenarios")

    def f_old() -> list:
        return [old.heston_vol_shifts_with_fallback(*b) for b in books]

    def f_new() -> list:
        return new.heston_vol_shifts_of_books(books)

    for x, y in zip(f_old(), f_new(), strict=True):
        assert x.shift.tobytes() == y.shift.tobytes() and x.fallback.tobytes() == y.fallback.tobytes()
    print("shifts and fallbacks equal bit for bit")
    times: dict[str, list[float]] = {"old": [], "new": []}
    for i in range(args.repeats):
        for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
            t = time.process_time()
            (f_old if name == "old" else f_new)()
            times[name].append(time.process_time() - t)
    for name, ts in times.items():
        print(name, [round(x, 3) for x in ts], "median", round(float(np.median(ts)), 3))
    diff = np.array(times["new"]) - np.array(times["old"])
    print(
        "pair differences, median", round(float(np.median(diff)), 3), "lower in", int((diff < 0).sum()), "of", diff.size
    )


if __name__ == "__main__":
    main()
