"""The load tool, small: every command answered exactly once, to the right chat."""

import dataclasses

from cli import loadtest
from config import Config


async def test_every_command_answered_once_to_its_chat(tiny_model_dir):
    config = Config()
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, path=str(tiny_model_dir)),
                                 chat=dataclasses.replace(config.chat, length=50))
    rounds = await loadtest.run(config, chats=30, commands=4, rounds=2)
    for r in rounds:
        assert r["answered"] == r["commands"] == 120
        assert r["exactly_once"] and r["misrouted"] == 0
