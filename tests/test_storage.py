"""storage: per-chat settings and continuations, on both stores: a real SQLite file under tmp_path and
a fresh database on a real PostgreSQL server (tests/pg.py). Tests about SQLite's files take db_path."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import sqlite3
import stat
import time

import numpy as np
import pytest

from storage import TAIL_CHARS, ChatKey, Continuation, Settings, Storage, StorageError
from storage.engines import engine_for
from storage.engines.postgres import numbered
from storage.errors import describe
from storage.migrations import MIGRATIONS, schema
from storage.repository import DAY_S

TG = ChatKey("telegram", "-1001234567890")
DC = ChatKey("discord", "1098765432109876543")
TAIL = "—¿Qué gigantes? —dijo Sancho Panza. «Aquellos que allí ves», respondió su amo. 🐴🗡️ ñandú"


def continuation(units: int = 16, seed: int = 0, model_id: str = "quijote-v1", tail: str = TAIL):
    state = np.random.default_rng(seed).standard_normal(units).astype(np.float32)
    return Continuation(state, model_id, tail[-1], tail, updated_at=1_700_000_000.5)


class Place:
    """Where a test's database lives, and plain SQL on it from outside the Storage (`?` placeholders):
    sqlite3 on the file, or its own connection to the PostgreSQL database."""

    def __init__(self, kind: str, target, url: str | None = None):
        self.kind, self.target = kind, target

    def rows(self, sql: str, *args) -> list[tuple]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.target) as conn:
                return conn.execute(sql, args).fetchall()
        import pg
        return pg.sql(self.target, numbered(sql), *args)

    def execute(self, sql: str, *args) -> None:
        if self.kind == "sqlite":
            with sqlite3.connect(self.target) as conn:
                conn.execute(sql, args)
        else:
            self.rows(sql, *args)

    def tables(self) -> dict[str, list[str]]:
        if self.kind == "sqlite":
            with sqlite3.connect(self.target) as conn:
                return {name: [col[1] for col in conn.execute(f"PRAGMA table_info({name})")]
                        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                                    "AND name NOT LIKE 'sqlite%'")}
        found: dict[str, list[str]] = {}
        for table, column in self.rows(
                "SELECT table_name::text, column_name::text FROM information_schema.columns "
                "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"):
            found.setdefault(table, []).append(column)
        return found


def keyed_rows(place: Place, key) -> dict[str, int]:
    """Rows of `key` in every table that has a chat_id column, read from outside the Storage; but the
    inbox, which holds commands only until they are answered (tests/test_storage_inbox.py)."""
    return {t: place.rows(f"SELECT count(*) FROM {t} WHERE platform = ? AND chat_id = ?", *key)[0][0]
            for t, columns in place.tables().items() if "chat_id" in columns and t != "inbox"}


def count(place: Place, table: str) -> int:
    return place.rows(f"SELECT count(*) FROM {table}")[0][0]


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "data" / "cervantes.db"  # the "data" folder does not exist yet


@pytest.fixture(params=["sqlite", "postgresql"])
def place(request, db_path) -> Place:
    """Each test that takes it runs on both stores."""
    if request.param == "sqlite":
        return Place("sqlite", db_path)
    return Place("postgresql", request.getfixturevalue("pg_url"))


@pytest.fixture
async def storage(place):
    async with await Storage.open(place.target) as storage:
        yield storage


async def test_settings_default_then_round_trip(storage):
    assert await storage.get_settings(TG) == Settings(None, None)
    await storage.set_temperature(TG, 0.7)
    assert await storage.get_settings(TG) == Settings(0.7, None)
    await storage.set_length(TG, 300)
    assert await storage.get_settings(TG) == Settings(0.7, 300)
    await storage.set_temperature(TG, None)  # back to the configured default, length kept
    assert await storage.get_settings(TG) == Settings(None, 300)


async def test_who_changes_a_groups_settings_is_kept_per_chat_and_forgotten(storage):
    await storage.set_length(TG, 300)
    await storage.set_group_settings(TG, "everyone")
    assert await storage.get_settings(TG) == Settings(None, 300, "everyone")
    assert await storage.get_settings(DC) == Settings()  # another chat: the configured default
    await storage.set_group_settings(TG, "admins")
    assert (await storage.get_settings(TG)).group_settings == "admins"
    with pytest.raises(ValueError):
        await storage.set_group_settings(TG, "todos")
    assert await storage.forget(TG)
    assert await storage.get_settings(TG) == Settings()

@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5, "1.0"])
async def test_set_temperature_rejects_nonsense(storage, bad):
    with pytest.raises(ValueError):
        await storage.set_temperature(TG, bad)
    assert await storage.get_settings(TG) == Settings()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
async def test_set_length_rejects_nonsense(storage, bad):
    with pytest.raises(ValueError):
        await storage.set_length(TG, bad)


async def test_continuation_round_trip(storage):
    assert await storage.get_continuation(TG) is None
    saved = continuation(units=64)
    await storage.save_continuation(TG, saved)
    got = await storage.get_continuation(TG)
    assert got.state.dtype == np.float32 and got.state.shape == (64,)
    np.testing.assert_array_equal(got.state, saved.state)
    assert (got.model_id, got.last_char, got.tail, got.updated_at) == (
        "quijote-v1", "ú", TAIL, 1_700_000_000.5)

    await storage.save_continuation(TG, continuation(units=8, seed=1, model_id="quijote-v2"))
    got = await storage.get_continuation(TG)  # the new one replaced the old
    assert got.model_id == "quijote-v2" and got.state.shape == (8,)


def test_continuation_keeps_only_the_tail():
    long = "a" * 1000 + "ñ" * TAIL_CHARS
    assert continuation(tail=long).tail == "ñ" * TAIL_CHARS
    with pytest.raises(ValueError):
        Continuation(np.zeros((2, 4), np.float32), "m", "a", "a")  # [batch, units], not [units]
    with pytest.raises(ValueError):
        Continuation(np.full(4, np.nan, np.float32), "m", "a", "a")


async def test_a_reply_keeps_where_it_stopped_and_where_it_began(storage):
    first = await storage.save_reply(TG, continuation(seed=1), seed="Sancho dijo")
    second = await storage.save_reply(TG, continuation(seed=2), start=continuation(seed=1))
    assert second > first

    got = await storage.get_reply(TG, first)
    assert got.id == first and got.seed == "Sancho dijo" and got.start is None
    assert np.array_equal(got.end.state, continuation(seed=1).state) and got.end.tail == TAIL
    got = await storage.get_reply(TG, second)
    assert got.seed is None and np.array_equal(got.start.state, continuation(seed=1).state)
    assert got.start.model_id == "quijote-v1" and got.start.tail == TAIL
    # the last reply is also the chat's continuation
    assert np.array_equal((await storage.get_continuation(TG)).state, continuation(seed=2).state)

    assert await storage.get_reply(DC, first) is None  # another chat cannot reach it
    assert await storage.get_reply(TG, second + 1) is None
    with pytest.raises(ValueError):
        await storage.save_reply(TG, continuation())  # began from nothing


async def test_only_the_newest_replies_of_each_chat_are_kept(place):
    async with await Storage.open(place.target, replies_per_chat=3) as storage:
        ids = [await storage.save_reply(TG, continuation(seed=i), seed=f"s{i}") for i in range(5)]
        other = await storage.save_reply(DC, continuation(), seed="otro")
        assert [await storage.get_reply(TG, i) is not None for i in ids] == [False, False, True, True, True]
        assert (await storage.get_reply(DC, other)).seed == "otro"
        assert keyed_rows(place, TG)["replies"] == 3


async def test_a_forgotten_reply_id_is_never_handed_out_again(storage):
    old = await storage.save_reply(TG, continuation(), seed="antes")
    await storage.forget(TG)
    new = await storage.save_reply(TG, continuation(), seed="después")
    assert new != old and await storage.get_reply(TG, old) is None  # an old button finds nothing


async def test_an_unreadable_reply_reads_as_none_and_is_deleted(place, caplog):
    async with await Storage.open(place.target) as storage:
        reply_id = await storage.save_reply(TG, continuation(), start=continuation(seed=3))
    place.execute("UPDATE replies SET start_state = ?", b"\x01\x02")
    async with await Storage.open(place.target) as storage:
        assert await storage.get_reply(TG, reply_id) is None
    assert "unreadable replies row" in caplog.text
    assert count(place, "replies") == 0


async def test_chats_never_see_each_other(storage):
    same_id_on_discord = ChatKey("discord", TG.chat_id)
    await storage.set_temperature(TG, 0.5)
    await storage.set_length(DC, 100)
    await storage.save_continuation(TG, continuation(seed=1))
    await storage.save_continuation(same_id_on_discord, continuation(seed=2, model_id="other"))

    assert await storage.get_settings(TG) == Settings(0.5, None)
    assert await storage.get_settings(DC) == Settings(None, 100)
    assert await storage.get_settings(same_id_on_discord) == Settings()
    assert (await storage.get_continuation(TG)).model_id == "quijote-v1"
    assert (await storage.get_continuation(same_id_on_discord)).model_id == "other"
    assert await storage.get_continuation(DC) is None


async def test_int_chat_ids_are_the_same_chat_as_their_text(storage):
    await storage.set_length(("telegram", -1001234567890), 42)
    assert await storage.get_settings(TG) == Settings(None, 42)


async def test_concurrent_writes_do_not_interleave_transactions(storage):
    keys = [ChatKey("telegram", str(i)) for i in range(30)]
    await asyncio.gather(*(storage.set_length(k, i + 1) for i, k in enumerate(keys)),
                         *(storage.save_continuation(k, continuation(seed=i)) for i, k in enumerate(keys)))
    assert [(await storage.get_settings(k)).length for k in keys] == list(range(1, 31))


async def test_forget_removes_every_row_of_that_chat_only(storage, place):
    for key in (TG, DC):
        await storage.set_temperature(key, 0.9)
        await storage.save_reply(key, continuation(), seed="Sancho")  # the chat's continuation too
    assert set(keyed_rows(place, TG)) == {"chat_settings", "continuations", "chats", "replies"}

    assert await storage.forget(TG) is True
    assert all(n == 0 for n in keyed_rows(place, TG).values())
    assert all(n == 1 for n in keyed_rows(place, DC).values())
    assert await storage.get_settings(TG) == Settings()
    assert await storage.get_continuation(TG) is None
    assert await storage.forget(TG) is False  # nothing left to forget


async def test_forgotten_text_is_gone_from_the_file_itself(db_path):  # SQLite's file
    secret = "El secreto de Sancho: la ínsula Barataria está en Alcalá"
    async with await Storage.open(db_path) as storage:
        await storage.save_reply(TG, continuation(tail=secret), seed=secret)
        await storage.save_continuation(DC, continuation())
        await storage.forget(TG)
    # closed: checkpointed into the main file, the -wal removed; the deleted cells were zeroed
    assert not db_path.with_name("cervantes.db-wal").exists()
    assert "Barataria".encode() not in db_path.read_bytes()
    assert TAIL.encode() in db_path.read_bytes()  # the check reads the file as it is


async def test_move_chat_takes_settings_and_continuation_to_the_new_chat(storage, place):
    group, supergroup = ChatKey("telegram", "-4001"), ChatKey("telegram", "-1004001")
    await storage.set_temperature(group, 1.5)
    await storage.set_length(group, 120)
    reply_id = await storage.save_reply(group, continuation(seed=1), seed="Sancho")
    await storage.set_temperature(DC, 0.3)  # another chat: untouched

    assert await storage.move_chat(group, ("telegram", -1004001)) is True
    assert await storage.get_settings(supergroup) == Settings(1.5, 120)
    moved = await storage.get_continuation(supergroup)
    assert np.array_equal(moved.state, continuation(seed=1).state) and moved.tail == TAIL
    assert (await storage.get_reply(supergroup, reply_id)).seed == "Sancho"  # its buttons go on working
    assert all(n == 0 for n in keyed_rows(place, group).values())
    assert await storage.get_settings(DC) == Settings(0.3)

    assert await storage.move_chat(group, supergroup) is False  # again: nothing left to move
    assert await storage.get_settings(supergroup) == Settings(1.5, 120)
    assert await storage.move_chat(supergroup, supergroup) is False  # never deletes a chat's own rows
    assert await storage.get_settings(supergroup) == Settings(1.5, 120)


async def test_move_chat_keeps_the_new_chats_own_rows(storage, place):
    group, supergroup = ChatKey("telegram", "-4002"), ChatKey("telegram", "-1004002")
    await storage.set_temperature(supergroup, 0.7)  # set in the supergroup before the move came
    await storage.set_temperature(group, 1.5)
    await storage.set_length(group, 120)
    await storage.save_continuation(group, continuation(seed=1))

    assert await storage.move_chat(group, supergroup) is True  # the continuation moved
    assert await storage.get_settings(supergroup) == Settings(0.7)  # its own row, not merged with the old
    assert np.array_equal((await storage.get_continuation(supergroup)).state, continuation(seed=1).state)
    assert all(n == 0 for n in keyed_rows(place, group).values())

    await storage.set_temperature(group, 1.9)  # every table in conflict: nothing moves, the old rows go
    await storage.save_continuation(group, continuation(seed=3))
    assert await storage.move_chat(group, supergroup) is False
    assert await storage.get_settings(supergroup) == Settings(0.7)
    assert np.array_equal((await storage.get_continuation(supergroup)).state, continuation(seed=1).state)
    assert all(n == 0 for n in keyed_rows(place, group).values())


async def test_data_survives_reopening(place):
    async with await Storage.open(place.target) as storage:
        await storage.set_temperature(TG, 1.2)
        await storage.save_continuation(TG, continuation())
    async with Storage(place.target) as storage:
        assert await storage.get_settings(TG) == Settings(1.2, None)
        np.testing.assert_array_equal((await storage.get_continuation(TG)).state, continuation().state)


async def test_new_file_is_wal_at_the_latest_version(db_path):
    storage = await Storage.open(db_path)
    assert db_path.parent.is_dir()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert await storage.integrity_check() == "ok"
    assert await storage.is_writable()
    await storage.close()


async def test_both_engines_make_the_same_tables_and_columns(storage, place):
    """The schema check compares every database with SQLite's columns: PostgreSQL's must match."""
    tables = {t: c for t, c in place.tables().items() if t != "cervantes_schema"}
    assert tables == schema(len(MIGRATIONS)) and "replies" in tables
    assert await storage.integrity_check() == "ok"
    assert await storage.is_writable()


async def at_version(place: Place, version: int) -> None:
    """The database as an older cervantes left it: the first `version` migrations."""
    engine = engine_for(place.target)
    await engine.start(version)
    await engine.close()


def set_version(place: Place, version: int) -> None:
    if place.kind == "sqlite":
        place.execute(f"PRAGMA user_version = {version}")
    else:
        place.execute("UPDATE cervantes_schema SET version = ?", version)


async def test_old_database_is_upgraded_and_keeps_its_rows(place):
    assert len(MIGRATIONS) > 1
    await at_version(place, 1)
    place.execute("INSERT INTO chat_settings (platform, chat_id, length) VALUES (?, ?, ?)", *TG, 77)
    assert "continuations" not in place.tables()

    async with await Storage.open(place.target) as storage:
        assert await storage.get_settings(TG) == Settings(None, 77)
        await storage.save_continuation(TG, continuation())
        assert (await storage.get_continuation(TG)).tail == TAIL
    assert "continuations" in place.tables()
    engine = engine_for(place.target)
    assert await engine.start(len(MIGRATIONS))  # at the latest version: opens, changes nothing
    await engine.close()


async def test_database_from_a_newer_program_is_refused(place):
    async with await Storage.open(place.target) as storage:  # ours, then a newer version added a table
        await storage.set_length(TG, 5)
    place.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY)")
    set_version(place, len(MIGRATIONS) + 1)
    with pytest.raises(StorageError, match="newer than this program"):
        await Storage.open(place.target)


async def test_another_programs_file_with_a_high_version_is_not_called_newer(db_path):  # SQLite's
    """Firefox's places.sqlite is at user_version 74: it is not a newer cervantes database (item 10)."""
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.executescript("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT);"
                           "PRAGMA user_version = 74;")
    with pytest.raises(StorageError, match="is not a cervantes database") as raised:
        await Storage.open(db_path)
    assert "newer" not in str(raised.value) and "moz_places" in str(raised.value)


