"""The simulated sensor fleet (:mod:`.fleet`) and the source that streams it (:mod:`.source`)."""

from .fleet import ANOMALY_KINDS, Anomaly, Fleet, make_series
from .source import SimulatorSource

__all__ = ["ANOMALY_KINDS", "Anomaly", "Fleet", "SimulatorSource", "make_series"]
