"""Faults a public bot meets: a crash mid-burst, a failing model, a full disk, a read-only database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import numpy as np

from bot.chat import messages
from bot.chat.commands import Commands
from config import ChatSection
from service.generation import GenerationService
from storage import ChatKey, Continuation, Storage, StorageError
from bot.chat.parsing import parse  # noqa: E402
from recorder import Recorder, say

DEFAULT_SHOWN = f"es {ChatSection().temperature:g}.".replace(".", ",", 1)  # "es 0,8.": the default temperature

CHAT = ChatKey("telegram", "42")


async def test_kill_9_mid_burst_loses_no_confirmed_setting(tiny_model_dir, tmp_path):
    db = tmp_path / "cervantes.db"
    env = {**os.environ, "CERVANTES_MODEL_PATH": str(tiny_model_dir), "CERVANTES_STORAGE_PATH": str(db),
           "CERVANTES_CHAT_RATE_LIMIT_PER_MINUTE": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}  # a burst of 382
    bot = subprocess.Popen([sys.executable, "-m", "cli.main", "chat", "--chat-id", "42"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path, bufsize=1)
    values = [f"{v / 100:.2f}" for v in range(10, 201)]  # 0.10, 0.11, ... 2.00: each a new setting
    for v in values:  # a burst: all sent at once; the bot answers them one by one
        bot.stdin.write(f"/temperatura {v}\n/longitud {50 + len(v)}\n")
    bot.stdin.flush()
    confirmed = []
    while len(confirmed) < 40:
        line = bot.stdout.readline()
        assert line, "the bot stopped answering"
        if line.startswith("Temperatura fijada en "):
            confirmed.append(line.removeprefix("Temperatura fijada en ").strip().rstrip("."))
    os.kill(bot.pid, signal.SIGKILL)
    bot.wait()

    async with await Storage.open(db) as storage:
        assert await storage.integrity_check() == "ok"
        stored = (await storage.get_settings(("console", "42"))).temperature
    last = float(confirmed[-1].replace(",", "."))
    assert stored is not None and stored >= last  # the last confirmed one, or one sent after it


def _commands(service, storage) -> Commands:
    return Commands(service, storage, ChatSection(rate_limit_per_minute=0, length=60), "tiny")


async def test_a_failing_model_gets_an_apology_and_the_next_request_works(tiny_sampler, tmp_path, monkeypatch):
    real = tiny_sampler.sample
    calls = {"n": 0}

    def fails_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the accelerator caught fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(tiny_sampler, "sample", fails_once)
    async with GenerationService(tiny_sampler) as service, await Storage.open(tmp_path / "c.db") as storage:
        c = _commands(service, storage)
        assert await say(c, "/cervantes Sancho", CHAT) == messages.FAILED
        assert (await say(c, "/cervantes Sancho", CHAT)).startswith("Sancho")


async def test_read_only_database_keeps_generating_and_says_so(tiny_sampler, tmp_path):
    db = tmp_path / "c.db"
    async with await Storage.open(db) as storage:
        await storage.set_length(CHAT, 70)
    async with GenerationService(tiny_sampler) as service, await Storage.open(db, read_only=True) as storage:
        c = _commands(service, storage)
        assert await say(c, "/temperatura 1", CHAT) == messages.SETTING_NOT_SAVED
        reply = await say(c, "/cervantes Sancho", CHAT)
        assert reply.startswith("Sancho") and reply.endswith(messages.NOT_SAVED)
        assert await say(c, "/olvidar", CHAT) == messages.SETTING_NOT_SAVED
        assert DEFAULT_SHOWN in await say(c, "/temperatura", CHAT)  # reads still work


async def test_full_disk_keeps_generating_and_says_so(tiny_sampler, tmp_path):
    async with GenerationService(tiny_sampler) as service, await Storage.open(tmp_path / "c.db") as storage:
        c = _commands(service, storage)
        (pages,) = (await storage._db.execute_fetchall("PRAGMA page_count"))[0]
        await storage._db.execute(f"PRAGMA max_page_count = {pages}")  # no page more: SQLITE_FULL
        filler = Continuation(state=np.zeros(16, np.float32), model_id="tiny", last_char="a", tail="a")
        with contextlib.suppress(StorageError):  # fill what room is left in the pages there are
            for i in range(10_000):
                await storage.save_continuation(("filler", str(i)), filler)
        with contextlib.suppress(StorageError):
            for i in range(10_000):
                await storage.set_length(("filler", str(i)), 100)
        reply = await say(c, "/cervantes Sancho", CHAT)
        assert reply.startswith("Sancho") and reply.endswith(messages.NOT_SAVED)
        assert await say(c, "/longitud 80", CHAT) == messages.SETTING_NOT_SAVED


async def test_a_database_that_cannot_be_read_still_gets_answers(tiny_sampler, tmp_path, monkeypatch):
    async with GenerationService(tiny_sampler) as service, await Storage.open(tmp_path / "c.db") as storage:
        commands = _commands(service, storage)

        async def unreadable(*args, **kwargs):
            raise StorageError(f"{tmp_path / 'c.db'}: database disk image is malformed")

        monkeypatch.setattr(storage, "get_settings", unreadable)
        monkeypatch.setattr(storage, "get_continuation", unreadable)
        out = Recorder()
        await commands.run(ChatKey("telegram", "1"), parse("/cervantes Sancho"), out)
        await commands.run(ChatKey("telegram", "1"), parse("/continuar"), out)
        await commands.run(ChatKey("telegram", "1"), parse("/temperatura"), out)
    written, continued, temperature = out.replies
    assert written.startswith("Sancho") and written.endswith(messages.SETTINGS_NOT_READ)  # on the defaults
    assert continued == messages.CONTINUATION_NOT_READ
    assert DEFAULT_SHOWN in temperature
