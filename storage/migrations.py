"""The schema as a numbered list of migrations, each in SQLite's SQL and PostgreSQL's, applied in order.

Version N means the first N migrations have been applied; the engine records it (SQLite: `PRAGMA
user_version`; PostgreSQL: the table `cervantes_schema`). Never edit a migration once it has
shipped: append a new one, for both engines (`same(...)` where the SQL is the same on both, as it is
for `ALTER TABLE chat_settings ADD COLUMN x TEXT`). Both must make tables with the same names and
columns, in the same order (a test holds that): the schema check compares a database with SQLite's
result. Each runs in its own transaction together with the version bump, under a lock that
serializes it between processes, so a failed migration leaves the database at the version before it.
"""

from __future__ import annotations

import functools
import sqlite3
from contextlib import closing
from typing import NamedTuple

from storage.errors import StorageError


class Migration(NamedTuple):
    sqlite: str
    postgresql: str


def same(sql: str) -> Migration:
    """A migration whose SQL is the same on both engines."""
    return Migration(sql, sql)


# Every table is keyed by (platform, chat_id); chat ids are TEXT (Discord snowflakes, Telegram's
# negative group ids), and `storage.repository._CHAT_TABLES` must list every table here (forget,
# move_chat and the pruning of idle chats use it), but the inbox (7), whose rows live minutes.
# PostgreSQL's types: REAL is DOUBLE PRECISION (its own REAL is 4 bytes), INTEGER is BIGINT
# (SQLite's are 8 bytes), BLOB is BYTEA.
MIGRATIONS: tuple[Migration, ...] = (
    # 1: per-chat settings; NULL means "use the configured default".
    Migration(
        """
        CREATE TABLE chat_settings (
            platform    TEXT NOT NULL,
            chat_id     TEXT NOT NULL,
            temperature REAL,
            length      INTEGER,
            PRIMARY KEY (platform, chat_id)
        );
        """,
        """
        CREATE TABLE chat_settings (
            platform    TEXT NOT NULL,
            chat_id     TEXT NOT NULL,
            temperature DOUBLE PRECISION,
            length      BIGINT,
            PRIMARY KEY (platform, chat_id)
        );
        """),
    # 2: where `/continuar` goes on from: the GRU state after the text so far.
    Migration(
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
        """
        CREATE TABLE continuations (
            platform   TEXT NOT NULL,
            chat_id    TEXT NOT NULL,
            state      BYTEA NOT NULL,
            units      BIGINT NOT NULL,
            model_id   TEXT NOT NULL,
            last_char  TEXT NOT NULL,
            tail       TEXT NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (platform, chat_id)
        );
        """),
    # 3: when each chat last wrote anything, for `[storage] keep_days`. Chats stored before this
    # migration count as active at the upgrade: their last activity was not recorded.
    Migration(
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
        """
        CREATE TABLE chats (
            platform    TEXT NOT NULL,
            chat_id     TEXT NOT NULL,
            last_active DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (platform, chat_id)
        );
        CREATE INDEX chats_by_last_active ON chats (last_active);
        INSERT INTO chats (platform, chat_id, last_active)
            SELECT platform, chat_id, extract(epoch FROM now())::double precision
            FROM (SELECT platform, chat_id FROM chat_settings
                  UNION SELECT platform, chat_id FROM continuations) AS known;
        """),
    # 4: the random stream of the text so far, so that /continuar at a temperature above 0 goes on
    # with the noise that one long text would have had. NULL: not known (a new seed is drawn).
    Migration(
        """
        ALTER TABLE continuations ADD COLUMN random_seed INTEGER;
        ALTER TABLE continuations ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
        """,
        """
        ALTER TABLE continuations ADD COLUMN random_seed BIGINT;
        ALTER TABLE continuations ADD COLUMN position BIGINT NOT NULL DEFAULT 0;
        """),
    # 5: every reply's own state, so that its buttons (Continuar, Otra) work on it after others came,
    # and after a restart. `id` names the reply in its buttons: AUTOINCREMENT (an identity column on
    # PostgreSQL) never hands out an id twice, so a button left from a forgotten reply never finds a
    # newer one. A reply that continued another keeps where it began (`start_*`, for Otra); one that
    # began from a seed keeps the seed. BY DEFAULT: migrate-storage copies the ids as they were.
    Migration(
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
        """
        CREATE TABLE replies (
            id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            platform        TEXT NOT NULL,
            chat_id         TEXT NOT NULL,
            state           BYTEA NOT NULL,
            units           BIGINT NOT NULL,
            model_id        TEXT NOT NULL,
            last_char       TEXT NOT NULL,
            tail            TEXT NOT NULL,
            updated_at      DOUBLE PRECISION NOT NULL,
            random_seed     BIGINT,
            position        BIGINT NOT NULL,
            seed            TEXT,
            start_state     BYTEA,
            start_model_id  TEXT,
            start_last_char TEXT,
            start_tail      TEXT
        );
        CREATE INDEX replies_by_chat ON replies (platform, chat_id, id);
        """),
    # 6: who may change a group's settings, as its admins chose with /ajustes: 'admins' or
    # 'everyone'; NULL means "use [chat] group_settings".
    same("ALTER TABLE chat_settings ADD COLUMN group_settings TEXT;"),
    # 7: the inbox (storage.inbox): every command and button press, stored before it runs, so that a
    # crash loses none. Once answered its row is deleted; a row received with an `update_key` (the
    # platform's number for what it delivered: Telegram sends an update again until its offset is
    # confirmed) keeps only that key and its time, so the update is not run twice, until
    # `received_at` is older than [telegram] max_delivery_s. Not one of the chat tables
    # (`_CHAT_TABLES`): a pending command of a chat outlives its /olvidar, and a row lives at most
    # max_delivery_s. `id` is the arrival order, across chats.
    Migration(
        """
        CREATE TABLE inbox (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            platform    TEXT NOT NULL,
            chat_id     TEXT NOT NULL,
            update_key  TEXT,              -- e.g. Telegram's "<bot id>:<update_id>"; NULL: none
            received_at REAL NOT NULL,     -- unix seconds
            member      TEXT,              -- who sent it in a chat of many; NULL in a private chat
            command     TEXT,              -- NULL once answered
            argument    TEXT,
            answer      TEXT,              -- JSON: what the adapter needs to answer it again
            UNIQUE (platform, update_key)
        );
        CREATE INDEX inbox_by_received ON inbox (received_at);
        """,
        """
        CREATE TABLE inbox (
            id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            platform    TEXT NOT NULL,
            chat_id     TEXT NOT NULL,
            update_key  TEXT,
            received_at DOUBLE PRECISION NOT NULL,
            member      TEXT,
            command     TEXT,
            argument    TEXT,
            answer      TEXT,
            UNIQUE (platform, update_key)
        );
        CREATE INDEX inbox_by_received ON inbox (received_at);
        """),
)

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


