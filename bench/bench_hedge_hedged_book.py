"""CPU seconds of a hedged book's revaluations at a larger book's size: in full (the code before) against the book's
P&L plus the lines' (``hedged_pnl``, ``hedged_rule_pnl``).

``python bench/bench_hedge_hedged_book.py KEPT COPY [--book vol_overlay] [--copies 10] [--lines 10] [--date D]``:
copies the kept warehouse ``KEPT`` (``bench_pipeline.py --keep``, end of day done) to ``COPY`` and reads the book's
``position_greeks``; its positions are repeated ``--copies`` times (each copy's option vols scaled by ``1 + 1e-4 k``, so
no two copies price alike: at 500 names, 10 copies of ``vol_overlay`` are about its 3,000-name size), with the
hedging layer's scenario blocks (the stress search of the whole book) and the book's P&L; the hedge is ``--lines``
of its options (3 contracts each, vol +1 %), appended with ``combine``. Both paths are timed twice on the CPU clock
(``time.process_time``), old-new then new-old, and their results compared (largest relative difference).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kept")
    ap.add_argument("copy")
    ap.add_argument("--book", default="vol_overlay")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--lines", type=int, default=10)
    ap.add_argument("--date", default="2026-12-03")
    a = ap.parse_args(argv)
    copy = Path(a.copy)
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(a.kept, copy)
    (copy / "risk_warehouse.duckdb.writer.lock").unlink(missing_ok=True)

    from risk_pipeline.defs.hedging.inputs import AMERICAN, scenario_blocks, stress_block, universe
    from risk_pipeline.paths import SCENARIOS_FILE
    from risk_pipeline.quant.hedging import _subset, combine, hedged_pnl, hedged_rule_pnl, scenario_pnl
    from risk_pipeline.quant.stress import load_scenarios
    from risk_pipeline.queries import latest_as_of
    from risk_pipeline.warehouse import Warehouse

    wh = Warehouse(str(copy / "risk_warehouse.duckdb"), create=False)
    session = dt.date.fromisoformat(a.date)
    as_of = latest_as_of(wh, "position_greeks", session)
    pos = wh.read("position_greeks", {"as_of": as_of})
    one = pos[pos["book"] == a.book].reset_index(drop=True)
    parts = []
    for k in range(a.copies):
        r = one.copy()
        r["position_id"] = r["position_id"] + f"#{k}"
        opt = r["instrument_type"] == "option"
        r.loc[opt, "implied_vol"] = r.loc[opt, "implied_vol"] * (1 + 1e-4 * k)
        parts.append(r)
    rows = pd.concat(parts, ignore_index=True)
    library = load_scenarios(SCENARIOS_FILE)
    p = universe(rows, {})
    t = time.process_time()
    blocks = scenario_blocks(wh, session, p, rows, library)
    t_blocks = time.process_time() - t
    t = time.process_time()
    book_pnl = np.concatenate([scenario_pnl(p, sc, h, AMERICAN) for sc, h in blocks.blocks()])
    t_book = time.process_time() - t
    n_stress = blocks.stress.n_scenarios
    opt = np.flatnonzero(np.asarray(p.is_option))
    pick = opt[np.linspace(0, opt.size - 1, a.lines).astype(int)]
    lines = _subset(p, pick)
    lines = replace(
        lines,
        quantity=np.full(a.lines, 3.0),
        implied_vol=np.asarray(lines.implied_vol) * 1.01,
        position_id=tuple(f"hedge-{i}" for i in range(a.lines)),
    )
    hedged = combine(p, lines)
    t = time.process_time()
    block = stress_block(hedged, rows, library, blocks.stress_vol, blocks.stress)
    t_block = time.process_time() - t
    cpu: dict[str, list[float]] = {"old": [], "new": []}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for code in ("old", "new", "new", "old"):
        t = time.process_time()
        if code == "old":
            after = np.concatenate([scenario_pnl(hedged, sc, h, AMERICAN) for sc, h in blocks.blocks()])
            stressed = scenario_pnl(hedged, block, 0.0, AMERICAN)
        else:
            after = hedged_pnl(book_pnl, hedged, p.n_positions, blocks.blocks(), AMERICAN)
            stressed = hedged_rule_pnl(book_pnl[:n_stress], blocks.stress, hedged, p.n_positions, block)
        cpu[code].append(time.process_time() - t)
        out[code] = (after, stressed)

    def rel(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1e-300)))

    print(
        f"{a.book} x {a.copies}: {p.n_positions:,} positions, {book_pnl.size} scenarios; stress search "
        f"{t_blocks:.1f} CPU s, book revaluation {t_book:.1f}, hedged book's stress block {t_block:.1f}"
    )
    print(f"hedged revaluations: old {', '.join(f'{c:.2f}' for c in cpu['old'])} CPU s, "
          f"new {', '.join(f'{c:.2f}' for c in cpu['new'])} CPU s")  # fmt: skip
    print(
        f"largest relative difference: scenarios {rel(out['old'][0], out['new'][0]):.2e}, "
        f"hedged stress {rel(out['old'][1], out['new'][1]):.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
