"""The dbt-like runner: ref() ordering, unknown refs, cycles, and the shipped models on both engines."""

from __future__ import annotations

from pathlib import Path

import pytest

from risk_pipeline.paths import SQL_MODELS_DIR
from risk_pipeline.sql_models import apply_models, load_models
from risk_pipeline.warehouse import Warehouse


def _write(folder: Path, **models: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name, sql in models.items():
        (folder / f"{name}.sql").write_text(sql)
    return folder


def test_models_come_after_what_they_reference(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "m",
        a_top="select * from {{ ref('m_mid') }}",
        m_mid="select symbol from {{ ref('z_base') }}",
        z_base="select symbol from {{ ref('market_prices') }}",
    )
    assert [m.name for m in load_models(folder)] == ["z_base", "m_mid", "a_top"]


def test_unknown_ref_and_cycle_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model or table"):
        load_models(_write(tmp_path / "u", a="select * from {{ ref('nope') }}"))
    with pytest.raises(ValueError, match="cycle"):
        load_models(_write(tmp_path / "c", a="select * from {{ ref('b') }}", b="select * from {{ ref('a') }}"))


def test_shipped_models_apply_twice_on_both_engines(warehouse: Warehouse) -> None:
    names = [m.name for m in apply_models(warehouse, SQL_MODELS_DIR)]
    assert {"latest_market_snapshot", "data_quality_summary"} <= set(names)
    apply_models(warehouse, SQL_MODELS_DIR)  # re-applying is idempotent
    for name in names:
        assert len(warehouse.query(f"SELECT * FROM risk.{name}")) == 0
