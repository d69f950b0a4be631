"""NAV, limits, trading state and required reductions per book, with every decision in the audit trail."""

import datetime as dt
import json
from dataclasses import replace
from typing import Any

import dagster as dg
import pandas as pd

from risk_pipeline import controls
from risk_pipeline.contracts import TABLES
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    PREVIOUS_AND_CURRENT_SESSION,
    PREVIOUS_SESSION,
    compliance_rules,
    fail_closed,
    markdown_table,
    table_definition_metadata,
)
from risk_pipeline.defs.exposures.budgets import budget_results, loss_streak_factor
from risk_pipeline.defs.sizing.config import load_sizing_config
from risk_pipeline.errors import RiskDataError
from risk_pipeline.event_windows import apply_event_caps, event_overrides
from risk_pipeline.paths import BOOKS_FILE, COMPLIANCE_RULES_FILE, LIMITS_FILE
from risk_pipeline.quant.limits import (
    LimitResult,
    LimitsConfig,
    evaluate_limits,
    load_limits,
    unheld_hedge_strategies,
)
from risk_pipeline.quant.reductions import required_reductions
from risk_pipeline.quant.trading_state import (
    EmergencyCondition,
    EmergencyConfig,
    TradingStateRecord,
    correlation_condition,
    loss_streak,
    next_state,
    realized_vol_series,
    risk_budget_factor,
    volatility_spikes,
)
from risk_pipeline.queries import (
    AUDIT_COLUMNS,
    atm_vol_matrix,
    audit_row,
    book_capital,
    close_matrix,
    correlation_matrix,
    latest_as_of,
    latest_valuation,
    previous_state,
    risk_numbers,
)
from risk_pipeline.resources import WarehouseResource
from risk_pipeline.risk_levels import effective_configuration
from risk_pipeline.valuation import (
    VALUATION_INPUTS,
    apply_fills,
    book_exposure,
    fill_pnl,
    session_fills,
    value_positions,
)
from risk_pipeline.warehouse import Warehouse

GROUP = "exposures"
ACTOR = "risk_pipeline.risk_limits"
RISK_LIMITS = ("max_var_99_1d", "max_es_975_1d")


class LimitsSettings(dg.Config):
    """Files and look-backs of the limit evaluation."""

    limits_file: str = str(LIMITS_FILE)
    books_file: str = str(BOOKS_FILE)
    correlation_window: int = 63
    #: emergency rules (volatility spike, correlation, loss streak) are read from its ``emergency`` section
    rules_file: str = str(COMPLIANCE_RULES_FILE)
    #: risk budgets per book and position strategy (``risk_budgets``); empty: data/sizing.yaml
    sizing_file: str = ""


def nav_rows(wh: Warehouse, session: dt.date, capital: dict[str, float]) -> pd.DataFrame:
    """book_nav rows: previous end-of-day positions revalued at this session's latest valuation."""
    as_of, today = latest_valuation(wh, session)
    previous_as_of = latest_as_of(wh, "position_greeks", session, before=True)
    pnl: dict[str, float] = {}
    previous_nav: dict[str, tuple[float, float]] = {}
    if previous_as_of is not None:
        previous = wh.read("position_greeks", {"as_of": previous_as_of})
        day = previous["as_of_date"].iloc[0]
        # the book as valued then: that session's positions plus its fills up to the valuation
        held = apply_fills(wh.read("positions", {"as_of_date": day}), session_fills(wh, day, previous_as_of), day)
        now = value_positions(wh, session, as_of, positions=held, allow_expired=True, price_only=True)
        moved = now.groupby("book")["market_value"].sum() - previous.groupby("book")["market_value"].sum()
        # plus this session's fills (executions) marked at this valuation
        traded = fill_pnl(session_fills(wh, session, as_of), today)
        pnl = moved.add(traded, fill_value=0.0).to_dict()
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


