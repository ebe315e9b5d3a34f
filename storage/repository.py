"""Per-chat settings and continuations in one SQLite file, behind a small async repository.

One aiosqlite connection in autocommit mode; every method holds one asyncio.Lock while it runs, so
transactions (explicit BEGIN IMMEDIATE ... COMMIT) never interleave on the shared connection.
Unreadable rows are logged and deleted, never raised; a full disk or a read-only file surfaces as
StorageError, and the connection stays usable for reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import numbers
import os
import sqlite3
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Iterator, NamedTuple

import aiosqlite
import numpy as np

from storage.migrations import MIGRATIONS, migrate, user_version

log = logging.getLogger(__name__)

TAIL_CHARS = 500  # characters of the text so far kept to re-prime when the model changed
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's lock before failing


class StorageError(Exception):
    """The database cannot do what was asked (disk full, read-only, locked, damaged); say so politely."""


class ChatKey(NamedTuple):
    platform: str  # "telegram", "discord", "console"
    chat_id: str  # as text: Discord snowflakes, Telegram's negative group ids

    @property
    def tag(self) -> str:
        """Names the chat in logs without its id: the same short hash in every log line."""
        return hashlib.sha256(f"{self.platform}:{self.chat_id}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Settings:
    temperature: float | None = None  # None: the configured default
    length: int | None = None  # characters to generate; None: the configured default


@dataclass(frozen=True, eq=False)  # eq=False: a numpy array has no single truth value
class Continuation:
    state: np.ndarray  # [units] float32: the GRU state after every character but the last
    model_id: str  # identity of the model that made `state`
    last_char: str  # fed with `state` to go on exactly where the text stopped ("" if unknown)
    tail: str  # the last TAIL_CHARS characters of the text so far, to re-prime another model
    updated_at: float = field(default_factory=time.time)  # unix seconds

    def __post_init__(self):
        state = np.array(self.state, dtype=np.float32)  # a copy: ours, not the caller's buffer
        if state.ndim != 1 or state.size == 0:
            raise ValueError(f"state must be a non-empty [units] vector, got shape {state.shape}")
        if not np.isfinite(state).all():
            raise ValueError("state holds NaN or infinity")
        state.flags.writeable = False
        object.__setattr__(self, "state", state)
        if not isinstance(self.model_id, str) or not self.model_id:
            raise ValueError("model_id must be a non-empty string")
        if not isinstance(self.last_char, str) or len(self.last_char) > 1:
            raise ValueError(f"last_char must be one character, got {self.last_char!r:.20}")
        if not isinstance(self.tail, str):
            raise ValueError("tail must be a string")
        object.__setattr__(self, "tail", self.tail[-TAIL_CHARS:])
        if not _is_finite_number(self.updated_at):
            raise ValueError("updated_at must be a finite number of seconds")
        object.__setattr__(self, "updated_at", float(self.updated_at))


class _Unreadable(Exception):
    """A stored row that does not make sense; it is logged and deleted."""


class _RollBack(Exception):
    """Raised inside a transaction to undo it on purpose."""


# sqlite's primary result codes for trouble with the file or the disk, not with our SQL.
_TROUBLE = {
    3: ("access permission denied", "permission to the database file was denied"),  # SQLITE_PERM
    5: ("database is locked", "the database is locked by another process"),  # SQLITE_BUSY
    6: ("database table is locked", "the database is locked"),  # SQLITE_LOCKED
    8: ("readonly database", "the database is read-only"),  # SQLITE_READONLY
    10: ("disk i/o error", "the disk failed to read or write"),  # SQLITE_IOERR
    11: ("malformed", "the database file is damaged"),  # SQLITE_CORRUPT
    13: ("database or disk is full", "the disk is full"),  # SQLITE_FULL
    14: ("unable to open database", "the database file cannot be opened"),  # SQLITE_CANTOPEN
    26: ("file is not a database", "the file is not a database"),  # SQLITE_NOTADB
}


def _trouble(exc: sqlite3.Error) -> str | None:
    """What went wrong in words, or None for errors that are bugs in our code (let them raise)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+; extended code
    if code is not None:
        found = _TROUBLE.get(code & 0xFF)
        return found[1] if found else None
    message = str(exc).lower()
    return next((why for fragment, why in _TROUBLE.values() if fragment in message), None)


