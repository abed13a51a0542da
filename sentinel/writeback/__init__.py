"""Write-back of scores beside the raw data (DESIGN §8), so Grafana can plot them together."""

from .influxdb import InfluxDBWriteBack, records_to_lines

__all__ = ["InfluxDBWriteBack", "records_to_lines"]
