"""CPU seconds and peak memory of ``correlation_matrix``'s table and of what ``position_sizing`` reads of it.

``python bench/bench_corr_scale.py [--symbols 500 3000] [--repeat 1] [--sample 300]``: synthetic daily log returns
(63 sessions; a market factor, 12 sector factors and noise, so some pairs are above the 0.70 correlation cap) for
``--symbols`` names, then, each in its own process (peak resident memory: a 5 ms sampler's peak rise above the
process after its imports, and ``ru_maxrss``, which Linux carries over from the parent), the code of ``main`` ("old":
the asset's frame of object columns from ``np.meshgrid`` and ``main``'s ``Warehouse`` from ``git show
main:risk_pipeline/warehouse.py``) and the code of this checkout ("new": ``sizing.assets.correlation_rows`` and this
``Warehouse``), old and new alternating:

* ``build``: ``np.corrcoef``, the clusters, the asset's validity check, its metadata (the diagonal's clusters, the
  symbol count) and ``Warehouse.write_many`` (contract checks, then the DuckDB insert) into a fresh DuckDB file in a
  temporary folder. The two files' tables are then compared row for row (every column but ``run_id`` and
  ``materialized_at``, DuckDB ``EXCEPT ALL`` both ways).
* ``read``: what ``position_sizing`` takes of the stored matrix, read from the new build's file: old, the whole matrix
  (``Warehouse.read``), its pivot and the clusters of every row; new, ``sizing.assets.correlation_inputs`` (the
  diagonal's clusters and the pairs at or above the lowest cap). Then the caps' inputs of ``size_book`` for one book
  holding every name with every name signalled: the other names' exposure in the same sector and cluster and the held
  names correlated above 0.70. Old (the Python passes over the held names per signalled name, the matrix's ``.loc``)
  runs on the first ``--sample`` signalled names only; new on all of them; their answers on the sample are compared.
  The old read runs up to ``--old-read-max`` names (1,000: at 3,000 it peaked at 6.07 GiB).

The figures are printed with the load average; compare the ratios (the machine is shared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AS_OF = "2026-12-03T21:00:00+00:00"
SESSION = dt.date(2026, 12, 3)
RUN_ID = "8c5c2a7e-0b0e-4a8a-9d59-0c6b8d1f1a11"
CAP = 0.70
SECTORS = 12


class Peak:
    """Resident memory sampled every 5 ms on a daemon thread: the peak since ``reset``."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.now()
        self.peak = self.base
        threading.Thread(target=self._run, daemon=True).start()

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            time.sleep(0.005)

    def reset(self) -> None:
        self.base = self.peak = self.now()

    def rise_gib(self) -> float:
        return (max(self.peak, self.now()) - self.base) / 2**30


def returns(n: int, seed: int = 11):
    import numpy as np

    rng = np.random.default_rng(seed)
    sector = np.arange(n) % SECTORS
    market = rng.normal(0, 0.01, (63, 1))
    factors = rng.normal(0, 0.01, (63, SECTORS))
    load = rng.uniform(0.0, 2.5, n)
    return market * rng.uniform(0.5, 1.5, n) + factors[:, sector] * load + rng.normal(0, 0.01, (63, n))


def symbols_of(n: int) -> list[str]:
    return [f"S{i:05d}" for i in range(n)]


def main_warehouse():
    """``main``'s warehouse module (the code before), loaded from git."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", "main:risk_pipeline/warehouse.py"], check=True, capture_output=True, text=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix="corr_scale_main_") as folder:
        path = Path(folder) / "warehouse_main.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location("warehouse_main", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["warehouse_main"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------- build
def build_old(as_of, symbols, corr, labels, window, min_cc):
    """The asset's table and metadata as on main (np.meshgrid, object columns, the diagonal by comparison)."""
    import numpy as np
    import pandas as pd

    from risk_pipeline.contracts import table

    n = len(symbols)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    frames = [
        pd.DataFrame(
            {
                "as_of": as_of,
                "as_of_date": SESSION,
                "symbol_a": np.array(symbols, dtype=object)[i.ravel()],
                "symbol_b": np.array(symbols, dtype=object)[j.ravel()],
                "correlation": corr.ravel(),
                "window_days": window,
                "cluster_a": labels[i.ravel()],
                "cluster_b": labels[j.ravel()],
                "min_cluster_correlation": min_cc,
            }
        )
    ]
    out = pd.concat(frames, ignore_index=True)
    out = out.reindex(columns=table("correlation_matrix").data_column_names)
    clusters = out[out["symbol_a"] == out["symbol_b"]][["symbol_a", "cluster_a"]]
    meta = (int(out["symbol_a"].nunique()), clusters.rename(columns={"symbol_a": "symbol", "cluster_a": "cluster"}))
    return out, meta


