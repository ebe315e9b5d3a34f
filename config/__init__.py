"""config.toml into frozen dataclasses: one section a class, a default and a comment per field.

Unknown keys, wrong types and values out of range (config/checks.py) are errors that name the key
and the file or variable. Any key can be overridden from the environment as
CERVANTES_<SECTION>_<KEY> (CERVANTES_STORAGE_PATH=/data/cervantes.db); `stray_variables` lists the
CERVANTES_* variables that nothing reads (a misspelled name is otherwise silently ignored).
Tokens never live here: they come from the environment only (see bot.process.secrets).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from config import checks

DEFAULT_PATH = Path("config.toml")
# read elsewhere: the config file's path (load, below) and the download cache (model/corpus.py)
OTHER_VARIABLES = frozenset({"CERVANTES_CONFIG", "CERVANTES_CACHE"})
_INLINE_COMMENT = re.compile(r"\s#")  # `cpu   # comment`: docker run --env-file keeps it in the value


class ConfigError(Exception):
    """A config file or environment override that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ModelSection:
    path: str = ""  # model folder; empty means the model shipped with the package
    device: str = "auto"  # "auto" (the GPU when TensorFlow sees one), "cpu" or "gpu"


@dataclass(frozen=True)
class CorpusSection:
    path: str = ""  # training text; empty means the copy `cervantes download-corpus` saved
    strip_accents: bool = False  # true reproduces the notebook: NFD, accents dropped, 86 ids
    extra: list[str] = field(default_factory=list)  # more training text (training side only)


@dataclass(frozen=True)
class StorageSection:
    path: str = "cervantes.db"  # SQLite file with every chat's settings and continuation (when url is empty)
    url: str = field(default="", repr=False)  # postgresql://user@host:port/dbname: PostgreSQL instead of the file; password via PGPASSWORD/PGPASSFILE
    url_file: str = ""  # a file holding the whole URL, password included (instead of url)
    keep_days: int = 90  # a chat idle this many days is deleted; 0 keeps chats until /olvidar
    replies_per_chat: int = 50  # replies per chat whose buttons still work; older ones are deleted
    status_path: str = ""  # status file for `cervantes health`; empty: beside the database (docs/operations.md)

    @property
    def shared(self) -> bool:
        """PostgreSQL (url or url_file): several processes share it, and elect one active one (bot/process/leader.py)."""
        return bool(self.url or self.url_file)

    def database(self) -> str:
        """What Storage opens: the PostgreSQL URL (from url, or read from url_file now), else the path."""
        if self.url_file:
            try:
                url = Path(self.url_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"storage.url_file: cannot read {self.url_file}: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
            if problem := checks.postgresql_url(url) or (None if url else "is empty"):
                raise ConfigError(f"storage.url_file: the URL in {self.url_file} {problem}")
            return url
        return self.url or self.path


@dataclass(frozen=True)
class GenerationSection:
    max_batch: int = 64  # rows generated together at most
    max_wait_ms: int = 5  # how long a lone request waits for company at most (a fifth of it after the last came)
    chunk_steps: int = 100  # steps per model call while requests wait (up to 5x while none do); they join between calls
    queue_size: int = 256  # waiting requests at most; beyond it the bot answers "busy"
    request_timeout_s: float = 60.0  # a request not done by then is dropped with an apology
    top_k: int = 0  # sample among the k likeliest characters only; 0 means all
    top_p: float = 1.0  # sample among the likeliest characters that make up this probability; 1 means all
    words: str = "book"  # "book": only words the novel uses (the model's lexicon); "free": any letters
    split: str = "auto"  # 8 to 32 rows run as two half calls side by side: "on", "off", "auto" (on a CPU of 2+ cores)


@dataclass(frozen=True)
class ChatSection:
    temperature: float = 0.8  # a new chat's temperature (chosen from the sample table on the model card)
    length: int = 300  # a new chat's reply length in characters
    min_temperature: float = 0.1  # /temperatura accepts this range
    max_temperature: float = 2.0
    min_length: int = 50  # /longitud accepts this range
    max_length: int = 1000
    max_seed_chars: int = 500  # a longer seed keeps its last characters
    rate_limit_per_minute: int = 12  # commands per chat per minute, of any kind; 0 means no limit
    user_rate_limit_per_minute: int = 6  # commands per member per minute in a group; 0 means no limit
    group_settings: str = "admins"  # who changes settings and uses /olvidar in groups and servers: "admins" or "everyone"


@dataclass(frozen=True)
class TelegramSection:
    mode: str = "polling"  # "polling" or "webhook"
    base_url: str = "https://api.telegram.org/bot"  # Bot API server (self-hosted ones, tests)
    webhook_url: str = ""  # public https URL Telegram posts updates to (webhook mode)
    listen: str = "0.0.0.0"  # address the webhook server binds (webhook mode)
    port: int = 8443  # port the webhook server binds (webhook mode)
    edit_interval_s: float = 1.0  # at most one edit of a streamed reply per chat this often
    stream_after_s: float = 1.0  # a reply not ready by then is shown as it grows (private chats)
    max_delivery_s: float = 120.0  # a reply not delivered by then is dropped, logged and counted
    inline_length: int = 200  # characters each of the three inline-mode continuations writes
    inline_rate_limit_per_minute: int = 60  # inline queries per user per minute (one per keystroke); 0: no limit


@dataclass(frozen=True)
class DiscordSection:
    prefix: str = "!"  # prefix commands: !cervantes Sancho dijo
    sync_commands: bool = True  # register the slash commands at start
    guilds: list[int] = field(default_factory=list)  # sync to these guilds only (instant; testing)
    message_content: bool = True  # privileged intent, needed for prefix commands
    edit_interval_s: float = 1.0  # at most one edit of a streamed reply per channel this often
    shard_count: int = 0  # gateway shards in all; 0 means Discord's recommendation
    shard_ids: list[int] = field(default_factory=list)  # the shards this process runs; empty: all


@dataclass(frozen=True)
class LoggingSection:
    level: str = "INFO"  # DEBUG, INFO, WARNING, ERROR
    format: str = "text"  # "text" or "json" (one JSON object a line)


@dataclass(frozen=True)
class MetricsSection:
    port: int = 0  # Prometheus endpoint on this port; 0 means off
    address: str = "127.0.0.1"  # address the metrics endpoint binds


@dataclass(frozen=True)
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    corpus: CorpusSection = field(default_factory=CorpusSection)
    storage: StorageSection = field(default_factory=StorageSection)
    generation: GenerationSection = field(default_factory=GenerationSection)
    chat: ChatSection = field(default_factory=ChatSection)
    telegram: TelegramSection = field(default_factory=TelegramSection)
    discord: DiscordSection = field(default_factory=DiscordSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)


def _coerce(value, kind, where: str):
    """Check a TOML value against a field type; ints are accepted for floats."""
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, where) for v in value]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _from_env(text: str, kind, where: str):
    if _INLINE_COMMENT.search(text):
        raise ConfigError(f"{where}: {text!r} looks like a value with an inline comment, which env files "
                          "keep as part of the value: put the comment on a line of its own")
    try:
        if kind is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(text)
            return text.lower() in ("1", "true", "yes", "on")
        if typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            return [item(v.strip()) for v in text.split(",") if v.strip()]
        return kind(text)
    except ValueError:
        raise ConfigError(f"{where}: cannot read {text!r} as {getattr(kind, '__name__', kind)}") from None


