"""The database's files are private to the user the bot runs as: mode 0600.

They hold raw chat ids and the last characters of each chat's text. Nothing here changes the
process's umask (it is process-wide, and other threads create files too): each file is created
with an explicit mode instead. The database file is created empty before sqlite opens it, because
sqlite gives its -wal, -shm and -journal files the mode of the database file; files found looser
(made by an older version) are tightened on the next start.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from storage.errors import StorageError, folder_advice

log = logging.getLogger(__name__)

PRIVATE = 0o600
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")  # made by sqlite beside the database


def side_files(db: Path) -> list[Path]:
    return [db.with_name(db.name + suffix) for suffix in SIDE_SUFFIXES]


def create_private(path: Path, *, exclusive: bool = False) -> None:
    """Create `path` empty with mode 0600 unless it exists (or fail if it does, with `exclusive`).

    An existing file is left as it is (see tighten); an error names the file and what to check.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else 0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"could not create {path.parent}: {exc.strerror}; {folder_advice(path)}") from exc
    try:
        os.close(os.open(path, flags, PRIVATE))
    except FileExistsError:
        if exclusive:
            raise
    except OSError as exc:
        raise StorageError(f"could not create {path}: {exc.strerror}; {folder_advice(path)}") from exc


def write_private(path: Path, data: bytes) -> bool:
    """Write a new file `path` holding `data`, mode 0600, whole or not at all; False if it exists.

    Written under another name first and linked into place, so that a reader never sees it
    half-written, and two processes starting at once agree on the first one's file.
    """
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        create_private(partial, exclusive=True)
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(partial, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise StorageError(f"could not create {path}: {exc.strerror}; {folder_advice(path)}") from exc
    finally:
        partial.unlink(missing_ok=True)


def tighten(path: Path) -> None:
    """Make an existing file 0600 if it is readable or writable by others; log what was done.

    A file owned by someone else cannot be changed: that is logged, not raised.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(path, mode & 0o700)
        log.warning("%s was readable by others (mode %o): made it %o", path, mode, mode & 0o700)
    except OSError as exc:
        log.warning("%s is readable by others (mode %o) and could not be made private: %s",
                    path, mode, exc.strerror)
