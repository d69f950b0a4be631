"""Files shipped with the project and the default locations of what it writes (no Dagster, no I/O)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
DEFAULT_WAREHOUSE_PATH = PROJECT_ROOT / "warehouse" / "risk_warehouse.duckdb"
DEFAULT_EXPORTS_DIR = PROJECT_ROOT / "exports"
MACRO_EVENTS_FILE = DATA_DIR / "event_calendar" / "macro_events.csv"
SAMPLE_FOLDER = DATA_DIR / "sample_folder"
BOOKS_FILE = DATA_DIR / "books.yaml"
LIMITS_FILE = DATA_DIR / "limits" / "limits.yaml"
SCENARIOS_FILE = DATA_DIR / "stress" / "scenarios.yaml"
SQL_MODELS_DIR = PROJECT_ROOT / "dbt_like_sql"
COMPLIANCE_RULES_FILE = DATA_DIR / "compliance" / "rules.yaml"
ALERTS_FILE = DATA_DIR / "alerts.yaml"


def warehouse_url() -> str:
    """``RISK_PIPELINE_WAREHOUSE_URL`` (a ``postgresql://`` URL or a DuckDB path), else the embedded default."""
    return os.environ.get("RISK_PIPELINE_WAREHOUSE_URL") or str(DEFAULT_WAREHOUSE_PATH)
