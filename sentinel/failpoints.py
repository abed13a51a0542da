"""Named points where a fault test can make the process die on purpose (``kill -9`` at a known moment).

``SENTINEL_FAILPOINTS="wal.torn=3,checkpoint.write=1"`` arms points: the 3rd time the
code passes ``wal.torn`` the process sends itself SIGKILL. Unset (production), every
call is one dict lookup on an empty dict. Points:

* ``wal.append``: after a record reached the kernel, before the write returns;
* ``wal.torn``: halfway through a record (a torn tail for the next start to cut off);
* ``checkpoint.copy``: a chunk of a fuzzy checkpoint copied, the file not yet written;
* ``checkpoint.write``: temp file written, not yet renamed (a stale temp file);
* ``checkpoint.renamed``: the new checkpoint in place, older ones not yet pruned;
* ``engine.tick``: the engine thread scored a batch but has not reported it scored.
* ``ingest.worker``: an ingest worker process (:mod:`sentinel.sources.parseworker`) took a job.
"""

from __future__ import annotations

import os
import signal


def _parse(spec: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in spec.split(","):
        name, _, n = part.strip().partition("=")
        if name:
            out[name] = int(n) if n.strip().isdigit() else 1
    return out


ARMED: dict[str, int] = _parse(os.environ.get("SENTINEL_FAILPOINTS", ""))


def hit(name: str) -> None:
    """Die here if ``name`` is armed and this is its n-th pass."""
    n = ARMED.get(name)
    if n is None:
        return
    ARMED[name] = n - 1
    if n <= 1:
        os.kill(os.getpid(), signal.SIGKILL)
