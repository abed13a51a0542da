"""``POST /api/v1/feedback`` and ``sentinel feedback`` against the real server (loopback), with basic auth."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import bcrypt
import numpy as np
from click.testing import CliRunner

from sentinel.cli import main as cli
from sentinel.config import SentinelConfig
from sentinel.feedback.service import FeedbackService
from sentinel.metrics import Metrics
from sentinel.runtime.engine import Engine
from sentinel.server import build_app, parse_web_config, serve
from sentinel.server.fake import FakeStatusProvider
from sentinel.types import Sample, StreamKey

KEY = StreamKey.of("pump", site="a")


async def _direct(fn: Any, *args: Any) -> Any:
    return fn(*args)


def engine() -> Engine:
    e = Engine(SentinelConfig())
    e.process([Sample(KEY, float(i), ("p",), (float(i % 5),)) for i in range(40)])
    return e


def test_post_feedback_with_auth_then_listed_and_counted(registry) -> None:
    import aiohttp

    e = engine()
    metrics = Metrics(registry)
    svc = FeedbackService(lambda: e, _direct, metrics, clock=lambda: 100.0)
    prov = FakeStatusProvider()
    prov.feedback_list = svc.entries  # type: ignore[method-assign]
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    wc = parse_web_config({"basic_auth_users": {"ops": hashed}})
    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}

    async def main() -> None:
        h = await serve(build_app(prov, registry, extra_routes=svc.routes(), web_config=wc), "127.0.0.1:0", wc)
        url = h.url + "/api/v1/feedback"
        body = {"stream": str(KEY), "from": 10, "to": 19, "label": "anomaly", "comment": "seal"}
        try:
            async with aiohttp.ClientSession() as s:
                async with s.post(url, json=body) as r:
                    assert r.status == 401  # as /-/reload: behind the server's authentication
                async with s.post(url, json=body, headers=auth) as r:
                    assert r.status == 200
                    d = (await r.json())["data"]
                    assert (d["label"], d["samples"], d["retrain"]) == ("anomaly", 10, False)
                async with s.post(url, json={**body, "label": "maybe"}, headers=auth) as r:
                    assert r.status == 400 and "label: one of" in (await r.json())["error"]
                async with s.post(url, data=b"{nope", headers=auth) as r:
                    assert r.status == 400
                async with s.post(url, json={**body, "stream": "pump,site=zz"}, headers=auth) as r:
                    assert r.status == 404
                async with s.get(url, headers=auth) as r:
                    listed = (await r.json())["data"]
                    assert [(f["stream"], f["label"], f["from"], f["to"], f["comment"]) for f in listed] == [
                        (str(KEY), "anomaly", 10.0, 19.0, "seal")]
                # the CLI, as an operator runs it (a blocking client: off the server's loop)
                res = await asyncio.to_thread(CliRunner().invoke, cli, [
                    "feedback", "--url", h.url, "--stream", str(KEY), "--from", "1970-01-01T00:00:20Z",
                    "--to", "29", "--label", "normal", "--user", "ops", "--password", "pw"])
                assert res.exit_code == 0, res.output
                assert "feedback normal on pump,site=a: 10 samples in the window" in res.output
                bad = await asyncio.to_thread(CliRunner().invoke, cli, [
                    "feedback", "--url", h.url, "--stream", "pump,site=zz", "--from", "1", "--to", "2",
                    "--label", "normal", "--user", "ops", "--password", "pw"])
                assert bad.exit_code == 2 and "unknown stream" in bad.output
                # the verdicts counted: 10..19 now lies in flagged (alerting) entries, 20..29 does not
                for lo, hi, label in ((15, 25, "anomaly"), (10, 12, "normal"), (30, 35, "anomaly")):
                    async with s.post(url, json={**body, "from": lo, "to": hi, "label": label}, headers=auth) as r:
                        assert (await r.json())["data"]["alerted"] == (label == "normal" or lo == 15)
                async with s.get(url + "/report", headers=auth) as r:
                    assert r.status == 200
                    assert (await r.json())["data"] == {"false_alerts": 1, "normal_windows": 2, "incidents": 3,
                                                        "caught": 1, "missed": 2}
                async with s.get(url + "/report") as r:
                    assert r.status == 401
        finally:
            await h.close()

    asyncio.run(main())
    assert registry.get_sample_value("sentinel_feedback_total", {"label": "anomaly"}) == 3
    assert registry.get_sample_value("sentinel_feedback_total", {"label": "normal"}) == 2
    assert [f["label"] for f in e.feedback] == ["anomaly", "normal", "anomaly", "normal", "anomaly"]
    _ts, _v, flags = e.groups[1].history(np.array([e.index[KEY][1]]))
    # anomaly 10..19, 15..25 and 30..35 flagged; normal 10..12 unflagged again
    assert np.flatnonzero(flags[0][-40:]).tolist() == [*range(13, 26), *range(30, 36)]


def test_cli_unreachable_daemon_exits_1() -> None:
    from tests.servers._proc import free_port

    res = CliRunner().invoke(cli, ["feedback", "--url", f"http://127.0.0.1:{free_port()}", "--stream", "a",
                                   "--from", "1", "--to", "2", "--label", "normal"])
    assert res.exit_code == 1 and "cannot reach" in res.output


def test_feedback_during_a_training_in_flight_asks_again_once_it_landed(registry) -> None:
    e = engine()
    g, slot = e.groups[1], e.index[KEY][1]
    g.a["ready"][slot] = True
    g.a["training"][slot] = True  # a job made before the feedback is out
    svc = FeedbackService(lambda: e, _direct, Metrics(registry))
    svc.inflight_poll = 0.01

    async def main() -> None:
        from sentinel.feedback import Feedback

        res = await svc.give(Feedback(str(KEY), 0.0, 9.0, "normal"))
        assert res["retrain"] and "in_flight" not in res
        g.a["relearn"][slot] = False  # the job lands: apply_training clears the request
        g.a["training"][slot] = False
        for _ in range(50):
            if g.a["relearn"][slot]:
                break
            await asyncio.sleep(0.05)
        assert g.a["relearn"][slot]  # asked again

    asyncio.run(main())
