"""Nothing lost in a crash: `cervantes serve` (SQLite) killed with kill -9 in the middle of a burst
of 50 chats, then started again, answers every command exactly once, in each chat's order.

The kill comes while replies are on their way: the emulator holds the bot's sends (POST /hold), so
at the kill some commands are stored and not run, some are being written, some replies wait in the
outbox and some are in a request that never reaches Telegram. Replies Telegram accepted before the
hold have had a second to be marked done. (A kill in the instant between Telegram's acceptance and
the done mark can still post a reply twice: the duplicate window, measured by
benchmarks/crash_duplicates.py.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bot.chat import messages

BIN = Path(sys.executable).parent
CHATS = 50
FIRST_CHAT = 30_001
SEED = "Sancho dijo"
START_S = 240  # loading and compiling the model, on two cores other tests share
LENGTH = 60  # characters each /cervantes writes; /longitud changes it only for the chat's later texts


def serve(tmp_path: Path, emulator: str, model_dir: Path, token: str, log_name: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERVANTES_", "TELEGRAM_", "DISCORD_"))}
    env.update(TELEGRAM_TOKEN=token, CERVANTES_TELEGRAM_BASE_URL=f"{emulator}/bot",
               CERVANTES_MODEL_PATH=str(model_dir), CERVANTES_STORAGE_PATH=str(tmp_path / "cervantes.db"),
               CERVANTES_MODEL_DEVICE="cpu", CERVANTES_GENERATION_CHUNK_STEPS="10",
               CERVANTES_GENERATION_MAX_BATCH="4", CERVANTES_CHAT_LENGTH=str(LENGTH),
               CERVANTES_TELEGRAM_STREAM_AFTER_S="30",  # one message a reply: what a user counts
               TF_CPP_MIN_LOG_LEVEL="3")
    log = open(tmp_path / log_name, "w")
    return subprocess.Popen([BIN / "cervantes", "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, env=env)


async def answered(peer, chats) -> dict[int, list[str]]:
    return {chat: await peer.replies(chat) for chat in chats}


async def test_kill_9_mid_burst_then_a_restart_answers_every_command_exactly_once(
        emulator, peer, token, tiny_model_dir, tmp_path):
    chats = range(FIRST_CHAT, FIRST_CHAT + CHATS)
    bot = serve(tmp_path, emulator, tiny_model_dir, token, "first.log")
    try:
        await peer.say("/ayuda", 1)  # once answered, the bot is up and polling
        await peer.wait_for(1, lambda r: r, timeout=START_S)
        for chat in chats:  # the burst: two commands a chat, all at once
            await peer.say(f"/cervantes {SEED}", chat)
        for i, chat in enumerate(chats):
            await peer.say(f"/longitud {100 + i}", chat)
        deadline = time.monotonic() + 60
        while sum(map(len, (await answered(peer, chats)).values())) < 20:  # in the middle of it
            assert time.monotonic() < deadline, "the bot never answered the burst"
            await asyncio.sleep(0.05)
        await peer.hold()  # replies on their way stay on their way
        await asyncio.sleep(1.0)  # those Telegram took before the hold are marked done meanwhile
        os.kill(bot.pid, signal.SIGKILL)
        bot.wait(timeout=10)
    finally:
        if bot.poll() is None:
            bot.kill()
    before = sum(map(len, (await answered(peer, chats)).values()))
    assert before < 2 * CHATS, "the kill came after the burst: nothing to recover"
    await asyncio.sleep(1.0)  # the emulator sees the killed bot's connections close...
    await peer.hold(False)  # ...so its held requests never arrive

    bot = serve(tmp_path, emulator, tiny_model_dir, token, "second.log")
    try:
        deadline = time.monotonic() + START_S
        while sum(map(len, (replies := await answered(peer, chats)).values())) < 2 * CHATS:
            missing = [c for c, r in replies.items() if len(r) < 2]
            assert time.monotonic() < deadline, (
                f"{len(missing)} chats lack a reply after the restart (first: {missing[:3]}; "
                f"{before} replies came before the kill)\n" + (tmp_path / "second.log").read_text()[-3000:])
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # a duplicate would come now
        replies = await answered(peer, chats)
        bot.send_signal(signal.SIGTERM)
        bot.wait(timeout=30)
    finally:
        if bot.poll() is None:
            bot.kill()
    for i, chat in enumerate(chats):
        assert len(replies[chat]) == 2, f"chat {chat} got {len(replies[chat])} replies: {replies[chat]!r}"
        written, length = replies[chat]
        assert written.startswith(SEED) and len(written) == len(SEED) + LENGTH, written  # before /longitud
        assert length == messages.LENGTH_SET.format(value=100 + i), length
    with sqlite3.connect(tmp_path / "cervantes.db") as db:  # nothing of an answered command is kept
        assert db.execute("SELECT count(*) FROM inbox WHERE command IS NOT NULL OR chat_id != ''").fetchone() == (0,)
