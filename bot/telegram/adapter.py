"""The Telegram adapter: python-telegram-bot's Application over Commands.

One handler reads every new text message, parses it (`/cervantes@ThisBot ...` in groups), and calls
`Commands.run` with a `TelegramOutput`. The output hands the reply to the Outbox
(bot/telegram/outbox.py), which delivers it within Telegram's flood limits: the handler never waits
on Telegram. Replies are plain text (no parse_mode: a seed cannot inject formatting). A group that
becomes a supergroup keeps its settings and continuation under the new chat id.

Every generated reply carries the buttons of bot.chat.buttons (an inline keyboard) with its final text.
A press is answered at once (answerCallbackQuery, so the button stops spinning) and runs as the
command it stands for; its reply answers the message pressed. `/continuar` sent as a reply to one
of the bot's texts continues that text: its buttons name it.

In a group, each command carries its member (bot.chat.members): limited across every topic of the
group, whose topics share its quota, and an admin if Telegram lists them as one (bot/telegram/admins.py).

Every command and button press is stored in the inbox (bot.chat.inbox) before Telegram is told it
was received (bot/telegram/receiving.py), runs from there, and is marked done once its reply is
delivered; at start, before polling, the ones a crash (or the process a standby takes over from)
left run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

from telegram import (BotCommand, BotCommandScopeAllChatAdministrators, BotCommandScopeAllGroupChats,
                      InlineKeyboardButton, InlineKeyboardMarkup, Message, Update)
from telegram.constants import ChatType
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (AIORateLimiter, Application, ApplicationBuilder, CallbackQueryHandler,
                          ChatMemberHandler, ContextTypes, MessageHandler, filters)
from telegram.request import HTTPXRequest

from bot.chat import buttons, messages
from bot.chat.commands import ChatKey, Commands, Written, record
from bot.chat.inbox import Entry, Inbox
from bot.chat.members import Member
from bot.chat.parsing import COMMANDS, Command, parse
from bot.telegram.admins import Admins
from bot.telegram.inline import InlineMode
from bot.telegram.outbox import TOKEN, Outbox, Reply, describe
from bot.telegram.receiving import StoringQueue
from config import TelegramSection
from storage import StorageError

log = logging.getLogger(__name__)

CONNECTED_WITHIN_S = 45.0  # a long poll lasts 10 s: no good answer for this long is not connected
CONFLICT_LIMIT_S = 60.0  # another instance polling this long (409): this one gives up
STOP_BUDGET_S = 6.5  # a stop takes at most this long: serve gives the adapters 7 s (docker stop allows 10 s)
STOP_GRACE_S = 3.0  # of which replies still queued get this long to go out
SHUTDOWN_S = 0.5  # and closing the connections this long
# What Telegram delivers to the bot: nothing else reaches it, in polling and in webhook mode alike.
# chat_member (a member promoted or demoted; sent to bots that are admins) and my_chat_member (the
# bot's own status) drop the chat's list of admins (bot/telegram/admins.py).
UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.INLINE_QUERY, Update.CHAT_MEMBER, Update.MY_CHAT_MEMBER]
# The command menus: writing for everyone, settings for private chats and for groups' admins
WRITING = ("cervantes", "continuar", "ayuda")
SETTINGS = ("temperatura", "longitud", "olvidar")

class _HideTokens(logging.Filter):
    """Blanks bot tokens in the records of the loggers that print request URLs (the token is in them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if TOKEN.search(message):
            record.msg, record.args = TOKEN.sub("<token>", message), ()
        return True


_HIDE_TOKENS = _HideTokens()
for _name in ("httpx", "telegram.Bot", "telegram.ext.ExtBot"):  # PTB logs its API URL at DEBUG
    logging.getLogger(_name).addFilter(_HIDE_TOKENS)


MoveChat = Callable[[ChatKey, ChatKey], Awaitable[None]]  # (old, new): the chat's data follows it


class TelegramOutput:
    """One command's reply in one chat: the `Output` that Commands writes to. It hands the text to
    the outbox and returns; `delivery` then resolves to how the delivery went."""

    def __init__(self, outbox: Outbox, chat_id: int, chat: ChatKey, move_chat: MoveChat | None = None,
                 started: float | None = None, thread_id: int | None = None, reply_to: int | None = None,
                 begun: int | None = None, on_begun: Callable[[int], None] | None = None):
        self.outbox = outbox
        self.chat_id = chat_id
        self.thread_id = thread_id  # a forum topic: the reply goes there
        self.reply_to = reply_to  # the message the reply answers (the one whose button was pressed)
        self.begun = begun  # a message a killed process began this reply in: it is finished there
        self.on_begun = on_begun  # told the first message's id when a reply shows before it is complete
        self.chat = chat
        self.move_chat = move_chat
        self.started = time.monotonic() if started is None else started
        self.delivery = None  # an asyncio.Future of the delivery's log fields, once a reply is handed over
        self._replies: list[Reply] = []
        self._streaming = False
        self._moved_from: ChatKey | None = None  # the chat's key before it became a supergroup

    async def send(self, text: str) -> None:
        reply = self._reply()
        reply.grow(text)
        reply.finish()

    async def stream(self, pieces: Written | AsyncIterator[str]) -> None:
        reply = self._reply()
        self._streaming = True
        text = ""
        try:
            async for piece in pieces:  # read to the end even when Telegram fails: the state gets saved
                text += piece
                reply.grow(text)
        except asyncio.CancelledError:  # cut by a stop: whatever shows of it, it is counted as stopping
            reply.cut = True
            raise
        finally:
            if not text.strip():  # Telegram refuses a blank message: show that nothing came
                reply.grow(text + "…")
            reply_id = getattr(pieces, "reply_id", None)
            if reply_id is not None:
                reply.markup = keyboard(reply_id)
            reply.finish()
            self._streaming = False
            if self._moved_from is not None:  # now that the continuation is saved under the old key
                old, self._moved_from = self._moved_from, None
                await self._move(old)

    def _reply(self) -> Reply:
        reply = self.outbox.reply(self.chat_id, self.chat, self.started)
        reply.on_migrate = self._follow
        reply.thread_id = self.thread_id
        reply.reply_to = self.reply_to
        if self.begun is not None:  # its text is unknown here: the outbox edits it to the reply's
            reply.posted = [[self.begun, None]]
        if self.on_begun is not None:
            reply.on_posted = lambda message_id: None if reply.complete else self.on_begun(message_id)
        self.delivery = reply.done
        self._replies.append(reply)
        return reply

    @property
    def shown(self) -> bool:
        """Whether any message of the reply is in the chat (for the inbox, at a stop)."""
        return any(reply.posted for reply in self._replies)

    async def _follow(self, new_chat_id: int) -> None:
        """The group became a supergroup: write there from now on, and take the chat's data along."""
        if new_chat_id == self.chat_id:
            return
        old = self.chat
        self.chat_id, self.chat = new_chat_id, ChatKey(old.platform, str(new_chat_id))
        log.info("chat %s became supergroup %s: the reply goes on there", old.tag, self.chat.tag)
        if self._streaming:  # the reply's continuation is saved under the old key when it ends
            self._moved_from = self._moved_from or old
        else:
            await self._move(old)

    async def _move(self, old: ChatKey) -> None:
        if self.move_chat is not None:
            await self.move_chat(old, self.chat)


class _PollingRequest(HTTPXRequest):
    """The getUpdates connection, telling the adapter how each answer went (its HTTP status)."""

    def __init__(self, on_answer, **kwargs):
        super().__init__(**kwargs)
        self._on_answer = on_answer

    async def do_request(self, *args, **kwargs):
        code, payload = await super().do_request(*args, **kwargs)
        self._on_answer(code)
        return code, payload


class TelegramAdapter:
    """`await start()`, `await stop()`. For health: `connected`, `last_ok`, and `failed` (set when
    the bot cannot go on: its token was revoked, or another instance keeps polling with it)."""

    def __init__(self, commands: Commands, config: TelegramSection, token: str, inbox: Inbox | None = None):
        if config.mode not in ("polling", "webhook"):
            raise ValueError(f'[telegram] mode must be "polling" or "webhook", not {config.mode!r}')
        if config.mode == "webhook" and not config.webhook_url:
            raise ValueError('[telegram] mode = "webhook" needs webhook_url')
        self.commands = commands
        self.config = config
        # every command is stored in the inbox before Telegram is told it was received (receiving.py)
        self.inbox = inbox or Inbox(commands, None, config.max_delivery_s)
        self._received: dict[int, Entry] = {}  # update_id -> its command, stored, for its handler
        # concurrent_updates: replies to many chats are generated together, in one batch.
        # AIORateLimiter (max_retries=0: a 429 is the outbox's to handle, never slept on inside a
        # request) holds every chat request to the bot-wide and group limits, a safety net under the outbox.
        self.last_ok: float | None = None  # time.time() of the last good getUpdates (or webhook update)
        self._conflict_since: float | None = None
        self.failed: asyncio.Future = asyncio.get_event_loop().create_future()
        self.application: Application = (
            ApplicationBuilder().token(token).base_url(config.base_url).concurrent_updates(True)
            .update_queue(StoringQueue(self._receive))
            .get_updates_request(_PollingRequest(self._polled, connection_pool_size=1))
            .rate_limiter(AIORateLimiter(max_retries=0)).build())
        self.outbox = Outbox(self.application.bot, stream_after_s=config.stream_after_s,
                             edit_interval_s=config.edit_interval_s, max_delivery_s=config.max_delivery_s)
        self.application.add_handler(MessageHandler(filters.TEXT & filters.UpdateType.MESSAGE, self._on_message))
        self.application.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, self._on_migrate))
        self.application.add_handler(CallbackQueryHandler(self._on_press))
        self.admins = Admins(self.application.bot)
        self.application.add_handler(ChatMemberHandler(self._on_member, ChatMemberHandler.ANY_CHAT_MEMBER))
        self.double_taps = buttons.DoubleTaps()
        self._handling: set[asyncio.Task] = set()  # commands being answered
        self._stopping = False
        self.application.add_handler(InlineMode(commands.service, commands.chat, config).handler())
        self.application.add_error_handler(self._on_error)

    @property
    def connected(self) -> bool:
        """Receiving now: polling, a good getUpdates within CONNECTED_WITHIN_S; webhook, the server up."""
        updater = self.application.updater
        if self.failed.done() or updater is None or not updater.running:
            return False
        if self.config.mode == "webhook":
            return True
        return self.last_ok is not None and time.time() - self.last_ok < CONNECTED_WITHIN_S

    def _polled(self, code: int) -> None:
        now = time.time()
        if code == 200:
            self.last_ok, self._conflict_since = now, None
        elif code == 401 and not self.failed.done():
            self.failed.set_exception(RuntimeError(
                "Telegram refuses the bot token (401): it was revoked or changed; set TELEGRAM_TOKEN anew"))
        elif code == 409:
            self._conflict_since = self._conflict_since or now
            log.error("another program is receiving this bot's updates (409 Conflict): only one may")
            if now - self._conflict_since > CONFLICT_LIMIT_S and not self.failed.done():
                self.failed.set_exception(RuntimeError(
                    "another instance of this bot keeps receiving its updates (409 Conflict): stop it"))

    async def start(self) -> None:
        """Log in (getMe), publish the command menu, then receive updates by polling or webhook."""
        app = self.application
        try:
            await app.initialize()
        except InvalidToken:
            raise RuntimeError("Telegram rejected the bot token (TELEGRAM_TOKEN)") from None
        try:
            await self._publish_commands()
            await self.inbox.replay("telegram", self._handle)  # before any new command
            if self.config.mode == "webhook":
                await app.updater.start_webhook(
                    listen=self.config.listen, port=self.config.port,
                    url_path=urlsplit(self.config.webhook_url).path.lstrip("/"),
                    webhook_url=self.config.webhook_url, allowed_updates=UPDATES,
                    secret_token=os.environ.get("TELEGRAM_WEBHOOK_SECRET") or None)
            else:
                await app.updater.start_polling(allowed_updates=UPDATES)
            await app.start()
            self.outbox.start()
            self.last_ok = time.time()  # Telegram just answered getMe and the start-up calls
        except BaseException:
            try:
                await self.stop()
            except Exception as exc:  # the first error is the one to report
                log.warning("telegram adapter did not stop cleanly: %s", describe(exc))
            raise
        log.info("telegram bot @%s receiving updates by %s", app.bot.username, self.config.mode)

    async def stop(self, budget_s: float = STOP_BUDGET_S) -> None:
        """Stop receiving, let the replies in flight finish and go out, close the connections, all
        within `budget_s`. Safe to repeat. A command still being written when its share is over is
        cut there; what the outbox cannot deliver in STOP_GRACE_S is counted as `stopping`."""
        deadline = time.monotonic() + budget_s

        def left(reserve: float = 0.0) -> float:
            return max(0.0, deadline - reserve - time.monotonic())

        app, self._stopping = self.application, True
        self.inbox.stopping()  # a reply that goes out in nothing from now on is the next process's
        with contextlib.suppress(TelegramError, asyncio.TimeoutError):  # polling may have ended in an error
            if app.updater is not None and app.updater.running:
                await asyncio.wait_for(app.updater.stop(), left(STOP_GRACE_S + SHUTDOWN_S))
        if app.running:  # app.stop() waits for the handlers in flight: their replies go to the outbox
            stopping = asyncio.ensure_future(app.stop())
            await asyncio.wait({stopping}, timeout=left(STOP_GRACE_S + SHUTDOWN_S))
            for task in self._handling:  # still writing: cut, and counted as stopping (_handle)
                task.cancel()
            await asyncio.wait({stopping}, timeout=max(0.1, left(STOP_GRACE_S + SHUTDOWN_S)))
            stopping.cancel()
        await self.outbox.close(grace_s=min(STOP_GRACE_S, left(SHUTDOWN_S)))
        with contextlib.suppress(asyncio.TimeoutError):  # the request lines of what the outbox settled
            await asyncio.wait_for(self.commands.drain(), max(0.1, left(SHUTDOWN_S)))
        await self.inbox.drain(timeout_s=max(0.1, left(SHUTDOWN_S)))  # the done marks of what went out
        try:
            await asyncio.wait_for(app.shutdown(), max(0.1, left()))
        except (TelegramError, RuntimeError, asyncio.TimeoutError) as exc:  # an updater that would not stop
            log.warning("telegram adapter did not shut down cleanly: %s", describe(exc))

    async def halt(self) -> None:
        """Stop sending at once (this process lost its leadership: bot/process/leader.py): what is
        queued or in flight is dropped, then the adapter stops. Dropped, those commands stay in the
        inbox, for the process that takes over."""
        self.inbox.stopping()
        await self.outbox.close(grace_s=0)
        await self.stop()

    async def _publish_commands(self) -> None:
        """Private chats: every command but /ajustes; groups: the writing ones; groups' admins: all."""
        def menu(names):
            return [BotCommand(name, _summary(getattr(self.commands, name).__doc__)) for name in COMMANDS
                    if name in names]

        for names, scope in ((WRITING + SETTINGS, None), (WRITING, BotCommandScopeAllGroupChats()),
                             (WRITING + SETTINGS + ("ajustes",), BotCommandScopeAllChatAdministrators())):
            try:
                await self.application.bot.set_my_commands(menu(names), scope=scope)
            except TelegramError as exc:  # the bot works without its menu
                log.warning("setMyCommands failed: %s", describe(exc))

    async def _receive(self, update: Update) -> bool:
        """The command an update carries, stored in the inbox (StoringQueue calls it before Telegram
        learns the update was received); False when Telegram sent it before and it is stored."""
        try:
            entry = self._entry(update)
        except Exception:  # never let one odd update stop the polling: it goes on unstored
            log.exception("telegram update %s not understood", update.update_id)
            return True
        if entry is None:
            return True
        (stored,) = await self.inbox.receive([entry])
        if stored is None:
            return False
        self._received[update.update_id] = stored
        return True

    def _entry(self, update: Update) -> Entry | None:
        """A text command (`/cervantes@ThisBot ...` in groups) or a button press, as the inbox keeps
        it: where to answer, and who sent it in a group (an anonymous admin writes as the group
        itself, from GroupAnonymousBot)."""
        bot = self.application.bot
        anonymous = False
        if (query := update.callback_query) is not None:  # a button under one of our texts
            command, message = buttons.command(query.data), query.message
            if command is None or not isinstance(message, Message):  # not ours, or a message too old to see
                return None
            user = query.from_user
            reply_to = message.message_id
        else:
            message = update.message
            if message is None or message.text is None:
                return None
            command = parse(message.text, bot.username)
            if command is None:
                return None
            if command.name not in COMMANDS and message.chat.type != ChatType.PRIVATE:
                return None  # in a group, a command we do not know is likely another bot's
            anonymous = message.sender_chat is not None and message.sender_chat.id == message.chat_id
            user = message.from_user
            answered = message.reply_to_message
            pressed = _pressed(answered, bot.id) if command.name in buttons.LABELS else None
            if pressed is not None and not command.argument:  # /continuar as a reply to one of our texts
                command = Command(command.name, pressed)
            reply_to = answered.message_id if pressed is not None else None
        chat, thread = _chat_of(message)
        member = None
        if message.chat.type != ChatType.PRIVATE:
            member = str(user.id if user is not None else message.sender_chat.id if message.sender_chat else 0)
        answer = {"chat_id": message.chat_id, "thread_id": thread, "reply_to": reply_to}
        if anonymous:
            answer["anonymous"] = True
        return Entry(chat, command.name, command.argument, member, time.time(), answer,
                     update_key=f"{bot.id}:{update.update_id}")

    def _output(self, entry: Entry) -> TelegramOutput:
        """Where the command's reply goes; its delivery time counts from when it was received."""
        answer = entry.answer
        started = time.monotonic() - max(0.0, time.time() - entry.received_at)
        return TelegramOutput(self.outbox, answer["chat_id"], entry.chat, self.move_chat, started=started,
                              thread_id=answer.get("thread_id"), reply_to=answer.get("reply_to"),
                              begun=answer.get("begun"),
                              on_begun=lambda m: self.inbox.answering(entry, {**answer, "begun": m}))

    def _member(self, entry: Entry) -> Member | None:
        """Who wrote or pressed in a group (None in a private chat): limited across every topic of
        the group, which share its quota too, and an admin if Telegram lists them as one."""
        if entry.member is None:
            return None
        chat_id, user_id, anonymous = entry.answer["chat_id"], int(entry.member), entry.answer.get("anonymous", False)

        async def is_admin() -> bool:
            return anonymous or await self.admins.is_admin(chat_id, user_id)

        return Member(entry.member, ("telegram", chat_id), is_admin, room=ChatKey("telegram", str(chat_id)))

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if self.config.mode == "webhook":
            self.last_ok = time.time()  # a delivery arrived
        entry = self._received.pop(update.update_id, None)
        if entry is not None:
            await self._handle(entry)

    async def _on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A button under one of our texts: answered at once, then run as its command."""
        query = update.callback_query
        entry = self._received.pop(update.update_id, None)
        if entry is None:  # not ours, or a message too old to see
            await self._answer(query)
            return
        message = query.message
        if not self.double_taps.first(query.data, message.chat_id, message.message_id):
            await self._answer(query, messages.PRESSED_TWICE)
            self.inbox.refused(entry)
            return
        await self._answer(query)
        await self._handle(entry)

    async def _on_member(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Someone's status changed in a chat (a promotion, a demotion, the bot's own): its admins
        are asked again at the next change of settings there."""
        self.admins.forget(update.effective_chat.id)

    async def _handle(self, entry: Entry) -> None:
        """Run a stored command, just received or left by a crash; one cut by a stop is logged and
        counted as `stopping` (and stays in the inbox if nothing of it went out)."""
        task = asyncio.current_task()
        self._handling.add(task)
        try:
            await self.inbox.run(entry, self._output(entry), self._member(entry))
        except asyncio.CancelledError:
            if self._stopping:
                chat = entry.chat
                record({"platform": chat.platform, "chat": chat.tag, "command": entry.command, "outcome": "stopping"})
            raise
        finally:
            self._handling.discard(task)

    async def _on_migrate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A group became a supergroup; Telegram says so in both chats (the second move finds nothing)."""
        message = update.message
        if message.migrate_to_chat_id:  # said in the old group
            old, new = message.chat_id, message.migrate_to_chat_id
        else:  # said in the new supergroup
            old, new = message.migrate_from_chat_id, message.chat_id
        old_key = ChatKey("telegram", str(old))
        async with self.commands.turn(old_key):  # a reply being written there saves first, then moves
            await self.move_chat(old_key, ChatKey("telegram", str(new)))

    async def move_chat(self, old: ChatKey, new: ChatKey) -> None:
        """The chat's settings and continuation follow it to its new id; a failure is logged."""
        try:
            moved = await self.commands.storage.move_chat(old, new)
        except StorageError as exc:
            log.warning("could not move chat %s to %s: %s", old.tag, new.tag, exc)
            return
        if moved:
            log.info("chat %s moved to supergroup %s with its settings", old.tag, new.tag)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        if isinstance(error, TelegramError):
            log.warning("telegram: %s", describe(error))
        else:
            log.error("telegram handler failed: %s", describe(error), exc_info=error)


    @staticmethod
    async def _answer(query, text: str | None = None) -> None:
        """answerCallbackQuery, so the button stops spinning; not through the outbox: it writes
        nothing in the chat. A failure (too late, Telegram unreachable) is logged."""
        try:
            await query.answer(text)
        except TelegramError as exc:
            log.warning("answerCallbackQuery failed: %s", describe(exc))


def keyboard(reply_id: int) -> InlineKeyboardMarkup:
    """The buttons under a reply, in one row."""
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data)
                                  for label, data in buttons.buttons(reply_id)]])


def _chat_of(message: Message) -> tuple[ChatKey, int | None]:
    """The chat a message is in, and its forum topic: a topic is a chat of its own (its settings,
    its continuation, the replies in it)."""
    thread = message.message_thread_id if message.is_topic_message else None
    return ChatKey("telegram", f"{message.chat_id}:{thread}" if thread else str(message.chat_id)), thread


def _pressed(message: Message | None, bot_id: int) -> str | None:
    """The reply id a message of ours names in its buttons; None for any other message."""
    if message is None or message.from_user is None or message.from_user.id != bot_id:
        return None
    markup = message.reply_markup
    for row in markup.inline_keyboard if markup else ():
        for button in row:
            if (command := buttons.command(button.callback_data)) is not None:
                return command.argument
    return None


def _summary(docstring: str) -> str:
    """A handler's docstring as a menu entry: its first line, within Telegram's 256 characters."""
    return docstring.strip().splitlines()[0].strip()[:256]
