"""D9: after ``kill -9`` of the daemon process, its training worker and resource_tracker end too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = r"""
import inspect, os, sys, time
from sentinel.runtime.trainer import BackgroundTrainer
kw = {"device": "cpu", "threads": 1}
if "settings" in inspect.signature(BackgroundTrainer).parameters:
    kw["settings"] = None
t = BackgroundTrainer(**kw)
print(t._pool.submit(os.getpid).result(timeout=120), flush=True)
time.sleep(300)
"""


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.timeout(180)
def test_worker_and_resource_tracker_die_with_a_killed_parent() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=env)
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    kids = children_of(parent.pid)
    assert worker in kids and len(kids) >= 2  # the worker and multiprocessing's resource_tracker
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(30)
    deadline = time.monotonic() + 30
    while any(running(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [k for k in kids if running(k)]
    for k in left:  # clean up what this test started before failing
        os.kill(k, signal.SIGKILL)
    assert not left, "children outlived the killed parent"
