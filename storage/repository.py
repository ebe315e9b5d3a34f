"""Per-chat settings and continuations in one SQLite file, behind a small async repository.

Two aiosqlite connections in autocommit mode. Writes go through one and hold an asyncio.Lock while
they run, so transactions (explicit BEGIN IMMEDIATE ... COMMIT) never interleave on it. Reads go
through the other, without the lock: a write that waits for another process's lock (up to the busy
timeout) never holds them up, since in WAL mode a reader sees the last commit while a writer works.

Unreadable rows are logged and deleted (in the background, and only if still unchanged by then),
never raised. Trouble with the file or the disk is a StorageError naming the file, reads included
(storage.errors); the reads stay usable when writes fail.

Each write records when its chat was last active (table `chats`). With `keep_days`, a background
task deletes the chats idle longer than that: once at start and every `prune_every_s` after,
PRUNE_BATCH chats a transaction. The files are private (storage.files); the chat tags in logs are
keyed by a secret of this installation (storage.tags).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import numbers
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, NamedTuple

import aiosqlite
import numpy as np

from storage import files, tags
from storage.errors import StorageError, translated
from storage.migrations import MIGRATIONS, check_schema, migrate, user_version

log = logging.getLogger(__name__)

TAIL_CHARS = 500  # characters of the text so far kept to re-prime when the model changed
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's lock before failing
PRUNE_BATCH = 500  # idle chats deleted a transaction: the write lock is held a few ms at a time
REPLIES_PER_CHAT = 50  # replies kept per chat for their buttons; older ones are deleted
GROUP_SETTINGS = (None, "admins", "everyone")  # Settings.group_settings: None is the configured default
PRUNE_EVERY_S = 3600.0  # how often the background task looks for idle chats
DAY_S = 86400.0
_NOT_STARTED = "Storage is not started (await Storage.open(path) or start())"


class ChatKey(NamedTuple):
    platform: str  # "telegram", "discord", "console"
    chat_id: str  # as text: Discord snowflakes, Telegram's negative group ids

    @property
    def tag(self) -> str:
        """Names the chat in logs without its id: a keyed hash, the same in every log line (storage.tags)."""
        return tags.tag(self.platform, self.chat_id)


@dataclass(frozen=True)
class Settings:
    temperature: float | None = None  # None: the configured default
    length: int | None = None  # characters to generate; None: the configured default
    group_settings: str | None = None  # who changes them in a group: "admins" or "everyone"; None: the configured default


@dataclass(frozen=True, eq=False)  # eq=False: a numpy array has no single truth value
class Continuation:
    state: np.ndarray  # [units] float32: the GRU state after every character but the last
    model_id: str  # identity of the model that made `state`
    last_char: str  # fed with `state` to go on exactly where the text stopped ("" if unknown)
    tail: str  # the last TAIL_CHARS characters of the text so far, to re-prime another model
    updated_at: float = field(default_factory=time.time)  # unix seconds
    random_seed: int | None = None  # the text's random stream (None: unknown, draw a new one)
    position: int = 0  # characters of that stream used so far

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


@dataclass(frozen=True, eq=False)
class StoredReply:
    """One reply the bot wrote, as its buttons need it: where it stopped, and where it began."""
    id: int  # names the reply in its buttons; never reused
    end: Continuation  # Continuar goes on from here
    seed: str | None = None  # a reply to /cervantes: its seed (Otra writes from it again)
    start: Continuation | None = None  # a continuation: where it began (Otra writes from there again)


class _Unreadable(Exception):
    """A stored row that does not make sense; it is logged and deleted."""


class _RollBack(Exception):
    """Raised inside a transaction to undo it on purpose."""


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
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS, keep_days: int | None = None,
                 replies_per_chat: int = REPLIES_PER_CHAT, prune_every_s: float = PRUNE_EVERY_S,
                 clock=time.time):
        if keep_days is not None and not (isinstance(keep_days, numbers.Integral)
                                          and not isinstance(keep_days, bool) and keep_days >= 0):
            raise ValueError(f"keep_days must be a whole number >= 0 or None, got {keep_days!r}")
        self.path = Path(path)
        self.read_only = read_only  # opened with ?mode=ro: every write raises StorageError
        # chats idle longer than this many days are deleted; None (or 0): kept until /olvidar.
        # Only the bot passes it: a tool that opens the file (health, backup) never prunes.
        self.keep_days = int(keep_days) if keep_days else None
        if not (isinstance(replies_per_chat, numbers.Integral) and not isinstance(replies_per_chat, bool)
                and replies_per_chat >= 1):
            raise ValueError(f"replies_per_chat must be a whole number >= 1, got {replies_per_chat!r}")
        self.replies_per_chat = int(replies_per_chat)  # a chat's older replies are deleted
        self._prune_every_s = float(prune_every_s)
        self._clock = clock  # unix seconds, for `chats.last_active`; tests pass their own
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._db: aiosqlite.Connection | None = None  # the writer
        self._reader: aiosqlite.Connection | None = None
        self._secret: bytes | None = None
        self._lock = asyncio.Lock()  # the writer's
        self._pruner: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()  # deletions of unreadable rows

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
        """Open both connections, bring the schema up to date, install the tag secret, start pruning."""
        if self._db is not None:
            raise RuntimeError("Storage already started")
        if self.read_only and not self.path.is_file():
            raise StorageError(f"{self.path}: could not open the database: the file does not exist")
        if not self.read_only:
            files.create_private(self.path)  # a new one 0600 before sqlite: -wal and -shm take its mode
        async with contextlib.AsyncExitStack() as opened:
            writer = await self._connect()
            opened.push_async_callback(writer.close)
            with translated("open the database", self.path):
                await self._configure(writer)
            if not self.read_only:  # ours (check_schema): made private if an older version left it open
                for path in (self.path, *files.side_files(self.path)):
                    files.tighten(path)
            reader = await self._connect()
            opened.push_async_callback(reader.close)
            with translated("open the database", self.path):
                await reader.execute("PRAGMA query_only = ON")
            secret = tags.load_secret(self.path, create=not self.read_only)
            opened.pop_all()
        self._db, self._reader, self._secret = writer, reader, secret
        tags.install(secret)
        if self.keep_days and not self.read_only:
            self._pruner = asyncio.create_task(self._prune_forever(), name=f"prune {self.path.name}")

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

    async def _configure(self, db: aiosqlite.Connection) -> None:
        await db.execute("PRAGMA foreign_keys = ON")
        version = await user_version(db)
        if version > len(MIGRATIONS):
            raise StorageError(f"{self.path} is at schema version {version}, newer than this "
                               f"program's {len(MIGRATIONS)}: run a newer cervantes")
        await check_schema(db, self.path)  # another program's file is refused before any change
        if self.read_only:
            if version < len(MIGRATIONS):
                raise StorageError(f"{self.path} is at schema version {version}, older than "
                                   f"{len(MIGRATIONS)}: open it once writable to upgrade it")
            return
        (mode,) = (await db.execute_fetchall("PRAGMA journal_mode = WAL"))[0]
        if mode != "wal":
            log.warning("%s: journal_mode is %s, not wal", self.path, mode)
        await db.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; fsync at checkpoints
        # deleted rows (/olvidar, retention) are overwritten with zeros, not left in free space
        await db.execute("PRAGMA secure_delete = ON")
        await migrate(db)

    async def close(self) -> None:
        """Stop pruning, let the deletions and writes in flight finish, close both connections."""
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
            self._pruner = None
        await asyncio.gather(*self._background, return_exceptions=True)
        async with self._lock:  # lets a write in flight finish first
            if self._db is not None:
                (db, self._db), (reader, self._reader) = (self._db, None), (self._reader, None)
                await reader.close()
                await db.close()

    def tag(self, key: ChatKey | tuple[str, str | int]) -> str:
        """The chat's tag in logs under this installation's secret (ChatKey.tag, once installed)."""
        if self._secret is None:
            raise RuntimeError(_NOT_STARTED)
        return tags.chat_tag(self._secret, *_key(key))

    # --- the plumbing every method goes through -------------------------------------------------

    @asynccontextmanager
    async def _writing(self, doing: str) -> AsyncIterator[aiosqlite.Connection]:
        """The writer connection, alone; sqlite errors become StorageError."""
        async with self._lock:
            if self._db is None:
                raise RuntimeError(_NOT_STARTED)
            with translated(doing, self.path):
                yield self._db

    async def _read(self, doing: str, sql: str, parameters: tuple = ()) -> list[tuple]:
        """One statement on the reader connection: no lock, no wait for writes; errors are StorageError."""
        if self._reader is None:
            raise RuntimeError(_NOT_STARTED)
        with translated(doing, self.path):
            return list(await self._reader.execute_fetchall(sql, parameters))

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
                except Exception as exc:  # keep the first error; this one only adds to it
                    log.warning("rollback failed: %s", exc)
            raise

    _TOUCH = """
        INSERT INTO chats (platform, chat_id, last_active) VALUES (?, ?, ?)
        ON CONFLICT (platform, chat_id) DO UPDATE SET last_active = excluded.last_active
    """

    async def _touch(self, db: aiosqlite.Connection, key: ChatKey) -> None:
        """The chat was active now (inside the transaction of its write)."""
        await db.execute(self._TOUCH, (*key, float(self._clock())))

    # Deletes a row only if it is still the one that was read: a good row saved since stays.
    _DISCARD = {
        "chat_settings": "DELETE FROM chat_settings WHERE platform = ? AND chat_id = ? "
                         "AND temperature IS ? AND length IS ? AND group_settings IS ?",
        "continuations": "DELETE FROM continuations WHERE platform = ? AND chat_id = ? AND state IS ? "
                         "AND units IS ? AND model_id IS ? AND last_char IS ? AND tail IS ? "
                         "AND updated_at IS ? AND random_seed IS ? AND position IS ?",
        "replies": "DELETE FROM replies WHERE platform = ? AND chat_id = ? AND id = ?",
    }

    def _discard(self, table: str, key: ChatKey, row: tuple, why: str) -> None:
        """Log an unreadable row and delete it in the background: the read that found it does not wait."""
        log.warning("unreadable %s row of %s chat #%s, deleting it: %s", table, key.platform, key.tag, why)
        task = asyncio.create_task(self._delete_unchanged(table, key, row))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _delete_unchanged(self, table: str, key: ChatKey, row: tuple) -> None:
        try:  # never raises: a read-only file keeps the row, and the next read finds it again
            async with self._writing("delete an unreadable row") as db, self._transaction(db):
                await db.execute(self._DISCARD[table], (*key, *row))
        except Exception as exc:
            log.warning("could not delete the unreadable row of %s chat #%s: %s", key.platform, key.tag, exc)

    # --- settings -------------------------------------------------------------------------------

    _SELECT_SETTINGS = ("SELECT temperature, length, group_settings FROM chat_settings "
                        "WHERE platform = ? AND chat_id = ?")

    async def get_settings(self, key: ChatKey | tuple[str, str | int]) -> Settings:
        """The chat's settings; default Settings() for a chat never seen or a row that cannot be read.

        StorageError when the database cannot be read at all: the caller goes on with defaults.
        """
        key = _key(key)
        rows = await self._read("read the settings", self._SELECT_SETTINGS, key)
        if not rows:
            return Settings()
        temperature, length, group_settings = rows[0]
        if temperature is not None and not (_is_finite_number(temperature) and temperature >= 0):
            why = f"temperature {temperature!r:.20} is not a finite number >= 0"
        elif length is not None and not (isinstance(length, int) and length > 0):
            why = f"length {length!r:.20} is not a positive integer"
        elif group_settings not in GROUP_SETTINGS:
            why = f"group_settings {group_settings!r:.20} is not one of {GROUP_SETTINGS}"
        else:
            return Settings(None if temperature is None else float(temperature), length, group_settings)
        self._discard("chat_settings", key, rows[0], why)
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
        async with self._writing("save the temperature") as db, self._transaction(db):
            await db.execute(self._UPSERT_TEMPERATURE, (*key, None if value is None else float(value)))
            await self._touch(db, key)

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
        async with self._writing("save the length") as db, self._transaction(db):
            await db.execute(self._UPSERT_LENGTH, (*key, None if value is None else int(value)))
            await self._touch(db, key)

    _UPSERT_GROUP_SETTINGS = """
        INSERT INTO chat_settings (platform, chat_id, group_settings) VALUES (?, ?, ?)
        ON CONFLICT (platform, chat_id) DO UPDATE SET group_settings = excluded.group_settings
    """

    async def set_group_settings(self, key: ChatKey | tuple[str, str | int], value: str | None) -> None:
        """Who may change the chat's settings: "admins" or "everyone"; None goes back to the configured default."""
        if value not in GROUP_SETTINGS:
            raise ValueError(f"group_settings must be one of {GROUP_SETTINGS}, got {value!r}")
        key = _key(key)
        async with self._writing("save who changes the settings") as db, self._transaction(db):
            await db.execute(self._UPSERT_GROUP_SETTINGS, (*key, value))
            await self._touch(db, key)

    # --- continuations --------------------------------------------------------------------------

    _SELECT_CONTINUATION = """
        SELECT state, units, model_id, last_char, tail, updated_at, random_seed, position FROM continuations
        WHERE platform = ? AND chat_id = ?
    """

    async def get_continuation(self, key: ChatKey | tuple[str, str | int]) -> Continuation | None:
        """Where the chat's last text stopped; None if there is none or its row cannot be read.

        StorageError when the database cannot be read at all: the caller goes on as if there were none.
        """
        key = _key(key)
        rows = await self._read("read the continuation", self._SELECT_CONTINUATION, key)
        if not rows:
            return None
        try:
            return _continuation_from_row(*rows[0])
        except _Unreadable as exc:
            self._discard("continuations", key, rows[0], str(exc))
            return None

    _UPSERT_CONTINUATION = """
        INSERT INTO continuations (platform, chat_id, state, units, model_id, last_char, tail, updated_at,
                                   random_seed, position)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (platform, chat_id) DO UPDATE SET
            state = excluded.state, units = excluded.units, model_id = excluded.model_id,
            last_char = excluded.last_char, tail = excluded.tail, updated_at = excluded.updated_at,
            random_seed = excluded.random_seed, position = excluded.position
    """

    async def save_continuation(self, key: ChatKey | tuple[str, str | int], continuation: Continuation) -> None:
        key = _key(key)
        async with self._writing("save the continuation") as db, self._transaction(db):
            await db.execute(self._UPSERT_CONTINUATION, (*key, *_continuation_columns(continuation)))
            await self._touch(db, key)

    # --- replies, for their buttons -------------------------------------------------------------

    _INSERT_REPLY = """
        INSERT INTO replies (platform, chat_id, state, units, model_id, last_char, tail, updated_at,
                             random_seed, position, seed, start_state, start_model_id, start_last_char,
                             start_tail)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    """
    # the chat's replies but its newest `replies_per_chat`
    _PRUNE_REPLIES = """
        DELETE FROM replies WHERE platform = ? AND chat_id = ? AND id <= (
            SELECT id FROM replies WHERE platform = ? AND chat_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)
    """

    async def save_reply(self, key: ChatKey | tuple[str, str | int], end: Continuation, *,
                         seed: str | None = None, start: Continuation | None = None) -> int:
        """Store a finished reply; its id, for its buttons. In the same transaction it becomes the
        chat's continuation (what /continuar goes on from), and the chat's replies beyond the newest
        `replies_per_chat` are deleted."""
        key = _key(key)
        if (seed is None) == (start is None):
            raise ValueError("a reply began either from a seed or from a start, not both nor neither")
        start_columns = ((_blob(start.state), start.model_id, start.last_char, start.tail) if start
                         else (None, None, None, None))
        async with self._writing("save the reply") as db, self._transaction(db):
            await db.execute(self._UPSERT_CONTINUATION, (*key, *_continuation_columns(end)))
            cursor = await db.execute(self._INSERT_REPLY,
                                      (*key, *_continuation_columns(end), seed, *start_columns))
            reply_id = cursor.lastrowid
            await db.execute(self._PRUNE_REPLIES, (*key, *key, self.replies_per_chat))
            await self._touch(db, key)
        return int(reply_id)

    _SELECT_REPLY = """
        SELECT state, units, model_id, last_char, tail, updated_at, random_seed, position, seed,
               start_state, start_model_id, start_last_char, start_tail
        FROM replies WHERE platform = ? AND chat_id = ? AND id = ?
    """

    async def get_reply(self, key: ChatKey | tuple[str, str | int], reply_id: int) -> StoredReply | None:
        """The chat's reply `reply_id`; None once it was deleted (older than the chat's newest
        `replies_per_chat`, /olvidar, retention), if it is another chat's, or if its row cannot be
        read. StorageError when the database cannot be read at all."""
        key = _key(key)
        if not isinstance(reply_id, numbers.Integral) or isinstance(reply_id, bool) or not 0 < reply_id < 2**63:
            return None
        rows = await self._read("read a reply", self._SELECT_REPLY, (*key, int(reply_id)))
        if not rows:
            return None
        row = rows[0]
        try:
            end = _continuation_from_row(*row[:8])
            seed, start_state, start_model, start_last, start_tail = row[8:]
            if seed is not None:
                if not isinstance(seed, str):
                    raise _Unreadable(f"seed is {type(seed).__name__}, not text")
                return StoredReply(int(reply_id), end, seed=seed)
            if not isinstance(start_state, bytes):
                raise _Unreadable("neither a seed nor a start")
            start = _continuation_from_row(start_state, len(start_state) // 4, start_model, start_last,
                                           start_tail, end.updated_at)
            return StoredReply(int(reply_id), end, start=start)
        except _Unreadable as exc:
            self._discard("replies", key, (int(reply_id),), str(exc))
            return None

    # --- the chat as a whole, retention, and the file -------------------------------------------

    # The tables of what a chat said and chose, and every table keyed by chat (`chats` holds when it
    # was last active); a new table in storage.migrations belongs here too.
    _DATA_TABLES = ("chat_settings", "continuations", "replies")
    _CHAT_TABLES = (*_DATA_TABLES, "chats")
    _FORGET = {table: f"DELETE FROM {table} WHERE platform = ? AND chat_id = ?" for table in _CHAT_TABLES}
    # OR IGNORE: a row whose new key is taken stays where it is (and is then deleted with the old chat)
    _MOVE = {table: f"UPDATE OR IGNORE {table} SET platform = ?, chat_id = ? "
                    "WHERE platform = ? AND chat_id = ?" for table in _CHAT_TABLES}

    async def forget(self, key: ChatKey | tuple[str, str | int]) -> bool:
        """Delete every row of the chat, all tables in one transaction. True if it had settings or a text."""
        key = _key(key)
        deleted = 0
        async with self._writing("forget the chat") as db, self._transaction(db):
            for table, sql in self._FORGET.items():
                cursor = await db.execute(sql, key)
                deleted += cursor.rowcount if table in self._DATA_TABLES else 0
        return deleted > 0

    async def move_chat(self, old_key: ChatKey | tuple[str, str | int],
                        new_key: ChatKey | tuple[str, str | int]) -> bool:
        """Give the old chat's rows to the new one (a Telegram group that became a supergroup).

        All tables in one transaction. Where the new chat already has a row, it keeps its own and the
        old one is dropped. True if any settings or text moved; a second call moves nothing.
        """
        old, new = _key(old_key), _key(new_key)
        if old == new:
            return False
        moved = 0
        async with self._writing("move the chat") as db, self._transaction(db):
            for table in self._CHAT_TABLES:
                cursor = await db.execute(self._MOVE[table], (*new, *old))
                moved += cursor.rowcount if table in self._DATA_TABLES else 0
                await db.execute(self._FORGET[table], old)
            await self._touch(db, new)
        return moved > 0

    _IDLE = "SELECT platform, chat_id FROM chats WHERE last_active < ? ORDER BY last_active LIMIT ?"

    async def prune(self, batch: int = PRUNE_BATCH) -> int:
        """Delete every chat idle more than keep_days, `batch` chats a transaction; how many went.

        Nothing without keep_days. Between transactions the write lock goes to the writes waiting
        for it; a prune that finds nothing idle (a look on the reader) never takes it.
        """
        if self.keep_days is None:
            return 0
        pruned = 0
        while True:
            cutoff = self._clock() - self.keep_days * DAY_S
            if not await self._read("look for idle chats", self._IDLE, (cutoff, 1)):
                return pruned
            async with self._writing("delete idle chats") as db, self._transaction(db):
                keys = list(await db.execute_fetchall(self._IDLE, (cutoff, batch)))
                for sql in self._FORGET.values():
                    await db.executemany(sql, keys)
            pruned += len(keys)
            await asyncio.sleep(0)  # asyncio.Lock is fair: a write that waited goes first

    async def _prune_forever(self) -> None:
        while True:
            try:
                if pruned := await self.prune():
                    log.info("deleted %d chats idle more than %d days", pruned, self.keep_days)
            except StorageError as exc:
                log.warning("could not delete idle chats: %s", exc)
            except Exception:
                log.exception("could not delete idle chats")
            await asyncio.sleep(self._prune_every_s)

    async def backup(self, dest: str | os.PathLike) -> Path:
        """A consistent copy of the database through sqlite's online backup API, safe while running.

        Written beside `dest` first (mode 0600, as the database) and renamed into place, so `dest` is
        never a half-written file nor, for a moment, one that others can read.
        """
        dest = Path(dest)
        if dest.resolve() == self.path.resolve():
            raise ValueError("the backup cannot overwrite the database itself")
        partial = dest.with_name(dest.name + ".partial")
        partial.unlink(missing_ok=True)
        async with self._writing("back up the database") as db:
            try:
                files.create_private(partial, exclusive=True)  # sqlite keeps the mode of a file it finds
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
        async with self._writing("check the database") as db:
            rows = await db.execute_fetchall("PRAGMA integrity_check")
        return "\n".join(str(row[0]) for row in rows)

    _PROBE = "INSERT INTO chat_settings (platform, chat_id) VALUES ('', '')"  # never a real chat

    async def is_writable(self) -> bool:
        """A health check: one tiny write in a transaction that is always rolled back.

        It finds a read-only or locked file; a full disk shows only when a write commits.
        """
        try:
            async with self._writing("write a probe row") as db, self._transaction(db):
                await db.execute(self._PROBE)
                raise _RollBack
        except _RollBack:
            return True
        except StorageError as exc:
            log.warning("%s is not writable: %s", self.path, exc)
            return False