def build_new(as_of, symbols, corr, labels, window, min_cc):
    """The asset's table and metadata with this checkout's code."""
    import pandas as pd

    from risk_pipeline.contracts import table
    from risk_pipeline.defs.sizing.assets import correlation_rows

    frames = [correlation_rows(as_of, SESSION, symbols, corr, labels, window, min_cc)]
    diagonals = [pd.DataFrame({"symbol": symbols, "cluster": labels})]
    out = frames[0]
    del frames
    out = out.reindex(columns=table("correlation_matrix").data_column_names)
    clusters = pd.concat(diagonals, ignore_index=True)
    return out, (int(clusters["symbol"].nunique()), clusters)


def worker_build(code: str, n: int, db: str) -> dict:
    import numpy as np
    import pandas as pd

    import risk_pipeline.defs.sizing.assets  # noqa: F401  (the same imports for both codes)
    from risk_pipeline.defs.common import markdown_table
    from risk_pipeline.quant import sizing as sz

    wh_module = main_warehouse() if code == "old" else importlib.import_module("risk_pipeline.warehouse")
    r = returns(n)
    symbols = symbols_of(n)
    as_of = pd.Timestamp(AS_OF)
    wh = wh_module.Warehouse(db)
    wh.ensure_tables(["correlation_matrix"])
    peak = Peak()
    t0 = time.process_time()
    corr = np.atleast_2d(np.corrcoef(r, rowvar=False))
    labels = sz.correlation_clusters(corr, 0.5)
    t_corr = time.process_time()
    out, (count, clusters) = (build_old if code == "old" else build_new)(as_of, symbols, corr, labels, 63, 0.5)
    ok = np.allclose(corr, corr.T) and np.allclose(np.diag(corr), 1.0) and np.all(np.abs(corr) <= 1 + 1e-12)
    ok = ok and np.linalg.eigvalsh(corr).min() >= -1e-10
    md = markdown_table(clusters, 60)
    t_frame = time.process_time()
    written = wh.write_many([("correlation_matrix", out, [{"as_of": as_of}])], run_id=RUN_ID)
    t_end = time.process_time()
    return {
        "cpu_s": t_end - t0,
        "cpu_corr_clusters_s": t_corr - t0,
        "cpu_frame_check_meta_s": t_frame - t_corr,
        "cpu_write_s": t_end - t_frame,
        "rise_gib": peak.rise_gib(),
        "maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rows": written["correlation_matrix"],
        "valid": bool(ok),
        "symbols": count,
        "clusters_md": md,
    }


# -------------------------------------------------------------------------------------------------- read
def caps_old(symbols, exposure, sector, corr, clusters, sample):
    """size_book's per-symbol selections as on main (Python passes over the held names, ``corr.loc``)."""
    out = {}
    for s in symbols[:sample]:
        sec = sector.get(s)
        sec_other = float(exposure[[k for k in exposure.index if sector.get(k) == sec and k != s]].sum())
        cl = clusters.get(s)
        cl_other = float(exposure[[k for k in exposure.index if clusters.get(k) == cl and k != s]].sum()) if cl else 0.0
        held = [k for k in exposure.index if k != s and exposure[k] > 0]
        too_close = [k for k in held if k in corr.columns and corr.loc[s, k] > CAP] if s in corr.index else []
        out[s] = (sec_other, cl_other, too_close)
    return out


