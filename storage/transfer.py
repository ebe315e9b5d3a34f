"""`cervantes migrate-storage`: copy an SQLite database into an empty PostgreSQL database.

The SQLite file is first brought up to this program's schema (opened as the bot opens it), then read
in one snapshot; the PostgreSQL database gets the same schema, every row of every table with its
ids (the buttons of old replies keep working; the inbox's commands still waiting are answered), the
id counters of the replies and the inbox past every id ever handed out (a forgotten reply's id is
never reused), and the installation's chat-tag secret (chat tags in the logs stay the same). The
rows are written in one transaction, and the row counts of each table are compared before it
commits: a difference undoes the copy. A target that holds any table is refused, and a failed copy
removes the tables it made, so the command can simply be run again.
Stop the bot first: what it writes during the copy would not be copied.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage import tags
from storage.engines.postgres import META, PostgresEngine, is_url, table_names
from storage.errors import StorageError
from storage.migrations import MIGRATIONS, schema
from storage.repository import Storage


_COUNTED = ("replies", "inbox")  # ids handed out by a counter (AUTOINCREMENT; an identity column)


async def copy_sqlite_to_postgresql(path: str | Path, url: str) -> dict[str, int]:
    """Copy every row; {table: rows copied}. StorageError, with nothing left behind, on any failure."""
    path = Path(path)
    if not is_url(url):
        raise StorageError(f"--to must be a postgresql:// URL, not {url!r}")
    if not path.is_file():
        raise StorageError(f"no database at {path}")
    async with await Storage.open(path):  # ours, and at this program's version (migrated if older)
        pass
    tables = schema(len(MIGRATIONS))

    target = PostgresEngine(url)
    await _refuse_unless_empty(target)
    async with await Storage.open(url) as storage:  # the schema, on an empty database
        engine = storage.engine
        try:
            return await _copy(path, engine, tables)
        except BaseException:
            async with engine.writing("remove the tables of the failed copy") as tx:
                for table in [*tables, META]:
                    await tx.execute(f"DROP TABLE IF EXISTS {table}")
            raise


async def _refuse_unless_empty(target: PostgresEngine) -> None:
    if found := await table_names(target.url):
        raise StorageError(f"{target.where} is not empty (it has the tables {', '.join(found)}): "
                           "migrate-storage copies into an empty database only (createdb a new one)")


async def _copy(path: Path, engine: PostgresEngine, tables: dict[str, list[str]]) -> dict[str, int]:
    source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        source.execute("BEGIN")  # one snapshot of the file
        counts = {table: source.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}
        last_ids = {table: source.execute(
            f"SELECT max(n) FROM (SELECT max(id) AS n FROM {table} "
            "UNION ALL SELECT seq FROM sqlite_sequence WHERE name = ?)", (table,)).fetchone()[0]
            for table in _COUNTED}
        async with engine.writing("copy the rows") as tx:
            conn = tx.conn
            for table, columns in tables.items():
                cursor = source.execute(f"SELECT {', '.join(columns)} FROM {table}")
                while rows := cursor.fetchmany(5000):
                    try:
                        await conn.copy_records_to_table(table, records=rows, columns=columns)
                    except (TypeError, ValueError) as exc:  # SQLite holds any type in any column
                        raise StorageError(f"{path}: a row of {table} does not fit PostgreSQL's column "
                                           f"types ({exc}): nothing was copied") from None
            for table, last_id in last_ids.items():
                if last_id:
                    await conn.execute("SELECT setval(pg_get_serial_sequence($1, 'id'), $2)", table, int(last_id))
            secret = tags.load_secret(path, create=False)
            await conn.execute(f"UPDATE {META} SET tag_secret = $1", secret)
            copied = {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in tables}
            if copied != counts:
                raise StorageError(f"the row counts differ after the copy (SQLite {counts}, PostgreSQL "
                                   f"{copied}): nothing was kept")
        return copied
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: could not read the rows: {exc}") from exc
    finally:
        source.close()
