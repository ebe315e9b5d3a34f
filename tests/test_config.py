"""config.toml: defaults, overrides, and errors that name the key."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

import config
from config import checks
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


def test_every_key_has_a_rule():
    keys = {f"{section.name}.{f.name}" for section in dataclasses.fields(config.Config)
            for f in dataclasses.fields(section.type if isinstance(section.type, type)
                                        else getattr(config, section.type))}
    assert set(checks.RULES) == keys, "add a rule for each new key to config/checks.py"


@pytest.mark.parametrize("body, named", [
    ("[chat]\nlength = 0\n", "chat.length = 0 must be at least 1"),
    ("[chat]\ntemperature = nan\n", "chat.temperature = nan must be a finite number"),
    ("[chat]\nmax_temperature = inf\n", "chat.max_temperature = inf must be a finite number"),
    ("[chat]\nmin_length = 5000\n", "chat.min_length = 5000 is above chat.max_length = 1000"),
    ("[chat]\nlength = 2000\n", "chat.length = 2000 is above chat.max_length = 1000"),
    ("[chat]\ntemperature = 3.0\n", "chat.temperature = 3.0 is above chat.max_temperature = 2.0"),
    ("[chat]\nmax_seed_chars = 0\n", "chat.max_seed_chars = 0 must be at least 1"),
    ("[chat]\nrate_limit_per_minute = -1\n", "chat.rate_limit_per_minute = -1 must be at least 0"),
    ('[chat]\ngroup_settings = "todos"\n', "chat.group_settings = 'todos' must be one of \"admins\", \"everyone\""),
    ("[generation]\nmax_batch = 0\n", "generation.max_batch = 0 must be at least 1"),
    ("[generation]\nrequest_timeout_s = 0\n", "generation.request_timeout_s = 0.0 must be more than 0"),
    ("[generation]\ntop_k = -1\n", "generation.top_k = -1 must be at least 0"),
    ("[generation]\ntop_p = 0\n", "generation.top_p = 0.0 must be more than 0 and at most 1"),
    ("[generation]\ntop_p = 1.5\n", "generation.top_p = 1.5 must be more than 0 and at most 1"),
    ('[generation]\nwords = "any"\n', "generation.words = 'any' must be one of \"book\", \"free\""),
    ('[logging]\nlevel = "verbose"\n', "logging.level = 'verbose' must be one of \"DEBUG\""),
    ('[logging]\nformat = "xml"\n', "logging.format = 'xml' must be one of \"text\", \"json\""),
    ('[model]\ndevice = "tpu"\n', "model.device = 'tpu' must be one of \"auto\", \"cpu\", \"gpu\""),
    ('[telegram]\nmode = "push"\n', "telegram.mode = 'push' must be one of"),
    ('[telegram]\nmode = "webhook"\n', 'telegram.mode = "webhook" needs telegram.webhook_url'),
    ("[telegram]\nport = 70000\n", "telegram.port = 70000 must be at most 65535"),
    ('[telegram]\nbase_url = "api.telegram.org"\n', "telegram.base_url = 'api.telegram.org' must be an http"),
    ("[discord]\nguilds = [0]\n", "discord.guilds = [0] has 0, which must be at least 1"),
    ('[discord]\nprefix = ""\n', "discord.prefix = '' must be one word"),
    ('[storage]\npath = ""\n', "storage.path = '' must not be empty"),
    ("[discord]\nshard_ids = [0, 1]\n", "discord.shard_ids needs discord.shard_count"),
    ("[discord]\nshard_count = 2\nshard_ids = [2]\n", "discord.shard_ids = [2] must be distinct, each below"),
    ("[discord]\nshard_count = 2\nshard_ids = [1, 1]\n", "discord.shard_ids = [1, 1] must be distinct"),
])
def test_values_out_of_range_name_the_file_and_the_key(tmp_path, body, named):
    path = tmp_path / "c.toml"
    path.write_text(body)
    with pytest.raises(config.ConfigError) as err:
        config.load(path, environ={})
    assert str(err.value).startswith(f"{path}: ") and named in str(err.value), str(err.value)


@pytest.mark.parametrize("variable, value, named", [
    ("CERVANTES_CHAT_LENGTH", "0", "chat.length = 0 must be at least 1"),
    ("CERVANTES_CHAT_TEMPERATURE", "nan", "chat.temperature = nan must be a finite number"),
    ("CERVANTES_CHAT_MIN_LENGTH", "5000", "chat.min_length = 5000 is above chat.max_length = 1000"),
    ("CERVANTES_LOGGING_LEVEL", "verbose", "logging.level = 'verbose' must be one of"),
    ("CERVANTES_MODEL_DEVICE", "cpu   # comment", "'cpu   # comment' looks like a value with an inline comment"),
    ("CERVANTES_GENERATION_MAX_BATCH", "64 # rows", "inline comment"),
])
def test_bad_environment_values_name_the_variable_and_the_key(variable, value, named):
    with pytest.raises(config.ConfigError) as err:
        config.load(None, environ={"CERVANTES_CONFIG": str(ROOT / "config.toml"), variable: value})
    assert str(err.value).startswith(f"${variable}: ") and named in str(err.value), str(err.value)


def test_a_relation_names_where_the_changed_value_came_from(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[chat]\nmax_length = 100\n")  # below the default length, 300
    with pytest.raises(config.ConfigError, match=r"c\.toml: chat\.length = 300 is above chat\.max_length = 100"):
        config.load(path, environ={})
    path.write_text("[chat]\nmin_length = 10\nmax_length = 100\nlength = 100\n")
    assert config.load(path, environ={"CERVANTES_CHAT_LOGGING": ""}).chat.length == 100


def test_values_in_range_are_accepted(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[chat]\ntemperature = 0\nmin_temperature = 0\nmin_length = 1\nlength = 1\n'
                    '[logging]\nlevel = "debug"\n[telegram]\nmode = "webhook"\n'
                    'webhook_url = "https://bot.example.org/hook"\n[metrics]\nport = 0\n')
    cfg = config.load(path, environ={"CERVANTES_GENERATION_TOP_K": "1", "CERVANTES_STORAGE_PATH": "/data/a#b.db",
                                     "CERVANTES_GENERATION_TOP_P": "0.9", "CERVANTES_GENERATION_WORDS": "free"})
    assert (cfg.chat.temperature, cfg.chat.length, cfg.generation.top_k) == (0.0, 1, 1)
    assert (cfg.generation.top_p, cfg.generation.words) == (0.9, "free")
    assert cfg.storage.path == "/data/a#b.db"  # a # inside a value is not a comment


def test_unknown_cervantes_variables_are_warned_about():
    warnings = config.stray_variables({
        "CERVANTES_STORAGE_PAHT": "/data/x.db", "CERVANTES_STORAGE_PATH": "/data/x.db",
        "CERVANTES_CONFIG": "c.toml", "CERVANTES_CACHE": "/cache", "CERVANTES_DISCORD_MESSAGE_CONTENT": "0",
        "TELEGRAM_TOKEN": "x", "HOME": "/root"})
    assert warnings == ["$CERVANTES_STORAGE_PAHT is not a setting: ignored "
                        "(did you mean $CERVANTES_STORAGE_PATH?)"]
    assert config.stray_variables({"CERVANTES_WHATEVER": "1"}) == ["$CERVANTES_WHATEVER is not a setting: ignored"]


def test_env_example_names_real_settings_with_values_that_load():
    """Every KEY=value in .env.example, commented out or not: no inline comment, no stray name."""
    import re

    pairs = dict(re.findall(r"(?m)^#? ?([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text()))
    assert "CERVANTES_DISCORD_MESSAGE_CONTENT" in pairs
    assert not [k for k, v in pairs.items() if "#" in v], "env files keep inline comments in the value"
    settings = {k: v for k, v in pairs.items() if k.startswith("CERVANTES_") and k != "CERVANTES_CONFIG"}
    assert config.stray_variables(settings) == []
    config.load(None, environ={"CERVANTES_CONFIG": str(ROOT / "config.toml"), **settings})


def test_the_command_line_warns_of_stray_variables(tmp_path, monkeypatch, capsys):
    from cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CERVANTES_CONFIG", raising=False)
    monkeypatch.setenv("CERVANTES_STORAGE_PAHT", str(tmp_path / "x.db"))
    main(["health"])
    assert ("cervantes: warning: $CERVANTES_STORAGE_PAHT is not a setting: ignored "
            "(did you mean $CERVANTES_STORAGE_PATH?)\n") in capsys.readouterr().err


# --- [storage]: values that pass a type check but would break the bot (issue 19, item 12) -----------

@pytest.mark.parametrize("variable, value, named", [
    ("CERVANTES_STORAGE_PATH", ":memory:", "storage.path = ':memory:' would give the bot's reader and "
                                           "writer two different empty databases"),
    ("CERVANTES_STORAGE_REPLIES_PER_CHAT", str(2**63), "must be at most 9223372036854775807"),
    ("CERVANTES_STORAGE_KEEP_DAYS", str(10**400), "must be at most"),
])
def test_storage_values_the_database_cannot_hold_are_refused(variable, value, named):
    with pytest.raises(config.ConfigError) as err:
        config.load(None, environ={"CERVANTES_CONFIG": str(ROOT / "config.toml"), variable: value})
    assert str(err.value).startswith(f"${variable}: ") and named in str(err.value), str(err.value)


async def test_the_largest_storage_values_allowed_work(tmp_path):
    """The bounds are what the database holds, not guesses: a save at the limits goes through."""
    import numpy as np

    from storage import Continuation, Storage

    cfg = config.load(None, environ={"CERVANTES_CONFIG": str(ROOT / "config.toml"),
                                     "CERVANTES_STORAGE_REPLIES_PER_CHAT": str(2**63 - 1),
                                     "CERVANTES_STORAGE_KEEP_DAYS": str(checks.KEEP_DAYS_MAX)})
    async with await Storage.open(tmp_path / "c.db", keep_days=cfg.storage.keep_days,
                                  replies_per_chat=cfg.storage.replies_per_chat) as storage:
        reply = await storage.save_reply(("telegram", 1), Continuation(np.ones(4), "m", "a", "a"), seed="a")
        assert await storage.get_reply(("telegram", 1), reply) is not None
        assert await storage.prune() == 0
def _integer_keys() -> list[str]:
    """Every integer setting (or list of them) outside [storage] and [generation]."""
    keys = []
    for section in dataclasses.fields(config.Config()):
        if section.name in ("storage", "generation"):
            continue
        values = getattr(config.Config(), section.name)
        for field in dataclasses.fields(values):
            value = getattr(values, field.name)
            if (isinstance(value, int) and not isinstance(value, bool)) or field.name == "guilds":
                keys.append(f"{section.name}.{field.name}")
    return keys


@pytest.mark.parametrize("key", _integer_keys())
def test_every_integer_has_an_upper_bound(key):
    """A value no use can hold (a reply of 10**30 characters, a seed longer than any message, a
    guild id past 64 bits) is refused at start, naming the key, rather than breaking the bot later."""
    section, name = key.split(".")
    variable = f"CERVANTES_{section.upper()}_{name.upper()}"
    with pytest.raises(config.ConfigError) as err:
        config.load(None, environ={"CERVANTES_CONFIG": str(ROOT / "config.toml"), variable: str(10**30)})
    assert f"{key} = " in str(err.value) and "must be at most" in str(err.value), str(err.value)


@pytest.mark.parametrize("key, high", [
    ("chat.max_length", 10_000), ("chat.max_seed_chars", 4096),
    ("chat.rate_limit_per_minute", 1000), ("telegram.inline_rate_limit_per_minute", 1000),
])
def test_the_upper_bounds_are_accepted_and_one_more_is_not(key, high):
    section, name = key.split(".")
    variable = f"CERVANTES_{section.upper()}_{name.upper()}"
    environ = {"CERVANTES_CONFIG": str(ROOT / "config.toml"), variable: str(high)}
    assert getattr(getattr(config.load(None, environ=environ), section), name) == high
    with pytest.raises(config.ConfigError, match=f"{key} = {high + 1} must be at most {high}"):
        config.load(None, environ={**environ, variable: str(high + 1)})


def test_shards_split_between_processes_from_the_environment():
    cfg = config.load(None, environ={"CERVANTES_DISCORD_SHARD_COUNT": "4", "CERVANTES_DISCORD_SHARD_IDS": "2,3"})
    assert (cfg.discord.shard_count, cfg.discord.shard_ids) == (4, [2, 3])