class _RollBack(Exception):
    pass


class held_write_lock:
    """Another process in the middle of a write: SQLite's write lock (BEGIN IMMEDIATE), or on
    PostgreSQL every continuations row locked FOR UPDATE. `finish(sql)` runs `sql` and commits."""

    def __init__(self, place: Place, hold: str = "SELECT 1 FROM continuations FOR UPDATE"):
        import threading
        self.place, self.hold = place, hold
        if place.kind == "sqlite":
            self.conn = sqlite3.connect(place.target, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
            return
        self.ready, self.go, self.sql = threading.Event(), threading.Event(), ""
        self.thread = threading.Thread(target=lambda: asyncio.run(self._hold()))
        self.thread.start()
        assert self.ready.wait(10)

    async def _hold(self):
        import asyncpg
        conn = await asyncpg.connect(self.place.target)
        try:
            async with conn.transaction():
                await conn.execute(self.hold)
                self.ready.set()
                while not self.go.is_set():
                    await asyncio.sleep(0.01)
                if not self.sql:
                    raise _RollBack
                await conn.execute(self.sql)
        except _RollBack:
            pass
        finally:
            await conn.close()

    def finish(self, sql: str = "") -> None:
        """Run `sql` and commit; with none, roll back."""
        if self.place.kind == "sqlite":
            if sql:
                self.conn.execute(sql)
            self.conn.execute("COMMIT" if sql else "ROLLBACK")
            self.conn.close()
        else:
            self.sql = sql
            self.go.set()
            self.thread.join()


def typed_by_sqlite_only(place: Place, value) -> None:
    """PostgreSQL's typed columns cannot hold text where a number goes: that damage is SQLite's alone."""
    if place.kind != "sqlite" and isinstance(value, str):
        pytest.skip("a typed PostgreSQL column cannot hold this value")


@pytest.mark.parametrize("column, value", [
    ("state", b"\x00" * 12),  # 3 float32s where the row says 16 units
    ("state", "not bytes"),
    ("units", 0),
    ("updated_at", "yesterday"),
])
async def test_corrupt_continuation_is_logged_deleted_and_reads_as_none(place, caplog, column, value):
    typed_by_sqlite_only(place, value)
    async with await Storage.open(place.target) as storage:
        await storage.save_continuation(TG, continuation(units=16))
        await storage.save_continuation(DC, continuation(units=16))
    place.execute(f"UPDATE continuations SET {column} = ? WHERE platform = ? AND chat_id = ?", value, *TG)

    async with await Storage.open(place.target) as storage:
        with caplog.at_level(logging.WARNING, logger="storage.repository"):
            assert await storage.get_continuation(TG) is None
        assert "continuation" in caplog.text and "telegram" in caplog.text
        assert TG.chat_id not in caplog.text  # a hash names the chat, never its id
        assert await storage.get_continuation(DC) is not None  # the other chat is untouched
    # deleted in the background, not in the read's time: done by the time close() returns
    assert keyed_rows(place, TG)["continuations"] == 0
    assert keyed_rows(place, DC)["continuations"] == 1


@pytest.mark.parametrize("column, value", [("temperature", "hot"), ("temperature", float("inf")),
                                           ("length", 2.5), ("length", -1),
                                           ("group_settings", "todos")])
async def test_corrupt_settings_read_as_defaults_and_are_deleted(place, caplog, column, value):
    typed_by_sqlite_only(place, value if value != 2.5 else "2.5")  # PostgreSQL rounds 2.5 into BIGINT
    async with await Storage.open(place.target) as storage:
        await storage.set_length(TG, 10)
    place.execute(f"UPDATE chat_settings SET {column} = ? WHERE platform = ? AND chat_id = ?", value, *TG)
    async with await Storage.open(place.target) as storage:
        with caplog.at_level(logging.WARNING, logger="storage.repository"):
            assert await storage.get_settings(TG) == Settings()
        assert "settings" in caplog.text
    assert keyed_rows(place, TG)["chat_settings"] == 0


async def test_a_good_row_saved_after_an_unreadable_one_was_read_is_kept(place):
    async with await Storage.open(place.target) as storage:
        await storage.save_continuation(TG, continuation())
        place.execute("UPDATE continuations SET units = 0")
        holder = held_write_lock(place)  # the deletion of the bad row waits behind another writer
        try:
            assert await storage.get_continuation(TG) is None
            await asyncio.sleep(0.1)
        finally:
            holder.finish("UPDATE continuations SET units = 16")  # a good row replaced the bad one
    async with await Storage.open(place.target) as storage:
        np.testing.assert_array_equal((await storage.get_continuation(TG)).state, continuation().state)


async def test_read_only_database_refuses_writes_with_storage_error_and_still_reads(place):
    # Tests run as root, where chmod 0o444 does not stop writes: open with SQLite's ?mode=ro instead
    # (PostgreSQL: default_transaction_read_only).
    async with await Storage.open(place.target) as storage:
        await storage.set_temperature(TG, 0.8)
        await storage.save_continuation(TG, continuation())

    async with await Storage.open(place.target, read_only=True) as storage:
        with pytest.raises(StorageError, match="read-only"):
            await storage.set_temperature(TG, 1.5)
        with pytest.raises(StorageError, match="read-only"):
            await storage.save_continuation(DC, continuation())
        with pytest.raises(StorageError, match="read-only"):
            await storage.forget(TG)
        assert await storage.get_settings(TG) == Settings(0.8, None)
        assert (await storage.get_continuation(TG)).tail == TAIL
        assert not await storage.is_writable()


async def test_missing_read_only_file_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        await Storage.open(tmp_path / "nowhere.db", read_only=True)
    assert not (tmp_path / "nowhere.db").exists()


async def test_full_database_raises_storage_error_and_still_reads(db_path):
    storage = await Storage.open(db_path)
    await storage.set_temperature(TG, 0.8)
    # No room to grow: SQLite answers SQLITE_FULL, as on a full disk (max_page_count is per connection).
    db = storage._db
    (pages,) = (await db.execute_fetchall("PRAGMA page_count"))[0]
    await db.execute(f"PRAGMA max_page_count = {pages}")

    with pytest.raises(StorageError, match="disk is full"):
        await storage.save_continuation(DC, continuation(units=4096))  # 16 KiB needs new pages
    assert await storage.get_continuation(DC) is None  # rolled back
    assert await storage.get_settings(TG) == Settings(0.8, None)
    await storage.set_length(TG, 5)  # a write that fits in its page still works
    assert await storage.get_settings(TG) == Settings(0.8, 5)
    await storage.close()


async def test_backup_while_open_holds_the_same_rows(db_path, tmp_path):
    async with await Storage.open(db_path) as storage:
        await backup_while_open_holds_the_same_rows(storage, tmp_path)


async def backup_while_open_holds_the_same_rows(storage, tmp_path):
    await storage.set_temperature(TG, 0.6)
    await storage.save_continuation(DC, continuation(units=32))
    dest = await storage.backup(tmp_path / "backups" / "copy.db")
    await storage.set_length(TG, 9)  # after the backup: not in it

    assert dest.exists() and not dest.with_name("copy.db.partial").exists()
    async with await Storage.open(dest) as copy:
        assert await copy.integrity_check() == "ok"
        assert await copy.get_settings(TG) == Settings(0.6, None)
        np.testing.assert_array_equal((await copy.get_continuation(DC)).state, continuation(units=32).state)
    with pytest.raises(ValueError):
        await storage.backup(storage.path)


async def test_a_backup_on_postgresql_says_to_use_pg_dump(pg_url, tmp_path):
    async with await Storage.open(pg_url) as storage:
        with pytest.raises(StorageError, match="Use pg_dump") as raised:
            await storage.backup(tmp_path / "copy.db")
    assert "pg_dump --format=custom" in str(raised.value) and list(tmp_path.iterdir()) == []


async def test_methods_need_a_started_storage(place):
    storage = Storage(place.target)
    with pytest.raises(RuntimeError, match="not started"):
        await storage.get_settings(TG)
    await storage.start()
    await storage.close()
    with pytest.raises(RuntimeError, match="not started"):
        await storage.get_settings(TG)


# --- the files are private ------------------------------------------------------------------------

def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """The usual umask, under which a file made without care is -rw-r--r--."""
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_database_side_files_key_and_backups_are_private(db_path, tmp_path, open_umask):
    async with await Storage.open(db_path) as storage:
        await storage.save_continuation(TG, continuation())
        wal, shm = db_path.with_name("cervantes.db-wal"), db_path.with_name("cervantes.db-shm")
        key = db_path.with_name("cervantes.db.key")
        assert wal.exists() and shm.exists() and key.exists()
        assert {p.name: mode(p) for p in (db_path, wal, shm, key)} == dict.fromkeys(
            ["cervantes.db", "cervantes.db-wal", "cervantes.db-shm", "cervantes.db.key"], 0o600)
        dest = await storage.backup(tmp_path / "backups" / "copy.db")
        assert mode(dest) == 0o600
    async with await Storage.open(dest) as copy:  # opened, the copy's own side files are private too
        await copy.set_length(TG, 5)
        assert mode(dest.with_name("copy.db-wal")) == 0o600


async def test_files_left_readable_by_an_older_version_are_made_private(db_path, open_umask, caplog):
    async with await Storage.open(db_path):
        pass
    key = db_path.with_name("cervantes.db.key")
    for path in (db_path, key):
        path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="storage.files"):
        async with await Storage.open(db_path) as storage:
            await storage.set_length(TG, 5)
            assert mode(db_path) == mode(key) == mode(db_path.with_name("cervantes.db-wal")) == 0o600
    assert "readable by others" in caplog.text


