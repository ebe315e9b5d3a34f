"""The embedded store: one SQLite file, through aiosqlite.

Two connections in autocommit mode. Writes go through one and hold an asyncio.Lock while they run,
so transactions (explicit BEGIN IMMEDIATE ... COMMIT) never interleave on it. Reads go through the
other, without the lock: a write that waits for another process's lock (up to the busy timeout)
never holds them up, since in WAL mode a reader sees the last commit while a writer works.

The schema's version is `PRAGMA user_version`; the chat-tag secret is a file beside the database
(storage.tags); the files are private (storage.files). Deleted rows are overwritten with zeros
(`secure_delete`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Iterable, Sequence

import aiosqlite

from storage import files, tags
from storage.engines._base import Engine
from storage.errors import StorageError, translated
from storage.migrations import judge_schema, migrate

log = logging.getLogger(__name__)

_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY name"
_FIX = "Point [storage] path (CERVANTES_STORAGE_PATH) at a new file or at the bot's own"


class _Tx:
    def __init__(self, db: aiosqlite.Connection):
        self.db = db

    async def execute(self, sql: str, parameters: Sequence = ()) -> int:
        cursor = await self.db.execute(sql, tuple(parameters))
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
        await self.db.executemany(sql, [tuple(r) for r in rows])

    async def fetch(self, sql: str, parameters: Sequence = ()) -> list[tuple]:
        return [tuple(r) for r in await self.db.execute_fetchall(sql, tuple(parameters))]


class SQLiteEngine(Engine):
    name = "SQLite"
    same = "IS"

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False, busy_timeout_ms: int = 5000):
        self.path = Path(path)
        if str(path).strip() == ":memory:":
            raise ValueError(":memory: would give the reader and the writer two different empty databases")
        self.where = str(self.path)
        self.read_only = read_only  # opened with ?mode=ro: every write raises StorageError
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._db: aiosqlite.Connection | None = None  # the writer
        self._reader: aiosqlite.Connection | None = None
        self.lock = asyncio.Lock()  # the writer's

    async def start(self, target: int) -> bytes:
        if self.read_only and not self.path.is_file():
            raise StorageError(f"{self.path}: could not open the database: the file does not exist")
        if not self.read_only:
            files.create_private(self.path)  # a new one 0600 before sqlite: -wal and -shm take its mode
        async with contextlib.AsyncExitStack() as opened:
            self._db = await self._connect()
            opened.callback(setattr, self, "_db", None)
            opened.push_async_callback(self._db.close)
            with translated("open the database", self.path):
                await self._configure(self._db, target)
            if not self.read_only:  # ours (checked): made private if an older version left it open
                for path in (self.path, *files.side_files(self.path)):
                    files.tighten(path)
            self._reader = await self._connect()
            opened.callback(setattr, self, "_reader", None)
            opened.push_async_callback(self._reader.close)
            with translated("open the database", self.path):
                await self._reader.execute("PRAGMA query_only = ON")
            secret = tags.load_secret(self.path, create=not self.read_only)
            opened.pop_all()
        return secret

    async def _connect(self) -> aiosqlite.Connection:
        with translated("open the database", self.path):
            if self.read_only:
                db = await aiosqlite.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True,
                                             isolation_level=None)
            else:
                db = await aiosqlite.connect(self.path, isolation_level=None)
            try:
                # PRAGMAs take no parameters; the timeout is an int we made.
                await db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            except BaseException:
                await db.close()
                raise
        return db

    async def _configure(self, db: aiosqlite.Connection, target: int) -> None:
        await db.execute("PRAGMA foreign_keys = ON")
        version, found = await self.read_schema()
        judge_schema(version, found, str(self.path), _FIX)  # another program's file is refused unchanged
        if self.read_only:
            if version < target:
                raise StorageError(f"{self.path} is at schema version {version}, older than "
                                   f"{target}: open it once writable to upgrade it")
            return
        mode = await self._journal_mode_wal(db)
        if mode != "wal":
            log.warning("%s: journal_mode is %s, not wal", self.path, mode)
        await db.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; fsync at checkpoints
        # deleted rows (/olvidar, retention) are overwritten with zeros, not left in free space
        await db.execute("PRAGMA secure_delete = ON")
        await migrate(self, target)

    async def _journal_mode_wal(self, db: aiosqlite.Connection) -> str:
        """Switch to WAL. Another process opening the file at the same moment can make the switch
        meet "database is locked" at once (sqlite does not wait on it): try again within the busy
        timeout (issue 19, item 9)."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                (mode,) = (await db.execute_fetchall("PRAGMA journal_mode = WAL"))[0]
                return mode
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        async with self.lock:  # lets a write in flight finish first
            if self._db is not None:
                (db, self._db), (reader, self._reader) = (self._db, None), (self._reader, None)
                if reader is not None:
                    await reader.close()
                await db.close()

    @asynccontextmanager
    async def writing(self, doing: str) -> AsyncIterator[_Tx]:
        """The writer connection, alone, in BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error: COMMIT
        itself may hit a full disk)."""
        async with self.lock:
            if self._db is None:
                raise RuntimeError("the database is closed")
            db = self._db
            with translated(doing, self.path):
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield _Tx(db)
                    await db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        try:
                            await db.execute("ROLLBACK")
                        except Exception as exc:  # keep the first error; this one only adds to it
                            log.warning("rollback failed: %s", exc)
                    raise

    async def read(self, doing: str, sql: str, parameters: Sequence = ()) -> list[tuple]:
        if self._reader is None:
            raise RuntimeError("the database is closed")
        with translated(doing, self.path):
            return [tuple(r) for r in await self._reader.execute_fetchall(sql, tuple(parameters))]

    async def read_schema(self) -> tuple[int, dict[str, list[str]]]:
        """In one transaction: one snapshot of the file, so that another process's migration cannot
        commit between reading the version and reading the tables (issue 19, item 9)."""
        db = self._db
        await db.execute("BEGIN")
        try:
            (row,) = await db.execute_fetchall("PRAGMA user_version")
            found = {}
            for (name,) in await db.execute_fetchall(_TABLES):
                # the name is sqlite's own, from sqlite_master; quoted as an identifier all the same
                quoted = '"' + name.replace('"', '""') + '"'
                found[name] = [col[1] for col in await db.execute_fetchall(f"PRAGMA table_info({quoted})")]
        finally:
            await db.execute("COMMIT")
        return int(row[0]), found

    @asynccontextmanager
    async def migrating(self) -> AsyncIterator[tuple[_Tx, int]]:
        db = self._db
        await db.execute("BEGIN IMMEDIATE")  # the write lock: other processes wait (busy timeout)
        try:
            (row,) = await db.execute_fetchall("PRAGMA user_version")
            yield _Tx(db), int(row[0])
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise

    def script(self, migration) -> str:
        return migration.sqlite

    async def set_version(self, tx: _Tx, version: int) -> None:
        # PRAGMA takes no parameters; `version` is our own int, never outside input.
        await tx.execute(f"PRAGMA user_version = {int(version)}")

    async def backup(self, dest: Path) -> Path:
        """Through sqlite's online backup API, safe while running. Written beside `dest` first (mode
        0600, as the database) and renamed into place, so `dest` is never a half-written file nor,
        for a moment, one that others can read. A folder is refused; any failure removes the partial
        copy (it holds every chat's data, which neither /olvidar nor keep_days would reach)."""
        if dest.is_dir():
            raise StorageError(f"{dest} is a folder: name a file for the copy, such as "
                               f"{dest / self.path.name}")
        if dest.resolve() == self.path.resolve():
            raise ValueError("the backup cannot overwrite the database itself")
        partial = dest.with_name(dest.name + ".partial")
        async with self.lock:
            if self._db is None:
                raise RuntimeError("the database is closed")
            try:
                with translated("back up the database", self.path):
                    partial.unlink(missing_ok=True)
                    files.create_private(partial, exclusive=True)  # sqlite keeps the mode of a file it finds
                    target = await aiosqlite.connect(partial)
                    try:
                        await self._db.backup(target)
                    finally:
                        await target.close()
                    os.replace(partial, dest)
            except OSError as exc:
                raise StorageError(f"could not write the copy {dest}: {exc.strerror or exc}") from exc
            finally:
                partial.unlink(missing_ok=True)
        return dest

    async def integrity_check(self) -> str:
        """sqlite's PRAGMA integrity_check."""
        async with self.lock:
            with translated("check the database", self.path):
                rows = await self._db.execute_fetchall("PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)
