"""The status file: what `cervantes serve` reports, and all that `cervantes health` reads.

serve writes `<database>.status.json` once its adapters have started, rewrites it every INTERVAL_S
and removes it when it stops. Each write goes to a file beside it and is renamed over it, so a
reader never sees half of one. Times are wall-clock seconds (time.time()): health runs in another
process.

    {"pid": 7, "updated_at": 1700000000.0,
     "model": {"id": "9f2c...", "loaded": true},
     "worker": {"alive": true, "progress_at": 1699999999.1, "waiting": 0, "active": 2},
     "adapters": {"telegram": {"connected": true, "last_ok": 1699999998.5}}}

What an adapter reports (read with getattr, so an adapter without them still works):
  `connected` (bool): it receives messages now. Telegram: its last getUpdates succeeded, recently
      (or, in webhook mode, the webhook is set and its server listens); Discord: the gateway is
      ready and its heartbeats are acknowledged.
  `last_ok` (float | None): time.time() of its last successful exchange with its platform.
  `shards` ({id: bool}, Discord): each gateway shard this process runs, connected or not.
An adapter without `connected` is judged by what its library says, as before it had one.

With `[storage] url` (PostgreSQL: several processes, one active; bot/process/leader.py) the file is
per process, and says what this one was elected to: `"election": {"telegram": {"role": "active" |
"standby" | "taking over" | "offline" | "joining", "error": ..., "since": ..., "duty": ...}}`; only the
adapters it is active for are listed. Where the file lives: `path_of`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import socket
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

INTERVAL_S = 5.0  # how often serve rewrites the status file


def path_for(db_path: str | os.PathLike) -> Path:
    return Path(f"{db_path}.status.json")


def path_of(storage) -> Path:
    """The status file of this process: `[storage] status_path` when set; else beside the SQLite
    file, or with a PostgreSQL url (processes that share no file) in the database's folder, named
    after the host (a container's hostname is its own)."""
    if storage.status_path:
        return Path(storage.status_path)
    if storage.shared:
        return Path(storage.path).parent / f"cervantes-{socket.gethostname()}.status.json"
    return path_for(storage.path)


def adapter_name(adapter) -> str:
    """TelegramAdapter -> "telegram"."""
    return type(adapter).__name__.removesuffix("Adapter").lower()


def adapter_state(adapter) -> dict:
    """{"connected": bool, "last_ok": float | None}: the adapter's own word, else its library's."""
    last_ok = getattr(adapter, "last_ok", None)
    own = getattr(adapter, "connected", None)
    shards = getattr(adapter, "shards", None)
    if isinstance(shards, dict):
        return {"connected": bool(own), "last_ok": last_ok, "shards": {str(i): bool(c) for i, c in shards.items()}}
    if own is not None:
        return {"connected": bool(own), "last_ok": last_ok}
    app = getattr(adapter, "application", None)  # python-telegram-bot: started and polling (or webhook up)
    if app is not None:
        return {"connected": bool(app.running and app.updater is not None and app.updater.running),
                "last_ok": last_ok}
    client = getattr(adapter, "client", None)  # discord.py: ready, and the gateway socket open
    if client is not None:
        up = client.is_ready() and not client.is_closed() and client.ws is not None and client.ws.open
        return {"connected": bool(up), "last_ok": last_ok}
    return {"connected": False, "last_ok": last_ok}


def snapshot(runtime, adapters: list, extra: Callable[[], dict] | None = None) -> dict:
    service = runtime.service
    stats = service.stats()
    return {"pid": os.getpid(), "updated_at": time.time(),
            "model": {"id": runtime.model_id, "loaded": True},
            "worker": {"alive": service.worker_alive, "progress_at": service.progress_at,
                       "waiting": stats.waiting, "active": stats.active},
            "adapters": {adapter_name(a): adapter_state(a) for a in adapters},
            **(extra() if extra is not None else {})}


def write(path: Path, status: dict) -> None:
    """Replace the status file at once: written to a new file beside it (a unique name, mode 0600,
    created exclusively, so a symlink planted there is never followed), then renamed over it."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(json.dumps(status))
        os.replace(partial, path)  # replaces a symlink at `path` itself, never what it points to
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def read(path: Path) -> dict:
    """The status as serve last wrote it. Raises FileNotFoundError, ValueError (not a status file)."""
    status = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(status, dict) or not {"updated_at", "model", "worker", "adapters"} <= set(status):
        raise ValueError("not a cervantes status file")
    return status


async def keep(path: Path, runtime, adapters: list, extra: Callable[[], dict] | None = None,
               wake: asyncio.Event | None = None) -> None:
    """Write the status now and every INTERVAL_S until cancelled; then remove the file.
    `adapters` is read anew at each write; `extra()` adds keys (the election's); `wake`, when set,
    has the next write made at once (a role changed)."""
    try:
        while True:
            if wake is not None:
                wake.clear()
            try:
                await asyncio.to_thread(write, path, snapshot(runtime, adapters, extra))
            except OSError as exc:
                log.warning("status file %s not written: %s", path, exc)
            if wake is None:
                await asyncio.sleep(INTERVAL_S)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), INTERVAL_S)
    finally:
        path.unlink(missing_ok=True)
