"""What the logs show an admin, and what they never show: ids, names, message text, tokens, secrets.

The whole log of `cervantes serve` at DEBUG is searched, against the Telegram emulator in webhook
mode; Discord's own HTTP client is run against a local server that answers 429, as Discord does.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.process import logs
from storage import ChatKey, tags
from telegram_emulator.emulator import free_port

BIN = Path(sys.executable).parent
SECRET = "SecretoDelToboso_0123456789"
GROUP = -1009876543210  # a supergroup's id, as Telegram gives them
USER = 987654321
NAME = "Dulcinea"
SEED = "Rocinante galopa"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERVANTES_", "TELEGRAM_", "DISCORD_"))}
    return {**env, **extra}


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("httpx", "httpcore", "telegram", "discord", "aiohttp", "aiosqlite", "asyncio", "tornado", "absl"):
        logging.getLogger(name).setLevel(logging.NOTSET)


async def test_at_debug_serve_logs_no_id_name_text_token_or_secret(emulator, token, peer, tiny_model_dir, tmp_path):
    """Webhook mode with its secret, a group message from a named member, a 429 on its reply: the
    whole DEBUG log holds none of them, and still says what happened, by the chat's tag."""
    pytest.importorskip("tornado", reason="webhook mode needs python-telegram-bot[webhooks] (tornado)")
    port = free_port()
    env = clean_env(
        TELEGRAM_TOKEN=token, TELEGRAM_WEBHOOK_SECRET=SECRET, CERVANTES_LOGGING_LEVEL="DEBUG",
        CERVANTES_TELEGRAM_MODE="webhook", CERVANTES_TELEGRAM_LISTEN="127.0.0.1", CERVANTES_TELEGRAM_PORT=str(port),
        CERVANTES_TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/hook", CERVANTES_TELEGRAM_BASE_URL=f"{emulator}/bot",
        CERVANTES_MODEL_PATH=str(tiny_model_dir), CERVANTES_MODEL_DEVICE="cpu",
        CERVANTES_STORAGE_PATH=str(tmp_path / "cervantes.db"), CERVANTES_CHAT_LENGTH="60",
        CERVANTES_CHAT_MIN_LENGTH="10", CERVANTES_GENERATION_CHUNK_STEPS="10")
    out = tmp_path / "serve.log"
    with out.open("w") as log_file:
        process = subprocess.Popen([BIN / "cervantes", "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                   stdout=log_file, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 180
            while "receiving updates by webhook" not in out.read_text():
                assert process.poll() is None, out.read_text()[-3000:]
                assert time.monotonic() < deadline, "serve did not start"
                await asyncio.sleep(0.2)
            await peer.fail_next("sendMessage", error_code=429, description="Too Many Requests: retry after 1",
                                 retry_after=1)
            await peer.say(f"/cervantes@CervantesTestBot {SEED}", GROUP, chat_type="supergroup", user_id=USER,
                           first_name=NAME)
            replies = await peer.wait_for(GROUP, lambda r: len(r) >= 1, timeout=60)
            assert len(await peer.calls("sendMessage", GROUP)) == 2  # refused once (429), then sent
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    log = out.read_text()
    tag = tags.chat_tag(tags.load_secret(tmp_path / "cervantes.db", create=False), "telegram", str(GROUP))
    assert process.returncode == 0, log[-3000:]
    leaks = [hidden for hidden in (SECRET, token.split(":")[1], str(GROUP)[4:], str(USER), NAME, SEED,
                                   replies[0][len(SEED):][:20]) if hidden in log]
    assert not leaks, f"in the log: {leaks}"
    assert f"telegram asked chat {tag} to wait 1 s" in log  # the 429, by tag
    assert f"post for chat {tag}: part 0" in log  # the project's own DEBUG line per request
    assert " DEBUG " in log


async def test_a_discord_429_names_the_channel_by_its_tag(aiohttp_429_server, restore_logging):
    """discord.py warns "We are being rate limited. POST .../channels/<id>/messages" at INFO: the id
    is replaced by the channel's tag, as the project's own lines name it."""
    import discord

    stream = io.StringIO()
    logs.setup("INFO", stream=stream, environ={})
    http = discord.http.HTTPClient(asyncio.get_running_loop())
    try:
        await http.static_login("MTIzNDU2Nzg5MDEyMzQ1Njc4.GAbcde.abcdefghijklmnopqrstuvwxyz0123456789")
        await http.send_message(1234567890123456789, params=discord.http.MultipartParameters(
            payload={"content": "Sancho dijo"}, multipart=None, files=None))
    finally:
        await http.close()
    log = stream.getvalue()
    assert "We are being rate limited" in log, log
    assert "1234567890123456789" not in log and "abcdefghijklmnopqrstuvwxyz" not in log, log
    assert f"/channels/<{ChatKey('discord', '1234567890123456789').tag}>/messages" in log, log


@pytest.fixture
async def aiohttp_429_server(monkeypatch):
    """Discord's REST API as far as the test needs: who the bot is, and a channel's messages, whose
    first post is refused with 429 (Discord's rate limit answer: a JSON body with retry_after, and the
    Via header of its proxies, which discord.py reads as "not a Cloudflare ban")."""
    import discord
    from aiohttp import web

    posts = []

    def answer(body: dict, status: int = 200, **headers) -> web.Response:  # discord.py wants exactly this type
        return web.Response(body=json.dumps(body).encode(), status=status,
                            headers={"Content-Type": "application/json", **headers})

    async def me(request):
        return answer({"id": "1", "username": "cervantes", "discriminator": "0", "avatar": None})

    async def messages(request):
        posts.append(request.match_info["channel"])
        if len(posts) == 1:
            return answer({"message": "You are being rate limited.", "retry_after": 0.2, "global": False},
                          status=429, Via="1.1 google")
        return answer({"id": "2", "channel_id": request.match_info["channel"], "content": "Sancho dijo"})

    app = web.Application()
    app.router.add_get("/api/v10/users/@me", me)
    app.router.add_post("/api/v10/channels/{channel}/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    yield posts
    await runner.cleanup()
