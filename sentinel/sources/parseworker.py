"""An ingest worker process: line-protocol bodies in on stdin, column arrays out on stdout.

Started by :class:`~sentinel.sources.parsepool.ParsePool` as ``python -m
sentinel.sources.parseworker``. It holds a replica of each receiver's columnar path
(:class:`~sentinel.sources.bulk.Bulk`: the heads it knows, their series ids and field
layouts), kept in step by the events each job carries, and parses a body with exactly
that path. A body the columnar path does not take (a head never seen, a quote, a bad
line, invalid UTF-8) comes back as ``None`` and is parsed in the daemon, where the
selector's state lives; so a worker never decides anything the in-process parse would
decide differently.

Frames, both ways: 4-byte big-endian length, then a pickle (a pipe between the daemon and
its own child; nothing else writes to it).

* job: ``(job_id, channel, generation, reset, events, body, mult, now_ns, lo, hi, max_fields)``
* answer: ``(job_id, generation, None | (sid, ts, values, rejected, lines, max_ts_ns))``;
  the first frame is ``(0, 0, "ready")``.

It exits on EOF of stdin (the daemon closed the pipe or died: no orphan) and on any
error (the daemon sees the EOF of stdout, parses the bodies it had sent in-process and
starts a new worker). The failpoint ``ingest.worker`` (:mod:`sentinel.failpoints`) kills
it at its n-th job, for the fault tests.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from typing import BinaryIO

from .. import failpoints
from .bulk import Bulk

_LEN = struct.Struct(">I")


def read_frame(f: BinaryIO) -> bytes | None:
    """One frame's payload; None at EOF."""
    head = f.read(4)
    if len(head) < 4:
        return None
    (n,) = _LEN.unpack(head)
    data = f.read(n)
    return data if len(data) == n else None


def frame(obj: object) -> bytes:
    data = pickle.dumps(obj, protocol=5)
    return _LEN.pack(len(data)) + data


def parse_job(replicas: dict[int, tuple[int, Bulk]], job: tuple) -> tuple:
    """Apply ``job``'s events to its channel's replica, then parse its body (the answer frame's tuple)."""
    job_id, ch, gen, reset, events, body, mult, now_ns, lo, hi, max_fields = job
    got = replicas.get(ch)
    if reset or got is None or got[0] != gen:
        got = replicas[ch] = (gen, Bulk())
    bulk = got[1]
    bulk.apply(events)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return job_id, gen, None
    res = bulk.parse(text, mult, now_ns, lo, hi, max_fields)
    if res is None:
        return job_id, gen, None
    cols, rej, lines, max_ts = res
    if cols is None:
        return job_id, gen, (None, None, None, rej, lines, max_ts)
    return job_id, gen, (cols.sid, cols.ts, cols.values, rej, lines, max_ts)


def main(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
    fin = stdin or sys.stdin.buffer
    if stdout is None:  # the frames get the real stdout; anything printed by accident goes to stderr
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the daemon's to handle
        fout: BinaryIO = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
    else:
        fout = stdout
    replicas: dict[int, tuple[int, Bulk]] = {}
    fout.write(frame((0, 0, "ready")))
    fout.flush()
    while True:
        data = read_frame(fin)
        if data is None:
            return 0
        job = pickle.loads(data)
        if failpoints.ARMED:
            failpoints.hit("ingest.worker")
        fout.write(frame(parse_job(replicas, job)))
        fout.flush()


if __name__ == "__main__":
    sys.exit(main())
