"""A small dbt-like runner: SQL view models with ``{{ ref('name') }}`` dependencies.

Each ``dbt_like_sql/<name>.sql`` holds one SELECT. ``{{ ref('x') }}`` names a contract table or
another model; the runner orders models so every model comes after what it references, then
(re)creates each as view ``risk.<name>`` in one transaction: views are dropped in reverse order
and created in order, so a changed column list never trips ``CREATE OR REPLACE``. The SQL must
be portable between DuckDB and PostgreSQL.

A model may have ``dbt_like_sql/row_counts/<name>.sql``: one SELECT giving the view's row count as
column ``n`` without building the view's rows (the serving asset reports it as ``dagster/row_count``);
a model without one is counted with ``COUNT(*)`` of its view.
"""

from __future__ import annotations

import graphlib
import re
from dataclasses import dataclass
from pathlib import Path

from risk_pipeline.contracts import TABLES
from risk_pipeline.warehouse import SCHEMA, Warehouse

REF = re.compile(r"\{\{\s*ref\(\s*['\"]([a-z_][a-z0-9_]*)['\"]\s*\)\s*\}\}")
#: ``-- requires: a, b``: the model is built only where those tables are part of the contracts (optional layers).
REQUIRES = re.compile(r"^--\s*requires:\s*(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class SqlModel:
    name: str
    path: Path
    sql: str
    refs: tuple[str, ...]
    #: The SELECT of ``row_counts/<name>.sql`` (column ``n``: the view's row count), if the model has one.
    count_sql: str | None = None

    def compiled(self) -> str:
        """The SELECT with every ref replaced by its schema-qualified name."""
        return _compile(self.sql)

    def row_count_query(self) -> str:
        """A query whose column ``n`` is the view's number of rows: the model's count SQL, else ``COUNT(*)``."""
        if self.count_sql is None:
            return f"SELECT COUNT(*) AS n FROM {SCHEMA}.{self.name}"
        return _compile(self.count_sql)


def _compile(sql: str) -> str:
    return REF.sub(lambda m: f"{SCHEMA}.{m.group(1)}", sql).strip().rstrip(";")


def load_models(folder: Path) -> list[SqlModel]:
    """Models of ``folder`` in dependency order; unknown refs and cycles raise ValueError."""
    models = {}
    for path in sorted(folder.glob("*.sql")):
        sql = path.read_text()
        required = [t.strip() for m in REQUIRES.findall(sql) for t in m.split(",") if t.strip()]
        if any(t not in TABLES for t in required):
            continue  # a view over a layer this deployment does not have
        count_path = folder / "row_counts" / path.name
        count_sql = count_path.read_text() if count_path.is_file() else None
        models[path.stem] = SqlModel(path.stem, path, sql, tuple(dict.fromkeys(REF.findall(sql))), count_sql)
    for m in models.values():
        unknown = [r for r in m.refs if r not in models and r not in TABLES]
        if unknown:
            raise ValueError(f"{m.path.name}: ref to unknown model or table {unknown}")
        if m.count_sql is not None:
            unknown = [r for r in REF.findall(m.count_sql) if r not in models and r not in TABLES]
            if unknown:
                raise ValueError(f"row_counts/{m.path.name}: ref to unknown model or table {unknown}")
    graph = {name: {r for r in m.refs if r in models} for name, m in models.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise ValueError(f"dbt_like_sql: dependency cycle {exc.args[1]}") from exc
    return [models[n] for n in order]


def apply_models(warehouse: Warehouse, folder: Path) -> list[SqlModel]:
    """(Re)create every model as a view, in one transaction; returns them in creation order."""
    models = load_models(folder)
    with warehouse.connect() as con, warehouse._transaction(con):
        for m in reversed(models):
            warehouse._execute(con, f"DROP VIEW IF EXISTS {SCHEMA}.{m.name}")
        for m in models:
            warehouse._execute(con, f"CREATE VIEW {SCHEMA}.{m.name} AS\n{m.compiled()}")
    return models
