"""Several real `cervantes serve` processes for one bot, against the Telegram emulator and one
PostgreSQL: what tests/bot_process/test_leader.py and benchmarks/failover.py drive.

Each replica is `cervantes serve` in a process of its own, elected through `[storage] url`, with a
status file of its own. Until the state itself moves to PostgreSQL (issue 21, section 1) the
replicas share the PostgreSQL database they elect on (`shared_store` below)
(return {}: `[storage] url`, set for the election, then holds the chats too).

The users' side marks each command so that its answer can be told apart: `/longitud N` is answered
"Longitud fijada en N caracteres.", N unique within the chat, sent whole and without the model.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ANSWER = re.compile(r"Longitud fijada en (\d+) caracteres\.")


def shared_store(folder: Path, postgres_url: str) -> dict[str, str]:
    """Where the replicas keep the chats' state: the PostgreSQL database they elect on (the URL is
    already in their environment); the folder keeps only their status files and logs."""
    return {}


class Replica:
    def __init__(self, name: str, folder: Path, env: dict[str, str]):
        self.name, self.folder, self.env = name, folder, env
        self.status_path = folder / f"{name}.status.json"
        self.log_path = folder / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self._log_from = 0  # where this run's log begins: a restart appends to the file

    def start(self) -> None:
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "a")
        self.process = subprocess.Popen([BIN / "cervantes", "serve"], cwd=self.folder, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        env={**self.env, "CERVANTES_STORAGE_STATUS_PATH": str(self.status_path)})
        log.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> float:
        """kill -9; the time.time() it was sent."""
        at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return at

    def term(self) -> float:
        at = time.time()
        self.process.send_signal(signal.SIGTERM)
        return at

    def log(self) -> str:
        """This run's log."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_from)
            return f.read().decode(errors="replace")

    def roles(self) -> list[str]:
        """The roles this replica took, in order, from its log ("standby", "active", ...)."""
        return re.findall(r"telegram bot \d+: (standby|taking over|active|offline|handed over)", self.log())

    def role(self) -> str | None:
        roles = self.roles()
        return roles[-1] if roles else None

    def status(self) -> dict | None:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None

    def health(self) -> subprocess.CompletedProcess:
        return subprocess.run([BIN / "cervantes", "health"], cwd=self.folder, capture_output=True, text=True,
                              timeout=30, env={**self.env, "CERVANTES_STORAGE_STATUS_PATH": str(self.status_path)})


def replica_env(emulator: str, postgres_url: str, token: str, model_dir: Path, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERVANTES_", "TELEGRAM_", "DISCORD_"))}
    return {**env, "TELEGRAM_TOKEN": token, "CERVANTES_STORAGE_URL": postgres_url,
            **shared_store(folder, postgres_url),
            "CERVANTES_TELEGRAM_BASE_URL": f"{emulator}/bot", "CERVANTES_MODEL_PATH": str(model_dir),
            "CERVANTES_MODEL_DEVICE": "cpu", "CERVANTES_CHAT_RATE_LIMIT_PER_MINUTE": "0",
            "CERVANTES_CHAT_USER_RATE_LIMIT_PER_MINUTE": "0", "CERVANTES_GENERATION_MAX_BATCH": "8",
            "TF_CPP_MIN_LOG_LEVEL": "3"}


async def wait_until(check, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(every)
    return result


async def answers(peer, chat_id: int) -> list[int]:
    """The N of each `/longitud N` answered in the chat, in the order the bot posted them."""
    return [int(m.group(1)) for text in await peer.replies(chat_id) if (m := ANSWER.fullmatch(text))]


async def sends_after(peer, at: float, via: str | None = None) -> list[float]:
    """time.time() of each sendMessage the bot made after `at` (the emulator's clock is this host's);
    `via`: only those sent to that host (one replica's address of the emulator)."""
    return sorted(c["at"] / 1000 for c in await peer.calls("sendMessage")
                  if c["at"] / 1000 > at and (via is None or c["via"].startswith(via + ":")))
