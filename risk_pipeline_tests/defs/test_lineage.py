"""The UI's lineage is what runs: every table a step reads is the step's own asset or a declared upstream asset."""

from __future__ import annotations

import dagster as dg

from risk_pipeline.definitions import defs
from risk_pipeline.warehouse import Warehouse
from risk_pipeline_tests.recording import RecordingWarehouse


def _declared_inputs(keys: frozenset[str]) -> set[str]:
    graph = defs.resolve_asset_graph()
    allowed = set(keys)
    for key in keys:
        allowed |= {p.to_user_string() for p in graph.get(dg.AssetKey.from_user_string(key)).parent_keys}
    return allowed


def test_every_table_read_is_declared_upstream(run: tuple[Warehouse, dg.ExecuteInProcessResult]) -> None:
    _, _result = run
    assert RecordingWarehouse.reads, "the shared run recorded no reads: is the recording warehouse in use?"
    undeclared = {
        ", ".join(sorted(keys)): sorted(tables - _declared_inputs(keys))
        for keys, tables in RecordingWarehouse.reads.items()
        if tables - _declared_inputs(keys)
    }
    assert not undeclared, f"steps read tables they do not declare as upstream assets: {undeclared}"


def test_assets_that_build_on_yesterday_declare_a_self_dependency() -> None:
    """NAV, trading state and the daily-return rule read the previous session's partition of themselves."""
    for name in ("book_nav", "trading_state", "market_prices"):
        assets_def = defs.resolve_assets_def(name)
        key = dg.AssetKey(name)
        deps = {d.asset_key: d for d in assets_def.specs_by_key[key].deps}
        assert key in deps, f"{name} reads its previous partition but does not declare it"
        mapping = deps[key].partition_mapping
        assert isinstance(mapping, dg.TimeWindowPartitionMapping)
        assert (mapping.start_offset, mapping.end_offset) == (-1, -1)


def test_pre_trade_service_runs_without_dagster() -> None:
    """The service layer imports no Dagster module (it runs where Dagster is not installed or running)."""
    import subprocess
    import sys

    code = (
        "import sys, risk_pipeline.pretrade_service, risk_pipeline.queries, risk_pipeline.valuation; "
        "print(sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
