"""Nothing lost in a crash: every command is stored before it runs, and marked done once answered.

An adapter stores what it receives (`receive`, before it tells the platform it has it: Telegram's
next getUpdates, a webhook's answer), runs it with `run`, and, when it starts receiving (at start,
or when a standby takes over: bot/process/serve.py starts a new adapter then), first calls
`replay`: the commands of its platform that were stored and never answered, younger than
`max_age_s`, run again in each chat's order, before any new one. The adapter says who sent each
one (a Member), rebuilt from what it stored: on Telegram its is_admin asks the admins list, on
Discord it is the verdict that came with the command.

Done means answered: the reply delivered (for an Output with a `delivery` future, once it resolves,
whatever the outcome: delivered, partial, or dropped and counted), or nothing to send (refused
silently by the quota). A reply the adapter could not deliver because it was stopping, and a
command a stop cut before it wrote anything, stay pending, for the next process.

Without a store (`store=None`) commands just run: the console, and tests of an adapter alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from bot.chat.commands import Commands, Output
from bot.chat.members import Member
from bot.chat.parsing import Command
from storage import StorageError
from storage.inbox import Entry
from storage.inbox import Inbox as Store

log = logging.getLogger(__name__)

__all__ = ["Entry", "Inbox"]


class Inbox:
    def __init__(self, commands: Commands, store: Store | None, max_age_s: float, clock=time.time):
        self.commands = commands
        self.store = store
        self.max_age_s = max_age_s  # older commands are not run again ([telegram] max_delivery_s)
        self.clock = clock  # unix seconds
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()  # replays running, done marks waiting for a delivery
        # what the next write notes, all in one transaction: under a burst the writer is busy, and
        # each mark waiting for a transaction of its own would widen the duplicate window
        self._done: list[int] = []
        self._answers: dict[int, dict] = {}
        self._flushing: asyncio.Task | None = None
        # per chat, when its last command is answered: the next one starts after it, so that what a
        # command changes (a setting, a continuation) never comes before an earlier reply is out,
        # which a crash would otherwise make it run again against
        self._answered: dict = {}

    async def receive(self, entries: list[Entry]) -> list[Entry | None]:
        """Store the entries, in one transaction: each comes back with its id, or None when the
        platform sent it before (do not run it again). When the store fails (a full disk), they
        come back without an id and still run, only not safe from a crash; the failure is logged."""
        if self.store is None or not entries:
            return list(entries)
        try:
            return await self.store.add(entries, expire_before=self.clock() - self.max_age_s)
        except StorageError as exc:
            log.warning("commands not stored in the inbox, so not safe from a crash: %s", exc)
            return list(entries)

    async def run(self, entry: Entry, out: Output, member: Member | None) -> None:
        """Run the command once the chat's previous one is answered; once answered, it is done.
        Cut by a stop (cancelled) before it handed a reply over, it stays pending."""
        previous = self._answered.get(entry.chat)
        answered = self._answered[entry.chat] = asyncio.get_running_loop().create_future()
        delivery, cut = None, False
        try:
            if previous is not None:
                await asyncio.shield(previous)
            await self.commands.run(entry.chat, Command(entry.command, entry.argument), out, member)
        except asyncio.CancelledError:
            cut = True
            raise
        finally:
            delivery = getattr(out, "delivery", None)
            if delivery is None:
                self._answer(entry.chat, answered)
            else:
                delivery.add_done_callback(lambda _: self._answer(entry.chat, answered))
            if entry.id is not None and not (cut and delivery is None):
                self._mark(entry, delivery, out)

    def _answer(self, chat, answered: asyncio.Future) -> None:
        if not answered.done():
            answered.set_result(None)
        if self._answered.get(chat) is answered:
            del self._answered[chat]

    def answering(self, entry: Entry, answer: dict) -> None:
        """The reply has begun to show (a first message posted, the rest to come): noted, so that
        if the process dies now the command, run again, finishes that reply rather than begin
        another."""
        if entry.id is None or self.store is None:
            return
        self._answers[entry.id] = answer
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self._flush())
            self._tasks.add(self._flushing)
            self._flushing.add_done_callback(self._tasks.discard)

    async def _flush(self) -> None:
        """Write the notes and done marks gathered so far, one transaction at a time."""
        while self._done or self._answers:
            (done, self._done), (answers, self._answers) = (self._done, []), (self._answers, {})
            try:
                await self.store.done(done, answers)
            except StorageError as exc:
                log.warning("%d commands answered, %d begun, not so marked in the inbox: %s",
                            len(done), len(answers), exc)

    def refused(self, entry: Entry) -> None:
        """The adapter answered it itself (a button tapped twice): done."""
        if entry.id is not None:
            self._mark(entry, None)

    def _mark(self, entry: Entry, delivery: asyncio.Future | None, out: Output | None = None) -> None:
        task = asyncio.ensure_future(self._done_when_answered(entry, delivery, out))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _done_when_answered(self, entry: Entry, delivery: asyncio.Future | None, out: Output | None) -> None:
        if delivery is not None:
            try:
                fields = await asyncio.shield(delivery)
            except asyncio.CancelledError:
                return  # the process is ending: the next one runs it again
            if self._stopping and fields.get("delivery") in ("undelivered", "stopping") \
                    and not getattr(out, "shown", True):
                return  # nothing of it went out before the stop: the next process answers it
        self._done.append(entry.id)
        self._flush_soon()

    async def replay(self, platform: str, run_again: Callable[[Entry], Awaitable[None]],
                     mine: Callable[[Entry], bool] = lambda entry: True) -> int:
        """Run again the platform's commands not done and younger than max_age_s (of those, the
        ones `mine` keeps: a Discord process runs its own shards'); how many. `run_again(entry)`
        is the adapter's: it rebuilds where to answer and who sent it, and calls `run`.

        They start at once, oldest first: when this returns, each holds or awaits its chat's turn,
        so a command received after it runs after them (bot.chat.commands keeps arrival order).
        """
        self._stopping = False  # a new start (a standby taking over again, in the same process)
        if self.store is None:
            return 0
        try:
            await self.store.expire(self.clock() - self.max_age_s)
            entries = [e for e in await self.store.pending(platform, self.clock() - self.max_age_s) if mine(e)]
        except StorageError as exc:
            log.error("the inbox could not be read: commands from before the start are not answered: %s", exc)
            return 0
        for entry in entries:
            task = asyncio.create_task(run_again(entry))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(0)  # every replay takes its place in its chat's turn
        if entries:
            log.info("running again %d %s commands received before the start and never answered",
                     len(entries), platform)
        return len(entries)

    def stopping(self) -> None:
        """The adapters are stopping: a reply dropped from now on, nothing of it sent, stays pending."""
        self._stopping = True

    async def drain(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the done marks of replies delivered so far (at a stop)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
