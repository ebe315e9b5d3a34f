"""The schema as a numbered list of migrations, applied in order and recorded in `PRAGMA user_version`.

Version N means the first N scripts have been applied. Never edit a script once it has shipped:
append a new one. Each runs in its own transaction together with the version bump, so a failed
migration leaves the database at the version before it.
"""

from __future__ import annotations

import sqlite3

import aiosqlite

# Every table is keyed by (platform, chat_id); chat ids are TEXT (Discord snowflakes, Telegram's
# negative group ids), and `storage.repository._CHAT_TABLES` must list every table here (forget
# and move_chat use it).
MIGRATIONS: tuple[str, ...] = (
    # 1: per-chat settings; NULL means "use the configured default".
    """
    CREATE TABLE chat_settings (
        platform    TEXT NOT NULL,
        chat_id     TEXT NOT NULL,
        temperature REAL,
        length      INTEGER,
        PRIMARY KEY (platform, chat_id)
    );
    """,
    # 2: where `/continuar` goes on from: the GRU state after the text so far.
    """
    CREATE TABLE continuations (
        platform   TEXT NOT NULL,
        chat_id    TEXT NOT NULL,
        state      BLOB NOT NULL,     -- raw little-endian float32 [units]
        units      INTEGER NOT NULL,
        model_id   TEXT NOT NULL,     -- the model that made `state`; another one re-primes from `tail`
        last_char  TEXT NOT NULL,     -- fed with `state` at the next step
        tail       TEXT NOT NULL,     -- the last characters of the text so far
        updated_at REAL NOT NULL,     -- unix seconds
        PRIMARY KEY (platform, chat_id)
    );
    """,
)

_GET_VERSION = "PRAGMA user_version"


def statements(script: str) -> list[str]:
    """Split a script into complete statements (sqlite3.complete_statement knows triggers' inner `;`)."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    leftover = "".join(ln for ln in pending.splitlines() if not ln.strip().startswith("--")).strip()
    if leftover:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {leftover[:60]!r}")
    return out


async def user_version(db: aiosqlite.Connection) -> int:
    (row,) = await db.execute_fetchall(_GET_VERSION)
    return int(row[0])


async def migrate(db: aiosqlite.Connection, target: int | None = None) -> int:
    """Apply the migrations after the database's version up to `target` (all by default).

    `db` must be in autocommit mode (isolation_level=None): each migration is one explicit
    BEGIN IMMEDIATE ... COMMIT. Returns the version reached. A database newer than `target` is left
    alone; the caller decides whether that is an error.
    """
    target = len(MIGRATIONS) if target is None else target
    if not 0 <= target <= len(MIGRATIONS):
        raise ValueError(f"no migration {target}: there are {len(MIGRATIONS)}")
    if db.in_transaction:
        raise RuntimeError("migrate() needs a connection with no open transaction")
    version = await user_version(db)
    while version < target:
        number = version + 1
        await db.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated meanwhile.
            version = await user_version(db)
            if version < number:
                for statement in statements(MIGRATIONS[number - 1]):
                    await db.execute(statement)
                # PRAGMA takes no parameters; `number` is our own int, never outside input.
                await db.execute(f"PRAGMA user_version = {int(number)}")
                version = number
            await db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise
    return version
