"""Everything the bot writes to Telegram chats goes out through one Outbox, within the flood limits.

Telegram's rules (Bot API FAQ, "My bot is hitting limits"): about 30 messages a second across all
chats, about one a second in one chat (short bursts tolerated), 20 a minute in one group; edits count
like messages. Over a limit the answer is 429 with `retry_after`, and requests sent before that time
make the wait longer.

The outbox keeps, per chat, the replies still to deliver, in the order their commands arrived, and
one worker task decides what goes out next:
- a request goes out only when the bot, its chat and its group all have room (our pacing is a little
  stricter than Telegram's, so that a 429 is rare); after a 429 the chat (or, when several chats are
  refused at once, the whole bot) sends nothing until its `retry_after` has passed, while other chats
  go on;
- what goes first: a reply's final text, then a first post, then an intermediate edit (always the
  latest text, so edits coalesce; only with room to spare), then "typing";
- a reply that is complete within `stream_after_s` goes out as one message. A slower one is posted
  and edited as it grows, in private chats only: a group's 20 a minute are shared by all its members;
- a post is repeated only when it certainly did not go through (refused, or it never left this
  machine), so nothing is ever posted twice;
- a reply not delivered within `max_delivery_s` of its command is dropped, logged and counted;
- a reply's buttons (an inline keyboard) go on its last message with its final text, never on an
  intermediate edit; an edit that leaves reply_markup out removes a keyboard, so the final edit
  carries it. A reply to a button press answers the message pressed (reply_parameters).

Handlers never wait here: they hand their text over and return. python-telegram-bot's
AIORateLimiter sits below as a safety net for the bot-wide and group limits (see TelegramAdapter).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import re
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Awaitable, Callable

import httpx
from telegram import InlineKeyboardMarkup, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut

from bot.process import metrics
from bot.chat.replies import split as split_units
from bot.chat.replies import utf16_units
from storage import ChatKey

log = logging.getLogger(__name__)

MAX_UNITS = 4096  # Telegram's limit for one message, in UTF-16 code units
FINAL, FIRST_POST, EDIT, TYPING = range(4)  # what goes first: the lower, the sooner
TYPING_EVERY_S = 5.0  # a chat action shows for 5 s
TYPING_AFTER_S = 1.0  # no "typing" for a reply that is ready sooner
SPARE = 10  # free places a window must keep for an intermediate edit or "typing" to use one
BACKOFF_S = 0.5  # first wait after network trouble; doubles each try, up to BACKOFF_MAX_S
BACKOFF_MAX_S = 8.0
BOT_WIDE_AFTER = 2  # 429s from this many chats within a second: the whole bot is being held
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)  # never left this machine


@dataclass(frozen=True)
class Limits:
    """Our pacing: Telegram's limits, each window a little longer than Telegram's, since a request
    reaches Telegram some time after it leaves, and not always the same time after."""

    bot_per_second: int = 30
    chat_interval_s: float = 1.0
    group_per_minute: int = 20
    bot_margin_s: float = 0.05
    chat_margin_s: float = 0.05
    group_margin_s: float = 0.5


class Window:
    """At most `limit` requests in any `period` seconds, as Telegram may count them.

    A request is counted from the moment it leaves until `period` after its answer came back:
    Telegram counts it when it arrives, somewhere in between, so a late answer can never make us
    think a place is free when Telegram does not.
    """

    def __init__(self, limit: int, period: float):
        self.limit, self.period = limit, period
        self.in_flight = 0
        self.times: collections.deque[float] = collections.deque()  # answers, oldest first

    def _prune(self, now: float) -> None:
        while self.times and now - self.times[0] >= self.period:
            self.times.popleft()

    def room(self, now: float) -> int:
        self._prune(now)
        return self.limit - self.in_flight - len(self.times)

    def free_at(self, now: float) -> float:
        """When the next request may leave: `now` if there is room, infinity until an answer comes."""
        if self.room(now) > 0:
            return now
        if self.in_flight >= self.limit:
            return math.inf
        return self.times[self.in_flight + len(self.times) - self.limit] + self.period

    def next_free(self, now: float) -> float:
        """When the next counted request stops counting (infinity while none is counted yet)."""
        self._prune(now)
        return self.times[0] + self.period if self.times else math.inf

    def take(self) -> None:
        self.in_flight += 1

    def answered(self, now: float) -> None:
        self.in_flight -= 1
        self.times.append(now)


def split(text: str, limit: int = MAX_UNITS) -> list[str]:
    """A reply cut into Telegram messages of at most `limit` UTF-16 units."""
    return split_units(text, limit, utf16_units)


TOKEN = re.compile(r"\d{5,}:[A-Za-z0-9_-]{20,}")  # what a bot token looks like


def describe(exc: BaseException) -> str:
    """An error for the logs, with anything shaped like a bot token blanked."""
    return TOKEN.sub("<token>", f"{type(exc).__name__}: {exc}")


def retry_after_s(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that this becomes a timedelta
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def maybe_done(exc: TelegramError) -> bool:
    """The request went out and no answer came back: Telegram may have carried it out.

    An error answer (5xx, "Bad Gateway") means it did not, and a request that never left cannot
    have; after a read timeout or a dropped connection, posting again could post twice.
    """
    cause = exc.__cause__
    return isinstance(cause, httpx.TransportError) and not isinstance(cause, _NOT_SENT)


@dataclass(frozen=True)
class _Request:
    priority: int
    action: str  # "post", "edit", "markup" (the buttons alone) or "typing"
    part: int  # which message of the reply
    text: str
    markup: bool = False  # with the reply's buttons


Migrated = Callable[[int], Awaitable[None]]  # the chat's new id; called once per reply


class Reply:
    """One command's answer in one chat, as the outbox delivers it. The handler writes `text` (it may
    grow) and calls `finish()`; `done` resolves to the delivery's fields once it is over."""

    def __init__(self, outbox: Outbox, chat_id: int, chat: ChatKey, started: float, seq: int):
        self.outbox = outbox
        self.chat_id = chat_id
        self.chat = chat
        self.started = started
        self.seq = seq  # arrival order, across chats: older replies go first within a priority
        self.text = ""
        self.parts = [""]  # split(text): the messages it takes, worked out once per change
        self.complete = False
        self.posted: list[list] = []  # per message of the reply: [message_id, text shown]
        self.first_s: float | None = None  # when the first text became visible
        self.throttled = 0  # 429s met on the way
        self.failures = 0  # network trouble in a row, for the backoff
        self.damaged = False  # a message of it could not be edited to its final text
        self.cut = False  # its writing was cut short by a stop
        self.on_migrate: Migrated | None = None
        self.on_posted: Callable[[int], None] | None = None  # its first message's id, once Telegram took it
        self.thread_id: int | None = None  # the forum topic it answers in
        self.reply_to: int | None = None  # the message its first message answers (a button's)
        self.markup: InlineKeyboardMarkup | None = None  # buttons under the final text; set before finish()
        self.marked = False  # the last message shows them
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    def grow(self, text: str) -> None:
        if text != self.text:
            self.text, self.parts = text, split(text)
            self.outbox.wake()

    def finish(self) -> None:
        self.complete = True
        self.outbox.wake()

    def delivered(self) -> bool:
        return self.complete and len(self.posted) >= len(self.parts) and all(
            shown == part for (_, shown), part in zip(self.posted, self.parts)) and (
            self.markup is None or self.marked)

    def next_request(self, may_stream: bool) -> _Request | None:
        """What this reply needs next, or None while there is nothing to send yet."""
        parts = self.parts
        for i, part in enumerate(parts):
            settled = self.complete or i < len(parts) - 1  # this message's text is final
            buttons = self.complete and i == len(parts) - 1 and self.markup is not None
            if not part.strip():  # Telegram refuses blank messages
                return None
            if i >= len(self.posted):
                if settled:
                    return _Request(FINAL, "post", i, part, buttons)
                return _Request(FIRST_POST, "post", i, part) if may_stream else None
            if self.posted[i][1] != part:
                return _Request(FINAL if settled else EDIT, "edit", i, part, buttons)
            if buttons and not self.marked:  # the final text went out before its buttons were known
                return _Request(FINAL, "markup", i, part, True)
        return None


