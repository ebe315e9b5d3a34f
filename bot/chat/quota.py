"""How many commands a chat (and, in a group, each member) may give a minute, and when to say so.

Every command counts, not only the ones that write: a chat that floods /ayuda would otherwise use up
the bot's Telegram quota as surely as one that floods /cervantes. Over the limit, the first refused
command gets one "Despacio" notice; further ones within the same window get silence, since each
notice is itself a message that counts against the chat's quota.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.chat.ratelimit import RateLimiter


@dataclass(frozen=True)
class Verdict:
    wait_s: float  # 0: the command goes ahead
    notify: bool  # refused, and the chat has not been told yet in this window


class Quota:
    def __init__(self, per_chat: int, per_user: int, clock=time.monotonic):
        self.clock = clock
        self.chats = RateLimiter(per_chat, clock=clock)
        self.users = RateLimiter(per_user, clock=clock)
        self._told: dict[object, float] = {}  # who was told to wait -> until when

    def check(self, chat, user: str | None = None) -> Verdict:
        """`user` is the member who wrote, in a chat of many (None in a private chat)."""
        key, wait = chat, 0.0
        if user is not None:
            key, wait = (chat, user), self.users.allow((chat, user))
        if not wait:
            key, wait = chat, self.chats.allow(chat)
        if not wait:
            return Verdict(0.0, False)
        now = self.clock()
        if self._told.get(key, 0.0) > now:
            return Verdict(wait, False)
        if len(self._told) > 1000:  # forget the windows that have ended
            self._told = {k: t for k, t in self._told.items() if t > now}
        self._told[key] = now + wait
        return Verdict(wait, True)
