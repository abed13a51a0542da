"""Score write-back into a real influxd: batched points beside the raw data, bounded buffer."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from sentinel.config.source_influxdb import InfluxDBSourceConfig
from sentinel.metrics import Metrics
from sentinel.types import ScoreRecord, StreamKey
from sentinel.writeback import InfluxDBWriteBack
from tests.servers.influxdb import start_influxd, stop_influxd

pytestmark = pytest.mark.influxdb


def records(n: int, t0: int) -> list[ScoreRecord]:
    key = StreamKey.of("pump", site="a", pump="p1")
    return [ScoreRecord(key, float(t0 + i), (1.0,), score=i / n, error=0.1 * i, threshold=1.0,
                        alert_state=2 if i == n - 1 else 0, ready=i > 2,
                        **({"band_fields": ("pressure",), "expected": (1.0 + i,), "lower": (0.5 + i,),
                            "upper": (1.5 + i,)} if i > 2 else {})) for i in range(n)]


def test_write_back_batches_scores_beside_the_raw_data() -> None:
    server = start_influxd()
    try:
        cfg = InfluxDBSourceConfig(url=server.url, database="wb",
                                   write_back={"enabled": True, "batch_size": 7, "flush_interval": 0.05})
        registry = CollectorRegistry()
        wb = InfluxDBWriteBack(cfg, metrics=Metrics(registry))
        t0 = int(time.time()) - 100

        async def main() -> None:
            task = asyncio.create_task(wb.run())
            wb.submit(records(20, t0)[:10])
            await asyncio.sleep(0.3)
            wb.submit(records(20, t0)[10:])
            await wb.stop()
            await wb.stop()  # idempotent
            await task

        asyncio.run(asyncio.wait_for(main(), 30))
        assert wb.written == 20
        res = server.query('SELECT score, alert_state, ready FROM sentinel_score GROUP BY *', "wb")
        (series,) = res[0]["series"]
        assert series["tags"] == {"pump": "p1", "site": "a", "source_measurement": "pump"}
        vals = series["values"]
        assert len(vals) == 20 and vals[0][0] == t0 * 10**9
        assert vals[-1][1:] == [0.95, 2, True] and vals[0][3] is False
        band = server.query('SELECT expected_pressure, lower_pressure, upper_pressure FROM sentinel_score', "wb")
        bv = band[0]["series"][0]["values"]
        assert len(bv) == 17 and bv[0][1:] == [4, 3.5, 4.5] and bv[-1][1:] == [20, 19.5, 20.5]  # none unscored
    finally:
        stop_influxd(server)


def test_submit_never_blocks_and_counts_overflow() -> None:
    cfg = InfluxDBSourceConfig(url="http://127.0.0.1:9", write_back={"enabled": True, "max_buffer": 5})
    registry = CollectorRegistry()
    wb = InfluxDBWriteBack(cfg, metrics=Metrics(registry))
    wb.submit(records(8, 0))
    assert wb.dropped == 3
    assert registry.get_sample_value("sentinel_queue_dropped_total", {"queue": "writeback_influxdb"}) == 3
    assert [r.ts for r in wb._peek(10)] == [3.0, 4.0, 5.0, 6.0, 7.0]
