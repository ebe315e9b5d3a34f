"""Per-chat settings and continuations in SQLite: a small async repository and its migrations."""

from storage.repository import (
    TAIL_CHARS,
    ChatKey,
    Continuation,
    Settings,
    Storage,
    StorageError,
    StoredReply,
)

__all__ = ["TAIL_CHARS", "ChatKey", "Continuation", "Settings", "Storage", "StorageError", "StoredReply"]
