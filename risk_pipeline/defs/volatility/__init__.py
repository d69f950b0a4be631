"""Volatility layer: implied vols, SVI surfaces, smile history, SABR and Heston parameters, vol forecasts."""

from risk_pipeline.defs.volatility.atm_history import atm_vol_history
from risk_pipeline.defs.volatility.forecasts import vol_forecasts
from risk_pipeline.defs.volatility.smile_history import smile_history
from risk_pipeline.defs.volatility.stochastic_vol import stochastic_vol_models
from risk_pipeline.defs.volatility.surfaces import implied_vols, vol_surfaces

ASSETS = [implied_vols, vol_surfaces, atm_vol_history, smile_history, vol_forecasts, stochastic_vol_models]
