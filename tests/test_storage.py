"""storage: per-chat settings and continuations in a real SQLite file under tmp_path."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import aiosqlite
import numpy as np
import pytest

from storage import TAIL_CHARS, ChatKey, Continuation, Settings, Storage, StorageError
from storage.migrations import MIGRATIONS, migrate

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
        await storage.save_continuation(key, continuation())
    assert set(keyed_rows(db_path, TG)) == {"chat_settings", "continuations"}

    assert await storage.forget(TG) is True
    assert all(n == 0 for n in keyed_rows(db_path, TG).values())
    assert all(n == 1 for n in keyed_rows(db_path, DC).values())
    assert await storage.get_settings(TG) == Settings()
    assert await storage.get_continuation(TG) is None
    assert await storage.forget(TG) is False  # nothing left to forget


async def test_move_chat_takes_settings_and_continuation_to_the_new_chat(storage, db_path):
    group, supergroup = ChatKey("telegram", "-4001"), ChatKey("telegram", "-1004001")
    await storage.set_temperature(group, 1.5)
    await storage.set_length(group, 120)
    await storage.save_continuation(group, continuation(seed=1))
    await storage.set_temperature(DC, 0.3)  # another chat: untouched

    assert await storage.move_chat(group, ("telegram", -1004001)) is True
    assert await storage.get_settings(supergroup) == Settings(1.5, 120)
    moved = await storage.get_continuation(supergroup)
    assert np.array_equal(moved.state, continuation(seed=1).state) and moved.tail == TAIL
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
        assert keyed_rows(db_path, TG)["continuations"] == 0
        assert await storage.get_continuation(DC) is not None  # the other chat is untouched


@pytest.mark.parametrize("column, value", [("temperature", "hot"), ("temperature", float("inf")),
                                           ("length", 2.5), ("length", -1)])
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
