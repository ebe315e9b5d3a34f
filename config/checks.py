"""What each config value may be: one rule per key, and the relations between keys.

A rule takes a value and returns what is wrong with it, or None. Every key of every section has a
rule here (a test holds that), so a new key needs one line: `"section.key": rule,`. The loader adds
where the value came from (the file or the environment variable) to the message.
"""

from __future__ import annotations

import math
import re
import typing

Rule = typing.Callable[[typing.Any], "str | None"]

# Upper bounds, each what the value's use can hold:
MAX_REPLY_CHARS = 10_000  # a reply: 3 Telegram messages, 5 Discord ones, written well within request_timeout_s
MAX_SEED_CHARS = 4096  # no message brings a longer seed (Telegram's 4096); every model call holds one this wide
MAX_PER_MINUTE = 1000  # a rate limit: far above what Telegram or Discord deliver to one chat (about 60 a minute)
MAX_SNOWFLAKE = 2**64 - 1  # a Discord id is 64 bits
MAX_SHARDS = 2**16  # a shard count: far above what Discord recommends (one shard per 1,000 to 2,500 servers)


def anything(value) -> str | None:
    return None


def whole(low: int | None = None, high: int | None = None) -> Rule:
    def rule(value: int) -> str | None:
        if low is not None and value < low:
            return f"must be at least {low}"
        if high is not None and value > high:
            return f"must be at most {high}"
        return None
    return rule


def number(low: float | None = None, *, above: float | None = None) -> Rule:
    """A finite float, >= low or > above."""
    def rule(value: float) -> str | None:
        if not math.isfinite(value):
            return "must be a finite number"
        if low is not None and value < low:
            return f"must be at least {low}"
        if above is not None and value <= above:
            return f"must be more than {above}"
        return None
    return rule


def fraction(value: float) -> str | None:
    """A share in (0, 1]."""
    return None if math.isfinite(value) and 0 < value <= 1 else "must be more than 0 and at most 1"


def one_of(*choices: str, ignore_case: bool = False) -> Rule:
    def rule(value: str) -> str | None:
        if (value.upper() if ignore_case else value) in choices:
            return None
        return "must be one of " + ", ".join(f'"{c}"' for c in choices)
    return rule


