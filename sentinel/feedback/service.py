"""The daemon's side of feedback: the HTTP routes, the engine-thread hand-off and the counter.

::

    POST /api/v1/feedback   {"stream", "from", "to", "label": "normal"|"anomaly", "comment"?}
                            200 {"status":"success","data":{"id","stream","label","samples","retrain","alerted"}}
                            400 bad request (the message names the key) | 404 unknown stream
    GET  /api/v1/feedback   {"status":"success","data":[feedback, ...]} (oldest first; the server's
                            built-in route, from the provider's ``feedback_list``)
    GET  /api/v1/feedback/report
                            {"status":"success","data":{"false_alerts","normal_windows","incidents","caught","missed"}}
                            (the operator's verdicts counted: :func:`~.apply.feedback_report`)

The routes sit on the one server, behind its authentication (``basic_auth_users`` of the
``--web.config.file``), as ``/-/reload`` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..metrics import Metrics
from .apply import apply_feedback, feedback_ids, feedback_report, request_retrain
from .record import Feedback, FeedbackError, parse_feedback

log = logging.getLogger("sentinel.feedback")

MAX_BODY = 64 * 1024


def _json(data: Any, status: int = 200) -> web.Response:
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    return web.Response(text=json.dumps(clean(data), separators=(",", ":")), status=status,
                        content_type="application/json")


def _error(status: int, kind: str, message: str) -> web.Response:
    return _json({"status": "error", "errorType": kind, "error": message}, status)


class FeedbackService:
    """``engine()`` the running engine, ``call(fn, *args)`` runs ``fn`` on the engine thread."""

    def __init__(self, engine: Callable[[], Any], call: Callable[..., Awaitable[Any]], metrics: Metrics,
                 clock: Callable[[], float] = time.time):
        self._engine = engine
        self._call = call
        self.metrics = metrics
        self.clock = clock
        self._tasks: set[asyncio.Task] = set()
        self.inflight_poll = 1.0  # seconds between looks at a job in flight (at most 3600 looks)

    async def _after_inflight(self, stream: str) -> None:
        for _ in range(3600):
            if await self._call(request_retrain, self._engine(), stream) is not False:
                return
            await asyncio.sleep(self.inflight_poll)

    async def give(self, fb: Feedback) -> dict[str, Any]:
        """Apply ``fb`` on the engine thread, count and log it. Raises KeyError for an unknown stream.

        A training job of the stream already in flight was made without the window (and clears the
        retrain request when it lands): the request is made again once it has landed."""
        res = await self._call(apply_feedback, self._engine(), fb)
        if res["retrain"] and res.pop("in_flight", False):
            task = asyncio.create_task(self._after_inflight(fb.stream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        res.pop("in_flight", None)
        self.metrics.feedback.labels(fb.label).inc()
        log.info("feedback %s on %s", fb.label, fb.stream, extra={
            "stream": fb.stream, "label": fb.label, "from": fb.start, "to": fb.end, "source": fb.source,
            "samples": res["samples"], "retrain": res["retrain"]})
        return res

    def entries(self) -> list[dict]:
        return list(self._engine().feedback)

    def known_ids(self) -> set[str]:
        return feedback_ids(self._engine())

    # -- HTTP -------------------------------------------------------------------------------
    async def _post(self, request: web.Request) -> web.Response:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return _error(413, "bad_data", f"body larger than {MAX_BODY} bytes")
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            return _error(400, "bad_data", f"body: not JSON ({e})")
        try:
            fb = parse_feedback(body, now=self.clock())
        except FeedbackError as e:
            return _error(400, "bad_data", str(e))
        try:
            res = await self.give(fb)
        except KeyError:
            return _error(404, "not_found", f"unknown stream {fb.stream!r} (not scored by this instance)")
        return _json({"status": "success", "data": res})

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v1/feedback", self._post), web.get("/api/v1/feedback/report", self._report)]

    async def _report(self, _request: web.Request) -> web.Response:
        return _json({"status": "success", "data": feedback_report(self.entries())})
