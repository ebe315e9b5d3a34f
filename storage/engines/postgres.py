"""The shared store: a PostgreSQL database, through an asyncpg pool.

Every process of an installation connects to the same database; each transaction takes a pooled
connection, and PostgreSQL's row locks and MVCC do what SQLite's single writer does (a read never
waits behind a write). Schema changes are serialized between processes by a transaction-level
advisory lock. The version and the chat-tag secret live in the one-row table `cervantes_schema`,
so that every process names a chat by the same tag. Passwords follow libpq's conventions (PGPASSWORD,
PGPASSFILE, ~/.pgpass, or in the URL); the URL is never shown with its password.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import AsyncIterator, Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

from storage import tags
from storage.engines._base import Engine
from storage.errors import StorageError
from storage.migrations import judge_schema, migrate

log = logging.getLogger(__name__)

SCHEMES = ("postgresql://", "postgres://")
MIGRATION_LOCK = int.from_bytes(b"cervante", "big")  # pg_advisory_xact_lock's key for schema changes
META = "cervantes_schema"  # one row: the schema's version and the chat-tag secret
_FIX = ("Point [storage] url (CERVANTES_STORAGE_URL) at an empty database (createdb) or at the "
        "bot's own")
_META_TABLE = f"""
    CREATE TABLE {META} (
        one        BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),  -- a single row
        version    INTEGER NOT NULL,
        tag_secret BYTEA NOT NULL   -- keys the chat tags in logs (storage.tags), shared by every process
    )
"""
_COLUMNS = """
    SELECT c.table_name::text, c.column_name::text FROM information_schema.columns c
    JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
    WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
    ORDER BY c.table_name, c.ordinal_position
"""


def is_url(target: str) -> bool:
    return str(target).startswith(SCHEMES)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's $1, $2, ... (our SQL has no `?` inside a literal)."""
    count = 0

    def number(_match) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", number, sql)


def _words(exc: BaseException, url: str) -> str:
    """What went wrong, in words an admin can act on."""
    import asyncpg

    parts = urlsplit(url)
    user, host = parts.username or "(the default user)", f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    database = parts.path.lstrip("/") or user
    if isinstance(exc, asyncpg.InvalidPasswordError):
        return (f"the server refused the password of user {user} (set it in PGPASSWORD, a PGPASSFILE, or "
                "the URL in the file CERVANTES_STORAGE_URL_FILE names)")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return f"the server refused user {user}"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f"there is no database {database} on {host}: create it (createdb {database})"
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return "the database is read-only"
    if isinstance(exc, asyncpg.DiskFullError):
        return "the disk is full"
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return f"user {user} lacks the permission: it should own the database"
    if isinstance(exc, (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError)):
        return "the server takes no new connections now (starting, stopping, or too many)"
    if isinstance(exc, (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError)):
        return "the database does not hold what this program expects (changed by hand?)"
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return "the database is locked by another process"
    if isinstance(exc, (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)):
        return "the write met another one at the same rows and was undone"
    if isinstance(exc, (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError)):
        return f"the database server at {host} cannot be reached"
    return f"the database server answered {type(exc).__name__}"

_TABLES = "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"


@asynccontextmanager
async def _connection(url: str, doing: str):
    """One connection outside any pool, its errors as StorageError: for the tools that look at or
    clear a database that the bot does not hold open (migrate-storage, loadtest)."""
    import asyncpg

    with PostgresEngine(url)._translated(doing):
        conn = await asyncpg.connect(url, timeout=10)
        try:
            yield conn
        finally:
            await conn.close()


async def table_names(url: str) -> list[str]:
    """The names of the tables in the database's current schema: none in an empty database."""
    async with _connection(url, "connect to the database") as conn:
        return [name for (name,) in await conn.fetch(_TABLES)]


async def drop_tables(url: str, names: Iterable[str]) -> None:
    """Drop these tables (those that exist), in one transaction."""
    async with _connection(url, "drop the tables") as conn, conn.transaction():
        for name in names:
            await conn.execute(f"DROP TABLE IF EXISTS {name}")


class _Tx:
    def __init__(self, conn):
        self.conn = conn

    async def execute(self, sql: str, parameters: Sequence = ()) -> int:
        status = await self.conn.execute(numbered(sql), *parameters)
        last = status.rsplit(" ", 1)[-1]  # "DELETE 3", "INSERT 0 1", "CREATE TABLE"
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            await self.conn.executemany(numbered(sql), rows)

    async def fetch(self, sql: str, parameters: Sequence = ()) -> list[tuple]:
        return [tuple(r) for r in await self.conn.fetch(numbered(sql), *parameters)]


