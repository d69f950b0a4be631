"""Risk layer: VaR and expected shortfall, backtests, stress tests, event gap risk."""

from risk_pipeline.defs.risk.backtest import var_backtest
from risk_pipeline.defs.risk.events import event_risk
from risk_pipeline.defs.risk.regulatory_es import regulatory_es
from risk_pipeline.defs.risk.stress import stress_tests
from risk_pipeline.defs.risk.stress_model_consistent import stress_model_consistent
from risk_pipeline.defs.risk.var import var_results

ASSETS = [var_results, var_backtest, stress_tests, event_risk, stress_model_consistent, regulatory_es]
