"""`cervantes serve`: every adapter whose token is set, sharing one service and one database.

With no token at all it talks on the console instead, so a first run needs nothing. SIGTERM and
SIGINT stop the adapters (in-flight replies finish or are cancelled) and close the database.
While adapters run, `<database>.status.json` tells `cervantes health` whether they are connected;
with `[metrics] port` set, Prometheus metrics are served too (bot.metrics).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bot import health, metrics, secrets
from bot.runtime import open_runtime
from cli.config import Config

log = logging.getLogger(__name__)


def _adapters(runtime, environ) -> list:
    adapters = []
    telegram_token = secrets.token("TELEGRAM_TOKEN", environ)
    if telegram_token:
        from bot.telegram_adapter import TelegramAdapter

        adapters.append(TelegramAdapter(runtime.commands, runtime.config.telegram, telegram_token))
    discord_token = secrets.token("DISCORD_TOKEN", environ)
    if discord_token:
        from bot.discord_adapter import DiscordAdapter

        adapters.append(DiscordAdapter(runtime.commands, runtime.config.discord, discord_token))
    return adapters


async def serve(config: Config, environ, console_chat_id: str = "local") -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_runtime(config) as runtime, metrics.serving(config.metrics, runtime.service):
        adapters = _adapters(runtime, environ)
        if not adapters:
            from bot import console

            log.info("no TELEGRAM_TOKEN or DISCORD_TOKEN: talking on the console")
            chat = asyncio.create_task(console.run(runtime.commands, console_chat_id, sys.stdin, sys.stdout))
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({chat, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (chat, stopper):
                task.cancel()
            return
        started = []
        status = asyncio.create_task(health.keep_status(health.status_path(config.storage.path), adapters))
        try:
            for adapter in adapters:
                await adapter.start()
                started.append(adapter)
                log.info("%s adapter started", type(adapter).__name__)
            await stop.wait()
            log.info("stopping")
        finally:
            status.cancel()  # removes the status file: `cervantes health` stops checking adapters
            await asyncio.gather(status, return_exceptions=True)
            for adapter in reversed(started):
                try:
                    await adapter.stop()
                except Exception:
                    log.exception("%s did not stop cleanly", type(adapter).__name__)