# --- chat tags in logs ----------------------------------------------------------------------------

async def test_on_postgresql_the_tag_secret_is_in_the_database_shared_by_every_process(postgres_server):
    first, second = postgres_server.new_database(), postgres_server.new_database()
    async with await Storage.open(first) as one, await Storage.open(first) as two:  # two processes
        tag = one.tag(TG)
        assert two.tag(TG) == tag == TG.tag
    async with await Storage.open(second) as storage:
        other = storage.tag(TG)
    assert tag != other and len(tag) == 12
    async with await Storage.open(first) as storage:
        assert storage.tag(TG) == tag
    import pg
    ((secret,),) = pg.sql(first, "SELECT tag_secret FROM cervantes_schema")
    assert len(secret) == 32
    assert tag == hmac.new(secret, b"telegram:-1001234567890", hashlib.sha256).hexdigest()[:12]


async def test_chat_tags_are_keyed_by_a_secret_of_each_installation(tmp_path):
    first, second = tmp_path / "a" / "cervantes.db", tmp_path / "b" / "cervantes.db"
    async with await Storage.open(first) as storage:
        tag = storage.tag(TG)
        assert TG.tag == tag  # installed for the whole process: the adapters' logs use it
    async with await Storage.open(second) as storage:
        other = storage.tag(TG)
        assert TG.tag == other
    assert tag != other and len(tag) == len(other) == 12 and int(tag, 16) >= 0
    async with await Storage.open(first) as storage:  # the same installation keeps its tags
        assert storage.tag(TG) == TG.tag == tag

    # hashing every nearby id without the secret finds neither
    unsalted = {hashlib.sha256(f"telegram:{-1001234567890 + d}".encode()).hexdigest()[:12]
                for d in range(-1000, 1001)}
    assert tag not in unsalted and other not in unsalted
    secret = bytes.fromhex(first.with_name("cervantes.db.key").read_text())
    assert len(secret) == 32
    assert tag == hmac.new(secret, b"telegram:-1001234567890", hashlib.sha256).hexdigest()[:12]


