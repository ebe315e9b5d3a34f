"""storage/inbox.py: commands stored before they run, in arrival order, once per update, and gone
(nothing of them left but an update's number, for a while) once answered; on both stores, as
tests/test_storage.py runs them (a real SQLite file, a fresh database on a real PostgreSQL server)."""

from __future__ import annotations

import pytest

from storage import ChatKey, Storage
from storage.inbox import Entry, Inbox
from test_storage import Place

A, B = ChatKey("telegram", "1"), ChatKey("discord", "2")


def entry(chat: ChatKey, argument: str, at: float = 1000.0, key: str | None = None) -> Entry:
    return Entry(chat, "cervantes", argument, "501", at, {"chat_id": 1, "reply_to": 7}, key)


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request, tmp_path) -> Place:
    if request.param == "sqlite":
        return Place("sqlite", tmp_path / "c.db")
    return Place("postgresql", request.getfixturevalue("pg_url"))


@pytest.fixture
async def inbox(place):
    async with await Storage.open(place.target) as storage:
        yield Inbox(storage)


async def test_pending_commands_come_back_in_arrival_order_with_all_they_need(inbox):
    first, second = await inbox.add([entry(A, "uno"), entry(A, "dos", key="9:1")])
    await inbox.add([entry(B, "tres")])
    pending = await inbox.pending("telegram", since=0)
    assert [e.argument for e in pending] == ["uno", "dos"]  # the platform's own, oldest first
    assert pending[0] == first and pending[1] == second  # everything as stored, the answer included
    assert pending[1].answer == {"chat_id": 1, "reply_to": 7} and pending[1].member == "501"


async def test_an_update_sent_again_is_stored_once_even_after_it_was_answered(inbox):
    (stored,) = await inbox.add([entry(A, "uno", key="9:1")])
    assert await inbox.add([entry(A, "uno", key="9:1")]) == [None]
    await inbox.done([stored.id])
    assert await inbox.add([entry(A, "uno", key="9:1")]) == [None]  # Telegram's offset not confirmed
    assert await inbox.pending("telegram", since=0) == []


async def test_done_keeps_nothing_of_the_command(inbox, place):
    keyed, plain = await inbox.add([entry(A, "Sancho dijo", key="9:1"), entry(B, "Dulcinea")])
    await inbox.done([keyed.id, plain.id])
    rows = place.rows("SELECT platform, chat_id, update_key, member, command, argument, answer FROM inbox")
    assert rows == [("telegram", "", "9:1", None, None, None, None)]  # an update number, not the chat


async def test_a_reply_begun_is_noted_until_the_command_is_done(inbox):
    (stored,) = await inbox.add([entry(A, "uno", key="9:1")])
    await inbox.done([], {stored.id: {"chat_id": 1, "begun": 42}})
    (pending,) = await inbox.pending("telegram", since=0)
    assert pending.answer == {"chat_id": 1, "begun": 42}
    await inbox.done([stored.id], {stored.id: {"begun": 43}})  # done in the same write: nothing noted
    assert await inbox.pending("telegram", since=0) == []


async def test_rows_older_than_the_age_limit_go_with_the_next_add(inbox):
    await inbox.add([entry(A, "viejo", at=100.0, key="9:1")])
    await inbox.add([entry(A, "nuevo", at=500.0)], expire_before=400.0)
    assert [e.argument for e in await inbox.pending("telegram", since=0)] == ["nuevo"]
    (again,) = await inbox.add([entry(A, "viejo", at=100.0, key="9:1")])  # its key went with it
    assert again is not None
    assert [e.argument for e in await inbox.pending("telegram", since=450.0)] == ["nuevo"]
    await inbox.expire(450.0)
    assert [e.argument for e in await inbox.pending("telegram", since=0)] == ["nuevo"]


async def test_forgetting_a_chat_leaves_its_commands_still_waiting(inbox):
    """/olvidar deletes the chat's data; a command the chat sent after it must survive a crash."""
    await inbox.add([entry(A, "después")])
    assert not await inbox.storage.forget(A)
    assert [e.argument for e in await inbox.pending("telegram", since=0)] == ["después"]
