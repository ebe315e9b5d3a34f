"""kill -9 at random moments of a burst: how many commands are lost, and how many answered twice.

    .venv/bin/python benchmarks/crash_duplicates.py --kills 10 --chats 50 [--model DIR] [--json]

`cervantes serve` runs as a process of its own (SQLite file, the inbox) against the Telegram
emulator the tests use (tests/telegram_emulator). A first round, not killed, measures how long a
burst takes to answer (T). Then each round: `--chats` new private chats each send `/cervantes
<seed>` and `/longitud N` at once; the bot is killed (SIGKILL) after a delay drawn uniformly from
[0, T], started again on the same file, and the round ends once every chat shows its two replies
and nothing more came for `--settle` seconds (the restarted bot serves the next round). A chat
with fewer messages than commands lost one; one with more got a reply twice (a reply posted in
part before the kill and whole after it counts so).

The duplicate window: Telegram has taken a reply's first message (sendMessage carried out) and the
kill comes before the inbox has committed what follows from it: the done mark, for a reply sent
as one message, or the note of that message's id, for a reply shown while it is still being
written (a restarted bot then finishes the reply in that message rather than post another). It
lasts from Telegram's answer on its way back, through the outbox noticing it, to the commit of one
SQLite transaction. Everything else the bot can be doing at a kill is safe: a command not
yet stored was never confirmed to Telegram (it comes again), and a stored one not yet answered
runs again once.

Exits 1 when a command was lost (any duplicate is reported, not an error: it is the window).
With PostgreSQL the same window holds across a takeover (the commit is on the server);
benchmarks/failover.py counts what is lost and duplicated there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))  # the emulator's launcher lives with the tests that use it

from telegram_emulator import emulator  # noqa: E402
from telegram_emulator.peer import Peer  # noqa: E402

BOT_USERNAME = "CervantesCrashBot"
SEED = "Sancho dijo"
TOKEN = "1234567:CRASHBENCHxxxxxxxxxxxxxxxxxxxxxxxxxx"


def start(workdir: Path, url: str, model: Path, max_batch: int, n: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERVANTES_", "TELEGRAM_", "DISCORD_"))}
    env.update(TELEGRAM_TOKEN=TOKEN, CERVANTES_TELEGRAM_BASE_URL=f"{url}/bot", CERVANTES_MODEL_PATH=str(model),
               CERVANTES_STORAGE_PATH=str(workdir / "cervantes.db"), CERVANTES_MODEL_DEVICE="cpu",
               CERVANTES_GENERATION_MAX_BATCH=str(max_batch), CERVANTES_CHAT_RATE_LIMIT_PER_MINUTE="0",
               TF_CPP_MIN_LOG_LEVEL="3")
    log = open(workdir / f"serve-{n}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, env=env)


async def counts(peer: Peer, chats: range) -> dict[int, list[str]]:
    answer = await peer.http.post("/getUpdatesHistory", json={"token": peer.token})
    shown: dict[int, list[str]] = {c: [] for c in chats}
    for u in sorted(answer.json()["result"], key=lambda u: u["messageId"]):
        chat = int(u["message"].get("chat_id", 0) or 0)
        if chat in shown:
            shown[chat].append(u["message"]["text"])
    return shown


async def burst(peer: Peer, chats: range) -> None:
    for chat in chats:
        await peer.say(f"/cervantes {SEED}", chat)
    for i, chat in enumerate(chats):
        await peer.say(f"/longitud {100 + i % 900}", chat)


async def settle(peer: Peer, chats: range, settle_s: float, timeout_s: float) -> dict[int, list[str]]:
    """What every chat shows once each has its two replies and nothing changed for settle_s."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while True:
        shown = await counts(peer, chats)
        sizes = {c: len(m) for c, m in shown.items()}
        if sizes != last:
            last, since = sizes, time.monotonic()
        if all(n >= 2 for n in sizes.values()) and time.monotonic() - since >= settle_s:
            return shown
        if time.monotonic() > deadline:
            return shown
        await asyncio.sleep(0.2)


async def run(args) -> dict:
    model = Path(args.model) if args.model else ROOT / "model" / "shipped"
    rounds = []
    with tempfile.TemporaryDirectory() as tmp, emulator.running(BOT_USERNAME) as url:
        workdir = Path(tmp)
        peer = Peer(url, TOKEN)
        bot = start(workdir, url, model, args.max_batch, 0)
        try:
            await peer.say("/ayuda", 1)
            await settle(peer, range(1, 2), 0, 300)  # up: loaded, compiled, polling
            first = 10_000
            began = time.monotonic()
            chats = range(first, first + args.chats)
            await burst(peer, chats)
            await settle(peer, chats, 0, 300)
            burst_s = time.monotonic() - began
            rng = random.Random(args.seed)
            for n in range(1, args.kills + 1):
                first += args.chats
                chats = range(first, first + args.chats)
                delay = rng.uniform(0, burst_s)
                began = time.monotonic()
                await burst(peer, chats)
                await asyncio.sleep(max(0.0, delay - (time.monotonic() - began)))
                os.kill(bot.pid, signal.SIGKILL)
                bot.wait()
                seen = sum(map(len, (await counts(peer, chats)).values()))
                bot = start(workdir, url, model, args.max_batch, n)
                shown = await settle(peer, chats, args.settle, 300)
                lost = sum(max(0, 2 - len(m)) for m in shown.values())
                twice = sum(max(0, len(m) - 2) for m in shown.values())
                wrong = sum(1 for i, (c, m) in enumerate(shown.items()) if len(m) == 2 and not (
                    m[0].startswith(SEED) and m[1].endswith(f"{100 + i % 900} caracteres.")))
                rounds.append({"kill_after_s": round(delay, 2), "messages_before_kill": seen,
                               "lost": lost, "duplicated": twice, "out_of_order": wrong})
                print(json.dumps(rounds[-1]), file=sys.stderr)
        finally:
            if bot.poll() is None:
                bot.send_signal(signal.SIGTERM)
                bot.wait(timeout=30)
            await peer.http.aclose()
    commands = 2 * args.chats * args.kills
    return {"kills": args.kills, "chats_per_burst": args.chats, "commands": commands,
            "burst_s": round(burst_s, 2), "lost": sum(r["lost"] for r in rounds),
            "duplicated": sum(r["duplicated"] for r in rounds),
            "out_of_order": sum(r["out_of_order"] for r in rounds),
            "kills_with_a_duplicate": sum(1 for r in rounds if r["duplicated"]), "rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--chats", type=int, default=50)
    p.add_argument("--model", help="model folder (default: the shipped model, model/shipped)")
    p.add_argument("--max-batch", type=int, default=16, help="[generation] max_batch (fewer shapes to compile)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds with no new message that end a round")
    p.add_argument("--seed", type=int, default=0, help="the kill delays drawn")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['kills']} kills (SIGKILL at a random moment of a burst of {args.chats} chats x 2 "
              f"commands, {report['burst_s']} s long unkilled), {report['commands']} commands: "
              f"{report['lost']} lost, {report['duplicated']} answered twice "
              f"({report['kills_with_a_duplicate']} of {report['kills']} kills), "
              f"{report['out_of_order']} out of order")
    return 1 if report["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
