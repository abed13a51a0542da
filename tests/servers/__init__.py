"""Ephemeral real servers for integration tests: each on a free loopback port, in a temp dir.

One module per server (``influxdb.py``, ``postgres.py``, ``prometheus.py``,
``alertmanager.py``); each exposes a context manager that starts the installed
binary and stops it. Use :func:`require_binary` so a missing server skips locally
and fails under ``CI=true``.
"""
