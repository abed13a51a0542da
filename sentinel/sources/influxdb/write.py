"""``sentinel simulate`` into InfluxDB: write samples through the one line-protocol codec."""

from __future__ import annotations

import aiohttp

from ...clients.influxql import InfluxQLClient, quote_ident
from ...config.source_influxdb import InfluxDBSourceConfig
from ...lineprotocol import samples_to_lines
from ...types import Sample


async def write_samples(cfg: InfluxDBSourceConfig, samples: list[Sample], *, batch: int = 5000) -> None:
    """Write samples into the configured InfluxDB (``sentinel simulate``).

    1.x modes create the database if needed and write to ``/write``; ``poll_flux`` writes
    to ``/api/v2/write`` (bucket, org, token).
    """
    async with aiohttp.ClientSession() as session:
        http = InfluxQLClient(cfg, session)
        api = "v2" if cfg.mode == "poll_flux" else "v1"
        if api == "v1":
            await http.query(f"CREATE DATABASE {quote_ident(cfg.database)}")
        lines = samples_to_lines(samples)
        db = cfg.effective_bucket if api == "v2" else cfg.database
        for i in range(0, len(lines), batch):
            await http.write(lines[i:i + batch], db=db, rp=cfg.retention_policy if api == "v1" else "",
                             api=api, org=cfg.org)
