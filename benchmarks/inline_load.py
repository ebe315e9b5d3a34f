"""Inline mode under load: N users typing `@bot <text>` at once, against the emulator the bot tests use.

    .venv/bin/python benchmarks/inline_load.py --users 20 --keystrokes 4 [--interval 0.3] [--model DIR] [--json]

The bot runs in this process as `cervantes serve` runs it (open_runtime, every batch shape compiled,
then TelegramAdapter polling the emulator, tests/telegram_emulator); the users type through the
emulator's client API. Each user types a phrase of their own: like a Telegram client, it sends an
inline query every `interval` seconds as the text grows (`keystrokes` queries, the last one the whole
phrase), the users starting within one interval of each other. The figure that matters is the time
from a user's last query to its answer (the emulator's timestamps): what a user waits once they stop
typing. Older queries should be superseded: never answered with a list, and not written in full.

Reports p50/p95/max of that time, how many last queries got three texts that start with the phrase,
how many older queries got a list anyway, the characters the service generated against what the
answered queries needed, and the batch sizes. Exits 1 if a last query was not answered with three
texts of its phrase.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import secrets
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter, as cli/main.py

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))  # the emulator's launcher lives with the tests that use it

from bot.process.runtime import open_runtime  # noqa: E402
from bot.telegram.adapter import TelegramAdapter  # noqa: E402
from config import Config  # noqa: E402
from model import seeds  # noqa: E402
from telegram_emulator import emulator  # noqa: E402

BOT_USERNAME = "CervantesInlineBot"
FIRST_USER = 30_001  # user ids FIRST_USER, FIRST_USER + 1, ...
NAMES = ["Sancho", "Dulcinea", "Rocinante", "el cura", "el barbero", "la sobrina", "el ventero", "Maritornes",
         "el bachiller", "Teresa", "Cardenio", "Dorotea", "Lucinda", "don Fernando", "el cautivo",
         "Zoraida", "Ginés", "Andrés", "el escudero", "la duquesa"]
VERBS = ["dijo", "respondió", "preguntó", "miró", "calló"]
ANSWER_WAIT_S = 15.0  # longer than Telegram waits for an answer (about 10 s)


def phrase(user: int) -> str:
    """What the user types: different for every user (letters every model knows)."""
    return f"{NAMES[user % len(NAMES)]} {VERBS[user // len(NAMES) % len(VERBS)]} que"


def keystrokes(text: str, count: int) -> list[str]:
    """The queries a client sends while `text` is typed: `count` growing prefixes, the last one whole."""
    return [text[:round(len(text) * (i + 1) / count)] for i in range(count)]


class Users:
    """The users' side of the emulator for one bot: inline queries and their answers."""

    def __init__(self, url: str, token: str):
        self.token = token
        self.http = httpx.AsyncClient(base_url=url, timeout=30)

    async def query(self, user_id: int, text: str) -> str:
        answer = await self.http.post("/inlineQuery", json={"token": self.token, "user_id": user_id, "query": text})
        answer.raise_for_status()
        return answer.json()["result"]

    async def answers(self) -> dict:
        answer = await self.http.post("/inlineAnswers", json={"token": self.token})
        answer.raise_for_status()
        return answer.json()["result"]

    async def close(self) -> None:
        await self.http.aclose()


async def drive(users: Users, count: int, strokes: int, interval_s: float, read, seed: int = 0) -> dict:
    """Every user types at once; the report, once every last query is answered or ANSWER_WAIT_S passed."""
    rng = random.Random(seed)
    sent: dict[int, list[str]] = {}  # user -> query ids, oldest first

    async def one_user(user: int) -> None:
        await asyncio.sleep(rng.uniform(0, interval_s))
        ids = sent.setdefault(user, [])
        for k, text in enumerate(keystrokes(phrase(user), strokes)):
            if k:
                await asyncio.sleep(interval_s)
            ids.append(await users.query(FIRST_USER + user, text))

    await asyncio.gather(*(one_user(u) for u in range(count)))
    deadline = time.monotonic() + ANSWER_WAIT_S
    while True:
        answers = await users.answers()
        if all(answers[ids[-1]]["answered"] for ids in sent.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return check(sent, answers, read)


def check(sent: dict[int, list[str]], answers: dict, read) -> dict:
    """Each user's last answer against their phrase as the model reads it (`read`: its known characters)."""
    waits, good, problems, older_listed = [], 0, [], 0
    for user, ids in sent.items():
        last = answers[ids[-1]]
        answered = last["answered"]
        text = read(phrase(user))
        if not answered:
            problems.append(f"user {user}: {last['query']!r} never answered")
            continue
        waits.append((answered["at"] - last["at"]) / 1000)
        shown = [r["input_message_content"]["message_text"] for r in answered["results"]]
        if len(shown) == 3 and all(t.startswith(text) for t in shown):
            good += 1
        else:
            problems.append(f"user {user}: {text!r} got {len(shown)} texts, button {answered.get('button')}")
        older_listed += sum(bool((answers[i]["answered"] or {}).get("results")) for i in ids[:-1])

    def percentile(q):
        return float(np.percentile(waits, q)) if waits else float("nan")

    return {"users": len(sent), "queries": sum(map(len, sent.values())), "answered_well": good,
            "older_answered_with_a_list": older_listed, "p50_s": percentile(50), "p95_s": percentile(95),
            "max_s": max(waits, default=float("nan")), "problems": problems}


async def run(config: Config, url: str, count: int, strokes: int, interval_s: float, seed: int = 0) -> dict:
    """The bot on `config`, against the emulator at `url`, under the load; the report."""
    token = f"{secrets.randbelow(10**9) + 10**9}:INLN{secrets.token_urlsafe(27)}"
    with tempfile.TemporaryDirectory() as tmp:
        config = dataclasses.replace(
            config, storage=dataclasses.replace(config.storage, path=str(Path(tmp) / "inline.db")),
            telegram=dataclasses.replace(config.telegram, mode="polling", base_url=f"{url}/bot",
                                         inline_rate_limit_per_minute=0))
        users = Users(url, token)
        try:
            async with open_runtime(config) as runtime:
                await runtime.service.warm()  # as serve does: no user meets an XLA compilation
                adapter = TelegramAdapter(runtime.commands, config.telegram, token)
                await adapter.start()
                before = runtime.service.stats()
                try:
                    report = await drive(users, count, strokes, interval_s, partial(read, runtime.service), seed)
                finally:
                    await adapter.stop()
                after = runtime.service.stats()
        finally:
            await users.close()
    report.update(keystrokes=strokes, interval_s=interval_s, length=config.telegram.inline_length,
                  generated=after.characters - before.characters,
                  needed=3 * config.telegram.inline_length * report["answered_well"],
                  requests=after.requests - before.requests, chunks=after.chunks - before.chunks)
    return report


def read(service, text: str) -> str:
    """A seed as the service reads it: the characters its model knows (a test model lacks some)."""
    return seeds.clean(text, service.sampler.vocab, service.strip_accents, service.max_seed_chars).text


def summary(r: dict) -> str:
    lines = [
        f"{r['users']} users typing, {r['keystrokes']} queries each {r['interval_s']} s apart "
        f"({r['queries']} queries, three texts of {r['length']} characters asked per query):",
        f"last query to its answer: p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, max {r['max_s']:.2f} s; "
        f"{r['answered_well']}/{r['users']} answered with three texts of their phrase",
        f"older queries answered with a list anyway: {r['older_answered_with_a_list']}; characters generated "
        f"{r['generated']} for {r['needed']} answered ({r['requests']} requests, {r['chunks']} model chunks)"]
    lines += [f"  {p}" for p in r["problems"][:20]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--keystrokes", type=int, default=4, help="queries each user's client sends")
    p.add_argument("--interval", type=float, default=0.3, help="seconds between a client's queries")
    p.add_argument("--model", help="model folder (default: the shipped model, model/shipped)")
    p.add_argument("--config", help="config file (default: config.toml, when there is one)")
    p.add_argument("--length", type=int, help="characters per text (default: [telegram] inline_length)")
    p.add_argument("--seed", type=int, default=0, help="when each user starts typing")
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
        config = dataclasses.replace(config, telegram=dataclasses.replace(config.telegram, inline_length=args.length))
    if reason := emulator.missing():
        p.error(reason)
    logs.setup("WARNING")

    with emulator.running(BOT_USERNAME) as url:
        report = asyncio.run(run(config, url, args.users, args.keystrokes, args.interval, seed=args.seed))
    print(json.dumps(report, indent=1) if args.json else summary(report))
    return 0 if report["answered_well"] == report["users"] else 1


if __name__ == "__main__":
    sys.exit(main())
