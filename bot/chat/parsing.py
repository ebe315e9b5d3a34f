"""Reading what users type: which command, its argument, and numbers written the Spanish way."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

COMMANDS = ("cervantes", "continuar", "temperatura", "longitud", "olvidar", "ajustes", "ayuda", "start")

# /cervantes@MiBot Sancho dijo  ->  ("cervantes", "MiBot", "Sancho dijo")
_COMMAND = re.compile(r"^[/!]([A-Za-z_]+)(?:@([A-Za-z0-9_]+))?(?:\s+(.*))?$", re.DOTALL)


@dataclass(frozen=True)
class Command:
    name: str  # lower case; may be a command we do not know
    argument: str  # everything after the command, stripped


def parse(text: str, bot_username: str | None = None, prefixes: str = "/") -> Command | None:
    """A command, or None for text that is not one (or is addressed to another bot)."""
    text = text.strip()
    if not text or text[0] not in prefixes:
        return None
    match = _COMMAND.match("/" + text[1:])
    if not match:
        return None
    name, addressee, argument = match.groups()
    if addressee and bot_username and addressee.lower() != bot_username.lower():
        return None
    return Command(name.lower(), (argument or "").strip())


def parse_number(text: str) -> float | None:
    """A finite decimal number, with a comma or a point: "0,5", "0.5", "1". None otherwise."""
    text = text.strip().replace(",", ".", 1)
    if not re.fullmatch(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def format_number(value: float) -> str:
    """0.5 -> "0,5": numbers shown the Spanish way, as parse_number reads them back."""
    return f"{value:g}".replace(".", ",")


def parse_int(text: str) -> int | None:
    """A whole number: "300", and "1.000" or "1 000" with Spanish thousands separators."""
    text = text.strip()
    if re.fullmatch(r"[+-]?[0-9]{1,3}([. \u00a0\u202f][0-9]{3}){1,2}", text):
        text = re.sub(r"[. \u00a0\u202f]", "", text)
    return int(text) if re.fullmatch(r"[+-]?[0-9]{1,9}", text) else None


MAX_LISTED = 10  # characters a note lists at most


def list_characters(chars: str) -> str:
    """Characters for a note in the chat: at most MAX_LISTED, then "…"; the ones a reader would not
    see (controls, zero-width, direction marks, BOM, spaces other than " ") as U+XXXX."""
    shown = [c if c.isprintable() and not c.isspace() and unicodedata.category(c) != "Cf"
             else f"U+{ord(c):04X}" for c in chars[:MAX_LISTED]]
    return " ".join(shown) + (" …" if len(chars) > MAX_LISTED else "")