@contextmanager
def _translated(doing: str) -> Iterator[None]:
    """sqlite errors about the file or the disk become StorageError; others are bugs and stay."""
    try:
        yield
    except sqlite3.Error as exc:
        why = _trouble(exc)
        if why is None:
            raise
        raise StorageError(f"could not {doing}: {why} ({exc})") from exc


def _is_finite_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _key(key) -> ChatKey:
    platform, chat_id = key
    if not isinstance(platform, str) or not platform:
        raise ValueError(f"platform must be a non-empty string, got {platform!r}")
    if isinstance(chat_id, numbers.Integral) and not isinstance(chat_id, bool):
        chat_id = str(int(chat_id))  # Telegram and Discord hand out ints; stored as text
    if not isinstance(chat_id, str) or not chat_id:
        raise ValueError("chat_id must be a non-empty string or an int")
    return ChatKey(platform, chat_id)


class Storage:
    """`async with await Storage.open(path) as storage:` or `Storage(path)`, `await start()`, `await close()`."""

    def __init__(self, path: str | os.PathLike, *, read_only: bool = False,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS):
        self.path = Path(path)
        self.read_only = read_only  # opened with ?mode=ro: every write raises StorageError
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike, **kwargs) -> "Storage":
        storage = cls(path, **kwargs)
        await storage.start()
        return storage

    async def __aenter__(self) -> "Storage":
        if self._db is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the connection, set the pragmas and bring the schema up to date."""
        if self._db is not None:
            raise RuntimeError("Storage already started")
        if self.read_only and not self.path.is_file():
            raise StorageError(f"could not open the database: {self.path} does not exist")
        with _translated("open the database"):
            if self.read_only:
                db = await aiosqlite.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True,
                                             isolation_level=None)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            with _translated("open the database"):
                await self._configure(db)
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def _configure(self, db: aiosqlite.Connection) -> None:
        # PRAGMAs take no parameters; the timeout is an int we made.
        await db.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        await db.execute("PRAGMA foreign_keys = ON")
        version = await user_version(db)
        if version > len(MIGRATIONS):
            raise StorageError(f"{self.path} is at schema version {version}, newer than this "
                               f"program's {len(MIGRATIONS)}: run a newer cervantes")
        if self.read_only:
            if version < len(MIGRATIONS):
                raise StorageError(f"{self.path} is at schema version {version}, older than "
                                   f"{len(MIGRATIONS)}: open it once writable to upgrade it")
            return
        (mode,) = (await db.execute_fetchall("PRAGMA journal_mode = WAL"))[0]
        if mode != "wal":
            log.warning("%s: journal_mode is %s, not wal", self.path, mode)
        await db.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; fsync at checkpoints
        await migrate(db)

    async def close(self) -> None:
        async with self._lock:  # lets a method in flight finish first
            if self._db is not None:
                db, self._db = self._db, None
                await db.close()

    # --- the plumbing every method goes through -------------------------------------------------

    @asynccontextmanager
    async def _locked(self, doing: str) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, alone; sqlite errors about the file or the disk become StorageError."""
        async with self._lock:
            if self._db is None:
                raise RuntimeError("Storage is not started (await Storage.open(path) or start())")
            with _translated(doing):
                yield self._db

    @staticmethod
    @asynccontextmanager
    async def _transaction(db: aiosqlite.Connection) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (COMMIT itself may hit a full disk)."""
        await db.execute("BEGIN IMMEDIATE")
        try:
            yield
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                try:
                    await db.execute("ROLLBACK")
                except sqlite3.Error as exc:  # keep the first error; this one only adds to it
                    log.warning("rollback failed: %s", exc)
            raise

    async def _discard(self, db: aiosqlite.Connection, what: str, delete_sql: str, key: ChatKey,
                       why: str) -> None:
        """Log an unreadable row and delete it; never raises (a read-only file keeps the row)."""
        log.warning("unreadable %s of %s chat #%s, deleting it: %s",
                    what, key.platform, key.tag, why)
        try:
            async with self._transaction(db):
                await db.execute(delete_sql, key)
        except sqlite3.Error as exc:
            log.warning("could not delete the unreadable row of %s chat #%s: %s",
                        key.platform, key.tag, exc)

    # --- settings -------------------------------------------------------------------------------

    _SELECT_SETTINGS = "SELECT temperature, length FROM chat_settings WHERE platform = ? AND chat_id = ?"

    async def get_settings(self, key: ChatKey | tuple[str, str | int]) -> Settings:
        """The chat's settings; default Settings() for a chat never seen or a row that cannot be read."""
        key = _key(key)
        async with self._locked("read the settings") as db:
            rows = await db.execute_fetchall(self._SELECT_SETTINGS, key)
            if not rows:
                return Settings()
            temperature, length = rows[0]
            if temperature is not None and not (_is_finite_number(temperature) and temperature >= 0):
                why = f"temperature {temperature!r:.20} is not a finite number >= 0"
            elif length is not None and not (isinstance(length, int) and length > 0):
                why = f"length {length!r:.20} is not a positive integer"
            else:
                return Settings(None if temperature is None else float(temperature), length)
            await self._discard(db, "settings", self._FORGET["chat_settings"], key, why)
            return Settings()

    _UPSERT_TEMPERATURE = """
        INSERT INTO chat_settings (platform, chat_id, temperature) VALUES (?, ?, ?)
        ON CONFLICT (platform, chat_id) DO UPDATE SET temperature = excluded.temperature
    """

    async def set_temperature(self, key: ChatKey | tuple[str, str | int], value: float | None) -> None:
        """None goes back to the configured default. Ranges are the caller's business; this wants >= 0 (0 is greedy)."""
        if value is not None and not (_is_finite_number(value) and value >= 0):
            raise ValueError(f"temperature must be a finite number >= 0 or None, got {value!r}")
        key = _key(key)
        async with self._locked("save the temperature") as db, self._transaction(db):
            await db.execute(self._UPSERT_TEMPERATURE, (*key, None if value is None else float(value)))

    _UPSERT_LENGTH = """
        INSERT INTO chat_settings (platform, chat_id, length) VALUES (?, ?, ?)
        ON CONFLICT (platform, chat_id) DO UPDATE SET length = excluded.length
    """

    async def set_length(self, key: ChatKey | tuple[str, str | int], value: int | None) -> None:
        """None goes back to the configured default."""
        if value is not None and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
                                      and value > 0):
            raise ValueError(f"length must be a positive integer or None, got {value!r}")
        key = _key(key)
        async with self._locked("save the length") as db, self._transaction(db):
            await db.execute(self._UPSERT_LENGTH, (*key, None if value is None else int(value)))

    # --- continuations --------------------------------------------------------------------------

    _SELECT_CONTINUATION = """
        SELECT state, units, model_id, last_char, tail, updated_at FROM continuations
        WHERE platform = ? AND chat_id = ?
    """

    async def get_continuation(self, key: ChatKey | tuple[str, str | int]) -> Continuation | None:
        """Where the chat's last text stopped; None if there is none or its row cannot be read."""
        key = _key(key)
        async with self._locked("read the continuation") as db:
            rows = await db.execute_fetchall(self._SELECT_CONTINUATION, key)
            if not rows:
                return None
            try:
                return _continuation_from_row(*rows[0])
            except _Unreadable as exc:
                await self._discard(db, "continuation", self._FORGET["continuations"], key, str(exc))
                return None

    _UPSERT_CONTINUATION = """
        INSERT INTO continuations (platform, chat_id, state, units, model_id, last_char, tail, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (platform, chat_id) DO UPDATE SET
            state = excluded.state, units = excluded.units, model_id = excluded.model_id,
            last_char = excluded.last_char, tail = excluded.tail, updated_at = excluded.updated_at
    """

    async def save_continuation(self, key: ChatKey | tuple[str, str | int], continuation: Continuation) -> None:
        key = _key(key)
        c = continuation
        blob = c.state.astype("<f4").tobytes()  # little-endian whatever the machine
        async with self._locked("save the continuation") as db, self._transaction(db):
            await db.execute(self._UPSERT_CONTINUATION,
                             (*key, blob, int(c.state.size), c.model_id, c.last_char, c.tail, c.updated_at))

    # --- the chat as a whole, and the file ------------------------------------------------------

    # Every table keyed by chat; a new table in storage.migrations belongs here too.
    _CHAT_TABLES = ("chat_settings", "continuations")
    _FORGET = {table: f"DELETE FROM {table} WHERE platform = ? AND chat_id = ?" for table in _CHAT_TABLES}
    # OR IGNORE: a row whose new key is taken stays where it is (and is then deleted with the old chat)
    _MOVE = {table: f"UPDATE OR IGNORE {table} SET platform = ?, chat_id = ? "
                    "WHERE platform = ? AND chat_id = ?" for table in _CHAT_TABLES}

    async def forget(self, key: ChatKey | tuple[str, str | int]) -> bool:
        """Delete every row of the chat, all tables in one transaction. True if there was any."""
        key = _key(key)
        deleted = 0
        async with self._locked("forget the chat") as db, self._transaction(db):
            for sql in self._FORGET.values():
                cursor = await db.execute(sql, key)
                deleted += cursor.rowcount
        return deleted > 0

    async def move_chat(self, old_key: ChatKey | tuple[str, str | int],
                        new_key: ChatKey | tuple[str, str | int]) -> bool:
        """Give the old chat's rows to the new one (a Telegram group that became a supergroup).

        All tables in one transaction. Where the new chat already has a row, it keeps its own and the
        old one is dropped. True if any row moved; a second call moves nothing.
        """
        old, new = _key(old_key), _key(new_key)
        if old == new:
            return False
        moved = 0
        async with self._locked("move the chat") as db, self._transaction(db):
            for table in self._CHAT_TABLES:
                cursor = await db.execute(self._MOVE[table], (*new, *old))
                moved += cursor.rowcount
                await db.execute(self._FORGET[table], old)
        return moved > 0

    async def backup(self, dest: str | os.PathLike) -> Path:
        """A consistent copy of the database through sqlite's online backup API, safe while running.

        Written beside `dest` first and renamed into place, so `dest` is never a half-written file.
        """
        dest = Path(dest)
        if dest.resolve() == self.path.resolve():
            raise ValueError("the backup cannot overwrite the database itself")
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        partial.unlink(missing_ok=True)
        async with self._locked("back up the database") as db:
            try:
                target = await aiosqlite.connect(partial)
                try:
                    await db.backup(target)
                finally:
                    await target.close()
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            os.replace(partial, dest)
        return dest

    async def integrity_check(self) -> str:
        """sqlite's PRAGMA integrity_check: "ok", or one problem a line."""
        async with self._locked("check the database") as db:
            rows = await db.execute_fetchall("PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)

    _PROBE = "INSERT INTO chat_settings (platform, chat_id) VALUES ('', '')"  # never a real chat

    async def is_writable(self) -> bool:
        """A health check: one tiny write in a transaction that is always rolled back.

        It finds a read-only or locked file; a full disk shows only when a write commits.
        """
        try:
            async with self._locked("write a probe row") as db, self._transaction(db):
                await db.execute(self._PROBE)
                raise _RollBack
        except _RollBack:
            return True
        except StorageError as exc:
            log.warning("%s is not writable: %s", self.path, exc)
            return False


def _continuation_from_row(state, units, model_id, last_char, tail, updated_at) -> Continuation:
    if not isinstance(state, bytes) or not isinstance(units, int) or units <= 0:
        raise _Unreadable(f"state is {type(state).__name__}, units {units!r:.20}")
    if len(state) != 4 * units:
        raise _Unreadable(f"state holds {len(state)} bytes, not 4 x {units} units")
    for name, value in (("model_id", model_id), ("last_char", last_char), ("tail", tail)):
        if not isinstance(value, str):
            raise _Unreadable(f"{name} is {type(value).__name__}, not text")
    try:
        return Continuation(np.frombuffer(state, dtype="<f4"), model_id, last_char, tail, updated_at)
    except ValueError as exc:
        raise _Unreadable(str(exc)) from None
