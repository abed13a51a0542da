"""The InfluxDB source: subscription push (1.x), InfluxQL and Flux polling, the receiver, history, write."""

from .flux import ns_to_rfc3339, parse_annotated_csv, rfc3339_to_ns
from .source import InfluxDBSource
from .write import write_samples

__all__ = ["InfluxDBSource", "ns_to_rfc3339", "parse_annotated_csv", "rfc3339_to_ns", "write_samples"]
