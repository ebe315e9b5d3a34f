"""A real PostgreSQL server for the tests: Debian's postgresql package, started by the tests.

`initdb` into a temporary folder as the unprivileged `postgres` user (when the tests run as root;
as themselves otherwise), then `postgres` on a free port of 127.0.0.1, trust authentication, no
fsync (the tests' data need not survive a crash of the machine). A test that needs it fails, not
skips, when the package is missing: `apt-get install -y postgresql` (.ci/run does it).

    from pg_server import postgres_server  # a session fixture, in a test module or conftest.py

    def test_x(postgres_server):
        url = postgres_server.url  # postgresql://postgres@127.0.0.1:PORT/postgres
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

USER = "postgres"  # the package's system user, and the database superuser the tests connect as


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb and postgres, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One postgres process over its own data folder; `stop()` and `start()` again at will."""

    def __init__(self, bin_dir: Path, folder: Path):
        self.bin, self.folder = bin_dir, folder
        self.data, self.log = folder / "data", folder / "postgres.log"
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def _as_user(self, args: list) -> list:
        return (["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []) + [str(a) for a in args]

    def init(self) -> None:
        if os.geteuid() == 0:
            os.chown(self.folder, pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid)
        subprocess.run(self._as_user([self.bin / "initdb", "-D", self.data, "-U", USER, "--auth=trust",
                                      "-E", "UTF8", "--no-sync", "--no-instructions"]),
                       check=True, capture_output=True, cwd=self.folder)

    def start(self, timeout: float = 30.0) -> None:
        log = open(self.log, "a")  # the child keeps its own copy of the descriptor
        self.process = subprocess.Popen(
            self._as_user([self.bin / "postgres", "-D", self.data, "-p", self.port, "-k", self.folder,
                           "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"]),
            stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run([self.bin / "pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                                   capture_output=True)
            if ready.returncode == 0:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """A fast shutdown (SIGINT: connections are cut, the server exits)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            subprocess.run(self._as_user([self.bin / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"]),
                           capture_output=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def psql(self, sql: str) -> str:
        """Run `sql` with psql as the superuser; its output, unaligned and without headers."""
        done = subprocess.run([self.bin / "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url,
                               "-c", sql], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr}")
        return done.stdout.strip()


@contextlib.contextmanager
def running() -> Iterator[Server]:
    bin_dir = binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres): "
                           "apt-get install -y postgresql")
    folder = Path(tempfile.mkdtemp(prefix="cervantes-pg-"))
    server = Server(bin_dir, folder)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """A PostgreSQL server for the whole run; the test fails (never skips) when it cannot start."""
    try:
        with running() as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))
