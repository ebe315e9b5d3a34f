"""The storage as an admin meets it: choosing PostgreSQL, its passwords, `cervantes backup` and
`cervantes migrate-storage`, run in process as `cervantes` would be."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

import config
import pg
from cli.main import main
from storage import ChatKey, Continuation, Settings, Storage, StorageError
from storage.inbox import Entry, Inbox

TG = ChatKey("telegram", "-1001234567890")
DC = ChatKey("discord", "1098765432109876543")


def continuation(seed: int = 0) -> Continuation:
    state = np.random.default_rng(seed).standard_normal(16).astype(np.float32)
    return Continuation(state, "quijote-v1", "a", "En un lugar de la Mancha", updated_at=1_700_000_000.5)


@pytest.fixture
def operator(tmp_path, monkeypatch) -> Path:
    """An empty folder as the working directory, no CERVANTES_* or PG* variables; the database path."""
    for name in [k for k in os.environ if k.startswith(("CERVANTES_", "PG"))]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "cervantes.db"
    monkeypatch.setenv("CERVANTES_STORAGE_PATH", str(db))
    return db


def password_url(server, url: str) -> str:
    """The same database, as the role that must give a password (and without one in the URL)."""
    return url.replace(f"{pg.ADMIN}@", f"{pg.PASSWORD_ROLE}@")


# --- backup ----------------------------------------------------------------------------------------

def test_backup_into_a_folder_is_one_line_and_leaves_nothing(operator, capsys):
    asyncio.run(_fill(operator))
    Path("backups").mkdir()
    assert main(["backup", "backups"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "backups is a folder: name a file" in err and "Traceback" not in err
    assert sorted(p.name for p in operator.parent.iterdir() if "partial" in p.name) == []
    assert list(Path("backups").iterdir()) == []


def test_backup_on_postgresql_says_to_use_pg_dump(operator, pg_url, monkeypatch, capsys):
    monkeypatch.setenv("CERVANTES_STORAGE_URL", pg_url.replace("@", ":hunter2-pw@"))
    assert main(["backup", "copy.dump"]) == 2
    err = capsys.readouterr().err
    assert "pg_dump --format=custom --file=copy.dump" in err and "hunter2" not in err
    assert not Path("copy.dump").exists()


# --- passwords ---------------------------------------------------------------------------------------

async def _fill(target) -> None:
    async with await Storage.open(target) as storage:
        await storage.set_temperature(TG, 0.9)
        await storage.save_reply(TG, continuation(1), seed="Sancho")


async def test_the_password_from_pgpassword(postgres_server, pg_url, operator, monkeypatch):
    url = password_url(postgres_server, pg_url)
    with pytest.raises(StorageError, match=f"refused the password of user {pg.PASSWORD_ROLE}"):
        await Storage.open(url)
    monkeypatch.setenv("PGPASSWORD", pg.PASSWORD)
    await _fill(url)


async def test_the_password_from_pgpassfile(postgres_server, pg_url, operator, monkeypatch, tmp_path):
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres_server.port}:*:{pg.PASSWORD_ROLE}:{pg.PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    await _fill(password_url(postgres_server, pg_url))


async def test_the_whole_url_from_the_file_cervantes_storage_url_file_names(postgres_server, pg_url, operator,
                                                                           monkeypatch, tmp_path):
    secret_file = tmp_path / "db-url"
    with_password = password_url(postgres_server, pg_url).replace("@", f":{pg.PASSWORD}@")
    secret_file.write_text(with_password + "\n")
    monkeypatch.setenv("CERVANTES_STORAGE_URL_FILE", str(secret_file))
    cfg = config.load(None, environ=dict(os.environ))
    assert pg.PASSWORD not in repr(cfg)
    await _fill(cfg.storage.database())
    async with await Storage.open(pg_url) as storage:
        assert await storage.get_settings(TG) == Settings(0.9)

    monkeypatch.setenv("CERVANTES_STORAGE_URL", pg_url)
    with pytest.raises(config.ConfigError, match="storage.url and storage.url_file are both set"):
        config.load(None, environ=dict(os.environ))


async def test_a_password_is_never_logged_nor_shown(postgres_server, pg_url, operator, caplog, capsys):
    good = password_url(postgres_server, pg_url).replace("@", f":{pg.PASSWORD}@")
    wrong = good.replace(pg.PASSWORD, "wrong-Dulcinea-pw")
    unreachable = f"postgresql://{pg.PASSWORD_ROLE}:{pg.PASSWORD}@127.0.0.1:1/nowhere"
    with caplog.at_level(logging.DEBUG):
        async with await Storage.open(good) as storage:
            await storage.set_length(TG, 5)
            assert pg.PASSWORD not in storage.where
        messages = []
        for url in (wrong, unreachable):
            with pytest.raises(StorageError) as raised:
                await Storage.open(url)
            messages.append(str(raised.value))
        assert main(["backup", "x"]) == 2  # no database yet: nothing to do with the URL
        os.environ["CERVANTES_STORAGE_URL"] = good + " x"  # a bad value, shown in the error
        try:
            assert main(["health"]) == 2
        finally:
            del os.environ["CERVANTES_STORAGE_URL"]
    assert "refused the password" in messages[0] and "cannot be reached" in messages[1]
    shown = caplog.text + capsys.readouterr().err + "".join(messages)
    assert "must be a postgresql://" in shown
    for password in (pg.PASSWORD, "wrong-Dulcinea-pw"):
        assert password not in shown


# --- migrate-storage --------------------------------------------------------------------------------

async def _bots_data(db: Path) -> dict:
    async with await Storage.open(db) as storage:
        await storage.set_temperature(TG, 0.9)
        await storage.set_length(DC, 120)
        gone = await storage.save_reply(DC, continuation(9), seed="olvidado")
        await storage.forget(DC)  # its id is never handed out again
        await storage.set_length(DC, 120)
        first = await storage.save_reply(TG, continuation(1), seed="Sancho")
        second = await storage.save_reply(TG, continuation(2), start=continuation(1))
        inbox = Inbox(storage)
        waiting, answered = await inbox.add([Entry(TG, "longitud", "120", None, time.time(), {"chat_id": 5}),
                                             Entry(TG, "cervantes", "Dulcinea", None, time.time())])
        await inbox.done([answered.id])  # its id is never handed out again either
        return {"gone": gone, "first": first, "second": second, "tag": storage.tag(TG), "waiting": waiting,
                "answered": answered}


def test_migrate_storage_copies_everything_into_an_empty_postgresql(operator, pg_url, capsys):
    made = asyncio.run(_bots_data(operator))
    assert main(["migrate-storage", "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "row counts checked" in out and "replies 2" in out and "chats 2" in out

    async def check() -> None:
        async with await Storage.open(pg_url) as storage:
            assert await storage.get_settings(TG) == Settings(0.9)
            assert await storage.get_settings(DC) == Settings(None, 120)
            assert (await storage.get_reply(TG, made["first"])).seed == "Sancho"
            second = await storage.get_reply(TG, made["second"])
            assert np.array_equal(second.start.state, continuation(1).state)
            assert np.array_equal((await storage.get_continuation(TG)).state, continuation(2).state)
            assert storage.tag(TG) == made["tag"]  # the logs name the chat as before
            new = await storage.save_reply(DC, continuation(3), seed="nuevo")
            assert new > max(made["gone"], made["second"])  # never an id handed out before
            assert await storage.get_reply(DC, made["gone"]) is None
            inbox = Inbox(storage)
            assert await inbox.pending("telegram", since=0) == [made["waiting"]]  # answered after the move
            (new,) = await inbox.add([Entry(TG, "ayuda", "", None, time.time())])
            assert new.id > made["answered"].id

    asyncio.run(check())


def test_migrate_storage_refuses_a_database_that_is_not_empty(operator, pg_url, capsys):
    asyncio.run(_bots_data(operator))
    pg.sql(pg_url, "CREATE TABLE orders (id INT)")
    assert main(["migrate-storage", "--to", pg_url]) == 1
    err = capsys.readouterr().err
    assert "is not empty (it has the tables orders)" in err
    assert pg.sql(pg_url, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'") == [("orders",)]


def test_migrate_storage_that_fails_leaves_the_target_empty(operator, pg_url, capsys):
    asyncio.run(_bots_data(operator))
    import sqlite3
    with sqlite3.connect(operator) as conn:  # a value PostgreSQL's typed column cannot take
        conn.execute("UPDATE chats SET last_active = 'yesterday'")
    assert main(["migrate-storage", "--to", pg_url]) == 1
    err = capsys.readouterr().err
    assert "a row of chats does not fit PostgreSQL's column types" in err and err.count("\n") == 1
    assert pg.sql(pg_url, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'") == []
