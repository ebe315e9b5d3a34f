"""Who wrote a command in a chat of many, and whether they may change the chat's settings.

In groups, supergroups and Discord servers, changing a setting (`/temperatura 1`, `/longitud 500`),
`/olvidar` and `/ajustes todos|admins` are for the chat's admins, unless the config
(`[chat] group_settings = "everyone"`) or the chat's admins (`/ajustes todos`) let everyone. Seeing
the settings, writing and the buttons are for everyone. In a private chat the user is the admin.

The decision is taken here, once for every platform (`may_change`); an adapter only says who wrote
(`Member`) and answers "is this member an admin of this chat?" (`Member.is_admin`), the way its
platform knows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Hashable

from bot.chat.parsing import Command

ADMINS, EVERYONE = "admins", "everyone"
# the argument of /ajustes -> what is stored
CHOICES = {"admins": ADMINS, "administradores": ADMINS, "todos": EVERYONE}


class AdminsUnknown(Exception):
    """The platform could not say now who the chat's admins are (it could not be reached)."""


@dataclass(frozen=True)
class Member:
    """Who wrote, in a chat of many: a group, a forum topic, a server's channel or thread."""

    user: str  # the platform's id of the person
    group: Hashable  # the group or server: one member limit across its topics, channels and threads
    is_admin: Callable[[], Awaitable[bool]]  # asked only for a change; may raise AdminsUnknown
    # the chat whose quota the command counts against, when not the chat itself: the topics of a
    # Telegram forum count against their group, which Telegram allows 20 messages a minute in all
    room: Hashable | None = None
    installed: bool = True  # False: a Discord server that has not added the bot (a user install)


def changes_settings(command: Command) -> bool:
    """A command that changes what the whole chat gets: a setting, /ajustes, or /olvidar."""
    if command.name == "olvidar":
        return True
    return command.name in ("temperatura", "longitud", "ajustes") and bool(command.argument)


async def may_change(member: Member | None, command: Command, chosen: str) -> bool:
    """Whether `member` may run `command` (one that changes settings) in a chat where `chosen`
    ("admins" or "everyone") may change them. /ajustes itself is always the admins' choice."""
    if member is None:  # a private chat: the user is the admin
        return True
    if chosen == EVERYONE and command.name != "ajustes":
        return True
    return await member.is_admin()