def caps_new(symbols, exposure, sector, correlated, clusters):
    """The same selections as ``size_book`` now makes them (masks over the held names, the pairs above the cap)."""
    import numpy as np

    held_names = exposure.index.to_numpy(object)
    held_sector = np.array([sector.get(k) for k in held_names], dtype=object)
    held_cluster = np.array([clusters.get(k) for k in held_names], dtype=object)
    held_rank = {k: r for r, k in enumerate(held_names[exposure.to_numpy(float) > 0])}
    out = {}
    for s in symbols:
        sec = sector.get(s)
        others = held_names != s
        sec_other = float(exposure[(held_sector == sec) & others].sum())
        cl = clusters.get(s)
        cl_other = float(exposure[(held_cluster == cl) & others].sum()) if cl else 0.0
        near = [k for k, rho in correlated.get(s, {}).items() if k != s and k in held_rank and rho > CAP]
        out[s] = (sec_other, cl_other, sorted(near, key=held_rank.__getitem__))
    return out


def worker_read(code: str, n: int, db: str, sample: int) -> dict:
    import numpy as np
    import pandas as pd

    from risk_pipeline.defs.sizing import assets
    from risk_pipeline.warehouse import Warehouse

    wh = Warehouse(db, create=False)
    as_of = pd.Timestamp(AS_OF)
    symbols = symbols_of(n)
    rng = np.random.default_rng(5)
    exposure = pd.Series(rng.uniform(0.0, 1e6, n), index=symbols).where(rng.random(n) > 0.1, 0.0)
    sector = {s: f"sector{i % SECTORS}" for i, s in enumerate(symbols)}
    peak = Peak()
    t0 = time.process_time()
    if code == "old":
        cm = wh.read("correlation_matrix", {"as_of": as_of})
        corr = cm.pivot(index="symbol_a", columns="symbol_b", values="correlation") if len(cm) else pd.DataFrame()
        clusters = dict(zip(cm["symbol_a"], cm["cluster_a"], strict=True)) if len(cm) else {}
        pairs = -1
    else:
        clusters, correlated = assets.correlation_inputs(wh, as_of, [CAP, 0.9, 0.95])
        pairs = sum(len(v) for v in correlated.values())
    t_read = time.process_time()
    rise_read = peak.rise_gib()
    if code == "old":
        caps = caps_old(symbols, exposure, sector, corr, clusters, sample)
    else:
        caps = caps_new(symbols, exposure, sector, correlated, clusters)
    t_end = time.process_time()
    got = {s: caps[s] for s in symbols[:sample]}
    return {
        "cpu_read_s": t_read - t0,
        "cpu_caps_s": t_end - t_read,
        "caps_symbols": min(sample, n) if code == "old" else n,
        "rise_read_gib": rise_read,
        "rise_gib": peak.rise_gib(),
        "maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "pairs_read": pairs,
        "clusters": {str(k): int(v) for k, v in clusters.items()},
        "caps": got,
    }


