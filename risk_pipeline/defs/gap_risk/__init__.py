"""Gap-risk layer: actions ahead of scheduled events (reduce, tighten caps, block new entries, flatten short gamma)."""

from risk_pipeline.defs.gap_risk.assets import gap_risk_actions

ASSETS = [gap_risk_actions]
