"""NAV, limits, trading state and required reductions per book, with every decision in the audit trail."""

import datetime as dt
import hashlib
import json
from dataclasses import replace
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import yaml

from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    close_matrix,
    latest_as_of,
    markdown_table,
    table_definition_metadata,
)
from risk_pipeline.defs.exposures.greeks import PositionGreeksConfig, value_positions
from risk_pipeline.quant.limits import BookExposure, LimitResult, LimitsConfig, evaluate_limits, load_limits
from risk_pipeline.quant.reductions import required_reductions
from risk_pipeline.quant.trading_state import TradingStateRecord, next_state
from risk_pipeline.resources import PROJECT_ROOT, WarehouseResource
from risk_pipeline.warehouse import Warehouse

GROUP = "exposures"
BOOKS_FILE = PROJECT_ROOT / "data" / "books.yaml"
LIMITS_FILE = PROJECT_ROOT / "data" / "limits" / "limits.yaml"
RISK_LIMITS = ("max_var_99_1d", "max_es_975_1d")


class LimitsSettings(dg.Config):
    """Files and look-backs of the limit evaluation."""

    limits_file: str = str(LIMITS_FILE)
    books_file: str = str(BOOKS_FILE)
    correlation_window: int = 63


def book_capital(path: str) -> dict[str, float]:
    """Starting capital per book from data/books.yaml."""
    books = (yaml.safe_load(open(path)) or {}).get("books", {})
    return {name: float(spec["capital"]) for name, spec in books.items()}


def nav_rows(wh: Warehouse, session: dt.date, capital: dict[str, float]) -> pd.DataFrame:
    """book_nav rows: previous end-of-day positions revalued at this session's latest valuation."""
    as_of = latest_as_of(wh, "position_greeks", session)
    if as_of is None:
        raise dg.Failure(f"no position_greeks for {session}: value the books first")
    today = wh.read("position_greeks", {"as_of": as_of})
    previous_as_of = latest_as_of(wh, "position_greeks", session, before=True)
    pnl: dict[str, float] = {}
    previous_nav: dict[str, tuple[float, float]] = {}
    if previous_as_of is not None:
        previous = wh.read("position_greeks", {"as_of": previous_as_of})
        held = wh.read("positions", {"as_of_date": previous["as_of_date"].iloc[0]})
        now = value_positions(wh, session, as_of, PositionGreeksConfig(), positions=held, allow_expired=True)
        moved = now.groupby("book")["market_value"].sum() - previous.groupby("book")["market_value"].sum()
        pnl = moved.to_dict()
        stored = wh.read("book_nav", {"as_of": previous_as_of})
        previous_nav = {r.book: (r.nav, r.peak_nav) for r in stored.itertuples()}
    rows = []
    for book in sorted(today["book"].unique()):
        if book not in capital:
            raise dg.Failure(f"book {book!r} has no capital in data/books.yaml: cannot compute NAV and drawdown")
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
    deps=["position_greeks", "positions"],
    kinds={"pandas"},
    owners=OWNERS,
    description=(
        "NAV, peak NAV, daily P&L and drawdown per book. Daily P&L is the previous end-of-day book revalued "
        "at this valuation's market (options off today's surface, expired ones at exercise value); the first "
        "valuation of a book starts at its capital from data/books.yaml."
    ),
    metadata=table_definition_metadata("book_nav"),
)
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


# ------------------------------------------------------------------------------------------- exposures
def book_exposure(
    rows: pd.DataFrame,
    nav: pd.Series,
    correlation: pd.DataFrame | None,
    var_99_1d: float | None = None,
    es_975_1d: float | None = None,
) -> BookExposure:
    """The quant core's view of one book from its position_greeks rows and NAV row."""
    units = (rows["quantity"] * rows["multiplier"]).to_numpy(float)
    per_unit = {c: rows[c].to_numpy(float) / units for c in ("delta", "gamma", "vega_per_vol_point", "theta_per_day")}
    symbols = tuple(sorted(rows["symbol"].unique()))
    corr = None
    if correlation is not None and set(symbols) <= set(correlation.columns):
        corr = correlation.loc[list(symbols), list(symbols)].to_numpy(float)
    return BookExposure(
        position_id=rows["position_id"].to_numpy(str),
        symbol=rows["symbol"].to_numpy(str),
        sector=rows["sector"].fillna("unknown").to_numpy(str),
        quantity=rows["quantity"].to_numpy(float),
        multiplier=rows["multiplier"].to_numpy(float),
        spot=rows["spot"].to_numpy(float),
        unit_price=rows["price"].to_numpy(float),
        delta=per_unit["delta"],
        gamma=per_unit["gamma"],
        vega=per_unit["vega_per_vol_point"] * 100.0,
        theta_per_day=per_unit["theta_per_day"],
        nav=float(nav["nav"]),
        peak_nav=float(nav["peak_nav"]),
        daily_pnl=float(nav["daily_pnl"]),
        is_option=(rows["instrument_type"] == "option").to_numpy(bool),
        strategy=rows["strategy"].to_numpy(str),
        var_99_1d=var_99_1d,
        es_975_1d=es_975_1d,
        correlation=corr,
        correlation_symbols=symbols if corr is not None else None,
    )


