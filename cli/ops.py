"""Operations on a running bot: `cervantes health` (a container's HEALTHCHECK) and `cervantes backup`."""

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

    db = Path(args.config.storage.path)
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
