"""The buttons every platform shows under a text: what they carry, and double taps."""

from __future__ import annotations

import pytest
from conftest import Clock

from bot.chat import buttons
from bot.chat.parsing import Command


def test_a_button_carries_its_command_and_the_text_it_names():
    assert buttons.buttons(42) == [("Continuar", "continuar:42"), ("Otra", "otra:42")]
    assert buttons.command("continuar:42") == Command("continuar", "42")
    assert buttons.command("otra:9223372036854775807") == Command("otra", "9223372036854775807")
    assert len(buttons.data("continuar", 2**63 - 1).encode()) <= 64  # Telegram's callback_data limit
    for foreign in ("", None, "continuar:", "olvidar:3", "continuar:3 ", "continuar:-3", "x" * 80):
        assert buttons.command(foreign) is None
    with pytest.raises(ValueError):
        buttons.data("olvidar", 1)


def test_continuar_tapped_twice_counts_once_and_otra_every_time():
    clock = Clock()
    taps = buttons.DoubleTaps(window_s=5.0, clock=clock)
    assert taps.first("continuar:1", "chat", 10)
    assert not taps.first("continuar:1", "chat", 10)  # the same text would come twice
    assert taps.first("continuar:2", "chat", 11)
    assert taps.first("continuar:1", "other chat", 10)
    assert taps.first("otra:1", "chat", 10) and taps.first("otra:1", "chat", 10)  # new texts each time
    clock.now += 5
    assert taps.first("continuar:1", "chat", 10)  # later: a deliberate press