def correlation_matrix(wh: Warehouse, session: dt.date, window: int) -> pd.DataFrame:
    """Correlation of daily log returns over the last ``window`` sessions ending at ``session``."""
    wide = close_matrix(wh, session, window)
    return np.log(wide).diff().iloc[1:].tail(window).corr(min_periods=20)


def risk_numbers(wh: Warehouse, as_of: pd.Timestamp, book: str) -> tuple[bool, float | None, float | None]:
    """(risk layer deployed?, 99 % 1-day historical VaR, 97.5 % 1-day ES) for the book at ``as_of``.

    VaR is computed at end of day; an intraday valuation uses the latest VaR at or before it if that
    is from the same or the previous session (older is stale: None, so the limit fails closed).
    """
    if not wh.table_exists("var_results") or wh.row_count("var_results") == 0:
        return False, None, None
    latest = wh.query(
        "SELECT MAX(as_of) AS t FROM risk.var_results WHERE book = ? AND as_of <= ? AND as_of >= ?",
        [book, as_of, as_of - pd.Timedelta(days=5)],
    )
    if latest.empty or pd.isna(latest["t"].iloc[0]):
        return True, None, None
    got = wh.query(
        "SELECT confidence, var, expected_shortfall FROM risk.var_results WHERE as_of = ? AND book = ? "
        "AND horizon_days = 1 AND method = 'historical'",
        [pd.Timestamp(latest["t"].iloc[0]), book],
    )
    var = got.loc[np.isclose(got["confidence"], 0.99), "var"]
    es = got.loc[np.isclose(got["confidence"], 0.975), "expected_shortfall"]
    return True, (float(var.iloc[0]) if len(var) else None), (float(es.iloc[0]) if len(es) else None)


def previous_state(wh: Warehouse, book: str, as_of: pd.Timestamp) -> TradingStateRecord | None:
    """The book's last stored trading state before ``as_of`` (None for its first evaluation)."""
    got = wh.query(
        "SELECT * FROM risk.trading_state WHERE book = ? AND as_of < ? ORDER BY as_of DESC LIMIT 1", [book, as_of]
    )
    if got.empty:
        return None
    r = got.iloc[0]
    return TradingStateRecord(
        state=r["state"],
        preservation_level=r["preservation_level"],
        reason=r["reason"],
        triggering_limits=tuple(json.loads(r["triggering_limits"] or "[]")),
        since=pd.Timestamp(r["since"]),
        level_since=pd.Timestamp(r["level_since"]),
        clear_count=int(r["clear_count"]),
        evaluated_at=pd.Timestamp(r["as_of"]),
        target_state=r["target_state"],
        target_level=r["target_level"],
        target_gross_cut=float(r["target_gross_cut"]),
        hedges_required=bool(r["hedges_required"]),
        flatten_speculative=bool(r["flatten_speculative"]),
        reference_gross=float(r["reference_gross"]) if r["reference_gross"] is not None else float("nan"),
    )


def audit_id(*parts: object) -> str:
    """Deterministic id of a decision: the same decision on the same inputs gets the same id."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


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
    results = evaluate_limits(exposure, cfg)
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
        plan = required_reductions(exposure, cfg, results, state=state)
    return results, state, plan, notes, previous


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "limit_status",
            group_name=GROUP,
            deps=["position_greeks", "book_nav", "market_prices"],
            kinds={"pandas"},
            owners=OWNERS,
            metadata=table_definition_metadata("limit_status"),
            description="One row per limit and book: value, cap, warning level, utilization, OK/WARN/BREACH.",
        ),
        dg.AssetSpec(
            "trading_state",
            group_name=GROUP,
            deps=["limit_status"],
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
def risk_limits(context: dg.AssetExecutionContext, config: LimitsSettings, warehouse: WarehouseResource) -> Any:
    wh = warehouse.get()
    limits = load_limits(config.limits_file)
    status_frames, state_rows, reduction_rows, audit_rows = [], [], [], []
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of = latest_as_of(wh, "position_greeks", session)
        nav_as_of = latest_as_of(wh, "book_nav", session)
        if as_of is None or nav_as_of != as_of:
            raise dg.Failure(f"{key}: position_greeks and book_nav must exist for the same valuation (fail closed)")
        positions = wh.read("position_greeks", {"as_of": as_of})
        navs = wh.read("book_nav", {"as_of": as_of}).set_index("book")
        correlation = correlation_matrix(wh, session, config.correlation_window)
        for book, rows in positions.groupby("book", sort=True):
            cfg = limits.for_book(str(book))
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
                        _audit(
                            as_of,
                            book,
                            "limit_breach",
                            r.limit_name,
                            "BREACH",
                            {"value": r.value, "threshold": r.threshold, "drivers": list(r.drivers)},
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
                    _audit(
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


AUDIT_COLUMNS = ["audit_id", "at", "actor", "decision_type", "book", "subject", "decision", "inputs"]


def _audit(at: pd.Timestamp, book: str, decision_type: str, subject: str, decision: str, inputs: dict) -> dict:
    payload = json.dumps(inputs, sort_keys=True, default=str)
    return {
        "audit_id": audit_id(decision_type, book, subject, at.isoformat(), decision, payload),
        "at": at,
        "actor": "risk_pipeline.risk_limits",
        "decision_type": decision_type,
        "book": book,
        "subject": subject,
        "decision": decision,
        "inputs": payload,
    }
