from risk_pipeline.defs.compliance.assets import ASSETS
from risk_pipeline.defs.compliance.sensors import SENSORS

__all__ = ["ASSETS", "SENSORS"]
