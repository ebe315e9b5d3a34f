"""The load tool, small: every command answered exactly once, to the right chat, on either store;
its load never goes into a database that holds chats."""

import dataclasses

import pytest

import pg
from cli import loadtest
from config import Config
from storage import ChatKey, Storage, StorageError


def tiny(tiny_model_dir, **storage) -> Config:
    config = Config()
    return dataclasses.replace(config, model=dataclasses.replace(config.model, path=str(tiny_model_dir)),
                               chat=dataclasses.replace(config.chat, length=50),
                               storage=dataclasses.replace(config.storage, **storage))


async def test_every_command_answered_once_to_its_chat(tiny_model_dir):
    rounds = await loadtest.run(tiny(tiny_model_dir), chats=30, commands=4, rounds=2)
    for r in rounds:
        assert r["answered"] == r["commands"] == 120
        assert r["exactly_once"] and r["misrouted"] == 0


async def test_on_postgresql_every_command_answered_once_and_the_database_left_empty(tiny_model_dir, pg_url):
    (r,) = await loadtest.run(tiny(tiny_model_dir), chats=20, commands=3, rounds=1, storage_url=pg_url)
    assert r["answered"] == r["commands"] == 60
    assert r["exactly_once"] and r["misrouted"] == 0
    assert pg.sql(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []


async def test_a_postgresql_database_that_holds_chats_is_refused_and_left_alone(tiny_model_dir, pg_url):
    async with await Storage.open(pg_url) as storage:
        await storage.set_temperature(ChatKey("telegram", "42"), 1.3)
    with pytest.raises(StorageError, match="not empty .*throwaway database"):
        await loadtest.run(tiny(tiny_model_dir), chats=2, commands=1, rounds=1, storage_url=pg_url)
    async with await Storage.open(pg_url) as storage:
        assert (await storage.get_settings(ChatKey("telegram", "42"))).temperature == 1.3
    assert pg.sql(pg_url, "SELECT count(*) FROM chat_settings") == [(1,)]


async def test_without_the_flag_the_configured_database_gets_no_load(tiny_model_dir, pg_url, tmp_path):
    admins = tmp_path / "cervantes.db"
    await loadtest.run(tiny(tiny_model_dir, url=pg_url, path=str(admins)), chats=2, commands=2, rounds=1)
    assert pg.sql(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'") == []
    assert not admins.exists()
