"""Risk layer: VaR and expected shortfall, backtests, stress tests."""

from risk_pipeline.defs.risk.stress import stress_tests
from risk_pipeline.defs.risk.var import var_results

ASSETS = [var_results, stress_tests]