class PostgresEngine(Engine):
    name = "PostgreSQL"
    same = "IS NOT DISTINCT FROM"

    def __init__(self, url: str, *, read_only: bool = False, busy_timeout_ms: int = 5000,
                 pool_size: int = 10, connect_timeout_s: float = 10.0):
        self.url = url
        self.where = redact(url)
        self.read_only = read_only
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._pool = None

    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """asyncpg's errors and the network's become StorageError naming the database (no password);
        misuse of the API (asyncpg.InterfaceError: a bug here) stays raw."""
        import asyncpg

        try:
            yield
        except (asyncpg.PostgresError, OSError, asyncio.TimeoutError) as exc:
            detail = str(exc).replace(urlsplit(self.url).password or "\0", "***")
            raise StorageError(f"{self.where}: could not {doing}: {_words(exc, self.url)} ({detail})") from exc

    async def start(self, target: int) -> bytes:
        import asyncpg

        settings = {"application_name": "cervantes",
                    # a write waits for another's row lock this long, as SQLite's busy timeout
                    "lock_timeout": str(self._busy_timeout_ms)}
        if self.read_only:
            settings["default_transaction_read_only"] = "on"
        with self._translated("connect to the database"):
            try:
                self._pool = await asyncpg.create_pool(
                    self.url, min_size=1, max_size=self._pool_size, timeout=self._connect_timeout_s,
                    server_settings=settings)
            except ValueError as exc:  # a URL asyncpg cannot read; it may hold a password: not shown
                raise StorageError(f"{self.where}: not a PostgreSQL URL asyncpg can use "
                                   "(postgresql://user@host:port/dbname)") from None
        try:
            with self._translated("open the database"):
                await self._prepare(target)
                if not self.read_only:
                    await migrate(self, target)
                (secret,) = (await self._pool.fetchrow(f"SELECT tag_secret FROM {META}"))
        except BaseException:
            await self.close()
            raise
        return bytes(secret)

    async def _prepare(self, target: int) -> None:
        """Refuse a database that is not ours before changing it; in a new one, the meta table and a
        secret. Under the migration lock: two processes starting at once do this one after the other."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            version, found = await self._schema(conn)
            judge_schema(version, found, self.where, _FIX)
            if self.read_only:
                if version < target:
                    raise StorageError(f"{self.where} is at schema version {version}, older than "
                                       f"{target}: open it once writable to upgrade it")
                return
            if await conn.fetchval("SELECT to_regclass($1) IS NULL", META):
                await conn.execute(_META_TABLE)
                await conn.execute(f"INSERT INTO {META} (version, tag_secret) VALUES (0, $1)",
                                   secrets.token_bytes(tags.SECRET_BYTES))

    async def _schema(self, conn) -> tuple[int, dict[str, list[str]]]:
        version = 0
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", META):
            version = await conn.fetchval(f"SELECT version FROM {META}") or 0
        found: dict[str, list[str]] = {}
        for table, column in await conn.fetch(_COLUMNS):
            if table != META:
                found.setdefault(table, []).append(column)
        return int(version), found

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=10)  # waits for the writes in flight
            except (asyncio.TimeoutError, OSError) as exc:
                log.warning("%s: connections closed by force: %r", self.where, exc)
                pool.terminate()

    def _need_pool(self):
        if self._pool is None:
            raise RuntimeError("the database is closed")
        return self._pool

    @asynccontextmanager
    async def writing(self, doing: str) -> AsyncIterator[_Tx]:
        pool = self._need_pool()
        with self._translated(doing):
            async with pool.acquire() as conn, conn.transaction():
                yield _Tx(conn)

    async def read(self, doing: str, sql: str, parameters: Sequence = ()) -> list[tuple]:
        pool = self._need_pool()
        with self._translated(doing):
            return [tuple(r) for r in await pool.fetch(numbered(sql), *parameters)]

    async def read_schema(self) -> tuple[int, dict[str, list[str]]]:
        async with self._need_pool().acquire() as conn, conn.transaction(isolation="repeatable_read"):
            return await self._schema(conn)

    @asynccontextmanager
    async def migrating(self) -> AsyncIterator[tuple[_Tx, int]]:
        async with self._need_pool().acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = 0")  # a long migration elsewhere is waited for
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            version = await conn.fetchval(f"SELECT version FROM {META}")
            yield _Tx(conn), int(version)

    def script(self, migration) -> str:
        return migration.postgresql

    async def set_version(self, tx: _Tx, version: int) -> None:
        await tx.execute(f"UPDATE {META} SET version = ?", (int(version),))

    async def backup(self, dest: Path) -> Path:
        raise StorageError(
            f"{self.where} is a PostgreSQL database: `cervantes backup` copies SQLite files only. Use "
            f"pg_dump, safe while the bot runs: pg_dump --format=custom --file={dest} '{self.where}'")

    async def integrity_check(self) -> str:
        """Whether the tables are those of the schema's version (PostgreSQL checks its own pages)."""
        version, found = await self.read_schema()
        try:
            judge_schema(version, found, self.where, _FIX)
        except StorageError as exc:
            return str(exc)
        return "ok"