# ------------------------------------------------------------------------------------------------ parent
def run(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    got = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if got.returncode:
        raise RuntimeError(f"worker {args} failed:\n{got.stderr[-3000:]}")
    return json.loads(got.stdout.strip().splitlines()[-1])


def same_tables(a: str, b: str) -> tuple[int, int, int]:
    """(rows of a, rows only in a, rows only in b) of correlation_matrix, lineage columns left out."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
    con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
    cols = (
        "as_of, as_of_date, symbol_a, symbol_b, correlation, window_days, cluster_a, cluster_b, min_cluster_correlation"
    )
    q = "SELECT {c} FROM {x}.risk.correlation_matrix EXCEPT ALL SELECT {c} FROM {y}.risk.correlation_matrix"
    only_a = con.execute(f"SELECT COUNT(*) FROM ({q.format(c=cols, x='a', y='b')})").fetchone()[0]
    only_b = con.execute(f"SELECT COUNT(*) FROM ({q.format(c=cols, x='b', y='a')})").fetchone()[0]
    rows = con.execute("SELECT COUNT(*) FROM a.risk.correlation_matrix").fetchone()[0]
    return rows, only_a, only_b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, nargs="+", default=[500, 3000])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--sample", type=int, default=300, help="signalled names the old caps' loop runs on")
    ap.add_argument(
        "--old-read-max",
        type=int,
        default=1000,
        help="the old read (the whole matrix as a frame: 6.1 GiB peak at 3,000 names) runs up to this many names",
    )
    ap.add_argument("--worker", choices=["build", "read", "compare"])
    ap.add_argument("--code", choices=["old", "new"])
    ap.add_argument("--db")
    a = ap.parse_args(argv)
    if a.worker == "build":
        print(json.dumps(worker_build(a.code, a.symbols[0], a.db)))
        return 0
    if a.worker == "read":
        print(json.dumps(worker_read(a.code, a.symbols[0], a.db, a.sample)))
        return 0
    if a.worker == "compare":  # in its own process: the parent's peak would be inherited by later workers' ru_maxrss
        print(json.dumps(same_tables(*a.db.split(","))))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_corr_scale_") as folder:  # 9 million rows: 1.3 GB of files
        return compare_runs(a, Path(folder))


def compare_runs(a: argparse.Namespace, tmp: Path) -> int:
    failures = 0
    for n in a.symbols:
        for rep in range(a.repeat):
            load = os.getloadavg()[0]
            got = {}
            for code in ("old", "new") if rep % 2 == 0 else ("new", "old"):
                db = tmp / f"{code}_{n}_{rep}.duckdb"
                got[code] = run("--worker", "build", "--code", code, "--symbols", str(n), "--db", str(db))
            pair = f"{tmp / f'old_{n}_{rep}.duckdb'},{tmp / f'new_{n}_{rep}.duckdb'}"
            rows, only_old, only_new = run("--worker", "compare", "--db", pair)
            meta_same = all(got["old"][k] == got["new"][k] for k in ("symbols", "clusters_md", "valid", "rows"))
            print(f"\n{n} names, build + write ({rows:,} rows), load {load:.1f}:")
            for code in ("old", "new"):
                g = got[code]
                print(
                    f"  {code}: {g['cpu_s']:7.2f} CPU s (corrcoef+clusters {g['cpu_corr_clusters_s']:.2f}, frame+check+"
                    f"metadata {g['cpu_frame_check_meta_s']:.2f}, write_many {g['cpu_write_s']:.2f}); peak rise "
                    f"{g['rise_gib']:.2f} GiB, ru_maxrss {g['maxrss_gib']:.2f} GiB"
                )
            ratio = got["old"]["cpu_s"] / got["new"]["cpu_s"]
            mem = got["old"]["rise_gib"] / max(got["new"]["rise_gib"], 1e-9)
            print(f"  old/new: CPU {ratio:.2f}x, peak rise {mem:.2f}x")
            print(f"  tables: rows only in old {only_old}, only in new {only_new}; metadata equal: {meta_same}")
            failures += bool(only_old or only_new or not meta_same)
            load = os.getloadavg()[0]
            db = str(tmp / f"new_{n}_{rep}.duckdb")
            rd = {}
            codes = ("old", "new") if n <= a.old_read_max else ("new",)
            for code in codes if rep % 2 == 0 else codes[::-1]:
                rd[code] = run(
                    "--worker", "read", "--code", code, "--symbols", str(n), "--db", db, "--sample", str(a.sample)
                )
            print(f"{n} names, position_sizing's read of the matrix and the caps' selections, load {load:.1f}:")
            for code in codes:
                g = rd[code]
                pairs = f", {g['pairs_read']:,} pairs at or above the lowest cap" if g["pairs_read"] >= 0 else ""
                print(
                    f"  {code}: read {g['cpu_read_s']:7.2f} CPU s (peak rise {g['rise_read_gib']:.2f} GiB{pairs}); "
                    f"caps {g['cpu_caps_s']:.2f} CPU s for {g['caps_symbols']:,} signalled names "
                    f"({1e3 * g['cpu_caps_s'] / g['caps_symbols']:.2f} ms each); peak rise {g['rise_gib']:.2f} GiB, "
                    f"ru_maxrss {g['maxrss_gib']:.2f} GiB"
                )
            if "old" not in rd:
                print(f"  old: not run above --old-read-max {a.old_read_max} names")
                continue
            same = rd["old"]["clusters"] == rd["new"]["clusters"] and rd["old"]["caps"] == rd["new"]["caps"]
            close = sum(len(v[2]) for v in rd["new"]["caps"].values())
            print(
                f"  clusters and the caps' selections on {min(a.sample, n)} names ({close:,} correlated held names): "
                f"{'equal' if same else 'DIFFERENT'}"
            )
            failures += not same
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
