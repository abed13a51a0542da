"""Alerts: the per-stream state machine (``state``) and delivery (``notifier``, ``outbox``, ``sinks``)."""
