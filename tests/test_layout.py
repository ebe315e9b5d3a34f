"""The layout holds: the chat logic knows no platform, and no platform knows another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PLATFORMS = {"telegram", "discord", "console"}
LIBRARIES = {"telegram": "telegram", "discord": "discord"}  # a room's platform library, by room


def imported(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def rooms_used(path: Path) -> set[str]:
    """The bot rooms (bot.telegram, bot.chat, ...) and platform libraries a file imports."""
    used = set()
    for name in imported(path):
        parts = name.split(".")
        if parts[0] == "bot" and len(parts) > 1:
            used.add(f"bot.{parts[1]}")
        elif parts[0] in LIBRARIES.values():
            used.add(parts[0])
    return used


def files(room: str) -> list[Path]:
    found = sorted((ROOT / "bot" / room).glob("*.py"))
    assert found, f"bot/{room}/ is empty"
    return found


@pytest.mark.parametrize("path", files("chat"), ids=lambda p: p.name)
def test_the_chat_logic_imports_no_platform(path):
    assert not rooms_used(path) & ({f"bot.{p}" for p in PLATFORMS} | set(LIBRARIES.values()))


@pytest.mark.parametrize("room", sorted(PLATFORMS))
def test_no_platform_imports_another(room):
    others = {f"bot.{p}" for p in PLATFORMS - {room}} | {lib for r, lib in LIBRARIES.items() if r != room}
    for path in files(room):
        assert not rooms_used(path) & others, f"bot/{room}/{path.name} imports another platform"


def test_the_check_sees_a_platform_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from bot.telegram.outbox import split\n    import discord\n")
    assert rooms_used(bad) == {"bot.telegram", "discord"}
