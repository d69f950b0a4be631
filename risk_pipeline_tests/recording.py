"""A warehouse that records which tables each Dagster step reads (for the lineage test)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import dagster as dg
import pandas as pd

from risk_pipeline.resources import WarehouseResource
from risk_pipeline.warehouse import Warehouse

_TABLE_IN_SQL = re.compile(r"\brisk\.([a-z_][a-z0-9_]*)", re.IGNORECASE)


def _current_step_keys() -> frozenset[str] | None:
    """Asset keys of the executing step (None outside an asset step)."""
    try:
        ctx = dg.AssetExecutionContext.get()
    except Exception:
        return None
    return frozenset(k.to_user_string() for k in ctx.assets_def.keys)


class RecordingWarehouse(Warehouse):
    """Warehouse whose every read (read, query, table_exists, row_count) is logged per step."""

    #: step asset keys -> tables read; shared by every instance of a test session.
    reads: ClassVar[dict[frozenset[str], set[str]]] = defaultdict(set)

    def _record(self, tables: Sequence[str]) -> None:
        keys = _current_step_keys()
        if keys is not None:
            self.reads[keys].update(tables)

    def read(self, name: str, where: Mapping[str, Any] | None = None, **kwargs: Any) -> pd.DataFrame:
        self._record([name])
        return super().read(name, where, **kwargs)

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        self._record(_TABLE_IN_SQL.findall(sql))
        return super().query(sql, params)

    def table_exists(self, name: str) -> bool:
        self._record([name])
        return super().table_exists(name)

    def row_count(self, name: str, where: Mapping[str, Any] | None = None) -> int:
        self._record([name])
        return super().row_count(name, where)


class RecordingWarehouseResource(WarehouseResource):
    """The warehouse resource, recording reads."""

    def _open(self) -> Warehouse:
        return RecordingWarehouse(self.url)
