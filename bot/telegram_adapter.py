"""The Telegram adapter: python-telegram-bot's Application over Commands.

One handler reads every new text message, parses it (`/cervantes@ThisBot ...` in groups), and calls
`Commands.run` with a `TelegramOutput`. Replies are plain text (no parse_mode: a seed cannot inject
formatting). A streamed reply shows "typing", posts its first message when the first piece arrives
and is edited in place as it grows, at most once per `edit_interval_s` per chat, with a last edit
holding the full text; past 4096 characters it goes on in a new message. Telegram errors are logged
and never raised into the bot; a message that may have been posted is never posted again. A group
that becomes a supergroup keeps its settings and continuation under the new chat id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import warnings
from datetime import timedelta
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import httpx
from telegram import BotCommand, Update
from telegram.constants import ChatAction, ChatType
from telegram.error import (BadRequest, ChatMigrated, InvalidToken, NetworkError, RetryAfter, TelegramError,
                            TimedOut)
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters

from bot.commands import ChatKey, Commands
from bot.parsing import COMMANDS, parse
from bot.replies import EditPacer, utf16_units
from bot.replies import split as split_units
from cli.config import TelegramSection
from storage import StorageError

log = logging.getLogger(__name__)

MAX_UNITS = 4096  # Telegram's limit for one message, in UTF-16 code units
TYPING_EVERY_S = 4.5  # a chat action shows for 5 s
RETRIES = 3  # more tries after a failed request (RetryAfter, network trouble)
BACKOFF_S = 0.5  # first wait after a network error; doubles each try
_TOKEN = re.compile(r"\d{5,}:[A-Za-z0-9_-]{20,}")
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)  # never left this machine


def _describe(exc: BaseException) -> str:
    """An error for the logs, with anything shaped like a bot token blanked."""
    return _TOKEN.sub("<token>", f"{type(exc).__name__}: {exc}")


class _HideTokens(logging.Filter):
    """Blanks bot tokens in the records of the loggers that print request URLs (the token is in them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _TOKEN.search(message):
            record.msg, record.args = _TOKEN.sub("<token>", message), ()
        return True


_HIDE_TOKENS = _HideTokens()
for _name in ("httpx", "telegram.Bot", "telegram.ext.ExtBot"):  # PTB logs its API URL at DEBUG
    logging.getLogger(_name).addFilter(_HIDE_TOKENS)


def split(text: str, limit: int = MAX_UNITS) -> list[str]:
    """A reply cut into Telegram messages of at most `limit` UTF-16 units."""
    return split_units(text, limit, utf16_units)


def _maybe_done(exc: TelegramError) -> bool:
    """The request went out and no answer came back: Telegram may have carried it out.

    An error answer (5xx, "Bad Gateway") means it did not, and a request that never left cannot
    have; after a read timeout or a dropped connection, posting again could post twice.
    """
    cause = exc.__cause__
    return isinstance(cause, httpx.TransportError) and not isinstance(cause, _NOT_SENT)


MoveChat = Callable[[ChatKey, ChatKey], Awaitable[None]]  # (old, new): the chat's data follows it


class TelegramOutput:
    """One command's reply in one chat: the `Output` that Commands writes to."""

    def __init__(self, bot, chat_id: int, chat: ChatKey, pacer: EditPacer, move_chat: MoveChat | None = None):
        self.bot = bot
        self.chat_id = chat_id
        self.chat = chat
        self.pacer = pacer
        self.move_chat = move_chat
        self._message_id: int | None = None  # the message being written
        self._message_chat: int | None = None  # the chat it is in
        self._shown = ""  # what it says now
        self._offset = 0  # characters of the reply already in earlier, finished messages
        self._gave_up = False  # a post failed: it may exist after all, so post nothing more
        self._streaming = False
        self._moved_from: ChatKey | None = None  # the chat's key before it became a supergroup

    async def send(self, text: str) -> None:
        for part in split(text):
            await self._post(part)

    async def stream(self, pieces: AsyncIterator[str]) -> None:
        self._streaming = True
        typing = asyncio.create_task(self._typing())
        try:
            text = ""
            async for piece in pieces:  # read to the end even when Telegram fails: the state gets saved
                text += piece
                await self._show(text, final=False)
            await self._show(text, final=True)
        finally:
            self._streaming = False
            typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await typing
            if self._moved_from is not None:  # now that the continuation is saved under the old key
                old, self._moved_from = self._moved_from, None
                await self._move(old)

    async def _typing(self) -> None:
        while True:
            await self._call("sendChatAction", lambda: self.bot.send_chat_action(self.chat_id, ChatAction.TYPING))
            await asyncio.sleep(TYPING_EVERY_S)

    async def _show(self, text: str, final: bool) -> None:
        *finished, current = split(text[self._offset:])
        for part in finished:  # the current message is full: settle it, go on in a new one
            await self._edit(part, final=True)
            self._offset += len(part)
            self._message_id, self._shown = None, ""
        await self._edit(current, final)

    async def _edit(self, part: str, final: bool) -> None:
        if self._message_id is None or self._message_chat != self.chat_id:  # none yet, or left in the old group
            await self._post(part)
            if self._message_id is not None:
                self.pacer.hold(self.chat_id, self.pacer.interval)  # no edit right on the heels of a post
            return
        if part == self._shown or not part.strip():
            return
        if final:
            await self.pacer.take(self.chat_id)
        elif not self.pacer.take_if_free(self.chat_id):
            return  # a later edit will show it
        edited = await self._call("editMessageText", lambda: self.bot.edit_message_text(
            part, chat_id=self._message_chat, message_id=self._message_id), patient=final, follow=False)
        if edited:
            self._shown = part
        elif self._message_chat != self.chat_id:  # the group became a supergroup: go on there
            await self._edit(part, final)

    async def _post(self, part: str) -> None:
        if self._gave_up or not part.strip():  # Telegram refuses blank messages: wait for more
            return
        message = await self._call("sendMessage", lambda: self.bot.send_message(self.chat_id, part),
                                   idempotent=False)
        if message:
            self._message_id, self._message_chat, self._shown = message.message_id, message.chat_id, part
        else:
            self._gave_up = True

    async def _call(self, method: str, request, idempotent: bool = True, patient: bool = True,
                    follow: bool = True):
        """The request's result; True for "message is not modified"; None when it failed for good.

        RetryAfter is waited out (an impatient call skips instead and leaves the wait to the pacer);
        network trouble is retried with backoff, unless the request is a post that may have been done.
        ChatMigrated moves the reply to the supergroup, where a request that can `follow` is sent once more.
        """
        followed = False
        for attempt in range(RETRIES + 1):
            last = attempt == RETRIES
            try:
                return await request()
            except RetryAfter as exc:
                delay = _seconds(exc)
                self.pacer.hold(self.chat_id, delay)
                if last or not patient:
                    log.warning("%s for chat %s: rate limited for %.0f s", method, self.chat.tag, delay)
                    return None
                await asyncio.sleep(delay)
            except BadRequest as exc:
                if "message is not modified" in exc.message.lower():
                    return True
                log.warning("%s refused for chat %s: %s", method, self.chat.tag, _describe(exc))
                return None
            except (TimedOut, NetworkError) as exc:
                if last or (not idempotent and _maybe_done(exc)):
                    log.warning("%s failed for chat %s: %s", method, self.chat.tag, _describe(exc))
                    return None
                await asyncio.sleep(BACKOFF_S * 2**attempt)
            except ChatMigrated as exc:  # an error answer: the request was not carried out
                if not followed:
                    followed = True
                    await self._follow(exc.new_chat_id)
                    if follow and not last:
                        continue
                if follow:
                    log.warning("%s failed for chat %s: the chat moved to a supergroup", method, self.chat.tag)
                return None
            except TelegramError as exc:  # Forbidden (blocked by the user), ...
                log.warning("%s failed for chat %s: %s", method, self.chat.tag, _describe(exc))
                return None
        return None

    async def _follow(self, new_chat_id: int) -> None:
        """The group became a supergroup: write there from now on, and take the chat's data along."""
        if new_chat_id == self.chat_id:  # the other request in flight (typing, a post) got there first
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


def _seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that this becomes a timedelta
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramAdapter:
    def __init__(self, commands: Commands, config: TelegramSection, token: str):
        if config.mode not in ("polling", "webhook"):
            raise ValueError(f'[telegram] mode must be "polling" or "webhook", not {config.mode!r}')
        if config.mode == "webhook" and not config.webhook_url:
            raise ValueError('[telegram] mode = "webhook" needs webhook_url')
        self.commands = commands
        self.config = config
        self.pacer = EditPacer(config.edit_interval_s)
        # concurrent_updates: replies to many chats are generated together, in one batch
        self.application: Application = (
            ApplicationBuilder().token(token).base_url(config.base_url).concurrent_updates(True).build())
        self.application.add_handler(MessageHandler(filters.TEXT & filters.UpdateType.MESSAGE, self._on_message))
        self.application.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, self._on_migrate))
        self.application.add_error_handler(self._on_error)

    async def start(self) -> None:
        """Log in (getMe), publish the command menu, then receive updates by polling or webhook."""
        app = self.application
        try:
            await app.initialize()
        except InvalidToken:
            raise RuntimeError("Telegram rejected the bot token (TELEGRAM_TOKEN)") from None
        try:
            await self._publish_commands()
            if self.config.mode == "webhook":
                await app.updater.start_webhook(
                    listen=self.config.listen, port=self.config.port,
                    url_path=urlsplit(self.config.webhook_url).path.lstrip("/"),
                    webhook_url=self.config.webhook_url, allowed_updates=[Update.MESSAGE],
                    secret_token=os.environ.get("TELEGRAM_WEBHOOK_SECRET") or None)
            else:
                await app.updater.start_polling(allowed_updates=[Update.MESSAGE])
            await app.start()
        except BaseException:
            try:
                await self.stop()
            except Exception as exc:  # the first error is the one to report
                log.warning("telegram adapter did not stop cleanly: %s", _describe(exc))
            raise
        log.info("telegram bot @%s receiving updates by %s", app.bot.username, self.config.mode)

    async def stop(self) -> None:
        """Stop receiving, let the replies in flight finish, close the connections. Safe to repeat."""
        app = self.application
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        await app.shutdown()

    async def _publish_commands(self) -> None:
        menu = [BotCommand(name, _summary(getattr(self.commands, name).__doc__))
                for name in COMMANDS if getattr(getattr(self.commands, name, None), "__doc__", None)]
        try:
            await self.application.bot.set_my_commands(menu)
        except TelegramError as exc:  # the bot works without its menu
            log.warning("setMyCommands failed: %s", _describe(exc))

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        command = parse(message.text, context.bot.username)
        if command is None:
            return
        if command.name not in COMMANDS and message.chat.type != ChatType.PRIVATE:
            return  # in a group, a command we do not know is likely another bot's
        chat = ChatKey("telegram", str(message.chat_id))
        await self.commands.run(chat, command, TelegramOutput(context.bot, message.chat_id, chat, self.pacer,
                                                              self.move_chat))

    async def _on_migrate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A group became a supergroup; Telegram says so in both chats (the second move finds nothing)."""
        message = update.message
        if message.migrate_to_chat_id:  # said in the old group
            old, new = message.chat_id, message.migrate_to_chat_id
        else:  # said in the new supergroup
            old, new = message.migrate_from_chat_id, message.chat_id
        await self.move_chat(ChatKey("telegram", str(old)), ChatKey("telegram", str(new)))

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
            log.warning("telegram: %s", _describe(error))
        else:
            log.error("telegram handler failed: %s", _describe(error), exc_info=error)


def _summary(docstring: str) -> str:
    """A handler's docstring as a menu entry: its first line, within Telegram's 256 characters."""
    return docstring.strip().splitlines()[0].strip()[:256]
