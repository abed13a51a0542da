"""D11: auth combinations of the web config's basic auth and the receiver's own credentials, open probes.

On the old main a write under web basic auth and ``receiver.token`` had to pass both checks
with one ``Authorization`` header (impossible), ``Authorization: Token`` writers always got
401 under web auth, and the probes could not be left open for the kubelet.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import bcrypt
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from sentinel.config.source_influxdb import InfluxDBReceiverConfig
from sentinel.server import build_app, parse_web_config, update_web_config
from sentinel.server.fake import FakeStatusProvider
from sentinel.sources.receiver import LineProtocolReceiver, Pushed
from sentinel.sources.selector import Selection, StreamSelector

HASH = bcrypt.hashpw(b"web-pw", bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, pw: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


def serve(rcfg: InfluxDBReceiverConfig, *, users: bool = True, open_probes: bool = False,
          fn: Callable[[TestClient, web.Application], Awaitable[Any]]) -> tuple[Any, list[Pushed]]:
    got: list[Pushed] = []

    async def deliver(p: Pushed) -> bool:
        got.append(p)
        return True

    rec = LineProtocolReceiver(rcfg, StreamSelector(Selection()), deliver, clock=lambda: 1000.0)
    wc = parse_web_config({"basic_auth_users": {"alice": HASH}} if users else {})
    app = build_app(FakeStatusProvider(rows=[]), CollectorRegistry(), extra_routes=rec.routes(), web_config=wc,
                    open_probes=open_probes, route_auth=rec.route_auth())

    async def main() -> Any:
        async with TestClient(TestServer(app)) as client:
            return await fn(client, app)

    return asyncio.run(main()), got


async def write(c: TestClient, headers: dict[str, str] | None = None, qs: str = "", v2: bool = False) -> int:
    path = "/api/v2/write?bucket=d" if v2 else "/write?db=d"
    return (await c.post(path + qs, data="m v=1", headers=headers or {})).status


def test_web_auth_and_a_receiver_token_either_credential_passes_a_write() -> None:
    async def fn(c: TestClient, _app: web.Application) -> dict[str, int]:
        return {
            "none": await write(c),
            "web user": await write(c, basic("alice", "web-pw")),
            "web user as Token user:pw": await write(c, {"Authorization": "Token alice:web-pw"}),
            "receiver token": await write(c, {"Authorization": "Token t0ken"}),
            "receiver token v2": await write(c, {"Authorization": "Token t0ken"}, v2=True),
            "receiver bearer": await write(c, {"Authorization": "Bearer t0ken"}),
            "receiver token as basic password": await write(c, basic("any", "t0ken")),
            "wrong token": await write(c, {"Authorization": "Token nope"}),
            "wrong web password": await write(c, basic("alice", "nope")),
            "token elsewhere": (await c.get("/metrics", headers={"Authorization": "Token t0ken"})).status,
            "web user elsewhere": (await c.get("/metrics", headers=basic("alice", "web-pw"))).status,
        }

    got, pushed = serve(InfluxDBReceiverConfig(token="t0ken"), fn=fn)
    assert got == {"none": 401, "web user": 204, "web user as Token user:pw": 204, "receiver token": 204,
                   "receiver token v2": 204, "receiver bearer": 204, "receiver token as basic password": 204,
                   "wrong token": 401, "wrong web password": 401, "token elsewhere": 401,
                   "web user elsewhere": 200}
    assert len(pushed) == 6


def test_web_auth_and_receiver_user_password() -> None:
    async def fn(c: TestClient, _app: web.Application) -> list[int]:
        return [await write(c, basic("telegraf", "tg")), await write(c, qs="&u=telegraf&p=tg"),
                await write(c, basic("alice", "web-pw")), await write(c, basic("telegraf", "web-pw")),
                await write(c, basic("alice", "tg"))]

    got, _ = serve(InfluxDBReceiverConfig(username="telegraf", password="tg"), fn=fn)
    assert got == [204, 204, 204, 401, 401]


def test_web_auth_alone_guards_writes_and_accepts_influx_token_user_password() -> None:
    async def fn(c: TestClient, _app: web.Application) -> list[int]:
        return [await write(c), await write(c, {"Authorization": "Token alice:web-pw"}, v2=True),
                await write(c, {"Authorization": "Token whatever"}), await write(c, basic("alice", "web-pw"))]

    got, _ = serve(InfluxDBReceiverConfig(), fn=fn)
    assert got == [401, 204, 401, 204]


def test_receiver_token_alone_still_checked_by_the_receiver() -> None:
    async def fn(c: TestClient, _app: web.Application) -> list[int]:
        return [await write(c), await write(c, {"Authorization": "Token t0ken"}),
                (await c.get("/metrics")).status]

    got, _ = serve(InfluxDBReceiverConfig(token="t0ken"), users=False, fn=fn)
    assert got == [401, 204, 200]


def test_open_probes_leave_only_healthy_and_ready_unauthenticated() -> None:
    async def fn(c: TestClient, app: web.Application) -> dict[str, Any]:
        out: dict[str, Any] = {p: (await c.get(p)).status for p in
                               ("/-/healthy", "/-/ready", "/metrics", "/", "/api/v1/streams")}
        out["reload"] = (await c.post("/-/reload")).status
        out["write"] = await write(c)
        out["healthy/x"] = (await c.get("/-/healthy/x")).status
        return out

    got, _ = serve(InfluxDBReceiverConfig(), open_probes=True, fn=fn)
    assert got == {"/-/healthy": 200, "/-/ready": 200, "/metrics": 401, "/": 401, "/api/v1/streams": 401,
                   "reload": 401, "write": 401, "healthy/x": 401}


def test_probes_are_guarded_by_default_and_open_probes_is_switched_at_reload() -> None:
    async def fn(c: TestClient, app: web.Application) -> list[int]:
        wc = parse_web_config({"basic_auth_users": {"alice": HASH}})
        first = (await c.get("/-/healthy")).status
        update_web_config(app, wc, open_probes=True)
        second = (await c.get("/-/ready")).status
        update_web_config(app, wc, open_probes=False)
        return [first, second, (await c.get("/-/healthy")).status]

    got, _ = serve(InfluxDBReceiverConfig(), fn=fn)
    assert got == [401, 200, 401]


def test_non_ascii_credentials_are_refused_not_a_crash() -> None:
    async def fn(c: TestClient, _app: web.Application) -> list[int]:
        return [await write(c, {"Authorization": "Token t\u00f6ken".encode().decode("latin-1")}),
                await write(c, qs="&u=%C3%A9&p=%C3%A9")]

    got, _ = serve(InfluxDBReceiverConfig(token="t0ken", username="u", password="p"), users=False, fn=fn)
    assert got == [401, 401]
