"""The short tag that names a chat in logs: a keyed hash of "platform:chat_id".

An unsalted hash of a chat id is no disguise: Telegram group ids are few enough to hash them all,
and a tag was turned back into its group id in under a second. The tag is therefore
HMAC-SHA256("platform:chat_id") under a secret of this installation, cut to 12 hex characters.

The secret is 32 random bytes, written in hex to a file beside the database (`<database>.key`,
say `/data/cervantes.db.key`), mode 0600, the first time Storage opens that database; every later
start reads it back, so a chat keeps its tag across restarts and its log lines can be followed.
Nothing stored depends on it: deleting the file only changes the tags of later log lines. It is
not part of `cervantes backup`, and a copy of the database elsewhere gets a secret of its own.

Storage.start installs its secret for the whole process (`install`), since ChatKey.tag is read
in places that hold no Storage (the adapters' logs). Until a Storage is opened (tools, tests),
the process uses a random secret of its own, never an unsalted hash.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path

from storage.errors import StorageError, folder_advice
from storage.files import tighten, write_private

log = logging.getLogger(__name__)

TAG_CHARS = 12  # hex characters: 48 bits, unique enough to follow one chat through the logs
SECRET_BYTES = 32

_secret: bytes = secrets.token_bytes(SECRET_BYTES)  # until a Storage installs its own


def chat_tag(secret: bytes, platform: str, chat_id: str) -> str:
    return hmac.new(secret, f"{platform}:{chat_id}".encode(), hashlib.sha256).hexdigest()[:TAG_CHARS]


def tag(platform: str, chat_id: str) -> str:
    """The chat's tag under the installed secret (ChatKey.tag)."""
    return chat_tag(_secret, platform, chat_id)


def install(secret: bytes) -> None:
    """Make `secret` the one ChatKey.tag uses, in this process, from now on."""
    global _secret
    if len(secret) < 16:
        raise ValueError("a tag secret needs at least 16 bytes")
    _secret = secret


def key_path(db: Path) -> Path:
    return db.with_name(db.name + ".key")


def load_secret(db: Path, *, create: bool) -> bytes:
    """The installation's secret, from the file beside `db`; made there first if missing and `create`.

    Without `create` (a read-only database), a missing or unreadable file gives a secret for this
    process only, with a warning. A file that cannot be read as a secret is a StorageError.
    """
    path = key_path(db)
    if create and not path.exists():
        write_private(path, secrets.token_bytes(SECRET_BYTES).hex().encode() + b"\n")
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        if not create:
            log.warning("%s cannot be read (%s): chat tags in the logs hold for this run only", path, exc)
            return secrets.token_bytes(SECRET_BYTES)
        why = exc.strerror if isinstance(exc, OSError) else "it is not text"
        raise StorageError(f"could not read {path}: {why}; {folder_advice(path)}") from exc
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise StorageError(f"{path} does not hold a secret (64 hex digits): delete it and a new one is "
                           "made at the next start (chat tags in the logs change)")
    if create:
        tighten(path)
    return secret