class _Chat:
    def __init__(self, chat_id: int, limits: Limits):
        self.chat_id = chat_id
        self.group = chat_id < 0  # groups, supergroups and channels have negative ids
        self.replies: collections.deque[Reply] = collections.deque()
        self.pace = Window(1, limits.chat_interval_s + limits.chat_margin_s)
        self.group_window = Window(limits.group_per_minute, 60.0 + limits.group_margin_s) if self.group else None
        self.hold_until = 0.0  # a 429's retry_after, or a backoff after network trouble
        self.busy = False  # a request in flight: one at a time per chat keeps the order
        self.last_edit = -math.inf
        self.typing_at = -math.inf

    def free_at(self, now: float) -> float:
        free = max(self.hold_until, self.pace.free_at(now))
        return max(free, self.group_window.free_at(now)) if self.group_window else free

    def windows(self) -> list[Window]:
        return [self.pace, self.group_window] if self.group_window else [self.pace]

    def idle(self, now: float) -> bool:
        return not self.replies and not self.busy and self.hold_until <= now and all(
            w.room(now) == w.limit for w in self.windows())


class Outbox:
    def __init__(self, bot, *, stream_after_s: float = 1.0, edit_interval_s: float = 1.0,
                 max_delivery_s: float = 120.0, limits: Limits = Limits(), clock=time.monotonic):
        self.bot = bot
        self.stream_after_s = stream_after_s
        self.edit_interval_s = edit_interval_s
        self.max_delivery_s = max_delivery_s
        self.limits = limits
        self.clock = clock
        self.outcomes: collections.Counter = collections.Counter()  # delivered, partial, ...
        self.throttled: collections.Counter = collections.Counter()  # 429s received, by scope
        self._chats: dict[int, _Chat] = {}
        self._bot_window = Window(limits.bot_per_second, 1.0 + limits.bot_margin_s)
        self._bot_hold = 0.0
        self._recent_429: collections.deque[tuple[float, int]] = collections.deque()
        self._seq = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._sending: set[asyncio.Task] = set()

    # --- the handlers' side ---------------------------------------------------------------------

    def reply(self, chat_id: int, chat: ChatKey, started: float | None = None) -> Reply:
        """A new reply for the chat, delivered after the chat's earlier ones."""
        self._seq += 1
        reply = Reply(self, chat_id, chat, self.clock() if started is None else started, self._seq)
        self._chat(chat_id).replies.append(reply)
        self.wake()
        return reply

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def pending(self) -> int:
        return sum(len(c.replies) for c in self._chats.values())

    # --- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="telegram-outbox")

    async def close(self, grace_s: float = 5.0) -> None:
        """Deliver what is queued for up to `grace_s` seconds, then drop the rest (logged)."""
        if self._task is None:
            return
        deadline = self.clock() + grace_s
        while (self.pending() or self._sending) and self.clock() < deadline:
            await asyncio.sleep(0.05)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        for chat in self._chats.values():
            while chat.replies:
                self._end(chat.replies.popleft(), "stopping")
        self._task = None

    # --- the worker -----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                wait = self._dispatch(self.clock())
            except Exception:  # a bug here must not stop every reply of the bot
                log.exception("telegram outbox: dispatch failed")
                wait = 1.0
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.005, min(wait, 1.0)))

    def _dispatch(self, now: float) -> float:
        """Send what may go now, best first; the seconds until something else may."""
        soon = math.inf
        ready = []
        for chat in list(self._chats.values()):
            if chat.busy:
                continue
            reply = self._head(chat, now)
            if reply is None:
                if chat.idle(now):
                    del self._chats[chat.chat_id]
                continue
            soon = min(soon, reply.started + self.max_delivery_s)
            may_stream = not chat.group and now - reply.started >= self.stream_after_s
            request = reply.next_request(may_stream)
            if request is None:
                if not reply.complete and not chat.group and now < reply.started + self.stream_after_s:
                    soon = min(soon, reply.started + self.stream_after_s)  # then it may stream
                request = self._typing(chat, reply, now)
                if request is None:  # else nothing changes before its text grows (a wake) or typing is due
                    soon = min(soon, self._typing_due(chat, reply, now))
                    continue
            if request.priority == EDIT and now < chat.last_edit + self.edit_interval_s:
                soon = min(soon, chat.last_edit + self.edit_interval_s)
                continue
            if (free := chat.free_at(now)) > now:
                soon = min(soon, free)
                continue
            ready.append((request.priority, reply.seq, chat, reply, request))
        ready.sort(key=lambda r: r[:2])
        for priority, _, chat, reply, request in ready:
            free = max(self._bot_hold, self._bot_window.free_at(now))
            if free > now:
                return min(soon, free) - now
            if priority >= EDIT and self._bot_window.room(now) <= SPARE:
                soon = min(soon, now + 0.1)
                continue  # keep the room for final texts and first posts
            self._send_now(chat, reply, request, now)
        return soon - now

    def _head(self, chat: _Chat, now: float) -> Reply | None:
        """The chat's oldest reply still to deliver; finished and expired ones are settled first."""
        while chat.replies:
            reply = chat.replies[0]
            if reply.delivered():
                chat.replies.popleft()
                self._end(reply, "delivered")
            elif now - reply.started > self.max_delivery_s:
                chat.replies.popleft()
                self._end(reply, "expired")
            else:
                return reply
        return None

    def _typing(self, chat: _Chat, reply: Reply, now: float) -> _Request | None:
        """"Typing" for a reply with nothing to show yet, only while the budgets have room to spare."""
        if reply.complete or reply.posted or now - reply.started < TYPING_AFTER_S or now < chat.typing_at + TYPING_EVERY_S:
            return None
        if chat.group_window and chat.group_window.room(now) <= SPARE:
            return None
        return _Request(TYPING, "typing", 0, "")

    def _typing_due(self, chat: _Chat, reply: Reply, now: float) -> float:
        """When "typing" may be wanted for this reply next (infinity: never, unless its text changes)."""
        if reply.complete or reply.posted:
            return math.inf
        due = max(reply.started + TYPING_AFTER_S, chat.typing_at + TYPING_EVERY_S)
        if due <= now and chat.group_window:  # held back for want of spare room in the group's minute
            due = chat.group_window.next_free(now)
        return due if due > now else math.inf

    def _send_now(self, chat: _Chat, reply: Reply, request: _Request, now: float) -> None:
        chat.busy = True
        for window in [self._bot_window, *chat.windows()]:
            window.take()
        if request.action == "edit":
            chat.last_edit = now
        elif request.action == "typing":
            chat.typing_at = now
        task = asyncio.create_task(self._send(chat, reply, request))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, chat: _Chat, reply: Reply, request: _Request) -> None:
        began = self.clock()
        try:
            await self._request(chat, reply, request)
        except Exception:  # never leave the chat busy
            log.exception("telegram outbox: %s failed for chat %s", request.action, reply.chat.tag)
        finally:
            now = self.clock()
            # at DEBUG, what an admin needs of each request (the libraries' own lines hold ids and text)
            log.debug("%s for chat %s: part %d, %d characters, %.0f ms", request.action, reply.chat.tag,
                      request.part, len(request.text), (now - began) * 1000)
            for window in [self._bot_window, *chat.windows()]:
                window.answered(now)
            chat.busy = False
            self.wake()

    async def _request(self, chat: _Chat, reply: Reply, request: _Request) -> None:
        bot, method = self.bot, {"post": "sendMessage", "edit": "editMessageText",
                                 "markup": "editMessageReplyMarkup", "typing": "sendChatAction"}[request.action]
        buttons = {"reply_markup": reply.markup} if request.markup else {}
        try:
            if request.action == "post":
                answering = {"reply_parameters": ReplyParameters(reply.reply_to, allow_sending_without_reply=True)
                             } if request.part == 0 and reply.reply_to is not None else {}
                message = await bot.send_message(chat.chat_id, request.text, **self._topic(reply), **buttons,
                                                 **answering)
                reply.posted.append([message.message_id, request.text])
                if request.part == 0 and reply.on_posted is not None:
                    reply.on_posted(message.message_id)
            elif request.action == "edit":
                await bot.edit_message_text(request.text, chat_id=chat.chat_id,
                                            message_id=reply.posted[request.part][0], **buttons)
                reply.posted[request.part][1] = request.text
            elif request.action == "markup":
                await bot.edit_message_reply_markup(chat_id=chat.chat_id, message_id=reply.posted[request.part][0],
                                                    **buttons)
            else:
                await bot.send_chat_action(chat.chat_id, "typing", **self._topic(reply))
                return
        except RetryAfter as exc:
            self._held(chat, reply, retry_after_s(exc))
            return
        except ChatMigrated as exc:  # an error answer: nothing was done; go on in the supergroup
            await self._migrate(chat, exc.new_chat_id)
            return
        except BadRequest as exc:
            if "message is not modified" in exc.message.lower():
                reply.posted[request.part][1] = request.text
                reply.marked = reply.marked or request.markup
            elif request.action in ("edit", "markup"):  # the message is gone (deleted by a user)
                log.warning("%s refused for chat %s: %s", method, reply.chat.tag, describe(exc))
                reply.posted[request.part][1] = request.text
                reply.marked = reply.marked or request.markup
                reply.damaged = True  # shown as far as Telegram allows: counted as partial
            elif request.action == "post":
                log.warning("%s refused for chat %s: %s", method, reply.chat.tag, describe(exc))
                self._drop(chat, reply, "refused")
            return
        except Forbidden as exc:  # blocked by the user, removed from the group: nothing more can go there
            if request.action != "typing":
                log.warning("%s failed for chat %s: %s", method, reply.chat.tag, describe(exc))
                while chat.replies:
                    self._end(chat.replies.popleft(), "refused")
            return
        except (TimedOut, NetworkError) as exc:
            if request.action == "typing":
                return
            if request.action == "post" and maybe_done(exc):
                log.warning("%s for chat %s: no answer, so it may have been posted; not posting it again "
                            "(%s)", method, reply.chat.tag, describe(exc))
                self._drop(chat, reply, "unconfirmed")
                return
            reply.failures += 1
            chat.hold_until = self.clock() + min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (reply.failures - 1))
            log.warning("%s failed for chat %s: %s", method, reply.chat.tag, describe(exc))
            return
        except TelegramError as exc:
            if request.action != "typing":
                log.warning("%s failed for chat %s: %s", method, reply.chat.tag, describe(exc))
                self._drop(chat, reply, "refused")
            return
        reply.marked = reply.marked or request.markup
        if request.action == "post" and reply.first_s is None:
            reply.first_s = self.clock() - reply.started
        reply.failures = 0

    @staticmethod
    def _topic(reply: Reply) -> dict:
        return {"message_thread_id": reply.thread_id} if reply.thread_id is not None else {}

    def _held(self, chat: _Chat, reply: Reply, seconds: float) -> None:
        """A 429: the chat waits; when several chats are refused at once, the whole bot does."""
        now = self.clock()
        reply.throttled += 1
        chat.hold_until = max(chat.hold_until, now + seconds + self.limits.chat_margin_s)
        self._recent_429.append((now, chat.chat_id))
        while self._recent_429 and now - self._recent_429[0][0] > 1.0:
            self._recent_429.popleft()
        if len({c for _, c in self._recent_429}) >= BOT_WIDE_AFTER:
            scope = "bot"
            self._bot_hold = max(self._bot_hold, now + seconds + self.limits.bot_margin_s)
        else:
            scope = "group" if chat.group else "chat"
        self.throttled[scope] += 1
        metrics.observe_throttled(scope)
        log.warning("telegram asked chat %s to wait %.0f s (%s limit)", reply.chat.tag, seconds, scope)

    async def _migrate(self, chat: _Chat, new_id: int) -> None:
        """The group became a supergroup: its replies go on there, from a fresh message."""
        if new_id == chat.chat_id:
            return
        target = self._chat(new_id)
        moved = list(chat.replies)
        chat.replies.clear()
        target.replies.extendleft(reversed(moved))
        for reply in moved:
            # the old group's messages can no longer be edited, nor answered
            reply.chat_id, reply.posted, reply.marked, reply.reply_to = new_id, [], False, None
            if reply.on_migrate is not None:
                await reply.on_migrate(new_id)

    def _drop(self, chat: _Chat, reply: Reply, why: str) -> None:
        with contextlib.suppress(ValueError):
            chat.replies.remove(reply)
        self._end(reply, why)

    def _end(self, reply: Reply, why: str) -> None:
        """Settle a reply: its outcome counted, logged when it is not a full delivery."""
        if reply.done.done():
            return
        now = self.clock()
        if why == "stopping" or reply.cut:  # the bot stopped before it was written or delivered
            outcome = "stopping"
        elif why == "delivered":
            outcome = "partial" if reply.damaged else "delivered"
        elif why == "unconfirmed":
            outcome = "unconfirmed"
        else:
            outcome = "partial" if reply.posted else "undelivered"
        if outcome != "delivered":
            log.warning("reply for chat %s %s (%s) after %.1f s", reply.chat.tag, outcome, why,
                        now - reply.started)
        self.outcomes[outcome] += 1
        fields = {"delivery": outcome, "throttled": reply.throttled}
        if reply.first_s is not None:
            fields["first_visible_ms"] = round(reply.first_s * 1000)
        if outcome == "delivered":
            fields["final_ms"] = round((now - reply.started) * 1000)
        reply.done.set_result(fields)

    def _chat(self, chat_id: int) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = _Chat(chat_id, self.limits)
        return chat
