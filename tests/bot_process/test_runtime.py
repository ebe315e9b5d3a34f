"""The shared resources as serve builds them: the config reaches the service."""

from __future__ import annotations

from bot.chat.parsing import parse
from bot.process.runtime import open_runtime
from config import ChatSection, Config, GenerationSection, ModelSection, StorageSection
from storage import ChatKey
from recorder import Recorder


async def test_top_k_1_makes_temperature_2_as_greedy(tmp_path, tiny_model_dir):
    """`[generation] top_k = 1`: a chat at /temperatura 2 gets the greedy text, every time."""
    def config(top_k: int) -> Config:
        return Config(model=ModelSection(path=str(tiny_model_dir)),
                      storage=StorageSection(path=str(tmp_path / f"top{top_k}.db")),
                      generation=GenerationSection(top_k=top_k),
                      chat=ChatSection(length=80, rate_limit_per_minute=0))

    chat = ChatKey("console", "bold")
    replies = {}
    for top_k in (0, 1):
        async with open_runtime(config(top_k)) as runtime:
            greedy = (await runtime.service.generate("Sancho", temperature=0, length=80, top_k=0)).text
            out = Recorder()
            for text in ("/temperatura 2", "/cervantes Sancho", "/cervantes Sancho"):
                await runtime.commands.run(chat, parse(text), out)
            replies[top_k] = out.replies[1:]
    assert replies[1] == ["Sancho" + greedy] * 2
    assert all(reply != "Sancho" + greedy for reply in replies[0])  # top_k = 0: temperature 2 wanders
