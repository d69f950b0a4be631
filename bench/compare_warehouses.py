"""Compare every table of two warehouse copies (``bench_step_profile.py`` copies of one kept warehouse, one
materialized with the code before and one with the code after): rows, columns and values.

``python bench/compare_warehouses.py BEFORE.duckdb AFTER.duckdb``: per table, the row counts and the largest relative
difference of its numeric columns (0.0: bit for bit equal, NaN in the same cells), and whether its other columns are
equal; ``run_id`` and ``materialized_at`` (which differ between any two runs) are left out, and every column named by
``--skip COLUMN`` (repeatable: e.g. the solver's ``solve_seconds``, or a column only the code after writes). Exit
status 1 if a table differs.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import duckdb
import numpy as np
import pandas as pd

SKIP = {"run_id", "materialized_at"}


def tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE' order by 1, 2"
    ).fetchall()
    return [f'"{s}"."{t}"' for s, t in rows]


def frame(con: duckdb.DuckDBPyConnection, name: str, skip: set[str] = SKIP) -> pd.DataFrame:
    df = con.execute(f"select * from {name}").df()
    df = df[[c for c in df.columns if c not in skip]]
    return df.sort_values(list(df.columns), ignore_index=True, key=lambda s: s.astype(str))


def compare(a: pd.DataFrame, b: pd.DataFrame) -> tuple[bool, float]:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False, float("inf")
    worst = 0.0
    same = True
    for c in a.columns:
        x, y = a[c], b[c]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y) and x.dtype != bool:
            xv, yv = x.to_numpy(float), y.to_numpy(float)
            nan = np.isnan(xv) | np.isnan(yv)
            if not np.array_equal(np.isnan(xv), np.isnan(yv)):
                same = False
                continue
            d = np.abs(xv[~nan] - yv[~nan]) / np.maximum(np.abs(xv[~nan]), 1e-300)
            worst = max(worst, float(d.max()) if d.size else 0.0)
        elif not x.astype(str).equals(y.astype(str)):
            same = False
    return same and worst == 0.0, worst


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="DuckDB file of the warehouse written by the code before")
    parser.add_argument("after", help="DuckDB file of the warehouse written by the code after")
    parser.add_argument("--skip", action="append", default=[], help="a column left out of every table (repeatable)")
    args = parser.parse_args(argv)
    skip = SKIP | set(args.skip)
    warnings.simplefilter("ignore")  # pandas' deprecation notices from duckdb's frames
    before, after = (duckdb.connect(p, read_only=True) for p in (args.before, args.after))
    names = tables(before)
    if names != tables(after):
        print("different table lists")
        return 1
    bad = 0
    for name in names:
        a, b = frame(before, name, skip), frame(after, name, skip)
        ok, worst = compare(a, b)
        bad += not ok
        state = "equal" if ok else "DIFFERENT"
        print(f"{state:9s} {name}: {len(a)} / {len(b)} rows, largest relative difference {worst:.3g}")
    print(f"{len(names)} tables, {bad} different")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
