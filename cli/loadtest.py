"""`cervantes loadtest`: N simulated chats, M commands each, through the real commands, service and database.

Each chat sends its commands in order (as a person would: the next after the reply), all chats at
once; commands mix /cervantes, /continuar and /temperatura. Reports whether every command was
answered exactly once and to the right chat, latency percentiles, throughput and peak memory,
round after round so that memory growth shows. The database is a temporary SQLite file, or with
--storage-url an empty PostgreSQL database, emptied again afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from bot.chat.parsing import parse
from bot.process.runtime import open_runtime
from config import Config
from storage import ChatKey
from storage.engines.postgres import META, drop_tables, is_url, redact, table_names
from storage.errors import StorageError
from storage.migrations import MIGRATIONS, schema


class _Inbox:
    """An Output that files every reply under the chat it was meant for."""

    def __init__(self, chat: ChatKey, replies: dict):
        self.chat, self.replies = chat, replies

    async def send(self, text: str) -> None:
        self.replies.setdefault(self.chat, []).append(text)

    async def stream(self, pieces) -> None:
        self.replies.setdefault(self.chat, []).append("".join([p async for p in pieces]))


def _script(chat_index: int, commands: int, rng: random.Random) -> list[str]:
    lines = []
    for i in range(commands):
        kind = "cervantes" if i == 0 else rng.choice(["cervantes", "continuar", "temperatura"])
        if kind == "cervantes":
            lines.append(f"/cervantes Chat {chat_index} dijo")
        elif kind == "continuar":
            lines.append("/continuar")
        else:
            lines.append(f"/temperatura {rng.choice(['0,3', '0,5', '0,8', '1'])}")
    return lines


async def _round(runtime, chats: int, commands: int, seed: int) -> dict:
    rng = random.Random(seed)
    replies: dict = {}
    latencies: list[float] = []

    async def one_chat(i: int) -> None:
        chat = ChatKey("loadtest", str(i))
        out = _Inbox(chat, replies)
        for line in _script(i, commands, rng):
            start = time.perf_counter()
            await runtime.commands.run(chat, parse(line), out)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(one_chat(i) for i in range(chats)))
    wall = time.perf_counter() - start
    answered = sum(len(v) for v in replies.values())
    misrouted = sum(1 for chat, texts in replies.items() for t in texts
                    if t.startswith("Chat ") and not t.startswith(f"Chat {chat.chat_id} dijo"))
    return {
        "commands": chats * commands, "answered": answered, "misrouted": misrouted,
        "exactly_once": answered == chats * commands and all(len(v) == commands for v in replies.values()),
        "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
        "p99_s": float(np.percentile(latencies, 99)), "commands_per_s": chats * commands / wall,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def run(config: Config, chats: int, commands: int, rounds: int, storage_url: str = "") -> list[dict]:
    """The rounds' figures. On a temporary SQLite file, whatever [storage] says (the load never goes
    into an admin's database); with storage_url, on that PostgreSQL database instead: it must be
    empty (refused otherwise), and the tables the load made are dropped afterwards."""
    config = dataclasses.replace(
        config, chat=dataclasses.replace(config.chat, rate_limit_per_minute=0),
        generation=dataclasses.replace(config.generation, queue_size=max(config.generation.queue_size, chats)))
    if not storage_url:
        with tempfile.TemporaryDirectory() as tmp:
            storage = dataclasses.replace(config.storage, path=str(Path(tmp) / "load.db"), url="", url_file="")
            return await _run(config, storage, chats, commands, rounds)
    if not is_url(storage_url):
        raise StorageError("--storage-url must be a PostgreSQL URL (postgresql://user@host:port/dbname)")
    if found := await table_names(storage_url):
        raise StorageError(f"{redact(storage_url)} is not empty (it has the tables {', '.join(found)}): the "
                           "loadtest writes test chats, so it runs on an empty, throwaway database only "
                           "(createdb a new one)")
    storage = dataclasses.replace(config.storage, url=storage_url, url_file="")
    try:
        return await _run(config, storage, chats, commands, rounds)
    finally:
        await drop_tables(storage_url, [*schema(len(MIGRATIONS)), META])


async def _run(config: Config, storage, chats: int, commands: int, rounds: int) -> list[dict]:
    async with open_runtime(dataclasses.replace(config, storage=storage)) as runtime:
        return [await _round(runtime, chats, commands, seed) for seed in range(rounds)]
