"""One active process per bot, hot standbys beside it: an election on a PostgreSQL advisory lock.

With `[storage] url` set, each duty of `cervantes serve` (the Telegram bot; the Discord bot, or one
set of its shards) is an election of its own: a session-level advisory lock keyed by the duty, on a
connection of its own. The process that holds the lock runs that adapter; the others keep the model
loaded and compiled, try the lock every POLL_S, and wait. No coordinator of ours: PostgreSQL frees
a session's locks when the session ends, whatever ended it.

Never two active. The holder checks its connection every PING_S (a `SELECT 1` that must answer
within PING_TIMEOUT_S), and asyncpg reports a connection the server closed at once. When either
fails, `lost` is set and serve *halts* the adapter: nothing more is sent, then it stops. The server
frees the lock when the session ends: at once for a process killed or a backend terminated, within
seconds for a host gone (the session's TCP keepalives and tcp_user_timeout, SESSION below) and for a
process frozen (idle_session_timeout: the holder pings every second, so only a frozen one is idle).
A standby that takes the lock without a handover waits FENCE_S before its adapter starts: by then
the old holder's own check has cut it off.

Handover. On SIGTERM serve stops the adapter as usual (the replies in flight are delivered), then
`resign` says so (NOTIFY on HANDOVER_CHANNEL) and releases the lock: a standby that heard it takes
over at once, without the fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time

import asyncpg

log = logging.getLogger(__name__)

POLL_S = 0.5  # a standby tries the lock this often
PING_S = 1.0  # the holder checks its connection this often...
PING_TIMEOUT_S = 2.0  # ...and a check not answered by then is a connection lost
FENCE_S = 3.0  # a lock taken without a handover: wait this long, for the old holder to have stopped
RETRY_S = 1.0  # the database unreachable: try again this often
HOLD_OFF_S = 2.0  # a holder that lost its lock tries again only after this: a standby goes first
CONNECT_TIMEOUT_S = 5.0
HANDOVER_CHANNEL = "cervantes_handover"  # payload: the lock's key, sent once the holder has stopped
HANDOVER_VALID_S = 3.0  # a handover heard this recently makes the next take a clean one
# The server's side of "a dead holder is noticed within seconds" (all settable per session):
SESSION = {
    "tcp_keepalives_idle": "2",  # a silent client is probed after 2 s...
    "tcp_keepalives_interval": "1",  # ...every second...
    "tcp_keepalives_count": "2",  # ...and dropped after 2 probes unanswered
    "tcp_user_timeout": "4000",  # ms: data sent and unacknowledged this long drops the connection
    "idle_session_timeout": "5000",  # ms: a session silent this long (its process frozen) is ended
}
# the database (or the way to it) failed: the connection is given up and made anew
_DOWN = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
         asyncpg.exceptions.InternalClientError)


def lock_key(duty: str) -> int:
    """The advisory lock's key for a duty: the first 8 bytes of its SHA-256, as a signed bigint."""
    return int.from_bytes(hashlib.sha256(f"cervantes:{duty}".encode()).digest()[:8], "big", signed=True)


def shard_set(shard_count: int, shard_ids: list[int]) -> str:
    """The part of the Discord duty that names its shards: each set is an election of its own."""
    if not shard_ids:
        return f"all {shard_count} shards" if shard_count else "all shards"
    return f"shards {','.join(map(str, sorted(shard_ids)))} of {shard_count}"


