"""Telegram updates go into the inbox (bot.chat.inbox) before Telegram is told they were received.

Telegram treats an update as received once getUpdates is called with a higher offset (or, with a
webhook, once the webhook request is answered with 2xx); after that it never sends it again. So a
command must be stored before either happens.

python-telegram-bot's Updater is kept, with this queue as the Application's update queue: in
polling, `Updater._start_polling` awaits `update_queue.put(update)` for every update of a batch
before it sets the next offset and calls getUpdates again (telegram/ext/_updater.py,
polling_action_cb); in webhook mode the handler awaits the same `put` before it answers Telegram
(telegram/ext/_utils/webhookhandler.py, TelegramHandler.post). With a plain asyncio.Queue, `put`
returns at once and the next getUpdates may confirm an update whose handler has not run yet: a
crash then loses it. Here `put` returns only once the command is stored. The Updater's own retries,
backoff and stop (which confirms what was put) are kept as they are.
tests/bot_telegram/test_telegram_receiving.py holds PTB to it.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from telegram import Update

Store = Callable[[Update], Awaitable[bool]]  # False: Telegram sent it before, and it is stored: drop it


class StoringQueue(asyncio.Queue):
    """The Application's update queue: an update is stored (`store`) before `put` returns."""

    def __init__(self, store: Store):
        super().__init__()
        self._store = store

    async def put(self, item) -> None:
        if isinstance(item, Update) and not await self._store(item):
            return  # the Application's own signals (its stop) pass as they are
        await super().put(item)
