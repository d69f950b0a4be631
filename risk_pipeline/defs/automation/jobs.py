"""Jobs over the asset graph."""

from __future__ import annotations

import dagster as dg

from risk_pipeline.defs.serving.assets import MODELS

market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=dg.AssetSelection.groups("market_data") | dg.AssetSelection.assets(*(m.name for m in MODELS)),
    description="Market data layer and its views for one session (or a range as one run).",
)

#: The assets of ``price_history_job``.
PRICE_HISTORY_ASSETS = ("market_prices", "rates_curve", "dividend_yields", "atm_vol_history", "smile_history")

price_history_job = dg.define_asset_job(
    "price_history_job",
    selection=dg.AssetSelection.assets(*PRICE_HISTORY_ASSETS),
    description=(
        "Daily history (prices, curves, dividends, ATM implied vols, the smile grid) for a partition range, for "
        "look-backs."
    ),
)

start_of_day_job = dg.define_asset_job(
    "start_of_day_job",
    selection=dg.AssetSelection.assets("positions", "rates_curve", "dividend_yields", "event_calendar"),
    description=(
        "Before the open: the session's positions, zero curve, dividend yields and event calendar, so the "
        "first intraday refresh can value the books (the previous close comes from yesterday's end of day)."
    ),
)

end_of_day_job = dg.define_asset_job(
    "end_of_day_job",
    selection=dg.AssetSelection.all(),
    description="Everything for one session: the main job.",
)

gap_risk_job = dg.define_asset_job(
    "gap_risk_job",
    selection=dg.AssetSelection.assets("event_risk", "gap_risk_actions"),
    description=(
        "Event risk and gap-risk actions for one session at its latest valuation; the event-calendar sensor "
        "launches it per event and exposed book (the book in the run config)."
    ),
)

compliance_job = dg.define_asset_job(
    "compliance_job",
    selection=dg.AssetSelection.assets("compliance_reports", "alerts")
    | dg.AssetSelection.assets(*(m.name for m in MODELS)),
    description=(
        "Compliance reports, alerts and the views for one session from the tables already published (after a "
        "manual control or a rules change, without re-running the valuation)."
    ),
)

JOBS = [market_data_job, price_history_job, start_of_day_job, end_of_day_job, gap_risk_job, compliance_job]
