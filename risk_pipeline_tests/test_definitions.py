"""Every definition loads; the asset graph matches the reviewed snapshot (update with UPDATE_SNAPSHOTS=1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from risk_pipeline.definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_specs.json"


def _graph_snapshot() -> dict:
    graph = defs.resolve_asset_graph()
    specs = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        specs[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "partitioned": node.partitions_def is not None,
            "checks": sorted(c.name for c in graph.get_check_keys_for_assets({key})),
        }
    return specs


def test_definitions_load_and_every_asset_is_described() -> None:
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.owners, key
        assert node.kinds, key
    for name in ("market_data_job", "price_history_job", "end_of_day_job"):
        assert defs.resolve_job_def(name) is not None


def test_asset_graph_matches_snapshot() -> None:
    current = _graph_snapshot()
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_raw_tables_have_a_blocking_check_per_rule() -> None:
    from risk_pipeline.quality import rule_names

    checks = {(c.asset_key.to_user_string(), c.name) for c in defs.resolve_asset_graph().asset_check_keys}
    for table in (
        "market_prices",
        "option_quotes",
        "rates_curve",
        "dividend_yields",
        "event_calendar",
        "positions",
    ):
        for rule in rule_names(table):
            assert (table, rule) in checks
    spec = next(iter(defs.resolve_assets_def("market_prices").check_specs))
    assert spec.blocking
    assert isinstance(defs.resolve_assets_def("market_prices").partitions_def, dg.TimeWindowPartitionsDefinition)


def test_dg_check_defs_passes(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dg_cli = Path(sys.executable).parent / "dg"
    result = subprocess.run(
        [str(dg_cli), "check", "defs"],
        cwd=Path(__file__).parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr
