"""Load through the Telegram adapter: N chats x M commands at once, against the emulator the bot tests use.

    .venv/bin/python benchmarks/telegram_load.py --chats 50 --commands 3 [--flood] [--model DIR] [--json]

The bot runs in this process as `cervantes serve` runs it (open_runtime, then TelegramAdapter polling
the emulator, tests/telegram_emulator); the users write through the emulator's client API. Each chat
sends its commands in order, the next once the previous reply is complete, all chats at once; the
commands mix /cervantes, /continuar and /temperatura. A streamed reply is complete when its message,
as last edited, holds the whole reply: the seed (for /cervantes) and [chat] length characters.

With --flood the emulator enforces Telegram's flood limits (30 messages a second per bot, about one
a second per chat, 429 with retry_after; see launch.js), and the report adds what it refused.

Reports whether every command was answered exactly once, in its own chat; time from the command to
its first visible text and to its final text (p50/p95/p99, by the emulator's timestamps);
throughput; the bot's own delivery counts and the 429s it met; this process's peak memory. Exits 1
if a reply was lost, duplicated, misrouted or not what the command asks for, or, with --flood, if
a request was sent into a pending retry_after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter, as cli/main.py

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))  # the emulator's launcher lives with the tests that use it

from bot.chat import messages  # noqa: E402
from bot.process.runtime import open_runtime  # noqa: E402
from bot.telegram.adapter import TelegramAdapter  # noqa: E402
from config import Config  # noqa: E402
from telegram_emulator import emulator  # noqa: E402

BOT_USERNAME = "CervantesLoadBot"
FIRST_CHAT = 20_001  # chat ids FIRST_CHAT, FIRST_CHAT + 1, ...
DIGITS = ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"]
APOLOGIES = (messages.BUSY, messages.TIMEOUT, messages.FAILED)  # a reply, though not the one asked for
POLL_S = 0.1  # how often the users' side reads what every chat shows


def seed_of(chat_index: int) -> str:
    """A seed only this chat's replies start with: its number in words (letters every model knows)."""
    return "Sancho dijo " + " ".join(DIGITS[int(d)] for d in str(chat_index)) + "."


@dataclasses.dataclass(frozen=True)
class Step:
    text: str  # what the user writes
    kind: str  # "cervantes", "continuar" or "temperatura"
    expected: str  # cervantes: the seed its reply starts with; temperatura: the whole reply; continuar: ""

    def complete(self, reply: str, length: int) -> bool:
        """The reply as shown now is its final text (a streamed one is edited until then)."""
        if self.kind == "temperatura":
            return True  # sent whole
        return len(reply) >= len(self.expected) + length or reply.endswith(APOLOGIES)

    def right(self, reply: str, length: int) -> bool:
        if self.kind == "temperatura":
            return reply == self.expected
        return reply.startswith(self.expected) and len(reply) == len(self.expected) + length


def script(chat_index: int, commands: int, rng: random.Random) -> list[Step]:
    """A chat's commands: /cervantes first (so that /continuar has something), then a mix."""
    steps = []
    for i in range(commands):
        kind = "cervantes" if i == 0 else rng.choice(["cervantes", "continuar", "temperatura"])
        if kind == "cervantes":
            seed = seed_of(chat_index)
            steps.append(Step(f"/cervantes {seed}", kind, seed))
        elif kind == "continuar":
            steps.append(Step("/continuar", kind, ""))
        else:
            value = rng.choice(["0,3", "0,5", "0,8", "1"])
            steps.append(Step(f"/temperatura {value}", kind, messages.TEMPERATURE_SET.format(value=value)))
    return steps


@dataclasses.dataclass(frozen=True)
class Shown:
    text: str  # the bot's message as last edited
    at: float  # when it was posted or last edited, by the emulator's clock (this machine's)
    first: float  # when it was posted


