"""How many commands a chat (and, in a group, each member) may give a minute, and when to say so.

A member is limited across their whole group: the topics of a Telegram forum, the channels and
threads of a Discord server are chats of their own, but one person opening ten of them still has one
share. The topics of a forum also share their group's quota (Telegram allows 20 messages a minute
in a group, whatever the topic). The adapter says which keys a command counts against
(bot.chat.members.Member).

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

    def check(self, chat, user=None) -> Verdict:
        """`chat`: the chat whose quota the command counts against (a forum topic: its group).
        `user`: the member who wrote, named across their whole group, so that one limit holds in
        every topic, channel and thread of it (None in a private chat)."""
        key, wait = chat, 0.0
        if user is not None:
            key, wait = ("member", user), self.users.allow(user)
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