def _blob(state: np.ndarray) -> bytes:
    return state.astype("<f4").tobytes()  # little-endian whatever the machine


def _continuation_columns(c: Continuation) -> tuple:
    """state, units, model_id, last_char, tail, updated_at, random_seed, position."""
    return (_blob(c.state), int(c.state.size), c.model_id, c.last_char, c.tail, c.updated_at,
            c.random_seed, int(c.position))


def _continuation_from_row(state, units, model_id, last_char, tail, updated_at, random_seed=None,
                           position=0) -> Continuation:
    if not isinstance(state, bytes) or not isinstance(units, int) or units <= 0:
        raise _Unreadable(f"state is {type(state).__name__}, units {units!r:.20}")
    if len(state) != 4 * units:
        raise _Unreadable(f"state holds {len(state)} bytes, not 4 x {units} units")
    for name, value in (("model_id", model_id), ("last_char", last_char), ("tail", tail)):
        if not isinstance(value, str):
            raise _Unreadable(f"{name} is {type(value).__name__}, not text")
    if not isinstance(random_seed, (int, type(None))) or not isinstance(position, int) or position < 0:
        random_seed, position = None, 0  # the text goes on, with a new random stream
    try:
        return Continuation(np.frombuffer(state, dtype="<f4"), model_id, last_char, tail, updated_at,
                            random_seed, position)
    except ValueError as exc:
        raise _Unreadable(str(exc)) from None
