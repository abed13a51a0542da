"""The MQTT source (``type: mqtt``): see :mod:`sentinel.sources.mqtt.source`."""

from .payload import REASONS, PayloadDecoder
from .source import MQTTSource

__all__ = ["REASONS", "MQTTSource", "PayloadDecoder"]
