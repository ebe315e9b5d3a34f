"""`cervantes serve`: every adapter whose token is set, sharing one service and one database.

With no token at all it talks on the console instead (cli/main.py lets it only on a terminal).
An adapter that cannot start raises StartupError with one line that names what failed. Once every
adapter has started, the status file (bot/process/status.py) tells `cervantes health` how things stand.
SIGTERM and SIGINT stop the adapters, within STOP_BUDGET_S even if one hangs, then the database
closes. An adapter may also end the run itself: an exception set on its optional `failed` future
(a revoked token, say) stops serve, which raises it as StartupError.
With `[metrics] port` set, Prometheus metrics are served too (bot.process.metrics).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bot.process import metrics, secrets, startup, status
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

        adapters.append(TelegramAdapter(runtime.commands, runtime.config.telegram, telegram_token))
    discord_token = secrets.token("DISCORD_TOKEN", environ)
    if discord_token:
        from bot.discord.adapter import DiscordAdapter

        adapters.append(DiscordAdapter(runtime.commands, runtime.config.discord, discord_token))
    return adapters


async def serve(config: Config, environ, console_chat_id: str = "local") -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(config) as runtime, metrics.serving(config.metrics, runtime.service):
        if not await _warm(runtime, stop):
            return  # stopped while compiling
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
            keeping = asyncio.create_task(status.keep(status.path_for(config.storage.path), runtime, adapters))
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
    log.info("compiled the model for batches of %s", ", ".join(map(str, runtime.service.shapes())))
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
