"""One broker connection (paho-mqtt), bridged to asyncio: the only module that talks MQTT.

paho runs the socket on its own network thread (``loop_start``); its callbacks hand
each message to the event loop through ``call_soon_threadsafe``. Acknowledgements
are manual: :meth:`Connection.ack` sends a QoS 1 PUBACK (QoS 2 PUBCOMP) only when
the source says the runtime has the message, so what was received but not yet taken
is redelivered by the broker to the next session.

paho's own reconnect is switched off in effect (a delay of an hour): when the
connection drops, :data:`LOST` is queued, the source's ``run`` raises and
:class:`~sentinel.sources.running.RunningSource` reconnects with its backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ...config.source_mqtt import MQTTSourceConfig
from ...errors import SourceError, SourceUnavailable

log = logging.getLogger("sentinel.sources.mqtt")


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: float


@dataclass(frozen=True, slots=True)
class Lost:
    """Queued when the connection ends; ``reason`` says why."""

    reason: str


class Connection:
    """A connected, subscribed client; ``deliver`` is called on the event loop for each message or Lost."""

    def __init__(self, cfg: MQTTSourceConfig, deliver: Callable[[Message | Lost], None], *,
                 clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self._deliver = deliver
        self._clock = clock
        self._loop = asyncio.get_running_loop()
        self._connack: asyncio.Future[tuple[bool, str | None]] = self._loop.create_future()
        self._suback: asyncio.Future[str | None] = self._loop.create_future()
        self._closed = False
        self.session_present = False
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cfg.effective_client_id,
                        clean_session=cfg.clean_session, protocol=paho.MQTTv311, manual_ack=True)
        c.reconnect_delay_set(3600, 3600)
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.use_tls:
            c.tls_set(ca_certs=cfg.tls.ca_file, certfile=cfg.tls.cert_file, keyfile=cfg.tls.key_file,
                      cert_reqs=ssl.CERT_REQUIRED)
            if cfg.tls.insecure:
                c.tls_insecure_set(True)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        self._client = c

    # -- paho thread -> event loop --------------------------------------------------------
    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing is waiting any more
            self._loop.call_soon_threadsafe(fn, *args)

    @staticmethod
    def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
        if not fut.done():
            fut.set_result(value)

    def _on_connect(self, _c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        ok = not rc.is_failure
        self._post(self._resolve, self._connack, (bool(getattr(flags, "session_present", False)) if ok else False,
                                                  None if ok else str(rc)))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        bad = [str(r) for r in codes if r.is_failure]
        self._post(self._resolve, self._suback, f"subscription refused: {bad}" if bad else None)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        self._post(self._deliver, Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._clock()))

    def _on_disconnect(self, _c: Any, _u: Any, _flags: Any, rc: Any, _p: Any) -> None:
        if not self._closed:
            self._post(self._deliver, Lost(f"connection lost: {rc}"))
        self._post(self._resolve, self._connack, (False, f"disconnected: {rc}"))
        self._post(self._resolve, self._suback, f"disconnected: {rc}")

    # -- event loop ------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, wait for CONNACK, subscribe to every topic, wait for SUBACK (each within connect_timeout).

        Raises :class:`SourceUnavailable` when the broker cannot be reached and
        :class:`SourceError` when it refuses (bad credentials, a refused subscription).
        """
        cfg = self.cfg
        where = f"{cfg.host}:{cfg.port}"
        try:
            await asyncio.wait_for(self._loop.run_in_executor(
                None, self._client.connect, cfg.host, cfg.port, int(cfg.keepalive)), cfg.connect_timeout)
        except ssl.SSLError as e:  # before OSError, its base: a certificate problem is no outage
            raise SourceError(f"mqtt {where}: TLS: {e}") from None
        except (OSError, TimeoutError) as e:
            raise SourceUnavailable(f"mqtt {where}: cannot connect: {e or 'timed out'}") from None
        self._client.loop_start()
        try:
            present, err = await asyncio.wait_for(self._connack, cfg.connect_timeout)
        except TimeoutError:
            raise SourceUnavailable(f"mqtt {where}: no CONNACK within {cfg.connect_timeout}s") from None
        if err is not None:
            if err.startswith("disconnected"):
                raise SourceUnavailable(f"mqtt {where}: {err}")
            raise SourceError(f"mqtt {where}: connection refused: {err}")
        self.session_present = present
        topics: list[tuple[str, int]] = [(t, int(cfg.qos)) for t in cfg.topics]
        rc, _mid = self._client.subscribe(topics)
        if rc != paho.MQTT_ERR_SUCCESS:
            raise SourceUnavailable(f"mqtt {where}: subscribe failed: {paho.error_string(rc)}")
        try:
            err = await asyncio.wait_for(self._suback, cfg.connect_timeout)
        except TimeoutError:
            raise SourceUnavailable(f"mqtt {where}: no SUBACK within {cfg.connect_timeout}s") from None
        if err is not None:
            raise (SourceUnavailable if err.startswith("disconnected") else SourceError)(f"mqtt {where}: {err}")
        log.info("%s: connected to %s (session present: %s), subscribed to %s", cfg.name, where, present,
                 cfg.topics)

    def ack(self, msgs: list[Message]) -> None:
        """Acknowledge messages the runtime has taken (QoS 0 needs none)."""
        for m in msgs:
            if m.qos > 0:
                self._client.ack(m.mid, m.qos)

    async def close(self) -> None:
        """Disconnect (the broker keeps the session) and stop the network thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._loop.run_in_executor(None, self._client.loop_stop), 10.0)
