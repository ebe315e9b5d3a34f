"""The buttons of bot.chat.buttons as Discord components, persistent across restarts.

A button's custom_id is its data ("continuar:42"). Nothing is kept per message: the client learns
the template at start (`client.add_dynamic_items(ReplyButton)`, as in discord.py's
examples/views/dynamic_counter.py), so a press on a message sent before a restart still arrives.
A press goes to the client's adapter, which runs it as the command the data names.
"""

from __future__ import annotations

import discord

from bot.chat import buttons


class ReplyButton(discord.ui.DynamicItem[discord.ui.Button], template=buttons.PATTERN):
    def __init__(self, label: str, data: str):
        super().__init__(discord.ui.Button(label=label, custom_id=data, style=discord.ButtonStyle.secondary))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item,
                             match) -> ReplyButton:  # a press, on any message with our custom_id
        return cls(buttons.LABELS[match["action"]], match.group(0))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.client.adapter.on_press(interaction, self.custom_id)


def view(reply_id: int | None) -> discord.ui.View | None:
    """The buttons under a reply stored as `reply_id`; None (no buttons) for a reply not stored."""
    if reply_id is None:
        return None
    shown = discord.ui.View(timeout=None)
    for label, data in buttons.buttons(reply_id):
        shown.add_item(ReplyButton(label, data))
    return shown
