"""Per-chat settings, continuations and replies behind a small async repository, on either store.

The SQL and the promises are written once here; what differs between an SQLite file and a PostgreSQL
database (connections, locking, the schema's version, errors, backups) is the engine's business
(storage.engines). `Storage("cervantes.db")` opens the file, `Storage("postgresql://...")` the server.

Unreadable rows are logged and deleted (in the background, and only if still unchanged by then),
never raised. Trouble with the database (a file or disk, or a server that cannot be reached) is a
StorageError naming it, reads included; the reads stay usable when writes fail.

Each write records when its chat was last active (table `chats`). With `keep_days`, a background
task deletes the chats idle longer than that: once at start and every `prune_every_s` after,
PRUNE_BATCH chats a transaction. The chat tags in logs are keyed by a secret of this installation
(storage.tags): a file beside an SQLite database, a row in a PostgreSQL one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, NamedTuple

import numpy as np

from storage import tags
from storage.engines import Engine, SQLiteEngine, Tx, engine_for
from storage.errors import StorageError
from storage.migrations import MIGRATIONS

log = logging.getLogger(__name__)

TAIL_CHARS = 500  # characters of the text so far kept to re-prime when the model changed
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's lock before failing
PRUNE_BATCH = 500  # idle chats deleted a transaction: the write lock is held a few ms at a time
REPLIES_PER_CHAT = 50  # replies kept per chat for their buttons; older ones are deleted
GROUP_SETTINGS = (None, "admins", "everyone")  # Settings.group_settings: None is the configured default
PRUNE_EVERY_S = 3600.0  # how often the background task looks for idle chats
DAY_S = 86400.0
_NOT_STARTED = "Storage is not started (await Storage.open(path) or start())"
SQL_INT_MAX = 2**63 - 1  # SQLite's INTEGER, PostgreSQL's BIGINT


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
    """`async with await Storage.open(target) as storage:` or `Storage(target)`, `await start()`, `await close()`.

    `target`: the SQLite file's path, or a postgresql:// URL (storage.engines).
    """

    def __init__(self, target: str | os.PathLike, *, read_only: bool = False,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS, keep_days: int | None = None,
                 replies_per_chat: int = REPLIES_PER_CHAT, prune_every_s: float = PRUNE_EVERY_S,
                 clock=time.time):
        if keep_days is not None and not (isinstance(keep_days, numbers.Integral)
                                          and not isinstance(keep_days, bool) and 0 <= keep_days
                                          and keep_days * DAY_S <= SQL_INT_MAX):
            raise ValueError(f"keep_days must be a whole number >= 0 or None, got {keep_days!r}")
        self.engine: Engine = engine_for(target, read_only=read_only, busy_timeout_ms=busy_timeout_ms)
        self.where = self.engine.where  # names the database in messages: never a password
        self.read_only = read_only  # every write raises StorageError
        # chats idle longer than this many days are deleted; None (or 0): kept until /olvidar.
        # Only the bot passes it: a tool that opens the database (health, backup) never prunes.
        self.keep_days = int(keep_days) if keep_days else None
        if not (isinstance(replies_per_chat, numbers.Integral) and not isinstance(replies_per_chat, bool)
                and 1 <= replies_per_chat <= SQL_INT_MAX):  # an OFFSET in SQL
            raise ValueError(f"replies_per_chat must be a whole number from 1 to {SQL_INT_MAX}, "
                             f"got {replies_per_chat!r}")
        self.replies_per_chat = int(replies_per_chat)  # a chat's older replies are deleted
        self._prune_every_s = float(prune_every_s)
        self._clock = clock  # unix seconds, for `chats.last_active`; tests pass their own
        self._started = False
        self._secret: bytes | None = None
        self._pruner: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()  # deletions of unreadable rows

    @property
    def path(self) -> Path:
        """The SQLite file (AttributeError on PostgreSQL, which has no file)."""
        if not isinstance(self.engine, SQLiteEngine):
            raise AttributeError(f"{self.where} is not a file")
        return self.engine.path

    @property
    def _db(self):
        """The SQLite writer connection; tests reach it to make the disk look full."""
        return self.engine._db

    @classmethod
    async def open(cls, target: str | os.PathLike, **kwargs) -> "Storage":
        storage = cls(target, **kwargs)
        await storage.start()
        return storage

    async def __aenter__(self) -> "Storage":
        if not self._started:
            await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, bring the schema up to date, install the tag secret, start pruning."""
        if self._started:
            raise RuntimeError("Storage already started")
        self._secret = await self.engine.start(len(MIGRATIONS))
        self._started = True
        tags.install(self._secret)
        if self.keep_days and not self.read_only:
            self._pruner = asyncio.create_task(self._prune_forever(), name="prune idle chats")

    async def close(self) -> None:
        """Stop pruning, let the deletions and writes in flight finish, close the connections."""
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
            self._pruner = None
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._started:
            self._started = False
            await self.engine.close()

    def tag(self, key: ChatKey | tuple[str, str | int]) -> str:
        """The chat's tag in logs under this installation's secret (ChatKey.tag, once installed)."""
        if self._secret is None:
            raise RuntimeError(_NOT_STARTED)
        return tags.chat_tag(self._secret, *_key(key))

    # --- the plumbing every method goes through -------------------------------------------------

    @asynccontextmanager
    async def _writing(self, doing: str) -> AsyncIterator[Tx]:
        """One transaction (the engine's), committed at the end or rolled back on any error; errors
        with the database become StorageError."""
        if not self._started:
            raise RuntimeError(_NOT_STARTED)
        async with self.engine.writing(doing) as tx:
            yield tx

    async def _read(self, doing: str, sql: str, parameters: tuple = ()) -> list[tuple]:
        """One statement that never waits for writes; errors are StorageError."""
        if not self._started:
            raise RuntimeError(_NOT_STARTED)
        return await self.engine.read(doing, sql, parameters)

    _TOUCH = """
        INSERT INTO chats (platform, chat_id, last_active) VALUES (?, ?, ?)
        ON CONFLICT (platform, chat_id) DO UPDATE SET last_active = excluded.last_active
    """

    async def _touch(self, db: Tx, key: ChatKey) -> None:
        """The chat was active now (inside the transaction of its write)."""
        await db.execute(self._TOUCH, (*key, float(self._clock())))

    # Deletes a row only if it is still the one that was read: a good row saved since stays.
    # {same}: the engine's null-safe "=".
    _DISCARD = {
        "chat_settings": "DELETE FROM chat_settings WHERE platform = ? AND chat_id = ? "
                         "AND temperature {same} ? AND length {same} ? AND group_settings {same} ?",
        "continuations": "DELETE FROM continuations WHERE platform = ? AND chat_id = ? AND state {same} ? "
                         "AND units {same} ? AND model_id {same} ? AND last_char {same} ? AND tail {same} ? "
                         "AND updated_at {same} ? AND random_seed {same} ? AND position {same} ?",
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
            async with self._writing("delete an unreadable row") as db:
                await db.execute(self._DISCARD[table].format(same=self.engine.same), (*key, *row))
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
        async with self._writing("save the temperature") as db:
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
        async with self._writing("save the length") as db:
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
        async with self._writing("save who changes the settings") as db:
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
        async with self._writing("save the continuation") as db:
            await db.execute(self._UPSERT_CONTINUATION, (*key, *_continuation_columns(continuation)))
            await self._touch(db, key)

    # --- replies, for their buttons -------------------------------------------------------------

    _INSERT_REPLY = """
        INSERT INTO replies (platform, chat_id, state, units, model_id, last_char, tail, updated_at,
                             random_seed, position, seed, start_state, start_model_id, start_last_char,
                             start_tail)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        RETURNING id
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
        async with self._writing("save the reply") as db:
            await db.execute(self._UPSERT_CONTINUATION, (*key, *_continuation_columns(end)))
            ((reply_id,),) = await db.fetch(self._INSERT_REPLY,
                                            (*key, *_continuation_columns(end), seed, *start_columns))
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
    # A row whose new key is taken stays where it is (and is then deleted with the old chat); replies
    # are keyed by their id, and all of them move.
    _MOVE = {table: f"UPDATE {table} SET platform = ?, chat_id = ? WHERE platform = ? AND chat_id = ?"
                    + ("" if table == "replies" else
                       f" AND NOT EXISTS (SELECT 1 FROM {table} WHERE platform = ? AND chat_id = ?)")
             for table in _CHAT_TABLES}

    async def forget(self, key: ChatKey | tuple[str, str | int]) -> bool:
        """Delete every row of the chat, all tables in one transaction. True if it had settings or a text."""
        key = _key(key)
        deleted = 0
        async with self._writing("forget the chat") as db:
            for table, sql in self._FORGET.items():
                changed = await db.execute(sql, key)
                deleted += changed if table in self._DATA_TABLES else 0
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
        async with self._writing("move the chat") as db:
            for table in self._CHAT_TABLES:
                changed = await db.execute(self._MOVE[table], (*new, *old) + (() if table == "replies" else new))
                moved += changed if table in self._DATA_TABLES else 0
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
            async with self._writing("delete idle chats") as db:
                keys = await db.fetch(self._IDLE, (cutoff, batch))
                for sql in self._FORGET.values():
                    await db.executemany(sql, keys)
            pruned += len(keys)
            await asyncio.sleep(0)  # SQLite's writer lock is fair: a write that waited goes first

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
        """A consistent copy, safe while running (SQLite's online backup; a folder is refused and any
        failure leaves nothing behind). On PostgreSQL a StorageError that says to use pg_dump."""
        if not self._started:
            raise RuntimeError(_NOT_STARTED)
        return await self.engine.backup(Path(dest))

    async def integrity_check(self) -> str:
        """"ok", or one problem a line."""
        if not self._started:
            raise RuntimeError(_NOT_STARTED)
        return await self.engine.integrity_check()

    _PROBE = "INSERT INTO chat_settings (platform, chat_id) VALUES ('', '')"  # never a real chat

    async def is_writable(self) -> bool:
        """A health check: one tiny write in a transaction that is always rolled back.

        It finds a read-only or locked file; a full disk shows only when a write commits.
        """
        try:
            async with self._writing("write a probe row") as db:
                await db.execute(self._PROBE)
                raise _RollBack
        except _RollBack:
            return True
        except StorageError as exc:
            log.warning("%s is not writable: %s", self.where, exc)
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
