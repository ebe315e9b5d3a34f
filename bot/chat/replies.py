"""What both chat adapters do to show a reply: cut it into messages, and pace its edits."""

from __future__ import annotations

import asyncio
import time
from typing import Callable


def utf16_units(text: str) -> int:
    """Telegram counts message length in UTF-16 code units: astral characters (emoji) count twice."""
    return len(text.encode("utf-16-le")) // 2


def split(text: str, limit: int, units: Callable[[str], int] = len) -> list[str]:
    """Parts of at most `limit` units, cut after the last line break or space when there is one.

    A cut depends only on the text before it, so a growing reply never moves its earlier cuts.
    A part that would hold only whitespace (a text ending in blanks past a cut) is left out: both
    platforms refuse a blank message, and a reply whose last part can never go out never ends.
    """
    parts = []
    while units(text) > limit:
        end = min(len(text), limit)
        while (excess := units(text[:end]) - limit) > 0:  # characters that count more than one
            end -= max(1, excess // 2)
        cut = max(text.rfind("\n", 0, end), text.rfind(" ", 0, end)) + 1
        cut = cut if cut > 0 else end
        if text[:cut].strip():
            parts.append(text[:cut])
        text = text[cut:]
    if text.strip() or not parts:
        parts.append(text)
    return parts


class EditPacer:
    """At most one edit per chat (or channel) every `interval` seconds, shared by all of its replies:
    both platforms limit edits per chat."""

    def __init__(self, interval: float):
        self.interval = interval
        self._next: dict[int, float] = {}  # chat id -> monotonic time of its next free slot

    def take_if_free(self, chat_id: int) -> bool:
        now = time.monotonic()
        if now < self._next.get(chat_id, 0.0):
            return False
        self._reserve(chat_id, now + self.interval)
        return True

    async def take(self, chat_id: int) -> None:
        """Wait for the chat's next free slot and take it."""
        now = time.monotonic()
        slot = max(now, self._next.get(chat_id, 0.0))
        self._reserve(chat_id, slot + self.interval)
        await asyncio.sleep(slot - now)

    def hold(self, chat_id: int, seconds: float) -> None:
        """Telegram asked this chat to slow down: no slot before then."""
        self._reserve(chat_id, max(self._next.get(chat_id, 0.0), time.monotonic() + seconds))

    def _reserve(self, chat_id: int, until: float) -> None:
        if len(self._next) > 10_000:  # forget chats whose slot has long passed
            now = time.monotonic()
            self._next = {c: t for c, t in self._next.items() if t > now}
        self._next[chat_id] = until
