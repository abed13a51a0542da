"""A :class:`~sentinel.server.app.StatusProvider` test double, shipped beside the seam it fakes.

Tests build one from explicit rows and histories; :meth:`FakeStatusProvider.demo` makes a small,
seeded fleet (seasonal values, a threshold, anomalies with alert spans) for the browser test and for
screenshots of the status page.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from sentinel.server.app import STATES


@dataclass
class FakeStatusProvider:
    """Serves fixed data. ``reload_calls`` counts :meth:`reload`; set ``reload_result`` to script it."""

    rows: list[dict] = field(default_factory=list)
    histories: dict[str, dict] = field(default_factory=dict)
    ready_state: tuple[bool, str] = (True, "")
    reload_result: tuple[bool, str] | Exception = (True, "config reloaded")
    reload_calls: int = 0
    feedback: list[dict] = field(default_factory=list)

    def feedback_list(self) -> list[dict]:
        return self.feedback

    def ready(self) -> tuple[bool, str]:
        return self.ready_state

    def streams(self, state: str | None = None, limit: int | None = None) -> list[dict]:
        out = [r for r in self.rows if state is None or r["state"] == state]
        return out if limit is None else out[:limit]

    def stream_history(self, stream: str) -> dict | None:
        return self.histories.get(stream)

    async def reload(self) -> tuple[bool, str]:
        self.reload_calls += 1
        if isinstance(self.reload_result, Exception):
            raise self.reload_result
        return self.reload_result

    @classmethod
    def demo(cls, n: int = 12, *, points: int = 240, now: float = 1_700_000_000.0, step: float = 10.0,
             seed: int = 0) -> FakeStatusProvider:
        """``n`` streams cycling through every state; firing/pending ones end in an anomaly.

        Histories hold ``points`` samples ``step`` seconds apart ending at ``now``; multivariate
        streams (i % 3 == 1) have fields ``temp, vibration, current``.
        """
        rng = random.Random(seed)
        rows: list[dict] = []
        hists: dict[str, dict] = {}
        order = ["ok", "firing", "warming", "ok", "pending", "ok"]
        for i in range(n):
            state = order[i % len(order)]
            site = "abcdefgh"[i % 8]
            measurement = ("pump", "fan", "boiler")[i % 3]
            labels = {"site": site, "unit": str(i)}
            key = f"{measurement},site={site},unit={i}"
            fields = ["temp", "vibration", "current"] if i % 3 == 1 else ["value"]
            ts = [now - (points - 1 - k) * step for k in range(points)]
            values: list[list[float | None]] = []
            err: list[float] = []
            thr: list[float] = []
            score: list[float] = []
            spans: list[list[float | None]] = []
            expected: list[list[float | None]] = []
            lower: list[list[float | None]] = []
            upper: list[list[float | None]] = []
            anomaly_from = points - 30 if state in ("firing", "pending") else points + 1
            past_anomaly = (points // 3, points // 3 + 12) if i % 2 == 0 and state != "warming" else None
            for k in range(points):
                bump = 3.0 if k >= anomaly_from or (past_anomaly and past_anomaly[0] <= k < past_anomaly[1]) else 0.0
                row: list[float | None] = []
                ex: list[float | None] = []
                for j, _ in enumerate(fields):
                    base = 20 + 5 * j + 4 * math.sin(2 * math.pi * k / 60 + j + i)
                    ex.append(None if state == "warming" else round(base, 3))
                    v = base + rng.gauss(0, 0.4) + (bump * (j + 1) if j == 0 else bump * 0.3)
                    row.append(None if (k % 97 == 50 and j == 0) else round(v, 3))
                values.append(row)
                expected.append(ex)
                lower.append([None if x is None else round(x - 1.6, 3) for x in ex])
                upper.append([None if x is None else round(x + 1.6, 3) for x in ex])
                e = abs(rng.gauss(0.3, 0.1)) + bump * 0.5
                t = 0.9 + 0.1 * math.sin(k / 50)
                err.append(round(e, 4))
                thr.append(round(t, 4))
                score.append(round(min(1.0, e / (2 * t)), 4))
            if past_anomaly:
                spans.append([ts[past_anomaly[0]], ts[past_anomaly[1]]])
            if state == "firing":
                spans.append([ts[anomaly_from + 5], None])
            if state == "warming":
                err, thr, score = [math.nan] * points, [math.nan] * points, [0.0] * points
            hists[key] = {"ts": ts, "values": values, "fields": fields, "score": score,
                          "threshold": thr, "error": err, "alert_spans": spans, "expected": expected,
                          "lower": lower, "upper": upper}
            rows.append({
                "stream": key, "measurement": measurement, "labels": labels, "state": state,
                "score": score[-1], "error": err[-1], "threshold": thr[-1],
                "model_version": 0 if state == "warming" else 3, "last_ts": ts[-1], "fields": fields,
                "alerts_total": len(spans), "expected": expected[-1], "lower": lower[-1], "upper": upper[-1],
            })
        assert all(r["state"] in STATES for r in rows)
        fb = [{"stream": rows[0]["stream"], "from": now - 100 * step, "to": now - 60 * step, "label": "normal",
               "at": now - 50 * step, "source": "api", "comment": "defrost cycle", "id": "demo1"}] if rows else []
        return cls(rows=rows, histories=hists, feedback=fb)
