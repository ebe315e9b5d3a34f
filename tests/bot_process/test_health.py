"""The status file serve writes and health's verdict on it (the command itself: test_deploy.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from bot.process import health, status

NOW = 1_700_000_000.0


def report(**changes) -> dict:
    base = {"pid": 7, "updated_at": NOW - 2, "model": {"id": "m1", "loaded": True},
            "worker": {"alive": True, "progress_at": NOW - 1, "waiting": 0, "active": 0},
            "adapters": {"telegram": {"connected": True, "last_ok": NOW - 3}}}
    for key, value in changes.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) and key != "adapters" else value
    return base


def verdict(tmp_path, **changes) -> health.Verdict:
    path = tmp_path / "c.db.status.json"
    status.write(path, report(**changes))
    return health.check(path, now=NOW)


def test_a_working_serve_is_healthy(tmp_path):
    assert verdict(tmp_path).line() == "ok: model m1, worker 1 s ago, telegram connected (last ok 3 s ago)"


@pytest.mark.parametrize("changes, said", [
    (dict(updated_at=NOW - health.STALE_AFTER_S - 1), "last written 31 s ago: cervantes serve died or is stuck"),
    (dict(worker={"alive": False}), "the generation worker is gone"),
    (dict(worker={"progress_at": NOW - health.STUCK_AFTER_S - 5, "waiting": 12}),
     "the generation worker made no progress since 95 s ago (12 requests waiting)"),
    (dict(worker={"progress_at": None}), "no progress since never"),
    (dict(model={"loaded": False}), "the model is not loaded"),
    (dict(adapters={"telegram": {"connected": False, "last_ok": NOW - 200}, "discord": {"connected": True}}),
     "telegram DISCONNECTED (last ok 200 s ago), discord connected"),
])
def test_what_is_wrong_is_said(tmp_path, changes, said):
    v = verdict(tmp_path, **changes)
    assert not v.ok and v.line().startswith("FAIL: ") and said in v.line(), v.line()


def test_a_missing_or_foreign_file_is_unhealthy(tmp_path):
    path = tmp_path / "c.db.status.json"
    assert "cervantes serve is not running" in health.check(path).reason
    path.write_text("{}")
    assert health.check(path).reason == f"{path} unreadable: not a cervantes status file"
    path.write_text("{")
    assert not health.check(path).ok
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # health wrote nothing


def test_a_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "s.json"
    status.write(path, report())
    status.write(path, report(pid=8))
    assert status.read(path)["pid"] == 8
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no partial file left


class TelegramAdapter:  # the names health reports come from the class: "telegram"
    def __init__(self, **attrs):
        self.__dict__.update(attrs)


def test_an_adapters_own_word_wins_and_its_library_is_the_fallback():
    own = TelegramAdapter(connected=False, last_ok=NOW, application=SimpleNamespace(running=True))
    assert status.adapter_state(own) == {"connected": False, "last_ok": NOW}
    polling = SimpleNamespace(running=True, updater=SimpleNamespace(running=True))
    assert status.adapter_state(TelegramAdapter(application=polling)) == {"connected": True, "last_ok": None}
    stopped = SimpleNamespace(running=True, updater=SimpleNamespace(running=False))
    assert status.adapter_state(TelegramAdapter(application=stopped))["connected"] is False
    ws = SimpleNamespace(open=True)
    client = SimpleNamespace(is_ready=lambda: True, is_closed=lambda: False, ws=ws)
    assert status.adapter_state(TelegramAdapter(client=client))["connected"] is True
    assert status.adapter_state(TelegramAdapter())["connected"] is False
    assert status.adapter_name(TelegramAdapter()) == "telegram"


async def test_keep_writes_until_cancelled_then_removes_the_file(tmp_path, monkeypatch):
    import asyncio

    monkeypatch.setattr(status, "INTERVAL_S", 0.02)
    service = SimpleNamespace(worker_alive=True, progress_at=time.time(),
                              stats=lambda: SimpleNamespace(waiting=1, active=2))
    runtime = SimpleNamespace(service=service, model_id="m1")
    adapter = TelegramAdapter(connected=True, last_ok=None)
    path = tmp_path / "c.db.status.json"
    keeping = asyncio.create_task(status.keep(path, runtime, [adapter]))
    while not path.exists():
        await asyncio.sleep(0.01)
    assert health.check(path).ok
    adapter.connected = False
    await asyncio.sleep(0.1)
    assert status.read(path)["adapters"] == {"telegram": {"connected": False, "last_ok": None}}
    assert status.read(path)["worker"] == {"alive": True, "progress_at": service.progress_at, "waiting": 1, "active": 2}
    keeping.cancel()
    await asyncio.gather(keeping, return_exceptions=True)
    assert not path.exists()


@pytest.mark.parametrize("changes", [
    dict(updated_at="yesterday"),
    dict(model=["m1"]),
    dict(worker={"progress_at": "soon"}),
    dict(worker={"alive": True, "progress_at": NOW, "waiting": 0, "active": 0}, adapters=["telegram"]),
    dict(adapters={"telegram": "up"}),
    dict(adapters={"telegram": {"connected": True, "last_ok": "earlier"}}),
])
def test_a_status_file_with_the_right_keys_but_wrong_types_is_one_fail_line(tmp_path, changes):
    """Hand-edited or written by another version: one FAIL line, never a traceback."""
    path = tmp_path / "c.db.status.json"
    path.write_text(__import__("json").dumps(report(**changes)))
    v = health.check(path, now=NOW)
    assert not v.ok and v.line().startswith(f"FAIL: {path} unreadable: "), v.line()


def test_the_status_file_is_private_and_written_through_a_name_no_one_can_plant(tmp_path):
    """0600 whatever the umask, and a symlink planted at the old fixed `.partial` name (or at the
    file itself) is never followed: the file it points to keeps its contents."""
    import os

    path = tmp_path / "c.db.status.json"
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.symlink(victim, tmp_path / "c.db.status.json.partial")
    old = os.umask(0o022)
    try:
        status.write(path, report())
    finally:
        os.umask(old)
    assert victim.read_text() == "keep"
    assert not path.is_symlink() and os.stat(path).st_mode & 0o777 == 0o600
    assert status.read(path)["pid"] == 7
    path.unlink()
    os.symlink(victim, path)
    status.write(path, report(pid=9))
    assert victim.read_text() == "keep" and not path.is_symlink() and status.read(path)["pid"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db.status.json", "c.db.status.json.partial", "victim"]


# --- several processes, one active (bot/process/leader.py) ------------------------------------------

def elected(role: str, **more) -> dict:
    return {"telegram": {"role": role, "error": None, "since": NOW - 40, "duty": "telegram bot 1", **more}}


@pytest.mark.parametrize("changes, ok, line", [
    (dict(election=elected("active")), True,
     "ok: active for telegram; model m1, worker 1 s ago, telegram connected (last ok 3 s ago)"),
    (dict(election=elected("standby"), adapters={}), True,
     "ok: standby for telegram (another process is active); model m1, worker 1 s ago, no adapters"),
    (dict(election=elected("taking over"), adapters={}), True,
     "ok: taking over for telegram; model m1, worker 1 s ago, no adapters"),
    (dict(election=elected("offline", error="ConnectionRefusedError: [Errno 111] Connect call failed"),
          adapters={}), False,
     "FAIL: the database cannot be reached (since 40 s ago): ConnectionRefusedError: [Errno 111] Connect "
     "call failed; not standing by for telegram"),
    (dict(election=elected("active"), adapters={}), False, "FAIL: active for telegram, its adapter still starting"),
    (dict(election=elected("joining"), adapters={}), False, "FAIL: still joining the election for telegram"),
])
def test_an_elected_process_says_which_it_is(tmp_path, changes, ok, line):
    v = verdict(tmp_path, **changes)
    assert (v.ok, v.line()) == (ok, line)


def test_where_the_status_file_lives(monkeypatch):
    from config import StorageSection

    monkeypatch.setattr(status.socket, "gethostname", lambda: "web-2")
    assert status.path_of(StorageSection(path="/data/c.db")) == status.path_for("/data/c.db")
    assert str(status.path_of(StorageSection(path="/data/c.db", url="postgresql://db/c"))) == \
        "/data/cervantes-web-2.status.json"
    assert str(status.path_of(StorageSection(path="/data/c.db", url="postgresql://db/c",
                                             status_path="/run/a.json"))) == "/run/a.json"