def load(path: str | os.PathLike | None = None, environ: typing.Mapping[str, str] | None = None) -> Config:
    """Defaults, then the file (if it exists, or if it was named), then CERVANTES_* variables."""
    environ = os.environ if environ is None else environ
    named = path is not None or "CERVANTES_CONFIG" in environ
    file = Path(path or environ.get("CERVANTES_CONFIG") or DEFAULT_PATH)
    raw: dict = {}
    if file.exists():
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: {exc}") from None
    elif named:
        raise ConfigError(f"{file}: no such config file")

    sections, origins = {}, {}
    hints = typing.get_type_hints(Config)
    for unknown in set(raw) - set(hints):
        raise ConfigError(f"{file}: unknown section [{unknown}]")
    for name, section_type in hints.items():
        values = raw.get(name, {})
        if not isinstance(values, dict):
            raise ConfigError(f"{file}: [{name}] must be a table")
        field_types = typing.get_type_hints(section_type)
        for unknown in set(values) - set(field_types):
            raise ConfigError(f"{file}: unknown key {name}.{unknown}")
        kwargs = {k: _coerce(v, field_types[k], f"{file}: {name}.{k}") for k, v in values.items()}
        origins.update({f"{name}.{k}": str(file) for k in values})
        for key, kind in field_types.items():
            env = _variable(name, key)
            if env in environ:
                kwargs[key] = _from_env(environ[env], kind, f"${env}")
                origins[f"{name}.{key}"] = f"${env}"
        sections[name] = section_type(**kwargs)
    config = Config(**sections)
    _check(config, origins)
    return config


def _variable(section: str, key: str) -> str:
    return f"CERVANTES_{section.upper()}_{key.upper()}"


def _check(config: Config, origins: dict[str, str]) -> None:
    """Each value against its rule, then the relations between keys; `origins`: key -> file or $VARIABLE."""
    def value(dotted: str):
        section, key = dotted.split(".")
        return getattr(getattr(config, section), key)

    for dotted, rule in checks.RULES.items():
        if problem := rule(value(dotted)):
            shown = checks.without_password(value(dotted)) if dotted in checks.SECRET_BEARING else value(dotted)
            raise ConfigError(f"{origins.get(dotted, 'defaults')}: {dotted} = {shown!r} {problem}")
    for keys, relation in checks.RELATIONS:
        if problem := relation(*map(value, keys)):
            where = next((origins[k] for k in keys if k in origins), "defaults")
            raise ConfigError(f"{where}: {problem}")


def stray_variables(environ: typing.Mapping[str, str]) -> list[str]:
    """A warning for each CERVANTES_* variable that nothing reads: most likely a misspelled name."""
    known = set(OTHER_VARIABLES)
    for name, section_type in typing.get_type_hints(Config).items():
        known.update(_variable(name, key) for key in typing.get_type_hints(section_type))
    warnings = []
    for name in sorted(n for n in environ if n.startswith("CERVANTES_") and n not in known):
        close = difflib.get_close_matches(name[10:], [k[10:] for k in known], n=1)  # after CERVANTES_
        warnings.append(f"${name} is not a setting: ignored" + (f" (did you mean $CERVANTES_{close[0]}?)"
                                                                  if close else ""))
    return warnings