async def test_a_damaged_key_file_is_named(db_path):
    db_path.parent.mkdir(parents=True)
    db_path.with_name("cervantes.db.key").write_text("not hex\n")
    with pytest.raises(StorageError, match="cervantes.db.key does not hold a secret"):
        await Storage.open(db_path)


# --- files that are not ours ----------------------------------------------------------------------

@pytest.mark.parametrize("schema", [
    "CREATE TABLE settings (user TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE chat_settings (user TEXT PRIMARY KEY, value TEXT)",
    # our version stamp, other columns
    "PRAGMA user_version = 2; CREATE TABLE chat_settings (platform, chat_id, colour);"
    "CREATE TABLE continuations (platform, chat_id, state, units, model_id, last_char, tail, updated_at)",
])
@pytest.mark.parametrize("read_only", [False, True])
async def test_another_programs_database_is_refused_by_name_and_left_alone(db_path, schema, read_only):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.executescript(schema)
    db_path.chmod(0o644)
    before = db_path.read_bytes()
    with pytest.raises(StorageError, match="is not a cervantes database") as raised:
        await Storage.open(db_path, read_only=read_only)
    assert str(db_path) in str(raised.value)
    assert db_path.read_bytes() == before and mode(db_path) == 0o644
    assert not db_path.with_name("cervantes.db.key").exists()


