"""Per-chat settings, continuations and replies, in an SQLite file or PostgreSQL: a small async repository
above two engines (storage.engines), and its migrations."""

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
