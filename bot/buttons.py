"""The two buttons under every generated reply, the same on every platform.

**Continuar** goes on from the end of that reply, **Otra** writes it again from where it began,
with new randomness. A button carries its action and the reply's id ("continuar:42"): a press is
the command `/continuar 42` or `/otra 42`, run like any typed command (quotas, the chat's order).
The id alone finds the stored reply (storage.StoredReply), so buttons work after a restart.
"""

from __future__ import annotations

import re

from bot.parsing import Command

LABELS = {"continuar": "Continuar", "otra": "Otra"}  # action (a command) -> the button's label
PATTERN = r"(?P<action>continuar|otra):(?P<reply>[0-9]{1,19})"  # Telegram allows 64 bytes, Discord 100
_DATA = re.compile(PATTERN)


def data(action: str, reply_id: int) -> str:
    """What a button carries: Telegram's callback_data, Discord's custom_id."""
    if action not in LABELS:
        raise ValueError(f"no button {action!r}")
    return f"{action}:{int(reply_id)}"


def buttons(reply_id: int) -> list[tuple[str, str]]:
    """(label, data) of the buttons under a reply, in the order they are shown."""
    return [(label, data(action, reply_id)) for action, label in LABELS.items()]


def command(data: str | None) -> Command | None:
    """The command a press means; None for data that is not one of our buttons."""
    match = _DATA.fullmatch(data or "")
    return Command(match["action"], match["reply"]) if match else None
