"""Hedging layer: the volatility index, hedge recommendations per book and the hedge monitor (quant/hedging.py)."""

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from risk_pipeline.calendar import expiry_close_utc
from risk_pipeline.contracts import table
from risk_pipeline.defs.common import (
    OWNERS,
    PARTITIONS,
    PREVIOUS_AND_CURRENT_SESSION,
    PREVIOUS_SESSION,
    TableWrite,
    fail_closed,
    markdown_table,
    partition_sessions,
    publish,
    session_check_spec,
    table_definition_metadata,
)
from risk_pipeline.defs.hedging.config import HedgingConfig, HedgingFile, load_hedging_config
from risk_pipeline.defs.hedging.inputs import (
    AMERICAN,
    CALENDAR_DAYS_PER_SESSION,
    EFFECTIVENESS_WINDOW,
    book_exposure,
    delta_one_candidates,
    greek_rows,
    index_instrument_candidates,
    lines_portfolio,
    option_candidates,
    scenario_blocks,
    searched_block,
    stress_block,
    universe,
)
from risk_pipeline.defs.hedging.stress_effects import stress_effect_rows
from risk_pipeline.errors import RiskDataError
from risk_pipeline.paths import LIMITS_FILE, SCENARIOS_FILE
from risk_pipeline.quant.hedging import (
    HedgeTargets,
    TailPnl,
    Trigger,
    UnitGreekCache,
    beta_hedge_quantity,
    bracketing_expiries,
    build_candidates,
    combine,
    cppi_target,
    expiry_variance,
    finite,
    hedged_pnl,
    hedged_rule_pnl,
    limit_trigger,
    max_urgency,
    per_position_pnl,
    position_greek_arrays,
    scenario_pnl,
    scenario_rows,
    screen_candidates,
    solve_hedge,
    tail_es,
    threshold_trigger,
    vix_from_variances,
)
from risk_pipeline.quant.limits import LimitsConfig, load_limits
from risk_pipeline.quant.portfolio import Portfolio
from risk_pipeline.quant.stress import load_scenarios
from risk_pipeline.queries import latest_as_of
from risk_pipeline.resources import ExportsResource, WarehouseResource
from risk_pipeline.risk_levels import hedging_for_book
from risk_pipeline.warehouse import Between, Warehouse

GROUP = "hedging"
#: Run tag the hedge review schedule sets (the scheduled-review trigger).
REVIEW_TAG = "risk_pipeline/hedge_review"
#: Limits of limit_status whose WARN or BREACH triggers a hedge.
TRIGGER_LIMITS = (
    "max_abs_net_delta_shares",
    "max_abs_net_dollar_delta",
    "max_abs_gamma_shares",
    "max_abs_vega_per_vol_point",
    "max_theta_per_day_loss",
    "max_var_99_1d",
    "max_es_975_1d",
)
SOLVER = "scipy.optimize.milp (HiGHS)"
#: Option lines revalued in full per book (the issue's benchmark size less the delta-one lines): when the
#: chain offers more, every line's P&L in the book's SCREEN_TAIL_SCENARIOS worst scenarios is bounded (``TailPnl``:
#: a European revaluation and the early-exercise premium's bound; in full where the bound can rank it) and the most
#: efficient per dollar for each Greek row over half its level and for the tail are kept.
SCREEN_OPTIONS = 160
SCREEN_TAIL_SCENARIOS = 25
TOL = 1e-6
#: Columns of option_quotes and implied_vols the recommendations read (``option_candidates``; the rest of the
#: chain's columns are never read)
QUOTE_COLUMNS = ("as_of", "underlying", "expiry", "strike", "option_type", "bid", "ask", "underlying_price",
                 "exercise_style", "multiplier")  # fmt: skip
VOL_COLUMNS = ("underlying", "expiry", "strike", "option_type", "implied_vol", "time_to_expiry_years", "rate",
               "dividend_yield", "status")  # fmt: skip


class VolatilityIndexSettings(dg.Config):
    """Index whose chain gives the volatility index."""

    index_symbol: str = "SYNX"
    min_days_to_expiry: int = 7


class HedgingSettings(dg.Config):
    """Books (empty: every book), the files, and the index used for beta hedges."""

    books: list[str] = Field(default_factory=list)
    #: empty: ``RISK_PIPELINE_HEDGING_FILE`` or the shipped data/hedging/hedging.yaml
    hedging_file: str = ""
    limits_file: str = str(LIMITS_FILE)
    scenarios_file: str = str(SCENARIOS_FILE)
    index_symbol: str = "SYNX"


# ----------------------------------------------------------------------------------------------
# volatility index
# ----------------------------------------------------------------------------------------------


def zero_rate(curve: pd.DataFrame, days: float) -> float:
    """Continuous zero rate at ``days`` (linear in tenor, flat beyond the ends)."""
    c = curve.sort_values("tenor_days")
    return float(np.interp(days, c["tenor_days"].to_numpy(float), c["zero_rate"].to_numpy(float)))


