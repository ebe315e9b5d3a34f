"""The bot's commands, written once for every platform.

An adapter turns a message into a `Command` (bot.chat.parsing), calls `Commands.run(chat, command, out)`
and implements `Output`: how to send a reply, and how to show a reply that is still being written.

Every generated reply is stored with an id (storage.StoredReply); the adapter shows the buttons of
bot.chat.buttons under it, and a press comes back as `/continuar <id>` or `/otra <id>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import AsyncIterator, Protocol

from bot.chat import members, messages
from bot.process import metrics
from bot.chat.parsing import Command, format_number, list_characters, parse_int, parse_number
from bot.chat.members import AdminsUnknown, Member
from bot.chat.quota import Quota
from config import ChatSection
from service.generation import Busy, GenerationService
from storage import ChatKey, Continuation, Settings, Storage, StorageError

log = logging.getLogger("cervantes.requests")

TAIL_CHARS = 500  # text kept per chat to re-prime a new model after a retraining


class Written:
    """A generated reply as it is written: its pieces, then `reply_id` (set once the reply is
    stored, before the last piece; None if it could not be) names it in its buttons."""

    def __init__(self):
        self.pieces: AsyncIterator[str] | None = None
        self.reply_id: int | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self.pieces


class Output(Protocol):
    async def send(self, text: str) -> None:
        """Send a complete reply."""

    async def stream(self, pieces: Written) -> None:
        """Show a reply that grows as pieces arrive; the reply is all pieces joined. Once they end,
        `pieces.reply_id`, when set, gets the buttons (bot.chat.buttons) under the final text."""


class _Unusable(Exception):
    """A stored state that the service refuses (wrong size, a character the model does not know)."""


class _Turn:
    """A chat's commands, one at a time: the lock, and how many hold it or wait for it."""

    def __init__(self):
        self.lock = asyncio.Lock()
        self.users = 0