class Users:
    """The users' side of the emulator: they write to the bot; one poller keeps what every chat shows."""

    def __init__(self, url: str, token: str):
        self.token = token
        self.http = httpx.AsyncClient(base_url=url, timeout=30)
        self.chats: dict[int, list[Shown]] = {}  # chat id -> the bot's messages there, oldest first
        self.changed = asyncio.Condition()

    async def say(self, chat_id: int, text: str) -> None:
        message = {"botToken": self.token, "date": int(time.time()), "text": text,
                   "chat": {"id": chat_id, "type": "private", "first_name": "Alonso"},
                   "from": {"id": chat_id, "is_bot": False, "first_name": "Alonso"}}
        (await self.http.post("/sendMessage", json=message)).raise_for_status()

    async def refresh(self) -> None:
        answer = await self.http.post("/getUpdatesHistory", json={"token": self.token})
        answer.raise_for_status()
        chats: dict[int, list[Shown]] = {}
        for u in sorted((u for u in answer.json()["result"] if "chat_id" in u["message"]),
                        key=lambda u: u["messageId"]):  # the users' own messages carry "chat" instead
            at = (u.get("editTime") or u["time"]) / 1000
            chats.setdefault(int(u["message"]["chat_id"]), []).append(Shown(u["message"]["text"], at, u["time"] / 1000))
        async with self.changed:
            self.chats = chats
            self.changed.notify_all()

    async def poll(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(POLL_S)

    async def wait(self, chat_id: int, done, timeout: float) -> list[Shown]:
        """The chat's messages once `done(messages)` holds; asyncio.TimeoutError after `timeout` s."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: done(self.chats.get(chat_id, []))), timeout)
            return self.chats.get(chat_id, [])

    async def flood(self) -> None:
        """Flood-limit mode for this bot: the emulator answers 429 as Telegram would."""
        (await self.http.post("/flood", json={"token": self.token, "on": True})).raise_for_status()

    async def flood_stats(self) -> dict | None:
        answer = await self.http.post("/floodStats", json={"token": self.token})
        return answer.json()["result"]

    async def close(self) -> None:
        await self.http.aclose()


async def drive(users: Users, chats: int, commands: int, length: int, reply_timeout_s: float,
                settle_s: float, seed: int = 0) -> dict:
    """All chats at once, each sending its next command once its previous reply is complete."""
    rng = random.Random(seed)
    scripts = {FIRST_CHAT + i: script(i, commands, rng) for i in range(chats)}
    latencies: list[float] = []  # to the final text
    firsts: list[float] = []  # to the first visible text

    async def one_chat(chat_id: int, steps: list[Step]) -> None:
        for k, step in enumerate(steps):
            sent = time.time()
            await users.say(chat_id, step.text)
            try:
                shown = await users.wait(chat_id, lambda s: len(s) > k and step.complete(s[k].text, length),
                                         reply_timeout_s)
            except asyncio.TimeoutError:
                return  # lost, or never finished: the final check counts it; a user would not go on
            latencies.append(shown[k].at - sent)
            firsts.append(shown[k].first - sent)

    poller = asyncio.create_task(users.poll())
    try:
        started = time.perf_counter()
        await asyncio.gather(*(one_chat(chat, steps) for chat, steps in scripts.items()))
        wall = time.perf_counter() - started
        await asyncio.sleep(settle_s)  # a late edit or a second message would have shown by now
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    await users.refresh()
    report = check(scripts, users.chats, length)
    def percentile(values, q):
        return float(np.percentile(values, q)) if values else float("nan")

    report.update(chats=chats, commands_per_chat=commands, p50_s=percentile(latencies, 50),
                  p95_s=percentile(latencies, 95), p99_s=percentile(latencies, 99),
                  first_p50_s=percentile(firsts, 50), first_p95_s=percentile(firsts, 95),
                  commands_per_s=len(latencies) / wall, wall_s=wall)
    return report


def check(scripts: dict[int, list[Step]], shown: dict[int, list[Shown]], length: int) -> dict:
    """Each chat's messages against its commands, one message per command, in order."""
    owners = {step.expected: chat for chat, steps in scripts.items() for step in steps if step.kind == "cervantes"}
    counts = dict.fromkeys(["answered", "missing", "duplicated", "misrouted", "wrong", "apologies"], 0)
    problems = []
    for chat, steps in scripts.items():
        replies = [s.text for s in shown.get(chat, [])]
        for k, step in enumerate(steps):
            if k >= len(replies):
                counts["missing"] += 1
                problems.append(f"chat {chat}: no reply to {step.text!r}")
                continue
            reply = replies[k]
            owner = owners.get(reply.split(".", 1)[0] + ".")  # seeds end at their only full stop
            if owner not in (None, chat):
                counts["misrouted"] += 1
                problems.append(f"chat {chat}: the reply to chat {owner} arrived here")
            elif reply.endswith(APOLOGIES):
                counts["answered"] += 1
                counts["apologies"] += 1
            elif step.right(reply, length):
                counts["answered"] += 1
            else:
                counts["wrong"] += 1
                problems.append(f"chat {chat}: {step.text!r} got {reply[:80]!r} ({len(reply)} characters)")
        if len(replies) > len(steps):
            counts["duplicated"] += len(replies) - len(steps)
            problems.append(f"chat {chat}: {len(replies)} messages for {len(steps)} commands")
    for chat in shown.keys() - scripts.keys():
        counts["misrouted"] += len(shown[chat])
        problems.append(f"chat {chat}, where nobody wrote, got {len(shown[chat])} messages")
    commands = sum(len(steps) for steps in scripts.values())
    exactly_once = counts["answered"] == commands and not any(
        counts[k] for k in ("missing", "duplicated", "misrouted", "wrong"))
    return {"commands": commands, **counts, "exactly_once": exactly_once, "problems": problems}


async def run(config: Config, url: str, chats: int, commands: int, seed: int = 0, flood: bool = False) -> dict:
    """The bot on `config`, against the emulator at `url`, under the load; the report."""
    token = f"{secrets.randbelow(10**9) + 10**9}:LOAD{secrets.token_urlsafe(27)}"  # the emulator keeps bots apart by token
    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(
            config, storage=dataclasses.replace(config.storage, path=str(Path(tmp) / "load.db")),
            chat=dataclasses.replace(config.chat, rate_limit_per_minute=0),
            generation=dataclasses.replace(config.generation, queue_size=max(config.generation.queue_size, chats)),
            telegram=dataclasses.replace(config.telegram, mode="polling", base_url=f"{url}/bot"))
        users = Users(url, token)
        if flood:
            await users.flood()
        try:
            async with open_runtime(config) as runtime:
                adapter = TelegramAdapter(runtime.commands, config.telegram, token)
                await adapter.start()
                try:
                    report = await drive(
                        users, chats, commands, config.chat.length,
                        reply_timeout_s=config.generation.request_timeout_s + 30,  # the bot apologizes by then
                        settle_s=2 * config.telegram.edit_interval_s + 2 * POLL_S, seed=seed)
                finally:
                    await adapter.stop()
                report["delivery"] = dict(adapter.outbox.outcomes)
                report["throttled"] = dict(adapter.outbox.throttled)
            report["flood"] = await users.flood_stats() if flood else None
        finally:
            await users.close()
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def summary(r: dict) -> str:
    lines = [
        f"{r['chats']} chats x {r['commands_per_chat']} commands through Telegram: "
        f"{r['answered']}/{r['commands']} answered in their own chat, exactly once: {r['exactly_once']} "
        f"(missing {r['missing']}, duplicated {r['duplicated']}, misrouted {r['misrouted']}, "
        f"wrong {r['wrong']}; apologies among the answers {r['apologies']})",
        f"to the first visible text: p50 {r['first_p50_s']:.2f} s, p95 {r['first_p95_s']:.2f} s; "
        f"to the final text: p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, p99 {r['p99_s']:.2f} s",
        f"{r['commands_per_s']:.1f} commands/s over {r['wall_s']:.1f} s; peak memory {r['peak_rss_mib']:.0f} MiB; "
        f"deliveries {r['delivery']}; 429s met by scope {r['throttled'] or 'none'}"]
    if r["flood"] is not None:
        f = r["flood"]
        lines.append(f"flood mode: {f['requests']} requests, refused {f['refused'] or 'none'}, "
                     f"sent into a pending retry_after {f['sent_into_pending']}, longest ban {f['longest_ban_s']} s")
    lines += [f"  {p}" for p in r["problems"][:20]]
    if len(r["problems"]) > 20:
        lines.append(f"  ... and {len(r['problems']) - 20} more")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chats", type=int, default=50)
    p.add_argument("--commands", type=int, default=3, help="commands per chat")
    p.add_argument("--model", help="model folder (default: the shipped model, model/shipped)")
    p.add_argument("--config", help="config file (default: config.toml, when there is one)")
    p.add_argument("--length", type=int, help="characters per reply (default: [chat] length)")
    p.add_argument("--edit-interval", type=float, help="seconds between edits (default: [telegram] edit_interval_s)")
    p.add_argument("--seed", type=int, default=0, help="which commands each chat sends")
    p.add_argument("--flood", action="store_true", help="the emulator enforces Telegram's flood limits")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from bot.process import logs
    from config import load
    from model import bundle

    config = load(args.config)
    if args.model:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, path=args.model))
    elif not config.model.path and not bundle.SHIPPED_DIR.is_dir():
        p.error(f"there is no shipped model in {bundle.SHIPPED_DIR} yet: name a model folder with --model")
    if args.length:
        config = dataclasses.replace(config, chat=dataclasses.replace(config.chat, length=args.length))
    if args.edit_interval is not None:
        config = dataclasses.replace(config, telegram=dataclasses.replace(
            config.telegram, edit_interval_s=args.edit_interval))
    if reason := emulator.missing():
        p.error(reason)
    logs.setup("WARNING")  # the adapter's warnings (failed requests) show; one line a request would not

    with emulator.running(BOT_USERNAME) as url:
        report = asyncio.run(run(config, url, args.chats, args.commands, seed=args.seed, flood=args.flood))
    print(json.dumps(report, indent=1) if args.json else summary(report))
    ok = report["exactly_once"] and not (report["flood"] or {}).get("sent_into_pending")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
