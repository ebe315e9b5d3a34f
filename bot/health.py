"""`cervantes health`: can the bot work right now? One line a check; healthy only if every one passes.

The checks: the model folder loads; the database takes a write; and, while `cervantes serve` runs
with adapters, every one of them is connected. For the last one serve rewrites a status file beside
the database (`<database>.status.json`) every STATUS_INTERVAL_S and removes it when it stops; a file
older than STALE_AFTER_S means serve died or is stuck. With no status file there is nothing to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cli.config import Config

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 15.0  # how often serve rewrites the status file
STALE_AFTER_S = 60.0  # an older status file is a dead or stuck serve


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.name}: {'ok' if self.ok else 'FAIL'} ({self.detail})"


def status_path(db_path: str | os.PathLike) -> Path:
    return Path(f"{db_path}.status.json")


# --- written by `cervantes serve` -----------------------------------------------------------------

def adapter_name(adapter) -> str:
    """TelegramAdapter -> "telegram"."""
    return type(adapter).__name__.removesuffix("Adapter").lower()


def connected(adapter) -> bool:
    """Whether an adapter can receive messages now: its own `connected`, else what its library says."""
    own = getattr(adapter, "connected", None)
    if own is not None:
        return bool(own)
    app = getattr(adapter, "application", None)  # python-telegram-bot: started and polling (or webhook up)
    if app is not None:
        return bool(app.running and app.updater is not None and app.updater.running)
    client = getattr(adapter, "client", None)  # discord.py: ready, and the gateway socket open
    if client is not None:
        return bool(client.is_ready() and not client.is_closed() and client.ws is not None and client.ws.open)
    return False


def write_status(path: Path, states: dict[str, bool]) -> None:
    """Replace the status file at once (written beside it, then renamed): a reader never sees half."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"pid": os.getpid(), "updated_at": time.time(), "adapters": states}))
    os.replace(partial, path)


async def keep_status(path: Path, adapters: list) -> None:
    """Rewrite the status file every STATUS_INTERVAL_S until cancelled; then remove it."""
    try:
        while True:
            states = {adapter_name(a): connected(a) for a in adapters}
            try:
                await asyncio.to_thread(write_status, path, states)
            except OSError as exc:
                log.warning("status file %s not written: %s", path, exc)
            await asyncio.sleep(STATUS_INTERVAL_S)
    finally:
        path.unlink(missing_ok=True)


# --- read by `cervantes health` -------------------------------------------------------------------

def check_model(folder: str | None) -> Check:
    import tensorflow as tf

    from model import bundle

    with contextlib.suppress(RuntimeError):  # already set up (in-process callers): leave it
        tf.config.set_visible_devices([], "GPU")  # the running bot holds the GPU; a CPU load proves as much
    loaded = bundle.load(folder)
    return Check("model", True, f"{folder or bundle.SHIPPED_DIR} loads, id {loaded.model_id}")


def check_database(path: str) -> Check:
    from storage import Storage

    async def probe() -> bool:
        async with await Storage.open(path) as storage:
            return await storage.is_writable()

    writable = asyncio.run(probe())
    return Check("database", writable, f"{path} {'writable' if writable else 'not writable'}")


def check_adapters(path: Path) -> Check:
    if not path.exists():
        return Check("adapters", True, f"no {path.name}: cervantes serve is not running with adapters")
    status = json.loads(path.read_text())
    age = time.time() - status["updated_at"]
    states = status["adapters"]
    listed = ", ".join(f"{name} {'connected' if up else 'DISCONNECTED'}" for name, up in states.items())
    if age > STALE_AFTER_S:
        return Check("adapters", False, f"{path.name} is {age:.0f} s old: cervantes serve died or is stuck")
    return Check("adapters", all(states.values()), f"{listed or 'none'}; updated {age:.0f} s ago")


def run(config: Config) -> list[Check]:
    """Every check, each one's exception turned into its failure: a health check never crashes."""
    checks = []
    for name, check, where in (("model", check_model, config.model.path or None),
                               ("database", check_database, config.storage.path),
                               ("adapters", check_adapters, status_path(config.storage.path))):
        try:
            checks.append(check(where))
        except Exception as exc:
            checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"))
    return checks
