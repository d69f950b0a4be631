"""Sizing layer: signals, position sizing, ATR stops, correlation clusters and portfolio heat."""

from risk_pipeline.defs.sizing.assets import ASSETS

__all__ = ["ASSETS"]
