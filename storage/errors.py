"""StorageError, and sqlite's errors put into words that name the database file.

Everything that can go wrong with the file or the disk (full, read-only, locked, damaged, not a
database, not ours) reaches the callers as StorageError, reads included, so that the command layer
can answer on defaults instead of failing. Only misuse of the sqlite3 API (ProgrammingError,
InterfaceError: bugs in this package) stays raw.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DOCKER_UID = 10001  # the user the Docker image runs as (Dockerfile: USER 10001:10001)


class StorageError(Exception):
    """The database cannot do what was asked (disk full, read-only, locked, damaged); say so politely."""


def folder_advice(path: Path) -> str:
    """What to check when a file beside the database cannot be created or opened."""
    uid = os.getuid() if hasattr(os, "getuid") else "?"
    return (f"its folder {path.parent} must exist and be writable by this user (uid {uid}; "
            f"the Docker image runs as uid {DOCKER_UID})")


# sqlite's primary result codes for trouble with the file or the disk, not with our SQL.
_TROUBLE = {
    3: ("access permission denied", "permission to the database file was denied"),  # SQLITE_PERM
    5: ("database is locked", "the database is locked by another process"),  # SQLITE_BUSY
    6: ("database table is locked", "the database is locked"),  # SQLITE_LOCKED
    8: ("readonly database", "the database is read-only"),  # SQLITE_READONLY
    10: ("disk i/o error", "the disk failed to read or write"),  # SQLITE_IOERR
    11: ("malformed", "the database file is damaged"),  # SQLITE_CORRUPT
    13: ("database or disk is full", "the disk is full"),  # SQLITE_FULL
    14: ("unable to open database", "the database file cannot be opened"),  # SQLITE_CANTOPEN
    26: ("file is not a database", "the file is not a database"),  # SQLITE_NOTADB
}
_CANTOPEN = 14


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+; the extended code
    if code is not None:
        return code & 0xFF
    message = str(exc).lower()
    return next((c for c, (fragment, _) in _TROUBLE.items() if fragment in message), None)


def describe(exc: sqlite3.Error, path: Path) -> str:
    """What went wrong, in words."""
    code = _code(exc)
    if code == _CANTOPEN:
        return f"{_TROUBLE[code][1]}: {folder_advice(path)}"
    if code in _TROUBLE:
        return _TROUBLE[code][1]
    return "the database does not hold what this program expects (damaged, or not a cervantes database)"


@contextmanager
def translated(doing: str, path: Path) -> Iterator[None]:
    """sqlite errors become StorageError naming `path`; misuse of the API (a bug here) stays raw."""
    try:
        yield
    except (sqlite3.ProgrammingError, sqlite3.InterfaceError):
        raise
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: could not {doing}: {describe(exc, path)} ({exc})") from exc
