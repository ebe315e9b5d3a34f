"""`cervantes health`: is the running `cervantes serve` working? One line, and healthy or not.

It reads only the status file that serve keeps beside the database (bot/process/status.py): no model load,
no TensorFlow, no database, nothing created. Unhealthy when serve is not running (or still
starting: the file appears once the adapters have started), when the file is stale (serve died or
its loop is stuck), when the generation worker is gone or makes no progress, or when an adapter
is not connected. With PostgreSQL (several processes, one active: bot/process/leader.py) a standby is
healthy too, and the line says which this one is; unhealthy when serve cannot reach the database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bot.process import status

STALE_AFTER_S = 30.0  # serve rewrites the file every status.INTERVAL_S; an older one is a dead or stuck serve
STUCK_AFTER_S = 90.0  # the worker notes the time at every chunk and every few seconds idle


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAIL'}: {self.reason}"


def _ago(then: float | None, now: float) -> str:
    return "never" if then is None else f"{max(0.0, now - then):.0f} s ago"


def check(path: Path, now: float | None = None) -> Verdict:
    now = time.time() if now is None else now
    try:
        report = status.read(path)
    except FileNotFoundError:
        return Verdict(False, f"no {path}: cervantes serve is not running, or its adapters are still starting")
    except (OSError, ValueError) as exc:
        return Verdict(False, f"{path} unreadable: {exc}")
    try:
        return _judge(report, path, now)
    except (TypeError, AttributeError, KeyError, ValueError) as exc:  # right keys, wrong types
        return Verdict(False, f"{path} unreadable: not a cervantes status file ({type(exc).__name__}: {exc})")


def _judge(report: dict, path: Path, now: float) -> Verdict:
    age = now - report["updated_at"]
    if age > STALE_AFTER_S:
        return Verdict(False, f"{path.name} last written {age:.0f} s ago: cervantes serve died or is stuck")
    model, worker, adapters = report["model"], report["worker"], report["adapters"]
    if not model.get("loaded"):
        return Verdict(False, "the model is not loaded")
    if not worker.get("alive"):
        return Verdict(False, "the generation worker is gone: no reply can be generated")
    progress = worker.get("progress_at")
    if progress is None or now - progress > STUCK_AFTER_S:
        return Verdict(False, f"the generation worker made no progress since {_ago(progress, now)} "
                              f"({worker.get('waiting', 0)} requests waiting)")
    down = [name for name, state in adapters.items() if not state.get("connected")]
    listed = ", ".join(
        f"{name} {'connected' if state.get('connected') else 'DISCONNECTED'}"
        + (f" (last ok {_ago(state['last_ok'], now)})" if state.get("last_ok") is not None else "")
        + _shards(state.get("shards"))
        for name, state in adapters.items())
    elected = _elected(report.get("election"), now)
    if elected is not None and not elected.ok:
        return elected
    starting = [name for name, duty in (report.get("election") or {}).items()
                if duty.get("role") == "active" and name not in adapters]
    if starting:
        return Verdict(False, f"active for {', '.join(starting)}, its adapter still starting")
    if down:
        return Verdict(False, listed)
    roles = f"{elected.reason}; " if elected is not None else ""
    return Verdict(True, f"{roles}model {model.get('id', '?')}, worker {_ago(progress, now)}, "
                         f"{listed or 'no adapters'}")


def _shards(shards: dict | None) -> str:
    if not shards:
        return ""
    return " (" + ", ".join(f"shard {i} {'connected' if up else 'DISCONNECTED'}" for i, up in shards.items()) + ")"


def _elected(election: dict | None, now: float) -> Verdict | None:
    """What this process was elected to, or why it is in no election: None without PostgreSQL."""
    if not election:
        return None
    for name, duty in election.items():
        if duty.get("role") == "offline":
            return Verdict(False, f"the database cannot be reached (since {_ago(duty.get('since'), now)}): "
                                  f"{duty.get('error')}; not standing by for {name}")
        if duty.get("role") == "joining":
            return Verdict(False, f"still joining the election for {name}")
    return Verdict(True, ", ".join(f"{duty['role']} for {name}" + (" (another process is active)"
                                                                    if duty["role"] == "standby" else "")
                                   for name, duty in election.items()))