class Election:
    """One duty's lock on one connection. `win()` until held, `lost` once it is not, `resign()`.

    `role` is what health reports: "joining", "standby", "taking over" (the fence), "active", or
    "offline" (the database cannot be reached; `error` says why).
    """

    def __init__(self, url: str, duty: str, on_change=None, connect=None):
        """`on_change()` is called whenever `role` changes (serve rewrites the status file)."""
        self.url, self.duty, self.key = url, duty, lock_key(duty)
        self._on_change, self._connect_to = on_change, connect
        self.role, self.error, self.since = "joining", None, time.time()
        self.lost = asyncio.Event()
        self._conn = None
        self._pinging: asyncio.Task | None = None
        self._handover = asyncio.Event()
        self._handover_at: float | None = None
        self._held_lost = False  # it held the lock and lost it: hold off before trying again

    def report(self) -> dict:
        return {"role": self.role, "error": self.error, "since": self.since}

    def _become(self, role: str, error: str | None = None) -> None:
        if role != self.role:
            level = logging.WARNING if role == "offline" else logging.INFO
            log.log(level, "%s: %s%s", self.duty, role, f" ({error})" if error else "")
            self.role, self.since = role, time.time()
            if self._on_change is not None:
                self._on_change()
        self.error = error

    async def win(self, stop: asyncio.Event) -> bool:
        """Wait until this process holds the lock and may act; False when `stop` comes first."""
        while not stop.is_set():
            if self._held_lost:
                self._held_lost = False
                await _wait(stop, HOLD_OFF_S)
                continue
            try:
                await self._open()
                held = await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key,
                                                 timeout=PING_TIMEOUT_S)
            except _DOWN as exc:
                await self._drop(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                await _wait(stop, RETRY_S)
                continue
            if not held:
                self._become("standby")
                self._handover.clear()
                await _first(stop.wait(), self._handover.wait(), timeout=POLL_S)
                continue
            clean = self._handover_at is not None and time.monotonic() - self._handover_at < HANDOVER_VALID_S
            self.lost.clear()
            self._pinging = asyncio.create_task(self._ping(), name=f"election-ping {self.duty}")
            if not clean:
                self._become("taking over")
                log.info("%s: lock taken without a handover; waiting %.0f s for the old holder to stop",
                         self.duty, FENCE_S)
                await _first(stop.wait(), self.lost.wait(), timeout=FENCE_S)
                if stop.is_set():
                    return False
                if self.lost.is_set():
                    continue
            self._become("active")
            return True
        return False

    async def resign(self) -> None:
        """The adapter has stopped: say so, release the lock, close the connection."""
        await self._stop_pinging()
        if self._conn is not None and not self._conn.is_closed() and self.role == "active":
            with contextlib.suppress(*_DOWN):  # a lock on a dead connection is released already
                # one statement: the lock is free at once, the notice goes out as it ends
                await self._conn.execute("SELECT pg_advisory_unlock($1), pg_notify($2, $3)", self.key,
                                         HANDOVER_CHANNEL, str(self.key), timeout=PING_TIMEOUT_S)
                log.info("%s: handed over", self.duty)
        await self.close()

    async def close(self) -> None:
        await self._stop_pinging()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), timeout=PING_TIMEOUT_S)
            except Exception:  # closing a broken connection: cut it
                conn.terminate()

    # --- the connection -------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            return
        await self._stop_pinging()  # the check of a connection that is gone
        connect = self._connect_to or asyncpg.connect
        name = f"cervantes {socket.gethostname()}:{os.getpid()}"[:63]
        self._conn = await connect(self.url, timeout=CONNECT_TIMEOUT_S,
                                   server_settings={**SESSION, "application_name": name})
        self._conn.add_termination_listener(self._terminated)
        await self._conn.add_listener(HANDOVER_CHANNEL, self._heard)
        self._become("standby", None)

    def _heard(self, conn, pid: int, channel: str, payload: str) -> None:
        if payload == str(self.key):
            self._handover_at = time.monotonic()
            self._handover.set()

    def _terminated(self, conn) -> None:
        if conn is self._conn:
            self._lose("the server closed the connection")

    def _lose(self, why: str) -> None:
        if not self.lost.is_set() and self.role in ("active", "taking over"):
            log.error("%s: lost the lock's connection (%s): stopping at once", self.duty, why)
            self._held_lost = True
        self.lost.set()
        self._become("offline", why)

    async def _ping(self) -> None:
        conn = self._conn
        while True:
            await asyncio.sleep(PING_S)
            try:
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT_S)
            except _DOWN as exc:
                if conn is self._conn:
                    self._lose(f"check failed: {type(exc).__name__}")
                conn.terminate()
                return

    async def _stop_pinging(self) -> None:
        if self._pinging is not None:
            self._pinging.cancel()
            await asyncio.gather(self._pinging, return_exceptions=True)
            self._pinging = None

    async def _drop(self, why: str) -> None:
        await self.close()
        self._become("offline", why)


async def _first(*aws, timeout: float) -> None:
    """Until the first of `aws` is done, or `timeout`; the others are cancelled."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    await _first(stop.wait(), timeout=seconds)
