"""Child processes die with their parent: a watchdog thread that exits when the parent is gone.

A ``kill -9`` of the daemon gives it no chance to stop its training worker; without
this, the worker (and multiprocessing's ``resource_tracker``, which lives as long as
any process holds its pipe) kept running for minutes. The child polls
``os.getppid()``: when its parent dies it is re-parented (to init or a subreaper)
and the value changes.

Linux's ``prctl(PR_SET_PDEATHSIG)`` is not used: it fires when the parent *thread*
that spawned the child exits, and a process pool spawns its worker from whichever
thread first submits, so a short-lived thread would kill a healthy worker.
"""

from __future__ import annotations

import os
import threading
import time


def die_with_parent(interval: float = 0.5, parent: int | None = None) -> threading.Thread:
    """Start a daemon thread that ends this process (exit code 1) once ``parent`` (default: now's) is gone."""
    ppid = os.getppid() if parent is None else parent

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != ppid:
                os._exit(1)

    t = threading.Thread(target=watch, name="lifeline", daemon=True)
    t.start()
    return t
