"""``kill -9`` of a process appending to the write-ahead log loses no acknowledged record.

A child appends numbered records and prints each number once :meth:`append` returned
(its acknowledgement). The parent kills it with SIGKILL after a random number of
acknowledgements, reopens the log, and checks that replay holds exactly the records
0..k in order, with k at least the last acknowledged number. The next child continues
from what replay found. Seeded; the seed is printed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentinel.state.wal import WriteAheadLog

CHILD = r"""
import sys
from sentinel.state.wal import WriteAheadLog
d, policy, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
wal = WriteAheadLog(d, fsync=policy, fsync_delay=0.001, segment_bytes=4096)
print("open", flush=True)
i = first
while i < first + 100000:
    wal.append((f"{i}:" + "x" * (i % 97)).encode())
    print(i, flush=True)
    i += 1
"""

KILLS = 8


def replayed_numbers(d: Path) -> list[int]:
    with WriteAheadLog(d, fsync="off") as w:
        return [int(p.split(b":")[0]) for _, p in w.replay()]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("policy", ["always", "batch", "off"])
def test_kill_9_mid_append_loses_no_acknowledged_record(tmp_path: Path, policy: str) -> None:
    seed = int(os.environ.get("SENTINEL_FAULT_SEED", random.randrange(2**32)))
    print(f"seed={seed} (SENTINEL_FAULT_SEED to repeat)")
    rnd = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    nxt = 0
    deadline = time.monotonic() + 150
    for kill in range(KILLS):
        assert time.monotonic() < deadline, f"took too long at kill {kill}"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), policy, str(nxt)],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "open"
        acked = -1
        for _ in range(rnd.randint(1, 400)):
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        got = replayed_numbers(tmp_path)
        assert got == list(range(len(got))), f"replay is not 0..k in order (kill {kill}, seed {seed})"
        assert len(got) - 1 >= acked, f"acknowledged {acked} but replay ends at {len(got) - 1} (seed {seed})"
        nxt = len(got)
    assert nxt > KILLS
