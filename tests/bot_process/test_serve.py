"""`cervantes serve` starting and stopping as an admin meets it: one clear line for every start-up
failure, nothing loaded before the cheap checks, the status file only once the adapters are up, and
a stop bounded within docker stop's 10 s even when an adapter hangs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.process import serve as serve_module
from bot.process import startup, status
from bot.process.startup import StartupError
from config import Config, ModelSection, StorageSection, TelegramSection
from cli.main import main

BIN = Path(sys.executable).parent
TOKEN = "123456789:AAFakeTokenThatMustNeverBeLogged_x9"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERVANTES_", "TELEGRAM_", "DISCORD_"))}
    return {**env, **extra}


# --- before anything loads ------------------------------------------------------------------------

def test_no_token_and_no_terminal_fails_at_once_with_what_to_set(tmp_path):
    """A container with an empty .env: one line, a non-zero exit, and TensorFlow never imported."""
    probe = ("import sys; from cli.main import main; rc = main(['serve']); "
             "print([m for m in ('tensorflow', 'numpy', 'aiosqlite') if m in sys.modules]); sys.exit(rc)")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == "[]\n"
    assert done.stderr == ("cervantes: no bot token: set TELEGRAM_TOKEN and/or DISCORD_TOKEN (in .env, or the "
                           "environment); without one serve talks on the console, and there is no terminal\n")
    assert time.monotonic() - started < 10  # seconds, not the model's load
    assert list(tmp_path.iterdir()) == []  # no database either

    installed = subprocess.run([BIN / "cervantes", "serve"], cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=60)
    assert installed.returncode == 1 and installed.stderr == done.stderr


def test_webhook_mode_without_its_secret_refuses_to_start(tmp_path, monkeypatch, capsys):
    for name in [k for k in os.environ if k.startswith(("CERVANTES_", "TELEGRAM_", "DISCORD_"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("CERVANTES_TELEGRAM_MODE", "webhook")
    monkeypatch.setenv("CERVANTES_TELEGRAM_WEBHOOK_URL", "https://bot.example.org/hook")
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err == ('cervantes: [telegram] mode = "webhook" needs TELEGRAM_WEBHOOK_SECRET (in .env, or the '
                   "environment): without it anyone can post forged updates to the webhook\n")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "not a valid secret!")
    assert main(["serve"]) == 1
    assert "TELEGRAM_WEBHOOK_SECRET must be 1 to 256 of A-Z" in capsys.readouterr().err


@pytest.mark.parametrize("environ, interactive, refused", [
    ({}, False, "no bot token"),
    ({}, True, None),  # the console, on a terminal
    ({"DISCORD_TOKEN": "x"}, False, None),
    ({"TELEGRAM_TOKEN": TOKEN}, False, None),  # polling needs no secret
    ({"TELEGRAM_TOKEN_FILE": "/nonexistent/token"}, False, "TELEGRAM_TOKEN_FILE: cannot read /nonexistent/token"),
])
def test_the_checks_before_loading(environ, interactive, refused):
    if refused is None:
        startup.check(Config(), environ, interactive)
    else:
        with pytest.raises(StartupError, match=refused):
            startup.check(Config(), environ, interactive)


def test_a_webhook_secret_is_needed_only_by_telegram_in_webhook_mode():
    webhook = Config(telegram=TelegramSection(mode="webhook", webhook_url="https://bot.example.org/hook"))
    startup.check(webhook, {"DISCORD_TOKEN": "x"}, False)
    startup.check(webhook, {"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": "s3cret_-X"}, False)
    with pytest.raises(StartupError, match="needs TELEGRAM_WEBHOOK_SECRET"):
        startup.check(webhook, {"TELEGRAM_TOKEN": TOKEN}, False)


# --- adapters that cannot start -------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def test_an_unreachable_bot_api_ends_in_one_line_naming_the_host(tmp_path, tiny_model_dir):
    port = closed_port()
    cases = {"refused": (f"http://127.0.0.1:{port}/bot", f"cannot reach 127.0.0.1:{port}: connection refused"),
             "dns": ("http://cervantes-test.invalid/bot", "cannot resolve cervantes-test.invalid (DNS")}
    runs = {case: subprocess.Popen(
        [BIN / "cervantes", "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=clean_env(
            TELEGRAM_TOKEN=TOKEN, CERVANTES_TELEGRAM_BASE_URL=url, CERVANTES_MODEL_PATH=str(tiny_model_dir),
            CERVANTES_STORAGE_PATH=str(tmp_path / f"{case}.db")))
        for case, (url, _) in cases.items()}
    for case, process in runs.items():
        _, err = process.communicate(timeout=180)
        assert process.returncode == 1, err
        assert err.splitlines()[-1].startswith(f"cervantes: telegram did not start: {cases[case][1]}"), err
        assert "Traceback" not in err and TOKEN.split(":")[1] not in err, err


@pytest.mark.parametrize("error, said", [
    (ConnectionRefusedError(111, "Connection refused"), "cannot reach api.telegram.org: connection refused"),
    (TimeoutError(), "api.telegram.org did not answer in time"),
    (RuntimeError("Telegram rejected the bot token (TELEGRAM_TOKEN)"), "Telegram rejected the bot token"),
    (ValueError(f"bad answer for https://api.telegram.org/bot{TOKEN}/getMe"), "/bot<token>/getMe"),
])
def test_start_up_failures_are_described_without_the_token(error, said):
    wrapped = OSError("All connection attempts failed")
    wrapped.__cause__ = error
    line = startup.failure("telegram", wrapped if isinstance(error, OSError) else error, Config(),
                           {"TELEGRAM_TOKEN": TOKEN})
    assert line.startswith("telegram did not start: ") and said in line, line
    assert TOKEN not in line


def test_discord_login_failures_are_described():
    import discord

    line = startup.failure("discord", discord.LoginFailure("Improper token has been passed."), Config(), {})
    assert line == "discord did not start: discord.com refused the login: check DISCORD_TOKEN"
    gai = socket.gaierror(-2, "Name or service not known")
    assert startup.failure("discord", gai, Config(), {}) == \
        "discord did not start: cannot resolve discord.com (DNS: Name or service not known)"


# --- serve's life, in process ---------------------------------------------------------------------

class FakeAdapter:
    """A stand-in adapter whose start and stop can be held back or made to hang."""

    def __init__(self):
        self.connected: bool | None = None
        self.may_start = asyncio.Event()
        self.may_start.set()
        self.stop_hangs = False
        self.stopped = False
        self.failed: asyncio.Future = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        await self.may_start.wait()
        self.connected = True

    async def stop(self) -> None:
        if self.stop_hangs:
            await asyncio.Event().wait()  # as PTB's retry loop after an outage
        self.stopped = True


@pytest.fixture
def config(tmp_path, tiny_model_dir) -> Config:
    return Config(model=ModelSection(path=str(tiny_model_dir)), storage=StorageSection(path=str(tmp_path / "c.db")))


async def started(serving: asyncio.Task, adapter: FakeAdapter, timeout_s: float = 180) -> None:
    # serve compiles every shape first: seconds when quiet, more than a minute on a loaded 2-core box
    deadline = time.monotonic() + timeout_s
    while adapter.connected is None:
        assert not serving.done() and time.monotonic() < deadline, "serve did not start the adapter"
        await asyncio.sleep(0.02)


async def test_the_status_file_appears_only_once_the_adapters_have_started(config, monkeypatch):
    adapter = FakeAdapter()
    adapter.may_start.clear()
    monkeypatch.setattr(serve_module, "_adapters", lambda runtime, environ: [adapter])
    monkeypatch.setattr(status, "INTERVAL_S", 0.05)
    path = status.path_for(config.storage.path)
    serving = asyncio.create_task(serve_module.serve(config, {}))
    try:
        while not Path(config.storage.path).exists():  # the runtime is open: the adapter is starting
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert not path.exists()  # health says "not running, or still starting", never DISCONNECTED
        adapter.may_start.set()
        await started(serving, adapter)
        while not path.exists():
            await asyncio.sleep(0.02)
        report = json.loads(path.read_text())
        assert report["adapters"] == {"fake": {"connected": True, "last_ok": None}}
        assert report["model"]["loaded"] and report["worker"]["alive"] and report["worker"]["progress_at"] > 0
    finally:
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(serving, 30)
    assert not path.exists()


async def test_a_hanging_adapter_stop_is_bounded_and_the_database_still_closes(config, monkeypatch):
    adapter = FakeAdapter()
    adapter.stop_hangs = True
    monkeypatch.setattr(serve_module, "_adapters", lambda runtime, environ: [adapter])
    monkeypatch.setattr(serve_module, "STOP_BUDGET_S", 0.5)
    serving = asyncio.create_task(serve_module.serve(config, {}))
    await started(serving, adapter)
    signal.raise_signal(signal.SIGTERM)
    began = time.monotonic()
    await asyncio.wait_for(serving, 30)
    assert time.monotonic() - began < 3
    assert not Path(config.storage.path + "-wal").exists()  # the database was closed (WAL checkpointed)
    assert serve_module.STOP_BUDGET_S <= 8  # unpatched: within docker stop's 10 s, with room to close


async def test_a_stop_while_an_adapter_starts_ends_serve(config, monkeypatch):
    adapter = FakeAdapter()
    adapter.may_start.clear()  # as a start stuck on an unreachable API
    monkeypatch.setattr(serve_module, "_adapters", lambda runtime, environ: [adapter])
    serving = asyncio.create_task(serve_module.serve(config, {}))
    while not Path(config.storage.path).exists():
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    signal.raise_signal(signal.SIGTERM)
    await asyncio.wait_for(serving, 10)
    assert adapter.connected is None


async def test_an_adapter_that_fails_for_good_ends_serve_with_one_line(config, monkeypatch):
    adapter = FakeAdapter()
    monkeypatch.setattr(serve_module, "_adapters", lambda runtime, environ: [adapter])
    serving = asyncio.create_task(serve_module.serve(config, {"TELEGRAM_TOKEN": TOKEN}))
    await started(serving, adapter)
    adapter.failed.set_exception(RuntimeError(f"Telegram rejected the bot token {TOKEN} (401)"))
    with pytest.raises(StartupError) as err:
        await asyncio.wait_for(serving, 30)
    assert str(err.value) == "fake stopped: Telegram rejected the bot token <token> (401)"
    assert adapter.stopped


async def test_an_adapter_that_cannot_start_stops_the_ones_that_did(config, monkeypatch):
    first, second = FakeAdapter(), FakeAdapter()

    async def refuse() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    second.start = refuse
    monkeypatch.setattr(serve_module, "_adapters", lambda runtime, environ: [first, second])
    with pytest.raises(StartupError, match="did not start: cannot reach"):
        await asyncio.wait_for(serve_module.serve(config, {}), 60)
    assert first.stopped