def volatility_conditions(
    wh: Warehouse, session: dt.date, symbols: list[str], cfg: EmergencyConfig
) -> dict[str, list[EmergencyCondition]]:
    """Per held underlying, the volatility spikes of the session: realized vol and closing ATM implied vol."""
    depth = cfg.vol_median_sessions + cfg.realized_vol_sessions + 2
    closes = close_matrix(wh, session, depth, symbols).reindex(columns=symbols)
    out: dict[str, list[EmergencyCondition]] = {s: [] for s in symbols}
    if len(closes) and closes.index[-1] == session:
        realized = realized_vol_series(closes.to_numpy(float), cfg.realized_vol_sessions)
        label = f"{cfg.realized_vol_sessions}-session realized vol"
        for c in volatility_spikes(realized[-cfg.vol_median_sessions - 1 :], symbols, cfg, label):
            out[c.subject].append(c)
        implied = atm_vol_matrix(wh, closes.index[0], session, symbols)
        if len(implied) and implied.index[-1] == session:
            window = implied.to_numpy(float)[-cfg.vol_median_sessions - 1 :]
            for c in volatility_spikes(window, symbols, cfg, "ATM implied vol"):
                out[c.subject].append(c)
    return out


#: How long the daily-loss stop halts a book (unless resumed earlier).
DAILY_LOSS_STOP_HOURS = 24.0


def daily_loss_stop(
    wh: Warehouse, book: str, state: TradingStateRecord, as_of: pd.Timestamp, halt: dict | None
) -> dict | None:
    """A book past its daily-loss cap is halted for 24 hours from the valuation (a ``manual_controls`` halt by
    this asset, so the pre-trade check rejects its orders until it lapses or is resumed); None otherwise.

    Idempotent: a re-run records the same event (same id), and a halt already in force is not repeated.
    """
    if "max_daily_loss_pct_nav" not in state.triggering_limits or halt is not None:
        return None
    reason = "daily-loss stop: " + state.reason
    return controls.halt(wh, book, reason, ACTOR, hours=DAILY_LOSS_STOP_HOURS, at=as_of.to_pydatetime())


#: The volatility index (hedging layer) judged by the volatility-spike rule where the deployment has it.
VOLATILITY_INDEX_DEPS = ["volatility_index"] if "volatility_index" in TABLES else []


def index_spikes(wh: Warehouse, session: dt.date, cfg: EmergencyConfig) -> list[EmergencyCondition]:
    """Volatility-index spikes of the session (market-wide: they apply to every book); none without the table."""
    if not VOLATILITY_INDEX_DEPS or not wh.table_exists("volatility_index"):
        return []
    got = wh.query(
        "SELECT as_of_date, as_of, index_symbol, level FROM risk.volatility_index WHERE as_of_date <= ? "
        "AND as_of_date >= ? ORDER BY as_of_date, as_of",
        [session, session - dt.timedelta(days=int(cfg.vol_median_sessions * 7 / 5) + 30)],
    )
    if got.empty or pd.Timestamp(got["as_of_date"].max()).date() != session:
        return []
    wide = got.drop_duplicates(["as_of_date", "index_symbol"], keep="last").pivot(
        index="as_of_date", columns="index_symbol", values="level"
    )
    names = [str(c) for c in wide.columns]
    return volatility_spikes(wide.to_numpy(float)[-cfg.vol_median_sessions - 1 :], names, cfg, "volatility index")


