"""Logging as text or JSON lines. A record's `fields` (extra={"fields": {...}}) become key=value pairs.

What the logs never show, at any level: chat ids, user ids and names, message text, tokens,
secrets. The project's own lines name a chat by its tag (ChatKey.tag) and say nothing of what
users wrote. Other libraries' lines are kept to WARNING and above whatever the level: below it they
print whole updates, request parameters (setWebhook's secret_token, every message's text) and
answers, which no filter can reliably tell apart from the rest. What they print at WARNING and
above (a Discord 429 with its URL, an error) is scrubbed: tokens and secrets blanked, a Discord
channel id replaced by its chat's tag, any other id (a number of 6 digits or more) by `<id>`.
At DEBUG an admin gets the project's own lines instead: one per Bot API request of the Telegram
outbox (method, chat tag, part, characters, how it went) and the tracebacks of failures.
"""

from __future__ import annotations

import json
import logging
import re
import sys

from bot.process import secrets

OWN = ("bot", "service", "storage", "model", "config", "cli", "cervantes", "benchmarks", "__main__")
THIRD_PARTY_LEVEL = logging.WARNING

_TELEGRAM_TOKEN = re.compile(r"\d{5,}:[A-Za-z0-9_-]{20,}")
_DISCORD_TOKEN = re.compile(r"[A-Za-z0-9_-]{23,}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}")
_INTERACTION = re.compile(r"/(webhooks|interactions)/(\d+)/[A-Za-z0-9_.-]+")  # the path holds its token
_CHANNEL = re.compile(r"/channels/(\d+)")
_ID = re.compile(r"(?<![\w<])-?\d{6,}(?![\w>])")


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info or record.exc_text:
            entry["error"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _channel_tag(match: re.Match) -> str:
    from storage import ChatKey  # a channel is a chat: the same tag as in the project's own lines

    return f"/channels/<{ChatKey('discord', match.group(1)).tag}>"


class Guard(logging.Filter):
    """On the handler: drops other libraries' records below THIRD_PARTY_LEVEL, scrubs the rest."""

    def __init__(self, hidden: list[str]):
        super().__init__()
        self.hidden = sorted({h for h in hidden if h and len(h) >= 6}, key=len, reverse=True)
        self._traceback = logging.Formatter()

    def scrub(self, text: str, ids: bool) -> str:
        for value in self.hidden:
            text = text.replace(value, "<secret>")
        text = _DISCORD_TOKEN.sub("<token>", _TELEGRAM_TOKEN.sub("<token>", text))
        text = _INTERACTION.sub(r"/\1/<id>/<token>", text)
        if ids:
            text = _ID.sub("<id>", _CHANNEL.sub(_channel_tag, text))
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.split(".", 1)[0] in OWN
        if not own and record.levelno < THIRD_PARTY_LEVEL:
            return False
        message = record.getMessage()
        clean = self.scrub(message, ids=not own)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.scrub(self._traceback.formatException(record.exc_info), ids=True)
        return True


def hidden_values(environ) -> list[str]:
    """The secrets of this run, as they could appear in a library's message."""
    values = [environ.get("TELEGRAM_WEBHOOK_SECRET", "")]
    for name in ("TELEGRAM_TOKEN", "DISCORD_TOKEN"):
        try:
            values.append(secrets.token(name, environ) or "")
        except OSError:
            pass
    return values


def setup(level: str = "INFO", fmt: str = "text", stream=None, environ=None) -> None:
    import os

    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Json() if fmt == "json" else
                         _Text("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Guard(hidden_values(os.environ if environ is None else environ)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "telegram", "discord", "aiohttp", "aiosqlite", "asyncio", "tornado",
                  "absl"):
        logging.getLogger(noisy).setLevel(max(THIRD_PARTY_LEVEL, root.level))
