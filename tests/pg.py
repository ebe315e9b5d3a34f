"""A real PostgreSQL server for the tests, from Debian's `postgresql` package (no cluster of its own).

`Server.start()` runs initdb into a temporary folder and starts the server on a free port of
127.0.0.1; both refuse to run as root, so under root they run as the unprivileged `postgres` user
that the package creates (`runuser -u postgres`). It runs without fsync (quick; a crash of the host
may lose data) unless made `durable` (PostgreSQL's defaults, for benchmarks). Every connection from
127.0.0.1 is trusted but the role PASSWORD_ROLE's, which must give its password (scram-sha-256): the
tests of PGPASSWORD, PGPASSFILE and CERVANTES_STORAGE_URL_FILE log in as it. `stop()` stops the
server and deletes the folder. `sql(url, ...)` runs one statement from synchronous test code (as sqlite3 does for files).
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

PASSWORD_ROLE = "cervantes_pw"
PASSWORD = "s3cr3t-Quijote-passw0rd"
ADMIN = "postgres"


def bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def missing() -> str | None:
    """Why no server can be started here, or None."""
    if bin_dir() is None:
        return ("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): "
                "apt-get install -y postgresql (.ci/run does)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: initdb cannot run as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, durable: bool = False):
        self.durable = durable
        self.bin = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="cervantes-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._as_user: list[str] = []
        self._count = 0

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run([*self._as_user, *args], capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            log = (self.root / "server.log")
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}"
                               + (log.read_text()[-2000:] if log.exists() else ""))

    def start(self) -> "Server":
        if os.geteuid() == 0:
            shutil.chown(self.root, ADMIN)
            self._as_user = ["runuser", "-u", ADMIN, "--"]
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", ADMIN, "-A", "trust",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        (self.data / "pg_hba.conf").write_text(
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
            "local all all trust\n")
        self.port = _free_port()
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:  # a test's data may be lost in a crash of the host
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
        sql(self.url("postgres"), f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        return self

    def url(self, database: str, user: str = ADMIN) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database, owned by PASSWORD_ROLE (anyone may use it); its URL as the admin."""
        self._count += 1
        name = f"test_{os.getpid()}_{self._count}"
        sql(self.url("postgres"), f"CREATE DATABASE {name} OWNER {PASSWORD_ROLE}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database new_database made, its connections closed by force (PostgreSQL 13+)."""
        name = url.rsplit("/", 1)[1]
        sql(self.url("postgres"), f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            if self.port:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def sql(url: str, statement: str, *args) -> list[tuple]:
    """One statement on its own connection, from synchronous code (run in a thread of its own, so
    that it works under a running event loop too); the rows as tuples."""
    import asyncpg

    async def run() -> list[tuple]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(statement, *args)]
        finally:
            await conn.close()

    result: dict = {}

    def target() -> None:
        try:
            result["rows"] = asyncio.run(run())
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["rows"]
