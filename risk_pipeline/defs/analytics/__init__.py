"""Analytics layer: performance of strategies and of the risk controls."""

from risk_pipeline.defs.analytics.assets import performance_analytics

ASSETS = [performance_analytics]