class Commands:
    def __init__(self, service: GenerationService, storage: Storage, chat: ChatSection, model_id: str):
        self.service = service
        self.storage = storage
        self.chat = chat
        self.model_id = model_id
        self.quota = Quota(chat.rate_limit_per_minute, chat.user_rate_limit_per_minute)
        self._order: dict[ChatKey, _Turn] = {}  # one command at a time per chat, in arrival order
        self._records: set[asyncio.Task] = set()  # log lines waiting for their reply's delivery
        self._handlers = {
            "cervantes": self.cervantes, "continuar": self.continuar, "otra": self.otra,
            "temperatura": self.temperatura,
            "longitud": self.longitud, "olvidar": self.olvidar, "ajustes": self.ajustes,
            "ayuda": self.ayuda, "start": self.ayuda,
        }

    async def run(self, chat: ChatKey, command: Command, out: Output, member: Member | None = None) -> None:
        """Run one command. `member` is who wrote it in a chat of many (None in a private chat):
        their share of the quota, and whether they may change the chat's settings (bot.chat.members).

        Commands of one chat run one at a time, in the order they arrived (asyncio's locks wake their
        waiters first come, first served); other chats go on meanwhile.
        """
        room = member.room if member is not None and member.room is not None else chat
        verdict = self.quota.check(room, None if member is None else (member.group, member.user))
        if verdict.wait_s:
            record({"platform": chat.platform, "chat": chat.tag, "command": command.name,
                     "outcome": "limited" if verdict.notify else "limited_silent"})
            if verdict.notify:
                await out.send(messages.RATE_LIMITED.format(seconds=max(1, math.ceil(verdict.wait_s))))
            return
        async with self.turn(chat):
            handler = self._handlers.get(command.name)
            if handler is None:
                await out.send(messages.UNKNOWN_COMMAND)
                return
            if command.name == "ajustes" and member is None:
                await out.send(messages.AJUSTES_PRIVATE)
                return
            if members.changes_settings(command) and not await self._may_change(chat, command, out, member):
                return
            await handler(chat, command.argument, out)

    async def _may_change(self, chat: ChatKey, command: Command, out: Output, member: Member | None) -> bool:
        """Whether `member` may change the chat's settings; when not, they have been told why."""
        if member is not None and not member.installed:
            refusal = messages.NOT_INSTALLED
        else:
            try:
                if await members.may_change(member, command, await self._who_changes(chat)):
                    return True
                refusal = messages.ONLY_ADMINS
            except AdminsUnknown as exc:
                logging.getLogger(__name__).warning("admins of chat %s unknown: %s", chat.tag, exc)
                refusal = messages.ADMINS_UNKNOWN
        record({"platform": chat.platform, "chat": chat.tag, "command": command.name, "outcome": "not_admin"})
        await out.send(refusal)
        return False

    async def _who_changes(self, chat: ChatKey) -> str:
        """"admins" or "everyone": the chat's own choice (/ajustes), else the configured default."""
        chosen = (await self._settings(chat))[0].group_settings
        return chosen or self.chat.group_settings

    @contextlib.asynccontextmanager
    async def turn(self, chat: ChatKey):
        """The chat's turn: after every command of the chat that arrived before. Adapters take it
        for what must not overlap a command (a group's data moving to its supergroup)."""
        turn = self._order.setdefault(chat, _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._order[chat]  # no command of the chat running or waiting: forget it

    async def drain(self) -> None:
        """Wait for the log lines of replies still being delivered (at a stop)."""
        if self._records:
            await asyncio.gather(*self._records, return_exceptions=True)

    # --- generation ----------------------------------------------------------------------------

    async def cervantes(self, chat: ChatKey, argument: str, out: Output) -> None:
        """Continúa tu frase con la prosa de Don Quijote."""
        await self._generate(chat, out, "cervantes", seed=argument)

    async def continuar(self, chat: ChatKey, argument: str, out: Output) -> None:
        """Sigue escribiendo justo donde lo dejó."""
        if argument:  # a button, a reply to one of the bot's texts, or /continuar N: that text
            reply = await self._reply(chat, argument, out)
            if reply is not None:
                await self._go_on(chat, out, "continuar", reply.end)
            return
        try:
            stored = await self.storage.get_continuation(chat)
        except StorageError as exc:
            logging.getLogger(__name__).warning("continuation of chat %s not read: %s", chat.tag, exc)
            await out.send(messages.CONTINUATION_NOT_READ)
            return
        if stored is None:
            await out.send(messages.NOTHING_TO_CONTINUE)
            return
        await self._go_on(chat, out, "continuar", stored)

    async def otra(self, chat: ChatKey, argument: str, out: Output) -> None:
        """Escribe otra versión de un texto: la misma semilla, nuevo azar."""
        reply = await self._reply(chat, argument, out)
        if reply is None:
            return
        if reply.seed is not None:
            await self._generate(chat, out, "otra", seed=reply.seed)
        else:
            await self._go_on(chat, out, "otra", reply.start, same_stream=False)

    async def _reply(self, chat: ChatKey, argument: str, out: Output):
        """The stored reply an argument names (its id), or None once the user has been told why not."""
        reply_id = parse_int(argument)
        if reply_id is None or reply_id <= 0:
            await out.send(messages.CONTINUE_WHICH)
            return None
        try:
            reply = await self.storage.get_reply(chat, reply_id)
        except StorageError as exc:
            logging.getLogger(__name__).warning("reply of chat %s not read: %s", chat.tag, exc)
            await out.send(messages.CONTINUATION_NOT_READ)
            return None
        if reply is None:
            await out.send(messages.REPLY_FORGOTTEN)
        return reply

    async def _go_on(self, chat: ChatKey, out: Output, name: str, point: Continuation,
                     same_stream: bool = True) -> None:
        """Write on from a stored point: with its random stream (`same_stream`) or a new one."""
        if point.model_id != self.model_id:  # another model's state means nothing to this one
            await self._generate(chat, out, name, seed=point.tail, show_seed=False,
                                 note=messages.MODEL_CHANGED, start=point)
            return
        try:
            await self._generate(chat, out, name, state=point.state, last_char=point.last_char, start=point,
                                 random_seed=point.random_seed if same_stream else None,
                                 position=point.position if same_stream else 0)
        except _Unusable as exc:  # a damaged row: go on from its text instead, which saves a good one
            logging.getLogger(__name__).warning("stored state of chat %s unusable (%s): re-reading its text",
                                                chat.tag, exc)
            if not point.tail.strip():
                await out.send(messages.NOTHING_TO_CONTINUE)
                return
            await self._generate(chat, out, name, seed=point.tail, show_seed=False, start=point)

    async def _generate(self, chat: ChatKey, out: Output, name: str, seed: str | None = None,
                        state=None, last_char=None, show_seed: bool = True, note: str = "",
                        start: Continuation | None = None, random_seed: int | None = None,
                        position: int = 0) -> None:
        """Write a reply: from `seed` (shown unless `show_seed` is False), or from a `state`; `start`
        is the stored point it goes on from (None: a new text from `seed`)."""
        settings, unread = await self._settings(chat)
        note = "\n".join(n for n in (note, unread) if n)
        temperature = settings.temperature if settings.temperature is not None else self.chat.temperature
        length = settings.length if settings.length is not None else self.chat.length
        started = time.perf_counter()
        try:
            stream = self.service.stream(seed, state=state, last_char=last_char, temperature=temperature,
                                         tail=start.tail if start else "", length=length, random_seed=random_seed,
                                         position=position if random_seed is not None else 0)
        except Busy:
            record({"platform": chat.platform, "chat": chat.tag, "command": name, "outcome": "busy"})
            await out.send(messages.BUSY)
            return
        except ValueError as exc:
            if state is None:
                raise
            raise _Unusable(str(exc)) from None
        outcome = {"status": "ok"}
        written = Written()
        written.pieces = self._pieces(chat, stream, show_seed, note, outcome, written, start)
        await out.stream(written)
        result = getattr(stream, "result", None)
        fields = {
            "platform": chat.platform, "chat": chat.tag, "command": name, "outcome": outcome["status"],
            "characters": len(result.text) if result else 0,
            "latency_ms": round((time.perf_counter() - started) * 1000),
            "batch_size": result.batch_size if result else 0}
        delivery = getattr(out, "delivery", None)  # an adapter that delivers later says how it went
        if delivery is None:
            record(fields)
        else:
            task = asyncio.create_task(_record_when_delivered(fields, delivery))
            self._records.add(task)
            task.add_done_callback(self._records.discard)

    async def _pieces(self, chat: ChatKey, stream, show_seed: bool, note: str, outcome: dict,
                      written: Written, start: Continuation | None) -> AsyncIterator[str]:
        """The reply as it is written: the seed, the new text, then any notes. Never raises."""
        produced = []
        try:
            async for piece in stream:
                if not produced and show_seed and stream.seed is not None:
                    yield stream.seed.text
                produced.append(piece)
                yield piece
        except GeneratorExit:  # the adapter stopped reading: free the row at the next chunk
            stream.cancel()
            raise
        except (asyncio.TimeoutError, TimeoutError):
            outcome["status"] = "timeout"
            yield ("\n\n" if produced else "") + messages.TIMEOUT
            return
        except Exception:
            outcome["status"] = "error"
            logging.getLogger(__name__).exception("generation failed for chat %s", chat.tag)
            yield ("\n\n" if produced else "") + messages.FAILED
            return
        result = stream.result
        notes = [note] if note else []
        if show_seed and result.dropped:
            notes.append(messages.DROPPED.format(chars=list_characters(result.dropped)))
        if show_seed and result.truncated:
            notes.append(messages.TRUNCATED.format(n=self.chat.max_seed_chars))
        # the text so far: a new seed starts it afresh; a continuation (or a re-prime) extends it
        tail = ((result.seed if start is None else start.tail) + result.text)[-TAIL_CHARS:]
        end = Continuation(state=result.state, model_id=self.model_id, last_char=result.last_char, tail=tail,
                           random_seed=result.random_seed, position=result.position)
        try:
            written.reply_id = await self.storage.save_reply(  # the seed as read: Otra reads the same
                chat, end, seed=result.seed if start is None else None, start=start)
        except StorageError:
            logging.getLogger(__name__).exception("continuation not saved for chat %s", chat.tag)
            notes.append(messages.NOT_SAVED)
        if notes:
            yield "\n\n" + "\n".join(notes)

    # --- settings --------------------------------------------------------------------------------

    async def temperatura(self, chat: ChatKey, argument: str, out: Output) -> None:
        """Muestra o fija la temperatura: cuán atrevida es la escritura."""
        c = self.chat
        if not argument:
            current = (await self._settings(chat))[0].temperature
            value = current if current is not None else c.temperature
            await out.send(messages.TEMPERATURE_IS.format(value=format_number(value), tmin=format_number(c.min_temperature),
                                                          tmax=format_number(c.max_temperature)))
            return
        value = parse_number(argument)
        if value is None or not c.min_temperature <= value <= c.max_temperature:
            await out.send(messages.TEMPERATURE_BAD.format(tmin=format_number(c.min_temperature),
                                                           tmax=format_number(c.max_temperature)))
            return
        await self._save(out, self.storage.set_temperature(chat, value),
                         messages.TEMPERATURE_SET.format(value=format_number(value)))

    async def longitud(self, chat: ChatKey, argument: str, out: Output) -> None:
        """Muestra o fija cuántos caracteres escribe."""
        c = self.chat
        if not argument:
            current = (await self._settings(chat))[0].length
            await out.send(messages.LENGTH_IS.format(value=current or c.length, lmin=c.min_length,
                                                     lmax=c.max_length))
            return
        value = parse_int(argument)
        if value is None or not c.min_length <= value <= c.max_length:
            await out.send(messages.LENGTH_BAD.format(lmin=c.min_length, lmax=c.max_length))
            return
        await self._save(out, self.storage.set_length(chat, value),
                         messages.LENGTH_SET.format(value=value))

    async def olvidar(self, chat: ChatKey, argument: str, out: Output) -> None:
        """Borra todo lo que guarda de este chat."""
        try:
            deleted = await self.storage.forget(chat)
        except StorageError:
            logging.getLogger(__name__).exception("forget failed for chat %s", chat.tag)
            await out.send(messages.SETTING_NOT_SAVED)
            return
        await out.send(messages.FORGOTTEN if deleted else messages.NOTHING_TO_FORGET)

    async def ajustes(self, chat: ChatKey, argument: str, out: Output) -> None:
        """Quién cambia los ajustes en un grupo: sus administradores o todos."""
        if not argument:
            chosen = await self._who_changes(chat)
            await out.send(messages.EVERYONE_CHANGES if chosen == members.EVERYONE else messages.ADMINS_CHANGE)
            return
        chosen = members.CHOICES.get(argument.lower())
        if chosen is None:
            await out.send(messages.AJUSTES_BAD)
            return
        await self._save(out, self.storage.set_group_settings(chat, chosen),
                         messages.EVERYONE_CHANGES if chosen == members.EVERYONE else messages.ADMINS_CHANGE)

    async def ayuda(self, chat: ChatKey, argument: str, out: Output) -> None:
        """Qué es este bot y cómo se usa."""
        await out.send(self.help_text())

    def help_text(self) -> str:
        c = self.chat
        return messages.HELP.format(tmin=format_number(c.min_temperature), tmax=format_number(c.max_temperature),
                                    lmin=c.min_length, lmax=c.max_length)

    async def _settings(self, chat: ChatKey) -> tuple[Settings, str]:
        """The chat's settings, or the defaults with a note when the database cannot be read."""
        try:
            return await self.storage.get_settings(chat), ""
        except StorageError as exc:
            logging.getLogger(__name__).warning("settings of chat %s not read: %s", chat.tag, exc)
            return Settings(), messages.SETTINGS_NOT_READ

    async def _save(self, out: Output, write, confirmation: str) -> None:
        try:
            await write
        except StorageError:
            logging.getLogger(__name__).exception("setting not saved")
            await out.send(messages.SETTING_NOT_SAVED)
            return
        await out.send(confirmation)  # only once the write is committed


async def _record_when_delivered(fields: dict, delivery: asyncio.Future) -> None:
    try:
        fields = {**fields, **await delivery}
    except asyncio.CancelledError:
        fields = {**fields, "delivery": "unknown"}
        raise
    finally:
        record(fields)


def record(fields: dict) -> None:
    """One log line and the metrics for each request."""
    log.info("request", extra={"fields": fields})
    metrics.observe(fields)
