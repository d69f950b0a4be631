"""Gap-risk actions: what each book does ahead of the events inside their lead windows (quant/gap_risk.py)."""

import datetime as dt
import json
import math
from collections.abc import Iterator
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from risk_pipeline.contracts import table
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    PREVIOUS_SESSION,
    TableWrite,
    fail_closed,
    markdown_table,
    publish,
    session_check_spec,
    table_definition_metadata,
)
from risk_pipeline.defs.risk.events import AMERICAN
from risk_pipeline.defs.risk.var import book_portfolio
from risk_pipeline.errors import RiskDataError
from risk_pipeline.event_windows import (
    event_move_history,
    gap_risk_file,
    latest_actions,
    load_gap_risk_config,
    upcoming,
    window_events,
)
from risk_pipeline.paths import LIMITS_FILE
from risk_pipeline.quant.gap_risk import BOOK_WIDE, NO_ACTION, GapDecision, decide, gap_document
from risk_pipeline.quant.limits import load_limits
from risk_pipeline.quant.smile_dynamics import earnings_vol_crush
from risk_pipeline.queries import AUDIT_COLUMNS, audit_row, latest_as_of
from risk_pipeline.resources import ExportsResource, WarehouseResource

GROUP = "gap_risk"
ACTOR = "risk_pipeline.gap_risk_actions"
NEW_YORK = "America/New_York"


class GapRiskSettings(dg.Config):
    """Books to evaluate (empty: every book of the valuation), the policy and limits files, the index."""

    books: list[str] = Field(default_factory=list)
    #: empty: ``RISK_PIPELINE_GAP_RISK_FILE`` or the shipped data/gap_risk.yaml
    gap_risk_file: str = ""
    limits_file: str = str(LIMITS_FILE)
    index_symbol: str = "SYNX"


def decision_row(
    as_of: pd.Timestamp, book: str, d: GapDecision, nav: float, confidence: float, measure: str, lead: int, src: str
) -> dict[str, Any]:
    """One ``gap_risk_actions`` row of a decision."""
    e = d.event
    event_time = pd.Timestamp(e.event_time)
    return {
        "as_of": as_of,
        "book": book,
        "event_id": e.event_id,
        "symbol": d.symbol,
        "event_type": e.event_type,
        "event_time": event_time,
        "event_date": event_time.tz_convert(NEW_YORK).date(),
        "reaction_session": e.reaction_session,
        "trading_days_until": e.trading_days_until,
        "lead_sessions": lead,
        "action": d.action,
        "actions": json.dumps(list(d.actions)),
        "quantity": d.quantity if d.trades else None,
        "trades": d.trades_json() if d.trades else None,
        "limit_overrides": d.overrides_json(),
        "loss_before": None if math.isnan(d.loss_before) else d.loss_before,
        "loss_after": None if math.isnan(d.loss_after) else d.loss_after,
        "loss_measure": measure,
        "confidence": confidence,
        "budget": d.budget,
        "nav": nav,
        "n_scenarios": d.n_scenarios,
        "moves_source": src,
        "reason": d.reason,
        "expires_at": event_time,
    }


def no_event_row(as_of: pd.Timestamp, book: str, nav: float, budget: float) -> dict[str, Any]:
    """The marker of a book evaluated with no event inside its window (supersedes older actions)."""
    return {
        "as_of": as_of,
        "book": book,
        "event_id": NO_ACTION,
        "symbol": BOOK_WIDE,
        "event_type": NO_ACTION,
        "action": NO_ACTION,
        "actions": "[]",
        "budget": budget,
        "nav": nav,
        "reason": "no event of the calendar inside its lead window for this book",
    }


