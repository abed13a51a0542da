"""Ephemeral, real ``nats-server`` (JetStream on) for integration tests.

:func:`nats_server` runs the installed binary on a free 127.0.0.1 port with its store
in a temp dir (``-js -sd DIR``) and stops it; :func:`nats_cluster` runs three nodes
routed to each other (a JetStream cluster, for R3 streams) and can :meth:`NatsNode.kill`
one. A missing binary skips locally and fails under ``CI=true``; a server that does not
start fails under ``CI=true`` too. Only loopback addresses are ever contacted.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._proc import LoggedServer, free_port, port_open, require_binary, unavailable


@dataclass
class NatsNode(LoggedServer):
    port: int
    workdir: Path
    binary: str
    name: str = "n0"
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        cmd = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.workdir / self.name),
               "-n", self.name]
        if self.cluster_port is not None:
            cmd += ["--cluster_name", "sentinel", "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                    "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        return cmd

    def start(self, timeout: float = 20.0) -> None:
        tail = self.launch(self.command(), lambda: port_open(self.port), f"nats-server {self.name} listening", timeout)
        if tail is not None:
            unavailable(f"nats-server did not start:\n{tail}")

    def kill(self) -> None:
        """SIGKILL, no goodbye (a node lost)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@contextlib.contextmanager
def nats_server() -> Iterator[NatsNode]:
    """One JetStream-enabled nats-server on a free loopback port."""
    binary = require_binary("nats-server", "/usr/sbin/nats-server")
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-nats-"))
    node = NatsNode(free_port(), workdir, binary)
    try:
        node.start()
        yield node
    finally:
        node.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def nats_cluster(size: int = 3) -> Iterator[list[NatsNode]]:
    """``size`` routed JetStream nodes (one cluster); each node's URL in ``node.url``."""
    binary = require_binary("nats-server", "/usr/sbin/nats-server")
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-natsc-"))
    cports = [free_port() for _ in range(size)]
    nodes = [NatsNode(free_port(), workdir, binary, f"n{i}", cports[i], [p for p in cports if p != cports[i]])
             for i in range(size)]
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()
        shutil.rmtree(workdir, ignore_errors=True)
