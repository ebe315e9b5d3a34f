"""Operations on a bot's data: `cervantes health` (a container's HEALTHCHECK), `cervantes backup` and
`cervantes migrate-storage`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


def cmd_health(args) -> int:
    """One line from what serve last reported (bot/process/health.py): nothing loaded, nothing created."""
    from bot.process import health, status

    verdict = health.check(status.path_of(args.config.storage))
    print(verdict.line())
    return 0 if verdict.ok else 1


def cmd_backup(args) -> int:
    from storage import Storage, StorageError
    from storage.engines import is_url, redact

    target = args.config.storage.database()
    if is_url(target):  # nothing to open: say what to use instead
        print(f"cervantes: the database is PostgreSQL ({redact(target)}): `cervantes backup` copies an "
              f"SQLite file only. Use pg_dump, safe while the bot runs: pg_dump --format=custom "
              f"--file={args.path} '{redact(target)}' (the password as for the bot: PGPASSWORD or PGPASSFILE)",
              file=sys.stderr)
        return 2
    db = Path(target)
    if not db.is_file():  # opening it would create an empty one, and back that up
        print(f"cervantes: no database at {db}", file=sys.stderr)
        return 2

    async def copy() -> Path:
        async with await Storage.open(db) as storage:
            return await storage.backup(args.path)

    try:
        dest = asyncio.run(copy())
    except (StorageError, ValueError) as exc:
        print(f"cervantes: backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"{db} backed up to {dest.resolve()}")
    return 0


def cmd_migrate_storage(args) -> int:
    """Copy the SQLite database at [storage] path into the empty PostgreSQL database --to names."""
    from storage import StorageError
    from storage.engines import is_url, redact
    from storage.transfer import copy_sqlite_to_postgresql

    source = Path(args.config.storage.path)
    url = args.to
    if url == "-":
        url = sys.stdin.readline().strip()  # the URL with its password, kept out of the process list
    if not is_url(url):
        print("cervantes: --to must be a postgresql://user@host:port/dbname URL", file=sys.stderr)
        return 2
    try:
        counts = asyncio.run(copy_sqlite_to_postgresql(source, url))
    except StorageError as exc:
        print(f"cervantes: migrate-storage failed: {exc}", file=sys.stderr)
        return 1
    rows = ", ".join(f"{table} {n}" for table, n in counts.items())
    print(f"{source} copied to {redact(url)}, the row counts checked ({rows}). Set [storage] url "
          "(CERVANTES_STORAGE_URL) to it and start the bot.")
    return 0