def evaluate_book(
    wh: Warehouse,
    rows: pd.DataFrame,
    nav: pd.Series,
    cfg: LimitsConfig,
    correlation: pd.DataFrame,
    as_of: pd.Timestamp,
    *,
    manual_halt: str | None = None,
    emergency: list[EmergencyCondition] | None = None,
    emergency_config: EmergencyConfig | None = None,
) -> tuple[list[LimitResult], TradingStateRecord, Any, list[str], TradingStateRecord | None]:
    """Limits, next trading state, the reduction plan (when anything is breached) and the previous state.

    ``manual_halt`` describes a manual halt in force at ``as_of``; ``emergency`` are the volatility-spike
    conditions of the book's underlyings; with ``emergency_config`` the average correlation of the held
    underlyings and the loss streak (which scales the VaR/ES caps) are judged too.
    """
    book = str(nav["book"])
    deployed, var, es = risk_numbers(wh, as_of, book)
    notes = []
    conditions = list(emergency or [])
    if emergency_config is not None:
        held = [s for s in dict.fromkeys(rows["symbol"]) if s in correlation.index]
        conditions += correlation_condition(correlation.loc[held, held].to_numpy(float), emergency_config)
        pnl = wh.query(
            "SELECT as_of_date, as_of, daily_pnl FROM risk.book_nav WHERE book = ? AND as_of <= ? "
            "ORDER BY as_of_date DESC, as_of DESC LIMIT ?",
            [book, as_of, 5 * emergency_config.loss_streak_sessions + 5],
        ).drop_duplicates("as_of_date")
        streak = loss_streak(pnl["daily_pnl"].to_numpy(float)[::-1])
        factor = risk_budget_factor(streak, emergency_config)
        if factor < 1.0:
            notes.append(f"loss streak of {streak} sessions: VaR/ES caps x {factor:g}")
            cfg = replace(
                cfg,
                max_var_99_1d=None if cfg.max_var_99_1d is None else cfg.max_var_99_1d * factor,
                max_es_975_1d=None if cfg.max_es_975_1d is None else cfg.max_es_975_1d * factor,
            )
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
        manual_halt=manual_halt,
        emergency=conditions,
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
            deps=[
                "position_greeks",
                "book_nav",
                "market_prices",
                "var_results",
                "var_contributions",
                "gap_risk_actions",
            ],
            kinds={"pandas"},
            owners=OWNERS,
            metadata=table_definition_metadata("limit_status"),
            description="One row per limit and book: value, cap, warning level, utilization, OK/WARN/BREACH.",
        ),
        dg.AssetSpec(
            "trading_state",
            group_name=GROUP,
            deps=[
                "limit_status",
                dg.AssetDep("trading_state", partition_mapping=PREVIOUS_SESSION),
                # manual halts in force at the valuation; emergency rules read prices and ATM vol history
                "manual_controls",
                "atm_vol_history",
                *VOLATILITY_INDEX_DEPS,
            ],
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
    emergency_config = compliance_rules(config.rules_file).emergency
    budgets = load_sizing_config(config.sizing_file or None).risk_budgets
    status_frames, state_rows, reduction_rows, audit_rows = [], [], [], []
    hedge_warnings: list[str] = []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of, positions = latest_valuation(wh, session)
        if latest_as_of(wh, "book_nav", session) != as_of:
            raise RiskDataError(f"{key}: position_greeks and book_nav must exist for the same valuation (fail closed)")
        navs = wh.read("book_nav", {"as_of": as_of}).set_index("book")
        correlation = correlation_matrix(wh, session, config.correlation_window)
        halts = controls.active_halts(wh, as_of)
        spikes = volatility_conditions(wh, session, sorted(set(positions["symbol"])), emergency_config)
        market_spikes = index_spikes(wh, session, emergency_config)
        for book, rows in positions.groupby("book", sort=True):
            cfg = limits.for_book(str(book))
            unheld = unheld_hedge_strategies(cfg, rows["strategy"])
            if unheld:  # flattening would keep nothing under these names: likely a misconfigured limits file
                hedge_warnings.append(f"{book}: hedge_strategies {unheld} match no position of the book")
                context.log.warning(hedge_warnings[-1])
            nav = navs.loc[book].copy()
            nav["book"] = book
            halt = controls.halt_for_book(halts, str(book))
            results, state, plan, notes, previous = evaluate_book(
                wh,
                rows,
                nav,
                cfg,
                correlation,
                as_of,
                manual_halt=controls.describe(halt) if halt else None,
                emergency=[c for s in dict.fromkeys(rows["symbol"]) for c in spikes.get(s, [])] + market_spikes,
                emergency_config=emergency_config,
            )
            daily_loss_stop(wh, str(book), state, as_of, halt)
            # each position strategy's component VaR against its budget (reported, not driving the state)
            shares = dict(budgets.get(str(book), {}))
            factor = loss_streak_factor(wh, str(book), as_of, emergency_config)[1] if shares else 1.0
            results = [*results, *budget_results(wh, as_of, str(book), rows, shares, cfg, factor)]
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
                        "risk_level": cfg.risk_level,
                        "effective_config": effective_configuration(limits.version, cfg.risk_level, cfg.environment),
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
