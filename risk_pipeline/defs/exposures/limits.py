"""NAV, limits, trading state and required reductions per book, with every decision in the audit trail."""

import datetime as dt
import json
from dataclasses import replace
from typing import Any

import dagster as dg
import pandas as pd

from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    PREVIOUS_AND_CURRENT_SESSION,
    PREVIOUS_SESSION,
    fail_closed,
    markdown_table,
    table_definition_metadata,
)
from risk_pipeline.errors import RiskDataError
from risk_pipeline.event_windows import apply_event_caps, event_overrides
from risk_pipeline.paths import BOOKS_FILE, LIMITS_FILE
from risk_pipeline.quant.limits import (
    LimitResult,
    LimitsConfig,
    evaluate_limits,
    load_limits,
    unheld_hedge_strategies,
)
from risk_pipeline.quant.reductions import required_reductions
from risk_pipeline.quant.trading_state import TradingStateRecord, next_state
from risk_pipeline.queries import (
    AUDIT_COLUMNS,
    audit_row,
    book_capital,
    correlation_matrix,
    latest_as_of,
    latest_valuation,
    previous_state,
    risk_numbers,
)
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.valuation import VALUATION_INPUTS, book_exposure, value_positions
from risk_pipeline.warehouse import Warehouse

GROUP = "exposures"
ACTOR = "risk_pipeline.risk_limits"
RISK_LIMITS = ("max_var_99_1d", "max_es_975_1d")


class LimitsSettings(dg.Config):
    """Files and look-backs of the limit evaluation."""

    limits_file: str = str(LIMITS_FILE)
    books_file: str = str(BOOKS_FILE)
    correlation_window: int = 63


def nav_rows(wh: Warehouse, session: dt.date, capital: dict[str, float]) -> pd.DataFrame:
    """book_nav rows: previous end-of-day positions revalued at this session's latest valuation."""
    as_of, today = latest_valuation(wh, session)
    previous_as_of = latest_as_of(wh, "position_greeks", session, before=True)
    pnl: dict[str, float] = {}
    previous_nav: dict[str, tuple[float, float]] = {}
    if previous_as_of is not None:
        previous = wh.read("position_greeks", {"as_of": previous_as_of})
        held = wh.read("positions", {"as_of_date": previous["as_of_date"].iloc[0]})
        now = value_positions(wh, session, as_of, positions=held, allow_expired=True)
        moved = now.groupby("book")["market_value"].sum() - previous.groupby("book")["market_value"].sum()
        pnl = moved.to_dict()
        stored = wh.read("book_nav", {"as_of": previous_as_of})
        previous_nav = {r.book: (r.nav, r.peak_nav) for r in stored.itertuples()}
    rows = []
    for book in sorted(today["book"].unique()):
        if book not in capital:
            raise RiskDataError(f"book {book!r} has no capital in data/books.yaml: cannot compute NAV and drawdown")
        if book in previous_nav and book in pnl:
            nav_prev, peak_prev = previous_nav[book]
            daily = float(pnl[book])
            basis = f"revaluation of the {previous_as_of.isoformat()} positions at {as_of.isoformat()}"
        else:
            nav_prev, peak_prev, daily = capital[book], capital[book], 0.0
            basis = "inception: first valuation of the book, NAV = capital"
        nav = nav_prev + daily
        peak = max(peak_prev, nav)
        rows.append(
            {
                "as_of": as_of,
                "as_of_date": session,
                "book": book,
                "nav": nav,
                "peak_nav": peak,
                "daily_pnl": daily,
                "drawdown_pct": 1.0 - nav / peak,
                "pnl_basis": basis,
                "previous_as_of": previous_as_of if book in previous_nav else None,
                "capital": capital[book],
            }
        )
    return pd.DataFrame(rows)


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        *VALUATION_INPUTS,
        # yesterday's valuation is revalued at today's market; NAV carries on from yesterday's
        dg.AssetDep("position_greeks", partition_mapping=PREVIOUS_AND_CURRENT_SESSION),
        dg.AssetDep("book_nav", partition_mapping=PREVIOUS_SESSION),
    ],
    kinds={"pandas"},
    owners=OWNERS,
    description=(
        "NAV, peak NAV, daily P&L and drawdown per book. Daily P&L is the previous end-of-day book revalued "
        "at this valuation's market (options off today's surface, expired ones at exercise value); the first "
        "valuation of a book starts at its capital from data/books.yaml."
    ),
    metadata=table_definition_metadata("book_nav"),
)
@fail_closed
def book_nav(
    context: dg.AssetExecutionContext, config: LimitsSettings, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    wh = warehouse.get()
    capital = book_capital(config.books_file)
    written = 0
    frames = []
    for key in context.partition_keys:  # in order: each session's NAV builds on the previous one
        rows = nav_rows(wh, dt.date.fromisoformat(key), capital)
        written += wh.write("book_nav", rows, run_id=context.run.run_id, partitions=[{"as_of": rows["as_of"].iloc[0]}])
        frames.append(rows)
    last = frames[-1]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written,
            "nav": dg.MetadataValue.md(
                markdown_table(last[["book", "nav", "peak_nav", "daily_pnl", "drawdown_pct", "pnl_basis"]], 20)
            ),
            "run_id": context.run.run_id,
        }
    )


