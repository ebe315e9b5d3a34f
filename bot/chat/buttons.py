"""The two buttons under every generated reply, the same on every platform.

**Continuar** goes on from the end of that reply, **Otra** writes it again from where it began,
with new randomness. A button carries its action and the reply's id ("continuar:42"): a press is
the command `/continuar 42` or `/otra 42`, run like any typed command (quotas, the chat's order).
The id alone finds the stored reply (storage.StoredReply), so buttons work after a restart.
"""

from __future__ import annotations

import re
import time

from bot.chat.parsing import Command

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


class DoubleTaps:
    """Continuar pressed again on the same message within `window_s`, by the same person (a slow
    network, an impatient thumb) or by another member of the group at the same moment, counts once:
    it would post the very same text twice. Otra pressed again is another try, each one a new text:
    every press counts. (Continuar pressed later gives that same continuation again, by design.)"""

    def __init__(self, window_s: float = 5.0, clock=time.monotonic):
        self.window_s = window_s
        self.clock = clock
        self._last: dict[tuple, float] = {}  # (data, chat, message) -> when pressed

    def first(self, data: str, *press) -> bool:
        """True for a press to run; False for a repeat of one just taken. `data`: the button's;
        `press`: what else tells presses apart (chat, message)."""
        if not data.startswith("continuar:"):
            return True
        press = (data, *press)
        now = self.clock()
        if len(self._last) > 1000:  # forget presses long past
            self._last = {k: t for k, t in self._last.items() if now - t < self.window_s}
        if now - self._last.get(press, -self.window_s) < self.window_s:
            return False
        self._last[press] = now
        return True
