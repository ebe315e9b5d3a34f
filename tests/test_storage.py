"""storage: per-chat settings and continuations in a real SQLite file under tmp_path."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import sqlite3
import stat
import time

import aiosqlite
import numpy as np
import pytest

from storage import TAIL_CHARS, ChatKey, Continuation, Settings, Storage, StorageError
from storage.errors import describe
from storage.migrations import MIGRATIONS, migrate
from storage.repository import DAY_S

TG = ChatKey("telegram", "-1001234567890")
DC = ChatKey("discord", "1098765432109876543")
TAIL = "—¿Qué gigantes? —dijo Sancho Panza. «Aquellos que allí ves», respondió su amo. 🐴🗡️ ñandú"


def continuation(units: int = 16, seed: int = 0, model_id: str = "quijote-v1", tail: str = TAIL):
    state = np.random.default_rng(seed).standard_normal(units).astype(np.float32)
    return Continuation(state, model_id, tail[-1], tail, updated_at=1_700_000_000.5)


def keyed_rows(path, key) -> dict[str, int]:
    """Rows of `key` in every table that has a chat_id column, read with plain sqlite3."""
    with sqlite3.connect(path) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if "chat_id" in [col[1] for col in conn.execute(f"PRAGMA table_info({name})")]]
        return {t: conn.execute(f"SELECT count(*) FROM {t} WHERE platform = ? AND chat_id = ?",
                                tuple(key)).fetchone()[0] for t in tables}


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "data" / "cervantes.db"  # the "data" folder does not exist yet


@pytest.fixture
async def storage(db_path):
    async with await Storage.open(db_path) as storage:
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


async def test_only_the_newest_replies_of_each_chat_are_kept(db_path):
    async with await Storage.open(db_path, replies_per_chat=3) as storage:
        ids = [await storage.save_reply(TG, continuation(seed=i), seed=f"s{i}") for i in range(5)]
        other = await storage.save_reply(DC, continuation(), seed="otro")
        assert [await storage.get_reply(TG, i) is not None for i in ids] == [False, False, True, True, True]
        assert (await storage.get_reply(DC, other)).seed == "otro"
        assert keyed_rows(db_path, TG)["replies"] == 3


async def test_a_forgotten_reply_id_is_never_handed_out_again(storage):
    old = await storage.save_reply(TG, continuation(), seed="antes")
    await storage.forget(TG)
    new = await storage.save_reply(TG, continuation(), seed="después")
    assert new != old and await storage.get_reply(TG, old) is None  # an old button finds nothing


async def test_an_unreadable_reply_reads_as_none_and_is_deleted(db_path, caplog):
    async with await Storage.open(db_path) as storage:
        reply_id = await storage.save_reply(TG, continuation(), start=continuation(seed=3))
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE replies SET start_state = x'0102'")
    async with await Storage.open(db_path) as storage:
        assert await storage.get_reply(TG, reply_id) is None
    assert "unreadable replies row" in caplog.text
    assert count(db_path, "replies") == 0


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


async def test_forget_removes_every_row_of_that_chat_only(storage, db_path):
    for key in (TG, DC):
        await storage.set_temperature(key, 0.9)
        await storage.save_reply(key, continuation(), seed="Sancho")  # the chat's continuation too
    assert set(keyed_rows(db_path, TG)) == {"chat_settings", "continuations", "chats", "replies"}

    assert await storage.forget(TG) is True
    assert all(n == 0 for n in keyed_rows(db_path, TG).values())
    assert all(n == 1 for n in keyed_rows(db_path, DC).values())
    assert await storage.get_settings(TG) == Settings()
    assert await storage.get_continuation(TG) is None
    assert await storage.forget(TG) is False  # nothing left to forget


async def test_forgotten_text_is_gone_from_the_file_itself(db_path):
    secret = "El secreto de Sancho: la ínsula Barataria está en Alcalá"
    async with await Storage.open(db_path) as storage:
        await storage.save_reply(TG, continuation(tail=secret), seed=secret)
        await storage.save_continuation(DC, continuation())
        await storage.forget(TG)
    # closed: checkpointed into the main file, the -wal removed; the deleted cells were zeroed
    assert not db_path.with_name("cervantes.db-wal").exists()
    assert "Barataria".encode() not in db_path.read_bytes()
    assert TAIL.encode() in db_path.read_bytes()  # the check reads the file as it is


async def test_move_chat_takes_settings_and_continuation_to_the_new_chat(storage, db_path):
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
    assert all(n == 0 for n in keyed_rows(db_path, group).values())
    assert await storage.get_settings(DC) == Settings(0.3)

    assert await storage.move_chat(group, supergroup) is False  # again: nothing left to move
    assert await storage.get_settings(supergroup) == Settings(1.5, 120)
    assert await storage.move_chat(supergroup, supergroup) is False  # never deletes a chat's own rows
    assert await storage.get_settings(supergroup) == Settings(1.5, 120)


async def test_move_chat_keeps_the_new_chats_own_rows(storage, db_path):
    group, supergroup = ChatKey("telegram", "-4002"), ChatKey("telegram", "-1004002")
    await storage.set_temperature(supergroup, 0.7)  # set in the supergroup before the move came
    await storage.set_temperature(group, 1.5)
    await storage.set_length(group, 120)
    await storage.save_continuation(group, continuation(seed=1))

    assert await storage.move_chat(group, supergroup) is True  # the continuation moved
    assert await storage.get_settings(supergroup) == Settings(0.7)  # its own row, not merged with the old
    assert np.array_equal((await storage.get_continuation(supergroup)).state, continuation(seed=1).state)
    assert all(n == 0 for n in keyed_rows(db_path, group).values())

    await storage.set_temperature(group, 1.9)  # every table in conflict: nothing moves, the old rows go
    await storage.save_continuation(group, continuation(seed=3))
    assert await storage.move_chat(group, supergroup) is False
    assert await storage.get_settings(supergroup) == Settings(0.7)
    assert np.array_equal((await storage.get_continuation(supergroup)).state, continuation(seed=1).state)
    assert all(n == 0 for n in keyed_rows(db_path, group).values())


async def test_data_survives_reopening(db_path):
    async with await Storage.open(db_path) as storage:
        await storage.set_temperature(TG, 1.2)
        await storage.save_continuation(TG, continuation())
    async with Storage(db_path) as storage:
        assert await storage.get_settings(TG) == Settings(1.2, None)
        np.testing.assert_array_equal((await storage.get_continuation(TG)).state, continuation().state)


async def test_new_file_is_wal_at_the_latest_version(storage, db_path):
    assert db_path.parent.is_dir()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert await storage.integrity_check() == "ok"
    assert await storage.is_writable()


async def test_old_database_is_upgraded_and_keeps_its_rows(db_path):
    assert len(MIGRATIONS) > 1
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as db:
        assert await migrate(db, target=1) == 1
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO chat_settings (platform, chat_id, length) VALUES (?, ?, ?)", (*TG, 77))
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'continuations'").fetchone()[0] == 0

    async with await Storage.open(db_path) as storage:
        assert await storage.get_settings(TG) == Settings(None, 77)
        await storage.save_continuation(TG, continuation())
        assert (await storage.get_continuation(TG)).tail == TAIL
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_database_from_a_newer_program_is_refused(db_path):
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StorageError, match="newer"):
        await Storage.open(db_path)


@pytest.mark.parametrize("column, value", [
    ("state", b"\x00" * 12),  # 3 float32s where the row says 16 units
    ("state", "not bytes"),
    ("units", 0),
    ("updated_at", "yesterday"),
])
async def test_corrupt_continuation_is_logged_deleted_and_reads_as_none(db_path, caplog, column, value):
    async with await Storage.open(db_path) as storage:
        await storage.save_continuation(TG, continuation(units=16))
        await storage.save_continuation(DC, continuation(units=16))
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"UPDATE continuations SET {column} = ? WHERE platform = ? AND chat_id = ?",
                     (value, *TG))

    async with await Storage.open(db_path) as storage:
        with caplog.at_level(logging.WARNING, logger="storage.repository"):
            assert await storage.get_continuation(TG) is None
        assert "continuation" in caplog.text and "telegram" in caplog.text
        assert TG.chat_id not in caplog.text  # a hash names the chat, never its id
        assert await storage.get_continuation(DC) is not None  # the other chat is untouched
    # deleted in the background, not in the read's time: done by the time close() returns
    assert keyed_rows(db_path, TG)["continuations"] == 0
    assert keyed_rows(db_path, DC)["continuations"] == 1


@pytest.mark.parametrize("column, value", [("temperature", "hot"), ("temperature", float("inf")),
                                           ("length", 2.5), ("length", -1),
                                           ("group_settings", "todos")])
async def test_corrupt_settings_read_as_defaults_and_are_deleted(db_path, caplog, column, value):
    async with await Storage.open(db_path) as storage:
        await storage.set_length(TG, 10)
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"UPDATE chat_settings SET {column} = ? WHERE platform = ? AND chat_id = ?",
                     (value, *TG))
    async with await Storage.open(db_path) as storage:
        with caplog.at_level(logging.WARNING, logger="storage.repository"):
            assert await storage.get_settings(TG) == Settings()
        assert "settings" in caplog.text
    assert keyed_rows(db_path, TG)["chat_settings"] == 0


async def test_a_good_row_saved_after_an_unreadable_one_was_read_is_kept(db_path):
    async with await Storage.open(db_path) as storage:
        await storage.save_continuation(TG, continuation())
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE continuations SET units = 0")
        async with storage._lock:  # a write in flight: the deletion of the bad row waits behind it
            assert await storage.get_continuation(TG) is None
            with sqlite3.connect(db_path) as conn:  # meanwhile a good row replaces the bad one
                conn.execute("UPDATE continuations SET units = 16")
    async with await Storage.open(db_path) as storage:
        np.testing.assert_array_equal((await storage.get_continuation(TG)).state, continuation().state)


async def test_read_only_file_refuses_writes_with_storage_error_and_still_reads(db_path):
    # Tests run as root, where chmod 0o444 does not stop writes: open with SQLite's ?mode=ro instead.
    async with await Storage.open(db_path) as storage:
        await storage.set_temperature(TG, 0.8)
        await storage.save_continuation(TG, continuation())

    async with await Storage.open(db_path, read_only=True) as storage:
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


async def test_full_database_raises_storage_error_and_still_reads(storage):
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


async def test_backup_while_open_holds_the_same_rows(storage, tmp_path):
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


async def test_methods_need_a_started_storage(db_path):
    storage = Storage(db_path)
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


async def test_a_table_gone_from_under_the_bot_makes_reads_raise_storage_error(storage, db_path):
    with sqlite3.connect(db_path) as conn:
        conn.executescript("DROP TABLE chat_settings; DROP TABLE continuations")
    with pytest.raises(StorageError, match="could not read the settings"):
        await storage.get_settings(TG)
    with pytest.raises(StorageError, match="could not read the continuation"):
        await storage.get_continuation(TG)


async def test_reads_do_not_wait_for_a_write_stuck_behind_another_process(db_path):
    async with await Storage.open(db_path, busy_timeout_ms=3000) as storage:
        await storage.set_temperature(TG, 0.4)
        await storage.save_continuation(TG, continuation())
        other = sqlite3.connect(db_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
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
            other.execute("ROLLBACK")
            other.close()
        await stuck  # once the other process lets go, the write goes through
        assert await storage.get_settings(DC) == Settings(None, 7)


# --- retention ------------------------------------------------------------------------------------

class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def add_idle_chats(path, n: int, last_active: float) -> None:
    """n chats with settings and a continuation, last active at `last_active`, written directly."""
    keys = [("telegram", str(-5000 - i)) for i in range(n)]
    blob = np.zeros(4, "<f4").tobytes()
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO chat_settings (platform, chat_id, length) VALUES (?, ?, 50)", keys)
        conn.executemany("INSERT INTO continuations VALUES (?, ?, ?, 4, 'm', 'a', 'a', 0, NULL, 0)",
                         [(*k, blob) for k in keys])
        conn.executemany("INSERT INTO chats VALUES (?, ?, ?)", [(*k, last_active) for k in keys])


async def queued(lock: asyncio.Lock, n: int) -> None:
    """Until `n` tasks wait for `lock` (asyncio.Lock serves them in that order)."""
    for _ in range(500):
        if len(lock._waiters or ()) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {n} tasks waiting for the lock")


def count(path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


async def test_chats_idle_longer_than_keep_days_are_deleted(db_path):
    clock = Clock()
    async with await Storage.open(db_path, keep_days=90, clock=clock) as storage:
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
        assert all(n == 0 for n in keyed_rows(db_path, TG).values())
        assert await storage.get_settings(DC) == Settings(None, 120)
        assert await storage.get_continuation(quiet) is not None
        assert await storage.prune() == 0

        clock.now += 80 * DAY_S
        assert await storage.prune() == 2
        assert count(db_path, "chats") == count(db_path, "chat_settings") == 0


async def test_without_keep_days_nothing_is_ever_deleted(db_path):
    clock = Clock()
    async with await Storage.open(db_path, clock=clock) as storage:  # as `cervantes health` opens it
        await storage.set_length(TG, 60)
        clock.now += 10_000 * DAY_S
        assert await storage.prune() == 0
        assert await storage.get_settings(TG) == Settings(None, 60)
    with pytest.raises(ValueError):
        Storage(db_path, keep_days=-1)


async def test_pruning_runs_in_the_background(db_path):
    clock = Clock()
    async with await Storage.open(db_path, keep_days=90, clock=clock, prune_every_s=0.05) as storage:
        add_idle_chats(db_path, 1203, last_active=clock.now - 91 * DAY_S)
        await storage.set_length(TG, 70)  # active
        for _ in range(200):  # the background task finds them within prune_every_s
            if count(db_path, "chats") == 1:
                break
            await asyncio.sleep(0.05)
        assert count(db_path, "chats") == count(db_path, "chat_settings") == 1
        assert count(db_path, "continuations") == 0
        assert await storage.get_settings(TG) == Settings(None, 70)


async def test_pruning_lets_commands_in_between_its_transactions(db_path):
    clock = Clock()
    async with await Storage.open(db_path, clock=clock) as storage:
        storage.keep_days = 90  # prune() by hand only, with no background task to race it
        await storage.set_length(TG, 70)
        add_idle_chats(db_path, 1203, last_active=clock.now - 91 * DAY_S)
        async with storage._lock:  # a write in flight: the prune, then a command, queue behind it
            prune = asyncio.create_task(storage.prune(batch=500))
            await queued(storage._lock, 1)
            command = asyncio.create_task(storage.set_temperature(DC, 0.9))
            await queued(storage._lock, 2)
        await command  # went in after the first 500 chats, not after all 1203
        left = count(db_path, "chats")
        assert await prune == 1203
        assert left == 1203 - 500 + 2  # + TG and DC
        assert count(db_path, "chats") == 2


async def test_upgrade_counts_stored_chats_as_active_at_the_upgrade(db_path):
    db_path.parent.mkdir(parents=True)
    async with aiosqlite.connect(db_path, isolation_level=None) as db:
        assert await migrate(db, target=2) == 2
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO chat_settings (platform, chat_id, length) VALUES (?, ?, ?)", (*TG, 77))
    async with await Storage.open(db_path) as storage:
        await storage.save_continuation(DC, continuation())
        assert await storage.get_settings(TG) == Settings(None, 77)
    with sqlite3.connect(db_path) as conn:
        active = dict(((p, c), t) for p, c, t in conn.execute("SELECT * FROM chats"))
    assert set(active) == {tuple(TG), tuple(DC)}
    assert all(abs(t - time.time()) < 60 for t in active.values())
