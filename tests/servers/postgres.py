"""An ephemeral, real PostgreSQL for integration tests.

``initdb`` and ``postgres`` run as the ``postgres`` system user (PostgreSQL refuses
to run as root) in a fresh temp directory that user owns, on a free loopback port,
with the unix socket in the same directory and ``fsync=off`` for speed. The server
is stopped and the directory removed afterwards. Missing binaries skip (fail under
``CI=true``) through :func:`tests.servers._proc.unavailable`.

Fixtures: ``postgres_server`` (one server per test session/module) and ``pg_dsn``
(a fresh database on it per test).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._proc import free_port, require_binary, stop_process, unavailable, wait_until

PG_USER = "postgres"


def _pg_bin(name: str) -> str:
    return require_binary(name)


class PgServer:
    """One PostgreSQL cluster in a temp dir; ``restart()`` keeps data and port."""

    def __init__(self) -> None:
        try:
            self._pw = pwd.getpwnam(PG_USER)
        except KeyError:
            unavailable(f"system user {PG_USER!r} does not exist (install the postgresql package)")
        self.initdb = _pg_bin("initdb")
        self.postgres = _pg_bin("postgres")
        self.root = Path(tempfile.mkdtemp(prefix="sentinel-pg-", dir="/tmp"))
        os.chmod(self.root, 0o700)
        os.chown(self.root, self._pw.pw_uid, self._pw.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "postgres.log"
        self._run_as_pg([self.initdb, "-D", str(self.data), "-U", PG_USER, "-A", "trust", "-N",
                         "-E", "UTF8", "--locale=C"])

    def _run_as_pg(self, argv: list[str]) -> None:
        r = subprocess.run(argv, user=self._pw.pw_uid, group=self._pw.pw_gid, cwd=self.root,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr[-2000:]}")

    @property
    def dsn(self) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, db: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child, closed by the OS on exit
        try:
            self.proc = subprocess.Popen(
                [self.postgres, "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
                 "-k", str(self.root), "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=50", "-c", "shared_buffers=32MB"],
                user=self._pw.pw_uid, group=self._pw.pw_gid, cwd=self.root,
                stdout=log, stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        wait_until(self.ready, timeout=30, interval=0.05, what=f"postgres on port {self.port}")

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {self.log.read_text(errors='replace')[-2000:]}")
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=1) as c:
                c.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """Fast shutdown: SIGINT makes postgres disconnect its clients and exit cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            import signal

            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_for(name)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer:
    server = PgServer()
    try:
        server.start()
    except Exception:
        server.cleanup()
        raise
    return server


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PgServer]:
    """A real PostgreSQL shared by the tests of one module."""
    server = start_server()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_dsn(postgres_server: PgServer) -> str:
    """DSN of a fresh, empty database on the module's server."""
    return postgres_server.create_database()
