"""What differs between the two stores, as one small abstract class; everything else (the SQL of each
method, the checks, retention) is written once above it, in storage.repository and storage.migrations.

The same SQL runs on both: `?` placeholders (PostgreSQL's engine numbers them), `ON CONFLICT ... DO
UPDATE`, `RETURNING id`. What differs is named here:
- connection setup and the schema's version (SQLite: `PRAGMA user_version`, a key file beside it;
  PostgreSQL: the one-row table `cervantes_schema`, which holds the chat-tag secret too);
- locking (SQLite: one writer connection behind an asyncio.Lock and BEGIN IMMEDIATE; PostgreSQL: a
  pool, row locks, and an advisory lock while the schema changes);
- how errors are put into words (`translated`);
- `same`, the null-safe equality operator;
- backups (SQLite's online backup API; PostgreSQL: pg_dump, which this program does not run).
"""

from __future__ import annotations

import abc
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Iterable, Protocol, Sequence


class Tx(Protocol):
    """One transaction on one connection: what the repository's writes use."""

    async def execute(self, sql: str, parameters: Sequence = ()) -> int:
        """Run one statement; the number of rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Sequence]) -> None: ...

    async def fetch(self, sql: str, parameters: Sequence = ()) -> list[tuple]: ...


class Engine(abc.ABC):
    name: str  # "SQLite" or "PostgreSQL", for messages
    where: str  # names the database in messages: the file, or the URL without its password
    same: str  # null-safe "=": SQLite's `IS`, PostgreSQL's `IS NOT DISTINCT FROM`
    read_only: bool

    @abc.abstractmethod
    async def start(self, target: int) -> bytes:
        """Connect, refuse a database that is not ours (before changing anything), apply the
        migrations up to `target`; the chat-tag secret of this installation."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Let the writes in flight finish, then close every connection."""

    @abc.abstractmethod
    def writing(self, doing: str) -> AbstractAsyncContextManager[Tx]:
        """One transaction, committed at the end or rolled back on any error; errors become
        StorageError saying that it could not `doing`."""

    @abc.abstractmethod
    async def read(self, doing: str, sql: str, parameters: Sequence = ()) -> list[tuple]:
        """One statement that never waits behind a write (SQLite's reader connection in WAL mode;
        PostgreSQL's MVCC); errors become StorageError."""

    @abc.abstractmethod
    async def read_schema(self) -> tuple[int, dict[str, list[str]]]:
        """The schema's version and each of its tables' columns, in one snapshot."""

    @abc.abstractmethod
    def migrating(self) -> AbstractAsyncContextManager[tuple[Tx, int]]:
        """A transaction under the lock that serializes schema changes between processes, with the
        version as read under it."""

    @abc.abstractmethod
    def script(self, migration) -> str:
        """This engine's SQL of one storage.migrations.Migration."""

    @abc.abstractmethod
    async def set_version(self, tx: Tx, version: int) -> None: ...

    @abc.abstractmethod
    async def backup(self, dest: Path) -> Path:
        """A consistent copy in `dest`, or StorageError that says what to use instead."""

    @abc.abstractmethod
    async def integrity_check(self) -> str:
        """ "ok", or one problem a line."""
