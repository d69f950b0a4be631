"""Hedging layer: the volatility index, hedge recommendations, the hedge monitor and the hourly review."""

from risk_pipeline.defs.hedging.assets import hedge_performance, hedge_recommendations, volatility_index
from risk_pipeline.defs.hedging.schedules import hedge_review_job, hedge_review_schedule

ASSETS = [volatility_index, hedge_recommendations, hedge_performance]
JOBS = [hedge_review_job]
SCHEDULES = [hedge_review_schedule]
