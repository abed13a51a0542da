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


TORN = r"""
import sys
from sentinel.state.wal import WriteAheadLog
wal = WriteAheadLog(sys.argv[1], fsync="always")
for i in range(10):
    wal.append(f"record {i} ".encode() * 20)
"""

CKPT = r"""
import sys, torch
from sentinel.state import checkpoint as ckpt
ckpt.save(sys.argv[1], {"n": 1}, {"x": torch.zeros(3)})
ckpt.save(sys.argv[1], {"n": 2}, {"x": torch.ones(3)})
"""


def run_armed(script: str, arg: Path, points: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "SENTINEL_FAILPOINTS": points}
    return subprocess.run([sys.executable, "-c", script, str(arg)], env=env, timeout=120).returncode


def test_a_kill_mid_record_leaves_a_torn_tail_that_the_next_open_cuts_off(tmp_path: Path) -> None:
    assert run_armed(TORN, tmp_path, "wal.torn=5") == -signal.SIGKILL
    with WriteAheadLog(tmp_path, fsync="off") as w:
        got = [p for _, p in w.replay()]
        assert w.repaired_bytes > 0
    assert got == [f"record {i} ".encode() * 20 for i in range(4)]


def test_a_kill_mid_checkpoint_leaves_a_temp_file_that_restore_removes(tmp_path: Path) -> None:
    """D8: ``.tmp-PID`` files were left after a kill mid-write; D7: the number is not reused."""
    from sentinel.state import checkpoint as ckpt

    assert run_armed(CKPT, tmp_path, "checkpoint.write=2") == -signal.SIGKILL
    temps = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert len(temps) == 1 and temps[0].startswith(".checkpoint-00000002.pt.tmp-")
    r = ckpt.restore(tmp_path, lambda c: None)
    assert r.checkpoint is not None and r.checkpoint.meta == {"n": 1}
    assert [p.name for p in r.cleaned] == temps and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert ckpt.save(tmp_path, {"n": 3}, {}).name == "checkpoint-00000002.pt"  # the temp file is gone: free again
