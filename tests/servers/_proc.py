"""Helpers shared by the ephemeral-server fixtures."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI (DESIGN §12)."""
    if IN_CI:
        pytest.fail(f"CI=true and a required server is unavailable: {reason}")
    pytest.skip(reason)


def require_binary(*names: str) -> str:
    """Path of the first installed binary among ``names`` (also searching /usr/lib/postgresql/*/bin)."""
    extra = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True) if Path("/usr/lib/postgresql").exists() else []
    for name in names:
        found = shutil.which(name) or next((str(d / name) for d in extra if (d / name).exists()), None)
        if found:
            return found
    unavailable(f"none of {names} is installed (make test installs them with apt)")
    raise AssertionError("unreachable")


def sentinel_exe() -> Path:
    """The ``sentinel`` installed beside the interpreter running the tests (the venv's, or the system's).

    Not resolved through symlinks: a venv's ``bin/python`` links to the base interpreter.
    """
    exe = Path(sys.executable).parent / "sentinel"
    if not exe.exists():
        unavailable(f"no sentinel next to {sys.executable} (pip install -e . first)")
    return exe


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> None:
    """Poll ``pred`` until true; bounded in time (raises TimeoutError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def file_tail(path: Path, n: int = 4000) -> str:
    """The last ``n`` characters of a server's log (empty when it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError):
        return False


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class LoggedServer:
    """What the server wrappers (dataclasses with ``proc``, ``_log``, ``workdir`` and ``log_path``)
    share: the process writes to its log file, :meth:`launch` waits until it is ready, :meth:`stop`
    ends it (safe to call twice)."""

    proc: subprocess.Popen[bytes] | None
    _log: Any
    workdir: Path
    log_path: Path

    def log_tail(self, n: int = 4000) -> str:
        return file_tail(self.log_path, n)

    def launch(self, cmd: list[str], ready: Callable[[], bool], what: str, timeout: float) -> str | None:
        """Start ``cmd`` in the work dir and wait until it runs and ``ready()``; None, or (it did not
        get ready: stopped again) the tail of its log."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir)
        try:
            wait_until(lambda: proc.poll() is None and ready(), timeout=timeout, what=what)
        except TimeoutError:
            tail = self.log_tail()
            self.stop()
            return tail
        return None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