@pytest.mark.parametrize("read_only", [False, True])
async def test_another_programs_postgresql_database_is_refused_by_name_and_left_alone(pg_url, read_only):
    import pg
    pg.sql(pg_url, "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT)")
    with pytest.raises(StorageError, match="is not a cervantes database") as raised:
        await Storage.open(pg_url, read_only=read_only)
    assert "127.0.0.1" in str(raised.value) and "(settings)" in str(raised.value)
    assert [t for (t,) in pg.sql(pg_url, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")] \
        == ["settings"]  # nothing of ours was added


@pytest.mark.parametrize("read_only", [False, True])
async def test_a_file_that_is_not_a_database_is_one_clear_error(db_path, read_only):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"Yo soy un archivo de texto, no una base de datos.\n" * 200)
    with pytest.raises(StorageError, match="the file is not a database") as raised:
        await Storage.open(db_path, read_only=read_only)
    assert str(db_path) in str(raised.value)


async def test_a_folder_that_cannot_be_written_is_named_with_what_to_do(tmp_path):
    blocker = tmp_path / "data"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(StorageError, match="must exist and be writable by .*uid 10001") as raised:
        await Storage.open(blocker / "cervantes.db")
    assert str(blocker) in str(raised.value)
    # sqlite's own "unable to open database file" says the same
    why = describe(sqlite3.OperationalError("unable to open database file"), tmp_path / "x" / "c.db")
    assert f"folder {tmp_path / 'x'} must exist and be writable" in why


# --- reads that fail, and reads while another process writes --------------------------------------

async def test_a_damaged_file_makes_reads_raise_storage_error(db_path):
    async with await Storage.open(db_path) as storage:
        await storage.set_length(TG, 5)
        await storage.save_continuation(TG, continuation())
    with sqlite3.connect(db_path) as conn:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    with open(db_path, "r+b") as f:  # every page but the first, where the schema is
        f.seek(page)
        f.write(b"\xa5" * page * (pages - 1))

    async with await Storage.open(db_path) as storage:
        with pytest.raises(StorageError, match=f"{db_path}: could not read the settings: .*damaged"):
            await storage.get_settings(TG)
        with pytest.raises(StorageError, match="could not read the continuation"):
            await storage.get_continuation(TG)


async def test_a_table_gone_from_under_the_bot_makes_reads_raise_storage_error(storage, place):
    place.execute("DROP TABLE chat_settings")
    place.execute("DROP TABLE continuations")
    with pytest.raises(StorageError, match="could not read the settings"):
        await storage.get_settings(TG)
    with pytest.raises(StorageError, match="could not read the continuation"):
        await storage.get_continuation(TG)


async def test_reads_do_not_wait_for_a_write_stuck_behind_another_process(place):
    async with await Storage.open(place.target, busy_timeout_ms=3000) as storage:
        await storage.set_temperature(TG, 0.4)
        await storage.save_continuation(TG, continuation())
        # another process holds the write lock (SQLite), or is writing the same row (PostgreSQL)
        other = held_write_lock(place, f"INSERT INTO chat_settings (platform, chat_id) VALUES "
                                       f"('{DC.platform}', '{DC.chat_id}')")
        try:
            stuck = asyncio.create_task(storage.set_length(DC, 7))
            await asyncio.sleep(0.2)
            assert not stuck.done()  # waiting for the other process, holding our write lock
            started = time.monotonic()
            assert await storage.get_settings(TG) == Settings(0.4)
            assert (await storage.get_continuation(TG)).tail == TAIL
            assert await storage.get_settings(DC) == Settings()  # not written yet
            assert time.monotonic() - started < 0.5
        finally:
            other.finish()  # rolled back
        await stuck  # once the other process lets go, the write goes through
        assert await storage.get_settings(DC) == Settings(None, 7)


# --- retention ------------------------------------------------------------------------------------

class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def add_idle_chats(place: Place, n: int, last_active: float) -> None:
    """n chats with settings and a continuation, last active at `last_active`, written directly."""
    numbers = "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i + 1 < ?) "
    chat = "'telegram', CAST(-5000 - i AS TEXT)"
    blob = "?" if place.kind == "sqlite" else "CAST(? AS BYTEA)"
    place.execute(numbers + f"INSERT INTO chat_settings (platform, chat_id, length) SELECT {chat}, 50 FROM g", n)
    place.execute(numbers + "INSERT INTO continuations (platform, chat_id, state, units, model_id, last_char, "
                  f"tail, updated_at, random_seed, position) SELECT {chat}, {blob}, 4, 'm', 'a', 'a', 0, NULL, 0 "
                  "FROM g", n, np.zeros(4, "<f4").tobytes())
    place.execute(numbers + f"INSERT INTO chats (platform, chat_id, last_active) SELECT {chat}, "
                  f"CAST(? AS REAL) FROM g" if place.kind == "sqlite" else
                  numbers + f"INSERT INTO chats (platform, chat_id, last_active) SELECT {chat}, "
                  "CAST(? AS DOUBLE PRECISION) FROM g", n, last_active)


async def queued(lock: asyncio.Lock, n: int) -> None:
    """Until `n` tasks wait for `lock` (asyncio.Lock serves them in that order)."""
    for _ in range(500):
        if len(lock._waiters or ()) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {n} tasks waiting for the lock")


async def test_chats_idle_longer_than_keep_days_are_deleted(place):
    clock = Clock()
    async with await Storage.open(place.target, keep_days=90, clock=clock) as storage:
        await storage.set_temperature(TG, 0.5)
        await storage.save_reply(TG, continuation(), seed="Sancho")
        await storage.set_length(DC, 100)
        quiet = ChatKey("discord", "777")
        await storage.set_length(quiet, 60)
        clock.now += 80 * DAY_S
        await storage.set_length(DC, 120)  # any write counts as activity
        await storage.save_continuation(quiet, continuation())
        clock.now += 11 * DAY_S  # TG idle 91 days; DC and quiet 11

        assert await storage.prune() == 1
        assert all(n == 0 for n in keyed_rows(place, TG).values())
        assert await storage.get_settings(DC) == Settings(None, 120)
        assert await storage.get_continuation(quiet) is not None
        assert await storage.prune() == 0

        clock.now += 80 * DAY_S
        assert await storage.prune() == 2
        assert count(place, "chats") == count(place, "chat_settings") == 0


async def test_without_keep_days_nothing_is_ever_deleted(place):
    clock = Clock()
    async with await Storage.open(place.target, clock=clock) as storage:  # as `cervantes health` opens it
        await storage.set_length(TG, 60)
        clock.now += 10_000 * DAY_S
        assert await storage.prune() == 0
        assert await storage.get_settings(TG) == Settings(None, 60)
    with pytest.raises(ValueError):
        Storage(place.target, keep_days=-1)


async def test_pruning_runs_in_the_background(place):
    clock = Clock()
    async with await Storage.open(place.target, keep_days=90, clock=clock, prune_every_s=0.05) as storage:
        add_idle_chats(place, 1203, last_active=clock.now - 91 * DAY_S)
        await storage.set_length(TG, 70)  # active
        for _ in range(200):  # the background task finds them within prune_every_s
            if count(place, "chats") == 1:
                break
            await asyncio.sleep(0.05)
        assert count(place, "chats") == count(place, "chat_settings") == 1
        assert count(place, "continuations") == 0
        assert await storage.get_settings(TG) == Settings(None, 70)


async def test_pruning_lets_commands_in_between_its_transactions(db_path):  # SQLite's writer lock
    clock = Clock()
    place = Place("sqlite", db_path)
    async with await Storage.open(db_path, clock=clock) as storage:
        storage.keep_days = 90  # prune() by hand only, with no background task to race it
        await storage.set_length(TG, 70)
        add_idle_chats(place, 1203, last_active=clock.now - 91 * DAY_S)
        lock = storage.engine.lock
        async with lock:  # a write in flight: the prune, then a command, queue behind it
            prune = asyncio.create_task(storage.prune(batch=500))
            await queued(lock, 1)
            command = asyncio.create_task(storage.set_temperature(DC, 0.9))
            await queued(lock, 2)
        await command  # went in after the first 500 chats, not after all 1203
        left = count(place, "chats")
        assert await prune == 1203
        assert left == 1203 - 500 + 2  # + TG and DC
        assert count(place, "chats") == 2


async def test_upgrade_counts_stored_chats_as_active_at_the_upgrade(place):
    await at_version(place, 2)
    place.execute("INSERT INTO chat_settings (platform, chat_id, length) VALUES (?, ?, ?)", *TG, 77)
    async with await Storage.open(place.target) as storage:
        await storage.save_continuation(DC, continuation())
        assert await storage.get_settings(TG) == Settings(None, 77)
    active = dict(((p, c), t) for p, c, t in place.rows("SELECT platform, chat_id, last_active FROM chats"))
    assert set(active) == {tuple(TG), tuple(DC)}
    assert all(abs(t - time.time()) < 60 for t in active.values())


# --- several processes opening one database at once (issue 19, item 9) -----------------------------

OPENER = """
import asyncio, sys, time
from storage import Storage, StorageError
path, at = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, at - time.time()))  # every process opens at the same moment
async def main():
    async with await Storage.open(path) as storage:
        await storage.set_length(("telegram", sys.argv[3]), 5)
try:
    asyncio.run(main())
except StorageError as exc:
    print(exc)
    sys.exit(1)
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_processes_opening_a_new_database_at_once_all_succeed(tmp_path, request, kind):
    """The review saw 14 of 120 such opens of a new SQLite file fail with "not a cervantes database"."""
    import subprocess
    import sys
    failures = []
    rounds = 8 if kind == "sqlite" else 2
    for round_ in range(rounds):
        place = (Place("sqlite", tmp_path / f"r{round_}" / "cervantes.db") if kind == "sqlite"
                 else Place(kind, request.getfixturevalue("postgres_server").new_database()))
        at = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(place.target), str(at), str(i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(6)]
        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            if proc.returncode != 0:
                failures.append(out.strip().splitlines()[-1])
        if not failures:
            assert count(place, "chat_settings") == 6
    assert not failures, f"{len(failures)} of {6 * rounds} opens failed: {failures[:3]}"


# --- backups that cannot be written (issue 19, item 11) ---------------------------------------------

async def test_a_backup_into_a_folder_is_refused_and_leaves_no_copy(db_path, tmp_path):
    storage = await Storage.open(db_path)
    await storage.save_reply(TG, continuation(), seed="Sancho")
    folder = tmp_path / "backups"
    folder.mkdir()
    with pytest.raises(StorageError, match=f"{folder} is a folder: name a file"):
        await storage.backup(folder)
    assert list(tmp_path.glob("*.partial")) == [] and list(folder.iterdir()) == []
    await storage.close()


async def test_a_backup_that_fails_at_the_end_leaves_no_partial_copy(db_path, tmp_path, monkeypatch):
    storage = await Storage.open(db_path)
    await storage.save_reply(TG, continuation(), seed="Sancho")

    def no_room(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_room)  # the copy is made; putting it in place fails
    with pytest.raises(StorageError, match="No space left on device"):
        await storage.backup(tmp_path / "copy.db")
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]  # no copy.db, no copy.db.partial
    monkeypatch.undo()
    await storage.close()


# --- a server that goes away (PostgreSQL) -----------------------------------------------------------

async def test_connections_cut_by_the_server_are_storage_errors_then_the_pool_reconnects(pg_url):
    import pg
    async with await Storage.open(pg_url) as storage:
        await storage.set_length(TG, 5)
        pg.sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        outcomes = []
        for _ in range(3):  # the pool's connection is gone: a StorageError, never asyncpg's own error
            try:
                outcomes.append(await storage.get_settings(TG))
            except StorageError as exc:
                outcomes.append("cannot be reached" in str(exc) or str(exc))
        assert outcomes[-1] == Settings(None, 5) and all(o in (True, Settings(None, 5)) for o in outcomes)
        await storage.set_length(TG, 6)  # writes go on too
        assert await storage.get_settings(TG) == Settings(None, 6)


async def test_memory_is_not_a_database_path():
    with pytest.raises(ValueError, match="two different empty databases"):
        Storage(":memory:")


async def test_a_new_migration_is_one_entry_for_both_engines(place, monkeypatch):
    """How the next migration is added (a per-chat column, say): one entry appended to MIGRATIONS.
    An older database is upgraded on either engine and the schema check knows the new column."""
    from storage import migrations, repository
    from storage.migrations import same

    async with await Storage.open(place.target) as storage:
        await storage.set_length(TG, 7)
    added = (*MIGRATIONS, same("ALTER TABLE chat_settings ADD COLUMN who_may_change TEXT;"))
    monkeypatch.setattr(migrations, "MIGRATIONS", added)
    monkeypatch.setattr(repository, "MIGRATIONS", added)
    async with await Storage.open(place.target) as storage:
        assert await storage.get_settings(TG) == Settings(None, 7)
    assert place.tables()["chat_settings"][-1] == "who_may_change"
    assert {t: c for t, c in place.tables().items() if t != "cervantes_schema"} == schema(len(added))
    monkeypatch.undo()  # this program again: the database is newer, and says so
    with pytest.raises(StorageError, match=f"at schema version {len(added)}, newer than this program"):
        await Storage.open(place.target)
