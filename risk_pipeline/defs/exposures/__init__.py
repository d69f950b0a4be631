"""Exposures layer: position and portfolio Greeks, NAV, limits, trading state, reductions."""

from risk_pipeline.defs.exposures.greeks import portfolio_greeks, position_greeks
from risk_pipeline.defs.exposures.limits import book_nav, risk_limits

ASSETS = [position_greeks, portfolio_greeks, book_nav, risk_limits]
