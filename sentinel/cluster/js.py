"""The one NATS connection of a role, and the JetStream objects it uses (created if missing).

* the stream ``cluster.stream`` with subjects ``<subject_prefix>.*`` (one per partition),
  ``cluster.replicas`` replicas, file storage, limits retention (``max_age``);
* the KV bucket ``cluster.kv_bucket``: ``member.<i>`` (scorer heartbeats),
  ``owner.<p>`` (partition owners), ``lease.pollers`` and ``cursor.<source>`` (the one
  router that polls databases), ``model`` (the announced model version);
* the object store ``cluster.state_bucket``: ``p<p>.ckpt`` (a partition's checkpoint) and
  ``model/<version>/p<p>`` (a published model version).

Only this module imports ``nats``; errors reaching the roles are the client's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from nats.js.api import KeyValueConfig, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from ..config.cluster import ClusterConfig

log = logging.getLogger("sentinel")

T = TypeVar("T")


@dataclass
class Nats:
    nc: Any
    js: Any
    kv: Any
    objects: Any
    cfg: ClusterConfig

    def subject(self, partition: int) -> str:
        return f"{self.cfg.subject_prefix}.{partition}"

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), 5)
            except Exception:
                await self.nc.close()


async def _ensure_stream(js: Any, cfg: ClusterConfig) -> None:
    sc = StreamConfig(name=cfg.stream, subjects=[f"{cfg.subject_prefix}.*"], retention=RetentionPolicy.LIMITS,
                      storage=StorageType.FILE, num_replicas=cfg.replicas, max_age=cfg.max_age)
    try:
        await js.stream_info(cfg.stream)
    except NotFoundError:
        try:
            await js.add_stream(sc)
        except BadRequestError:  # another role created it in between
            await js.stream_info(cfg.stream)


async def connect(cfg: ClusterConfig, name: str, timeout: float = 60.0) -> Nats:
    """Connect and make sure the stream and both buckets exist, retrying for up to ``timeout`` s.

    A JetStream cluster that has just started answers "not ready" until it has a meta leader.
    """
    nc = await nats.connect(servers=list(cfg.servers), name=name, connect_timeout=5,
                            max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                            allow_reconnect=True, error_cb=_on_error)
    js = nc.jetstream(timeout=10)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await _ensure_stream(js, cfg)
            kv = await js.create_key_value(KeyValueConfig(bucket=cfg.kv_bucket, history=1, replicas=cfg.replicas))
            objects = await js.create_object_store(cfg.state_bucket, config=ObjectStoreConfig(replicas=cfg.replicas))
            return Nats(nc, js, kv, objects, cfg)
        except Exception as e:
            if time.monotonic() > deadline:
                await nc.close()
                raise
            log.warning("JetStream not ready yet (%s); retrying", e)
            await asyncio.sleep(1.0)


async def retrying(fn: Callable[[], Awaitable[T]], what: str, timeout: float = 60.0) -> T:
    """``await fn()``, again after a second while NATS answers with a timeout or an error (bounded).

    A JetStream cluster that has just elected its leaders, or lost a node, times out requests for
    a few seconds; a role starting then waits instead of exiting.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if time.monotonic() > deadline:
                raise
            log.warning("%s: %s; retrying", what, e or type(e).__name__)
            await asyncio.sleep(1.0)


async def _on_error(e: Exception) -> None:
    log.warning("nats: %s", e)


async def kv_get(kv: Any, key: str) -> Any | None:
    """The KV entry of ``key``, or None when absent or deleted."""
    try:
        e = await kv.get(key)
    except (NotFoundError, nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    return e if e.value else None


async def object_get(objects: Any, name: str) -> bytes | None:
    try:
        r = await objects.get(name)
    except (NotFoundError, nats.js.errors.ObjectNotFoundError, nats.js.errors.ObjectDeletedError):
        return None
    return bytes(r.data) if r.data is not None else None