def expiry_audit(wh: Any, book: str, as_of: pd.Timestamp) -> list[dict[str, Any]]:
    """Audit rows for the actions of the book's previous evaluation whose event has happened by ``as_of``."""
    previous = latest_actions(wh, book, as_of - pd.Timedelta(microseconds=1))
    if previous.empty:
        return []
    done = previous[(previous["action"] != NO_ACTION) & (pd.to_datetime(previous["expires_at"], utc=True) <= as_of)]
    return [
        audit_row(
            pd.Timestamp(r.expires_at),
            book,
            "gap_risk_expiry",
            f"{r.event_id} {r.symbol}",
            "expired",
            {"action": r.action, "actions": json.loads(r.actions), "decided_at": pd.Timestamp(r.as_of).isoformat()},
            ACTOR,
        )
        for r in done.itertuples()
    ]


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        "event_risk",
        "event_calendar",
        "position_greeks",
        "book_nav",
        "market_prices",
        # the previous evaluation's actions: their expiry is recorded in the audit trail
        dg.AssetDep("gap_risk_actions", partition_mapping=PREVIOUS_SESSION),
    ],
    kinds={"pandas", "numba", "json"},
    owners=OWNERS,
    check_specs=[
        session_check_spec(
            "loss_before_matches_event_risk",
            asset="gap_risk_actions",
            description="Each action's estimated loss before equals event_risk's for the same valuation and event.",
        )
    ],
    description=(
        "Per book and event inside its lead window (data/gap_risk.yaml; earnings 2 sessions, FOMC / CPI / "
        "others 1): reduce the positions in scope until the estimated event-day loss is within "
        "max_event_loss_pct_nav of NAV, tighten the name's (or the book's) caps until the event, block new "
        "risk in the pre-trade check, buy back short options before earnings, alert. Every action and expiry "
        "goes to audit_trail; exports/gap_risk/<book>.json summarizes each book."
    ),
    metadata=table_definition_metadata("gap_risk_actions"),
)
@fail_closed
def gap_risk_actions(
    context: dg.AssetExecutionContext, config: GapRiskSettings, warehouse: WarehouseResource, exports: ExportsResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    wh = warehouse.get()
    policy_file = load_gap_risk_config(config.gap_risk_file or None)
    limits = load_limits(config.limits_file)
    calendar = wh.read("event_calendar")
    rows: list[dict[str, Any]] = []
    audits: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    mismatches: list[str] = []
    documents: dict[str, dict[str, Any]] = {}
    for key in context.partition_keys:
        session = dt.date.fromisoformat(key)
        as_of = latest_as_of(wh, "position_greeks", session)
        if as_of is None:
            raise RiskDataError(f"no position_greeks for {key}: value the books first")
        positions = wh.read("position_greeks", {"as_of": as_of})
        navs = wh.read("book_nav", {"as_of": as_of}).set_index("book")["nav"]
        risk = wh.read("event_risk", {"as_of": as_of})
        books = sorted(config.books or positions["book"].unique())
        unknown = sorted(set(books) - set(positions["book"]))
        if unknown:
            raise RiskDataError(f"books {unknown} have no position_greeks at {as_of.isoformat()}")
        missing_nav = [b for b in books if b not in navs.index]
        if missing_nav:
            raise RiskDataError(f"no book_nav for {missing_nav} at {as_of.isoformat()}: the event budget needs NAV")
        window = upcoming(calendar, session, as_of, policy_file.leads)
        window = window[window["in_window"]]
        moves = event_move_history(
            wh, session, sorted(positions["symbol"].unique()), config.index_symbol, calendar if len(window) else None
        )
        for book in books:
            b_rows = positions[positions["book"] == book].reset_index(drop=True)
            portfolio = book_portfolio(b_rows)
            held = set(b_rows.loc[b_rows["quantity"] != 0, "symbol"])
            betas = b_rows.groupby("symbol")["beta"].first().reindex(list(portfolio.symbols)).fillna(1.0).to_numpy()
            policy = policy_file.for_book(book)
            caps = {
                n: limits.for_book(book).threshold(n)
                for n in ("max_abs_net_delta_shares", "max_abs_gamma_shares", "max_abs_net_dollar_delta")
            }
            b_risk = risk[risk["book"] == book].set_index("event_id")
            confidence = float(b_risk["confidence"].iloc[0]) if len(b_risk) else 0.95
            nav = float(navs[book])
            book_rows = []
            for event in window_events(window):
                if not event.market_wide and event.symbol not in held:
                    continue
                market = event.market_wide
                m = moves.market_moves.get(event.event_type) if market else moves.symbol_moves.get(event.symbol)
                crush = None
                if event.event_type == "earnings" and event.symbol is not None and m is not None:
                    years = (event.reaction_session - session).days / 365.0
                    crush = earnings_vol_crush(portfolio, event.symbol, m, years, event.event_id)
                d = decide(
                    portfolio,
                    event,
                    m,
                    betas if market else None,
                    nav=nav,
                    policy=policy,
                    caps=caps,
                    confidence=confidence,
                    american=AMERICAN,
                    vol_dynamics=crush,
                )
                src = (
                    f"index {config.index_symbol} on past {event.event_type} reaction sessions"
                    if market
                    else f"{event.symbol} on past earnings reaction sessions"
                )
                lead = policy_file.leads.lead(event.event_type)
                book_rows.append(decision_row(as_of, book, d, nav, confidence, policy.loss_measure, lead, src))
                if event.event_id in b_risk.index and not math.isnan(d.loss_before):
                    stored = float(b_risk.loc[event.event_id, policy.loss_measure])
                    if not np.isclose(stored, d.loss_before, rtol=1e-9, atol=1e-6):
                        mismatches.append(f"{book} {event.event_id}: {d.loss_before:,.2f} vs event_risk {stored:,.2f}")
            if not book_rows:
                book_rows.append(no_event_row(as_of, book, nav, policy.max_event_loss_pct_nav * nav))
            for r in book_rows:
                if r["action"] == NO_ACTION:
                    continue
                inputs = {k: r[k] for k in ("actions", "quantity", "trades", "limit_overrides", "reason")}
                inputs |= {"loss_before": r["loss_before"], "loss_after": r["loss_after"], "budget": r["budget"]}
                inputs["expires_at"] = pd.Timestamp(r["expires_at"]).isoformat()
                audits.append(
                    audit_row(
                        as_of, book, "gap_risk_action", f"{r['event_id']} {r['symbol']}", r["action"], inputs, ACTOR
                    )
                )
            audits += expiry_audit(wh, book, as_of)
            rows += book_rows
            parts.append({"as_of": as_of, "book": book})
            documents[book] = gap_document(book_rows, policy.max_event_loss_pct_nav * nav)
    frame = pd.DataFrame(rows, columns=table("gap_risk_actions").data_column_names)
    for c in ("trades", "limit_overrides"):  # NULL, not the text 'NaN', where a row has none
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    shown = frame[frame["action"] != NO_ACTION]
    check = dg.AssetCheckResult(
        check_name="loss_before_matches_event_risk",
        asset_key="gap_risk_actions",
        passed=not mismatches,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"mismatches": len(mismatches), "detail": "; ".join(mismatches[:10]) or "none"},
    )
    yield from publish(
        context,
        wh,
        [TableWrite("gap_risk_actions", frame, parts)],
        checks=[check],
        metadata={
            "gap_risk_actions": {
                "actions": dg.MetadataValue.md(
                    markdown_table(
                        shown[
                            [
                                "book",
                                "event_id",
                                "symbol",
                                "trading_days_until",
                                "action",
                                "quantity",
                                "loss_before",
                                "loss_after",
                                "budget",
                            ]
                        ].round(0),
                        30,
                    )
                    if len(shown)
                    else "(no event inside its lead window)"
                ),
                "json_documents": ", ".join(f"gap_risk/{b}.json" for b in documents),
                "policy": f"{config.gap_risk_file or gap_risk_file()} (version {policy_file.version})",
            }
        },
    )
    appended = (
        wh.append("audit_trail", pd.DataFrame(audits, columns=AUDIT_COLUMNS), run_id=context.run.run_id)
        if audits
        else 0
    )
    if appended:  # audit_trail is one table fed by several steps: this one reports what it appended
        context.log_event(
            dg.AssetMaterialization(
                asset_key="audit_trail",
                description=f"{appended} gap-risk action/expiry rows appended",
                metadata={"rows_appended": appended, "from_asset": "gap_risk_actions", "run_id": context.run.run_id},
            )
        )
    for book, doc in documents.items():  # only once the rows they summarize are published
        exports.write_json(f"gap_risk/{book}.json", doc)
