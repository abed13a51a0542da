"""Runtime: the one place that wires sources -> model bank -> thresholds -> alert state -> sinks."""