async def migrate(engine, target: int | None = None) -> int:
    """Apply the migrations after the database's version up to `target` (all by default).

    Each migration is one transaction under the engine's migration lock, the version read again
    under it (another process may have migrated meanwhile). Returns the version reached. A database
    newer than `target` is left alone; the caller decides whether that is an error.
    """
    target = len(MIGRATIONS) if target is None else target
    if not 0 <= target <= len(MIGRATIONS):
        raise ValueError(f"no migration {target}: there are {len(MIGRATIONS)}")
    version, _ = await engine.read_schema()
    while version < target:
        number = version + 1
        async with engine.migrating() as (tx, version):
            if version < number:
                for statement in statements(engine.script(MIGRATIONS[number - 1])):
                    await tx.execute(statement)
                await engine.set_version(tx, number)
                version = number
    return version


@functools.lru_cache(maxsize=None)
def schema(version: int) -> dict[str, list[str]]:
    """Table -> column names after the first `version` migrations (SQLite's, on an empty database)."""
    with closing(sqlite3.connect(":memory:")) as conn:
        for migration in MIGRATIONS[:version]:
            conn.executescript(migration.sqlite)
        return {name: [col[1] for col in conn.execute(f"PRAGMA table_info({name})")]
                for (name,) in conn.execute(_TABLES)}


def judge_schema(version: int, found: dict[str, list[str]], where: str, fix: str) -> None:
    """Refuse tables that are not those of their version: another program's, or damaged; and a
    cervantes database newer than this program. What the database is comes before its version:
    another program's file with a high version (Firefox's places.sqlite is at 74) is not "newer".
    `where` names the database, `fix` says what to change instead."""
    latest = schema(len(MIGRATIONS))
    if version > len(MIGRATIONS):
        # a newer cervantes keeps every table of ours, with our columns first (columns are appended)
        if all(found.get(name, [])[:len(columns)] == columns for name, columns in latest.items()):
            raise StorageError(f"{where} is at schema version {version}, newer than this "
                               f"program's {len(MIGRATIONS)}: run a newer cervantes")
        what = "it holds another program's tables (" + ", ".join(sorted(found)) + ")"
    else:
        expected = schema(version)
        if found == expected:
            return
        if version == 0 or not set(found) & set(latest):
            what = "it holds another program's tables (" + ", ".join(sorted(found)) + ")"
        else:
            name = next(t for t in sorted(set(found) | set(expected)) if found.get(t) != expected.get(t))
            what = (f"at schema version {version} it should have no table {name}" if name not in expected
                    else f"at schema version {version} it lacks the table {name}" if name not in found
                    else f"its table {name} has the columns ({', '.join(found[name])}), "
                         f"not ({', '.join(expected[name])})")
    raise StorageError(f"{where} is not a cervantes database, or a damaged one: {what}. {fix}")
