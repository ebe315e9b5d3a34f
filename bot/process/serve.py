"""`cervantes serve`: every adapter whose token is set, sharing one service and one database.

With no token at all it talks on the console instead (cli/main.py lets it only on a terminal).
An adapter that cannot start raises StartupError with one line that names what failed. Once every
adapter has started, the status file (bot/process/status.py) tells `cervantes health` how things stand.
SIGTERM and SIGINT stop the adapters, within STOP_BUDGET_S even if one hangs, then the database
closes. An adapter may also end the run itself: an exception set on its optional `failed` future
(a revoked token, say) stops serve, which raises it as StartupError.
With `[metrics] port` set, Prometheus metrics are served too (bot.process.metrics).
With `[storage] url` set, each adapter runs only while this process is elected to it
(bot/process/leader.py); the status file is written from the moment the process stands by.
Every adapter is made afresh when this process becomes active, and as it starts it first runs again
the commands of its platform left in the inbox (bot.chat.inbox) by the process it takes over from,
before it takes new ones: at start with SQLite, on takeover with PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import typing

from bot.process import leader, metrics, secrets, startup, status
from bot.process.runtime import open_runtime
from bot.process.startup import StartupError
from config import Config

log = logging.getLogger(__name__)

STOP_BUDGET_S = 7.0  # for the adapters to stop; docker stop kills at 10 s, the database closes after


def _adapters(runtime, environ) -> list:
    adapters = []
    telegram_token = secrets.token("TELEGRAM_TOKEN", environ)
    if telegram_token:
        from bot.telegram.adapter import TelegramAdapter

        adapters.append(TelegramAdapter(runtime.commands, runtime.config.telegram, telegram_token,
                                        inbox=runtime.inbox))
    discord_token = secrets.token("DISCORD_TOKEN", environ)
    if discord_token:
        from bot.discord.adapter import DiscordAdapter

        adapters.append(DiscordAdapter(runtime.commands, runtime.config.discord, discord_token,
                                       inbox=runtime.inbox))
    return adapters


async def serve(config: Config, environ, console_chat_id: str = "local") -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(config) as runtime, metrics.serving(config.metrics, runtime.service):
        if not await _warm(runtime, stop):
            return  # stopped while compiling
        if config.storage.shared and startup.tokens(environ):
            await _elected(runtime, environ, stop)
            return
        adapters = _adapters(runtime, environ)
        if not adapters:
            await _console(runtime, console_chat_id, stop)
            return
        started: list = []
        keeping = None
        try:
            for adapter in adapters:
                if not await _start(adapter, stop, config, environ):
                    return  # stopped while starting
                started.append(adapter)
                log.info("%s adapter started", type(adapter).__name__)
            keeping = asyncio.create_task(status.keep(status.path_of(config.storage), runtime, adapters))
            await _until_stopped(stop, adapters, environ)
            log.info("stopping")
        finally:
            if keeping is not None:
                keeping.cancel()  # removes the status file: health says serve is not running
                await asyncio.gather(keeping, return_exceptions=True)
            await _stop_all(started)


async def _warm(runtime, stop: asyncio.Event) -> bool:
    """Compile every batch shape the worker can use (XLA) before anyone is answered, so no reply
    waits for a compilation; False when a stop comes first (a compilation under way ends on its own)."""
    warming = asyncio.ensure_future(runtime.service.warm())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({warming, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not warming.done():
        warming.cancel()
        await asyncio.gather(warming, return_exceptions=True)
        return False
    warming.result()
    log.info("compiled the model for batches of %s", ", ".join(str(rows) for rows, *_ in runtime.service.shapes()))
    return True


async def _console(runtime, chat_id: str, stop: asyncio.Event) -> None:
    from bot.console import adapter as console

    log.info("no TELEGRAM_TOKEN or DISCORD_TOKEN: talking on the console")
    chat = asyncio.create_task(console.run(runtime.commands, chat_id, sys.stdin, sys.stdout))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({chat, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (chat, stopper):
        task.cancel()


async def _start(adapter, stop: asyncio.Event, config: Config, environ) -> bool:
    """Start one adapter unless a stop comes first (then False). Its failure: StartupError, one line."""
    starting = asyncio.ensure_future(adapter.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()  # the adapter's start cleans up after itself; give it the stop budget
        await asyncio.wait({starting}, timeout=STOP_BUDGET_S)
        return False
    if starting.cancelled():
        return False
    if (exc := starting.exception()) is None:
        return True
    log.debug("%s did not start", type(adapter).__name__, exc_info=exc)  # the traceback, at DEBUG only
    raise StartupError(startup.failure(status.adapter_name(adapter), exc, config, environ)) from None


async def _until_stopped(stop: asyncio.Event, adapters: list, environ) -> None:
    """Until SIGTERM or SIGINT, or until an adapter's `failed` future says it cannot go on."""
    stopping = asyncio.ensure_future(stop.wait())
    failing = {f: a for a in adapters if isinstance(f := getattr(a, "failed", None), asyncio.Future)}
    try:
        await asyncio.wait({stopping, *failing}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    for future, adapter in failing.items():
        if future.done() and not future.cancelled() and future.exception() is not None:
            exc = future.exception()
            log.debug("%s failed", type(adapter).__name__, exc_info=exc)
            reason = startup.blank_tokens(str(exc) or type(exc).__name__, environ)
            raise StartupError(f"{status.adapter_name(adapter)} stopped: {reason}")


async def _stop_all(adapters: list) -> None:
    """Stop the adapters together, within STOP_BUDGET_S: one that hangs is left behind, logged."""
    if not adapters:
        return
    stopping = {asyncio.ensure_future(a.stop()): a for a in adapters}
    done, hanging = await asyncio.wait(stopping, timeout=STOP_BUDGET_S)
    for task in hanging:
        task.cancel()
        log.warning("%s did not stop within %.0f s: going on without it", type(stopping[task]).__name__,
                    STOP_BUDGET_S)
    for task in done:
        if task.exception() is not None:
            log.warning("%s did not stop cleanly: %s", type(stopping[task]).__name__,
                        type(task.exception()).__name__)
            log.debug("stop failed", exc_info=task.exception())


# --- one active process per duty: bot/process/leader.py -----------------------------------------------

def _duties(runtime, environ) -> list[tuple[str, typing.Callable]]:
    """(duty, a new adapter for it) for each token set. A duty names its bot, by the public part of
    its token (Telegram's bot id, Discord's encoded user id), and on Discord its set of shards."""
    config, duties = runtime.config, []
    if telegram := secrets.token("TELEGRAM_TOKEN", environ):
        from bot.telegram.adapter import TelegramAdapter

        duties.append((f"telegram bot {telegram.split(':')[0]}",
                       lambda: TelegramAdapter(runtime.commands, config.telegram, telegram, inbox=runtime.inbox)))
    if discord := secrets.token("DISCORD_TOKEN", environ):
        from bot.discord.adapter import DiscordAdapter

        shards = leader.shard_set(config.discord.shard_count, config.discord.shard_ids)
        duties.append((f"discord bot {discord.split('.')[0]} {shards}",
                       lambda: DiscordAdapter(runtime.commands, config.discord, discord, inbox=runtime.inbox)))
    return duties


async def _elected(runtime, environ, stop: asyncio.Event) -> None:
    """Every duty's election at once; the status file says which this process is active for."""
    config = runtime.config
    changed = asyncio.Event()  # a role changed, or an adapter started or stopped: rewrite the status now
    url = config.storage.database()
    terms = [(leader.Election(url, duty, on_change=changed.set), make)
             for duty, make in _duties(runtime, environ)]
    running: list = []  # the adapters this process runs now

    def report() -> dict:  # keyed "telegram", "discord": as the adapters are named
        return {"election": {e.duty.split(" ")[0]: {**e.report(), "duty": e.duty} for e, _ in terms}}

    keeping = asyncio.create_task(status.keep(status.path_of(config.storage), runtime, running, extra=report,
                                              wake=changed))
    holding = [asyncio.create_task(_hold(election, make, stop, running, config, environ, changed))
               for election, make in terms]
    try:
        done, _ = await asyncio.wait(holding, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # an adapter that failed (a revoked token): serve ends, as without elections
    finally:
        for task in holding:
            task.cancel()
        await asyncio.gather(*holding, return_exceptions=True)
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        for election, _ in terms:
            await election.close()


async def _hold(election: leader.Election, make, stop: asyncio.Event, running: list, config: Config,
                environ, changed: asyncio.Event) -> None:
    """Stand by until elected, then run the adapter until a stop (delivered, then handed over) or
    until the lock's connection is lost (halted at once: nothing more sent), and stand by again."""
    while await election.win(stop):
        adapter = make()
        ended = asyncio.Event()
        watching = [asyncio.create_task(_set_after(event, ended)) for event in (stop, election.lost)]
        halted = False
        try:
            if not await _start(adapter, ended, config, environ):
                halted = election.lost.is_set() and not stop.is_set()
                continue
            running.append(adapter)
            changed.set()
            log.info("%s: active, %s adapter started", election.duty, type(adapter).__name__)
            await _until_stopped(ended, [adapter], environ)
            halted = election.lost.is_set() and not stop.is_set()
        finally:
            for task in watching:
                task.cancel()
            if adapter in running:
                running.remove(adapter)
                changed.set()
            if halted:
                await _halt(adapter)
            else:
                await _stop_all([adapter])
                await election.resign()
        if stop.is_set():
            return


async def _set_after(event: asyncio.Event, then: asyncio.Event) -> None:
    await event.wait()
    then.set()


async def _halt(adapter) -> None:
    """The lock is lost: send nothing more (the adapter's `halt`: its queue dropped), then stop."""
    halt = getattr(adapter, "halt", None)
    if halt is None:
        await _stop_all([adapter])
        return
    try:
        await asyncio.wait_for(halt(), timeout=STOP_BUDGET_S)
    except Exception as exc:  # halted or not, this process goes back to standing by
        log.warning("%s did not halt cleanly: %s", type(adapter).__name__, type(exc).__name__)
