"""Who administers a Telegram group, for bot.chat.members: is this member an admin of this chat?

getChatAdministrators answers without the bot being an admin, and lists the creator with the
administrators (Bot API). Each chat's list is kept at most TTL_S, and dropped at once when Telegram
reports a change of membership in that chat: a `chat_member` update (which reaches a bot only where
it is an admin) or `my_chat_member` (the bot's own status). Where no such update comes, a user
missing from a kept list is asked about once with getChatMember, so a new admin counts at once; a
removed one counts until the list expires. Concurrent questions about one chat share one request.

An anonymous admin writes as the group itself: from GroupAnonymousBot, with `sender_chat` the group.
"""

from __future__ import annotations

import asyncio
import time

from telegram import Bot, ChatMember
from telegram.error import TelegramError

from bot.chat.members import AdminsUnknown
from bot.telegram.outbox import describe

TTL_S = 600.0  # a chat's list of admins is asked again after this long
MAX_CHATS = 10_000  # lists kept at most; the oldest go first
ADMIN_STATUSES = {ChatMember.OWNER, ChatMember.ADMINISTRATOR}


class Admins:
    def __init__(self, bot: Bot, ttl_s: float = TTL_S, clock=time.monotonic):
        self.bot = bot
        self.ttl_s = ttl_s
        self.clock = clock
        self._lists: dict[int, tuple[float, frozenset[int]]] = {}  # chat id -> (when asked, admins' ids)
        self._asking: dict[int, asyncio.Future] = {}  # chat id -> the getChatAdministrators in flight

    async def is_admin(self, chat_id: int, user_id: int) -> bool:
        """Raises AdminsUnknown when Telegram cannot be asked."""
        admins, kept = await self._admins(chat_id)
        if user_id in admins:
            return True
        if not kept:  # just asked: the answer is Telegram's own
            return False
        try:  # maybe promoted since the list was asked, with no update to say so
            member = await self.bot.get_chat_member(chat_id, user_id)
        except TelegramError as exc:
            raise AdminsUnknown(f"getChatMember failed: {describe(exc)}") from None
        if member.status in ADMIN_STATUSES:
            self.forget(chat_id)  # the list is out of date
            return True
        return False

    def forget(self, chat_id: int) -> None:
        """Membership changed in the chat: its list is asked again next time."""
        self._lists.pop(chat_id, None)
        self._asking.pop(chat_id, None)  # an answer in flight may predate the change: not kept

    async def _admins(self, chat_id: int) -> tuple[frozenset[int], bool]:
        """The ids of the chat's admins, and whether they came from the kept list."""
        now = self.clock()
        kept = self._lists.get(chat_id)
        if kept is not None and now - kept[0] < self.ttl_s:
            return kept[1], True
        asking = self._asking.get(chat_id)
        if asking is None:
            asking = self._asking[chat_id] = asyncio.ensure_future(self.bot.get_chat_administrators(chat_id))
        try:
            answer = await asyncio.shield(asking)
        except TelegramError as exc:
            if self._asking.get(chat_id) is asking:
                del self._asking[chat_id]
            raise AdminsUnknown(f"getChatAdministrators failed: {describe(exc)}") from None
        admins = frozenset(member.user.id for member in answer)
        if self._asking.get(chat_id) is asking:  # the first to read it keeps it (unless forgotten meanwhile)
            del self._asking[chat_id]
            self._keep(chat_id, now, admins)
        return admins, False

    def _keep(self, chat_id: int, now: float, admins: frozenset[int]) -> None:
        if len(self._lists) >= MAX_CHATS:
            self._lists = {c: kept for c, kept in self._lists.items() if now - kept[0] < self.ttl_s}
            while len(self._lists) >= MAX_CHATS:
                del self._lists[next(iter(self._lists))]
        self._lists[chat_id] = (now, admins)