def filled(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def http_url(empty_ok: bool = False) -> Rule:
    def rule(value: str) -> str | None:
        if empty_ok and not value:
            return None
        if value.startswith(("http://", "https://")) and not any(c.isspace() for c in value):
            return None
        return "must be an http:// or https:// URL"
    return rule


def single_word(value: str) -> str | None:
    return None if value and not any(c.isspace() for c in value) else "must be one word, no spaces"


def not_memory(value: str) -> str | None:
    """storage.path: a file. sqlite's ":memory:" is a new empty database for each connection."""
    if problem := filled(value):
        return problem
    if value.strip() == ":memory:":
        return ("would give the bot's reader and writer two different empty databases, lost at exit: "
                "name a file")
    return None


def postgresql_url(value: str) -> str | None:
    """storage.url: empty, or postgresql://... (the message never repeats a password)."""
    if not value:
        return None
    if value.startswith(("postgresql://", "postgres://")) and not any(c.isspace() for c in value):
        return None
    return "must be a postgresql://user@host:port/dbname URL"


SECRET_BEARING = {"storage.url"}  # shown without a password in messages


def without_password(url: str) -> str:
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


# what SQL's integers hold (SQLite's INTEGER, PostgreSQL's BIGINT): replies_per_chat is a LIMIT/OFFSET
SQL_INT_MAX = 2**63 - 1
# keep_days in seconds, as a 64-bit integer (about 292 billion years: more would overflow the cutoff)
KEEP_DAYS_MAX = SQL_INT_MAX // 86400


def each(rule: Rule) -> Rule:
    def check(values: list) -> str | None:
        for value in values:
            if problem := rule(value):
                return f"has {value!r}, which {problem}"
        return None
    return check


RULES: dict[str, Rule] = {
    "model.path": anything,
    "model.device": one_of("auto", "cpu", "gpu"),
    "corpus.path": anything,
    "corpus.strip_accents": anything,
    "corpus.extra": anything,
    "storage.path": not_memory,
    "storage.url": postgresql_url,
    "storage.url_file": anything,
    "storage.keep_days": whole(0, KEEP_DAYS_MAX),
    "storage.replies_per_chat": whole(1, SQL_INT_MAX),
    "storage.status_path": anything,
    "generation.max_batch": whole(1),
    "generation.max_wait_ms": whole(0),
    "generation.chunk_steps": whole(1),
    "generation.queue_size": whole(1),
    "generation.request_timeout_s": number(above=0),
    "generation.top_k": whole(0),
    "generation.top_p": fraction,
    "generation.words": one_of("book", "free"),
    "generation.split": one_of("auto", "on", "off"),
    "chat.temperature": number(0),
    "chat.length": whole(1, MAX_REPLY_CHARS),
    "chat.min_temperature": number(0),
    "chat.max_temperature": number(0),
    "chat.min_length": whole(1, MAX_REPLY_CHARS),
    "chat.max_length": whole(1, MAX_REPLY_CHARS),
    "chat.max_seed_chars": whole(1, MAX_SEED_CHARS),
    "chat.rate_limit_per_minute": whole(0, MAX_PER_MINUTE),
    "chat.user_rate_limit_per_minute": whole(0, MAX_PER_MINUTE),
    "chat.group_settings": one_of("admins", "everyone"),
    "telegram.mode": one_of("polling", "webhook"),
    "telegram.base_url": http_url(),
    "telegram.webhook_url": http_url(empty_ok=True),
    "telegram.listen": filled,
    "telegram.port": whole(1, 65535),
    "telegram.edit_interval_s": number(0),
    "telegram.stream_after_s": number(0),
    "telegram.max_delivery_s": number(above=0),
    "telegram.inline_length": whole(1, 3840),  # with a query's 256 characters, within a message's 4096
    "telegram.inline_rate_limit_per_minute": whole(0, MAX_PER_MINUTE),
    "discord.prefix": single_word,
    "discord.sync_commands": anything,
    "discord.guilds": each(whole(1, MAX_SNOWFLAKE)),
    "discord.message_content": anything,
    "discord.edit_interval_s": number(0),
    "discord.shard_count": whole(0, MAX_SHARDS),
    "discord.shard_ids": each(whole(0, MAX_SHARDS - 1)),
    "logging.level": one_of("DEBUG", "INFO", "WARNING", "ERROR", ignore_case=True),
    "logging.format": one_of("text", "json"),
    "metrics.port": whole(0, 65535),
    "metrics.address": filled,
}


def not_above(low: str, high: str):
    """`low` <= `high`, as a relation: (keys, problem)."""
    def problem(a, b) -> str | None:
        return None if a <= b else f"{low} = {a!r} is above {high} = {b!r}"
    return (low, high), problem


def _one_url(url: str, url_file: str) -> str | None:
    return "storage.url and storage.url_file are both set: keep one" if url and url_file else None


def _webhook_needs_url(mode: str, url: str) -> str | None:
    return 'telegram.mode = "webhook" needs telegram.webhook_url' if mode == "webhook" and not url else None


def _shards_within_count(count: int, ids: list[int]) -> str | None:
    if ids and not count:
        return "discord.shard_ids needs discord.shard_count: the shards are split out of a known number"
    if any(i >= count for i in ids) or len(set(ids)) != len(ids):
        return f"discord.shard_ids = {ids!r} must be distinct, each below discord.shard_count = {count}"
    return None


# checked after every key passed its own rule, in this order: the first that fails is reported
RELATIONS = [
    not_above("chat.min_length", "chat.max_length"),
    not_above("chat.min_length", "chat.length"),
    not_above("chat.length", "chat.max_length"),
    not_above("chat.min_temperature", "chat.max_temperature"),
    not_above("chat.min_temperature", "chat.temperature"),
    not_above("chat.temperature", "chat.max_temperature"),
    (("telegram.mode", "telegram.webhook_url"), _webhook_needs_url),
    (("storage.url", "storage.url_file"), _one_url),
    (("discord.shard_count", "discord.shard_ids"), _shards_within_count),
]
