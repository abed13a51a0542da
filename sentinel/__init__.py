"""Sentinel: streaming anomaly detection for sensor fleets.

The package is laid out as the pipeline it runs::

    sources/  ->  model/  ->  detect/  ->  alerts/ (+ alerts/sinks/)
                      wired in runtime/, served by server/, checkpointed by state/
"""

__version__ = "0.1.0"
