"""``GET /api/v1/cluster``: partitions, their owners, and lag per partition (messages and seconds).

Served by every role. Owners come from the KV (``owner.<p>``), lag from each partition's durable
consumer: ``messages`` not yet delivered, ``seconds`` since the oldest of them was stored
(0 when none waits).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from .js import Nats, kv_get


def consumer_name(partition: int) -> str:
    return f"sentinel-p{partition}"


async def _lag(nats: Nats, p: int, now: float) -> dict:
    try:
        info = await nats.js.consumer_info(nats.cfg.stream, consumer_name(p))
    except Exception:
        return {"messages": None, "seconds": None}
    pending = int(info.num_pending or 0)
    seconds = 0.0
    if pending:
        try:
            nxt = int(info.delivered.stream_seq or 0) + 1
            msg = await nats.js.get_msg(nats.cfg.stream, seq=nxt, next=True, subject=nats.subject(p))
            stored = msg.time if isinstance(msg.time, datetime) else None
            seconds = max(0.0, now - stored.timestamp()) if stored is not None else 0.0
        except Exception:
            seconds = 0.0
    return {"messages": pending, "seconds": round(seconds, 3)}


async def cluster_status(nats: Nats, clock: Callable[[], float] = time.time) -> dict:
    cfg = nats.cfg
    now = clock()
    owners: dict[str, Any] = {}
    for p in range(cfg.partitions):
        e = await kv_get(nats.kv, f"owner.{p}")
        owners[str(p)] = json.loads(e.value).get("scorer") if e is not None else None
    lags = await asyncio.gather(*(_lag(nats, p, now) for p in range(cfg.partitions)))
    members = []
    try:
        for k in await nats.kv.keys():
            if k.startswith("member."):
                members.append(int(k.split(".", 1)[1]))
    except Exception:
        pass
    return {"partitions": cfg.partitions, "stream": cfg.stream, "scorers": sorted(members),
            "owners": owners, "lag": {str(p): lag for p, lag in enumerate(lags)}}


def cluster_route(get_nats: Callable[[], Nats | None]) -> web.RouteDef:
    async def handler(request: web.Request) -> web.Response:
        nats = get_nats()
        if nats is None:
            return web.json_response({"status": "error", "error": "not part of a cluster"}, status=404)
        try:
            data = await asyncio.wait_for(cluster_status(nats), 10)
        except Exception as e:
            return web.json_response({"status": "error", "error": str(e)}, status=503)
        return web.json_response({"status": "success", "data": data})

    return web.get("/api/v1/cluster", handler)
