"""The inbox table (migration 7): commands stored before they run, until they are answered.

Named methods over a started Storage, on either store: `add` (in one transaction, a batch of
commands; an update the platform sent again is not stored twice), `done` (answered: the row goes,
or keeps only its update key until it is too old to matter), `pending` (what a new process, or a
standby taking over, runs again, in arrival order) and `expire`. Plain SQL in named strings with `?`
parameters, the same on SQLite and PostgreSQL (storage.engines); the writes go through the
Storage's transactions (`_writing`), the reads through its `_read`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace

from storage.repository import ChatKey, Storage, _key


@dataclass(frozen=True)
class Entry:
    """One command as received: enough to run it again and to answer it where it was asked."""

    chat: ChatKey
    command: str  # its name, without the slash: "cervantes"
    argument: str
    member: str | None  # who sent it in a chat of many (limited apart); None in a private chat
    received_at: float  # unix seconds
    answer: dict = field(default_factory=dict)  # JSON-able: what the adapter needs to answer it again
    update_key: str | None = None  # the platform's number for what it delivered, to store it once
    id: int | None = None  # the row, once stored


class Inbox:
    def __init__(self, storage: Storage):
        self.storage = storage

    # the whole batch, or none of it; RETURNING gives no row for an update already stored
    _ADD = """
        INSERT INTO inbox (platform, chat_id, update_key, received_at, member, command, argument, answer)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (platform, update_key) DO NOTHING
        RETURNING id
    """
    _EXPIRE = "DELETE FROM inbox WHERE received_at < ?"

    async def add(self, entries: list[Entry], expire_before: float = -math.inf) -> list[Entry | None]:
        """Store the entries in one transaction; each comes back with its id, or None when its
        update_key was stored before (the platform sent it again). Rows received before
        `expire_before` (unix seconds) are deleted in the same transaction."""
        stored: list[Entry | None] = []
        async with self.storage._writing("store a command") as tx:
            if expire_before > -math.inf:
                await tx.execute(self._EXPIRE, (float(expire_before),))
            for e in entries:
                key = _key(e.chat)
                rows = await tx.fetch(self._ADD, (
                    *key, e.update_key, float(e.received_at), e.member, e.command, e.argument,
                    json.dumps(e.answer)))
                stored.append(replace(e, chat=key, id=int(rows[0][0])) if rows else None)
        return stored

    async def expire(self, before: float) -> None:
        """Delete the rows received before `before` (unix seconds): too old to run, or to be sent again."""
        async with self.storage._writing("expire the inbox") as tx:
            await tx.execute(self._EXPIRE, (float(before),))

    _DELETE_DONE = "DELETE FROM inbox WHERE id = ? AND update_key IS NULL"
    _EMPTY_DONE = """
        UPDATE inbox SET chat_id = '', member = NULL, command = NULL, argument = NULL, answer = NULL
        WHERE id = ?
    """

    _SET_ANSWER = "UPDATE inbox SET answer = ? WHERE id = ? AND command IS NOT NULL"

    async def done(self, ids: list[int], answers: dict[int, dict] | None = None) -> None:
        """In one transaction: `answers`, what the adapter now needs to answer commands still
        running anew (the message their reply began in), then the `ids` answered (delivered,
        refused by a quota, or dropped and counted): nothing of those is kept but, for those with
        an update_key, that key and when it came."""
        done = [(int(i),) for i in ids]
        async with self.storage._writing("mark commands done") as tx:
            await tx.executemany(self._SET_ANSWER, [(json.dumps(a), int(i)) for i, a in (answers or {}).items()])
            await tx.executemany(self._DELETE_DONE, done)
            await tx.executemany(self._EMPTY_DONE, done)

    _PENDING = """
        SELECT id, platform, chat_id, update_key, received_at, member, command, argument, answer FROM inbox
        WHERE platform = ? AND command IS NOT NULL AND received_at >= ?
        ORDER BY id
    """

    async def pending(self, platform: str, since: float) -> list[Entry]:
        """The platform's commands not done, received at `since` (unix seconds) or later, oldest first."""
        rows = await self.storage._read("read the inbox", self._PENDING, (platform, float(since)))
        return [Entry(ChatKey(p, c), command, argument or "", member, received_at,
                      json.loads(answer or "{}"), update_key, int(i))
                for i, p, c, update_key, received_at, member, command, argument, answer in rows]
