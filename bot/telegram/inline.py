"""Telegram inline mode: `@ElBot Sancho dijo` in any chat offers three continuations to choose from.

The query is the seed (empty: the default opening). Its three continuations go to the service
together, each with its own random stream, so the worker writes them in one batch; the answer lists
them as articles whose text is the seed and the continuation. The user's client posts the one
chosen: the bot writes nothing in the chat, stores nothing, and needs no chat id.

A client sends a query per keystroke, so a user's newer query cancels the older one still being
written (it is never answered: the client shows the newest answer only), and typing never queues
work. Each user may make `[telegram] inline_rate_limit_per_minute` queries a minute. A query the bot
does not write for (too fast, the queue full, the service too slow) gets an empty answer with a
button that says why: an inline query cannot be answered with an error message.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from telegram import InlineQuery, InlineQueryResultArticle, InlineQueryResultsButton, InputTextMessageContent, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes, InlineQueryHandler

from bot.chat import messages
from bot.chat.commands import ChatKey, record
from bot.chat.ratelimit import RateLimiter
from bot.telegram.outbox import describe
from config import ChatSection, TelegramSection
from service.generation import Busy, GenerationService, Result

log = logging.getLogger(__name__)

CHOICES = 3  # continuations offered per query
CACHE_TIME_S = 5  # Telegram may show this answer again for the same query this long (per user)
ANSWER_WITHIN_S = 8.0  # Telegram drops an answer that comes about 10 s after its query
MIN_TEMPERATURE = 0.1  # at 0 the three would be one text; at 0,1 they agree on 40 characters 3% of the time
TITLE_CHARS = 40  # an article's title: the start of its continuation, what tells the three apart
MAX_TEXT = 4096  # Telegram's limit on a message's text


class InlineMode:
    """Answers inline queries; `handler()` is registered with the Application."""

    def __init__(self, service: GenerationService, chat: ChatSection, telegram: TelegramSection):
        self.service = service
        self.temperature = max(chat.temperature, MIN_TEMPERATURE)
        self.length = telegram.inline_length
        self.limiter = RateLimiter(telegram.inline_rate_limit_per_minute)
        self._writing: dict[int, asyncio.Task] = {}  # user id -> the continuations of their newest query

    def handler(self) -> InlineQueryHandler:
        return InlineQueryHandler(self.answer)

    async def answer(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Three continuations of the query's text, or an empty list under a button that says why."""
        query = update.inline_query
        user = query.from_user.id
        fields = {"platform": "telegram", "chat": ChatKey("telegram", f"inline:{user}").tag, "command": "inline"}
        if self.limiter.allow(user):
            record({**fields, "outcome": "limited"})
            await _answer(query, [], button(messages.INLINE_SLOW, "despacio"))
            return
        started = time.perf_counter()
        task = await self._newest(user, query.query)
        if task.cancelled():  # the user typed on: the client shows the newer query's answer only
            record({**fields, "outcome": "superseded"})
            return
        outcome, results, shown = _outcome(task)
        await _answer(query, [article(i, r) for i, r in enumerate(results)], shown)
        record({**fields, "outcome": outcome, "characters": sum(len(r.text) for r in results),
                 "latency_ms": round((time.perf_counter() - started) * 1000),
                 "batch_size": max((r.batch_size for r in results), default=0)})

    async def _newest(self, user: int, seed: str) -> asyncio.Task:
        """Write for the user's newest query, cancelling the older one still being written (its rows
        leave the batch at the next chunk); the task, once it has ended, cancelled or not."""
        if (older := self._writing.get(user)) is not None:
            older.cancel()
        task = self._writing[user] = asyncio.create_task(self._continuations(seed))
        try:
            await asyncio.wait([task])
        finally:
            task.cancel()  # this handler was cancelled (a stop): so is the work
            if self._writing.get(user) is task:
                del self._writing[user]
        return task

    async def _continuations(self, seed: str) -> list[Result]:
        """CHOICES continuations of `seed`, queued at once (one batch), each with its own random stream.
        Raises Busy when the queue cannot take them all, TimeoutError after ANSWER_WITHIN_S."""
        first = secrets.randbits(63)
        streams = []
        try:
            async with asyncio.timeout(ANSWER_WITHIN_S):
                for i in range(CHOICES):
                    streams.append(self.service.stream(seed, temperature=self.temperature, length=self.length,
                                                       random_seed=first + i))
                for stream in streams:  # written side by side: reading one lets the others wait
                    async for _ in stream:
                        pass
            return [stream.result for stream in streams]
        finally:  # busy, too slow or superseded: the rows already queued leave at once
            for stream in streams:
                if stream.result is None:
                    stream.cancel()


def article(i: int, result: Result) -> InlineQueryResultArticle:
    """One choice: titled by its continuation's start (the seed is the same in all three), then more."""
    words = result.text.split()
    title = ""
    while words and len(title) + len(words[0]) < TITLE_CHARS:
        title = f"{title} {words.pop(0)}".lstrip()
    if not title and words:  # one long word
        title, words = words[0][:TITLE_CHARS], words[1:]
    text = (result.seed + result.text)[-MAX_TEXT:]
    return InlineQueryResultArticle(id=str(i + 1), title=f"…{title}…" if words else f"…{title}",
                                    description=" ".join(words) or None,
                                    input_message_content=InputTextMessageContent(text))


def _outcome(task: asyncio.Task) -> tuple[str, list[Result], InlineQueryResultsButton | None]:
    """How an ended (not cancelled) task went: the log's outcome, the texts, the button to show instead."""
    try:
        return "ok", task.result(), None
    except Busy:
        return "busy", [], button(messages.INLINE_BUSY, "ocupado")
    except TimeoutError:
        return "timeout", [], button(messages.INLINE_BUSY, "ocupado")
    except Exception:
        log.exception("inline continuations failed")
        return "error", [], button(messages.INLINE_FAILED, "error")


def button(text: str, start_parameter: str) -> InlineQueryResultsButton:
    """Shown above an empty answer; tapping it opens the bot's private chat with /start <parameter>."""
    return InlineQueryResultsButton(text=text, start_parameter=start_parameter)


async def _answer(query: InlineQuery, results: list, shown: InlineQueryResultsButton | None) -> None:
    try:
        await query.answer(results, cache_time=CACHE_TIME_S, is_personal=True, button=shown)
    except TelegramError as exc:  # too late (about 10 s), or Telegram unreachable: the user typed on
        log.warning("answerInlineQuery failed: %s", describe(exc))
