"""The schema as a numbered list of migrations, applied in order and recorded in `PRAGMA user_version`.

Version N means the first N scripts have been applied. Never edit a script once it has shipped:
append a new one. Each runs in its own transaction together with the version bump, so a failed
migration leaves the database at the version before it.
"""

from __future__ import annotations

import functools
import sqlite3
from contextlib import closing
from pathlib import Path

import aiosqlite

from storage.errors import StorageError

# Every table is keyed by (platform, chat_id); chat ids are TEXT (Discord snowflakes, Telegram's
# negative group ids), and `storage.repository._CHAT_TABLES` must list every table here (forget,
# move_chat and the pruning of idle chats use it).
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
    # 3: when each chat last wrote anything, for `[storage] keep_days`. Chats stored before this
    # migration count as active at the upgrade: their last activity was not recorded.
    """
    CREATE TABLE chats (
        platform    TEXT NOT NULL,
        chat_id     TEXT NOT NULL,
        last_active REAL NOT NULL,    -- unix seconds of the chat's last write
        PRIMARY KEY (platform, chat_id)
    );
    CREATE INDEX chats_by_last_active ON chats (last_active);
    INSERT INTO chats (platform, chat_id, last_active)
        SELECT platform, chat_id, (julianday('now') - 2440587.5) * 86400.0
        FROM (SELECT platform, chat_id FROM chat_settings
              UNION SELECT platform, chat_id FROM continuations);
    """,
    # 4: the random stream of the text so far, so that /continuar at a temperature above 0 goes on
    # with the noise that one long text would have had. NULL: not known (a new seed is drawn).
    """
    ALTER TABLE continuations ADD COLUMN random_seed INTEGER;
    ALTER TABLE continuations ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: every reply's own state, so that its buttons (Continuar, Otra) work on it after others came,
    # and after a restart. `id` names the reply in its buttons: AUTOINCREMENT never hands out an id
    # twice, so a button left from a forgotten reply never finds a newer one. A reply that continued
    # another keeps where it began (`start_*`, for Otra); one that began from a seed keeps the seed.
    """
    CREATE TABLE replies (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        platform        TEXT NOT NULL,
        chat_id         TEXT NOT NULL,
        state           BLOB NOT NULL,     -- where it stopped, as in continuations
        units           INTEGER NOT NULL,
        model_id        TEXT NOT NULL,
        last_char       TEXT NOT NULL,
        tail            TEXT NOT NULL,
        updated_at      REAL NOT NULL,
        random_seed     INTEGER,
        position        INTEGER NOT NULL,
        seed            TEXT,              -- the seed it began from, or NULL for a continuation
        start_state     BLOB,              -- a continuation: the state it began from
        start_model_id  TEXT,
        start_last_char TEXT,
        start_tail      TEXT
    );
    CREATE INDEX replies_by_chat ON replies (platform, chat_id, id);
    """,
    # 6: who may change a group's settings, as its admins chose with /ajustes: 'admins' or
    # 'everyone'; NULL means "use [chat] group_settings".
    """
    ALTER TABLE chat_settings ADD COLUMN group_settings TEXT;
    """,
)

_GET_VERSION = "PRAGMA user_version"
_TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY name"


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


@functools.lru_cache(maxsize=None)
def _schema(version: int) -> dict[str, list[str]]:
    """Table -> column names after the first `version` migrations (applied to an empty database)."""
    with closing(sqlite3.connect(":memory:")) as conn:
        for script in MIGRATIONS[:version]:
            conn.executescript(script)
        return {name: [col[1] for col in conn.execute(f"PRAGMA table_info({name})")]
                for (name,) in conn.execute(_TABLES)}


async def check_schema(db: aiosqlite.Connection, path: Path) -> None:
    """Refuse a file whose tables are not those of its version: another program's, or damaged.

    Before migrating, so that another program's database is never changed. `path` names it.
    """
    version = await user_version(db)
    expected = _schema(min(version, len(MIGRATIONS)))
    found = {}
    for (name,) in await db.execute_fetchall(_TABLES):
        # the name is sqlite's own, from sqlite_master; quoted as an identifier all the same
        quoted = '"' + name.replace('"', '""') + '"'
        found[name] = [col[1] for col in await db.execute_fetchall(f"PRAGMA table_info({quoted})")]
    if found == expected:
        return
    if version == 0:
        what = "it holds another program's tables (" + ", ".join(sorted(found)) + ")"
    else:
        name = next(t for t in sorted(set(found) | set(expected)) if found.get(t) != expected.get(t))
        what = (f"at schema version {version} it should have no table {name}" if name not in expected
                else f"at schema version {version} it lacks the table {name}" if name not in found
                else f"its table {name} has the columns ({', '.join(found[name])}), "
                     f"not ({', '.join(expected[name])})")
    raise StorageError(f"{path} is not a cervantes database, or a damaged one: {what}. Point "
                       "[storage] path (CERVANTES_STORAGE_PATH) at a new file or at the bot's own")