def evaluate_book(
    wh: Warehouse,
    rows: pd.DataFrame,
    nav: pd.Series,
    cfg: LimitsConfig,
    correlation: pd.DataFrame,
    as_of: pd.Timestamp,
) -> tuple[list[LimitResult], TradingStateRecord, Any, list[str], TradingStateRecord | None]:
    """Limits, next trading state, the reduction plan (when anything is breached) and the previous state."""
    book = str(nav["book"])
    deployed, var, es = risk_numbers(wh, as_of, book)
    notes = []
    if not deployed:
        # the risk layer has not produced VaR/ES at all: report the caps as not available, do not enforce
        cfg = replace(cfg, max_var_99_1d=None, max_es_975_1d=None)
        notes.append("risk layer (var_results) not materialized: VaR/ES caps reported, not enforced")
    exposure = book_exposure(rows, nav, correlation, var, es)
    # caps tightened by gap-risk actions in force at this valuation (their detail says so)
    overrides = event_overrides(wh, book, as_of)
    results = apply_event_caps(exposure, cfg, evaluate_limits(exposure, cfg), overrides)
    previous = previous_state(wh, book, as_of)
    state = next_state(
        previous,
        results,
        exposure.drawdown_pct,
        exposure.daily_loss_pct,
        as_of,
        cfg,
        gross_exposure=exposure.gross_exposure,
    )
    plan = None
    if any(r.status == "BREACH" for r in results) or state.flatten_speculative or state.target_gross_cut > 0:
        plan = required_reductions(exposure, cfg, results, state=state, overrides=overrides)
    return results, state, plan, notes, previous


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "limit_status",
            group_name=GROUP,
            deps=["position_greeks", "book_nav", "market_prices", "var_results", "gap_risk_actions"],
            kinds={"pandas"},
            owners=OWNERS,
            metadata=table_definition_metadata("limit_status"),
            description="One row per limit and book: value, cap, warning level, utilization, OK/WARN/BREACH.",
        ),
        dg.AssetSpec(
            "trading_state",
            group_name=GROUP,
            deps=["limit_status", dg.AssetDep("trading_state", partition_mapping=PREVIOUS_SESSION)],
            kinds={"pandas"},
            owners=OWNERS,
            metadata=table_definition_metadata("trading_state"),
            description="ACTIVE / REDUCING / HALTED per book with the capital-preservation level and reason.",
        ),
        dg.AssetSpec(
            "required_reductions",
            group_name=GROUP,
            deps=["trading_state"],
            kinds={"pandas", "scipy"},
            owners=OWNERS,
            metadata=table_definition_metadata("required_reductions"),
            description="Least-turnover position reductions that bring every breached limit under its warning level.",
        ),
        dg.AssetSpec(
            "audit_trail",
            group_name="compliance",
            deps=["trading_state"],
            kinds={"pandas"},
            owners=OWNERS,
            metadata=table_definition_metadata("audit_trail"),
            description="Append-only record of every pre-trade answer, state change and limit breach.",
        ),
    ],
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
@fail_closed
def risk_limits(context: dg.AssetExecutionContext, config: LimitsSettings, warehouse: WarehouseResource) -> Any:
    wh = warehouse.get()
    limits = load_limits(config.limits_file)
    status_frames, state_rows, reduction_rows, audit_rows = [], [], [], []
    hedge_warnings: list[str] = []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of, positions = latest_valuation(wh, session)
        if latest_as_of(wh, "book_nav", session) != as_of:
            raise RiskDataError(f"{key}: position_greeks and book_nav must exist for the same valuation (fail closed)")
        navs = wh.read("book_nav", {"as_of": as_of}).set_index("book")
        correlation = correlation_matrix(wh, session, config.correlation_window)
        for book, rows in positions.groupby("book", sort=True):
            cfg = limits.for_book(str(book))
            unheld = unheld_hedge_strategies(cfg, rows["strategy"])
            if unheld:  # flattening would keep nothing under these names: likely a misconfigured limits file
                hedge_warnings.append(f"{book}: hedge_strategies {unheld} match no position of the book")
                context.log.warning(hedge_warnings[-1])
            nav = navs.loc[book].copy()
            nav["book"] = book
            results, state, plan, notes, previous = evaluate_book(wh, rows, nav, cfg, correlation, as_of)
            for r in results:
                status_frames.append(
                    {
                        "as_of": as_of,
                        "book": book,
                        "limit_name": r.limit_name,
                        "value": r.value,
                        "threshold": r.threshold,
                        "warn_threshold": r.warn_threshold,
                        "utilization": r.utilization,
                        "status": r.status,
                        "limits_version": limits.version,
                        "detail": "; ".join(
                            x
                            for x in (r.note, ", ".join(r.drivers), *(notes if r.limit_name in RISK_LIMITS else []))
                            if x
                        )
                        or None,
                    }
                )
                if r.status == "BREACH":
                    audit_rows.append(
                        audit_row(
                            as_of,
                            book,
                            "limit_breach",
                            r.limit_name,
                            "BREACH",
                            {"value": r.value, "threshold": r.threshold, "drivers": list(r.drivers)},
                            ACTOR,
                        )
                    )
            state_rows.append(
                {
                    "as_of": as_of,
                    "book": book,
                    "state": state.state,
                    "preservation_level": state.preservation_level,
                    "reason": state.reason,
                    "previous_state": previous.state if previous else None,
                    "since": state.since,
                    "triggering_limits": json.dumps(list(state.triggering_limits)),
                    "clear_count": state.clear_count,
                    "level_since": state.level_since,
                    "target_state": state.target_state,
                    "target_level": state.target_level,
                    "target_gross_cut": state.target_gross_cut,
                    "reference_gross": state.reference_gross,
                    "hedges_required": state.hedges_required,
                    "flatten_speculative": state.flatten_speculative,
                }
            )
            for t in state.transitions:
                audit_rows.append(
                    audit_row(
                        as_of,
                        book,
                        "state_change",
                        f"{t.from_state}->{t.to_state}",
                        t.to_state,
                        {
                            "reason": t.reason or state.reason,
                            "limit": t.limit,
                            "level": f"{t.from_level}->{t.to_level}",
                        },
                        ACTOR,
                    )
                )
            if plan is not None:
                qty = dict(zip(rows["position_id"], rows["quantity"], strict=True))
                sym = dict(zip(rows["position_id"], rows["symbol"], strict=True))
                after = dict(zip(rows["position_id"], plan.new_quantity, strict=True))
                for line in plan.lines:
                    reduction_rows.append(
                        {
                            "as_of": as_of,
                            "book": book,
                            "position_id": line.position_id,
                            "symbol": sym.get(line.position_id),
                            "quantity_before": qty.get(line.position_id),
                            "reduce_quantity": line.reduce_quantity,
                            "quantity_after": after.get(line.position_id),
                            "reason": line.reason,
                            "limits_cleared": json.dumps(list(line.limits_cleared)),
                        }
                    )
    run_id = context.run.run_id
    snapshots = sorted({r["as_of"] for r in state_rows})
    parts = [{"as_of": t} for t in snapshots]
    status = pd.DataFrame(status_frames)
    n_status = wh.write("limit_status", status, run_id=run_id, partitions=parts)
    states = pd.DataFrame(state_rows)
    n_state = wh.write("trading_state", states, run_id=run_id, partitions=parts)
    reductions = pd.DataFrame(
        reduction_rows,
        columns=[
            "as_of",
            "book",
            "position_id",
            "symbol",
            "quantity_before",
            "reduce_quantity",
            "quantity_after",
            "reason",
            "limits_cleared",
        ],
    )
    n_red = wh.write("required_reductions", reductions, run_id=run_id, partitions=parts)
    n_audit = (
        wh.append("audit_trail", pd.DataFrame(audit_rows, columns=AUDIT_COLUMNS), run_id=run_id) if audit_rows else 0
    )
    breaches = status[status["status"] == "BREACH"]
    yield dg.MaterializeResult(
        asset_key="limit_status",
        metadata={
            "dagster/row_count": n_status,
            "limits_version": limits.version,
            "hedge_strategy_warnings": "; ".join(hedge_warnings) or "none",
            "breaches": dg.MetadataValue.md(markdown_table(breaches[["book", "limit_name", "value", "threshold"]], 30)),
            "status_counts": dg.MetadataValue.md(
                markdown_table(status.groupby(["book", "status"]).size().rename("limits").reset_index(), 20)
            ),
        },
    )
    yield dg.MaterializeResult(
        asset_key="trading_state",
        metadata={
            "dagster/row_count": n_state,
            "states": dg.MetadataValue.md(
                markdown_table(states[["book", "state", "preservation_level", "reason"]], 20)
            ),
        },
    )
    yield dg.MaterializeResult(asset_key="required_reductions", metadata={"dagster/row_count": n_red})
    yield dg.MaterializeResult(asset_key="audit_trail", metadata={"rows_appended": n_audit})
