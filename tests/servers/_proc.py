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