def volatility_index_row(
    quotes: pd.DataFrame, curve: pd.DataFrame, as_of: pd.Timestamp, index_symbol: str, min_days: int
) -> dict[str, Any] | None:
    """The Cboe-method 30-day index from the two expiries bracketing 30 days, or None without two usable expiries."""
    q = quotes[quotes["underlying"] == index_symbol]
    if q.empty:
        return None
    expiries = sorted(q["expiry"].unique())
    closes = expiry_close_utc(pd.Series(expiries))
    minutes = np.array([(c - as_of).total_seconds() / 60.0 for c in closes])
    pair = bracketing_expiries(minutes, min_days * 1440.0)
    if pair is None:
        return None
    out: dict[str, Any] = {"as_of": as_of, "as_of_date": as_of.tz_convert("America/New_York").date()}
    parts = []
    for label, i in zip(("near", "next"), pair, strict=True):
        e = q[q["expiry"] == expiries[i]]
        wide = e.pivot_table(index="strike", columns="option_type", values=["bid", "ask"], aggfunc="first")
        wide = wide.dropna()
        if len(wide) < 3:
            return None
        rate = zero_rate(curve, minutes[i] / 1440.0)
        ev = expiry_variance(
            wide.index.to_numpy(float),
            wide[("bid", "C")].to_numpy(float),
            wide[("ask", "C")].to_numpy(float),
            wide[("bid", "P")].to_numpy(float),
            wide[("ask", "P")].to_numpy(float),
            float(minutes[i]),
            rate,
        )
        parts.append(ev)
        out |= {
            f"{label}_expiry": expiries[i],
            f"{label}_minutes": ev.minutes,
            f"{label}_time_years": ev.t_years,
            f"{label}_rate": ev.rate,
            f"{label}_forward": ev.forward,
            f"{label}_k0": ev.k0,
            f"{label}_variance": ev.variance,
            f"{label}_n_strikes": ev.n_strikes,
        }
    level = vix_from_variances(parts[0], parts[1])
    out |= {
        "index_symbol": index_symbol,
        "level": level,
        "level_points": 100.0 * level,
        "n_strikes": parts[0].n_strikes + parts[1].n_strikes,
        "method": "Cboe VIX white paper: 30-day variance from the OTM strips of two bracketing expiries",
    }
    return out


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["option_quotes", "rates_curve"],
    kinds={"pandas"},
    owners=OWNERS,
    description=(
        "30-day volatility index of the index chain by the Cboe VIX white-paper method (OTM strip variance of "
        "the two expiries bracketing 30 days, interpolated in minutes), at the session's latest option "
        "snapshot; one row per snapshot, so the partitions hold its history."
    ),
    metadata=table_definition_metadata("volatility_index"),
)
@fail_closed
def volatility_index(
    context: dg.AssetExecutionContext, config: VolatilityIndexSettings, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    wh = warehouse.get()
    rows, parts, notes = [], [], []
    for session in partition_sessions(context):
        as_of = latest_as_of(wh, "option_quotes", session)
        if as_of is None:
            raise RiskDataError(f"no option_quotes for {session}: the volatility index needs the index chain")
        quotes = wh.read("option_quotes", {"as_of": as_of, "underlying": config.index_symbol})
        curve = wh.read("rates_curve", {"as_of_date": session})
        if curve.empty:
            raise RiskDataError(f"no rates_curve for {session}: the volatility index needs the zero rates")
        row = volatility_index_row(quotes, curve, as_of, config.index_symbol, config.min_days_to_expiry)
        parts.append({"as_of": as_of})
        if row is None:
            notes.append(f"{session}: fewer than two usable {config.index_symbol} expiries")
        else:
            rows.append(row)
    frame = pd.DataFrame(rows, columns=table("volatility_index").data_column_names)
    yield from publish(
        context,
        wh,
        [TableWrite("volatility_index", frame, parts)],
        metadata={
            "volatility_index": {
                "levels": dg.MetadataValue.md(
                    markdown_table(
                        frame[["as_of", "index_symbol", "level_points", "n_strikes"]].round({"level_points": 3}), 10
                    )
                ),
                "not_computed": "; ".join(notes) or "none",
            }
        },
    )


# ----------------------------------------------------------------------------------------------
# hedge recommendations
# ----------------------------------------------------------------------------------------------


def book_triggers(
    book: str,
    limits_rows: pd.DataFrame,
    state: pd.Series | None,
    gap_rows: pd.DataFrame,
    es_5d_pct: float,
    worst_stress_pct: float,
    cfg: HedgingConfig,
    scheduled: bool,
) -> list[Trigger]:
    """Every trigger of one book (module docstring of quant/hedging.py for the urgency rules)."""
    out: list[Trigger] = []
    lim = limits_rows[limits_rows["limit_name"].isin(TRIGGER_LIMITS) & limits_rows["status"].isin(["WARN", "BREACH"])]
    for r in lim.itertuples():
        out.append(limit_trigger(r.limit_name, r.status, float(r.value), float(r.threshold), float(r.utilization)))
    for t in (
        threshold_trigger("tail_es", es_5d_pct, cfg.tail_es_threshold_pct_nav, "97.5 % 5-day ES"),
        threshold_trigger("stress_loss", worst_stress_pct, cfg.max_stress_loss_pct_nav, "worst stress loss"),
    ):
        if t is not None:
            out.append(t)
    if state is not None and bool(state.get("hedges_required")):
        level = str(state.get("preservation_level"))
        out.append(
            Trigger(
                "preservation_hedges_required",
                f"capital-preservation level {level} requires hedges",
                None,
                None,
                "IMMEDIATE" if level.lower() == "maximum" else "HIGH",
            )
        )
    acting = gap_rows[gap_rows["action"] != "none"] if len(gap_rows) else gap_rows
    for r in acting.itertuples():
        out.append(
            Trigger(
                "event_window",
                f"{r.event_type} {r.event_id} ({r.symbol}) in its lead window: {r.action}",
                None,
                None,
                "MEDIUM",
            )
        )
    if scheduled and out:
        out.append(Trigger("scheduled_review", "hourly hedge review", None, None, "LOW"))
    return out


def _metrics(greeks: dict[str, float], pnl: np.ndarray, sl: dict[str, slice]) -> dict[str, float]:
    """Book metrics from Greek totals and the stacked scenario P&L (losses positive)."""
    return {
        "net_delta": greeks["delta"],
        "dollar_delta": greeks["dollar_delta"],
        "gamma": greeks["gamma"],
        "vega_per_vol_point": greeks["vega_per_vol_point"],
        "theta_per_day": greeks["theta_per_day"],
        "es_975_1d": tail_es(pnl[sl["es_1d"]], 0.975) if sl["es_1d"].stop > sl["es_1d"].start else float("nan"),
        "es_975_5d": tail_es(pnl[sl["es_5d"]], 0.975) if sl["es_5d"].stop > sl["es_5d"].start else float("nan"),
        "worst_stress_loss": float(-pnl[sl["stress"]].min()) if sl["stress"].stop else 0.0,
        "worst_scenario_loss": float(-pnl.min()),
    }


GREEK_COLUMNS = ("delta", "dollar_delta", "gamma", "vega_per_vol_point", "theta_per_day")


def rationale(book: str, triggers: list[Trigger], lines: pd.DataFrame, before: dict, after: dict, sol: Any) -> str:
    """One sentence from the numbers."""
    what = ", ".join(
        f"{'buy' if r.side > 0 else 'sell'} {r.quantity:,.0f} {r.label}" for r in lines.itertuples() if r.quantity
    )
    change = (
        f"97.5 % 5-day ES {before['es_975_5d']:,.0f} -> {after['es_975_5d']:,.0f}, worst stress loss "
        f"{before['worst_stress_loss']:,.0f} -> {after['worst_stress_loss']:,.0f}, vega "
        f"{before['vega_per_vol_point']:,.0f} -> {after['vega_per_vol_point']:,.0f}, dollar delta "
        f"{before['dollar_delta']:,.0f} -> {after['dollar_delta']:,.0f}"
    )
    why = "; ".join(t.kind for t in triggers)
    if sol.partial:
        reason = f"{', '.join(sol.binding)} cannot be met within the budget"
        if sol.status == "time_limit" and np.isfinite(sol.violation):  # the best partial hedge found, its bound
            excess = f"target rows' excess {sol.violation:.4g} in units of their levels"
            reason = (
                f"{reason} (the solver stopped at its time limit: {excess}, at least {sol.violation_bound:.4g} for "
                "any hedge within the budget)"
                if np.isfinite(sol.violation_bound)
                else f"no hedge meeting {', '.join(sol.binding)} was found before the time limit ({excess}, no bound "
                "proven)"
            )
        return f"{book}: best partial hedge ({what or 'no trade'}) because {reason}; {change}; triggered by {why}."
    unproven = ""
    if sol.status == "time_limit":  # a verified hedge, but the time limit stopped the proof of optimality
        bound = (
            f", cost at most {sol.gap:.2%} above the lower bound {sol.lower_bound:,.0f}"
            if np.isfinite(sol.gap) and np.isfinite(sol.lower_bound)
            else ", no lower bound proven"
        )
        unproven = f" (not proven optimal: the solver stopped at its time limit{bound})"
    return f"{book}: {what or 'no trade needed'} for {sol.cost:,.0f} in costs{unproven}; {change}; triggered by {why}."


def line_label(r: Any) -> str:
    if r.instrument_type == "option":
        return f"{r.symbol} {pd.Timestamp(r.expiry).date()} {r.strike:g}{r.option_type}"
    if r.instrument_type in ("future", "etf"):
        return f"{r.instrument_symbol} ({r.instrument_type} on {r.symbol})"
    return str(r.symbol)


def recommend_book(
    wh: Warehouse,
    session: dt.date,
    as_of: pd.Timestamp,
    book: str,
    rows: pd.DataFrame,
    nav_row: pd.Series,
    quotes: pd.DataFrame,
    vols: pd.DataFrame,
    instruments: pd.DataFrame,
    index_spot: float | None,
    triggers_in: dict[str, Any],
    cfg: HedgingConfig,
    limits: LimitsConfig,
    library: Any,
    settings: HedgingSettings,
    greek_cache: UnitGreekCache | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """The book's recommendation rows (none without a trigger), a summary for the metadata and JSON, and the
    optimized hedge's effect per stress scenario (``hedge_stress_effects`` rows; none without a trigger).
    ``greek_cache``: the unit Greeks of the options earlier books' candidates priced (the same chain's contracts
    are priced once per snapshot)."""
    nav = float(nav_row["nav"])
    spots = rows.groupby("symbol")["spot"].first().astype(float).to_dict()
    # the index is a candidate (and the beta hedge's instrument) when the market has it
    extra = {} if index_spot is None else {settings.index_symbol: index_spot}
    for sym, px in extra.items():
        spots.setdefault(sym, px)
    p = universe(rows, extra)
    blocks = scenario_blocks(wh, session, p, rows, library)
    sl = blocks.slices()
    book_pnl = np.concatenate([scenario_pnl(p, sc, h, AMERICAN) for sc, h in blocks.blocks()])
    totals = {c: float(rows[c].sum()) for c in GREEK_COLUMNS}
    before = _metrics(totals, book_pnl, sl)
    triggers = book_triggers(
        book,
        triggers_in["limits"],
        triggers_in["state"],
        triggers_in["gap"],
        before["es_975_5d"] / nav,
        before["worst_stress_loss"] / nav,
        cfg,
        triggers_in["scheduled"],
    )
    # CPPI on the risky (non-hedge) positions' beta-weighted dollar delta
    risky = ~rows["strategy"].isin(list(limits.hedge_strategies))
    beta_dollars = rows["beta_weighted_delta"].fillna(rows["dollar_delta"])  # index-equivalent dollar delta
    bwdd = float(beta_dollars.sum())
    risky_exposure = float(beta_dollars[risky].sum())
    cppi = cppi_target(nav, float(nav_row["peak_nav"]), cfg.cppi_floor_fraction, cfg.cppi_multiplier, risky_exposure)
    summary: dict[str, Any] = {
        "history_missing": blocks.history_missing,
        "stress_vol_rule": blocks.stress_vol_source,
        "book": book,
        "as_of": as_of.isoformat(),
        "nav": nav,
        "triggers": [t.to_dict() for t in triggers],
        "metrics_before": finite(before),
        "cppi": cppi.__dict__,
    }
    if not triggers:
        summary["status"] = "no trigger"
        summary["reason"] = (
            f"no Greek/VaR/ES limit in WARN or BREACH, 97.5 % 5-day ES {before['es_975_5d'] / nav:.2%} of NAV "
            f"(threshold {cfg.tail_es_threshold_pct_nav:.0%}), worst stress loss "
            f"{before['worst_stress_loss'] / nav:.2%} (threshold {cfg.max_stress_loss_pct_nav:.0%}), no hedges "
            "required by the preservation level, no event window"
        )
        return [], summary, []
    g_rows, warn = greek_rows(limits, p.symbols)
    opts, skipped = option_candidates(quotes, vols, spots, as_of, cfg)
    parts = [opts, delta_one_candidates(spots, settings.index_symbol, cfg)]
    if index_spot is not None and len(instruments):  # index futures and inverse ETFs (instrument_quotes)
        parts.append(index_instrument_candidates(instruments, settings.index_symbol, index_spot, as_of, cfg))
    cands = pd.concat([f for f in parts if len(f)], ignore_index=True)
    for c in ("instrument_symbol", "index_units", "carry"):
        if c not in cands:
            cands[c] = np.nan
    is_opt = (cands["instrument_type"] == "option").to_numpy(bool)
    budget = cfg.max_hedge_cost_pct_nav * nav
    horizon_days = cfg.horizon_sessions * CALENDAR_DAYS_PER_SESSION
    exposure = book_exposure(rows, g_rows)

    def candidates(
        c: pd.DataFrame, scenarios: list, greeks: dict[str, np.ndarray] | None = None, lines: Portfolio | None = None
    ) -> Any:
        is_option = (c["instrument_type"] == "option").to_numpy(bool)
        mult = np.where(is_option | c["instrument_type"].isin(["future", "etf"]).to_numpy(bool),
                        c["multiplier"].to_numpy(float) if "multiplier" in c else 1.0, 1.0)  # fmt: skip
        if lines is None:
            lines = lines_portfolio(c, spots, c["side"].to_numpy(float))
        return build_candidates(
            lines, c["price"].to_numpy(float),
            c["mid"].to_numpy(float), g_rows, scenarios, symbol_columns=p.symbols,
            horizon_calendar_days=horizon_days, financing_rate=cfg.financing_rate, budget=budget,
            american=AMERICAN, labels=c["label"].tolist() if "label" in c else None, price_multiplier=mult,
            delta_one_carry=c["carry"].to_numpy(float), greeks=greeks, greek_cache=greek_cache,
        ), mult  # fmt: skip

    # pre-screen: every line's Greeks and cost, its P&L in the book's worst scenarios only, the most efficient options
    # kept (the kept lines' Greeks are the pre-screen's: each line's are its own); the tail P&L bounded by a European
    # revaluation and revalued in full only for the options whose bound can rank them among the kept (TailPnl: the
    # same lines kept); labels only for the kept lines
    n_listed = len(cands)
    line_greeks = None
    if int(is_opt.sum()) > SCREEN_OPTIONS and book_pnl.size:
        worst = np.sort(np.argsort(book_pnl, kind="stable")[:SCREEN_TAIL_SCENARIOS])
        tail, start = [], 0
        for sc, h in blocks.blocks():
            inside = worst[(worst >= start) & (worst < start + sc.n_scenarios)] - start
            if inside.size:
                tail.append((scenario_rows(sc, inside), h))
            start += sc.n_scenarios
        listed = lines_portfolio(cands, spots, cands["side"].to_numpy(float))
        pre, _ = candidates(cands, [], lines=listed)
        tail_pnl = TailPnl(listed, tail, p.symbols, AMERICAN)
        kept = screen_candidates(pre, is_opt, exposure, warn, book_pnl[worst], SCREEN_OPTIONS, tail_pnl)
        line_greeks = {k: v[kept] for k, v in pre.line_greeks.items()}
        del pre
        cands = cands.iloc[kept].reset_index(drop=True)
    cands["label"] = [line_label(r) for r in cands.itertuples()]
    hc, price_mult = candidates(cands, blocks.blocks(), line_greeks)
    targets = HedgeTargets(
        greek_names=g_rows.names,
        exposure=exposure,
        warn_level=warn,
        book_pnl=book_pnl,
        loss_cap=cfg.max_scenario_loss_pct_nav * nav,
        es_rows=np.arange(sl["es_5d"].start, sl["es_5d"].stop),
        es_confidence=0.975,
        es_target=cfg.es_target_pct_nav * nav,
        budget=budget,
        min_notional=cfg.min_hedge_notional,
    )
    sol = solve_hedge(hc, targets, time_limit=cfg.time_limit_seconds)
    chosen = np.flatnonzero(sol.quantity > 0)
    picked = cands.iloc[chosen].copy()
    picked["quantity"] = sol.quantity[chosen]
    # verification: the hedged book revalued in full, Greeks of the lines through the position_greeks code
    hedge_p = lines_portfolio(picked, spots, picked["side"].to_numpy(float) * picked["quantity"].to_numpy(float))
    # no line: the hedged book is the book, whose revaluations (the same calls on the same positions, so the same
    # numbers) are book_pnl and its stress block
    hedged = combine(p, hedge_p) if chosen.size else None
    # the hedged book's P&L: the book's (book_pnl) plus the lines' own full revaluation in the same scenarios (each
    # position is revalued on its own: the hedged book revalued, summed in another grouping; equal to rounding)
    after_pnl = (
        hedged_pnl(book_pnl, hedged, p.n_positions, blocks.blocks(), AMERICAN) if hedged is not None else book_pnl
    )
    lg = position_greek_arrays(hedge_p)
    after_totals = {c: totals[c] + float(lg[c].sum()) for c in GREEK_COLUMNS}
    after = _metrics(after_totals, after_pnl, sl)
    after_exposure = targets.exposure + (hc.greeks[:, chosen] @ sol.quantity[chosen] if chosen.size else 0.0)
    greek_ok = bool(np.all(np.abs(after_exposure) <= warn * (1 + TOL) + TOL))
    meets = (
        greek_ok
        and after["worst_scenario_loss"] <= targets.loss_cap * (1 + TOL) + TOL
        and not after["es_975_5d"] > targets.es_target * (1 + TOL) + TOL  # NaN: no history, not constrained
    )
    urgency = max_urgency([t.urgency for t in triggers])
    picked["label"] = picked["label"].astype(str)
    text = rationale(book, triggers, picked, before, after, sol)
    common = {
        "as_of": as_of,
        "as_of_date": session,
        "book": book,
        "nav": nav,
        **{f"{k}_before": v for k, v in before.items()},
        **{f"{k}_after": v for k, v in after.items()},
        "trigger": json.dumps([t.to_dict() for t in triggers]),
        "trigger_kinds": ",".join(sorted({t.kind for t in triggers})),
        "urgency": urgency,
        "rationale": text,
        "solver": SOLVER,
        "solver_status": sol.status,
        "solve_seconds": sol.solve_seconds,
        "partial": sol.partial,
        "binding_constraints": ",".join(sol.binding) or None,
        "meets_constraints": meets,
        "n_candidates": hc.n,
        "n_scenarios": int(book_pnl.size),
        "history_start": blocks.history_first,
        "history_end": blocks.history_last,
        "es_target": targets.es_target,
        "loss_cap": targets.loss_cap,
        "budget": budget,
        "total_cost": sol.cost,
        "total_outlay": sol.outlay,
        "horizon_sessions": cfg.horizon_sessions,
        "beta_weighted_dollar_delta": bwdd,
        "cppi_floor": cppi.floor,
        "cppi_target_exposure": cppi.target_exposure,
        "risky_exposure": cppi.risky_exposure,
        "cppi_scale": cppi.scale,
    }
    out = []
    for n, j in enumerate(chosen, start=1):
        c = cands.iloc[j]
        opt = c["instrument_type"] == "option"
        listed_line = c["instrument_type"] in ("future", "etf")
        q = float(sol.quantity[j])
        out.append(
            {
                **common,
                "hedge_id": f"opt-{n:02d}",
                "kind": "optimized",
                "instrument_type": c["instrument_type"],
                "symbol": c["instrument_symbol"] if listed_line else c["symbol"],
                "expiry": c["expiry"] if opt or c["instrument_type"] == "future" else None,
                "strike": float(c["strike"]) if opt else None,
                "option_type": c["option_type"] if opt else None,
                "exercise_style": c["exercise_style"] if opt else None,
                "side": "buy" if c["side"] > 0 else "sell",
                "quantity": q,
                "multiplier": float(price_mult[j]),
                "price": float(c["price"]),
                "price_side": c["price_side"],
                "mid": float(c["mid"]),
                "spot": spots[c["symbol"]],
                "implied_vol": float(c["implied_vol"]) if opt else None,
                "time_to_expiry_years": float(c["time_to_expiry_years"]) if opt else None,
                "rate": float(c["rate"]) if opt else None,
                "dividend_yield": float(c["dividend_yield"]) if opt else None,
                "estimated_cost": q * float(hc.cost[j]),
                "carry_cost": q * float(hc.cost[j] - abs(c["price"] - c["mid"]) * price_mult[j]),
                "premium": q * float(hc.premium[j]),
            }
        )
    # the hedged book under the stress layer's rule, its idiosyncratic moves searched again (as stress_results would;
    # the book's first pass reused for the symbols without a hedge line: the same numbers); in the scenarios whose
    # shocks are the book's (no idiosyncratic move) the book's P&L plus the lines' (as after_pnl)
    hedged_stress = book_pnl[sl["stress"]]
    if hedged is not None:
        # stored shocks carry no pass 1: the one stress_results stores with them, else the book searched again
        book_block = searched_block(blocks.stress, p, rows, library, blocks.stress_vol, wh, blocks.stress_as_of)
        hedged_block = stress_block(hedged, rows, library, blocks.stress_vol, book_block)
        hedged_stress = hedged_rule_pnl(hedged_stress, blocks.stress, hedged, p.n_positions, hedged_block)
    effects = stress_effect_rows(
        wh, as_of, session, book, nav, blocks, book_pnl[sl["stress"]], hedged_stress,
        [r["hedge_id"] for r in out], library.thresholds,
    )  # fmt: skip
    if not out:
        out.append({**common, "hedge_id": "none", "kind": "none", "instrument_type": "none", "quantity": 0.0})
    # capital preservation: the beta hedge, sized by closed form, with the front index future (else the
    # inverse ETF, else the index itself)
    if (
        index_spot is not None
        and triggers_in["state"] is not None
        and bool(triggers_in["state"].get("hedges_required"))
    ):
        beta_line = beta_hedge_line(cands, index_spot, settings.index_symbol, cfg)
        qty = beta_hedge_quantity(bwdd, cfg.beta_target_dollar_delta, beta_line["dollar_delta_per_unit"])
        if qty:
            side = 1 if qty > 0 else -1
            price, mid, mult = beta_line["ask" if side > 0 else "bid"], beta_line["mid"], beta_line["multiplier"]
            out.append(
                {
                    **common,
                    "hedge_id": "beta",
                    "kind": "beta_hedge",
                    "instrument_type": beta_line["instrument_type"],
                    "symbol": beta_line["symbol"],
                    "expiry": beta_line["expiry"],
                    "side": "buy" if side > 0 else "sell",
                    "quantity": float(abs(qty)),
                    "multiplier": mult,
                    "price": price,
                    "price_side": "ask" if side > 0 else "bid",
                    "mid": mid,
                    "spot": index_spot,
                    "estimated_cost": abs(qty) * (abs(price - mid) * mult + beta_line["carry"][side]),
                    "carry_cost": abs(qty) * beta_line["carry"][side],
                    "rationale": (
                        f"{book}: preservation level requires hedges; {'buy' if qty > 0 else 'sell'} {abs(qty):,} "
                        f"{beta_line['symbol']} ({beta_line['dollar_delta_per_unit']:,.0f} beta-weighted dollar "
                        f"delta each) to take beta-weighted dollar delta {bwdd:,.0f} to "
                        f"{cfg.beta_target_dollar_delta:,.0f} (CPPI target risky exposure "
                        f"{cppi.target_exposure:,.0f}, scale {cppi.scale:.2f})."
                    ),
                }
            )
    summary |= {
        "status": sol.status,
        "partial": sol.partial,
        "binding_constraints": list(sol.binding),
        "metrics_after": finite(after),
        "meets_constraints": meets,
        "skipped_quotes": skipped,
        "n_candidates": hc.n,
        "n_candidates_listed": n_listed,
        "solve_seconds": sol.solve_seconds,
        "solver_message": sol.message,
        "lower_bound": finite({"v": sol.lower_bound})["v"],
        "mip_gap": finite({"v": sol.gap})["v"],
        "first_feasible_seconds": finite({"v": sol.first_feasible_seconds})["v"],
        "violation": finite({"v": sol.violation})["v"],
        "violation_lower_bound": finite({"v": sol.violation_bound})["v"],
        "lines": [
            {
                k: (v.isoformat() if isinstance(v, dt.date | pd.Timestamp) else v)
                for k, v in r.items()
                if k
                in (
                    "hedge_id",
                    "kind",
                    "instrument_type",
                    "symbol",
                    "expiry",
                    "strike",
                    "option_type",
                    "side",
                    "quantity",
                    "price",
                    "price_side",
                    "estimated_cost",
                )
            }
            for r in out
        ],
        "urgency": urgency,
        "rationale": text,
    }
    return out, summary, effects


def beta_hedge_line(cands: pd.DataFrame, index_spot: float, index_symbol: str, cfg: HedgingConfig) -> dict[str, Any]:
    """The beta hedge's instrument: the nearest index future, else the inverse ETF, else the index.

    ``dollar_delta_per_unit``: beta-weighted dollar delta of one unit (future: multiplier x F, i.e.
    multiplier x S exp((r - q) T); ETF: leverage x price; index: its level); ``carry`` by side (+1 / -1)
    over the horizon, as the optimizer's candidates.
    """
    for kind in ("future", "etf"):
        rows = cands[cands["instrument_type"] == kind]
        if len(rows):
            first = rows.sort_values("expiry" if kind == "future" else "instrument_symbol", kind="stable")
            sym = first["instrument_symbol"].iloc[0]
            both = rows[rows["instrument_symbol"] == sym].set_index("side")
            return {
                "instrument_type": kind,
                "symbol": sym,
                "expiry": both["expiry"].iloc[0] if kind == "future" else None,
                "multiplier": float(both["multiplier"].iloc[0]),
                "dollar_delta_per_unit": float(both["index_units"].iloc[0]) * index_spot,
                "bid": float(both.loc[-1, "price"]),
                "ask": float(both.loc[1, "price"]),
                "mid": float(both["mid"].iloc[0]),
                "carry": {1: float(both.loc[1, "carry"]), -1: float(both.loc[-1, "carry"])},
            }
    h = cfg.stock_half_spread_bps / 1e4
    financing = index_spot * cfg.financing_rate * cfg.horizon_sessions * CALENDAR_DAYS_PER_SESSION / 365.0
    return {
        "instrument_type": "index",
        "symbol": index_symbol,
        "expiry": None,
        "multiplier": 1.0,
        "dollar_delta_per_unit": index_spot,
        "bid": index_spot * (1 - h),
        "ask": index_spot * (1 + h),
        "mid": index_spot,
        "carry": {1: financing, -1: financing},
    }


def recommendation_checks(frame: pd.DataFrame) -> list[dg.AssetCheckResult]:
    """Quantities whole, cost within the cap, after-metrics meeting every constraint (partial hedges flagged)."""
    if frame.empty:
        whole, within, bad = True, True, pd.DataFrame()
    else:
        q = frame["quantity"].fillna(0).to_numpy(float)
        whole = bool(np.all(q == np.round(q)))
        per_book = frame.groupby("book").agg(outlay=("total_outlay", "first"), budget=("budget", "first"))
        within = bool((per_book["outlay"] <= per_book["budget"] * (1 + TOL) + TOL).all())
        bad = frame[~frame["partial"].astype(bool) & ~frame["meets_constraints"].astype(bool)]
    partial = sorted(set(frame.loc[frame["partial"].astype(bool), "book"])) if len(frame) else []
    return [
        dg.AssetCheckResult(
            check_name="quantities_whole",
            asset_key="hedge_recommendations",
            passed=whole,
            metadata={"rows": len(frame)},
        ),
        dg.AssetCheckResult(
            check_name="cost_within_cap",
            asset_key="hedge_recommendations",
            passed=within,
            metadata={"rule": "premium plus costs <= max_hedge_cost_pct_nav x NAV per book"},
        ),
        dg.AssetCheckResult(
            check_name="after_metrics_meet_constraints",
            asset_key="hedge_recommendations",
            passed=bad.empty,
            metadata={
                "failing_books": ", ".join(sorted(set(bad["book"]))) if len(bad) else "none",
                "flagged_partial_books": ", ".join(partial) or "none",
            },
        ),
    ]


def latest_instruments(wh: Warehouse, session: dt.date, as_of: pd.Timestamp) -> pd.DataFrame:
    """The session's latest instrument_quotes snapshot at or before ``as_of`` (empty when there is none)."""
    t = wh.query(
        "SELECT MAX(as_of) AS t FROM risk.instrument_quotes WHERE as_of_date = ? AND as_of <= ?", [session, as_of]
    )["t"].iloc[0]
    return wh.read("instrument_quotes", {"as_of": pd.Timestamp(t)}) if pd.notna(t) else pd.DataFrame()


def _scheduled(context: dg.AssetExecutionContext) -> bool:
    return REVIEW_TAG in context.run.tags


HEDGE_DEPS = [
    "position_greeks",
    "book_nav",
    "option_quotes",
    "implied_vols",
    "limit_status",
    "trading_state",
    "market_prices",
    "atm_vol_history",
    "gap_risk_actions",
    "volatility_index",
    "instrument_quotes",
    "stress_results",
]


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "hedge_recommendations",
            group_name=GROUP,
            deps=HEDGE_DEPS,
            kinds={"pandas", "scipy", "json"},
            owners=OWNERS,
            description=(
                "Per book with a trigger (Greek/VaR/ES limit in WARN or BREACH, 97.5 % 5-day ES or worst stress "
                "loss over its threshold, hedges required by the preservation level, an event window, the hourly "
                "review): the cheapest whole-contract hedge from the live chain, stocks and the index "
                "(scipy.optimize.milp) meeting the Greek warning levels, the loss cap in every stress and VaR "
                "scenario and the ES target (Rockafellar-Uryasev), within the cost cap; verified by full "
                "revaluation; the beta hedge and CPPI when the preservation level requires hedges. Stress "
                "scenarios under stress_results' vol rule and parameters. Also exports/hedges/<book>.json."
            ),
            metadata=table_definition_metadata("hedge_recommendations"),
        ),
        dg.AssetSpec(
            "hedge_stress_effects",
            group_name=GROUP,
            deps=HEDGE_DEPS,
            kinds={"pandas"},
            owners=OWNERS,
            description=(
                "Per book with a hedge recommendation and stress scenario: loss before and after the optimized "
                "hedge under stress_results' scenario and vol rule, and whether it brings the loss under HIGH."
            ),
            metadata=table_definition_metadata("hedge_stress_effects"),
        ),
    ],
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        session_check_spec(
            "quantities_whole", asset="hedge_recommendations", blocking=True, description="Whole contracts only."
        ),
        session_check_spec(
            "cost_within_cap",
            asset="hedge_recommendations",
            blocking=True,
            description="Premium plus costs of each book's hedge at most max_hedge_cost_pct_nav x NAV.",
        ),
        session_check_spec(
            "after_metrics_meet_constraints",
            asset="hedge_recommendations",
            blocking=True,
            description=(
                "Every hedge not flagged partial, fully revalued, meets the Greek warning levels, the scenario "
                "loss cap and the ES target."
            ),
        ),
    ],
)
@fail_closed
def hedge_recommendations(
    context: dg.AssetExecutionContext, config: HedgingSettings, warehouse: WarehouseResource, exports: ExportsResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    wh = warehouse.get()
    hfile: HedgingFile = load_hedging_config(config.hedging_file or None)
    limits = load_limits(config.limits_file)
    library = load_scenarios(config.scenarios_file)
    rows_out: list[dict[str, Any]] = []
    effects_out: list[dict[str, Any]] = []
    parts, documents, reasons, notes = [], {}, {}, []
    for session in partition_sessions(context):
        as_of = latest_as_of(wh, "position_greeks", session)
        if as_of is None:
            raise RiskDataError(f"no position_greeks for {session}: value the books first")
        positions = wh.read("position_greeks", {"as_of": as_of})
        navs = wh.read("book_nav", {"as_of": as_of}).set_index("book")
        # the whole chain at the snapshot: only the columns this layer reads (option_candidates, the index spot)
        quotes = wh.read("option_quotes", {"as_of": as_of}, columns=QUOTE_COLUMNS)
        vols = wh.read("implied_vols", {"as_of": as_of}, columns=VOL_COLUMNS)
        instruments = latest_instruments(wh, session, as_of)
        limit_rows = wh.read("limit_status", {"as_of": as_of})
        states = wh.read("trading_state", {"as_of": as_of}).set_index("book")
        gap_as_of = wh.query(
            "SELECT MAX(as_of) AS t FROM risk.gap_risk_actions WHERE as_of <= ? AND as_of >= ?",
            [as_of, as_of - pd.Timedelta(days=1)],
        )["t"].iloc[0]
        gap = wh.read("gap_risk_actions", {"as_of": gap_as_of}) if pd.notna(gap_as_of) else pd.DataFrame()
        index_close = wh.read("market_prices", {"as_of_date": Between(session - dt.timedelta(days=10), session),
                                                 "symbol": config.index_symbol})  # fmt: skip
        index_q = quotes.loc[quotes["underlying"] == config.index_symbol, "underlying_price"]
        if len(index_q):
            index_spot = float(index_q.median())
        elif len(index_close):
            index_spot = float(index_close.sort_values("as_of_date")["close"].iloc[-1])
        else:  # a market without the index (e.g. a folder source of single names): no index lines, no beta hedge
            index_spot = None
            notes.append(f"{session}: no price of the index {config.index_symbol}; no index lines or beta hedge")
        books = sorted(config.books or positions["book"].unique())
        greek_cache = UnitGreekCache()  # one snapshot's chain: each contract's unit Greeks priced once for every book
        for book in books:
            rows = positions[positions["book"] == book].reset_index(drop=True)
            if rows.empty:
                raise RiskDataError(f"book {book} has no position_greeks at {as_of.isoformat()}")
            if book not in navs.index:
                raise RiskDataError(f"no book_nav for {book} at {as_of.isoformat()}: hedge sizing needs NAV")
            trig = {
                "limits": limit_rows[limit_rows["book"] == book],
                "state": states.loc[book] if book in states.index else None,
                "gap": gap[gap["book"] == book] if len(gap) else gap,
                "scheduled": _scheduled(context),
            }
            out, summary, effects = recommend_book(
                wh, session, as_of, book, rows, navs.loc[book], quotes, vols, instruments, index_spot, trig,
                hedging_for_book(hfile, book, limits.for_book(book).risk_level), limits.for_book(book), library, config,
                greek_cache,
            )  # fmt: skip
            for r in out:
                r["config_version"] = hfile.version
            rows_out += out
            effects_out += effects
            parts.append({"as_of": as_of, "book": book})
            documents[book] = summary
            if not out:
                reasons[book] = summary["reason"]
    frame = pd.DataFrame(rows_out, columns=table("hedge_recommendations").data_column_names)
    for c in ("expiry", "strike", "option_type", "exercise_style", "binding_constraints"):
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    shown = frame[["book", "hedge_id", "symbol", "side", "quantity", "price", "estimated_cost", "urgency"]]
    effects_frame = pd.DataFrame(effects_out, columns=table("hedge_stress_effects").data_column_names)
    for c in ("stress_as_of", "hedge_ids", "liquidation_cost", "pnl_before", "pnl_pct_nav_before", "risk_level_before",
              "pnl_after", "pnl_pct_nav_after", "risk_level_after", "under_high_threshold"):  # fmt: skip
        effects_frame[c] = effects_frame[c].astype(object).where(effects_frame[c].notna(), None)
    reaching = effects_frame[effects_frame["risk_level_before"].isin(["HIGH", "CRITICAL"])]
    yield from publish(
        context,
        wh,
        [TableWrite("hedge_recommendations", frame, parts), TableWrite("hedge_stress_effects", effects_frame, parts)],
        checks=recommendation_checks(frame),
        metadata={
            "hedge_recommendations": {
                "recommendations": dg.MetadataValue.md(markdown_table(shown.round(2), 30)),
                "no_trigger": dg.MetadataValue.md(
                    "\n".join(f"- {b}: {r}" for b, r in reasons.items()) or "every book evaluated had a trigger"
                ),
                "json_documents": ", ".join(f"hedges/{b}.json" for b in documents),
                "config": f"{hfile.path} (version {hfile.version})",
                "notes": "; ".join(notes) or "none",
                "solver": SOLVER,
            },
            "hedge_stress_effects": {
                "high_critical_scenarios": len(reaching),
                "brought_under_high": int(reaching["under_high_threshold"].fillna(False).astype(bool).sum()),
            },
        },
    )
    for book, doc in documents.items():  # only once the rows they summarize are published
        exports.write_json(f"hedges/{book}.json", json.loads(json.dumps(doc, default=str)))


# ----------------------------------------------------------------------------------------------
# hedge monitor
# ----------------------------------------------------------------------------------------------


def performance_rows(
    wh: Warehouse,
    session: dt.date,
    as_of: pd.Timestamp,
    book: str,
    rows: pd.DataFrame,
    previous_rows: pd.DataFrame,
    previous_perf: pd.DataFrame,
    nav: float,
    hedge_strategies: tuple[str, ...],
    cfg: HedgingConfig,
    library: Any,
) -> list[dict[str, Any]]:
    """One row per hedge position and one ('*') for all of them: P&L, protection, cost drag, effectiveness."""
    is_hedge = rows["strategy"].isin(list(hedge_strategies)).to_numpy(bool)
    if not is_hedge.any():
        return []
    p = universe(rows, {})
    blocks = scenario_blocks(wh, session, p, rows, library)
    window = blocks.hist_1d.take(blocks.hist_1d.n_scenarios - EFFECTIVENESS_WINDOW, blocks.hist_1d.n_scenarios)
    stacked = [
        (blocks.stress, 0.0),
        (blocks.hist_5d, 5 * CALENDAR_DAYS_PER_SESSION),
        (window, CALENDAR_DAYS_PER_SESSION),
    ]
    per_pos = np.vstack([per_position_pnl(p, sc, h, AMERICAN) for sc, h in stacked])
    n_st, n_5 = blocks.stress.n_scenarios, blocks.hist_5d.n_scenarios
    st, f5, w = slice(0, n_st), slice(n_st, n_st + n_5), slice(n_st + n_5, None)
    book_pnl = per_pos.sum(axis=1)
    prev = previous_rows.set_index("position_id") if len(previous_rows) else pd.DataFrame()
    prev_cum = previous_perf.set_index("position_id")["hedge_pnl_cum"] if len(previous_perf) else pd.Series(dtype=float)
    units = (rows["quantity"] * rows["multiplier"]).to_numpy(float)
    price = rows["price"].to_numpy(float)
    out = []
    hedge_idx = np.flatnonzero(is_hedge)

    def measures(remove: np.ndarray) -> dict[str, float]:
        without = book_pnl - per_pos[:, remove].sum(axis=1)
        worst_with, worst_without = float(-book_pnl[st].min()), float(-without[st].min())
        has_history = blocks.history_missing is None
        es_with = tail_es(book_pnl[f5], 0.975) if has_history else None
        es_without = tail_es(without[f5], 0.975) if has_history else None
        var_without = float(np.var(without[w])) if has_history else 0.0
        eff = 1.0 - float(np.var(book_pnl[w])) / var_without if var_without > 0 else None
        return {
            "worst_stress_loss_with": worst_with,
            "worst_stress_loss_without": worst_without,
            "es_975_5d_with": es_with,
            "es_975_5d_without": es_without,
            "protection_value": worst_without - worst_with,
            "protection_value_es": es_without - es_with if es_with is not None and es_without is not None else None,
            "effectiveness": eff,
        }

    # the book's columns once (each hedge's drag reads its own entries: no pass over the book per hedge)
    theta_all = rows["theta_per_day"].to_numpy(float)
    opt_all = (rows["instrument_type"] == "option").to_numpy(bool)
    mv_all = rows["market_value"].to_numpy(float)

    def drag(idx: np.ndarray) -> float:
        theta = theta_all[idx]
        opt = opt_all[idx]
        financing = np.where(opt, 0.0, np.abs(mv_all[idx]) * cfg.financing_rate)
        return float((np.maximum(-theta, 0.0) * 365.0 + financing).sum() / nav)

    total_day, total_cum = 0.0, 0.0
    for i in hedge_idx:
        pid = rows["position_id"].iloc[i]
        day = None
        if len(prev) and pid in prev.index:
            day = float(units[i] * (price[i] - float(prev.loc[pid, "price"])))
        cum = (day or 0.0) + (float(prev_cum[pid]) if pid in prev_cum.index and pd.notna(prev_cum[pid]) else 0.0)
        total_day += day or 0.0
        total_cum += cum
        out.append(
            {
                "position_id": pid,
                "symbol": rows["symbol"].iloc[i],
                "strategy": rows["strategy"].iloc[i],
                "quantity": float(rows["quantity"].iloc[i]),
                "market_value": float(rows["market_value"].iloc[i]),
                "hedge_pnl_day": day,
                "hedge_pnl_cum": cum,
                "cost_drag_pct_nav_yr": drag(np.array([i])),
                **measures(np.array([i])),
            }
        )
    out.append(
        {
            "position_id": "*",
            "symbol": None,
            "strategy": "all hedges",
            "quantity": None,
            "market_value": float(rows["market_value"].to_numpy(float)[hedge_idx].sum()),
            "hedge_pnl_day": total_day,
            "hedge_pnl_cum": total_cum,
            "cost_drag_pct_nav_yr": drag(hedge_idx),
            **measures(hedge_idx),
        }
    )
    for r in out:
        r |= {
            "as_of": as_of,
            "as_of_date": session,
            "book": book,
            "nav": nav,
            "previous_as_of": previous_rows["as_of"].iloc[0] if len(previous_rows) else None,
            "effectiveness_window": EFFECTIVENESS_WINDOW,
            "n_stress_scenarios": n_st,
        }
    return out


@dg.asset(
    group_name=GROUP,
    partitions_def=PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        dg.AssetDep("position_greeks", partition_mapping=PREVIOUS_AND_CURRENT_SESSION),
        "book_nav",
        "market_prices",
        "atm_vol_history",
        "stress_results",
        dg.AssetDep("hedge_performance", partition_mapping=PREVIOUS_SESSION),
    ],
    kinds={"pandas"},
    owners=OWNERS,
    description=(
        "Hedge monitor per book and hedge position (strategy in the limits file's hedge_strategies) and for all "
        "hedges ('*'): daily and cumulative P&L, protection value (worst stress loss and 97.5 % 5-day ES "
        "without minus with), cost drag (decay plus financing, fraction of NAV per year; the '*' row is the "
        "book's hedge cost the sizing layer reads), effectiveness (1 - variance of the static book's P&L with / "
        "without, trailing 60 sessions)."
    ),
    metadata=table_definition_metadata("hedge_performance"),
)
@fail_closed
def hedge_performance(
    context: dg.AssetExecutionContext, config: HedgingSettings, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    wh = warehouse.get()
    hfile = load_hedging_config(config.hedging_file or None)
    limits = load_limits(config.limits_file)
    library = load_scenarios(config.scenarios_file)
    out, parts = [], []
    for session in partition_sessions(context):
        as_of = latest_as_of(wh, "position_greeks", session)
        if as_of is None:
            raise RiskDataError(f"no position_greeks for {session}: value the books first")
        prev_as_of = latest_as_of(wh, "position_greeks", session, before=True)
        positions = wh.read("position_greeks", {"as_of": as_of})
        previous = wh.read("position_greeks", {"as_of": prev_as_of}) if prev_as_of is not None else pd.DataFrame()
        perf_as_of = wh.query("SELECT MAX(as_of) AS t FROM risk.hedge_performance WHERE as_of_date < ?", [session])[
            "t"
        ].iloc[0]
        prev_perf = wh.read("hedge_performance", {"as_of": perf_as_of}) if pd.notna(perf_as_of) else pd.DataFrame()
        navs = wh.read("book_nav", {"as_of": as_of}).set_index("book")["nav"]
        for book in sorted(config.books or positions["book"].unique()):
            rows = positions[positions["book"] == book].reset_index(drop=True)
            if book not in navs.index:
                raise RiskDataError(f"no book_nav for {book} at {as_of.isoformat()}: cost drag needs NAV")
            out += performance_rows(
                wh, session, as_of, book, rows,
                previous[previous["book"] == book] if len(previous) else previous,
                prev_perf[prev_perf["book"] == book] if len(prev_perf) else prev_perf,
                float(navs[book]), tuple(limits.for_book(book).hedge_strategies),
                hedging_for_book(hfile, book, limits.for_book(book).risk_level), library,
            )  # fmt: skip
            parts.append({"as_of": as_of, "book": book})
    frame = pd.DataFrame(out, columns=table("hedge_performance").data_column_names)
    for c in ("symbol", "quantity", "hedge_pnl_day", "effectiveness", "previous_as_of", "protection_value_es"):
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None)
    totals = frame[frame["position_id"] == "*"]
    yield from publish(
        context,
        wh,
        [TableWrite("hedge_performance", frame, parts)],
        metadata={
            "hedge_performance": {
                "books": dg.MetadataValue.md(
                    markdown_table(
                        totals[["book", "hedge_pnl_day", "protection_value", "cost_drag_pct_nav_yr", "effectiveness"]]
                        .astype({"effectiveness": float})
                        .round(4),
                        10,
                    )
                    if len(totals)
                    else "(no hedge positions)"
                )
            }
        },
    )
