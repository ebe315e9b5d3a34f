"""Why `cervantes serve` cannot start, in one line: checked before anything loads, or said after.

`check` runs before TensorFlow is imported: a container with no token, or a webhook without its
secret, fails in a fraction of a second with what to set. `failure` turns an adapter's start-up
error (API unreachable, DNS, login refused) into one line that names the API host, never the token.
"""

from __future__ import annotations

import re
import socket
import sys
from urllib.parse import urlsplit

from bot.process import secrets

_TELEGRAM_TOKEN = re.compile(r"\d{5,}:[A-Za-z0-9_-]{20,}")
_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Telegram's setWebhook accepts


class StartupError(Exception):
    """serve cannot start (or go on); the message is the whole story, for one `cervantes: ...` line."""


def tokens(environ) -> dict[str, str]:
    """{"TELEGRAM_TOKEN": "...", ...} for each token set (directly or by its _FILE variable)."""
    found = {}
    for name in ("TELEGRAM_TOKEN", "DISCORD_TOKEN"):
        try:
            value = secrets.token(name, environ)
        except OSError as exc:
            raise StartupError(f"{name}_FILE: cannot read {exc.filename}: {exc.strerror}") from None
        if value:
            found[name] = value
    return found


def check(config, environ, interactive: bool) -> None:
    """What serve needs before it loads anything; raises StartupError."""
    found = tokens(environ)
    if not found and not interactive:
        raise StartupError("no bot token: set TELEGRAM_TOKEN and/or DISCORD_TOKEN (in .env, or the "
                           "environment); without one serve talks on the console, and there is no terminal")
    if "TELEGRAM_TOKEN" in found and config.telegram.mode == "webhook":
        secret = environ.get("TELEGRAM_WEBHOOK_SECRET", "")
        if not secret:
            raise StartupError('[telegram] mode = "webhook" needs TELEGRAM_WEBHOOK_SECRET (in .env, or the '
                               "environment): without it anyone can post forged updates to the webhook")
        if not _WEBHOOK_SECRET.fullmatch(secret):
            raise StartupError("TELEGRAM_WEBHOOK_SECRET must be 1 to 256 of A-Z, a-z, 0-9, _ and -")


def api_host(adapter_name: str, config) -> str:
    if adapter_name == "telegram":
        return urlsplit(config.telegram.base_url).netloc or config.telegram.base_url
    if adapter_name == "discord":
        return "discord.com"
    return adapter_name


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _reason(exc: BaseException, host: str) -> str:
    discord = sys.modules.get("discord")  # only an adapter that imported it can raise its errors
    if discord is not None and isinstance(exc, discord.LoginFailure):
        return f"{host} refused the login: check DISCORD_TOKEN"
    if discord is not None and isinstance(exc, discord.PrivilegedIntentsRequired):
        return ("Discord refused the Message Content intent: switch it on for the bot in the developer "
                "portal, or set CERVANTES_DISCORD_MESSAGE_CONTENT=false")
    for cause in _chain(exc):
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve {host} (DNS: {cause.strerror or cause})"
        if isinstance(cause, ConnectionRefusedError):
            return f"cannot reach {host}: connection refused"
        if isinstance(cause, TimeoutError) or type(cause).__name__ in ("TimedOut", "ConnectTimeout"):
            return f"{host} did not answer in time"
    for cause in _chain(exc):
        if isinstance(cause, OSError) or "Connect" in type(cause).__name__:
            return f"cannot reach {host}: {cause}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def failure(adapter_name: str, exc: BaseException, config, environ) -> str:
    """One line for an adapter that did not start: what failed, where, and no token in it."""
    text = f"{adapter_name} did not start: {_reason(exc, api_host(adapter_name, config))}"
    return blank_tokens(text, environ)


def blank_tokens(text: str, environ) -> str:
    for value in tokens(environ).values():
        text = text.replace(value, "<token>")
    return _TELEGRAM_TOKEN.sub("<token>", text)
