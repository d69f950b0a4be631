"""Exposures layer: position and portfolio Greeks, limits, trading state."""

from risk_pipeline.defs.exposures.greeks import portfolio_greeks, position_greeks

ASSETS = [position_greeks, portfolio_greeks]
