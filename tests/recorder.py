"""An Output for the commands that keeps what the user would read, shared by the tests of every room."""

from __future__ import annotations

from bot.chat.commands import ChatKey, Commands, Written
from bot.chat.members import Member
from bot.chat.parsing import parse

CHAT = ChatKey("telegram", "-100123")


class Recorder:
    """An Output that keeps every reply, streamed or not, as the user would finally read it."""

    def __init__(self):
        self.replies: list[str] = []
        self.streamed: list[list[str]] = []
        self.reply_ids: list[int | None] = []  # the id each generated reply's buttons carry

    async def send(self, text: str) -> None:
        self.replies.append(text)

    async def stream(self, pieces) -> None:
        got = [p async for p in pieces]
        self.streamed.append(got)
        self.replies.append("".join(got))
        self.reply_ids.append(pieces.reply_id)

    @property
    def last(self) -> str:
        return self.replies[-1]


async def say(commands: Commands, text: str, chat: ChatKey = CHAT, who: Member | None = None) -> str:
    """What `text` gets, in a private chat, or from the member `who` of a group."""
    out = Recorder()
    await commands.run(chat, parse(text), out, who)
    return out.last


def member(user: str, admin: bool = False, group: str = "group", **fields) -> Member:
    """A member of a group, an admin of it or not, as an adapter describes them."""
    async def is_admin() -> bool:
        return admin

    return Member(user, group, is_admin, **fields)


def written(text: str, reply_id: int = 7, piece: int = 700) -> Written:
    """A reply as the commands hand it to an adapter: `text` in pieces of `piece` characters, and
    once they are all read, the id its buttons name (as a stored reply's)."""
    out = Written()

    async def pieces():
        for start in range(0, len(text), piece):
            yield text[start:start + piece]
        out.reply_id = reply_id

    out.pieces = pieces()
    return out
