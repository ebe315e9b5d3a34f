"""config.toml: defaults, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from cli import config
from conftest import ROOT


def test_shipped_file_lists_every_key_with_its_default():
    raw = tomllib.loads((ROOT / "config.toml").read_text())
    defaults = config.Config()
    for section in dataclasses.fields(defaults):
        values = getattr(defaults, section.name)
        assert set(raw[section.name]) == {f.name for f in dataclasses.fields(values)}
    assert config.load(ROOT / "config.toml", environ={}) == defaults


def test_no_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.load(environ={}) == config.Config()


def test_file_and_environment_override(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[chat]\ntemperature = 1\n[generation]\nmax_batch = 8\n')
    cfg = config.load(path, environ={"CERVANTES_STORAGE_PATH": "/data/x.db",
                                     "CERVANTES_TELEGRAM_BASE_URL": "http://127.0.0.1:9000/bot",
                                     "CERVANTES_GENERATION_MAX_BATCH": "16",
                                     "CERVANTES_CORPUS_STRIP_ACCENTS": "true",
                                     "CERVANTES_DISCORD_GUILDS": "1, 2"})
    assert cfg.chat.temperature == 1.0
    assert cfg.generation.max_batch == 16  # the environment wins over the file
    assert cfg.storage.path == "/data/x.db"
    assert cfg.telegram.base_url == "http://127.0.0.1:9000/bot"
    assert cfg.corpus.strip_accents is True
    assert cfg.discord.guilds == [1, 2]


@pytest.mark.parametrize("body, named", [
    ("[chat]\ntemperatur = 0.5\n", "chat.temperatur"),
    ("[chats]\n", "[chats]"),
    ('[generation]\nmax_batch = "64"\n', "generation.max_batch"),
    ("[discord]\nsync_commands = 1\n", "discord.sync_commands"),
    ("[chat]\nlength = 1.5\n", "chat.length"),
    ("[chat\n", "c.toml"),
])
def test_bad_files_name_the_key_and_the_file(tmp_path, body, named):
    path = tmp_path / "c.toml"
    path.write_text(body)
    with pytest.raises(config.ConfigError) as err:
        config.load(path, environ={})
    assert named in str(err.value) and "c.toml" in str(err.value)


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(config.ConfigError, match="CERVANTES_CHAT_LENGTH"):
        config.load(None,
                    environ={"CERVANTES_CHAT_LENGTH": "many"})


def test_a_named_file_must_exist(tmp_path):
    with pytest.raises(config.ConfigError, match="no such config file"):
        config.load(tmp_path / "missing.toml", environ={})
