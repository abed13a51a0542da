"""An ephemeral, real mosquitto broker for integration tests.

:func:`start_mosquitto` runs the installed ``mosquitto`` on a free 127.0.0.1 port with
a generated config in a temp dir (persistence on, so a broker restart keeps sessions
and queued QoS 1 messages; optional username/password via ``mosquitto_passwd``, optional TLS
with a throw-away CA made by ``openssl``), and
returns a handle that can :meth:`~MosquittoServer.restart` on the same port and
:meth:`~MosquittoServer.publish` with paho. :func:`mosquitto_server` is the
context-manager form. Only loopback addresses are ever contacted.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._proc import LoggedServer, free_port, port_open, require_binary


@dataclass
class MosquittoServer(LoggedServer):
    """A mosquitto broker; ``stop`` sends SIGTERM, so it saves its persistence file."""

    port: int
    workdir: Path
    binary: str
    username: str | None = None
    password: str | None = None
    tls: bool = False
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the broker's certificate (``tls=True``)."""
        return self.workdir / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def start(self, timeout: float = 30.0) -> None:
        tail = self.launch([self.binary, "-c", str(self.workdir / "mosquitto.conf")], lambda: port_open(self.port),
                           "mosquitto listening", timeout)
        if tail is not None:
            raise RuntimeError(f"mosquitto did not start:\n{tail}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def publish(self, topic: str, payloads: Sequence[bytes | str], qos: int = 1, timeout: float = 30.0) -> None:
        """Publish each payload to ``topic`` and wait (bounded) until the broker has acknowledged all."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv311)
        if self.username is not None:
            c.username_pw_set(self.username, self.password)
        if self.tls:
            c.tls_set(ca_certs=str(self.ca_file))
        c.connect("127.0.0.1", self.port, 30)
        c.loop_start()
        try:
            infos = [c.publish(topic, p, qos=qos) for p in payloads]
            for info in infos:
                info.wait_for_publish(timeout)
                if not info.is_published():
                    raise TimeoutError(f"publish to {topic} not acknowledged within {timeout}s")
        finally:
            c.disconnect()
            c.loop_stop()


def make_certificates(workdir: Path) -> None:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl CLI), valid one day."""
    openssl = require_binary("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=workdir, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=sentinel-test-ca")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (workdir / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "1", "-extfile", "ext.cnf")


def write_config(server: MosquittoServer) -> None:
    lines = [
        f"user {getpass.getuser()}",  # as root mosquitto would otherwise drop to 'mosquitto' (no access to workdir)
        f"listener {server.port} 127.0.0.1",
        "persistence true",
        f"persistence_location {server.workdir}/",
        "autosave_interval 1",
        "max_queued_messages 100000",
        f"log_dest file {server.log_path}",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if server.tls:
        make_certificates(server.workdir)
        lines += [f"cafile {server.workdir / 'ca.pem'}", f"certfile {server.workdir / 'server.pem'}",
                  f"keyfile {server.workdir / 'server.key'}"]
    if server.username is not None:
        pw = server.workdir / "passwd"
        passwd = require_binary("mosquitto_passwd")
        subprocess.run([passwd, "-c", "-b", str(pw), server.username, server.password or ""], check=True,
                       capture_output=True, timeout=30)
        pw.chmod(0o600)
        lines += ["allow_anonymous false", f"password_file {pw}"]
    else:
        lines.append("allow_anonymous true")
    (server.workdir / "mosquitto.conf").write_text("\n".join(lines) + "\n")


def start_mosquitto(username: str | None = None, password: str | None = None, tls: bool = False
                    ) -> MosquittoServer:
    """Start mosquitto on a free loopback port; skips locally (fails under ``CI=true``) when not installed."""
    binary = require_binary("mosquitto", "/usr/sbin/mosquitto")
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-mqtt-"))
    server = MosquittoServer(free_port(), workdir, binary, username, password, tls)
    write_config(server)
    server.start()
    return server


def stop_mosquitto(server: MosquittoServer) -> None:
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@contextlib.contextmanager
def mosquitto_server(username: str | None = None, password: str | None = None, tls: bool = False
                     ) -> Iterator[MosquittoServer]:
    server = start_mosquitto(username, password, tls)
    try:
        yield server
    finally:
        stop_mosquitto(server)
