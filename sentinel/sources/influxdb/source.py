"""The InfluxDB source: subscription push (1.x), InfluxQL and Flux polling, history, write.

Cursor (``SourceBatch.cursor``): ``{"t": <ns>}`` — every selected point with
``time <= t`` has been handed over. A source rebuilt from ``resume`` continues
with ``time > t``: no gap, no duplicate.

* **Polling** (``poll_influxql``, ``poll_flux``) reads the window ``(t, now - lateness]``,
  so a point that reaches the database up to ``lateness`` after its timestamp is
  still read, exactly once. Large catch-ups are paged: each query returns at most
  ``page_size`` rows per series; the page ends at the earliest last-row time among
  the series that hit the limit (a series has at most one point per timestamp, so
  nothing at or before that time is missing), and the next page starts after it.
* **Subscription** (1.x): Sentinel creates ``CREATE SUBSCRIPTION`` towards its own
  ``/write`` and InfluxDB pushes every write. After a start or an outage it
  *backfills*: pushes are held while an InfluxQL catch-up reads ``time > t``; the
  held pushes are then released minus the overlap (per stream, a pushed sample at or
  before the last backfilled one is a duplicate). Backfill repeats once the first push
  has arrived, so writes made before the subscription took effect are read too.
* **Receiver**: only pushed line protocol (Telegraf etc.); no database is read.

The plugin does the I/O only: a failure ends ``run`` with the error, and
:class:`~sentinel.sources.running.RunningSource` runs it again after a backoff
(a subscription run starts with a backfill, so nothing is lost or repeated).

Files: ``query.py`` (InfluxQL windows, paging), ``flux.py`` (Flux), ``core.py`` (shared
state), ``poll.py``, ``subscription.py`` (push and subscriptions), ``backfill.py``,
``write.py`` (``sentinel simulate``).
"""

from __future__ import annotations

import asyncio
import contextlib

from ..base import Emit
from .poll import Polling
from .subscription import Subscription


class InfluxDBSource(Polling, Subscription):
    """Follows one InfluxDB database (see the module docstring for the modes and the cursor)."""

    async def run(self, emit: Emit) -> None:
        self._done = asyncio.Event()
        try:
            if self.cfg.mode in ("poll_influxql", "poll_flux"):
                await self._run_poll(emit)
            elif self.cfg.mode == "subscription":
                await self._run_subscription(emit)
            else:
                await self._run_receiver(emit)
        finally:
            if self._stop.is_set() and self.cfg.mode == "subscription" and self.cfg.remove_subscription_on_shutdown:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.drop_subscription(), 5.0)
            if self._stop.is_set():
                self.connected = self.cfg.mode == "receiver"
            await self._close()
            self._done.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._done is not None:
            await self._done.wait()
        else:
            await self._close()

